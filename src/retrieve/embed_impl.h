// embed_impl.h — internal to src/retrieve: the embedder kinds' ops tables and
// helpers they share.
#ifndef RM_RETRIEVE_EMBED_IMPL_H
#define RM_RETRIEVE_EMBED_IMPL_H
#include "retrieve/embed.h"

extern const rm_embedder_ops rm_lexical_ops, rm_hashproj_ops, rm_hybrid_ops, rm_shape_ops, rm_script_ops;

// A zeroed embedder with ops, name, dim and a copy of prefix (NULL: default).
int embed_alloc(const rm_embedder_ops *ops, const char *name, int dim, const char *prefix, rm_embedder **out);
// The embedding of an already prefixed text: the kind's vector, normalised,
// centred and normalised again (what rm_embedder_embed does after prefixing).
int embed_prefixed(const rm_embedder *e, const char *text, size_t len, float *out);
// Feature parameters on the wire (11 x 4 bytes).
void embed_put_feat(rm_bytes *b, const rm_feat_params *p);
int embed_get_feat(rm_reader *r, rm_feat_params *p);
// idf[b] = ln((N+1)/(df+1)) + 1 over the buckets seen in the n corpus texts
// (each with prefix); buckets the corpus never saw get 0 (dropped) when
// oov_keep is 0, else the largest idf ln(N+1) + 1 (kept as the rarest).
// With group (may be NULL; texts of a group contiguous) N and df count
// groups, not texts. *idf is malloc'd, 2^bits entries.
int embed_fit_idf(const rm_feat_params *fp, const char *const *corpus, const int *group, int n, const char *prefix,
                  int oov_keep, float **idf);
// Features of prefix+text, TF-IDF weighted and unit length.
int embed_features(const rm_feat_params *fp, const float *idf, const char *text, size_t len, rm_sparse *out);
#endif
