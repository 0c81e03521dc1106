// cmd_serve.c — `ramole serve`: the HTTP server for one base model and a pool
// of LoRA adapters (src/serve/server.h). This file parses the options, starts
// the server and stops it gracefully on SIGTERM / SIGINT: requests already
// received finish, new ones get 503; a second signal (or --drain-timeout)
// ends the ones still running.
#include "cli.h"
#include "base/err.h"
#include "model/kvcache.h"
#include "serve/server.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static volatile sig_atomic_t g_signals;
static volatile sig_atomic_t g_force;
static void on_signal(int sig) {
    (void)sig;
    if (++g_signals > 1) g_force = 1;
}

// The request log: one line each, whole (the server's threads write at once).
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static void log_line(void *user, const char *line) {
    (void)user;
    pthread_mutex_lock(&g_log_mu);
    fprintf(stderr, "ramole serve: %s\n", line);
    pthread_mutex_unlock(&g_log_mu);
}

// The pool as the log shows it: a URL's password replaced by ***.
static const char *pool_shown(const char *pool, char *buf, size_t cap) {
    const char *auth = strstr(pool, "://"), *at = auth ? strchr(auth + 3, '@') : NULL,
               *slash = auth ? strchr(auth + 3, '/') : NULL;
    const char *colon = auth ? strchr(auth + 3, ':') : NULL;
    if (!at || (slash && slash < at) || !colon || colon > at) return pool;
    snprintf(buf, cap, "%.*s:***%s", (int)(colon - pool), pool, at);
    return buf;
}

static void usage(void) {
    printf(
        "usage: ramole serve -m MODEL [--pool DIR|URL] [--router FILE] [--host H] [--port P] [-t N] [--threads N]\n"
        "                    [--slots S] [--ctx N] [--max-connections N] [--timeout S] [--max-body BYTES]\n"
        "                    [--drain-timeout S] [--request-timeout S] [--max-per-ip N] [--health-reserve N]\n"
        "                    [--adapter-cache-mb MB] [--lora-f16 | --lora-q8] [--kv-type f16|f32]\n\n"
        "  --pool DIR|URL      the adapter pool: a folder (SQLite), or a PostgreSQL database shared by\n"
        "                      replicas, postgresql://USER@HOST:PORT/DB?weights=SHARED_DIR (docs/deploy.md)\n"
        "  --host H            address to listen on (127.0.0.1); an IPv6 address such as ::1, or :: for\n"
        "                      every address of both families\n"
        "  --port P            (8080); 0 picks a free port; the address is printed on stderr\n"
        "  -t, --compute-threads N  threads of the forward pass (0: one per core)\n"
        "  --threads N         HTTP I/O threads (2), apart from the compute threads\n"
        "  --slots S           sequences the engine runs at once (8); --ctx N positions each (2048)\n"
        "  --kv-type f16|f32   the KV cache's elements (f16: slots x ctx x layers x 2 x kv heads x head size\n"
        "                      x 2 bytes, half of f32's, and half the bytes attention reads); f32 for exact\n"
        "                      f32 keys and values, as `ramole generate` and `ramole eval` use by default\n"
        "  --max-connections N open connections at once (256); more are refused\n"
        "  --timeout S         seconds a connection may stay silent: idle, or sending its request (60)\n"
        "  --max-body BYTES    request bodies above this get 413 (4194304)\n"
        "  --request-timeout S seconds a request's head and body may take in all, however they trickle in,\n"
        "                      from the connection's opening or its previous answer; then it is closed (60; 0: none)\n"
        "  --max-per-ip N      open connections from one client address; more are closed at once (64; 0: no cap)\n"
        "  --health-reserve N  connections past --max-connections that only GET /health may use, so it answers\n"
        "                      when the table is full (one per client address); anything else there gets 503\n"
        "                      (256; 0: none)\n"
        "  --adapter-cache-mb MB  loaded adapters kept within this many MiB (fractions allowed): the least recently\n"
        "                      used that no running request holds are evicted, loaded again on demand (1024; 0: none)\n"
        "  --lora-f16          loaded adapters also get packed f16 copies that batches read instead of f32: half the\n"
        "                      bytes per batch (faster decode with many or wide adapters), at f16 precision\n"
        "  --lora-q8           the same with 8-bit copies (one scale per row of A and of B): a quarter of the bytes,\n"
        "                      each weight within 0.4%% of its row's largest\n"
        "  --drain-timeout S   on SIGTERM, seconds running requests get to finish (30)\n"
        "  --model-name NAME   the base model's name for clients (the file's name without .gguf)\n"
        "  --auto-model NAME   the model name that means RAMoLE: retrieve the request's adapters and compose\n"
        "                      them (router with --router, else mixture) (ramole-auto)\n"
        "  --retrieve K, --min-score S  what the auto model retrieves: K adapters (3) scoring S or more\n"
        "  --default-model NAME  what a request without \"model\" gets (the base model)\n"
        "  --unknown-model 404|default  an unknown \"model\": 404 as OpenAI (404), or the default model\n"
        "  --api-key KEY       inference needs \"Authorization: Bearer KEY\" (or the admin key); also RAMOLE_API_KEY\n"
        "  --admin-key KEY     uploads and deletes need it (without it: the api key); also RAMOLE_ADMIN_KEY\n"
        "                      (GET /health is always open; keys are compared in constant time, never logged)\n"
        "  --log-format F      one line per request on stderr: text (default), json or none\n"
        "  --adapter-dir DIR   uploads naming a server path (JSON \"weights\") must lie inside DIR (none: refused)\n"
        "  --max-upload BYTES  bodies of file uploads (multipart POST /v1/adapters) up to this (268435456)\n\n"
        "HTTP API (JSON; HTTP/1.1 keep-alive and pipelining, chunked request bodies):\n"
        "  POST /v1/completions  {\"prompt\", \"max_tokens\" (16), \"temperature\", \"top_p\", \"top_k\",\n"
        "                         \"min_p\", \"repeat_penalty\", \"seed\",\n"
        "                         \"adapters\": [names] | \"retrieve\": K (+ \"min_score\": S: only adapters scoring "
        "S\n"
        "                         or more; none: the base model), \"compose\": "
        "\"mixture\"|\"fusion\"|\"selection\"|\"router\",\n"
        "                         \"model\": the base model's name, the auto model's, or an adapter's (vLLM style)}\n"
        "                         (\"router\": the RouterLoRA given with --router, `ramole router train`)\n"
        "                        -> OpenAI-style text_completion, plus token_ids and the adapters used\n"
        "  POST /v1/chat/completions  the same with {\"messages\": [{\"role\", \"content\"}...]} instead of\n"
        "                        \"prompt\" (the model's chat template; adapters retrieved by the last user message)\n"
        "  POST /v1/adapters     multipart/form-data: fields name, samples (a JSON list), task, domain and the files\n"
        "                        (one .gguf, or adapter_config.json + adapter_model.safetensors), kept in the pool's\n"
        "                        folder under their SHA-256; or JSON {\"name\", \"samples\", \"weights\": a path "
        "inside\n"
        "                        --adapter-dir}. Checked against the model, then added (retrievable at once)\n"
        "  \"stream\": true       server-sent events, one chunk per piece of text, then data: [DONE]\n"
        "  GET  /v1/adapters     the pool's adapters\n"
        "  GET  /v1/models[/ID]  the base model, the auto model and every adapter with weights\n"
        "  GET  /health\n"
        "  GET  /metrics         counters and gauges in the Prometheus text format\n\n"
        "Running requests advance together, one batched forward pass per step (--slots at once;\n"
        "prompts are fed in chunks). Retrieval, adapter loads and uploads run on worker threads.\n");
}

static int cmd_serve(int argc, char **argv) {
    rm_server_params p = rm_server_default_params();
    const char *min_score = NULL, *unknown = "404", *log_format = "text";
    p.api_key = getenv("RAMOLE_API_KEY"), p.admin_key = getenv("RAMOLE_ADMIN_KEY");
    long auto_k = p.auto_k, max_upload = (long)p.max_upload;
    long port = p.http.port, threads = 0, io = p.http.threads, slots = p.slots, ctx = p.ctx,
         conns = p.http.max_connections, timeout = p.http.timeout, body = (long)p.http.max_body, drain = 30,
         req_timeout = p.http.request_timeout, per_ip = p.http.max_per_ip, reserve = p.http.reserve;
    const char *cache_mb = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            usage();
            return 0;
        } else if (cli_str(argc, argv, &i, "--model", "-m", &p.model)) {
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &p.pool)) {
        } else if (cli_str(argc, argv, &i, "--router", NULL, &p.router)) {
        } else if (cli_str(argc, argv, &i, "--host", NULL, &p.http.host)) {
        } else if (cli_int(argc, argv, &i, "--port", NULL, &port)) {
        } else if (cli_int(argc, argv, &i, "--compute-threads", "-t", &threads)) {
        } else if (cli_int(argc, argv, &i, "--threads", NULL, &io)) {
        } else if (cli_int(argc, argv, &i, "--slots", NULL, &slots)) {
        } else if (cli_int(argc, argv, &i, "--ctx", "-c", &ctx)) {
        } else if (cli_kv_type(argc, argv, &i, &p.kv_type)) {
        } else if (cli_int(argc, argv, &i, "--max-connections", NULL, &conns)) {
        } else if (cli_int(argc, argv, &i, "--timeout", NULL, &timeout)) {
        } else if (cli_int(argc, argv, &i, "--max-body", NULL, &body)) {
        } else if (cli_int(argc, argv, &i, "--drain-timeout", NULL, &drain)) {
        } else if (cli_int(argc, argv, &i, "--request-timeout", NULL, &req_timeout)) {
        } else if (cli_int(argc, argv, &i, "--max-per-ip", NULL, &per_ip)) {
        } else if (cli_int(argc, argv, &i, "--health-reserve", NULL, &reserve)) {
        } else if (cli_str(argc, argv, &i, "--adapter-cache-mb", NULL, &cache_mb)) {
        } else if (!strcmp(argv[i], "--lora-f16")) {
            p.lora_mirror = 1;
        } else if (!strcmp(argv[i], "--lora-q8")) {
            p.lora_mirror = 2;
        } else if (cli_str(argc, argv, &i, "--model-name", NULL, &p.model_name)) {
        } else if (cli_str(argc, argv, &i, "--auto-model", NULL, &p.auto_name)) {
        } else if (cli_str(argc, argv, &i, "--default-model", NULL, &p.default_model)) {
        } else if (cli_str(argc, argv, &i, "--unknown-model", NULL, &unknown)) {
        } else if (cli_int(argc, argv, &i, "--retrieve", NULL, &auto_k)) {
        } else if (cli_str(argc, argv, &i, "--min-score", NULL, &min_score)) {
        } else if (cli_str(argc, argv, &i, "--api-key", NULL, &p.api_key)) {
        } else if (cli_str(argc, argv, &i, "--admin-key", NULL, &p.admin_key)) {
        } else if (cli_str(argc, argv, &i, "--log-format", NULL, &log_format)) {
        } else if (cli_str(argc, argv, &i, "--adapter-dir", NULL, &p.adapter_dir)) {
        } else if (cli_int(argc, argv, &i, "--max-upload", NULL, &max_upload)) {
        } else {
            fprintf(stderr, "ramole serve: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!p.model) {
        fprintf(stderr, "ramole serve: -m MODEL is required\n");
        return 2;
    }
    if (port < 0 || port > 65535 || slots < 1 || slots > 1024 || ctx < 2 || threads < 0 || io < 1 || io > 64 ||
        conns < 1 || conns > 65536 || timeout < 1 || body < 1 || drain < 0 || req_timeout < 0 || req_timeout > 86400 ||
        per_ip < 0 || per_ip > 65536 || reserve < 0 || reserve > 4096) {
        fprintf(
            stderr,
            "ramole serve: bad --port, --slots, --ctx, --threads, --max-connections, --timeout, --max-body, "
            "--drain-timeout, --request-timeout, --max-per-ip, --health-reserve or --adapter-cache-mb (see --help)\n");
        return 2;
    }
    char *end = NULL;
    if (min_score) p.auto_min_score = strtof(min_score, &end);
    if ((min_score && (end == min_score || *end)) || (strcmp(unknown, "404") && strcmp(unknown, "default")) ||
        auto_k < 1 || auto_k > 8 || max_upload < 1) {
        fprintf(stderr, "ramole serve: bad --min-score (a number), --unknown-model (404 or default), --retrieve (1..8) "
                        "or --max-upload\n");
        return 2;
    }
    p.unknown_is_default = !strcmp(unknown, "default"), p.auto_k = (int)auto_k, p.max_upload = (size_t)max_upload;
    if ((p.api_key && !*p.api_key) || (p.admin_key && !*p.admin_key) ||
        (strcmp(log_format, "text") && strcmp(log_format, "json") && strcmp(log_format, "none"))) {
        fprintf(stderr,
                "ramole serve: an empty --api-key / --admin-key, or a --log-format other than text, json, none\n");
        return 2;
    }
    if (strcmp(log_format, "none")) p.log_line = log_line, p.log_json = !strcmp(log_format, "json");
    p.http.port = (int)port, p.http.threads = (int)io, p.http.max_connections = (int)conns,
    p.http.timeout = (int)timeout;
    p.http.max_body = (size_t)body;
    p.http.request_timeout = (int)req_timeout, p.http.max_per_ip = (int)per_ip, p.http.reserve = (int)reserve;
    if (cache_mb) { // MiB, fractions allowed
        char *e = NULL;
        double mb = strtod(cache_mb, &e);
        if (e == cache_mb || *e || !(mb >= 0 && mb <= 1 << 30)) {
            fprintf(stderr, "ramole serve: bad --adapter-cache-mb (MiB, 0 for no limit)\n");
            return 2;
        }
        p.adapter_cache = (size_t)(mb * (1 << 20));
    }
    p.compute_threads = (int)threads, p.slots = (int)slots, p.ctx = (int)ctx;
    // One malloc arena: adapters are loaded on worker threads and freed on the
    // engine thread, and with an arena per thread each arena kept its own
    // free holes, so RSS went to twice the adapter cache's budget (MALLOC_ARENA_MAX
    // in the environment still decides, when set).
    if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 1);
    // a descriptor for every connection the table and the reserve may hold, and room for files
    struct rlimit nf;
    rlim_t need = (rlim_t)conns + (rlim_t)reserve + 256;
    if (!getrlimit(RLIMIT_NOFILE, &nf) && nf.rlim_cur < need) {
        nf.rlim_cur = nf.rlim_max < need ? nf.rlim_max : need;
        setrlimit(RLIMIT_NOFILE, &nf);
        if (nf.rlim_cur < need)
            fprintf(stderr,
                    "ramole serve: note: the open-file limit (%llu) is below the %llu descriptors the connection "
                    "limits can take\n",
                    (unsigned long long)nf.rlim_cur, (unsigned long long)need);
    }
    // the server's threads inherit a mask without these: only this thread takes the signals
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    rm_server *s = NULL;
    int rc = rm_server_start(&p, &s);
    sigdelset(&set, SIGPIPE);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    if (rc) return cli_fail("ramole serve");
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    char shown[1024];
    fprintf(stderr, "ramole serve: listening on %s (%d slots x %d positions, %s KV cache, %ld I/O threads%s%s%s)\n",
            rm_server_url(s), p.slots, p.ctx, rm_kv_type_name(p.kv_type), io, p.pool ? ", pool " : "",
            p.pool ? pool_shown(p.pool, shown, sizeof shown) : "", p.api_key || p.admin_key ? ", keys required" : "");
    while (!g_signals) {
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    rm_server_refuse_new(s);
    fprintf(stderr, "ramole serve: draining (running requests finish, new ones get 503)\n");
    int ended = rm_server_drain(s, (double)drain, &g_force);
    if (ended) fprintf(stderr, "ramole serve: %d requests ended before their end\n", ended);
    rm_server_free(s);
    fprintf(stderr, "ramole serve: stopped\n");
    return 0;
}

RM_COMMAND(serve, "HTTP server: completions with retrieved or named LoRA adapters, uploads at run time", cmd_serve)
