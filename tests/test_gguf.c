// test_gguf.c — GGUF writer/reader round trip (every metadata type, nested
// and empty arrays, F32/F16/Q8_0 tensors), hostile files (truncations at
// every header byte, bad counts, shapes, offsets, duplicates), and the real
// vocabulary files from ../shared.
#define _GNU_SOURCE
#include "testing.h"
#include "base/err.h"
#include "base/json.h"
#include "format/gguf.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", rm_test_tmpdir(), name); }

static int values_equal(const gguf_value *a, const gguf_value *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case GGUF_TYPE_FLOAT32:
    case GGUF_TYPE_FLOAT64: return a->f == b->f;
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64: return a->i == b->i;
    case GGUF_TYPE_STRING: return a->s.len == b->s.len && memcmp(a->s.ptr, b->s.ptr, (size_t)a->s.len) == 0;
    case GGUF_TYPE_ARRAY: break;
    default: return a->u == b->u;
    }
    if (a->arr.type != b->arr.type || a->arr.n != b->arr.n) return 0;
    for (uint64_t i = 0; i < a->arr.n; i++) {
        if (a->arr.type == GGUF_TYPE_STRING) {
            gguf_str x = a->arr.strs[i], y = b->arr.strs[i];
            if (x.len != y.len || memcmp(x.ptr, y.ptr, (size_t)x.len) != 0) return 0;
        } else if (a->arr.type == GGUF_TYPE_ARRAY) {
            if (!values_equal(&a->arr.vals[i], &b->arr.vals[i])) return 0;
        } else if (gguf_arr_f64(a, i) != gguf_arr_f64(b, i) || gguf_arr_i64(a, i) != gguf_arr_i64(b, i)) {
            return 0;
        }
    }
    return 1;
}

// Parses an exact-size heap copy of buf[0..n) (so ASan sees any overread).
static int parse_copy(const void *buf, size_t n, gguf_file *g) {
    void *copy = malloc(n ? n : 1);
    if (!copy) return RM_ENOMEM;
    memcpy(copy, buf, n);
    int rc = gguf_parse(g, copy, n, "mem.gguf");
    if (rc == RM_OK) gguf_close(g);
    free(copy);
    return rc;
}

// Data for the tensors in the round-trip file.
static float g_f32[3 * 5];
static uint16_t g_f16[7];
static uint8_t g_q8[3 * 2 * 34];
static uint8_t g_q2k[84];

static int fill_q8(void *ctx, void *dst, size_t n) {
    if (n != sizeof g_q8) return rm_errorf(RM_EINVAL, "fill: wrong size %zu", n);
    memcpy(dst, g_q8, n);
    (*(int *)ctx)++;
    return RM_OK;
}

// Writes the round-trip file to path; returns 0 on success.
static int write_sample(const char *path, int with_fill) {
    for (int i = 0; i < 15; i++) g_f32[i] = (float)i * 0.5f - 3.0f;
    for (int i = 0; i < 7; i++) g_f16[i] = (uint16_t)(0x3c00 + i);
    for (size_t i = 0; i < sizeof g_q8; i++) g_q8[i] = (uint8_t)(i * 7 + 1);
    for (size_t i = 0; i < sizeof g_q2k; i++) g_q2k[i] = (uint8_t)(i * 3);
    gguf_writer *w = gguf_writer_new();
    if (!w) return -1;
    int rc = 0;
    uint8_t u8s[] = {0, 1, 255};
    int8_t i8s[] = {-128, 0, 127};
    uint16_t u16s[] = {65535, 1};
    int16_t i16s[] = {-32768, 32767};
    uint32_t u32s[] = {0xffffffffu, 7};
    int32_t i32s[] = {INT32_MIN, -1, INT32_MAX};
    float f32s[] = {1.5f, -0.0f, 3.25e-7f};
    uint8_t bools[] = {1, 0, 1};
    uint64_t u64s[] = {UINT64_MAX, 0};
    int64_t i64s[] = {INT64_MIN, INT64_MAX};
    double f64s[] = {1e300, -2.5};
    const char *strs[] = {"a", "", "h\xc3\xa9llo", "tab\there"};
    rc |= gguf_set_str(w, "general.architecture", "llama");
    rc |= gguf_set_u32(w, "general.alignment", 64);
    rc |= gguf_set_value(w, "k.u8", &(gguf_value){.type = GGUF_TYPE_UINT8, .u = 200});
    rc |= gguf_set_value(w, "k.i8", &(gguf_value){.type = GGUF_TYPE_INT8, .i = -100});
    rc |= gguf_set_value(w, "k.u16", &(gguf_value){.type = GGUF_TYPE_UINT16, .u = 60000});
    rc |= gguf_set_value(w, "k.i16", &(gguf_value){.type = GGUF_TYPE_INT16, .i = -30000});
    rc |= gguf_set_u32(w, "k.u32", 4000000000u);
    rc |= gguf_set_i32(w, "k.i32", -2000000000);
    rc |= gguf_set_f32(w, "k.f32", 0.1f);
    rc |= gguf_set_bool(w, "k.bool", 1);
    rc |= gguf_set_str(w, "k.str", "");
    rc |= gguf_set_u64(w, "k.u64", UINT64_MAX);
    rc |= gguf_set_value(w, "k.i64", &(gguf_value){.type = GGUF_TYPE_INT64, .i = INT64_MIN});
    rc |= gguf_set_value(w, "k.f64", &(gguf_value){.type = GGUF_TYPE_FLOAT64, .f = 1.0 / 3.0});
    rc |= gguf_set_arr(w, "a.u8", GGUF_TYPE_UINT8, u8s, 3);
    rc |= gguf_set_arr(w, "a.i8", GGUF_TYPE_INT8, i8s, 3);
    rc |= gguf_set_arr(w, "a.u16", GGUF_TYPE_UINT16, u16s, 2);
    rc |= gguf_set_arr(w, "a.i16", GGUF_TYPE_INT16, i16s, 2);
    rc |= gguf_set_arr(w, "a.u32", GGUF_TYPE_UINT32, u32s, 2);
    rc |= gguf_set_arr(w, "a.i32", GGUF_TYPE_INT32, i32s, 3);
    rc |= gguf_set_arr(w, "a.f32", GGUF_TYPE_FLOAT32, f32s, 3);
    rc |= gguf_set_arr(w, "a.bool", GGUF_TYPE_BOOL, bools, 3);
    rc |= gguf_set_arr(w, "a.u64", GGUF_TYPE_UINT64, u64s, 2);
    rc |= gguf_set_arr(w, "a.i64", GGUF_TYPE_INT64, i64s, 2);
    rc |= gguf_set_arr(w, "a.f64", GGUF_TYPE_FLOAT64, f64s, 2);
    rc |= gguf_set_arr(w, "a.empty", GGUF_TYPE_UINT32, NULL, 0);
    rc |= gguf_set_arr_str(w, "a.str", strs, 4);
    rc |= gguf_set_arr_str(w, "a.str_empty", NULL, 0);
    // Nested: [[1,2,3], [], [["x"], []]] — an array of arrays of mixed element types.
    gguf_str xs[] = {{1, "x"}};
    gguf_value inner2[] = {
        {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_STRING, .n = 1, .strs = xs}},
        {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_STRING, .n = 0}},
    };
    gguf_value inner[] = {
        {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_INT32, .n = 3, .raw = i32s}},
        {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_FLOAT32, .n = 0}},
        {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_ARRAY, .n = 2, .vals = inner2}},
    };
    gguf_value nested = {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_ARRAY, .n = 3, .vals = inner}};
    rc |= gguf_set_value(w, "a.nested", &nested);
    rc |= gguf_set_value(w, "a.nested_empty",
                         &(gguf_value){.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_ARRAY, .n = 0}});
    rc |= gguf_set_u32(w, "k.replaced", 1);
    rc |= gguf_set_str(w, "k.replaced", "second"); // replaces, also changing the type

    static int fills;
    int64_t ne_f32[] = {5, 3}, ne_f16[] = {7}, ne_q8[] = {64, 3}, ne_q2k[] = {256};
    rc |= gguf_add_tensor(w, "t.f32", RM_TYPE_F32, 2, ne_f32, g_f32);
    rc |= gguf_add_tensor(w, "t.f16", RM_TYPE_F16, 1, ne_f16, g_f16);
    if (with_fill) rc |= gguf_add_tensor_fill(w, "t.q8", RM_TYPE_Q8_0, 2, ne_q8, fill_q8, &fills);
    else rc |= gguf_add_tensor(w, "t.q8", RM_TYPE_Q8_0, 2, ne_q8, g_q8);
    rc |= gguf_add_tensor(w, "t.q2k", (rm_type)10, 1, ne_q2k, g_q2k); // a GGML type ramole cannot compute with
    if (rc == 0) rc = gguf_write(w, path);
    gguf_writer_free(w);
    return rc;
}

// ---------------------------------------------------------------------------
// round trip
// ---------------------------------------------------------------------------

TEST(gguf_roundtrip) {
    char path[512];
    tmp_path(path, sizeof path, "rt.gguf");
    CHECK_OK(write_sample(path, 1));
    char tmpname[600];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", path);
    gguf_file g;
    REQUIRE(gguf_open(&g, path) == RM_OK);
    CHECK(g.version == 3);
    CHECK(g.alignment == 64);
    CHECK(g.data_offset % 64 == 0);
    CHECK(g.n_kv == 31);
    CHECK(g.n_tensors == 4);

    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f;
    int b;
    gguf_str s;
    CHECK_OK(gguf_get_str(&g, "general.architecture", &s));
    CHECK(gguf_str_eq(s, "llama"));
    CHECK_OK(gguf_get_u32(&g, "k.u8", &u32));
    CHECK(u32 == 200);
    CHECK_OK(gguf_get_i32(&g, "k.i8", &i32));
    CHECK(i32 == -100);
    CHECK_OK(gguf_get_u32(&g, "k.u16", &u32));
    CHECK(u32 == 60000);
    CHECK_OK(gguf_get_i32(&g, "k.i16", &i32));
    CHECK(i32 == -30000);
    CHECK_OK(gguf_get_u32(&g, "k.u32", &u32));
    CHECK(u32 == 4000000000u);
    CHECK_OK(gguf_get_i32(&g, "k.i32", &i32));
    CHECK(i32 == -2000000000);
    CHECK_OK(gguf_get_f32(&g, "k.f32", &f));
    CHECK(f == 0.1f);
    CHECK_OK(gguf_get_f32(&g, "k.f64", &f));
    CHECK(f == (float)(1.0 / 3.0));
    CHECK_OK(gguf_get_bool(&g, "k.bool", &b));
    CHECK(b == 1);
    CHECK_OK(gguf_get_str(&g, "k.str", &s));
    CHECK(s.len == 0);
    CHECK_OK(gguf_get_u64(&g, "k.u64", &u64));
    CHECK(u64 == UINT64_MAX);
    CHECK(gguf_find(&g, "k.i64")->val.i == INT64_MIN);
    CHECK_OK(gguf_get_str(&g, "k.replaced", &s));
    CHECK(gguf_str_eq(s, "second"));
    // Range and type checks of the getters.
    CHECK(gguf_get_u32(&g, "k.i8", &u32) == RM_EFORMAT);  // negative
    CHECK(gguf_get_i32(&g, "k.u32", &i32) == RM_EFORMAT); // > INT32_MAX
    CHECK(gguf_get_u32(&g, "k.u64", &u32) == RM_EFORMAT);
    CHECK(gguf_get_u64(&g, "k.i64", &u64) == RM_EFORMAT);
    CHECK(gguf_get_f32(&g, "k.u32", &f) == RM_EFORMAT);
    CHECK(gguf_get_str(&g, "k.u32", &s) == RM_EFORMAT);
    CHECK(strstr(rm_last_error(), "k.u32") != NULL);
    rm_clear_error();
    CHECK(gguf_get_u32(&g, "no.such.key", &u32) == RM_ENOTFOUND);
    CHECK(rm_last_error()[0] == 0);

    const gguf_value *a;
    CHECK_OK(gguf_get_arr(&g, "a.i32", &a));
    CHECK(a->arr.type == GGUF_TYPE_INT32 && a->arr.n == 3);
    CHECK(gguf_arr_i64(a, 0) == INT32_MIN && gguf_arr_i64(a, 2) == INT32_MAX);
    CHECK_OK(gguf_get_arr(&g, "a.f32", &a));
    CHECK(gguf_arr_f64(a, 2) == (double)3.25e-7f);
    CHECK_OK(gguf_get_arr(&g, "a.u64", &a));
    CHECK(gguf_arr_f64(a, 0) == 18446744073709551615.0);
    CHECK_OK(gguf_get_arr(&g, "a.f64", &a));
    CHECK(gguf_arr_f64(a, 0) == 1e300 && gguf_arr_i64(a, 1) == -2);
    CHECK(gguf_arr_i64(a, 0) == INT64_MAX);                    // saturates
    CHECK(gguf_arr_i64(a, 2) == 0 && gguf_arr_f64(a, 2) == 0); // out of bounds
    CHECK_OK(gguf_get_arr(&g, "a.bool", &a));
    CHECK(a->arr.type == GGUF_TYPE_BOOL && gguf_arr_i64(a, 0) == 1 && gguf_arr_i64(a, 1) == 0);
    CHECK_OK(gguf_get_arr(&g, "a.empty", &a));
    CHECK(a->arr.n == 0 && a->arr.type == GGUF_TYPE_UINT32);
    CHECK_OK(gguf_get_arr(&g, "a.str", &a));
    REQUIRE(a->arr.type == GGUF_TYPE_STRING && a->arr.n == 4);
    CHECK(gguf_str_eq(a->arr.strs[0], "a") && a->arr.strs[1].len == 0);
    CHECK(gguf_str_eq(a->arr.strs[2], "h\xc3\xa9llo") && gguf_str_eq(a->arr.strs[3], "tab\there"));
    CHECK_OK(gguf_get_arr(&g, "a.str_empty", &a));
    CHECK(a->arr.n == 0 && a->arr.type == GGUF_TYPE_STRING);
    CHECK_OK(gguf_get_arr(&g, "a.nested", &a));
    REQUIRE(a->arr.type == GGUF_TYPE_ARRAY && a->arr.n == 3);
    CHECK(a->arr.vals[0].arr.type == GGUF_TYPE_INT32 && a->arr.vals[0].arr.n == 3);
    CHECK(gguf_arr_i64(&a->arr.vals[0], 1) == -1);
    CHECK(a->arr.vals[1].arr.n == 0 && a->arr.vals[1].arr.type == GGUF_TYPE_FLOAT32);
    REQUIRE(a->arr.vals[2].arr.type == GGUF_TYPE_ARRAY && a->arr.vals[2].arr.n == 2);
    CHECK(gguf_str_eq(a->arr.vals[2].arr.vals[0].arr.strs[0], "x"));
    CHECK(a->arr.vals[2].arr.vals[1].arr.n == 0);
    CHECK_OK(gguf_get_arr(&g, "a.nested_empty", &a));
    CHECK(a->arr.n == 0 && a->arr.type == GGUF_TYPE_ARRAY);

    const gguf_tensor_info *t = gguf_find_tensor(&g, "t.f32");
    REQUIRE(t);
    CHECK(t->type == RM_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 5 && t->ne[1] == 3 && t->ne[2] == 1);
    CHECK(t->nbytes == sizeof g_f32 && memcmp(t->data, g_f32, sizeof g_f32) == 0);
    CHECK(t->offset % 64 == 0 && ((const uint8_t *)t->data - g.map.data) % 64 == 0);
    rm_tensor view;
    CHECK_OK(gguf_tensor_view(&g, t, &view));
    CHECK(view.type == RM_TYPE_F32 && view.ne[1] == 3 && view.ne[3] == 1 && view.data == t->data);
    t = gguf_find_tensor(&g, "t.f16");
    REQUIRE(t);
    CHECK(t->type == RM_TYPE_F16 && t->n_dims == 1 && t->ne[0] == 7 && t->nbytes == 14);
    CHECK(memcmp(t->data, g_f16, 14) == 0);
    t = gguf_find_tensor(&g, "t.q8");
    REQUIRE(t);
    CHECK(t->type == RM_TYPE_Q8_0 && t->ne[0] == 64 && t->ne[1] == 3 && t->nbytes == sizeof g_q8);
    CHECK(memcmp(t->data, g_q8, sizeof g_q8) == 0);
    CHECK_OK(gguf_tensor_view(&g, t, &view));
    t = gguf_find_tensor(&g, "t.q2k");
    REQUIRE(t);
    CHECK(t->type == 10 && t->nbytes == 84 && memcmp(t->data, g_q2k, 84) == 0);
    CHECK(gguf_tensor_view(&g, t, &view) == RM_EUNSUPPORTED); // listed, but not computable
    CHECK(gguf_find_tensor(&g, "t.none") == NULL);

    // Copy every key (nested arrays included) into a second file via
    // gguf_set_value; the copy must read back identical.
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    for (uint64_t i = 0; i < g.n_kv; i++) {
        char key[128];
        gguf_str_copy(g.kv[i].key, key, sizeof key);
        CHECK_OK(gguf_set_value(w, key, &g.kv[i].val));
    }
    char path2[512];
    tmp_path(path2, sizeof path2, "copy.gguf");
    CHECK_OK(gguf_write(w, path2));
    gguf_writer_free(w);
    gguf_file g2;
    REQUIRE(gguf_open(&g2, path2) == RM_OK);
    CHECK(g2.n_kv == g.n_kv && g2.n_tensors == 0);
    for (uint64_t i = 0; i < g.n_kv; i++) {
        CHECKF(g2.kv[i].key.len == g.kv[i].key.len && memcmp(g2.kv[i].key.ptr, g.kv[i].key.ptr, g.kv[i].key.len) == 0,
               "key %llu differs", (unsigned long long)i);
        CHECKF(values_equal(&g.kv[i].val, &g2.kv[i].val), "value of key %llu differs", (unsigned long long)i);
    }
    gguf_close(&g2);
    gguf_close(&g);

    // The streamed (fill callback) and the in-memory tensor paths give the same bytes.
    char path3[512];
    tmp_path(path3, sizeof path3, "rt_mem.gguf");
    CHECK_OK(write_sample(path3, 0));
    char *x, *y;
    size_t nx, ny;
    REQUIRE(rm_read_file(path, &x, &nx) == RM_OK);
    REQUIRE(rm_read_file(path3, &y, &ny) == RM_OK);
    CHECK(nx == ny && memcmp(x, y, nx) == 0);
    free(x);
    free(y);
}

TEST(gguf_writer_rejects) {
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    float d[64] = {0};
    int64_t ne[] = {4, 4}, bad0[] = {0, 4}, q[] = {33, 1}, big[] = {INT64_MAX / 2, 4};
    CHECK_OK(gguf_add_tensor(w, "a", RM_TYPE_F32, 2, ne, d));
    CHECK(gguf_add_tensor(w, "a", RM_TYPE_F32, 2, ne, d) == RM_EINVAL); // duplicate
    CHECK(gguf_add_tensor(w, "b", RM_TYPE_F32, 5, ne, d) == RM_EINVAL);
    CHECK(gguf_add_tensor(w, "b", RM_TYPE_F32, 2, bad0, d) == RM_EINVAL);
    CHECK(gguf_add_tensor(w, "b", RM_TYPE_Q8_0, 2, q, d) == RM_EINVAL);  // not a block multiple
    CHECK(gguf_add_tensor(w, "b", RM_TYPE_F32, 2, big, d) == RM_EINVAL); // bytes overflow
    CHECK(gguf_set_arr(w, "s", GGUF_TYPE_STRING, d, 1) == RM_EINVAL);
    CHECK_OK(gguf_set_u32(w, "general.alignment", 48));
    char path[512];
    tmp_path(path, sizeof path, "bad_align.gguf");
    CHECK(gguf_write(w, path) == RM_EINVAL);
    CHECK_OK(gguf_set_str(w, "general.alignment", "32"));
    CHECK(gguf_write(w, path) == RM_EINVAL);
    gguf_writer_free(w);
    // A write into a missing directory fails with a message, leaving nothing behind.
    w = gguf_writer_new();
    CHECK(gguf_write(w, "/nonexistent-dir/x.gguf") == RM_EIO);
    gguf_writer_free(w);
}

static int fill_fail(void *ctx, void *dst, size_t n) {
    (void)ctx, (void)dst, (void)n;
    return rm_errorf(RM_EIO, "source went away");
}

TEST(gguf_writer_fill_error) {
    gguf_writer *w = gguf_writer_new();
    int64_t ne[] = {8};
    CHECK_OK(gguf_add_tensor_fill(w, "t", RM_TYPE_F32, 1, ne, fill_fail, NULL));
    char path[512];
    tmp_path(path, sizeof path, "fill_fail.gguf");
    CHECK(gguf_write(w, path) == RM_EIO);
    CHECK(strstr(rm_last_error(), "source went away") != NULL);
    CHECK(!rm_file_exists(path));
    gguf_writer_free(w);
}

// ---------------------------------------------------------------------------
// truncation and mutation of a valid file
// ---------------------------------------------------------------------------

// Writes the sample file under `name` and loads its bytes; the parsed file
// stays open in *g for the caller to inspect (and close).
static int load_sample(const char *name, char **buf, size_t *n, gguf_file *g) {
    char path[512];
    tmp_path(path, sizeof path, name);
    if (write_sample(path, 0) != 0 || rm_read_file(path, buf, n) != RM_OK) return -1;
    if (gguf_parse(g, *buf, *n, name) == RM_OK) return 0;
    free(*buf);
    return -1;
}

TEST(gguf_truncated_everywhere) {
    char *buf;
    size_t n;
    gguf_file g;
    REQUIRE(load_sample("trunc.gguf", &buf, &n, &g) == 0);
    size_t data_off = g.data_offset;
    size_t starts[4], ends[4];
    for (int i = 0; i < 4; i++) {
        starts[i] = data_off + g.tensors[i].offset;
        ends[i] = starts[i] + g.tensors[i].nbytes;
    }
    gguf_close(&g);
    // Every cut inside the header, the tensor infos and the padding fails.
    int failed = 0;
    for (size_t cut = 0; cut < data_off; cut++) {
        int rc = parse_copy(buf, cut, &g);
        if (rc == RM_EFORMAT) failed++;
        else CHECKF(0, "cut at %zu of %zu: rc %d", cut, data_off, rc);
    }
    CHECK(failed == (int)data_off);
    // Cuts inside each tensor's data fail; a cut right after the last
    // tensor (dropping only the final padding) is fine.
    for (int i = 0; i < 4; i++) {
        CHECK(parse_copy(buf, starts[i], &g) == RM_EFORMAT);
        CHECK(parse_copy(buf, starts[i] + 1, &g) == RM_EFORMAT);
        CHECK(parse_copy(buf, ends[i] - 1, &g) == RM_EFORMAT);
    }
    size_t last_end = 0;
    for (int i = 0; i < 4; i++) last_end = ends[i] > last_end ? ends[i] : last_end;
    CHECK_OK(parse_copy(buf, last_end, &g));
    CHECK_OK(parse_copy(buf, n, &g));
    free(buf);
}

TEST(gguf_random_mutations) {
    char *orig;
    size_t n;
    gguf_file g;
    REQUIRE(load_sample("mut.gguf", &orig, &n, &g) == 0);
    // Mutate bytes of the header region only (the data bytes are opaque).
    size_t hdr = g.data_offset;
    gguf_close(&g);
    uint8_t *buf = malloc(n);
    REQUIRE(buf);
    uint32_t seed = 99;
    int iters = rm_test_sanitized() ? 3000 : 20000, ok = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n);
        for (int e = 0; e < 1 + it % 4; e++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 7) % hdr;
            seed = seed * 1664525u + 1013904223u;
            // Favour the bytes that make counts and lengths huge or zero.
            uint8_t vals[] = {0, 0xff, 0x80, 1, 5, (uint8_t)(seed >> 24)};
            buf[at] = vals[(seed >> 13) % 6];
        }
        int rc = parse_copy(buf, n, &g);
        CHECKF(rc == RM_OK || rc == RM_EFORMAT || rc == RM_EUNSUPPORTED, "iteration %d: rc %d", it, rc);
        ok += rc == RM_OK;
    }
    CHECK(ok < iters);
    free(buf);
    free(orig);
}

// ---------------------------------------------------------------------------
// hand-built hostile files
// ---------------------------------------------------------------------------

static void b_u32(rm_sb *b, uint32_t v) { rm_sb_putn(b, (const char *)&v, 4); }
static void b_u64(rm_sb *b, uint64_t v) { rm_sb_putn(b, (const char *)&v, 8); }
static void b_str(rm_sb *b, const char *s) {
    b_u64(b, strlen(s));
    rm_sb_puts(b, s);
}
static void b_hdr(rm_sb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    rm_sb_init(b);
    rm_sb_putn(b, "GGUF", 4);
    b_u32(b, version);
    b_u64(b, n_tensors);
    b_u64(b, n_kv);
}
static void b_tinfo(rm_sb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    b_str(b, name);
    b_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}
// Pads to 32 and appends `data_bytes` zero bytes of tensor data.
static void b_data(rm_sb *b, size_t data_bytes) {
    while (b->len % 32) rm_sb_putn(b, "", 1);
    for (size_t i = 0; i < data_bytes; i++) rm_sb_putn(b, "", 1);
}

// Parses the built file, expects `want` and a message containing `msg`.
// Returns 1 when it did.
static int expect(rm_sb *b, int want, const char *msg, int line) {
    gguf_file g;
    int rc = parse_copy(b->buf, b->len, &g), ok = 0;
    if (rc != want) rm_test_fail(__FILE__, line, "rc %d, want %d (%s)", rc, want, rm_last_error());
    else if (msg && !strstr(rm_last_error(), msg))
        rm_test_fail(__FILE__, line, "message '%s' lacks '%s'", rm_last_error(), msg);
    else ok = 1;
    rm_sb_free(b);
    return ok;
}
#define EXPECT(b, want, msg) expect(b, want, msg, __LINE__)

TEST(gguf_hostile_headers) {
    rm_sb b;
    uint64_t ne2[] = {8, 2};

    // A minimal valid file first, so that the failures below are the
    // intended ones.
    b_hdr(&b, 3, 1, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_TYPE_UINT32);
    b_u32(&b, 5);
    b_tinfo(&b, "t", 2, ne2, 0, 0);
    b_data(&b, 64);
    EXPECT(&b, RM_OK, NULL);
    b_hdr(&b, 2, 0, 0);
    EXPECT(&b, RM_OK, NULL); // v2, nothing in it, no padding

    b_hdr(&b, 3, 0, 0);
    b.buf[0] = 'X';
    EXPECT(&b, RM_EFORMAT, "magic");
    b_hdr(&b, 1, 0, 0);
    EXPECT(&b, RM_EUNSUPPORTED, "version 1");
    b_hdr(&b, 4, 0, 0);
    EXPECT(&b, RM_EUNSUPPORTED, "version 4");
    b_hdr(&b, 0x03000000, 0, 0);
    EXPECT(&b, RM_EUNSUPPORTED, "big-endian");

    // Huge counts fail before any allocation.
    b_hdr(&b, 3, 0, 1ull << 60);
    EXPECT(&b, RM_EFORMAT, "metadata count");
    b_hdr(&b, 3, 1ull << 60, 0);
    EXPECT(&b, RM_EFORMAT, "tensor count");
    b_hdr(&b, 3, 0, 1);
    b_u64(&b, UINT64_MAX); // key length
    b_u64(&b, 0);
    b_u64(&b, 0);
    EXPECT(&b, RM_EFORMAT, "length");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_TYPE_STRING);
    b_u64(&b, 1ull << 62);
    EXPECT(&b, RM_EFORMAT, "past the end");
    int arr_types[] = {GGUF_TYPE_UINT8, GGUF_TYPE_UINT64, GGUF_TYPE_STRING, GGUF_TYPE_ARRAY};
    for (int i = 0; i < 4; i++) {
        b_hdr(&b, 3, 0, 1);
        b_str(&b, "k");
        b_u32(&b, GGUF_TYPE_ARRAY);
        b_u32(&b, (uint32_t)arr_types[i]);
        b_u64(&b, 1ull << 60);
        b_u64(&b, 0);
        EXPECT(&b, RM_EFORMAT, "count");
    }
    // Unknown value types.
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u32(&b, 0);
    EXPECT(&b, RM_EFORMAT, "unknown value type");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_TYPE_ARRAY);
    b_u32(&b, 99);
    b_u64(&b, 0);
    EXPECT(&b, RM_EFORMAT, "element type");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_TYPE_BOOL);
    rm_sb_putn(&b, "\x02", 1);
    EXPECT(&b, RM_EFORMAT, "bool");
    // Arrays nested too deep.
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, GGUF_TYPE_ARRAY);
    for (int d = 0; d < 40; d++) {
        b_u32(&b, GGUF_TYPE_ARRAY);
        b_u64(&b, 1);
    }
    b_u32(&b, GGUF_TYPE_UINT8);
    b_u64(&b, 0);
    EXPECT(&b, RM_EFORMAT, "nested");
    // Duplicate keys.
    b_hdr(&b, 3, 0, 2);
    for (int i = 0; i < 2; i++) {
        b_str(&b, "dup.key");
        b_u32(&b, GGUF_TYPE_UINT8);
        rm_sb_putn(&b, "\x01", 1);
    }
    EXPECT(&b, RM_EFORMAT, "duplicate metadata key 'dup.key'");
    // general.alignment of the wrong type / not a power of two.
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_TYPE_UINT64);
    b_u64(&b, 32);
    EXPECT(&b, RM_EFORMAT, "general.alignment");
    b_hdr(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, GGUF_TYPE_UINT32);
    b_u32(&b, 24);
    EXPECT(&b, RM_EFORMAT, "power of two");
}

TEST(gguf_hostile_tensors) {
    rm_sb b;
    uint64_t ne2[] = {8, 2};
    // One tensor info each, with a data section of data_bytes.
    static const struct {
        uint32_t n_dims;
        uint64_t ne[5];
        uint32_t type;
        uint64_t offset;
        size_t data_bytes;
        const char *msg;
    } cases[] = {
        {5, {1, 1, 1, 1, 1}, 0, 0, 4, "n_dims 5"},
        {0, {1}, 0, 0, 64, "n_dims 0"},
        {2, {8, 0}, 0, 0, 64, "must be positive"},
        {2, {8, (uint64_t)-3}, 0, 0, 64, "must be positive"}, // "negative"
        {2, {1ull << 32, 1ull << 32}, 0, 0, 64, "overflows"}, // element count
        {2, {1ull << 31, 1ull << 31}, 0, 0, 64, "overflows"}, // 2^62 elements x 4 bytes
        {2, {33, 2}, RM_TYPE_Q8_0, 0, 128, "multiple"},       // not whole blocks
        {2, {8, 2}, 4, 0, 64, "unknown GGML type id 4"},      // removed from GGML
        {2, {8, 2}, 1000, 0, 64, "unknown GGML type id 1000"},
        {2, {8, 2}, 0, 4, 128, "alignment"},                 // misaligned offset
        {2, {8, 2}, 0, 32, 64, "past the end"},              // needs 32..96
        {2, {8, 2}, 0, UINT64_MAX - 31, 64, "past the end"}, // wraps around
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        b_hdr(&b, 3, 1, 0);
        b_tinfo(&b, "t", cases[i].n_dims, cases[i].ne, cases[i].type, cases[i].offset);
        b_data(&b, cases[i].data_bytes);
        CHECKF(expect(&b, RM_EFORMAT, cases[i].msg, __LINE__), "case %zu", i);
    }
    // Overlapping tensors (64 bytes each, second at 32), then adjacent ones (fine).
    b_hdr(&b, 3, 2, 0);
    b_tinfo(&b, "a", 2, ne2, 0, 0);
    b_tinfo(&b, "b", 2, ne2, 0, 32);
    b_data(&b, 128);
    EXPECT(&b, RM_EFORMAT, "overlap");
    b_hdr(&b, 3, 2, 0);
    b_tinfo(&b, "a", 2, ne2, 0, 64);
    b_tinfo(&b, "b", 2, ne2, 0, 0);
    b_data(&b, 128);
    EXPECT(&b, RM_OK, NULL);
    // The same tensor twice.
    b_hdr(&b, 3, 2, 0);
    b_tinfo(&b, "same", 2, ne2, 0, 0);
    b_tinfo(&b, "same", 2, ne2, 0, 64);
    b_data(&b, 128);
    EXPECT(&b, RM_EFORMAT, "duplicate tensor name 'same'");
    // Tensor info truncated right after its name.
    b_hdr(&b, 3, 1, 0);
    b_str(&b, "a-name-long-enough-to-pass-the-count-check");
    EXPECT(&b, RM_EFORMAT, "truncated at offset 74 reading tensor n_dims");
}

TEST(gguf_open_errors) {
    gguf_file g;
    CHECK(gguf_open(&g, "/nonexistent/x.gguf") == RM_EIO);
    char path[512];
    tmp_path(path, sizeof path, "empty.gguf");
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fclose(f);
    CHECK(gguf_open(&g, path) == RM_EFORMAT);
    CHECK(strstr(rm_last_error(), "empty.gguf") != NULL);
}

// ---------------------------------------------------------------------------
// real files
// ---------------------------------------------------------------------------

TEST(gguf_shared_vocab_files) {
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/data/tokenizers", shared);
    DIR *d = opendir(dir);
    if (!d) SKIP("no tokenizers directory");
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "ggml-vocab-", 11) != 0 || l < 5 || strcmp(e->d_name + l - 5, ".gguf") != 0) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        gguf_file g;
        int rc = gguf_open(&g, path);
        CHECKF(rc == RM_OK, "%s: %s", e->d_name, rm_last_error());
        if (rc != RM_OK) continue;
        n_files++;
        gguf_str model;
        CHECKF(gguf_get_str(&g, "tokenizer.ggml.model", &model) == RM_OK, "%s: no tokenizer.ggml.model", e->d_name);
        CHECK(model.len > 0);
        const gguf_value *tokens, *other;
        CHECKF(gguf_get_arr(&g, "tokenizer.ggml.tokens", &tokens) == RM_OK, "%s: no tokens", e->d_name);
        if (tokens) {
            CHECK(tokens->arr.type == GGUF_TYPE_STRING && tokens->arr.n > 100);
            if (gguf_get_arr(&g, "tokenizer.ggml.scores", &other) == RM_OK)
                CHECKF(other->arr.n == tokens->arr.n, "%s: %llu scores for %llu tokens", e->d_name,
                       (unsigned long long)other->arr.n, (unsigned long long)tokens->arr.n);
            if (gguf_get_arr(&g, "tokenizer.ggml.token_type", &other) == RM_OK) CHECK(other->arr.n == tokens->arr.n);
        }
        gguf_str arch;
        CHECK(gguf_get_str(&g, "general.architecture", &arch) == RM_OK);
        if (strstr(e->d_name, "llama-spm")) CHECK(gguf_str_eq(model, "llama"));
        if (strstr(e->d_name, "gpt-2")) CHECK(gguf_str_eq(model, "gpt2"));
        if (strstr(e->d_name, "bert")) CHECK(gguf_str_eq(model, "bert"));
        gguf_close(&g);
    }
    closedir(d);
    if (n_files == 0) SKIP("no ggml-vocab-*.gguf files");
}
