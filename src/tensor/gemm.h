// gemm.h — the float products training (and serving's attention) need:
//   C[M,N] (+)= A[M,K] B[K,N]
// where A and B are each read as stored or transposed (rm_gmat), so that
// dx = dy W, dW = dy^T x, y = x W^T and attention's products need no
// transposed copies. The scalar version is the specification; the AVX2 and
// AVX-512 kernels (gemm_avx2.c, gemm_avx512.c) are picked at run time and
// tested against it.
//
// Kernels by shape (rm_gemm picks one):
//   tiles:  register tiles of C (AVX2 6 x 16, AVX-512 12 x 32 or 12 x 16)
//           over B read in place (B stored [K,N] with few rows of C, or K
//           small) or packed into strips (otherwise, and whenever B is
//           stored transposed); each element of C is one chain of FMAs over
//           k in increasing order, from C's value (RM_GEMM_ACC) or 0;
//   dots:   B stored transposed with at most 16 columns (LoRA's x A^T): each
//           element a dot product of two contiguous rows (a tree sum).
// Either way an element's value depends only on its row of A and its column
// of B, never on M, on the other rows or on the threads.
#ifndef RM_TENSOR_GEMM_H
#define RM_TENSOR_GEMM_H
#include <stdint.h>

#include "base/fp16.h"
#include "base/threadpool.h"

// A matrix operand: element (i, j) at p[i*rs + j*cs] (rs or cs is 1).
typedef struct rm_gmat {
    const float *p;
    int64_t rs, cs;
} rm_gmat;
// A row-major matrix with rows ld floats apart, as stored / transposed.
static inline rm_gmat rm_gmat_n(const float *p, int64_t ld) { return (rm_gmat){p, ld, 1}; }
static inline rm_gmat rm_gmat_t(const float *p, int64_t ld) { return (rm_gmat){p, 1, ld}; }

enum {
    RM_GEMM_ACC = 1,     // C += A B (else C = A B)
    RM_GEMM_CAUSAL = 2,  // only C[i,j] with j <= i is wanted: the others may be skipped or written anything
    RM_GEMM_A_LOWER = 4, // the caller promises A[i,k] = 0 for k > i: those terms may be skipped
    RM_GEMM_A_UPPER = 8, // the caller promises A[i,k] = 0 for k < i: those terms may be skipped
};

// C[M,N] (+)= A[M,K] B[K,N], C row-major (rows ldc apart); threads split C.
// tp may be NULL (this thread).
void rm_gemm(rm_threadpool *tp, float *C, int64_t ldc, rm_gmat A, rm_gmat B, int M, int N, int K, unsigned flags);
// Scalar reference of rm_gemm (one thread; computes every element whatever the flags).
void rm_gemm_ref(float *C, int64_t ldc, rm_gmat A, rm_gmat B, int M, int N, int K, unsigned flags);

// C[M,N] += A[M,K] B[K,N], all row-major: rm_gemm with RM_GEMM_ACC.
void rm_gemm_nn(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int M, int N, int K);
// Scalar reference of rm_gemm_nn (one thread).
void rm_gemm_nn_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int M, int N,
                    int K);
// C[M,N] += A[M,K] B[K,N] with B row-major f16 values (attention over a
// half-precision KV cache): each element of B becomes its float exactly and
// every element of C is the chain rm_gemm_nn computes with that float B, so
// the result is bitwise rm_gemm_nn's on B converted.
void rm_gemm_nn_bh(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const rm_f16 *B, int64_t ldb,
                   int M, int N, int K);
// C[M,N] += A[M,K] B[K,N] with B in strips of 32 columns (a KV cache's keys
// laid out for streaming): element (k, j) at B[(j / 32) * ss + k * 32 + j % 32],
// f32 values or (b_f16) f16 ones; each element of C is the chain rm_gemm_nn
// computes on B as floats, so the bits are the same as for B row-major.
void rm_gemm_nn_strips(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const void *B, int b_f16,
                       int64_t ss, int M, int N, int K);
// dst[cols, rows] = src[rows, cols]^T (src rows lds apart), threads split dst rows.
void rm_transpose(rm_threadpool *tp, float *dst, const float *src, int64_t lds, int rows, int cols);

// ---- kernels (internal to gemm*.c; declared here for the ISA files)

// One register tile: C[0:R, 0:nc] = (load ? C : 0) + sum_{k<kn} A(r,k) B(k,c),
// A(r,k) = a[r*ars + k*acs], B(k,c) = b[k*ldb + c]; R <= the kernel's rows,
// nc <= its columns (only those columns of B and C are touched).
typedef void (*rm_gemm_tile_fn)(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b,
                                int64_t ldb, int64_t bn, int kn, int R, int nc, int load);
void rm_gemm_tile_avx2(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                       int64_t bn, int kn, int R, int nc, int load); // 6 x 16
void rm_gemm_tile_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                         int64_t bn, int kn, int R, int nc, int load); // 12 x 32
void rm_gemm_tile16_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                           int64_t bn, int kn, int R, int nc, int load); // 12 x 16
// The same tiles over B of f16 values (ldb in elements).
typedef void (*rm_gemm_tile_h_fn)(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b,
                                  int64_t ldb, int64_t bn, int kn, int R, int nc, int load);
void rm_gemm_tile_h_avx2(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b, int64_t ldb,
                         int64_t bn, int kn, int R, int nc, int load); // 6 x 16
void rm_gemm_tile_h_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b,
                           int64_t ldb, int64_t bn, int kn, int R, int nc, int load); // 12 x 32
void rm_gemm_tile16_h_avx512(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b,
                             int64_t ldb, int64_t bn, int kn, int R, int nc, int load); // 12 x 16
// Rows i0..i1 of C[M,n] (+)= A[M,K] W[n,K]^T, n <= 16, A and W row-major:
// each element a dot product of a row of A and a row of W.
typedef void (*rm_gemm_dots_fn)(float *C, int64_t ldc, const float *A, int64_t lda, const float *W, int64_t ldw, int i0,
                                int i1, int n, int K, int acc);
void rm_gemm_dots_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *W, int64_t ldw, int i0, int i1,
                       int n, int K, int acc);
void rm_gemm_dots_avx512(float *C, int64_t ldc, const float *A, int64_t lda, const float *W, int64_t ldw, int i0,
                         int i1, int n, int K, int acc);
#endif
