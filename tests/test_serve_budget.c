// test_serve_budget.c — `ramole serve` within its limits: loaded adapters
// kept under --adapter-cache-mb (evicted least recently used, never while a
// running request holds them, loaded again on demand, the counters in
// /metrics), uploads past their limits answered 413 with the limit named,
// and sampling fields the sampler would refuse answered 400 on every route
// that samples.
#define _GNU_SOURCE
#include "testing.h"
#include "serve_helpers.h"
#include "base/err.h"
#include "base/json.h"
#include "lora/adapter.h"
#include "model/llama.h"
#include "serve/server_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

// A completion with adapter a (greedy, n tokens): its token ids in out; the status.
static int complete_with(int port, int a, int n, char *out, size_t cap) {
    char body[512];
    snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": %d, \"temperature\": 0, \"adapters\": [\"%s\"]}",
             serve_samples[a][0], n, serve_names[a]);
    rm_json *j = NULL;
    int st = rm_test_http(port, "POST", "/v1/completions", body, &j);
    serve_ids_of(j, out, cap);
    rm_json_free(j);
    return st;
}

// A budget smaller than two adapters, requests alternating between two:
// every switch evicts the other and loads again, the answers stay the same;
// the same adapter twice in a row is a hit; requests running together hold
// their adapters (the cache goes over its budget rather than evict one).
TEST(serve_adapter_cache_budget) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    char w[5][512], pool[512], args[2048];
    REQUIRE(serve_make_adapters(serve_tiny_model(), w) == RM_OK);
    snprintf(pool, sizeof pool, "%s/budget-pool", rm_test_tmpdir());
    REQUIRE(serve_make_pool(pool, (const int[]){1, 1, 0, 0, 0}, w) == RM_OK);
    // the budget: one and a half adapters (the two have the same shape)
    rm_llama *m = NULL;
    rm_lora *l = NULL;
    REQUIRE(rm_llama_load(&m, serve_tiny_model()) == RM_OK);
    int rc = rm_lora_load_for(&l, w[0], m);
    size_t one = rc ? 0 : rm_lora_bytes(l);
    rm_lora_free(l);
    rm_llama_free(m);
    REQUIRE(one > 0);
    double budget = 1.5 * (double)one;
    snprintf(args, sizeof args, "-m %s --pool %s -t 1 --ctx 256 --slots 4 --adapter-cache-mb %.9f", serve_tiny_model(),
             pool, budget / (1 << 20));
    rm_test_server sp;
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    CHECK(fabs(rm_test_metric(sp.port, "adapter_cache_budget_bytes") - budget) <= 1);

    char want[2][512], got[512];
    for (int a = 0; a < 2; a++) CHECK(complete_with(sp.port, a, 8, want[a], sizeof want[a]) == 200 && want[a][0]);
    CHECKF(strcmp(want[0], want[1]), "the two adapters answer alike: %s", want[0]);
    for (int round = 0; round < 3; round++)
        for (int a = 0; a < 2; a++) {
            CHECK(complete_with(sp.port, a, 8, got, sizeof got) == 200);
            CHECKF(!strcmp(got, want[a]), "round %d adapter %d: '%s' vs '%s'", round, a, got, want[a]);
        }
    // 8 requests, each switching: 8 misses and loads, 7 evictions, within the budget
    CHECK(rm_test_wait_metric(sp.port, "adapters_in_use", 0, 5000));
    CHECK(rm_test_metric(sp.port, "adapter_cache_loads_total") == 8);
    CHECK(rm_test_metric(sp.port, "adapter_cache_misses_total") == 8);
    CHECK(rm_test_metric(sp.port, "adapter_cache_evictions_total") == 7);
    CHECK(rm_test_metric(sp.port, "adapter_cache_bytes") <= budget);
    CHECK(rm_test_metric(sp.port, "adapters_loaded") == 1);
    // the same adapter twice in a row: the second finds it loaded
    for (int i = 0; i < 2; i++) CHECK(complete_with(sp.port, 0, 8, got, sizeof got) == 200 && !strcmp(got, want[0]));
    CHECK(rm_test_wait_metric(sp.port, "adapters_in_use", 0, 5000));
    CHECK(rm_test_metric(sp.port, "adapter_cache_hits_total") == 1);
    CHECK(rm_test_metric(sp.port, "adapter_cache_loads_total") == 9);

    // three at once (long enough to overlap): german, sentiment, german; the
    // cache goes over its budget rather than evict an adapter a request holds
    int fds[3], who[3] = {0, 1, 0};
    char body[512];
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof body,
                 "{\"prompt\": \"%s\", \"max_tokens\": 120, \"temperature\": 0, \"adapters\": [\"%s\"]}",
                 serve_samples[who[i]][0], serve_names[who[i]]);
        fds[i] = rm_test_connect(sp.port);
        CHECK(fds[i] >= 0 && rm_test_send(fds[i], "POST", "/v1/completions", body) == 0);
    }
    for (int i = 0; i < 3; i++) {
        rm_json *j = NULL;
        CHECK(rm_test_read_response(fds[i], &j) == 200);
        serve_ids_of(j, got, sizeof got);
        CHECKF(!strncmp(got, want[who[i]], strlen(want[who[i]])), "together %d: '%.60s' vs '%s'", i, got, want[who[i]]);
        rm_json_free(j);
    }
    CHECK(rm_test_wait_metric(sp.port, "adapters_in_use", 0, 5000));
    CHECK(rm_test_metric(sp.port, "adapter_cache_bytes") <= budget); // back under it once nobody holds them
    CHECK(complete_with(sp.port, 1, 8, got, sizeof got) == 200 && !strcmp(got, want[1]));
    CHECK(rm_test_server_stop(&sp) == 0);
}

// The status of POST path with body, and the error's "param" in param (or "").
static int post_param(int port, const char *path, const char *body, char *param, size_t cap, char *msg, size_t mcap) {
    rm_json *j = NULL;
    int st = rm_test_http(port, "POST", path, body, &j);
    const rm_json *e = j ? rm_json_get(j, "error") : NULL;
    snprintf(param, cap, "%s", e ? rm_json_get_str(e, "param", "") : "");
    if (msg) snprintf(msg, mcap, "%s", e ? rm_json_get_str(e, "message", "") : "");
    rm_json_free(j);
    return st;
}

TEST(serve_limits_413_and_sampling_400) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    char w[5][512], pool[512], args[2048];
    REQUIRE(serve_make_adapters(serve_tiny_model(), w) == RM_OK);
    snprintf(pool, sizeof pool, "%s/limits-pool", rm_test_tmpdir());
    REQUIRE(serve_make_pool(pool, (const int[]){1, 0, 0, 0, 0}, w) == RM_OK);
    snprintf(args, sizeof args, "-m %s --pool %s -t 1 --ctx 256 --adapter-dir %s --max-body 16777216",
             serve_tiny_model(), pool, rm_test_tmpdir());
    rm_test_server sp;
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    char param[64], msg[512];

    // sampling fields: refused with the field named, on both routes that sample
    static const struct {
        const char *field, *value;
    } bad[] = {
        {"max_tokens", "1.5"},    {"max_tokens", "1e20"}, {"max_tokens", "\"8\""}, {"temperature", "-5"},
        {"temperature", "1e999"}, {"temperature", "3"},   {"top_p", "7"},          {"top_p", "0"},
        {"top_k", "2.5"},         {"seed", "-1"},         {"min_p", "-0.1"},       {"repeat_penalty", "0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int chat = 0; chat < 2; chat++) {
            char body[256];
            snprintf(body, sizeof body, "{%s, \"%s\": %s}",
                     chat ? "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]" : "\"prompt\": \"hi\"",
                     bad[i].field, bad[i].value);
            int st = post_param(sp.port, chat ? "/v1/chat/completions" : "/v1/completions", body, param, sizeof param,
                                msg, sizeof msg);
            CHECKF(st == 400 && !strcmp(param, bad[i].field), "%s %s: %s: status %d, param '%s' (%s)",
                   chat ? "chat" : "completion", bad[i].field, bad[i].value, st, param, msg);
        }
    // in range: answered
    CHECK(post_param(sp.port, "/v1/completions",
                     "{\"prompt\": \"hi\", \"max_tokens\": 2, \"temperature\": 2, \"top_p\": 1, \"seed\": 7}", param,
                     sizeof param, NULL, 0) == 200);

    // an upload of 1001 samples: 413 naming the limit
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_printf(&b, "{\"name\": \"many\", \"weights\": \"%s\", \"samples\": [", w[1]);
    for (int i = 0; i < 1001; i++) rm_sb_printf(&b, "%s\"sample %d\"", i ? ", " : "", i);
    rm_sb_puts(&b, "]}");
    CHECK(post_param(sp.port, "/v1/adapters", b.buf, param, sizeof param, msg, sizeof msg) == 413);
    CHECKF(strstr(msg, "1001") && strstr(msg, "1000"), "%s", msg);
    // 1000 samples of 9000 bytes: over the pool's 8 MiB per adapter
    b.len = 0;
    rm_sb_printf(&b, "{\"name\": \"big\", \"weights\": \"%s\", \"samples\": [", w[1]);
    char *text = malloc(9001);
    REQUIRE(text);
    memset(text, 'x', 9000);
    text[9000] = 0;
    for (int i = 0; i < 1000; i++) rm_sb_printf(&b, "%s\"%s\"", i ? ", " : "", text);
    free(text);
    rm_sb_puts(&b, "]}");
    REQUIRE(!b.oom);
    CHECK(post_param(sp.port, "/v1/adapters", b.buf, param, sizeof param, msg, sizeof msg) == 413);
    CHECKF(strstr(msg, "over the limit"), "%s", msg);
    rm_sb_free(&b);
    // and the pool has neither; a fair upload passes
    rm_json *j = NULL;
    CHECK(rm_test_http(sp.port, "GET", "/v1/adapters", NULL, &j) == 200 && j && rm_json_get(j, "data") &&
          rm_json_get(j, "data")->n == 1);
    rm_json_free(j);
    char body[1024];
    snprintf(body, sizeof body, "{\"name\": \"fair\", \"weights\": \"%s\", \"samples\": [\"a\", \"b\"]}", w[1]);
    CHECK(post_param(sp.port, "/v1/adapters", body, param, sizeof param, msg, sizeof msg) == 201);
    CHECK(rm_test_server_stop(&sp) == 0);
}

// What kill -9 during an upload leaves (an upload folder with a half-written
// temporary) is removed when a server starts; uploads of live processes and
// of other hosts sharing the folder are not touched.
TEST(serve_upload_sweep_dead_processes) {
    char root[1024], dead[1200], live[1200], other[1200], file[1300], host[64] = "";
    gethostname(host, sizeof host - 1);
    snprintf(root, sizeof root, "%s/sweep", rm_test_tmpdir());
    REQUIRE(mkdir(root, 0755) == 0);
    pid_t child = fork(); // a pid that has surely exited
    REQUIRE(child >= 0);
    if (child == 0) _exit(0);
    REQUIRE(waitpid(child, NULL, 0) == child);
    snprintf(dead, sizeof dead, "%s/.upload-%s-%ld-7", root, host, (long)child);
    snprintf(live, sizeof live, "%s/.upload-%s-%ld-8", root, host, (long)getpid());
    snprintf(other, sizeof other, "%s/.upload-%s-%ld-%ld-9", root, host, (long)child, (long)child); // host "HOST-PID"
    const char *dirs[3] = {dead, live, other};
    for (int i = 0; i < 3; i++) {
        REQUIRE(mkdir(dirs[i], 0755) == 0);
        snprintf(file, sizeof file, "%s/adapter.gguf.tmp%ld", dirs[i], (long)child);
        FILE *f = fopen(file, "w");
        REQUIRE(f);
        fputs("half", f);
        fclose(f);
    }
    CHECK(upload_sweep(root, host) == 1);
    struct stat st;
    CHECK(stat(dead, &st) != 0);
    CHECK(stat(live, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(stat(other, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK(upload_sweep(root, host) == 0); // nothing more to do
}

// --lora-f16 / --lora-q8: the loaded adapter carries its packed copies (the
// cache's bytes are those of the adapter with them) and answers.
static void lora_mirrors_served(int q8) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    char w[5][512], pool[512], args[2048], got[512];
    REQUIRE(serve_make_adapters(serve_tiny_model(), w) == RM_OK);
    snprintf(pool, sizeof pool, "%s/%s-pool", rm_test_tmpdir(), q8 ? "q8" : "f16");
    REQUIRE(serve_make_pool(pool, (const int[]){1, 0, 0, 0, 0}, w) == RM_OK);
    rm_llama *m = NULL;
    rm_lora *l = NULL;
    REQUIRE(rm_llama_load(&m, serve_tiny_model()) == RM_OK);
    size_t f32 = 0, with = 0;
    if (rm_lora_load_for(&l, w[0], m) == RM_OK) {
        f32 = rm_lora_bytes(l);
        if ((q8 ? rm_lora_make_q8(l) : rm_lora_make_f16(l)) == RM_OK) with = rm_lora_bytes(l);
    }
    rm_lora_free(l);
    rm_llama_free(m);
    REQUIRE(f32 > 0 && with > f32);
    snprintf(args, sizeof args, "-m %s --pool %s -t 1 --ctx 256 --slots 2 --lora-%s", serve_tiny_model(), pool,
             q8 ? "q8" : "f16");
    rm_test_server sp;
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    CHECK(complete_with(sp.port, 0, 8, got, sizeof got) == 200 && got[0]);
    CHECK(rm_test_wait_metric(sp.port, "adapters_in_use", 0, 5000));
    CHECKF(rm_test_metric(sp.port, "adapter_cache_bytes") == (double)with,
           "cache holds %.0f bytes, the adapter with mirrors %zu", rm_test_metric(sp.port, "adapter_cache_bytes"),
           with);
    CHECK(rm_test_server_stop(&sp) == 0);
}

TEST(serve_lora_f16_mirrors) { lora_mirrors_served(0); }
TEST(serve_lora_q8_mirrors) { lora_mirrors_served(1); }
