// gemm_avx2.c — the AVX2/FMA kernels of rm_gemm (bodies in gemm_simd.h): a
// 6 x 16 register tile (12 accumulators; per step of k one row of B in two
// vectors and six broadcasts of A) and the dot-product kernel for narrow
// products with B stored transposed, two rows at a time.
#include <immintrin.h>

#include "tensor/gemm.h"

#define VF __m256
#define W 8
#define MASK_T __m256i
#define MASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define LOAD(p) _mm256_loadu_ps(p)
#define STORE(p, v) _mm256_storeu_ps(p, v)
#define LOADM(p, m) _mm256_maskload_ps(p, m)
#define STOREM(p, m, v) _mm256_maskstore_ps(p, m, v)
#define ZERO() _mm256_setzero_ps()
#define SET1(x) _mm256_set1_ps(x)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define HSUM4(v0, v1, v2, v3) hsum4x8(v0, v1, v2, v3)
#define LOADH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define LOADHM(p, m, n) loadh_part(p, n)

// The first n (may be <= 0 or >= 8) of the 8 f16 values at p as floats, zeros after:
// AVX2 has no masked load of 16-bit elements, and reading past n could leave the buffer.
static inline __attribute__((always_inline)) __m256 loadh_part(const rm_f16 *p, int n) {
    if (n >= 8) return LOADH(p);
    rm_f16 t[8] = {0};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return LOADH(t);
}

// The sums of the four vectors' lanes: {sum v0, sum v1, sum v2, sum v3}.
static inline __attribute__((always_inline)) __m128 hsum4x8(__m256 v0, __m256 v1, __m256 v2, __m256 v3) {
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(v0, v1), _mm256_hadd_ps(v2, v3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

#include "tensor/gemm_simd.h"

// C[0:R, 0:nc] (+)= A[0:R, 0:kn] B[0:kn, 0:nc], R <= 6, nc <= 16 (masked
// loads and stores, slow on AMD before Zen 4, only at the right edge)
void rm_gemm_tile_avx2(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                       int64_t bn, int kn, int R, int nc, int load) {
    if (nc >= 16) {
        SIMD_TILE_ROWS(SIMD_TILE_ARGS, 2, 0, 0)
    } else {
        SIMD_TILE_ROWS(SIMD_TILE_ARGS, 2, 1, 0)
    }
}

// The tile above over B of f16 values.
void rm_gemm_tile_h_avx2(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b, int64_t ldb,
                         int64_t bn, int kn, int R, int nc, int load) {
    if (nc >= 16) {
        SIMD_TILE_ROWS(SIMD_TILE_ARGS, 2, 0, 1)
    } else {
        SIMD_TILE_ROWS(SIMD_TILE_ARGS, 2, 1, 1)
    }
}

// C[i0:i1, 0:n] (+)= A[i0:i1, 0:K] W[0:n, 0:K]^T, n <= 16
void rm_gemm_dots_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *W_, int64_t ldw, int i0, int i1,
                       int n, int K, int acc) {
    SIMD_DOTS_BODY(2)
}
