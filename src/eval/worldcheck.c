// worldcheck.c — see worldcheck.h.
#include "eval/worldcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "eval/run.h"
#include "eval/world.h"
#include "model/llama.h"

rm_world_check_params rm_world_check_default_params(void) {
    rm_world_check_params p = {0};
    p.eval = rm_run_default_params();
    p.eval.max_new = 32;
    p.eval.slots = 64;
    return p;
}

void rm_world_check_free(rm_world_check *c) {
    rm_world_free_tasks(c->task, c->cluster, c->n);
    free(c->base);
    free(c->score);
    memset(c, 0, sizeof *c);
}

// Task t's score (x 100) on a method's scoreboard, NaN when it has none.
static double task_score(const rm_scoreboard *b, const char *task) {
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->t[i].task, task)) return 100 * rm_task_score_value(&b->t[i]);
    return NAN;
}

int rm_world_check_run(const rm_world_check_params *p, rm_world_check *c) {
    memset(c, 0, sizeof *c);
    char path[4096], *tmpl = NULL;
    size_t len;
    int rc = rm_world_read_tasks(p->dir, &c->task, &c->cluster, &c->n);
    if (rc) return rc;
    rm_llama *m = NULL;
    rm_threadpool *tp = NULL;
    rm_eval_env *env = NULL;
    rm_evalset set = {0};
    rm_run_result res = {0};
    int n = c->n, nm = n + 1;
    rm_method *meth = calloc((size_t)nm, sizeof *meth);
    char **paths = calloc((size_t)n, sizeof *paths);
    if (!meth || !paths || !(c->base = calloc((size_t)n, sizeof *c->base)) ||
        !(c->score = calloc((size_t)n * n, sizeof *c->score))) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    snprintf(path, sizeof path, "%s/template.txt", p->dir);
    if ((rc = rm_read_file(path, &tmpl, &len))) goto done;
    snprintf(path, sizeof path, "%s/combined_test.json", p->dir);
    if ((rc = rm_evalset_load(path, RM_METRIC_EM, &set))) goto done;
    snprintf(path, sizeof path, "%s/base.gguf", p->dir);
    if ((rc = rm_llama_load(&m, path))) goto done;
    if (!(tp = rm_threadpool_create(p->threads))) {
        rc = rm_errorf(RM_ENOMEM, "cannot start threads");
        goto done;
    }
    // method 0: the base model; 1 + a: adapter a alone
    meth[0] = (rm_method){.name = NULL, .kind = RM_METHOD_NONE, .compose = -1};
    for (int a = 0; a < n; a++) {
        snprintf(path, sizeof path, "%s/adapters/%s", p->dir, c->task[a]);
        if (!rm_is_dir(path)) {
            rc = rm_errorf(RM_ENOTFOUND, "%s: no adapter for task %s (run `ramole world build %s`)", path, c->task[a],
                           p->dir);
            goto done;
        }
        if (!(paths[a] = strdup(path))) {
            rc = rm_errorf(RM_ENOMEM, "out of memory");
            goto done;
        }
        meth[1 + a] =
            (rm_method){.kind = RM_METHOD_FIXED, .compose = -1, .paths = (const char *const *)&paths[a], .n_paths = 1};
    }
    rm_run_params rp = p->eval;
    rp.tmpl = tmpl;
    if ((rc = rm_eval_env_new(&env, m, NULL, tp, &rp)) || (rc = rm_eval_run(env, &set, meth, nm, &res))) goto done;
    for (int t = 0; t < n; t++) {
        c->base[t] = task_score(&res.board[0], c->task[t]);
        for (int a = 0; a < n; a++) c->score[(size_t)t * n + a] = task_score(&res.board[1 + a], c->task[t]);
    }
    c->requests = res.n_requests;
    c->seconds = res.seconds;
    c->rows_per_forward = res.forward_passes ? (double)res.rows / (double)res.forward_passes : 0;
done:
    rm_run_result_free(&res);
    rm_eval_env_free(env);
    rm_threadpool_free(tp);
    rm_llama_free(m);
    rm_evalset_free(&set);
    for (int a = 0; paths && a < n; a++) free(paths[a]);
    free(paths);
    free(meth);
    free(tmpl);
    if (rc) rm_world_check_free(c);
    return rc;
}

void rm_world_check_sanity(const rm_world_check *c, rm_world_sanity *s) {
    memset(s, 0, sizeof *s);
    int n = c->n;
    s->own_min = INFINITY;
    for (int t = 0; t < n; t++) {
        double own = c->score[(size_t)t * n + t], sib = -INFINITY, fbest = -INFINITY, fsum = 0;
        int nf = 0;
        for (int a = 0; a < n; a++) {
            double v = c->score[(size_t)t * n + a];
            if (a == t || !isfinite(v)) continue;
            if (!strcmp(c->cluster[a], c->cluster[t])) sib = v > sib ? v : sib;
            else fbest = v > fbest ? v : fbest, fsum += v, nf++;
        }
        s->base += c->base[t] / n;
        s->own += own / n;
        if (own < s->own_min) s->own_min = own, s->own_min_task = t;
        s->sibling += (isfinite(sib) ? sib : c->base[t]) / n;
        s->foreign_best += (nf ? fbest : c->base[t]) / n;
        s->foreign_mean += (nf ? fsum / nf : c->base[t]) / n;
    }
    s->sibling_gain = s->sibling - s->base;
    s->foreign_best_gain = s->foreign_best - s->base;
    s->foreign_mean_gain = s->foreign_mean - s->base;
}
