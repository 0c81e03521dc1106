// matmul_avx512bf16.c — bf16 weights x bf16 activations with vdpbf16ps
// (AVX512_BF16; called only when base/cpu.h reports avx512bf16, the bf16
// copy of the activations made once per call by rm_x_to_bf16_avx512).
//
// Each vdpbf16ps adds 32 products (pairs of bf16, exact in f32) to the 16 f32
// lanes, twice the multiply-adds of an f32 FMA, and the weights need no
// widening. The activations are rounded to bf16 (to nearest even) first,
// which is what this family trades for the speed: a relative 2^-9 per
// activation, as the weights already have. Tiles of 4 x 4 as the f32 kernels;
// a row's last in % 32 elements are masked in, the activation copy is padded
// with zeros to 32, so every (r, c) dot is the same sequence of operations
// whatever the tile.
#include "tensor/mm_tile.h"
#include "tensor/mm_avx512.h"

#include <immintrin.h>

INLINE void tile_bf16dp(const rm_mm *m, int64_t r, int c, const int RR, const int CC) {
    const uint16_t *w[4], *x[4];
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++) w[i] = (const uint16_t *)(m->w + (size_t)(r + i) * m->w_row);
#pragma GCC unroll 4
    for (int j = 0; j < CC; j++) {
        x[j] = m->xh + (int64_t)(c + j) * m->ldxh;
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) acc[i][j] = _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < m->in; k += 32) {
        __mmask32 mk = m->in - k >= 32 ? 0xffffffffu : (__mmask32)((1u << (m->in - k)) - 1);
        __m512bh wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            prefetch_next_rows(m, w[i] + k, RR);
            wv[i] = (__m512bh)_mm512_maskz_loadu_epi16(mk, w[i] + k);
        }
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            __m512bh xv = (__m512bh)_mm512_load_si512((const void *)(x[j] + k));
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) rm_mm_store(m, c + j, r + i, hsum16(acc[i][j]));
}

#define TILE_BF16DP(m, r, c, RR, CC, aux, P) tile_bf16dp(m, r, c, RR, CC)
// y[n,out] = x[n,in] @ W[out,in]^T, W bf16, x its bf16 copy (m->xh)
DEFINE_DRIVER(rm_mm_bf16dp_avx512, TILE_BF16DP, NO_PREP, 4, 4, WALK_NONE)

// Rows [c0, c1) of m->x rounded to bf16 (to nearest even; a NaN stays a NaN)
// into m->xh, each row padded with zeros to a multiple of 32.
void rm_x_to_bf16_avx512(const rm_mm *m, int c0, int c1) {
    const int64_t in32 = (m->in + 31) & ~(int64_t)31;
    for (int c = c0; c < c1; c++) {
        const float *x = m->x + (int64_t)c * m->ldx;
        uint16_t *h = (uint16_t *)m->xh + (int64_t)c * m->ldxh;
        for (int64_t k = 0; k < in32; k += 32) {
            __mmask16 m0 = m->in - k >= 16 ? 0xffff : m->in > k ? (__mmask16)((1u << (m->in - k)) - 1) : 0;
            __mmask16 m1 = m->in - k >= 32 ? 0xffff
                           : m->in > k + 16 ? (__mmask16)((1u << (m->in - k - 16)) - 1)
                                            : 0;
            __m512 a = _mm512_maskz_loadu_ps(m0, x + k), b = _mm512_maskz_loadu_ps(m1, x + k + 16);
            _mm512_store_si512((void *)(h + k), (__m512i)_mm512_cvtne2ps_pbh(b, a));
        }
    }
}

// iters x 10 independent vdpbf16ps chains in registers (32 bf16 products, 64
// flops, each): the family's compute ceiling for `ramole bench`.
float rm_bf16_peak_avx512(long iters) {
    __m512 acc[10];
#pragma GCC unroll 10
    for (int c = 0; c < 10; c++) acc[c] = _mm512_set1_ps((float)c);
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3c00); // 1, 2^-7
    for (long i = 0; i < iters; i++) {
#pragma GCC unroll 10
        for (int c = 0; c < 10; c++) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
        __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[5])); // keep the loop
    }
    __m512 s = acc[0];
#pragma GCC unroll 10
    for (int c = 1; c < 10; c++) s = _mm512_add_ps(s, acc[c]);
    return hsum16(s);
}
