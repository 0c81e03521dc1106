// bm25.h — Okapi BM25 over the hashed features of adapters' sample inputs, a
// term of the second retrieval stage (rerank.h).
//
// An adapter's document is the sum of the feature vectors (feat.h, no
// instruction prefix) of its sample inputs: tf_d(f) = weighted count of
// bucket f over all samples, |d| = sum of tf_d. The corpus statistics are the
// number of documents N, per-bucket document frequencies df(f) and the total
// length; they are kept current by adding and removing documents (lengths
// in fixed point, so that add-then-remove restores them exactly). A query is
// the set of distinct buckets of its text; its score against d is
//
//   sum_{f in q} idf(f) tf_d(f) (k1 + 1) / (tf_d(f) + k1 (1 - b + b |d| / avgdl))
//   ------------------------------------------------------------------------  in [0, 1]
//                        sum_{f in q} idf(f) (k1 + 1)
//
// with idf(f) = ln(1 + (N - df(f) + 0.5) / (df(f) + 0.5)) (always > 0).
#ifndef RM_RETRIEVE_BM25_H
#define RM_RETRIEVE_BM25_H
#include <stdint.h>

#include "retrieve/feat.h"

typedef struct rm_bm25_params {
    float w;             // weight in the second stage (0: off)
    float k1, b;         // term-frequency saturation, length normalisation
    rm_feat_params feat; // features of documents and queries
} rm_bm25_params;

// w 0.5, k1 1.2, b 0.75, feat = rm_feat_lexical_params() (docs/retrieval.md).
rm_bm25_params rm_bm25_default_params(void);
// RM_EINVAL with a message when a field is out of range.
int rm_bm25_check(const rm_bm25_params *p);

// Lengths are counted in units of 1 / RM_BM25_LEN_ONE.
#define RM_BM25_LEN_ONE 4096

// *doc = sum of the features of texts[0..n) (in that order; idx sorted).
int rm_bm25_doc(const rm_feat_params *fp, const char *const *texts, int n, rm_sparse *doc);
// *doc = sum of parts[0..n) but parts[skip] (-1: none), the features of
// texts (rm_feat_extract); the same sums as rm_bm25_doc of those texts.
int rm_bm25_doc_sum(const rm_sparse *parts, int n, int skip, int bits, rm_sparse *doc);
// A document's length in fixed point.
int64_t rm_bm25_doc_len(const rm_sparse *doc);
// *q = the distinct buckets of text (val 1).
int rm_bm25_query(const rm_feat_params *fp, const char *text, rm_sparse *q);

typedef struct rm_bm25_stats {
    uint32_t *df; // [2^bits]
    int bits;
    int64_t n_docs;
    int64_t total_len; // fixed point
} rm_bm25_stats;

int rm_bm25_stats_init(rm_bm25_stats *s, int bits);
void rm_bm25_stats_free(rm_bm25_stats *s);
// sign +1 adds doc to the corpus, -1 takes it out again.
void rm_bm25_stats_update(rm_bm25_stats *s, const rm_sparse *doc, int sign);
// The normalised score of query q against doc (a document of the corpus s);
// only q's buckets count (q->idx sorted, unique), not their values.
float rm_bm25_score(const rm_bm25_params *p, const rm_bm25_stats *s, const rm_sparse *q, const rm_sparse *doc);

// A fingerprint of the feature parameters (documents made with other
// parameters must be re-made).
int64_t rm_bm25_feat_id(const rm_feat_params *fp);

// Documents on the wire: u32 n, u32 idx[n], f32 val[n] (little-endian).
size_t rm_bm25_doc_bytes(const rm_sparse *doc);
void rm_bm25_doc_pack(const rm_sparse *doc, void *out);
int rm_bm25_doc_unpack(const void *data, size_t size, int bits, rm_sparse *doc);
#endif
