// llama2c.h — import of llama2.c checkpoints (karpathy/llama2.c "legacy"
// format: 7 int32 header dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len — negative vocab_size means an untied classifier —
// then f32 arrays in llama2.c order).
#ifndef RM_FORMAT_LLAMA2C_H
#define RM_FORMAT_LLAMA2C_H

// Converts IN.bin to a GGUF llama model at out_path (f32 weights, GGUF
// tensor names, RoPE pairing (2i, 2i+1) as llama2.c uses; BOS = 1, EOS = 2).
int llama2c_convert(const char *in_path, const char *out_path);
// The same with llama2.c's tokenizer file (tokenizer.bin: int32 max token
// length, then per token f32 score, int32 length and its bytes) embedded as a
// SentencePiece vocabulary, so that the model takes text; tok_path NULL: none.
// The file must hold exactly the checkpoint's vocab_size tokens.
int llama2c_convert_tok(const char *in_path, const char *tok_path, const char *out_path);
#endif
