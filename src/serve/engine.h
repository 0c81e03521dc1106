// engine.h — continuous batching: many sequences, each with its own sampler
// and LoRA composition plan, advanced together one forward pass at a time.
//
// A step puts every running sequence's next row in one ragged batch (decode
// rows) plus the next prompt chunk of sequences still prefilling, up to a
// row budget; the batched LoRA hook applies each row's plan. A sequence's
// tokens do not depend on what else runs (the forward pass and the hook are
// batch-invariant bit for bit), so a served completion equals `ramole
// generate` with the same prompt, adapters and sampler settings.
#ifndef RM_SERVE_ENGINE_H
#define RM_SERVE_ENGINE_H
#include "lora/batch.h"
#include "model/llama.h"
#include "model/sampler.h"

typedef struct rm_engine rm_engine;

// Called once per finished sequence: its new tokens and why it stopped
// ("stop": end-of-generation token, "length": max_new reached), or, with
// tokens == NULL, the error that ended it (message in rm_last_error()).
typedef void (*rm_engine_done_cb)(void *user, const int32_t *tokens, int n, const char *finish_reason);
// Called for every new token as it is sampled (before done), when given,
// with the logits it was sampled from (after the repetition penalty; n_vocab
// of them). Returning non-zero ends the sequence there, finish reason "stop"
// (a stop string was met).
typedef int (*rm_engine_token_cb)(void *user, int32_t token, const float *logits);

typedef struct rm_engine_cbs {
    rm_engine_done_cb done;   // required
    rm_engine_token_cb token; // may be NULL
    void *user;
} rm_engine_cbs;

// n_slots sequences at once, each up to n_ctx positions; rows_per_step is the
// batch row budget (prompt chunks share it). tp may be NULL. The KV cache is
// f32 (rm_engine_new) or of kv_type (RM_KV_F32 / RM_KV_F16, model/kvcache.h).
int rm_engine_new(rm_engine **out, rm_llama *m, rm_threadpool *tp, int n_slots, int n_ctx, int rows_per_step);
int rm_engine_new_kv(rm_engine **out, rm_llama *m, rm_threadpool *tp, int n_slots, int n_ctx, int rows_per_step,
                     int kv_type);
void rm_engine_free(rm_engine *e);

// The router (lora/router.h, bound to the engine's model; not owned, must
// outlive the engine) that sequences submitted with RM_COMPOSE_ROUTER use.
void rm_engine_set_router(rm_engine *e, const rm_lora *router);

// Asked of every waiting or running sequence (with its callbacks' user)
// before each step: non-zero cancels it (its client has gone): it leaves its
// slot at once and done is called with the tokens so far and finish reason
// "cancelled". NULL (the default): none is.
typedef int (*rm_engine_cancel_cb)(void *user);
void rm_engine_set_cancel(rm_engine *e, rm_engine_cancel_cb cancelled);

// Queues a sequence (prompt must hold BOS when wanted). lora[0..n_lora) must
// be bound to the engine's model and outlive the sequence (n_lora 0: base
// model). Returns RM_OK, or an error for a request that cannot run (too long,
// bad plan) without queueing it.
int rm_engine_submit(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                     rm_lora *const *lora, int n_lora, rm_compose_mode mode, const rm_engine_cbs *cbs);

// The same, and a router sequence adds its rows' expert weights to *route
// (lora/compose.h; the caller's, outliving the sequence; NULL: not kept).
int rm_engine_submit_routed(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                            rm_lora *const *lora, int n_lora, rm_compose_mode mode, const rm_engine_cbs *cbs,
                            rm_route_stats *route);

// The same with a plan the caller made (any composition, e.g. moe or arrow
// over an adapter set), which the engine takes over: *plan is moved into the
// sequence (and zeroed) or, when the request is refused, freed. One plan per
// sequence (a smear plan holds the sequence's running sums). NULL: the base
// model.
int rm_engine_submit_plan(rm_engine *e, const int32_t *prompt, int n_prompt, int max_new, const rm_sampler_params *sp,
                          rm_lora_plan *plan, const rm_engine_cbs *cbs);

// Runs one forward pass over the waiting and running sequences; calls done
// for those that finish. Returns the number still queued or running, or a
// negative error (the forward pass failed: every sequence is ended with it).
int rm_engine_step(rm_engine *e);

// Ends every queued and running sequence as failed (done is called with
// tokens NULL; rm_last_error() says why): a server that cannot wait longer.
void rm_engine_abort(rm_engine *e, const char *why);

// What the engine holds now and has done since it was made (for a server's
// metrics).
typedef struct rm_engine_stats {
    int running, waiting, slots;
    long long steps, rows; // forward passes and the batch rows they carried
    long long prompt_tokens, generated_tokens, finished;
    long long cancelled; // sequences ended by their cancel callback
    size_t kv_bytes;     // the KV cache's size (rm_kvcache_bytes), of kv_type elements
    int kv_type;
} rm_engine_stats;
void rm_engine_get_stats(const rm_engine *e, rm_engine_stats *st);
#endif
