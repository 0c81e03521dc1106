// batch_set.c — the set compositions in the batched hook (compose.h: moe
// with a trained gate, arrow). Rows with such plans are computed row by row,
// each by one worker, their adapters in the set's order, so that a row's
// result does not depend on its batch mates. SMEAR rows first advance their
// sequence's running sums, in row order, on the calling thread.
//
// Per row and linear, with E_i = s_i B_i A_i x over the set's adapters:
//   moe soft/topk/top1: z = W_g x, alpha = rm_gate_route(z), y += sum_i alpha_i E_i
//   moe smear:          z = W_g mean(x_0..x_t), alpha = softmax(z),
//                       y += (sum_i alpha_i s_i B_i) ((sum_i alpha_i A_i) x)
//   arrow:              z_i = |v_i . x|, alpha = softmax over the k largest, y += sum_i alpha_i E_i
// Adapters with weight 0 (excluded, not chosen) are not computed.
#include "base/err.h"
#include "lora/batch_impl.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

// Floats of scratch one row needs: z, alpha [n], two [r] vectors, a byte mask [n].
static size_t row_scratch(int n, int r) { return 2 * (size_t)n + 2 * (size_t)r + ((size_t)n + 3) / 4; }

// y[out] += sum_i alpha_i s_i B_i (A_i x) over the adapters with a weight (h [r] scratch).
static void weighted_sum(int isa, const rm_lora_set *s, int layer, int which, const float *alpha, const float *x,
                         float *h, float *y) {
    for (int i = 0; i < s->n; i++) {
        const rm_lora_mod *m = alpha[i] != 0.0f ? rm_lora_set_mod(s, i, layer, which) : NULL;
        if (!m) continue;
        lora_mod_down(isa, m, x, h);
        lora_mod_up(isa, m, h, alpha[i] * m->scale, y);
    }
}

// SMEAR's merged adapter: y[out] += B_m (A_m x) with A_m = sum_i alpha_i A_i and
// B_m = sum_i alpha_i s_i B_i (equal ranks; h, h1 [r] scratch).
static void merged_apply(int isa, const rm_lora_set *s, int layer, int which, const float *alpha, const float *x,
                         float *h, float *h1, float *y) {
    int r = 0;
    for (int i = 0; i < s->n; i++) { // h = A_m x
        const rm_lora_mod *m = alpha[i] != 0.0f ? rm_lora_set_mod(s, i, layer, which) : NULL;
        if (!m) continue;
        if (!r) memset(h, 0, (size_t)(r = m->r) * sizeof(float));
        lora_mod_down(isa, m, x, h1);
        for (int j = 0; j < r; j++) h[j] += alpha[i] * h1[j];
    }
    for (int i = 0; i < s->n; i++) {
        const rm_lora_mod *m = alpha[i] != 0.0f ? rm_lora_set_mod(s, i, layer, which) : NULL;
        if (m) lora_mod_up(isa, m, h, alpha[i] * m->scale, y);
    }
}

// One row of a moe or arrow plan on linear (layer, which): x [in] its input,
// xbar its running mean (smear), y [out] += the composed term.
static void set_row(int isa, const rm_lora_plan *p, int layer, int which, const float *x, const float *xbar, float *y,
                    float *scratch) {
    const rm_lora_set *s = p->set;
    int n = s->n, idx = layer * RM_LIN_COUNT + which;
    int64_t in = s->base->layers[layer].w[which].ne[0];
    float *z = scratch, *alpha = z + n, *h = alpha + n, *h1 = h + s->max_rank;
    uint8_t *mask = (uint8_t *)(h1 + s->max_rank);
    if (p->mode == RM_COMPOSE_MOE) {
        const rm_gate *g = p->gate;
        const float *W = g->w[idx], *u = g->kind == RM_GATE_SMEAR ? xbar : x;
        if (!W) return;
        for (int i = 0; i < n; i++) z[i] = rm_dot_f32(W + (size_t)i * in, u, in);
        if (!rm_gate_route(g->kind, g->k, n, z, p->excluded, alpha, NULL)) return;
        if (g->kind == RM_GATE_SMEAR) merged_apply(isa, s, layer, which, alpha, x, h, h1, y);
        else weighted_sum(isa, s, layer, which, alpha, x, h, y);
        return;
    }
    const float *V = layer < s->n_layer ? s->arrow[idx] : NULL;
    if (!V) return;
    for (int i = 0; i < n; i++) { // adapters without a module here take no part
        mask[i] = (p->excluded && p->excluded[i]) || !rm_lora_set_mod(s, i, layer, which);
        z[i] = mask[i] ? 0.0f : fabsf(rm_dot_f32(V + (size_t)i * in, x, in));
    }
    if (rm_gate_route(RM_GATE_TOPK, p->topk, n, z, mask, alpha, NULL))
        weighted_sum(isa, s, layer, which, alpha, x, h, y);
}

static int is_smear(const rm_lora_plan *p) { return p->mode == RM_COMPOSE_MOE && p->gate->kind == RM_GATE_SMEAR; }

static void set_task(void *ctx, int ith, int nth) {
    const lb_rowjob *J = ctx;
    long begin, end;
    rm_split_range(J->n_rows, ith, nth, &begin, &end);
    float *scratch = J->lb->S + (size_t)ith * J->share;
    for (long k = begin; k < end; k++) {
        int r = J->lb->srows[k];
        const rm_lora_plan *p = J->b->plan[r];
        set_row(J->isa, p, J->layer, J->which, J->x + (size_t)r * J->ldx,
                is_smear(p) ? J->lb->XB + (size_t)k * J->ldx : NULL, J->y + (size_t)r * J->ldy, scratch);
    }
}

// Numbers the hook's calls on smear rows, process-wide (never 0).
static atomic_uint_fast64_t g_smear_calls;

// SMEAR: adds each smear row's input to its sequence's running sum (rows in
// batch order; a row at position 0 restarts the sum) and writes the mean so
// far to XB[k]. Returns -1 (status set) when a sequence's rows come out of
// order or two sequences of the batch share a plan.
static int smear_advance(rm_lora_batch *lb, const rm_batch *b, int n_rows, int layer, int which, const float *x,
                         int64_t ldx) {
    int idx = layer * RM_LIN_COUNT + which;
    uint64_t call = atomic_fetch_add(&g_smear_calls, 1) + 1;
    for (int k = 0; k < n_rows; k++) {
        int row = lb->srows[k];
        const rm_lora_plan *p = b->plan[row];
        if (!is_smear(p) || p->smear->off[idx] == SIZE_MAX) continue;
        int64_t in = p->set->base->layers[layer].w[which].ne[0];
        float *sum = p->smear->sum + p->smear->off[idx], *xb = lb->XB + (size_t)k * ldx;
        int *count = &p->smear->count[idx], pos = b->pos[row];
        const float *xr = x + (size_t)row * ldx;
        if (pos == 0 && p->smear->call[idx] != call) {
            memset(sum, 0, (size_t)in * sizeof(float));
            *count = 0;
        } else if (*count != pos) {
            lb_mismatch(lb, layer, which,
                        "smear: a sequence's rows came out of order, or sequences share a plan (one plan "
                        "per sequence, rows at positions 0, 1, 2, ...)");
            return -1;
        }
        p->smear->call[idx] = call;
        float c = (float)++*count;
        for (int64_t i = 0; i < in; i++) {
            sum[i] += xr[i];
            xb[i] = sum[i] / c;
        }
    }
    return 0;
}

void lb_set_apply(rm_lora_batch *lb, const rm_batch *b, int layer, rm_linear_id which, const float *x, int64_t ldx,
                  float *y, int64_t ldy, int isa) {
    int n = 0, nmax = 0, rmax = 0, smear = 0;
    for (int row = 0; row < b->n; row++) {
        const rm_lora_plan *p = b->plan[row];
        if (!p || (p->mode != RM_COMPOSE_MOE && p->mode != RM_COMPOSE_ARROW)) continue;
        const rm_lora_set *s = p->set;
        if (layer >= s->base->hp.n_layer || s->base->layers[layer].w[which].ne[0] > ldx ||
            s->base->layers[layer].w[which].ne[1] > ldy) {
            lb_mismatch(lb, layer, which, "a set plan of another model's shapes");
            return;
        }
        if (lb_grow(&lb->srows, &lb->srows_cap, (size_t)n + 1, sizeof *lb->srows)) {
            lb_fail(lb, "set rows");
            return;
        }
        lb->srows[n++] = row;
        nmax = s->n > nmax ? s->n : nmax;
        rmax = s->max_rank > rmax ? s->max_rank : rmax;
        smear |= is_smear(p);
    }
    if (!n) return;
    if (lb_grow(&lb->XB, &lb->XB_cap, smear ? (size_t)n * (size_t)ldx : 1, sizeof *lb->XB)) {
        lb_fail(lb, "smear means");
        return;
    }
    if (smear && smear_advance(lb, b, n, layer, which, x, ldx)) return;
    int nth = rm_threadpool_size(lb->tp);
    lb_rowjob job = {lb, b, isa, layer, which, n, row_scratch(nmax, rmax), x, ldx, y, ldy};
    if (lb_grow(&lb->S, &lb->S_cap, job.share * (size_t)nth, sizeof *lb->S)) {
        lb_fail(lb, "set scratch");
        return;
    }
    rm_threadpool_run(lb->tp, set_task, &job);
}
