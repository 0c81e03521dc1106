// test_router.c — RouterLoRA: the batched hook's router rows against a plain
// double-precision reference written here, router = mixture at B_r = 0, batch
// invariance, router files (round trip and every refusal), the trainer's
// router gradients against finite differences, and the toy experiment
// (router beats mixture on mixed requests). Training as in the paper: rows
// with their own expert sets (against each example alone with its fixed set,
// and finite differences), lora dropout, each example's own retrieved
// adapters from a pool, and `router train --pool` (refusals, a smoke run).
#include "testing.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "lora/batch.h"
#include "lora/batch_impl.h"
#include "lora/router.h"
#include "model/generate.h"
#include "model/synth.h"
#include "retrieve/embed.h"
#include "retrieve/pick.h"
#include "serve/engine.h"
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

#define SEQ_LEN 6

// A small random llama of the given shape in the test's tmpdir (byte vocabulary).
static rm_llama *shaped_model(const char *name, int V, int d, int L, int f, uint64_t seed) {
    rm_synth_shape s = {name, V, d, L, 4, 2, f, 256};
    char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", rm_test_tmpdir(), name);
    rm_llama *m = NULL;
    if (!rm_file_exists(path) && rm_synth_write(&s, RM_TYPE_F32, seed, path, NULL, NULL)) return NULL;
    if (rm_llama_load(&m, path)) return NULL;
    return m;
}

static rm_llama *tiny(void) { return shaped_model("router-tiny", 260, 32, 2, 48, 7); }

// k random experts on all linears (ranks 3 and 5 alternating) and a random
// router of rank 4 whose B is scaled by router_gain (0: the init, B_r = 0).
static int random_set(rm_llama *m, int k, float router_gain, rm_lora **ex, rm_lora **router) {
    unsigned all = (1u << RM_LIN_COUNT) - 1;
    for (int i = 0; i < k; i++)
        if (rm_lora_random(&ex[i], m, i % 2 ? 5 : 3, i == 2 ? 0x5 : all, 100 + (uint64_t)i)) return -1;
    if (rm_lora_random(router, m, 4, all, 7)) return -1;
    rm_lora *r = *router;
    for (int i = 0; i < r->n_layer * RM_LIN_COUNT; i++)
        for (int64_t j = 0; j < (int64_t)r->mods[i].r * r->mods[i].out; j++) r->mods[i].Bt[j] *= router_gain;
    return 0;
}

static void free_set(int k, rm_lora **ex, rm_lora *router) {
    for (int i = 0; i < k; i++) rm_lora_free(ex[i]);
    rm_lora_free(router);
}

// e[out] = s B (A x) in double
static void ref_lora(const rm_lora_mod *m, const float *x, double *e) {
    for (int64_t o = 0; o < m->out; o++) e[o] = 0;
    for (int j = 0; j < m->r; j++) {
        double h = 0;
        for (int64_t i = 0; i < m->in; i++) h += (double)m->A[j * m->in + i] * x[i];
        for (int64_t o = 0; o < m->out; o++) e[o] += m->scale * h * m->Bt[j * m->out + o];
    }
}

// The RouterLoRA formula for one row, straight from its definition.
static void ref_router(const rm_lora_plan *p, int layer, int which, const float *x, int64_t out, double *y) {
    double E[RM_PLAN_MAX][64], q[64] = {0}, z[RM_PLAN_MAX], mx = -1e300, sum = 0;
    for (int i = 0; i < p->n; i++) {
        const rm_lora_mod *m = &p->lora[i]->mods[layer * RM_LIN_COUNT + which];
        if (m->r) ref_lora(m, x, E[i]);
        else
            for (int64_t o = 0; o < out; o++) E[i][o] = 0;
    }
    const rm_lora_mod *rm_ = &p->router->mods[layer * RM_LIN_COUNT + which];
    if (rm_->r) ref_lora(rm_, x, q);
    for (int i = 0; i < p->n; i++) {
        z[i] = 0;
        for (int64_t o = 0; o < out; o++) z[i] += q[o] * E[i][o];
        z[i] /= sqrt((double)out);
        mx = z[i] > mx ? z[i] : mx;
    }
    for (int i = 0; i < p->n; i++) sum += exp(z[i] - mx);
    for (int i = 0; i < p->n; i++)
        for (int64_t o = 0; o < out; o++) y[o] += exp(z[i] - mx) / sum * E[i][o];
}

TEST(router_hook_matches_reference) {
    rm_llama *m = tiny();
    REQUIRE(m);
    enum { K = 3, N = 5 };
    rm_lora *ex[K] = {0}, *router = NULL;
    REQUIRE(random_set(m, K, 2000.0f, ex, &router) == 0);
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init_router(&p, K, ex, router));
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    uint64_t s = 3;
    double worst = 0, spread = 0;
    int ids[2] = {RM_LIN_V, RM_LIN_UP}; // v: expert 2 has it; up: expert 2 has none (E_2 = 0)
    for (int c = 0; c < 2; c++) {
        int which = ids[c], layer = 1;
        const rm_tensor *W = &m->layers[layer].w[which];
        int64_t in = W->ne[0], out = W->ne[1];
        REQUIRE(out <= 64);
        float *x = malloc(N * in * sizeof(float)), *y = calloc(N * out, sizeof(float));
        for (int64_t i = 0; i < N * in; i++) x[i] = 2.0f * rm_rng_uniform(&s) - 1.0f;
        const void *plans[N] = {&p, NULL, &p, &p, NULL};
        int32_t zero[N] = {0};
        rm_batch b = {N, zero, zero, zero, NULL, plans};
        hook.apply(hook.ctx, &b, layer, which, x, in, y, out);
        CHECK_OK(rm_lora_batch_status(lb));
        // the hook groups the router rows' experts by adapter; each row's
        // result is bit for bit the row computed alone
        float *scratch = malloc(rm_lora_router_scratch(K, 64) * sizeof(float)), alone[64];
        REQUIRE(scratch);
        for (int r = 0; r < N; r++) {
            if (!plans[r]) continue;
            memset(alone, 0, sizeof alone);
            rm_lora_router_row(rm_lora_kernel_family(), &p, layer, which, x + r * in, alone, scratch, NULL);
            CHECKF(memcmp(alone, y + r * out, (size_t)out * sizeof(float)) == 0, "row %d: grouped differs from alone",
                   r);
        }
        free(scratch);
        for (int r = 0; r < N; r++) {
            double ref[64] = {0};
            if (plans[r]) ref_router(&p, layer, which, x + r * in, out, ref);
            for (int64_t o = 0; o < out; o++)
                worst = fmax(worst, fabs(y[r * out + o] - ref[o]) / (1e-3 + fabs(ref[o])));
        }
        // the weights are far from uniform (the test would not see the softmax otherwise)
        double E[K][64], q[64];
        for (int i = 0; i < 2; i++) ref_lora(&ex[i]->mods[layer * RM_LIN_COUNT + which], x, E[i]);
        ref_lora(&router->mods[layer * RM_LIN_COUNT + which], x, q);
        double z0 = 0, z1 = 0;
        for (int64_t o = 0; o < out; o++) z0 += q[o] * E[0][o], z1 += q[o] * E[1][o];
        spread = fmax(spread, fabs(z0 - z1) / sqrt((double)out));
        free(x);
        free(y);
    }
    CHECKF(worst < 1e-4, "router row vs reference: relative error %g", worst);
    CHECKF(spread > 0.5, "router scores too close to tell (%g)", spread);
    rm_lora_batch_free(lb);
    rm_lora_plan_free(&p);
    free_set(K, ex, router);
    rm_llama_free(m);
}

// A router row none of whose experts has the linear is left as it is (bit
// for bit: -0 stays -0), beside a row whose experts do have it.
TEST(router_row_without_the_linear_untouched) {
    rm_llama *m = tiny();
    REQUIRE(m);
    enum { K = 3 };
    rm_lora *ex[K] = {0}, *router = NULL;
    REQUIRE(random_set(m, K, 2000.0f, ex, &router) == 0);
    rm_lora_plan none, all;
    CHECK_OK(rm_lora_plan_init_router(&none, 1, &ex[2], router)); // expert 2 has no ffn up
    CHECK_OK(rm_lora_plan_init_router(&all, K, ex, router));
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    const int layer = 1, which = RM_LIN_UP;
    const rm_tensor *W = &m->layers[layer].w[which];
    int64_t in = W->ne[0], out = W->ne[1];
    float *x = malloc(2 * in * sizeof(float)), *y = malloc(2 * out * sizeof(float));
    REQUIRE(x && y);
    for (int64_t i = 0; i < 2 * in; i++) x[i] = (float)(i % 7) * 0.25f - 0.75f;
    for (int64_t o = 0; o < 2 * out; o++) y[o] = -0.0f;
    const void *plans[2] = {&none, &all};
    int32_t zero[2] = {0};
    rm_batch b = {2, zero, zero, zero, NULL, plans};
    hook.apply(hook.ctx, &b, layer, which, x, in, y, out);
    CHECK_OK(rm_lora_batch_status(lb));
    int untouched = 1, changed = 0;
    for (int64_t o = 0; o < out; o++) untouched &= y[o] == 0.0f && signbit(y[o]);
    for (int64_t o = 0; o < out; o++) changed |= y[out + o] != 0.0f;
    CHECK(untouched);
    CHECK(changed);
    free(x);
    free(y);
    rm_lora_batch_free(lb);
    rm_lora_plan_free(&none);
    rm_lora_plan_free(&all);
    free_set(K, ex, router);
    rm_llama_free(m);
}

// Logits of one sequence (SEQ_LEN tokens) per plan, all in one batch.
static int run_rows(rm_llama *m, rm_threadpool *tp, const rm_linear_hook *hook, int n, const int *seqs,
                    const rm_lora_plan *const *plans, float *logits) {
    rm_kvcache kv;
    int rc = rm_kvcache_init(&kv, m->hp.n_layer, n, SEQ_LEN, m->hp.n_head_kv * m->hp.head_dim);
    if (rc) return rc;
    int rows = n * SEQ_LEN;
    int32_t tok[64], pos[64], slot[64];
    const void *pl[64];
    for (int k = 0; k < n; k++)
        for (int i = 0; i < SEQ_LEN; i++) {
            int r = k * SEQ_LEN + i;
            tok[r] = (int32_t)((seqs[k] * 37 + i * 11 + 5) % 256);
            pos[r] = i;
            slot[r] = k;
            pl[r] = plans[k];
        }
    rm_batch b = {rows, tok, pos, slot, NULL, pl};
    rc = rm_llama_forward(m, &kv, tp, &b, hook, logits);
    rm_kvcache_free(&kv);
    return rc;
}

TEST(router_init_equals_mixture) {
    rm_llama *m = tiny();
    REQUIRE(m);
    enum { K = 3 };
    rm_lora *ex[K] = {0}, *router = NULL;
    REQUIRE(random_set(m, K, 0.0f, ex, &router) == 0); // B_r = 0: q = 0, alpha = 1/k
    rm_lora_plan pr, pm;
    CHECK_OK(rm_lora_plan_init_router(&pr, K, ex, router));
    CHECK_OK(rm_lora_plan_init(&pm, RM_COMPOSE_MIXTURE, K, ex, NULL, NULL));
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    size_t n = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *c = malloc(n * sizeof(float));
    int seq = 4;
    const rm_lora_plan *one[1] = {&pr}, *two[1] = {&pm}, *none[1] = {NULL};
    CHECK_OK(run_rows(m, NULL, &hook, 1, &seq, one, a));
    CHECK_OK(run_rows(m, NULL, &hook, 1, &seq, two, b));
    CHECK_OK(run_rows(m, NULL, &hook, 1, &seq, none, c));
    CHECK_OK(rm_lora_batch_status(lb));
    double d = 0, moved = 0;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i])), moved = fmax(moved, fabs(b[i] - c[i]));
    CHECKF(d < 1e-5, "router at init vs mixture: %g", d);
    CHECKF(moved > 1e-3, "the mixture changed nothing (%g)", moved);
    // router plans refuse a missing router, a router of another base, and plain plan_init
    rm_lora_plan bad;
    CHECK(rm_lora_plan_init(&bad, RM_COMPOSE_ROUTER, K, ex, NULL, NULL) == RM_EINVAL &&
          strstr(rm_last_error(), "--router"));
    CHECK(rm_lora_plan_init_router(&bad, K, ex, NULL) == RM_EMISMATCH);
    rm_compose_mode cm;
    CHECK(rm_compose_parse("router", &cm) == RM_OK && cm == RM_COMPOSE_ROUTER &&
          !strcmp(rm_compose_name(cm), "router"));
    free(a);
    free(b);
    free(c);
    rm_lora_batch_free(lb);
    rm_lora_plan_free(&pr);
    rm_lora_plan_free(&pm);
    free_set(K, ex, router);
    rm_llama_free(m);
}

TEST(router_batch_invariance) {
    rm_llama *m = tiny();
    REQUIRE(m);
    enum { K = 3, NS = 5 };
    rm_lora *ex[K] = {0}, *router = NULL;
    REQUIRE(random_set(m, K, 2000.0f, ex, &router) == 0);
    rm_lora_plan p[4];
    rm_lora *two[2] = {ex[1], ex[0]};
    CHECK_OK(rm_lora_plan_init_router(&p[0], K, ex, router));
    CHECK_OK(rm_lora_plan_init_router(&p[1], 2, two, router));
    CHECK_OK(rm_lora_plan_init(&p[2], RM_COMPOSE_MIXTURE, K, ex, NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&p[3], RM_COMPOSE_SELECTION, 1, &ex[2], NULL, NULL));
    const rm_lora_plan *plans[NS] = {&p[0], &p[2], &p[1], NULL, &p[3]};
    int seqs[NS] = {0, 1, 2, 3, 4};
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *all = malloc(NS * per * sizeof(float)), *one = malloc(per * sizeof(float));
    rm_threadpool *tp = rm_threadpool_create(2);
    rm_lora_batch *lb = rm_lora_batch_new(tp);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    CHECK_OK(run_rows(m, tp, &hook, NS, seqs, plans, all));
    for (int k = 0; k < NS; k++) {
        CHECK_OK(run_rows(m, NULL, &hook, 1, &seqs[k], &plans[k], one));
        CHECKF(memcmp(one, all + k * per, per * sizeof(float)) == 0, "sequence %d alone vs in the batch differs", k);
    }
    // other mates, other order: the router rows are still bit for bit the same
    const rm_lora_plan *rev[3] = {&p[1], &p[3], &p[0]};
    int rs[3] = {2, 4, 0};
    CHECK_OK(run_rows(m, tp, &hook, 3, rs, rev, all));
    for (int k = 0; k < 3; k++) {
        CHECK_OK(run_rows(m, tp, &hook, 1, &rs[k], &rev[k], one));
        CHECKF(memcmp(one, all + k * per, per * sizeof(float)) == 0, "reversed batch, sequence %d", rs[k]);
    }
    CHECK_OK(rm_lora_batch_status(lb));
    // the router changes the answer (it is not the mixture)
    const rm_lora_plan *mix[1] = {&p[2]};
    CHECK_OK(run_rows(m, NULL, &hook, 1, &seqs[0], mix, one));
    CHECK(memcmp(one, all + 2 * per, per * sizeof(float)) != 0);
    free(all);
    free(one);
    rm_lora_batch_free(lb);
    rm_threadpool_free(tp);
    for (int i = 0; i < 4; i++) rm_lora_plan_free(&p[i]);
    free_set(K, ex, router);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- router files

// The hook keeps B_r^T B_i per (router, expert, linear): one product for
// each pair that both have a module on a linear, none made twice; under a
// small budget it drops old ones and remakes them, with the same logits bit
// for bit; a new router (another uid) gets its own.
TEST(router_products_kept_and_evicted) {
    rm_llama *m = tiny();
    REQUIRE(m);
    enum { K = 3 };
    rm_lora *ex[K] = {0}, *router = NULL, *router2 = NULL;
    REQUIRE(random_set(m, K, 2000.0f, ex, &router) == 0);
    REQUIRE(rm_lora_random(&router2, m, 4, (1u << RM_LIN_COUNT) - 1, 8) == 0);
    rm_lora *two[2] = {ex[2], ex[0]};
    rm_lora_plan p[3];
    CHECK_OK(rm_lora_plan_init_router(&p[0], K, ex, router));
    CHECK_OK(rm_lora_plan_init_router(&p[1], 2, two, router));
    CHECK_OK(rm_lora_plan_init_router(&p[2], 2, two, router2));
    // the pairs (router, expert, linear) the products are for, counted here
    int pairs = 0, pairs2 = 0;
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            int i = l * RM_LIN_COUNT + w;
            for (int e = 0; e < K; e++) pairs += ex[e]->mods[i].r && router->mods[i].r;
            for (int e = 0; e < 2; e++) pairs2 += two[e]->mods[i].r && router2->mods[i].r;
        }
    const rm_lora_plan *plans[3] = {&p[0], &p[1], &p[2]};
    int seqs[3] = {0, 1, 2};
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *a = malloc(3 * per * sizeof(float)), *b = malloc(3 * per * sizeof(float)), *c = malloc(3 * per * sizeof(float));
    REQUIRE(a && b && c);
    rm_lora_batch *big = rm_lora_batch_new(NULL), *small = rm_lora_batch_new(NULL);
    REQUIRE(big && small);
    small->gram_budget = 100; // a few products (one call needs up to 68 floats): old ones go as new ones come
    rm_linear_hook hb = rm_lora_batch_hook(big), hs = rm_lora_batch_hook(small);
    CHECK_OK(run_rows(m, NULL, &hb, 2, seqs, plans, a));
    CHECKF(big->gram_n == (size_t)pairs, "%zu products kept for %d pairs", big->gram_n, pairs);
    CHECK_OK(run_rows(m, NULL, &hb, 3, seqs, plans, b)); // again, now with router2's as well
    CHECKF(big->gram_n == (size_t)(pairs + pairs2), "%zu products kept for %d pairs", big->gram_n, pairs + pairs2);
    CHECK(memcmp(a, b, 2 * per * sizeof(float)) == 0);
    CHECK_OK(run_rows(m, NULL, &hs, 3, seqs, plans, c));
    CHECK_OK(rm_lora_batch_status(big));
    CHECK_OK(rm_lora_batch_status(small));
    CHECK(memcmp(b, c, 3 * per * sizeof(float)) == 0);
    CHECKF(small->gram_floats <= small->gram_budget && small->gram_n < big->gram_n,
           "small budget: %zu products, %zu floats", small->gram_n, small->gram_floats);
    // the two routers' rows differ (their products are not mixed up)
    CHECK(memcmp(c + per, c + 2 * per, per * sizeof(float)) != 0);
    free(a);
    free(b);
    free(c);
    rm_lora_batch_free(big);
    rm_lora_batch_free(small);
    for (int i = 0; i < 3; i++) rm_lora_plan_free(&p[i]);
    rm_lora_free(router2);
    free_set(K, ex, router);
    rm_llama_free(m);
}

TEST(router_file_roundtrip_and_refusals) {
    rm_llama *m = tiny();
    REQUIRE(m);
    rm_lora *ex[2] = {0}, *router = NULL;
    REQUIRE(random_set(m, 2, 10.0f, ex, &router) == 0);
    char path[512], bad[600], lora_path[600];
    snprintf(path, sizeof path, "%s/router.gguf", rm_test_tmpdir());
    CHECK_OK(rm_router_save(router, m, 2, path));
    rm_lora *back = NULL;
    CHECK_OK(rm_router_load(&back, path, m));
    REQUIRE(back);
    int same = back->n_layer == router->n_layer;
    for (int i = 0; same && i < router->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *a = &router->mods[i], *b = &back->mods[i];
        same = a->r == b->r && a->scale == b->scale && !memcmp(a->A, b->A, (size_t)a->r * a->in * sizeof(float)) &&
               !memcmp(a->Bt, b->Bt, (size_t)a->r * a->out * sizeof(float));
    }
    CHECK(same);
    rm_lora_free(back);

    // missing file
    snprintf(bad, sizeof bad, "%s/no-such-router.gguf", rm_test_tmpdir());
    CHECK(rm_router_load(&back, bad, m) != RM_OK && strstr(rm_last_error(), "no-such-router.gguf"));
    // truncated at several points
    char *data;
    size_t n;
    REQUIRE(rm_read_file(path, &data, &n) == RM_OK);
    size_t cuts[4] = {3, 20, n / 2, n - 1};
    snprintf(bad, sizeof bad, "%s/router-cut.gguf", rm_test_tmpdir());
    for (int c = 0; c < 4; c++) {
        REQUIRE(rm_write_file_atomic(bad, data, cuts[c]) == RM_OK);
        CHECKF(rm_router_load(&back, bad, m) != RM_OK && back == NULL && strstr(rm_last_error(), "router-cut.gguf"),
               "cut at %zu: %s", cuts[c], rm_last_error());
    }
    free(data);
    // an adapter is no router, and a router is no adapter
    snprintf(lora_path, sizeof lora_path, "%s/adapter.gguf", rm_test_tmpdir());
    CHECK_OK(rm_lora_save_gguf(ex[0], lora_path));
    CHECK(rm_router_load(&back, lora_path, m) == RM_EFORMAT && strstr(rm_last_error(), "not a ramole router"));
    CHECK(rm_lora_load(&back, path) == RM_EFORMAT && strstr(rm_last_error(), "is a ramole router"));
    // another base of the same shape (other weights), and of another shape
    rm_llama *other = shaped_model("router-other", 260, 32, 2, 48, 8);
    rm_llama *wide = shaped_model("router-wide", 260, 48, 2, 48, 7);
    REQUIRE(other && wide);
    CHECK(rm_router_base_fingerprint(other) != rm_router_base_fingerprint(m));
    CHECK(rm_router_load(&back, path, other) == RM_EMISMATCH && strstr(rm_last_error(), "another base model"));
    CHECK(rm_router_load(&back, path, wide) == RM_EMISMATCH && strstr(rm_last_error(), "n_embd 32; this base has 48"));
    rm_llama_free(other);
    rm_llama_free(wide);
    rm_lora_free(router);
    rm_lora_free(ex[0]);
    rm_lora_free(ex[1]);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- training: gradients

// Central differences of the model loss against the analytic gradient for
// three entries of every trainable tensor (tests/test_train.c).
void train_model_grad_check(rm_trainer *t, const rm_tbatch *b, int *n_checked);

TEST(router_train_grad_matches_finite_differences) {
    rm_llama *m = shaped_model("router-grad", 40, 16, 2, 24, 5);
    REQUIRE(m);
    enum { K = 3 };
    unsigned all = (1u << RM_LIN_COUNT) - 1;
    rm_lora *ex[K] = {0};
    // experts with big outputs (so that dx through them matters); one on q,v only
    for (int i = 0; i < K; i++) {
        CHECK_OK(rm_lora_random(&ex[i], m, 2 + i, i == 2 ? 0x5 : all, 30 + (uint64_t)i));
        REQUIRE(ex[i]);
        for (int j = 0; j < ex[i]->n_layer * RM_LIN_COUNT; j++)
            for (int64_t v = 0; v < (int64_t)ex[i]->mods[j].r * ex[i]->mods[j].out; v++) ex[i]->mods[j].Bt[v] *= 8.0f;
    }
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = 2;
    p.seq = 6;
    p.threads = 1;
    rm_trainer *t = NULL;
    CHECK_OK(rm_trainer_create(&t, m, &p));
    REQUIRE(t);
    CHECK_OK(rm_trainer_add_router(t, K, ex, 3, 6.0f));
    // B_r starts at zero: randomise the router (else dA_r vanishes and alpha is uniform)
    int np;
    rm_tparam *ps = rm_trainer_params(t, &np);
    CHECK(np == 2 * 7 * 2);
    uint64_t s = 9;
    for (int i = 0; i < np; i++)
        for (size_t j = 0; j < ps[i].n; j++) ps[i].w[j] = 0.6f * (2.0f * rm_rng_uniform(&s) - 1.0f);
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 2, 6));
    uint64_t bs = 4;
    for (int r = 0; r < 12; r++) {
        b.token[r] = (int32_t)(rm_rng_next(&bs) % 40);
        b.pos[r] = r % 6;
        b.start[r] = r - r % 6;
    }
    for (int r = 0; r < 12; r++) b.target[r] = r % 6 == 5 ? -1 : b.token[r + 1];
    int n = 0;
    train_model_grad_check(t, &b, &n);
    CHECK(n == 3 * np);

    rm_trainer_free(t);

    // dx: with the base trainable too, the gradients of the embedding, the
    // norms and the earlier layers' weights flow through every router linear's
    // dx (through W, the experts' outputs and the router's query)
    CHECK_OK(rm_trainer_create(&t, m, &p));
    REQUIRE(t);
    CHECK_OK(rm_trainer_full(t));
    int n_base;
    rm_trainer_params(t, &n_base);
    CHECK_OK(rm_trainer_add_router(t, K, ex, 3, 6.0f));
    ps = rm_trainer_params(t, &np);
    for (int i = n_base; i < np; i++)
        for (size_t j = 0; j < ps[i].n; j++) ps[i].w[j] = 0.6f * (2.0f * rm_rng_uniform(&s) - 1.0f);
    n = 0;
    train_model_grad_check(t, &b, &n);
    CHECK(n == 3 * np);
    rm_trainer_free(t);
    for (int i = 0; i < K; i++) rm_lora_free(ex[i]);
    rm_tbatch_free(&b);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- the toy experiment

// Appends n examples of demo-ramole.sh's tasks as JSONL to f: "cp" (the
// base's curriculum: copy a word of 3-7 letters, or name the letter before
// one), "rev" (reverse a 5-letter word), "rot" (rotate it left by one); words
// of distinct letters. *s is the generator's state.
static void write_task(FILE *f, const char *task, int n, uint64_t *s) {
    for (int i = 0; i < n; i++) {
        char w[8] = {0}, t[8] = {0};
        int len = strcmp(task, "cp") ? 5 : 3 + (int)(rm_rng_next(s) % 5);
        for (int k = 0; k < len; k++) {
            int again;
            do {
                w[k] = (char)('a' + rm_rng_next(s) % 26);
                again = 0;
                for (int j = 0; j < k; j++) again |= w[j] == w[k];
            } while (again);
        }
        if (!strcmp(task, "cp") && i % 2) {
            int k = 1 + (int)(rm_rng_next(s) % (uint64_t)(len - 1));
            fprintf(f, "{\"inputs\": \"pv:%s?%c\", \"targets\": \"%c\"}\n", w, w[k], w[k - 1]);
            continue;
        }
        for (int k = 0; k < len; k++)
            t[k] = !strcmp(task, "rev") ? w[len - 1 - k] : !strcmp(task, "rot") ? w[(k + 1) % len] : w[k];
        fprintf(f, "{\"inputs\": \"%s:%s\", \"targets\": \"%s\"}\n", task, w, t);
    }
}

// Writes tmpdir/name: n examples of task a, or (b given) alternating n of a and n of b.
static const char *task_file(const char *name, const char *a, const char *b, int n, uint64_t seed) {
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", rm_test_tmpdir(), name);
    FILE *f = fopen(p, "w");
    if (!f) return p;
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        write_task(f, a, 1, &s);
        if (b) write_task(f, b, 1, &s);
    }
    fclose(f);
    return p;
}

// Runs `ramole ARGS` (stderr to tmpdir/cli.err); returns its exit status.
static int run_cli(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>%s/cli.err", rm_test_bin(), args, rm_test_tmpdir());
    return system(cmd);
}

// The text of tmpdir/cli.err (static buffer).
static const char *cli_err(void) {
    static char buf[2048];
    char path[512];
    snprintf(path, sizeof path, "%s/cli.err", rm_test_tmpdir());
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

typedef struct em_out {
    int32_t ids[16];
    int n;
} em_out;
static int collect(void *ctx, int32_t id) {
    em_out *o = ctx;
    if (o->n < 16) o->ids[o->n++] = id;
    return o->n >= 16;
}

// Exact match of greedy answers (through rm_generate and the batched hook,
// as when serving) over d's examples under plan p (NULL: the base).
static double exact_match(rm_llama *m, const rm_tdata *d, const rm_lora_plan *p) {
    rm_kvcache kv;
    if (rm_kvcache_init(&kv, m->hp.n_layer, 1, 64, m->hp.n_head_kv * m->hp.head_dim)) return -1;
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0;
    int right = 0;
    for (int i = 0; i < d->n; i++) {
        const rm_texample *e = &d->ex[i];
        em_out o = {{0}, 0};
        int want = e->n - e->n_prompt; // the target and EOS
        if (rm_generate(m, &kv, NULL, e->ids, e->n_prompt, want + 2, &sp, p ? &hook : NULL, p, 0, collect, &o, NULL))
            break;
        right += o.n == want && !memcmp(o.ids, e->ids + e->n_prompt, (size_t)want * sizeof(int32_t));
    }
    CHECK_OK(rm_lora_batch_status(lb));
    rm_lora_batch_free(lb);
    rm_kvcache_free(&kv);
    return (double)right / d->n;
}

TEST(router_toy_tasks_beat_mixture) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    int san = rm_test_sanitized();
    // Opt: the recipe of scripts/demo-ramole.sh and demo-router.sh through the
    // CLI (~45 s on 2 cores). Sanitized: the same pipeline, a few steps each;
    // only the losses are compared.
    int base_steps = san ? 4 : 1500, lora_steps = san ? 4 : 800, router_steps = san ? 100 : 1500, n_held = san ? 6 : 50;
    const char *tmp = rm_test_tmpdir();
    char tmpl[512], base[512], rev[512], rot[512], router[512], args[4096];
    snprintf(tmpl, sizeof tmpl, "%s/toy-template.txt", tmp);
    snprintf(base, sizeof base, "%s/toy-base.gguf", tmp);
    snprintf(rev, sizeof rev, "%s/toy-reverse", tmp);
    snprintf(rot, sizeof rot, "%s/toy-rotate", tmp);
    snprintf(router, sizeof router, "%s/toy-router.gguf", tmp);
    FILE *f = fopen(tmpl, "w");
    REQUIRE(f);
    fputs("{inputs}=", f);
    fclose(f);
    snprintf(args, sizeof args,
             "train --config scripts/demo-data/toy-base.json --data %s --template %s --out %s --steps %d",
             task_file("toy-cp.jsonl", "cp", NULL, 4000, 1), tmpl, base, base_steps);
    REQUIRE(run_cli(args) == 0);
    const char *dirs[2] = {rev, rot}, *tasks[2] = {"rev", "rot"};
    // Reversal on this tiny base lands in a plateau (held-out loss ~0.5,
    // one position wrong) for some seeds of the adapter's init and order; a
    // contributor would retrain, so each expert takes the first of three
    // seeds whose held-out loss (its training file's own split) is below 0.05.
    for (int k = 0; k < 2; k++) {
        const char *data = task_file("toy-task.jsonl", tasks[k], NULL, 2000, 2 + k);
        for (int seed = 1; seed <= 3; seed++) {
            snprintf(args, sizeof args,
                     "lora train --base %s --data %s --template %s --out %s --rank 16 --targets all "
                     "--steps %d --lr 1e-2 --batch 8 --seq 64 --eval-em 0 --seed %d",
                     base, data, tmpl, dirs[k], lora_steps, seed);
            REQUIRE(run_cli(args) == 0);
            const char *ev = strstr(cli_err(), "eval loss ");
            double held_loss = ev ? atof(ev + 10) : 1e9;
            fprintf(stderr, "    %s expert, seed %d: held-out loss %.4f\n", tasks[k], seed, held_loss);
            if (san || held_loss < 0.05) break;
        }
    }
    snprintf(args, sizeof args,
             "router train --base %s --lora %s,%s --data %s --template %s --out %s --rank 4 --alpha 8 "
             "--steps %d --lr 1e-3 --batch 8 --seq 64 --eval-em 0 --threads 2",
             base, rev, rot, task_file("toy-mixed.jsonl", "rev", "rot", 1000, 20), tmpl, router, router_steps);
    REQUIRE(run_cli(args) == 0);
    CHECK(strstr(cli_err(), "router train: 2 examples") == NULL && strstr(cli_err(), "2 experts, rank 4"));

    // held-out requests (other words), half of each task; every one gets both adapters
    rm_llama *m = NULL;
    REQUIRE(rm_llama_load(&m, base) == RM_OK);
    rm_tdata held = {0}, one[2] = {{0}};
    REQUIRE(m->tok);
    CHECK_OK(rm_tdata_load_jsonl(&held, task_file("toy-held.jsonl", "rev", "rot", n_held, 50), "{inputs}=", m->tok,
                                 m->add_bos ? m->bos : -1, rm_tokenizer_eos(m->tok), 64));
    for (int k = 0; k < 2; k++)
        for (int i = k; i < held.n; i += 2)
            CHECK_OK(rm_tdata_add(&one[k], held.ex[i].ids, held.ex[i].n, held.ex[i].n_prompt));
    rm_lora *ex[2] = {0}, *r = NULL;
    for (int k = 0; k < 2; k++) CHECK_OK(rm_lora_load(&ex[k], dirs[k]));
    REQUIRE(ex[0] && ex[1]);
    CHECK_OK(rm_lora_bind(ex[0], m));
    CHECK_OK(rm_lora_bind(ex[1], m));
    CHECK_OK(rm_router_load(&r, router, m));
    REQUIRE(r);
    rm_lora_plan sel[2], mix, fus, rp;
    for (int k = 0; k < 2; k++) CHECK_OK(rm_lora_plan_init(&sel[k], RM_COMPOSE_SELECTION, 1, &ex[k], NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&mix, RM_COMPOSE_MIXTURE, 2, ex, NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&fus, RM_COMPOSE_FUSION, 2, ex, NULL, NULL));
    CHECK_OK(rm_lora_plan_init_router(&rp, 2, ex, r));

    // the router's loss against the mixture's (= a router at init) on held-out requests
    rm_train_params tp;
    rm_train_default_params(&tp);
    tp.batch = 8;
    tp.seq = 64;
    rm_trainer *t = NULL;
    CHECK_OK(rm_trainer_create(&t, m, &tp));
    REQUIRE(t);
    CHECK_OK(rm_trainer_add_router(t, 2, ex, 4, 8.0f));
    double loss_mix = 0, loss_router = 0;
    CHECK_OK(rm_trainer_eval_loss(t, &held, &loss_mix));
    for (int i = 0; i < m->hp.n_layer * RM_LIN_COUNT; i++) { // the trained router into the trainer
        const rm_lora_mod *rm_ = &r->mods[i];
        rm_tlinear *L = rm_trainer_linear(t, i / RM_LIN_COUNT, (rm_linear_id)(i % RM_LIN_COUNT));
        if (!rm_->r || L->rank != rm_->r) continue;
        memcpy(L->A, rm_->A, (size_t)rm_->r * rm_->in * sizeof(float));
        for (int64_t o = 0; o < rm_->out; o++)
            for (int j = 0; j < rm_->r; j++) L->B[o * rm_->r + j] = rm_->Bt[(int64_t)j * rm_->out + o];
    }
    CHECK_OK(rm_trainer_eval_loss(t, &held, &loss_router));
    CHECKF(loss_router < (san ? 1.0 : 0.5) * loss_mix, "held-out loss: router %.3f vs mixture %.3f", loss_router,
           loss_mix);
    if (san) {
        fprintf(stderr, "    held-out loss: mixture %.3f, router %.3f\n", loss_mix, loss_router);
        rm_test_skip("sanitized: a few steps only; exact match is measured in the optimized run");
    } else {
        double o0 = exact_match(m, &one[0], &sel[0]), o1 = exact_match(m, &one[1], &sel[1]), oracle = (o0 + o1) / 2;
        fprintf(stderr, "    oracle reverse %.2f, rotate %.2f\n", o0, o1);
        double em_mix = exact_match(m, &held, &mix), em_fus = exact_match(m, &held, &fus),
               em_r = exact_match(m, &held, &rp);
        fprintf(stderr,
                "    %d held-out requests, both adapters each: EM oracle %.2f, mixture %.2f, fusion %.2f, router %.2f; "
                "loss mixture %.3f, router %.3f\n",
                held.n, oracle, em_mix, em_fus, em_r, loss_mix, loss_router);
        CHECKF(oracle > 0.9, "the experts did not learn their tasks (oracle EM %.2f)", oracle);
        CHECKF(em_mix < 0.2, "mixture EM %.2f: the experiment expects it to fail", em_mix);
        // measured 0.42-0.47 here (0.59-0.69 on the demo's base and adapters, docs/router.md)
        CHECKF(em_r > 0.4 && em_r > em_mix + 0.35, "router EM %.2f vs mixture %.2f", em_r, em_mix);
    }
    rm_trainer_free(t);
    for (int k = 0; k < 2; k++) rm_lora_plan_free(&sel[k]);
    rm_lora_plan_free(&mix);
    rm_lora_plan_free(&fus);
    rm_lora_plan_free(&rp);
    rm_lora_free(r);
    rm_lora_free(ex[0]);
    rm_lora_free(ex[1]);
    rm_tdata_free(&held);
    rm_tdata_free(&one[0]);
    rm_tdata_free(&one[1]);
    rm_llama_free(m);
}

TEST(router_cli_refuses_bad_input) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    rm_llama *m = tiny();
    REQUIRE(m);
    rm_lora *ex[2] = {0}, *router = NULL;
    REQUIRE(random_set(m, 2, 10.0f, ex, &router) == 0);
    const char *tmp = rm_test_tmpdir();
    char a[512], b[512], rf[512], model[512], args[4096];
    snprintf(a, sizeof a, "%s/cli-a.gguf", tmp);
    snprintf(b, sizeof b, "%s/cli-b.gguf", tmp);
    snprintf(rf, sizeof rf, "%s/cli-router.gguf", tmp);
    snprintf(model, sizeof model, "%s/router-tiny.gguf", tmp);
    CHECK_OK(rm_lora_save_gguf(ex[0], a));
    CHECK_OK(rm_lora_save_gguf(ex[1], b));
    CHECK_OK(rm_router_save(router, m, 2, rf));
    const char *gen = "generate -m %s --lora %s --lora %s -p ab -n 2 --temp 0";
    // the router works through generate
    snprintf(args, sizeof args, "generate -m %s --lora %s --lora %s -p ab -n 2 --temp 0 --compose router --router %s",
             model, a, b, rf);
    CHECK(run_cli(args) == 0);
    // --compose router without a router, and a router without --compose router
    snprintf(args, sizeof args, gen, model, a, b);
    strcat(args, " --compose router");
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "needs --router FILE"));
    snprintf(args, sizeof args, gen, model, a, b);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --router %s", rf);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "--router goes with --compose router"));
    // a missing router file, an adapter given as the router, a truncated router
    snprintf(args, sizeof args, gen, model, a, b);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --compose router --router %s/none.gguf", tmp);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "none.gguf"));
    snprintf(args, sizeof args, gen, model, a, b);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --compose router --router %s", a);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "not a ramole router"));
    char *data;
    size_t n;
    REQUIRE(rm_read_file(rf, &data, &n) == RM_OK);
    char cut[600];
    snprintf(cut, sizeof cut, "%s/cli-router-cut.gguf", tmp);
    REQUIRE(rm_write_file_atomic(cut, data, n - 7) == RM_OK);
    free(data);
    snprintf(args, sizeof args, gen, model, a, b);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --compose router --router %s", cut);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "cli-router-cut.gguf"));
    // a router of another base
    rm_llama *other = shaped_model("router-other", 260, 32, 2, 48, 8);
    REQUIRE(other);
    snprintf(args, sizeof args, gen, other->path, a, b);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --compose router --router %s", rf);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "another base model"));
    // more adapters than a plan holds; router train with one adapter or none
    args[0] = 0;
    snprintf(args, sizeof args, "generate -m %s -p ab -n 1 --compose router --router %s", model, rf);
    for (int i = 0; i <= RM_PLAN_MAX; i++) snprintf(args + strlen(args), sizeof args - strlen(args), " --lora %s", a);
    CHECK(run_cli(args) == 2 * 256 && strstr(cli_err(), "at most 16"));
    snprintf(args, sizeof args, "router train --base %s --lora %s --data x.jsonl --out %s/r.gguf", model, a, tmp);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "2 or more adapters"));
    snprintf(args, sizeof args, "router train --base %s --data x.jsonl --out %s/r.gguf", model, tmp);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "required"));
    // router info names what it holds
    snprintf(args, sizeof args, "router info %s --base %s", rf, model);
    CHECK(run_cli(args) == 0);
    rm_llama_free(other);
    free_set(2, ex, router);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- the serving engine

typedef struct {
    int calls, n;
    int32_t tok[16];
} eng_rec;
static void eng_done(void *user, const int32_t *t, int n, const char *reason) {
    eng_rec *r = user;
    r->calls++;
    r->n = t ? n : -1;
    for (int i = 0; t && i < n && i < 16; i++) r->tok[i] = t[i];
}

// Router requests run in the engine next to mixture ones and give the tokens
// they give alone; an engine without a router refuses them with the reason.
TEST(router_engine_requests) {
    rm_llama *m = tiny();
    REQUIRE(m);
    rm_lora *ex[2] = {0}, *router = NULL;
    REQUIRE(random_set(m, 2, 2000.0f, ex, &router) == 0);
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0;
    int32_t p[12];
    for (int i = 0; i < 12; i++) p[i] = 3 + 7 * i;
    rm_engine *e = NULL;
    REQUIRE(rm_engine_new(&e, m, NULL, 2, 32, 64) == RM_OK);
    eng_rec r0 = {0};
    rm_engine_cbs c0 = {eng_done, NULL, &r0};
    CHECK(rm_engine_submit(e, p, 5, 4, &sp, ex, 2, RM_COMPOSE_ROUTER, &c0) == RM_EINVAL &&
          strstr(rm_last_error(), "no router"));
    rm_engine_set_router(e, router);
    eng_rec together[2] = {{0}}, alone[2] = {{0}};
    rm_compose_mode modes[2] = {RM_COMPOSE_ROUTER, RM_COMPOSE_MIXTURE};
    for (int s = 0; s < 2; s++) {
        rm_engine_cbs c = {eng_done, NULL, &together[s]};
        CHECK_OK(rm_engine_submit(e, p + s, 7, 8, &sp, ex, 2, modes[s], &c));
    }
    while (rm_engine_step(e) > 0) {}
    rm_engine_free(e);
    for (int s = 0; s < 2; s++) {
        REQUIRE(rm_engine_new(&e, m, NULL, 1, 32, 64) == RM_OK);
        rm_engine_set_router(e, router);
        rm_engine_cbs c = {eng_done, NULL, &alone[s]};
        CHECK_OK(rm_engine_submit(e, p + s, 7, 8, &sp, ex, 2, modes[s], &c));
        while (rm_engine_step(e) > 0) {}
        rm_engine_free(e);
        CHECKF(alone[s].n > 0 && alone[s].n == together[s].n &&
                   !memcmp(alone[s].tok, together[s].tok, (size_t)alone[s].n * 4),
               "%s request: alone %d tokens, together %d", rm_compose_name(modes[s]), alone[s].n, together[s].n);
    }
    free_set(2, ex, router);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- training with a set of experts per row

// The per-row-set tests' experts: four on the router-grad shape, one on q,v
// only, with outputs scaled up (so that dx through them matters).
enum { SETS_N = 4, SETS_K = 3 };
static rm_llama *sets_model(rm_lora **ex) {
    rm_llama *m = shaped_model("router-sets", 40, 16, 2, 24, 6);
    unsigned all = (1u << RM_LIN_COUNT) - 1;
    for (int i = 0; m && i < SETS_N; i++) {
        if (rm_lora_random(&ex[i], m, 2 + i % 3, i == 2 ? 0x5 : all, 60 + (uint64_t)i)) return NULL;
        for (int j = 0; j < ex[i]->n_layer * RM_LIN_COUNT; j++)
            for (int64_t v = 0; v < (int64_t)ex[i]->mods[j].r * ex[i]->mods[j].out; v++) ex[i]->mods[j].Bt[v] *= 8.0f;
    }
    return m;
}

// Three examples packed into 2 sequences of 8 rows: a (rows 0-4) and b (5-7)
// in the first, c (8-13) and two padding rows in the second; each with its
// own experts (slots, -1 empty; expert 2 is the q,v-only one).
typedef struct {
    int row0, len, set[SETS_K];
} sets_example;
static const sets_example k_sets_ex[3] = {{0, 5, {0, 2, -1}}, {5, 3, {3, 1, 2}}, {8, 6, {2, 0, 3}}};

static void sets_free(rm_lora **ex, rm_llama *m) {
    for (int i = 0; i < SETS_N; i++) rm_lora_free(ex[i]);
    rm_llama_free(m);
}

static void sets_fill(rm_tbatch *b, uint64_t seed) {
    for (int r = 0; r < 16; r++) { // padding first, then the examples over it
        b->token[r] = 0;
        b->pos[r] = 0;
        b->start[r] = r;
        b->target[r] = -1;
        for (int j = 0; j < SETS_K; j++) b->exp[r * SETS_K + j] = -1;
    }
    for (int x = 0; x < 3; x++) {
        const sets_example *e = &k_sets_ex[x];
        for (int i = 0; i < e->len; i++) {
            int r = e->row0 + i;
            b->token[r] = (int32_t)(rm_rng_next(&seed) % 40);
            b->pos[r] = i;
            b->start[r] = e->row0;
            for (int j = 0; j < SETS_K; j++) b->exp[r * SETS_K + j] = e->set[j];
        }
        for (int i = 0; i + 1 < e->len; i++) b->target[e->row0 + i] = b->token[e->row0 + i + 1];
    }
}

// A batch of k_sets_ex (tokens from seed).
static int sets_batch(rm_tbatch *b, uint64_t seed) {
    int rc = rm_tbatch_alloc(b, 2, 8);
    if (!rc) rc = rm_tbatch_alloc_sets(b, SETS_K);
    if (!rc) sets_fill(b, seed);
    return rc;
}

// A trainer of B x T rows (threads, lora dropout: p's others defaults),
// with the base made trainable first when full, and a router of rank 3 over
// the n experts, k a row.
static rm_trainer *router_trainer(rm_llama *m, const rm_train_params *p, int full, int n, rm_lora **ex, int k) {
    rm_trainer *t = NULL;
    if (rm_trainer_create(&t, m, p)) return NULL;
    if ((full && rm_trainer_full(t)) || rm_trainer_add_router_table(t, n, ex, k, 3, 6.0f)) {
        rm_trainer_free(t);
        return NULL;
    }
    return t;
}

static rm_train_params sets_params(int B, int T, int threads) {
    rm_train_params p;
    rm_train_default_params(&p);
    p.batch = B;
    p.seq = T;
    p.threads = threads;
    return p;
}

// A trainer over the table with a random router (B_r = 0 would make alpha uniform).
static rm_trainer *sets_trainer(rm_llama *m, rm_lora **ex, int threads, int full) {
    rm_train_params p = sets_params(2, 8, threads);
    rm_trainer *t = router_trainer(m, &p, full, SETS_N, ex, SETS_K);
    if (!t) return NULL;
    int np;
    rm_tparam *ps = rm_trainer_params(t, &np);
    uint64_t s = 21;
    for (int i = 0; i < np; i++)
        for (size_t j = 0; strstr(ps[i].name, ".router_") && j < ps[i].n; j++)
            ps[i].w[j] = 0.6f * (2.0f * rm_rng_uniform(&s) - 1.0f);
    return t;
}

// A batch whose rows each have their own experts gives, example by example,
// the logits and the router gradients of that example alone through the
// fixed-set router over its experts (the path the earlier tests check).
TEST(router_sets_rows_equal_each_alone) {
    rm_lora *ex[SETS_N] = {0};
    rm_llama *m = sets_model(ex);
    REQUIRE(m && ex[SETS_N - 1]);
    rm_trainer *t = sets_trainer(m, ex, 2, 0);
    REQUIRE(t);
    rm_tbatch b;
    CHECK_OK(sets_batch(&b, 5));
    int V = m->hp.n_vocab, np;
    float *logits = malloc(16 * (size_t)V * sizeof(float)), *one = malloc(8 * (size_t)V * sizeof(float));
    double loss;
    rm_trainer_zero_grad(t);
    CHECK_OK(rm_trainer_forward(t, &b, 1.0f, 1, &loss, logits));
    rm_tparam *ps = rm_trainer_params(t, &np);
    size_t total = 0;
    for (int i = 0; i < np; i++) total += ps[i].n;
    double *sum = calloc(total, sizeof(double)), worst_l = 0, worst_g = 0, big = 1;
    for (int x = 0; x < 3; x++) {
        const sets_example *e = &k_sets_ex[x];
        rm_lora *mine[SETS_K];
        int k = 0;
        for (int j = 0; j < SETS_K; j++)
            if (e->set[j] >= 0) mine[k++] = ex[e->set[j]];
        rm_train_params p = sets_params(1, e->len, 1);
        rm_trainer *f = router_trainer(m, &p, 0, k, mine, k); // the fixed set: every row all k
        REQUIRE(f);
        int nf;
        rm_tparam *pf = rm_trainer_params(f, &nf);
        REQUIRE(nf == np);
        for (int i = 0; i < np; i++) {
            REQUIRE(!strcmp(pf[i].name, ps[i].name) && pf[i].n == ps[i].n);
            memcpy(pf[i].w, ps[i].w, ps[i].n * sizeof(float));
        }
        rm_tbatch a;
        CHECK_OK(rm_tbatch_alloc(&a, 1, e->len));
        for (int i = 0; i < e->len; i++) {
            a.token[i] = b.token[e->row0 + i];
            a.target[i] = b.target[e->row0 + i];
            a.pos[i] = i;
            a.start[i] = 0;
        }
        rm_trainer_zero_grad(f);
        CHECK_OK(rm_trainer_forward(f, &a, 1.0f, 1, &loss, one));
        for (size_t i = 0; i < (size_t)e->len * V; i++)
            worst_l = fmax(worst_l, fabs(one[i] - logits[(size_t)e->row0 * V + i]) / (1.0 + fabs(one[i])));
        for (int i = 0, o = 0; i < np; o += (int)pf[i].n, i++)
            for (size_t j = 0; j < pf[i].n; j++) sum[o + j] += pf[i].g[j];
        rm_tbatch_free(&a);
        rm_trainer_free(f);
    }
    for (int i = 0, o = 0; i < np; o += (int)ps[i].n, i++)
        for (size_t j = 0; j < ps[i].n; j++) big = fmax(big, fabs(sum[o + j]));
    for (int i = 0, o = 0; i < np; o += (int)ps[i].n, i++)
        for (size_t j = 0; j < ps[i].n; j++) worst_g = fmax(worst_g, fabs(ps[i].g[j] - sum[o + j]) / big);
    CHECKF(worst_l < 1e-5, "logits: per-row sets vs each example alone differ by %g", worst_l);
    CHECKF(worst_g < 1e-5, "router gradients: per-row sets vs the sum over examples alone differ by %g (of %g)",
           worst_g, big);
    CHECKF(big > 1e-3, "the gradients are too small to compare (%g)", big);
    // a table of more experts than a row holds needs the rows' sets
    free(b.exp);
    b.exp = NULL;
    CHECK(rm_trainer_forward(t, &b, 1.0f, 0, &loss, NULL) == RM_EINVAL && strstr(rm_last_error(), "no expert sets"));
    // and refuses a set naming an expert twice or one out of the table
    CHECK_OK(rm_tbatch_alloc_sets(&b, SETS_K));
    sets_fill(&b, 5);
    b.exp[1] = b.exp[0];
    CHECK(rm_trainer_forward(t, &b, 1.0f, 0, &loss, NULL) == RM_EINVAL && strstr(rm_last_error(), "twice"));
    b.exp[1] = SETS_N;
    CHECK(rm_trainer_forward(t, &b, 1.0f, 0, &loss, NULL) == RM_EINVAL && strstr(rm_last_error(), "out of range"));
    free(sum);
    free(logits);
    free(one);
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    sets_free(ex, m);
}

TEST(router_sets_grad_matches_finite_differences) {
    rm_lora *ex[SETS_N] = {0};
    rm_llama *m = sets_model(ex);
    REQUIRE(m && ex[SETS_N - 1]);
    rm_tbatch b;
    CHECK_OK(sets_batch(&b, 7));
    // the router's A_r, B_r; then with the base trainable too, every earlier
    // weight through the rows' own experts' and query's dx paths
    for (int full = 0; full < 2; full++) {
        rm_trainer *t = sets_trainer(m, ex, 1, full);
        REQUIRE(t);
        int np, n = 0;
        rm_trainer_params(t, &np);
        train_model_grad_check(t, &b, &n);
        CHECK(n == 3 * np);
        rm_trainer_free(t);
    }
    rm_tbatch_free(&b);
    sets_free(ex, m);
}

// Lora dropout in the batch filler: each example placed in a batch gets its
// set without its own adapter with probability P (P = 0 never, 1 always, 0.5
// within 4 sigma of the binomial), and a resumed trainer draws on bit for bit.
TEST(router_sets_dropout_rate) {
    rm_lora *ex[SETS_N] = {0};
    rm_llama *m = sets_model(ex);
    REQUIRE(m && ex[SETS_N - 1]);
    // 40 examples of 3 tokens (the first names the example); own adapter i % 4
    rm_tdata d = {0};
    for (int i = 0; i < 40; i++) {
        int32_t ids[3] = {i, 1, 2};
        CHECK_OK(rm_tdata_add(&d, ids, 3, 1));
        rm_texample *e = &d.ex[d.n - 1];
        for (int j = 0; j < 2; j++) {
            e->set[0][j] = (i + j) % SETS_N;     // own first
            e->set[1][j] = (i + j + 1) % SETS_N; // own left out
        }
    }
    d.set_k = 2;
    const float rates[3] = {0.0f, 1.0f, 0.5f};
    char ck[600];
    snprintf(ck, sizeof ck, "%s/sets-dropout.ckpt", rm_test_tmpdir());
    for (int c = 0; c < 3; c++) {
        rm_train_params p = sets_params(4, 8, 1); // two examples a sequence: a draw per example, not per row
        p.lora_dropout = rates[c];
        p.seed = 3;
        rm_trainer *t = router_trainer(m, &p, 0, SETS_N, ex, 2);
        REQUIRE(t);
        rm_tbatch b;
        CHECK_OK(rm_tbatch_alloc(&b, 4, 8));
        CHECK_OK(rm_tbatch_alloc_sets(&b, 2));
        long placed = 0, dropped = 0;
        int n_batches = 500;
        for (int s = 0; s < n_batches; s++) {
            CHECK_OK(rm_trainer_next_batch(t, &d, &b, 1, NULL));
            for (int r = 0; r < 32; r++) {
                const int32_t *set = b.exp + r * 2;
                if (set[0] < 0) continue; // padding
                int own = b.token[r - b.pos[r]] % SETS_N, has = set[0] == own || set[1] == own;
                if (b.pos[r] == 0) {
                    placed++;
                    dropped += !has;
                }
                CHECK(b.pos[r] == 0 || !memcmp(set, set - 2, 2 * sizeof *set)); // one set per example
            }
            if (c == 2 && s == n_batches - 51) CHECK_OK(rm_trainer_save_checkpoint(t, ck));
        }
        double want = rates[c] * placed, sd = sqrt(placed * rates[c] * (1 - rates[c]));
        CHECKF(fabs(dropped - want) <= 4 * sd, "lora dropout %.1f: %ld of %ld examples without their own adapter",
               rates[c], dropped, placed);
        if (c == 2) { // resume from 50 batches before the end: the same batches and draws
            int32_t *last = malloc(32 * 2 * sizeof(int32_t));
            memcpy(last, b.exp, 32 * 2 * sizeof(int32_t));
            rm_trainer *t2 = router_trainer(m, &p, 0, SETS_N, ex, 2);
            REQUIRE(t2);
            CHECK_OK(rm_trainer_load_checkpoint(t2, ck));
            for (int s = 0; s < 50; s++) CHECK_OK(rm_trainer_next_batch(t2, &d, &b, 1, NULL));
            CHECK(!memcmp(last, b.exp, 32 * 2 * sizeof(int32_t)));
            free(last);
            rm_trainer_free(t2);
        }
        rm_tbatch_free(&b);
        rm_trainer_free(t);
    }
    rm_tdata_free(&d);
    sets_free(ex, m);
}

// ---------------------------------------------------------------- training with retrieval from a pool

static const char *const k_pool_tasks[4] = {"rev", "rot", "up", "mid"};

// Writes tmpdir/name into path: n rounds of one example of each task
// (write_task's lines, with "task" added when with_task).
static void tasks_file(char *path, size_t cap, const char *name, const char *const *tasks, int n_tasks, int n,
                       uint64_t seed, int with_task) {
    snprintf(path, cap, "%s/%s", rm_test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    uint64_t s = seed;
    for (int i = 0; f && i < n; i++)
        for (int t = 0; t < n_tasks; t++) {
            char *line = NULL;
            size_t len = 0;
            FILE *mf = open_memstream(&line, &len);
            if (!mf) break;
            write_task(mf, tasks[t], 1, &s);
            fclose(mf);
            if (with_task && len > 2) fprintf(f, "%.*s, \"task\": \"%s\"}\n", (int)len - 2, line, tasks[t]);
            else fputs(line, f);
            free(line);
        }
    if (f) fclose(f);
}

typedef struct {
    char *in[64];
    int n;
} sample_texts;
static int take_input(void *user, const rm_json *rec, long index) {
    sample_texts *st = user;
    const char *in = rm_json_get_str(rec, "inputs", NULL);
    if (in && st->n < 64) st->in[st->n++] = strdup(in);
    return RM_OK;
}

// A pool in tmpdir/dir with a lexical embedder fitted on the samples and an
// adapter per task of k_pool_tasks (named and tasked so, 4 sample inputs of
// its task): a random adapter for m saved as GGUF, none when !weights, and
// for the last task one made for the model foreign when given.
static int sets_pool(const char *dir, rm_llama *m, int weights, rm_llama *foreign) {
    char path[700], cmd[800];
    snprintf(path, sizeof path, "%s/%s", rm_test_tmpdir(), dir);
    snprintf(cmd, sizeof cmd, "rm -rf %s", path);
    if (system(cmd) != 0) return -1;
    sample_texts st = {{0}, 0};
    char samples[600];
    for (int t = 0; t < 4; t++) {
        tasks_file(samples, sizeof samples, "sets-samples.jsonl", &k_pool_tasks[t], 1, 4, 90 + (uint64_t)t, 0);
        if (rm_json_each_record(samples, take_input, &st)) return -1;
    }
    rm_pool *pool = NULL;
    rm_pool_params pp = rm_pool_default_params();
    rm_feat_params fp = rm_feat_default_params();
    fp.bits = 12;
    rm_embedder *e = NULL;
    int rc = rm_pool_open(path, &pp, &pool);
    if (!rc) rc = st.n == 16 ? rm_lexical_create(&fp, (const char *const *)st.in, NULL, 16, NULL, &e) : -1;
    if (!rc) rc = rm_pool_set_embedder(pool, e);
    for (int t = 0; !rc && t < 4; t++) {
        char w[700];
        rm_lora *l = NULL;
        rm_llama *owner = foreign && t == 3 ? foreign : m;
        snprintf(w, sizeof w, "%s/sets-%s-%s.gguf", rm_test_tmpdir(), owner == m ? "own" : "foreign", k_pool_tasks[t]);
        rc = rm_lora_random(&l, owner, 2 + t % 2, t == 1 ? 0x5 : (1u << RM_LIN_COUNT) - 1, 300 + (uint64_t)t);
        if (!rc) rc = rm_lora_save_gguf(l, w);
        rm_lora_free(l);
        rm_adapter_info info = {.name = k_pool_tasks[t], .task = k_pool_tasks[t], .weights = weights ? w : NULL};
        if (!rc) rc = rm_pool_add(pool, &info, (const char *const *)st.in + 4 * t, NULL, 4, NULL);
    }
    if (pool) rm_pool_close(pool);
    for (int i = 0; i < st.n; i++) free(st.in[i]);
    return rc;
}

// Each training example gets its own retrieved adapters: its own task's among
// them in set[0] and never in set[1]; a batch packs examples with different sets.
TEST(router_sets_retrieval_per_example) {
    rm_llama *m = tiny();
    REQUIRE(m);
    REQUIRE(sets_pool("sets-pool", m, 1, NULL) == 0);
    char data[600], dir[600];
    tasks_file(data, sizeof data, "sets-mixed.jsonl", k_pool_tasks, 4, 6, 5, 1);
    snprintf(dir, sizeof dir, "%s/sets-pool", rm_test_tmpdir());
    rm_tdata d = {0};
    CHECK_OK(rm_tdata_load_tasks(&d, data, "{inputs}=", m->tok, -1, rm_tokenizer_eos(m->tok), 64, NULL, 0));
    CHECK(d.n == 24 && d.n_tasks == 4 && rm_tdata_task_count(&d, "rot") == 6);
    rm_pool *pool = NULL;
    rm_pick_table tab;
    CHECK_OK(rm_pool_open_existing(dir, &pool));
    REQUIRE(pool);
    CHECK_OK(rm_pick_table_init(&tab, pool));
    REQUIRE(tab.n == 4);
    CHECK_OK(rm_tdata_retrieve(&d, 2, rm_pick_table_retrieve, &tab));
    int own_in = 0, own_out = 0;
    for (int i = 0; i < d.n; i++) {
        const rm_texample *e = &d.ex[i];
        int own = rm_pick_table_find(&tab, d.tasks[e->task]), in0 = 0, in1 = 0;
        for (int j = 0; j < 2; j++) in0 |= e->set[0][j] == own, in1 |= e->set[1][j] == own;
        own_in += in0;
        own_out += !in1 && e->set[1][1] >= 0 && e->set[0][2] < 0;
    }
    CHECKF(own_in == d.n, "own task's adapter retrieved for %d of %d examples", own_in, d.n);
    CHECKF(own_out == d.n, "own task's adapter left out (2 others retrieved) for %d of %d", own_out, d.n);
    // packed batches of a trainer over the pool's adapters: several sets among the rows
    rm_lora *ex[4] = {0};
    for (int i = 0; i < 4; i++) CHECK_OK(rm_lora_load_for(&ex[i], tab.weights[i], m));
    REQUIRE(ex[3]);
    rm_train_params p = sets_params(2, 32, 1);
    rm_trainer *t = router_trainer(m, &p, 0, 4, ex, 2);
    REQUIRE(t);
    rm_tbatch b;
    CHECK_OK(rm_tbatch_alloc(&b, 2, 32));
    CHECK_OK(rm_tbatch_alloc_sets(&b, 2));
    CHECK_OK(rm_trainer_next_batch(t, &d, &b, 1, NULL));
    int distinct = 0;
    for (int r = 0; r < 64; r++) {
        int seen = b.exp[2 * r] < 0;
        for (int q = 0; !seen && q < r; q++) seen = !memcmp(b.exp + 2 * q, b.exp + 2 * r, 2 * sizeof(int32_t));
        distinct += !seen;
    }
    CHECKF(distinct >= 2, "%d distinct expert sets among the rows of a batch", distinct);
    double loss;
    CHECK_OK(rm_trainer_forward(t, &b, 1.0f, 1, &loss, NULL));
    rm_tbatch_free(&b);
    rm_trainer_free(t);
    for (int i = 0; i < 4; i++) rm_lora_free(ex[i]);
    rm_pick_table_free(&tab);
    rm_pool_close(pool);
    rm_tdata_free(&d);
    rm_llama_free(m);
}

// `router train --pool`: a short run over the pool's adapters with one data
// file per task and the seen tasks from a file; the router file loads and
// says it was trained with retrieval (and its k and lora dropout).
TEST(router_sets_cli_train_with_retrieval) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    int san = rm_test_sanitized();
    rm_llama *m = tiny();
    REQUIRE(m);
    REQUIRE(sets_pool("sets-cli-pool", m, 1, NULL) == 0);
    const char *tmp = rm_test_tmpdir();
    char files[4][256], held[256], tasks[256], tmpl[256], out[256], args[4096];
    for (int t = 0; t < 4; t++) {
        char name[64];
        snprintf(name, sizeof name, "sets-cli-%s.jsonl", k_pool_tasks[t]);
        tasks_file(files[t], sizeof files[t], name, &k_pool_tasks[t], 1, san ? 6 : 30, 40 + (uint64_t)t, 1);
    }
    tasks_file(held, sizeof held, "sets-cli-held.jsonl", k_pool_tasks, 4, 3, 77, 1);
    snprintf(tasks, sizeof tasks, "%s/sets-cli-tasks.txt", tmp);
    snprintf(tmpl, sizeof tmpl, "%s/sets-cli-template.txt", tmp);
    snprintf(out, sizeof out, "%s/sets-cli-router.gguf", tmp);
    FILE *f = fopen(tasks, "w");
    REQUIRE(f);
    fputs("rev\n  rot \n\nup\n", f); // the seen tasks: 3 of 4
    fclose(f);
    REQUIRE((f = fopen(tmpl, "w")));
    fputs("{inputs}=", f);
    fclose(f);
    snprintf(args, sizeof args,
             "router train --base %s/router-tiny.gguf --pool %s/sets-cli-pool --retrieve 2 --lora-dropout 0.25 "
             "--data %s,%s --data %s --data %s --train-tasks @%s --eval %s --template %s --out %s --steps %d --batch 2 "
             "--seq 32 "
             "--eval-em 4 --threads 2 --json",
             tmp, tmp, files[0], files[1], files[2], files[3], tasks, held, tmpl, out, san ? 2 : 6);
    CHECKF(run_cli(args) == 0, "%s", cli_err());
    const char *err = cli_err();
    CHECKF(strstr(err, "2 of 4 pool adapters per example, lora dropout 0.25"), "%s", err);
    CHECKF(strstr(err, "for 99 examples (9 held out) of 3 tasks") || san, "%s", err); // 3 x 30 seen + 3 x 3 held
    CHECKF(strstr(err, "(own adapter present; dropped ") && strstr(err, "eval EM"), "%s", err);
    rm_lora *r = NULL;
    CHECK_OK(rm_router_load(&r, out, m));
    rm_router_training tr;
    CHECK_OK(rm_router_read_training(out, &tr));
    CHECK(!strcmp(tr.with, "retrieval") && tr.trained_k == 2 && fabsf(tr.lora_dropout - 0.25f) < 1e-6f);
    rm_lora_free(r);
    // a fixed-set router says so; a file from before the key says nothing
    char fixed[700];
    snprintf(fixed, sizeof fixed, "%s/sets-cli-fixed.gguf", tmp);
    rm_lora *ex[2] = {0}, *router = NULL;
    REQUIRE(random_set(m, 2, 1.0f, ex, &router) == 0);
    CHECK_OK(rm_router_save(router, m, 2, fixed));
    CHECK_OK(rm_router_read_training(fixed, &tr));
    CHECK(!strcmp(tr.with, "fixed") && tr.trained_k == 2 && isnan(tr.lora_dropout));
    free_set(2, ex, router);
    rm_llama_free(m);
}

// `router train --pool` refuses, saying why: a --train-tasks task no example
// has, an example without a task (naming file and record), --retrieve out of
// range, a pool whose adapters have no weights, and an adapter made for
// another base; and the options that go with one mode given in the other.
TEST(router_sets_cli_refusals) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    rm_llama *m = tiny(), *wide = shaped_model("router-wide", 260, 48, 2, 48, 7);
    REQUIRE(m && wide);
    REQUIRE(sets_pool("sets-bad-ok", m, 1, NULL) == 0);
    REQUIRE(sets_pool("sets-bad-noweights", m, 0, NULL) == 0);
    REQUIRE(sets_pool("sets-bad-foreign", m, 1, wide) == 0);
    const char *tmp = rm_test_tmpdir();
    char data[600], notask[600], args[4096];
    tasks_file(data, sizeof data, "sets-bad.jsonl", k_pool_tasks, 4, 2, 3, 1);
    tasks_file(notask, sizeof notask, "sets-bad-notask.jsonl", k_pool_tasks, 2, 1, 3, 0);
    const char *head =
        "router train --base %s/router-tiny.gguf --pool %s/%s --data %s --out %s/sets-bad.gguf --steps 1 --seq 32";
    struct {
        const char *pool, *data, *extra, *says;
    } cases[] = {
        {"sets-bad-ok", data, "--train-tasks rev,nope", "no example of the --data files has task 'nope'"},
        {"sets-bad-ok", notask, "", "sets-bad-notask.jsonl: example 1 has no string \"task\""},
        {"sets-bad-ok", data, "--retrieve 1", "--retrieve 1 is out of range (2..16"},
        {"sets-bad-ok", data, "--retrieve 17", "--retrieve 17 is out of range"},
        {"sets-bad-ok", data, "--retrieve 5", "--retrieve 5 is out of range: the pool"},
        {"sets-bad-ok", data, "--lora-dropout 1.5", "--lora-dropout is a probability"},
        {"sets-bad-noweights", data, "", "has no adapter with weights"},
        {"sets-bad-foreign", data, "", "pool adapter mid"},
        {"sets-bad-ok", data, "--lora x.gguf", "exclude each other"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = snprintf(args, sizeof args, head, tmp, tmp, cases[c].pool, cases[c].data, tmp);
        snprintf(args + n, sizeof args - n, " %s", cases[c].extra);
        CHECKF(run_cli(args) != 0 && strstr(cli_err(), cases[c].says), "case %zu: %s", c, cli_err());
    }
    snprintf(args, sizeof args,
             "router train --base %s/router-tiny.gguf --lora a.gguf,b.gguf --retrieve 2 --data %s --out x.gguf", tmp,
             data);
    CHECK(run_cli(args) != 0 && strstr(cli_err(), "go with --pool"));
    rm_llama_free(wide);
    rm_llama_free(m);
}
