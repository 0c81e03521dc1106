// train_impl.h — the trainer's internals, shared by the files of src/train/.
#ifndef RM_TRAIN_TRAIN_IMPL_H
#define RM_TRAIN_TRAIN_IMPL_H
#include "lora/compose.h"
#include "train/train.h"

// One frozen expert module of a router linear: E = s (x A^T) B^T.
typedef struct train_expert {
    int r; // 0: this expert has no module here (E = 0)
    float scale;
    const float *A; // [r,in], the adapter's own
    float *B;       // [out,r], a copy (adapters keep B transposed)
} train_expert;

// A linear in router mode (RouterLoRA): its rm_tlinear's A, B are the
// router's A_r, B_r; exp holds this linear's module of every expert of the
// trainer's table, E / alpha / q the activations backward needs. Row n uses
// the experts in its K slots (train_uses); E of an empty slot is never read.
typedef struct train_router {
    int n_exp;         // 0: not a router linear, else the table's size
    train_expert *exp; // [n_exp]
    float *E;          // [K][N,out] expert outputs by slot
    float *alpha;      // [N,K] softmax weights (0 in empty slots)
    float *q;          // [N,out] router query
} train_router;

// The current batch's expert sets in router mode: slot[n*K + j] is the table
// index of the expert in row n's slot j (-1: empty); the uses off[e] ..
// off[e+1]-1 of expert e give its rows (increasing) and their slots.
typedef struct train_uses {
    int32_t *slot; // [N*K]
    int *off;      // [n_experts + 1]
    int *row, *at; // [N*K] row and slot of each use
    size_t cap;    // N*K allocated
} train_uses;

// Activations of one layer kept for backward (N rows).
typedef struct train_layer_acts {
    float *res;              // [N,d] residual stream entering the layer
    float *xb1, *xb2;        // [N,d] attention / ffn norm outputs
    float *q, *k, *v;        // [N,qd], [N,kvd] x2 (q, k after RoPE)
    float *att;              // [B,H,T,T] attention probabilities
    float *ao;               // [N,qd] attention output (input of o_proj)
    float *xmid;             // [N,d] residual after attention
    float *g, *u, *h;        // [N,f] gate, up, silu(gate)*up
    float *hs[RM_LIN_COUNT]; // [N,r] s x A^T of each LoRA linear, or NULL
} train_layer_acts;

struct rm_trainer {
    rm_llama *m;
    rm_train_params p;
    rm_threadpool *tp;
    int L;
    int step; // optimizer steps taken
    uint64_t rng;
    int full, tied;
    rm_tparam *params;
    int n_params, cap_params;
    rm_tlinear *lin;                                                          // [L][RM_LIN_COUNT]
    rm_tlinear out;                                                           // classifier
    float *d_tok_embd, *d_output_norm, **d_attn_norm, **d_ffn_norm, **d_bias; // NULL = frozen
    int lora_rank, lora_rslora;
    float lora_alpha;
    unsigned lora_targets;
    struct {
        rm_tensor *where;
        rm_tensor orig;
    } * saved; // base views replaced by full training
    int n_saved;
    // activations (one allocation carved per layer) and backward scratch
    float *act;
    size_t act_cap, act_N;
    int act_B;
    train_layer_acts *la;
    float *res_final, *xf, *logits, *cs, *hs_out;
    float *dres, *dxb, *dxf, *dq, *dk, *dv, *dao, *dg, *du, *dh;
    float *sc[5];
    size_t sc_cap[5];
    // router mode: per linear [L][RM_LIN_COUNT] (NULL: no router), its experts
    train_router *rt;
    int router_k;      // K: expert slots per row
    int n_experts;     // the table (fixed set: K experts that every row uses)
    rm_lora **experts; // [n_experts], not owned
    train_uses uses;
    uint64_t drop_rng;       // the lora-dropout draws (rm_train_params.lora_dropout)
    float *rh;               // [N, max expert rank] forward scratch
    float *gx, *gy;          // [N, widest router linear] row gathers of one expert
    struct train_gate *gate; // gate mode (gate.c): MoE gates / SMEAR over an adapter set, else NULL
    // data order (saved in checkpoints so that a resumed run sees the same batches)
    int *order;
    int n_order, cursor, epoch;
};

float *train_scratch(rm_trainer *t, int i, size_t floats);
// Registers a trainable tensor the caller owns (w), its gradient in *grad.
int train_add_param(rm_trainer *t, const char *name, float *w, size_t n, float **grad);

// Gate mode (gate.c). The linear's gate, if any, replaces its LoRA term:
// forward adds the composed experts to y (after y = x W^T), backward
// accumulates dW_g and dx (after the base weight's part).
int train_gate_of(const rm_trainer *t, const rm_tlinear *L);
void train_gate_forward(rm_trainer *t, const rm_tlinear *L, const float *x, float *y, int N);
int train_gate_backward(rm_trainer *t, const rm_tlinear *L, const float *x, const float *dy, float *dx, int N);
// Before a forward pass over b: activations, segments (SMEAR's running means).
int train_gate_begin(rm_trainer *t, const rm_tbatch *b);
void train_gate_free(rm_trainer *t);
// n plans over the trained gate (exported into *gate), one per sequence, for
// evaluation through the serving hook; free with train_gate_plans_free.
int train_gate_plans(rm_trainer *t, int n, rm_gate **gate, rm_lora_plan **plans);
void train_gate_plans_free(rm_gate *gate, rm_lora_plan *plans, int n);
#endif
