// batch_avx2.c — AVX2/FMA/F16C LoRA kernels (batch_impl.h; called only after
// a run-time check, the scalar versions in batch.c are the specification).
//
// down: blocks of up to 4 terms x 2 rows of A, one 8-lane accumulator per
// (term, row), one fixed reduction, then the tail of `in` one by one with
// fma: a dot's bits do not depend on the block.
// up: 16 outputs x up to 4 terms in registers, the chain over the rank in
// registers; the tail one by one with the same fma, so every output element
// has the same bits whatever range it falls in.
#include "lora/adapter.h"
#include "lora/batch_impl.h"

#include <immintrin.h>
#include <math.h>

#define INLINE static inline __attribute__((always_inline))

// Where element k of a row of A lies from the row's start in a packed mirror.
INLINE int64_t a16_off(int64_t k) { return (k >> 4) * 64 + (k & 15); }

// 8 values of kind F (lb_w): f32 at f, or 8 packed f16 at h / 8-bit at q
INLINE __m256 ld8p(const int F, const float *f, const uint16_t *h, const int8_t *q) {
    if (F == 2) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
    if (F == 1) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
    return _mm256_loadu_ps(f);
}

// A row of A (f32 at f, or packed at h / q from the row's start) at k
INLINE __m256 ld8(const int F, const float *f, const uint16_t *h, const int8_t *q, int64_t k) {
    return ld8p(F, F ? NULL : f + k, F == 1 ? h + a16_off(k) : NULL, F == 2 ? q + a16_off(k) : NULL);
}

INLINE float ld1(const int F, const float *f, const uint16_t *h, const int8_t *q, int64_t k) {
    return F == 2 ? (float)q[a16_off(k)] : F == 1 ? _cvtsh_ss(h[a16_off(k)]) : f[k];
}

INLINE float hsum8(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

INLINE void down_block(const int F, const int NT, const int NJ, const float *const *x, const float *c, float *const *t,
                       lb_w A, int64_t in, int j0) {
    __m256 acc[LB_NT][2];
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) acc[i][j] = _mm256_setzero_ps();
    const float *af[2] = {0};
    const uint16_t *ah[2] = {0};
    const int8_t *aq[2] = {0};
#pragma GCC unroll 4
    for (int j = 0; j < NJ; j++) {
        if (F == 2) aq[j] = A.q + rm_lora_a16_at(in, j0 + j, 0);
        else if (F == 1) ah[j] = A.h + rm_lora_a16_at(in, j0 + j, 0);
        else af[j] = A.f + (size_t)(j0 + j) * (size_t)in;
    }
    // the packed block of 4 rows these rows lie in: 64 elements per 16 of k
    const char *blk = F == 2   ? (const char *)(A.q + rm_lora_a16_at(in, j0 & ~3, 0))
                      : F == 1 ? (const char *)(A.h + rm_lora_a16_at(in, j0 & ~3, 0))
                               : NULL;
    int64_t k = 0;
    for (; k + 8 <= in; k += 8) {
        if (!(k & 15)) { // a line of the packed block per 16 of k per byte of element
            if (F)
                for (int p = 0; p < LB_ESZ(F); p++)
                    _mm_prefetch(blk + k * 4 * LB_ESZ(F) + LB_PF_A + 64 * p, _MM_HINT_T0);
            else
#pragma GCC unroll 4
                for (int j = 0; j < NJ; j++) _mm_prefetch((const char *)(af[j] + k + LB_PF), _MM_HINT_T0);
        }
        __m256 a[2];
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) a[j] = ld8(F, af[j], ah[j], aq[j], k);
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            __m256 xv = _mm256_loadu_ps(x[i] + k);
#pragma GCC unroll 4
            for (int j = 0; j < NJ; j++) acc[i][j] = _mm256_fmadd_ps(xv, a[j], acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NT; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NJ; j++) {
            float s = hsum8(acc[i][j]);
            for (int64_t q = k; q < in; q++) s = fmaf(x[i][q], ld1(F, af[j], ah[j], aq[j], q), s);
            t[i][j0 + j] = c[i] * (F == 2 ? A.s[j0 + j] * s : s);
        }
}

INLINE void down_nt(const int F, const int NT, const float *const *x, const float *c, float *const *t, lb_w A,
                    int64_t in, int j0, int nj) {
    int j = 0;
    for (; j + 2 <= nj; j += 2) down_block(F, NT, 2, x, c, t, A, in, j0 + j);
    if (j < nj) down_block(F, NT, 1, x, c, t, A, in, j0 + j);
}

#define DOWN(F, N) down_nt(F, N, x, c, t, A, in, j0, nj)
void lora_down_avx2(LB_DOWN_ARGS) { LB_SPECIALISE(lb_kind(A), nt, DOWN); }

// Element (j, o) of B^T of kind F.
INLINE float b1(const int F, lb_w B, int64_t ldb, int r, int j, int64_t o) {
    if (F == 2) return (float)B.q[rm_lora_b16_at(r, j, o)];
    if (F == 1) return _cvtsh_ss(B.h[rm_lora_b16_at(r, j, o)]);
    return B.f[(size_t)j * (size_t)ldb + (size_t)o];
}

INLINE void up_nt(const int F, const int NT, float *const *y, const float *const *t, lb_w B, int64_t ldb, int r,
                  int j0, int nj, int64_t o0, int64_t o1, int init) {
    int64_t o = o0;
    for (; o + 16 <= o1; o += 16) {
        __m256 acc[LB_NT][2];
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            acc[i][0] = init ? _mm256_setzero_ps() : _mm256_loadu_ps(y[i] + o);
            acc[i][1] = init ? _mm256_setzero_ps() : _mm256_loadu_ps(y[i] + o + 8);
        }
        const float *bf = F ? NULL : B.f + (size_t)j0 * (size_t)ldb + (size_t)o;
        const uint16_t *bh = F == 1 ? B.h + rm_lora_b16_at(r, j0, o) : NULL; // then 32 elements per j
        const int8_t *bq = F == 2 ? B.q + rm_lora_b16_at(r, j0, o) : NULL;
        for (int j = 0; j < nj; j++) {
            if (F == 2) _mm_prefetch((const char *)bq + LB_PF_B, _MM_HINT_T0);
            else if (F == 1) _mm_prefetch((const char *)bh + LB_PF_B, _MM_HINT_T0);
            else _mm_prefetch((const char *)(bf + LB_PF), _MM_HINT_T0);
            __m256 b0 = ld8p(F, bf, bh, bq);
            __m256 b1v = ld8p(F, F ? NULL : bf + 8, F == 1 ? bh + 8 : NULL, F == 2 ? bq + 8 : NULL);
            bf += F ? 0 : ldb;
            bh += F == 1 ? 32 : 0;
            bq += F == 2 ? 32 : 0;
#pragma GCC unroll 4
            for (int i = 0; i < NT; i++) {
                __m256 tv = _mm256_set1_ps(t[i][j]);
                acc[i][0] = _mm256_fmadd_ps(tv, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(tv, b1v, acc[i][1]);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < NT; i++) {
            _mm256_storeu_ps(y[i] + o, acc[i][0]);
            _mm256_storeu_ps(y[i] + o + 8, acc[i][1]);
        }
    }
    for (; o < o1; o++)
        for (int i = 0; i < NT; i++) {
            float s = init ? 0.0f : y[i][o];
            for (int j = 0; j < nj; j++) s = fmaf(t[i][j], b1(F, B, ldb, r, j0 + j, o), s);
            y[i][o] = s;
        }
}

#define UP(F, N) up_nt(F, N, y, t, B, ldb, r, j0, nj, o0, o1, init)
void lora_up_avx2(LB_UP_ARGS) { LB_SPECIALISE(lb_kind(B), nt, UP); }
