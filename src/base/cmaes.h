// cmaes.h — a small derivative-free minimiser: CMA-ES, the covariance matrix
// adaptation evolution strategy (Hansen & Ostermeier 2001; the update rules
// of Hansen's tutorial "The CMA Evolution Strategy", 2016): a (mu/mu_w,
// lambda) strategy with weighted recombination, cumulative step-size
// adaptation and the rank-one plus rank-mu covariance update.
//
// Each generation draws lambda points x_k = m + sigma B D z_k (z_k standard
// normal, C = B D^2 B^T), evaluates them together (one call of f: a caller
// that can score several points in one batch does), and moves m, sigma and C
// toward the best mu. Points outside the box [lo, hi] are clipped into it
// before they are evaluated and the clipped point is what the update sees.
//
// Budget: the number of objective evaluations in all, x0's included (as
// nevergrad's `budget`, which LoraHub sets to 40). Whole generations run
// while they fit; what is left is spent on one more draw of the current
// distribution, evaluated without an update. The result is the best point
// evaluated (x0 included), so it is never worse than the start.
//
// Deterministic for a seed: the normal draws come from the seeded
// generator; ties in ranking go to the earlier point.
#ifndef RM_BASE_CMAES_H
#define RM_BASE_CMAES_H
#include <stdint.h>

typedef struct rm_cmaes_params {
    int budget;    // objective evaluations in all, x0's included (>= 1)
    double sigma;  // initial step size (> 0)
    double lo, hi; // the box; lo >= hi: unbounded
    int lambda;    // points per generation (0: 4 + floor(3 ln dim))
    uint64_t seed;
} rm_cmaes_params;
rm_cmaes_params rm_cmaes_default_params(void); // budget 40, sigma 0.5, unbounded, lambda 0, seed 1

// Scores n points x[n][dim] into fx[n]; a non-finite score counts as the
// worst. Nonzero return stops the search and is returned.
typedef int (*rm_cmaes_fn)(void *user, int n, int dim, const double *x, double *fx);

typedef struct rm_cmaes_result {
    double f0;       // f(x0)
    double best_f;   // f(best_x)
    int evaluations; // points scored (= budget)
    int generations; // updates of the distribution
} rm_cmaes_result;

// Minimises f from x0 [dim] (1..RM_CMAES_MAX_DIM), clipped into the box;
// best_x [dim] gets the best point scored.
#define RM_CMAES_MAX_DIM 256
int rm_cmaes_minimize(int dim, const double *x0, const rm_cmaes_params *p, rm_cmaes_fn f, void *user, double *best_x,
                      rm_cmaes_result *res);
#endif
