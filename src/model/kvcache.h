// kvcache.h — the key/value cache: n_slots sequences x n_ctx positions per layer.
// K and V are anonymous mappings asking for transparent huge pages (kvcache.c),
// so memory is committed in 2 MiB pages as positions are first written.
// Elements are f32, or f16 (RM_KV_F16: half the memory and half the bytes
// attention reads; each value rounded to nearest even as it is stored).
#ifndef RM_MODEL_KVCACHE_H
#define RM_MODEL_KVCACHE_H
#include <stddef.h>
#include <stdint.h>

#include "base/fp16.h"

enum { RM_KV_F32 = 0, RM_KV_F16 = 1 };

typedef struct rm_kvcache {
    int n_layer, n_slots, n_ctx, kv_dim;
    int type;     // RM_KV_F32 / RM_KV_F16: the elements of k and v
    size_t blk;   // elements from one (layer, slot) block to the next: n_ctx (up to a multiple of 32) * kv_dim
                  // and a cache line
    void *k;      // [n_layer][n_slots] blocks of K transposed in strips of 32 positions: [n_ctx / 32][kv_dim][32]
    void *v;      // [n_layer][n_slots] blocks of [n_ctx][kv_dim]
    int32_t *len; // [n_slots] positions filled (max pos written + 1)
} rm_kvcache;

// An f32 cache.
int rm_kvcache_init(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim);
// A cache of the given element type (RM_KV_F32 / RM_KV_F16).
int rm_kvcache_init_type(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim, int type);
void rm_kvcache_free(rm_kvcache *kv);
// Forgets slot's contents (the next sequence starts at position 0).
void rm_kvcache_clear_slot(rm_kvcache *kv, int slot);
size_t rm_kvcache_bytes(const rm_kvcache *kv);
// Bytes of an element of that type; "f32" / "f16"; rm_kv_type_parse returns
// -1 for anything else.
size_t rm_kv_elem_bytes(int type);
const char *rm_kv_type_name(int type);
int rm_kv_type_parse(const char *s);

// Element offset of (layer, slot)'s block.
static inline size_t rm_kv_block(const rm_kvcache *kv, int layer, int slot) {
    return ((size_t)layer * kv->n_slots + slot) * kv->blk;
}
// K^T of (layer, slot): element (i, pos), i < kv_dim, at [rm_kv_k_index(kv, i, pos)].
// Stored transposed so that attention's Q K^T reads rows of positions, in
// strips of 32 positions so that a KV head's keys of a strip (head_dim rows
// of 32) are one contiguous run: decode streams them instead of touching
// head_dim rows far apart (rm_gemm_nn_strips). rm_kv_kt for an f32 cache,
// rm_kv_kt_h for an f16 one.
static inline size_t rm_kv_k_index(const rm_kvcache *kv, int i, int pos) {
    return ((size_t)(pos / 32) * kv->kv_dim + i) * 32 + pos % 32;
}
static inline float *rm_kv_kt(const rm_kvcache *kv, int layer, int slot) {
    return (float *)kv->k + rm_kv_block(kv, layer, slot);
}
static inline rm_f16 *rm_kv_kt_h(const rm_kvcache *kv, int layer, int slot) {
    return (rm_f16 *)kv->k + rm_kv_block(kv, layer, slot);
}
// The value row of (layer, slot, pos), kv_dim elements.
static inline float *rm_kv_v(const rm_kvcache *kv, int layer, int slot, int pos) {
    return (float *)kv->v + rm_kv_block(kv, layer, slot) + (size_t)pos * kv->kv_dim;
}
static inline rm_f16 *rm_kv_v_h(const rm_kvcache *kv, int layer, int slot, int pos) {
    return (rm_f16 *)kv->v + rm_kv_block(kv, layer, slot) + (size_t)pos * kv->kv_dim;
}
// Stores the key and value rows k[kv_dim], v[kv_dim] of (layer, slot, pos),
// rounded to f16 in an f16 cache.
void rm_kv_put(const rm_kvcache *kv, int layer, int slot, int pos, const float *k, const float *v);
#endif
