// kvcache.c — see kvcache.h.
#include "model/kvcache.h"
#include "base/err.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

enum { HUGE_PAGE = 2 << 20 };

// Bytes mapped for one of the two tensors (K, V): whole 2 MiB pages from
// one page on, else the size itself.
static size_t tensor_map_bytes(size_t n_floats) {
    size_t b = n_floats * sizeof(float);
    return b < HUGE_PAGE ? b : (b + HUGE_PAGE - 1) & ~((size_t)HUGE_PAGE - 1);
}

// Zeroed memory that asks for transparent huge pages when it spans one:
// decode reads the whole cache of its slot once per token, in short runs per
// head and position, and with 4 KiB pages most of those runs start with a
// TLB miss (the weights get huge pages too, rm_mmap_open_resident).
static float *tensor_map(size_t n_floats) {
    size_t b = tensor_map_bytes(n_floats);
    void *p = mmap(NULL, b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (b >= HUGE_PAGE) madvise(p, b, MADV_HUGEPAGE); // advisory: fine if the kernel says no
    return p;
}

static void tensor_unmap(float *p, size_t n_floats) {
    if (p) munmap(p, tensor_map_bytes(n_floats));
}

int rm_kvcache_init(rm_kvcache *kv, int n_layer, int n_slots, int n_ctx, int kv_dim) {
    memset(kv, 0, sizeof *kv);
    if (n_layer <= 0 || n_slots <= 0 || n_ctx <= 0 || kv_dim <= 0)
        return rm_errorf(RM_EINVAL, "kv cache: bad shape %d layers x %d slots x %d ctx x %d", n_layer, n_slots, n_ctx,
                         kv_dim);
    // The line between blocks keeps the blocks of a slot in successive
    // layers (power-of-two sizes apart, and physically so in huge pages) from
    // all falling on the same cache sets.
    size_t blk = (size_t)n_ctx * kv_dim + 16, n = (size_t)n_layer * n_slots * blk;
    kv->k = tensor_map(n);
    kv->v = tensor_map(n);
    kv->len = calloc((size_t)n_slots, sizeof(int32_t));
    if (!kv->k || !kv->v || !kv->len) {
        tensor_unmap(kv->k, n);
        tensor_unmap(kv->v, n);
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
    tensor_unmap(kv->k, n);
    tensor_unmap(kv->v, n);
    free(kv->len);
    memset(kv, 0, sizeof *kv);
}

void rm_kvcache_clear_slot(rm_kvcache *kv, int slot) {
    if (slot >= 0 && slot < kv->n_slots) kv->len[slot] = 0;
}

size_t rm_kvcache_bytes(const rm_kvcache *kv) {
    return 2 * (size_t)kv->n_layer * kv->n_slots * kv->blk * sizeof(float);
}
