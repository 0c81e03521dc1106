// embed_hashproj.c — learned sparse-to-dense embedder: TF-IDF weighted hashed
// n-gram features x (unit length) projected by W[buckets][dim], e = x W / |x W|.
//
// Before training, W is a Gaussian random matrix: x W then approximately keeps
// the TF-IDF cosines (Johnson-Lindenstrauss), so training starts from the
// lexical embedder and learns which features mark a task (train.h).
// Payload: feature params, u32 dim, u32 bucket count, f32 idf[buckets],
// f32 W[buckets][dim].
#include "retrieve/embed_impl.h"
#include "base/err.h"
#include "base/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    rm_feat_params fp;
    float *idf; // [nb]
    float *w;   // [nb][dim]
    size_t nb;
} hashproj;

rm_hashproj_params rm_hashproj_default_params(void) {
    rm_hashproj_params p = {.feat = rm_feat_default_params(), .dim = 256, .seed = 1};
    p.feat.bits = 16;
    return p;
}

void rm_hashproj_project(const rm_embedder *e, const rm_sparse *x, float *out) {
    const hashproj *h = e->impl;
    int dim = e->dim;
    memset(out, 0, (size_t)dim * sizeof *out);
    for (size_t i = 0; i < x->n; i++) {
        const float *row = h->w + (size_t)x->idx[i] * (size_t)dim;
        float v = x->val[i];
        for (int d = 0; d < dim; d++) out[d] += v * row[d];
    }
}

int rm_hashproj_features(const rm_embedder *e, const char *text, rm_sparse *out) {
    const hashproj *h = e->impl;
    size_t pl = strlen(e->prefix), tl = strlen(text);
    char *t = malloc(pl + tl + 1);
    if (!t) return rm_errorf(RM_ENOMEM, "hashproj: out of memory");
    memcpy(t, e->prefix, pl);
    memcpy(t + pl, text, tl + 1);
    int rc = embed_features(&h->fp, h->idf, t, pl + tl, out);
    free(t);
    return rc;
}

float *rm_hashproj_weights(rm_embedder *e, size_t *n_buckets) {
    hashproj *h = e->impl;
    if (n_buckets) *n_buckets = h->nb;
    return h->w;
}

static int hashproj_embed(const rm_embedder *e, const char *text, size_t len, float *out) {
    const hashproj *h = e->impl;
    rm_sparse s = {0};
    int rc = embed_features(&h->fp, h->idf, text, len, &s);
    if (!rc) rm_hashproj_project(e, &s, out);
    rm_sparse_free(&s);
    return rc;
}

static int hashproj_save(const rm_embedder *e, rm_bytes *b) {
    const hashproj *h = e->impl;
    embed_put_feat(b, &h->fp);
    rm_bytes_u32(b, (uint32_t)e->dim);
    rm_bytes_u32(b, (uint32_t)h->nb);
    rm_bytes_put(b, h->idf, h->nb * sizeof(float));
    rm_bytes_put(b, h->w, h->nb * (size_t)e->dim * sizeof(float));
    return RM_OK;
}

static int hashproj_alloc(hashproj *h, int dim) {
    h->nb = (size_t)1 << h->fp.bits;
    h->w = malloc(h->nb * (size_t)dim * sizeof(float));
    if (!h->idf) h->idf = malloc(h->nb * sizeof(float));
    return h->w && h->idf ? RM_OK : rm_errorf(RM_ENOMEM, "hashproj: out of memory for %zu x %d weights", h->nb, dim);
}

static int hashproj_load(rm_embedder *e, rm_reader *r) {
    hashproj *h = calloc(1, sizeof *h);
    if (!h) return rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    e->impl = h;
    uint32_t dim = 0, nb = 0;
    int rc = embed_get_feat(r, &h->fp);
    if (!rc) rc = rm_reader_u32(r, &dim);
    if (!rc) rc = rm_reader_u32(r, &nb);
    if (!rc && ((int)dim != e->dim || nb != (1u << h->fp.bits)))
        rc = rm_errorf(RM_EFORMAT, "%s: projection shape %u x %u does not fit", r->what, nb, dim);
    if (!rc) rc = hashproj_alloc(h, e->dim);
    if (!rc) rc = rm_reader_get(r, h->idf, h->nb * sizeof(float));
    if (!rc) rc = rm_reader_get(r, h->w, h->nb * (size_t)e->dim * sizeof(float));
    return rc;
}

static void hashproj_free(rm_embedder *e) {
    hashproj *h = e->impl;
    if (h) {
        free(h->idf);
        free(h->w);
    }
    free(h);
}

const rm_embedder_ops rm_hashproj_ops = {"hashproj", hashproj_embed, hashproj_save, hashproj_load, hashproj_free};

int rm_hashproj_create(const rm_hashproj_params *p, const char *const *corpus, int n, const char *prefix,
                       rm_embedder **out) {
    *out = NULL;
    int rc = rm_feat_check(&p->feat);
    if (rc) return rc;
    if (p->dim < 2 || p->dim > 4096) return rm_errorf(RM_EINVAL, "hashproj: dim %d not in 2..4096", p->dim);
    if (p->feat.bits > 20)
        return rm_errorf(RM_EINVAL, "hashproj: %d bits make the projection too large (at most 20)", p->feat.bits);
    hashproj *h = calloc(1, sizeof *h);
    if (!h) return rm_errorf(RM_ENOMEM, "hashproj: out of memory");
    h->fp = p->feat;
    rm_embedder *e = NULL;
    rc = embed_alloc(&rm_hashproj_ops, "hashproj", p->dim, prefix, &e);
    if (rc) {
        free(h);
        return rc;
    }
    e->impl = h;
    rc = embed_fit_idf(&h->fp, corpus, NULL, n, e->prefix, 1, &h->idf);
    if (!rc) rc = hashproj_alloc(h, p->dim);
    if (rc) {
        rm_embedder_free(e);
        return rc;
    }
    uint64_t s = p->seed;
    float sd = 1.0f / sqrtf((float)p->dim);
    size_t total = h->nb * (size_t)p->dim;
    for (size_t i = 0; i + 1 < total; i += 2) { // Box-Muller, two normals per draw
        double r = sqrt(-2.0 * log(rm_rng_open01(&s))), a = 2.0 * M_PI * rm_rng_open01(&s);
        h->w[i] = (float)(r * cos(a)) * sd;
        h->w[i + 1] = (float)(r * sin(a)) * sd;
    }
    *out = e;
    return RM_OK;
}
