// kvcache.c — see kvcache.h.
#include "model/kvcache.h"
#include "base/err.h"
#include "base/file.h"

#include <stdlib.h>
#include <string.h>

int rm_kvcache_init(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim) {
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_slots <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return rm_errorf(RM_EINVAL, "kv cache: bad shape %d layers x %d slots x %d ctx x %d", n_layer, n_slots, n_ctx,
                         kv_dim);
    // The line between blocks keeps the blocks of a slot in successive
    // layers (power-of-two sizes apart, and physically so in huge pages) from
    // all falling on the same cache sets.
    size_t blk = (size_t)n_ctx * kv_dim + 16, n = (size_t)n_layer * n_slots * blk;
    kv->k = rm_huge_alloc(n * sizeof(float));
    kv->v = rm_huge_alloc(n * sizeof(float));
    kv->len = calloc((size_t)n_slots, sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->len) {
        rm_huge_free(kv->k, n * sizeof(float));
        rm_huge_free(kv->v, n * sizeof(float));
        free(kv->len);
        memset(kv, 0, sizeof *kv);
        return rm_errorf(RM_ENOMEM, "kv cache: cannot allocate %zu MiB", 2 * n * sizeof(float) >> 20);
    }
    kv->n_layer = n_layer;
    kv->n_slots = n_slots;
    kv->n_ctx = n_ctx;
    kv->kv_dim = kv_dim;
    kv->blk = blk;
    return RM_OK;
}

void rm_kvcache_free(rm_kvcache *kv) {
    size_t n = (size_t)kv->n_layer * kv->n_slots * kv->blk;
    rm_huge_free(kv->k, n * sizeof(float));
    rm_huge_free(kv->v, n * sizeof(float));
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

void rm_kvcache_clear_slot(rm_kvcache *kv, int slot) {
    if (slot >= 0 && slot < kv->n_slots) kv->len[slot] = 0;
}

size_t rm_kvcache_bytes(const rm_kvcache *kv) {
    return 2 * (size_t)kv->n_layer * kv->n_slots * kv->blk * sizeof(float);
}
