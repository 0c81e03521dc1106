// test_tokenizer.c — tokenizers against llama.cpp's reference vocab tests
// (../shared/data/tokenizers: *.gguf, *.gguf.inp strings, *.gguf.out ids).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"
#include "model/llama.h"
#include "model/synth.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "testing.h"

// ---- reference data ----

typedef struct vocab_case {
    gguf_file g;
    rm_tokenizer *tok;
    char *inp, *out;      // file contents
    int n;                // number of test strings
    const char *str[128]; // into inp (separator bytes overwritten by NUL)
    size_t len[128];
    const char *ref[128]; // lines of out (NUL-terminated)
} vocab_case;

static void case_free(vocab_case *c) {
    if (c->tok) rm_tokenizer_free(c->tok);
    gguf_close(&c->g);
    free(c->inp);
    free(c->out);
}

// Loads ../shared/data/tokenizers/ggml-vocab-NAME.gguf and its test files.
// Returns 0 when the data is absent (caller skips), 1 when loaded, -1 on error.
static int case_load(vocab_case *c, const char *name) {
    memset(c, 0, sizeof *c);
    const char *shared = rm_test_shared();
    if (!shared) return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-%s.gguf", shared, name);
    if (!rm_file_exists(path)) return 0;
    if (gguf_open(&c->g, path) != RM_OK) {
        rm_test_fail(__FILE__, __LINE__, "%s", rm_last_error());
        return -1;
    }
    if (rm_tokenizer_from_gguf(&c->tok, &c->g) != RM_OK) {
        rm_test_fail(__FILE__, __LINE__, "%s: %s", name, rm_last_error());
        return -1;
    }
    size_t li, lo;
    char p2[600];
    snprintf(p2, sizeof p2, "%s.inp", path);
    if (rm_read_file(p2, &c->inp, &li) != RM_OK) return -1;
    snprintf(p2, sizeof p2, "%s.out", path);
    if (rm_read_file(p2, &c->out, &lo) != RM_OK) return -1;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    for (size_t pos = 0; pos < li && c->n < 128;) {
        char *hit = memmem(c->inp + pos, li - pos, sep, sizeof sep - 1);
        size_t end = hit ? (size_t)(hit - c->inp) : li;
        c->str[c->n] = c->inp + pos;
        c->len[c->n] = end - pos;
        c->n++;
        if (!hit) break;
        *hit = 0;
        pos = end + sizeof sep - 1;
    }
    int k = 0;
    for (char *line = c->out; line && *line && k < 128; k++) {
        c->ref[k] = line;
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        line = nl ? nl + 1 : NULL;
    }
    if (k != c->n) {
        rm_test_fail(__FILE__, __LINE__, "%s: %d test strings but %d reference lines", name, c->n, k);
        return -1;
    }
    return 1;
}

// Loads case c or leaves the test (skipped without ../shared, failed on error).
#define OPEN_CASE(c, name)                                                                                             \
    do {                                                                                                               \
        int r_ = case_load(&(c), name);                                                                                \
        if (r_ == 0) SKIP("no ../shared/data/tokenizers");                                                             \
        if (r_ < 0) {                                                                                                  \
            case_free(&(c));                                                                                           \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

// " 1 2 3" form of ids, as in the .out files.
static void fmt_ids(const int32_t *ids, int n, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n && o + 16 < cap; i++) o += (size_t)snprintf(buf + o, cap - o, " %d", (int)ids[i]);
}

static void check_vocab(const char *name) {
    vocab_case c;
    OPEN_CASE(c, name);
    int exact = 0;
    for (int i = 0; i < c.n; i++) {
        int32_t ids[1024];
        int n = rm_tokenize(c.tok, c.str[i], c.len[i], 0, 0, ids, 1024);
        CHECKF(n >= 0 && n <= 1024, "%s: string %d: rm_tokenize -> %d (%s)", name, i, n, rm_last_error());
        if (n < 0 || n > 1024) continue;
        char got[8192];
        fmt_ids(ids, n, got, sizeof got);
        if (!strcmp(got, c.ref[i])) exact++;
        else
            rm_test_fail(__FILE__, __LINE__, "%s: string %d '%.*s'\n      got '%s'\n     want '%s'", name, i,
                         (int)c.len[i], c.str[i], got, c.ref[i]);
    }
    fprintf(stderr, "    %s: %d/%d strings exact\n", name, exact, c.n);
    case_free(&c);
}

TEST(tokenizer_vocab_llama_spm) { check_vocab("llama-spm"); }
TEST(tokenizer_vocab_gpt2) { check_vocab("gpt-2"); }
TEST(tokenizer_vocab_deepseek_coder) { check_vocab("deepseek-coder"); }
TEST(tokenizer_vocab_falcon) { check_vocab("falcon"); }
TEST(tokenizer_vocab_bert_bge) { check_vocab("bert-bge"); }

// ---- round trip ----

// Decodes ids with the streaming detokenizer into buf; returns the length.
static size_t detok_all(const rm_tokenizer *t, const int32_t *ids, int n, char *buf, size_t cap) {
    rm_detok d;
    rm_detok_init(&d, t);
    size_t o = 0;
    int need = rm_detok_max_bytes(t);
    for (int i = 0; i < n && o + (size_t)need < cap; i++) o += (size_t)rm_detok_push(&d, ids[i], buf + o, need);
    if (o + 8 < cap) o += (size_t)rm_detok_flush(&d, buf + o, 8);
    return o;
}

static void check_roundtrip(const char *name) {
    vocab_case c;
    OPEN_CASE(c, name);
    for (int i = 0; i < c.n; i++) {
        for (int bos = 0; bos < 2; bos++) {
            int32_t ids[1024];
            int n = rm_tokenize(c.tok, c.str[i], c.len[i], bos, 0, ids, 1024);
            REQUIRE(n >= 0 && n <= 1024);
            char buf[16384];
            size_t m = detok_all(c.tok, ids, n, buf, sizeof buf);
            CHECKF(m == c.len[i] && !memcmp(buf, c.str[i], m), "%s: string %d (bos %d) decodes to '%.*s'", name, i, bos,
                   (int)m, buf);
            // the same through rm_detok_push_sb (id -1 flushes)
            rm_detok d;
            rm_detok_init(&d, c.tok);
            rm_sb sb;
            rm_sb_init(&sb);
            for (int k = 0; k < n; k++) CHECK(rm_detok_push_sb(&d, ids[k], &sb) >= 0);
            CHECK(rm_detok_push_sb(&d, -1, &sb) >= 0);
            CHECKF(sb.len == c.len[i] && (sb.len == 0 || !memcmp(sb.buf, c.str[i], sb.len)),
                   "%s: string %d (bos %d) decodes through the builder to '%.*s'", name, i, bos, (int)sb.len,
                   sb.buf ? sb.buf : "");
            rm_sb_free(&sb);
        }
    }
    case_free(&c);
}

TEST(tokenizer_roundtrip_spm) { check_roundtrip("llama-spm"); }
TEST(tokenizer_roundtrip_gpt2) { check_roundtrip("gpt-2"); }
TEST(tokenizer_roundtrip_deepseek_coder) { check_roundtrip("deepseek-coder"); }
TEST(tokenizer_roundtrip_falcon) { check_roundtrip("falcon"); }

// ---- random bytes ----

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

// Random byte strings (mostly invalid UTF-8) never crash; byte-exact
// tokenizers give every byte back through rm_token_to_bytes.
static void check_fuzz(const char *name, int bytes_exact) {
    vocab_case c;
    OPEN_CASE(c, name);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    int iters = rm_test_sanitized() ? 150 : 600;
    // How each byte alone decodes: itself, nothing (falcon lacks a few control
    // bytes) or the text of a user-defined token (deepseek-coder spells bytes
    // that never occur in UTF-8, like 0xF5, with added tokens such as "õ").
    // A byte no token spells (and no unknown token stands for) makes
    // rm_tokenize fail rather than drop it.
    char spell[256][8];
    int spell_n[256], unspellable[256];
    for (int b = 0; b < 256; b++) {
        char ch = (char)b;
        int32_t id[4];
        int n = rm_tokenize(c.tok, &ch, 1, 0, 0, id, 4);
        unspellable[b] = n < 0;
        spell_n[b] = 0;
        for (int k = 0; k < n && k < 4; k++) {
            int m = rm_token_to_bytes(c.tok, id[k], 0, spell[b] + spell_n[b], 8 - spell_n[b]);
            if (m > 0 && spell_n[b] + m <= 8) spell_n[b] += m;
        }
    }
    static const char alphabet[] = " \t\n'sHello,.!0123456789<>|\xe2\x96\x81\xc3\xa9\xf0\x9f\xa6\x99";
    for (int it = 0; it < iters; it++) {
        char text[200];
        int len = (int)(rng_next(&s) % sizeof text);
        int mode = it % 3; // 0: any byte, 1: from a text-like alphabet, 2: mixed
        for (int k = 0; k < len; k++) {
            uint64_t x = rng_next(&s);
            text[k] =
                mode == 0 || (mode == 2 && x % 4 == 0) ? (char)(x >> 8) : alphabet[(x >> 8) % (sizeof alphabet - 1)];
        }
        int32_t ids[1024];
        int n = rm_tokenize(c.tok, text, (size_t)len, it & 1, it % 5 == 0, ids, 1024);
        int bad = 0;
        for (int k = 0; k < len; k++) bad |= unspellable[(uint8_t)text[k]];
        if (bad) {
            CHECKF(n < 0 && strstr(rm_last_error(), "no token of this vocabulary spells"),
                   "%s: random string %d holds an unspellable byte but tokenized", name, it);
            continue;
        }
        REQUIRE(n >= 0 && n <= 1024);
        for (int k = 0; k < n; k++) CHECK(ids[k] >= 0 && ids[k] < rm_tokenizer_n_vocab(c.tok));
        char out[8192];
        size_t m = detok_all(c.tok, ids, n, out, sizeof out);
        (void)m;
        if (bytes_exact && !(it % 5 == 0)) {
            size_t o = 0;
            for (int k = 0; k < n; k++) {
                int b = rm_token_to_bytes(c.tok, ids[k], 0, out + o, (int)(sizeof out - o));
                REQUIRE(b >= 0 && o + (size_t)b < sizeof out);
                o += (size_t)b;
            }
            // Expected: the input, SPM's space marker read as a space.
            char want[2048];
            size_t nw = 0;
            for (int k = 0; k < len; k++) {
                if (bytes_exact == 2 && k + 2 < len && !memcmp(text + k, "\xe2\x96\x81", 3)) {
                    want[nw++] = ' ';
                    k += 2;
                } else if (bytes_exact == 2) {
                    want[nw++] = text[k];
                } else {
                    memcpy(want + nw, spell[(uint8_t)text[k]], (size_t)spell_n[(uint8_t)text[k]]);
                    nw += (size_t)spell_n[(uint8_t)text[k]];
                }
            }
            const char *p = out;
            if (bytes_exact == 2 && o > 0 && out[0] == ' ') {
                p++;
                o--;
            } // SPM's dummy prefix
            CHECKF(o == nw && !memcmp(p, want, o), "%s: random string %d does not come back", name, it);
        }
    }
    case_free(&c);
}

// The scan (short words) and heap (long words) merge paths agree: every
// vocabulary test string and random text again with the heap path only.
static void check_merge_paths(const char *name) {
    vocab_case c;
    OPEN_CASE(c, name);
    rm_tokenizer_set_cache(c.tok, 0);
    uint64_t s = 12345;
    for (int i = 0; i < c.n + 200; i++) {
        char text[400];
        const char *str = i < c.n ? c.str[i] : text;
        size_t len = i < c.n ? c.len[i] : 0;
        if (i >= c.n) { // words of up to 40 letters/digits/punctuation
            static const char al[] = "abcdefghijklmnopqrstuvwxyzeeeaaoo0123456789.,!'-";
            len = (size_t)(rng_next(&s) % 300);
            for (size_t k = 0; k < len; k++) text[k] = rng_next(&s) % 9 == 0 ? ' ' : al[rng_next(&s) % (sizeof al - 1)];
        }
        int32_t a[1024], b[1024];
        tok_short_words = TOK_SHORT_MAX;
        int na = rm_tokenize(c.tok, str, len, 0, 0, a, 1024);
        tok_short_words = 0;
        int nb = rm_tokenize(c.tok, str, len, 0, 0, b, 1024);
        tok_short_words = TOK_SHORT_MAX;
        CHECKF(na == nb && na >= 0 && na <= 1024 && !memcmp(a, b, (size_t)na * sizeof *a),
               "%s: string %d: scan and heap merges differ", name, i);
    }
    case_free(&c);
}

TEST(tokenizer_merge_paths_spm) { check_merge_paths("llama-spm"); }
TEST(tokenizer_merge_paths_bpe) { check_merge_paths("gpt-2"); }

TEST(tokenizer_fuzz_spm) { check_fuzz("llama-spm", 2); }
TEST(tokenizer_fuzz_gpt2) { check_fuzz("gpt-2", 1); }
TEST(tokenizer_fuzz_deepseek_coder) { check_fuzz("deepseek-coder", 1); }
TEST(tokenizer_fuzz_falcon) { check_fuzz("falcon", 1); }
TEST(tokenizer_fuzz_bert) { check_fuzz("bert-bge", 0); }

// ---- other behaviour ----

TEST(tokenizer_streaming_utf8) {
    vocab_case c;
    OPEN_CASE(c, "gpt-2");
    // "🦙" is split over several byte tokens: nothing comes out until it is complete.
    const char *s = "a\xf0\x9f\xa6\x99z";
    int32_t ids[16];
    int n = rm_tokenize(c.tok, s, strlen(s), 0, 0, ids, 16);
    REQUIRE(n >= 3);
    rm_detok d;
    rm_detok_init(&d, c.tok);
    char out[64], buf[256];
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        int k = rm_detok_push(&d, ids[i], buf, (int)sizeof buf);
        for (int j = 0; j < k; j++) CHECK((unsigned char)buf[j] < 0x80 || k >= 4 || j > 0);
        memcpy(out + o, buf, (size_t)k);
        o += (size_t)k;
    }
    CHECK(o == strlen(s) && !memcmp(out, s, o));
    // A dangling lead byte is flushed as U+FFFD.
    rm_detok_init(&d, c.tok);
    int32_t id = -1;
    CHECK(rm_tokenize(c.tok, "\xe2", 1, 0, 0, &id, 1) == 1);
    CHECK(rm_detok_push(&d, id, buf, (int)sizeof buf) == 0);
    CHECK(rm_detok_flush(&d, buf, (int)sizeof buf) == 3 && !memcmp(buf, "\xef\xbf\xbd", 3));
    rm_detok_init(&d, c.tok);
    rm_sb sb;
    rm_sb_init(&sb);
    CHECK(rm_detok_push_sb(&d, id, &sb) == 0 && rm_detok_push_sb(&d, -1, &sb) == 3);
    CHECK(sb.len == 3 && !memcmp(sb.buf, "\xef\xbf\xbd", 3));
    rm_sb_free(&sb);
    case_free(&c);
}

TEST(tokenizer_special_tokens) {
    vocab_case c;
    OPEN_CASE(c, "llama-spm");
    int32_t ids[64];
    // Parsed: <s> and </s> become ids 1 and 2; not parsed: plain text.
    int n = rm_tokenize(c.tok, "<s>Hi</s>", 9, 0, 1, ids, 64);
    REQUIRE(n >= 3);
    CHECK(ids[0] == 1 && ids[n - 1] == 2);
    n = rm_tokenize(c.tok, "<s>Hi</s>", 9, 0, 0, ids, 64);
    REQUIRE(n > 0);
    for (int i = 0; i < n; i++) CHECK(ids[i] != 1 && ids[i] != 2);
    // BOS on request only; EOG for </s>.
    n = rm_tokenize(c.tok, "Hello", 5, 1, 0, ids, 64);
    CHECK(n == 2 && ids[0] == 1 && ids[1] == 15043);
    CHECK(rm_tokenizer_is_eog(c.tok, 2) && !rm_tokenizer_is_eog(c.tok, 1));
    CHECK(rm_tokenizer_add_bos(c.tok) == 1);
    // Control tokens render only on request; byte tokens give their byte.
    char b[16];
    CHECK(rm_token_to_bytes(c.tok, 1, 0, b, 16) == 0);
    CHECK(rm_token_to_bytes(c.tok, 1, 1, b, 16) == 3 && !memcmp(b, "<s>", 3));
    CHECK(rm_token_to_bytes(c.tok, 3 + 0x41, 0, b, 16) == 1 && b[0] == 'A');
    CHECK(rm_token_to_bytes(c.tok, 15043, 0, b, 16) == 6 && !memcmp(b, " Hello", 6));
    CHECK(rm_token_to_bytes(c.tok, -1, 0, b, 16) < 0);
    // Too small a buffer: the full count comes back.
    CHECK(rm_tokenize(c.tok, "Hello world", 11, 0, 0, ids, 1) == 2 && ids[0] == 15043);
    case_free(&c);
}

TEST(tokenizer_bert_cls_sep) {
    vocab_case c;
    OPEN_CASE(c, "bert-bge");
    int32_t ids[16];
    int n = rm_tokenize(c.tok, "Hello world", 11, 1, 0, ids, 16);
    CHECK(n == 4 && ids[0] == 101 && ids[1] == 7592 && ids[2] == 2088 && ids[3] == 102);
    // Accents stripped, lower-cased: "Héllo" reads as "hello".
    n = rm_tokenize(c.tok, "H\xc3\xa9llo", 6, 0, 0, ids, 16);
    CHECK(n == 1 && ids[0] == 7592);
    case_free(&c);
}

// A byte-level BPE vocabulary like the one `ramole synth` writes: the 256
// byte characters, <s>, </s>, then `extra` tokens; with the given merges.
static rm_tokenizer *synth_tokenizer(const char *pre, const char *const *extra, int n_extra, const char *const *merges,
                                     int n_merges) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return NULL;
    const char *toks[300];
    char store[256][8];
    int32_t types[300];
    int n = 0;
    for (int b = 0; b < 256; b++, n++) {
        int l = tok_byte_to_unicode(b, store[b]);
        store[b][l] = 0;
        toks[n] = store[b];
        types[n] = 1;
    }
    toks[n] = "<s>";
    types[n++] = 3;
    toks[n] = "</s>";
    types[n++] = 3;
    for (int i = 0; i < n_extra && n < 300; i++, n++) {
        toks[n] = extra[i];
        types[n] = 1;
    }
    int rc = gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    if (!rc) rc = gguf_set_str(w, "tokenizer.ggml.pre", pre);
    if (!rc) rc = gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    if (!rc) rc = gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n);
    if (!rc) rc = gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merges);
    if (!rc) rc = gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 256);
    if (!rc) rc = gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 257);
    char path[512];
    snprintf(path, sizeof path, "%s/synth-%s.gguf", rm_test_tmpdir(), pre);
    if (!rc) rc = gguf_write(w, path);
    gguf_writer_free(w);
    rm_tokenizer *t = NULL;
    gguf_file g;
    if (!rc && gguf_open(&g, path) == RM_OK) {
        if (rm_tokenizer_from_gguf(&t, &g) != RM_OK) t = NULL; // callers check
        gguf_close(&g);
    }
    return t;
}

// The vocabulary `ramole synth` writes: no merges, every byte its own token.
TEST(tokenizer_synth_byte_vocab) {
    rm_tokenizer *t = synth_tokenizer("default", NULL, 0, NULL, 0);
    REQUIRE(t);
    const char *s = "Hi \xc3\xa9!\n";
    int32_t ids[32];
    int n = rm_tokenize(t, s, strlen(s), 1, 0, ids, 32);
    REQUIRE(n == (int)strlen(s) + 1);
    CHECK(ids[0] == 256);
    for (int i = 1; i < n; i++) CHECK(ids[i] == (uint8_t)s[i - 1]);
    CHECK(rm_tokenizer_is_eog(t, 257));
    char out[64];
    CHECK(detok_all(t, ids, n, out, sizeof out) == strlen(s) && !memcmp(out, s, strlen(s)));
    rm_tokenizer_free(t);
}

// Merges apply by rank, lowest first, whatever their position in the word.
TEST(tokenizer_bpe_merge_order) {
    static const char *const extra[] = {"He", "ll", "llo", "Hello", "el"};
    static const char *const merges[] = {"H e", "l l", "ll o", "He llo", "e l"};
    rm_tokenizer *t = synth_tokenizer("gpt-2", extra, 5, merges, 5);
    REQUIRE(t);
    static const struct {
        const char *s;
        int n;
        int32_t ids[4];
    } cases[] = {
        {"Hello", 1, {261}},     // H e -> He, l l -> ll, ll o -> llo, He llo -> Hello
        {"Hell", 2, {258, 259}}, // He + ll
        {"ell", 2, {'e', 259}},  // l l (rank 1) wins over e l (rank 4); byte ids = byte values
        {"el", 1, {262}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[8];
        int n = rm_tokenize(t, cases[i].s, strlen(cases[i].s), 0, 0, ids, 8);
        CHECKF(n == cases[i].n, "'%s': %d tokens", cases[i].s, n);
        for (int k = 0; k < n && k < cases[i].n; k++)
            CHECKF(ids[k] == cases[i].ids[k], "'%s': token %d is %d, want %d", cases[i].s, k, ids[k], cases[i].ids[k]);
    }
    rm_tokenizer_free(t);
}

// Llama 3 (llama-bpe) takes a word that is a token whole, merges or not.
TEST(tokenizer_bpe_ignore_merges) {
    static const char *const extra[] = {"Hello"};
    rm_tokenizer *a = synth_tokenizer("llama-bpe", extra, 1, NULL, 0);
    rm_tokenizer *b = synth_tokenizer("gpt-2", extra, 1, NULL, 0);
    REQUIRE(a && b);
    int32_t ids[8];
    CHECK(rm_tokenize(a, "Hello", 5, 0, 0, ids, 8) == 1 && ids[0] == 258);
    CHECK(rm_tokenize(b, "Hello", 5, 0, 0, ids, 8) == 5 && ids[0] == 'H');
    CHECK(rm_tokenizer_add_bos(a) == 1 && rm_tokenizer_add_bos(b) == 0);
    rm_tokenizer_free(a);
    rm_tokenizer_free(b);
}

// Pre-tokenizer splits per tokenizer.ggml.pre, worked out from the regexes.
TEST(tokenizer_pretokenizers) {
    static const struct {
        const char *pre, *text, *pieces;
    } cases[] = {
        {"gpt-2", "Hello world  123 I'm", "Hello| world| | 123| I|'m"},
        {"mpt", "Hello world  123 I'm", "Hello| world| | 123| I|'m"},
        {"gpt-neox", "it's  ok", "it|'s| | ok"},
        {"llama-bpe", "Hello world  12345 I'M\n\n", "Hello| world| | |123|45| I|'M|\n\n"},
        {"qwen2", "Hi 12345!", "Hi| |1|2|3|4|5|!"},
        {"starcoder", "a12 b", "a|1|2| b"},
        {"refact", "x=10", "x|=|1|0"},
        {"falcon", "Hi!! $5 1234", "Hi|!!| |$|5| |123|4"},
        {"deepseek-llm", "Hi there!\n12", "Hi| there|!|\n|12"},
        {"default", "a+b=12345", "a|+|b|=|123|45"},
        {"bloom", "Hi, you.", "Hi|,| you|."},
        {"viking", "ab12", "ab|1|2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rm_tokenizer *t = synth_tokenizer(cases[i].pre, NULL, 0, NULL, 0);
        CHECKF(t != NULL, "pre %s", cases[i].pre);
        if (!t) continue;
        size_t ends[64], n = strlen(cases[i].text);
        int k = tok_bpe_split(t, cases[i].text, n, ends, 64);
        char got[256];
        size_t o = 0, start = 0;
        for (int j = 0; j < k && j < 64 && o + 40 < sizeof got; j++) {
            if (j) got[o++] = '|';
            memcpy(got + o, cases[i].text + start, ends[j] - start);
            o += ends[j] - start;
            start = ends[j];
        }
        got[o] = 0;
        CHECKF(!strcmp(got, cases[i].pieces), "pre %s: '%s' splits as '%s', want '%s'", cases[i].pre, cases[i].text,
               got, cases[i].pieces);
        rm_tokenizer_free(t);
    }
    // An unknown pre-tokenizer is an error, not a silent fallback.
    rm_clear_error();
    rm_tokenizer *t = synth_tokenizer("no-such-pre", NULL, 0, NULL, 0);
    CHECK(t == NULL && strstr(rm_last_error(), "no-such-pre"));
}

// ---- CLI ----

static void check_cli(const char *name) {
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared");
    char cmd[1400], ref[600];
    snprintf(ref, sizeof ref, "%s/data/tokenizers/ggml-vocab-%s.gguf", shared, name);
    snprintf(cmd, sizeof cmd, "%s tokenize -m '%s' --vocab-test '%s.inp' > '%s/%s.out'", rm_test_bin(), ref, ref,
             rm_test_tmpdir(), name);
    REQUIRE(system(cmd) == 0);
    char *got, *want, p[700];
    size_t lg, lw;
    snprintf(p, sizeof p, "%s/%s.out", rm_test_tmpdir(), name);
    REQUIRE(rm_read_file(p, &got, &lg) == RM_OK);
    snprintf(p, sizeof p, "%s.out", ref);
    REQUIRE(rm_read_file(p, &want, &lw) == RM_OK);
    CHECKF(lg == lw && !memcmp(got, want, lg), "%s: ramole tokenize --vocab-test differs from the .out file", name);
    free(got);
    free(want);
}

TEST(tokenizer_cli_prompt) {
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared");
    char cmd[1200], p[600];
    snprintf(p, sizeof p, "%s/cli-ids.txt", rm_test_tmpdir());
    snprintf(cmd, sizeof cmd,
             "%s tokenize -m '%s/data/tokenizers/ggml-vocab-llama-spm.gguf' -p 'Hello world' --ids --bos > '%s'",
             rm_test_bin(), shared, p);
    REQUIRE(system(cmd) == 0);
    char *got;
    size_t n;
    REQUIRE(rm_read_file(p, &got, &n) == RM_OK);
    CHECKF(!strcmp(got, "1 15043 3186\n"), "got '%s'", got);
    free(got);
    snprintf(cmd, sizeof cmd, "%s tokenize --help > /dev/null", rm_test_bin());
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s tokenize -m /nonexistent.gguf -p x 2> /dev/null", rm_test_bin());
    CHECK(system(cmd) != 0);
}

TEST(tokenizer_cli_vocab_test) {
    static const char *names[] = {"llama-spm", "gpt-2", "deepseek-coder", "falcon", "bert-bge"};
    for (int i = 0; i < 5; i++) check_cli(names[i]);
}

// ---- tokenizer.json ----

// Writes a Hugging Face tokenizer.json holding the vocabulary of a reference
// GGUF: WordPiece pieces get their "##" back, BPE gets its merges; `extra`
// is the rest of the top-level object (pre_tokenizer, normalizer, ...).
static int write_hf_json(const gguf_file *g, const char *model_type, const char *extra, const char *path) {
    const gguf_value *toks, *types, *merges = NULL;
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) || gguf_get_arr(g, "tokenizer.ggml.token_type", &types))
        return -1;
    int wpm = !strcmp(model_type, "WordPiece");
    if (!wpm && gguf_get_arr(g, "tokenizer.ggml.merges", &merges)) return -1;
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_printf(&sb, "{\"version\":\"1.0\",%s,\"added_tokens\":[", extra);
    int first = 1;
    for (uint64_t i = 0; i < toks->arr.n; i++) {
        int64_t ty = gguf_arr_i64(types, i);
        if (ty != 3 && ty != 4) continue;
        rm_sb_printf(&sb, "%s{\"id\":%llu,\"content\":", first ? "" : ",", (unsigned long long)i);
        rm_sb_json_str(&sb, toks->arr.strs[i].ptr, (size_t)toks->arr.strs[i].len);
        rm_sb_printf(&sb, ",\"special\":%s}", ty == 3 ? "true" : "false");
        first = 0;
    }
    rm_sb_printf(&sb, "],\"model\":{\"type\":\"%s\",\"unk_token\":\"[UNK]\",\"vocab\":{", model_type);
    for (uint64_t i = 0; i < toks->arr.n; i++) {
        const char *s = toks->arr.strs[i].ptr;
        size_t n = (size_t)toks->arr.strs[i].len;
        if (i) rm_sb_putn(&sb, ",", 1);
        if (wpm && gguf_arr_i64(types, i) == 1) { // "▁x" -> "x", "x" -> "##x"
            char tmp[512];
            if (n >= 3 && !memcmp(s, "\xe2\x96\x81", 3)) rm_sb_json_str(&sb, s + 3, n - 3);
            else if (n < 500) {
                memcpy(tmp, "##", 2);
                memcpy(tmp + 2, s, n);
                rm_sb_json_str(&sb, tmp, n + 2);
            }
        } else {
            rm_sb_json_str(&sb, s, n);
        }
        rm_sb_printf(&sb, ":%llu", (unsigned long long)i);
    }
    rm_sb_puts(&sb, "}");
    if (merges) {
        rm_sb_puts(&sb, ",\"merges\":[");
        for (uint64_t i = 0; i < merges->arr.n; i++) {
            if (i) rm_sb_putn(&sb, ",", 1);
            rm_sb_json_str(&sb, merges->arr.strs[i].ptr, (size_t)merges->arr.strs[i].len);
        }
        rm_sb_puts(&sb, "]");
    }
    rm_sb_puts(&sb, "}}");
    int rc = sb.oom ? -1 : rm_write_file_atomic(path, sb.buf, sb.len);
    rm_sb_free(&sb);
    return rc;
}

static void check_hf(const char *name, const char *model_type, const char *extra) {
    vocab_case c;
    OPEN_CASE(c, name);
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/hf-%s", rm_test_tmpdir(), name);
    REQUIRE(rm_mkdirs(dir) == RM_OK);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    REQUIRE(write_hf_json(&c.g, model_type, extra, path) == 0);
    rm_tokenizer *t = NULL;
    CHECK_OK(rm_tokenizer_from_hf(&t, path));
    if (!t) {
        case_free(&c);
        return;
    }
    CHECK(rm_tokenizer_n_vocab(t) == rm_tokenizer_n_vocab(c.tok));
    int exact = 0;
    for (int i = 0; i < c.n; i++) {
        int32_t ids[1024];
        int n = rm_tokenize(t, c.str[i], c.len[i], 0, 0, ids, 1024);
        char got[8192];
        fmt_ids(ids, n < 0 ? 0 : n, got, sizeof got);
        if (n >= 0 && !strcmp(got, c.ref[i])) exact++;
        else
            rm_test_fail(__FILE__, __LINE__, "%s (tokenizer.json): string %d: got '%s' want '%s'", name, i, got,
                         c.ref[i]);
    }
    fprintf(stderr, "    %s via tokenizer.json: %d/%d strings exact\n", name, exact, c.n);
    rm_tokenizer_free(t);
    case_free(&c);
}

TEST(tokenizer_hf_gpt2) {
    check_hf("gpt-2", "BPE",
             "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}");
}

TEST(tokenizer_hf_deepseek_coder) {
    check_hf("deepseek-coder", "BPE",
             "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[\\r\\n]\"},\"behavior\":\"Isolated\"},"
             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s?\\\\p{L}+\"},\"behavior\":\"Isolated\"},"
             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s?\\\\p{P}+\"},\"behavior\":\"Isolated\"},"
             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[一-龥ࠀ-一가-퟿]+\"},\"behavior\":\"Isolated\"},"
             "{\"type\":\"Digits\",\"individual_digits\":true},"
             "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}");
}

TEST(tokenizer_hf_bert) {
    check_hf("bert-bge", "WordPiece",
             "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,"
             "\"strip_accents\":null,\"lowercase\":true},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}");
}

// ---- chat templates ----

TEST(tokenizer_chat_templates) {
    const rm_chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
    static const struct {
        const char *tmpl, *want;
    } cases[] = {
        {"{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n'}}{% endfor %}",
         "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!"
         "<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"},
        {"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}",
         "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
         "Hi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user"
         "<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
        {"{{ bos_token + '[INST] ' + '<<SYS>>\\n' + system_message }}",
         "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]"},
        {"{{ '[INST] ' + message['content'] + ' [/INST]' }}",
         "[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] 2+2? [/INST]"},
        {"{{ '<start_of_turn>' + role + '\\n' }}",
         "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
         "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"},
        {NULL, "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: 2+2?\n\nAssistant:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = rm_chat_render(NULL, cases[i].tmpl, msgs, 4);
        REQUIRE(s);
        CHECKF(!strcmp(s, cases[i].want), "template %zu rendered:\n%s", i, s);
        free(s);
    }
    CHECK(!strcmp(rm_chat_family(NULL, "{{ unknown }}"), "plain"));
    CHECK(rm_chat_render(NULL, NULL, NULL, -1) == NULL);
    // Rendered Llama 2 chat tokenizes with </s> and <s> as single ids.
    vocab_case c;
    OPEN_CASE(c, "llama-spm");
    char *s = rm_chat_render(c.tok, cases[2].tmpl, msgs, 4);
    REQUIRE(s);
    int32_t ids[128];
    int n = rm_tokenize(c.tok, s, strlen(s), 1, 1, ids, 128);
    REQUIRE(n > 0 && n <= 128);
    int eos = 0, bos = 0;
    for (int i = 0; i < n; i++) {
        eos += ids[i] == 2;
        bos += ids[i] == 1;
    }
    CHECK(eos == 1 && bos == 2);
    free(s);
    case_free(&c);
}

// A Llama-2-style tokenizer.json: BPE over "▁"-escaped text, byte fallback.
TEST(tokenizer_hf_byte_fallback) {
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_puts(
        &sb,
        "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},"
        "\"pre_tokenizer\":null,\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
        "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{"
        "\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int b = 0; b < 256; b++) rm_sb_printf(&sb, ",\"<0x%02X>\":%d", b, 3 + b);
    // 259 "▁", 260 "H", 261 "i", 262 "▁H", 263 "▁Hi", 264 "▁i"
    rm_sb_puts(&sb,
               ",\"\xe2\x96\x81\":259,\"H\":260,\"i\":261,\"\xe2\x96\x81H\":262,\"\xe2\x96\x81Hi\":263,"
               "\"\xe2\x96\x81i\":264},\"merges\":[\"\xe2\x96\x81 H\",[\"\xe2\x96\x81H\",\"i\"],\"\xe2\x96\x81 i\"]}}");
    REQUIRE(!sb.oom);
    char path[512];
    snprintf(path, sizeof path, "%s/spm-tokenizer.json", rm_test_tmpdir());
    REQUIRE(rm_write_file_atomic(path, sb.buf, sb.len) == RM_OK);
    rm_sb_free(&sb);
    rm_tokenizer *t = NULL;
    CHECK_OK(rm_tokenizer_from_hf(&t, path));
    REQUIRE(t);
    const char *s = "Hi i\xc3\xa9";
    int32_t ids[16];
    int n = rm_tokenize(t, s, strlen(s), 1, 0, ids, 16);
    // <s> ▁Hi ▁i <0xC3> <0xA9>
    CHECK(n == 5 && ids[0] == 1 && ids[1] == 263 && ids[2] == 264 && ids[3] == 3 + 0xC3 && ids[4] == 3 + 0xA9);
    char out[64];
    CHECK(detok_all(t, ids, n < 0 ? 0 : n, out, sizeof out) == strlen(s) && !memcmp(out, s, strlen(s)));
    // After a special token the prefix space comes again (as SentencePiece does).
    n = rm_tokenize(t, "</s>Hi", 6, 0, 1, ids, 16);
    CHECK(n == 2 && ids[0] == 2 && ids[1] == 263);
    CHECK(rm_tokenizer_bos(t) == 1 && rm_tokenizer_eos(t) == 2 && rm_tokenizer_is_eog(t, 2));
    rm_tokenizer_free(t);
    // Metaspace with prepend_scheme "first": no prefix after a special token.
    char *json;
    size_t len;
    REQUIRE(rm_read_file(path, &json, &len) == RM_OK);
    char *norm = strstr(json, "\"normalizer\"");
    char *model = strstr(json, "\"added_tokens\"");
    REQUIRE(norm && model);
    rm_sb_init(&sb);
    rm_sb_putn(&sb, json, (size_t)(norm - json));
    rm_sb_puts(&sb, "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
                    "\"prepend_scheme\":\"first\",\"split\":false},");
    rm_sb_puts(&sb, model);
    free(json);
    REQUIRE(!sb.oom && rm_write_file_atomic(path, sb.buf, sb.len) == RM_OK);
    rm_sb_free(&sb);
    CHECK_OK(rm_tokenizer_from_hf(&t, path));
    REQUIRE(t);
    n = rm_tokenize(t, "Hi", 2, 0, 1, ids, 16);
    CHECK(n == 1 && ids[0] == 263);
    n = rm_tokenize(t, "</s>Hi", 6, 0, 1, ids, 16);
    CHECK(n == 3 && ids[0] == 2 && ids[1] == 260 && ids[2] == 261);
    rm_tokenizer_free(t);
}

// ---- threads ----

typedef struct par_job {
    vocab_case *c;
    int ok;
} par_job;

static void *par_encode(void *arg) {
    par_job *j = arg;
    j->ok = 1;
    for (int rep = 0; rep < 20; rep++)
        for (int i = 0; i < j->c->n; i++) {
            int32_t ids[1024];
            int n = rm_tokenize(j->c->tok, j->c->str[i], j->c->len[i], 0, 0, ids, 1024);
            char got[8192];
            fmt_ids(ids, n < 0 ? 0 : n, got, sizeof got);
            if (n < 0 || strcmp(got, j->c->ref[i])) j->ok = 0;
        }
    return NULL;
}

// Concurrent rm_tokenize calls on one tokenizer (one holds the word cache,
// the others run without it) all give the reference ids.
TEST(tokenizer_threads) {
    vocab_case c;
    OPEN_CASE(c, "gpt-2");
    pthread_t th[3];
    par_job jobs[3];
    for (int k = 0; k < 3; k++) {
        jobs[k] = (par_job){&c, 0};
        REQUIRE(pthread_create(&th[k], NULL, par_encode, &jobs[k]) == 0);
    }
    for (int k = 0; k < 3; k++) {
        pthread_join(th[k], NULL);
        CHECK(jobs[k].ok);
    }
    case_free(&c);
}

// BPE merges learned from a text worked out by hand: "ab ab ab abc abc" is cut
// by the GPT-2 pre-tokenizer into "ab", " ab" x2, " abc" x2; the pair counts
// make (a, b) first (5), then (space, ab) (4), then (" ab", c) (2); nothing is
// left that occurs twice, so asking for 10 gives 3. A model written with them
// tokenizes with the new tokens and decodes back to the text.
TEST(tok_bpe_learn_merges_by_hand) {
    char path[512];
    snprintf(path, sizeof path, "%s/bpe-bytes.gguf", rm_test_tmpdir());
    rm_synth_shape shape = {"bpe", 258, 16, 1, 2, 2, 32, 64};
    CHECK_OK(rm_synth_write(&shape, RM_TYPE_F32, 1, path, NULL, NULL));
    rm_llama *m = NULL;
    CHECK_OK(rm_llama_load(&m, path));
    REQUIRE(m && m->tok);
    const char *text = "ab ab ab abc abc";
    char **merges = NULL;
    int n = 0;
    CHECK_OK(rm_bpe_learn(m->tok, text, strlen(text), 10, &merges, &n));
    rm_llama_free(m);
    REQUIRE(n == 3);
    CHECK(!strcmp(merges[0], "a b"));
    CHECK(!strcmp(merges[1], "\xc4\xa0 ab")); // U+0120 stands for the space byte
    CHECK(!strcmp(merges[2], "\xc4\xa0"
                             "ab c"));
    shape.n_vocab = 260;
    snprintf(path, sizeof path, "%s/bpe-merged.gguf", rm_test_tmpdir());
    CHECK(rm_synth_write_bpe(&shape, (const char *const *)merges, n, RM_TYPE_F32, 1, path, NULL, NULL) == RM_EINVAL);
    shape.n_vocab = 261;
    CHECK_OK(rm_synth_write_bpe(&shape, (const char *const *)merges, n, RM_TYPE_F32, 1, path, NULL, NULL));
    for (int i = 0; i < n; i++) free(merges[i]);
    free(merges);
    REQUIRE(rm_llama_load(&m, path) == RM_OK);
    int32_t ids[16];
    CHECK(rm_tokenize(m->tok, " abc ab", 7, 0, 0, ids, 16) == 2);
    CHECK(ids[0] == 260 && ids[1] == 259);
    CHECK(rm_tokenize(m->tok, "ab", 2, 0, 0, ids, 16) == 1 && ids[0] == 258);
    CHECK(rm_tokenize(m->tok, "ba", 2, 0, 0, ids, 16) == 2 && ids[0] == 'b' && ids[1] == 'a');
    char buf[16];
    CHECK(rm_token_to_bytes(m->tok, 260, 0, buf, sizeof buf) == 4 && !memcmp(buf, " abc", 4));
    rm_llama_free(m);
}
