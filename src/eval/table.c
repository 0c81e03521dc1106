// table.c — the paper's table on a world (see table.h).
#include "eval/table.h"
#include "base/err.h"
#include "base/file.h"
#include "base/svg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The rows as the paper names them, the trained file each needs, whether it trains.
static const char *const k_labels[RM_METHOD_N_NAMED] = {"Base",
                                                        "Perfect selection",
                                                        "Selection",
                                                        "Mixture",
                                                        "Fusion",
                                                        "MoE top-1",
                                                        "MoE top-k",
                                                        "MoE soft",
                                                        "SMEAR",
                                                        "AdapterSoup",
                                                        "LoraHub (uses task labels)",
                                                        "Arrow",
                                                        "RAMoLE"};
static const char *const k_files[RM_METHOD_N_NAMED] = {
    NULL,         NULL, NULL, NULL, NULL,         "moe-top1.gguf", "moe-topk.gguf", "moe-soft.gguf",
    "smear.gguf", NULL, NULL, NULL, "router.gguf"};
static const int k_trains[RM_METHOD_N_NAMED] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1};
enum { ROW_BASE = 0, ROW_ORACLE = 1, ROW_RAMOLE = 12 };
enum { RUN_RAMOLE, RUN_OTHERS };

// What the runs use and their items refer to: kept with the table.
typedef struct rm_table_res resources;
struct rm_table_res {
    rm_llama *m;
    rm_pool *pool;
    rm_threadpool *tp;
    rm_evalset set;
    char *tmpl;
    rm_eval_env *env;
    char tasks_dir[4096]; // the environment's and the methods' paths
    char file[RM_METHOD_N_NAMED][4096];
};

static void resources_free(resources *r) {
    if (!r) return;
    rm_eval_env_free(r->env);
    rm_threadpool_free(r->tp);
    if (r->pool) rm_pool_close(r->pool);
    rm_llama_free(r->m);
    rm_evalset_free(&r->set);
    free(r->tmpl);
    free(r);
}

rm_table_params rm_table_default_params(void) {
    rm_table_params p = {
        .split_seed = 1, .k = 3, .eval = rm_run_default_params(), .lorahub = rm_lorahub_default_params()};
    p.eval.slots = 64;
    return p;
}

static void free_strs(char **s, int n) {
    for (int i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

void rm_table_free(rm_table *t) {
    for (int r = 0; r < 2; r++) {
        rm_run_result_free(&t->runs[r]);
        free(t->run_methods[r]);
    }
    for (int i = 0; i < RM_METHOD_N_NAMED; i++) {
        free(t->rows[i].skipped);
        free(t->rows[i].cluster[0]);
        free(t->rows[i].cluster[1]);
    }
    free_strs(t->clusters, t->n_clusters);
    free_strs(t->seen, t->n_seen);
    free_strs(t->unseen, t->n_unseen);
    free_strs(t->notes, t->n_notes);
    free(t->dir);
    resources_free(t->res);
    memset(t, 0, sizeof *t);
}

// buf = dir/name; an error when it does not fit.
static int path_of(char *buf, size_t cap, const char *dir, const char *name) {
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? rm_errorf(RM_EINVAL, "%s/%s: path too long", dir, name) : RM_OK;
}

static void note(rm_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(rm_table *t, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **n = realloc(t->notes, (size_t)(t->n_notes + 1) * sizeof *n);
    if (!n) return;
    t->notes = n;
    if ((t->notes[t->n_notes] = strdup(buf))) t->n_notes++;
}

// ---------------------------------------------------------------- the world and the split

typedef struct wtask {
    char *name;
    int cluster;
} wtask;

typedef struct world {
    wtask *t;
    int n;
} world;

static void world_free(world *w) {
    for (int i = 0; i < w->n; i++) free(w->t[i].name);
    free(w->t);
}

static int cluster_index(rm_table *t, const char *name) {
    for (int i = 0; i < t->n_clusters; i++)
        if (!strcmp(t->clusters[i], name)) return i;
    char **c = realloc(t->clusters, (size_t)(t->n_clusters + 1) * sizeof *c);
    if (!c) return -1;
    t->clusters = c;
    if (!(c[t->n_clusters] = strdup(name))) return -1;
    return t->n_clusters++;
}

// world.json's tasks and their clusters (clusters in order of first appearance).
static int load_world(const char *dir, rm_table *t, world *w) {
    char path[4096];
    rm_json *j = NULL;
    int rc = path_of(path, sizeof path, dir, "world.json");
    if (!rc) rc = rm_json_parse_file(path, &j);
    const rm_json *tasks = rc ? NULL : rm_json_get(j, "tasks");
    if (!rc && (!tasks || tasks->type != RM_JSON_ARRAY || !tasks->n))
        rc = rm_errorf(RM_EFORMAT, "%s has no \"tasks\" list", path);
    if (!rc && !(w->t = calloc(tasks->n, sizeof *w->t))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < tasks->n; i++) {
        const char *name = rm_json_get_str(&tasks->items[i], "name", NULL),
                   *cl = rm_json_get_str(&tasks->items[i], "cluster", NULL);
        if (!name || !cl) {
            rc = rm_errorf(RM_EFORMAT, "%s: task %zu has no \"name\" and \"cluster\"", path, i + 1);
            break;
        }
        w->t[w->n].cluster = cluster_index(t, cl);
        if (w->t[w->n].cluster < 0 || !(w->t[w->n].name = strdup(name))) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else w->n++;
    }
    rm_json_free(j);
    return rc;
}

static int str_list(const rm_json *a, const char *path, const char *key, char ***out, int *n) {
    if (!a || a->type != RM_JSON_ARRAY) return rm_errorf(RM_EFORMAT, "%s has no \"%s\" list", path, key);
    if (!(*out = calloc(a->n + 1, sizeof **out))) return rm_errorf(RM_ENOMEM, "out of memory");
    for (size_t i = 0; i < a->n; i++) {
        if (a->items[i].type != RM_JSON_STRING)
            return rm_errorf(RM_EFORMAT, "%s: \"%s\" holds a non-string", path, key);
        if (!((*out)[*n] = strdup(a->items[i].str))) return rm_errorf(RM_ENOMEM, "out of memory");
        ++*n;
    }
    return RM_OK;
}

// split.json of the experiment, when there is one (else a note).
static int load_split(const char *exp, rm_table *t) {
    char path[4096];
    int rc = path_of(path, sizeof path, exp, "split.json");
    if (rc) return rc;
    if (!rm_file_exists(path)) {
        note(t, "%s not found: no seen / unseen means", path);
        return RM_OK;
    }
    rm_json *j = NULL;
    rc = rm_json_parse_file(path, &j);
    if (!rc) rc = str_list(rm_json_get(j, "seen"), path, "seen", &t->seen, &t->n_seen);
    if (!rc) rc = str_list(rm_json_get(j, "unseen"), path, "unseen", &t->unseen, &t->n_unseen);
    if (!rc && rm_json_get_int(j, "seed", t->split_seed) != t->split_seed)
        note(t, "%s says seed %lld, read as split %d", path, (long long)rm_json_get_int(j, "seed", 0), t->split_seed);
    rm_json_free(j);
    t->has_split = rc == RM_OK;
    return rc;
}

static int in_list(char **list, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

// ---------------------------------------------------------------- the methods

// wanted[i] for the comma-separated names in list (NULL: all).
static int wanted_methods(const char *list, int *wanted) {
    for (int i = 0; i < RM_METHOD_N_NAMED; i++) wanted[i] = list == NULL;
    for (const char *p = list; p && *p;) {
        while (*p == ',' || *p == ' ') p++;
        size_t len = strcspn(p, ", ");
        if (!len) break;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), p);
        rm_method m;
        int rc = rm_method_named(&m, name, 1);
        if (rc) return rc;
        for (int i = 0; i < RM_METHOD_N_NAMED; i++) wanted[i] |= !strcmp(rm_method_names[i], name);
        p += len;
    }
    return RM_OK;
}

// Where each (row, block) ran: run index and method index there (-1: not run).
typedef struct where {
    int run, idx;
} where;

// Adds row i's block to run r's methods.
static int add_method(rm_table *t, int r, int i, int ood, const rm_table_params *p, const char *file, int *count,
                      where *w) {
    rm_method *ms = realloc(t->run_methods[r], (size_t)(count[r] + 1) * sizeof *ms);
    if (!ms) return rm_errorf(RM_ENOMEM, "out of memory");
    t->run_methods[r] = ms;
    rm_method *m = &ms[count[r]];
    int rc = rm_method_named(m, rm_method_names[i], p->k);
    if (rc) return rc;
    m->exclude_own = ood;
    m->lorahub = p->lorahub;
    if (m->kind == RM_METHOD_GATE) m->gate = file;
    if (m->compose == RM_COMPOSE_ROUTER) m->router = file;
    *w = (where){r, count[r]++};
    return RM_OK;
}

// ---------------------------------------------------------------- scores

static double cell_mean(const double *sum, const int *n, int k) { return n[k] ? sum[k] / n[k] : NAN; }

// The row's block from a method's scores: per cluster, over all tasks, seen and unseen.
static int fill(rm_table *t, const world *w, rm_table_row *row, int b, const rm_scoreboard *sb) {
    int nc = t->n_clusters;
    double *sum = calloc((size_t)nc + 2, sizeof *sum);
    int *cnt = calloc((size_t)nc + 2, sizeof *cnt);
    if (!sum || !cnt || !(row->cluster[b] = malloc((size_t)(nc ? nc : 1) * sizeof(double)))) {
        free(sum);
        free(cnt);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    for (int i = 0; i < sb->n; i++) {
        double v = 100 * rm_task_score_value(&sb->t[i]);
        for (int k = 0; k < w->n; k++)
            if (!strcmp(w->t[k].name, sb->t[i].task)) sum[w->t[k].cluster] += v, cnt[w->t[k].cluster]++;
        if (in_list(t->seen, t->n_seen, sb->t[i].task)) sum[nc] += v, cnt[nc]++;
        if (in_list(t->unseen, t->n_unseen, sb->t[i].task)) sum[nc + 1] += v, cnt[nc + 1]++;
    }
    for (int c = 0; c < nc; c++) row->cluster[b][c] = cell_mean(sum, cnt, c);
    row->seen[b] = cell_mean(sum, cnt, nc);
    row->unseen[b] = cell_mean(sum, cnt, nc + 1);
    row->mean[b] = 100 * rm_scoreboard_mean(sb, -1, NULL);
    row->ran[b] = 1;
    free(sum);
    free(cnt);
    return RM_OK;
}

// ---------------------------------------------------------------- the run

static int open_resources(const rm_table_params *p, resources *r) {
    char path[4096];
    size_t len;
    int rc = path_of(path, sizeof path, p->dir, "template.txt");
    if (!rc) rc = rm_read_file(path, &r->tmpl, &len);
    if (!rc) rc = path_of(path, sizeof path, p->dir, "combined_test.json");
    if (!rc) rc = rm_evalset_load(path, RM_METRIC_EM, &r->set);
    if (!rc) rc = path_of(path, sizeof path, p->dir, "base.gguf");
    if (!rc) rc = rm_llama_load(&r->m, p->model ? p->model : path);
    if (!rc) rc = path_of(path, sizeof path, p->dir, "pool");
    if (!rc) rc = rm_pool_open_existing(path, &r->pool);
    if (!rc && !(r->tp = rm_threadpool_create(p->threads))) rc = rm_errorf(RM_ENOMEM, "cannot start threads");
    if (!rc) rc = path_of(r->tasks_dir, sizeof r->tasks_dir, p->dir, "tasks");
    rm_run_params ep = p->eval;
    ep.tmpl = r->tmpl, ep.task_data = r->tasks_dir;
    if (!rc) rc = rm_eval_env_new(&r->env, r->m, r->pool, r->tp, &ep);
    return rc;
}

int rm_table_run(const rm_table_params *p, rm_table *t) {
    memset(t, 0, sizeof *t);
    t->split_seed = p->split_seed, t->k = p->k;
    resources *res = calloc(1, sizeof *res);
    world w = {0};
    where at[RM_METHOD_N_NAMED][2];
    int wanted[RM_METHOD_N_NAMED], count[2] = {0, 0};
    char exp[4096], sub[64];
    snprintf(sub, sizeof sub, "experiment/split-%d", p->split_seed);
    int rc = !res      ? rm_errorf(RM_ENOMEM, "out of memory")
             : !p->dir ? rm_errorf(RM_EINVAL, "table: no world directory")
                       : wanted_methods(p->methods, wanted);
    t->res = res;
    if (!rc) rc = path_of(exp, sizeof exp, p->dir, sub);
    if (!rc && !(t->dir = strdup(p->dir))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (!rc) rc = load_world(p->dir, t, &w);
    if (!rc) rc = load_split(exp, t);
    if (!rc) rc = open_resources(p, res);
    // the rows asked for, their files, and where each block runs
    for (int i = 0; !rc && i < RM_METHOD_N_NAMED; i++) {
        at[i][0] = at[i][1] = (where){-1, -1};
        if (!wanted[i]) continue;
        rm_table_row *row = &t->rows[t->n_rows++];
        row->method = rm_method_names[i], row->label = k_labels[i], row->trains = k_trains[i];
        row->mean[0] = row->mean[1] = NAN;
        if (k_files[i]) {
            char *file = res->file[i];
            if ((rc = path_of(file, sizeof res->file[i], exp, k_files[i]))) break;
            if (!rm_file_exists(file)) {
                rm_sb why;
                rm_sb_init(&why);
                rm_sb_printf(&why, "%s not found (`ramole %s train`)", file, i == ROW_RAMOLE ? "router" : "gate");
                if (why.oom || !(row->skipped = strdup(why.buf))) rc = rm_errorf(RM_ENOMEM, "out of memory");
                else note(t, "%s skipped: %s", row->method, row->skipped);
                rm_sb_free(&why);
                continue;
            }
        }
        int r = i == ROW_RAMOLE ? RUN_RAMOLE : RUN_OTHERS;
        for (int b = 0; !rc && b < 2; b++)
            if (b == RM_TABLE_IID || (i != ROW_BASE && i != ROW_ORACLE))
                rc = add_method(t, r, i, b, p, k_files[i] ? res->file[i] : NULL, count, &at[i][b]);
    }
    // RAMoLE alone, then the others (their counters apart)
    double t0 = rm_now();
    for (int r = 0; !rc && r < 2; r++) {
        if (!count[r]) continue;
        rc = rm_eval_run(res->env, &res->set, t->run_methods[r], count[r], &t->runs[r]);
        if (rc) break;
        t->ran_run[r] = 1, t->n_runs++;
        const rm_run_result *er = &t->runs[r];
        t->rows_per_forward[r] = er->forward_passes ? (double)er->rows / (double)er->forward_passes : 0;
        t->n_requests = er->n_requests;
    }
    t->seconds = rm_now() - t0;
    // the cells
    for (int i = 0, j = 0; !rc && i < RM_METHOD_N_NAMED; i++) {
        if (!wanted[i]) continue;
        rm_table_row *row = &t->rows[j++];
        for (int b = 0; !rc && b < 2; b++) {
            where x = at[i][b];
            if (i == ROW_BASE && b == RM_TABLE_OOD) x = at[i][RM_TABLE_IID]; // nothing to leave out
            if (x.run >= 0) rc = fill(t, &w, row, b, &t->runs[x.run].board[x.idx]);
        }
    }
    world_free(&w);
    if (rc) rm_table_free(t);
    return rc;
}

// ---------------------------------------------------------------- output

static void put_cell(rm_sb *sb, double v) {
    if (isnan(v)) rm_sb_puts(sb, " |");
    else rm_sb_printf(sb, " %.1f |", v);
}

static void markdown_block(const rm_table *t, int b, rm_sb *sb) {
    rm_sb_printf(sb, "\n### %s\n\n| method |",
                 b == RM_TABLE_IID
                     ? "In distribution (IID): each request's own task's adapter is in the pool"
                     : "Out of distribution (OOD): each request's own task's adapter left out (--exclude-own)");
    for (int c = 0; c < t->n_clusters; c++) rm_sb_printf(sb, " %s |", t->clusters[c]);
    rm_sb_puts(sb, " mean |");
    if (t->has_split) rm_sb_puts(sb, " seen | unseen |");
    rm_sb_puts(sb, "\n| --- |");
    for (int c = 0; c < t->n_clusters + 1 + 2 * t->has_split; c++) rm_sb_puts(sb, " ---: |");
    rm_sb_puts(sb, "\n");
    for (int i = 0; i < t->n_rows; i++) {
        const rm_table_row *row = &t->rows[i];
        rm_sb_printf(sb, "| %s |", row->label);
        if (!row->ran[b]) { // skipped, or no such block (the oracle out of distribution)
            const char *why = row->skipped ? " skipped |" : " - |";
            for (int c = 0; c < t->n_clusters + 1 + 2 * t->has_split; c++) rm_sb_puts(sb, why);
            rm_sb_puts(sb, "\n");
            continue;
        }
        for (int c = 0; c < t->n_clusters; c++) put_cell(sb, row->cluster[b][c]);
        put_cell(sb, row->mean[b]);
        if (t->has_split) {
            put_cell(sb, row->trains ? row->seen[b] : NAN);
            put_cell(sb, row->trains ? row->unseen[b] : NAN);
        }
        rm_sb_puts(sb, "\n");
    }
}

void rm_table_markdown(const rm_table *t, rm_sb *sb) {
    rm_sb_printf(sb, "## RAMoLE's table on %s: %d requests, k = %d", t->dir, t->n_requests, t->k);
    if (t->has_split) rm_sb_printf(sb, ", split %d (%d seen, %d unseen tasks)", t->split_seed, t->n_seen, t->n_unseen);
    rm_sb_puts(sb, "\n\nScores x 100 (each task's metric, tasks averaged with equal weight). Seen / unseen: the tasks "
                   "the router and the gates were trained on and the others, for the methods that train (LoraHub "
                   "searches on each task's own examples).\n");
    markdown_block(t, RM_TABLE_IID, sb);
    markdown_block(t, RM_TABLE_OOD, sb);
    rm_sb_puts(sb, "\nRows per forward pass (the engine's counters):");
    if (t->ran_run[RUN_RAMOLE])
        rm_sb_printf(sb, " RAMoLE's requests, each with its own retrieved adapters, %.1f;",
                     t->rows_per_forward[RUN_RAMOLE]);
    if (t->ran_run[RUN_OTHERS]) rm_sb_printf(sb, " the other methods together %.1f;", t->rows_per_forward[RUN_OTHERS]);
    rm_sb_printf(sb, " %.1f s in all.\n", t->seconds);
    for (int i = 0; i < t->n_notes; i++) rm_sb_printf(sb, "%s- %s\n", i ? "" : "\n", t->notes[i]);
}

static void json_names(rm_sb *sb, const char *key, char **names, int n) {
    rm_sb_printf(sb, ", \"%s\": [", key);
    for (int i = 0; i < n; i++) {
        rm_sb_puts(sb, i ? ", " : "");
        rm_sb_json_str(sb, names[i], strlen(names[i]));
    }
    rm_sb_puts(sb, "]");
}

static void json_block(const rm_table *t, int b, rm_sb *sb) {
    rm_sb_printf(sb, "\"%s\": {", b == RM_TABLE_IID ? "iid" : "ood");
    int first = 1;
    for (int i = 0; i < t->n_rows; i++) {
        const rm_table_row *row = &t->rows[i];
        if (row->skipped) continue;
        rm_sb_printf(sb, "%s\"%s\": ", first ? "" : ", ", row->method);
        first = 0;
        if (!row->ran[b]) {
            rm_sb_puts(sb, "null");
            continue;
        }
        rm_sb_puts(sb, "{\"mean\": ");
        rm_sb_json_num(sb, row->mean[b]);
        if (row->trains && t->has_split) {
            rm_sb_puts(sb, ", \"seen\": ");
            rm_sb_json_num(sb, row->seen[b]);
            rm_sb_puts(sb, ", \"unseen\": ");
            rm_sb_json_num(sb, row->unseen[b]);
        }
        for (int c = 0; c < t->n_clusters; c++) {
            rm_sb_puts(sb, ", ");
            rm_sb_json_str(sb, t->clusters[c], strlen(t->clusters[c]));
            rm_sb_puts(sb, ": ");
            rm_sb_json_num(sb, row->cluster[b][c]);
        }
        rm_sb_puts(sb, "}");
    }
    rm_sb_puts(sb, "}");
}

void rm_table_json(const rm_table *t, rm_sb *sb) {
    rm_sb_puts(sb, "{");
    json_block(t, RM_TABLE_IID, sb);
    rm_sb_puts(sb, ", ");
    json_block(t, RM_TABLE_OOD, sb);
    rm_sb_printf(sb, ", \"split_seed\": %d, \"k\": %d, \"requests\": %d, \"rows_per_forward\": {", t->split_seed, t->k,
                 t->n_requests);
    const char *sep = "";
    if (t->ran_run[RUN_RAMOLE]) {
        rm_sb_puts(sb, "\"ramole\": ");
        rm_sb_json_num(sb, t->rows_per_forward[RUN_RAMOLE]);
        sep = ", ";
    }
    if (t->ran_run[RUN_OTHERS]) {
        rm_sb_printf(sb, "%s\"others\": ", sep);
        rm_sb_json_num(sb, t->rows_per_forward[RUN_OTHERS]);
    }
    rm_sb_puts(sb, "}, \"uses_task_labels\": [\"lorahub\"]");
    if (t->has_split) {
        json_names(sb, "seen", t->seen, t->n_seen);
        json_names(sb, "unseen", t->unseen, t->n_unseen);
    }
    rm_sb_puts(sb, ", \"skipped\": {");
    sep = "";
    for (int i = 0; i < t->n_rows; i++) {
        if (!t->rows[i].skipped) continue;
        rm_sb_printf(sb, "%s\"%s\": ", sep, t->rows[i].method);
        rm_sb_json_str(sb, t->rows[i].skipped, strlen(t->rows[i].skipped));
        sep = ", ";
    }
    rm_sb_puts(sb, "}}\n");
}

int rm_table_svg(const rm_table *t, const char *path) {
    const char *groups[RM_METHOD_N_NAMED], *series[2] = {"in distribution (IID)", "out of distribution (OOD)"};
    double v[2 * RM_METHOD_N_NAMED];
    int n = 0;
    for (int i = 0; i < t->n_rows; i++) {
        const rm_table_row *row = &t->rows[i];
        if (row->skipped) continue;
        groups[n] = row->label;
        for (int b = 0; b < 2; b++) v[2 * n + b] = row->ran[b] ? row->mean[b] : NAN;
        n++;
    }
    rm_sb title;
    rm_sb_init(&title);
    rm_sb_printf(&title, "RAMoLE's table: mean score over the tasks (%s, k = %d)", t->dir, t->k);
    int rc = title.oom ? rm_errorf(RM_ENOMEM, "out of memory")
                       : rm_svg_bars(path, title.buf, "mean score (x 100)", groups, n, series, 2, v);
    rm_sb_free(&title);
    return rc;
}
