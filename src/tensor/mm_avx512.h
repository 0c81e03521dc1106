// mm_avx512.h — helpers of the AVX-512 matmul kernels (include only from
// files compiled with the AVX-512 flags).
#ifndef RM_TENSOR_MM_AVX512_H
#define RM_TENSOR_MM_AVX512_H
#include <immintrin.h>

// The sum of the 16 lanes, in a fixed order.
static inline __attribute__((always_inline)) float hsum16(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif
