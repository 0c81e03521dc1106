// gemm.c — see gemm.h: the scalar reference and kernels, B packing, cache
// blocking, the choice of kernel and the threading.
#include "tensor/gemm.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "base/cpu.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

// C[M,N] (+)= A[M,K] B[K,N]
void rm_gemm_ref(float *C, int64_t ldc, rm_gmat A, rm_gmat B, int M, int N, int K, unsigned flags) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = flags & RM_GEMM_ACC ? C[i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++) s += A.p[i * A.rs + k * A.cs] * B.p[k * B.rs + j * B.cs];
            C[i * ldc + j] = s;
        }
}

// C[M,N] += A[M,K] B[K,N]
void rm_gemm_nn_ref(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb, int M, int N,
                    int K) {
    rm_gemm_ref(C, ldc, rm_gmat_n(A, lda), rm_gmat_n(B, ldb), M, N, K, RM_GEMM_ACC);
}

// C[0:R, 0:nc] = (load ? C : 0) + A[0:R, 0:kn] B[0:kn, 0:nc] (the reference's
// order of operations, so the scalar path is the reference); B of floats, or
// of f16 values (half) each taken as its float.
static void tile_scalar_any(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const void *b, int64_t ldb,
                            int half, int kn, int R, int nc, int load) {
    const float *bf = b;
    const rm_f16 *bh = b;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < nc; c++) {
            float s = load ? C[r * ldc + c] : 0.0f;
            for (int k = 0; k < kn; k++)
                s += a[r * ars + k * acs] * (half ? rm_f16_to_f32(bh[k * ldb + c]) : bf[k * ldb + c]);
            C[r * ldc + c] = s;
        }
}
static void tile_scalar(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb,
                        int64_t bn, int kn, int R, int nc, int load) {
    (void)bn;
    tile_scalar_any(C, ldc, a, ars, acs, b, ldb, 0, kn, R, nc, load);
}
static void tile_scalar_h(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const rm_f16 *b, int64_t ldb,
                          int64_t bn, int kn, int R, int nc, int load) {
    (void)bn;
    tile_scalar_any(C, ldc, a, ars, acs, b, ldb, 1, kn, R, nc, load);
}

// C[i0:i1, 0:n] (+)= A[i0:i1, 0:K] W[0:n, 0:K]^T
static void dots_scalar(float *C, int64_t ldc, const float *A, int64_t lda, const float *W, int64_t ldw, int i0, int i1,
                        int n, int K, int acc) {
    rm_gemm_ref(C + i0 * ldc, ldc, rm_gmat_n(A + i0 * lda, lda), rm_gmat_t(W, ldw), i1 - i0, n, K,
                acc ? RM_GEMM_ACC : 0);
}

// The kernels of this CPU: a tile of MR x NR (on AVX-512 a narrower one for
// products at most 16 columns wide), the same tile over f16 B, and the
// dot-product kernel.
typedef struct gemm_isa {
    rm_gemm_tile_fn tile;
    rm_gemm_tile_h_fn tile_h;
    int MR, NR;
    rm_gemm_dots_fn dots;
} gemm_isa;

static gemm_isa pick_isa(int N) {
    const rm_cpu_features *f = rm_cpu();
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx2 && f->fma && f->f16c) {
        if (N <= 16) return (gemm_isa){rm_gemm_tile16_avx512, rm_gemm_tile16_h_avx512, 12, 16, rm_gemm_dots_avx512};
        return (gemm_isa){rm_gemm_tile_avx512, rm_gemm_tile_h_avx512, 12, 32, rm_gemm_dots_avx512};
    }
    if (f->avx2 && f->fma && f->f16c)
        return (gemm_isa){rm_gemm_tile_avx2, rm_gemm_tile_h_avx2, 6, 16, rm_gemm_dots_avx2};
    return (gemm_isa){tile_scalar, tile_scalar_h, 6, 16, dots_scalar};
}

enum { KB = 256, NB = 256 }; // a packed block of B (KB x NB floats) stays in L2

typedef struct gemm_job {
    float *C;
    int64_t ldc;
    rm_gmat A, B;
    const rm_f16 *Bh; // non-NULL: B is these f16 values, row-major (B.rs apart), B.p unused
    int64_t bss;      // > 0: B in strips of 32 columns, (k, j) at [(j / 32) * bss + k * 32 + j % 32] (B.rs = 32)
    int M, N, K;
    unsigned flags;
    gemm_isa isa;
    int pack;       // 1: B packed into strips, 0: read in place
    int split_rows; // 1: workers split C's rows, 0: its columns
} gemm_job;

// B[k0:k0+kn, n0:n0+nn] into strips of NR columns, k-major (strip s at
// Bp + s*kn*NR, row k of it at + k*NR), the last strip padded with zeros;
// f16 values (Bh) become floats.
static void pack_b(float *Bp, rm_gmat B, const rm_f16 *Bh, int k0, int kn, int n0, int nn, int NR) {
    for (int s = 0; s * NR < nn; s++) {
        float *d = Bp + (size_t)s * kn * NR;
        int j0 = n0 + s * NR, w = MIN(NR, n0 + nn - j0);
        if (Bh) {
            for (int k = 0; k < kn; k++) {
                const rm_f16 *src = Bh + (k0 + k) * B.rs + j0;
                for (int c = 0; c < w; c++) d[(size_t)k * NR + c] = rm_f16_to_f32(src[c]);
                memset(d + (size_t)k * NR + w, 0, (size_t)(NR - w) * sizeof(float));
            }
            continue;
        }
        if (B.cs == 1) {
            for (int k = 0; k < kn; k++) {
                memcpy(d + (size_t)k * NR, B.p + (k0 + k) * B.rs + j0, (size_t)w * sizeof(float));
                memset(d + (size_t)k * NR + w, 0, (size_t)(NR - w) * sizeof(float));
            }
            continue;
        }
        if (w < NR) memset(d, 0, (size_t)kn * NR * sizeof(float));
        for (int c = 0; c < w; c++) { // B stored transposed: its columns are contiguous
            const float *src = B.p + (j0 + c) * B.cs + k0 * B.rs;
            for (int k = 0; k < kn; k++) d[(size_t)k * NR + c] = src[k * B.rs];
        }
    }
}

// The tile of rows i..i+R and columns col..col+nc over k0..k0+kn, B's rows
// of that range at b (ldb elements apart; f16 values if half; the next
// tile's strip bn elements on), with the terms the flags allow skipped.
static void tile_at(const gemm_job *j, int i, int R, int col, int nc, int k0, int kn, const void *b, int64_t ldb,
                    int64_t bn, int half) {
    unsigned f = j->flags;
    if ((f & RM_GEMM_CAUSAL) && col > i + R - 1) return; // every column of the tile is above the diagonal
    int ka = k0, kb = k0 + kn;
    if (f & RM_GEMM_A_LOWER) kb = MIN(kb, i + R);
    if (f & RM_GEMM_A_UPPER) ka = MAX(ka, i);
    if (kb < ka) kb = ka;
    int load = (f & RM_GEMM_ACC) || k0 > 0;
    if (kb == ka && load) return;
    float *C = j->C + i * j->ldc + col;
    const float *a = j->A.p + i * j->A.rs + (int64_t)ka * j->A.cs;
    if (half)
        j->isa.tile_h(C, j->ldc, a, j->A.rs, j->A.cs, (const rm_f16 *)b + (int64_t)(ka - k0) * ldb, ldb, bn, kb - ka, R,
                      nc, load);
    else
        j->isa.tile(C, j->ldc, a, j->A.rs, j->A.cs, (const float *)b + (int64_t)(ka - k0) * ldb, ldb, bn, kb - ka, R,
                    nc, load);
}

// Where column col of a row-major B (or one in strips) starts, in elements
// from B's start: row 0's element (the tile kernels are as wide as a strip
// or half of one, so a tile never crosses strips).
static int64_t b_col(const gemm_job *j, int col) { return j->bss ? col / 32 * j->bss + col % 32 : col; }

// This worker's rows [*i0, *i1) and columns [*c0, *c1) of C.
static void worker_range(const gemm_job *j, int ith, int nth, int *i0, int *i1, int *c0, int *c1) {
    long b, e;
    int MR = j->isa.MR, NR = j->isa.NR;
    *i0 = 0, *i1 = j->M, *c0 = 0, *c1 = j->N;
    if (j->split_rows) {
        rm_split_range((j->M + MR - 1) / MR, ith, nth, &b, &e);
        *i0 = (int)b * MR;
        *i1 = MIN((int)e * MR, j->M);
    } else {
        rm_split_range((j->N + NR - 1) / NR, ith, nth, &b, &e);
        *c0 = (int)b * NR;
        *c1 = MIN((int)e * NR, j->N);
    }
}

static void gemm_task(void *ctx, int ith, int nth) {
    const gemm_job *j = ctx;
    int i0, i1, c0, c1, MR = j->isa.MR, NR = j->isa.NR;
    worker_range(j, ith, nth, &i0, &i1, &c0, &c1);
    if (i0 >= i1 || c0 >= c1) return;
    if (j->isa.dots) {
        j->isa.dots(j->C, j->ldc, j->A.p, j->A.rs, j->B.p, j->B.cs, i0, i1, j->N, j->K, j->flags & RM_GEMM_ACC);
        return;
    }
    if (!j->pack) { // B in place: strips of its rows, every panel of rows against each
        for (int col = c0; col < c1; col += NR) {
            const int64_t at = b_col(j, col), bn = b_col(j, col + NR) - at;
            for (int i = i0; i < i1; i += MR)
                tile_at(j, i, MIN(MR, i1 - i), col, MIN(NR, c1 - col), 0, j->K,
                        j->Bh ? (const void *)(j->Bh + at) : (const void *)(j->B.p + at), j->B.rs, bn, j->Bh != NULL);
        }
        return;
    }
    int kb_max = MIN(KB, j->K), nb_max = MIN(NB, (c1 - c0 + NR - 1) / NR * NR);
    float *Bp = aligned_alloc(64, (size_t)kb_max * nb_max * sizeof(float));
    if (!Bp) { // out of memory for the packed block: B in place (row-major) or the reference
        if (j->B.cs == 1) { // (f16 B is row-major)
            gemm_job in_place = *j;
            in_place.pack = 0;
            gemm_task(&in_place, ith, nth);
        } else {
            rm_gemm_ref(j->C + i0 * j->ldc + c0, j->ldc, (rm_gmat){j->A.p + i0 * j->A.rs, j->A.rs, j->A.cs},
                        (rm_gmat){j->B.p + c0 * j->B.cs, j->B.rs, j->B.cs}, i1 - i0, c1 - c0, j->K, j->flags);
        }
        return;
    }
    for (int k0 = 0; k0 < j->K; k0 += KB) {
        int kn = MIN(KB, j->K - k0);
        for (int n0 = c0; n0 < c1; n0 += NB) {
            int nn = MIN(NB, c1 - n0);
            pack_b(Bp, j->B, j->Bh, k0, kn, n0, nn, NR);
            for (int s = 0; s * NR < nn; s++)
                for (int i = i0; i < i1; i += MR)
                    tile_at(j, i, MIN(MR, i1 - i), n0 + s * NR, MIN(NR, nn - s * NR), k0, kn, Bp + (size_t)s * kn * NR,
                            NR, (int64_t)kn * NR, 0);
        }
    }
    free(Bp);
}

// rm_gemm, B being f16 values (row-major, B.rs apart) when Bh is not NULL,
// in strips of 32 columns bss apart when bss > 0 (then read in place).
static void gemm_run(rm_threadpool *tp, float *C, int64_t ldc, rm_gmat A, rm_gmat B, const rm_f16 *Bh, int64_t bss,
                     int M, int N, int K, unsigned flags) {
    if (M <= 0 || N <= 0) return;
    gemm_job j = {C, ldc, A, B, Bh, bss, M, N, K < 0 ? 0 : K, flags, pick_isa(N), 0, 1};
    int b_rows = B.cs == 1; // B stored [K,N] (else transposed)
    if (b_rows || N > 16 || A.cs != 1) j.isa.dots = NULL;
    else j.isa.MR = 1; // dots: workers split single rows
    // B read in place when each of its elements serves few tiles of rows
    // (packing would cost as much as it saves) or it is one strip wide
    // (which stays in L1 anyway); stored transposed it is always packed.
    j.pack = !j.isa.dots && !bss && (!b_rows || (M > 2 * j.isa.MR && K > 16 && N > j.isa.NR));
    int nth = tp ? rm_threadpool_size(tp) : 1;
    j.split_rows = j.isa.dots || M >= 4 * j.isa.MR * nth || N < j.isa.NR * nth;
    if ((double)M * N * (K + 1) < 65536.0) tp = NULL; // too small to be worth waking the workers
    rm_threadpool_run(tp, gemm_task, &j);
}

void rm_gemm(rm_threadpool *tp, float *C, int64_t ldc, rm_gmat A, rm_gmat B, int M, int N, int K, unsigned flags) {
    gemm_run(tp, C, ldc, A, B, NULL, 0, M, N, K, flags);
}

void rm_gemm_nn_bh(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const rm_f16 *B, int64_t ldb,
                   int M, int N, int K) {
    gemm_run(tp, C, ldc, rm_gmat_n(A, lda), (rm_gmat){NULL, ldb, 1}, B, 0, M, N, K, RM_GEMM_ACC);
}

void rm_gemm_nn_strips(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const void *B, int b_f16,
                       int64_t ss, int M, int N, int K) {
    const rm_gmat b = {b_f16 ? NULL : (const float *)B, 32, 1};
    gemm_run(tp, C, ldc, rm_gmat_n(A, lda), b, b_f16 ? (const rm_f16 *)B : NULL, ss, M, N, K, RM_GEMM_ACC);
}

void rm_gemm_nn(rm_threadpool *tp, float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                int M, int N, int K) {
    rm_gemm(tp, C, ldc, rm_gmat_n(A, lda), rm_gmat_n(B, ldb), M, N, K, RM_GEMM_ACC);
}

typedef struct transpose_job {
    float *dst;
    const float *src;
    int64_t lds;
    int rows, cols;
} transpose_job;

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
