// bench_train.c — training tokens/s: full training of a ~10M-parameter
// byte-level model, and LoRA rank 8 on a TinyLlama-1.1B-shaped Q8_0 base.
// PyTorch side of the comparison: bench/train_torch.py (same model and batch).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "bench.h"
#include "model/synth.h"
#include "train/train.h"

// Median tokens/s of `steps` optimizer steps (after one warm-up step) on a fixed random batch.
static int measure(rm_trainer *t, int steps, double *tps, double *loss) {
    const rm_train_params *p = rm_trainer_get_params(t);
    rm_tbatch b;
    int rc = rm_tbatch_alloc(&b, p->batch, p->seq);
    if (rc) return rc;
    uint64_t s = 42;
    for (int r = 0; r < p->batch * p->seq; r++) {
        b.token[r] = (int32_t)(rm_rng_next(&s) % 256);
        b.pos[r] = r % p->seq;
        b.start[r] = r - r % p->seq;
    }
    for (int r = 0; r < p->batch * p->seq; r++) b.target[r] = r % p->seq == p->seq - 1 ? -1 : b.token[r + 1];
    double *v = malloc((size_t)(steps + 1) * sizeof(double));
    for (int i = 0; !rc && i <= steps; i++) {
        double t0 = rm_now();
        rc = rm_trainer_step(t, &b, 1, loss, NULL);
        if (i > 0) v[i - 1] = (double)p->batch * p->seq / (rm_now() - t0);
    }
    if (!rc) *tps = rm_median(v, steps);
    free(v);
    rm_tbatch_free(&b);
    return rc;
}

static int run(const char *what, const rm_synth_shape *shape, rm_type type, const char *path, int lora, int batch,
               int seq, int steps, int threads) {
    if (!rm_file_exists(path)) {
        fprintf(stderr, "writing %s ...\n", path);
        if (rm_synth_write(shape, type, 1, path, NULL, NULL)) return fprintf(stderr, "%s\n", rm_last_error()), 1;
    }
    rm_llama *m;
    if (rm_llama_load(&m, path)) return fprintf(stderr, "%s\n", rm_last_error()), 1;
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = batch;
    p.seq = seq;
    p.threads = threads;
    rm_trainer *t = NULL;
    double tps = 0, loss = 0;
    unsigned qv = (1u << RM_LIN_Q) | (1u << RM_LIN_V);
    int rc = rm_trainer_create(&t, m, &p);
    if (!rc) rc = lora ? rm_trainer_add_lora(t, qv, 8, 16.0f, 0) : rm_trainer_full(t);
    if (!rc) rc = measure(t, steps, &tps, &loss);
    if (rc) fprintf(stderr, "%s: %s\n", what, rm_last_error());
    else
        printf("| %-34s | %11zu | %5d x %4d | %7d | %12.0f |\n", what, rm_trainer_n_trainable(t), batch, seq, threads,
               tps);
    rm_trainer_free(t);
    rm_llama_free(m);
    return rc ? 1 : 0;
}

static int bench_train(int argc, char **argv) {
    int threads = 2, steps = 3, full = 1, lora = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--full-only")) lora = 0;
        else if (!strcmp(argv[i], "--lora-only")) full = 0;
        else
            return fprintf(stderr, "usage: ramole-bench train [--threads N] [--steps N] [--full-only|--lora-only]\n"),
                   2;
    }
    printf("| %-34s | %11s | %12s | %7s | %12s |\n", "training", "trainable", "batch", "threads", "tokens/s");
    printf("|------------------------------------|-------------|--------------|---------|--------------|\n");
    int rc = 0;
    if (full) {
        rm_synth_shape s10 = {"bench-10m", 258, 384, 6, 6, 6, 1024, 256};
        rc |= run("full, 10.7M params f32 (byte vocab)", &s10, RM_TYPE_F32, "/tmp/ramole-bench-train-10m.gguf", 0, 8,
                  256, steps, threads);
    }
    if (lora)
        rc |= run("LoRA r8 q,v on tinyllama-1.1b q8_0", rm_synth_find("tinyllama-1.1b"), RM_TYPE_Q8_0,
                  "/tmp/ramole-synth-tinyllama-1.1b-q8_0.gguf", 1, 1, 256, steps > 2 ? 2 : steps, threads);
    printf("PyTorch on the same 10M model and batch: OMP_NUM_THREADS=%d /usr/bin/python3 bench/train_torch.py "
           "--threads %d\n",
           threads, threads);
    return rc;
}

RM_BENCH(train, "training tokens/s: 10M model full, LoRA r8 on a TinyLlama-shaped q8_0 base", bench_train)
