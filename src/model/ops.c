// ops.c — the element-wise and normalisation ops of the Llama block, shared
// by inference (llama.c) and training (src/train/), each forward next to its
// backward where training needs one.
#include "model/ops.h"
#include "tensor/gemm.h"

#include <math.h>
#include <string.h>

#include <stdlib.h>

#include "base/err.h"
#include "tensor/tensor.h"

// y[n,d] = x[n,d] / rms(x) * w[d]
void rm_rmsnorm_forward(float *y, const float *x, const float *w, int n, int d, float eps) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        float ss = 0.0f;
        for (int i = 0; i < d; i++) ss += xr[i] * xr[i];
        float s = 1.0f / sqrtf(ss / (float)d + eps);
        for (int i = 0; i < d; i++) yr[i] = w[i] * (s * xr[i]);
    }
}

// With s = 1/rms(x) and g = w * dy: dx = s g - s^3 x (g . x) / d
void rm_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, int d,
                         float eps) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d, *dyr = dy + (size_t)r * d;
        float *dxr = dx + (size_t)r * d;
        float ss = 0.0f, gx = 0.0f;
        for (int i = 0; i < d; i++) {
            ss += xr[i] * xr[i];
            gx += w[i] * dyr[i] * xr[i];
        }
        float s = 1.0f / sqrtf(ss / (float)d + eps), c = s * s * s * gx / (float)d;
        for (int i = 0; i < d; i++) dxr[i] += s * w[i] * dyr[i] - c * xr[i];
        if (dw)
            for (int i = 0; i < d; i++) dw[i] += dyr[i] * xr[i] * s;
    }
}

// x[n,dim] += b[dim]
void rm_bias_add(float *x, const float *b, int n, int dim) {
    for (int r = 0; r < n; r++)
        for (int i = 0; i < dim; i++) x[(size_t)r * dim + i] += b[i];
}

// db[dim] += sum_r dy[r,dim]
void rm_bias_backward(float *db, const float *dy, int n, int dim) {
    for (int r = 0; r < n; r++)
        for (int i = 0; i < dim; i++) db[i] += dy[(size_t)r * dim + i];
}

// Rotation frequency of pair i, with the model's base and scaling.
static float rope_freq(const rm_llama_hparams *hp, int i) {
    float freq = 1.0f / powf(hp->rope_base, (float)(2 * i) / (float)hp->rope_dim);
    if (hp->rope_scaling == RM_ROPE_SCALING_LINEAR) {
        freq /= hp->rope_factor;
    } else if (hp->rope_scaling == RM_ROPE_SCALING_LLAMA3) {
        float wavelen = 2.0f * (float)M_PI / freq;
        float lo_wl = (float)hp->rope_orig_ctx / hp->rope_low_freq;
        float hi_wl = (float)hp->rope_orig_ctx / hp->rope_high_freq;
        if (wavelen > lo_wl) {
            freq /= hp->rope_factor;
        } else if (wavelen >= hi_wl) {
            float smooth =
                ((float)hp->rope_orig_ctx / wavelen - hp->rope_low_freq) / (hp->rope_high_freq - hp->rope_low_freq);
            freq = (1.0f - smooth) * freq / hp->rope_factor + smooth * freq;
        }
    }
    return freq;
}

void rm_rope_freqs(const rm_llama_hparams *hp, float *freq) {
    for (int i = 0; i < hp->rope_dim / 2; i++) freq[i] = rope_freq(hp, i);
}

void rm_rope_angles_freq(const float *freq, int half, int pos, float *cs) {
    for (int i = 0; i < half; i++) {
        float a = (float)pos * freq[i];
        cs[2 * i] = cosf(a);
        cs[2 * i + 1] = sinf(a);
    }
}

// Rotation angles of one position: cs[2*i] = cos, cs[2*i+1] = sin, i < rope_dim/2.
void rm_rope_angles(const rm_llama_hparams *hp, int pos, float *cs) {
    for (int i = 0; i < hp->rope_dim / 2; i++) {
        float f = rope_freq(hp, i);
        rm_rope_angles_freq(&f, 1, pos, cs + 2 * i);
    }
}

// Rotates n_heads heads of hd floats in place by the angles cs (sign +1) or
// by their opposites (sign -1: the transpose, which is the backward).
static void rope_rotate(const rm_llama_hparams *hp, float *v, int n_heads, const float *cs, float sign) {
    int half = hp->rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * hp->head_dim;
        for (int i = 0; i < half; i++) {
            int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
            float c = cs[2 * i], s = sign * cs[2 * i + 1], x0 = x[a], x1 = x[b];
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

void rm_rope_forward(const rm_llama_hparams *hp, float *v, int n_heads, const float *cs) {
    rope_rotate(hp, v, n_heads, cs, 1.0f);
}

// A rotation's Jacobian is the rotation, so the gradient rotates back.
void rm_rope_backward(const rm_llama_hparams *hp, float *dv, int n_heads, const float *cs) {
    rope_rotate(hp, dv, n_heads, cs, -1.0f);
}

// h[n,f] = silu(g[n,f]) * u[n,f]
void rm_swiglu_forward(float *h, const float *g, const float *u, size_t count) {
    for (size_t i = 0; i < count; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// silu(g) = g sig(g), silu'(g) = sig(g) (1 + g (1 - sig(g)))
void rm_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t count) {
    for (size_t i = 0; i < count; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] += dh[i] * g[i] * sg;
    }
}

// ---------------------------------------------------------------- attention (training)
//
// Per sequence b and head h the products are T x T matrices through rm_matmul
// (y = x W^T) on contiguous copies of the head's K/V slices: the masked half
// is computed and zeroed, which costs less than row-by-row dot products.

typedef struct train_attn_job {
    float *out, *att, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *att_in;
    const int32_t *start;
    int B, T, H, Hk, hd;
    int failed; // a worker could not allocate its scratch
} train_attn_job;

// dst[rows, cols] (contiguous) = src rows of cols floats, lds apart; transposed
// (dst[cols, rows]) when tr.
static void gather(float *dst, const float *src, int64_t lds, int rows, int cols, int tr) {
    if (tr) {
        rm_transpose(NULL, dst, src, lds, rows, cols);
        return;
    }
    for (int r = 0; r < rows; r++) memcpy(dst + (size_t)r * cols, src + r * lds, (size_t)cols * sizeof(float));
}

// y[n, out] (+)= x[n, in] W^T with W = f32 rows [out, in]
static void mm(const float *W, int out, int in, const float *x, int64_t ldx, float *y, int64_t ldy, int n, int acc) {
    rm_tensor t = {.type = RM_TYPE_F32, .n_dims = 2, .ne = {in, out, 1, 1}, .data = (void *)W};
    rm_matmul(NULL, &t, x, ldx, y, ldy, n, acc);
}

// One task = one (sequence, KV head) with all the query heads of its group,
// so that no two tasks write the same rows of dk/dv.
static void attention_forward_task(void *ctx, int ith, int nth) {
    train_attn_job *j = ctx;
    int T = j->T, H = j->H, Hk = j->Hk, hd = j->hd, group = H / Hk;
    size_t qd = (size_t)H * hd, kvd = (size_t)Hk * hd;
    float scale = 1.0f / sqrtf((float)hd);
    float *kc = malloc(2 * (size_t)T * hd * sizeof(float)), *vt = kc ? kc + (size_t)T * hd : NULL;
    if (!kc) {
        j->failed = 1;
        return;
    }
    long begin, end;
    rm_split_range((long)j->B * Hk, ith, nth, &begin, &end);
    for (long task = begin; task < end; task++) {
        int b = (int)(task / Hk), kvh = (int)(task % Hk);
        size_t row0 = (size_t)b * T;
        gather(kc, j->k + row0 * kvd + (size_t)kvh * hd, kvd, T, hd, 0); // K [T, hd]
        gather(vt, j->v + row0 * kvd + (size_t)kvh * hd, kvd, T, hd, 1); // V^T [hd, T]
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            float *P = j->att + ((size_t)b * H + h) * T * T;
            mm(kc, T, hd, j->q + row0 * qd + (size_t)h * hd, qd, P, T, T, 0); // P = Q K^T
            for (int t = 0; t < T; t++) {                                     // causal (and packed) softmax of row t
                float *p = P + (size_t)t * T, mx = -INFINITY, sum = 0.0f;
                int t0 = j->start ? j->start[row0 + t] - b * T : 0;
                for (int t2 = t0; t2 <= t; t2++) mx = fmaxf(mx, p[t2] * scale);
                for (int t2 = t0; t2 <= t; t2++) sum += (p[t2] = expf(p[t2] * scale - mx));
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 < T; t2++) p[t2] = t2 >= t0 && t2 <= t ? p[t2] * inv : 0.0f;
            }
            mm(vt, hd, T, P, T, j->out + row0 * qd + (size_t)h * hd, qd, T, 0); // O = P V
        }
    }
    free(kc);
}

int rm_attention_forward(rm_threadpool *tp, float *out, float *att, const float *q, const float *k, const float *v,
                         const int32_t *start, int B, int T, int H, int Hk, int hd) {
    train_attn_job j = {
        .out = out, .att = att, .q = q, .k = k, .v = v, .start = start, .B = B, .T = T, .H = H, .Hk = Hk, .hd = hd};
    rm_threadpool_run(tp, attention_forward_task, &j);
    return j.failed ? rm_errorf(RM_ENOMEM, "attention: out of memory") : RM_OK;
}

// Per head, with P the probabilities and s = 1/sqrt(hd):
//   dP = dO V^T;  dS = s P * (dP - rowsum(P * dP));  dQ += dS K;  dK += dS^T Q;  dV += P^T dO
static void attention_backward_task(void *ctx, int ith, int nth) {
    train_attn_job *j = ctx;
    int T = j->T, H = j->H, Hk = j->Hk, hd = j->hd, group = H / Hk;
    size_t qd = (size_t)H * hd, kvd = (size_t)Hk * hd, th = (size_t)T * hd, tt = (size_t)T * T;
    float scale = 1.0f / sqrtf((float)hd);
    float *buf = malloc((5 * th + 3 * tt) * sizeof(float));
    if (!buf) {
        j->failed = 1;
        return;
    }
    float *kt = buf, *vc = kt + th, *qt = vc + th, *dot = qt + th, *kc = dot + th;
    float *dP = kc + th, *dSt = dP + tt, *Pt = dSt + tt;
    long begin, end;
    rm_split_range((long)j->B * Hk, ith, nth, &begin, &end);
    for (long task = begin; task < end; task++) {
        int b = (int)(task / Hk), kvh = (int)(task % Hk);
        size_t row0 = (size_t)b * T;
        const float *K = j->k + row0 * kvd + (size_t)kvh * hd;
        gather(kt, K, kvd, T, hd, 1);                                    // K^T [hd, T]
        gather(kc, K, kvd, T, hd, 0);                                    // K [T, hd]
        gather(vc, j->v + row0 * kvd + (size_t)kvh * hd, kvd, T, hd, 0); // V [T, hd]
        float *dK = j->dk + row0 * kvd + (size_t)kvh * hd, *dV = j->dv + row0 * kvd + (size_t)kvh * hd;
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            const float *P = j->att_in + ((size_t)b * H + h) * tt;
            const float *dO = j->dout + row0 * qd + (size_t)h * hd, *Q = j->q + row0 * qd + (size_t)h * hd;
            mm(vc, T, hd, dO, qd, dP, T, T, 0); // dP = dO V^T
            for (int t = 0; t < T; t++) {       // dP becomes dS
                const float *p = P + (size_t)t * T;
                float *d = dP + (size_t)t * T, rs = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) rs += p[t2] * d[t2];
                for (int t2 = 0; t2 < T; t2++) d[t2] = t2 <= t ? scale * p[t2] * (d[t2] - rs) : 0.0f;
            }
            mm(kt, hd, T, dP, T, j->dq + row0 * qd + (size_t)h * hd, qd, T, 1); // dQ += dS K
            gather(dSt, dP, T, T, T, 1);
            gather(qt, Q, qd, T, hd, 1);
            mm(qt, hd, T, dSt, T, dK, kvd, T, 1); // dK += dS^T Q
            gather(Pt, P, T, T, T, 1);
            gather(dot, dO, qd, T, hd, 1);
            mm(dot, hd, T, Pt, T, dV, kvd, T, 1); // dV += P^T dO
        }
    }
    free(buf);
}

int rm_attention_backward(rm_threadpool *tp, float *dq, float *dk, float *dv, const float *dout, const float *att,
                          const float *q, const float *k, const float *v, const int32_t *start, int B, int T, int H,
                          int Hk, int hd) {
    train_attn_job j = {.dq = dq,
                        .dk = dk,
                        .dv = dv,
                        .dout = dout,
                        .att_in = att,
                        .q = q,
                        .k = k,
                        .v = v,
                        .start = start,
                        .B = B,
                        .T = T,
                        .H = H,
                        .Hk = Hk,
                        .hd = hd};
    rm_threadpool_run(tp, attention_backward_task, &j);
    return j.failed ? rm_errorf(RM_ENOMEM, "attention backward: out of memory") : RM_OK;
}
