// bench_tokenizer.c — encoding / decoding throughput per reference vocabulary.
//
// Text: the Flan inputs of ../shared/data/flan (the pool samples and the dev
// requests) and the tokenizer test strings, shuffled deterministically and
// repeated to a few MB. Each document is one rm_tokenize call, as prompts
// are in serving. One thread.
//   ramole-bench tokenizer [--mb 4] [--reps 3] [--vocab gpt-2]
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "bench.h"
#include "format/gguf.h"
#include "model/tokenizer.h"

typedef struct doc {
    const char *s;
    size_t n;
} doc;
typedef struct corpus {
    doc *v;
    size_t n, cap;
    size_t bytes;
    char **owned;
    size_t n_owned;
} corpus;

static int corpus_add(corpus *c, const char *s, size_t n) {
    if (n == 0) return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        doc *v = realloc(c->v, cap * sizeof *v);
        if (!v) return -1;
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = (doc){s, n};
    c->bytes += n;
    return 0;
}

static int keep(corpus *c, char *p) {
    char **o = realloc(c->owned, (c->n_owned + 1) * sizeof *o);
    if (!o) return -1;
    c->owned = o;
    c->owned[c->n_owned++] = p;
    return 0;
}

// Adds every "inputs" string found anywhere in the JSON value.
static void add_inputs(corpus *c, const rm_json *j) {
    if (!j) return;
    if (j->type == RM_JSON_OBJECT) {
        for (size_t i = 0; i < j->n; i++) {
            if (!strcmp(j->keys[i], "inputs") && j->items[i].type == RM_JSON_STRING)
                corpus_add(c, j->items[i].str, j->items[i].len);
            else add_inputs(c, &j->items[i]);
        }
    } else if (j->type == RM_JSON_ARRAY) {
        for (size_t i = 0; i < j->n; i++) add_inputs(c, &j->items[i]);
    }
}

// CPU seconds of this thread: the machine may be shared, the figure is per core.
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *k_vocabs[] = {"llama-spm", "gpt-2", "deepseek-coder", "falcon", "bert-bge"};

static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int load_corpus(const char *shared, corpus *c, rm_json **js, int *n_js) {
    char path[512];
    static const char *flan[] = {"config2.json", "combined_test.dev.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/data/flan/%s", shared, flan[i]);
        if (rm_json_parse_file(path, &js[*n_js]) == RM_OK) add_inputs(c, js[(*n_js)++]);
        else fprintf(stderr, "bench tokenizer: %s\n", rm_last_error());
    }
    for (size_t v = 0; v < sizeof k_vocabs / sizeof *k_vocabs; v++) {
        snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-%s.gguf.inp", shared, k_vocabs[v]);
        char *buf;
        size_t len;
        if (rm_read_file(path, &buf, &len) != RM_OK || keep(c, buf)) continue;
        static const char sep[] = "\n__ggml_vocab_test__\n";
        for (size_t pos = 0; pos < len;) {
            char *hit = memmem(buf + pos, len - pos, sep, sizeof sep - 1);
            size_t end = hit ? (size_t)(hit - buf) : len;
            corpus_add(c, buf + pos, end - pos);
            if (!hit) break;
            pos = end + sizeof sep - 1;
        }
        break; // the strings are the same for every vocab
    }
    return c->n ? 0 : -1;
}

static int bench_tokenizer(int argc, char **argv) {
    double target_mb = 4.0;
    int reps = 3;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc) target_mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    }
    const char *shared = getenv("RAMOLE_SHARED") ? getenv("RAMOLE_SHARED") : "../shared";
    char probe[512];
    snprintf(probe, sizeof probe, "%s/data/tokenizers", shared);
    if (!rm_is_dir(probe)) {
        printf("tokenizer: skipped (no %s)\n", probe);
        return 0;
    }
    corpus base = {0};
    rm_json *js[2];
    int n_js = 0;
    if (load_corpus(shared, &base, js, &n_js) != 0) {
        printf("tokenizer: skipped (no text in %s)\n", shared);
        return 0;
    }
    // Shuffled repetitions up to the target size.
    corpus text = {0};
    uint64_t s = 0x2545F4914F6CDD1Dull;
    while ((double)text.bytes < target_mb * 1e6) {
        for (size_t i = base.n; i > 1; i--) {
            size_t j = (size_t)(rng(&s) % i);
            doc t = base.v[i - 1];
            base.v[i - 1] = base.v[j];
            base.v[j] = t;
        }
        for (size_t i = 0; i < base.n && (double)text.bytes < target_mb * 1e6; i++)
            corpus_add(&text, base.v[i].s, base.v[i].n);
    }
    printf("text: %zu documents, %.2f MB (Flan inputs + tokenizer test strings, shuffled); MB/s per CPU-second\n",
           text.n, text.bytes / 1e6);
    printf("%-16s %-10s %-6s %10s %12s %12s %12s\n", "vocab", "kind", "cache", "tokens", "bytes/token", "encode MB/s",
           "decode MB/s");
    int32_t *ids = malloc(((size_t)1 << 20) * sizeof *ids);
    char *out = malloc(1 << 22);
    int rc = 0;
    for (size_t v = 0; v < sizeof k_vocabs / sizeof *k_vocabs && ids && out; v++) {
        if (only && strcmp(only, k_vocabs[v])) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-%s.gguf", shared, k_vocabs[v]);
        gguf_file g;
        rm_tokenizer *t = NULL;
        if (gguf_open(&g, path) != RM_OK || rm_tokenizer_from_gguf(&t, &g) != RM_OK) {
            fprintf(stderr, "bench tokenizer: %s\n", rm_last_error());
            rc = 1;
            continue;
        }
        gguf_close(&g);
        for (int cached = 1; cached >= 0; cached--) {
            rm_tokenizer_set_cache(t, cached);
            double enc[16], dec[16];
            long n_tok = 0;
            if (reps > 16) reps = 16;
            for (int r = 0; r < reps; r++) {
                n_tok = 0;
                double t0 = cpu_now(), t_dec = 0;
                for (size_t i = 0; i < text.n; i++) {
                    int n = rm_tokenize(t, text.v[i].s, text.v[i].n, 0, 0, ids, 1 << 20);
                    if (n < 0 || n > (1 << 20)) {
                        rc = 1;
                        break;
                    }
                    n_tok += n;
                    double t1 = cpu_now();
                    rm_detok d;
                    rm_detok_init(&d, t);
                    int o = 0, cap = rm_detok_max_bytes(t);
                    for (int k = 0; k < n && o + cap < (1 << 22); k++) o += rm_detok_push(&d, ids[k], out + o, cap);
                    t_dec += cpu_now() - t1;
                }
                double total = cpu_now() - t0;
                enc[r] = text.bytes / 1e6 / (total - t_dec);
                dec[r] = text.bytes / 1e6 / t_dec;
            }
            printf("%-16s %-10s %-6s %10ld %12.2f %12.1f %12.1f\n", k_vocabs[v], rm_tokenizer_kind(t),
                   cached ? "on" : "off", n_tok, (double)text.bytes / (double)(n_tok ? n_tok : 1), rm_median(enc, reps),
                   rm_median(dec, reps));
        }
        rm_tokenizer_free(t);
    }
    free(ids);
    free(out);
    for (int i = 0; i < n_js; i++) rm_json_free(js[i]);
    for (size_t i = 0; i < base.n_owned; i++) free(base.owned[i]);
    free(base.owned);
    free(base.v);
    free(text.v);
    return rc;
}

RM_BENCH(tokenizer, "tokenizer encode/decode MB/s per reference vocabulary (one core)", bench_tokenizer)
