// index.h — exact top-k search over adapter keys by dot product.
//
// Keys and queries are unit vectors from one embedder (embed.h), so the dot
// product is the cosine. Keys are stored as F32, F16 or INT8 (symmetric,
// one scale per key; the query is quantised to [-64, 64] and the dot product
// is taken in integers). Search scans every key (SIMD when the CPU has AVX2,
// scalar otherwise; both give the same ranking up to rounding), optionally
// on several threads, and skips excluded ids (the paper's out-of-domain
// setting drops the request's own task adapter). Ties go to the smaller id.
//
// Not thread-safe for concurrent add/remove; concurrent searches are fine.
#ifndef RM_RETRIEVE_INDEX_H
#define RM_RETRIEVE_INDEX_H
#include <stddef.h>
#include <stdint.h>

typedef enum { RM_KEY_F32 = 0, RM_KEY_F16 = 1, RM_KEY_I8 = 2 } rm_key_type;

typedef struct rm_index rm_index;

typedef struct rm_hit {
    int64_t id;
    float score;
} rm_hit;

int rm_index_create(int dim, rm_key_type type, rm_index **out);
void rm_index_free(rm_index *ix);
int rm_index_dim(const rm_index *ix);
size_t rm_index_size(const rm_index *ix);
rm_key_type rm_index_type(const rm_index *ix);
// Parses "f32", "f16", "int8" (RM_EINVAL otherwise).
int rm_key_type_parse(const char *s, rm_key_type *out);
const char *rm_key_type_name(rm_key_type t);

// Adds key[dim] under id, replacing an existing key with that id.
int rm_index_add(rm_index *ix, int64_t id, const float *key);
// RM_ENOTFOUND when id is absent.
int rm_index_remove(rm_index *ix, int64_t id);
// Threads used by searches (default 1).
void rm_index_set_threads(rm_index *ix, int n_threads);

// The k best keys for each of nq queries q[nq][dim]: out[qi*k + j], best
// first, *n_out[qi] of them (fewer than k when the index is small).
// exclude[qi] lists n_exclude[qi] ids that query qi must not return; both
// may be NULL.
int rm_index_search_batch(const rm_index *ix, const float *q, int nq, int k, const int64_t *const *exclude,
                          const int *n_exclude, rm_hit *out, int *n_out);
// One query.
int rm_index_search(const rm_index *ix, const float *q, int k, const int64_t *exclude, int n_exclude, rm_hit *out,
                    int *n_out);
// For tests: 1 forces the scalar kernels, 0 lets the CPU decide.
void rm_index_force_scalar(int on);
#endif
