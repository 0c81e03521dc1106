// llama.h — the Llama-family model (Llama 2/3, Mistral, TinyLlama, Qwen2):
// weights from a GGUF file and one forward pass over a ragged batch.
//
// A batch is a list of rows. Each row is one token of one sequence: its own
// position and KV slot (prefill rows and decode rows of different sequences
// mix freely). A single request is a batch of one; there is no second path.
#ifndef RM_MODEL_LLAMA_H
#define RM_MODEL_LLAMA_H
#include <stdint.h>

#include "base/threadpool.h"
#include "format/gguf.h"
#include "model/kvcache.h"
#include "model/tokenizer.h"
#include "tensor/tensor.h"

typedef enum { RM_ARCH_LLAMA, RM_ARCH_QWEN2 } rm_arch;
typedef enum { RM_ROPE_SCALING_NONE, RM_ROPE_SCALING_LINEAR, RM_ROPE_SCALING_LLAMA3 } rm_rope_scaling;

typedef struct rm_llama_hparams {
    rm_arch arch;
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    float rms_eps;
    float rope_base;
    int rope_dim;  // rotated dims per head (<= head_dim)
    int rope_neox; // 0: rotate pairs (2i, 2i+1) (GGUF llama); 1: (i, i + rope_dim/2) (qwen2)
    rm_rope_scaling rope_scaling;
    float rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_ctx;
} rm_llama_hparams;

// The seven linear layers of a block, in the order LoRA targets name them.
typedef enum { RM_LIN_Q, RM_LIN_K, RM_LIN_V, RM_LIN_O, RM_LIN_GATE, RM_LIN_UP, RM_LIN_DOWN, RM_LIN_COUNT } rm_linear_id;
extern const char *const rm_linear_names[RM_LIN_COUNT]; // "q_proj", ... (PEFT names)
extern const char *const rm_linear_gguf[RM_LIN_COUNT];  // "attn_q", ... (GGUF names)

typedef struct rm_llama_layer {
    float *attn_norm, *ffn_norm; // [n_embd], f32 copies
    float *bq, *bk, *bv;         // Qwen2 biases or NULL
    rm_tensor w[RM_LIN_COUNT];   // W[out,in] views into the file
} rm_llama_layer;

typedef struct rm_batch rm_batch;

// The one hook through which LoRA plugs into every linear layer: called
// right after y = x W^T for all rows of the batch, it adds its terms to y.
typedef struct rm_linear_hook {
    void (*apply)(void *ctx, const rm_batch *b, int layer, rm_linear_id which, const float *x, int64_t ldx, float *y,
                  int64_t ldy);
    void *ctx;
} rm_linear_hook;

struct rm_batch {
    int n;                   // rows
    const int32_t *token;    // [n]
    const int32_t *pos;      // [n] position of the token in its sequence
    const int32_t *slot;     // [n] KV-cache slot of its sequence
    const uint8_t *want;     // [n] 1 = return logits for this row; NULL = every row
    const void *const *plan; // [n] per-row composition plan for the hook, or NULL
};

typedef struct rm_llama {
    rm_llama_hparams hp;
    gguf_file gguf;
    char *path;
    rm_tensor tok_embd, output; // output == tok_embd when tied
    float *output_norm;
    rm_llama_layer *layers;
    rm_tokenizer *tok; // NULL when the file has no usable tokenizer
    int add_bos;
    int32_t bos;
    size_t weight_bytes; // bytes of all weights
    float *rope_freq;    // [rope_dim/2] rotation frequency of each pair
    // scratch for forward (grown on demand)
    float *buf;
    size_t buf_cap;
    int32_t *slot_len; // per KV slot: positions filled once the batch is in
    int slot_len_cap;
} rm_llama;

// Loads a GGUF model (architectures "llama", "mistral", "qwen2"). A file with
// no tokenizer loads with m->tok == NULL (drive it with token ids).
int rm_llama_load(rm_llama **out, const char *path);
void rm_llama_free(rm_llama *m);

// Bytes of weights read to produce one token at batch 1 (every matrix once,
// one embedding row): the numerator of the decode bandwidth bound.
size_t rm_llama_bytes_per_token(const rm_llama *m);

// Runs the batch: appends each row's K/V to its slot in kv, and writes the
// logits of the rows flagged in b->want (all rows if NULL), in row order, to
// logits [n_out, n_vocab]. Rows of one sequence must appear in position order
// and a row may attend only to positions <= its own (already in the cache or
// earlier in this batch). hook may be NULL. tp may be NULL.
int rm_llama_forward(rm_llama *m, rm_kvcache *kv, rm_threadpool *tp, const rm_batch *b, const rm_linear_hook *hook,
                     float *logits);
// The same, and (hidden non-NULL) the final hidden states of the wanted rows
// after the final RMSNorm, in row order, to hidden [n_out, n_embd] (the
// embedders' view of the model). logits may be NULL.
int rm_llama_forward_hidden(rm_llama *m, rm_kvcache *kv, rm_threadpool *tp, const rm_batch *b,
                            const rm_linear_hook *hook, float *logits, float *hidden);
#endif
