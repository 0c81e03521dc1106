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
#include "retrieve/flan.h"

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

typedef struct texts { char **s; int n, cap; } texts;

static int collect_inputs(void *user, const rm_json *rec, long index) {
    texts *t = user;
    const char *in = rm_json_get_str(rec, "inputs", NULL);
    if (!in || !rm_json_get_str(rec, "targets", NULL)) return rm_errorf(RM_EFORMAT, "record %ld without inputs/targets", index);
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
    if (rm_read_file(b, &y, &ny)) { free(x); return 0; }
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
    for (int t = 0; t < nt && t < 64; t++) CHECKF(per_task[t] == 25, "%s: %d test requests", tasks[t].name, per_task[t]);
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
    const char *files[] = {"combined_test.json", "config.json", "corpus.txt", "tasks/count_animals.jsonl", "world.json"};
    for (int k = 0; k < 5; k++) {
        snprintf(a, sizeof a, "%s/%s", dir, files[k]);
        snprintf(b, sizeof b, "%s/%s", again, files[k]);
        CHECKF(files_equal(a, b), "%s differs for the same seed", files[k]);
        snprintf(b, sizeof b, "%s/%s", other, files[k]);
        if (k < 4) CHECKF(!files_equal(a, b), "%s is the same for another seed", files[k]);
    }
}

// Refusals with the file and the record named: an unknown size; a build of a
// folder that is no world; a world.json with a duplicate task; a task file
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
    const char *dup = "{\"adapter\": {}, \"tasks\": [{\"name\": \"a\", \"cluster\": \"x\"}, {\"name\": \"a\", \"cluster\": \"y\"}]}";
    CHECK_OK(rm_write_file_atomic(path, dup, strlen(dup)));
    snprintf(args, sizeof args, "world build %s/w-dup", tmp);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "\"a\" is taken by task 1") && strstr(rm_test_cli_err(), "world.json"));

    // a training file with a record missing its targets
    char data[800], model[800];
    snprintf(data, sizeof data, "%s/bad-task.jsonl", tmp);
    const char *bad = "{\"inputs\": \"a\", \"targets\": \"b\"}\n{\"inputs\": \"c\"}\n";
    CHECK_OK(rm_write_file_atomic(data, bad, strlen(bad)));
    snprintf(model, sizeof model, "%s/tiny.gguf", tmp);
    snprintf(args, sizeof args, "synth --shape tiny --type f32 %s", model);
    REQUIRE(rm_test_cli(args) == 0);
    snprintf(args, sizeof args, "lora train --base %s --data %s --out %s/ad --steps 1", model, data, tmp);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "bad-task.jsonl") && strstr(rm_test_cli_err(), "example 2"));
    // a test request with an unknown metric
    snprintf(data, sizeof data, "%s/bad-test.json", tmp);
    const char *badm = "[{\"inputs\": \"a\", \"targets\": \"b\", \"task\": \"t\", \"metric\": \"meteor\"}]";
    CHECK_OK(rm_write_file_atomic(data, badm, strlen(badm)));
    snprintf(args, sizeof args, "eval -m %s --test %s", model, data);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "bad-test.json") && strstr(rm_test_cli_err(), "request 1") &&
          strstr(rm_test_cli_err(), "meteor"));
}
