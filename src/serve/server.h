// server.h — `ramole serve` as a library: one base model, a pool of LoRA
// adapters, the continuous-batching engine and the HTTP API over them.
//
// Threads: libmicrohttpd's I/O threads (http.h) parse requests and answer the
// quick ones; two workers do the slow parts of a request (retrieval and its
// embedding, loading an adapter, tokenizing) and a third the uploads, so no
// client waits behind them; one engine thread runs the batched forward
// passes (on the compute thread pool) and streams tokens out.
#ifndef RM_SERVE_SERVER_H
#define RM_SERVE_SERVER_H
#include "serve/http.h"

typedef struct rm_server rm_server;

typedef struct rm_server_params {
    const char *model;         // the base model (GGUF or what rm_llama_load reads)
    const char *pool;          // an existing pool directory, or NULL
    const char *router;        // a RouterLoRA file for "compose": "router", or NULL
    const char *model_name;    // the base model's name for clients (NULL: the file's name without .gguf)
    const char *auto_name;     // the model name that means RAMoLE: retrieve and compose ("ramole-auto")
    const char *default_model; // what a request without "model" gets (NULL: the base model)
    int unknown_is_default;    // an unknown "model" gets the default model (0: 404, as OpenAI)
    int auto_k;                // adapters the auto model retrieves (3)
    float auto_min_score;      // and the score they need (-INFINITY: any)
    int compute_threads;       // the forward pass's thread pool (0: one per core)
    int slots, ctx, rows;      // sequences at once, positions each, batch rows per step
    int kv_type;               // the KV cache's elements: RM_KV_F16 (the default: half the memory) or RM_KV_F32
    rm_http_params http;       // address, I/O threads, limits (handler and log set by the server)
    const char *adapter_dir;   // uploads by server path must lie inside it (NULL: none allowed)
    size_t max_upload;         // bodies of POST /v1/adapters (files) up to this (256 MiB)
    size_t adapter_cache;      // bytes of loaded adapters kept (1 GiB): past it the least recently used
                               // that no running request holds are evicted, and loaded again on demand; 0: no limit
    int lora_mirror;           // 1 (2): loaded adapters get packed f16 (8-bit) mirrors that the batched hook
                               // reads instead of f32 (half (a quarter of) the bytes per batch); 0: f32
    const char *api_key;       // inference needs "Authorization: Bearer KEY" (this or the admin key); NULL: open
    const char *admin_key;     // uploads and deletes need it (NULL: the api key, if any, else open)
    // One line per request (no newline), from any thread; NULL: no log.
    // log_json: a JSON object per line, else text.
    void (*log_line)(void *user, const char *line);
    void *log_user;
    int log_json;
} rm_server_params;
rm_server_params rm_server_default_params(void);

// Loads everything and starts listening.
int rm_server_start(const rm_server_params *p, rm_server **out);
const char *rm_server_url(const rm_server *s);
// Requests being worked on: handed to the API and not yet answered (the
// fuzz harnesses wait for 0 between two inputs).
int rm_server_working(rm_server *s);
// Graceful stop, part one: new requests get 503 from now on (rm_server_drain
// does this first too).
void rm_server_refuse_new(rm_server *s);
// Part two: new requests get 503; returns once every request
// received has been answered, or after timeout seconds (or when *force
// becomes non-zero), when the requests still running are ended with an
// error. Returns the number of requests that had to be ended.
int rm_server_drain(rm_server *s, double timeout, volatile int *force);
// Part three: stops every thread and frees everything.
void rm_server_free(rm_server *s);
#endif
