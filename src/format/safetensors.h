// safetensors.h — reader (mmap, validated) and writer for .safetensors files.
//
// Validation: 8-byte little-endian header length within the file, JSON
// header, every tensor's dtype known, shape product x dtype size equal to its
// byte range, ranges inside the data section, non-overlapping and together
// covering it contiguously. "__metadata__" (string -> string) is kept.
#ifndef RM_FORMAT_SAFETENSORS_H
#define RM_FORMAT_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#include "base/file.h"

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } st_dtype;

typedef struct st_tensor {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[8]; // outermost first, as in the file (PyTorch order)
    const void *data; // into the mapping
    size_t nbytes;
} st_tensor;

typedef struct st_file {
    rm_mmap map;
    char *path;
    size_t n_tensors;
    st_tensor *tensors;
    size_t n_meta;
    char **meta_keys, **meta_vals;
} st_file;

int st_open(st_file *f, const char *path);
int st_parse(st_file *f, const void *data, size_t size, const char *name); // buffer kept by caller
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
const char *st_dtype_name(st_dtype t);
size_t st_dtype_size(st_dtype t);
// Converts a F32/F16/BF16/F64 tensor to f32: the whole tensor, or elements
// first..first+n (RM_EINVAL if out of range). RM_EUNSUPPORTED for other dtypes.
int st_to_f32(const st_tensor *t, float *out);
int st_to_f32_range(const st_tensor *t, size_t first, size_t n, float *out);

typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
void st_writer_free(st_writer *w);
int st_writer_meta(st_writer *w, const char *key, const char *val);
// shape outermost first; data NOT copied (kept until st_write).
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int n_dims, const int64_t *shape, const void *data);
int st_write(st_writer *w, const char *path);
#endif
