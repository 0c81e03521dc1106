// flan.c — see flan.h.
#include "eval/flan.h"
#include "base/err.h"
#include "base/json.h"
#include "base/rng.h"

#include <stdlib.h>
#include <string.h>

const int rm_eval_ks[RM_EVAL_NK] = {1, 3, 5, 8};

#define CHUNK_MAX 64 // queries per batch in the evaluations

static void free_task(rm_flan_task *t) {
    for (int i = 0; i < t->n; i++) {
        free(t->inputs[i]);
        free(t->targets[i]);
    }
    free(t->inputs);
    free(t->targets);
    free(t->name);
    free(t->domain);
}

void rm_flan_free_pool(rm_flan_pool *p) {
    for (int i = 0; i < p->n; i++) free_task(&p->tasks[i]);
    free(p->tasks);
    memset(p, 0, sizeof *p);
}

static int load_task(const char *path, const rm_json *o, const char *key, rm_flan_task *t) {
    memset(t, 0, sizeof *t);
    if (o->type != RM_JSON_OBJECT) return rm_errorf(RM_EFORMAT, "%s: a pool entry is not an object", path);
    const rm_json *name = rm_json_get(o, "model_name");
    t->name = name ? rm_json_strdup(name) : key ? strdup(key) : NULL;
    if (!t->name) return rm_errorf(RM_EFORMAT, "%s: a pool entry has no string model_name", path);
    const rm_json *dom = rm_json_get(o, "domain");
    t->domain = dom ? rm_json_strdup(dom) : strdup("");
    if (!t->domain) return rm_errorf(RM_EFORMAT, "%s: %s: domain is not a string", path, t->name);
    const rm_json *s = rm_json_get(o, "sample");
    if (!s || s->type != RM_JSON_ARRAY || s->n == 0)
        return rm_errorf(RM_EFORMAT, "%s: %s: 'sample' is not a non-empty list", path, t->name);
    if (s->n > 100000) return rm_errorf(RM_EFORMAT, "%s: %s: too many samples", path, t->name);
    t->inputs = calloc(s->n, sizeof *t->inputs);
    t->targets = calloc(s->n, sizeof *t->targets);
    if (!t->inputs || !t->targets) return rm_errorf(RM_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < s->n; i++) {
        const rm_json *in = rm_json_get(&s->items[i], "inputs"), *tg = rm_json_get(&s->items[i], "targets");
        t->inputs[i] = rm_json_strdup(in);
        t->targets[i] = tg ? rm_json_strdup(tg) : strdup("");
        t->n = (int)i + 1;
        if (!t->inputs[i] || !t->targets[i])
            return rm_errorf(RM_EFORMAT, "%s: %s: sample %zu lacks string inputs/targets", path, t->name, i);
    }
    return RM_OK;
}

int rm_flan_load_pool(const char *path, rm_flan_pool *out) {
    memset(out, 0, sizeof *out);
    rm_json *j = NULL;
    int rc = rm_json_parse_file(path, &j);
    if (rc) return rc;
    if (j->type != RM_JSON_ARRAY && j->type != RM_JSON_OBJECT) {
        rm_json_free(j);
        return rm_errorf(RM_EFORMAT, "%s: expected a list (or object) of tasks", path);
    }
    out->tasks = calloc(j->n ? j->n : 1, sizeof *out->tasks);
    if (!out->tasks) rc = rm_errorf(RM_ENOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < j->n && !rc; i++) {
        rc = load_task(path, &j->items[i], j->type == RM_JSON_OBJECT ? j->keys[i] : NULL, &out->tasks[i]);
        out->n = (int)i + 1;
        for (int k = 0; k < (int)i && !rc; k++)
            if (!strcmp(out->tasks[k].name, out->tasks[i].name))
                rc = rm_errorf(RM_EFORMAT, "%s: task '%s' appears twice", path, out->tasks[i].name);
    }
    if (!rc && out->n == 0) rc = rm_errorf(RM_EFORMAT, "%s: no tasks", path);
    rm_json_free(j);
    if (rc) rm_flan_free_pool(out);
    return rc;
}

void rm_flan_free_test(rm_flan_request *r, int n) {
    if (!r) return;
    for (int i = 0; i < n; i++) {
        free(r[i].inputs);
        free(r[i].task);
        free(r[i].domain);
    }
    free(r);
}

int rm_flan_load_test(const char *path, const rm_flan_pool *pool, rm_flan_request **out, int *n) {
    *out = NULL;
    *n = 0;
    rm_json *j = NULL;
    int rc = rm_json_parse_file(path, &j);
    if (rc) return rc;
    rm_flan_request *r = NULL;
    if (j->type != RM_JSON_ARRAY) rc = rm_errorf(RM_EFORMAT, "%s: expected a list of requests", path);
    else if (!(r = calloc(j->n ? j->n : 1, sizeof *r))) rc = rm_errorf(RM_ENOMEM, "%s: out of memory", path);
    int m = 0;
    for (size_t i = 0; !rc && i < j->n; i++) {
        const rm_json *o = &j->items[i];
        r[i].inputs = rm_json_strdup(rm_json_get(o, "inputs"));
        r[i].task = rm_json_strdup(rm_json_get(o, "task"));
        const rm_json *dom = rm_json_get(o, "domain");
        r[i].domain = dom ? rm_json_strdup(dom) : strdup("");
        m = (int)i + 1;
        if (!r[i].inputs || !r[i].task || !r[i].domain) {
            rc = rm_errorf(RM_EFORMAT, "%s: request %zu lacks string inputs/task/domain", path, i);
            break;
        }
        r[i].task_idx = -1;
        for (int t = 0; t < pool->n; t++)
            if (!strcmp(pool->tasks[t].name, r[i].task)) r[i].task_idx = t;
        if (r[i].task_idx < 0)
            rc = rm_errorf(RM_EMISMATCH, "%s: request %zu: task '%s' is not in the pool", path, i, r[i].task);
    }
    rm_json_free(j);
    if (rc) {
        rm_flan_free_test(r, m);
        return rc;
    }
    *out = r;
    *n = m;
    return RM_OK;
}

void rm_flan_split(int n_tasks, double frac, uint64_t seed, unsigned char *seen) {
    int *perm = malloc((size_t)(n_tasks > 0 ? n_tasks : 1) * sizeof *perm);
    int n_seen = (int)(frac * n_tasks + 1e-9);
    if (n_seen < 0) n_seen = 0;
    if (n_seen > n_tasks) n_seen = n_tasks;
    memset(seen, 0, (size_t)(n_tasks > 0 ? n_tasks : 0));
    if (!perm) { // cannot shuffle: take the first ones (deterministic still)
        for (int i = 0; i < n_seen; i++) seen[i] = 1;
        return;
    }
    for (int i = 0; i < n_tasks; i++) perm[i] = i;
    uint64_t s = seed;
    rm_shuffle_prefix(perm, n_tasks, n_seen, &s);
    for (int i = 0; i < n_seen; i++) seen[perm[i]] = 1;
    free(perm);
}

// ---------------------------------------------------------------------------
// The benchmark

void rm_eval_result_free(rm_eval_result *r) {
    free(r->confusion);
    free(r->task_hits1);
    free(r->task_n);
    free(r->task_miss3);
    memset(r, 0, sizeof *r);
}

static int build_keys(const rm_embedder *e, const rm_flan_pool *pool, const rm_eval_params *p, rm_index *ix) {
    float *key = malloc((size_t)e->dim * sizeof *key);
    if (!key) return rm_errorf(RM_ENOMEM, "eval: out of memory");
    int rc = RM_OK;
    for (int t = 0; t < pool->n && !rc; t++) {
        rc = rm_embedder_key(e, (const char *const *)pool->tasks[t].inputs, pool->tasks[t].n, key, p->n_threads);
        if (!rc) rc = rm_index_add(ix, t, key);
    }
    free(key);
    return rc;
}

// ---------------------------------------------------------------------------
// Second stage: re-ranking by the similarity to individual samples

// emb[off[t] + i] (rows of dim) = embedding of task t's sample i.
static int sample_embeddings(const rm_embedder *e, const rm_flan_pool *pool, int n_threads, float **emb, int **off) {
    *emb = NULL;
    *off = malloc((size_t)(pool->n + 1) * sizeof **off);
    if (!*off) return rm_errorf(RM_ENOMEM, "eval: out of memory");
    (*off)[0] = 0;
    for (int t = 0; t < pool->n; t++) (*off)[t + 1] = (*off)[t] + pool->tasks[t].n;
    int n = (*off)[pool->n];
    *emb = malloc((size_t)(n ? n : 1) * (size_t)e->dim * sizeof **emb);
    if (!*emb) {
        free(*off);
        *off = NULL;
        return rm_errorf(RM_ENOMEM, "eval: out of memory");
    }
    for (int t = 0; t < pool->n; t++) {
        int rc = rm_embedder_embed_many(e, (const char *const *)pool->tasks[t].inputs, pool->tasks[t].n,
                                        *emb + (size_t)(*off)[t] * (size_t)e->dim, n_threads);
        if (rc) {
            free(*emb);
            free(*off);
            *emb = NULL;
            *off = NULL;
            return rc;
        }
    }
    return RM_OK;
}

// The key vectors of a task from its sample embeddings rows[n] (row skip
// left out, -1: none): out[0] = the mean key (normalised sum), out[1..] its
// prototypes when pp asks for them (proto.h). out holds 1 + RM_PROTO_MAX rows.
static int task_keys(const rm_embedder *e, const float *rows, int n, int skip, const rm_proto_params *pp, float *out,
                     int *n_out) {
    size_t dim = (size_t)e->dim;
    memset(out, 0, dim * sizeof *out);
    for (int i = 0; i < n; i++)
        if (i != skip)
            for (size_t d = 0; d < dim; d++) out[d] += rows[(size_t)i * dim + d];
    rm_embedder_normalise(e, out);
    *n_out = 1;
    if (!rm_proto_on(pp)) return RM_OK;
    int np = 0;
    int rc = rm_proto_kmeans(e, e->dim, rows, n, skip, pp, out + dim, &np, NULL);
    *n_out += np;
    return rc;
}

// Adds task t's key rows (task_keys) to ix: under id t, or with prototypes
// under t * RM_PROTO_ROWS + j (j 0: the mean key).
static int add_task_rows(rm_index *ix, const rm_embedder *e, const float *rows, int n, const rm_proto_params *pp, int t,
                         float *scratch) {
    int nk;
    int rc = task_keys(e, rows, n, -1, pp, scratch, &nk);
    int64_t base = rm_proto_on(pp) ? (int64_t)t * RM_PROTO_ROWS : t;
    for (int j = rm_proto_skip_mean(pp); j < nk && !rc; j++)
        rc = rm_index_add(ix, base + j, scratch + (size_t)j * (size_t)e->dim);
    return rc;
}

// The first stage with prototypes: every row of ix scored for the nq queries
// (rows: nq x rm_index_size(ix) scratch), merged into adapter hits
// hits[qi * kmax ..], n_hits[qi]. ex[qi] (n_ex[qi] 0 or 1) excludes a task.
static int proto_search(const rm_index *ix, const rm_proto_params *pp, const float *q, int nq, int kmax,
                        const int64_t *const *ex, const int *n_ex, rm_hit *rows, rm_hit *hits, int *n_hits) {
    int nr = (int)rm_index_size(ix);
    int64_t exr[CHUNK_MAX][RM_PROTO_ROWS];
    const int64_t *exl[CHUNK_MAX];
    int nexp[CHUNK_MAX], n_rows[CHUNK_MAX];
    if (nq > CHUNK_MAX) return rm_errorf(RM_EINVAL, "eval: %d queries in one batch", nq);
    for (int i = 0; i < nq; i++) {
        nexp[i] = ex && n_ex && n_ex[i] > 0 ? RM_PROTO_ROWS : 0;
        for (int j = 0; j < nexp[i]; j++) exr[i][j] = ex[i][0] * RM_PROTO_ROWS + j;
        exl[i] = exr[i];
    }
    int rc = rm_index_search_batch(ix, q, nq, nr, exl, nexp, rows, n_rows);
    for (int i = 0; i < nq && !rc; i++)
        rc = rm_proto_merge(pp, rows + (size_t)i * (size_t)nr, n_rows[i], kmax, hits + (size_t)i * (size_t)kmax,
                            &n_hits[i]);
    return rc;
}

// BM25 over the pool tasks (bm25.h): every sample's features (for the
// leave-one-out documents), every task's document and the corpus statistics.
typedef struct {
    rm_sparse *feat; // [off[t] + i]
    rm_sparse *doc;  // [t]
    int n_feat, n_doc;
    rm_bm25_stats st;
} bm25_state;

static void bm25_free(bm25_state *b) {
    for (int i = 0; b->feat && i < b->n_feat; i++) rm_sparse_free(&b->feat[i]);
    for (int t = 0; b->doc && t < b->n_doc; t++) rm_sparse_free(&b->doc[t]);
    free(b->feat);
    free(b->doc);
    rm_bm25_stats_free(&b->st);
    memset(b, 0, sizeof *b);
}

static int bm25_build(const rm_bm25_params *p, const rm_flan_pool *pool, const int *off, bm25_state *b) {
    memset(b, 0, sizeof *b);
    int rc = rm_bm25_check(p);
    if (rc) return rc;
    b->feat = calloc((size_t)(off[pool->n] ? off[pool->n] : 1), sizeof *b->feat);
    b->doc = calloc((size_t)pool->n, sizeof *b->doc);
    if (!b->feat || !b->doc) {
        bm25_free(b);
        return rm_errorf(RM_ENOMEM, "eval: out of memory");
    }
    b->n_feat = off[pool->n];
    b->n_doc = pool->n;
    rc = rm_bm25_stats_init(&b->st, p->feat.bits);
    for (int t = 0; t < pool->n && !rc; t++) {
        for (int i = 0; i < pool->tasks[t].n && !rc; i++)
            rc = rm_feat_extract(&p->feat, pool->tasks[t].inputs[i], strlen(pool->tasks[t].inputs[i]),
                                 &b->feat[off[t] + i]);
        if (!rc) rc = rm_bm25_doc_sum(b->feat + off[t], pool->tasks[t].n, -1, p->feat.bits, &b->doc[t]);
        if (!rc) rm_bm25_stats_update(&b->st, &b->doc[t], +1);
    }
    if (rc) bm25_free(b);
    return rc;
}

// The second stage for query q over h[nh] (skip_task / skip_idx: a sample
// left out of its task, -1: none). With bs (may be NULL), bq is the query's
// BM25 buckets and skip_task's document is own_doc (the statistics are those
// of the corpus with own_doc in its place).
static void rerank(const rm_rerank_params *p, int dim, const float *emb, const int *off, const float *q, rm_hit *h,
                   int nh, int skip_task, int skip_idx, const bm25_state *bs, const rm_sparse *bq,
                   const rm_sparse *own_doc) {
    float term[64], bterm[64];
    int k = p->k < nh ? p->k : nh;
    if (k > 64) k = 64;
    for (int c = 0; c < k; c++) {
        int t = (int)h[c].id;
        term[c] = rm_rerank_term(p, dim, q, emb + (size_t)off[t] * (size_t)dim, off[t + 1] - off[t],
                                 t == skip_task ? skip_idx : -1);
        if (bs) bterm[c] = rm_bm25_score(&p->bm25, &bs->st, bq, t == skip_task && own_doc ? own_doc : &bs->doc[t]);
    }
    rm_rerank_params p2 = *p;
    p2.k = k;
    rm_rerank_apply(&p2, h, nh, term, bs ? bterm : NULL);
}

static void score_request(const rm_flan_pool *pool, const rm_flan_request *r, const rm_hit *h, int nh, int ood,
                          int is_seen, rm_eval_result *res) {
    int rank = -1;
    for (int i = 0; i < nh; i++)
        if (h[i].id == r->task_idx) {
            rank = i;
            break;
        }
    for (int k = 0; k < RM_EVAL_NK; k++) {
        int hit = rank >= 0 && rank < rm_eval_ks[k];
        res->all[k] += hit;
        (is_seen ? res->seen : res->unseen)[k] += hit;
        if (ood) {
            int same = 0, m = nh < rm_eval_ks[k] ? nh : rm_eval_ks[k];
            for (int i = 0; i < m; i++) same += !strcmp(pool->tasks[h[i].id].domain, r->domain);
            res->ood_any[k] += same > 0;
            res->ood_frac[k] += m ? (double)same / m : 0;
        }
    }
    res->n++;
    if (is_seen) res->n_seen++;
    else res->n_unseen++;
    res->task_n[r->task_idx]++;
    if (rank < 0 || rank >= 3) res->task_miss3[r->task_idx]++;
    if (nh > 0 && rank == 0) res->task_hits1[r->task_idx]++;
    else if (nh > 0) res->confusion[(size_t)r->task_idx * pool->n + (size_t)h[0].id]++;
}

static int eval_alloc(const rm_flan_pool *pool, rm_eval_result *res) {
    memset(res, 0, sizeof *res);
    res->n_tasks = pool->n;
    res->confusion = calloc((size_t)pool->n * pool->n, sizeof *res->confusion);
    res->task_hits1 = calloc((size_t)pool->n, sizeof *res->task_hits1);
    res->task_n = calloc((size_t)pool->n, sizeof *res->task_n);
    res->task_miss3 = calloc((size_t)pool->n, sizeof *res->task_miss3);
    if (!res->confusion || !res->task_hits1 || !res->task_n || !res->task_miss3)
        return rm_errorf(RM_ENOMEM, "eval: out of memory");
    return RM_OK;
}

// Counts to shares.
static void finish_shares(rm_eval_result *res) {
    for (int k = 0; k < RM_EVAL_NK; k++) {
        res->all[k] /= res->n > 0 ? res->n : 1;
        res->seen[k] /= res->n_seen > 0 ? res->n_seen : 1;
        res->unseen[k] /= res->n_unseen > 0 ? res->n_unseen : 1;
        res->ood_any[k] /= res->n > 0 ? res->n : 1;
        res->ood_frac[k] /= res->n > 0 ? res->n : 1;
    }
}

int rm_flan_eval(const rm_embedder *e, const rm_flan_pool *pool, const rm_flan_request *req, int n_req,
                 const unsigned char *seen, const rm_eval_params *p, rm_eval_result *res) {
    enum { KMAX = 64, CHUNK = CHUNK_MAX }; // hits kept per query: the second stage may re-score up to 64
    int rc = eval_alloc(pool, res);
    rm_index *ix = NULL;
    float *q = malloc((size_t)CHUNK * e->dim * sizeof *q);
    rm_hit *hits = malloc((size_t)CHUNK * KMAX * sizeof *hits);
    if (!rc && (!q || !hits)) rc = rm_errorf(RM_ENOMEM, "eval: out of memory");
    if (!rc) rc = rm_index_create(e->dim, p->key_type, &ix);
    float *semb = NULL;
    int *soff = NULL;
    bm25_state bs = {0};
    rm_sparse bq = {0};
    int use_bm25 = p->rerank.k > 0 && p->rerank.bm25.w > 0, use_proto = rm_proto_on(&p->proto);
    rm_hit *rows = NULL;                         // with prototypes: every index row scored, per query
    if (!rc && (p->rerank.k > 0 || use_proto)) { // the keys from the sample embeddings the second stage needs anyway
        rc = sample_embeddings(e, pool, p->n_threads, &semb, &soff);
        if (!rc && use_bm25) rc = bm25_build(&p->rerank.bm25, pool, soff, &bs);
        float *scratch = rc ? NULL : malloc((size_t)(1 + RM_PROTO_MAX) * (size_t)e->dim * sizeof *scratch);
        if (!rc && !scratch) rc = rm_errorf(RM_ENOMEM, "eval: out of memory");
        for (int t = 0; t < pool->n && !rc; t++) // normalised sums = normalised means (rm_embedder_key)
            rc = add_task_rows(ix, e, semb + (size_t)soff[t] * (size_t)e->dim, soff[t + 1] - soff[t], &p->proto, t,
                               scratch);
        free(scratch);
        if (!rc && use_proto && !(rows = malloc((size_t)CHUNK * rm_index_size(ix) * sizeof *rows)))
            rc = rm_errorf(RM_ENOMEM, "eval: out of memory");
    } else if (!rc) {
        rc = build_keys(e, pool, p, ix);
    }
    for (int c0 = 0; c0 < n_req && !rc; c0 += CHUNK) {
        int m = n_req - c0 < CHUNK ? n_req - c0 : CHUNK;
        const char *texts[CHUNK];
        int64_t own[CHUNK];
        const int64_t *ex[CHUNK];
        int n_ex[CHUNK], n_hits[CHUNK];
        for (int i = 0; i < m; i++) {
            texts[i] = req[c0 + i].inputs;
            own[i] = req[c0 + i].task_idx;
            ex[i] = &own[i];
            n_ex[i] = p->ood ? 1 : 0;
        }
        rc = rm_embedder_embed_many(e, texts, m, q, p->n_threads);
        if (!rc && use_proto) rc = proto_search(ix, &p->proto, q, m, KMAX, ex, n_ex, rows, hits, n_hits);
        else if (!rc) rc = rm_index_search_batch(ix, q, m, KMAX, ex, n_ex, hits, n_hits);
        for (int i = 0; i < m && !rc; i++) {
            const rm_flan_request *r = &req[c0 + i];
            int is_seen = seen && seen[r->task_idx];
            if (use_bm25) rc = rm_bm25_query(&p->rerank.bm25.feat, r->inputs, &bq);
            if (rc) break;
            if (p->rerank.k > 0)
                rerank(&p->rerank, e->dim, semb, soff, q + (size_t)i * e->dim, hits + (size_t)i * KMAX, n_hits[i], -1,
                       -1, use_bm25 ? &bs : NULL, &bq, NULL);
            score_request(pool, r, hits + (size_t)i * KMAX, n_hits[i], p->ood, is_seen, res);
        }
    }
    if (!rc) finish_shares(res);
    free(rows);
    bm25_free(&bs);
    rm_sparse_free(&bq);
    free(semb);
    free(soff);
    rm_index_free(ix);
    free(q);
    free(hits);
    if (rc) rm_eval_result_free(res);
    return rc;
}

// ---------------------------------------------------------------------------
// Leave-one-out on the pool

// sum[t*dim..] = sum of the embeddings of task t's samples (emb: CHUNK*dim scratch).
static int loo_sums(const rm_embedder *e, const rm_flan_pool *pool, int chunk, int n_threads, float *emb, float *sum) {
    size_t dim = (size_t)e->dim;
    for (int t = 0; t < pool->n; t++) {
        float *s = sum + (size_t)t * dim;
        memset(s, 0, dim * sizeof *s);
        for (int c0 = 0; c0 < pool->tasks[t].n; c0 += chunk) {
            int m = pool->tasks[t].n - c0 < chunk ? pool->tasks[t].n - c0 : chunk;
            int rc = rm_embedder_embed_many(e, (const char *const *)pool->tasks[t].inputs + c0, m, emb, n_threads);
            if (rc) return rc;
            for (int i = 0; i < m; i++)
                for (size_t d = 0; d < dim; d++) s[d] += emb[(size_t)i * dim + d];
        }
    }
    return RM_OK;
}

int rm_flan_eval_pool_loo(const rm_embedder *e, const rm_flan_pool *pool, const unsigned char *seen,
                          const rm_eval_params *p, rm_eval_result *res) {
    enum { KMAX = 64, CHUNK = 32 };
    _Static_assert(CHUNK <= CHUNK_MAX, "proto_search batches");
    size_t dim = (size_t)e->dim;
    int rc = eval_alloc(pool, res);
    float *sum = malloc((size_t)pool->n * dim * sizeof *sum);
    float *emb = malloc((size_t)CHUNK * dim * sizeof *emb);
    float *own_key = malloc(dim * sizeof *own_key);
    rm_hit *hits = malloc((size_t)CHUNK * KMAX * sizeof *hits);
    rm_index *ix = NULL;
    if (!rc && (!sum || !emb || !own_key || !hits)) rc = rm_errorf(RM_ENOMEM, "pool-loo: out of memory");
    if (!rc) rc = rm_index_create(e->dim, p->key_type, &ix);
    if (!rc) rm_index_set_threads(ix, p->n_threads);
    if (!rc) rc = loo_sums(e, pool, CHUNK, p->n_threads, emb, sum);
    float *semb = NULL;
    int *soff = NULL;
    bm25_state bs = {0};
    rm_sparse own_doc = {0};
    int use_bm25 = p->rerank.k > 0 && p->rerank.bm25.w > 0, use_proto = rm_proto_on(&p->proto);
    float *pk = NULL;    // with prototypes: a task's key rows (task_keys)
    rm_hit *rows = NULL; // and every index row scored, per query
    if (!rc && (p->rerank.k > 0 || use_proto)) rc = sample_embeddings(e, pool, p->n_threads, &semb, &soff);
    if (!rc && use_bm25) rc = bm25_build(&p->rerank.bm25, pool, soff, &bs);
    if (!rc && use_proto) {
        if (!(pk = malloc((size_t)(1 + RM_PROTO_MAX) * dim * sizeof *pk)))
            rc = rm_errorf(RM_ENOMEM, "pool-loo: out of memory");
        for (int t = 0; t < pool->n && !rc; t++)
            rc = add_task_rows(ix, e, semb + (size_t)soff[t] * dim, soff[t + 1] - soff[t], &p->proto, t, pk);
        if (!rc && !(rows = malloc((size_t)CHUNK * rm_index_size(ix) * sizeof *rows)))
            rc = rm_errorf(RM_ENOMEM, "pool-loo: out of memory");
    }
    for (int t = 0; t < pool->n && !rc && !use_proto; t++) { // the full keys: normalised sums = normalised means
        memcpy(own_key, sum + (size_t)t * dim, dim * sizeof *own_key);
        rm_embedder_normalise(e, own_key);
        rc = rm_index_add(ix, t, own_key);
    }
    for (int t = 0; t < pool->n && !rc; t++) {
        const rm_flan_task *task = &pool->tasks[t];
        if (task->n < 2) continue;
        int64_t own = t;
        const int64_t *ex[CHUNK];
        int n_ex[CHUNK], n_hits[CHUNK];
        for (int i = 0; i < CHUNK; i++) {
            ex[i] = &own;
            n_ex[i] = 1;
        }
        for (int c0 = 0; c0 < task->n && !rc; c0 += CHUNK) {
            int m = task->n - c0 < CHUNK ? task->n - c0 : CHUNK;
            rc = rm_embedder_embed_many(e, (const char *const *)task->inputs + c0, m, emb, p->n_threads);
            if (!rc && use_proto) rc = proto_search(ix, &p->proto, emb, m, KMAX, ex, n_ex, rows, hits, n_hits);
            else if (!rc) rc = rm_index_search_batch(ix, emb, m, KMAX, ex, n_ex, hits, n_hits);
            for (int i = 0; i < m && !rc; i++) {
                const float *q = emb + (size_t)i * dim;
                double sc = 0;
                if (use_proto) { // the own task's mean key and prototypes without this sample
                    int nk = 0, one = 0;
                    rm_hit own_rows[1 + RM_PROTO_MAX], merged1;
                    rc = task_keys(e, semb + (size_t)soff[t] * dim, task->n, c0 + i, &p->proto, pk, &nk);
                    int j0 = rm_proto_skip_mean(&p->proto);
                    for (int j = j0; j < nk; j++) {
                        double d = 0;
                        for (size_t x = 0; x < dim; x++) d += (double)q[x] * pk[(size_t)j * dim + x];
                        own_rows[j] = (rm_hit){(int64_t)t * RM_PROTO_ROWS + j, (float)d};
                    }
                    if (!rc) rc = rm_proto_merge(&p->proto, own_rows + j0, nk - j0, 1, &merged1, &one);
                    if (rc) break;
                    sc = merged1.score;
                } else {
                    const float *s = sum + (size_t)t * dim;
                    for (size_t d = 0; d < dim; d++) own_key[d] = s[d] - q[d]; // the key without this sample
                    rm_embedder_normalise(e, own_key);
                    for (size_t d = 0; d < dim; d++) sc += (double)q[d] * own_key[d];
                }
                // the own task enters the other tasks' ranking (ties to the smaller id, as the index)
                rm_hit merged[KMAX + 1];
                const rm_hit *h = hits + (size_t)i * KMAX;
                int nm = 0, placed = 0;
                for (int j = 0; j < n_hits[i] && nm < KMAX; j++) {
                    if (!placed && ((float)sc > h[j].score || ((float)sc == h[j].score && own < h[j].id))) {
                        merged[nm++] = (rm_hit){own, (float)sc};
                        placed = 1;
                        if (nm == KMAX) break;
                    }
                    merged[nm++] = h[j];
                }
                if (!placed && nm < KMAX) merged[nm++] = (rm_hit){own, (float)sc};
                rm_flan_request r = {
                    .inputs = task->inputs[c0 + i], .task = task->name, .domain = task->domain, .task_idx = t};
                int is_seen = seen && seen[t];
                if (use_bm25) { // the corpus with task t's document made without this sample
                    rc = rm_bm25_doc_sum(bs.feat + soff[t], task->n, c0 + i, p->rerank.bm25.feat.bits, &own_doc);
                    if (rc) break;
                    rm_bm25_stats_update(&bs.st, &bs.doc[t], -1);
                    rm_bm25_stats_update(&bs.st, &own_doc, +1);
                }
                if (p->rerank.k > 0)
                    rerank(&p->rerank, e->dim, semb, soff, q, merged, nm, t, c0 + i, use_bm25 ? &bs : NULL,
                           use_bm25 ? &bs.feat[soff[t] + c0 + i] : NULL, &own_doc);
                if (use_bm25) {
                    rm_bm25_stats_update(&bs.st, &own_doc, -1);
                    rm_bm25_stats_update(&bs.st, &bs.doc[t], +1);
                }
                score_request(pool, &r, merged, nm, 0, is_seen, res);
            }
        }
    }
    if (!rc) finish_shares(res);
    free(pk);
    free(rows);
    bm25_free(&bs);
    rm_sparse_free(&own_doc);
    free(semb);
    free(soff);
    rm_index_free(ix);
    free(sum);
    free(emb);
    free(own_key);
    free(hits);
    if (rc) rm_eval_result_free(res);
    return rc;
}
