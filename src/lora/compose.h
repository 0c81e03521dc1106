// compose.h — composition plans: which adapters a sequence uses and how.
//
//   selection: one adapter                 y = W x + s B (A x)
//   mixture:   k adapters, weights w_i     y = W x + sum_i w_i s_i B_i (A_i x)
//   fusion:    the paper's merged pair     y = W x + (sum_i w_i s_i B_i) (sum_i w_i A_i) x
//   router:    RouterLoRA, learned per token: E_i = s_i B_i (A_i x),
//              q = s_r B_r (A_r x) (the router's own LoRA on this linear),
//              alpha = softmax_i(q . E_i / sqrt(out)), y = W x + sum_i alpha_i E_i
//              (B_r = 0 gives alpha = 1/k: mixture; see docs/router.md)
//
// (With equal scales fusion is the paper's s (sum w B)(sum w A); a per-adapter
// scale rides on its B.) Weights default to 1/k. Mixture allows different
// ranks; fusion needs equal ranks per linear. A fused pair is built once per
// plan and shared through a cache keyed by the adapters and weights.
#ifndef RM_LORA_COMPOSE_H
#define RM_LORA_COMPOSE_H
#include "lora/adapter.h"

typedef enum { RM_COMPOSE_SELECTION, RM_COMPOSE_MIXTURE, RM_COMPOSE_FUSION, RM_COMPOSE_ROUTER } rm_compose_mode;
int rm_compose_parse(const char *s, rm_compose_mode *out); // "selection" | "mixture" | "fusion" | "router"
const char *rm_compose_name(rm_compose_mode m);

#define RM_PLAN_MAX 16

typedef struct rm_fusion_cache rm_fusion_cache;

typedef struct rm_lora_plan {
    rm_compose_mode mode;
    int n;
    rm_lora *lora[RM_PLAN_MAX]; // not owned; must outlive the plan
    float weight[RM_PLAN_MAX];
    rm_lora *fused;             // fusion: the merged pair (scale 1), else NULL
    rm_fusion_cache *cache;     // holds fused (NULL: the plan owns it)
    const rm_lora *router;      // router: the router's LoRA (not owned), else NULL
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

// The terms the batched hook applies for this plan: (adapter, weight) pairs,
// the fused adapter with weight 1 for fusion, none for router (the hook
// applies router plans row by row). Returns their count.
int rm_lora_plan_terms(const rm_lora_plan *p, const rm_lora **lora, float *weight);

// The fused adapter of n adapters (sum w_i A_i, sum w_i s_i B_i, scale 1).
int rm_lora_fuse(rm_lora **out, int n, rm_lora *const *lora, const float *weight);

// Keeps fused pairs while plans use them, plus up to max_idle unused ones.
rm_fusion_cache *rm_fusion_cache_new(int max_idle);
void rm_fusion_cache_free(rm_fusion_cache *c); // plans using it must be freed first
int rm_fusion_cache_size(const rm_fusion_cache *c);
#endif
