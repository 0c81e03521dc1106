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
                    set[i] = (int)(rm_rand_f32(&st) * (float)N) % N;
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
static double llamacpp_workload(const char *lcdir, const char *model, const char *dir, int threads, int prompt, int steps) {
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

static int cmd_bench_lora(int argc, char **argv) {
    const char *model = NULL, *synth = NULL, *type_s = "q8_0", *targets_s = "q,v", *compose_s = "mixture", *kind_s = "soft";
    long n_ad = 48, rank = 6, batch = 32, k = 3, prompt = 16, steps = 8, threads = 0, seed = 1, reps = 1, router_rank = 4;
    int json = 0, f16 = 0;
    const char *compare = NULL, *lcdir = NULL;
    int reps_given = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (cli_str(argc, argv, &i, "--model", "-m", &model)) {}
        else if (cli_flag(argc, argv, &i, "--synth", NULL)) {
            synth = (i + 1 < argc && argv[i + 1][0] != '-') ? argv[++i] : "tinyllama-1.1b";
        }
        else if (cli_str(argc, argv, &i, "--type", NULL, &type_s)) {}
        else if (cli_int(argc, argv, &i, "--adapters", NULL, &n_ad)) {}
        else if (cli_int(argc, argv, &i, "--rank", NULL, &rank)) {}
        else if (cli_str(argc, argv, &i, "--targets", NULL, &targets_s)) {}
        else if (cli_int(argc, argv, &i, "--batch", NULL, &batch)) {}
        else if (cli_int(argc, argv, &i, "--k", NULL, &k)) {}
        else if (cli_str(argc, argv, &i, "--compose", NULL, &compose_s)) {}
        else if (cli_int(argc, argv, &i, "--prompt", NULL, &prompt)) {}
        else if (cli_int(argc, argv, &i, "--steps", NULL, &steps)) {}
        else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {}
        else if (cli_int(argc, argv, &i, "--seed", NULL, &seed)) {}
        else if (cli_int(argc, argv, &i, "--reps", NULL, &reps)) reps_given = 1;
        else if (cli_str(argc, argv, &i, "--compare", NULL, &compare)) {}
        else if (cli_str(argc, argv, &i, "--llamacpp-dir", NULL, &lcdir)) {}
        else if (cli_int(argc, argv, &i, "--router-rank", NULL, &router_rank)) {}
        else if (cli_str(argc, argv, &i, "--gate-kind", NULL, &kind_s)) {}
        else if (cli_flag(argc, argv, &i, "--json", NULL)) json = 1;
        else if (cli_flag(argc, argv, &i, "--f16", NULL)) f16 = 1;
        else { fprintf(stderr, "ramole bench-lora: unknown option '%s' (see --help)\n", argv[i]); return 2; }
    }
    rm_compose_mode mode;
    rm_gate_kind kind;
    unsigned targets;
    if (rm_compose_parse(compose_s, &mode)) return cli_fail("--compose");
    if (rm_gate_kind_parse(kind_s, &kind)) return cli_fail("--gate-kind");
    if (rm_lora_parse_targets(targets_s, &targets)) return cli_fail("--targets");
    if (mode == RM_COMPOSE_SELECTION) k = 1;
    char lcbuf[4096], lbl[4200], wdir[4096] = "";
    if (compare) {
        if (strcmp(compare, "llamacpp") != 0) {
            fprintf(stderr, "ramole bench-lora: --compare takes 'llamacpp' (got '%s')\n", compare);
            return 2;
        }
        if (mode != RM_COMPOSE_MIXTURE && mode != RM_COMPOSE_SELECTION) {
            fprintf(stderr, "ramole bench-lora: --compare llamacpp needs --compose mixture or selection (llama.cpp sums "
                            "scaled adapters; it has no %s)\n", compose_s);
            return 2;
        }
        lcdir = cli_llamacpp_dir(lcdir, lcbuf, sizeof lcbuf);
        snprintf(lbl, sizeof lbl, "%s/lbl", lcdir);
        if (!rm_file_exists(lbl)) {
            fprintf(stderr, "ramole bench-lora: no llama.cpp LoRA driver at %s (build it with scripts/llamacpp-lora.sh)\n", lbl);
            return 2;
        }
        if (!reps_given) reps = 3;
    } else if (lcdir) {
        fprintf(stderr, "ramole bench-lora: --llamacpp-dir goes with --compare llamacpp\n");
        return 2;
    }
    if (!model == !synth) { fprintf(stderr, "ramole bench-lora: give -m MODEL or --synth [SHAPE]\n"); return 2; }
    if (n_ad < 1 || rank < 1 || rank > RM_LORA_MAX_RANK || batch < 1 || batch > 4096 || k < 1 || k > RM_PLAN_MAX ||
        k > n_ad || prompt < 1 || steps < 1 || reps < 1) {
        fprintf(stderr, "ramole bench-lora: bad sizes (need 1 <= k <= min(adapters, %d), rank <= %d, batch, prompt, steps >= 1)\n",
                RM_PLAN_MAX, RM_LORA_MAX_RANK);
        return 2;
    }
    char synth_path[1024];
    if (synth) {
        const rm_synth_shape *sh = rm_synth_find(synth);
        rm_type t;
        if (!sh) { fprintf(stderr, "ramole bench-lora: unknown shape '%s' (%s)\n", synth, rm_synth_names()); return 2; }
        if (rm_type_parse(type_s, &t)) return cli_fail("--type");
        const char *tmp = getenv("TMPDIR");
        snprintf(synth_path, sizeof synth_path, "%s/ramole-synth-%s-%s.gguf", tmp ? tmp : "/tmp", synth, rm_type_name(t));
        if (!rm_file_exists(synth_path)) {
            fprintf(stderr, "bench-lora: writing %s\n", synth_path);
            if (rm_synth_write(sh, t, 1, synth_path, NULL, NULL)) return cli_fail("cannot write the synthetic model");
        }
        model = synth_path;
    }

    bl_run R = {0};
    rm_lora **ad = NULL;
    rm_lora_plan *plans = NULL;
    const void **plan_ptrs = NULL;
    int *sets = NULL;
    rm_fusion_cache *fc = NULL;
    rm_lora_batch *lb = NULL;
    rm_lora *router = NULL;
    rm_lora_set *set = NULL; // moe, arrow: all the adapters
    rm_gate *gate = NULL;
    int rc = 1;
    if (rm_llama_load(&R.m, model)) return cli_fail("cannot load model");
    R.batch = (int)batch;
    R.prompt = (int)prompt;
    R.steps = (int)steps;
    size_t rows = (size_t)batch * (size_t)prompt;
    R.tp = rm_threadpool_create((int)threads);
    R.tok = malloc(rows * sizeof(int32_t));
    R.pos = malloc(rows * sizeof(int32_t));
    R.slot = malloc(rows * sizeof(int32_t));
    R.want = malloc(rows);
    R.plans = malloc(rows * sizeof(void *));
    R.logits = malloc((size_t)batch * 2 * R.m->hp.n_vocab * sizeof(float));
    ad = calloc((size_t)n_ad, sizeof *ad);
    plans = calloc((size_t)batch, sizeof *plans);
    plan_ptrs = calloc((size_t)batch, sizeof *plan_ptrs);
    sets = malloc((size_t)batch * (size_t)k * sizeof(int));
    fc = rm_fusion_cache_new(0);
    lb = rm_lora_batch_new(R.tp);
    if (!R.tp || !R.tok || !R.pos || !R.slot || !R.want || !R.plans || !R.logits || !ad || !plans || !plan_ptrs || !sets ||
        !fc || !lb) {
        fprintf(stderr, "ramole bench-lora: out of memory\n");
        goto out;
    }
    if (rm_kvcache_init(&R.kv, R.m->hp.n_layer, 2 * (int)batch, (int)(prompt + steps), R.m->hp.n_head_kv * R.m->hp.head_dim)) {
        cli_fail("kv cache");
        goto out;
    }
    fprintf(stderr, "bench-lora: %s, %d threads; %ld adapters rank %ld on %s, batch %ld, k %ld, %s%s\n", model,
            rm_threadpool_size(R.tp), n_ad, rank, targets_s, batch, k, rm_compose_name(mode), f16 ? ", f16 mirrors" : "");
    for (long i = 0; i < n_ad; i++)
        if (rm_lora_random(&ad[i], R.m, (int)rank, targets, (uint64_t)seed * 1000003u + (uint64_t)i) ||
            (f16 && rm_lora_make_f16(ad[i]))) {
            cli_fail("random adapter");
            goto out;
        }
    if (mode == RM_COMPOSE_ROUTER && rm_lora_random(&router, R.m, (int)router_rank, targets, (uint64_t)seed + 77)) {
        cli_fail("random router");
        goto out;
    }
    if ((mode == RM_COMPOSE_MOE || mode == RM_COMPOSE_ARROW) && rm_lora_set_new(&set, (int)n_ad, ad, NULL, NULL, 0)) {
        cli_fail("adapter set");
        goto out;
    }
    if (mode == RM_COMPOSE_MOE) {
        if (rm_gate_new(&gate, set, kind, (int)k)) { cli_fail("gate"); goto out; }
        uint64_t st = (uint64_t)seed + 99;
        for (int i = 0; i < gate->n_layer * RM_LIN_COUNT; i++)
            for (int64_t j = 0; gate->w[i] && j < (int64_t)n_ad * R.m->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0]; j++)
                gate->w[i][j] = 0.1f * (2.0f * rm_rand_f32(&st) - 1.0f);
    }
    random_sets(sets, (int)batch, (int)k, (int)n_ad, (uint64_t)seed);
    for (long s = 0; s < batch; s++) {
        rm_lora *pick[RM_PLAN_MAX];
        for (long i = 0; i < k; i++) pick[i] = ad[sets[s * k + i]];
        if ((mode == RM_COMPOSE_ROUTER ? rm_lora_plan_init_router(&plans[s], (int)k, pick, router)
             : set                     ? rm_lora_plan_init_for_task(&plans[s], set, gate, (int)k, NULL, 0, NULL)
                                       : rm_lora_plan_init(&plans[s], mode, (int)k, pick, NULL, fc)) ||
            (f16 && plans[s].fused && rm_lora_make_f16(plans[s].fused))) {
            cli_fail("plan");
            goto out;
        }
        plan_ptrs[s] = &plans[s];
    }
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    double ptps[2], dtps[2], share[2] = {0, 0};
    if (bench(&R, &hook, plan_ptrs, (int)reps, ptps, dtps, share) || rm_lora_batch_status(lb)) {
        cli_fail("forward");
        goto out;
    }
    double pb = ptps[0], pl = ptps[1], db = dtps[0], dl = dtps[1];
    fprintf(stderr, "  prefill  %9.2f tok/s with adapters, %9.2f without: %.3fx\n", pl, pb, pl / pb);
    fprintf(stderr, "  decode   %9.2f tok/s with adapters, %9.2f without: %.3fx\n", dl, db, dl / db);
    // The hook's share of the LoRA forward is measured inside the same run, so
    // it holds up on a busy machine where the two timings above may not.
    fprintf(stderr, "  LoRA terms take %.1f%% of the prefill and %.1f%% of a decode step (implied ratios %.3fx, %.3fx)\n",
            100 * share[0], 100 * share[1], 1 - share[0], 1 - share[1]);
    double w_ours = 0, w_lc = 0;
    if (compare) {
        const char *tmp = getenv("TMPDIR");
        snprintf(wdir, sizeof wdir, "%s/ramole-bench-lora-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(wdir)) { wdir[0] = 0; fprintf(stderr, "ramole bench-lora: cannot make a temporary folder\n"); goto out; }
        if (write_workload(wdir, ad, sets, (int)batch, (int)k)) { cli_fail("adapters for llama.cpp"); goto out; }
        double *v = malloc(2 * (size_t)reps * sizeof(double));
        if (!v) goto out;
        long tokens = batch * (prompt + steps);
        for (long r = 0; r < reps; r++) {
            double secs = workload(&R, &hook, plan_ptrs);
            v[r] = secs > 0 ? (double)tokens / secs : -1;
            v[reps + r] = llamacpp_workload(lcdir, model, wdir, rm_threadpool_size(R.tp), (int)prompt, (int)steps);
            if (v[r] <= 0 || v[reps + r] <= 0) {
                fprintf(stderr, "ramole bench-lora: the %s workload failed\n", v[r] <= 0 ? "ramole" : "llama.cpp");
                free(v);
                goto out;
            }
            fprintf(stderr, "  workload run %ld/%ld: ramole %.1f tok/s, llama.cpp %.1f tok/s\n", r + 1, reps, v[r], v[reps + r]);
        }
        w_ours = rm_median(v, (int)reps);
        w_lc = rm_median(v + reps, (int)reps);
        free(v);
        fprintf(stderr, "  workload (%ld requests, each %ld prompt + %ld generated tokens, its own %ld adapters): ramole %.1f "
                        "tok/s in one batch, llama.cpp %.1f tok/s one request at a time: %.2fx\n",
                batch, prompt, steps, k, w_ours, w_lc, w_ours / w_lc);
    }
    if (json) {
        printf("{\"decode_tps\": %.3f, \"decode_tps_base\": %.3f, \"decode_ratio\": %.4f, \"prefill_tps\": %.3f, "
               "\"prefill_tps_base\": %.3f, \"prefill_ratio\": %.4f",
               dl, db, dl / db, pl, pb, pl / pb);
        if (compare)
            printf(", \"workload_tps\": %.3f, \"llamacpp_workload_tps\": %.3f, \"workload_ratio\": %.4f", w_ours, w_lc,
                   w_ours / w_lc);
        printf("}\n");
    }
    rc = 0;
out:
    if (wdir[0]) { // the adapters written for llama.cpp
        char path[4200];
        for (long i = 0; i < n_ad; i++) {
            snprintf(path, sizeof path, "%s/a%ld.gguf", wdir, i);
            remove(path);
        }
        snprintf(path, sizeof path, "%s/sets.txt", wdir);
        remove(path);
        rmdir(wdir);
    }
    if (plans)
        for (long s = 0; s < batch; s++) rm_lora_plan_free(&plans[s]);
    if (ad)
        for (long i = 0; i < n_ad; i++) rm_lora_free(ad[i]);
    free(ad);
    free(plans);
    free(plan_ptrs);
    free(sets);
    rm_fusion_cache_free(fc);
    rm_lora_free(router);
    rm_gate_free(gate);
    rm_lora_set_free(set);
    rm_lora_batch_free(lb);
    rm_kvcache_free(&R.kv);
    rm_threadpool_free(R.tp);
    free(R.tok);
    free(R.pos);
    free(R.slot);
    free(R.want);
    free(R.plans);
    free(R.logits);
    rm_llama_free(R.m);
    return rc;
}

// The command name has a dash, which RM_COMMAND cannot spell.
__attribute__((constructor)) static void register_cmd_bench_lora(void) {
    rm_cli_register("bench-lora", "speed of heterogeneous batched LoRA (with vs without adapters)", cmd_bench_lora);
}
