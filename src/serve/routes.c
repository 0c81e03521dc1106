// routes.c — the HTTP API of `ramole serve` (README "HTTP API"): which path
// does what, the requests' validation, retrieval and adapter loading (on a
// worker, never on an I/O thread), and the uploads.
#include "serve/server_impl.h"
#include "serve/web.h"
#include "base/err.h"
#include "base/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

int server_load_adapter(rm_server *s, const char *weights, rm_lora **out) {
    int rc = rm_lora_load_for(out, weights, s->m);
    if (!rc && s->p.lora_mirror && (rc = s->p.lora_mirror == 2 ? rm_lora_make_q8(*out) : rm_lora_make_f16(*out))) {
        rm_lora_free(*out);
        *out = NULL;
    }
    return rc;
}

// The adapter called name from weights, bound to the model and held: from
// the cache, or loaded (without holding the cache's lock: a slow load blocks
// no one). A load past the cache's budget evicts adapters nobody holds.
int server_adapter_get(rm_server *s, const char *name, const char *weights, rm_lora **out) {
    pthread_mutex_lock(&s->cache_mu);
    *out = rm_lora_cache_find(&s->cache, name, weights);
    pthread_mutex_unlock(&s->cache_mu);
    if (*out) return RM_OK;
    rm_lora *l = NULL;
    double t0 = rm_http_now();
    int rc = server_load_adapter(s, weights, &l);
    if (rc) return rm_error_prefix(rc, "adapter '%s' refused", name);
    pthread_mutex_lock(&s->cache_mu);
    rc = rm_lora_cache_put(&s->cache, name, weights, l, out);
    s->load_seconds += rm_http_now() - t0;
    atomic_store(&s->n_loaded, s->cache.n);
    pthread_mutex_unlock(&s->cache_mu);
    return rc;
}

void server_adapter_put_back(rm_server *s, const rm_lora *l) {
    if (!l) return;
    pthread_mutex_lock(&s->cache_mu);
    rm_lora_cache_release(&s->cache, l);
    atomic_store(&s->n_loaded, s->cache.n);
    pthread_mutex_unlock(&s->cache_mu);
}

int server_too_many_samples(size_t n) {
    rm_errorf(RM_ETOOBIG, "too many samples: %zu (an upload may have at most %d)", n, SERVER_MAX_SAMPLES);
    return 413;
}

int server_model_kind(rm_server *s, const char *name) {
    if (!strcmp(name, s->base_name) || !strcmp(name, s->p.model)) return MODEL_BASE;
    if (s->pool && !strcmp(name, s->p.auto_name)) return MODEL_AUTO;
    if (s->pool && rm_pool_id(s->pool, name) >= 0) return MODEL_ADAPTER;
    return MODEL_NONE;
}

// Fills j->pick (pool lock held) from the request's "adapters": [names] or
// "retrieve": k when it has them, else from its "model": the base alone, the
// auto model (retrieval), or an adapter of the pool (as vLLM names LoRA
// modules). 0 or an HTTP status (message set, j->param the field).
static int choose(rm_server *s, job *j, const rm_json *req, const char *query) {
    const rm_json *names = rm_json_get(req, "adapters"), *kv = rm_json_get(req, "retrieve");
    if (kv && kv->type != RM_JSON_NULL && (kv->type != RM_JSON_NUMBER || !kv->is_int))
        return snprintf(j->param, sizeof j->param, "retrieve"), rm_errorf(RM_EINVAL, "\"retrieve\" must be an integer"),
               400;
    const char *dflt = s->p.default_model ? s->p.default_model : s->base_name;
    const char *model = rm_json_get_str(req, "model", dflt);
    int kind = server_model_kind(s, model);
    if (kind == MODEL_NONE && s->p.unknown_is_default) kind = server_model_kind(s, model = dflt);
    snprintf(j->param, sizeof j->param, "model");
    if (kind == MODEL_NONE)
        return rm_errorf(RM_ENOTFOUND, "The model '%s' does not exist (GET /v1/models lists this server's)", model),
               404;
    int64_t k = rm_json_get_int(req, "retrieve", 0);
    if (!names && k == 0) { // the model decides
        if (kind == MODEL_ADAPTER) return pick_status(rm_pool_pick_named(s->pool, model, &j->pick));
        if (kind == MODEL_AUTO) {
            j->auto_compose = 1;
            return rm_pool_pick(s->pool, query, s->p.auto_k, s->p.auto_min_score, &j->pick) ? 500 : 0;
        }
        return 0;
    }
    snprintf(j->param, sizeof j->param, names ? "adapters" : "retrieve");
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
        server_log_job(j);
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
        const char *f[4][2] = {
            {"name", v[i].name}, {"task", v[i].task}, {"domain", v[i].domain}, {"weights", v[i].weights}};
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

// GET /v1/adapters/NAME: one adapter of the pool with its sample inputs
// (the first 100; n_samples says how many it has).
static void adapter_work(void *arg) {
    job *j = arg;
    rm_server *s = j->s;
    const char *name = rm_http_path(j->r) + strlen("/v1/adapters/");
    if (!s->pool) {
        rm_http_reply_error(j->r, 400, "this server has no adapter pool (start it with --pool DIR)");
        return job_free(j);
    }
    rm_adapter_info *info = NULL;
    char **in = NULL;
    pthread_mutex_lock(&s->pool_mu);
    int rc = rm_pool_get(s->pool, name, &info, &in);
    pthread_mutex_unlock(&s->pool_mu);
    if (rc) {
        char msg[300];
        snprintf(msg, sizeof msg, "no adapter called '%.200s' in the pool", name);
        if (rc == RM_ENOTFOUND) rm_http_reply_error_at(j->r, 404, NULL, "adapter_not_found", msg);
        else rm_http_reply_error(j->r, 500, rm_last_error());
        return job_free(j);
    }
    rm_sb b;
    rm_sb_init(&b);
    const char *f[4][2] = {
        {"name", info->name}, {"task", info->task}, {"domain", info->domain}, {"weights", info->weights}};
    for (int k = 0; k < 4; k++) {
        rm_sb_printf(&b, "%s\"%s\": ", k ? ", " : "{", f[k][0]);
        if (f[k][1]) rm_sb_json_str(&b, f[k][1], strlen(f[k][1]));
        else rm_sb_puts(&b, "null");
    }
    rm_sb_printf(&b, ", \"n_samples\": %d, \"samples\": [", info->n_samples);
    for (int i = 0; i < info->n_samples && i < 100; i++) {
        if (i) rm_sb_puts(&b, ", ");
        rm_sb_json_str(&b, in[i], strlen(in[i]));
    }
    rm_sb_puts(&b, "]}\n");
    rm_pool_free_strs(in, info->n_samples);
    rm_pool_free_list(info, 1);
    reply_json(j->r, 200, &b);
    rm_sb_free(&b);
    job_free(j);
}

// One model object: {"id", "object", "created", "owned_by"[, "parent"]}.
static void model_json(rm_sb *b, const rm_server *s, const char *id, const char *parent) {
    rm_sb_puts(b, "{\"id\": ");
    rm_sb_json_str(b, id, strlen(id));
    rm_sb_printf(b, ", \"object\": \"model\", \"created\": %lld, \"owned_by\": \"ramole\"", (long long)s->started);
    if (parent) {
        rm_sb_puts(b, ", \"parent\": ");
        rm_sb_json_str(b, parent, strlen(parent));
    }
    rm_sb_puts(b, "}");
}

// GET /v1/models: what OpenAI clients ask first: the base model, the auto
// model (with a pool), and each adapter with weights as a model of its own
// (vLLM's LoRA modules). GET /v1/models/ID: one of them, or 404.
static void models_work(void *arg) {
    job *j = arg;
    rm_server *s = j->s;
    const char *path = rm_http_path(j->r), *one = !strncmp(path, "/v1/models/", 11) ? path + 11 : NULL;
    rm_sb b;
    rm_sb_init(&b);
    rm_adapter_info *list = NULL;
    int n = 0, kind = MODEL_NONE;
    pthread_mutex_lock(&s->pool_mu);
    int rc = s->pool ? rm_pool_list(s->pool, &list, &n) : RM_ENOTFOUND;
    if (one) kind = server_model_kind(s, one);
    pthread_mutex_unlock(&s->pool_mu);
    if (one) {
        int has_weights = 0;
        for (int i = 0; !rc && i < n; i++)
            if (!strcmp(list[i].name, one)) has_weights = list[i].weights && *list[i].weights;
        if (kind == MODEL_BASE) model_json(&b, s, s->base_name, NULL);
        else if (kind == MODEL_AUTO || (kind == MODEL_ADAPTER && has_weights)) model_json(&b, s, one, s->base_name);
    } else {
        rm_sb_puts(&b, "{\"object\": \"list\", \"data\": [");
        model_json(&b, s, s->base_name, NULL);
        if (s->pool) {
            rm_sb_puts(&b, ", ");
            model_json(&b, s, s->p.auto_name, s->base_name);
        }
        for (int i = 0; !rc && i < n; i++) {
            if (!list[i].weights || !*list[i].weights) continue;
            rm_sb_puts(&b, ", ");
            model_json(&b, s, list[i].name, s->base_name);
        }
        rm_sb_puts(&b, "]}");
    }
    if (!rc) rm_pool_free_list(list, n);
    if (one && !b.len) {
        char msg[300];
        snprintf(msg, sizeof msg, "The model '%.200s' does not exist", one);
        rm_http_reply_error_at(j->r, 404, "model", "model_not_found", msg);
    } else {
        rm_sb_puts(&b, "\n");
        reply_json(j->r, 200, &b);
    }
    rm_sb_free(&b);
    job_free(j);
}

// 1 when path (resolved: links and "..") lies inside --adapter-dir.
static int inside_adapter_dir(const rm_server *s, const char *path) {
    if (!s->p.adapter_dir) return 0;
    char *dir = realpath(s->p.adapter_dir, NULL), *p = realpath(path, NULL);
    size_t dl = dir ? strlen(dir) : 0;
    int in = dir && p && !strncmp(p, dir, dl) && (p[dl] == '/' || (dl == 1 && dir[0] == '/'));
    free(dir);
    free(p);
    return in;
}

// Upload: {"name", "samples": [texts], "weights": path, "task"?, "domain"?}.
// The adapter is loaded and checked against the model before the pool stores
// it; a bad one is refused with the reason and nothing changes.
static int upload(job *j, const rm_json *req, rm_sb *b) {
    rm_server *s = j->s;
    if (!s->pool) return rm_errorf(RM_EINVAL, "this server has no adapter pool (start it with --pool DIR)"), 400;
    int vllm = !strcmp(rm_http_path(j->r), "/v1/load_lora_adapter"); // vLLM's names for the same
    const char *name = rm_json_get_str(req, vllm ? "lora_name" : "name", NULL),
               *weights = rm_json_get_str(req, vllm ? "lora_path" : "weights", NULL);
    const rm_json *samples = rm_json_get(req, "samples");
    if (!name || !*name || !weights)
        return rm_errorf(RM_EINVAL, vllm ? "\"lora_name\" and \"lora_path\" (strings) are required"
                                         : "\"name\" and \"weights\" (strings) are required"),
               400;
    rm_json name_only = {.type = RM_JSON_STRING, .str = (char *)name, .len = strlen(name)};
    rm_json one = {.type = RM_JSON_ARRAY, .n = 1, .items = &name_only};
    if (vllm && !samples) samples = &one; // vLLM sends none: the name is the one sample (retrieved by it only)
    if (!inside_adapter_dir(s, weights))
        return snprintf(j->param, sizeof j->param, "weights"),
               rm_errorf(RM_EINVAL,
                         "\"weights\" must be a path inside the server's --adapter-dir%s (or upload the files: "
                         "multipart/form-data)",
                         s->p.adapter_dir ? "" : ", and this server has none"),
               400;
    if (!samples || samples->type != RM_JSON_ARRAY || samples->n == 0)
        return rm_errorf(RM_EINVAL, "\"samples\" must be an array of 1..%d sample inputs", SERVER_MAX_SAMPLES), 400;
    if (samples->n > SERVER_MAX_SAMPLES) return server_too_many_samples(samples->n);
    for (size_t i = 0; i < samples->n; i++)
        if (samples->items[i].type != RM_JSON_STRING) return rm_errorf(RM_EINVAL, "\"samples\" must hold strings"), 400;
    pthread_mutex_lock(&s->pool_mu);
    int taken = rm_pool_id(s->pool, name) >= 0;
    pthread_mutex_unlock(&s->pool_mu);
    if (taken) return rm_errorf(RM_EINVAL, "an adapter with this name is already in the pool"), 400;
    rm_lora *loaded; // loaded, checked against the model and kept for its first request
    int rc = server_adapter_get(s, name, weights, &loaded);
    if (rc) return 400;
    server_adapter_put_back(s, loaded);
    const char **in = malloc(samples->n * sizeof *in);
    if (!in) return rm_errorf(RM_ENOMEM, "out of memory"), 500;
    for (size_t i = 0; i < samples->n; i++) in[i] = samples->items[i].str;
    rm_adapter_info info = {.name = name,
                            .weights = weights,
                            .task = rm_json_get_str(req, "task", NULL),
                            .domain = rm_json_get_str(req, "domain", NULL),
                            .base_model = s->p.model};
    int64_t id = -1;
    pthread_mutex_lock(&s->pool_mu);
    rc = rm_pool_add(s->pool, &info, in, NULL, (int)samples->n, &id);
    int size = rm_pool_size(s->pool);
    pthread_mutex_unlock(&s->pool_mu);
    free(in);
    if (rc) return server_pool_status(rc);
    atomic_store(&s->pool_size, size);
    atomic_fetch_add(&s->n_uploads, 1);
    rm_sb_printf(b, "{\"id\": %lld, \"name\": ", (long long)id);
    rm_sb_json_str(b, name, strlen(name));
    rm_sb_printf(b, ", \"pool_size\": %d}\n", size);
    return 0;
}

// Parses the request's body as a JSON object and answers with what fn
// writes (status ok), or with its error.
static void json_work(job *j, int (*fn)(job *j, const rm_json *req, rm_sb *b), int ok) {
    size_t len;
    const char *body = rm_http_body(j->r, &len);
    rm_json *req = NULL;
    rm_sb b;
    rm_sb_init(&b);
    int code = rm_json_parse(body, len, "request body", &req) ? 400 : 0;
    if (!code && req->type != RM_JSON_OBJECT)
        code = 400, rm_errorf(RM_EINVAL, "the request body must be a JSON object");
    if (!code) code = fn(j, req, &b);
    rm_json_free(req);
    if (code) openai_reply_error(j, code, rm_last_error());
    else reply_json(j->r, ok, &b);
    rm_sb_free(&b);
    job_free(j);
}

// POST /v1/adapters: the files in the body (multipart/form-data), or JSON
// naming a path inside --adapter-dir.
static void upload_work(void *arg) {
    job *j = arg;
    if (strncasecmp(j->ctype, "multipart/form-data", 19)) return json_work(j, upload, 201);
    size_t len;
    const char *body = rm_http_body(j->r, &len);
    rm_sb b;
    rm_sb_init(&b);
    int code = upload_content(j, body, len, &b);
    if (code) openai_reply_error(j, code, rm_last_error());
    else reply_json(j->r, 201, &b);
    rm_sb_free(&b);
    job_free(j);
}

// DELETE /v1/adapters/NAME (and vLLM's POST /v1/unload_lora_adapter
// {"lora_name"}): out of the pool at once; its weights are freed once no
// running request uses them; its stored files stay (they may serve others).
static int delete_adapter(job *j, const rm_json *req, rm_sb *b) {
    rm_server *s = j->s;
    const char *path = rm_http_path(j->r);
    const char *name = req ? rm_json_get_str(req, "lora_name", NULL) : path + strlen("/v1/adapters/");
    if (!name || !*name)
        return snprintf(j->param, sizeof j->param, "lora_name"),
               rm_errorf(RM_EINVAL, "\"lora_name\" (a string) is required"), 400;
    if (!s->pool) return rm_errorf(RM_EINVAL, "this server has no adapter pool (start it with --pool DIR)"), 400;
    pthread_mutex_lock(&s->pool_mu);
    int rc = rm_pool_remove(s->pool, name), size = rm_pool_size(s->pool);
    pthread_mutex_unlock(&s->pool_mu);
    if (rc) return rc == RM_ENOTFOUND || rc == RM_EUNAVAILABLE ? server_pool_status(rc) : 500;
    atomic_store(&s->pool_size, size);
    pthread_mutex_lock(&s->cache_mu);
    for (rm_lora *l; (l = rm_lora_cache_take(&s->cache, name));) {
        if (s->n_holding == 0) {
            rm_lora_free(l);
            continue;
        }
        if (s->n_retired == s->cap_retired) {
            int cap = s->cap_retired ? 2 * s->cap_retired : 8;
            rm_lora **r = realloc(s->retired, (size_t)cap * sizeof *r);
            if (!r) continue; // out of memory: left allocated rather than freed under a running request
            s->retired = r, s->cap_retired = cap;
        }
        s->retired[s->n_retired++] = l;
    }
    atomic_store(&s->n_loaded, s->cache.n);
    pthread_mutex_unlock(&s->cache_mu);
    rm_sb_puts(b, "{\"id\": ");
    rm_sb_json_str(b, name, strlen(name));
    rm_sb_printf(b, ", \"object\": \"adapter\", \"deleted\": true, \"pool_size\": %d}\n", size);
    return 0;
}

static void delete_work(void *arg) {
    job *j = arg;
    if (strcmp(rm_http_method(j->r), "DELETE")) return json_work(j, delete_adapter, 200);
    rm_sb b;
    rm_sb_init(&b);
    int code = delete_adapter(j, NULL, &b);
    if (code) openai_reply_error(j, code, rm_last_error());
    else reply_json(j->r, 200, &b);
    rm_sb_free(&b);
    job_free(j);
}

static void load_work(void *arg) { json_work(arg, upload, 200); }

size_t routes_body_limit(void *user, const char *method, const char *path) {
    rm_server *s = user;
    return !strcmp(method, "POST") && !strcmp(path, "/v1/adapters") ? s->p.max_upload : s->p.http.max_body;
}

// ---- /tokenize and /detokenize (vLLM's) ------------------------------------------

// 0 when req's "model" (if any) is one of this server's, else 404 (message set).
static int known_model(job *j, const rm_json *req) {
    const char *model = rm_json_get_str(req, "model", NULL);
    if (!model) return 0;
    pthread_mutex_lock(&j->s->pool_mu);
    int kind = server_model_kind(j->s, model);
    pthread_mutex_unlock(&j->s->pool_mu);
    if (kind != MODEL_NONE || j->s->p.unknown_is_default) return 0;
    snprintf(j->param, sizeof j->param, "model");
    return rm_errorf(RM_ENOTFOUND, "The model '%s' does not exist", model), 404;
}

// {"prompt"} or {"messages"} (rendered as for chat), "add_special_tokens"
// (true: BOS as the model adds it) -> {"tokens", "count", "max_model_len"}.
static int tokenize(job *j, const rm_json *req, rm_sb *b) {
    rm_server *s = j->s;
    const rm_json *add = rm_json_get(req, "add_special_tokens");
    const char *text = rm_json_get_str(req, "prompt", NULL);
    if (add && add->type != RM_JSON_BOOL)
        return snprintf(j->param, sizeof j->param, "add_special_tokens"),
               rm_errorf(RM_EINVAL, "\"add_special_tokens\" must be true or false"), 400;
    char *prompt = NULL, *query = NULL;
    int chat = rm_json_get(req, "messages") != NULL, rc = known_model(j, req);
    if (!rc && chat) rc = openai_chat_prompt(j, req, &prompt, &query);
    else if (!rc && !text)
        rc = (snprintf(j->param, sizeof j->param, "prompt"),
              rm_errorf(RM_EINVAL, "\"prompt\" (a string) or \"messages\" is required"), 400);
    if (!rc && !s->m->tok) rc = (rm_errorf(RM_EINVAL, "the model has no tokenizer"), 400);
    const char *t = chat ? prompt : text;
    int bos = (add ? add->boolean : 1) && s->m->add_bos;
    int n = rc ? 0 : rm_tokenize(s->m->tok, t, strlen(t), bos, chat, NULL, 0);
    int32_t *ids = !rc && n >= 0 ? malloc(((size_t)n + 1) * sizeof *ids) : NULL;
    if (!rc && n < 0) rc = 400;
    else if (!rc && !ids) rc = (rm_errorf(RM_ENOMEM, "out of memory"), 500);
    if (!rc) {
        n = rm_tokenize(s->m->tok, t, strlen(t), bos, chat, ids, n + 1);
        rm_sb_puts(b, "{\"tokens\": [");
        for (int i = 0; i < n; i++) rm_sb_printf(b, i ? ", %d" : "%d", ids[i]);
        rm_sb_printf(b, "], \"count\": %d, \"max_model_len\": %d}\n", n, s->p.ctx);
    }
    free(ids);
    free(prompt);
    free(query);
    return rc;
}

// {"tokens": [ids]} -> {"prompt": their text}.
static int detokenize(job *j, const rm_json *req, rm_sb *b) {
    rm_server *s = j->s;
    const rm_json *ids = rm_json_get(req, "tokens");
    int rc = known_model(j, req);
    if (rc) return rc;
    snprintf(j->param, sizeof j->param, "tokens");
    if (!ids || ids->type != RM_JSON_ARRAY)
        return rm_errorf(RM_EINVAL, "\"tokens\" (a list of token ids) is required"), 400;
    if (!s->m->tok) return rm_errorf(RM_EINVAL, "the model has no tokenizer"), 400;
    rm_sb text;
    rm_sb_init(&text);
    rm_detok d;
    rm_detok_init(&d, s->m->tok);
    for (size_t i = 0; i < ids->n && !rc; i++) {
        const rm_json *t = &ids->items[i];
        if (t->type != RM_JSON_NUMBER || !t->is_int || t->inum < 0 || t->inum >= s->m->hp.n_vocab)
            rc = (rm_errorf(RM_EINVAL, "\"tokens\" holds an id outside the vocabulary"), 400);
        else rm_detok_push_sb(&d, (int32_t)t->inum, &text);
    }
    rm_detok_push_sb(&d, -1, &text);
    if (!rc) {
        rm_sb_puts(b, "{\"prompt\": ");
        rm_sb_json_str(b, text.buf ? text.buf : "", text.len);
        rm_sb_puts(b, "}\n");
    }
    rm_sb_free(&text);
    return rc;
}

static void embeddings_work(void *arg) {
    job *j = arg;
    size_t len;
    const char *body = rm_http_body(j->r, &len);
    rm_json *req = NULL;
    int code = rm_json_parse(body, len, "request body", &req) ? 400 : embeddings_prepare(j, req);
    rm_json_free(req);
    if (code) openai_reply_error(j, code, rm_last_error());
    job_free(j);
}

static void tokens_work(void *arg) {
    job *j = arg;
    json_work(j, !strcmp(rm_http_path(j->r), "/tokenize") ? tokenize : detokenize, 200);
}

// ---- dispatch --------------------------------------------------------------------

static void health(rm_server *s, rm_http_req *r) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_printf(&b, "{\"status\": \"ok\", \"adapters\": %d, \"model\": ", atomic_load(&s->pool_size));
    rm_sb_json_str(&b, s->base_name, strlen(s->base_name));
    rm_sb_puts(&b, ", \"model_file\": ");
    rm_sb_json_str(&b, s->p.model, strlen(s->p.model));
    rm_sb_puts(&b, "}\n");
    reply_json(r, 200, &b);
    rm_sb_free(&b);
}

// GET /info: what the page at / needs to know of this server.
static void info(rm_server *s, rm_http_req *r) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "{\"model\": ");
    rm_sb_json_str(&b, s->base_name, strlen(s->base_name));
    rm_sb_puts(&b, ", \"auto_model\": ");
    if (s->pool) rm_sb_json_str(&b, s->p.auto_name, strlen(s->p.auto_name));
    else rm_sb_puts(&b, "null");
    rm_sb_printf(&b, ", \"pool\": %s, \"adapters\": %d, \"router\": %s, \"retrieve\": %d, \"slots\": %d, \"ctx\": %d",
                 s->pool ? "true" : "false", atomic_load(&s->pool_size), s->router ? "true" : "false", s->p.auto_k,
                 s->p.slots, s->p.ctx);
    rm_sb_printf(&b, ", \"api_key\": %s, \"admin_key\": %s, \"max_upload\": %zu}\n", s->p.api_key ? "true" : "false",
                 s->p.admin_key ? "true" : "false", s->p.max_upload);
    reply_json(r, 200, &b);
    rm_sb_free(&b);
}

// The page's file at path ("/" is index.html), or NULL.
static const rm_web_file *web_file(const char *path) {
    if (path[0] != '/') return NULL;
    const char *name = path[1] ? path + 1 : "index.html";
    for (const rm_web_file *f = rm_web_files; f->name; f++)
        if (!strcmp(f->name, name)) return f;
    return NULL;
}

// GET / and the page's scripts and styles: from the binary, allowed to load
// nothing but this server's own files.
static void web(rm_server *s, rm_http_req *r) {
    (void)s;
    const rm_web_file *f = web_file(rm_http_path(r));
    if (!f) return rm_http_reply_error(r, 404, "unknown path");
    const char *dot = strrchr(f->name, '.') ? strrchr(f->name, '.') : "";
    const char *type = !strcmp(dot, ".html")  ? "text/html; charset=utf-8"
                       : !strcmp(dot, ".js")  ? "text/javascript; charset=utf-8"
                       : !strcmp(dot, ".css") ? "text/css; charset=utf-8"
                       : !strcmp(dot, ".svg") ? "image/svg+xml"
                                              : "application/octet-stream";
    rm_http_add_header(r, "Content-Security-Policy",
                       "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    rm_http_add_header(r, "X-Content-Type-Options", "nosniff");
    rm_http_add_header(r, "Referrer-Policy", "no-referrer");
    rm_http_add_header(r, "Cache-Control", "no-cache");
    rm_http_reply(r, 200, type, (const char *)f->data, f->len);
}

enum { OPEN, INFER, ADMIN }; // who may: anyone; the api or admin key; the admin key

typedef struct route {
    const char *method, *path;
    int access;
    workq_fn work; // done on a worker (slow: the upload queue)
    int slow;
    void (*now)(rm_server *s, rm_http_req *r); // quick: answered on the I/O thread
} route;

static const route k_routes[] = {
    {"POST", "/v1/completions", INFER, completion_work, 0, NULL},
    {"POST", "/v1/chat/completions", INFER, completion_work, 0, NULL},
    {"POST", "/v1/adapters", ADMIN, upload_work, 1, NULL},
    {"GET", "/v1/adapters", INFER, list_work, 0, NULL},
    {"GET", "/v1/adapters/*", INFER, adapter_work, 0, NULL},
    {"DELETE", "/v1/adapters/*", ADMIN, delete_work, 1, NULL},
    {"POST", "/v1/load_lora_adapter", ADMIN, load_work, 1, NULL},
    {"POST", "/v1/unload_lora_adapter", ADMIN, delete_work, 1, NULL},
    {"GET", "/v1/models", INFER, models_work, 0, NULL},
    {"GET", "/v1/models/*", INFER, models_work, 0, NULL},
    {"POST", "/v1/embeddings", INFER, embeddings_work, 0, NULL},
    {"POST", "/tokenize", INFER, tokens_work, 0, NULL},
    {"POST", "/detokenize", INFER, tokens_work, 0, NULL},
    {"GET", "/health", OPEN, NULL, 0, health},
    {"GET", "/metrics", INFER, NULL, 0, metrics_answer},
    {"GET", "/info", INFER, NULL, 0, info},
    {"GET", "(the page)", OPEN, NULL, 0, web}, // "/", "/app.js", ...: the browser asks for them without a key
};

// 1 when given equals key, in a time that does not depend on where they
// differ (only on the key's length).
static int same_key(const char *given, const char *key) {
    size_t gl = strlen(given), kl = strlen(key);
    volatile unsigned char diff = gl != kl;
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)(key[i] ^ (gl ? given[i < gl ? i : 0] : 0));
    return diff == 0;
}

// 0 when the request's "Authorization: Bearer KEY" grants access, else 401
// (its answer in b). Keys never appear in answers or logs.
static int authorize(rm_server *s, rm_http_req *r, int access, rm_sb *b) {
    const char *need = access == ADMIN && s->p.admin_key ? s->p.admin_key : s->p.api_key; // no admin key: the api key's
    if (access == OPEN || !need) return 0;
    const char *h = rm_http_header(r, "Authorization");
    const char *given = h && !strncasecmp(h, "Bearer ", 7) ? h + 7 : NULL;
    if (given && (same_key(given, need) | (access == INFER && s->p.admin_key && same_key(given, s->p.admin_key))))
        return 0;
    rm_http_error_json(b, 401, NULL, "invalid_api_key",
                       !given            ? "You didn't provide an API key (Authorization: Bearer KEY)"
                       : access == ADMIN ? "Incorrect API key provided: this needs the admin key"
                                         : "Incorrect API key provided");
    return 401;
}

// The route of method and path (NULL: none; *path_known: the path has
// routes for other methods).
static const route *find_route(const char *method, const char *path, int *path_known) {
    const route *hit = NULL;
    *path_known = 0;
    if (!strncmp(path, "/v1/models/", 11) && path[11]) path = "/v1/models/*"; // one model, by id
    if (!strncmp(path, "/v1/adapters/", 13) && path[13]) path = "/v1/adapters/*";
    if (web_file(path)) path = "(the page)";
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        if (strcmp(k_routes[i].path, path)) continue;
        *path_known = 1;
        if (!strcmp(k_routes[i].method, method)) hit = &k_routes[i];
    }
    return hit;
}

// The http layer's head callback: the key is checked before any of the
// body is read (a client without it cannot make the server read, or
// store, a large upload).
int routes_head(void *user, rm_http_req *r, rm_sb *b) {
    int path_known;
    const route *hit = find_route(rm_http_method(r), rm_http_path(r), &path_known);
    return hit ? authorize(user, r, hit->access, b) : 0;
}

// Upload bodies go to a file in the pool's folder as they arrive.
const char *routes_spool_dir(void *user, const char *method, const char *path) {
    rm_server *s = user;
    return s->spool_dir && !strcmp(method, "POST") && !strcmp(path, "/v1/adapters") ? s->spool_dir : NULL;
}

void routes_handle(void *user, rm_http_req *r) {
    rm_server *s = user;
    const char *method = rm_http_method(r);
    int path_known;
    const route *hit = find_route(method, rm_http_path(r), &path_known);
    if (!hit && path_known) {
        char msg[160];
        snprintf(msg, sizeof msg, "%.16s is not allowed on %.100s", method, rm_http_path(r));
        return rm_http_reply_error(r, 405, msg);
    }
    if (!hit)
        return rm_http_reply_error(r, 404,
                                   "unknown path (POST /v1/completions, POST /v1/chat/completions, GET|POST "
                                   "/v1/adapters, GET|DELETE /v1/adapters/NAME, "
                                   "GET /v1/models[/ID], POST /v1/embeddings, POST /tokenize, POST /detokenize, GET "
                                   "/health, GET /metrics, GET /info, GET / (a page))");
    if (hit->now) return hit->now(s, r);
    job *j = calloc(1, sizeof *j);
    if (!j) return rm_http_reply_error(r, 500, "out of memory");
    j->s = s, j->r = r, j->id = atomic_fetch_add(&s->next_id, 1) + 1;
    const char *ct = rm_http_header(r, "Content-Type");
    snprintf(j->ctype, sizeof j->ctype, "%s", ct ? ct : "");
    if (workq_push(hit->slow ? &s->slow : &s->fast, hit->work, j)) {
        free(j);
        rm_http_reply_error(r, 503, "out of memory");
    }
}
