// sampler.h — next-token choice from logits: greedy, temperature, top-k,
// top-p, min-p, repetition penalty, seeded.
#ifndef RM_MODEL_SAMPLER_H
#define RM_MODEL_SAMPLER_H
#include "base/rng.h"
#include <stdint.h>

typedef struct rm_sampler_params {
    float temperature;    // <= 0: greedy
    int top_k;            // <= 0: off
    float top_p;          // >= 1: off
    float min_p;          // <= 0: off
    float repeat_penalty; // 1: off (llama.cpp semantics: divide positive logits, multiply negative)
    int repeat_last_n;    // how many recent tokens the penalty looks at
    uint64_t seed;
} rm_sampler_params;

rm_sampler_params rm_sampler_default_params(void);
// Checks every field: temperature finite in [0, 100] (0: greedy), top_k >= 0
// (0: off), top_p in (0, 1] (1: off), min_p in [0, 1], repeat_penalty in
// (0, 100], repeat_last_n in [0, 2^20]. RM_EINVAL naming the field and value.
// rm_sampler_init refuses what this refuses.
int rm_sampler_params_check(const rm_sampler_params *p);
struct rm_json;
// Reads the sampling fields of a request body (temperature, top_p, top_k,
// min_p, repeat_penalty, seed; absent ones keep p's value) strictly (wrong
// type, non-integral top_k/seed, out of range: RM_EINVAL with a message a
// server returns as its 400), then rm_sampler_params_check.
int rm_sampler_params_from_json(rm_sampler_params *p, const struct rm_json *req);

typedef struct rm_sampler {
    rm_sampler_params p;
    uint64_t rng;
    int n_vocab;
    int32_t *recent; // ring of the last repeat_last_n tokens
    int n_recent, recent_head;
    float *probs; // [n_vocab] scratch
    int32_t *idx; // [n_vocab] scratch
} rm_sampler;

int rm_sampler_init(rm_sampler *s, const rm_sampler_params *p, int n_vocab);
void rm_sampler_free(rm_sampler *s);
// Records a token (prompt or generated) for the repetition penalty.
void rm_sampler_accept(rm_sampler *s, int32_t token);
// Chooses the next token. logits is modified (penalties, scaling).
int32_t rm_sampler_sample(rm_sampler *s, float *logits);
// Index of the largest value (first on ties).
int32_t rm_argmax(const float *x, int n);
#endif
