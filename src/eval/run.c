// run.c — a test set under several methods in one batched engine (see run.h).
#include "eval/run.h"
#include "base/err.h"
#include "base/file.h"
#include "serve/engine.h"
#include "train/train.h"

#include <stdlib.h>
#include <string.h>

// Text of the generated ids (end-of-generation tokens left out), trimmed.
static char *detokenize(const rm_tokenizer *tok, const int32_t *ids, int n) {
    rm_sb sb;
    rm_sb_init(&sb);
    rm_detok d;
    rm_detok_init(&d, tok);
    for (int i = 0; i < n; i++)
        if (!rm_tokenizer_is_eog(tok, ids[i])) rm_detok_push_sb(&d, ids[i], &sb);
    char tail[16];
    int k = rm_detok_flush(&d, tail, sizeof tail);
    if (k > 0) rm_sb_putn(&sb, tail, (size_t)k);
    rm_sb_putn(&sb, "", 0);
    if (sb.oom || !sb.buf) {
        rm_sb_free(&sb);
        return strdup("");
    }
    size_t a = 0, b = sb.len;
    while (a < b && (sb.buf[a] == ' ' || sb.buf[a] == '\n' || sb.buf[a] == '\t' || sb.buf[a] == '\r')) a++;
    while (b > a && (sb.buf[b - 1] == ' ' || sb.buf[b - 1] == '\n' || sb.buf[b - 1] == '\t' || sb.buf[b - 1] == '\r'))
        b--;
    memmove(sb.buf, sb.buf + a, b - a);
    sb.buf[b - a] = 0;
    return sb.buf;
}

// Prompt ids for a request: [BOS] + the rendered template, cut to keep its
// end when longer than max_prompt; *cut set when it was.
static int prompt_ids(const rm_llama *m, const char *tmpl, const char *inputs, int max_prompt, int32_t **ids, int *n,
                      int *cut) {
    char *text = rm_template_render(tmpl ? tmpl : rm_alpaca_template, inputs);
    if (!text) return RM_ENOMEM;
    int32_t *body = NULL;
    int nb = 0, rc = rm_tokenize_text(m->tok, text, &body, &nb);
    free(text);
    if (rc) return rc;
    int bos = m->add_bos && m->bos >= 0, keep = nb;
    *cut = bos + nb > max_prompt;
    if (*cut) keep = max_prompt - bos;
    *ids = malloc((size_t)(bos + keep + 1) * sizeof **ids);
    if (!*ids) {
        free(body);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    if (bos) (*ids)[0] = m->bos;
    memcpy(*ids + bos, body + (nb - keep), (size_t)keep * sizeof *body);
    *n = bos + keep;
    free(body);
    return RM_OK;
}

typedef struct done_ctx {
    rm_eval_item *it;
    int *n_done;
} done_ctx;

static void on_done(void *user, const int32_t *tokens, int n, const char *reason) {
    done_ctx *d = user;
    rm_eval_item *it = d->it;
    ++*d->n_done;
    (void)reason;
    if (!tokens) {
        it->failed = 1;
        return;
    }
    it->out = malloc((size_t)(n ? n : 1) * sizeof *it->out);
    if (!it->out) {
        it->failed = 1;
        return;
    }
    memcpy(it->out, tokens, (size_t)n * sizeof *tokens);
    it->n_tokens = n;
}

void rm_run_result_free(rm_run_result *r) {
    for (int i = 0; r->items && i < r->n_items; i++) {
        rm_eval_choice_free(&r->items[i].choice);
        free(r->items[i].out);
        free(r->items[i].pred);
    }
    free(r->items);
    for (int m = 0; r->board && m < r->n_methods; m++) rm_scoreboard_free(&r->board[m]);
    free(r->board);
    memset(r, 0, sizeof *r);
}

void rm_run_result_own(const rm_run_result *r, int method, int *own_used, int *own_excluded, int *n) {
    *own_used = *own_excluded = *n = 0;
    for (int i = 0; i < r->n_items; i++) {
        const rm_eval_item *it = &r->items[i];
        if (it->method != method) continue;
        *own_used += it->choice.own_used;
        *own_excluded += it->choice.own_excluded;
        ++*n;
    }
}

static void progress(const rm_eval_env *env, const char *stage, long done, long total) {
    const rm_run_params *p = rm_eval_env_params(env);
    if (p->progress) p->progress(p->user, stage, done, total);
}

// The requests to run (the first `limit` of each task, in order) into idx; their count.
static int pick_requests(const rm_evalset *set, int limit, int *idx) {
    int n = 0;
    for (int i = 0; i < set->n; i++) {
        int seen = 0;
        for (int j = 0; limit && j < n && seen < limit; j++) seen += !strcmp(set->r[idx[j]].task, set->r[i].task);
        if (!limit || seen < limit) idx[n++] = i;
    }
    return n;
}

// The distinct tasks of the requests idx[0..n) into tasks (pointers into set); their count.
static int request_tasks(const rm_evalset *set, const int *idx, int n, const char **tasks) {
    int nt = 0;
    for (int i = 0; i < n; i++) {
        int j = 0;
        while (j < nt && strcmp(tasks[j], set->r[idx[i]].task)) j++;
        if (j == nt) tasks[nt++] = set->r[idx[i]].task;
    }
    return nt;
}

// Submits the items [*next, n) while the engine has fewer than `slots` waiting.
static int top_up(rm_eval_env *env, rm_engine *eng, const rm_method *methods, rm_run_result *out, int32_t **ids,
                  const int *n_ids, done_ctx *dc, int *next) {
    const rm_run_params *p = rm_eval_env_params(env);
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0;
    for (;;) {
        rm_engine_stats st;
        rm_engine_get_stats(eng, &st);
        if (*next >= out->n_items || st.waiting >= p->slots) return RM_OK;
        rm_eval_item *it = &out->items[*next];
        int q = *next % out->n_requests, has_plan = 0;
        rm_lora_plan plan;
        int rc = rm_eval_plan(env, &methods[it->method], it->req, &it->choice, &plan, &has_plan);
        rm_engine_cbs cb = {on_done, NULL, &dc[*next]};
        if (!rc) rc = rm_engine_submit_plan(eng, ids[q], n_ids[q], p->max_new, &sp, has_plan ? &plan : NULL, &cb);
        if (rc) return rm_error_prefix(rc, "request %d (task %s)", it->request + 1, it->req->task);
        ++*next;
    }
}

// Detokenizes and scores every item.
static int score_items(const rm_llama *m, rm_run_result *out) {
    for (int i = 0; i < out->n_items; i++) {
        rm_eval_item *it = &out->items[i];
        if (it->failed) return rm_errorf(RM_EINVAL, "request %d failed: %s", it->request + 1, rm_last_error());
        out->tokens += it->n_tokens;
        if (!(it->pred = detokenize(m->tok, it->out, it->n_tokens))) return rm_errorf(RM_ENOMEM, "out of memory");
        int rc = rm_scoreboard_add(&out->board[it->method], it->req, it->pred, &it->score);
        if (rc) return rc;
    }
    return RM_OK;
}

int rm_eval_run(rm_eval_env *env, const rm_evalset *set, const rm_method *methods, int n_methods, rm_run_result *out) {
    memset(out, 0, sizeof *out);
    const rm_run_params *p = rm_eval_env_params(env);
    rm_llama *m = rm_eval_env_model(env);
    if (!m->tok) return rm_errorf(RM_EINVAL, "%s has no tokenizer", m->path);
    if (p->ctx <= p->max_new + 1)
        return rm_errorf(RM_EINVAL, "a context of %d positions leaves no room for a prompt and %d new tokens", p->ctx,
                         p->max_new);
    if (n_methods < 1 || p->slots < 1 || p->max_new < 1 || p->limit < 0)
        return rm_errorf(RM_EINVAL, "eval: %d methods, %d slots, %d new tokens, limit %d", n_methods, p->slots,
                         p->max_new, p->limit);
    int *idx = malloc((size_t)set->n * sizeof *idx), *n_ids = calloc((size_t)set->n, sizeof *n_ids), rc = RM_OK;
    const char **tasks = malloc((size_t)set->n * sizeof *tasks);
    int32_t **ids = calloc((size_t)set->n, sizeof *ids);
    done_ctx *dc = NULL;
    rm_engine *eng = NULL;
    if (!idx || !n_ids || !tasks || !ids) rc = rm_errorf(RM_ENOMEM, "out of memory");
    int n_req = rc ? 0 : pick_requests(set, p->limit, idx), n_tasks = rc ? 0 : request_tasks(set, idx, n_req, tasks);
    for (int k = 0; !rc && k < n_methods; k++)
        if ((rc = rm_eval_env_prepare(env, &methods[k], tasks, n_tasks)) && methods[k].name)
            rm_error_prefix(rc, "%s%s", methods[k].name, methods[k].exclude_own ? " (out of distribution)" : "");
    out->n_methods = n_methods;
    out->n_requests = n_req;
    out->n_items = n_methods * n_req;
    if (!rc && (!(out->board = calloc((size_t)n_methods, sizeof *out->board)) ||
                !(out->items = calloc((size_t)out->n_items + 1, sizeof *out->items)) ||
                !(dc = calloc((size_t)out->n_items + 1, sizeof *dc))))
        rc = rm_errorf(RM_ENOMEM, "out of memory");
    // every item's adapters (retrieval), then every request's prompt, tokenized once
    int n_done = 0;
    for (int i = 0; !rc && i < out->n_items; i++) {
        rm_eval_item *it = &out->items[i];
        it->method = i / n_req;
        it->request = idx[i % n_req];
        it->req = &set->r[it->request];
        dc[i] = (done_ctx){it, &n_done};
        if ((rc = rm_eval_choose(env, &methods[it->method], it->req, &it->choice)))
            rm_error_prefix(rc, "request %d (task %s)", it->request + 1, it->req->task);
        progress(env, "retrieve", i + 1, out->n_items);
    }
    for (int q = 0; !rc && q < n_req; q++) {
        int cut = 0;
        rc = prompt_ids(m, p->tmpl, set->r[idx[q]].inputs, p->ctx - p->max_new, &ids[q], &n_ids[q], &cut);
        out->n_cut += cut;
        for (int k = 0; k < n_methods; k++) out->items[k * n_req + q].cut = cut;
    }
    // generate, continuously batched
    if (!rc)
        rc = rm_engine_new_kv(&eng, m, rm_eval_env_threads(env), p->slots, p->ctx, p->rows > 0 ? p->rows : 512,
                              p->kv_type);
    double t0 = rm_now();
    int next = 0;
    while (!rc) {
        if ((rc = top_up(env, eng, methods, out, ids, n_ids, dc, &next))) break;
        int left = rm_engine_step(eng);
        if (left < 0) rc = rm_error_prefix(left, "forward pass");
        progress(env, "generate", n_done, out->n_items);
        if (left == 0 && next == out->n_items) break;
    }
    out->seconds = rm_now() - t0;
    if (eng) {
        rm_engine_stats st;
        rm_engine_get_stats(eng, &st);
        out->forward_passes = st.steps;
        out->rows = st.rows;
    }
    rm_engine_free(eng);
    if (!rc) rc = score_items(m, out);
    for (int q = 0; ids && q < n_req; q++) free(ids[q]);
    free(ids);
    free(n_ids);
    free(idx);
    free(tasks);
    free(dc);
    if (rc) rm_run_result_free(out);
    return rc;
}

void rm_eval_item_json(const rm_eval_item *it, const rm_method *method, rm_sb *b) {
    rm_sb_puts(b, "{");
    if (method && method->name) {
        rm_sb_puts(b, "\"method\": ");
        rm_sb_json_str(b, method->name, strlen(method->name));
        rm_sb_printf(b, ", \"ood\": %s, ", method->exclude_own ? "true" : "false");
    }
    rm_sb_puts(b, "\"task\": ");
    rm_sb_json_str(b, it->req->task, strlen(it->req->task));
    rm_sb_printf(b, ", \"metric\": \"%s\", \"inputs\": ", rm_metric_name(it->req->metric));
    rm_sb_json_str(b, it->req->inputs, strlen(it->req->inputs));
    rm_sb_puts(b, ", \"targets\": ");
    rm_sb_json_str(b, it->req->targets, strlen(it->req->targets));
    rm_sb_puts(b, ", \"prediction\": ");
    rm_sb_json_str(b, it->pred ? it->pred : "", it->pred ? strlen(it->pred) : 0);
    rm_sb_puts(b, ", \"adapters\": [");
    for (int i = 0; i < it->choice.n_names; i++) {
        rm_sb_puts(b, i ? ", " : "");
        rm_sb_json_str(b, it->choice.names[i], strlen(it->choice.names[i]));
    }
    rm_sb_puts(b, "]");
    if (it->choice.weights) {
        rm_sb_puts(b, ", \"weights\": [");
        for (int i = 0; i < it->choice.n_names; i++) {
            rm_sb_puts(b, i ? ", " : "");
            rm_sb_json_num(b, it->choice.weights[i]);
        }
        rm_sb_puts(b, "]");
    }
    rm_sb_puts(b, ", \"score\": ");
    rm_sb_json_num(b, it->score);
    rm_sb_puts(b, "}\n");
}
