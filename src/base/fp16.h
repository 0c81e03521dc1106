// fp16.h — IEEE half and bfloat16 <-> float, scalar (the reference; SIMD
// kernels convert with F16C and are tested against these).
#ifndef RM_BASE_FP16_H
#define RM_BASE_FP16_H
#include <stdint.h>
#include <string.h>

typedef uint16_t rm_f16;
typedef uint16_t rm_bf16;

static inline float rm_f16_to_f32(rm_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: renormalise
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even; overflow to inf; NaN stays NaN.
static inline rm_f16 rm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (rm_f16)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (rm_f16)(sign | 0x7c00); // rounds to >= 65520 -> inf
    if (absx < 0x38800000u) {                                // result is subnormal or zero
        if (absx < 0x33000000u) return (rm_f16)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; // 14..24 for this range
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (rm_f16)(sign | r);
    }
    uint32_t r = absx + 0xc8000fffu + ((absx >> 13) & 1); // rebias (-112<<23) + round-to-even
    return (rm_f16)(sign | (r >> 13));
}

static inline float rm_bf16_to_f32(rm_bf16 h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline rm_bf16 rm_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (rm_bf16)((x >> 16) | 0x40); // quiet NaN
    x += 0x7fff + ((x >> 16) & 1);
    return (rm_bf16)(x >> 16);
}

#endif
