// server.c — the server's threads and lifecycle (see server.h): the work
// queues, the engine thread, start, drain and stop.
#include "serve/server_impl.h"
#include "base/err.h"
#include "base/file.h"
#include "lora/router.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---- work queues -----------------------------------------------------------------

static void *workq_main(void *arg) {
    workq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        workq_item *it = q->head;
        if (!it) {
            if (q->stop) break;
            pthread_cond_wait(&q->cv, &q->mu);
            continue;
        }
        q->head = it->next;
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        it->fn(it->arg);
        free(it);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int workq_start(workq *q, int n_threads) {
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    for (int i = 0; i < n_threads && i < 4; i++) {
        if (pthread_create(&q->th[i], NULL, workq_main, q)) {
            workq_stop(q);
            return rm_errorf(RM_ENOMEM, "cannot start a worker thread");
        }
        q->n_threads++;
    }
    return RM_OK;
}

int workq_push(workq *q, workq_fn fn, void *arg) {
    workq_item *it = malloc(sizeof *it);
    if (!it) return rm_errorf(RM_ENOMEM, "out of memory");
    *it = (workq_item){fn, arg, NULL};
    pthread_mutex_lock(&q->mu);
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return RM_OK;
}

void workq_stop(workq *q) {
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->n_threads; i++) pthread_join(q->th[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

// ---- the engine thread -----------------------------------------------------------

void server_hold(rm_server *s, job *j) {
    pthread_mutex_lock(&s->cache_mu);
    if (!j->holds) j->holds = 1, s->n_holding++;
    pthread_mutex_unlock(&s->cache_mu);
}

void server_release(rm_server *s, job *j) {
    pthread_mutex_lock(&s->cache_mu);
    for (int i = 0; i < RM_PLAN_MAX; i++) { // before n_holding drops: a retired adapter's address stays its own
        rm_lora_cache_release(&s->cache, j->lora[i]);
        j->lora[i] = NULL;
    }
    atomic_store(&s->n_loaded, s->cache.n);
    if (j->holds && --s->n_holding == 0) {
        for (int i = 0; i < s->n_retired; i++) rm_lora_free(s->retired[i]);
        s->n_retired = 0;
    }
    j->holds = 0;
    pthread_mutex_unlock(&s->cache_mu);
}

void job_free(job *j) {
    if (!j) return;
    if (j->holds) server_release(j->s, j);
    for (int i = 0; j->ch && i < j->n_choices; i++) {
        choice *c = &j->ch[i];
        free(c->ids);
        free(c->echo);
        free(c->out);
        rm_sb_free(&c->text);
        rm_sb_free(&c->lp), rm_sb_free(&c->lp_tok), rm_sb_free(&c->lp_top), rm_sb_free(&c->lp_off);
        free(c->route.sum);
        free(c->route.n);
    }
    free(j->ch);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->model);
    rm_pick_free(&j->pick);
    free(j);
}

// A submitted job's choices into the engine (or answered at once when they
// cannot run). The last choice's done frees j.
static void engine_take(rm_server *s, job *j, int abort) {
    if (abort) {
        rm_http_reply_error(j->r, 503, "the server is shutting down");
        job_free(j);
        return;
    }
    if (j->stream) openai_stream_open(j);
    int n = j->n_choices;
    for (int i = 0; i < n; i++) {
        choice *c = &j->ch[i];
        rm_sampler_params sp = j->sp;
        sp.seed += (uint64_t)(i % j->n_samples); // the samples of a prompt differ; the first is what the seed gives
        rm_engine_cbs cb = {openai_done, openai_token, c};
        if (rm_engine_submit_routed(s->eng, c->ids, c->n_prompt, j->max_new, &sp, j->lora, j->pick.n, j->mode, &cb,
                                    c->route.sum ? &c->route : NULL))
            openai_done(c, NULL, 0, NULL);
    }
}

static void *engine_main(void *arg) {
    rm_server *s = arg;
    pthread_mutex_lock(&s->eng_mu);
    for (;;) {
        job *sub = s->sub_head;
        embed_task *emb = s->emb_head;
        s->sub_head = s->sub_tail = NULL;
        s->emb_head = s->emb_tail = NULL;
        int abort = s->eng_abort;
        if (!sub && !emb && !s->eng_busy && !(abort && s->eng_stats.running + s->eng_stats.waiting)) {
            if (s->eng_stop) break;
            pthread_cond_wait(&s->eng_cv, &s->eng_mu);
            continue;
        }
        pthread_mutex_unlock(&s->eng_mu);
        while (sub) {
            job *j = sub;
            sub = sub->next;
            engine_take(s, j, abort);
        }
        while (emb) {
            embed_task *t = emb;
            emb = emb->next;
            if (abort) {
                rm_http_reply_error(t->r, 503, "the server is shutting down");
                embed_task_free(t);
            } else {
                embeddings_run(s, t);
            }
        }
        if (abort) rm_engine_abort(s->eng, "the server is shutting down");
        int r = rm_engine_step(s->eng); // a failed pass ends its sequences with the reason
        pthread_mutex_lock(&s->eng_mu);
        s->eng_busy = r > 0;
        rm_engine_get_stats(s->eng, &s->eng_stats);
    }
    pthread_mutex_unlock(&s->eng_mu);
    return NULL;
}

void server_submit(rm_server *s, job *j) {
    j->next = NULL;
    pthread_mutex_lock(&s->eng_mu);
    if (s->sub_tail) s->sub_tail->next = j;
    else s->sub_head = j;
    s->sub_tail = j;
    pthread_cond_signal(&s->eng_cv);
    pthread_mutex_unlock(&s->eng_mu);
}

void server_submit_embedding(rm_server *s, embed_task *t) {
    t->next = NULL;
    pthread_mutex_lock(&s->eng_mu);
    if (s->emb_tail) s->emb_tail->next = t;
    else s->emb_head = t;
    s->emb_tail = t;
    pthread_cond_signal(&s->eng_cv);
    pthread_mutex_unlock(&s->eng_mu);
}

void server_engine_stats(rm_server *s, rm_engine_stats *st) {
    pthread_mutex_lock(&s->eng_mu);
    *st = s->eng_stats;
    pthread_mutex_unlock(&s->eng_mu);
}

// ---- the request log ----

void server_log_job(job *j) {
    req_log *l = calloc(1, sizeof *l);
    if (!l) return;
    snprintf(l->model, sizeof l->model, "%s", j->model ? j->model : "");
    size_t at = 0;
    for (int i = 0; i < j->pick.n && at + 2 < sizeof l->adapters; i++)
        at += (size_t)snprintf(l->adapters + at, sizeof l->adapters - at, "%s%s", i ? "," : "", j->pick.name[i]);
    l->prompt_tokens = l->generated_tokens = 0;
    for (int i = 0; i < j->n_choices; i++) {
        l->generated_tokens += j->ch[i].n_out;
        if (i % j->n_samples == 0) l->prompt_tokens += j->ch[i].n_prompt;
    }
    l->ttft = j->t_first > 0 ? j->t_first - rm_http_started(j->r) : -1;
    rm_http_set_log(j->r, l, free);
}

void server_log(void *user, const rm_http_req *r, int status, double seconds, void *data) {
    rm_server *s = user;
    const req_log *l = data;
    rm_sb b;
    rm_sb_init(&b);
    const char *method = rm_http_method(r), *path = rm_http_path(r);
    if (s->p.log_json) {
        rm_sb_printf(&b, "{\"id\": %ld, \"method\": ", rm_http_id(r));
        rm_sb_json_str(&b, method, strlen(method));
        rm_sb_puts(&b, ", \"path\": ");
        rm_sb_json_str(&b, path, strlen(path));
        rm_sb_printf(&b, ", \"status\": %d", status);
        if (l) {
            rm_sb_puts(&b, ", \"model\": ");
            rm_sb_json_str(&b, l->model, strlen(l->model));
            rm_sb_puts(&b, ", \"adapters\": [");
            for (const char *a = l->adapters; *a;) {
                size_t n = strcspn(a, ",");
                if (a != l->adapters) rm_sb_puts(&b, ", ");
                rm_sb_json_str(&b, a, n);
                a += n + (a[n] == ',');
            }
            rm_sb_printf(&b, "], \"prompt_tokens\": %lld, \"generated_tokens\": %lld, \"ttft_s\": ", l->prompt_tokens,
                         l->generated_tokens);
            if (l->ttft >= 0) rm_sb_printf(&b, "%.6f", l->ttft);
            else rm_sb_puts(&b, "null");
        }
        rm_sb_printf(&b, ", \"total_s\": %.6f}", seconds);
    } else {
        rm_sb_printf(&b, "request %ld %.16s %.200s %d", rm_http_id(r), method, path, status);
        if (l) {
            rm_sb_printf(&b, " model=%s adapters=%s prompt=%lld generated=%lld ttft=", l->model,
                         *l->adapters ? l->adapters : "-", l->prompt_tokens, l->generated_tokens);
            if (l->ttft >= 0) rm_sb_printf(&b, "%.3fs", l->ttft);
            else rm_sb_puts(&b, "-");
        }
        rm_sb_printf(&b, " total=%.3fs", seconds);
    }
    if (!b.oom) s->p.log_line(s->p.log_user, b.buf);
    rm_sb_free(&b);
}

// ---- lifecycle -------------------------------------------------------------------

// The base model's name for clients: given, or the file's name without its
// folder and .gguf; the auto model's name must differ from it.
static int server_names(rm_server *s) {
    const char *given = s->p.model_name, *path = s->p.model;
    if (!path) return rm_errorf(RM_EINVAL, "no model given");
    const char *slash = strrchr(path, '/');
    const char *file = slash && slash[1] ? slash + 1 : path;
    size_t len = strlen(file);
    if (!given && len > 5 && !strcmp(file + len - 5, ".gguf")) len -= 5;
    s->base_name = given ? strdup(given) : strndup(file, len);
    if (!s->base_name) return rm_errorf(RM_ENOMEM, "out of memory");
    if (!*s->base_name || !s->p.auto_name || !*s->p.auto_name || !strcmp(s->base_name, s->p.auto_name))
        return rm_errorf(RM_EINVAL, "the base model's name '%s' and the auto model's '%s' must differ and not be empty",
                         s->base_name, s->p.auto_name ? s->p.auto_name : "");
    if (s->p.auto_k < 1 || s->p.auto_k > RM_PLAN_MAX)
        return rm_errorf(RM_EINVAL, "the auto model's k must be 1..%d", RM_PLAN_MAX);
    return RM_OK;
}

rm_server_params rm_server_default_params(void) {
    return (rm_server_params){.auto_name = "ramole-auto",
                              .auto_k = 3,
                              .max_upload = (size_t)256 << 20,
                              .auto_min_score = -INFINITY,
                              .compute_threads = 0,
                              .adapter_cache = (size_t)1024 << 20,
                              .slots = 8,
                              .ctx = 2048,
                              .rows = 512,
                              .kv_type = RM_KV_F16,
                              .http = rm_http_default_params()};
}

int rm_server_start(const rm_server_params *p, rm_server **out) {
    *out = NULL;
    rm_server *s = calloc(1, sizeof *s);
    if (!s) return rm_errorf(RM_ENOMEM, "out of memory");
    s->p = *p;
    s->started = time(NULL);
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->cache_mu, NULL);
    pthread_mutex_init(&s->eng_mu, NULL);
    pthread_cond_init(&s->eng_cv, NULL);
    int rc = server_names(s);
    if (!rc && (rc = rm_llama_load(&s->m, p->model))) rm_error_prefix(rc, "cannot load the model");
    s->cache.m = s->m;
    rm_lora_cache_set_budget(&s->cache, p->adapter_cache);
    if (!rc && p->router && (rc = rm_router_load(&s->router, p->router, s->m))) rm_error_prefix(rc, "--router");
    int ctx = p->ctx;
    if (!rc && ctx > s->m->hp.n_ctx_train && s->m->hp.n_ctx_train > 0) ctx = s->m->hp.n_ctx_train;
    s->p.ctx = ctx;
    if (!rc && p->pool && (rc = rm_pool_open_existing(p->pool, &s->pool))) rm_error_prefix(rc, "--pool");
    if (s->pool) atomic_store(&s->pool_size, rm_pool_size(s->pool));
    if (s->pool && rm_pool_weights_dir(s->pool)) { // what a server killed during an upload left
        char host[64] = "";
        gethostname(host, sizeof host - 1);
        int n = upload_sweep(rm_pool_weights_dir(s->pool), host);
        if (n) fprintf(stderr, "serve: removed %d upload folder%s left by processes that died\n", n, n > 1 ? "s" : "");
    }
    if (!rc && s->pool) { // upload bodies are spooled where the upload will store them (never beside a URL)
        const char *wd = rm_pool_weights_dir(s->pool);
        if (!(s->spool_dir = strdup(wd ? wd : rm_tmpdir()))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    }
    if (!rc && p->default_model && server_model_kind(s, p->default_model) == MODEL_NONE)
        rc = rm_errorf(
            RM_EINVAL,
            "--default-model '%s' is not the base model '%s', the auto model (with a pool) or an adapter of the pool",
            p->default_model, s->base_name);
    if (!rc && !(s->tp = rm_threadpool_create(p->compute_threads)))
        rc = rm_errorf(RM_ENOMEM, "cannot start the compute threads");
    if (!rc) rc = rm_engine_new_kv(&s->eng, s->m, s->tp, p->slots, ctx, p->rows, p->kv_type);
    if (!rc) rm_engine_get_stats(s->eng, &s->eng_stats); // before the engine thread runs: the gauges from the start
    if (!rc) rm_engine_set_router(s->eng, s->router);
    if (!rc) rm_engine_set_cancel(s->eng, openai_gone);
    if (!rc && pthread_create(&s->eng_thread, NULL, engine_main, s))
        rc = rm_errorf(RM_ENOMEM, "cannot start the engine thread");
    if (!rc) s->eng_started = 1;
    if (!rc) rc = server_follow_start(s);
    if (!rc) rc = workq_start(&s->fast, 2);
    if (!rc) rc = workq_start(&s->slow, 1);
    rm_http_params hp = p->http;
    hp.handler = routes_handle, hp.user = s, hp.log = p->log_line ? server_log : NULL,
    hp.body_limit = routes_body_limit;
    hp.head = routes_head, hp.spool_dir = routes_spool_dir;
    if (!rc) rc = rm_http_start(&hp, &s->http);
    if (rc) {
        rm_server_free(s);
        return rc;
    }
    *out = s;
    return RM_OK;
}

const char *rm_server_url(const rm_server *s) { return rm_http_url(s->http); }
int rm_server_working(rm_server *s) { return rm_http_handling(s->http); }

static int wait_idle(rm_server *s, double seconds, volatile int *force) {
    for (double t = 0; t < seconds && !(force && *force); t += 0.02) {
        if (rm_http_busy(s->http) == 0) return 1;
        usleep(20000);
    }
    return rm_http_busy(s->http) == 0;
}

void rm_server_refuse_new(rm_server *s) { rm_http_drain(s->http); }

int rm_server_drain(rm_server *s, double timeout, volatile int *force) {
    rm_http_drain(s->http);
    if (wait_idle(s, timeout, force)) return 0;
    int left = rm_http_busy(s->http);
    pthread_mutex_lock(&s->eng_mu); // end what still runs; what the workers still hand in is refused
    s->eng_abort = 1;
    pthread_cond_signal(&s->eng_cv);
    pthread_mutex_unlock(&s->eng_mu);
    wait_idle(s, 10, NULL);
    return left;
}

void rm_server_free(rm_server *s) {
    if (!s) return;
    // new requests refused, then the workers and the engine answer what they
    // hold while the HTTP layer still stands, then it stops
    if (s->http) rm_http_drain(s->http);
    if (s->fast.n_threads) workq_stop(&s->fast);
    if (s->slow.n_threads) workq_stop(&s->slow);
    server_follow_stop(s);
    if (s->eng_started) {
        pthread_mutex_lock(&s->eng_mu);
        s->eng_stop = 1, s->eng_abort = 1;
        pthread_cond_signal(&s->eng_cv);
        pthread_mutex_unlock(&s->eng_mu);
        pthread_join(s->eng_thread, NULL);
    }
    if (s->http) rm_http_stop(s->http);
    rm_engine_free(s->eng);
    rm_lora_cache_free(&s->cache);
    for (int i = 0; i < s->n_retired; i++) rm_lora_free(s->retired[i]);
    free(s->retired);
    if (s->pool) rm_pool_close(s->pool);
    rm_threadpool_free(s->tp);
    rm_lora_free(s->router);
    rm_llama_free(s->m);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_mutex_destroy(&s->cache_mu);
    pthread_mutex_destroy(&s->eng_mu);
    pthread_cond_destroy(&s->eng_cv);
    free(s->base_name);
    free(s->spool_dir);
    free(s);
}
