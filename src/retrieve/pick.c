// pick.c — see pick.h.
#include "retrieve/pick.h"
#include "base/err.h"
#include "base/file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rm_pool_pick(rm_pool *pool, const char *text, int k, float min_score, rm_pick *pk) {
    memset(pk, 0, sizeof *pk);
    if (k < 1 || k > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "retrieve: k = %d (1..%d)", k, RM_PLAN_MAX);
    // ask for more than k: adapters without weights are passed over
    int size = rm_pool_size(pool), want = size < 4 * k ? size : 4 * k, n_hits = 0;
    if (want == 0) return RM_OK;
    rm_hit *hits = malloc((size_t)want * sizeof *hits);
    if (!hits) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = rm_pool_search(pool, text, want, NULL, 0, hits, &n_hits);
    for (int i = 0; !rc && i < n_hits && pk->n < k && hits[i].score >= min_score; i++) { // best first
        const char *name = rm_pool_name(pool, hits[i].id);
        rm_adapter_info *info = NULL;
        if (!name || rm_pool_get(pool, name, &info, NULL)) continue;
        if (info->weights && *info->weights) rc = rm_pick_push(pk, name, info->weights, info->task, hits[i].score);
        rm_pool_free_list(info, 1);
    }
    free(hits);
    if (rc) rm_pick_free(pk);
    return rc;
}

void rm_pick_free(rm_pick *pk) {
    for (int i = 0; i < pk->n; i++) {
        free(pk->name[i]);
        free(pk->weights[i]);
        free(pk->task[i]);
    }
    memset(pk, 0, sizeof *pk);
}

int rm_pick_push(rm_pick *pk, const char *name, const char *weights, const char *task, float score) {
    if (pk->n >= RM_PLAN_MAX) return rm_errorf(RM_EFULL, "more than %d adapters for one request", RM_PLAN_MAX);
    int i = pk->n++;
    pk->name[i] = strdup(name);
    pk->weights[i] = strdup(weights);
    pk->task[i] = strdup(task ? task : name);
    pk->score[i] = score;
    return pk->name[i] && pk->weights[i] && pk->task[i] ? RM_OK : rm_errorf(RM_ENOMEM, "out of memory");
}

int rm_pool_pick_named(rm_pool *pool, const char *name, rm_pick *pk) {
    rm_adapter_info *info = NULL;
    if (rm_pool_get(pool, name, &info, NULL)) return rm_errorf(RM_ENOTFOUND, "no adapter '%s' in the pool", name);
    int rc = info->weights && *info->weights ? rm_pick_push(pk, name, info->weights, info->task, 1.0f)
                                             : rm_errorf(RM_EINVAL, "adapter '%s' has no weights", name);
    rm_pool_free_list(info, 1);
    return rc;
}

int rm_pool_open_existing(const char *dir, rm_pool **out) {
    char db[4096];
    snprintf(db, sizeof db, "%s/pool.db", dir);
    *out = NULL;
    if (!rm_file_exists(db)) return rm_errorf(RM_ENOTFOUND, "%s is not a pool (no pool.db; make one with `ramole pool`)", dir);
    rm_pool_params pp = rm_pool_default_params();
    return rm_pool_open(dir, &pp, out);
}
