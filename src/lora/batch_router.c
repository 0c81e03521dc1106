// batch_router.c — RouterLoRA rows of the batched hook (see batch.h).
//
// A row x with a router plan (experts i < k, router R) on one linear:
//     E_i = s_i B_i A_i x,   q = s_r B_r A_r x,
//     alpha = softmax_i(q . E_i / sqrt(out)),   y += sum_i alpha_i E_i.
// Since q . E_i = (s_r A_r x)^T (B_r^T B_i) (s_i A_i x), the scores need only
// the down pass's vectors t_r = s_r A_r x and t_i = s_i A_i x and the small
// matrix G_i = B_r^T B_i [r_r x r_i]: a router row is the mixture's terms
// (each t_i scaled by alpha_i before the up pass) plus the router's down
// pass, and neither q nor any E_i is formed.
//
// The G_i are made from the f32 B's (in double, rounded to f32) once per
// (router, expert, linear) and kept in the batch, keyed by the adapters'
// uids, within lb->gram_budget floats (the least recently used go first when full).
// An adapter's weights must not change while a batch uses it; rm_lora_bind's
// reordering of q / k outputs moves both B's rows alike, which leaves G as it is.
#include "base/err.h"
#include "lora/batch.h"
#include "lora/batch_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct lb_gram {
    uint64_t router, expert; // uids (expert 0: an empty slot)
    int lin;                 // layer * RM_LIN_COUNT + which
    uint64_t used;           // lb->gram_clock when last used
    size_t n;                // floats in G
    float *G;                // [r_r][r_i]
} lb_gram;

#define NO_OFF ((size_t)-1)

// ---------------------------------------------------------------- products

// a . b summed in double, eight lanes in a fixed order (the same bits on any CPU).
static float gram_dot(const float *a, const float *b, int64_t n) {
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) s[l] += (double)a[i + l] * (double)b[i + l];
    for (int l = 0; i < n; i++, l++) s[l] += (double)a[i] * (double)b[i];
    return (float)(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
}

// G[a][b] = B_r[:, a] . B_e[:, b] (rows a, b of the B^T's)
static void gram_fill(const rm_lora_mod *mr, const rm_lora_mod *me, float *G) {
    for (int a = 0; a < mr->r; a++)
        for (int b = 0; b < me->r; b++)
            G[(size_t)a * me->r + b] = gram_dot(mr->Bt + (size_t)a * mr->out, me->Bt + (size_t)b * me->out, mr->out);
}

static size_t gram_slot(uint64_t router, uint64_t expert, int lin, size_t cap) {
    uint64_t h = router * 0x9e3779b97f4a7c15ull ^ expert * 0xc2b2ae3d27d4eb4full ^ (uint64_t)lin * 0x165667b19e3779f9ull;
    h ^= h >> 31;
    return (size_t)(h & (cap - 1));
}

static lb_gram *gram_find(const rm_lora_batch *lb, uint64_t router, uint64_t expert, int lin) {
    if (!lb->gram_cap) return NULL;
    for (size_t i = gram_slot(router, expert, lin, lb->gram_cap);; i = (i + 1) & (lb->gram_cap - 1)) {
        lb_gram *g = &lb->gram[i];
        if (!g->expert) return NULL;
        if (g->router == router && g->expert == expert && g->lin == lin) return g;
    }
}

typedef struct gram_age {
    uint64_t used;
    size_t n;
} gram_age;

static int age_cmp(const void *pa, const void *pb) {
    uint64_t a = ((const gram_age *)pa)->used, b = ((const gram_age *)pb)->used;
    return (a > b) - (a < b);
}

// Rebuilds the table with cap slots, keeping the entries used at or after
// `since` (the others are freed); -1 when out of memory (nothing changed).
static int gram_rebuild(rm_lora_batch *lb, size_t cap, uint64_t since) {
    lb_gram *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    size_t n = 0, floats = 0;
    for (size_t i = 0; i < lb->gram_cap; i++) {
        lb_gram *g = &lb->gram[i];
        if (!g->expert) continue;
        if (g->used < since) {
            free(g->G);
            continue;
        }
        size_t j = gram_slot(g->router, g->expert, g->lin, cap);
        while (t[j].expert) j = (j + 1) & (cap - 1);
        t[j] = *g;
        n++;
        floats += g->n;
    }
    free(lb->gram);
    lb->gram = t;
    lb->gram_cap = cap;
    lb->gram_n = n;
    lb->gram_floats = floats;
    return 0;
}

void lb_gram_free(rm_lora_batch *lb) {
    for (size_t i = 0; i < lb->gram_cap; i++) free(lb->gram[i].G);
    free(lb->gram);
    lb->gram = NULL;
    lb->gram_cap = lb->gram_n = lb->gram_floats = 0;
}

// Drops the least recently used products (whole uses at a time, never this
// call's) until `more` floats fit in the budget, or only this call's are left.
static int gram_evict(rm_lora_batch *lb, size_t more) {
    gram_age *age = malloc((lb->gram_n ? lb->gram_n : 1) * sizeof *age);
    if (!age) return -1;
    size_t n = 0, left = lb->gram_floats, k = 0;
    for (size_t i = 0; i < lb->gram_cap; i++)
        if (lb->gram[i].expert) age[n++] = (gram_age){lb->gram[i].used, lb->gram[i].n};
    qsort(age, n, sizeof *age, age_cmp);
    uint64_t since = 0;
    while (k < n && age[k].used < lb->gram_clock && left + more > lb->gram_budget) {
        since = age[k].used + 1;
        for (; k < n && age[k].used < since; k++) left -= age[k].n;
    }
    free(age);
    return since ? gram_rebuild(lb, lb->gram_cap, since) : 0;
}

// G_e = B_r^T B_e for the router's module mr and the expert's me on linear lin,
// from the cache or made now; NULL when out of memory.
static const float *gram_get(rm_lora_batch *lb, const rm_lora *router, const rm_lora_mod *mr, const rm_lora *expert,
                             const rm_lora_mod *me, int lin) {
    lb_gram *g = gram_find(lb, router->uid, expert->uid, lin);
    if (g) {
        g->used = lb->gram_clock;
        return g->G;
    }
    size_t n = (size_t)mr->r * (size_t)me->r;
    if (lb->gram_floats + n > lb->gram_budget && gram_evict(lb, n)) return NULL;
    if ((lb->gram_n + 1) * 2 > lb->gram_cap && gram_rebuild(lb, lb->gram_cap ? lb->gram_cap * 2 : 256, 0))
        return NULL;
    float *G = malloc(n * sizeof *G);
    if (!G) return NULL;
    gram_fill(mr, me, G);
    size_t j = gram_slot(router->uid, expert->uid, lin, lb->gram_cap);
    while (lb->gram[j].expert) j = (j + 1) & (lb->gram_cap - 1);
    lb->gram[j] = (lb_gram){router->uid, expert->uid, lin, lb->gram_clock, n, G};
    lb->gram_n++;
    lb->gram_floats += n;
    return G;
}

// ---------------------------------------------------------------- weights

// q . E / sqrt(out) = t_r^T G t_e / sqrt(out)   (0 without a query or an expert)
static float router_score(const float *tq, int rq, const float *te, int re, const float *G, int64_t out) {
    if (!tq || !te) return 0.0f;
    float s = 0.0f;
    for (int a = 0; a < rq; a++) {
        float u = 0.0f;
        for (int b = 0; b < re; b++) u += G[(size_t)a * re + b] * te[b];
        s += tq[a] * u;
    }
    return s / sqrtf((float)out);
}

// z[k] scores -> softmax weights in place
static void router_softmax(int k, float *z) {
    float mx = -INFINITY, sum = 0.0f;
    for (int i = 0; i < k; i++) mx = z[i] > mx ? z[i] : mx;
    for (int i = 0; i < k; i++) sum += (z[i] = expf(z[i] - mx));
    for (int i = 0; i < k; i++) z[i] /= sum;
}

int lb_router_terms(rm_lora_batch *lb, const rm_batch *b, int layer, int which, int *n_terms, int64_t ldx,
                    int64_t ldy) {
    int n = 0;
    for (int row = 0; row < b->n; row++) {
        const rm_lora_plan *p = b->plan[row];
        if (!p || p->mode != RM_COMPOSE_ROUTER) continue;
        if (lb_grow(&lb->rrows, &lb->rrows_cap, (size_t)n + 1, sizeof *lb->rrows) ||
            lb_grow(&lb->roff, &lb->roff_cap, ((size_t)n + 1) * (RM_PLAN_MAX + 1), sizeof *lb->roff) ||
            lb_grow(&lb->terms, &lb->terms_cap, (size_t)*n_terms + (size_t)p->n + 1, sizeof *lb->terms)) {
            lb_fail(lb, "router rows");
            return -1;
        }
        lb->rrows[n] = row;
        int any = 0;
        for (int i = 0; i <= p->n; i++) {
            const rm_lora *a = i < p->n ? p->lora[i] : p->router;
            const rm_lora_mod *m = lb_mod_of(a, layer, which);
            if (!m || (i == p->n && !any)) continue; // no query for a row none of whose experts has the linear
            if (lb_term_misfit(lb, *n_terms, m, ldx, ldy)) {
                lb_mismatch(lb, layer, which, "router plan of another model's shapes");
                return -1;
            }
            lb->terms[(*n_terms)++] = (lb_term){a->uid, m, row, i < p->n ? i : -1, n, m->scale, 0};
            any = 1;
        }
        n++;
    }
    return n;
}

void lb_router_weights(rm_lora_batch *lb, const rm_batch *b, int layer, int which, int n_terms, int n_rrows,
                       int64_t out) {
    lb->gram_clock++;
    for (size_t i = 0; i < (size_t)n_rrows * (RM_PLAN_MAX + 1); i++) lb->roff[i] = NO_OFF;
    for (int t = 0; t < n_terms; t++) {
        const lb_term *tm = &lb->terms[t];
        if (tm->rrow >= 0) lb->roff[(size_t)tm->rrow * (RM_PLAN_MAX + 1) + (tm->slot < 0 ? RM_PLAN_MAX : tm->slot)] =
            tm->t_off;
    }
    int lin = layer * RM_LIN_COUNT + which;
    for (int n = 0; n < n_rrows; n++) {
        int row = lb->rrows[n];
        const rm_lora_plan *p = b->plan[row];
        const size_t *off = lb->roff + (size_t)n * (RM_PLAN_MAX + 1);
        const rm_lora_mod *mr = lb_mod_of(p->router, layer, which);
        const float *tq = off[RM_PLAN_MAX] != NO_OFF ? lb->T + off[RM_PLAN_MAX] : NULL;
        float z[RM_PLAN_MAX];
        int any = 0, re[RM_PLAN_MAX];
        for (int i = 0; i < p->n; i++) {
            z[i] = 0.0f;
            if (off[i] == NO_OFF) continue;
            any = 1;
            const rm_lora_mod *me = lb_mod_of(p->lora[i], layer, which);
            re[i] = me->r;
            const float *G = tq ? gram_get(lb, p->router, mr, p->lora[i], me, lin) : NULL;
            if (tq && !G) {
                lb_fail(lb, "router products");
                return;
            }
            z[i] = router_score(tq, mr ? mr->r : 0, lb->T + off[i], re[i], G, out);
        }
        if (!any) continue; // left alone, as rm_lora_router_row leaves it
        router_softmax(p->n, z);
        for (int i = 0; i < p->n; i++) {
            if (off[i] == NO_OFF) continue;
            float *t = lb->T + off[i];
            for (int j = 0; j < re[i]; j++) t[j] *= z[i];
        }
        rm_route_stats *st = p->route && (!b->want || b->want[row]) && layer < p->route->n_layer ? p->route : NULL;
        if (st) { // one row of this plan asks for logits in a step
            for (int e = 0; e < p->n && e < st->k; e++) st->sum[(size_t)layer * st->k + e] += z[e];
            st->n[layer]++;
        }
    }
}

// ---------------------------------------------------------------- one row

void rm_lora_router_row(int isa, const rm_lora_plan *p, int layer, int which, const float *x, float *y, float *scratch,
                        float *alpha) {
    int k = p->n, R = 0, order[RM_PLAN_MAX], n_ord = 0;
    const rm_lora_mod *e[RM_PLAN_MAX], *mr = lb_mod_of(p->router, layer, which);
    for (int i = 0; i < k; i++) {
        e[i] = lb_mod_of(p->lora[i], layer, which);
        if (e[i]) R = e[i]->r > R ? e[i]->r : R, order[n_ord++] = i;
    }
    if (!n_ord) return;
    R = mr && mr->r > R ? mr->r : R;
    int64_t out = e[order[0]]->out;
    float *t = scratch, *G = scratch + (size_t)(k + 1) * (size_t)R, z[RM_PLAN_MAX];
    // t_i = s_i A_i x (and t_r), as the hook's down pass makes them
    for (int i = 0; i <= k; i++) {
        const rm_lora_mod *m = i < k ? e[i] : mr;
        float *ti = t + (size_t)i * R;
        for (int j = 0; m && j < m->r; j += LB_NJ)
            lora_down(isa, 1, &x, &m->scale, &ti, lb_a(m), m->in, j, m->r - j < LB_NJ ? m->r - j : LB_NJ);
    }
    const float *tq = mr ? t + (size_t)k * R : NULL;
    for (int i = 0; i < k; i++) {
        if (tq && e[i]) gram_fill(mr, e[i], G);
        z[i] = router_score(tq, mr ? mr->r : 0, e[i] ? t + (size_t)i * R : NULL, e[i] ? e[i]->r : 0, G, out);
    }
    router_softmax(k, z);
    // y += alpha_i B_i t_i, the experts in the hook's order (uid, then plan slot)
    for (int a = 1; a < n_ord; a++)
        for (int c = a; c > 0 && p->lora[order[c]]->uid < p->lora[order[c - 1]]->uid; c--) {
            int s = order[c];
            order[c] = order[c - 1];
            order[c - 1] = s;
        }
    for (int o = 0; o < n_ord; o++) {
        int i = order[o];
        float *ti = t + (size_t)i * R;
        for (int j = 0; j < e[i]->r; j++) ti[j] *= z[i];
        const float *tc = ti;
        lora_up(isa, 1, &y, &tc, lb_b(e[i]), e[i]->out, e[i]->r, 0, e[i]->r, 0, out, 0);
    }
    for (int i = 0; alpha && i < k; i++) alpha[i] = z[i];
}

size_t rm_lora_router_scratch(int k, int r) {
    return (size_t)(k + 1) * (size_t)r + (size_t)r * (size_t)r;
}
