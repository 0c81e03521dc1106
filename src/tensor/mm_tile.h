// mm_tile.h — what the per-ISA matmul kernels share (included by
// matmul_avx2.c and matmul_avx512.c, so each copy is compiled with its file's
// ISA flags): the driver that covers a rectangle of (weight row, activation
// row) pairs with register tiles, the per-tile precomputation of block
// scales, the q4_K scale unpacking and the prefetch distance.
//
// Every (r, c) dot goes through the same operations whatever tile it falls
// in, so results are bitwise independent of how rows are split (threads,
// batch size); the kernels keep that promise by construction.
#ifndef RM_TENSOR_MM_TILE_H
#define RM_TENSOR_MM_TILE_H
#include "tensor/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

INLINE float f16(uint16_t h) { return _cvtsh_ss(h); }

// The largest of a vector's lanes l[0..n), in order by the scalar rule
// (take l[k] if it is greater: a NaN is passed over); -inf for none.
INLINE float lanes_max(const float *l, int n) {
    float mx = -INFINITY;
    for (int k = 0; k < n; k++) mx = l[k] > mx ? l[k] : mx;
    return mx;
}

// Decode streams W once; rows of a tile are short (2 KiB at in = 2048), too
// short for the hardware prefetcher to ramp up, so fetch the same place in
// the rows three tiles ahead (3*RR rows further on; measured best of 1..4).
#ifndef PF_TILES
#define PF_TILES 3
#endif
// Bytes from a place in a weight row to the same place PF_TILES tiles of RR rows on.
INLINE size_t tiles_ahead(const rm_mm *m, int RR) { return (size_t)PF_TILES * (size_t)RR * m->w_row; }
INLINE void prefetch_next_rows(const rm_mm *m, const void *p, int RR) {
    _mm_prefetch((const char *)p + tiles_ahead(m, RR), _MM_HINT_T0);
}

// Per-weight-tile data a kernel may precompute once and reuse while the tile
// sweeps many activation rows (f32 block scales, unpacked q4_K scales).
// AUX_N floats per weight row; rows too long for it skip the precomputation.
#define AUX_N 1024
typedef struct { // one q4_K super-block, unpacked
    float d, dmin;
    int16_t ls[8], lm[8];
} q4k_prep;
typedef union {
    float f[4][AUX_N];         // q8_0 / q4_0: block scales
    q4k_prep k[4][AUX_N / 10]; // q4_K: super-blocks
    struct {                   // AVX-512 q8_0 / q4_0 / q4_K: 16-block groups (see rm_qx)
        float d[4][AUX_N];     // the blocks' scales (q4_K: d ls per sub-block)
        float m[4][AUX_N];     // q4_K: dmin lm per sub-block
        uint8_t q[4][AUX_N * 32] __attribute__((aligned(64)));
    } t16;
} tile_aux;

// Generates the driver `name(m, r0, r1, c0, c1)` that covers the rectangle
// with TILE(m, r, c, RR, CC, aux, PREPPED) calls: full RR x CC tiles, then
// the edges with tiles of one row and/or fewer columns. When a weight tile
// meets more than one activation tile, PREP(m, r, RR, aux) fills aux first (it
// returns 0 when the row does not fit) and the tiles read it.
//
// At the activation-row counts in the mask WALK (bit n: n rows; decode
// sizes) the driver walks the weight rows one at a time instead: W is then
// read as one sequential stream, which the prefetchers follow at full
// bandwidth, where RR interleaved streams of short rows (2 KiB at in = 2048)
// stalled at about 75% of it (q8_0 2048x2048, n = 1, one thread: 0.25 ->
// 0.20 ms, `ramole-bench kernels --n 1`). It pays only where one row's chain
// of FMAs (one accumulator) still outruns memory: q8_0 (34 bytes per FMA)
// and q4_K; f16 (16 bytes per FMA) and q4_0 (18) are faster with RR rows in
// flight (f16 0.40 vs 0.61 ms), so they pass WALK_NONE, as does AVX2 q6_K
// (bound by instructions, which the rows share; the AVX-512 r16 q4_0
// and q4_K kernels walk: their integer dots run in two chains, see
// r16_ahead in matmul_avx512.c).
// Per (r, c) the operations are the same either way, so the results are too.
#define WALK_NONE 0u
#define WALK_1_2 0x6u // one and two activation rows
#define DEFINE_COLS(name, TILE, PREP, RR, CC)                                                                          \
    static inline __attribute__((always_inline)) void name(const rm_mm *m, int64_t r, int c0, int c1, tile_aux *aux) { \
        int c = c0;                                                                                                    \
        if (c1 - c0 > CC && PREP(m, r, RR, aux)) {                                                                     \
            for (; c + CC <= c1; c += CC) TILE(m, r, c, RR, CC, aux, 1);                                               \
            if (CC > 2 && c + 2 <= c1) TILE(m, r, c, RR, 2, aux, 1), c += 2;                                           \
            for (; c < c1; c++) TILE(m, r, c, RR, 1, aux, 1);                                                          \
        }                                                                                                              \
        for (; c + CC <= c1; c += CC) TILE(m, r, c, RR, CC, NULL, 0);                                                  \
        if (CC > 2 && c + 2 <= c1) TILE(m, r, c, RR, 2, NULL, 0), c += 2;                                              \
        for (; c < c1; c++) TILE(m, r, c, RR, 1, NULL, 0);                                                             \
    }
#define DEFINE_DRIVER(name, TILE, PREP, RR, CC, WALK)                                                                  \
    DEFINE_COLS(name##_cols, TILE, PREP, RR, CC)                                                                       \
    DEFINE_COLS(name##_cols1, TILE, PREP, 1, CC)                                                                       \
    void name(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1) {                                                \
        tile_aux aux[1];                                                                                               \
        int64_t r = r0;                                                                                                \
        if (c1 - c0 >= 32 || !((WALK) >> (c1 - c0) & 1))                                                              \
            for (; r + RR <= r1; r += RR) name##_cols(m, r, c0, c1, aux);                                              \
        for (; r < r1; r++) name##_cols1(m, r, c0, c1, aux);                                                           \
    }

// No precomputation (float kernels).
#define NO_PREP(m, r, RR, aux) ((void)(aux), 0)

// aux[i][b] = f32 scale of block b of weight row r+i, for the 32-element
// block types (q8_0 and q4_0 both start their blocks with the f16 scale).
static inline int prep_block_scales(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    const int64_t nb = m->in / 32;
    const size_t bbytes = rm_type_block_bytes(m->type);
    if (nb > AUX_N) return 0;
    for (int i = 0; i < RR; i++) {
        const uint8_t *row = m->w + (size_t)(r + i) * m->w_row;
        for (int64_t b = 0; b < nb; b++) {
            uint16_t h;
            memcpy(&h, row + b * bbytes, 2);
            aux->f[i][b] = f16(h);
        }
    }
    return 1;
}

// Unpacks the 12 bytes of 6-bit scales/mins (layout at rm_q4k_scale_min) four
// at a time with 32-bit word operations: with u0, u1, u2 the words of bytes
// 0-3, 4-7, 8-11, the bytes of
//   ls[0..3] = u0 & 63                     lm[0..3] = u1 & 63
//   ls[4..7] = (u2 & 15) | (u0 >> 6) << 4  lm[4..7] = (u2 >> 4) | (u1 >> 6) << 4
// q4k_scale_bytes gives the bytes ls[0..7], lm[0..7].
INLINE __m128i q4k_scale_bytes(const rm_block_q4_k *b) {
    uint32_t u0, u1, u2;
    memcpy(&u0, b->scales, 4);
    memcpy(&u1, b->scales + 4, 4);
    memcpy(&u2, b->scales + 8, 4);
    uint32_t ls_lo = u0 & 0x3f3f3f3fu, lm_lo = u1 & 0x3f3f3f3fu;
    uint32_t ls_hi = (u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u);
    uint32_t lm_hi = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u);
    return _mm_setr_epi32((int)ls_lo, (int)ls_hi, (int)lm_lo, (int)lm_hi);
}
INLINE void q4k_unpack(const rm_block_q4_k *b, q4k_prep *p) {
    __m128i v = q4k_scale_bytes(b);
    _mm_storeu_si128((__m128i *)p->ls, _mm_cvtepu8_epi16(v));
    _mm_storeu_si128((__m128i *)p->lm, _mm_cvtepu8_epi16(_mm_srli_si128(v, 8)));
    p->d = f16(b->d);
    p->dmin = f16(b->dmin);
}

// The 16 scales of a q3_K block as int8 (rm_q3k_scales): the low nibbles of
// sc[0..7] then their high nibbles, each with two bits of sc[8..11] on top
// (scales 4k..4k+3 take bits 2k, 2k+1 of bytes 8..11).
INLINE __m128i q3k_scales8(const uint8_t *sc) {
    uint32_t t;
    memcpy(&t, sc + 8, 4);
    const __m128i m4 = _mm_set1_epi8(15), lo8 = _mm_loadl_epi64((const __m128i *)sc);
    __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(lo8, m4), _mm_and_si128(_mm_srli_epi16(lo8, 4), m4));
    __m128i hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)t), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
    return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

// The super-blocks of q4_K and q5_K start alike (d, dmin, 12 bytes of
// scales), so both unpack through the q4_K struct; they differ in size only.
static inline int prep_q4k(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    const int64_t nb = m->in / 256;
    const size_t bb = rm_type_block_bytes(m->type);
    if (nb > AUX_N / 10) return 0;
    for (int i = 0; i < RR; i++) {
        const uint8_t *w = m->w + (size_t)(r + i) * m->w_row;
        for (int64_t b = 0; b < nb; b++) q4k_unpack((const rm_block_q4_k *)(w + (size_t)b * bb), &aux->k[i][b]);
    }
    return 1;
}

#endif
