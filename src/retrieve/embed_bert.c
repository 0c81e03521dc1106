// embed_bert.c — BERT-family sentence encoders from GGUF (llama.cpp's "bert"
// architecture) and the "bert" embedder kind.
//
// Shapes: n = rows (tokens of all sequences), d = n_embd, H = heads,
// hd = d/H, f = n_ff. A block (post-LayerNorm, as in the original BERT):
//   x = LN(x + Attn(x) Wo^T + bo)       attention within the row's sequence, no mask
//   x = LN(x + GELU(x Wu^T + bu) Wd^T + bd)
#include "retrieve/embed_tf.h"
#include "base/err.h"
#include "format/gguf.h"
#include "model/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { W_Q, W_K, W_V, W_O, W_UP, W_DOWN, W_COUNT };
static const char *const w_names[W_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_up", "ffn_down"};

enum { V_BQ, V_BK, V_BV, V_BO, V_LN1_W, V_LN1_B, V_BUP, V_BDOWN, V_LN2_W, V_LN2_B, V_COUNT };
static const char *const v_names[V_COUNT] = {
    "attn_q.bias",           "attn_k.bias", "attn_v.bias",   "attn_output.bias",         "attn_output_norm.weight",
    "attn_output_norm.bias", "ffn_up.bias", "ffn_down.bias", "layer_output_norm.weight", "layer_output_norm.bias"};

typedef struct bert_layer {
    rm_tensor w[W_COUNT]; // W[out,in] views into the file
    float *v[V_COUNT];    // biases and norms, f32 copies
} bert_layer;

struct rm_bert {
    rm_bert_hparams hp;
    gguf_file gguf;
    rm_tokenizer *tok; // NULL when the file has none (ids only)
    rm_tensor tok_embd, pos_embd;
    float *type0;           // row 0 of token_types (every token is type 0), or NULL
    float *norm_w, *norm_b; // token_embd_norm
    bert_layer *layers;
};

// ---------------------------------------------------------------- loading

static int hp_u32(const rm_bert *m, const char *suffix, uint32_t *out, int required) {
    char key[128];
    snprintf(key, sizeof key, "bert.%s", suffix);
    int rc = gguf_get_u32(&m->gguf, key, out);
    if (rc == RM_ENOTFOUND && required) return rm_errorf(RM_EFORMAT, "%s: missing metadata key %s", m->gguf.path, key);
    return rc == RM_ENOTFOUND ? RM_OK : rc;
}

static int read_hparams(rm_bert *m) {
    gguf_str arch;
    if (gguf_get_str(&m->gguf, "general.architecture", &arch) != RM_OK || !gguf_str_eq(arch, "bert"))
        return rm_errorf(RM_EUNSUPPORTED, "%s: not a BERT model (general.architecture must be \"bert\")", m->gguf.path);
    uint32_t d = 0, nl = 0, nh = 0, ff = 0, ctx = 0, pool = RM_POOL_MEAN;
    int rc;
    if ((rc = hp_u32(m, "embedding_length", &d, 1)) || (rc = hp_u32(m, "block_count", &nl, 1)) ||
        (rc = hp_u32(m, "attention.head_count", &nh, 1)) || (rc = hp_u32(m, "feed_forward_length", &ff, 1)) ||
        (rc = hp_u32(m, "context_length", &ctx, 0)) || (rc = hp_u32(m, "pooling_type", &pool, 0)))
        return rc;
    if (d == 0 || nl == 0 || nh == 0 || ff == 0 || d > 65536 || nl > 1024 || ff > (1u << 20) || d % nh)
        return rm_errorf(RM_EFORMAT, "%s: implausible hyperparameters (embd %u, layers %u, heads %u, ff %u)",
                         m->gguf.path, d, nl, nh, ff);
    if (pool == 0) pool = RM_POOL_MEAN; // "none": an embedder needs one vector
    if (pool > RM_POOL_LAST)
        return rm_errorf(RM_EUNSUPPORTED, "%s: pooling_type %u is not supported (1 mean, 2 cls, 3 last)", m->gguf.path,
                         pool);
    rm_bert_hparams *hp = &m->hp;
    hp->n_embd = (int)d;
    hp->n_layer = (int)nl;
    hp->n_head = (int)nh;
    hp->n_ff = (int)ff;
    hp->n_ctx = (int)ctx; // 0: the rows of position_embd
    hp->pooling = (rm_pooling)pool;
    hp->eps = 1e-12f;
    rc = gguf_get_f32(&m->gguf, "bert.attention.layer_norm_epsilon", &hp->eps);
    if (rc && rc != RM_ENOTFOUND) return rc;
    if (!(hp->eps >= 0)) return rm_errorf(RM_EFORMAT, "%s: bad layer_norm_epsilon", m->gguf.path);
    return RM_OK;
}

// A 2-D tensor [ne1 rows of ne0] (ne1 < 0: any row count).
static int get_matrix(rm_bert *m, const char *name, int64_t ne0, int64_t ne1, rm_tensor *out, int required) {
    const gguf_tensor_info *ti = gguf_find_tensor(&m->gguf, name);
    if (!ti) return required ? rm_errorf(RM_EFORMAT, "%s: missing tensor %s", m->gguf.path, name) : RM_ENOTFOUND;
    int rc = gguf_tensor_view(&m->gguf, ti, out);
    if (rc) return rc;
    int64_t rows = out->n_dims >= 2 ? out->ne[1] : 1;
    if (out->ne[0] != ne0 || (ne1 >= 0 && rows != ne1) || out->ne[2] != 1 || out->ne[3] != 1)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld]", m->gguf.path, name,
                         (long long)out->ne[0], (long long)rows, (long long)ne0, (long long)ne1);
    return RM_OK;
}

// A 1-D tensor of n values (or row 0 of a matrix of rows of n), as f32.
static int get_vector(rm_bert *m, const char *name, int64_t n, float **out, int required) {
    rm_tensor t;
    int rc = get_matrix(m, name, n, -1, &t, required);
    if (rc) return rc;
    if (!(*out = malloc((size_t)n * sizeof **out))) return rm_errorf(RM_ENOMEM, "%s: out of memory", m->gguf.path);
    rm_dequantize_row(t.type, t.data, *out, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite((*out)[i])) return rm_errorf(RM_EFORMAT, "%s: tensor %s holds NaN/Inf", m->gguf.path, name);
    return RM_OK;
}

static int load_weights(rm_bert *m) {
    rm_bert_hparams *hp = &m->hp;
    int64_t d = hp->n_embd, f = hp->n_ff;
    int rc;
    if ((rc = get_matrix(m, "token_embd.weight", d, -1, &m->tok_embd, 1)) ||
        (rc = get_matrix(m, "position_embd.weight", d, -1, &m->pos_embd, 1)) ||
        (rc = get_vector(m, "token_embd_norm.weight", d, &m->norm_w, 1)) ||
        (rc = get_vector(m, "token_embd_norm.bias", d, &m->norm_b, 1)))
        return rc;
    rc = get_vector(m, "token_types.weight", d, &m->type0, 0);
    if (rc && rc != RM_ENOTFOUND) return rc;
    hp->n_vocab = (int)m->tok_embd.ne[1];
    int rows = (int)m->pos_embd.ne[1];
    if (hp->n_ctx == 0 || hp->n_ctx > rows) hp->n_ctx = rows;
    if (!(m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers))) return rm_errorf(RM_ENOMEM, "out of memory");
    const int64_t shape[W_COUNT][2] = {{d, d}, {d, d}, {d, d}, {d, d}, {d, f}, {f, d}};
    char name[96];
    for (int l = 0; l < hp->n_layer; l++) {
        bert_layer *L = &m->layers[l];
        for (int w = 0; w < W_COUNT; w++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, w_names[w]);
            if ((rc = get_matrix(m, name, shape[w][0], shape[w][1], &L->w[w], 1))) return rc;
        }
        for (int v = 0; v < V_COUNT; v++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, v_names[v]);
            if ((rc = get_vector(m, name, v == V_BUP ? f : d, &L->v[v], 1))) return rc;
        }
    }
    return RM_OK;
}

int rm_bert_load(rm_bert **out, const char *path) {
    *out = NULL;
    rm_bert *m = calloc(1, sizeof *m);
    if (!m) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = gguf_open(&m->gguf, path);
    if (rc) {
        free(m);
        return rc;
    }
    rc = read_hparams(m);
    if (!rc) rc = load_weights(m);
    if (!rc && gguf_find(&m->gguf, "tokenizer.ggml.tokens")) {
        rc = rm_tokenizer_from_gguf(&m->tok, &m->gguf);
        if (!rc && rm_tokenizer_n_vocab(m->tok) > m->hp.n_vocab)
            rc = rm_errorf(RM_EFORMAT, "%s: tokenizer has %d tokens but the model only %d", path,
                           rm_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
    }
    if (rc) {
        rm_bert_free(m);
        return rc;
    }
    *out = m;
    return RM_OK;
}

void rm_bert_free(rm_bert *m) {
    if (!m) return;
    for (int l = 0; m->layers && l < m->hp.n_layer; l++)
        for (int v = 0; v < V_COUNT; v++) free(m->layers[l].v[v]);
    free(m->layers);
    free(m->type0);
    free(m->norm_w);
    free(m->norm_b);
    rm_tokenizer_free(m->tok);
    gguf_close(&m->gguf);
    free(m);
}

const rm_bert_hparams *rm_bert_hp(const rm_bert *m) { return &m->hp; }
const rm_tokenizer *rm_bert_tokenizer(const rm_bert *m) { return m->tok; }

// ---------------------------------------------------------------- forward

// x[n,d] = (x - mean) / sqrt(var + eps) * w + b, row by row, in place
static void layernorm(float *x, const float *w, const float *b, int n, int d, float eps) {
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * d;
        double s = 0, ss = 0;
        for (int i = 0; i < d; i++) s += xr[i];
        double mean = s / d;
        for (int i = 0; i < d; i++) ss += (xr[i] - mean) * (xr[i] - mean);
        float inv = (float)(1.0 / sqrt(ss / d + eps));
        for (int i = 0; i < d; i++) xr[i] = ((float)(xr[i] - mean)) * inv * w[i] + b[i];
    }
}

// x[count] = x * Phi(x), the exact (erf) GELU, in place
static void gelu(float *x, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

typedef struct bert_attn {
    const float *q, *k, *v; // [n, d]
    float *out;             // [n, d]
    const int *start, *len; // [n] first row and length of each row's sequence
    float *scores;          // [nth][max_len]
    int n, H, hd, max_len;
} bert_attn;

// out[r, h] = softmax(q[r,h] . K[seq(r), h] / sqrt(hd)) V[seq(r), h], one (row, head) per task
static void bert_attention_task(void *ctx, int ith, int nth) {
    const bert_attn *j = ctx;
    int d = j->H * j->hd;
    long begin, end;
    rm_split_range((long)j->n * j->H, ith, nth, &begin, &end);
    float *sc = j->scores + (size_t)ith * j->max_len;
    float scale = 1.0f / sqrtf((float)j->hd);
    for (long task = begin; task < end; task++) {
        int r = (int)(task / j->H), h = (int)(task % j->H), s0 = j->start[r], L = j->len[r];
        const float *q = j->q + (size_t)r * d + (size_t)h * j->hd;
        float mx = -INFINITY, sum = 0.0f;
        for (int t = 0; t < L; t++) {
            sc[t] = rm_dot_f32(q, j->k + (size_t)(s0 + t) * d + (size_t)h * j->hd, j->hd) * scale;
            if (sc[t] > mx) mx = sc[t];
        }
        for (int t = 0; t < L; t++) sum += sc[t] = expf(sc[t] - mx);
        float *o = j->out + (size_t)r * d + (size_t)h * j->hd;
        memset(o, 0, (size_t)j->hd * sizeof *o);
        for (int t = 0; t < L; t++) rm_axpy_f32(o, sc[t] / sum, j->v + (size_t)(s0 + t) * d + (size_t)h * j->hd, j->hd);
    }
}

// x[n,d] = LN(token embedding + position embedding + type-0 embedding)
static void bert_embed_rows(const rm_bert *m, const int32_t *ids, const int *start, float *x, float *tmp, int n) {
    int d = m->hp.n_embd;
    size_t trow = rm_row_size(m->tok_embd.type, d), prow = rm_row_size(m->pos_embd.type, d);
    for (int r = 0; r < n; r++) {
        float *xr = x + (size_t)r * d;
        rm_dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)ids[r] * trow, xr, d);
        rm_dequantize_row(m->pos_embd.type, (const uint8_t *)m->pos_embd.data + (size_t)(r - start[r]) * prow, tmp, d);
        for (int i = 0; i < d; i++) xr[i] += tmp[i] + (m->type0 ? m->type0[i] : 0.0f);
    }
    layernorm(x, m->norm_w, m->norm_b, n, d, m->hp.eps);
}

int rm_bert_forward(const rm_bert *m, rm_threadpool *tp, const int32_t *ids, const int *len, int n_seq, float *x) {
    const rm_bert_hparams *hp = &m->hp;
    int n = 0, max_len = 0;
    if (n_seq < 1) return rm_errorf(RM_EINVAL, "bert forward: no sequences");
    for (int s = 0; s < n_seq; s++) {
        if (len[s] < 1 || len[s] > hp->n_ctx)
            return rm_errorf(RM_EINVAL, "bert forward: sequence %d has %d tokens (1..%d)", s, len[s], hp->n_ctx);
        if (len[s] > max_len) max_len = len[s];
        if (n > (1 << 24) - len[s]) return rm_errorf(RM_EINVAL, "bert forward: batch too large");
        n += len[s];
    }
    for (int r = 0; r < n; r++)
        if (ids[r] < 0 || ids[r] >= hp->n_vocab)
            return rm_errorf(RM_EINVAL, "bert forward: row %d: token id %d out of range [0, %d)", r, ids[r],
                             hp->n_vocab);
    int d = hp->n_embd, f = hp->n_ff, nth = tp ? rm_threadpool_size(tp) : 1;
    size_t nd = (size_t)n * d;
    float *buf = malloc((4 * nd + (size_t)n * f + (size_t)nth * max_len + (size_t)d) * sizeof *buf);
    int *rows = malloc(2 * (size_t)n * sizeof *rows);
    if (!buf || !rows) {
        free(buf);
        free(rows);
        return rm_errorf(RM_ENOMEM, "bert forward: cannot allocate scratch for %d rows", n);
    }
    float *q = buf, *k = q + nd, *v = k + nd, *att = v + nd, *ff = att + nd, *scores = ff + (size_t)n * f;
    float *tmp = scores + (size_t)nth * max_len;
    int *start = rows, *slen = rows + n;
    for (int s = 0, r = 0; s < n_seq; r += len[s], s++)
        for (int t = 0; t < len[s]; t++) {
            start[r + t] = r;
            slen[r + t] = len[s];
        }

    bert_embed_rows(m, ids, start, x, tmp, n);
    for (int l = 0; l < hp->n_layer; l++) {
        const bert_layer *L = &m->layers[l];
        rm_matmul(tp, &L->w[W_Q], x, d, q, d, n, 0);
        rm_matmul(tp, &L->w[W_K], x, d, k, d, n, 0);
        rm_matmul(tp, &L->w[W_V], x, d, v, d, n, 0);
        rm_bias_add(q, L->v[V_BQ], n, d);
        rm_bias_add(k, L->v[V_BK], n, d);
        rm_bias_add(v, L->v[V_BV], n, d);
        bert_attn job = {q, k, v, att, start, slen, scores, n, hp->n_head, d / hp->n_head, max_len};
        rm_threadpool_run(tp, bert_attention_task, &job);
        rm_matmul(tp, &L->w[W_O], att, d, x, d, n, 1); // x += att Wo^T
        rm_bias_add(x, L->v[V_BO], n, d);
        layernorm(x, L->v[V_LN1_W], L->v[V_LN1_B], n, d, hp->eps);
        rm_matmul(tp, &L->w[W_UP], x, d, ff, f, n, 0);
        rm_bias_add(ff, L->v[V_BUP], n, f);
        gelu(ff, (size_t)n * f);
        rm_matmul(tp, &L->w[W_DOWN], ff, f, x, d, n, 1); // x += gelu(.) Wd^T
        rm_bias_add(x, L->v[V_BDOWN], n, d);
        layernorm(x, L->v[V_LN2_W], L->v[V_LN2_B], n, d, hp->eps);
    }
    free(buf);
    free(rows);
    return RM_OK;
}

void rm_tf_pool(const float *hidden, const int *len, int n_seq, int d, rm_pooling pool, float *out) {
    for (int s = 0, r = 0; s < n_seq; r += len[s], s++) {
        float *o = out + (size_t)s * d;
        const float *h = hidden + (size_t)r * d;
        if (pool == RM_POOL_CLS || pool == RM_POOL_LAST) {
            memcpy(o, h + (pool == RM_POOL_LAST ? (size_t)(len[s] - 1) * d : 0), (size_t)d * sizeof *o);
            continue;
        }
        for (int i = 0; i < d; i++) {
            double sum = 0;
            for (int t = 0; t < len[s]; t++) sum += h[(size_t)t * d + i];
            o[i] = (float)(sum / len[s]);
        }
    }
}

// ---------------------------------------------------------------- the embedder kind

static int bert_pooled(const tf_embed *t, const int32_t *ids, int n, float *raw) {
    const rm_bert *m = t->model;
    float *h = malloc((size_t)n * (size_t)t->n_embd * sizeof *h);
    if (!h) return rm_errorf(RM_ENOMEM, "bert embed: out of memory");
    int rc = rm_bert_forward(m, NULL, ids, &n, 1, h);
    if (!rc) rm_tf_pool(h, &n, 1, t->n_embd, t->pooling, raw);
    free(h);
    return rc;
}

static int bert_open_model(tf_embed *t) {
    rm_bert *m = NULL;
    int rc = rm_bert_load(&m, t->path);
    if (rc) return rc;
    t->model = m;
    if (!m->tok) return rm_errorf(RM_EFORMAT, "%s: no tokenizer in the file (an embedder needs one)", t->path);
    t->n_embd = m->hp.n_embd;
    t->n_ctx = m->hp.n_ctx;
    t->tok = m->tok;
    t->add_bos = 1; // WordPiece: [CLS] ... [SEP]
    t->end_id = rm_tokenizer_eos(m->tok);
    t->pooled = bert_pooled;
    if (t->pooling == RM_POOL_DEFAULT) t->pooling = m->hp.pooling;
    return RM_OK;
}

static void bert_free(rm_embedder *e) {
    tf_embed *t = e->impl;
    if (!t) return;
    rm_bert_free(t->model);
    tf_embed_free_common(t);
    e->impl = NULL;
}

static int bert_load(rm_embedder *e, rm_reader *r) { return tf_embed_load(e, r, bert_open_model); }

const rm_embedder_ops rm_bert_ops = {"bert", tf_embed_text, tf_embed_save, bert_load, bert_free};

int rm_bert_embedder_create(const char *path, rm_pooling pooling, const char *prefix, rm_embedder **out) {
    return tf_embed_create(&rm_bert_ops, path, pooling, prefix, bert_open_model, out);
}
