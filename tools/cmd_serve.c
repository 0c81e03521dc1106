// cmd_serve.c — `ramole serve`: an HTTP server for one base model and a pool
// of LoRA adapters (RAMoLE): each completion request names its adapters or
// has them retrieved from its prompt; all running requests advance together
// in one batched forward pass per step (src/serve/engine.c); adapters can be
// uploaded into the pool while it runs.
//
// One thread runs the event loop (poll) and the engine; the forward pass
// uses the thread pool. HTTP/1.1 with keep-alive (requests on one connection
// are answered in order; streamed answers close it).
#include "cli.h"
#include "lora/router.h"
#include "lora/cache.h"
#include "retrieve/pick.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "lora/adapter.h"
#include "serve/engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_CLIENTS = 256, MAX_HEAD = 16384, MAX_BODY = 4 << 20, MAX_ADAPTERS = RM_PLAN_MAX, IDLE_SECONDS = 60 };

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

typedef struct client {
    int fd;                 // -1 once the peer is gone (the struct lives on while its request runs)
    int state;              // 0 reading, 1 running in the engine, 2 writing, 3 running and streaming
    rm_sb in, out;
    size_t sent;
    long id;
    int n_prompt;
    int chat;               // answer as chat.completion (else text_completion)
    int stream;             // server-sent events, a chunk per piece of text
    rm_detok detok;         // streaming: text so far (partial UTF-8 held back)
    rm_pick pick;         // adapters by name and score (retrieved or named)
    int keep;               // keep the connection open after this response (HTTP/1.1 keep-alive)
    time_t last;            // last bytes read or written: a connection idle for IDLE_SECONDS while reading is closed
    size_t consumed;        // bytes of c->in that made this request (the next may follow)
    struct server *srv;
} client;

typedef struct server {
    rm_llama *m;
    rm_engine *eng;
    rm_pool *pool;
    const char *model_path;
    rm_lora_cache cache;    // adapters loaded and bound to the model
    client *cl[MAX_CLIENTS];
    long next_id;
    time_t started;
    long long n_completions, n_uploads, n_errors; // for GET /metrics
} server;

// ---- responses ---------------------------------------------------------------

static const char *status_text(int code) {
    switch (code) {
    case 200: return "OK";
    case 201: return "Created";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 503: return "Service Unavailable";
    default: return "Internal Server Error";
    }
}

// The whole answer (head and body) into c->out; the connection writes it next.
static void respond_as(client *c, int code, const char *type, const rm_sb *body) {
    if (code >= 400) c->srv->n_errors++;
    rm_sb_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n", code,
                 status_text(code), type, body->len, c->keep ? "keep-alive" : "close");
    rm_sb_putn(&c->out, body->buf ? body->buf : "", body->len);
    c->state = 2;
}

static void respond(client *c, int code, const rm_sb *body) { respond_as(c, code, "application/json", body); }

static void respond_error(client *c, int code, const char *msg) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "{\"error\": {\"message\": ");
    rm_sb_json_str(&b, msg, strlen(msg));
    rm_sb_printf(&b, ", \"code\": %d}}\n", code);
    respond(c, code, &b);
    rm_sb_free(&b);
}

// ---- POST /v1/completions ------------------------------------------------------

// One server-sent event with a piece of text (and the finish reason at the end).
static void stream_event(client *c, const char *text, size_t len, const char *reason) {
    rm_sb *b = &c->out;
    rm_sb_printf(b, "data: {\"id\": \"%s-%ld\", \"object\": \"%s\", \"choices\": [{\"index\": 0, ", c->chat ? "chatcmpl" : "cmpl",
                 c->id, c->chat ? "chat.completion.chunk" : "text_completion");
    rm_sb_puts(b, c->chat ? "\"delta\": {\"content\": " : "\"text\": ");
    rm_sb_json_str(b, text, len);
    rm_sb_puts(b, c->chat ? "}" : "");
    if (reason) rm_sb_printf(b, ", \"finish_reason\": \"%s\"}]}\n\n", reason);
    else rm_sb_puts(b, ", \"finish_reason\": null}]}\n\n");
}

// The text of id (id < 0: the held-back bytes) as one event, when there is any.
static void stream_text(client *c, int32_t id, const char *reason) {
    rm_sb piece;
    rm_sb_init(&piece);
    rm_detok_push_sb(&c->detok, id, &piece);
    if (piece.len || reason) stream_event(c, piece.buf ? piece.buf : "", piece.len, reason);
    rm_sb_free(&piece);
}

static void stream_token(void *user, int32_t id) {
    client *c = user;
    if (c->fd >= 0 && !rm_tokenizer_is_eog(c->srv->m->tok, id)) stream_text(c, id, NULL);
}

static void completion_done(void *user, const int32_t *tokens, int n, const char *reason) {
    client *c = user;
    server *s = c->srv;
    if (c->stream) {
        if (!tokens) rm_sb_puts(&c->out, "data: {\"error\": {\"message\": \"the forward pass failed\", \"code\": 500}}\n\n");
        else stream_text(c, -1, reason);
        rm_sb_puts(&c->out, "data: [DONE]\n\n");
        c->state = 2;
        return;
    }
    if (!tokens) {
        respond_error(c, 500, rm_last_error());
    } else {
        rm_sb text, b;
        rm_sb_init(&text);
        rm_sb_init(&b);
        if (s->m->tok) {
            rm_detok d;
            rm_detok_init(&d, s->m->tok);
            for (int i = 0; i < n; i++)
                if (!rm_tokenizer_is_eog(s->m->tok, tokens[i])) rm_detok_push_sb(&d, tokens[i], &text);
            rm_detok_push_sb(&d, -1, &text);
        }
        rm_sb_printf(&b, "{\"id\": \"%s-%ld\", \"object\": \"%s\", \"model\": ", c->chat ? "chatcmpl" : "cmpl", c->id,
                     c->chat ? "chat.completion" : "text_completion");
        rm_sb_json_str(&b, s->model_path, strlen(s->model_path));
        rm_sb_puts(&b, c->chat ? ", \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": "
                               : ", \"choices\": [{\"index\": 0, \"text\": ");
        rm_sb_json_str(&b, text.buf ? text.buf : "", text.len);
        if (c->chat) rm_sb_puts(&b, "}");
        rm_sb_printf(&b, ", \"finish_reason\": \"%s\", \"token_ids\": [", reason);
        for (int i = 0; i < n; i++) rm_sb_printf(&b, i ? ", %d" : "%d", tokens[i]);
        rm_sb_printf(&b, "]}], \"usage\": {\"prompt_tokens\": %d, \"completion_tokens\": %d, \"total_tokens\": %d}, \"adapters\": [",
                     c->n_prompt, n, c->n_prompt + n);
        for (int i = 0; i < c->pick.n; i++) {
            rm_sb_puts(&b, i ? ", {\"name\": " : "{\"name\": ");
            rm_sb_json_str(&b, c->pick.name[i], strlen(c->pick.name[i]));
            rm_sb_puts(&b, ", \"score\": ");
            rm_sb_json_num(&b, c->pick.score[i]);
            rm_sb_puts(&b, "}");
        }
        rm_sb_puts(&b, "]}\n");
        respond(c, 200, &b);
        rm_sb_free(&text);
        rm_sb_free(&b);
    }
}

// The HTTP status of a pick's result: 0, 404 (no such adapter), 400 (one
// without weights, too many), 500.
static int pick_status(int rc) {
    return rc == RM_OK ? 0 : rc == RM_ENOTFOUND ? 404 : rc == RM_EINVAL || rc == RM_EFULL ? 400 : 500;
}

// Fills c->pick from "adapters": [names] or "retrieve": k; 0 or an HTTP status (message set).
static int choose_adapters(server *s, client *c, const rm_json *req, const char *prompt) {
    const rm_json *names = rm_json_get(req, "adapters");
    int64_t k = rm_json_get_int(req, "retrieve", 0);
    const char *model = rm_json_get_str(req, "model", NULL);
    if (!names && k == 0 && model && s->pool && rm_pool_id(s->pool, model) >= 0) // OpenAI style: the adapter as the model
        return pick_status(rm_pool_pick_named(s->pool, model, &c->pick));
    if (!names && k == 0) return 0;
    if (!s->pool) return rm_errorf(RM_EINVAL, "this server has no adapter pool (start it with --pool DIR)"), 400;
    if (names) {
        if (names->type != RM_JSON_ARRAY || names->n > MAX_ADAPTERS)
            return rm_errorf(RM_EINVAL, "\"adapters\" must be an array of at most %d names", MAX_ADAPTERS), 400;
        for (size_t i = 0; i < names->n; i++) {
            const rm_json *v = &names->items[i];
            if (v->type != RM_JSON_STRING) return rm_errorf(RM_EINVAL, "\"adapters\" must hold names"), 400;
            int code = pick_status(rm_pool_pick_named(s->pool, v->str, &c->pick));
            if (code) return code;
        }
        return 0;
    }
    if (k < 0 || k > MAX_ADAPTERS) return rm_errorf(RM_EINVAL, "\"retrieve\" must be 0..%d", MAX_ADAPTERS), 400;
    float min_score = (float)rm_json_get_num(req, "min_score", -INFINITY);
    if (rm_pool_pick(s->pool, prompt, (int)k, min_score, &c->pick)) return 500;
    return 0;
}

// Runs a request: prompt is the text the model continues (special tokens
// parsed when `special`), query the text adapters are retrieved by.
static void start_request(server *s, client *c, const rm_json *req, const char *prompt, const char *query, int special) {
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = (float)rm_json_get_num(req, "temperature", sp.temperature);
    sp.top_p = (float)rm_json_get_num(req, "top_p", sp.top_p);
    sp.top_k = (int)rm_json_get_int(req, "top_k", sp.top_k);
    sp.min_p = (float)rm_json_get_num(req, "min_p", sp.min_p);
    sp.repeat_penalty = (float)rm_json_get_num(req, "repeat_penalty", sp.repeat_penalty);
    sp.seed = (uint64_t)rm_json_get_int(req, "seed", (int64_t)sp.seed);
    int64_t max_new = rm_json_get_int(req, "max_tokens", 16);
    if (max_new < 0 || max_new > (1 << 20)) return respond_error(c, 400, "\"max_tokens\" must be 0..1048576");
    rm_compose_mode mode = RM_COMPOSE_MIXTURE;
    const char *cs = rm_json_get_str(req, "compose", NULL);
    if (cs && rm_compose_parse(cs, &mode)) return respond_error(c, 400, rm_last_error());
    int code = choose_adapters(s, c, req, query);
    if (code) return respond_error(c, code, rm_last_error());
    if (!cs && c->pick.n == 1) mode = RM_COMPOSE_SELECTION;
    rm_lora *lora[MAX_ADAPTERS];
    for (int i = 0; i < c->pick.n; i++)
        if (rm_lora_cache_get(&s->cache, c->pick.name[i], c->pick.weights[i], &lora[i])) return respond_error(c, 400, rm_last_error());
    size_t len = strlen(prompt);
    int n = rm_tokenize(s->m->tok, prompt, len, s->m->add_bos, special, NULL, 0);
    int32_t *ids = n >= 0 ? malloc(((size_t)n + 1) * sizeof(int32_t)) : NULL;
    if (!ids) return respond_error(c, n < 0 ? 400 : 500, n < 0 ? rm_last_error() : "out of memory");
    n = rm_tokenize(s->m->tok, prompt, len, s->m->add_bos, special, ids, n + 1);
    // a chat template that writes the BOS text itself gives it twice
    if (special && n >= 2 && s->m->add_bos && ids[0] == ids[1]) memmove(ids, ids + 1, (size_t)--n * sizeof(int32_t));
    c->n_prompt = n;
    c->stream = rm_json_get_bool(req, "stream", 0);
    if (c->stream) { // events until the connection closes
        c->keep = 0;
        rm_detok_init(&c->detok, s->m->tok);
        rm_sb_puts(&c->out, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n");
    }
    c->state = c->stream ? 3 : 1; // the engine owns the request until completion_done
    s->n_completions++;
    rm_engine_cbs cb = {completion_done, c->stream ? stream_token : NULL, c};
    if (rm_engine_submit(s->eng, ids, n, (int)max_new, &sp, lora, c->pick.n, mode, &cb)) {
        c->state = 0, c->stream = 0;
        c->out.len = 0;
        respond_error(c, 400, rm_last_error());
    }
    free(ids);
}

static void handle_completion(server *s, client *c, const rm_json *req) {
    const char *prompt = rm_json_get_str(req, "prompt", NULL);
    if (!prompt) return respond_error(c, 400, "\"prompt\" (a string) is required");
    if (!s->m->tok) return respond_error(c, 400, "the model has no tokenizer");
    start_request(s, c, req, prompt, prompt, 0);
}

// {"messages": [{"role": "system"|"user"|"assistant", "content"}...]}: the
// model's chat template renders them; adapters are retrieved by the last
// user message (the request's input, as LoraRetriever embeds it).
static void handle_chat(server *s, client *c, const rm_json *req) {
    const rm_json *msgs = rm_json_get(req, "messages");
    if (!msgs || msgs->type != RM_JSON_ARRAY || msgs->n == 0 || msgs->n > 1024)
        return respond_error(c, 400, "\"messages\" must be an array of 1..1024 {\"role\", \"content\"} objects");
    if (!s->m->tok) return respond_error(c, 400, "the model has no tokenizer");
    rm_chat_msg *cm = malloc(msgs->n * sizeof *cm);
    if (!cm) return respond_error(c, 500, "out of memory");
    const char *query = NULL;
    for (size_t i = 0; i < msgs->n; i++) {
        cm[i].role = rm_json_get_str(&msgs->items[i], "role", NULL);
        cm[i].content = rm_json_get_str(&msgs->items[i], "content", NULL);
        if (!cm[i].role || !cm[i].content ||
            (strcmp(cm[i].role, "system") && strcmp(cm[i].role, "user") && strcmp(cm[i].role, "assistant"))) {
            free(cm);
            return respond_error(c, 400, "each message needs \"role\" (system, user or assistant) and \"content\" strings");
        }
        if (!strcmp(cm[i].role, "user")) query = cm[i].content;
    }
    char *prompt = rm_chat_render(s->m->tok, NULL, cm, (int)msgs->n);
    free(cm);
    if (!prompt) return respond_error(c, 400, rm_last_error());
    c->chat = 1;
    start_request(s, c, req, prompt, query ? query : prompt, 1);
    free(prompt);
}

// ---- /v1/adapters ----------------------------------------------------------------

static void handle_list(server *s, client *c) {
    if (!s->pool) return respond_error(c, 400, "this server has no adapter pool (start it with --pool DIR)");
    rm_adapter_info *v;
    int n;
    if (rm_pool_list(s->pool, &v, &n)) return respond_error(c, 500, rm_last_error());
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
    respond(c, 200, &b);
    rm_sb_free(&b);
}

// Upload: {"name", "samples": [texts], "weights": path, "task"?, "domain"?}.
// The adapter is loaded and checked against the model before the pool stores
// it; a bad one is refused with the reason and nothing changes.
static void handle_upload(server *s, client *c, const rm_json *req) {
    if (!s->pool) return respond_error(c, 400, "this server has no adapter pool (start it with --pool DIR)");
    const char *name = rm_json_get_str(req, "name", NULL), *weights = rm_json_get_str(req, "weights", NULL);
    const rm_json *samples = rm_json_get(req, "samples");
    if (!name || !*name || !weights) return respond_error(c, 400, "\"name\" and \"weights\" (strings) are required");
    if (!samples || samples->type != RM_JSON_ARRAY || samples->n == 0 || samples->n > 1000)
        return respond_error(c, 400, "\"samples\" must be an array of 1..1000 sample inputs");
    const char **in = malloc(samples->n * sizeof *in);
    if (!in) return respond_error(c, 500, "out of memory");
    for (size_t i = 0; i < samples->n; i++) {
        if (samples->items[i].type != RM_JSON_STRING) { free(in); return respond_error(c, 400, "\"samples\" must hold strings"); }
        in[i] = samples->items[i].str;
    }
    if (rm_pool_id(s->pool, name) >= 0) { free(in); return respond_error(c, 400, "an adapter with this name is already in the pool"); }
    rm_lora *loaded;
    if (rm_lora_cache_get(&s->cache, name, weights, &loaded)) { // loaded, checked against the model and kept for its first request
        free(in);
        return respond_error(c, 400, rm_last_error());
    }
    rm_adapter_info info = {.name = name, .weights = weights, .task = rm_json_get_str(req, "task", NULL),
                            .domain = rm_json_get_str(req, "domain", NULL), .base_model = s->model_path};
    int64_t id = -1;
    int rc = rm_pool_add(s->pool, &info, in, NULL, (int)samples->n, &id);
    free(in);
    if (rc) return respond_error(c, 400, rm_last_error());
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_printf(&b, "{\"id\": %lld, \"name\": ", (long long)id);
    rm_sb_json_str(&b, name, strlen(name));
    rm_sb_printf(&b, ", \"pool_size\": %d}\n", rm_pool_size(s->pool));
    s->n_uploads++;
    respond(c, 201, &b);
    rm_sb_free(&b);
}

// ---- GET /metrics ----------------------------------------------------------------

// One counter or gauge in the Prometheus text format.
static void metric(rm_sb *b, const char *name, const char *type, const char *help, double v) {
    rm_sb_printf(b, "# HELP ramole_%s %s\n# TYPE ramole_%s %s\nramole_%s %.17g\n", name, help, name, type, name, v);
}

static void handle_metrics(server *s, client *c) {
    rm_engine_stats st;
    rm_engine_get_stats(s->eng, &st);
    rm_sb b;
    rm_sb_init(&b);
    metric(&b, "requests_running", "gauge", "Sequences in a slot of the engine.", st.running);
    metric(&b, "requests_waiting", "gauge", "Sequences queued for a free slot.", st.waiting);
    metric(&b, "slots", "gauge", "Sequences the engine runs at once (--slots).", st.slots);
    metric(&b, "requests_total", "counter", "Completions accepted (plain and chat, streamed or not).", (double)s->n_completions);
    metric(&b, "requests_finished_total", "counter", "Sequences that ended at a stop token or max_tokens.", (double)st.finished);
    metric(&b, "errors_total", "counter", "Answers with an HTTP status of 400 or more.", (double)s->n_errors);
    metric(&b, "uploads_total", "counter", "Adapters added through POST /v1/adapters.", (double)s->n_uploads);
    metric(&b, "prompt_tokens_total", "counter", "Prompt tokens fed through the model.", (double)st.prompt_tokens);
    metric(&b, "generation_tokens_total", "counter", "Tokens sampled.", (double)st.generated_tokens);
    metric(&b, "forward_passes_total", "counter", "Batched forward passes (engine steps).", (double)st.steps);
    metric(&b, "batch_rows_total", "counter", "Rows carried by those passes (mean batch = rows / passes).", (double)st.rows);
    metric(&b, "adapters", "gauge", "Adapters in the pool.", s->pool ? rm_pool_size(s->pool) : 0);
    metric(&b, "adapters_loaded", "gauge", "Adapters loaded and bound to the model.", s->cache.n);
    metric(&b, "uptime_seconds", "gauge", "Seconds since the server started.", (double)(time(NULL) - s->started));
    respond_as(c, 200, "text/plain; version=0.0.4", &b);
    rm_sb_free(&b);
}

// ---- HTTP ------------------------------------------------------------------------

// Once a whole request is in c->in: dispatches it. Returns 0 while incomplete.
static int try_request(server *s, client *c) {
    const char *buf = c->in.buf;
    if (!buf) return 0;
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end) {
        if (c->in.len > MAX_HEAD) return respond_error(c, 413, "request head too large"), 1;
        return 0;
    }
    size_t head = (size_t)(end - buf) + 4, body_len = 0;
    char method[16] = "", path[256] = "", version[16] = "";
    if (sscanf(buf, "%15s %255s %15s", method, path, version) != 3) return respond_error(c, 400, "malformed request line"), 1;
    int keep = !strcmp(version, "HTTP/1.1"); // HTTP/1.1 keeps the connection unless told otherwise; 1.0 closes
    for (const char *h = strstr(buf, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n")) {
        if (!strncasecmp(h + 2, "Connection:", 11)) {
            const char *v = h + 13;
            while (*v == ' ' || *v == '\t') v++;
            if (!strncasecmp(v, "close", 5)) keep = 0;
            else if (!strncasecmp(v, "keep-alive", 10)) keep = 1;
        }
        if (!strncasecmp(h + 2, "Content-Length:", 15)) {
            char *e;
            long long v = strtoll(h + 17, &e, 10);
            if (v < 0 || e == h + 17) return respond_error(c, 400, "bad Content-Length"), 1;
            if (v > MAX_BODY) return respond_error(c, 413, "request body too large"), 1;
            body_len = (size_t)v;
        }
    }
    if (c->in.len < head + body_len) return 0;
    c->keep = keep;
    c->consumed = head + body_len;
    char *q = strchr(path, '?');
    if (q) *q = 0;
    int is_get = !strcmp(method, "GET"), is_post = !strcmp(method, "POST");
    if (!strcmp(path, "/health") && is_get) {
        rm_sb b;
        rm_sb_init(&b);
        rm_sb_printf(&b, "{\"status\": \"ok\", \"adapters\": %d, \"model\": ", s->pool ? rm_pool_size(s->pool) : 0);
        rm_sb_json_str(&b, s->model_path, strlen(s->model_path));
        rm_sb_puts(&b, "}\n");
        respond(c, 200, &b);
        rm_sb_free(&b);
        return 1;
    }
    if (!strcmp(path, "/v1/adapters") && is_get) return handle_list(s, c), 1;
    if (!strcmp(path, "/metrics") && is_get) return handle_metrics(s, c), 1;
    if (!strcmp(path, "/v1/models") && is_get) { // what OpenAI clients ask first: the one base model
        rm_sb b;
        rm_sb_init(&b);
        rm_sb_puts(&b, "{\"object\": \"list\", \"data\": [{\"id\": ");
        rm_sb_json_str(&b, s->model_path, strlen(s->model_path));
        rm_sb_puts(&b, ", \"object\": \"model\", \"owned_by\": \"ramole\"}");
        rm_adapter_info *list = NULL;
        int n = 0;
        if (s->pool && !rm_pool_list(s->pool, &list, &n)) { // each adapter with weights is a model too (vLLM's LoRA modules)
            for (int i = 0; i < n; i++) {
                if (!list[i].weights || !*list[i].weights) continue;
                rm_sb_puts(&b, ", {\"id\": ");
                rm_sb_json_str(&b, list[i].name, strlen(list[i].name));
                rm_sb_puts(&b, ", \"object\": \"model\", \"owned_by\": \"ramole\", \"parent\": ");
                rm_sb_json_str(&b, s->model_path, strlen(s->model_path));
                rm_sb_puts(&b, "}");
            }
            rm_pool_free_list(list, n);
        }
        rm_sb_puts(&b, "]}\n");
        respond(c, 200, &b);
        rm_sb_free(&b);
        return 1;
    }
    int known = !strcmp(path, "/v1/completions") || !strcmp(path, "/v1/chat/completions") || !strcmp(path, "/v1/adapters");
    if (!known)
        return respond_error(c, 404, "unknown path (POST /v1/completions, POST /v1/chat/completions, GET|POST /v1/adapters, GET /v1/models, GET /health, GET /metrics)"), 1;
    if (!is_post) return respond_error(c, 405, "use POST"), 1;
    rm_json *req = NULL;
    if (rm_json_parse(buf + head, body_len, "request body", &req)) return respond_error(c, 400, rm_last_error()), 1;
    if (req->type != RM_JSON_OBJECT) respond_error(c, 400, "the request body must be a JSON object");
    else if (!strcmp(path, "/v1/completions")) handle_completion(s, c, req);
    else if (!strcmp(path, "/v1/chat/completions")) handle_chat(s, c, req);
    else handle_upload(s, c, req);
    rm_json_free(req);
    return 1;
}

// After a response on a kept connection: ready for the next request, which
// may already be (partly) in c->in.
static void client_reset(server *s, client *c) {
    size_t rest = c->in.len - c->consumed;
    memmove(c->in.buf, c->in.buf + c->consumed, rest);
    c->in.len = rest;
    c->in.buf[rest] = 0;
    c->out.len = 0;
    c->sent = 0;
    rm_pick_free(&c->pick);
    c->state = 0, c->chat = 0, c->stream = 0, c->n_prompt = 0, c->keep = 0, c->consumed = 0;
    c->id = ++s->next_id;
}

static void client_free(server *s, int i) {
    client *c = s->cl[i];
    if (c->fd >= 0) close(c->fd);
    rm_sb_free(&c->in);
    rm_sb_free(&c->out);
    rm_pick_free(&c->pick);
    free(c);
    s->cl[i] = NULL;
}

static int listen_on(const char *host, int port, int *out_port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 64)) {
        close(fd);
        return -1;
    }
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    *out_port = ntohs(a.sin_port);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static void serve_loop(server *s, int lfd) {
    int busy = 0;
    while (!g_stop) {
        struct pollfd pf[MAX_CLIENTS + 1];
        int map[MAX_CLIENTS + 1], np = 0;
        pf[np] = (struct pollfd){.fd = lfd, .events = POLLIN};
        map[np++] = -1;
        for (int i = 0; i < MAX_CLIENTS; i++) {
            client *c = s->cl[i];
            if (c && c->fd < 0 && c->state == 2) client_free(s, i); // answered a peer that left
            else if (c && c->state == 0 && time(NULL) - c->last > IDLE_SECONDS) client_free(s, i); // idle
            if (!(c = s->cl[i]) || c->fd < 0 || c->state == 1 || (c->state == 3 && c->sent == c->out.len)) continue;
            pf[np] = (struct pollfd){.fd = c->fd, .events = c->state == 0 ? POLLIN : POLLOUT};
            map[np++] = i;
        }
        if (poll(pf, (nfds_t)np, busy ? 0 : 500) < 0 && errno != EINTR) break;
        if (pf[0].revents & POLLIN) {
            int fd;
            while ((fd = accept(lfd, NULL, NULL)) >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CLIENTS && slot < 0; i++)
                    if (!s->cl[i]) slot = i;
                client *c = slot >= 0 ? calloc(1, sizeof *c) : NULL;
                if (!c) { close(fd); continue; }
                fcntl(fd, F_SETFL, O_NONBLOCK);
                c->fd = fd, c->srv = s, c->id = ++s->next_id, c->last = time(NULL);
                rm_sb_init(&c->in);
                rm_sb_init(&c->out);
                s->cl[slot] = c;
            }
        }
        for (int k = 1; k < np; k++) {
            client *c = s->cl[map[k]];
            if (!c || !pf[k].revents) continue;
            if (c->state == 0) {
                char buf[65536];
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r <= 0) {
                    if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                    client_free(s, map[k]);
                    continue;
                }
                rm_sb_putn(&c->in, buf, (size_t)r);
                c->last = time(NULL);
                if (c->in.oom) { client_free(s, map[k]); continue; }
                try_request(s, c);
            } else {
                ssize_t w = send(c->fd, c->out.buf + c->sent, c->out.len - c->sent, MSG_NOSIGNAL);
                if (w > 0) c->sent += (size_t)w, c->last = time(NULL);
                int failed = w < 0 && errno != EAGAIN && errno != EINTR;
                if (c->state == 2 && !failed && c->sent == c->out.len && c->keep) {
                    client_reset(s, c);
                    if (c->in.len) try_request(s, c); // a request sent behind the last one
                } else if (c->state == 2 && (failed || c->sent == c->out.len)) client_free(s, map[k]);
                else if (failed) close(c->fd), c->fd = -1; // streaming: the request runs on, unheard
            }
        }
        int r = rm_engine_step(s->eng);
        if (r < 0) fprintf(stderr, "ramole serve: forward pass failed: %s\n", rm_last_error());
        busy = r > 0;
    }
}

static int cmd_serve(int argc, char **argv) {
    const char *model = NULL, *pool_dir = NULL, *host = "127.0.0.1", *router_path = NULL;
    long port = 8080, threads = 0, slots = 8, ctx = 2048, rows = 512;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            printf("usage: ramole serve -m MODEL [--pool DIR] [--router FILE] [--host H] [--port P] [-t N] [--slots S] [--ctx N]\n\n"
                   "HTTP API (JSON; HTTP/1.1 connections are kept open unless \"Connection: close\"):\n"
                   "  POST /v1/completions  {\"prompt\", \"max_tokens\" (16), \"temperature\", \"top_p\", \"top_k\",\n"
                   "                         \"min_p\", \"repeat_penalty\", \"seed\",\n"
                   "                         \"adapters\": [names] | \"retrieve\": K (+ \"min_score\": S: only adapters scoring S\n"
                   "                         or more; none: the base model), \"compose\": \"mixture\"|\"fusion\"|\"selection\"|\"router\",\n"
                   "                         \"model\": an adapter's name selects it (OpenAI / vLLM style)}\n"
                   "                         (\"router\": the RouterLoRA given with --router, `ramole router train`)\n"
                   "                        -> OpenAI-style text_completion, plus token_ids and the adapters used\n"
                   "  POST /v1/chat/completions  the same with {\"messages\": [{\"role\", \"content\"}...]} instead of\n"
                   "                        \"prompt\" (the model's chat template; adapters retrieved by the last user message)\n"
                   "  POST /v1/adapters     {\"name\", \"samples\": [inputs], \"weights\": path, \"task\", \"domain\"}:\n"
                   "                        checked against the model, then added to the pool (retrievable at once)\n"
                   "  \"stream\": true       server-sent events, one chunk per piece of text, then data: [DONE]\n"
                   "  GET  /v1/adapters     the pool's adapters\n"
                   "  GET  /v1/models       the base model and every adapter with weights (for OpenAI clients)\n"
                   "  GET  /health\n"
                   "  GET  /metrics         counters and gauges in the Prometheus text format\n\n"
                   "Running requests advance together, one batched forward pass per step (--slots at once;\n"
                   "--ctx positions each; prompts are fed in chunks). --port 0 picks a free port; the address\n"
                   "is printed on stderr. SIGINT / SIGTERM stop the server.\n");
            return 0;
        } else if (cli_str(argc, argv, &i, "--model", "-m", &model)) {
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &pool_dir)) {
        } else if (cli_str(argc, argv, &i, "--router", NULL, &router_path)) {
        } else if (cli_str(argc, argv, &i, "--host", NULL, &host)) {
        } else if (cli_int(argc, argv, &i, "--port", NULL, &port)) {
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {
        } else if (cli_int(argc, argv, &i, "--slots", NULL, &slots)) {
        } else if (cli_int(argc, argv, &i, "--ctx", "-c", &ctx)) {
        } else {
            fprintf(stderr, "ramole serve: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!model) { fprintf(stderr, "ramole serve: -m MODEL is required\n"); return 2; }
    if (port < 0 || port > 65535 || slots < 1 || slots > 1024 || ctx < 2) {
        fprintf(stderr, "ramole serve: bad --port, --slots or --ctx\n");
        return 2;
    }
    server s = {.model_path = model, .started = time(NULL)};
    int rc = 1, lfd = -1, bound_port = 0;
    rm_threadpool *tp = NULL;
    rm_lora *router = NULL;
    if (rm_llama_load(&s.m, model)) return cli_fail("cannot load model");
    s.cache.m = s.m;
    if (router_path && rm_router_load(&router, router_path, s.m)) { cli_fail("--router"); goto out; }
    if (ctx > s.m->hp.n_ctx_train && s.m->hp.n_ctx_train > 0) ctx = s.m->hp.n_ctx_train;
    if (pool_dir && rm_pool_open_existing(pool_dir, &s.pool)) { cli_fail("--pool"); goto out; }
    if (!(tp = rm_threadpool_create((int)threads))) { fprintf(stderr, "ramole serve: cannot start threads\n"); goto out; }
    if (rm_engine_new(&s.eng, s.m, tp, (int)slots, (int)ctx, (int)rows)) { cli_fail("engine"); goto out; }
    rm_engine_set_router(s.eng, router);
    if ((lfd = listen_on(host, (int)port, &bound_port)) < 0) {
        fprintf(stderr, "ramole serve: cannot listen on %s:%ld: %s\n", host, port, strerror(errno));
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "ramole serve: listening on http://%s:%d (%ld slots x %ld positions, %d threads%s%s)\n", host,
            bound_port, slots, ctx, rm_threadpool_size(tp), s.pool ? ", pool " : "", s.pool ? pool_dir : "");
    serve_loop(&s, lfd);
    fprintf(stderr, "ramole serve: stopping\n");
    rc = 0;
out:
    if (lfd >= 0) close(lfd);
    rm_engine_free(s.eng); // ends nothing: requests still running are dropped with their clients
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (s.cl[i]) client_free(&s, i);
    rm_lora_cache_free(&s.cache);
    if (s.pool) rm_pool_close(s.pool);
    rm_threadpool_free(tp);
    rm_lora_free(router);
    rm_llama_free(s.m);
    return rc;
}

RM_COMMAND(serve, "HTTP server: completions with retrieved or named LoRA adapters, uploads at run time", cmd_serve)
