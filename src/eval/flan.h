// flan.h — the LoraRetriever paper's Flan-v2 pool and test files, read as
// released, and the retrieval benchmark (the paper's Table 2).
//
// Pool file (config/config2.json): a JSON list of tasks
//   {"model_name": NAME, "domain": D, "sample": [{"inputs": ..., "targets": ...}, ...]}
// (a JSON object mapping names to such entries is accepted too; then the key
// is the name when model_name is absent). Test file (combined_test.json): a
// list of requests {"inputs", "targets", "task", "domain", "metric"}.
// A request's `task` is the `model_name` of its own adapter (the names are
// identical in the released files: e.g. "anli_r1", "wmt16_translate_deen").
#ifndef RM_EVAL_FLAN_H
#define RM_EVAL_FLAN_H
#include <stdint.h>

#include "retrieve/embed.h"
#include "retrieve/index.h"
#include "retrieve/proto.h"
#include "retrieve/rerank.h"

typedef struct rm_flan_task {
    char *name, *domain;
    int n; // samples
    char **inputs, **targets;
} rm_flan_task;

typedef struct rm_flan_pool {
    rm_flan_task *tasks;
    int n;
} rm_flan_pool;

typedef struct rm_flan_request {
    char *inputs, *task, *domain;
    int task_idx; // index into the pool
} rm_flan_request;

int rm_flan_load_pool(const char *path, rm_flan_pool *out);
void rm_flan_free_pool(rm_flan_pool *p);
// Every request's task must name a pool task (RM_EMISMATCH otherwise).
int rm_flan_load_test(const char *path, const rm_flan_pool *pool, rm_flan_request **out, int *n);
void rm_flan_free_test(rm_flan_request *r, int n);

// The seeded split over tasks: seen[t] = 1 for floor(frac * n + 1e-9) tasks
// drawn by a (partial) Fisher-Yates shuffle seeded with seed (frac 0.4 of 48 -> 19).
void rm_flan_split(int n_tasks, double frac, uint64_t seed, unsigned char *seen);

// ---- the benchmark ----------------------------------------------------------
#define RM_EVAL_NK 4
extern const int rm_eval_ks[RM_EVAL_NK]; // 1, 3, 5, 8

typedef struct rm_eval_params {
    int ood; // exclude each request's own task adapter
    int n_threads;
    rm_key_type key_type;
    rm_rerank_params rerank; // second stage (rerank.h; k 0: off)
    rm_proto_params proto;   // first stage over several prototypes per task
                             // (proto.h; n <= 1 or zeroed: the mean key alone)
} rm_eval_params;

typedef struct rm_eval_result {
    int n, n_seen, n_unseen;
    // share (0..1) of requests whose own adapter is in the top k
    double all[RM_EVAL_NK], seen[RM_EVAL_NK], unseen[RM_EVAL_NK];
    // --ood: share of requests with at least one same-domain adapter in the
    // top k, and the mean share of same-domain adapters among the top k
    double ood_any[RM_EVAL_NK], ood_frac[RM_EVAL_NK];
    int n_tasks;
    int *confusion;  // [true task][top-1 task] counts (malloc'd)
    int *task_hits1; // [task] requests whose top-1 is right
    int *task_n;     // [task] requests
    int *task_miss3; // [task] requests whose own adapter is not in the top 3
} rm_eval_result;

// Builds every pool task's key with e (mean of its sample inputs), then
// retrieves for every request and scores. seen may be NULL (all unseen).
int rm_flan_eval(const rm_embedder *e, const rm_flan_pool *pool, const rm_flan_request *req, int n_req,
                 const unsigned char *seen, const rm_eval_params *p, rm_eval_result *res);
// Leave-one-out on the pool, a tuning objective that never reads the test
// requests: every sample input of every task is a query; its own task's key is
// the mean of that task's other samples, every other task's key is the mean of
// all its samples. Figures as rm_flan_eval (n = pool samples; seen/unseen by
// the sample's task). Tasks with one sample are skipped; p->ood is ignored.
int rm_flan_eval_pool_loo(const rm_embedder *e, const rm_flan_pool *pool, const unsigned char *seen,
                          const rm_eval_params *p, rm_eval_result *res);
void rm_eval_result_free(rm_eval_result *r);
#endif
