// cache.c — see cache.h. A flat array scanned linearly: the cache holds the
// adapters of running requests and their recent neighbours (hundreds at most);
// a lookup costs a few string compares, nothing next to a load.
#include "lora/cache.h"
#include "base/err.h"
#include "base/grow.h"

#include <stdlib.h>
#include <string.h>

static void entry_drop(rm_lora_cache *c, int i) {
    rm_lora_cache_entry *e = &c->e[i];
    c->st.bytes -= e->bytes;
    c->st.loaded--;
    free(e->name);
    free(e->weights);
    rm_lora_free(e->lora);
    c->e[i] = c->e[--c->n];
}

// Evicts least recently used unheld adapters until the cache holds at most
// `need` bytes under its budget, or nothing unheld is left.
static void evict_for(rm_lora_cache *c, size_t need) {
    if (!c->budget) return;
    while (c->st.bytes + need > c->budget) {
        int victim = -1;
        for (int i = 0; i < c->n; i++)
            if (!c->e[i].refs && (victim < 0 || c->e[i].last_use < c->e[victim].last_use)) victim = i;
        if (victim < 0) return; // everything is in use: stay over budget
        entry_drop(c, victim);
        c->st.evictions++;
    }
}

static int find_entry(const rm_lora_cache *c, const char *name, const char *weights) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name) && !strcmp(c->e[i].weights, weights)) return i;
    return -1;
}

// Takes a reference on entry i (a use: the most recent now).
static rm_lora *hold(rm_lora_cache *c, int i) {
    rm_lora_cache_entry *e = &c->e[i];
    if (!e->refs++) c->st.in_use++;
    e->last_use = ++c->clock;
    return e->lora;
}

rm_lora *rm_lora_cache_find(rm_lora_cache *c, const char *name, const char *weights) {
    int i = find_entry(c, name, weights);
    if (i < 0) {
        c->st.misses++;
        return NULL;
    }
    c->st.hits++;
    return hold(c, i);
}

// Adds l (loaded and bound) with `refs` references; the cache owns l from
// here, and frees it on failure.
static int add_entry(rm_lora_cache *c, const char *name, const char *weights, rm_lora *l, int refs) {
    size_t bytes = rm_lora_bytes(l);
    evict_for(c, bytes);
    if (RM_GROW(c->e, c->n, c->cap, 16)) {
        rm_lora_free(l);
        return RM_ENOMEM;
    }
    char *nm = strdup(name), *wp = strdup(weights);
    if (!nm || !wp) {
        free(nm);
        free(wp);
        rm_lora_free(l);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    c->e[c->n++] = (rm_lora_cache_entry){nm, wp, l, bytes, refs, ++c->clock};
    c->st.loads++;
    c->st.loaded++;
    c->st.in_use += refs > 0;
    c->st.bytes += bytes;
    return RM_OK;
}

int rm_lora_cache_put(rm_lora_cache *c, const char *name, const char *weights, rm_lora *l, rm_lora **out) {
    *out = NULL;
    int i = find_entry(c, name, weights);
    if (i >= 0) { // loaded meanwhile by another caller
        rm_lora_free(l);
        *out = hold(c, i);
        return RM_OK;
    }
    int rc = add_entry(c, name, weights, l, 1);
    if (!rc) *out = l;
    return rc;
}

rm_lora *rm_lora_cache_take(rm_lora_cache *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name)) {
            rm_lora_cache_entry *e = &c->e[i];
            rm_lora *l = e->lora;
            c->st.bytes -= e->bytes;
            c->st.loaded--;
            c->st.in_use -= e->refs > 0;
            free(e->name);
            free(e->weights);
            c->e[i] = c->e[--c->n];
            return l;
        }
    return NULL;
}

int rm_lora_cache_get(rm_lora_cache *c, const char *name, const char *weights, rm_lora **out) {
    *out = NULL;
    if ((*out = rm_lora_cache_find(c, name, weights))) return RM_OK;
    rm_lora *l = NULL;
    int rc = rm_lora_load_for(&l, weights, c->m);
    if (rc) return rm_error_prefix(rc, "adapter '%s' refused", name);
    if ((rc = add_entry(c, name, weights, l, 1))) return rc;
    *out = l;
    return RM_OK;
}

void rm_lora_cache_release(rm_lora_cache *c, const rm_lora *lora) {
    if (!lora) return;
    for (int i = 0; i < c->n; i++)
        if (c->e[i].lora == lora && c->e[i].refs > 0) {
            if (!--c->e[i].refs) c->st.in_use--;
            break;
        }
    evict_for(c, 0);
}

void rm_lora_cache_set_budget(rm_lora_cache *c, size_t bytes) {
    c->budget = bytes;
    evict_for(c, 0);
}

rm_lora_cache_stats rm_lora_cache_stats_get(const rm_lora_cache *c) { return c->st; }

void rm_lora_cache_free(rm_lora_cache *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].name);
        free(c->e[i].weights);
        rm_lora_free(c->e[i].lora);
    }
    free(c->e);
    memset(c, 0, sizeof *c);
}
