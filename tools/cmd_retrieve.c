// cmd_retrieve.c — `ramole retrieve`: the top-k adapters of a pool for a prompt.
#include "adapter_args.h"
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "retrieve/pool.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: ramole retrieve --pool DIR (-p TEXT | --prompts FILE) [-k K] [options]\n\n"
               "Embeds the prompt with the pool's embedder and prints the k adapters whose\n"
               "keys are most similar (cosine), best first.\n\n"
               "  -k K               how many (default 3)\n"
               "  --prompts FILE     one prompt per line, retrieved as one batch\n"
               "                     (prints: line number, rank, score, name)\n"
               "  --exclude a,b      adapter names that must not be returned\n"
               "  --keys T           key storage f32 | f16 | int8 (default f32)\n"
               "  --rerank K         re-score the best K by the query's similarity to their\n"
               "                     stored samples (default 5; 0 = keys only, sub-millisecond)\n"
               "  --bm25-w W         weight of the second stage's BM25 term (default 0.5; 0: none)\n"
               "  --json             JSON on stdout\n");
}

// --prompts: every line of the file is a query; one batched search.
static int retrieve_batch(const char *dir, const rm_pool_params *pp, const char *path, int k) {
    char *text;
    size_t len;
    if (rm_read_file(path, &text, &len)) return cli_fail("reading the prompts");
    int nq = 0, ret = 0;
    for (size_t i = 0; i < len; i++) nq += text[i] == '\n';
    nq += len > 0 && text[len - 1] != '\n';
    const char **q = malloc((size_t)(nq ? nq : 1) * sizeof *q);
    rm_hit *hits = malloc((size_t)(nq ? nq : 1) * (size_t)k * sizeof *hits);
    int *n_hits = malloc((size_t)(nq ? nq : 1) * sizeof *n_hits);
    rm_pool *p = NULL;
    if (!q || !hits || !n_hits) {
        ret = 1;
        goto done;
    }
    nq = 0;
    for (char *s = text, *line; (line = strsep(&s, "\n"));)
        if (*line || s) q[nq++] = line;
    if (nq > 0 && !*q[nq - 1]) nq--; // the empty piece after a final newline
    if (rm_pool_open(dir, pp, &p)) ret = cli_fail("opening the pool");
    else if (rm_pool_search_batch(p, q, nq, k, hits, n_hits)) ret = cli_fail("retrieving");
    else
        for (int i = 0; i < nq; i++)
            for (int r = 0; r < n_hits[i]; r++)
                printf("%d\t%d\t%.4f\t%s\n", i + 1, r + 1, hits[(size_t)i * k + r].score,
                       rm_pool_name(p, hits[(size_t)i * k + r].id));
done:
    rm_pool_close(p);
    free(q);
    free(hits);
    free(n_hits);
    free(text);
    return ret;
}

int cmd_retrieve(int argc, char **argv) {
    const char *dir = NULL, *prompt = NULL, *excl = NULL, *keys = "f32", *prompts = NULL;
    long k = 3, rerank = -1;
    double bm25_w = -1;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            usage(stdout);
            return 0;
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &dir)) {
        } else if (cli_str(argc, argv, &i, "--prompt", "-p", &prompt)) {
        } else if (cli_int(argc, argv, &i, "--top-k", "-k", &k)) {
        } else if (cli_str(argc, argv, &i, "--exclude", NULL, &excl)) {
        } else if (cli_str(argc, argv, &i, "--prompts", NULL, &prompts)) {
        } else if (cli_str(argc, argv, &i, "--keys", NULL, &keys)) {
        } else if (cli_int(argc, argv, &i, "--rerank", NULL, &rerank)) {
        } else if (cli_float(argc, argv, &i, "--bm25-w", NULL, &bm25_w)) {
        } else if (cli_flag(argc, argv, &i, "--json", NULL)) json = 1;
        else {
            fprintf(stderr, "ramole retrieve: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    const char *why = !dir                  ? "--pool DIR is required"
                      : !prompt && !prompts ? "give -p TEXT or --prompts FILE"
                      : prompt && prompts   ? "give -p TEXT or --prompts FILE, not both"
                      : k < 1 || k > 100000 ? "-k must be 1..100000"
                      : rerank > 1000       ? "--rerank wants 0..1000"
                      : bm25_w > 100        ? "--bm25-w wants 0..100"
                                            : NULL;
    if (why) {
        fprintf(stderr, "ramole retrieve: %s (see --help)\n", why);
        return 2;
    }
    if (cli_pool_present("retrieve", dir)) return 2; // a mistyped path must not become a new pool
    rm_pool_params pp = rm_pool_default_params();
    if (rm_key_type_parse(keys, &pp.key_type)) return cli_fail("--keys");
    if (rerank >= 0) pp.rerank.k = (int)rerank;
    if (bm25_w >= 0) pp.rerank.bm25.w = (float)bm25_w;
    if (prompts) return retrieve_batch(dir, &pp, prompts, (int)k);
    // split --exclude on commas
    char *ex_buf = excl ? strdup(excl) : NULL;
    const char *ex[256];
    int n_ex = 0;
    for (char *s = ex_buf, *tok; s && (tok = strsep(&s, ",")) && n_ex < 256;)
        if (*tok) ex[n_ex++] = tok;
    rm_pool *p = NULL;
    rm_hit *hits = malloc((size_t)k * sizeof *hits);
    int n = 0, ret = 0;
    if (!hits) {
        free(ex_buf);
        return 1;
    }
    if (rm_pool_open(dir, &pp, &p)) ret = cli_fail("opening the pool");
    else if (rm_pool_search(p, prompt, (int)k, ex, n_ex, hits, &n)) ret = cli_fail("retrieving");
    else if (json) {
        rm_sb sb;
        rm_sb_init(&sb);
        rm_sb_puts(&sb, "[");
        for (int i = 0; i < n; i++) {
            const char *name = rm_pool_name(p, hits[i].id);
            rm_sb_printf(&sb, "%s{\"id\": %lld, \"name\": ", i ? ", " : "", (long long)hits[i].id);
            rm_sb_json_str(&sb, name, strlen(name));
            rm_sb_puts(&sb, ", \"score\": ");
            rm_sb_json_num(&sb, hits[i].score);
            rm_sb_puts(&sb, "}");
        }
        rm_sb_puts(&sb, "]\n");
        fputs(sb.buf, stdout);
        rm_sb_free(&sb);
    } else {
        for (int i = 0; i < n; i++) printf("%2d  %.4f  %s\n", i + 1, hits[i].score, rm_pool_name(p, hits[i].id));
    }
    rm_pool_close(p);
    free(hits);
    free(ex_buf);
    return ret;
}

RM_COMMAND(retrieve, "retrieve the top-k adapters of a pool for a prompt", cmd_retrieve)
