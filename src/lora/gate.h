// gate.h — trained gates over an adapter set (lora/set.h): the MoE-style
// baselines of the RAMoLE paper (Mixture of LoRA Experts) and SMEAR.
//
// Per adapted linear a gate holds W_g [n, in] (n = the set's size); with
// E_i = s_i B_i A_i x the i-th adapter's output and z = W_g x:
//   soft   alpha = softmax(z) over all n;            y = W x + sum_i alpha_i E_i
//   topk   softmax over the k largest z, 0 elsewhere
//   top1   only the argmax i*, weighted by its softmax probability over all n
//          (Switch Transformer style: the gate still gets a gradient)
//   smear  per example, the adapters' parameters merged by alpha = softmax(W_g m),
//          m = the mean of x over the sequence so far (positions 0..t: causal):
//          A_m = sum_i alpha_i A_i, B_m = sum_i alpha_i s_i B_i, y = W x + B_m (A_m x)
//          (equal ranks per linear). Serving keeps the running sums in the plan.
// An excluded adapter (a plan's mask) has z = -inf: weight 0.
//
// File: GGUF, general.type "ramole.gate", with
//   ramole.gate.version      u32  1
//   ramole.gate.kind         str  soft | topk | top1 | smear
//   ramole.gate.k            u32  experts per token (topk; 1 for top1; n otherwise)
//   ramole.gate.n_adapters   u32  n
//   ramole.gate.adapters     [str] the set's adapter names, in order (pool names)
//   ramole.gate.base.*       the base (router.h: rm_base_meta_write)
//   blk.N.<linear>.gate      f32 ne = [in, n]: W_g of each gated linear
#ifndef RM_LORA_GATE_H
#define RM_LORA_GATE_H
#include "lora/set.h"

typedef enum { RM_GATE_SOFT, RM_GATE_TOPK, RM_GATE_TOP1, RM_GATE_SMEAR } rm_gate_kind;
int rm_gate_kind_parse(const char *s, rm_gate_kind *out); // "soft" | "topk" | "top1" | "smear"
const char *rm_gate_kind_name(rm_gate_kind k);

typedef struct rm_gate {
    rm_gate_kind kind;
    int k;        // experts per token (topk), 1 (top1), n (soft, smear)
    int n;        // adapters
    char **names; // [n]
    const rm_llama *base;
    int n_layer;
    float **w; // [n_layer * RM_LIN_COUNT]: W_g [n, in], or NULL (not gated)
} rm_gate;

// A zero gate (uniform soft routing) of kind over set: W_g on every linear the
// set adapts, named by the set's names. topk needs 1 <= k <= n (other kinds
// ignore k); smear needs equal ranks per linear.
int rm_gate_new(rm_gate **out, const rm_lora_set *set, rm_gate_kind kind, int k);
void rm_gate_free(rm_gate *g);
// Checks that g fits set: the same base, n and names, a W_g wherever the set
// adapts a linear, and (smear) equal ranks per linear.
int rm_gate_check_set(const rm_gate *g, const rm_lora_set *set);

// Writes g to path; loads a gate file checked against base (refused, naming
// the file: not a gate, another version or kind, another base, a count of
// adapters or a tensor shape that does not fit, truncation).
int rm_gate_save(const rm_gate *g, const char *path);
int rm_gate_load(rm_gate **out, const char *path, const rm_llama *base);

// The routing weights of one token: alpha[n] from logits z[n] for kind and k,
// excluded (NULL or [n], nonzero = out) never chosen and weighted 0. For top1,
// p (when not NULL) gets the softmax over all the allowed adapters (alpha has
// only the chosen one's). Ties go to the lower index. Returns the number of
// nonzero weights (0: every adapter excluded).
int rm_gate_route(rm_gate_kind kind, int k, int n, const float *z, const uint8_t *excluded, float *alpha, float *p);
#endif
