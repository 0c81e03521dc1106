// pool_store.h — where a pool keeps its registry: the storage backend
// behind pool.c. pool.c holds what lives in memory (entries, the key index,
// BM25 statistics, the sample cache) and calls a store for every read and
// write of the registry. Two stores:
//
//   pool_sqlite.c  a folder: pool.db (SQLite) and embedder.bin; `--pool DIR`
//   pool_pg.c      a PostgreSQL database (libpq); `--pool postgres://...`
//
// Every operation returns RM_OK or an RM_E* status with the message set.
// RM_EUNAVAILABLE: the store's server cannot be reached (nothing was done).
// Writes outside begin/commit are single statements (or transactions of the
// store's own); inside, they are committed or rolled back together.
#ifndef RM_RETRIEVE_POOL_STORE_H
#define RM_RETRIEVE_POOL_STORE_H
#include <stddef.h>
#include <stdint.h>

#include "retrieve/embed.h"
#include "retrieve/pool.h"

typedef struct pool_store pool_store;

// An adapter and its stored key, as each() reads them (valid during the call).
typedef struct pool_row {
    int64_t id;
    const char *name;
    const char *task, *weights; // NULL when none (weights absolute)
    int has_key;                // the key columns below are set
    int64_t fingerprint;        // of the embedder that made the key
    int dim;
    const void *vec; // dim floats, little-endian
    size_t vec_bytes;
} pool_row;

// One change of the log: an adapter added or removed (with the BM25
// document it took away), or a new embedder.
typedef struct pool_change {
    int64_t seq;
    enum { POOL_ADDED, POOL_REMOVED, POOL_NEW_EMBEDDER } op;
    int64_t id;  // the adapter
    int has_doc; // removed: its BM25 document and feature id follow
    int64_t feat;
    const void *doc;
    size_t doc_bytes;
} pool_change;

typedef struct pool_store_ops {
    void (*close)(pool_store *s);
    // A number that moves when anyone commits a change to the adapters or
    // the embedder. *others: someone other than this store did since known
    // (the version this store's handle last saw).
    int (*version)(pool_store *s, int64_t known, int64_t *v, int *others);
    // The embedder's bytes (embed.h format; b->n 0 when the pool has none),
    // and its fingerprint (the checksum the bytes end with, 0 when none).
    int (*read_embedder)(pool_store *s, rm_bytes *b);
    int (*write_embedder)(pool_store *s, const uint8_t *b, size_t n);
    int (*fingerprint)(pool_store *s, int64_t *fp);
    int (*begin)(pool_store *s);
    int (*commit)(pool_store *s);
    void (*rollback)(pool_store *s);
    // Every adapter by id (only >= 0: that one, if it exists) with its key,
    // fn called per row (a non-zero return stops the walk and is returned).
    int (*each)(pool_store *s, int64_t only, int (*fn)(void *u, const pool_row *r), void *u);
    int (*put_key)(pool_store *s, int64_t id, const char *embedder, int64_t fingerprint, int dim, const float *vec);
    // Adapter id's BM25 document and the feature id it was made with
    // (RM_ENOTFOUND when it has none); doc->p malloc'd.
    int (*get_doc)(pool_store *s, int64_t id, int64_t *feat, rm_bytes *doc);
    int (*put_doc)(pool_store *s, int64_t id, int64_t feat, const void *doc, size_t n);
    // Adapter id's sample inputs in order (*n 0 when none).
    int (*samples)(pool_store *s, int64_t id, char ***v, int *n);
    // Who added the adapter called name and when (RM_ENOTFOUND when none).
    int (*owner)(pool_store *s, const char *name, char **origin, double *created);
    // The adapter's rows (inside begin/commit); *id the new id.
    int (*insert)(pool_store *s, const rm_adapter_info *info, const char *const *inputs, const char *const *targets,
                  int n, const char *origin, double created, int64_t *id);
    // The adapter with its samples, key and document.
    int (*remove)(pool_store *s, int64_t id);
    // Adapters with their sample counts, by id: every one (name NULL) or the one called name.
    int (*infos)(pool_store *s, const char *name, rm_adapter_info **out, int *n);
    // The store's own integrity check, then fn per adapter (name, samples,
    // whether it has a key and that key's fingerprint).
    int (*check)(pool_store *s, int (*fn)(void *u, const char *name, int n_samples, int has_key, int64_t fp), void *u);
    // The change log after version since, in order, fn called per change
    // (a non-zero return stops the walk and is returned). NULL: the store
    // keeps none (a change means a reload).
    int (*changes)(pool_store *s, int64_t since, int (*fn)(void *u, const pool_change *c), void *u);
    // Waits up to seconds for another handle's change (*notified 1), or
    // says the store cannot tell (NULL: it has no notifications). Called
    // from a thread of its own while other operations run.
    int (*wait)(pool_store *s, double seconds, int *notified);
} pool_store_ops;

struct pool_store {
    const pool_store_ops *ops;
    char *label;   // names the pool in messages (a folder, or a URL without its password)
    char *where;   // names the registry in messages (pool.db's path, the URL)
    char *weights; // the folder uploads store weights in (NULL: none)
};

// A folder: creates it and an empty pool.db when absent.
int pool_sqlite_open(const char *dir, pool_store **out);
// A PostgreSQL URL (postgres:// or postgresql://, optionally ?weights=DIR):
// creates the tables when absent.
int pool_pg_open(const char *url, pool_store **out);
// 1 when path names a PostgreSQL database rather than a folder.
int pool_is_pg_url(const char *path);
#endif
