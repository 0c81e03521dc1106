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
#include "base/svg.h"
#include "eval/world.h"
#include "eval/worldcheck.h"
#include "train/train.h"

static void help(void) {
    printf("usage: ramole world make --out DIR [--seed S] [--size small|full]\n"
           "       ramole world build DIR [-t N] [-j J] [--split-seed S] [--no-experiment]\n"
           "       ramole world check DIR [--limit N] [-t N] [--json] [--svg FILE]\n\n"
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
           "Then the experiment of the paper for a split of the tasks (DIR/experiment/split-S/): 40%% of\n"
           "the tasks are seen (split.json, seen.txt; stratified by cluster), the RouterLoRA is trained on\n"
           "them as in the paper (`ramole router train --pool`: each example's own retrieved adapters, its\n"
           "own adapter dropped at random) and the MoE / SMEAR gates over their adapters (`ramole gate\n"
           "train`: moe-soft, moe-topk, moe-top1, smear), validated on the seen tasks' validation splits;\n"
           "`ramole eval --table DIR` then runs the comparison.\n"
           "  -t, --threads N   threads in all (default: all cores)\n"
           "  -j, --jobs J      trainings at once (default: as many as threads, each 1 thread)\n"
           "  --split-seed S    the split of the experiment (default 1)\n"
           "  --no-experiment   stop after the pool\n\n"
           "check: the world's sanity figures: every task's test requests with the base model alone and\n"
           "with each adapter alone, in one batched run: the base's mean, each task's own adapter, the\n"
           "best adapter of its cluster other than its own, the best and mean adapter of the other\n"
           "clusters; a table by task and a heat map of the whole matrix (--svg, default DIR/check.svg).\n"
           "  --limit N         the first N test requests of each task (default: all)\n");
}

static int world_make(int argc, char **argv) {
    const char *out = NULL, *size_s = "full";
    long seed = 1;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 0;
        } else if (cli_str(argc, argv, &i, "--out", "-o", &out)) {
        } else if (cli_int(argc, argv, &i, "--seed", NULL, &seed)) {
        } else if (cli_str(argc, argv, &i, "--size", NULL, &size_s)) {
        } else {
            fprintf(stderr, "ramole world make: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    rm_world_size size;
    if (!out) {
        fprintf(stderr, "ramole world make: --out DIR is required\n");
        return 2;
    }
    if (rm_world_size_parse(size_s, &size)) {
        fprintf(stderr, "ramole world make: %s\n", rm_last_error());
        return 2;
    }
    if (seed < 0) {
        fprintf(stderr, "ramole world make: --seed must be 0 or more\n");
        return 2;
    }
    rm_world_report r;
    if (rm_world_make(out, (uint64_t)seed, size, &r)) return cli_fail("world make");
    printf("world make: %s world (seed %ld) in %s: %d tasks in %d clusters; per task %d training, %d validation, "
           "%d test requests, %d pool samples; base corpus %.1f MB\n",
           rm_world_size_name(size), seed, out, r.n_tasks, r.n_clusters, r.n_train, r.n_valid, r.n_test, r.n_samples,
           r.corpus_bytes / 1e6);
    return 0;
}

// ---------------------------------------------------------------- build

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

// A step's key: FNV-1a over its command line and its input files' bytes.
typedef struct stamp {
    uint64_t h;
} stamp;

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
    char path[PATHN], *buf;
    size_t len;
    if (rm_read_file(pathf(path, "%s/build/%s.stamp", dir, name), &buf, &len)) return 0;
    int ok = strtoull(buf, NULL, 16) == key;
    free(buf);
    return ok;
}

static int stamp_write(const char *dir, const char *name, uint64_t key) {
    char path[PATHN], text[32];
    snprintf(text, sizeof text, "%016llx\n", (unsigned long long)key);
    return rm_write_file_atomic(pathf(path, "%s/build/%s.stamp", dir, name), text, strlen(text));
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

typedef struct wtask {
    char *name, *cluster;
    long steps;
} wtask; // steps: its adapter's training

typedef struct wconf {
    wtask *t;
    int n;
    char **names, **clusters;      // t[i] points into these
    long rank, steps, batch, seed; // the adapters' training
    double alpha, lr;
    char targets[64];
    double seen_fraction;               // the experiment: tasks the router and gates train on
    long r_rank, r_k, r_steps, r_batch; // RouterLoRA
    double r_alpha, r_dropout, r_lr;
    long g_k, g_steps, g_batch; // MoE / SMEAR gates
    double g_lr;
} wconf;

static void wconf_free(wconf *c) {
    rm_world_free_tasks(c->names, c->clusters, c->n);
    free(c->t);
    memset(c, 0, sizeof *c);
}

static int wconf_load(const char *dir, wconf *c) {
    memset(c, 0, sizeof *c);
    if (rm_world_read_tasks(dir, &c->names, &c->clusters, &c->n)) {
        fprintf(stderr, "ramole world build: %s\n", rm_last_error());
        return 1;
    }
    if (!(c->t = calloc((size_t)c->n, sizeof *c->t))) {
        fprintf(stderr, "ramole world build: out of memory\n");
        wconf_free(c);
        return 1;
    }
    for (int i = 0; i < c->n; i++) c->t[i] = (wtask){c->names[i], c->clusters[i], 0};
    char path[PATHN];
    rm_json *j = NULL;
    if (rm_json_parse_file(pathf(path, "%s/world.json", dir), &j)) {
        wconf_free(c);
        return cli_fail("world.json");
    }
    const rm_json *ad = rm_json_get(j, "adapter");
    c->rank = rm_json_get_int(ad, "rank", 6);
    c->alpha = rm_json_get_num(ad, "alpha", 12);
    c->steps = rm_json_get_int(ad, "steps", 150);
    c->batch = rm_json_get_int(ad, "batch", 8);
    c->lr = rm_json_get_num(ad, "lr", 5e-3);
    c->seed = rm_json_get_int(j, "seed", 1);
    snprintf(c->targets, sizeof c->targets, "%s", rm_json_get_str(ad, "targets", "all"));
    const rm_json *ex = rm_json_get(j, "experiment"), *r = rm_json_get(ex, "router"), *g = rm_json_get(ex, "gates");
    c->seen_fraction = rm_json_get_num(ex, "seen_fraction", 0.4);
    c->r_rank = rm_json_get_int(r, "rank", 4);
    c->r_alpha = rm_json_get_num(r, "alpha", 8);
    c->r_k = rm_json_get_int(r, "retrieve", 3);
    c->r_dropout = rm_json_get_num(r, "lora_dropout", 0.5);
    c->r_steps = rm_json_get_int(r, "steps", 2000);
    c->r_batch = rm_json_get_int(r, "batch", 8);
    c->r_lr = rm_json_get_num(r, "lr", 3e-3);
    c->g_k = rm_json_get_int(g, "k", 3);
    c->g_steps = rm_json_get_int(g, "steps", 300);
    c->g_batch = rm_json_get_int(g, "batch", 8);
    c->g_lr = rm_json_get_num(g, "lr", 5e-3);
    // a task's own adapter steps ("adapter_steps"), else the world's; the tasks are in world.json's order
    const rm_json *tl = rm_json_get(j, "tasks");
    for (int i = 0; i < c->n; i++) {
        c->t[i].steps = tl && tl->type == RM_JSON_ARRAY && (size_t)i < tl->n
                            ? rm_json_get_int(&tl->items[i], "adapter_steps", c->steps)
                            : c->steps;
        if (c->t[i].steps < 1) {
            fprintf(stderr, "ramole world build: %s: task %d (%s): \"adapter_steps\" must be at least 1\n", path, i + 1,
                    c->t[i].name);
            rm_json_free(j);
            wconf_free(c);
            return 1;
        }
    }
    rm_json_free(j);
    if (!(c->seen_fraction > 0 && c->seen_fraction < 1)) {
        fprintf(stderr, "ramole world build: %s: experiment.seen_fraction must be between 0 and 1\n", path);
        wconf_free(c);
        return 1;
    }
    return 0;
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
    if (!rm_json_parse(line ? line + 1 : buf, strlen(line ? line + 1 : buf), log, &j))
        em = rm_json_get_num(j, "eval_em", -1);
    rm_json_free(j);
    free(buf);
    return em;
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
    char copying[PATHN];
    if (rm_file_exists(pathf(copying, "%s/copying.jsonl", dir)) && stamp_file(key, copying)) return cli_fail(copying);
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

// ---- jobs: ramole commands run as child processes, some at a time

#define JOB_ARGS 64

typedef struct job {
    char *argv[JOB_ARGS + 1]; // owned, NULL-terminated
    int argc;
    char log[PATHN], stamp[PATHN], label[PATHN];
    uint64_t key;
    int failed_alloc;
} job;

static void job_free(job *j) {
    for (int i = 0; i < j->argc; i++) free(j->argv[i]);
    memset(j, 0, sizeof *j);
}

// Appends one formatted argument.
static void job_arg(job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void job_arg(job *j, const char *fmt, ...) {
    char buf[PATHN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (j->argc == JOB_ARGS || !(j->argv[j->argc] = strdup(buf))) {
        j->failed_alloc = 1;
        return;
    }
    j->argv[++j->argc] = NULL;
}

// Runs jobs[0..n), `parallel` at a time (each child's output in its log);
// writes each one's stamp when it succeeds. With em, the mean held-out exact
// match the children reported (`--json` lines; -1 when none) goes there.
static int run_jobs(job *jobs, int n, long parallel, const char *what, const char *dir, double *em) {
    pid_t *pid = calloc((size_t)parallel, sizeof *pid);
    int *of = calloc((size_t)parallel, sizeof *of), rc = 1, next = 0, finished = 0, running = 0, em_n = 0;
    double em_sum = 0;
    if (em) *em = -1;
    if (!pid || !of) {
        fprintf(stderr, "ramole world build: out of memory\n");
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (jobs[i].failed_alloc) {
            fprintf(stderr, "ramole world build: out of memory\n");
            goto done;
        }
    rm_progress pg;
    rm_progress_start(&pg, what, what, n);
    pg.enabled = 1;
    while (finished < n) {
        for (; running < parallel && next < n; next++, running++) {
            int s = 0;
            while (pid[s]) s++;
            of[s] = next;
            setenv("RAMOLE_PROGRESS", parallel > 1 ? "0" : "1", 1);
            if ((pid[s] = spawn(jobs[next].argv, jobs[next].log)) < 0) {
                pid[s] = 0;
                fprintf(stderr, "ramole world build: cannot start a process: %s\n", strerror(errno));
                goto done;
            }
        }
        int status, s = 0;
        pid_t p = wait(&status);
        if (p < 0) {
            fprintf(stderr, "ramole world build: wait: %s\n", strerror(errno));
            goto done;
        }
        while (s < parallel && pid[s] != p) s++;
        if (s == parallel) continue;
        job *j = &jobs[of[s]];
        pid[s] = 0;
        running--;
        if (check_exit(status, j->label, j->log) || stamp_write(dir, j->stamp, j->key)) goto done;
        double e = em ? log_eval_em(j->log) : -1;
        if (e >= 0) em_sum += e, em_n++;
        if (em_n)
            snprintf(pg.extra, sizeof pg.extra, "%.60s done; mean held-out EM so far %.1f", j->label,
                     100 * em_sum / em_n);
        else snprintf(pg.extra, sizeof pg.extra, "%.60s done", j->label);
        rm_progress_update(&pg, ++finished, 1);
    }
    rm_progress_finish(&pg, finished);
    if (em && em_n) *em = 100 * em_sum / em_n;
    rc = 0;
done:
    for (int s = 0; pid && s < parallel; s++)
        if (pid[s] > 0) {
            kill(pid[s], SIGTERM);
            waitpid(pid[s], NULL, 0);
        }
    free(pid);
    free(of);
    return rc;
}

// Step 2: one adapter per task (`ramole lora train` with the world's adapter
// settings, the task's validation split held out and scored for exact match),
// `parallel` at a time. key[i] gets each adapter's key.
static int build_adapters(const char *dir, const wconf *c, const stamp *base, long parallel, const char *threads,
                          uint64_t *key, double *mean_em) {
    job *jobs = calloc((size_t)c->n, sizeof *jobs);
    int n = 0, rc = 1;
    *mean_em = -1;
    if (!jobs) {
        fprintf(stderr, "ramole world build: out of memory\n");
        return 1;
    }
    for (int i = 0; i < c->n; i++) {
        const char *t = c->t[i].name;
        char data[PATHN], valid[PATHN], tmpl[PATHN], weights[PATHN], sname[PATHN];
        stamp s = *base;
        stamp_str(&s, t);
        long v[4] = {c->rank, c->t[i].steps, c->batch, c->seed};
        double f[2] = {c->alpha, c->lr};
        stamp_bytes(&s, v, sizeof v);
        stamp_bytes(&s, f, sizeof f);
        stamp_str(&s, c->targets);
        if (stamp_file(&s, pathf(data, "%s/tasks/%s.jsonl", dir, t)) ||
            stamp_file(&s, pathf(valid, "%s/tasks/%s.valid.jsonl", dir, t)) ||
            stamp_file(&s, pathf(tmpl, "%s/template.txt", dir))) {
            cli_fail("task data");
            goto done;
        }
        key[i] = s.h;
        pathf(sname, "adapter-%s", t);
        if (stamp_ok(dir, sname, s.h) &&
            rm_file_exists(pathf(weights, "%s/adapters/%s/adapter_model.safetensors", dir, t)))
            continue;
        job *j = &jobs[n++];
        j->key = s.h;
        snprintf(j->stamp, sizeof j->stamp, "%s", sname);
        snprintf(j->label, sizeof j->label, "%s", t);
        pathf(j->log, "%s/build/adapter-%s.log", dir, t);
        const char *fixed[] = {"ramole", "lora", "train", "--base"};
        for (int k = 0; k < 4; k++) job_arg(j, "%s", fixed[k]);
        job_arg(j, "%s/base.gguf", dir);
        job_arg(j, "--data"), job_arg(j, "%s", data), job_arg(j, "--eval"), job_arg(j, "%s", valid);
        job_arg(j, "--template"), job_arg(j, "%s", tmpl), job_arg(j, "--out"), job_arg(j, "%s/adapters/%s", dir, t);
        job_arg(j, "--rank"), job_arg(j, "%ld", c->rank), job_arg(j, "--alpha"), job_arg(j, "%g", c->alpha);
        job_arg(j, "--targets"), job_arg(j, "%s", c->targets), job_arg(j, "--steps"), job_arg(j, "%ld", c->t[i].steps);
        job_arg(j, "--batch"), job_arg(j, "%ld", c->batch), job_arg(j, "--lr"), job_arg(j, "%g", c->lr);
        job_arg(j, "--seed"), job_arg(j, "%ld", c->seed * 1000 + i), job_arg(j, "--threads"), job_arg(j, "%s", threads);
        job_arg(j, "--json");
    }
    if (!n) {
        fprintf(stderr, "world build: %d adapters: up to date\n", c->n);
        rc = 0;
    } else {
        fprintf(stderr, "world build: training %d adapters (`ramole lora train`, %ld at a time; logs in %s/build/)\n",
                n, parallel, dir);
        rc = run_jobs(jobs, n, parallel, "adapters", dir, mean_em);
    }
done:
    for (int i = 0; i < n; i++) job_free(&jobs[i]);
    free(jobs);
    return rc;
}

// Step 3: the pool: an embedder fitted on every adapter's samples (`pool
// init`), then each adapter added the way a contributor adds one (`pool add`).
static int build_pool(const char *dir, const wconf *c, const uint64_t *akey, uint64_t *pool_key) {
    char pool[PATHN], db[PATHN], path[PATHN], corpus[PATHN], log[PATHN], weights[PATHN];
    stamp key = {0xcbf29ce484222325ull};
    stamp_str(&key, "pool v1");
    stamp_bytes(&key, akey, (size_t)c->n * sizeof *akey);
    for (int i = 0; i < c->n; i++)
        if (stamp_file(&key, pathf(path, "%s/samples/%s.jsonl", dir, c->t[i].name))) return cli_fail("samples");
    pathf(pool, "%s/pool", dir);
    *pool_key = key.h;
    if (stamp_ok(dir, "pool", key.h) && rm_file_exists(pathf(db, "%s/pool.db", pool))) {
        fprintf(stderr, "world build: pool: up to date (%s)\n", pool);
        return 0;
    }
    rm_sb all = {0};
    for (int i = 0; i < c->n; i++) {
        char *buf;
        size_t len;
        if (rm_read_file(pathf(path, "%s/samples/%s.jsonl", dir, c->t[i].name), &buf, &len)) {
            rm_sb_free(&all);
            return cli_fail("samples");
        }
        rm_sb_putn(&all, buf, len);
        free(buf);
    }
    int bad =
        all.oom || rm_write_file_atomic(pathf(corpus, "%s/build/samples.jsonl", dir), all.buf ? all.buf : "", all.len);
    rm_sb_free(&all);
    if (bad) return cli_fail("samples");
    static const char *const old[] = {"pool.db", "pool.db-wal", "pool.db-shm", "embedder.bin"};
    for (int k = 0; k < 4; k++) unlink(pathf(path, "%s/%s", pool, old[k]));
    char *iv[] = {"ramole", "pool", "init", "--pool", pool, "--corpus", corpus, NULL};
    if (run(iv, "ramole pool init", pathf(log, "%s/build/pool-init.log", dir))) return 1;
    char rank[24];
    snprintf(rank, sizeof rank, "%ld", c->rank);
    for (int i = 0; i < c->n; i++) {
        char *av[] = {"ramole",
                      "pool",
                      "add",
                      "--pool",
                      pool,
                      "--name",
                      c->t[i].name,
                      "--samples",
                      pathf(path, "%s/samples/%s.jsonl", dir, c->t[i].name),
                      "--weights",
                      pathf(weights, "%s/adapters/%s", dir, c->t[i].name),
                      "--task",
                      c->t[i].name,
                      "--domain",
                      c->t[i].cluster,
                      "--rank",
                      rank,
                      "--targets",
                      (char *)c->targets,
                      NULL};
        if (run(av, "ramole pool add", pathf(log, "%s/build/pool-add-%s.log", dir, c->t[i].name))) return 1;
    }
    if (stamp_write(dir, "pool", key.h)) return cli_fail("stamp");
    fprintf(stderr, "world build: pool of %d adapters in %s\n", c->n, pool);
    return 0;
}

// The seen tasks of split seed S: round(fraction x n) of them, spread over the
// clusters in proportion to their sizes (largest remainders, ties at random),
// every cluster of two or more tasks keeping at least one seen and one unseen
// task; which tasks within a cluster, at random. seen[i] set for task i.
static void world_split(const wconf *c, long split_seed, int *seen) {
    uint64_t rng = (uint64_t)split_seed * 0x9e3779b97f4a7c15ull + 0x73706c6974ull;
    int n_cl = 0, *first = calloc((size_t)c->n, sizeof *first), *size = calloc((size_t)c->n, sizeof *size);
    int *quota = calloc((size_t)c->n, sizeof *quota), *order = calloc((size_t)c->n, sizeof *order);
    double *rem = calloc((size_t)c->n, sizeof *rem);
    memset(seen, 0, (size_t)c->n * sizeof *seen);
    if (!first || !size || !quota || !order || !rem) goto done; // nothing seen: the trainers then refuse
    for (int i = 0; i < c->n; i++) {
        if (i == 0 || strcmp(c->t[i].cluster, c->t[i - 1].cluster)) first[n_cl++] = i;
        size[n_cl - 1]++;
    }
    int want = (int)(c->seen_fraction * c->n + 0.5), got = 0;
    for (int k = 0; k < n_cl; k++) {
        double q = c->seen_fraction * size[k];
        quota[k] = (int)q;
        rem[k] = q - quota[k] + 1e-9 * (double)(rm_rng_next(&rng) % 1000);
        if (size[k] >= 2 && quota[k] < 1) quota[k] = 1, rem[k] = -1;
        if (size[k] >= 2 && quota[k] > size[k] - 1) quota[k] = size[k] - 1;
        got += quota[k];
        order[k] = k;
    }
    for (int a = 0; a < n_cl; a++) // clusters by decreasing remainder
        for (int b = a + 1; b < n_cl; b++)
            if (rem[order[b]] > rem[order[a]]) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    for (int a = 0; got < want && a < n_cl; a++) {
        int k = order[a];
        if (quota[k] < size[k] - (size[k] >= 2)) quota[k]++, got++;
    }
    for (int k = 0; k < n_cl; k++) {
        int idx[64], m = size[k] < 64 ? size[k] : 64;
        for (int i = 0; i < m; i++) idx[i] = first[k] + i;
        rm_shuffle(idx, m, &rng);
        for (int i = 0; i < quota[k] && i < m; i++) seen[idx[i]] = 1;
    }
done:
    free(first);
    free(size);
    free(quota);
    free(order);
    free(rem);
}

// Step 4: the experiment of split seed S in DIR/experiment/split-S/: the split
// (split.json, seen.txt), the RouterLoRA trained the paper's way (`ramole
// router train --pool`: each example's own retrieved adapters, its own adapter
// dropped at random, the seen tasks only) and the MoE / SMEAR gates over the
// seen tasks' adapters (`ramole gate train`), validated on the seen tasks'
// validation splits.
static int build_experiment(const char *dir, const wconf *c, long split_seed, uint64_t pool_key, long parallel,
                            const char *threads) {
    char xdir[PATHN], path[PATHN], seenf[PATHN], data[PATHN * 2], valid[PATHN * 2];
    int *seen = calloc((size_t)c->n, sizeof *seen), rc = 1, n_seen = 0;
    rm_sb js = {0}, list = {0}, files = {0}, vfiles = {0};
    job jobs[5];
    int n_jobs = 0;
    memset(jobs, 0, sizeof jobs);
    if (!seen) {
        fprintf(stderr, "ramole world build: out of memory\n");
        return 1;
    }
    world_split(c, split_seed, seen);
    pathf(xdir, "%s/experiment/split-%ld", dir, split_seed);
    if (rm_mkdirs(xdir)) {
        cli_fail(xdir);
        goto done;
    }
    rm_sb_printf(&js, "{\"seed\": %ld, \"seen_fraction\": %g, \"seen\": [", split_seed, c->seen_fraction);
    for (int pass = 0; pass < 2; pass++) {
        if (pass) rm_sb_puts(&js, "], \"unseen\": [");
        for (int i = 0, first = 1; i < c->n; i++) {
            if (seen[i] != !pass) continue;
            rm_sb_puts(&js, first ? "" : ", ");
            rm_sb_json_str(&js, c->t[i].name, strlen(c->t[i].name));
            first = 0;
        }
    }
    rm_sb_puts(&js, "]}\n");
    for (int i = 0; i < c->n; i++) {
        if (!seen[i]) continue;
        rm_sb_printf(&list, "%s\n", c->t[i].name);
        rm_sb_printf(&files, "%s%s/tasks/%s.jsonl", n_seen ? "," : "", dir, c->t[i].name);
        rm_sb_printf(&vfiles, "%s%s/tasks/%s.valid.jsonl", n_seen ? "," : "", dir, c->t[i].name);
        n_seen++;
    }
    if (js.oom || list.oom || files.oom || vfiles.oom || strlen(files.buf) >= sizeof data ||
        strlen(vfiles.buf) >= sizeof valid) {
        fprintf(stderr, "ramole world build: out of memory (or a world too large for one command line)\n");
        goto done;
    }
    snprintf(data, sizeof data, "%s", files.buf);
    snprintf(valid, sizeof valid, "%s", vfiles.buf);
    if (rm_write_file_atomic(pathf(path, "%s/split.json", xdir), js.buf, js.len) ||
        rm_write_file_atomic(pathf(seenf, "%s/seen.txt", xdir), list.buf, list.len)) {
        cli_fail(xdir);
        goto done;
    }
    static const char *const KIND[5] = {"router", "soft", "topk", "top1", "smear"};
    static const char *const OUT[5] = {"router", "moe-soft", "moe-topk", "moe-top1", "smear"};
    for (int k = 0; k < 5; k++) {
        stamp s = {pool_key};
        stamp_str(&s, KIND[k]);
        stamp_str(&s, js.buf);
        // each training's stamp holds its own settings only: a new router setting retrains the router, not the gates
        long v[6] = {k ? 0 : c->r_rank, k ? c->g_k : c->r_k, k ? c->g_steps : c->r_steps, k ? c->g_batch : c->r_batch,
                     c->seed,           split_seed};
        double f[3] = {k ? 0 : c->r_alpha, k ? 0 : c->r_dropout, k ? c->g_lr : c->r_lr};
        stamp_bytes(&s, v, sizeof v);
        stamp_bytes(&s, f, sizeof f);
        char sname[PATHN], out[PATHN];
        pathf(sname, "split-%ld-%s", split_seed, OUT[k]);
        pathf(out, "%s/%s.gguf", xdir, OUT[k]);
        if (stamp_ok(dir, sname, s.h) && rm_file_exists(out)) continue;
        job *j = &jobs[n_jobs++];
        j->key = s.h;
        snprintf(j->stamp, sizeof j->stamp, "%s", sname);
        snprintf(j->label, sizeof j->label, "%s", OUT[k]);
        pathf(j->log, "%s/build/%s.log", dir, sname);
        job_arg(j, "ramole"), job_arg(j, k ? "gate" : "router"), job_arg(j, "train");
        job_arg(j, "--base"), job_arg(j, "%s/base.gguf", dir), job_arg(j, "--pool"), job_arg(j, "%s/pool", dir);
        if (k == 0) {
            job_arg(j, "--retrieve"), job_arg(j, "%ld", c->r_k), job_arg(j, "--lora-dropout"),
                job_arg(j, "%g", c->r_dropout);
            job_arg(j, "--train-tasks"), job_arg(j, "@%s", seenf);
            job_arg(j, "--rank"), job_arg(j, "%ld", c->r_rank), job_arg(j, "--alpha"), job_arg(j, "%g", c->r_alpha);
            job_arg(j, "--steps"), job_arg(j, "%ld", c->r_steps), job_arg(j, "--batch"), job_arg(j, "%ld", c->r_batch);
            job_arg(j, "--lr"), job_arg(j, "%g", c->r_lr);
        } else {
            job_arg(j, "--adapters-of-tasks"), job_arg(j, "@%s", seenf), job_arg(j, "--kind"),
                job_arg(j, "%s", KIND[k]);
            if (k == 2) job_arg(j, "--k"), job_arg(j, "%ld", c->g_k);
            job_arg(j, "--steps"), job_arg(j, "%ld", c->g_steps), job_arg(j, "--batch"), job_arg(j, "%ld", c->g_batch);
            job_arg(j, "--lr"), job_arg(j, "%g", c->g_lr);
        }
        job_arg(j, "--data"), job_arg(j, "%s", data), job_arg(j, "--eval"), job_arg(j, "%s", valid);
        job_arg(j, "--template"), job_arg(j, "%s/template.txt", dir), job_arg(j, "--out"), job_arg(j, "%s", out);
        job_arg(j, "--seed"), job_arg(j, "%ld", c->seed * 1000 + 900 + k), job_arg(j, "--threads"),
            job_arg(j, "%s", threads);
        job_arg(j, "--json");
    }
    if (!n_jobs) {
        fprintf(stderr, "world build: experiment split %ld (%d seen tasks): up to date (%s)\n", split_seed, n_seen,
                xdir);
        rc = 0;
    } else {
        fprintf(stderr,
                "world build: experiment split %ld: %d of %d tasks seen; training %d of the router and the 4 gates\n",
                split_seed, n_seen, c->n, n_jobs);
        rc = run_jobs(jobs, n_jobs, parallel, "trainings", dir, NULL);
    }
done:
    for (int k = 0; k < n_jobs; k++) job_free(&jobs[k]);
    rm_sb_free(&js);
    rm_sb_free(&list);
    rm_sb_free(&files);
    rm_sb_free(&vfiles);
    free(seen);
    return rc;
}

static int world_build(int argc, char **argv) {
    const char *dir = NULL;
    long threads = 0, jobs = 0, split_seed = 1;
    int experiment = 1;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 0;
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {
        } else if (cli_int(argc, argv, &i, "--jobs", "-j", &jobs)) {
        } else if (cli_int(argc, argv, &i, "--split-seed", NULL, &split_seed)) {
        } else if (cli_flag(argc, argv, &i, "--no-experiment", NULL)) experiment = 0;
        else if (!dir && argv[i][0] != '-') dir = argv[i];
        else {
            fprintf(stderr, "ramole world build: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (split_seed < 0) {
        fprintf(stderr, "ramole world build: --split-seed must be 0 or more\n");
        return 2;
    }
    if (!dir) {
        fprintf(stderr, "ramole world build: give the world's directory (from `ramole world make`)\n");
        return 2;
    }
    if (strlen(dir) > 3000) {
        fprintf(stderr, "ramole world build: directory name too long\n");
        return 2;
    }
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
    uint64_t *akey = calloc((size_t)c.n, sizeof *akey), pool_key = 0;
    stamp base;
    if (!akey) fprintf(stderr, "ramole world build: out of memory\n");
    else if (rm_mkdirs(pathf(path, "%s/build", dir)) || rm_mkdirs(pathf(path, "%s/adapters", dir))) cli_fail(dir);
    else if (!build_base(dir, all_t, &base) && !build_adapters(dir, &c, &base, jobs, job_t, akey, &em) &&
             !build_pool(dir, &c, akey, &pool_key) &&
             (!experiment || !build_experiment(dir, &c, split_seed, pool_key, jobs, job_t))) {
        printf("world build: %s ready in %.0f s: base.gguf, %d adapters in adapters/, pool/%s", dir, rm_now() - t0, c.n,
               experiment ? ", experiment/" : "");
        if (em >= 0) printf(" (adapters trained now: mean validation exact match %.1f)", em);
        printf("\n");
        rc = 0;
    }
    free(akey);
    wconf_free(&c);
    return rc;
}

// ---------------------------------------------------------------- check

static void check_progress(void *user, const char *stage, long done, long total) {
    rm_progress *pg = user;
    if (pg->total != total || strcmp(pg->label, stage)) {
        if (pg->label) rm_progress_finish(pg, pg->total);
        rm_progress_start(pg, stage, "requests", total);
    }
    rm_progress_update(pg, done, done == total);
}

static int world_check(int argc, char **argv) {
    const char *dir = NULL, *svg = NULL;
    long threads = 0, limit = 0;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 0;
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {
        } else if (cli_int(argc, argv, &i, "--limit", NULL, &limit)) {
        } else if (cli_str(argc, argv, &i, "--svg", NULL, &svg)) {
        } else if (cli_flag(argc, argv, &i, "--json", NULL)) json = 1;
        else if (!dir && argv[i][0] != '-') dir = argv[i];
        else {
            fprintf(stderr, "ramole world check: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "ramole world check: give a built world's directory\n");
        return 2;
    }
    if (limit < 0 || threads < 0) {
        fprintf(stderr, "ramole world check: bad --limit or --threads\n");
        return 2;
    }
    rm_world_check_params p = rm_world_check_default_params();
    rm_progress pg = {0};
    p.dir = dir;
    p.threads = (int)threads;
    p.eval.limit = (int)limit;
    p.eval.progress = check_progress;
    p.eval.user = &pg;
    rm_world_check c;
    int rc = rm_world_check_run(&p, &c);
    if (pg.label) rm_progress_finish(&pg, pg.total);
    if (rc) return cli_fail("world check");
    rm_world_sanity s;
    rm_world_check_sanity(&c, &s);
    int n = c.n;
    rm_sb sb = {0};
    if (json) {
        rm_sb_printf(&sb, "{\"base\": %.2f, \"own\": %.2f, \"own_min\": %.2f, \"own_min_task\": ", s.base, s.own,
                     s.own_min);
        rm_sb_json_str(&sb, c.task[s.own_min_task], strlen(c.task[s.own_min_task]));
        rm_sb_printf(
            &sb,
            ", \"sibling\": %.2f, \"sibling_gain\": %.2f, \"foreign_best\": %.2f, \"foreign_best_gain\": %.2f, "
            "\"foreign_mean\": %.2f, \"foreign_mean_gain\": %.2f, \"requests\": %d, \"tasks\": {",
            s.sibling, s.sibling_gain, s.foreign_best, s.foreign_best_gain, s.foreign_mean, s.foreign_mean_gain,
            c.requests);
        for (int t = 0; t < n; t++) {
            rm_sb_puts(&sb, t ? ", " : "");
            rm_sb_json_str(&sb, c.task[t], strlen(c.task[t]));
            rm_sb_printf(&sb, ": {\"cluster\": \"%s\", \"base\": %.2f, \"adapters\": [", c.cluster[t], c.base[t]);
            for (int a = 0; a < n; a++) rm_sb_printf(&sb, "%s%.2f", a ? ", " : "", c.score[(size_t)t * n + a]);
            rm_sb_puts(&sb, "]}");
        }
        rm_sb_puts(&sb, "}}\n");
    } else {
        rm_sb_printf(&sb, "| task | cluster | base | own adapter | best sibling | best foreign |\n| --- | --- | --- | "
                          "--- | --- | --- |\n");
        for (int t = 0; t < n; t++) {
            int bs = -1, bf = -1;
            for (int a = 0; a < n; a++) {
                if (a == t) continue;
                int same = !strcmp(c.cluster[a], c.cluster[t]);
                int *b = same ? &bs : &bf;
                if (*b < 0 || c.score[(size_t)t * n + a] > c.score[(size_t)t * n + *b]) *b = a;
            }
            rm_sb_printf(&sb, "| %s | %s | %.1f | %.1f | ", c.task[t], c.cluster[t], c.base[t],
                         c.score[(size_t)t * n + t]);
            if (bs >= 0) rm_sb_printf(&sb, "%.1f (%s) | ", c.score[(size_t)t * n + bs], c.task[bs]);
            else rm_sb_puts(&sb, "- | ");
            if (bf >= 0) rm_sb_printf(&sb, "%.1f (%s) |\n", c.score[(size_t)t * n + bf], c.task[bf]);
            else rm_sb_puts(&sb, "- |\n");
        }
        rm_sb_printf(&sb,
                     "\nmeans over %d tasks (%d test requests for each of base + %d adapters, %.0f s, %.0f rows per "
                     "forward pass):\n"
                     "  base model alone                       %6.1f\n"
                     "  own adapter (perfect selection)        %6.1f   lowest task %.1f (%s)\n"
                     "  best sibling adapter (same cluster)    %6.1f   base + %.1f\n"
                     "  best foreign adapter (other clusters)  %6.1f   base + %.1f\n"
                     "  mean foreign adapter                   %6.1f   base + %.1f\n",
                     n, c.requests, n, c.seconds, c.rows_per_forward, s.base, s.own, s.own_min, c.task[s.own_min_task],
                     s.sibling, s.sibling_gain, s.foreign_best, s.foreign_best_gain, s.foreign_mean,
                     s.foreign_mean_gain);
    }
    if (!sb.oom && sb.buf) fputs(sb.buf, stdout);
    rm_sb_free(&sb);
    char svg_path[PATHN];
    if (!svg) svg = pathf(svg_path, "%s/check.svg", dir);
    if (rm_svg_heatmap(svg, "score of each task's test requests (rows) with each adapter alone (columns)",
                       (const char *const *)c.task, n, (const char *const *)c.task, n, c.score, 0, 100)) {
        rm_world_check_free(&c);
        return cli_fail(svg);
    }
    if (!json) printf("heat map: %s\n", svg);
    rm_world_check_free(&c);
    return 0;
}

static int cmd_world(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "make")) return world_make(argc, argv);
    if (!strcmp(argv[1], "build")) return world_build(argc, argv);
    if (!strcmp(argv[1], "check")) return world_check(argc, argv);
    fprintf(stderr, "ramole world: unknown subcommand '%s' (make, build, check)\n", argv[1]);
    return 2;
}

RM_COMMAND(world, "make and build the synthetic mixed-task world of the paper's experiment", cmd_world)
