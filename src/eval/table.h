// table.h — the RAMoLE paper's main table on a built world (`ramole world
// make` + `world build`): every method of eval/method.h on the world's mixed
// test requests, in distribution (IID: each request's own task's adapter is
// in the pool) and out of it (OOD: it is left out, exclude_own), scored per
// task and averaged per cluster, over all tasks, and for the methods that
// train (the router and gates, on the seen tasks; LoraHub, per task) over the
// seen and the unseen tasks of the experiment's split.
//
// Read from DIR: world.json (tasks and their clusters), combined_test.json,
// pool/, template.txt, tasks/NAME.jsonl (LoraHub's examples), base.gguf (or
// the model given), and from DIR/experiment/split-S/: split.json ({"seed",
// "seen": [...], "unseen": [...]}), router.gguf, moe-top1.gguf,
// moe-topk.gguf, moe-soft.gguf, smear.gguf. A method whose file is missing is
// skipped with a note; without split.json there are no seen / unseen means.
//
// Two engine runs share one environment (adapters loaded once, prompts
// tokenized once per run): RAMoLE's requests of both blocks, then every other
// method's of both blocks, so that the engine's counters give RAMoLE's rows
// per forward pass on their own (its requests, each with its own retrieved
// adapters, batched together). The base model has no adapter to leave out:
// its one run fills both blocks; the oracle has no OOD form ("-").
#ifndef RM_EVAL_TABLE_H
#define RM_EVAL_TABLE_H
#include "eval/run.h"

typedef struct rm_table_params {
    const char *dir;     // the world
    const char *model;   // NULL: DIR/base.gguf
    int split_seed;      // DIR/experiment/split-S (1)
    int k;               // adapters a request (a token for Arrow) (3)
    const char *methods; // comma-separated names (NULL: every method)
    int threads;         // 0: all cores
    rm_run_params eval;  // max_new, ctx, slots, rows, limit, progress (tmpl and task_data come from DIR)
    rm_lorahub_params lorahub;
} rm_table_params;
rm_table_params rm_table_default_params(void);

enum { RM_TABLE_IID, RM_TABLE_OOD };

typedef struct rm_table_row {
    const char *method;                 // rm_method_names
    const char *label;                  // as the paper names it
    int trains;                         // its seen / unseen means are shown
    char *skipped;                      // why it did not run (NULL: it ran)
    int ran[2];                         // per block
    double mean[2], seen[2], unseen[2]; // x 100; NaN when none
    double *cluster[2];                 // [n_clusters], x 100
} rm_table_row;

typedef struct rm_table {
    char *dir;
    int split_seed, k, n_requests, has_split, n_seen, n_unseen;
    char **clusters;
    int n_clusters;
    char **seen, **unseen; // the split's task names
    rm_table_row rows[RM_METHOD_N_NAMED];
    int n_rows; // the methods asked for, in the paper's order
    char **notes;
    int n_notes;
    // the runs (0: RAMoLE, 1: the other methods; n_runs of them ran) and their methods
    int n_runs;
    rm_run_result runs[2];
    rm_method *run_methods[2];
    int ran_run[2];
    double rows_per_forward[2]; // the engine's rows / forward passes of each run (0: not run)
    double seconds;
    struct rm_table_res *res; // the model, pool, test set and environment the runs' items refer to
} rm_table;

int rm_table_run(const rm_table_params *p, rm_table *t);
void rm_table_free(rm_table *t);
// The markdown table (both blocks, notes); the JSON object
//   {"iid": {method: {"mean": x[, "seen": x, "unseen": x], CLUSTER: x, ...}},
//    "ood": {...}, "split_seed": S, "k": K, "requests": N,
//    "rows_per_forward": {"ramole": x, "others": x}, "uses_task_labels": ["lorahub"],
//    "seen": [...], "unseen": [...], "skipped": {method: reason}}
// (the oracle is null in "ood"; skipped methods are absent from both blocks).
void rm_table_markdown(const rm_table *t, rm_sb *sb);
void rm_table_json(const rm_table *t, rm_sb *sb);
// A grouped bar chart of each method's mean, IID and OOD.
int rm_table_svg(const rm_table *t, const char *path);
#endif
