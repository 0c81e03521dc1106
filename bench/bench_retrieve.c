// bench_retrieve.c — retrieval latency: embed a query with the learned
// hashed-n-gram embedder (256-d) and search N random adapter keys exactly,
// for N = 1k / 10k / 100k and F32 / F16 / INT8 keys, one query at a time and
// in batches of 32, on 1 and 2 threads. Medians over the runs, of wall time
// and (one thread) of the thread's CPU time, which a machine shared with
// other jobs does not inflate as much.
//   ramole-bench retrieve [--dim 256] [--queries 200] [--max 100000]
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "base/file.h"
#include "bench.h"
#include "retrieve/embed.h"
#include "retrieve/index.h"

static const char *g_queries[] = {
    "Translate to English: Bugün hava çok güzel ve parkta yürüyüş yapmak istiyorum.",
    "Premise: A man is playing a guitar on stage. Hypothesis: A person is performing music. Does the premise entail "
    "the hypothesis?\nOPTIONS:\n- yes\n- it is not possible to tell\n- no",
    "What is the sentiment of the following movie review sentence? a wild, endearing, masterful documentary",
    "Answer this question: who wrote the novel pride and prejudice??",
    "Generate a sentence about this data: The Eagle eatType coffee shop; The Eagle food Japanese; The Eagle priceRange "
    "less than £20",
    "Read the text and determine if the sentence is true: The river flows into the Baltic Sea. Sentence: The river "
    "ends in a sea.",
};
#define N_Q (int)(sizeof g_queries / sizeof g_queries[0])

static uint64_t g_rng = 88172645463325252ull;
static double rnd_normal(void) {
    double u1, u2;
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    u1 = ((g_rng >> 11) + 0.5) / 9007199254740992.0;
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    u2 = ((g_rng >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void random_unit(float *v, int dim) {
    double ss = 0;
    for (int d = 0; d < dim; d++) {
        v[d] = (float)rnd_normal();
        ss += (double)v[d] * v[d];
    }
    for (int d = 0; d < dim; d++) v[d] = (float)(v[d] / sqrt(ss));
}

int bench_retrieve(int argc, char **argv) {
    int dim = 256, nq = 200, max_n = 100000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dim")) dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--queries")) nq = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max")) max_n = atoi(argv[i + 1]);
    }
    if (dim < 8 || nq < 1 || max_n < 1000) {
        fprintf(stderr, "bench retrieve: bad arguments\n");
        return 2;
    }
    // The embedder: an untrained projection costs what a trained one does.
    rm_hashproj_params hp = rm_hashproj_default_params();
    hp.dim = dim;
    rm_embedder *e = NULL;
    if (rm_hashproj_create(&hp, g_queries, N_Q, NULL, &e)) {
        fprintf(stderr, "bench retrieve: %s\n", rm_last_error());
        return 1;
    }
    float *q = malloc((size_t)nq * dim * sizeof *q);
    double *t = malloc((size_t)nq * sizeof *t), *tc = malloc((size_t)nq * sizeof *tc);
    rm_hit *hits = malloc((size_t)32 * 8 * sizeof *hits);
    int n_hits[32];
    if (!q || !t || !tc || !hits) return 1;
    for (int i = 0; i < nq; i++) {
        double t0 = rm_now();
        rm_embedder_embed(e, g_queries[i % N_Q], q + (size_t)i * dim);
        t[i] = rm_now() - t0;
    }
    double embed_us = 1e6 * rm_median(t, nq);
    printf("retrieval latency: hashproj embedder (%d-d, 2^%d buckets), exact top-8 search, medians\n", dim,
           hp.feat.bits);
    printf("embed one query: %.1f us\n\n", embed_us);
    printf("%8s %5s %3s %10s %10s %13s %12s %9s %8s\n", "adapters", "keys", "thr", "search us", "cpu us",
           "embed+search", "batch32 us/q", "cpu us/q", "key MB");
    const rm_key_type types[3] = {RM_KEY_F32, RM_KEY_F16, RM_KEY_I8};
    float *key = malloc((size_t)dim * sizeof *key);
    for (int n = 1000; n <= max_n; n *= 10) {
        for (int ti = 0; ti < 3; ti++) {
            rm_index *ix;
            if (rm_index_create(dim, types[ti], &ix)) return 1;
            g_rng = 88172645463325252ull;
            for (int i = 0; i < n; i++) {
                random_unit(key, dim);
                rm_index_add(ix, i, key);
            }
            double key_mb = (double)n * ((dim + 31) / 32 * 32) *
                            (types[ti] == RM_KEY_F32   ? 4
                             : types[ti] == RM_KEY_F16 ? 2
                                                       : 1) /
                            1e6;
            for (int th = 1; th <= 2; th++) {
                rm_index_set_threads(ix, th);
                int reps = n >= 100000 ? nq / 2 : nq;
                for (int i = 0; i < reps; i++) {
                    double t0 = rm_now(), c0 = cpu_now();
                    rm_index_search(ix, q + (size_t)(i % nq) * dim, 8, NULL, 0, hits, n_hits);
                    t[i] = rm_now() - t0;
                    tc[i] = cpu_now() - c0;
                }
                double search_us = 1e6 * rm_median(t, reps), search_cpu = 1e6 * rm_median(tc, reps);
                int breps = 10;
                for (int i = 0; i < breps; i++) {
                    double t0 = rm_now(), c0 = cpu_now();
                    rm_index_search_batch(ix, q + (size_t)(i % (nq / 32 > 0 ? nq / 32 : 1)) * 32 * dim,
                                          32 <= nq ? 32 : nq, 8, NULL, NULL, hits, n_hits);
                    t[i] = (rm_now() - t0) / (32 <= nq ? 32 : nq);
                    tc[i] = (cpu_now() - c0) / (32 <= nq ? 32 : nq);
                }
                double batch_us = 1e6 * rm_median(t, breps), batch_cpu = 1e6 * rm_median(tc, breps);
                char c1[16] = "-", c2[16] = "-"; // CPU time of the calling thread only means something on 1 thread
                if (th == 1) {
                    snprintf(c1, sizeof c1, "%.1f", search_cpu);
                    snprintf(c2, sizeof c2, "%.1f", batch_cpu);
                }
                printf("%8d %5s %3d %10.1f %10s %13.1f %12.1f %9s %8.1f\n", n, rm_key_type_name(types[ti]), th,
                       search_us, c1, search_us + embed_us, batch_us, c2, key_mb);
                fflush(stdout);
            }
            rm_index_free(ix);
        }
    }
    free(key);
    free(q);
    free(t);
    free(tc);
    free(hits);
    rm_embedder_free(e);
    return 0;
}

RM_BENCH(retrieve, "retrieval latency: embed + exact top-k over 1k/10k/100k adapters, f32/f16/int8 keys",
         bench_retrieve)
