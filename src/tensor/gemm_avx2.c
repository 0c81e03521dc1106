// gemm_avx2.c — the AVX2/FMA block kernel of rm_gemm_nn: 6 rows x 16 columns
// of C in 12 registers, one row of B (two vectors) and six broadcasts of A
// per step of k.
#include <immintrin.h>
#include <math.h>

#include "tensor/gemm.h"

#define INLINE static inline __attribute__((always_inline))
// The row loops below are unrolled so that C's tile lives in registers (at -O2
// GCC would otherwise keep the array on the stack).

// C[i:i+R, j:j+16] += A[i:i+R, k0:k1] B[k0:k1, j:j+16], R <= 6 (constant after inlining)
INLINE void tile16(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i, int j,
                   int k0, int k1, const int R) {
    __m256 c[6][2];
    #pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        c[r][0] = _mm256_loadu_ps(C + (i + r) * ldc + j);
        c[r][1] = _mm256_loadu_ps(C + (i + r) * ldc + j + 8);
    }
    for (int k = k0; k < k1; k++) {
        __m256 b0 = _mm256_loadu_ps(B + k * ldb + j), b1 = _mm256_loadu_ps(B + k * ldb + j + 8);
        #pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m256 a = _mm256_broadcast_ss(A + (i + r) * lda + k);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    #pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(C + (i + r) * ldc + j, c[r][0]);
        _mm256_storeu_ps(C + (i + r) * ldc + j + 8, c[r][1]);
    }
}

// The same for 8 columns.
INLINE void tile8(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i, int j,
                  int k0, int k1, const int R) {
    __m256 c[6];
    #pragma GCC unroll 6
    for (int r = 0; r < R; r++) c[r] = _mm256_loadu_ps(C + (i + r) * ldc + j);
    for (int k = k0; k < k1; k++) {
        __m256 b0 = _mm256_loadu_ps(B + k * ldb + j);
        #pragma GCC unroll 6
        for (int r = 0; r < R; r++) c[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(A + (i + r) * lda + k), b0, c[r]);
    }
    #pragma GCC unroll 6
    for (int r = 0; r < R; r++) _mm256_storeu_ps(C + (i + r) * ldc + j, c[r]);
}

// Packed B: a strip of 16 columns stored k-major (Bp[k*16 + c]), contiguous,
// so that the 16-float rows the kernel reads never collide in L1.
INLINE void ptile16(float *C, int64_t ldc, const float *A, int64_t lda, const float *Bp, int i, int j, int k0, int kn,
                    const int R) {
    __m256 c[6][2];
    #pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        c[r][0] = _mm256_loadu_ps(C + (i + r) * ldc + j);
        c[r][1] = _mm256_loadu_ps(C + (i + r) * ldc + j + 8);
    }
    const float *a = A + i * lda + k0;
    for (int k = 0; k < kn; k++) {
        __m256 b0 = _mm256_load_ps(Bp + k * 16), b1 = _mm256_load_ps(Bp + k * 16 + 8);
        #pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * lda + k);
            c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
        }
    }
    #pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(C + (i + r) * ldc + j, c[r][0]);
        _mm256_storeu_ps(C + (i + r) * ldc + j + 8, c[r][1]);
    }
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

// C[i0:i1, j0:j0+16*n_strips] += A[i0:i1, k0:k0+kn] Bp, Bp = n_strips packed strips
// of kn x 16 (32-byte aligned); 6 rows at a time, every strip per row block.
void rm_gemm_packed_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *Bp, int i0, int i1, int j0,
                         int n_strips, int k0, int kn) {
    for (int i = i0; i < i1; i += 6) {
        int R = i1 - i < 6 ? i1 - i : 6;
        for (int s = 0; s < n_strips; s++) {
            const float *b = Bp + (size_t)s * kn * 16;
            int j = j0 + 16 * s;
            switch (R) {
            case 6: ptile16(C, ldc, A, lda, b, i, j, k0, kn, 6); break;
            case 5: ptile16(C, ldc, A, lda, b, i, j, k0, kn, 5); break;
            case 4: ptile16(C, ldc, A, lda, b, i, j, k0, kn, 4); break;
            case 3: ptile16(C, ldc, A, lda, b, i, j, k0, kn, 3); break;
            case 2: ptile16(C, ldc, A, lda, b, i, j, k0, kn, 2); break;
            default: ptile16(C, ldc, A, lda, b, i, j, k0, kn, 1); break;
            }
        }
    }
}

// C[i0:i1, j0:j1] += A[i0:i1, k0:k1] B[k0:k1, j0:j1]
void rm_gemm_block_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i0,
                        int i1, int j0, int j1, int k0, int k1) {
    for (int i = i0; i < i1; i += 6) {
        int R = i1 - i < 6 ? i1 - i : 6, j = j0;
        for (; j + 16 <= j1; j += 16) rows_tile16(C, ldc, A, lda, B, ldb, i, R, j, k0, k1);
        for (; j + 8 <= j1; j += 8) rows_tile8(C, ldc, A, lda, B, ldb, i, R, j, k0, k1);
        for (; j < j1; j++) // the last columns, one at a time
            for (int r = i; r < i + R; r++) {
                float s = C[r * ldc + j]; // fused like the vector path, so a column's bits do not depend on the tiling
                for (int k = k0; k < k1; k++) s = fmaf(A[r * lda + k], B[k * ldb + j], s);
                C[r * ldc + j] = s;
            }
    }
}
