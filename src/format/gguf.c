// gguf.c — GGUF v2/v3 reader and v3 writer (see gguf.h).
//
// File layout (all little-endian):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv
//   n_kv x { str key, u32 type, value }          str = u64 len + bytes
//   n_tensors x { str name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding to `alignment`, then the data section; each tensor's offset
//   is relative to the data section and a multiple of `alignment`.
// An array value is { u32 elem_type, u64 n, n elements }; elements may be
// arrays themselves.
//
// The reader trusts nothing: every count is checked against the bytes that
// remain before anything is allocated for it, so a count of 2^60 fails at
// once instead of asking malloc for it.
#define _GNU_SOURCE
#include "format/gguf.h"
#include "base/err.h"
#include "base/json.h"
#include "format/outfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_MAX_ARRAY_DEPTH 8 // arrays of arrays nest at most this deep
#define GGUF_MAX_DIMS 4

// ---------------------------------------------------------------------------
// Type tables
// ---------------------------------------------------------------------------

// GGML tensor types: block size in elements and bytes. Ids with no name were
// removed from GGML and never appear in valid files.
static const struct {
    const char *name;
    int blck;
    int size;
} ggml_types[] = {
    [0] = {"f32", 1, 4},         [1] = {"f16", 1, 2},         [2] = {"q4_0", 32, 18},      [3] = {"q4_1", 32, 20},
    [6] = {"q5_0", 32, 22},      [7] = {"q5_1", 32, 24},      [8] = {"q8_0", 32, 34},      [9] = {"q8_1", 32, 36},
    [10] = {"q2_K", 256, 84},    [11] = {"q3_K", 256, 110},   [12] = {"q4_K", 256, 144},   [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210},   [15] = {"q8_K", 256, 292},   [16] = {"iq2_xxs", 256, 66}, [17] = {"iq2_xs", 256, 74},
    [18] = {"iq3_xxs", 256, 98}, [19] = {"iq1_s", 256, 50},   [20] = {"iq4_nl", 32, 18},   [21] = {"iq3_s", 256, 110},
    [22] = {"iq2_s", 256, 82},   [23] = {"iq4_xs", 256, 136}, [24] = {"i8", 1, 1},         [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},        [27] = {"i64", 1, 8},        [28] = {"f64", 1, 8},        [29] = {"iq1_m", 256, 56},
    [30] = {"bf16", 1, 2},       [34] = {"tq1_0", 256, 54},   [35] = {"tq2_0", 256, 66},   [39] = {"mxfp4", 32, 17},
};
#define N_GGML_TYPES ((int)(sizeof ggml_types / sizeof ggml_types[0]))

const char *gguf_ggml_type_name(int t) { return t >= 0 && t < N_GGML_TYPES ? ggml_types[t].name : NULL; }

// Bytes of one element of a fixed-size GGUF value type, 0 for string/array.
static size_t value_size(int t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16: return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32: return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64: return 8;
    default: return 0;
    }
}

static int value_type_valid(int t) { return t >= GGUF_TYPE_UINT8 && t <= GGUF_TYPE_FLOAT64; }

const char *gguf_value_type_name(int t) {
    static const char *names[] = {"u8",   "i8",  "u16", "i16", "u32", "i32", "f32",
                                  "bool", "str", "arr", "u64", "i64", "f64"};
    return value_type_valid(t) ? names[t] : "?";
}

static int is_unsigned_type(int t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}
static int is_signed_type(int t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

// Multiplies with an overflow check against `limit`; 0 on overflow.
static int mul_ok(uint64_t a, uint64_t b, uint64_t limit, uint64_t *out) {
    if (a != 0 && b > limit / a) return 0;
    *out = a * b;
    return 1;
}

size_t gguf_ggml_nbytes(int type, int n_dims, const int64_t *ne) {
    const char *name = gguf_ggml_type_name(type);
    if (!name || n_dims < 1 || n_dims > GGUF_MAX_DIMS) return 0;
    uint64_t blck = (uint64_t)ggml_types[type].blck, bytes = 0, elems = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0) return 0;
        if (!mul_ok(elems, (uint64_t)ne[d], INT64_MAX, &elems)) return 0;
    }
    if ((uint64_t)ne[0] % blck != 0) return 0;
    // elements / blck blocks of `size` bytes; also fits size_t and int64.
    if (!mul_ok(elems / blck, (uint64_t)ggml_types[type].size, (uint64_t)(SIZE_MAX < INT64_MAX ? SIZE_MAX : INT64_MAX),
                &bytes))
        return 0;
    return (size_t)bytes;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// ---------------------------------------------------------------------------
// Reader: a bounds-checked cursor
// ---------------------------------------------------------------------------

typedef struct cursor {
    const uint8_t *data;
    size_t size, pos;
    const char *name;
} cursor;

static int truncated(const cursor *c, const char *what) {
    return rm_errorf(RM_EFORMAT, "%s: truncated at offset %zu reading %s (file is %zu bytes)", c->name, c->pos, what,
                     c->size);
}

static int rd_bytes(cursor *c, void *out, size_t n, const char *what) {
    if (c->size - c->pos < n) return truncated(c, what);
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
    return RM_OK;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) { return rd_bytes(c, v, 4, what); }
static int rd_u64(cursor *c, uint64_t *v, const char *what) { return rd_bytes(c, v, 8, what); }

static int rd_str(cursor *c, gguf_str *s, const char *what) {
    uint64_t len = 0;
    int rc = rd_u64(c, &len, what);
    if (rc != RM_OK) return rc;
    if (len > c->size - c->pos)
        return rm_errorf(RM_EFORMAT, "%s: %s at offset %zu has length %llu, past the end of the file", c->name, what,
                         c->pos - 8, (unsigned long long)len);
    s->len = len;
    s->ptr = (const char *)c->data + c->pos;
    c->pos += (size_t)len;
    return RM_OK;
}

// Fails unless n elements of at least `min_bytes` each can fit in what remains.
static int check_count(cursor *c, uint64_t n, size_t min_bytes, const char *what) {
    if (n > (c->size - c->pos) / min_bytes)
        return rm_errorf(RM_EFORMAT, "%s: %s count %llu at offset %zu exceeds the remaining %zu bytes", c->name, what,
                         (unsigned long long)n, c->pos, c->size - c->pos);
    return RM_OK;
}

static int rd_value(cursor *c, int type, gguf_value *v, int depth, const char *key);

static int rd_array(cursor *c, gguf_value *v, int depth, const char *key) {
    uint32_t et = 0;
    uint64_t n = 0;
    int rc;
    if ((rc = rd_u32(c, &et, "array element type")) != RM_OK) return rc;
    if ((rc = rd_u64(c, &n, "array length")) != RM_OK) return rc;
    if (!value_type_valid((int)et))
        return rm_errorf(RM_EFORMAT, "%s: key %s: unknown array element type %u", c->name, key, et);
    v->arr.type = (int)et;
    v->arr.n = n;
    v->arr.raw = NULL;
    v->arr.strs = NULL;
    v->arr.vals = NULL;
    size_t es = value_size((int)et);
    if (es) {
        if ((rc = check_count(c, n, es, "array")) != RM_OK) return rc;
        v->arr.raw = c->data + c->pos;
        c->pos += (size_t)n * es;
        return RM_OK;
    }
    if (et == GGUF_TYPE_STRING) {
        if ((rc = check_count(c, n, 8, "string array")) != RM_OK) return rc;
        if (n == 0) return RM_OK;
        v->arr.strs = calloc((size_t)n, sizeof *v->arr.strs);
        if (!v->arr.strs) return rm_errorf(RM_ENOMEM, "%s: out of memory", c->name);
        for (uint64_t i = 0; i < n; i++)
            if ((rc = rd_str(c, &v->arr.strs[i], "string array element")) != RM_OK) return rc;
        return RM_OK;
    }
    // Nested arrays: each element is { u32 type, u64 n, ... }, at least 12 bytes.
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return rm_errorf(RM_EFORMAT, "%s: key %s: arrays nested deeper than %d", c->name, key, GGUF_MAX_ARRAY_DEPTH);
    if ((rc = check_count(c, n, 12, "nested array")) != RM_OK) return rc;
    if (n == 0) return RM_OK;
    v->arr.vals = calloc((size_t)n, sizeof *v->arr.vals);
    if (!v->arr.vals) return rm_errorf(RM_ENOMEM, "%s: out of memory", c->name);
    for (uint64_t i = 0; i < n; i++) {
        v->arr.vals[i].type = GGUF_TYPE_ARRAY; // freeable even if it fails half-read
        if ((rc = rd_value(c, GGUF_TYPE_ARRAY, &v->arr.vals[i], depth + 1, key)) != RM_OK) return rc;
    }
    return RM_OK;
}

static int rd_value(cursor *c, int type, gguf_value *v, int depth, const char *key) {
    v->type = type;
    size_t es = value_size(type);
    if (es) {
        uint8_t b[8];
        int rc = rd_bytes(c, b, es, "value");
        if (rc != RM_OK) return rc;
        v->u = 0;
        switch (type) {
        case GGUF_TYPE_UINT8:
        case GGUF_TYPE_BOOL: v->u = b[0]; break;
        case GGUF_TYPE_INT8: v->i = (int8_t)b[0]; break;
        case GGUF_TYPE_UINT16: {
            uint16_t x;
            memcpy(&x, b, 2);
            v->u = x;
            break;
        }
        case GGUF_TYPE_INT16: {
            int16_t x;
            memcpy(&x, b, 2);
            v->i = x;
            break;
        }
        case GGUF_TYPE_UINT32: {
            uint32_t x;
            memcpy(&x, b, 4);
            v->u = x;
            break;
        }
        case GGUF_TYPE_INT32: {
            int32_t x;
            memcpy(&x, b, 4);
            v->i = x;
            break;
        }
        case GGUF_TYPE_FLOAT32: {
            float x;
            memcpy(&x, b, 4);
            v->f = x;
            break;
        }
        case GGUF_TYPE_UINT64: memcpy(&v->u, b, 8); break;
        case GGUF_TYPE_INT64: memcpy(&v->i, b, 8); break;
        case GGUF_TYPE_FLOAT64: memcpy(&v->f, b, 8); break;
        }
        if (type == GGUF_TYPE_BOOL && v->u > 1)
            return rm_errorf(RM_EFORMAT, "%s: key %s: bool value %u is neither 0 nor 1", c->name, key, (unsigned)v->u);
        return RM_OK;
    }
    if (type == GGUF_TYPE_STRING) return rd_str(c, &v->s, "string value");
    return rd_array(c, v, depth, key);
}

// Duplicate detection: sort pointers to the names, compare neighbours.
static int str_cmp(gguf_str a, gguf_str b) {
    size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
    int r = memcmp(a.ptr, b.ptr, n);
    if (r) return r;
    return a.len < b.len ? -1 : a.len > b.len;
}
static int str_ptr_cmp(const void *a, const void *b) {
    return str_cmp(**(const gguf_str *const *)a, **(const gguf_str *const *)b);
}

// names[i] at stride bytes apart; fails naming the first duplicate.
static int check_unique(const char *fname, const void *base, size_t n, size_t stride, const char *what) {
    if (n < 2) return RM_OK;
    const gguf_str **p = malloc(n * sizeof *p);
    if (!p) return rm_errorf(RM_ENOMEM, "%s: out of memory", fname);
    for (size_t i = 0; i < n; i++) p[i] = (const gguf_str *)((const char *)base + i * stride);
    qsort(p, n, sizeof *p, str_ptr_cmp);
    int rc = RM_OK;
    for (size_t i = 1; i < n; i++)
        if (str_cmp(*p[i - 1], *p[i]) == 0) {
            rc = rm_errorf(RM_EFORMAT, "%s: duplicate %s '%.*s'", fname, what, (int)(p[i]->len > 200 ? 200 : p[i]->len),
                           p[i]->ptr);
            break;
        }
    free(p);
    return rc;
}

static int rd_header_kv(gguf_file *g, cursor *c) {
    // Each pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    int rc = check_count(c, g->n_kv, 13, "metadata");
    if (rc != RM_OK) return rc;
    if (g->n_kv) {
        g->kv = calloc((size_t)g->n_kv, sizeof *g->kv);
        if (!g->kv) return rm_errorf(RM_ENOMEM, "%s: out of memory", c->name);
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        uint32_t type = 0;
        if ((rc = rd_str(c, &kv->key, "metadata key")) != RM_OK) return rc;
        char key[96];
        gguf_str_copy(kv->key, key, sizeof key);
        if ((rc = rd_u32(c, &type, "metadata value type")) != RM_OK) return rc;
        if (!value_type_valid((int)type))
            return rm_errorf(RM_EFORMAT, "%s: key %s has unknown value type %u", c->name, key, type);
        if ((rc = rd_value(c, (int)type, &kv->val, 0, key)) != RM_OK) return rc;
    }
    return check_unique(c->name, g->kv, (size_t)g->n_kv, sizeof *g->kv, "metadata key");
}

static int rd_tensor_info(gguf_file *g, cursor *c, gguf_tensor_info *ti) {
    uint32_t n_dims = 0, type = 0;
    int rc;
    if ((rc = rd_str(c, &ti->name, "tensor name")) != RM_OK) return rc;
    char name[96];
    gguf_str_copy(ti->name, name, sizeof name);
    if ((rc = rd_u32(c, &n_dims, "tensor n_dims")) != RM_OK) return rc;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s has n_dims %u (want 1..%d)", c->name, name, n_dims, GGUF_MAX_DIMS);
    ti->n_dims = (int)n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) ti->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne = 0;
        if ((rc = rd_u64(c, &ne, "tensor shape")) != RM_OK) return rc;
        if (ne == 0 || ne > INT64_MAX)
            return rm_errorf(RM_EFORMAT, "%s: tensor %s has dimension %u = %lld (must be positive)", c->name, name, d,
                             (long long)ne);
        ti->ne[d] = (int64_t)ne;
    }
    if ((rc = rd_u32(c, &type, "tensor type")) != RM_OK) return rc;
    if ((rc = rd_u64(c, &ti->offset, "tensor offset")) != RM_OK) return rc;
    if (!gguf_ggml_type_name((int)type))
        return rm_errorf(RM_EFORMAT, "%s: tensor %s has unknown GGML type id %u", c->name, name, type);
    ti->type = (int)type;
    ti->nbytes = gguf_ggml_nbytes(ti->type, ti->n_dims, ti->ne);
    if (ti->nbytes == 0)
        return rm_errorf(RM_EFORMAT,
                         "%s: tensor %s: shape [%lld,%lld,%lld,%lld] overflows or ne[0] is not a multiple of the "
                         "%s block (%d)",
                         c->name, name, (long long)ti->ne[0], (long long)ti->ne[1], (long long)ti->ne[2],
                         (long long)ti->ne[3], ggml_types[type].name, ggml_types[type].blck);
    if (rm_type_supported(ti->type)) {
        // The tensor layer owns the sizes of the types it computes with; they must agree.
        size_t nb = rm_tensor_nbytes((rm_type)ti->type, ti->n_dims, ti->ne);
        if (nb != ti->nbytes)
            return rm_errorf(RM_EFORMAT, "%s: tensor %s: size mismatch for type %s", c->name, name,
                             ggml_types[type].name);
    }
    if (ti->offset % g->alignment != 0)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s offset %llu is not a multiple of the alignment %zu", c->name, name,
                         (unsigned long long)ti->offset, g->alignment);
    return RM_OK;
}

static int offset_cmp(const void *a, const void *b) {
    const gguf_tensor_info *x = *(const gguf_tensor_info *const *)a, *y = *(const gguf_tensor_info *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

// Places every tensor inside the data section and rejects overlaps.
static int check_tensor_layout(gguf_file *g, const uint8_t *data, size_t size) {
    size_t n = (size_t)g->n_tensors, avail = size - g->data_offset;
    for (size_t i = 0; i < n; i++) {
        gguf_tensor_info *ti = &g->tensors[i];
        if (ti->offset > avail || ti->nbytes > avail - ti->offset)
            return rm_errorf(RM_EFORMAT,
                             "%s: tensor %.*s (offset %llu, %zu bytes) extends past the end of the file (data "
                             "section has %zu bytes)",
                             g->path, (int)(ti->name.len > 200 ? 200 : ti->name.len), ti->name.ptr,
                             (unsigned long long)ti->offset, ti->nbytes, avail);
        ti->data = data + g->data_offset + ti->offset;
    }
    if (n < 2) return RM_OK;
    gguf_tensor_info **p = malloc(n * sizeof *p);
    if (!p) return rm_errorf(RM_ENOMEM, "%s: out of memory", g->path);
    for (size_t i = 0; i < n; i++) p[i] = &g->tensors[i];
    qsort(p, n, sizeof *p, offset_cmp);
    int rc = RM_OK;
    for (size_t i = 1; i < n; i++)
        if (p[i - 1]->offset + p[i - 1]->nbytes > p[i]->offset) {
            rc = rm_errorf(RM_EFORMAT, "%s: tensors %.*s and %.*s overlap", g->path,
                           (int)(p[i - 1]->name.len > 200 ? 200 : p[i - 1]->name.len), p[i - 1]->name.ptr,
                           (int)(p[i]->name.len > 200 ? 200 : p[i]->name.len), p[i]->name.ptr);
            break;
        }
    free(p);
    return rc;
}

static int gguf_parse_body(gguf_file *g, const uint8_t *data, size_t size) {
    cursor c = {.data = data, .size = data ? size : 0, .pos = 0, .name = g->path};
    char magic[4];
    int rc;
    if ((rc = rd_bytes(&c, magic, 4, "magic")) != RM_OK) return rc;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) return rm_errorf(RM_EFORMAT, "%s: not a GGUF file (bad magic)", g->path);
    if ((rc = rd_u32(&c, &g->version, "version")) != RM_OK) return rc;
    if (g->version == 1)
        return rm_errorf(RM_EUNSUPPORTED, "%s: GGUF version 1 is not supported (convert it to v3)", g->path);
    if (g->version != 2 && g->version != 3)
        return rm_errorf(RM_EUNSUPPORTED, "%s: unsupported GGUF version %u%s", g->path, g->version,
                         (g->version >> 24) ? " (big-endian file?)" : "");
    if ((rc = rd_u64(&c, &g->n_tensors, "tensor count")) != RM_OK) return rc;
    if ((rc = rd_u64(&c, &g->n_kv, "metadata count")) != RM_OK) return rc;
    if ((rc = rd_header_kv(g, &c)) != RM_OK) return rc;

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find(g, "general.alignment");
    if (al) {
        if (al->val.type != GGUF_TYPE_UINT32)
            return rm_errorf(RM_EFORMAT, "%s: general.alignment has type %s, want u32", g->path,
                             gguf_value_type_name(al->val.type));
        uint64_t a = al->val.u;
        if (a == 0 || (a & (a - 1)) != 0)
            return rm_errorf(RM_EFORMAT, "%s: general.alignment %llu is not a power of two", g->path,
                             (unsigned long long)a);
        g->alignment = (size_t)a;
    }

    // Each tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes.
    if ((rc = check_count(&c, g->n_tensors, 32, "tensor")) != RM_OK) return rc;
    if (g->n_tensors) {
        g->tensors = calloc((size_t)g->n_tensors, sizeof *g->tensors);
        if (!g->tensors) return rm_errorf(RM_ENOMEM, "%s: out of memory", g->path);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if ((rc = rd_tensor_info(g, &c, &g->tensors[i])) != RM_OK) return rc;
    if ((rc = check_unique(g->path, g->tensors, (size_t)g->n_tensors, sizeof *g->tensors, "tensor name")) != RM_OK)
        return rc;

    uint64_t doff = align_up(c.pos, g->alignment);
    if (doff > c.size) {
        if (g->n_tensors > 0)
            return rm_errorf(RM_EFORMAT, "%s: truncated: data section would start at %llu, file is %zu bytes", g->path,
                             (unsigned long long)doff, c.size);
        doff = c.size; // no tensors: the trailing padding may be absent
    }
    g->data_offset = (size_t)doff;
    return check_tensor_layout(g, data, c.size);
}

int gguf_parse(gguf_file *g, const void *data, size_t size, const char *name) {
    memset(g, 0, sizeof *g);
    g->path = strdup(name ? name : "<gguf>");
    if (!g->path) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = gguf_parse_body(g, data, size);
    if (rc != RM_OK) gguf_close(g);
    return rc;
}

static int gguf_open_with(gguf_file *g, const char *path, int resident) {
    rm_mmap m;
    memset(g, 0, sizeof *g);
    int rc = resident ? rm_mmap_open_resident(&m, path) : rm_mmap_open(&m, path);
    if (rc != RM_OK) return rc;
    rc = gguf_parse(g, m.data, m.size, path);
    if (rc != RM_OK) {
        rm_mmap_close(&m);
        return rc;
    }
    g->map = m;
    return RM_OK;
}

int gguf_open(gguf_file *g, const char *path) { return gguf_open_with(g, path, 0); }
int gguf_open_resident(gguf_file *g, const char *path) { return gguf_open_with(g, path, 1); }

static void value_free(gguf_value *v) {
    if (v->type != GGUF_TYPE_ARRAY) return;
    free(v->arr.strs);
    if (v->arr.vals)
        for (uint64_t i = 0; i < v->arr.n; i++) value_free(&v->arr.vals[i]);
    free(v->arr.vals);
    v->arr.strs = NULL;
    v->arr.vals = NULL;
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    if (g->kv)
        for (uint64_t i = 0; i < g->n_kv; i++) value_free(&g->kv[i].val);
    free(g->kv);
    free(g->tensors);
    free((void *)g->path);
    rm_mmap_close(&g->map);
    memset(g, 0, sizeof *g);
}

// ---------------------------------------------------------------------------
// Lookups and getters
// ---------------------------------------------------------------------------

int gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

void gguf_str_copy(gguf_str s, char *buf, size_t cap) {
    if (cap == 0) return;
    size_t n = s.len < cap - 1 ? (size_t)s.len : cap - 1;
    if (n) memcpy(buf, s.ptr, n);
    buf[n] = 0;
}

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}

const gguf_tensor_info *gguf_find_tensor(const gguf_file *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (gguf_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

// Finds key and checks that its type is accepted by `ok`.
static int find_typed(const gguf_file *g, const char *key, int (*ok)(int), const char *want, const gguf_value **out) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return RM_ENOTFOUND;
    if (!ok(kv->val.type))
        return rm_errorf(RM_EFORMAT, "%s: key %s has type %s, want %s", g->path, key,
                         gguf_value_type_name(kv->val.type), want);
    *out = &kv->val;
    return RM_OK;
}

static int is_int_type(int t) { return is_unsigned_type(t) || is_signed_type(t); }
static int is_float_type(int t) { return t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64; }
static int is_bool_type(int t) { return t == GGUF_TYPE_BOOL; }
static int is_str_type(int t) { return t == GGUF_TYPE_STRING; }
static int is_arr_type(int t) { return t == GGUF_TYPE_ARRAY; }

// Integer value in [lo, hi] (as signed / unsigned 64-bit bounds).
static int get_int_in(const gguf_file *g, const char *key, int64_t lo, uint64_t hi, int64_t *si, uint64_t *ui) {
    const gguf_value *v = NULL;
    int rc = find_typed(g, key, is_int_type, "an integer", &v);
    if (rc != RM_OK) return rc;
    int neg = is_signed_type(v->type) && v->i < 0;
    int fits = neg ? v->i >= lo : (is_signed_type(v->type) ? (uint64_t)v->i : v->u) <= hi;
    if (!fits) {
        if (neg) return rm_errorf(RM_EFORMAT, "%s: key %s = %lld is out of range", g->path, key, (long long)v->i);
        return rm_errorf(RM_EFORMAT, "%s: key %s = %llu is out of range", g->path, key,
                         (unsigned long long)(is_signed_type(v->type) ? (uint64_t)v->i : v->u));
    }
    if (si) *si = is_signed_type(v->type) ? v->i : (int64_t)v->u;
    if (ui) *ui = is_signed_type(v->type) ? (uint64_t)v->i : v->u;
    return RM_OK;
}

int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out) {
    uint64_t u;
    int rc = get_int_in(g, key, 0, UINT32_MAX, NULL, &u);
    if (rc == RM_OK) *out = (uint32_t)u;
    return rc;
}

int gguf_get_i32(const gguf_file *g, const char *key, int32_t *out) {
    int64_t i;
    int rc = get_int_in(g, key, INT32_MIN, INT32_MAX, &i, NULL);
    if (rc == RM_OK) *out = (int32_t)i;
    return rc;
}

int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out) {
    return get_int_in(g, key, 0, UINT64_MAX, NULL, out);
}

int gguf_get_f32(const gguf_file *g, const char *key, float *out) {
    const gguf_value *v = NULL;
    int rc = find_typed(g, key, is_float_type, "f32 or f64", &v);
    if (rc == RM_OK) *out = (float)v->f;
    return rc;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out) {
    const gguf_value *v = NULL;
    int rc = find_typed(g, key, is_bool_type, "bool", &v);
    if (rc == RM_OK) *out = v->u != 0;
    return rc;
}

int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out) {
    const gguf_value *v = NULL;
    int rc = find_typed(g, key, is_str_type, "str", &v);
    if (rc == RM_OK) *out = v->s;
    return rc;
}

int gguf_get_arr(const gguf_file *g, const char *key, const gguf_value **out) {
    return find_typed(g, key, is_arr_type, "arr", out);
}

// Reads element i of a fixed-size array; returns 0 for other element types.
static int arr_elem(const gguf_value *a, uint64_t i, int64_t *si, double *f) {
    size_t es = value_size(a->arr.type);
    if (a->type != GGUF_TYPE_ARRAY || !es || !a->arr.raw || i >= a->arr.n) return 0;
    const uint8_t *p = (const uint8_t *)a->arr.raw + i * es;
    switch (a->arr.type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_BOOL: *si = p[0]; break;
    case GGUF_TYPE_INT8: *si = (int8_t)p[0]; break;
    case GGUF_TYPE_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        *si = x;
        break;
    }
    case GGUF_TYPE_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        *si = x;
        break;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        *si = x;
        break;
    }
    case GGUF_TYPE_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        *si = x;
        break;
    }
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64: memcpy(si, p, 8); break;
    case GGUF_TYPE_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        *f = x;
        return 2;
    }
    case GGUF_TYPE_FLOAT64: memcpy(f, p, 8); return 2;
    }
    *f = a->arr.type == GGUF_TYPE_UINT64 ? (double)(uint64_t)*si : (double)*si;
    return 1;
}

double gguf_arr_f64(const gguf_value *arr, uint64_t i) {
    int64_t si = 0;
    double f = 0;
    arr_elem(arr, i, &si, &f);
    return f;
}

int64_t gguf_arr_i64(const gguf_value *arr, uint64_t i) {
    int64_t si = 0;
    double f = 0;
    int kind = arr_elem(arr, i, &si, &f);
    if (kind != 2) return si;
    // Float elements: truncated; NaN gives 0 and out-of-range values saturate
    // (a plain cast would be undefined for them).
    if (f != f) return 0;
    if (f >= 9223372036854775807.0) return INT64_MAX;
    if (f <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)f;
}

int gguf_tensor_view(const gguf_file *g, const gguf_tensor_info *ti, rm_tensor *out) {
    if (!rm_type_supported(ti->type)) {
        const char *tn = gguf_ggml_type_name(ti->type);
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %.*s has type %s, which ramole cannot compute with", g->path,
                         (int)(ti->name.len > 200 ? 200 : ti->name.len), ti->name.ptr, tn ? tn : "?");
    }
    memset(out, 0, sizeof *out);
    out->type = (rm_type)ti->type;
    out->n_dims = ti->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = ti->ne[d];
    out->data = (void *)ti->data;
    return RM_OK;
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

typedef struct w_kv {
    char *key;
    gguf_value val;
} w_kv; // val owns its memory

typedef struct w_tensor {
    char *name;
    rm_type type;
    int n_dims;
    int64_t ne[4];
    size_t nbytes;
    uint64_t offset;
    const void *data;
    gguf_fill_fn fill;
    void *fill_ctx;
} w_tensor;

struct gguf_writer {
    w_kv *kv;
    size_t n_kv, cap_kv;
    w_tensor *t;
    size_t n_t, cap_t;
};

gguf_writer *gguf_writer_new(void) { return calloc(1, sizeof(gguf_writer)); }

// Frees a value built by value_copy (strings and arrays owned).
static void owned_free(gguf_value *v) {
    if (v->type == GGUF_TYPE_STRING) free((void *)v->s.ptr);
    if (v->type != GGUF_TYPE_ARRAY) return;
    free((void *)v->arr.raw);
    if (v->arr.strs)
        for (uint64_t i = 0; i < v->arr.n; i++) free((void *)v->arr.strs[i].ptr);
    free(v->arr.strs);
    if (v->arr.vals)
        for (uint64_t i = 0; i < v->arr.n; i++) owned_free(&v->arr.vals[i]);
    free(v->arr.vals);
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        owned_free(&w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

static int str_dup(gguf_str *dst, gguf_str src) {
    if (src.len > SIZE_MAX - 1) return RM_ENOMEM;
    char *p = malloc((size_t)src.len + 1);
    if (!p) return RM_ENOMEM;
    if (src.len) memcpy(p, src.ptr, (size_t)src.len);
    p[src.len] = 0;
    dst->ptr = p;
    dst->len = src.len;
    return RM_OK;
}

// Deep copy of src into dst (dst owns everything afterwards; on failure dst
// is left freeable by owned_free).
static int value_copy(gguf_value *dst, const gguf_value *src, int depth) {
    memset(dst, 0, sizeof *dst);
    if (!value_type_valid(src->type)) return rm_errorf(RM_EINVAL, "gguf writer: bad value type %d", src->type);
    dst->type = src->type;
    if (src->type == GGUF_TYPE_STRING) {
        dst->type = GGUF_TYPE_UINT8; // nothing owned until the copy succeeds
        if (str_dup(&dst->s, src->s) != RM_OK) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
        dst->type = GGUF_TYPE_STRING;
        return RM_OK;
    }
    if (src->type != GGUF_TYPE_ARRAY) {
        dst->u = src->u; // the union's widest member carries every scalar
        return RM_OK;
    }
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return rm_errorf(RM_EINVAL, "gguf writer: arrays nested deeper than %d", GGUF_MAX_ARRAY_DEPTH);
    int et = src->arr.type;
    uint64_t n = src->arr.n;
    if (!value_type_valid(et)) return rm_errorf(RM_EINVAL, "gguf writer: bad array element type %d", et);
    dst->arr.type = et;
    size_t es = value_size(et);
    if (n == 0) return RM_OK;
    if (es) {
        uint64_t bytes;
        if (!mul_ok(n, es, SIZE_MAX, &bytes) || !src->arr.raw) return rm_errorf(RM_EINVAL, "gguf writer: bad array");
        void *raw = malloc((size_t)bytes);
        if (!raw) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
        memcpy(raw, src->arr.raw, (size_t)bytes);
        dst->arr.raw = raw;
        dst->arr.n = n;
        return RM_OK;
    }
    size_t elem = et == GGUF_TYPE_STRING ? sizeof(gguf_str) : sizeof(gguf_value);
    if (n > SIZE_MAX / elem || (et == GGUF_TYPE_STRING ? !src->arr.strs : !src->arr.vals))
        return rm_errorf(RM_EINVAL, "gguf writer: bad array");
    if (et == GGUF_TYPE_STRING) {
        dst->arr.strs = calloc((size_t)n, sizeof *dst->arr.strs);
        if (!dst->arr.strs) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
        for (uint64_t i = 0; i < n; i++) {
            if (str_dup(&dst->arr.strs[i], src->arr.strs[i]) != RM_OK)
                return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
            dst->arr.n = i + 1;
        }
        return RM_OK;
    }
    dst->arr.vals = calloc((size_t)n, sizeof *dst->arr.vals);
    if (!dst->arr.vals) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
    for (uint64_t i = 0; i < n; i++) {
        dst->arr.n = i + 1;
        int rc = value_copy(&dst->arr.vals[i], &src->arr.vals[i], depth + 1);
        if (rc != RM_OK) return rc;
    }
    return RM_OK;
}

int gguf_set_value(gguf_writer *w, const char *key, const gguf_value *v) {
    if (!w || !key || !v) return rm_errorf(RM_EINVAL, "gguf_set_value: NULL argument");
    gguf_value copy;
    int rc = value_copy(&copy, v, 0);
    if (rc != RM_OK) {
        owned_free(&copy);
        return rc;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kv[i].key, key) == 0) {
            owned_free(&w->kv[i].val);
            w->kv[i].val = copy;
            return RM_OK;
        }
    char *k = NULL;
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? w->cap_kv * 2 : 16;
        w_kv *nk = realloc(w->kv, nc * sizeof *nk);
        if (nk) {
            w->kv = nk;
            w->cap_kv = nc;
        }
    }
    if (w->n_kv < w->cap_kv) k = strdup(key);
    if (!k) {
        owned_free(&copy);
        return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
    }
    w->kv[w->n_kv].key = k;
    w->kv[w->n_kv].val = copy;
    w->n_kv++;
    return RM_OK;
}

static int set_scalar(gguf_writer *w, const char *key, int type, uint64_t u, int64_t i, double f) {
    gguf_value v;
    memset(&v, 0, sizeof v);
    v.type = type;
    if (is_unsigned_type(type) || type == GGUF_TYPE_BOOL) v.u = u;
    else if (is_signed_type(type)) v.i = i;
    else v.f = f;
    return gguf_set_value(w, key, &v);
}

int gguf_set_u32(gguf_writer *w, const char *key, uint32_t v) { return set_scalar(w, key, GGUF_TYPE_UINT32, v, 0, 0); }
int gguf_set_i32(gguf_writer *w, const char *key, int32_t v) { return set_scalar(w, key, GGUF_TYPE_INT32, 0, v, 0); }
int gguf_set_u64(gguf_writer *w, const char *key, uint64_t v) { return set_scalar(w, key, GGUF_TYPE_UINT64, v, 0, 0); }
int gguf_set_f32(gguf_writer *w, const char *key, float v) { return set_scalar(w, key, GGUF_TYPE_FLOAT32, 0, 0, v); }
int gguf_set_bool(gguf_writer *w, const char *key, int v) { return set_scalar(w, key, GGUF_TYPE_BOOL, v != 0, 0, 0); }

int gguf_set_str(gguf_writer *w, const char *key, const char *s) {
    if (!s) return rm_errorf(RM_EINVAL, "gguf_set_str %s: NULL string", key ? key : "?");
    gguf_value v;
    memset(&v, 0, sizeof v);
    v.type = GGUF_TYPE_STRING;
    v.s.ptr = s;
    v.s.len = strlen(s);
    return gguf_set_value(w, key, &v);
}

int gguf_set_arr(gguf_writer *w, const char *key, int elem_type, const void *data, uint64_t n) {
    if (!value_size(elem_type))
        return rm_errorf(RM_EINVAL, "gguf_set_arr %s: element type %s is not fixed-size", key ? key : "?",
                         gguf_value_type_name(elem_type));
    gguf_value v = {.type = GGUF_TYPE_ARRAY, .arr = {.type = elem_type, .n = n, .raw = data}};
    return gguf_set_value(w, key, &v);
}

int gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    if (n > SIZE_MAX / sizeof(gguf_str)) return rm_errorf(RM_EINVAL, "gguf_set_arr_str: too many strings");
    gguf_str *tmp = n ? malloc((size_t)n * sizeof *tmp) : NULL;
    if (n && !tmp) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
    for (uint64_t i = 0; i < n; i++) {
        tmp[i].ptr = strs[i] ? strs[i] : "";
        tmp[i].len = strlen(tmp[i].ptr);
    }
    gguf_value v = {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_STRING, .n = n, .strs = tmp}};
    int rc = gguf_set_value(w, key, &v);
    free(tmp);
    return rc;
}

static int add_tensor(gguf_writer *w, const char *name, rm_type type, int n_dims, const int64_t *ne, const void *data,
                      gguf_fill_fn fill, void *ctx) {
    if (!w || !name || !ne || (!data && !fill)) return rm_errorf(RM_EINVAL, "gguf_add_tensor: NULL argument");
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return rm_errorf(RM_EINVAL, "gguf_add_tensor %s: n_dims %d (want 1..4)", name, n_dims);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0) return rm_errorf(RM_EINVAL, "gguf_add_tensor: duplicate tensor %s", name);
    w_tensor t;
    memset(&t, 0, sizeof t);
    for (int d = 0; d < 4; d++) t.ne[d] = d < n_dims ? ne[d] : 1;
    t.nbytes = gguf_ggml_nbytes((int)type, n_dims, t.ne);
    if (t.nbytes == 0)
        return rm_errorf(RM_EINVAL, "gguf_add_tensor %s: bad shape or type %s", name, rm_type_name((int)type));
    if (rm_type_supported((int)type) && rm_tensor_nbytes(type, n_dims, t.ne) != t.nbytes)
        return rm_errorf(RM_EINVAL, "gguf_add_tensor %s: size disagrees with the tensor layer", name);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? w->cap_t * 2 : 64;
        w_tensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
        w->t = nt;
        w->cap_t = nc;
    }
    t.name = strdup(name);
    if (!t.name) return rm_errorf(RM_ENOMEM, "gguf writer: out of memory");
    t.type = type;
    t.n_dims = n_dims;
    t.data = data;
    t.fill = fill;
    t.fill_ctx = ctx;
    w->t[w->n_t++] = t;
    return RM_OK;
}

int gguf_add_tensor(gguf_writer *w, const char *name, rm_type type, int n_dims, const int64_t *ne, const void *data) {
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL);
}

int gguf_add_tensor_fill(gguf_writer *w, const char *name, rm_type type, int n_dims, const int64_t *ne,
                         gguf_fill_fn fill, void *ctx) {
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, ctx);
}

// -- serialisation into an rm_sb (the header; tensor data is streamed) --

static void put_u32(rm_sb *sb, uint32_t v) { rm_sb_putn(sb, (const char *)&v, 4); }
static void put_u64(rm_sb *sb, uint64_t v) { rm_sb_putn(sb, (const char *)&v, 8); }
static void put_str(rm_sb *sb, const char *p, uint64_t n) {
    put_u64(sb, n);
    rm_sb_putn(sb, p, (size_t)n);
}

static void put_value(rm_sb *sb, const gguf_value *v) {
    size_t es = value_size(v->type);
    if (es) {
        uint8_t b[8];
        switch (v->type) {
        case GGUF_TYPE_FLOAT32: {
            float x = (float)v->f;
            memcpy(b, &x, 4);
            break;
        }
        case GGUF_TYPE_FLOAT64: memcpy(b, &v->f, 8); break;
        default: {
            uint64_t x = is_signed_type(v->type) ? (uint64_t)v->i : v->u;
            memcpy(b, &x, 8);
            break;
        }
        }
        rm_sb_putn(sb, (const char *)b, es); // little-endian: the low bytes come first
        return;
    }
    if (v->type == GGUF_TYPE_STRING) {
        put_str(sb, v->s.ptr, v->s.len);
        return;
    }
    put_u32(sb, (uint32_t)v->arr.type);
    put_u64(sb, v->arr.n);
    size_t ees = value_size(v->arr.type);
    if (ees) rm_sb_putn(sb, v->arr.raw, (size_t)v->arr.n * ees);
    else if (v->arr.type == GGUF_TYPE_STRING)
        for (uint64_t i = 0; i < v->arr.n; i++) put_str(sb, v->arr.strs[i].ptr, v->arr.strs[i].len);
    else
        for (uint64_t i = 0; i < v->arr.n; i++) put_value(sb, &v->arr.vals[i]);
}

static int writer_alignment(const gguf_writer *w, size_t *out) {
    *out = GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") != 0) continue;
        const gguf_value *v = &w->kv[i].val;
        if (v->type != GGUF_TYPE_UINT32 || v->u == 0 || (v->u & (v->u - 1)) != 0 || v->u > (1u << 20))
            return rm_errorf(RM_EINVAL, "gguf writer: general.alignment must be a u32 power of two");
        *out = (size_t)v->u;
    }
    return RM_OK;
}

static int write_tensors(gguf_writer *w, fmt_out *o, size_t align) {
    size_t scratch_cap = 0;
    void *scratch = NULL;
    int rc = RM_OK;
    for (size_t i = 0; i < w->n_t && rc == RM_OK; i++) {
        w_tensor *t = &w->t[i];
        const void *src = t->data;
        if (t->fill) {
            if (t->nbytes > scratch_cap) {
                free(scratch);
                scratch = malloc(t->nbytes);
                scratch_cap = scratch ? t->nbytes : 0;
                if (!scratch) {
                    rc = rm_errorf(RM_ENOMEM, "%s: out of memory for tensor %s", o->path, t->name);
                    break;
                }
            }
            memset(scratch, 0, t->nbytes);
            if ((rc = t->fill(t->fill_ctx, scratch, t->nbytes)) != RM_OK) break;
            src = scratch;
        }
        if ((rc = fmt_out_write(o, src, t->nbytes)) != RM_OK) break;
        rc = fmt_out_pad(o, align);
    }
    free(scratch);
    return rc;
}

int gguf_write(gguf_writer *w, const char *path) {
    if (!w || !path) return rm_errorf(RM_EINVAL, "gguf_write: NULL argument");
    size_t align;
    int rc = writer_alignment(w, &align);
    if (rc != RM_OK) return rc;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off = align_up(off + w->t[i].nbytes, align);
    }
    rm_sb h;
    rm_sb_init(&h);
    rm_sb_putn(&h, GGUF_MAGIC, 4);
    put_u32(&h, 3);
    put_u64(&h, w->n_t);
    put_u64(&h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(&h, w->kv[i].key, strlen(w->kv[i].key));
        put_u32(&h, (uint32_t)w->kv[i].val.type);
        put_value(&h, &w->kv[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const w_tensor *t = &w->t[i];
        put_str(&h, t->name, strlen(t->name));
        put_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&h, (uint64_t)t->ne[d]);
        put_u32(&h, (uint32_t)t->type);
        put_u64(&h, t->offset);
    }
    if (h.oom) {
        rm_sb_free(&h);
        return rm_errorf(RM_ENOMEM, "%s: out of memory building the GGUF header", path);
    }

    fmt_out o;
    rc = fmt_out_open(&o, path);
    if (rc == RM_OK) rc = fmt_out_write(&o, h.buf, h.len);
    if (rc == RM_OK) rc = fmt_out_pad(&o, align);
    if (rc == RM_OK) rc = write_tensors(w, &o, align);
    if (rc == RM_OK) rc = fmt_out_commit(&o);
    else fmt_out_abort(&o);
    rm_sb_free(&h);
    return rc;
}
