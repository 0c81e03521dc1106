// kvcache.c — see kvcache.h.
#include "model/kvcache.h"
#include "base/err.h"
#include "base/file.h"

#include <stdlib.h>
#include <string.h>

int rm_kvcache_init(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim) {
    return rm_kvcache_init_type(kv, n_layer, n_slots, n_ctx, kv_dim, RM_KV_F32);
}

int rm_kvcache_init_type(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim, int type) {
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_slots <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return rm_errorf(RM_EINVAL, "kv cache: bad shape %d layers x %d slots x %d ctx x %d", n_layer, n_slots, n_ctx,
                         kv_dim);
    if (type != RM_KV_F32 && type != RM_KV_F16) return rm_errorf(RM_EINVAL, "kv cache: unknown element type %d", type);
    *kv = (rm_kvcache){.n_layer = n_layer, .n_slots = n_slots, .n_ctx = n_ctx, .kv_dim = kv_dim, .type = type};
    // Whole strips of 32 positions, and a line between blocks, which keeps
    // the blocks of a slot in successive layers (power-of-two sizes apart,
    // and physically so in huge pages) from all falling on the same cache sets.
    kv->blk = (size_t)(n_ctx + 31) / 32 * 32 * kv_dim + 64 / rm_kv_elem_bytes(type);
    const size_t bytes = rm_kvcache_bytes(kv) / 2;
    kv->k = rm_huge_alloc(bytes);
    kv->v = rm_huge_alloc(bytes);
    kv->len = calloc((size_t)n_slots, sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->len) {
        rm_kvcache_free(kv);
        return rm_errorf(RM_ENOMEM, "kv cache: cannot allocate %zu MiB", 2 * bytes >> 20);
    }
    return RM_OK;
}

void rm_kvcache_free(rm_kvcache *kv) {
    const size_t bytes = rm_kvcache_bytes(kv) / 2;
    rm_huge_free(kv->k, bytes);
    rm_huge_free(kv->v, bytes);
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

void rm_kvcache_clear_slot(rm_kvcache *kv, int slot) {
    if (slot >= 0 && slot < kv->n_slots) kv->len[slot] = 0;
}

size_t rm_kvcache_bytes(const rm_kvcache *kv) {
    return 2 * (size_t)kv->n_layer * kv->n_slots * kv->blk * rm_kv_elem_bytes(kv->type);
}

size_t rm_kv_elem_bytes(int type) { return type == RM_KV_F16 ? sizeof(rm_f16) : sizeof(float); }

const char *rm_kv_type_name(int type) { return type == RM_KV_F16 ? "f16" : "f32"; }

int rm_kv_type_parse(const char *s) {
    if (s && !strcmp(s, "f32")) return RM_KV_F32;
    if (s && !strcmp(s, "f16")) return RM_KV_F16;
    return -1;
}

void rm_kv_put(const rm_kvcache *kv, int layer, int slot, int pos, const float *k, const float *v) {
    const size_t at = rm_kv_k_index(kv, 0, pos); // element i is 32 i further
    if (kv->type == RM_KV_F16) {
        rm_f16 *kt = rm_kv_kt_h(kv, layer, slot) + at, *vr = rm_kv_v_h(kv, layer, slot, pos);
        for (int i = 0; i < kv->kv_dim; i++) kt[i * 32] = rm_f32_to_f16(k[i]);
        for (int i = 0; i < kv->kv_dim; i++) vr[i] = rm_f32_to_f16(v[i]);
        return;
    }
    float *kt = rm_kv_kt(kv, layer, slot) + at;
    for (int i = 0; i < kv->kv_dim; i++) kt[i * 32] = k[i];
    memcpy(rm_kv_v(kv, layer, slot, pos), v, (size_t)kv->kv_dim * sizeof(float));
}
