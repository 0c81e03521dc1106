// cmd_pool.c — `ramole pool`: manage a persistent adapter pool directory.
#include "adapter_args.h"
#include "cli.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "eval/flan.h"
#include "retrieve/pool.h"
#include "eval/recipe.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: ramole pool COMMAND --pool DIR|URL [options]\n"
               "       (URL: a PostgreSQL database, postgresql://USER@HOST:PORT/DB?weights=DIR; docs/deploy.md)\n\n"
               "  add --name N --samples FILE [--task T --domain D --base B --rank R\n"
               "      --targets q,v --weights PATH]\n"
               "                      add an adapter; FILE is .jsonl (one {\"inputs\": ...} or string a\n"
               "                      line) or .json (a list of those, or an object with \"sample\")\n"
               "  list [--json]       list the adapters\n"
               "  show --name N [--json]   one adapter with its sample inputs\n"
               "  remove --name N     remove an adapter\n"
               "  import-flan --config config2.json [--embedder NAME --train-frac F --seed S]\n"
               "                      build the embedder (trained on the seeded share of the tasks)\n"
               "                      and add every task of the paper's pool\n"
               "  init --corpus FILE [--embedder NAME]\n"
               "                      give the pool an embedder fitted on FILE's texts (same formats as\n"
               "                      --samples; e.g. the sample inputs of the adapters to come): NAME is\n"
               "                      hybrid (default), lexical, shape or script (the trained ones need\n"
               "                      labelled tasks: import-flan); re-keys every adapter already in\n"
               "  set-embedder --embedder FILE   use a saved embedder (re-keys every adapter)\n"
               "  check               verify the database and that every adapter has a current key\n");
}

// ---- samples files ------------------------------------------------------------

typedef struct {
    char **in, **tg;
    int n, cap;
} sample_list;

static void samples_free(sample_list *s) {
    rm_pool_free_strs(s->in, s->n);
    rm_pool_free_strs(s->tg, s->n);
}

// One sample: a string, or an object with "inputs" (and maybe "targets").
static int samples_push(sample_list *s, const rm_json *j, const char *path) {
    const rm_json *in = j->type == RM_JSON_STRING ? j : rm_json_get(j, "inputs");
    if (!in || in->type != RM_JSON_STRING)
        return rm_errorf(RM_EFORMAT, "%s: sample %d has no string \"inputs\"", path, s->n);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 32;
        char **a = realloc(s->in, (size_t)cap * sizeof *a);
        if (a) s->in = a;
        char **b = a ? realloc(s->tg, (size_t)cap * sizeof *b) : NULL;
        if (b) s->tg = b;
        if (!a || !b) return rm_errorf(RM_ENOMEM, "out of memory");
        s->cap = cap;
    }
    s->in[s->n] = rm_json_strdup(in);
    s->tg[s->n] = j->type == RM_JSON_OBJECT ? rm_json_strdup(rm_json_get(j, "targets")) : NULL;
    if (!s->in[s->n]) return rm_errorf(RM_ENOMEM, "out of memory");
    s->n++;
    return RM_OK;
}

typedef struct {
    sample_list *s;
    const char *path;
} jsonl_ctx;

static int push_line(void *user, const rm_json *j, long line) {
    jsonl_ctx *c = user;
    int rc = samples_push(c->s, j, c->path);
    if (rc) rm_error_prefix(rc, "line %ld", line);
    return rc;
}

static int read_samples(const char *path, sample_list *s) {
    memset(s, 0, sizeof *s);
    size_t pl = strlen(path);
    int rc;
    if (pl > 6 && !strcmp(path + pl - 6, ".jsonl")) {
        jsonl_ctx c = {s, path};
        rc = rm_json_each_record(path, push_line, &c);
    } else {
        rm_json *j = NULL;
        rc = rm_json_parse_file(path, &j);
        const rm_json *list = j && j->type == RM_JSON_OBJECT ? rm_json_get(j, "sample") : j;
        if (!rc && (!list || list->type != RM_JSON_ARRAY))
            rc = rm_errorf(RM_EFORMAT, "%s: expected a list of samples or an object with \"sample\"", path);
        for (size_t i = 0; !rc && i < list->n; i++) rc = samples_push(s, &list->items[i], path);
        rm_json_free(j);
    }
    if (!rc && s->n == 0) rc = rm_errorf(RM_EFORMAT, "%s: no samples", path);
    if (rc) samples_free(s);
    return rc;
}

// ---- subcommands ----------------------------------------------------------------

static int pool_add(rm_pool *p, rm_adapter_info *info, const char *samples_path) {
    sample_list s;
    if (!info->name || !samples_path) {
        fprintf(stderr, "ramole pool add: --name and --samples are required\n");
        return 2;
    }
    if (read_samples(samples_path, &s)) return cli_fail("reading samples");
    int64_t id;
    int rc = rm_pool_add(p, info, (const char *const *)s.in, (const char *const *)s.tg, s.n, &id);
    samples_free(&s);
    if (rc) return cli_fail("adding");
    fprintf(stderr, "added '%s' (id %lld, %d samples)\n", info->name, (long long)id, s.n);
    return 0;
}

static void json_field(rm_sb *sb, const char *k, const char *v, int first) {
    rm_sb_printf(sb, "%s\"%s\": ", first ? "" : ", ", k);
    if (v) rm_sb_json_str(sb, v, strlen(v));
    else rm_sb_puts(sb, "null");
}

static void info_json(rm_sb *sb, const rm_adapter_info *a) {
    rm_sb_printf(sb, "{\"id\": %lld, ", (long long)a->id);
    json_field(sb, "name", a->name, 1);
    json_field(sb, "task", a->task, 0);
    json_field(sb, "domain", a->domain, 0);
    json_field(sb, "base_model", a->base_model, 0);
    rm_sb_printf(sb, ", \"rank\": %d", a->rank);
    json_field(sb, "targets", a->targets, 0);
    json_field(sb, "weights", a->weights, 0);
    rm_sb_printf(sb, ", \"n_samples\": %d", a->n_samples);
}

static int pool_list(rm_pool *p, int json) {
    rm_adapter_info *v;
    int n;
    if (rm_pool_list(p, &v, &n)) return cli_fail("listing");
    if (json) {
        rm_sb sb;
        rm_sb_init(&sb);
        rm_sb_puts(&sb, "[");
        for (int i = 0; i < n; i++) {
            rm_sb_puts(&sb, i ? ",\n " : "");
            info_json(&sb, &v[i]);
            rm_sb_puts(&sb, "}");
        }
        rm_sb_puts(&sb, "]\n");
        fputs(sb.buf, stdout);
        rm_sb_free(&sb);
    } else {
        const rm_embedder *e = rm_pool_embedder(p);
        printf("%d adapters, embedder %s\n", n, e ? e->name : "(none)");
        printf("%6s  %-30s %-24s %-8s %4s %7s\n", "id", "name", "domain", "task", "rank", "samples");
        for (int i = 0; i < n; i++)
            printf("%6lld  %-30s %-24s %-8.8s %4d %7d\n", (long long)v[i].id, v[i].name,
                   v[i].domain ? v[i].domain : "-", v[i].task ? v[i].task : "-", v[i].rank, v[i].n_samples);
    }
    rm_pool_free_list(v, n);
    return 0;
}

static int pool_show(rm_pool *p, const char *name, int json) {
    rm_adapter_info *a;
    char **in;
    if (!name) {
        fprintf(stderr, "ramole pool show: --name is required\n");
        return 2;
    }
    if (rm_pool_get(p, name, &a, &in)) return cli_fail("show");
    if (json) {
        rm_sb sb;
        rm_sb_init(&sb);
        info_json(&sb, a);
        rm_sb_puts(&sb, ", \"samples\": [");
        for (int i = 0; i < a->n_samples; i++) {
            if (i) rm_sb_puts(&sb, ", ");
            rm_sb_json_str(&sb, in[i], strlen(in[i]));
        }
        rm_sb_puts(&sb, "]}\n");
        fputs(sb.buf, stdout);
        rm_sb_free(&sb);
    } else {
        printf("id %lld\nname %s\ntask %s\ndomain %s\nbase_model %s\nrank %d\ntargets %s\nweights %s\nsamples %d\n",
               (long long)a->id, a->name, a->task ? a->task : "-", a->domain ? a->domain : "-",
               a->base_model ? a->base_model : "-", a->rank, a->targets ? a->targets : "-",
               a->weights ? a->weights : "-", a->n_samples);
        for (int i = 0; i < a->n_samples; i++) printf("  [%d] %.160s%s\n", i, in[i], strlen(in[i]) > 160 ? "..." : "");
    }
    rm_pool_free_strs(in, a->n_samples);
    rm_pool_free_list(a, 1);
    return 0;
}

// The untrained recipes fitted on a corpus of texts (its statistics only: IDF).
static int pool_init(rm_pool *p, const char *corpus, const char *name) {
    if (!corpus) {
        fprintf(stderr, "ramole pool init: --corpus FILE is required\n");
        return 2;
    }
    if (strcmp(name, "hybrid") && strcmp(name, "lexical") && strcmp(name, "shape") && strcmp(name, "script")) {
        fprintf(stderr, "ramole pool init: '%s' is not an untrained embedder (hybrid, lexical, shape, script)\n", name);
        return 2;
    }
    sample_list s;
    if (read_samples(corpus, &s)) return cli_fail("reading the corpus");
    rm_flan_task task = {.name = "corpus", .domain = "", .n = s.n, .inputs = s.in, .targets = s.tg};
    rm_flan_pool fp = {&task, 1};
    rm_recipe_params rp = rm_recipe_default_params();
    rm_embedder *e = NULL;
    int ret = 0;
    if (s.n == 0) ret = (fprintf(stderr, "ramole pool init: %s holds no texts\n", corpus), 2);
    else if (rm_recipe_build(name, &fp, NULL, &rp, &e)) ret = cli_fail("building the embedder");
    else if (rm_pool_set_embedder(p, e)) ret = cli_fail("setting the embedder");
    else fprintf(stderr, "embedder %s fitted on %d texts\n", rm_pool_embedder(p)->name, s.n);
    samples_free(&s);
    return ret;
}

static int pool_import_flan(rm_pool *p, const char *config, const char *name, double frac, long seed) {
    if (!config) {
        fprintf(stderr, "ramole pool import-flan: --config is required\n");
        return 2;
    }
    rm_flan_pool fp;
    if (rm_flan_load_pool(config, &fp)) return cli_fail("reading the pool file");
    int ret = 0;
    unsigned char *seen = calloc((size_t)fp.n, 1);
    rm_recipe_params rp = rm_recipe_default_params();
    rp.train.seed = (uint64_t)seed;
    rp.train.progress = 1;
    rm_embedder *e = NULL;
    if (!seen) {
        ret = 1;
        goto done;
    }
    rm_flan_split(fp.n, frac, (uint64_t)seed, seen);
    if (!rm_pool_embedder(p) || strcmp(name, "keep")) {
        if (rm_recipe_build(name, &fp, seen, &rp, &e)) {
            ret = cli_fail("building the embedder");
            goto done;
        }
        if (rm_pool_set_embedder(p, e)) {
            ret = cli_fail("setting the embedder");
            goto done;
        }
    }
    int added = 0;
    for (int t = 0; t < fp.n; t++) {
        if (rm_pool_id(p, fp.tasks[t].name) >= 0) continue;
        rm_adapter_info info = {.name = fp.tasks[t].name, .task = fp.tasks[t].name, .domain = fp.tasks[t].domain};
        if (rm_pool_add(p, &info, (const char *const *)fp.tasks[t].inputs, (const char *const *)fp.tasks[t].targets,
                        fp.tasks[t].n, NULL)) {
            ret = cli_fail("adding");
            goto done;
        }
        added++;
    }
    fprintf(stderr, "imported %d tasks (%d in the pool), embedder %s\n", added, rm_pool_size(p),
            rm_pool_embedder(p)->name);
done:
    free(seen);
    rm_flan_free_pool(&fp);
    return ret;
}

int cmd_pool(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1], *dir = NULL, *samples = NULL, *config = NULL, *emb = NULL, *keys = "f32";
    const char *embedder_name = RM_RECIPE_DEFAULT;
    rm_adapter_info info = {0};
    int json = 0;
    long rank = 0, seed = 1, threads = 2;
    double frac = 0.4;
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            usage(stdout);
            return 0;
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &dir)) {
        } else if (cli_str(argc, argv, &i, "--name", NULL, &info.name)) {
        } else if (cli_str(argc, argv, &i, "--samples", NULL, &samples)) {
        } else if (cli_str(argc, argv, &i, "--corpus", NULL, &samples)) {
        } else if (cli_str(argc, argv, &i, "--task", NULL, &info.task)) {
        } else if (cli_str(argc, argv, &i, "--domain", NULL, &info.domain)) {
        } else if (cli_str(argc, argv, &i, "--base", NULL, &info.base_model)) {
        } else if (cli_int(argc, argv, &i, "--rank", NULL, &rank)) {
        } else if (cli_str(argc, argv, &i, "--targets", NULL, &info.targets)) {
        } else if (cli_str(argc, argv, &i, "--weights", NULL, &info.weights)) {
        } else if (cli_str(argc, argv, &i, "--config", NULL, &config)) {
        } else if (cli_str(argc, argv, &i, "--embedder", "-e", &emb)) {
        } else if (cli_float(argc, argv, &i, "--train-frac", NULL, &frac)) {
        } else if (cli_int(argc, argv, &i, "--seed", NULL, &seed)) {
        } else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {
        } else if (cli_str(argc, argv, &i, "--keys", NULL, &keys)) {
        } else if (cli_flag(argc, argv, &i, "--json", NULL)) json = 1;
        else {
            fprintf(stderr, "ramole pool: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "ramole pool %s: --pool DIR is required\n", sub);
        return 2;
    }
    static const char *const subs[] = {"init", "import-flan", "add", "list", "show", "remove", "set-embedder", "check"};
    int known = 0;
    for (size_t k = 0; k < sizeof subs / sizeof subs[0]; k++) known |= !strcmp(sub, subs[k]);
    if (!known) {
        fprintf(stderr, "ramole pool: unknown command '%s'\n", sub);
        usage(stderr);
        return 2;
    }
    // init, import-flan and set-embedder make a pool; the others refuse a path that holds none
    char who[64];
    snprintf(who, sizeof who, "pool %s", sub);
    if (strcmp(sub, "init") && strcmp(sub, "import-flan") && strcmp(sub, "set-embedder") && cli_pool_present(who, dir))
        return 2;
    info.rank = (int)rank;
    rm_pool_params pp = rm_pool_default_params();
    pp.n_threads = (int)threads;
    if (rm_key_type_parse(keys, &pp.key_type)) return cli_fail("--keys");
    rm_pool *p;
    if (rm_pool_open(dir, &pp, &p)) return cli_fail("opening the pool");
    int ret;
    if (!strcmp(sub, "add")) ret = pool_add(p, &info, samples);
    else if (!strcmp(sub, "list")) ret = pool_list(p, json);
    else if (!strcmp(sub, "show")) ret = pool_show(p, info.name, json);
    else if (!strcmp(sub, "remove")) {
        ret = !info.name                     ? (fprintf(stderr, "ramole pool remove: --name is required\n"), 2)
              : rm_pool_remove(p, info.name) ? cli_fail("remove")
                                             : 0;
    } else if (!strcmp(sub, "import-flan")) ret = pool_import_flan(p, config, emb ? emb : embedder_name, frac, seed);
    else if (!strcmp(sub, "init")) ret = pool_init(p, samples ? samples : config, emb ? emb : embedder_name);
    else if (!strcmp(sub, "set-embedder")) {
        rm_embedder *e = NULL;
        if (!emb) ret = (fprintf(stderr, "ramole pool set-embedder: --embedder FILE is required\n"), 2);
        else if (rm_embedder_open(emb, &e)) ret = cli_fail("loading the embedder");
        else ret = rm_pool_set_embedder(p, e) ? cli_fail("setting the embedder") : 0;
    } else { // check
        ret = rm_pool_check(p) ? cli_fail("check") : (printf("ok: %d adapters\n", rm_pool_size(p)), 0);
    }
    rm_pool_close(p);
    return ret;
}

RM_COMMAND(pool, "manage a persistent adapter pool (add, list, show, remove, import-flan)", cmd_pool)
