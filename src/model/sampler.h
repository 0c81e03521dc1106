// sampler.h — next-token choice from logits: greedy, temperature, top-k,
// top-p, min-p, repetition penalty, seeded.
#ifndef RM_MODEL_SAMPLER_H
#define RM_MODEL_SAMPLER_H
#include <stdint.h>

typedef struct rm_sampler_params {
    float temperature;     // <= 0: greedy
    int top_k;             // <= 0: off
    float top_p;           // >= 1: off
    float min_p;           // <= 0: off
    float repeat_penalty;  // 1: off (llama.cpp semantics: divide positive logits, multiply negative)
    int repeat_last_n;     // how many recent tokens the penalty looks at
    uint64_t seed;
} rm_sampler_params;

rm_sampler_params rm_sampler_default_params(void);

typedef struct rm_sampler {
    rm_sampler_params p;
    uint64_t rng;
    int n_vocab;
    int32_t *recent;  // ring of the last repeat_last_n tokens
    int n_recent, recent_head;
    float *probs;     // [n_vocab] scratch
    int32_t *idx;     // [n_vocab] scratch
} rm_sampler;

int rm_sampler_init(rm_sampler *s, const rm_sampler_params *p, int n_vocab);
void rm_sampler_free(rm_sampler *s);
// Records a token (prompt or generated) for the repetition penalty.
void rm_sampler_accept(rm_sampler *s, int32_t token);
// Chooses the next token. logits is modified (penalties, scaling).
int32_t rm_sampler_sample(rm_sampler *s, float *logits);
// Index of the largest value (first on ties).
int32_t rm_argmax(const float *x, int n);
// Uniform [0,1) from a splitmix64/xorshift state.
float rm_rand_f32(uint64_t *state);
#endif
