// batch_impl.h — kernels of the batched hook for f16 mirrors (lora/batch*.c only).
#ifndef RM_LORA_BATCH_IMPL_H
#define RM_LORA_BATCH_IMPL_H
#include <stdint.h>

// sum_i x[i] * a[i]          x f32, a f16
float lora_dot_f16_avx2(const float *x, const uint16_t *a, int64_t n);
// y[i] += t * b[i]           b f16
void lora_axpy_f16_avx2(float *y, float t, const uint16_t *b, int64_t n);
#endif
