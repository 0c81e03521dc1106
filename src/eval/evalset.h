// evalset.h — a test set of requests with their targets, and the scores of a
// run over it by task: what `ramole eval` reads and reports.
//
// The file is a JSON array or JSON lines of {"inputs", "targets"[, "task",
// "metric"]} (the paper's combined_test.json as it is). Without "task" a
// request belongs to the task "all"; without "metric" it is scored by the
// default metric given to the loader.
//
// A task's score is the mean EM or ROUGE-L F1 of its requests, or the
// corpus BLEU of all of them (metrics.h). The summary averages the tasks'
// scores per metric and over all tasks (each task counts once, as in the
// paper's tables).
#ifndef RM_EVAL_EVALSET_H
#define RM_EVAL_EVALSET_H
#include "eval/metrics.h"

typedef struct rm_eval_req {
    char *inputs, *targets, *task;
    rm_metric metric;
} rm_eval_req;

typedef struct rm_evalset {
    rm_eval_req *r;
    int n, cap;
} rm_evalset;

int rm_evalset_load(const char *path, rm_metric default_metric, rm_evalset *out);
void rm_evalset_free(rm_evalset *s);

typedef struct rm_task_score {
    char *task;
    rm_metric metric;
    int n;
    double sum; // EM: matches; ROUGE: sum of ROUGE-L F1
    double sum_r1, sum_r2;
    rm_bleu bleu; // BLEU: the task's corpus statistics
} rm_task_score;

typedef struct rm_scoreboard {
    rm_task_score *t; // in order of first appearance
    int n, cap;
} rm_scoreboard;

// Scores pred against the request's target under its metric, into its
// task's row; *score (may be NULL) gets the request's own score (BLEU: the
// sentence BLEU of this pair alone). A task seen with two metrics is an error.
int rm_scoreboard_add(rm_scoreboard *b, const rm_eval_req *r, const char *pred, double *score);
// The task's score in [0, 1].
double rm_task_score_value(const rm_task_score *t);
// Mean of the tasks' scores, over the tasks of one metric (m) or all of them
// (m < 0); *n_tasks (may be NULL) gets how many; NaN with none.
double rm_scoreboard_mean(const rm_scoreboard *b, int m, int *n_tasks);
void rm_scoreboard_free(rm_scoreboard *b);
#endif
