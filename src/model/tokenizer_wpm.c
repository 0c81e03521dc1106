// tokenizer_wpm.c — WordPiece (tokenizer.ggml.model = "bert").
//
// Basic tokenization as Hugging Face's BertNormalizer + BertPreTokenizer do
// it (clean_text, CJK isolation, NFD accent stripping, lower-casing; split on
// whitespace and punctuation), then greedy longest-match-first WordPiece per
// word, [UNK] for a word that cannot be covered or is over 100 characters
// (lower-casing, accent stripping and that limit can be set by tokenizer.json).
//
// GGUF stores the vocabulary the llama.cpp way: word-initial pieces carry a
// U+2581 prefix ("▁hello") and continuation pieces are bare ("hrer" instead
// of "##hrer"). tokenizer.json vocabularies are converted to that at load.
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/err.h"
#include "model/tokenizer_impl.h"

static int is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_control(uint32_t c) {
    if (c == '\t' || c == '\n' || c == '\r') return 0;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
           k == UTF8PROC_CATEGORY_CO;
}

// Unicode White_Space (Rust's char::is_whitespace).
static int is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static int is_punct(uint32_t c) {
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return 1;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

typedef struct wpm_buf {
    char *v;
    size_t n, cap;
    int nchars;
} wpm_buf;

static int buf_put(wpm_buf *b, uint32_t cp) {
    if (tok_reserve((void **)&b->v, &b->cap, b->n + 4, 1)) return RM_ENOMEM;
    b->n += (size_t)tok_utf8_encode(cp, b->v + b->n);
    b->nchars++;
    return RM_OK;
}

// WordPiece of one word (normalized UTF-8) into out.
static int wpm_word(const rm_tokenizer *t, const char *w, size_t n, int nchars, wpm_buf *key, tok_ids *out) {
    if (n == 0) return RM_OK;
    int start_n = out->n;
    if (nchars > t->wpm_max_chars) goto unknown;
    if (tok_reserve((void **)&key->v, &key->cap, n + 4, 1)) return RM_ENOMEM;
    for (size_t start = 0; start < n;) {
        // The prefix marks a word-initial piece.
        size_t pre = start == 0 ? 3 : 0;
        int32_t found = -1;
        size_t end = n;
        while (end > start) {
            if (end - start + pre <= (size_t)t->max_token_len) {
                memcpy(key->v, "\xe2\x96\x81", pre);
                memcpy(key->v + pre, w + start, end - start);
                found = tok_map_get(&t->vocab, key->v, pre + end - start);
                if (found >= 0) break;
            }
            do end--;
            while (end > start && ((unsigned char)w[end] & 0xC0) == 0x80); // previous char boundary
        }
        if (found < 0) {
            out->n = start_n;
            goto unknown;
        }
        tok_ids_push(out, found);
        start = end;
    }
    return RM_OK;
unknown:
    if (t->unk >= 0) tok_ids_push(out, t->unk);
    return RM_OK;
}

// WordPiece of the word collected so far (through the cache), then empties it.
static int flush_word(const rm_tokenizer *t, wpm_buf *word, wpm_buf *key, tok_cache *cache, tok_ids *out) {
    int rc = RM_OK;
    if (word->n > 0 && !tok_cache_get(cache, word->v, word->n, out)) {
        int before = out->n;
        rc = wpm_word(t, word->v, word->n, word->nchars, key, out);
        if (rc == RM_OK) tok_cache_put(cache, word->v, word->n, out, before);
    }
    word->n = 0;
    word->nchars = 0;
    return rc;
}

// Adds normalized character c: to the word, or as a word of its own.
static int add_char(const rm_tokenizer *t, uint32_t c, int alone, wpm_buf *word, wpm_buf *key, tok_cache *cache,
                    tok_ids *out) {
    if (!alone && !is_punct(c)) return buf_put(word, c);
    int rc = flush_word(t, word, key, cache, out);
    if (rc == RM_OK) rc = buf_put(word, c);
    if (rc == RM_OK) rc = flush_word(t, word, key, cache, out);
    return rc;
}

int tok_wpm_encode(const rm_tokenizer *t, const char *s, size_t n, tok_cache *cache, tok_ids *out) {
    wpm_buf word = {0}, key = {0};
    int rc = RM_OK;
    for (size_t i = 0; i < n && rc == RM_OK;) {
        unsigned char a = (unsigned char)s[i];
        if (a < 0x80) { // ASCII: no accents, no CJK, table-free classes
            i++;
            if (a == ' ' || a == '\t' || a == '\n' || a == '\r') rc = flush_word(t, &word, &key, cache, out);
            else if (a >= 0x20 && a != 0x7F) // other C0 controls are dropped
                rc = add_char(t, t->wpm_lowercase && a >= 'A' && a <= 'Z' ? a + 32u : a, 0, &word, &key, cache, out);
            continue;
        }
        int adv;
        uint32_t cp = tok_utf8_decode(s + i, n - i, &adv);
        i += (size_t)adv;
        if (cp == 0xFFFD || is_control(cp)) continue;
        if (is_space(cp)) {
            rc = flush_word(t, &word, &key, cache, out);
            continue;
        }
        utf8proc_int32_t dec[32];
        int last_bound = 0;
        utf8proc_ssize_t nd = 1;
        dec[0] = (utf8proc_int32_t)cp;
        if (t->wpm_strip_accents) {
            nd = utf8proc_decompose_char((utf8proc_int32_t)cp, dec, 32, UTF8PROC_DECOMPOSE, &last_bound);
            if (nd < 0 || nd > 32) {
                dec[0] = (utf8proc_int32_t)cp;
                nd = 1;
            }
        }
        int alone = is_chinese(cp);
        for (utf8proc_ssize_t k = 0; k < nd && rc == RM_OK; k++) {
            if (t->wpm_strip_accents && utf8proc_category(dec[k]) == UTF8PROC_CATEGORY_MN) continue; // accents go
            uint32_t c = (uint32_t)(t->wpm_lowercase ? utf8proc_tolower(dec[k]) : dec[k]);
            rc = add_char(t, c, alone, &word, &key, cache, out);
        }
    }
    if (rc == RM_OK) rc = flush_word(t, &word, &key, cache, out);
    free(word.v);
    free(key.v);
    return rc == RM_OK ? RM_OK : rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
}
