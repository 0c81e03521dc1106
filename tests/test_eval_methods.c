// test_eval_methods.c — the evaluation module (src/eval/method.h, run.h,
// lorahub.h, table.h): AdapterSoup's plan against a fusion plan of the nearest
// keys computed here, and its answers against `ramole generate --compose
// fusion`; LoraHub's merged adapter against plain sums, its objective against
// the cross-entropy of each example computed alone, its search (lower than the
// uniform start, deterministic, own adapter never a candidate out of
// distribution); exclusion for every method, request by request; and the table
// on a tiny world made here, whose numbers and answers must equal each method
// run alone through `ramole eval`.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "eval/run.h"
#include "eval/table.h"
#include "lora/batch.h"
#include "lora/router.h"
#include "model/synth.h"
#include "retrieve/embed.h"
#include "retrieve/feat.h"
#include "serve/engine.h"

#include <stdlib.h>
#include <string.h>

enum { NT = 4, N_SAMPLES = 4, N_TRAIN = 8, N_TEST = 2 };
static const char *const k_task[NT] = {"upper", "lower", "reverse", "double"};
static const char *const k_cluster[NT] = {"case", "case", "order", "order"};

// ---------------------------------------------------------------- the tiny world

// A 5-letter word of a..h.
static void word(uint64_t *rng, char w[6]) {
    for (int j = 0; j < 5; j++) w[j] = (char)('a' + rm_rng_next(rng) % 8);
    w[5] = 0;
}

// "task:word" and the task's answer.
static void example(int t, const char *w, char *in, char *out) {
    sprintf(in, "%s:%s", k_task[t], w);
    for (int j = 0; j < 5; j++) out[j] = t == 0 ? (char)(w[j] - 32) : t == 1 ? w[j] : t == 2 ? w[4 - j] : w[j];
    out[5] = 0;
    if (t == 3) strcat(out, w);
}

// Writes n "task:word" examples of task t as {"inputs", "targets", "task"} lines.
static int write_examples(const char *path, int t, int n, uint64_t seed) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    for (int i = 0; i < n; i++) {
        char w[6], in[32], out[32];
        word(&seed, w);
        example(t, w, in, out);
        fprintf(f, "{\"inputs\": \"%s\", \"targets\": \"%s\", \"task\": \"%s\"}\n", in, out, k_task[t]);
    }
    return fclose(f);
}

static char g_dir[512];
static char g_samples[NT][N_SAMPLES][32];

static const char *wpath(char *buf, const char *name) {
    snprintf(buf, 700, "%s/%s", g_dir, name);
    return buf;
}

// A random gate of kind over set, saved to path.
static int save_gate(const rm_lora_set *set, rm_gate_kind kind, int k, uint64_t seed, const char *path) {
    rm_gate *g = NULL;
    int rc = rm_gate_new(&g, set, kind, k);
    for (int i = 0; !rc && i < g->n_layer * RM_LIN_COUNT; i++) {
        if (!g->w[i]) continue;
        int64_t in = set->base->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0];
        for (int64_t j = 0; j < in * g->n; j++) g->w[i][j] = 2.0f * rm_rng_uniform(&seed) - 1.0f;
    }
    if (!rc) rc = rm_gate_save(g, path);
    rm_gate_free(g);
    return rc;
}

// The experiment's trained parts: split.json, a random router, random gates over the seen tasks' adapters.
static int make_experiment(rm_llama *m, rm_lora **ad) {
    char p[700];
    const char *split = "{\"seed\": 1, \"seen\": [\"upper\", \"lower\", \"reverse\"], \"unseen\": [\"double\"]}";
    int rc = rm_mkdirs(wpath(p, "experiment/split-1"));
    if (!rc) rc = rm_write_file_atomic(wpath(p, "experiment/split-1/split.json"), split, strlen(split));
    rm_lora *r = NULL;
    if (!rc) rc = rm_lora_random(&r, m, 2, (1u << RM_LIN_COUNT) - 1, 77);
    if (!rc) rc = rm_router_save(r, m, 3, wpath(p, "experiment/split-1/router.gguf"));
    rm_lora_free(r);
    const char *names[3] = {"ad-upper", "ad-lower", "ad-reverse"};
    rm_lora_set *set = NULL;
    if (!rc) rc = rm_lora_set_new(&set, 3, ad, names, k_task, 0);
    static const char *const files[4] = {"soft", "topk", "top1", "smear"};
    for (int k = 0; !rc && k < 4; k++) {
        char f[64];
        snprintf(f, sizeof f, "experiment/split-1/%s%s.gguf", k == 3 ? "" : "moe-", files[k]);
        rc = save_gate(set, (rm_gate_kind)k, 2, 90 + (uint64_t)k, wpath(p, f));
    }
    rm_lora_set_free(set);
    return rc;
}

// The pool: a lexical embedder fitted on the samples, one random adapter a task (rank 4 on every linear).
static int make_pool(rm_llama *m, rm_lora **ad) {
    char p[700];
    const char *in[NT * N_SAMPLES];
    for (int t = 0; t < NT; t++)
        for (int s = 0; s < N_SAMPLES; s++) in[t * N_SAMPLES + s] = g_samples[t][s];
    rm_pool *pool = NULL;
    rm_pool_params pp = rm_pool_default_params();
    rm_feat_params fp = rm_feat_default_params();
    fp.bits = 12;
    rm_embedder *e = NULL;
    int rc = rm_pool_open(wpath(p, "pool"), &pp, &pool);
    if (!rc) rc = rm_lexical_create(&fp, in, NULL, NT * N_SAMPLES, NULL, &e);
    if (!rc) rc = rm_pool_set_embedder(pool, e);
    for (int t = 0; !rc && t < NT; t++) {
        char w[700], name[32];
        snprintf(name, sizeof name, "adapters/ad-%s.gguf", k_task[t]);
        snprintf(w, sizeof w, "%s/%s", g_dir, name);
        rc = rm_lora_random(&ad[t], m, 4, (1u << RM_LIN_COUNT) - 1, 300 + (uint64_t)t);
        for (int j = 0; !rc && j < ad[t]->n_layer * RM_LIN_COUNT; j++) // outputs large enough to change answers
            for (int64_t v = 0; v < (int64_t)ad[t]->mods[j].r * ad[t]->mods[j].out; v++) ad[t]->mods[j].Bt[v] *= 4;
        if (!rc) rc = rm_lora_save_gguf(ad[t], w);
        snprintf(name, sizeof name, "ad-%s", k_task[t]);
        rm_adapter_info info = {.name = name, .task = k_task[t], .domain = k_cluster[t], .weights = w};
        if (!rc) rc = rm_pool_add(pool, &info, in + t * N_SAMPLES, NULL, N_SAMPLES, NULL);
    }
    if (pool) rm_pool_close(pool);
    return rc;
}

// DIR/combined_test.json: N_TEST requests a task, interleaved; targets the
// tasks' answers, or targets[i] for request i when given.
static int write_test_set(char (*targets)[64]) {
    rm_sb js;
    rm_sb_init(&js);
    rm_sb_puts(&js, "[");
    uint64_t rng = 5;
    for (int i = 0; i < N_TEST; i++)
        for (int t = 0; t < NT; t++) {
            char w[6], in[32], out[32];
            word(&rng, w);
            example(t, w, in, out);
            rm_sb_printf(&js, "%s{\"inputs\": \"%s\", \"targets\": ", i + t ? ",\n" : "", in);
            const char *target = targets ? targets[i * NT + t] : out;
            rm_sb_json_str(&js, target, strlen(target));
            rm_sb_printf(&js, ", \"task\": \"%s\", \"domain\": \"%s\", \"metric\": \"em\"}", k_task[t], k_cluster[t]);
        }
    rm_sb_puts(&js, "]\n");
    char p[700];
    int rc = js.oom ? -1 : rm_write_file_atomic(wpath(p, "combined_test.json"), js.buf, js.len);
    rm_sb_free(&js);
    return rc;
}

// tmpdir/evm-world: world.json, template.txt, base.gguf, tasks/, combined_test.json, pool/, experiment/split-1/.
static const char *tiny_world(void) {
    static int made, ok;
    if (made) return ok ? g_dir : NULL;
    made = 1;
    snprintf(g_dir, sizeof g_dir, "%s/evm-world", rm_test_tmpdir());
    char p[700];
    int rc = rm_mkdirs(wpath(p, "tasks")) || rm_mkdirs(wpath(p, "adapters"));
    rm_sb js;
    rm_sb_init(&js);
    rm_sb_puts(&js, "{\"seed\": 1, \"size\": \"test\", \"tasks\": [");
    for (int t = 0; t < NT; t++)
        rm_sb_printf(&js, "%s{\"name\": \"%s\", \"cluster\": \"%s\", \"metric\": \"em\"}", t ? ", " : "", k_task[t],
                     k_cluster[t]);
    rm_sb_puts(&js, "]}\n");
    if (!rc) rc = rm_write_file_atomic(wpath(p, "world.json"), js.buf, js.len);
    rm_sb_free(&js);
    if (!rc) rc = rm_write_file_atomic(wpath(p, "template.txt"), "{inputs}=", 9);
    if (!rc) rc = write_test_set(NULL);
    uint64_t rng = 6;
    for (int t = 0; !rc && t < NT; t++) {
        char name[64];
        snprintf(name, sizeof name, "tasks/%s.jsonl", k_task[t]);
        rc = write_examples(wpath(p, name), t, N_TRAIN, 40 + (uint64_t)t);
        for (int s = 0; s < N_SAMPLES; s++) {
            char w[6], out[32];
            word(&rng, w);
            example(t, w, g_samples[t][s], out);
        }
    }
    rm_synth_shape shape = {"evm", 258, 64, 2, 4, 2, 128, 256};
    if (!rc) rc = rm_synth_write(&shape, RM_TYPE_F32, 11, wpath(p, "base.gguf"), NULL, NULL);
    rm_llama *m = NULL;
    rm_lora *ad[NT] = {0};
    if (!rc) rc = rm_llama_load(&m, p);
    if (!rc) rc = make_pool(m, ad);
    if (!rc) rc = make_experiment(m, ad);
    for (int t = 0; t < NT; t++) rm_lora_free(ad[t]);
    rm_llama_free(m);
    ok = rc == 0;
    return ok ? g_dir : NULL;
}

// The world's model, pool and test set, and an environment over them.
typedef struct fixture {
    rm_llama *m;
    rm_pool *pool;
    rm_threadpool *tp;
    rm_evalset set;
    rm_eval_env *env;
} fixture;

static int fixture_open(fixture *f) {
    memset(f, 0, sizeof *f);
    char p[700];
    if (!tiny_world()) return -1;
    static char tasks[700]; // the environment keeps the pointer
    rm_run_params rp = rm_run_default_params();
    rp.tmpl = "{inputs}=", rp.max_new = 4, rp.task_data = wpath(tasks, "tasks");
    int rc = rm_llama_load(&f->m, wpath(p, "base.gguf"));
    if (!rc) rc = rm_pool_open_existing(wpath(p, "pool"), &f->pool);
    if (!rc) rc = rm_evalset_load(wpath(p, "combined_test.json"), RM_METRIC_EM, &f->set);
    if (!rc && !(f->tp = rm_threadpool_create(2))) rc = -1;
    if (!rc) rc = rm_eval_env_new(&f->env, f->m, f->pool, f->tp, &rp);
    return rc;
}

static void fixture_close(fixture *f) {
    rm_eval_env_free(f->env);
    rm_threadpool_free(f->tp);
    if (f->pool) rm_pool_close(f->pool);
    rm_evalset_free(&f->set);
    rm_llama_free(f->m);
}

// The pool's adapter of task t, loaded here (not through the module).
static rm_lora *own_copy(const rm_llama *m, int t) {
    char p[700], name[64];
    snprintf(name, sizeof name, "adapters/ad-%s.gguf", k_task[t]);
    rm_lora *l = NULL;
    return rm_lora_load_for(&l, wpath(p, name), m) ? NULL : l;
}

static int task_of_name(const char *name) {
    for (int t = 0; t < NT; t++)
        if (!strncmp(name, "ad-", 3) && !strcmp(name + 3, k_task[t])) return t;
    return -1;
}

// Largest |got - want| over the modules of two adapters' A and B^T (want in double: sum_i w_i X_i).
static double merged_diff(const rm_lora *got, rm_lora *const *ad, const double *w, int n) {
    double worst = 0;
    for (int j = 0; j < got->n_layer * RM_LIN_COUNT; j++) {
        const rm_lora_mod *g = &got->mods[j];
        for (int64_t v = 0; v < (int64_t)g->r * g->in; v++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += w[i] * ad[i]->mods[j].A[v];
            worst = fmax(worst, fabs(g->A[v] - s));
        }
        for (int64_t v = 0; v < (int64_t)g->r * g->out; v++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += w[i] * ad[i]->mods[j].scale * ad[i]->mods[j].Bt[v];
            worst = fmax(worst, fabs(g->Bt[v] * g->scale - s));
        }
    }
    return worst;
}

// ---------------------------------------------------------------- the CLI

// Runs `ramole ARGS` (stdout to tmpdir/evm.out, stderr to tmpdir/evm.err); the exit status.
static int cli(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >%s/evm.out 2>%s/evm.err", rm_test_bin(), args, rm_test_tmpdir(),
             rm_test_tmpdir());
    int st = system(cmd);
    return st == -1 ? -1 : (st >> 8) & 0xff;
}

// The whole of tmpdir/evm.<what> (malloc'd).
static char *cli_text(const char *what) {
    char path[600], *buf = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/evm.%s", rm_test_tmpdir(), what);
    return rm_read_file(path, &buf, &len) ? strdup("") : buf;
}

// ---------------------------------------------------------------- AdapterSoup

// AdapterSoup's adapters are the k whose keys are nearest to the request's
// embedding (keys made here from the samples, by the embedder's definition),
// fused with weights 1/k; out of distribution the k nearest of the others.
TEST(eval_adaptersoup_is_fusion_of_nearest_keys) {
    fixture f;
    REQUIRE(fixture_open(&f) == 0);
    const rm_embedder *e = rm_pool_embedder(f.pool);
    int dim = e->dim;
    float *key = malloc((size_t)NT * dim * sizeof *key), *q = malloc((size_t)dim * sizeof *q);
    REQUIRE(key && q);
    for (int t = 0; t < NT; t++) {
        const char *s[N_SAMPLES];
        for (int j = 0; j < N_SAMPLES; j++) s[j] = g_samples[t][j];
        CHECK_OK(rm_embedder_key(e, s, N_SAMPLES, key + (size_t)t * dim, 1));
    }
    rm_lora *ad[NT];
    for (int t = 0; t < NT; t++) REQUIRE((ad[t] = own_copy(f.m, t)));
    for (int ood = 0; ood < 2; ood++) {
        rm_method meth;
        CHECK_OK(rm_method_named(&meth, "adaptersoup", 2));
        meth.exclude_own = ood;
        CHECK_OK(rm_eval_env_prepare(f.env, &meth, NULL, 0));
        for (int r = 0; r < f.set.n; r++) {
            const rm_eval_req *req = &f.set.r[r];
            int own = -1;
            for (int t = 0; t < NT; t++) own = !strcmp(k_task[t], req->task) ? t : own;
            CHECK_OK(rm_embedder_embed(e, req->inputs, q));
            double sc[NT];
            int best[2] = {-1, -1};
            for (int t = 0; t < NT; t++) {
                sc[t] = 0;
                for (int d = 0; d < dim; d++) sc[t] += (double)q[d] * key[(size_t)t * dim + d];
            }
            for (int b = 0; b < 2; b++)
                for (int t = 0; t < NT; t++)
                    if (!(ood && t == own) && t != best[0] && (best[b] < 0 || sc[t] > sc[best[b]])) best[b] = t;
            rm_eval_choice c;
            CHECK_OK(rm_eval_choose(f.env, &meth, req, &c));
            REQUIRE(c.n_names == 2);
            for (int b = 0; b < 2; b++)
                CHECKF(task_of_name(c.names[b]) == best[b], "request %d (%s) ood %d: adapter %d is %s, nearest key: %s",
                       r, req->inputs, ood, b, c.names[b], k_task[best[b]]);
            rm_lora_plan plan;
            int has = 0;
            CHECK_OK(rm_eval_plan(f.env, &meth, req, &c, &plan, &has));
            REQUIRE(has && plan.mode == RM_COMPOSE_FUSION && plan.n == 2 && plan.fused);
            CHECK(plan.weight[0] == 0.5f && plan.weight[1] == 0.5f);
            rm_lora *pair[2] = {ad[best[0]], ad[best[1]]};
            double w[2] = {0.5, 0.5};
            CHECKF(merged_diff(plan.fused, pair, w, 2) < 1e-6,
                   "request %d: the fused adapter is not the mean of the two", r);
            rm_lora_plan_free(&plan);
            rm_eval_choice_free(&c);
        }
    }
    for (int t = 0; t < NT; t++) rm_lora_free(ad[t]);
    free(key);
    free(q);
    fixture_close(&f);
}

// `ramole eval --method adaptersoup` answers as `ramole generate` does with
// the same two adapters and --compose fusion.
TEST(eval_adaptersoup_cli_equals_generate_fusion) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(tiny_world());
    char out[700], args[8192];
    snprintf(out, sizeof out, "%s/evm-soup.jsonl", rm_test_tmpdir());
    snprintf(args, sizeof args,
             "eval -m %s/base.gguf --test %s/combined_test.json --pool %s/pool --method adaptersoup -k 2 "
             "--template '{inputs}' -n 5 -t 1 --out %s --json",
             g_dir, g_dir, g_dir, out);
    REQUIRE(cli(args) == 0);
    rm_json *j = NULL;
    char *lines = cli_text("out");
    CHECK(rm_json_parse(lines, strlen(lines), "eval --json", &j) == RM_OK &&
          rm_json_get_int(j, "requests", 0) == NT * N_TEST);
    rm_json_free(j);
    free(lines);
    char *all = NULL;
    size_t len;
    REQUIRE(rm_read_file(out, &all, &len) == RM_OK);
    int checked = 0;
    for (char *line = all, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        rm_json *rec = NULL;
        if (rm_json_parse(line, strlen(line), "line", &rec)) continue;
        const rm_json *ad = rm_json_get(rec, "adapters");
        const char *in = rm_json_get_str(rec, "inputs", ""), *pred = rm_json_get_str(rec, "prediction", "?");
        REQUIRE(ad && ad->n == 2);
        snprintf(args, sizeof args,
                 "generate -m %s/base.gguf --lora %s/adapters/%s.gguf --lora %s/adapters/%s.gguf "
                 "--compose fusion -p '%s' -n 5 --temp 0 -t 1",
                 g_dir, g_dir, ad->items[0].str, g_dir, ad->items[1].str, in);
        CHECK(cli(args) == 0);
        char *gen = cli_text("out"), *s = gen;
        if (!strncmp(s, in, strlen(in))) s += strlen(in);
        while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') s++;
        size_t l = strlen(s);
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\n' || s[l - 1] == '\t' || s[l - 1] == '\r')) s[--l] = 0;
        CHECKF(!strcmp(s, pred), "'%s': eval predicted '%s', generate --compose fusion gave '%s'", in, pred, s);
        checked++;
        free(gen);
        rm_json_free(rec);
    }
    CHECK(checked == NT * N_TEST);
    free(all);
}

// ---------------------------------------------------------------- LoraHub

// The objective at w computed one example at a time: each alone through the
// forward pass (one thread) with the merged adapter as a selection plan, the
// cross-entropy of its target tokens in double; mean over the target tokens
// plus l1 * sum |w_i|.
static double ref_objective(rm_llama *m, const rm_tdata *ex, rm_lora **cands, int n, const float *w, double l1) {
    rm_lora *fused = NULL;
    rm_lora_plan plan;
    rm_lora_batch *lb = rm_lora_batch_new(NULL);
    if (!lb || rm_lora_fuse(&fused, n, cands, w) ||
        rm_lora_plan_init(&plan, RM_COMPOSE_SELECTION, 1, &fused, NULL, NULL))
        return NAN;
    rm_linear_hook hook = rm_lora_batch_hook(lb);
    int V = m->hp.n_vocab;
    double sum = 0;
    long count = 0;
    for (int e = 0; e < ex->n; e++) {
        const rm_texample *x = &ex->ex[e];
        rm_kvcache kv;
        int32_t pos[256], slot[256] = {0};
        const void *plans[256];
        float *logits = malloc((size_t)x->n * V * sizeof *logits);
        if (x->n > 256 || !logits || rm_kvcache_init(&kv, m->hp.n_layer, 1, x->n, m->hp.n_head_kv * m->hp.head_dim))
            return NAN;
        for (int j = 0; j < x->n; j++) pos[j] = j, plans[j] = &plan;
        rm_batch b = {x->n, x->ids, pos, slot, NULL, plans};
        if (rm_llama_forward(m, &kv, NULL, &b, &hook, logits)) return NAN;
        for (int j = x->n_prompt - 1; j < x->n - 1; j++) {
            const float *z = logits + (size_t)j * V;
            double mx = -INFINITY, s = 0;
            for (int v = 0; v < V; v++) mx = fmax(mx, z[v]);
            for (int v = 0; v < V; v++) s += exp(z[v] - mx);
            sum += mx + log(s) - z[x->ids[j + 1]];
            count++;
        }
        rm_kvcache_free(&kv);
        free(logits);
    }
    double a = 0;
    for (int i = 0; i < n; i++) a += fabs(w[i]);
    rm_lora_plan_free(&plan);
    rm_lora_free(fused);
    rm_lora_batch_free(lb);
    return sum / (double)count + l1 * a;
}

// The merged adapter is sum w_i A_i, sum w_i s_i B_i; the objective is the
// examples' cross-entropy under it (+ L1), whatever the batching; the search
// goes below the uniform start, stays in the box, is the same for a seed.
TEST(eval_lorahub_objective_and_search) {
    fixture f;
    REQUIRE(fixture_open(&f) == 0);
    char p[700];
    rm_tdata ex = {0}, ex2 = {0};
    CHECK_OK(rm_lorahub_examples(wpath(p, "tasks/upper.jsonl"), "{inputs}=", f.m, 3, 1, 256, &ex));
    CHECK_OK(rm_lorahub_examples(p, "{inputs}=", f.m, 3, 1, 256, &ex2));
    REQUIRE(ex.n == 3 && ex2.n == 3);
    for (int e = 0; e < 3; e++) {
        const rm_texample *x = &ex.ex[e];
        CHECK(x->inputs && !strncmp(x->inputs, "upper:", 6) && x->n_prompt > 1 && x->n > x->n_prompt);
        CHECK(x->ids[x->n - 1] == rm_tokenizer_eos(f.m->tok));
        CHECK(ex2.ex[e].n == x->n && !memcmp(ex2.ex[e].ids, x->ids, (size_t)x->n * sizeof *x->ids)); // the same draw
    }
    rm_tdata_free(&ex2);
    rm_lora *ad[NT];
    for (int t = 0; t < NT; t++) REQUIRE((ad[t] = own_copy(f.m, t)));
    rm_lorahub *h = NULL;
    REQUIRE(rm_lorahub_new(&h, f.m, f.tp, &ex, NT, ad) == RM_OK);
    const double w[2][NT] = {{0.25, 0.25, 0.25, 0.25}, {1.2, -0.7, 0.3, 0.05}};
    double fo[2];
    CHECK_OK(rm_lorahub_objective(h, 2, &w[0][0], 0.05, fo));
    for (int k = 0; k < 2; k++) {
        float wf[NT];
        for (int i = 0; i < NT; i++) wf[i] = (float)w[k][i];
        double ref = ref_objective(f.m, &ex, ad, NT, wf, 0.05);
        CHECKF(fabs(fo[k] - ref) < 1e-6 * (1 + fabs(ref)), "point %d: objective %.9g, one example at a time %.9g", k,
               fo[k], ref);
        rm_lora *fused = NULL;
        CHECK_OK(rm_lora_fuse(&fused, NT, ad, wf));
        CHECKF(fused && merged_diff(fused, ad, w[k], NT) < 1e-6, "point %d: merged adapter", k);
        rm_lora_free(fused);
    }
    rm_lorahub_params lp = rm_lorahub_default_params();
    lp.iterations = 12, lp.seed = 3;
    rm_lorahub_result r1, r2;
    CHECK_OK(rm_lorahub_search(h, &lp, &r1));
    CHECK_OK(rm_lorahub_search(h, &lp, &r2));
    CHECK(r1.evaluations == 12);
    CHECK_NEAR(r1.f0, fo[0], 0); // the uniform start
    CHECKF(r1.f < r1.f0, "the search did not go below the uniform start: %.6f vs %.6f", r1.f, r1.f0);
    double again, wd[NT];
    for (int i = 0; i < NT; i++) {
        wd[i] = r1.w[i];
        CHECK(fabs(r1.w[i]) <= lp.bound);
    }
    CHECK_OK(rm_lorahub_objective(h, 1, wd, lp.l1, &again));
    CHECK_NEAR(again, r1.f, 0);
    CHECK(r1.f == r2.f && !memcmp(r1.w, r2.w, NT * sizeof *r1.w)); // deterministic for a seed
    rm_lorahub_result_free(&r1);
    rm_lorahub_result_free(&r2);
    rm_lorahub_free(h);
    // through the environment, per task: the candidates (own left out of distribution) and the merged adapter
    for (int ood = 0; ood < 2; ood++) {
        rm_method meth;
        CHECK_OK(rm_method_named(&meth, "lorahub", 3));
        meth.exclude_own = ood;
        meth.lorahub.iterations = 5, meth.lorahub.n_examples = 2;
        const char *tasks[2] = {"upper", "double"};
        CHECK_OK(rm_eval_env_prepare(f.env, &meth, tasks, 2));
        for (int k = 0; k < 2; k++) {
            const rm_eval_lorahub *lh = rm_eval_env_lorahub(f.env, &meth, tasks[k]);
            REQUIRE(lh && lh->merged);
            CHECK(lh->n == (ood ? NT - 1 : NT));
            rm_lora *c[NT];
            double cw[NT];
            for (int i = 0; i < lh->n; i++) {
                int t = task_of_name(lh->names[i]);
                CHECKF(!(ood && !strcmp(k_task[t], tasks[k])), "task %s out of distribution: own adapter a candidate",
                       tasks[k]);
                c[i] = ad[t];
                cw[i] = lh->res.w[i];
            }
            CHECKF(merged_diff(lh->merged, c, cw, lh->n) < 1e-6, "task %s: merged adapter", tasks[k]);
        }
    }
    for (int t = 0; t < NT; t++) rm_lora_free(ad[t]);
    rm_tdata_free(&ex);
    fixture_close(&f);
}

// ---------------------------------------------------------------- exclusion

// The named method name with the world's trained files and small LoraHub settings.
static void world_method(rm_method *m, const char *name, int ood, char files[2][700]) {
    rm_method_named(m, name, 2);
    m->exclude_own = ood;
    m->lorahub.iterations = 4, m->lorahub.n_examples = 2;
    if (m->compose == RM_COMPOSE_ROUTER) m->router = wpath(files[0], "experiment/split-1/router.gguf");
    if (m->kind == RM_METHOD_GATE) {
        char f[64];
        snprintf(f, sizeof f, "experiment/split-1/%s.gguf", name);
        m->gate = wpath(files[1], f);
    }
}

// Out of distribution no request of any method gets its own task's adapter
// (the run's record of each request, and the names checked here); in
// distribution retrieval finds it; the oracle has no such block.
TEST(eval_exclude_own_for_every_method) {
    fixture f;
    REQUIRE(fixture_open(&f) == 0);
    rm_method ms[RM_METHOD_N_NAMED];
    char files[RM_METHOD_N_NAMED][2][700];
    int n = 0;
    for (int i = 0; i < RM_METHOD_N_NAMED; i++)
        if (strcmp(rm_method_names[i], "base") && strcmp(rm_method_names[i], "oracle"))
            world_method(&ms[n], rm_method_names[i], 1, files[n]), n++;
    world_method(&ms[n], "selection", 0, files[n]), n++; // in distribution, for contrast
    rm_run_result res;
    REQUIRE(rm_eval_run(f.env, &f.set, ms, n, &res) == RM_OK);
    CHECK(res.n_items == n * NT * N_TEST);
    for (int i = 0; i < res.n_items; i++) {
        const rm_eval_item *it = &res.items[i];
        const rm_method *m = &ms[it->method];
        int own_named = 0;
        for (int j = 0; j < it->choice.n_names; j++) {
            int t = task_of_name(it->choice.names[j]);
            own_named |= t >= 0 && !strcmp(k_task[t], it->req->task);
        }
        if (m->exclude_own) {
            CHECKF(!it->choice.own_used && !own_named && it->choice.n_names > 0,
                   "%s: request %d (%s) got its own adapter", m->name, it->request, it->req->task);
            int in_set = m->kind != RM_METHOD_GATE || strcmp(it->req->task, "double"); // the gates' set lacks it
            CHECKF(it->choice.own_excluded == in_set, "%s: request %d: own adapter left out %d", m->name, it->request,
                   it->choice.own_excluded);
        } else {
            CHECKF(it->choice.own_used && own_named, "selection: request %d (%s) did not retrieve its own adapter",
                   it->request, it->req->task);
        }
    }
    rm_run_result_free(&res);
    rm_method oracle;
    CHECK_OK(rm_method_named(&oracle, "oracle", 1));
    oracle.exclude_own = 1;
    CHECK(rm_eval_run(f.env, &f.set, &oracle, 1, &res) == RM_EINVAL && strstr(rm_last_error(), "oracle"));
    fixture_close(&f);
}

// ---------------------------------------------------------------- the table

// The predictions of an --out file, in its order, as (method, ood, prediction) lines.
typedef struct preds {
    int n;
    char method[256][16];
    int ood[256];
    char pred[256][64];
} preds;

static int take_pred(void *user, const rm_json *rec, long index) {
    preds *p = user;
    if (p->n >= 256) return -1;
    snprintf(p->method[p->n], 16, "%s", rm_json_get_str(rec, "method", ""));
    p->ood[p->n] = rm_json_get_bool(rec, "ood", 0);
    snprintf(p->pred[p->n], 64, "%s", rm_json_get_str(rec, "prediction", "?"));
    p->n++;
    return 0;
}

static const char *const k_small_lorahub = "--lorahub-iterations 4 --lorahub-examples 2";

// The table on the tiny world: every method in both blocks, the documented
// JSON keys; each number and each answer equal to the method run alone by
// `ramole eval --method`; markdown, chart; missing files skipped with a note.
TEST(eval_table_equals_each_method_alone) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(tiny_world());
    char args[8192], out[700], one[700], svg[700];
    snprintf(out, sizeof out, "%s/evm-table.jsonl", rm_test_tmpdir());
    snprintf(one, sizeof one, "%s/evm-one.jsonl", rm_test_tmpdir());
    snprintf(svg, sizeof svg, "%s/evm-table.svg", rm_test_tmpdir());
    // targets that some answers meet: the base model's answer for the first request of each task,
    // selection's for the second (so that the scores are not all 0)
    static char targets[NT * N_TEST][64];
    for (int w = 0; w < 2; w++) {
        snprintf(args, sizeof args,
                 "eval -m %s/base.gguf --test %s/combined_test.json --template-file %s/template.txt "
                 "--method %s --pool %s/pool -n 4 -t 2 --out %s",
                 g_dir, g_dir, g_dir, w ? "selection" : "base", g_dir, one);
        REQUIRE(cli(args) == 0);
        preds got = {0};
        CHECK_OK(rm_json_each_record(one, take_pred, &got));
        REQUIRE(got.n == NT * N_TEST);
        for (int t = 0; t < NT; t++) snprintf(targets[w * NT + t], 64, "%s", got.pred[w * NT + t]);
    }
    REQUIRE(write_test_set(targets) == 0);
    snprintf(args, sizeof args, "eval --table %s -k 2 -n 4 -t 2 --slots 6 %s --json --out %s --svg %s", g_dir,
             k_small_lorahub, out, svg);
    int st = cli(args);
    char *text = cli_text("out"), *err = cli_text("err");
    CHECKF(st == 0, "eval --table: %d: %s", st, err);
    rm_json *j = NULL;
    REQUIRE(rm_json_parse(text, strlen(text), "eval --table --json", &j) == RM_OK);
    const rm_json *iid = rm_json_get(j, "iid"), *ood = rm_json_get(j, "ood"), *rpf = rm_json_get(j, "rows_per_forward");
    REQUIRE(iid && ood && rpf);
    CHECK(rm_json_get_int(j, "split_seed", 0) == 1 && rm_json_get_int(j, "k", 0) == 2 &&
          rm_json_get_int(j, "requests", 0) == 8);
    CHECK(rm_json_get_num(rpf, "ramole", 0) > 1 && rm_json_get_num(rpf, "others", 0) > 1);
    const rm_json *labels = rm_json_get(j, "uses_task_labels"), *skipped = rm_json_get(j, "skipped");
    CHECK(labels && labels->n == 1 && !strcmp(labels->items[0].str, "lorahub") && skipped && skipped->n == 0);
    CHECK(rm_json_get(j, "seen") && rm_json_get(j, "seen")->n == 3 && rm_json_get(j, "unseen")->n == 1);
    preds tab = {0};
    CHECK_OK(rm_json_each_record(out, take_pred, &tab));
    CHECK(tab.n == (2 * RM_METHOD_N_NAMED - 2) * NT * N_TEST);
    for (int i = 0; i < RM_METHOD_N_NAMED; i++) {
        const char *name = rm_method_names[i];
        int trains =
            !strcmp(name, "ramole") || !strcmp(name, "lorahub") || !strncmp(name, "moe-", 4) || !strcmp(name, "smear");
        for (int b = 0; b < 2; b++) {
            const rm_json *cell = rm_json_get(b ? ood : iid, name);
            if (b && !strcmp(name, "oracle")) {
                CHECK(cell && cell->type == RM_JSON_NULL);
                continue;
            }
            REQUIRE(cell && cell->type == RM_JSON_OBJECT);
            CHECKF(rm_json_get(cell, "mean") && rm_json_get(cell, "case") && rm_json_get(cell, "order"), "%s: keys",
                   name);
            CHECKF(!rm_json_get(cell, "seen") == !trains && !rm_json_get(cell, "unseen") == !trains,
                   "%s: seen / unseen", name);
            if (b && !strcmp(name, "base")) { // one run for both blocks
                CHECK_NEAR(rm_json_get_num(cell, "mean", -1), rm_json_get_num(rm_json_get(iid, "base"), "mean", -2), 0);
                continue;
            }
            // the same method alone
            char extra[1600] = "";
            if (!strcmp(name, "ramole"))
                snprintf(extra, sizeof extra, "--router %s/experiment/split-1/router.gguf", g_dir);
            if (trains && strcmp(name, "ramole") && strcmp(name, "lorahub"))
                snprintf(extra, sizeof extra, "--gate %s/experiment/split-1/%s.gguf", g_dir, name);
            if (!strcmp(name, "lorahub"))
                snprintf(extra, sizeof extra, "--task-data %s/tasks %s", g_dir, k_small_lorahub);
            snprintf(args, sizeof args,
                     "eval -m %s/base.gguf --test %s/combined_test.json --pool %s/pool --template-file "
                     "%s/template.txt --method %s -k 2 -n 4 -t 2 --slots 3 %s %s --json --out %s",
                     g_dir, g_dir, g_dir, g_dir, name, extra, b ? "--exclude-own" : "", one);
            st = cli(args);
            char *alone = cli_text("out");
            rm_json *a = NULL;
            CHECKF(st == 0 && rm_json_parse(alone, strlen(alone), "eval --json", &a) == RM_OK, "%s alone: %d", name,
                   st);
            free(alone);
            if (!a) continue;
            CHECKF(rm_json_get_num(a, "mean", -1) == rm_json_get_num(cell, "mean", -2), "%s%s: table %.9g, alone %.9g",
                   name, b ? " (ood)" : "", rm_json_get_num(cell, "mean", -2), rm_json_get_num(a, "mean", -1));
            // per cluster: the mean of its tasks' scores
            for (int c = 0; c < 2; c++) {
                double s = 0;
                for (int t = 2 * c; t < 2 * c + 2; t++)
                    s += rm_json_get_num(rm_json_get(rm_json_get(a, "tasks"), k_task[t]), "score", NAN) / 2;
                CHECK_NEAR(s, rm_json_get_num(cell, k_cluster[2 * c], -1), 1e-9);
            }
            rm_json_free(a);
            preds solo = {0};
            CHECK_OK(rm_json_each_record(one, take_pred, &solo));
            REQUIRE(solo.n == NT * N_TEST);
            int k = 0;
            for (int r = 0; r < tab.n; r++) {
                if (strcmp(tab.method[r], name) || tab.ood[r] != b) continue;
                CHECKF(k < solo.n && !strcmp(tab.pred[r], solo.pred[k]), "%s%s request %d: table '%s', alone '%s'",
                       name, b ? " (ood)" : "", k, tab.pred[r], k < solo.n ? solo.pred[k] : "?");
                k++;
            }
            CHECKF(k == NT * N_TEST, "%s: %d answers in the table", name, k);
        }
    }
    rm_json_free(j);
    free(text);
    free(err);
    char *pic = NULL;
    size_t len;
    CHECK(rm_read_file(svg, &pic, &len) == RM_OK && pic && strstr(pic, "<svg") && strstr(pic, "Perfect selection") &&
          strstr(pic, "out of distribution"));
    free(pic);
    // markdown; a split without trained files: those methods skipped, with a note
    snprintf(args, sizeof args, "eval --table %s -k 2 -n 4 -t 2 --methods oracle,lorahub,ramole %s", g_dir,
             k_small_lorahub);
    CHECK(cli(args) == 0);
    text = cli_text("out");
    CHECKF(strstr(text, "| LoraHub (uses task labels) |") && strstr(text, "| Perfect selection | - |") &&
               strstr(text, "| method | case | order | mean | seen | unseen |") &&
               strstr(text, "Rows per forward pass"),
           "%s", text);
    free(text);
    char split2[700];
    const char *sj = "{\"seed\": 2, \"seen\": [\"upper\"], \"unseen\": [\"lower\", \"reverse\", \"double\"]}";
    snprintf(split2, sizeof split2, "%s/experiment/split-2", g_dir);
    REQUIRE(rm_mkdirs(split2) == 0);
    strcat(split2, "/split.json");
    REQUIRE(rm_write_file_atomic(split2, sj, strlen(sj)) == 0);
    snprintf(args, sizeof args, "eval --table %s --split-seed 2 --methods smear,base,ramole -n 2 -t 2 --json", g_dir);
    CHECK(cli(args) == 0);
    text = cli_text("out"), err = cli_text("err");
    j = NULL;
    CHECK(rm_json_parse(text, strlen(text), "json", &j) == RM_OK);
    const rm_json *sk = rm_json_get(j, "skipped");
    CHECK(sk && rm_json_get(sk, "smear") && rm_json_get(sk, "ramole") && rm_json_get(rm_json_get(j, "iid"), "base") &&
          !rm_json_get(rm_json_get(j, "iid"), "smear"));
    CHECKF(strstr(err, "smear skipped") && strstr(err, "split-2/smear.gguf not found"), "%s", err);
    rm_json_free(j);
    free(text);
    free(err);
    // refusals
    snprintf(args, sizeof args, "eval --table %s --test %s/combined_test.json", g_dir, g_dir);
    CHECK(cli(args) == 2);
    snprintf(args, sizeof args, "eval --table %s --methods base,nope", g_dir);
    CHECK(cli(args) == 1 && strstr((err = cli_text("err")), "unknown method 'nope'"));
    free(err);
    snprintf(args, sizeof args,
             "eval -m %s/base.gguf --test %s/combined_test.json --pool %s/pool --method oracle --exclude-own", g_dir,
             g_dir, g_dir);
    CHECK(cli(args) == 2 && strstr((err = cli_text("err")), "oracle has no out-of-distribution form"));
    free(err);
    snprintf(args, sizeof args, "eval -m %s/base.gguf --test %s/combined_test.json --pool %s/pool --method lorahub",
             g_dir, g_dir, g_dir);
    CHECK(cli(args) == 2 && strstr((err = cli_text("err")), "--task-data"));
    free(err);
}
