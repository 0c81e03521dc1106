// grow.h — room for one more item in a growable array (the realloc-doubling
// pattern): RM_GROW(items, n, cap, first) leaves items alone while n < cap,
// else doubles cap (to first when it is 0) and reallocates. Returns RM_OK, or
// RM_ENOMEM with the message set and items and cap unchanged.
//
//     if ((rc = RM_GROW(d->ex, d->n, d->cap, 64))) return rc;
//     d->ex[d->n++] = x;
#ifndef RM_BASE_GROW_H
#define RM_BASE_GROW_H
#include <stddef.h>

// items_ptr: the address of the array's pointer; size: one item's bytes.
int rm_grow(void *items_ptr, int n, int *cap, size_t size, int first);
#define RM_GROW(items, n, cap, first) rm_grow(&(items), (n), &(cap), sizeof *(items), (first))
#endif
