// session.h — adapters for one request, from "PATH[:WEIGHT]" specs: load,
// bind to the base, build the composition plan and the hook that applies it.
// What `ramole generate --lora ...` uses; a server keeps a pool instead.
#ifndef RM_LORA_SESSION_H
#define RM_LORA_SESSION_H
#include "lora/batch.h"

typedef struct rm_lora_session {
    int n;
    rm_lora *lora[RM_PLAN_MAX];
    rm_lora *router;   // router mode: the loaded router, else NULL
    rm_lora_plan plan; // pass &plan as the sequence's plan
    rm_lora_batch *batch;
    rm_linear_hook hook; // pass &hook to rm_generate / rm_llama_forward
} rm_lora_session;

// mode < 0 picks selection for one adapter, mixture for more. Weights not
// given in the specs are 1/n. On failure nothing is left allocated.
// RM_COMPOSE_ROUTER needs router_path (a router file, lora/router.h; weights
// in the specs are refused); other modes ignore it.
int rm_lora_session_init(rm_lora_session *s, const rm_llama *m, rm_threadpool *tp, int n, const char *const *specs,
                         int mode, const char *router_path);
void rm_lora_session_free(rm_lora_session *s);
#endif
