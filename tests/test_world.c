// test_world.c — the synthetic mixed-task world: the files `world make`
// writes are in the paper's formats and read by the commands that read the
// paper's files (the Flan pool and test loaders, the eval loader), every
// request is new, the world is a function of its seed, and bad worlds are
// refused with the file and the record named.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "eval/evalset.h"
#include "eval/world.h"
#include "eval/worldcheck.h"
#include "eval/flan.h"

#include <stdlib.h>
#include <string.h>

// A small world made once per test run in the tmpdir of the first test that asks.
static const char *small_world(void) {
    static char dir[600];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s/world-small", rm_test_tmpdir());
        rm_world_report rep;
        if (rm_world_make(dir, 7, RM_WORLD_SMALL, &rep)) return NULL;
    }
    return dir;
}

typedef struct texts {
    char **s;
    int n, cap;
} texts;

static int collect_inputs(void *user, const rm_json *rec, long index) {
    texts *t = user;
    const char *in = rm_json_get_str(rec, "inputs", NULL);
    if (!in || !rm_json_get_str(rec, "targets", NULL))
        return rm_errorf(RM_EFORMAT, "record %ld without inputs/targets", index);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 1024;
        t->s = realloc(t->s, (size_t)t->cap * sizeof *t->s);
    }
    t->s[t->n++] = strdup(in);
    return RM_OK;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (rm_read_file(a, &x, &nx)) return 0;
    if (rm_read_file(b, &y, &ny)) {
        free(x);
        return 0;
    }
    int eq = nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return eq;
}

// The small world's files: the pool (config.json) and the mixed test
// (combined_test.json) load with the Flan loaders as the paper's files do,
// every task has its 20 samples, 25 test requests with a known metric,
// training and validation files; clusters and tasks as promised.
TEST(world_make_writes_the_papers_formats) {
    const char *dir = small_world();
    REQUIRE(dir);
    const rm_world_task *tasks;
    int nt = rm_world_tasks(RM_WORLD_SMALL, &tasks), nc = 0;
    for (int i = 0; i < nt; i++) nc += i == 0 || strcmp(tasks[i].cluster, tasks[i - 1].cluster);
    CHECK(nt >= 12 && nc >= 4);
    const rm_world_task *full;
    int nf = rm_world_tasks(RM_WORLD_FULL, &full), ncf = 0;
    for (int i = 0; i < nf; i++) ncf += i == 0 || strcmp(full[i].cluster, full[i - 1].cluster);
    CHECK(nf >= 48 && ncf >= 10);

    char path[800];
    rm_flan_pool pool = {0};
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK_OK(rm_flan_load_pool(path, &pool));
    CHECK(pool.n == nt);
    for (int i = 0; i < pool.n && i < nt; i++) {
        CHECK(!strcmp(pool.tasks[i].name, tasks[i].name) && !strcmp(pool.tasks[i].domain, tasks[i].cluster));
        CHECK(pool.tasks[i].n == 20 && pool.tasks[i].targets && pool.tasks[i].targets[0]);
    }
    rm_flan_request *req = NULL;
    int nr = 0;
    snprintf(path, sizeof path, "%s/combined_test.json", dir);
    CHECK_OK(rm_flan_load_test(path, &pool, &req, &nr));
    CHECK(nr == 25 * nt);
    rm_flan_free_test(req, nr);
    rm_flan_free_pool(&pool);

    rm_evalset set = {0};
    CHECK_OK(rm_evalset_load(path, RM_METRIC_EM, &set));
    CHECK(set.n == 25 * nt);
    int per_task[64] = {0};
    for (int i = 0; i < set.n; i++)
        for (int t = 0; t < nt && t < 64; t++)
            if (!strcmp(set.r[i].task, tasks[t].name)) {
                per_task[t]++;
                rm_metric m;
                CHECK(rm_metric_parse(tasks[t].metric, &m) == RM_OK && m == set.r[i].metric);
            }
    for (int t = 0; t < nt && t < 64; t++)
        CHECKF(per_task[t] == 25, "%s: %d test requests", tasks[t].name, per_task[t]);
    rm_evalset_free(&set);
    // the test's requests carry the paper's keys
    rm_json *j = NULL;
    CHECK_OK(rm_json_parse_file(path, &j));
    REQUIRE(j && j->type == RM_JSON_ARRAY && j->n > 0);
    const char *keys[5] = {"inputs", "targets", "task", "domain", "metric"};
    for (int k = 0; k < 5; k++) CHECKF(rm_json_get_str(&j->items[0], keys[k], NULL), "no \"%s\"", keys[k]);
    rm_json_free(j);
    const char *files[] = {"world.json", "corpus.txt", "base.json", "template.txt"};
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[k]);
        CHECKF(rm_file_exists(path), "%s", path);
    }
    rm_world_plan plan = rm_world_plan_for(RM_WORLD_SMALL);
    CHECK(plan.n_test >= 25);
    for (int t = 0; t < nt; t++) {
        texts tr = {0};
        snprintf(path, sizeof path, "%s/tasks/%s.jsonl", dir, tasks[t].name);
        CHECK_OK(rm_json_each_record(path, collect_inputs, &tr));
        CHECK(tr.n == plan.n_train);
        for (int i = 0; i < tr.n; i++) free(tr.s[i]);
        free(tr.s);
    }
}

// No request text appears twice anywhere: training, validation, pool samples, test.
TEST(world_requests_are_never_repeated) {
    const char *dir = small_world();
    REQUIRE(dir);
    const rm_world_task *tasks;
    int nt = rm_world_tasks(RM_WORLD_SMALL, &tasks);
    texts all = {0};
    char path[800];
    for (int t = 0; t < nt; t++) {
        const char *kinds[3] = {"tasks/%s.jsonl", "tasks/%s.valid.jsonl", "samples/%s.jsonl"};
        for (int k = 0; k < 3; k++) {
            char rel[300];
            snprintf(rel, sizeof rel, kinds[k], tasks[t].name);
            snprintf(path, sizeof path, "%s/%s", dir, rel);
            CHECK_OK(rm_json_each_record(path, collect_inputs, &all));
        }
    }
    snprintf(path, sizeof path, "%s/combined_test.json", dir);
    CHECK_OK(rm_json_each_record(path, collect_inputs, &all));
    rm_world_plan plan = rm_world_plan_for(RM_WORLD_SMALL);
    CHECK(all.n == nt * (plan.n_train + plan.n_valid + plan.n_samples + plan.n_test));
    qsort(all.s, (size_t)all.n, sizeof *all.s, cmp_str);
    int dup = 0;
    for (int i = 1; i < all.n; i++) dup += !strcmp(all.s[i], all.s[i - 1]);
    CHECKF(dup == 0, "%d repeated requests", dup);
    for (int i = 0; i < all.n; i++) free(all.s[i]);
    free(all.s);
}

// The same seed gives the same bytes; another seed another world.
TEST(world_is_a_function_of_its_seed) {
    const char *dir = small_world();
    REQUIRE(dir);
    char again[600], other[600], a[800], b[800];
    snprintf(again, sizeof again, "%s/world-again", rm_test_tmpdir());
    snprintf(other, sizeof other, "%s/world-other", rm_test_tmpdir());
    rm_world_report rep;
    CHECK_OK(rm_world_make(again, 7, RM_WORLD_SMALL, &rep));
    CHECK_OK(rm_world_make(other, 8, RM_WORLD_SMALL, &rep));
    const char *files[] = {"combined_test.json", "config.json", "corpus.txt", "tasks/count_animals.jsonl",
                           "world.json"};
    for (int k = 0; k < 5; k++) {
        snprintf(a, sizeof a, "%s/%s", dir, files[k]);
        snprintf(b, sizeof b, "%s/%s", again, files[k]);
        CHECKF(files_equal(a, b), "%s differs for the same seed", files[k]);
        snprintf(b, sizeof b, "%s/%s", other, files[k]);
        if (k < 4) CHECKF(!files_equal(a, b), "%s is the same for another seed", files[k]);
    }
}

// Refusals with the file and the record named: an unknown size; a build of a
// folder that is no world; a world.json with a duplicate task or a task's
// adapter steps below one; a task file
// whose record lacks a field (lora train); a test request with an unknown
// metric (eval).
TEST(world_bad_input_is_named) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *tmp = rm_test_tmpdir();
    char args[2048], path[800];
    snprintf(args, sizeof args, "world make --out %s/w-bad --size huge", tmp);
    CHECK(rm_test_cli(args) == 2 && strstr(rm_test_cli_err(), "huge"));
    snprintf(args, sizeof args, "world build %s", tmp);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "world.json"));
    snprintf(path, sizeof path, "%s/w-dup", tmp);
    CHECK_OK(rm_mkdirs(path));
    snprintf(path, sizeof path, "%s/w-dup/world.json", tmp);
    const char *dup =
        "{\"adapter\": {}, \"tasks\": [{\"name\": \"a\", \"cluster\": \"x\"}, {\"name\": \"a\", \"cluster\": \"y\"}]}";
    CHECK_OK(rm_write_file_atomic(path, dup, strlen(dup)));
    snprintf(args, sizeof args, "world build %s/w-dup", tmp);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "\"a\" is taken by task 1") &&
          strstr(rm_test_cli_err(), "world.json"));
    // a task whose own adapter steps are not a count
    const char *steps0 = "{\"adapter\": {}, \"tasks\": [{\"name\": \"a\", \"cluster\": \"x\"}, "
                         "{\"name\": \"b\", \"cluster\": \"x\", \"adapter_steps\": 0}]}";
    CHECK_OK(rm_write_file_atomic(path, steps0, strlen(steps0)));
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "task 2 (b)") &&
          strstr(rm_test_cli_err(), "adapter_steps") && strstr(rm_test_cli_err(), "world.json"));

    // a training file with a record missing its targets
    char data[800], model[800];
    snprintf(data, sizeof data, "%s/bad-task.jsonl", tmp);
    const char *bad = "{\"inputs\": \"a\", \"targets\": \"b\"}\n{\"inputs\": \"c\"}\n";
    CHECK_OK(rm_write_file_atomic(data, bad, strlen(bad)));
    snprintf(model, sizeof model, "%s/tiny.gguf", tmp);
    snprintf(args, sizeof args, "synth --shape tiny --type f32 %s", model);
    REQUIRE(rm_test_cli(args) == 0);
    snprintf(args, sizeof args, "lora train --base %s --data %s --out %s/ad --steps 1", model, data, tmp);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "bad-task.jsonl") &&
          strstr(rm_test_cli_err(), "example 2"));
    // a test request with an unknown metric
    snprintf(data, sizeof data, "%s/bad-test.json", tmp);
    const char *badm = "[{\"inputs\": \"a\", \"targets\": \"b\", \"task\": \"t\", \"metric\": \"meteor\"}]";
    CHECK_OK(rm_write_file_atomic(data, badm, strlen(badm)));
    snprintf(args, sizeof args, "eval -m %s --test %s", model, data);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "bad-test.json") &&
          strstr(rm_test_cli_err(), "request 1") && strstr(rm_test_cli_err(), "meteor"));
}

// ---- the small world built and scored end to end (optimized suite only)

// The score of method m's block b ("iid"/"ood") key k in the table's JSON (NAN: absent).
static double table_num(const rm_json *t, const char *b, const char *m, const char *k) {
    const rm_json *blk = rm_json_get(t, b), *row = blk ? rm_json_get(blk, m) : NULL,
                  *v = row ? rm_json_get(row, k) : NULL;
    return v && v->type == RM_JSON_NUMBER ? v->num : NAN;
}

// dir/rel in buf.
static const char *pathf_(char *buf, size_t cap, const char *dir, const char *rel) {
    snprintf(buf, cap, "%s/%s", dir, rel);
    return buf;
}

// One JSON object from stdout of the last CLI run (NULL when it is none).
static rm_json *cli_json(void) {
    const char *out = rm_test_cli_out();
    rm_json *j = NULL;
    if (!out || rm_json_parse(out, strlen(out), "stdout", &j)) return NULL;
    return j;
}

// `world make` + `world build` of the small world, then what must hold for
// the paper's experiment to mean anything: each task's own adapter far above
// the base model, a sibling's adapter above a foreign one; the generator's
// files read by `retrieve-eval` with retrieval far above chance; the table
// with orderings that break when a method does (perfect selection far above
// the base, selection above mixture where the adapters conflict, RAMoLE out
// of distribution above the base); an adapter uploaded through a running
// server's POST /v1/adapters into the world's pool retrieved for its task's
// requests at once; a vanished adapter file named when it is needed.
TEST(world_small_built_and_scored) {
    if (rm_test_sanitized())
        SKIP("sanitized: the build trains a model and 12 adapters (minutes); the optimized run does it");
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char dir[600], args[4096], path[900];
    snprintf(dir, sizeof dir, "%s/world-built", rm_test_tmpdir());
    snprintf(args, sizeof args, "world make --out %s --seed 7 --size small", dir);
    REQUIRE(rm_test_cli(args) == 0);
    snprintf(args, sizeof args, "world build %s -t 2", dir);
    REQUIRE(rm_test_cli(args) == 0);
    const char *must[] = {"config.json", "combined_test.json", "base.gguf", "pool/pool.db",
                          "experiment/split-1/router.gguf"};
    for (int k = 0; k < 5; k++) CHECKF(rm_file_exists(pathf_(path, sizeof path, dir, must[k])), "no %s", must[k]);

    // sanity figures: base, own, sibling, foreign
    rm_world_check_params cp = rm_world_check_default_params();
    cp.dir = dir;
    cp.threads = 2;
    rm_world_check wc = {0};
    CHECK_OK(rm_world_check_run(&cp, &wc));
    rm_world_sanity s;
    rm_world_check_sanity(&wc, &s);
    fprintf(stderr,
            "    small world: base %.1f, own %.1f (lowest %.1f), best sibling %+.1f over base, best foreign %+.1f, "
            "foreign mean %+.1f\n",
            s.base, s.own, s.own_min, s.sibling_gain, s.foreign_best_gain, s.foreign_mean_gain);
    CHECKF(s.own >= s.base + 50, "own adapters %.1f vs base %.1f", s.own, s.base);
    CHECKF(s.sibling_gain > s.foreign_mean_gain + 10, "sibling %+.1f vs foreign %+.1f", s.sibling_gain,
           s.foreign_mean_gain);
    rm_world_check_free(&wc);

    // the paper's files as the generator wrote them, read by retrieve-eval (12 tasks: chance is 8% top-1)
    snprintf(args, sizeof args, "retrieve-eval --pool %s/config.json --test %s/combined_test.json --json", dir, dir);
    CHECK(rm_test_cli(args) == 0);
    rm_json *r = cli_json();
    const rm_json *top1 = r ? rm_json_get(r, "top1") : NULL, *top3 = r ? rm_json_get(r, "top3") : NULL;
    double t1 = top1 ? top1->num : 0, t3 = top3 ? top3->num : 0;
    fprintf(stderr, "    retrieval: top1 %.1f, top3 %.1f\n", t1, t3);
    CHECKF(t1 >= 50 && t3 >= 80, "top1 %.1f top3 %.1f", t1, t3);
    rm_json_free(r);

    // the table
    snprintf(args, sizeof args, "eval --table %s --json -t 2", dir);
    CHECK(rm_test_cli(args) == 0);
    rm_json *t = cli_json();
    REQUIRE(t);
    double base = table_num(t, "iid", "base", "mean"), oracle = table_num(t, "iid", "oracle", "mean"),
           sel = table_num(t, "iid", "selection", "mean"), mix = table_num(t, "iid", "mixture", "mean"),
           ram_iid = table_num(t, "iid", "ramole", "mean"), ram_ood = table_num(t, "ood", "ramole", "mean"),
           base_ood = table_num(t, "ood", "base", "mean");
    fprintf(
        stderr,
        "    table: base %.1f, oracle %.1f, selection %.1f, mixture %.1f, RAMoLE %.1f; OOD: base %.1f, RAMoLE %.1f\n",
        base, oracle, sel, mix, ram_iid, base_ood, ram_ood);
    CHECKF(oracle >= base + 50, "perfect selection %.1f vs base %.1f", oracle, base);
    CHECKF(sel > mix + 5, "selection %.1f vs mixture %.1f", sel, mix);
    CHECKF(ram_iid >= base + 30, "RAMoLE %.1f vs base %.1f", ram_iid, base);
    CHECKF(ram_ood >= base_ood + 10, "RAMoLE out of distribution %.1f vs base %.1f", ram_ood, base_ood);
    const rm_json *rpf = rm_json_get(t, "rows_per_forward"), *rr = rpf ? rm_json_get(rpf, "ramole") : NULL;
    CHECKF(rr && rr->num > 1.5, "RAMoLE's requests did not share forward passes");
    rm_json_free(t);

    // an upload through a running server: one task's adapter removed from the
    // world's pool, the server started on it, the adapter posted back
    rm_flan_pool pool = {0};
    CHECK_OK(rm_flan_load_pool(pathf_(path, sizeof path, dir, "config.json"), &pool));
    REQUIRE(pool.n == 12);
    const rm_flan_task *up = &pool.tasks[pool.n - 1];
    snprintf(args, sizeof args, "pool remove --pool %s/pool --name %s", dir, up->name);
    CHECK(rm_test_cli(args) == 0);
    rm_test_server sp;
    snprintf(args, sizeof args, "-m %s/base.gguf --pool %s/pool -t 2 --adapter-dir %s/adapters", dir, dir, dir);
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    rm_sb body;
    rm_sb_init(&body);
    rm_sb_puts(&body, "{\"name\": ");
    rm_sb_json_str(&body, up->name, strlen(up->name));
    rm_sb_printf(&body, ", \"weights\": \"%s/adapters/%s\", \"task\": \"%s\", \"domain\": \"%s\", \"samples\": [", dir,
                 up->name, up->name, up->domain);
    for (int i = 0; i < up->n; i++) {
        if (i) rm_sb_puts(&body, ", ");
        rm_sb_json_str(&body, up->inputs[i], strlen(up->inputs[i]));
    }
    rm_sb_puts(&body, "]}");
    rm_json *j = NULL;
    CHECK(rm_test_http(sp.port, "POST", "/v1/adapters", body.buf, &j) == 201);
    rm_json_free(j);
    rm_sb_free(&body);
    CHECK(rm_test_http(sp.port, "GET", "/v1/adapters", NULL, &j) == 200);
    const rm_json *data = j ? rm_json_get(j, "data") : NULL;
    CHECKF(data && data->n == 12, "%d adapters after the upload", data ? (int)data->n : -1);
    rm_json_free(j);
    // its task's test requests retrieve it first
    rm_flan_request *req = NULL;
    int nr = 0, asked = 0, found = 0;
    CHECK_OK(rm_flan_load_test(pathf_(path, sizeof path, dir, "combined_test.json"), &pool, &req, &nr));
    for (int i = 0; i < nr && asked < 10; i++) {
        if (strcmp(req[i].task, up->name)) continue;
        rm_sb q;
        rm_sb_init(&q);
        rm_sb_puts(&q, "{\"prompt\": ");
        rm_sb_json_str(&q, req[i].inputs, strlen(req[i].inputs));
        rm_sb_puts(&q, ", \"max_tokens\": 2, \"retrieve\": 1}");
        if (rm_test_http(sp.port, "POST", "/v1/completions", q.buf, &j) == 200) {
            const rm_json *ad = j ? rm_json_get(j, "adapters") : NULL;
            const char *name = ad && ad->n
                                   ? (ad->items[0].type == RM_JSON_STRING ? ad->items[0].str
                                                                          : rm_json_get_str(&ad->items[0], "name", ""))
                                   : "";
            found += !strcmp(name, up->name);
        }
        asked++;
        rm_json_free(j);
        rm_sb_free(&q);
    }
    CHECKF(asked == 10 && found >= 8, "the uploaded %s retrieved first for %d of %d of its requests", up->name, found,
           asked);
    CHECK(rm_test_server_stop(&sp) == 0);
    rm_flan_free_test(req, nr);

    // a pool whose adapter file vanished: the method that needs it names it
    char moved[1000];
    snprintf(path, sizeof path, "%s/adapters/%s", dir, pool.tasks[0].name);
    snprintf(moved, sizeof moved, "%s.gone", path);
    REQUIRE(rename(path, moved) == 0);
    snprintf(args, sizeof args,
             "eval --method selection --pool %s/pool -m %s/base.gguf --test %s/combined_test.json "
             "--template %s/template.txt --limit 40",
             dir, dir, dir, dir);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), pool.tasks[0].name));
    fprintf(stderr, "    vanished adapter: %s", rm_test_cli_err());
    rename(moved, path);
    rm_flan_free_pool(&pool);
}
