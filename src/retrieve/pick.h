// pick.h — the adapters of a pool to apply to a request: the best matches of
// its text that have weights (used by `generate --pool`, `serve`, `eval` and
// the public API).
#ifndef RM_RETRIEVE_PICK_H
#define RM_RETRIEVE_PICK_H
#include "lora/compose.h"
#include "retrieve/pool.h"

typedef struct rm_pick {
    int n;
    char *name[RM_PLAN_MAX], *weights[RM_PLAN_MAX], *task[RM_PLAN_MAX]; // task: the adapter's, or its name
    float score[RM_PLAN_MAX];
} rm_pick;

// Opens an existing pool (one `ramole pool` made: dir/pool.db), never
// creating one; the error names dir.
int rm_pool_open_existing(const char *dir, rm_pool **out);

// Retrieves the k (<= RM_PLAN_MAX) adapters that best fit text among those with
// weights and a score of at least min_score (-INFINITY: any). Returns RM_OK
// (pk->n may be 0: no adapter fits, the base model serves the request) or an
// error; free with rm_pick_free.
int rm_pool_pick(rm_pool *pool, const char *text, int k, float min_score, rm_pick *pk);
// The same with the named adapters left out before retrieval (rm_pool_search's exclude).
int rm_pool_pick_excluding(rm_pool *pool, const char *text, int k, float min_score, const char *const *exclude,
                           int n_exclude, rm_pick *pk);
// The k adapters with weights whose pool keys are nearest to text's embedding:
// the pool's first stage alone, without the second stage's re-scoring by the
// adapters' samples (AdapterSoup's choice, src/eval/method.h).
int rm_pool_pick_keys(rm_pool *pool, const char *text, int k, const char *const *exclude, int n_exclude, rm_pick *pk);
void rm_pick_free(rm_pick *pk);
// Appends an adapter (copies; task NULL: its name); RM_EFULL beyond RM_PLAN_MAX.
int rm_pick_push(rm_pick *pk, const char *name, const char *weights, const char *task, float score);
// Appends the pool's adapter called name, with score 1: RM_ENOTFOUND when the
// pool has none, RM_EINVAL when it has no weights (the message names it).
int rm_pool_pick_named(rm_pool *pool, const char *name, rm_pick *pk);

// Every adapter of a pool that has weights, in id order: the experts a router
// is trained over (router train --pool), with retrieval for each training
// example that answers with indices into the table.
typedef struct rm_pick_table {
    rm_pool *pool; // not owned
    int n;
    char **name, **weights, **task; // task: the adapter's, else its name
} rm_pick_table;
// Lists pool's adapters with weights into tab (n may be 0); free with rm_pick_table_free.
int rm_pick_table_init(rm_pick_table *tab, rm_pool *pool);
void rm_pick_table_free(rm_pick_table *tab);
// Index of the adapter called name in tab, or -1.
int rm_pick_table_find(const rm_pick_table *tab, const char *name);
// rm_pool_pick over tab_ (an rm_pick_table *): the top k (<= RM_PLAN_MAX) for
// text, with every adapter whose task is exclude_task left out of the pool
// before retrieval (NULL: none); idx[] gets their indices in the table, *n
// how many. Fits train/train.h's rm_tdata_retrieve_fn.
int rm_pick_table_retrieve(void *tab_, const char *text, const char *exclude_task, int k, int *idx, int *n);
#endif
