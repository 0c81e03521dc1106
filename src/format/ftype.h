// ftype.h — file types as llama.cpp's quantizer names them: one weight type
// for every matrix ("q8_0", "q4_k", ...), or one of the _M mixtures most
// downloads are ("q4_k_m", "q5_k_m"): q4_K / q5_K matrices with q6_K for the
// output matrix and for attn_v and ffn_down in the first and last eighth of
// the layers and every third layer between.
#ifndef RM_FORMAT_FTYPE_H
#define RM_FORMAT_FTYPE_H
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

typedef struct rm_ftype {
    rm_type type; // the matrices' type
    int k_m;      // 1: the _M mixture
} rm_ftype;

// Case-insensitive; RM_EINVAL (naming the name) if unknown.
int rm_ftype_parse(const char *name, rm_ftype *out);
// "q4_K", "q4_K_M", ... into buf (n bytes); returns buf.
const char *rm_ftype_name(rm_ftype f, char *buf, size_t n);
// The type of GGUF matrix `name` ("token_embd.weight", "output.weight",
// "blk.3.attn_v.weight", ...) in a file of type f with n_layer layers; tied:
// the token embeddings are the output matrix too (no output.weight).
rm_type rm_ftype_tensor_type(rm_ftype f, const char *name, int n_layer, int tied);
// The type a matrix of rows of `cols` values gets when `want` is asked for:
// want when cols is a whole number of its blocks; else, as llama.cpp's
// quantizer does, q5_0 for q4_K, q5_1 for q5_K, q8_0 for q6_K (blocks of 32),
// and q4_0 for q3_K (llama.cpp's iq4_nl, which ramole does not read); else f16.
rm_type rm_ftype_row_type(rm_type want, int64_t cols);
// llama.cpp's general.file_type for f, -1 where it has none.
int rm_ftype_file_type_id(rm_ftype f);
#endif
