// batch_avx2.c — AVX2/F16C kernels for f16 LoRA mirrors (called only after
// a run-time check; the scalar versions in batch.c are the specification).
#include "lora/batch_impl.h"

#include <immintrin.h>

// sum_i x[i] * a[i]   x f32, a f16
float lora_dot_f16_avx2(const float *x, const uint16_t *a, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256 a1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i + 8)));
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), a0, s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), a1, s1);
    }
    s0 = _mm256_add_ps(s0, s1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float s = _mm_cvtss_f32(h);
    for (; i < n; i++) s += x[i] * _cvtsh_ss(a[i]);
    return s;
}

// y[i] += t * b[i]   b f16
void lora_axpy_f16_avx2(float *y, float t, const uint16_t *b, int64_t n) {
    __m256 vt = _mm256_set1_ps(t);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 bv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vt, bv, _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) y[i] += t * _cvtsh_ss(b[i]);
}
