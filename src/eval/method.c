// method.c — the methods and their shared resources (see method.h).
#include "eval/method.h"
#include "base/cmaes.h"
#include "base/err.h"
#include "lora/cache.h"
#include "lora/router.h"
#include "retrieve/poolset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const rm_method_names[RM_METHOD_N_NAMED] = {"base",     "oracle",   "selection", "mixture", "fusion",
                                                        "moe-top1", "moe-topk", "moe-soft",  "smear",   "adaptersoup",
                                                        "lorahub",  "arrow",    "ramole"};

int rm_method_named(rm_method *m, const char *name, int k) {
    memset(m, 0, sizeof *m);
    int i = 0;
    while (i < RM_METHOD_N_NAMED && strcmp(rm_method_names[i], name)) i++;
    if (i == RM_METHOD_N_NAMED) {
        char all[256] = "";
        for (int j = 0; j < RM_METHOD_N_NAMED; j++)
            snprintf(all + strlen(all), sizeof all - strlen(all), "%s%s", j ? ", " : "", rm_method_names[j]);
        return rm_errorf(RM_EINVAL, "unknown method '%s' (%s)", name, all);
    }
    m->name = rm_method_names[i];
    m->compose = -1;
    m->k = k;
    m->min_score = -INFINITY;
    m->lorahub = rm_lorahub_default_params();
    static const rm_method_kind kinds[RM_METHOD_N_NAMED] = {
        RM_METHOD_NONE,    RM_METHOD_ORACLE, RM_METHOD_RETRIEVE, RM_METHOD_RETRIEVE, RM_METHOD_RETRIEVE,
        RM_METHOD_GATE,    RM_METHOD_GATE,   RM_METHOD_GATE,     RM_METHOD_GATE,     RM_METHOD_KEYS,
        RM_METHOD_LORAHUB, RM_METHOD_ARROW,  RM_METHOD_RETRIEVE};
    m->kind = kinds[i];
    if (!strcmp(name, "oracle") || !strcmp(name, "selection")) m->compose = RM_COMPOSE_SELECTION, m->k = 1;
    else if (!strcmp(name, "mixture")) m->compose = RM_COMPOSE_MIXTURE;
    else if (!strcmp(name, "fusion") || !strcmp(name, "adaptersoup")) m->compose = RM_COMPOSE_FUSION;
    else if (!strcmp(name, "ramole")) m->compose = RM_COMPOSE_ROUTER;
    return RM_OK;
}

// The gate kind a named gate method takes, or -1.
static int named_gate_kind(const char *name) {
    static const char *const n[4] = {"moe-soft", "moe-topk", "moe-top1", "smear"};
    for (int i = 0; name && i < 4; i++)
        if (!strcmp(name, n[i])) return i; // the order of rm_gate_kind
    return -1;
}

static const char *method_label(const rm_method *m) {
    static const char *const kinds[] = {"the base model", "the oracle", "retrieval", "adaptersoup",
                                        "fixed adapters", "a gate",     "arrow",     "lorahub"};
    return m->name ? m->name : kinds[m->kind];
}

int rm_method_needs_pool(const rm_method *m) { return m->kind != RM_METHOD_NONE && m->kind != RM_METHOD_FIXED; }

int rm_method_check(const rm_method *m) {
    const char *who = method_label(m);
    int per_request = m->kind == RM_METHOD_ORACLE || m->kind == RM_METHOD_RETRIEVE || m->kind == RM_METHOD_FIXED;
    if (per_request && (m->compose < -1 || m->compose > RM_COMPOSE_ROUTER))
        return rm_errorf(RM_EINVAL, "%s: composition %s does not take per-request adapters", who,
                         rm_compose_name(m->compose));
    if ((per_request && m->compose == RM_COMPOSE_ROUTER) != (m->router != NULL))
        return rm_errorf(RM_EINVAL, "%s: %s", who,
                         m->router ? "a router goes with the router composition"
                                   : "the router composition needs a router file (--router FILE)");
    if ((m->kind == RM_METHOD_GATE) != (m->gate != NULL))
        return rm_errorf(RM_EINVAL, "%s: %s", who,
                         m->gate ? "a gate file goes with a gate method" : "needs a gate file (--gate FILE)");
    if ((m->kind == RM_METHOD_RETRIEVE || m->kind == RM_METHOD_KEYS) && (m->k < 1 || m->k > RM_PLAN_MAX))
        return rm_errorf(RM_EINVAL, "%s: k = %d (1..%d adapters a request)", who, m->k, RM_PLAN_MAX);
    if (m->kind == RM_METHOD_RETRIEVE && m->compose == RM_COMPOSE_SELECTION && m->k != 1)
        return rm_errorf(RM_EINVAL, "%s: selection takes one adapter, not %d", who, m->k);
    if (m->kind == RM_METHOD_ARROW && m->k < 1) return rm_errorf(RM_EINVAL, "%s: k = %d (1 or more)", who, m->k);
    if (m->kind == RM_METHOD_FIXED && (m->n_paths < 1 || m->n_paths > RM_PLAN_MAX))
        return rm_errorf(RM_EINVAL, "%s: %d adapters (1..%d)", who, m->n_paths, RM_PLAN_MAX);
    if (m->exclude_own && m->kind == RM_METHOD_ORACLE)
        return rm_errorf(RM_EINVAL,
                         "the oracle has no out-of-distribution form: its adapter is the request's own task's");
    if (m->exclude_own && !rm_method_needs_pool(m))
        return rm_errorf(RM_EINVAL, "%s: leaving out the request's own adapter applies to the pool's adapters only",
                         who);
    const rm_lorahub_params *h = &m->lorahub;
    if (m->kind == RM_METHOD_LORAHUB &&
        (h->n_examples < 1 || h->n_candidates < 1 || h->n_candidates > RM_CMAES_MAX_DIM || h->iterations < 1 ||
         !(h->l1 >= 0) || !(h->sigma > 0) || !(h->bound > 0)))
        return rm_errorf(RM_EINVAL, "%s: %d examples, %d candidates (1..%d), %d iterations, l1 %g, sigma %g, bound %g",
                         who, h->n_examples, h->n_candidates, RM_CMAES_MAX_DIM, h->iterations, h->l1, h->sigma,
                         h->bound);
    return RM_OK;
}

// ---------------------------------------------------------------- the environment

typedef struct named_router {
    char *path;
    rm_lora *router;
} named_router;
typedef struct named_gate {
    char *path;
    rm_gate *gate;
    rm_lora_set *set;
} named_gate;

struct rm_eval_env {
    rm_llama *m;
    rm_pool *pool;
    rm_threadpool *tp;
    rm_run_params p;
    rm_lora_cache cache;   // every adapter, loaded once
    rm_adapter_info *list; // the pool's adapters (listed on first need)
    int n_list, listed;
    named_router *routers;
    int n_routers;
    named_gate *gates;
    int n_gates;
    rm_lora_set *all;        // Arrow's set: every pool adapter with weights
    rm_fusion_cache *fusion; // fused pairs shared by requests with the same adapters
    rm_eval_lorahub *lh;
    int n_lh;
};

rm_run_params rm_run_default_params(void) {
    return (rm_run_params){.tmpl = NULL, .max_new = 64, .ctx = 0, .slots = 8, .rows = 512};
}

int rm_eval_env_new(rm_eval_env **out, rm_llama *m, rm_pool *pool, rm_threadpool *tp, const rm_run_params *p) {
    *out = NULL;
    rm_eval_env *e = calloc(1, sizeof *e);
    if (!e || !(e->fusion = rm_fusion_cache_new(64))) {
        free(e);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    e->m = m, e->pool = pool, e->tp = tp, e->p = *p;
    e->cache.m = m;
    if (e->p.ctx <= 0) e->p.ctx = m->hp.n_ctx_train > 0 && m->hp.n_ctx_train < 2048 ? m->hp.n_ctx_train : 2048;
    *out = e;
    return RM_OK;
}

static void lorahub_entry_free(rm_eval_lorahub *h) {
    free(h->task);
    rm_lorahub_free_names(h->names, h->n);
    rm_lorahub_result_free(&h->res);
    rm_lora_free(h->merged);
}

void rm_eval_env_free(rm_eval_env *e) {
    if (!e) return;
    for (int i = 0; i < e->n_routers; i++) {
        free(e->routers[i].path);
        rm_lora_free(e->routers[i].router);
    }
    free(e->routers);
    for (int i = 0; i < e->n_gates; i++) {
        free(e->gates[i].path);
        rm_gate_free(e->gates[i].gate);
        rm_lora_set_free(e->gates[i].set);
    }
    free(e->gates);
    rm_lora_set_free(e->all);
    for (int i = 0; i < e->n_lh; i++) lorahub_entry_free(&e->lh[i]);
    free(e->lh);
    rm_fusion_cache_free(e->fusion);
    rm_lora_cache_free(&e->cache); // after the sets and the fused pairs that refer to its adapters
    if (e->list) rm_pool_free_list(e->list, e->n_list);
    free(e);
}

const rm_run_params *rm_eval_env_params(const rm_eval_env *e) { return &e->p; }
rm_llama *rm_eval_env_model(const rm_eval_env *e) { return e->m; }
rm_threadpool *rm_eval_env_threads(const rm_eval_env *e) { return e->tp; }

static int env_list(rm_eval_env *e) {
    if (e->listed) return RM_OK;
    if (!e->pool) return rm_errorf(RM_EINVAL, "this method needs a pool (--pool DIR)");
    int rc = rm_pool_list(e->pool, &e->list, &e->n_list);
    if (!rc) e->listed = 1;
    return rc;
}

// The adapter's task as eval reads it: its task, or else its name.
static const char *task_or_name(const char *task, const char *name) { return task && *task ? task : name; }

// The names of the pool's adapters of task (rm_pool_task_entries) into ex (room for the pool); returns how many.
static int own_names(const rm_eval_env *e, const char *task, const char **ex, int *idx) {
    int n = rm_pool_task_entries(e->list, e->n_list, task, idx);
    for (int i = 0; i < n; i++) ex[i] = e->list[idx[i]].name;
    return n;
}

static const rm_lora *env_router(rm_eval_env *e, const char *path, int *rc) {
    for (int i = 0; i < e->n_routers; i++)
        if (!strcmp(e->routers[i].path, path)) return e->routers[i].router;
    named_router *r = realloc(e->routers, (size_t)(e->n_routers + 1) * sizeof *r);
    if (!r) {
        *rc = rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    e->routers = r;
    named_router *x = &e->routers[e->n_routers];
    memset(x, 0, sizeof *x);
    if ((*rc = rm_router_load(&x->router, path, e->m))) return NULL;
    if (!(x->path = strdup(path))) {
        rm_lora_free(x->router);
        *rc = rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    e->n_routers++;
    return x->router;
}

static named_gate *env_gate_of(rm_eval_env *e, const char *path, int *rc) {
    for (int i = 0; i < e->n_gates; i++)
        if (!strcmp(e->gates[i].path, path)) return &e->gates[i];
    named_gate *g = realloc(e->gates, (size_t)(e->n_gates + 1) * sizeof *g);
    if (!g) {
        *rc = rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    e->gates = g;
    named_gate *x = &e->gates[e->n_gates];
    memset(x, 0, sizeof *x);
    if ((*rc = rm_pool_load_gate_shared(e->pool, e->m, path, &e->cache, &x->gate, &x->set))) return NULL;
    if (!(x->path = strdup(path))) {
        rm_gate_free(x->gate);
        rm_lora_set_free(x->set);
        *rc = rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    e->n_gates++;
    return x;
}

// The pool adapter called name (with weights), loaded once.
static int env_adapter(rm_eval_env *e, const char *name, rm_lora **out) {
    for (int i = 0; i < e->n_list; i++)
        if (!strcmp(e->list[i].name, name) && e->list[i].weights && *e->list[i].weights)
            return rm_lora_cache_get(&e->cache, name, e->list[i].weights, out);
    return rm_errorf(RM_ENOTFOUND, "the pool has no adapter with weights called '%s'", name);
}

// ---------------------------------------------------------------- LoraHub per task

static int same_search(const rm_lorahub_params *a, const rm_lorahub_params *b) {
    return a->n_examples == b->n_examples && a->n_candidates == b->n_candidates && a->iterations == b->iterations &&
           a->l1 == b->l1 && a->sigma == b->sigma && a->bound == b->bound && a->seed == b->seed;
}

const rm_eval_lorahub *rm_eval_env_lorahub(const rm_eval_env *e, const rm_method *method, const char *task) {
    for (int i = 0; i < e->n_lh; i++)
        if (!strcmp(e->lh[i].task, task) && e->lh[i].exclude_own == (method->exclude_own != 0) &&
            same_search(&e->lh[i].params, &method->lorahub))
            return &e->lh[i];
    return NULL;
}

// LoraHub's search for one task: its examples, candidates, the weights and the merged adapter.
static int lorahub_task(rm_eval_env *e, const rm_method *method, const char *task, rm_eval_lorahub *h) {
    const rm_lorahub_params *p = &method->lorahub;
    memset(h, 0, sizeof *h);
    h->exclude_own = method->exclude_own != 0;
    h->params = *p;
    if (!(h->task = strdup(task))) return rm_errorf(RM_ENOMEM, "out of memory");
    if (!e->p.task_data)
        return rm_errorf(RM_EINVAL, "lorahub needs the tasks' training data (a directory of NAME.jsonl)");
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s.jsonl", e->p.task_data, task) >= sizeof path)
        return rm_errorf(RM_EINVAL, "lorahub: the path of task '%s' is too long", task);
    rm_tdata ex = {0};
    int rc = rm_lorahub_examples(path, e->p.tmpl, e->m, p->n_examples, p->seed, e->p.ctx, &ex);
    const char **inputs = NULL, **excl = calloc((size_t)e->n_list + 1, sizeof *excl);
    int *idx = calloc((size_t)e->n_list + 1, sizeof *idx), n_ex = 0;
    rm_lora **cands = NULL;
    rm_lorahub *hub = NULL;
    if (!rc && (!excl || !idx)) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (!rc && !(inputs = calloc((size_t)ex.n, sizeof *inputs))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < ex.n; i++) inputs[i] = ex.ex[i].inputs;
    if (!rc && method->exclude_own) n_ex = own_names(e, task, excl, idx);
    if (!rc) rc = rm_lorahub_candidates(e->pool, inputs, ex.n, p->n_candidates, excl, n_ex, &h->names, &h->n);
    if (!rc && h->n == 0) rc = rm_errorf(RM_ENOTFOUND, "lorahub: no candidate adapters for task '%s'", task);
    if (!rc && !(cands = calloc((size_t)h->n, sizeof *cands))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < h->n; i++) rc = env_adapter(e, h->names[i], &cands[i]);
    if (!rc) rc = rm_lorahub_new(&hub, e->m, e->tp, &ex, h->n, cands);
    if (!rc) rc = rm_lorahub_search(hub, p, &h->res);
    if (!rc) rc = rm_lora_fuse(&h->merged, h->n, cands, h->res.w);
    if (rc) rm_error_prefix(rc, "lorahub, task '%s'", task);
    rm_lorahub_free(hub);
    free(cands);
    free(inputs);
    free(excl);
    free(idx);
    rm_tdata_free(&ex);
    return rc;
}

static int prepare_lorahub(rm_eval_env *e, const rm_method *method, const char *const *tasks, int n_tasks) {
    int todo = 0, done = 0, rc = RM_OK;
    for (int t = 0; t < n_tasks; t++) todo += !rm_eval_env_lorahub(e, method, tasks[t]);
    if (e->p.progress && todo) e->p.progress(e->p.user, "lorahub", 0, todo);
    for (int t = 0; !rc && t < n_tasks; t++) {
        if (rm_eval_env_lorahub(e, method, tasks[t])) continue;
        rm_eval_lorahub *lh = realloc(e->lh, (size_t)(e->n_lh + 1) * sizeof *lh);
        if (!lh) return rm_errorf(RM_ENOMEM, "out of memory");
        e->lh = lh;
        if ((rc = lorahub_task(e, method, tasks[t], &e->lh[e->n_lh]))) lorahub_entry_free(&e->lh[e->n_lh]);
        else e->n_lh++;
        if (e->p.progress) e->p.progress(e->p.user, "lorahub", ++done, todo);
    }
    return rc;
}

int rm_eval_env_prepare(rm_eval_env *e, const rm_method *method, const char *const *tasks, int n_tasks) {
    int rc = rm_method_check(method);
    if (!rc && rm_method_needs_pool(method)) rc = env_list(e);
    if (!rc && method->router) env_router(e, method->router, &rc);
    if (!rc && method->gate) {
        named_gate *g = env_gate_of(e, method->gate, &rc);
        int want = named_gate_kind(method->name);
        if (g && want >= 0 && (int)g->gate->kind != want)
            rc = rm_errorf(RM_EINVAL, "%s: a %s gate, not the %s gate method '%s' needs", method->gate,
                           rm_gate_kind_name(g->gate->kind), rm_gate_kind_name((rm_gate_kind)want), method->name);
    }
    if (!rc && method->kind == RM_METHOD_ARROW && !e->all)
        rc = rm_pool_load_set_all_shared(e->pool, e->m, &e->cache, &e->all);
    if (!rc && method->kind == RM_METHOD_LORAHUB) rc = prepare_lorahub(e, method, tasks, n_tasks);
    return rc;
}

// ---------------------------------------------------------------- a request's adapters

void rm_eval_choice_free(rm_eval_choice *c) {
    rm_pick_free(&c->pick);
    free(c->names);
    memset(c, 0, sizeof *c);
}

static const rm_lora_set *method_set(const rm_eval_env *e, const rm_method *method, const rm_gate **gate) {
    *gate = NULL;
    if (method->kind == RM_METHOD_ARROW) return e->all;
    for (int i = 0; i < e->n_gates; i++)
        if (!strcmp(e->gates[i].path, method->gate)) {
            *gate = e->gates[i].gate;
            return e->gates[i].set;
        }
    return NULL;
}

// The adapter of the pool called name: its task, or else its name.
static const char *pool_task_of(const rm_eval_env *e, const char *name) {
    for (int i = 0; i < e->n_list; i++)
        if (!strcmp(e->list[i].name, name)) return task_or_name(e->list[i].task, name);
    return name;
}

int rm_eval_choose(rm_eval_env *e, const rm_method *method, const rm_eval_req *r, rm_eval_choice *c) {
    memset(c, 0, sizeof *c);
    int rc = RM_OK, n_ex = 0;
    const char **ex = NULL;
    int *idx = NULL;
    if (method->exclude_own) {
        ex = calloc((size_t)e->n_list + 1, sizeof *ex);
        idx = calloc((size_t)e->n_list + 1, sizeof *idx);
        if (!ex || !idx) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else n_ex = own_names(e, r->task, ex, idx);
        c->own_excluded = n_ex > 0;
    }
    const rm_gate *gate;
    const rm_lora_set *set;
    const rm_eval_lorahub *lh;
    switch (method->kind) {
    case RM_METHOD_NONE: break;
    case RM_METHOD_ORACLE: {
        const rm_adapter_info *a = rm_pool_task_entry(e->list, e->n_list, r->task);
        if (!a) rc = rm_errorf(RM_ENOTFOUND, "the pool has no adapter with weights for task '%s'", r->task);
        else rc = rm_pick_push(&c->pick, a->name, a->weights, task_or_name(a->task, a->name), 1.0f);
        break;
    }
    case RM_METHOD_RETRIEVE:
        rc = rc ? rc : rm_pool_pick_excluding(e->pool, r->inputs, method->k, method->min_score, ex, n_ex, &c->pick);
        break;
    case RM_METHOD_KEYS: rc = rc ? rc : rm_pool_pick_keys(e->pool, r->inputs, method->k, ex, n_ex, &c->pick); break;
    case RM_METHOD_FIXED:
        for (int i = 0; !rc && i < method->n_paths; i++)
            rc = rm_pick_push(&c->pick, method->paths[i], method->paths[i], NULL, 1.0f);
        break;
    case RM_METHOD_GATE:
    case RM_METHOD_ARROW:
        if (!(set = method_set(e, method, &gate))) {
            rc = rm_errorf(RM_EINVAL, "eval: the method's set is not loaded");
            break;
        }
        int own = method->exclude_own ? rm_lora_set_find_task(set, r->task) : -1;
        c->own_excluded = own >= 0;
        if (!rc && !(c->names = calloc((size_t)set->n, sizeof *c->names))) rc = rm_errorf(RM_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < set->n; i++)
            if (i != own) {
                c->names[c->n_names++] = set->name[i];
                c->own_used |= !strcmp(task_or_name(set->task[i], set->name[i]), r->task);
            }
        break;
    case RM_METHOD_LORAHUB:
        if (!(lh = rm_eval_env_lorahub(e, method, r->task))) {
            rc = rm_errorf(RM_EINVAL, "eval: lorahub has not been prepared for task '%s'", r->task);
            break;
        }
        if (!rc && !(c->names = calloc((size_t)lh->n + 1, sizeof *c->names)))
            rc = rm_errorf(RM_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < lh->n; i++) {
            c->names[c->n_names++] = lh->names[i];
            c->own_used |= !strcmp(pool_task_of(e, lh->names[i]), r->task);
        }
        c->weights = lh->res.w;
        break;
    }
    if (!rc && c->pick.n) { // the adapters of a pick, as names
        if (!(c->names = calloc((size_t)c->pick.n, sizeof *c->names))) rc = rm_errorf(RM_ENOMEM, "out of memory");
        for (int i = 0; !rc && i < c->pick.n; i++) {
            c->names[c->n_names++] = c->pick.name[i];
            c->own_used |= !strcmp(c->pick.task[i], r->task);
        }
    }
    free(ex);
    free(idx);
    if (rc) rm_eval_choice_free(c);
    return rc;
}

int rm_eval_plan(rm_eval_env *e, const rm_method *method, const rm_eval_req *r, const rm_eval_choice *c,
                 rm_lora_plan *plan, int *has_plan) {
    memset(plan, 0, sizeof *plan);
    *has_plan = 0;
    const rm_gate *gate;
    const rm_lora_set *set;
    const rm_eval_lorahub *lh;
    int rc;
    switch (method->kind) {
    case RM_METHOD_NONE: return RM_OK;
    case RM_METHOD_GATE:
    case RM_METHOD_ARROW:
        if (!(set = method_set(e, method, &gate))) return rm_errorf(RM_EINVAL, "eval: the method's set is not loaded");
        rc = rm_lora_plan_init_for_task(plan, set, gate, method->k, r->task, method->exclude_own, NULL);
        break;
    case RM_METHOD_LORAHUB:
        if (!(lh = rm_eval_env_lorahub(e, method, r->task)))
            return rm_errorf(RM_EINVAL, "eval: lorahub has not been prepared for task '%s'", r->task);
        rc = rm_lora_plan_init(plan, RM_COMPOSE_SELECTION, 1, (rm_lora *const *)&lh->merged, NULL, NULL);
        break;
    default: {
        const rm_pick *pk = &c->pick;
        if (pk->n == 0) return RM_OK; // nothing retrieved: the base model
        rm_lora *ls[RM_PLAN_MAX];
        for (int i = 0; i < pk->n; i++)
            if ((rc = rm_lora_cache_get(&e->cache, pk->name[i], pk->weights[i], &ls[i]))) return rc;
        int mode = method->kind == RM_METHOD_KEYS ? RM_COMPOSE_FUSION
                   : method->compose >= 0         ? method->compose
                   : pk->n == 1                   ? RM_COMPOSE_SELECTION
                                                  : RM_COMPOSE_MIXTURE;
        if (mode == RM_COMPOSE_ROUTER) {
            const rm_lora *router = env_router(e, method->router, &rc);
            rc = router ? rm_lora_plan_init_router(plan, pk->n, ls, router) : rc;
        } else {
            rc = rm_lora_plan_init(plan, (rm_compose_mode)mode, pk->n, ls, NULL,
                                   mode == RM_COMPOSE_FUSION ? e->fusion : NULL);
        }
    }
    }
    *has_plan = rc == RM_OK;
    return rc;
}
