// cmd_bench_lora.c — `ramole bench-lora`: heterogeneous batched LoRA cost.
//
// N random adapters; each of B sequences gets its own random set of K of them
// (a different set per row). The same batch runs with and without the LoRA
// hook, alternately: prefill (all B prompts in one forward) and decode (B
// rows per step), and the tokens/s of both are reported with their ratio.
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/stats.h"
#include "lora/batch.h"
#include "model/sampler.h"
#include "model/synth.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void help(void) {
    printf("usage: ramole bench-lora (-m MODEL | --synth [SHAPE]) [options]\n\n"
           "  -m, --model PATH     GGUF base model\n"
           "  --synth SHAPE        write (once, in $TMPDIR) a random model of SHAPE (%s)\n"
           "  --type T             weight type of the --synth model (default q8_0)\n"
           "  --adapters N         random adapters (default 48)\n"
           "  --rank R             their rank (default 6)\n"
           "  --targets LIST       q,v | all | any of q,k,v,o,gate,up,down (default q,v)\n"
           "  --batch B            sequences in the batch (default 32)\n"
           "  --k K                adapters per sequence (default 3; selection uses 1)\n"
           "  --compose MODE       selection | mixture | fusion | router | moe | arrow (default mixture;\n"
           "                       router: a random RouterLoRA of rank --router-rank (4) over every row's\n"
           "                       k adapters; moe: a random gate of --gate-kind (soft) over all the\n"
           "                       adapters, k for topk; arrow: the k best of all the adapters per token)\n"
           "  --prompt P           prompt tokens per sequence for prefill (default 16)\n"
           "  --steps S            decode steps (default 8; the best step is reported)\n"
           "  --reps N             prefill repetitions (default 1; the best is reported)\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "  --seed S             adapters and sets (default 1)\n"
           "  --f16                the hook reads f16 mirrors of A and B (half the traffic)\n"
           "  --q8                 the hook reads 8-bit mirrors of A and B (a quarter of the traffic)\n"
           "  --json               print {\"decode_tps\", \"decode_tps_base\", \"decode_ratio\", \"prefill_tps\",\n"
           "                       \"prefill_tps_base\", \"prefill_ratio\"} on stdout\n"
           "  --compare llamacpp   also serve the B requests as a workload (each its prompt, then --steps\n"
           "                       greedy tokens) in ramole (one batch) and in llama.cpp (one request at a\n"
           "                       time, its adapters set with llama_set_adapters_lora, scale 1/k), --reps\n"
           "                       times interleaved (default 3), and print both throughputs and the ratio\n"
           "                       (mixture or selection; needs scripts/llamacpp-lora.sh's driver)\n"
           "  --llamacpp-dir DIR   where that driver (lbl) and llama.cpp are (default\n"
           "                       $RAMOLE_LLAMACPP_BENCH, else ~/.cache/ramole-llamacpp-bench)\n",
           rm_synth_names());
}

typedef struct bl_run {
    rm_llama *m;
    rm_kvcache kv;
    rm_threadpool *tp;
    int batch, prompt, steps;
    int32_t *tok, *pos, *slot;
    uint8_t *want;
    const void **plans;
    float *logits;
} bl_run;

// Fills rows [0, n) of R for sequences [s0, s0+ns) (slot base + s) at
// positions [p0, p0+np): prompt tokens when p0 == 0, else the argmax of the
// previous logits of that sequence (logit row lrow0 + s - s0).
static void fill_rows(bl_run *R, int s0, int ns, int p0, int np, int slot_base, const void *const *plans, int lrow0) {
    int V = R->m->hp.n_vocab;
    for (int s = s0; s < s0 + ns; s++)
        for (int i = 0; i < np; i++) {
            int r = (s - s0) * np + i;
            R->tok[r] = p0 == 0 ? (int32_t)((s * 7919 + i * 104729 + 13) % V)
                                : rm_argmax(R->logits + ((size_t)lrow0 + s - s0) * V, V);
            R->pos[r] = p0 + i;
            R->slot[r] = slot_base + s;
            R->want[r] = i == np - 1;
            R->plans[r] = plans ? plans[s] : NULL;
        }
}

static int timed_forward(bl_run *R, int rows, const rm_linear_hook *hook, int with_plans, float *logits, double *dt) {
    rm_batch b = {rows, R->tok, R->pos, R->slot, R->want, with_plans ? R->plans : NULL};
    double t0 = rm_now();
    int rc = rm_llama_forward(R->m, &R->kv, R->tp, &b, hook, logits);
    *dt = rm_now() - t0;
    return rc;
}

// The base batch (slots [0, B)) and the LoRA batch (slots [B, 2B)) run
// alternately, so that both see the same machine: prefill of every prompt in
// one forward per variant (best of `reps`), then `steps` decode steps each
// (best step: on a shared machine the least disturbed one is the figure that
// repeats). Results: [0] base, [1] with adapters; share: the LoRA terms'
// fraction of the LoRA prefill [0] and decode step [1] (mean).
static int bench(bl_run *R, const rm_linear_hook *hook, const void *const *plans, int reps, double prefill_tps[2],
                 double decode_tps[2], double share[2]) {
    int B = R->batch, P = R->prompt, V = R->m->hp.n_vocab, rc = RM_OK;
    float *last = R->logits + (size_t)B * V; // second half: the LoRA batch's logits
    double best[2] = {1e30, 1e30}, dt;
    // warm-up: page in the weights and the adapters, grow the scratch buffers
    for (int v = 0; v < 2 && !rc; v++) {
        fill_rows(R, 0, B, 0, 1, v * B, v ? plans : NULL, 0);
        rc = timed_forward(R, B, v ? hook : NULL, v, R->logits, &dt);
        for (int s = 0; s < B; s++) rm_kvcache_clear_slot(&R->kv, v * B + s);
    }
    for (int rep = 0; rep < reps && !rc; rep++)
        for (int v = 0; v < 2 && !rc; v++) {
            for (int s = 0; s < B; s++) rm_kvcache_clear_slot(&R->kv, v * B + s);
            fill_rows(R, 0, B, 0, P, v * B, v ? plans : NULL, 0);
            rm_lora_batch_seconds(hook->ctx);
            rc = timed_forward(R, B * P, v ? hook : NULL, v, v ? last : R->logits, &dt);
            if (v) share[0] = rm_lora_batch_seconds(hook->ctx) / dt;
            if (dt < best[v]) best[v] = dt;
        }
    double step[2] = {1e30, 1e30}, share_sum = 0;
    for (int st = 0; st < R->steps && !rc; st++)
        for (int v = 0; v < 2 && !rc; v++) {
            fill_rows(R, 0, B, P + st, 1, v * B, v ? plans : NULL, v * B);
            rm_lora_batch_seconds(hook->ctx);
            rc = timed_forward(R, B, v ? hook : NULL, v, v ? last : R->logits, &dt);
            if (v) share_sum += rm_lora_batch_seconds(hook->ctx) / dt;
            if (dt < step[v]) step[v] = dt;
        }
    for (int v = 0; v < 2; v++) {
        prefill_tps[v] = B * P / best[v];
        decode_tps[v] = B / step[v];
    }
    share[1] = share_sum / R->steps;
    return rc;
}

// K distinct adapter ids per row, no two rows with the same set (when there
// are enough sets), from a seeded generator.
static void random_sets(int *sets, int B, int K, int N, uint64_t seed) {
    uint64_t st = seed ^ 0x5851f42d4c957f2dull;
    for (int r = 0; r < B; r++) {
        int *set = sets + (size_t)r * K;
        for (int tries = 0; tries < 1000; tries++) {
            for (int i = 0; i < K; i++) {
                int dup;
                do {
                    set[i] = (int)(rm_rng_uniform(&st) * (float)N) % N;
                    dup = 0;
                    for (int j = 0; j < i; j++) dup |= set[j] == set[i];
                } while (dup);
            }
            int same = 0; // compare as sets (order-free) with earlier rows
            for (int q = 0; q < r && !same; q++) {
                int hits = 0;
                for (int i = 0; i < K; i++)
                    for (int j = 0; j < K; j++) hits += set[i] == sets[(size_t)q * K + j];
                same = hits == K;
            }
            if (!same) break;
        }
    }
}

// ---------------------------------------------------------------------------
// --compare llamacpp: the B requests as a serving workload, timed whole.

// ramole: every prompt in one forward, then `steps` greedy steps of all B rows
// (slots [B, 2B), the LoRA batch's); returns the seconds, < 0 on failure.
static double workload(bl_run *R, const rm_linear_hook *hook, const void *const *plans) {
    int B = R->batch, P = R->prompt;
    double dt, total = 0;
    for (int s = 0; s < B; s++) rm_kvcache_clear_slot(&R->kv, B + s);
    fill_rows(R, 0, B, 0, P, B, plans, 0);
    if (timed_forward(R, B * P, hook, 1, R->logits, &dt)) return -1;
    total += dt;
    for (int st = 0; st < R->steps; st++) {
        fill_rows(R, 0, B, P + st, 1, B, plans, 0);
        if (timed_forward(R, B, hook, 1, R->logits, &dt)) return -1;
        total += dt;
    }
    return total;
}

// Writes the adapters the sets use as DIR/a<i>.gguf and the sets as DIR/sets.txt.
static int write_workload(const char *dir, rm_lora **ad, const int *sets, int B, int K) {
    char path[4200];
    snprintf(path, sizeof path, "%s/sets.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) return rm_errorf(RM_EIO, "%s: cannot write", path);
    for (int r = 0; r < B; r++)
        for (int i = 0; i < K; i++) fprintf(f, "%d%c", sets[r * K + i], i + 1 < K ? ' ' : '\n');
    if (fclose(f)) return rm_errorf(RM_EIO, "%s: cannot write", path);
    for (int r = 0; r < B; r++)
        for (int i = 0; i < K; i++) {
            snprintf(path, sizeof path, "%s/a%d.gguf", dir, sets[r * K + i]);
            if (!rm_file_exists(path) && rm_lora_save_gguf(ad[sets[r * K + i]], path)) return RM_EIO;
        }
    return RM_OK;
}

// One run of llama.cpp's driver on the workload in dir; its throughput.
static double llamacpp_workload(const char *lcdir, const char *model, const char *dir, int threads, int prompt,
                                int steps) {
    // the driver, llama.cpp's libraries, the model, the workload folder, its sets file
    char path[5][4200], q[5][8500], cmd[5 * 8500 + 64];
    snprintf(path[0], sizeof path[0], "%s/lbl", lcdir);
    snprintf(path[1], sizeof path[1], "%s/bins/package/bins/linux-x64", lcdir);
    snprintf(path[2], sizeof path[2], "%s", model);
    snprintf(path[3], sizeof path[3], "%s", dir);
    snprintf(path[4], sizeof path[4], "%s/sets.txt", dir);
    for (int i = 0; i < 5; i++)
        if (cli_sh_quote(path[i], q[i], sizeof q[i])) return -1;
    snprintf(cmd, sizeof cmd, "%s %s %s %d %s %s %d %d 2>&1", q[0], q[2], q[1], threads, q[3], q[4], prompt, steps);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[2048];
    double tps = -1;
    while (fgets(line, sizeof line, p)) {
        rm_json *j = NULL;
        if (line[0] == '{' && rm_json_parse(line, strlen(line), "llama.cpp lora output", &j) == RM_OK) {
            tps = rm_json_get_num(j, "tps", -1);
            rm_json_free(j);
        } else if (strncmp(line, "lbl:", 4) == 0) {
            fprintf(stderr, "  llama.cpp: %s", line);
        }
    }
    pclose(p);
    return tps;
}

typedef struct bl_args {
    const char *model, *synth, *type_s, *targets_s, *compose_s, *kind_s, *compare, *lcdir;
    long n_ad, rank, batch, k, prompt, steps, threads, seed, reps, router_rank;
    int json, mirror, reps_given; // mirror: 0 f32, 1 f16, 2 8-bit
    rm_compose_mode mode; // parsed by check_args
    rm_gate_kind kind;
    unsigned targets;
    char lcbuf[4096], synth_path[1024];
} bl_args;

// The mirrors --f16 / --q8 ask for, on one adapter.
static int make_mirror(const bl_args *a, rm_lora *l) {
    return a->mirror == 2 ? rm_lora_make_q8(l) : a->mirror ? rm_lora_make_f16(l) : 0;
}

// The command line into a; 1 after --help, 2 on an unknown option.
static int parse_args(int argc, char **argv, bl_args *a) {
    *a = (bl_args){.type_s = "q8_0",
                   .targets_s = "q,v",
                   .compose_s = "mixture",
                   .kind_s = "soft",
                   .n_ad = 48,
                   .rank = 6,
                   .batch = 32,
                   .k = 3,
                   .prompt = 16,
                   .steps = 8,
                   .seed = 1,
                   .reps = 1,
                   .router_rank = 4};
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 1;
        }
        if (cli_flag(argc, argv, &i, "--synth", NULL))
            a->synth = (i + 1 < argc && argv[i + 1][0] != '-') ? argv[++i] : "tinyllama-1.1b";
        else if (cli_int(argc, argv, &i, "--reps", NULL, &a->reps)) a->reps_given = 1;
        else if (cli_flag(argc, argv, &i, "--json", NULL)) a->json = 1;
        else if (cli_flag(argc, argv, &i, "--f16", NULL)) a->mirror = 1;
        else if (cli_flag(argc, argv, &i, "--q8", NULL)) a->mirror = 2;
        else if (!(cli_str(argc, argv, &i, "--model", "-m", &a->model) ||
                   cli_str(argc, argv, &i, "--type", NULL, &a->type_s) ||
                   cli_int(argc, argv, &i, "--adapters", NULL, &a->n_ad) ||
                   cli_int(argc, argv, &i, "--rank", NULL, &a->rank) ||
                   cli_str(argc, argv, &i, "--targets", NULL, &a->targets_s) ||
                   cli_int(argc, argv, &i, "--batch", NULL, &a->batch) || cli_int(argc, argv, &i, "--k", NULL, &a->k) ||
                   cli_str(argc, argv, &i, "--compose", NULL, &a->compose_s) ||
                   cli_int(argc, argv, &i, "--prompt", NULL, &a->prompt) ||
                   cli_int(argc, argv, &i, "--steps", NULL, &a->steps) ||
                   cli_int(argc, argv, &i, "--threads", "-t", &a->threads) ||
                   cli_int(argc, argv, &i, "--seed", NULL, &a->seed) ||
                   cli_str(argc, argv, &i, "--compare", NULL, &a->compare) ||
                   cli_str(argc, argv, &i, "--llamacpp-dir", NULL, &a->lcdir) ||
                   cli_int(argc, argv, &i, "--router-rank", NULL, &a->router_rank) ||
                   cli_str(argc, argv, &i, "--gate-kind", NULL, &a->kind_s))) {
            fprintf(stderr, "ramole bench-lora: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    return 0;
}

// --compare llamacpp: the composition llama.cpp has and its LoRA driver, or 2 with the reason.
static int check_compare(bl_args *a) {
    if (!a->compare) {
        if (!a->lcdir) return 0;
        fprintf(stderr, "ramole bench-lora: --llamacpp-dir goes with --compare llamacpp\n");
        return 2;
    }
    if (strcmp(a->compare, "llamacpp") != 0) {
        fprintf(stderr, "ramole bench-lora: --compare takes 'llamacpp' (got '%s')\n", a->compare);
        return 2;
    }
    if (a->mode != RM_COMPOSE_MIXTURE && a->mode != RM_COMPOSE_SELECTION) {
        fprintf(stderr,
                "ramole bench-lora: --compare llamacpp needs --compose mixture or selection (llama.cpp sums "
                "scaled adapters; it has no %s)\n",
                a->compose_s);
        return 2;
    }
    char lbl[4200];
    a->lcdir = cli_llamacpp_dir(a->lcdir, a->lcbuf, sizeof a->lcbuf);
    snprintf(lbl, sizeof lbl, "%s/lbl", a->lcdir);
    if (!rm_file_exists(lbl)) {
        fprintf(stderr, "ramole bench-lora: no llama.cpp LoRA driver at %s (build it with scripts/llamacpp-lora.sh)\n",
                lbl);
        return 2;
    }
    if (!a->reps_given) a->reps = 3;
    return 0;
}

// Refuses, with the reason, what cannot run (2); 0 when a can. --synth
// writes its model (once, in $TMPDIR) and names it a->model.
static int check_args(bl_args *a) {
    if (rm_compose_parse(a->compose_s, &a->mode)) return cli_fail("--compose") + 1;
    if (rm_gate_kind_parse(a->kind_s, &a->kind)) return cli_fail("--gate-kind") + 1;
    if (rm_lora_parse_targets(a->targets_s, &a->targets)) return cli_fail("--targets") + 1;
    if (a->mode == RM_COMPOSE_SELECTION) a->k = 1;
    int rc = check_compare(a);
    if (rc) return rc;
    if (!a->model == !a->synth) {
        fprintf(stderr, "ramole bench-lora: give -m MODEL or --synth [SHAPE]\n");
        return 2;
    }
    if (a->n_ad < 1 || a->rank < 1 || a->rank > RM_LORA_MAX_RANK || a->batch < 1 || a->batch > 4096 || a->k < 1 ||
        a->k > RM_PLAN_MAX || a->k > a->n_ad || a->prompt < 1 || a->steps < 1 || a->reps < 1) {
        fprintf(
            stderr,
            "ramole bench-lora: bad sizes (need 1 <= k <= min(adapters, %d), rank <= %d, batch, prompt, steps >= 1)\n",
            RM_PLAN_MAX, RM_LORA_MAX_RANK);
        return 2;
    }
    if (!a->synth) return 0;
    const rm_synth_shape *sh = rm_synth_find(a->synth);
    rm_type t;
    if (!sh) {
        fprintf(stderr, "ramole bench-lora: unknown shape '%s' (%s)\n", a->synth, rm_synth_names());
        return 2;
    }
    if (rm_type_parse(a->type_s, &t)) return cli_fail("--type") + 1;
    snprintf(a->synth_path, sizeof a->synth_path, "%s/ramole-synth-%s-%s.gguf", rm_tmpdir(), a->synth, rm_type_name(t));
    if (!rm_file_exists(a->synth_path)) {
        fprintf(stderr, "bench-lora: writing %s\n", a->synth_path);
        if (rm_synth_write(sh, t, 1, a->synth_path, NULL, NULL)) return cli_fail("cannot write the synthetic model");
    }
    a->model = a->synth_path;
    return 0;
}

// What a run holds (zero-initialized), freed by state_free.
typedef struct bl_state {
    bl_run R;
    rm_lora **ad;
    rm_lora_plan *plans;
    const void **plan_ptrs;
    int *sets;
    rm_fusion_cache *fc;
    rm_lora_batch *lb;
    rm_lora *router;
    rm_lora_set *set; // moe, arrow: all the adapters
    rm_gate *gate;
    rm_linear_hook hook;
    char wdir[4096]; // the adapters written for llama.cpp
} bl_state;

static void state_free(const bl_args *a, bl_state *st) {
    if (st->wdir[0]) {
        char path[4200];
        for (long i = 0; i < a->n_ad; i++) {
            snprintf(path, sizeof path, "%s/a%ld.gguf", st->wdir, i);
            remove(path);
        }
        snprintf(path, sizeof path, "%s/sets.txt", st->wdir);
        remove(path);
        rmdir(st->wdir);
    }
    if (st->plans)
        for (long s = 0; s < a->batch; s++) rm_lora_plan_free(&st->plans[s]);
    if (st->ad)
        for (long i = 0; i < a->n_ad; i++) rm_lora_free(st->ad[i]);
    free(st->ad);
    free(st->plans);
    free(st->plan_ptrs);
    free(st->sets);
    rm_fusion_cache_free(st->fc);
    rm_lora_free(st->router);
    rm_gate_free(st->gate);
    rm_lora_set_free(st->set);
    rm_lora_batch_free(st->lb);
    bl_run *R = &st->R;
    rm_kvcache_free(&R->kv);
    rm_threadpool_free(R->tp);
    free(R->tok);
    free(R->pos);
    free(R->slot);
    free(R->want);
    free(R->plans);
    free(R->logits);
    rm_llama_free(R->m);
}

// The model, buffers, random adapters (and router or gate) and one plan per
// sequence of its own k adapters. 1 on failure (printed).
static int setup(const bl_args *a, bl_state *st) {
    bl_run *R = &st->R;
    if (rm_llama_load(&R->m, a->model)) return cli_fail("cannot load model");
    R->batch = (int)a->batch, R->prompt = (int)a->prompt, R->steps = (int)a->steps;
    size_t rows = (size_t)a->batch * (size_t)a->prompt;
    R->tp = rm_threadpool_create((int)a->threads);
    R->tok = malloc(rows * sizeof(int32_t));
    R->pos = malloc(rows * sizeof(int32_t));
    R->slot = malloc(rows * sizeof(int32_t));
    R->want = malloc(rows);
    R->plans = malloc(rows * sizeof(void *));
    R->logits = malloc((size_t)a->batch * 2 * R->m->hp.n_vocab * sizeof(float));
    st->ad = calloc((size_t)a->n_ad, sizeof *st->ad);
    st->plans = calloc((size_t)a->batch, sizeof *st->plans);
    st->plan_ptrs = calloc((size_t)a->batch, sizeof *st->plan_ptrs);
    st->sets = malloc((size_t)a->batch * (size_t)a->k * sizeof(int));
    st->fc = rm_fusion_cache_new(0);
    st->lb = rm_lora_batch_new(R->tp);
    if (!R->tp || !R->tok || !R->pos || !R->slot || !R->want || !R->plans || !R->logits || !st->ad || !st->plans ||
        !st->plan_ptrs || !st->sets || !st->fc || !st->lb) {
        fprintf(stderr, "ramole bench-lora: out of memory\n");
        return 1;
    }
    st->hook = rm_lora_batch_hook(st->lb);
    if (rm_kvcache_init(&R->kv, R->m->hp.n_layer, 2 * (int)a->batch, (int)(a->prompt + a->steps),
                        R->m->hp.n_head_kv * R->m->hp.head_dim))
        return cli_fail("kv cache");
    fprintf(stderr, "bench-lora: %s, %d threads; %ld adapters rank %ld on %s, batch %ld, k %ld, %s%s\n", a->model,
            rm_threadpool_size(R->tp), a->n_ad, a->rank, a->targets_s, a->batch, a->k, rm_compose_name(a->mode),
            a->mirror == 2 ? ", 8-bit mirrors" : a->mirror ? ", f16 mirrors" : "");
    for (long i = 0; i < a->n_ad; i++)
        if (rm_lora_random(&st->ad[i], R->m, (int)a->rank, a->targets, (uint64_t)a->seed * 1000003u + (uint64_t)i) ||
            make_mirror(a, st->ad[i]))
            return cli_fail("random adapter");
    if (a->mode == RM_COMPOSE_ROUTER &&
        rm_lora_random(&st->router, R->m, (int)a->router_rank, a->targets, (uint64_t)a->seed + 77))
        return cli_fail("random router");
    if ((a->mode == RM_COMPOSE_MOE || a->mode == RM_COMPOSE_ARROW) &&
        rm_lora_set_new(&st->set, (int)a->n_ad, st->ad, NULL, NULL, 0))
        return cli_fail("adapter set");
    if (a->mode == RM_COMPOSE_MOE) {
        if (rm_gate_new(&st->gate, st->set, a->kind, (int)a->k)) return cli_fail("gate");
        uint64_t g = (uint64_t)a->seed + 99;
        rm_gate *gate = st->gate;
        for (int i = 0; i < gate->n_layer * RM_LIN_COUNT; i++)
            for (int64_t j = 0;
                 gate->w[i] && j < (int64_t)a->n_ad * R->m->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0]; j++)
                gate->w[i][j] = 0.1f * (2.0f * rm_rng_uniform(&g) - 1.0f);
    }
    random_sets(st->sets, (int)a->batch, (int)a->k, (int)a->n_ad, (uint64_t)a->seed);
    for (long s = 0; s < a->batch; s++) {
        rm_lora *pick[RM_PLAN_MAX];
        for (long i = 0; i < a->k; i++) pick[i] = st->ad[st->sets[s * a->k + i]];
        rm_lora_plan *pl = &st->plans[s];
        if ((a->mode == RM_COMPOSE_ROUTER ? rm_lora_plan_init_router(pl, (int)a->k, pick, st->router)
             : st->set                    ? rm_lora_plan_init_for_task(pl, st->set, st->gate, (int)a->k, NULL, 0, NULL)
                                          : rm_lora_plan_init(pl, a->mode, (int)a->k, pick, NULL, st->fc)) ||
            (pl->fused && make_mirror(a, pl->fused)))
            return cli_fail("plan");
        st->plan_ptrs[s] = pl;
    }
    return 0;
}

// What was measured: prefill and decode tok/s without [0] and with [1]
// adapters, the LoRA terms' share of each, and with --compare the workload's
// tok/s in ramole and in llama.cpp.
typedef struct bl_result {
    double ptps[2], dtps[2], share[2], w_ours, w_lc;
} bl_result;

// --compare: the B requests as one ramole batch and, one at a time, by
// llama.cpp's driver, a->reps times interleaved; the medians. 1 on failure (printed).
static int compare_workload(const bl_args *a, bl_state *st, bl_result *res) {
    snprintf(st->wdir, sizeof st->wdir, "%s/ramole-bench-lora-XXXXXX", rm_tmpdir());
    if (!mkdtemp(st->wdir)) {
        st->wdir[0] = 0;
        fprintf(stderr, "ramole bench-lora: cannot make a temporary folder\n");
        return 1;
    }
    if (write_workload(st->wdir, st->ad, st->sets, (int)a->batch, (int)a->k)) return cli_fail("adapters for llama.cpp");
    double *v = malloc(2 * (size_t)a->reps * sizeof(double));
    if (!v) return 1;
    long tokens = a->batch * (a->prompt + a->steps), reps = a->reps;
    for (long r = 0; r < reps; r++) {
        double secs = workload(&st->R, &st->hook, st->plan_ptrs);
        v[r] = secs > 0 ? (double)tokens / secs : -1;
        v[reps + r] = llamacpp_workload(a->lcdir, a->model, st->wdir, rm_threadpool_size(st->R.tp), (int)a->prompt,
                                        (int)a->steps);
        if (v[r] <= 0 || v[reps + r] <= 0) {
            fprintf(stderr, "ramole bench-lora: the %s workload failed\n", v[r] <= 0 ? "ramole" : "llama.cpp");
            free(v);
            return 1;
        }
        fprintf(stderr, "  workload run %ld/%ld: ramole %.1f tok/s, llama.cpp %.1f tok/s\n", r + 1, reps, v[r],
                v[reps + r]);
    }
    res->w_ours = rm_median(v, (int)reps);
    res->w_lc = rm_median(v + reps, (int)reps);
    free(v);
    return 0;
}

static int measure(const bl_args *a, bl_state *st, bl_result *res) {
    if (bench(&st->R, &st->hook, st->plan_ptrs, (int)a->reps, res->ptps, res->dtps, res->share) ||
        rm_lora_batch_status(st->lb))
        return cli_fail("forward");
    return a->compare ? compare_workload(a, st, res) : 0;
}

static void report(const bl_args *a, const bl_result *res) {
    double pb = res->ptps[0], pl = res->ptps[1], db = res->dtps[0], dl = res->dtps[1];
    fprintf(stderr, "  prefill  %9.2f tok/s with adapters, %9.2f without: %.3fx\n", pl, pb, pl / pb);
    fprintf(stderr, "  decode   %9.2f tok/s with adapters, %9.2f without: %.3fx\n", dl, db, dl / db);
    // The hook's share of the LoRA forward is measured inside the same run, so
    // it holds up on a busy machine where the two timings above may not.
    fprintf(stderr,
            "  LoRA terms take %.1f%% of the prefill and %.1f%% of a decode step (implied ratios %.3fx, %.3fx)\n",
            100 * res->share[0], 100 * res->share[1], 1 - res->share[0], 1 - res->share[1]);
    if (a->compare)
        fprintf(stderr,
                "  workload (%ld requests, each %ld prompt + %ld generated tokens, its own %ld adapters): ramole %.1f "
                "tok/s in one batch, llama.cpp %.1f tok/s one request at a time: %.2fx\n",
                a->batch, a->prompt, a->steps, a->k, res->w_ours, res->w_lc, res->w_ours / res->w_lc);
    if (!a->json) return;
    printf("{\"decode_tps\": %.3f, \"decode_tps_base\": %.3f, \"decode_ratio\": %.4f, \"prefill_tps\": %.3f, "
           "\"prefill_tps_base\": %.3f, \"prefill_ratio\": %.4f",
           dl, db, dl / db, pl, pb, pl / pb);
    if (a->compare)
        printf(", \"workload_tps\": %.3f, \"llamacpp_workload_tps\": %.3f, \"workload_ratio\": %.4f", res->w_ours,
               res->w_lc, res->w_ours / res->w_lc);
    printf("}\n");
}

static int cmd_bench_lora(int argc, char **argv) {
    bl_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = check_args(&a))) return rc;
    bl_state st = {0};
    bl_result res = {0};
    rc = setup(&a, &st) || measure(&a, &st, &res);
    if (!rc) report(&a, &res);
    state_free(&a, &st);
    return rc;
}

// The command name has a dash, which RM_COMMAND cannot spell.
__attribute__((constructor)) static void register_cmd_bench_lora(void) {
    rm_cli_register("bench-lora", "speed of heterogeneous batched LoRA (with vs without adapters)", cmd_bench_lora);
}
