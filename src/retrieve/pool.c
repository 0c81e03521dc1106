// pool.c — see pool.h.
//
// Schema (pool.db):
//   meta(key TEXT PRIMARY KEY, value TEXT)          format version
//   adapters(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
//            task, domain, base_model, rank, targets, weights, created REAL)
//   samples(adapter_id, idx, input TEXT NOT NULL, target TEXT)
//   keys(adapter_id INTEGER PRIMARY KEY, embedder TEXT, fingerprint INTEGER,
//        dim INTEGER, vec BLOB)                      f32 little-endian
//   bm25docs(adapter_id INTEGER PRIMARY KEY, feat INTEGER, doc BLOB)
//                                                    the adapter's BM25 document
//                                                    (bm25.h; feat: rm_bm25_feat_id)
// adapters.origin (added to older pools on open): "pid N (program) on HOST"
// of the process that added it, for name-conflict messages.
//
// Other processes: PRAGMA data_version changes when another connection
// commits; the in-memory state (entries, index, BM25 statistics) is then
// reloaded from the database (rm_pool_refresh).
#define _GNU_SOURCE
#include "retrieve/pool.h"
#include "retrieve/sampcache.h"
#include "base/err.h"
#include "base/file.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define POOL_FORMAT "1"

typedef struct { int64_t id; char *name; } pool_entry;

struct rm_pool {
    char *dir, *db_path, *emb_path;
    sqlite3 *db;
    rm_pool_params params;
    rm_embedder *emb;
    int64_t fingerprint;    // of embedder.bin (its checksum)
    rm_index *ix;
    pool_entry *ents;       // sorted by id
    int n, cap;
    int bm25_on;            // the second stage has a BM25 term: bm holds the
    rm_bm25_stats bm;       //   statistics of every adapter's document
    rm_sampcache *samples;  // the second stage's sample embeddings, by adapter id
    int64_t data_version;   // PRAGMA data_version when the memory state was last in step
    double last_check;      // rm_now() of the last data_version check
    int vanished;           // a search met an adapter another process removed
};

static void (*g_test_hook)(void);
void rm_pool_set_test_hook(void (*hook)(void)) { g_test_hook = hook; }

rm_pool_params rm_pool_default_params(void) {
    return (rm_pool_params){.key_type = RM_KEY_F32, .n_threads = 1, .rerank = rm_rerank_default_params(),
                            .sample_cache_bytes = (size_t)256 << 20, .max_samples = RM_POOL_MAX_SAMPLES,
                            .max_add_bytes = RM_POOL_MAX_ADD_BYTES};
}

static int db_fail(rm_pool *p, const char *what) {
    return rm_errorf(RM_EIO, "%s: %s: %s", p->db_path, what, sqlite3_errmsg(p->db));
}

static int db_exec(rm_pool *p, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(p->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = rm_errorf(RM_EIO, "%s: %s: %s", p->db_path, sql, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return RM_OK;
}

static int db_prepare(rm_pool *p, const char *sql, sqlite3_stmt **st) {
    if (sqlite3_prepare_v2(p->db, sql, -1, st, NULL) != SQLITE_OK) return db_fail(p, "prepare");
    return RM_OK;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
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

static int ent_add(rm_pool *p, int64_t id, const char *name) {
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        pool_entry *e = realloc(p->ents, (size_t)cap * sizeof *e);
        if (!e) return rm_errorf(RM_ENOMEM, "pool: out of memory");
        p->ents = e;
        p->cap = cap;
    }
    char *nm = strdup(name);
    if (!nm) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    int at = p->n;
    while (at > 0 && p->ents[at - 1].id > id) at--;
    memmove(p->ents + at + 1, p->ents + at, (size_t)(p->n - at) * sizeof *p->ents);
    p->ents[at] = (pool_entry){id, nm};
    p->n++;
    return RM_OK;
}

static void ent_remove(rm_pool *p, int64_t id) {
    int at = ent_find(p, id);
    if (at < 0) return;
    free(p->ents[at].name);
    memmove(p->ents + at, p->ents + at + 1, (size_t)(p->n - at - 1) * sizeof *p->ents);
    p->n--;
}

const char *rm_pool_name(const rm_pool *p, int64_t id) {
    int at = ent_find(p, id);
    return at < 0 ? NULL : p->ents[at].name;
}

int64_t rm_pool_id(const rm_pool *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->ents[i].name, name)) return p->ents[i].id;
    return -1;
}

int rm_pool_size(const rm_pool *p) { return p->n; }
const rm_embedder *rm_pool_embedder(const rm_pool *p) { return p->emb; }

// ---------------------------------------------------------------------------
// Keys

static char **sample_inputs(rm_pool *p, int64_t id, int *n, int *rc);

// Makes adapter id's key from its stored samples and writes it (no transaction
// of its own; the caller's or autocommit).
static int store_key(rm_pool *p, int64_t id, const float *key) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "INSERT OR REPLACE INTO keys(adapter_id, embedder, fingerprint, dim, vec) VALUES(?,?,?,?,?)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, p->emb->name);
    sqlite3_bind_int64(st, 3, p->fingerprint);
    sqlite3_bind_int(st, 4, p->emb->dim);
    sqlite3_bind_blob(st, 5, key, (int)((size_t)p->emb->dim * sizeof(float)), SQLITE_TRANSIENT);
    rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(p, "writing a key");
    sqlite3_finalize(st);
    return rc;
}

static int rekey(rm_pool *p, int64_t id, float *key) {
    int n, rc;
    char **in = sample_inputs(p, id, &n, &rc);
    if (rc) return rc;
    rc = rm_embedder_key(p->emb, (const char *const *)in, n, key, p->params.n_threads);
    rm_pool_free_strs(in, n);
    if (!rc) rc = store_key(p, id, key);
    if (!rc) rc = rm_index_add(p->ix, id, key);
    return rc;
}

// Loads entries and keys; re-keys those of another embedder (one transaction).
static int load_all(rm_pool *p) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "SELECT a.id, a.name, k.fingerprint, k.dim, k.vec FROM adapters a LEFT JOIN keys k ON k.adapter_id = a.id ORDER BY a.id", &st);
    if (rc) return rc;
    int64_t *stale = NULL;
    int n_stale = 0, s;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        const char *name = (const char *)sqlite3_column_text(st, 1);
        rc = ent_add(p, id, name ? name : "");
        if (rc || !p->emb) continue;
        int ok = sqlite3_column_type(st, 2) != SQLITE_NULL && sqlite3_column_int64(st, 2) == p->fingerprint &&
                 sqlite3_column_int(st, 3) == p->emb->dim &&
                 sqlite3_column_bytes(st, 4) == (int)((size_t)p->emb->dim * sizeof(float));
        if (ok) {
            float *key = malloc((size_t)p->emb->dim * sizeof *key);
            if (!key) { rc = rm_errorf(RM_ENOMEM, "pool: out of memory"); break; }
            memcpy(key, sqlite3_column_blob(st, 4), (size_t)p->emb->dim * sizeof *key);
            rc = rm_index_add(p->ix, id, key);
            free(key);
        } else {
            int64_t *ns = realloc(stale, (size_t)(n_stale + 1) * sizeof *ns);
            if (!ns) { rc = rm_errorf(RM_ENOMEM, "pool: out of memory"); break; }
            stale = ns;
            stale[n_stale++] = id;
        }
    }
    if (!rc && s != SQLITE_DONE) rc = db_fail(p, "reading adapters");
    sqlite3_finalize(st);
    if (!rc && n_stale) {
        float *key = malloc((size_t)p->emb->dim * sizeof *key);
        rc = key ? db_exec(p, "BEGIN IMMEDIATE") : rm_errorf(RM_ENOMEM, "pool: out of memory");
        for (int i = 0; i < n_stale && !rc; i++) rc = rekey(p, stale[i], key);
        if (key) rc = rc ? (db_exec(p, "ROLLBACK"), rc) : db_exec(p, "COMMIT");
        free(key);
    }
    free(stale);
    return rc;
}

// ---------------------------------------------------------------------------
// BM25 documents

// Writes adapter id's BM25 document (no transaction of its own).
static int store_bm25_doc(rm_pool *p, int64_t id, const rm_sparse *doc) {
    const rm_feat_params *fp = &p->params.rerank.bm25.feat;
    void *blob = malloc(rm_bm25_doc_bytes(doc));
    int rc = blob ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
    sqlite3_stmt *st = NULL;
    if (!rc) rc = db_prepare(p, "INSERT OR REPLACE INTO bm25docs(adapter_id, feat, doc) VALUES(?,?,?)", &st);
    if (!rc) {
        rm_bm25_doc_pack(doc, blob);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, rm_bm25_feat_id(fp));
        sqlite3_bind_blob(st, 3, blob, (int)rm_bm25_doc_bytes(doc), SQLITE_TRANSIENT);
        rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(p, "writing a BM25 document");
    }
    sqlite3_finalize(st);
    free(blob);
    return rc;
}

// Adapter id's stored BM25 document (RM_ENOTFOUND when it has none of the
// current feature parameters).
static int read_bm25_doc(rm_pool *p, int64_t id, rm_sparse *doc) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "SELECT feat, doc FROM bm25docs WHERE adapter_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW && sqlite3_column_int64(st, 0) == rm_bm25_feat_id(&p->params.rerank.bm25.feat))
        rc = rm_bm25_doc_unpack(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
                                p->params.rerank.bm25.feat.bits, doc);
    else if (s == SQLITE_ROW || s == SQLITE_DONE)
        rc = RM_ENOTFOUND;
    else
        rc = db_fail(p, "reading a BM25 document");
    sqlite3_finalize(st);
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
            rc = in_tx ? RM_OK : db_exec(p, "BEGIN IMMEDIATE");
            in_tx = 1;
            char **in = rc ? NULL : sample_inputs(p, p->ents[i].id, &n, &rc);
            if (!rc) rc = rm_bm25_doc(&p->params.rerank.bm25.feat, (const char *const *)in, n, &doc);
            if (!rc) rc = store_bm25_doc(p, p->ents[i].id, &doc);
            rm_pool_free_strs(in, n);
        }
        if (!rc) rm_bm25_stats_update(&p->bm, &doc, +1);
    }
    if (in_tx) rc = rc ? (db_exec(p, "ROLLBACK"), rc) : db_exec(p, "COMMIT");
    rm_sparse_free(&doc);
    return rc;
}

// ---------------------------------------------------------------------------
// Open / close

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, file);
    return s;
}

// Pools made before the origin column get it (NULL for their adapters).
static int add_origin_column(rm_pool *p) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(p->db, "SELECT origin FROM adapters LIMIT 0", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_finalize(st);
        return RM_OK;
    }
    sqlite3_finalize(st);
    return db_exec(p, "ALTER TABLE adapters ADD COLUMN origin TEXT");
}

static int read_data_version(rm_pool *p, int64_t *v) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "PRAGMA data_version", &st);
    if (rc) return rc;
    rc = sqlite3_step(st) == SQLITE_ROW ? RM_OK : db_fail(p, "reading data_version");
    if (!rc) *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc;
}

static int load_embedder(rm_pool *p) {
    if (!rm_file_exists(p->emb_path)) return RM_OK;
    rm_mmap m;
    int rc = rm_mmap_open(&m, p->emb_path);
    if (rc) return rc;
    rc = rm_embedder_from_bytes(m.data, m.size, p->emb_path, &p->emb);
    if (!rc) memcpy(&p->fingerprint, m.data + m.size - 8, 8); // the file's checksum
    rm_mmap_close(&m);
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
    int rc0 = rm_bm25_check(&p->params.rerank.bm25);
    if (!rc0 && !(p->samples = rm_sampcache_new(p->params.sample_cache_bytes))) rc0 = rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc0 && p->bm25_on) rc0 = rm_bm25_stats_init(&p->bm, p->params.rerank.bm25.feat.bits);
    if (rc0) { free(p); return rc0; }
    p->dir = strdup(dir);
    p->db_path = join(dir, "pool.db");
    p->emb_path = join(dir, "embedder.bin");
    int rc = p->dir && p->db_path && p->emb_path ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc && !rm_is_dir(dir)) rc = rm_mkdirs(dir);
    if (!rc && sqlite3_open_v2(p->db_path, &p->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        rc = rm_errorf(RM_EIO, "%s: cannot open: %s", p->db_path, p->db ? sqlite3_errmsg(p->db) : "out of memory");
    if (!rc) sqlite3_busy_timeout(p->db, 10000);
    if (!rc) rc = db_exec(p, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
    if (!rc)
        rc = db_exec(p,
                     "BEGIN IMMEDIATE;"
                     "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
                     "INSERT OR IGNORE INTO meta(key, value) VALUES('format', '" POOL_FORMAT "');"
                     "CREATE TABLE IF NOT EXISTS adapters(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,"
                     " task TEXT, domain TEXT, base_model TEXT, rank INTEGER, targets TEXT, weights TEXT, created REAL);"
                     "CREATE TABLE IF NOT EXISTS samples(adapter_id INTEGER NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,"
                     " idx INTEGER NOT NULL, input TEXT NOT NULL, target TEXT, PRIMARY KEY(adapter_id, idx));"
                     "CREATE TABLE IF NOT EXISTS keys(adapter_id INTEGER PRIMARY KEY REFERENCES adapters(id) ON DELETE CASCADE,"
                     " embedder TEXT, fingerprint INTEGER, dim INTEGER, vec BLOB);"
                     "CREATE TABLE IF NOT EXISTS bm25docs(adapter_id INTEGER PRIMARY KEY REFERENCES adapters(id) ON DELETE CASCADE,"
                     " feat INTEGER, doc BLOB);"
                     "COMMIT;");
    if (!rc) {
        sqlite3_stmt *st;
        rc = db_prepare(p, "SELECT value FROM meta WHERE key = 'format'", &st);
        if (!rc && sqlite3_step(st) == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            if (!v || strcmp(v, POOL_FORMAT)) rc = rm_errorf(RM_EUNSUPPORTED, "%s: pool format '%s' (want " POOL_FORMAT ")", p->db_path, v ? v : "?");
        }
        if (!rc || st) sqlite3_finalize(st);
    }
    if (!rc) rc = add_origin_column(p);
    if (!rc) rc = read_data_version(p, &p->data_version);
    if (!rc) rc = load_embedder(p);
    if (!rc) rc = load_all(p);
    if (!rc && p->bm25_on) rc = load_bm25(p);
    if (rc) { rm_pool_close(p); return rc; }
    p->last_check = rm_now();
    *out = p;
    return RM_OK;
}

void rm_pool_close(rm_pool *p) {
    if (!p) return;
    if (p->db) sqlite3_close(p->db);
    rm_bm25_stats_free(&p->bm);
    rm_sampcache_free(p->samples);
    rm_index_free(p->ix);
    rm_embedder_free(p->emb);
    for (int i = 0; i < p->n; i++) free(p->ents[i].name);
    free(p->ents);
    free(p->dir);
    free(p->db_path);
    free(p->emb_path);
    free(p);
}

int rm_pool_set_embedder(rm_pool *p, rm_embedder *e) {
    rm_bytes b = {0};
    int rc = rm_embedder_to_bytes(e, &b);
    if (!rc) rc = rm_write_file_atomic(p->emb_path, b.p, b.n);
    rm_index *ix = NULL;
    if (!rc) rc = rm_index_create(e->dim, p->params.key_type, &ix);
    if (rc) { rm_bytes_free(&b); rm_embedder_free(e); return rc; }
    rm_index_set_threads(ix, p->params.n_threads);
    memcpy(&p->fingerprint, b.p + b.n - 8, 8);
    rm_bytes_free(&b);
    rm_embedder_free(p->emb);
    rm_index_free(p->ix);
    rm_sampcache_clear(p->samples); // embeddings of the old embedder
    p->emb = e;
    p->ix = ix;
    // re-key everything (load_all finds every key stale now)
    for (int i = 0; i < p->n; i++) free(p->ents[i].name);
    p->n = 0;
    return load_all(p);
}

// ---------------------------------------------------------------------------
// Changes by other processes

// The checksum embedder.bin ends with (0 when there is none).
static int read_fingerprint(rm_pool *p, int64_t *fp) {
    *fp = 0;
    if (!rm_file_exists(p->emb_path)) return RM_OK;
    int fd;
    size_t size;
    int rc = rm_open_regular(p->emb_path, &fd, &size);
    if (rc) return rc;
    if (size < 8 || pread(fd, fp, 8, (off_t)(size - 8)) != 8) rc = rm_errorf(RM_EIO, "%s: cannot read its checksum", p->emb_path);
    close(fd);
    return rc;
}

// Rebuilds entries, index and BM25 statistics from the database; on failure
// the previous state is kept.
static int pool_reload(rm_pool *p) {
    int64_t fp;
    int rc = read_fingerprint(p, &fp);
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
    for (int i = 0; i < drop_n; i++) free(drop_ents[i].name);
    free(drop_ents);
    rm_index_free(drop_ix);
    rm_bm25_stats_free(&drop_bm);
    return rc;
}

int rm_pool_refresh(rm_pool *p, int *changed) {
    int64_t v;
    if (changed) *changed = 0;
    p->last_check = rm_now();
    int rc = read_data_version(p, &v);
    if (rc || (v == p->data_version && !p->vanished)) return rc;
    if ((rc = pool_reload(p))) return rc;
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

// "pid N (program) on HOST": who adds an adapter, for conflict messages.
static void origin_text(char *buf, size_t cap) {
    char host[128] = "?";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    snprintf(buf, cap, "pid %d (%s) on %s", (int)getpid(), program_invocation_short_name, host);
}

// RM_EINVAL when the database already holds an adapter called name, saying
// which process added it and when.
static int name_conflict(rm_pool *p, const char *name) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "SELECT origin, created FROM adapters WHERE name = ?", &st);
    if (rc) return rc;
    bind_text(st, 1, name);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        const char *origin = (const char *)sqlite3_column_text(st, 0);
        time_t t = (time_t)sqlite3_column_double(st, 1);
        char when[32] = "?";
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        rc = rm_errorf(RM_EINVAL, "pool add: an adapter named '%s' exists (added by %s at %s)", name,
                       origin ? origin : "an earlier ramole", when);
    } else if (s != SQLITE_DONE) {
        rc = db_fail(p, "looking up a name");
    }
    sqlite3_finalize(st);
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
        return rm_errorf(RM_ETOOBIG, "pool add: %s: %zu bytes of samples and metadata, over the limit of %zu per adapter",
                         info->name, bytes, p->params.max_add_bytes);
    return RM_OK;
}

static int insert_rows(rm_pool *p, const rm_adapter_info *info, const char *const *inputs, const char *const *targets,
                       int n, int64_t *id) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "INSERT INTO adapters(name, task, domain, base_model, rank, targets, weights, created, origin) VALUES(?,?,?,?,?,?,?,?,?)", &st);
    if (rc) return rc;
    bind_text(st, 1, info->name);
    bind_text(st, 2, info->task);
    bind_text(st, 3, info->domain);
    bind_text(st, 4, info->base_model);
    sqlite3_bind_int(st, 5, info->rank);
    bind_text(st, 6, info->targets);
    // weights are stored absolute, so the pool works from any working directory
    char *weights = info->weights && *info->weights ? rm_path_absolute(info->weights) : NULL;
    if (info->weights && *info->weights && !weights) {
        sqlite3_finalize(st);
        return rm_errorf(RM_ENOMEM, "pool: cannot make %s absolute", info->weights);
    }
    bind_text(st, 7, weights ? weights : info->weights);
    sqlite3_bind_double(st, 8, (double)time(NULL));
    char origin[200];
    origin_text(origin, sizeof origin);
    bind_text(st, 9, origin);
    rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(p, "adding an adapter");
    sqlite3_finalize(st);
    free(weights);
    if (rc) return rc;
    *id = sqlite3_last_insert_rowid(p->db);
    if ((rc = db_prepare(p, "INSERT INTO samples(adapter_id, idx, input, target) VALUES(?,?,?,?)", &st))) return rc;
    for (int i = 0; i < n && !rc; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, *id);
        sqlite3_bind_int(st, 2, i);
        bind_text(st, 3, inputs[i]);
        bind_text(st, 4, targets ? targets[i] : NULL);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(p, "adding a sample");
    }
    sqlite3_finalize(st);
    return rc;
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
    rc = rm_embedder_key(p->emb, inputs, n, key, p->params.n_threads); // before the transaction: keep it short
    if (!rc) rc = rm_bm25_doc(&p->params.rerank.bm25.feat, inputs, n, &doc);
    if (!rc) rc = db_exec(p, "BEGIN IMMEDIATE");
    if (!rc) {
        rc = name_conflict(p, info->name); // another process may have taken it since
        if (!rc) rc = insert_rows(p, info, inputs, targets, n, &id);
        if (!rc) rc = store_key(p, id, key);
        if (!rc) rc = store_bm25_doc(p, id, &doc);
        if (!rc && g_test_hook) g_test_hook();
        if (rc) db_exec(p, "ROLLBACK");
        else rc = db_exec(p, "COMMIT");
    }
    if (!rc) rc = ent_add(p, id, info->name);
    if (!rc) rc = rm_index_add(p->ix, id, key);
    if (!rc && p->bm25_on) rm_bm25_stats_update(&p->bm, &doc, +1);
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
    sqlite3_stmt *st = NULL;
    if (!rc) rc = db_prepare(p, "DELETE FROM adapters WHERE id = ?", &st); // samples, key and document cascade
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(p, "removing an adapter");
    }
    sqlite3_finalize(st);
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

static char *col_dup(sqlite3_stmt *st, int i) {
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? strdup(s) : NULL;
}

void rm_pool_free_strs(char **s, int n) {
    if (!s) return;
    for (int i = 0; i < n; i++) free(s[i]);
    free(s);
}

static char **sample_inputs(rm_pool *p, int64_t id, int *n, int *rc) {
    sqlite3_stmt *st;
    *n = 0;
    if ((*rc = db_prepare(p, "SELECT input FROM samples WHERE adapter_id = ? ORDER BY idx", &st))) return NULL;
    sqlite3_bind_int64(st, 1, id);
    char **v = NULL;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        char **nv = realloc(v, (size_t)(*n + 1) * sizeof *nv);
        char *str = nv ? col_dup(st, 0) : NULL;
        if (nv) v = nv;
        if (!str) { *rc = rm_errorf(RM_ENOMEM, "pool: out of memory"); break; }
        v[(*n)++] = str;
    }
    if (!*rc && s != SQLITE_DONE) *rc = db_fail(p, "reading samples");
    if (!*rc && *n == 0) *rc = rm_errorf(RM_EFORMAT, "%s: adapter %lld has no samples", p->db_path, (long long)id);
    sqlite3_finalize(st);
    if (*rc) { rm_pool_free_strs(v, *n); *n = 0; return NULL; }
    return v;
}

#define INFO_SQL "SELECT a.id, a.name, a.task, a.domain, a.base_model, a.rank, a.targets, a.weights," \
                 " (SELECT COUNT(*) FROM samples s WHERE s.adapter_id = a.id) FROM adapters a"

static void info_from_row(sqlite3_stmt *st, rm_adapter_info *a) {
    a->id = sqlite3_column_int64(st, 0);
    a->name = col_dup(st, 1);
    a->task = col_dup(st, 2);
    a->domain = col_dup(st, 3);
    a->base_model = col_dup(st, 4);
    a->rank = sqlite3_column_int(st, 5);
    a->targets = col_dup(st, 6);
    a->weights = col_dup(st, 7);
    a->n_samples = sqlite3_column_int(st, 8);
}

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

static int query_infos(rm_pool *p, const char *sql, const char *name, rm_adapter_info **out, int *n) {
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = db_prepare(p, sql, &st);
    if (rc) return rc;
    if (name) bind_text(st, 1, name);
    rm_adapter_info *v = NULL;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        rm_adapter_info *nv = realloc(v, (size_t)(*n + 1) * sizeof *nv);
        if (!nv) { rc = rm_errorf(RM_ENOMEM, "pool: out of memory"); break; }
        v = nv;
        memset(&v[*n], 0, sizeof v[*n]);
        info_from_row(st, &v[(*n)++]);
    }
    if (!rc && s != SQLITE_DONE) rc = db_fail(p, "reading adapters");
    sqlite3_finalize(st);
    if (rc) { rm_pool_free_list(v, *n); *n = 0; return rc; }
    *out = v;
    return RM_OK;
}

int rm_pool_list(rm_pool *p, rm_adapter_info **out, int *n) { return query_infos(p, INFO_SQL " ORDER BY a.id", NULL, out, n); }

int rm_pool_get(rm_pool *p, const char *name, rm_adapter_info **info, char ***inputs) {
    int n, rc = query_infos(p, INFO_SQL " WHERE a.name = ?", name, info, &n);
    if (rc) return rc;
    if (n == 0) { rm_pool_free_list(*info, 0); *info = NULL; return rm_errorf(RM_ENOTFOUND, "%s: no adapter named '%s'", p->dir, name); }
    if (inputs) {
        int m;
        *inputs = sample_inputs(p, (*info)->id, &m, &rc);
        if (rc) { rm_pool_free_list(*info, 1); *info = NULL; }
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
        if (!rm_sampcache_get(p->samples, h[c].id, &sv)) { // embed the samples once; later queries only take dot products
            char **in = sample_inputs(p, h[c].id, &n, &rc);
            if (rc == RM_EFORMAT && n == 0) p->vanished = 1; // removed by another process since the last refresh?
            if (!rc && n > cap) {
                float *ne = realloc(emb, (size_t)n * (size_t)dim * sizeof *ne);
                if (!ne) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
                else { emb = ne; cap = n; }
            }
            if (!rc && n > 0) rc = rm_embedder_embed_many(p->emb, (const char *const *)in, n, emb, p->params.n_threads);
            if (!rc && p->bm25_on) { // and its BM25 document, read once too
                rc = read_bm25_doc(p, h[c].id, &doc);
                if (rc == RM_ENOTFOUND) rc = rm_errorf(RM_EFORMAT, "%s: adapter %lld has no BM25 document", p->db_path, (long long)h[c].id);
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
    int rc = rm_pool_refresh_if_changed(p, NULL);
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
    int rc = rm_pool_refresh_if_changed(p, NULL);
    if (!rc) rc = search_once(p, query, k, exclude, n_exclude, rerank, out, n_out);
    if (rc && p->vanished && !rm_pool_refresh(p, NULL)) rc = search_once(p, query, k, exclude, n_exclude, rerank, out, n_out);
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

int rm_pool_check(rm_pool *p) {
    sqlite3_stmt *st;
    int rc = db_prepare(p, "PRAGMA integrity_check", &st);
    if (rc) return rc;
    if (sqlite3_step(st) != SQLITE_ROW) rc = db_fail(p, "integrity check");
    else {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (!v || strcmp(v, "ok")) rc = rm_errorf(RM_EFORMAT, "%s: integrity check: %s", p->db_path, v ? v : "?");
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    rc = db_prepare(p, "SELECT a.name, (SELECT COUNT(*) FROM samples s WHERE s.adapter_id = a.id), k.fingerprint"
                       " FROM adapters a LEFT JOIN keys k ON k.adapter_id = a.id", &st);
    if (rc) return rc;
    int n = 0;
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        n++;
        if (sqlite3_column_int(st, 1) < 1) rc = rm_errorf(RM_EFORMAT, "%s: adapter '%s' has no samples", p->db_path, name);
        else if (p->emb && (sqlite3_column_type(st, 2) == SQLITE_NULL || sqlite3_column_int64(st, 2) != p->fingerprint))
            rc = rm_errorf(RM_EFORMAT, "%s: adapter '%s' has no key of the current embedder", p->db_path, name);
    }
    sqlite3_finalize(st);
    if (!rc && n != p->n) rc = rm_errorf(RM_EFORMAT, "%s: %d adapters on disk, %d in memory", p->db_path, n, p->n);
    if (!rc && p->bm25_on && p->bm.n_docs != p->n)
        rc = rm_errorf(RM_EFORMAT, "%s: %lld BM25 documents counted for %d adapters", p->db_path, (long long)p->bm.n_docs, p->n);
    if (!rc && p->ix && (int)rm_index_size(p->ix) != p->n)
        rc = rm_errorf(RM_EFORMAT, "%s: %zu keys indexed for %d adapters", p->db_path, rm_index_size(p->ix), p->n);
    return rc;
}
