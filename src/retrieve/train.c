// train.c — see train.h.
//
// Per step, for the B = T x m items of a batch (m samples of each of T tasks):
//   u_i = x_i W,  z_i = u_i / |u_i|
//   c_k(i) = sum of z_j over task k's items other than i      (the task's key)
//   logit_ik = (base_weight * base_ik + z_i . c_k / |c_k|) / tau
//   loss_i = logsumexp_k logit_ik - logit_i,own(i)
// backpropagated through the normalisations to dW[f] += x_i[f] du_i, then
// sparse Adam on the rows of W that the batch touched. base_ik is the fixed
// score of a base embedder (the lexical part of a hybrid), so the projection
// learns what the base gets wrong.
#include "retrieve/train.h"
#include "base/err.h"
#include "base/progress.h"
#include "base/threadpool.h"
#include "base/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

rm_contrastive_params rm_contrastive_default_params(void) {
    return (rm_contrastive_params){.steps = 300,
                                   .tasks_per_batch = 32,
                                   .per_task = 4,
                                   .temperature = 0.05f,
                                   .lr = 2e-3f,
                                   .weight_decay = 0.0f,
                                   .min_df = 3,
                                   .seed = 1,
                                   .n_threads = 2,
                                   .progress = 0};
}

typedef struct {
    float *w, *m, *v, *w0, *g; // [nb][dim]
    size_t nb;
    int dim;
    const rm_sparse *x; // features per text
    int *items;         // [B] text index per batch item
    int *item_label;    // [B]
    int B;
    float *u, *z, *dz; // [B][dim]
    float *unorm;      // [B]
    uint32_t *touched; // rows touched this step
    size_t n_touched;
    unsigned char *mark;    // [nb]
    unsigned char *frozen;  // [nb] 1: feature too rare to train
    float lr, wd, b1t, b2t; // step size and bias corrections
    const float *base_sim;  // [n_texts][n_texts] or NULL
    float base_weight;
    int n_texts;
    float *csum, *cgrad, *ctmp; // [T][dim] task sums and their gradients, [dim]
} trainer;

// u_i = x_i W for the worker's share of items.
static void fwd_worker(void *ctx, int ith, int nth) {
    trainer *t = ctx;
    long b0, b1;
    rm_split_range(t->B, ith, nth, &b0, &b1);
    for (long b = b0; b < b1; b++) {
        const rm_sparse *x = &t->x[t->items[b]];
        float *u = t->u + (size_t)b * t->dim;
        memset(u, 0, (size_t)t->dim * sizeof *u);
        for (size_t f = 0; f < x->n; f++) {
            const float *row = t->w + (size_t)x->idx[f] * t->dim;
            float xv = x->val[f];
            for (int d = 0; d < t->dim; d++) u[d] += xv * row[d];
        }
    }
}

// dW[f][d] += x_i[f] du_i[d] for the worker's share of columns d (no races).
// t->dz holds du on entry.
static void bwd_worker(void *ctx, int ith, int nth) {
    trainer *t = ctx;
    long d0, d1;
    rm_split_range(t->dim, ith, nth, &d0, &d1);
    for (int b = 0; b < t->B; b++) {
        const rm_sparse *x = &t->x[t->items[b]];
        const float *du = t->dz + (size_t)b * t->dim;
        for (size_t f = 0; f < x->n; f++) {
            if (t->frozen[x->idx[f]]) continue;
            float *g = t->g + (size_t)x->idx[f] * t->dim;
            float xv = x->val[f];
            for (long d = d0; d < d1; d++) g[d] += xv * du[d];
        }
    }
}

// Sparse Adam on the touched rows (the worker's share), then clears their gradient.
static void adam_worker(void *ctx, int ith, int nth) {
    trainer *t = ctx;
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    long r0, r1;
    rm_split_range((long)t->n_touched, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        size_t off = (size_t)t->touched[r] * t->dim;
        float *w = t->w + off, *m = t->m + off, *v = t->v + off, *g = t->g + off;
        const float *w0 = t->w0 ? t->w0 + off : NULL;
        for (int d = 0; d < t->dim; d++) {
            m[d] = b1 * m[d] + (1 - b1) * g[d];
            v[d] = b2 * v[d] + (1 - b2) * g[d] * g[d];
            float step = (m[d] / t->b1t) / (sqrtf(v[d] / t->b2t) + eps);
            if (w0) step += t->wd * (w[d] - w0[d]);
            w[d] -= t->lr * step;
            g[d] = 0;
        }
    }
}

// The base score of item i against the key of batch task k made of the
// task's batch items other than i: cosine of i with the mean of the others,
// from the base embedder's dot products (base_sim over texts).
static double base_score(const trainer *t, int i, int k, const int *first, int m) {
    const float *bs = t->base_sim;
    size_t ti = (size_t)t->items[i], n = (size_t)t->n_texts;
    double num = 0, den = 0;
    for (int a = first[k]; a < first[k] + m; a++) {
        if (a == i) continue;
        num += bs[ti * n + (size_t)t->items[a]];
        for (int c = first[k]; c < first[k] + m; c++)
            if (c != i) den += bs[(size_t)t->items[a] * n + (size_t)t->items[c]];
    }
    return den > 0 ? num / sqrt(den) : 0;
}

// Prototype InfoNCE over the batch (z computed; items grouped by task, T
// groups of m). Fills dz and returns the mean loss.
//   c_k(i) = sum of z_j over task k's items, without i
//   logit_ik = (base_weight * base_ik + z_i . c_k / |c_k|) / tau
//   loss_i = logsumexp_k logit_ik - logit_i,own
static double batch_loss(trainer *t, float tau, int T, int m) {
    int B = t->B, dim = t->dim;
    int first[T + 1];
    for (int k = 0; k <= T; k++) first[k] = k * m;
    float *C = t->csum, *G = t->cgrad, *c = t->ctmp;
    memset(C, 0, (size_t)T * dim * sizeof *C);
    memset(G, 0, (size_t)T * dim * sizeof *G);
    memset(t->dz, 0, (size_t)B * dim * sizeof *t->dz);
    for (int i = 0; i < B; i++)
        for (int d = 0; d < dim; d++) C[(size_t)(i / m) * dim + d] += t->z[(size_t)i * dim + d];
    double loss = 0, logit[T], cosv[T], cn[T];
    for (int i = 0; i < B; i++) {
        const float *zi = t->z + (size_t)i * dim;
        int own = i / m;
        double mx = -1e300;
        for (int k = 0; k < T; k++) {
            const float *Ck = C + (size_t)k * dim;
            double dot = 0, nn = 0;
            for (int d = 0; d < dim; d++) {
                double v = Ck[d] - (k == own ? zi[d] : 0.0f);
                dot += v * zi[d];
                nn += v * v;
            }
            cn[k] = nn > 0 ? sqrt(nn) : 1e-12;
            cosv[k] = dot / cn[k];
            logit[k] = cosv[k];
            if (t->base_sim) logit[k] += t->base_weight * base_score(t, i, k, first, m);
            logit[k] /= tau;
            if (logit[k] > mx) mx = logit[k];
        }
        double sum = 0;
        for (int k = 0; k < T; k++) sum += exp(logit[k] - mx);
        loss += mx + log(sum) - logit[own];
        for (int k = 0; k < T; k++) {
            double dcos = (exp(logit[k] - mx) / sum - (k == own)) / B / tau;
            const float *Ck = C + (size_t)k * dim;
            float *dzi = t->dz + (size_t)i * dim, *Gk = G + (size_t)k * dim;
            // d cos / d z_i = c^ ;  d cos / d c = (z_i - cos c^) / |c|
            for (int d = 0; d < dim; d++) {
                c[d] = (float)((Ck[d] - (k == own ? zi[d] : 0.0f)) / cn[k]);
                dzi[d] += (float)(dcos * c[d]);
                float gc = (float)(dcos * (zi[d] - cosv[k] * c[d]) / cn[k]);
                Gk[d] += gc;
                if (k == own) dzi[d] -= gc; // c_own excludes z_i
            }
        }
    }
    for (int j = 0; j < B; j++)
        for (int d = 0; d < dim; d++) t->dz[(size_t)j * dim + d] += G[(size_t)(j / m) * dim + d];
    return loss / B;
}

// z = u / |u|, then (after batch_loss) dz -> du in place.
static void normalise_items(trainer *t) {
    for (int b = 0; b < t->B; b++) {
        float *u = t->u + (size_t)b * t->dim, *z = t->z + (size_t)b * t->dim;
        double ss = 0;
        for (int d = 0; d < t->dim; d++) ss += (double)u[d] * u[d];
        t->unorm[b] = ss > 0 ? (float)sqrt(ss) : 1e-12f;
        for (int d = 0; d < t->dim; d++) z[d] = u[d] / t->unorm[b];
    }
}

static void dz_to_du(trainer *t) {
    for (int b = 0; b < t->B; b++) {
        float *dz = t->dz + (size_t)b * t->dim;
        const float *z = t->z + (size_t)b * t->dim;
        double dot = 0;
        for (int d = 0; d < t->dim; d++) dot += (double)dz[d] * z[d];
        for (int d = 0; d < t->dim; d++) dz[d] = (float)((dz[d] - dot * z[d]) / t->unorm[b]);
    }
}

static void mark_rows(trainer *t) {
    t->n_touched = 0;
    for (int b = 0; b < t->B; b++) {
        const rm_sparse *x = &t->x[t->items[b]];
        for (size_t f = 0; f < x->n; f++)
            if (!t->mark[x->idx[f]] && !t->frozen[x->idx[f]]) {
                t->mark[x->idx[f]] = 1;
                t->touched[t->n_touched++] = x->idx[f];
            }
    }
    for (size_t r = 0; r < t->n_touched; r++) t->mark[t->touched[r]] = 0;
}

int rm_hashproj_train(rm_embedder *e, const char *const *texts, const int *label, int n, const float *base_sim,
                      float base_weight, const rm_contrastive_params *p, float *final_loss) {
    if (strcmp(e->ops->kind, "hashproj")) return rm_errorf(RM_EINVAL, "train: embedder '%s' is not trainable", e->name);
    if (p->steps < 0 || p->per_task < 2 || p->tasks_per_batch < 2 || !(p->temperature > 0) || !(p->lr > 0))
        return rm_errorf(RM_EINVAL, "train: bad parameters (steps %d, per_task %d, tasks %d, tau %g, lr %g)", p->steps,
                         p->per_task, p->tasks_per_batch, (double)p->temperature, (double)p->lr);
    int n_labels = 0;
    for (int i = 0; i < n; i++) {
        if (label[i] < 0) return rm_errorf(RM_EINVAL, "train: negative label");
        if (label[i] + 1 > n_labels) n_labels = label[i] + 1;
    }
    trainer t = {.dim = e->dim,
                 .lr = p->lr,
                 .wd = p->weight_decay,
                 .base_sim = base_sim,
                 .base_weight = base_weight,
                 .n_texts = n};
    t.w = rm_hashproj_weights(e, &t.nb);
    rm_sparse *x = calloc((size_t)(n ? n : 1), sizeof *x);
    int *count = calloc((size_t)n_labels + 1, sizeof *count), *start = calloc((size_t)n_labels + 2, sizeof *start);
    int *by_label = malloc((size_t)(n ? n : 1) * sizeof *by_label),
        *labels = malloc(((size_t)n_labels + 1) * sizeof *labels);
    int rc = (x && count && start && by_label && labels) ? RM_OK : rm_errorf(RM_ENOMEM, "train: out of memory");
    for (int i = 0; i < n && !rc; i++) rc = rm_hashproj_features(e, texts[i], &x[i]);
    // group texts by label; keep labels with >= 2 texts
    int n_use = 0, min_per = 0;
    if (!rc) {
        for (int i = 0; i < n; i++) count[label[i]]++;
        for (int l = 0; l < n_labels; l++) start[l + 1] = start[l] + count[l];
        int *fill = calloc((size_t)n_labels + 1, sizeof *fill);
        if (!fill) rc = rm_errorf(RM_ENOMEM, "train: out of memory");
        for (int i = 0; i < n && !rc; i++) by_label[start[label[i]] + fill[label[i]]++] = i;
        free(fill);
        for (int l = 0; l < n_labels; l++)
            if (count[l] >= 2) {
                labels[n_use++] = l;
                if (!min_per || count[l] < min_per) min_per = count[l];
            }
        if (!rc && n_use < 2) rc = rm_errorf(RM_EINVAL, "train: need at least 2 tasks with 2+ samples, have %d", n_use);
    }
    int T = p->tasks_per_batch < n_use ? p->tasks_per_batch : n_use;
    int M = p->per_task < min_per ? p->per_task : min_per; // equal groups
    int Bmax = T * M;
    size_t wsize = t.nb * (size_t)t.dim;
    float *csum = NULL;
    rm_threadpool *tp = NULL;
    if (!rc) {
        t.x = x;
        t.m = calloc(wsize, sizeof(float));
        t.v = calloc(wsize, sizeof(float));
        t.g = calloc(wsize, sizeof(float));
        t.w0 = p->weight_decay > 0 ? malloc(wsize * sizeof(float)) : NULL;
        t.items = malloc((size_t)Bmax * sizeof *t.items);
        t.item_label = malloc((size_t)Bmax * sizeof *t.item_label);
        t.u = malloc((size_t)Bmax * t.dim * sizeof(float));
        t.z = malloc((size_t)Bmax * t.dim * sizeof(float));
        t.dz = malloc((size_t)Bmax * t.dim * sizeof(float));
        t.unorm = malloc((size_t)Bmax * sizeof(float));
        t.mark = calloc(t.nb, 1);
        t.frozen = calloc(t.nb, 1);
        t.touched = malloc(t.nb * sizeof *t.touched);
        t.csum = malloc((size_t)T * t.dim * sizeof(float));
        t.cgrad = malloc((size_t)T * t.dim * sizeof(float));
        t.ctmp = malloc((size_t)t.dim * sizeof(float));
        csum = t.csum;
        if (!t.m || !t.v || !t.g || (p->weight_decay > 0 && !t.w0) || !t.items || !t.item_label || !t.u || !t.z ||
            !t.dz || !t.unorm || !t.mark || !t.frozen || !t.touched || !t.csum || !t.cgrad || !t.ctmp)
            rc = rm_errorf(RM_ENOMEM, "train: out of memory for the optimiser (%zu x %d)", t.nb, t.dim);
        if (t.w0) memcpy(t.w0, t.w, wsize * sizeof(float));
    }
    if (!rc) { // document frequency over the training texts decides what is frozen
        uint32_t *df = calloc(t.nb, sizeof *df);
        if (!df) rc = rm_errorf(RM_ENOMEM, "train: out of memory");
        for (int i = 0; i < n && df; i++)
            for (size_t f = 0; f < x[i].n; f++) df[x[i].idx[f]]++;
        for (size_t b = 0; b < t.nb && df; b++) t.frozen[b] = df[b] < (uint32_t)p->min_df;
        free(df);
    }
    if (!rc && p->n_threads > 1) tp = rm_threadpool_create(p->n_threads);
    rm_progress pr;
    if (p->progress) rm_progress_start(&pr, "train retriever", "steps", p->steps);
    uint64_t seed = p->seed ^ 0x5eedull;
    double tail = 0;
    int n_tail = 0, tail_from = p->steps - (p->steps + 9) / 10;
    double b1t = 1, b2t = 1;
    for (int step = 0; step < p->steps && !rc; step++) {
        // batch: T random tasks, M random samples of each
        rm_shuffle_prefix(labels, n_use, T, &seed);
        t.B = 0;
        for (int k = 0; k < T; k++) {
            int l = labels[k], *pool = by_label + start[l];
            rm_shuffle_prefix(pool, count[l], M, &seed);
            for (int s = 0; s < M; s++) {
                t.items[t.B] = pool[s];
                t.item_label[t.B] = l;
                t.B++;
            }
        }
        rm_threadpool_run(tp, fwd_worker, &t);
        normalise_items(&t);
        double loss = batch_loss(&t, p->temperature, T, M);
        dz_to_du(&t);
        mark_rows(&t);
        rm_threadpool_run(tp, bwd_worker, &t);
        b1t *= 0.9;
        b2t *= 0.999;
        t.b1t = (float)(1 - b1t);
        t.b2t = (float)(1 - b2t);
        rm_threadpool_run(tp, adam_worker, &t);
        if (step >= tail_from) {
            tail += loss;
            n_tail++;
        }
        if (p->progress) {
            snprintf(pr.extra, sizeof pr.extra, "loss %.3f", loss);
            rm_progress_update(&pr, step + 1, step + 1 == p->steps);
        }
    }
    if (p->progress) rm_progress_finish(&pr, p->steps);
    if (final_loss) *final_loss = n_tail ? (float)(tail / n_tail) : 0.0f;
    rm_threadpool_free(tp);
    for (int i = 0; i < n && x; i++) rm_sparse_free(&x[i]);
    free(x);
    free(count);
    free(start);
    free(by_label);
    free(labels);
    free(t.m);
    free(t.v);
    free(t.g);
    free(t.w0);
    free(t.items);
    free(t.item_label);
    free(t.u);
    free(t.z);
    free(t.dz);
    free(t.unorm);
    free(t.mark);
    free(t.frozen);
    free(t.touched);
    free(csum);
    free(t.cgrad);
    free(t.ctmp);
    return rc;
}
