// test_embed_tf.c — transformer embedders: the BERT forward pass against the
// PyTorch reference (tests/ref/bert_ref.py wrote bert_tiny.gguf and its
// golden), pooling, tokenising and truncation, the projection head through an
// embedder file, and the llama embedder against the model run row by row.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "format/gguf.h"
#include "model/kvcache.h"
#include "model/llama.h"
#include "model/synth.h"
#include "retrieve/embed_tf.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BERT_GGUF "tests/ref/bert_tiny.gguf"
#define BERT_GOLDEN "tests/ref/bert_tiny.golden"

typedef struct golden_seq {
    int len;
    int32_t *ids;
    float *hidden, *mean, *cls; // [len][d], [d], [d]
} golden_seq;

typedef struct golden {
    int n, d;
    golden_seq *s;
    uint8_t *blob;
} golden;

static int golden_read(golden *g) {
    memset(g, 0, sizeof *g);
    size_t size = 0;
    if (rm_read_file(BERT_GOLDEN, (char **)&g->blob, &size)) return -1;
    size_t off = 8;
    uint32_t hdr[2];
    if (size < 16 || memcmp(g->blob, "RMBERTG1", 8)) return -1;
    memcpy(hdr, g->blob + off, 8);
    off += 8;
    g->n = (int)hdr[0];
    g->d = (int)hdr[1];
    if (g->n < 1 || g->n > 64 || g->d < 1 || g->d > 4096) return -1;
    g->s = calloc((size_t)g->n, sizeof *g->s);
    for (int i = 0; i < g->n; i++) {
        uint32_t len;
        if (off + 4 > size) return -1;
        memcpy(&len, g->blob + off, 4);
        off += 4;
        size_t need = len * 4 + ((size_t)len + 2) * (size_t)g->d * 4;
        if (len < 1 || len > 4096 || off + need > size) return -1;
        golden_seq *s = &g->s[i];
        s->len = (int)len;
        s->ids = malloc(len * sizeof *s->ids);
        s->hidden = malloc((size_t)len * (size_t)g->d * sizeof *s->hidden);
        s->mean = malloc((size_t)g->d * sizeof *s->mean);
        s->cls = malloc((size_t)g->d * sizeof *s->cls);
        memcpy(s->ids, g->blob + off, len * 4);
        off += len * 4;
        memcpy(s->hidden, g->blob + off, (size_t)len * (size_t)g->d * 4);
        off += (size_t)len * (size_t)g->d * 4;
        memcpy(s->mean, g->blob + off, (size_t)g->d * 4);
        off += (size_t)g->d * 4;
        memcpy(s->cls, g->blob + off, (size_t)g->d * 4);
        off += (size_t)g->d * 4;
    }
    return off == size ? 0 : -1;
}

static void golden_free(golden *g) {
    for (int i = 0; g->s && i < g->n; i++) {
        free(g->s[i].ids);
        free(g->s[i].hidden);
        free(g->s[i].mean);
        free(g->s[i].cls);
    }
    free(g->s);
    free(g->blob);
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void unit(float *v, int d) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += (double)v[i] * v[i];
    for (int i = 0; i < d; i++) v[i] = (float)(v[i] / sqrt(ss));
}

static double norm(const float *v, int d) {
    double ss = 0;
    for (int i = 0; i < d; i++) ss += (double)v[i] * v[i];
    return sqrt(ss);
}

// ---------------------------------------------------------------------------
// BERT against the reference

TEST(embed_tf_bert_golden) {
    golden g;
    REQUIRE(golden_read(&g) == 0);
    rm_bert *m = NULL;
    CHECK_OK(rm_bert_load(&m, BERT_GGUF));
    REQUIRE(m);
    const rm_bert_hparams *hp = rm_bert_hp(m);
    CHECK(hp->n_embd == g.d && hp->n_layer == 2 && hp->n_head == 4 && hp->n_ff == 64 && hp->n_ctx == 32);
    CHECK(hp->pooling == RM_POOL_MEAN);
    int d = g.d, total = 0;
    for (int i = 0; i < g.n; i++) total += g.s[i].len;
    float *h = malloc((size_t)total * d * sizeof *h), *pooled = malloc((size_t)g.n * d * sizeof *pooled);
    int32_t *all = malloc((size_t)total * sizeof *all);
    int *len = malloc((size_t)g.n * sizeof *len);
    // one sequence at a time, then all of them in one batch
    for (int i = 0, r = 0; i < g.n; r += g.s[i].len, i++) {
        golden_seq *s = &g.s[i];
        len[i] = s->len;
        memcpy(all + r, s->ids, (size_t)s->len * sizeof *all);
        CHECK_OK(rm_bert_forward(m, NULL, s->ids, &s->len, 1, h));
        double dh = max_abs_diff(h, s->hidden, (size_t)s->len * d);
        CHECKF(dh < 1e-4, "sequence %d (%d tokens): hidden states differ by %g", i, s->len, dh);
        rm_tf_pool(h, &s->len, 1, d, RM_POOL_MEAN, pooled);
        CHECKF(max_abs_diff(pooled, s->mean, d) < 1e-4, "sequence %d: mean pooling", i);
        rm_tf_pool(h, &s->len, 1, d, RM_POOL_CLS, pooled);
        CHECKF(max_abs_diff(pooled, s->cls, d) < 1e-4, "sequence %d: CLS pooling", i);
    }
    rm_threadpool *tp = rm_threadpool_create(2);
    CHECK_OK(rm_bert_forward(m, tp, all, len, g.n, h));
    rm_tf_pool(h, len, g.n, d, RM_POOL_MEAN, pooled);
    for (int i = 0, r = 0; i < g.n; r += g.s[i].len, i++) {
        CHECKF(max_abs_diff(h + (size_t)r * d, g.s[i].hidden, (size_t)g.s[i].len * d) < 1e-4, "batched: sequence %d",
               i);
        CHECKF(max_abs_diff(pooled + (size_t)i * d, g.s[i].mean, d) < 1e-4, "batched: sequence %d mean", i);
    }
    // bad input is refused, not read out of bounds
    int32_t bad[2] = {2, 100000};
    int two = 2, big = hp->n_ctx + 1;
    CHECK(rm_bert_forward(m, NULL, bad, &two, 1, h) == RM_EINVAL);
    CHECK(rm_bert_forward(m, NULL, all, &big, 1, h) == RM_EINVAL);
    rm_threadpool_free(tp);
    rm_bert_free(m);
    free(h);
    free(pooled);
    free(all);
    free(len);
    golden_free(&g);
}

TEST(embed_tf_bert_embedder) {
    golden g;
    REQUIRE(golden_read(&g) == 0);
    rm_embedder *e = NULL, *ecls = NULL;
    CHECK_OK(rm_bert_embedder_create(BERT_GGUF, RM_POOL_DEFAULT, "", &e));
    CHECK_OK(rm_bert_embedder_create(BERT_GGUF, RM_POOL_CLS, "", &ecls));
    REQUIRE(e && ecls);
    int d = g.d;
    CHECK(e->dim == d && !strcmp(e->ops->kind, "bert") && !strcmp(e->name, "bert:bert_tiny.gguf"));
    // the golden's first sequence is this text as WordPiece splits it
    const char *text = "The cats sat on the mat.";
    const tf_embed *t = e->impl;
    int32_t ids[64];
    int n = rm_tokenize(t->tok, text, strlen(text), 1, 0, ids, 64);
    CHECK(n == g.s[0].len && !memcmp(ids, g.s[0].ids, (size_t)n * sizeof *ids));
    float *v = malloc((size_t)d * sizeof *v), *want = malloc((size_t)d * sizeof *want);
    CHECK_OK(rm_embedder_embed(e, text, v));
    memcpy(want, g.s[0].mean, (size_t)d * sizeof *want);
    unit(want, d);
    CHECK(max_abs_diff(v, want, d) < 1e-4);
    CHECK_NEAR(norm(v, d), 1.0, 1e-5);
    CHECK_OK(rm_embedder_embed(ecls, text, v));
    memcpy(want, g.s[0].cls, (size_t)d * sizeof *want);
    unit(want, d);
    CHECK(max_abs_diff(v, want, d) < 1e-4);

    // a text longer than the model's 32 positions: the first 31 ids, then [SEP]
    char longtext[600] = "";
    for (int i = 0; i < 40; i++) strcat(longtext, i % 2 ? "dog ran " : "the cat ");
    int full = rm_tokenize(t->tok, longtext, strlen(longtext), 1, 0, ids, 64);
    CHECK(full == 82);
    ids[31] = 3;
    CHECK_OK(rm_tfembed_embed_ids(e, ids, 32, want));
    unit(want, d);
    CHECK_OK(rm_embedder_embed(e, longtext, v));
    CHECK(max_abs_diff(v, want, d) < 1e-6);
    CHECK(rm_tfembed_embed_ids(e, ids, 33, v) == RM_EINVAL);

    // several threads at once give what one gives
    const char *texts[6] = {text, longtext, "a red bird", "why?", "", "translate the review"};
    float *many = malloc(6 * (size_t)d * sizeof *many);
    CHECK_OK(rm_embedder_embed_many(e, texts, 6, many, 3));
    for (int i = 0; i < 6; i++) {
        CHECK_OK(rm_embedder_embed(e, texts[i], v));
        CHECKF(max_abs_diff(v, many + (size_t)i * d, d) == 0, "text %d differs across threads", i);
    }
    free(many);
    free(v);
    free(want);
    rm_embedder_free(e);
    rm_embedder_free(ecls);
    golden_free(&g);
}

TEST(embed_tf_bert_errors) {
    rm_embedder *e = NULL;
    rm_bert *m = NULL;
    CHECK(rm_bert_embedder_create("tests/ref/no-such.gguf", RM_POOL_DEFAULT, NULL, &e) != RM_OK && !e);
    CHECK(rm_bert_load(&m, BERT_GOLDEN) != RM_OK && !m); // not a GGUF file
    const char *sh = rm_test_shared();
    if (!sh) SKIP("../shared absent: no vocabulary-only GGUF to refuse");
    char p[1024];
    snprintf(p, sizeof p, "%s/data/tokenizers/ggml-vocab-bert-bge.gguf", sh);
    int rc = rm_bert_load(&m, p); // the right architecture but no weights
    CHECK(rc == RM_EFORMAT && !m);
    CHECK(strstr(rm_last_error(), "missing") != NULL);
}

// The reference model with its block matrices requantized to `type` (the
// embeddings, norms and biases kept), written to path.
static int requantize(const char *path, rm_type type) {
    gguf_file g;
    int rc = gguf_open(&g, BERT_GGUF);
    if (rc) return rc;
    gguf_writer *w = gguf_writer_new();
    void *bufs[64] = {0};
    char key[256];
    for (uint64_t i = 0; !rc && i < g.n_kv; i++) {
        gguf_str_copy(g.kv[i].key, key, sizeof key);
        rc = gguf_set_value(w, key, &g.kv[i].val);
    }
    for (uint64_t i = 0; !rc && i < g.n_tensors && i < 64; i++) {
        const gguf_tensor_info *ti = &g.tensors[i];
        gguf_str_copy(ti->name, key, sizeof key);
        if (ti->n_dims != 2 || strncmp(key, "blk.", 4)) {
            rc = gguf_add_tensor(w, key, (rm_type)ti->type, ti->n_dims, ti->ne, ti->data);
            continue;
        }
        int64_t in = ti->ne[0], rows = ti->ne[1];
        size_t src_row = rm_row_size((rm_type)ti->type, in), dst_row = rm_row_size(type, in);
        float *tmp = malloc((size_t)in * sizeof *tmp);
        uint8_t *q = bufs[i] = malloc(dst_row * (size_t)rows);
        for (int64_t r = 0; r < rows; r++) {
            rm_dequantize_row((rm_type)ti->type, (const uint8_t *)ti->data + (size_t)r * src_row, tmp, in);
            rm_quantize_row(type, tmp, q + (size_t)r * dst_row, in);
        }
        free(tmp);
        rc = gguf_add_tensor(w, key, type, 2, ti->ne, q);
    }
    if (!rc) rc = gguf_write(w, path);
    gguf_writer_free(w);
    for (int i = 0; i < 64; i++) free(bufs[i]);
    gguf_close(&g);
    return rc;
}

static double cosine(const float *a, const float *b, int d) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < d; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

// Quantized matrices go through the same rm_matmul: the pooled vectors stay
// close to the f32/f16 reference.
TEST(embed_tf_bert_quantized_weights) {
    golden g;
    REQUIRE(golden_read(&g) == 0);
    const rm_type types[] = {RM_TYPE_F32, RM_TYPE_BF16, RM_TYPE_Q8_0, RM_TYPE_Q4_0};
    const double min_cos[] = {0.999999, 0.99999, 0.9995, 0.98};
    float *h = malloc(64 * (size_t)g.d * sizeof *h), pooled[256];
    for (int k = 0; k < 4; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/bert-%s.gguf", rm_test_tmpdir(), rm_type_name(types[k]));
        CHECK_OK(requantize(path, types[k]));
        rm_bert *m = NULL;
        CHECK_OK(rm_bert_load(&m, path));
        if (!m) continue;
        for (int i = 0; i < g.n; i++) {
            CHECK_OK(rm_bert_forward(m, NULL, g.s[i].ids, &g.s[i].len, 1, h));
            rm_tf_pool(h, &g.s[i].len, 1, g.d, RM_POOL_MEAN, pooled);
            double c = cosine(pooled, g.s[i].mean, g.d);
            CHECKF(c >= min_cos[k], "%s weights, sequence %d: cosine %.7f to the reference", rm_type_name(types[k]), i,
                   c);
        }
        rm_bert_free(m);
    }
    free(h);
    golden_free(&g);
}

// ---------------------------------------------------------------------------
// The projection head and embedder files

TEST(embed_tf_head_file) {
    rm_embedder *e = NULL, *back = NULL;
    CHECK_OK(rm_bert_embedder_create(BERT_GGUF, RM_POOL_DEFAULT, "query: ", &e));
    REQUIRE(e);
    enum { OUT = 8, IN = 32 };
    float w[OUT * IN], raw[IN], v[OUT], v2[OUT];
    for (int i = 0; i < OUT * IN; i++) w[i] = (float)sin(i * 0.37);
    CHECK(rm_tfembed_set_head(e, w, OUT, IN + 1) == RM_EMISMATCH);
    // the head applies to the pooled vector: normalise(W raw)
    CHECK_OK(rm_tfembed_set_head(e, NULL, 0, 0));
    const char *text = "query: how big is the sun?";
    const tf_embed *t = e->impl;
    int32_t ids[64];
    int n = rm_tokenize(t->tok, text, strlen(text), 1, 0, ids, 64);
    REQUIRE(n > 2 && n < 32);
    CHECK_OK(rm_tfembed_embed_ids(e, ids, n, raw));
    CHECK_OK(rm_tfembed_set_head(e, w, OUT, IN));
    CHECK(e->dim == OUT);
    float want[OUT];
    for (int o = 0; o < OUT; o++) {
        double s = 0;
        for (int i = 0; i < IN; i++) s += (double)w[o * IN + i] * raw[i];
        want[o] = (float)s;
    }
    unit(want, OUT);
    CHECK_OK(rm_embedder_embed(e, "how big is the sun?", v)); // the prefix is the embedder's
    CHECK(max_abs_diff(v, want, OUT) < 1e-5);
    // saved and loaded: same kind, prefix, head and vectors
    char path[1024];
    snprintf(path, sizeof path, "%s/bert-head.emb", rm_test_tmpdir());
    CHECK_OK(rm_embedder_save(e, path));
    CHECK_OK(rm_embedder_load(path, &back));
    REQUIRE(back);
    CHECK(back->dim == OUT && !strcmp(back->ops->kind, "bert") && !strcmp(back->prefix, "query: "));
    CHECK_OK(rm_embedder_embed(back, "how big is the sun?", v2));
    CHECK(max_abs_diff(v, v2, OUT) == 0);
    rm_embedder_free(back);
    back = NULL;
    // the spec form opens the model directly
    CHECK_OK(rm_embedder_open("bert:" BERT_GGUF, &back));
    CHECK(back && back->dim == IN);
    rm_embedder_free(back);
    rm_embedder_free(e);
}

// ---------------------------------------------------------------------------
// The llama embedder: its vector is the mean of the model's final (normed)
// hidden states, here taken one row at a time.

TEST(embed_tf_llama) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-embed.gguf", rm_test_tmpdir());
    CHECK_OK(rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 5, path, NULL, NULL));
    rm_embedder *e = NULL;
    CHECK_OK(rm_llama_embedder_create(path, "", &e));
    REQUIRE(e);
    rm_llama *m = NULL;
    CHECK_OK(rm_llama_load(&m, path));
    REQUIRE(m && m->tok);
    int d = m->hp.n_embd;
    CHECK(e->dim == d && !strcmp(e->ops->kind, "llama"));
    // longer than one chunk of rows (128): the byte tokenizer gives a token per byte
    char text[400] = "";
    size_t want_len = rm_test_sanitized() ? 150 : 300;
    while (strlen(text) < want_len) strcat(text, "Once upon a time, a small embedder. ");
    int32_t *ids = malloc(512 * sizeof *ids);
    int n = rm_tokenize(m->tok, text, strlen(text), m->add_bos, 0, ids, 512);
    REQUIRE(n > 128 && n <= 512);
    rm_kvcache kv;
    REQUIRE(rm_kvcache_init(&kv, m->hp.n_layer, 1, n, m->hp.n_head_kv * m->hp.head_dim) == RM_OK);
    double *acc = calloc((size_t)d, sizeof *acc);
    float *h = malloc((size_t)d * sizeof *h), *logits = malloc((size_t)m->hp.n_vocab * sizeof *logits);
    float *logits2 = malloc((size_t)m->hp.n_vocab * sizeof *logits2);
    int32_t slot = 0;
    for (int i = 0; i < n; i++) {
        rm_batch b = {.n = 1, .token = ids + i, .pos = &i, .slot = &slot};
        CHECK_OK(rm_llama_forward_hidden(m, &kv, NULL, &b, NULL, logits, h));
        for (int k = 0; k < d; k++) acc[k] += h[k];
        if (i == n - 1) { // the hidden states are what the logits are computed from
            rm_tensor out = m->output;
            rm_matmul_ref(&out, h, d, logits2, m->hp.n_vocab, 1, 0);
            CHECK(max_abs_diff(logits, logits2, (size_t)m->hp.n_vocab) < 1e-3);
        }
    }
    float *want = malloc((size_t)d * sizeof *want), *v = malloc((size_t)d * sizeof *v);
    for (int k = 0; k < d; k++) want[k] = (float)(acc[k] / n);
    unit(want, d);
    CHECK_OK(rm_embedder_embed(e, text, v));
    double diff = max_abs_diff(v, want, (size_t)d);
    CHECKF(diff < 1e-4, "llama embedding vs row-by-row mean: %g", diff);
    CHECK_NEAR(norm(v, d), 1.0, 1e-5);
    // and through a saved embedder file
    rm_embedder *back = NULL;
    char epath[1024];
    snprintf(epath, sizeof epath, "%s/llama.emb", rm_test_tmpdir());
    CHECK_OK(rm_embedder_save(e, epath));
    CHECK_OK(rm_embedder_load(epath, &back));
    REQUIRE(back);
    CHECK_OK(rm_embedder_embed(back, text, want));
    CHECK(max_abs_diff(v, want, (size_t)d) == 0);
    rm_embedder_free(back);
    back = NULL;
    // the spec form, as --embedder takes it
    char spec[1100];
    snprintf(spec, sizeof spec, "llama:%s", path);
    CHECK_OK(rm_embedder_open(spec, &back));
    CHECK(back && back->dim == d && !strcmp(back->ops->kind, "llama") && !strcmp(back->name, "llama:tiny-embed.gguf"));
    rm_embedder_free(back);
    rm_kvcache_free(&kv);
    rm_llama_free(m);
    rm_embedder_free(e);
    free(ids);
    free(acc);
    free(h);
    free(logits);
    free(logits2);
    free(want);
    free(v);
}
