// hfdir.h — Hugging Face model directories (config.json + safetensors) and
// their conversion to GGUF in the llama.cpp conventions.
//
// A directory holds config.json and either model.safetensors or shards
// listed in model.safetensors.index.json ("weight_map": tensor -> file).
// Supported architectures: LlamaForCausalLM and MistralForCausalLM (written
// as GGUF "llama") and Qwen2ForCausalLM (GGUF "qwen2").
#ifndef RM_FORMAT_HFDIR_H
#define RM_FORMAT_HFDIR_H
#include <stddef.h>
#include <stdint.h>

#include "format/ftype.h"
#include "format/gguf.h"

// The hyperparameters of config.json that a conversion needs.
typedef struct hf_config {
    char hf_arch[64]; // architectures[0], e.g. "LlamaForCausalLM"
    char arch[16];    // GGUF architecture: "llama" or "qwen2"
    char name[128];   // _name_or_path, else the directory's base name
    int64_t vocab_size, hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim, max_pos;
    double rms_eps, rope_theta;
    int tie_embeddings;    // tie_word_embeddings (lm_head absent also ties)
    int head_dim_explicit; // head_dim given and != hidden_size / n_heads
    // rope_scaling: type "" (none), "linear" or "llama3".
    char rope_scaling[16];
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_orig_ctx;
} hf_config;

// Reads and validates dir/config.json. RM_ENOTFOUND if it is missing,
// RM_EUNSUPPORTED for another architecture (named in the message),
// RM_EFORMAT for missing/invalid hyperparameters.
int hfdir_read_config(const char *dir, hf_config *cfg);

// Converts the model in `dir` to a GGUF file at out_path. out_type: an
// rm_type for the 2-D weights (a weight whose rows are not whole blocks gets
// rm_ftype_row_type's fallback: q5_0 / q5_1 / q8_0 / q4_0 for q4_K / q5_K / q6_K / q3_K,
// else F16), or -1 to keep F32/F16/BF16
// as stored. Norms and biases are always F32. progress (may be NULL) is
// called as progress(ctx, done, total) after each tensor.
int hfdir_convert_to_gguf(const char *dir, const char *out_path, int out_type, void (*progress)(void *, int, int),
                          void *ctx);
// The same, with a hook for layers above: add_meta(mctx, w) (may be NULL) is
// called after the model metadata is set and before the file is written, to
// add keys (e.g. the tokenizer: see rm_tokenizer_hfdir_meta); a non-zero
// return aborts the conversion with that status. With a hook the
// ramole.hf_tokenizer_path key (the tokenizer.json beside the weights, which
// hfdir_convert_to_gguf writes for older readers) is left out. ft: the file
// type (format/ftype.h: one type, or a mixture such as q4_K_M, the tensor
// names deciding each matrix's type), NULL to keep F32/F16/BF16 as stored.
int hfdir_convert_to_gguf_ex(const char *dir, const char *out_path, const rm_ftype *ft,
                             void (*progress)(void *, int, int), void *ctx, int (*add_meta)(void *mctx, gguf_writer *w),
                             void *mctx);

// Row order of a Q or K projection for GGUF llama: Hugging Face rotates the
// RoPE pairs (i, i + d/2) of each head, GGUF llama the pairs (2i, 2i+1). For
// a matrix of n_head heads of head_dim rows each (head_dim even), returns the
// source (HF) row that becomes row r of the GGUF tensor. The same mapping
// applies to the rows of a Q/K bias and to LoRA B matrices of those layers.
int64_t hfdir_qk_src_row(int64_t r, int64_t head_dim);
#endif
