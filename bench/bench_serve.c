// bench_serve.c — serving throughput through the continuous-batching engine
// (src/serve/engine.c, what `ramole serve` runs): R requests, each with its
// own random set of k of A adapters (mixture), all submitted at once, served
// with S slots, against the same requests one at a time (1 slot). Same
// machine state: the two runs alternate, medians over --runs.
//
//   ramole-bench serve [--model PATH | --synth tinyllama-1.1b] [--type q8_0] [--requests 16]
//       [--slots 16] [--prompt 32] [--new 32] [--adapters 48] [--k 3] [--rank 6] [--threads 2] [--runs 3]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "bench.h"
#include "lora/adapter.h"
#include "model/synth.h"
#include "serve/engine.h"

typedef struct {
    int done, tokens;
} tally;

static void on_done(void *user, const int32_t *tokens, int n, const char *reason) {
    (void)tokens, (void)reason;
    tally *t = user;
    t->done++;
    t->tokens += n;
}

// Serves every request with `slots` slots; returns generated tokens / s (prefill included in the time).
static double serve_all(rm_llama *m, rm_threadpool *tp, int slots, int R, int P, int N, rm_lora **ad, const int *sets,
                        int k) {
    rm_engine *e = NULL;
    if (rm_engine_new(&e, m, tp, slots, P + N + 1, 512)) return -1;
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0; // greedy: the same work whatever the slots
    tally t = {0, 0};
    int32_t *prompt = malloc((size_t)P * sizeof(int32_t));
    double t0 = rm_now();
    for (int r = 0; r < R && prompt; r++) {
        for (int i = 0; i < P; i++) prompt[i] = (int32_t)((r * 131 + i * 17 + 3) % m->hp.n_vocab);
        rm_lora *set[16];
        for (int j = 0; j < k; j++) set[j] = ad[sets[r * k + j]];
        rm_engine_cbs cb = {on_done, NULL, &t};
        if (rm_engine_submit(e, prompt, P, N, &sp, set, k, RM_COMPOSE_MIXTURE, &cb)) break;
    }
    while (rm_engine_step(e) > 0) {}
    double dt = rm_now() - t0;
    free(prompt);
    rm_engine_free(e);
    return t.done == R ? t.tokens / dt : -1;
}

static int bench_serve(int argc, char **argv) {
    const char *model = NULL, *synth = "tinyllama-1.1b", *type = "q8_0";
    int R = 16, S = 16, P = 32, N = 32, A = 48, k = 3, rank = 6, threads = 2, runs = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--synth")) synth = v;
        else if (!strcmp(o, "--type")) type = v;
        else if (!strcmp(o, "--requests")) R = atoi(v);
        else if (!strcmp(o, "--slots")) S = atoi(v);
        else if (!strcmp(o, "--prompt")) P = atoi(v);
        else if (!strcmp(o, "--new")) N = atoi(v);
        else if (!strcmp(o, "--adapters")) A = atoi(v);
        else if (!strcmp(o, "--k")) k = atoi(v);
        else if (!strcmp(o, "--rank")) rank = atoi(v);
        else if (!strcmp(o, "--threads")) threads = atoi(v);
        else if (!strcmp(o, "--runs")) runs = atoi(v);
        else return fprintf(stderr, "bench serve: unknown option %s\n", o), 2;
    }
    if (R < 1 || S < 1 || P < 1 || N < 1 || A < k || k < 1 || k > 16 || runs < 1)
        return fprintf(stderr, "bench serve: bad sizes\n"), 2;
    char path[512];
    rm_type t;
    if (!model) {
        if (rm_type_parse(type, &t)) return fprintf(stderr, "%s\n", rm_last_error()), 1;
        snprintf(path, sizeof path, "/tmp/ramole-bench-serve-%s-%s.gguf", synth, type);
        if (!rm_file_exists(path)) {
            fprintf(stderr, "writing %s ...\n", path);
            if (rm_synth_write(rm_synth_find(synth), t, 1, path, NULL, NULL))
                return fprintf(stderr, "%s\n", rm_last_error()), 1;
        }
        model = path;
    }
    rm_llama *m = NULL;
    if (rm_llama_load(&m, model)) return fprintf(stderr, "%s\n", rm_last_error()), 1;
    rm_threadpool *tp = rm_threadpool_create(threads);
    rm_lora **ad = calloc((size_t)A, sizeof *ad);
    int *sets = malloc((size_t)R * (size_t)k * sizeof(int)), rc = 0;
    unsigned qv = (1u << RM_LIN_Q) | (1u << RM_LIN_V);
    for (int a = 0; a < A && !rc; a++) rc = rm_lora_random(&ad[a], m, rank, qv, 1000 + (uint64_t)a);
    uint64_t s = 7;
    for (int r = 0; r < R; r++) // k distinct adapters per request
        for (int j = 0; j < k; j++) {
            int a, dup;
            do {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                a = (int)((s >> 33) % (uint64_t)A);
                dup = 0;
                for (int q = 0; q < j; q++) dup |= sets[r * k + q] == a;
            } while (dup);
            sets[r * k + j] = a;
        }
    double *vb = malloc((size_t)runs * sizeof(double)), *v1 = malloc((size_t)runs * sizeof(double));
    for (int i = 0; !rc && i < runs; i++) {
        v1[i] = serve_all(m, tp, 1, R, P, N, ad, sets, k);
        vb[i] = serve_all(m, tp, S, R, P, N, ad, sets, k);
        if (v1[i] < 0 || vb[i] < 0) rc = 1;
    }
    if (rc) {
        fprintf(stderr, "bench serve: %s\n", rm_last_error());
    } else {
        double one = rm_median(v1, runs), batched = rm_median(vb, runs);
        printf("serve: %s, %d requests (prompt %d, %d new tokens, %d of %d rank-%d q,v adapters each, mixture), %d "
               "threads\n",
               model, R, P, N, k, A, rank, threads);
        printf("| slots | generated tok/s (median of %d) |\n| --- | --- |\n| 1 (one request at a time) | %.1f |\n| %d "
               "| %.1f (%.2fx) |\n",
               runs, one, S, batched, batched / one);
    }
    free(vb);
    free(v1);
    for (int a = 0; a < A; a++) rm_lora_free(ad[a]);
    free(ad);
    free(sets);
    rm_threadpool_free(tp);
    rm_llama_free(m);
    return rc;
}

RM_BENCH(serve, "serving throughput: R requests with different adapter sets, continuous batching vs one at a time",
         bench_serve)
