// cmd_world.c — `ramole world make|build`: the synthetic mixed-task world of
// src/eval/world.h, written (make) and then trained and assembled (build):
// a base model, one contributor's adapter per task, a pool.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "base/progress.h"
#include "cli.h"
#include "eval/world.h"

static void help(void) {
    printf("usage: ramole world make --out DIR [--seed S] [--size small|full]\n"
           "       ramole world build DIR [-t N]\n\n"
           "make: writes a mixed-task world: its tasks in clusters, each task's training data\n"
           "(DIR/tasks/NAME.jsonl) and validation split (NAME.valid.jsonl), the pool in the\n"
           "paper's format (DIR/config.json: 20 sample inputs per task), the mixed test requests\n"
           "(DIR/combined_test.json), the base model's text (DIR/corpus.txt) and shape\n"
           "(DIR/base.json), the prompt template (DIR/template.txt) and DIR/world.json. Everything\n"
           "follows from the seed (default 1). small: 12 tasks in 4 clusters; full: 48 in 12.\n\n"
           "build: trains and assembles the rest with the ramole commands a platform and its\n"
           "contributors would run: the base model (`ramole train` on corpus.txt -> DIR/base.gguf), one\n"
           "adapter per task (`ramole lora train` -> DIR/adapters/NAME/, rank, alpha, targets and steps\n"
           "from world.json), and the pool (`ramole pool init` + `pool add` per adapter -> DIR/pool/).\n"
           "A step whose inputs and settings are unchanged since its last run is reused (stamps in\n"
           "DIR/build/); each step's output is in DIR/build/*.log.\n"
           "  -t, --threads N   threads in all (default: all cores)\n"
           "  -j, --jobs J      adapters trained at once (default: as many as threads, each 1 thread)\n");
}

static int world_make(int argc, char **argv) {
    const char *out = NULL, *size_s = "full";
    long seed = 1;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (cli_str(argc, argv, &i, "--out", "-o", &out)) {}
        else if (cli_int(argc, argv, &i, "--seed", NULL, &seed)) {}
        else if (cli_str(argc, argv, &i, "--size", NULL, &size_s)) {}
        else { fprintf(stderr, "ramole world make: unknown argument '%s' (see --help)\n", argv[i]); return 2; }
    }
    rm_world_size size;
    if (!out) { fprintf(stderr, "ramole world make: --out DIR is required\n"); return 2; }
    if (rm_world_size_parse(size_s, &size)) return cli_fail("--size");
    if (seed < 0) { fprintf(stderr, "ramole world make: --seed must be 0 or more\n"); return 2; }
    rm_world_report r;
    if (rm_world_make(out, (uint64_t)seed, size, &r)) return cli_fail("world make");
    printf("world make: %s world (seed %ld) in %s: %d tasks in %d clusters; per task %d training, %d validation, "
           "%d test requests, %d pool samples; base corpus %.1f MB\n",
           rm_world_size_name(size), seed, out, r.n_tasks, r.n_clusters, r.n_train, r.n_valid, r.n_test, r.n_samples,
           r.corpus_bytes / 1e6);
    return 0;
}

// ---------------------------------------------------------------- build

// A step's key: FNV-1a over its command line and its input files' bytes.
typedef struct stamp { uint64_t h; } stamp;

static void stamp_bytes(stamp *s, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) s->h = (s->h ^ b[i]) * 0x100000001b3ull;
}

static void stamp_str(stamp *s, const char *str) { stamp_bytes(s, str, strlen(str) + 1); }

static int stamp_file(stamp *s, const char *path) {
    char *buf;
    size_t len;
    if (rm_read_file(path, &buf, &len)) return -1;
    stamp_bytes(s, buf, len);
    free(buf);
    return 0;
}

// 1 when dir/build/<name>.stamp holds key (the step is done), else 0.
static int stamp_ok(const char *dir, const char *name, uint64_t key) {
    char path[4200], *buf;
    size_t len;
    snprintf(path, sizeof path, "%s/build/%s.stamp", dir, name);
    if (rm_read_file(path, &buf, &len)) return 0;
    int ok = strtoull(buf, NULL, 16) == key;
    free(buf);
    return ok;
}

static int stamp_write(const char *dir, const char *name, uint64_t key) {
    char path[4200], text[32];
    snprintf(path, sizeof path, "%s/build/%s.stamp", dir, name);
    snprintf(text, sizeof text, "%016llx\n", (unsigned long long)key);
    return rm_write_file_atomic(path, text, strlen(text));
}

// Starts this program with argv (argv[0] is replaced by /proc/self/exe), its
// stdout and stderr into log. Returns the child's pid, or -1.
static pid_t spawn(char **argv, const char *log) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0) return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
    execv("/proc/self/exe", argv);
    _exit(127);
}

// Runs argv to its end: 0 when it exited with 0, else prints the log's tail and returns 1.
static int check_exit(int status, const char *what, const char *log) {
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    fprintf(stderr, "ramole world build: %s failed (%s %d); its last lines (%s):\n", what,
            WIFEXITED(status) ? "exit" : "signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), log);
    char *buf;
    size_t len;
    if (!rm_read_file(log, &buf, &len)) {
        size_t from = len > 1500 ? len - 1500 : 0;
        fprintf(stderr, "%s\n", buf + from);
        free(buf);
    }
    return 1;
}

static int run(char **argv, const char *what, const char *log) {
    pid_t pid = spawn(argv, log);
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        fprintf(stderr, "ramole world build: cannot run %s: %s\n", what, strerror(errno));
        return 1;
    }
    return check_exit(status, what, log);
}

typedef struct wtask { char *name, *cluster; } wtask;

typedef struct wconf {
    wtask *t;
    int n;
    long rank, steps, batch, seed;
    double alpha, lr;
    char targets[64];
} wconf;

static void wconf_free(wconf *c) {
    for (int i = 0; i < c->n; i++) { free(c->t[i].name); free(c->t[i].cluster); }
    free(c->t);
}

static int wconf_load(const char *dir, wconf *c) {
    char path[4200];
    snprintf(path, sizeof path, "%s/world.json", dir);
    rm_json *j = NULL;
    if (rm_json_parse_file(path, &j)) return cli_fail("world.json");
    const rm_json *tasks = rm_json_get(j, "tasks"), *ad = rm_json_get(j, "adapter");
    int rc = 0;
    memset(c, 0, sizeof *c);
    if (!tasks || tasks->type != RM_JSON_ARRAY || !tasks->n || !ad || ad->type != RM_JSON_OBJECT) {
        fprintf(stderr, "ramole world build: %s has no \"tasks\" list or \"adapter\" settings\n", path);
        rc = 1;
    }
    if (!rc && !(c->t = calloc(tasks->n, sizeof *c->t))) { fprintf(stderr, "ramole world build: out of memory\n"); rc = 1; }
    for (size_t i = 0; !rc && i < tasks->n; i++) {
        const char *name = rm_json_get_str(&tasks->items[i], "name", NULL), *cl = rm_json_get_str(&tasks->items[i], "cluster", NULL);
        if (!name || !cl || !*name || strchr(name, '/')) {
            fprintf(stderr, "ramole world build: %s: task %zu has no usable \"name\" and \"cluster\"\n", path, i + 1);
            rc = 1;
            break;
        }
        c->t[c->n].name = strdup(name);
        c->t[c->n++].cluster = strdup(cl);
    }
    if (!rc) {
        c->rank = rm_json_get_int(ad, "rank", 6);
        c->alpha = rm_json_get_num(ad, "alpha", 12);
        c->steps = rm_json_get_int(ad, "steps", 150);
        c->batch = rm_json_get_int(ad, "batch", 8);
        c->lr = rm_json_get_num(ad, "lr", 5e-3);
        c->seed = rm_json_get_int(j, "seed", 1);
        snprintf(c->targets, sizeof c->targets, "%s", rm_json_get_str(ad, "targets", "all"));
    }
    rm_json_free(j);
    if (rc) wconf_free(c);
    return rc;
}

// The held-out exact match an adapter's `lora train --json` reported (its log's last line), or -1.
static double log_eval_em(const char *log) {
    char *buf;
    size_t len;
    if (rm_read_file(log, &buf, &len)) return -1;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) buf[--len] = 0;
    char *line = strrchr(buf, '\n');
    rm_json *j = NULL;
    double em = -1;
    if (!rm_json_parse(line ? line + 1 : buf, strlen(line ? line + 1 : buf), log, &j)) em = rm_json_get_num(j, "eval_em", -1);
    rm_json_free(j);
    free(buf);
    return em;
}

#define PATHN 4608

// snprintf into a path buffer of PATHN bytes; returns buf.
static char *pathf(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *pathf(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, PATHN, fmt, ap);
    va_end(ap);
    return buf;
}

// Step 1: the base model, `ramole train` on the world's text.
static int build_base(const char *dir, const char *threads, stamp *key) {
    char cfg[PATHN], text[PATHN], out[PATHN], log[PATHN];
    pathf(cfg, "%s/base.json", dir);
    pathf(text, "%s/corpus.txt", dir);
    pathf(out, "%s/base.gguf", dir);
    pathf(log, "%s/build/base.log", dir);
    *key = (stamp){0xcbf29ce484222325ull};
    stamp_str(key, "train v1");
    if (stamp_file(key, cfg) || stamp_file(key, text)) return cli_fail("the world's base.json / corpus.txt");
    if (stamp_ok(dir, "base", key->h) && rm_file_exists(out)) {
        fprintf(stderr, "world build: base model: up to date (%s)\n", out);
        return 0;
    }
    char *av[] = {"ramole", "train", "--config", cfg, "--data", text, "--out", out, "--threads", (char *)threads, NULL};
    fprintf(stderr, "world build: training the base model (`ramole train`; progress in %s) ...\n", log);
    double t = rm_now();
    setenv("RAMOLE_PROGRESS", "1", 1);
    if (run(av, "ramole train", log) || stamp_write(dir, "base", key->h)) return 1;
    fprintf(stderr, "world build: base model trained in %.0f s\n", rm_now() - t);
    return 0;
}

// The key of task i's adapter: the base's, the training settings and the task's data.
static int adapter_key(const char *dir, const wconf *c, int i, const stamp *base, uint64_t *key) {
    char data[PATHN], valid[PATHN], tmpl[PATHN];
    stamp s = *base;
    stamp_str(&s, c->t[i].name);
    long v[4] = {c->rank, c->steps, c->batch, c->seed};
    double f[2] = {c->alpha, c->lr};
    stamp_bytes(&s, v, sizeof v);
    stamp_bytes(&s, f, sizeof f);
    stamp_str(&s, c->targets);
    if (stamp_file(&s, pathf(data, "%s/tasks/%s.jsonl", dir, c->t[i].name)) ||
        stamp_file(&s, pathf(valid, "%s/tasks/%s.valid.jsonl", dir, c->t[i].name)) ||
        stamp_file(&s, pathf(tmpl, "%s/template.txt", dir)))
        return cli_fail("task data");
    *key = s.h;
    return 0;
}

// Starts `ramole lora train` for task i (the world's adapter settings; the
// task's validation split held out and scored for exact match).
static pid_t start_adapter(const char *dir, const wconf *c, int i, const char *threads) {
    char base[PATHN], data[PATHN], valid[PATHN], tmpl[PATHN], out[PATHN], log[PATHN];
    char rank[24], alpha[32], steps[24], batch[24], lr[32], seed[32];
    snprintf(rank, sizeof rank, "%ld", c->rank);
    snprintf(alpha, sizeof alpha, "%g", c->alpha);
    snprintf(steps, sizeof steps, "%ld", c->steps);
    snprintf(batch, sizeof batch, "%ld", c->batch);
    snprintf(lr, sizeof lr, "%g", c->lr);
    snprintf(seed, sizeof seed, "%ld", c->seed * 1000 + i);
    char *av[] = {"ramole", "lora", "train", "--base", pathf(base, "%s/base.gguf", dir),
                  "--data", pathf(data, "%s/tasks/%s.jsonl", dir, c->t[i].name),
                  "--eval", pathf(valid, "%s/tasks/%s.valid.jsonl", dir, c->t[i].name),
                  "--template", pathf(tmpl, "%s/template.txt", dir), "--out", pathf(out, "%s/adapters/%s", dir, c->t[i].name),
                  "--rank", rank, "--alpha", alpha, "--targets", (char *)c->targets, "--steps", steps, "--batch", batch,
                  "--lr", lr, "--seed", seed, "--threads", (char *)threads, "--json", NULL};
    setenv("RAMOLE_PROGRESS", "0", 1);
    return spawn(av, pathf(log, "%s/build/adapter-%s.log", dir, c->t[i].name));
}

// Step 2: one adapter per task, `jobs` trainings at once. key[i] gets each
// adapter's key; *mean_em the mean validation exact match of those trained.
static int build_adapters(const char *dir, const wconf *c, const stamp *base, long jobs, const char *threads,
                          uint64_t *key, double *mean_em) {
    char path[PATHN], name[PATHN];
    int *todo = calloc((size_t)c->n, sizeof *todo), n_todo = 0, rc = 1;
    pid_t *pid = calloc((size_t)jobs, sizeof *pid);
    int *task_of = calloc((size_t)jobs, sizeof *task_of);
    *mean_em = -1;
    if (!todo || !pid || !task_of) { fprintf(stderr, "ramole world build: out of memory\n"); goto done; }
    for (int i = 0; i < c->n; i++) {
        if (adapter_key(dir, c, i, base, &key[i])) goto done;
        pathf(path, "%s/adapters/%s/adapter_model.safetensors", dir, c->t[i].name);
        if (!(stamp_ok(dir, pathf(name, "adapter-%s", c->t[i].name), key[i]) && rm_file_exists(path))) todo[n_todo++] = i;
    }
    if (!n_todo) {
        fprintf(stderr, "world build: %d adapters: up to date\n", c->n);
        rc = 0;
        goto done;
    }
    fprintf(stderr, "world build: training %d adapters (`ramole lora train`, %ld at a time; logs in %s/build/)\n", n_todo, jobs, dir);
    rm_progress pg;
    rm_progress_start(&pg, "adapters", "adapters", n_todo);
    pg.enabled = 1;
    double em_sum = 0;
    int next = 0, finished = 0, running = 0, em_n = 0;
    while (finished < n_todo) {
        for (; running < jobs && next < n_todo; next++, running++) {
            int s = 0;
            while (pid[s]) s++;
            task_of[s] = todo[next];
            if ((pid[s] = start_adapter(dir, c, todo[next], threads)) < 0) {
                pid[s] = 0;
                fprintf(stderr, "ramole world build: cannot start a process: %s\n", strerror(errno));
                goto done;
            }
        }
        int status, s = 0;
        pid_t p = wait(&status);
        if (p < 0) { fprintf(stderr, "ramole world build: wait: %s\n", strerror(errno)); goto done; }
        while (s < jobs && pid[s] != p) s++;
        if (s == jobs) continue;
        int i = task_of[s];
        pid[s] = 0;
        running--;
        pathf(path, "%s/build/adapter-%s.log", dir, c->t[i].name);
        if (check_exit(status, c->t[i].name, path) || stamp_write(dir, pathf(name, "adapter-%s", c->t[i].name), key[i])) goto done;
        double em = log_eval_em(path);
        if (em >= 0) em_sum += em, em_n++;
        snprintf(pg.extra, sizeof pg.extra, "%s done; mean validation EM so far %.1f", c->t[i].name, em_n ? 100 * em_sum / em_n : 0.0);
        rm_progress_update(&pg, ++finished, 1);
    }
    rm_progress_finish(&pg, finished);
    if (em_n) *mean_em = 100 * em_sum / em_n;
    rc = 0;
done:
    for (int s = 0; pid && s < jobs; s++)
        if (pid[s] > 0) { kill(pid[s], SIGTERM); waitpid(pid[s], NULL, 0); }
    free(pid);
    free(task_of);
    free(todo);
    return rc;
}

// Step 3: the pool: an embedder fitted on every adapter's samples (`pool
// init`), then each adapter added the way a contributor adds one (`pool add`).
static int build_pool(const char *dir, const wconf *c, const uint64_t *akey) {
    char pool[PATHN], db[PATHN], path[PATHN], corpus[PATHN], log[PATHN], weights[PATHN];
    stamp key = {0xcbf29ce484222325ull};
    stamp_str(&key, "pool v1");
    stamp_bytes(&key, akey, (size_t)c->n * sizeof *akey);
    for (int i = 0; i < c->n; i++)
        if (stamp_file(&key, pathf(path, "%s/samples/%s.jsonl", dir, c->t[i].name))) return cli_fail("samples");
    pathf(pool, "%s/pool", dir);
    if (stamp_ok(dir, "pool", key.h) && rm_file_exists(pathf(db, "%s/pool.db", pool))) {
        fprintf(stderr, "world build: pool: up to date (%s)\n", pool);
        return 0;
    }
    rm_sb all = {0};
    for (int i = 0; i < c->n; i++) {
        char *buf;
        size_t len;
        if (rm_read_file(pathf(path, "%s/samples/%s.jsonl", dir, c->t[i].name), &buf, &len)) { rm_sb_free(&all); return cli_fail("samples"); }
        rm_sb_putn(&all, buf, len);
        free(buf);
    }
    int bad = all.oom || rm_write_file_atomic(pathf(corpus, "%s/build/samples.jsonl", dir), all.buf ? all.buf : "", all.len);
    rm_sb_free(&all);
    if (bad) return cli_fail("samples");
    static const char *const old[] = {"pool.db", "pool.db-wal", "pool.db-shm", "embedder.bin"};
    for (int k = 0; k < 4; k++) unlink(pathf(path, "%s/%s", pool, old[k]));
    char *iv[] = {"ramole", "pool", "init", "--pool", pool, "--corpus", corpus, NULL};
    if (run(iv, "ramole pool init", pathf(log, "%s/build/pool-init.log", dir))) return 1;
    char rank[24];
    snprintf(rank, sizeof rank, "%ld", c->rank);
    for (int i = 0; i < c->n; i++) {
        char *av[] = {"ramole", "pool", "add", "--pool", pool, "--name", c->t[i].name,
                      "--samples", pathf(path, "%s/samples/%s.jsonl", dir, c->t[i].name),
                      "--weights", pathf(weights, "%s/adapters/%s", dir, c->t[i].name), "--task", c->t[i].name,
                      "--domain", c->t[i].cluster, "--rank", rank, "--targets", (char *)c->targets, NULL};
        if (run(av, "ramole pool add", pathf(log, "%s/build/pool-add-%s.log", dir, c->t[i].name))) return 1;
    }
    if (stamp_write(dir, "pool", key.h)) return cli_fail("stamp");
    fprintf(stderr, "world build: pool of %d adapters in %s\n", c->n, pool);
    return 0;
}

static int world_build(int argc, char **argv) {
    const char *dir = NULL;
    long threads = 0, jobs = 0;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {}
        else if (cli_int(argc, argv, &i, "--jobs", "-j", &jobs)) {}
        else if (!dir && argv[i][0] != '-') dir = argv[i];
        else { fprintf(stderr, "ramole world build: unknown argument '%s' (see --help)\n", argv[i]); return 2; }
    }
    if (!dir) { fprintf(stderr, "ramole world build: give the world's directory (from `ramole world make`)\n"); return 2; }
    if (strlen(dir) > 3000) { fprintf(stderr, "ramole world build: directory name too long\n"); return 2; }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0) threads = cores > 0 ? cores : 1;
    if (jobs <= 0 || jobs > threads) jobs = threads;
    char all_t[24], job_t[24], path[PATHN];
    snprintf(all_t, sizeof all_t, "%ld", threads);
    snprintf(job_t, sizeof job_t, "%ld", threads / jobs);
    wconf c;
    if (wconf_load(dir, &c)) return 1;
    int rc = 1;
    double t0 = rm_now(), em = -1;
    uint64_t *akey = calloc((size_t)c.n, sizeof *akey);
    stamp base;
    if (!akey) fprintf(stderr, "ramole world build: out of memory\n");
    else if (rm_mkdirs(pathf(path, "%s/build", dir)) || rm_mkdirs(pathf(path, "%s/adapters", dir))) cli_fail(dir);
    else if (!build_base(dir, all_t, &base) && !build_adapters(dir, &c, &base, jobs, job_t, akey, &em) &&
             !build_pool(dir, &c, akey)) {
        printf("world build: %s ready in %.0f s: base.gguf, %d adapters in adapters/, pool/", dir, rm_now() - t0, c.n);
        if (em >= 0) printf(" (adapters trained now: mean validation exact match %.1f)", em);
        printf("\n");
        rc = 0;
    }
    free(akey);
    wconf_free(&c);
    return rc;
}

static int cmd_world(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { help(); return argc < 2 ? 2 : 0; }
    if (!strcmp(argv[1], "make")) return world_make(argc, argv);
    if (!strcmp(argv[1], "build")) return world_build(argc, argv);
    fprintf(stderr, "ramole world: unknown subcommand '%s' (make, build)\n", argv[1]);
    return 2;
}

RM_COMMAND(world, "make and build the synthetic mixed-task world of the paper's experiment", cmd_world)
