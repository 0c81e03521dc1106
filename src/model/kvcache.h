// kvcache.h — the key/value cache: n_slots sequences x n_ctx positions per layer.
// K and V are anonymous mappings asking for transparent huge pages (kvcache.c),
// so memory is committed in 2 MiB pages as positions are first written.
#ifndef RM_MODEL_KVCACHE_H
#define RM_MODEL_KVCACHE_H
#include <stddef.h>
#include <stdint.h>

typedef struct rm_kvcache {
    int n_layer, n_slots, n_ctx, kv_dim;
    size_t blk;   // floats from one (layer, slot) block to the next: n_ctx * kv_dim and a cache line
    float *k;     // [n_layer][n_slots] blocks of [kv_dim][n_ctx]: K transposed, a position is a column
    float *v;     // [n_layer][n_slots] blocks of [n_ctx][kv_dim]
    int32_t *len; // [n_slots] positions filled (max pos written + 1)
} rm_kvcache;

int rm_kvcache_init(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim);
void rm_kvcache_free(rm_kvcache *kv);
// Forgets slot's contents (the next sequence starts at position 0).
void rm_kvcache_clear_slot(rm_kvcache *kv, int slot);
size_t rm_kvcache_bytes(const rm_kvcache *kv);

// K^T of (layer, slot): element (i, pos) at [i * n_ctx + pos], i < kv_dim.
// Stored transposed so that attention's Q K^T reads rows of positions.
static inline float *rm_kv_kt(const rm_kvcache *kv, int layer, int slot) {
    return kv->k + ((size_t)layer * kv->n_slots + slot) * kv->blk;
}
// Stores the key row k[kv_dim] of (layer, slot, pos).
static inline void rm_kv_put_k(const rm_kvcache *kv, int layer, int slot, int pos, const float *k) {
    float *kt = rm_kv_kt(kv, layer, slot) + pos;
    for (int i = 0; i < kv->kv_dim; i++) kt[(size_t)i * kv->n_ctx] = k[i];
}
static inline float *rm_kv_v(const rm_kvcache *kv, int layer, int slot, int pos) {
    return kv->v + ((size_t)layer * kv->n_slots + slot) * kv->blk + (size_t)pos * kv->kv_dim;
}
#endif
