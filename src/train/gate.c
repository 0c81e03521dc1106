// gate.c — the trainer's gate mode: MoE gates (soft, topk, top1) and SMEAR
// over a frozen adapter set on a frozen base (lora/gate.h, docs/baselines.md).
// Only the gates W_g [n, in] are trained (one per linear the set adapts,
// starting at 0: uniform soft routing).
//
// Per gated linear, N rows x [N, in], the set's experts concatenated:
// A [R, in] (rows s_i A_i for the gates, A_i for SMEAR), Bt [R, out] (rows of
// the B_i^T), R = sum of the ranks, expert i in columns [off_i, off_i+1).
//   gates: H = x A^T; z = x W_g^T; alpha = route(z);
//          y += G Bt with G[:, block i] = alpha_i H_i
//   smear: m_t = mean of x over its example's rows up to t (running sums per
//          packed segment); z = m W_g^T; alpha = softmax(z); H = x A^T;
//          h = sum_i alpha_i H_i [N, r]; y += G Bt with G[:, block i] = alpha_i s_i h
// Backward for g = dy [N, out], U = g Bt^T [N, R] (U_i = B_i^T g):
//   gates: dalpha_i = U_i . H_i;  dH_i = alpha_i U_i  -> dx += dH A
//   smear: dh = sum_i alpha_i s_i U_i;  dalpha_i = s_i U_i . h + dh . H_i;
//          dH_i = alpha_i dh -> dx += dH A
//   softmax (soft, topk, smear): dz_i = alpha_i (dalpha_i - sum_j alpha_j dalpha_j)
//     (topk: alpha is 0 off the chosen k, so the same formula)
//   top1 (alpha = p_c at the chosen c): dz_j = dalpha_c p_c (delta_jc - p_j)
//   dW_g += dz^T u;  du = dz W_g, u = x (gates: dx += du) or m (smear: dx_s +=
//   sum over t >= s in the segment of du_t / count_t)
#include "train/train_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "tensor/gemm.h"

typedef struct gate_lin {
    float *W, *dW; // W_g [n, in] (the rm_gate's) and its gradient; W NULL: not gated
    int R, r;      // concatenated rank; smear: the experts' common rank
    int *off;      // [n + 1]
    float *A, *Bt; // [R, in], [R, out]
    float *scale;  // [n] s_i
    // activations of the current batch
    float *H;     // [N, R]
    float *alpha; // [N, n]
    float *p;     // [N, n] top1: softmax over all
    float *m;     // [N, in] smear: running means
    float *h;     // [N, r] smear: sum_i alpha_i H_i
} gate_lin;

struct train_gate {
    rm_gate *g; // the gate trained (its W_g are the parameters)
    const rm_lora_set *set;
    gate_lin *lin;   // [L * RM_LIN_COUNT]
    int *seg;        // [N] first row of each row's segment (smear)
    float *act, *sc; // activations, scratch
    size_t act_cap, sc_cap;
};

static gate_lin *lin_of(const rm_trainer *t, const rm_tlinear *L) {
    if (!t->gate || L < t->lin || L >= t->lin + (size_t)t->L * RM_LIN_COUNT) return NULL;
    gate_lin *gl = &t->gate->lin[L - t->lin];
    return gl->W ? gl : NULL;
}

int train_gate_of(const rm_trainer *t, const rm_tlinear *L) { return lin_of(t, L) != NULL; }

// ---------------------------------------------------------------- setup

void train_gate_free(rm_trainer *t) {
    struct train_gate *G = t->gate;
    if (!G) return;
    for (int i = 0; G->lin && i < t->L * RM_LIN_COUNT; i++) {
        free(G->lin[i].off);
        free(G->lin[i].A);
        free(G->lin[i].Bt);
        free(G->lin[i].scale);
    }
    free(G->lin);
    free(G->seg);
    free(G->act);
    free(G->sc);
    rm_gate_free(G->g);
    free(G);
    t->gate = NULL;
}

// Concatenates the set's experts on linear (l, w) into gl.
static int concat_experts(gate_lin *gl, const rm_lora_set *set, int l, int w, int smear) {
    int n = set->n;
    gl->off = calloc((size_t)n + 1, sizeof *gl->off);
    gl->scale = calloc((size_t)n, sizeof *gl->scale);
    if (!gl->off || !gl->scale) return rm_errorf(RM_ENOMEM, "gate: out of memory");
    int64_t in = 0, out = 0;
    for (int i = 0; i < n; i++) {
        const rm_lora_mod *m = rm_lora_set_mod(set, i, l, w);
        gl->off[i + 1] = gl->off[i] + (m ? m->r : 0);
        if (m) in = m->in, out = m->out, gl->r = m->r, gl->scale[i] = m->scale;
    }
    gl->R = gl->off[n];
    gl->A = malloc((size_t)gl->R * in * sizeof(float));
    gl->Bt = malloc((size_t)gl->R * out * sizeof(float));
    if (!gl->A || !gl->Bt) return rm_errorf(RM_ENOMEM, "gate: out of memory");
    for (int i = 0; i < n; i++) {
        const rm_lora_mod *m = rm_lora_set_mod(set, i, l, w);
        if (!m) continue;
        float s = smear ? 1.0f : m->scale;
        for (int64_t j = 0; j < (int64_t)m->r * in; j++) gl->A[(size_t)gl->off[i] * in + j] = s * m->A[j];
        memcpy(gl->Bt + (size_t)gl->off[i] * out, m->Bt, (size_t)m->r * out * sizeof(float));
    }
    return RM_OK;
}

int rm_trainer_add_gate(rm_trainer *t, const rm_lora_set *set, rm_gate_kind kind, int k) {
    if (t->lora_rank || t->rt || t->gate)
        return rm_errorf(RM_EINVAL, "gate: the trainer already has adapters or a gate");
    if (set->base != t->m) return rm_errorf(RM_EMISMATCH, "gate: the adapter set is not bound to the trainer's base");
    struct train_gate *G = calloc(1, sizeof *G);
    if (!G) return rm_errorf(RM_ENOMEM, "out of memory");
    int n_params0 = t->n_params;
    t->gate = G;
    G->set = set;
    int rc = rm_gate_new(&G->g, set, kind, k);
    if (!rc && !(G->lin = calloc((size_t)t->L * RM_LIN_COUNT, sizeof *G->lin)))
        rc = rm_errorf(RM_ENOMEM, "out of memory");
    char name[96];
    for (int i = 0; !rc && i < t->L * RM_LIN_COUNT; i++) {
        gate_lin *gl = &G->lin[i];
        if (i >= G->g->n_layer * RM_LIN_COUNT || !G->g->w[i]) continue;
        if ((rc = concat_experts(gl, set, i / RM_LIN_COUNT, i % RM_LIN_COUNT, kind == RM_GATE_SMEAR))) break;
        gl->W = G->g->w[i];
        snprintf(name, sizeof name, "blk.%d.%s.gate", i / RM_LIN_COUNT, rm_linear_gguf[i % RM_LIN_COUNT]);
        rc = train_add_param(t, name, gl->W, (size_t)set->n * t->lin[i].in, &gl->dW);
    }
    if (rc) { // the trainer as it was: no gate, none of its parameters
        for (int i = n_params0; i < t->n_params; i++) free(t->params[i].g), free(t->params[i].m), free(t->params[i].v);
        t->n_params = n_params0;
        train_gate_free(t);
    }
    return rc;
}

int train_gate_begin(rm_trainer *t, const rm_tbatch *b) {
    struct train_gate *G = t->gate;
    size_t N = (size_t)b->B * b->T, n = (size_t)G->g->n, act = 0, sc = 0;
    int smear = G->g->kind == RM_GATE_SMEAR, top1 = G->g->kind == RM_GATE_TOP1;
    for (int i = 0; i < t->L * RM_LIN_COUNT; i++) {
        const gate_lin *gl = &G->lin[i];
        if (!gl->W) continue;
        size_t R = (size_t)gl->R, in = (size_t)t->lin[i].in, r = (size_t)gl->r;
        act += N * (R + n + (top1 ? n : 0) + (smear ? in + r : 0));
        size_t need = N * (2 * R + 3 * n + in + r); // forward z, G; backward U, dH, dalpha, dz^T, dm, dh
        sc = need > sc ? need : sc;
    }
    if (act > G->act_cap) {
        free(G->act);
        G->act_cap = (G->act = malloc(act * sizeof(float))) ? act : 0;
    }
    if (sc > G->sc_cap) {
        free(G->sc);
        G->sc_cap = (G->sc = malloc(sc * sizeof(float))) ? sc : 0;
    }
    free(G->seg);
    G->seg = malloc(N * sizeof *G->seg);
    if (!G->act || !G->sc || !G->seg) return rm_errorf(RM_ENOMEM, "gate: out of memory for activations");
    float *p = G->act;
    for (int i = 0; i < t->L * RM_LIN_COUNT; i++) {
        gate_lin *gl = &G->lin[i];
        if (!gl->W) continue;
        gl->H = p, p += N * (size_t)gl->R;
        gl->alpha = p, p += N * n;
        gl->p = top1 ? p : NULL, p += top1 ? N * n : 0;
        gl->m = smear ? p : NULL, p += smear ? N * (size_t)t->lin[i].in : 0;
        gl->h = smear ? p : NULL, p += smear ? N * (size_t)gl->r : 0;
    }
    // segments: consecutive rows of one sequence that share their attention start
    for (size_t r = 0; r < N; r++) {
        int s = b->start ? b->start[r] : (int)(r - r % (size_t)b->T);
        G->seg[r] = r % (size_t)b->T && (!b->start || b->start[r - 1] == s) ? G->seg[r - 1] : (int)r;
    }
    return RM_OK;
}

// ---------------------------------------------------------------- forward / backward

static rm_tensor f32_matrix(const float *w, int64_t rows, int64_t cols) {
    return (rm_tensor){.type = RM_TYPE_F32, .n_dims = 2, .ne = {cols, rows, 1, 1}, .data = (void *)w};
}

void train_gate_forward(rm_trainer *t, const rm_tlinear *L, const float *x, float *y, int N) {
    const struct train_gate *G = t->gate;
    gate_lin *gl = lin_of(t, L);
    int n = G->g->n, in = L->in, out = L->out, R = gl->R, r = gl->r;
    rm_gate_kind kind = G->g->kind;
    float *z = G->sc, *Gm = z + (size_t)N * n;
    const float *u = x;
    if (kind == RM_GATE_SMEAR) { // running sums per segment, as the serving hook keeps them
        float *sum = Gm + (size_t)N * R;
        for (int row = 0; row < N; row++) {
            float *mr = gl->m + (size_t)row * in, c = (float)(row - G->seg[row] + 1);
            const float *xr = x + (size_t)row * in;
            if (G->seg[row] == row) memset(sum, 0, (size_t)in * sizeof(float));
            for (int i = 0; i < in; i++) {
                sum[i] += xr[i];
                mr[i] = sum[i] / c;
            }
        }
        u = gl->m;
    }
    rm_tensor W = f32_matrix(gl->W, n, in), A = f32_matrix(gl->A, R, in);
    rm_matmul(t->tp, &W, u, in, z, n, N, 0);
    rm_matmul(t->tp, &A, x, in, gl->H, R, N, 0);
    for (int row = 0; row < N; row++) {
        const float *al = gl->alpha + (size_t)row * n, *H = gl->H + (size_t)row * R;
        rm_gate_route(kind, G->g->k, n, z + (size_t)row * n, NULL, gl->alpha + (size_t)row * n,
                      gl->p ? gl->p + (size_t)row * n : NULL);
        float *g = Gm + (size_t)row * R, *h = gl->h ? gl->h + (size_t)row * r : NULL;
        if (h) memset(h, 0, (size_t)r * sizeof(float));
        for (int i = 0; i < n; i++)
            for (int j = gl->off[i]; j < gl->off[i + 1]; j++) {
                if (h) h[j - gl->off[i]] += al[i] * H[j];
                else g[j] = al[i] * H[j];
            }
        for (int i = 0; h && i < n; i++)
            for (int j = gl->off[i]; j < gl->off[i + 1]; j++) g[j] = al[i] * gl->scale[i] * h[j - gl->off[i]];
    }
    rm_gemm_nn(t->tp, y, out, Gm, R, gl->Bt, out, N, out, R);
}

// Softmax (or top1) backward of one row: dz[n] from dalpha[n].
static void route_backward(rm_gate_kind kind, int n, const float *alpha, const float *p, const float *dalpha,
                           float *dz) {
    if (kind == RM_GATE_TOP1) {
        int c = 0;
        for (int i = 1; i < n; i++) c = alpha[i] != 0.0f ? i : c;
        for (int j = 0; j < n; j++) dz[j] = dalpha[c] * p[c] * ((j == c) - p[j]);
        return;
    }
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += alpha[i] * dalpha[i];
    for (int i = 0; i < n; i++) dz[i] = alpha[i] * (dalpha[i] - s);
}

int train_gate_backward(rm_trainer *t, const rm_tlinear *L, const float *x, const float *dy, float *dx, int N) {
    const struct train_gate *G = t->gate;
    const gate_lin *gl = lin_of(t, L);
    int n = G->g->n, in = L->in, out = L->out, R = gl->R, r = gl->r, smear = G->g->kind == RM_GATE_SMEAR;
    float *U = G->sc, *dH = U + (size_t)N * R, *dal = dH + (size_t)N * R, *dz = dal + (size_t)N * n;
    float *dzt = dz + (size_t)N * n, *dm = dzt + (size_t)N * n, *dh = dm + (size_t)N * in;
    rm_tensor Bt = f32_matrix(gl->Bt, R, out);
    rm_matmul(t->tp, &Bt, dy, out, U, R, N, 0); // U = dy Bt^T
    for (int row = 0; row < N; row++) {
        const float *al = gl->alpha + (size_t)row * n, *H = gl->H + (size_t)row * R, *u = U + (size_t)row * R;
        float *da = dal + (size_t)row * n, *d = dH + (size_t)row * R, *gh = dh + (size_t)row * r;
        const float *h = smear ? gl->h + (size_t)row * r : NULL;
        if (smear) memset(gh, 0, (size_t)r * sizeof(float));
        for (int i = 0; i < n; i++) {
            float acc = 0.0f;
            for (int j = gl->off[i]; j < gl->off[i + 1]; j++) {
                if (smear)
                    acc += gl->scale[i] * u[j] * h[j - gl->off[i]], gh[j - gl->off[i]] += al[i] * gl->scale[i] * u[j];
                else acc += u[j] * H[j], d[j] = al[i] * u[j];
            }
            da[i] = acc;
        }
        for (int i = 0; smear && i < n; i++)
            for (int j = gl->off[i]; j < gl->off[i + 1]; j++) {
                da[i] += gh[j - gl->off[i]] * H[j];
                d[j] = al[i] * gh[j - gl->off[i]];
            }
        route_backward(G->g->kind, n, al, gl->p ? gl->p + (size_t)row * n : NULL, da, dz + (size_t)row * n);
    }
    if (dx) rm_gemm_nn(t->tp, dx, in, dH, R, gl->A, in, N, in, R); // through the experts
    const float *u = smear ? gl->m : x;
    rm_transpose(t->tp, dzt, dz, n, N, n);
    rm_gemm_nn(t->tp, gl->dW, in, dzt, N, u, in, n, in, N); // dW_g += dz^T u
    if (!dx) return RM_OK;
    if (!smear) {
        rm_gemm_nn(t->tp, dx, in, dz, n, gl->W, in, N, in, n); // through the gate
        return RM_OK;
    }
    memset(dm, 0, (size_t)N * in * sizeof(float));
    rm_gemm_nn(t->tp, dm, in, dz, n, gl->W, in, N, in, n);
    // m_t = (x_s + ... + x_t) / (t - s + 1): dx_u += sum over t >= u in the segment of dm_t / count_t
    float *acc = dh; // [in], dh is no longer needed
    for (int row = N - 1; row >= 0; row--) {
        if (row == N - 1 || G->seg[row + 1] == row + 1) memset(acc, 0, (size_t)in * sizeof(float));
        float c = (float)(row - G->seg[row] + 1);
        for (int i = 0; i < in; i++) {
            acc[i] += dm[(size_t)row * in + i] / c;
            dx[(size_t)row * in + i] += acc[i];
        }
    }
    return RM_OK;
}

// ---------------------------------------------------------------- export and evaluation

int rm_trainer_export_gate(rm_trainer *t, rm_gate **out) {
    *out = NULL;
    if (!t->gate) return rm_errorf(RM_EINVAL, "gate export: the trainer has no gate");
    const rm_gate *g = t->gate->g;
    rm_gate *c;
    int rc = rm_gate_new(&c, t->gate->set, g->kind, g->k);
    if (rc) return rc;
    for (int i = 0; i < g->n_layer * RM_LIN_COUNT; i++)
        if (g->w[i]) memcpy(c->w[i], g->w[i], (size_t)g->n * t->lin[i].in * sizeof(float));
    *out = c;
    return RM_OK;
}

int train_gate_plans(rm_trainer *t, int n, rm_gate **gate, rm_lora_plan **plans) {
    *plans = NULL;
    int rc = rm_trainer_export_gate(t, gate);
    rm_lora_plan *p = rc ? NULL : calloc((size_t)n, sizeof *p);
    if (!rc && !p) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++) rc = rm_lora_plan_init_gate(&p[i], t->gate->set, *gate, NULL);
    if (rc) {
        train_gate_plans_free(*gate, p, n);
        *gate = NULL;
        return rc;
    }
    *plans = p;
    return RM_OK;
}

void train_gate_plans_free(rm_gate *gate, rm_lora_plan *plans, int n) {
    for (int i = 0; plans && i < n; i++) rm_lora_plan_free(&plans[i]);
    free(plans);
    rm_gate_free(gate);
}
