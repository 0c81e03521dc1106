// test_lora.c — LoRA adapters and heterogeneous batched composition.
//
// The dense reference is independent of the batched hook: rm_lora_merge bakes
// W + sum w s B A into an F32 copy of the base (dense row arithmetic), and
// that model runs through the plain forward pass with no hook. Fusion's
// reference uses the expansion (sum_a w_a s_a B_a)(sum_b w_b A_b) =
// sum_ab w_a w_b s_a B_a A_b, merged as k*k cross pairs.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/fp16.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "lora/batch.h"
#include "lora/cache.h"
#include "model/synth.h"

#include <stdlib.h>
#include <string.h>

#define SEQ_LEN 6

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", rm_test_tmpdir(), name); }

// The tiny synthetic llama (F32 or Q8_0), written once per type.
static rm_llama *tiny_model(rm_type type) {
    char path[512];
    snprintf(path, sizeof path, "%s/tiny-%s.gguf", rm_test_tmpdir(), rm_type_name(type));
    if (!rm_file_exists(path) && rm_synth_write(rm_synth_find("tiny"), type, 7, path, NULL, NULL)) return NULL;
    rm_llama *m = NULL;
    if (rm_llama_load(&m, path)) return NULL;
    return m;
}

static int32_t seq_token(int s, int i) { return (int32_t)((s * 37 + i * 11 + 5) % 256); }

// Runs sequences seqs[0..n) (each SEQ_LEN tokens, sequence s uses slot k for
// its index k in seqs and plan plans[k]) as one batch; logits[k][i][V].
static int run_batch(rm_llama *m, const rm_linear_hook *hook, int n, const int *seqs, const rm_lora_plan *const *plans,
                     float *logits) {
    rm_kvcache kv;
    int rc = rm_kvcache_init(&kv, m->hp.n_layer, n, SEQ_LEN, m->hp.n_head_kv * m->hp.head_dim);
    if (rc) return rc;
    int rows = n * SEQ_LEN;
    int32_t *tok = malloc(rows * sizeof(int32_t)), *pos = malloc(rows * sizeof(int32_t)),
            *slot = malloc(rows * sizeof(int32_t));
    const void **pl = malloc(rows * sizeof(void *));
    for (int k = 0; k < n; k++)
        for (int i = 0; i < SEQ_LEN; i++) {
            int r = k * SEQ_LEN + i;
            tok[r] = seq_token(seqs[k], i);
            pos[r] = i;
            slot[r] = k;
            pl[r] = plans ? plans[k] : NULL;
        }
    rm_batch b = {rows, tok, pos, slot, NULL, plans ? pl : NULL};
    rc = rm_llama_forward(m, &kv, NULL, &b, hook, logits);
    free(tok);
    free(pos);
    free(slot);
    free(pl);
    rm_kvcache_free(&kv);
    return rc;
}

// One sequence under plan p (through a fresh hook), or with no hook when p is NULL.
static int run_one(rm_llama *m, const rm_lora_plan *p, int seq, float *logits) {
    rm_lora_batch *bt = rm_lora_batch_new(NULL);
    if (!bt) return RM_ENOMEM;
    rm_linear_hook hook = rm_lora_batch_hook(bt);
    const rm_lora_plan *pl[1] = {p};
    int rc = run_batch(m, p ? &hook : NULL, 1, &seq, p ? pl : NULL, logits);
    if (!rc) rc = rm_lora_batch_status(bt);
    rm_lora_batch_free(bt);
    return rc;
}

// max |a - b| / max(1, max |b|)
static double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0, mx = 1;
    for (size_t i = 0; i < n; i++) {
        if (fabs(a[i] - b[i]) > d) d = fabs(a[i] - b[i]);
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    }
    return d / mx;
}

// Logits of sequence s under plan p (via the hook) and of the same sequence
// through the merged model (no hook): returns their relative difference.
static double vs_dense(rm_llama *m, const rm_lora_plan *p, int n, rm_lora *const *merge, const float *w,
                       const char *name) {
    char path[512];
    tmp_path(path, sizeof path, name);
    if (rm_lora_merge(m, n, merge, w, RM_TYPE_F32, path)) return 1e9;
    rm_llama *ref = NULL;
    if (rm_llama_load(&ref, path)) return 1e9;
    size_t V = (size_t)m->hp.n_vocab;
    float *la = malloc(SEQ_LEN * V * sizeof(float)), *lb = malloc(SEQ_LEN * V * sizeof(float));
    double d = 1e9;
    if (!run_one(m, p, 3, la) && !run_one(ref, NULL, 3, lb)) d = rel_diff(la, lb, SEQ_LEN * V);
    // the adapter must have changed something
    if (!run_one(m, NULL, 3, lb) && rel_diff(la, lb, SEQ_LEN * V) < 1e-3) d = 2e9;
    free(la);
    free(lb);
    rm_llama_free(ref);
    return d;
}

// A random adapter on every linear and its selection plan.
static int selection_of_random(rm_llama *m, int r, uint64_t seed, rm_lora **a, rm_lora_plan *p) {
    int rc = rm_lora_random(a, m, r, 0x7f, seed);
    if (!rc) rc = rm_lora_plan_init(p, RM_COMPOSE_SELECTION, 1, a, NULL, NULL);
    return rc;
}

// n random adapters of rank r on targets t, seeds seed, seed+1, ...
static int random_adapters(rm_llama *m, int n, int r, unsigned t, uint64_t seed, rm_lora **a) {
    for (int i = 0; i < n; i++) {
        int rc = rm_lora_random(&a[i], m, r, t, seed + (uint64_t)i);
        if (rc) return rc;
    }
    return RM_OK;
}

// ---------------------------------------------------------------- basics

TEST(lora_qk_permute_golden) {
    // head_dim 4: HF rows (0,1,2,3) pair (0,2), (1,3); GGUF order is 0,2,1,3.
    float v[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const float want[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    rm_lora_qk_permute(v, 2, 4, 0);
    CHECK(!memcmp(v, want, sizeof v));
    rm_lora_qk_permute(v, 2, 4, 1);
    for (int i = 0; i < 8; i++) CHECK(v[i] == (float)i);
    // head_dim 6: GGUF row 2i+j holds HF row 3j+i -> 0,3,1,4,2,5
    float u[6] = {0, 1, 2, 3, 4, 5};
    const float want6[6] = {0, 3, 1, 4, 2, 5};
    rm_lora_qk_permute(u, 1, 6, 0);
    CHECK(!memcmp(u, want6, sizeof u));
}

TEST(lora_parse_targets) {
    unsigned m;
    CHECK_OK(rm_lora_parse_targets("q,v", &m));
    CHECK(m == ((1u << RM_LIN_Q) | (1u << RM_LIN_V)));
    CHECK_OK(rm_lora_parse_targets("all", &m));
    CHECK(m == 0x7f);
    CHECK_OK(rm_lora_parse_targets("gate_proj,attn_output", &m));
    CHECK(m == ((1u << RM_LIN_GATE) | (1u << RM_LIN_O)));
    CHECK(rm_lora_parse_targets("q,zz", &m) == RM_EINVAL);
    rm_compose_mode cm;
    CHECK_OK(rm_compose_parse("fusion", &cm));
    CHECK(cm == RM_COMPOSE_FUSION);
    CHECK(rm_compose_parse("blend", &cm) == RM_EINVAL);
}

// ---------------------------------------------------------------- dense reference, per mode

TEST(lora_selection_equals_dense) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a = NULL;
    rm_lora_plan p;
    CHECK_OK(selection_of_random(m, 4, 1, &a, &p));
    REQUIRE(a);
    float w = 1.0f;
    double d = vs_dense(m, &p, 1, &a, &w, "sel.gguf");
    CHECKF(d < 2e-5, "selection vs dense: %g", d);
    rm_lora_plan_free(&p);
    rm_lora_free(a);
    rm_llama_free(m);
}

TEST(lora_mixture_equals_dense) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a[3] = {0};
    unsigned t[3] = {0x7f, (1u << RM_LIN_Q) | (1u << RM_LIN_V), 0x70};
    int ranks[3] = {2, 5, 8}; // ranks differ in a mixture
    for (int i = 0; i < 3; i++) CHECK_OK(rm_lora_random(&a[i], m, ranks[i], t[i], 10 + i));
    REQUIRE(a[0] && a[1] && a[2]);
    const float w[3] = {0.5f, 0.3f, 0.2f};
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_MIXTURE, 3, a, w, NULL));
    double d = vs_dense(m, &p, 3, a, w, "mix.gguf");
    CHECKF(d < 2e-5, "mixture vs dense: %g", d);
    rm_lora_plan_free(&p);
    // default weights are 1/k
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_MIXTURE, 3, a, NULL, NULL));
    const float third[3] = {1.0f / 3, 1.0f / 3, 1.0f / 3};
    d = vs_dense(m, &p, 3, a, third, "mix3.gguf");
    CHECKF(d < 2e-5, "mixture (1/k) vs dense: %g", d);
    rm_lora_plan_free(&p);
    for (int i = 0; i < 3; i++) rm_lora_free(a[i]);
    rm_llama_free(m);
}

// Cross pair (B of x, A of y) with x's scale, for the fusion expansion.
static rm_lora *cross_pair(const rm_lora *x, const rm_lora *y, const rm_llama *m) {
    rm_lora *c;
    if (rm_lora_new(&c, x->n_layer)) return NULL;
    for (int i = 0; i < x->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *mx = &x->mods[i], *my = &y->mods[i];
        if (!mx->r || !my->r) continue;
        rm_lora_mod_alloc(&c->mods[i], mx->r, mx->in, mx->out, mx->scale);
        memcpy(c->mods[i].A, my->A, (size_t)my->r * my->in * sizeof(float));
        memcpy(c->mods[i].Bt, mx->Bt, (size_t)mx->r * mx->out * sizeof(float));
    }
    c->qk_permuted = x->qk_permuted;
    if (rm_lora_bind(c, m)) {
        rm_lora_free(c);
        return NULL;
    }
    return c;
}

TEST(lora_fusion_equals_dense) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a[3] = {0};
    CHECK_OK(random_adapters(m, 3, 4, 0x7f, 20, a));
    REQUIRE(a[0] && a[1] && a[2]);
    a[1]->mods[0].scale *= 1.5f; // unequal scales: each rides on its B
    const float w[3] = {0.6f, 0.25f, 0.15f};
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_FUSION, 3, a, w, NULL));
    rm_lora *cross[9];
    float cw[9];
    for (int x = 0; x < 3; x++)
        for (int y = 0; y < 3; y++) {
            cross[x * 3 + y] = cross_pair(a[x], a[y], m);
            cw[x * 3 + y] = w[x] * w[y];
        }
    int ok = 1;
    for (int i = 0; i < 9; i++) ok &= cross[i] != NULL;
    REQUIRE(ok);
    double d = vs_dense(m, &p, 9, cross, cw, "fus.gguf");
    CHECKF(d < 2e-5, "fusion vs dense: %g", d);
    // and fusion differs from mixture (mean B)(mean A) != mean(B A)
    rm_lora_plan pm;
    CHECK_OK(rm_lora_plan_init(&pm, RM_COMPOSE_MIXTURE, 3, a, w, NULL));
    double dm = vs_dense(m, &pm, 9, cross, cw, "fus2.gguf");
    CHECKF(dm > 1e-4, "mixture should not equal fusion: %g", dm);
    rm_lora_plan_free(&pm);
    rm_lora_plan_free(&p);
    for (int i = 0; i < 9; i++) rm_lora_free(cross[i]);
    for (int i = 0; i < 3; i++) rm_lora_free(a[i]);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- batching

TEST(lora_batch_invariance_with_plans) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    enum { NA = 5, NS = 6 };
    rm_lora *a[NA] = {0};
    for (int i = 0; i < NA; i++) CHECK_OK(rm_lora_random(&a[i], m, 3 + (i % 2) * 3, i == 4 ? 0x5 : 0x7f, 40 + i));
    for (int i = 0; i < NA; i++) REQUIRE(a[i]);
    rm_fusion_cache *fc = rm_fusion_cache_new(4);
    rm_lora_plan p[NS];
    rm_lora *s0[1] = {a[0]}, *s1[3] = {a[1], a[2], a[4]}, *s2[3] = {a[0], a[2], a[4]}, *s3[2] = {a[3], a[0]},
            *s4[2] = {a[4], a[0]};
    CHECK_OK(rm_lora_plan_init(&p[0], RM_COMPOSE_SELECTION, 1, s0, NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&p[1], RM_COMPOSE_MIXTURE, 3, s1, NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&p[2], RM_COMPOSE_FUSION, 3, s2, NULL, fc));
    CHECK(rm_lora_plan_init(&p[3], RM_COMPOSE_FUSION, 2, s3, NULL, fc) == RM_EMISMATCH); // ranks 6 and 3
    CHECK_OK(rm_lora_plan_init(&p[3], RM_COMPOSE_MIXTURE, 2, s3, NULL, NULL));
    CHECK_OK(rm_lora_plan_init(&p[4], RM_COMPOSE_MIXTURE, 2, s4, (const float[]){0.9f, -0.4f}, NULL));
    const rm_lora_plan *plans[NS] = {&p[0], &p[1], &p[2], &p[3], &p[4], NULL}; // last row: base only
    int seqs[NS] = {0, 1, 2, 3, 4, 5};
    size_t V = (size_t)m->hp.n_vocab, per = SEQ_LEN * V;
    float *all = malloc(NS * per * sizeof(float)), *one = malloc(per * sizeof(float));
    rm_threadpool *tp = rm_threadpool_create(2);
    rm_lora_batch *bt = rm_lora_batch_new(tp);
    rm_linear_hook hook = rm_lora_batch_hook(bt);
    CHECK_OK(run_batch(m, &hook, NS, seqs, plans, all));
    CHECK_OK(rm_lora_batch_status(bt));
    for (int k = 0; k < NS; k++) {
        CHECK_OK(run_batch(m, &hook, 1, &seqs[k], &plans[k], one));
        double d = rel_diff(one, all + k * per, per);
        CHECKF(d == 0, "sequence %d alone vs in the batch: %g", k, d);
    }
    // a reversed batch order with other mates
    const rm_lora_plan *rev[3] = {&p[4], &p[2], &p[0]};
    int rs[3] = {4, 2, 0};
    CHECK_OK(run_batch(m, &hook, 3, rs, rev, all));
    for (int k = 0; k < 3; k++) {
        CHECK_OK(run_batch(m, &hook, 1, &rs[k], &rev[k], one));
        CHECKF(rel_diff(one, all + k * per, per) == 0, "reversed batch, sequence %d", rs[k]);
    }
    // the base-only row equals the model without any hook
    CHECK_OK(run_batch(m, NULL, 1, &seqs[5], NULL, one));
    CHECK_OK(run_batch(m, &hook, NS, seqs, plans, all));
    CHECK(rel_diff(one, all + 5 * per, per) == 0);
    rm_lora_batch_free(bt);
    rm_threadpool_free(tp);
    free(all);
    free(one);
    for (int i = 0; i < NS - 1; i++) rm_lora_plan_free(&p[i]);
    rm_fusion_cache_free(fc);
    for (int i = 0; i < NA; i++) rm_lora_free(a[i]);
    rm_llama_free(m);
}

TEST(lora_fusion_cache_shares_pairs) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a[2] = {0};
    CHECK_OK(random_adapters(m, 2, 2, 0x5, 60, a));
    REQUIRE(a[0] && a[1]);
    rm_fusion_cache *fc = rm_fusion_cache_new(1);
    rm_lora_plan p1, p2, p3;
    CHECK_OK(rm_lora_plan_init(&p1, RM_COMPOSE_FUSION, 2, a, NULL, fc));
    CHECK_OK(rm_lora_plan_init(&p2, RM_COMPOSE_FUSION, 2, a, NULL, fc));
    CHECK(p1.fused == p2.fused);
    CHECK_OK(rm_lora_plan_init(&p3, RM_COMPOSE_FUSION, 2, a, (const float[]){0.7f, 0.3f}, fc));
    CHECK(p3.fused != p1.fused);
    CHECK(rm_fusion_cache_size(fc) == 2);
    rm_lora_plan_free(&p1);
    rm_lora_plan_free(&p2);
    rm_lora_plan_free(&p3);
    CHECK(rm_fusion_cache_size(fc) == 1); // one idle entry kept
    // plan checks
    rm_lora *dup[2] = {a[0], a[0]};
    CHECK(rm_lora_plan_init(&p1, RM_COMPOSE_MIXTURE, 2, dup, NULL, NULL) == RM_EINVAL);
    CHECK(rm_lora_plan_init(&p1, RM_COMPOSE_SELECTION, 2, a, NULL, NULL) == RM_EINVAL);
    rm_fusion_cache_free(fc);
    for (int i = 0; i < 2; i++) rm_lora_free(a[i]);
    rm_llama_free(m);
}

TEST(lora_quantized_base) {
    rm_llama *m = tiny_model(RM_TYPE_Q8_0);
    REQUIRE(m);
    rm_lora *a = NULL;
    rm_lora_plan p;
    CHECK_OK(selection_of_random(m, 8, 70, &a, &p));
    REQUIRE(a);
    char path[512];
    tmp_path(path, sizeof path, "q8-merged-f32.gguf");
    float w = 1;
    CHECK_OK(rm_lora_merge(m, 1, &a, &w, RM_TYPE_F32, path));
    rm_llama *ref = NULL;
    CHECK_OK(rm_llama_load(&ref, path));
    REQUIRE(ref);
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *lh = malloc(per * sizeof(float)), *lb = malloc(per * sizeof(float)), *lr = malloc(per * sizeof(float));
    CHECK_OK(run_one(m, &p, 1, lh));
    CHECK_OK(run_one(m, NULL, 1, lb));
    CHECK_OK(run_one(ref, NULL, 1, lr));
    // q8 activations make it approximate; the hooked q8 model must be much
    // closer to the merged reference than the plain q8 model is.
    double dh = rel_diff(lh, lr, per), db = rel_diff(lb, lr, per);
    CHECKF(dh < 0.3 * db, "hooked %g vs base %g", dh, db);
    free(lh);
    free(lb);
    free(lr);
    rm_lora_plan_free(&p);
    rm_lora_free(a);
    rm_llama_free(ref);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- formats

TEST(lora_peft_and_gguf_give_same_logits) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a;
    CHECK_OK(rm_lora_random(&a, m, 4, 0x7f, 80));
    REQUIRE(a);
    a->mods[RM_LIN_V].scale *= 3.0f; // a module whose scale one alpha cannot express
    char gpath[512], pdir[512], gpath2[512];
    tmp_path(gpath, sizeof gpath, "ad.gguf");
    tmp_path(pdir, sizeof pdir, "ad-peft");
    tmp_path(gpath2, sizeof gpath2, "ad-peft.gguf");
    CHECK_OK(rm_lora_save_gguf(a, gpath));
    CHECK_OK(rm_lora_save_peft(a, pdir));
    rm_lora *g = NULL, *p = NULL, *g2 = NULL;
    CHECK_OK(rm_lora_load(&g, gpath));
    CHECK_OK(rm_lora_load(&p, pdir));
    REQUIRE(g && p);
    CHECK(g->qk_permuted == 1 && p->qk_permuted == 0);
    CHECK_OK(rm_lora_bind(g, m));
    CHECK_OK(rm_lora_bind(p, m));
    CHECK(p->qk_permuted == 1);
    // PEFT -> GGUF again (the convert path)
    CHECK_OK(rm_lora_save_gguf(p, gpath2));
    CHECK_OK(rm_lora_load(&g2, gpath2));
    REQUIRE(g2);
    CHECK_OK(rm_lora_bind(g2, m));
    rm_lora *set[4] = {a, g, p, g2};
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *ref = malloc(per * sizeof(float)), *got = malloc(per * sizeof(float));
    for (int i = 0; i < 4; i++) {
        rm_lora_plan pl;
        CHECK_OK(rm_lora_plan_init(&pl, RM_COMPOSE_SELECTION, 1, &set[i], NULL, NULL));
        CHECK_OK(run_one(m, &pl, 2, i == 0 ? ref : got));
        if (i) CHECKF(rel_diff(got, ref, per) < 1e-5, "adapter %d: %g", i, rel_diff(got, ref, per));
        rm_lora_plan_free(&pl);
    }
    free(ref);
    free(got);
    rm_lora_free(a);
    rm_lora_free(g);
    rm_lora_free(p);
    rm_lora_free(g2);
    rm_llama_free(m);
}

// A hand-written PEFT directory: F16 tensors, rsLoRA, patterns, regex targets.
typedef struct fixture {
    const char *config;
    int layer_a, layer_b; // which layers get q_proj / v_proj
    int r_q;              // rank of layer 1 q_proj
    int in_q;             // lora_A width of q_proj (256 fits the base)
    float poison;         // written into A[0] of v_proj
    const char *extra;    // an extra tensor name, or NULL
} fixture;

static uint16_t g_fx_a[8][300], g_fx_b[512][8];

static int write_fixture(const char *dir, const fixture *fx) {
    if (rm_mkdirs(dir)) return -1;
    char path[600];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (rm_write_file_atomic(path, fx->config, strlen(fx->config))) return -1;
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 300; i++) g_fx_a[j][i] = rm_f32_to_f16(0.01f * (float)((i * 7 + j * 3) % 19 - 9));
    for (int o = 0; o < 512; o++)
        for (int j = 0; j < 8; j++) g_fx_b[o][j] = rm_f32_to_f16(0.02f * (float)((o * 5 + j) % 13 - 6));
    static uint16_t poisoned[4][256];
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 256; i++) poisoned[j][i] = g_fx_a[j][i];
    poisoned[0][0] = rm_f32_to_f16(fx->poison);
    st_writer *w = st_writer_new();
    int rc = 0;
    char name[200];
    // q_proj of layer_a (rank r_q), v_proj of layer_b (rank 4, out 128)
    int64_t qa[2] = {fx->r_q, fx->in_q}, qb[2] = {256, fx->r_q}, va[2] = {4, 256}, vb[2] = {128, 4};
    static uint16_t qa_buf[8 * 300];
    for (int j = 0; j < fx->r_q; j++)
        for (int i = 0; i < fx->in_q; i++) qa_buf[j * fx->in_q + i] = g_fx_a[j][i];
    static uint16_t qb_buf[256 * 8], vb_buf[128 * 4];
    for (int o = 0; o < 256; o++)
        for (int j = 0; j < fx->r_q; j++) qb_buf[o * fx->r_q + j] = g_fx_b[o][j];
    for (int o = 0; o < 128; o++)
        for (int j = 0; j < 4; j++) vb_buf[o * 4 + j] = g_fx_b[o][j];
    snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.q_proj.lora_A.weight", fx->layer_a);
    rc |= st_writer_add(w, name, ST_F16, 2, qa, qa_buf);
    snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.q_proj.lora_B.weight", fx->layer_a);
    rc |= st_writer_add(w, name, ST_F16, 2, qb, qb_buf);
    snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.v_proj.lora_A.weight", fx->layer_b);
    rc |= st_writer_add(w, name, ST_F16, 2, va, poisoned);
    snprintf(name, sizeof name, "base_model.model.model.layers.%d.self_attn.v_proj.lora_B.weight", fx->layer_b);
    rc |= st_writer_add(w, name, ST_F16, 2, vb, vb_buf);
    if (fx->extra) rc |= st_writer_add(w, fx->extra, ST_F16, 2, va, poisoned);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!rc) rc = st_write(w, path);
    st_writer_free(w);
    return rc;
}

static const char *g_good_config =
    "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"use_rslora\": true,"
    " \"target_modules\": \"model\\\\.layers\\\\.\\\\d+\\\\.self_attn\\\\.(q|v)_proj\","
    " \"rank_pattern\": {\"q_proj\": 2}, \"alpha_pattern\": {\"layers\\\\.2\\\\.self_attn\\\\.v_proj\": 2},"
    " \"modules_to_save\": null, \"bias\": \"none\", \"fan_in_fan_out\": false}";

TEST(lora_peft_fixture) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    char dir[512];
    tmp_path(dir, sizeof dir, "fx-good");
    fixture fx = {g_good_config, 1, 2, 2, 256, 0.5f, NULL};
    REQUIRE(write_fixture(dir, &fx) == 0);
    rm_lora *a = NULL;
    CHECK_OK(rm_lora_load(&a, dir));
    REQUIRE(a);
    CHECK(a->n_layer == 3);
    CHECK(rm_lora_targets(a) == ((1u << RM_LIN_Q) | (1u << RM_LIN_V)));
    const rm_lora_mod *q = &a->mods[1 * RM_LIN_COUNT + RM_LIN_Q], *v = &a->mods[2 * RM_LIN_COUNT + RM_LIN_V];
    CHECK(q->r == 2 && q->in == 256 && q->out == 256);
    CHECK(v->r == 4 && v->in == 256 && v->out == 128);
    CHECK_NEAR(q->scale, 8.0 / sqrt(2.0), 1e-6); // rsLoRA: alpha / sqrt(r)
    CHECK_NEAR(v->scale, 2.0 / 2.0, 1e-6);       // alpha_pattern 2, r 4
    CHECK_NEAR(q->A[1 * 256 + 5], rm_f16_to_f32(g_fx_a[1][5]), 0);
    CHECK_NEAR(v->A[0], 0.5, 0);
    CHECK_NEAR(q->Bt[1 * 256 + 7], rm_f16_to_f32(g_fx_b[7][1]), 0); // B[7][1]
    CHECK_OK(rm_lora_bind(a, m));
    // q rows now in GGUF order: head 0 (head_dim 32), GGUF row 1 = HF row 16
    CHECK_NEAR(q->Bt[1 * 256 + 1], rm_f16_to_f32(g_fx_b[16][1]), 0);
    CHECK_NEAR(v->Bt[1 * 128 + 1], rm_f16_to_f32(g_fx_b[1][1]), 0); // v untouched
    rm_lora_free(a);
    rm_llama_free(m);
}

// Loads (and binds) a fixture; returns the status, the message in msg.
static int try_fixture(rm_llama *m, const char *name, const fixture *fx, char *msg, size_t cap) {
    char dir[512];
    tmp_path(dir, sizeof dir, name);
    if (write_fixture(dir, fx)) return 999;
    rm_lora *a = NULL;
    int rc = rm_lora_load(&a, dir);
    if (!rc) rc = rm_lora_bind(a, m);
    snprintf(msg, cap, "%s", rc ? rm_last_error() : "");
    rm_lora_free(a);
    return rc;
}

TEST(lora_rejects_bad_adapters) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    char msg[1024];
    struct {
        fixture fx;
        int code;
        const char *needle;
    } cases[] = {
        {{g_good_config, 1, 2, 2, 256, NAN, NULL}, RM_EFORMAT, "NaN"},
        {{g_good_config, 1, 2, 2, 256, INFINITY, NULL}, RM_EFORMAT, "NaN/Inf"},
        {{g_good_config, 1, 2, 2, 300, 0.5f, NULL}, RM_EMISMATCH, "does not match the base"},
        {{g_good_config, 1, 9, 2, 256, 0.5f, NULL}, RM_EMISMATCH, "base model has 4 layers"},
        {{"{\"r\": 4, \"lora_alpha\": 8, \"use_dora\": true}", 1, 2, 2, 256, 0.5f, NULL}, RM_EUNSUPPORTED, "DoRA"},
        {{"{\"r\": 4, \"modules_to_save\": [\"lm_head\"]}", 1, 2, 2, 256, 0.5f, NULL},
         RM_EUNSUPPORTED,
         "modules_to_save"},
        {{"{\"r\": 4, \"peft_type\": \"IA3\"}", 1, 2, 2, 256, 0.5f, NULL}, RM_EUNSUPPORTED, "IA3"},
        {{"{\"r\": 4, \"target_modules\": [\"q_proj\"]}", 1, 2, 2, 256, 0.5f, NULL},
         RM_EFORMAT,
         "not in target_modules"},
        {{g_good_config, 1, 2, 2, 256, 0.5f, "base_model.model.model.embed_tokens.lora_embedding_A"},
         RM_EUNSUPPORTED,
         "embedding"},
        {{g_good_config, 1, 2, 2, 256, 0.5f, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"},
         RM_EUNSUPPORTED,
         "DoRA"},
        {{g_good_config, 1, 2, 2, 256, 0.5f, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.bias"},
         RM_EFORMAT,
         "unexpected tensor"},
        {{"{\"r\": 4, \"target_modules\": \"(\"}", 1, 2, 2, 256, 0.5f, NULL}, RM_EFORMAT, "bad pattern"},
        {{g_good_config, 1, 2, 2, 256, 0.5f, "base_model.model.lm_head.lora_A.weight"}, RM_EUNSUPPORTED, "lm_head"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "fx-bad-%zu", i);
        int rc = try_fixture(m, name, &cases[i].fx, msg, sizeof msg);
        CHECKF(rc == cases[i].code && strstr(msg, cases[i].needle), "case %zu: rc %d, message '%s' (want %d, '%s')", i,
               rc, msg, cases[i].code, cases[i].needle);
    }
    // GGUF: a model file is not an adapter; an adapter for another architecture
    rm_lora *a = NULL;
    int rc = rm_lora_load(&a, m->path);
    CHECK(rc == RM_EFORMAT && strstr(rm_last_error(), "not an adapter"));
    CHECK_OK(rm_lora_random(&a, m, 2, 0x1, 90));
    REQUIRE(a);
    strcpy(a->arch, "qwen2");
    char path[512];
    tmp_path(path, sizeof path, "qwen.gguf");
    CHECK_OK(rm_lora_save_gguf(a, path));
    rm_lora *b = NULL;
    CHECK_OK(rm_lora_load(&b, path));
    REQUIRE(b);
    rc = rm_lora_bind(b, m);
    CHECK(rc == RM_EMISMATCH && strstr(rm_last_error(), "architecture 'qwen2'"));
    CHECK(b->base == NULL && b->qk_permuted == 0); // unchanged
    rm_lora_free(b);
    rm_lora_free(a);
    rm_llama_free(m);
}

// ---------------------------------------------------------------- CLI

static int run_cli(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s >%s/cli.out 2>&1", rm_test_bin(), args, rm_test_tmpdir());
    return system(cmd);
}

// The stdout+stderr of the last run_cli, NUL-terminated; returns its length.
static int read_cli_out(char *buf, size_t cap) {
    char path[512];
    tmp_path(path, sizeof path, "cli.out");
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    return (int)n;
}

TEST(lora_cli_info_convert_merge) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a = NULL;
    CHECK_OK(rm_lora_random(&a, m, 3, 0x7f, 95));
    REQUIRE(a);
    char g[512], dir[512], g2[512], merged[512], args[3000];
    tmp_path(g, sizeof g, "cli.gguf");
    tmp_path(dir, sizeof dir, "cli-peft");
    tmp_path(g2, sizeof g2, "cli2.gguf");
    tmp_path(merged, sizeof merged, "cli-merged.gguf");
    CHECK_OK(rm_lora_save_gguf(a, g));
    snprintf(args, sizeof args, "lora convert %s %s", g, dir);
    CHECK(run_cli(args) != 0); // q/k order needs the base
    snprintf(args, sizeof args, "lora convert %s %s --base %s", g, dir, m->path);
    CHECK(run_cli(args) == 0);
    snprintf(args, sizeof args, "lora convert %s %s --base %s", dir, g2, m->path);
    CHECK(run_cli(args) == 0);
    snprintf(args, sizeof args, "lora info %s --base %s", dir, m->path);
    CHECK(run_cli(args) == 0);
    snprintf(args, sizeof args, "lora merge --base %s --lora %s:0.5 --type f32 %s", m->path, g2, merged);
    CHECK(run_cli(args) == 0);
    // the merged file equals a half-weight selection through the hook
    rm_lora *b = NULL;
    CHECK_OK(rm_lora_load(&b, g2));
    REQUIRE(b);
    CHECK_OK(rm_lora_bind(b, m));
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_MIXTURE, 1, &b, (const float[]){0.5f}, NULL));
    rm_llama *ref = NULL;
    CHECK_OK(rm_llama_load(&ref, merged));
    REQUIRE(ref);
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *lh = malloc(per * sizeof(float)), *lr = malloc(per * sizeof(float));
    CHECK_OK(run_one(m, &p, 4, lh));
    CHECK_OK(run_one(ref, NULL, 4, lr));
    CHECKF(rel_diff(lh, lr, per) < 2e-5, "cli merge vs hook: %g", rel_diff(lh, lr, per));
    snprintf(args, sizeof args, "lora info %s/nothing-here", rm_test_tmpdir());
    CHECK(run_cli(args) != 0);
    // generate --lora A:0.5 picks the same greedy tokens as the merged model
    char out1[8192] = "", out2[8192] = "";
    snprintf(args, sizeof args, "generate -m %s --prompt-ids '5 6 7' -n 12 --temp 0 --ids --lora %s:0.5 -t 1", m->path,
             dir);
    CHECK(run_cli(args) == 0 && read_cli_out(out1, sizeof out1) > 0);
    snprintf(args, sizeof args, "generate -m %s --prompt-ids '5 6 7' -n 12 --temp 0 --ids -t 1", merged);
    CHECK(run_cli(args) == 0 && read_cli_out(out2, sizeof out2) > 0);
    CHECKF(!strcmp(out1, out2), "'%s' vs '%s'", out1, out2);
    snprintf(args, sizeof args, "generate -m %s --prompt-ids '5' -n 2 --lora %s --lora %s --compose selection", m->path,
             g, g2);
    CHECK(run_cli(args) != 0);
    free(lh);
    free(lr);
    rm_lora_plan_free(&p);
    rm_lora_free(b);
    rm_lora_free(a);
    rm_llama_free(ref);
    rm_llama_free(m);
}

TEST(lora_hook_refuses_mixed_shapes) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a[2] = {0};
    CHECK_OK(random_adapters(m, 2, 2, 0x1, 99, a));
    REQUIRE(a[0] && a[1]);
    a[1]->mods[0].in = 128; // as if bound to another model
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_MIXTURE, 2, a, NULL, NULL));
    float *lg = malloc(SEQ_LEN * (size_t)m->hp.n_vocab * sizeof(float));
    int rc = run_one(m, &p, 0, lg);
    CHECK(rc == RM_EMISMATCH && strstr(rm_last_error(), "different shapes"));
    a[1]->mods[0].in = 256;
    free(lg);
    rm_lora_plan_free(&p);
    for (int i = 0; i < 2; i++) rm_lora_free(a[i]);
    rm_llama_free(m);
}

TEST(lora_peft_fan_in_fan_out_transposed) {
    // fan_in_fan_out: lora_A stored [in, r], lora_B [r, out]
    char dir[512], path[600];
    tmp_path(dir, sizeof dir, "fx-fifo");
    REQUIRE(rm_mkdirs(dir) == 0);
    const char *cfg = "{\"r\": 2, \"lora_alpha\": 4, \"fan_in_fan_out\": true, \"target_modules\": [\"v_proj\"]}";
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    REQUIRE(rm_write_file_atomic(path, cfg, strlen(cfg)) == 0);
    static float at[256][2], bt[2][128];
    for (int i = 0; i < 256; i++)
        for (int j = 0; j < 2; j++) at[i][j] = (float)(i * 2 + j);
    for (int j = 0; j < 2; j++)
        for (int o = 0; o < 128; o++) bt[j][o] = (float)(1000 + j * 128 + o);
    st_writer *w = st_writer_new();
    int64_t sa[2] = {256, 2}, sb[2] = {2, 128};
    CHECK_OK(st_writer_add(w, "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", ST_F32, 2, sa, at));
    CHECK_OK(st_writer_add(w, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", ST_F32, 2, sb, bt));
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    CHECK_OK(st_write(w, path));
    st_writer_free(w);
    rm_lora *a = NULL;
    CHECK_OK(rm_lora_load(&a, dir));
    REQUIRE(a);
    const rm_lora_mod *v = &a->mods[RM_LIN_V];
    CHECK(v->r == 2 && v->in == 256 && v->out == 128);
    CHECK_NEAR(v->scale, 2.0, 0);
    CHECK_NEAR(v->A[1 * 256 + 7], at[7][1], 0);  // A[j=1][i=7]
    CHECK_NEAR(v->Bt[1 * 128 + 5], bt[1][5], 0); // B[o=5][j=1]
    rm_lora_free(a);
}

TEST(lora_f16_mirrors) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a[3] = {0};
    CHECK_OK(random_adapters(m, 3, 4, 0x7f, 120, a));
    REQUIRE(a[0] && a[1] && a[2]);
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_MIXTURE, 3, a, NULL, NULL));
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *l32 = malloc(per * sizeof(float)), *l16 = malloc(per * sizeof(float)), *lb = malloc(per * sizeof(float));
    CHECK_OK(run_one(m, &p, 3, l32));
    CHECK_OK(rm_lora_make_f16(a[0]));
    CHECK_OK(rm_lora_make_f16(a[2]));
    CHECK_OK(rm_lora_make_f16(a[2])); // twice: no-op
    CHECK(a[0]->mods[0].A16 && !a[1]->mods[0].A16);
    CHECK_OK(run_one(m, &p, 3, l16));
    double d = rel_diff(l16, l32, per);
    CHECKF(d < 5e-4 && d > 0, "f16 mirrors vs f32: %g", d);
    // batch invariance holds with mirrors too
    const rm_lora_plan *pl[2] = {NULL, &p};
    int seqs[2] = {1, 3};
    float *two = malloc(2 * per * sizeof(float));
    rm_lora_batch *bt = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(bt);
    CHECK_OK(run_batch(m, &hook, 2, seqs, pl, two));
    CHECK(rel_diff(two + per, l16, per) == 0);
    // the merged reference of the same adapters is close to the f16 path
    float w[3] = {1.0f / 3, 1.0f / 3, 1.0f / 3};
    char path[512];
    tmp_path(path, sizeof path, "f16-ref.gguf");
    CHECK_OK(rm_lora_merge(m, 3, a, w, RM_TYPE_F32, path));
    rm_llama *ref = NULL;
    CHECK_OK(rm_llama_load(&ref, path));
    REQUIRE(ref);
    CHECK_OK(run_one(ref, NULL, 3, lb));
    CHECKF(rel_diff(l16, lb, per) < 5e-4, "f16 vs dense: %g", rel_diff(l16, lb, per));
    rm_lora_batch_free(bt);
    free(two);
    free(l32);
    free(l16);
    free(lb);
    rm_lora_plan_free(&p);
    for (int i = 0; i < 3; i++) rm_lora_free(a[i]);
    rm_llama_free(ref);
    rm_llama_free(m);
}

// 8-bit mirrors: the hook prefers them to f16 ones; the logits move from the
// f32 path by a small part of what the adapters change, and batch invariance
// stays bitwise.
TEST(lora_q8_mirrors) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    rm_lora *a[3] = {0};
    CHECK_OK(random_adapters(m, 3, 4, 0x7f, 121, a));
    REQUIRE(a[0] && a[1] && a[2]);
    rm_lora_plan p;
    CHECK_OK(rm_lora_plan_init(&p, RM_COMPOSE_MIXTURE, 3, a, NULL, NULL));
    size_t per = SEQ_LEN * (size_t)m->hp.n_vocab;
    float *base = malloc(per * sizeof(float)), *l32 = malloc(per * sizeof(float)), *l8 = malloc(per * sizeof(float));
    float *two = malloc(2 * per * sizeof(float));
    REQUIRE(base && l32 && l8 && two);
    CHECK_OK(run_one(m, NULL, 3, base));
    CHECK_OK(run_one(m, &p, 3, l32));
    CHECK_OK(rm_lora_make_f16(a[0])); // both: the 8-bit ones are read
    CHECK_OK(rm_lora_make_q8(a[0]));
    CHECK_OK(rm_lora_make_q8(a[1]));
    CHECK_OK(rm_lora_make_q8(a[1])); // twice: no-op
    CHECK_OK(rm_lora_make_f16(a[2])); // and one with f16 only
    CHECK(a[0]->mods[0].A8 && a[1]->mods[0].A8 && !a[2]->mods[0].A8);
    CHECK_OK(run_one(m, &p, 3, l8));
    double effect = rel_diff(l32, base, per), d = rel_diff(l8, l32, per);
    CHECKF(d > 0 && d < 0.02 * effect, "8-bit vs f32: %g, the adapters' effect %g", d, effect);
    const rm_lora_plan *pl[2] = {NULL, &p};
    int seqs[2] = {1, 3};
    rm_lora_batch *bt = rm_lora_batch_new(NULL);
    rm_linear_hook hook = rm_lora_batch_hook(bt);
    CHECK_OK(run_batch(m, &hook, 2, seqs, pl, two));
    CHECK(rel_diff(two + per, l8, per) == 0);
    rm_lora_batch_free(bt);
    free(base);
    free(l32);
    free(l8);
    free(two);
    rm_lora_plan_free(&p);
    for (int i = 0; i < 3; i++) rm_lora_free(a[i]);
    rm_llama_free(m);
}

// The adapter cache under a byte budget: least recently used adapters nobody
// holds are evicted; held ones never are (the cache then stays over budget
// until they are given back); counters add up.
TEST(lora_cache_lru_budget) {
    rm_llama *m = tiny_model(RM_TYPE_F32);
    REQUIRE(m);
    char path[4][512];
    size_t bytes = 0;
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "cache-%d.gguf", i);
        tmp_path(path[i], sizeof path[i], name);
        rm_lora *a = NULL;
        REQUIRE(rm_lora_random(&a, m, 4, (1u << RM_LIN_Q) | (1u << RM_LIN_V), (uint64_t)i + 1) == RM_OK);
        bytes = rm_lora_bytes(a);
        CHECK_OK(rm_lora_save_gguf(a, path[i]));
        rm_lora_free(a);
    }
    rm_lora_cache c = {.m = m};
    rm_lora_cache_set_budget(&c, bytes * 5 / 2); // room for two
    rm_lora *l[4] = {0}, *again = NULL;
    static const char *names[4] = {"a0", "a1", "a2", "a3"};
    CHECK_OK(rm_lora_cache_get(&c, names[0], path[0], &l[0]));
    CHECK_OK(rm_lora_cache_get(&c, names[1], path[1], &l[1]));
    rm_lora_cache_release(&c, l[0]);
    rm_lora_cache_release(&c, l[1]);
    CHECK_OK(rm_lora_cache_get(&c, names[0], path[0], &again)); // a hit: a0 is now the most recent
    CHECK(again == l[0]);
    rm_lora_cache_release(&c, again);
    CHECK_OK(rm_lora_cache_get(&c, names[2], path[2], &l[2])); // a1, the least recent, goes
    rm_lora_cache_stats st = rm_lora_cache_stats_get(&c);
    CHECK(st.hits == 1 && st.misses == 3 && st.loads == 3 && st.evictions == 1 && st.loaded == 2 && st.in_use == 1);
    CHECK(st.bytes == 2 * bytes && st.bytes <= c.budget);
    // a0 and a2 held: loading a3 cannot make room and goes over budget.
    CHECK_OK(rm_lora_cache_get(&c, names[0], path[0], &again));
    CHECK_OK(rm_lora_cache_get(&c, names[3], path[3], &l[3]));
    st = rm_lora_cache_stats_get(&c);
    CHECK(st.loaded == 3 && st.in_use == 3 && st.evictions == 1 && st.bytes == 3 * bytes);
    // Given back, the least recent unheld (a2) goes; a0, still held, stays valid.
    rm_lora_cache_release(&c, l[2]);
    rm_lora_cache_release(&c, l[3]);
    st = rm_lora_cache_stats_get(&c);
    CHECK(st.loaded == 2 && st.in_use == 1 && st.evictions == 2 && st.bytes <= c.budget);
    CHECK(again == l[0] && again->n_layer == m->hp.n_layer);
    // a1 comes back on demand (a miss and a load); a bad path is a miss, not a load.
    rm_lora_cache_release(&c, again);
    CHECK_OK(rm_lora_cache_get(&c, names[1], path[1], &l[1]));
    rm_lora_cache_release(&c, l[1]);
    CHECK(rm_lora_cache_get(&c, "missing", "/nonexistent/adapter.gguf", &again) != RM_OK && !again);
    CHECKF(strstr(rm_last_error(), "adapter 'missing' refused"), "%s", rm_last_error());
    st = rm_lora_cache_stats_get(&c);
    CHECK(st.misses == 6 && st.loads == 5 && st.hits == 2 && st.in_use == 0 && st.bytes <= c.budget);
    rm_lora_cache_free(&c);
    rm_llama_free(m);
}
