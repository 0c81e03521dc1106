// test_train.c — training: every op's backward against central finite
// differences of a double-precision reference forward; the whole model's
// full and LoRA gradients; optimizer, checkpoints, overfitting, LoRA export,
// the toy task.
#include "testing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "model/ops.h"
#include "format/safetensors.h"
#include "lora/adapter.h"
#include "lora/batch.h"
#include "model/synth.h"
#include "tensor/gemm.h"
#include "train/train.h"

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

typedef struct {
    int n, d;
    double *x, *w, *dy, *y;
} rms_ctx;

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
    k.x = malloc(nd * sizeof(double));
    k.w = malloc(k.d * sizeof(double));
    k.dy = malloc(nd * sizeof(double));
    k.y = malloc(nd * sizeof(double));
    fill(k.x, nd, 1.5);
    fill(k.w, k.d, 1.0);
    fill(k.dy, nd, 1.0);
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
    free(k.x);
    free(k.w);
    free(k.dy);
    free(k.y);
    free(gx);
    free(gw);
    free(x);
    free(w);
    free(dy);
    free(y);
    free(dx);
    free(dw);
}

// ---------------------------------------------------------------- rope

typedef struct {
    const rm_llama_hparams *hp;
    int heads;
    double *x, *dy, *y;
    const float *cs;
} rope_ctx;

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
        rm_llama_hparams hp = {
            .head_dim = 12, .rope_dim = 8, .rope_base = 10000.0f, .rope_neox = neox, .rope_factor = 1.0f};
        float cs[8];
        rm_rope_angles(&hp, 5, cs);
        int heads = 3;
        size_t n = (size_t)heads * hp.head_dim;
        rope_ctx k = {&hp, heads, malloc(n * sizeof(double)), malloc(n * sizeof(double)), malloc(n * sizeof(double)),
                      cs};
        fill(k.x, n, 1.0);
        fill(k.dy, n, 1.0);
        double *g = malloc(n * sizeof(double));
        fd_grad(rope_loss, &k, k.x, n, g);
        float *v = to_f32(k.x, n), *dv = to_f32(k.dy, n);
        rm_rope_forward(&hp, v, heads, cs);
        rope_loss(&k);
        for (size_t i = 0; i < n; i++) CHECK_NEAR(v[i], k.y[i], 1e-5);
        rm_rope_backward(&hp, dv, heads, cs);
        CHECKF(grad_err(dv, g, n) < 1e-4, "neox %d: err %g", neox, grad_err(dv, g, n));
        free(k.x);
        free(k.dy);
        free(k.y);
        free(g);
        free(v);
        free(dv);
    }
}

// ---------------------------------------------------------------- swiglu and bias

typedef struct {
    size_t n;
    double *g, *u, *dy;
} swi_ctx;

static double swi_loss(void *c) {
    swi_ctx *k = c;
    double s = 0;
    for (size_t i = 0; i < k->n; i++) s += k->dy[i] * k->g[i] / (1 + exp(-k->g[i])) * k->u[i];
    return s;
}

TEST(train_op_swiglu_bias_backward) {
    swi_ctx k = {37, 0, 0, 0};
    k.g = malloc(k.n * sizeof(double));
    k.u = malloc(k.n * sizeof(double));
    k.dy = malloc(k.n * sizeof(double));
    fill(k.g, k.n, 4.0);
    fill(k.u, k.n, 2.0);
    fill(k.dy, k.n, 1.0);
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
    free(k.g);
    free(k.u);
    free(k.dy);
    free(gg);
    free(gu);
    free(g);
    free(u);
    free(dy);
    free(dg);
    free(du);
    free(h);
}

// ---------------------------------------------------------------- attention

typedef struct {
    int B, T, H, Hk, hd;
    const int32_t *start;
    double *q, *k, *v, *dy, *out;
} att_ctx;

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
                    sc[t2] = dotd(a->q + r * qd + h * a->hd, a->k + (b * a->T + t2) * kvd + (h / grp) * a->hd, a->hd) /
                             sqrt(a->hd);
                    mx = fmax(mx, sc[t2]);
                }
                for (int t2 = t0; t2 <= t; t2++) sum += (sc[t2] = exp(sc[t2] - mx));
                for (int i = 0; i < a->hd; i++) {
                    double o = 0;
                    for (int t2 = t0; t2 <= t; t2++)
                        o += sc[t2] / sum * a->v[(b * a->T + t2) * kvd + (h / grp) * a->hd + i];
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
        a.q = malloc(nq * sizeof(double));
        a.k = malloc(nk * sizeof(double));
        a.v = malloc(nk * sizeof(double));
        a.dy = malloc(nq * sizeof(double));
        a.out = malloc(nq * sizeof(double));
        fill(a.q, nq, 1.5);
        fill(a.k, nk, 1.5);
        fill(a.v, nk, 1.0);
        fill(a.dy, nq, 1.0);
        double *gq = malloc(nq * sizeof(double)), *gk = malloc(nk * sizeof(double)), *gv = malloc(nk * sizeof(double));
        fd_grad(att_loss, &a, a.q, nq, gq);
        fd_grad(att_loss, &a, a.k, nk, gk);
        fd_grad(att_loss, &a, a.v, nk, gv);
        att_loss(&a);
        float *q = to_f32(a.q, nq), *k = to_f32(a.k, nk), *v = to_f32(a.v, nk), *dy = to_f32(a.dy, nq);
        float *out = calloc(nq, sizeof(float)), *att = calloc((size_t)a.B * a.H * a.T * a.T, sizeof(float));
        float *dq = calloc(nq, sizeof(float)), *dk = calloc(nk, sizeof(float)), *dv = calloc(nk, sizeof(float));
        rm_threadpool *tp = rm_threadpool_create(2);
        CHECK_OK(rm_attention_forward(tp, out, att, q, k, v, a.start, a.B, a.T, a.H, a.Hk, a.hd));
        for (size_t i = 0; i < nq; i++) CHECK_NEAR(out[i], a.out[i], 1e-5);
        CHECK_OK(rm_attention_backward(tp, dq, dk, dv, dy, att, q, k, v, a.start, a.B, a.T, a.H, a.Hk, a.hd));
        CHECKF(grad_err(dq, gq, nq) < 1e-4, "packed %d dq err %g", packed, grad_err(dq, gq, nq));
        CHECKF(grad_err(dk, gk, nk) < 1e-4, "packed %d dk err %g", packed, grad_err(dk, gk, nk));
        CHECKF(grad_err(dv, gv, nk) < 1e-4, "packed %d dv err %g", packed, grad_err(dv, gv, nk));
        rm_threadpool_free(tp);
        free(a.q);
        free(a.k);
        free(a.v);
        free(a.dy);
        free(a.out);
        free(gq);
        free(gk);
        free(gv);
        free(q);
        free(k);
        free(v);
        free(dy);
        free(out);
        free(att);
        free(dq);
        free(dk);
        free(dv);
    }
}

// ---------------------------------------------------------------- the backward products

TEST(train_gemm_nn_matches_reference) {
    rm_threadpool *tp = rm_threadpool_create(2);
    const int shapes[][3] = {{1, 1, 1},     {7, 13, 5},   {6, 16, 300}, {37, 41, 29},
                             {64, 72, 520}, {5, 8, 1000}, {300, 3, 17}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        int lda = K + 3, ldb = N + 1, ldc = N + 2;
        double *ad = malloc((size_t)M * lda * sizeof(double)), *bd = malloc((size_t)K * ldb * sizeof(double));
        double *cd = malloc((size_t)M * ldc * sizeof(double));
        fill(ad, (size_t)M * lda, 1.0);
        fill(bd, (size_t)K * ldb, 1.0);
        fill(cd, (size_t)M * ldc, 1.0);
        float *A = to_f32(ad, (size_t)M * lda), *B = to_f32(bd, (size_t)K * ldb);
        float *C1 = to_f32(cd, (size_t)M * ldc), *C2 = to_f32(cd, (size_t)M * ldc);
        rm_gemm_nn_ref(C1, ldc, A, lda, B, ldb, M, N, K);
        rm_gemm_nn(tp, C2, ldc, A, lda, B, ldb, M, N, K);
        double mx = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < ldc; j++) mx = fmax(mx, fabs(C1[i * ldc + j] - C2[i * ldc + j]));
        CHECKF(mx < 1e-4 * sqrt((double)K), "%dx%dx%d: differs by %g", M, N, K, mx);
        float *T = malloc((size_t)N * K * sizeof(float));
        rm_transpose(tp, T, B, ldb, K, N);
        int bad = 0;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++) bad += T[j * K + k] != B[k * ldb + j];
        CHECK(bad == 0);
        free(ad);
        free(bd);
        free(cd);
        free(A);
        free(B);
        free(C1);
        free(C2);
        free(T);
    }
    rm_threadpool_free(tp);
}

// ---------------------------------------------------------------- the whole model

// A random llama model of the given shape (byte-level vocabulary) in the test's tmpdir.
static rm_llama *tiny_model(const char *name, int V, int d, int L, int H, int Hk, int f, rm_type type, uint64_t seed) {
    rm_synth_shape s = {name, V, d, L, H, Hk, f, 256};
    char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", rm_test_tmpdir(), name);
    rm_llama *m = NULL;
    int rc = rm_synth_write(&s, type, seed, path, NULL, NULL);
    if (!rc) rc = rm_llama_load(&m, path);
    if (rc) rm_test_fail(__FILE__, __LINE__, "tiny model: %s", rm_last_error());
    return m;
}

// A trainer over m with B x T micro-batches; steps/lr 0 keep the defaults.
static rm_trainer *new_trainer(rm_llama *m, int B, int T, int threads, int full, int steps, float lr) {
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = B;
    p.seq = T;
    p.threads = threads;
    if (steps) p.steps = steps;
    if (lr > 0) p.lr = lr;
    p.warmup = p.steps / 10 > 1 ? p.steps / 10 : 1;
    rm_trainer *t = NULL;
    if (rm_trainer_create(&t, m, &p) || (full && rm_trainer_full(t))) {
        rm_test_fail(__FILE__, __LINE__, "trainer: %s", rm_last_error());
        rm_trainer_free(t);
        return NULL;
    }
    return t;
}

// Every trainable value uniform in [-a, a); returns the number of tensors.
static int randomize_params(rm_trainer *t, float a, uint64_t seed) {
    int np;
    rm_tparam *ps = rm_trainer_params(t, &np);
    for (int i = 0; i < np; i++)
        for (size_t j = 0; j < ps[i].n; j++) ps[i].w[j] = a * (2.0f * rm_rng_uniform(&seed) - 1.0f);
    return np;
}

static void random_batch(rm_tbatch *b, int V, uint64_t seed) {
    uint64_t s = seed;
    for (int r = 0; r < b->B * b->T; r++) {
        b->token[r] = (int32_t)(rm_rng_next(&s) % (uint64_t)V);
        b->pos[r] = r % b->T;
        b->start[r] = r - r % b->T;
    }
    for (int r = 0; r < b->B * b->T; r++) b->target[r] = r % b->T == b->T - 1 ? -1 : b->token[r + 1];
}

TEST(train_forward_matches_inference) {
    rm_llama *m = tiny_model("fwd", 64, 32, 2, 4, 2, 48, RM_TYPE_F32, 3);
    REQUIRE(m);
    rm_trainer *t = new_trainer(m, 1, 9, 2, 0, 0, 0);
    REQUIRE(t);
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 1, 9));
    random_batch(&b, 64, 5);
    float *lt = malloc(9 * 64 * sizeof(float)), *li = malloc(9 * 64 * sizeof(float));
    double loss;
    CHECK_OK(rm_trainer_forward(t, &b, (float)rm_tbatch_count(&b), 0, &loss, lt));
    CHECK(loss > 3.0 && loss < 6.0);
    rm_kvcache kv;
    CHECK_OK(rm_kvcache_init(&kv, 2, 1, 16, 2 * 8));
    int32_t slot[9] = {0};
    rm_batch ib = {.n = 9, .token = b.token, .pos = b.pos, .slot = slot};
    CHECK_OK(rm_llama_forward(m, &kv, NULL, &ib, NULL, li));
    double mx = 0;
    for (int i = 0; i < 9 * 64; i++) mx = fmax(mx, fabs(lt[i] - li[i]));
    CHECKF(mx < 1e-4, "training and serving logits differ by %g", mx);
    rm_kvcache_free(&kv);
    free(lt);
    free(li);
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    rm_llama_free(m);
}

// Finite differences of the (float) model loss for a few entries of every
// parameter tensor: the entry with the largest analytic gradient and two
// random ones. Tolerances allow for float forward passes. (Also used by
// test_router.c for the router's parameters.)
void train_model_grad_check(rm_trainer *t, const rm_tbatch *b, int *n_checked);
void train_model_grad_check_kinks(rm_trainer *t, const rm_tbatch *b, int *n_checked, int *n_kinks);

// The central difference of the loss in entry j of p with step h.
static double central_diff(rm_trainer *t, const rm_tbatch *b, float norm, rm_tparam *p, size_t j, float h) {
    float w0 = p->w[j];
    double lp, lm;
    p->w[j] = w0 + h;
    CHECK_OK(rm_trainer_forward(t, b, norm, 0, &lp, NULL));
    p->w[j] = w0 - h;
    CHECK_OK(rm_trainer_forward(t, b, norm, 0, &lm, NULL));
    p->w[j] = w0;
    return (lp - lm) / (2.0 * ((double)(w0 + h) - (double)w0));
}

// With n_kinks, an entry whose central differences at h and h/2 disagree
// (the loss is not smooth there: a top-k routing changes its choice) is
// counted in *n_kinks instead of checked.
static void grad_check(rm_trainer *t, const rm_tbatch *b, int *n_checked, int *n_kinks) {
    float norm = (float)rm_tbatch_count(b);
    double loss;
    rm_trainer_zero_grad(t);
    CHECK_OK(rm_trainer_forward(t, b, norm, 1, &loss, NULL));
    int np;
    rm_tparam *ps = rm_trainer_params(t, &np);
    uint64_t s = 11;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < np; i++) {
        rm_tparam *p = &ps[i];
        size_t idx[3] = {0, rm_rng_next(&s) % p->n, rm_rng_next(&s) % p->n};
        for (size_t j = 0; j < p->n; j++)
            if (fabsf(p->g[j]) > fabsf(p->g[idx[0]])) idx[0] = j;
        for (int k = 0; k < 3; k++) {
            float h = 1e-2f * fmaxf(1.0f, fabsf(p->w[idx[k]]));
            double fd = central_diff(t, b, norm, p, idx[k], h), an = p->g[idx[k]];
            if (n_kinks) {
                double half = central_diff(t, b, norm, p, idx[k], h / 2);
                if (fabs(fd - half) > 0.02 * fabs(fd) + 2e-4) {
                    (*n_kinks)++;
                    continue;
                }
            }
            double err = fabs(fd - an) / (1e-3 + fabs(fd));
            if (fabs(fd - an) > 2e-4 && err > worst) {
                worst = err;
                worst_name = p->name;
            }
            (*n_checked)++;
        }
    }
    CHECKF(worst < 0.05, "worst relative gradient error %.3g in %s", worst, worst_name);
}

void train_model_grad_check(rm_trainer *t, const rm_tbatch *b, int *n_checked) { grad_check(t, b, n_checked, NULL); }
void train_model_grad_check_kinks(rm_trainer *t, const rm_tbatch *b, int *n_checked, int *n_kinks) {
    grad_check(t, b, n_checked, n_kinks);
}

TEST(train_model_grad_full) {
    rm_llama *m = tiny_model("gradfull", 40, 16, 2, 4, 2, 24, RM_TYPE_F32, 4);
    REQUIRE(m);
    rm_trainer *t = new_trainer(m, 2, 6, 1, 1, 0, 0);
    REQUIRE(t);
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 2, 6));
    random_batch(&b, 40, 9);
    b.start[9] = 8; // the second sequence packs two examples
    b.start[10] = 8;
    b.start[11] = 8;
    b.pos[8] = 0;
    b.pos[9] = 1;
    b.pos[10] = 2;
    b.pos[11] = 3;
    int n = 0;
    train_model_grad_check(t, &b, &n);
    CHECK(n >= 3 * (2 + 2 * 9)); // tied classifier: embedding, final norm, 9 per layer
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    rm_llama_free(m);
}

TEST(train_model_grad_lora) {
    rm_llama *m = tiny_model("gradlora", 40, 16, 2, 4, 2, 24, RM_TYPE_F32, 5);
    REQUIRE(m);
    rm_trainer *t = new_trainer(m, 2, 6, 1, 0, 0, 0);
    REQUIRE(t);
    CHECK_OK(rm_trainer_add_lora(t, (1u << RM_LIN_COUNT) - 1, 3, 6.0f, 0));
    // B starts at zero (PEFT init), which would make dA vanish: randomise it
    int np = randomize_params(t, 0.3f, 3);
    CHECK(np == 2 * 7 * 2);
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 2, 6));
    random_batch(&b, 40, 10);
    int n = 0;
    train_model_grad_check(t, &b, &n);
    CHECK(n == 3 * np);
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- optimizer, accumulation, checkpoints

TEST(train_lr_schedule) {
    rm_train_params p;
    rm_train_default_params(&p);
    p.lr = 1.0f;
    p.warmup = 4;
    p.steps = 14;
    p.min_lr_ratio = 0.1f;
    CHECK_NEAR(rm_train_lr(&p, 0), 0.25, 1e-6);
    CHECK_NEAR(rm_train_lr(&p, 3), 1.0, 1e-6);
    CHECK_NEAR(rm_train_lr(&p, 9), 0.55, 1e-6); // half way down the cosine
    CHECK_NEAR(rm_train_lr(&p, 14), 0.1, 1e-6);
    CHECK_NEAR(rm_train_lr(&p, 100), 0.1, 1e-6);
}

static const char *k_text = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! ";

static void text_batch(rm_tbatch *b, int offset) {
    int L = (int)strlen(k_text);
    for (int r = 0; r < b->B * b->T; r++) {
        int t = r % b->T, s = r / b->T;
        b->token[r] = (unsigned char)k_text[(offset + s * 7 + t) % L];
        b->target[r] = (unsigned char)k_text[(offset + s * 7 + t + 1) % L];
        b->pos[r] = t;
        b->start[r] = r - t;
    }
}

TEST(train_accumulation_matches_big_batch) {
    rm_llama *m = tiny_model("accum", 128, 16, 1, 2, 1, 32, RM_TYPE_F32, 6);
    REQUIRE(m);
    rm_trainer *t = new_trainer(m, 2, 8, 1, 1, 0, 0);
    REQUIRE(t);
    rm_tbatch big, half[2];
    CHECK_OK(rm_tbatch_alloc(&big, 2, 8));
    text_batch(&big, 0);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(rm_tbatch_alloc(&half[i], 1, 8));
        memcpy(half[i].token, big.token + 8 * i, 8 * sizeof(int32_t));
        memcpy(half[i].target, big.target + 8 * i, 8 * sizeof(int32_t));
        memcpy(half[i].pos, big.pos, 8 * sizeof(int32_t));
        memcpy(half[i].start, big.start, 8 * sizeof(int32_t));
    }
    int np;
    rm_tparam *ps = rm_trainer_params(t, &np);
    double l1, l2;
    rm_trainer_zero_grad(t);
    CHECK_OK(rm_trainer_forward(t, &big, 16.0f, 1, &l1, NULL));
    size_t total = rm_trainer_n_trainable(t), k = 0;
    float *g1 = malloc(total * sizeof(float));
    for (int i = 0; i < np; i++)
        for (size_t j = 0; j < ps[i].n; j++) g1[k++] = ps[i].g[j];
    rm_trainer_zero_grad(t);
    CHECK_OK(rm_trainer_forward(t, &half[0], 16.0f, 1, &l2, NULL));
    double l3;
    CHECK_OK(rm_trainer_forward(t, &half[1], 16.0f, 1, &l3, NULL));
    CHECK_NEAR(l1, l2 + l3, 1e-5);
    double mx = 0;
    k = 0;
    for (int i = 0; i < np; i++)
        for (size_t j = 0; j < ps[i].n; j++) mx = fmax(mx, fabs(g1[k++] - ps[i].g[j]));
    CHECKF(mx < 1e-5, "accumulated gradients differ by %g", mx);
    free(g1);
    rm_tbatch_free(&big);
    rm_tbatch_free(&half[0]);
    rm_tbatch_free(&half[1]);
    rm_trainer_free(t);
    rm_llama_free(m);
}

// Trains `steps` full steps from the model file, optionally saving a
// checkpoint after `save_at` steps or resuming from one; returns all weights.
static float *train_run(const char *path, int steps, int save_at, const char *ckpt, int resume, size_t *n) {
    rm_llama *m;
    if (rm_llama_load(&m, path)) return NULL;
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = 2;
    p.seq = 8;
    p.steps = steps;
    p.warmup = 2;
    p.lr = 3e-3f;
    p.weight_decay = 0.1f;
    p.threads = 2;
    rm_trainer *t;
    float *out = NULL;
    if (rm_trainer_create(&t, m, &p) == RM_OK && rm_trainer_full(t) == RM_OK) {
        rm_tbatch b;
        rm_tbatch_alloc(&b, 2, 8);
        int s0 = 0;
        if (resume) {
            CHECK_OK(rm_trainer_load_checkpoint(t, ckpt));
            s0 = rm_trainer_step_count(t);
        }
        for (int s = s0; s < steps; s++) {
            if (s == save_at) CHECK_OK(rm_trainer_save_checkpoint(t, ckpt));
            text_batch(&b, s * 3);
            double loss;
            CHECK_OK(rm_trainer_step(t, &b, 1, &loss, NULL));
        }
        *n = rm_trainer_n_trainable(t);
        out = malloc(*n * sizeof(float));
        int np;
        rm_tparam *ps = rm_trainer_params(t, &np);
        size_t k = 0;
        for (int i = 0; i < np; i++) {
            memcpy(out + k, ps[i].w, ps[i].n * sizeof(float));
            k += ps[i].n;
        }
        rm_tbatch_free(&b);
    }
    rm_trainer_free(t);
    rm_llama_free(m);
    return out;
}

TEST(train_checkpoint_resumes_bit_for_bit) {
    rm_llama *m = tiny_model("ckpt", 128, 16, 2, 2, 1, 32, RM_TYPE_F32, 8);
    REQUIRE(m);
    rm_llama_free(m);
    char path[512], ckpt[512];
    snprintf(path, sizeof path, "%s/ckpt.gguf", rm_test_tmpdir());
    snprintf(ckpt, sizeof ckpt, "%s/ckpt.train.gguf", rm_test_tmpdir());
    size_t n1 = 0, n2 = 0;
    float *a = train_run(path, 6, 3, ckpt, 0, &n1);
    float *b = train_run(path, 6, -1, ckpt, 1, &n2);
    REQUIRE(a && b && n1 == n2);
    CHECK(memcmp(a, b, n1 * sizeof(float)) == 0);
    free(a);
    free(b);
}

// ---------------------------------------------------------------- overfitting

TEST(train_tiny_model_overfits) {
    int san = rm_test_sanitized();
    rm_llama *m = tiny_model("overfit", 128, 32, 2, 4, 2, 64, RM_TYPE_F32, 9);
    REQUIRE(m);
    int steps = san ? 120 : 200;
    rm_trainer *t = new_trainer(m, 4, 24, 2, 1, steps, 1e-2f);
    REQUIRE(t);
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 4, 24));
    text_batch(&b, 0);
    double first = 0, loss = 0;
    for (int s = 0; s < steps; s++) {
        CHECK_OK(rm_trainer_step(t, &b, 1, &loss, NULL));
        if (s == 0) first = loss;
    }
    fprintf(stderr, "    overfit: loss %.4f -> %.5f in %d steps\n", first, loss, steps);
    CHECKF(first > 3.0 && loss < 0.05, "loss %.4f -> %.4f", first, loss);
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- LoRA: frozen bases, export round trip

TEST(train_lora_on_quantized_base_learns) {
    rm_llama *m = tiny_model("loraq8", 128, 64, 2, 4, 2, 96, RM_TYPE_Q8_0, 12);
    REQUIRE(m);
    rm_trainer *t = new_trainer(m, 4, 24, 2, 0, 60, 1e-2f);
    REQUIRE(t);
    unsigned mask;
    CHECK_OK(rm_lora_parse_targets("q,v,down", &mask));
    CHECK_OK(rm_trainer_add_lora(t, mask, 4, 8.0f, 0));
    CHECK(rm_trainer_n_trainable(t) == (size_t)2 * 4 * ((64 + 64) + (64 + 32) + (96 + 64)));
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 4, 24));
    text_batch(&b, 0);
    double first = 0, loss = 0;
    for (int s = 0; s < 60; s++) {
        CHECK_OK(rm_trainer_step(t, &b, 1, &loss, NULL));
        if (s == 0) first = loss;
    }
    fprintf(stderr, "    lora on q8_0: loss %.4f -> %.4f\n", first, loss);
    CHECKF(loss < 0.6 * first, "loss %.4f -> %.4f", first, loss);
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    rm_llama_free(m);
}

// Logits of all rows of b's first sequence through rm_llama_forward with the adapter a.
static void serve_logits(rm_llama *m, rm_lora *a, const rm_tbatch *b, float *logits) {
    rm_lora_plan plan;
    CHECK_OK(rm_lora_plan_init(&plan, RM_COMPOSE_SELECTION, 1, &a, NULL, NULL));
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    rm_kvcache kv;
    CHECK_OK(rm_kvcache_init(&kv, m->hp.n_layer, 1, b->T, m->hp.n_head_kv * m->hp.head_dim));
    int32_t slot[64] = {0};
    const void *plans[64];
    for (int i = 0; i < b->T; i++) plans[i] = &plan;
    rm_batch ib = {.n = b->T, .token = b->token, .pos = b->pos, .slot = slot, .plan = plans};
    CHECK_OK(rm_llama_forward(m, &kv, NULL, &ib, &hook, logits));
    CHECK_OK(rm_lora_batch_status(lb));
    rm_kvcache_free(&kv);
    rm_lora_batch_free(lb);
    rm_lora_plan_free(&plan);
}

TEST(train_lora_export_roundtrip_peft_gguf) {
    rm_llama *m = tiny_model("lorart", 64, 32, 2, 4, 2, 48, RM_TYPE_F32, 13);
    REQUIRE(m);
    rm_trainer *t = new_trainer(m, 1, 10, 1, 0, 0, 0);
    REQUIRE(t);
    CHECK_OK(rm_trainer_add_lora(t, (1u << RM_LIN_COUNT) - 1, 4, 8.0f, 0));
    randomize_params(t, 0.2f, 5); // trained-looking adapters: B != 0
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 1, 10));
    random_batch(&b, 64, 21);
    float *ref = malloc(10 * 64 * sizeof(float)), *got = malloc(10 * 64 * sizeof(float));
    double loss;
    CHECK_OK(rm_trainer_forward(t, &b, 1.0f, 0, &loss, ref));

    rm_lora *a;
    CHECK_OK(rm_trainer_export_lora(t, &a));
    char dir[512], gg[512], st[600];
    snprintf(dir, sizeof dir, "%s/peft-rt", rm_test_tmpdir());
    snprintf(gg, sizeof gg, "%s/lora-rt.gguf", rm_test_tmpdir());
    CHECK_OK(rm_lora_save_peft(a, dir));
    CHECK_OK(rm_lora_save_gguf(a, gg));
    rm_lora_free(a);

    // PEFT layout: A [r, in], B [out, r] with q_proj rows in Hugging Face RoPE
    // order: HF row h*hd + j*hd/2 + i is our (GGUF) row h*hd + 2i + j.
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    st_file f;
    CHECK_OK(st_open(&f, st));
    const st_tensor *qa = st_find(&f, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
    const st_tensor *qb = st_find(&f, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight");
    REQUIRE(qa && qb);
    CHECK(qa->n_dims == 2 && qa->shape[0] == 4 && qa->shape[1] == 32);
    CHECK(qb->n_dims == 2 && qb->shape[0] == 32 && qb->shape[1] == 4);
    const rm_tlinear *L = rm_trainer_linear(t, 1, RM_LIN_Q);
    float *bh = malloc(32 * 4 * sizeof(float));
    CHECK_OK(st_to_f32(qb, bh));
    int hd = 8, half = 4, bad = 0;
    for (int h = 0; h < 4; h++)
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                for (int c = 0; c < 4; c++)
                    bad += bh[(h * hd + j * half + i) * 4 + c] != L->B[(h * hd + 2 * i + j) * 4 + c];
    CHECK(bad == 0);
    free(bh);
    st_close(&f);

    const char *paths[2] = {dir, gg};
    float *peft_logits = malloc(10 * 64 * sizeof(float));
    for (int k = 0; k < 2; k++) {
        rm_lora *back;
        CHECK_OK(rm_lora_load(&back, paths[k]));
        CHECK_OK(rm_lora_bind(back, m));
        serve_logits(m, back, &b, got);
        double mx = 0;
        for (int i = 0; i < 10 * 64; i++) mx = fmax(mx, fabs(got[i] - ref[i]));
        CHECKF(mx < 1e-4, "%s: logits differ from the trainer's by %g", k ? "gguf" : "peft", mx);
        if (k == 0) memcpy(peft_logits, got, 10 * 64 * sizeof(float));
        else CHECK(memcmp(peft_logits, got, 10 * 64 * sizeof(float)) == 0); // PEFT and GGUF: identical
        rm_lora_free(back);
    }
    free(peft_logits);
    free(ref);
    free(got);
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- the toy task: reverse a 5-letter word

// n words of distinct lowercase letters as JSONL {"inputs", "targets"}:
// task 'r' reverses a 5-letter word; task 'b' (the base's curriculum)
// alternates copying a word of 3 to 7 letters (so that copying needs an
// induction head, not a fixed offset) and naming the letter before a given
// one ("abcde?c" -> "b").
static void write_words(const char *path, int n, uint64_t seed, char task) {
    FILE *f = fopen(path, "w");
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        char w[8] = {0}, r[6] = {0};
        int len = task == 'r' ? 5 : 3 + (int)(rm_rng_next(&s) % 5);
        for (int k = 0; k < len; k++) {
            int again;
            do {
                w[k] = (char)('a' + rm_rng_next(&s) % 26);
                again = 0;
                for (int j = 0; j < k; j++) again |= w[j] == w[k];
            } while (again);
        }
        if (task == 'r') {
            for (int k = 0; k < 5; k++) r[k] = w[4 - k];
            fprintf(f, "{\"inputs\": \"%s\", \"targets\": \"%s\"}\n", w, r);
        } else if (i % 2 == 0) {
            fprintf(f, "{\"inputs\": \"%s\", \"targets\": \"%s\"}\n", w, w);
        } else {
            int k = 1 + (int)(rm_rng_next(&s) % (uint64_t)(len - 1));
            fprintf(f, "{\"inputs\": \"%s?%c\", \"targets\": \"%c\"}\n", w, w[k], w[k - 1]);
        }
    }
    fclose(f);
}

static int train_steps(rm_trainer *t, const rm_tdata *d, int steps, double *first, double *last) {
    rm_tbatch b;
    int rc = rm_tbatch_alloc(&b, rm_trainer_get_params(t)->batch, rm_trainer_get_params(t)->seq);
    for (int s = 0; !rc && s < steps; s++) {
        double loss = 0;
        rc = rm_trainer_next_batch(t, d, &b, 1, NULL);
        if (!rc) rc = rm_trainer_step(t, &b, 1, &loss, NULL);
        if (rc) break;
        if (s == 0) *first = loss;
        *last = loss;
    }
    rm_tbatch_free(&b);
    return rc;
}

// One run of the toy task on a base trained from model seed `seed`: the
// base's and the LoRA's held-out EM; the LoRA's training loss first / last.
static int toy_reverse_run(uint64_t seed, int san, const char *base_path, const rm_tdata *copy, const rm_tdata *rev,
                           const rm_tdata *held, double *em_base, double *em_lora, double *first, double *last) {
    int base_steps = san ? 25 : 500, lora_steps = san ? 30 : 1200, B = san ? 4 : 8, rc;
    // 1. a base that copies words and knows which letter comes before which: a
    //    tiny byte-level model trained from scratch
    rm_llama *m = tiny_model("toy-init", 258, 64, 2, 4, 2, 128, RM_TYPE_F32, seed);
    if (!m) return RM_EIO;
    rm_trainer *t = new_trainer(m, B, 64, 1, 1, base_steps, 1e-2f);
    rc = t ? train_steps(t, copy, base_steps, first, last) : RM_EINVAL;
    if (!rc) fprintf(stderr, "    base (seed %d; copy + letter before): loss %.3f -> %.4f\n", (int)seed, *first, *last);
    if (!rc) rc = rm_trainer_save_model(t, base_path);
    rm_trainer_free(t);
    rm_llama_free(m);
    // 2. the base reverses almost nothing; a LoRA on the frozen base learns to
    if (!rc) rc = rm_llama_load(&m, base_path);
    if (rc) return rc;
    t = new_trainer(m, B, 64, 1, 0, lora_steps, 1e-2f);
    rc = t ? rm_trainer_eval_em(t, held, 0, em_base) : RM_EINVAL;
    if (!rc) rc = rm_trainer_add_lora(t, (1u << RM_LIN_COUNT) - 1, 16, 32.0f, 0);
    if (!rc) rc = train_steps(t, rev, lora_steps, first, last);
    if (!rc) rc = rm_trainer_eval_em(t, held, 0, em_lora);
    double eval_loss = 0;
    if (!rc) rc = rm_trainer_eval_loss(t, held, &eval_loss);
    if (!rc)
        fprintf(stderr, "    lora (reverse): loss %.3f -> %.4f, held-out loss %.4f, EM base %.2f -> lora %.2f\n",
                *first, *last, eval_loss, *em_base, *em_lora);
    rm_trainer_free(t);
    rm_llama_free(m);
    return rc;
}

// A model this small trained from scratch sometimes gives a base on which the
// LoRA settles on a partial answer (train loss ~0.1, held-out EM ~0.4). With
// 8000 training words and 1200 steps, 22 of 22 model seeds (14-35) reached a
// held-out EM > 0.9 (min 0.97), and 20 of 22 with SiLU computed 1-2 ulp
// differently (2000 words, 800 steps: 18 and 14 of 22). So a second base
// (seed 15) is trained when the first falls short, and both runs are printed;
// a trainer that cannot learn the task fails both.
TEST(train_lora_toy_reverse_word) {
    int san = rm_test_sanitized();
    const char *tmp = rm_test_tmpdir();
    char copy_path[512], rev_path[512], held_path[512], base_path[512];
    snprintf(copy_path, sizeof copy_path, "%s/copy.jsonl", tmp);
    snprintf(rev_path, sizeof rev_path, "%s/reverse.jsonl", tmp);
    snprintf(held_path, sizeof held_path, "%s/reverse-heldout.jsonl", tmp);
    snprintf(base_path, sizeof base_path, "%s/toy-base.gguf", tmp);
    write_words(copy_path, 4000, 1, 'b');
    write_words(rev_path, 8000, 2, 'r');
    write_words(held_path, san ? 32 : 100, 3, 'r'); // other words (a different seed)
    const char *tmpl = "{inputs}=";
    rm_tdata copy = {0}, rev = {0}, held = {0};
    CHECK_OK(rm_tdata_load_jsonl(&copy, copy_path, tmpl, NULL, -1, 257, 64));
    CHECK_OK(rm_tdata_load_jsonl(&rev, rev_path, tmpl, NULL, -1, 257, 64));
    CHECK_OK(rm_tdata_load_jsonl(&held, held_path, tmpl, NULL, -1, 257, 64));
    REQUIRE(copy.n == 4000 && rev.n == 8000 && rev.ex[0].n == 12 && rev.ex[0].n_prompt == 6);
    // Opt: full runs (~12 s each on one core). Sanitized: the same pipeline,
    // shorter, one base.
    double em_base = 1, em_lora = 0, first = 0, last = 0;
    for (int seed = 14; seed <= (san ? 14 : 15); seed++) {
        REQUIRE(toy_reverse_run((uint64_t)seed, san, base_path, &copy, &rev, &held, &em_base, &em_lora, &first,
                                &last) == RM_OK);
        CHECKF(em_base < 0.05, "seed %d: the base already reverses (EM %.2f)", seed, em_base);
        if (san || em_lora > 0.9) break;
    }
    if (san) CHECKF(last < 0.9 * first, "LoRA loss %.3f -> %.3f", first, last);
    else CHECKF(em_lora > 0.9, "held-out EM %.2f", em_lora);
    rm_tdata_free(&copy);
    rm_tdata_free(&rev);
    rm_tdata_free(&held);
}

// ---------------------------------------------------------------- the CLI

// Runs `ramole ARGS`; returns the exit status and the last stdout line in last.
static int run_cli(const char *args, char *last, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>%s/cli.err", rm_test_bin(), args, rm_test_tmpdir());
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[4096];
    last[0] = 0;
    while (fgets(line, sizeof line, p)) snprintf(last, cap, "%s", line);
    return pclose(p);
}

TEST(train_cli_lora_train_writes_peft) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *tmp = rm_test_tmpdir();
    rm_llama *m = tiny_model("cli-base", 258, 32, 2, 4, 2, 64, RM_TYPE_Q8_0, 15);
    REQUIRE(m);
    char data[512], tmpl[512], args[3072], last[4096], out[512];
    snprintf(data, sizeof data, "%s/cli-words.jsonl", tmp);
    snprintf(tmpl, sizeof tmpl, "%s/cli-template.txt", tmp);
    snprintf(out, sizeof out, "%s/cli-adapter", tmp);
    write_words(data, 60, 4, 'r');
    FILE *f = fopen(tmpl, "w");
    fputs("reverse {inputs}: ", f);
    fclose(f);
    snprintf(args, sizeof args,
             "lora train --base %s/cli-base.gguf --data %s --template %s --rank 4 --alpha 8 --targets q,v,down "
             "--steps 4 --batch 2 --lr 1e-2 --seed 3 --threads 1 --eval-em 4 --gguf --json --out %s",
             tmp, data, tmpl, out);
    REQUIRE(run_cli(args, last, sizeof last) == 0);
    rm_json *j = NULL;
    CHECK_OK(rm_json_parse(last, strlen(last), "stdout", &j));
    REQUIRE(j);
    CHECK(rm_json_get_int(j, "steps", 0) == 4);
    CHECK(rm_json_get_num(j, "final_loss", 0) > 0 && rm_json_get_num(j, "initial_loss", 0) > 0);
    CHECK(rm_json_get_num(j, "eval_loss", -1) > 0 && rm_json_get_num(j, "eval_em", -1) >= 0);
    CHECK(rm_json_get_num(j, "tokens_per_s", 0) > 0);
    rm_json_free(j);
    char p[700];
    snprintf(p, sizeof p, "%s/loss.svg", out);
    CHECK(rm_file_exists(p));
    rm_lora *a = NULL, *g = NULL;
    CHECK_OK(rm_lora_load(&a, out));
    snprintf(p, sizeof p, "%s/adapter.gguf", out);
    CHECK_OK(rm_lora_load(&g, p));
    if (a && g) {
        CHECK_OK(rm_lora_bind(a, m));
        CHECK_OK(rm_lora_bind(g, m));
        CHECK(rm_lora_targets(a) == ((1u << RM_LIN_Q) | (1u << RM_LIN_V) | (1u << RM_LIN_DOWN)));
        CHECK(a->rank == 4 && rm_lora_max_rank(g) == 4);
    }
    rm_lora_free(a);
    rm_lora_free(g);
    rm_llama_free(m);
}

TEST(train_cli_train_from_scratch) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *tmp = rm_test_tmpdir();
    char cfg[512], text[512], out[512], args[2048], last[4096];
    snprintf(cfg, sizeof cfg, "%s/scratch.json", tmp);
    snprintf(text, sizeof text, "%s/scratch.txt", tmp);
    snprintf(out, sizeof out, "%s/scratch.gguf", tmp);
    FILE *f = fopen(cfg, "w");
    fputs("{\"n_embd\": 32, \"n_layer\": 2, \"n_head\": 4, \"n_head_kv\": 2, \"n_ff\": 64, \"seq\": 32, \"batch\": 4, "
          "\"steps\": 40, \"lr\": 1e-2, \"warmup\": 4}",
          f);
    fclose(f);
    f = fopen(text, "w");
    for (int i = 0; i < 40; i++) fputs(k_text, f);
    fclose(f);
    snprintf(args, sizeof args, "train --config %s --data %s --out %s --threads 1 --json", cfg, text, out);
    REQUIRE(run_cli(args, last, sizeof last) == 0);
    rm_json *j = NULL;
    CHECK_OK(rm_json_parse(last, strlen(last), "stdout", &j));
    REQUIRE(j);
    CHECK(rm_json_get_int(j, "steps", 0) == 40);
    double l0 = rm_json_get_num(j, "initial_loss", 0), l1 = rm_json_get_num(j, "final_loss", 99);
    CHECKF(l0 > 4.0 && l1 < 0.5 * l0, "loss %.3f -> %.3f", l0, l1);
    CHECK(rm_json_get_int(j, "params", 0) == 258 * 32 + 32 + 2 * (2 * 32 + 32 * 32 * 2 + 2 * 32 * 16 + 3 * 32 * 64));
    rm_json_free(j);
    rm_llama *m = NULL;
    CHECK_OK(rm_llama_load(&m, out)); // the trained model serves
    if (m) CHECK(m->hp.n_layer == 2 && m->hp.n_head_kv == 2 && m->tok_embd.type == RM_TYPE_F32);
    rm_llama_free(m);
}

// A curriculum with its own template: the first steps' prompts are made with
// it (counted by hand: [bos] "abc" = 4 tokens, "xy" [eos] = 3, two records),
// not with the main data's; a template that is not a string is refused.
TEST(train_cli_curriculum_template) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *tmp = rm_test_tmpdir();
    char cfg[512], text[512], cur[512], out[512], args[2048];
    snprintf(text, sizeof text, "%s/cur-main.txt", tmp);
    snprintf(cur, sizeof cur, "%s/cur.jsonl", tmp);
    snprintf(out, sizeof out, "%s/cur.gguf", tmp);
    FILE *f = fopen(text, "w");
    REQUIRE(f);
    for (int i = 0; i < 4; i++) fputs(k_text, f);
    fclose(f);
    f = fopen(cur, "w");
    REQUIRE(f);
    fputs("{\"inputs\": \"abc\", \"targets\": \"xy\"}\n{\"inputs\": \"abc\", \"targets\": \"xy\"}\n", f);
    fclose(f);
    const char *tmpls[2] = {"\"{inputs}\"", "5"};
    for (int k = 0; k < 2; k++) {
        snprintf(cfg, sizeof cfg, "%s/cur%d.json", tmp, k);
        f = fopen(cfg, "w");
        REQUIRE(f);
        fprintf(
            f,
            "{\"n_embd\": 16, \"n_layer\": 1, \"n_head\": 2, \"n_ff\": 32, \"seq\": 32, \"batch\": 2, \"steps\": 2, "
            "\"curriculum\": {\"data\": \"cur.jsonl\", \"steps\": 1, \"template\": %s}}",
            tmpls[k]);
        fclose(f);
        snprintf(args, sizeof args, "train --config %s --data %s --out %s --threads 1", cfg, text, out);
        if (k == 0) {
            CHECK(rm_test_cli(args) == 0);
            CHECKF(strstr(rm_test_cli_err(), "(2 examples, 8 prompt and 6 target tokens)"), "%s", rm_test_cli_err());
        } else {
            CHECK(rm_test_cli(args) == 2 && strstr(rm_test_cli_err(), "cur1.json") &&
                  strstr(rm_test_cli_err(), "\"template\""));
        }
    }
}

// ---------------------------------------------------------------- data

TEST(train_data_flan_alpaca_packing) {
    char *r = rm_template_render(rm_alpaca_template, "Say hi");
    REQUIRE(r);
    CHECK(strstr(r, "### Instruction:\nSay hi\n\n### Response:\n") != NULL);
    CHECK(!strncmp(r, "Below is an instruction that describes a task.", 46));
    free(r);
    r = rm_template_render("no placeholder: ", "x");
    CHECK(r && !strcmp(r, "no placeholder: x"));
    free(r);
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared (Flan data)");
    char path[512];
    snprintf(path, sizeof path, "%s/data/flan/combined_test.dev.json", shared);
    rm_tdata d = {0};
    CHECK_OK(rm_tdata_load_jsonl(&d, path, NULL, NULL, 256, 257, 1024)); // a JSON array, bytes as ids
    CHECK(d.n > 1100 && d.n <= 1200);
    if (d.n > 0) { // <s> Alpaca prompt ... target </s>, loss on the target and </s>
        const rm_texample *e = &d.ex[0];
        CHECK(e->ids[0] == 256 && e->ids[e->n - 1] == 257 && e->n_prompt > 100);
        CHECK(e->ids[1] == 'B' && e->ids[e->n_prompt] == 'A'); // "Below is ..." / "Abraham A. Ribicoff ..."
    }
    // packing: several short examples share a row, each attending only to itself
    rm_tdata s = {0};
    int32_t ids[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 5; i++) CHECK_OK(rm_tdata_add(&s, ids, 3 + i % 2, 1));
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 2, 8));
    int order[5] = {0, 1, 2, 3, 4}, cursor = 0, epoch = 0;
    int used = rm_tbatch_fill(&b, &s, order, &cursor, 1, NULL, &epoch);
    CHECK(used == 4 && cursor == 4); // 3+4 in row 0 (1 pad), 3+4 in row 1 (1 pad)
    CHECK(b.pos[3] == 0 && b.start[3] == 3 && b.start[6] == 3 && b.target[7] == -1 && b.start[7] == 7);
    CHECK(b.target[0] == 2 && b.target[1] == 3 && b.target[2] == -1); // example end: no target across it
    rm_tbatch_free(&b);
    rm_tdata_free(&s);
    rm_tdata_free(&d);
}
