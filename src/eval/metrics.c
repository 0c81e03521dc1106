// metrics.c — EM, ROUGE and corpus BLEU (see metrics.h for the definitions).
//
// N-grams are compared by a 64-bit hash of their tokens: each text's n-gram
// hashes are sorted and the clipped matches counted by merging the two lists
// (sum over distinct n-grams of min(count in pred, count in target)).
#include "eval/metrics.h"
#include "base/err.h"
#include "base/grow.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int rm_metric_parse(const char *s, rm_metric *out) {
    if (!s) return -1;
    if (!strcmp(s, "em") || !strcmp(s, "exact_match")) *out = RM_METRIC_EM;
    else if (!strcmp(s, "rouge") || !strcmp(s, "rougeL") || !strcmp(s, "rouge-l")) *out = RM_METRIC_ROUGE;
    else if (!strcmp(s, "bleu")) *out = RM_METRIC_BLEU;
    else return -1;
    return 0;
}

const char *rm_metric_name(rm_metric m) {
    static const char *const names[RM_METRIC_COUNT] = {"em", "rouge", "bleu"};
    return m >= 0 && m < RM_METRIC_COUNT ? names[m] : "?";
}

// ---- tokens --------------------------------------------------------------------

typedef struct {
    const char *s;
    int len;
} tok;
typedef struct {
    tok *t;
    int n, cap;
    char *buf;
} toks;

static void toks_free(toks *t) {
    free(t->t);
    free(t->buf);
    memset(t, 0, sizeof *t);
}

static int toks_push(toks *t, const char *s, int len) {
    if (RM_GROW(t->t, t->n, t->cap, 32)) return rm_error_prefix(RM_ENOMEM, "metrics");
    t->t[t->n++] = (tok){s, len};
    return RM_OK;
}

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
static int is_punct(unsigned char c) {
    return c > 32 && c < 127 && !(c >= '0' && c <= '9') && !((c | 32) >= 'a' && (c | 32) <= 'z');
}
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_word(unsigned char c) { return c >= 0x80 || is_digit(c) || ((c | 32) >= 'a' && (c | 32) <= 'z'); }
static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 32) : c; }

// A lower-cased copy of text in t->buf (tokens point into it).
static int toks_copy(toks *t, const char *text, int lowercase) {
    memset(t, 0, sizeof *t);
    size_t n = strlen(text);
    if (n > (1u << 30)) return rm_errorf(RM_EINVAL, "metrics: text of %zu bytes", n);
    if (!(t->buf = malloc(n + 1))) return rm_errorf(RM_ENOMEM, "metrics: out of memory");
    for (size_t i = 0; i <= n; i++) t->buf[i] = lowercase ? (char)lower((unsigned char)text[i]) : text[i];
    return RM_OK;
}

// ROUGE: lower-cased runs of word bytes.
static int rouge_tokens(const char *text, toks *t) {
    int rc = toks_copy(t, text, 1);
    for (const char *p = t->buf; !rc && *p;) {
        if (!is_word((unsigned char)*p)) {
            p++;
            continue;
        }
        const char *s = p;
        while (*p && is_word((unsigned char)*p)) p++;
        rc = toks_push(t, s, (int)(p - s));
    }
    if (rc) toks_free(t);
    return rc;
}

// BLEU: white space splits; ASCII punctuation stands alone, except . and ,
// between digits. Case kept.
static int bleu_tokens(const char *text, toks *t) {
    int rc = toks_copy(t, text, 0);
    const char *b = t->buf;
    for (const char *p = b; !rc && *p;) {
        unsigned char c = (unsigned char)*p;
        if (is_space(c)) {
            p++;
            continue;
        }
        int numeric_sep =
            (c == '.' || c == ',') && p > b && is_digit((unsigned char)p[-1]) && is_digit((unsigned char)p[1]);
        if (is_punct(c) && !numeric_sep) {
            rc = toks_push(t, p, 1);
            p++;
            continue;
        }
        const char *s = p;
        while (*p && !is_space((unsigned char)*p)) {
            unsigned char d = (unsigned char)*p;
            int sep =
                (d == '.' || d == ',') && p > b && is_digit((unsigned char)p[-1]) && is_digit((unsigned char)p[1]);
            if (p > s && is_punct(d) && !sep) break;
            p++;
        }
        rc = toks_push(t, s, (int)(p - s));
    }
    if (rc) toks_free(t);
    return rc;
}

// ---- exact match ---------------------------------------------------------------------

// SQuAD-style normal form of text into out (malloc'd).
static char *em_normal(const char *text) {
    size_t n = strlen(text);
    char *w = malloc(n + 1), *out = malloc(n + 1);
    if (!w || !out) {
        free(w);
        free(out);
        return NULL;
    }
    size_t m = 0, o = 0;
    for (size_t i = 0; i < n; i++) { // lower case, punctuation out
        unsigned char c = (unsigned char)text[i];
        if (!is_punct(c)) w[m++] = (char)lower(c);
    }
    w[m] = 0;
    for (size_t i = 0; i < m;) { // words, articles out, single spaces
        while (i < m && is_space((unsigned char)w[i])) i++;
        size_t s = i;
        while (i < m && !is_space((unsigned char)w[i])) i++;
        size_t len = i - s;
        if (!len) break;
        if ((len == 1 && w[s] == 'a') || (len == 2 && !memcmp(w + s, "an", 2)) ||
            (len == 3 && !memcmp(w + s, "the", 3)))
            continue;
        if (o) out[o++] = ' ';
        memcpy(out + o, w + s, len);
        o += len;
    }
    out[o] = 0;
    free(w);
    return out;
}

int rm_metric_em(const char *pred, const char *target) {
    char *a = em_normal(pred), *b = em_normal(target);
    int eq = a && b && !strcmp(a, b);
    free(a);
    free(b);
    return eq;
}

// ---- n-grams ---------------------------------------------------------------------------

static uint64_t ngram_hash(const tok *t, int n) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < t[i].len; k++) h = (h ^ (unsigned char)t[i].s[k]) * 1099511628211ull;
        h = (h ^ 0x1f) * 1099511628211ull; // token boundary
    }
    return h;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

// Sorted hashes of t's n-grams into *out (count returned in *m).
static int ngrams(const toks *t, int n, uint64_t **out, int *m) {
    *m = t->n >= n ? t->n - n + 1 : 0;
    *out = malloc((size_t)(*m ? *m : 1) * sizeof **out);
    if (!*out) return rm_errorf(RM_ENOMEM, "metrics: out of memory");
    for (int i = 0; i < *m; i++) (*out)[i] = ngram_hash(t->t + i, n);
    qsort(*out, (size_t)*m, sizeof **out, cmp_u64);
    return RM_OK;
}

// Clipped matches of pred's n-grams against target's: sum of min counts.
static int clipped_matches(const toks *pred, const toks *target, int n, int *match, int *n_pred, int *n_target) {
    uint64_t *a = NULL, *b = NULL;
    int na = 0, nb = 0, rc = ngrams(pred, n, &a, &na);
    if (!rc) rc = ngrams(target, n, &b, &nb);
    int m = 0;
    for (int i = 0, j = 0; !rc && i < na && j < nb;) {
        if (a[i] < b[j]) i++;
        else if (a[i] > b[j]) j++;
        else {
            m++;
            i++;
            j++;
        }
    }
    free(a);
    free(b);
    *match = m, *n_pred = na, *n_target = nb;
    return rc;
}

static double f1(double match, double n_pred, double n_target) {
    if (match <= 0 || n_pred <= 0 || n_target <= 0) return 0;
    double p = match / n_pred, r = match / n_target;
    return 2 * p * r / (p + r);
}

static int tok_eq(const tok *a, const tok *b) { return a->len == b->len && !memcmp(a->s, b->s, (size_t)a->len); }

// Length of the longest common subsequence of two token lists.
static int lcs(const toks *a, const toks *b, int *out) {
    enum { CAP = 4096 };
    int na = a->n < CAP ? a->n : CAP, nb = b->n < CAP ? b->n : CAP;
    int *prev = calloc((size_t)nb + 1, sizeof *prev), *cur = calloc((size_t)nb + 1, sizeof *cur);
    if (!prev || !cur) {
        free(prev);
        free(cur);
        return rm_errorf(RM_ENOMEM, "metrics: out of memory");
    }
    for (int i = 1; i <= na; i++) {
        for (int j = 1; j <= nb; j++)
            cur[j] =
                tok_eq(&a->t[i - 1], &b->t[j - 1]) ? prev[j - 1] + 1 : (prev[j] > cur[j - 1] ? prev[j] : cur[j - 1]);
        int *s = prev;
        prev = cur, cur = s;
    }
    *out = prev[nb];
    free(prev);
    free(cur);
    return RM_OK;
}

int rm_metric_rouge(const char *pred, const char *target, rm_rouge *out) {
    memset(out, 0, sizeof *out);
    toks p, t;
    int rc = rouge_tokens(pred, &p);
    if (rc) return rc;
    if ((rc = rouge_tokens(target, &t))) {
        toks_free(&p);
        return rc;
    }
    int m, np, nt, l = 0;
    if (!(rc = clipped_matches(&p, &t, 1, &m, &np, &nt))) out->r1 = f1(m, np, nt);
    if (!rc && !(rc = clipped_matches(&p, &t, 2, &m, &np, &nt))) out->r2 = f1(m, np, nt);
    if (!rc && !(rc = lcs(&p, &t, &l))) out->rl = f1(l, p.n, t.n);
    toks_free(&p);
    toks_free(&t);
    return rc;
}

// ---- BLEU -------------------------------------------------------------------------------

void rm_bleu_init(rm_bleu *b) { memset(b, 0, sizeof *b); }

int rm_bleu_add(rm_bleu *b, const char *pred, const char *target) {
    toks p, t;
    int rc = bleu_tokens(pred, &p);
    if (rc) return rc;
    if ((rc = bleu_tokens(target, &t))) {
        toks_free(&p);
        return rc;
    }
    for (int n = 1; n <= 4 && !rc; n++) {
        int m, np, nt;
        rc = clipped_matches(&p, &t, n, &m, &np, &nt);
        if (!rc) b->match[n - 1] += m, b->total[n - 1] += np;
    }
    if (!rc) b->pred_len += p.n, b->ref_len += t.n;
    toks_free(&p);
    toks_free(&t);
    return rc;
}

double rm_bleu_score(const rm_bleu *b) {
    if (b->pred_len <= 0) return 0;
    double log_sum = 0, smooth = 1;
    for (int n = 0; n < 4; n++) {
        if (b->total[n] <= 0) return 0;
        double p;
        if (b->match[n] > 0) p = b->match[n] / b->total[n];
        else {
            smooth *= 2;
            p = 1 / (smooth * b->total[n]);
        }
        log_sum += log(p);
    }
    double bp = b->pred_len < b->ref_len ? exp(1 - b->ref_len / b->pred_len) : 1;
    return bp * exp(log_sum / 4);
}
