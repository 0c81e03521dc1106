// adapter_cache.h — adapters loaded and bound to one model, kept for later
// requests (`serve`, `eval`).
#ifndef RM_TOOLS_ADAPTER_CACHE_H
#define RM_TOOLS_ADAPTER_CACHE_H
#include "lora/adapter.h"

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
