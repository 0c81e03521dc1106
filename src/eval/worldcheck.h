// worldcheck.h — the sanity figures of a built world (`ramole world check`):
// every task's test requests answered by the base model alone and with each
// adapter of the world alone, in one batched run (eval/run.h), giving the
// matrix score[task][adapter]. From it: the base model's mean, each task's own
// adapter (perfect selection), the best adapter of the same cluster other than
// its own (a sibling), and the adapters of the other clusters (foreign).
#ifndef RM_EVAL_WORLDCHECK_H
#define RM_EVAL_WORLDCHECK_H
#include "eval/method.h"

typedef struct rm_world_check_params {
    const char *dir;    // a built world (world.json, base.gguf, adapters/NAME, combined_test.json)
    int threads;        // 0: all cores
    rm_run_params eval; // max_new, slots, rows, limit, progress (the template comes from DIR)
} rm_world_check_params;
rm_world_check_params rm_world_check_default_params(void);

typedef struct rm_world_check {
    int n;                  // tasks (= adapters: one per task, in world.json's order)
    char **task, **cluster; // [n]
    double *base;           // [n] each task's score with the base model alone (x 100)
    double *score;          // [n * n] score[t * n + a]: task t's requests with adapter a alone (x 100)
    int requests;           // test requests per method
    double seconds;
    double rows_per_forward;
} rm_world_check;

int rm_world_check_run(const rm_world_check_params *p, rm_world_check *c);
void rm_world_check_free(rm_world_check *c);

// The figures the world must show, all means over tasks (x 100).
typedef struct rm_world_sanity {
    double base;         // the base model alone
    double own, own_min; // each task's own adapter; the lowest task
    int own_min_task;
    double sibling, sibling_gain;           // the best other adapter of the task's cluster; minus the base
    double foreign_best, foreign_best_gain; // the best adapter of another cluster; minus the base
    double foreign_mean, foreign_mean_gain; // the mean over the other clusters' adapters; minus the base
} rm_world_sanity;
void rm_world_check_sanity(const rm_world_check *c, rm_world_sanity *s);
#endif
