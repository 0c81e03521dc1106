// optim.c — AdamW (decoupled weight decay), warm-up + cosine schedule,
// global-norm clipping, gradient accumulation, checkpoints, model export.
#include "train/train_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "format/gguf.h"

// Linear warm-up to lr over `warmup` steps, then cosine down to lr*min_lr_ratio at `steps`.
float rm_train_lr(const rm_train_params *p, int step) {
    if (step < p->warmup) return p->lr * (float)(step + 1) / (float)p->warmup;
    int span = p->steps - p->warmup;
    double progress = span > 0 ? (double)(step - p->warmup) / span : 1.0;
    if (progress > 1.0) progress = 1.0;
    double lo = p->lr * p->min_lr_ratio;
    return (float)(lo + (p->lr - lo) * 0.5 * (1.0 + cos(M_PI * progress)));
}

// m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= lr (m^ / (sqrt(v^) + eps) + wd w)
float rm_trainer_update(rm_trainer *t) {
    const rm_train_params *p = &t->p;
    double ss = 0.0;
    for (int i = 0; i < t->n_params; i++)
        for (size_t j = 0; j < t->params[i].n; j++) ss += (double)t->params[i].g[j] * t->params[i].g[j];
    float norm = (float)sqrt(ss);
    float clip = p->clip > 0 && norm > p->clip ? p->clip / norm : 1.0f;
    float lr = rm_train_lr(p, t->step);
    t->step++;
    float b1c = 1.0f - powf(p->beta1, (float)t->step), b2c = 1.0f - powf(p->beta2, (float)t->step);
    for (int i = 0; i < t->n_params; i++) {
        rm_tparam *q = &t->params[i];
        float wd = q->decay ? p->weight_decay : 0.0f;
        for (size_t j = 0; j < q->n; j++) {
            float g = q->g[j] * clip;
            q->m[j] = p->beta1 * q->m[j] + (1.0f - p->beta1) * g;
            q->v[j] = p->beta2 * q->v[j] + (1.0f - p->beta2) * g * g;
            float mh = q->m[j] / b1c, vh = q->v[j] / b2c;
            q->w[j] -= lr * (mh / (sqrtf(vh) + p->eps) + wd * q->w[j]);
        }
    }
    return norm;
}

int rm_trainer_step(rm_trainer *t, const rm_tbatch *mb, int n, double *loss, float *grad_norm) {
    long count = 0;
    for (int i = 0; i < n; i++) count += rm_tbatch_count(&mb[i]);
    if (count == 0) return rm_errorf(RM_EINVAL, "train: the step's batches have no target tokens");
    rm_trainer_zero_grad(t);
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        double l;
        int rc = rm_trainer_forward(t, &mb[i], (float)count, 1, &l, NULL);
        if (rc) return rc;
        total += l;
    }
    float gn = rm_trainer_update(t);
    if (grad_norm) *grad_norm = gn;
    *loss = total;
    return isfinite(total) ? RM_OK : rm_errorf(RM_EINVAL, "train: loss is not finite at step %d", t->step);
}

// ---------------------------------------------------------------- checkpoints

int rm_trainer_save_checkpoint(rm_trainer *t, const char *path) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = gguf_set_str(w, "general.type", "ramole.train.checkpoint");
    if (!rc) rc = gguf_set_u32(w, "train.step", (uint32_t)t->step);
    if (!rc) rc = gguf_set_u64(w, "train.rng", t->rng);
    if (!rc) rc = gguf_set_u64(w, "train.drop_rng", t->drop_rng);
    if (!rc) rc = gguf_set_u32(w, "train.n_params", (uint32_t)t->n_params);
    if (!rc && t->order) rc = gguf_set_arr(w, "train.order", GGUF_TYPE_INT32, t->order, (uint64_t)t->n_order);
    if (!rc) rc = gguf_set_i32(w, "train.cursor", t->cursor);
    if (!rc) rc = gguf_set_i32(w, "train.epoch", t->epoch);
    char name[128];
    for (int i = 0; i < t->n_params && !rc; i++) {
        rm_tparam *q = &t->params[i];
        int64_t ne[4] = {(int64_t)q->n, 1, 1, 1};
        const float *parts[3] = {q->w, q->m, q->v};
        const char *suffix[3] = {"", ".adam_m", ".adam_v"};
        for (int k = 0; k < 3 && !rc; k++) {
            snprintf(name, sizeof name, "%s%s", q->name, suffix[k]);
            rc = gguf_add_tensor(w, name, RM_TYPE_F32, 1, ne, parts[k]);
        }
    }
    if (!rc) rc = gguf_write(w, path);
    gguf_writer_free(w);
    return rc;
}

int rm_trainer_load_checkpoint(rm_trainer *t, const char *path) {
    gguf_file g;
    int rc = gguf_open(&g, path);
    if (rc) return rc;
    uint32_t step = 0, np = 0;
    uint64_t rng = 0;
    int32_t cursor = 0, epoch = 0;
    if (gguf_get_u32(&g, "train.step", &step) || gguf_get_u64(&g, "train.rng", &rng) ||
        gguf_get_u32(&g, "train.n_params", &np)) {
        gguf_close(&g);
        return rm_errorf(RM_EFORMAT, "%s: not a ramole training checkpoint", path);
    }
    if ((int)np != t->n_params) {
        gguf_close(&g);
        return rm_errorf(RM_EMISMATCH, "%s: checkpoint has %u parameter tensors, the trainer %d", path, np,
                         t->n_params);
    }
    char name[128];
    for (int i = 0; i < t->n_params && !rc; i++) {
        rm_tparam *q = &t->params[i];
        float *parts[3] = {q->w, q->m, q->v};
        const char *suffix[3] = {"", ".adam_m", ".adam_v"};
        for (int k = 0; k < 3 && !rc; k++) {
            snprintf(name, sizeof name, "%s%s", q->name, suffix[k]);
            const gguf_tensor_info *ti = gguf_find_tensor(&g, name);
            if (!ti || ti->type != RM_TYPE_F32 || ti->nbytes != q->n * sizeof(float))
                rc = rm_errorf(RM_EMISMATCH, "%s: tensor %s missing or of the wrong size", path, name);
            else memcpy(parts[k], ti->data, ti->nbytes);
        }
    }
    const gguf_value *order = NULL;
    if (!rc && gguf_get_arr(&g, "train.order", &order) == RM_OK) {
        if (order->arr.type != GGUF_TYPE_INT32 || order->arr.n > (1u << 30)) {
            rc = rm_errorf(RM_EFORMAT, "%s: bad train.order", path);
        } else {
            int *o = malloc((order->arr.n ? order->arr.n : 1) * sizeof(int));
            if (!o) rc = rm_errorf(RM_ENOMEM, "out of memory");
            else {
                for (uint64_t i = 0; i < order->arr.n; i++) o[i] = (int)gguf_arr_i64(order, i);
                free(t->order);
                t->order = o;
                t->n_order = (int)order->arr.n;
            }
        }
    }
    if (!rc) {
        gguf_get_i32(&g, "train.cursor", &cursor);
        gguf_get_i32(&g, "train.epoch", &epoch);
        gguf_get_u64(&g, "train.drop_rng", &t->drop_rng); // absent in checkpoints from before it: no draws were made
        t->step = (int)step;
        t->rng = rng;
        t->cursor = cursor;
        t->epoch = epoch;
    }
    gguf_close(&g);
    return rc;
}

// ---------------------------------------------------------------- model export

int rm_trainer_save_model(rm_trainer *t, const char *path) {
    const rm_llama *m = t->m;
    const rm_llama_hparams *hp = &m->hp;
    gguf_writer *w = gguf_writer_new();
    if (!w) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = RM_OK;
    char key[256];
    for (uint64_t i = 0; i < m->gguf.n_kv && !rc; i++) {
        gguf_str_copy(m->gguf.kv[i].key, key, sizeof key);
        rc = gguf_set_value(w, key, &m->gguf.kv[i].val);
    }
    char name[128];
    int64_t ne[4] = {hp->n_embd, 1, 1, 1};
#define ADD_MAT(nm, tensor) (rc ? rc : gguf_add_tensor(w, nm, (tensor).type, 2, (tensor).ne, (tensor).data))
#define ADD_VEC(nm, vec, n) (rc ? rc : (ne[0] = (n), gguf_add_tensor(w, nm, RM_TYPE_F32, 1, ne, vec)))
    rc = ADD_MAT("token_embd.weight", m->tok_embd);
    rc = ADD_VEC("output_norm.weight", m->output_norm, hp->n_embd);
    if (m->output.data != m->tok_embd.data) rc = ADD_MAT("output.weight", m->output);
    for (int l = 0; l < hp->n_layer && !rc; l++) {
        const rm_llama_layer *Ly = &m->layers[l];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        rc = ADD_VEC(name, Ly->attn_norm, hp->n_embd);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        rc = ADD_VEC(name, Ly->ffn_norm, hp->n_embd);
        for (int k = 0; k < RM_LIN_COUNT; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, rm_linear_gguf[k]);
            rc = ADD_MAT(name, Ly->w[k]);
        }
        const float *bias[3] = {Ly->bq, Ly->bk, Ly->bv};
        for (int k = 0; k < 3; k++) {
            if (!bias[k]) continue;
            snprintf(name, sizeof name, "blk.%d.%s.bias", l, rm_linear_gguf[k]);
            rc = ADD_VEC(name, bias[k], Ly->w[k].ne[1]);
        }
    }
#undef ADD_MAT
#undef ADD_VEC
    if (!rc) rc = gguf_write(w, path);
    gguf_writer_free(w);
    return rc;
}
