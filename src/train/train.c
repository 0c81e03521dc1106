// train.c — the trainer: parameters, the training forward pass (activations
// kept), its backward pass and cross-entropy.
//
// Shapes: N = B*T rows, d = n_embd, qd = H*hd, kvd = Hk*hd, f = n_ff, V = n_vocab.
// Every op is the shared one from model/ops.h with its backward beside it;
// the products go through rm_gemm (tensor/gemm.h), which reads either operand
// transposed in place:
//   y[N,out]   (+)= x[N,in] W[out,in]^T  (W not f32: rm_matmul, the serving kernels)
//   dx[N,in]   += dy[N,out] W[out,in]     (quantized W dequantized by blocks of rows)
//   dW[out,in] += dy^T x
#include "train/train_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "lora/adapter.h"
#include "model/ops.h"
#include "tensor/gemm.h"

void rm_train_default_params(rm_train_params *p) {
    *p = (rm_train_params){.batch = 4,
                           .seq = 64,
                           .accum = 1,
                           .steps = 100,
                           .warmup = 10,
                           .lr = 1e-3f,
                           .min_lr_ratio = 0.1f,
                           .beta1 = 0.9f,
                           .beta2 = 0.999f,
                           .eps = 1e-8f,
                           .weight_decay = 0.0f,
                           .clip = 1.0f,
                           .seed = 1,
                           .threads = 0,
                           .lora_dropout = 0.0f};
}

// ---------------------------------------------------------------- RNG (splitmix64)

// ---------------------------------------------------------------- scratch and products

float *train_scratch(rm_trainer *t, int i, size_t floats) {
    if (floats > t->sc_cap[i]) {
        free(t->sc[i]);
        t->sc[i] = malloc(floats * sizeof(float));
        t->sc_cap[i] = t->sc[i] ? floats : 0;
    }
    return t->sc[i];
}

static rm_tensor f32_tensor(const float *w, int64_t out, int64_t in) {
    return (rm_tensor){.type = RM_TYPE_F32, .n_dims = 2, .ne = {in, out, 1, 1}, .data = (void *)w};
}

// dx[N,in] += dy[N,out] W[out,in] for any weight type: f32 directly, others
// dequantized a block of rows at a time into scratch 1.
static int backward_through_weight(rm_trainer *t, const rm_tensor *w, const float *dy, float *dx, int N) {
    int in = (int)w->ne[0], out = (int)w->ne[1];
    if (w->type == RM_TYPE_F32) {
        rm_gemm_nn(t->tp, dx, in, dy, out, w->data, in, N, in, out);
        return RM_OK;
    }
    const int KB = 256; // rows per block: fewer passes over dx, block still cache-sized
    float *rows = train_scratch(t, 1, (size_t)KB * in);
    if (!rows) return rm_errorf(RM_ENOMEM, "train: out of memory");
    size_t rb = rm_row_size(w->type, in);
    for (int k0 = 0; k0 < out; k0 += KB) {
        int kn = out - k0 < KB ? out - k0 : KB;
        for (int k = 0; k < kn; k++)
            rm_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)(k0 + k) * rb, rows + (size_t)k * in, in);
        rm_gemm_nn(t->tp, dx, in, dy + k0, out, rows, in, N, in, kn);
    }
    return RM_OK;
}

// ---------------------------------------------------------------- linear (+ LoRA), forward / backward

// The router state of linear L, or NULL (not in router mode, or the classifier).
static const train_router *router_of(const rm_trainer *t, const rm_tlinear *L) {
    if (!t->rt || L < t->lin || L >= t->lin + (size_t)t->L * RM_LIN_COUNT) return NULL;
    const train_router *R = &t->rt[L - t->lin];
    return R->n_exp ? R : NULL;
}

// y[N,out] (+)= s (x A^T) B^T;  hs[N,r] = s x A^T  (tp NULL: on this thread).
// x A^T is r dot products a row (rm_gemm's dots), hs B^T a tile product with K = r.
static void lora_forward(rm_threadpool *tp, const float *A, const float *B, int r, float scale, int in, int out,
                         const float *x, float *y, float *hs, int N, int acc) {
    rm_gemm(tp, hs, r, rm_gmat_n(x, in), rm_gmat_t(A, in), N, r, in, 0);
    for (size_t i = 0; i < (size_t)N * r; i++) hs[i] *= scale;
    rm_gemm(tp, y, out, rm_gmat_n(hs, r), rm_gmat_t(B, r), N, out, r, acc ? RM_GEMM_ACC : 0);
}

// The pool for one expert's product over m gathered rows: none when it is
// small (waking the workers for it would cost more than it saves).
static rm_threadpool *rows_pool(const rm_trainer *t, int m, int r, int in, int out) {
    return (double)m * r * (in + out) < (double)(1 << 20) ? NULL : t->tp;
}

// E of slot j, row n (E is [K][N,out])
#define SLOT_ROW(E, j, n, N, out) ((E) + ((size_t)(j) * (N) + (size_t)(n)) * (out))

// RouterLoRA, after y = x W^T, for rows that each use their own experts
// (t->uses): E_j = s_e B_e A_e x for the expert e in slot j, each expert's
// product over the rows that use it only (gathered, then scattered into its
// slots); q = s_r B_r A_r x (hs = s_r x A_r^T kept); alpha = softmax over the
// row's filled slots of q.E_j / sqrt(out); y += sum_j alpha_j E_j. An expert
// used by every row (the fixed set) runs on x itself.
static void router_forward(rm_trainer *t, const rm_tlinear *L, const train_router *R, const float *x, float *y,
                           float *hs, int N) {
    const train_uses *u = &t->uses;
    int K = t->router_k, in = L->in, out = L->out;
    size_t row_in = (size_t)in * sizeof(float), row_out = (size_t)out * sizeof(float);
    for (int e = 0; e < R->n_exp; e++) {
        const train_expert *ex = &R->exp[e];
        int u0 = u->off[e], m = u->off[e + 1] - u0;
        if (m && ex->r) {
            const float *xs = x;
            if (m < N) {
                for (int j = 0; j < m; j++) memcpy(t->gx + (size_t)j * in, x + (size_t)u->row[u0 + j] * in, row_in);
                xs = t->gx;
            }
            rm_threadpool *tp = m < N ? rows_pool(t, m, ex->r, in, out) : t->tp;
            lora_forward(tp, ex->A, ex->B, ex->r, ex->scale, in, out, xs, t->gy, t->rh, m, 0);
        }
        for (int j = 0; j < m; j++) {
            float *E = SLOT_ROW(R->E, u->at[u0 + j], u->row[u0 + j], N, out);
            if (ex->r) memcpy(E, t->gy + (size_t)j * out, row_out);
            else memset(E, 0, row_out);
        }
    }
    if (L->rank) lora_forward(t->tp, L->A, L->B, L->rank, L->scale, in, out, x, R->q, hs, N, 0);
    else memset(R->q, 0, (size_t)N * row_out);
    float inv = 1.0f / sqrtf((float)out);
    for (int n = 0; n < N; n++) {
        const int32_t *sl = u->slot + (size_t)n * K;
        float *al = R->alpha + (size_t)n * K, mx = -INFINITY, sum = 0.0f;
        for (int j = 0; j < K; j++) {
            al[j] = sl[j] < 0 ? 0.0f : rm_dot_f32(R->q + (size_t)n * out, SLOT_ROW(R->E, j, n, N, out), out) * inv;
            if (sl[j] >= 0) mx = al[j] > mx ? al[j] : mx;
        }
        for (int j = 0; j < K; j++)
            if (sl[j] >= 0) sum += (al[j] = expf(al[j] - mx));
        for (int j = 0; j < K; j++) {
            if (sl[j] < 0) continue;
            al[j] /= sum;
            rm_axpy_f32(y + (size_t)n * out, al[j], SLOT_ROW(R->E, j, n, N, out), out);
        }
    }
}

// y[N,out] (+)= x W^T + s (x A^T) B^T;  hs[N,r] = s x A^T is kept for backward
// (router linears: router_forward instead of the LoRA term)
static void linear_forward(rm_trainer *t, const rm_tlinear *L, const float *x, float *y, float *hs, int N, int acc) {
    if (L->w->type == RM_TYPE_F32)
        rm_gemm(t->tp, y, L->out, rm_gmat_n(x, L->in), rm_gmat_t(L->w->data, L->in), N, L->out, L->in,
                acc ? RM_GEMM_ACC : 0);
    else rm_matmul(t->tp, L->w, x, L->in, y, L->out, N, acc);
    const train_router *R = router_of(t, L);
    if (R) router_forward(t, L, R, x, y, hs, N);
    else if (train_gate_of(t, L)) train_gate_forward(t, L, x, y, N);
    else if (L->rank) lora_forward(t->tp, L->A, L->B, L->rank, L->scale, L->in, L->out, x, y, hs, N, 1);
}

// Backward of y += s (x A^T) B^T for dy[N,out]: dB += dy^T hs;  dA += s (dy B)^T x;
// dx += s (dy B) A. dA, dB, dx may be NULL (frozen: only dx). The products
// with r columns are made r rows tall or r dot products a row: B^T [r,out]
// and dB^T [r,out] in scratch 0, dhs = s dy B [N,r] in scratch 2; on tp.
static int lora_backward(rm_trainer *t, rm_threadpool *tp, const float *A, const float *B, float *dA, float *dB, int r,
                         float scale, int in, int out, const float *x, const float *hs, const float *dy, float *dx,
                         int N) {
    float *Bt = train_scratch(t, 0, 2 * (size_t)r * out), *dBt = Bt + (size_t)r * out;
    float *dhs = train_scratch(t, 2, (size_t)N * r);
    if (!Bt || !dhs) return rm_errorf(RM_ENOMEM, "train: out of memory");
    if (dB) { // dB^T = hs^T dy, then added transposed
        rm_gemm(tp, dBt, out, rm_gmat_t(hs, r), rm_gmat_n(dy, out), r, out, N, 0);
        for (int o = 0; o < out; o++)
            for (int j = 0; j < r; j++) dB[(size_t)o * r + j] += dBt[(size_t)j * out + o];
    }
    for (int o = 0; o < out; o++)
        for (int j = 0; j < r; j++) Bt[(size_t)j * out + o] = B[(size_t)o * r + j];
    rm_gemm(tp, dhs, r, rm_gmat_n(dy, out), rm_gmat_t(Bt, out), N, r, out, 0);
    for (size_t i = 0; i < (size_t)N * r; i++) dhs[i] *= scale;
    if (dA) rm_gemm(tp, dA, in, rm_gmat_t(dhs, r), rm_gmat_n(x, in), r, in, N, RM_GEMM_ACC);
    if (dx) rm_gemm_nn(tp, dx, in, dhs, r, A, in, N, in, r);
    return RM_OK;
}

// Backward of router_forward for g = dy[N,out], over each row's filled slots j:
//   dalpha_j = g.E_j;  dz_j = alpha_j (dalpha_j - sum_i alpha_i dalpha_i);
//   dq = sum_j dz_j E_j / sqrt(out) -> the router's A_r, B_r and x;
//   dE_j = alpha_j g + dz_j q / sqrt(out) -> x through the frozen expert in
//   slot j, for each expert over the rows that use it (dx of those rows
//   gathered in t->gy and added back; all rows: dx itself).
// dq in scratch 3, the rows' dE and dz [N,K] in scratch 4.
static int router_backward(rm_trainer *t, const rm_tlinear *L, const train_router *R, const float *x, const float *hs,
                           const float *g, float *dx, int N) {
    const train_uses *u = &t->uses;
    int K = t->router_k, in = L->in, out = L->out, rc;
    size_t per = (size_t)N * out;
    float inv = 1.0f / sqrtf((float)out);
    float *dq = train_scratch(t, 3, per), *dE = train_scratch(t, 4, per + (size_t)N * K);
    if (!dq || !dE) return rm_errorf(RM_ENOMEM, "train: out of memory");
    float *dz = dE + per;
    memset(dq, 0, per * sizeof(float));
    for (int n = 0; n < N; n++) {
        const int32_t *sl = u->slot + (size_t)n * K;
        const float *al = R->alpha + (size_t)n * K, *gn = g + (size_t)n * out;
        float *dzn = dz + (size_t)n * K, s = 0.0f;
        for (int j = 0; j < K; j++)
            if (sl[j] >= 0) s += al[j] * (dzn[j] = rm_dot_f32(gn, SLOT_ROW(R->E, j, n, N, out), out));
        for (int j = 0; j < K; j++) {
            if (sl[j] < 0) continue;
            dzn[j] = al[j] * (dzn[j] - s);
            rm_axpy_f32(dq + (size_t)n * out, dzn[j] * inv, SLOT_ROW(R->E, j, n, N, out), out);
        }
    }
    if (L->rank &&
        (rc = lora_backward(t, t->tp, L->A, L->B, L->dA, L->dB, L->rank, L->scale, in, out, x, hs, dq, dx, N)))
        return rc;
    for (int e = 0; dx && e < R->n_exp; e++) {
        const train_expert *ex = &R->exp[e];
        int u0 = u->off[e], m = u->off[e + 1] - u0;
        if (!ex->r || !m) continue;
        for (int j = 0; j < m; j++) {
            int n = u->row[u0 + j], i = u->at[u0 + j];
            float *d = dE + (size_t)j * out;
            const float *gn = g + (size_t)n * out, *qn = R->q + (size_t)n * out;
            float a = R->alpha[(size_t)n * K + i], c = dz[(size_t)n * K + i] * inv;
            for (int o = 0; o < out; o++) d[o] = a * gn[o] + c * qn[o];
        }
        if (m == N) { // every row: straight into dx
            if ((rc = lora_backward(t, t->tp, ex->A, ex->B, NULL, NULL, ex->r, ex->scale, in, out, x, NULL, dE, dx, N)))
                return rc;
            continue;
        }
        memset(t->gy, 0, (size_t)m * in * sizeof(float));
        rm_threadpool *tp = rows_pool(t, m, ex->r, in, out);
        if ((rc = lora_backward(t, tp, ex->A, ex->B, NULL, NULL, ex->r, ex->scale, in, out, NULL, NULL, dE, t->gy, m)))
            return rc;
        for (int j = 0; j < m; j++) rm_axpy_f32(dx + (size_t)u->row[u0 + j] * in, 1.0f, t->gy + (size_t)j * in, in);
    }
    return RM_OK;
}

// dW += dy^T x;  dx += dy W;  then the LoRA (or router) term's backward
static int linear_backward(rm_trainer *t, const rm_tlinear *L, const float *x, const float *hs, const float *dy,
                           float *dx, int N) {
    int in = L->in, out = L->out, rc;
    if (L->dw) rm_gemm(t->tp, L->dw, in, rm_gmat_t(dy, out), rm_gmat_n(x, in), out, in, N, RM_GEMM_ACC);
    if (dx && (rc = backward_through_weight(t, L->w, dy, dx, N))) return rc;
    const train_router *R = router_of(t, L);
    if (R) return router_backward(t, L, R, x, hs, dy, dx, N);
    if (train_gate_of(t, L)) return train_gate_backward(t, L, x, dy, dx, N);
    if (!L->rank) return RM_OK;
    return lora_backward(t, t->tp, L->A, L->B, L->dA, L->dB, L->rank, L->scale, in, out, x, hs, dy, dx, N);
}

// ---------------------------------------------------------------- embedding, cross-entropy

// x[N,d] = E[token[r], :]
static void embedding_forward(const rm_tensor *E, const int32_t *token, float *x, int N, int d) {
    size_t rb = rm_row_size(E->type, d);
    for (int r = 0; r < N; r++)
        rm_dequantize_row(E->type, (const uint8_t *)E->data + (size_t)token[r] * rb, x + (size_t)r * d, d);
}

// dE[token[r], :] += dx[r, :]
static void embedding_backward(float *dE, const int32_t *token, const float *dx, int N, int d) {
    for (int r = 0; r < N; r++)
        for (int i = 0; i < d; i++) dE[(size_t)token[r] * d + i] += dx[(size_t)r * d + i];
}

// Returns sum over target rows of -log softmax(logits[r])[target[r]]; with
// backward, logits[N,V] become d(loss/norm)/d(logits) (zero for rows without target).
static double cross_entropy_forward_backward(float *logits, const int32_t *target, int N, int V, float norm,
                                             int backward) {
    double loss = 0.0;
    for (int r = 0; r < N; r++) {
        float *z = logits + (size_t)r * V;
        if (target[r] < 0) {
            if (backward) memset(z, 0, (size_t)V * sizeof(float));
            continue;
        }
        float mx = -INFINITY;
        for (int i = 0; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        double sum = 0.0;
        for (int i = 0; i < V; i++) sum += exp((double)(z[i] - mx));
        loss += log(sum) + mx - z[target[r]];
        if (!backward) continue;
        float inv = (float)(1.0 / sum) / norm;
        for (int i = 0; i < V; i++) z[i] = expf(z[i] - mx) * inv;
        z[target[r]] -= 1.0f / norm;
    }
    return loss;
}

// ---------------------------------------------------------------- parameters

static int add_param(rm_trainer *t, const char *name, float *w, size_t n, int decay, int own_w, float **grad) {
    if (t->n_params == t->cap_params) {
        int cap = t->cap_params ? 2 * t->cap_params : 64;
        rm_tparam *np = realloc(t->params, (size_t)cap * sizeof *np);
        if (!np) return rm_errorf(RM_ENOMEM, "train: out of memory");
        t->params = np;
        t->cap_params = cap;
    }
    rm_tparam *p = &t->params[t->n_params];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->w = w;
    p->n = n;
    p->decay = decay;
    p->own_w = own_w;
    p->g = calloc(n, sizeof(float));
    p->m = calloc(n, sizeof(float));
    p->v = calloc(n, sizeof(float));
    if (!p->g || !p->m || !p->v) {
        free(p->g);
        free(p->m);
        free(p->v);
        return rm_errorf(RM_ENOMEM, "train: out of memory for %s (%zu floats)", name, n);
    }
    t->n_params++;
    if (grad) *grad = p->g;
    return RM_OK;
}

int rm_trainer_create(rm_trainer **out, rm_llama *base, const rm_train_params *p) {
    *out = NULL;
    const rm_llama_hparams *hp = &base->hp;
    if (p->batch <= 0 || p->seq <= 0 || p->accum <= 0)
        return rm_errorf(RM_EINVAL, "train: batch %d, seq %d and accum %d must be positive", p->batch, p->seq,
                         p->accum);
    if (p->seq > 8192) return rm_errorf(RM_EINVAL, "train: seq %d exceeds 8192", p->seq);
    rm_trainer *t = calloc(1, sizeof *t);
    if (!t) return rm_errorf(RM_ENOMEM, "out of memory");
    t->m = base;
    t->p = *p;
    t->rng = p->seed;
    t->drop_rng = p->seed ^ 0x64726f706f757421ull; // a stream of its own: the data order does not depend on the draws
    t->L = hp->n_layer;
    t->lin = calloc((size_t)hp->n_layer * RM_LIN_COUNT, sizeof *t->lin);
    t->d_attn_norm = calloc((size_t)hp->n_layer, sizeof(float *));
    t->d_ffn_norm = calloc((size_t)hp->n_layer, sizeof(float *));
    t->d_bias = calloc((size_t)hp->n_layer * 3, sizeof(float *));
    if (!t->lin || !t->d_attn_norm || !t->d_ffn_norm || !t->d_bias) {
        rm_trainer_free(t);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    if (p->threads != 1) {
        t->tp = rm_threadpool_create(p->threads);
        if (!t->tp) {
            rm_trainer_free(t);
            return rm_errorf(RM_ENOMEM, "train: cannot start the thread pool");
        }
    }
    for (int l = 0; l < t->L; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            rm_tlinear *L = &t->lin[l * RM_LIN_COUNT + w];
            L->w = &base->layers[l].w[w];
            L->in = (int)L->w->ne[0];
            L->out = (int)L->w->ne[1];
        }
    t->out.w = &base->output;
    t->out.in = hp->n_embd;
    t->out.out = hp->n_vocab;
    *out = t;
    return RM_OK;
}

// Replaces the base's view *w by a trained F32 copy (the original is kept to restore on free).
static int make_trainable(rm_trainer *t, rm_tensor *w, const char *name, float **grad) {
    int64_t in = w->ne[0], out = w->ne[1];
    float *f = malloc((size_t)in * out * sizeof(float));
    if (!f) return rm_errorf(RM_ENOMEM, "train: out of memory for %s", name);
    size_t rb = rm_row_size(w->type, in);
    for (int64_t o = 0; o < out; o++) rm_dequantize_row(w->type, (const uint8_t *)w->data + o * rb, f + o * in, in);
    int rc = add_param(t, name, f, (size_t)in * out, 1, 1, grad);
    if (rc) {
        free(f);
        return rc;
    }
    t->saved[t->n_saved].where = w;
    t->saved[t->n_saved++].orig = *w;
    *w = f32_tensor(f, out, in);
    return RM_OK;
}

int rm_trainer_full(rm_trainer *t) {
    if (t->full) return RM_OK;
    rm_llama *m = t->m;
    const rm_llama_hparams *hp = &m->hp;
    int tied = m->output.data == m->tok_embd.data;
    t->saved = calloc((size_t)hp->n_layer * RM_LIN_COUNT + 2, sizeof *t->saved);
    if (!t->saved) return rm_errorf(RM_ENOMEM, "out of memory");
    char name[96];
    int rc;
    if ((rc = make_trainable(t, &m->tok_embd, "token_embd.weight", &t->d_tok_embd))) return rc;
    t->tied = tied;
    if (tied) {
        m->output = m->tok_embd;
        t->out.dw = t->d_tok_embd;
    } else if ((rc = make_trainable(t, &m->output, "output.weight", &t->out.dw))) {
        return rc;
    }
    if ((rc = add_param(t, "output_norm.weight", m->output_norm, (size_t)hp->n_embd, 0, 0, &t->d_output_norm)))
        return rc;
    for (int l = 0; l < hp->n_layer; l++) {
        rm_llama_layer *Ly = &m->layers[l];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((rc = add_param(t, name, Ly->attn_norm, (size_t)hp->n_embd, 0, 0, &t->d_attn_norm[l]))) return rc;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((rc = add_param(t, name, Ly->ffn_norm, (size_t)hp->n_embd, 0, 0, &t->d_ffn_norm[l]))) return rc;
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, rm_linear_gguf[w]);
            if ((rc = make_trainable(t, &Ly->w[w], name, &t->lin[l * RM_LIN_COUNT + w].dw))) return rc;
        }
        float *bias[3] = {Ly->bq, Ly->bk, Ly->bv};
        for (int w = 0; w < 3; w++) {
            if (!bias[w]) continue;
            snprintf(name, sizeof name, "blk.%d.%s.bias", l, rm_linear_gguf[w]);
            if ((rc = add_param(t, name, bias[w], (size_t)t->lin[l * RM_LIN_COUNT + w].out, 0, 0,
                                &t->d_bias[l * 3 + w])))
                return rc;
        }
    }
    t->full = 1;
    return RM_OK;
}

// Allocates and registers the LoRA pair of linear L (layer l, which w): A ~
// U(-1/sqrt(in), 1/sqrt(in)), B = 0; tensors named blk.l.<linear>.<kind>_a/_b.
static int add_pair(rm_trainer *t, rm_tlinear *L, int l, int w, int rank, float scale, const char *kind) {
    L->rank = rank;
    L->scale = scale;
    L->A = malloc((size_t)rank * L->in * sizeof(float));
    L->B = calloc((size_t)L->out * rank, sizeof(float));
    if (!L->A || !L->B) {
        free(L->A);
        free(L->B);
        L->A = L->B = NULL;
        L->rank = 0;
        return rm_errorf(RM_ENOMEM, "%s: out of memory", kind);
    }
    float a = 1.0f / sqrtf((float)L->in);
    for (size_t i = 0; i < (size_t)rank * L->in; i++) L->A[i] = (2.0f * rm_rng_uniform(&t->rng) - 1.0f) * a;
    char name[96];
    int rc;
    snprintf(name, sizeof name, "blk.%d.%s.%s_a", l, rm_linear_gguf[w], kind);
    if ((rc = add_param(t, name, L->A, (size_t)rank * L->in, 0, 1, &L->dA))) {
        free(L->B);
        L->B = NULL;
        return rc;
    }
    snprintf(name, sizeof name, "blk.%d.%s.%s_b", l, rm_linear_gguf[w], kind);
    return add_param(t, name, L->B, (size_t)L->out * rank, 0, 1, &L->dB);
}

int train_add_param(rm_trainer *t, const char *name, float *w, size_t n, float **grad) {
    return add_param(t, name, w, n, 0, 0, grad);
}

int rm_trainer_add_lora(rm_trainer *t, unsigned targets, int rank, float alpha, int rslora) {
    if (rank <= 0 || rank > 4096) return rm_errorf(RM_EINVAL, "lora: rank %d out of range", rank);
    if (t->lora_rank || t->gate) return rm_errorf(RM_EINVAL, "lora: adapters were already added");
    t->lora_rank = rank;
    t->lora_targets = targets;
    t->lora_alpha = alpha;
    t->lora_rslora = rslora;
    float scale = rslora ? alpha / sqrtf((float)rank) : alpha / (float)rank;
    for (int l = 0; l < t->L; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            if (!(targets & (1u << w))) continue;
            int rc = add_pair(t, &t->lin[l * RM_LIN_COUNT + w], l, w, rank, scale, "lora");
            if (rc) return rc;
        }
    return RM_OK;
}

int rm_trainer_add_router(rm_trainer *t, int k, rm_lora *const *experts, int rank, float alpha) {
    return rm_trainer_add_router_table(t, k, experts, k, rank, alpha);
}

int rm_trainer_add_router_table(rm_trainer *t, int n, rm_lora *const *experts, int k, int rank, float alpha) {
    if (rank <= 0 || rank > 4096) return rm_errorf(RM_EINVAL, "router: rank %d out of range", rank);
    if (k < 1 || k > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "router: %d experts per row (1..%d)", k, RM_PLAN_MAX);
    if (n < k || n > RM_TRAIN_EXPERTS_MAX)
        return rm_errorf(RM_EINVAL, "router: a table of %d experts for %d a row (%d..%d)", n, k, k,
                         RM_TRAIN_EXPERTS_MAX);
    if (t->lora_rank || t->gate) return rm_errorf(RM_EINVAL, "router: adapters were already added");
    for (int i = 0; i < n; i++)
        if (experts[i]->base != t->m)
            return rm_errorf(RM_EMISMATCH, "router: expert %s is not bound to the trainer's base", experts[i]->path);
    unsigned targets = 0;
    for (int i = 0; i < n; i++) targets |= rm_lora_targets(experts[i]);
    if (!targets) return rm_errorf(RM_EINVAL, "router: the experts adapt no linear");
    t->rt = calloc((size_t)t->L * RM_LIN_COUNT, sizeof *t->rt);
    t->experts = malloc((size_t)n * sizeof *t->experts);
    t->uses.off = malloc(((size_t)n + 1) * sizeof *t->uses.off);
    if (!t->rt || !t->experts || !t->uses.off) return rm_errorf(RM_ENOMEM, "router: out of memory");
    t->lora_rank = rank;
    t->lora_targets = targets;
    t->lora_alpha = alpha;
    t->router_k = k;
    t->n_experts = n;
    for (int i = 0; i < n; i++) t->experts[i] = experts[i];
    for (int l = 0; l < t->L; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            if (!(targets & (1u << w))) continue;
            rm_tlinear *L = &t->lin[l * RM_LIN_COUNT + w];
            train_router *R = &t->rt[l * RM_LIN_COUNT + w];
            if (!(R->exp = calloc((size_t)n, sizeof *R->exp))) return rm_errorf(RM_ENOMEM, "router: out of memory");
            R->n_exp = n;
            for (int i = 0; i < n; i++) {
                const rm_lora_mod *m = l < experts[i]->n_layer ? &experts[i]->mods[l * RM_LIN_COUNT + w] : NULL;
                if (!m || !m->r) continue;
                train_expert *e = &R->exp[i];
                if (!(e->B = malloc((size_t)m->r * L->out * sizeof(float))))
                    return rm_errorf(RM_ENOMEM, "router: out of memory");
                for (int o = 0; o < L->out; o++) // B[out, r] = Bt[r, out]^T
                    for (int j = 0; j < m->r; j++) e->B[(size_t)o * m->r + j] = m->Bt[(size_t)j * L->out + o];
                e->r = m->r;
                e->scale = m->scale;
                e->A = m->A;
            }
            int rc = add_pair(t, L, l, w, rank, alpha / (float)rank, "router");
            if (rc) return rc;
        }
    return RM_OK;
}

void rm_trainer_free(rm_trainer *t) {
    if (!t) return;
    for (int i = t->n_saved - 1; i >= 0; i--) *t->saved[i].where = t->saved[i].orig;
    if (t->tied) t->m->output = t->m->tok_embd; // restore the alias
    for (int i = 0; i < t->n_params; i++) {
        if (t->params[i].own_w) free(t->params[i].w);
        free(t->params[i].g);
        free(t->params[i].m);
        free(t->params[i].v);
    }
    free(t->params);
    free(t->saved);
    free(t->lin);
    free(t->d_attn_norm);
    free(t->d_ffn_norm);
    free(t->d_bias);
    free(t->act);
    free(t->la);
    free(t->order);
    for (int i = 0; i < 5; i++) free(t->sc[i]);
    for (int i = 0; t->rt && i < t->L * RM_LIN_COUNT; i++) {
        for (int e = 0; e < t->rt[i].n_exp; e++) free(t->rt[i].exp[e].B);
        free(t->rt[i].exp);
    }
    free(t->rt);
    free(t->experts);
    free(t->uses.slot);
    free(t->uses.off);
    free(t->uses.row);
    free(t->uses.at);
    train_gate_free(t);
    if (t->tp) rm_threadpool_free(t->tp);
    free(t);
}

rm_tparam *rm_trainer_params(rm_trainer *t, int *n) {
    *n = t->n_params;
    return t->params;
}

size_t rm_trainer_n_trainable(const rm_trainer *t) {
    size_t n = 0;
    for (int i = 0; i < t->n_params; i++) n += t->params[i].n;
    return n;
}

rm_tlinear *rm_trainer_linear(rm_trainer *t, int layer, rm_linear_id which) {
    return &t->lin[layer * RM_LIN_COUNT + which];
}
rm_threadpool *rm_trainer_pool(rm_trainer *t) { return t->tp; }
int rm_trainer_step_count(const rm_trainer *t) { return t->step; }
const rm_train_params *rm_trainer_get_params(const rm_trainer *t) { return &t->p; }

void rm_trainer_zero_grad(rm_trainer *t) {
    for (int i = 0; i < t->n_params; i++) memset(t->params[i].g, 0, t->params[i].n * sizeof(float));
}

// ---------------------------------------------------------------- activations

// Carves the activation buffer for N = B*T rows (allocated once, grown on demand).
static int acts_alloc(rm_trainer *t, int B, int T) {
    const rm_llama_hparams *hp = &t->m->hp;
    size_t N = (size_t)B * T, d = hp->n_embd, qd = (size_t)hp->n_head * hp->head_dim;
    size_t kvd = (size_t)hp->n_head_kv * hp->head_dim, f = hp->n_ff, r = (size_t)t->lora_rank;
    size_t att = (size_t)B * hp->n_head * T * T;
    size_t nlora = 0, router = 0, k = (size_t)t->router_k, rh = 0, wide = 0;
    for (int w = 0; w < RM_LIN_COUNT; w++) {
        nlora += (t->lora_targets >> w) & 1;
        if (!t->rt || !t->rt[w].n_exp) continue;
        router += k * t->lin[w].out + t->lin[w].out + k; // E, q, alpha
        wide = (size_t)t->lin[w].out > wide ? (size_t)t->lin[w].out : wide;
        wide = (size_t)t->lin[w].in > wide ? (size_t)t->lin[w].in : wide;
    }
    for (int i = 0; t->rt && i < t->L * RM_LIN_COUNT; i++)
        for (int e = 0; e < t->rt[i].n_exp; e++) rh = (size_t)t->rt[i].exp[e].r > rh ? (size_t)t->rt[i].exp[e].r : rh;
    size_t per_layer = N * (4 * d + 2 * qd + 2 * kvd + 3 * f + nlora * r + router) + att;
    size_t total = (size_t)t->L * per_layer +
                   N * (3 * d + (size_t)hp->n_vocab + (size_t)hp->rope_dim + r + rh + 2 * wide) +
                   N * (3 * d + 2 * qd + 2 * kvd + 3 * f);
    if (total > t->act_cap || t->act_N != N || t->act_B != B) {
        free(t->act);
        t->act = malloc(total * sizeof(float));
        t->act_cap = t->act ? total : 0;
        if (!t->act) return rm_errorf(RM_ENOMEM, "train: cannot allocate %zu MB of activations", total * 4 >> 20);
    }
    t->act_N = N;
    t->act_B = B;
    float *p = t->act;
#define TAKE(ptr, count)                                                                                               \
    do {                                                                                                               \
        (ptr) = p;                                                                                                     \
        p += (count);                                                                                                  \
    } while (0)
    for (int l = 0; l < t->L; l++) {
        train_layer_acts *a = &t->la[l];
        TAKE(a->res, N * d);
        TAKE(a->xb1, N * d);
        TAKE(a->q, N * qd);
        TAKE(a->k, N * kvd);
        TAKE(a->v, N * kvd);
        TAKE(a->att, att);
        TAKE(a->ao, N * qd);
        TAKE(a->xmid, N * d);
        TAKE(a->xb2, N * d);
        TAKE(a->g, N * f);
        TAKE(a->u, N * f);
        TAKE(a->h, N * f);
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            a->hs[w] = NULL;
            if ((t->lora_targets >> w) & 1) TAKE(a->hs[w], N * r);
            train_router *R = t->rt ? &t->rt[l * RM_LIN_COUNT + w] : NULL;
            if (R && R->n_exp) {
                size_t out = (size_t)t->lin[w].out;
                TAKE(R->E, N * k * out);
                TAKE(R->q, N * out);
                TAKE(R->alpha, N * k);
            }
        }
    }
    TAKE(t->res_final, N * d);
    TAKE(t->xf, N * d);
    TAKE(t->logits, N * (size_t)hp->n_vocab);
    TAKE(t->cs, N * (size_t)hp->rope_dim);
    TAKE(t->hs_out, N * r);
    TAKE(t->rh, N * rh);
    TAKE(t->gx, N * wide);
    TAKE(t->gy, N * wide);
    TAKE(t->dres, N * d);
    TAKE(t->dxb, N * d);
    TAKE(t->dxf, N * d);
    TAKE(t->dq, N * qd);
    TAKE(t->dao, N * qd);
    TAKE(t->dk, N * kvd);
    TAKE(t->dv, N * kvd);
    TAKE(t->dg, N * f);
    TAKE(t->du, N * f);
    TAKE(t->dh, N * f);
#undef TAKE
    return RM_OK;
}

// ---------------------------------------------------------------- the model, forward and backward

static int model_forward(rm_trainer *t, const rm_tbatch *b) {
    const rm_llama *m = t->m;
    const rm_llama_hparams *hp = &m->hp;
    int N = b->B * b->T, d = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, hd = hp->head_dim, f = hp->n_ff;
    size_t qd = (size_t)H * hd, kvd = (size_t)Hk * hd;
    embedding_forward(&m->tok_embd, b->token, t->la[0].res, N, d);
    for (int r = 0; r < N; r++) rm_rope_angles(hp, b->pos[r], t->cs + (size_t)r * hp->rope_dim);
    for (int l = 0; l < t->L; l++) {
        const rm_llama_layer *Ly = &m->layers[l];
        train_layer_acts *a = &t->la[l];
        const rm_tlinear *L = &t->lin[l * RM_LIN_COUNT];
        float *next = l + 1 < t->L ? t->la[l + 1].res : t->res_final;
        rm_rmsnorm_forward(a->xb1, a->res, Ly->attn_norm, N, d, hp->rms_eps);
        linear_forward(t, &L[RM_LIN_Q], a->xb1, a->q, a->hs[RM_LIN_Q], N, 0);
        linear_forward(t, &L[RM_LIN_K], a->xb1, a->k, a->hs[RM_LIN_K], N, 0);
        linear_forward(t, &L[RM_LIN_V], a->xb1, a->v, a->hs[RM_LIN_V], N, 0);
        if (Ly->bq) rm_bias_add(a->q, Ly->bq, N, (int)qd);
        if (Ly->bk) rm_bias_add(a->k, Ly->bk, N, (int)kvd);
        if (Ly->bv) rm_bias_add(a->v, Ly->bv, N, (int)kvd);
        for (int r = 0; r < N; r++) {
            rm_rope_forward(hp, a->q + r * qd, H, t->cs + (size_t)r * hp->rope_dim);
            rm_rope_forward(hp, a->k + r * kvd, Hk, t->cs + (size_t)r * hp->rope_dim);
        }
        int rc = rm_attention_forward(t->tp, a->ao, a->att, a->q, a->k, a->v, b->start, b->B, b->T, H, Hk, hd);
        if (rc) return rc;
        memcpy(a->xmid, a->res, (size_t)N * d * sizeof(float));
        linear_forward(t, &L[RM_LIN_O], a->ao, a->xmid, a->hs[RM_LIN_O], N, 1);
        rm_rmsnorm_forward(a->xb2, a->xmid, Ly->ffn_norm, N, d, hp->rms_eps);
        linear_forward(t, &L[RM_LIN_GATE], a->xb2, a->g, a->hs[RM_LIN_GATE], N, 0);
        linear_forward(t, &L[RM_LIN_UP], a->xb2, a->u, a->hs[RM_LIN_UP], N, 0);
        rm_swiglu_forward(a->h, a->g, a->u, (size_t)N * f);
        memcpy(next, a->xmid, (size_t)N * d * sizeof(float));
        linear_forward(t, &L[RM_LIN_DOWN], a->h, next, a->hs[RM_LIN_DOWN], N, 1);
    }
    rm_rmsnorm_forward(t->xf, t->res_final, m->output_norm, N, d, hp->rms_eps);
    linear_forward(t, &t->out, t->xf, t->logits, t->hs_out, N, 0);
    return RM_OK;
}

// From d(loss)/d(logits) in t->logits back to every parameter gradient.
static int model_backward(rm_trainer *t, const rm_tbatch *b) {
    const rm_llama *m = t->m;
    const rm_llama_hparams *hp = &m->hp;
    int N = b->B * b->T, d = hp->n_embd, H = hp->n_head, Hk = hp->n_head_kv, hd = hp->head_dim, f = hp->n_ff;
    size_t qd = (size_t)H * hd, kvd = (size_t)Hk * hd, nd = (size_t)N * d * sizeof(float);
    int rc;
    memset(t->dxf, 0, nd);
    if ((rc = linear_backward(t, &t->out, t->xf, t->hs_out, t->logits, t->dxf, N))) return rc;
    memset(t->dres, 0, nd);
    rm_rmsnorm_backward(t->dres, t->d_output_norm, t->dxf, t->res_final, m->output_norm, N, d, hp->rms_eps);
    for (int l = t->L - 1; l >= 0; l--) {
        const rm_llama_layer *Ly = &m->layers[l];
        train_layer_acts *a = &t->la[l];
        const rm_tlinear *L = &t->lin[l * RM_LIN_COUNT];
        // feed-forward block: res[l+1] = xmid + down(swiglu(gate(xb2), up(xb2)))
        memset(t->dh, 0, (size_t)N * f * sizeof(float));
        if ((rc = linear_backward(t, &L[RM_LIN_DOWN], a->h, a->hs[RM_LIN_DOWN], t->dres, t->dh, N))) return rc;
        memset(t->dg, 0, (size_t)N * f * sizeof(float));
        memset(t->du, 0, (size_t)N * f * sizeof(float));
        rm_swiglu_backward(t->dg, t->du, t->dh, a->g, a->u, (size_t)N * f);
        memset(t->dxb, 0, nd);
        if ((rc = linear_backward(t, &L[RM_LIN_GATE], a->xb2, a->hs[RM_LIN_GATE], t->dg, t->dxb, N)) ||
            (rc = linear_backward(t, &L[RM_LIN_UP], a->xb2, a->hs[RM_LIN_UP], t->du, t->dxb, N)))
            return rc;
        rm_rmsnorm_backward(t->dres, t->d_ffn_norm[l], t->dxb, a->xmid, Ly->ffn_norm, N, d, hp->rms_eps);
        // attention block: xmid = res[l] + o(attention(rope(q(xb1)), rope(k(xb1)), v(xb1)))
        memset(t->dao, 0, (size_t)N * qd * sizeof(float));
        if ((rc = linear_backward(t, &L[RM_LIN_O], a->ao, a->hs[RM_LIN_O], t->dres, t->dao, N))) return rc;
        memset(t->dq, 0, (size_t)N * qd * sizeof(float));
        memset(t->dk, 0, (size_t)N * kvd * sizeof(float));
        memset(t->dv, 0, (size_t)N * kvd * sizeof(float));
        if ((rc = rm_attention_backward(t->tp, t->dq, t->dk, t->dv, t->dao, a->att, a->q, a->k, a->v, b->start, b->B,
                                        b->T, H, Hk, hd)))
            return rc;
        for (int r = 0; r < N; r++) {
            rm_rope_backward(hp, t->dq + r * qd, H, t->cs + (size_t)r * hp->rope_dim);
            rm_rope_backward(hp, t->dk + r * kvd, Hk, t->cs + (size_t)r * hp->rope_dim);
        }
        if (t->d_bias[l * 3 + 0]) rm_bias_backward(t->d_bias[l * 3 + 0], t->dq, N, (int)qd);
        if (t->d_bias[l * 3 + 1]) rm_bias_backward(t->d_bias[l * 3 + 1], t->dk, N, (int)kvd);
        if (t->d_bias[l * 3 + 2]) rm_bias_backward(t->d_bias[l * 3 + 2], t->dv, N, (int)kvd);
        memset(t->dxb, 0, nd);
        if ((rc = linear_backward(t, &L[RM_LIN_Q], a->xb1, a->hs[RM_LIN_Q], t->dq, t->dxb, N)) ||
            (rc = linear_backward(t, &L[RM_LIN_K], a->xb1, a->hs[RM_LIN_K], t->dk, t->dxb, N)) ||
            (rc = linear_backward(t, &L[RM_LIN_V], a->xb1, a->hs[RM_LIN_V], t->dv, t->dxb, N)))
            return rc;
        rm_rmsnorm_backward(t->dres, t->d_attn_norm[l], t->dxb, a->res, Ly->attn_norm, N, d, hp->rms_eps);
    }
    if (t->d_tok_embd) embedding_backward(t->d_tok_embd, b->token, t->dres, N, d);
    return RM_OK;
}

// Checks a row's expert set (K slots: table indices or -1, none twice).
static int check_set(const rm_trainer *t, const int32_t *set, int r) {
    for (int j = 0; j < t->router_k; j++) {
        if (set[j] < -1 || set[j] >= t->n_experts)
            return rm_errorf(RM_EINVAL, "train: row %d: expert %d out of range (table of %d)", r, set[j], t->n_experts);
        for (int i = 0; set[j] >= 0 && i < j; i++)
            if (set[i] == set[j]) return rm_errorf(RM_EINVAL, "train: row %d: expert %d twice", r, set[j]);
    }
    return RM_OK;
}

static int check_tbatch(const rm_trainer *t, const rm_tbatch *b) {
    int V = t->m->hp.n_vocab, N = b->B * b->T, rc;
    if (t->rt && !b->exp && t->n_experts != t->router_k)
        return rm_errorf(RM_EINVAL, "train: the batch has no expert sets (the router's table has %d experts, %d a row)",
                         t->n_experts, t->router_k);
    if (t->rt && b->exp && b->K != t->router_k)
        return rm_errorf(RM_EINVAL, "train: the batch has %d expert slots a row, the router %d", b->K, t->router_k);
    for (int r = 0; r < N; r++) {
        if (b->token[r] < 0 || b->token[r] >= V)
            return rm_errorf(RM_EINVAL, "train: row %d: token %d out of range", r, b->token[r]);
        if (b->target[r] >= V) return rm_errorf(RM_EINVAL, "train: row %d: target %d out of range", r, b->target[r]);
        int s = b->start ? b->start[r] : r - r % b->T;
        if (s > r || s < r - r % b->T) return rm_errorf(RM_EINVAL, "train: row %d: bad attention start %d", r, s);
        if (t->rt && b->exp && (rc = check_set(t, b->exp + (size_t)r * b->K, r))) return rc;
    }
    return RM_OK;
}

// t->uses for batch b: every row's slots (b->exp, or the fixed set 0..K-1)
// and, by a counting sort, each expert's rows (increasing) and slots.
static int router_uses(rm_trainer *t, const rm_tbatch *b) {
    train_uses *u = &t->uses;
    int K = t->router_k, n = t->n_experts;
    size_t NK = (size_t)b->B * b->T * K;
    if (NK > u->cap) {
        free(u->slot);
        free(u->row);
        free(u->at);
        u->slot = malloc(NK * sizeof *u->slot);
        u->row = malloc(NK * sizeof *u->row);
        u->at = malloc(NK * sizeof *u->at);
        u->cap = u->slot && u->row && u->at ? NK : 0;
        if (!u->cap) return rm_errorf(RM_ENOMEM, "train: out of memory for the expert sets");
    }
    for (size_t i = 0; i < NK; i++) u->slot[i] = b->exp ? b->exp[i] : (int32_t)(i % K);
    memset(u->off, 0, ((size_t)n + 1) * sizeof *u->off);
    for (size_t i = 0; i < NK; i++)
        if (u->slot[i] >= 0) u->off[u->slot[i] + 1]++;
    for (int e = 0; e < n; e++) u->off[e + 1] += u->off[e];
    for (size_t i = 0; i < NK; i++) { // off[e] moves to the end of e's uses ...
        int e = u->slot[i];
        if (e < 0) continue;
        u->row[u->off[e]] = (int)(i / K);
        u->at[u->off[e]++] = (int)(i % K);
    }
    for (int e = n; e > 0; e--) u->off[e] = u->off[e - 1]; // ... and back to its start
    u->off[0] = 0;
    return RM_OK;
}

int rm_trainer_forward(rm_trainer *t, const rm_tbatch *b, float norm, int backward, double *loss, float *logits_out) {
    int rc = check_tbatch(t, b);
    if (rc) return rc;
    if (!t->la) {
        t->la = calloc((size_t)t->L, sizeof *t->la);
        if (!t->la) return rm_errorf(RM_ENOMEM, "out of memory");
    }
    if ((rc = acts_alloc(t, b->B, b->T))) return rc;
    if (t->rt && (rc = router_uses(t, b))) return rc;
    if (t->gate && (rc = train_gate_begin(t, b))) return rc;
    if ((rc = model_forward(t, b))) return rc;
    int N = b->B * b->T, V = t->m->hp.n_vocab;
    if (logits_out) memcpy(logits_out, t->logits, (size_t)N * V * sizeof(float));
    double l = cross_entropy_forward_backward(t->logits, b->target, N, V, norm, backward);
    *loss = l / norm;
    return backward ? model_backward(t, b) : RM_OK;
}
