// tokenizer_bpe.c — byte-level BPE (tokenizer.ggml.model = "gpt2").
//
// 1. Pre-tokenize: the regexes named by tokenizer.ggml.pre split the text,
//    one after the other; each regex splits every piece left by the previous
//    one into its matches and the gaps between them (gaps are kept).
// 2. Every byte of a piece becomes one symbol: the character GPT-2's
//    byte-to-unicode table assigns to it.
// 3. Adjacent symbol pairs are merged in the order of tokenizer.ggml.merges
//    (lowest rank first, leftmost on ties) until no listed pair is left.
// 4. Each symbol is looked up in the vocabulary.
//
// Symbol strings are interned: a symbol is an int (sid), a merge is a hash
// lookup on a pair of sids.
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/tokenizer_impl.h"

// ------------------------------------------------------------------------
// pre-tokenizer regexes (as llama.cpp and the models' tokenizer.json use them)
// ------------------------------------------------------------------------

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
// Llama 3's "(?i:'s|...)" spelled out case by case.
#define RX_CONTRACTIONS_CI "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RX_LLAMA3                                                                                                      \
    RX_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"      \
                       "\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                                                       \
    RX_CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"           \
                       "\\s+(?!\\S)|\\s+"
#define RX_CJK "[一-龥ࠀ-一가-퟿]+"
#define RX_BLOOM " ?[^(\\s|.,!?…。，、।۔،)]+"
// DeepSeek LLM's explicit list of cased-letter ranges.
#define RX_DEEPSEEK_LETTERS                                                                                                                                                                                                                                       \
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-"                                                                              \
    "Ὅὐ-ὗ" /* Greek Extended and letterlike symbols as escapes: some of these code points */ /* (U+1F7D, U+1FBE, U+2126, U+212A, ...) have singleton canonical decompositions */ /* and an editor or copy that normalizes the text would silently change them. */ \
    "\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"                                                                                                                                                               \
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}"                                                                                                                                                             \
    "\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}"                                                                                                                                                     \
    "\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}"                                                                                                                                                               \
    "\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"                                                                                                                                                                                                              \
    "Ⰰ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]"                                                                                           \
    "+"

typedef struct pre_def {
    const char *names;
    const char *rx[6];
} pre_def;

// names: '|'-separated tokenizer.ggml.pre values.
static const pre_def k_pre[] = {
    {"default|", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"gpt-2|gpt2|mpt|olmo|jais|gpt-neox|phi-2|jina-es|jina-de|jina-v2-es|jina-v2-de|jina-v2-code|roberta-bpe|gigachat",
     {RX_GPT2}},
    {"llama-bpe|llama3|llama-v3|dbrx|smaug-bpe|chatglm-bpe|falcon3|bert-bge-large|pixtral", {RX_LLAMA3}},
    {"qwen2|qwen2.5|qwen-2.5|stablelm2|deepseek-r1-qwen|megrez", {RX_QWEN2}},
    {"deepseek-llm", {"[\r\n]", RX_DEEPSEEK_LETTERS, "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", RX_CJK, "\\p{N}+"}},
    {"deepseek-coder", {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RX_CJK, "\\p{N}"}},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"}},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva", {"\\p{N}", RX_GPT2}},
    {"poro-chat|bloom|gpt3-finnish", {RX_BLOOM}},
    {"viking", {RX_BLOOM, "\\p{N}"}},
};

static int name_in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list;;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == n && memcmp(p, name, n) == 0) return 1;
        if (!bar) return 0;
        p = bar + 1;
    }
}

// ------------------------------------------------------------------------
// state
// ------------------------------------------------------------------------

typedef struct pair_slot {
    uint64_t key;
    int32_t rank, merged;
} pair_slot;

struct tok_bpe {
    // interned symbol strings
    tok_map sid_map;
    char **sid_str;
    uint32_t *sid_len;
    int32_t *sid_tok; // token id of each sid, -1 if not in the vocabulary
    int n_sid, cap_sid;
    char *arena; // current chunk
    size_t arena_used, arena_cap;
    char **chunks;
    int n_chunks;
    // merges: (left sid, right sid) -> rank, merged sid
    pair_slot *pairs;
    uint64_t pair_mask;
    size_t n_pairs;
    int32_t byte_sid[256]; // byte-level: sid of the character standing for each byte
    pcre2_code *rx[8];
    char *rx_src[8]; // the pattern of each rx (for writing the tokenizer out)
    int n_rx;
};

#define PAIR_EMPTY UINT64_MAX

static char *arena_copy(tok_bpe *b, const char *a, size_t na, const char *c, size_t nc) {
    size_t need = na + nc + 1;
    if (b->arena_used + need > b->arena_cap) {
        size_t cap = need > 65536 ? need : 65536;
        char **ch = realloc(b->chunks, (size_t)(b->n_chunks + 1) * sizeof *ch);
        if (!ch) return NULL;
        b->chunks = ch;
        char *mem = malloc(cap);
        if (!mem) return NULL;
        b->chunks[b->n_chunks++] = mem;
        b->arena = mem;
        b->arena_used = 0;
        b->arena_cap = cap;
    }
    char *p = b->arena + b->arena_used;
    memcpy(p, a, na);
    if (nc) memcpy(p + na, c, nc);
    p[na + nc] = 0;
    b->arena_used += need;
    return p;
}

// sid of the string a+c, created if new. -1 on out of memory.
static int32_t intern2(tok_bpe *b, const char *a, size_t na, const char *c, size_t nc) {
    char tmp[256];
    char *key = tmp;
    size_t n = na + nc;
    if (n > sizeof tmp && !(key = malloc(n))) return -1;
    memcpy(key, a, na);
    if (nc) memcpy(key + na, c, nc);
    int32_t sid = tok_map_get(&b->sid_map, key, n);
    if (key != tmp) free(key);
    if (sid >= 0) return sid;
    if (b->n_sid == b->cap_sid) {
        int cap = b->cap_sid ? b->cap_sid * 2 : 1024;
        char **s = realloc(b->sid_str, (size_t)cap * sizeof *s);
        if (!s) return -1;
        b->sid_str = s;
        uint32_t *l = realloc(b->sid_len, (size_t)cap * sizeof *l);
        if (!l) return -1;
        b->sid_len = l;
        b->cap_sid = cap;
    }
    char *p = arena_copy(b, a, na, c, nc);
    if (!p) return -1;
    sid = b->n_sid++;
    b->sid_str[sid] = p;
    b->sid_len[sid] = (uint32_t)n;
    if (tok_map_put(&b->sid_map, p, n, sid) != RM_OK) return -1;
    return sid;
}

static uint64_t pair_key(int32_t l, int32_t r) { return ((uint64_t)(uint32_t)l << 32) | (uint32_t)r; }

static uint64_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static const pair_slot *pair_get(const tok_bpe *b, int32_t l, int32_t r) {
    if (!b->pairs) return NULL;
    uint64_t k = pair_key(l, r);
    for (uint64_t j = pair_hash(k) & b->pair_mask;; j = (j + 1) & b->pair_mask) {
        if (b->pairs[j].key == k) return &b->pairs[j];
        if (b->pairs[j].key == PAIR_EMPTY) return NULL;
    }
}

// Adds a merge unless the pair is already listed (the first rank wins).
static void pair_add(tok_bpe *b, int32_t l, int32_t r, int32_t rank, int32_t merged) {
    uint64_t k = pair_key(l, r);
    for (uint64_t j = pair_hash(k) & b->pair_mask;; j = (j + 1) & b->pair_mask) {
        if (b->pairs[j].key == k) return;
        if (b->pairs[j].key == PAIR_EMPTY) {
            b->pairs[j] = (pair_slot){k, rank, merged};
            b->n_pairs++;
            return;
        }
    }
}

void tok_bpe_free(tok_bpe *b) {
    if (!b) return;
    tok_map_free(&b->sid_map);
    free(b->sid_str);
    free(b->sid_len);
    free(b->sid_tok);
    for (int i = 0; i < b->n_chunks; i++) free(b->chunks[i]);
    free(b->chunks);
    free(b->pairs);
    for (int i = 0; i < b->n_rx; i++) {
        pcre2_code_free(b->rx[i]);
        free(b->rx_src[i]);
    }
    free(b);
}

// ------------------------------------------------------------------------
// byte <-> unicode
// ------------------------------------------------------------------------

static int byte_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return b;
    int n = 0; // bytes without a printable character take 256, 257, ... in byte order
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) n++;
    return 256 + n;
}

int tok_byte_to_unicode(int b, char out[4]) { return tok_utf8_encode((uint32_t)byte_cp(b & 255), out); }

static int16_t g_cp_byte[324]; // code point -> byte, -1 for characters outside the mapping
static pthread_once_t g_cp_byte_once = PTHREAD_ONCE_INIT;

static void init_cp_byte(void) {
    for (int i = 0; i < 324; i++) g_cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) g_cp_byte[byte_cp(b)] = (int16_t)b;
}

size_t tok_bpe_decode_text(const char *s, size_t n, char *out) {
    pthread_once(&g_cp_byte_once, init_cp_byte);
    const int16_t *cp_byte = g_cp_byte;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int adv;
        uint32_t cp = tok_utf8_decode(s + i, n - i, &adv);
        if (cp < 324 && cp_byte[cp] >= 0) out[o++] = (char)cp_byte[cp];
        else {
            memcpy(out + o, s + i, (size_t)adv);
            o += (size_t)adv;
        }
        i += (size_t)adv;
    }
    return o;
}

// ------------------------------------------------------------------------
// construction
// ------------------------------------------------------------------------

static int compile_regexes(tok_bpe *b, const char *const *rx, int n) {
    for (int i = 0; i < n && rx[i]; i++) {
        int err;
        PCRE2_SIZE off;
        pcre2_code *c =
            pcre2_compile((PCRE2_SPTR)rx[i], PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &err, &off, NULL);
        if (!c) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            return rm_errorf(RM_EFORMAT, "tokenizer: pre-tokenizer regex %d: %s at offset %zu", i, (char *)msg,
                             (size_t)off);
        }
        pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); // falls back to the interpreter if JIT is unavailable
        if (b->n_rx == (int)(sizeof b->rx / sizeof b->rx[0])) {
            pcre2_code_free(c);
            break;
        }
        char *src = strdup(rx[i]);
        if (!src) {
            pcre2_code_free(c);
            return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
        }
        b->rx_src[b->n_rx] = src;
        b->rx[b->n_rx++] = c;
    }
    return RM_OK;
}

int tok_bpe_init_regex(rm_tokenizer *t, const char *const *merges, const size_t *merge_lens, size_t n_merges,
                       const char *const *regex, int n_regex) {
    tok_bpe *b = calloc(1, sizeof *b);
    if (!b) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    int rc = tok_map_init(&b->sid_map, 2 * n_merges + 512);
    if (rc != RM_OK) {
        free(b);
        return rc;
    }
    t->bpe = b;
    if ((rc = compile_regexes(b, regex, n_regex)) != RM_OK) return rc;
    for (int c = 0; c < 256; c++) {
        char u[4];
        int l = tok_byte_to_unicode(c, u);
        b->byte_sid[c] = t->bpe_byte_level ? intern2(b, u, (size_t)l, NULL, 0) : -1;
        if (t->bpe_byte_level && b->byte_sid[c] < 0) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    }
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n_merges + 16) cap <<= 1;
    b->pairs = malloc(cap * sizeof *b->pairs);
    if (!b->pairs) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory (%zu merges)", n_merges);
    for (uint64_t i = 0; i < cap; i++) b->pairs[i].key = PAIR_EMPTY;
    b->pair_mask = cap - 1;
    for (size_t i = 0; i < n_merges; i++) {
        const char *m = merges[i];
        size_t n = merge_lens[i];
        // "left right": split at the first space after the first byte.
        const char *sp = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
        if (!sp) continue;
        size_t nl = (size_t)(sp - m), nr = n - nl - 1;
        int32_t l = intern2(b, m, nl, NULL, 0), r = intern2(b, sp + 1, nr, NULL, 0);
        int32_t mg = intern2(b, m, nl, sp + 1, nr);
        if (l < 0 || r < 0 || mg < 0) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
        pair_add(b, l, r, (int32_t)i, mg);
    }
    b->sid_tok = malloc((size_t)(b->n_sid ? b->n_sid : 1) * sizeof *b->sid_tok);
    if (!b->sid_tok) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    for (int s = 0; s < b->n_sid; s++) b->sid_tok[s] = tok_map_get(&t->vocab, b->sid_str[s], b->sid_len[s]);
    return RM_OK;
}

int tok_bpe_init(rm_tokenizer *t, const char *const *merges, const size_t *merge_lens, size_t n_merges,
                 const char *pre) {
    const char *name = pre && *pre ? pre : "default";
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++)
        if (name_in_list(k_pre[i].names, name)) {
            int n = 0;
            while (n < 6 && k_pre[i].rx[n]) n++;
            return tok_bpe_init_regex(t, merges, merge_lens, n_merges, k_pre[i].rx, n);
        }
    return rm_errorf(RM_EUNSUPPORTED, "tokenizer: unknown pre-tokenizer '%s' (tokenizer.ggml.pre)", name);
}

int tok_bpe_regexes(const rm_tokenizer *t, const char *const **rx) {
    *rx = t->bpe ? (const char *const *)t->bpe->rx_src : NULL;
    return t->bpe ? t->bpe->n_rx : 0;
}

int tok_bpe_known_pre(const rm_tokenizer *t, char *name, size_t cap) {
    const tok_bpe *b = t->bpe;
    if (!b || cap == 0) return 0;
    for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++) {
        int n = 0;
        while (n < 6 && k_pre[i].rx[n]) n++;
        int same = n == b->n_rx;
        for (int k = 0; k < n && same; k++) same = !strcmp(k_pre[i].rx[k], b->rx_src[k]);
        if (!same) continue;
        const char *bar = strchr(k_pre[i].names, '|');
        size_t l = bar ? (size_t)(bar - k_pre[i].names) : strlen(k_pre[i].names);
        if (l >= cap) return 0;
        memcpy(name, k_pre[i].names, l);
        name[l] = 0;
        return 1;
    }
    return 0;
}

static int cmp_rank(const void *a, const void *b) {
    int32_t x = (*(pair_slot *const *)a)->rank, y = (*(pair_slot *const *)b)->rank;
    return (x > y) - (x < y);
}

int tok_bpe_merges(const rm_tokenizer *t, char ***out, size_t *n_out) {
    *out = NULL;
    *n_out = 0;
    const tok_bpe *b = t->bpe;
    if (!b || !b->n_pairs) return RM_OK;
    const pair_slot **ps = malloc(b->n_pairs * sizeof *ps);
    char **ms = calloc(b->n_pairs, sizeof *ms);
    if (!ps || !ms) {
        free(ps);
        free(ms);
        return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    }
    size_t n = 0;
    for (uint64_t j = 0; j <= b->pair_mask; j++)
        if (b->pairs[j].key != PAIR_EMPTY && n < b->n_pairs) ps[n++] = &b->pairs[j];
    qsort(ps, n, sizeof *ps, cmp_rank);
    for (size_t i = 0; i < n; i++) {
        int32_t l = (int32_t)(ps[i]->key >> 32), r = (int32_t)(uint32_t)ps[i]->key;
        size_t nl = b->sid_len[l], nr = b->sid_len[r];
        if (!(ms[i] = malloc(nl + nr + 2))) {
            for (size_t k = 0; k < i; k++) free(ms[k]);
            free(ms);
            free(ps);
            return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
        }
        memcpy(ms[i], b->sid_str[l], nl);
        ms[i][nl] = ' ';
        memcpy(ms[i] + nl + 1, b->sid_str[r], nr + 1);
    }
    free(ps);
    *out = ms;
    *n_out = n;
    return RM_OK;
}

// ------------------------------------------------------------------------
// pre-tokenization
// ------------------------------------------------------------------------

typedef struct span {
    size_t off, len;
} span;
typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int spans_push(spans *s, size_t off, size_t len) {
    if (len == 0) return RM_OK;
    if (tok_reserve((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v)) return RM_ENOMEM;
    s->v[s->n++] = (span){off, len};
    return RM_OK;
}

// Splits every span of `in` by regex rx into matches and gaps, into `out`.
static int split_by(const pcre2_code *rx, pcre2_match_data *md, const char *text, const spans *in, spans *out) {
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        const char *subj = text + in->v[k].off;
        size_t len = in->v[k].len, pos = 0, gap = 0;
        while (pos < len) {
            int r = pcre2_match(rx, (PCRE2_SPTR)subj, len, pos, 0, md, NULL);
            if (r == PCRE2_ERROR_NOMATCH) break;
            if (r < 0) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(r, msg, sizeof msg);
                return rm_errorf(RM_EUNSUPPORTED, "tokenizer: pre-tokenizer regex failed: %s", (char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { // empty match: step over one character
                pos = ms + (size_t)tok_utf8_len((unsigned char)subj[ms]);
                continue;
            }
            if (spans_push(out, in->v[k].off + gap, ms - gap) || spans_push(out, in->v[k].off + ms, me - ms))
                return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
            gap = pos = me;
        }
        if (spans_push(out, in->v[k].off + gap, len - gap)) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    }
    return RM_OK;
}

// ------------------------------------------------------------------------
// merging one word
// ------------------------------------------------------------------------

typedef struct bpe_sym {
    int32_t sid;
    int prev, next;
    uint32_t start, end;
} bpe_sym;
typedef struct bpe_work {
    bpe_sym *sym;
    size_t cap_sym;
    tok_heap heap;
    char *mapped;
    size_t cap_mapped;
    int oom;
} bpe_work;

static void try_merge(const tok_bpe *b, bpe_work *w, int l, int r) {
    if (l < 0 || r < 0 || w->sym[l].sid < 0 || w->sym[r].sid < 0) return;
    const pair_slot *p = pair_get(b, w->sym[l].sid, w->sym[r].sid);
    if (p) tok_heap_push(&w->heap, (tok_cand){p->rank, l, r, w->sym[l].sid, w->sym[r].sid, p->merged});
}

// Emits the tokens of symbol text that is not itself a token.
static void emit_fallback(const rm_tokenizer *t, const char *s, uint32_t start, uint32_t end, tok_ids *out) {
    const tok_bpe *b = t->bpe;
    for (uint32_t i = start; i < end; i++) {
        uint8_t c = (uint8_t)s[i];
        int32_t id = t->bpe_byte_level ? b->sid_tok[b->byte_sid[c]] : t->byte_tok[c];
        if (id < 0) id = t->unk;
        if (id >= 0) tok_ids_push(out, id);
        else tok_ids_unspellable(out, c);
    }
}

// Rank and merged sid of the pair (i, next of i); INT32_MAX when not a merge.
static void pair_rank(const tok_bpe *b, const bpe_sym *sym, int i, int32_t *rank, int32_t *merged) {
    int r = sym[i].next;
    const pair_slot *p = r >= 0 && sym[i].sid >= 0 && sym[r].sid >= 0 ? pair_get(b, sym[i].sid, sym[r].sid) : NULL;
    *rank = p ? p->rank : INT32_MAX;
    *merged = p ? p->merged : -1;
}

static void merge_short(const tok_bpe *b, bpe_sym *sym, int ns);
static void merge_long(const tok_bpe *b, bpe_work *w, int ns);
static void emit_word(const rm_tokenizer *t, const bpe_sym *sym, int ns, const char *s, tok_ids *out);

static void bpe_word(const rm_tokenizer *t, bpe_work *w, const char *s, size_t n, tok_ids *out) {
    const tok_bpe *b = t->bpe;
    if (tok_reserve((void **)&w->sym, &w->cap_sym, n, sizeof *w->sym)) {
        w->oom = 1;
        return;
    }
    if (t->ignore_merges && t->bpe_byte_level) { // Llama 3: a word that is a token is taken whole
        if (tok_reserve((void **)&w->mapped, &w->cap_mapped, 4 * n, 1)) {
            w->oom = 1;
            return;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += (size_t)tok_byte_to_unicode((uint8_t)s[i], w->mapped + m);
        int32_t id = tok_map_get(&t->vocab, w->mapped, m);
        if (id >= 0) {
            tok_ids_push(out, id);
            return;
        }
    }
    int ns = 0;
    for (size_t i = 0; i < n;) {
        size_t l = 1;
        int32_t sid;
        if (t->bpe_byte_level) {
            sid = b->byte_sid[(uint8_t)s[i]];
        } else {
            int adv;
            tok_utf8_decode(s + i, n - i, &adv);
            l = (size_t)adv;
            sid = tok_map_get(&b->sid_map, s + i, l);
        }
        w->sym[ns] = (bpe_sym){sid, ns - 1, -1, (uint32_t)i, (uint32_t)(i + l)};
        if (ns > 0) w->sym[ns - 1].next = ns;
        ns++;
        i += l;
    }
    if (ns <= tok_short_words && ns <= TOK_SHORT_MAX) merge_short(b, w->sym, ns);
    else merge_long(b, w, ns);
    emit_word(t, w->sym, ns, s, out);
}

// Short words: a scan for the lowest-rank adjacent pair (leftmost on ties)
// beats keeping a heap.
static void merge_short(const tok_bpe *b, bpe_sym *sym, int ns) {
    int32_t rank[TOK_SHORT_MAX], merged[TOK_SHORT_MAX];
    for (int i = 0; i < ns; i++) pair_rank(b, sym, i, &rank[i], &merged[i]);
    for (;;) {
        int best = -1;
        int32_t br = INT32_MAX;
        for (int i = 0; i >= 0; i = sym[i].next)
            if (rank[i] < br) {
                br = rank[i];
                best = i;
            }
        if (best < 0) break;
        bpe_sym *L = &sym[best], *R = &sym[L->next];
        L->sid = merged[best];
        L->end = R->end;
        L->next = R->next;
        if (R->next >= 0) sym[R->next].prev = best;
        R->sid = -2; // dead
        pair_rank(b, sym, best, &rank[best], &merged[best]);
        if (L->prev >= 0) pair_rank(b, sym, L->prev, &rank[L->prev], &merged[L->prev]);
    }
}

// Long words: candidate pairs in a heap; entries made stale by a merge are skipped.
static void merge_long(const tok_bpe *b, bpe_work *w, int ns) {
    w->heap.n = 0;
    for (int i = 1; i < ns; i++) try_merge(b, w, i - 1, i);
    while (w->heap.n > 0) {
        tok_cand c = tok_heap_pop(&w->heap); // a, b: sids of the pair, c: merged sid
        bpe_sym *L = &w->sym[c.left], *R = &w->sym[c.right];
        if (L->sid != c.a || R->sid != c.b || L->next != c.right) continue; // stale
        L->sid = c.c;
        L->end = R->end;
        L->next = R->next;
        if (R->next >= 0) w->sym[R->next].prev = c.left;
        R->sid = -2; // dead
        try_merge(b, w, L->prev, c.left);
        try_merge(b, w, c.left, L->next);
    }
}

// Appends the tokens of the merged symbols of a word.
static void emit_word(const rm_tokenizer *t, const bpe_sym *sym, int ns, const char *s, tok_ids *out) {
    const tok_bpe *b = t->bpe;
    for (int i = 0; i >= 0 && ns > 0; i = sym[i].next) {
        const bpe_sym *y = &sym[i];
        int32_t id = y->sid >= 0 ? b->sid_tok[y->sid] : -1;
        if (id < 0 && y->sid >= 0 && !t->bpe_byte_level)
            id = tok_map_get(&t->vocab, b->sid_str[y->sid], b->sid_len[y->sid]);
        if (id < 0 && y->sid < 0 && !t->bpe_byte_level) id = tok_map_get(&t->vocab, s + y->start, y->end - y->start);
        if (id >= 0) tok_ids_push(out, id);
        else emit_fallback(t, s, y->start, y->end, out);
    }
}

// Runs the pre-tokenizer regexes over s[0..n); the pieces end up in *out
// (caller frees out->v).
static int pretokenize(const tok_bpe *b, const char *s, size_t n, spans *out) {
    spans c = {0};
    *out = (spans){0};
    int rc = spans_push(out, 0, n) ? rm_errorf(RM_ENOMEM, "tokenizer: out of memory") : RM_OK;
    pcre2_match_data *md = b->n_rx ? pcre2_match_data_create(1, NULL) : NULL;
    if (b->n_rx && !md) rc = rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    for (int k = 0; k < b->n_rx && rc == RM_OK; k++) {
        rc = split_by(b->rx[k], md, s, out, &c);
        spans tmp = *out;
        *out = c;
        c = tmp;
    }
    if (md) pcre2_match_data_free(md);
    free(c.v);
    return rc;
}

int tok_bpe_split(const rm_tokenizer *t, const char *s, size_t n, size_t *ends, int cap) {
    if (!t->bpe) return rm_errorf(RM_EINVAL, "tokenizer: not a BPE tokenizer");
    spans a;
    int rc = pretokenize(t->bpe, s, n, &a), count = 0;
    for (size_t k = 0; k < a.n && rc == RM_OK; k++, count++)
        if (count < cap) ends[count] = a.v[k].off + a.v[k].len;
    free(a.v);
    return rc == RM_OK ? count : rc;
}

int tok_bpe_encode_plain(const rm_tokenizer *t, const char *s, size_t n, tok_ids *out) {
    if (!t->bpe) return rm_errorf(RM_EINVAL, "tokenizer: BPE state missing");
    bpe_work w = {0};
    bpe_word(t, &w, s, n, out);
    free(w.sym);
    free(w.heap.v);
    free(w.mapped);
    return w.oom || w.heap.oom ? rm_errorf(RM_ENOMEM, "tokenizer: out of memory") : RM_OK;
}

const char *tok_bpe_gpt2_regex(void) { return RX_GPT2; }

int tok_bpe_encode(const rm_tokenizer *t, const char *s, size_t n, tok_cache *cache, tok_ids *out) {
    const tok_bpe *b = t->bpe;
    if (!b) return rm_errorf(RM_EINVAL, "tokenizer: BPE state missing");
    if (n == 0) return RM_OK;
    spans a;
    int rc = pretokenize(b, s, n, &a);
    bpe_work w = {0};
    for (size_t k = 0; k < a.n && rc == RM_OK && !w.oom && !out->oom; k++) {
        const char *word = s + a.v[k].off;
        size_t len = a.v[k].len;
        if (tok_cache_get(cache, word, len, out)) continue;
        int before = out->n;
        bpe_word(t, &w, word, len, out);
        if (!w.oom) tok_cache_put(cache, word, len, out, before);
    }
    if (rc == RM_OK && (w.oom || w.heap.oom)) rc = rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    free(w.sym);
    free(w.heap.v);
    free(w.mapped);
    free(a.v);
    return rc;
}
