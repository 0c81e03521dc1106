// repack.c — the r16 weight layouts (RM_TYPE_Q8_0_R16, RM_TYPE_Q4_0_R16,
// RM_TYPE_Q4_K_R16): q8_0 / q4_0 / q4_K rows rearranged once, at load, into
// the order the AVX-512 VNNI kernels consume, so a decode step reads each row
// as it is laid out instead of transposing 16 blocks per step
// (matmul_avx512.c). In memory only: never written to a file
// (rm_type_supported says no to them).
//
// q8_0 / q4_0: a row of nb blocks keeps its size. With F = nb / 16 full
// groups of 16 blocks and GQ = 512 (q8_0) or 256 (q4_0) bytes of quants per
// group:
//   bytes [0, F*GQ)            the quants, group after group;
//   bytes [F*GQ, F*(GQ+32))    the 16 f16 block scales of each group;
//   bytes [16*F*BB, nb*BB)     the last nb % 16 blocks as they were (BB = 34 / 18).
// Within a group, block l's bytes are interleaved 4 at a time: byte e of
// block l (e < 32 for q8_0's values, e < 16 for q4_0's packed bytes) sits at
//   64 * (e / 4) + 4 * l + e % 4
// so that 32-bit lane l of each 64-byte vector belongs to block l, as in the
// activations' 16-block copy (rm_qx). q8_0 values are stored plus 128
// (unsigned, for vpdpbusd); q4_0 bytes are stored as they are (each nibble is
// already the value plus 8).
//
// q4_K: a row of nb super-blocks (144 bytes: d, dmin, 12 bytes of 6-bit
// scales and mins, 128 of nibbles) keeps its size too. A group is two
// super-blocks, its 16 sub-blocks of 32 numbered l = 8 s + j (s the
// super-block, j its sub-block; value e of sub-block j = 2k + h is nibble h
// of qs[32k + e]). With F = nb / 2 full groups:
//   bytes [0, F*256)           the nibbles, group after group, packed as
//                              q4_0's: values e and e + 16 of sub-block l in
//                              the low and high nibble of byte
//                              64 * (e / 4) + 4 * l + e % 4 (e < 16);
//   bytes [F*256, F*288)       32 bytes per group: d, d', dmin, dmin' (f16,
//                              ' the second super-block), then the two 12-byte
//                              scale fields interleaved by 32-bit word:
//                              w0, w0', w1, w1', w2, w2';
//   bytes [288*F, 144*nb)      the last super-block as it was when nb is odd.
//
// This file is the specification (scalar); the AVX-512 repack
// (rm_r16_pack_rows_avx512) must give the same bytes, which the tests check.
#include "tensor/tensor.h"
#include "tensor/kernels.h"
#include "base/err.h"

#include <string.h>

int rm_type_r16_base(int type) {
    return type == RM_TYPE_Q8_0_R16   ? RM_TYPE_Q8_0
           : type == RM_TYPE_Q4_0_R16 ? RM_TYPE_Q4_0
           : type == RM_TYPE_Q4_K_R16 ? RM_TYPE_Q4_K
                                      : -1;
}

// Bytes of one value's (q8_0) or packed pair's (q4_0) quants in a block, of a
// group's quants, and of a block.
static void r16_sizes(int base, int *per_block, int64_t *gq, int64_t *bb) {
    *per_block = base == RM_TYPE_Q8_0 ? 32 : 16;
    *gq = 16 * (int64_t)*per_block;
    *bb = base == RM_TYPE_Q8_0 ? (int64_t)sizeof(rm_block_q8_0) : (int64_t)sizeof(rm_block_q4_0);
}

static inline int64_t r16_pos(int l, int e) { return 64 * (e / 4) + 4 * l + e % 4; }

// One row: base layout (src) -> r16 (dst), or back (inverse = 1). n elements.
static void r16_row(int base, const uint8_t *src, uint8_t *dst, int64_t n, int inverse) {
    int pb;
    int64_t gq, bb, nb = n / 32, F = nb / 16;
    r16_sizes(base, &pb, &gq, &bb);
    const uint8_t bias = base == RM_TYPE_Q8_0 ? 128 : 0; // q8_0: int8 + 128 = the unsigned byte
    for (int64_t G = 0; G < F; G++)
        for (int l = 0; l < 16; l++) {
            int64_t blk = (16 * G + l) * bb, q = G * gq, s = F * gq + (G * 16 + l) * 2;
            if (!inverse) {
                memcpy(dst + s, src + blk, 2);
                for (int e = 0; e < pb; e++) dst[q + r16_pos(l, e)] = (uint8_t)(src[blk + 2 + e] + bias);
            } else {
                memcpy(dst + blk, src + s, 2);
                for (int e = 0; e < pb; e++) dst[blk + 2 + e] = (uint8_t)(src[q + r16_pos(l, e)] - bias);
            }
        }
    memcpy(dst + 16 * F * bb, src + 16 * F * bb, (size_t)((nb - 16 * F) * bb));
}

// q4_K. Super-block b (b < 2F) of an r16 row, back in the base layout.
static void k16_block(const uint8_t *row, int64_t F, int64_t b, rm_block_q4_k *out) {
    const int64_t G = b / 2, s = b % 2;
    const uint8_t *q = row + G * 256, *t = row + F * 256 + G * 32;
    memcpy(&out->d, t + 2 * s, 2);
    memcpy(&out->dmin, t + 4 + 2 * s, 2);
    for (int w = 0; w < 3; w++) memcpy(out->scales + 4 * w, t + 8 + 8 * w + 4 * s, 4);
    memset(out->qs, 0, sizeof out->qs);
    for (int j = 0; j < 8; j++)
        for (int e = 0; e < 32; e++) {
            uint8_t byte = q[r16_pos(8 * (int)s + j, e % 16)];
            uint8_t v = e < 16 ? byte & 15 : byte >> 4;
            out->qs[32 * (j / 2) + e] |= (uint8_t)(v << (4 * (j % 2)));
        }
}

void rm_k16_tail(const void *two, uint8_t *t) {
    for (int s = 0; s < 2; s++) {
        const uint8_t *blk = (const uint8_t *)two + 144 * s; // d, dmin, scales[12], qs[128]
        memcpy(t + 2 * s, blk, 2);
        memcpy(t + 4 + 2 * s, blk + 2, 2);
        for (int w = 0; w < 3; w++) memcpy(t + 8 + 8 * w + 4 * s, blk + 4 + 4 * w, 4);
    }
}

// A q4_K row of n elements: base layout (src) -> r16 (dst).
static void k16_pack(const uint8_t *src, uint8_t *dst, int64_t n) {
    const int64_t nb = n / 256, F = nb / 2;
    for (int64_t G = 0; G < F; G++) {
        uint8_t *q = dst + G * 256;
        rm_k16_tail(src + G * 288, dst + F * 256 + G * 32);
        for (int s = 0; s < 2; s++) {
            rm_block_q4_k blk;
            memcpy(&blk, src + (2 * G + s) * 144, 144);
            for (int j = 0; j < 8; j++)
                for (int e = 0; e < 16; e++) {
                    int lo = (blk.qs[32 * (j / 2) + e] >> (4 * (j % 2))) & 15;
                    int hi = (blk.qs[32 * (j / 2) + e + 16] >> (4 * (j % 2))) & 15;
                    q[r16_pos(8 * s + j, e)] = (uint8_t)(lo | hi << 4);
                }
        }
    }
    memcpy(dst + F * 288, src + F * 288, (size_t)((nb - 2 * F) * 144));
}

static void k16_unpack(const uint8_t *src, uint8_t *dst, int64_t n) {
    const int64_t nb = n / 256, F = nb / 2;
    for (int64_t b = 0; b < 2 * F; b++) {
        rm_block_q4_k blk;
        k16_block(src, F, b, &blk);
        memcpy(dst + b * 144, &blk, 144);
    }
    memcpy(dst + F * 288, src + F * 288, (size_t)((nb - 2 * F) * 144));
}

void rm_r16_pack_row(int base, const void *src, void *dst, int64_t n) {
    if (base == RM_TYPE_Q4_K) k16_pack(src, dst, n);
    else r16_row(base, src, dst, n, 0);
}

void rm_r16_unpack_row(int type, const void *src, void *dst, int64_t n) {
    int base = rm_type_r16_base(type);
    if (base < 0) {
        memcpy(dst, src, rm_row_size((rm_type)type, n));
        return;
    }
    if (base == RM_TYPE_Q4_K) k16_unpack(src, dst, n);
    else r16_row(base, src, dst, n, 1);
}

void rm_r16_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    const int base = rm_type_r16_base(type);
    if (base == RM_TYPE_Q4_K) { // super-block b back in its base layout, then as q4_K
        const int64_t nb = n / 256, F = nb / 2;
        for (int64_t b = 0; b < nb; b++) {
            rm_block_q4_k blk;
            if (b < 2 * F) k16_block(src, F, b, &blk);
            else memcpy(&blk, (const uint8_t *)src + b * 144, 144);
            rm_dequantize_row(RM_TYPE_Q4_K, &blk, dst + 256 * b, 256);
        }
        return;
    }
    int pb;
    int64_t gq, bb, nb = n / 32, F = nb / 16;
    r16_sizes(base, &pb, &gq, &bb);
    const uint8_t *s = src, bias = base == RM_TYPE_Q8_0 ? 128 : 0;
    for (int64_t b = 0; b < nb; b++) { // block b back in its base layout, then as the base type
        uint8_t blk[sizeof(rm_block_q8_0)];
        if (b < 16 * F) {
            memcpy(blk, s + F * gq + b * 2, 2);
            for (int e = 0; e < pb; e++) blk[2 + e] = (uint8_t)(s[b / 16 * gq + r16_pos((int)(b % 16), e)] - bias);
        } else {
            memcpy(blk, s + b * bb, (size_t)bb);
        }
        rm_dequantize_row((rm_type)base, blk, dst + 32 * b, 32);
    }
}
