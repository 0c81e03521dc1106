// pool_sqlite.c — the pool's registry in a folder (pool_store.h).
//
// Schema (pool.db, WAL journal, synchronous FULL):
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
// of the process that added it, for name-conflict messages. The embedder is
// the file embedder.bin beside pool.db; uploaded weights go to adapters/.
//
// Other processes: PRAGMA data_version changes when another connection
// commits (the version operation).
#define _GNU_SOURCE
#include "retrieve/pool_store.h"
#include "base/err.h"
#include "base/file.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POOL_FORMAT "1"

typedef struct {
    pool_store base;
    char *emb_path;
    sqlite3 *db;
} sq_store;

static int db_fail(sq_store *q, const char *what) {
    return rm_errorf(RM_EIO, "%s: %s: %s", q->base.where, what, sqlite3_errmsg(q->db));
}

static int db_exec(sq_store *q, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = rm_errorf(RM_EIO, "%s: %s: %s", q->base.where, sql, msg ? msg : "error");
        sqlite3_free(msg);
        return rc;
    }
    return RM_OK;
}

static int db_prepare(sq_store *q, const char *sql, sqlite3_stmt **st) {
    if (sqlite3_prepare_v2(q->db, sql, -1, st, NULL) != SQLITE_OK) return db_fail(q, "prepare");
    return RM_OK;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static char *col_dup(sqlite3_stmt *st, int i) {
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? strdup(s) : NULL;
}

static void sq_close(pool_store *s) {
    sq_store *q = (sq_store *)s;
    if (q->db) sqlite3_close(q->db);
    free(q->emb_path);
    free(s->label);
    free(s->where);
    free(s->weights);
    free(q);
}

static int sq_version(pool_store *s, int64_t known, int64_t *v, int *others) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    int rc = db_prepare(q, "PRAGMA data_version", &st);
    if (rc) return rc;
    rc = sqlite3_step(st) == SQLITE_ROW ? RM_OK : db_fail(q, "reading data_version");
    if (!rc) *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (!rc) *others = *v != known; // data_version ignores this connection's own commits
    return rc;
}

static int sq_read_embedder(pool_store *s, rm_bytes *b) {
    sq_store *q = (sq_store *)s;
    memset(b, 0, sizeof *b);
    if (!rm_file_exists(q->emb_path)) return RM_OK;
    rm_mmap m;
    int rc = rm_mmap_open(&m, q->emb_path);
    if (rc) return rc;
    b->p = malloc(m.size ? m.size : 1);
    if (b->p) memcpy(b->p, m.data, m.size), b->n = b->cap = m.size;
    rm_mmap_close(&m);
    return b->p ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
}

static int sq_write_embedder(pool_store *s, const uint8_t *b, size_t n) {
    return rm_write_file_atomic(((sq_store *)s)->emb_path, b, n);
}

static int sq_fingerprint(pool_store *s, int64_t *fp) {
    sq_store *q = (sq_store *)s;
    *fp = 0;
    if (!rm_file_exists(q->emb_path)) return RM_OK;
    int fd;
    size_t size;
    int rc = rm_open_regular(q->emb_path, &fd, &size);
    if (rc) return rc;
    if (size < 8 || pread(fd, fp, 8, (off_t)(size - 8)) != 8)
        rc = rm_errorf(RM_EIO, "%s: cannot read its checksum", q->emb_path);
    close(fd);
    return rc;
}

static int sq_begin(pool_store *s) { return db_exec((sq_store *)s, "BEGIN IMMEDIATE"); }
static int sq_commit(pool_store *s) { return db_exec((sq_store *)s, "COMMIT"); }
static void sq_rollback(pool_store *s) { db_exec((sq_store *)s, "ROLLBACK"); }

#define EACH_SQL                                                                                                       \
    "SELECT a.id, a.name, k.fingerprint, k.dim, k.vec, a.task, a.weights FROM adapters a LEFT JOIN keys k ON "         \
    "k.adapter_id = a.id"

static int sq_each(pool_store *s, int64_t only, int (*fn)(void *u, const pool_row *r), void *u) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    int rc = db_prepare(q, only >= 0 ? EACH_SQL " WHERE a.id = ?" : EACH_SQL " ORDER BY a.id", &st);
    if (rc) return rc;
    if (only >= 0) sqlite3_bind_int64(st, 1, only);
    int step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        pool_row r = {.id = sqlite3_column_int64(st, 0),
                      .name = name ? name : "",
                      .has_key = sqlite3_column_type(st, 2) != SQLITE_NULL,
                      .task = (const char *)sqlite3_column_text(st, 5),
                      .weights = (const char *)sqlite3_column_text(st, 6)};
        if (r.has_key) {
            r.fingerprint = sqlite3_column_int64(st, 2);
            r.dim = sqlite3_column_int(st, 3);
            r.vec = sqlite3_column_blob(st, 4);
            r.vec_bytes = (size_t)sqlite3_column_bytes(st, 4);
        }
        rc = fn(u, &r);
    }
    if (!rc && step != SQLITE_DONE) rc = db_fail(q, "reading adapters");
    sqlite3_finalize(st);
    return rc;
}

static int sq_put_key(pool_store *s, int64_t id, const char *embedder, int64_t fingerprint, int dim, const float *vec) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    int rc = db_prepare(q, "INSERT OR REPLACE INTO keys(adapter_id, embedder, fingerprint, dim, vec) VALUES(?,?,?,?,?)",
                        &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, embedder);
    sqlite3_bind_int64(st, 3, fingerprint);
    sqlite3_bind_int(st, 4, dim);
    sqlite3_bind_blob(st, 5, vec, (int)((size_t)dim * sizeof(float)), SQLITE_TRANSIENT);
    rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(q, "writing a key");
    sqlite3_finalize(st);
    return rc;
}

static int sq_get_doc(pool_store *s, int64_t id, int64_t *feat, rm_bytes *doc) {
    sq_store *q = (sq_store *)s;
    memset(doc, 0, sizeof *doc);
    sqlite3_stmt *st;
    int rc = db_prepare(q, "SELECT feat, doc FROM bm25docs WHERE adapter_id = ?", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *feat = sqlite3_column_int64(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 1);
        doc->p = malloc(n ? n : 1);
        if (!doc->p) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
        else if (n) memcpy(doc->p, sqlite3_column_blob(st, 1), n);
        doc->n = doc->cap = doc->p ? n : 0;
    } else {
        rc = step == SQLITE_DONE ? RM_ENOTFOUND : db_fail(q, "reading a BM25 document");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_put_doc(pool_store *s, int64_t id, int64_t feat, const void *doc, size_t n) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    int rc = db_prepare(q, "INSERT OR REPLACE INTO bm25docs(adapter_id, feat, doc) VALUES(?,?,?)", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, feat);
    sqlite3_bind_blob(st, 3, doc, (int)n, SQLITE_TRANSIENT);
    rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(q, "writing a BM25 document");
    sqlite3_finalize(st);
    return rc;
}

static int sq_samples(pool_store *s, int64_t id, char ***out, int *n) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    *out = NULL;
    *n = 0;
    int rc = db_prepare(q, "SELECT input FROM samples WHERE adapter_id = ? ORDER BY idx", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, id);
    char **v = NULL;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        char **nv = realloc(v, (size_t)(*n + 1) * sizeof *nv);
        char *str = nv ? col_dup(st, 0) : NULL;
        if (nv) v = nv;
        if (!str) {
            rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
            break;
        }
        v[(*n)++] = str;
    }
    if (!rc && step != SQLITE_DONE) rc = db_fail(q, "reading samples");
    sqlite3_finalize(st);
    if (rc) {
        rm_pool_free_strs(v, *n);
        *n = 0;
        return rc;
    }
    *out = v;
    return RM_OK;
}

static int sq_owner(pool_store *s, const char *name, char **origin, double *created) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    *origin = NULL;
    int rc = db_prepare(q, "SELECT origin, created FROM adapters WHERE name = ?", &st);
    if (rc) return rc;
    bind_text(st, 1, name);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        *origin = col_dup(st, 0);
        *created = sqlite3_column_double(st, 1);
    } else {
        rc = step == SQLITE_DONE ? RM_ENOTFOUND : db_fail(q, "looking up a name");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_insert(pool_store *s, const rm_adapter_info *info, const char *const *inputs, const char *const *targets,
                     int n, const char *origin, double created, int64_t *id) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    int rc = db_prepare(q,
                        "INSERT INTO adapters(name, task, domain, base_model, rank, targets, weights, created, origin) "
                        "VALUES(?,?,?,?,?,?,?,?,?)",
                        &st);
    if (rc) return rc;
    bind_text(st, 1, info->name);
    bind_text(st, 2, info->task);
    bind_text(st, 3, info->domain);
    bind_text(st, 4, info->base_model);
    sqlite3_bind_int(st, 5, info->rank);
    bind_text(st, 6, info->targets);
    bind_text(st, 7, info->weights);
    sqlite3_bind_double(st, 8, created);
    bind_text(st, 9, origin);
    rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(q, "adding an adapter");
    sqlite3_finalize(st);
    if (rc) return rc;
    *id = sqlite3_last_insert_rowid(q->db);
    if ((rc = db_prepare(q, "INSERT INTO samples(adapter_id, idx, input, target) VALUES(?,?,?,?)", &st))) return rc;
    for (int i = 0; i < n && !rc; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, *id);
        sqlite3_bind_int(st, 2, i);
        bind_text(st, 3, inputs[i]);
        bind_text(st, 4, targets ? targets[i] : NULL);
        if (sqlite3_step(st) != SQLITE_DONE) rc = db_fail(q, "adding a sample");
    }
    sqlite3_finalize(st);
    return rc;
}

static int sq_remove(pool_store *s, int64_t id) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st = NULL;
    int rc = db_prepare(q, "DELETE FROM adapters WHERE id = ?", &st); // samples, key and document cascade
    if (!rc) {
        sqlite3_bind_int64(st, 1, id);
        rc = sqlite3_step(st) == SQLITE_DONE ? RM_OK : db_fail(q, "removing an adapter");
    }
    sqlite3_finalize(st);
    return rc;
}

#define INFO_SQL                                                                                                       \
    "SELECT a.id, a.name, a.task, a.domain, a.base_model, a.rank, a.targets, a.weights,"                               \
    " (SELECT COUNT(*) FROM samples s WHERE s.adapter_id = a.id) FROM adapters a"

static int sq_infos(pool_store *s, const char *name, rm_adapter_info **out, int *n) {
    sq_store *q = (sq_store *)s;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = db_prepare(q, name ? INFO_SQL " WHERE a.name = ?" : INFO_SQL " ORDER BY a.id", &st);
    if (rc) return rc;
    if (name) bind_text(st, 1, name);
    rm_adapter_info *v = NULL;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        rm_adapter_info *nv = realloc(v, (size_t)(*n + 1) * sizeof *nv);
        if (!nv) {
            rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
            break;
        }
        v = nv;
        rm_adapter_info *a = &v[(*n)++];
        *a = (rm_adapter_info){.id = sqlite3_column_int64(st, 0),
                               .name = col_dup(st, 1),
                               .task = col_dup(st, 2),
                               .domain = col_dup(st, 3),
                               .base_model = col_dup(st, 4),
                               .rank = sqlite3_column_int(st, 5),
                               .targets = col_dup(st, 6),
                               .weights = col_dup(st, 7),
                               .n_samples = sqlite3_column_int(st, 8)};
    }
    if (!rc && step != SQLITE_DONE) rc = db_fail(q, "reading adapters");
    sqlite3_finalize(st);
    if (rc) {
        rm_pool_free_list(v, *n);
        *n = 0;
        return rc;
    }
    *out = v;
    return RM_OK;
}

static int sq_check(pool_store *s, int (*fn)(void *u, const char *name, int n_samples, int has_key, int64_t fp),
                    void *u) {
    sq_store *q = (sq_store *)s;
    sqlite3_stmt *st;
    int rc = db_prepare(q, "PRAGMA integrity_check", &st);
    if (rc) return rc;
    if (sqlite3_step(st) != SQLITE_ROW) rc = db_fail(q, "integrity check");
    else {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        if (!v || strcmp(v, "ok")) rc = rm_errorf(RM_EFORMAT, "%s: integrity check: %s", s->where, v ? v : "?");
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    rc = db_prepare(q,
                    "SELECT a.name, (SELECT COUNT(*) FROM samples s WHERE s.adapter_id = a.id), k.fingerprint"
                    " FROM adapters a LEFT JOIN keys k ON k.adapter_id = a.id",
                    &st);
    if (rc) return rc;
    while (!rc && sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        rc = fn(u, name ? name : "", sqlite3_column_int(st, 1), sqlite3_column_type(st, 2) != SQLITE_NULL,
                sqlite3_column_int64(st, 2));
    }
    sqlite3_finalize(st);
    return rc;
}

static const pool_store_ops k_sqlite_ops = {
    .close = sq_close,
    .version = sq_version,
    .read_embedder = sq_read_embedder,
    .write_embedder = sq_write_embedder,
    .fingerprint = sq_fingerprint,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .each = sq_each,
    .put_key = sq_put_key,
    .get_doc = sq_get_doc,
    .put_doc = sq_put_doc,
    .samples = sq_samples,
    .owner = sq_owner,
    .insert = sq_insert,
    .remove = sq_remove,
    .infos = sq_infos,
    .check = sq_check,
    .changes = NULL,
    .wait = NULL,
};

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir) + strlen(file) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, file);
    return s;
}

// Pools made before the origin column get it (NULL for their adapters).
static int add_origin_column(sq_store *q) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, "SELECT origin FROM adapters LIMIT 0", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_finalize(st);
        return RM_OK;
    }
    sqlite3_finalize(st);
    return db_exec(q, "ALTER TABLE adapters ADD COLUMN origin TEXT");
}

int pool_sqlite_open(const char *dir, pool_store **out) {
    *out = NULL;
    sq_store *q = calloc(1, sizeof *q);
    if (!q) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    q->base.ops = &k_sqlite_ops;
    q->base.label = strdup(dir);
    q->base.where = join(dir, "pool.db");
    q->base.weights = join(dir, "adapters");
    q->emb_path = join(dir, "embedder.bin");
    int rc = q->base.label && q->base.where && q->base.weights && q->emb_path
                 ? RM_OK
                 : rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc && !rm_is_dir(dir)) rc = rm_mkdirs(dir);
    if (!rc && sqlite3_open_v2(q->base.where, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        rc = rm_errorf(RM_EIO, "%s: cannot open: %s", q->base.where, q->db ? sqlite3_errmsg(q->db) : "out of memory");
    if (!rc) sqlite3_busy_timeout(q->db, 10000);
    if (!rc) rc = db_exec(q, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
    if (!rc)
        rc = db_exec(
            q,
            "BEGIN IMMEDIATE;"
            "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
            "INSERT OR IGNORE INTO meta(key, value) VALUES('format', '" POOL_FORMAT "');"
            "CREATE TABLE IF NOT EXISTS adapters(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,"
            " task TEXT, domain TEXT, base_model TEXT, rank INTEGER, targets TEXT, weights TEXT, created REAL);"
            "CREATE TABLE IF NOT EXISTS samples(adapter_id INTEGER NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,"
            " idx INTEGER NOT NULL, input TEXT NOT NULL, target TEXT, PRIMARY KEY(adapter_id, idx));"
            "CREATE TABLE IF NOT EXISTS keys(adapter_id INTEGER PRIMARY KEY REFERENCES adapters(id) ON DELETE CASCADE,"
            " embedder TEXT, fingerprint INTEGER, dim INTEGER, vec BLOB);"
            "CREATE TABLE IF NOT EXISTS bm25docs(adapter_id INTEGER PRIMARY KEY REFERENCES adapters(id) ON DELETE "
            "CASCADE,"
            " feat INTEGER, doc BLOB);"
            "COMMIT;");
    if (!rc) {
        sqlite3_stmt *st;
        rc = db_prepare(q, "SELECT value FROM meta WHERE key = 'format'", &st);
        if (!rc && sqlite3_step(st) == SQLITE_ROW) {
            const char *v = (const char *)sqlite3_column_text(st, 0);
            if (!v || strcmp(v, POOL_FORMAT))
                rc = rm_errorf(RM_EUNSUPPORTED, "%s: pool format '%s' (want " POOL_FORMAT ")", q->base.where,
                               v ? v : "?");
        }
        if (!rc || st) sqlite3_finalize(st);
    }
    if (!rc) rc = add_origin_column(q);
    if (rc) {
        sq_close(&q->base);
        return rc;
    }
    *out = &q->base;
    return RM_OK;
}
