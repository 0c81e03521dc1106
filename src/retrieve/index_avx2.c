// index_avx2.c — AVX2/FMA/F16C versions of the index scoring kernels
// (specification: the scalar kernels in index.c). Rows are a multiple of 32
// elements, zero-padded, so there are no tails.
#include "retrieve/index_kernels.h"

#include <immintrin.h>

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// s[qi][j] = q[qi] . keys[j]
void index_scores_f32_avx2(const float *q, int nq, const float *keys, size_t n, int stride, float *s) {
    for (size_t j = 0; j < n; j++) {
        const float *b = keys + j * (size_t)stride;
        for (int qi = 0; qi < nq; qi++) {
            const float *a = q + (size_t)qi * stride;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < stride; d += 32) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 16), _mm256_loadu_ps(b + d + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 24), _mm256_loadu_ps(b + d + 24), a3);
            }
            s[(size_t)qi * n + j] = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        }
    }
}

static inline __m256 load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

// s[qi][j] = q[qi] . f32(keys[j])
void index_scores_f16_avx2(const float *q, int nq, const uint16_t *keys, size_t n, int stride, float *s) {
    for (size_t j = 0; j < n; j++) {
        const uint16_t *b = keys + j * (size_t)stride;
        for (int qi = 0; qi < nq; qi++) {
            const float *a = q + (size_t)qi * stride;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < stride; d += 32) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), load_f16(b + d), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), load_f16(b + d + 8), a1);
                a2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 16), load_f16(b + d + 16), a2);
                a3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 24), load_f16(b + d + 24), a3);
            }
            s[(size_t)qi * n + j] = hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        }
    }
}

// s[qi][j] = (q8[qi] . keys[j]) * qscale[qi] * kscale[j]
// maddubs wants unsigned x signed: |a| times b carrying a's sign. Values are
// in [-127, 127], so a pair sum (<= 2 * 127 * 127) fits int16.
void index_scores_i8_avx2(const int8_t *q8, const float *qscale, int nq, const int8_t *keys, const float *kscale,
                          size_t n, int stride, float *s) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t j = 0; j < n; j++) {
        const int8_t *b = keys + j * (size_t)stride;
        for (int qi = 0; qi < nq; qi++) {
            const int8_t *a = q8 + (size_t)qi * stride;
            __m256i acc = _mm256_setzero_si256();
            for (int d = 0; d < stride; d += 32) {
                __m256i va = _mm256_loadu_si256((const __m256i *)(a + d));
                __m256i vb = _mm256_loadu_si256((const __m256i *)(b + d));
                __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
            }
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
            s[(size_t)qi * n + j] = (float)_mm_cvtsi128_si32(t) * qscale[qi] * kscale[j];
        }
    }
}
