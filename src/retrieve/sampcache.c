// sampcache.c — see sampcache.h.
#include "retrieve/sampcache.h"
#include "base/err.h"
#include "base/grow.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id;
    int n;
    rm_sparse *s;  // n sparse embeddings, or
    float *d;      // n dense rows
    rm_sparse doc; // BM25 document (n 0 and has_doc 0: none)
    int has_doc;
    size_t bytes;
    uint64_t used; // tick of the last get / put
} entry;

struct rm_sampcache {
    entry *e;
    int n, cap;
    size_t bytes, max_bytes;
    uint64_t tick;
};

rm_sampcache *rm_sampcache_new(size_t max_bytes) {
    rm_sampcache *c = calloc(1, sizeof *c);
    if (c) c->max_bytes = max_bytes;
    return c;
}

static void entry_free(entry *x) {
    for (int i = 0; x->s && i < x->n; i++) rm_sparse_free(&x->s[i]);
    free(x->s);
    free(x->d);
    rm_sparse_free(&x->doc);
}

static void remove_at(rm_sampcache *c, int i) {
    c->bytes -= c->e[i].bytes;
    entry_free(&c->e[i]);
    c->e[i] = c->e[--c->n];
}

void rm_sampcache_clear(rm_sampcache *c) {
    while (c && c->n > 0) remove_at(c, c->n - 1);
}

void rm_sampcache_free(rm_sampcache *c) {
    if (!c) return;
    rm_sampcache_clear(c);
    free(c->e);
    free(c);
}

static int find(const rm_sampcache *c, int64_t id) {
    for (int i = 0; i < c->n; i++)
        if (c->e[i].id == id) return i;
    return -1;
}

void rm_sampcache_drop(rm_sampcache *c, int64_t id) {
    int i = c ? find(c, id) : -1;
    if (i >= 0) remove_at(c, i);
}

static void view_of(const entry *x, rm_samples_view *v) {
    *v = (rm_samples_view){x->n, x->s, x->d, x->has_doc ? &x->doc : NULL};
}

int rm_sampcache_get(rm_sampcache *c, int64_t id, rm_samples_view *v) {
    int i = find(c, id);
    if (i < 0) return 0;
    c->e[i].used = ++c->tick;
    view_of(&c->e[i], v);
    return 1;
}

// The nonzero entries of v[dim] (indices ascending).
static int to_sparse(const float *v, int dim, rm_sparse *s) {
    size_t nz = 0;
    for (int d = 0; d < dim; d++) nz += v[d] != 0.0f;
    s->idx = malloc((nz ? nz : 1) * sizeof *s->idx);
    s->val = malloc((nz ? nz : 1) * sizeof *s->val);
    if (!s->idx || !s->val) return -1;
    s->n = s->cap = 0;
    for (int d = 0; d < dim; d++)
        if (v[d] != 0.0f) s->idx[s->n] = (uint32_t)d, s->val[s->n++] = v[d];
    s->cap = nz;
    return 0;
}

int rm_sampcache_put(rm_sampcache *c, int64_t id, const float *emb, int n, int dim, rm_sparse *doc,
                     rm_samples_view *v) {
    rm_sampcache_drop(c, id);
    size_t nz = 0, total = (size_t)n * (size_t)dim;
    for (size_t k = 0; k < total; k++) nz += emb[k] != 0.0f;
    entry x = {.id = id, .n = n, .used = ++c->tick};
    if (doc) { // moved in
        x.doc = *doc, x.has_doc = 1;
        *doc = (rm_sparse){0};
        x.bytes += x.doc.cap * (sizeof(uint32_t) + sizeof(float));
    }
    if (nz * (sizeof(uint32_t) + sizeof(float)) >= total * sizeof(float)) { // dense is smaller
        x.d = malloc((total ? total : 1) * sizeof(float));
        if (!x.d) {
            entry_free(&x);
            return rm_errorf(RM_ENOMEM, "sample cache: out of memory");
        }
        if (total) memcpy(x.d, emb, total * sizeof(float));
        x.bytes += total * sizeof(float);
    } else {
        x.s = calloc((size_t)(n > 0 ? n : 1), sizeof(rm_sparse));
        if (!x.s) {
            entry_free(&x);
            return rm_errorf(RM_ENOMEM, "sample cache: out of memory");
        }
        for (int i = 0; i < n; i++) {
            if (to_sparse(emb + (size_t)i * (size_t)dim, dim, &x.s[i])) {
                entry_free(&x);
                return rm_errorf(RM_ENOMEM, "sample cache: out of memory");
            }
            x.bytes += x.s[i].n * (sizeof(uint32_t) + sizeof(float));
        }
        x.bytes += (size_t)n * sizeof(rm_sparse);
    }
    x.bytes += sizeof(entry);
    // make room: least recently used first
    while (c->n > 0 && c->bytes + x.bytes > c->max_bytes) {
        int lru = 0;
        for (int i = 1; i < c->n; i++)
            if (c->e[i].used < c->e[lru].used) lru = i;
        remove_at(c, lru);
    }
    if (RM_GROW(c->e, c->n, c->cap, 64)) {
        entry_free(&x);
        return rm_error_prefix(RM_ENOMEM, "sample cache");
    }
    c->e[c->n++] = x;
    c->bytes += x.bytes;
    view_of(&c->e[c->n - 1], v);
    return RM_OK;
}

size_t rm_sampcache_bytes(const rm_sampcache *c) { return c->bytes; }
int rm_sampcache_count(const rm_sampcache *c) { return c->n; }
