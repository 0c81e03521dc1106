// compose.h — composition plans: which adapters a sequence uses and how.
//
//   selection: one adapter                 y = W x + s B (A x)
//   mixture:   k adapters, weights w_i     y = W x + sum_i w_i s_i B_i (A_i x)
//   fusion:    the paper's merged pair     y = W x + (sum_i w_i s_i B_i) (sum_i w_i A_i) x
//   router:    RouterLoRA, learned per token: E_i = s_i B_i (A_i x),
//              q = s_r B_r (A_r x) (the router's own LoRA on this linear),
//              alpha = softmax_i(q . E_i / sqrt(out)), y = W x + sum_i alpha_i E_i
//              (B_r = 0 gives alpha = 1/k: mixture; see docs/router.md)
//   moe:       a trained gate over a fixed adapter set (lora/gate.h): soft,
//              topk, top1 (per token) or smear (merged parameters, per sequence)
//   arrow:     training-free routing over a set (Ostapenko et al. 2024): per
//              token, logits_i = |v_i . x| with v_i the leading right singular
//              vector of s_i B_i A_i; softmax over the k largest;
//              y = W x + sum_i alpha_i E_i
//
// The set compositions (moe, arrow) refer to an rm_lora_set and may exclude
// some of its adapters (weight 0); see docs/baselines.md.
//
// (With equal scales fusion is the paper's s (sum w B)(sum w A); a per-adapter
// scale rides on its B.) Weights default to 1/k. Mixture allows different
// ranks; fusion needs equal ranks per linear. A fused pair is built once per
// plan and shared through a cache keyed by the adapters and weights.
#ifndef RM_LORA_COMPOSE_H
#define RM_LORA_COMPOSE_H
#include "lora/gate.h"

typedef enum {
    RM_COMPOSE_SELECTION,
    RM_COMPOSE_MIXTURE,
    RM_COMPOSE_FUSION,
    RM_COMPOSE_ROUTER,
    RM_COMPOSE_MOE,
    RM_COMPOSE_ARROW
} rm_compose_mode;
// "selection" | "mixture" | "fusion" | "router" | "moe" | "arrow"
int rm_compose_parse(const char *s, rm_compose_mode *out);
const char *rm_compose_name(rm_compose_mode m);

#define RM_PLAN_MAX 16

typedef struct rm_fusion_cache rm_fusion_cache;

// SMEAR's per-sequence state: for each gated linear, the sum of its inputs so
// far and their count (the running mean that routes the merge).
typedef struct rm_smear_state {
    float *sum;     // one [in] block per gated linear
    size_t *off;    // [n_layer * RM_LIN_COUNT]: block offset in sum, SIZE_MAX when not gated
    int *count;     // [n_layer * RM_LIN_COUNT]: rows summed
    uint64_t *call; // [n_layer * RM_LIN_COUNT]: the hook call that last added a row
} rm_smear_state;

// What a router plan's rows weighed: for each layer, the sum over the rows
// counted (those asking for logits: a sequence's decode rows and last prompt
// row) and over the layer's linears of each expert's weight, and how many
// (row, linear) pairs were counted; mean weight = sum / n. Filled by the
// batched LoRA hook when a plan points to one (one writer per plan).
typedef struct rm_route_stats {
    int n_layer, k;
    double *sum;  // [n_layer * k]
    long long *n; // [n_layer]
} rm_route_stats;

typedef struct rm_lora_plan {
    rm_compose_mode mode;
    rm_route_stats *route; // router: where to add the rows' weights (not owned), or NULL
    int n;
    rm_lora *lora[RM_PLAN_MAX]; // not owned; must outlive the plan
    float weight[RM_PLAN_MAX];
    rm_lora *fused;         // fusion: the merged pair (scale 1), else NULL
    rm_fusion_cache *cache; // holds fused (NULL: the plan owns it)
    const rm_lora *router;  // router: the router's LoRA (not owned), else NULL
    // moe / arrow (n = 0; the adapters are the set's)
    const rm_lora_set *set; // not owned
    const rm_gate *gate;    // moe: the trained gate (not owned)
    int topk;               // arrow: adapters per token
    uint8_t *excluded;      // [set->n] nonzero = left out, or NULL (owned)
    rm_smear_state *smear;  // moe with a smear gate: this sequence's running sums (owned)
} rm_lora_plan;

// Checks and fills a plan: 1 <= n <= RM_PLAN_MAX (selection: n == 1), no
// adapter twice, all bound to the same base, finite weights (NULL: 1/n).
// Fusion builds or finds the fused pair (in cache when not NULL). The router
// mode needs a router: rm_lora_plan_init_router.
int rm_lora_plan_init(rm_lora_plan *p, rm_compose_mode mode, int n, rm_lora *const *lora, const float *weight,
                      rm_fusion_cache *cache);
void rm_lora_plan_free(rm_lora_plan *p);
// A router plan over n experts (checked as for mixture) and router, a LoRA
// bound to the same base whose modules have the experts' shapes (lora/router.h
// loads one from a file). The router must outlive the plan.
int rm_lora_plan_init_router(rm_lora_plan *p, int n, rm_lora *const *lora, const rm_lora *router);

// A plan over a set with a trained gate (moe; the gate's kind decides the
// routing) or Arrow's routing to the k best adapters per token (1 <= k).
// excluded: NULL or [set->n] (nonzero: the adapter gets weight 0; not all).
// set and gate must outlive the plan. A smear plan holds the sequence's
// running sums: one plan per sequence, its rows fed in position order (the
// sums restart at position 0).
int rm_lora_plan_init_gate(rm_lora_plan *p, const rm_lora_set *set, const rm_gate *gate, const uint8_t *excluded);
int rm_lora_plan_init_arrow(rm_lora_plan *p, const rm_lora_set *set, int k, const uint8_t *excluded);
// The plan over set for a request of task `task`: moe with gate when given,
// else arrow with k. exclude_own: the set's adapter of that task
// (rm_lora_set_find_task) is left out, and *excluded (when not NULL) says
// whether the set had one.
int rm_lora_plan_init_for_task(rm_lora_plan *p, const rm_lora_set *set, const rm_gate *gate, int k, const char *task,
                               int exclude_own, int *excluded);

// The terms the batched hook applies for this plan: (adapter, weight) pairs,
// the fused adapter with weight 1 for fusion, none for router, moe and arrow
// (the hook weighs a router row's adapters itself and applies moe and arrow
// rows row by row). Returns their count.
int rm_lora_plan_terms(const rm_lora_plan *p, const rm_lora **lora, float *weight);

// The fused adapter of n adapters (sum w_i A_i, sum w_i s_i B_i, scale 1).
int rm_lora_fuse(rm_lora **out, int n, rm_lora *const *lora, const float *weight);

// Keeps fused pairs while plans use them, plus up to max_idle unused ones.
rm_fusion_cache *rm_fusion_cache_new(int max_idle);
void rm_fusion_cache_free(rm_fusion_cache *c); // plans using it must be freed first
int rm_fusion_cache_size(const rm_fusion_cache *c);
#endif
