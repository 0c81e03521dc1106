// matmul_avx2.c — AVX2 + FMA + F16C matmul kernels (compiled with -mavx2 -mfma
// -mf16c; called only when base/cpu.h reports all three).
//
// Every kernel computes y[c, r] for a rectangle of weight rows r and
// activation rows c with register tiles of RR weight rows x CC activation
// rows: each loaded weight block is used CC times and each activation block
// RR times. The tile function is always inlined with constant RR/CC, so the
// accumulators live in registers; every (r, c) dot product goes through the
// same operations whatever the tile shape, which keeps results bitwise
// independent of how rows are split across threads.
//
// Integer dot products (quantized W, int8 activations):
//   q8_0: maddubs(|w|, sign(x, w)) -> 16 x int16 pair sums, madd(., 1) -> 8 x int32
//   q4_0: maddubs(q, x) - maddubs(8, x) = pairs of (q-8)*x   (q unsigned 0..15)
//   q4_K: maddubs(q, x) then madd with the 6-bit sub-block scale; summed in int32
//         over the 256-element super-block (activations use one scale per 256)
//   q5_K: the same with the fifth bit or'ed into each nibble (q 0..31)
//   q6_K: maddubs(q, x) - maddubs(32, x) = pairs of (q-32)*x (q 0..63), madd with
//         the int8 scale of each 16 values; summed in int32 over the super-block
// then one cvt + FMA per block with the float scale d_w * d_x.
#include "tensor/mm_tile.h"
#include "base/fp16.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ---------------------------------------------------------------------------
// Shared tile set-up for the quantized kernels: row pointers of the RR weight
// rows, the CC activation rows (int8 values, scales per qx.blk, sums per 32)
// and zeroed accumulators; tile_finish adds the horizontal sums (minus an
// optional per-pair offset) to y.

typedef struct {
    const uint8_t *w[4];
    const int8_t *xq[4];
    const float *xd[4];
    const int16_t *xs[4];
    __m256 acc[4][4];
} qtile;

INLINE void tile_start(qtile *t, const rm_mm *m, int64_t r, int c, const int RR, const int CC) {
    const int64_t nb = m->in / m->qx.blk;
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++) t->w[i] = m->w + (size_t)(r + i) * m->w_row;
#pragma GCC unroll 4
    for (int j = 0; j < CC; j++) {
        t->xq[j] = m->qx.q + (int64_t)(c + j) * m->in;
        t->xd[j] = m->qx.d + (int64_t)(c + j) * nb;
        t->xs[j] = m->qx.sum + (int64_t)(c + j) * (m->in / 32);
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) t->acc[i][j] = _mm256_setzero_ps();
    }
}

INLINE void tile_finish(const qtile *t, const rm_mm *m, int64_t r, int c, const int RR, const int CC,
                        const float (*off)[4]) {
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) rm_mm_store(m, c + j, r + i, hsum8(t->acc[i][j]) - (off ? off[i][j] : 0));
}

// ---------------------------------------------------------------------------
// q8_0, q4_0, q4_1, q5_0 and q5_1 weights x int8 activations: 32-element
// blocks that all start with the f16 scale d (q4_1 / q5_1 then the f16 min m,
// q5_0 / q5_1 then the 32 fifth bits), followed by the quants.
//   q8_0: maddubs(|w|, sign(x, w))         = pairs of w*x
//   others: maddubs(q, x)                  = pairs of q*x   (q unsigned, 0..15 / 0..31)
// and the offset per block, from the activation block sums sum x the
// quantizer keeps: q4_0 -8 d sum x, q5_0 -16 d sum x, q4_1 / q5_1 + m sum x.

enum { KIND_Q8_0, KIND_Q4_0, KIND_Q4_1, KIND_Q5_0, KIND_Q5_1 };

// The fifth bits of a q5_0 / q5_1 block as 16 in the bytes of values j
// (bit j of the little-endian word qh), in q4_0_unpack's value order.
INLINE __m256i q5_bits(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), spread); // byte j = byte j/8 of qh
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(16));
}

// The 32 quants of a q4_0-style block (16 bytes at qs), elements 0..15 from
// the low nibbles, 16..31 from the high ones. BCAST: the bytes loaded into
// both lanes and the high lane shifted by 4, three instructions instead of
// five, for one-column tiles, which are bound by instructions per block
// (q4_0 decode 65 -> 78 GFLOP/s on one Zen 5 core forced to AVX2); wider
// tiles keep the two halves (the shift counts would take one more register:
// 1-3% slower at 8 rows).
INLINE __m256i q4_0_unpack(const uint8_t *qs, const int BCAST) {
    if (BCAST) {
        __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
        return _mm256_and_si256(_mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(15));
    }
    __m128i v = _mm_loadu_si128((const __m128i *)qs), lo4 = _mm_set1_epi8(15);
    __m128i lo = _mm_and_si128(v, lo4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), lo4);
    return _mm256_set_m128i(hi, lo);
}

// Block b for every pair of the tile; SCALE (an expression of i, j) is d_w * d_x.
#define BLOCK32(b, SCALE)                                                                                              \
    do {                                                                                                               \
        __m256i wv_[4], w8_[4];                                                                                        \
        _Pragma("GCC unroll 4") for (int i = 0; i < RR; i++) {                                                         \
            const uint8_t *qs = t.w[i] + (b)*BB + QO;                                                                  \
            prefetch_next_rows(m, qs, RR);                                                                             \
            if (KIND == KIND_Q8_0) {                                                                                   \
                w8_[i] = _mm256_loadu_si256((const __m256i *)qs);                                                      \
                wv_[i] = _mm256_abs_epi8(w8_[i]);                                                                      \
            } else {                                                                                                   \
                wv_[i] = q4_0_unpack(qs, CC == 1);                                                                     \
                if (Q5) wv_[i] = _mm256_or_si256(wv_[i], q5_bits(qs - 4));                                             \
            }                                                                                                          \
        }                                                                                                              \
        _Pragma("GCC unroll 4") for (int j = 0; j < CC; j++) {                                                         \
            __m256i xv = _mm256_loadu_si256((const __m256i *)(t.xq[j] + 32 * (b)));                                    \
            _Pragma("GCC unroll 4") for (int i = 0; i < RR; i++) {                                                     \
                __m256i p;                                                                                             \
                if (KIND == KIND_Q8_0) {                                                                               \
                    /* small tiles keep w in a register; big ones reload it (fewer spills) */                          \
                    __m256i w8 = CC <= 2 ? w8_[i] : _mm256_loadu_si256((const __m256i *)(t.w[i] + (b)*BB + QO));       \
                    p = _mm256_maddubs_epi16(wv_[i], _mm256_sign_epi8(xv, w8));                                        \
                } else {                                                                                               \
                    p = _mm256_maddubs_epi16(wv_[i], xv); /* q*x; the offset part: see tile_blk32 */                   \
                }                                                                                                      \
                __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));                                             \
                t.acc[i][j] = _mm256_fmadd_ps(s, SCALE, t.acc[i][j]);                                                  \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

// The f16 scales of 8 consecutive blocks (bb bytes apart) as 8 floats.
INLINE __m256 scales8(const uint8_t *p, int64_t bb) {
    uint16_t h[8];
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) memcpy(&h[k], p + k * bb, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

INLINE void tile_blk32(const rm_mm *m, int64_t r, int c, const int RR, const int CC, tile_aux *aux, const int PREPPED,
                       const int KIND) {
    const int64_t BB = KIND == KIND_Q8_0   ? (int64_t)sizeof(rm_block_q8_0)
                       : KIND == KIND_Q4_0 ? (int64_t)sizeof(rm_block_q4_0)
                       : KIND == KIND_Q4_1 ? (int64_t)sizeof(rm_block_q4_1)
                       : KIND == KIND_Q5_0 ? (int64_t)sizeof(rm_block_q5_0)
                                           : (int64_t)sizeof(rm_block_q5_1);
    const int QO = (int)(BB - (KIND == KIND_Q8_0 ? 32 : 16));    // the quants end the block
    const int Q5 = KIND == KIND_Q5_0 || KIND == KIND_Q5_1;        // fifth bits just before them
    const int MIN = KIND == KIND_Q4_1 || KIND == KIND_Q5_1;       // the offset is m sum x
    const float OFF = KIND == KIND_Q5_0 ? 16.0f : 8.0f;           // q4_0 / q5_0: the offset is -OFF d sum x
    qtile t;
    tile_start(&t, m, r, c, RR, CC);
    const int64_t nb = m->in / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    int64_t b = 0;
    // Scale products d_w * d_x for 8 blocks at once (one multiply per pair
    // per 8 blocks), read back as broadcasts; the tail does them one by one
    // (the same products, so the result does not depend on the path).
    // The offsets: sum over blocks of (d_w or m_w) d_x sum x, with the blocks'
    // sum x from qx.sum, summed apart (8 blocks per FMA) and taken off once
    // at the end instead of per pair and block.
    float corr[4][4][8] __attribute__((aligned(32)));
    float corr_tail[4][4] = {{0}};
    if (KIND != KIND_Q8_0)
        for (int i = 0; i < RR; i++)
            for (int j = 0; j < CC; j++) _mm256_store_ps(corr[i][j], _mm256_setzero_ps());
    for (; b + 8 <= nb; b += 8) {
        float sc[4][4][8] __attribute__((aligned(32)));
        __m256 dw[4], mw[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            dw[i] = PREPPED ? _mm256_loadu_ps(&aux->f[i][b]) : scales8(t.w[i] + b * BB, BB);
            if (MIN) mw[i] = scales8(t.w[i] + b * BB + 2, BB);
        }
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) _mm256_store_ps(sc[i][j], _mm256_mul_ps(dw[i], _mm256_loadu_ps(t.xd[j] + b)));
        if (KIND != KIND_Q8_0) {
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) {
                __m256 xs = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)(t.xs[j] + b))));
                if (MIN) xs = _mm256_mul_ps(xs, _mm256_loadu_ps(t.xd[j] + b));
#pragma GCC unroll 4
                for (int i = 0; i < RR; i++)
                    _mm256_store_ps(corr[i][j], _mm256_fmadd_ps(MIN ? mw[i] : _mm256_load_ps(sc[i][j]), xs,
                                                                _mm256_load_ps(corr[i][j])));
            }
        }
        for (int k = 0; k < 8; k++) BLOCK32(b + k, _mm256_broadcast_ss(&sc[i][j][k]));
    }
    for (; b < nb; b++) {
        __m256 dw[4];
        float dws[4], mws[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            uint16_t h;
            memcpy(&h, t.w[i] + b * BB, 2);
            dws[i] = f16(h);
            dw[i] = _mm256_set1_ps(dws[i]);
            mws[i] = 0;
            if (MIN) memcpy(&h, t.w[i] + b * BB + 2, 2), mws[i] = f16(h);
        }
        if (KIND != KIND_Q8_0)
            for (int i = 0; i < RR; i++)
                for (int j = 0; j < CC; j++)
                    corr_tail[i][j] = MIN ? fmaf(mws[i], (float)t.xs[j][b] * t.xd[j][b], corr_tail[i][j])
                                          : fmaf(dws[i] * t.xd[j][b], (float)t.xs[j][b], corr_tail[i][j]);
        BLOCK32(b, _mm256_mul_ps(dw[i], _mm256_broadcast_ss(t.xd[j] + b)));
    }
    if (KIND != KIND_Q8_0) {
        float off[4][4];
        for (int i = 0; i < RR; i++)
            for (int j = 0; j < CC; j++) {
                float s = hsum8(_mm256_load_ps(corr[i][j])) + corr_tail[i][j];
                off[i][j] = MIN ? -s : OFF * s;
            }
        tile_finish(&t, m, r, c, RR, CC, (const float(*)[4])off);
    } else {
        tile_finish(&t, m, r, c, RR, CC, NULL);
    }
}

#define TILE_Q8_0(m, r, c, RR, CC, aux, P) tile_blk32(m, r, c, RR, CC, aux, P, KIND_Q8_0)
#define TILE_Q4_0(m, r, c, RR, CC, aux, P) tile_blk32(m, r, c, RR, CC, aux, P, KIND_Q4_0)
#ifndef Q8_RR // tile shapes; others can be tried with -DQ8_RR=4 -DQ8_CC=2
#define Q8_RR 3
#endif
#ifndef Q8_CC
#define Q8_CC 4
#endif
#ifndef Q40_RR
#define Q40_RR 3
#define Q40_CC 4
#endif
// y[n,out] = x[n,in] @ W[out,in]^T, W q8_0, x int8 (rm_qx, blk 32)
DEFINE_DRIVER(rm_mm_q8_0_avx2, TILE_Q8_0, prep_block_scales, Q8_RR, Q8_CC, WALK_1_2)
// y[n,out] = x[n,in] @ W[out,in]^T, W q4_0, x int8 (rm_qx, blk 32)
DEFINE_DRIVER(rm_mm_q4_0_avx2, TILE_Q4_0, prep_block_scales, Q40_RR, Q40_CC, WALK_NONE)
// The same for q4_1, q5_0 and q5_1
#define TILE_Q4_1(m, r, c, RR, CC, aux, P) tile_blk32(m, r, c, RR, CC, aux, P, KIND_Q4_1)
#define TILE_Q5_0(m, r, c, RR, CC, aux, P) tile_blk32(m, r, c, RR, CC, aux, P, KIND_Q5_0)
#define TILE_Q5_1(m, r, c, RR, CC, aux, P) tile_blk32(m, r, c, RR, CC, aux, P, KIND_Q5_1)
DEFINE_DRIVER(rm_mm_q4_1_avx2, TILE_Q4_1, prep_block_scales, Q40_RR, Q40_CC, WALK_NONE)
DEFINE_DRIVER(rm_mm_q5_0_avx2, TILE_Q5_0, prep_block_scales, Q40_RR, Q40_CC, WALK_NONE)
DEFINE_DRIVER(rm_mm_q5_1_avx2, TILE_Q5_1, prep_block_scales, Q40_RR, Q40_CC, WALK_NONE)

// ---------------------------------------------------------------------------
// q4_K and q5_K weights x int8 activations (one scale per 256; sums per 32)

// ((v >> s) & 1) << 4 in every byte: the fifth bit of q5_K's sub-block s.
INLINE __m256i q5k_bit(__m256i v, const int s) {
    const __m256i b4 = _mm256_set1_epi8(16);
    return s < 4 ? _mm256_and_si256(_mm256_slli_epi16(v, 4 - s), b4) : _mm256_and_si256(_mm256_srli_epi16(v, s - 4), b4);
}

INLINE void tile_kmin(const rm_mm *m, int64_t r, int c, const int RR, const int CC, tile_aux *aux, const int PREPPED,
                      const int Q5) {
    qtile t;
    tile_start(&t, m, r, c, RR, CC);
    const int64_t nb = m->in / m->qx.blk;
    const size_t BB = Q5 ? sizeof(rm_block_q5_k) : sizeof(rm_block_q4_k);
    float macc[4][4] = {{0}}; // the dmin * min terms
    const __m256i lo4 = _mm256_set1_epi8(15);
    for (int64_t b = 0; b < nb; b++) {
        q4k_prep local[4];
        const q4k_prep *sc[4];
        const uint8_t *qs[4], *qh[4];
        __m256i hv[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            const uint8_t *blk = t.w[i] + (size_t)b * BB;
            qs[i] = Q5 ? ((const rm_block_q5_k *)blk)->qs : ((const rm_block_q4_k *)blk)->qs;
            qh[i] = ((const rm_block_q5_k *)blk)->qh;
            if (Q5) hv[i] = _mm256_loadu_si256((const __m256i *)qh[i]);
            if (PREPPED) {
                sc[i] = &aux->k[i][b];
            } else {
                q4k_unpack((const rm_block_q4_k *)blk, &local[i]);
                sc[i] = &local[i];
            }
        }
        __m256i isum[4][4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) isum[i][j] = _mm256_setzero_si256();
        __m256i ls[4]; // the 8 sub-block scales as int16, in both 128-bit lanes
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) ls[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)sc[i]->ls));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) { // 64 elements: sub-blocks 2k (low nibbles), 2k+1 (high)
            // pshufb masks that broadcast int16 number 2k / 2k+1 of a lane
            const __m256i pick0 = _mm256_set1_epi16((short)(0x0100 * (4 * k + 1) + 4 * k));
            const __m256i pick1 = _mm256_set1_epi16((short)(0x0100 * (4 * k + 3) + 4 * k + 2));
            __m256i ql[4], qhi[4], s0[4], s1[4];
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                prefetch_next_rows(m, qs[i] + 32 * k, RR);
                __m256i v = _mm256_loadu_si256((const __m256i *)(qs[i] + 32 * k));
                ql[i] = _mm256_and_si256(v, lo4);
                qhi[i] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                if (Q5) {
                    ql[i] = _mm256_or_si256(ql[i], q5k_bit(hv[i], 2 * k));
                    qhi[i] = _mm256_or_si256(qhi[i], q5k_bit(hv[i], 2 * k + 1));
                }
                s0[i] = _mm256_shuffle_epi8(ls[i], pick0);
                s1[i] = _mm256_shuffle_epi8(ls[i], pick1);
            }
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) {
                const int8_t *xp = t.xq[j] + 256 * b + 64 * k;
                __m256i x0 = _mm256_loadu_si256((const __m256i *)xp);
                __m256i x1 = _mm256_loadu_si256((const __m256i *)(xp + 32));
#pragma GCC unroll 4
                for (int i = 0; i < RR; i++) {
                    __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(ql[i], x0), s0[i]);
                    __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(qhi[i], x1), s1[i]);
                    isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_add_epi32(p0, p1));
                }
            }
        }
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            float dx = t.xd[j][b];
            const __m128i bs = _mm_loadu_si128((const __m128i *)(t.xs[j] + 8 * b)); // sums of x per sub-block
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                t.acc[i][j] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), _mm256_set1_ps(sc[i]->d * dx), t.acc[i][j]);
                __m128i ms = _mm_madd_epi16(_mm_loadu_si128((const __m128i *)sc[i]->lm), bs); // sum_s lm[s] * bs[s]
                ms = _mm_add_epi32(ms, _mm_shuffle_epi32(ms, 0x4e));
                ms = _mm_add_epi32(ms, _mm_shuffle_epi32(ms, 0xb1));
                macc[i][j] += sc[i]->dmin * dx * (float)_mm_cvtsi128_si32(ms);
            }
        }
    }
    tile_finish(&t, m, r, c, RR, CC, (const float(*)[4])macc);
}

#define TILE_Q4_K(m, r, c, RR, CC, aux, P) tile_kmin(m, r, c, RR, CC, aux, P, 0)
#define TILE_Q5_K(m, r, c, RR, CC, aux, P) tile_kmin(m, r, c, RR, CC, aux, P, 1)
#ifndef Q4K_RR
#define Q4K_RR 3
#define Q4K_CC 3
#endif
// y[n,out] = x[n,in] @ W[out,in]^T, W q4_K / q5_K, x int8 (rm_qx, blk 256)
DEFINE_DRIVER(rm_mm_q4_k_avx2, TILE_Q4_K, prep_q4k, Q4K_RR, Q4K_CC, WALK_1_2)
DEFINE_DRIVER(rm_mm_q5_k_avx2, TILE_Q5_K, prep_q4k, Q4K_RR, Q4K_CC, WALK_1_2)

// ---------------------------------------------------------------------------
// q6_K weights x int8 activations (one scale per 256)

// The 32 values 32p..32p+31 of half h of a q6_K super-block (p = 0..3), each
// 0..63: low four bits from ql, high two from qh (layout in quant.c).
INLINE __m256i q6k_values(const rm_block_q6_k *w, int h, const int p) {
    const __m256i lo4 = _mm256_set1_epi8(15), hi2 = _mm256_set1_epi8(0x30);
    __m256i l = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32 * (p & 1)));
    __m256i hb = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
    l = p < 2 ? _mm256_and_si256(l, lo4) : _mm256_and_si256(_mm256_srli_epi16(l, 4), lo4);
    hb = p == 0 ? _mm256_slli_epi16(hb, 4) : p == 1 ? _mm256_slli_epi16(hb, 2) : p == 2 ? hb : _mm256_srli_epi16(hb, 2);
    return _mm256_or_si256(l, _mm256_and_si256(hb, hi2));
}

// The int16 multipliers for those 32 values: scale 8h+2p in the low 128-bit
// lane, 8h+2p+1 in the high one (each 16 values share one), from the 16
// scales sc8 (int8, in both lanes): pshufb puts the byte in the high half of
// each int16 and the arithmetic shift sign-extends it.
INLINE __m256i q6k_scales(__m256i sc8, int h, const int p) {
    const int g = 8 * h + 2 * p;
    const __m256i pick = _mm256_setr_epi8(-128, g, -128, g, -128, g, -128, g, -128, g, -128, g, -128, g, -128, g,   //
                                          -128, g + 1, -128, g + 1, -128, g + 1, -128, g + 1, -128, g + 1, -128, g + 1, //
                                          -128, g + 1, -128, g + 1);
    return _mm256_srai_epi16(_mm256_shuffle_epi8(sc8, pick), 8);
}

// The 32 values 32p..32p+31 of half h of a q3_K super-block, each 0..7: low
// two bits from qs, the third from hmask (layout in quant.c).
INLINE __m256i q3k_values(const rm_block_q3_k *w, int h, const int p) {
    __m256i l = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * h)), 2 * p),
                                 _mm256_set1_epi8(3));
    __m256i hb = _mm256_loadu_si256((const __m256i *)w->hmask);
    const int bit = 4 * h + p; // to bit 2
    hb = bit > 2 ? _mm256_srli_epi16(hb, bit - 2) : bit < 2 ? _mm256_slli_epi16(hb, 2 - bit) : hb;
    return _mm256_or_si256(l, _mm256_and_si256(hb, _mm256_set1_epi8(4)));
}

// q6_K (Q3 = 0) and q3_K (Q3 = 1) share the scheme: values 0..2^b-1 less an
// offset (32, 4) shared by the rows, int8 scales per 16 values.
INLINE void tile_k16(const rm_mm *m, int64_t r, int c, const int RR, const int CC, const int Q3) {
    qtile t;
    tile_start(&t, m, r, c, RR, CC);
    const int64_t nb = m->in / m->qx.blk;
    const size_t bbytes = Q3 ? sizeof(rm_block_q3_k) : sizeof(rm_block_q6_k);
    const __m256i koff = _mm256_set1_epi8(Q3 ? 4 : 32);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[4]; // a q6_K or q3_K super-block per row
        __m256i sc8[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            blk[i] = t.w[i] + (size_t)b * bbytes;
            sc8[i] = _mm256_broadcastsi128_si256(
                Q3 ? q3k_scales8(((const rm_block_q3_k *)blk[i])->scales)
                   : _mm_loadu_si128((const __m128i *)((const rm_block_q6_k *)blk[i])->scales));
        }
        __m256i isum[4][4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) isum[i][j] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                __m256i q[4], s[4];
#pragma GCC unroll 4
                for (int i = 0; i < RR; i++) {
                    const rm_block_q6_k *w6 = (const rm_block_q6_k *)blk[i];
                    if (Q3) {
                        if (p < 2) prefetch_next_rows(m, blk[i] + 64 * h + 32 * p, RR);
                        q[i] = q3k_values((const rm_block_q3_k *)blk[i], h, p);
                    } else {
                        if (p < 2) prefetch_next_rows(m, w6->ql + 64 * h + 32 * p, RR);
                        else if (p == 2) prefetch_next_rows(m, w6->qh + 32 * h, RR);
                        q[i] = q6k_values(w6, h, p);
                    }
                    s[i] = q6k_scales(sc8[i], h, p);
                }
#pragma GCC unroll 4
                for (int j = 0; j < CC; j++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(t.xq[j] + 256 * b + 128 * h + 32 * p));
                    __m256i xo = _mm256_maddubs_epi16(koff, x); // the offset, shared by the rows
#pragma GCC unroll 4
                    for (int i = 0; i < RR; i++) {
                        __m256i d = _mm256_sub_epi16(_mm256_maddubs_epi16(q[i], x), xo);
                        isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_madd_epi16(d, s[i]));
                    }
                }
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            const float dw = f16(Q3 ? ((const rm_block_q3_k *)blk[i])->d : ((const rm_block_q6_k *)blk[i])->d);
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++)
                t.acc[i][j] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), _mm256_set1_ps(dw * t.xd[j][b]), t.acc[i][j]);
        }
    }
    tile_finish(&t, m, r, c, RR, CC, NULL);
}

#define TILE_Q6_K(m, r, c, RR, CC, aux, P) tile_k16(m, r, c, RR, CC, 0)
#define TILE_Q3_K(m, r, c, RR, CC, aux, P) tile_k16(m, r, c, RR, CC, 1)
#ifndef Q6K_RR
#define Q6K_RR 3
#define Q6K_CC 3
#endif
// y[n,out] = x[n,in] @ W[out,in]^T, W q6_K, x int8 (rm_qx, blk 256). No
// walk: at one or two activation rows this kernel is bound by instructions,
// and the tile's rows share the activation loads and offset products (one
// Zen 5 core forced to AVX2, 5632x2048: 42 -> 51-54 GFLOP/s at one row; q3_K,
// whose values take fewer instructions, walks faster: 66 against 50).
DEFINE_DRIVER(rm_mm_q6_k_avx2, TILE_Q6_K, NO_PREP, Q6K_RR, Q6K_CC, WALK_NONE)
// the same for W q3_K
DEFINE_DRIVER(rm_mm_q3_k_avx2, TILE_Q3_K, NO_PREP, Q6K_RR, Q6K_CC, WALK_1_2)

// ---------------------------------------------------------------------------
// f32 / f16 / bf16 weights x f32 activations

INLINE __m256 load_w(rm_type t, const uint8_t *row, int64_t k) {
    if (t == RM_TYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * k)));
    if (t == RM_TYPE_BF16) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 2 * k)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    }
    return _mm256_loadu_ps((const float *)row + k);
}

INLINE float load_w1(rm_type t, const uint8_t *row, int64_t k) {
    if (t == RM_TYPE_F16) return f16(((const uint16_t *)row)[k]);
    if (t == RM_TYPE_BF16) return rm_bf16_to_f32(((const uint16_t *)row)[k]);
    return ((const float *)row)[k];
}

INLINE void tile_float(const rm_mm *m, rm_type t, int64_t r, int c, const int RR, const int CC) {
    const uint8_t *w[4];
    const float *x[4];
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++) w[i] = m->w + (size_t)(r + i) * m->w_row;
#pragma GCC unroll 4
    for (int j = 0; j < CC; j++) {
        x[j] = m->x + (int64_t)(c + j) * m->ldx;
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) acc[i][j] = _mm256_setzero_ps();
    }
    // Decode and small batches: the RR rows are short interleaved streams the
    // hardware prefetchers do not follow, so ask for the rows PF_TILES tiles
    // on (f16 / bf16 at one activation row, one Zen 5 core forced to AVX2:
    // 12-14 -> 28-30 GB/s). Wider batches sweep each tile over many column
    // tiles (there it measured from 0.6x to 1.25x), and f32 rows, twice as
    // long, read slower with it (two threads, one row: 37 -> 31 GB/s).
    const int pf = t != RM_TYPE_F32 && m->n <= 16;
    int64_t k = 0;
    for (; k + 8 <= m->in; k += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            if (pf && !(k & 31)) prefetch_next_rows(m, w[i] + 2 * k, RR); // once per line
            wv[i] = load_w(t, w[i], k);
        }
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            __m256 xv = _mm256_loadu_ps(x[j] + k);
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            float s = hsum8(acc[i][j]);
            for (int64_t kk = k; kk < m->in; kk++) s += load_w1(t, w[i], kk) * x[j][kk];
            rm_mm_store(m, c + j, r + i, s);
        }
}

#define TILE_F32(m, r, c, RR, CC, aux, P) tile_float(m, RM_TYPE_F32, r, c, RR, CC)
#define TILE_F16(m, r, c, RR, CC, aux, P) tile_float(m, RM_TYPE_F16, r, c, RR, CC)
#define TILE_BF16(m, r, c, RR, CC, aux, P) tile_float(m, RM_TYPE_BF16, r, c, RR, CC)
// y[n,out] = x[n,in] @ W[out,in]^T, W f32 / f16 / bf16, x f32
// (tile shapes measured: 4x3 best for f32, 3x4 for the 16-bit types, whose
// conversions need registers too)
DEFINE_DRIVER(rm_mm_f32_avx2, TILE_F32, NO_PREP, 4, 3, WALK_NONE)
DEFINE_DRIVER(rm_mm_f16_avx2, TILE_F16, NO_PREP, 3, 4, WALK_NONE)
DEFINE_DRIVER(rm_mm_bf16_avx2, TILE_BF16, NO_PREP, 3, 4, WALK_NONE)

// ---------------------------------------------------------------------------
// vector helpers

// sum_i a[i]*b[i]
float rm_dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// kernels.h's exponential of 8 values
static inline __m256 exp8(__m256 x) {
    static const float c[8] = RM_EXP_TAYLOR;
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(RM_EXP_HI)), _mm256_set1_ps(RM_EXP_LO));
    __m256 n =
        _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(RM_EXP_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-RM_EXP_LN2_HI), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-RM_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 8; i++) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[i]));
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_cvttps_epi32(n), 23)));
}

// silu(g) * u for 8 values
static inline __m256 silu_mul8(__m256 g, __m256 u) {
    __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), g)));
    return _mm256_mul_ps(_mm256_div_ps(g, den), u);
}

// Lanes [0, left) of 8 (left in 1..8), for the masked loads and stores of a
// tail, which so runs the steps of a whole vector (masked stores are slow on
// some AMD cores: whole vectors use plain ones)
static inline __m256i tail8(int64_t left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

void rm_silu_mul_f32_avx2(float *h, const float *g, const float *u, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(h + i, silu_mul8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        const __m256i k = tail8(n - i);
        _mm256_maskstore_ps(h + i, k, silu_mul8(_mm256_maskload_ps(g + i, k), _mm256_maskload_ps(u + i, k)));
    }
}

// s[i] = exp(s[i] - mx) and their sum in 16 lanes (two registers of 8: lane
// i % 16 takes value i; the tail's missing lanes add 0), the lanes added in
// order at the end
float rm_exp_sum_f32_avx2(float *s, int64_t n, float mx) {
    const __m256 m = _mm256_set1_ps(mx);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), m));
        _mm256_storeu_ps(s + i, e);
        acc[(i / 8) & 1] = _mm256_add_ps(acc[(i / 8) & 1], e);
    }
    if (i < n) {
        const __m256i k = tail8(n - i);
        __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(s + i, k), m)), _mm256_castsi256_ps(k));
        _mm256_maskstore_ps(s + i, k, e);
        acc[(i / 8) & 1] = _mm256_add_ps(acc[(i / 8) & 1], e);
    }
    float l[16], sum = 0.0f;
    _mm256_storeu_ps(l, acc[0]);
    _mm256_storeu_ps(l + 8, acc[1]);
    for (int k = 0; k < 16; k++) sum += l[k];
    return sum;
}

// s[i] *= c and the largest s[i], as rm_scale_max_f32_avx512 in 8 lanes (the
// tail's missing lanes stay -inf)
float rm_scale_max_f32_avx2(float *s, int64_t n, float c) {
    const __m256 cv = _mm256_set1_ps(c), ninf = _mm256_set1_ps(-INFINITY);
    __m256 m = ninf;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(s + i), cv);
        _mm256_storeu_ps(s + i, v);
        m = _mm256_max_ps(v, m);
    }
    if (i < n) {
        const __m256i k = tail8(n - i);
        const __m256 v = _mm256_mul_ps(_mm256_maskload_ps(s + i, k), cv);
        _mm256_maskstore_ps(s + i, k, v);
        m = _mm256_max_ps(_mm256_blendv_ps(ninf, v, _mm256_castsi256_ps(k)), m);
    }
    float l[8];
    _mm256_storeu_ps(l, m);
    return lanes_max(l, 8);
}

void rm_scale_f32_avx2(float *s, int64_t n, float c) {
    const __m256 cv = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), cv));
    if (i < n) {
        const __m256i k = tail8(n - i);
        _mm256_maskstore_ps(s + i, k, _mm256_mul_ps(_mm256_maskload_ps(s + i, k), cv));
    }
}

// y[i] += a*x[i]
void rm_axpy_f32_avx2(float *y, float a, const float *x, int64_t n) {
    __m256 av = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

// sum_i a[i] (the bandwidth probe)
double rm_sum_f32_avx2(const float *a, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(a + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(a + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(a + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(a + i + 24));
    }
    double s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i];
    return s;
}

// ---------------------------------------------------------------------------
// activation quantization: same arithmetic as rm_quantize_x (max |x|, scale
// 127/amax, round to nearest even), so results match it bit for bit.

INLINE __m256i pack_32_i8(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i abcd = _mm256_packs_epi16(ab, cd); // 4-byte groups in order a0 b0 c0 d0 a1 b1 c1 d1
    return _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// qx[n,in] int8 = quantize(x[n,in]) per qx.blk
void rm_quantize_x_avx2(const rm_mm *m, int c0, int c1) {
    const int blk = m->qx.blk;
    const int64_t nb = m->in / blk, ns = m->in / 32;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int c = c0; c < c1; c++) {
        const float *x = m->x + (int64_t)c * m->ldx;
        int8_t *q = m->qx.q + (int64_t)c * m->in;
        int16_t *sum = m->qx.sum + (int64_t)c * ns;
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + b * blk;
            __m256 mx = _mm256_setzero_ps();
            for (int j = 0; j < blk; j += 8) mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(xb + j), abs_mask));
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_movehdup_ps(h));
            float amax = _mm_cvtss_f32(h);
            m->qx.d[c * nb + b] = amax / 127.0f;
            __m256 id = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0);
            for (int j = 0; j < blk; j += 32) {
                __m256i v[4];
                for (int k = 0; k < 4; k++)
                    v[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 8 * k), id));
                _mm256_storeu_si256((__m256i *)(q + b * blk + j), pack_32_i8(v[0], v[1], v[2], v[3]));
                __m256i s = _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3]));
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
                sum[(b * blk + j) / 32] = (int16_t)_mm_cvtsi128_si32(s4);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Compute ceiling probes: `iters` rounds of 10 independent chains, every
// operand in registers, so nothing but the execution ports limits them.
//   full = 1: what the q8_0 / q4_0 kernels do per (weight block, activation
//             block) pair: sign, maddubs, madd, cvt, fma
//   full = 0: maddubs + madd + add, the least any int8 dot product needs on
//             AVX2 without VNNI (vpdpbusd does it in one instruction)
// Returns a value derived from every chain so that none is optimised away.
float rm_int8_peak_avx2(long iters, int full) {
    __m256i x = _mm256_set1_epi8(3), w = _mm256_set1_epi8(-5), ones = _mm256_set1_epi16(1);
    __m256 s = _mm256_set1_ps(1e-7f);
    __m256 f[10];
    __m256i a[10];
    for (int k = 0; k < 10; k++) f[k] = _mm256_setzero_ps(), a[k] = _mm256_setzero_si256();
    if (full) {
        __m256i aw = _mm256_abs_epi8(w);
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 10
            for (int k = 0; k < 10; k++) {
                __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
                f[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)), s, f[k]);
                __asm__ volatile("" : "+x"(x)); // a new x each time: nothing to hoist
            }
        }
    } else {
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 10
            for (int k = 0; k < 10; k++) {
                a[k] = _mm256_add_epi32(a[k], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones));
                __asm__ volatile("" : "+x"(x));
            }
        }
    }
    __m256 t = _mm256_setzero_ps();
    for (int k = 0; k < 10; k++) t = _mm256_add_ps(t, _mm256_add_ps(f[k], _mm256_cvtepi32_ps(a[k])));
    return hsum8(t);
}
