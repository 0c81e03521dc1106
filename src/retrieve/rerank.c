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

float rm_rerank_term(const rm_rerank_params *p, int dim, const float *q, const float *samples, int n, int skip) {
    int m = p->top < 1 ? 1 : p->top > RM_RERANK_TOPMAX ? RM_RERANK_TOPMAX : p->top;
    float best[RM_RERANK_TOPMAX];
    int nb = 0;
    for (int i = 0; i < n; i++) {
        if (i == skip) continue;
        float s = dot8(q, samples + (size_t)i * (size_t)dim, dim);
        int j;
        if (nb < m) j = nb++;
        else if (s > best[m - 1]) j = m - 1;
        else continue;
        while (j > 0 && best[j - 1] < s) { best[j] = best[j - 1]; j--; } // best[0..nb) descending
        best[j] = s;
    }
    float sum = 0;
    for (int j = 0; j < nb; j++) sum += best[j];
    return nb ? sum / (float)nb : 0.0f;
}

void rm_rerank_apply(const rm_rerank_params *p, rm_hit *h, int nh, const float *term, const float *bm25) {
    int k = p->k < nh ? p->k : nh;
    for (int c = 0; c < k; c++) h[c].score += p->w * term[c] + (bm25 ? p->bm25.w * bm25[c] : 0.0f);
    for (int c = 1; c < k; c++) {
        rm_hit x = h[c];
        int j = c;
        while (j > 0 && h[j - 1].score < x.score) { h[j] = h[j - 1]; j--; }
        h[j] = x;
    }
}
