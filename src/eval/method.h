// method.h — how each request of a test set gets its adapters and their
// composition: the methods the RAMoLE paper compares (its main table), one
// description each (rm_method), and the resources they share (rm_eval_env:
// the model, the pool, adapters loaded once, routers, gates and their sets,
// LoraHub's merged adapters), from which a request's plan is made.
//
//   base          no adapter
//   oracle        perfect selection: the request's own task's adapter (the pool
//                 entry whose task, or else name, is the request's task)
//   selection     the top 1 retrieved from the pool (rm_pool_pick: key search,
//                 then the second stage over the adapters' samples)
//   mixture       the top k retrieved, their outputs averaged (weights 1/k)
//   fusion        the top k retrieved, their A and B averaged (weights 1/k)
//   ramole        the top k retrieved, composed per token by the RouterLoRA
//   moe-top1, moe-topk, moe-soft, smear
//                 a trained gate (lora/gate.h) over its fixed set of the pool's
//                 adapters, the kind as the name says (checked against the file)
//   adaptersoup   AdapterSoup (Chronopoulou et al. 2023): the k adapters whose
//                 pool keys are nearest to the request's embedding (the first
//                 retrieval stage alone, no re-scoring by samples), their
//                 parameters averaged with equal weights (fusion, 1/k)
//   lorahub       LoraHub (eval/lorahub.h): per task, the adapter merged by
//                 weights searched on a few of the task's labelled examples;
//                 needs the task of every request
//   arrow         Arrow (Ostapenko et al. 2024) over every pool adapter with
//                 weights, the k best per token
//
// Out of distribution (exclude_own): the request's own task's adapter is never
// used: retrieval searches the pool without it (rm_pool_pick_excluding), the
// fixed sets mask it, AdapterSoup and LoraHub leave it out of their
// candidates. The oracle has no such form (refused).
#ifndef RM_EVAL_METHOD_H
#define RM_EVAL_METHOD_H
#include "eval/evalset.h"
#include "eval/lorahub.h"
#include "lora/compose.h"
#include "retrieve/pick.h"

typedef enum {
    RM_METHOD_NONE,     // the base model alone
    RM_METHOD_ORACLE,   // the request's own task's adapter
    RM_METHOD_RETRIEVE, // the k best of the pool's retrieval, composed by `compose`
    RM_METHOD_KEYS,     // the k nearest by pool key (first stage), fused with weights 1/k
    RM_METHOD_FIXED,    // the same adapter files for every request, composed by `compose`
    RM_METHOD_GATE,     // a trained gate over its set of pool adapters
    RM_METHOD_ARROW,    // Arrow over every pool adapter with weights
    RM_METHOD_LORAHUB,  // per task, LoraHub's merged adapter
} rm_method_kind;

typedef struct rm_method {
    const char *name; // the table's name ("selection", ...), or NULL
    rm_method_kind kind;
    int compose;              // ORACLE, RETRIEVE, FIXED: an rm_compose_mode among selection, mixture,
                              // fusion, router; -1: selection for one adapter, mixture for more
    int k;                    // RETRIEVE, KEYS: adapters per request; ARROW: per token
    float min_score;          // RETRIEVE: adapters scoring at least this (-INFINITY: any)
    const char *router;       // compose router: the RouterLoRA file
    const char *gate;         // GATE: the gate file
    const char *const *paths; // FIXED: adapter files (n_paths of them)
    int n_paths;
    int exclude_own;           // out of distribution (see above)
    rm_lorahub_params lorahub; // LORAHUB
} rm_method;

// The table's methods, in the order of the paper's table.
#define RM_METHOD_N_NAMED 13
extern const char *const rm_method_names[RM_METHOD_N_NAMED];
// m = the named method (k adapters per request / per token where it takes a
// k; the router and gate files are the caller's to set). Unknown names are
// refused, listing the known ones.
int rm_method_named(rm_method *m, const char *name, int k);
// Whether a method can run as described: the files it needs are named, k in
// range, exclude_own where it applies (the oracle has none), ...
int rm_method_check(const rm_method *m);
// 1 when the method uses the pool.
int rm_method_needs_pool(const rm_method *m);

// ---------------------------------------------------------------- what the methods share

typedef struct rm_run_params {
    const char *tmpl;      // the prompt ("{inputs}" replaced); NULL: the Alpaca prompt
    const char *task_data; // LoraHub: the directory of the tasks' training files NAME.jsonl
    int max_new;           // new tokens per request, greedy (64)
    int ctx;               // positions per request (0: the model's, at most 2048)
    int slots;             // requests decoded together (8)
    int rows;              // batch rows per forward pass (512)
    int kv_type;           // the KV cache's elements (RM_KV_F32, the default, or RM_KV_F16)
    int limit;             // the first `limit` requests of each task (0: all)
    // progress (may be NULL): stage "retrieve" (requests), "lorahub" (tasks) or "generate" (requests)
    void (*progress)(void *user, const char *stage, long done, long total);
    void *user;
} rm_run_params;
rm_run_params rm_run_default_params(void);

typedef struct rm_eval_env rm_eval_env;
// m, pool (may be NULL when no method needs it) and tp (may be NULL) are not
// owned and must outlive the environment; p is copied (its strings are not).
int rm_eval_env_new(rm_eval_env **out, rm_llama *m, rm_pool *pool, rm_threadpool *tp, const rm_run_params *p);
void rm_eval_env_free(rm_eval_env *e);
const rm_run_params *rm_eval_env_params(const rm_eval_env *e);
rm_llama *rm_eval_env_model(const rm_eval_env *e);
rm_threadpool *rm_eval_env_threads(const rm_eval_env *e);

// Loads what method needs before its requests run: its router, gate and set,
// Arrow's set, and, for LoraHub, the search of every task in tasks[0..n_tasks)
// (progress stage "lorahub"). Repeated calls reuse what is loaded.
int rm_eval_env_prepare(rm_eval_env *e, const rm_method *method, const char *const *tasks, int n_tasks);

// The adapters a request gets under a prepared method, as a record.
typedef struct rm_eval_choice {
    rm_pick pick;       // ORACLE, RETRIEVE, KEYS, FIXED: the adapters (names, files, tasks, scores)
    const char **names; // every adapter the plan may use (for a set: its members not left out)
    int n_names;
    const float *weights; // LoraHub: the merge weights of names, else NULL
    int own_used;         // the request's own task's adapter is among names
    int own_excluded;     // exclude_own left out an adapter of the request's task
} rm_eval_choice;
// Chooses the request's adapters (retrieval happens here).
int rm_eval_choose(rm_eval_env *e, const rm_method *method, const rm_eval_req *r, rm_eval_choice *c);
void rm_eval_choice_free(rm_eval_choice *c);
// The plan of a request with that choice (*has_plan 0: the base model). The
// adapters are loaded once and kept by the environment.
int rm_eval_plan(rm_eval_env *e, const rm_method *method, const rm_eval_req *r, const rm_eval_choice *c,
                 rm_lora_plan *plan, int *has_plan);

// LoraHub's result for a task (after rm_eval_env_prepare), or NULL.
typedef struct rm_eval_lorahub {
    char *task;
    int exclude_own;
    rm_lorahub_params params; // the search's settings (an entry per task, block and settings)
    char **names;             // the candidates, best first
    int n;
    rm_lorahub_result res; // res.w: their weights
    rm_lora *merged;       // sum w_i A_i, sum w_i s_i B_i
} rm_eval_lorahub;
const rm_eval_lorahub *rm_eval_env_lorahub(const rm_eval_env *e, const rm_method *method, const char *task);
#endif
