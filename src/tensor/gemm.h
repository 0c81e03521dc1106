// gemm.h — the "no transpose" product training's backward pass needs:
//   C[M,N] += A[M,K] B[K,N]      (all row-major, with leading dimensions)
// rm_matmul (tensor/) computes x W^T; this one gives dx = dy W and, with dy
// transposed once, dW = dy^T x, without materialising transposed weights.
// The scalar version is the specification; the AVX2 one (gemm_avx2.c) is
// picked at run time and tested against it.
#ifndef RM_TENSOR_GEMM_H
#define RM_TENSOR_GEMM_H
#include <stdint.h>

#include "base/threadpool.h"

// C[M,N] += A[M,K] B[K,N]; threads split C. tp may be NULL.
void rm_gemm_nn(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int M, int N, int K);
// Scalar reference of rm_gemm_nn (one thread).
void rm_gemm_nn_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int M, int N,
                    int K);
// dst[cols, rows] = src[rows, cols]^T (src rows lds apart), threads split dst rows.
void rm_transpose(rm_threadpool *tp, float *dst, const float *src, int64_t lds, int rows, int cols);

// The AVX2 block kernel: C[i0:i1, j0:j1] += A[i0:i1, k0:k1] B[k0:k1, j0:j1].
void rm_gemm_block_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i0,
                        int i1, int j0, int j1, int k0, int k1);
// The same with B[k0:k0+kn, j0:j0+16*n_strips] packed in strips of 16 columns,
// k-major (strip s at Bp + s*kn*16), 32-byte aligned.
void rm_gemm_packed_avx2(float *C, int64_t ldc, const float *A, int64_t lda, const float *Bp, int i0, int i1, int j0,
                         int n_strips, int k0, int kn);
#endif
