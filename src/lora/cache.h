// cache.h — adapters loaded and bound to one model, kept for later requests
// (`serve`, `eval`, the evaluation module): each is read from disk once, and,
// with a byte budget, the least recently used ones nobody holds are evicted
// to make room (and loaded again on demand).
//
// rm_lora_cache_get hands out a reference: the adapter stays loaded until the
// holder gives it back with rm_lora_cache_release (a running request holds
// its adapters). Holders that never release (the evaluation module, which
// keeps every adapter for a whole run) simply pin them; with budget 0 (the
// zeroed struct's default) nothing is ever evicted.
#ifndef RM_LORA_CACHE_H
#define RM_LORA_CACHE_H
#include <stdint.h>

#include "lora/adapter.h"

// Keyed by name and weights path (a name removed from a pool and uploaded
// again may point elsewhere).
typedef struct rm_lora_cache_entry {
    char *name, *weights;
    rm_lora *lora;
    size_t bytes;      // rm_lora_bytes when loaded
    int refs;          // holders; never evicted while > 0
    uint64_t last_use; // the cache's clock at the last get
} rm_lora_cache_entry;

typedef struct rm_lora_cache_stats {
    uint64_t hits, misses, loads, evictions; // loads: successful loads (misses that failed are not loads)
    size_t bytes;                            // held by loaded adapters now
    int loaded;                              // adapters loaded now
    int in_use;                              // of them, held by someone
} rm_lora_cache_stats;

typedef struct rm_lora_cache {
    const rm_llama *m;
    rm_lora_cache_entry *e;
    int n, cap;
    size_t budget; // bytes; 0: no limit
    uint64_t clock;
    rm_lora_cache_stats st;
} rm_lora_cache;

// *out = the adapter called name, loaded from weights and bound to c->m on
// first use (the cache owns it), with a reference taken. A load that brings
// the cache over its budget first evicts least recently used adapters that
// nobody holds; when all are held it stays over budget (a request is never
// refused for the cache's sake). Fails (the message names the adapter) when
// it cannot be loaded or does not fit the model.
int rm_lora_cache_get(rm_lora_cache *c, const char *name, const char *weights, rm_lora **out);
// Gives back a reference rm_lora_cache_get handed out (lora NULL: no-op).
void rm_lora_cache_release(rm_lora_cache *c, const rm_lora *lora);
// Sets the budget (bytes, 0: none) and evicts what it must at once.
void rm_lora_cache_set_budget(rm_lora_cache *c, size_t bytes);
rm_lora_cache_stats rm_lora_cache_stats_get(const rm_lora_cache *c);
// The two halves of rm_lora_cache_get, for callers that load without holding
// a lock around the cache (the server): the cached adapter with a reference
// taken, or NULL (a hit or a miss counted); and adding a loaded, bound
// adapter l with a reference taken (*out = l; the cache takes l over and
// frees it on failure). When name and weights were added meanwhile (by
// another thread's load), l is freed and *out is the cached one, held.
// Either way the caller gives the reference back with rm_lora_cache_release.
rm_lora *rm_lora_cache_find(rm_lora_cache *c, const char *name, const char *weights);
int rm_lora_cache_put(rm_lora_cache *c, const char *name, const char *weights, rm_lora *l, rm_lora **out);
// Removes an entry called name and hands its adapter to the caller (NULL:
// none left); call until NULL for every weights path of that name.
rm_lora *rm_lora_cache_take(rm_lora_cache *c, const char *name);
void rm_lora_cache_free(rm_lora_cache *c);
#endif
