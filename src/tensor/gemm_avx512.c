// gemm_avx512.c — the AVX-512 kernels of rm_gemm (bodies in gemm_simd.h;
// compiled with the AVX-512 flags, called only when base/cpu.h reports
// avx512f/bw/vl/dq): register tiles of 12 rows x 32 columns (24 of the 32
// zmm registers accumulate) or 12 x 16 for products at most 16 columns wide
// (attention's per-head ones), and the dot-product kernel four rows at a
// time. Edges use masked loads and stores, which cost no more than plain ones.
#include <immintrin.h>

#include "tensor/gemm.h"

#define VF __m512
#define W 16
#define MASK_T __mmask16
#define MASK(n) ((n) >= 16 ? (__mmask16)0xffff : (n) <= 0 ? (__mmask16)0 : (__mmask16)((1u << (n)) - 1))
#define LOAD(p) _mm512_loadu_ps(p)
#define STORE(p, v) _mm512_storeu_ps(p, v)
#define LOADM(p, m) _mm512_maskz_loadu_ps(m, p)
#define STOREM(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define ZERO() _mm512_setzero_ps()
#define SET1(x) _mm512_set1_ps(x)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define HSUM4(v0, v1, v2, v3) hsum4x16(v0, v1, v2, v3)
#define LOADH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define LOADHM(p, m, n) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p))

// The sums of the four vectors' lanes: {sum v0, sum v1, sum v2, sum v3}.
static inline __attribute__((always_inline)) __m128 hsum4x16(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
    __m256 h0 = _mm256_add_ps(_mm512_castps512_ps256(v0), _mm512_extractf32x8_ps(v0, 1));
    __m256 h1 = _mm256_add_ps(_mm512_castps512_ps256(v1), _mm512_extractf32x8_ps(v1, 1));
    __m256 h2 = _mm256_add_ps(_mm512_castps512_ps256(v2), _mm512_extractf32x8_ps(v2, 1));
    __m256 h3 = _mm256_add_ps(_mm512_castps512_ps256(v3), _mm512_extractf32x8_ps(v3, 1));
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(h0, h1), _mm256_hadd_ps(h2, h3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

#include "tensor/gemm_simd.h"

// C[0:R, 0:nc] (+)= A[0:R, 0:kn] B[0:kn, 0:nc], R <= 12, nc <= 32
void rm_gemm_tile_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                         int64_t bn, int kn, int R, int nc, int load) {
    SIMD_TILE_ROWS(SIMD_TILE_ARGS, 2, 1, 0)
}

// C[0:R, 0:nc] (+)= A[0:R, 0:kn] B[0:kn, 0:nc], R <= 12, nc <= 16
void rm_gemm_tile16_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                           int64_t bn, int kn, int R, int nc, int load) {
    SIMD_TILE_ROWS(SIMD_TILE_ARGS, 1, 1, 0)
}

// The two tiles above over B of f16 values.
void rm_gemm_tile_h_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b,
                           int64_t ldb, int64_t bn, int kn, int R, int nc, int load) {
    SIMD_TILE_ROWS(SIMD_TILE_ARGS, 2, 1, 1)
}
void rm_gemm_tile16_h_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b,
                             int64_t ldb, int64_t bn, int kn, int R, int nc, int load) {
    SIMD_TILE_ROWS(SIMD_TILE_ARGS, 1, 1, 1)
}

// C[i0:i1, 0:n] (+)= A[i0:i1, 0:K] W[0:n, 0:K]^T, n <= 16
void rm_gemm_dots_avx512(float *C, int64_t ldc, const float *A, int64_t lda, const float *W_, int64_t ldw, int i0,
                         int i1, int n, int K, int acc) {
    SIMD_DOTS_BODY(4)
}
