// set.h — a fixed, ordered set of n adapters bound to one base, for the
// compositions that route over a whole set rather than over the few adapters
// retrieval returns: the MoE gates and SMEAR (lora/gate.h) and Arrow
// (compose.h). A plan refers to a set and may exclude some of its adapters.
//
// Building a set also computes, once, Arrow's prototype of every adapter
// module: v = the leading right singular vector of dW = s B A, in [in]
// (rm_lora_mod_top_singular).
#ifndef RM_LORA_SET_H
#define RM_LORA_SET_H
#include "lora/adapter.h"

#define RM_SET_MAX 4096

typedef struct rm_lora_set {
    int n;
    rm_lora **lora; // [n]; owned when own
    char **name;    // [n] the adapters' names (pool names; copies)
    char **task;    // [n] their tasks (copies; NULL when unknown)
    int own;
    const rm_llama *base;
    int n_layer;      // layers any adapter covers
    unsigned targets; // the linears any adapter adapts (bit rm_linear_id)
    int max_rank;
    float **arrow; // [n_layer * RM_LIN_COUNT]: NULL, or [n][in] prototypes
                   // (a zero row: that adapter has no module there)
} rm_lora_set;

// A set of n (1..RM_SET_MAX) adapters, all bound to the same base, none twice.
// names (NULL: the adapters' paths) and tasks (NULL, or entries NULL) are
// copied. own: the set frees the adapters (also when this call fails).
int rm_lora_set_new(rm_lora_set **out, int n, rm_lora *const *lora, const char *const *names, const char *const *tasks,
                    int own);
void rm_lora_set_free(rm_lora_set *s);
// Index of the adapter called name, or -1.
int rm_lora_set_find(const rm_lora_set *s, const char *name);
// Index of the adapter of a task: the first whose task, or else (no task
// matches) whose name, equals task; -1 when none (the rule of `eval --oracle`).
int rm_lora_set_find_task(const rm_lora_set *s, const char *task);
// The module of adapter i on linear (layer, which), or NULL.
const rm_lora_mod *rm_lora_set_mod(const rm_lora_set *s, int i, int layer, int which);

// v[in] = the leading right singular vector of s B A (unit length, sign
// arbitrary) and *sigma its singular value, from the small factors: with
// A^T = Q R (Q [in,r] orthonormal), s B A = s B R^T Q^T, so v = Q w where w is
// the leading eigenvector of the r x r matrix s^2 R B^T B R^T (Jacobi, double).
// A zero module gives v = 0, sigma = 0.
int rm_lora_mod_top_singular(const rm_lora_mod *m, float *v, double *sigma);
#endif
