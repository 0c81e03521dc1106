// tokenizer.c — the vocabulary, GGUF loading, special-token splitting,
// encoding dispatch and decoding (see tokenizer_impl.h for the file map).
//
// Behaviour follows llama.cpp's vocabulary code, whose test files are the
// reference here: special tokens are cut out of the text longest first
// (control/unknown tokens only when parse_special, user-defined ones always),
// then every remaining fragment goes through the model's encoder.
#define _GNU_SOURCE
#include "model/tokenizer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/json.h"

// ------------------------------------------------------------------------
// string map
// ------------------------------------------------------------------------

// The first min(n, 8) bytes of s as a zero-padded little-endian word.
static uint64_t key_head(const char *s, size_t n) {
    uint64_t w = 0;
    memcpy(&w, s, n < 8 ? n : 8);
    return w;
}

uint32_t tok_hash(const char *s, size_t n) {
    // Eight bytes at a time, multiply-xorshift mixing; keys are token strings.
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    h = (h ^ key_head(s + i, n - i)) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return (uint32_t)h;
}

int tok_map_init(tok_map *m, size_t expected) {
    memset(m, 0, sizeof *m);
    size_t cap = 16;
    while (cap < expected * 2 + 16) cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    if (!m->slots) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory (map of %zu)", expected);
    m->mask = (uint32_t)(cap - 1);
    return RM_OK;
}

void tok_map_free(tok_map *m) {
    free(m->slots);
    free(m->keyp);
    free(m->keyr);
    memset(m, 0, sizeof *m);
}

static int map_grow(tok_map *m) {
    size_t cap = ((size_t)m->mask + 1) * 2;
    uint64_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return RM_ENOMEM;
    for (size_t i = 0; i <= m->mask; i++) {
        uint64_t sl = m->slots[i];
        if (!sl) continue;
        size_t j = (sl >> 32) & (cap - 1);
        while (slots[j]) j = (j + 1) & (cap - 1);
        slots[j] = sl;
    }
    free(m->slots);
    m->slots = slots;
    m->mask = (uint32_t)(cap - 1);
    return RM_OK;
}

static tok_keyrec key_rec(const char *key, size_t len) {
    tok_keyrec r = {key_head(key, len), 0, (uint32_t)len};
    if (len > 8) memcpy(&r.hi, key + 8, len - 8 < 4 ? len - 8 : 4);
    return r;
}

// Slot index holding key, or of the empty slot where it would go.
static uint32_t map_find(const tok_map *m, const char *key, size_t len, uint32_t h) {
    tok_keyrec q = key_rec(key, len);
    for (uint32_t j = h & m->mask;; j = (j + 1) & m->mask) {
        uint64_t sl = m->slots[j];
        if (!sl) return j;
        if ((uint32_t)(sl >> 32) != h) continue;
        uint32_t v = (uint32_t)sl - 1;
        const tok_keyrec *r = &m->keyr[v];
        if (r->len == q.len && r->lo == q.lo && r->hi == q.hi &&
            (len <= 12 || !memcmp(m->keyp[v] + 12, key + 12, len - 12)))
            return j;
    }
}

int tok_map_put(tok_map *m, const char *key, size_t len, int32_t val) {
    if (val < 0) return RM_EINVAL;
    if ((size_t)val >= m->cap_keys) {
        size_t cap = m->cap_keys ? m->cap_keys : 256;
        while (cap <= (size_t)val) cap *= 2;
        const char **kp = realloc(m->keyp, cap * sizeof *kp);
        if (!kp) return RM_ENOMEM;
        m->keyp = kp;
        tok_keyrec *kr = realloc(m->keyr, cap * sizeof *kr);
        if (!kr) return RM_ENOMEM;
        m->keyr = kr;
        m->cap_keys = cap;
    }
    if ((m->n + 1) * 2 > m->mask + 1 && map_grow(m) != RM_OK) return RM_ENOMEM;
    uint32_t h = tok_hash(key, len), j = map_find(m, key, len, h);
    if (!m->slots[j]) m->n++;
    m->slots[j] = ((uint64_t)h << 32) | (uint32_t)(val + 1);
    m->keyp[val] = key;
    m->keyr[val] = key_rec(key, len);
    return RM_OK;
}

int32_t tok_map_get(const tok_map *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    uint64_t sl = m->slots[map_find(m, key, len, tok_hash(key, len))];
    return sl ? (int32_t)((uint32_t)sl - 1) : -1;
}

int tok_reserve(void **v, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *nv = realloc(*v, c * elem);
    if (!nv) return -1;
    *v = nv;
    *cap = c;
    return 0;
}

void tok_ids_unspellable(tok_ids *o, uint8_t c) {
    if (!o->unspellable) o->unspellable = 1 + c;
}

void tok_ids_push(tok_ids *o, int32_t id) {
    if (o->oom) return;
    if (tok_reserve((void **)&o->v, &o->cap, (size_t)o->n + 1, sizeof *o->v)) {
        o->oom = 1;
        return;
    }
    o->v[o->n++] = id;
}

int tok_short_words = TOK_SHORT_MAX;

static int cand_before(const tok_cand *a, const tok_cand *b) {
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

void tok_heap_push(tok_heap *h, tok_cand c) {
    if (tok_reserve((void **)&h->v, &h->cap, h->n + 1, sizeof *h->v)) {
        h->oom = 1;
        return;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!cand_before(&c, &h->v[up])) break;
        h->v[i] = h->v[up];
        i = up;
    }
    h->v[i] = c;
}

tok_cand tok_heap_pop(tok_heap *h) {
    tok_cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && cand_before(&h->v[c + 1], &h->v[c])) c++;
        if (!cand_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

// ------------------------------------------------------------------------
// UTF-8
// ------------------------------------------------------------------------

int tok_utf8_len(unsigned char c) {
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lens[c >> 4];
}

// Length of the well-formed sequence starting s[0..n), 0 if s is a proper
// prefix of one (more bytes needed), -1 if ill-formed.
static int utf8_check(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xBF; // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return -1;
    }
    return len;
}

uint32_t tok_utf8_decode(const char *s, size_t n, int *adv) {
    const unsigned char *u = (const unsigned char *)s;
    int len = utf8_check(u, n);
    if (len <= 0) {
        *adv = 1;
        return 0xFFFD;
    }
    *adv = len;
    switch (len) {
    case 1: return u[0];
    case 2: return ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3: return ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    default:
        return ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
               (u[3] & 0x3F);
    }
}

int tok_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// ------------------------------------------------------------------------
// construction
// ------------------------------------------------------------------------

int tok_alloc(rm_tokenizer **out, int kind, int n) {
    *out = NULL;
    if (n <= 0) return rm_errorf(RM_EFORMAT, "tokenizer: empty vocabulary");
    rm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_vocab = n;
    t->text = calloc((size_t)n, sizeof *t->text);
    t->len = calloc((size_t)n, sizeof *t->len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->type = calloc((size_t)n, sizeof *t->type);
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->piece_len = calloc((size_t)n, sizeof *t->piece_len);
    t->eog = calloc((size_t)n, 1);
    if (!t->text || !t->len || !t->score || !t->type || !t->piece || !t->piece_len || !t->eog) {
        rm_tokenizer_free(t);
        return rm_errorf(RM_ENOMEM, "tokenizer: out of memory (%d tokens)", n);
    }
    t->bos = t->eos = t->unk = t->sep = t->pad = t->cls = t->eot = t->eom = -1;
    pthread_mutex_init(&t->cache_mu, NULL);
    t->wpm_lowercase = t->wpm_strip_accents = 1;
    t->wpm_max_chars = 100;
    for (int b = 0; b < 256; b++) t->byte_tok[b] = -1;
    *out = t;
    return RM_OK;
}

int tok_set_token(rm_tokenizer *t, int id, const char *s, size_t len, float score, int type) {
    if (id < 0 || id >= t->n_vocab) return rm_errorf(RM_EFORMAT, "tokenizer: token id %d out of range", id);
    char *c = malloc(len + 1);
    if (!c) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    memcpy(c, s, len);
    c[len] = 0;
    free(t->text[id]);
    t->text[id] = c;
    t->len[id] = (uint32_t)len;
    t->score[id] = score;
    t->type[id] = (uint8_t)(type >= TOK_NORMAL && type <= TOK_BYTE ? type : TOK_NORMAL);
    return RM_OK;
}

static int is_special_type(int type) { return type == TOK_CONTROL || type == TOK_USER || type == TOK_UNKNOWN; }

static int cmp_special(const void *a, const void *b, void *ctx) {
    const rm_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

// "<0x41>" -> 0x41, else -1.
static int parse_byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// Replaces every U+2581 (the SentencePiece space marker) by ' '.
static size_t unescape_spaces(const char *s, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            out[o++] = ' ';
            i += 3;
        } else out[o++] = s[i++];
    }
    return o;
}

// The bytes of token id in normal (non-special) rendering.
static int build_piece(rm_tokenizer *t, int id) {
    const char *s = t->text[id];
    size_t n = t->len[id];
    char *p = malloc(n + 4);
    if (!p) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    size_t o;
    int type = t->type[id];
    int b;
    if (type == TOK_BYTE && (b = parse_byte_token(s, n)) >= 0) {
        p[0] = (char)b;
        o = 1;
    } else if (type == TOK_NORMAL || type == TOK_BYTE) {
        if (t->kind == TOK_KIND_BPE && t->bpe_byte_level) o = tok_bpe_decode_text(s, n, p);
        else if (t->kind == TOK_KIND_BPE && (b = parse_byte_token(s, n)) >= 0) {
            p[0] = (char)b;
            o = 1;
        } else o = unescape_spaces(s, n, p);
    } else {
        memcpy(p, s, n); // control / user-defined / unknown / unused: the text itself
        o = n;
    }
    p[o] = 0;
    t->piece[id] = p;
    t->piece_len[id] = (uint32_t)o;
    return RM_OK;
}

static const char *const k_eog_texts[] = {"<|eot_id|>",    "<|im_end|>", "<|end|>",         "<end_of_turn>",
                                          "<|endoftext|>", "<EOT>",      "<|end_of_text|>", "<｜end▁of▁sentence｜>",
                                          "<|eom_id|>",    NULL};

int tok_finish(rm_tokenizer *t) {
    int rc;
    for (int i = 0; i < t->n_vocab; i++)
        if (!t->text[i] && (rc = tok_set_token(t, i, "", 0, 0.0f, TOK_UNUSED)) != RM_OK) return rc;
    if ((rc = tok_map_init(&t->vocab, (size_t)t->n_vocab)) != RM_OK) return rc;
    int n_special = 0;
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->len[i] == 0) continue; // an empty token can never be produced from text
        if ((rc = tok_map_put(&t->vocab, t->text[i], t->len[i], i)) != RM_OK) return rc;
        if ((int)t->len[i] > t->max_token_len) t->max_token_len = (int)t->len[i];
        if (is_special_type(t->type[i])) n_special++;
    }
    t->special = malloc((size_t)(n_special ? n_special : 1) * sizeof *t->special);
    if (!t->special) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    for (int i = 0; i < t->n_vocab; i++)
        if (t->len[i] && is_special_type(t->type[i])) t->special[t->n_special++] = i;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    for (int g = 0; g < 2; g++) { // bucket the positions by first byte (counting sort keeps their order)
        t->spec_pos[g] = malloc((size_t)(n_special ? n_special : 1) * sizeof *t->spec_pos[g]);
        if (!t->spec_pos[g]) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
        uint32_t *st = t->spec_start[g];
        for (int k = 0; k < t->n_special; k++)
            if (g == 0 || t->type[t->special[k]] == TOK_USER) st[(uint8_t)t->text[t->special[k]][0] + 1]++;
        for (int b = 0; b < 256; b++) st[b + 1] += st[b];
        uint32_t fill[256];
        memcpy(fill, st, sizeof fill);
        for (int k = 0; k < t->n_special; k++)
            if (g == 0 || t->type[t->special[k]] == TOK_USER)
                t->spec_pos[g][fill[(uint8_t)t->text[t->special[k]][0]]++] = k;
    }
    if (t->kind == TOK_KIND_SPM || (t->kind == TOK_KIND_BPE && !t->bpe_byte_level)) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_tok[b] = tok_map_get(&t->vocab, name, 6);
        }
    }
    for (int i = 0; i < t->n_vocab; i++)
        if ((rc = build_piece(t, i)) != RM_OK) return rc;
    // SPM text may be cut before every space marker that follows another
    // character when no token spans such a boundary (merges cannot cross it).
    t->spm_split = 1;
    for (int i = 0; i < t->n_vocab && t->spm_split; i++) {
        const char *s = t->text[i];
        for (uint32_t k = 1; k + 3 <= t->len[i]; k++)
            if (!memcmp(s + k, "\xe2\x96\x81", 3) && (k < 3 || memcmp(s + k - 3, "\xe2\x96\x81", 3))) {
                t->spm_split = 0;
                break;
            }
    }
    t->cache = tok_cache_new(); // NULL is fine: no cache
    int32_t ends[3] = {t->eos, t->eot, t->eom};
    for (int k = 0; k < 3; k++)
        if (ends[k] >= 0 && ends[k] < t->n_vocab) t->eog[ends[k]] = 1;
    for (int k = 0; k_eog_texts[k]; k++) {
        int32_t id = tok_map_get(&t->vocab, k_eog_texts[k], strlen(k_eog_texts[k]));
        if (id >= 0 && t->type[id] == TOK_CONTROL) t->eog[id] = 1;
    }
    return RM_OK;
}

void rm_tokenizer_free(rm_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++) {
        if (t->text) free(t->text[i]);
        if (t->piece) free(t->piece[i]);
    }
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->piece);
    free(t->piece_len);
    free(t->eog);
    free(t->special);
    free(t->spec_pos[0]);
    free(t->spec_pos[1]);
    tok_map_free(&t->vocab);
    tok_bpe_free(t->bpe);
    tok_cache_free(t->cache);
    pthread_mutex_destroy(&t->cache_mu);
    free(t->chat_template);
    free(t);
}

// ------------------------------------------------------------------------
// GGUF
// ------------------------------------------------------------------------

static int32_t gguf_token_id(const gguf_file *g, const char *key, int n_vocab, int32_t dflt) {
    uint32_t v;
    if (gguf_get_u32(g, key, &v) != RM_OK) {
        rm_clear_error();
        return dflt;
    }
    return v < (uint32_t)n_vocab ? (int32_t)v : -1;
}

static int gguf_flag(const gguf_file *g, const char *key, int dflt) {
    int v;
    if (gguf_get_bool(g, key, &v) != RM_OK) {
        rm_clear_error();
        return dflt;
    }
    return v != 0;
}

// A fixed-size numeric array of n elements under key, or NULL when absent.
static int gguf_num_array(const gguf_file *g, const char *key, uint64_t n, const gguf_value **out) {
    *out = NULL;
    int rc = gguf_get_arr(g, key, out);
    if (rc == RM_ENOTFOUND) {
        rm_clear_error();
        *out = NULL;
        return RM_OK;
    }
    if (rc != RM_OK) return rc;
    if ((*out)->arr.n != n || (*out)->arr.type == GGUF_TYPE_STRING || (*out)->arr.type == GGUF_TYPE_ARRAY)
        return rm_errorf(RM_EFORMAT, "%s: %s has %llu numeric entries, expected %llu", g->path, key,
                         (unsigned long long)(*out)->arr.n, (unsigned long long)n);
    return RM_OK;
}

static int load_merges(const gguf_file *g, rm_tokenizer *t, const char *pre) {
    const gguf_value *m = NULL;
    int rc = gguf_get_arr(g, "tokenizer.ggml.merges", &m);
    if (rc == RM_ENOTFOUND) {
        rm_clear_error();
        m = NULL;
    } else if (rc != RM_OK) return rc;
    size_t n = 0;
    if (m) {
        if (m->arr.n > 0 && (m->arr.type != GGUF_TYPE_STRING || !m->arr.strs))
            return rm_errorf(RM_EFORMAT, "%s: tokenizer.ggml.merges is not a string array", g->path);
        n = (size_t)m->arr.n;
    }
    const char **ms = malloc((n ? n : 1) * sizeof *ms);
    size_t *ml = malloc((n ? n : 1) * sizeof *ml);
    if (!ms || !ml) {
        free(ms);
        free(ml);
        return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        ms[i] = m->arr.strs[i].ptr;
        ml[i] = (size_t)m->arr.strs[i].len;
    }
    if (!t->bpe_byte_level || gguf_find(g, "ramole.tokenizer.pre_regex")) rc = tok_gguf_bpe_init(t, g, ms, ml, n);
    else rc = tok_bpe_init(t, ms, ml, n, pre);
    free(ms);
    free(ml);
    return rc;
}

int rm_tokenizer_from_gguf(rm_tokenizer **out, const gguf_file *g) {
    *out = NULL;
    gguf_str model;
    if (gguf_get_str(g, "tokenizer.ggml.model", &model) != RM_OK)
        return rm_errorf(RM_ENOTFOUND, "%s: no tokenizer.ggml.model", g->path);
    int kind;
    if (gguf_str_eq(model, "llama")) kind = TOK_KIND_SPM;
    else if (gguf_str_eq(model, "gpt2")) kind = TOK_KIND_BPE;
    else if (gguf_str_eq(model, "bert")) kind = TOK_KIND_WPM;
    else {
        char name[64];
        gguf_str_copy(model, name, sizeof name);
        return rm_errorf(RM_EUNSUPPORTED, "%s: tokenizer model '%s' is not supported (llama, gpt2, bert are)", g->path,
                         name);
    }
    const gguf_value *toks;
    int rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &toks);
    if (rc != RM_OK) return rc == RM_ENOTFOUND ? rm_errorf(rc, "%s: no tokenizer.ggml.tokens", g->path) : rc;
    if (toks->arr.type != GGUF_TYPE_STRING || !toks->arr.strs || toks->arr.n == 0 || toks->arr.n > (1u << 24))
        return rm_errorf(RM_EFORMAT, "%s: tokenizer.ggml.tokens is not a non-empty string array", g->path);
    int n = (int)toks->arr.n;
    const gguf_value *scores, *types;
    if ((rc = gguf_num_array(g, "tokenizer.ggml.scores", toks->arr.n, &scores)) != RM_OK) return rc;
    if ((rc = gguf_num_array(g, "tokenizer.ggml.token_type", toks->arr.n, &types)) != RM_OK) return rc;
    int spm = kind == TOK_KIND_SPM; // the defaults of a "llama" vocabulary apply
    int spm_merges = spm && gguf_flag(g, "ramole.tokenizer.spm_merges", 0);
    if (spm_merges) kind = TOK_KIND_BPE;

    rm_tokenizer *t;
    if ((rc = tok_alloc(&t, kind, n)) != RM_OK) return rc;
    for (int i = 0; i < n && rc == RM_OK; i++) {
        float sc = scores ? (float)gguf_arr_f64(scores, (uint64_t)i) : 0.0f;
        int ty = types ? (int)gguf_arr_i64(types, (uint64_t)i) : TOK_NORMAL;
        rc = tok_set_token(t, i, toks->arr.strs[i].ptr, (size_t)toks->arr.strs[i].len, sc, ty);
    }
    if (rc != RM_OK) goto fail;

    gguf_str pre = {0, NULL};
    if (gguf_get_str(g, "tokenizer.ggml.pre", &pre) != RM_OK) {
        rm_clear_error();
        pre.len = 0;
    }
    gguf_str_copy(pre, t->pre_name, sizeof t->pre_name);

    t->bos = gguf_token_id(g, "tokenizer.ggml.bos_token_id", n, spm && n > 1 ? 1 : -1);
    t->eos = gguf_token_id(g, "tokenizer.ggml.eos_token_id", n, spm && n > 2 ? 2 : -1);
    t->unk = gguf_token_id(g, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : -1);
    t->sep = gguf_token_id(g, "tokenizer.ggml.seperator_token_id", n, -1);
    if (t->sep < 0) t->sep = gguf_token_id(g, "tokenizer.ggml.separator_token_id", n, -1);
    t->pad = gguf_token_id(g, "tokenizer.ggml.padding_token_id", n, -1);
    t->cls = gguf_token_id(g, "tokenizer.ggml.cls_token_id", n, -1);
    t->eot = gguf_token_id(g, "tokenizer.ggml.eot_token_id", n, -1);
    t->eom = gguf_token_id(g, "tokenizer.ggml.eom_token_id", n, -1);
    if (kind == TOK_KIND_WPM) {
        if (t->bos < 0) t->bos = t->cls;
        if (t->eos < 0) t->eos = t->sep;
    }
    int llama3 =
        !strcmp(t->pre_name, "llama-bpe") || !strcmp(t->pre_name, "llama3") || !strcmp(t->pre_name, "llama-v3");
    t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", kind != TOK_KIND_BPE || llama3);
    t->add_eos = gguf_flag(g, "tokenizer.ggml.add_eos_token", kind == TOK_KIND_WPM);
    t->add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", spm);
    t->ignore_merges = llama3;
    tok_gguf_read_options(t, g);
    gguf_str tmpl;
    if (gguf_get_str(g, "tokenizer.chat_template", &tmpl) == RM_OK) {
        t->chat_template = malloc((size_t)tmpl.len + 1);
        if (!t->chat_template) {
            rc = rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        memcpy(t->chat_template, tmpl.ptr, (size_t)tmpl.len);
        t->chat_template[tmpl.len] = 0;
    } else {
        rm_clear_error();
    }

    t->bpe_byte_level = kind == TOK_KIND_BPE && !spm_merges;
    if ((rc = tok_finish(t)) != RM_OK) goto fail;
    if (kind == TOK_KIND_BPE && (rc = load_merges(g, t, t->pre_name)) != RM_OK) goto fail;
    *out = t;
    return RM_OK;
fail:
    rm_error_prefix(rc, "%s", g->path);
    rm_tokenizer_free(t);
    return rc;
}

// ------------------------------------------------------------------------
// accessors
// ------------------------------------------------------------------------

int rm_tokenizer_n_vocab(const rm_tokenizer *t) { return t->n_vocab; }
int32_t rm_tokenizer_bos(const rm_tokenizer *t) { return t->kind == TOK_KIND_WPM ? t->cls : t->bos; }
int32_t rm_tokenizer_eos(const rm_tokenizer *t) { return t->kind == TOK_KIND_WPM ? t->sep : t->eos; }
int rm_tokenizer_add_bos(const rm_tokenizer *t) { return t->add_bos && rm_tokenizer_bos(t) >= 0; }
int rm_tokenizer_is_eog(const rm_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->eog[id]; }
int rm_tokenizer_max_token_len(const rm_tokenizer *t) { return t->max_token_len; }

void rm_tokenizer_set_cache(rm_tokenizer *t, int on) {
    if (on && !t->cache) t->cache = tok_cache_new();
    if (!on) {
        tok_cache_free(t->cache);
        t->cache = NULL;
    }
}

const char *rm_tokenizer_kind(const rm_tokenizer *t) {
    return t->kind == TOK_KIND_SPM ? "spm" : t->kind == TOK_KIND_WPM ? "wordpiece" : "bpe";
}

int32_t rm_tokenizer_find(const rm_tokenizer *t, const char *text) {
    return tok_map_get(&t->vocab, text, strlen(text));
}

// ------------------------------------------------------------------------
// encoding
// ------------------------------------------------------------------------

// A piece of the input: raw text [off, off+len) when id < 0, else a token.
typedef struct frag {
    size_t off, len;
    int32_t id;
} frag;
typedef struct frags {
    frag *v;
    size_t n, cap;
} frags;

static int frags_push(frags *f, frag x) {
    if (tok_reserve((void **)&f->v, &f->cap, f->n + 1, sizeof *f->v)) return RM_ENOMEM;
    f->v[f->n++] = x;
    return RM_OK;
}

// Cuts special tokens out of the raw fragments, one token at a time, longest
// first (so the longer of two overlapping candidates wins). Without
// parse_special only user-defined tokens are cut (as Hugging Face does).
static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int split_specials(const rm_tokenizer *t, const char *text, size_t len, int parse_special, frags *cur) {
    // Candidates: the special tokens whose first byte occurs in the text, in priority order.
    uint8_t present[256] = {0};
    for (size_t i = 0; i < len; i++) present[(uint8_t)text[i]] = 1;
    int g = parse_special ? 0 : 1;
    const uint32_t *st = t->spec_start[g];
    size_t n_cand = 0;
    for (int b = 0; b < 256; b++)
        if (present[b]) n_cand += st[b + 1] - st[b];
    if (n_cand == 0) return RM_OK;
    int32_t *cand = malloc(n_cand * sizeof *cand);
    if (!cand) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    n_cand = 0;
    for (int b = 0; b < 256; b++)
        if (present[b])
            for (uint32_t k = st[b]; k < st[b + 1]; k++) cand[n_cand++] = t->spec_pos[g][k];
    qsort(cand, n_cand, sizeof *cand, cmp_int32);
    frags nxt = {0};
    int rc = RM_OK;
    for (size_t c = 0; c < n_cand && rc == RM_OK; c++) {
        int32_t id = t->special[cand[c]];
        const char *tx = t->text[id];
        size_t tl = t->len[id];
        nxt.n = 0;
        int hit = 0;
        for (size_t f = 0; f < cur->n && rc == RM_OK; f++) {
            frag fr = cur->v[f];
            if (fr.id >= 0 || fr.len < tl) {
                rc = frags_push(&nxt, fr);
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            while (rc == RM_OK) {
                const char *m = memmem(text + pos, end - pos, tx, tl);
                if (!m) break;
                size_t at = (size_t)(m - text);
                hit = 1;
                if (at > pos) rc = frags_push(&nxt, (frag){pos, at - pos, -1});
                if (rc == RM_OK) rc = frags_push(&nxt, (frag){at, tl, id});
                pos = at + tl;
            }
            if (rc == RM_OK && pos < end) rc = frags_push(&nxt, (frag){pos, end - pos, -1});
        }
        if (hit && rc == RM_OK) {
            frags tmp = *cur;
            *cur = nxt;
            nxt = tmp;
        }
    }
    free(nxt.v);
    free(cand);
    return rc ? rm_errorf(RM_ENOMEM, "tokenizer: out of memory") : RM_OK;
}

static int is_marker(const char *s, size_t i, size_t m) { return i + 3 <= m && !memcmp(s + i, "\xe2\x96\x81", 3); }

// SentencePiece-style text (SPM, and BPE with byte fallback from a
// tokenizer.json): spaces become U+2581, with one in front when prefix.
// Segments start where a run of markers starts (when the vocabulary allows
// cutting there, see tok_finish) and are encoded (and cached) one by one.
static int encode_escaped(const rm_tokenizer *t, const char *s, size_t n, int prefix, tok_cache *cache, tok_ids *out) {
    if (n > SIZE_MAX / 4) return rm_errorf(RM_EINVAL, "tokenizer: text too long");
    char *buf = malloc(3 * n + 3);
    if (!buf) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    size_t m = 0;
    if (prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        m = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + m, "\xe2\x96\x81", 3);
            m += 3;
        } else buf[m++] = s[i];
    }
    int rc = RM_OK;
    for (size_t a = 0; a < m && rc == RM_OK && !out->oom;) {
        size_t b = a;
        while (b < m && is_marker(buf, b, m)) b += 3;
        if (t->spm_split) {
            while (b < m && !is_marker(buf, b, m)) b++;
        } else {
            b = m;
        }
        if (!tok_cache_get(cache, buf + a, b - a, out)) {
            int before = out->n;
            rc = t->kind == TOK_KIND_SPM ? tok_spm_encode(t, buf + a, b - a, out)
                                         : tok_bpe_encode_plain(t, buf + a, b - a, out);
            if (rc == RM_OK) tok_cache_put(cache, buf + a, b - a, out, before);
        }
        a = b;
    }
    free(buf);
    return rc;
}

static int encode_fragment(const rm_tokenizer *t, const char *s, size_t n, int prefix_space, tok_cache *cache,
                           tok_ids *out) {
    if (t->kind == TOK_KIND_WPM) return tok_wpm_encode(t, s, n, cache, out);
    if (t->kind == TOK_KIND_BPE && t->bpe_byte_level) return tok_bpe_encode(t, s, n, cache, out);
    return encode_escaped(t, s, n, prefix_space, cache, out);
}

int rm_tokenize(const rm_tokenizer *t, const char *text, size_t len, int add_bos, int parse_special, int32_t *ids,
                int cap) {
    if (!t || (!text && len)) return rm_errorf(RM_EINVAL, "rm_tokenize: NULL argument");
    tok_ids out = {0};
    frags fr = {0};
    int rc = RM_OK;
    int32_t bos = rm_tokenizer_bos(t);
    if (add_bos && bos >= 0) tok_ids_push(&out, bos);
    if (len > 0) {
        rm_tokenizer *mut = (rm_tokenizer *)t; // the cache is the only mutable part
        tok_cache *cache = t->cache && pthread_mutex_trylock(&mut->cache_mu) == 0 ? t->cache : NULL;
        if (frags_push(&fr, (frag){0, len, -1}) != RM_OK) rc = rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
        if (rc == RM_OK) rc = split_specials(t, text, len, parse_special, &fr);
        // SentencePiece adds its dummy prefix at the start and after every special token.
        int prev_special = 1;
        for (size_t i = 0; i < fr.n && rc == RM_OK; i++) {
            if (fr.v[i].id >= 0) {
                tok_ids_push(&out, fr.v[i].id);
                prev_special = 1;
            } else {
                int prefix = t->add_space_prefix && prev_special && (!t->prefix_first_only || fr.v[i].off == 0);
                rc = encode_fragment(t, text + fr.v[i].off, fr.v[i].len, prefix, cache, &out);
                prev_special = 0;
            }
        }
        if (cache) pthread_mutex_unlock(&mut->cache_mu);
    }
    if (rc == RM_OK && add_bos && t->kind == TOK_KIND_WPM && t->sep >= 0) tok_ids_push(&out, t->sep);
    free(fr.v);
    if (rc == RM_OK && out.oom) rc = rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    if (rc == RM_OK && out.unspellable)
        rc = rm_errorf(RM_EINVAL,
                       "tokenizer: the text holds byte 0x%02x, which no token of this vocabulary spells (and "
                       "it has no unknown token)",
                       out.unspellable - 1);
    if (rc != RM_OK) {
        free(out.v);
        return rc;
    }
    int n = out.n;
    if (ids && cap > 0 && n > 0) memcpy(ids, out.v, (size_t)(n < cap ? n : cap) * sizeof *ids);
    free(out.v);
    return n;
}

// ------------------------------------------------------------------------
// decoding
// ------------------------------------------------------------------------

// Normal rendering of id: control/unused tokens vanish, an SPM unknown token
// shows as U+2585 (as llama.cpp prints it).
static const char *piece_of(const rm_tokenizer *t, int32_t id, int render_special, uint32_t *n) {
    int type = t->type[id];
    if (!render_special) {
        if (type == TOK_CONTROL || type == TOK_UNUSED) {
            *n = 0;
            return "";
        }
        if (type == TOK_UNKNOWN) {
            if (t->kind == TOK_KIND_SPM) {
                *n = 3;
                return "\xe2\x96\x85";
            }
            *n = 0;
            return "";
        }
    }
    *n = t->piece_len[id];
    return t->piece[id];
}

int rm_token_to_bytes(const rm_tokenizer *t, int32_t id, int render_special, char *buf, int cap) {
    if (!t || id < 0 || id >= t->n_vocab) return rm_errorf(RM_EINVAL, "token id %d out of range", (int)id);
    uint32_t n;
    const char *p = piece_of(t, id, render_special, &n);
    if (buf && cap > 0) memcpy(buf, p, n < (uint32_t)cap ? n : (size_t)cap);
    return (int)n;
}

void rm_detok_init(rm_detok *d, const rm_tokenizer *t) {
    memset(d, 0, sizeof *d);
    d->t = t;
}

// Appends s[0..n) to out[*o..cap) (silently truncated at cap).
static void put(char *out, int cap, int *o, const char *s, size_t n) {
    for (size_t i = 0; i < n && *o < cap; i++) out[(*o)++] = s[i];
}

int rm_detok_max_bytes(const rm_tokenizer *t) { return 3 * (t->max_token_len + 8) + 8; }

int rm_detok_push(rm_detok *d, int32_t id, char *out, int cap) {
    const rm_tokenizer *t = d->t;
    if (!t || id < 0 || id >= t->n_vocab) return 0;
    uint32_t n;
    const char *p = piece_of(t, id, 0, &n);
    if (n == 0) return 0;
    // The dummy prefix SentencePiece/WordPiece put before the first word.
    if (d->n_emitted == 0 && d->n_pending == 0 && p[0] == ' ' &&
        ((t->kind != TOK_KIND_BPE || !t->bpe_byte_level) && (t->add_space_prefix || t->kind == TOK_KIND_WPM))) {
        p++;
        n--;
        d->n_emitted++; // counts as output: the strip happens once
    }
    int o = 0;
    // Work on pending + p without copying p: walk a virtual buffer.
    char head[8 + 4];
    size_t hp = (size_t)d->n_pending;
    memcpy(head, d->pending, hp);
    size_t total = hp + n, i = 0;
    while (i < total) {
        unsigned char s[4];
        size_t avail = total - i < 4 ? total - i : 4;
        for (size_t k = 0; k < avail; k++) s[k] = (unsigned char)(i + k < hp ? head[i + k] : p[i + k - hp]);
        int l = utf8_check(s, avail);
        if (l > 0) {
            put(out, cap, &o, (const char *)s, (size_t)l);
            i += (size_t)l;
        } else if (l == 0) break; // incomplete: keep for the next token
        else {
            put(out, cap, &o, "\xef\xbf\xbd", 3);
            i += 1;
        }
    }
    d->n_pending = (int)(total - i);
    for (int k = 0; k < d->n_pending; k++) {
        size_t j = i + (size_t)k;
        d->pending[k] = j < hp ? head[j] : p[j - hp];
    }
    d->n_emitted += o;
    return o;
}

int rm_detok_push_sb(rm_detok *d, int32_t id, rm_sb *sb) {
    char small[256];
    int cap = d->t ? rm_detok_max_bytes(d->t) : 16;
    char *buf = cap <= (int)sizeof small ? small : malloc((size_t)cap);
    if (!buf) return -1;
    int n = id < 0 ? rm_detok_flush(d, buf, cap) : rm_detok_push(d, id, buf, cap);
    if (n > cap) n = cap;
    if (n > 0) rm_sb_putn(sb, buf, (size_t)n);
    if (buf != small) free(buf);
    return sb->oom ? -1 : n;
}

int rm_detok_flush(rm_detok *d, char *out, int cap) {
    int o = 0;
    if (d->n_pending > 0) put(out, cap, &o, "\xef\xbf\xbd", 3);
    d->n_pending = 0;
    d->n_emitted += o;
    return o;
}
