// cmd_info.c — `ramole info FILE`: what is inside a GGUF file, a
// .safetensors file or a Hugging Face model directory.
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "format/gguf.h"
#include "format/hfdir.h"
#include "format/safetensors.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void print_bytes(double b) {
    if (b >= 1024.0 * 1024 * 1024) printf("%.2f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024) printf("%.2f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0) printf("%.1f KiB", b / 1024.0);
    else printf("%.0f B", b);
}

// A string, quoted, control characters escaped, cut at `max` bytes.
static void print_str(gguf_str s, size_t max) {
    putchar('"');
    size_t n = s.len < max ? (size_t)s.len : max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') printf("\\n");
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (s.len > max) printf("... (%" PRIu64 " bytes)", s.len);
}

static void print_value(const gguf_value *v) {
    switch (v->type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64: printf("%" PRIu64, v->u); break;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64: printf("%" PRId64, v->i); break;
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64: printf("%g", v->f); break;
    case GGUF_TYPE_BOOL: printf("%s", v->u ? "true" : "false"); break;
    case GGUF_TYPE_STRING: print_str(v->s, 120); break;
    case GGUF_TYPE_ARRAY:
        // Short numeric arrays in full, everything else summarised.
        if (v->arr.n <= 8 && v->arr.type != GGUF_TYPE_STRING && v->arr.type != GGUF_TYPE_ARRAY) {
            printf("[");
            for (uint64_t i = 0; i < v->arr.n; i++) {
                if (i) printf(", ");
                if (v->arr.type == GGUF_TYPE_FLOAT32 || v->arr.type == GGUF_TYPE_FLOAT64)
                    printf("%g", gguf_arr_f64(v, i));
                else if (v->arr.type == GGUF_TYPE_UINT64) printf("%" PRIu64, (uint64_t)gguf_arr_i64(v, i));
                else printf("%" PRId64, gguf_arr_i64(v, i));
            }
            printf("]");
        } else {
            printf("[%" PRIu64 " x %s]", v->arr.n, gguf_value_type_name(v->arr.type));
        }
        break;
    default: printf("?"); break;
    }
}

static void print_shape(int n, const int64_t *ne) {
    printf("[");
    for (int d = 0; d < n; d++) printf("%s%" PRId64, d ? ", " : "", ne[d]);
    printf("]");
}

// "ARCH.key" as an integer or float, printed when present.
static void print_hparam(const gguf_file *g, const char *arch, const char *key) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    const gguf_kv *kv = gguf_find(g, k);
    if (!kv) return;
    printf("  %-36s ", key);
    print_value(&kv->val);
    printf("\n");
}

static int info_gguf(const char *path, int list_tensors) {
    gguf_file g;
    if (gguf_open(&g, path) != RM_OK) return cli_fail("info");
    char arch[64] = "?";
    gguf_str s;
    if (gguf_get_str(&g, "general.architecture", &s) == RM_OK) gguf_str_copy(s, arch, sizeof arch);
    printf("file:          %s\n", path);
    printf("format:        GGUF v%u, alignment %zu, data at offset %zu\n", g.version, g.alignment, g.data_offset);
    printf("architecture:  %s\n", arch);
    if (gguf_get_str(&g, "general.name", &s) == RM_OK) {
        printf("name:          ");
        print_str(s, 120);
        printf("\n");
    }
    static const char *hparams[] = {
        "context_length",       "embedding_length",        "block_count",          "feed_forward_length",
        "attention.head_count", "attention.head_count_kv", "attention.key_length", "attention.layer_norm_rms_epsilon",
        "rope.dimension_count", "rope.freq_base",          "rope.scaling.type",    "rope.scaling.factor",
        "vocab_size",
    };
    printf("hyperparameters:\n");
    for (size_t i = 0; i < sizeof hparams / sizeof hparams[0]; i++) print_hparam(&g, arch, hparams[i]);

    const gguf_value *toks;
    if (gguf_get_str(&g, "tokenizer.ggml.model", &s) == RM_OK) {
        printf("tokenizer:     ");
        print_str(s, 40);
        if (gguf_get_arr(&g, "tokenizer.ggml.tokens", &toks) == RM_OK) printf(", vocab %" PRIu64, toks->arr.n);
        printf("\n");
    }

    // Tensors per type.
    uint64_t count[64] = {0};
    double bytes[64] = {0}, total = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        int t = g.tensors[i].type;
        if (t >= 0 && t < 64) {
            count[t]++;
            bytes[t] += (double)g.tensors[i].nbytes;
        }
        total += (double)g.tensors[i].nbytes;
    }
    printf("tensors:       %" PRIu64 ", ", g.n_tensors);
    print_bytes(total);
    printf("\n");
    for (int t = 0; t < 64; t++) {
        if (!count[t]) continue;
        const char *tn = gguf_ggml_type_name(t);
        printf("  %-8s %6" PRIu64 " tensors  ", tn ? tn : "?", count[t]);
        print_bytes(bytes[t]);
        printf("%s\n", rm_type_supported(t) ? "" : "  (not supported by ramole)");
    }
    if (list_tensors) {
        for (uint64_t i = 0; i < g.n_tensors; i++) {
            const gguf_tensor_info *ti = &g.tensors[i];
            const char *tn = gguf_ggml_type_name(ti->type);
            printf("  %-48.*s %-8s ", (int)(ti->name.len > 200 ? 200 : ti->name.len), ti->name.ptr, tn ? tn : "?");
            print_shape(ti->n_dims, ti->ne);
            printf("\n");
        }
    }

    printf("metadata:      %" PRIu64 " keys\n", g.n_kv);
    for (uint64_t i = 0; i < g.n_kv; i++) {
        printf("  %-48.*s %-4s ", (int)(g.kv[i].key.len > 200 ? 200 : g.kv[i].key.len), g.kv[i].key.ptr,
               gguf_value_type_name(g.kv[i].val.type));
        print_value(&g.kv[i].val);
        printf("\n");
    }
    gguf_close(&g);
    return 0;
}

static int info_safetensors(const char *path) {
    st_file f;
    if (st_open(&f, path) != RM_OK) return cli_fail("info");
    double total = 0;
    for (size_t i = 0; i < f.n_tensors; i++) total += (double)f.tensors[i].nbytes;
    printf("file:          %s\n", path);
    printf("format:        safetensors\n");
    printf("tensors:       %zu, ", f.n_tensors);
    print_bytes(total);
    printf("\n");
    for (size_t i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        printf("  %-48s %-5s ", t->name, st_dtype_name(t->dtype));
        print_shape(t->n_dims, t->shape);
        printf("\n");
    }
    if (f.n_meta) printf("metadata:      %zu keys\n", f.n_meta);
    for (size_t i = 0; i < f.n_meta; i++) {
        gguf_str v = {strlen(f.meta_vals[i]), f.meta_vals[i]};
        printf("  %-48s ", f.meta_keys[i]);
        print_str(v, 120);
        printf("\n");
    }
    st_close(&f);
    return 0;
}

static int info_hfdir(const char *dir) {
    hf_config c;
    if (hfdir_read_config(dir, &c) != RM_OK) return cli_fail("info");
    printf("directory:     %s\n", dir);
    printf("format:        Hugging Face model (%s -> GGUF %s)\n", c.hf_arch, c.arch);
    printf("name:          %s\n", c.name);
    printf("hyperparameters:\n");
    printf("  %-24s %" PRId64 "\n", "vocab_size", c.vocab_size);
    printf("  %-24s %" PRId64 "\n", "hidden_size", c.hidden_size);
    printf("  %-24s %" PRId64 "\n", "intermediate_size", c.intermediate_size);
    printf("  %-24s %" PRId64 "\n", "num_hidden_layers", c.n_layers);
    printf("  %-24s %" PRId64 "\n", "num_attention_heads", c.n_heads);
    printf("  %-24s %" PRId64 "\n", "num_key_value_heads", c.n_kv_heads);
    printf("  %-24s %" PRId64 "\n", "head_dim", c.head_dim);
    printf("  %-24s %" PRId64 "\n", "max_position_embeddings", c.max_pos);
    printf("  %-24s %g\n", "rms_norm_eps", c.rms_eps);
    printf("  %-24s %g\n", "rope_theta", c.rope_theta);
    if (c.rope_scaling[0]) printf("  %-24s %s x%g\n", "rope_scaling", c.rope_scaling, c.rope_factor);
    printf("  %-24s %s\n", "tie_word_embeddings", c.tie_embeddings ? "true" : "false");
    static const char *files[] = {"model.safetensors", "model.safetensors.index.json", "tokenizer.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        if (rm_file_exists(p)) printf("has:           %s\n", files[i]);
    }
    return 0;
}

static int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    int list_tensors = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            printf("usage: ramole info [--tensors] FILE\n"
                   "  FILE: a .gguf file, a .safetensors file or a Hugging Face model directory.\n"
                   "  --tensors   list every tensor (name, type, shape)\n");
            return 0;
        } else if (cli_flag(argc, argv, &i, "--tensors", "-t")) {
            list_tensors = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "ramole info: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "ramole info: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "ramole info: need a FILE (see --help)\n");
        return 2;
    }
    if (rm_is_dir(path)) return info_hfdir(path);
    char magic[4] = {0};
    int got = rm_read_head(path, magic, 4);
    if (got < 0) return cli_fail("info");
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return info_gguf(path, list_tensors);
    size_t n = strlen(path);
    if (n >= 12 && strcmp(path + n - 12, ".safetensors") == 0) return info_safetensors(path);
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0) return info_gguf(path, list_tensors); // reports the bad magic
    rm_errorf(RM_EFORMAT, "%s: neither GGUF nor .safetensors", path);
    return cli_fail("info");
}

RM_COMMAND(info, "show what is inside a GGUF / safetensors file or a Hugging Face model dir", cmd_info)
