// rerank.h — the second retrieval stage: the first k hits of a key search
// are re-scored by how close the query is to the adapter's individual
// sample inputs, not only to their mean.
//
//   score' = score + w x (mean of the `top` largest q . sample_i)
//                  + bm25.w x BM25(q, the adapter's samples)   (bm25.h, in [0, 1])
//
// The mean key finds the right neighbourhood; the nearest sample separates
// tasks that share a template but whose requests repeat one of the sample
// forms (measured in docs/retrieval.md: pool leave-one-out top-1 79.4 ->
// 82.4 at k 5, top 1, w 1); BM25 weighs the features the adapter's samples
// share with the request by their rarity among adapters (82.4 -> 83.0 at
// w 0.5).
#ifndef RM_RETRIEVE_RERANK_H
#define RM_RETRIEVE_RERANK_H
#include "retrieve/bm25.h"
#include "retrieve/index.h"

typedef struct rm_rerank_params {
    int k;               // hits re-scored (0: no second stage)
    int top;             // samples averaged (1: the nearest sample; at most RM_RERANK_TOPMAX)
    float w;             // weight of the sample term
    rm_bm25_params bm25; // the BM25 term (bm25.w 0: none)
} rm_rerank_params;
#define RM_RERANK_TOPMAX 8

rm_rerank_params rm_rerank_default_params(void);
// The mean of the p->top largest dot products of q[dim] with the n rows of
// samples[n][dim], skipping row `skip` (-1: none); 0 without rows.
float rm_rerank_term(const rm_rerank_params *p, int dim, const float *q, const float *samples, int n, int skip);
// The same over n sparse sample embeddings (their nonzero entries; sums in
// index order, so within float rounding of the dense version).
float rm_rerank_term_sparse(const rm_rerank_params *p, const float *q, const rm_sparse *samples, int n);
// Adds w x term[i] + bm25.w x bm25[i] (bm25 may be NULL: none) to h[i].score
// for i < min(p->k, nh) and re-sorts those hits by score (descending, stable).
void rm_rerank_apply(const rm_rerank_params *p, rm_hit *h, int nh, const float *term, const float *bm25);
#endif
