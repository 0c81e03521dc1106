// tokenizer_hf.c — tokenizers from a Hugging Face tokenizer.json (and the
// tokenizer_config.json beside it, for BOS/EOS and the chat template).
//
// The three families map onto the GGUF ones:
//   model.type "WordPiece"                    -> WordPiece; "##x" stored as "x",
//                                                word-initial "x" as "▁x" (the GGUF way)
//   model.type "BPE" + a ByteLevel pre-tokenizer -> byte-level BPE; the Split regexes
//                                                of the pre-tokenizer run in order
//   model.type "BPE" otherwise (byte_fallback, Metaspace / Prepend("▁"))
//                                             -> SentencePiece-style BPE over "▁"-escaped
//                                                text, ranks from the merges, <0xNN> fallback
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "model/tokenizer_impl.h"

#define MAX_RX 8

// Does the JSON value contain an object whose "type" is `type` (any depth)?
static int has_type(const rm_json *j, const char *type) {
    if (!j) return 0;
    if (j->type == RM_JSON_OBJECT) {
        const char *ty = rm_json_get_str(j, "type", NULL);
        if (ty && !strcmp(ty, type)) return 1;
    }
    if (j->type == RM_JSON_OBJECT || j->type == RM_JSON_ARRAY)
        for (size_t i = 0; i < j->n; i++)
            if (has_type(&j->items[i], type)) return 1;
    return 0;
}

// Escapes a literal string for PCRE2 (\Q...\E cannot hold "\E" itself).
static char *quote_literal(const char *s) {
    size_t n = strlen(s);
    char *o = malloc(2 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", s[i])) o[k++] = '\\';
        o[k++] = s[i];
    }
    o[k] = 0;
    return o;
}

// Collects the pre-tokenizer regexes in order. Strings in rx[] are owned
// when owned[i].
typedef struct rx_list {
    const char *rx[MAX_RX];
    char *owned[MAX_RX];
    int n;
} rx_list;

static void rx_add(rx_list *l, const char *rx, char *owned) {
    if (l->n < MAX_RX) {
        l->rx[l->n] = rx;
        l->owned[l->n++] = owned;
    } else {
        free(owned);
    }
}

static void collect_regexes(const rm_json *p, rx_list *l) {
    if (!p || p->type != RM_JSON_OBJECT) return;
    const char *ty = rm_json_get_str(p, "type", "");
    if (!strcmp(ty, "Sequence")) {
        const rm_json *seq = rm_json_get(p, "pretokenizers");
        for (size_t i = 0; seq && seq->type == RM_JSON_ARRAY && i < seq->n; i++) collect_regexes(&seq->items[i], l);
    } else if (!strcmp(ty, "Split")) {
        const rm_json *pat = rm_json_get(p, "pattern");
        const char *re = rm_json_get_str(pat, "Regex", NULL);
        const char *lit = rm_json_get_str(pat, "String", NULL);
        if (re) rx_add(l, re, NULL);
        else if (lit && *lit) {
            char *q = quote_literal(lit);
            if (q) rx_add(l, q, q);
        }
    } else if (!strcmp(ty, "ByteLevel")) {
        if (rm_json_get_bool(p, "use_regex", 1)) rx_add(l, tok_bpe_gpt2_regex(), NULL);
    } else if (!strcmp(ty, "Digits")) {
        rx_add(l, rm_json_get_bool(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", NULL);
    }
}

// A special token's text from tokenizer_config.json: "x" or {"content": "x"}.
static const char *config_token(const rm_json *cfg, const char *key) {
    const rm_json *v = rm_json_get(cfg, key);
    if (!v) return NULL;
    if (v->type == RM_JSON_STRING) return v->str;
    return rm_json_get_str(v, "content", NULL);
}

static int32_t find_id(const rm_tokenizer *t, const char *text) {
    return text ? tok_map_get(&t->vocab, text, strlen(text)) : -1;
}

static int32_t first_of(const rm_tokenizer *t, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int32_t id = find_id(t, names[i]);
        if (id >= 0) return id;
    }
    return -1;
}

// The chat template: a string, or a list of {name, template} (take "default").
static int copy_template(rm_tokenizer *t, const rm_json *cfg) {
    const rm_json *ct = rm_json_get(cfg, "chat_template");
    const char *s = NULL;
    if (ct && ct->type == RM_JSON_STRING) s = ct->str;
    else if (ct && ct->type == RM_JSON_ARRAY)
        for (size_t i = 0; i < ct->n; i++) {
            const char *name = rm_json_get_str(&ct->items[i], "name", "");
            if (!s || !strcmp(name, "default")) s = rm_json_get_str(&ct->items[i], "template", s);
        }
    if (!s) return RM_OK;
    t->chat_template = strdup(s);
    return t->chat_template ? RM_OK : rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
}

// Sets every vocabulary entry and added token; returns the status.
static int set_tokens(rm_tokenizer *t, const rm_json *vocab, const rm_json *added, const char *prefix) {
    int rc = RM_OK;
    size_t np = prefix ? strlen(prefix) : 0;
    char tmp[1024];
    for (size_t i = 0; i < vocab->n && rc == RM_OK; i++) {
        const char *k = vocab->keys[i];
        size_t kl = strlen(k);
        int id = (int)vocab->items[i].inum;
        if (t->kind == TOK_KIND_WPM) {
            if (np && kl >= np && !memcmp(k, prefix, np)) { // continuation piece: bare
                rc = tok_set_token(t, id, k + np, kl - np, 0.0f, TOK_NORMAL);
            } else if (kl + 3 < sizeof tmp) { // word-initial piece: "▁" prefix
                memcpy(tmp, "\xe2\x96\x81", 3);
                memcpy(tmp + 3, k, kl);
                rc = tok_set_token(t, id, tmp, kl + 3, 0.0f, TOK_NORMAL);
            }
        } else {
            int byte_tok = !t->bpe_byte_level && kl == 6 && !memcmp(k, "<0x", 3) && k[5] == '>';
            rc = tok_set_token(t, id, k, kl, 0.0f, byte_tok ? TOK_BYTE : TOK_NORMAL);
        }
    }
    for (size_t i = 0; added && added->type == RM_JSON_ARRAY && i < added->n && rc == RM_OK; i++) {
        const rm_json *a = &added->items[i];
        const char *content = rm_json_get_str(a, "content", NULL);
        int64_t id = rm_json_get_int(a, "id", -1);
        if (!content || id < 0 || id >= t->n_vocab) continue;
        int special = rm_json_get_bool(a, "special", 0);
        rc = tok_set_token(t, (int)id, content, strlen(content), 0.0f, special ? TOK_CONTROL : TOK_USER);
    }
    return rc;
}

// Merges as "left right" strings: entries are "a b" or ["a", "b"].
static int merge_strings(const rm_json *merges, char ***out, size_t **lens, size_t *n) {
    *n = merges && merges->type == RM_JSON_ARRAY ? merges->n : 0;
    *out = calloc(*n ? *n : 1, sizeof **out);
    *lens = calloc(*n ? *n : 1, sizeof **lens);
    if (!*out || !*lens) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < *n; i++) {
        const rm_json *m = &merges->items[i];
        if (m->type == RM_JSON_STRING) {
            (*out)[i] = malloc(m->len + 1);
            if (!(*out)[i]) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
            memcpy((*out)[i], m->str, m->len + 1);
            (*lens)[i] = m->len;
        } else if (m->type == RM_JSON_ARRAY && m->n == 2 && m->items[0].type == RM_JSON_STRING &&
                   m->items[1].type == RM_JSON_STRING) {
            size_t a = m->items[0].len, b = m->items[1].len;
            (*out)[i] = malloc(a + b + 2);
            if (!(*out)[i]) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
            memcpy((*out)[i], m->items[0].str, a);
            (*out)[i][a] = ' ';
            memcpy((*out)[i] + a + 1, m->items[1].str, b + 1);
            (*lens)[i] = a + b + 1;
        }
    }
    return RM_OK;
}

static int load_hf(rm_tokenizer **out, const rm_json *j, const rm_json *cfg, const char *path) {
    const rm_json *model = rm_json_get(j, "model");
    const char *type = rm_json_get_str(model, "type", "");
    const rm_json *vocab = rm_json_get(model, "vocab");
    const rm_json *added = rm_json_get(j, "added_tokens");
    int kind;
    if (!strcmp(type, "WordPiece")) kind = TOK_KIND_WPM;
    else if (!strcmp(type, "BPE")) kind = TOK_KIND_BPE;
    else
        return rm_errorf(RM_EUNSUPPORTED, "%s: tokenizer model '%s' is not supported (BPE, WordPiece are)", path, type);
    if (!vocab || vocab->type != RM_JSON_OBJECT || vocab->n == 0)
        return rm_errorf(RM_EFORMAT, "%s: model.vocab is missing or empty", path);
    int64_t n = 0;
    for (size_t i = 0; i < vocab->n; i++) {
        const rm_json *v = &vocab->items[i];
        if (v->type != RM_JSON_NUMBER || !v->is_int || v->inum < 0 || v->inum >= (1 << 24))
            return rm_errorf(RM_EFORMAT, "%s: model.vocab[\"%s\"] is not a token id", path, vocab->keys[i]);
        if (v->inum + 1 > n) n = v->inum + 1;
    }
    size_t n_added = added && added->type == RM_JSON_ARRAY ? added->n : 0;
    for (size_t i = 0; i < n_added; i++) {
        int64_t id = rm_json_get_int(&added->items[i], "id", -1);
        if (id >= (1 << 24)) return rm_errorf(RM_EFORMAT, "%s: added token id %lld too large", path, (long long)id);
        if (id + 1 > n) n = id + 1;
    }
    // Ids are dense in real vocabularies; tables are sized by the largest id,
    // so a few bytes declaring id 16777215 must not buy 16M entries.
    if ((uint64_t)n > 2 * ((uint64_t)vocab->n + n_added) + 1024)
        return rm_errorf(RM_EFORMAT, "%s: token ids reach %lld for only %zu tokens (the ids must be dense)", path,
                         (long long)(n - 1), vocab->n + n_added);
    rm_tokenizer *t;
    int rc = tok_alloc(&t, kind, (int)n);
    if (rc != RM_OK) return rc;
    const rm_json *pre = rm_json_get(j, "pre_tokenizer"), *norm = rm_json_get(j, "normalizer");
    t->bpe_byte_level =
        kind == TOK_KIND_BPE && (has_type(pre, "ByteLevel") || has_type(rm_json_get(j, "decoder"), "ByteLevel"));
    char **ms = NULL;
    size_t *ml = NULL, nm = 0;
    rx_list rx = {0};
    const char *prefix = rm_json_get_str(model, "continuing_subword_prefix", "##");
    if ((rc = set_tokens(t, vocab, added, prefix)) != RM_OK) goto done;

    if (kind == TOK_KIND_WPM) {
        const rm_json *bn = norm && has_type(norm, "BertNormalizer") ? norm : NULL;
        t->wpm_lowercase = rm_json_get_bool(bn, "lowercase", 1);
        const rm_json *sa = rm_json_get(bn, "strip_accents");
        t->wpm_strip_accents = sa && sa->type == RM_JSON_BOOL ? sa->boolean : t->wpm_lowercase;
        t->wpm_max_chars = (int)rm_json_get_int(model, "max_input_chars_per_word", 100);
    } else if (!t->bpe_byte_level) {
        // "▁" in front of the text: Prepend normalizer or Metaspace pre-tokenizer.
        const rm_json *ms_pre = has_type(pre, "Metaspace") ? pre : NULL;
        const char *dflt = rm_json_get_bool(ms_pre, "add_prefix_space", 1) ? "always" : "never";
        const char *scheme = rm_json_get_str(ms_pre, "prepend_scheme", dflt);
        t->add_space_prefix = has_type(norm, "Prepend") || (ms_pre && strcmp(scheme, "never") != 0);
        t->prefix_first_only = ms_pre && !strcmp(scheme, "first"); // Metaspace "first": not after special tokens
    }
    if ((rc = tok_finish(t)) != RM_OK) goto done;
    const char *unk = rm_json_get_str(model, "unk_token", NULL);
    t->unk = find_id(t, unk);
    if (t->unk < 0 && unk && kind == TOK_KIND_WPM) { // stored with the word prefix
        char tmp[256];
        snprintf(tmp, sizeof tmp, "\xe2\x96\x81%s", unk);
        t->unk = find_id(t, tmp);
    }
    if (t->unk >= 0 && t->type[t->unk] == TOK_NORMAL) t->type[t->unk] = TOK_UNKNOWN;

    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", "[CLS]", NULL};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<eos>", "[SEP]",
                                            NULL};
    t->bos = cfg ? find_id(t, config_token(cfg, "bos_token")) : -1;
    t->eos = cfg ? find_id(t, config_token(cfg, "eos_token")) : -1;
    if (t->bos < 0 && !(cfg && rm_json_get(cfg, "bos_token"))) t->bos = first_of(t, bos_names);
    if (t->eos < 0) t->eos = first_of(t, eos_names);
    if (kind == TOK_KIND_WPM) {
        t->cls = find_id(t, cfg ? config_token(cfg, "cls_token") : NULL);
        t->sep = find_id(t, cfg ? config_token(cfg, "sep_token") : NULL);
        if (t->cls < 0) t->cls = find_id(t, "[CLS]");
        if (t->sep < 0) t->sep = find_id(t, "[SEP]");
        t->pad = find_id(t, "[PAD]");
    }
    t->add_bos = rm_json_get_bool(cfg, "add_bos_token", kind == TOK_KIND_WPM || !t->bpe_byte_level);
    t->add_eos = rm_json_get_bool(cfg, "add_eos_token", kind == TOK_KIND_WPM);
    t->ignore_merges = rm_json_get_bool(model, "ignore_merges", 0);
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if ((rc = copy_template(t, cfg)) != RM_OK) goto done;

    if (kind == TOK_KIND_BPE) {
        if ((rc = merge_strings(rm_json_get(model, "merges"), &ms, &ml, &nm)) != RM_OK) goto done;
        if (t->bpe_byte_level) collect_regexes(pre, &rx);
        rc = tok_bpe_init_regex(t, (const char *const *)ms, ml, nm, rx.rx, rx.n);
    }
done:
    for (size_t i = 0; ms && i < nm; i++) free(ms[i]);
    free(ms);
    free(ml);
    for (int i = 0; i < rx.n; i++) free(rx.owned[i]);
    if (rc != RM_OK) {
        rm_tokenizer_free(t);
        return rm_error_prefix(rc, "%s", path);
    }
    *out = t;
    return RM_OK;
}

int rm_tokenizer_from_hf(rm_tokenizer **out, const char *tokenizer_json_path) {
    *out = NULL;
    rm_json *j = NULL, *cfg = NULL;
    int rc = rm_json_parse_file(tokenizer_json_path, &j);
    if (rc != RM_OK) return rc;
    // tokenizer_config.json in the same directory, if any.
    size_t n = strlen(tokenizer_json_path);
    char *cpath = malloc(n + 32);
    if (cpath) {
        memcpy(cpath, tokenizer_json_path, n + 1);
        char *slash = strrchr(cpath, '/');
        strcpy(slash ? slash + 1 : cpath, "tokenizer_config.json");
        if (rm_file_exists(cpath) && rm_json_parse_file(cpath, &cfg) != RM_OK) {
            rm_clear_error();
            cfg = NULL;
        }
        free(cpath);
    }
    rc = load_hf(out, j, cfg, tokenizer_json_path);
    rm_json_free(j);
    rm_json_free(cfg);
    return rc;
}
