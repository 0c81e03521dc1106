// test_gate.c — the baselines over a fixed adapter set (docs/baselines.md):
// MoE gates (soft, topk, top1), SMEAR and Arrow in the batched hook against
// plain double-precision references written here, Arrow's prototypes against
// a dense power iteration, exclusion, batch invariance (hook, model, engine),
// gate files, the trainer's gate gradients against finite differences, and
// `ramole gate train` + `ramole eval --compose moe|arrow` end to end.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"
#include "lora/batch.h"
#include "lora/router.h"
#include "model/synth.h"
#include "serve/engine.h"
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

enum { NA = 5 }; // adapters in the test sets

// ---------------------------------------------------------------- fixtures

// The small random llama `name` (byte vocabulary, 2 layers, n_ff 48) of width d.
static rm_llama *gate_model(const char *name, int V, int d, uint64_t seed) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", rm_test_tmpdir(), name);
    if (!rm_file_exists(path)) {
        rm_synth_shape shape = {name, V, d, 2, 4, 2, 48, 256};
        if (rm_synth_write(&shape, RM_TYPE_F32, seed, path, NULL, NULL)) return NULL;
    }
    rm_llama *m = NULL;
    return rm_llama_load(&m, path) ? NULL : m;
}

// n random adapters: ranks 2, 3, 4, 2, 3, ... (all 4 when equal), adapter 2
// only on q and v; B scaled by gain (bigger outputs).
static int random_adapters(rm_llama *m, int n, int equal, float gain, rm_lora **out) {
    unsigned all = (1u << RM_LIN_COUNT) - 1;
    for (int i = 0; i < n; i++) {
        if (rm_lora_random(&out[i], m, equal ? 4 : 2 + i % 3, i == 2 ? 0x5 : all, 40 + (uint64_t)i)) return -1;
        for (int j = 0; j < out[i]->n_layer * RM_LIN_COUNT; j++)
            for (int64_t v = 0; v < (int64_t)out[i]->mods[j].r * out[i]->mods[j].out; v++)
                out[i]->mods[j].Bt[v] *= gain;
    }
    return 0;
}

// A set (not owning) of the adapters ad[idx[0..n)], named "ad<i>", task "task<i>".
static rm_lora_set *set_of(rm_lora **ad, const int *idx, int n) {
    rm_lora *l[NA];
    char names[NA][16], tasks[NA][16];
    const char *np[NA], *tp[NA];
    for (int k = 0; k < n; k++) {
        l[k] = ad[idx[k]];
        snprintf(names[k], 16, "ad%d", idx[k]);
        snprintf(tasks[k], 16, "task%d", idx[k]);
        np[k] = names[k];
        tp[k] = tasks[k];
    }
    rm_lora_set *s = NULL;
    return rm_lora_set_new(&s, n, l, np, tp, 0) ? NULL : s;
}

static const int k_all[NA] = {0, 1, 2, 3, 4};

// The tiny model, NA random adapters (equal: all of rank 4) and their set.
typedef struct fx {
    rm_llama *m;
    rm_lora *ad[NA];
    rm_lora_set *set;
} fx;

static int fx_init(fx *f, int equal) {
    memset(f, 0, sizeof *f);
    f->m = gate_model("gate-tiny", 260, 32, 7);
    if (!f->m || random_adapters(f->m, NA, equal, 1.0f, f->ad)) return -1;
    f->set = set_of(f->ad, k_all, NA);
    return f->set ? 0 : -1;
}

static void fx_free(fx *f) {
    rm_lora_set_free(f->set);
    for (int i = 0; i < NA; i++) rm_lora_free(f->ad[i]);
    rm_llama_free(f->m);
}

// A gate of kind over s with uniform random W_g of magnitude gain.
static rm_gate *random_gate(const rm_lora_set *s, rm_gate_kind kind, int k, float gain, uint64_t seed) {
    rm_gate *g = NULL;
    if (rm_gate_new(&g, s, kind, k)) return NULL;
    for (int i = 0; i < g->n_layer * RM_LIN_COUNT; i++) {
        if (!g->w[i]) continue;
        int64_t in = s->base->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0];
        for (int64_t j = 0; j < in * g->n; j++) g->w[i][j] = gain * (2.0f * rm_rng_uniform(&seed) - 1.0f);
    }
    return g;
}

// The same gate over the set without adapter `drop` (W_g row removed).
static rm_gate *gate_without(const rm_gate *g, const rm_lora_set *smaller, int drop) {
    rm_gate *h = NULL;
    if (rm_gate_new(&h, smaller, g->kind, g->kind == RM_GATE_TOPK ? g->k : 1)) return NULL;
    for (int i = 0; i < g->n_layer * RM_LIN_COUNT; i++) {
        if (!g->w[i]) continue;
        int64_t in = g->base->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0];
        for (int a = 0, b = 0; a < g->n; a++)
            if (a != drop) memcpy(h->w[i] + (b++) * in, g->w[i] + a * in, (size_t)in * sizeof(float));
    }
    return h;
}

// ---------------------------------------------------------------- the reference, in double

// e[out] = s B (A x); zero without a module
static void ref_E(const rm_lora_mod *m, const float *x, int64_t out, double *e) {
    for (int64_t o = 0; o < out; o++) e[o] = 0;
    for (int j = 0; m && j < m->r; j++) {
        double h = 0;
        for (int64_t i = 0; i < m->in; i++) h += (double)m->A[j * m->in + i] * x[i];
        for (int64_t o = 0; o < out; o++) e[o] += m->scale * h * m->Bt[j * m->out + o];
    }
}

// alpha[n] by the definitions: softmax over the allowed adapters (soft,
// smear), over the k largest allowed logits (topk, ties: lower index), or
// the argmax weighted by its softmax probability (top1).
static void ref_route(rm_gate_kind kind, int k, int n, const double *z, const int *allowed, double *alpha) {
    int chosen[64] = {0}, nc = 0;
    if (kind == RM_GATE_TOPK || kind == RM_GATE_TOP1) {
        int want = kind == RM_GATE_TOP1 ? 1 : k;
        for (int c = 0; c < want; c++) {
            int best = -1;
            for (int i = 0; i < n; i++)
                if (allowed[i] && !chosen[i] && (best < 0 || z[i] > z[best])) best = i;
            if (best >= 0) chosen[best] = 1, nc++;
        }
    }
    double mx = -1e300, sum = 0;
    int over_chosen = kind == RM_GATE_TOPK;
    for (int i = 0; i < n; i++)
        if (allowed[i] && (!over_chosen || chosen[i])) mx = z[i] > mx ? z[i] : mx;
    for (int i = 0; i < n; i++)
        if (allowed[i] && (!over_chosen || chosen[i])) sum += exp(z[i] - mx);
    for (int i = 0; i < n; i++) {
        alpha[i] = allowed[i] && (!over_chosen || chosen[i]) ? exp(z[i] - mx) / sum : 0;
        if (kind == RM_GATE_TOP1 && !chosen[i]) alpha[i] = 0;
    }
    (void)nc;
}

// The composed term of plan p for one row on (layer, which), added to y[out]
// (double): x the row, xbar the mean of its sequence so far (smear).
static void ref_row(const rm_lora_plan *p, int layer, int which, const float *x, const double *xbar, int64_t in,
                    int64_t out, double *y) {
    const rm_lora_set *s = p->set;
    int n = s->n, allowed[64] = {0};
    double z[64] = {0}, alpha[64], E[64];
    const rm_lora_mod *mods[64];
    for (int i = 0; i < n; i++) {
        mods[i] = layer < s->lora[i]->n_layer && s->lora[i]->mods[layer * RM_LIN_COUNT + which].r
                      ? &s->lora[i]->mods[layer * RM_LIN_COUNT + which]
                      : NULL;
        allowed[i] = !(p->excluded && p->excluded[i]);
    }
    rm_gate_kind kind = p->mode == RM_COMPOSE_ARROW ? RM_GATE_TOPK : p->gate->kind;
    int k = p->mode == RM_COMPOSE_ARROW ? p->topk : p->gate->k;
    for (int i = 0; i < n; i++) {
        z[i] = 0;
        if (p->mode == RM_COMPOSE_ARROW) {
            const float *v = s->arrow[layer * RM_LIN_COUNT + which] + i * in;
            for (int64_t j = 0; j < in; j++) z[i] += (double)v[j] * x[j];
            z[i] = fabs(z[i]);
            allowed[i] &= mods[i] != NULL;
        } else {
            const float *w = p->gate->w[layer * RM_LIN_COUNT + which] + i * in;
            for (int64_t j = 0; j < in; j++) z[i] += (double)w[j] * (kind == RM_GATE_SMEAR ? xbar[j] : x[j]);
        }
    }
    ref_route(kind, k, n, z, allowed, alpha);
    if (kind != RM_GATE_SMEAR) {
        for (int i = 0; i < n; i++) {
            ref_E(mods[i], x, out, E);
            for (int64_t o = 0; o < out; o++) y[o] += alpha[i] * E[o];
        }
        return;
    }
    // smear: the merged parameters A_m = sum alpha_i A_i [r, in], B_m = sum alpha_i s_i B_i [out, r]
    int r = 0;
    for (int i = 0; i < n; i++) r = mods[i] ? mods[i]->r : r;
    double *Am = calloc((size_t)r * in, sizeof(double)), *Bm = calloc((size_t)out * r, sizeof(double));
    for (int i = 0; i < n; i++) {
        if (!mods[i]) continue;
        for (int64_t j = 0; j < r * in; j++) Am[j] += alpha[i] * mods[i]->A[j];
        for (int j = 0; j < r; j++)
            for (int64_t o = 0; o < out; o++) Bm[o * r + j] += alpha[i] * mods[i]->scale * mods[i]->Bt[j * out + o];
    }
    for (int j = 0; j < r; j++) {
        double h = 0;
        for (int64_t i = 0; i < in; i++) h += Am[j * in + i] * x[i];
        for (int64_t o = 0; o < out; o++) y[o] += Bm[o * r + j] * h;
    }
    free(Am);
    free(Bm);
}

// ---------------------------------------------------------------- the hook's rows

// Applies the hook once to rows x [n, in] with plans and positions; y [n, out] zeroed first.
static int hook_rows(rm_lora_batch *lb, int n, const void *const *plans, const int32_t *pos, int layer, int which,
                     const float *x, int64_t in, float *y, int64_t out) {
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    int32_t zero[64] = {0};
    rm_batch b = {n, zero, pos ? pos : zero, zero, NULL, plans};
    memset(y, 0, (size_t)n * out * sizeof(float));
    hook.apply(hook.ctx, &b, layer, (rm_linear_id)which, x, in, y, out);
    return rm_lora_batch_status(lb);
}

// Largest |a - b| over n values, relative to 1 + max |b|.
static double worst_diff(const float *a, const double *b, int64_t n) {
    double w = 0, scale = 1;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) w = fmax(w, fabs(a[i] - b[i]));
    return w / scale;
}

TEST(gate_hook_rows_match_reference) {
    fx f;
    REQUIRE(fx_init(&f, 0) == 0);
    rm_llama *m = f.m;
    rm_lora_set *s = f.set;
    rm_gate *g[3] = {random_gate(s, RM_GATE_SOFT, 0, 1.5f, 1), random_gate(s, RM_GATE_TOPK, 2, 1.5f, 2),
                     random_gate(s, RM_GATE_TOP1, 0, 1.5f, 3)};
    REQUIRE(g[0] && g[1] && g[2]);
    uint8_t ex[NA] = {0, 0, 0, 1, 0};
    rm_lora_plan p[5];
    for (int i = 0; i < 3; i++) CHECK_OK(rm_lora_plan_init_gate(&p[i], s, g[i], NULL));
    CHECK_OK(rm_lora_plan_init_arrow(&p[3], s, 2, NULL));
    CHECK_OK(rm_lora_plan_init_gate(&p[4], s, g[1], ex)); // topk with adapter 3 left out
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    enum { N = 6 };
    const void *plans[N] = {&p[0], &p[1], NULL, &p[2], &p[3], &p[4]};
    uint64_t seed = 5;
    int ids[3] = {RM_LIN_V, RM_LIN_UP, RM_LIN_DOWN}; // adapter 2 adapts v, not up or down
    double worst = 0;
    int spread = 0;
    for (int c = 0; c < 3; c++) {
        int layer = c % 2, which = ids[c];
        int64_t in = m->layers[layer].w[which].ne[0], out = m->layers[layer].w[which].ne[1];
        float *x = malloc(N * in * sizeof(float)), *y = malloc(N * out * sizeof(float));
        double *ref = malloc(out * sizeof(double));
        for (int64_t i = 0; i < N * in; i++) x[i] = 2.0f * rm_rng_uniform(&seed) - 1.0f;
        CHECK_OK(hook_rows(lb, N, plans, NULL, layer, which, x, in, y, out));
        for (int r = 0; r < N; r++) {
            for (int64_t o = 0; o < out; o++) ref[o] = 0;
            if (plans[r]) ref_row(plans[r], layer, which, x + r * in, NULL, in, out, ref);
            worst = fmax(worst, worst_diff(y + r * out, ref, out));
        }
        // the soft weights are far from uniform (else the test would not see the gate)
        double z[NA], a[NA];
        int allowed[NA] = {1, 1, 1, 1, 1};
        for (int i = 0; i < NA; i++) {
            z[i] = 0;
            for (int64_t j = 0; j < in; j++) z[i] += (double)g[0]->w[layer * RM_LIN_COUNT + which][i * in + j] * x[j];
        }
        ref_route(RM_GATE_SOFT, 0, NA, z, allowed, a);
        double lo = 1, hi = 0;
        for (int i = 0; i < NA; i++) lo = fmin(lo, a[i]), hi = fmax(hi, a[i]);
        spread += hi > 2 * lo;
        free(x);
        free(y);
        free(ref);
    }
    CHECKF(worst < 1e-5, "hook rows vs reference: %g", worst);
    CHECKF(spread == 3, "soft weights nearly uniform in %d of 3 linears", 3 - spread);
    rm_lora_batch_free(lb);
    for (int i = 0; i < 5; i++) rm_lora_plan_free(&p[i]);
    for (int i = 0; i < 3; i++) rm_gate_free(g[i]);
    fx_free(&f);
}

// SMEAR routes by the mean of the sequence's inputs so far: rows fed in one
// chunk, in chunks of 1, 2 and 4, one at a time, or interleaved with another
// sequence's rows give the same bits, and match the merged-parameter formula.
TEST(gate_smear_running_mean_any_chunking) {
    fx f, mixed;
    REQUIRE(fx_init(&f, 1) == 0 && fx_init(&mixed, 0) == 0);
    rm_llama *m = f.m;
    rm_lora_set *s = f.set;
    rm_gate *g = random_gate(s, RM_GATE_SMEAR, 0, 2.0f, 4);
    REQUIRE(g);
    // smear needs equal ranks: refused over the mixed-rank adapters
    rm_gate *bad = NULL;
    CHECK(rm_gate_new(&bad, mixed.set, RM_GATE_SMEAR, 0) == RM_EMISMATCH && strstr(rm_last_error(), "equal ranks"));
    enum { T = 7 };
    int layer = 1, which = RM_LIN_O;
    int64_t in = m->layers[layer].w[which].ne[0], out = m->layers[layer].w[which].ne[1];
    float x[2 * T * 64], y[2 * T * 64], one[T * 64], other[T * 64];
    uint64_t seed = 8;
    for (int64_t i = 0; i < 2 * T * in; i++) x[i] = 2.0f * rm_rng_uniform(&seed) - 1.0f;
    rm_lora_plan p, q;
    CHECK_OK(rm_lora_plan_init_gate(&p, s, g, NULL));
    CHECK_OK(rm_lora_plan_init_gate(&q, s, g, NULL));
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    const void *plans[2 * T];
    int32_t pos[2 * T];
    for (int i = 0; i < 2 * T; i++) plans[i] = &p, pos[i] = i;
    CHECK_OK(hook_rows(lb, T, plans, pos, layer, which, x, in, one, out)); // one chunk
    // the reference: the mean of rows 0..t, then the merged adapter
    double worst = 0, ref[64], mean[64];
    for (int t = 0; t < T; t++) {
        for (int64_t j = 0; j < in; j++) {
            mean[j] = 0;
            for (int u = 0; u <= t; u++) mean[j] += x[u * in + j];
            mean[j] /= t + 1;
        }
        for (int64_t o = 0; o < out; o++) ref[o] = 0;
        ref_row(&p, layer, which, x + t * in, mean, in, out, ref);
        worst = fmax(worst, worst_diff(one + t * out, ref, out));
    }
    CHECKF(worst < 1e-5, "smear rows vs the merged-parameter reference: %g", worst);
    // chunks of 1, 2, 4; then one row at a time
    int chunkings[2][T] = {{1, 2, 4}, {1, 1, 1, 1, 1, 1, 1}};
    for (int c = 0; c < 2; c++) {
        for (int t0 = 0, k = 0; t0 < T; t0 += chunkings[c][k++])
            CHECK_OK(
                hook_rows(lb, chunkings[c][k], plans + t0, pos + t0, layer, which, x + t0 * in, in, y + t0 * out, out));
        CHECKF(!memcmp(y, one, T * out * sizeof(float)), "chunking %d differs from one chunk", c);
    }
    // interleaved with a second sequence (plan q, other rows): each as alone
    CHECK_OK(hook_rows(lb, T, plans, pos, layer, which, x + T * in, in, other, out)); // q's rows alone (through p)
    float xi[2 * T * 64];
    int32_t posi[2 * T];
    const void *pli[2 * T];
    for (int t = 0; t < T; t++) {
        memcpy(xi + (2 * t) * in, x + t * in, in * sizeof(float));
        memcpy(xi + (2 * t + 1) * in, x + (T + t) * in, in * sizeof(float));
        posi[2 * t] = posi[2 * t + 1] = t;
        pli[2 * t] = &p;
        pli[2 * t + 1] = &q;
    }
    CHECK_OK(hook_rows(lb, 2 * T, pli, posi, layer, which, xi, in, y, out));
    int same = 1;
    for (int t = 0; t < T; t++)
        same &= !memcmp(y + 2 * t * out, one + t * out, out * sizeof(float)) &&
                !memcmp(y + (2 * t + 1) * out, other + t * out, out * sizeof(float));
    CHECK(same);
    // one plan for two sequences in one batch is refused (their positions clash)
    const void *twice[2] = {&p, &p};
    int32_t p01[2] = {0, 0};
    CHECK(hook_rows(lb, 2, twice, p01, layer, which, x, in, y, out) == RM_EMISMATCH &&
          strstr(rm_last_error(), "out of order"));
    rm_lora_batch_free(lb);
    rm_lora_plan_free(&p);
    rm_lora_plan_free(&q);
    rm_gate_free(g);
    fx_free(&f);
    fx_free(&mixed);
}

// Arrow's prototype of a module is its leading right singular vector: unit
// length, and ||dW v|| is the largest singular value of the dense dW = s B A
// found here by power iteration on dW^T dW (double).
TEST(gate_arrow_prototypes_are_top_singular_vectors) {
    fx f;
    REQUIRE(fx_init(&f, 0) == 0);
    rm_lora **ad = f.ad;
    // a rank-deficient module too: adapter 4's layer 0 q has two equal rows of A
    rm_lora_mod *dep = &ad[4]->mods[RM_LIN_Q];
    REQUIRE(dep->r >= 2);
    memcpy(dep->A + dep->in, dep->A, dep->in * sizeof(float));
    rm_lora_set *s = set_of(ad, k_all, NA); // prototypes computed again, with that module
    REQUIRE(s);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < NA; i++)
        for (int mi = 0; mi < s->n_layer * RM_LIN_COUNT; mi++) {
            const rm_lora_mod *md = &ad[i]->mods[mi];
            if (!md->r) continue;
            int64_t in = md->in, out = md->out;
            double *dW = calloc(out * in, sizeof(double)), *u = malloc(in * sizeof(double)),
                   *t = malloc(out * sizeof(double));
            for (int64_t o = 0; o < out; o++)
                for (int64_t c = 0; c < in; c++)
                    for (int j = 0; j < md->r; j++)
                        dW[o * in + c] += md->scale * md->Bt[j * out + o] * md->A[j * in + c];
            for (int64_t c = 0; c < in; c++) u[c] = 1.0 + 0.01 * c;
            double sigma = 0;
            for (int it = 0; it < 3000; it++) { // u <- dW^T dW u / |.|
                for (int64_t o = 0; o < out; o++) {
                    t[o] = 0;
                    for (int64_t c = 0; c < in; c++) t[o] += dW[o * in + c] * u[c];
                }
                double nu = 0;
                for (int64_t c = 0; c < in; c++) {
                    u[c] = 0;
                    for (int64_t o = 0; o < out; o++) u[c] += dW[o * in + c] * t[o];
                    nu += u[c] * u[c];
                }
                nu = sqrt(nu);
                for (int64_t c = 0; c < in; c++) u[c] /= nu;
                sigma = sqrt(nu);
            }
            const float *v = s->arrow[mi] + i * in;
            double nv = 0, nd = 0;
            for (int64_t c = 0; c < in; c++) nv += (double)v[c] * v[c];
            for (int64_t o = 0; o < out; o++) {
                double a = 0;
                for (int64_t c = 0; c < in; c++) a += dW[o * in + c] * v[c];
                nd += a * a;
            }
            worst = fmax(worst, fabs(sqrt(nd) - sigma) / sigma);
            worst = fmax(worst, fabs(sqrt(nv) - 1));
            float w[64];
            double sg;
            CHECK_OK(rm_lora_mod_top_singular(md, w, &sg));
            worst = fmax(worst, fabs(sg - sigma) / sigma);
            checked++;
            free(dW);
            free(u);
            free(t);
        }
    CHECK(checked == 4 * 2 * 7 + 2 * 2);
    CHECKF(worst < 1e-5, "prototype vs dense power iteration: relative error %g", worst);
    // a zero module has no direction
    rm_lora_mod z = *dep;
    float *zb = calloc(z.r * z.out, sizeof(float)), w[64];
    z.Bt = zb;
    double sg = 1;
    CHECK_OK(rm_lora_mod_top_singular(&z, w, &sg));
    CHECK(sg == 0 && w[0] == 0 && w[7] == 0);
    free(zb);
    rm_lora_set_free(s);
    fx_free(&f);
}

// An excluded adapter never contributes: a plan over the set with adapter j
// left out gives the bits of the same plan over the set without j (the gate
// without j's row), for every routing; its routing weight is exactly 0.
TEST(gate_exclusion_equals_set_without) {
    fx f, e;
    REQUIRE(fx_init(&f, 0) == 0 && fx_init(&e, 1) == 0);
    rm_llama *m = f.m;
    const int drop = 1, rest[NA - 1] = {0, 2, 3, 4};
    rm_lora_set *full = f.set, *less = set_of(f.ad, rest, NA - 1), *efull = e.set, *eless = set_of(e.ad, rest, NA - 1);
    REQUIRE(less && eless);
    CHECK(rm_lora_set_find_task(full, "task1") == drop && rm_lora_set_find_task(full, "ad3") == 3 &&
          rm_lora_set_find_task(full, "nope") == -1);
    uint8_t ex[NA] = {0};
    ex[drop] = 1;
    rm_gate_kind kinds[4] = {RM_GATE_SOFT, RM_GATE_TOPK, RM_GATE_TOP1, RM_GATE_SMEAR};
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    enum { N = 5 };
    uint64_t seed = 21;
    for (int c = 0; c < 5; c++) { // four gate kinds, then arrow
        int smear = c == 3;
        const rm_lora_set *a = smear ? efull : full, *b = smear ? eless : less;
        rm_gate *ga = c < 4 ? random_gate(a, kinds[c], 2, 1.5f, 30 + c) : NULL,
                *gb = ga ? gate_without(ga, b, drop) : NULL;
        rm_lora_plan pa, pb;
        if (c < 4) {
            REQUIRE(ga && gb);
            CHECK_OK(rm_lora_plan_init_gate(&pa, a, ga, ex));
            CHECK_OK(rm_lora_plan_init_gate(&pb, b, gb, NULL));
        } else {
            CHECK_OK(rm_lora_plan_init_arrow(&pa, a, 2, ex));
            CHECK_OK(rm_lora_plan_init_arrow(&pb, b, 2, NULL));
        }
        int layer = 0, which = RM_LIN_V;
        int64_t in = m->layers[layer].w[which].ne[0], out = m->layers[layer].w[which].ne[1];
        float x[N * 64], ya[N * 64], yb[N * 64];
        for (int64_t i = 0; i < N * in; i++) x[i] = 2.0f * rm_rng_uniform(&seed) - 1.0f;
        const void *pla[N], *plb[N];
        int32_t pos[N];
        for (int r = 0; r < N; r++) pla[r] = &pa, plb[r] = &pb, pos[r] = r; // one sequence (smear)
        CHECK_OK(hook_rows(lb, N, pla, pos, layer, which, x, in, ya, out));
        CHECK_OK(hook_rows(lb, N, plb, pos, layer, which, x, in, yb, out));
        CHECKF(!memcmp(ya, yb, N * out * sizeof(float)),
               "composition %d: excluding adapter %d differs from the set without it", c, drop);
        if (ga) { // the routing weight of an excluded adapter is 0, whatever its logit
            float z[NA] = {0, 50, 0, 0, 0}, al[NA], pr[NA];
            CHECK(rm_gate_route(ga->kind, ga->k, NA, z, ex, al, pr) >= 1 && al[drop] == 0.0f);
        }
        rm_lora_plan_free(&pa);
        rm_lora_plan_free(&pb);
        rm_gate_free(ga);
        rm_gate_free(gb);
    }
    // every adapter excluded: refused
    uint8_t all[NA] = {1, 1, 1, 1, 1};
    rm_lora_plan p;
    CHECK(rm_lora_plan_init_arrow(&p, full, 2, all) == RM_EINVAL && strstr(rm_last_error(), "every adapter"));
    // a gate used with a set it was not trained over
    rm_gate *g = random_gate(full, RM_GATE_SOFT, 0, 1, 1);
    CHECK(rm_lora_plan_init_gate(&p, less, g, NULL) == RM_EMISMATCH &&
          strstr(rm_last_error(), "trained over 5 adapters"));
    rm_gate_free(g);
    rm_lora_batch_free(lb);
    rm_lora_set_free(less);
    rm_lora_set_free(eless);
    fx_free(&f);
    fx_free(&e);
}

// ---------------------------------------------------------------- batch invariance

enum { SEQ = 6 };

// Logits [n][SEQ, V] of n sequences (sequence k's tokens drawn from seeds[k])
// with plans[k], all in one forward pass.
static int forward_seqs(rm_llama *m, rm_threadpool *tp, rm_lora_batch *lb, int n, const int *seeds,
                        const rm_lora_plan *const *plans, float *logits) {
    rm_kvcache kv;
    int rc = rm_kvcache_init(&kv, m->hp.n_layer, n, SEQ, m->hp.n_head_kv * m->hp.head_dim);
    if (rc) return rc;
    int32_t tok[16 * SEQ], pos[16 * SEQ], slot[16 * SEQ];
    const void *pl[16 * SEQ];
    for (int r = 0; r < n * SEQ; r++) {
        uint64_t s = (uint64_t)seeds[r / SEQ] * 1000 + (uint64_t)(r % SEQ);
        tok[r] = (int32_t)(rm_rng_next(&s) % 256);
        pos[r] = r % SEQ;
        slot[r] = r / SEQ;
        pl[r] = plans[r / SEQ];
    }
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    rm_batch b = {n * SEQ, tok, pos, slot, NULL, pl};
    rc = rm_llama_forward(m, &kv, tp, &b, &hook, logits);
    rm_kvcache_free(&kv);
    return rc ? rc : rm_lora_batch_status(lb);
}

// Every row's logits are the same bits alone and in a batch of other plans
// (gates, SMEAR, Arrow next to mixture, selection and base rows), with two threads.
TEST(gate_batch_invariance) {
    fx f, e;
    REQUIRE(fx_init(&f, 0) == 0 && fx_init(&e, 1) == 0);
    rm_llama *m = f.m;
    rm_gate *g[4] = {random_gate(f.set, RM_GATE_SOFT, 0, 2, 11), random_gate(f.set, RM_GATE_TOPK, 2, 2, 12),
                     random_gate(f.set, RM_GATE_TOP1, 0, 2, 13), random_gate(e.set, RM_GATE_SMEAR, 0, 2, 14)};
    REQUIRE(g[0] && g[1] && g[2] && g[3]);
    uint8_t ex[NA] = {1, 0, 0, 0, 0};
    enum { NP = 9 };
    rm_lora_plan p[NP - 1];
    CHECK_OK(rm_lora_plan_init_gate(&p[0], f.set, g[0], NULL));
    CHECK_OK(rm_lora_plan_init_gate(&p[1], f.set, g[1], ex));
    CHECK_OK(rm_lora_plan_init_gate(&p[2], f.set, g[2], NULL));
    CHECK_OK(rm_lora_plan_init_gate(&p[3], e.set, g[3], NULL));
    CHECK_OK(rm_lora_plan_init_gate(&p[4], e.set, g[3], ex)); // a second smear sequence
    CHECK_OK(rm_lora_plan_init_arrow(&p[5], f.set, 2, ex));
    CHECK_OK(rm_lora_plan_init(&p[6], RM_COMPOSE_MIXTURE, 3, f.ad, NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&p[7], RM_COMPOSE_SELECTION, 1, &f.ad[2], NULL, NULL));
    const rm_lora_plan *plans[NP] = {&p[0], &p[6], &p[3], &p[1], NULL, &p[5], &p[2], &p[7], &p[4]};
    int seeds[NP] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    size_t per = SEQ * (size_t)m->hp.n_vocab;
    float *all = malloc(NP * per * sizeof(float)), *one = malloc(per * sizeof(float));
    rm_threadpool *tp = rm_threadpool_create(2);
    rm_lora_batch *lb = rm_lora_batch_new(tp);
    CHECK_OK(forward_seqs(m, tp, lb, NP, seeds, plans, all));
    for (int k = 0; k < NP; k++) {
        CHECK_OK(forward_seqs(m, NULL, lb, 1, &seeds[k], &plans[k], one));
        CHECKF(!memcmp(one, all + k * per, per * sizeof(float)), "sequence %d alone vs in the batch differs", k);
    }
    // other mates in another order
    const rm_lora_plan *rev[4] = {&p[5], &p[3], &p[7], &p[0]};
    int rs[4] = {5, 2, 7, 0};
    CHECK_OK(forward_seqs(m, tp, lb, 4, rs, rev, all));
    for (int k = 0; k < 4; k++) {
        CHECK_OK(forward_seqs(m, tp, lb, 1, &rs[k], &rev[k], one));
        CHECKF(!memcmp(one, all + k * per, per * sizeof(float)), "reversed batch, sequence %d", rs[k]);
    }
    // and the compositions matter: the soft gate is not the base model
    const rm_lora_plan *none[1] = {NULL};
    CHECK_OK(forward_seqs(m, NULL, lb, 1, &seeds[0], none, one));
    CHECK_OK(forward_seqs(m, NULL, lb, 1, &seeds[0], plans, all));
    CHECK(memcmp(one, all, per * sizeof(float)) != 0);
    free(all);
    free(one);
    rm_lora_batch_free(lb);
    rm_threadpool_free(tp);
    for (int i = 0; i < NP - 1; i++) rm_lora_plan_free(&p[i]);
    for (int i = 0; i < 4; i++) rm_gate_free(g[i]);
    fx_free(&f);
    fx_free(&e);
}

typedef struct {
    int calls, n;
    int32_t tok[16];
} done_rec;
static void on_done(void *user, const int32_t *t, int n, const char *reason) {
    done_rec *r = user;
    r->calls++;
    r->n = t ? n : -1;
    for (int i = 0; t && i < n && i < 16; i++) r->tok[i] = t[i];
}

// Submits request k (0 smear, 1 arrow, 2 soft gate, 3 mixture) of 9 prompt
// tokens and 6 new ones, with a fresh plan as a server makes one per request.
static int submit_kind(rm_engine *eng, int k, const fx *f, const fx *e, rm_gate *const *g, const int32_t *prompt,
                       done_rec *rec) {
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0;
    rm_engine_cbs cb = {on_done, NULL, rec};
    if (k == 3) return rm_engine_submit(eng, prompt, 9, 6, &sp, (rm_lora *const *)f->ad, 2, RM_COMPOSE_MIXTURE, &cb);
    rm_lora_plan p;
    int rc = k == 1 ? rm_lora_plan_init_arrow(&p, f->set, 3, NULL)
                    : rm_lora_plan_init_gate(&p, k == 0 ? e->set : f->set, g[k == 0 ? 1 : 0], NULL);
    return rc ? rc : rm_engine_submit_plan(eng, prompt, 9, 6, &sp, &p, &cb);
}

// In the serving engine, with prompts cut into chunks by a small row budget
// and several requests in flight, set requests give the tokens they give alone.
TEST(gate_engine_requests) {
    fx f, e;
    REQUIRE(fx_init(&f, 0) == 0 && fx_init(&e, 1) == 0);
    rm_gate *g[2] = {random_gate(f.set, RM_GATE_SOFT, 0, 2, 21), random_gate(e.set, RM_GATE_SMEAR, 0, 2, 22)};
    REQUIRE(g[0] && g[1]);
    int32_t prompt[16];
    for (int i = 0; i < 16; i++) prompt[i] = 5 + 9 * i;
    done_rec together[4] = {{0}}, alone[4] = {{0}};
    rm_engine *eng = NULL;
    REQUIRE(rm_engine_new(&eng, f.m, NULL, 4, 32, 5) == RM_OK); // 5 rows a step: prompts of 9 go in pieces
    for (int k = 0; k < 4; k++) CHECK_OK(submit_kind(eng, k, &f, &e, g, prompt + k, &together[k]));
    while (rm_engine_step(eng) > 0) {}
    rm_engine_free(eng);
    for (int k = 0; k < 4; k++) {
        REQUIRE(rm_engine_new(&eng, f.m, NULL, 1, 32, 64) == RM_OK);
        CHECK_OK(submit_kind(eng, k, &f, &e, g, prompt + k, &alone[k]));
        while (rm_engine_step(eng) > 0) {}
        rm_engine_free(eng);
        CHECKF(alone[k].n == 6 && together[k].n == 6 && !memcmp(alone[k].tok, together[k].tok, 6 * sizeof(int32_t)),
               "request %d: alone %d tokens, together %d", k, alone[k].n, together[k].n);
    }
    // a refused request frees the plan it was given (the sanitizers would see a leak)
    REQUIRE(rm_engine_new(&eng, f.m, NULL, 1, 8, 8) == RM_OK);
    CHECK(submit_kind(eng, 0, &f, &e, g, prompt, &alone[0]) == RM_EFULL);
    rm_engine_free(eng);
    rm_gate_free(g[0]);
    rm_gate_free(g[1]);
    fx_free(&f);
    fx_free(&e);
}

// ---------------------------------------------------------------- gate files

// Writes a copy of the GGUF file src to dst with key `key` set to the u32 v
// (key NULL: none changed), its tensors taken from tsrc when not NULL.
static int copy_with_u32(const char *src, const char *dst, const char *key, uint32_t v, const char *tsrc) {
    gguf_file g, t;
    int rc = gguf_open(&g, src);
    if (rc) return rc;
    if ((rc = gguf_open(&t, tsrc ? tsrc : src))) {
        gguf_close(&g);
        return rc;
    }
    gguf_writer *w = gguf_writer_new();
    char name[256];
    for (uint64_t i = 0; !rc && i < g.n_kv; i++) {
        gguf_str_copy(g.kv[i].key, name, sizeof name);
        rc = key && !strcmp(name, key) ? gguf_set_u32(w, name, v) : gguf_set_value(w, name, &g.kv[i].val);
    }
    for (uint64_t i = 0; !rc && i < t.n_tensors; i++) {
        const gguf_tensor_info *ti = &t.tensors[i];
        gguf_str_copy(ti->name, name, sizeof name);
        rc = gguf_add_tensor(w, name, (rm_type)ti->type, ti->n_dims, ti->ne, ti->data);
    }
    if (!rc) rc = gguf_write(w, dst);
    gguf_writer_free(w);
    gguf_close(&g);
    gguf_close(&t);
    return rc;
}

TEST(gate_file_roundtrip_and_refusals) {
    fx f;
    REQUIRE(fx_init(&f, 0) == 0);
    rm_gate *g = random_gate(f.set, RM_GATE_TOPK, 3, 1, 31);
    REQUIRE(g);
    const char *tmp = rm_test_tmpdir();
    char path[512], bad[600];
    snprintf(path, sizeof path, "%s/gate.gguf", tmp);
    CHECK_OK(rm_gate_save(g, path));
    rm_gate *back = NULL;
    CHECK_OK(rm_gate_load(&back, path, f.m));
    REQUIRE(back);
    int same = back->kind == RM_GATE_TOPK && back->k == 3 && back->n == NA;
    for (int i = 0; same && i < NA; i++) same = !strcmp(back->names[i], f.set->name[i]);
    for (int i = 0; same && i < g->n_layer * RM_LIN_COUNT; i++) {
        int64_t in = f.m->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0];
        same = !g->w[i] == !back->w[i] && (!g->w[i] || !memcmp(g->w[i], back->w[i], in * NA * sizeof(float)));
    }
    CHECK(same);
    CHECK_OK(rm_gate_check_set(back, f.set));
    rm_gate_free(back);
    // missing, truncated at several points
    snprintf(bad, sizeof bad, "%s/no-such-gate.gguf", tmp);
    CHECK(rm_gate_load(&back, bad, f.m) != RM_OK && strstr(rm_last_error(), "no-such-gate.gguf"));
    char *data;
    size_t n;
    REQUIRE(rm_read_file(path, &data, &n) == RM_OK);
    size_t cuts[4] = {3, 40, n / 2, n - 1};
    snprintf(bad, sizeof bad, "%s/gate-cut.gguf", tmp);
    for (int c = 0; c < 4; c++) {
        REQUIRE(rm_write_file_atomic(bad, data, cuts[c]) == RM_OK);
        CHECKF(rm_gate_load(&back, bad, f.m) != RM_OK && !back && strstr(rm_last_error(), "gate-cut.gguf"),
               "cut at %zu: %s", cuts[c], rm_last_error());
    }
    free(data);
    // an adapter is no gate, nor is a router; a gate is neither
    snprintf(bad, sizeof bad, "%s/gate-adapter.gguf", tmp);
    CHECK_OK(rm_lora_save_gguf(f.ad[0], bad));
    CHECK(rm_gate_load(&back, bad, f.m) == RM_EFORMAT && strstr(rm_last_error(), "not a ramole gate"));
    rm_lora *l = NULL;
    CHECK(rm_lora_load(&l, path) == RM_EFORMAT && strstr(rm_last_error(), "not an adapter"));
    CHECK(rm_router_load(&l, path, f.m) == RM_EFORMAT && strstr(rm_last_error(), "not a ramole router"));
    // the adapter count disagrees with the names listed, or with the tensors
    snprintf(bad, sizeof bad, "%s/gate-count.gguf", tmp);
    CHECK_OK(copy_with_u32(path, bad, "ramole.gate.n_adapters", NA + 1, NULL));
    CHECK(rm_gate_load(&back, bad, f.m) == RM_EFORMAT && strstr(rm_last_error(), "adapter count mismatch") &&
          strstr(rm_last_error(), "gate-count.gguf"));
    rm_lora_set *four = set_of(f.ad, k_all, NA - 1); // five names over the tensors of a gate of four
    rm_gate *g4 = four ? random_gate(four, RM_GATE_SOFT, 0, 1, 3) : NULL;
    REQUIRE(g4);
    char four_path[600];
    snprintf(four_path, sizeof four_path, "%s/gate-four.gguf", tmp);
    CHECK_OK(rm_gate_save(g4, four_path));
    CHECK_OK(copy_with_u32(path, bad, NULL, 0, four_path));
    CHECK(rm_gate_load(&back, bad, f.m) == RM_EFORMAT &&
          strstr(rm_last_error(), "adapter count or base shape mismatch"));
    rm_gate_free(g4);
    rm_lora_set_free(four);
    // another version
    snprintf(bad, sizeof bad, "%s/gate-version.gguf", tmp);
    CHECK_OK(copy_with_u32(path, bad, "ramole.gate.version", 2, NULL));
    CHECK(rm_gate_load(&back, bad, f.m) == RM_EUNSUPPORTED && strstr(rm_last_error(), "version 2"));
    // another base of the same shape, and of another shape
    rm_llama *other = gate_model("gate-other", 260, 32, 8), *wide = gate_model("gate-wide", 260, 48, 7);
    REQUIRE(other && wide);
    CHECK(rm_gate_load(&back, path, other) == RM_EMISMATCH && strstr(rm_last_error(), "another base model"));
    CHECK(rm_gate_load(&back, path, wide) == RM_EMISMATCH && strstr(rm_last_error(), "n_embd 32; this base has 48"));
    rm_llama_free(other);
    rm_llama_free(wide);
    rm_gate_free(g);
    fx_free(&f);
}

// A new (zero) soft gate routes uniformly: the mixture of all the set's adapters with weights 1/n.
TEST(gate_zero_soft_gate_is_mixture) {
    fx f;
    REQUIRE(fx_init(&f, 0) == 0);
    rm_gate *g = NULL;
    CHECK_OK(rm_gate_new(&g, f.set, RM_GATE_SOFT, 0));
    rm_lora_plan p[2];
    CHECK_OK(rm_lora_plan_init_gate(&p[0], f.set, g, NULL));
    CHECK_OK(rm_lora_plan_init(&p[1], RM_COMPOSE_MIXTURE, NA, f.ad, NULL, NULL));
    size_t per = SEQ * (size_t)f.m->hp.n_vocab;
    float *a = malloc(per * sizeof(float)), *b = malloc(per * sizeof(float));
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    int seed = 3;
    const rm_lora_plan *pa[1] = {&p[0]}, *pb[1] = {&p[1]};
    CHECK_OK(forward_seqs(f.m, NULL, lb, 1, &seed, pa, a));
    CHECK_OK(forward_seqs(f.m, NULL, lb, 1, &seed, pb, b));
    double d = 0;
    for (size_t i = 0; i < per; i++) d = fmax(d, fabs(a[i] - b[i]));
    CHECKF(d < 1e-5, "zero soft gate vs mixture: %g", d);
    free(a);
    free(b);
    rm_lora_batch_free(lb);
    rm_lora_plan_free(&p[0]);
    rm_lora_plan_free(&p[1]);
    rm_gate_free(g);
    fx_free(&f);
}

// ---------------------------------------------------------------- training

// Central differences of the model loss against the analytic gradient for
// three entries of every trainable tensor (tests/test_train.c).
void train_model_grad_check(rm_trainer *t, const rm_tbatch *b, int *n_checked);
// The same, passing over entries where the loss has a kink (top-k choices change).
void train_model_grad_check_kinks(rm_trainer *t, const rm_tbatch *b, int *n_checked, int *n_kinks);

// Randomises the trainable tensors from index `from` on (the gates start at 0).
static void randomize_from(rm_trainer *t, int from, float gain, uint64_t seed) {
    int np;
    rm_tparam *ps = rm_trainer_params(t, &np);
    for (int i = from; i < np; i++)
        for (size_t j = 0; j < ps[i].n; j++) ps[i].w[j] = gain * (2.0f * rm_rng_uniform(&seed) - 1.0f);
}

// Two sequences of 6 tokens; with pack, the second holds two examples (rows 6-7, 8-11).
static void small_batch(rm_tbatch *b, int V, int pack, uint64_t seed) {
    for (int r = 0; r < 12; r++) {
        b->token[r] = (int32_t)(rm_rng_next(&seed) % (uint64_t)V);
        b->start[r] = pack && r >= 8 ? 8 : r - r % 6;
        b->pos[r] = r - b->start[r];
        b->target[r] = r % 6 == 5 || (pack && r == 7) ? -1 : 0;
    }
    for (int r = 0; r < 12; r++)
        if (b->target[r] == 0) b->target[r] = b->token[r + 1];
}

// The trainer's logits for an unpacked batch equal those of the serving hook
// with the exported gate (one plan per sequence): the same composition.
static double trainer_vs_hook(rm_trainer *t, rm_llama *m, const rm_lora_set *set, const rm_tbatch *b) {
    int V = m->hp.n_vocab;
    float *lt = malloc(12 * (size_t)V * sizeof(float)), *ls = malloc(12 * (size_t)V * sizeof(float));
    double loss, worst = -1;
    rm_gate *g = NULL;
    rm_lora_plan p[2];
    if (rm_trainer_forward(t, b, 1.0f, 0, &loss, lt) || rm_trainer_export_gate(t, &g) ||
        rm_lora_plan_init_gate(&p[0], set, g, NULL) || rm_lora_plan_init_gate(&p[1], set, g, NULL))
        goto done;
    rm_kvcache kv;
    if (rm_kvcache_init(&kv, m->hp.n_layer, 2, 6, m->hp.n_head_kv * m->hp.head_dim)) goto done;
    int32_t slot[12];
    const void *pl[12];
    for (int r = 0; r < 12; r++) slot[r] = r / 6, pl[r] = &p[r / 6];
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    rm_batch bb = {12, b->token, b->pos, slot, NULL, pl};
    if (!rm_llama_forward(m, &kv, NULL, &bb, &hook, ls) && !rm_lora_batch_status(lb)) {
        worst = 0;
        for (size_t i = 0; i < 12 * (size_t)V; i++) worst = fmax(worst, fabs(lt[i] - ls[i]));
    }
    rm_lora_batch_free(lb);
    rm_kvcache_free(&kv);
    rm_lora_plan_free(&p[0]);
    rm_lora_plan_free(&p[1]);
done:
    rm_gate_free(g);
    free(lt);
    free(ls);
    return worst;
}

// The gates' and SMEAR's gradients (dW_g, and with the base trainable too every
// earlier weight, whose gradients flow through the gated linears' dx: through
// W, the experts, the gate and SMEAR's running mean) against central differences,
// on packed batches; and the trainer's forward against the serving hook.
TEST(gate_train_grads_match_finite_differences) {
    rm_llama *m = gate_model("gate-grad", 40, 16, 5);
    REQUIRE(m);
    rm_gate_kind kinds[4] = {RM_GATE_SOFT, RM_GATE_TOPK, RM_GATE_TOP1, RM_GATE_SMEAR};
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = 2;
    p.seq = 6;
    p.threads = 1;
    rm_tbatch b, plain;
    CHECK_OK(rm_tbatch_alloc(&b, 2, 6));
    CHECK_OK(rm_tbatch_alloc(&plain, 2, 6));
    small_batch(&b, 40, 1, 4);
    small_batch(&plain, 40, 0, 5);
    for (int c = 0; c < 4; c++) {
        rm_lora *ad[NA] = {0};
        REQUIRE(random_adapters(m, NA, kinds[c] == RM_GATE_SMEAR, 8.0f, ad) ==
                0); // big outputs: dx through them matters
        rm_lora_set *set = set_of(ad, k_all, NA);
        REQUIRE(set);
        for (int full = 0; full < 2; full++) {
            rm_trainer *t = NULL;
            CHECK_OK(rm_trainer_create(&t, m, &p));
            REQUIRE(t);
            int n_base = 0, np_before = 0;
            if (full) {
                CHECK_OK(rm_trainer_full(t));
                rm_trainer_params(t, &n_base);
            }
            if (kinds[c] == RM_GATE_TOPK) { // SMEAR over adapters of unequal ranks: refused, the trainer unchanged
                CHECK(rm_trainer_add_gate(t, set, RM_GATE_SMEAR, 0) == RM_EMISMATCH);
                rm_trainer_params(t, &np_before);
                CHECK(np_before == n_base);
            }
            CHECK_OK(rm_trainer_add_gate(t, set, kinds[c], 2));
            int np;
            rm_trainer_params(t, &np);
            CHECK(np - n_base == 2 * 7);
            int n = 0, kinks = 0, smooth = kinds[c] == RM_GATE_SOFT || kinds[c] == RM_GATE_SMEAR;
            randomize_from(t, n_base, smooth ? 1.0f : 3.0f, 9 + (uint64_t)c); // top-k: wide gaps, few kinks
            if (smooth) train_model_grad_check(t, &b, &n);
            else train_model_grad_check_kinks(t, &b, &n, &kinks);
            CHECKF(n + kinks == 3 * np && kinks <= np / 4, "%s: %d of %d checked, %d at kinks",
                   rm_gate_kind_name(kinds[c]), n, 3 * np, kinks);
            if (!full) {
                double d = trainer_vs_hook(t, m, set, &plain);
                CHECKF(d >= 0 && d < 1e-4, "%s: trainer vs serving hook logits differ by %g",
                       rm_gate_kind_name(kinds[c]), d);
            }
            rm_trainer_free(t);
        }
        rm_lora_set_free(set);
        for (int i = 0; i < NA; i++) rm_lora_free(ad[i]);
    }
    rm_tbatch_free(&b);
    rm_tbatch_free(&plain);
    rm_llama_free(m);
}

// Trains a gate of kind over f's set: `steps` steps on three recurring batches,
// from a checkpoint when resume; saves one before step save_at. Returns the
// loss on the first batch at the end; w (n floats) gets every trained weight.
static double gate_run(const fx *f, rm_gate_kind kind, int steps, int save_at, const char *ckpt, int resume, float *w,
                       size_t n) {
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = 2, p.seq = 6, p.steps = steps, p.warmup = 2, p.lr = 3e-2f, p.threads = 2;
    rm_trainer *t = NULL;
    rm_tbatch b;
    double loss = -1;
    if (rm_tbatch_alloc(&b, 2, 6)) return -1;
    if (!rm_trainer_create(&t, f->m, &p) && !rm_trainer_add_gate(t, f->set, kind, 2)) {
        int s0 = resume && !rm_trainer_load_checkpoint(t, ckpt) ? rm_trainer_step_count(t) : 0;
        for (int s = s0; s < steps; s++) {
            if (s == save_at) CHECK_OK(rm_trainer_save_checkpoint(t, ckpt));
            small_batch(&b, (int)f->m->hp.n_vocab, s % 3 == 1, 100 + (uint64_t)(s % 3));
            CHECK_OK(rm_trainer_step(t, &b, 1, &loss, NULL));
        }
        small_batch(&b, (int)f->m->hp.n_vocab, 0, 100);
        CHECK_OK(rm_trainer_forward(t, &b, (float)rm_tbatch_count(&b), 0, &loss, NULL));
        int np;
        rm_tparam *ps = rm_trainer_params(t, &np);
        for (int i = 0, k = 0; i < np; k += (int)ps[i].n, i++)
            if ((size_t)k + ps[i].n <= n) memcpy(w + k, ps[i].w, ps[i].n * sizeof(float));
        CHECK(rm_trainer_n_trainable(t) == n);
    }
    rm_trainer_free(t);
    rm_tbatch_free(&b);
    return loss;
}

// The gates learn (the loss on three recurring batches falls), and a run
// resumed from a checkpoint ends with the same bits as the run straight through.
TEST(gate_train_learns_and_resumes) {
    fx f;
    REQUIRE(fx_init(&f, 1) == 0);
    char ckpt[600];
    snprintf(ckpt, sizeof ckpt, "%s/gate.train.gguf", rm_test_tmpdir());
    size_t n = 0;
    for (int i = 0; i < f.m->hp.n_layer * RM_LIN_COUNT; i++) // a gate wherever the set adapts a linear
        n += f.set->arrow[i] ? (size_t)NA * f.m->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0] : 0;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    rm_gate_kind kinds[2] = {RM_GATE_SOFT, RM_GATE_SMEAR};
    for (int c = 0; c < 2; c++) {
        double first = gate_run(&f, kinds[c], 0, -1, ckpt, 0, a, n),
               last = gate_run(&f, kinds[c], 30, 14, ckpt, 0, a, n);
        CHECKF(last < first - 0.05, "%s: loss %.4f at the start, %.4f after 30 steps", rm_gate_kind_name(kinds[c]),
               first, last);
        gate_run(&f, kinds[c], 30, -1, ckpt, 1, b, n);
        CHECKF(!memcmp(a, b, n * sizeof(float)), "%s: resumed run differs", rm_gate_kind_name(kinds[c]));
    }
    free(a);
    free(b);
    fx_free(&f);
}

// ---------------------------------------------------------------- the CLI, end to end

// Runs `ramole ARGS` with stdout to tmpdir/gate-cli.out and stderr to
// tmpdir/gate-cli.err; returns the exit status (WEXITSTATUS).
static int cli(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >%s/gate-cli.out 2>%s/gate-cli.err", rm_test_bin(), args, rm_test_tmpdir(),
             rm_test_tmpdir());
    int st = system(cmd);
    return st == -1 ? -1 : (st >> 8) & 0xff;
}

// The text of tmpdir/gate-cli.<what> (static buffer).
static const char *cli_text(const char *what) {
    static char buf[8192];
    char path[512];
    snprintf(path, sizeof path, "%s/gate-cli.%s", rm_test_tmpdir(), what);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

static const char *k_tasks[3] = {"upper", "reverse", "double"};

// tmpdir/name: n words of each task as {"inputs", "targets", "task"} lines.
static const char *task_data(const char *name, int n, uint64_t seed) {
    static char path[2][512];
    static int next;
    char *p = path[next++ % 2];
    snprintf(p, 512, "%s/%s", rm_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    for (int i = 0; f && i < n; i++) {
        char w[6] = {0}, t[12] = {0};
        for (int j = 0; j < 5; j++) w[j] = (char)('a' + rm_rng_next(&seed) % 8);
        for (int k = 0; k < 3; k++) {
            for (int j = 0; j < 5; j++) t[j] = k == 0 ? (char)(w[j] - 32) : k == 1 ? w[4 - j] : w[j];
            if (k == 2) memcpy(t + 5, w, 6);
            else t[5] = 0;
            fprintf(f, "{\"inputs\": \"%s:%s\", \"targets\": \"%s\", \"task\": \"%s\"}\n", k_tasks[k], w, t,
                    k_tasks[k]);
        }
    }
    if (f) fclose(f);
    return p;
}

// A pool of three random adapters (one per task) for the model at model_path.
static int make_pool(const char *model_path, const char *dir) {
    rm_llama *m = NULL;
    int rc = rm_llama_load(&m, model_path);
    char path[600], args[2048], corpus[600];
    snprintf(corpus, sizeof corpus, "%s/gate-corpus.jsonl", rm_test_tmpdir());
    FILE *f = fopen(corpus, "w");
    for (int k = 0; f && k < 3; k++)
        fprintf(f, "{\"inputs\": \"%s:abcde\"}\n{\"inputs\": \"%s:hgfed\"}\n", k_tasks[k], k_tasks[k]);
    if (f) fclose(f);
    snprintf(args, sizeof args, "pool init --pool %s --corpus %s", dir, corpus);
    if (!rc && cli(args)) rc = -1;
    for (int k = 0; !rc && k < 3; k++) {
        rm_lora *l = NULL;
        snprintf(path, sizeof path, "%s/gate-ad-%s.gguf", rm_test_tmpdir(), k_tasks[k]);
        if (!(rc = rm_lora_random(&l, m, 4, 0x5, 70 + (uint64_t)k))) rc = rm_lora_save_gguf(l, path);
        rm_lora_free(l);
        snprintf(args, sizeof args, "pool add --pool %s --name ad-%s --task %s --samples %s --weights %s", dir,
                 k_tasks[k], k_tasks[k], corpus, path);
        if (!rc && cli(args)) rc = -1;
    }
    rm_llama_free(m);
    return rc;
}

// The mean score of an `eval --json` summary on stdout, or -1.
static double eval_mean(int *requests) {
    rm_json *j = NULL;
    const char *out = cli_text("out");
    if (rm_json_parse(out, strlen(out), "eval --json", &j)) return -1;
    double mean = rm_json_get_num(j, "mean", -1);
    *requests = (int)rm_json_get_int(j, "requests", 0);
    rm_json_free(j);
    return mean;
}

// `ramole gate train` a few steps, then `ramole eval --compose moe` with the
// gate (own adapters excluded) and `--compose arrow`; the runs must succeed
// with finite scores; and the CLI's refusals.
TEST(gate_cli_train_and_eval) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    int san = rm_test_sanitized();
    const char *tmp = rm_test_tmpdir();
    char model[512], pool[512], gate[512], args[4096];
    snprintf(model, sizeof model, "%s/gate-cli-base.gguf", tmp);
    snprintf(pool, sizeof pool, "%s/gate-pool", tmp);
    snprintf(gate, sizeof gate, "%s/gate-soft.gguf", tmp);
    rm_synth_shape shape = *rm_synth_find("tiny");
    if (san) shape.n_layer = 2;
    REQUIRE(rm_synth_write(&shape, RM_TYPE_F32, 3, model, NULL, NULL) == RM_OK);
    REQUIRE(make_pool(model, pool) == 0);
    const char *data = task_data("gate-train.jsonl", san ? 20 : 60, 1), *test = task_data("gate-test.jsonl", 3, 2);
    char tmpl[600];
    snprintf(tmpl, sizeof tmpl, "%s/gate-template.txt", tmp);
    REQUIRE(rm_write_file_atomic(tmpl, "{inputs}=", 9) == RM_OK);
    snprintf(args, sizeof args,
             "gate train --base %s --pool %s --adapters-of-tasks upper,reverse,double --data %s "
             "--train-tasks upper,reverse --kind soft --out %s --steps %d --batch 2 --seq 32 --template %s "
             "--eval-em %d --threads 2",
             model, pool, data, gate, san ? 2 : 12, tmpl, san ? 0 : 4);
    int st = cli(args);
    CHECKF(st == 0, "gate train: %d: %s", st, cli_text("err"));
    if (st) return;
    CHECKF(strstr(cli_text("err"), "soft gate over 3 adapters") && strstr(cli_text("err"), "wrote"), "%s",
           cli_text("err"));
    snprintf(args, sizeof args, "gate info %s --base %s", gate, model);
    CHECK(cli(args) == 0 && strstr(cli_text("out"), "ad-upper,ad-reverse,ad-double") &&
          strstr(cli_text("out"), "fits base"));
    // the set from a file of names, in its order; SMEAR
    char names[600], smear[600];
    snprintf(names, sizeof names, "%s/gate-names.txt", tmp);
    snprintf(smear, sizeof smear, "%s/gate-smear.gguf", tmp);
    REQUIRE(rm_write_file_atomic(names, "ad-double\n ad-upper \n", 21) == RM_OK);
    snprintf(args, sizeof args,
             "gate train --base %s --pool %s --adapters @%s --data %s --kind smear --out %s --steps 1 "
             "--batch 2 --seq 32 --template %s --eval-em 0",
             model, pool, names, data, smear, tmpl);
    CHECK(cli(args) == 0);
    snprintf(args, sizeof args, "gate info %s", smear);
    CHECK(cli(args) == 0 && strstr(cli_text("out"), "ad-double,ad-upper\n") && strstr(cli_text("out"), "smear"));
    int n = 0;
    double mean;
    snprintf(args, sizeof args,
             "eval -m %s --test %s --template '{inputs}=' -n 4 -t 2 --json --compose moe --gate %s --pool %s "
             "--exclude-own",
             model, test, gate, pool);
    CHECK(cli(args) == 0);
    mean = eval_mean(&n);
    CHECKF(n == 9 && mean >= 0 && mean <= 100, "moe: %d requests, mean %g: %s", n, mean, cli_text("err"));
    CHECKF(strstr(cli_text("err"), "left out of the set for 9 of 9 requests"), "%s", cli_text("err"));
    snprintf(args, sizeof args,
             "eval -m %s --test %s --template '{inputs}=' -n 4 -t 2 --json --compose arrow --pool %s "
             "--arrow-k 2 --exclude-own --limit 1",
             model, test, pool);
    CHECK(cli(args) == 0);
    mean = eval_mean(&n);
    CHECKF(n == 3 && mean >= 0 && mean <= 100, "arrow: %d requests, mean %g: %s", n, mean, cli_text("err"));

    // refusals: moe without a gate, a gate without moe; a gate whose adapter left the pool; a
    // gate of another base; an adapter given as the gate; unknown adapters, kinds and tasks
    snprintf(args, sizeof args, "eval -m %s --test %s --compose moe --pool %s -n 2", model, test, pool);
    CHECK(cli(args) == 2 && strstr(cli_text("err"), "--gate FILE"));
    snprintf(args, sizeof args, "eval -m %s --test %s --gate %s --pool %s --retrieve 1 -n 2", model, test, gate, pool);
    CHECK(cli(args) == 2);
    snprintf(args, sizeof args, "eval -m %s --test %s --pool %s --oracle --exclude-own -n 2", model, test, pool);
    CHECK(cli(args) == 2);
    char pool2[600];
    snprintf(pool2, sizeof pool2, "%s/gate-pool-less", tmp);
    snprintf(args, sizeof args, "cp -r %s %s", pool, pool2);
    REQUIRE(system(args) == 0);
    snprintf(args, sizeof args, "pool remove --pool %s --name ad-reverse", pool2);
    REQUIRE(cli(args) == 0);
    snprintf(args, sizeof args, "eval -m %s --test %s --compose moe --gate %s --pool %s -n 2", model, test, gate,
             pool2);
    CHECK(cli(args) == 1 && strstr(cli_text("err"), "no adapter called 'ad-reverse'") &&
          strstr(cli_text("err"), "gate-soft.gguf"));
    rm_llama *other = gate_model("gate-tiny", 260, 32, 7);
    REQUIRE(other);
    snprintf(args, sizeof args, "eval -m %s --test %s --compose moe --gate %s --pool %s -n 2", other->path, test, gate,
             pool);
    CHECK(cli(args) == 1 && strstr(cli_text("err"), "gate-soft.gguf") && strstr(cli_text("err"), "this base has"));
    rm_llama_free(other);
    snprintf(args, sizeof args, "eval -m %s --test %s --compose moe --gate %s/gate-ad-upper.gguf --pool %s -n 2", model,
             test, tmp, pool);
    CHECK(cli(args) == 1 && strstr(cli_text("err"), "not a ramole gate"));
    snprintf(args, sizeof args,
             "gate train --base %s --pool %s --adapters ad-upper,nope --data %s --kind soft --out %s/x.gguf", model,
             pool, data, tmp);
    CHECK(cli(args) == 1 && strstr(cli_text("err"), "'nope'"));
    snprintf(args, sizeof args,
             "gate train --base %s --pool %s --adapters ad-upper --data %s --kind hard --out %s/x.gguf", model, pool,
             data, tmp);
    CHECK(cli(args) == 2 && strstr(cli_text("err"), "unknown gate kind 'hard'"));
    snprintf(args, sizeof args,
             "gate train --base %s --pool %s --adapters ad-upper --data %s --kind soft --train-tasks poetry "
             "--out %s/x.gguf",
             model, pool, data, tmp);
    CHECK(cli(args) == 1 && strstr(cli_text("err"), "no usable examples"));
    snprintf(args, sizeof args, "gate info %s/gate-ad-upper.gguf", tmp);
    CHECK(cli(args) == 1 && strstr(cli_text("err"), "not a ramole gate"));
}
