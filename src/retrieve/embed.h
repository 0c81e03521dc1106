// embed.h — text embedders behind one interface.
//
// An embedder maps a text to a unit-length float vector of `dim` entries so
// that the dot product of two embeddings is their similarity. Every text is
// embedded with the embedder's instruction prefix in front ("Represent the
// sentence for similar task retrieval: " unless changed). The key of an
// adapter is made from the embeddings of its sample inputs by
// rm_embedder_key (their mean, normalised the embedder's way).
//
// Kinds (rm_embedder_kind):
//   "lexical"  TF-IDF over hashed word and char n-grams (feat.h); the IDF
//              table is fitted on a corpus (the pool's samples), no labels.
//   "hashproj" learned sparse-to-dense: the same TF-IDF features projected by
//              a matrix [buckets x dim] trained contrastively (train.h).
//   "shape"    surface form (length, lines, character classes), for hybrids.
//   "hybrid"   a weighted sum of cosine scores of several embedders: its
//              vector is the concatenation of the parts' unit vectors scaled
//              by sqrt(weight), so a dot product is sum_i w_i cos_i.
// Optionally an embedder subtracts a fitted mean (rm_embedder_fit_center).
//   "bert", "llama" transformer encoders from GGUF (embed_tf.h): a BERT-family
//              sentence encoder, or mean-pooled Llama hidden states.
//
// Embedders are immutable once built, so one may be used from many threads.
// They serialise to a small binary file (rm_embedder_save / _load) that
// records kind, parameters and weights with a checksum.
#ifndef RM_RETRIEVE_EMBED_H
#define RM_RETRIEVE_EMBED_H
#include <stddef.h>
#include <stdint.h>

#include "retrieve/feat.h"

#define RM_EMBED_DEFAULT_PREFIX "Represent the sentence for similar task retrieval: "
#define RM_EMBED_MAX_PARTS 4

typedef struct rm_embedder rm_embedder;

// A growable byte buffer for serialising.
typedef struct rm_bytes {
    uint8_t *p;
    size_t n, cap;
    int oom;
} rm_bytes;
void rm_bytes_put(rm_bytes *b, const void *data, size_t n);
void rm_bytes_u32(rm_bytes *b, uint32_t v);
void rm_bytes_free(rm_bytes *b);
// A cursor for reading what rm_bytes wrote; every read is bounds-checked.
typedef struct rm_reader {
    const uint8_t *p;
    size_t n, off;
    const char *what;
} rm_reader;
int rm_reader_get(rm_reader *r, void *dst, size_t n);
int rm_reader_u32(rm_reader *r, uint32_t *v);

typedef struct rm_embedder_ops {
    const char *kind;
    // out[dim] = embedding of text[0..len) (prefix already applied), unit length
    // per part (see key_normalise).
    int (*embed)(const rm_embedder *e, const char *text, size_t len, float *out);
    // Appends the kind-specific state to a byte buffer / reads it back.
    int (*save)(const rm_embedder *e, rm_bytes *b);
    int (*load)(rm_embedder *e, rm_reader *r);
    void (*free)(rm_embedder *e);
} rm_embedder_ops;

struct rm_embedder {
    const rm_embedder_ops *ops;
    char name[64];    // e.g. "lexical", "hashproj", "hybrid"
    uint32_t version; // bumped by the embedder when its vectors change meaning
    int dim;
    char *prefix; // owned
    int n_parts;  // 1, or the hybrid's parts
    int part_off[RM_EMBED_MAX_PARTS + 1];
    float part_w[RM_EMBED_MAX_PARTS];
    float *center; // NULL, or dim entries subtracted before normalising
    void *impl;
};

// The embedding of one text, with the prefix.
int rm_embedder_embed(const rm_embedder *e, const char *text, float *out);
// Embeds n texts into out[n*dim], on n_threads threads (<= 1: the caller's).
int rm_embedder_embed_many(const rm_embedder *e, const char *const *texts, int n, float *out, int n_threads);
// The key of an adapter from its n sample inputs: mean of their embeddings,
// then each part normalised to unit length and scaled by sqrt(weight).
int rm_embedder_key(const rm_embedder *e, const char *const *texts, int n, float *out, int n_threads);
// Normalises v[dim] the way keys and queries are (per part).
void rm_embedder_normalise(const rm_embedder *e, float *v);
int rm_embedder_set_prefix(rm_embedder *e, const char *prefix);
// Centering: fits center = mean of the (unit) embeddings of n corpus texts;
// from then on every embedding is v = normalise(normalise(raw) - center),
// which removes what all texts share (e.g. generic English).
int rm_embedder_fit_center(rm_embedder *e, const char *const *corpus, int n, int n_threads);
void rm_embedder_free(rm_embedder *e);

int rm_embedder_save(const rm_embedder *e, const char *path);
int rm_embedder_load(const char *path, rm_embedder **out);
int rm_embedder_to_bytes(const rm_embedder *e, rm_bytes *b);
int rm_embedder_from_bytes(const uint8_t *data, size_t size, const char *what, rm_embedder **out);

// Opens an embedder from a spec: a path to a saved embedder file, or
// "bert:MODEL.gguf" / "llama:MODEL.gguf" (embed_tf.h; default prefix).
int rm_embedder_open(const char *spec, rm_embedder **out);

// ---- lexical ----------------------------------------------------------------
// Fits the IDF table on corpus texts (each with the prefix, like queries):
// idf = ln((N+1)/(df+1)) + 1 for buckets seen in the corpus, 0 for the rest.
// group (may be NULL) puts the texts in documents (e.g. the samples of one
// adapter; a group's texts contiguous): N and df then count documents.
int rm_lexical_create(const rm_feat_params *fp, const char *const *corpus, const int *group, int n, const char *prefix,
                      rm_embedder **out);

// ---- hashproj (learned) ------------------------------------------------------
typedef struct rm_hashproj_params {
    rm_feat_params feat;
    int dim;       // output dimension
    uint64_t seed; // initial projection
} rm_hashproj_params;
rm_hashproj_params rm_hashproj_default_params(void);
// An untrained projection (random Gaussian, i.e. a Johnson-Lindenstrauss sketch
// of the TF-IDF vector) with IDF fitted on corpus; buckets the corpus never
// saw keep the largest idf (so tasks unlike the training corpus still have
// their features). Train it with train.h.
int rm_hashproj_create(const rm_hashproj_params *p, const char *const *corpus, int n, const char *prefix,
                       rm_embedder **out);
// Access for the trainer: features of a text (prefix applied, TF-IDF weighted,
// unit length) and the projection matrix W[buckets][dim].
int rm_hashproj_features(const rm_embedder *e, const char *text, rm_sparse *out);
float *rm_hashproj_weights(rm_embedder *e, size_t *n_buckets);
// Embeds already-extracted features: out[dim] = normalise(x @ W).
void rm_hashproj_project(const rm_embedder *e, const rm_sparse *x, float *out);

// ---- shape -------------------------------------------------------------------
// Surface shape of the text after the prefix (length, lines, shares of
// capitals / digits / non-ASCII / punctuation) as soft one-hot blocks; for
// hybrids. No fitting.
int rm_shape_create(const char *prefix, rm_embedder **out);

// ---- script ------------------------------------------------------------------
// The non-ASCII characters of the text after the prefix and their neighbours,
// hashed into 1024 buckets (sqrt counts; zero for plain ASCII); for hybrids.
int rm_script_create(const char *prefix, rm_embedder **out);

// ---- hybrid ------------------------------------------------------------------
// Takes ownership of the parts (also on failure). Weights must be > 0.
int rm_hybrid_create(rm_embedder **parts, const float *weights, int n, rm_embedder **out);

#endif
