// tokenizer_spm.c — SentencePiece BPE (tokenizer.ggml.model = "llama").
//
// Spaces have become U+2581 (tokenizer.c escapes them and cuts the text
// into segments); a segment starts as one symbol per UTF-8 character.
// Repeatedly the adjacent pair whose concatenation is a vocabulary token with
// the highest score is merged (ties: leftmost pair first). Symbols that end
// up not being tokens are emitted byte by byte as <0xNN> tokens.
//
// Because a merge only happens when its result is a token, every merged
// symbol is a token; only single characters can miss the vocabulary.
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "model/tokenizer_impl.h"

typedef struct spm_sym {
    int prev, next;
    uint32_t off, n;
} spm_sym;
static void try_pair(const rm_tokenizer *t, const char *buf, const spm_sym *sym, int left, int right, tok_heap *h) {
    if (left < 0 || right < 0) return;
    uint32_t size = sym[left].n + sym[right].n;
    int32_t id = tok_map_get(&t->vocab, buf + sym[left].off, size);
    if (id < 0) return;
    tok_heap_push(h, (tok_cand){-(double)t->score[id], left, right, (int32_t)size, 0, 0});
}

static void merge_short(const rm_tokenizer *t, const char *buf, spm_sym *sym, int ns);
static void merge_long(const rm_tokenizer *t, const char *buf, spm_sym *sym, int ns, tok_heap *h);

// Merges buf[0..m) and appends its tokens.
static void spm_segment(const rm_tokenizer *t, const char *buf, size_t m, spm_sym *sym, tok_heap *h, tok_ids *out) {
    int ns = 0;
    for (size_t off = 0; off < m;) {
        // One character per symbol; a byte of ill-formed UTF-8 stands alone so
        // that byte fallback gives back exactly the input bytes.
        int l;
        tok_utf8_decode(buf + off, m - off, &l);
        sym[ns] = (spm_sym){ns - 1, -1, (uint32_t)off, (uint32_t)l};
        if (ns > 0) sym[ns - 1].next = ns;
        ns++;
        off += (size_t)l;
    }
    if (ns <= tok_short_words && ns <= TOK_SHORT_MAX) merge_short(t, buf, sym, ns);
    else merge_long(t, buf, sym, ns, h);
    for (int i = 0; i >= 0 && i < ns; i = sym[i].next) {
        const char *txt = buf + sym[i].off;
        int32_t id = tok_map_get(&t->vocab, txt, sym[i].n);
        if (id >= 0) {
            tok_ids_push(out, id);
            continue;
        }
        for (uint32_t k = 0; k < sym[i].n; k++) {
            int32_t b = t->byte_tok[(uint8_t)txt[k]];
            if (b < 0) b = t->unk;
            if (b >= 0) tok_ids_push(out, b);
            else tok_ids_unspellable(out, (uint8_t)txt[k]);
        }
    }
}

// The token that symbol i and the next one make together (-1: none) and its score.
static int32_t pair_token(const rm_tokenizer *t, const char *buf, const spm_sym *sym, int i, float *score) {
    int r = sym[i].next;
    int32_t id = r < 0 ? -1 : tok_map_get(&t->vocab, buf + sym[i].off, sym[i].n + sym[r].n);
    *score = id < 0 ? 0.0f : t->score[id];
    return id;
}

// Short segments: a scan for the best pair (highest score, leftmost on ties)
// beats keeping a heap.
static void merge_short(const rm_tokenizer *t, const char *buf, spm_sym *sym, int ns) {
    int32_t tok[TOK_SHORT_MAX]; // the token of the pair (i, next of i), -1: none
    float score[TOK_SHORT_MAX];
    for (int i = 0; i < ns; i++) tok[i] = pair_token(t, buf, sym, i, &score[i]);
    for (;;) {
        int best = -1;
        for (int i = 0; i >= 0; i = sym[i].next)
            if (tok[i] >= 0 && (best < 0 || score[i] > score[best])) best = i;
        if (best < 0) break;
        spm_sym *l = &sym[best], *r = &sym[l->next];
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = best;
        tok[best] = pair_token(t, buf, sym, best, &score[best]);
        if (l->prev >= 0) tok[l->prev] = pair_token(t, buf, sym, l->prev, &score[l->prev]);
    }
}

// Long segments: candidate pairs in a heap; entries made stale by a merge are skipped.
static void merge_long(const rm_tokenizer *t, const char *buf, spm_sym *sym, int ns, tok_heap *h) {
    h->n = 0;
    for (int i = 1; i < ns; i++) try_pair(t, buf, sym, i - 1, i, h);
    while (h->n > 0) {
        tok_cand p = tok_heap_pop(h);
        spm_sym *l = &sym[p.left];
        if (l->n == 0 || l->next < 0) continue;
        spm_sym *r = &sym[l->next];
        if (r->n == 0 || l->n + r->n != (uint32_t)p.a) continue; // stale: one side changed since
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        try_pair(t, buf, sym, l->prev, p.left, h);
        try_pair(t, buf, sym, p.left, l->next, h);
    }
}

int tok_spm_encode(const rm_tokenizer *t, const char *s, size_t n, tok_ids *out) {
    if (n == 0) return RM_OK;
    if (n > (size_t)INT32_MAX / 2) return rm_errorf(RM_EINVAL, "tokenizer: text too long (%zu bytes)", n);
    spm_sym local[64]; // most segments are a word: no allocation
    spm_sym *sym = n <= 64 ? local : malloc(n * sizeof *sym);
    if (!sym) return rm_errorf(RM_ENOMEM, "tokenizer: out of memory");
    tok_heap h = {0};
    spm_segment(t, s, n, sym, &h, out);
    free(h.v);
    if (sym != local) free(sym);
    return h.oom ? rm_errorf(RM_ENOMEM, "tokenizer: out of memory") : RM_OK;
}
