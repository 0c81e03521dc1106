// compose.c — composition plans and the fused-pair cache (see compose.h).
#include "lora/compose.h"
#include "base/err.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const g_mode_names[] = {"selection", "mixture", "fusion", "router", "moe", "arrow"};
#define N_MODES (int)(sizeof g_mode_names / sizeof *g_mode_names)

int rm_compose_parse(const char *s, rm_compose_mode *out) {
    for (int i = 0; i < N_MODES; i++)
        if (!strcmp(s, g_mode_names[i])) {
            *out = (rm_compose_mode)i;
            return RM_OK;
        }
    return rm_errorf(RM_EINVAL, "unknown composition mode '%s' (selection, mixture, fusion, router, moe, arrow)", s);
}

const char *rm_compose_name(rm_compose_mode m) { return (unsigned)m < N_MODES ? g_mode_names[m] : "?"; }

// ---------------------------------------------------------------- fusion

int rm_lora_fuse(rm_lora **out, int n, rm_lora *const *lora, const float *weight) {
    *out = NULL;
    int n_layer = 0;
    for (int i = 0; i < n; i++)
        if (lora[i]->n_layer > n_layer) n_layer = lora[i]->n_layer;
    rm_lora *f;
    int rc = rm_lora_new(&f, n_layer);
    if (rc) return rc;
    for (int m = 0; m < n_layer * RM_LIN_COUNT && !rc; m++) {
        const rm_lora_mod *first = NULL;
        for (int i = 0; i < n; i++) {
            const rm_lora_mod *mi = m < lora[i]->n_layer * RM_LIN_COUNT ? &lora[i]->mods[m] : NULL;
            if (!mi || !mi->r) continue;
            if (!first) {
                first = mi;
                if ((rc = rm_lora_mod_alloc(&f->mods[m], mi->r, mi->in, mi->out, 1.0f))) break;
            } else if (mi->r != first->r || mi->in != first->in || mi->out != first->out) {
                rc = rm_errorf(
                    RM_EMISMATCH, "fusion: layer %d %s: %s has rank %d, %s rank %d (fusion needs equal ranks)",
                    m / RM_LIN_COUNT, rm_linear_names[m % RM_LIN_COUNT], lora[0]->path, first->r, lora[i]->path, mi->r);
                break;
            }
            rm_lora_mod *fm = &f->mods[m];
            float wa = weight[i], wb = weight[i] * mi->scale;
            for (int64_t k = 0; k < (int64_t)mi->r * mi->in; k++) fm->A[k] += wa * mi->A[k];
            for (int64_t k = 0; k < (int64_t)mi->r * mi->out; k++) fm->Bt[k] += wb * mi->Bt[k];
        }
    }
    if (rc) {
        rm_lora_free(f);
        return rc;
    }
    const rm_lora *a0 = lora[0];
    memcpy(f->arch, a0->arch, sizeof f->arch);
    f->qk_permuted = a0->qk_permuted;
    f->base = a0->base;
    f->n_head = a0->n_head;
    f->n_head_kv = a0->n_head_kv;
    f->head_dim = a0->head_dim;
    f->alpha = 1.0f;
    f->rank = rm_lora_max_rank(f);
    *out = f;
    return RM_OK;
}

// ---------------------------------------------------------------- cache

typedef struct fc_entry {
    int n;
    uint64_t uid[RM_PLAN_MAX];
    float weight[RM_PLAN_MAX];
    rm_lora *fused;
    int refs;
    uint64_t last_use;
    struct fc_entry *next;
} fc_entry;

struct rm_fusion_cache {
    pthread_mutex_t mu;
    fc_entry *head;
    int max_idle, size;
    uint64_t clock;
};

rm_fusion_cache *rm_fusion_cache_new(int max_idle) {
    rm_fusion_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->max_idle = max_idle < 0 ? 0 : max_idle;
    return c;
}

void rm_fusion_cache_free(rm_fusion_cache *c) {
    if (!c) return;
    for (fc_entry *e = c->head, *nx; e; e = nx) {
        nx = e->next;
        rm_lora_free(e->fused);
        free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int rm_fusion_cache_size(const rm_fusion_cache *c) { return c->size; }

static int entry_matches(const fc_entry *e, const rm_lora_plan *p) {
    if (e->n != p->n) return 0;
    for (int i = 0; i < p->n; i++)
        if (e->uid[i] != p->lora[i]->uid || memcmp(&e->weight[i], &p->weight[i], sizeof(float))) return 0;
    return 1;
}

// Drops the least recently used idle entries beyond max_idle (lock held).
static void cache_trim(rm_fusion_cache *c) {
    for (;;) {
        int idle = 0;
        fc_entry **oldest = NULL;
        for (fc_entry **pe = &c->head; *pe; pe = &(*pe)->next)
            if ((*pe)->refs == 0) {
                idle++;
                if (!oldest || (*pe)->last_use < (*oldest)->last_use) oldest = pe;
            }
        if (idle <= c->max_idle) return;
        fc_entry *e = *oldest;
        *oldest = e->next;
        rm_lora_free(e->fused);
        free(e);
        c->size--;
    }
}

// Finds or builds the fused pair of p (the build runs without the lock held).
static int cache_get(rm_fusion_cache *c, rm_lora_plan *p) {
    pthread_mutex_lock(&c->mu);
    for (fc_entry *e = c->head; e; e = e->next)
        if (entry_matches(e, p)) {
            e->refs++;
            e->last_use = ++c->clock;
            p->fused = e->fused;
            pthread_mutex_unlock(&c->mu);
            return RM_OK;
        }
    pthread_mutex_unlock(&c->mu);
    fc_entry *e = calloc(1, sizeof *e);
    if (!e) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = rm_lora_fuse(&e->fused, p->n, p->lora, p->weight);
    if (rc) {
        free(e);
        return rc;
    }
    e->n = p->n;
    for (int i = 0; i < p->n; i++) {
        e->uid[i] = p->lora[i]->uid;
        e->weight[i] = p->weight[i];
    }
    e->refs = 1;
    pthread_mutex_lock(&c->mu);
    e->last_use = ++c->clock;
    e->next = c->head;
    c->head = e;
    c->size++;
    p->fused = e->fused;
    pthread_mutex_unlock(&c->mu);
    return RM_OK;
}

static void cache_put(rm_fusion_cache *c, const rm_lora *fused) {
    pthread_mutex_lock(&c->mu);
    for (fc_entry *e = c->head; e; e = e->next)
        if (e->fused == fused) {
            e->refs--;
            break;
        }
    cache_trim(c);
    pthread_mutex_unlock(&c->mu);
}

// ---------------------------------------------------------------- plans

int rm_lora_plan_init(rm_lora_plan *p, rm_compose_mode mode, int n, rm_lora *const *lora, const float *weight,
                      rm_fusion_cache *cache) {
    memset(p, 0, sizeof *p);
    if (mode == RM_COMPOSE_ROUTER)
        return rm_errorf(RM_EINVAL, "plan: the router composition needs a trained router (--router FILE)");
    if (mode == RM_COMPOSE_MOE || mode == RM_COMPOSE_ARROW)
        return rm_errorf(RM_EINVAL, "plan: the %s composition routes over a fixed adapter set%s", g_mode_names[mode],
                         mode == RM_COMPOSE_MOE
                             ? " with a trained gate (ramole eval --compose moe --gate FILE --pool DIR)"
                             : " (ramole eval --compose arrow --pool DIR)");
    if ((unsigned)mode > RM_COMPOSE_FUSION) return rm_errorf(RM_EINVAL, "plan: bad composition mode %d", (int)mode);
    if (n < 1 || n > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "plan: %d adapters (1..%d)", n, RM_PLAN_MAX);
    if (mode == RM_COMPOSE_SELECTION && n != 1)
        return rm_errorf(RM_EINVAL, "plan: selection takes one adapter, got %d", n);
    for (int i = 0; i < n; i++) {
        if (!lora[i]->base) return rm_errorf(RM_EINVAL, "plan: %s is not bound to a base model", lora[i]->path);
        if (lora[i]->base != lora[0]->base)
            return rm_errorf(RM_EMISMATCH, "plan: %s and %s are bound to different base models", lora[0]->path,
                             lora[i]->path);
        for (int j = 0; j < i; j++)
            if (lora[j] == lora[i]) return rm_errorf(RM_EINVAL, "plan: %s appears twice", lora[i]->path);
        float w = weight ? weight[i] : 1.0f / (float)n;
        if (!isfinite(w)) return rm_errorf(RM_EINVAL, "plan: weight %d is not finite", i);
        p->lora[i] = lora[i];
        p->weight[i] = w;
    }
    p->mode = mode;
    p->n = n;
    if (mode != RM_COMPOSE_FUSION) return RM_OK;
    int rc;
    if (cache) {
        rc = cache_get(cache, p);
        if (!rc) p->cache = cache;
    } else {
        rc = rm_lora_fuse(&p->fused, n, p->lora, p->weight);
    }
    if (rc) memset(p, 0, sizeof *p);
    return rc;
}

int rm_lora_plan_init_router(rm_lora_plan *p, int n, rm_lora *const *lora, const rm_lora *router) {
    int rc = rm_lora_plan_init(p, RM_COMPOSE_MIXTURE, n, lora, NULL, NULL);
    if (rc) return rc;
    if (!router || router->base != lora[0]->base) {
        memset(p, 0, sizeof *p);
        return rm_errorf(RM_EMISMATCH, "plan: the router %s is not bound to the adapters' base model",
                         router ? router->path : "(none)");
    }
    // bound to the same base: every module has the base's shapes (rm_lora_bind checked)
    p->mode = RM_COMPOSE_ROUTER;
    p->router = router;
    return RM_OK;
}

// ---------------------------------------------------------------- plans over a set

static void smear_free(rm_smear_state *s) {
    if (!s) return;
    free(s->sum);
    free(s->off);
    free(s->count);
    free(s->call);
    free(s);
}

// Zeroed running sums for every linear the gate covers.
static int smear_new(const rm_gate *g, rm_smear_state **out) {
    rm_smear_state *s = calloc(1, sizeof *s);
    size_t nl = (size_t)g->n_layer * RM_LIN_COUNT, total = 0;
    if (s) {
        s->off = malloc(nl * sizeof *s->off);
        s->count = calloc(nl, sizeof *s->count);
        s->call = calloc(nl, sizeof *s->call);
    }
    if (!s || !s->off || !s->count || !s->call) {
        smear_free(s);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nl; i++) {
        s->off[i] = g->w[i] ? total : SIZE_MAX;
        if (g->w[i]) total += (size_t)g->base->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0];
    }
    if (!(s->sum = calloc(total ? total : 1, sizeof(float)))) {
        smear_free(s);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    *out = s;
    return RM_OK;
}

// The parts a gate and an arrow plan share: the set and a copy of the mask.
static int set_plan(rm_lora_plan *p, rm_compose_mode mode, const rm_lora_set *set, const uint8_t *excluded) {
    memset(p, 0, sizeof *p);
    if (!set) return rm_errorf(RM_EINVAL, "plan: %s needs an adapter set", g_mode_names[mode]);
    int left = set->n;
    for (int i = 0; excluded && i < set->n; i++) left -= excluded[i] != 0;
    if (left == 0) return rm_errorf(RM_EINVAL, "plan: every adapter of the set is excluded");
    if (excluded) {
        if (!(p->excluded = malloc((size_t)set->n))) return rm_errorf(RM_ENOMEM, "out of memory");
        for (int i = 0; i < set->n; i++) p->excluded[i] = excluded[i] != 0;
    }
    p->mode = mode;
    p->set = set;
    return RM_OK;
}

int rm_lora_plan_init_gate(rm_lora_plan *p, const rm_lora_set *set, const rm_gate *gate, const uint8_t *excluded) {
    int rc = set_plan(p, RM_COMPOSE_MOE, set, excluded);
    if (!rc && !gate) rc = rm_errorf(RM_EINVAL, "plan: moe needs a trained gate");
    if (!rc) rc = rm_gate_check_set(gate, set);
    if (!rc && gate->kind == RM_GATE_SMEAR) rc = smear_new(gate, &p->smear);
    if (rc) {
        rm_lora_plan_free(p);
        return rc;
    }
    p->gate = gate;
    return RM_OK;
}

int rm_lora_plan_init_arrow(rm_lora_plan *p, const rm_lora_set *set, int k, const uint8_t *excluded) {
    int rc = set_plan(p, RM_COMPOSE_ARROW, set, excluded);
    if (!rc && k < 1) rc = rm_errorf(RM_EINVAL, "plan: arrow with k = %d (1 or more)", k);
    if (rc) {
        rm_lora_plan_free(p);
        return rc;
    }
    p->topk = k < set->n ? k : set->n;
    return RM_OK;
}

int rm_lora_plan_init_for_task(rm_lora_plan *p, const rm_lora_set *set, const rm_gate *gate, int k, const char *task,
                               int exclude_own, int *excluded) {
    int own = exclude_own && task ? rm_lora_set_find_task(set, task) : -1;
    uint8_t *mask = own >= 0 ? calloc((size_t)set->n, 1) : NULL;
    if (own >= 0 && !mask) return rm_errorf(RM_ENOMEM, "out of memory");
    if (mask) mask[own] = 1;
    if (excluded) *excluded = own >= 0;
    int rc = gate ? rm_lora_plan_init_gate(p, set, gate, mask) : rm_lora_plan_init_arrow(p, set, k, mask);
    free(mask);
    return rc;
}

void rm_lora_plan_free(rm_lora_plan *p) {
    free(p->excluded);
    smear_free(p->smear);
    if (p->fused) {
        if (p->cache) cache_put(p->cache, p->fused);
        else rm_lora_free(p->fused);
    }
    memset(p, 0, sizeof *p);
}

int rm_lora_plan_terms(const rm_lora_plan *p, const rm_lora **lora, float *weight) {
    if (p->mode == RM_COMPOSE_ROUTER || p->mode == RM_COMPOSE_MOE || p->mode == RM_COMPOSE_ARROW) return 0;
    if (p->mode == RM_COMPOSE_FUSION) {
        lora[0] = p->fused;
        weight[0] = 1.0f;
        return p->fused ? 1 : 0;
    }
    for (int i = 0; i < p->n; i++) {
        lora[i] = p->lora[i];
        weight[i] = p->weight[i];
    }
    return p->n;
}
