// engine.c — see engine.h.
#include "serve/engine.h"
#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct seq {
    int32_t *prompt, *out;
    int n_prompt, n_fed, n_out, max_new;
    rm_sampler smp;
    rm_lora_plan plan;
    int has_plan;
    rm_engine_cbs cb;
} seq;

struct rm_engine {
    rm_llama *m;
    rm_threadpool *tp;
    rm_kvcache kv;
    rm_lora_batch *lb;
    rm_linear_hook hook;
    const rm_lora *router;         // for router plans, or NULL
    rm_engine_cancel_cb cancelled; // or NULL
    int n_slots, rows;
    seq **slot;  // [n_slots], NULL = free
    seq **queue; // waiting for a slot, FIFO
    int nq, capq;
    int32_t *tok, *pos, *row_slot;
    uint8_t *want;
    const void **plans;
    int *want_slot; // slot of the k-th wanted row
    float *logits;
    long long steps, n_rows, n_prompt_tok, n_gen_tok, n_finished, n_cancelled;
};

int rm_engine_new(rm_engine **out, rm_llama *m, rm_threadpool *tp, int n_slots, int n_ctx, int rows_per_step) {
    return rm_engine_new_kv(out, m, tp, n_slots, n_ctx, rows_per_step, RM_KV_F32);
}

int rm_engine_new_kv(rm_engine **out, rm_llama *m, rm_threadpool *tp, int n_slots, int n_ctx, int rows_per_step,
                     int kv_type) {
    *out = NULL;
    if (n_slots < 1 || n_ctx < 2) return rm_errorf(RM_EINVAL, "engine: %d slots of %d positions", n_slots, n_ctx);
    if (rows_per_step < n_slots) rows_per_step = n_slots; // every running sequence gets its row
    rm_engine *e = calloc(1, sizeof *e);
    if (!e) return rm_errorf(RM_ENOMEM, "out of memory");
    e->m = m, e->tp = tp, e->n_slots = n_slots, e->rows = rows_per_step;
    int rc = rm_kvcache_init_type(&e->kv, m->hp.n_layer, n_slots, n_ctx, m->hp.n_head_kv * m->hp.head_dim, kv_type);
    size_t R = (size_t)rows_per_step;
    e->slot = calloc((size_t)n_slots, sizeof *e->slot);
    e->tok = malloc(R * sizeof(int32_t));
    e->pos = malloc(R * sizeof(int32_t));
    e->row_slot = malloc(R * sizeof(int32_t));
    e->want = malloc(R);
    e->plans = malloc(R * sizeof(void *));
    e->want_slot = malloc((size_t)n_slots * sizeof(int));
    e->logits = malloc((size_t)n_slots * (size_t)m->hp.n_vocab * sizeof(float));
    e->lb = rm_lora_batch_new(tp);
    if (!rc && (!e->slot || !e->tok || !e->pos || !e->row_slot || !e->want || !e->plans || !e->want_slot ||
                !e->logits || !e->lb))
        rc = rm_errorf(RM_ENOMEM, "engine: out of memory");
    if (rc) {
        rm_engine_free(e);
        return rc;
    }
    e->hook = rm_lora_batch_hook(e->lb);
    *out = e;
    return RM_OK;
}

static void seq_free(seq *s) {
    if (!s) return;
    if (s->has_plan) rm_lora_plan_free(&s->plan);
    rm_sampler_free(&s->smp);
    free(s->prompt);
    free(s->out);
    free(s);
}

// Ends s: tells its owner (tokens NULL: ended by an error) and frees it.
static void seq_end(seq *s, const char *reason, int failed) {
    if (s->has_plan) rm_lora_plan_free(&s->plan), s->has_plan = 0; // before done: the owner may free the adapters then
    s->cb.done(s->cb.user, failed ? NULL : s->out, failed ? 0 : s->n_out, reason);
    seq_free(s);
}

void rm_engine_free(rm_engine *e) {
    if (!e) return;
    for (int i = 0; e->slot && i < e->n_slots; i++) seq_free(e->slot[i]);
    for (int i = 0; i < e->nq; i++) seq_free(e->queue[i]);
    free(e->queue);
    free(e->slot);
    rm_kvcache_free(&e->kv);
    rm_lora_batch_free(e->lb);
    free(e->tok);
    free(e->pos);
    free(e->row_slot);
    free(e->want);
    free(e->plans);
    free(e->want_slot);
    free(e->logits);
    free(e);
}

void rm_engine_set_router(rm_engine *e, const rm_lora *router) { e->router = router; }
void rm_engine_set_cancel(rm_engine *e, rm_engine_cancel_cb cancelled) { e->cancelled = cancelled; }

// Queues a sequence whose plan (has_plan) is moved in: on failure it is freed.
static int submit(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                  rm_lora_plan *plan, int has_plan, const rm_engine_cbs *cbs) {
    int rc = RM_OK;
    if (!cbs || !cbs->done) rc = rm_errorf(RM_EINVAL, "engine: no done callback");
    else if (n_prompt < 1) rc = rm_errorf(RM_EINVAL, "empty prompt (the model needs at least one token)");
    else if (max_new < 0) rc = rm_errorf(RM_EINVAL, "max_tokens must be >= 0");
    else if ((int64_t)n_prompt + max_new > e->kv.n_ctx)
        rc = rm_errorf(RM_EFULL, "prompt %d + max_tokens %d exceed the context of %d", n_prompt, max_new, e->kv.n_ctx);
    for (int i = 0; !rc && i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->m->hp.n_vocab)
            rc = rm_errorf(RM_EINVAL, "token id %d outside the vocabulary", prompt[i]);
    if (!rc && e->nq == e->capq) {
        int cap = e->capq ? 2 * e->capq : 16;
        seq **q = realloc(e->queue, (size_t)cap * sizeof *q);
        if (!q) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else e->queue = q, e->capq = cap;
    }
    seq *s = rc ? NULL : calloc(1, sizeof *s);
    if (!rc && !s) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (rc) {
        if (has_plan) rm_lora_plan_free(plan);
        return rc;
    }
    if (has_plan) {
        s->plan = *plan;
        s->has_plan = 1;
        memset(plan, 0, sizeof *plan);
    }
    s->prompt = malloc((size_t)n_prompt * sizeof(int32_t));
    s->out = malloc(((size_t)max_new + 1) * sizeof(int32_t));
    rc = !s->prompt || !s->out ? rm_errorf(RM_ENOMEM, "out of memory") : rm_sampler_init(&s->smp, sp, e->m->hp.n_vocab);
    if (rc) {
        seq_free(s); // the sampler is zeroed or valid
        return rc;
    }
    memcpy(s->prompt, prompt, (size_t)n_prompt * sizeof(int32_t));
    for (int i = 0; i < n_prompt; i++) rm_sampler_accept(&s->smp, prompt[i]);
    s->n_prompt = n_prompt, s->max_new = max_new, s->cb = *cbs;
    if (max_new == 0) {
        seq_end(s, "length", 0);
        return RM_OK;
    }
    e->queue[e->nq++] = s;
    return RM_OK;
}

int rm_engine_submit(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                     rm_lora *const *lora, int n_lora, rm_compose_mode mode, const rm_engine_cbs *cbs) {
    return rm_engine_submit_routed(e, prompt, n_prompt, max_new, sp, lora, n_lora, mode, cbs, NULL);
}

int rm_engine_submit_routed(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                            rm_lora *const *lora, int n_lora, rm_compose_mode mode, const rm_engine_cbs *cbs,
                            rm_route_stats *route) {
    rm_lora_plan plan;
    memset(&plan, 0, sizeof plan);
    int rc = RM_OK;
    if (n_lora > 0) {
        if (mode != RM_COMPOSE_ROUTER) rc = rm_lora_plan_init(&plan, mode, n_lora, lora, NULL, NULL);
        else if (!e->router) rc = rm_errorf(RM_EINVAL, "this server has no router (start it with --router FILE)");
        else rc = rm_lora_plan_init_router(&plan, n_lora, lora, e->router);
        if (!rc && mode == RM_COMPOSE_ROUTER) plan.route = route;
    }
    if (rc) return rc;
    return submit(e, prompt, n_prompt, max_new, sp, &plan, n_lora > 0, cbs);
}

int rm_engine_submit_plan(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                          rm_lora_plan *plan, const rm_engine_cbs *cbs) {
    return submit(e, prompt, n_prompt, max_new, sp, plan, plan != NULL, cbs);
}

// Ends every sequence as failed, the message set anew before each done call
// (a callback may set its own).
static void end_all(rm_engine *e, int rc, const char *why) {
    for (int i = 0; i < e->n_slots; i++)
        if (e->slot[i]) {
            rm_errorf(rc, "%s", why);
            seq_end(e->slot[i], NULL, 1), e->slot[i] = NULL;
        }
    while (e->nq > 0) {
        rm_errorf(rc, "%s", why);
        seq_end(e->queue[--e->nq], NULL, 1);
    }
}

void rm_engine_abort(rm_engine *e, const char *why) { end_all(e, RM_EINVAL, why); }

// Ends the sequences whose owners cancel them, running or waiting.
static void drop_cancelled(rm_engine *e) {
    if (!e->cancelled) return;
    for (int i = 0; i < e->n_slots; i++) {
        seq *s = e->slot[i];
        if (s && e->cancelled(s->cb.user)) {
            e->slot[i] = NULL, e->n_cancelled++;
            seq_end(s, "cancelled", 0);
        }
    }
    int kept = 0;
    for (int i = 0; i < e->nq; i++) {
        seq *s = e->queue[i];
        if (e->cancelled(s->cb.user)) e->n_cancelled++, seq_end(s, "cancelled", 0);
        else e->queue[kept++] = s;
    }
    e->nq = kept;
}

int rm_engine_step(rm_engine *e) {
    drop_cancelled(e);
    // admit waiting sequences into free slots, first come first served
    for (int i = 0; i < e->n_slots && e->nq > 0; i++)
        if (!e->slot[i]) {
            e->slot[i] = e->queue[0];
            memmove(e->queue, e->queue + 1, (size_t)(--e->nq) * sizeof *e->queue);
            rm_kvcache_clear_slot(&e->kv, i);
        }
    // decode rows first (one each), then prompt chunks in the remaining budget
    int n = 0, n_want = 0, n_decode = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < e->n_slots; i++) {
            seq *s = e->slot[i];
            if (!s || (pass == 0) != (s->n_fed == s->n_prompt)) continue;
            int c = pass == 0 ? 1 : s->n_prompt - s->n_fed < e->rows - n ? s->n_prompt - s->n_fed : e->rows - n;
            for (int j = 0; j < c; j++, n++) {
                int p = pass == 0 ? s->n_prompt + s->n_out - 1 : s->n_fed + j;
                e->tok[n] = pass == 0 ? s->out[s->n_out - 1] : s->prompt[p];
                e->pos[n] = p;
                e->row_slot[n] = i;
                e->plans[n] = s->has_plan ? &s->plan : NULL;
                e->want[n] = pass == 0 || s->n_fed + j == s->n_prompt - 1;
                if (e->want[n]) e->want_slot[n_want++] = i;
            }
            if (pass == 1) s->n_fed += c;
            else n_decode += c;
        }
    if (n == 0) return e->nq;
    rm_batch b = {n, e->tok, e->pos, e->row_slot, e->want, e->plans};
    int rc = rm_llama_forward(e->m, &e->kv, e->tp, &b, &e->hook, e->logits);
    if (!rc) rc = rm_lora_batch_status(e->lb);
    e->steps++, e->n_rows += n, e->n_prompt_tok += n - n_decode;
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", rm_last_error());
        end_all(e, rc, why);
        return rc;
    }
    int running = e->nq;
    for (int k = 0; k < n_want; k++) {
        int i = e->want_slot[k];
        seq *s = e->slot[i];
        int32_t next = rm_sampler_sample(&s->smp, e->logits + (size_t)k * e->m->hp.n_vocab);
        rm_sampler_accept(&s->smp, next);
        s->out[s->n_out++] = next;
        e->n_gen_tok++;
        int told_stop = s->cb.token && s->cb.token(s->cb.user, next, e->logits + (size_t)k * e->m->hp.n_vocab);
        const char *reason = told_stop || (e->m->tok && rm_tokenizer_is_eog(e->m->tok, next)) ? "stop"
                             : s->n_out >= s->max_new                                         ? "length"
                                                                                              : NULL;
        if (reason) {
            e->slot[i] = NULL;
            e->n_finished++;
            seq_end(s, reason, 0);
        }
    }
    for (int i = 0; i < e->n_slots; i++) running += e->slot[i] != NULL;
    return running;
}

void rm_engine_get_stats(const rm_engine *e, rm_engine_stats *st) {
    memset(st, 0, sizeof *st);
    for (int i = 0; i < e->n_slots; i++) st->running += e->slot[i] != NULL;
    st->waiting = e->nq, st->slots = e->n_slots;
    st->steps = e->steps, st->rows = e->n_rows;
    st->prompt_tokens = e->n_prompt_tok, st->generated_tokens = e->n_gen_tok, st->finished = e->n_finished;
    st->cancelled = e->n_cancelled;
    st->kv_bytes = rm_kvcache_bytes(&e->kv), st->kv_type = e->kv.type;
}
