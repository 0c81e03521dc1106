// feat.h — hashed word and character n-gram features of a text.
//
// A text becomes a sparse vector over 2^bits buckets: every word n-gram
// (wmin..wmax words) and every character n-gram (cmin..cmax bytes of the
// whitespace-collapsed, lowercased text padded with one space each side) is
// hashed (with a salt per kind and length) into a bucket, and the bucket's
// count is incremented (word n-grams count `word_weight` each; n-grams in the
// middle of a long text count mid_weight times that, see `edge`). The result is
// sorted by bucket, one entry per bucket. The lexical and learned embedders
// both start from these features.
#ifndef RM_RETRIEVE_FEAT_H
#define RM_RETRIEVE_FEAT_H
#include <stddef.h>
#include <stdint.h>

typedef struct rm_feat_params {
    int bits;          // log2 of the bucket count, 8..24
    int wmin, wmax;    // word n-gram lengths (wmax 0: no word features)
    int cmin, cmax;    // character n-gram lengths (cmax 0: no char features)
    float word_weight; // count added per word n-gram (char n-grams add 1)
    int lowercase;     // fold ASCII case
    int edge;          // > 0: n-grams starting more than `edge` bytes from both
    float mid_weight;  //   ends of the text count mid_weight (instructions sit at the ends)
    int rare_df;       // IDF fitting: buckets in fewer than rare_df corpus documents
    float rare_weight; //   get their idf times rare_weight (one-off content, not instructions)
} rm_feat_params;

rm_feat_params rm_feat_default_params(void);
// The settings of the lexical embedder in the default recipe (and of BM25):
// 2^16 buckets, case kept, word 1..2 and char 2..5-grams, n-grams more than
// 200 bytes from both ends counting 0.3 (docs/retrieval.md).
rm_feat_params rm_feat_lexical_params(void);
// RM_EINVAL with a message when a field is out of range.
int rm_feat_check(const rm_feat_params *p);

typedef struct rm_sparse {
    uint32_t *idx; // sorted, unique
    float *val;
    size_t n, cap;
} rm_sparse;

void rm_sparse_free(rm_sparse *s);
// Featurizes text[0..len) into *out (reusing its buffers).
int rm_feat_extract(const rm_feat_params *p, const char *text, size_t len, rm_sparse *out);
// In place: sublinear term frequency (1 + ln tf), times idf[bucket] when idf
// is not NULL (entries that end up 0 are dropped), then L2 normalisation.
void rm_sparse_weight(rm_sparse *s, const float *idf);

#endif
