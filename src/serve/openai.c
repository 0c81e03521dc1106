// openai.c — the OpenAI side of completions: a request's fields checked
// (types, ranges, unknown names refused with 400 and the field named), its
// prompts (a string, a list of them, token ids; chat messages with text
// parts) turned into choices, and the answers in OpenAI's formats: the
// text_completion / chat.completion object, or its stream of chunks (the
// chat's first chunk carries the role), with stop strings cut off, logprobs
// with their alternatives, echo, and usage.
#define _GNU_SOURCE
#include "serve/server_impl.h"
#include "base/err.h"
#include "base/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { MAX_N = 16, MAX_PROMPTS = 64, MAX_TOP = 20, MAX_STOP_LEN = 256 };

static int oom(void) {
    rm_errorf(RM_ENOMEM, "out of memory");
    return 500;
}

// ---- checking a request ----------------------------------------------------------

// 400 about field key (message set, j->param = key).
static int bad(job *j, const char *key, const char *fmt, const char *what) {
    snprintf(j->param, sizeof j->param, "%s", key);
    rm_errorf(RM_EINVAL, fmt, key, what);
    return 400;
}

// The number at key, or dflt when absent or null; 400 when not a number in [lo, hi].
static int get_num(job *j, const rm_json *req, const char *key, double lo, double hi, double dflt, double *out) {
    const rm_json *v = rm_json_get(req, key);
    *out = dflt;
    if (!v || v->type == RM_JSON_NULL) return 0;
    if (v->type != RM_JSON_NUMBER || !(v->num >= lo && v->num <= hi)) {
        char range[64];
        snprintf(range, sizeof range, "%g to %g", lo, hi);
        return bad(j, key, "\"%s\" must be a number from %s", range);
    }
    *out = v->num;
    return 0;
}

static int get_int(job *j, const rm_json *req, const char *key, int64_t lo, int64_t hi, int64_t dflt, int64_t *out) {
    const rm_json *v = rm_json_get(req, key);
    *out = dflt;
    if (!v || v->type == RM_JSON_NULL) return 0;
    if (v->type != RM_JSON_NUMBER || !v->is_int || v->inum < lo || v->inum > hi) {
        char range[64];
        snprintf(range, sizeof range, "%lld to %lld", (long long)lo, (long long)hi);
        return bad(j, key, "\"%s\" must be an integer from %s", range);
    }
    *out = v->inum;
    return 0;
}

static int get_bool(job *j, const rm_json *req, const char *key, int *out) {
    const rm_json *v = rm_json_get(req, key);
    *out = 0;
    if (!v || v->type == RM_JSON_NULL) return 0;
    if (v->type != RM_JSON_BOOL) return bad(j, key, "\"%s\" must be true or false%s", "");
    *out = v->boolean;
    return 0;
}

static int want_type(job *j, const rm_json *req, const char *key, rm_json_type t, const char *what) {
    const rm_json *v = rm_json_get(req, key);
    if (v && v->type != RM_JSON_NULL && v->type != t) return bad(j, key, "\"%s\" must be %s", what);
    return 0;
}

// Fields a request may have: OpenAI's, then ours.
static const char *const k_common[] = {"model",
                                       "max_tokens",
                                       "temperature",
                                       "top_p",
                                       "n",
                                       "stream",
                                       "stream_options",
                                       "stop",
                                       "seed",
                                       "user",
                                       "presence_penalty",
                                       "frequency_penalty",
                                       "logit_bias",
                                       "logprobs",
                                       "top_k",
                                       "min_p",
                                       "repeat_penalty",
                                       "adapters",
                                       "retrieve",
                                       "min_score",
                                       "compose",
                                       "return_routing",
                                       NULL};
static const char *const k_completion[] = {"prompt", "echo", "best_of", "suffix", NULL};
static const char *const k_chat[] = {
    "messages",    "max_completion_tokens", "top_logprobs", "response_format", "tools",
    "tool_choice", "parallel_tool_calls",   "store",        "metadata",        "service_tier",
    NULL};

static int known(const char *const *list, const char *key) {
    for (; *list; list++)
        if (!strcmp(*list, key)) return 1;
    return 0;
}

// What OpenAI's API has that this server does not do: refused unless it
// asks for nothing (its default).
static int unsupported(job *j, const rm_json *req) {
    const char *zero[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        double v;
        int rc = get_num(j, req, zero[i], -2, 2, 0, &v);
        if (rc) return rc;
        if (v != 0) return bad(j, zero[i], "\"%s\" is not supported%s (repeat_penalty is)", "");
    }
    const rm_json *v = rm_json_get(req, "logit_bias");
    if (v && v->type != RM_JSON_NULL && (v->type != RM_JSON_OBJECT || v->n))
        return bad(j, "logit_bias", "\"%s\" is not supported%s", "");
    v = rm_json_get(req, "tools");
    if (v && v->type != RM_JSON_NULL && (v->type != RM_JSON_ARRAY || v->n))
        return bad(j, "tools", "\"%s\" (function calling) is not supported%s", "");
    v = rm_json_get(req, "suffix");
    if (v && v->type != RM_JSON_NULL && (v->type != RM_JSON_STRING || v->len))
        return bad(j, "suffix", "\"%s\" is not supported%s", "");
    v = rm_json_get(req, "response_format");
    if (v && v->type != RM_JSON_NULL && strcmp(rm_json_get_str(v, "type", ""), "text"))
        return bad(j, "response_format", "\"%s\" may only be {\"type\": \"text\"}%s", "");
    return 0;
}

// "stop": a string or a list of up to 4, each 1..256 bytes.
static int get_stop(job *j, const rm_json *req) {
    const rm_json *v = rm_json_get(req, "stop");
    if (!v || v->type == RM_JSON_NULL) return 0;
    const rm_json *one = v->type == RM_JSON_STRING ? v : NULL;
    size_t n = one ? 1 : v->type == RM_JSON_ARRAY ? v->n : 5;
    if (n > 4) return bad(j, "stop", "\"%s\" must be a string or a list of up to 4 strings%s", "");
    for (size_t i = 0; i < n; i++) {
        const rm_json *s = one ? one : &v->items[i];
        if (s->type != RM_JSON_STRING || s->len == 0 || s->len > MAX_STOP_LEN || memchr(s->str, 0, s->len))
            return bad(j, "stop", "\"%s\" must hold strings of 1 to 256 bytes%s", "");
        if (!(j->stop[j->n_stop] = strdup(s->str))) return oom();
        j->n_stop++;
        if (s->len > j->max_stop) j->max_stop = s->len;
    }
    return 0;
}

// The sampling fields (temperature, top_p, top_k, min_p, repeat_penalty,
// seed) read into *sp by the sampler's own reader, so that the server
// refuses exactly what the sampler would; 400 with the field named.
static int sampling_fields(job *j, const rm_json *req, rm_sampler_params *sp) {
    if (!rm_sampler_params_from_json(sp, req)) return 0;
    static const char *const fields[] = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed"};
    const char *msg = rm_last_error();
    msg += *msg == '"';
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        size_t len = strlen(fields[i]);
        if (!strncmp(msg, fields[i], len) && (msg[len] == '"' || msg[len] == ' '))
            snprintf(j->param, sizeof j->param, "%s", fields[i]);
    }
    return 400;
}

// ---- prompts ---------------------------------------------------------------------

// A prompt's tokens into c (text tokenized; special tokens parsed for chat).
static int tokenize_into(job *j, choice *c, const char *text, int special) {
    rm_server *s = j->s;
    size_t len = strlen(text);
    int n = rm_tokenize(s->m->tok, text, len, s->m->add_bos, special, NULL, 0);
    if (n < 0) return 400;
    if (!(c->ids = malloc(((size_t)n + 1) * sizeof(int32_t)))) return oom();
    n = rm_tokenize(s->m->tok, text, len, s->m->add_bos, special, c->ids, n + 1);
    // a chat template that writes the BOS text itself gives it twice
    if (special && n >= 2 && s->m->add_bos && c->ids[0] == c->ids[1])
        memmove(c->ids, c->ids + 1, (size_t)--n * sizeof(int32_t));
    c->n_prompt = n;
    return 0;
}

// Token ids given as the prompt (checked against the vocabulary).
static int ids_into(job *j, choice *c, const rm_json *arr) {
    int n_vocab = j->s->m->hp.n_vocab;
    if (arr->n == 0) return bad(j, "prompt", "\"%s\" must not be empty%s", "");
    if (!(c->ids = malloc(arr->n * sizeof(int32_t)))) return oom();
    for (size_t i = 0; i < arr->n; i++) {
        const rm_json *t = &arr->items[i];
        if (t->type != RM_JSON_NUMBER || !t->is_int || t->inum < 0 || t->inum >= n_vocab)
            return bad(j, "prompt", "\"%s\" holds a token id outside the vocabulary%s", "");
        c->ids[i] = (int32_t)t->inum;
    }
    c->n_prompt = (int)arr->n;
    return 0;
}

// The text of a chat message's "content": a string, or a list of
// {"type": "text", "text"} parts (joined); NULL when it is neither.
static char *content_text(const rm_json *content) {
    if (!content) return NULL;
    if (content->type == RM_JSON_STRING) return strdup(content->str);
    if (content->type != RM_JSON_ARRAY) return NULL;
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_putn(&b, "", 0);
    for (size_t i = 0; i < content->n; i++) {
        const rm_json *part = &content->items[i];
        const rm_json *text = rm_json_get(part, "text");
        if (strcmp(rm_json_get_str(part, "type", ""), "text") || !text || text->type != RM_JSON_STRING) {
            rm_sb_free(&b);
            return NULL;
        }
        rm_sb_putn(&b, text->str, text->len);
    }
    if (b.oom) rm_sb_free(&b);
    return b.buf;
}

// The chat's messages rendered with the model's template into *prompt, the
// last user message (what adapters are retrieved by) into *query.
int openai_chat_prompt(job *j, const rm_json *req, char **prompt, char **query) {
    const rm_json *msgs = rm_json_get(req, "messages");
    if (!msgs || msgs->type != RM_JSON_ARRAY || msgs->n == 0 || msgs->n > 1024)
        return bad(j, "messages", "\"%s\" must be a list of 1 to 1024 {\"role\", \"content\"} objects%s", "");
    rm_chat_msg *cm = calloc(msgs->n, sizeof *cm);
    char **texts = calloc(msgs->n, sizeof *texts);
    int rc = !cm || !texts ? (oom()) : 0;
    for (size_t i = 0; !rc && i < msgs->n; i++) {
        const char *role = rm_json_get_str(&msgs->items[i], "role", NULL);
        if (role && !strcmp(role, "developer")) role = "system"; // OpenAI's newer name for it
        if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
            rc = bad(j, "messages", "\"%s\": each role must be system, developer, user or assistant%s", "");
        else if (!(texts[i] = content_text(rm_json_get(&msgs->items[i], "content"))))
            rc = bad(j, "messages",
                     "\"%s\": each content must be a string or a list of {\"type\": \"text\", \"text\"} parts%s", "");
        else {
            cm[i].role = role, cm[i].content = texts[i];
            if (!strcmp(role, "user")) *query = texts[i];
        }
    }
    if (!rc && !(*prompt = rm_chat_render(j->s->m->tok, NULL, cm, (int)msgs->n))) rc = 400;
    if (!rc && !(*query = strdup(*query ? *query : *prompt))) rc = oom();
    for (size_t i = 0; texts && i < msgs->n; i++) free(texts[i]);
    free(texts);
    free(cm);
    return rc;
}

// The choices: every prompt n times (choice index = prompt * n + sample).
static int make_choices(job *j, const rm_json *req, int n) {
    const rm_json *p = rm_json_get(req, j->chat ? "messages" : "prompt");
    size_t n_prompts = 1;
    int list_of_texts = 0;
    if (!j->chat) {
        if (!p || (p->type != RM_JSON_STRING && p->type != RM_JSON_ARRAY))
            return bad(j, "prompt",
                       "\"%s\" must be a string, a list of strings, a list of token ids or a list of those%s", "");
        if (p->type == RM_JSON_ARRAY) {
            if (p->n == 0 || p->n > MAX_PROMPTS) return bad(j, "prompt", "\"%s\" must hold 1 to 64 prompts%s", "");
            int ids = p->items[0].type == RM_JSON_NUMBER;
            list_of_texts = !ids;
            n_prompts = ids ? 1 : p->n;
        }
    }
    j->n_choices = (int)n_prompts * n, j->n_samples = n;
    if (!(j->ch = calloc((size_t)j->n_choices, sizeof *j->ch))) return oom();
    char *prompt = NULL, *query = NULL;
    int rc = 0;
    for (size_t i = 0; i < n_prompts && !rc; i++) {
        choice *c = &j->ch[i * (size_t)n];
        const rm_json *one = list_of_texts ? &p->items[i] : p;
        if (j->chat) {
            rc = openai_chat_prompt(j, req, &prompt, &query);
            if (!rc) rc = tokenize_into(j, c, prompt, 1);
        } else if (one->type == RM_JSON_STRING) {
            rc = tokenize_into(j, c, one->str, 0);
            if (!rc && j->echo && !(c->echo = strdup(one->str))) rc = oom();
            if (!rc && i == 0 && !(query = strdup(one->str))) rc = oom();
        } else if (one->type == RM_JSON_ARRAY &&
                   (!list_of_texts || one->n == 0 || one->items[0].type == RM_JSON_NUMBER)) {
            rc = ids_into(j, c, one);
        } else {
            rc = bad(j, "prompt",
                     "\"%s\" must be a string, a list of strings, a list of token ids or a list of those%s", "");
        }
        if (!rc && !j->chat && !query) { // token ids: adapters are retrieved by their text
            rm_sb t;
            rm_sb_init(&t);
            rm_detok d;
            rm_detok_init(&d, j->s->m->tok);
            for (int k = 0; k < c->n_prompt; k++) rm_detok_push_sb(&d, c->ids[k], &t);
            rm_detok_push_sb(&d, -1, &t);
            rm_sb_putn(&t, "", 0);
            query = t.buf;
            if (j->echo && query && !(c->echo = strdup(query))) rc = oom();
        }
        if (!rc && (int64_t)c->n_prompt + j->max_new > j->s->p.ctx)
            rc = bad(j, "max_tokens", "\"%s\": %s", "the prompt and the tokens asked for exceed the context");
        for (int k = 1; !rc && k < n; k++) { // the other samples of this prompt
            choice *o = &j->ch[i * (size_t)n + (size_t)k];
            if (!(o->ids = malloc((size_t)c->n_prompt * sizeof(int32_t)))) rc = oom();
            else memcpy(o->ids, c->ids, (size_t)c->n_prompt * sizeof(int32_t)), o->n_prompt = c->n_prompt;
            if (!rc && c->echo && !(o->echo = strdup(c->echo))) rc = oom();
        }
    }
    for (int i = 0; i < j->n_choices; i++) {
        j->ch[i].j = j, j->ch[i].index = i;
        rm_sb_init(&j->ch[i].text);
        rm_sb_init(&j->ch[i].lp), rm_sb_init(&j->ch[i].lp_tok), rm_sb_init(&j->ch[i].lp_top),
            rm_sb_init(&j->ch[i].lp_off);
        rm_detok_init(&j->ch[i].detok, j->s->m->tok);
    }
    if (!rc) rc = routes_choose_adapters(j->s, j, req, query ? query : "");
    free(prompt);
    free(query);
    return rc;
}

int openai_prepare(job *j, const rm_json *req) {
    rm_server *s = j->s;
    if (req->type != RM_JSON_OBJECT) return rm_errorf(RM_EINVAL, "the request body must be a JSON object"), 400;
    for (size_t i = 0; i < req->n; i++)
        if (!known(k_common, req->keys[i]) && !known(j->chat ? k_chat : k_completion, req->keys[i]))
            return bad(j, req->keys[i], "Unrecognized request argument supplied: %s%s", "");
    int rc = 0;
    if ((rc = want_type(j, req, "model", RM_JSON_STRING, "a string")) ||
        (rc = want_type(j, req, "user", RM_JSON_STRING, "a string")) ||
        (rc = want_type(j, req, "stream_options", RM_JSON_OBJECT, "an object")) || (rc = unsupported(j, req)) ||
        (rc = get_stop(j, req)))
        return rc;
    const char *model = rm_json_get_str(req, "model", NULL);
    if (!(j->model = strdup(model ? model : s->p.default_model ? s->p.default_model : s->base_name))) return oom();
    double temp, min_score;
    int64_t n, max_new, max_c, best_of, lp_n = 0;
    rm_sampler_params sp = rm_sampler_default_params();
    if ((rc = sampling_fields(j, req, &sp)) ||
        (rc = get_num(j, req, "temperature", 0, 2, sp.temperature, &temp)) || // OpenAI's range
        (rc = get_num(j, req, "min_score", -1e30, 1e30, -INFINITY, &min_score)) ||
        (rc = get_int(j, req, "n", 1, MAX_N, 1, &n)) || (rc = get_int(j, req, "best_of", 1, MAX_N, n, &best_of)) ||
        (rc = get_int(j, req, "max_tokens", 0, 1 << 20, 16, &max_new)) ||
        (rc = get_int(j, req, "max_completion_tokens", 0, 1 << 20, -1, &max_c)) ||
        (rc = get_bool(j, req, "stream", &j->stream)) || (rc = get_bool(j, req, "echo", &j->echo)))
        return rc;
    if (best_of != n) return bad(j, "best_of", "\"%s\" other than n is not supported%s", "");
    j->sp = sp;
    j->max_new = (int)(max_c >= 0 ? max_c : max_new);
    const rm_json *so = rm_json_get(req, "stream_options");
    if (so && so->type == RM_JSON_OBJECT) {
        if (!j->stream) return bad(j, "stream_options", "\"%s\" is only allowed with \"stream\": true%s", "");
        if ((rc = get_bool(j, so, "include_usage", &j->include_usage)))
            return snprintf(j->param, sizeof j->param, "stream_options.include_usage"), rc;
    }
    if (j->chat) { // "logprobs": true, "top_logprobs": N
        if ((rc = get_bool(j, req, "logprobs", &j->logprobs)) ||
            (rc = get_int(j, req, "top_logprobs", 0, MAX_TOP, 0, &lp_n)))
            return rc;
        if (lp_n && !j->logprobs) return bad(j, "top_logprobs", "\"%s\" needs \"logprobs\": true%s", "");
    } else { // "logprobs": N (alternatives per token)
        const rm_json *v = rm_json_get(req, "logprobs");
        if ((rc = get_int(j, req, "logprobs", 0, MAX_TOP, -1, &lp_n))) return rc;
        j->logprobs = v && v->type == RM_JSON_NUMBER;
        if (lp_n < 0) lp_n = 0;
        if (j->logprobs && j->echo)
            return bad(j, "logprobs", "\"%s\" together with \"echo\" is not supported (no prompt logprobs)%s", "");
    }
    j->n_top = (int)lp_n;
    j->mode = RM_COMPOSE_MIXTURE;
    const char *cs = rm_json_get_str(req, "compose", NULL);
    if ((rc = want_type(j, req, "compose", RM_JSON_STRING, "a string"))) return rc;
    if (cs && rm_compose_parse(cs, &j->mode)) return snprintf(j->param, sizeof j->param, "compose"), 400;
    if (!s->m->tok) return rm_errorf(RM_EINVAL, "the model has no tokenizer"), 400;
    if ((rc = make_choices(j, req, (int)n))) return rc;
    if (!cs && j->auto_compose && s->router) j->mode = RM_COMPOSE_ROUTER; // the server's default composition
    else if (!cs && j->pick.n == 1) j->mode = RM_COMPOSE_SELECTION;
    if (j->mode == RM_COMPOSE_ROUTER && j->pick.n && !s->router)
        return bad(j, "compose", "\"%s\": this server has no router (start it with --router FILE)%s", "");
    if ((rc = get_bool(j, req, "return_routing", &j->return_routing))) return rc;
    for (int i = 0; j->return_routing && j->mode == RM_COMPOSE_ROUTER && j->pick.n && i < j->n_choices; i++) {
        rm_route_stats *r = &j->ch[i].route;
        r->n_layer = s->m->hp.n_layer, r->k = j->pick.n;
        r->sum = calloc((size_t)r->n_layer * (size_t)r->k, sizeof *r->sum);
        r->n = calloc((size_t)r->n_layer, sizeof *r->n);
        if (!r->sum || !r->n) return oom();
    }
    if (j->pick.n) server_hold(s, j);
    for (int i = 0; i < j->pick.n; i++)
        if (server_adapter_get(s, j->pick.name[i], j->pick.weights[i], &j->lora[i])) return 400;
    return 0;
}

void openai_reply_error(job *j, int status, const char *msg) {
    rm_http_reply_error_at(j->r, status, j->param,
                           status == 404 && !strcmp(j->param, "model") ? "model_not_found" : NULL, msg);
}

// ---- answers ---------------------------------------------------------------------

// The head every answer and chunk shares: {"id", "object", "created", "model".
static void head(rm_sb *b, const job *j, const char *object) {
    rm_sb_printf(b, "{\"id\": \"%s-%ld\", \"object\": \"%s\", \"created\": %lld, \"model\": ",
                 j->chat ? "chatcmpl" : "cmpl", j->id, object, j->created);
    rm_sb_json_str(b, j->model, strlen(j->model));
}

static void usage_json(rm_sb *b, const job *j) {
    long long p = 0, c = 0;
    for (int i = 0; i < j->n_choices; i++) {
        c += j->ch[i].n_out;
        if (i % j->n_samples == 0) p += j->ch[i].n_prompt; // each prompt counts once, however many samples it has
    }
    rm_sb_printf(b, "\"usage\": {\"prompt_tokens\": %lld, \"completion_tokens\": %lld, \"total_tokens\": %lld}", p, c,
                 p + c);
}

// The adapters a request used, with their scores: "adapters": [...].
static void adapters_json(rm_sb *b, const rm_pick *pk) {
    rm_sb_puts(b, "\"adapters\": [");
    for (int i = 0; i < pk->n; i++) {
        rm_sb_puts(b, i ? ", {\"name\": " : "{\"name\": ");
        rm_sb_json_str(b, pk->name[i], strlen(pk->name[i]));
        rm_sb_puts(b, ", \"score\": ");
        rm_sb_json_num(b, pk->score[i]);
        rm_sb_puts(b, "}");
    }
    rm_sb_puts(b, "]");
}

// The logprobs gathered since they were last answered, as a "logprobs" value; then none are pending.
static void logprobs_json(rm_sb *b, choice *c) {
    const job *j = c->j;
    if (!j->logprobs) {
        rm_sb_puts(b, "null");
    } else if (j->chat) {
        rm_sb_puts(b, "{\"content\": [");
        rm_sb_putn(b, c->lp.buf ? c->lp.buf : "", c->lp.len);
        rm_sb_puts(b, "], \"refusal\": null}");
    } else {
        rm_sb_puts(b, "{\"tokens\": [");
        rm_sb_putn(b, c->lp_tok.buf ? c->lp_tok.buf : "", c->lp_tok.len);
        rm_sb_puts(b, "], \"token_logprobs\": [");
        rm_sb_putn(b, c->lp.buf ? c->lp.buf : "", c->lp.len);
        rm_sb_puts(b, "], \"top_logprobs\": [");
        rm_sb_putn(b, c->lp_top.buf ? c->lp_top.buf : "", c->lp_top.len);
        rm_sb_puts(b, "], \"text_offset\": [");
        rm_sb_putn(b, c->lp_off.buf ? c->lp_off.buf : "", c->lp_off.len);
        rm_sb_puts(b, "]}");
    }
    c->lp.len = c->lp_tok.len = c->lp_top.len = c->lp_off.len = 0;
    c->n_lp = 0;
}

// "routing": the router's mean weight of each adapter in each layer over the
// rows it routed (the answer's tokens), or null.
static void routing_json(rm_sb *b, const choice *c) {
    const rm_route_stats *r = &c->route;
    rm_sb_puts(b, "\"routing\": ");
    if (!r->sum) {
        rm_sb_puts(b, "null");
        return;
    }
    rm_sb_puts(b, "{\"adapters\": [");
    for (int i = 0; i < r->k; i++) {
        if (i) rm_sb_puts(b, ", ");
        rm_sb_json_str(b, c->j->pick.name[i], strlen(c->j->pick.name[i]));
    }
    rm_sb_puts(b, "], \"layers\": [");
    for (int l = 0; l < r->n_layer; l++) {
        rm_sb_puts(b, l ? ", [" : "[");
        for (int i = 0; i < r->k; i++) {
            if (i) rm_sb_puts(b, ", ");
            rm_sb_json_num(b, r->n[l] ? r->sum[(size_t)l * r->k + i] / (double)r->n[l] : 0);
        }
        rm_sb_puts(b, "]");
    }
    rm_sb_puts(b, "]}");
}

static void answer(job *j) {
    rm_sb b;
    rm_sb_init(&b);
    head(&b, j, j->chat ? "chat.completion" : "text_completion");
    rm_sb_puts(&b, ", \"choices\": [");
    for (int i = 0; i < j->n_choices; i++) {
        choice *c = &j->ch[i];
        rm_sb_printf(&b, "%s{\"index\": %d, ", i ? ", " : "", i);
        if (j->chat) rm_sb_puts(&b, "\"message\": {\"role\": \"assistant\", \"content\": ");
        else rm_sb_puts(&b, "\"text\": ");
        rm_sb text;
        rm_sb_init(&text);
        if (c->echo) rm_sb_puts(&text, c->echo);
        rm_sb_putn(&text, c->text.buf ? c->text.buf : "", c->text.len);
        rm_sb_json_str(&b, text.buf ? text.buf : "", text.len);
        rm_sb_free(&text);
        rm_sb_puts(&b, j->chat ? ", \"refusal\": null}, \"logprobs\": " : ", \"logprobs\": ");
        logprobs_json(&b, c);
        rm_sb_printf(&b, ", \"finish_reason\": \"%s\", \"token_ids\": [", c->finish);
        for (int k = 0; k < c->n_out; k++) rm_sb_printf(&b, k ? ", %d" : "%d", c->out[k]);
        rm_sb_puts(&b, "]");
        if (j->return_routing) {
            rm_sb_puts(&b, ", ");
            routing_json(&b, c);
        }
        rm_sb_puts(&b, "}");
    }
    rm_sb_puts(&b, "], ");
    usage_json(&b, j);
    rm_sb_puts(&b, ", ");
    adapters_json(&b, &j->pick);
    rm_sb_puts(&b, "}\n");
    if (b.oom) rm_http_reply_error(j->r, 500, "out of memory");
    else rm_http_reply(j->r, 200, "application/json", b.buf, b.len);
    rm_sb_free(&b);
}

// One chunk of a stream: text (len bytes; role: the chat's first), the
// pending logprobs, the finish reason (NULL: none yet).
static void chunk(choice *c, const char *text, size_t len, int role, const char *finish) {
    job *j = c->j;
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "data: ");
    head(&b, j, j->chat ? "chat.completion.chunk" : "text_completion");
    rm_sb_printf(&b, ", \"choices\": [{\"index\": %d, ", c->index);
    if (j->chat) {
        rm_sb_puts(&b, "\"delta\": {");
        if (role) rm_sb_puts(&b, "\"role\": \"assistant\", ");
        if (len || role || !finish) {
            rm_sb_puts(&b, "\"content\": ");
            rm_sb_json_str(&b, text, len);
        }
        rm_sb_puts(&b, "}");
    } else {
        rm_sb_puts(&b, "\"text\": ");
        rm_sb_json_str(&b, text, len);
    }
    rm_sb_puts(&b, ", \"logprobs\": ");
    if (c->n_lp) logprobs_json(&b, c);
    else rm_sb_puts(&b, "null");
    if (finish && j->return_routing) {
        rm_sb_puts(&b, ", ");
        routing_json(&b, c);
    }
    if (finish) rm_sb_printf(&b, ", \"finish_reason\": \"%s\"}]", finish);
    else rm_sb_puts(&b, ", \"finish_reason\": null}]");
    if (finish) { // a choice's last chunk: the adapters, as the whole answer has them
        rm_sb_puts(&b, ", ");
        adapters_json(&b, &j->pick);
    }
    rm_sb_puts(&b, j->include_usage ? ", \"usage\": null}\n\n" : "}\n\n");
    if (!b.oom) rm_http_stream_write(j->r, b.buf, b.len);
    rm_sb_free(&b);
}

void openai_stream_open(job *j) {
    rm_http_stream_open(j->r, 200, "text/event-stream");
    for (int i = 0; i < j->n_choices; i++) {
        choice *c = &j->ch[i];
        if (j->chat) chunk(c, "", 0, 1, NULL);
        else if (c->echo) chunk(c, c->echo, strlen(c->echo), 0, NULL);
    }
}

// Streaming: sends the text that no stop string can still claim (held-back
// bytes end on a UTF-8 character boundary).
static void stream_text(choice *c, int final) {
    size_t safe = c->text.len;
    if (!final && c->j->max_stop > 1) {
        safe = safe > c->j->max_stop - 1 ? safe - (c->j->max_stop - 1) : 0;
        while (safe > c->sent && ((unsigned char)c->text.buf[safe] & 0xC0) == 0x80) safe--;
    }
    if (safe > c->sent || (c->n_lp && final)) {
        chunk(c, c->text.buf + c->sent, safe - c->sent, 0, NULL);
        c->sent = safe;
    }
}

// One token's logprob and its n_top alternatives, from the logits.
static void add_logprob(choice *c, int32_t id, const float *logits) {
    job *j = c->j;
    const rm_tokenizer *tok = j->s->m->tok;
    int n = j->s->m->hp.n_vocab;
    double mx = logits[0], sum = 0;
    for (int i = 1; i < n; i++) mx = logits[i] > mx ? logits[i] : mx;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    double lse = mx + log(sum);
    int top[MAX_TOP], nt = 0; // best first
    for (int i = 0; i < n && j->n_top; i++) {
        if (nt == j->n_top && logits[i] <= logits[top[nt - 1]]) continue;
        int k = nt < j->n_top ? nt++ : nt - 1;
        while (k > 0 && logits[top[k - 1]] < logits[i]) top[k] = top[k - 1], k--;
        top[k] = i;
    }
    char piece[256];
    int pl = rm_token_to_bytes(tok, id, 1, piece, sizeof piece);
    if (pl < 0) pl = 0;
    if (pl > (int)sizeof piece) pl = sizeof piece;
    const char *sep = c->n_lp ? ", " : "";
    if (j->chat) {
        rm_sb_printf(&c->lp, "%s{\"token\": ", sep);
        rm_sb_json_str(&c->lp, piece, (size_t)pl);
        rm_sb_puts(&c->lp, ", \"logprob\": ");
        rm_sb_json_num(&c->lp, logits[id] - lse);
        rm_sb_puts(&c->lp, ", \"bytes\": [");
        for (int k = 0; k < pl; k++) rm_sb_printf(&c->lp, k ? ", %d" : "%d", (unsigned char)piece[k]);
        rm_sb_puts(&c->lp, "], \"top_logprobs\": [");
        for (int t = 0; t < nt; t++) {
            char alt[256];
            int al = rm_token_to_bytes(tok, top[t], 1, alt, sizeof alt);
            al = al < 0 ? 0 : al > (int)sizeof alt ? (int)sizeof alt : al;
            rm_sb_puts(&c->lp, t ? ", {\"token\": " : "{\"token\": ");
            rm_sb_json_str(&c->lp, alt, (size_t)al);
            rm_sb_puts(&c->lp, ", \"logprob\": ");
            rm_sb_json_num(&c->lp, logits[top[t]] - lse);
            rm_sb_puts(&c->lp, ", \"bytes\": [");
            for (int k = 0; k < al; k++) rm_sb_printf(&c->lp, k ? ", %d" : "%d", (unsigned char)alt[k]);
            rm_sb_puts(&c->lp, "]}");
        }
        rm_sb_puts(&c->lp, "]}");
    } else {
        rm_sb_puts(&c->lp_tok, sep);
        rm_sb_json_str(&c->lp_tok, piece, (size_t)pl);
        rm_sb_puts(&c->lp, sep);
        rm_sb_json_num(&c->lp, logits[id] - lse);
        rm_sb_printf(&c->lp_top, "%s{", sep);
        for (int t = 0; t < nt; t++) {
            char alt[256];
            int al = rm_token_to_bytes(tok, top[t], 1, alt, sizeof alt);
            al = al < 0 ? 0 : al > (int)sizeof alt ? (int)sizeof alt : al;
            if (t) rm_sb_puts(&c->lp_top, ", ");
            rm_sb_json_str(&c->lp_top, alt, (size_t)al);
            rm_sb_puts(&c->lp_top, ": ");
            rm_sb_json_num(&c->lp_top, logits[top[t]] - lse);
        }
        rm_sb_puts(&c->lp_top, "}");
        rm_sb_printf(&c->lp_off, "%s%zu", sep, c->text.len + (c->echo ? strlen(c->echo) : 0));
    }
    c->n_lp++;
}

// Cuts the text at the first stop string that ends in its last `fresh`
// bytes; 1 when one did.
static int cut_at_stop(choice *c, size_t fresh) {
    job *j = c->j;
    for (int s = 0; s < j->n_stop; s++) {
        size_t sl = strlen(j->stop[s]);
        size_t from = c->text.len > fresh + sl ? c->text.len - fresh - sl : 0;
        const char *hit = c->text.len ? memmem(c->text.buf + from, c->text.len - from, j->stop[s], sl) : NULL;
        if (hit) {
            c->text.len = (size_t)(hit - c->text.buf);
            c->text.buf[c->text.len] = 0;
            c->stopped = 1;
        }
    }
    return c->stopped;
}

int openai_token(void *user, int32_t id, const float *logits) {
    choice *c = user;
    job *j = c->j;
    if (j->t_first == 0) j->t_first = rm_http_now();
    if (c->stopped || rm_tokenizer_is_eog(j->s->m->tok, id)) return 0;
    if (j->logprobs) add_logprob(c, id, logits);
    size_t before = c->text.len;
    rm_detok_push_sb(&c->detok, id, &c->text);
    int stop = j->n_stop && cut_at_stop(c, c->text.len - before);
    if (j->stream) stream_text(c, stop);
    return stop;
}

int openai_gone(void *user) {
    const choice *c = user;
    return c->j->stream && rm_http_gone(c->j->r);
}

void openai_done(void *user, const int32_t *tokens, int n, const char *reason) {
    choice *c = user;
    job *j = c->j;
    if (!tokens) {
        if (!j->failed) snprintf(j->err, sizeof j->err, "%s", rm_last_error());
        j->failed = 1;
        c->finish = "error";
    } else {
        if (!c->stopped) {
            size_t before = c->text.len;
            rm_detok_push_sb(&c->detok, -1, &c->text);
            if (j->n_stop) cut_at_stop(c, c->text.len - before);
        }
        c->finish = c->stopped ? "stop" : reason;
        c->n_out = n;
        if ((c->out = malloc(((size_t)n + 1) * sizeof(int32_t)))) memcpy(c->out, tokens, (size_t)n * sizeof(int32_t));
        else c->n_out = 0;
        if (j->stream) {
            stream_text(c, 1);
            chunk(c, "", 0, 0, c->finish);
        }
    }
    if (++j->n_done < j->n_choices) return;
    server_log_job(j);
    if (j->stream) {
        if (j->failed) {
            rm_sb b;
            rm_sb_init(&b);
            rm_sb_puts(&b, "data: ");
            rm_http_error_json(&b, 500, NULL, NULL, j->err);
            rm_sb_puts(&b, "\n");
            if (!b.oom) rm_http_stream_write(j->r, b.buf, b.len);
            rm_sb_free(&b);
        } else if (j->include_usage) {
            rm_sb b;
            rm_sb_init(&b);
            rm_sb_puts(&b, "data: ");
            head(&b, j, j->chat ? "chat.completion.chunk" : "text_completion");
            rm_sb_puts(&b, ", \"choices\": [], ");
            usage_json(&b, j);
            rm_sb_puts(&b, "}\n\n");
            if (!b.oom) rm_http_stream_write(j->r, b.buf, b.len);
            rm_sb_free(&b);
        }
        rm_http_stream_write(j->r, "data: [DONE]\n\n", 14);
        rm_http_stream_close(j->r);
    } else if (j->failed) {
        rm_http_reply_error(j->r, 500, j->err);
    } else {
        answer(j);
    }
    job_free(j);
}
