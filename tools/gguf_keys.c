// gguf_keys.c — showing ramole's own GGUF files: cli_print_ramole_keys and
// cli_info_tied (see cli.h).
#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "cli.h"
#include "format/gguf.h"
#include "model/llama.h"

void cli_print_ramole_keys(const gguf_file *g) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        if (kv->key.len < 7 || strncmp(kv->key.ptr, "ramole.", 7)) continue;
        printf("%-34.*s ", (int)kv->key.len, kv->key.ptr);
        const gguf_value *v = &kv->val;
        if (v->type == GGUF_TYPE_STRING) printf("%.*s\n", (int)v->s.len, v->s.ptr);
        else if (v->type == GGUF_TYPE_UINT64) printf("%016llx\n", (unsigned long long)v->u);
        else if (v->type == GGUF_TYPE_FLOAT32) printf("%g\n", v->f);
        else if (v->type == GGUF_TYPE_ARRAY && v->arr.type == GGUF_TYPE_STRING) {
            for (uint64_t j = 0; j < v->arr.n; j++)
                printf("%s%.*s", j ? "," : "", (int)v->arr.strs[j].len, v->arr.strs[j].ptr);
            printf("\n");
        } else printf("%llu\n", (unsigned long long)v->u);
    }
    printf("%-34s %llu\n", "tensors", (unsigned long long)g->n_tensors);
}

int cli_info_tied(int argc, char **argv, const char *cmd, const char *type,
                  int (*fits)(const char *path, const struct rm_llama *m)) {
    const char *path = NULL, *base = NULL;
    for (int i = 2; i < argc; i++) {
        if (cli_str(argc, argv, &i, "--base", "-m", &base)) {
        } else if (!path && argv[i][0] != '-') path = argv[i];
        else {
            fprintf(stderr, "ramole %s info: unknown argument '%s'\n", cmd, argv[i]);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "ramole %s info: give a %s file\n", cmd, cmd);
        return 2;
    }
    gguf_file g;
    if (gguf_open(&g, path)) return cli_fail(path);
    gguf_str s;
    if (gguf_get_str(&g, "general.type", &s) != RM_OK || !gguf_str_eq(s, type)) {
        gguf_close(&g);
        fprintf(stderr, "ramole %s info: %s is not a ramole %s\n", cmd, path, cmd);
        return 1;
    }
    cli_print_ramole_keys(&g);
    gguf_close(&g);
    if (!base) return 0;
    rm_llama *m = NULL;
    if (rm_llama_load(&m, base)) return cli_fail(base);
    int rc = fits(path, m);
    if (rc) cli_fail(cmd);
    else printf("fits base %s\n", base);
    rm_llama_free(m);
    return rc ? 1 : 0;
}
