// generate.h — one sequence from prompt ids to new tokens: chunked prefill
// then decode, through the single batched forward pass.
#ifndef RM_MODEL_GENERATE_H
#define RM_MODEL_GENERATE_H
#include "model/llama.h"
#include "model/sampler.h"

typedef struct rm_gen_stats {
    int n_prompt, n_gen;
    double prompt_s, gen_s; // wall time of prefill and of decoding
} rm_gen_stats;

// Called for each new token; return nonzero to stop.
typedef int (*rm_token_cb)(void *ctx, int32_t id);

// Runs prompt[0..n_prompt) (it must already hold BOS if wanted) in slot 0 of
// kv (cleared first), then samples up to n_new tokens, stopping early at an
// end-of-generation token when the model has a tokenizer. Prefill goes in
// chunks of up to `chunk` rows (<= 0: 512). hook may be NULL.
int rm_generate(rm_llama *m, rm_kvcache *kv, rm_threadpool *tp, const int32_t *prompt, int n_prompt, int n_new,
                const rm_sampler_params *sp, const rm_linear_hook *hook, const void *plan, int chunk, rm_token_cb cb,
                void *cb_ctx, rm_gen_stats *stats);
#endif
