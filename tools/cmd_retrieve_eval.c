// cmd_retrieve_eval.c — `ramole retrieve-eval`: the paper's retrieval
// benchmark (Table 2) on the Flan pool and test files.
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "eval/flan.h"
#include "eval/recipe.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: ramole retrieve-eval --pool config2.json --test combined_test.json [options]\n\n"
            "Builds every pool task's key (mean embedding of its sample inputs), retrieves\n"
            "the top 8 for every test request and prints the share whose own task adapter\n"
            "is in the top 1/3/5/8, over all tasks and split into seen/unseen (the tasks the\n"
            "learned embedder was trained on, a seeded share of them).\n\n"
            "  --embedder NAME     lexical | hashproj | shape | script | hybrid | hybrid-learned\n"
            "                      (default: %s)\n"
            "  --train-frac F      share of tasks used for training (default 0.4)\n"
            "  --seed S            seed of the task split and the training (default 1)\n"
            "  --pool-loo          tuning objective without the test file: leave-one-out on\n"
            "                      the pool (each sample input is a query; its own task's key\n"
            "                      is made from the task's other samples); --test not needed\n"
            "  --ood               exclude each request's own task adapter; report where the\n"
            "                      top k come from (same domain or not)\n"
            "  --keys T            key storage f32 | f16 | int8 (default f32)\n"
            "  --json              print the figures as JSON on stdout\n"
            "  --confusions        list the wrong top-1 (true -> retrieved) pairs\n"
            "  --save-embedder P   save the (trained) embedder to P\n"
            "  --threads N         threads (default 2)\n"
            "  --steps N --temp T --lr L --dim D --bits B --alpha A   training / model knobs\n"
            "  --wmax N --cmin N --cmax N --word-weight W            feature knobs\n"
            "  --shape W --script W                                  hybrid part weights (0: off)\n"
            "  --rerank K --rerank-w W --rerank-top M   second stage (rerank.h): the top K\n"
            "                      re-scored as score + W x mean of the M best query-sample\n"
            "                      similarities (default 5 / 1 / 1, K up to 64; 0: keys only)\n"
            "  --protos N --proto-mix X --proto-min M --proto-iters I   first stage over up to\n"
            "                      N prototypes per task (proto.h: spherical k-means of its\n"
            "                      samples); a task scores (1 - X) x mean key + X x best\n"
            "                      prototype; clusters under M samples dropped (default 1:\n"
            "                      off / 1 / 1 / 20); --proto-tau T: a soft best,\n"
            "                      T ln mean exp(score / T) (default 0: the max)\n"
            "  --bm25-w W --bm25-k1 K --bm25-b B   the second stage's BM25 term (bm25.h):\n"
            "                      + W x BM25 of the query against the adapter's samples,\n"
            "                      normalised to [0, 1] (default 0.5 / 1.2 / 0.75; W 0: off)\n"
            "  --bm25-wmax N --bm25-cmin N --bm25-cmax N --bm25-edge N --bm25-lower 0|1\n"
            "                      BM25 features: word n-grams up to N, char n-grams N..N\n"
            "                      (max 0: none), edge weighting, case folding (default\n"
            "                      2, 2..5, 200, 0: the lexical settings)\n",
            RM_RECIPE_DEFAULT);
}

static void print_row(const char *label, const double *v, int n) {
    printf("%-8s", label);
    for (int k = 0; k < RM_EVAL_NK; k++) printf("  %6.1f", 100 * v[k]);
    printf("   (n=%d)\n", n);
}

static void json_block(rm_sb *sb, const double *v) {
    for (int k = 0; k < RM_EVAL_NK; k++) {
        rm_sb_printf(sb, "%s\"top%d\": ", k ? ", " : "", rm_eval_ks[k]);
        rm_sb_json_num(sb, 100 * v[k]);
    }
}

static void print_json(const rm_eval_result *r, const char *name, int ood) {
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_puts(&sb, "{\"embedder\": ");
    rm_sb_json_str(&sb, name, strlen(name));
    rm_sb_puts(&sb, ", ");
    json_block(&sb, r->all);
    rm_sb_printf(&sb, ", \"n\": %d, \"seen\": {", r->n);
    json_block(&sb, r->seen);
    rm_sb_printf(&sb, ", \"n\": %d}, \"unseen\": {", r->n_seen);
    json_block(&sb, r->unseen);
    rm_sb_printf(&sb, ", \"n\": %d}", r->n_unseen);
    if (ood) {
        rm_sb_puts(&sb, ", \"ood_same_domain_any\": {");
        json_block(&sb, r->ood_any);
        rm_sb_puts(&sb, "}, \"ood_same_domain_share\": {");
        json_block(&sb, r->ood_frac);
        rm_sb_puts(&sb, "}");
    }
    rm_sb_puts(&sb, "}\n");
    fputs(sb.buf ? sb.buf : "{}\n", stdout);
    rm_sb_free(&sb);
}

typedef struct {
    int n, t, p;
} conf_pair;
static int cmp_conf(const void *a, const void *b) { return ((const conf_pair *)b)->n - ((const conf_pair *)a)->n; }

static void print_confusions(const rm_eval_result *r, const rm_flan_pool *pool, const unsigned char *seen) {
    int nt = r->n_tasks, m = 0;
    conf_pair *c = malloc((size_t)nt * nt * sizeof *c);
    if (!c) return;
    for (int t = 0; t < nt; t++)
        for (int p = 0; p < nt; p++)
            if (r->confusion[t * nt + p]) c[m++] = (conf_pair){r->confusion[t * nt + p], t, p};
    qsort(c, (size_t)m, sizeof *c, cmp_conf);
    printf("\nwrong top-1 (true task -> retrieved, count of %d queries per task):\n", nt ? r->n / nt : 0);
    for (int i = 0; i < m; i++)
        printf("  %3d  %-28s -> %-28s%s\n", c[i].n, pool->tasks[c[i].t].name, pool->tasks[c[i].p].name,
               seen[c[i].t] ? "  (seen)" : "");
    m = 0;
    for (int t = 0; t < nt; t++)
        if (r->task_miss3[t]) c[m++] = (conf_pair){r->task_miss3[t], t, t};
    qsort(c, (size_t)m, sizeof *c, cmp_conf);
    printf("\nown adapter not in the top 3:\n");
    for (int i = 0; i < m; i++)
        printf("  %3d  %-28s%s\n", c[i].n, pool->tasks[c[i].t].name, seen[c[i].t] ? "  (seen)" : "");
    free(c);
}

typedef struct re_args {
    const char *pool_path, *test_path, *name, *keys, *save;
    double frac;
    long seed, threads;
    int ood, json, confusions, loo;
    rm_key_type kt;
    rm_rerank_params rr;
    rm_proto_params pr;
    rm_recipe_params rp;
} re_args;

// The command line into a; 1 after --help, 2 on an unknown option.
static int parse_args(int argc, char **argv, re_args *a) {
    *a = (re_args){.name = RM_RECIPE_DEFAULT,
                   .keys = "f32",
                   .frac = 0.4,
                   .seed = 1,
                   .threads = 2,
                   .rr = rm_rerank_default_params(),
                   .pr = rm_proto_default_params(),
                   .rp = rm_recipe_default_params()};
    for (int i = 1; i < argc; i++) {
        long lv;
        double dv;
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            usage(stdout);
            return 1;
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &a->pool_path)) {
        } else if (cli_str(argc, argv, &i, "--test", NULL, &a->test_path)) {
        } else if (cli_str(argc, argv, &i, "--embedder", "-e", &a->name)) {
        } else if (cli_float(argc, argv, &i, "--train-frac", NULL, &a->frac)) {
        } else if (cli_int(argc, argv, &i, "--seed", NULL, &a->seed)) {
        } else if (cli_flag(argc, argv, &i, "--ood", NULL)) a->ood = 1;
        else if (cli_flag(argc, argv, &i, "--pool-loo", NULL)) a->loo = 1;
        else if (cli_int(argc, argv, &i, "--rerank", NULL, &lv)) a->rr.k = (int)lv;
        else if (cli_int(argc, argv, &i, "--rerank-top", NULL, &lv)) a->rr.top = (int)lv;
        else if (cli_float(argc, argv, &i, "--rerank-w", NULL, &dv)) a->rr.w = (float)dv;
        else if (cli_int(argc, argv, &i, "--protos", NULL, &lv)) a->pr.n = (int)lv;
        else if (cli_float(argc, argv, &i, "--proto-mix", NULL, &dv)) a->pr.mix = (float)dv;
        else if (cli_int(argc, argv, &i, "--proto-min", NULL, &lv)) a->pr.min_size = (int)lv;
        else if (cli_float(argc, argv, &i, "--proto-tau", NULL, &dv)) a->pr.tau = (float)dv;
        else if (cli_int(argc, argv, &i, "--proto-iters", NULL, &lv)) a->pr.iters = (int)lv;
        else if (cli_float(argc, argv, &i, "--bm25-w", NULL, &dv)) a->rr.bm25.w = (float)dv;
        else if (cli_float(argc, argv, &i, "--bm25-k1", NULL, &dv)) a->rr.bm25.k1 = (float)dv;
        else if (cli_float(argc, argv, &i, "--bm25-b", NULL, &dv)) a->rr.bm25.b = (float)dv;
        else if (cli_int(argc, argv, &i, "--bm25-wmax", NULL, &lv)) a->rr.bm25.feat.wmax = (int)lv;
        else if (cli_int(argc, argv, &i, "--bm25-cmax", NULL, &lv)) a->rr.bm25.feat.cmax = (int)lv;
        else if (cli_int(argc, argv, &i, "--bm25-cmin", NULL, &lv)) a->rr.bm25.feat.cmin = (int)lv;
        else if (cli_int(argc, argv, &i, "--bm25-edge", NULL, &lv)) a->rr.bm25.feat.edge = (int)lv;
        else if (cli_int(argc, argv, &i, "--bm25-lower", NULL, &lv)) a->rr.bm25.feat.lowercase = (int)lv;
        else if (cli_flag(argc, argv, &i, "--json", NULL)) a->json = 1;
        else if (cli_flag(argc, argv, &i, "--confusions", NULL)) a->confusions = 1;
        else if (cli_str(argc, argv, &i, "--keys", NULL, &a->keys)) {
        } else if (cli_str(argc, argv, &i, "--save-embedder", NULL, &a->save)) {
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &a->threads)) {
        } else if (cli_int(argc, argv, &i, "--steps", NULL, &lv)) a->rp.train.steps = (int)lv;
        else if (cli_float(argc, argv, &i, "--temp", NULL, &dv)) a->rp.train.temperature = (float)dv;
        else if (cli_float(argc, argv, &i, "--lr", NULL, &dv)) a->rp.train.lr = (float)dv;
        else if (cli_float(argc, argv, &i, "--alpha", NULL, &dv)) a->rp.hybrid_weight = (float)dv;
        else if (cli_int(argc, argv, &i, "--dim", NULL, &lv)) a->rp.proj.dim = (int)lv;
        else if (cli_int(argc, argv, &i, "--center-lex", NULL, &lv)) a->rp.center_lex = (int)lv;
        else if (cli_int(argc, argv, &i, "--center-proj", NULL, &lv)) a->rp.center_proj = (int)lv;
        else if (cli_int(argc, argv, &i, "--per-task", NULL, &lv)) a->rp.train.per_task = (int)lv;
        else if (cli_int(argc, argv, &i, "--batch-tasks", NULL, &lv)) a->rp.train.tasks_per_batch = (int)lv;
        else if (cli_float(argc, argv, &i, "--wd", NULL, &dv)) a->rp.train.weight_decay = (float)dv;
        else if (cli_int(argc, argv, &i, "--min-df", NULL, &lv)) a->rp.train.min_df = (int)lv;
        else if (cli_int(argc, argv, &i, "--residual", NULL, &lv)) a->rp.residual = (int)lv;
        else if (cli_float(argc, argv, &i, "--shape", NULL, &dv)) a->rp.shape_weight = (float)dv;
        else if (cli_float(argc, argv, &i, "--script", NULL, &dv)) a->rp.script_weight = (float)dv;
        else if (cli_int(argc, argv, &i, "--lex-bits", NULL, &lv)) a->rp.lex.bits = (int)lv;
        else if (cli_int(argc, argv, &i, "--rare-df", NULL, &lv)) a->rp.lex.rare_df = (int)lv;
        else if (cli_float(argc, argv, &i, "--rare-weight", NULL, &dv)) a->rp.lex.rare_weight = (float)dv;
        else if (cli_int(argc, argv, &i, "--idf-groups", NULL, &lv)) a->rp.idf_by_adapter = (int)lv;
        else if (cli_int(argc, argv, &i, "--edge", NULL, &lv)) {
            a->rp.lex.edge = (int)lv;
            a->rp.proj.feat.edge = (int)lv;
        } else if (cli_float(argc, argv, &i, "--mid-weight", NULL, &dv)) {
            a->rp.lex.mid_weight = (float)dv;
            a->rp.proj.feat.mid_weight = (float)dv;
        } else if (cli_int(argc, argv, &i, "--lowercase", NULL, &lv)) {
            a->rp.lex.lowercase = (int)lv;
            a->rp.proj.feat.lowercase = (int)lv;
        } else if (cli_int(argc, argv, &i, "--bits", NULL, &lv)) a->rp.proj.feat.bits = (int)lv;
        else if (cli_int(argc, argv, &i, "--wmax", NULL, &lv)) {
            a->rp.lex.wmax = (int)lv;
            a->rp.proj.feat.wmax = (int)lv;
        } else if (cli_int(argc, argv, &i, "--cmin", NULL, &lv)) {
            a->rp.lex.cmin = (int)lv;
            a->rp.proj.feat.cmin = (int)lv;
        } else if (cli_int(argc, argv, &i, "--cmax", NULL, &lv)) {
            a->rp.lex.cmax = (int)lv;
            a->rp.proj.feat.cmax = (int)lv;
        } else if (cli_float(argc, argv, &i, "--word-weight", NULL, &dv)) {
            a->rp.lex.word_weight = (float)dv;
            a->rp.proj.feat.word_weight = (float)dv;
        } else {
            fprintf(stderr, "ramole retrieve-eval: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

// Refuses, with the reason, what cannot run (2); 0 when a can.
static int check_args(re_args *a) {
    const char *why = !a->pool_path                     ? "--pool FILE is required"
                      : !a->test_path && !a->loo        ? "give --test FILE or --pool-loo"
                      : a->loo && a->ood                ? "--pool-loo and --ood do not combine"
                      : !(a->frac >= 0 && a->frac <= 1) ? "--train-frac must be in [0, 1]"
                                                        : NULL;
    if (why) {
        fprintf(stderr, "ramole retrieve-eval: %s (see --help)\n", why);
        return 2;
    }
    if (a->pr.n > RM_PROTO_MAX || a->pr.min_size < 1 || a->pr.iters < 0 || !(a->pr.mix >= 0 && a->pr.mix <= 1)) {
        fprintf(stderr, "ramole retrieve-eval: --protos wants 1..%d, --proto-min >= 1, --proto-mix 0..1\n",
                RM_PROTO_MAX);
        return 2;
    }
    if (rm_key_type_parse(a->keys, &a->kt)) return cli_fail("--keys") + 1;
    a->rp.train.seed = (uint64_t)a->seed;
    a->rp.train.n_threads = (int)a->threads;
    a->rp.train.progress = 1;
    return 0;
}

// What a run holds, freed by run_free.
typedef struct re_run {
    rm_flan_pool pool;
    rm_flan_request *req;
    int n_req;
    unsigned char *seen; // the tasks of the training split
    rm_embedder *e;
    rm_eval_result res;
    double build_s, eval_s;
} re_run;

static void run_free(re_run *r) {
    rm_eval_result_free(&r->res);
    rm_embedder_free(r->e);
    free(r->seen);
    rm_flan_free_test(r->req, r->n_req);
    rm_flan_free_pool(&r->pool);
}

// Reads the files, splits the tasks, builds the embedder and evaluates it.
// Prints why and returns 1 on failure.
static int run(const re_args *a, re_run *r) {
    if (rm_flan_load_pool(a->pool_path, &r->pool)) return cli_fail("reading the pool");
    if (!a->loo && rm_flan_load_test(a->test_path, &r->pool, &r->req, &r->n_req))
        return cli_fail("reading the test set");
    if (!(r->seen = calloc((size_t)r->pool.n, 1))) return cli_fail("out of memory");
    rm_flan_split(r->pool.n, a->frac, (uint64_t)a->seed, r->seen);
    double t0 = rm_now();
    if (rm_recipe_build(a->name, &r->pool, r->seen, &a->rp, &r->e)) return cli_fail("building the embedder");
    double t1 = rm_now();
    if (a->save && rm_embedder_save(r->e, a->save)) return cli_fail("saving the embedder");
    rm_eval_params ep = {
        .ood = a->ood, .n_threads = (int)a->threads, .key_type = a->kt, .rerank = a->rr, .proto = a->pr};
    if (a->loo ? rm_flan_eval_pool_loo(r->e, &r->pool, r->seen, &ep, &r->res)
               : rm_flan_eval(r->e, &r->pool, r->req, r->n_req, r->seen, &ep, &r->res))
        return cli_fail("evaluating");
    r->build_s = t1 - t0, r->eval_s = rm_now() - t1;
    return 0;
}

// The table (or --json) on stdout.
static void report(const re_args *a, const re_run *r) {
    const rm_eval_result *res = &r->res;
    if (a->json) {
        print_json(res, r->e->name, a->ood);
        return;
    }
    int n_seen = 0;
    for (int t = 0; t < r->pool.n; t++) n_seen += r->seen[t];
    printf("embedder %s (dim %d, keys %s), %d tasks (%d seen in training, seed %ld), %d %s%s\n", r->e->name, r->e->dim,
           rm_key_type_name(a->kt), r->pool.n, n_seen, a->seed, a->loo ? res->n : r->n_req,
           a->loo ? "pool samples, leave-one-out" : "requests", a->ood ? ", own adapter excluded (OOD)" : "");
    printf("build %.1f s, eval %.1f s\n\n", r->build_s, r->eval_s);
    printf("%-8s  %6s  %6s  %6s  %6s\n", a->ood ? "own in" : "", "top1", "top3", "top5", "top8");
    print_row("all", res->all, res->n);
    print_row("seen", res->seen, res->n_seen);
    print_row("unseen", res->unseen, res->n_unseen);
    if (a->ood) {
        printf("\nOOD: where the top k come from (own task excluded)\n");
        print_row("any-dom", res->ood_any, res->n);
        print_row("dom-shr", res->ood_frac, res->n);
    }
    if (a->confusions) print_confusions(res, &r->pool, r->seen);
}

int cmd_retrieve_eval(int argc, char **argv) {
    re_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = check_args(&a))) return rc;
    re_run r = {0};
    if (!(rc = run(&a, &r))) report(&a, &r);
    run_free(&r);
    return rc;
}

// The name has a dash, which RM_COMMAND cannot paste into an identifier.
__attribute__((constructor)) static void register_cmd_retrieve_eval(void) {
    rm_cli_register("retrieve-eval", "the paper's LoRA retrieval benchmark (top-1/3/5/8, seen/unseen)",
                    cmd_retrieve_eval);
}
