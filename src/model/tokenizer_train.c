// tokenizer_train.c — learning byte-level BPE merges from text (rm_bpe_learn).
//
// The text is cut into pieces by the pre-tokenizer of a byte-level BPE
// tokenizer (the one the merges will be used with), the distinct pieces are
// counted, and merges are learned greedily as in Sennrich et al. / GPT-2: at
// each step the most frequent adjacent pair of symbols over all pieces
// (weighted by piece counts) becomes a new symbol. Ties go to the pair with
// the smaller (left, right) ids, so the result is a function of the text.
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

// Pair -> count, open addressing on the packed (left, right) key.
typedef struct pair_count {
    uint64_t key;
    long count;
} pair_count;
typedef struct pair_table {
    pair_count *v;
    size_t mask;
} pair_table;

static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return k ^ (k >> 33);
}

static void pair_inc(pair_table *t, uint64_t key, long by) {
    size_t i = mix(key) & t->mask;
    while (t->v[i].count && t->v[i].key != key) i = (i + 1) & t->mask;
    t->v[i].key = key;
    t->v[i].count += by;
}

int rm_bpe_learn(const rm_tokenizer *t, const char *text, size_t len, int n_merges, char ***merges_out, int *n_out) {
    *merges_out = NULL;
    *n_out = 0;
    if (n_merges < 0 || n_merges > 1 << 20) return rm_errorf(RM_EINVAL, "bpe: %d merges out of range", n_merges);
    int n_pieces = tok_bpe_split(t, text, len, NULL, 0);
    if (n_pieces < 0) return n_pieces;
    size_t *ends = malloc(((size_t)n_pieces + 1) * sizeof *ends);
    if (!ends) return rm_errorf(RM_ENOMEM, "bpe: out of memory");
    int rc = tok_bpe_split(t, text, len, ends, n_pieces);
    if (rc < 0) {
        free(ends);
        return rc;
    }
    // distinct pieces and their counts
    tok_map words;
    long *count = NULL;
    size_t *w_off = NULL, n_words = 0, cap_words = 0;
    int32_t *sym = NULL, *w_len = NULL;
    size_t n_sym = 0, cap_sym = 0, cap_len = 0;
    char **merges = NULL, *sym_text = NULL;
    size_t *sym_off = NULL, *sym_n = NULL, cap_text = 0, n_text = 0;
    pair_table pt = {0};
    if (tok_map_init(&words, 1 << 16)) {
        free(ends);
        return rm_errorf(RM_ENOMEM, "bpe: out of memory");
    }
    rc = RM_OK;
    for (int k = 0, start = 0; k < n_pieces && !rc; start = (int)ends[k++]) {
        size_t n = ends[k] - (size_t)start;
        int32_t id = tok_map_get(&words, text + start, n);
        if (id >= 0) {
            count[id]++;
            continue;
        }
        if (tok_reserve((void **)&count, &cap_words, n_words + 1, sizeof *count) ||
            tok_reserve((void **)&w_off, &cap_len, n_words + 1, sizeof *w_off) ||
            tok_reserve((void **)&sym, &cap_sym, n_sym + n, sizeof *sym) ||
            tok_map_put(&words, text + start, n, (int32_t)n_words)) {
            rc = rm_errorf(RM_ENOMEM, "bpe: out of memory");
            break;
        }
        count[n_words] = 1;
        w_off[n_words++] = n_sym;
        for (size_t i = 0; i < n; i++) sym[n_sym++] = (unsigned char)text[start + i];
    }
    free(ends);
    if (!rc && !(w_len = malloc((n_words + 1) * sizeof *w_len))) rc = rm_errorf(RM_ENOMEM, "bpe: out of memory");
    for (size_t w = 0; !rc && w < n_words; w++)
        w_len[w] = (int32_t)((w + 1 < n_words ? w_off[w + 1] : n_sym) - w_off[w]);
    // every symbol's bytes: 256 single bytes, then one entry per merge
    int n_ids = 256 + n_merges;
    if (!rc &&
        (!(sym_off = malloc((size_t)n_ids * sizeof *sym_off)) || !(sym_n = malloc((size_t)n_ids * sizeof *sym_n)) ||
         !(merges = calloc((size_t)n_merges + 1, sizeof *merges)) ||
         tok_reserve((void **)&sym_text, &cap_text, 256, 1)))
        rc = rm_errorf(RM_ENOMEM, "bpe: out of memory");
    for (int b = 0; !rc && b < 256; b++) sym_text[b] = (char)b, sym_off[b] = (size_t)b, sym_n[b] = 1;
    n_text = 256;
    size_t pcap = 1;
    while (pcap < 4 * n_sym + 64) pcap <<= 1;
    if (!rc && !(pt.v = malloc(pcap * sizeof *pt.v))) rc = rm_errorf(RM_ENOMEM, "bpe: out of memory");
    pt.mask = pcap - 1;
    int done = 0;
    for (; !rc && done < n_merges; done++) {
        memset(pt.v, 0, pcap * sizeof *pt.v);
        for (size_t w = 0; w < n_words; w++) {
            const int32_t *s = sym + w_off[w];
            for (int j = 0; j + 1 < w_len[w]; j++)
                pair_inc(&pt, (uint64_t)(uint32_t)s[j] << 32 | (uint32_t)s[j + 1], count[w]);
        }
        long best = 1;
        uint64_t bk = 0;
        for (size_t i = 0; i < pcap; i++)
            if (pt.v[i].count > best || (pt.v[i].count == best && best > 1 && pt.v[i].key < bk))
                best = pt.v[i].count, bk = pt.v[i].key;
        if (best < 2) break; // nothing left that occurs twice
        int32_t a = (int32_t)(bk >> 32), b = (int32_t)(bk & 0xffffffffu), id = 256 + done;
        // the new symbol's bytes, and the merge in the GGUF form "left right" (GPT-2 byte mapping)
        size_t na = sym_n[a], nb = sym_n[b];
        if (tok_reserve((void **)&sym_text, &cap_text, n_text + na + nb, 1)) {
            rc = rm_errorf(RM_ENOMEM, "bpe: out of memory");
            break;
        }
        memmove(sym_text + n_text, sym_text + sym_off[a], na);
        memmove(sym_text + n_text + na, sym_text + sym_off[b], nb);
        sym_off[id] = n_text;
        sym_n[id] = na + nb;
        n_text += na + nb;
        char *m = malloc(4 * (na + nb) + 2), *o = m;
        if (!m) {
            rc = rm_errorf(RM_ENOMEM, "bpe: out of memory");
            break;
        }
        for (size_t i = 0; i < na + nb; i++) {
            if (i == na) *o++ = ' ';
            o += tok_byte_to_unicode((unsigned char)sym_text[sym_off[id] + i], o);
        }
        *o = 0;
        merges[done] = m;
        // apply it to every piece, left to right
        for (size_t w = 0; w < n_words; w++) {
            int32_t *s = sym + w_off[w];
            int k = 0;
            for (int j = 0; j < w_len[w]; j++) {
                if (j + 1 < w_len[w] && s[j] == a && s[j + 1] == b) s[k++] = id, j++;
                else s[k++] = s[j];
            }
            w_len[w] = k;
        }
    }
    if (rc) {
        for (int i = 0; i < done; i++) free(merges[i]);
        free(merges);
    } else {
        *merges_out = merges;
        *n_out = done;
    }
    tok_map_free(&words);
    free(count);
    free(w_off);
    free(w_len);
    free(sym);
    free(sym_text);
    free(sym_off);
    free(sym_n);
    free(pt.v);
    return rc;
}
