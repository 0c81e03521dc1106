// quant.c — weight types (GGUF/ggml block layouts), sizes, quantize and
// dequantize of one row. These scalar routines are the specification that
// the SIMD kernels are tested against.
//
// Block layouts (bytes, little endian, exactly as in GGUF files):
//   q8_0: f16 d, int8 q[32]                       x = d*q
//   q4_0: f16 d, uint8 qs[16]                     x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
//   q4_K: f16 d, f16 dmin, uint8 sc[12], qs[128]  super-block of 256 = 8 sub-blocks of 32;
//         sub-block s has 6-bit scale ls and min lm (packed, see q4k_scale_min) and
//         x = d*ls*q - dmin*lm; sub-blocks 2k and 2k+1 share qs[32k..32k+32): low / high nibble.
#include "tensor/tensor.h"
#include "tensor/kernels.h"
#include "base/err.h"
#include "base/fp16.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    int type;
    const char *name;
    int blk;
    size_t bytes;
    int file; // 0: in memory only
} g_types[] = {
    {RM_TYPE_F32, "f32", 1, 4, 1},
    {RM_TYPE_F16, "f16", 1, 2, 1},
    {RM_TYPE_BF16, "bf16", 1, 2, 1},
    {RM_TYPE_Q8_0, "q8_0", 32, sizeof(rm_block_q8_0), 1},
    {RM_TYPE_Q4_0, "q4_0", 32, sizeof(rm_block_q4_0), 1},
    {RM_TYPE_Q4_K, "q4_K", 256, sizeof(rm_block_q4_k), 1},
    {RM_TYPE_Q8_0_R16, "q8_0-r16", 32, sizeof(rm_block_q8_0), 0},
    {RM_TYPE_Q4_0_R16, "q4_0-r16", 32, sizeof(rm_block_q4_0), 0},
    {RM_TYPE_Q4_K_R16, "q4_K-r16", 256, sizeof(rm_block_q4_k), 0},
};
#define N_TYPES ((int)(sizeof g_types / sizeof g_types[0]))

static int type_index(int type) {
    for (int i = 0; i < N_TYPES; i++)
        if (g_types[i].type == type) return i;
    return -1;
}

int rm_type_supported(int type) {
    int i = type_index(type);
    return i >= 0 && g_types[i].file;
}

const char *rm_type_name(int type) {
    int i = type_index(type);
    return i < 0 ? "?" : g_types[i].name;
}

int rm_type_parse(const char *name, rm_type *out) {
    for (int i = 0; name && i < N_TYPES; i++) {
        if (g_types[i].file && strcasecmp(name, g_types[i].name) == 0) {
            *out = (rm_type)g_types[i].type;
            return RM_OK;
        }
    }
    return rm_errorf(RM_EINVAL, "unknown tensor type '%s'", name ? name : "(null)");
}

int rm_type_block_elems(rm_type t) {
    int i = type_index(t);
    return i < 0 ? 0 : g_types[i].blk;
}

size_t rm_type_block_bytes(rm_type t) {
    int i = type_index(t);
    return i < 0 ? 0 : g_types[i].bytes;
}

size_t rm_row_size(rm_type t, int64_t n) {
    int i = type_index(t);
    if (i < 0 || n < 0 || n % g_types[i].blk) return 0;
    uint64_t blocks = (uint64_t)n / (uint64_t)g_types[i].blk;
    if (blocks > SIZE_MAX / g_types[i].bytes) return 0;
    return (size_t)blocks * g_types[i].bytes;
}

size_t rm_tensor_nbytes(rm_type t, int n_dims, const int64_t *ne) {
    if (type_index(t) < 0) {
        rm_errorf(RM_EUNSUPPORTED, "tensor type %d is not supported", (int)t);
        return 0;
    }
    if (n_dims < 1 || n_dims > 4) {
        rm_errorf(RM_EINVAL, "tensor has %d dimensions (want 1..4)", n_dims);
        return 0;
    }
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) {
            rm_errorf(RM_EINVAL, "tensor dimension %d is %lld", d, (long long)ne[d]);
            return 0;
        }
    }
    int blk = rm_type_block_elems(t);
    if (ne[0] % blk) {
        rm_errorf(RM_EINVAL, "%s tensor row of %lld elements is not a multiple of %d", rm_type_name(t),
                  (long long)ne[0], blk);
        return 0;
    }
    size_t size = rm_row_size(t, ne[0]);
    if (size == 0) goto overflow;
    for (int d = 1; d < n_dims; d++) {
        if ((uint64_t)ne[d] > SIZE_MAX / size) goto overflow;
        size *= (size_t)ne[d];
    }
    return size;
overflow:
    rm_errorf(RM_EINVAL, "%s tensor size overflows", rm_type_name(t));
    return 0;
}

// ---------------------------------------------------------------------------
// q4_K scale packing: 8 (scale, min) pairs of 6 bits in 12 bytes; the
// layout is spelled out at rm_q4k_scale_min (kernels.h), which unpacks it.

static void q4k_pack_scales(const int *ls, const int *lm, uint8_t *sc) {
    for (int s = 0; s < 4; s++) {
        sc[s] = (uint8_t)((ls[s] & 63) | ((ls[s + 4] >> 4) << 6));
        sc[s + 4] = (uint8_t)((lm[s] & 63) | ((lm[s + 4] >> 4) << 6));
        sc[s + 8] = (uint8_t)((ls[s + 4] & 15) | ((lm[s + 4] & 15) << 4));
    }
}

// ---------------------------------------------------------------------------
// Quantizers (round to nearest, as ggml's reference quantizers).

static void quantize_q8_0(const float *x, rm_block_q8_0 *b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0;
        b[i].d = rm_f32_to_f16(d);
        for (int j = 0; j < 32; j++) b[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quantize_q4_0(const float *x, rm_block_q4_0 *b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 32) {
        float amax = 0, max = 0; // max: the value of largest magnitude, with its sign
        for (int j = 0; j < 32; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0;
        b[i].d = rm_f32_to_f16(d);
        for (int j = 0; j < 16; j++) {
            float v0 = x[j] * id + 8.5f, v1 = x[j + 16] * id + 8.5f;
            int q0 = v0 < 0 ? 0 : v0 >= 15 ? 15 : (int)v0; // (int) truncates: v+8.5 rounds
            int q1 = v1 < 0 ? 0 : v1 >= 15 ? 15 : (int)v1;
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

// Best (scale, offset) for x[32] ~ scale*q - offset, q in 0..15, offset >= 0.
// Tries a few grids around the plain min/max fit and keeps the lowest error.
static void q4k_fit_block(const float *x, float *scale, float *offset) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) {
        lo = fminf(lo, x[j]);
        hi = fmaxf(hi, x[j]);
    }
    if (lo > 0) lo = 0;
    *scale = 0;
    *offset = -lo;
    if (hi <= lo) return;
    float best_err = INFINITY;
    for (int step = -4; step <= 4; step++) {
        float s = (hi - lo) / (15.0f + 0.25f * (float)step);
        float m = -lo; // start from the min, refine by least squares on offset
        for (int it = 0; it < 2; it++) {
            float err = 0, resid = 0;
            for (int j = 0; j < 32; j++) {
                int q = (int)lrintf((x[j] + m) / s);
                q = q < 0 ? 0 : q > 15 ? 15 : q;
                float e = s * (float)q - m - x[j];
                err += e * e;
                resid += e;
            }
            if (err < best_err) {
                best_err = err;
                *scale = s;
                *offset = m;
            }
            m += resid / 32.0f; // shift the offset by the mean residual
            if (m < 0) m = 0;
        }
    }
}

static void quantize_q4_k(const float *x, rm_block_q4_k *b, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += 256) {
        float sc[8], mn[8], max_sc = 0, max_mn = 0;
        for (int s = 0; s < 8; s++) {
            q4k_fit_block(x + 32 * s, &sc[s], &mn[s]);
            max_sc = fmaxf(max_sc, sc[s]);
            max_mn = fmaxf(max_mn, mn[s]);
        }
        float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
        b[i].d = rm_f32_to_f16(d);
        b[i].dmin = rm_f32_to_f16(dmin);
        d = rm_f16_to_f32(b[i].d); // quantize against the stored (rounded) values
        dmin = rm_f16_to_f32(b[i].dmin);
        int ls[8], lm[8];
        for (int s = 0; s < 8; s++) {
            ls[s] = d > 0 ? (int)lrintf(sc[s] / d) : 0;
            lm[s] = dmin > 0 ? (int)lrintf(mn[s] / dmin) : 0;
            ls[s] = ls[s] > 63 ? 63 : ls[s];
            lm[s] = lm[s] > 63 ? 63 : lm[s];
        }
        q4k_pack_scales(ls, lm, b[i].scales);
        for (int s = 0; s < 8; s++) {
            float step = d * (float)ls[s], off = dmin * (float)lm[s];
            for (int j = 0; j < 32; j++) {
                int q = step > 0 ? (int)lrintf((x[32 * s + j] + off) / step) : 0;
                q = q < 0 ? 0 : q > 15 ? 15 : q;
                uint8_t *byte = &b[i].qs[32 * (s / 2) + j];
                if (s % 2 == 0) *byte = (uint8_t)q;
                else *byte |= (uint8_t)(q << 4);
            }
        }
    }
}

void rm_quantize_row(rm_type t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case RM_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case RM_TYPE_F16:
        for (int64_t i = 0; i < n; i++) ((rm_f16 *)dst)[i] = rm_f32_to_f16(src[i]);
        break;
    case RM_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) ((rm_bf16 *)dst)[i] = rm_f32_to_bf16(src[i]);
        break;
    case RM_TYPE_Q8_0: quantize_q8_0(src, dst, n / 32); break;
    case RM_TYPE_Q4_0: quantize_q4_0(src, dst, n / 32); break;
    case RM_TYPE_Q4_K: quantize_q4_k(src, dst, n / 256); break;
    case RM_TYPE_Q8_0_R16: // the row in the base type, then rearranged
    case RM_TYPE_Q4_0_R16:
    case RM_TYPE_Q4_K_R16: {
        int base = rm_type_r16_base(t);
        void *tmp = malloc(rm_row_size((rm_type)base, n));
        if (!tmp) {
            rm_errorf(RM_ENOMEM, "quantize: out of memory for a row of %lld", (long long)n);
            break;
        }
        rm_quantize_row((rm_type)base, src, tmp, n);
        rm_r16_pack_row(base, tmp, dst, n);
        free(tmp);
        break;
    }
    }
}

void rm_dequantize_row(rm_type t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case RM_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case RM_TYPE_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = rm_f16_to_f32(((const rm_f16 *)src)[i]);
        break;
    case RM_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = rm_bf16_to_f32(((const rm_bf16 *)src)[i]);
        break;
    case RM_TYPE_Q8_0: {
        const rm_block_q8_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++) {
            float d = rm_f16_to_f32(b[i].d);
            for (int j = 0; j < 32; j++) dst[32 * i + j] = d * (float)b[i].qs[j];
        }
        break;
    }
    case RM_TYPE_Q4_0: {
        const rm_block_q4_0 *b = src;
        for (int64_t i = 0; i < n / 32; i++) {
            float d = rm_f16_to_f32(b[i].d);
            for (int j = 0; j < 16; j++) {
                dst[32 * i + j] = d * (float)((b[i].qs[j] & 15) - 8);
                dst[32 * i + j + 16] = d * (float)((b[i].qs[j] >> 4) - 8);
            }
        }
        break;
    }
    case RM_TYPE_Q4_K: {
        const rm_block_q4_k *b = src;
        for (int64_t i = 0; i < n / 256; i++) {
            float d = rm_f16_to_f32(b[i].d), dmin = rm_f16_to_f32(b[i].dmin);
            for (int s = 0; s < 8; s++) {
                int ls, lm;
                rm_q4k_scale_min(b[i].scales, s, &ls, &lm);
                float step = d * (float)ls, off = dmin * (float)lm;
                const uint8_t *q = b[i].qs + 32 * (s / 2);
                int shift = 4 * (s % 2);
                for (int j = 0; j < 32; j++) dst[256 * i + 32 * s + j] = step * (float)((q[j] >> shift) & 15) - off;
            }
        }
        break;
    }
    case RM_TYPE_Q8_0_R16:
    case RM_TYPE_Q4_0_R16:
    case RM_TYPE_Q4_K_R16: rm_r16_dequantize_row(t, src, dst, n); break;
    }
}
