// cmd_eval.c — `ramole eval`: a test set of requests through the model, each
// with the adapters it gets (retrieved from a pool, its own task's, fixed,
// or none), decoded greedily in one continuously batched run and scored per
// task by the request's metric (src/eval/). The paper's mixed-task
// evaluation when the test set is combined_test.json.
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/progress.h"
#include "eval/evalset.h"
#include "lora/router.h"
#include "lora/cache.h"
#include "retrieve/pick.h"
#include "retrieve/poolset.h"
#include "serve/engine.h"
#include "train/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void help(void) {
    printf("usage: ramole eval -m MODEL --test FILE [adapters] [options]\n\n"
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
           "  --exclude-own         moe / arrow: each request's own task's adapter is left out\n"
           "options:\n"
           "  --template T          the prompt, \"{inputs}\" replaced by the request's input (default:\n"
           "                        the Alpaca prompt of the paper, as `ramole lora train`)\n"
           "  --template-file F     the same from a file\n"
           "  --metric M            for requests without \"metric\" (default em)\n"
           "  -n, --max-new N       new tokens per request, greedy (default 64)\n"
           "  --limit N             the first N requests of each task (default: all)\n"
           "  --slots S             requests decoded together (default 8)\n"
           "  -t, --threads N       threads (default: all cores)\n"
           "  -c, --ctx N           positions per request (default min(model, 2048)); longer prompts\n"
           "                        keep their end (counted in the report)\n"
           "  --out FILE            one JSON line per request: task, metric, inputs, targets,\n"
           "                        prediction, adapters, score\n"
           "  --json                the summary as JSON on stdout\n");
}

typedef struct item {
    const rm_eval_req *req;
    rm_pick pick;     // adapters applied (names and scores)
    int own_in_pick;    // the request's task adapter was among them (retrieval)
    int32_t *out;
    int n_out, failed;
    int *n_done;        // the run's count of finished requests
    char *pred;
} item;

static void on_done(void *user, const int32_t *tokens, int n, const char *reason) {
    item *it = user;
    ++*it->n_done;
    if (!tokens) { it->failed = 1; return; }
    it->out = malloc((size_t)(n ? n : 1) * sizeof *it->out);
    if (!it->out) { it->failed = 1; return; }
    memcpy(it->out, tokens, (size_t)n * sizeof *tokens);
    it->n_out = n;
}

// Text of the generated ids (end-of-generation tokens left out), trimmed.
static char *detokenize(const rm_tokenizer *tok, const int32_t *ids, int n) {
    rm_sb sb;
    rm_sb_init(&sb);
    rm_detok d;
    rm_detok_init(&d, tok);
    for (int i = 0; i < n; i++)
        if (!rm_tokenizer_is_eog(tok, ids[i])) rm_detok_push_sb(&d, ids[i], &sb);
    char tail[16];
    int k = rm_detok_flush(&d, tail, sizeof tail);
    if (k > 0) rm_sb_putn(&sb, tail, (size_t)k);
    rm_sb_putn(&sb, "", 0);
    if (sb.oom || !sb.buf) { rm_sb_free(&sb); return strdup(""); }
    size_t a = 0, b = sb.len;
    while (a < b && (sb.buf[a] == ' ' || sb.buf[a] == '\n' || sb.buf[a] == '\t' || sb.buf[a] == '\r')) a++;
    while (b > a && (sb.buf[b - 1] == ' ' || sb.buf[b - 1] == '\n' || sb.buf[b - 1] == '\t' || sb.buf[b - 1] == '\r')) b--;
    memmove(sb.buf, sb.buf + a, b - a);
    sb.buf[b - a] = 0;
    return sb.buf;
}

// Prompt ids for a request: [BOS] + the rendered template, cut to keep its
// end when longer than max_prompt; *cut set when it was.
static int prompt_ids(const rm_llama *m, const char *tmpl, const char *inputs, int max_prompt, int32_t **ids, int *n,
                      int *cut) {
    char *text = rm_template_render(tmpl, inputs);
    if (!text) return RM_ENOMEM;
    int32_t *body = NULL;
    int nb = 0, rc = rm_tokenize_text(m->tok, text, &body, &nb);
    free(text);
    if (rc) return rc;
    int bos = m->add_bos && m->bos >= 0, keep = nb;
    *cut = bos + nb > max_prompt;
    if (*cut) keep = max_prompt - bos;
    *ids = malloc((size_t)(bos + keep + 1) * sizeof **ids);
    if (!*ids) { free(body); return rm_errorf(RM_ENOMEM, "out of memory"); }
    if (bos) (*ids)[0] = m->bos;
    memcpy(*ids + bos, body + (nb - keep), (size_t)keep * sizeof *body);
    *n = bos + keep;
    free(body);
    return RM_OK;
}

static void write_item(FILE *f, const item *it, double score) {
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_puts(&b, "{\"task\": ");
    rm_sb_json_str(&b, it->req->task, strlen(it->req->task));
    rm_sb_printf(&b, ", \"metric\": \"%s\", \"inputs\": ", rm_metric_name(it->req->metric));
    rm_sb_json_str(&b, it->req->inputs, strlen(it->req->inputs));
    rm_sb_puts(&b, ", \"targets\": ");
    rm_sb_json_str(&b, it->req->targets, strlen(it->req->targets));
    rm_sb_puts(&b, ", \"prediction\": ");
    rm_sb_json_str(&b, it->pred, strlen(it->pred));
    rm_sb_puts(&b, ", \"adapters\": [");
    for (int i = 0; i < it->pick.n; i++) {
        rm_sb_puts(&b, i ? ", " : "");
        rm_sb_json_str(&b, it->pick.name[i], strlen(it->pick.name[i]));
    }
    rm_sb_puts(&b, "], \"score\": ");
    rm_sb_json_num(&b, score);
    rm_sb_puts(&b, "}\n");
    if (b.buf) fputs(b.buf, f);
    rm_sb_free(&b);
}

static void print_report(const rm_scoreboard *sb, const item *items, int n, int retrieving, int n_cut, double secs,
                         long n_tokens, int json) {
    int hit = 0;
    for (int i = 0; i < n; i++) hit += items[i].own_in_pick;
    if (json) {
        rm_sb b;
        rm_sb_init(&b);
        rm_sb_puts(&b, "{\"tasks\": {");
        for (int i = 0; i < sb->n; i++) {
            rm_sb_puts(&b, i ? ", " : "");
            rm_sb_json_str(&b, sb->t[i].task, strlen(sb->t[i].task));
            rm_sb_printf(&b, ": {\"metric\": \"%s\", \"n\": %d, \"score\": ", rm_metric_name(sb->t[i].metric), sb->t[i].n);
            rm_sb_json_num(&b, 100 * rm_task_score_value(&sb->t[i]));
            rm_sb_puts(&b, "}");
        }
        rm_sb_puts(&b, "}");
        for (int m = 0; m < RM_METRIC_COUNT; m++) {
            int nt;
            double v = rm_scoreboard_mean(sb, m, &nt);
            if (nt) { rm_sb_printf(&b, ", \"%s\": ", rm_metric_name((rm_metric)m)); rm_sb_json_num(&b, 100 * v); }
        }
        rm_sb_puts(&b, ", \"mean\": ");
        rm_sb_json_num(&b, 100 * rm_scoreboard_mean(sb, -1, NULL));
        rm_sb_printf(&b, ", \"requests\": %d, \"truncated\": %d, \"seconds\": %.3f, \"tokens\": %ld", n, n_cut, secs, n_tokens);
        if (retrieving) { rm_sb_puts(&b, ", \"own_adapter_retrieved\": "); rm_sb_json_num(&b, 100.0 * hit / n); }
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
    if (retrieving) printf("own task's adapter among those retrieved: %.1f%% of %d requests\n", 100.0 * hit / n, n);
    printf("%d requests (%d prompts cut to the context), %ld new tokens in %.1f s (%.1f tok/s)\n", n, n_cut, n_tokens, secs,
           n_tokens / (secs > 0 ? secs : 1e-9));
}

static int cmd_eval(int argc, char **argv) {
    const char *model = NULL, *test = NULL, *pool_dir = NULL, *compose_s = NULL, *tmpl_arg = NULL, *tmpl_file = NULL;
    const char *metric_s = "em", *out_path = NULL, *lora[RM_PLAN_MAX], *router_path = NULL, *gate_path = NULL;
    long k = 0, max_new = 64, limit = 0, slots = 8, threads = 0, ctx = 0, arrow_k = 3;
    double min_score = -INFINITY;
    int oracle = 0, json = 0, n_lora = 0, exclude_own = 0, n_excluded = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (cli_str(argc, argv, &i, "--model", "-m", &model)) {}
        else if (cli_str(argc, argv, &i, "--test", NULL, &test)) {}
        else if (cli_str(argc, argv, &i, "--pool", NULL, &pool_dir)) {}
        else if (cli_int(argc, argv, &i, "--retrieve", NULL, &k)) {}
        else if (cli_float(argc, argv, &i, "--min-score", NULL, &min_score)) {}
        else if (cli_flag(argc, argv, &i, "--oracle", NULL)) oracle = 1;
        else if (cli_str(argc, argv, &i, "--lora", NULL, &lora[n_lora < RM_PLAN_MAX ? n_lora : 0])) n_lora++;
        else if (cli_str(argc, argv, &i, "--compose", NULL, &compose_s)) {}
        else if (cli_str(argc, argv, &i, "--router", NULL, &router_path)) {}
        else if (cli_str(argc, argv, &i, "--gate", NULL, &gate_path)) {}
        else if (cli_int(argc, argv, &i, "--arrow-k", NULL, &arrow_k)) {}
        else if (cli_flag(argc, argv, &i, "--exclude-own", NULL)) exclude_own = 1;
        else if (cli_str(argc, argv, &i, "--template", NULL, &tmpl_arg)) {}
        else if (cli_str(argc, argv, &i, "--template-file", NULL, &tmpl_file)) {}
        else if (cli_str(argc, argv, &i, "--metric", NULL, &metric_s)) {}
        else if (cli_int(argc, argv, &i, "--max-new", "-n", &max_new)) {}
        else if (cli_int(argc, argv, &i, "--limit", NULL, &limit)) {}
        else if (cli_int(argc, argv, &i, "--slots", NULL, &slots)) {}
        else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {}
        else if (cli_int(argc, argv, &i, "--ctx", "-c", &ctx)) {}
        else if (cli_str(argc, argv, &i, "--out", NULL, &out_path)) {}
        else if (cli_flag(argc, argv, &i, "--json", NULL)) json = 1;
        else { fprintf(stderr, "ramole eval: unknown option '%s' (see --help)\n", argv[i]); return 2; }
    }
    if (!model || !test) { fprintf(stderr, "ramole eval: -m MODEL and --test FILE are required\n"); return 2; }
    rm_metric dflt;
    if (rm_metric_parse(metric_s, &dflt)) { fprintf(stderr, "ramole eval: --metric must be em, rouge or bleu\n"); return 2; }
    rm_compose_mode mode = RM_COMPOSE_MIXTURE;
    if (compose_s && rm_compose_parse(compose_s, &mode)) return cli_fail("--compose");
    if ((compose_s && mode == RM_COMPOSE_ROUTER) != (router_path != NULL)) {
        fprintf(stderr, "ramole eval: %s\n", router_path ? "--router goes with --compose router" : "--compose router needs --router FILE");
        return 2;
    }
    int over_set = compose_s && (mode == RM_COMPOSE_MOE || mode == RM_COMPOSE_ARROW);
    if ((compose_s && mode == RM_COMPOSE_MOE) != (gate_path != NULL) || ((exclude_own || arrow_k != 3) && !over_set) ||
        (over_set && !pool_dir) || arrow_k < 1) {
        fprintf(stderr, "ramole eval: --compose moe takes --gate FILE and --pool DIR, --compose arrow --pool DIR and "
                "--arrow-k K >= 1; --exclude-own goes with them\n");
        return 2;
    }
    int ways = (k > 0) + oracle + (n_lora > 0) + over_set;
    if (ways > 1) { fprintf(stderr, "ramole eval: give one of --retrieve, --oracle, --lora and --compose moe|arrow\n"); return 2; }
    if ((k > 0 || oracle) && !pool_dir) { fprintf(stderr, "ramole eval: --retrieve and --oracle need --pool DIR\n"); return 2; }
    if (pool_dir && !k && !oracle && !over_set) {
        fprintf(stderr, "ramole eval: with --pool, say --retrieve K, --oracle or --compose moe|arrow\n");
        return 2;
    }
    if (k < 0 || k > RM_PLAN_MAX || n_lora > RM_PLAN_MAX) {
        fprintf(stderr, "ramole eval: at most %d adapters a request\n", RM_PLAN_MAX);
        return 2;
    }
    if (max_new < 1 || max_new > 65536 || slots < 1 || slots > 1024 || limit < 0) {
        fprintf(stderr, "ramole eval: bad --max-new, --slots or --limit\n");
        return 2;
    }
    if (tmpl_arg && tmpl_file) { fprintf(stderr, "ramole eval: give --template or --template-file, not both\n"); return 2; }

    int rc = 1, n_cut = 0, n_items = 0, n_done = 0, retrieving = k > 0;
    char *tmpl_text = NULL;
    rm_evalset set = {0};
    rm_llama *m = NULL;
    rm_pool *pool = NULL;
    rm_adapter_info *list = NULL;
    int n_list = 0;
    rm_threadpool *tp = NULL;
    rm_engine *eng = NULL;
    rm_lora *router = NULL;
    rm_gate *gate = NULL;
    rm_lora_set *fixed = NULL; // moe, arrow: the fixed adapter set
    rm_lora_cache cache = {0};
    item *items = NULL;
    rm_scoreboard sb = {0};
    FILE *out = NULL;
    if (tmpl_file) {
        size_t len;
        if (rm_read_file(tmpl_file, &tmpl_text, &len)) { cli_fail("--template-file"); goto done; }
    }
    const char *tmpl = tmpl_text ? tmpl_text : tmpl_arg ? tmpl_arg : rm_alpaca_template;
    if (rm_evalset_load(test, dflt, &set)) { cli_fail("--test"); goto done; }
    if (rm_llama_load(&m, model)) { cli_fail("cannot load model"); goto done; }
    if (!m->tok) { fprintf(stderr, "ramole eval: %s has no tokenizer\n", model); goto done; }
    cache.m = m;
    if (pool_dir && rm_pool_open_existing(pool_dir, &pool)) { cli_fail("--pool"); goto done; }
    if (oracle && rm_pool_list(pool, &list, &n_list)) { cli_fail("--pool"); goto done; }
    if (ctx <= 0) ctx = m->hp.n_ctx_train > 0 && m->hp.n_ctx_train < 2048 ? m->hp.n_ctx_train : 2048;
    if (ctx <= max_new + 1) { fprintf(stderr, "ramole eval: --ctx %ld leaves no room for a prompt\n", ctx); goto done; }
    if (!(tp = rm_threadpool_create((int)threads))) { fprintf(stderr, "ramole eval: cannot start threads\n"); goto done; }
    if (rm_engine_new(&eng, m, tp, (int)slots, (int)ctx, 512)) { cli_fail("engine"); goto done; }
    if (router_path) {
        if (rm_router_load(&router, router_path, m)) { cli_fail("--router"); goto done; }
        rm_engine_set_router(eng, router);
    }
    if (over_set && (gate_path ? rm_pool_load_gate(pool, m, gate_path, &gate, &fixed) : rm_pool_load_set_all(pool, m, &fixed))) {
        cli_fail(gate_path ? "--gate" : "--pool");
        goto done;
    }
    if (!(items = calloc((size_t)set.n, sizeof *items))) { fprintf(stderr, "ramole eval: out of memory\n"); goto done; }
    if (out_path && !(out = fopen(out_path, "w"))) { fprintf(stderr, "ramole eval: cannot write %s\n", out_path); goto done; }

    // choose every request's adapters and queue it
    rm_progress pg;
    rm_progress_start(&pg, k > 0 ? "retrieve" : "prepare", "requests", set.n);
    for (int i = 0; i < set.n; i++) {
        const rm_eval_req *r = &set.r[i];
        if (limit) {
            int seen = 0;
            for (int j = 0; j < n_items; j++) seen += !strcmp(items[j].req->task, r->task);
            if (seen >= limit) continue;
        }
        item *it = &items[n_items++];
        it->req = r, it->n_done = &n_done;
        int e = 0;
        if (k > 0) {
            e = rm_pool_pick(pool, r->inputs, (int)k, (float)min_score, &it->pick);
            for (int j = 0; !e && j < it->pick.n; j++) it->own_in_pick |= !strcmp(it->pick.task[j], r->task);
        } else if (oracle) {
            const rm_adapter_info *a = rm_pool_task_entry(list, n_list, r->task);
            if (!a) { fprintf(stderr, "ramole eval: the pool has no adapter with weights for task '%s'\n", r->task); goto done; }
            e = rm_pick_push(&it->pick, a->name, a->weights, a->task, 1.0f);
        } else {
            for (int j = 0; !e && j < n_lora; j++) e = rm_pick_push(&it->pick, lora[j], lora[j], NULL, 1.0f);
        }
        if (e) { cli_fail("adapters"); goto done; }
        rm_lora *ls[RM_PLAN_MAX];
        for (int j = 0; j < it->pick.n; j++)
            if (rm_lora_cache_get(&cache, it->pick.name[j], it->pick.weights[j], &ls[j])) { cli_fail("adapters"); goto done; }
        int32_t *ids = NULL;
        int n_ids = 0, cut = 0;
        if (prompt_ids(m, tmpl, r->inputs, (int)(ctx - max_new), &ids, &n_ids, &cut)) { cli_fail("prompt"); goto done; }
        n_cut += cut;
        rm_sampler_params sp = rm_sampler_default_params();
        sp.temperature = 0;
        rm_compose_mode md = compose_s ? mode : it->pick.n == 1 ? RM_COMPOSE_SELECTION : RM_COMPOSE_MIXTURE;
        rm_engine_cbs cb = {on_done, NULL, it};
        rm_lora_plan plan;
        int ex = 0;
        if (fixed && !(e = rm_lora_plan_init_for_task(&plan, fixed, gate, (int)arrow_k, r->task, exclude_own, &ex)))
            e = rm_engine_submit_plan(eng, ids, n_ids, (int)max_new, &sp, &plan, &cb);
        else if (!fixed)
            e = rm_engine_submit(eng, ids, n_ids, (int)max_new, &sp, ls, it->pick.n, md, &cb);
        n_excluded += ex;
        free(ids);
        if (e) { rm_error_prefix(e, "request %d (task %s)", i + 1, r->task); cli_fail("eval"); goto done; }
        rm_progress_update(&pg, i + 1, 0);
    }
    rm_progress_finish(&pg, set.n);
    if (exclude_own) fprintf(stderr, "eval: own adapter left out of the set for %d of %d requests\n", n_excluded, n_items);

    // run them all, continuously batched
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rm_progress_start(&pg, "generate", "requests", n_items);
    long n_tokens = 0;
    for (;;) {
        int left = rm_engine_step(eng);
        if (left < 0) { cli_fail("forward pass"); goto done; }
        rm_progress_update(&pg, n_done, 0);
        if (left == 0) break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    rm_progress_finish(&pg, n_items);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

    for (int i = 0; i < n_items; i++) {
        item *it = &items[i];
        if (it->failed) { fprintf(stderr, "ramole eval: request %d failed: %s\n", i + 1, rm_last_error()); goto done; }
        n_tokens += it->n_out;
        if (!(it->pred = detokenize(m->tok, it->out, it->n_out))) { fprintf(stderr, "ramole eval: out of memory\n"); goto done; }
        double score;
        if (rm_scoreboard_add(&sb, it->req, it->pred, &score)) { cli_fail("scoring"); goto done; }
        if (out) write_item(out, it, score);
    }
    print_report(&sb, items, n_items, retrieving, n_cut, secs, n_tokens, json);
    rc = 0;
done:
    if (out) fclose(out);
    for (int i = 0; items && i < set.n; i++) {
        rm_pick_free(&items[i].pick);
        free(items[i].out);
        free(items[i].pred);
    }
    free(items);
    rm_scoreboard_free(&sb);
    rm_engine_free(eng);
    rm_lora_free(router);
    rm_lora_set_free(fixed);
    rm_gate_free(gate);
    rm_lora_cache_free(&cache);
    rm_threadpool_free(tp);
    if (list) rm_pool_free_list(list, n_list);
    if (pool) rm_pool_close(pool);
    rm_llama_free(m);
    rm_evalset_free(&set);
    free(tmpl_text);
    return rc;
}

RM_COMMAND(eval, "score a model (with retrieved, oracle or fixed adapters) on a test set: EM, ROUGE, BLEU by task",
           cmd_eval)
