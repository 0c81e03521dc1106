// cmaes.c — see cmaes.h.
#include "base/cmaes.h"
#include "base/err.h"
#include "base/linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rm_cmaes_params rm_cmaes_default_params(void) {
    return (rm_cmaes_params){.budget = 40, .sigma = 0.5, .lo = 0, .hi = 0, .lambda = 0, .seed = 1};
}

// ---------------------------------------------------------------- random numbers

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A standard normal draw (Box-Muller; the second value of each pair is dropped).
static double gauss(uint64_t *s) {
    double u = ((double)(splitmix(s) >> 11) + 1.0) / 9007199254740993.0; // (0, 1]
    double v = (double)(splitmix(s) >> 11) / 9007199254740992.0;         // [0, 1)
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

// ---------------------------------------------------------------- the strategy

typedef struct cma {
    int n, lambda, mu;
    double *w, mueff; // recombination weights [mu]
    double cc, cs, c1, cmu, damps, chin;
    double sigma, *m, *pc, *ps;      // mean [n], evolution paths [n]
    double *C, *B, *D;               // covariance [n,n], its eigenvectors (columns) [n,n], sqrt eigenvalues [n]
    double *x, *y, *fx, *tmp, *Ctmp; // the generation's points [lambda,n], steps (x - m)/sigma, scores
    int *order;                      // [lambda] points by score
} cma;

static void cma_free(cma *c) {
    free(c->w);
    free(c->m);
    free(c->pc);
    free(c->ps);
    free(c->C);
    free(c->B);
    free(c->D);
    free(c->x);
    free(c->y);
    free(c->fx);
    free(c->tmp);
    free(c->Ctmp);
    free(c->order);
}

// The strategy parameters of Hansen's tutorial (table 1) for dimension n.
static int cma_init(cma *c, int n, int lambda, double sigma, const double *x0) {
    memset(c, 0, sizeof *c);
    c->n = n;
    c->lambda = lambda > 0 ? lambda : 4 + (int)floor(3.0 * log((double)n));
    if (c->lambda < 2) c->lambda = 2;
    c->mu = c->lambda / 2;
    size_t nn = (size_t)n * n, ln = (size_t)c->lambda * n;
    c->w = malloc((size_t)c->mu * sizeof *c->w);
    c->m = malloc((size_t)n * sizeof *c->m);
    c->pc = calloc((size_t)n, sizeof *c->pc);
    c->ps = calloc((size_t)n, sizeof *c->ps);
    c->C = calloc(nn, sizeof *c->C);
    c->B = calloc(nn, sizeof *c->B);
    c->D = malloc((size_t)n * sizeof *c->D);
    c->x = malloc(ln * sizeof *c->x);
    c->y = malloc(ln * sizeof *c->y);
    c->fx = malloc((size_t)c->lambda * sizeof *c->fx);
    c->tmp = malloc((size_t)n * sizeof *c->tmp);
    c->Ctmp = malloc(nn * sizeof *c->Ctmp);
    c->order = malloc((size_t)c->lambda * sizeof *c->order);
    if (!c->w || !c->m || !c->pc || !c->ps || !c->C || !c->B || !c->D || !c->x || !c->y || !c->fx || !c->tmp ||
        !c->Ctmp || !c->order) {
        cma_free(c);
        return rm_errorf(RM_ENOMEM, "cma-es: out of memory");
    }
    double sw = 0, sw2 = 0;
    for (int i = 0; i < c->mu; i++) {
        c->w[i] = log(c->mu + 0.5) - log(i + 1.0);
        sw += c->w[i];
    }
    for (int i = 0; i < c->mu; i++) {
        c->w[i] /= sw;
        sw2 += c->w[i] * c->w[i];
    }
    c->mueff = 1.0 / sw2;
    double dn = n, me = c->mueff;
    c->cc = (4 + me / dn) / (dn + 4 + 2 * me / dn);
    c->cs = (me + 2) / (dn + me + 5);
    c->c1 = 2 / ((dn + 1.3) * (dn + 1.3) + me);
    c->cmu = fmin(1 - c->c1, 2 * (me - 2 + 1 / me) / ((dn + 2) * (dn + 2) + me));
    c->damps = 1 + 2 * fmax(0, sqrt((me - 1) / (dn + 1)) - 1) + c->cs;
    c->chin = sqrt(dn) * (1 - 1 / (4 * dn) + 1 / (21 * dn * dn));
    c->sigma = sigma;
    memcpy(c->m, x0, (size_t)n * sizeof *c->m);
    for (int i = 0; i < n; i++) {
        c->C[i * n + i] = 1;
        c->B[i * n + i] = 1;
        c->D[i] = 1;
    }
    return RM_OK;
}

static double clip(double v, const rm_cmaes_params *p) { return p->lo < p->hi ? fmin(p->hi, fmax(p->lo, v)) : v; }

// Draws the first `count` points of a generation: x = clip(m + sigma B D z), y = (x - m) / sigma.
static void cma_sample(cma *c, int count, const rm_cmaes_params *p, uint64_t *rng) {
    int n = c->n;
    for (int k = 0; k < count; k++) {
        for (int i = 0; i < n; i++) c->tmp[i] = c->D[i] * gauss(rng);
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += c->B[i * n + j] * c->tmp[j];
            double xi = clip(c->m[i] + c->sigma * s, p);
            c->x[k * n + i] = xi;
            c->y[k * n + i] = (xi - c->m[i]) / c->sigma;
        }
    }
}

// Ranks the generation by score (non-finite last; ties: the earlier point).
static void cma_rank(cma *c) {
    for (int k = 0; k < c->lambda; k++) {
        if (!isfinite(c->fx[k])) c->fx[k] = INFINITY;
        c->order[k] = k;
    }
    for (int i = 1; i < c->lambda; i++) // insertion sort: stable
        for (int j = i; j > 0 && c->fx[c->order[j]] < c->fx[c->order[j - 1]]; j--) {
            int t = c->order[j];
            c->order[j] = c->order[j - 1];
            c->order[j - 1] = t;
        }
}

// One update of m, the paths, C and sigma from the ranked generation g (0-based).
static void cma_update(cma *c, int g) {
    int n = c->n;
    double *yw = c->tmp;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < c->mu; j++) s += c->w[j] * c->y[c->order[j] * n + i];
        yw[i] = s;
        c->m[i] += c->sigma * s;
    }
    // ps = (1 - cs) ps + sqrt(cs (2 - cs) mueff) C^(-1/2) yw, with C^(-1/2) = B D^-1 B^T
    double *t = c->Ctmp, ps2 = 0;
    for (int j = 0; j < n; j++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += c->B[i * n + j] * yw[i];
        t[j] = s / c->D[j];
    }
    double as = sqrt(c->cs * (2 - c->cs) * c->mueff);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += c->B[i * n + j] * t[j];
        c->ps[i] = (1 - c->cs) * c->ps[i] + as * s;
        ps2 += c->ps[i] * c->ps[i];
    }
    double psn = sqrt(ps2);
    int hsig = psn / sqrt(1 - pow(1 - c->cs, 2.0 * (g + 1))) / c->chin < 1.4 + 2.0 / (n + 1);
    double ac = sqrt(c->cc * (2 - c->cc) * c->mueff);
    for (int i = 0; i < n; i++) c->pc[i] = (1 - c->cc) * c->pc[i] + (hsig ? ac * yw[i] : 0);
    // C = (1 - c1 - cmu) C + c1 (pc pc^T + (1 - hsig) cc (2 - cc) C) + cmu sum_j w_j y_j y_j^T
    double keep = 1 - c->c1 - c->cmu + (hsig ? 0 : c->c1 * c->cc * (2 - c->cc));
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double r = 0;
            for (int k = 0; k < c->mu; k++) r += c->w[k] * c->y[c->order[k] * n + i] * c->y[c->order[k] * n + j];
            double v = keep * c->C[i * n + j] + c->c1 * c->pc[i] * c->pc[j] + c->cmu * r;
            c->C[i * n + j] = c->C[j * n + i] = v;
        }
    c->sigma *= exp(c->cs / c->damps * (psn / c->chin - 1));
    // C = B D^2 B^T
    memcpy(c->Ctmp, c->C, (size_t)n * n * sizeof *c->C);
    rm_sym_eigen(c->Ctmp, c->B, n);
    for (int i = 0; i < n; i++) c->D[i] = sqrt(fmax(c->Ctmp[i * n + i], 1e-30));
}

int rm_cmaes_minimize(int dim, const double *x0, const rm_cmaes_params *p, rm_cmaes_fn f, void *user, double *best_x,
                      rm_cmaes_result *res) {
    memset(res, 0, sizeof *res);
    if (dim < 1 || dim > RM_CMAES_MAX_DIM)
        return rm_errorf(RM_EINVAL, "cma-es: dimension %d (1..%d)", dim, RM_CMAES_MAX_DIM);
    if (p->budget < 1 || !(p->sigma > 0) || p->lambda < 0)
        return rm_errorf(RM_EINVAL, "cma-es: budget %d, sigma %g, lambda %d", p->budget, p->sigma, p->lambda);
    cma c;
    double *start = malloc((size_t)dim * sizeof *start);
    if (!start) return rm_errorf(RM_ENOMEM, "cma-es: out of memory");
    for (int i = 0; i < dim; i++) start[i] = clip(x0[i], p);
    int rc = cma_init(&c, dim, p->lambda, p->sigma, start);
    if (rc) {
        free(start);
        return rc;
    }
    double f0;
    rc = f(user, 1, dim, start, &f0);
    res->f0 = res->best_f = isfinite(f0) ? f0 : INFINITY;
    res->evaluations = 1;
    memcpy(best_x, start, (size_t)dim * sizeof *best_x);
    uint64_t rng = p->seed;
    while (!rc && res->evaluations < p->budget) {
        int count = p->budget - res->evaluations < c.lambda ? p->budget - res->evaluations : c.lambda;
        cma_sample(&c, count, p, &rng);
        if ((rc = f(user, count, dim, c.x, c.fx))) break;
        res->evaluations += count;
        for (int k = 0; k < count; k++)
            if (c.fx[k] < res->best_f) {
                res->best_f = c.fx[k];
                memcpy(best_x, c.x + (size_t)k * dim, (size_t)dim * sizeof *best_x);
            }
        if (count < c.lambda) break; // the budget's remainder: scored, no update
        cma_rank(&c);
        cma_update(&c, res->generations++);
    }
    cma_free(&c);
    free(start);
    return rc;
}
