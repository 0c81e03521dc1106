// train_args.c — see train_args.h.
#include "train_args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/json.h"
#include "cli.h"
#include "train/train.h"

int train_args_match(int argc, char **argv, int *i, train_args *a) {
    if (cli_flag(argc, argv, i, "--json", NULL)) {
        a->json = 1;
        return 1;
    }
    return cli_str(argc, argv, i, "--data", NULL, &a->data) || cli_str(argc, argv, i, "--out", "-o", &a->out) ||
           cli_str(argc, argv, i, "--eval", NULL, &a->eval) ||
           cli_str(argc, argv, i, "--template", NULL, &a->template_path) ||
           cli_str(argc, argv, i, "--checkpoint", NULL, &a->checkpoint) ||
           cli_str(argc, argv, i, "--resume", NULL, &a->resume) || cli_int(argc, argv, i, "--steps", NULL, &a->steps) ||
           cli_int(argc, argv, i, "--seed", NULL, &a->seed) || cli_int(argc, argv, i, "--threads", "-t", &a->threads) ||
           cli_int(argc, argv, i, "--save-every", NULL, &a->save_every) ||
           cli_int(argc, argv, i, "--batch", NULL, &a->batch) || cli_int(argc, argv, i, "--accum", NULL, &a->accum) ||
           cli_int(argc, argv, i, "--seq", NULL, &a->seq) || cli_int(argc, argv, i, "--warmup", NULL, &a->warmup) ||
           cli_float(argc, argv, i, "--epochs", NULL, &a->epochs) || cli_float(argc, argv, i, "--lr", NULL, &a->lr) ||
           cli_float(argc, argv, i, "--weight-decay", NULL, &a->weight_decay) ||
           cli_float(argc, argv, i, "--clip", NULL, &a->clip);
}

// Moves the last n examples of d into e (a held-out split).
static int split_holdout(rm_tdata *d, rm_tdata *e, int n) {
    for (int i = d->n - n; i < d->n; i++) {
        int rc = rm_tdata_add(e, d->ex[i].ids, d->ex[i].n, d->ex[i].n_prompt);
        if (rc) return rc;
        free(d->ex[i].ids);
    }
    d->n -= n;
    e->has_eos = d->has_eos;
    e->eos = d->eos;
    return RM_OK;
}

// The ids around each example for m (BOS when it adds one, its EOS) and the
// longest example (--seq, else 512).
static void data_tokens(const train_args *a, const rm_llama *m, int32_t *bos, int32_t *eos, int *max_len) {
    *bos = m->add_bos ? m->bos : -1;
    *eos = m->tok ? rm_tokenizer_eos(m->tok) : -1;
    *max_len = a->seq > 0 ? (int)a->seq : 512;
}

// --seq 0: the longest training example.
static void seq_from_data(train_args *a, const rm_tdata *train) {
    if (a->seq == 0)
        for (int i = 0; i < train->n; i++) a->seq = train->ex[i].n > a->seq ? train->ex[i].n : a->seq;
}

// The held-out share of data of n examples: 10%, at most 200 (none under 20).
static int holdout_size(int n) { return n < 20 ? 0 : n / 10 < 200 ? n / 10 : 200; }

// Loads the comma-separated files of list into d (only a->tasks when given).
static int load_files(const train_args *a, const char *list, const rm_llama *m, const char *tmpl, rm_tdata *d) {
    int32_t bos, eos;
    int max_len;
    data_tokens(a, m, &bos, &eos, &max_len);
    char path[4096];
    for (const char *s = list; *s;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0 || len >= sizeof path) {
            fprintf(stderr, "ramole: bad data file list '%s'\n", list);
            return 1;
        }
        memcpy(path, s, len);
        path[len] = 0;
        if (rm_tdata_load_jsonl_tasks(d, path, tmpl, m->tok, bos, eos, max_len, a->tasks, a->n_tasks))
            return cli_fail(path);
        s += len + (e ? 1 : 0);
    }
    return 0;
}

int train_args_load_data(train_args *a, const rm_llama *m, const char *tmpl, rm_tdata *train, rm_tdata *eval) {
    if (load_files(a, a->data, m, tmpl, train)) return 1;
    if (a->eval) {
        if (load_files(a, a->eval, m, tmpl, eval)) return 1;
    } else if (holdout_size(train->n) && split_holdout(train, eval, holdout_size(train->n))) {
        return cli_fail("held-out split");
    }
    seq_from_data(a, train);
    return 0;
}

int train_args_load_tasks(train_args *a, const rm_llama *m, const char *tmpl, const char *const *data, int n_data,
                          const char *const *evals, int n_evals, const char *const *keep, int n_keep, rm_tdata *train,
                          rm_tdata *eval) {
    int32_t bos, eos;
    int max_len;
    data_tokens(a, m, &bos, &eos, &max_len);
    const char *const *k = n_keep ? keep : NULL;
    for (int i = 0; i < n_data; i++)
        if (rm_tdata_load_tasks(train, data[i], tmpl, m->tok, bos, eos, max_len, k, n_keep)) return cli_fail("--data");
    for (int i = 0; i < n_keep; i++)
        if (!rm_tdata_task_count(train, keep[i])) {
            fprintf(stderr, "ramole: --train-tasks: no example of the --data files has task '%s'\n", keep[i]);
            return 1;
        }
    if (train->n == 0) {
        fprintf(stderr, "ramole: no usable example in the --data files (too long for %d tokens?)\n", max_len);
        return 1;
    }
    for (int i = 0; i < n_evals; i++)
        if (rm_tdata_load_tasks(eval, evals[i], tmpl, m->tok, bos, eos, max_len, k, n_keep)) return cli_fail("--eval");
    if (n_evals && eval->n == 0) {
        fprintf(stderr, "ramole: no usable example in the --eval files%s\n",
                n_keep ? " of the --train-tasks tasks" : "");
        return 1;
    }
    if (!n_evals && rm_tdata_split_spread(train, eval, holdout_size(train->n))) return cli_fail("held-out split");
    seq_from_data(a, train);
    return 0;
}

void train_args_params(const train_args *a, const rm_tdata *train, int pack, rm_train_params *p) {
    rm_train_default_params(p);
    p->batch = (int)a->batch;
    p->seq = (int)a->seq;
    p->accum = (int)a->accum;
    p->lr = (float)a->lr;
    p->weight_decay = (float)a->weight_decay;
    p->clip = (float)a->clip;
    p->seed = (uint64_t)a->seed;
    p->threads = (int)a->threads;
    p->steps = a->steps ? (int)a->steps : rm_train_steps_for_epochs(train, p->batch, p->seq, p->accum, pack, a->epochs);
    p->warmup = a->warmup >= 0 ? (int)a->warmup : (int)ceil(0.03 * p->steps);
}

int train_args_run(const train_args *a, rm_trainer *t, const rm_tdata *train, const rm_tdata *eval, int pack,
                   int em_max, rm_train_report *rep) {
    if (a->resume && rm_trainer_load_checkpoint(t, a->resume)) return cli_fail(a->resume);
    rm_train_run_opts o = {.steps = rm_trainer_get_params(t)->steps,
                           .pack = pack,
                           .eval_em_max = em_max,
                           .checkpoint = a->checkpoint,
                           .save_every = (int)a->save_every,
                           .progress = 1};
    if (rm_train_run(t, train, eval->n ? eval : NULL, &o, rep)) return cli_fail("training");
    return 0;
}

int train_args_finish(const train_args *a, const rm_train_report *rep, const char *who, const char *out,
                      const char *curve, const char *title) {
    char em[48] = "", dropped[64] = ""; // NaN: not measured
    if (rep->eval_em == rep->eval_em) snprintf(em, sizeof em, ", eval EM %.3f", rep->eval_em);
    if (rep->eval_loss_dropped == rep->eval_loss_dropped)
        snprintf(dropped, sizeof dropped, " (own adapter present; dropped %.4f)", rep->eval_loss_dropped);
    fprintf(stderr, "%s: %d steps, loss %.4f -> %.4f, eval loss %.4f%s%s, %.0f tokens/s; wrote %s\n", who, rep->steps,
            rep->initial_loss, rep->final_loss, rep->eval_loss, dropped, em, rep->tokens_per_s, out);
    if (rm_train_write_curve(rep, curve, title)) return cli_fail(curve);
    if (a->json) {
        rm_sb sb;
        rm_sb_init(&sb);
        rm_train_report_json(rep, -1, &sb);
        printf("%s\n", sb.buf ? sb.buf : "{}");
        rm_sb_free(&sb);
    }
    return 0;
}

void train_state_free(train_state *s) {
    rm_train_report_free(&s->rep);
    rm_trainer_free(s->t);
    rm_tdata_free(&s->train);
    rm_tdata_free(&s->eval);
    rm_llama_free(s->m);
    free(s->tmpl);
    *s = (train_state){0};
}
