// gemm_avx2.c — the AVX2/FMA block kernel of rm_gemm_nn: 6 rows x 16 columns
// of C in 12 registers, one row of B (two vectors) and six broadcasts of A
// per step of k.
#include <immintrin.h>

#include "train/gemm.h"

#define INLINE static inline __attribute__((always_inline))

// C[i:i+R, j:j+16] += A[i:i+R, k0:k1] B[k0:k1, j:j+16], R <= 6 (constant after inlining)
INLINE void tile16(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i, int j,
                   int k0, int k1, const int R) {
    __m256 c[6][2];
    for (int r = 0; r < R; r++) {
        c[r][0] = _mm256_loadu_ps(C + (i + r) * ldc + j);
        c[r][1] = _mm256_loadu_ps(C + (i + r) * ldc + j + 8);
    }
    for (int k = k0; k < k1; k++) {
        __m256 b0 = _mm256_loadu_ps(B + k * ldb + j), b1 = _mm256_loadu_ps(B + k * ldb + j + 8);
        for (int r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(A + (i + r) * lda + k);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(C + (i + r) * ldc + j, c[r][0]);
        _mm256_storeu_ps(C + (i + r) * ldc + j + 8, c[r][1]);
    }
}

// The same for 8 columns.
INLINE void tile8(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i, int j,
                  int k0, int k1, const int R) {
    __m256 c[6];
    for (int r = 0; r < R; r++) c[r] = _mm256_loadu_ps(C + (i + r) * ldc + j);
    for (int k = k0; k < k1; k++) {
        __m256 b0 = _mm256_loadu_ps(B + k * ldb + j);
        for (int r = 0; r < R; r++) c[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + (i + r) * lda + k), b0, c[r]);
    }
    for (int r = 0; r < R; r++) _mm256_storeu_ps(C + (i + r) * ldc + j, c[r]);
}

// name(..., i, R, ...) runs tile with the row count R as a compile-time constant.
#define DEFINE_ROWS(name, tile)                                                                                     \
    static void name(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i, int R, \
                     int j, int k0, int k1) {                                                                       \
        switch (R) {                                                                                                \
        case 6: tile(C, ldc, A, lda, B, ldb, i, j, k0, k1, 6); break;                                               \
        case 5: tile(C, ldc, A, lda, B, ldb, i, j, k0, k1, 5); break;                                               \
        case 4: tile(C, ldc, A, lda, B, ldb, i, j, k0, k1, 4); break;                                               \
        case 3: tile(C, ldc, A, lda, B, ldb, i, j, k0, k1, 3); break;                                               \
        case 2: tile(C, ldc, A, lda, B, ldb, i, j, k0, k1, 2); break;                                               \
        default: tile(C, ldc, A, lda, B, ldb, i, j, k0, k1, 1); break;                                              \
        }                                                                                                           \
    }
DEFINE_ROWS(rows_tile16, tile16)
DEFINE_ROWS(rows_tile8, tile8)

// C[i0:i1, j0:j1] += A[i0:i1, k0:k1] B[k0:k1, j0:j1]
void rm_gemm_block_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i0,
                        int i1, int j0, int j1, int k0, int k1) {
    for (int i = i0; i < i1; i += 6) {
        int R = i1 - i < 6 ? i1 - i : 6, j = j0;
        for (; j + 16 <= j1; j += 16) rows_tile16(C, ldc, A, lda, B, ldb, i, R, j, k0, k1);
        for (; j + 8 <= j1; j += 8) rows_tile8(C, ldc, A, lda, B, ldb, i, R, j, k0, k1);
        for (; j < j1; j++) // the last columns, one at a time
            for (int r = i; r < i + R; r++) {
                float s = C[r * ldc + j];
                for (int k = k0; k < k1; k++) s += A[r * lda + k] * B[k * ldb + j];
                C[r * ldc + j] = s;
            }
    }
}
