// evalset.c — test sets and per-task scores (see evalset.h).
#include "eval/evalset.h"
#include "base/err.h"
#include "base/grow.h"
#include "base/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rm_evalset_free(rm_evalset *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->r[i].inputs);
        free(s->r[i].targets);
        free(s->r[i].task);
    }
    free(s->r);
    memset(s, 0, sizeof *s);
}

typedef struct {
    rm_evalset *s;
    const char *path;
    rm_metric dflt;
} load_ctx;

static int add_record(void *user, const rm_json *o, long index) {
    load_ctx *c = user;
    const char *in = rm_json_get_str(o, "inputs", NULL), *tg = rm_json_get_str(o, "targets", NULL);
    if (!in || !tg)
        return rm_errorf(RM_EFORMAT, "%s: request %ld has no string \"inputs\" and \"targets\"", c->path, index);
    const char *task = rm_json_get_str(o, "task", "all"), *ms = rm_json_get_str(o, "metric", NULL);
    rm_metric m = c->dflt;
    if (ms && rm_metric_parse(ms, &m))
        return rm_errorf(RM_EFORMAT, "%s: request %ld has the unknown metric \"%s\" (em, rouge, bleu)", c->path, index,
                         ms);
    rm_evalset *s = c->s;
    if (RM_GROW(s->r, s->n, s->cap, 64)) return RM_ENOMEM;
    rm_eval_req *r = &s->r[s->n];
    *r = (rm_eval_req){strdup(in), strdup(tg), strdup(task), m};
    s->n++;
    if (!r->inputs || !r->targets || !r->task) return rm_errorf(RM_ENOMEM, "out of memory");
    return RM_OK;
}

int rm_evalset_load(const char *path, rm_metric default_metric, rm_evalset *out) {
    memset(out, 0, sizeof *out);
    load_ctx c = {out, path, default_metric};
    int rc = rm_json_each_record(path, add_record, &c);
    if (!rc && out->n == 0) rc = rm_errorf(RM_EFORMAT, "%s: no requests", path);
    if (rc) rm_evalset_free(out);
    return rc;
}

// ---- scores ----------------------------------------------------------------------

static rm_task_score *task_row(rm_scoreboard *b, const rm_eval_req *r) {
    for (int i = 0; i < b->n; i++) {
        if (strcmp(b->t[i].task, r->task)) continue;
        if (b->t[i].metric != r->metric) {
            rm_errorf(RM_EFORMAT, "task '%s' is scored by both %s and %s", r->task, rm_metric_name(b->t[i].metric),
                      rm_metric_name(r->metric));
            return NULL;
        }
        return &b->t[i];
    }
    if (RM_GROW(b->t, b->n, b->cap, 16)) return NULL;
    rm_task_score *t = &b->t[b->n];
    memset(t, 0, sizeof *t);
    if (!(t->task = strdup(r->task))) {
        rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    t->metric = r->metric;
    rm_bleu_init(&t->bleu);
    b->n++;
    return t;
}

int rm_scoreboard_add(rm_scoreboard *b, const rm_eval_req *r, const char *pred, double *score) {
    rm_task_score *t = task_row(b, r);
    if (!t) return RM_EFORMAT;
    double s = 0;
    int rc = RM_OK;
    if (r->metric == RM_METRIC_EM) {
        s = rm_metric_em(pred, r->targets);
        t->sum += s;
    } else if (r->metric == RM_METRIC_ROUGE) {
        rm_rouge g;
        if (!(rc = rm_metric_rouge(pred, r->targets, &g)))
            t->sum += g.rl, t->sum_r1 += g.r1, t->sum_r2 += g.r2, s = g.rl;
    } else {
        rm_bleu one;
        rm_bleu_init(&one);
        if (!(rc = rm_bleu_add(&one, pred, r->targets))) {
            s = rm_bleu_score(&one);
            for (int n = 0; n < 4; n++) t->bleu.match[n] += one.match[n], t->bleu.total[n] += one.total[n];
            t->bleu.pred_len += one.pred_len, t->bleu.ref_len += one.ref_len;
        }
    }
    if (rc) return rc;
    t->n++;
    if (score) *score = s;
    return RM_OK;
}

double rm_task_score_value(const rm_task_score *t) {
    if (t->metric == RM_METRIC_BLEU) return rm_bleu_score(&t->bleu);
    return t->n ? t->sum / t->n : 0;
}

double rm_scoreboard_mean(const rm_scoreboard *b, int m, int *n_tasks) {
    double s = 0;
    int n = 0;
    for (int i = 0; i < b->n; i++)
        if (m < 0 || (int)b->t[i].metric == m) s += rm_task_score_value(&b->t[i]), n++;
    if (n_tasks) *n_tasks = n;
    return n ? s / n : NAN;
}

void rm_scoreboard_free(rm_scoreboard *b) {
    for (int i = 0; i < b->n; i++) free(b->t[i].task);
    free(b->t);
    memset(b, 0, sizeof *b);
}
