// embed_script.c — the script of a text: which non-ASCII characters it uses.
//
// Every non-ASCII code point (UTF-8 decoded; malformed bytes count as
// themselves) and every pair of neighbouring characters of which one is
// non-ASCII (ASCII letters folded to lower case) is hashed into SCRIPT_DIM
// buckets; the vector is the square root of the counts, unit length, or zero
// when the text is plain ASCII. In a hybrid it tells languages apart by their
// diacritics and alphabets (Czech, Finnish, Turkish, German, Romanian,
// Russian inputs of translation tasks), which the lexical part weighs little
// among many content n-grams. The instruction prefix is skipped. No state.
#include "retrieve/embed_impl.h"
#include "base/err.h"

#include <math.h>
#include <string.h>

enum { SCRIPT_DIM = 1024 };

// The code point at text[*i] (advancing *i); a malformed byte is 0x110000 + byte.
static uint32_t next_cp(const unsigned char *s, size_t len, size_t *i) {
    unsigned char c = s[*i];
    int n = c < 0x80 ? 0 : c >= 0xf0 && c < 0xf8 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : -1;
    if (n < 0 || *i + (size_t)n >= len) {
        (*i)++;
        return n == 0 ? c : 0x110000u + c;
    }
    uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1fu : n == 2 ? c & 0x0fu : c & 0x07u;
    for (int k = 1; k <= n; k++) {
        unsigned char b = s[*i + (size_t)k];
        if ((b & 0xc0) != 0x80) {
            (*i)++;
            return 0x110000u + c;
        }
        cp = cp << 6 | (b & 0x3fu);
    }
    *i += (size_t)n + 1;
    return cp;
}

static uint32_t fold(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp | 0x20u : cp; }

static uint32_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)(x % SCRIPT_DIM);
}

static int script_embed(const rm_embedder *e, const char *text, size_t len, float *out) {
    size_t pl = strlen(e->prefix);
    if (len >= pl && !memcmp(text, e->prefix, pl)) {
        text += pl;
        len -= pl;
    }
    memset(out, 0, (size_t)e->dim * sizeof *out);
    const unsigned char *s = (const unsigned char *)text;
    uint32_t prev = ' ';
    for (size_t i = 0; i < len;) {
        uint32_t cp = fold(next_cp(s, len, &i));
        if (cp >= 0x80) out[mix(cp)] += 1.0f;
        if (cp >= 0x80 || prev >= 0x80) out[mix((uint64_t)prev << 32 | cp | 1ull << 63)] += 1.0f;
        prev = cp;
    }
    for (int d = 0; d < e->dim; d++) out[d] = sqrtf(out[d]);
    return RM_OK;
}

static int script_save(const rm_embedder *e, rm_bytes *b) { return RM_OK; }
static int script_load(rm_embedder *e, rm_reader *r) {
    return e->dim == SCRIPT_DIM ? RM_OK : rm_errorf(RM_EFORMAT, "%s: script embedder of dim %d", r->what, e->dim);
}
static void script_free(rm_embedder *e) {}

const rm_embedder_ops rm_script_ops = {"script", script_embed, script_save, script_load, script_free};

int rm_script_create(const char *prefix, rm_embedder **out) {
    return embed_alloc(&rm_script_ops, "script", SCRIPT_DIM, prefix, out);
}
