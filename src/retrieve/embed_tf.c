// embed_tf.c — what the transformer embedders ("bert", "llama") share:
// tokenising with truncation, the projection head, and their payload in
// embedder files (see embed_tf.h for the layout).
#define _GNU_SOURCE // realpath
#include "retrieve/embed_tf.h"
#include "base/err.h"
#include "retrieve/embed_impl.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tf_embed_free_common(tf_embed *t) {
    if (!t) return;
    free(t->path);
    free(t->head);
    free(t);
}

static int is_tf(const rm_embedder *e) { return e && (e->ops == &rm_bert_ops || e->ops == &rm_llama_embed_ops); }

int tf_embed_create(const rm_embedder_ops *ops, const char *path, rm_pooling pooling, const char *prefix,
                    int (*open_model)(tf_embed *t), rm_embedder **out) {
    *out = NULL;
    if (pooling < RM_POOL_DEFAULT || pooling > RM_POOL_LAST)
        return rm_errorf(RM_EINVAL, "%s embedder: bad pooling %d", ops->kind, (int)pooling);
    tf_embed *t = calloc(1, sizeof *t);
    // the resolved path, so that a saved embedder finds its model from any directory
    if (!t || !(t->path = realpath(path, NULL))) {
        free(t);
        return rm_errorf(RM_EIO, "%s: cannot open the model file", path);
    }
    t->pooling = pooling;
    rm_embedder *e = NULL;
    int rc = open_model(t);
    if (!rc) {
        const char *base = strrchr(t->path, '/');
        char name[64];
        snprintf(name, sizeof name, "%s:%s", ops->kind, base ? base + 1 : t->path);
        rc = embed_alloc(ops, name, t->head_out ? t->head_out : t->n_embd, prefix, &e);
    }
    if (rc) {
        rm_embedder tmp = {.ops = ops, .impl = t};
        ops->free(&tmp);
        return rc;
    }
    e->impl = t;
    *out = e;
    return RM_OK;
}

// out[dim] = head @ raw, or raw itself without a head.
static void apply_head(const tf_embed *t, const float *raw, float *out) {
    if (!t->head) {
        memcpy(out, raw, (size_t)t->n_embd * sizeof *out);
        return;
    }
    for (int o = 0; o < t->head_out; o++) out[o] = rm_dot_f32(t->head + (size_t)o * t->n_embd, raw, t->n_embd);
}

int rm_tfembed_embed_ids(const rm_embedder *e, const int32_t *ids, int n, float *out) {
    if (!is_tf(e)) return rm_errorf(RM_EINVAL, "embed ids: not a transformer embedder");
    const tf_embed *t = e->impl;
    if (n < 0 || n > t->n_ctx) return rm_errorf(RM_EINVAL, "embed ids: %d ids (the model takes 0..%d)", n, t->n_ctx);
    if (n == 0) { // nothing to pool (an empty text without BOS)
        memset(out, 0, (size_t)e->dim * sizeof *out);
        return RM_OK;
    }
    float *raw = malloc((size_t)t->n_embd * sizeof *raw);
    if (!raw) return rm_errorf(RM_ENOMEM, "embed: out of memory");
    int rc = t->pooled(t, ids, n, raw);
    if (!rc) apply_head(t, raw, out);
    free(raw);
    return rc;
}

int tf_embed_text(const rm_embedder *e, const char *text, size_t len, float *out) {
    const tf_embed *t = e->impl;
    int32_t *ids = malloc((size_t)t->n_ctx * sizeof *ids);
    if (!ids) return rm_errorf(RM_ENOMEM, "embed: out of memory");
    int n = rm_tokenize(t->tok, text, len, t->add_bos, 0, ids, t->n_ctx);
    int rc = n < 0 ? n : RM_OK;
    if (n > t->n_ctx) { // truncated: keep the head, end with [SEP] where the model has one
        n = t->n_ctx;
        if (t->end_id >= 0) ids[n - 1] = t->end_id;
    }
    if (!rc) rc = rm_tfembed_embed_ids(e, ids, n, out);
    free(ids);
    return rc;
}

int rm_tfembed_set_head(rm_embedder *e, const float *w, int dim_out, int dim_in) {
    if (!is_tf(e)) return rm_errorf(RM_EINVAL, "projection head: only bert and llama embedders take one");
    tf_embed *t = e->impl;
    float *h = NULL;
    if (w) {
        if (dim_in != t->n_embd || dim_out < 1 || dim_out > (1 << 20))
            return rm_errorf(RM_EMISMATCH, "projection head: shape [%d x %d], the model gives %d", dim_out, dim_in,
                             t->n_embd);
        h = malloc((size_t)dim_out * (size_t)dim_in * sizeof *h);
        if (!h) return rm_errorf(RM_ENOMEM, "projection head: out of memory");
        memcpy(h, w, (size_t)dim_out * (size_t)dim_in * sizeof *h);
    }
    free(t->head);
    t->head = h;
    t->head_out = w ? dim_out : 0;
    e->dim = w ? dim_out : t->n_embd;
    e->n_parts = 1;
    e->part_off[1] = e->dim;
    free(e->center); // it was a mean of the old vectors
    e->center = NULL;
    return RM_OK;
}

int tf_embed_save(const rm_embedder *e, rm_bytes *b) {
    const tf_embed *t = e->impl;
    rm_bytes_u32(b, (uint32_t)strlen(t->path));
    rm_bytes_put(b, t->path, strlen(t->path));
    rm_bytes_u32(b, (uint32_t)t->pooling);
    rm_bytes_u32(b, (uint32_t)t->head_out);
    rm_bytes_u32(b, t->head ? (uint32_t)t->n_embd : 0u);
    if (t->head) rm_bytes_put(b, t->head, (size_t)t->head_out * (size_t)t->n_embd * sizeof(float));
    return RM_OK;
}

int tf_embed_load(rm_embedder *e, rm_reader *r, int (*load_model)(tf_embed *t)) {
    tf_embed *t = calloc(1, sizeof *t);
    if (!t) return rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    e->impl = t; // ops->free releases it on any failure below
    uint32_t n = 0, pool = 0, hout = 0, hin = 0;
    int rc = rm_reader_u32(r, &n);
    if (!rc && (n == 0 || n > PATH_MAX || n > r->n - r->off))
        rc = rm_errorf(RM_EFORMAT, "%s: bad model path length %u", r->what, n);
    if (!rc && !(t->path = calloc((size_t)n + 1, 1))) rc = rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    if (!rc) rc = rm_reader_get(r, t->path, n);
    if (!rc) rc = rm_reader_u32(r, &pool);
    if (!rc) rc = rm_reader_u32(r, &hout);
    if (!rc) rc = rm_reader_u32(r, &hin);
    if (!rc && (pool < RM_POOL_MEAN || pool > RM_POOL_LAST))
        rc = rm_errorf(RM_EFORMAT, "%s: bad pooling %u", r->what, pool);
    if (!rc && (hout > (1u << 20) || hin > (1u << 20) || (hout == 0) != (hin == 0)))
        rc = rm_errorf(RM_EFORMAT, "%s: bad projection head shape [%u x %u]", r->what, hout, hin);
    size_t hn = (size_t)hout * hin;
    if (!rc && hn > (r->n - r->off) / sizeof(float))
        rc = rm_errorf(RM_EFORMAT, "%s: projection head truncated", r->what);
    if (!rc && hn && !(t->head = malloc(hn * sizeof *t->head))) rc = rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    if (!rc && hn) rc = rm_reader_get(r, t->head, hn * sizeof *t->head);
    t->pooling = (rm_pooling)pool;
    t->head_out = (int)hout;
    if (!rc) rc = load_model(t);
    if (!rc && hin && (int)hin != t->n_embd)
        rc = rm_errorf(RM_EMISMATCH, "%s: projection head takes %u inputs, %s gives %d", r->what, hin, t->path,
                       t->n_embd);
    if (!rc && e->dim != (hout ? (int)hout : t->n_embd))
        rc = rm_errorf(RM_EMISMATCH, "%s: dim %d does not match the model %s", r->what, e->dim, t->path);
    return rc;
}

const rm_embedder_ops *tf_ops_by_kind(const char *kind) {
    if (!strcmp(kind, rm_bert_ops.kind)) return &rm_bert_ops;
    if (!strcmp(kind, rm_llama_embed_ops.kind)) return &rm_llama_embed_ops;
    return NULL;
}
