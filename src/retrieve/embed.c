// embed.c — the embedder interface: prefixing, keys, threads, (de)serialisation.
//
// File format of a saved embedder (little-endian):
//   "RMEMBED\0"  u32 format (2)
//   u32 len + kind   u32 len + name   u32 version   u32 dim   u32 len + prefix
//   u32 has_center + (has_center ? f32 center[dim] : nothing)
//   u64 payload size + payload (kind-specific, see the kind's save function)
//   u64 FNV-1a 64 checksum of every byte before it
#include "retrieve/embed_impl.h"
#include "retrieve/embed_tf.h"
#include "base/err.h"
#include "base/file.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EMBED_MAGIC "RMEMBED"
#define EMBED_FORMAT 2u

// ---------------------------------------------------------------------------
// Byte buffers

void rm_bytes_put(rm_bytes *b, const void *data, size_t n) {
    if (b->oom || n == 0) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

void rm_bytes_u32(rm_bytes *b, uint32_t v) { rm_bytes_put(b, &v, 4); }

static void bytes_str(rm_bytes *b, const char *s) {
    rm_bytes_u32(b, (uint32_t)strlen(s));
    rm_bytes_put(b, s, strlen(s));
}

void rm_bytes_free(rm_bytes *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

int rm_reader_get(rm_reader *r, void *dst, size_t n) {
    if (n > r->n - r->off)
        return rm_errorf(RM_EFORMAT, "%s: truncated (want %zu bytes at offset %zu of %zu)", r->what, n, r->off, r->n);
    if (n) memcpy(dst, r->p + r->off, n);
    r->off += n;
    return RM_OK;
}

int rm_reader_u32(rm_reader *r, uint32_t *v) { return rm_reader_get(r, v, 4); }

// A length-prefixed string of at most maxlen bytes, malloc'd and NUL-terminated.
static int reader_str(rm_reader *r, uint32_t maxlen, char **out) {
    uint32_t n = 0;
    int rc = rm_reader_u32(r, &n);
    if (rc) return rc;
    if (n > maxlen || n > r->n - r->off) return rm_errorf(RM_EFORMAT, "%s: bad string length %u", r->what, n);
    char *s = malloc((size_t)n + 1);
    if (!s) return rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    memcpy(s, r->p + r->off, n);
    s[n] = 0;
    r->off += n;
    *out = s;
    return RM_OK;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// ---------------------------------------------------------------------------
// Shared helpers for the kinds

int embed_alloc(const rm_embedder_ops *ops, const char *name, int dim, const char *prefix, rm_embedder **out) {
    rm_embedder *e = calloc(1, sizeof *e);
    if (!e) return rm_errorf(RM_ENOMEM, "embedder: out of memory");
    e->ops = ops;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->version = 1;
    e->dim = dim;
    e->n_parts = 1;
    e->part_off[1] = dim;
    e->part_w[0] = 1.0f;
    e->prefix = strdup(prefix ? prefix : RM_EMBED_DEFAULT_PREFIX);
    if (!e->prefix) {
        free(e);
        return rm_errorf(RM_ENOMEM, "embedder: out of memory");
    }
    *out = e;
    return RM_OK;
}

void embed_put_feat(rm_bytes *b, const rm_feat_params *p) {
    int32_t v[8] = {p->bits, p->wmin, p->wmax, p->cmin, p->cmax, p->lowercase, p->edge, p->rare_df};
    rm_bytes_put(b, v, sizeof v);
    rm_bytes_put(b, &p->word_weight, 4);
    rm_bytes_put(b, &p->mid_weight, 4);
    rm_bytes_put(b, &p->rare_weight, 4);
}

int embed_get_feat(rm_reader *r, rm_feat_params *p) {
    int32_t v[8];
    int rc = rm_reader_get(r, v, sizeof v);
    if (!rc) rc = rm_reader_get(r, &p->word_weight, 4);
    if (!rc) rc = rm_reader_get(r, &p->mid_weight, 4);
    if (!rc) rc = rm_reader_get(r, &p->rare_weight, 4);
    if (rc) return rc;
    p->bits = v[0];
    p->wmin = v[1];
    p->wmax = v[2];
    p->cmin = v[3];
    p->cmax = v[4];
    p->lowercase = v[5];
    p->edge = v[6];
    p->rare_df = v[7];
    rc = rm_feat_check(p);
    return rc ? rm_error_prefix(rc, "%s", r->what) : RM_OK;
}

// prefix + text as one malloc'd string.
static char *with_prefix(const char *prefix, const char *text, size_t len, size_t *out_len) {
    size_t pl = prefix ? strlen(prefix) : 0;
    char *s = malloc(pl + len + 1);
    if (!s) return NULL;
    if (pl) memcpy(s, prefix, pl);
    memcpy(s + pl, text, len);
    s[pl + len] = 0;
    *out_len = pl + len;
    return s;
}

int embed_features(const rm_feat_params *fp, const float *idf, const char *text, size_t len, rm_sparse *out) {
    int rc = rm_feat_extract(fp, text, len, out);
    if (rc) return rc;
    rm_sparse_weight(out, idf);
    return RM_OK;
}

int embed_fit_idf(const rm_feat_params *fp, const char *const *corpus, const int *group, int n, const char *prefix,
                  int oov_keep, float **idf) {
    size_t nb = (size_t)1 << fp->bits;
    uint32_t *df = calloc(nb, sizeof *df);
    int *last = group ? malloc(nb * sizeof *last) : NULL; // last group counted per bucket
    float *w = malloc(nb * sizeof *w);
    rm_sparse s = {0};
    int rc = (df && w && (!group || last)) ? RM_OK : rm_errorf(RM_ENOMEM, "idf: out of memory");
    int n_docs = group ? 0 : n;
    for (size_t b = 0; last && b < nb; b++) last[b] = -1;
    for (int i = 0; group && i < n; i++) n_docs += i == 0 || group[i] != group[i - 1];
    for (int i = 0; i < n && !rc; i++) {
        size_t len;
        char *t = with_prefix(prefix, corpus[i], strlen(corpus[i]), &len);
        if (!t) {
            rc = rm_errorf(RM_ENOMEM, "idf: out of memory");
            break;
        }
        rc = rm_feat_extract(fp, t, len, &s);
        free(t);
        for (size_t j = 0; !rc && j < s.n; j++) {
            if (last && last[s.idx[j]] == group[i]) continue;
            df[s.idx[j]]++;
            if (last) last[s.idx[j]] = group[i];
        }
    }
    for (size_t b = 0; b < nb && !rc; b++) {
        w[b] = df[b] || oov_keep ? logf((float)(n_docs + 1) / (float)(df[b] + 1)) + 1.0f : 0.0f;
        if (df[b] && df[b] < (uint32_t)fp->rare_df) w[b] *= fp->rare_weight;
    }
    rm_sparse_free(&s);
    free(df);
    free(last);
    if (rc) {
        free(w);
        return rc;
    }
    *idf = w;
    return RM_OK;
}

// ---------------------------------------------------------------------------
// The interface

int rm_embedder_set_prefix(rm_embedder *e, const char *prefix) {
    char *p = strdup(prefix ? prefix : "");
    if (!p) return rm_errorf(RM_ENOMEM, "embedder: out of memory");
    free(e->prefix);
    e->prefix = p;
    return RM_OK;
}

void rm_embedder_normalise(const rm_embedder *e, float *v) {
    for (int p = 0; p < e->n_parts; p++) {
        double ss = 0;
        for (int i = e->part_off[p]; i < e->part_off[p + 1]; i++) ss += (double)v[i] * v[i];
        float s = ss > 0 ? (float)(sqrt(e->part_w[p]) / sqrt(ss)) : 0.0f;
        for (int i = e->part_off[p]; i < e->part_off[p + 1]; i++) v[i] *= s;
    }
}

int embed_prefixed(const rm_embedder *e, const char *text, size_t len, float *out) {
    int rc = e->ops->embed(e, text, len, out);
    if (rc) return rc;
    rm_embedder_normalise(e, out);
    if (e->center) {
        for (int d = 0; d < e->dim; d++) out[d] -= e->center[d];
        rm_embedder_normalise(e, out);
    }
    return RM_OK;
}

int rm_embedder_embed(const rm_embedder *e, const char *text, float *out) {
    size_t len;
    char *t = with_prefix(e->prefix, text, strlen(text), &len);
    if (!t) return rm_errorf(RM_ENOMEM, "embed: out of memory");
    int rc = embed_prefixed(e, t, len, out);
    free(t);
    return rc;
}

typedef struct {
    const rm_embedder *e;
    const char *const *texts;
    float *out;
    int begin, end, rc;
    char err[256];
} embed_job;

static void *embed_worker(void *arg) {
    embed_job *j = arg;
    for (int i = j->begin; i < j->end && !j->rc; i++)
        j->rc = rm_embedder_embed(j->e, j->texts[i], j->out + (size_t)i * (size_t)j->e->dim);
    if (j->rc) snprintf(j->err, sizeof j->err, "%s", rm_last_error());
    return NULL;
}

int rm_embedder_embed_many(const rm_embedder *e, const char *const *texts, int n, float *out, int n_threads) {
    enum { MAXT = 64 };
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAXT) n_threads = MAXT;
    if (n_threads > n) n_threads = n > 0 ? n : 1;
    embed_job jobs[MAXT];
    pthread_t th[MAXT];
    int started[MAXT] = {0};
    for (int t = 0; t < n_threads; t++)
        jobs[t] = (embed_job){.e = e,
                              .texts = texts,
                              .out = out,
                              .begin = (int)((long)n * t / n_threads),
                              .end = (int)((long)n * (t + 1) / n_threads)};
    for (int t = 1; t < n_threads; t++) started[t] = pthread_create(&th[t], NULL, embed_worker, &jobs[t]) == 0;
    embed_worker(&jobs[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else embed_worker(&jobs[t]); // could not start a thread: do its share here
    }
    for (int t = 0; t < n_threads; t++)
        if (jobs[t].rc) return rm_errorf(jobs[t].rc, "%s", jobs[t].err);
    return RM_OK;
}

// out[dim] = mean of the embeddings of texts[0..n).
static int mean_embedding(const rm_embedder *e, const char *const *texts, int n, float *out, int n_threads) {
    float *all = malloc((size_t)n * (size_t)e->dim * sizeof *all);
    if (!all) return rm_errorf(RM_ENOMEM, "embed: out of memory");
    int rc = rm_embedder_embed_many(e, texts, n, all, n_threads);
    for (int d = 0; d < e->dim && !rc; d++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += all[(size_t)i * (size_t)e->dim + (size_t)d];
        out[d] = (float)(s / n);
    }
    free(all);
    return rc;
}

int rm_embedder_fit_center(rm_embedder *e, const char *const *corpus, int n, int n_threads) {
    if (n < 1) return rm_errorf(RM_EINVAL, "center: empty corpus");
    float *c = malloc((size_t)e->dim * sizeof *c);
    if (!c) return rm_errorf(RM_ENOMEM, "center: out of memory");
    free(e->center);
    e->center = NULL; // the mean of the uncentred embeddings
    int rc = mean_embedding(e, corpus, n, c, n_threads);
    if (rc) free(c);
    else e->center = c;
    return rc;
}

int rm_embedder_key(const rm_embedder *e, const char *const *texts, int n, float *out, int n_threads) {
    if (n < 1) return rm_errorf(RM_EINVAL, "key: an adapter needs at least one sample input");
    int rc = mean_embedding(e, texts, n, out, n_threads);
    if (!rc) rm_embedder_normalise(e, out);
    return rc;
}

void rm_embedder_free(rm_embedder *e) {
    if (!e) return;
    if (e->ops && e->ops->free) e->ops->free(e);
    free(e->center);
    free(e->prefix);
    free(e);
}

// ---------------------------------------------------------------------------
// Serialisation

int rm_embedder_to_bytes(const rm_embedder *e, rm_bytes *b) {
    rm_bytes_put(b, EMBED_MAGIC, 8);
    rm_bytes_u32(b, EMBED_FORMAT);
    bytes_str(b, e->ops->kind);
    bytes_str(b, e->name);
    rm_bytes_u32(b, e->version);
    rm_bytes_u32(b, (uint32_t)e->dim);
    bytes_str(b, e->prefix);
    rm_bytes_u32(b, e->center ? 1u : 0u);
    if (e->center) rm_bytes_put(b, e->center, (size_t)e->dim * sizeof(float));
    size_t at = b->n;
    uint64_t size = 0;
    rm_bytes_put(b, &size, 8);
    int rc = e->ops->save(e, b);
    if (rc) return rc;
    if (b->oom) return rm_errorf(RM_ENOMEM, "embedder: out of memory while saving");
    size = b->n - at - 8;
    memcpy(b->p + at, &size, 8);
    uint64_t sum = fnv1a64(b->p, b->n);
    rm_bytes_put(b, &sum, 8);
    return b->oom ? rm_errorf(RM_ENOMEM, "embedder: out of memory while saving") : RM_OK;
}

int rm_embedder_save(const rm_embedder *e, const char *path) {
    rm_bytes b = {0};
    int rc = rm_embedder_to_bytes(e, &b);
    if (!rc) rc = rm_write_file_atomic(path, b.p, b.n);
    rm_bytes_free(&b);
    return rc;
}

static const rm_embedder_ops *ops_by_kind(const char *kind) {
    const rm_embedder_ops *all[] = {&rm_lexical_ops, &rm_hashproj_ops, &rm_hybrid_ops, &rm_shape_ops, &rm_script_ops};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(all[i]->kind, kind)) return all[i];
    return tf_ops_by_kind(kind); // "bert", "llama" (embed_tf.h)
}

int rm_embedder_from_bytes(const uint8_t *data, size_t size, const char *what, rm_embedder **out) {
    *out = NULL;
    if (size < 8 + 4 + 8 || memcmp(data, EMBED_MAGIC, 8) != 0)
        return rm_errorf(RM_EFORMAT, "%s: not a ramole embedder file (bad magic)", what);
    uint64_t sum;
    memcpy(&sum, data + size - 8, 8);
    if (sum != fnv1a64(data, size - 8)) return rm_errorf(RM_EFORMAT, "%s: checksum mismatch (file damaged)", what);
    rm_reader r = {.p = data, .n = size - 8, .off = 8, .what = what};
    uint32_t fmt, version, dim, has_center = 0;
    char *kind = NULL, *name = NULL, *prefix = NULL;
    rm_embedder *e = NULL;
    uint64_t psize = 0;
    int rc = rm_reader_u32(&r, &fmt);
    if (!rc && fmt != EMBED_FORMAT)
        rc = rm_errorf(RM_EUNSUPPORTED, "%s: embedder format %u (want %u)", what, fmt, EMBED_FORMAT);
    if (!rc) rc = reader_str(&r, 64, &kind);
    if (!rc) rc = reader_str(&r, 63, &name);
    if (!rc) rc = rm_reader_u32(&r, &version);
    if (!rc) rc = rm_reader_u32(&r, &dim);
    if (!rc) rc = reader_str(&r, 1u << 16, &prefix);
    if (!rc) rc = rm_reader_u32(&r, &has_center);
    if (!rc && has_center > 1) rc = rm_errorf(RM_EFORMAT, "%s: bad centering flag", what);
    if (!rc && (dim == 0 || dim > (1u << 20))) rc = rm_errorf(RM_EFORMAT, "%s: bad dimension %u", what, dim);
    float *center = NULL;
    if (!rc && has_center && !(center = malloc((size_t)dim * sizeof *center)))
        rc = rm_errorf(RM_ENOMEM, "%s: out of memory", what);
    if (!rc && center) rc = rm_reader_get(&r, center, (size_t)dim * sizeof *center);
    if (!rc) rc = rm_reader_get(&r, &psize, 8);
    if (!rc && psize != r.n - r.off)
        rc = rm_errorf(RM_EFORMAT, "%s: payload size %llu does not match the file", what, (unsigned long long)psize);
    const rm_embedder_ops *ops = rc ? NULL : ops_by_kind(kind);
    if (!rc && !ops) rc = rm_errorf(RM_EUNSUPPORTED, "%s: unknown embedder kind '%s'", what, kind);
    if (!rc) rc = embed_alloc(ops, name, (int)dim, prefix, &e);
    if (!rc) {
        e->version = version;
        e->center = center;
        center = NULL;
        rc = ops->load(e, &r);
        if (!rc && r.off != r.n) rc = rm_errorf(RM_EFORMAT, "%s: %zu stray bytes after the payload", what, r.n - r.off);
        if (!rc && e->part_off[e->n_parts] != e->dim)
            rc = rm_errorf(RM_EFORMAT, "%s: parts do not add up to dim", what);
    }
    free(kind);
    free(name);
    free(prefix);
    free(center);
    if (rc) {
        rm_embedder_free(e);
        return rc;
    }
    *out = e;
    return RM_OK;
}

int rm_embedder_load(const char *path, rm_embedder **out) {
    rm_mmap m;
    int rc = rm_mmap_open(&m, path);
    if (rc) return rc;
    rc = rm_embedder_from_bytes(m.data, m.size, path, out);
    rm_mmap_close(&m);
    return rc;
}

int rm_embedder_open(const char *spec, rm_embedder **out) {
    *out = NULL;
    if (!strncmp(spec, "bert:", 5)) return rm_bert_embedder_create(spec + 5, RM_POOL_DEFAULT, NULL, out);
    if (!strncmp(spec, "llama:", 6)) return rm_llama_embedder_create(spec + 6, NULL, out);
    return rm_embedder_load(spec, out);
}
