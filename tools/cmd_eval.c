// cmd_eval.c — `ramole eval`: a test set of requests through the model, each
// with the adapters a method gives it (retrieved from a pool, its own task's,
// fixed, a gate's set, AdapterSoup, LoraHub, Arrow, or none), decoded greedily
// in one continuously batched run and scored per task by the request's metric;
// `--table DIR` runs every method of the paper's table on a built world. The
// work is the library's (src/eval/run.h, method.h, table.h); this file parses,
// checks, and prints.
#include "adapter_args.h"
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/progress.h"
#include "eval/run.h"
#include "eval/table.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf(
        "usage: ramole eval -m MODEL --test FILE [adapters] [options]\n"
        "       ramole eval --table DIR [table options]\n\n"
        "FILE: a JSON array or JSON lines of {\"inputs\", \"targets\"[, \"task\", \"metric\"]}, metric\n"
        "em | rouge | bleu (the paper's combined_test.json reads as it is).\n\n"
        "adapters (one way; none: the base model alone):\n"
        "  --pool DIR --retrieve K   RAMoLE: each request's K best adapters (with weights) retrieved\n"
        "                        from the pool by its input\n"
        "  --min-score S         only retrieved adapters scoring S or more (none left: base model)\n"
        "  --pool DIR --oracle   each request gets its own task's adapter (the pool entry whose task,\n"
        "                        or else name, equals the request's \"task\"): the upper bound\n"
        "  --lora PATH           the same adapter for every request; repeat for several\n"
        "  --compose MODE        selection | mixture | fusion | router (default: selection for one\n"
        "                        adapter, mixture for more)\n"
        "  --router FILE         the trained RouterLoRA for --compose router (`ramole router train`)\n"
        "  --compose moe --gate FILE --pool DIR   a trained gate over a fixed set of the pool's\n"
        "                        adapters (soft, topk, top1 or smear: `ramole gate train`)\n"
        "  --compose arrow --pool DIR [--arrow-k K]   Arrow: per token, the K (3) adapters of the\n"
        "                        pool whose leading singular vectors best fit the input\n"
        "  --exclude-own         --retrieve / moe / arrow / --method: each request's own task's adapter is left out\n"
        "  --method NAME --pool DIR [-k K]   one of the paper's methods by name (docs/eval.md):\n"
        "                        base, oracle, selection, mixture, fusion, ramole (--router FILE),\n"
        "                        moe-top1, moe-topk, moe-soft, smear (--gate FILE), adaptersoup,\n"
        "                        lorahub (--task-data DIR), arrow; with --exclude-own out of\n"
        "                        distribution (all but base and oracle). -k: adapters a request\n"
        "                        (Arrow: a token), default 3\n"
        "  --task-data DIR       lorahub: the tasks' training data, DIR/NAME.jsonl\n"
        "  --lorahub-examples N  labelled examples a task (5)\n"
        "  --lorahub-candidates N   adapters merged (20)\n"
        "  --lorahub-iterations N   CMA-ES objective evaluations (40)\n"
        "  --seed S              lorahub: the examples drawn and the search (1)\n"
        "options:\n"
        "  --template T          the prompt, \"{inputs}\" replaced by the request's input (default:\n"
        "                        the Alpaca prompt of the paper, as `ramole lora train`)\n"
        "  --template-file F     the same from a file\n"
        "  --metric M            for requests without \"metric\" (default em)\n"
        "  -n, --max-new N       new tokens per request, greedy (default 64)\n"
        "  --limit N             the first N requests of each task (default: all)\n"
        "  --slots S             requests decoded together (default 8; the table 64)\n"
        "  -t, --threads N       threads (default: all cores)\n"
        "  -c, --ctx N           positions per request (default min(model, 2048)); longer prompts\n"
        "                        keep their end (counted in the report)\n"
        "  --kv-type f32|f16     the KV cache's elements (default f32)\n"
        "  --out FILE            one JSON line per request: task, metric, inputs, targets,\n"
        "                        prediction, adapters, score\n"
        "  --json                the summary as JSON on stdout\n\n"
        "the table (--table DIR: a world from `ramole world make` + `world build`): every method\n"
        "above on DIR/combined_test.json with DIR/pool and DIR/template.txt, in distribution (own\n"
        "adapters in the pool) and out of it (--exclude-own); the trained parts from\n"
        "DIR/experiment/split-S/ (split.json, router.gguf, moe-soft.gguf, moe-topk.gguf,\n"
        "moe-top1.gguf, smear.gguf; a method whose file is missing is skipped with a note).\n"
        "A markdown table on stdout (--json: JSON instead).\n"
        "  --split-seed S        the experiment's split (default 1)\n"
        "  --methods LIST        only these methods (comma-separated names)\n"
        "  -k K                  adapters a request (a token for Arrow), default 3\n"
        "  --svg FILE            a bar chart of each method's mean, in and out of distribution\n"
        "  --md FILE             the markdown table also to FILE (with --json on stdout)\n"
        "  -m MODEL              default DIR/base.gguf; --limit, -n, --slots, -t, -c, --out, --json\n"
        "                        and the lorahub options as above\n");
}

// ---------------------------------------------------------------- progress lines

typedef struct progress_line {
    rm_progress pg;
    char stage[32];
    long total, last;
    int active;
} progress_line;

static void on_progress(void *user, const char *stage, long done, long total) {
    progress_line *p = user;
    if (!p->active || strcmp(p->stage, stage) || total != p->total || done < p->last) {
        if (p->active) rm_progress_finish(&p->pg, p->last);
        snprintf(p->stage, sizeof p->stage, "%s", stage);
        rm_progress_start(&p->pg, p->stage, !strcmp(stage, "lorahub") ? "tasks" : "requests", total);
        p->total = total, p->active = 1;
    }
    p->last = done;
    rm_progress_update(&p->pg, done, 0);
}

static void progress_end(progress_line *p) {
    if (p->active) rm_progress_finish(&p->pg, p->last);
    p->active = 0;
}

// ---------------------------------------------------------------- one method

static void print_report(const rm_run_result *r, int retrieving, int json) {
    const rm_scoreboard *sb = &r->board[0];
    int own = 0, excl = 0, n = 0;
    rm_run_result_own(r, 0, &own, &excl, &n);
    double rpf = r->forward_passes ? (double)r->rows / (double)r->forward_passes : 0;
    if (json) {
        rm_sb b;
        rm_sb_init(&b);
        rm_sb_puts(&b, "{\"tasks\": {");
        for (int i = 0; i < sb->n; i++) {
            rm_sb_puts(&b, i ? ", " : "");
            rm_sb_json_str(&b, sb->t[i].task, strlen(sb->t[i].task));
            rm_sb_printf(&b, ": {\"metric\": \"%s\", \"n\": %d, \"score\": ", rm_metric_name(sb->t[i].metric),
                         sb->t[i].n);
            rm_sb_json_num(&b, 100 * rm_task_score_value(&sb->t[i]));
            rm_sb_puts(&b, "}");
        }
        rm_sb_puts(&b, "}");
        for (int m = 0; m < RM_METRIC_COUNT; m++) {
            int nt;
            double v = rm_scoreboard_mean(sb, m, &nt);
            if (nt) {
                rm_sb_printf(&b, ", \"%s\": ", rm_metric_name((rm_metric)m));
                rm_sb_json_num(&b, 100 * v);
            }
        }
        rm_sb_puts(&b, ", \"mean\": ");
        rm_sb_json_num(&b, 100 * rm_scoreboard_mean(sb, -1, NULL));
        rm_sb_printf(
            &b,
            ", \"requests\": %d, \"truncated\": %d, \"seconds\": %.3f, \"tokens\": %ld, \"forward_passes\": %lld, "
            "\"rows_per_forward\": ",
            n, r->n_cut, r->seconds, r->tokens, r->forward_passes);
        rm_sb_json_num(&b, rpf);
        if (retrieving) {
            rm_sb_puts(&b, ", \"own_adapter_retrieved\": ");
            rm_sb_json_num(&b, n ? 100.0 * own / n : 0);
        }
        rm_sb_puts(&b, "}\n");
        if (b.buf) fputs(b.buf, stdout);
        rm_sb_free(&b);
        return;
    }
    printf("%-40s %-6s %6s %8s\n", "task", "metric", "n", "score");
    for (int i = 0; i < sb->n; i++)
        printf("%-40s %-6s %6d %8.2f\n", sb->t[i].task, rm_metric_name(sb->t[i].metric), sb->t[i].n,
               100 * rm_task_score_value(&sb->t[i]));
    printf("\n");
    for (int m = 0; m < RM_METRIC_COUNT; m++) {
        int nt;
        double v = rm_scoreboard_mean(sb, m, &nt);
        if (nt) printf("mean %-6s over %3d tasks: %6.2f\n", rm_metric_name((rm_metric)m), nt, 100 * v);
    }
    int nt;
    double all = rm_scoreboard_mean(sb, -1, &nt);
    printf("mean of all %d tasks:       %6.2f\n", nt, 100 * all);
    if (retrieving)
        printf("own task's adapter among those retrieved: %.1f%% of %d requests\n", n ? 100.0 * own / n : 0.0, n);
    printf("%d requests (%d prompts cut to the context), %ld new tokens in %.1f s (%.1f tok/s); %lld forward passes, "
           "%.1f rows each\n",
           n, r->n_cut, r->tokens, r->seconds, r->tokens / (r->seconds > 0 ? r->seconds : 1e-9), r->forward_passes,
           rpf);
}

// Writes every item of the runs r[0..n) (methods[i] those of run i) as JSON lines to path.
static int write_items(const char *path, const rm_run_result *r, rm_method *const *methods, int n) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "ramole eval: cannot write %s\n", path);
        return 1;
    }
    for (int k = 0; k < n; k++)
        for (int i = 0; i < r[k].n_items; i++) {
            rm_sb b;
            rm_sb_init(&b);
            rm_eval_item_json(&r[k].items[i], &methods[k][r[k].items[i].method], &b);
            if (b.buf) fputs(b.buf, f);
            rm_sb_free(&b);
        }
    return fclose(f) ? 1 : 0;
}

typedef struct eval_args {
    const char *model, *test, *tmpl_arg, *tmpl_file, *metric_s, *out_path, *gate;
    const char *method, *task_data, *table, *methods, *svg, *md;
    adapter_args ad; // --retrieve 0: not retrieving
    long max_new, limit, slots, threads, ctx, arrow_k, method_k, split_seed, lh_examples, lh_cands, lh_iters, seed;
    int oracle, json, exclude_own, kv_type;
} eval_args;

// The method of the command line: --method NAME, or the older flags.
static int method_of(const eval_args *a, rm_method *m) {
    if (a->method) {
        if (rm_method_named(m, a->method, (int)a->method_k)) return cli_fail("--method");
        m->router = a->ad.router, m->gate = a->gate, m->exclude_own = a->exclude_own;
        m->lorahub.n_examples = (int)a->lh_examples, m->lorahub.n_candidates = (int)a->lh_cands;
        m->lorahub.iterations = (int)a->lh_iters, m->lorahub.seed = (uint64_t)a->seed;
        return rm_method_check(m) ? cli_fail("--method") : 0;
    }
    memset(m, 0, sizeof *m);
    m->min_score = (float)a->ad.min_score;
    m->compose = a->ad.compose; // parsed by adapter_args_check
    m->router = a->ad.router, m->exclude_own = a->exclude_own;
    if (m->compose == RM_COMPOSE_MOE) m->kind = RM_METHOD_GATE, m->gate = a->gate;
    else if (m->compose == RM_COMPOSE_ARROW) m->kind = RM_METHOD_ARROW, m->k = (int)a->arrow_k;
    else if (a->ad.k > 0) m->kind = RM_METHOD_RETRIEVE, m->k = (int)a->ad.k;
    else if (a->oracle) m->kind = RM_METHOD_ORACLE;
    else if (a->ad.n_lora) m->kind = RM_METHOD_FIXED, m->paths = a->ad.lora, m->n_paths = a->ad.n_lora;
    return rm_method_check(m) ? cli_fail("eval") : 0;
}

// The checks of --method NAME (usage errors: exit 2).
static int check_method(const eval_args *a) {
    if (a->ad.compose_s || a->ad.k > 0 || a->oracle || a->ad.n_lora || a->arrow_k != 3 || a->ad.min_score > -INFINITY) {
        fprintf(stderr, "ramole eval: --method takes -k, --router, --gate, --exclude-own and --pool, not --compose, "
                        "--retrieve, --oracle, --lora, --arrow-k or --min-score\n");
        return 2;
    }
    if (strcmp(a->method, "base") && strcmp(a->method, "lorahub") && !a->ad.pool) {
        fprintf(stderr, "ramole eval: --method %s needs --pool DIR\n", a->method);
        return 2;
    }
    if (!strcmp(a->method, "lorahub") && (!a->ad.pool || !a->task_data)) {
        fprintf(stderr, "ramole eval: --method lorahub needs --pool DIR and --task-data DIR\n");
        return 2;
    }
    return a->ad.pool ? cli_pool_present("eval", a->ad.pool) : 0;
}

// The checks of the older flags (usage errors: exit 2).
static int check_flags(eval_args *a) {
    int bad = adapter_args_check(&a->ad, "eval"); // --lora, --compose, --router, --retrieve, the pool
    if (bad) return bad;
    int mode = a->ad.compose, set_mode = mode == RM_COMPOSE_MOE || mode == RM_COMPOSE_ARROW;
    if ((mode == RM_COMPOSE_MOE) != (a->gate != NULL) || (a->exclude_own && !set_mode && a->ad.k <= 0) ||
        (a->arrow_k != 3 && !set_mode) || (set_mode && !a->ad.pool) || a->arrow_k < 1) {
        fprintf(stderr, "ramole eval: --compose moe takes --gate FILE and --pool DIR, --compose arrow --pool DIR and "
                        "--arrow-k K >= 1; --exclude-own goes with them, with --retrieve K or with --method\n");
        return 2;
    }
    if ((a->ad.k > 0) + a->oracle + (a->ad.n_lora > 0) + set_mode > 1) {
        fprintf(stderr, "ramole eval: give one of --retrieve, --oracle, --lora and --compose moe|arrow\n");
        return 2;
    }
    if ((a->ad.k > 0 || a->oracle) && !a->ad.pool) {
        fprintf(stderr, "ramole eval: --retrieve and --oracle need --pool DIR\n");
        return 2;
    }
    if (a->ad.pool && !a->ad.k && !a->oracle && !set_mode) {
        fprintf(stderr, "ramole eval: with --pool, say --retrieve K, --oracle, --compose moe|arrow or --method NAME\n");
        return 2;
    }
    return 0;
}

// Every check of the command line (usage errors: exit 2).
static int check_args(eval_args *a) {
    const char *why = a->max_new < 1 || a->max_new > 65536 ? "-n must be 1..65536"
                      : a->slots < 0 || a->slots > 1024    ? "--slots must be 0..1024"
                      : a->limit < 0                       ? "--limit must be >= 0"
                      : a->method_k < 1                    ? "-k must be >= 1"
                      : a->ctx < 0                         ? "--ctx must be >= 0"
                      : a->seed < 0 || a->split_seed < 0   ? "--seed and --split-seed must be >= 0"
                      : a->lh_examples < 1 || a->lh_cands < 1 || a->lh_iters < 1 ? "the lorahub options must be >= 1"
                      : a->tmpl_arg && a->tmpl_file ? "give --template or --template-file, not both"
                                                    : NULL;
    if (why) {
        fprintf(stderr, "ramole eval: %s\n", why);
        return 2;
    }
    if (a->table) {
        if (a->test || a->ad.pool || a->method || a->ad.compose_s || a->ad.k || a->oracle || a->ad.n_lora ||
            a->ad.router || a->gate || a->exclude_own || a->tmpl_arg || a->tmpl_file || a->task_data) {
            fprintf(stderr, "ramole eval: --table DIR takes its test set, pool, template, router and gates from DIR "
                            "(every method, both blocks)\n");
            return 2;
        }
        return 0;
    }
    if (a->methods || a->svg || a->md) {
        fprintf(stderr, "ramole eval: --methods, --svg and --md go with --table DIR\n");
        return 2;
    }
    if (!a->model || !a->test) {
        fprintf(stderr, "ramole eval: -m MODEL and --test FILE are required\n");
        return 2;
    }
    return a->method ? check_method(a) : check_flags(a);
}

// The eval parameters of the command line.
static rm_run_params params_of(const eval_args *a, progress_line *pl) {
    rm_run_params p = rm_run_default_params();
    p.max_new = (int)a->max_new, p.ctx = (int)a->ctx, p.limit = (int)a->limit, p.task_data = a->task_data;
    p.slots = a->slots > 0 ? (int)a->slots : a->table ? 64 : 8;
    p.kv_type = a->kv_type;
    p.progress = on_progress, p.user = pl;
    return p;
}

static int eval_one(const eval_args *a) {
    rm_metric dflt;
    if (rm_metric_parse(a->metric_s, &dflt)) {
        fprintf(stderr, "ramole eval: --metric must be em, rouge or bleu\n");
        return 2;
    }
    int rc = 1;
    char *tmpl_text = NULL;
    rm_evalset set = {0};
    rm_llama *m = NULL;
    rm_pool *pool = NULL;
    rm_threadpool *tp = NULL;
    rm_eval_env *env = NULL;
    rm_run_result res = {0};
    progress_line pl = {0};
    rm_method meth;
    if (method_of(a, &meth)) return 2;
    if (a->tmpl_file) {
        size_t len;
        if (rm_read_file(a->tmpl_file, &tmpl_text, &len)) {
            cli_fail("--template-file");
            goto done;
        }
    }
    rm_run_params p = params_of(a, &pl);
    p.tmpl = tmpl_text ? tmpl_text : a->tmpl_arg;
    if (rm_evalset_load(a->test, dflt, &set)) {
        cli_fail("--test");
        goto done;
    }
    if (rm_llama_load(&m, a->model)) {
        cli_fail("cannot load model");
        goto done;
    }
    if (!m->tok) {
        fprintf(stderr, "ramole eval: %s has no tokenizer\n", a->model);
        goto done;
    }
    if (a->ad.pool && rm_pool_open_existing(a->ad.pool, &pool)) {
        cli_fail("--pool");
        goto done;
    }
    if (!(tp = rm_threadpool_create((int)a->threads))) {
        fprintf(stderr, "ramole eval: cannot start threads\n");
        goto done;
    }
    if (rm_eval_env_new(&env, m, pool, tp, &p) || rm_eval_run(env, &set, &meth, 1, &res)) {
        progress_end(&pl);
        cli_fail("eval");
        goto done;
    }
    progress_end(&pl);
    int own = 0, excl = 0, n = 0;
    rm_run_result_own(&res, 0, &own, &excl, &n);
    if (meth.exclude_own)
        fprintf(stderr, "eval: own adapter left out of the %s for %d of %d requests\n",
                meth.kind == RM_METHOD_GATE || meth.kind == RM_METHOD_ARROW ? "set" : "candidates", excl, n);
    rm_method *mp = &meth;
    if (a->out_path && write_items(a->out_path, &res, &mp, 1)) goto done;
    print_report(&res, meth.kind == RM_METHOD_RETRIEVE, a->json);
    rc = 0;
done:
    rm_run_result_free(&res);
    rm_eval_env_free(env);
    rm_threadpool_free(tp);
    if (pool) rm_pool_close(pool);
    rm_llama_free(m);
    rm_evalset_free(&set);
    free(tmpl_text);
    return rc;
}

// ---------------------------------------------------------------- the table

static int eval_table(const eval_args *a) {
    progress_line pl = {0};
    rm_table_params tp = rm_table_default_params();
    tp.dir = a->table, tp.model = a->model, tp.split_seed = (int)a->split_seed, tp.k = (int)a->method_k;
    tp.methods = a->methods, tp.threads = (int)a->threads;
    tp.eval = params_of(a, &pl);
    tp.lorahub.n_examples = (int)a->lh_examples, tp.lorahub.n_candidates = (int)a->lh_cands;
    tp.lorahub.iterations = (int)a->lh_iters, tp.lorahub.seed = (uint64_t)a->seed;
    rm_table t;
    if (rm_table_run(&tp, &t)) {
        progress_end(&pl);
        return cli_fail("eval --table");
    }
    progress_end(&pl);
    for (int i = 0; i < t.n_notes; i++) fprintf(stderr, "eval --table: %s\n", t.notes[i]);
    int rc = 0;
    rm_run_result runs[2];
    rm_method *methods[2];
    int n_runs = 0;
    for (int r = 0; r < 2; r++)
        if (t.ran_run[r]) runs[n_runs] = t.runs[r], methods[n_runs++] = t.run_methods[r];
    if (a->out_path) rc = write_items(a->out_path, runs, methods, n_runs);
    rm_sb b;
    rm_sb_init(&b);
    if (a->json) rm_table_json(&t, &b);
    else rm_table_markdown(&t, &b);
    if (b.buf) fputs(b.buf, stdout);
    if (a->md) { // the markdown beside --json's answer
        b.len = 0;
        rm_table_markdown(&t, &b);
        if (b.oom || rm_write_file_atomic(a->md, b.buf ? b.buf : "", b.len)) rc = cli_fail("--md");
    }
    rm_sb_free(&b);
    if (a->svg && rm_table_svg(&t, a->svg)) rc = cli_fail("--svg");
    rm_table_free(&t);
    return rc ? 1 : 0;
}

// The command line into a; 1 after --help, 2 on an unknown option.
static int parse_args(int argc, char **argv, eval_args *a) {
    *a = (eval_args){.metric_s = "em",
                     .max_new = 64,
                     .arrow_k = 3,
                     .method_k = 3,
                     .split_seed = 1,
                     .lh_examples = 5,
                     .lh_cands = 20,
                     .lh_iters = 40,
                     .seed = 1};
    adapter_args_init(&a->ad, 0, 0);
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 1;
        }
        if (cli_flag(argc, argv, &i, "--oracle", NULL)) a->oracle = 1;
        else if (cli_flag(argc, argv, &i, "--exclude-own", NULL)) a->exclude_own = 1;
        else if (cli_flag(argc, argv, &i, "--json", NULL)) a->json = 1;
        else if (!(adapter_args_match(argc, argv, &i, &a->ad) || cli_str(argc, argv, &i, "--model", "-m", &a->model) ||
                   cli_str(argc, argv, &i, "--test", NULL, &a->test) ||
                   cli_str(argc, argv, &i, "--gate", NULL, &a->gate) ||
                   cli_int(argc, argv, &i, "--arrow-k", NULL, &a->arrow_k) ||
                   cli_str(argc, argv, &i, "--method", NULL, &a->method) ||
                   cli_int(argc, argv, &i, "-k", NULL, &a->method_k) ||
                   cli_str(argc, argv, &i, "--task-data", NULL, &a->task_data) ||
                   cli_int(argc, argv, &i, "--lorahub-examples", NULL, &a->lh_examples) ||
                   cli_int(argc, argv, &i, "--lorahub-candidates", NULL, &a->lh_cands) ||
                   cli_int(argc, argv, &i, "--lorahub-iterations", NULL, &a->lh_iters) ||
                   cli_int(argc, argv, &i, "--seed", NULL, &a->seed) ||
                   cli_str(argc, argv, &i, "--table", NULL, &a->table) ||
                   cli_int(argc, argv, &i, "--split-seed", NULL, &a->split_seed) ||
                   cli_str(argc, argv, &i, "--methods", NULL, &a->methods) ||
                   cli_str(argc, argv, &i, "--svg", NULL, &a->svg) || cli_str(argc, argv, &i, "--md", NULL, &a->md) ||
                   cli_str(argc, argv, &i, "--template", NULL, &a->tmpl_arg) ||
                   cli_str(argc, argv, &i, "--template-file", NULL, &a->tmpl_file) ||
                   cli_str(argc, argv, &i, "--metric", NULL, &a->metric_s) ||
                   cli_int(argc, argv, &i, "--max-new", "-n", &a->max_new) ||
                   cli_int(argc, argv, &i, "--limit", NULL, &a->limit) ||
                   cli_int(argc, argv, &i, "--slots", NULL, &a->slots) ||
                   cli_int(argc, argv, &i, "--threads", "-t", &a->threads) ||
                   cli_int(argc, argv, &i, "--ctx", "-c", &a->ctx) || cli_kv_type(argc, argv, &i, &a->kv_type) ||
                   cli_str(argc, argv, &i, "--out", NULL, &a->out_path))) {
            fprintf(stderr, "ramole eval: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    return 0;
}

static int cmd_eval(int argc, char **argv) {
    eval_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = check_args(&a))) return rc;
    if (a.slots == 0 && !a.table) a.slots = 8;
    return a.table ? eval_table(&a) : eval_one(&a);
}

RM_COMMAND(eval,
           "score a model (with retrieved, oracle, fixed adapters or any of the paper's methods) on a test set, "
           "or the paper's table (--table)",
           cmd_eval)
