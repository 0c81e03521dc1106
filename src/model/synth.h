// synth.h — random-weight models of real shapes, for benchmarks and tests.
#ifndef RM_MODEL_SYNTH_H
#define RM_MODEL_SYNTH_H
#include <stdint.h>

#include "format/ftype.h"
#include "tensor/tensor.h"

typedef struct rm_synth_shape {
    const char *name;
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
} rm_synth_shape;

// Known shapes: "tiny", "tinyllama-1.1b", "llama-7b". NULL if unknown.
const rm_synth_shape *rm_synth_find(const char *name);
// Comma-separated list of the known names.
const char *rm_synth_names(void);

// Writes a GGUF llama model of `shape` with weights of `type` (norms f32),
// uniform random weights scaled 1/sqrt(fan_in) from `seed`, and a byte-level
// tokenizer (256 byte tokens, <s>, </s>, then unused control tokens).
// progress(ctx, done, total) is called per tensor when not NULL.
int rm_synth_write(const rm_synth_shape *shape, rm_type type, uint64_t seed, const char *out_path,
                   void (*progress)(void *ctx, long done, long total), void *ctx);
// rm_synth_write for a file type (format/ftype.h: one type or a mixture; the
// token embeddings are the output matrix).
int rm_synth_write_ftype(const rm_synth_shape *shape, rm_ftype ftype, uint64_t seed, const char *out_path,
                         void (*progress)(void *ctx, long done, long total), void *ctx);
// The same with byte-level BPE merges ("left right", GPT-2 byte mapping, rank
// order): token 258 + i is merge i's two parts joined (shape->n_vocab must
// be at least 258 + n_merges).
int rm_synth_write_bpe(const rm_synth_shape *shape, const char *const *merges, int n_merges, rm_type type,
                       uint64_t seed, const char *out_path, void (*progress)(void *ctx, long done, long total),
                       void *ctx);
#endif
