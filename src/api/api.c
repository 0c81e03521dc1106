// api.c — the public API of include/ramole.h over the internal modules.
#include "ramole.h"
#include "base/err.h"
#include "base/json.h"
#include "lora/batch.h"
#include "lora/router.h"
#include "model/generate.h"
#include "retrieve/pick.h"

#include <stdlib.h>
#include <string.h>

struct rm_adapter {
    rm_lora *lora;
    int is_router;
};

struct rm_adapter_pool {
    rm_pool *pool;
    rm_pick last; // the strings of the last retrieval
};

struct rm_model {
    rm_llama *llama;
    rm_threadpool *tp;
    rm_kvcache kv;
    int n_ctx;
};

const char *rm_version(void) { return RM_VERSION; }

rm_model_params rm_model_default_params(void) {
    rm_model_params p = {0, 0, 0};
    return p;
}

int rm_model_load(const char *path, const rm_model_params *params, rm_model **out) {
    *out = NULL;
    rm_model_params p = params ? *params : rm_model_default_params();
    rm_model *m = calloc(1, sizeof *m);
    if (!m) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = rm_llama_load(&m->llama, path);
    if (rc) {
        free(m);
        return rc;
    }
    const rm_llama_hparams *hp = &m->llama->hp;
    m->n_ctx = p.n_ctx > 0 ? p.n_ctx : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    m->tp = rm_threadpool_create(p.n_threads);
    if (!m->tp) rc = rm_errorf(RM_ENOMEM, "cannot start threads");
    if (!rc)
        rc = rm_kvcache_init_type(&m->kv, hp->n_layer, 1, m->n_ctx, hp->n_head_kv * hp->head_dim,
                                  p.kv_f16 ? RM_KV_F16 : RM_KV_F32);
    if (rc) {
        rm_model_free(m);
        return rc;
    }
    *out = m;
    return RM_OK;
}

void rm_model_free(rm_model *m) {
    if (!m) return;
    rm_kvcache_free(&m->kv);
    rm_threadpool_free(m->tp);
    rm_llama_free(m->llama);
    free(m);
}

void rm_model_get_info(const rm_model *m, rm_model_info *out) {
    const rm_llama_hparams *hp = &m->llama->hp;
    out->arch = hp->arch == RM_ARCH_QWEN2 ? "qwen2" : "llama";
    out->n_vocab = hp->n_vocab;
    out->n_embd = hp->n_embd;
    out->n_layer = hp->n_layer;
    out->n_head = hp->n_head;
    out->n_head_kv = hp->n_head_kv;
    out->n_ff = hp->n_ff;
    out->n_ctx_train = hp->n_ctx_train;
    out->weight_bytes = m->llama->weight_bytes;
    out->has_tokenizer = m->llama->tok != NULL;
}

int rm_model_tokenize(const rm_model *m, const char *text, int add_bos, int32_t *ids, int cap) {
    if (!m->llama->tok) return rm_errorf(RM_EUNSUPPORTED, "%s has no tokenizer", m->llama->path);
    return rm_tokenize(m->llama->tok, text, strlen(text), add_bos && m->llama->add_bos, 0, ids, cap);
}

rm_generate_params rm_generate_default_params(void) {
    rm_sampler_params s = rm_sampler_default_params();
    rm_generate_params p = {64, s.temperature,       s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.seed, NULL,
                            0,  RM_COMPOSITION_AUTO, NULL};
    return p;
}

typedef struct api_cb {
    rm_model *m;
    rm_text_cb cb;
    void *ctx;
    rm_detok detok;
} api_cb;

static int api_on_token(void *ctx, int32_t id) {
    api_cb *a = ctx;
    rm_sb piece;
    rm_sb_init(&piece);
    int n = a->m->llama->tok ? rm_detok_push_sb(&a->detok, id, &piece) : 0;
    int stop = n < 0 ? 1 : a->cb ? a->cb(a->ctx, piece.buf ? piece.buf : "", (int)piece.len, id) : 0;
    rm_sb_free(&piece);
    return stop;
}

// The composition plan of a generation's adapters (none: nothing to do).
static int plan_for(const rm_model *m, const rm_generate_params *g, rm_lora_plan *plan) {
    memset(plan, 0, sizeof *plan);
    if (g->n_adapters <= 0) {
        if (g->composition == RM_COMPOSITION_ROUTER)
            return rm_errorf(RM_EINVAL, "the router composition needs adapters");
        return RM_OK;
    }
    if (g->n_adapters > RM_PLAN_MAX || !g->adapters)
        return rm_errorf(RM_EINVAL, "%d adapters (1..%d, and the array)", g->n_adapters, RM_PLAN_MAX);
    rm_lora *l[RM_PLAN_MAX];
    for (int i = 0; i < g->n_adapters; i++) {
        if (!g->adapters[i] || g->adapters[i]->is_router)
            return rm_errorf(RM_EINVAL, "adapter %d is missing or a router", i);
        if (g->adapters[i]->lora->base != m->llama)
            return rm_errorf(RM_EINVAL, "adapter %d was loaded for another model", i);
        l[i] = g->adapters[i]->lora;
    }
    int c = g->composition == RM_COMPOSITION_AUTO
                ? (g->n_adapters == 1 ? RM_COMPOSITION_SELECTION : RM_COMPOSITION_MIXTURE)
                : g->composition;
    static const rm_compose_mode modes[3] = {RM_COMPOSE_SELECTION, RM_COMPOSE_MIXTURE, RM_COMPOSE_FUSION};
    if (c >= RM_COMPOSITION_SELECTION && c <= RM_COMPOSITION_FUSION)
        return rm_lora_plan_init(plan, modes[c - RM_COMPOSITION_SELECTION], g->n_adapters, l, NULL, NULL);
    if (c != RM_COMPOSITION_ROUTER) return rm_errorf(RM_EINVAL, "composition %d (RM_COMPOSITION_*)", g->composition);
    if (!g->router || !g->router->is_router)
        return rm_errorf(RM_EINVAL, "the router composition needs a router (rm_model_load_router)");
    if (g->router->lora->base != m->llama) return rm_errorf(RM_EINVAL, "the router was loaded for another model");
    return rm_lora_plan_init_router(plan, g->n_adapters, l, g->router->lora);
}

int rm_model_generate_ids(rm_model *m, const int32_t *ids, int n_ids, const rm_generate_params *params, rm_text_cb cb,
                          void *ctx, rm_generate_stats *stats) {
    rm_generate_params g = params ? *params : rm_generate_default_params();
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = g.temperature;
    sp.top_k = g.top_k;
    sp.top_p = g.top_p;
    sp.min_p = g.min_p;
    sp.repeat_penalty = g.repeat_penalty;
    sp.seed = g.seed;
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= m->llama->hp.n_vocab)
            return rm_errorf(RM_EINVAL, "prompt id %d is outside the vocabulary [0, %d)", ids[i], m->llama->hp.n_vocab);
    api_cb a = {m, cb, ctx, {0}};
    if (m->llama->tok) rm_detok_init(&a.detok, m->llama->tok);
    rm_lora_plan plan;
    rm_lora_batch *lb = NULL;
    rm_linear_hook hook;
    int rc = plan_for(m, &g, &plan);
    if (rc) return rc;
    if (g.n_adapters > 0) {
        if (!(lb = rm_lora_batch_new(m->tp))) {
            rm_lora_plan_free(&plan);
            return rm_errorf(RM_ENOMEM, "out of memory");
        }
        hook = rm_lora_batch_hook(lb);
    }
    rm_gen_stats st;
    rc = rm_generate(m->llama, &m->kv, m->tp, ids, n_ids, g.n_predict, &sp, lb ? &hook : NULL, lb ? &plan : NULL, 0,
                     api_on_token, &a, &st);
    if (!rc && lb) rc = rm_lora_batch_status(lb);
    if (lb) {
        rm_lora_batch_free(lb);
        rm_lora_plan_free(&plan);
    }
    if (rc) return rc;
    if (m->llama->tok && cb) {
        char buf[64];
        int n = rm_detok_flush(&a.detok, buf, sizeof buf - 1);
        if (n > 0) {
            buf[n] = 0;
            cb(ctx, buf, n, -1);
        }
    }
    if (stats) {
        stats->n_prompt = st.n_prompt;
        stats->n_generated = st.n_gen;
        stats->prompt_tps = st.prompt_s > 0 ? st.n_prompt / st.prompt_s : 0;
        stats->generate_tps = st.gen_s > 0 && st.n_gen > 1 ? (st.n_gen - 1) / st.gen_s : 0;
    }
    return RM_OK;
}

int rm_model_generate(rm_model *m, const char *prompt, const rm_generate_params *params, rm_text_cb cb, void *ctx,
                      rm_generate_stats *stats) {
    int n = rm_model_tokenize(m, prompt, 1, NULL, 0);
    if (n < 0) return n;
    int32_t *ids = malloc((size_t)(n + 1) * sizeof(int32_t));
    if (!ids) return rm_errorf(RM_ENOMEM, "out of memory");
    rm_model_tokenize(m, prompt, 1, ids, n + 1);
    int rc = rm_model_generate_ids(m, ids, n, params, cb, ctx, stats);
    free(ids);
    return rc;
}

// ---- adapters and the pool ----------------------------------------------------------

static int adapter_wrap(rm_lora *l, int is_router, rm_adapter **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) {
        rm_lora_free(l);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    (*out)->lora = l, (*out)->is_router = is_router;
    return RM_OK;
}

int rm_model_load_adapter(rm_model *m, const char *path, rm_adapter **out) {
    *out = NULL;
    rm_lora *l = NULL;
    int rc = rm_lora_load_for(&l, path, m->llama);
    return rc ? rc : adapter_wrap(l, 0, out);
}

int rm_model_load_router(rm_model *m, const char *path, rm_adapter **out) {
    *out = NULL;
    rm_lora *l = NULL;
    int rc = rm_router_load(&l, path, m->llama);
    return rc ? rc : adapter_wrap(l, 1, out);
}

void rm_adapter_free(rm_adapter *a) {
    if (!a) return;
    rm_lora_free(a->lora);
    free(a);
}

int rm_adapter_pool_open(const char *dir, rm_adapter_pool **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = rm_pool_open_existing(dir, &(*out)->pool);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

void rm_adapter_pool_close(rm_adapter_pool *p) {
    if (!p) return;
    rm_pick_free(&p->last);
    rm_pool_close(p->pool);
    free(p);
}

int rm_adapter_pool_retrieve(rm_adapter_pool *p, const char *text, int k, float min_score, rm_retrieved *out) {
    if (!p || !text || !out) return rm_errorf(RM_EINVAL, "retrieve: no pool, text or output array");
    rm_pick_free(&p->last);
    int rc = rm_pool_pick(p->pool, text, k, min_score, &p->last);
    if (rc) return rc;
    for (int i = 0; i < p->last.n; i++) out[i] = (rm_retrieved){p->last.name[i], p->last.weights[i], p->last.score[i]};
    return p->last.n;
}

int rm_adapter_pool_add(rm_adapter_pool *p, rm_model *m, const char *name, const char *weights,
                        const char *const *samples, int n_samples) {
    if (!p || !name || !weights || (!samples && n_samples > 0))
        return rm_errorf(RM_EINVAL, "pool add: no pool, name, weights or samples");
    if (m) { // the weights must fit the model before the pool stores anything
        rm_adapter *a = NULL;
        int rc = rm_model_load_adapter(m, weights, &a);
        rm_adapter_free(a);
        if (rc) return rm_error_prefix(rc, "adapter '%s' refused", name), rc;
    }
    rm_adapter_info info = {.name = name, .weights = weights};
    return rm_pool_add(p->pool, &info, samples, NULL, n_samples, NULL);
}
