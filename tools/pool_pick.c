// pool_pick.c — see pool_pick.h.
#include "pool_pick.h"
#include "base/err.h"
#include "base/file.h"

#include <stdio.h>

#include <stdlib.h>
#include <string.h>

int pool_pick_run(rm_pool *pool, const char *text, int k, float min_score, pool_pick *pk) {
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
        if (info->weights && *info->weights) {
            pk->name[pk->n] = strdup(name);
            pk->weights[pk->n] = strdup(info->weights);
            pk->score[pk->n] = hits[i].score;
            if (!pk->name[pk->n] || !pk->weights[pk->n]) rc = rm_errorf(RM_ENOMEM, "out of memory");
            pk->n++;
        }
        rm_pool_free_list(info, 1);
    }
    free(hits);
    if (rc) pool_pick_free(pk);
    return rc;
}

void pool_pick_free(pool_pick *pk) {
    for (int i = 0; i < pk->n; i++) {
        free(pk->name[i]);
        free(pk->weights[i]);
    }
    memset(pk, 0, sizeof *pk);
}

int pool_open_existing(const char *dir, rm_pool **out) {
    char db[4096];
    snprintf(db, sizeof db, "%s/pool.db", dir);
    *out = NULL;
    if (!rm_file_exists(db)) return rm_errorf(RM_ENOTFOUND, "%s is not a pool (no pool.db; make one with `ramole pool`)", dir);
    rm_pool_params pp = rm_pool_default_params();
    return rm_pool_open(dir, &pp, out);
}

rm_lora *adapter_cache_get(adapter_cache *c, const char *name, const char *weights) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name) && !strcmp(c->e[i].weights, weights)) return c->e[i].lora;
    rm_lora *l = NULL;
    int rc = rm_lora_load(&l, weights);
    if (!rc) rc = rm_lora_bind(l, c->m);
    if (rc) {
        rm_error_prefix(rc, "adapter '%s' refused", name);
        rm_lora_free(l);
        return NULL;
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        adapter_entry *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e) { rm_lora_free(l); rm_errorf(RM_ENOMEM, "out of memory"); return NULL; }
        c->e = e, c->cap = cap;
    }
    char *nm = strdup(name), *wp = strdup(weights);
    if (!nm || !wp) {
        free(nm);
        free(wp);
        rm_lora_free(l);
        rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    c->e[c->n++] = (adapter_entry){nm, wp, l};
    return l;
}

void adapter_cache_free(adapter_cache *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].name);
        free(c->e[i].weights);
        rm_lora_free(c->e[i].lora);
    }
    free(c->e);
    memset(c, 0, sizeof *c);
}
