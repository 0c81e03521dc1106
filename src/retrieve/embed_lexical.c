// embed_lexical.c — TF-IDF over hashed word and char n-grams.
//
// The vector is dense over the 2^bits buckets (so it suits small pools: the
// paper's 48 adapters at 2^16 buckets are 12 MiB of keys); for large pools use
// the learned "hashproj" embedder, which is dense and short.
// Payload: feature params, u32 bucket count, f32 idf[buckets].
#include "retrieve/embed_impl.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    rm_feat_params fp;
    float *idf;
} lexical;

static int lexical_embed(const rm_embedder *e, const char *text, size_t len, float *out) {
    const lexical *lx = e->impl;
    rm_sparse s = {0};
    int rc = embed_features(&lx->fp, lx->idf, text, len, &s);
    if (!rc) {
        memset(out, 0, (size_t)e->dim * sizeof *out);
        for (size_t i = 0; i < s.n; i++) out[s.idx[i]] = s.val[i];
    }
    rm_sparse_free(&s);
    return rc;
}

static int lexical_save(const rm_embedder *e, rm_bytes *b) {
    const lexical *lx = e->impl;
    embed_put_feat(b, &lx->fp);
    rm_bytes_u32(b, (uint32_t)e->dim);
    rm_bytes_put(b, lx->idf, (size_t)e->dim * sizeof(float));
    return RM_OK;
}

static int lexical_load(rm_embedder *e, rm_reader *r) {
    lexical *lx = calloc(1, sizeof *lx);
    if (!lx) return rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    e->impl = lx;
    uint32_t nb = 0;
    int rc = embed_get_feat(r, &lx->fp);
    if (!rc) rc = rm_reader_u32(r, &nb);
    if (!rc && (nb != (1u << lx->fp.bits) || (int)nb != e->dim))
        rc = rm_errorf(RM_EFORMAT, "%s: idf table size %u does not fit", r->what, nb);
    if (!rc && !(lx->idf = malloc((size_t)nb * sizeof(float)))) rc = rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    if (!rc) rc = rm_reader_get(r, lx->idf, (size_t)nb * sizeof(float));
    return rc;
}

static void lexical_free(rm_embedder *e) {
    lexical *lx = e->impl;
    if (lx) free(lx->idf);
    free(lx);
}

const rm_embedder_ops rm_lexical_ops = {"lexical", lexical_embed, lexical_save, lexical_load, lexical_free};

int rm_lexical_create(const rm_feat_params *fp, const char *const *corpus, const int *group, int n, const char *prefix,
                      rm_embedder **out) {
    *out = NULL;
    int rc = rm_feat_check(fp);
    if (rc) return rc;
    if (fp->bits > 20) return rm_errorf(RM_EINVAL, "lexical: %d bits make vectors too long (at most 20)", fp->bits);
    lexical *lx = calloc(1, sizeof *lx);
    if (!lx) return rm_errorf(RM_ENOMEM, "lexical: out of memory");
    lx->fp = *fp;
    rm_embedder *e = NULL;
    rc = embed_alloc(&rm_lexical_ops, "lexical", 1 << fp->bits, prefix, &e);
    if (rc) {
        free(lx);
        return rc;
    }
    e->impl = lx;
    rc = embed_fit_idf(fp, corpus, group, n, e->prefix, 0, &lx->idf);
    if (rc) {
        rm_embedder_free(e);
        return rc;
    }
    *out = e;
    return RM_OK;
}
