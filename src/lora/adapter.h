// adapter.h — LoRA adapters: loaded from PEFT directories or GGUF LoRA files
// into f32, validated against (bound to) a base model, saved in either format
// and merged into a base for export.
//
// An adapter adds, to linear layer (l, which) of the base, the term
//     y += s * B (A x)          A [r, in], B [out, r], s = alpha / r
// (alpha / sqrt(r) with rsLoRA; per-module alpha/rank from PEFT's patterns).
// Adapters are never merged into the base for serving: lora/batch applies
// them through the model's linear hook on any base weight type.
#ifndef RM_LORA_ADAPTER_H
#define RM_LORA_ADAPTER_H
#include <stddef.h>
#include <stdint.h>

#include "model/llama.h"

#define RM_LORA_MAX_RANK 1024
// The largest in / out dimension an adapter may declare (no LLM linear is
// wider; a larger one is a hostile file, refused before allocating).
#define RM_LORA_MAX_DIM (1 << 18)

typedef struct rm_lora_mod {
    int r;                // rank; 0 = no LoRA on this linear
    int64_t in, out;      // the base weight's W[out, in]
    float scale;          // s
    float *A;             // [r, in]
    float *Bt;            // [r, out]: B transposed (the kernels stream its rows)
    uint16_t *A16, *Bt16; // optional f16 mirrors the hook reads instead (rm_lora_make_f16), packed:
    int8_t *A8, *Bt8;     // optional 8-bit mirrors (rm_lora_make_q8), packed the same way; the hook
    float *s8;            // prefers them to the f16 ones. s8: [2r] scales, A's rows then B^T's rows
} rm_lora_mod;

// The mirrors are packed so that the hook's kernels read each one as a single
// stream. A16: A's rows in blocks of 4, each block [in16 / 16][4][16] (in16 =
// in rounded up to 16; the padding and the rows of the last block past r are
// 0). Bt16: B^T's columns in blocks of 32, each block [r][32] (out rounded up
// to 32, padding 0). A8 and Bt8 use the same positions with one byte per
// element: A(j, k) = s8[j] * A8[at], B^T(j, o) = s8[r + j] * Bt8[at], where
// s8[j] is row j's largest magnitude / 127 (values rounded to nearest).
// The element (j, k) of A and (j, o) of B^T (in elements, either type):
static inline size_t rm_lora_a16_at(int64_t in, int j, int64_t k) {
    size_t in16 = ((size_t)in + 15) & ~(size_t)15;
    return (size_t)(j / 4) * 4 * in16 + (size_t)(k / 16) * 64 + (size_t)(j % 4) * 16 + (size_t)(k % 16);
}
static inline size_t rm_lora_b16_at(int r, int j, int64_t o) {
    return (size_t)(o / 32) * 32 * (size_t)r + (size_t)j * 32 + (size_t)(o % 32);
}
// Their sizes in elements.
static inline size_t rm_lora_a16_size(int r, int64_t in) {
    return (size_t)((r + 3) / 4) * 4 * (((size_t)in + 15) & ~(size_t)15);
}
static inline size_t rm_lora_b16_size(int r, int64_t out) { return (((size_t)out + 31) & ~(size_t)31) * (size_t)r; }

typedef struct rm_lora {
    char *path;         // where it came from (messages), "" for in-memory adapters
    const char *format; // "peft", "gguf" or "memory"
    char arch[32];      // "llama", "qwen2", ... ; "" when unknown (PEFT, until bound)
    int n_layer;        // layers it covers: mods has n_layer * RM_LIN_COUNT entries
    rm_lora_mod *mods;  // [layer * RM_LIN_COUNT + which]
    // Row order of B for q_proj / k_proj: 0 = Hugging Face (RoPE pairs i, i+d/2),
    // 1 = permuted to GGUF llama order (pairs 2i, 2i+1). Binding to a base makes
    // it match the base.
    int qk_permuted;
    float alpha; // nominal alpha and rank (from the file, for `lora info`)
    int rank;
    int rslora;
    uint64_t uid;                    // unique per process: keys caches and orders batch groups
    const rm_llama *base;            // set by rm_lora_bind
    int n_head, n_head_kv, head_dim; // of the base it was bound to (0 before)
} rm_lora;

// Loads a PEFT adapter (a directory with adapter_config.json and
// adapter_model.safetensors, or the .safetensors file itself) or a GGUF LoRA
// file. Weights become f32; NaN/Inf, DoRA, modules_to_save, embedding LoRAs,
// bad names and inconsistent shapes are refused with a message naming the
// file and the tensor.
int rm_lora_load(rm_lora **out, const char *path);
// The two formats explicitly (rm_lora_load picks by what path is).
int rm_lora_load_peft(rm_lora **out, const char *path);
int rm_lora_load_gguf(rm_lora **out, const char *path);
// The same with every module's declared shape checked against m (NULL: only
// the generic limits) before any tensor is read or allocated: a file
// declaring a huge or foreign shape is refused at once.
int rm_lora_load_checked(rm_lora **out, const char *path, const rm_llama *m);
int rm_lora_load_peft_checked(rm_lora **out, const char *path, const rm_llama *m);
int rm_lora_load_gguf_checked(rm_lora **out, const char *path, const rm_llama *m);
// One module's declared shape: rank in [1, RM_LORA_MAX_RANK], in and out in
// [1, RM_LORA_MAX_DIM]; with m, the layer exists, (in, out) is m's weight
// shape and r <= min(in, out). Messages name path, layer and linear.
int rm_lora_check_shape(const rm_llama *m, const char *path, int layer, int which, int64_t r, int64_t in, int64_t out);
void rm_lora_free(rm_lora *a);

// Validates a against the base (architecture, layer count, every shape, rank
// limits, scale: rm_lora_check_scale) and then brings B's Q/K rows into the
// base's RoPE order. On failure a is unchanged. Binding again to the same
// base is a no-op.
int rm_lora_bind(rm_lora *a, const rm_llama *m);

// The largest ||s B A||_F / ||W||_F an adapter may have on any linear.
// Trained adapters change a weight by a small fraction of it; 10 leaves room
// for any sane one and refuses garbage (finite weights of 3e38 made every
// answer token 0).
#define RM_LORA_MAX_REL_NORM 10.0
// Refuses (RM_EFORMAT, naming the layer, the linear and the measured ratio)
// an adapter whose update on some linear is over RM_LORA_MAX_REL_NORM times
// the base weight's norm (estimated from 64 rows; weights of norm 0 are not
// checked). Shapes must already match m.
int rm_lora_check_scale(const rm_lora *a, const rm_llama *m);
// rm_lora_load_checked then rm_lora_bind to m; on failure *out is NULL and
// nothing is left allocated.
int rm_lora_load_for(rm_lora **out, const char *path, const rm_llama *m);

// Adds f16 mirrors of A and B that the batched hook then reads instead of
// the f32 weights: half the memory traffic per batch, at f16 precision (a
// relative 5e-4 per weight). Needs a bound adapter (binding again drops them
// if it reorders rows). Calling it twice is a no-op.
int rm_lora_make_f16(rm_lora *a);
// The same for one module (allocated, any shape); a no-op when it has them.
int rm_lora_mod_make_f16(rm_lora_mod *m);
// 8-bit mirrors (layout above): a quarter of the f32 traffic, at a relative
// error per weight of up to 0.4% of its row's largest magnitude. The hook reads
// them in preference to f16 mirrors. Same conditions as rm_lora_make_f16.
int rm_lora_make_q8(rm_lora *a);
int rm_lora_mod_make_q8(rm_lora_mod *m);

// An empty adapter covering n_layer layers (for builders); mods are zeroed.
int rm_lora_new(rm_lora **out, int n_layer);
// Allocates A and Bt of one module (zeroed).
int rm_lora_mod_alloc(rm_lora_mod *mod, int r, int64_t in, int64_t out, float scale);

// Bit mask of linear targets (1u << rm_linear_id). Parses "q,v", "q_proj,v_proj",
// "all" (all seven), "attn" (q,k,v,o), "mlp" (gate,up,down).
int rm_lora_parse_targets(const char *s, unsigned *mask);
unsigned rm_lora_targets(const rm_lora *a);
// Largest rank over the modules.
int rm_lora_max_rank(const rm_lora *a);
// Bytes the adapter holds in memory (A, B and their f16 / 8-bit mirrors, the module table).
size_t rm_lora_bytes(const rm_lora *a);

// Splits "PATH[:WEIGHT]" (the weight is taken only when the text after the
// last ':' is a number). path gets a copy (NUL-terminated, cap bytes);
// *has_weight says whether a weight was given.
int rm_lora_parse_spec(const char *spec, char *path, size_t cap, float *weight, int *has_weight);

// A random adapter bound to m: rank r on the targets of every layer, A and B
// uniform with magnitudes that make s*B*A comparable to a few percent of W.
// Shared by tests and `ramole bench-lora`.
int rm_lora_random(rm_lora **out, const rm_llama *m, int r, unsigned targets, uint64_t seed);

// Permutes one vector of n_head * head_dim output rows between Hugging Face
// RoPE order and GGUF llama order (inverse = 0: HF -> GGUF).
void rm_lora_qk_permute(float *v, int n_head, int head_dim, int inverse);

// Writes a llama.cpp-compatible GGUF LoRA file (general.type=adapter,
// adapter.type=lora, adapter.lora.alpha, blk.N.<linear>.weight.lora_a/_b,
// f32). Per-module scales that one alpha cannot express are folded into B.
int rm_lora_save_gguf(const rm_lora *a, const char *path);
// Writes a PEFT directory (adapter_config.json with rank/alpha patterns where
// modules differ, adapter_model.safetensors in f32, Hugging Face Q/K order).
int rm_lora_save_peft(const rm_lora *a, const char *dir);

// Writes a copy of the base GGUF with W' = W + sum_i w_i s_i B_i A_i baked
// into its linear weights, every adapter bound to m. type < 0 keeps each
// weight's type (requantizing), otherwise every changed weight gets `type`.
int rm_lora_merge(const rm_llama *m, int n, rm_lora *const *a, const float *w, int type, const char *out_path);

// Internal helpers shared by the loaders (lora/*.c only).
// The GGUF LoRA writer with meta(gw, ctx) adding (or replacing) keys after the
// adapter's own; the reader of an opened GGUF LoRA (general.type not checked).
struct gguf_writer;
struct gguf_file;
int rm_lora_save_gguf_with(const rm_lora *a, const char *path, int (*meta)(struct gguf_writer *, const void *),
                           const void *ctx);
int rm_lora_read_gguf(rm_lora **out, const struct gguf_file *g, const rm_llama *m);
// B [out, r] of module i (layer * RM_LIN_COUNT + which) in a new buffer, its Q/K
// rows in GGUF order if permuted else Hugging Face order, times factor.
int rm_lora_export_b(const rm_lora *a, int i, int permuted, float factor, float **out);
uint64_t rm_lora_next_uid(void);
int rm_lora_check_finite(const float *v, int64_t n, const char *path, const char *name);
#endif
