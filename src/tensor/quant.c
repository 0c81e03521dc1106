// quant.c — weight types (GGUF/ggml block layouts), sizes, quantize and
// dequantize of one row. These scalar routines are the specification that
// the SIMD kernels are tested against.
//
// Block layouts (bytes, little endian, exactly as in GGUF files):
//   q8_0: f16 d, int8 q[32]                       x = d*q
//   q4_0: f16 d, uint8 qs[16]                     x[j] = d*((qs[j]&15)-8), x[j+16] = d*((qs[j]>>4)-8)
//   q4_1: f16 d, f16 m, uint8 qs[16]              as q4_0's nibbles q: x = d*q + m
//   q5_0: f16 d, uint8 qh[4], qs[16]              q = nibble (as q4_0's) | bit j of the 32-bit
//                                                 word qh << 4 for value j: x = d*(q-16)
//   q5_1: f16 d, f16 m, uint8 qh[4], qs[16]       q as q5_0's: x = d*q + m
//   q4_K: f16 d, f16 dmin, uint8 sc[12], qs[128]  super-block of 256 = 8 sub-blocks of 32;
//         sub-block s has 6-bit scale ls and min lm (packed, see q4k_scale_min) and
//         x = d*ls*q - dmin*lm; sub-blocks 2k and 2k+1 share qs[32k..32k+32): low / high nibble.
//   q5_K: f16 d, f16 dmin, uint8 sc[12], qh[32], qs[128]   as q4_K with 5-bit q: the low four bits
//         as q4_K's nibbles, the fifth of value j of sub-block s is bit s of qh[j].
//   q6_K: uint8 ql[128], qh[64], int8 sc[16], f16 d        x = d*sc[e/16]*(q-32), q 6 bits:
//         value e = 128h + 32p + l (h half, p = 0..3, l < 32) has low four bits
//         (ql[64h + 32(p&1) + l] >> 4(p>>1)) & 15 and high two (qh[32h + l] >> 2p) & 3.
//   q3_K: uint8 hmask[32], qs[64], sc[12], f16 d      x = d*sc[e/16]*(q-4), q 3 bits, sc 6 bits
//         less 32 (packed, see rm_q3k_scales): value e = 128h + 32p + l has low two bits
//         (qs[32h + l] >> 2p) & 3 and high one (hmask[l] >> (4h + p)) & 1.
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
    {RM_TYPE_Q4_1, "q4_1", 32, sizeof(rm_block_q4_1), 1},
    {RM_TYPE_Q5_0, "q5_0", 32, sizeof(rm_block_q5_0), 1},
    {RM_TYPE_Q5_1, "q5_1", 32, sizeof(rm_block_q5_1), 1},
    {RM_TYPE_Q4_K, "q4_K", 256, sizeof(rm_block_q4_k), 1},
    {RM_TYPE_Q5_K, "q5_K", 256, sizeof(rm_block_q5_k), 1},
    {RM_TYPE_Q6_K, "q6_K", 256, sizeof(rm_block_q6_k), 1},
    {RM_TYPE_Q3_K, "q3_K", 256, sizeof(rm_block_q3_k), 1},
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

// q4_0 / q5_0 (half 8 / 16): d = max / -half (max the value of largest
// magnitude, with its sign), q = x/d + half rounded, clamped to 0..2 half - 1.
// Writes d and the values; the caller packs them.
static void quantize_signed32(const float *x, int half, uint16_t *dh, int *q) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    float d = max / (float)-half, id = d != 0 ? 1.0f / d : 0;
    *dh = rm_f32_to_f16(d);
    const float top = (float)(2 * half - 1);
    for (int j = 0; j < 32; j++) {
        float v = x[j] * id + ((float)half + 0.5f);
        q[j] = v < 0 ? 0 : v >= top ? (int)top : (int)v; // (int) truncates: v + 0.5 rounds
    }
}

static void quantize_q4_0(const float *x, rm_block_q4_0 *b, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; i++, x += 32) {
        quantize_signed32(x, 8, &b[i].d, q);
        for (int j = 0; j < 16; j++) b[i].qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    }
}

// Packs 32 values of 0..31 as q5_0 / q5_1 do: low four bits as q4_0's
// nibbles, the fifth of value j as bit j of the little-endian word qh.
static void pack_q5(const int *q, uint8_t *qs, uint8_t *qhb) {
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
    for (int j = 0; j < 32; j++) qh |= (uint32_t)(q[j] >> 4) << j;
    memcpy(qhb, &qh, 4);
}

static void quantize_q5_0(const float *x, rm_block_q5_0 *b, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; i++, x += 32) {
        quantize_signed32(x, 16, &b[i].d, q);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

// q4_1 / q5_1 (nmax 15 / 31): m = min, d = (max - min) / nmax, q rounded.
// Writes d, m and the values; the caller packs them.
static void quantize_minmax(const float *x, int nmax, uint16_t *dh, uint16_t *mh, int *q) {
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
    float d = (hi - lo) / (float)nmax, id = d != 0 ? 1.0f / d : 0;
    *dh = rm_f32_to_f16(d);
    *mh = rm_f32_to_f16(lo);
    for (int j = 0; j < 32; j++) {
        float v = (x[j] - lo) * id + 0.5f;
        q[j] = v < 0 ? 0 : v >= (float)nmax ? nmax : (int)v;
    }
}

static void quantize_q4_1(const float *x, rm_block_q4_1 *b, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; i++, x += 32) {
        quantize_minmax(x, 15, &b[i].d, &b[i].m, q);
        for (int j = 0; j < 16; j++) b[i].qs[j] = (uint8_t)(q[j] | (q[j + 16] << 4));
    }
}

static void quantize_q5_1(const float *x, rm_block_q5_1 *b, int64_t nb) {
    int q[32];
    for (int64_t i = 0; i < nb; i++, x += 32) {
        quantize_minmax(x, 31, &b[i].d, &b[i].m, q);
        pack_q5(q, b[i].qs, b[i].qh);
    }
}

// Best (scale, offset) for x[32] ~ scale*q - offset, q in 0..nmax, offset >= 0.
// Tries a few grids around the plain min/max fit and keeps the lowest error.
static void kmin_fit_block(const float *x, int nmax, float *scale, float *offset) {
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
        float s = (hi - lo) / ((float)nmax + 0.25f * (float)step);
        float m = -lo; // start from the min, refine by least squares on offset
        for (int it = 0; it < 2; it++) {
            float err = 0, resid = 0;
            for (int j = 0; j < 32; j++) {
                int q = (int)lrintf((x[j] + m) / s);
                q = q < 0 ? 0 : q > nmax ? nmax : q;
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

// The super-block part q4_K and q5_K share: x[256] -> d, dmin, the packed
// 6-bit scales and mins (into the first 16 bytes, laid out as q4_K's) and
// the values q[256] in 0..nmax.
static void quantize_kmin(const float *x, int nmax, rm_block_q4_k *head, uint8_t *q) {
    float sc[8], mn[8], max_sc = 0, max_mn = 0;
    for (int s = 0; s < 8; s++) {
        kmin_fit_block(x + 32 * s, nmax, &sc[s], &mn[s]);
        max_sc = fmaxf(max_sc, sc[s]);
        max_mn = fmaxf(max_mn, mn[s]);
    }
    float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
    head->d = rm_f32_to_f16(d);
    head->dmin = rm_f32_to_f16(dmin);
    d = rm_f16_to_f32(head->d); // quantize against the stored (rounded) values
    dmin = rm_f16_to_f32(head->dmin);
    int ls[8], lm[8];
    for (int s = 0; s < 8; s++) {
        ls[s] = d > 0 ? (int)lrintf(sc[s] / d) : 0;
        lm[s] = dmin > 0 ? (int)lrintf(mn[s] / dmin) : 0;
        ls[s] = ls[s] > 63 ? 63 : ls[s];
        lm[s] = lm[s] > 63 ? 63 : lm[s];
    }
    q4k_pack_scales(ls, lm, head->scales);
    for (int s = 0; s < 8; s++) {
        float step = d * (float)ls[s], off = dmin * (float)lm[s];
        for (int j = 0; j < 32; j++) {
            int v = step > 0 ? (int)lrintf((x[32 * s + j] + off) / step) : 0;
            q[32 * s + j] = (uint8_t)(v < 0 ? 0 : v > nmax ? nmax : v);
        }
    }
}

static void quantize_q4_k(const float *x, rm_block_q4_k *b, int64_t nb) {
    uint8_t q[256];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        quantize_kmin(x, 15, &b[i], q);
        for (int s = 0; s < 8; s += 2)
            for (int j = 0; j < 32; j++) b[i].qs[16 * s + j] = (uint8_t)(q[32 * s + j] | (q[32 * s + 32 + j] << 4));
    }
}

static void quantize_q5_k(const float *x, rm_block_q5_k *b, int64_t nb) {
    uint8_t q[256];
    rm_block_q4_k head;
    for (int64_t i = 0; i < nb; i++, x += 256) {
        quantize_kmin(x, 31, &head, q);
        b[i].d = head.d;
        b[i].dmin = head.dmin;
        memcpy(b[i].scales, head.scales, 12);
        memset(b[i].qh, 0, 32);
        for (int s = 0; s < 8; s++)
            for (int j = 0; j < 32; j++) {
                if (s % 2 == 0) b[i].qs[16 * s + j] = (uint8_t)(q[32 * s + j] & 15);
                else b[i].qs[16 * (s - 1) + j] |= (uint8_t)((q[32 * s + j] & 15) << 4);
                b[i].qh[j] |= (uint8_t)((q[32 * s + j] >> 4) << s);
            }
    }
}

// x[16] ~ s*q, q in lo..hi (lo = -hi - 1): the scale whose values fit best
// among a few that map the largest magnitude near lo or hi, each refined by
// least squares.
static float fit_group16(const float *x, int lo, int hi) {
    float amax = 0, max = 0;
    for (int j = 0; j < 16; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    if (amax == 0) return 0;
    float best = 0, best_err = INFINITY;
    for (int k = 0; k < 8; k++) {
        float s = max / ((float)lo - (float)lo / 64.0f * (float)k); // the extreme value on the long side
        for (int it = 0; it < 2; it++) {
            float err = 0, xq = 0, qq = 0;
            for (int j = 0; j < 16; j++) {
                int q = (int)lrintf(x[j] / s);
                q = q < lo ? lo : q > hi ? hi : q;
                float e = s * (float)q - x[j];
                err += e * e;
                xq += x[j] * (float)q;
                qq += (float)(q * q);
            }
            if (err < best_err) best_err = err, best = s;
            if (qq > 0) s = xq / qq;
        }
    }
    return best;
}

// A super-block as d * sc[e/16] * q: q in lo..-lo-1 (q6_K -32..31, q3_K
// -4..3), sc in slo..-slo-1 (-128..127, -32..31), the largest group scale on
// the long side. Writes d (f16, as stored), sc and u[e] = q - lo.
static void quantize_k16(const float *x, int lo, int slo, uint16_t *d16, int *sc, uint8_t *u) {
    float s[16], amax = 0, max = 0;
    for (int g = 0; g < 16; g++) {
        s[g] = fit_group16(x + 16 * g, lo, -lo - 1);
        if (fabsf(s[g]) > amax) amax = fabsf(s[g]), max = s[g];
    }
    *d16 = rm_f32_to_f16(max / (float)slo);
    float d = rm_f16_to_f32(*d16);
    for (int g = 0; g < 16; g++) {
        int v = d != 0 ? (int)lrintf(s[g] / d) : 0;
        sc[g] = v < slo ? slo : v > -slo - 1 ? -slo - 1 : v;
        float step = d * (float)sc[g];
        for (int j = 0; j < 16; j++) {
            int q = step != 0 ? (int)lrintf(x[16 * g + j] / step) : 0;
            u[16 * g + j] = (uint8_t)((q < lo ? lo : q > -lo - 1 ? -lo - 1 : q) - lo);
        }
    }
}

static void quantize_q6_k(const float *x, rm_block_q6_k *b, int64_t nb) {
    int sc[16];
    uint8_t u[256];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        quantize_k16(x, -32, -128, &b[i].d, sc, u);
        memset(b[i].ql, 0, sizeof b[i].ql);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int g = 0; g < 16; g++) b[i].scales[g] = (int8_t)sc[g];
        for (int e = 0; e < 256; e++) {
            int h = e / 128, p = (e % 128) / 32, l = e % 32;
            b[i].ql[64 * h + 32 * (p & 1) + l] |= (uint8_t)((u[e] & 15) << (4 * (p >> 1)));
            b[i].qh[32 * h + l] |= (uint8_t)((u[e] >> 4) << (2 * p));
        }
    }
}

static void quantize_q3_k(const float *x, rm_block_q3_k *b, int64_t nb) {
    int sc[16];
    uint8_t u[256];
    for (int64_t i = 0; i < nb; i++, x += 256) {
        quantize_k16(x, -4, -32, &b[i].d, sc, u);
        memset(b[i].hmask, 0, sizeof b[i].hmask);
        memset(b[i].qs, 0, sizeof b[i].qs);
        memset(b[i].scales, 0, sizeof b[i].scales);
        for (int g = 0; g < 16; g++) { // the packing rm_q3k_scales reads
            int l6 = sc[g] + 32;
            b[i].scales[g % 8] |= (uint8_t)((l6 & 15) << (4 * (g / 8)));
            b[i].scales[8 + g % 4] |= (uint8_t)((l6 >> 4) << (2 * (g / 4)));
        }
        for (int e = 0; e < 256; e++) {
            int h = e / 128, p = (e % 128) / 32, l = e % 32;
            b[i].qs[32 * h + l] |= (uint8_t)((u[e] & 3) << (2 * p));
            b[i].hmask[l] |= (uint8_t)((u[e] >> 2) << (4 * h + p));
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
    case RM_TYPE_Q4_1: quantize_q4_1(src, dst, n / 32); break;
    case RM_TYPE_Q5_0: quantize_q5_0(src, dst, n / 32); break;
    case RM_TYPE_Q5_1: quantize_q5_1(src, dst, n / 32); break;
    case RM_TYPE_Q4_K: quantize_q4_k(src, dst, n / 256); break;
    case RM_TYPE_Q5_K: quantize_q5_k(src, dst, n / 256); break;
    case RM_TYPE_Q6_K: quantize_q6_k(src, dst, n / 256); break;
    case RM_TYPE_Q3_K: quantize_q3_k(src, dst, n / 256); break;
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

// One block of 32 of q4_1 / q5_0 / q5_1: x = d*q + m, q the nibble plus the
// fifth bit from the 32-bit word qh (NULL: none); m = -16 d for q5_0.
static void dequantize_blk32(float d, float m, const uint8_t *qs, const uint8_t *qh, float *dst) {
    uint32_t h = 0;
    if (qh) memcpy(&h, qh, 4);
    for (int j = 0; j < 16; j++) {
        int q0 = (qs[j] & 15) | (int)((h >> j) & 1) << 4, q1 = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        dst[j] = d * (float)q0 + m;
        dst[j + 16] = d * (float)q1 + m;
    }
}

// One q4_K or q5_K (Q5) super-block: both start with d, dmin and the 6-bit
// scales; q5_K's fifth bit of value j of sub-block s is bit s of qh[j].
static void dequantize_kmin(const void *blk, int Q5, float *dst) {
    const rm_block_q4_k *h = blk; // the common head
    const rm_block_q5_k *b5 = Q5 ? blk : NULL;
    const uint8_t *qs = Q5 ? b5->qs : h->qs;
    float d = rm_f16_to_f32(h->d), dmin = rm_f16_to_f32(h->dmin);
    for (int s = 0; s < 8; s++) {
        int ls, lm;
        rm_q4k_scale_min(h->scales, s, &ls, &lm);
        float step = d * (float)ls, off = dmin * (float)lm;
        const uint8_t *q = qs + 32 * (s / 2);
        int shift = 4 * (s % 2);
        for (int j = 0; j < 32; j++) {
            int v = ((q[j] >> shift) & 15) | (Q5 ? ((b5->qh[j] >> s) & 1) << 4 : 0);
            dst[32 * s + j] = step * (float)v - off;
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
    case RM_TYPE_Q4_1:
        for (int64_t i = 0; i < n / 32; i++) {
            const rm_block_q4_1 *b = (const rm_block_q4_1 *)src + i;
            dequantize_blk32(rm_f16_to_f32(b->d), rm_f16_to_f32(b->m), b->qs, NULL, dst + 32 * i);
        }
        break;
    case RM_TYPE_Q5_0:
        for (int64_t i = 0; i < n / 32; i++) {
            const rm_block_q5_0 *b = (const rm_block_q5_0 *)src + i;
            float d = rm_f16_to_f32(b->d);
            dequantize_blk32(d, -16.0f * d, b->qs, b->qh, dst + 32 * i);
        }
        break;
    case RM_TYPE_Q5_1:
        for (int64_t i = 0; i < n / 32; i++) {
            const rm_block_q5_1 *b = (const rm_block_q5_1 *)src + i;
            dequantize_blk32(rm_f16_to_f32(b->d), rm_f16_to_f32(b->m), b->qs, b->qh, dst + 32 * i);
        }
        break;
    case RM_TYPE_Q4_K:
        for (int64_t i = 0; i < n / 256; i++) dequantize_kmin((const rm_block_q4_k *)src + i, 0, dst + 256 * i);
        break;
    case RM_TYPE_Q5_K:
        for (int64_t i = 0; i < n / 256; i++) dequantize_kmin((const rm_block_q5_k *)src + i, 1, dst + 256 * i);
        break;
    case RM_TYPE_Q6_K: {
        const rm_block_q6_k *b = src;
        for (int64_t i = 0; i < n / 256; i++) {
            float d = rm_f16_to_f32(b[i].d);
            for (int e = 0; e < 256; e++) {
                int h = e / 128, p = (e % 128) / 32, l = e % 32;
                int lo = (b[i].ql[64 * h + 32 * (p & 1) + l] >> (4 * (p >> 1))) & 15;
                int hi = (b[i].qh[32 * h + l] >> (2 * p)) & 3;
                dst[256 * i + e] = d * (float)b[i].scales[e / 16] * (float)((lo | hi << 4) - 32);
            }
        }
        break;
    }
    case RM_TYPE_Q3_K: {
        const rm_block_q3_k *b = src;
        for (int64_t i = 0; i < n / 256; i++) {
            float d = rm_f16_to_f32(b[i].d);
            int8_t sc[16];
            rm_q3k_scales(b[i].scales, sc);
            for (int e = 0; e < 256; e++) {
                int h = e / 128, p = (e % 128) / 32, l = e % 32;
                int lo = (b[i].qs[32 * h + l] >> (2 * p)) & 3, hi = (b[i].hmask[l] >> (4 * h + p)) & 1;
                dst[256 * i + e] = d * (float)sc[e / 16] * (float)((lo | hi << 2) - 4);
            }
        }
        break;
    }
    case RM_TYPE_Q8_0_R16:
    case RM_TYPE_Q4_0_R16:
    case RM_TYPE_Q4_K_R16: rm_r16_dequantize_row(t, src, dst, n); break;
    }
}
