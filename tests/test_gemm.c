// test_gemm.c — rm_gemm (tensor/gemm.h) against its scalar reference on every
// ISA, for both layouts of each operand, the flags, threads and the shapes
// that pick each kernel; and the promises its header makes: an element does
// not depend on the other rows or the threads, and the FMA-chain kernels give
// the same bits on AVX2 and AVX-512.
#include "testing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/cpu.h"
#include "tensor/gemm.h"

static uint64_t g_rng = 3;
static float frand(void) { // uniform [-1, 1)
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / (double)(1ull << 52) - 1.0);
}

// One product: operands with padded leading dimensions, C with a padding
// column that must stay untouched.
typedef struct gcase {
    int M, N, K, ta, tb;
    unsigned flags;
    float *A, *B, *C0;
    int64_t lda, ldb, ldc;
    rm_gmat a, b;
} gcase;

static void gcase_init(gcase *g, int M, int N, int K, int ta, int tb, unsigned flags) {
    *g = (gcase){.M = M, .N = N, .K = K, .ta = ta, .tb = tb, .flags = flags};
    int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    g->lda = ac + 3;
    g->ldb = bc + 1;
    g->ldc = N + 1;
    g->A = malloc(((size_t)ar * g->lda + 1) * sizeof(float));
    g->B = malloc(((size_t)br * g->ldb + 1) * sizeof(float));
    g->C0 = malloc((size_t)M * g->ldc * sizeof(float));
    for (size_t i = 0; i < (size_t)ar * g->lda + 1; i++) g->A[i] = frand();
    for (size_t i = 0; i < (size_t)br * g->ldb + 1; i++) g->B[i] = frand();
    for (size_t i = 0; i < (size_t)M * g->ldc; i++) g->C0[i] = frand();
    g->a = ta ? rm_gmat_t(g->A, g->lda) : rm_gmat_n(g->A, g->lda);
    g->b = tb ? rm_gmat_t(g->B, g->ldb) : rm_gmat_n(g->B, g->ldb);
    // the zeros the triangular flags promise
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            if (((flags & RM_GEMM_A_LOWER) && k > i) || ((flags & RM_GEMM_A_UPPER) && k < i))
                g->A[i * g->a.rs + k * g->a.cs] = 0.0f;
}

static void gcase_free(gcase *g) {
    free(g->A);
    free(g->B);
    free(g->C0);
}

// C = C0, then the product through rm_gemm (tp) into a fresh copy.
static float *gcase_run(const gcase *g, rm_threadpool *tp) {
    float *C = malloc((size_t)g->M * g->ldc * sizeof(float));
    memcpy(C, g->C0, (size_t)g->M * g->ldc * sizeof(float));
    rm_gemm(tp, C, g->ldc, g->a, g->b, g->M, g->N, g->K, g->flags);
    return C;
}

// Checks C against the reference, element by element, within the
// worst-case rounding bound of a K-term sum; returns the number of misses.
static int gcase_check(const gcase *g, const float *C, const char *what) {
    float *R = malloc((size_t)g->M * g->ldc * sizeof(float));
    memcpy(R, g->C0, (size_t)g->M * g->ldc * sizeof(float));
    rm_gemm_ref(R, g->ldc, g->a, g->b, g->M, g->N, g->K, g->flags);
    int bad = 0;
    for (int i = 0; i < g->M; i++) {
        if (C[i * g->ldc + g->N] != g->C0[i * g->ldc + g->N] && !bad++) CHECKF(0, "%s: padding overwritten", what);
        for (int j = 0; j < g->N; j++) {
            if ((g->flags & RM_GEMM_CAUSAL) && j > i) continue;
            double mag = g->flags & RM_GEMM_ACC ? fabs(g->C0[i * g->ldc + j]) : 0.0;
            for (int k = 0; k < g->K; k++)
                mag += fabs(g->a.p[i * g->a.rs + k * g->a.cs] * g->b.p[k * g->b.rs + j * g->b.cs]);
            double tol = 1e-6 * (g->K + 2) * mag + 1e-30;
            float c = C[i * g->ldc + j], r = R[i * g->ldc + j];
            if (!(fabs(c - r) <= tol) && !bad++)
                CHECKF(0, "%s: %dx%dx%d ta=%d tb=%d flags=%u isa=%s: C[%d,%d] = %.8g vs ref %.8g (tol %.3g)", what,
                       g->M, g->N, g->K, g->ta, g->tb, g->flags, rm_cpu_describe(), i, j, c, r, tol);
        }
    }
    free(R);
    return bad;
}

static const int k_shapes[][3] = {
    {1, 1, 1},    {1, 5, 0},    {7, 13, 5},    {6, 16, 300},  {13, 6, 40},  {37, 41, 29}, {64, 72, 520},
    {5, 8, 1000}, {300, 3, 17}, {100, 6, 128}, {6, 130, 100}, {70, 16, 70}, {70, 70, 16}, {25, 33, 6},
};

static void gemm_vs_ref(const char *isa) {
    rm_cpu_force(isa);
    rm_threadpool *tp = rm_threadpool_create(2);
    const unsigned flag_sets[] = {0, RM_GEMM_ACC, RM_GEMM_CAUSAL, RM_GEMM_A_LOWER | RM_GEMM_ACC, RM_GEMM_A_UPPER};
    int n = 0;
    for (size_t s = 0; s < sizeof k_shapes / sizeof k_shapes[0]; s++)
        for (int layout = 0; layout < 4; layout++)
            for (size_t f = 0; f < sizeof flag_sets / sizeof flag_sets[0]; f++, n++) {
                int M = k_shapes[s][0], N = k_shapes[s][1], K = k_shapes[s][2];
                unsigned flags = flag_sets[f];
                if ((flags & (RM_GEMM_A_LOWER | RM_GEMM_A_UPPER)) && K != M) continue; // square A only
                gcase g;
                gcase_init(&g, M, N, K, layout & 1, layout >> 1, flags);
                float *C = gcase_run(&g, n % 2 ? tp : NULL);
                gcase_check(&g, C, "rm_gemm");
                free(C);
                gcase_free(&g);
            }
    rm_threadpool_free(tp);
    rm_cpu_force(NULL);
}

TEST(gemm_scalar_vs_ref) { gemm_vs_ref("scalar"); }
TEST(gemm_avx2_vs_ref) {
    if (!rm_cpu()->avx2) SKIP("no avx2");
    gemm_vs_ref("avx2");
}
TEST(gemm_avx512_vs_ref) {
    if (!rm_cpu()->avx512bw) SKIP("no avx512 on this machine");
    gemm_vs_ref("avx512");
}

// Every row computed alone (M = 1) and with two threads gives the bits of
// the whole product on one thread, on each ISA, for every kernel (tiles with
// B in place or packed, dots).
TEST(gemm_rows_alone_and_threads_bitwise) {
    const char *isas[] = {"scalar", "avx2", "avx512"};
    const int shapes[][5] = {
        {40, 70, 200, 0, 0}, {40, 70, 200, 1, 1}, {40, 6, 128, 0, 1}, {40, 16, 64, 1, 0}, {9, 300, 30, 0, 1}};
    rm_threadpool *tp = rm_threadpool_create(2);
    for (int ii = 0; ii < 3; ii++) {
        rm_cpu_force(isas[ii]);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            gcase g;
            gcase_init(&g, shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4], RM_GEMM_ACC);
            float *C1 = gcase_run(&g, NULL), *C2 = gcase_run(&g, tp);
            float *C3 = malloc((size_t)g.M * g.ldc * sizeof(float));
            memcpy(C3, g.C0, (size_t)g.M * g.ldc * sizeof(float));
            for (int i = 0; i < g.M; i++)
                rm_gemm(NULL, C3 + i * g.ldc, g.ldc, (rm_gmat){g.a.p + i * g.a.rs, g.a.rs, g.a.cs}, g.b, 1, g.N, g.K,
                        RM_GEMM_ACC);
            size_t bytes = (size_t)g.M * g.ldc * sizeof(float);
            CHECKF(memcmp(C1, C2, bytes) == 0, "isa %s shape %zu: threads change the bits", isas[ii], s);
            CHECKF(memcmp(C1, C3, bytes) == 0, "isa %s shape %zu: rows alone change the bits", isas[ii], s);
            free(C1);
            free(C2);
            free(C3);
            gcase_free(&g);
        }
    }
    rm_threadpool_free(tp);
    rm_cpu_force(NULL);
}

// The tile kernels are FMA chains over k in order: AVX2 and AVX-512 agree
// bit for bit (serving's attention relies on the chain, see model/attn.c).
TEST(gemm_avx2_avx512_chains_bitwise) {
    if (!rm_cpu()->avx512bw) SKIP("no avx512 on this machine");
    const int shapes[][3] = {{37, 41, 29}, {64, 72, 520}, {70, 16, 70}, {3, 300, 9}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int layout = 0; layout < 4; layout++) {
            if (layout == 2 && shapes[s][1] <= 16) continue; // the dots kernel: tree sums of 8 or 16 lanes
            gcase g;
            gcase_init(&g, shapes[s][0], shapes[s][1], shapes[s][2], layout & 1, layout >> 1, RM_GEMM_ACC);
            rm_cpu_force("avx2");
            float *C1 = gcase_run(&g, NULL);
            rm_cpu_force("avx512");
            float *C2 = gcase_run(&g, NULL);
            CHECKF(memcmp(C1, C2, (size_t)g.M * g.ldc * sizeof(float)) == 0, "shape %zu layout %d differs", s, layout);
            free(C1);
            free(C2);
            gcase_free(&g);
        }
    rm_cpu_force(NULL);
}

// rm_gemm_nn_bh (B of f16 values, attention over an f16 KV cache) gives the
// bits of rm_gemm_nn on B converted to floats, on every ISA, with B read in
// place or packed, at the edges of the tiles (B exactly N wide, so a read
// past its last row's end would leave the buffer), alone and on two threads;
// so does rm_gemm_nn_strips on the same B laid out in strips of 32 columns,
// f32 and f16 (attention's keys).
TEST(gemm_f16_b_equals_converted_b) {
    const char *isas[] = {"scalar", "avx2", "avx512"};
    const int shapes[][3] = {{1, 1, 1},    {1, 37, 64},   {8, 2048, 64}, {8, 64, 300},  {3, 17, 5},
                             {48, 64, 64}, {48, 300, 64}, {30, 33, 70},  {12, 16, 129}, {7, 9, 1}};
    rm_threadpool *tp = rm_threadpool_create(2);
    const int has[3] = {1, rm_cpu()->avx2, rm_cpu()->avx512bw}; // before forcing any
    int checked = 0;
    for (int ii = 0; ii < 3; ii++) {
        if (!has[ii]) continue;
        rm_cpu_force(isas[ii]);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            const int64_t lda = K + 3, ldc = N + 1;
            float *A = malloc(sizeof(float) * M * lda), *Bf = malloc(sizeof(float) * K * N);
            float *C0 = malloc(sizeof(float) * M * ldc), *C1 = malloc(sizeof(float) * M * ldc);
            float *C2 = malloc(sizeof(float) * M * ldc), *C3 = malloc(sizeof(float) * M * ldc);
            rm_f16 *Bh = malloc(sizeof(rm_f16) * K * N);
            // the strips: 32 columns each, rows 32 apart, strips ss = 32 K + 7 apart; the last one cut at N
            const int64_t ss = 32 * (int64_t)K + 7, nstrip = (N + 31) / 32;
            float *Sf = malloc(sizeof(float) * (size_t)(nstrip * ss));
            rm_f16 *Sh = malloc(sizeof(rm_f16) * (size_t)(nstrip * ss));
            for (int64_t i = 0; i < M * lda; i++) A[i] = frand();
            for (int64_t i = 0; i < (int64_t)K * N; i++) Bf[i] = rm_f16_to_f32(Bh[i] = rm_f32_to_f16(4 * frand()));
            for (int64_t i = 0; i < M * ldc; i++) C0[i] = frand();
            for (int64_t i = 0; i < nstrip * ss; i++) Sf[i] = NAN, Sh[i] = 0x7e00; // padding: NaN if read
            for (int k = 0; k < K; k++)
                for (int jj = 0; jj < N; jj++) {
                    Sf[jj / 32 * ss + k * 32 + jj % 32] = Bf[(int64_t)k * N + jj];
                    Sh[jj / 32 * ss + k * 32 + jj % 32] = Bh[(int64_t)k * N + jj];
                }
            for (int t = 0; t < 2; t++) {
                memcpy(C1, C0, sizeof(float) * M * ldc);
                memcpy(C2, C0, sizeof(float) * M * ldc);
                rm_gemm_nn(t ? tp : NULL, C1, ldc, A, lda, Bf, N, M, N, K);
                rm_gemm_nn_bh(t ? tp : NULL, C2, ldc, A, lda, Bh, N, M, N, K);
                CHECKF(memcmp(C1, C2, sizeof(float) * M * ldc) == 0,
                       "isa %s, %dx%dx%d, %d thread(s): f16 B differs from B converted", isas[ii], M, N, K, t + 1);
                for (int h = 0; h < 2; h++) {
                    memcpy(C3, C0, sizeof(float) * M * ldc);
                    rm_gemm_nn_strips(t ? tp : NULL, C3, ldc, A, lda, h ? (const void *)Sh : (const void *)Sf, h, ss, M,
                                      N, K);
                    CHECKF(memcmp(h ? C2 : C1, C3, sizeof(float) * M * ldc) == 0,
                           "isa %s, %dx%dx%d, %d thread(s): B in strips (%s) differs from B row-major", isas[ii], M, N,
                           K, t + 1, h ? "f16" : "f32");
                }
                checked++;
            }
            // and the product is the product: near a double-precision sum
            double worst = 0;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double r = C0[i * ldc + j], mag = fabs(r);
                    for (int k = 0; k < K; k++) {
                        r += (double)A[i * lda + k] * rm_f16_to_f32(Bh[(int64_t)k * N + j]);
                        mag += fabs((double)A[i * lda + k] * Bf[(int64_t)k * N + j]);
                    }
                    double e = fabs(r - C2[i * ldc + j]) / (mag + 1e-30);
                    worst = e > worst ? e : worst;
                }
            CHECKF(worst < 1e-6 * (K + 2), "isa %s, %dx%dx%d: %g (relative) from the double-precision product",
                   isas[ii], M, N, K, worst);
            free(A);
            free(Bf);
            free(Bh);
            free(C0);
            free(C1);
            free(C2);
            free(C3);
            free(Sf);
            free(Sh);
        }
    }
    CHECKF(checked == 20 * (has[0] + has[1] + has[2]), "%d products checked", checked);
    rm_threadpool_free(tp);
    rm_cpu_force(NULL);
}
