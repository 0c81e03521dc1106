// bm25.c — see bm25.h.
#include "retrieve/bm25.h"
#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rm_bm25_params rm_bm25_default_params(void) {
    return (rm_bm25_params){.w = 0.5f, .k1 = 1.2f, .b = 0.75f, .feat = rm_feat_lexical_params()};
}

int rm_bm25_check(const rm_bm25_params *p) {
    if (!(p->w >= 0) || p->w > 100) return rm_errorf(RM_EINVAL, "bm25: weight %g not in [0, 100]", (double)p->w);
    if (!(p->k1 >= 0) || p->k1 > 100) return rm_errorf(RM_EINVAL, "bm25: k1 %g not in [0, 100]", (double)p->k1);
    if (!(p->b >= 0) || p->b > 1) return rm_errorf(RM_EINVAL, "bm25: b %g not in [0, 1]", (double)p->b);
    int rc = rm_feat_check(&p->feat);
    if (!rc && p->feat.bits > 20) rc = rm_errorf(RM_EINVAL, "bm25: %d bits (at most 20)", p->feat.bits);
    return rc;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static int sparse_reserve(rm_sparse *s, size_t n) {
    if (s->cap >= n) return RM_OK;
    uint32_t *ni = realloc(s->idx, (n ? n : 1) * sizeof *ni);
    if (ni) s->idx = ni;
    float *nv = ni ? realloc(s->val, (n ? n : 1) * sizeof *nv) : NULL;
    if (nv) s->val = nv;
    if (!ni || !nv) return rm_errorf(RM_ENOMEM, "bm25: out of memory");
    s->cap = n;
    return RM_OK;
}

int rm_bm25_doc_sum(const rm_sparse *parts, int n, int skip, int bits, rm_sparse *doc) {
    float *acc = calloc((size_t)1 << bits, sizeof *acc);
    size_t cap = 0;
    for (int i = 0; i < n; i++) cap += i == skip ? 0 : parts[i].n;
    uint32_t *seen = malloc((cap ? cap : 1) * sizeof *seen); // buckets touched
    size_t n_seen = 0;
    int rc = acc && seen ? RM_OK : rm_errorf(RM_ENOMEM, "bm25: out of memory");
    for (int i = 0; i < n && !rc; i++) {
        if (i == skip) continue;
        for (size_t j = 0; j < parts[i].n; j++) {
            if (acc[parts[i].idx[j]] == 0.0f) seen[n_seen++] = parts[i].idx[j];
            acc[parts[i].idx[j]] += parts[i].val[j];
        }
    }
    if (!rc && n_seen) qsort(seen, n_seen, sizeof *seen, cmp_u32);
    if (!rc) rc = sparse_reserve(doc, n_seen);
    if (!rc) {
        for (size_t j = 0; j < n_seen; j++) {
            doc->idx[j] = seen[j];
            doc->val[j] = acc[seen[j]];
        }
        doc->n = n_seen;
    }
    free(acc);
    free(seen);
    return rc;
}

int rm_bm25_doc(const rm_feat_params *fp, const char *const *texts, int n, rm_sparse *doc) {
    rm_sparse *parts = calloc((size_t)(n > 0 ? n : 1), sizeof *parts);
    int rc = parts ? RM_OK : rm_errorf(RM_ENOMEM, "bm25: out of memory");
    for (int i = 0; i < n && !rc; i++) rc = rm_feat_extract(fp, texts[i], strlen(texts[i]), &parts[i]);
    if (!rc) rc = rm_bm25_doc_sum(parts, n, -1, fp->bits, doc);
    for (int i = 0; parts && i < n; i++) rm_sparse_free(&parts[i]);
    free(parts);
    return rc;
}

int64_t rm_bm25_doc_len(const rm_sparse *doc) {
    double s = 0;
    for (size_t i = 0; i < doc->n; i++) s += doc->val[i];
    return (int64_t)llround(s * RM_BM25_LEN_ONE);
}

int rm_bm25_query(const rm_feat_params *fp, const char *text, rm_sparse *q) {
    int rc = rm_feat_extract(fp, text, strlen(text), q);
    for (size_t i = 0; !rc && i < q->n; i++) q->val[i] = 1.0f;
    return rc;
}

int rm_bm25_stats_init(rm_bm25_stats *s, int bits) {
    memset(s, 0, sizeof *s);
    s->df = calloc((size_t)1 << bits, sizeof *s->df);
    if (!s->df) return rm_errorf(RM_ENOMEM, "bm25: out of memory");
    s->bits = bits;
    return RM_OK;
}

void rm_bm25_stats_free(rm_bm25_stats *s) {
    free(s->df);
    memset(s, 0, sizeof *s);
}

void rm_bm25_stats_update(rm_bm25_stats *s, const rm_sparse *doc, int sign) {
    for (size_t i = 0; i < doc->n; i++) s->df[doc->idx[i]] += sign > 0 ? 1u : (uint32_t)-1;
    s->n_docs += sign > 0 ? 1 : -1;
    s->total_len += sign > 0 ? rm_bm25_doc_len(doc) : -rm_bm25_doc_len(doc);
}

float rm_bm25_score(const rm_bm25_params *p, const rm_bm25_stats *s, const rm_sparse *q, const rm_sparse *doc) {
    if (s->n_docs <= 0 || q->n == 0) return 0.0f;
    double avgdl = (double)s->total_len / (double)s->n_docs, dl = (double)rm_bm25_doc_len(doc);
    double norm = p->k1 * (1.0 - p->b + (avgdl > 0 ? p->b * dl / avgdl : p->b));
    double num = 0, den = 0, N = (double)s->n_docs;
    size_t j = 0;
    for (size_t i = 0; i < q->n; i++) {
        uint32_t f = q->idx[i];
        double df = (double)s->df[f];
        double idf = log(1.0 + (N - df + 0.5) / (df + 0.5));
        den += idf * (p->k1 + 1.0);
        while (j < doc->n && doc->idx[j] < f) j++;
        if (j < doc->n && doc->idx[j] == f) {
            double tf = doc->val[j];
            num += idf * tf * (p->k1 + 1.0) / (tf + norm);
        }
    }
    return den > 0 ? (float)(num / den) : 0.0f;
}

int64_t rm_bm25_feat_id(const rm_feat_params *fp) {
    int32_t v[11] = {fp->bits, fp->wmin, fp->wmax, fp->cmin, fp->cmax, fp->lowercase, fp->edge, fp->rare_df};
    memcpy(&v[8], &fp->word_weight, 4);
    memcpy(&v[9], &fp->mid_weight, 4);
    memcpy(&v[10], &fp->rare_weight, 4);
    uint64_t h = 0xcbf29ce484222325ull;
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < sizeof v; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return (int64_t)(h >> 1); // non-negative: fits an SQLite integer as is
}

size_t rm_bm25_doc_bytes(const rm_sparse *doc) { return 4 + doc->n * 8; }

void rm_bm25_doc_pack(const rm_sparse *doc, void *out) {
    unsigned char *o = out;
    uint32_t n = (uint32_t)doc->n;
    memcpy(o, &n, 4);
    if (doc->n) {
        memcpy(o + 4, doc->idx, doc->n * 4);
        memcpy(o + 4 + doc->n * 4, doc->val, doc->n * 4);
    }
}

int rm_bm25_doc_unpack(const void *data, size_t size, int bits, rm_sparse *doc) {
    uint32_t n;
    if (size < 4) return rm_errorf(RM_EFORMAT, "bm25: truncated document");
    memcpy(&n, data, 4);
    if (size != 4 + (size_t)n * 8) return rm_errorf(RM_EFORMAT, "bm25: document of %zu bytes for %u entries", size, n);
    int rc = sparse_reserve(doc, n);
    if (rc) return rc;
    const unsigned char *d = data;
    if (n) {
        memcpy(doc->idx, d + 4, (size_t)n * 4);
        memcpy(doc->val, d + 4 + (size_t)n * 4, (size_t)n * 4);
    }
    doc->n = n;
    for (uint32_t i = 0; i < n; i++)
        if (doc->idx[i] >> bits || (i && doc->idx[i] <= doc->idx[i - 1]) || !(doc->val[i] > 0))
            return rm_errorf(RM_EFORMAT, "bm25: document entry %u out of order or range", i);
    return RM_OK;
}
