// cache.h — adapters loaded and bound to one model, kept for later requests
// (`serve`, `eval`, the evaluation module): each is read from disk once.
#ifndef RM_LORA_CACHE_H
#define RM_LORA_CACHE_H
#include "lora/adapter.h"

// Keyed by name and weights path (a name removed from a pool and uploaded
// again may point elsewhere).
typedef struct rm_lora_cache_entry { char *name, *weights; rm_lora *lora; } rm_lora_cache_entry;
typedef struct rm_lora_cache {
    const rm_llama *m;
    rm_lora_cache_entry *e;
    int n, cap;
} rm_lora_cache;

// *out = the adapter called name, loaded from weights and bound to c->m on
// first use (the cache owns it). Fails (the message names the adapter) when
// it cannot be loaded or does not fit the model.
int rm_lora_cache_get(rm_lora_cache *c, const char *name, const char *weights, rm_lora **out);
// The two halves of rm_lora_cache_get, for callers that load without holding
// a lock around the cache: the cached adapter or NULL; and adding a loaded,
// bound adapter l (the cache takes it over, and frees it on failure).
rm_lora *rm_lora_cache_find(const rm_lora_cache *c, const char *name, const char *weights);
int rm_lora_cache_put(rm_lora_cache *c, const char *name, const char *weights, rm_lora *l);
// Removes an entry called name and hands its adapter to the caller (NULL:
// none left); call until NULL for every weights path of that name.
rm_lora *rm_lora_cache_take(rm_lora_cache *c, const char *name);
void rm_lora_cache_free(rm_lora_cache *c);
#endif
