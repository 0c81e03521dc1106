// server.c — the server's threads and lifecycle (see server.h): the work
// queues, the engine thread, start, drain and stop.
#include "serve/server_impl.h"
#include "base/err.h"
#include "lora/router.h"

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

void job_free(job *j) {
    if (!j) return;
    for (int i = 0; j->ch && i < j->n_choices; i++) {
        choice *c = &j->ch[i];
        free(c->ids);
        free(c->echo);
        free(c->out);
        rm_sb_free(&c->text);
        rm_sb_free(&c->lp), rm_sb_free(&c->lp_tok), rm_sb_free(&c->lp_top), rm_sb_free(&c->lp_off);
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
        if (rm_engine_submit(s->eng, c->ids, c->n_prompt, j->max_new, &sp, j->lora, j->pick.n, j->mode, &cb))
            openai_done(c, NULL, 0, NULL);
    }
}

static void *engine_main(void *arg) {
    rm_server *s = arg;
    pthread_mutex_lock(&s->eng_mu);
    for (;;) {
        job *sub = s->sub_head;
        s->sub_head = s->sub_tail = NULL;
        int abort = s->eng_abort;
        if (!sub && !s->eng_busy && !(abort && s->eng_stats.running + s->eng_stats.waiting)) {
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

void server_engine_stats(rm_server *s, rm_engine_stats *st) {
    pthread_mutex_lock(&s->eng_mu);
    *st = s->eng_stats;
    pthread_mutex_unlock(&s->eng_mu);
}

// ---- lifecycle -------------------------------------------------------------------

rm_server_params rm_server_default_params(void) {
    return (rm_server_params){.compute_threads = 0, .slots = 8, .ctx = 2048, .rows = 512, .http = rm_http_default_params()};
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
    int rc = rm_llama_load(&s->m, p->model);
    if (rc) rm_error_prefix(rc, "cannot load the model");
    s->cache.m = s->m;
    if (!rc && p->router && (rc = rm_router_load(&s->router, p->router, s->m))) rm_error_prefix(rc, "--router");
    int ctx = p->ctx;
    if (!rc && ctx > s->m->hp.n_ctx_train && s->m->hp.n_ctx_train > 0) ctx = s->m->hp.n_ctx_train;
    s->p.ctx = ctx;
    if (!rc && p->pool && (rc = rm_pool_open_existing(p->pool, &s->pool))) rm_error_prefix(rc, "--pool");
    if (s->pool) atomic_store(&s->pool_size, rm_pool_size(s->pool));
    if (!rc && !(s->tp = rm_threadpool_create(p->compute_threads))) rc = rm_errorf(RM_ENOMEM, "cannot start the compute threads");
    if (!rc) rc = rm_engine_new(&s->eng, s->m, s->tp, p->slots, ctx, p->rows);
    if (!rc) rm_engine_set_router(s->eng, s->router);
    if (!rc && pthread_create(&s->eng_thread, NULL, engine_main, s)) rc = rm_errorf(RM_ENOMEM, "cannot start the engine thread");
    if (!rc) s->eng_started = 1;
    if (!rc) rc = workq_start(&s->fast, 2);
    if (!rc) rc = workq_start(&s->slow, 1);
    rm_http_params hp = p->http;
    hp.handler = routes_handle, hp.user = s;
    if (!rc) rc = rm_http_start(&hp, &s->http);
    if (rc) {
        rm_server_free(s);
        return rc;
    }
    *out = s;
    return RM_OK;
}

const char *rm_server_url(const rm_server *s) { return rm_http_url(s->http); }

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
    if (s->http) rm_http_stop(s->http);
    if (s->fast.n_threads) workq_stop(&s->fast);
    if (s->slow.n_threads) workq_stop(&s->slow);
    if (s->eng_started) {
        pthread_mutex_lock(&s->eng_mu);
        s->eng_stop = 1, s->eng_abort = 1;
        pthread_cond_signal(&s->eng_cv);
        pthread_mutex_unlock(&s->eng_mu);
        pthread_join(s->eng_thread, NULL);
    }
    rm_engine_free(s->eng);
    rm_lora_cache_free(&s->cache);
    if (s->pool) rm_pool_close(s->pool);
    rm_threadpool_free(s->tp);
    rm_lora_free(s->router);
    rm_llama_free(s->m);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_mutex_destroy(&s->cache_mu);
    pthread_mutex_destroy(&s->eng_mu);
    pthread_cond_destroy(&s->eng_cv);
    free(s);
}
