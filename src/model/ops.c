// ops.c — the element-wise and normalisation ops of the Llama block, shared
// by inference (llama.c) and training (src/train/), each forward next to its
// backward where training needs one.
#include "model/ops.h"

#include <math.h>
#include <string.h>


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

// x[n,dim] += b[dim]
void rm_bias_add(float *x, const float *b, int n, int dim) {
    for (int r = 0; r < n; r++)
        for (int i = 0; i < dim; i++) x[(size_t)r * dim + i] += b[i];
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

// Rotates n_heads heads of hd floats in place with the angles cs.
void rm_rope_forward(const rm_llama_hparams *hp, float *v, int n_heads, const float *cs) {
    int half = hp->rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * hp->head_dim;
        for (int i = 0; i < half; i++) {
            int a = hp->rope_neox ? i : 2 * i, b = hp->rope_neox ? i + half : 2 * i + 1;
            float c = cs[2 * i], s = cs[2 * i + 1], x0 = x[a], x1 = x[b];
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

// h[n,f] = silu(g[n,f]) * u[n,f]
void rm_swiglu_forward(float *h, const float *g, const float *u, size_t count) {
    for (size_t i = 0; i < count; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

