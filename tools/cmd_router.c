// cmd_router.c — `ramole router train|info`: RouterLoRA, the learned
// composition of k adapters (docs/router.md). `train` trains a router over
// frozen expert adapters on a frozen base; `info` shows a router file.
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "cli.h"
#include "format/gguf.h"
#include "base/file.h"
#include "lora/compose.h"
#include "lora/router.h"
#include "train/train.h"
#include "train_args.h"

static void help(void) {
    printf("usage: ramole router train --base MODEL.gguf --lora DIR --lora DIR [...] --data FILE.jsonl --out ROUTER.gguf [options]\n"
           "       ramole router info ROUTER.gguf [--base MODEL.gguf]\n\n"
           "train: learns RouterLoRA (the RAMoLE paper's router) for the frozen base and the frozen\n"
           "expert adapters given with --lora (PEFT dirs or GGUF LoRA files; 2 to 16; every training\n"
           "example gets all of them, as if retrieval returned them): per token and adapted linear,\n"
           "  E_i = s_i B_i A_i x,  q = s_r B_r A_r x,  alpha = softmax_i(q.E_i / sqrt(out)),\n"
           "  y = W x + sum_i alpha_i E_i\n"
           "with only the router's A_r, B_r trained (B_r = 0 at the start: the mixture). Data: mixed\n"
           "{\"inputs\", \"targets\"} examples (JSON lines or array). Writes ROUTER.gguf and ROUTER.gguf.svg\n"
           "(loss curve). Serve with `generate --lora A --lora B --compose router --router ROUTER.gguf`.\n\n"
           "  --lora PATH          an expert adapter (repeat, or comma-separated)\n"
           "  --rank R             router rank (4)\n"
           "  --alpha A            router alpha (2*rank; scale alpha/r)\n"
           "  --eval FILE          held-out examples (default: 10%% of --data, at most 200)\n"
           "  --epochs E | --steps N   length of training (1 epoch)\n"
           "  --lr LR              peak learning rate (1e-3), linear warm-up then cosine\n"
           "  --warmup N  --batch B (4)  --accum K (1)  --seq T  --no-pack  --weight-decay W  --clip C\n"
           "  --seed S  --threads N  --template FILE  --checkpoint FILE  --resume FILE  --json\n"
           "  --eval-em N          held-out examples scored for exact match with the router (200; 0 = none)\n");
}

// Splits "a,b" specs into paths; returns 0, or prints why and returns 2.
static int add_experts(const char *spec, char paths[][4096], int *n) {
    const char *s = spec;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (*n == RM_PLAN_MAX) {
            fprintf(stderr, "ramole router train: at most %d adapters (--lora)\n", RM_PLAN_MAX);
            return 2;
        }
        if (len == 0 || len >= 4096) {
            fprintf(stderr, "ramole router train: bad --lora '%s'\n", spec);
            return 2;
        }
        memcpy(paths[*n], s, len);
        paths[(*n)++][len] = 0;
        s += len + (e ? 1 : 0);
    }
    return 0;
}

static int router_train(int argc, char **argv) {
    const char *base = NULL, *spec;
    static char paths[RM_PLAN_MAX][4096];
    int n_exp = 0, pack = 1;
    long rank = 4, em_max = 200;
    double alpha = -1;
    train_args a = {.batch = 4, .accum = 1, .seed = 1, .warmup = -1, .epochs = 1, .lr = 1e-3, .clip = 1.0};
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (train_args_match(argc, argv, &i, &a)) {}
        else if (cli_str(argc, argv, &i, "--base", "-m", &base)) {}
        else if (cli_str(argc, argv, &i, "--lora", NULL, &spec)) { if (add_experts(spec, paths, &n_exp)) return 2; }
        else if (cli_int(argc, argv, &i, "--rank", "-r", &rank)) {}
        else if (cli_int(argc, argv, &i, "--eval-em", NULL, &em_max)) {}
        else if (cli_float(argc, argv, &i, "--alpha", NULL, &alpha)) {}
        else if (cli_flag(argc, argv, &i, "--no-pack", NULL)) pack = 0;
        else { fprintf(stderr, "ramole router train: unknown argument '%s' (see --help)\n", argv[i]); return 2; }
    }
    if (!base || !a.data || !a.out || n_exp == 0) {
        fprintf(stderr, "ramole router train: --base, --lora, --data and --out are required (see --help)\n");
        return 2;
    }
    if (n_exp < 2) { fprintf(stderr, "ramole router train: a router composes 2 or more adapters (--lora)\n"); return 2; }
    if (rank <= 0 || a.batch <= 0 || a.accum <= 0 || a.seq < 0 || a.steps < 0 || !(a.lr > 0)) {
        fprintf(stderr, "ramole router train: rank, batch, accum, steps and lr must be positive\n");
        return 2;
    }
    char *tmpl = NULL;
    size_t tlen;
    if (a.template_path && rm_read_file(a.template_path, &tmpl, &tlen)) return cli_fail("--template");

    int rc = 1;
    rm_llama *m = NULL;
    rm_lora *ex[RM_PLAN_MAX] = {0}, *router = NULL;
    rm_trainer *t = NULL;
    rm_tdata train = {0}, eval = {0};
    rm_train_report rep = {0};
    if (rm_llama_load(&m, base)) { cli_fail(base); goto done; }
    for (int i = 0; i < n_exp; i++)
        if (rm_lora_load_for(&ex[i], paths[i], m)) { cli_fail(paths[i]); goto done; }
    if (train_args_load_data(&a, m, tmpl, &train, &eval)) goto done;
    rm_train_params p;
    train_args_params(&a, &train, pack, &p);
    if (rm_trainer_create(&t, m, &p) ||
        rm_trainer_add_router(t, n_exp, ex, (int)rank, alpha > 0 ? (float)alpha : 2.0f * (float)rank)) {
        cli_fail("trainer");
        goto done;
    }
    fprintf(stderr, "router train: %d examples (%d held out), %d experts, rank %ld, %zu trainable parameters, %d steps of %d x %d x %d tokens\n",
            train.n, eval.n, n_exp, rank, rm_trainer_n_trainable(t), p.steps, p.accum, p.batch, p.seq);
    if (train_args_run(&a, t, &train, &eval, pack, (int)em_max, &rep)) goto done;
    if (rm_trainer_export_lora(t, &router) || rm_router_save(router, m, n_exp, a.out)) { cli_fail(a.out); goto done; }
    char curve[4200];
    snprintf(curve, sizeof curve, "%s.svg", a.out);
    if (train_args_finish(&a, &rep, "router train", a.out, curve, "RouterLoRA training loss")) goto done;
    rc = 0;
done:
    rm_lora_free(router);
    rm_train_report_free(&rep);
    rm_trainer_free(t);
    for (int i = 0; i < n_exp; i++) rm_lora_free(ex[i]);
    rm_tdata_free(&train);
    rm_tdata_free(&eval);
    rm_llama_free(m);
    free(tmpl);
    return rc;
}

// Loads the router at path against m (for `router info --base`).
static int router_fits(const char *path, const rm_llama *m) {
    rm_lora *r = NULL;
    int rc = rm_router_load(&r, path, m);
    rm_lora_free(r);
    return rc;
}

static int cmd_router(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { help(); return argc < 2 ? 2 : 0; }
    if (!strcmp(argv[1], "train")) return router_train(argc, argv);
    if (!strcmp(argv[1], "info")) return cli_info_tied(argc, argv, "router", "ramole.router", router_fits);
    fprintf(stderr, "ramole router: unknown subcommand '%s' (train, info)\n", argv[1]);
    return 2;
}

RM_COMMAND(router, "train a RouterLoRA over adapters, or show a router file", cmd_router)
