// tokenizer_cache.c — a bounded word -> ids cache for the BPE encoders.
//
// Natural text repeats its words, and a word's tokens depend only on the
// word, so remembered results skip the merge loop (whose hash lookups into
// the large merge table are what costs). When the table fills it is simply
// emptied. One rm_tokenize call owns the cache at a time (a try-lock in
// rm_tokenize); calls that find it busy run without it.
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer_impl.h"

#define CACHE_SLOTS (1u << 16) // power of two
#define CACHE_MAX_ENTRIES (CACHE_SLOTS / 2)
#define CACHE_KEY_BYTES (1u << 20)
#define CACHE_ID_COUNT (1u << 18)

typedef struct cache_slot {
    uint32_t hash, key_off, ids_off;
    uint16_t key_len, n_ids;
} cache_slot;

struct tok_cache {
    cache_slot *slots; // key_len == 0: empty
    char *keys;
    int32_t *ids;
    uint32_t n_entries, key_used, ids_used;
};

tok_cache *tok_cache_new(void) {
    tok_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
    c->keys = malloc(CACHE_KEY_BYTES);
    c->ids = malloc(CACHE_ID_COUNT * sizeof *c->ids);
    if (!c->slots || !c->keys || !c->ids) {
        tok_cache_free(c);
        return NULL;
    }
    return c;
}

void tok_cache_free(tok_cache *c) {
    if (!c) return;
    free(c->slots);
    free(c->keys);
    free(c->ids);
    free(c);
}

int tok_cache_get(const tok_cache *c, const char *w, size_t n, tok_ids *out) {
    if (!c || n == 0 || n > TOK_CACHE_MAX_WORD) return 0;
    uint32_t h = tok_hash(w, n);
    for (uint32_t j = h & (CACHE_SLOTS - 1);; j = (j + 1) & (CACHE_SLOTS - 1)) {
        const cache_slot *s = &c->slots[j];
        if (s->key_len == 0) return 0;
        if (s->hash == h && s->key_len == n && memcmp(c->keys + s->key_off, w, n) == 0) {
            for (int k = 0; k < s->n_ids; k++) tok_ids_push(out, c->ids[s->ids_off + (uint32_t)k]);
            return 1;
        }
    }
}

void tok_cache_put(tok_cache *c, const char *w, size_t n, const tok_ids *out, int from) {
    int n_ids = out->n - from;
    if (!c || n == 0 || n > TOK_CACHE_MAX_WORD || out->oom || out->unspellable || n_ids <= 0 || n_ids > 0xFFFF) return;
    const int32_t *ids = out->v + from; // out->v is not NULL: n_ids > 0
    if (c->n_entries + 1 > CACHE_MAX_ENTRIES || c->key_used + n > CACHE_KEY_BYTES ||
        c->ids_used + (uint32_t)n_ids > CACHE_ID_COUNT) {
        memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots); // full: start over
        c->n_entries = c->key_used = c->ids_used = 0;
    }
    uint32_t h = tok_hash(w, n), j = h & (CACHE_SLOTS - 1);
    while (c->slots[j].key_len != 0) {
        const cache_slot *s = &c->slots[j];
        if (s->hash == h && s->key_len == n && memcmp(c->keys + s->key_off, w, n) == 0) return;
        j = (j + 1) & (CACHE_SLOTS - 1);
    }
    memcpy(c->keys + c->key_used, w, n);
    memcpy(c->ids + c->ids_used, ids, (size_t)n_ids * sizeof *ids);
    c->slots[j] = (cache_slot){h, c->key_used, c->ids_used, (uint16_t)n, (uint16_t)n_ids};
    c->key_used += (uint32_t)n;
    c->ids_used += (uint32_t)n_ids;
    c->n_entries++;
}
