// pool_pick.h — the adapters of a pool to apply to a request: the best
// matches of its text that have weights (used by `generate --pool` and
// `serve`).
#ifndef RM_TOOLS_POOL_PICK_H
#define RM_TOOLS_POOL_PICK_H
#include "retrieve/pool.h"

typedef struct pool_pick {
    int n;
    char *name[16], *weights[16];
    float score[16];
} pool_pick;

// Retrieves the k (<= 16) adapters that best fit text among those with
// weights and a score of at least min_score (-INFINITY: any). Returns RM_OK
// (pk->n may be 0: no adapter fits, the base model serves the request) or an
// error; free with pool_pick_free.
int pool_pick_run(rm_pool *pool, const char *text, int k, float min_score, pool_pick *pk);
void pool_pick_free(pool_pick *pk);
#endif
