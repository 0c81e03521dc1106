// cmd_bench.c — `ramole bench`: prefill, decode and batched-decode speed of a
// model on this machine, next to the memory-bandwidth bound of decoding.
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/stats.h"
#include "base/svg.h"
#include "model/llama.h"

#include <stdlib.h>
#include <string.h>

typedef struct bench_ctx {
    rm_llama *m;
    rm_kvcache kv;
    rm_threadpool *tp;
    float *logits;
    int32_t *tok, *pos, *slot;
    uint8_t *want;
} bench_ctx;

// Prefill of n tokens in slot 0 as one batch; returns tokens/s.
static double run_prefill(bench_ctx *c, int n) {
    for (int i = 0; i < n; i++) {
        c->tok[i] = (int32_t)((i * 7919 + 13) % c->m->hp.n_vocab);
        c->pos[i] = i;
        c->slot[i] = 0;
        c->want[i] = i == n - 1;
    }
    rm_kvcache_clear_slot(&c->kv, 0);
    rm_batch b = {n, c->tok, c->pos, c->slot, c->want, NULL};
    double t0 = rm_now();
    if (rm_llama_forward(c->m, &c->kv, c->tp, &b, NULL, c->logits)) return -1;
    return n / (rm_now() - t0);
}

// `batch` sequences, each with a 16-token prompt, then `steps` decode steps
// in which every sequence adds one token; returns decoded tokens/s.
static double run_decode(bench_ctx *c, int batch, int steps) {
    const int prompt = 16;
    for (int s = 0; s < batch; s++) {
        rm_kvcache_clear_slot(&c->kv, s);
        for (int i = 0; i < prompt; i++) {
            c->tok[i] = (int32_t)((s * 31 + i * 17 + 5) % c->m->hp.n_vocab);
            c->pos[i] = i;
            c->slot[i] = s;
            c->want[i] = i == prompt - 1;
        }
        rm_batch b = {prompt, c->tok, c->pos, c->slot, c->want, NULL};
        if (rm_llama_forward(c->m, &c->kv, c->tp, &b, NULL, c->logits)) return -1;
    }
    double t0 = rm_now();
    for (int st = 0; st < steps; st++) {
        for (int s = 0; s < batch; s++) {
            c->tok[s] = (int32_t)((st * 101 + s * 7) % c->m->hp.n_vocab);
            c->pos[s] = prompt + st;
            c->slot[s] = s;
            c->want[s] = 1;
        }
        rm_batch b = {batch, c->tok, c->pos, c->slot, c->want, NULL};
        if (rm_llama_forward(c->m, &c->kv, c->tp, &b, NULL, c->logits)) return -1;
    }
    return (double)batch * steps / (rm_now() - t0);
}

static int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *svg = NULL;
    long threads = 0, runs = 3, steps = 16;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            printf("usage: ramole bench -m MODEL [-t THREADS] [--runs R] [--steps N] [--json] [--svg FILE]\n\n"
                   "Prompt processing (64 and 512 tokens), decode at batch 1, 8 and 32, and this machine's\n"
                   "read bandwidth with the decode bound it implies (weight bytes per token / bandwidth),\n"
                   "and its int8 multiply-add peak with the prefill and batched-decode bounds it implies.\n"
                   "Figures are medians over R runs (default 3). --json prints one JSON object on stdout;\n"
                   "--svg FILE draws the figures next to their bounds as a bar chart.\n");
            return 0;
        } else if (cli_str(argc, argv, &i, "--model", "-m", &model)) {
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {
        } else if (cli_int(argc, argv, &i, "--runs", NULL, &runs)) {
        } else if (cli_int(argc, argv, &i, "--steps", NULL, &steps)) {
        } else if (cli_str(argc, argv, &i, "--svg", NULL, &svg)) {
        } else if (cli_flag(argc, argv, &i, "--json", NULL)) {
            json = 1;
        } else {
            fprintf(stderr, "ramole bench: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model) { fprintf(stderr, "ramole bench: -m MODEL is required\n"); return 2; }
    if (runs < 1 || steps < 1) { fprintf(stderr, "ramole bench: --runs and --steps must be >= 1\n"); return 2; }
    bench_ctx c = {0};
    if (rm_llama_load(&c.m, model)) return cli_fail("cannot load model");
    int rc = 1, max_batch = 32, ctx = 512 + 16;
    c.tp = rm_threadpool_create((int)threads);
    c.logits = malloc((size_t)512 * c.m->hp.n_vocab * sizeof(float));
    c.tok = malloc(512 * sizeof(int32_t));
    c.pos = malloc(512 * sizeof(int32_t));
    c.slot = malloc(512 * sizeof(int32_t));
    c.want = malloc(512);
    if (!c.tp || !c.logits || !c.tok || !c.pos || !c.slot || !c.want) { fprintf(stderr, "ramole bench: out of memory\n"); goto out; }
    if (16 + steps > ctx) ctx = 16 + (int)steps;
    if (rm_kvcache_init(&c.kv, c.m->hp.n_layer, max_batch, ctx, c.m->hp.n_head_kv * c.m->hp.head_dim)) { cli_fail("kv cache"); goto out; }

    int nt = rm_threadpool_size(c.tp);
    double *v = malloc((size_t)runs * sizeof(double)), r[6];
    if (!v) goto out;
    fprintf(stderr, "bench: %s, %d threads, %ld runs\n", model, nt, runs);
    double bw = 0;
    for (int i = 0; i < runs; i++) v[i] = rm_measure_read_bandwidth(c.tp);
    bw = rm_median(v, (int)runs);
    double bound = bw * 1e9 / (double)rm_llama_bytes_per_token(c.m);
    const int what[6][2] = {{0, 64}, {0, 512}, {1, 1}, {1, 8}, {1, 32}, {0, 0}};
    const char *names[5] = {"prefill 64", "prefill 512", "decode b=1", "decode b=8", "decode b=32"};
    run_decode(&c, 1, 2); // warm-up: page in the weights
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < runs; i++) v[i] = what[k][0] ? run_decode(&c, what[k][1], (int)steps) : run_prefill(&c, what[k][1]);
        r[k] = rm_median(v, (int)runs);
        if (r[k] < 0) { cli_fail("forward"); free(v); goto out; }
        fprintf(stderr, "  %-12s %9.2f tok/s\n", names[k], r[k]);
    }
    free(v);
    fprintf(stderr, "  bandwidth    %9.2f GB/s -> decode bound %.2f tok/s (%.1f MB/token); decode b=1 at %.0f%% of it\n", bw,
            bound, rm_llama_bytes_per_token(c.m) / 1e6, 100.0 * r[2] / bound);
    fprintf(stderr, "  batch 32 / batch 1 = %.2fx\n", r[4] / r[2]);
    // Compute ceilings: int8 multiply-add rate of this machine over the ops a
    // token needs (2 per weight of the layers' linears; plus the output head
    // for decode, where every row wants logits; attention not counted).
    double kern_gops, bare_gops, lin = 0;
    rm_measure_int8_peak(c.tp, &kern_gops, &bare_gops);
    for (int l = 0; l < c.m->hp.n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) lin += (double)c.m->layers[l].w[w].ne[0] * (double)c.m->layers[l].w[w].ne[1];
    double head = (double)c.m->output.ne[0] * (double)c.m->output.ne[1];
    double pf_bound = kern_gops * 1e9 / (2 * lin), batch_bound = kern_gops * 1e9 / (2 * (lin + head));
    fprintf(stderr,
            "  int8 peak    %9.1f GOP/s (the q8_0/q4_0 kernels' per-block sequence; bare maddubs+madd %.1f), %.2f GOP/token\n"
            "               -> prefill bound %.1f tok/s (prefill 512 at %.0f%%), batched-decode bound %.1f tok/s = %.2fx decode b=1\n",
            kern_gops, bare_gops, 2 * lin / 1e9, pf_bound, 100.0 * r[1] / pf_bound, batch_bound, batch_bound / r[2]);
    if (json)
        printf("{\"bandwidth_gbs\": %.3f, \"decode_bound_tps\": %.3f, \"decode_tps\": %.3f, \"prefill64_tps\": %.3f, "
               "\"prefill512_tps\": %.3f, \"batch8_tps\": %.3f, \"batch32_tps\": %.3f, \"threads\": %d, "
               "\"int8_peak_gops\": %.3f, \"int8_bare_gops\": %.3f, \"prefill_bound_tps\": %.3f, \"batch_bound_tps\": %.3f}\n",
               bw, bound, r[2], r[0], r[1], r[3], r[4], nt, kern_gops, bare_gops, pf_bound, batch_bound);
    if (svg) {
        const char *groups[4] = {"decode b=1", "prefill 512", "decode b=8", "decode b=32"};
        const char *series[2] = {"measured", "bound (bandwidth / int8 peak)"};
        double vals[8] = {r[2], bound, r[1], pf_bound, r[3], batch_bound, r[4], batch_bound};
        char title[256];
        snprintf(title, sizeof title, "ramole bench, %d threads: tok/s", nt);
        if (rm_svg_bars(svg, title, "tokens / s", groups, 4, series, 2, vals)) { cli_fail("svg"); goto out; }
        fprintf(stderr, "  chart: %s\n", svg);
    }
    rc = 0;
out:
    rm_kvcache_free(&c.kv);
    rm_threadpool_free(c.tp);
    free(c.logits);
    free(c.tok);
    free(c.pos);
    free(c.slot);
    free(c.want);
    rm_llama_free(c.m);
    return rc;
}

RM_COMMAND(bench, "measure prefill / decode / batched decode speed of a model", cmd_bench)
