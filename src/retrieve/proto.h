// proto.h — adapter keys made of several prototypes instead of one mean.
//
// An adapter whose sample inputs come from several templates (e.g. plain
// science questions and "write a question ..." prompts) has a mean key that
// lies between its templates and close to none of its requests. Its samples'
// embeddings are clustered by spherical k-means into up to n prototypes
// (each the normalised sum of its cluster's members), and the first-stage
// score of the adapter is
//
//   (1 - mix) x (q . mean key) + mix x max_j (q . prototype_j)
//
// (mix 1: the best prototype alone; mix 0: the mean key alone).
//
// The clustering is deterministic: the first centre is the sample nearest to
// the mean, every further one the sample farthest from the centres so far
// (its best similarity to them the smallest; ties to the smaller index);
// then Lloyd iterations (each sample to its most similar centre, ties to the
// smaller centre; centres = normalised sums) until no assignment changes
// (or iters).
// When a cluster has fewer than min_size members, the clustering is re-run
// with one centre less (down to 1: the mean key).
//
// In an index, an adapter's rows carry the ids adapter x RM_PROTO_ROWS + j:
// j 0 its mean key, 1..n its prototypes; rm_proto_merge turns scored rows
// back into adapter hits.
//
// Status (docs/retrieval.md): an evaluation option (`retrieve-eval --protos`),
// not the default; two prototypes gained 4 top-3 queries of 960 in the pool
// leave-one-out, below the bar for adoption, so the pool keeps one mean key.
#ifndef RM_RETRIEVE_PROTO_H
#define RM_RETRIEVE_PROTO_H
#include "retrieve/embed.h"
#include "retrieve/index.h"

#define RM_PROTO_MAX 8   // prototypes per adapter at most
#define RM_PROTO_ROWS 16 // index ids per adapter (mean key + prototypes, room to spare)

typedef struct rm_proto_params {
    int n;        // prototypes per adapter (<= 1: off, the mean key alone)
    float mix;    // weight of the best prototype's score (see above)
    float tau;    // > 0: a soft best, tau ln(mean_j exp(q . prototype_j / tau))
                  // (between the mean and the max of the prototype scores)
    int min_size; // smallest cluster allowed (>= 1; see above)
    int iters;    // Lloyd iterations at most
} rm_proto_params;

// n 1 (off), mix 1, tau 0, min_size 1, iters 20.
rm_proto_params rm_proto_default_params(void);
// 1 when p asks for prototypes (n > 1 and mix > 0).
int rm_proto_on(const rm_proto_params *p);
// 1 when the mean key does not enter the score (prototypes on, mix 1): an
// index then needs no mean-key rows.
int rm_proto_skip_mean(const rm_proto_params *p);

// Clusters the rows of emb[n][dim] (unit vectors the embedder's way), row
// skip (-1: none) left out, into out[*n_out][dim] (*n_out <= p->n, at least
// 1 when a row remains). e normalises the centres per part (NULL: plain L2).
// assign (may be NULL) gets each row's cluster among the output ones (-1 for
// skip).
int rm_proto_kmeans(const rm_embedder *e, int dim, const float *emb, int n, int skip, const rm_proto_params *p,
                    float *out, int *n_out, int *assign);

// Adapter hits from index rows (ids as above, any order): each adapter seen
// in rows gets the score above over its rows present (an absent mean key
// counts as its best prototype, absent prototypes as the mean key); the best
// k adapters (higher score, then smaller id) go to out, *n_out of them.
int rm_proto_merge(const rm_proto_params *p, const rm_hit *rows, int n_rows, int k, rm_hit *out, int *n_out);
#endif
