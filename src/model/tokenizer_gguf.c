// tokenizer_gguf.c — a tokenizer written out as GGUF metadata, the way
// llama.cpp's converter writes it, so that a GGUF converted from a Hugging
// Face directory carries its own tokenizer.
//
//   SentencePiece            -> "llama": tokens, scores, token_type
//   byte-level BPE           -> "gpt2": + merges, pre (the llama.cpp name of
//                               the regexes when they are a known set)
//   BPE with byte fallback   -> "llama" with scores from the merge ranks (what
//   (tokenizer.json)            llama.cpp runs), + merges and
//                               ramole.tokenizer.spm_merges (what ramole runs)
//   WordPiece                -> "bert"
// plus the special ids, add_bos/add_eos/add_space_prefix and the chat
// template. What tokenizer.ggml.* has no key for goes in ramole.tokenizer.*
// (listed in tokenizer_impl.h); rm_tokenizer_from_gguf reads both.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "model/tokenizer_impl.h"

#define KEY_SPM_MERGES "ramole.tokenizer.spm_merges"
#define KEY_PRE_REGEX "ramole.tokenizer.pre_regex"
#define KEY_IGNORE_MERGES "ramole.tokenizer.ignore_merges"
#define KEY_PREFIX_FIRST "ramole.tokenizer.prefix_first_only"
#define KEY_WPM_LOWER "ramole.tokenizer.wpm_lowercase"
#define KEY_WPM_ACCENTS "ramole.tokenizer.wpm_strip_accents"
#define KEY_WPM_MAX "ramole.tokenizer.wpm_max_chars"

// ------------------------------------------------------------------------
// reading (called by rm_tokenizer_from_gguf)
// ------------------------------------------------------------------------

static void read_flag(const gguf_file *g, const char *key, int *v) {
    int x;
    if (gguf_get_bool(g, key, &x) == RM_OK) *v = x != 0;
    else rm_clear_error();
}

void tok_gguf_read_options(rm_tokenizer *t, const gguf_file *g) {
    read_flag(g, KEY_IGNORE_MERGES, &t->ignore_merges);
    read_flag(g, KEY_PREFIX_FIRST, &t->prefix_first_only);
    read_flag(g, KEY_WPM_LOWER, &t->wpm_lowercase);
    read_flag(g, KEY_WPM_ACCENTS, &t->wpm_strip_accents);
    uint32_t mc;
    if (gguf_get_u32(g, KEY_WPM_MAX, &mc) == RM_OK && mc > 0 && mc <= (1u << 30)) t->wpm_max_chars = (int)mc;
    else rm_clear_error();
}

int tok_gguf_bpe_init(rm_tokenizer *t, const gguf_file *g, const char *const *merges, const size_t *merge_lens,
                      size_t n_merges) {
    const gguf_value *a = NULL;
    int rc = gguf_get_arr(g, KEY_PRE_REGEX, &a);
    if (rc == RM_ENOTFOUND) {
        rm_clear_error();
        a = NULL;
        rc = RM_OK;
    } else if (rc != RM_OK) {
        return rc;
    }
    char *rx[8] = {0};
    int n = 0;
    if (a && a->arr.n > 0) {
        if (a->arr.type != GGUF_TYPE_STRING || !a->arr.strs || a->arr.n > 8)
            return rm_errorf(RM_EFORMAT, "%s: %s is not an array of at most 8 strings", g->path, KEY_PRE_REGEX);
        for (; n < (int)a->arr.n; n++) {
            gguf_str s = a->arr.strs[n];
            if (!(rx[n] = malloc((size_t)s.len + 1))) {
                rc = rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
                break;
            }
            gguf_str_copy(s, rx[n], (size_t)s.len + 1);
        }
    }
    if (rc == RM_OK) rc = tok_bpe_init_regex(t, merges, merge_lens, n_merges, (const char *const *)rx, n);
    for (int i = 0; i < n; i++) free(rx[i]);
    return rc;
}

// ------------------------------------------------------------------------
// writing
// ------------------------------------------------------------------------

typedef struct tok_writer {
    const rm_tokenizer *t;
    gguf_writer *w;
    int err; // first failing status
    char **merges;
    size_t n_merges;
} tok_writer;

static void chk(tok_writer *tw, int rc) {
    if (rc != RM_OK && tw->err == RM_OK) tw->err = rc;
}

static int set_strs(gguf_writer *w, const char *key, char *const *s, const uint32_t *len, size_t n) {
    gguf_str *v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) v[i] = (gguf_str){len ? len[i] : strlen(s[i]), s[i]};
    gguf_value a = {.type = GGUF_TYPE_ARRAY, .arr = {.type = GGUF_TYPE_STRING, .n = n, .strs = v}};
    int rc = gguf_set_value(w, key, &a);
    free(v);
    return rc;
}

// A special id; `dflt` is what rm_tokenizer_from_gguf assumes when the key is
// absent: a missing token that would default to an id is written as an out
// of range id (read back as none).
static void set_id(tok_writer *tw, const char *key, int32_t id, int32_t dflt) {
    if (id >= 0) chk(tw, gguf_set_u32(tw->w, key, (uint32_t)id));
    else if (dflt >= 0) chk(tw, gguf_set_u32(tw->w, key, UINT32_MAX));
}

// SentencePiece scores for a BPE vocabulary: a token made by merge r scores
// -r (its first merge), so that highest score first is lowest rank first;
// other tokens score below every merge.
static float *merge_scores(const tok_writer *tw) {
    const rm_tokenizer *t = tw->t;
    float *sc = malloc((size_t)t->n_vocab * sizeof *sc);
    if (!sc) return NULL;
    for (int i = 0; i < t->n_vocab; i++) sc[i] = -(float)tw->n_merges - 1.0f;
    for (size_t r = tw->n_merges; r-- > 0;) {
        const char *m = tw->merges[r];
        size_t n = strlen(m);
        const char *sp = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
        if (!sp) continue;
        size_t nl = (size_t)(sp - m);
        char *cat = malloc(n);
        if (!cat) {
            free(sc);
            return NULL;
        }
        memcpy(cat, m, nl);
        memcpy(cat + nl, sp + 1, n - nl - 1);
        int32_t id = tok_map_get(&t->vocab, cat, n - 1);
        free(cat);
        if (id >= 0) sc[id] = -(float)r; // walking down: the lowest rank is set last
    }
    return sc;
}

static void write_pre(tok_writer *tw) {
    const rm_tokenizer *t = tw->t;
    const char *const *rx;
    int n_rx = tok_bpe_regexes(t, &rx);
    if (t->bpe_byte_level && t->pre_name[0]) { // from a GGUF: its name says it all
        chk(tw, gguf_set_str(tw->w, "tokenizer.ggml.pre", t->pre_name));
        return;
    }
    char name[64];
    if (t->bpe_byte_level && tok_bpe_known_pre(t, name, sizeof name))
        chk(tw, gguf_set_str(tw->w, "tokenizer.ggml.pre", name));
    if (t->bpe_byte_level || n_rx > 0) chk(tw, set_strs(tw->w, KEY_PRE_REGEX, (char *const *)rx, NULL, (size_t)n_rx));
}

int rm_tokenizer_write_gguf(const rm_tokenizer *t, gguf_writer *w) {
    if (!t || !w) return rm_errorf(RM_EINVAL, "rm_tokenizer_write_gguf: NULL argument");
    tok_writer tw = {t, w, RM_OK, NULL, 0};
    int bpe = t->kind == TOK_KIND_BPE, spm_merges = bpe && !t->bpe_byte_level;
    int llama = t->kind == TOK_KIND_SPM || spm_merges; // written as model "llama"
    const char *model = llama ? "llama" : t->kind == TOK_KIND_WPM ? "bert" : "gpt2";
    int n = t->n_vocab;
    if (bpe) chk(&tw, tok_bpe_merges(t, &tw.merges, &tw.n_merges));

    chk(&tw, gguf_set_str(w, "tokenizer.ggml.model", model));
    chk(&tw, set_strs(w, "tokenizer.ggml.tokens", t->text, t->len, (size_t)n));
    float *sc = spm_merges && tw.err == RM_OK ? merge_scores(&tw) : NULL;
    if (spm_merges && !sc) chk(&tw, rm_errorf(RM_ENOMEM, "tokenizer: out of memory"));
    chk(&tw, gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, sc ? sc : t->score, (uint64_t)n));
    free(sc);
    int32_t *ty = malloc((size_t)n * sizeof *ty);
    if (ty) {
        for (int i = 0; i < n; i++) ty[i] = t->type[i];
        chk(&tw, gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, ty, (uint64_t)n));
        free(ty);
    } else {
        chk(&tw, rm_errorf(RM_ENOMEM, "tokenizer: out of memory"));
    }
    if (bpe) {
        chk(&tw, set_strs(w, "tokenizer.ggml.merges", tw.merges, NULL, tw.n_merges));
        write_pre(&tw);
        chk(&tw, gguf_set_bool(w, KEY_IGNORE_MERGES, t->ignore_merges));
    }
    if (spm_merges) chk(&tw, gguf_set_bool(w, KEY_SPM_MERGES, 1));
    if (t->prefix_first_only) chk(&tw, gguf_set_bool(w, KEY_PREFIX_FIRST, 1));
    if (t->kind == TOK_KIND_WPM) {
        if (!t->wpm_lowercase) chk(&tw, gguf_set_bool(w, KEY_WPM_LOWER, 0));
        if (!t->wpm_strip_accents) chk(&tw, gguf_set_bool(w, KEY_WPM_ACCENTS, 0));
        if (t->wpm_max_chars != 100) chk(&tw, gguf_set_u32(w, KEY_WPM_MAX, (uint32_t)t->wpm_max_chars));
    }

    set_id(&tw, "tokenizer.ggml.bos_token_id", t->bos, llama && n > 1 ? 1 : -1);
    set_id(&tw, "tokenizer.ggml.eos_token_id", t->eos, llama && n > 2 ? 2 : -1);
    set_id(&tw, "tokenizer.ggml.unknown_token_id", t->unk, llama ? 0 : -1);
    set_id(&tw, "tokenizer.ggml.seperator_token_id", t->sep, -1); // llama.cpp's spelling
    set_id(&tw, "tokenizer.ggml.padding_token_id", t->pad, -1);
    set_id(&tw, "tokenizer.ggml.cls_token_id", t->cls, -1);
    set_id(&tw, "tokenizer.ggml.eot_token_id", t->eot, -1);
    set_id(&tw, "tokenizer.ggml.eom_token_id", t->eom, -1);
    chk(&tw, gguf_set_bool(w, "tokenizer.ggml.add_bos_token", t->add_bos));
    chk(&tw, gguf_set_bool(w, "tokenizer.ggml.add_eos_token", t->add_eos));
    if (llama) chk(&tw, gguf_set_bool(w, "tokenizer.ggml.add_space_prefix", t->add_space_prefix));
    if (t->chat_template) chk(&tw, gguf_set_str(w, "tokenizer.chat_template", t->chat_template));

    for (size_t i = 0; i < tw.n_merges; i++) free(tw.merges[i]);
    free(tw.merges);
    return tw.err == RM_OK ? RM_OK : rm_error_prefix(tw.err, "writing the tokenizer");
}

int rm_tokenizer_hfdir_meta(void *dir, gguf_writer *w) {
    char path[4096];
    int k = snprintf(path, sizeof path, "%s/tokenizer.json", (const char *)dir);
    if (k < 0 || (size_t)k >= sizeof path) return rm_errorf(RM_EINVAL, "%s: path too long", (const char *)dir);
    if (!rm_file_exists(path)) return RM_OK; // no tokenizer: the model works with ids
    rm_tokenizer *t;
    int rc = rm_tokenizer_from_hf(&t, path);
    if (rc != RM_OK) return rc;
    rc = rm_tokenizer_write_gguf(t, w);
    rm_tokenizer_free(t);
    return rc;
}
