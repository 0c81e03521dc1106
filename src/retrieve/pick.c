// pick.c — see pick.h.
#include "retrieve/pick.h"
#include "retrieve/pool_store.h"
#include "base/err.h"
#include "base/file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rm_pool_pick(rm_pool *pool, const char *text, int k, float min_score, rm_pick *pk) {
    return rm_pool_pick_excluding(pool, text, k, min_score, NULL, 0, pk);
}

// The pick by the pool's two-stage search, or by its key search alone (keys_only).
static int pick(rm_pool *pool, const char *text, int k, float min_score, const char *const *exclude, int n_exclude,
                int keys_only, rm_pick *pk) {
    memset(pk, 0, sizeof *pk);
    if (k < 1 || k > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "retrieve: k = %d (1..%d)", k, RM_PLAN_MAX);
    // ask for more than k: adapters without weights are passed over
    int size = rm_pool_size(pool), want = size < 4 * k ? size : 4 * k, n_hits = 0;
    if (want == 0) return RM_OK;
    rm_hit *hits = malloc((size_t)want * sizeof *hits);
    if (!hits) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = keys_only ? rm_pool_search_keys(pool, text, want, exclude, n_exclude, hits, &n_hits)
                       : rm_pool_search(pool, text, want, exclude, n_exclude, hits, &n_hits);
    for (int i = 0; !rc && i < n_hits && pk->n < k && hits[i].score >= min_score; i++) { // best first
        const char *name = rm_pool_name(pool, hits[i].id), *task = NULL, *weights = NULL;
        if (!name || rm_pool_entry(pool, hits[i].id, &task, &weights)) continue;
        if (weights && *weights) rc = rm_pick_push(pk, name, weights, task, hits[i].score);
    }
    free(hits);
    if (rc) rm_pick_free(pk);
    return rc;
}

int rm_pool_pick_excluding(rm_pool *pool, const char *text, int k, float min_score, const char *const *exclude,
                           int n_exclude, rm_pick *pk) {
    return pick(pool, text, k, min_score, exclude, n_exclude, 0, pk);
}

int rm_pool_pick_keys(rm_pool *pool, const char *text, int k, const char *const *exclude, int n_exclude, rm_pick *pk) {
    return pick(pool, text, k, -INFINITY, exclude, n_exclude, 1, pk);
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
    const char *task = NULL, *weights = NULL;
    if (rm_pool_entry(pool, rm_pool_id(pool, name), &task, &weights))
        return rm_errorf(RM_ENOTFOUND, "no adapter '%s' in the pool", name);
    return weights && *weights ? rm_pick_push(pk, name, weights, task, 1.0f)
                               : rm_errorf(RM_EINVAL, "adapter '%s' has no weights", name);
}

int rm_pool_open_existing(const char *dir, rm_pool **out) {
    rm_pool_params pp = rm_pool_default_params();
    if (pool_is_pg_url(dir)) return rm_pool_open(dir, &pp, out); // a database holds one pool: made when absent
    char db[4096];
    snprintf(db, sizeof db, "%s/pool.db", dir);
    *out = NULL;
    if (!rm_file_exists(db))
        return rm_errorf(RM_ENOTFOUND, "%s is not a pool (no pool.db; make one with `ramole pool`)", dir);
    return rm_pool_open(dir, &pp, out);
}

// ---------------------------------------------------------------- a table of the adapters with weights

void rm_pick_table_free(rm_pick_table *tab) {
    for (int i = 0; i < tab->n; i++) {
        free(tab->name[i]);
        free(tab->weights[i]);
        free(tab->task[i]);
    }
    free(tab->name);
    free(tab->weights);
    free(tab->task);
    memset(tab, 0, sizeof *tab);
}

int rm_pick_table_init(rm_pick_table *tab, rm_pool *pool) {
    memset(tab, 0, sizeof *tab);
    tab->pool = pool;
    rm_adapter_info *list = NULL;
    int n = 0, rc = rm_pool_list(pool, &list, &n);
    if (rc) return rc;
    tab->name = calloc((size_t)n + 1, sizeof *tab->name);
    tab->weights = calloc((size_t)n + 1, sizeof *tab->weights);
    tab->task = calloc((size_t)n + 1, sizeof *tab->task);
    if (!tab->name || !tab->weights || !tab->task) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        const rm_adapter_info *a = &list[i];
        if (!a->weights || !*a->weights) continue;
        int j = tab->n++;
        tab->name[j] = strdup(a->name);
        tab->weights[j] = strdup(a->weights);
        tab->task[j] = strdup(a->task && *a->task ? a->task : a->name);
        if (!tab->name[j] || !tab->weights[j] || !tab->task[j]) rc = rm_errorf(RM_ENOMEM, "out of memory");
    }
    rm_pool_free_list(list, n);
    if (rc) rm_pick_table_free(tab);
    return rc;
}

int rm_pick_table_find(const rm_pick_table *tab, const char *name) {
    for (int i = 0; i < tab->n; i++)
        if (!strcmp(tab->name[i], name)) return i;
    return -1;
}

int rm_pick_table_retrieve(void *tab_, const char *text, const char *exclude_task, int k, int *idx, int *n) {
    const rm_pick_table *tab = tab_;
    const char **ex = malloc(((size_t)tab->n + 1) * sizeof *ex);
    if (!ex) return rm_errorf(RM_ENOMEM, "out of memory");
    int n_ex = 0;
    for (int i = 0; exclude_task && i < tab->n; i++)
        if (!strcmp(tab->task[i], exclude_task)) ex[n_ex++] = tab->name[i];
    rm_pick pk;
    int rc = rm_pool_pick_excluding(tab->pool, text, k, -INFINITY, ex, n_ex, &pk);
    free(ex);
    *n = 0;
    for (int i = 0; !rc && i < pk.n; i++) {
        idx[i] = rm_pick_table_find(tab, pk.name[i]);
        if (idx[i] < 0)
            rc = rm_errorf(RM_ENOTFOUND, "retrieve: adapter '%s' came into the pool after its table was made",
                           pk.name[i]);
        else *n = i + 1;
    }
    rm_pick_free(&pk);
    return rc;
}
