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
// s[qi][j] = (q8[qi] . keys[j]) * qscale[qi] * kscale[j]   (integer dot product)
void index_scores_i8(const int8_t *q8, const float *qscale, int nq, const int8_t *keys, const float *kscale,
                     size_t n, int stride, float *s);

void index_scores_f32_avx2(const float *q, int nq, const float *keys, size_t n, int stride, float *s);
void index_scores_f16_avx2(const float *q, int nq, const uint16_t *keys, size_t n, int stride, float *s);
void index_scores_i8_avx2(const int8_t *q8, const float *qscale, int nq, const int8_t *keys, const float *kscale,
                          size_t n, int stride, float *s);
#endif
