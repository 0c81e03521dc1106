// sampcache.h — the second stage's memory: adapters' sample embeddings, least
// recently used dropped first beyond a byte budget. The pool's second stage
// embeds a candidate's samples once and then only takes dot products. Rows
// are kept sparse (their nonzero entries) when that is smaller, else dense
// (a centred embedder's rows are dense).
#ifndef RM_RETRIEVE_SAMPCACHE_H
#define RM_RETRIEVE_SAMPCACHE_H
#include <stddef.h>
#include <stdint.h>

#include "retrieve/feat.h"

typedef struct rm_sampcache rm_sampcache;

// NULL when out of memory. Entries beyond max_bytes are dropped, least
// recently used first, when the next one is put (0: only the last one stays).
rm_sampcache *rm_sampcache_new(size_t max_bytes);
void rm_sampcache_free(rm_sampcache *c);
void rm_sampcache_clear(rm_sampcache *c);
void rm_sampcache_drop(rm_sampcache *c, int64_t id);
// One adapter's n sample embeddings: sparse rows s[n], or dense rows d[n][dim].
typedef struct rm_samples_view {
    int n;
    const rm_sparse *s;   // NULL when dense
    const float *d;       // NULL when sparse
    const rm_sparse *doc; // the adapter's BM25 document, NULL if none was put
} rm_samples_view;

// Adapter id's samples; 0 when not cached.
int rm_sampcache_get(rm_sampcache *c, int64_t id, rm_samples_view *v);
// Stores the n embeddings emb[n][dim] of adapter id (replacing an older
// entry), and takes over *doc (its BM25 document; may be NULL; *doc is left
// empty, also on failure, when it is freed), and fills v; RM_ENOMEM when out
// of memory. The entry may be dropped by the next put when it exceeds the budget.
int rm_sampcache_put(rm_sampcache *c, int64_t id, const float *emb, int n, int dim, rm_sparse *doc, rm_samples_view *v);
size_t rm_sampcache_bytes(const rm_sampcache *c);
int rm_sampcache_count(const rm_sampcache *c);
#endif
