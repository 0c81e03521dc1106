// matmul_avx512.c — AVX-512 matmul kernels (compiled with the AVX-512 flags;
// the quantized ones are called only when base/cpu.h reports avx512vnni too,
// the float ones when it reports avx512f/bw/vl/dq).
//
// Same shape as the AVX2 kernels (mm_tile.h): register tiles of RR weight rows
// x CC activation rows, every (r, c) dot through the same operations whatever
// the tile, so results do not depend on how rows are split. With 32 vector
// registers the tiles are bigger (4 x 4) and each register holds 64 int8
// products.
//
// q8_0 and q4_0 weights x int8 activations, 16 blocks of 32 per step:
//   - the weights become unsigned bytes (q8_0: w + 128; q4_0: the nibble q,
//     which is w + 8) so that vpdpbusd (unsigned x signed bytes, four
//     products summed into each int32 lane) does the multiply-adds;
//   - 16 blocks are transposed so that 32-bit lane l of eight vectors holds
//     block l (activations once per call, rm_qx_t16_avx512; weights once per
//     tile when the tile meets many activation rows, else on the fly): eight
//     vpdpbusd leave in lane l the integer dot of block l;
//   - the offset is taken off exactly, in integers: the int32 accumulator
//     starts at -128 * sum(x) (q8_0) or -8 * sum(x) (q4_0) of each block;
//   - one cvt, one multiply by the 16 scale products d_w * d_x and one FMA
//     per 16 blocks finish the step, so the float work is 1/8 of a block
//     pair's and vpdpbusd sets the pace (prefill about 3x the AVX2 kernel).
// The block scales are gathered with one vpgatherdd (16 scalar loads and a
// vector reload cost a store-forwarding stall per step: decode at 50% of the
// read bandwidth instead of 80-90%).
// q4_K weights x int8 activations, 16 sub-blocks of 32 (two super-blocks) per
// step, the same way: the nibbles q are unsigned already (a weight is
// d ls q - dmin lm, ls / lm its sub-block's 6-bit scale / min), so vpdpbusd
// takes them as they are and no offset is needed; the 16 sub-blocks are
// transposed like q8_0's blocks, eight vpdpbusd leave the exact integer dot of
// sub-block 16G+l in lane l, and per lane
//     acc += cvt(dot) (d ls dx)    acc -= (dmin lm) (dx sum x)
// with d ls and dmin lm exact in f32 (an f16 times a 6-bit integer), dx the
// activation scale of the lane's super-block and sum x its sub-block's sum.
#include "tensor/mm_tile.h"
#include "base/fp16.h"
#include "tensor/mm_avx512.h"

#include <immintrin.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

enum { KIND_Q8_0, KIND_Q4_0, KIND_Q4_1, KIND_Q5_0, KIND_Q5_1 };
#define KIND_X (-1) // the activations (load16)

// Bytes of a block of 32 of each kind; its quants are its last 32 (q8_0) or
// 16 bytes (the nibble kinds), q5_0 / q5_1's fifth bits the 4 before them.
INLINE int64_t blk_bytes(const int KIND) {
    return KIND == KIND_Q8_0   ? (int64_t)sizeof(rm_block_q8_0)
           : KIND == KIND_Q4_0 ? (int64_t)sizeof(rm_block_q4_0)
           : KIND == KIND_Q4_1 ? (int64_t)sizeof(rm_block_q4_1)
           : KIND == KIND_Q5_0 ? (int64_t)sizeof(rm_block_q5_0)
                               : (int64_t)sizeof(rm_block_q5_1);
}
INLINE int64_t quants_at(const int KIND) { return blk_bytes(KIND) - (KIND == KIND_Q8_0 ? 32 : 16); }

// The 8 x 8 transposition of 32-bit groups in each 256-bit half: in[m] holds
// block m in its low half and block m+8 in its high half (8 groups each);
// out[g] gets group g of block l in lane l (l = 0..15).
INLINE void transpose16(const __m512i in[8], __m512i out[8]) {
    __m512i t[8], u[8];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(in[2 * k], in[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(in[2 * k], in[2 * k + 1]);
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) { // blocks 0-3 (h = 0) and 4-7 of each half
        __m512i *a = t + 4 * h, *o = u + 4 * h;
        o[0] = _mm512_unpacklo_epi64(a[0], a[2]);
        o[1] = _mm512_unpackhi_epi64(a[0], a[2]);
        o[2] = _mm512_unpacklo_epi64(a[1], a[3]);
        o[3] = _mm512_unpackhi_epi64(a[1], a[3]);
    }
    // u[k] 128-bit lanes: group k (blocks 0-3), group k+4 (0-3), group k (8-11), group k+4 (8-11);
    // u[k+4] the same for blocks 4-7 and 12-15.
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        out[k] = _mm512_permutex2var_epi64(u[k], lo, u[k + 4]);
        out[k + 4] = _mm512_permutex2var_epi64(u[k], hi, u[k + 4]);
    }
}

// 32 bytes of block l (l < nk; zeros from nk on) of a row whose blocks of 32
// values sit BB bytes apart from p, as unsigned bytes (q8_0: w + 128; q4_0:
// the nibble q, that is w + 8), transposed as in rm_qx. x (KIND_X) is the
// same with signed bytes, 32 bytes apart.
// q5_0 / q5_1: the fifth bits of the 16 blocks (each block's little-endian
// word qh, 4 bytes before its quants at p) into out[8] as load16 leaves them:
// value e of block l is byte e % 4 of lane l of out[e / 4 % 4 + 4 (e >= 16)]
// and takes bit e of the word as 16, or'ed in.
INLINE void fifth16(const uint8_t *p, int64_t BB, int nk, __m512i out[8]) {
    __m512i h;
    if (nk == 16) {
        const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32((int)BB));
        h = _mm512_i32gather_epi32(at, (const void *)(p - 4), 1);
    } else {
        uint32_t w[16];
        for (int k = 0; k < 16; k++) {
            w[k] = 0;
            if (k < nk) memcpy(&w[k], p + k * BB - 4, 4);
        }
        h = _mm512_loadu_si512(w);
    }
    const __m512i b16 = _mm512_set1_epi8(16);
#pragma GCC unroll 8
    for (int v = 0; v < 8; v++) { // values e = 4 (v % 4) + 16 (v / 4) + k: bit e is bit e % 8 of byte e / 8
        const int e0 = 4 * (v % 4) + 16 * (v / 4), byte = e0 / 8, sh = e0 % 8;
        const __m512i pick = _mm512_set1_epi32(0x01010101 * byte);
        const __m512i lane = _mm512_set4_epi32(0x0c0c0c0c, 0x08080808, 0x04040404, 0); // 4 d for 32-bit lane d
        const __m512i bits = _mm512_set1_epi32((int)(0x08040201u << sh));
        // every byte of a 32-bit lane gets that lane's byte `byte` (pshufb within 128 bits: + 4 d)
        __m512i b = _mm512_shuffle_epi8(h, _mm512_add_epi8(pick, lane));
        out[v] = _mm512_mask_add_epi8(out[v], _mm512_test_epi8_mask(b, bits), out[v], b16);
    }
}

INLINE void load16(const uint8_t *p, int64_t BB, int nk, const int KIND, __m512i out[8]) {
    __m512i in[8];
    if (KIND != KIND_Q8_0 && KIND != KIND_X) {
        // q4_0 quants are 16 bytes a block, byte k holding values k (low
        // nibble) and k+16: transpose the packed bytes (a 4 x 4 transposition
        // of 32-bit groups in each 128-bit lane, lane q holding blocks 4q..4q+3),
        // then split: out[g] and out[g+4] (g < 4) take values 4g.. and 16+4g..,
        // the same places as x's vectors g and g+4.
        __m512i a[4], t[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
#define QS16(q) (4 * (q) + k < nk ? _mm_loadu_si128((const __m128i *)(p + (4 * (q) + k) * BB)) : _mm_setzero_si128())
            __m512i v = _mm512_castsi128_si512(QS16(0));
            v = _mm512_inserti32x4(v, QS16(1), 1);
            v = _mm512_inserti32x4(v, QS16(2), 2);
            a[k] = _mm512_inserti32x4(v, QS16(3), 3);
#undef QS16
        }
        t[0] = _mm512_unpacklo_epi32(a[0], a[1]);
        t[1] = _mm512_unpackhi_epi32(a[0], a[1]);
        t[2] = _mm512_unpacklo_epi32(a[2], a[3]);
        t[3] = _mm512_unpackhi_epi32(a[2], a[3]);
        __m512i g4[4] = {_mm512_unpacklo_epi64(t[0], t[2]), _mm512_unpackhi_epi64(t[0], t[2]),
                         _mm512_unpacklo_epi64(t[1], t[3]), _mm512_unpackhi_epi64(t[1], t[3])};
        const __m512i lo4 = _mm512_set1_epi8(15);
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            out[g] = _mm512_and_si512(g4[g], lo4);
            out[g + 4] = _mm512_and_si512(_mm512_srli_epi16(g4[g], 4), lo4);
        }
        if (KIND == KIND_Q5_0 || KIND == KIND_Q5_1) fifth16(p, BB, nk, out);
        return;
    }
    for (int m = 0; m < 8; m++) {
        const uint8_t *a = p + m * BB, *b = p + (m + 8) * BB;
        __m256i va = m < nk ? _mm256_loadu_si256((const __m256i *)a) : _mm256_setzero_si256();
        __m256i vb = m + 8 < nk ? _mm256_loadu_si256((const __m256i *)b) : _mm256_setzero_si256();
        in[m] = _mm512_inserti64x4(_mm512_castsi256_si512(va), vb, 1);
    }
    transpose16(in, out);
    if (KIND == KIND_Q8_0)
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) out[g] = _mm512_xor_si512(out[g], _mm512_set1_epi8((char)0x80));
}

// Prefetches a 16-block group (from p) of the rows the next tiles take:
// the prefetchers do not follow RR interleaved streams of short rows.
INLINE void prefetch_group(const rm_mm *m, const uint8_t *p, int64_t BB, int RR) {
    for (int64_t pf = 0; pf < 16 * BB; pf += 64) prefetch_next_rows(m, p + pf, RR);
}

// The f32 scales of blocks b .. b+nk-1 of a weight row (zeros after).
INLINE __m512 scales16(const uint8_t *row, int64_t b, int64_t BB, int nk) {
    if (nk == 16) { // one gather of the 4 bytes at each block's start, the scale being the low 2
        const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32((int)BB));
        __m512i v = _mm512_i32gather_epi32(at, (const void *)(row + b * BB), 1);
        return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    }
    uint16_t h[16];
#pragma GCC unroll 16
    for (int k = 0; k < 16; k++) {
        h[k] = 0;
        if (k < nk) memcpy(&h[k], row + (b + k) * BB, 2);
    }
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
}

void rm_qx_t16_avx512(const rm_mm *m, int c0, int c1) {
    const rm_qx *qx = &m->qx;
    const int64_t nb = m->in / 32, per = qx->blk / 32, nd = nb / per; // per: blocks of 32 sharing a scale
    for (int c = c0; c < c1; c++)
        for (int64_t G = 0; G < qx->groups; G++) {
            const int64_t b = 16 * G, at = c * qx->groups + G;
            const int nk = nb - b < 16 ? (int)(nb - b) : 16;
            __m512i v[8];
            load16((const uint8_t *)(qx->q + c * m->in + 32 * b), 32, nk, KIND_X, v);
            for (int g = 0; g < 8; g++) _mm512_store_si512((void *)(qx->tq + at * 512 + 64 * g), v[g]);
            for (int k = 0; k < 16; k++) {
                qx->td[at * 16 + k] = k < nk ? qx->d[c * nd + (b + k) / per] : 0;
                qx->ts[at * 16 + k] = k < nk ? qx->sum[c * nb + b + k] : 0;
            }
        }
}

// Weights stored in the r16 layout (repack.c): group G of a row's full
// groups is already what load16 makes of it, the q4_0 nibbles still packed
// (split here: two operations per 64 bytes).
INLINE void load_r16(const uint8_t *q, const int KIND, __m512i out[8]) {
    if (KIND == KIND_Q4_0) {
        const __m512i lo4 = _mm512_set1_epi8(15);
#pragma GCC unroll 4
        for (int g = 0; g < 4; g++) {
            __m512i v = _mm512_loadu_si512((const void *)(q + 64 * g));
            out[g] = _mm512_and_si512(v, lo4);
            out[g + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
        }
        return;
    }
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++) out[g] = _mm512_loadu_si512((const void *)(q + 64 * g));
}

// How far ahead (bytes) prefetch_r16 fetches for tiles of RR rows: for
// q8_0 the same place PF_TILES tiles on, as prefetch_next_rows does; for the
// 4-bit rows (NIB: q4_0, q4_K) about 8 KB (whole rows, at least the tile's
// height; three tiles ahead is 12 rows of 4-row tiles, 38 KB at in = 5632,
// more than L1 keeps until it is read).
// Decode walks the rows one at a time (WALK_1_2, mm_tile.h), one sequential
// stream, for every r16 kind. A 4-bit row's group is 256 bytes
// for eight vpdpbusd, so with them in one chain (dot8 had one) the walk was
// bound by that chain's latency (67-74% of the bandwidth) and 4-row tiles
// were faster; with the eight in two chains the walk took `ramole bench`
// decode on the q4_0 TinyLlama shape from 57.1 to 68.6 tok/s (71% -> 85% of
// the bandwidth bound per run), Zen 5, 5 alternating runs, every pair faster.
INLINE size_t r16_ahead(const rm_mm *m, const int NIB, int RR) {
    const size_t far = tiles_ahead(m, RR), tile = (size_t)RR * m->w_row;
    if (!NIB) return far;
    const size_t near = (8192 + m->w_row / 2) / m->w_row * m->w_row; // whole rows, about 8 KB
    return near < tile ? tile : near < far ? near : far;
}

// Prefetches group G (quants and scales) of the rows `ahead` bytes on, as
// prefetch_group does for the file's layout.
INLINE void prefetch_r16(const uint8_t *row, int64_t G, int64_t GQ, int64_t F, size_t ahead) {
    for (int64_t pf = 0; pf < GQ; pf += 64) _mm_prefetch((const char *)row + G * GQ + pf + ahead, _MM_HINT_T0);
    _mm_prefetch((const char *)row + F * GQ + 32 * G + ahead, _MM_HINT_T0);
}

// aux->t16: the transposed unsigned quants and f32 scales of weight rows
// r .. r+RR-1 (groups of 16 blocks, zero-padded). R16: the row's full groups
// are stored that way already (repack.c) and are only copied (aligned, the
// q4_0 nibbles split).
INLINE int prep_t16(const rm_mm *m, int64_t r, int RR, tile_aux *aux, const int KIND, const int R16) {
    const int64_t nb = m->in / 32, BB = blk_bytes(KIND);
    const int64_t groups = (nb + 15) / 16, GQ = KIND == KIND_Q8_0 ? 512 : 256, F = R16 ? nb / 16 : 0;
    if (groups * 16 > AUX_N) return 0;
    const size_t ahead = R16 ? r16_ahead(m, KIND == KIND_Q4_0, RR) : 0;
    for (int i = 0; i < RR; i++) {
        const uint8_t *row = m->w + (size_t)(r + i) * m->w_row;
        for (int64_t G = 0; G < groups; G++) {
            const int64_t b = 16 * G;
            const int nk = nb - b < 16 ? (int)(nb - b) : 16;
            __m512i v[8];
            if (G < F) {
                prefetch_r16(row, G, GQ, F, ahead);
                load_r16(row + G * GQ, KIND, v);
                _mm512_storeu_ps(&aux->t16.d[i][b],
                                 _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + F * GQ + 32 * G))));
            } else {
                prefetch_group(m, row + b * BB, BB, RR);
                load16(row + b * BB + quants_at(KIND), BB, nk, KIND, v);
                _mm512_storeu_ps(&aux->t16.d[i][b], scales16(row, b, BB, nk));
                if (KIND == KIND_Q4_1 || KIND == KIND_Q5_1) // the mins, after d
                    _mm512_storeu_ps(&aux->t16.m[i][b], scales16(row + 2, b, BB, nk));
            }
            for (int g = 0; g < 8; g++) _mm512_store_si512((void *)(aux->t16.q[i] + G * 512 + 64 * g), v[g]);
        }
    }
    return 1;
}
static int prep_t16_q8_0(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q8_0, 0);
}
static int prep_t16_q4_0(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q4_0, 0);
}
static int prep_t16_q4_1(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q4_1, 0);
}
static int prep_t16_q5_0(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q5_0, 0);
}
static int prep_t16_q5_1(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q5_1, 0);
}
static int prep_r16_q8_0(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q8_0, 1);
}
static int prep_r16_q4_0(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16(m, r, RR, aux, KIND_Q4_0, 1);
}

// Rows [r0, r1) of W (q8_0 / q4_0, `in` elements) into the r16 layout, in
// place; tmp holds one row. The quants go through load16 (the layout the
// kernels transpose to on the fly), the scales are gathered as f16.
static void k16_pack_rows(uint8_t *w, size_t w_row, int64_t in, int64_t r0, int64_t r1, uint8_t *tmp);
void rm_r16_pack_rows_avx512(int base, uint8_t *w, size_t w_row, int64_t in, int64_t r0, int64_t r1, uint8_t *tmp) {
    if (base == RM_TYPE_Q4_K) {
        k16_pack_rows(w, w_row, in, r0, r1, tmp);
        return;
    }
    const int KQ4 = base == RM_TYPE_Q4_0;
    const int64_t BB = KQ4 ? (int64_t)sizeof(rm_block_q4_0) : (int64_t)sizeof(rm_block_q8_0);
    const int64_t GQ = KQ4 ? 256 : 512, F = in / 32 / 16;
    const __m512i at = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32((int)BB));
    for (int64_t r = r0; r < r1; r++) {
        uint8_t *row = w + (size_t)r * w_row;
        memcpy(tmp, row, (size_t)(16 * F * BB));
        for (int64_t G = 0; G < F; G++) {
            const uint8_t *src = tmp + 16 * G * BB;
            uint8_t *q = row + G * GQ;
            __m512i v[8];
            if (KQ4) { // load16 splits the nibbles; store them packed again
                load16(src + 2, BB, 16, KIND_Q4_0, v);
                for (int g = 0; g < 4; g++)
                    _mm512_storeu_si512((void *)(q + 64 * g), _mm512_or_si512(v[g], _mm512_slli_epi16(v[g + 4], 4)));
            } else {
                load16(src + 2, BB, 16, KIND_Q8_0, v);
                for (int g = 0; g < 8; g++) _mm512_storeu_si512((void *)(q + 64 * g), v[g]);
            }
            __m512i d = _mm512_i32gather_epi32(at, (const void *)src, 1);
            _mm256_storeu_si256((__m256i *)(row + F * GQ + 32 * G), _mm512_cvtepi32_epi16(d));
        }
    }
}

// A register tile's row pointers and accumulators: RR weight rows from r,
// CC activation rows from c, their int8 values, scales and sums from the
// 16-block copy of rm_qx (T16) or from the plain one.
typedef struct {
    const uint8_t *w[4];
    const int8_t *xq[4];
    const float *xd[4];
    const int16_t *xs[4];
    __m512 acc[4][4];
} ztile;

INLINE void ztile_start(ztile *t, const rm_mm *m, int64_t r, int c, const int RR, const int CC, const int T16) {
    const int64_t groups = m->qx.groups, nb = m->in / m->qx.blk;
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++) t->w[i] = m->w + (size_t)(r + i) * m->w_row;
#pragma GCC unroll 4
    for (int j = 0; j < CC; j++) {
        const int64_t cj = c + j;
        t->xq[j] = T16 ? m->qx.tq + cj * groups * 512 : m->qx.q + cj * m->in;
        t->xd[j] = T16 ? m->qx.td + cj * groups * 16 : m->qx.d + cj * nb;
        t->xs[j] = T16 ? m->qx.ts + cj * groups * 16 : m->qx.sum + cj * (m->in / 32);
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) t->acc[i][j] = _mm512_setzero_ps();
    }
}

INLINE void ztile_finish(const ztile *t, const rm_mm *m, int64_t r, int c, const int RR, const int CC) {
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) rm_mm_store(m, c + j, r + i, hsum16(t->acc[i][j]));
}

// The integer part of a step of the 16-lane kernels: isum[i][j] (started by
// the caller) += the eight vpdpbusd of weight row i's group at b with
// activation row j's, the weights from the tile's aligned copy (prepped) or
// from wv (one row, dot8).
INLINE void dots_prepped(const int RR, const int CC, __m512i isum[4][4], const tile_aux *aux,
                         const int8_t *const *xq, int64_t b) {
#pragma GCC unroll 8
    for (int g = 0; g < 8; g++)
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            __m512i xv = _mm512_load_si512((const void *)(xq[j] + b * 32 + 64 * g));
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                __m512i wv = _mm512_load_si512((const void *)(aux->t16.q[i] + b * 32 + 64 * g));
                isum[i][j] = _mm512_dpbusd_epi32(isum[i][j], wv, xv);
            }
        }
}
// acc + the eight vpdpbusd of wv with x, in two chains of four (the sum is
// of integers: the same whatever the order).
INLINE __m512i dot8(__m512i acc, const __m512i wv[8], const int8_t *xq) {
    __m512i odd = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int g = 0; g < 8; g += 2) {
        acc = _mm512_dpbusd_epi32(acc, wv[g], _mm512_load_si512((const void *)(xq + 64 * g)));
        odd = _mm512_dpbusd_epi32(odd, wv[g + 1], _mm512_load_si512((const void *)(xq + 64 * g + 64)));
    }
    return _mm512_add_epi32(acc, odd);
}

// One tile, 16 blocks per step. Per (weight row i, activation row j) and
// group: an int32 vector starts at -OFF * sum(x) of each block (OFF = 128 for
// q8_0, 8 for q4_0, 16 for q5_0, 0 for q4_1 / q5_1), eight vpdpbusd add the
// unsigned weights times x, which leaves lane l = the exact integer dot of
// block 16G+l; one cvt, one multiply by d_w * d_x and one FMA add it to the
// f32 lanes (q4_1 / q5_1: one more FMA adds m_w * d_x sum x). The weights come from aux
// (PREPPED) or are transposed here; the integer sums are the same either way,
// so the bits are too.
INLINE void tile_blk32(const rm_mm *m, int64_t r, int c, const int RR, const int CC, tile_aux *aux, const int PREPPED,
                       const int KIND, const int R16) {
    const int64_t BB = blk_bytes(KIND);
    const int SH = KIND == KIND_Q8_0 ? 7 : KIND == KIND_Q4_0 ? 3 : KIND == KIND_Q5_0 ? 4 : -1; // OFF = 1 << SH
    const int MIN = KIND == KIND_Q4_1 || KIND == KIND_Q5_1;
    const int64_t nb = m->in / 32, groups = m->qx.groups;
    const int64_t GQ = KIND == KIND_Q8_0 ? 512 : 256, F = R16 ? nb / 16 : 0; // r16: full groups rearranged
    const size_t ahead = R16 ? r16_ahead(m, KIND == KIND_Q4_0, RR) : 0;
    ztile t;
    ztile_start(&t, m, r, c, RR, CC, 1);
    for (int64_t G = 0; G < groups; G++) {
        const int64_t b = 16 * G;
        const int nk = nb - b < 16 ? (int)(nb - b) : 16;
        __m512i off[4], isum[4][4];
        __m512 dx[4], dw[4], xm[4], mw[4];
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            __m512i sx = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(t.xs[j] + b)));
            off[j] = SH < 0 ? _mm512_setzero_si512() : _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sx, SH));
            dx[j] = _mm512_loadu_ps(t.xd[j] + b);
            if (MIN) xm[j] = _mm512_mul_ps(dx[j], _mm512_cvtepi32_ps(sx));
        }
        if (PREPPED) {
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                dw[i] = _mm512_loadu_ps(&aux->t16.d[i][b]);
                if (MIN) mw[i] = _mm512_loadu_ps(&aux->t16.m[i][b]);
#pragma GCC unroll 4
                for (int j = 0; j < CC; j++) isum[i][j] = off[j];
            }
            dots_prepped(RR, CC, isum, aux, t.xq, b);
        } else {
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                __m512i wv[8];
                if (G < F) {
                    const uint8_t *q = t.w[i] + G * GQ, *sc = t.w[i] + F * GQ + 32 * G;
                    prefetch_r16(t.w[i], G, GQ, F, ahead);
                    load_r16(q, KIND, wv);
                    dw[i] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)sc));
                } else { // the blocks as stored (a row's last nb % 16 stay so in r16 too)
                    const uint8_t *qs = t.w[i] + b * BB + quants_at(KIND);
                    prefetch_group(m, t.w[i] + b * BB, BB, RR);
                    load16(qs, BB, nk, KIND, wv);
                    dw[i] = scales16(t.w[i], b, BB, nk);
                    if (MIN) mw[i] = scales16(t.w[i] + 2, b, BB, nk);
                }
#pragma GCC unroll 4
                for (int j = 0; j < CC; j++) isum[i][j] = dot8(off[j], wv, t.xq[j] + b * 32);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) {
                t.acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), _mm512_mul_ps(dw[i], dx[j]), t.acc[i][j]);
                if (MIN) t.acc[i][j] = _mm512_fmadd_ps(mw[i], xm[j], t.acc[i][j]);
            }
    }
    ztile_finish(&t, m, r, c, RR, CC);
}

// y[n,out] = x[n,in] @ W[out,in]^T for W of one 32-value block type (R16:
// in the r16 layout, repack.c), x int8 (rm_qx with its 16-block copy):
// tile_blk32 with its kind fixed, in the driver. Tiles of 4 x 3: the 12
// float and 12 int32 accumulators and the operands fit the 32 registers
// (4 x 4 spilled: ~8% slower at 32 and 512 rows, 4 x 2 within 2% of 4 x 3;
// perf cpu-clock shares against fixed work on a busy machine).
#define DEFINE_BLK32(name, KIND, R16, PREP)                                                                            \
    INLINE void name##_tile(const rm_mm *m, int64_t r, int c, const int RR, const int CC, tile_aux *aux,               \
                            const int PREPPED) {                                                                       \
        tile_blk32(m, r, c, RR, CC, aux, PREPPED, KIND, R16);                                                          \
    }                                                                                                                  \
    DEFINE_DRIVER(name, name##_tile, PREP, 4, 3, WALK_1_2)
DEFINE_BLK32(rm_mm_q8_0_avx512, KIND_Q8_0, 0, prep_t16_q8_0)
DEFINE_BLK32(rm_mm_q4_0_avx512, KIND_Q4_0, 0, prep_t16_q4_0)
DEFINE_BLK32(rm_mm_q4_1_avx512, KIND_Q4_1, 0, prep_t16_q4_1)
DEFINE_BLK32(rm_mm_q5_0_avx512, KIND_Q5_0, 0, prep_t16_q5_0)
DEFINE_BLK32(rm_mm_q5_1_avx512, KIND_Q5_1, 0, prep_t16_q5_1)
// r16 weights: decode reads them where they are (q4_0 in 4-row tiles at one
// activation row, see r16_ahead), wider batches from the aligned per-tile
// copy (a plain copy now).
DEFINE_BLK32(rm_mm_q8_0_r16_avx512, KIND_Q8_0, 1, prep_r16_q8_0)
DEFINE_BLK32(rm_mm_q4_0_r16_avx512, KIND_Q4_0, 1, prep_r16_q4_0)

// ---------------------------------------------------------------------------
// q4_K weights x int8 activations (the 16-block copy of rm_qx: one scale per
// 256, sums per 32)

// Super-blocks a and b (NULL: zeros) as the 16 sub-blocks of a group: out[8]
// as load16 leaves q8_0's blocks (lane l = sub-block l, the values as
// unsigned bytes). Q5: q5_K super-blocks, whose fifth bits (bit s of qh[j]
// for value j of sub-block s) join the nibbles before the transposition.
INLINE void kmin_values16(const uint8_t *a, const uint8_t *b, const int Q5, __m512i out[8]) {
    const __m512i lo4 = _mm512_set1_epi8(15), b4 = _mm512_set1_epi8(16);
    const size_t qs = Q5 ? offsetof(rm_block_q5_k, qs) : offsetof(rm_block_q4_k, qs);
    __m512i in[8], hb = _mm512_setzero_si512();
    if (Q5) {
        __m256i ha = _mm256_loadu_si256((const __m256i *)(a + offsetof(rm_block_q5_k, qh)));
        __m256i hbb = b ? _mm256_loadu_si256((const __m256i *)(b + offsetof(rm_block_q5_k, qh))) : _mm256_setzero_si256();
        hb = _mm512_inserti64x4(_mm512_castsi256_si512(ha), hbb, 1);
    }
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) { // qs[32k..32k+31]: sub-block 2k in the low nibbles, 2k+1 in the high
        __m256i va = _mm256_loadu_si256((const __m256i *)(a + qs + 32 * k));
        __m256i vb = b ? _mm256_loadu_si256((const __m256i *)(b + qs + 32 * k)) : _mm256_setzero_si256();
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(va), vb, 1);
        in[2 * k] = _mm512_and_si512(v, lo4);
        in[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
        if (Q5) { // bit s of each byte to bit 4 (shifts within 16 bits keep each byte's own bits there)
            const int s0 = 2 * k, s1 = 2 * k + 1;
            __m512i h0 = s0 < 4 ? _mm512_slli_epi16(hb, 4 - s0) : _mm512_srli_epi16(hb, s0 - 4);
            __m512i h1 = s1 < 4 ? _mm512_slli_epi16(hb, 4 - s1) : _mm512_srli_epi16(hb, s1 - 4);
            in[2 * k] = _mm512_ternarylogic_epi32(in[2 * k], h0, b4, 0xf8);     // a | (b & c)
            in[2 * k + 1] = _mm512_ternarylogic_epi32(in[2 * k + 1], h1, b4, 0xf8);
        }
    }
    transpose16(in, out);
}
INLINE void q4k_nibbles16(const rm_block_q4_k *a, const rm_block_q4_k *b, __m512i out[8]) {
    kmin_values16((const uint8_t *)a, (const uint8_t *)b, 0, out);
}

// Group G of a q4_K / q5_K (Q5) row in the file's layout (super-blocks 2G
// and 2G+1, zeros past the row's nb): the values as kmin_values16 leaves
// them, *dls the 16 lanes' d ls and *dlm their dmin lm (both types start
// with d, dmin and the 6-bit scales).
INLINE void load_kmin16(const uint8_t *row, int64_t G, int64_t nb, const int Q5, __m512i out[8], __m512 *dls,
                        __m512 *dlm) {
    const size_t bb = Q5 ? sizeof(rm_block_q5_k) : sizeof(rm_block_q4_k);
    const uint8_t *pa = row + (size_t)(2 * G) * bb, *pb = 2 * G + 1 < nb ? pa + bb : NULL;
    kmin_values16(pa, pb, Q5, out);
    const rm_block_q4_k *a = (const rm_block_q4_k *)pa, *b = (const rm_block_q4_k *)pb;
    __m128i sa = q4k_scale_bytes(a), sb = b ? q4k_scale_bytes(b) : _mm_setzero_si128();
    __m512 d = _mm512_insertf32x8(_mm512_set1_ps(f16(a->d)), _mm256_set1_ps(b ? f16(b->d) : 0.0f), 1);
    __m512 dm = _mm512_insertf32x8(_mm512_set1_ps(f16(a->dmin)), _mm256_set1_ps(b ? f16(b->dmin) : 0.0f), 1);
    *dls = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi64(sa, sb))), d);
    *dlm = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi64(sa, sb))), dm);
}

// The 16 lanes' d ls and dmin lm of a full group of a q4_K r16 row from its
// 32 bytes t (repack.c): the same unpacking as q4k_scale_bytes, for both
// super-blocks at once (32-bit lanes w0, w0', w1, w1' and w2, w2' twice).
INLINE void k16_scales(const uint8_t *t, __m512 *dls, __m512 *dlm) {
    __m128 f = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)t)); // d, d', dmin, dmin'
    __m128i x = _mm_loadu_si128((const __m128i *)(t + 8)), y = _mm_loadl_epi64((const __m128i *)(t + 24));
    y = _mm_unpacklo_epi64(y, y);
    __m128i lo = _mm_and_si128(x, _mm_set1_epi32(0x3f3f3f3f)); // ls 0..3, ls' 0..3, lm 0..3, lm' 0..3
    __m128i hi = _mm_or_si128(_mm_and_si128(_mm_srlv_epi32(y, _mm_setr_epi32(0, 0, 4, 4)), _mm_set1_epi32(0x0f0f0f0f)),
                              _mm_and_si128(_mm_srli_epi32(x, 2), _mm_set1_epi32(0x30303030))); // the 4..7s
    const __m512i half = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512 d = _mm512_permutexvar_ps(half, _mm512_castps128_ps512(f));
    __m512 dm = _mm512_permutexvar_ps(_mm512_add_epi32(half, _mm512_set1_epi32(2)), _mm512_castps128_ps512(f));
    *dls = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi32(lo, hi))), d);
    *dlm = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi32(lo, hi))), dm);
}

// Group G of a q4_K row (R16: the r16 layout, whose full groups F = nb / 2
// come rearranged, prefetched `ahead` bytes on) or a q5_K row (Q5) as
// tile_q4k16 consumes it, prefetching the same place in the rows the next
// tiles take.
INLINE void q4k_group(const rm_mm *m, const uint8_t *row, int64_t G, int RR, const int R16, const int Q5,
                      size_t ahead, __m512i out[8], __m512 *dls, __m512 *dlm) {
    const int64_t nb = m->in / 256, F = R16 ? nb / 2 : 0;
    if (G < F) {
        prefetch_r16(row, G, 256, F, ahead);
        load_r16(row + G * 256, KIND_Q4_0, out);
        k16_scales(row + F * 256 + G * 32, dls, dlm);
    } else {
        const int64_t bb2 = 2 * (int64_t)(Q5 ? sizeof(rm_block_q5_k) : sizeof(rm_block_q4_k));
        for (int64_t pf = 0; pf < bb2; pf += 64) prefetch_next_rows(m, row + G * bb2 + pf, RR);
        load_kmin16(row, G, nb, Q5, out, dls, dlm);
    }
}

// aux->t16 for q4_K / q5_K: the transposed values, d ls (in d) and dmin lm
// (in m) of weight rows r .. r+RR-1.
INLINE int prep_t16_q4k(const rm_mm *m, int64_t r, int RR, tile_aux *aux, const int R16, const int Q5) {
    const int64_t groups = (m->in / 256 + 1) / 2;
    if (groups * 16 > AUX_N) return 0;
    const size_t ahead = R16 ? r16_ahead(m, 1, RR) : 0;
    for (int i = 0; i < RR; i++) {
        const uint8_t *row = m->w + (size_t)(r + i) * m->w_row;
        for (int64_t G = 0; G < groups; G++) {
            __m512i v[8];
            __m512 dls, dlm;
            q4k_group(m, row, G, RR, R16, Q5, ahead, v, &dls, &dlm);
            _mm512_storeu_ps(&aux->t16.d[i][16 * G], dls);
            _mm512_storeu_ps(&aux->t16.m[i][16 * G], dlm);
            for (int g = 0; g < 8; g++) _mm512_store_si512((void *)(aux->t16.q[i] + G * 512 + 64 * g), v[g]);
        }
    }
    return 1;
}
static int prep_t16_q4_k(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16_q4k(m, r, RR, aux, 0, 0);
}
static int prep_r16_q4_k(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16_q4k(m, r, RR, aux, 1, 0);
}
static int prep_t16_q5_k(const rm_mm *m, int64_t r, int RR, tile_aux *aux) {
    return prep_t16_q4k(m, r, RR, aux, 0, 1);
}

INLINE void tile_q4k16(const rm_mm *m, int64_t r, int c, const int RR, const int CC, tile_aux *aux,
                       const int PREPPED, const int R16, const int Q5) {
    const int64_t groups = m->qx.groups;
    const size_t ahead = R16 ? r16_ahead(m, 1, RR) : 0;
    ztile t;
    ztile_start(&t, m, r, c, RR, CC, 1);
    for (int64_t G = 0; G < groups; G++) {
        const int64_t b = 16 * G;
        __m512i isum[4][4];
        __m512 dx[4], xm[4], dls[4], dlm[4];
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            dx[j] = _mm512_loadu_ps(t.xd[j] + b);
            xm[j] = _mm512_mul_ps(dx[j], _mm512_cvtepi32_ps(
                                             _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(t.xs[j] + b)))));
        }
        if (PREPPED) {
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                dls[i] = _mm512_loadu_ps(&aux->t16.d[i][b]);
                dlm[i] = _mm512_loadu_ps(&aux->t16.m[i][b]);
#pragma GCC unroll 4
                for (int j = 0; j < CC; j++) isum[i][j] = _mm512_setzero_si512();
            }
            dots_prepped(RR, CC, isum, aux, t.xq, b);
        } else {
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) {
                __m512i wv[8];
                q4k_group(m, t.w[i], G, RR, R16, Q5, ahead, wv, &dls[i], &dlm[i]);
#pragma GCC unroll 4
                for (int j = 0; j < CC; j++) isum[i][j] = dot8(_mm512_setzero_si512(), wv, t.xq[j] + b * 32);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) {
                t.acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), _mm512_mul_ps(dls[i], dx[j]), t.acc[i][j]);
                t.acc[i][j] = _mm512_fnmadd_ps(dlm[i], xm[j], t.acc[i][j]);
            }
    }
    ztile_finish(&t, m, r, c, RR, CC);
}

// Rows [r0, r1) of a q4_K matrix into the r16 layout, in place (tmp: one
// row): the nibbles through q4k_nibbles16 (packed again as q4_0's), the
// group's tail as repack.c writes it.
static void k16_pack_rows(uint8_t *w, size_t w_row, int64_t in, int64_t r0, int64_t r1, uint8_t *tmp) {
    const int64_t F = in / 256 / 2;
    for (int64_t r = r0; r < r1; r++) {
        uint8_t *row = w + (size_t)r * w_row;
        memcpy(tmp, row, (size_t)(F * 288));
        const rm_block_q4_k *src = (const rm_block_q4_k *)tmp;
        for (int64_t G = 0; G < F; G++) {
            __m512i v[8];
            q4k_nibbles16(&src[2 * G], &src[2 * G + 1], v);
            for (int g = 0; g < 4; g++)
                _mm512_storeu_si512((void *)(row + G * 256 + 64 * g), _mm512_or_si512(v[g], _mm512_slli_epi16(v[g + 4], 4)));
            rm_k16_tail(&src[2 * G], row + F * 256 + G * 32);
        }
    }
}

#define TILE_Q4_K(m, r, c, RR, CC, aux, P) tile_q4k16(m, r, c, RR, CC, aux, P, 0, 0)
#define TILE_Q4_K_R16(m, r, c, RR, CC, aux, P) tile_q4k16(m, r, c, RR, CC, aux, P, 1, 0)
#define TILE_Q5_K(m, r, c, RR, CC, aux, P) tile_q4k16(m, r, c, RR, CC, aux, P, 0, 1)
// y[n,out] = x[n,in] @ W[out,in]^T, W q4_K (as stored / r16), x int8 (rm_qx,
// blk 256, with its 16-block copy)
DEFINE_DRIVER(rm_mm_q4_k_avx512, TILE_Q4_K, prep_t16_q4_k, 4, 3, WALK_1_2)
DEFINE_DRIVER(rm_mm_q4_k_r16_avx512, TILE_Q4_K_R16, prep_r16_q4_k, 4, 3, WALK_1_2)
// The same for q5_K (as stored)
DEFINE_DRIVER(rm_mm_q5_k_avx512, TILE_Q5_K, prep_t16_q5_k, 4, 3, WALK_1_2)

// ---------------------------------------------------------------------------
// q6_K weights x int8 activations (one scale per 256), 64 values per step:
// the AVX2 kernel's scheme at twice the width, with vpdpwssd for madd + add.
//   vpmaddubsw(q, x) - vpmaddubsw(32, x)  = pairs of (q-32) x   (q 0..63)
//   vpdpwssd(isum, ., scale)              += per 4 values, times the int8 scale
//                                            of their 16 (exact in int32)
// A half of a super-block (128 values) is two steps: values 0..63 (p = 0, 1:
// the low nibbles of ql[0..63], qh bits 0-1 / 2-3) and 64..127 (p = 2, 3:
// the high nibbles, bits 4-5 / 6-7); each 128-bit lane of a step has one
// scale (16 values).

// The int16 multipliers of step v of half h: 128-bit lane k takes scale
// 8h + 4v + k of sc16 (the 16 scales as int16 in the low 256 bits).
INLINE __m512i k16_step_scales(__m512i sc16, int h, const int v) {
    const int g = 8 * h + 4 * v;
    const __m512i idx = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)g)),
                                                       _mm_set1_epi16((short)(g + 1)), 1)),
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)(g + 2))), _mm_set1_epi16((short)(g + 3)),
                                1),
        1);
    return _mm512_permutexvar_epi16(idx, sc16);
}

// Step v (0, 1) of half h: the 64 values (0..63).
INLINE __m512i q6k_step64(const rm_block_q6_k *w, int h, const int v) {
    const __m512i lo4 = _mm512_set1_epi8(15), hi2 = _mm512_set1_epi8(0x30);
    __m512i l = _mm512_loadu_si512(w->ql + 64 * h);
    __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qh + 32 * h)));
    if (v == 0) { // p = 0 in the low 256 bits (qh bits 0-1 up to 4-5), p = 1 in the high (bits 2-3)
        const __m512i sh = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
        return _mm512_or_si512(_mm512_and_si512(l, lo4), _mm512_and_si512(_mm512_sllv_epi16(hb, sh), hi2));
    } // p = 2 (qh bits 4-5 in place), p = 3 (bits 6-7 down to 4-5)
    const __m512i sh = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), lo4),
                           _mm512_and_si512(_mm512_srlv_epi16(hb, sh), hi2));
}

// The same for q3_K (values 0..7): p = 2v in the low 256 bits, 2v + 1 in the
// high; the low two bits from qs >> 2p, the third from hmask bit 4h + p moved
// to bit 2.
INLINE __m512i q3k_step64(const rm_block_q3_k *w, int h, const int v) {
    const int p0 = 2 * v, b0 = 4 * h + p0, b1 = b0 + 1;
    const __m512i l = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qs + 32 * h)));
    const __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w->hmask));
    const __m512i lsh =
        _mm512_inserti64x4(_mm512_set1_epi16((short)(2 * p0)), _mm256_set1_epi16((short)(2 * p0 + 2)), 1);
    const __m512i rsh = _mm512_inserti64x4(_mm512_set1_epi16((short)(b0 > 2 ? b0 - 2 : 0)),
                                           _mm256_set1_epi16((short)(b1 > 2 ? b1 - 2 : 0)), 1);
    const __m512i ush = _mm512_inserti64x4(_mm512_set1_epi16((short)(b0 < 2 ? 2 - b0 : 0)),
                                           _mm256_set1_epi16((short)(b1 < 2 ? 2 - b1 : 0)), 1);
    __m512i q = _mm512_and_si512(_mm512_srlv_epi16(l, lsh), _mm512_set1_epi8(3));
    __m512i t = _mm512_sllv_epi16(_mm512_srlv_epi16(hb, rsh), ush);
    return _mm512_or_si512(q, _mm512_and_si512(t, _mm512_set1_epi8(4)));
}

// q6_K (Q3 = 0) and q3_K (Q3 = 1): values less an offset (32, 4) shared by
// the rows, int8 scales per 16 values.
INLINE void tile_k16(const rm_mm *m, int64_t r, int c, const int RR, const int CC, const int Q3) {
    const int64_t nb = m->in / 256;
    const size_t bbytes = Q3 ? sizeof(rm_block_q3_k) : sizeof(rm_block_q6_k);
    ztile t;
    ztile_start(&t, m, r, c, RR, CC, 0);
    const __m512i koff = _mm512_set1_epi8(Q3 ? 4 : 32);
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *blk[4];
        __m512i sc16[4], isum[4][4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            blk[i] = t.w[i] + (size_t)b * bbytes;
            __m128i sc8 = Q3 ? q3k_scales8(((const rm_block_q3_k *)blk[i])->scales)
                             : _mm_loadu_si128((const __m128i *)((const rm_block_q6_k *)blk[i])->scales);
            sc16[i] = _mm512_zextsi256_si512(_mm256_cvtepi8_epi16(sc8));
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++) isum[i][j] = _mm512_setzero_si512();
        }
        for (int h = 0; h < 2; h++) {
#pragma GCC unroll 2
            for (int v = 0; v < 2; v++) {
                __m512i q[4], s[4];
#pragma GCC unroll 4
                for (int i = 0; i < RR; i++) {
                    prefetch_next_rows(m, blk[i] + (Q3 ? 64 * h + 32 * v : 128 * h + 64 * v), RR);
                    q[i] = Q3 ? q3k_step64((const rm_block_q3_k *)blk[i], h, v)
                              : q6k_step64((const rm_block_q6_k *)blk[i], h, v);
                    s[i] = k16_step_scales(sc16[i], h, v);
                }
#pragma GCC unroll 4
                for (int j = 0; j < CC; j++) {
                    __m512i x = _mm512_loadu_si512(t.xq[j] + 256 * b + 128 * h + 64 * v);
                    __m512i xo = _mm512_maddubs_epi16(koff, x); // the offset, shared by the rows
#pragma GCC unroll 4
                    for (int i = 0; i < RR; i++)
                        isum[i][j] =
                            _mm512_dpwssd_epi32(isum[i][j], _mm512_sub_epi16(_mm512_maddubs_epi16(q[i], x), xo), s[i]);
                }
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            const float dw = f16(Q3 ? ((const rm_block_q3_k *)blk[i])->d : ((const rm_block_q6_k *)blk[i])->d);
#pragma GCC unroll 4
            for (int j = 0; j < CC; j++)
                t.acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), _mm512_set1_ps(dw * t.xd[j][b]), t.acc[i][j]);
        }
    }
    ztile_finish(&t, m, r, c, RR, CC);
}

#define TILE_Q6_K(m, r, c, RR, CC, aux, P) tile_k16(m, r, c, RR, CC, 0)
#define TILE_Q3_K(m, r, c, RR, CC, aux, P) tile_k16(m, r, c, RR, CC, 1)

#ifndef Q6K_RR
#define Q6K_RR 4
#define Q6K_CC 3
#endif
// y[n,out] = x[n,in] @ W[out,in]^T, W q6_K, x int8 (rm_qx, blk 256)
DEFINE_DRIVER(rm_mm_q6_k_avx512, TILE_Q6_K, NO_PREP, Q6K_RR, Q6K_CC, WALK_1_2)
// the same for W q3_K
DEFINE_DRIVER(rm_mm_q3_k_avx512, TILE_Q3_K, NO_PREP, Q6K_RR, Q6K_CC, WALK_1_2)

// ---------------------------------------------------------------------------
// f16 / bf16 weights x f32 activations, 16 elements per step

INLINE __m512 load_w(rm_type t, const uint8_t *row, int64_t k) {
    if (t == RM_TYPE_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * k)));
    if (t == RM_TYPE_BF16) {
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(row + 2 * k)));
        return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    }
    return _mm512_loadu_ps((const float *)row + k);
}

INLINE float load_w1(rm_type t, const uint8_t *row, int64_t k) {
    if (t == RM_TYPE_F16) return _cvtsh_ss(((const uint16_t *)row)[k]);
    if (t == RM_TYPE_BF16) return rm_bf16_to_f32(((const uint16_t *)row)[k]);
    return ((const float *)row)[k];
}

INLINE void tile_float(const rm_mm *m, rm_type t, int64_t r, int c, const int RR, const int CC) {
    const uint8_t *w[4];
    const float *x[4];
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++) w[i] = m->w + (size_t)(r + i) * m->w_row;
#pragma GCC unroll 4
    for (int j = 0; j < CC; j++) {
        x[j] = m->x + (int64_t)(c + j) * m->ldx;
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) acc[i][j] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 16 <= m->in; k += 16) {
        __m512 wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < RR; i++) {
            prefetch_next_rows(m, w[i] + k * (t == RM_TYPE_F32 ? 4 : 2), RR);
            wv[i] = load_w(t, w[i], k);
        }
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            __m512 xv = _mm512_loadu_ps(x[j] + k);
#pragma GCC unroll 4
            for (int i = 0; i < RR; i++) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < RR; i++)
#pragma GCC unroll 4
        for (int j = 0; j < CC; j++) {
            float s = hsum16(acc[i][j]);
            for (int64_t kk = k; kk < m->in; kk++) s += load_w1(t, w[i], kk) * x[j][kk];
            rm_mm_store(m, c + j, r + i, s);
        }
}

#define TILE_F16(m, r, c, RR, CC, aux, P) tile_float(m, RM_TYPE_F16, r, c, RR, CC)
#define TILE_BF16(m, r, c, RR, CC, aux, P) tile_float(m, RM_TYPE_BF16, r, c, RR, CC)
// y[n,out] = x[n,in] @ W[out,in]^T, W f16 / bf16, x f32 (f32 W: the AVX2 kernel, see matmul.c)
DEFINE_DRIVER(rm_mm_f16_avx512, TILE_F16, NO_PREP, 4, 4, WALK_NONE)
DEFINE_DRIVER(rm_mm_bf16_avx512, TILE_BF16, NO_PREP, 4, 4, WALK_NONE)

// ---------------------------------------------------------------------------
// vector helpers

float rm_dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s);
    float r = hsum16(s);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}

// kernels.h's exponential of 16 values
static inline __m512 exp16(__m512 x) {
    static const float c[8] = RM_EXP_TAYLOR;
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(RM_EXP_HI)), _mm512_set1_ps(RM_EXP_LO));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(RM_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-RM_EXP_LN2_HI), x);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(-RM_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(c[0]);
    for (int j = 1; j < 8; j++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c[j]));
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(_mm512_cvttps_epi32(n), 23)));
}

static inline __mmask16 tail16(int64_t left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }

// silu(g) * u for 16 values at a time (masked tail)
void rm_silu_mul_f32_avx512(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        __m512 gv = _mm512_maskz_loadu_ps(k, g + i), uv = _mm512_maskz_loadu_ps(k, u + i);
        __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
        _mm512_mask_storeu_ps(h + i, k, _mm512_mul_ps(_mm512_div_ps(gv, den), uv));
    }
}

// s[i] = exp(s[i] - mx) and their sum in 16 lanes (lane i % 16 takes value
// i; the tail's missing lanes add 0), the lanes added in order at the end
float rm_exp_sum_f32_avx512(float *s, int64_t n, float mx) {
    const __m512 m = _mm512_set1_ps(mx);
    __m512 a = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + i), m)));
        _mm512_mask_storeu_ps(s + i, k, e);
        a = _mm512_add_ps(a, e);
    }
    float l[16], sum = 0.0f;
    _mm512_storeu_ps(l, a);
    for (int k = 0; k < 16; k++) sum += l[k];
    return sum;
}

// s[i] *= c and the largest s[i]: per lane the scalar rule (take v if v > the
// lane's max: max_ps(v, m) keeps m when v is NaN), then the lanes in order.
float rm_scale_max_f32_avx512(float *s, int64_t n, float c) {
    const __m512 cv = _mm512_set1_ps(c);
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), cv);
        _mm512_mask_storeu_ps(s + i, k, v);
        m = _mm512_mask_max_ps(m, k, v, m);
    }
    float l[16];
    _mm512_storeu_ps(l, m);
    return lanes_max(l, 16);
}

void rm_scale_f32_avx512(float *s, int64_t n, float c) {
    const __m512 cv = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = tail16(n - i);
        _mm512_mask_storeu_ps(s + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + i), cv));
    }
}

// Compute ceiling probe, as rm_int8_peak_avx2 with the AVX-512 kernels'
// instructions: full = 1 the q8_0 / q4_0 kernels' step per (weight row,
// activation row) and 16 blocks (eight vpdpbusd into one accumulator, cvt,
// multiply, FMA: 512 products), full = 0 vpdpbusd alone (64 products).
float rm_int8_peak_avx512(long iters, int full) {
    __m512i x = _mm512_set1_epi8(3), w = _mm512_set1_epi8(5);
    __m512 s = _mm512_set1_ps(1e-7f), d = _mm512_set1_ps(0.5f);
    __m512 f[10];
    __m512i a[10];
    for (int k = 0; k < 10; k++) f[k] = _mm512_setzero_ps(), a[k] = _mm512_setzero_si512();
    if (full) {
        const __m512i init = _mm512_set1_epi32(-7);
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 10
            for (int k = 0; k < 10; k++) {
                __m512i t = init;
#pragma GCC unroll 8
                for (int g = 0; g < 8; g++) {
                    t = _mm512_dpbusd_epi32(t, w, x);
                    __asm__ volatile("" : "+v"(x)); // a new x each time: nothing to hoist
                }
                f[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(s, d), f[k]);
            }
        }
    } else {
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 10
            for (int k = 0; k < 10; k++) {
                a[k] = _mm512_dpbusd_epi32(a[k], w, x);
                __asm__ volatile("" : "+v"(x));
            }
        }
    }
    __m512 t = _mm512_setzero_ps();
    for (int k = 0; k < 10; k++) t = _mm512_add_ps(t, _mm512_add_ps(f[k], _mm512_cvtepi32_ps(a[k])));
    return hsum16(t);
}
