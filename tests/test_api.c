// test_api.c — the public API (include/ramole.h) end to end: load, info,
// greedy generation from ids against the llama2.c reference, error paths.
#include "testing.h"
#include "ramole.h"
#include "base/file.h"
#include "format/llama2c.h"
#include "lora/adapter.h"
#include "lora/router.h"
#include "model/llama.h"
#include "model/sampler.h"
#include "model/synth.h"

#include <math.h>
#include <stdio.h>

#include <stdlib.h>
#include <string.h>

typedef struct collected {
    int32_t ids[300];
    int n;
} collected;

static int collect(void *ctx, const char *piece, int len, int32_t id) {
    (void)piece;
    (void)len;
    collected *c = ctx;
    if (id >= 0 && c->n < 300) c->ids[c->n++] = id;
    return 0;
}

TEST(api_generate_ids_matches_reference) {
    const char *sh = rm_test_shared();
    if (!sh) SKIP("../shared absent: no stories260K reference");
    char bin[512], gguf[512], ids_path[512];
    snprintf(bin, sizeof bin, "%s/data/stories260K/stories260K.bin", sh);
    snprintf(ids_path, sizeof ids_path, "%s/data/stories260K/greedy_from_bos.ids", sh);
    snprintf(gguf, sizeof gguf, "%s/api-stories.gguf", rm_test_tmpdir());
    REQUIRE(llama2c_convert(bin, gguf) == RM_OK);
    rm_model_params mp = rm_model_default_params();
    mp.n_threads = 2;
    mp.n_ctx = 300;
    rm_model *m = NULL;
    CHECK_OK(rm_model_load(gguf, &mp, &m));
    REQUIRE(m);
    rm_model_info info;
    rm_model_get_info(m, &info);
    CHECK(!strcmp(info.arch, "llama") && info.n_vocab == 512 && info.n_layer == 5 && info.n_head_kv == 4);
    CHECK(info.has_tokenizer == 0);
    rm_generate_params gp = rm_generate_default_params();
    gp.temperature = 0;
    gp.n_predict = 256;
    collected c = {{0}, 0};
    int32_t bos = 1;
    rm_generate_stats st;
    CHECK_OK(rm_model_generate_ids(m, &bos, 1, &gp, collect, &c, &st));
    CHECK(c.n == 256 && st.n_generated == 256 && st.n_prompt == 1);
    char *text;
    size_t len;
    REQUIRE(rm_read_file(ids_path, &text, &len) == RM_OK);
    char *p = text;
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += (int32_t)strtol(p, &p, 10) != c.ids[i];
    CHECKF(bad == 0, "%d of 256 ids differ from the reference", bad);
    free(text);
    // kv_f16: the tokens of the model's own greedy loop over an f16 cache
    rm_model_params mh = mp;
    mh.kv_f16 = 1;
    rm_model *mf = NULL;
    CHECK_OK(rm_model_load(gguf, &mh, &mf));
    collected cf = {{0}, 0};
    gp.n_predict = 64;
    CHECK_OK(rm_model_generate_ids(mf, &bos, 1, &gp, collect, &cf, NULL));
    rm_model_free(mf);
    rm_llama *lm = NULL;
    REQUIRE(rm_llama_load(&lm, gguf) == RM_OK);
    rm_kvcache kv;
    CHECK_OK(rm_kvcache_init_type(&kv, lm->hp.n_layer, 1, 300, lm->hp.n_head_kv * lm->hp.head_dim, RM_KV_F16));
    float logits[512];
    int32_t tok = bos, pos = 0, slot = 0, same = cf.n == 64;
    for (int i = 0; i < 64 && same; i++, pos++) {
        rm_batch b = {1, &tok, &pos, &slot, NULL, NULL};
        CHECK_OK(rm_llama_forward(lm, &kv, NULL, &b, NULL, logits));
        tok = rm_argmax(logits, 512);
        same = tok == cf.ids[i];
    }
    CHECKF(same, "kv_f16: the API's tokens are not the f16 cache's greedy ones");
    rm_kvcache_free(&kv);
    rm_llama_free(lm);
    gp.n_predict = 256;
    // errors: text prompt without a tokenizer, out-of-vocabulary id, context overflow
    CHECK(rm_model_generate(m, "hello", &gp, NULL, NULL, NULL) == RM_EUNSUPPORTED);
    int32_t bad_id = 512;
    CHECK(rm_model_generate_ids(m, &bad_id, 1, &gp, NULL, NULL, NULL) == RM_EINVAL);
    CHECK(strstr(rm_last_error(), "vocabulary") != NULL);
    gp.n_predict = 400;
    CHECK(rm_model_generate_ids(m, &bos, 1, &gp, NULL, NULL, NULL) == RM_EFULL);
    rm_model_free(m);
    CHECK(rm_model_load("/nonexistent.gguf", &mp, &m) == RM_EIO && m == NULL);
    CHECK(strstr(rm_last_error(), "/nonexistent.gguf") != NULL);
}

// ---- adapters, compositions and the pool through the public API -------------------

// ids the CLI prints for `ramole generate ARGS --ids` (an independent assembly of the same parts)
static int cli_ids(const char *args, int32_t *ids, int cap) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s generate %s --ids 2>/dev/null", rm_test_bin(), args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    int n = 0;
    long v;
    while (n < cap && fscanf(p, "%ld", &v) == 1) ids[n++] = (int32_t)v;
    return pclose(p) == 0 ? n : -1;
}

static int same_ids(const collected *c, const int32_t *ids, int n) {
    return c->n == n && n > 0 && !memcmp(c->ids, ids, (size_t)n * sizeof *ids);
}

// The files the adapter tests share, made with the internal API: a tiny model,
// two random adapters and a random router for it, and a model of another
// shape (a wider feed-forward) with an adapter of its own.
typedef struct api_files {
    char model[512], w[2][512], router[512], other[512], wother[512];
} api_files;

static int make_files(api_files *f) {
    const char *tmp = rm_test_tmpdir();
    snprintf(f->model, sizeof f->model, "%s/api-tiny.gguf", tmp);
    snprintf(f->other, sizeof f->other, "%s/api-other.gguf", tmp);
    snprintf(f->router, sizeof f->router, "%s/api-router.gguf", tmp);
    snprintf(f->wother, sizeof f->wother, "%s/api-other-ad.gguf", tmp);
    rm_synth_shape wide = *rm_synth_find("tiny");
    wide.n_ff *= 2;
    int rc = rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 7, f->model, NULL, NULL);
    if (!rc) rc = rm_synth_write(&wide, RM_TYPE_F32, 8, f->other, NULL, NULL);
    rm_llama *lm = NULL, *lo = NULL;
    if (!rc) rc = rm_llama_load(&lm, f->model);
    if (!rc) rc = rm_llama_load(&lo, f->other);
    for (int i = 0; i < 2 && !rc; i++) {
        rm_lora *l = NULL;
        snprintf(f->w[i], sizeof f->w[i], "%s/api-ad%d.gguf", tmp, i);
        rc = rm_lora_random(&l, lm, 4, 0x7f, 40 + (uint64_t)i);
        if (!rc) rc = rm_lora_save_gguf(l, f->w[i]);
        rm_lora_free(l);
    }
    rm_lora *r = NULL, *lx = NULL;
    if (!rc) rc = rm_lora_random(&r, lm, 2, 0x7f, 99);
    if (!rc) rc = rm_router_save(r, lm, 2, f->router);
    if (!rc) rc = rm_lora_random(&lx, lo, 4, 0x7f, 5);
    if (!rc) rc = rm_lora_save_gguf(lx, f->wother);
    rm_lora_free(r);
    rm_lora_free(lx);
    rm_llama_free(lm);
    rm_llama_free(lo);
    return rc;
}

// The model of f through the public API, with its two adapters and router.
typedef struct api_loaded {
    rm_model *m;
    rm_adapter *ad[2], *router;
} api_loaded;

static int load_all(const api_files *f, api_loaded *l) {
    rm_model_params mp = rm_model_default_params();
    mp.n_threads = 1;
    mp.n_ctx = 64;
    *l = (api_loaded){0};
    int rc = rm_model_load(f->model, &mp, &l->m);
    if (!rc) rc = rm_model_load_adapter(l->m, f->w[0], &l->ad[0]);
    if (!rc) rc = rm_model_load_adapter(l->m, f->w[1], &l->ad[1]);
    if (!rc) rc = rm_model_load_router(l->m, f->router, &l->router);
    return rc;
}

static void free_all(api_loaded *l) {
    rm_adapter_free(l->ad[0]);
    rm_adapter_free(l->ad[1]);
    rm_adapter_free(l->router);
    rm_model_free(l->m);
}

TEST(api_adapters_checked_against_base) {
    api_files f;
    api_loaded l;
    REQUIRE(make_files(&f) == RM_OK);
    CHECK_OK(load_all(&f, &l));
    REQUIRE(l.ad[0] && l.ad[1] && l.router);
    rm_adapter *bad = NULL;
    CHECK(rm_model_load_adapter(l.m, f.wother, &bad) != RM_OK && bad == NULL); // made for another base
    CHECK(rm_model_load_router(l.m, f.w[0], &bad) != RM_OK && strstr(rm_last_error(), "router"));
    free_all(&l);
}

// Each composition equals `ramole generate` with the same adapters.
TEST(api_compositions_as_cli) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    api_files f;
    api_loaded l;
    REQUIRE(make_files(&f) == RM_OK);
    CHECK_OK(load_all(&f, &l));
    REQUIRE(l.ad[0] && l.ad[1] && l.router);
    int32_t prompt[4] = {256, 70, 71, 72}; // BOS of the synthetic byte tokenizer, as the CLI adds it
    const char *cli[5] = {"", "--lora %s", "--lora %s --lora %s", "--lora %s --lora %s --compose fusion",
                          "--lora %s --lora %s --compose router --router %s"};
    const int n_ad[5] = {0, 1, 2, 2, 2}, comp[5] = {RM_COMPOSITION_AUTO, RM_COMPOSITION_AUTO, RM_COMPOSITION_AUTO,
                                                    RM_COMPOSITION_FUSION, RM_COMPOSITION_ROUTER};
    int32_t base_ids[16];
    int n_base = 0;
    for (int c = 0; c < 5; c++) {
        rm_generate_params gp = rm_generate_default_params();
        gp.temperature = 0;
        gp.n_predict = 10;
        gp.adapters = (const rm_adapter *const *)l.ad;
        gp.n_adapters = n_ad[c];
        gp.composition = comp[c];
        gp.router = l.router;
        collected got = {{0}, 0};
        CHECK_OK(rm_model_generate_ids(l.m, prompt, 4, &gp, collect, &got, NULL));
        char extra[2048], args[4096];
        snprintf(extra, sizeof extra, cli[c], f.w[0], f.w[1], f.router);
        snprintf(args, sizeof args, "-m %s --prompt-ids '70 71 72' -n 10 --temp 0 -t 1 %s", f.model, extra);
        int32_t want[16];
        int n = cli_ids(args, want, 16);
        CHECKF(same_ids(&got, want, n), "composition %d: %d ids from the API, %d from the CLI", c, got.n, n);
        if (c == 0) {
            memcpy(base_ids, want, sizeof want);
            n_base = n;
        } else if (c != 3) {
            CHECKF(!same_ids(&got, base_ids, n_base), "composition %d changed nothing", c);
        }
        // (fusion of two random adapters, (mean B)(mean A), is too small here to move the greedy ids)
    }
    free_all(&l);
}

TEST(api_bad_plans_refused) {
    api_files f;
    api_loaded l;
    REQUIRE(make_files(&f) == RM_OK);
    CHECK_OK(load_all(&f, &l));
    REQUIRE(l.ad[0] && l.ad[1]);
    int32_t prompt[4] = {256, 70, 71, 72};
    rm_generate_params gp = rm_generate_default_params();
    gp.adapters = (const rm_adapter *const *)l.ad;
    gp.n_adapters = 2;
    gp.composition = RM_COMPOSITION_ROUTER; // no router
    CHECK(rm_model_generate_ids(l.m, prompt, 4, &gp, NULL, NULL, NULL) == RM_EINVAL &&
          strstr(rm_last_error(), "router"));
    gp.composition = RM_COMPOSITION_SELECTION; // two adapters
    CHECK(rm_model_generate_ids(l.m, prompt, 4, &gp, NULL, NULL, NULL) != RM_OK);
    gp.n_adapters = 17;
    CHECK(rm_model_generate_ids(l.m, prompt, 4, &gp, NULL, NULL, NULL) == RM_EINVAL);
    free_all(&l);
}

// The pool: made by the CLI, filled and searched through the API.
TEST(api_pool_add_and_retrieve) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    api_files f;
    api_loaded l;
    REQUIRE(make_files(&f) == RM_OK);
    CHECK_OK(load_all(&f, &l));
    REQUIRE(l.m);
    const char *tmp = rm_test_tmpdir();
    char corpus[600], pool_dir[600], cmd[2048];
    snprintf(corpus, sizeof corpus, "%s/api-corpus.jsonl", tmp);
    snprintf(pool_dir, sizeof pool_dir, "%s/api-pool", tmp);
    const char *german[3] = {"Translate to German: the house is red.", "Translate to German: good morning.",
                             "Translate to German: where is the station?"};
    const char *senti[3] = {"Review: a wonderful film. Is this review positive or negative?",
                            "Review: boring plot. Is this review positive or negative?",
                            "Review: the soup was cold. Is this review positive or negative?"};
    FILE *fp = fopen(corpus, "w");
    REQUIRE(fp);
    for (int i = 0; i < 3; i++) fprintf(fp, "{\"inputs\": \"%s\"}\n{\"inputs\": \"%s\"}\n", german[i], senti[i]);
    fclose(fp);
    rm_adapter_pool *pool = NULL;
    CHECK(rm_adapter_pool_open(pool_dir, &pool) == RM_ENOTFOUND && pool == NULL &&
          strstr(rm_last_error(), "not a pool"));
    snprintf(cmd, sizeof cmd, "%s pool init --pool %s --corpus %s 2>/dev/null", rm_test_bin(), pool_dir, corpus);
    REQUIRE(system(cmd) == 0);
    REQUIRE(rm_adapter_pool_open(pool_dir, &pool) == RM_OK);
    CHECK_OK(rm_adapter_pool_add(pool, l.m, "german", f.w[0], german, 3));
    CHECK_OK(rm_adapter_pool_add(pool, l.m, "sentiment", f.w[1], senti, 3));
    CHECK(rm_adapter_pool_add(pool, l.m, "wrong", f.wother, senti, 3) != RM_OK &&
          strstr(rm_last_error(), "'wrong' refused"));
    rm_retrieved r[4];
    int n = rm_adapter_pool_retrieve(pool, "Review: the film was dull. Is this review positive or negative?", 4,
                                     -INFINITY, r);
    CHECK(n == 2); // "wrong" was not stored
    CHECK(n >= 1 && !strcmp(r[0].name, "sentiment") && !strcmp(r[0].weights, f.w[1]) && r[0].score > r[1].score);
    CHECK(rm_adapter_pool_retrieve(pool, "Translate to German: the cat sleeps.", 1, -INFINITY, r) == 1 &&
          !strcmp(r[0].name, "german"));
    CHECK(rm_adapter_pool_retrieve(pool, "Translate to German: the cat sleeps.", 1, 1000.0f, r) == 0);
    CHECK(rm_adapter_pool_retrieve(pool, NULL, 1, -INFINITY, r) == RM_EINVAL);
    CHECK(rm_adapter_pool_add(pool, l.m, "x", NULL, senti, 3) == RM_EINVAL);
    rm_adapter_pool_close(pool);
    // reopened, the adapters are still there (and the CLI agrees on the best one)
    REQUIRE(rm_adapter_pool_open(pool_dir, &pool) == RM_OK);
    CHECK(rm_adapter_pool_retrieve(pool, "Review: great acting. Is this review positive or negative?", 1, -INFINITY,
                                   r) == 1 &&
          !strcmp(r[0].name, "sentiment"));
    rm_adapter_pool_close(pool);
    free_all(&l);
}
