// tokenizer_spm.c — SentencePiece BPE (tokenizer.ggml.model = "llama").
//
// Spaces become U+2581; the text starts as one symbol per UTF-8 character.
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

typedef struct spm_sym { int prev, next; uint32_t off, n; } spm_sym;
static void try_pair(const rm_tokenizer *t, const char *buf, const spm_sym *sym, int left, int right, tok_heap *h) {
    if (left < 0 || right < 0) return;
    uint32_t size = sym[left].n + sym[right].n;
    int32_t id = tok_map_get(&t->vocab, buf + sym[left].off, size);
    if (id < 0) return;
    tok_heap_push(h, (tok_cand){-(double)t->score[id], left, right, (int32_t)size, 0, 0});
}

// Merges one segment buf[0..m) and appends its tokens.
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
    for (int i = 0; i >= 0 && i < ns; i = sym[i].next) {
        const char *txt = buf + sym[i].off;
        int32_t id = tok_map_get(&t->vocab, txt, sym[i].n);
        if (id >= 0) { tok_ids_push(out, id); continue; }
        for (uint32_t k = 0; k < sym[i].n; k++) {
            int32_t b = t->byte_tok[(uint8_t)txt[k]];
            if (b < 0) b = t->unk;
            if (b >= 0) tok_ids_push(out, b);
        }
    }
}

static int is_marker(const char *s, size_t i, size_t m) { return i + 3 <= m && !memcmp(s + i, "\xe2\x96\x81", 3); }

int tok_spm_encode(const rm_tokenizer *t, const char *s, size_t n, tok_cache *cache, tok_ids *out) {
    if (n == 0) return RM_OK;
    if (n > (size_t)INT32_MAX / 4) return rm_errorf(RM_EINVAL, "tokenizer: text too long (%zu bytes)", n);
    // Escape spaces as U+2581.
    char *buf = malloc(3 * n);
    spm_sym *sym = malloc(3 * n * sizeof *sym);
    tok_heap h = {0};
    if (!buf || !sym) { free(buf); free(sym); return rm_errorf(RM_ENOMEM, "tokenizer: out of memory"); }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') { memcpy(buf + m, "\xe2\x96\x81", 3); m += 3; }
        else buf[m++] = s[i];
    }
    // Segments start where a run of space markers starts (when the vocabulary
    // allows cutting there, see tok_finish); each is merged on its own.
    for (size_t a = 0; a < m && !h.oom && !out->oom;) {
        size_t b = a;
        while (b < m && is_marker(buf, b, m)) b += 3;
        if (t->spm_split) {
            while (b < m && !is_marker(buf, b, m)) b++;
        } else {
            b = m;
        }
        if (!tok_cache_get(cache, buf + a, b - a, out)) {
            int before = out->n;
            spm_segment(t, buf + a, b - a, sym, &h, out);
            if (!out->oom) tok_cache_put(cache, buf + a, b - a, out->v + before, out->n - before);
        }
        a = b;
    }
    int rc = h.oom ? rm_errorf(RM_ENOMEM, "tokenizer: out of memory") : RM_OK;
    free(h.v);
    free(sym);
    free(buf);
    return rc;
}
