// index_kernels.h — internal to src/retrieve: the scoring kernels of index.c.
// The scalar versions (index.c) are the specification; index_avx2.c must
// agree with them up to float rounding (F32/F16) or exactly (INT8).
#ifndef RM_RETRIEVE_INDEX_KERNELS_H
#define RM_RETRIEVE_INDEX_KERNELS_H
#include <stddef.h>
#include <stdint.h>

// Keys are rows of `stride` elements (stride >= dim, multiple of 32, padding zero).
// s[qi][j] = q[qi] . keys[j]      for nq queries and n keys
void index_scores_f32(const float *q, int nq, const float *keys, size_t n, int stride, float *s);
void index_scores_f16(const float *q, int nq, const uint16_t *keys, size_t n, int stride, float *s);
// INT8 keys are stored biased, u8 = k + 128 (k in [-127, 127]); queries are
// int8 in [-64, 64] with qsum[qi] = sum of q8[qi], so that
// s[qi][j] = (u8[j] . q8[qi] - 128 qsum[qi]) * qscale[qi] * kscale[j]
// is the integer dot product k . q scaled (and AVX2's maddubs, u8 x s8 with
// pair sums <= 2 * 255 * 64 < 2^15, cannot saturate).
void index_scores_i8(const int8_t *q8, const int32_t *qsum, const float *qscale, int nq, const uint8_t *keys,
                     const float *kscale, size_t n, int stride, float *s);

void index_scores_f32_avx2(const float *q, int nq, const float *keys, size_t n, int stride, float *s);
void index_scores_f16_avx2(const float *q, int nq, const uint16_t *keys, size_t n, int stride, float *s);
void index_scores_i8_avx2(const int8_t *q8, const int32_t *qsum, const float *qscale, int nq, const uint8_t *keys,
                          const float *kscale, size_t n, int stride, float *s);
#endif
