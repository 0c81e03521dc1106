// cache.c — see cache.h. A flat array scanned linearly: the cache holds the
// adapters of running requests and their recent neighbours (hundreds at most);
// a lookup costs a few string compares, nothing next to a load.
#include "lora/cache.h"
#include "base/err.h"

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

int rm_lora_cache_get(rm_lora_cache *c, const char *name, const char *weights, rm_lora **out) {
    *out = NULL;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name) && !strcmp(c->e[i].weights, weights)) {
            rm_lora_cache_entry *e = &c->e[i];
            if (!e->refs++) c->st.in_use++;
            e->last_use = ++c->clock;
            c->st.hits++;
            *out = e->lora;
            return RM_OK;
        }
    c->st.misses++;
    rm_lora *l = NULL;
    int rc = rm_lora_load_for(&l, weights, c->m);
    if (rc) return rm_error_prefix(rc, "adapter '%s' refused", name);
    size_t bytes = rm_lora_bytes(l);
    evict_for(c, bytes);
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        rm_lora_cache_entry *e = realloc(c->e, (size_t)cap * sizeof *e);
        if (!e) { rm_lora_free(l); return rm_errorf(RM_ENOMEM, "out of memory"); }
        c->e = e, c->cap = cap;
    }
    char *nm = strdup(name), *wp = strdup(weights);
    if (!nm || !wp) {
        free(nm);
        free(wp);
        rm_lora_free(l);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    c->e[c->n++] = (rm_lora_cache_entry){nm, wp, l, bytes, 1, ++c->clock};
    c->st.loads++;
    c->st.loaded++;
    c->st.in_use++;
    c->st.bytes += bytes;
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
