// test_train.c — training: every op's backward against central finite
// differences of a double-precision reference forward; the whole model's
// full and LoRA gradients; optimizer, checkpoints, overfitting, LoRA export,
// the toy task.
#include "testing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/ops.h"
#include "model/synth.h"

// ---------------------------------------------------------------- helpers

static uint64_t g_rng = 7;
static double urand(void) { // uniform [-1, 1) from a 64-bit LCG
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / (double)(1ull << 52) - 1.0;
}
static void fill(double *x, size_t n, double a) {
    for (size_t i = 0; i < n; i++) x[i] = a * urand();
}
static float *to_f32(const double *x, size_t n) {
    float *f = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

// The scalar L = sum(dy * y(inputs)) whose gradient every backward computes.
typedef double (*loss_fn)(void *ctx);

// g[i] = dL/dx[i] by central differences in double.
static void fd_grad(loss_fn f, void *ctx, double *x, size_t n, double *g) {
    const double h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        g[i] = (lp - lm) / (2 * h);
    }
}

// max |a-b| / (1e-2 + max|b|): float backward vs double finite differences
static double grad_err(const float *a, const double *b, size_t n) {
    double mx = 0, scale = 1e-2;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(a[i] - b[i]));
    return mx / scale;
}

static double dotd(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// ---------------------------------------------------------------- rmsnorm

typedef struct { int n, d; double *x, *w, *dy, *y; } rms_ctx;

static double rms_loss(void *c) {
    rms_ctx *k = c;
    for (int r = 0; r < k->n; r++) {
        double ss = 0;
        for (int i = 0; i < k->d; i++) ss += k->x[r * k->d + i] * k->x[r * k->d + i];
        double s = 1.0 / sqrt(ss / k->d + 1e-5);
        for (int i = 0; i < k->d; i++) k->y[r * k->d + i] = k->w[i] * k->x[r * k->d + i] * s;
    }
    return dotd(k->dy, k->y, (size_t)k->n * k->d);
}

TEST(train_op_rmsnorm_backward) {
    rms_ctx k = {3, 19, 0, 0, 0, 0};
    size_t nd = (size_t)k.n * k.d;
    k.x = malloc(nd * sizeof(double)); k.w = malloc(k.d * sizeof(double));
    k.dy = malloc(nd * sizeof(double)); k.y = malloc(nd * sizeof(double));
    fill(k.x, nd, 1.5); fill(k.w, k.d, 1.0); fill(k.dy, nd, 1.0);
    double *gx = malloc(nd * sizeof(double)), *gw = malloc(k.d * sizeof(double));
    fd_grad(rms_loss, &k, k.x, nd, gx);
    fd_grad(rms_loss, &k, k.w, k.d, gw);
    float *x = to_f32(k.x, nd), *w = to_f32(k.w, k.d), *dy = to_f32(k.dy, nd), *y = calloc(nd, sizeof(float));
    float *dx = calloc(nd, sizeof(float)), *dw = calloc(k.d, sizeof(float));
    rm_rmsnorm_forward(y, x, w, k.n, k.d, 1e-5f);
    rms_loss(&k);
    for (size_t i = 0; i < nd; i++) CHECK_NEAR(y[i], k.y[i], 1e-5);
    rm_rmsnorm_backward(dx, dw, dy, x, w, k.n, k.d, 1e-5f);
    CHECKF(grad_err(dx, gx, nd) < 1e-4, "dx err %g", grad_err(dx, gx, nd));
    CHECKF(grad_err(dw, gw, k.d) < 1e-4, "dw err %g", grad_err(dw, gw, k.d));
    free(k.x); free(k.w); free(k.dy); free(k.y); free(gx); free(gw);
    free(x); free(w); free(dy); free(y); free(dx); free(dw);
}

// ---------------------------------------------------------------- rope

typedef struct { const rm_llama_hparams *hp; int heads; double *x, *dy, *y; const float *cs; } rope_ctx;

static double rope_loss(void *c) {
    rope_ctx *k = c;
    int hd = k->hp->head_dim, half = k->hp->rope_dim / 2;
    memcpy(k->y, k->x, (size_t)k->heads * hd * sizeof(double));
    for (int h = 0; h < k->heads; h++)
        for (int i = 0; i < half; i++) {
            int a = k->hp->rope_neox ? i : 2 * i, b = k->hp->rope_neox ? i + half : 2 * i + 1;
            double c = k->cs[2 * i], s = k->cs[2 * i + 1], x0 = k->x[h * hd + a], x1 = k->x[h * hd + b];
            k->y[h * hd + a] = x0 * c - x1 * s;
            k->y[h * hd + b] = x0 * s + x1 * c;
        }
    return dotd(k->dy, k->y, (size_t)k->heads * hd);
}

TEST(train_op_rope_backward) {
    for (int neox = 0; neox < 2; neox++) {
        rm_llama_hparams hp = {.head_dim = 12, .rope_dim = 8, .rope_base = 10000.0f, .rope_neox = neox, .rope_factor = 1.0f};
        float cs[8];
        rm_rope_angles(&hp, 5, cs);
        int heads = 3;
        size_t n = (size_t)heads * hp.head_dim;
        rope_ctx k = {&hp, heads, malloc(n * sizeof(double)), malloc(n * sizeof(double)), malloc(n * sizeof(double)), cs};
        fill(k.x, n, 1.0); fill(k.dy, n, 1.0);
        double *g = malloc(n * sizeof(double));
        fd_grad(rope_loss, &k, k.x, n, g);
        float *v = to_f32(k.x, n), *dv = to_f32(k.dy, n);
        rm_rope_forward(&hp, v, heads, cs);
        rope_loss(&k);
        for (size_t i = 0; i < n; i++) CHECK_NEAR(v[i], k.y[i], 1e-5);
        rm_rope_backward(&hp, dv, heads, cs);
        CHECKF(grad_err(dv, g, n) < 1e-4, "neox %d: err %g", neox, grad_err(dv, g, n));
        free(k.x); free(k.dy); free(k.y); free(g); free(v); free(dv);
    }
}

// ---------------------------------------------------------------- swiglu and bias

typedef struct { size_t n; double *g, *u, *dy; } swi_ctx;

static double swi_loss(void *c) {
    swi_ctx *k = c;
    double s = 0;
    for (size_t i = 0; i < k->n; i++) s += k->dy[i] * k->g[i] / (1 + exp(-k->g[i])) * k->u[i];
    return s;
}

TEST(train_op_swiglu_bias_backward) {
    swi_ctx k = {37, 0, 0, 0};
    k.g = malloc(k.n * sizeof(double)); k.u = malloc(k.n * sizeof(double)); k.dy = malloc(k.n * sizeof(double));
    fill(k.g, k.n, 4.0); fill(k.u, k.n, 2.0); fill(k.dy, k.n, 1.0);
    double *gg = malloc(k.n * sizeof(double)), *gu = malloc(k.n * sizeof(double));
    fd_grad(swi_loss, &k, k.g, k.n, gg);
    fd_grad(swi_loss, &k, k.u, k.n, gu);
    float *g = to_f32(k.g, k.n), *u = to_f32(k.u, k.n), *dy = to_f32(k.dy, k.n);
    float *dg = calloc(k.n, sizeof(float)), *du = calloc(k.n, sizeof(float)), *h = calloc(k.n, sizeof(float));
    rm_swiglu_forward(h, g, u, k.n);
    for (size_t i = 0; i < k.n; i++) CHECK_NEAR(h[i], k.g[i] / (1 + exp(-k.g[i])) * k.u[i], 1e-5);
    rm_swiglu_backward(dg, du, dy, g, u, k.n);
    CHECKF(grad_err(dg, gg, k.n) < 1e-4, "dg err %g", grad_err(dg, gg, k.n));
    CHECKF(grad_err(du, gu, k.n) < 1e-4, "du err %g", grad_err(du, gu, k.n));
    // bias: y = x + b, so db = column sums of dy (exact)
    float db[5] = {0}, dyb[15];
    for (int i = 0; i < 15; i++) dyb[i] = (float)(i % 7) - 3.0f;
    rm_bias_backward(db, dyb, 3, 5);
    for (int c = 0; c < 5; c++) CHECK_NEAR(db[c], dyb[c] + dyb[5 + c] + dyb[10 + c], 1e-6);
    free(k.g); free(k.u); free(k.dy); free(gg); free(gu); free(g); free(u); free(dy); free(dg); free(du); free(h);
}

// ---------------------------------------------------------------- attention

typedef struct { int B, T, H, Hk, hd; const int32_t *start; double *q, *k, *v, *dy, *out; } att_ctx;

static double att_loss(void *c) {
    att_ctx *a = c;
    int qd = a->H * a->hd, kvd = a->Hk * a->hd, grp = a->H / a->Hk;
    double sc[64];
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->H; h++)
            for (int t = 0; t < a->T; t++) {
                int r = b * a->T + t, t0 = a->start ? a->start[r] - b * a->T : 0;
                double mx = -1e300, sum = 0;
                for (int t2 = t0; t2 <= t; t2++) {
                    sc[t2] = dotd(a->q + r * qd + h * a->hd, a->k + (b * a->T + t2) * kvd + (h / grp) * a->hd, a->hd) / sqrt(a->hd);
                    mx = fmax(mx, sc[t2]);
                }
                for (int t2 = t0; t2 <= t; t2++) sum += (sc[t2] = exp(sc[t2] - mx));
                for (int i = 0; i < a->hd; i++) {
                    double o = 0;
                    for (int t2 = t0; t2 <= t; t2++) o += sc[t2] / sum * a->v[(b * a->T + t2) * kvd + (h / grp) * a->hd + i];
                    a->out[r * qd + h * a->hd + i] = o;
                }
            }
    return dotd(a->dy, a->out, (size_t)a->B * a->T * qd);
}

TEST(train_op_attention_backward) {
    // two sequences of 5; the second packs two examples (rows 5-6 and 7-9)
    int32_t start[10] = {0, 0, 0, 0, 0, 5, 5, 7, 7, 7};
    for (int packed = 0; packed < 2; packed++) {
        att_ctx a = {2, 5, 4, 2, 3, packed ? start : NULL, 0, 0, 0, 0, 0};
        size_t nq = (size_t)a.B * a.T * a.H * a.hd, nk = (size_t)a.B * a.T * a.Hk * a.hd;
        a.q = malloc(nq * sizeof(double)); a.k = malloc(nk * sizeof(double)); a.v = malloc(nk * sizeof(double));
        a.dy = malloc(nq * sizeof(double)); a.out = malloc(nq * sizeof(double));
        fill(a.q, nq, 1.5); fill(a.k, nk, 1.5); fill(a.v, nk, 1.0); fill(a.dy, nq, 1.0);
        double *gq = malloc(nq * sizeof(double)), *gk = malloc(nk * sizeof(double)), *gv = malloc(nk * sizeof(double));
        fd_grad(att_loss, &a, a.q, nq, gq);
        fd_grad(att_loss, &a, a.k, nk, gk);
        fd_grad(att_loss, &a, a.v, nk, gv);
        att_loss(&a);
        float *q = to_f32(a.q, nq), *k = to_f32(a.k, nk), *v = to_f32(a.v, nk), *dy = to_f32(a.dy, nq);
        float *out = calloc(nq, sizeof(float)), *att = calloc((size_t)a.B * a.H * a.T * a.T, sizeof(float));
        float *dq = calloc(nq, sizeof(float)), *dk = calloc(nk, sizeof(float)), *dv = calloc(nk, sizeof(float));
        rm_threadpool *tp = rm_threadpool_create(2);
        rm_attention_forward(tp, out, att, q, k, v, a.start, a.B, a.T, a.H, a.Hk, a.hd);
        for (size_t i = 0; i < nq; i++) CHECK_NEAR(out[i], a.out[i], 1e-5);
        rm_attention_backward(tp, dq, dk, dv, dy, att, q, k, v, a.start, a.B, a.T, a.H, a.Hk, a.hd);
        CHECKF(grad_err(dq, gq, nq) < 1e-4, "packed %d dq err %g", packed, grad_err(dq, gq, nq));
        CHECKF(grad_err(dk, gk, nk) < 1e-4, "packed %d dk err %g", packed, grad_err(dk, gk, nk));
        CHECKF(grad_err(dv, gv, nk) < 1e-4, "packed %d dv err %g", packed, grad_err(dv, gv, nk));
        rm_threadpool_free(tp);
        free(a.q); free(a.k); free(a.v); free(a.dy); free(a.out); free(gq); free(gk); free(gv);
        free(q); free(k); free(v); free(dy); free(out); free(att); free(dq); free(dk); free(dv);
    }
}
