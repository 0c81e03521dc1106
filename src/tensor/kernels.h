// kernels.h — internals shared by the tensor module: GGUF block structs, the
// quantized-activation buffer, and the per-ISA matmul kernels.
#ifndef RM_TENSOR_KERNELS_H
#define RM_TENSOR_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

typedef struct {
    uint16_t d;
    int8_t qs[32];
} rm_block_q8_0;
typedef struct {
    uint16_t d;
    uint8_t qs[16];
} rm_block_q4_0;
typedef struct {
    uint16_t d, m;
    uint8_t qs[16];
} rm_block_q4_1;
typedef struct {
    uint16_t d;
    uint8_t qh[4]; // bit j of the little-endian word: the fifth bit of value j
    uint8_t qs[16];
} rm_block_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} rm_block_q5_1;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} rm_block_q4_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; // as q4_K's
    uint8_t qh[32];     // bit s of qh[j]: the fifth bit of value j of sub-block s
    uint8_t qs[128];    // low four bits, as q4_K's nibbles
} rm_block_q5_k;
typedef struct {
    uint8_t hmask[32];  // bit 4h+p of hmask[l]: the third bit of value 128h + 32p + l
    uint8_t qs[64];     // low two bits: (qs[32h + l] >> 2p) & 3
    uint8_t scales[12]; // 16 six-bit scales, packed (rm_q3k_scales)
    uint16_t d;
} rm_block_q3_k;
typedef struct {
    uint8_t ql[128];   // low four bits
    uint8_t qh[64];    // high two bits
    int8_t scales[16]; // one per 16 values
    uint16_t d;
} rm_block_q6_k;
_Static_assert(sizeof(rm_block_q8_0) == 34, "q8_0 block is 34 bytes");
_Static_assert(sizeof(rm_block_q5_k) == 176, "q5_K block is 176 bytes");
_Static_assert(sizeof(rm_block_q6_k) == 210, "q6_K block is 210 bytes");
_Static_assert(sizeof(rm_block_q3_k) == 110, "q3_K block is 110 bytes");
_Static_assert(sizeof(rm_block_q4_0) == 18, "q4_0 block is 18 bytes");
_Static_assert(sizeof(rm_block_q4_1) == 20 && sizeof(rm_block_q5_0) == 22 && sizeof(rm_block_q5_1) == 24,
               "q4_1 / q5_0 / q5_1 blocks are 20 / 22 / 24 bytes");
_Static_assert(sizeof(rm_block_q4_k) == 144, "q4_K block is 144 bytes");

// The 16 scales of a q3_K block, each 6 bits less 32 (-32..31): the low four
// bits of scale j are the low (j < 8) or high nibble of sc[j % 8], the high two
// bits 2(j/4)..2(j/4)+1 of sc[8 + j % 4].
static inline void rm_q3k_scales(const uint8_t *sc, int8_t *out) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4, hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((lo | hi << 4) - 32);
    }
}

// Unpacks the 6-bit scale ls and min lm of sub-block s (0..7) of a q4_K block:
//   s < 4:  ls = sc[s] & 63,                            lm = sc[s+4] & 63
//   s >= 4: ls = (sc[s+4] & 15) | (sc[s-4] >> 6) << 4,  lm = (sc[s+4] >> 4) | (sc[s] >> 6) << 4
static inline void rm_q4k_scale_min(const uint8_t *sc, int s, int *ls, int *lm) {
    if (s < 4) {
        *ls = sc[s] & 63;
        *lm = sc[s + 4] & 63;
    } else {
        *ls = (sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4);
        *lm = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
    }
}

// Activations quantized to int8: row c, element i is q[c*in + i]; every `blk`
// elements (32 for q8_0/q4_0 weights, 256 for q4_K/q5_K/q6_K) share the scale
// d[c*(in/blk) + b] = amax/127; sum[c*(in/32) + k] is the sum of q over the
// k-th group of 32 (for the offset terms of q4_0 and q4_K).
//
// The AVX-512 q8_0 / q4_0 / q4_K kernels read a second copy made from it
// (rm_qx_t16_avx512), in groups of 16 blocks of 32: for row c and group G,
// tq + (c*groups + G)*512 holds 8 vectors of 64 bytes, vector g's 4-byte
// lane l being bytes 4g..4g+3 of block 16G+l (zeros past the last block);
// td and ts hold the 16 blocks' scales (with blk 256, the scale of the
// block's super-block) and sums at (c*groups + G)*16.
typedef struct rm_qx {
    int blk;
    int8_t *q;
    float *d;
    int16_t *sum;
    int64_t groups; // 0: no 16-block copy
    int8_t *tq;
    float *td;
    int16_t *ts;
} rm_qx;

// One matmul call, as the kernels see it.
typedef struct rm_mm {
    rm_type type;
    const uint8_t *w; // W rows, w_row bytes apart
    size_t w_row;
    int64_t in, out;
    int n;
    const float *x; // f32 activations (float kernels)
    int64_t ldx;
    rm_qx qx; // int8 activations (quantized kernels)
    const uint16_t *xh; // bf16 activations (the bf16-dot kernel): row c at xh + c * ldxh, zero-padded to 32
    int64_t ldxh;
    float *y;
    int64_t ldy;
    int accumulate;
} rm_mm;

// Computes y[c, r] for weight rows r in [r0, r1) and activation rows c in
// [c0, c1). Every (r, c) dot is computed by the same sequence of operations
// whatever the range, so any split across threads gives identical bits.
typedef void (*rm_mm_kernel)(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);

// Writes y (or adds to it).
static inline void rm_mm_store(const rm_mm *m, int c, int64_t r, float v) {
    float *p = m->y + (int64_t)c * m->ldy + r;
    *p = m->accumulate ? *p + v : v;
}

// Quantizes activation rows [c0, c1) of m->x into m->qx (the scalar version;
// rm_quantize_x_avx2 gives the same bytes).
void rm_quantize_x(const rm_mm *m, int c0, int c1);

void rm_mm_f32_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_f16_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_bf16_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q8_0_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_0_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_1_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q5_0_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q5_1_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_k_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q5_k_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q6_k_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q3_k_avx2(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
// SiLU's exponential, exp(x) for x clamped to [RM_EXP_LO, RM_EXP_HI]: x = n ln2
// + r with n = round(x log2 e) and ln2 in two parts (|r| <= ln2 / 2), e^r by
// its Taylor polynomial to degree 7 in Horner form (one FMA a step), then n
// added to the exponent field (2^n is a normal float for every n the clamp
// lets through). Every ISA runs these steps in this order with the same
// roundings, so rm_silu_mul_f32 and rm_exp_sum_f32 give the same bits on each.
#define RM_EXP_LO (-86.0f)
#define RM_EXP_HI 88.0f
#define RM_EXP_LOG2E 1.44269504f
#define RM_EXP_LN2_HI 0.693359375f      // 0x3f318000: n * RM_EXP_LN2_HI is exact
#define RM_EXP_LN2_LO (-2.12194440e-4f) // ln2 - RM_EXP_LN2_HI
#define RM_EXP_TAYLOR {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}
float rm_dot_f32_avx2(const float *a, const float *b, int64_t n);
void rm_silu_mul_f32_avx2(float *h, const float *g, const float *u, int64_t n);
float rm_exp_sum_f32_avx2(float *s, int64_t n, float mx);
float rm_scale_max_f32_avx2(float *s, int64_t n, float c);
void rm_scale_f32_avx2(float *s, int64_t n, float c);
void rm_axpy_f32_avx2(float *y, float a, const float *x, int64_t n);
double rm_sum_f32_avx2(const float *a, int64_t n);
void rm_quantize_x_avx2(const rm_mm *m, int c0, int c1);
// iters x 10 int8 blocks of 32 in registers (see matmul_avx2.c); full = 1 the
// q8_0 kernel's per-pair sequence, 0 the bare maddubs + madd.
float rm_int8_peak_avx2(long iters, int full);

void rm_mm_f16_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_bf16_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
// the quantized AVX-512 kernels need VNNI (vpdpbusd, vpdpwssd)
void rm_mm_q8_0_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_0_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_1_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q5_0_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q5_1_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_k_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q5_k_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q6_k_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q3_k_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
float rm_dot_f32_avx512(const float *a, const float *b, int64_t n);
void rm_silu_mul_f32_avx512(float *h, const float *g, const float *u, int64_t n);
float rm_exp_sum_f32_avx512(float *s, int64_t n, float mx);
float rm_scale_max_f32_avx512(float *s, int64_t n, float c);
void rm_scale_f32_avx512(float *s, int64_t n, float c);
// iters x 10 steps in registers; full = 1 the q8_0 kernel's step (512 int8
// products), 0 vpdpbusd alone (64).
float rm_int8_peak_avx512(long iters, int full);
// The same on weights in the r16 layout (repack.c).
void rm_mm_q8_0_r16_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_0_r16_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_mm_q4_k_r16_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
// The 32-byte tail of a q4_K r16 group (repack.c) from its two super-blocks.
void rm_k16_tail(const void *two, uint8_t *t);
// Rows [r0, r1) of a q8_0 / q4_0 / q4_K matrix (rows w_row bytes apart, `in`
// elements) into the r16 layout in place; tmp: scratch of one row.
void rm_r16_pack_rows_avx512(int base, uint8_t *w, size_t w_row, int64_t in, int64_t r0, int64_t r1, uint8_t *tmp);
// Fills the 16-block copy (qx.tq, td, ts) of activation rows [c0, c1).
void rm_qx_t16_avx512(const rm_mm *m, int c0, int c1);
// bf16 weights x bf16 activations (vdpbf16ps; needs avx512bf16 too), and the
// activations' bf16 copy (rows [c0, c1) of x into xh, to nearest even).
void rm_mm_bf16dp_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);
void rm_x_to_bf16_avx512(const rm_mm *m, int c0, int c1);
// iters x 10 vdpbf16ps in registers (rm_measure_bf16_peak).
float rm_bf16_peak_avx512(long iters);
#endif
