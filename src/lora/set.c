// set.c — adapter sets and Arrow's prototypes (see set.h).
#include "lora/set.h"
#include "base/err.h"
#include "base/linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- the leading singular vector

static double dot_d(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

int rm_lora_mod_top_singular(const rm_lora_mod *m, float *v, double *sigma) {
    int r = m->r;
    int64_t in = m->in, out = m->out;
    memset(v, 0, (size_t)in * sizeof(float));
    *sigma = 0;
    if (r <= 0) return RM_OK;
    double *Q = malloc((size_t)r * (size_t)in * sizeof(double)), *R = calloc((size_t)r * r, sizeof(double));
    double *M = calloc((size_t)r * r, sizeof(double)), *K = calloc((size_t)r * r, sizeof(double));
    double *V = malloc((size_t)r * r * sizeof(double));
    if (!Q || !R || !M || !K || !V) {
        free(Q);
        free(R);
        free(M);
        free(K);
        free(V);
        return rm_errorf(RM_ENOMEM, "lora set: out of memory for a rank-%d module", r);
    }
    // A^T = Q R by modified Gram-Schmidt, twice (q_j = row j of Q; a dependent column gets q_j = 0)
    for (int j = 0; j < r; j++) {
        double *u = Q + (size_t)j * in, norm0 = 0;
        for (int64_t i = 0; i < in; i++) u[i] = m->A[(size_t)j * in + i];
        norm0 = sqrt(dot_d(u, u, in));
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < j; k++) {
                const double *qk = Q + (size_t)k * in;
                double c = dot_d(qk, u, in);
                R[k * r + j] += c;
                for (int64_t i = 0; i < in; i++) u[i] -= c * qk[i];
            }
        double nrm = sqrt(dot_d(u, u, in));
        if (nrm <= 1e-12 * norm0 || nrm == 0) {
            memset(u, 0, (size_t)in * sizeof(double));
            continue;
        }
        R[j * r + j] = nrm;
        for (int64_t i = 0; i < in; i++) u[i] /= nrm;
    }
    // M = s^2 B^T B (B^T B [j,k] = Bt[j] . Bt[k]), K = R M R^T
    double s2 = (double)m->scale * m->scale;
    for (int j = 0; j < r; j++)
        for (int k = j; k < r; k++) {
            double acc = 0;
            for (int64_t o = 0; o < out; o++) acc += (double)m->Bt[(size_t)j * out + o] * m->Bt[(size_t)k * out + o];
            M[j * r + k] = M[k * r + j] = s2 * acc;
        }
    for (int a = 0; a < r; a++)
        for (int b = 0; b < r; b++) {
            double acc = 0;
            for (int j = a; j < r; j++) // R is upper triangular
                for (int k = b; k < r; k++) acc += R[a * r + j] * M[j * r + k] * R[b * r + k];
            K[a * r + b] = acc;
        }
    rm_sym_eigen(K, V, r);
    int best = 0;
    for (int j = 1; j < r; j++) best = K[j * r + j] > K[best * r + best] ? j : best;
    double lambda = K[best * r + best], nv = 0;
    if (lambda > 0) {
        for (int64_t i = 0; i < in; i++) {
            double acc = 0;
            for (int j = 0; j < r; j++) acc += Q[(size_t)j * in + i] * V[j * r + best];
            v[i] = (float)acc;
            nv += acc * acc;
        }
        nv = sqrt(nv);
        for (int64_t i = 0; nv > 0 && i < in; i++) v[i] = (float)(v[i] / nv);
        *sigma = sqrt(lambda);
    }
    free(Q);
    free(R);
    free(M);
    free(K);
    free(V);
    return RM_OK;
}

// ---------------------------------------------------------------- sets

void rm_lora_set_free(rm_lora_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        if (s->own && s->lora) rm_lora_free(s->lora[i]);
        if (s->name) free(s->name[i]);
        if (s->task) free(s->task[i]);
    }
    for (int i = 0; s->arrow && i < s->n_layer * RM_LIN_COUNT; i++) free(s->arrow[i]);
    free(s->arrow);
    free(s->lora);
    free(s->name);
    free(s->task);
    free(s);
}

const rm_lora_mod *rm_lora_set_mod(const rm_lora_set *s, int i, int layer, int which) {
    const rm_lora *a = s->lora[i];
    if (layer < 0 || layer >= a->n_layer) return NULL;
    const rm_lora_mod *m = &a->mods[layer * RM_LIN_COUNT + which];
    return m->r ? m : NULL;
}

// Arrow's prototypes of every module of every adapter.
static int set_prototypes(rm_lora_set *s) {
    s->arrow = calloc((size_t)s->n_layer * RM_LIN_COUNT, sizeof *s->arrow);
    if (!s->arrow) return rm_errorf(RM_ENOMEM, "lora set: out of memory");
    for (int l = 0; l < s->n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            if (!(s->targets & (1u << w))) continue;
            float **pv = &s->arrow[l * RM_LIN_COUNT + w];
            for (int i = 0; i < s->n; i++) {
                const rm_lora_mod *m = rm_lora_set_mod(s, i, l, w);
                if (!m) continue;
                if (!*pv && !(*pv = calloc((size_t)s->n * (size_t)m->in, sizeof(float))))
                    return rm_errorf(RM_ENOMEM, "lora set: out of memory");
                double sigma;
                int rc = rm_lora_mod_top_singular(m, *pv + (size_t)i * m->in, &sigma);
                if (rc) return rc;
            }
        }
    return RM_OK;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

int rm_lora_set_new(rm_lora_set **out, int n, rm_lora *const *lora, const char *const *names, const char *const *tasks,
                    int own) {
    *out = NULL;
    int rc = RM_OK;
    if (n < 1 || n > RM_SET_MAX) rc = rm_errorf(RM_EINVAL, "lora set: %d adapters (1..%d)", n, RM_SET_MAX);
    for (int i = 0; !rc && i < n; i++) {
        if (!lora[i] || !lora[i]->base)
            rc = rm_errorf(RM_EINVAL, "lora set: adapter %d is not bound to a base model", i);
        else if (lora[i]->base != lora[0]->base)
            rc = rm_errorf(RM_EMISMATCH, "lora set: %s and %s are bound to different base models", lora[0]->path,
                           lora[i]->path);
        for (int j = 0; !rc && j < i; j++)
            if (lora[j] == lora[i]) rc = rm_errorf(RM_EINVAL, "lora set: %s appears twice", lora[i]->path);
    }
    rm_lora_set *s = rc ? NULL : calloc(1, sizeof *s);
    if (!rc && !s) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (rc) {
        for (int i = 0; own && i < n; i++) rm_lora_free(lora[i]);
        return rc;
    }
    s->own = own;
    s->lora = calloc((size_t)n, sizeof *s->lora);
    s->name = calloc((size_t)n, sizeof *s->name);
    s->task = calloc((size_t)n, sizeof *s->task);
    if (!s->lora || !s->name || !s->task) {
        for (int i = 0; own && i < n; i++) rm_lora_free(lora[i]);
        s->own = 0;
        rm_lora_set_free(s);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    s->n = n;
    s->base = lora[0]->base;
    for (int i = 0; i < n; i++) {
        s->lora[i] = lora[i];
        s->name[i] = strdup(names ? names[i] : lora[i]->path);
        s->task[i] = dup_or_null(tasks ? tasks[i] : NULL);
        if (!s->name[i] || (tasks && tasks[i] && !s->task[i])) rc = rm_errorf(RM_ENOMEM, "out of memory");
        s->n_layer = lora[i]->n_layer > s->n_layer ? lora[i]->n_layer : s->n_layer;
        s->targets |= rm_lora_targets(lora[i]);
        int r = rm_lora_max_rank(lora[i]);
        s->max_rank = r > s->max_rank ? r : s->max_rank;
    }
    if (!rc && !s->targets) rc = rm_errorf(RM_EINVAL, "lora set: the adapters adapt no linear");
    if (!rc) rc = set_prototypes(s);
    if (rc) {
        rm_lora_set_free(s);
        return rc;
    }
    *out = s;
    return RM_OK;
}

int rm_lora_set_find(const rm_lora_set *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], name)) return i;
    return -1;
}

int rm_lora_set_find_task(const rm_lora_set *s, const char *task) {
    for (int i = 0; i < s->n; i++)
        if (s->task[i] && !strcmp(s->task[i], task)) return i;
    return rm_lora_set_find(s, task);
}
