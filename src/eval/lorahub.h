// lorahub.h — LoraHub (Huang et al. 2023, "LoraHub: Efficient Cross-Task
// Generalization via Dynamic LoRA Composition"), a baseline of the RAMoLE
// paper's table: for one task, a few labelled examples of it and N candidate
// adapters; weights w found by a gradient-free search that minimises
//
//     f(w) = mean cross-entropy of the examples' target tokens under the
//            merged adapter  A = sum_i w_i A_i,  B = sum_i w_i s_i B_i
//            + l1 * sum_i |w_i|
//
// (rm_lora_fuse with weights that may be negative; the L1 term is LoraHub's,
// 0.05). The task's requests then use the merged adapter. The search is
// CMA-ES (base/cmaes.h; LoraHub runs nevergrad's CMA with a budget of 40
// evaluations) from the uniform start w_i = 1/N, each w_i kept in
// [-bound, bound] (LoraHub: 1.5).
//
// The loss is computed with the serving forward pass: the examples
// ([bos] prompt target [eos], as `ramole lora train` makes them) run through
// rm_llama_forward with the merged adapter as a selection plan in the batched
// LoRA hook, and the cross-entropy of each target token (eos included) is
// taken from the logits of the row before it. The candidate points of a
// CMA-ES generation are scored together, their rows in shared batches (each
// row with its own point's plan); the forward pass is batch-invariant, so a
// point's loss does not depend on which others share its batches.
//
// LoraHub needs the task of every request (its examples are the task's): a
// method that is told the task labels, unlike retrieval.
#ifndef RM_EVAL_LORAHUB_H
#define RM_EVAL_LORAHUB_H
#include <stdint.h>

#include "lora/adapter.h"
#include "retrieve/pool.h"
#include "train/train.h"

typedef struct rm_lorahub_params {
    int n_examples;   // labelled examples of the task (5)
    int n_candidates; // adapters merged (20; fewer when the pool has fewer)
    int iterations;   // objective evaluations, the uniform start's included (40)
    double l1;        // weight of sum |w_i| (0.05)
    double sigma;     // CMA-ES's initial step (0.5)
    double bound;     // |w_i| <= bound (1.5)
    uint64_t seed;    // examples drawn and CMA-ES's draws (1)
} rm_lorahub_params;
rm_lorahub_params rm_lorahub_default_params(void);

// The task's labelled examples: n of the records ({"inputs", "targets"}) of
// the JSON lines file at path, drawn with seed (a seeded shuffle of the
// file's records, the first n taken), rendered through tmpl (NULL: Alpaca)
// and tokenized with m's tokenizer as `lora train` lays them out ([bos]
// prompt target [eos], the prompt cut to keep its end within max_len); each
// keeps its inputs text (ex[i].inputs). Fewer when the file has fewer; none
// is an error naming the file.
int rm_lorahub_examples(const char *path, const char *tmpl, const rm_llama *m, int n, uint64_t seed, int max_len,
                        rm_tdata *out);

// The candidates: up to n of the pool's adapters with weights, ranked by
// reciprocal rank fusion of the pool's retrieval for each input
// (score = sum over inputs of 1 / (60 + rank), rank from 1; Cormack et al.
// 2009), the named adapters left out of every search. names gets n_out
// malloc'd names, best first (rm_lorahub_free_names).
int rm_lorahub_candidates(rm_pool *pool, const char *const *inputs, int n_inputs, int n, const char *const *exclude,
                          int n_exclude, char ***names, int *n_out);
void rm_lorahub_free_names(char **names, int n);

// The objective over n candidate adapters (bound to m; not owned, must
// outlive it) and the examples (not owned).
typedef struct rm_lorahub rm_lorahub;
int rm_lorahub_new(rm_lorahub **out, rm_llama *m, rm_threadpool *tp, const rm_tdata *examples, int n,
                   rm_lora *const *cands);
void rm_lorahub_free(rm_lorahub *h);
// f at n_points weight vectors w [n_points][n] (each weight rounded to float,
// as the merged adapter holds it) into f [n_points]: the mean target
// cross-entropy (nats per token) plus l1 * sum |w_i|.
int rm_lorahub_objective(rm_lorahub *h, int n_points, const double *w, double l1, double *f);

typedef struct rm_lorahub_result {
    float *w;     // [n] the weights found (malloc'd)
    double f0, f; // the objective at the uniform start and at w
    int evaluations;
} rm_lorahub_result;
// The search: CMA-ES from w_i = 1/n with p's budget, step, bound and seed.
int rm_lorahub_search(rm_lorahub *h, const rm_lorahub_params *p, rm_lorahub_result *res);
void rm_lorahub_result_free(rm_lorahub_result *r);
#endif
