// ops.c — the element-wise and normalisation ops of the Llama block, shared
// by inference (llama.c) and training (src/train/), each forward next to its
// backward where training needs one.
#include "model/ops.h"

#include <math.h>
#include <string.h>

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

// Rotation angles of one position: cs[2*i] = cos, cs[2*i+1] = sin, i < rope_dim/2.
void rm_rope_angles(const rm_llama_hparams *hp, int pos, float *cs) {
    int half = hp->rope_dim / 2;
    for (int i = 0; i < half; i++) {
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
                float smooth = ((float)hp->rope_orig_ctx / wavelen - hp->rope_low_freq) /
                               (hp->rope_high_freq - hp->rope_low_freq);
                freq = (1.0f - smooth) * freq / hp->rope_factor + smooth * freq;
            }
        }
        float a = (float)pos * freq;
        cs[2 * i] = cosf(a);
        cs[2 * i + 1] = sinf(a);
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

typedef struct train_attn_job {
    float *out, *att, *dq, *dk, *dv;
    const float *q, *k, *v, *dout, *att_in;
    const int32_t *start;
    int B, T, H, Hk, hd;
} train_attn_job;

// One task = one (sequence, query head); writes only its own rows of out and att.
static void attention_forward_task(void *ctx, int ith, int nth) {
    const train_attn_job *j = ctx;
    int T = j->T, H = j->H, hd = j->hd, group = H / j->Hk;
    size_t qd = (size_t)H * hd, kvd = (size_t)j->Hk * hd;
    float scale = 1.0f / sqrtf((float)hd);
    long begin, end;
    rm_split_range((long)j->B * H, ith, nth, &begin, &end);
    for (long task = begin; task < end; task++) {
        int b = (int)(task / H), h = (int)(task % H), kvh = h / group;
        for (int t = 0; t < T; t++) {
            size_t r = (size_t)b * T + t;
            int t0 = j->start ? j->start[r] - b * T : 0;
            const float *q = j->q + r * qd + (size_t)h * hd;
            float *p = j->att + (((size_t)b * H + h) * T + t) * T;
            float mx = -INFINITY, sum = 0.0f;
            for (int t2 = 0; t2 < t0; t2++) p[t2] = 0.0f;
            for (int t2 = t0; t2 <= t; t2++) {
                p[t2] = rm_dot_f32(q, j->k + ((size_t)b * T + t2) * kvd + (size_t)kvh * hd, hd) * scale;
                if (p[t2] > mx) mx = p[t2];
            }
            for (int t2 = t0; t2 <= t; t2++) {
                p[t2] = expf(p[t2] - mx);
                sum += p[t2];
            }
            float inv = 1.0f / sum, *o = j->out + r * qd + (size_t)h * hd;
            memset(o, 0, (size_t)hd * sizeof(float));
            for (int t2 = t0; t2 <= t; t2++) {
                p[t2] *= inv;
                rm_axpy_f32(o, p[t2], j->v + ((size_t)b * T + t2) * kvd + (size_t)kvh * hd, hd);
            }
            for (int t2 = t + 1; t2 < T; t2++) p[t2] = 0.0f;
        }
    }
}

void rm_attention_forward(rm_threadpool *tp, float *out, float *att, const float *q, const float *k, const float *v,
                          const int32_t *start, int B, int T, int H, int Hk, int hd) {
    train_attn_job j = {.out = out, .att = att, .q = q, .k = k, .v = v, .start = start,
                        .B = B, .T = T, .H = H, .Hk = Hk, .hd = hd};
    rm_threadpool_run(tp, attention_forward_task, &j);
}

// One task = one (sequence, KV head) and all query heads of its group, so
// that no two tasks write the same rows of dk/dv. Per query row t:
//   datt[t2] = dout[t] . v[t2];  dpre[t2] = att[t2] (datt[t2] - sum_j att[j] datt[j])
//   dq[t] += scale dpre[t2] k[t2];  dk[t2] += scale dpre[t2] q[t];  dv[t2] += att[t2] dout[t]
static void attention_backward_task(void *ctx, int ith, int nth) {
    const train_attn_job *j = ctx;
    int T = j->T, H = j->H, hd = j->hd, Hk = j->Hk, group = H / Hk;
    size_t qd = (size_t)H * hd, kvd = (size_t)Hk * hd;
    float scale = 1.0f / sqrtf((float)hd);
    float datt[T];
    long begin, end;
    rm_split_range((long)j->B * Hk, ith, nth, &begin, &end);
    for (long task = begin; task < end; task++) {
        int b = (int)(task / Hk), kvh = (int)(task % Hk);
        for (int h = kvh * group; h < (kvh + 1) * group; h++) {
            for (int t = 0; t < T; t++) {
                size_t r = (size_t)b * T + t;
                int t0 = j->start ? j->start[r] - b * T : 0;
                const float *p = j->att_in + (((size_t)b * H + h) * T + t) * T;
                const float *dout = j->dout + r * qd + (size_t)h * hd, *q = j->q + r * qd + (size_t)h * hd;
                float *dq = j->dq + r * qd + (size_t)h * hd, dot = 0.0f;
                for (int t2 = t0; t2 <= t; t2++) {
                    size_t kv = ((size_t)b * T + t2) * kvd + (size_t)kvh * hd;
                    datt[t2] = rm_dot_f32(dout, j->v + kv, hd);
                    dot += p[t2] * datt[t2];
                    rm_axpy_f32(j->dv + kv, p[t2], dout, hd);
                }
                for (int t2 = t0; t2 <= t; t2++) {
                    size_t kv = ((size_t)b * T + t2) * kvd + (size_t)kvh * hd;
                    float dpre = p[t2] * (datt[t2] - dot) * scale;
                    rm_axpy_f32(dq, dpre, j->k + kv, hd);
                    rm_axpy_f32(j->dk + kv, dpre, q, hd);
                }
            }
        }
    }
}

void rm_attention_backward(rm_threadpool *tp, float *dq, float *dk, float *dv, const float *dout, const float *att,
                           const float *q, const float *k, const float *v, const int32_t *start, int B, int T, int H,
                           int Hk, int hd) {
    train_attn_job j = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .att_in = att, .q = q, .k = k, .v = v,
                        .start = start, .B = B, .T = T, .H = H, .Hk = Hk, .hd = hd};
    rm_threadpool_run(tp, attention_backward_task, &j);
}
