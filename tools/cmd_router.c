// cmd_router.c — `ramole router train|info`: RouterLoRA, the learned
// composition of k adapters (docs/router.md). `train` trains a router over
// frozen expert adapters on a frozen base, either a fixed set for every
// example (--lora) or each example's own retrieved set from a pool (--pool,
// with lora dropout, as in the paper); `info` shows a router file.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/progress.h"
#include "cli.h"
#include "format/gguf.h"
#include "base/file.h"
#include "lora/compose.h"
#include "lora/router.h"
#include "retrieve/pick.h"
#include "train/train.h"
#include "train_args.h"

static void help(void) {
    printf(
        "usage: ramole router train --base MODEL.gguf --lora DIR --lora DIR [...] --data FILE.jsonl --out ROUTER.gguf "
        "[options]\n"
        "       ramole router train --base MODEL.gguf --pool DIR [--retrieve K] [--lora-dropout P]\n"
        "                           --data FILE[,FILE...] [--train-tasks T1,T2,...|@FILE] --out ROUTER.gguf [options]\n"
        "       ramole router info ROUTER.gguf [--base MODEL.gguf]\n\n"
        "train: learns RouterLoRA (the RAMoLE paper's router) for the frozen base over frozen expert\n"
        "adapters: per token and adapted linear, over the example's experts i,\n"
        "  E_i = s_i B_i A_i x,  q = s_r B_r A_r x,  alpha = softmax_i(q.E_i / sqrt(out)),\n"
        "  y = W x + sum_i alpha_i E_i\n"
        "with only the router's A_r, B_r trained (B_r = 0 at the start: the mixture). Writes\n"
        "ROUTER.gguf and ROUTER.gguf.svg (loss curve).\n\n"
        "Fixed set (--lora, 2 to 16 adapters, PEFT dirs or GGUF LoRA files): every example gets\n"
        "all of them, as if retrieval returned them. Data: {\"inputs\", \"targets\"} examples (JSON\n"
        "lines or array). Serve with `generate --lora A --lora B --compose router --router ROUTER.gguf`.\n\n"
        "Retrieval, as in the paper (--pool): every adapter of the pool that has weights is loaded,\n"
        "and each example gets its own top K of them retrieved by its inputs. With probability P,\n"
        "drawn afresh each time the example enters a batch, the adapter of the example's own task\n"
        "(the pool entry whose task, else name, is the example's task) is left out of the pool\n"
        "before retrieval, so that the router learns to compose when the right expert is missing.\n"
        "Data: mixed-task {\"inputs\", \"targets\", \"task\"} examples (a record without \"task\" is an\n"
        "error), one file or several (e.g. one per task). Choose hyper-parameters on held-out\n"
        "examples of the seen tasks (--eval, or the default split), never on test requests. Serve\n"
        "with `generate --pool DIR --retrieve K --compose router --router ROUTER.gguf`.\n\n"
        "  --lora PATH          fixed set: an expert adapter (repeat, or comma-separated)\n"
        "  --pool DIR           retrieval: the adapter pool (`ramole pool`)\n"
        "  --retrieve K         adapters retrieved per example (3; 2..%d and at most the pool's\n"
        "                       adapters with weights)\n"
        "  --lora-dropout P     probability of leaving out the example's own adapter (0.5; 0..1)\n"
        "  --train-tasks LIST   keep only examples of these tasks (the seen tasks): comma-separated,\n"
        "                       or @FILE with one name a line; each must have an example\n"
        "  --data FILE          training examples (retrieval: repeat or comma-separate for several)\n"
        "  --eval FILE          held-out examples (retrieval: of the --train-tasks too; repeat or\n"
        "                       comma-separate). Default: 10%% of the data (at most 200; retrieval:\n"
        "                       taken evenly across the files). The summary gives the held-out loss\n"
        "                       with each example's own retrieved adapters and, in retrieval, also\n"
        "                       with its own task's adapter left out\n"
        "  --rank R             router rank (4)\n"
        "  --alpha A            router alpha (2*rank; scale alpha/r)\n"
        "  --epochs E | --steps N   length of training (1 epoch)\n"
        "  --lr LR              peak learning rate (1e-3), linear warm-up then cosine\n"
        "  --warmup N  --batch B (4)  --accum K (1)  --seq T  --no-pack  --weight-decay W  --clip C\n"
        "  --seed S             seed of the router init, the data order and the dropout draws (1)\n"
        "  --threads N  --template FILE  --checkpoint FILE  --resume FILE  --json\n"
        "  --eval-em N          held-out examples scored for exact match with the router, through the\n"
        "                       serving hook with each example's own adapters (200; 0 = none)\n",
        RM_PLAN_MAX);
}

// A list of strings from repeated, comma-separated options.
typedef struct router_opts {
    train_args a;
    const char *base, *pool;
    cli_list lora, data, eval, tasks;
    long rank, em_max, k;
    double alpha, dropout;
    int pack, retrieval;
} router_opts;

// Parses and checks the options; returns 0, 1 (--help shown) or 2 (usage error, said why).
static int parse_opts(int argc, char **argv, router_opts *o) {
    const char *spec;
    int got_k = 0, got_drop = 0;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 1;
        } else if (cli_str(argc, argv, &i, "--data", NULL, &spec)) {
            if (cli_list_add(&o->data, "--data", spec)) return 2;
        } else if (cli_str(argc, argv, &i, "--eval", NULL, &spec)) {
            if (cli_list_add(&o->eval, "--eval", spec)) return 2;
        } else if (train_args_match(argc, argv, &i, &o->a)) {
        } else if (cli_str(argc, argv, &i, "--base", "-m", &o->base)) {
        } else if (cli_str(argc, argv, &i, "--lora", NULL, &spec)) {
            if (cli_list_add(&o->lora, "--lora", spec)) return 2;
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &o->pool)) {
        } else if (cli_int(argc, argv, &i, "--retrieve", "-k", &o->k)) got_k = 1;
        else if (cli_float(argc, argv, &i, "--lora-dropout", NULL, &o->dropout)) got_drop = 1;
        else if (cli_str(argc, argv, &i, "--train-tasks", NULL, &spec)) {
            if (cli_list_add(&o->tasks, "--train-tasks", spec)) return 2;
        } else if (cli_int(argc, argv, &i, "--rank", "-r", &o->rank)) {
        } else if (cli_int(argc, argv, &i, "--eval-em", NULL, &o->em_max)) {
        } else if (cli_float(argc, argv, &i, "--alpha", NULL, &o->alpha)) {
        } else if (cli_flag(argc, argv, &i, "--no-pack", NULL)) o->pack = 0;
        else {
            fprintf(stderr, "ramole router train: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    const train_args *a = &o->a;
    o->retrieval = o->pool != NULL;
    o->a.data = o->data.n ? o->data.item[0] : NULL;
    o->a.eval = o->eval.n ? o->eval.item[0] : NULL;
    char buf[160];
    const char *why = NULL;
    if (!o->base || !a->data || !a->out || (!o->lora.n && !o->pool))
        why = "--base, --lora (or --pool), --data and --out are required (see --help)";
    else if (o->lora.n && o->pool) why = "--lora (a fixed set) and --pool (retrieval) exclude each other";
    else if (!o->retrieval && (got_k || got_drop || o->tasks.n))
        why = "--retrieve, --lora-dropout and --train-tasks go with --pool";
    else if (!o->retrieval && (o->data.n > 1 || o->eval.n > 1)) why = "several --data or --eval files go with --pool";
    else if (!o->retrieval && o->lora.n < 2) why = "a router composes 2 or more adapters (--lora)";
    else if (o->lora.n > RM_PLAN_MAX) why = buf, snprintf(buf, sizeof buf, "at most %d adapters (--lora)", RM_PLAN_MAX);
    else if (o->retrieval && (o->k < 2 || o->k > RM_PLAN_MAX))
        why = buf, snprintf(buf, sizeof buf,
                            "--retrieve %ld is out of range (2..%d: a router composes 2 or more adapters, "
                            "a plan holds %d)",
                            o->k, RM_PLAN_MAX, RM_PLAN_MAX);
    else if (!(o->dropout >= 0 && o->dropout <= 1)) why = "--lora-dropout is a probability (0..1)";
    else if (o->rank <= 0 || a->batch <= 0 || a->accum <= 0 || a->seq < 0 || a->steps < 0 || !(a->lr > 0))
        why = "rank, batch, accum, steps and lr must be positive";
    if (why) fprintf(stderr, "ramole router train: %s\n", why);
    return why ? 2 : 0;
}

typedef struct router_run {
    rm_llama *m;
    rm_pool *pool;
    rm_pick_table tab;
    rm_lora **ex;
    int n_ex;
    rm_tdata train, eval;
} router_run;

static void run_free(router_run *r) {
    for (int i = 0; i < r->n_ex; i++) rm_lora_free(r->ex[i]);
    free(r->ex);
    rm_pick_table_free(&r->tab);
    if (r->pool) rm_pool_close(r->pool);
    rm_tdata_free(&r->train);
    rm_tdata_free(&r->eval);
    rm_llama_free(r->m);
}

// Loads the experts (bound to the base): --lora's, or every pool adapter with weights.
static int load_experts(const router_opts *o, router_run *r) {
    int n = o->lora.n;
    if (o->retrieval) {
        if (rm_pool_open_existing(o->pool, &r->pool) || rm_pick_table_init(&r->tab, r->pool)) return cli_fail(o->pool);
        if (!(n = r->tab.n)) {
            fprintf(stderr,
                    "ramole router train: the pool %s has no adapter with weights (add them with `ramole pool add "
                    "--weights`)\n",
                    o->pool);
            return 1;
        }
        if (o->k > n) {
            fprintf(stderr,
                    "ramole router train: --retrieve %ld is out of range: the pool %s has %d adapters with weights\n",
                    o->k, o->pool, n);
            return 1;
        }
    }
    if (!(r->ex = calloc((size_t)n, sizeof *r->ex))) return cli_fail("experts");
    for (; r->n_ex < n; r->n_ex++) {
        const char *path = o->retrieval ? r->tab.weights[r->n_ex] : o->lora.item[r->n_ex];
        if (rm_lora_load_for(&r->ex[r->n_ex], path, r->m)) {
            if (!o->retrieval) return cli_fail(path);
            char what[300];
            snprintf(what, sizeof what, "pool adapter %s", r->tab.name[r->n_ex]);
            return cli_fail(what);
        }
    }
    return 0;
}

// rm_pick_table_retrieve with a progress line (two retrievals an example).
typedef struct counted_pick {
    rm_pick_table *tab;
    rm_progress pg;
    long done;
} counted_pick;

static int pick_counted(void *user, const char *text, const char *exclude_task, int k, int *idx, int *n) {
    counted_pick *c = user;
    int rc = rm_pick_table_retrieve(c->tab, text, exclude_task, k, idx, n);
    rm_progress_update(&c->pg, ++c->done, 0);
    return rc;
}

// Loads the data; in retrieval, each example's two sets (own adapter allowed / left out).
static int load_data(router_opts *o, router_run *r, const char *tmpl) {
    if (!o->retrieval) return train_args_load_data(&o->a, r->m, tmpl, &r->train, &r->eval);
    if (train_args_load_tasks(&o->a, r->m, tmpl, (const char *const *)o->data.item, o->data.n,
                              (const char *const *)o->eval.item, o->eval.n, (const char *const *)o->tasks.item,
                              o->tasks.n, &r->train, &r->eval))
        return 1;
    fprintf(stderr, "router train: retrieving %ld of %d adapters for %d examples (%d held out) of %d tasks\n", o->k,
            r->n_ex, r->train.n + r->eval.n, r->eval.n, r->train.n_tasks);
    counted_pick c = {.tab = &r->tab};
    rm_progress_start(&c.pg, "retrieve", "queries", 2L * (r->train.n + r->eval.n));
    int rc = rm_tdata_retrieve(&r->train, (int)o->k, pick_counted, &c);
    if (!rc && r->eval.n) rc = rm_tdata_retrieve(&r->eval, (int)o->k, pick_counted, &c);
    rm_progress_finish(&c.pg, c.done);
    return rc ? cli_fail("retrieval") : 0;
}

static int router_train(int argc, char **argv) {
    router_opts o = {.a = {.batch = 4, .accum = 1, .seed = 1, .warmup = -1, .epochs = 1, .lr = 1e-3, .clip = 1.0},
                     .rank = 4,
                     .em_max = 200,
                     .k = 3,
                     .alpha = -1,
                     .dropout = 0.5,
                     .pack = 1};
    router_run r = {0};
    rm_trainer *t = NULL;
    rm_lora *router = NULL;
    rm_train_report rep = {0};
    char *tmpl = NULL;
    size_t tlen;
    int rc = parse_opts(argc, argv, &o);
    if (rc) {
        rc = rc == 1 ? 0 : 2;
        goto done;
    }
    rc = 1;
    if (o.a.template_path && rm_read_file(o.a.template_path, &tmpl, &tlen)) {
        cli_fail("--template");
        goto done;
    }
    if (rm_llama_load(&r.m, o.base)) {
        cli_fail(o.base);
        goto done;
    }
    if (load_experts(&o, &r) || load_data(&o, &r, tmpl)) goto done;
    int k = o.retrieval ? (int)o.k : r.n_ex;
    rm_train_params p;
    train_args_params(&o.a, &r.train, o.pack, &p);
    p.lora_dropout = o.retrieval ? (float)o.dropout : 0.0f;
    float alpha = o.alpha > 0 ? (float)o.alpha : 2.0f * (float)o.rank;
    if (rm_trainer_create(&t, r.m, &p) || rm_trainer_add_router_table(t, r.n_ex, r.ex, k, (int)o.rank, alpha)) {
        cli_fail("trainer");
        goto done;
    }
    if (o.retrieval)
        fprintf(stderr,
                "router train: %d examples (%d held out), %d of %d pool adapters per example, lora dropout %.2f, "
                "rank %ld, %zu trainable parameters, %d steps of %d x %d x %d tokens\n",
                r.train.n, r.eval.n, k, r.n_ex, o.dropout, o.rank, rm_trainer_n_trainable(t), p.steps, p.accum, p.batch,
                p.seq);
    else
        fprintf(stderr,
                "router train: %d examples (%d held out), %d experts, rank %ld, %zu trainable parameters, %d steps "
                "of %d x %d x %d tokens\n",
                r.train.n, r.eval.n, k, o.rank, rm_trainer_n_trainable(t), p.steps, p.accum, p.batch, p.seq);
    if (train_args_run(&o.a, t, &r.train, &r.eval, o.pack, (int)o.em_max, &rep)) goto done;
    rm_router_training tr = {k, "fixed", NAN};
    if (o.retrieval) {
        snprintf(tr.with, sizeof tr.with, "retrieval");
        tr.lora_dropout = (float)o.dropout;
    }
    if (rm_trainer_export_lora(t, &router) || rm_router_save_trained(router, r.m, &tr, o.a.out)) {
        cli_fail(o.a.out);
        goto done;
    }
    char curve[4200];
    snprintf(curve, sizeof curve, "%s.svg", o.a.out);
    if (train_args_finish(&o.a, &rep, "router train", o.a.out, curve, "RouterLoRA training loss")) goto done;
    rc = 0;
done:
    rm_lora_free(router);
    rm_train_report_free(&rep);
    rm_trainer_free(t);
    run_free(&r);
    cli_list_free(&o.lora);
    cli_list_free(&o.data);
    cli_list_free(&o.eval);
    cli_list_free(&o.tasks);
    free(tmpl);
    return rc;
}

// Loads the router at path against m (for `router info --base`).
static int router_fits(const char *path, const rm_llama *m) {
    rm_lora *r = NULL;
    int rc = rm_router_load(&r, path, m);
    rm_lora_free(r);
    return rc;
}

static int cmd_router(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "train")) return router_train(argc, argv);
    if (!strcmp(argv[1], "info")) return cli_info_tied(argc, argv, "router", "ramole.router", router_fits);
    fprintf(stderr, "ramole router: unknown subcommand '%s' (train, info)\n", argv[1]);
    return 2;
}

RM_COMMAND(router, "train a RouterLoRA over adapters, or show a router file", cmd_router)
