// embed_llama.c — the "llama" embedder kind: pooled final hidden states of a
// Llama-family model (anything rm_llama_load opens) through the engine's own
// forward pass (rm_llama_forward_hidden).
//
// The model's forward uses scratch memory inside rm_llama, so calls are
// serialised by a mutex; each call has its own one-slot KV cache and runs the
// text in chunks of rows (prefill) on the embedder's thread pool.
#include "retrieve/embed_tf.h"
#include "base/err.h"
#include "model/kvcache.h"
#include "model/llama.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LLAMA_EMBED_CHUNK 128    // rows per forward call
#define LLAMA_EMBED_MAX_CTX 8192 // tokens kept per text (and the model's training context)

typedef struct llama_embed {
    rm_llama *m;
    rm_threadpool *tp; // NULL: the caller's thread only
    pthread_mutex_t mu;
} llama_embed;

static int llama_pooled(const tf_embed *t, const int32_t *ids, int n, float *raw) {
    llama_embed *le = t->model;
    rm_llama *m = le->m;
    int d = m->hp.n_embd;
    rm_kvcache kv;
    int rc = rm_kvcache_init(&kv, m->hp.n_layer, 1, n, m->hp.n_head_kv * m->hp.head_dim);
    if (rc) return rc;
    float *hidden = malloc((size_t)n * (size_t)d * sizeof *hidden);
    int32_t *pos = malloc((size_t)n * sizeof *pos), *slot = calloc((size_t)n, sizeof *slot);
    if (!hidden || !pos || !slot) rc = rm_errorf(RM_ENOMEM, "llama embed: out of memory");
    for (int i = 0; !rc && i < n; i++) pos[i] = i;
    pthread_mutex_lock(&le->mu);
    for (int r = 0; !rc && r < n; r += LLAMA_EMBED_CHUNK) {
        int nb = n - r < LLAMA_EMBED_CHUNK ? n - r : LLAMA_EMBED_CHUNK;
        rm_batch b = {.n = nb, .token = ids + r, .pos = pos + r, .slot = slot + r};
        rc = rm_llama_forward_hidden(m, &kv, le->tp, &b, NULL, NULL, hidden + (size_t)r * d);
    }
    pthread_mutex_unlock(&le->mu);
    if (!rc) rm_tf_pool(hidden, &n, 1, d, t->pooling, raw);
    free(hidden);
    free(pos);
    free(slot);
    rm_kvcache_free(&kv);
    return rc;
}

static int llama_open_model(tf_embed *t) {
    llama_embed *le = calloc(1, sizeof *le);
    if (!le) return rm_errorf(RM_ENOMEM, "llama embedder: out of memory");
    pthread_mutex_init(&le->mu, NULL);
    t->model = le;
    int rc = rm_llama_load(&le->m, t->path);
    if (rc) return rc;
    if (!le->m->tok) return rm_errorf(RM_EFORMAT, "%s: no tokenizer (an embedder needs one)", t->path);
    le->tp = rm_threadpool_create(0); // NULL (no threads): runs on the caller's
    const rm_llama_hparams *hp = &le->m->hp;
    t->n_embd = hp->n_embd;
    t->n_ctx = hp->n_ctx_train > 0 && hp->n_ctx_train < LLAMA_EMBED_MAX_CTX ? hp->n_ctx_train : LLAMA_EMBED_MAX_CTX;
    t->tok = le->m->tok;
    t->add_bos = le->m->add_bos;
    t->end_id = -1;
    t->pooled = llama_pooled;
    if (t->pooling == RM_POOL_DEFAULT) t->pooling = RM_POOL_MEAN;
    return RM_OK;
}

static void llama_embed_free(rm_embedder *e) {
    tf_embed *t = e->impl;
    if (!t) return;
    llama_embed *le = t->model;
    if (le) {
        rm_threadpool_free(le->tp);
        rm_llama_free(le->m);
        pthread_mutex_destroy(&le->mu);
        free(le);
    }
    tf_embed_free_common(t);
    e->impl = NULL;
}

static int llama_embed_load(rm_embedder *e, rm_reader *r) { return tf_embed_load(e, r, llama_open_model); }

const rm_embedder_ops rm_llama_embed_ops = {"llama", tf_embed_text, tf_embed_save, llama_embed_load, llama_embed_free};

int rm_llama_embedder_create(const char *path, const char *prefix, rm_embedder **out) {
    return tf_embed_create(&rm_llama_embed_ops, path, RM_POOL_MEAN, prefix, llama_open_model, out);
}
