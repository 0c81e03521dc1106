// gguf.h — GGUF v2/v3 reader (mmap, zero-copy) and writer.
//
// Reading: gguf_open maps the file and parses the header, every metadata
// key/value (all types, nested arrays) and the tensor infos. Tensor data is
// used in place (pointer into the mapping). Everything is validated against
// the file size before use; a malformed file yields RM_EFORMAT with a message
// naming the file and the problem — never an out-of-bounds read.
#ifndef RM_FORMAT_GGUF_H
#define RM_FORMAT_GGUF_H
#include <stddef.h>
#include <stdint.h>

#include "base/file.h"
#include "tensor/tensor.h"

enum {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
};
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf_str {
    uint64_t len;
    const char *ptr;
} gguf_str; // not NUL-terminated

typedef struct gguf_value gguf_value;
struct gguf_value {
    int type; // GGUF_TYPE_*
    union {
        uint64_t u; // unsigned ints, bool
        int64_t i;  // signed ints
        double f;   // float32 / float64
        gguf_str s; // string
        struct {
            int type;         // element type
            uint64_t n;       // element count
            const void *raw;  // fixed-size elements: little-endian data in the file
            gguf_str *strs;   // string elements (allocated), else NULL
            gguf_value *vals; // array elements (nested arrays, allocated), else NULL
        } arr;
    };
};

typedef struct gguf_kv {
    gguf_str key;
    gguf_value val;
} gguf_kv;

typedef struct gguf_tensor_info {
    gguf_str name;
    int n_dims;
    int64_t ne[4];
    int type;         // GGML type id (may be one ramole cannot compute with)
    uint64_t offset;  // relative to the data section
    const void *data; // into the mapping
    size_t nbytes;
} gguf_tensor_info;

typedef struct gguf_file {
    rm_mmap map;      // owned when opened with gguf_open
    const char *path; // for messages (copy owned)
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor_info *tensors;
    size_t alignment;
    size_t data_offset;
} gguf_file;

int gguf_open(gguf_file *g, const char *path);
// The same, reading the file into huge-page-backed memory (rm_mmap_open_resident)
// instead of mapping it: for model weights streamed every token.
int gguf_open_resident(gguf_file *g, const char *path);
// Parses a buffer that the caller keeps alive; `name` is used in messages.
int gguf_parse(gguf_file *g, const void *data, size_t size, const char *name);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find(const gguf_file *g, const char *key);
// Typed getters. RM_ENOTFOUND when missing (no error message set), RM_EFORMAT
// when present with an incompatible type or out of range. Integer getters
// accept any integer type whose value fits.
int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out);
int gguf_get_i32(const gguf_file *g, const char *key, int32_t *out);
int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out);
int gguf_get_f32(const gguf_file *g, const char *key, float *out); // float32/64
int gguf_get_bool(const gguf_file *g, const char *key, int *out);
int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
// Array of any element type; *out points at the value (type GGUF_TYPE_ARRAY).
int gguf_get_arr(const gguf_file *g, const char *key, const gguf_value **out);
// Element i of a fixed-size numeric array as double / int64 (bounds-checked by caller).
double gguf_arr_f64(const gguf_value *arr, uint64_t i);
int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i);
int gguf_str_eq(gguf_str s, const char *c);
// Copies s into buf as a NUL-terminated string (truncated to cap-1).
void gguf_str_copy(gguf_str s, char *buf, size_t cap);

const gguf_tensor_info *gguf_find_tensor(const gguf_file *g, const char *name);
// Wraps a tensor info as an rm_tensor (fails if the type is unsupported).
int gguf_tensor_view(const gguf_file *g, const gguf_tensor_info *ti, rm_tensor *out);

// Names of GGML tensor types ("q4_K", "iq2_xs", ...; NULL if the id is not a
// GGML type) and of GGUF value types ("u32", "str", "arr", ...; "?" if unknown).
const char *gguf_ggml_type_name(int ggml_type);
const char *gguf_value_type_name(int gguf_type);
// Bytes of a tensor of any GGML type (not only those ramole computes with):
// 0 when the type is unknown, ne[0] is not a multiple of its block, a
// dimension is not positive or the size overflows.
size_t gguf_ggml_nbytes(int ggml_type, int n_dims, const int64_t *ne);

// ---- writer ----
typedef struct gguf_writer gguf_writer;
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
// Setters replace an existing key of the same name. Strings are copied.
int gguf_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_set_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_set_f32(gguf_writer *w, const char *key, float v);
int gguf_set_bool(gguf_writer *w, const char *key, int v);
int gguf_set_str(gguf_writer *w, const char *key, const char *v);
// Fixed-size element arrays: elem_type is GGUF_TYPE_*, data holds n elements
// in that type (copied).
int gguf_set_arr(gguf_writer *w, const char *key, int elem_type, const void *data, uint64_t n);
int gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n);
// Copies any value (including nested arrays) read from another file.
int gguf_set_value(gguf_writer *w, const char *key, const gguf_value *v);
// Adds a tensor. data is NOT copied: it must stay valid until gguf_write.
int gguf_add_tensor(gguf_writer *w, const char *name, rm_type type, int n_dims, const int64_t *ne, const void *data);
// Adds a tensor whose bytes are produced at write time: gguf_write calls
// fill(ctx, dst, nbytes) once, in the order tensors were added, with a buffer
// to fill completely; a non-zero return aborts the write with that status
// (fill sets the message). Keeps memory at one tensor for large conversions.
typedef int (*gguf_fill_fn)(void *ctx, void *dst, size_t nbytes);
int gguf_add_tensor_fill(gguf_writer *w, const char *name, rm_type type, int n_dims, const int64_t *ne,
                         gguf_fill_fn fill, void *ctx);
// Writes version 3 with the alignment (general.alignment if set, else 32), to
// path via a temporary file renamed into place.
int gguf_write(gguf_writer *w, const char *path);
#endif
