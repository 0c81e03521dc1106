// grow.c — see grow.h.
#include "base/grow.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"

int rm_grow(void *items_ptr, int n, int *cap, size_t size, int first) {
    if (n < *cap) return RM_OK;
    if (*cap > INT_MAX / 2) return rm_errorf(RM_ENOMEM, "out of memory (more than %d items)", *cap);
    int nc = *cap ? 2 * *cap : first;
    if ((size_t)nc > SIZE_MAX / size) return rm_errorf(RM_ENOMEM, "out of memory");
    void *items; // read and written through memcpy: items_ptr may point to any object pointer type
    memcpy(&items, items_ptr, sizeof items);
    void *p = realloc(items, (size_t)nc * size);
    if (!p) return rm_errorf(RM_ENOMEM, "out of memory");
    memcpy(items_ptr, &p, sizeof p);
    *cap = nc;
    return RM_OK;
}
