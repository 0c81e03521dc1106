// bench_kernels.c — rm_matmul speed per weight type on TinyLlama shapes.
//
//   ramole-bench kernels [--quick] [--types q8_0,f16] [--n 1,8,32,512] [--threads 1,2]
//
// Prints, per (shape, type, n, threads): median and best time per call,
// GFLOP/s (2*n*in*out per call; integer ops count the same) and GB/s of
// weight bytes streamed, both from the median. Weights are cycled through enough copies (>= 192 MiB) that every
// call reads them from DRAM, as decode does. Also prints the machine's read
// bandwidth (rm_measure_read_bandwidth) and, for n = 1, the fraction of it.
// The weights are repacked as a model's are at load where this CPU's kernels
// want it (type shown as q8_0-r16 / q4_0-r16; RAMOLE_REPACK=0 keeps them as stored).
//
//   ramole-bench attention [--depth 256,1024,2048] [--threads 1,2]
//
// One decode step's attention on the TinyLlama shape (22 layers, 32 query
// heads over 4 KV heads of 64): a single row attends to `depth` cached
// positions in every layer (rm_attention_serve). The cache holds enough
// layers (>= 192 MiB of keys and values) that each step reads its 22 from
// DRAM, as decode at that depth does. Prints the median and best time per
// step and the GB/s of keys and values it reads, with the fraction of the
// machine's read bandwidth.
#include "bench.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/file.h"
#include "base/threadpool.h"
#include "model/attn.h"
#include "tensor/tensor.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

typedef struct {
    rm_tensor *W; // copies
    int ncopies;
    size_t bytes; // one copy
} weights;

static int weights_make(weights *w, rm_type t, int in, int out) {
    w->bytes = rm_row_size(t, in) * (size_t)out;
    w->ncopies = (int)((192u << 20) / w->bytes) + 1;
    if (w->ncopies > 64) w->ncopies = 64;
    w->W = calloc((size_t)w->ncopies, sizeof *w->W);
    float *row = malloc(sizeof(float) * in);
    uint8_t *first = malloc(w->bytes);
    if (!w->W || !row || !first) return -1;
    uint32_t s = 12345;
    for (int r = 0; r < out; r++) {
        for (int i = 0; i < in; i++) {
            s = s * 1664525u + 1013904223u;
            row[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f;
        }
        rm_quantize_row(t, row, first + rm_row_size(t, in) * r, in);
    }
    for (int k = 0; k < w->ncopies; k++) {
        w->W[k] = (rm_tensor){.type = t, .n_dims = 2, .ne = {in, out, 1, 1}};
        w->W[k].data = k == 0 ? first : malloc(w->bytes);
        if (!w->W[k].data) return -1;
        if (k) memcpy(w->W[k].data, first, w->bytes);
        rm_repack_for_kernels(&w->W[k], NULL); // as a model's weights at load (RAMOLE_REPACK=0: as stored)
    }
    free(row);
    return 0;
}

static void weights_free(weights *w) {
    for (int k = 0; k < w->ncopies && w->W; k++) free(w->W[k].data);
    free(w->W);
}

// Median seconds per rm_matmul call (*best: the fastest call).
static double time_matmul(rm_threadpool *tp, weights *w, const float *x, float *y, int n, int quick, double *best) {
    int in = (int)w->W[0].ne[0], out = (int)w->W[0].ne[1];
    double ops = 2.0 * n * in * out;
    int reps = (int)(3e9 / (ops + 1e6)); // about a second at 3 GOP/s (less on fast paths)
    if (quick) reps /= 4;
    if (reps < 3) reps = 3;
    if (reps > 400) reps = 400;
    double *t = malloc(sizeof(double) * reps);
    rm_matmul(tp, &w->W[0], x, in, y, out, n, 0); // warm-up
    for (int i = 0; i < reps; i++) {
        const rm_tensor *W = &w->W[(i + 1) % w->ncopies];
        double t0 = rm_now();
        rm_matmul(tp, W, x, in, y, out, n, 0);
        t[i] = rm_now() - t0;
        if (i == 0 || t[i] < *best) *best = t[i];
    }
    double med = rm_median(t, reps);
    free(t);
    return med;
}

static int bench_kernels(int argc, char **argv) {
    const char *types_arg = "f32,f16,bf16,q8_0,q4_0,q4_K";
    int ns[8] = {1, 8, 32, 512}, nn = 4, ths[4] = {1, 2}, nth = 2, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--types") && i + 1 < argc) types_arg = argv[++i];
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) nn = parse_list(argv[++i], ns, 8);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nth = parse_list(argv[++i], ths, 4);
        else {
            fprintf(stderr, "usage: ramole-bench kernels [--quick] [--types a,b] [--n 1,8] [--threads 1,2]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    const int shapes[][2] = {{2048, 2048}, {2048, 5632}, {5632, 2048}}; // {in, out}
    double bw[4] = {0};
    printf("cpu: %s\n", rm_cpu_describe());
    for (int k = 0; k < nth; k++) {
        rm_threadpool *tp = rm_threadpool_create(ths[k]);
        bw[k] = rm_measure_read_bandwidth(tp);
        rm_threadpool_free(tp);
        printf("read bandwidth, %d thread%s: %.1f GB/s\n", ths[k], ths[k] > 1 ? "s" : "", bw[k]);
    }
    printf("\n%-11s %-5s %4s %3s %9s %9s %9s %8s %7s\n", "W[out,in]", "type", "n", "thr", "ms/call", "best ms",
           "GFLOP/s", "GB/s", "%bw");
    int maxn = 0;
    for (int i = 0; i < nn; i++) maxn = ns[i] > maxn ? ns[i] : maxn;
    for (int s = 0; s < 3; s++) {
        int in = shapes[s][0], out = shapes[s][1];
        float *x = malloc(sizeof(float) * (size_t)in * maxn), *y = malloc(sizeof(float) * (size_t)out * maxn);
        for (size_t i = 0; i < (size_t)in * maxn; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        char tbuf[128];
        snprintf(tbuf, sizeof tbuf, "%s", types_arg);
        for (char *tok = strtok(tbuf, ","); tok; tok = strtok(NULL, ",")) {
            rm_type t;
            if (rm_type_parse(tok, &t) != 0) {
                fprintf(stderr, "unknown type %s\n", tok);
                continue;
            }
            weights w;
            if (weights_make(&w, t, in, out) != 0) {
                fprintf(stderr, "out of memory\n");
                weights_free(&w);
                continue;
            }
            for (int k = 0; k < nth; k++) {
                rm_threadpool *tp = rm_threadpool_create(ths[k]);
                for (int i = 0; i < nn; i++) {
                    double best = 0, sec = time_matmul(tp, &w, x, y, ns[i], quick, &best);
                    double gbs = (double)w.bytes / sec / 1e9;
                    char pct[16] = "";
                    if (ns[i] == 1 && bw[k] > 0) snprintf(pct, sizeof pct, "%.0f%%", 100 * gbs / bw[k]);
                    printf("%5dx%-5d %-5s %4d %3d %9.3f %9.3f %9.1f %8.1f %7s\n", out, in, rm_type_name(t), ns[i],
                           ths[k], sec * 1e3, best * 1e3, 2.0 * ns[i] * in * out / sec / 1e9, gbs, pct);
                    fflush(stdout);
                }
                rm_threadpool_free(tp);
            }
            weights_free(&w);
        }
        free(x);
        free(y);
    }
    return 0;
}
RM_BENCH(kernels, "rm_matmul GFLOP/s and GB/s per weight type on TinyLlama shapes", bench_kernels)

// Median seconds per decode step's attention (hp->n_layer layers from the
// cache's n_layer, cycled), one row at position depth - 1; *best: the fastest step.
static double time_attention(rm_threadpool *tp, const rm_llama_hparams *hp, const rm_kvcache *kv, int depth,
                             float *scratch, double *best) {
    enum { REPS = 30 };
    const int qd = hp->n_head * hp->head_dim;
    float *q = malloc(sizeof(float) * qd), *out = malloc(sizeof(float) * qd);
    double t[REPS];
    for (int i = 0; i < qd; i++) q[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    int32_t tok = 0, pos = depth - 1, slot = 0;
    rm_batch b = {1, &tok, &pos, &slot, NULL, NULL};
    int layer = 0;
    for (int r = -1; r < REPS; r++) { // r = -1: warm-up
        double t0 = rm_now();
        for (int l = 0; l < hp->n_layer; l++, layer = (layer + 1) % kv->n_layer)
            rm_attention_serve(tp, hp, kv, &b, layer, q, out, scratch);
        if (r >= 0) t[r] = rm_now() - t0;
        if (r == 0 || (r > 0 && t[r] < *best)) *best = t[r];
    }
    free(q);
    free(out);
    return rm_median(t, REPS);
}

// One cache type and depth: the cache (>= 192 MiB, cycled) filled, then the
// step timed at each thread count.
static void attention_case(const rm_llama_hparams *hp, int type, int depth, const int *ths, int nth) {
    const int kv_dim = hp->n_head_kv * hp->head_dim;
    const size_t es = rm_kv_elem_bytes(type);
    const double step_bytes = (double)hp->n_layer * 2 * depth * kv_dim * es;
    int layers = (int)((192u << 20) / (2.0 * depth * kv_dim * es)) + hp->n_layer;
    rm_kvcache kv;
    if (rm_kvcache_init_type(&kv, layers, 1, depth, kv_dim, type) != RM_OK) {
        fprintf(stderr, "depth %d: %s\n", depth, rm_last_error());
        return;
    }
    float *kr = malloc(sizeof(float) * kv_dim), *vr = malloc(sizeof(float) * kv_dim);
    for (int l = 0; l < layers && kr && vr; l++)
        for (int p = 0; p < depth; p++) {
            for (int i = 0; i < kv_dim; i++) {
                const unsigned x = (unsigned)((l * depth + p) * kv_dim + i);
                kr[i] = (float)((x * 2654435761u) % 1999) / 1999.0f - 0.5f;
                vr[i] = (float)((x * 40503u) % 997) / 997.0f - 0.5f;
            }
            rm_kv_put(&kv, l, 0, p, kr, vr);
        }
    free(kr);
    free(vr);
    for (int k = 0; k < nth; k++) {
        rm_threadpool *tp = rm_threadpool_create(ths[k]);
        float *scratch = malloc(sizeof(float) * rm_attention_scratch(hp, &kv, rm_threadpool_size(tp), 1));
        double bw = rm_measure_read_bandwidth(tp), best = 0;
        double sec = scratch ? time_attention(tp, hp, &kv, depth, scratch, &best) : 0;
        if (sec > 0)
            printf("%4s %6d %3d %9.3f %9.3f %8.1f %6.0f%%\n", rm_kv_type_name(type), depth, ths[k], sec * 1e3,
                   best * 1e3, step_bytes / sec / 1e9, 100 * step_bytes / sec / 1e9 / bw);
        fflush(stdout);
        free(scratch);
        rm_threadpool_free(tp);
    }
    rm_kvcache_free(&kv);
}

static int bench_attention(int argc, char **argv) {
    int depths[8] = {256, 1024, 2048}, nd = 3, ths[4] = {1, 2}, nth = 2, types[2] = {RM_KV_F32, RM_KV_F16}, nt = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--depth") && i + 1 < argc) nd = parse_list(argv[++i], depths, 8);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nth = parse_list(argv[++i], ths, 4);
        else if (!strcmp(argv[i], "--kv") && i + 1 < argc) {
            const char *a = argv[++i];
            const int both = !strcmp(a, "f32,f16");
            types[0] = both ? RM_KV_F32 : rm_kv_type_parse(a), types[1] = RM_KV_F16, nt = both ? 2 : 1;
            if (types[0] < 0) {
                fprintf(stderr, "--kv %s: expected f32, f16 or f32,f16\n", a);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: ramole-bench attention [--depth 256,1024,2048] [--threads 1,2] [--kv f32,f16]\n");
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    rm_llama_hparams hp = {.n_head = 32, .n_head_kv = 4, .head_dim = 64, .n_layer = 22};
    printf("cpu: %s\n", rm_cpu_describe());
    printf("\n%4s %6s %3s %9s %9s %8s %7s\n", "kv", "depth", "thr", "ms/step", "best ms", "GB/s", "%bw");
    for (int e = 0; e < nt; e++)
        for (int d = 0; d < nd; d++) {
            if (depths[d] < 1 || depths[d] > 131072) fprintf(stderr, "depth %d: must be 1..131072\n", depths[d]);
            else attention_case(&hp, types[e], depths[d], ths, nth);
        }
    return 0;
}
RM_BENCH(attention, "one decode step's attention at a given depth: ms and GB/s of the KV cache", bench_attention)
