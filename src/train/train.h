// train.h — training on top of the Llama model: a forward pass that keeps its
// activations, the backward pass, cross-entropy, AdamW, LoRA, data batches.
//
// A trainer wraps a loaded rm_llama (the base). What is trained:
//   - full training: every weight becomes an F32 parameter; the base's tensor
//     views are pointed at the trained copies and its norm vectors are
//     trained in place, so rm_llama_forward (serving, generation) runs the
//     trained model as it is;
//   - LoRA: the base stays frozen in whatever type it has (F32, F16, Q8_0,
//     ...); gradients flow through it (dx = dy W with W dequantized to F32 one
//     matrix at a time) into the adapters' A[r,in] and B[out,r].
// Activation rows are B sequences of T tokens (a batch), as in llm.c.
#ifndef RM_TRAIN_TRAIN_H
#define RM_TRAIN_TRAIN_H
#include <stdint.h>

#include "base/rng.h"
#include "base/threadpool.h"
#include "lora/compose.h"
#include "lora/gate.h"
#include "model/llama.h"

// ---------------------------------------------------------------- parameters

// One trainable tensor with its gradient and AdamW moments.
typedef struct rm_tparam {
    char name[96];
    float *w, *g, *m, *v;
    size_t n;
    int decay; // 1: weight decay applies (matrices), 0: norms, biases
    int own_w; // w was allocated by the trainer
} rm_tparam;

// A linear layer as training sees it: W[out,in] (the base's view), its
// gradient when trained, and an optional LoRA term s (x A^T) B^T.
typedef struct rm_tlinear {
    rm_tensor *w; // points into the base model
    float *dw;    // [out,in] or NULL (frozen)
    int in, out;
    int rank;    // 0: no LoRA
    float scale; // alpha/r, or alpha/sqrt(r) with rsLoRA
    float *A, *B, *dA, *dB;
} rm_tlinear;

typedef struct rm_train_params {
    int batch;              // sequences per micro-batch (B)
    int seq;                // tokens per sequence (T)
    int accum;              // micro-batches per optimizer step
    int steps;              // optimizer steps (for the schedule)
    int warmup;             // linear warm-up steps
    float lr, min_lr_ratio; // cosine decays lr to lr*min_lr_ratio
    float beta1, beta2, eps, weight_decay;
    float clip; // global gradient-norm clip (<= 0: off)
    uint64_t seed;
    int threads;
    float lora_dropout; // router training with per-example expert sets: the
                        // probability that an example, each time it enters a
                        // batch, gets its set without its own task's adapter
                        // (rm_texample.set[1]); default 0
} rm_train_params;
void rm_train_default_params(rm_train_params *p);

// One micro-batch: B*T rows. target[r] = -1 means "no loss on this row".
// pos[r] is the row's position in its example; start[r] the first row it may
// attend to (packing); NULL start = the sequence's first row.
// Router mode with a table of experts: exp[r*K + j] is the expert (index in
// the trainer's table) in row r's slot j, -1 for none; rows of one example
// share a set, padding rows have none. exp NULL: every row uses the K
// experts of a fixed-set router (rm_trainer_add_router).
typedef struct rm_tbatch {
    int B, T;
    int32_t *token, *target, *pos, *start;
    int K;
    int32_t *exp;
} rm_tbatch;
int rm_tbatch_alloc(rm_tbatch *b, int B, int T);
// Adds the per-row expert sets (K slots a row, all -1) to an allocated batch.
int rm_tbatch_alloc_sets(rm_tbatch *b, int K);
void rm_tbatch_free(rm_tbatch *b);
// Target rows with a loss.
long rm_tbatch_count(const rm_tbatch *b);

typedef struct rm_trainer rm_trainer;

// A trainer over `base` (not owned; must outlive the trainer). Nothing is
// trainable until rm_trainer_full or rm_trainer_add_lora.
int rm_trainer_create(rm_trainer **out, rm_llama *base, const rm_train_params *p);
void rm_trainer_free(rm_trainer *t);
// Makes every weight of the base an F32 parameter (dequantizing when needed).
int rm_trainer_full(rm_trainer *t);
// Adds LoRA adapters of `rank` on the linears in `targets` (bit i = rm_linear_id
// i, see rm_lora_parse_targets) of every layer. A ~ U(-1/sqrt(in), 1/sqrt(in)) from the seed, B = 0.
int rm_trainer_add_lora(rm_trainer *t, unsigned targets, int rank, float alpha, int rslora);
typedef struct rm_lora rm_lora;
// RouterLoRA: the k frozen experts (bound to the base, not owned, must outlive
// the trainer) are composed on every linear any of them adapts by a trained
// router of `rank` there (its A_r, B_r are the linears' A, B, initialised as
// by rm_trainer_add_lora: B_r = 0, so training starts from the mixture):
//   E_i = s_i B_i A_i x,  q = s_r B_r A_r x,  alpha = softmax_i(q.E_i/sqrt(out)),
//   y = W x + sum_i alpha_i E_i.
// Backward reaches A_r, B_r and x (through W, the experts and the query).
// rm_trainer_export_lora then exports the router; eval uses router plans.
// Every row uses all k (1..RM_PLAN_MAX) experts.
int rm_trainer_add_router(rm_trainer *t, int k, rm_lora *const *experts, int rank, float alpha);
// The same router over a table of n (1..RM_TRAIN_EXPERTS_MAX) experts of
// which each row uses its own set of up to k (1..RM_PLAN_MAX): the batch's
// exp (rm_tbatch_alloc_sets), filled from the examples' sets by the batch
// filler. The softmax of a row runs over its own experts only; each expert's
// output is computed for the rows that use it alone. The fixed-set router is
// the case n = k with every row using all of them.
#define RM_TRAIN_EXPERTS_MAX 65536
int rm_trainer_add_router_table(rm_trainer *t, int n, rm_lora *const *experts, int k, int rank, float alpha);
// Gates over a fixed adapter set (lora/gate.h: soft, topk with k, top1, smear;
// the set is bound to the base, not owned, must outlive the trainer): a gate
// W_g [n, in] on every linear the set adapts, initialised to 0 (uniform soft
// routing), the only trained parameters; base and adapters frozen. Backward
// reaches W_g and x (through W, the experts, the gate and SMEAR's mean).
int rm_trainer_add_gate(rm_trainer *t, const rm_lora_set *set, rm_gate_kind kind, int k);
// The trained gate (a copy, over the trainer's set).
int rm_trainer_export_gate(rm_trainer *t, rm_gate **out);

rm_tparam *rm_trainer_params(rm_trainer *t, int *n);
size_t rm_trainer_n_trainable(const rm_trainer *t);
rm_tlinear *rm_trainer_linear(rm_trainer *t, int layer, rm_linear_id which);
rm_threadpool *rm_trainer_pool(rm_trainer *t);
int rm_trainer_step_count(const rm_trainer *t);
const rm_train_params *rm_trainer_get_params(const rm_trainer *t);

// Forward over a micro-batch, keeping activations; *loss = summed CE over
// target rows divided by `norm` (usually the batch's target count). With
// backward, also accumulates d(loss)/d(params) into the gradients. logits_out
// (optional) receives [B*T, V].
int rm_trainer_forward(rm_trainer *t, const rm_tbatch *b, float norm, int backward, double *loss, float *logits_out);
void rm_trainer_zero_grad(rm_trainer *t);
// The learning rate of step s (0-based) under warm-up + cosine decay.
float rm_train_lr(const rm_train_params *p, int step);
// Clips (global norm) and applies one AdamW update; returns the pre-clip norm.
float rm_trainer_update(rm_trainer *t);
// One full optimizer step over `n` micro-batches (gradient accumulation),
// loss normalized by their total target count. *loss = mean CE per target.
int rm_trainer_step(rm_trainer *t, const rm_tbatch *mb, int n, double *loss, float *grad_norm);

// Checkpoints: parameters, AdamW moments, step and RNG state, as a GGUF
// file; resuming continues bit-for-bit.
int rm_trainer_save_checkpoint(rm_trainer *t, const char *path);
int rm_trainer_load_checkpoint(rm_trainer *t, const char *path);
// Writes the (fully trained) model as a GGUF llama model: the base's
// metadata (tokenizer included) and F32 weights.
int rm_trainer_save_model(rm_trainer *t, const char *path);

// ---------------------------------------------------------------- LoRA export

typedef struct rm_lora rm_lora;
// The trained adapters as an rm_lora bound to the base (B in the base's RoPE
// row order; lora/ un-permutes Q/K rows when saving PEFT: rm_lora_save_peft,
// rm_lora_save_gguf).
int rm_trainer_export_lora(rm_trainer *t, rm_lora **out);

// ---------------------------------------------------------------- data

// One tokenized example: ids[0..n), loss on ids[n_prompt..n).
// Mixed-task data (rm_tdata_load_tasks) also keeps the example's task (index
// in rm_tdata.tasks) and its inputs text; other examples have -1 and NULL.
// Router training with retrieval (rm_tdata_retrieve) gives it two expert
// sets, indices in the trainer's table, -1 padded: set[0] retrieved from the
// whole pool, set[1] with its own task's adapter left out before retrieval.
typedef struct rm_texample {
    int32_t *ids;
    int n, n_prompt;
    int task;
    char *inputs;
    int32_t set[2][RM_PLAN_MAX];
} rm_texample;
typedef struct rm_tdata {
    rm_texample *ex;
    int n, cap;
    int has_eos; // examples end with eos (exact match stops there)
    int32_t eos;
    char **tasks; // task names (mixed-task data), n_tasks of them
    int n_tasks;
    int set_k; // slots of the examples' expert sets (0: none)
} rm_tdata;
void rm_tdata_free(rm_tdata *d);
int rm_tdata_add(rm_tdata *d, const int32_t *ids, int n, int n_prompt);
// Moves n examples of d, spread evenly over it (every d->n/n-th), into held
// (appended in order; task names and sets come along): a held-out split that
// takes from every part of data made of one file per task.
int rm_tdata_split_spread(rm_tdata *d, rm_tdata *held, int n);

// The Alpaca prompt (no-input variant) of the RAMoLE paper; {inputs} is replaced.
extern const char *const rm_alpaca_template;
// Renders `tmpl` with inputs (every "{inputs}" replaced; a template without it
// gets the text appended). Returns malloc'd text or NULL.
char *rm_template_render(const char *tmpl, const char *inputs);
// Tokenizes text: with the model's tokenizer, or bytes as ids when tok is NULL.
int rm_tokenize_text(const rm_tokenizer *tok, const char *text, int32_t **ids, int *n);
// Reads {"inputs", "targets"} examples from a JSONL file or a JSON array
// (the Flan files), renders inputs through tmpl (NULL = Alpaca), appends the
// target and EOS; loss on the target + EOS only. Examples longer than
// max_len keep their last max_len tokens... of the prompt side (targets are
// never cut; too-long targets are skipped).
int rm_tdata_load_jsonl(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int32_t bos,
                        int32_t eos, int max_len);
// Mixed-task data: as rm_tdata_load_jsonl (appending to d), each record also
// needs a string "task" (a record without one is an error naming path and
// record); only records of the keep[0..n_keep) tasks are taken (keep NULL:
// all). Examples keep their task and inputs; d->tasks lists the tasks met.
int rm_tdata_load_tasks(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int32_t bos,
                        int32_t eos, int max_len, const char *const *keep, int n_keep);
// Examples of task name in d (0 when d has no such task).
int rm_tdata_task_count(const rm_tdata *d, const char *name);
// Retrieval for router training: for every example (which needs its inputs
// and task), set[0] = the top k for its inputs, set[1] = the same with
// adapters of its own task left out. fn writes up to k table indices to idx
// and their number to *n; exclude_task NULL means leave out nothing.
// (retrieve/pick.h: rm_pick_table_retrieve is such a function over a pool.)
typedef int (*rm_tdata_retrieve_fn)(void *user, const char *inputs, const char *exclude_task, int k, int *idx, int *n);
int rm_tdata_retrieve(rm_tdata *d, int k, rm_tdata_retrieve_fn fn, void *user);

// The same, keeping only the examples whose "task" is one of tasks[0..n_tasks)
// (n_tasks 0: every example). Examples are appended to d.
int rm_tdata_load_jsonl_tasks(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int32_t bos,
                              int32_t eos, int max_len, const char *const *tasks, int n_tasks);
// Plain text for language modelling: the token stream cut into examples of
// max_len tokens, loss everywhere.
int rm_tdata_load_text(rm_tdata *d, const char *path, const rm_tokenizer *tok, int32_t bos, int max_len);

// Fills a micro-batch from examples order[*cursor...], packing several short
// examples into one sequence when pack; wraps around (and reshuffles with
// *rng at each new epoch when rng is not NULL). With expert sets (d->set_k
// and b->exp) each example's rows get its set[0]. Returns the number of
// examples used.
int rm_tbatch_fill(rm_tbatch *b, const rm_tdata *d, int *order, int *cursor, int pack, uint64_t *rng, int *epoch);
// The same with lora dropout: each example placed gets set[1] (its own task's
// adapter left out) with probability drop, one draw from *drop_rng each time.
int rm_tbatch_fill_dropout(rm_tbatch *b, const rm_tdata *d, int *order, int *cursor, int pack, uint64_t *rng,
                           int *epoch, float drop, uint64_t *drop_rng);
// (rm_shuffle, rm_rng_next, rm_rng_uniform: base/rng.h)

// The next micro-batch of d for this trainer: examples in an order shuffled
// from the trainer's seed at every epoch, packed when pack; with expert sets,
// the lora-dropout draws of rm_train_params. The position in the data and the
// draws' generator are part of the checkpoint. *epoch (optional) gets the epoch.
int rm_trainer_next_batch(rm_trainer *t, const rm_tdata *d, rm_tbatch *b, int pack, int *epoch);

// Forgets the data order, so that the next batch starts a new shuffled pass
// (over whatever data it is drawn from).
void rm_trainer_reset_order(rm_trainer *t);

// Mean CE per target token over all of d (no gradients); examples with
// expert sets use set[0] (their own task's adapter allowed).
int rm_trainer_eval_loss(rm_trainer *t, const rm_tdata *d, double *loss);
// The same with set[which] of every example (1: own task's adapter left out).
int rm_trainer_eval_loss_set(rm_trainer *t, const rm_tdata *d, int which, double *loss);
// Greedy-decodes each example's prompt (up to the target length + 8 tokens or
// EOS) through rm_llama_forward, the adapters (exported) applied by lora/batch as
// when serving (router mode: a router plan over the experts, each example's
// own set[0] when it has sets; gate mode: a gate plan per sequence), and counts exact matches
// of the generated ids with the target ids (EOS excluded).
int rm_trainer_eval_em(rm_trainer *t, const rm_tdata *d, int max_examples, double *em);

// ---------------------------------------------------------------- the training loop

typedef struct rm_train_run_opts {
    int steps;              // optimizer steps (see rm_train_steps_for_epochs)
    int pack;               // pack short examples into one sequence
    int eval_every;         // eval loss every N steps (0: at the end only)
    int eval_em_max;        // examples scored for exact match at the end (0: none)
    const char *checkpoint; // written every save_every steps and at the end (NULL: never)
    int save_every;
    int progress;         // a progress line on stderr (step, loss, tokens/s, ETA)
    const rm_tdata *warm; // a curriculum: the steps before warm_steps draw from warm (NULL: none)
    int warm_steps;
} rm_train_run_opts;

typedef struct rm_train_report {
    int steps;
    double initial_loss, final_loss, eval_loss, eval_em; // eval_* NaN when not measured
    double eval_loss_dropped;                            // expert sets: eval loss with set[1] (NaN: not measured)
    double tokens_per_s, seconds;
    long tokens; // tokens processed (B*T per micro-batch)
    double *step_x, *loss;
    int n_loss; // per step
    double *eval_x, *eval_y;
    int n_eval; // per evaluation
} rm_train_report;

// Optimizer steps that make `epochs` passes over d (packing simulated).
int rm_train_steps_for_epochs(const rm_tdata *d, int B, int T, int accum, int pack, double epochs);
// Trains from the trainer's current step up to o->steps on `train`, with
// eval (may be NULL) for held-out loss and exact match.
int rm_train_run(rm_trainer *t, const rm_tdata *train, const rm_tdata *eval, const rm_train_run_opts *o,
                 rm_train_report *rep);
void rm_train_report_free(rm_train_report *r);
// Appends {"steps", "initial_loss", "final_loss", "eval_loss", "eval_em",
// "tokens_per_s"[, "eval_loss_dropped"][, "params"]} (params < 0: left out;
// eval_loss_dropped only when measured; NaN: null).
struct rm_sb;
void rm_train_report_json(const rm_train_report *r, long params, struct rm_sb *sb);
// The loss curve (train per step, eval points) as an SVG.
int rm_train_write_curve(const rm_train_report *r, const char *path, const char *title);
#endif
