// gemm_simd.h — the bodies of rm_gemm's SIMD kernels, written once over a
// vector of W floats and included by gemm_avx2.c (W = 8) and gemm_avx512.c
// (W = 16), which define first:
//   VF, W                 vector type and its lanes
//   MASK_T, MASK(n)       lane mask of lanes i < n (n may be <= 0 or >= W)
//   LOAD(p), STORE(p, v), LOADM(p, m), STOREM(p, m, v)   (masked: other lanes 0 / untouched)
//   ZERO(), SET1(x), FMA(a, b, c) = a*b + c fused
//   HSUM4(v0, v1, v2, v3) the four vectors' sums as an __m128
//   LOADH(p), LOADHM(p, m, n)  W f16 values at p as floats (masked: the m / first n lanes, others 0)
#ifndef RM_TENSOR_GEMM_SIMD_H
#define RM_TENSOR_GEMM_SIMD_H

#define INLINE static inline __attribute__((always_inline))
// Rows of B simd_tile asks for ahead of the one it reads. Attention's decode
// products run a step in about 10 cycles, so 16 rows ahead was less than a
// DRAM access: 32 took a decode step's attention at depth 1024 from 1.71 to
// 1.54 ms (f32 cache) and 1.32 to 1.10 ms (f16), Zen 5, 2 threads, medians of
// 5 alternating runs (64: the same within the noise). Rows of f16 values
// are asked for twice as many rows ahead, the same bytes.
enum { PF = 32 };
// The loops below over rows and vectors are unrolled so that the tile lives
// in registers (at -O2 GCC would otherwise keep the arrays on the stack).

// C[0:R, 0:nc] = (load ? C : 0) + A[0:R, 0:kn] B[0:kn, 0:nc], R <= 12,
// nc <= NV*W; MASKED (nc < NV*W): only nc columns of B and C are touched.
// BH: B holds f16 values (rm_f16), each turned into its float exactly as it
// is loaded; ldb counts elements either way. bn: elements from b to the
// first row of the strip the next tile reads (only prefetched).
INLINE void simd_tile(float *C, int64_t ldc, const float *a, int64_t ars, int64_t acs, const void *b, int64_t ldb,
                      int64_t bn, int kn, int nc, int load, const int R, const int NV, const int MASKED, const int BH) {
    VF c[12][2];
    MASK_T m[2] = {MASK(nc), MASK(nc - W)};
    const int64_t ES = BH ? 2 : 4; // bytes an element of B
    const int PFR = BH ? 2 * PF : PF; // rows ahead: the same bytes ahead for f16 rows
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++)
            c[r][v] = !load ? ZERO() : MASKED ? LOADM(C + r * ldc + W * v, m[v]) : LOAD(C + r * ldc + W * v);
    for (int k = 0; k < kn; k++) {
        const char *bk = (const char *)b + k * ldb * ES;
        const float *ak = a + k * acs;
        VF bv[2];
        // B's row PF on: a B streamed from memory (attention reading the
        // KV cache) would otherwise wait on every row, its rows too far
        // apart or too many at once for the hardware to see the stream.
#pragma GCC unroll 2
        for (int o = 0; o < NV * W * ES; o += 64)
            __builtin_prefetch(k + PFR < kn ? bk + PFR * ldb * ES + o
                                            : (const char *)b + (bn + (k + PFR - kn) * ldb) * ES + o);
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            if (BH) {
                const rm_f16 *bh = (const rm_f16 *)bk + W * v;
                bv[v] = MASKED ? LOADHM(bh, m[v], nc - W * v) : LOADH(bh);
            } else {
                const float *bf = (const float *)bk + W * v;
                bv[v] = MASKED ? LOADM(bf, m[v]) : LOAD(bf);
            }
        }
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            VF av = SET1(ak[r * ars]);
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++) c[r][v] = FMA(av, bv[v], c[r][v]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) {
            if (MASKED) STOREM(C + r * ldc + W * v, m[v], c[r][v]);
            else STORE(C + r * ldc + W * v, c[r][v]);
        }
}

// simd_tile with the row count R (a variable in scope) made a constant.
#define SIMD_TILE_ROWS(ARGS, NV, MASKED, BH)                                                                           \
    switch (R) {                                                                                                       \
    case 12: simd_tile(ARGS, 12, NV, MASKED, BH); break;                                                               \
    case 11: simd_tile(ARGS, 11, NV, MASKED, BH); break;                                                               \
    case 10: simd_tile(ARGS, 10, NV, MASKED, BH); break;                                                               \
    case 9: simd_tile(ARGS, 9, NV, MASKED, BH); break;                                                                 \
    case 8: simd_tile(ARGS, 8, NV, MASKED, BH); break;                                                                 \
    case 7: simd_tile(ARGS, 7, NV, MASKED, BH); break;                                                                 \
    case 6: simd_tile(ARGS, 6, NV, MASKED, BH); break;                                                                 \
    case 5: simd_tile(ARGS, 5, NV, MASKED, BH); break;                                                                 \
    case 4: simd_tile(ARGS, 4, NV, MASKED, BH); break;                                                                 \
    case 3: simd_tile(ARGS, 3, NV, MASKED, BH); break;                                                                 \
    case 2: simd_tile(ARGS, 2, NV, MASKED, BH); break;                                                                 \
    default: simd_tile(ARGS, 1, NV, MASKED, BH); break;                                                                \
    }
#define SIMD_TILE_ARGS C, ldc, a, ars, acs, b, ldb, bn, kn, nc, load

// s[r][q] += A[i+r, k:k+W] . W[j+q, k:k+W] lane by lane (MASKED: lanes m only)
INLINE void simd_dots_step(VF s[4][4], const float *A, int64_t lda, const float *Wm, int64_t ldw, int i, int j, int k,
                           MASK_T m, const int RR, const int NJ, const int MASKED) {
    VF x[4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++) x[r] = MASKED ? LOADM(A + (i + r) * lda + k, m) : LOAD(A + (i + r) * lda + k);
#pragma GCC unroll 4
    for (int q = 0; q < NJ; q++) {
        VF w = MASKED ? LOADM(Wm + (j + q) * ldw + k, m) : LOAD(Wm + (j + q) * ldw + k);
#pragma GCC unroll 4
        for (int r = 0; r < RR; r++) s[r][q] = FMA(x[r], w, s[r][q]);
    }
}

// C[i:i+RR, j:j+NJ] (+)= A[i:i+RR, 0:K] W[j:j+NJ, 0:K]^T, RR <= 4, NJ <= 4:
// one accumulator per pair, summed across lanes at the end.
INLINE void simd_dots(float *C, int64_t ldc, const float *A, int64_t lda, const float *Wm, int64_t ldw, int i, int j,
                      int K, int acc, const int RR, const int NJ) {
    VF s[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int q = 0; q < 4; q++) s[r][q] = ZERO();
    int k = 0;
    for (; k + W <= K; k += W) simd_dots_step(s, A, lda, Wm, ldw, i, j, k, MASK(W), RR, NJ, 0);
    if (k < K) simd_dots_step(s, A, lda, Wm, ldw, i, j, k, MASK(K - k), RR, NJ, 1); // the last K % W columns
#pragma GCC unroll 4
    for (int r = 0; r < RR; r++) {
        float v[4];
        _mm_storeu_ps(v, HSUM4(s[r][0], s[r][1], s[r][2], s[r][3]));
        float *c = C + (i + r) * ldc + j;
#pragma GCC unroll 4
        for (int q = 0; q < NJ; q++) c[q] = acc ? c[q] + v[q] : v[q];
    }
}

// C[i0:i1, 0:n] (+)= A[i0:i1, 0:K] W[0:n, 0:K]^T, RR rows and four columns at a time
#define SIMD_DOTS_BODY(RR)                                                                                             \
    int i = i0;                                                                                                        \
    for (; i + RR <= i1; i += RR)                                                                                      \
        for (int j = 0; j < n; j += 4) SIMD_DOTS_COLS(RR)                                                              \
    for (; i < i1; i++)                                                                                                \
        for (int j = 0; j < n; j += 4) SIMD_DOTS_COLS(1)
#define SIMD_DOTS_COLS(RR)                                                                                             \
    switch (n - j < 4 ? n - j : 4) {                                                                                   \
    case 4: simd_dots(C, ldc, A, lda, W_, ldw, i, j, K, acc, RR, 4); break;                                            \
    case 3: simd_dots(C, ldc, A, lda, W_, ldw, i, j, K, acc, RR, 3); break;                                            \
    case 2: simd_dots(C, ldc, A, lda, W_, ldw, i, j, K, acc, RR, 2); break;                                            \
    default: simd_dots(C, ldc, A, lda, W_, ldw, i, j, K, acc, RR, 1); break;                                           \
    }
#endif
