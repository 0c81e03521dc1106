// gemm.c — see gemm.h: cache blocking, threading and the scalar reference.
#include "tensor/gemm.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/cpu.h"

// C[M,N] += A[M,K] B[K,N]
void rm_gemm_nn_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int M, int N,
                    int K) {
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            float a = A[i * lda + k];
            for (int j = 0; j < N; j++) C[i * ldc + j] += a * B[k * ldb + j];
        }
}

static void block_scalar(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int i0,
                         int i1, int j0, int j1, int k0, int k1) {
    for (int i = i0; i < i1; i++)
        for (int k = k0; k < k1; k++) {
            float a = A[i * lda + k];
            for (int j = j0; j < j1; j++) C[i * ldc + j] += a * B[k * ldb + j];
        }
}

typedef void (*gemm_block_fn)(float *, int64_t, const float *, int64_t, const float *, int64_t, int, int, int, int,
                              int, int);

typedef struct gemm_job {
    float *C;
    const float *A, *B;
    int64_t ldc, lda, ldb;
    int M, N, K;
    int split_rows;   // 1: workers split C's rows, 0: its columns
    gemm_block_fn fn;
} gemm_job;

enum { KB = 256, NB = 256, MR = 6 }; // B blocks of KB x NB floats stay in L2

// B[k0:k0+kn, j0:j0+16*n] into n strips of kn x 16 (see rm_gemm_packed_avx2)
static void pack_b(float *Bp, const float *B, int64_t ldb, int k0, int kn, int j0, int n) {
    for (int s = 0; s < n; s++)
        for (int k = 0; k < kn; k++)
            memcpy(Bp + ((size_t)s * kn + k) * 16, B + (k0 + k) * ldb + j0 + 16 * s, 16 * sizeof(float));
}

static void gemm_task(void *ctx, int ith, int nth) {
    const gemm_job *j = ctx;
    long b, e;
    int i0 = 0, i1 = j->M, c0 = 0, c1 = j->N;
    if (j->split_rows) {
        rm_split_range((j->M + MR - 1) / MR, ith, nth, &b, &e);
        i0 = (int)b * MR;
        i1 = (int)e * MR < j->M ? (int)e * MR : j->M;
    } else {
        rm_split_range((j->N + 15) / 16, ith, nth, &b, &e);
        c0 = (int)b * 16;
        c1 = (int)e * 16 < j->N ? (int)e * 16 : j->N;
    }
    if (i0 >= i1 || c0 >= c1) return;
    // AVX2 with enough rows to amortise it: pack each B block once, then the
    // columns left over (< 16) unpacked.
    float *Bp = j->fn == rm_gemm_block_avx2 && i1 - i0 >= 12 ? aligned_alloc(32, (size_t)KB * NB * sizeof(float)) : NULL;
    if (Bp) {
        int full = c0 + (c1 - c0) / 16 * 16;
        for (int k0 = 0; k0 < j->K; k0 += KB) {
            int kn = k0 + KB < j->K ? KB : j->K - k0;
            for (int n0 = c0; n0 < full; n0 += NB) {
                int ns = (n0 + NB < full ? NB : full - n0) / 16;
                pack_b(Bp, j->B, j->ldb, k0, kn, n0, ns);
                rm_gemm_packed_avx2(j->C, j->ldc, j->A, j->lda, Bp, i0, i1, n0, ns, k0, kn);
            }
            if (full < c1) j->fn(j->C, j->ldc, j->A, j->lda, j->B, j->ldb, i0, i1, full, c1, k0, k0 + kn);
        }
        free(Bp);
        return;
    }
    for (int k0 = 0; k0 < j->K; k0 += KB)
        for (int n0 = c0; n0 < c1; n0 += NB)
            j->fn(j->C, j->ldc, j->A, j->lda, j->B, j->ldb, i0, i1, n0, n0 + NB < c1 ? n0 + NB : c1, k0,
                  k0 + KB < j->K ? k0 + KB : j->K);
}

void rm_gemm_nn(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int M, int N, int K) {
    if (M <= 0 || N <= 0 || K <= 0) return;
    const rm_cpu_features *f = rm_cpu();
    int nth = tp ? rm_threadpool_size(tp) : 1;
    gemm_job j = {C, A, B, ldc, lda, ldb, M, N, K, M >= 4 * MR * nth || N < 16 * nth,
                  f->avx2 && f->fma ? rm_gemm_block_avx2 : block_scalar};
    if ((double)M * N * K < 32768.0) tp = NULL; // too small to be worth waking the workers
    rm_threadpool_run(tp, gemm_task, &j);
}

typedef struct transpose_job { float *dst; const float *src; int64_t lds; int rows, cols; } transpose_job;

// Each worker writes a range of dst rows (= src columns), 8 at a time: the 8
// dst rows advance together one float per src row, so only 8 dst cache lines
// are open at once even when rows is a power of two (whose stride would map
// wider tiles to one cache set and thrash it).
static void transpose_task(void *ctx, int ith, int nth) {
    const transpose_job *j = ctx;
    long b, e;
    rm_split_range((j->cols + 7) / 8, ith, nth, &b, &e);
    int c_end = (int)e * 8 < j->cols ? (int)e * 8 : j->cols;
    for (int c0 = (int)b * 8; c0 < c_end; c0 += 8) {
        int c1 = c0 + 8 < c_end ? c0 + 8 : c_end;
        for (int r = 0; r < j->rows; r++)
            for (int c = c0; c < c1; c++) j->dst[(int64_t)c * j->rows + r] = j->src[r * j->lds + c];
    }
}

void rm_transpose(rm_threadpool *tp, float *dst, const float *src, int64_t lds, int rows, int cols) {
    transpose_job j = {dst, src, lds, rows, cols};
    if ((double)rows * cols < 65536.0) tp = NULL;
    rm_threadpool_run(tp, transpose_task, &j);
}
