// batch_avx512.c — AVX-512 LoRA kernels (batch_impl.h; called only after a
// run-time check, the scalar versions in batch.c are the specification).
//
// down: a block of up to 4 terms x 4 rows of A, one 16-lane accumulator per
// (term, row), the tail of `in` masked into the same accumulators, then one
// fixed reduction per dot: a dot's bits do not depend on the block.
// up: 32 outputs x up to 4 terms in registers, the chain over the rank in
// registers, y read and written once (the tail masked).
// From the packed f16 and 8-bit mirrors (adapter.h) each reads one stream.
#include "lora/adapter.h"
#include "lora/batch_impl.h"

#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))

// 16 values of A or B (kind F, lb_w): f32 at w.f + i (lanes outside m are 0),
// or 16 packed f16 at h / 8-bit at q (the padding is there, no mask needed).
INLINE __m512 ld(const int F, const float *f, const void *p, int64_t i, __mmask16 m) {
    if (F == 2) return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
    if (F == 1) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_maskz_loadu_ps(m, f + i);
}

INLINE void down_block(const int F, const int NT, const int NJ, const float *const *x, const float *c, float *const *t,
                       lb_w A, int64_t in, int j0) {
    __m512 acc[LB_NT][LB_NJ];
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) acc[i][j] = _mm512_setzero_ps();
    const float *af[LB_NJ] = {0};
    const char *ap[LB_NJ] = {0}; // packed: then 64 elements per 16 of k
#pragma GCC unroll 4
    for (int j = 0; j < NJ; j++) {
        if (F == 2) ap[j] = (const char *)(A.q + rm_lora_a16_at(in, j0 + j, 0));
        else if (F == 1) ap[j] = (const char *)(A.h + rm_lora_a16_at(in, j0 + j, 0));
        else af[j] = A.f + (size_t)(j0 + j) * (size_t)in;
    }
    int64_t k = 0;
    for (; k + 16 <= in; k += 16) {
        __m512 a[LB_NJ];
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) a[j] = ld(F, af[j], F ? ap[j] + k * 4 * LB_ESZ(F) : NULL, k, 0xffff);
        if (F) // the packed rows are one stream, 64 elements a step: fetch its lines ahead
            for (int p = 0; p < LB_ESZ(F); p++) _mm_prefetch(ap[0] + k * 4 * LB_ESZ(F) + LB_PF_A + 64 * p, _MM_HINT_T0);
        else
#pragma GCC unroll 4
            for (int j = 0; j < NJ; j++) _mm_prefetch((const char *)(af[j] + k + LB_PF), _MM_HINT_T0);
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
        for (int j = 0; j < NJ; j++) a[j] = ld(F, af[j], F ? ap[j] + k * 4 * LB_ESZ(F) : NULL, k, m);
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
        for (int j = 0; j < NJ; j++) {
            float d = _mm512_reduce_add_ps(acc[i][j]);
            t[i][j0 + j] = c[i] * (F == 2 ? A.s[j0 + j] * d : d);
        }
}

// NT specialised, rows in blocks of 4, 2, 1.
INLINE void down_nt(const int F, const int NT, const float *const *x, const float *c, float *const *t, lb_w A,
                    int64_t in, int j0, int nj) {
    int j = 0;
    for (; j + 4 <= nj; j += 4) down_block(F, NT, 4, x, c, t, A, in, j0 + j);
    if (j + 2 <= nj) {
        down_block(F, NT, 2, x, c, t, A, in, j0 + j);
        j += 2;
    }
    if (j < nj) down_block(F, NT, 1, x, c, t, A, in, j0 + j);
}

#define DOWN(F, N) down_nt(F, N, x, c, t, A, in, j0, nj)
void lora_down_avx512(LB_DOWN_ARGS) { LB_SPECIALISE(lb_kind(A), nt, DOWN); }

INLINE void up_nt(const int F, const int NT, float *const *y, const float *const *t, lb_w B, int64_t ldb, int r,
                  int j0, int nj, int64_t o0, int64_t o1, int init) {
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
        const float *bf = F ? NULL : B.f + (size_t)j0 * (size_t)ldb + (size_t)o;
        const char *bp = F == 2   ? (const char *)(B.q + rm_lora_b16_at(r, j0, o))
                         : F == 1 ? (const char *)(B.h + rm_lora_b16_at(r, j0, o))
                                  : NULL; // then 32 elements per j
        for (int j = 0; j < nj; j++) {
            __m512 b0 = ld(F, bf, bp, 0, m0), b1 = ld(F, bf, F ? bp + 16 * LB_ESZ(F) : NULL, 16, m1);
            if (F) {
                _mm_prefetch(bp + LB_PF_B, _MM_HINT_T0);
                bp += 32 * LB_ESZ(F);
            } else {
                _mm_prefetch((const char *)(bf + LB_PF), _MM_HINT_T0);
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

#define UP(F, N) up_nt(F, N, y, t, B, ldb, r, j0, nj, o0, o1, init)
void lora_up_avx512(LB_UP_ARGS) { LB_SPECIALISE(lb_kind(B), nt, UP); }
