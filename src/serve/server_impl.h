// server_impl.h — what the files of the server share (server.c: threads and
// lifecycle; routes.c: the API; openai.c: answers in OpenAI's formats;
// metrics.c: GET /metrics). Not a public header.
#ifndef RM_SERVE_SERVER_IMPL_H
#define RM_SERVE_SERVER_IMPL_H
#include "serve/server.h"
#include "serve/engine.h"
#include "lora/cache.h"
#include "retrieve/pick.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

// A queue of jobs done by a few threads of their own.
typedef void (*workq_fn)(void *arg);
typedef struct workq_item {
    workq_fn fn;
    void *arg;
    struct workq_item *next;
} workq_item;
typedef struct workq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    workq_item *head, *tail;
    pthread_t th[4];
    int n_threads, stop;
} workq;
int workq_start(workq *q, int n_threads);
// RM_ENOMEM when the job cannot be queued (the caller answers for it).
int workq_push(workq *q, workq_fn fn, void *arg);
// Runs what is queued, then joins the threads.
void workq_stop(workq *q);

// One answer of a completion request (a prompt, one of its n samples): an
// engine sequence of its own.
typedef struct choice {
    struct job *j;
    int index;
    int32_t *ids; // the prompt's tokens
    int n_prompt;
    char *echo; // the prompt's text when echoed (completions), else NULL
    rm_detok detok;
    rm_sb text;                       // the text generated so far, cut before a stop string
    size_t sent;                      // streaming: bytes of text sent
    rm_sb lp, lp_tok, lp_top, lp_off; // logprobs not yet answered (chat: lp; completions: the four arrays)
    int n_lp;                         // entries in them
    int32_t *out;                     // the tokens generated
    int n_out;
    const char *finish;   // "stop", "length"
    int stopped;          // a stop string ended it
    rm_route_stats route; // with "return_routing" and the router: its weights (sum, n NULL otherwise)
} choice;

// One completion request, from its worker to the engine's last callback.
typedef struct job {
    rm_server *s;
    rm_http_req *r;
    long id;
    long long created;
    int chat, stream, include_usage, echo;
    int logprobs, n_top; // logprobs asked for, and how many alternatives per token
    int auto_compose;    // the auto model chose the adapters: its default composition applies
    int return_routing;  // "return_routing": true
    char *model;         // the "model" answers report: what was asked for
    char *stop[4];
    int n_stop;
    size_t max_stop;
    int max_new;
    rm_sampler_params sp;
    rm_lora *lora[RM_PLAN_MAX];
    rm_compose_mode mode;
    rm_pick pick;
    choice *ch;
    int n_choices, n_samples, n_done, failed; // choices: prompts x samples ("n")
    char param[64];                           // the request field an error is about ("" none)
    char ctype[256];                          // the request's Content-Type
    char err[256];                            // the first error that ended a choice
    double t_first;                           // when the first token came (rm_http_now; 0: none yet)
    int holds;                                // counted in n_holding: may hold adapters of the cache
    struct job *next;                         // in the engine's list of submissions
} job;
void job_free(job *j);

// The model name of the pool's retrieval embedder in POST /v1/embeddings.
#define RM_RETRIEVER_MODEL "ramole-retriever"

// A POST /v1/embeddings of the base model, for the engine thread.
typedef struct embed_task {
    rm_server *s;
    rm_http_req *r;
    char *model;
    int n, dim, b64;
    int32_t **ids; // [n] each input's tokens (base model)
    int *len;
    char **text; // [n] each input's text (NULL for token ids)
    float *vec;  // [n][dim]
    struct embed_task *next;
} embed_task;
void embed_task_free(embed_task *t);

struct rm_server {
    rm_server_params p;
    rm_llama *m;
    rm_lora *router;
    rm_threadpool *tp;
    rm_pool *pool; // SQLite and an embedder: one thread at a time (pool_mu)
    pthread_mutex_t pool_mu;
    atomic_int pool_size;    // read without the lock (metrics, health)
    pthread_t follow_thread; // follow.c: refreshes the pool on other servers' changes
    int follow_started;
    atomic_int follow_stop, pool_reachable;
    atomic_llong n_pool_reloads;
    rm_lora_cache cache; // adapters bound to the model (cache_mu)
    pthread_mutex_t cache_mu;
    atomic_int n_loaded; // cache.n, read without the lock
    double load_seconds; // spent loading adapters for the cache (cache_mu)
    int n_holding;       // jobs holding adapters of the cache (cache_mu)
    rm_lora **retired;   // deleted adapters, freed once no job holds any (cache_mu)
    int n_retired, cap_retired;
    rm_engine *eng; // the engine thread's alone
    pthread_t eng_thread;
    int eng_started;
    pthread_mutex_t eng_mu; // guards what follows
    pthread_cond_t eng_cv;
    job *sub_head, *sub_tail;        // submitted, not yet in the engine
    embed_task *emb_head, *emb_tail; // base-model embeddings to compute between two steps
    int eng_busy, eng_stop, eng_abort;
    rm_engine_stats eng_stats; // after the last step
    workq fast, slow;          // request preparation; uploads
    rm_http *http;
    char *base_name; // p.model_name, or derived from the file name
    // the pool's weights folder (else $TMPDIR or /tmp): upload bodies are
    // written there as they arrive (NULL: no pool)
    char *spool_dir;
    atomic_long next_id;
    time_t started;
    atomic_llong n_completions, n_uploads;
};

// What the request log says of a request beside its line, path, status and
// time (attached to it with rm_http_set_log).
typedef struct req_log {
    char model[128];
    char adapters[512];                        // names, comma-separated
    long long prompt_tokens, generated_tokens; // -1: not a completion
    double ttft;                               // seconds from the head to the first token (-1: none)
} req_log;
// Attaches j's log fields to its request (before its answer).
void server_log_job(job *j);
// The http layer's log callback: formats and writes the line.
void server_log(void *user, const rm_http_req *r, int status, double seconds, void *data);

// Hands a prepared job to the engine thread (which answers it from then on).
void server_submit(rm_server *s, job *j);
// Hands a base-model embedding to the engine thread (which answers it).
void server_submit_embedding(rm_server *s, embed_task *t);
// The engine's stats after its last step.
void server_engine_stats(rm_server *s, rm_engine_stats *st);

// routes.c: the HTTP handler; the adapters of a request (pool lock taken
// inside; 0 or an HTTP status, message set); an adapter bound to the model
// (from the cache, or loaded without holding its lock).
void routes_handle(void *user, rm_http_req *r);
size_t routes_body_limit(void *user, const char *method, const char *path);
int routes_head(void *user, rm_http_req *r, rm_sb *b);
const char *routes_spool_dir(void *user, const char *method, const char *path);
int routes_choose_adapters(rm_server *s, job *j, const rm_json *req, const char *query);
int server_adapter_get(rm_server *s, const char *name, const char *weights, rm_lora **out);
// An upload's sample count limit: the 413 (message set) for n samples.
#define SERVER_MAX_SAMPLES 1000
int server_too_many_samples(size_t n);
// Gives back what server_adapter_get held (NULL: nothing).
void server_adapter_put_back(rm_server *s, const rm_lora *l);
// A job about to hold adapters from the cache says so first (job_free ends
// it, giving back the references its j->lora hold); adapters deleted
// meanwhile are freed only once no job holds any.
void server_hold(rm_server *s, job *j);
void server_release(rm_server *s, job *j);
// What a model name means here (pool lock held, or before serving starts).
enum { MODEL_NONE = -1, MODEL_BASE, MODEL_AUTO, MODEL_ADAPTER };
int server_model_kind(rm_server *s, const char *name);
// openai.c: a completion request checked and made ready for the engine (0
// or an HTTP status, message set, j->param the field at fault); the engine's
// callbacks for each choice; the stream's opening.
int openai_prepare(job *j, const rm_json *req);
// A chat's "messages" rendered with the model's template (*prompt) and its
// last user message (*query); both malloc'd. 0 or an HTTP status.
int openai_chat_prompt(job *j, const rm_json *req, char **prompt, char **query);
int openai_token(void *user, int32_t id, const float *logits);
void openai_done(void *user, const int32_t *tokens, int n, const char *reason);
// The engine's cancel callback: 1 once a streamed choice's client has gone.
int openai_gone(void *user);
void openai_stream_open(job *j);
// An error in OpenAI's shape about j's field param (may be "").
void openai_reply_error(job *j, int status, const char *msg);
// embeddings.c: a request checked (0 or an HTTP status, message set, j->param
// the field; the retriever's answered at once, the base model's handed to the
// engine thread); the engine thread's part.
int embeddings_prepare(job *j, const rm_json *req);
void embeddings_run(rm_server *s, embed_task *t);
// upload.c: POST /v1/adapters with the files in a multipart/form-data body
// (0 or an HTTP status, message set; the answer's JSON in b).
int upload_content(job *j, const char *body, size_t len, rm_sb *b);
// rm_lora_load_for on the server's model, then the f16 mirrors with --lora-f16.
int server_load_adapter(rm_server *s, const char *weights, rm_lora **out);
// Removes the upload folders (ROOT/.upload-HOST-PID-N) that processes of this
// host left when they died mid-upload (no process PID any more); uploads of
// live processes and of other hosts sharing the folder are left alone.
// Returns how many were removed.
int upload_sweep(const char *root, const char *host);
// follow.c: the thread keeping the pool in step with other servers' changes
// (started once the pool is open, stopped before it is closed); the HTTP
// status for a pool call's status (RM_EUNAVAILABLE: 503, RM_ETOOBIG: 413,
// RM_ENOTFOUND: 404, other failures 400).
int server_follow_start(rm_server *s);
void server_follow_stop(rm_server *s);
int server_pool_status(int rc);
// metrics.c: GET /metrics.
void metrics_answer(rm_server *s, rm_http_req *r);
#endif
