// lora_requests.c — llama.cpp's side of `ramole bench-lora --compare llamacpp`.
//
// Serves B requests, each with its own set of K LoRA adapters, the only way
// llama.cpp can: one request at a time, its adapters set on the context with
// llama_set_adapters_lora (scale 1/K each, the mixture), its prompt of P tokens
// in one llama_decode, then S greedy steps. Prints one JSON line:
//   {"engine": "llama.cpp", "requests": B, "tokens": B*(P+S), "seconds": T, "tps": B*(P+S)/T}
// Built against llama.cpp's prebuilt libraries by scripts/llamacpp-lora.sh.
//
// usage: lbl MODEL BINDIR THREADS ADAPTER_DIR SETS_FILE PROMPT STEPS
//   ADAPTER_DIR/a<i>.gguf for adapter i; SETS_FILE: one request a line, its K
//   adapter numbers separated by spaces (every line the same K).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-backend.h"
#include "llama.h"

enum { MAX_K = 16, MAX_REQ = 4096, MAX_AD = 4096 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

// One request: adapters, prompt, steps. Returns 0 on success.
static int serve(struct llama_context *ctx, struct llama_batch *b, int n_vocab, struct llama_adapter_lora **ads, int k,
                 int req, int prompt, int steps) {
    float scales[MAX_K];
    for (int i = 0; i < k; i++) scales[i] = 1.0f / (float)k;
    if (llama_set_adapters_lora(ctx, ads, (size_t)k, scales) != 0) return 1;
    llama_memory_clear(llama_get_memory(ctx), true);
    for (int i = 0; i < prompt; i++) {
        b->token[i] = (req * 7919 + i * 104729 + 13) % n_vocab;
        b->pos[i] = i;
        b->n_seq_id[i] = 1;
        b->seq_id[i][0] = 0;
        b->logits[i] = i == prompt - 1;
    }
    b->n_tokens = prompt;
    if (llama_decode(ctx, *b)) return 2;
    for (int s = 0; s < steps; s++) {
        int next = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        b->token[0] = next;
        b->pos[0] = prompt + s;
        b->n_seq_id[0] = 1;
        b->seq_id[0][0] = 0;
        b->logits[0] = 1;
        b->n_tokens = 1;
        if (llama_decode(ctx, *b)) return 3;
    }
    llama_synchronize(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL BINDIR THREADS ADAPTER_DIR SETS_FILE PROMPT STEPS\n", argv[0]);
        return 1;
    }
    int threads = atoi(argv[3]), prompt = atoi(argv[6]), steps = atoi(argv[7]);
    if (threads < 1 || prompt < 1 || steps < 0) {
        fprintf(stderr, "lbl: THREADS and PROMPT must be >= 1, STEPS >= 0\n");
        return 1;
    }
    static int sets[MAX_REQ][MAX_K];
    int n_req = 0, k = 0;
    FILE *f = fopen(argv[5], "r");
    if (!f) {
        fprintf(stderr, "lbl: cannot open %s\n", argv[5]);
        return 1;
    }
    char line[1024];
    while (n_req < MAX_REQ && fgets(line, sizeof line, f)) {
        int n = 0;
        for (char *p = strtok(line, " \t\n"); p && n < MAX_K; p = strtok(NULL, " \t\n")) sets[n_req][n++] = atoi(p);
        if (!n) continue;
        if (k && n != k) {
            fprintf(stderr, "lbl: %s: request %d has %d adapters, the first has %d\n", argv[5], n_req, n, k);
            return 1;
        }
        k = n;
        n_req++;
    }
    fclose(f);
    if (!n_req) {
        fprintf(stderr, "lbl: %s lists no request\n", argv[5]);
        return 1;
    }
    ggml_backend_load_all_from_path(argv[2]);
    llama_backend_init();
    struct llama_model *m = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!m) {
        fprintf(stderr, "lbl: cannot load %s\n", argv[1]);
        return 1;
    }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m));
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(prompt + steps + 16);
    cp.n_batch = cp.n_ubatch = (uint32_t)prompt;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(m, cp);
    if (!ctx) {
        fprintf(stderr, "lbl: context failed\n");
        return 1;
    }
    static struct llama_adapter_lora *ad[MAX_AD];
    for (int r = 0; r < n_req; r++)
        for (int i = 0; i < k; i++) {
            int a = sets[r][i];
            if (a < 0 || a >= MAX_AD) {
                fprintf(stderr, "lbl: adapter number %d out of range\n", a);
                return 1;
            }
            if (ad[a]) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/a%d.gguf", argv[4], a);
            if (!(ad[a] = llama_adapter_lora_init(m, path))) {
                fprintf(stderr, "lbl: llama.cpp cannot load adapter %s\n", path);
                return 1;
            }
        }
    struct llama_batch b = llama_batch_init(prompt, 0, 1);
    struct llama_adapter_lora *use[MAX_K];
    // warm-up: one request, untimed (compute graphs are sized on first use)
    for (int i = 0; i < k; i++) use[i] = ad[sets[0][i]];
    if (serve(ctx, &b, n_vocab, use, k, 0, prompt, steps)) {
        fprintf(stderr, "lbl: decode failed\n");
        return 1;
    }
    double t0 = now();
    for (int r = 0; r < n_req; r++) {
        for (int i = 0; i < k; i++) use[i] = ad[sets[r][i]];
        int rc = serve(ctx, &b, n_vocab, use, k, r, prompt, steps);
        if (rc) {
            fprintf(stderr, "lbl: request %d failed (%d)\n", r, rc);
            return 1;
        }
    }
    double dt = now() - t0;
    long tokens = (long)n_req * (prompt + steps);
    printf("{\"engine\": \"llama.cpp\", \"requests\": %d, \"tokens\": %ld, \"seconds\": %.4f, \"tps\": %.3f}\n", n_req,
           tokens, dt, (double)tokens / dt);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(m);
    return 0;
}
