// cache.c — see cache.h.
#include "lora/cache.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>

rm_lora *rm_lora_cache_find(const rm_lora_cache *c, const char *name, const char *weights) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name) && !strcmp(c->e[i].weights, weights)) return c->e[i].lora;
    return NULL;
}

int rm_lora_cache_put(rm_lora_cache *c, const char *name, const char *weights, rm_lora *l) {
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
    c->e[c->n++] = (rm_lora_cache_entry){nm, wp, l};
    return RM_OK;
}

rm_lora *rm_lora_cache_take(rm_lora_cache *c, const char *name) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->e[i].name, name)) {
            rm_lora *l = c->e[i].lora;
            free(c->e[i].name);
            free(c->e[i].weights);
            c->e[i] = c->e[--c->n];
            return l;
        }
    return NULL;
}

int rm_lora_cache_get(rm_lora_cache *c, const char *name, const char *weights, rm_lora **out) {
    if ((*out = rm_lora_cache_find(c, name, weights))) return RM_OK;
    rm_lora *l = NULL;
    int rc = rm_lora_load_for(&l, weights, c->m);
    if (rc) return rm_error_prefix(rc, "adapter '%s' refused", name);
    if ((rc = rm_lora_cache_put(c, name, weights, l))) return rc;
    *out = l;
    return RM_OK;
}

void rm_lora_cache_free(rm_lora_cache *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->e[i].name);
        free(c->e[i].weights);
        rm_lora_free(c->e[i].lora);
    }
    free(c->e);
    memset(c, 0, sizeof *c);
}
