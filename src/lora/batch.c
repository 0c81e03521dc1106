// batch.c — the batched LoRA hook (see batch.h).
//
// Shapes per linear: x [n, in] (rows ldx apart), y [n, out] (ldy apart).
// A term is one (row, adapter module, coefficient w*s); terms are sorted by
// (adapter uid, row) so that equal adapters form contiguous groups.
#include "lora/batch.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/file.h"
#include "base/fp16.h"
#include "lora/batch_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct lb_job {
    const rm_lora_batch *lb;
    int isa;
    int n_groups, n_units;
    const float *x;
    int64_t ldx;
    float *y;
    int64_t ldy, out;
} lb_job;

rm_lora_batch *rm_lora_batch_new(rm_threadpool *tp) {
    rm_lora_batch *lb = calloc(1, sizeof *lb);
    if (lb) lb->tp = tp, lb->gram_budget = LB_GRAM_FLOATS;
    return lb;
}

void rm_lora_batch_free(rm_lora_batch *lb) {
    if (!lb) return;
    free(lb->terms);
    free(lb->groups);
    free(lb->units);
    free(lb->T);
    free(lb->rrows);
    free(lb->roff);
    lb_gram_free(lb);
    free(lb->srows);
    free(lb->S);
    free(lb->XB);
    free(lb);
}

double rm_lora_batch_seconds(rm_lora_batch *lb) {
    double s = lb->seconds;
    lb->seconds = 0;
    return s;
}

int rm_lora_batch_status(rm_lora_batch *lb) {
    int rc = lb->status;
    if (rc) rm_errorf(rc, "%s", lb->msg);
    lb->status = RM_OK;
    return rc;
}

int lb_grow(void *p, size_t *cap, size_t n, size_t sz) {
    if (n <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < n) c *= 2;
    void *q = realloc(*(void **)p, c * sz);
    if (!q) return -1;
    *(void **)p = q;
    *cap = c;
    return 0;
}

static int term_cmp(const void *pa, const void *pb) {
    const lb_term *a = pa, *b = pb;
    if (a->uid != b->uid) return a->uid < b->uid ? -1 : 1;
    if (a->row != b->row) return a->row < b->row ? -1 : 1;
    return (a->slot > b->slot) - (a->slot < b->slot); // an adapter twice in one plan: plan order
}

// The kernel family for this CPU (RAMOLE_ISA may force a lower one).
int lora_isa(void) {
    const rm_cpu_features *f = rm_cpu();
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx2 && f->fma && f->f16c) return 2;
    return f->avx2 && f->fma && f->f16c ? 1 : 0;
}

int rm_lora_kernel_family(void) { return lora_isa(); }

// The scalar kernels: the specification of lora_down / lora_up (batch_impl.h).
// Element (j, k) of a packed mirror sits at rm_lora_a16_at / rm_lora_b16_at.
static float a_elem(lb_w A, int64_t in, int j, int64_t k) {
    if (A.q) return (float)A.q[rm_lora_a16_at(in, j, k)];
    return A.h ? rm_f16_to_f32(A.h[rm_lora_a16_at(in, j, k)]) : A.f[(size_t)j * (size_t)in + (size_t)k];
}

static void down_ref(LB_DOWN_ARGS) {
    for (int i = 0; i < nt; i++)
        for (int j = j0; j < j0 + nj; j++) {
            float s = 0;
            for (int64_t k = 0; k < in; k++) s += x[i][k] * a_elem(A, in, j, k);
            t[i][j] = c[i] * (A.q ? A.s[j] * s : s);
        }
}

static void up_ref(LB_UP_ARGS) {
    for (int i = 0; i < nt; i++)
        for (int64_t o = o0; init && o < o1; o++) y[i][o] = 0;
    for (int i = 0; i < nt; i++)
        for (int j = 0; j < nj; j++)
            for (int64_t o = o0; o < o1; o++) {
                float b = B.q   ? (float)B.q[rm_lora_b16_at(r, j0 + j, o)]
                          : B.h ? rm_f16_to_f32(B.h[rm_lora_b16_at(r, j0 + j, o)])
                                : B.f[(size_t)(j0 + j) * (size_t)ldb + (size_t)o];
                y[i][o] += t[i][j] * b;
            }
}

void lora_down(int isa, LB_DOWN_ARGS) {
    (isa == 2 ? lora_down_avx512 : isa == 1 ? lora_down_avx2 : down_ref)(nt, x, c, t, A, in, j0, nj);
}

void lora_up(int isa, LB_UP_ARGS) {
    void (*up)(LB_UP_ARGS) = isa == 2 ? lora_up_avx512 : isa == 1 ? lora_up_avx2 : up_ref;
    if (!B.q) {
        up(nt, y, t, B, ldb, r, j0, nj, o0, o1, init);
        return;
    }
    // 8-bit: the coefficients t[i][j] * s[j0 + j] made here once per 64 ranks;
    // the kernels take the bytes as the weights (s NULL) and y carries each
    // chain from one piece of the rank to the next
    float ts[LB_NT][64];
    const float *tp[LB_NT];
    lb_w Bq = {.q = B.q};
    for (int p = 0; p < nj; p += 64) {
        int n = nj - p < 64 ? nj - p : 64;
        for (int i = 0; i < nt; i++) {
            for (int j = 0; j < n; j++) ts[i][j] = t[i][p + j] * B.s[j0 + p + j];
            tp[i] = ts[i];
        }
        up(nt, y, tp, Bq, ldb, r, j0 + p, n, o0, o1, init && p == 0);
    }
}

// T[term, j0 .. j0+LB_NJ) = coef * x[row] . A[j] for each (group, block of
// rows of A) unit in this worker's share, LB_NT terms at a time.
static void down_task(void *ctx, int ith, int nth) {
    const lb_job *J = ctx;
    const rm_lora_batch *lb = J->lb;
    long begin, end;
    rm_split_range(J->n_units, ith, nth, &begin, &end);
    for (long u = begin; u < end; u++) {
        const lb_group *g = &lb->groups[lb->units[u].group];
        int j0 = lb->units[u].j;
        const rm_lora_mod *m = lb->terms[g->first].mod;
        int nj = m->r - j0 < LB_NJ ? m->r - j0 : LB_NJ;
        for (int t0 = g->first; t0 < g->first + g->count; t0 += LB_NT) {
            int nt = g->first + g->count - t0 < LB_NT ? g->first + g->count - t0 : LB_NT;
            const float *x[LB_NT];
            float c[LB_NT], *t[LB_NT];
            for (int i = 0; i < nt; i++) {
                const lb_term *tm = &lb->terms[t0 + i];
                x[i] = J->x + (size_t)tm->row * J->ldx;
                c[i] = tm->coef;
                t[i] = lb->T + tm->t_off;
            }
            lora_down(J->isa, nt, x, c, t, lb_a(m), m->in, j0, nj);
        }
    }
}

// y[row, o0:o1] += T[term] B^T[:, o0:o1] for every term but the router
// queries, groups in uid order, for this worker's column range (multiples of
// 32 floats, the packed mirror's blocks); up to LB_NT terms of a group at a
// time, as long as their rows differ.
static void up_task(void *ctx, int ith, int nth) {
    const lb_job *J = ctx;
    const rm_lora_batch *lb = J->lb;
    long nblk = (long)((J->out + 31) / 32), b0, b1;
    rm_split_range(nblk, ith, nth, &b0, &b1);
    int64_t o0 = b0 * 32, o1 = b1 * 32 < J->out ? b1 * 32 : J->out;
    if (o0 >= o1) return;
    for (int gi = 0; gi < J->n_groups; gi++) {
        const lb_group *g = &lb->groups[gi];
        const rm_lora_mod *m = lb->terms[g->first].mod;
        int t = g->first, end = g->first + g->count;
        while (t < end) {
            float *y[LB_NT];
            const float *tv[LB_NT];
            int nt = 0;
            for (; t < end && nt < LB_NT; t++) {
                const lb_term *tm = &lb->terms[t];
                if (tm->slot < 0) continue; // a router's query: no B T
                float *yr = J->y + (size_t)tm->row * J->ldy;
                int dup = 0;
                for (int i = 0; i < nt; i++) dup |= y[i] == yr;
                if (dup) break;
                y[nt] = yr;
                tv[nt++] = lb->T + tm->t_off;
            }
            if (nt) lora_up(J->isa, nt, y, tv, lb_b(m), m->out, m->r, 0, m->r, o0, o1, 0);
        }
    }
}

void lb_fail(rm_lora_batch *lb, const char *what) {
    if (!lb->status) {
        lb->status = RM_ENOMEM;
        snprintf(lb->msg, sizeof lb->msg, "lora: out of memory for %s; the LoRA terms were skipped", what);
    }
}

void lora_mod_down(int isa, const rm_lora_mod *m, const float *x, float *h) {
    const float one = 1.0f;
    for (int j = 0; j < m->r; j += LB_NJ)
        lora_down(isa, 1, &x, &one, &h, lb_a(m), m->in, j, m->r - j < LB_NJ ? m->r - j : LB_NJ);
}

void lora_mod_up(int isa, const rm_lora_mod *m, const float *h, float c, float *y) {
    float t[64];
    const float *tp = t;
    for (int j0 = 0; j0 < m->r; j0 += 64) { // the chain over j goes on through y
        int n = m->r - j0 < 64 ? m->r - j0 : 64;
        for (int j = 0; j < n; j++) t[j] = c * h[j0 + j];
        lora_up(isa, 1, &y, &tp, lb_b(m), m->out, m->r, j0, n, 0, m->out, 0);
    }
}

const rm_lora_mod *lb_mod_of(const rm_lora *a, int layer, int which) {
    if (layer >= a->n_layer) return NULL;
    const rm_lora_mod *m = &a->mods[layer * RM_LIN_COUNT + which];
    return m->r ? m : NULL;
}

int lb_term_misfit(const rm_lora_batch *lb, int n_terms, const rm_lora_mod *m, int64_t ldx, int64_t ldy) {
    const rm_lora_mod *m0 = n_terms ? lb->terms[0].mod : m;
    return m->in != m0->in || m->out != m0->out || m->in > ldx || m->out > ldy;
}

void lb_mismatch(rm_lora_batch *lb, int layer, int which, const char *what) {
    if (!lb->status) {
        lb->status = RM_EMISMATCH;
        snprintf(lb->msg, sizeof lb->msg, "lora: layer %d %s: %s; the LoRA terms were skipped", layer,
                 rm_linear_names[which], what);
    }
}

// The selection / mixture / fusion terms of b's rows on (layer, which),
// appended at lb->terms[*n_terms ...]; -1 on a failure (recorded).
static int mixture_terms(rm_lora_batch *lb, const rm_batch *b, int layer, rm_linear_id which, int *n_terms,
                         int64_t ldx, int64_t ldy) {
    for (int r = 0; r < b->n; r++) {
        const rm_lora_plan *p = b->plan[r];
        if (!p) continue;
        const rm_lora *ls[RM_PLAN_MAX];
        float ws[RM_PLAN_MAX];
        int k = rm_lora_plan_terms(p, ls, ws);
        if (lb_grow(&lb->terms, &lb->terms_cap, (size_t)*n_terms + (size_t)k, sizeof *lb->terms)) {
            lb_fail(lb, "terms");
            return -1;
        }
        for (int i = 0; i < k; i++) {
            const rm_lora_mod *m = lb_mod_of(ls[i], layer, which);
            if (!m) continue;
            if (lb_term_misfit(lb, *n_terms, m, ldx, ldy)) {
                lb_mismatch(lb, layer, which, "adapters of different shapes in one batch (bound to another model?)");
                return -1;
            }
            lb->terms[(*n_terms)++] = (lb_term){ls[i]->uid, m, r, i, -1, ws[i] * m->scale, 0};
        }
    }
    return 0;
}

// The terms lb->terms[0, n_terms) (one shape of A and B): sorted by
// (adapter, row, slot), grouped; T = coef X A^T per group; then the router
// rows' weights (lb_router_weights, when n_rrows); then B T added to each
// term's row of y (router queries excepted).
static void run_terms(rm_lora_batch *lb, const rm_batch *b, int layer, int which, int n_terms, int n_rrows,
                      const float *x, int64_t ldx, float *y, int64_t ldy, int isa) {
    const int64_t out = lb->terms[0].mod->out;
    qsort(lb->terms, (size_t)n_terms, sizeof *lb->terms, term_cmp);
    // groups, work units and T offsets
    int n_groups = 0, n_units = 0;
    size_t t_size = 0;
    for (int t = 0; t < n_terms; t++) {
        lb_term *tm = &lb->terms[t];
        if (t == 0 || tm->uid != lb->terms[t - 1].uid) {
            if (lb_grow(&lb->groups, &lb->groups_cap, (size_t)n_groups + 1, sizeof *lb->groups) ||
                lb_grow(&lb->units, &lb->units_cap, (size_t)n_units + (size_t)tm->mod->r, sizeof *lb->units)) {
                lb_fail(lb, "groups");
                return;
            }
            lb->groups[n_groups] = (lb_group){t, 0};
            for (int j = 0; j < tm->mod->r; j += LB_NJ) lb->units[n_units++] = (lb_unit){n_groups, j};
            n_groups++;
        }
        lb->groups[n_groups - 1].count++;
        tm->t_off = t_size;
        t_size += (size_t)tm->mod->r;
    }
    if (lb_grow(&lb->T, &lb->T_cap, t_size, sizeof *lb->T)) {
        lb_fail(lb, "T");
        return;
    }
    // T = coef * X A^T; the router rows' weights; Y += T B^T
    lb_job job = {lb, isa, n_groups, n_units, x, ldx, y, ldy, out};
    rm_threadpool_run(lb->tp, down_task, &job);
    if (n_rrows) lb_router_weights(lb, b, layer, which, n_terms, n_rrows, out);
    if (!lb->status) rm_threadpool_run(lb->tp, up_task, &job);
}

static void hook_apply(void *ctx, const rm_batch *b, int layer, rm_linear_id which, const float *x, int64_t ldx,
                       float *y, int64_t ldy) {
    rm_lora_batch *lb = ctx;
    if (!b->plan) return;
    double t0 = rm_now();
    int isa = lora_isa(), n_terms = 0, n_rrows = 0;
    if (!mixture_terms(lb, b, layer, which, &n_terms, ldx, ldy) &&
        (n_rrows = lb_router_terms(lb, b, layer, which, &n_terms, ldx, ldy)) >= 0 && n_terms)
        run_terms(lb, b, layer, which, n_terms, n_rrows, x, ldx, y, ldy, isa);
    lb_set_apply(lb, b, layer, which, x, ldx, y, ldy, isa);
    lb->seconds += rm_now() - t0;
}

rm_linear_hook rm_lora_batch_hook(rm_lora_batch *lb) {
    rm_linear_hook h = {hook_apply, lb};
    return h;
}
