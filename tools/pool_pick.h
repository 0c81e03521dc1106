// pool_pick.h — the adapters of a pool to apply to a request: the best
// matches of its text that have weights (used by `generate --pool` and
// `serve`).
#ifndef RM_TOOLS_POOL_PICK_H
#define RM_TOOLS_POOL_PICK_H
#include "lora/compose.h"
#include "retrieve/pool.h"

typedef struct pool_pick {
    int n;
    char *name[RM_PLAN_MAX], *weights[RM_PLAN_MAX];
    float score[RM_PLAN_MAX];
} pool_pick;

// Opens an existing pool (one `ramole pool` made: dir/pool.db), never
// creating one; the error names dir.
int pool_open_existing(const char *dir, rm_pool **out);

// Retrieves the k (<= RM_PLAN_MAX) adapters that best fit text among those with
// weights and a score of at least min_score (-INFINITY: any). Returns RM_OK
// (pk->n may be 0: no adapter fits, the base model serves the request) or an
// error; free with pool_pick_free.
int pool_pick_run(rm_pool *pool, const char *text, int k, float min_score, pool_pick *pk);
void pool_pick_free(pool_pick *pk);

// Adapters loaded and bound to one model, kept for later requests and keyed
// by name and weights path (a name removed from a pool and uploaded again
// may point elsewhere).
typedef struct adapter_entry { char *name, *weights; rm_lora *lora; } adapter_entry;
typedef struct adapter_cache {
    const rm_llama *m;
    adapter_entry *e;
    int n, cap;
} adapter_cache;

// The adapter called name, loaded from weights and bound to c->m on first
// use; NULL with the reason (naming the adapter) in rm_last_error().
rm_lora *adapter_cache_get(adapter_cache *c, const char *name, const char *weights);
void adapter_cache_free(adapter_cache *c);
#endif
