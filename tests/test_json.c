// test_json.c — the JSON parser (valid documents, every error class, depth
// limit, unicode escapes) and the rm_sb writer (escaping round trip).
#include "testing.h"
#include "base/err.h"
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

static rm_json *parse_ok(const char *s) {
    rm_json *j = NULL;
    int rc = rm_json_parse(s, strlen(s), "t.json", &j);
    if (rc != RM_OK) rm_test_fail(__FILE__, __LINE__, "parse '%s': %s", s, rm_last_error());
    return j;
}

// Expects a parse error whose message contains `want` (e.g. "1:5").
static void expect_error(const char *s, size_t len, const char *want, int line) {
    rm_json *j = NULL;
    int rc = rm_json_parse(s, len, "t.json", &j);
    if (rc != RM_EFORMAT || j != NULL) {
        rm_test_fail(__FILE__, line, "'%.40s' should fail, got %d", s, rc);
        rm_json_free(j);
        return;
    }
    if (want && !strstr(rm_last_error(), want))
        rm_test_fail(__FILE__, line, "'%.40s': message '%s' lacks '%s'", s, rm_last_error(), want);
}
#define BAD(s, want) expect_error(s, strlen(s), want, __LINE__)

TEST(json_valid_documents) {
    rm_json *j = parse_ok(" {\"a\": 1, \"b\": [true, false, null, -0.5e2, \"x\"], \"c\": {}, \"d\": [], "
                          "\"e\": \"\"} \n");
    REQUIRE(j);
    CHECK(j->type == RM_JSON_OBJECT && j->n == 5);
    CHECK(rm_json_get_int(j, "a", 0) == 1);
    const rm_json *b = rm_json_get(j, "b");
    REQUIRE(b && b->type == RM_JSON_ARRAY && b->n == 5);
    CHECK(b->items[0].type == RM_JSON_BOOL && b->items[0].boolean == 1);
    CHECK(b->items[1].type == RM_JSON_BOOL && b->items[1].boolean == 0);
    CHECK(b->items[2].type == RM_JSON_NULL);
    CHECK(b->items[3].type == RM_JSON_NUMBER && b->items[3].num == -50.0 && !b->items[3].is_int);
    CHECK(b->items[4].type == RM_JSON_STRING && strcmp(b->items[4].str, "x") == 0 && b->items[4].len == 1);
    CHECK(rm_json_get(j, "c")->type == RM_JSON_OBJECT && rm_json_get(j, "c")->n == 0);
    CHECK(rm_json_get(j, "d")->type == RM_JSON_ARRAY && rm_json_get(j, "d")->n == 0);
    CHECK(strcmp(rm_json_get_str(j, "e", "?"), "") == 0);
    CHECK(rm_json_get(j, "zz") == NULL);
    CHECK(strcmp(rm_json_get_str(j, "a", "dflt"), "dflt") == 0); // wrong type -> default
    CHECK(rm_json_get_bool(j, "a", 7) == 7);
    CHECK(rm_json_get_num(NULL, "a", 2.5) == 2.5);
    rm_json_free(j);

    // Scalars at the top level, and a leading BOM.
    j = parse_ok("42");
    CHECK(j && j->type == RM_JSON_NUMBER && j->is_int && j->inum == 42);
    rm_json_free(j);
    j = parse_ok("\xef\xbb\xbf\"s\"");
    CHECK(j && j->type == RM_JSON_STRING && strcmp(j->str, "s") == 0);
    rm_json_free(j);
    j = parse_ok("null");
    CHECK(j && j->type == RM_JSON_NULL);
    rm_json_free(j);
    // Duplicate keys are allowed; lookup returns the first.
    j = parse_ok("{\"k\":1,\"k\":2}");
    CHECK(rm_json_get_int(j, "k", 0) == 1);
    rm_json_free(j);
}

TEST(json_numbers) {
    rm_json *j = parse_ok("[9223372036854775807, -9223372036854775808, 9223372036854775808, 0, -0, "
                          "1e3, 4.0, 1.5, 123456789012345678, 1e400, 2.5e-3]");
    REQUIRE(j && j->n == 11);
    CHECK(j->items[0].is_int && j->items[0].inum == INT64_MAX);
    CHECK(j->items[1].is_int && j->items[1].inum == INT64_MIN);
    CHECK(!j->items[2].is_int && j->items[2].num == 9223372036854775808.0);
    CHECK(j->items[3].is_int && j->items[3].inum == 0);
    CHECK(j->items[4].is_int && j->items[4].inum == 0);
    CHECK(!j->items[5].is_int && j->items[5].num == 1000.0);
    CHECK(!j->items[6].is_int && j->items[6].num == 4.0);
    CHECK(j->items[8].is_int && j->items[8].inum == 123456789012345678LL); // not rounded via double
    CHECK(isinf(j->items[9].num));
    CHECK_NEAR(j->items[10].num, 0.0025, 1e-15);
    rm_json_free(j);

    j = parse_ok("{\"a\":1e3,\"b\":4.0,\"c\":0.5}");
    CHECK(rm_json_get_int(j, "a", -1) == 1000);
    CHECK(rm_json_get_int(j, "b", -1) == 4);
    CHECK(rm_json_get_int(j, "c", -1) == -1);
    CHECK(rm_json_get_num(j, "c", 0) == 0.5);
    rm_json_free(j);
}

TEST(json_errors) {
    BAD("", "1:1");
    BAD("   ", "1:4");
    BAD("{", "1:2");
    BAD("[1,]", "1:4"); // trailing comma
    BAD("{\"a\":1,}", "1:8");
    BAD("[1 2]", "1:4");
    BAD("{\"a\" 1}", "1:6");
    BAD("{a:1}", "1:2"); // unquoted key
    BAD("[01]", "1:2");  // leading zero
    BAD("[1.]", "1:4");
    BAD("[.5]", "1:2");
    BAD("[1e]", "1:4");
    BAD("[-]", "1:3");
    BAD("[+1]", "1:2");
    BAD("[NaN]", "1:2");
    BAD("[tru]", "1:2");
    BAD("[nul", "1:2");
    BAD("\"abc", "1:1");       // unterminated string
    BAD("\"a\\qb\"", "1:3");   // bad escape
    BAD("\"a\\u12\"", "1:3");  // short \u escape
    BAD("\"\\ud800\"", "1:2"); // lone high surrogate
    BAD("\"\\udc00\"", "1:2"); // lone low surrogate
    BAD("\"\\ud800\\u0041\"", "1:2");
    BAD("\"a\tb\"", "1:3");         // raw control character
    BAD("\"\xc0\xaf\"", "1:2");     // overlong UTF-8
    BAD("\"\xed\xa0\x80\"", "1:2"); // encoded surrogate
    BAD("\"\xe2\x82\"", "1:2");     // truncated sequence
    BAD("\"\xff\"", "1:2");
    BAD("[1]\n x", "2:2"); // garbage after the value
    BAD("{\n  \"a\": [1,\n  ]}", "3:3");
    BAD("/* c */ 1", "1:1"); // no comments
    // Embedded NUL outside a string, and a buffer that ends inside an escape.
    expect_error("[1,\0 2]", 7, "1:4", __LINE__);
    expect_error("\"ab\\", 4, "1:1", __LINE__);
    // The message names the source.
    BAD("[", "t.json:");
}

TEST(json_depth_limit) {
    int n = RM_JSON_MAX_DEPTH;
    char *s = malloc((size_t)(2 * n + 3));
    REQUIRE(s);
    // Exactly the limit parses...
    memset(s, '[', (size_t)n);
    memset(s + n, ']', (size_t)n);
    s[2 * n] = 0;
    rm_json *j = parse_ok(s);
    CHECK(j != NULL);
    rm_json_free(j);
    // ...one more is rejected, for arrays and objects alike.
    memset(s, '[', (size_t)n + 1);
    memset(s + n + 1, ']', (size_t)n + 1);
    s[2 * n + 2] = 0;
    j = NULL;
    CHECK(rm_json_parse(s, (size_t)(2 * n + 2), "deep", &j) == RM_EFORMAT && j == NULL);
    CHECK(strstr(rm_last_error(), "nesting") != NULL);
    free(s);
    // A hostile 1 MB of '[' fails fast without recursion trouble.
    size_t big = 1 << 20;
    s = malloc(big);
    REQUIRE(s);
    memset(s, '[', big);
    CHECK(rm_json_parse(s, big, "deep", &j) == RM_EFORMAT);
    for (size_t i = 0; i + 6 <= big; i += 6) memcpy(s + i, "{\"a\":[", 6);
    CHECK(rm_json_parse(s, big, "deep", &j) == RM_EFORMAT);
    free(s);
}

TEST(json_unicode_escapes) {
    rm_json *j = parse_ok("[\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\", \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", "
                          "\"a\\u0000b\", \"\xc3\xa9\xf0\x9f\x98\x80\"]");
    REQUIRE(j && j->n == 4);
    CHECK(strcmp(j->items[0].str, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0);
    CHECK(j->items[0].len == 10);
    CHECK(strcmp(j->items[1].str, "\"\\/\b\f\n\r\t") == 0);
    CHECK(j->items[2].len == 3 && memcmp(j->items[2].str, "a\0b", 3) == 0);
    CHECK(strcmp(j->items[3].str, "\xc3\xa9\xf0\x9f\x98\x80") == 0);
    rm_json_free(j);
    // Upper-case hex digits and escaped keys.
    j = parse_ok("{\"\\u00C9t\\u00E9\": 1}");
    CHECK(rm_json_get_int(j, "\xc3\x89t\xc3\xa9", 0) == 1);
    rm_json_free(j);
}

TEST(json_sb_roundtrip) {
    // Every byte value 1..255 that forms valid UTF-8 on its own, plus
    // multi-byte characters and an embedded NUL.
    char src[200];
    size_t n = 0;
    for (int c = 0; c < 0x80; c++) src[n++] = (char)c;
    const char *extra = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbf";
    memcpy(src + n, extra, strlen(extra));
    n += strlen(extra);
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_puts(&sb, "{\"k\":");
    rm_sb_json_str(&sb, src, n);
    rm_sb_puts(&sb, ",\"n\":[");
    double nums[] = {0.1, -1e300, 3, 1.0 / 3.0, 5e-324, 123456789.125};
    for (int i = 0; i < 6; i++) {
        if (i) rm_sb_putn(&sb, ",", 1);
        rm_sb_json_num(&sb, nums[i]);
    }
    rm_sb_printf(&sb, ",%d,", 7);
    rm_sb_json_num(&sb, NAN);
    rm_sb_puts(&sb, "]}");
    REQUIRE(!sb.oom && sb.buf && strlen(sb.buf) == sb.len);
    rm_json *j = NULL;
    CHECK_OK(rm_json_parse(sb.buf, sb.len, "sb", &j));
    REQUIRE(j);
    const rm_json *k = rm_json_get(j, "k");
    REQUIRE(k && k->type == RM_JSON_STRING);
    CHECK(k->len == n && memcmp(k->str, src, n) == 0);
    const rm_json *a = rm_json_get(j, "n");
    REQUIRE(a && a->n == 8);
    for (int i = 0; i < 6; i++) CHECKF(a->items[i].num == nums[i], "number %d did not round trip", i);
    CHECK(a->items[6].inum == 7);
    CHECK(a->items[7].type == RM_JSON_NULL);
    rm_json_free(j);
    rm_sb_free(&sb);

    // Invalid UTF-8 is replaced so that the output stays valid JSON.
    rm_sb_init(&sb);
    rm_sb_json_str(&sb,
                   "a\xff"
                   "b\xc3",
                   4);
    CHECK(strcmp(sb.buf, "\"a\xef\xbf\xbd"
                         "b\xef\xbf\xbd\"") == 0);
    rm_sb_free(&sb);

    // Long printf output grows the buffer.
    rm_sb_init(&sb);
    for (int i = 0; i < 1000; i++) rm_sb_printf(&sb, "%0100d", i);
    CHECK(sb.len == 100000 && !sb.oom);
    CHECK(strncmp(sb.buf + 99900, "0000", 4) == 0 && strcmp(sb.buf + 99997, "999") == 0);
    rm_sb_free(&sb);
}

TEST(json_parse_file) {
    char path[512];
    snprintf(path, sizeof path, "%s/j.json", rm_test_tmpdir());
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    fputs("{\"x\": [1, 2]}\n", f);
    fclose(f);
    rm_json *j = NULL;
    CHECK_OK(rm_json_parse_file(path, &j));
    CHECK(j && rm_json_get(j, "x")->n == 2);
    rm_json_free(j);
    snprintf(path, sizeof path, "%s/missing.json", rm_test_tmpdir());
    CHECK(rm_json_parse_file(path, &j) == RM_EIO && j == NULL);
}

// Random byte mutations and truncations of a valid document: each parse must
// either succeed or fail cleanly (the sanitizer build checks the memory side).
TEST(json_mutations) {
    const char *doc = "{\"a\": [1, -2.5e3, \"x\\u00e9\\ud83d\\ude00\", {\"b\": null}], \"c\": true, "
                      "\"d\": \"\xc3\xa9\\n\", \"e\": [[], {}, false]}";
    size_t n = strlen(doc);
    char buf[256];
    uint32_t seed = 12345;
    int ok = 0, bad = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, doc, n);
        size_t len = n;
        int edits = 1 + iter % 3;
        for (int e = 0; e < edits; e++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            buf[at] = (char)(seed >> 16);
        }
        if (iter % 4 == 0) len = (seed >> 4) % n;
        char *heap = malloc(len ? len : 1); // exact-size copy so ASan sees overreads
        REQUIRE(heap);
        memcpy(heap, buf, len);
        rm_json *j = NULL;
        int rc = rm_json_parse(heap, len, "fuzz", &j);
        CHECK(rc == RM_OK || rc == RM_EFORMAT);
        CHECK((rc == RM_OK) == (j != NULL));
        if (rc == RM_OK) ok++;
        else bad++;
        rm_json_free(j);
        free(heap);
    }
    CHECK(ok > 0 && bad > 0);
}
