// synth.h — random-weight models of real shapes, for benchmarks and tests.
#ifndef RM_MODEL_SYNTH_H
#define RM_MODEL_SYNTH_H
#include <stdint.h>

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
// A file type as llama.cpp's quantizer names them: one type for every matrix
// ("q8_0", "q4_k", ... as rm_type_parse reads them) or one of the mixtures
// most downloads are, "q4_k_m" / "q5_k_m": q4_K / q5_K matrices with q6_K for
// the output matrix (here the tied token embeddings) and for attn_v and
// ffn_down in the first and last eighth of the layers and every third layer
// between (as llama.cpp's Q4_K_M / Q5_K_M files have them).
typedef struct rm_synth_ftype {
    rm_type type; // the matrices' type
    int k_m;      // 1: the _M mixture
} rm_synth_ftype;
int rm_synth_ftype_parse(const char *name, rm_synth_ftype *out); // RM_EINVAL if unknown
// The type of matrix `tensor` ("token_embd", "attn_v", ...) of layer `layer`
// (-1 outside the layers) in a file of type f with n_layer layers.
rm_type rm_synth_tensor_type(rm_synth_ftype f, const char *tensor, int layer, int n_layer);
// rm_synth_write for a mixture.
int rm_synth_write_ftype(const rm_synth_shape *shape, rm_synth_ftype ftype, uint64_t seed, const char *out_path,
                         void (*progress)(void *ctx, long done, long total), void *ctx);
// The same with byte-level BPE merges ("left right", GPT-2 byte mapping, rank
// order): token 258 + i is merge i's two parts joined (shape->n_vocab must
// be at least 258 + n_merges).
int rm_synth_write_bpe(const rm_synth_shape *shape, const char *const *merges, int n_merges, rm_type type,
                       uint64_t seed, const char *out_path, void (*progress)(void *ctx, long done, long total),
                       void *ctx);
#endif
