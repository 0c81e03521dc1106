// pool.h — the persistent adapter pool: entries with metadata and sample
// inputs, their key vectors, and the embedder that made them.
//
// A pool is a directory holding pool.db (SQLite, WAL journal, synchronous
// FULL) and embedder.bin (the embedder, embed.h format), or a PostgreSQL
// database named by a URL (postgres://...; pool_pg.c, docs/deploy.md), which
// many servers share. Each add runs in
// one transaction (adapter row, its samples, its key), so a writer that dies
// midway leaves the earlier entries intact and no half entry behind. Keys
// are kept in memory in an index (index.h) as well: an added adapter is
// retrievable at once. Keys record the embedder fingerprint (a checksum of
// embedder.bin); keys made by another embedder are re-made on open and by
// rm_pool_set_embedder. Each adapter's BM25 document (bm25.h: the summed
// features of its samples) is stored with it; the corpus statistics BM25
// needs (document frequencies, lengths) are kept in memory, updated by every
// add and remove and rebuilt from the stored documents on open (documents
// missing or made with other feature settings are re-made from the samples).
//
// One rm_pool per process and thread at a time; several processes may open
// the same pool (SQLite locks). A handle notices the others' adds and removes
// through rm_pool_refresh_if_changed (searches call it; a server's loop should
// too), and add / remove refresh first, so a name taken by another process is
// refused naming that process.
#ifndef RM_RETRIEVE_POOL_H
#define RM_RETRIEVE_POOL_H
#include <stdint.h>

#include "retrieve/embed.h"
#include "retrieve/index.h"
#include "retrieve/rerank.h"

typedef struct rm_pool rm_pool;

typedef struct rm_adapter_info {
    int64_t id;                                                 // assigned by the pool
    const char *name;                                           // unique, required
    const char *task, *domain, *base_model, *targets, *weights; // may be NULL
    int rank;                                                   // 0 if unknown
    int n_samples;                                              // filled by list/get
} rm_adapter_info;

typedef struct rm_pool_params {
    rm_key_type key_type;      // in-memory key storage (default F32)
    int n_threads;             // for embedding and search (default 1)
    rm_rerank_params rerank;   // second stage over the stored samples (default
                               // rm_rerank_default_params(); k 0: keys only;
                               // rerank.bm25.w 0: no BM25 term)
    size_t sample_cache_bytes; // the second stage keeps candidates' sample
                               // embeddings (sparse) up to this many bytes
                               // (default 256 MiB; sampcache.h)
    int max_samples;           // per add: at most this many samples (default
                               // RM_POOL_MAX_SAMPLES; <= 0: no limit)
    size_t max_add_bytes;      // per add: inputs, targets and metadata at most
                               // this many bytes (default RM_POOL_MAX_ADD_BYTES; 0: no limit)
} rm_pool_params;
#define RM_POOL_MAX_SAMPLES 10000
#define RM_POOL_MAX_ADD_BYTES ((size_t)8 << 20)
rm_pool_params rm_pool_default_params(void);

// Opens the pool in dir, creating dir and an empty pool when absent; dir
// may be a PostgreSQL URL (postgres:// or postgresql://, with ?weights=DIR
// naming the shared folder uploads store weights in): its tables are made
// when absent. A URL libpq refuses is RM_EINVAL, a server that cannot be
// reached RM_EUNAVAILABLE, both with libpq's reason.
int rm_pool_open(const char *dir, const rm_pool_params *params, rm_pool **out);
void rm_pool_close(rm_pool *p);

// The pool's embedder, NULL until one is set.
const rm_embedder *rm_pool_embedder(const rm_pool *p);
// Makes e the pool's embedder (the pool takes ownership, also on failure),
// saves it to embedder.bin and re-keys every adapter.
int rm_pool_set_embedder(rm_pool *p, rm_embedder *e);

// Adds an adapter with n sample inputs (targets may be NULL). Fails with
// RM_EINVAL if the name exists (naming the process that added it) or there
// is no embedder, RM_ETOOBIG over the pool's per-add limits (max_samples,
// max_add_bytes; the message gives the limit and the size). *id (may be
// NULL) receives the new id.
int rm_pool_add(rm_pool *p, const rm_adapter_info *info, const char *const *inputs, const char *const *targets, int n,
                int64_t *id);
// RM_ENOTFOUND when absent.
int rm_pool_remove(rm_pool *p, const char *name);

// Brings the in-memory state (entries, key index, BM25 statistics) in step
// with changes other processes committed to the pool since: SQLite's
// data_version, a reload from the database when it moved; PostgreSQL's
// change sequence, the changes after it applied one by one (a reload when
// they cannot be). *changed (may be
// NULL) says whether anything was reloaded. A new embedder set by another
// process is RM_EMISMATCH (reopen the pool). On failure the state is as it was.
int rm_pool_refresh(rm_pool *p, int *changed);
// The same at most once a second (cheap to call per request): the check is
// one PRAGMA, the reload happens only after another process's commit.
int rm_pool_refresh_if_changed(rm_pool *p, int *changed);
int rm_pool_size(const rm_pool *p);
// Waits up to seconds for a change another handle made to the pool
// (*notified 1: refresh now). PostgreSQL pools are told by NOTIFY (on a
// connection of their own, re-made after an outage, *notified 1 then, as
// changes may have been missed); SQLite pools cannot be told, and sleep.
// The one call that may run on another thread while the pool is in use.
int rm_pool_wait_change(rm_pool *p, double seconds, int *notified);
// The folder uploaded weights are stored in (content-addressed: HASH/ per
// adapter): DIR/adapters, or a PostgreSQL URL's weights=DIR (NULL: none).
const char *rm_pool_weights_dir(const rm_pool *p);

// Every adapter (ordered by id); free with rm_pool_free_list. Strings live
// as long as the list.
int rm_pool_list(rm_pool *p, rm_adapter_info **out, int *n);
void rm_pool_free_list(rm_adapter_info *list, int n);
// One adapter and its sample inputs (*inputs: n_samples strings, may be NULL
// if not wanted); free with rm_pool_free_list(info, 1) and rm_pool_free_strs.
int rm_pool_get(rm_pool *p, const char *name, rm_adapter_info **info, char ***inputs);
void rm_pool_free_strs(char **s, int n);
// Name of adapter id (NULL if unknown); valid until the next add/remove.
const char *rm_pool_name(const rm_pool *p, int64_t id);
// id of adapter name or -1.
int64_t rm_pool_id(const rm_pool *p, const char *name);
// Adapter id's task and weights (absolute; either NULL when it has none) as
// memory holds them: no store round trip, so it answers while a PostgreSQL
// server is away. RM_ENOTFOUND when absent. Valid until the next add,
// remove or refresh.
int rm_pool_entry(const rm_pool *p, int64_t id, const char **task, const char **weights);

// Top-k adapters for a query text, skipping the named adapters. With
// params.rerank.k > 0 the first rerank.k hits of the key search are re-scored
// by the query's similarity to their stored samples (rerank.h; the samples are
// read and embedded per query) and by BM25 against their stored documents.
// While a PostgreSQL store cannot be reached the search answers from memory:
// candidates whose samples are not cached then make it rank by keys alone.
int rm_pool_search(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, rm_hit *out,
                   int *n_out);
// The first stage alone: the k adapters whose keys are nearest to the
// query's embedding (no re-scoring by samples or BM25).
int rm_pool_search_keys(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, rm_hit *out,
                        int *n_out);
// Batch: nq queries, out[qi * k + j], n_out[qi].
int rm_pool_search_batch(rm_pool *p, const char *const *queries, int nq, int k, rm_hit *out, int *n_out);

// The store's integrity check (SQLite's; none for PostgreSQL) plus: every adapter has samples and a key of the
// current embedder. RM_EFORMAT with the first problem otherwise.
int rm_pool_check(rm_pool *p);

// For crash tests: called inside rm_pool_add's transaction after the rows
// are written and before COMMIT (NULL: none).
void rm_pool_set_test_hook(void (*hook)(void));
#endif
