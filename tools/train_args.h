// train_args.h — the options `ramole train` and `ramole lora train` share.
#ifndef RM_TOOLS_TRAIN_ARGS_H
#define RM_TOOLS_TRAIN_ARGS_H
#include "train/train.h"

typedef struct train_args {
    const char *data, *out, *eval, *template_path, *checkpoint, *resume;
    long steps, seed, threads, save_every, batch, accum, seq, warmup;
    double epochs, lr, weight_decay, clip;
    int json;
    const char *const *tasks; // only examples of these tasks (n_tasks 0: all)
    int n_tasks;
} train_args;

// Matches argv[*i] against --data --out/-o --eval --template --checkpoint
// --resume --steps --seed --threads/-t --save-every --batch --accum --seq
// --warmup --epochs --lr --weight-decay --clip --json (see cli.h helpers).
int train_args_match(int argc, char **argv, int *i, train_args *a);

// For the adapter trainers (`lora train`, `router train`, `gate train`): loads
// a->data (FILE[,FILE...]) and a->eval, or holds out 10% of the data (the
// last examples, at most 200) when it has 20 or more examples, rendered through
// tmpl with m's tokenizer, keeping only a->tasks when given; sets a->seq to
// the longest example when it is 0. Prints the reason and returns 1 on failure.
typedef struct rm_llama rm_llama;
typedef struct rm_tdata rm_tdata;
typedef struct rm_train_params rm_train_params;
typedef struct rm_train_report rm_train_report;
int train_args_load_data(train_args *a, const rm_llama *m, const char *tmpl, rm_tdata *train, rm_tdata *eval);
// The same for mixed-task data (`router train --pool`): every record of the
// data[0..n_data) files needs a "task"; only the keep tasks are taken (n_keep
// 0: all), and each must have an example. Held out: the evals files (same
// filter), else 10% of the data (at most 200) taken evenly across it.
int train_args_load_tasks(train_args *a, const rm_llama *m, const char *tmpl, const char *const *data, int n_data,
                          const char *const *evals, int n_evals, const char *const *keep, int n_keep, rm_tdata *train,
                          rm_tdata *eval);
// Training parameters from a (steps from --epochs when --steps is not given).
void train_args_params(const train_args *a, const rm_tdata *train, int pack, rm_train_params *p);
// Resumes t from --resume when given, then trains it (progress on stderr;
// em_max held-out examples scored for exact match at the end).
typedef struct rm_trainer rm_trainer;
int train_args_run(const train_args *a, rm_trainer *t, const rm_tdata *train, const rm_tdata *eval, int pack,
                   int em_max, rm_train_report *rep);
// Prints "<who>: N steps, loss a -> b, eval loss c[ (own adapter present;
// dropped c2)][, eval EM d], T tokens/s; wrote <out>" on stderr (the loss with
// the own adapter dropped and the exact match only when measured), writes the loss curve
// to curve (titled) and, with --json, the report line.
int train_args_finish(const train_args *a, const rm_train_report *rep, const char *who, const char *out,
                      const char *curve, const char *title);

// What `train` and `lora train` hold while they run (zero-initialized), freed
// in one place.
typedef struct train_state {
    rm_llama *m;
    rm_trainer *t;
    rm_tdata train, eval;
    rm_train_report rep;
    char *tmpl; // the --template file's text
} train_state;
void train_state_free(train_state *s);
#endif
