// batch_avx512.c — AVX-512 LoRA kernels (batch_impl.h; called only after a
// run-time check, the scalar versions in batch.c are the specification).
//
// down: a block of up to 4 terms x 4 rows of A, one 16-lane accumulator per
// (term, row), the tail of `in` masked into the same accumulators, then one
// fixed reduction per dot: a dot's bits do not depend on the block.
// up: 32 outputs x up to 4 terms in registers, the chain over the rank in
// registers, y read and written once (the tail masked).
// From the packed f16 mirrors (adapter.h) each reads one stream.
#include "lora/adapter.h"
#include "lora/batch_impl.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define PF 512 // elements ahead to prefetch (prefetches do not fault past the end)

// 16 values of A or B: f32 at f + i (lanes outside m are 0), or packed f16 at h
INLINE __m512 ld(const int F16, const float *f, const uint16_t *h, int64_t i, __mmask16 m) {
    if (F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
    return _mm512_maskz_loadu_ps(m, f + i);
}

INLINE void down_block(const int F16, const int NT, const int NJ, const float *const *x, const float *c,
                       float *const *t, const float *A, const uint16_t *A16, int64_t in, int j0) {
    __m512 acc[LB_NT][LB_NJ];
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) acc[i][j] = _mm512_setzero_ps();
    const float *af[LB_NJ] = {0};
    const uint16_t *ah[LB_NJ] = {0};
#pragma GCC unroll 4
    for (int j = 0; j < NJ; j++) {
        if (F16) ah[j] = A16 + rm_lora_a16_at(in, j0 + j, 0); // then 64 halves per 16 of k
        else af[j] = A + (size_t)(j0 + j) * (size_t)in;
    }
    int64_t k = 0;
    for (; k + 16 <= in; k += 16) {
        __m512 a[LB_NJ];
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) a[j] = ld(F16, af[j], F16 ? ah[j] + k * 4 : NULL, k, 0xffff);
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) // the rows are short streams: fetch ahead
            _mm_prefetch(F16 ? (const char *)(ah[j] + k * 4 + 4 * PF) : (const char *)(af[j] + k + PF), _MM_HINT_T0);
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            __m512 xv = _mm512_loadu_ps(x[i] + k);
#pragma GCC unroll 4
            for (int j = 0; j < NJ; j++) acc[i][j] = _mm512_fmadd_ps(xv, a[j], acc[i][j]);
        }
    }
    if (k < in) {
        __mmask16 m = (__mmask16)((1u << (in - k)) - 1);
        __m512 a[LB_NJ];
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) a[j] = ld(F16, af[j], F16 ? ah[j] + k * 4 : NULL, k, m);
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x[i] + k);
#pragma GCC unroll 4
            for (int j = 0; j < NJ; j++) acc[i][j] = _mm512_fmadd_ps(xv, a[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) t[i][j0 + j] = c[i] * _mm512_reduce_add_ps(acc[i][j]);
}

// NT specialised, rows in blocks of 4, 2, 1.
INLINE void down_nt(const int F16, const int NT, const float *const *x, const float *c, float *const *t, const float *A,
                    const uint16_t *A16, int64_t in, int j0, int nj) {
    int j = 0;
    for (; j + 4 <= nj; j += 4) down_block(F16, NT, 4, x, c, t, A, A16, in, j0 + j);
    if (j + 2 <= nj) {
        down_block(F16, NT, 2, x, c, t, A, A16, in, j0 + j);
        j += 2;
    }
    if (j < nj) down_block(F16, NT, 1, x, c, t, A, A16, in, j0 + j);
}

#define DOWN(F, N) down_nt(F, N, x, c, t, A, A16, in, j0, nj)
void lora_down_avx512(LB_DOWN_ARGS) { LB_SPECIALISE(A16 != NULL, nt, DOWN); }

INLINE void up_nt(const int F16, const int NT, float *const *y, const float *const *t, const float *B,
                  const uint16_t *B16, int64_t ldb, int r, int j0, int nj, int64_t o0, int64_t o1, int init) {
    for (int64_t o = o0; o < o1; o += 32) {
        int64_t w = o1 - o < 32 ? o1 - o : 32;
        __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
        __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
        __m512 acc[LB_NT][2];
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            acc[i][0] = init ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, y[i] + o);
            acc[i][1] = init ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, y[i] + o + 16);
        }
        const float *bf = F16 ? NULL : B + (size_t)j0 * (size_t)ldb + (size_t)o;
        const uint16_t *bh = F16 ? B16 + rm_lora_b16_at(r, j0, o) : NULL; // then 32 halves per j
        for (int j = 0; j < nj; j++) {
            __m512 b0 = ld(F16, bf, bh, 0, m0), b1 = ld(F16, bf, F16 ? bh + 16 : NULL, 16, m1);
            if (F16) {
                _mm_prefetch((const char *)(bh + 4 * PF), _MM_HINT_T0);
                bh += 32;
            } else {
                _mm_prefetch((const char *)(bf + PF), _MM_HINT_T0);
                bf += ldb;
            }
#pragma GCC unroll 4
            for (int i = 0; i < NT; i++) {
                __m512 tv = _mm512_set1_ps(t[i][j]);
                acc[i][0] = _mm512_fmadd_ps(tv, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(tv, b1, acc[i][1]);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            _mm512_mask_storeu_ps(y[i] + o, m0, acc[i][0]);
            _mm512_mask_storeu_ps(y[i] + o + 16, m1, acc[i][1]);
        }
    }
}

#define UP(F, N) up_nt(F, N, y, t, B, B16, ldb, r, j0, nj, o0, o1, init)
void lora_up_avx512(LB_UP_ARGS) { LB_SPECIALISE(B16 != NULL, nt, UP); }
