// ops.h — Llama block ops shared by inference and training. Shapes in the
// comment above each; n rows, row-major.
#ifndef RM_MODEL_OPS_H
#define RM_MODEL_OPS_H
#include <stddef.h>

#include "model/llama.h"

// y[n,d] = x[n,d] / rms(x) * w[d]     (rms = sqrt(mean(x^2) + eps))
void rm_rmsnorm_forward(float *y, const float *x, const float *w, int n, int d, float eps);
// x[n,dim] += b[dim]
void rm_bias_add(float *x, const float *b, int n, int dim);
// cs[rope_dim] = (cos, sin) of position pos for each rotated pair, with the model's base and scaling
void rm_rope_angles(const rm_llama_hparams *hp, int pos, float *cs);
// v[n_heads, head_dim] rotated in place by cs, pairing (2i, 2i+1) or (i, i+rope_dim/2) when rope_neox
void rm_rope_forward(const rm_llama_hparams *hp, float *v, int n_heads, const float *cs);
// h[count] = silu(g) * u
void rm_swiglu_forward(float *h, const float *g, const float *u, size_t count);
#endif
