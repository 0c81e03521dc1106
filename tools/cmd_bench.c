// cmd_bench.c — `ramole bench`: prefill, decode and batched-decode speed of a
// model on this machine, next to the bounds of bandwidth and int8 compute, and
// with --compare llamacpp the same measures of llama.cpp on the same file,
// run interleaved with ramole's, as ratios.
//
// parse (bench_opts) -> validate -> run (R runs of five measures, interleaved
// with llama.cpp's when comparing) -> report (text on stderr, --json, --svg).
#include "cli.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/stats.h"
#include "base/svg.h"
#include "model/llama.h"
#include "tensor/tensor.h"

#include <stdlib.h>
#include <string.h>

enum { N_MEASURES = 5 };
static const char *k_names[N_MEASURES] = {"prefill 64", "prefill 512", "decode b=1", "decode b=8", "decode b=32"};
static const char *k_keys[N_MEASURES] = {"prefill64_tps", "prefill512_tps", "decode_tps", "batch8_tps", "batch32_tps"};

typedef struct bench_opts {
    const char *model, *svg, *compare_dir;
    long threads, runs, steps;
    int json, compare;
} bench_opts;

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

// One run of the five measures; returns -1 when a forward pass fails.
static int run_once(bench_ctx *c, int steps, double out[N_MEASURES]) {
    static const int what[N_MEASURES][2] = {{0, 64}, {0, 512}, {1, 1}, {1, 8}, {1, 32}};
    for (int k = 0; k < N_MEASURES; k++) {
        out[k] = what[k][0] ? run_decode(c, what[k][1], steps) : run_prefill(c, what[k][1]);
        if (out[k] < 0) return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------
// llama.cpp, through the driver of ../shared/tools/llamacpp-bench: DIR/lb and
// the prebuilt libraries under DIR/bins/package/bins/linux-x64.

// One run of llama.cpp's five measures on `model`: the driver prints a JSON
// line per run ("run": 0, 1, ...) with the same keys as ramole's.
static int llamacpp_once(const bench_opts *o, int threads, double out[N_MEASURES]) {
    char lb[4096], bins[4096], q[4][4200], cmd[17000];
    snprintf(lb, sizeof lb, "%s/lb", o->compare_dir);
    snprintf(bins, sizeof bins, "%s/bins/package/bins/linux-x64", o->compare_dir);
    char thr[32], steps[32];
    snprintf(thr, sizeof thr, "%d", threads);
    snprintf(steps, sizeof steps, "%ld", o->steps);
    if (cli_sh_quote(lb, q[0], sizeof q[0]) || cli_sh_quote(o->model, q[1], sizeof q[1]) ||
        cli_sh_quote(bins, q[2], sizeof q[2]))
        return rm_errorf(RM_EINVAL, "llama.cpp bench: path too long");
    // two runs, the first discarded: llama.cpp sizes its compute graphs on
    // first use, which a fresh process would otherwise pay inside the timing
    snprintf(cmd, sizeof cmd, "%s %s %s %s 2 %s 2>/dev/null", q[0], q[1], q[2], thr, steps);
    FILE *p = popen(cmd, "r");
    if (!p) return rm_errorf(RM_EIO, "llama.cpp bench: cannot run %s", lb);
    char line[2048];
    int got = 0;
    while (!got && fgets(line, sizeof line, p)) {
        rm_json *j = NULL;
        if (line[0] != '{' || rm_json_parse(line, strlen(line), "llama.cpp bench output", &j) != RM_OK) continue;
        if (rm_json_get_int(j, "run", -1) != 1) {
            rm_json_free(j);
            continue;
        }
        got = 1;
        for (int k = 0; k < N_MEASURES; k++) {
            out[k] = rm_json_get_num(j, k_keys[k], -1);
            if (!(out[k] > 0)) got = 0;
        }
        rm_json_free(j);
    }
    int status = pclose(p);
    if (!got) return rm_errorf(RM_EFORMAT, "llama.cpp bench: %s gave no result line (exit status %d)", lb, status);
    return RM_OK;
}

// ---------------------------------------------------------------------------

static int parse_args(int argc, char **argv, bench_opts *o) {
    const char *compare = NULL;
    *o = (bench_opts){.runs = 3, .steps = 16};
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            printf("usage: ramole bench -m MODEL [-t THREADS] [--runs R] [--steps N] [--json] [--svg FILE]\n"
                   "                    [--compare llamacpp [--llamacpp-dir DIR]]\n\n"
                   "Prompt processing (64 and 512 tokens), decode at batch 1, 8 and 32, and this machine's\n"
                   "read bandwidth (probed just before each run) with the decode bound it implies (weight\n"
                   "bytes per token / bandwidth) and decode b=1's share of it (each run against its own probe),\n"
                   "and its int8 multiply-add peak, measured with the instructions of the kernels that run,\n"
                   "with the prefill and batched-decode bounds it implies. Figures are medians over R runs\n"
                   "(default 3). The kernel family used (scalar, avx2, avx512, avx512-vnni, avx512-bf16; RAMOLE_ISA "
                   "forces\n"
                   "one) is printed first. --json prints one JSON object on stdout; --svg FILE draws the\n"
                   "figures next to their bounds as a bar chart.\n\n"
                   "--compare llamacpp runs llama.cpp on the same file, one run of its five measures after\n"
                   "each of ramole's (each in a fresh process that first runs them once untimed), and\n"
                   "prints both medians and ramole / llama.cpp. It needs the driver\n"
                   "built by ../shared/tools/llamacpp-bench/build.sh, found in --llamacpp-dir DIR, else\n"
                   "$RAMOLE_LLAMACPP_BENCH, else ~/.cache/ramole-llamacpp-bench.\n");
            exit(0);
        } else if (cli_str(argc, argv, &i, "--model", "-m", &o->model)) {
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &o->threads)) {
        } else if (cli_int(argc, argv, &i, "--runs", NULL, &o->runs)) {
        } else if (cli_int(argc, argv, &i, "--steps", NULL, &o->steps)) {
        } else if (cli_str(argc, argv, &i, "--svg", NULL, &o->svg)) {
        } else if (cli_str(argc, argv, &i, "--compare", NULL, &compare)) {
        } else if (cli_str(argc, argv, &i, "--llamacpp-dir", NULL, &o->compare_dir)) {
        } else if (cli_flag(argc, argv, &i, "--json", NULL)) {
            o->json = 1;
        } else {
            fprintf(stderr, "ramole bench: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!o->model) {
        fprintf(stderr, "ramole bench: -m MODEL is required\n");
        return 2;
    }
    if (o->runs < 1 || o->runs > 1000 || o->steps < 1 || o->steps > 100000) {
        fprintf(stderr, "ramole bench: --runs must be 1..1000 and --steps 1..100000\n");
        return 2;
    }
    if (o->threads < 0) {
        fprintf(stderr, "ramole bench: --threads must be >= 0 (0: all cores)\n");
        return 2;
    }
    if (compare) {
        if (strcmp(compare, "llamacpp") != 0) {
            fprintf(stderr, "ramole bench: --compare takes 'llamacpp' (got '%s')\n", compare);
            return 2;
        }
        o->compare = 1;
    }
    if (o->compare_dir && !o->compare) {
        fprintf(stderr, "ramole bench: --llamacpp-dir goes with --compare llamacpp\n");
        return 2;
    }
    return 0;
}

static double weight_elems(const rm_llama *m, int with_head) {
    double lin = 0;
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) lin += (double)m->layers[l].w[w].ne[0] * (double)m->layers[l].w[w].ne[1];
    return lin + (with_head ? (double)m->output.ne[0] * (double)m->output.ne[1] : 0);
}

// The kernel family of every weight type the model's matrices have, as
// "q4_K-r16 avx512-vnni, q6_K avx2" (mixed files run several).
static void kernels_by_type(const rm_llama *m, char *buf, size_t n) {
    int seen[8], ns = 0;
    size_t len = 0;
    buf[0] = 0;
    for (int l = -1; l < m->hp.n_layer; l++)
        for (int w = 0; w < (l < 0 ? 1 : RM_LIN_COUNT); w++) {
            int t = l < 0 ? (int)m->output.type : (int)m->layers[l].w[w].type, k = 0;
            while (k < ns && seen[k] != t) k++;
            if (k < ns || ns == 8) continue;
            seen[ns++] = t;
            int wrote = snprintf(buf + len, n - len, "%s%s %s", ns > 1 ? ", " : "", rm_type_name(t),
                                 rm_matmul_family((rm_type)t));
            if (wrote < 0 || (size_t)wrote >= n - len) return;
            len += (size_t)wrote;
        }
}

static void report(const bench_opts *o, const bench_ctx *c, const char *family, const double r[N_MEASURES],
                   const double *lc, double bw, double frac) {
    int nt = rm_threadpool_size(c->tp);
    double bound = bw * 1e9 / (double)rm_llama_bytes_per_token(c->m);
    for (int k = 0; k < N_MEASURES; k++) {
        if (lc)
            fprintf(stderr, "  %-12s %9.2f tok/s   llama.cpp %9.2f   ratio %.2fx\n", k_names[k], r[k], lc[k],
                    r[k] / lc[k]);
        else fprintf(stderr, "  %-12s %9.2f tok/s\n", k_names[k], r[k]);
    }
    fprintf(stderr,
            "  bandwidth    %9.2f GB/s -> decode bound %.2f tok/s (%.1f MB/token); decode b=1 at %.0f%% of it\n"
            "               (each run's decode over the bound of the probe just before it; medians)\n",
            bw, bound, rm_llama_bytes_per_token(c->m) / 1e6, 100.0 * frac);
    fprintf(stderr, "  batch 32 / batch 1 = %.2fx\n", r[4] / r[2]);
    // Compute ceilings: int8 multiply-add rate over the ops a token needs (2
    // per weight of the layers' linears; plus the output head for decode,
    // where every row wants logits; attention not counted).
    double kern_gops, bare_gops, lin = weight_elems(c->m, 0), all = weight_elems(c->m, 1);
    rm_measure_int8_peak(c->tp, &kern_gops, &bare_gops);
    // bf16 weights on the bf16 dot products: their rate is the ceiling
    const int bf16 = strcmp(family, "avx512-bf16") == 0;
    double bf_gflops = bf16 ? rm_measure_bf16_peak(c->tp) : 0, peak = bf16 ? bf_gflops : kern_gops;
    double pf_bound = peak * 1e9 / (2 * lin), batch_bound = peak * 1e9 / (2 * all);
    const int vnni = strcmp(rm_matmul_family(RM_TYPE_Q8_0), "avx512-vnni") == 0;
    if (bf16)
        fprintf(stderr, "  bf16 peak    %9.1f GFLOP/s (avx512-bf16, vdpbf16ps), %.2f GFLOP/token\n", bf_gflops,
                2 * lin / 1e9);
    else
        fprintf(stderr, "  int8 peak    %9.1f GOP/s (%s, the q8_0/q4_0 kernels' step; bare %s %.1f), %.2f GOP/token\n",
                kern_gops, rm_matmul_family(RM_TYPE_Q8_0), vnni ? "vpdpbusd" : "maddubs+madd", bare_gops,
                2 * lin / 1e9);
    fprintf(stderr,
            "               -> prefill bound %.1f tok/s (prefill 512 at %.0f%%), batched-decode bound %.1f tok/s = "
            "%.2fx decode b=1\n",
            pf_bound, 100.0 * r[1] / pf_bound, batch_bound, batch_bound / r[2]);
    if (o->json) {
        char kinds[256];
        kernels_by_type(c->m, kinds, sizeof kinds);
        printf("{\"kernels\": \"%s\", \"kernels_by_type\": \"%s\", \"cpu\": \"%s\", \"bandwidth_gbs\": %.3f, \"decode_bound_tps\": %.3f, "
               "\"decode_bound_frac\": %.6f, \"decode_tps\": %.3f, "
               "\"prefill64_tps\": %.3f, \"prefill512_tps\": %.3f, \"batch8_tps\": %.3f, \"batch32_tps\": %.3f, "
               "\"threads\": %d, "
               "\"int8_peak_gops\": %.3f, \"int8_bare_gops\": %.3f, \"bf16_peak_gflops\": %.3f, \"prefill_bound_tps\": "
               "%.3f, "
               "\"batch_bound_tps\": %.3f",
               family, kinds, rm_cpu_describe(), bw, bound, frac, r[2], r[0], r[1], r[3], r[4], nt, kern_gops, bare_gops,
               bf_gflops, pf_bound, batch_bound);
        if (lc) {
            printf(", \"llamacpp\": {");
            for (int k = 0; k < N_MEASURES; k++) printf("%s\"%s\": %.3f", k ? ", " : "", k_keys[k], lc[k]);
            printf("}, \"ratio\": {");
            for (int k = 0; k < N_MEASURES; k++) printf("%s\"%s\": %.4f", k ? ", " : "", k_keys[k], r[k] / lc[k]);
            printf("}");
        }
        printf("}\n");
    }
    if (o->svg) {
        const char *groups[4] = {"decode b=1", "prefill 512", "decode b=8", "decode b=32"};
        const int idx[4] = {2, 1, 3, 4};
        const char *series[3] = {"ramole", "bound (bandwidth / int8 peak)", "llama.cpp"};
        double vals[12], bounds[4] = {bound, pf_bound, batch_bound, batch_bound};
        int ns = lc ? 3 : 2;
        for (int g = 0; g < 4; g++) {
            vals[g * ns] = r[idx[g]];
            vals[g * ns + 1] = bounds[g];
            if (lc) vals[g * ns + 2] = lc[idx[g]];
        }
        char title[256];
        snprintf(title, sizeof title, "ramole bench, %d threads, %s kernels: tok/s", nt, family);
        if (rm_svg_bars(o->svg, title, "tokens / s", groups, 4, series, ns, vals)) cli_fail("svg");
        else fprintf(stderr, "  chart: %s\n", o->svg);
    }
}

// --compare llamacpp needs llama.cpp's bench driver (dirbuf holds its
// folder): 2 with the reason when it is not there.
static int check_args(bench_opts *o, char *dirbuf, size_t cap) {
    if (!o->compare) return 0;
    char lb[4200];
    o->compare_dir = cli_llamacpp_dir(o->compare_dir, dirbuf, cap);
    snprintf(lb, sizeof lb, "%s/lb", o->compare_dir);
    if (rm_file_exists(lb)) return 0;
    fprintf(stderr,
            "ramole bench: no llama.cpp bench driver at %s (build it with ../shared/tools/llamacpp-bench/build.sh, "
            "or give --llamacpp-dir DIR)\n",
            lb);
    return 2;
}

// The model, its threads, KV cache and buffers for every measure; 1 on failure (printed).
static int ctx_init(const bench_opts *o, bench_ctx *c) {
    if (rm_llama_load(&c->m, o->model)) return cli_fail("cannot load model");
    int max_batch = 32, ctx = 512 + 16;
    c->tp = rm_threadpool_create((int)o->threads);
    c->logits = malloc((size_t)512 * c->m->hp.n_vocab * sizeof(float));
    c->tok = malloc(512 * sizeof(int32_t));
    c->pos = malloc(512 * sizeof(int32_t));
    c->slot = malloc(512 * sizeof(int32_t));
    c->want = malloc(512);
    if (!c->tp || !c->logits || !c->tok || !c->pos || !c->slot || !c->want) {
        fprintf(stderr, "ramole bench: out of memory\n");
        return 1;
    }
    if (16 + o->steps > ctx) ctx = 16 + (int)o->steps;
    if (rm_kvcache_init(&c->kv, c->m->hp.n_layer, max_batch, ctx, c->m->hp.n_head_kv * c->m->hp.head_dim))
        return cli_fail("kv cache");
    return 0;
}

static void ctx_free(bench_ctx *c) {
    rm_kvcache_free(&c->kv);
    rm_threadpool_free(c->tp);
    free(c->logits);
    free(c->tok);
    free(c->pos);
    free(c->slot);
    free(c->want);
    rm_llama_free(c->m);
}

// o->runs runs of every measure (llama.cpp's interleaved with --compare), the
// median of each into r (and lc). The read bandwidth is measured just before
// each run (a shared host's bandwidth drifts): its median into *bw, and the
// median of each run's decode b=1 over the bound its own probe gives into
// *frac. 1 on failure (printed).
static int measure(const bench_opts *o, bench_ctx *c, double r[N_MEASURES], double lc[N_MEASURES], double *bw,
                   double *frac) {
    int rc = 1, nt = rm_threadpool_size(c->tp);
    double *v = malloc((size_t)o->runs * sizeof(double));
    double *runs_r = malloc((size_t)o->runs * N_MEASURES * sizeof(double));
    double *runs_l = malloc((size_t)o->runs * N_MEASURES * sizeof(double));
    double *probe = malloc((size_t)o->runs * 2 * sizeof(double)), *fr = probe ? probe + o->runs : NULL;
    if (!v || !runs_r || !runs_l || !probe) {
        fprintf(stderr, "ramole bench: out of memory\n");
        goto out;
    }
    char kinds[256];
    kernels_by_type(c->m, kinds, sizeof kinds);
    fprintf(stderr, "bench: %s, %d threads, %ld runs, kernels by weight type: %s (cpu: %s)%s\n", o->model, nt,
            o->runs, kinds, rm_cpu_describe(), o->compare ? ", interleaved with llama.cpp" : "");
    run_decode(c, 1, 2); // warm-up: page in the weights
    for (int i = 0; i < o->runs; i++) {
        probe[i] = rm_measure_read_bandwidth(c->tp);
        if (run_once(c, (int)o->steps, runs_r + i * N_MEASURES)) {
            cli_fail("forward");
            goto out;
        }
        fr[i] =
            probe[i] > 0 ? runs_r[i * N_MEASURES + 2] * (double)rm_llama_bytes_per_token(c->m) / (probe[i] * 1e9) : 0;
        if (o->compare && llamacpp_once(o, nt, runs_l + i * N_MEASURES)) {
            cli_fail("compare");
            goto out;
        }
        if (o->runs > 1) fprintf(stderr, "  run %d/%ld done\n", i + 1, o->runs);
    }
    for (int k = 0; k < N_MEASURES; k++) {
        for (int i = 0; i < o->runs; i++) v[i] = runs_r[i * N_MEASURES + k];
        r[k] = rm_median(v, (int)o->runs);
        for (int i = 0; o->compare && i < o->runs; i++) v[i] = runs_l[i * N_MEASURES + k];
        lc[k] = o->compare ? rm_median(v, (int)o->runs) : 0;
    }
    *bw = rm_median(probe, (int)o->runs);
    *frac = rm_median(fr, (int)o->runs);
    rc = 0;
out:
    free(probe);
    free(v);
    free(runs_r);
    free(runs_l);
    return rc;
}

static int cmd_bench(int argc, char **argv) {
    bench_opts o;
    char dirbuf[4096];
    int rc = parse_args(argc, argv, &o);
    if (rc || (rc = check_args(&o, dirbuf, sizeof dirbuf))) return rc;
    bench_ctx c = {0};
    double r[N_MEASURES], lc[N_MEASURES], bw = 0, frac = 0;
    rc = ctx_init(&o, &c) || measure(&o, &c, r, lc, &bw, &frac);
    if (!rc) report(&o, &c, rm_matmul_family(c.m->layers[0].w[0].type), r, o.compare ? lc : NULL, bw, frac);
    ctx_free(&c);
    return rc;
}

RM_COMMAND(bench, "measure prefill / decode / batched decode speed of a model", cmd_bench)
