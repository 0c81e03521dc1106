// safetensors.c — .safetensors reader and writer (see safetensors.h).
//
// Layout: u64 N (little-endian), N bytes of JSON header, then the data
// section. The header maps tensor names to
//   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
// with offsets relative to the data section, plus an optional
// "__metadata__" object of string -> string.
#define _GNU_SOURCE
#include "format/safetensors.h"
#include "base/err.h"
#include "base/fp16.h"
#include "base/json.h"
#include "format/outfile.h"

#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER (100u << 20) // the reference implementation's limit
#define ST_MAX_DIMS 8

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2},   [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},   [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

const char *st_dtype_name(st_dtype t) { return (int)t >= 0 && (int)t < N_DTYPES ? st_dtypes[t].name : "?"; }
size_t st_dtype_size(st_dtype t) { return (int)t >= 0 && (int)t < N_DTYPES ? st_dtypes[t].size : 0; }

static int dtype_parse(const char *s, st_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (st_dtype)i;
            return 1;
        }
    return 0;
}

// product(shape) * elem_size, 0 with *ok = 0 on overflow.
static size_t shape_nbytes(int n_dims, const int64_t *shape, size_t elem, int *ok) {
    uint64_t n = elem;
    *ok = 1;
    for (int d = 0; d < n_dims; d++) {
        uint64_t x = (uint64_t)shape[d];
        if (x != 0 && n > (uint64_t)(SIZE_MAX < INT64_MAX ? SIZE_MAX : INT64_MAX) / x) {
            *ok = 0;
            return 0;
        }
        n *= x;
    }
    return (size_t)n;
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

// A non-negative JSON integer, or -1.
static int64_t json_uint(const rm_json *v) {
    return v && v->type == RM_JSON_NUMBER && v->is_int && v->inum >= 0 ? v->inum : -1;
}

// Fills t from one header entry; `begin`/`end` get the data offsets.
static int parse_entry(st_file *f, const char *name, const rm_json *e, st_tensor *t, uint64_t *begin, uint64_t *end,
                       size_t data_size) {
    if (e->type != RM_JSON_OBJECT) return rm_errorf(RM_EFORMAT, "%s: tensor %s: entry is not an object", f->path, name);
    const char *dt = rm_json_get_str(e, "dtype", NULL);
    if (!dt) return rm_errorf(RM_EFORMAT, "%s: tensor %s: missing dtype", f->path, name);
    if (!dtype_parse(dt, &t->dtype))
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: unknown or unsupported dtype '%s'", f->path, name, dt);
    const rm_json *shape = rm_json_get(e, "shape");
    if (!shape || shape->type != RM_JSON_ARRAY)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s: missing shape", f->path, name);
    if (shape->n > ST_MAX_DIMS)
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: %zu dimensions (at most %d)", f->path, name, shape->n,
                         ST_MAX_DIMS);
    t->n_dims = (int)shape->n;
    for (size_t d = 0; d < shape->n; d++) {
        t->shape[d] = json_uint(&shape->items[d]);
        if (t->shape[d] < 0)
            return rm_errorf(RM_EFORMAT, "%s: tensor %s: shape[%zu] is not a non-negative integer", f->path, name, d);
    }
    const rm_json *offs = rm_json_get(e, "data_offsets");
    if (!offs || offs->type != RM_JSON_ARRAY || offs->n != 2 || json_uint(&offs->items[0]) < 0 ||
        json_uint(&offs->items[1]) < 0)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s: data_offsets must be [begin, end]", f->path, name);
    *begin = (uint64_t)offs->items[0].inum;
    *end = (uint64_t)offs->items[1].inum;
    if (*begin > *end || *end > data_size)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s: data_offsets [%llu, %llu] outside the %zu-byte data section",
                         f->path, name, (unsigned long long)*begin, (unsigned long long)*end, data_size);
    int ok;
    t->nbytes = shape_nbytes(t->n_dims, t->shape, st_dtype_size(t->dtype), &ok);
    if (!ok) return rm_errorf(RM_EFORMAT, "%s: tensor %s: shape overflows", f->path, name);
    if (t->nbytes != *end - *begin)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s: shape and dtype give %zu bytes but data_offsets span %llu",
                         f->path, name, t->nbytes, (unsigned long long)(*end - *begin));
    return RM_OK;
}

static int parse_metadata(st_file *f, const rm_json *m) {
    if (m->type != RM_JSON_OBJECT) return rm_errorf(RM_EFORMAT, "%s: __metadata__ is not an object", f->path);
    if (m->n == 0) return RM_OK;
    f->meta_keys = calloc(m->n, sizeof *f->meta_keys);
    f->meta_vals = calloc(m->n, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals) return rm_errorf(RM_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < m->n; i++) {
        if (m->items[i].type != RM_JSON_STRING)
            return rm_errorf(RM_EFORMAT, "%s: __metadata__ value of '%s' is not a string", f->path, m->keys[i]);
        f->meta_keys[i] = strdup(m->keys[i]);
        f->meta_vals[i] = strdup(m->items[i].str);
        f->n_meta = i + 1;
        if (!f->meta_keys[i] || !f->meta_vals[i]) return rm_errorf(RM_ENOMEM, "%s: out of memory", f->path);
    }
    return RM_OK;
}

typedef struct span {
    uint64_t begin, end;
    size_t idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

// Tensors sorted by offset must tile [0, data_size) exactly.
static int check_coverage(st_file *f, span *sp, size_t n, size_t data_size) {
    if (n > 1) qsort(sp, n, sizeof *sp, span_cmp);
    uint64_t expect = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = f->tensors[sp[i].idx].name;
        if (sp[i].begin < expect)
            return rm_errorf(RM_EFORMAT, "%s: tensor %s (bytes %llu..%llu) overlaps the previous tensor", f->path, name,
                             (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end);
        if (sp[i].begin > expect)
            return rm_errorf(RM_EFORMAT, "%s: gap in the data section before tensor %s (bytes %llu..%llu unused)",
                             f->path, name, (unsigned long long)expect, (unsigned long long)sp[i].begin);
        expect = sp[i].end;
    }
    if (expect != data_size)
        return rm_errorf(RM_EFORMAT, "%s: tensors cover %llu bytes of a %zu-byte data section", f->path,
                         (unsigned long long)expect, data_size);
    return RM_OK;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int check_unique_names(st_file *f) {
    if (f->n_tensors < 2) return RM_OK;
    char **names = malloc(f->n_tensors * sizeof *names);
    if (!names) return rm_errorf(RM_ENOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
    qsort(names, f->n_tensors, sizeof *names, name_cmp);
    int rc = RM_OK;
    for (size_t i = 1; i < f->n_tensors && rc == RM_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = rm_errorf(RM_EFORMAT, "%s: duplicate tensor %s", f->path, names[i]);
    free(names);
    return rc;
}

static int st_parse_header(st_file *f, const uint8_t *data, size_t size) {
    if (size < 8) return rm_errorf(RM_EFORMAT, "%s: too short for a safetensors file (%zu bytes)", f->path, size);
    // The format has no magic: the first 8 bytes of any file read as a length,
    // so they are not echoed (a path naming a private file must not leak them).
    uint64_t hlen;
    memcpy(&hlen, data, 8);
    if (hlen > size - 8)
        return rm_errorf(RM_EFORMAT, "%s: not a safetensors file: its header length field exceeds the file (%zu bytes)",
                         f->path, size);
    if (hlen > ST_MAX_HEADER)
        return rm_errorf(RM_EFORMAT, "%s: not a safetensors file: its header length field is over the %u-byte limit",
                         f->path, ST_MAX_HEADER);
    size_t data_start = 8 + (size_t)hlen, data_size = size - data_start;
    rm_json *h;
    int rc = rm_json_parse((const char *)data + 8, (size_t)hlen, f->path, &h);
    if (rc != RM_OK) return rm_error_prefix(rc, "bad safetensors header");
    if (h->type != RM_JSON_OBJECT) {
        rm_json_free(h);
        return rm_errorf(RM_EFORMAT, "%s: header is not a JSON object", f->path);
    }
    span *sp = NULL;
    size_t n = h->n;
    f->tensors = n ? calloc(n, sizeof *f->tensors) : NULL;
    sp = n ? calloc(n, sizeof *sp) : NULL;
    if (n && (!f->tensors || !sp)) rc = rm_errorf(RM_ENOMEM, "%s: out of memory", f->path);
    size_t k = 0;
    int seen_meta = 0;
    for (size_t i = 0; i < n && rc == RM_OK; i++) {
        if (strcmp(h->keys[i], "__metadata__") == 0) {
            if (seen_meta++) rc = rm_errorf(RM_EFORMAT, "%s: duplicate __metadata__", f->path);
            else rc = parse_metadata(f, &h->items[i]);
            continue;
        }
        st_tensor *t = &f->tensors[k];
        t->name = strdup(h->keys[i]);
        if (!t->name) {
            rc = rm_errorf(RM_ENOMEM, "%s: out of memory", f->path);
            break;
        }
        f->n_tensors = ++k;
        rc = parse_entry(f, h->keys[i], &h->items[i], t, &sp[k - 1].begin, &sp[k - 1].end, data_size);
        sp[k - 1].idx = k - 1;
        if (rc == RM_OK) t->data = data + data_start + sp[k - 1].begin;
    }
    rm_json_free(h);
    if (rc == RM_OK) rc = check_unique_names(f);
    if (rc == RM_OK) rc = check_coverage(f, sp, f->n_tensors, data_size);
    free(sp);
    return rc;
}

int st_parse(st_file *f, const void *data, size_t size, const char *name) {
    memset(f, 0, sizeof *f);
    f->path = strdup(name ? name : "<safetensors>");
    if (!f->path) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = st_parse_header(f, data, data ? size : 0);
    if (rc != RM_OK) st_close(f);
    return rc;
}

int st_open(st_file *f, const char *path) {
    rm_mmap m;
    memset(f, 0, sizeof *f);
    int rc = rm_mmap_open(&m, path);
    if (rc != RM_OK) return rc;
    rc = st_parse(f, m.data, m.size, path);
    if (rc != RM_OK) {
        rm_mmap_close(&m);
        return rc;
    }
    f->map = m;
    return RM_OK;
}

void st_close(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    rm_mmap_close(&f->map);
    memset(f, 0, sizeof *f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int st_to_f32_range(const st_tensor *t, size_t first, size_t n, float *out) {
    size_t es = st_dtype_size(t->dtype), total = es ? t->nbytes / es : 0;
    if (first > total || n > total - first)
        return rm_errorf(RM_EINVAL, "tensor %s: elements %zu..%zu out of range (%zu)", t->name, first, first + n,
                         total);
    const uint8_t *p = (const uint8_t *)t->data + first * es; // may be unaligned: the header length is arbitrary
    switch (t->dtype) {
    case ST_F32:
        if (n) memcpy(out, p, n * 4);
        return RM_OK;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == ST_F16 ? rm_f16_to_f32(h) : rm_bf16_to_f32(h);
        }
        return RM_OK;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return RM_OK;
    default:
        return rm_errorf(RM_EUNSUPPORTED, "tensor %s: cannot convert dtype %s to f32", t->name,
                         st_dtype_name(t->dtype));
    }
}

int st_to_f32(const st_tensor *t, float *out) {
    size_t es = st_dtype_size(t->dtype);
    return st_to_f32_range(t, 0, es ? t->nbytes / es : 0, out);
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

typedef struct st_wtensor {
    char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
} st_wtensor;

struct st_writer {
    st_wtensor *t;
    size_t n, cap;
    char **mk, **mv;
    size_t n_meta;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->t[i].name);
    for (size_t i = 0; i < w->n_meta; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->t);
    free(w->mk);
    free(w->mv);
    free(w);
}

int st_writer_meta(st_writer *w, const char *key, const char *val) {
    if (!w || !key || !val) return rm_errorf(RM_EINVAL, "st_writer_meta: NULL argument");
    for (size_t i = 0; i < w->n_meta; i++)
        if (strcmp(w->mk[i], key) == 0) {
            char *v = strdup(val);
            if (!v) return rm_errorf(RM_ENOMEM, "out of memory");
            free(w->mv[i]);
            w->mv[i] = v;
            return RM_OK;
        }
    char **mk = realloc(w->mk, (w->n_meta + 1) * sizeof *mk);
    if (mk) w->mk = mk;
    char **mv = realloc(w->mv, (w->n_meta + 1) * sizeof *mv);
    if (mv) w->mv = mv;
    char *k = mk && mv ? strdup(key) : NULL, *v = k ? strdup(val) : NULL;
    if (!v) {
        free(k);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    w->mk[w->n_meta] = k;
    w->mv[w->n_meta] = v;
    w->n_meta++;
    return RM_OK;
}

int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int n_dims, const int64_t *shape, const void *data) {
    if (!w || !name || (n_dims > 0 && !shape)) return rm_errorf(RM_EINVAL, "st_writer_add: NULL argument");
    if (!st_dtype_size(dtype)) return rm_errorf(RM_EINVAL, "st_writer_add %s: bad dtype %d", name, (int)dtype);
    if (n_dims < 0 || n_dims > ST_MAX_DIMS)
        return rm_errorf(RM_EINVAL, "st_writer_add %s: %d dimensions (0..%d)", name, n_dims, ST_MAX_DIMS);
    if (strcmp(name, "__metadata__") == 0) return rm_errorf(RM_EINVAL, "st_writer_add: reserved name %s", name);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) return rm_errorf(RM_EINVAL, "st_writer_add: duplicate tensor %s", name);
    st_wtensor t;
    memset(&t, 0, sizeof t);
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0) return rm_errorf(RM_EINVAL, "st_writer_add %s: negative dimension", name);
        t.shape[d] = shape[d];
    }
    int ok;
    t.nbytes = shape_nbytes(n_dims, t.shape, st_dtype_size(dtype), &ok);
    if (!ok) return rm_errorf(RM_EINVAL, "st_writer_add %s: shape overflows", name);
    if (t.nbytes && !data) return rm_errorf(RM_EINVAL, "st_writer_add %s: NULL data", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 32;
        st_wtensor *nt = realloc(w->t, nc * sizeof *nt);
        if (!nt) return rm_errorf(RM_ENOMEM, "out of memory");
        w->t = nt;
        w->cap = nc;
    }
    t.name = strdup(name);
    if (!t.name) return rm_errorf(RM_ENOMEM, "out of memory");
    t.dtype = dtype;
    t.n_dims = n_dims;
    t.data = data;
    w->t[w->n++] = t;
    return RM_OK;
}

static void build_header(const st_writer *w, rm_sb *h) {
    rm_sb_puts(h, "{");
    if (w->n_meta) {
        rm_sb_puts(h, "\"__metadata__\":{");
        for (size_t i = 0; i < w->n_meta; i++) {
            if (i) rm_sb_puts(h, ",");
            rm_sb_json_str(h, w->mk[i], strlen(w->mk[i]));
            rm_sb_puts(h, ":");
            rm_sb_json_str(h, w->mv[i], strlen(w->mv[i]));
        }
        rm_sb_puts(h, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_wtensor *t = &w->t[i];
        if (i || w->n_meta) rm_sb_puts(h, ",");
        rm_sb_json_str(h, t->name, strlen(t->name));
        rm_sb_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->n_dims; d++) rm_sb_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        rm_sb_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                     (unsigned long long)(off + t->nbytes));
        off += t->nbytes;
    }
    rm_sb_puts(h, "}");
    while (h->len % 8) rm_sb_putn(h, " ", 1); // so that the data section starts 8-aligned
}

int st_write(st_writer *w, const char *path) {
    if (!w || !path) return rm_errorf(RM_EINVAL, "st_write: NULL argument");
    rm_sb h;
    rm_sb_init(&h);
    build_header(w, &h);
    if (h.oom) {
        rm_sb_free(&h);
        return rm_errorf(RM_ENOMEM, "%s: out of memory building the header", path);
    }
    uint64_t hlen = h.len;
    fmt_out o;
    int rc = fmt_out_open(&o, path);
    if (rc == RM_OK) rc = fmt_out_write(&o, &hlen, 8);
    if (rc == RM_OK) rc = fmt_out_write(&o, h.buf, h.len);
    for (size_t i = 0; i < w->n && rc == RM_OK; i++) rc = fmt_out_write(&o, w->t[i].data, w->t[i].nbytes);
    if (rc == RM_OK) rc = fmt_out_commit(&o);
    else fmt_out_abort(&o);
    rm_sb_free(&h);
    return rc;
}
