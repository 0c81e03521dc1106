// feat.c — see feat.h.
#include "retrieve/feat.h"
#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rm_feat_params rm_feat_default_params(void) {
    return (rm_feat_params){.bits = 18,
                            .wmin = 1,
                            .wmax = 2,
                            .cmin = 3,
                            .cmax = 5,
                            .word_weight = 1.0f,
                            .lowercase = 1,
                            .edge = 0,
                            .mid_weight = 1.0f,
                            .rare_df = 0,
                            .rare_weight = 1.0f};
}

rm_feat_params rm_feat_lexical_params(void) {
    rm_feat_params p = rm_feat_default_params();
    p.bits = 16;
    p.cmin = 2;
    p.lowercase = 0;
    p.edge = 200;
    p.mid_weight = 0.3f;
    return p;
}

int rm_feat_check(const rm_feat_params *p) {
    if (p->bits < 8 || p->bits > 24) return rm_errorf(RM_EINVAL, "features: bits %d not in 8..24", p->bits);
    if (p->wmax < 0 || p->wmax > 4 || (p->wmax > 0 && (p->wmin < 1 || p->wmin > p->wmax)))
        return rm_errorf(RM_EINVAL, "features: word n-grams %d..%d not within 1..4", p->wmin, p->wmax);
    if (p->cmax < 0 || p->cmax > 8 || (p->cmax > 0 && (p->cmin < 1 || p->cmin > p->cmax)))
        return rm_errorf(RM_EINVAL, "features: char n-grams %d..%d not within 1..8", p->cmin, p->cmax);
    if (p->wmax == 0 && p->cmax == 0) return rm_errorf(RM_EINVAL, "features: neither word nor char n-grams");
    if (!(p->word_weight > 0) || p->word_weight > 100) return rm_errorf(RM_EINVAL, "features: bad word weight");
    if (p->edge < 0 || !(p->mid_weight > 0) || p->mid_weight > 1)
        return rm_errorf(RM_EINVAL, "features: bad edge %d / mid weight", p->edge);
    if (p->rare_df < 0 || !(p->rare_weight >= 0) || p->rare_weight > 1)
        return rm_errorf(RM_EINVAL, "features: bad rare df %d / weight", p->rare_df);
    return RM_OK;
}

void rm_sparse_free(rm_sparse *s) {
    free(s->idx);
    free(s->val);
    memset(s, 0, sizeof *s);
}

// ---------------------------------------------------------------------------
// Hashing: FNV-1a over the bytes, then a 64-bit finaliser so that low bits
// (the bucket) depend on every input byte.

static uint64_t hash_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

static uint32_t hash_final(uint64_t h, int bits) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)(h & ((1ull << bits) - 1));
}

static uint64_t salt(char kind, int n) {
    return (0xcbf29ce484222325ull ^ ((uint64_t)kind << 8 | (uint64_t)n)) * 0x100000001b3ull;
}

// A growable list of hashed buckets (with one weight per kind).
typedef struct {
    uint32_t *b;
    float *w;
    size_t n, cap;
} bucket_list;

static int bl_push(bucket_list *l, uint32_t b, float w) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        uint32_t *nb = realloc(l->b, cap * sizeof *nb);
        if (!nb) return RM_ENOMEM;
        l->b = nb;
        float *nw = realloc(l->w, cap * sizeof *nw);
        if (!nw) return RM_ENOMEM;
        l->w = nw;
        l->cap = cap;
    }
    l->b[l->n] = b;
    l->w[l->n] = w;
    l->n++;
    return RM_OK;
}

static int is_word_byte(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
static int is_space_byte(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// The normalised text: case folded, whitespace runs collapsed to one space,
// one space of padding at both ends.
static char *normalise(const rm_feat_params *p, const char *text, size_t len, size_t *out_len) {
    char *s = malloc(len + 3);
    if (!s) return NULL;
    size_t n = 0;
    s[n++] = ' ';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (is_space_byte(c)) {
            if (s[n - 1] != ' ') s[n++] = ' ';
            continue;
        }
        if (p->lowercase && c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        s[n++] = (char)c;
    }
    if (s[n - 1] != ' ') s[n++] = ' ';
    s[n] = 0;
    *out_len = n;
    return s;
}

// Weight of an n-gram starting at byte i of an n-byte text.
static float pos_weight(const rm_feat_params *p, size_t i, size_t n) {
    if (p->edge <= 0 || i < (size_t)p->edge || i + (size_t)p->edge >= n) return 1.0f;
    return p->mid_weight;
}

// Words are runs of word bytes; every other non-space byte is a word of its own.
static int word_features(const rm_feat_params *p, const char *s, size_t n, bucket_list *l) {
    enum { MAXW = 4 };
    size_t start[MAXW], wlen[MAXW]; // ring of the last words
    long nw = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') {
            i++;
            continue;
        }
        size_t j = i + 1;
        if (is_word_byte(c))
            while (j < n && is_word_byte((unsigned char)s[j])) j++;
        start[nw % MAXW] = i;
        wlen[nw % MAXW] = j - i;
        nw++;
        for (int g = p->wmin; g <= p->wmax && g <= nw; g++) {
            uint64_t h = salt('w', g);
            for (int k = g; k >= 1; k--) {
                long w = (nw - k) % MAXW;
                h = hash_bytes(h, s + start[w], wlen[w]);
                h = hash_bytes(h, "\x1f", 1);
            }
            float w = p->word_weight * pos_weight(p, start[(nw - g) % MAXW], n);
            if (bl_push(l, hash_final(h, p->bits), w)) return RM_ENOMEM;
        }
        i = j;
    }
    return RM_OK;
}

static int char_features(const rm_feat_params *p, const char *s, size_t n, bucket_list *l) {
    for (int g = p->cmin; g <= p->cmax; g++) {
        uint64_t h0 = salt('c', g);
        for (size_t i = 0; i + (size_t)g <= n; i++)
            if (bl_push(l, hash_final(hash_bytes(h0, s + i, (size_t)g), p->bits), pos_weight(p, i, n)))
                return RM_ENOMEM;
    }
    return RM_OK;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// Sorts the bucket list and sums the weights of equal buckets into out.
static int collapse(bucket_list *l, rm_sparse *out) {
    // Sort (bucket, position) pairs packed in 64 bits; weights follow by position.
    uint64_t *key = malloc((l->n ? l->n : 1) * sizeof *key);
    if (!key) return RM_ENOMEM;
    for (size_t i = 0; i < l->n; i++) key[i] = (uint64_t)l->b[i] << 32 | (uint64_t)i;
    qsort(key, l->n, sizeof *key, cmp_u64);
    if (out->cap < l->n) {
        size_t cap = l->n;
        uint32_t *ni = realloc(out->idx, cap * sizeof *ni);
        if (ni) out->idx = ni;
        float *nv = ni ? realloc(out->val, cap * sizeof *nv) : NULL;
        if (nv) out->val = nv;
        if (!ni || !nv) {
            free(key);
            return RM_ENOMEM;
        }
        out->cap = cap;
    }
    size_t m = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint32_t b = (uint32_t)(key[i] >> 32);
        float w = l->w[key[i] & 0xffffffffu];
        if (m > 0 && out->idx[m - 1] == b) out->val[m - 1] += w;
        else {
            out->idx[m] = b;
            out->val[m] = w;
            m++;
        }
    }
    out->n = m;
    free(key);
    return RM_OK;
}

int rm_feat_extract(const rm_feat_params *p, const char *text, size_t len, rm_sparse *out) {
    int rc = rm_feat_check(p);
    if (rc) return rc;
    size_t n;
    char *s = normalise(p, text, len, &n);
    if (!s) return rm_errorf(RM_ENOMEM, "features: out of memory");
    bucket_list l = {0};
    rc = RM_OK;
    if (p->wmax > 0) rc = word_features(p, s, n, &l);
    if (!rc && p->cmax > 0) rc = char_features(p, s, n, &l);
    if (!rc) rc = collapse(&l, out);
    free(s);
    free(l.b);
    free(l.w);
    if (rc) return rm_errorf(RM_ENOMEM, "features: out of memory");
    return RM_OK;
}

void rm_sparse_weight(rm_sparse *s, const float *idf) {
    size_t m = 0;
    double ss = 0;
    for (size_t i = 0; i < s->n; i++) {
        float v = 1.0f + logf(s->val[i] > 1e-6f ? s->val[i] : 1e-6f);
        if (s->val[i] < 1.0f) v = s->val[i]; // fractional weights (word_weight < 1) stay linear
        if (idf) v *= idf[s->idx[i]];
        if (v == 0.0f) continue;
        s->idx[m] = s->idx[i];
        s->val[m] = v;
        ss += (double)v * v;
        m++;
    }
    s->n = m;
    float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (size_t i = 0; i < m; i++) s->val[i] *= inv;
}
