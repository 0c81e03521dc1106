// ftype.c — file types and the per-tensor types of the _M mixtures.
#include "format/ftype.h"
#include "base/err.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int rm_ftype_parse(const char *name, rm_ftype *out) {
    size_t n = name ? strlen(name) : 0;
    if (n > 2 && strcasecmp(name + n - 2, "_m") == 0) {
        char base[16];
        rm_type t;
        if (n - 2 < sizeof base) {
            memcpy(base, name, n - 2);
            base[n - 2] = 0;
        }
        if (n - 2 >= sizeof base || rm_type_parse(base, &t) != RM_OK || (t != RM_TYPE_Q4_K && t != RM_TYPE_Q5_K))
            return rm_errorf(RM_EINVAL, "unknown file type '%s' (the mixtures: q4_k_m, q5_k_m)", name);
        out->type = t;
        out->k_m = 1;
        return RM_OK;
    }
    out->k_m = 0;
    return rm_type_parse(name, &out->type);
}

const char *rm_ftype_name(rm_ftype f, char *buf, size_t n) {
    snprintf(buf, n, "%s%s", rm_type_name(f.type), f.k_m ? "_M" : "");
    return buf;
}

rm_type rm_ftype_tensor_type(rm_ftype f, const char *name, int n_layer, int tied) {
    if (!f.k_m) return f.type;
    if (strcmp(name, "output.weight") == 0 || (tied && strcmp(name, "token_embd.weight") == 0)) return RM_TYPE_Q6_K;
    int layer, at = 0;
    if (sscanf(name, "blk.%d.%n", &layer, &at) == 1 && at > 0 &&
        (strcmp(name + at, "attn_v.weight") == 0 || strcmp(name + at, "ffn_down.weight") == 0)) {
        int e = n_layer / 8; // the first and last eighth, and every third layer between
        if (layer < e || layer >= n_layer - e || (layer - e) % 3 == 2) return RM_TYPE_Q6_K;
    }
    return f.type;
}

rm_type rm_ftype_row_type(rm_type want, int64_t cols) {
    if (cols % rm_type_block_elems(want) == 0) return want;
    rm_type alt = want == RM_TYPE_Q4_K   ? RM_TYPE_Q5_0
                  : want == RM_TYPE_Q5_K ? RM_TYPE_Q5_1
                  : want == RM_TYPE_Q3_K ? RM_TYPE_Q4_0 // llama.cpp: IQ4_NL, which ramole does not read
                                         : RM_TYPE_Q8_0;
    if (rm_type_block_elems(want) == 256 && cols % 32 == 0) return alt;
    return RM_TYPE_F16;
}

int rm_ftype_file_type_id(rm_ftype f) {
    if (f.k_m) return f.type == RM_TYPE_Q4_K ? 15 : 17;
    switch (f.type) {
    case RM_TYPE_F32: return 0;
    case RM_TYPE_F16: return 1;
    case RM_TYPE_Q4_0: return 2;
    case RM_TYPE_Q4_1: return 3;
    case RM_TYPE_Q5_0: return 8;
    case RM_TYPE_Q5_1: return 9;
    case RM_TYPE_Q8_0: return 7;
    case RM_TYPE_Q3_K: return 11; // MOSTLY_Q3_K_S
    case RM_TYPE_Q4_K: return 14;
    case RM_TYPE_Q5_K: return 16;
    case RM_TYPE_Q6_K: return 18;
    case RM_TYPE_BF16: return 32;
    default: return -1;
    }
}
