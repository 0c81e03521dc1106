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
// The same in two steps, so a model computes its frequencies once:
// freq[rope_dim/2] of the pairs, then cs[2*half] for a position.
void rm_rope_freqs(const rm_llama_hparams *hp, float *freq);
void rm_rope_angles_freq(const float *freq, int half, int pos, float *cs);
// v[n_heads, head_dim] rotated in place by cs, pairing (2i, 2i+1) or (i, i+rope_dim/2) when rope_neox
void rm_rope_forward(const rm_llama_hparams *hp, float *v, int n_heads, const float *cs);
// h[count] = silu(g) * u
void rm_swiglu_forward(float *h, const float *g, const float *u, size_t count);

// ---- backward ops (training). Each takes the forward's inputs and the
// gradient of its output, and ACCUMULATES (+=) into the gradients of its
// inputs (callers zero them once per step), as llm.c does.

// dx[n,d] += d(y)/dx^T dy, dw[d] += sum_rows dy * x / rms(x)   (dw may be NULL: frozen)
void rm_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, int d,
                         float eps);
// db[dim] += sum over the n rows of dy[n,dim]
void rm_bias_backward(float *db, const float *dy, int n, int dim);
// dv[n_heads, head_dim] (in place): the gradient w.r.t. the input of rm_rope_forward
// (the inverse rotation, since a rotation's Jacobian is the rotation itself)
void rm_rope_backward(const rm_llama_hparams *hp, float *dv, int n_heads, const float *cs);
// dg[count] += dh * u * silu'(g), du[count] += dh * silu(g)
void rm_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t count);

// Causal multi-head attention over contiguous sequences, for training (the
// serving path reads K/V from the cache instead). Rows are B sequences of T
// tokens; row r attends to rows [start[r], r] of its own sequence (start may
// be NULL: the sequence's first row), which lets packed examples not see one
// another. Head h reads K/V head h / (H/Hk) (GQA).
//   q[B*T, H*hd], k, v[B*T, Hk*hd] -> out[B*T, H*hd]; att[B, H, T, T] keeps the probabilities
// Both return RM_OK or RM_ENOMEM (per-worker scratch of a few T x T matrices).
int rm_attention_forward(rm_threadpool *tp, float *out, float *att, const float *q, const float *k, const float *v,
                         const int32_t *start, int B, int T, int H, int Hk, int hd);
// dq += , dk += , dv += from dout[B*T, H*hd], with the forward's att, q, k, v
int rm_attention_backward(rm_threadpool *tp, float *dq, float *dk, float *dv, const float *dout, const float *att,
                          const float *q, const float *k, const float *v, const int32_t *start, int B, int T, int H,
                          int Hk, int hd);
#endif
