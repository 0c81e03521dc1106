// embed_hybrid.c — a weighted sum of several embedders' cosine scores.
//
// The vector is the concatenation of the parts' vectors, each normalised to
// length sqrt(w_i) (rm_embedder_normalise does it per part), so the dot
// product of two hybrid vectors is sum_i w_i cos_i.
// Payload: u32 part count, f32 weights, then per part u64 size + a complete
// embedder blob (embed.c format).
#include "retrieve/embed_impl.h"
#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    rm_embedder *parts[RM_EMBED_MAX_PARTS];
} hybrid;

static int hybrid_embed(const rm_embedder *e, const char *text, size_t len, float *out) {
    const hybrid *h = e->impl;
    for (int p = 0; p < e->n_parts; p++) {
        int rc = embed_prefixed(h->parts[p], text, len, out + e->part_off[p]);
        if (rc) return rc;
    }
    return RM_OK;
}

static int hybrid_save(const rm_embedder *e, rm_bytes *b) {
    const hybrid *h = e->impl;
    rm_bytes_u32(b, (uint32_t)e->n_parts);
    rm_bytes_put(b, e->part_w, (size_t)e->n_parts * sizeof(float));
    for (int p = 0; p < e->n_parts; p++) {
        rm_bytes sub = {0};
        int rc = rm_embedder_to_bytes(h->parts[p], &sub);
        uint64_t n = sub.n;
        if (!rc) {
            rm_bytes_put(b, &n, 8);
            rm_bytes_put(b, sub.p, sub.n);
        }
        rm_bytes_free(&sub);
        if (rc) return rc;
    }
    return RM_OK;
}

// Lays out the parts and names the hybrid after them ("hybrid(lexical,hashproj)").
static void hybrid_layout(rm_embedder *e) {
    const hybrid *h = e->impl;
    int off = 0;
    size_t n = 0;
    char name[sizeof e->name];
    const char *head = "hybrid(";
    memcpy(name, head, strlen(head));
    n = strlen(head);
    for (int p = 0; p < e->n_parts; p++) {
        e->part_off[p] = off;
        off += h->parts[p]->dim;
        const char *s = h->parts[p]->name;
        if (p && n < sizeof name - 1) name[n++] = ',';
        for (size_t i = 0; s[i] && n < sizeof name - 2; i++) name[n++] = s[i];
    }
    name[n++] = ')';
    name[n] = 0;
    e->part_off[e->n_parts] = off;
    e->dim = off;
    memcpy(e->name, name, sizeof name);
}

static int hybrid_load(rm_embedder *e, rm_reader *r) {
    hybrid *h = calloc(1, sizeof *h);
    if (!h) return rm_errorf(RM_ENOMEM, "%s: out of memory", r->what);
    e->impl = h;
    uint32_t n = 0;
    int rc = rm_reader_u32(r, &n);
    if (!rc && (n < 1 || n > RM_EMBED_MAX_PARTS)) rc = rm_errorf(RM_EFORMAT, "%s: hybrid of %u parts", r->what, n);
    if (rc) return rc;
    if ((rc = rm_reader_get(r, e->part_w, n * sizeof(float)))) return rc;
    for (uint32_t p = 0; p < n; p++) {
        uint64_t size;
        if ((rc = rm_reader_get(r, &size, 8))) return rc;
        if (size > r->n - r->off) return rm_errorf(RM_EFORMAT, "%s: hybrid part %u truncated", r->what, p);
        if (!(e->part_w[p] > 0)) return rm_errorf(RM_EFORMAT, "%s: hybrid weight %u not positive", r->what, p);
        if ((rc = rm_embedder_from_bytes(r->p + r->off, (size_t)size, r->what, &h->parts[p]))) return rc;
        e->n_parts = (int)p + 1;
        r->off += (size_t)size;
    }
    uint32_t version = e->version;
    hybrid_layout(e);
    e->version = version;
    return RM_OK;
}

static void hybrid_free(rm_embedder *e) {
    hybrid *h = e->impl;
    if (!h) return;
    for (int p = 0; p < RM_EMBED_MAX_PARTS; p++) rm_embedder_free(h->parts[p]);
    free(h);
}

const rm_embedder_ops rm_hybrid_ops = {"hybrid", hybrid_embed, hybrid_save, hybrid_load, hybrid_free};

int rm_hybrid_create(rm_embedder **parts, const float *weights, int n, rm_embedder **out) {
    *out = NULL;
    int rc = RM_OK;
    if (n < 1 || n > RM_EMBED_MAX_PARTS) rc = rm_errorf(RM_EINVAL, "hybrid: %d parts (1..%d)", n, RM_EMBED_MAX_PARTS);
    for (int p = 0; p < n && !rc; p++) {
        if (!(weights[p] > 0)) rc = rm_errorf(RM_EINVAL, "hybrid: weight %d is not positive", p);
        else if (parts[p]->n_parts != 1) rc = rm_errorf(RM_EINVAL, "hybrid: part %d is itself a hybrid", p);
        else if (strcmp(parts[p]->prefix, parts[0]->prefix))
            rc = rm_errorf(RM_EINVAL, "hybrid: parts have different prefixes");
    }
    hybrid *h = rc ? NULL : calloc(1, sizeof *h);
    rm_embedder *e = NULL;
    if (!rc && !h) rc = rm_errorf(RM_ENOMEM, "hybrid: out of memory");
    if (!rc) rc = embed_alloc(&rm_hybrid_ops, "hybrid", 1, parts[0]->prefix, &e);
    if (rc) {
        free(h);
        for (int p = 0; p < n; p++) rm_embedder_free(parts[p]);
        return rc;
    }
    e->impl = h;
    e->n_parts = n;
    for (int p = 0; p < n; p++) {
        h->parts[p] = parts[p];
        e->part_w[p] = weights[p];
    }
    hybrid_layout(e);
    *out = e;
    return RM_OK;
}
