// test_serve.c — `ramole serve` end to end: a server process on a free port,
// requests over real sockets. Served completions must equal `ramole generate`
// with the same prompt, adapters and settings (token for token, also when the
// requests run together), adapters are retrieved from the prompt, uploads are
// checked against the model and become retrievable at once, bad requests get
// clear errors, and the server stops cleanly on SIGTERM.
#include "testing.h"
#include "serve_helpers.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/safetensors.h"
#include "lora/adapter.h"
#include "lora/router.h"
#include "model/synth.h"
#include "retrieve/embed.h"
#include "retrieve/embed_tf.h"
#include "retrieve/pick.h"
#include "retrieve/pool.h"
#include "serve/engine.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// One response from a kept connection (by its Content-Length; bytes read
// beyond it stay in carry for the next). Returns the status.
static int read_one(int fd, rm_sb *carry, rm_json **json) {
    *json = NULL;
    for (;;) {
        const char *end = carry->buf ? strstr(carry->buf, "\r\n\r\n") : NULL;
        if (end) {
            const char *cl = strstr(carry->buf, "Content-Length: ");
            size_t head = (size_t)(end - carry->buf) + 4, body = cl && cl < end ? (size_t)atol(cl + 16) : 0;
            if (carry->len >= head + body) {
                int status = 0;
                sscanf(carry->buf, "HTTP/1.1 %d", &status);
                rm_json_parse(carry->buf + head, body, "response", json);
                size_t rest = carry->len - head - body;
                memmove(carry->buf, carry->buf + head + body, rest);
                carry->len = rest;
                carry->buf[rest] = 0;
                return status;
            }
        }
        char buf[4096];
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0) return -1;
        rm_sb_putn(carry, buf, (size_t)r);
    }
}

// "token_ids" of a completion as "1 2 3".
static void ids_of(const rm_json *j, char *out, size_t cap) {
    out[0] = 0;
    const rm_json *ch = j ? rm_json_get(j, "choices") : NULL;
    const rm_json *ids = ch && ch->n ? rm_json_get(&ch->items[0], "token_ids") : NULL;
    size_t len = 0;
    for (size_t i = 0; ids && i < ids->n && len + 16 < cap; i++)
        len += (size_t)snprintf(out + len, cap - len, i ? " %lld" : "%lld", (long long)ids->items[i].inum);
}

void serve_ids_of(const rm_json *j, char *out, size_t cap) { ids_of(j, out, cap); }

// The first adapter a completion reports, or "".
static const char *first_adapter(const rm_json *j) {
    const rm_json *a = j ? rm_json_get(j, "adapters") : NULL;
    return a && a->n ? rm_json_get_str(&a->items[0], "name", "") : "";
}

// `ramole generate ARGS --ids` -> its stdout line; stderr to err_path (NULL: dropped).
static int generate_ids_err(const char *args, char *out, size_t cap, const char *err_path) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s generate %s --ids 2>%s", rm_test_bin(), args, err_path ? err_path : "/dev/null");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    out[0] = 0;
    if (!fgets(out, (int)cap, p)) out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    return pclose(p);
}

static int generate_ids(const char *args, char *out, size_t cap) { return generate_ids_err(args, out, cap, NULL); }

const char *serve_samples[5][3] = {
    {"Translate to German: the house is red.", "Translate to German: good morning, friend.",
     "Translate to German: where is the station?"},
    {"Review: a wonderful film, I loved it. Is this review positive or negative?",
     "Review: boring plot and bad acting. Is this review positive or negative?",
     "Review: the soup was cold. Is this review positive or negative?"},
    {"What is 7 plus 5? Answer with a number.", "What is 12 minus 4? Answer with a number.",
     "What is 3 times 9? Answer with a number."},
    {"Will it rain in Paris tomorrow? Give the weather forecast.",
     "Is it sunny in Rome today? Give the weather forecast.",
     "How cold will Oslo be tonight? Give the weather forecast."},
    {"Review: the food was awful and slow. Is this review positive or negative?",
     "Review: the food was great. Is this review positive or negative?",
     "Review: the food was fine, nothing more. Is this review positive or negative?"},
};
const char *serve_names[5] = {"german", "sentiment", "arith", "weather", "food"};

// A fresh pool in dir with a lexical embedder fitted on all the samples above,
// holding adapter a (serve_names[a], serve_samples[a]) for every a with want[a]; its
// weights are weights[a] (NULL: an adapter without weights).
int serve_make_pool(const char *dir, const int *want, char (*weights)[512]) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (!strstr(dir, "://") && system(cmd) != 0) return -1; // a folder; a PostgreSQL URL names an empty database
    rm_pool *pool = NULL;
    rm_pool_params pp = rm_pool_default_params();
    int rc = rm_pool_open(dir, &pp, &pool);
    const char *corpus[15];
    for (int a = 0; a < 5; a++)
        for (int i = 0; i < 3; i++) corpus[3 * a + i] = serve_samples[a][i];
    rm_feat_params fp = rm_feat_default_params();
    fp.bits = 12;
    rm_embedder *e = NULL;
    if (!rc) rc = rm_lexical_create(&fp, corpus, NULL, 15, NULL, &e);
    if (!rc) rc = rm_pool_set_embedder(pool, e);
    for (int a = 0; a < 5 && !rc; a++) {
        if (!want[a]) continue;
        rm_adapter_info info = {.name = serve_names[a], .weights = weights && weights[a][0] ? weights[a] : NULL};
        rc = rm_pool_add(pool, &info, serve_samples[a], NULL, 3, NULL);
    }
    if (pool) rm_pool_close(pool);
    return rc;
}

// Random rank-4 adapters for every name, saved as GGUF files (paths in w).
int serve_make_adapters(const char *model, char (*w)[512]) {
    rm_llama *m = NULL;
    int rc = rm_llama_load(&m, model);
    for (int a = 0; a < 5 && !rc; a++) {
        rm_lora *l = NULL;
        rc = rm_lora_random(&l, m, 4, 0x7f, 500 + (uint64_t)a);
        snprintf(w[a], 512, "%s/serve-%s.gguf", rm_test_tmpdir(), serve_names[a]);
        if (!rc) rc = rm_lora_save_gguf(l, w[a]);
        rm_lora_free(l);
    }
    rm_llama_free(m);
    return rc;
}

int serve_make_bad_peft(const char *dir) {
    char path[700];
    static float at[2][100], bt[64][2];
    const char *cfg = "{\"r\": 2, \"lora_alpha\": 4, \"target_modules\": [\"v_proj\"]}";
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    int rc = rm_mkdirs(dir) || rm_write_file_atomic(path, cfg, strlen(cfg)) ? RM_EIO : RM_OK;
    st_writer *sw = rc ? NULL : st_writer_new();
    int64_t sa[2] = {2, 100}, sb[2] = {64, 2};
    if (!rc)
        rc = st_writer_add(sw, "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", ST_F32, 2, sa, at);
    if (!rc)
        rc = st_writer_add(sw, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", ST_F32, 2, sb, bt);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!rc) rc = st_write(sw, path);
    st_writer_free(sw);
    return rc;
}

// The tiny synthetic model shared by these tests, written into the running
// test's tmpdir on first use.
const char *serve_tiny_model(void) {
    static char path[512];
    char want[512];
    snprintf(want, sizeof want, "%s/serve-tiny.gguf", rm_test_tmpdir());
    if (strcmp(path, want) != 0) {
        snprintf(path, sizeof path, "%s", want);
        if (rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 7, path, NULL, NULL) != RM_OK) path[0] = 0;
    }
    return path[0] ? path : NULL;
}

// What the completion tests below run against: the tiny model, five adapters
// (w), a pool holding the first three (weather is uploaded by one test) and a
// server over them with 3 slots.
typedef struct serve_fixture {
    char model[512], pool_dir[512], w[5][512];
    rm_test_server sp;
} serve_fixture;

static int fixture_start(serve_fixture *f) {
    const char *tmp = rm_test_tmpdir();
    if (!serve_tiny_model()) return -1;
    snprintf(f->model, sizeof f->model, "%s", serve_tiny_model());
    if (serve_make_adapters(f->model, f->w) != RM_OK) return -1;
    snprintf(f->pool_dir, sizeof f->pool_dir, "%s/serve-pool", tmp);
    if (serve_make_pool(f->pool_dir, (const int[]){1, 1, 1, 0, 0}, f->w) != RM_OK) return -1;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "-m %s --pool %s -t 1 --slots 3 --ctx 128 --adapter-dir %s", f->model, f->pool_dir, tmp);
    return rm_test_server_start(&f->sp, cmd);
}

// Checks served ids (got) against `ramole generate -p PROMPT -n N --temp 0 -t 1 --kv-type f16 EXTRA`
// (the server's KV cache is f16 unless told otherwise, generate's f32).
static void check_as_generate(const serve_fixture *f, const char *got, const char *prompt, int n, const char *extra,
                              const char *what) {
    char args[8192], want[1024];
    snprintf(args, sizeof args, "-m %s -p '%s' -n %d --temp 0 -t 1 --kv-type f16 %s", f->model, prompt, n, extra);
    CHECK(generate_ids(args, want, sizeof want) == 0);
    CHECKF(got[0] && !strcmp(got, want), "%s: served '%s', generate '%s'", what, got, want);
}

#define SERVE_FIXTURE(f)                                                                                               \
    serve_fixture f;                                                                                                   \
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");                                                      \
    REQUIRE(fixture_start(&f) == 0)

TEST(serve_health_and_models) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    CHECK(rm_test_http(f.sp.port, "GET", "/health", NULL, &j) == 200 && j &&
          !strcmp(rm_json_get_str(j, "status", ""), "ok"));
    rm_json_free(j);
    // the base model (by its file's name), the auto model and the three adapters with weights, as OpenAI "models"
    CHECK(rm_test_http(f.sp.port, "GET", "/v1/models", NULL, &j) == 200 && j && rm_json_get(j, "data") &&
          rm_json_get(j, "data")->n == 5);
    if (j && rm_json_get(j, "data") && rm_json_get(j, "data")->n == 5) {
        const rm_json *d = rm_json_get(j, "data");
        CHECK(!strcmp(rm_json_get_str(&d->items[0], "id", ""), "serve-tiny"));
        CHECK(!strcmp(rm_json_get_str(&d->items[1], "id", ""), "ramole-auto"));
        CHECK(!strcmp(rm_json_get_str(&d->items[2], "id", ""), "german") &&
              !strcmp(rm_json_get_str(&d->items[2], "parent", ""), "serve-tiny"));
    }
    rm_json_free(j);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

static const char *k_review = "Review: the food was terrible. Is this review positive or negative?";

// Four completions sent together (3 slots: one waits), read afterwards; each
// must equal `ramole generate` with the same adapters. Then GET /metrics
// (Prometheus text) counts the four.
TEST(serve_completions_together_as_generate) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    const char *prompts[4] = {"Once upon a time", "The cat sat", k_review, "What is 2 plus 2?"};
    const char *extra[4] = {"", ", \"adapters\": [\"german\"]", ", \"retrieve\": 2",
                            ", \"adapters\": [\"arith\", \"german\"], \"compose\": \"fusion\""};
    char gen_extra[4][1600];
    snprintf(gen_extra[0], sizeof gen_extra[0], "%s", "");
    snprintf(gen_extra[1], sizeof gen_extra[1], "--lora %s", f.w[0]);
    snprintf(gen_extra[2], sizeof gen_extra[2], "--pool %s --retrieve 2", f.pool_dir);
    snprintf(gen_extra[3], sizeof gen_extra[3], "--lora %s --lora %s --compose fusion", f.w[2], f.w[0]);
    int fds[4];
    long long n_prompt_tok = 0, n_gen_tok = 0;
    for (int r = 0; r < 4; r++) {
        char body[1024];
        snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": 10, \"temperature\": 0%s}", prompts[r],
                 extra[r]);
        fds[r] = rm_test_connect(f.sp.port);
        CHECK(fds[r] >= 0 && rm_test_send(fds[r], "POST", "/v1/completions", body) == 0);
    }
    for (int r = 0; r < 4; r++) {
        char got[1024], what[32];
        CHECK(rm_test_read_response(fds[r], &j) == 200);
        ids_of(j, got, sizeof got);
        n_prompt_tok += rm_json_get_int(rm_json_get(j, "usage"), "prompt_tokens", -1000);
        n_gen_tok += rm_json_get_int(rm_json_get(j, "usage"), "completion_tokens", -1000);
        if (r == 2) CHECKF(!strcmp(first_adapter(j), "sentiment"), "retrieved '%s'", first_adapter(j));
        snprintf(what, sizeof what, "request %d", r);
        check_as_generate(&f, got, prompts[r], 10, gen_extra[r], what);
        if (r > 0) { // the adapters matter: the base model's tokens differ
            char base_ids[1024], args[8192];
            snprintf(args, sizeof args, "-m %s -p '%s' -n 10 --temp 0 -t 1", f.model, prompts[r]);
            CHECK(generate_ids(args, base_ids, sizeof base_ids) == 0);
            CHECKF(strcmp(base_ids, got) != 0, "request %d: the adapters change nothing (%s)", r, got);
        }
        rm_json_free(j);
    }
    rm_sb raw;
    rm_sb_init(&raw);
    CHECK(rm_test_http_raw(f.sp.port, "GET", "/metrics", NULL, &raw) == 0 && raw.buf &&
          strstr(raw.buf, "HTTP/1.1 200"));
    CHECK(raw.buf && strstr(raw.buf, "# TYPE ramole_requests_total counter"));
    CHECK(rm_test_metric_in(raw.buf, "requests_total") == 4 &&
          rm_test_metric_in(raw.buf, "requests_finished_total") == 4);
    CHECK(rm_test_metric_in(raw.buf, "errors_total") == 0 && rm_test_metric_in(raw.buf, "requests_running") == 0);
    CHECKF(rm_test_metric_in(raw.buf, "prompt_tokens_total") == n_prompt_tok, "prompt tokens %g vs %lld",
           rm_test_metric_in(raw.buf, "prompt_tokens_total"), n_prompt_tok);
    CHECK(rm_test_metric_in(raw.buf, "generation_tokens_total") == n_gen_tok && n_gen_tok > 0);
    CHECK(rm_test_metric_in(raw.buf, "adapters") == 3 && rm_test_metric_in(raw.buf, "slots") == 3);
    // the default f16 cache: 3 slots x 128 positions x layers x 2 (K, V) x kv_dim x 2 bytes, and a line per block
    rm_llama *m = NULL;
    REQUIRE(rm_llama_load(&m, f.model) == RM_OK);
    const double kvd = m->hp.n_head_kv * m->hp.head_dim, kv_want = 2.0 * m->hp.n_layer * 3 * (128 * kvd + 32) * 2;
    rm_llama_free(m);
    CHECKF(rm_test_metric_in(raw.buf, "kv_cache_bytes") == kv_want, "kv_cache_bytes %g, want %g",
           rm_test_metric_in(raw.buf, "kv_cache_bytes"), kv_want);
    rm_sb_free(&raw);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

// Chat: the model has no chat template, so the documented plain format
// applies ("User: ...\n\nAssistant:"); the adapter is retrieved by the user message.
TEST(serve_chat_plain_format) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    char body[1024], got[1024], prompt[1024], extra[700];
    snprintf(body, sizeof body,
             "{\"messages\": [{\"role\": \"user\", \"content\": \"%s\"}], \"max_tokens\": 8, \"temperature\": 0, "
             "\"retrieve\": 1}",
             k_review);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/chat/completions", body, &j) == 200);
    CHECK(j && !strcmp(rm_json_get_str(j, "object", ""), "chat.completion"));
    CHECKF(!strcmp(first_adapter(j), "sentiment"), "chat retrieved '%s'", first_adapter(j));
    const rm_json *ch = j ? rm_json_get(j, "choices") : NULL;
    const rm_json *msg = ch && ch->n ? rm_json_get(&ch->items[0], "message") : NULL;
    CHECK(msg && !strcmp(rm_json_get_str(msg, "role", ""), "assistant") && rm_json_get(msg, "content"));
    ids_of(j, got, sizeof got);
    snprintf(prompt, sizeof prompt, "User: %s\n\nAssistant:", k_review);
    snprintf(extra, sizeof extra, "--lora %s", f.w[1]);
    check_as_generate(&f, got, prompt, 8, extra, "chat");
    rm_json_free(j);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/chat/completions",
                       "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", &j) == 400);
    rm_json_free(j);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

// "min_score" above every adapter's score: no adapter, the base model's tokens.
TEST(serve_min_score_base_model) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    char body[512], got[1024];
    snprintf(body, sizeof body,
             "{\"prompt\": \"%s\", \"max_tokens\": 10, \"temperature\": 0, \"retrieve\": 2, \"min_score\": 1000}",
             k_review);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/completions", body, &j) == 200);
    const rm_json *ad = j ? rm_json_get(j, "adapters") : NULL;
    CHECK(ad && ad->n == 0);
    ids_of(j, got, sizeof got);
    check_as_generate(&f, got, k_review, 10, "", "min_score");
    rm_json_free(j);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

// Streaming: the events' text pieces put together are the whole completion's text.
TEST(serve_streaming_pieces_make_the_whole) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    const char *req =
        "{\"prompt\": \"Once upon a time\", \"max_tokens\": 12, \"temperature\": 0, \"adapters\": [\"arith\"]%s}";
    char body[512];
    snprintf(body, sizeof body, req, "");
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/completions", body, &j) == 200);
    const rm_json *ch = j ? rm_json_get(j, "choices") : NULL;
    const char *whole = ch && ch->n ? rm_json_get_str(&ch->items[0], "text", NULL) : NULL;
    CHECK(whole && *whole);
    snprintf(body, sizeof body, req, ", \"stream\": true");
    rm_sb raw, pieces;
    rm_sb_init(&raw);
    rm_sb_init(&pieces);
    CHECK(rm_test_http_raw(f.sp.port, "POST", "/v1/completions", body, &raw) == 0);
    CHECK(raw.buf && strstr(raw.buf, "text/event-stream") && strstr(raw.buf, "data: [DONE]"));
    int events = 0, finished = 0;
    for (const char *e = raw.buf ? strstr(raw.buf, "data: {") : NULL; e; e = strstr(e + 1, "data: {")) {
        const char *end = strstr(e, "\n\n");
        rm_json *ev = NULL;
        if (!end || rm_json_parse(e + 6, (size_t)(end - e - 6), "event", &ev)) break;
        const rm_json *c0 = rm_json_get(ev, "choices");
        if (c0 && c0->n) {
            const rm_json *t = rm_json_get(&c0->items[0], "text");
            if (t && t->type == RM_JSON_STRING) rm_sb_putn(&pieces, t->str, t->len);
            finished += !strcmp(rm_json_get_str(&c0->items[0], "finish_reason", ""), "length");
        }
        events++;
        rm_json_free(ev);
    }
    CHECKF(events >= 2 && finished == 1, "%d events, %d with a finish reason", events, finished);
    CHECKF(whole && pieces.buf && !strcmp(pieces.buf, whole), "streamed '%s' vs '%s'", pieces.buf ? pieces.buf : "",
           whole ? whole : "");
    rm_sb_free(&raw);
    rm_sb_free(&pieces);
    rm_json_free(j);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

// An adapter for another base is refused and the pool keeps its three; a good
// upload becomes retrievable at once; the same name again is refused.
TEST(serve_adapter_uploads) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    char bad[700], body[2048];
    snprintf(bad, sizeof bad, "%s/serve-bad", rm_test_tmpdir());
    REQUIRE(serve_make_bad_peft(bad) == RM_OK);
    snprintf(body, sizeof body, "{\"name\": \"bad\", \"weights\": \"%s\", \"samples\": [\"x\"]}", bad);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/adapters", body, &j) == 400);
    if (j) {
        const rm_json *err = rm_json_get(j, "error");
        const char *msg = err ? rm_json_get_str(err, "message", "") : "";
        CHECKF(strstr(msg, "refused") != NULL, "message: %s", msg);
    }
    rm_json_free(j);
    CHECK(rm_test_http(f.sp.port, "GET", "/v1/adapters", NULL, &j) == 200);
    const rm_json *data = j ? rm_json_get(j, "data") : NULL;
    CHECK(data && data->n == 3);
    rm_json_free(j);

    rm_sb up;
    rm_sb_init(&up);
    rm_sb_puts(&up, "{\"name\": \"weather\", \"weights\": ");
    rm_sb_json_str(&up, f.w[3], strlen(f.w[3]));
    rm_sb_puts(&up, ", \"samples\": [");
    for (int i = 0; i < 3; i++) {
        if (i) rm_sb_puts(&up, ", ");
        rm_sb_json_str(&up, serve_samples[3][i], strlen(serve_samples[3][i]));
    }
    rm_sb_puts(&up, "]}");
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/adapters", up.buf, &j) == 201);
    rm_json_free(j);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/adapters", up.buf, &j) == 400); // the same name again
    rm_json_free(j);
    rm_sb_free(&up);
    CHECK(
        rm_test_http(
            f.sp.port, "POST", "/v1/completions",
            "{\"prompt\": \"Will it snow in Berlin? Give the weather forecast.\", \"max_tokens\": 4, \"retrieve\": 1}",
            &j) == 200);
    CHECKF(!strcmp(first_adapter(j), "weather"), "retrieved '%s' after the upload", first_adapter(j));
    rm_json_free(j);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

TEST(serve_bad_requests) {
    SERVE_FIXTURE(f);
    static const struct {
        const char *method, *path, *body;
        int status;
    } bad[] = {
        {"POST", "/v1/completions", "{\"prompt\": ", 400},
        {"POST", "/v1/completions", "{\"max_tokens\": 3}", 400},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"adapters\": [\"nope\"]}", 404},
        {"POST", "/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 100000}", 400},
        {"GET", "/v1/nothing", NULL, 404},
        {"GET", "/v1/completions", NULL, 405},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rm_json *j = NULL;
        int status = rm_test_http(f.sp.port, bad[i].method, bad[i].path, bad[i].body, &j);
        CHECKF(status == bad[i].status, "%s %s %s: %d, want %d", bad[i].method, bad[i].path,
               bad[i].body ? bad[i].body : "", status, bad[i].status);
        rm_json_free(j);
    }
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

// Keep-alive: several requests on one connection, answered in order; "model"
// naming an adapter selects it (OpenAI / vLLM style), the base model's name
// none, and a model this server does not have gets 404, as with OpenAI.
TEST(serve_keep_alive_and_model_names) {
    SERVE_FIXTURE(f);
    rm_json *j = NULL;
    int fd = rm_test_connect(f.sp.port);
    REQUIRE(fd >= 0);
    rm_sb carry;
    rm_sb_init(&carry);
    char req[1024], got[1024], extra[700];
    snprintf(req, sizeof req, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    CHECK(read_one(fd, &carry, &j) == 200 && j && !strcmp(rm_json_get_str(j, "status", ""), "ok"));
    rm_json_free(j);
    const char *body = "{\"model\": \"german\", \"prompt\": \"The cat sat\", \"max_tokens\": 10, \"temperature\": 0}";
    snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    CHECK(read_one(fd, &carry, &j) == 200);
    ids_of(j, got, sizeof got);
    CHECKF(!strcmp(first_adapter(j), "german"), "\"model\": \"german\" used '%s'", first_adapter(j));
    rm_json_free(j);
    snprintf(extra, sizeof extra, "--lora %s", f.w[0]);
    check_as_generate(&f, got, "The cat sat", 10, extra, "model as adapter");
    // two requests in one write, the second closing the connection
    snprintf(req, sizeof req, "GET /v1/adapters HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    CHECK(read_one(fd, &carry, &j) == 200 && j && rm_json_get(j, "data"));
    rm_json_free(j);
    CHECK(read_one(fd, &carry, &j) == 200 && j && rm_json_get(j, "status"));
    rm_json_free(j);
    char byte;
    CHECK(read(fd, &byte, 1) == 0); // closed after the second
    close(fd);
    rm_sb_free(&carry);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/completions",
                       "{\"model\": \"serve-tiny\", \"prompt\": \"x\", \"max_tokens\": 2}", &j) == 200);
    CHECK(j && rm_json_get(j, "adapters") && rm_json_get(j, "adapters")->n == 0 &&
          !strcmp(rm_json_get_str(j, "model", ""), "serve-tiny"));
    rm_json_free(j);
    CHECK(rm_test_http(f.sp.port, "POST", "/v1/completions",
                       "{\"model\": \"gpt-3.5\", \"prompt\": \"x\", \"max_tokens\": 2}", &j) == 404);
    const rm_json *err = j ? rm_json_get(j, "error") : NULL;
    CHECK(err && !strcmp(rm_json_get_str(err, "code", ""), "model_not_found") &&
          !strcmp(rm_json_get_str(err, "param", ""), "model"));
    rm_json_free(j);
    CHECK(rm_test_server_stop(&f.sp) == 0);
}

// A random RouterLoRA of rank 2 for the model, saved at path.
int serve_save_router(const char *model, const char *path, uint64_t seed) {
    rm_llama *m = NULL;
    rm_lora *r = NULL;
    int rc = rm_llama_load(&m, model);
    if (!rc) rc = rm_lora_random(&r, m, 2, 0x7f, seed);
    if (!rc) rc = rm_router_save(r, m, 2, path);
    rm_lora_free(r);
    rm_llama_free(m);
    return rc;
}

// RAMoLE for plain OpenAI clients: "model": "ramole-auto" retrieves the
// request's adapters (--retrieve K) and composes them with the server's
// default composition (mixture; the router when one is loaded), token for
// token what `ramole generate --pool` gives; the model list and one model by
// id; --default-model and --unknown-model default; /tokenize and /detokenize.
TEST(serve_auto_model) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    const char *model = serve_tiny_model(), *tmp = rm_test_tmpdir();
    char w[5][512], pool[512], router[600], args[4096], got[1024], want[1024];
    REQUIRE(serve_make_adapters(model, w) == RM_OK);
    snprintf(pool, sizeof pool, "%s/auto-pool", tmp);
    REQUIRE(serve_make_pool(pool, (const int[]){1, 1, 1, 1, 0}, w) == RM_OK);
    snprintf(router, sizeof router, "%s/auto-router.gguf", tmp);
    REQUIRE(serve_save_router(model, router, 91) == RM_OK);
    const char *prompt = "Review: the food was terrible. Is this review positive or negative?";
    char body[1024];
    snprintf(body, sizeof body,
             "{\"model\": \"ramole-auto\", \"prompt\": \"%s\", \"max_tokens\": 10, \"temperature\": 0}", prompt);
    rm_json *j = NULL;
    for (int with_router = 0; with_router < 2; with_router++) {
        rm_test_server sp;
        snprintf(args, sizeof args, "-m %s --pool %s -t 1 --ctx 256 %s", model, pool,
                 with_router ? "--retrieve 2 --router " : "");
        if (with_router) strncat(args, router, sizeof args - strlen(args) - 1);
        REQUIRE(rm_test_server_start(&sp, args) == 0);
        CHECK(rm_test_http(sp.port, "POST", "/v1/completions", body, &j) == 200);
        const rm_json *ad = j ? rm_json_get(j, "adapters") : NULL;
        CHECKF(ad && (int)ad->n == (with_router ? 2 : 3) &&
                   !strcmp(rm_json_get_str(&ad->items[0], "name", ""), "sentiment"),
               "auto model: %zu adapters", ad ? ad->n : 0);
        CHECK(j && !strcmp(rm_json_get_str(j, "model", ""), "ramole-auto"));
        const rm_json *ch = j ? rm_json_get(j, "choices") : NULL;
        const rm_json *ids = ch && ch->n ? rm_json_get(&ch->items[0], "token_ids") : NULL;
        size_t len = 0;
        got[0] = 0;
        for (size_t i = 0; ids && i < ids->n && len + 16 < sizeof got; i++)
            len += (size_t)snprintf(got + len, sizeof got - len, i ? " %lld" : "%lld", (long long)ids->items[i].inum);
        rm_json_free(j);
        snprintf(args, sizeof args,
                 "%s generate -m %s --pool %s --retrieve %d -p '%s' -n 10 --temp 0 -t 1 --ids %s%s 2>/dev/null",
                 rm_test_bin(), model, pool, with_router ? 2 : 3, prompt,
                 with_router ? "--compose router --router " : "", with_router ? router : "");
        FILE *p = popen(args, "r");
        REQUIRE(p);
        if (!fgets(want, sizeof want, p)) want[0] = 0;
        want[strcspn(want, "\n")] = 0;
        CHECK(pclose(p) == 0);
        CHECKF(got[0] && !strcmp(got, want), "%s: served '%s', generate '%s'", with_router ? "router" : "mixture", got,
               want);
        // "return_routing": the router's mean weight per adapter per layer (they sum to 1 in each layer); the tokens as before
        {
            char rbody[1200], rgot[1024];
            snprintf(rbody, sizeof rbody,
                     "{\"model\": \"ramole-auto\", \"prompt\": \"%s\", \"max_tokens\": 10, \"temperature\": 0, "
                     "\"return_routing\": true}",
                     prompt);
            CHECK(rm_test_http(sp.port, "POST", "/v1/completions", rbody, &j) == 200);
            const rm_json *c0 = j && rm_json_get(j, "choices") ? &rm_json_get(j, "choices")->items[0] : NULL;
            const rm_json *rt = c0 ? rm_json_get(c0, "routing") : NULL,
                          *ids2 = c0 ? rm_json_get(c0, "token_ids") : NULL;
            size_t l2 = 0;
            rgot[0] = 0;
            for (size_t i = 0; ids2 && i < ids2->n && l2 + 16 < sizeof rgot; i++)
                l2 +=
                    (size_t)snprintf(rgot + l2, sizeof rgot - l2, i ? " %lld" : "%lld", (long long)ids2->items[i].inum);
            CHECK(!strcmp(rgot, got));
            if (!with_router) {
                CHECK(rt && rt->type == RM_JSON_NULL); // mixture: nothing routed
            } else {
                const rm_json *layers = rt ? rm_json_get(rt, "layers") : NULL,
                              *names = rt ? rm_json_get(rt, "adapters") : NULL;
                CHECK(names && names->n == 2 && !strcmp(names->items[0].str, "sentiment"));
                CHECK(layers && layers->n == 4); // the tiny model has 4 layers
                int spread = 0;
                for (size_t l = 0; layers && l < layers->n; l++) {
                    const rm_json *w2 = &layers->items[l];
                    REQUIRE(w2->type == RM_JSON_ARRAY && w2->n == 2);
                    CHECK_NEAR(w2->items[0].num + w2->items[1].num, 1.0, 1e-6);
                    CHECK(w2->items[0].num > 0 && w2->items[1].num > 0);
                    spread |= fabs(w2->items[0].num - 0.5) > 1e-4;
                }
                CHECK(spread); // a random router does not weigh them evenly
            }
            rm_json_free(j);
            j = NULL;
        }
        // one model by id
        CHECK(rm_test_http(sp.port, "GET", "/v1/models/ramole-auto", NULL, &j) == 200 && j &&
              !strcmp(rm_json_get_str(j, "parent", ""), "serve-tiny"));
        rm_json_free(j);
        CHECK(rm_test_http(sp.port, "GET", "/v1/models/weather", NULL, &j) == 200 && j &&
              !strcmp(rm_json_get_str(j, "id", ""), "weather"));
        rm_json_free(j);
        CHECK(rm_test_http(sp.port, "GET", "/v1/models/nothing", NULL, &j) == 404);
        rm_json_free(j);
        CHECK(rm_test_server_stop(&sp) == 0);
    }
    // the auto model as the default, and for names this server does not know
    rm_test_server sp;
    snprintf(args, sizeof args,
             "-m %s --pool %s -t 1 --ctx 256 --model-name base --default-model ramole-auto --unknown-model default",
             model, pool);
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    const char *asks[3] = {"", "\"model\": \"gpt-4o\", ", "\"model\": \"base\", "};
    for (int a = 0; a < 3; a++) {
        snprintf(body, sizeof body, "{%s\"prompt\": \"%s\", \"max_tokens\": 2}", asks[a], prompt);
        CHECK(rm_test_http(sp.port, "POST", "/v1/completions", body, &j) == 200);
        const rm_json *ad = j ? rm_json_get(j, "adapters") : NULL;
        CHECKF(ad && (int)ad->n == (a == 2 ? 0 : 3), "ask %d: %zu adapters", a, ad ? ad->n : 0);
        rm_json_free(j);
    }
    // /tokenize and /detokenize: the prompt's tokens as a completion counts them, and back to the text
    snprintf(body, sizeof body, "{\"model\": \"base\", \"prompt\": \"%s\", \"max_tokens\": 1}", prompt);
    CHECK(rm_test_http(sp.port, "POST", "/v1/completions", body, &j) == 200);
    int64_t n_prompt = rm_json_get_int(j ? rm_json_get(j, "usage") : NULL, "prompt_tokens", -1);
    rm_json_free(j);
    snprintf(body, sizeof body, "{\"model\": \"base\", \"prompt\": \"%s\"}", prompt);
    CHECK(rm_test_http(sp.port, "POST", "/tokenize", body, &j) == 200);
    const rm_json *toks = j ? rm_json_get(j, "tokens") : NULL;
    CHECK(toks && (int64_t)toks->n == n_prompt && rm_json_get_int(j, "count", -1) == n_prompt &&
          rm_json_get_int(j, "max_model_len", 0) == 256);
    rm_json_free(j);
    snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"add_special_tokens\": false}", prompt);
    CHECK(rm_test_http(sp.port, "POST", "/tokenize", body, &j) == 200);
    toks = j ? rm_json_get(j, "tokens") : NULL;
    rm_sb ids;
    rm_sb_init(&ids);
    rm_sb_puts(&ids, "{\"tokens\": [");
    for (size_t i = 0; toks && i < toks->n; i++)
        rm_sb_printf(&ids, i ? ", %lld" : "%lld", (long long)toks->items[i].inum);
    rm_sb_puts(&ids, "]}");
    rm_json_free(j);
    CHECK(rm_test_http(sp.port, "POST", "/detokenize", ids.buf, &j) == 200);
    CHECKF(j && !strcmp(rm_json_get_str(j, "prompt", ""), prompt), "detokenized: %s",
           j ? rm_json_get_str(j, "prompt", "?") : "?");
    rm_json_free(j);
    rm_sb_free(&ids);
    CHECK(rm_test_http(sp.port, "POST", "/detokenize", "{\"tokens\": [1, -4]}", &j) == 400);
    CHECK(j && !strcmp(rm_json_get_str(rm_json_get(j, "error"), "param", ""), "tokens"));
    rm_json_free(j);
    CHECK(rm_test_server_stop(&sp) == 0);
    // a default model the server does not have: refused at start
    snprintf(args, sizeof args, "-m %s -t 1 --default-model nothing", model);
    CHECK(rm_test_server_start(&sp, args) != 0);
}

// POST /v1/embeddings: with the base model's name, the vectors the library's
// "llama" embedder (mean-pooled final hidden states, no prefix) makes; with
// "ramole-retriever", the pool's embedder's own.
TEST(serve_embeddings) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    const char *model = serve_tiny_model();
    char pool[512], args[2048];
    snprintf(pool, sizeof pool, "%s/emb-pool", rm_test_tmpdir());
    REQUIRE(serve_make_pool(pool, (const int[]){1, 1, 0, 0, 0}, NULL) == RM_OK);
    rm_embedder *lib = NULL;
    REQUIRE(rm_llama_embedder_create(model, "", &lib) == RM_OK);
    rm_pool *p = NULL;
    REQUIRE(rm_pool_open_existing(pool, &p) == RM_OK);
    const rm_embedder *ret = rm_pool_embedder(p);
    REQUIRE(ret);
    snprintf(args, sizeof args, "-m %s --pool %s -t 1 --ctx 256", model, pool);
    rm_test_server sp;
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    const char *texts[2] = {"Translate to German: the house is red.", "What is 7 plus 5?"};
    const char *models[2] = {"serve-tiny", "ramole-retriever"};
    for (int m = 0; m < 2; m++) {
        const rm_embedder *e = m ? ret : lib;
        char body[512];
        snprintf(body, sizeof body, "{\"model\": \"%s\", \"input\": [\"%s\", \"%s\"], \"encoding_format\": \"float\"}",
                 models[m], texts[0], texts[1]);
        rm_json *j = NULL;
        CHECK(rm_test_http(sp.port, "POST", "/v1/embeddings", body, &j) == 200);
        const rm_json *data = j ? rm_json_get(j, "data") : NULL;
        REQUIRE(data && data->n == 2);
        float *want = malloc((size_t)e->dim * sizeof *want);
        REQUIRE(want);
        for (int i = 0; i < 2; i++) {
            const rm_json *v = rm_json_get(&data->items[i], "embedding");
            CHECK(rm_json_get_int(&data->items[i], "index", -1) == i);
            CHECK_OK(rm_embedder_embed(e, texts[i], want));
            REQUIRE(v && (int)v->n == e->dim);
            double worst = 0;
            for (int k = 0; k < e->dim; k++) worst = fmax(worst, fabs(v->items[k].num - want[k]));
            CHECKF(worst < 1e-5, "%s, input %d: differs by %g from the library's embedder", models[m], i, worst);
        }
        CHECK(!strcmp(rm_json_get_str(j, "model", ""), models[m]));
        free(want);
        rm_json_free(j);
    }
    rm_json *j = NULL;
    CHECK(rm_test_http(sp.port, "POST", "/v1/embeddings", "{\"model\": \"nothing\", \"input\": \"x\"}", &j) == 404);
    rm_json_free(j);
    CHECK(rm_test_http(sp.port, "POST", "/v1/embeddings", "{\"model\": \"serve-tiny\", \"input\": 5}", &j) == 400);
    CHECK(j && !strcmp(rm_json_get_str(rm_json_get(j, "error"), "param", ""), "input"));
    rm_json_free(j);
    CHECK(rm_test_server_stop(&sp) == 0);
    rm_pool_close(p);
    rm_embedder_free(lib);
}

// `ramole pool init` gives a new pool an embedder fitted on a corpus, so that
// adapters can be added and retrieved without the paper's files.
TEST(serve_pool_init_cli) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *tmp = rm_test_tmpdir(), *bin = rm_test_bin();
    char corpus[512], pool_dir[512], cmd[4096], out[1024];
    snprintf(corpus, sizeof corpus, "%s/init-corpus.jsonl", tmp);
    snprintf(pool_dir, sizeof pool_dir, "%s/init-pool", tmp);
    FILE *f = fopen(corpus, "w");
    REQUIRE(f);
    for (int a = 0; a < 4; a++) {
        for (int i = 0; i < 3; i++) fprintf(f, "{\"inputs\": \"%s\"}\n", serve_samples[a][i]);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "rm -rf %s && %s pool add --pool %s --name x --samples %s 2>/dev/null", pool_dir, bin,
             pool_dir, corpus);
    CHECK(system(cmd) != 0); // no embedder yet
    snprintf(cmd, sizeof cmd, "%s pool init --pool %s --corpus %s --embedder hashproj 2>/dev/null", bin, pool_dir,
             corpus);
    CHECK(system(cmd) != 0); // trained: needs labelled tasks
    snprintf(cmd, sizeof cmd, "%s pool init --pool %s --corpus /dev/null 2>/dev/null", bin, pool_dir);
    CHECK(system(cmd) != 0); // no texts
    snprintf(cmd, sizeof cmd, "%s pool init --pool %s --corpus %s 2>/dev/null", bin, pool_dir, corpus);
    REQUIRE(system(cmd) == 0);
    for (int a = 0; a < 4; a++) {
        char s[512];
        snprintf(s, sizeof s, "%s/init-%d.jsonl", tmp, a);
        f = fopen(s, "w");
        REQUIRE(f);
        for (int i = 0; i < 3; i++) fprintf(f, "{\"inputs\": \"%s\"}\n", serve_samples[a][i]);
        fclose(f);
        snprintf(cmd, sizeof cmd, "%s pool add --pool %s --name %s --samples %s 2>/dev/null", bin, pool_dir,
                 serve_names[a], s);
        CHECK(system(cmd) == 0);
    }
    const char *queries[4] = {
        "Translate to German: the dog sleeps.", "Review: I hated every minute. Is this review positive or negative?",
        "What is 9 minus 2? Answer with a number.", "Will it be windy in Madrid? Give the weather forecast."};
    for (int a = 0; a < 4; a++) {
        snprintf(cmd, sizeof cmd, "%s retrieve --pool %s -p '%s' -k 1 --json 2>/dev/null", bin, pool_dir, queries[a]);
        FILE *p = popen(cmd, "r");
        REQUIRE(p);
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        pclose(p);
        rm_json *j = NULL;
        CHECK_OK(rm_json_parse(out, n, "retrieve output", &j));
        const char *got = j && j->type == RM_JSON_ARRAY && j->n ? rm_json_get_str(&j->items[0], "name", "") : "";
        CHECKF(!strcmp(got, serve_names[a]), "query %d retrieved '%s', want '%s'", a, got, serve_names[a]);
        rm_json_free(j);
    }
}

// RAMoLE from the CLI: `generate --pool DIR --retrieve K -p TEXT` retrieves the
// adapters for the prompt and composes them; the result must be exactly that
// of naming the same adapters with --lora (mixture, weights 1/k), and the
// adapters must matter (the output differs from the base model's). An
// adapter without weights (here the closest one) is passed over.
TEST(serve_generate_from_pool_cli) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    const char *model = serve_tiny_model();
    char w[5][512], dir[512], args[4096], out_pool[1024], out_lora[1024], out_base[1024];
    REQUIRE(serve_make_adapters(model, w) == RM_OK);
    w[4][0] = 0; // "food": no weights
    snprintf(dir, sizeof dir, "%s/gen-pool", rm_test_tmpdir());
    REQUIRE(serve_make_pool(dir, (const int[]){1, 1, 1, 0, 1}, w) == RM_OK);
    const char *query = "Review: the service was awful. Is this review positive or negative?";
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s/gen-pool.err", rm_test_tmpdir());
    snprintf(args, sizeof args, "-m %s --pool %s --retrieve 2 -p '%s' -n 12 --temp 0 -t 1", model, dir, query);
    REQUIRE(generate_ids_err(args, out_pool, sizeof out_pool, err_path) == 0);
    char *err = NULL;
    size_t len = 0;
    REQUIRE(rm_read_file(err_path, &err, &len) == RM_OK && err);
    const char *r = strstr(err, "retrieved: ");
    CHECKF(r && !strncmp(r + 11, "sentiment (", 11), "stderr: %s", err);
    CHECKF(!strstr(err, "food"), "the adapter without weights was used: %s", err);
    int second = -1; // the second retrieved adapter, by name
    const char *c = r ? strstr(r, ", ") : NULL;
    for (int a = 0; c && a < 5; a++)
        if (!strncmp(c + 2, serve_names[a], strlen(serve_names[a])) && c[2 + strlen(serve_names[a])] == ' ') second = a;
    CHECKF(second >= 0 && second != 1 && second != 4, "stderr: %s", err);
    free(err);
    if (second >= 0) {
        snprintf(args, sizeof args, "-m %s --lora %s --lora %s -p '%s' -n 12 --temp 0 -t 1", model, w[1], w[second],
                 query);
        CHECK(generate_ids(args, out_lora, sizeof out_lora) == 0);
        CHECKF(out_pool[0] && !strcmp(out_pool, out_lora), "--pool '%s' vs --lora '%s'", out_pool, out_lora);
    }
    snprintf(args, sizeof args, "-m %s -p '%s' -n 12 --temp 0 -t 1", model, query);
    CHECK(generate_ids(args, out_base, sizeof out_base) == 0);
    CHECKF(strcmp(out_pool, out_base) != 0, "the retrieved adapters changed nothing: '%s'", out_base);
    // no adapter scores that high: the base model answers, and says so
    char out_min[1024];
    snprintf(args, sizeof args, "-m %s --pool %s --retrieve 2 --min-score 1000 -p '%s' -n 12 --temp 0 -t 1", model, dir,
             query);
    CHECK(generate_ids_err(args, out_min, sizeof out_min, err_path) == 0);
    CHECKF(!strcmp(out_min, out_base), "--min-score 1000: '%s' vs the base model '%s'", out_min, out_base);
    err = NULL;
    CHECK(rm_read_file(err_path, &err, &len) == RM_OK && err && strstr(err, "retrieved: none"));
    free(err);
    // errors: no pool there (and none made); no prompt text; both --pool and --lora
    snprintf(args, sizeof args, "-m %s --pool %s/none -p x -n 1", model, rm_test_tmpdir());
    CHECK(generate_ids_err(args, out_base, sizeof out_base, err_path) != 0);
    err = NULL;
    CHECK(rm_read_file(err_path, &err, &len) == RM_OK && err && strstr(err, "no pool at"));
    free(err);
    snprintf(args, sizeof args, "-m %s --pool %s --prompt-ids '5 6' -n 1", model, dir);
    CHECK(generate_ids(args, out_base, sizeof out_base) != 0);
    snprintf(args, sizeof args, "-m %s --pool %s --lora %s -p x -n 1", model, dir, w[0]);
    CHECK(generate_ids(args, out_base, sizeof out_base) != 0);
}

// The engine alone: max_tokens 0 ends at once with no tokens; a request that
// cannot run (empty, too long for the context, a token outside the
// vocabulary) is refused with the reason and nothing is queued; greedy
// sequences run together equal each one run alone.
typedef struct {
    int calls, n;
    char reason[16];
    int32_t tok[64];
} done_rec;
static void rec_done(void *user, const int32_t *t, int n, const char *reason) {
    done_rec *r = user;
    r->calls++;
    r->n = n;
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "error");
    for (int i = 0; i < n && i < 64; i++) r->tok[i] = t[i];
}

TEST(serve_engine_edges) {
    REQUIRE(serve_tiny_model());
    rm_llama *m = NULL;
    REQUIRE(rm_llama_load(&m, serve_tiny_model()) == RM_OK);
    rm_engine *e = NULL;
    REQUIRE(rm_engine_new(&e, m, NULL, 2, 32, 8) == RM_OK);
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0;
    int32_t p[40];
    for (int i = 0; i < 40; i++) p[i] = 5 + i;
    done_rec r0 = {0}, ra = {0}, rb = {0}, rc = {0}, alone[3] = {{0}};
    rm_engine_cbs cb0 = {rec_done, NULL, &r0};
    CHECK_OK(rm_engine_submit(e, p, 3, 0, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cb0));
    CHECK(r0.calls == 1 && r0.n == 0 && !strcmp(r0.reason, "length"));
    CHECK(rm_engine_submit(e, p, 0, 4, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cb0) == RM_EINVAL);
    CHECK(rm_engine_submit(e, p, 30, 4, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cb0) == RM_EFULL &&
          strstr(rm_last_error(), "context"));
    int32_t bad[2] = {1, 1 << 30};
    CHECK(rm_engine_submit(e, bad, 2, 4, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cb0) == RM_EINVAL &&
          strstr(rm_last_error(), "vocabulary"));
    CHECK(rm_engine_submit(e, p, 3, 4, &sp, NULL, 0, RM_COMPOSE_MIXTURE, NULL) == RM_EINVAL);
    CHECK(rm_engine_step(e) == 0 && r0.calls == 1); // nothing was queued
    // three sequences, two slots (one waits), prompts longer than the 8-row budget
    rm_engine_cbs ca = {rec_done, NULL, &ra}, cbb = {rec_done, NULL, &rb}, cc = {rec_done, NULL, &rc};
    CHECK_OK(rm_engine_submit(e, p, 11, 6, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &ca));
    CHECK_OK(rm_engine_submit(e, p + 3, 5, 6, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cbb));
    CHECK_OK(rm_engine_submit(e, p + 7, 9, 6, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cc));
    rm_engine_stats st;
    rm_engine_get_stats(e, &st);
    CHECK(st.running == 0 && st.waiting == 3 && st.slots == 2 && st.steps == 0);
    CHECK(rm_engine_step(e) == 3);
    rm_engine_get_stats(e, &st);
    CHECK(st.running == 2 && st.waiting == 1 && st.steps == 1 && st.rows == 8 &&
          st.prompt_tokens == 8); // the row budget
    int steps = 1;
    while (rm_engine_step(e) > 0 && steps < 100) steps++;
    CHECK(ra.calls == 1 && rb.calls == 1 && rc.calls == 1);
    // counters: every prompt row fed once; each sequence's first token comes from its last
    // prompt row, every later one from a decode row of its own
    rm_engine_get_stats(e, &st);
    long long gen = ra.n + rb.n + rc.n;
    CHECK(st.running == 0 && st.waiting == 0 && st.finished == 3 && st.steps == steps + 1);
    CHECK(st.prompt_tokens == 11 + 5 + 9 && st.generated_tokens == gen);
    CHECKF(st.rows == st.prompt_tokens + gen - 3, "rows %lld, prompt %lld, generated %lld", st.rows, st.prompt_tokens,
           gen);
    rm_engine_free(e);
    const int off[3] = {0, 3, 7}, len[3] = {11, 5, 9};
    done_rec *together[3] = {&ra, &rb, &rc};
    for (int s = 0; s < 3; s++) {
        REQUIRE(rm_engine_new(&e, m, NULL, 1, 32, 512) == RM_OK);
        rm_engine_cbs c1 = {rec_done, NULL, &alone[s]};
        CHECK_OK(rm_engine_submit(e, p + off[s], len[s], 6, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &c1));
        while (rm_engine_step(e) > 0) {}
        rm_engine_free(e);
        CHECKF(alone[s].n == together[s]->n && alone[s].n > 0 &&
                   !memcmp(alone[s].tok, together[s]->tok, sizeof(int32_t) * (size_t)alone[s].n),
               "sequence %d: alone %d tokens, together %d", s, alone[s].n, together[s]->n);
    }
    rm_llama_free(m);
}

// An engine with an f16 KV cache: its first token's logits are those of the
// model's forward over an f16 cache, bit for bit, and not the f32 cache's.
static int first_logits(void *user, int32_t token, const float *logits) {
    (void)token;
    float *keep = user;
    if (keep[0] != keep[0]) memcpy(keep, logits, sizeof(float) * 512); // NaN: not yet
    return 0;
}
static void ignore_done(void *user, const int32_t *t, int n, const char *reason) {
    (void)user, (void)t, (void)n, (void)reason;
}

TEST(serve_engine_f16_cache) {
    REQUIRE(serve_tiny_model());
    rm_llama *m = NULL;
    REQUIRE(rm_llama_load(&m, serve_tiny_model()) == RM_OK);
    const int V = m->hp.n_vocab;
    REQUIRE(V <= 512);
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = 0;
    int32_t p[11], pos[11], slot[11] = {0};
    for (int i = 0; i < 11; i++) p[i] = 5 + 3 * i, pos[i] = i;
    float got[2][512], want[2][512];
    for (int t = 0; t < 2; t++) {
        const int type = t ? RM_KV_F16 : RM_KV_F32;
        rm_engine *e = NULL;
        REQUIRE(rm_engine_new_kv(&e, m, NULL, 2, 32, 64, type) == RM_OK);
        got[t][0] = NAN;
        rm_engine_cbs cb = {ignore_done, first_logits, got[t]};
        CHECK_OK(rm_engine_submit(e, p, 11, 3, &sp, NULL, 0, RM_COMPOSE_MIXTURE, &cb));
        while (rm_engine_step(e) > 0) {}
        rm_engine_free(e);
        rm_kvcache kv;
        CHECK_OK(rm_kvcache_init_type(&kv, m->hp.n_layer, 1, 32, m->hp.n_head_kv * m->hp.head_dim, type));
        uint8_t wanted[11] = {[10] = 1};
        rm_batch b = {11, p, pos, slot, wanted, NULL};
        CHECK_OK(rm_llama_forward(m, &kv, NULL, &b, NULL, want[t]));
        rm_kvcache_free(&kv);
        CHECKF(!memcmp(got[t], want[t], sizeof(float) * V), "%s cache: the engine's logits are not the forward's",
               rm_kv_type_name(type));
    }
    CHECK(memcmp(got[0], got[1], sizeof(float) * V) != 0);
    // a bad type is refused, naming it
    rm_engine *e = NULL;
    CHECK(rm_engine_new_kv(&e, m, NULL, 2, 32, 64, 7) == RM_EINVAL && !e && strstr(rm_last_error(), "type"));
    rm_llama_free(m);
}

// ---- ramole eval ----------------------------------------------------------------

// stdout of `ramole CMD ARGS` (stderr to err_path or dropped) into a malloc'd
// string; returns the exit status.
static int run_capture(const char *cmd_args, const char *err_path, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>%s", rm_test_bin(), cmd_args, err_path ? err_path : "/dev/null");
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    rm_sb sb;
    rm_sb_init(&sb);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) rm_sb_putn(&sb, buf, n);
    rm_sb_putn(&sb, "", 0);
    *out = sb.buf;
    return pclose(p);
}

// The continuation `ramole generate` prints after the prompt, white space trimmed.
static char *generate_text(const char *args, const char *prompt) {
    char a[4096], *out = NULL;
    snprintf(a, sizeof a, "generate %s -p '%s'", args, prompt);
    if (run_capture(a, NULL, &out) != 0 || !out || strncmp(out, prompt, strlen(prompt))) {
        free(out);
        return NULL;
    }
    char *s = out + strlen(prompt);
    while (*s == ' ' || *s == '\n') s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\n')) len--;
    memmove(out, s, len);
    out[len] = 0;
    return out;
}

typedef struct {
    int n;
    char pred[8][512], adapter[8][64];
} eval_lines;
static int eval_line(void *user, const rm_json *rec, long index) {
    eval_lines *e = user;
    if (e->n >= 8) return -1;
    snprintf(e->pred[e->n], 512, "%s", rm_json_get_str(rec, "prediction", "?"));
    const rm_json *ad = rm_json_get(rec, "adapters");
    snprintf(e->adapter[e->n], 64, "%s", ad && ad->n ? ad->items[0].str : "");
    e->n++;
    return 0;
}

// `ramole eval` against `ramole generate`: the predictions it scores are
// generate's greedy continuations with the same adapters (retrieved, the
// task's own, or none), and the scores follow from targets set to them.
TEST(serve_eval_cli) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    const char *model = serve_tiny_model();
    char w[5][512], dir[512], args[4096];
    REQUIRE(serve_make_adapters(model, w) == RM_OK);
    snprintf(dir, sizeof dir, "%s/eval-pool", rm_test_tmpdir());
    REQUIRE(serve_make_pool(dir, (const int[]){1, 1, 1, 1, 0}, w) == RM_OK);
    const char *in[4] = {"Translate to German: the cat is black.", "Translate to German: see you tomorrow.",
                         "Review: a dull and tiring film. Is this review positive or negative?",
                         "Review: what a lovely evening. Is this review positive or negative?"};
    const char *task[4] = {"german", "german", "sentiment", "sentiment"};
    char *ref[4] = {0}, *base[4] = {0};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "-m %s --pool %s --retrieve 1 -n 6 --temp 0 -t 1", model, dir);
        ref[i] = generate_text(args, in[i]);
        snprintf(args, sizeof args, "-m %s -n 6 --temp 0 -t 1", model);
        base[i] = generate_text(args, in[i]);
        REQUIRE(ref[i] && base[i]);
    }
    // targets: generate's text for requests 0 and 2, something else for 1 and 3
    char path[600];
    snprintf(path, sizeof path, "%s/eval-set.jsonl", rm_test_tmpdir());
    FILE *f = fopen(path, "w");
    REQUIRE(f);
    for (int i = 0; i < 4; i++) {
        rm_sb l;
        rm_sb_init(&l);
        rm_sb_puts(&l, "{\"inputs\": ");
        rm_sb_json_str(&l, in[i], strlen(in[i]));
        rm_sb_puts(&l, ", \"targets\": ");
        const char *t = i % 2 == 0 ? ref[i] : "zzz qqq";
        rm_sb_json_str(&l, t, strlen(t));
        rm_sb_printf(&l, ", \"task\": \"%s\", \"metric\": \"em\"}\n", task[i]);
        fputs(l.buf, f);
        rm_sb_free(&l);
    }
    fclose(f);
    char out_path[600], *js = NULL;
    snprintf(out_path, sizeof out_path, "%s/eval-out.jsonl", rm_test_tmpdir());
    const char *ways[3] = {"--pool %s --retrieve 1", "--pool %s --oracle", ""};
    for (int w_i = 0; w_i < 3; w_i++) {
        char way[700];
        snprintf(way, sizeof way, ways[w_i], dir);
        snprintf(args, sizeof args, "eval -m %s --test %s --template '{inputs}' -n 6 -t 1 --slots 3 --json --out %s %s",
                 model, path, out_path, way);
        free(js);
        js = NULL;
        CHECK(run_capture(args, NULL, &js) == 0);
        rm_json *j = NULL;
        REQUIRE(js && rm_json_parse(js, strlen(js), "eval --json", &j) == RM_OK);
        eval_lines el = {0};
        CHECK_OK(rm_json_each_record(out_path, eval_line, &el));
        REQUIRE(el.n == 4);
        for (int i = 0; i < 4; i++) {
            const char *want = w_i < 2 ? ref[i] : base[i];
            CHECKF(!strcmp(el.pred[i], want), "%s: request %d predicted '%s', generate gave '%s'", way, i, el.pred[i],
                   want);
            CHECKF(!strcmp(el.adapter[i], w_i < 2 ? task[i] : ""), "%s: request %d used '%s'", way, i, el.adapter[i]);
        }
        if (w_i < 2) { // half of each task's targets are the predictions
            CHECK_NEAR(rm_json_get_num(rm_json_get(rm_json_get(j, "tasks"), "german"), "score", -1), 50, 1e-9);
            CHECK_NEAR(rm_json_get_num(rm_json_get(rm_json_get(j, "tasks"), "sentiment"), "score", -1), 50, 1e-9);
            CHECK_NEAR(rm_json_get_num(j, "em", -1), 50, 1e-9);
            CHECK_NEAR(rm_json_get_num(j, "mean", -1), 50, 1e-9);
        }
        if (w_i == 0) CHECK_NEAR(rm_json_get_num(j, "own_adapter_retrieved", -1), 100, 1e-9);
        CHECK(rm_json_get_int(j, "requests", 0) == 4);
        rm_json_free(j);
    }
    int differs = 0;
    for (int i = 0; i < 4; i++) differs |= strcmp(ref[i], base[i]) != 0;
    CHECKF(differs, "the adapters changed no prediction");
    // --limit 1: the first request of each task; --min-score above every score: no adapter, the base model
    {
        snprintf(args, sizeof args,
                 "eval -m %s --test %s --template '{inputs}' -n 6 -t 1 --json --out %s --pool %s --retrieve 1 "
                 "--min-score 1000 --limit 1",
                 model, path, out_path, dir);
        free(js);
        js = NULL;
        CHECK(run_capture(args, NULL, &js) == 0);
        rm_json *j = NULL;
        REQUIRE(js && rm_json_parse(js, strlen(js), "eval --json", &j) == RM_OK);
        CHECK(rm_json_get_int(j, "requests", 0) == 2);
        CHECK_NEAR(rm_json_get_num(j, "own_adapter_retrieved", -1), 0, 0);
        rm_json_free(j);
        eval_lines el = {0};
        CHECK_OK(rm_json_each_record(out_path, eval_line, &el));
        REQUIRE(el.n == 2);
        for (int i = 0; i < 2; i++) { // requests 0 and 2 (german, sentiment)
            CHECKF(!strcmp(el.pred[i], base[2 * i]), "--min-score: request %d predicted '%s', the base model '%s'",
                   2 * i, el.pred[i], base[2 * i]);
            CHECK(el.adapter[i][0] == 0);
        }
    }
    // a (random) RouterLoRA over two fixed adapters: eval equals generate with the same router
    {
        char rpath[600];
        snprintf(rpath, sizeof rpath, "%s/eval-router.gguf", rm_test_tmpdir());
        REQUIRE(serve_save_router(model, rpath, 77) == RM_OK);
        char both[1800];
        snprintf(both, sizeof both, "--lora %s --lora %s --compose router --router %s", w[0], w[1], rpath);
        snprintf(args, sizeof args, "eval -m %s --test %s --template '{inputs}' -n 6 -t 1 --slots 2 --json --out %s %s",
                 model, path, out_path, both);
        free(js);
        js = NULL;
        CHECK(run_capture(args, NULL, &js) == 0);
        eval_lines el = {0};
        CHECK_OK(rm_json_each_record(out_path, eval_line, &el));
        REQUIRE(el.n == 4);
        for (int i = 0; i < 4; i++) {
            snprintf(args, sizeof args, "-m %s -n 6 --temp 0 -t 1 %s", model, both);
            char *want = generate_text(args, in[i]);
            CHECKF(want && !strcmp(el.pred[i], want), "router: request %d predicted '%s', generate gave '%s'", i,
                   el.pred[i], want ? want : "(failed)");
            free(want);
        }
        snprintf(args, sizeof args, "eval -m %s --test %s --lora %s --lora %s --compose router -n 2", model, path, w[0],
                 w[1]);
        free(js);
        js = NULL;
        CHECK(run_capture(args, NULL, &js) == 2 << 8); // --compose router without --router: usage error
    }
    // bad input: a missing file, a task the pool has no adapter for, ways mixed
    char err_path[600], *err = NULL;
    size_t len;
    snprintf(err_path, sizeof err_path, "%s/eval.err", rm_test_tmpdir());
    snprintf(args, sizeof args, "eval -m %s --test %s/nothere.json", model, rm_test_tmpdir());
    free(js);
    CHECK(run_capture(args, err_path, &js) != 0);
    CHECK(rm_read_file(err_path, &err, &len) == RM_OK && err && strstr(err, "nothere.json"));
    free(err);
    err = NULL;
    f = fopen(path, "a");
    if (f) {
        fputs("{\"inputs\": \"x\", \"targets\": \"y\", \"task\": \"poetry\"}\n", f);
        fclose(f);
    }
    snprintf(args, sizeof args, "eval -m %s --test %s --pool %s --oracle -n 2", model, path, dir);
    free(js);
    CHECK(run_capture(args, err_path, &js) != 0);
    CHECK(rm_read_file(err_path, &err, &len) == RM_OK && err && strstr(err, "'poetry'"));
    free(err);
    snprintf(args, sizeof args, "eval -m %s --test %s --retrieve 2", model, path);
    free(js);
    CHECK(run_capture(args, NULL, &js) != 0);
    free(js);
    for (int i = 0; i < 4; i++) {
        free(ref[i]);
        free(base[i]);
    }
}
