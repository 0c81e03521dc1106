// rerank.c — see rerank.h.
#include "retrieve/rerank.h"

// q . v with eight running sums (independent chains the compiler may keep in
// one vector register).
static float dot8(const float *q, const float *v, int dim) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int d = 0;
    for (; d + 8 <= dim; d += 8)
        for (int j = 0; j < 8; j++) a[j] += q[d + j] * v[d + j];
    float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for (; d < dim; d++) s += q[d] * v[d];
    return s;
}

rm_rerank_params rm_rerank_default_params(void) {
    return (rm_rerank_params){.k = 5, .top = 1, .w = 1.0f, .bm25 = rm_bm25_default_params()};
}

// The mean of the m largest values added (m = p->top, clamped to 1..TOPMAX).
typedef struct {
    float best[RM_RERANK_TOPMAX]; // descending
    int nb, m;
} top_mean;

static void top_init(top_mean *t, const rm_rerank_params *p) {
    t->nb = 0;
    t->m = p->top < 1 ? 1 : p->top > RM_RERANK_TOPMAX ? RM_RERANK_TOPMAX : p->top;
}

static void top_add(top_mean *t, float s) {
    int j;
    if (t->nb < t->m) j = t->nb++;
    else if (s > t->best[t->m - 1]) j = t->m - 1;
    else return;
    while (j > 0 && t->best[j - 1] < s) {
        t->best[j] = t->best[j - 1];
        j--;
    }
    t->best[j] = s;
}

static float top_value(const top_mean *t) {
    float sum = 0;
    for (int j = 0; j < t->nb; j++) sum += t->best[j];
    return t->nb ? sum / (float)t->nb : 0.0f;
}

float rm_rerank_term(const rm_rerank_params *p, int dim, const float *q, const float *samples, int n, int skip) {
    top_mean t;
    top_init(&t, p);
    for (int i = 0; i < n; i++)
        if (i != skip) top_add(&t, dot8(q, samples + (size_t)i * (size_t)dim, dim));
    return top_value(&t);
}

float rm_rerank_term_sparse(const rm_rerank_params *p, const float *q, const rm_sparse *samples, int n) {
    top_mean t;
    top_init(&t, p);
    for (int i = 0; i < n; i++) {
        float s = 0;
        for (size_t k = 0; k < samples[i].n; k++) s += samples[i].val[k] * q[samples[i].idx[k]];
        top_add(&t, s);
    }
    return top_value(&t);
}

void rm_rerank_apply(const rm_rerank_params *p, rm_hit *h, int nh, const float *term, const float *bm25) {
    int k = p->k < nh ? p->k : nh;
    for (int c = 0; c < k; c++) h[c].score += p->w * term[c] + (bm25 ? p->bm25.w * bm25[c] : 0.0f);
    for (int c = 1; c < k; c++) {
        rm_hit x = h[c];
        int j = c;
        while (j > 0 && h[j - 1].score < x.score) {
            h[j] = h[j - 1];
            j--;
        }
        h[j] = x;
    }
}
