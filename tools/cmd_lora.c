// cmd_lora.c — `ramole lora info|convert|merge`: inspect, convert (PEFT <->
// GGUF) and bake LoRA adapters.
#include "cli.h"
#include "base/err.h"
#include "lora/adapter.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: ramole lora info DIR|FILE [--base MODEL]\n"
           "       ramole lora convert IN OUT [--base MODEL]\n"
           "       ramole lora merge --base MODEL --lora PATH[:WEIGHT] [--lora ...] [--type T] OUT.gguf\n"
           "       ramole lora train --base MODEL --data FILE.jsonl --out DIR [options] (see lora train --help)\n\n"
           "Adapters are PEFT directories (adapter_config.json + adapter_model.safetensors) or\n"
           "llama.cpp GGUF LoRA files.\n"
           "  info     format, architecture, layers, targets, ranks, scales, size; with --base it is\n"
           "           also validated against that model\n"
           "  convert  OUT ending in .gguf writes GGUF, anything else a PEFT directory. Q/K rows are\n"
           "           reordered between Hugging Face and GGUF llama RoPE order, which needs --base\n"
           "           (for the head count) when the adapter touches q_proj or k_proj\n"
           "  merge    writes a copy of the base with W + sum_i w_i s_i B_i A_i baked in (weights\n"
           "           default to 1); --type sets the type of the changed weights (default: kept)\n");
}

// Loads an adapter (its shapes checked against m before reading, when given)
// and, with a base, binds it (prints the error and returns NULL on failure).
// *file_order (may be NULL): its Q/K row order as in the file, before binding.
static rm_lora *load_adapter(const char *path, const rm_llama *m, int *file_order) {
    rm_lora *a;
    if (rm_lora_load_checked(&a, path, m)) {
        cli_fail(m ? "the adapter does not fit the base model" : "cannot load the adapter");
        return NULL;
    }
    if (file_order) *file_order = a->qk_permuted;
    if (m && rm_lora_bind(a, m)) {
        cli_fail("the adapter does not fit the base model");
        rm_lora_free(a);
        return NULL;
    }
    return a;
}

static int lora_info(const char *path, const char *base) {
    rm_llama *m = NULL;
    if (base && rm_llama_load(&m, base)) return cli_fail("cannot load the base model");
    int file_order = 0;
    rm_lora *a = load_adapter(path, m, &file_order);
    if (!a) {
        rm_llama_free(m);
        return 1;
    }
    int n_mod = 0, rmin = 1 << 30, rmax = 0;
    float smin = INFINITY, smax = -INFINITY;
    int64_t params = 0;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *md = &a->mods[i];
        if (!md->r) continue;
        n_mod++;
        if (md->r < rmin) rmin = md->r;
        if (md->r > rmax) rmax = md->r;
        if (md->scale < smin) smin = md->scale;
        if (md->scale > smax) smax = md->scale;
        params += (int64_t)md->r * (md->in + md->out);
    }
    unsigned t = rm_lora_targets(a);
    printf("adapter:      %s\n", path);
    printf("format:       %s\n", a->format);
    printf("architecture: %s\n", a->arch[0] ? a->arch : "(not stated)");
    printf("layers:       %d (%d modules)\n", a->n_layer, n_mod);
    printf("targets:      ");
    for (int w = 0, k = 0; w < RM_LIN_COUNT; w++)
        if (t & (1u << w)) printf("%s%s", k++ ? "," : "", rm_linear_names[w]);
    printf("\nrank:         %d", rmin);
    if (rmax != rmin) printf("..%d", rmax);
    printf("\nalpha:        %g%s\n", a->alpha, a->rslora ? " (rsLoRA: scale alpha/sqrt(r))" : "");
    printf("scale:        %g", smin);
    if (smax != smin) printf("..%g", smax);
    printf("\nq/k order:    %s\n", file_order ? "GGUF llama (pairs 2i, 2i+1)" : "Hugging Face (pairs i, i+d/2)");
    printf("parameters:   %lld (%.2f MB as f32)\n", (long long)params, (double)params * 4 / 1e6);
    if (m) printf("base:         %s: fits (architecture, layers, shapes, ranks checked)\n", base);
    rm_lora_free(a);
    rm_llama_free(m);
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static int lora_convert(const char *in, const char *out, const char *base) {
    rm_llama *m = NULL;
    if (base && rm_llama_load(&m, base)) return cli_fail("cannot load the base model");
    rm_lora *a = load_adapter(in, m, NULL);
    int rc = 1;
    if (a) {
        int st = ends_with(out, ".gguf") ? rm_lora_save_gguf(a, out) : rm_lora_save_peft(a, out);
        if (st) cli_fail("cannot write the adapter");
        else {
            fprintf(stderr, "wrote %s (%s)\n", out, ends_with(out, ".gguf") ? "GGUF LoRA" : "PEFT directory");
            rc = 0;
        }
    }
    rm_lora_free(a);
    rm_llama_free(m);
    return rc;
}

static int lora_merge(int argc, char **argv) {
    const char *base = NULL, *out = NULL, *type_s = NULL;
    int n = 0, rc = 1;
    char **specs = calloc((size_t)argc, sizeof *specs);
    if (!specs) return 1;
    for (int i = 2; i < argc; i++) {
        const char *v;
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            free(specs);
            return 0;
        } else if (cli_str(argc, argv, &i, "--base", "-m", &base)) {
        } else if (cli_str(argc, argv, &i, "--lora", NULL, &v)) {
            specs[n++] = (char *)v;
        } else if (cli_str(argc, argv, &i, "--type", NULL, &type_s)) {
        } else if (argv[i][0] == '-' || out) {
            fprintf(stderr, "ramole lora merge: unexpected argument '%s'\n", argv[i]);
            free(specs);
            return 2;
        } else {
            out = argv[i];
        }
    }
    if (!base || !out || !n) {
        fprintf(stderr, "ramole lora merge: needs --base MODEL, at least one --lora and OUT.gguf\n");
        free(specs);
        return 2;
    }
    rm_type type = RM_TYPE_F32;
    if (type_s && rm_type_parse(type_s, &type)) {
        free(specs);
        return cli_fail("--type");
    }
    rm_llama *m = NULL;
    rm_lora **ad = calloc((size_t)n, sizeof *ad);
    float *w = calloc((size_t)n, sizeof *w);
    if (!ad || !w) goto out;
    if (rm_llama_load(&m, base)) {
        cli_fail("cannot load the base model");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        char path[4096];
        int has_w;
        if (rm_lora_parse_spec(specs[i], path, sizeof path, &w[i], &has_w)) {
            cli_fail("--lora");
            goto out;
        }
        if (!has_w) w[i] = 1.0f;
        if (!(ad[i] = load_adapter(path, m, NULL))) goto out;
    }
    if (rm_lora_merge(m, n, ad, w, type_s ? (int)type : -1, out)) {
        cli_fail("merge failed");
        goto out;
    }
    fprintf(stderr, "wrote %s (%d adapter%s baked in)\n", out, n, n > 1 ? "s" : "");
    rc = 0;
out:
    if (ad)
        for (int i = 0; i < n; i++) rm_lora_free(ad[i]);
    free(ad);
    free(w);
    free(specs);
    rm_llama_free(m);
    return rc;
}

int rm_cmd_lora_train(int argc, char **argv);

static int cmd_lora(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help();
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "merge")) return lora_merge(argc, argv);
    if (!strcmp(sub, "train")) return rm_cmd_lora_train(argc - 1, argv + 1); // tools/cmd_lora_train.c
    const char *pos[2] = {NULL, NULL}, *base = NULL;
    int np = 0;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 0;
        } else if (cli_str(argc, argv, &i, "--base", "-m", &base)) {
        } else if (argv[i][0] == '-' || np == 2) {
            fprintf(stderr, "ramole lora %s: unexpected argument '%s'\n", sub, argv[i]);
            return 2;
        } else {
            pos[np++] = argv[i];
        }
    }
    if (!strcmp(sub, "info") && np == 1) return lora_info(pos[0], base);
    if (!strcmp(sub, "convert") && np == 2) return lora_convert(pos[0], pos[1], base);
    fprintf(stderr, "ramole lora: unknown subcommand or wrong arguments (see ramole lora --help)\n");
    return 2;
}

RM_COMMAND(lora, "inspect, convert (PEFT <-> GGUF) and merge LoRA adapters", cmd_lora)
