// test_safetensors.c — safetensors writer/reader round trip over every dtype,
// truncation at every byte, and hand-built corrupt headers.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/fp16.h"
#include "format/safetensors.h"

#include <stdlib.h>
#include <string.h>

static void st_tmp(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", rm_test_tmpdir(), name); }

// Parses an exact-size heap copy; closes on success.
static int st_parse_copy(const void *buf, size_t n) {
    void *copy = malloc(n ? n : 1);
    if (!copy) return RM_ENOMEM;
    memcpy(copy, buf, n);
    st_file f;
    int rc = st_parse(&f, copy, n, "mem.safetensors");
    if (rc == RM_OK) st_close(&f);
    free(copy);
    return rc;
}

static float s_f32[6] = {1, -2, 3.5f, 0, 1e-3f, -7};
static uint16_t s_f16[4], s_bf16[4];
static double s_f64[1] = {2.5};
static int64_t s_i64[2] = {INT64_MIN, 42};
static int32_t s_i32[3] = {-1, 0, 1};
static int16_t s_i16[2] = {-300, 300};
static int8_t s_i8[5] = {-5, -1, 0, 1, 5};
static uint8_t s_bool[1] = {1};

static int write_st_sample(const char *path) {
    for (int i = 0; i < 4; i++) {
        s_f16[i] = rm_f32_to_f16((float)i - 1.5f);
        s_bf16[i] = rm_f32_to_bf16((float)i * 3.0f);
    }
    st_writer *w = st_writer_new();
    if (!w) return -1;
    int rc = 0;
    int64_t sh23[] = {2, 3}, sh4[] = {4}, sh22[] = {2, 2}, sh1[] = {1}, sh2[] = {2}, sh3[] = {3}, sh112[] = {1, 1, 2},
            sh5[] = {5}, sh0[] = {0, 7};
    rc |= st_writer_meta(w, "format", "pt");
    rc |= st_writer_meta(w, "note", "quote \" backslash \\ caf\xc3\xa9");
    rc |= st_writer_add(w, "w.f32", ST_F32, 2, sh23, s_f32);
    rc |= st_writer_add(w, "w.f16", ST_F16, 1, sh4, s_f16);
    rc |= st_writer_add(w, "w.bf16", ST_BF16, 2, sh22, s_bf16);
    rc |= st_writer_add(w, "w.f64", ST_F64, 1, sh1, s_f64);
    rc |= st_writer_add(w, "w.i64", ST_I64, 1, sh2, s_i64);
    rc |= st_writer_add(w, "w.i32", ST_I32, 1, sh3, s_i32);
    rc |= st_writer_add(w, "w.i16", ST_I16, 3, sh112, s_i16);
    rc |= st_writer_add(w, "w.i8", ST_I8, 1, sh5, s_i8);
    rc |= st_writer_add(w, "w.u8_empty", ST_U8, 2, sh0, NULL);
    rc |= st_writer_add(w, "w.bool_scalar", ST_BOOL, 0, NULL, s_bool);
    if (rc == 0) rc = st_write(w, path);
    st_writer_free(w);
    return rc;
}

TEST(safetensors_roundtrip) {
    char path[512];
    st_tmp(path, sizeof path, "rt.safetensors");
    CHECK_OK(write_st_sample(path));
    st_file f;
    REQUIRE(st_open(&f, path) == RM_OK);
    uint64_t hlen;
    memcpy(&hlen, f.map.data, 8);
    CHECK(hlen % 8 == 0);
    CHECK(f.n_tensors == 10 && f.n_meta == 2);
    CHECK(strcmp(f.meta_keys[0], "format") == 0 && strcmp(f.meta_vals[0], "pt") == 0);
    CHECK(strcmp(f.meta_vals[1], "quote \" backslash \\ caf\xc3\xa9") == 0);
    struct {
        const char *name;
        st_dtype dt;
        int nd;
        int64_t s0;
        const void *data;
        size_t nbytes;
    } want[] = {
        {"w.f32", ST_F32, 2, 2, s_f32, 24},   {"w.f16", ST_F16, 1, 4, s_f16, 8},
        {"w.bf16", ST_BF16, 2, 2, s_bf16, 8}, {"w.f64", ST_F64, 1, 1, s_f64, 8},
        {"w.i64", ST_I64, 1, 2, s_i64, 16},   {"w.i32", ST_I32, 1, 3, s_i32, 12},
        {"w.i16", ST_I16, 3, 1, s_i16, 4},    {"w.i8", ST_I8, 1, 5, s_i8, 5},
        {"w.u8_empty", ST_U8, 2, 0, NULL, 0}, {"w.bool_scalar", ST_BOOL, 0, 0, s_bool, 1},
    };
    for (int i = 0; i < 10; i++) {
        const st_tensor *t = st_find(&f, want[i].name);
        CHECKF(t != NULL, "missing %s", want[i].name);
        if (!t) continue;
        CHECKF(t->dtype == want[i].dt && t->n_dims == want[i].nd && t->nbytes == want[i].nbytes, "%s", want[i].name);
        if (want[i].nd) CHECK(t->shape[0] == want[i].s0);
        if (want[i].nbytes) CHECKF(memcmp(t->data, want[i].data, want[i].nbytes) == 0, "%s data", want[i].name);
    }
    const st_tensor *t = st_find(&f, "w.f32");
    REQUIRE(t);
    CHECK(t->shape[1] == 3);
    CHECK(((const uint8_t *)t->data - f.map.data) % 8 == 0);
    float out[6];
    CHECK_OK(st_to_f32(t, out));
    CHECK(memcmp(out, s_f32, sizeof out) == 0);
    CHECK_OK(st_to_f32(st_find(&f, "w.f16"), out));
    CHECK(out[0] == -1.5f && out[3] == 1.5f);
    CHECK_OK(st_to_f32(st_find(&f, "w.bf16"), out));
    CHECK(out[1] == 3.0f && out[3] == 9.0f);
    CHECK_OK(st_to_f32(st_find(&f, "w.f64"), out));
    CHECK(out[0] == 2.5f);
    CHECK(st_to_f32(st_find(&f, "w.i32"), out) == RM_EUNSUPPORTED);
    CHECK(st_find(&f, "nope") == NULL);
    CHECK(st_dtype_size(ST_BF16) == 2 && strcmp(st_dtype_name(ST_BOOL), "BOOL") == 0);
    st_close(&f);
}

TEST(safetensors_writer_rejects) {
    st_writer *w = st_writer_new();
    REQUIRE(w);
    int64_t sh[] = {2}, neg[] = {-1}, big[] = {INT64_MAX / 2, 4};
    float d[2] = {0};
    CHECK_OK(st_writer_add(w, "a", ST_F32, 1, sh, d));
    CHECK(st_writer_add(w, "a", ST_F32, 1, sh, d) == RM_EINVAL);
    CHECK(st_writer_add(w, "b", ST_F32, 1, neg, d) == RM_EINVAL);
    CHECK(st_writer_add(w, "b", ST_F32, 2, big, d) == RM_EINVAL);
    CHECK(st_writer_add(w, "b", ST_F32, 9, sh, d) == RM_EINVAL);
    CHECK(st_writer_add(w, "__metadata__", ST_F32, 1, sh, d) == RM_EINVAL);
    CHECK(st_writer_add(w, "b", (st_dtype)77, 1, sh, d) == RM_EINVAL);
    CHECK_OK(st_writer_meta(w, "k", "v1"));
    CHECK_OK(st_writer_meta(w, "k", "v2")); // replaces
    char path[512];
    st_tmp(path, sizeof path, "rej.safetensors");
    CHECK_OK(st_write(w, path));
    st_writer_free(w);
    st_file f;
    REQUIRE(st_open(&f, path) == RM_OK);
    CHECK(f.n_meta == 1 && strcmp(f.meta_vals[0], "v2") == 0 && f.n_tensors == 1);
    st_close(&f);
}

TEST(safetensors_truncated_everywhere) {
    char path[512];
    st_tmp(path, sizeof path, "trunc.safetensors");
    REQUIRE(write_st_sample(path) == 0);
    char *buf;
    size_t n;
    REQUIRE(rm_read_file(path, &buf, &n) == RM_OK);
    CHECK_OK(st_parse_copy(buf, n));
    // The data section must be covered exactly, so every shorter file fails.
    for (size_t cut = 0; cut < n; cut++) {
        int rc = st_parse_copy(buf, cut);
        CHECKF(rc == RM_EFORMAT, "cut at %zu of %zu: rc %d", cut, n, rc);
    }
    // One extra trailing byte is an uncovered gap.
    char *longer = malloc(n + 1);
    REQUIRE(longer);
    memcpy(longer, buf, n);
    longer[n] = 0;
    CHECK(st_parse_copy(longer, n + 1) == RM_EFORMAT);
    free(longer);
    free(buf);
}

// A file from a header string and `data` zero bytes after it.
static int st_try(const char *json, size_t data, const char *msg, int want, int line) {
    size_t hl = strlen(json), n = 8 + hl + data;
    uint8_t *b = calloc(1, n);
    if (!b) return 0;
    uint64_t h = hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, json, hl);
    int rc = st_parse_copy(b, n), ok = 1;
    free(b);
    if (rc != want) {
        rm_test_fail(__FILE__, line, "rc %d, want %d for %s (%s)", rc, want, json, rm_last_error());
        ok = 0;
    } else if (msg && !strstr(rm_last_error(), msg)) {
        rm_test_fail(__FILE__, line, "message '%s' lacks '%s'", rm_last_error(), msg);
        ok = 0;
    }
    return ok;
}
#define ST_BAD(json, data, msg) st_try(json, data, msg, RM_EFORMAT, __LINE__)
#define ST_GOOD(json, data) st_try(json, data, NULL, RM_OK, __LINE__)

TEST(safetensors_corrupt_headers) {
    // Valid references first.
    ST_GOOD("{}", 0);
    ST_GOOD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ", 8);
    ST_GOOD("{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
            "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
            8); // any order in the header

    // Header length beyond the file, and absurd.
    uint8_t small[12] = {0};
    uint64_t h = 100;
    memcpy(small, &h, 8);
    CHECK(st_parse_copy(small, sizeof small) == RM_EFORMAT);
    CHECK(strstr(rm_last_error(), "exceeds the file") != NULL);
    h = UINT64_MAX;
    memcpy(small, &h, 8);
    CHECK(st_parse_copy(small, sizeof small) == RM_EFORMAT);
    CHECK(st_parse_copy(small, 7) == RM_EFORMAT);

    ST_BAD("{\"a\":", 0, "1:6"); // bad JSON, with position
    ST_BAD("[1,2]", 0, "not a JSON object");
    ST_BAD("{\"a\":5}", 0, "not an object");
    ST_BAD("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing dtype");
    CHECK(st_try("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "F8_E4M3", RM_EUNSUPPORTED,
                 __LINE__));
    CHECK(st_try("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype", RM_EUNSUPPORTED,
                 __LINE__));
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing shape");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    CHECK(st_try("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "dimensions",
                 RM_EUNSUPPORTED, __LINE__));
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8, "data_offsets");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "data_offsets");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "outside");  // begin > end
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, "outside"); // past the data
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "give 12 bytes");
    ST_BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,8],\"data_offsets\":[0,8]}}", 8, "overflows");
    // Overlap, gap, uncovered tail, missing head.
    ST_BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
           6, "overlaps");
    ST_BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[5,9]}}",
           9, "gap");
    ST_BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 5, "cover 4 bytes");
    ST_BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[1,5]}}", 5, "gap");
    ST_BAD("{}", 3, "cover 0 bytes");
    // Duplicate names, bad metadata.
    ST_BAD("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
           "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
           2, "duplicate tensor a");
    ST_BAD("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    ST_BAD("{\"__metadata__\":[]}", 0, "not an object");
    ST_BAD("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__");
}

TEST(safetensors_open_errors) {
    st_file f;
    CHECK(st_open(&f, "/nonexistent/x.safetensors") == RM_EIO);
    char path[512];
    st_tmp(path, sizeof path, "empty.safetensors");
    CHECK_OK(rm_write_file_atomic(path, "", 0));
    CHECK(st_open(&f, path) == RM_EFORMAT);
    CHECK(strstr(rm_last_error(), "empty.safetensors") != NULL);
}

TEST(safetensors_to_f32_range) {
    char path[512];
    st_tmp(path, sizeof path, "range.safetensors");
    REQUIRE(write_st_sample(path) == 0);
    st_file f;
    REQUIRE(st_open(&f, path) == RM_OK);
    float out[6];
    CHECK_OK(st_to_f32_range(st_find(&f, "w.f32"), 2, 3, out));
    CHECK(out[0] == 3.5f && out[1] == 0 && out[2] == 1e-3f);
    CHECK_OK(st_to_f32_range(st_find(&f, "w.f16"), 3, 1, out));
    CHECK(out[0] == 1.5f);
    CHECK_OK(st_to_f32_range(st_find(&f, "w.f32"), 6, 0, out));
    CHECK(st_to_f32_range(st_find(&f, "w.f32"), 4, 3, out) == RM_EINVAL);
    CHECK(st_to_f32_range(st_find(&f, "w.f32"), (size_t)-1, 2, out) == RM_EINVAL);
    st_close(&f);
}

// Random byte mutations of the header: every parse succeeds or fails cleanly.
TEST(safetensors_random_mutations) {
    char path[512];
    st_tmp(path, sizeof path, "mut.safetensors");
    REQUIRE(write_st_sample(path) == 0);
    char *orig;
    size_t n;
    REQUIRE(rm_read_file(path, &orig, &n) == RM_OK);
    uint64_t hlen;
    memcpy(&hlen, orig, 8);
    char *buf = malloc(n);
    REQUIRE(buf);
    uint32_t seed = 7;
    int iters = rm_test_sanitized() ? 2000 : 10000, ok = 0;
    for (int it = 0; it < iters; it++) {
        memcpy(buf, orig, n);
        for (int e = 0; e < 1 + it % 3; e++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 7) % (8 + hlen);
            seed = seed * 1664525u + 1013904223u;
            const char vals[] = {'0', '9', '[', ']', ',', '"', '-', '{', (char)(seed >> 24)};
            buf[at] = vals[(seed >> 13) % sizeof vals];
        }
        int rc = st_parse_copy(buf, n);
        CHECKF(rc == RM_OK || rc == RM_EFORMAT || rc == RM_EUNSUPPORTED, "iteration %d: rc %d", it, rc);
        ok += rc == RM_OK;
    }
    CHECK(ok < iters);
    free(buf);
    free(orig);
}
