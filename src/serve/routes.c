// routes.c — the HTTP API of `ramole serve` (README "HTTP API"): which path
// does what, the requests' validation, retrieval and adapter loading (on a
// worker, never on an I/O thread), and the uploads.
#include "serve/server_impl.h"
#include "base/err.h"
#include "base/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_ADAPTERS = RM_PLAN_MAX };

static void reply_json(rm_http_req *r, int status, const rm_sb *b) {
    if (b->oom) rm_http_reply_error(r, 500, "out of memory");
    else rm_http_reply(r, status, "application/json", b->buf ? b->buf : "", b->len);
}

// ---- completions (a worker prepares them, the engine thread answers) -------------

// The HTTP status of a pick's result: 0, 404 (no such adapter), 400 (one
// without weights, too many), 500.
static int pick_status(int rc) {
    return rc == RM_OK ? 0 : rc == RM_ENOTFOUND ? 404 : rc == RM_EINVAL || rc == RM_EFULL ? 400 : 500;
}

// The adapter called name from weights, bound to the model: from the cache,
// or loaded (without holding the cache's lock: a slow load blocks no one).
int server_adapter_get(rm_server *s, const char *name, const char *weights, rm_lora **out) {
    pthread_mutex_lock(&s->cache_mu);
    *out = rm_lora_cache_find(&s->cache, name, weights);
    pthread_mutex_unlock(&s->cache_mu);
    if (*out) return RM_OK;
    rm_lora *l = NULL;
    int rc = rm_lora_load_for(&l, weights, s->m);
    if (rc) return rm_error_prefix(rc, "adapter '%s' refused", name);
    pthread_mutex_lock(&s->cache_mu);
    if ((*out = rm_lora_cache_find(&s->cache, name, weights))) rm_lora_free(l); // another worker was quicker
    else if (!(rc = rm_lora_cache_put(&s->cache, name, weights, l))) *out = l;
    atomic_store(&s->n_loaded, s->cache.n);
    pthread_mutex_unlock(&s->cache_mu);
    return rc;
}

// Fills j->pick from "adapters": [names] or "retrieve": k (pool lock held);
// 0 or an HTTP status (message set, j->param the field).
static int choose(rm_server *s, job *j, const rm_json *req, const char *query) {
    const rm_json *names = rm_json_get(req, "adapters"), *kv = rm_json_get(req, "retrieve");
    if (kv && kv->type != RM_JSON_NULL && (kv->type != RM_JSON_NUMBER || !kv->is_int))
        return snprintf(j->param, sizeof j->param, "retrieve"), rm_errorf(RM_EINVAL, "\"retrieve\" must be an integer"), 400;
    if (names) snprintf(j->param, sizeof j->param, "adapters");
    else if (kv) snprintf(j->param, sizeof j->param, "retrieve");
    int64_t k = rm_json_get_int(req, "retrieve", 0);
    const char *model = rm_json_get_str(req, "model", NULL);
    if (!names && k == 0 && model && s->pool && rm_pool_id(s->pool, model) >= 0) // OpenAI style: the adapter as the model
        return snprintf(j->param, sizeof j->param, "model"), pick_status(rm_pool_pick_named(s->pool, model, &j->pick));
    if (!names && k == 0) return 0;
    if (!s->pool) return rm_errorf(RM_EINVAL, "this server has no adapter pool (start it with --pool DIR)"), 400;
    if (names) {
        if (names->type != RM_JSON_ARRAY || names->n > MAX_ADAPTERS)
            return rm_errorf(RM_EINVAL, "\"adapters\" must be an array of at most %d names", MAX_ADAPTERS), 400;
        for (size_t i = 0; i < names->n; i++) {
            const rm_json *v = &names->items[i];
            if (v->type != RM_JSON_STRING) return rm_errorf(RM_EINVAL, "\"adapters\" must hold names"), 400;
            int code = pick_status(rm_pool_pick_named(s->pool, v->str, &j->pick));
            if (code) return code;
        }
        return 0;
    }
    if (k < 0 || k > MAX_ADAPTERS) return rm_errorf(RM_EINVAL, "\"retrieve\" must be 0..%d", MAX_ADAPTERS), 400;
    float min_score = (float)rm_json_get_num(req, "min_score", -INFINITY);
    if (rm_pool_pick(s->pool, query, (int)k, min_score, &j->pick)) return 500;
    return 0;
}

int routes_choose_adapters(rm_server *s, job *j, const rm_json *req, const char *query) {
    pthread_mutex_lock(&s->pool_mu);
    int rc = choose(s, j, req, query);
    pthread_mutex_unlock(&s->pool_mu);
    if (!rc) j->param[0] = 0;
    return rc;
}

// A worker's part of POST /v1/completions and /v1/chat/completions.
static void completion_work(void *arg) {
    job *j = arg;
    size_t len;
    const char *body = rm_http_body(j->r, &len);
    rm_json *req = NULL;
    j->chat = !strcmp(rm_http_path(j->r), "/v1/chat/completions");
    j->created = (long long)time(NULL);
    int code = rm_json_parse(body, len, "request body", &req) ? 400 : openai_prepare(j, req);
    rm_json_free(req);
    if (code) {
        openai_reply_error(j, code, rm_last_error());
        job_free(j);
        return;
    }
    atomic_fetch_add(&j->s->n_completions, 1);
    server_submit(j->s, j);
}

// ---- adapters and models ---------------------------------------------------------

static void list_work(void *arg) {
    job *j = arg;
    rm_server *s = j->s;
    if (!s->pool) {
        rm_http_reply_error(j->r, 400, "this server has no adapter pool (start it with --pool DIR)");
        return job_free(j);
    }
    rm_adapter_info *v;
    int n;
    pthread_mutex_lock(&s->pool_mu);
    int rc = rm_pool_list(s->pool, &v, &n);
    pthread_mutex_unlock(&s->pool_mu);
    if (rc) {
        rm_http_reply_error(j->r, 500, rm_last_error());
        return job_free(j);
    }
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "{\"object\": \"list\", \"data\": [");
    for (int i = 0; i < n; i++) {
        const char *f[4][2] = {{"name", v[i].name}, {"task", v[i].task}, {"domain", v[i].domain}, {"weights", v[i].weights}};
        rm_sb_puts(&b, i ? ", {" : "{");
        for (int k = 0; k < 4; k++) {
            rm_sb_printf(&b, "%s\"%s\": ", k ? ", " : "", f[k][0]);
            if (f[k][1]) rm_sb_json_str(&b, f[k][1], strlen(f[k][1]));
            else rm_sb_puts(&b, "null");
        }
        rm_sb_printf(&b, ", \"n_samples\": %d}", v[i].n_samples);
    }
    rm_sb_puts(&b, "]}\n");
    rm_pool_free_list(v, n);
    reply_json(j->r, 200, &b);
    rm_sb_free(&b);
    job_free(j);
}

// What OpenAI clients ask first: the base model, and each adapter with
// weights as a model of its own (vLLM's LoRA modules).
static void models_work(void *arg) {
    job *j = arg;
    rm_server *s = j->s;
    const char *base = s->p.model;
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "{\"object\": \"list\", \"data\": [{\"id\": ");
    rm_sb_json_str(&b, base, strlen(base));
    rm_sb_puts(&b, ", \"object\": \"model\", \"owned_by\": \"ramole\"}");
    rm_adapter_info *list = NULL;
    int n = 0;
    pthread_mutex_lock(&s->pool_mu);
    int rc = s->pool ? rm_pool_list(s->pool, &list, &n) : RM_ENOTFOUND;
    pthread_mutex_unlock(&s->pool_mu);
    for (int i = 0; !rc && i < n; i++) {
        if (!list[i].weights || !*list[i].weights) continue;
        rm_sb_puts(&b, ", {\"id\": ");
        rm_sb_json_str(&b, list[i].name, strlen(list[i].name));
        rm_sb_puts(&b, ", \"object\": \"model\", \"owned_by\": \"ramole\", \"parent\": ");
        rm_sb_json_str(&b, base, strlen(base));
        rm_sb_puts(&b, "}");
    }
    if (!rc) rm_pool_free_list(list, n);
    rm_sb_puts(&b, "]}\n");
    reply_json(j->r, 200, &b);
    rm_sb_free(&b);
    job_free(j);
}

// Upload: {"name", "samples": [texts], "weights": path, "task"?, "domain"?}.
// The adapter is loaded and checked against the model before the pool stores
// it; a bad one is refused with the reason and nothing changes.
static int upload(rm_server *s, const rm_json *req, rm_sb *b) {
    if (!s->pool) return rm_errorf(RM_EINVAL, "this server has no adapter pool (start it with --pool DIR)"), 400;
    const char *name = rm_json_get_str(req, "name", NULL), *weights = rm_json_get_str(req, "weights", NULL);
    const rm_json *samples = rm_json_get(req, "samples");
    if (!name || !*name || !weights) return rm_errorf(RM_EINVAL, "\"name\" and \"weights\" (strings) are required"), 400;
    if (!samples || samples->type != RM_JSON_ARRAY || samples->n == 0 || samples->n > 1000)
        return rm_errorf(RM_EINVAL, "\"samples\" must be an array of 1..1000 sample inputs"), 400;
    for (size_t i = 0; i < samples->n; i++)
        if (samples->items[i].type != RM_JSON_STRING) return rm_errorf(RM_EINVAL, "\"samples\" must hold strings"), 400;
    pthread_mutex_lock(&s->pool_mu);
    int taken = rm_pool_id(s->pool, name) >= 0;
    pthread_mutex_unlock(&s->pool_mu);
    if (taken) return rm_errorf(RM_EINVAL, "an adapter with this name is already in the pool"), 400;
    rm_lora *loaded; // loaded, checked against the model and kept for its first request
    int rc = server_adapter_get(s, name, weights, &loaded);
    if (rc) return 400;
    const char **in = malloc(samples->n * sizeof *in);
    if (!in) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
    for (size_t i = 0; i < samples->n; i++) in[i] = samples->items[i].str;
    rm_adapter_info info = {.name = name, .weights = weights, .task = rm_json_get_str(req, "task", NULL),
                            .domain = rm_json_get_str(req, "domain", NULL), .base_model = s->p.model};
    int64_t id = -1;
    pthread_mutex_lock(&s->pool_mu);
    rc = rm_pool_add(s->pool, &info, in, NULL, (int)samples->n, &id);
    int size = rm_pool_size(s->pool);
    pthread_mutex_unlock(&s->pool_mu);
    free(in);
    if (rc) return 400;
    atomic_store(&s->pool_size, size);
    atomic_fetch_add(&s->n_uploads, 1);
    rm_sb_printf(b, "{\"id\": %lld, \"name\": ", (long long)id);
    rm_sb_json_str(b, name, strlen(name));
    rm_sb_printf(b, ", \"pool_size\": %d}\n", size);
    return 0;
}

static void upload_work(void *arg) {
    job *j = arg;
    size_t len;
    const char *body = rm_http_body(j->r, &len);
    rm_json *req = NULL;
    rm_sb b;
    rm_sb_init(&b);
    int code = rm_json_parse(body, len, "request body", &req) ? 400 : 0;
    if (!code && req->type != RM_JSON_OBJECT) code = 400, rm_errorf(RM_EINVAL, "the request body must be a JSON object");
    if (!code) code = upload(j->s, req, &b);
    rm_json_free(req);
    if (code) rm_http_reply_error(j->r, code, rm_last_error());
    else reply_json(j->r, 201, &b);
    rm_sb_free(&b);
    job_free(j);
}

// ---- dispatch --------------------------------------------------------------------

static void health(rm_server *s, rm_http_req *r) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_printf(&b, "{\"status\": \"ok\", \"adapters\": %d, \"model\": ", atomic_load(&s->pool_size));
    rm_sb_json_str(&b, s->p.model, strlen(s->p.model));
    rm_sb_puts(&b, "}\n");
    reply_json(r, 200, &b);
    rm_sb_free(&b);
}

typedef struct route {
    const char *method, *path;
    workq_fn work;   // done on a worker (slow: the upload queue)
    int slow;
    void (*now)(rm_server *s, rm_http_req *r); // quick: answered on the I/O thread
} route;

static const route k_routes[] = {
    {"POST", "/v1/completions", completion_work, 0, NULL},
    {"POST", "/v1/chat/completions", completion_work, 0, NULL},
    {"POST", "/v1/adapters", upload_work, 1, NULL},
    {"GET", "/v1/adapters", list_work, 0, NULL},
    {"GET", "/v1/models", models_work, 0, NULL},
    {"GET", "/health", NULL, 0, health},
    {"GET", "/metrics", NULL, 0, metrics_answer},
};

void routes_handle(void *user, rm_http_req *r) {
    rm_server *s = user;
    const char *path = rm_http_path(r), *method = rm_http_method(r);
    const route *hit = NULL;
    int path_known = 0;
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        if (strcmp(k_routes[i].path, path)) continue;
        path_known = 1;
        if (!strcmp(k_routes[i].method, method)) hit = &k_routes[i];
    }
    if (!hit && path_known) {
        char msg[160];
        snprintf(msg, sizeof msg, "%.16s is not allowed on %.100s", method, path);
        return rm_http_reply_error(r, 405, msg);
    }
    if (!hit)
        return rm_http_reply_error(r, 404, "unknown path (POST /v1/completions, POST /v1/chat/completions, GET|POST /v1/adapters, "
                                           "GET /v1/models, GET /health, GET /metrics)");
    if (hit->now) return hit->now(s, r);
    job *j = calloc(1, sizeof *j);
    if (!j) return rm_http_reply_error(r, 500, "out of memory");
    j->s = s, j->r = r, j->id = atomic_fetch_add(&s->next_id, 1) + 1;
    if (workq_push(hit->slow ? &s->slow : &s->fast, hit->work, j)) {
        free(j);
        rm_http_reply_error(r, 503, "out of memory");
    }
}
