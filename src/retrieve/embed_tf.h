// embed_tf.h — transformer embedders from GGUF files (kinds "bert", "llama").
//
// "bert"   a BERT-family sentence encoder (bge, e5, gte, all-MiniLM) in
//          llama.cpp's GGUF conventions (general.architecture = "bert"):
//          WordPiece with [CLS] ... [SEP], truncated to the model's positions
//          (the last kept id becomes [SEP]), post-LayerNorm blocks with
//          bidirectional attention and an erf-GELU feed-forward; the last
//          hidden states pooled by the file's bert.pooling_type (1 mean,
//          2 CLS, 3 last token; mean when absent or 0).
// "llama"  any model rm_llama_load opens: the final hidden states (after the
//          final RMSNorm) of the text's tokens, BOS included when the model
//          adds one, mean-pooled. Truncated to the model's training context.
//
// Both may carry a linear projection head W[dim_out x dim_in] applied to the
// pooled vector; the embedder's dim is then dim_out. The result is
// normalised by the embedder interface (embed.h), as for every kind.
//
// An embedder file (rm_embedder_save) of these kinds records the model's
// path (not its weights), the pooling and the head, so loading it opens the
// model again. Payload: u32 len + path, u32 pooling, u32 head_out,
// u32 head_in, f32 head[head_out][head_in] (head_out = 0: no head).
#ifndef RM_RETRIEVE_EMBED_TF_H
#define RM_RETRIEVE_EMBED_TF_H
#include <stdint.h>

#include "base/threadpool.h"
#include "model/tokenizer.h"
#include "retrieve/embed.h"

// Pooling of a sequence's hidden states (the values of llama.cpp's pooling_type).
typedef enum { RM_POOL_DEFAULT = 0, RM_POOL_MEAN = 1, RM_POOL_CLS = 2, RM_POOL_LAST = 3 } rm_pooling;

// ---- the BERT model ----------------------------------------------------------
typedef struct rm_bert_hparams {
    int n_vocab, n_embd, n_layer, n_head, n_ff;
    int n_ctx;          // positions (rows of position_embd)
    float eps;          // LayerNorm epsilon
    rm_pooling pooling; // the file's pooling (MEAN, CLS or LAST)
} rm_bert_hparams;

typedef struct rm_bert rm_bert;

int rm_bert_load(rm_bert **out, const char *path);
void rm_bert_free(rm_bert *m);
const rm_bert_hparams *rm_bert_hp(const rm_bert *m);
const rm_tokenizer *rm_bert_tokenizer(const rm_bert *m);

// hidden[n, n_embd] = last hidden states of n_seq sequences, each attending
// to itself only; their ids are concatenated in ids (len[s] ids each,
// n = sum of len; each 1..n_ctx). The model is read-only: calls on several
// threads at once are fine (each with its own tp, or NULL).
int rm_bert_forward(const rm_bert *m, rm_threadpool *tp, const int32_t *ids, const int *len, int n_seq, float *hidden);

// out[n_seq, d] = each sequence's pooled hidden[sum len, d] (not normalised).
void rm_tf_pool(const float *hidden, const int *len, int n_seq, int d, rm_pooling pool, float *out);

// ---- embedders -----------------------------------------------------------------
// pooling RM_POOL_DEFAULT: the model file's. prefix NULL: the default.
int rm_bert_embedder_create(const char *path, rm_pooling pooling, const char *prefix, rm_embedder **out);
int rm_llama_embedder_create(const char *path, const char *prefix, rm_embedder **out);
// Sets (w non-NULL, copied) or removes (w NULL) the projection head of a
// "bert" or "llama" embedder; dim_in must be the model's n_embd. e->dim
// becomes dim_out (n_embd without a head); a fitted centre is dropped.
int rm_tfembed_set_head(rm_embedder *e, const float *w, int dim_out, int dim_in);
// The raw (pooled, projected, not normalised) vector of already tokenised
// ids (out[e->dim]); for tests and callers that tokenise themselves.
int rm_tfembed_embed_ids(const rm_embedder *e, const int32_t *ids, int n, float *out);

// ---- internal to src/retrieve ---------------------------------------------------
extern const rm_embedder_ops rm_bert_ops, rm_llama_embed_ops;

// The state both kinds share; e->impl points at it.
typedef struct tf_embed {
    char *path; // the model file
    rm_pooling pooling;
    int n_embd;  // the model's hidden size
    float *head; // NULL or [head_out][n_embd]
    int head_out;
    int n_ctx;      // ids kept per text
    int32_t end_id; // id written last when a text is truncated (-1: none)
    int add_bos;    // rm_tokenize's add_bos (WordPiece: [CLS] ... [SEP])
    const rm_tokenizer *tok;
    void *model; // rm_bert or the llama embedder's state
    // raw[n_embd] = pooled vector of ids[0..n) (n <= n_ctx)
    int (*pooled)(const struct tf_embed *t, const int32_t *ids, int n, float *raw);
} tf_embed;

// An embedder of kind ops named "KIND:BASENAME" over the model at path,
// opened by open_model (which fills t and resolves RM_POOL_DEFAULT).
int tf_embed_create(const rm_embedder_ops *ops, const char *path, rm_pooling pooling, const char *prefix,
                    int (*open_model)(tf_embed *t), rm_embedder **out);
// The embed/save/load halves the kinds share; load_model opens t->path.
int tf_embed_text(const rm_embedder *e, const char *text, size_t len, float *out);
int tf_embed_save(const rm_embedder *e, rm_bytes *b);
int tf_embed_load(rm_embedder *e, rm_reader *r, int (*load_model)(tf_embed *t));
void tf_embed_free_common(tf_embed *t);
// The ops of kind "bert" or "llama"; NULL for any other (embed.c asks).
const rm_embedder_ops *tf_ops_by_kind(const char *kind);
#endif
