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

// One 32-byte step of u8 key x s8 query: pair products summed to int32 lanes.
static inline __m256i dot32(__m256i acc, const uint8_t *k, __m256i q, __m256i ones) {
    return _mm256_add_epi32(acc,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)k), q), ones));
}

static inline int32_t hsum_i32(__m256i v) {
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    return _mm_cvtsi128_si32(t);
}

// s[qi][j] = (u8[j] . q8[qi] - 128 qsum[qi]) * qscale[qi] * kscale[j]
// Four keys at a time share each query load and one horizontal reduction.
void index_scores_i8_avx2(const int8_t *q8, const int32_t *qsum, const float *qscale, int nq, const uint8_t *keys,
                          const float *kscale, size_t n, int stride, float *s) {
    const __m256i ones = _mm256_set1_epi16(1);
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const uint8_t *b0 = keys + j * (size_t)stride, *b1 = b0 + stride, *b2 = b1 + stride, *b3 = b2 + stride;
        for (int qi = 0; qi < nq; qi++) {
            const int8_t *a = q8 + (size_t)qi * stride;
            __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
            for (int d = 0; d < stride; d += 32) {
                __m256i va = _mm256_loadu_si256((const __m256i *)(a + d));
                c0 = dot32(c0, b0 + d, va, ones);
                c1 = dot32(c1, b1 + d, va, ones);
                c2 = dot32(c2, b2 + d, va, ones);
                c3 = dot32(c3, b3 + d, va, ones);
            }
            // [sum c0, sum c1, sum c2, sum c3]
            __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(c0, c1), _mm256_hadd_epi32(c2, c3));
            __m128i r = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            int32_t v[4];
            _mm_storeu_si128((__m128i *)v, r);
            for (int t = 0; t < 4; t++)
                s[(size_t)qi * n + j + t] = (float)(v[t] - 128 * qsum[qi]) * qscale[qi] * kscale[j + t];
        }
    }
    for (; j < n; j++) {
        const uint8_t *b = keys + j * (size_t)stride;
        for (int qi = 0; qi < nq; qi++) {
            const int8_t *a = q8 + (size_t)qi * stride;
            __m256i c = _mm256_setzero_si256();
            for (int d = 0; d < stride; d += 32)
                c = dot32(c, b + d, _mm256_loadu_si256((const __m256i *)(a + d)), ones);
            s[(size_t)qi * n + j] = (float)(hsum_i32(c) - 128 * qsum[qi]) * qscale[qi] * kscale[j];
        }
    }
}
