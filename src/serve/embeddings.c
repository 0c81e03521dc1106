// embeddings.c — POST /v1/embeddings in OpenAI's format: with the base
// model's name, the mean of its final hidden states over the input's tokens
// (after the final RMSNorm, BOS included when the model adds one; unit
// length), computed on the engine thread between two steps (the model is
// the engine's); with "ramole-retriever", the pool's retrieval embedder (the
// vectors adapters are retrieved by), on the worker. "encoding_format":
// "float" or "base64" (little-endian float32, the SDK's default).
#include "serve/server_impl.h"
#include "base/err.h"
#include "base/json.h"
#include "retrieve/embed.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_INPUTS = 256 };

void embed_task_free(embed_task *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->ids ? t->ids[i] : NULL);
        free(t->text ? t->text[i] : NULL);
    }
    free(t->ids);
    free(t->len);
    free(t->text);
    free(t->vec);
    free(t->model);
    free(t);
}

static void base64(rm_sb *b, const unsigned char *p, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        rm_sb_putn(b, q, 4);
    }
}

// The answer: one embedding per input, in order.
static void answer(embed_task *t) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "{\"object\": \"list\", \"data\": [");
    long long tokens = 0;
    for (int i = 0; i < t->n; i++) {
        const float *v = t->vec + (size_t)i * (size_t)t->dim;
        rm_sb_printf(&b, "%s{\"object\": \"embedding\", \"index\": %d, \"embedding\": ", i ? ", " : "", i);
        if (t->b64) {
            rm_sb_puts(&b, "\"");
            base64(&b, (const unsigned char *)v, (size_t)t->dim * sizeof(float)); // x86: already little-endian
            rm_sb_puts(&b, "\"}");
        } else {
            rm_sb_puts(&b, "[");
            for (int k = 0; k < t->dim; k++) {
                if (k) rm_sb_puts(&b, ", ");
                rm_sb_json_num(&b, v[k]);
            }
            rm_sb_puts(&b, "]}");
        }
        tokens += t->len ? t->len[i] : 0;
    }
    rm_sb_puts(&b, "], \"model\": ");
    rm_sb_json_str(&b, t->model, strlen(t->model));
    rm_sb_printf(&b, ", \"usage\": {\"prompt_tokens\": %lld, \"total_tokens\": %lld}}\n", tokens, tokens);
    if (b.oom) rm_http_reply_error(t->r, 500, "out of memory");
    else rm_http_reply(t->r, 200, "application/json", b.buf, b.len);
    rm_sb_free(&b);
}

// Unit length (a zero vector stays zero).
static void normalise(float *v, int d) {
    double ss = 0;
    for (int k = 0; k < d; k++) ss += (double)v[k] * v[k];
    float inv = ss > 0 ? (float)(1 / sqrt(ss)) : 0;
    for (int k = 0; k < d; k++) v[k] *= inv;
}

// The base model's vectors (engine thread): each input alone through the
// model, 128 rows a pass, its hidden states averaged.
static int base_vectors(rm_server *s, embed_task *t) {
    rm_llama *m = s->m;
    int d = m->hp.n_embd, rc = 0;
    for (int i = 0; i < t->n && !rc; i++) {
        int n = t->len[i];
        rm_kvcache kv;
        if ((rc = rm_kvcache_init(&kv, m->hp.n_layer, 1, n, m->hp.n_head_kv * m->hp.head_dim))) break;
        float *hidden = malloc((size_t)n * (size_t)d * sizeof *hidden);
        int32_t *pos = malloc((size_t)n * sizeof *pos), *slot = calloc((size_t)n, sizeof *slot);
        if (!hidden || !pos || !slot) rc = rm_errorf(RM_ENOMEM, "out of memory");
        for (int k = 0; !rc && k < n; k++) pos[k] = k;
        for (int r = 0; !rc && r < n; r += 128) {
            rm_batch b = {.n = n - r < 128 ? n - r : 128, .token = t->ids[i] + r, .pos = pos + r, .slot = slot + r};
            rc = rm_llama_forward_hidden(m, &kv, s->tp, &b, NULL, NULL, hidden + (size_t)r * d);
        }
        float *v = t->vec + (size_t)i * (size_t)d;
        for (int k = 0; !rc && k < d; k++) {
            double sum = 0;
            for (int r = 0; r < n; r++) sum += hidden[(size_t)r * d + k];
            v[k] = (float)(sum / n);
        }
        if (!rc) normalise(v, d);
        free(hidden);
        free(pos);
        free(slot);
        rm_kvcache_free(&kv);
    }
    return rc;
}

void embeddings_run(rm_server *s, embed_task *t) {
    if (base_vectors(s, t)) rm_http_reply_error(t->r, 500, rm_last_error());
    else answer(t);
    embed_task_free(t);
}

// The inputs: a string, a list of strings, token ids, or a list of those.
static int inputs(embed_task *t, const rm_json *in, int as_text, const rm_llama *m) {
    if (!in || (in->type != RM_JSON_STRING && in->type != RM_JSON_ARRAY) ||
        (in->type == RM_JSON_ARRAY && (in->n == 0 || in->n > MAX_INPUTS)))
        return rm_errorf(RM_EINVAL,
                         "\"input\" must be a string, a list of 1 to 256 strings, token ids or lists of them"),
               400;
    int ids_one = in->type == RM_JSON_ARRAY && in->items[0].type == RM_JSON_NUMBER;
    t->n = in->type == RM_JSON_STRING || ids_one ? 1 : (int)in->n;
    t->ids = calloc((size_t)t->n, sizeof *t->ids);
    t->len = calloc((size_t)t->n, sizeof *t->len);
    t->text = calloc((size_t)t->n, sizeof *t->text);
    if (!t->ids || !t->len || !t->text) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
    for (int i = 0; i < t->n; i++) {
        const rm_json *one = t->n == 1 && (in->type == RM_JSON_STRING || ids_one) ? in : &in->items[i];
        if (one->type == RM_JSON_STRING) {
            if (!one->len) return rm_errorf(RM_EINVAL, "\"input\" must not hold an empty string"), 400;
            if (!(t->text[i] = strdup(one->str))) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
            if (as_text) continue;
            int n = rm_tokenize(m->tok, one->str, one->len, m->add_bos, 0, NULL, 0);
            if (n < 1) return 400;
            if (!(t->ids[i] = malloc((size_t)n * sizeof(int32_t)))) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
            t->len[i] = rm_tokenize(m->tok, one->str, one->len, m->add_bos, 0, t->ids[i], n);
        } else if (one->type == RM_JSON_ARRAY && one->n > 0 && !as_text) {
            if (!(t->ids[i] = malloc(one->n * sizeof(int32_t)))) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
            for (size_t k = 0; k < one->n; k++) {
                const rm_json *v = &one->items[k];
                if (v->type != RM_JSON_NUMBER || !v->is_int || v->inum < 0 || v->inum >= m->hp.n_vocab)
                    return rm_errorf(RM_EINVAL, "\"input\" holds a token id outside the vocabulary"), 400;
                t->ids[i][k] = (int32_t)v->inum;
            }
            t->len[i] = (int)one->n;
        } else {
            return rm_errorf(RM_EINVAL, "\"input\" must be strings%s",
                             as_text ? " for the retriever" : " or non-empty token id lists"),
                   400;
        }
    }
    return 0;
}

// A worker's part: check the request; the retriever's vectors at once, the
// base model's handed to the engine thread. 0, or an HTTP status (message
// set, j->param the field).
int embeddings_prepare(job *j, const rm_json *req) {
    rm_server *s = j->s;
    if (req->type != RM_JSON_OBJECT) return rm_errorf(RM_EINVAL, "the request body must be a JSON object"), 400;
    static const char *const k_fields[] = {"model", "input", "encoding_format", "user", "dimensions", NULL};
    for (size_t i = 0; i < req->n; i++) {
        int ok = 0;
        for (const char *const *f = k_fields; *f; f++) ok |= !strcmp(*f, req->keys[i]);
        if (!ok)
            return snprintf(j->param, sizeof j->param, "%s", req->keys[i]),
                   rm_errorf(RM_EINVAL, "Unrecognized request argument supplied: %s", req->keys[i]), 400;
    }
    const char *model = rm_json_get_str(req, "model", NULL), *fmt = rm_json_get_str(req, "encoding_format", "float");
    snprintf(j->param, sizeof j->param, "model");
    if (!model)
        return rm_errorf(RM_EINVAL, "\"model\" is required: the base model's name or \"ramole-retriever\""), 400;
    int retriever = !strcmp(model, RM_RETRIEVER_MODEL);
    if (retriever && !(s->pool && rm_pool_embedder(s->pool)))
        return rm_errorf(RM_ENOTFOUND, "\"ramole-retriever\" needs a pool with an embedder (--pool)"), 404;
    if (!retriever && strcmp(model, s->base_name) && strcmp(model, s->p.model))
        return rm_errorf(RM_ENOTFOUND,
                         "The model '%s' has no embeddings here (the base model '%s', or \"ramole-retriever\")", model,
                         s->base_name),
               404;
    snprintf(j->param, sizeof j->param, "encoding_format");
    if (strcmp(fmt, "float") && strcmp(fmt, "base64"))
        return rm_errorf(RM_EINVAL, "\"encoding_format\" must be \"float\" or \"base64\""), 400;
    snprintf(j->param, sizeof j->param, "dimensions");
    if (rm_json_get(req, "dimensions")) return rm_errorf(RM_EINVAL, "\"dimensions\" is not supported"), 400;
    if (!s->m->tok) return rm_errorf(RM_EINVAL, "the model has no tokenizer"), 400;
    embed_task *t = calloc(1, sizeof *t);
    if (!t) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
    t->s = s, t->r = j->r, t->b64 = !strcmp(fmt, "base64");
    snprintf(j->param, sizeof j->param, "input");
    int rc = inputs(t, rm_json_get(req, "input"), retriever, s->m);
    const rm_embedder *e = retriever ? rm_pool_embedder(s->pool) : NULL; // immutable while serving: no lock needed
    t->dim = e ? e->dim : s->m->hp.n_embd;
    if (!rc && (!(t->model = strdup(model)) || !(t->vec = calloc((size_t)t->n * (size_t)t->dim, sizeof *t->vec))))
        rc = (rm_errorf(RM_ENOMEM, "out of memory"), 500);
    if (!rc && retriever) {
        for (int i = 0; i < t->n && !rc; i++)
            if (rm_embedder_embed(e, t->text[i], t->vec + (size_t)i * (size_t)t->dim)) rc = 500;
        if (!rc) answer(t);
        embed_task_free(t);
        return rc;
    }
    if (rc) {
        embed_task_free(t);
        return rc;
    }
    server_submit_embedding(s, t);
    return 0;
}
