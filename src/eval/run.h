// run.h — a test set through the model under one or several methods
// (eval/method.h) at once: `ramole eval` and the paper's table.
//
// Every (method, request) pair is an item. The run prepares each method
// (routers, gates, LoraHub's searches), chooses every item's adapters
// (retrieval), tokenizes each request's prompt once, then submits the items
// to one continuous-batching engine (serve/engine.h), each with its own plan,
// and steps it to the end: items of different methods and adapter sets share
// forward passes. A request's answer does not depend on its batch mates (the
// engine's rows are batch-invariant), so it is what that method alone gives.
// Plans are made as the engine takes requests (at most `slots` waiting), so
// memory does not grow with the test set.
//
// The answers are detokenized (end-of-generation tokens left out), trimmed of
// white space at both ends and scored by the request's metric into one
// scoreboard per method (eval/evalset.h).
#ifndef RM_EVAL_RUN_H
#define RM_EVAL_RUN_H
#include "base/json.h"
#include "eval/method.h"

typedef struct rm_eval_item {
    const rm_eval_req *req;
    int request;           // index in the test set
    int method;            // index in the run's methods
    rm_eval_choice choice; // its adapters (the record: names, weights, own adapter used or left out)
    int cut;               // its prompt was cut to the context (keeping its end)
    char *pred;            // the answer
    int n_tokens;          // new tokens
    double score;          // the request's own score (BLEU: of this pair alone)
    int32_t *out;          // generated ids (internal)
    int failed;
} rm_eval_item;

typedef struct rm_run_result {
    int n_methods;
    rm_scoreboard *board;     // [n_methods] scores by task
    rm_eval_item *items;      // method by method, each over the requests in test-set order
    int n_items, n_requests;  // requests: those run (after the limit)
    long long forward_passes; // the engine's counters over the run
    long long rows;           // batch rows of those passes
    long tokens;              // new tokens
    double seconds;           // generating (retrieval and preparation not included)
    int n_cut;                // requests whose prompt was cut
} rm_run_result;

// Runs methods[0..n_methods) over set (the first params.limit requests of each
// task). The methods are checked first; an error names the request or method.
// The items refer to set (their requests) and to env (the names of set and
// LoraHub adapters): keep both while reading them.
int rm_eval_run(rm_eval_env *env, const rm_evalset *set, const rm_method *methods, int n_methods, rm_run_result *out);
void rm_run_result_free(rm_run_result *r);

// Counts over a method's items: own adapter used, own adapter left out.
void rm_run_result_own(const rm_run_result *r, int method, int *own_used, int *own_excluded, int *n);

// One JSON line for an item: {["method": name, "ood": bool, ]"task",
// "metric", "inputs", "targets", "prediction", "adapters": [...][, "weights":
// [...]], "score"} (method and ood when the method has a name).
void rm_eval_item_json(const rm_eval_item *it, const rm_method *method, rm_sb *sb);
#endif
