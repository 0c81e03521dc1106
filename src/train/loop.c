// loop.c — the training loop shared by `ramole train` and `ramole lora train`:
// micro-batches, accumulation, progress, evaluation, checkpoints, loss curve.
#include "train/train_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/progress.h"
#include "base/svg.h"

int rm_train_steps_for_epochs(const rm_tdata *d, int B, int T, int accum, int pack, double epochs) {
    if (d->n == 0 || epochs <= 0) return 0;
    rm_tbatch b;
    if (rm_tbatch_alloc(&b, B, T)) return 0;
    int *order = malloc((size_t)d->n * sizeof(int)), cursor = 0, epoch = 0, batches = 0;
    if (!order) {
        rm_tbatch_free(&b);
        return 0;
    }
    for (int i = 0; i < d->n; i++) order[i] = i;
    while (epoch == 0) {
        rm_tbatch_fill(&b, d, order, &cursor, pack, NULL, &epoch);
        batches++;
    }
    free(order);
    rm_tbatch_free(&b);
    double steps = ceil(epochs * batches / accum);
    return steps < 1 ? 1 : steps > 1e9 ? 1000000000 : (int)steps;
}

void rm_train_report_free(rm_train_report *r) {
    free(r->step_x);
    free(r->loss);
    free(r->eval_x);
    free(r->eval_y);
    memset(r, 0, sizeof *r);
}

static int record_eval(rm_trainer *t, const rm_tdata *eval, rm_train_report *r) {
    double l;
    int rc = rm_trainer_eval_loss(t, eval, &l);
    if (rc) return rc;
    r->eval_loss = l;
    r->eval_x[r->n_eval] = t->step;
    r->eval_y[r->n_eval++] = l;
    return RM_OK;
}

int rm_train_run(rm_trainer *t, const rm_tdata *train, const rm_tdata *eval, const rm_train_run_opts *o,
                 rm_train_report *r) {
    memset(r, 0, sizeof *r);
    r->eval_loss = r->eval_em = r->eval_loss_dropped = NAN;
    int todo = o->steps - t->step, accum = t->p.accum;
    if (todo < 0) todo = 0;
    int n_evals = (o->eval_every > 0 ? todo / o->eval_every : 0) + 2;
    r->step_x = malloc(((size_t)todo + 1) * sizeof(double));
    r->loss = malloc(((size_t)todo + 1) * sizeof(double));
    r->eval_x = malloc((size_t)n_evals * sizeof(double));
    r->eval_y = malloc((size_t)n_evals * sizeof(double));
    rm_tbatch *mb = calloc((size_t)accum, sizeof *mb);
    int rc = !r->step_x || !r->loss || !r->eval_x || !r->eval_y || !mb ? rm_errorf(RM_ENOMEM, "out of memory") : RM_OK;
    for (int i = 0; !rc && i < accum; i++) {
        rc = rm_tbatch_alloc(&mb[i], t->p.batch, t->p.seq);
        if (!rc && train->set_k)
            rc = rm_tbatch_alloc_sets(&mb[i], t->router_k > train->set_k ? t->router_k : train->set_k);
    }
    rm_progress pg;
    rm_progress_start(&pg,
                      t->gate        ? "gate train"
                      : t->router_k  ? "router train"
                      : t->lora_rank ? "lora train"
                                     : "train",
                      "steps", todo);
    if (!o->progress) pg.enabled = 0;
    double t0 = rm_now();
    for (int s = 0; !rc && s < todo; s++) {
        const rm_tdata *src = o->warm && t->step < o->warm_steps ? o->warm : train;
        if (o->warm && t->step == o->warm_steps && s > 0) rm_trainer_reset_order(t); // the curriculum's end
        for (int i = 0; !rc && i < accum; i++) rc = rm_trainer_next_batch(t, src, &mb[i], o->pack, NULL);
        double loss;
        float gn;
        if (!rc) rc = rm_trainer_step(t, mb, accum, &loss, &gn);
        if (rc) break;
        if (s == 0) r->initial_loss = loss;
        r->final_loss = loss;
        r->step_x[r->n_loss] = t->step;
        r->loss[r->n_loss++] = loss;
        r->tokens += (long)accum * t->p.batch * t->p.seq;
        double el = rm_now() - t0;
        r->tokens_per_s = el > 0 ? r->tokens / el : 0;
        snprintf(pg.extra, sizeof pg.extra, "loss %.4f lr %.2e |g| %.2f %.0f tok/s", loss,
                 rm_train_lr(&t->p, t->step - 1), gn, r->tokens_per_s);
        rm_progress_update(&pg, s + 1, 0);
        if (eval && o->eval_every > 0 && t->step % o->eval_every == 0 && t->step < o->steps)
            rc = record_eval(t, eval, r);
        if (!rc && o->checkpoint && o->save_every > 0 && t->step % o->save_every == 0)
            rc = rm_trainer_save_checkpoint(t, o->checkpoint);
    }
    rm_progress_finish(&pg, r->n_loss);
    r->seconds = rm_now() - t0;
    r->steps = t->step;
    if (!rc && eval && eval->n) rc = record_eval(t, eval, r);
    if (!rc && eval && eval->n && eval->set_k) rc = rm_trainer_eval_loss_set(t, eval, 1, &r->eval_loss_dropped);
    if (!rc && eval && eval->n && o->eval_em_max > 0) rc = rm_trainer_eval_em(t, eval, o->eval_em_max, &r->eval_em);
    if (!rc && o->checkpoint) rc = rm_trainer_save_checkpoint(t, o->checkpoint);
    for (int i = 0; mb && i < accum; i++) rm_tbatch_free(&mb[i]);
    free(mb);
    return rc;
}

int rm_train_write_curve(const rm_train_report *r, const char *path, const char *title) {
    rm_svg_series s[2] = {{"train loss", r->step_x, r->loss, r->n_loss},
                          {"eval loss", r->eval_x, r->eval_y, r->n_eval}};
    return rm_svg_plot(path, title, "step", "cross-entropy (nats/token)", s, r->n_eval ? 2 : 1, 0);
}

void rm_train_report_json(const rm_train_report *r, long params, rm_sb *sb) {
    const char *names[5] = {"initial_loss", "final_loss", "eval_loss", "eval_em", "tokens_per_s"};
    double v[5] = {r->initial_loss, r->final_loss, r->eval_loss, r->eval_em, r->tokens_per_s};
    rm_sb_printf(sb, "{\"steps\": %d", r->steps);
    for (int i = 0; i < 5; i++) {
        rm_sb_printf(sb, ", \"%s\": ", names[i]);
        rm_sb_json_num(sb, v[i]);
    }
    if (r->eval_loss_dropped == r->eval_loss_dropped) { // NaN: not measured
        rm_sb_puts(sb, ", \"eval_loss_dropped\": ");
        rm_sb_json_num(sb, r->eval_loss_dropped);
    }
    if (params >= 0) rm_sb_printf(sb, ", \"params\": %ld", params);
    rm_sb_puts(sb, "}");
}
