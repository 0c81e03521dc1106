// pool.c — see pool.h. The in-memory state (entries, key index, BM25
// statistics, sample cache) and search live here; every read and write of
// the registry goes through a store (pool_store.h: a SQLite folder or a
// PostgreSQL database).
//
// Other processes: the store's version moves when another handle commits;
// the in-memory state is then reloaded from the store (rm_pool_refresh).
#define _GNU_SOURCE
#include "retrieve/pool.h"
#include "retrieve/pool_store.h"
#include "retrieve/sampcache.h"
#include "base/err.h"
#include "base/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// An adapter as memory keeps it: what retrieval needs without the store.
typedef struct {
    int64_t id;
    char *name, *task, *weights;
} pool_entry;

struct rm_pool {
    pool_store *st;      // the registry
    const char *dir;     // names the pool in messages (st->label)
    const char *db_path; // names the registry in messages (st->where)
    rm_pool_params params;
    rm_embedder *emb;
    int64_t fingerprint; // of the embedder's bytes (their checksum)
    rm_index *ix;
    pool_entry *ents; // sorted by id
    int n, cap;
    int bm25_on;           // the second stage has a BM25 term: bm holds the
    rm_bm25_stats bm;      //   statistics of every adapter's document
    rm_sampcache *samples; // the second stage's sample embeddings, by adapter id
    int64_t data_version;  // the store's version when the memory state was last in step
    double last_check;     // rm_now() of the last version check
    int vanished;          // a search met an adapter another process removed
};

static void (*g_test_hook)(void);
void rm_pool_set_test_hook(void (*hook)(void)) { g_test_hook = hook; }

rm_pool_params rm_pool_default_params(void) {
    return (rm_pool_params){.key_type = RM_KEY_F32,
                            .n_threads = 1,
                            .rerank = rm_rerank_default_params(),
                            .sample_cache_bytes = (size_t)256 << 20,
                            .max_samples = RM_POOL_MAX_SAMPLES,
                            .max_add_bytes = RM_POOL_MAX_ADD_BYTES};
}

// ---------------------------------------------------------------------------
// In-memory entries

static int ent_find(const rm_pool *p, int64_t id) {
    int lo = 0, hi = p->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (p->ents[mid].id == id) return mid;
        if (p->ents[mid].id < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static void ent_free(pool_entry *e) {
    free(e->name);
    free(e->task);
    free(e->weights);
}

static void ents_free(pool_entry *ents, int n) {
    for (int i = 0; i < n; i++) ent_free(&ents[i]);
    free(ents);
}

static int ent_add(rm_pool *p, int64_t id, const char *name, const char *task, const char *weights) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        pool_entry *e = realloc(p->ents, (size_t)cap * sizeof *e);
        if (!e) return rm_errorf(RM_ENOMEM, "pool: out of memory");
        p->ents = e;
        p->cap = cap;
    }
    pool_entry e = {id, strdup(name), task ? strdup(task) : NULL, weights ? strdup(weights) : NULL};
    if (!e.name || (task && !e.task) || (weights && !e.weights)) {
        ent_free(&e);
        return rm_errorf(RM_ENOMEM, "pool: out of memory");
    }
    int at = p->n;
    while (at > 0 && p->ents[at - 1].id > id) at--;
    memmove(p->ents + at + 1, p->ents + at, (size_t)(p->n - at) * sizeof *p->ents);
    p->ents[at] = e;
    p->n++;
    return RM_OK;
}

static void ent_remove(rm_pool *p, int64_t id) {
    int at = ent_find(p, id);
    if (at < 0) return;
    ent_free(&p->ents[at]);
    memmove(p->ents + at, p->ents + at + 1, (size_t)(p->n - at - 1) * sizeof *p->ents);
    p->n--;
}

const char *rm_pool_name(const rm_pool *p, int64_t id) {
    int at = ent_find(p, id);
    return at < 0 ? NULL : p->ents[at].name;
}

int rm_pool_entry(const rm_pool *p, int64_t id, const char **task, const char **weights) {
    int at = ent_find(p, id);
    if (at < 0) return RM_ENOTFOUND;
    if (task) *task = p->ents[at].task;
    if (weights) *weights = p->ents[at].weights;
    return RM_OK;
}

int64_t rm_pool_id(const rm_pool *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->ents[i].name, name)) return p->ents[i].id;
    return -1;
}

int rm_pool_size(const rm_pool *p) { return p->n; }
const rm_embedder *rm_pool_embedder(const rm_pool *p) { return p->emb; }
const char *rm_pool_weights_dir(const rm_pool *p) { return p->st->weights; }

void rm_pool_free_strs(char **s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

// Adapter id's sample inputs (at least one, else RM_EFORMAT).
static char **sample_inputs(rm_pool *p, int64_t id, int *n, int *rc) {
    char **v = NULL;
    *rc = p->st->ops->samples(p->st, id, &v, n);
    if (!*rc && *n == 0) *rc = rm_errorf(RM_EFORMAT, "%s: adapter %lld has no samples", p->db_path, (long long)id);
    if (*rc) {
        rm_pool_free_strs(v, *n);
        *n = 0;
        return NULL;
    }
    return v;
}

// ---------------------------------------------------------------------------
// Keys

// Makes adapter id's key from its stored samples and writes it (no transaction
// of its own; the caller's or autocommit).
static int rekey(rm_pool *p, int64_t id, float *key) {
    int n, rc;
    char **in = sample_inputs(p, id, &n, &rc);
    if (rc) return rc;
    rc = rm_embedder_key(p->emb, (const char *const *)in, n, key, p->params.n_threads);
    rm_pool_free_strs(in, n);
    if (!rc) rc = p->st->ops->put_key(p->st, id, p->emb->name, p->fingerprint, p->emb->dim, key);
    if (!rc) rc = rm_index_add(p->ix, id, key);
    return rc;
}

typedef struct {
    rm_pool *p;
    int64_t *stale;
    int n_stale;
    float *key;
} load_walk;

static int load_row(void *u, const pool_row *r) {
    load_walk *w = u;
    rm_pool *p = w->p;
    int rc = ent_add(p, r->id, r->name, r->task, r->weights);
    if (rc || !p->emb) return rc;
    size_t bytes = (size_t)p->emb->dim * sizeof(float);
    if (r->has_key && r->fingerprint == p->fingerprint && r->dim == p->emb->dim && r->vec_bytes == bytes) {
        memcpy(w->key, r->vec, bytes);
        return rm_index_add(p->ix, r->id, w->key);
    }
    int64_t *ns = realloc(w->stale, (size_t)(w->n_stale + 1) * sizeof *ns);
    if (!ns) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    w->stale = ns;
    w->stale[w->n_stale++] = r->id;
    return RM_OK;
}

// Loads entries and keys (of every adapter, or only adapter only >= 0);
// re-keys those of another embedder (one transaction).
static int load_some(rm_pool *p, int64_t only) {
    load_walk w = {p, NULL, 0, NULL};
    int rc = p->emb && !(w.key = malloc((size_t)p->emb->dim * sizeof *w.key))
                 ? rm_errorf(RM_ENOMEM, "pool: out of memory")
                 : RM_OK;
    if (!rc) rc = p->st->ops->each(p->st, only, load_row, &w);
    if (!rc && w.n_stale) {
        rc = p->st->ops->begin(p->st);
        for (int i = 0; i < w.n_stale && !rc; i++) rc = rekey(p, w.stale[i], w.key);
        if (rc) p->st->ops->rollback(p->st);
        else rc = p->st->ops->commit(p->st);
    }
    free(w.key);
    free(w.stale);
    return rc;
}

static int load_all(rm_pool *p) { return load_some(p, -1); }

// ---------------------------------------------------------------------------
// BM25 documents

// Writes adapter id's BM25 document (no transaction of its own).
static int store_bm25_doc(rm_pool *p, int64_t id, const rm_sparse *doc) {
    void *blob = malloc(rm_bm25_doc_bytes(doc));
    if (!blob) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    rm_bm25_doc_pack(doc, blob);
    int rc = p->st->ops->put_doc(p->st, id, rm_bm25_feat_id(&p->params.rerank.bm25.feat), blob, rm_bm25_doc_bytes(doc));
    free(blob);
    return rc;
}

// Adapter id's stored BM25 document (RM_ENOTFOUND when it has none of the
// current feature parameters).
static int read_bm25_doc(rm_pool *p, int64_t id, rm_sparse *doc) {
    int64_t feat = 0;
    rm_bytes b = {0};
    int rc = p->st->ops->get_doc(p->st, id, &feat, &b);
    if (!rc && feat != rm_bm25_feat_id(&p->params.rerank.bm25.feat)) rc = RM_ENOTFOUND;
    else if (!rc) rc = rm_bm25_doc_unpack(b.p, b.n, p->params.rerank.bm25.feat.bits, doc);
    free(b.p);
    return rc;
}

// The corpus statistics from every adapter's stored document; documents
// missing or of other feature parameters are re-made from the stored samples
// (one transaction).
static int load_bm25(rm_pool *p) {
    rm_sparse doc = {0};
    int rc = RM_OK, in_tx = 0;
    for (int i = 0; i < p->n && !rc; i++) {
        rc = read_bm25_doc(p, p->ents[i].id, &doc);
        if (rc == RM_ENOTFOUND) {
            int n = 0;
            rc = in_tx ? RM_OK : p->st->ops->begin(p->st);
            in_tx = 1;
            char **in = rc ? NULL : sample_inputs(p, p->ents[i].id, &n, &rc);
            if (!rc) rc = rm_bm25_doc(&p->params.rerank.bm25.feat, (const char *const *)in, n, &doc);
            if (!rc) rc = store_bm25_doc(p, p->ents[i].id, &doc);
            rm_pool_free_strs(in, n);
        }
        if (!rc) rm_bm25_stats_update(&p->bm, &doc, +1);
    }
    if (in_tx && rc) p->st->ops->rollback(p->st);
    else if (in_tx) rc = p->st->ops->commit(p->st);
    rm_sparse_free(&doc);
    return rc;
}

// ---------------------------------------------------------------------------
// Open / close

static int load_embedder(rm_pool *p) {
    rm_bytes b = {0};
    int rc = p->st->ops->read_embedder(p->st, &b);
    if (rc || b.n == 0) {
        free(b.p);
        return rc;
    }
    rc = rm_embedder_from_bytes(b.p, b.n, p->db_path, &p->emb);
    if (!rc) memcpy(&p->fingerprint, b.p + b.n - 8, 8); // the bytes' checksum
    free(b.p);
    if (!rc) rc = rm_index_create(p->emb->dim, p->params.key_type, &p->ix);
    if (!rc) rm_index_set_threads(p->ix, p->params.n_threads);
    return rc;
}

int rm_pool_open(const char *dir, const rm_pool_params *params, rm_pool **out) {
    *out = NULL;
    rm_pool *p = calloc(1, sizeof *p);
    if (!p) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    p->params = params ? *params : rm_pool_default_params();
    if (p->params.n_threads < 1) p->params.n_threads = 1;
    p->bm25_on = p->params.rerank.k > 0 && p->params.rerank.bm25.w > 0;
    int rc = rm_bm25_check(&p->params.rerank.bm25);
    if (!rc && !(p->samples = rm_sampcache_new(p->params.sample_cache_bytes)))
        rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc && p->bm25_on) rc = rm_bm25_stats_init(&p->bm, p->params.rerank.bm25.feat.bits);
    if (!rc) rc = pool_is_pg_url(dir) ? pool_pg_open(dir, &p->st) : pool_sqlite_open(dir, &p->st);
    if (!rc) p->dir = p->st->label, p->db_path = p->st->where;
    int others;
    if (!rc) rc = p->st->ops->version(p->st, 0, &p->data_version, &others);
    if (!rc) rc = load_embedder(p);
    if (!rc) rc = load_all(p);
    if (!rc && p->bm25_on) rc = load_bm25(p);
    if (rc) {
        rm_pool_close(p);
        return rc;
    }
    p->last_check = rm_now();
    *out = p;
    return RM_OK;
}

void rm_pool_close(rm_pool *p) {
    if (!p) return;
    if (p->st) p->st->ops->close(p->st);
    rm_bm25_stats_free(&p->bm);
    rm_sampcache_free(p->samples);
    rm_index_free(p->ix);
    rm_embedder_free(p->emb);
    ents_free(p->ents, p->n);
    free(p);
}

int rm_pool_set_embedder(rm_pool *p, rm_embedder *e) {
    rm_bytes b = {0};
    int rc = rm_embedder_to_bytes(e, &b);
    if (!rc) rc = p->st->ops->write_embedder(p->st, b.p, b.n);
    rm_index *ix = NULL;
    if (!rc) rc = rm_index_create(e->dim, p->params.key_type, &ix);
    if (rc) {
        rm_bytes_free(&b);
        rm_embedder_free(e);
        return rc;
    }
    rm_index_set_threads(ix, p->params.n_threads);
    memcpy(&p->fingerprint, b.p + b.n - 8, 8);
    rm_bytes_free(&b);
    rm_embedder_free(p->emb);
    rm_index_free(p->ix);
    rm_sampcache_clear(p->samples); // embeddings of the old embedder
    p->emb = e;
    p->ix = ix;
    // re-key everything (load_all finds every key stale now)
    for (int i = 0; i < p->n; i++) ent_free(&p->ents[i]);
    p->n = 0;
    rc = load_all(p);
    int others; // this handle's own change is in step now
    if (!rc) rc = p->st->ops->version(p->st, p->data_version, &p->data_version, &others);
    return rc;
}

// ---------------------------------------------------------------------------
// Changes by other processes

// Rebuilds entries, index and BM25 statistics from the store; on failure
// the previous state is kept.
static int pool_reload(rm_pool *p) {
    int64_t fp;
    int rc = p->st->ops->fingerprint(p->st, &fp);
    if (!rc && p->emb && fp != p->fingerprint)
        rc = rm_errorf(RM_EMISMATCH, "%s: another process gave the pool a new embedder: reopen the pool", p->dir);
    if (!rc && !p->emb && fp)
        rc = rm_errorf(RM_EMISMATCH, "%s: another process gave the pool an embedder: reopen the pool", p->dir);
    if (rc) return rc;
    pool_entry *old_ents = p->ents;
    int old_n = p->n, old_cap = p->cap;
    rm_index *old_ix = p->ix;
    rm_bm25_stats old_bm = p->bm;
    p->ents = NULL, p->n = p->cap = 0, p->ix = NULL;
    memset(&p->bm, 0, sizeof p->bm);
    if (p->emb) rc = rm_index_create(p->emb->dim, p->params.key_type, &p->ix);
    if (!rc && p->ix) rm_index_set_threads(p->ix, p->params.n_threads);
    if (!rc) rc = load_all(p);
    if (!rc && p->bm25_on) rc = rm_bm25_stats_init(&p->bm, p->params.rerank.bm25.feat.bits);
    if (!rc && p->bm25_on) rc = load_bm25(p);
    // The one to free: the old state on success, the new one on failure.
    pool_entry *drop_ents = rc ? p->ents : old_ents;
    int drop_n = rc ? p->n : old_n;
    rm_index *drop_ix = rc ? p->ix : old_ix;
    rm_bm25_stats drop_bm = rc ? p->bm : old_bm;
    if (rc) p->ents = old_ents, p->n = old_n, p->cap = old_cap, p->ix = old_ix, p->bm = old_bm;
    ents_free(drop_ents, drop_n);
    rm_index_free(drop_ix);
    rm_bm25_stats_free(&drop_bm);
    return rc;
}

// Applying the store's change log (pool_store.h) since the version this
// handle is in step with: adds load that adapter, removes drop it (and its
// document from the BM25 statistics), each at most once (this handle's own
// changes are in memory already). What cannot be applied so (a gap in the
// log, a new embedder, a document of other feature settings) asks for a
// reload (*reload); so does any failure, which may have left half a change.
typedef struct {
    rm_pool *p;
    int64_t next;
    int reload;
} catch_walk;

static int apply_change(void *u, const pool_change *c) {
    catch_walk *w = u;
    rm_pool *p = w->p;
    if (c->seq != w->next || c->op == POOL_NEW_EMBEDDER) return w->reload = 1;
    w->next++;
    int known = ent_find(p, c->id) >= 0, rc = RM_OK;
    rm_sparse doc = {0};
    if (c->op == POOL_ADDED && !known) {
        rc = load_some(p, c->id); // nothing when removed since (its remove follows)
        if (!rc && p->bm25_on && ent_find(p, c->id) >= 0) {
            rc = read_bm25_doc(p, c->id, &doc);
            if (!rc) rm_bm25_stats_update(&p->bm, &doc, +1);
        }
    } else if (c->op == POOL_REMOVED && known) {
        if (p->bm25_on && !(c->has_doc && c->feat == rm_bm25_feat_id(&p->params.rerank.bm25.feat)))
            return w->reload = 1;
        if (p->bm25_on) rc = rm_bm25_doc_unpack(c->doc, c->doc_bytes, p->params.rerank.bm25.feat.bits, &doc);
        if (!rc && p->bm25_on) rm_bm25_stats_update(&p->bm, &doc, -1);
        if (!rc) {
            ent_remove(p, c->id);
            if (p->ix) rm_index_remove(p->ix, c->id);
            rm_sampcache_drop(p->samples, c->id);
        }
    }
    rm_sparse_free(&doc);
    if (rc) w->reload = 1;
    return rc ? 1 : 0;
}

// Brings the memory state to the log's end; RM_OK with *upto the version
// reached, or *reload when a reload must do it.
static int pool_catch_up(rm_pool *p, int64_t *upto, int *reload) {
    catch_walk w = {p, p->data_version + 1, 0};
    int rc = p->st->ops->changes(p->st, p->data_version, apply_change, &w);
    *reload = w.reload || (rc && rc != RM_EUNAVAILABLE && rc != RM_ENOMEM);
    *upto = w.next - 1;
    return w.reload ? RM_OK : rc;
}

int rm_pool_refresh(rm_pool *p, int *changed) {
    int64_t v;
    int others = 0;
    if (changed) *changed = 0;
    p->last_check = rm_now();
    int rc = p->st->ops->version(p->st, p->data_version, &v, &others);
    if (rc) return rc;
    if (!others && !p->vanished) { // nothing, or only this handle's own changes
        p->data_version = v;
        return RM_OK;
    }
    if (p->st->ops->changes && !p->vanished && p->emb) {
        int reload = 0;
        int64_t upto;
        rc = pool_catch_up(p, &upto, &reload);
        if (rc && !reload) return rc;
        if (!reload) {
            p->data_version = upto;
            if (changed) *changed = 1;
            return RM_OK;
        }
    }
    // A reload reads statement by statement; an adapter another process
    // removes meanwhile makes it fail, and it is made again (at most twice).
    for (int tries = 0;
         (rc = pool_reload(p)) && tries < 2 && rc != RM_EMISMATCH && rc != RM_EUNAVAILABLE && rc != RM_ENOMEM;
         tries++) {}
    if (rc) return rc;
    p->data_version = v;
    p->vanished = 0;
    if (changed) *changed = 1;
    return RM_OK;
}

int rm_pool_refresh_if_changed(rm_pool *p, int *changed) {
    if (changed) *changed = 0;
    if (!p->vanished && rm_now() - p->last_check < 1.0) return RM_OK;
    return rm_pool_refresh(p, changed);
}

int rm_pool_wait_change(rm_pool *p, double seconds, int *notified) {
    *notified = 0;
    if (p->st->ops->wait) return p->st->ops->wait(p->st, seconds, notified);
    if (seconds > 0) usleep((useconds_t)(seconds * 1e6));
    return RM_OK;
}

// "pid N (program) on HOST": who adds an adapter, for conflict messages.
static void origin_text(char *buf, size_t cap) {
    char host[128] = "?";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    snprintf(buf, cap, "pid %d (%s) on %s", (int)getpid(), program_invocation_short_name, host);
}

// RM_EINVAL when the store already holds an adapter called name, saying
// which process added it and when.
static int name_conflict(rm_pool *p, const char *name) {
    char *origin = NULL;
    double created = 0;
    int rc = p->st->ops->owner(p->st, name, &origin, &created);
    if (rc == RM_ENOTFOUND) return RM_OK;
    if (!rc) {
        time_t t = (time_t)created;
        char when[32] = "?";
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        rc = rm_errorf(RM_EINVAL, "pool add: an adapter named '%s' exists (added by %s at %s)", name,
                       origin ? origin : "an earlier ramole", when);
    }
    free(origin);
    return rc;
}

// ---------------------------------------------------------------------------
// Add / remove

// The per-add limits: sample count, then the bytes of every text stored.
static int check_add_size(const rm_pool *p, const rm_adapter_info *info, const char *const *inputs,
                          const char *const *targets, int n) {
    if (p->params.max_samples > 0 && n > p->params.max_samples)
        return rm_errorf(RM_ETOOBIG, "pool add: %s: %d samples, over the limit of %d per adapter", info->name, n,
                         p->params.max_samples);
    if (!p->params.max_add_bytes) return RM_OK;
    const char *meta[6] = {info->name, info->task, info->domain, info->base_model, info->targets, info->weights};
    size_t bytes = 0;
    for (int i = 0; i < 6; i++) bytes += meta[i] ? strlen(meta[i]) : 0;
    for (int i = 0; i < n; i++) bytes += strlen(inputs[i]) + (targets && targets[i] ? strlen(targets[i]) : 0);
    if (bytes > p->params.max_add_bytes)
        return rm_errorf(RM_ETOOBIG,
                         "pool add: %s: %zu bytes of samples and metadata, over the limit of %zu per adapter",
                         info->name, bytes, p->params.max_add_bytes);
    return RM_OK;
}

// row: info with its weights absolute (row->weights malloc'd, or info's when
// none), so the pool works from any working directory.
static int insert_rows(rm_pool *p, const rm_adapter_info *info, rm_adapter_info *row, const char *const *inputs,
                       const char *const *targets, int n, int64_t *id) {
    *row = *info;
    if (info->weights && *info->weights && !(row->weights = rm_path_absolute(info->weights)))
        return rm_errorf(RM_ENOMEM, "pool: cannot make %s absolute", info->weights);
    char origin[200];
    origin_text(origin, sizeof origin);
    return p->st->ops->insert(p->st, row, inputs, targets, n, origin, (double)time(NULL), id);
}

int rm_pool_add(rm_pool *p, const rm_adapter_info *info, const char *const *inputs, const char *const *targets, int n,
                int64_t *id_out) {
    if (!info->name || !info->name[0]) return rm_errorf(RM_EINVAL, "pool add: the adapter needs a name");
    if (!p->emb) return rm_errorf(RM_EINVAL, "%s: the pool has no embedder yet (set one first)", p->dir);
    if (n < 1) return rm_errorf(RM_EINVAL, "pool add: %s: no sample inputs", info->name);
    for (int i = 0; i < n; i++)
        if (!inputs[i]) return rm_errorf(RM_EINVAL, "pool add: %s: sample %d has no input", info->name, i);
    int rc = check_add_size(p, info, inputs, targets, n);
    if (!rc) rc = rm_pool_refresh(p, NULL); // other processes' adds and removes first
    if (!rc) rc = name_conflict(p, info->name);
    if (rc) return rc;
    float *key = malloc((size_t)p->emb->dim * sizeof *key);
    if (!key) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    int64_t id = -1;
    rm_sparse doc = {0};
    rm_adapter_info row = *info;
    rc = rm_embedder_key(p->emb, inputs, n, key, p->params.n_threads); // before the transaction: keep it short
    if (!rc) rc = rm_bm25_doc(&p->params.rerank.bm25.feat, inputs, n, &doc);
    if (!rc) rc = p->st->ops->begin(p->st);
    if (!rc) {
        rc = name_conflict(p, info->name); // another process may have taken it since
        if (!rc) rc = insert_rows(p, info, &row, inputs, targets, n, &id);
        if (!rc) rc = p->st->ops->put_key(p->st, id, p->emb->name, p->fingerprint, p->emb->dim, key);
        if (!rc) rc = store_bm25_doc(p, id, &doc);
        if (!rc && g_test_hook) g_test_hook();
        if (rc) p->st->ops->rollback(p->st);
        else rc = p->st->ops->commit(p->st);
    }
    if (!rc) rc = ent_add(p, id, info->name, info->task, row.weights);
    if (!rc) rc = rm_index_add(p->ix, id, key);
    if (!rc && p->bm25_on) rm_bm25_stats_update(&p->bm, &doc, +1);
    if (row.weights != info->weights) free((char *)row.weights);
    rm_sparse_free(&doc);
    free(key);
    if (!rc && id_out) *id_out = id;
    return rc;
}

int rm_pool_remove(rm_pool *p, const char *name) {
    int rc0 = rm_pool_refresh(p, NULL); // it may be another process's adapter, or gone already
    if (rc0) return rc0;
    int64_t id = rm_pool_id(p, name);
    if (id < 0) return rm_errorf(RM_ENOTFOUND, "%s: no adapter named '%s'", p->dir, name);
    rm_sparse doc = {0}; // what the adapter adds to the BM25 statistics
    int rc = p->bm25_on ? read_bm25_doc(p, id, &doc) : RM_OK;
    if (rc == RM_ENOTFOUND) rc = rm_errorf(RM_EFORMAT, "%s: adapter '%s' has no BM25 document", p->db_path, name);
    if (!rc) rc = p->st->ops->remove(p->st, id);
    if (!rc && p->bm25_on) rm_bm25_stats_update(&p->bm, &doc, -1);
    rm_sparse_free(&doc);
    if (rc) return rc;
    ent_remove(p, id);
    if (p->ix) rm_index_remove(p->ix, id);
    rm_sampcache_drop(p->samples, id); // its embeddings are of no further use (ids are never reused)
    return RM_OK;
}

// ---------------------------------------------------------------------------
// Reading

void rm_pool_free_list(rm_adapter_info *list, int n) {
    if (!list) return;
    for (int i = 0; i < n; i++) {
        free((char *)list[i].name);
        free((char *)list[i].task);
        free((char *)list[i].domain);
        free((char *)list[i].base_model);
        free((char *)list[i].targets);
        free((char *)list[i].weights);
    }
    free(list);
}

int rm_pool_list(rm_pool *p, rm_adapter_info **out, int *n) { return p->st->ops->infos(p->st, NULL, out, n); }

int rm_pool_get(rm_pool *p, const char *name, rm_adapter_info **info, char ***inputs) {
    int n, rc = p->st->ops->infos(p->st, name, info, &n);
    if (rc) return rc;
    if (n == 0) {
        rm_pool_free_list(*info, 0);
        *info = NULL;
        return rm_errorf(RM_ENOTFOUND, "%s: no adapter named '%s'", p->dir, name);
    }
    if (inputs) {
        int m;
        *inputs = sample_inputs(p, (*info)->id, &m, &rc);
        if (rc) {
            rm_pool_free_list(*info, 1);
            *info = NULL;
        }
    }
    return rc;
}

// ---------------------------------------------------------------------------
// Search and checks

// The second stage for query q over h[nh] (rerank.h): the candidates'
// samples are read from the database and embedded, and their BM25 documents
// read, the first time they are candidates (kept in p->samples).
static int pool_rerank(rm_pool *p, const char *query, const float *q, rm_hit *h, int nh) {
    const rm_rerank_params *rr = &p->params.rerank;
    int k = rr->k < nh ? rr->k : nh, dim = p->emb->dim;
    if (k <= 0) return RM_OK;
    float *term = malloc((size_t)k * sizeof *term), *bterm = malloc((size_t)k * sizeof *bterm);
    float *emb = NULL;
    rm_sparse bq = {0}, doc = {0};
    int cap = 0, rc = term && bterm ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc && p->bm25_on) rc = rm_bm25_query(&rr->bm25.feat, query, &bq);
    for (int c = 0; c < k && !rc; c++) {
        int n = 0;
        rm_samples_view sv;
        if (!rm_sampcache_get(p->samples, h[c].id,
                              &sv)) { // embed the samples once; later queries only take dot products
            char **in = sample_inputs(p, h[c].id, &n, &rc);
            if (rc == RM_EFORMAT && n == 0) p->vanished = 1; // removed by another process since the last refresh?
            if (!rc && n > cap) {
                float *ne = realloc(emb, (size_t)n * (size_t)dim * sizeof *ne);
                if (!ne) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
                else {
                    emb = ne;
                    cap = n;
                }
            }
            if (!rc && n > 0) rc = rm_embedder_embed_many(p->emb, (const char *const *)in, n, emb, p->params.n_threads);
            if (!rc && p->bm25_on) { // and its BM25 document, read once too
                rc = read_bm25_doc(p, h[c].id, &doc);
                if (rc == RM_ENOTFOUND)
                    rc = rm_errorf(RM_EFORMAT, "%s: adapter %lld has no BM25 document", p->db_path, (long long)h[c].id);
            }
            if (!rc) rc = rm_sampcache_put(p->samples, h[c].id, emb, n, dim, p->bm25_on ? &doc : NULL, &sv);
            rm_pool_free_strs(in, n);
        }
        if (!rc) term[c] = sv.s ? rm_rerank_term_sparse(rr, q, sv.s, sv.n) : rm_rerank_term(rr, dim, q, sv.d, sv.n, -1);
        if (!rc && p->bm25_on) bterm[c] = rm_bm25_score(&rr->bm25, &p->bm, &bq, sv.doc);
    }
    if (!rc) {
        rm_rerank_params r2 = *rr;
        r2.k = k;
        rm_rerank_apply(&r2, h, nh, term, p->bm25_on ? bterm : NULL);
    }
    rm_sparse_free(&bq);
    rm_sparse_free(&doc);
    free(term);
    free(bterm);
    free(emb);
    return rc;
}

// A search works from memory while the store cannot be reached (a
// PostgreSQL server restarting): it answers from what was last seen.
static int pool_refresh_for_search(rm_pool *p) {
    int rc = rm_pool_refresh_if_changed(p, NULL);
    return rc == RM_EUNAVAILABLE ? RM_OK : rc;
}

static int search_batch_once(rm_pool *p, const char *const *queries, int nq, int k, rm_hit *out, int *n_out) {
    int k2 = k > p->params.rerank.k ? k : p->params.rerank.k; // the second stage needs its k candidates
    float *q = malloc((size_t)(nq > 0 ? nq : 1) * (size_t)p->emb->dim * sizeof *q);
    rm_hit *h = k2 > k ? malloc((size_t)(nq > 0 ? nq : 1) * (size_t)k2 * sizeof *h) : out;
    int rc = q && h ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc) rc = rm_embedder_embed_many(p->emb, queries, nq, q, p->params.n_threads);
    if (!rc) rc = rm_index_search_batch(p->ix, q, nq, k2, NULL, NULL, h, n_out);
    for (int i = 0; i < nq && !rc; i++) {
        rc = pool_rerank(p, queries[i], q + (size_t)i * (size_t)p->emb->dim, h + (size_t)i * (size_t)k2, n_out[i]);
        if (n_out[i] > k) n_out[i] = k;
        if (h != out) memcpy(out + (size_t)i * (size_t)k, h + (size_t)i * (size_t)k2, (size_t)n_out[i] * sizeof *h);
    }
    if (h != out) free(h);
    free(q);
    return rc;
}

int rm_pool_search_batch(rm_pool *p, const char *const *queries, int nq, int k, rm_hit *out, int *n_out) {
    if (!p->emb) return rm_errorf(RM_EINVAL, "%s: the pool has no embedder", p->dir);
    int rc = pool_refresh_for_search(p);
    if (!rc) rc = search_batch_once(p, queries, nq, k, out, n_out);
    if (rc && p->vanished && !rm_pool_refresh(p, NULL)) rc = search_batch_once(p, queries, nq, k, out, n_out);
    return rc;
}

// rm_pool_search, with the second stage when rerank (else the key search
// alone); once again after a refresh when a candidate was removed meanwhile.
static int search_once(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, int rerank,
                       rm_hit *out, int *n_out);

static int pool_search(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, int rerank,
                       rm_hit *out, int *n_out) {
    if (!p->emb) return rm_errorf(RM_EINVAL, "%s: the pool has no embedder", p->dir);
    int rc = pool_refresh_for_search(p);
    if (!rc) rc = search_once(p, query, k, exclude, n_exclude, rerank, out, n_out);
    if (rc && p->vanished && !rm_pool_refresh(p, NULL))
        rc = search_once(p, query, k, exclude, n_exclude, rerank, out, n_out);
    // the second stage reads candidates' samples from the store: while it
    // cannot be reached, the keys alone rank
    if (rc == RM_EUNAVAILABLE && rerank) rc = search_once(p, query, k, exclude, n_exclude, 0, out, n_out);
    return rc;
}

static int search_once(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, int rerank,
                       rm_hit *out, int *n_out) {
    int k2 = rerank && k < p->params.rerank.k ? p->params.rerank.k : k; // the second stage needs its k candidates
    float *q = malloc((size_t)p->emb->dim * sizeof *q);
    int64_t *ex = malloc((size_t)(n_exclude > 0 ? n_exclude : 1) * sizeof *ex);
    rm_hit *h = k2 > k ? malloc((size_t)k2 * sizeof *h) : out;
    int n_ex = 0, rc = q && ex && h ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
    for (int i = 0; i < n_exclude && !rc; i++) {
        int64_t id = rm_pool_id(p, exclude[i]);
        if (id >= 0) ex[n_ex++] = id; // unknown names exclude nothing
    }
    if (!rc) rc = rm_embedder_embed(p->emb, query, q);
    if (!rc) rc = rm_index_search(p->ix, q, k2, ex, n_ex, h, n_out);
    if (!rc && rerank) rc = pool_rerank(p, query, q, h, *n_out);
    if (!rc && *n_out > k) *n_out = k;
    if (!rc && h != out) memcpy(out, h, (size_t)*n_out * sizeof *h);
    if (h != out) free(h);
    free(q);
    free(ex);
    return rc;
}

int rm_pool_search(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, rm_hit *out,
                   int *n_out) {
    return pool_search(p, query, k, exclude, n_exclude, 1, out, n_out);
}

int rm_pool_search_keys(rm_pool *p, const char *query, int k, const char *const *exclude, int n_exclude, rm_hit *out,
                        int *n_out) {
    return pool_search(p, query, k, exclude, n_exclude, 0, out, n_out);
}

typedef struct {
    rm_pool *p;
    int n;
} check_walk;

static int check_row(void *u, const char *name, int n_samples, int has_key, int64_t fp) {
    check_walk *w = u;
    w->n++;
    if (n_samples < 1) return rm_errorf(RM_EFORMAT, "%s: adapter '%s' has no samples", w->p->db_path, name);
    if (w->p->emb && (!has_key || fp != w->p->fingerprint))
        return rm_errorf(RM_EFORMAT, "%s: adapter '%s' has no key of the current embedder", w->p->db_path, name);
    return RM_OK;
}

int rm_pool_check(rm_pool *p) {
    check_walk w = {p, 0};
    int rc = p->st->ops->check(p->st, check_row, &w), n = w.n;
    if (!rc && n != p->n) rc = rm_errorf(RM_EFORMAT, "%s: %d adapters on disk, %d in memory", p->db_path, n, p->n);
    if (!rc && p->bm25_on && p->bm.n_docs != p->n)
        rc = rm_errorf(RM_EFORMAT, "%s: %lld BM25 documents counted for %d adapters", p->db_path,
                       (long long)p->bm.n_docs, p->n);
    if (!rc && p->ix && (int)rm_index_size(p->ix) != p->n)
        rc = rm_errorf(RM_EFORMAT, "%s: %zu keys indexed for %d adapters", p->db_path, rm_index_size(p->ix), p->n);
    return rc;
}
