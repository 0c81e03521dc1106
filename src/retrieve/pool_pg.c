// pool_pg.c — the pool's registry in PostgreSQL (pool_store.h), shared by
// many servers (docs/deploy.md).
//
// Schema (made when absent, under an advisory lock so that replicas starting
// together do not race):
//   meta(key TEXT PRIMARY KEY, value TEXT)          format version
//   pool_state(one INT PRIMARY KEY, seq BIGINT)     the change sequence
//   embedder(one INT PRIMARY KEY, bytes BYTEA, fingerprint BIGINT)
//   adapters(id BIGSERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, task, domain,
//            base_model, rank INT, targets, weights, created DOUBLE PRECISION, origin)
//   samples(adapter_id, idx, input TEXT NOT NULL, target TEXT)
//   keys(adapter_id BIGINT PRIMARY KEY, embedder, fingerprint, dim, vec BYTEA)
//   bm25docs(adapter_id BIGINT PRIMARY KEY, feat BIGINT, doc BYTEA)
//   changes(seq BIGINT PRIMARY KEY, op TEXT, adapter_id, name, handle BIGINT, at,
//           feat BIGINT, doc BYTEA)                  a removed adapter's BM25 document
// samples, keys and bm25docs cascade from adapters.
//
// Every add, remove and new embedder takes the next number of pool_state.seq
// (the row stays locked until COMMIT, so numbers are handed out in commit
// order), writes a changes row naming it and the handle that made it, and
// NOTIFYs channel ramole_pool with the number (delivered at COMMIT). A handle
// is in step with version seq; the changes after it made by other handles
// (the version operation counts them) are read from the log and applied.
// The log keeps the last KEEP_CHANGES changes; a handle further behind (a
// gap before the first row it reads) reloads the pool instead.
//
// weights: a path inside the URL's weights=DIR folder is stored relative to
// it (HASH/adapter.gguf) and given back joined to the reader's own folder,
// so replicas may mount the shared folder anywhere.
//
// A lost connection is re-made before the next operation outside a
// transaction; while the server cannot be reached every operation fails
// with RM_EUNAVAILABLE and changes nothing.
#define _GNU_SOURCE
#include "retrieve/pool_store.h"
#include "base/err.h"
#include "base/file.h"

#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define PG_FORMAT "1"
#define PG_CHANNEL "ramole_pool"
#define KEEP_CHANGES "10000"

typedef struct {
    pool_store base;
    char *conninfo; // the URL without weights=
    PGconn *db;
    PGconn *listen;      // wait()'s own connection (LISTEN)
    double retry_after;  // rm_now() before which a lost main connection is not re-made
    double listen_retry; // rm_now() before which wait() does not reconnect
    int64_t handle;      // marks this handle's rows in changes
    int in_tx;
} pg_store;

int pool_is_pg_url(const char *path) {
    return path && (!strncmp(path, "postgres://", 11) || !strncmp(path, "postgresql://", 13));
}

static void quiet_notices(void *arg, const char *msg) { (void)arg, (void)msg; }

// A libpq message on one line: newlines and tabs as single spaces, none at the end.
static void one_line(char *buf, size_t cap, const char *msg) {
    size_t n = 0;
    for (const char *m = msg; *m && n + 1 < cap; m++) {
        int space = *m == '\n' || *m == '\t' || *m == ' ';
        if (space && (n == 0 || buf[n - 1] == ' ')) continue;
        buf[n++] = space ? ' ' : *m;
    }
    while (n && buf[n - 1] == ' ') n--;
    buf[n] = 0;
}

static const char *pg_msg(PGconn *c) {
    static __thread char buf[512];
    one_line(buf, sizeof buf, c ? PQerrorMessage(c) : "out of memory");
    return buf[0] ? buf : "no reason given";
}

// Connections give up on a server that does not answer within seconds (the
// URL may say otherwise: its parameters come after these).
static int pg_connect(pg_store *q, PGconn **out) {
    const char *keys[] = {"connect_timeout",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "tcp_user_timeout",
                          "application_name",
                          "dbname",
                          NULL};
    const char *vals[] = {"2", "5", "2", "3", "5000", "ramole", q->conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        int rc = rm_errorf(RM_EUNAVAILABLE, "%s: cannot connect to the database server: %s", q->base.label, pg_msg(c));
        PQfinish(c);
        *out = NULL;
        return rc;
    }
    PQsetNoticeProcessor(c, quiet_notices, NULL);
    *out = c;
    return RM_OK;
}

// The main connection, re-made when it was lost (not inside a transaction:
// the transaction is gone with it); after a failed attempt the next waits
// RETRY_S, so that callers holding the pool's lock are not held up by one
// connection timeout after another.
#define RETRY_S 2.0
static int pg_ready(pg_store *q) {
    if (q->db && PQstatus(q->db) == CONNECTION_OK) return RM_OK;
    if (q->in_tx)
        return rm_errorf(RM_EUNAVAILABLE, "%s: the connection to the database server was lost: %s", q->base.label,
                         pg_msg(q->db));
    if (rm_now() < q->retry_after)
        return rm_errorf(RM_EUNAVAILABLE, "%s: the database server cannot be reached: %s", q->base.label,
                         pg_msg(q->db));
    int rc = RM_OK;
    if (q->db) {
        PQreset(q->db);
        if (PQstatus(q->db) != CONNECTION_OK)
            rc = rm_errorf(RM_EUNAVAILABLE, "%s: the database server cannot be reached: %s", q->base.label,
                           pg_msg(q->db));
    } else {
        rc = pg_connect(q, &q->db);
    }
    q->retry_after = rc ? rm_now() + RETRY_S : 0;
    return rc;
}

// The status for a failed result: the server gone (or going) is
// RM_EUNAVAILABLE, a taken name RM_EINVAL, anything else RM_EIO.
static int pg_fail(pg_store *q, PGresult *res, const char *what) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int gone = PQstatus(q->db) != CONNECTION_OK || (state && (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3)));
    int code = gone ? RM_EUNAVAILABLE : state && !strcmp(state, "23505") ? RM_EINVAL : RM_EIO;
    const char *msg = res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(q->db);
    char buf[512];
    one_line(buf, sizeof buf, msg);
    return rm_errorf(code, "%s: %s: %s%s", q->base.label, what, gone ? "the database server cannot be reached: " : "",
                     buf);
}

// Runs sql with n text or binary parameters; *out (may be NULL) the result
// of a query (PQclear it).
static int pg_run(pg_store *q, const char *sql, int n, const char *const *v, const int *len, const int *bin,
                  PGresult **out, const char *what) {
    if (out) *out = NULL;
    int rc = pg_ready(q);
    if (rc) return rc;
    PGresult *res = PQexecParams(q->db, sql, n, NULL, v, len, bin, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && PQstatus(q->db) != CONNECTION_OK && !q->in_tx) {
        // the connection was lost since its last use (a server restart): once
        // more on a new one; outside a transaction nothing was done (every
        // write of this store runs in one, from its BEGIN)
        PQclear(res);
        if ((rc = pg_ready(q))) return rc;
        res = PQexecParams(q->db, sql, n, NULL, v, len, bin, 0);
        st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = pg_fail(q, res, what);
        PQclear(res);
        return rc;
    }
    if (out) *out = res;
    else PQclear(res);
    return RM_OK;
}

// sql with an adapter id as its one parameter.
static int pg_run_id(pg_store *q, const char *sql, int64_t id, PGresult **out, const char *what) {
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    const char *vals[1] = {ids};
    return pg_run(q, sql, 1, vals, NULL, NULL, out, what);
}

static int64_t col_i64(PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}
static char *col_dup(PGresult *r, int row, int col) {
    return PQgetisnull(r, row, col) ? NULL : strdup(PQgetvalue(r, row, col));
}

// A bytea column as bytes (malloc'd; RM_ENOMEM or RM_EFORMAT on failure).
static int col_bytes(pg_store *q, PGresult *r, int row, int col, rm_bytes *b) {
    memset(b, 0, sizeof *b);
    size_t n = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
    if (!raw) return rm_errorf(RM_ENOMEM, "%s: out of memory reading bytes", q->base.label);
    b->p = malloc(n ? n : 1);
    if (b->p) memcpy(b->p, raw, n), b->n = b->cap = n;
    PQfreemem(raw);
    return b->p ? RM_OK : rm_errorf(RM_ENOMEM, "pool: out of memory");
}

static void pg_close(pool_store *s) {
    pg_store *q = (pg_store *)s;
    PQfinish(q->db);
    PQfinish(q->listen);
    free(q->conninfo);
    free(s->label);
    free(s->where);
    free(s->weights);
    free(q);
}

static int pg_version(pool_store *s, int64_t known, int64_t *v, int *others) {
    pg_store *q = (pg_store *)s;
    char k[24], h[24];
    snprintf(k, sizeof k, "%lld", (long long)known);
    snprintf(h, sizeof h, "%lld", (long long)q->handle);
    const char *vals[2] = {k, h};
    PGresult *r;
    int rc =
        pg_run(q, "SELECT (SELECT seq FROM pool_state), (SELECT COUNT(*) FROM changes WHERE seq > $1 AND handle <> $2)",
               2, vals, NULL, NULL, &r, "reading the change sequence");
    if (rc) return rc;
    *v = col_i64(r, 0, 0);
    *others = col_i64(r, 0, 1) > 0;
    PQclear(r);
    return RM_OK;
}

// The next change number, its changes row and the NOTIFY (inside a transaction).
static int pg_change(pg_store *q, const char *op, int64_t id, const char *name) {
    PGresult *r;
    int rc = pg_run(q, "UPDATE pool_state SET seq = seq + 1 RETURNING seq", 0, NULL, NULL, NULL, &r,
                    "taking a change number");
    if (rc) return rc;
    char seq[24], ids[24], h[24];
    int found = PQntuples(r) == 1;
    snprintf(seq, sizeof seq, "%s", found ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    if (!found)
        return rm_errorf(RM_EFORMAT, "%s: the table pool_state has lost its row (the change sequence)", q->base.label);
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    snprintf(h, sizeof h, "%lld", (long long)q->handle);
    const char *vals[5] = {seq, op, id >= 0 ? ids : NULL, name, h};
    rc = pg_run(q,
                "INSERT INTO changes(seq, op, adapter_id, name, handle, at) VALUES($1, $2, $3, $4, $5, EXTRACT(EPOCH "
                "FROM now()))",
                5, vals, NULL, NULL, NULL, "recording a change");
    const char *nv[1] = {seq};
    if (!rc)
        rc =
            pg_run(q, "SELECT pg_notify('" PG_CHANNEL "', $1)", 1, nv, NULL, NULL, NULL, "notifying the other servers");
    // the log keeps the last KEEP_CHANGES: a handle further behind reloads
    if (!rc)
        rc = pg_run(q, "DELETE FROM changes WHERE seq <= $1::bigint - " KEEP_CHANGES, 1, nv, NULL, NULL, NULL,
                    "trimming the change log");
    return rc;
}

static int pg_begin(pool_store *s) {
    pg_store *q = (pg_store *)s;
    int rc = pg_run(q, "BEGIN", 0, NULL, NULL, NULL, NULL, "starting a transaction");
    if (!rc) q->in_tx = 1;
    return rc;
}

static int pg_commit(pool_store *s) {
    pg_store *q = (pg_store *)s;
    int rc = pg_run(q, "COMMIT", 0, NULL, NULL, NULL, NULL, "committing");
    q->in_tx = 0;
    return rc;
}

static void pg_rollback(pool_store *s) {
    pg_store *q = (pg_store *)s;
    if (q->db && PQstatus(q->db) == CONNECTION_OK) PQclear(PQexec(q->db, "ROLLBACK"));
    q->in_tx = 0;
}

// fn inside a transaction of its own, committed when it succeeds.
static int pg_in_tx(pg_store *q, int (*fn)(pg_store *q, void *u), void *u) {
    int rc = pg_begin(&q->base);
    if (rc) return rc;
    rc = fn(q, u);
    if (rc) pg_rollback(&q->base);
    else rc = pg_commit(&q->base);
    return rc;
}

static int pg_read_embedder(pool_store *s, rm_bytes *b) {
    pg_store *q = (pg_store *)s;
    memset(b, 0, sizeof *b);
    PGresult *r;
    int rc = pg_run(q, "SELECT bytes FROM embedder WHERE one = 1", 0, NULL, NULL, NULL, &r, "reading the embedder");
    if (rc) return rc;
    if (PQntuples(r) == 1) rc = col_bytes(q, r, 0, 0, b);
    PQclear(r);
    return rc;
}

typedef struct {
    const uint8_t *b;
    size_t n;
} emb_write;

static int write_embedder_tx(pg_store *q, void *u) {
    emb_write *w = u;
    int64_t fp = 0;
    memcpy(&fp, w->b + w->n - 8, 8);
    char fps[24];
    snprintf(fps, sizeof fps, "%lld", (long long)fp);
    const char *vals[2] = {(const char *)w->b, fps};
    int len[2] = {(int)w->n, 0}, bin[2] = {1, 0};
    int rc = pg_run(q,
                    "INSERT INTO embedder(one, bytes, fingerprint) VALUES(1, $1, $2)"
                    " ON CONFLICT(one) DO UPDATE SET bytes = EXCLUDED.bytes, fingerprint = EXCLUDED.fingerprint",
                    2, vals, len, bin, NULL, "writing the embedder");
    if (!rc) rc = pg_change(q, "embedder", -1, NULL);
    return rc;
}

static int pg_write_embedder(pool_store *s, const uint8_t *b, size_t n) {
    if (n < 8 || n > (size_t)1 << 30)
        return rm_errorf(RM_EINVAL, "%s: an embedder of %zu bytes cannot be stored", s->label, n);
    emb_write w = {b, n};
    return pg_in_tx((pg_store *)s, write_embedder_tx, &w);
}

static int pg_fingerprint(pool_store *s, int64_t *fp) {
    pg_store *q = (pg_store *)s;
    *fp = 0;
    PGresult *r;
    int rc = pg_run(q, "SELECT fingerprint FROM embedder WHERE one = 1", 0, NULL, NULL, NULL, &r,
                    "reading the embedder's fingerprint");
    if (rc) return rc;
    if (PQntuples(r) == 1) *fp = col_i64(r, 0, 0);
    PQclear(r);
    return RM_OK;
}

// A stored weights value as the caller sees it (joined to the folder when relative).
static char *weights_read(const pg_store *q, PGresult *r, int row, int col) {
    if (PQgetisnull(r, row, col)) return NULL;
    const char *w = PQgetvalue(r, row, col);
    if (w[0] == '/' || !w[0] || !q->base.weights) return strdup(w);
    size_t n = strlen(q->base.weights) + strlen(w) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", q->base.weights, w);
    return s;
}

#define EACH_SQL                                                                                                       \
    "SELECT a.id, a.name, k.fingerprint, k.dim, k.vec, a.task, a.weights FROM adapters a LEFT JOIN keys k ON "         \
    "k.adapter_id = a.id"

static int pg_each(pool_store *s, int64_t only, int (*fn)(void *u, const pool_row *r), void *u) {
    pg_store *q = (pg_store *)s;
    PGresult *r;
    int rc = only >= 0 ? pg_run_id(q, EACH_SQL " WHERE a.id = $1", only, &r, "reading an adapter")
                       : pg_run(q, EACH_SQL " ORDER BY a.id", 0, NULL, NULL, NULL, &r, "reading adapters");
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        char *weights = weights_read(q, r, i, 6);
        pool_row row = {.id = col_i64(r, i, 0),
                        .name = PQgetvalue(r, i, 1),
                        .has_key = !PQgetisnull(r, i, 2),
                        .task = PQgetisnull(r, i, 5) ? NULL : PQgetvalue(r, i, 5),
                        .weights = weights};
        rm_bytes vec = {0};
        if (!PQgetisnull(r, i, 6) && !weights) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
        if (!rc && row.has_key) {
            row.fingerprint = col_i64(r, i, 2);
            row.dim = (int)col_i64(r, i, 3);
            rc = col_bytes(q, r, i, 4, &vec);
            row.vec = vec.p, row.vec_bytes = vec.n;
        }
        if (!rc) rc = fn(u, &row);
        free(vec.p);
        free(weights);
    }
    PQclear(r);
    return rc;
}

static int pg_put_key(pool_store *s, int64_t id, const char *embedder, int64_t fingerprint, int dim, const float *vec) {
    char ids[24], fps[24], dims[16];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    snprintf(fps, sizeof fps, "%lld", (long long)fingerprint);
    snprintf(dims, sizeof dims, "%d", dim);
    const char *vals[5] = {ids, embedder, fps, dims, (const char *)vec};
    int len[5] = {0, 0, 0, 0, (int)((size_t)dim * sizeof(float))}, bin[5] = {0, 0, 0, 0, 1};
    return pg_run(
        (pg_store *)s,
        "INSERT INTO keys(adapter_id, embedder, fingerprint, dim, vec) VALUES($1, $2, $3, $4, $5)"
        " ON CONFLICT(adapter_id) DO UPDATE SET embedder = EXCLUDED.embedder, fingerprint = EXCLUDED.fingerprint,"
        " dim = EXCLUDED.dim, vec = EXCLUDED.vec",
        5, vals, len, bin, NULL, "writing a key");
}

static int pg_get_doc(pool_store *s, int64_t id, int64_t *feat, rm_bytes *doc) {
    pg_store *q = (pg_store *)s;
    memset(doc, 0, sizeof *doc);
    PGresult *r;
    int rc = pg_run_id(q, "SELECT feat, doc FROM bm25docs WHERE adapter_id = $1", id, &r, "reading a BM25 document");
    if (rc) return rc;
    if (PQntuples(r) != 1) rc = RM_ENOTFOUND;
    else *feat = col_i64(r, 0, 0), rc = col_bytes(q, r, 0, 1, doc);
    PQclear(r);
    return rc;
}

static int pg_put_doc(pool_store *s, int64_t id, int64_t feat, const void *doc, size_t n) {
    char ids[24], fs[24];
    snprintf(ids, sizeof ids, "%lld", (long long)id);
    snprintf(fs, sizeof fs, "%lld", (long long)feat);
    const char *vals[3] = {ids, fs, doc};
    int len[3] = {0, 0, (int)n}, bin[3] = {0, 0, 1};
    return pg_run((pg_store *)s,
                  "INSERT INTO bm25docs(adapter_id, feat, doc) VALUES($1, $2, $3)"
                  " ON CONFLICT(adapter_id) DO UPDATE SET feat = EXCLUDED.feat, doc = EXCLUDED.doc",
                  3, vals, len, bin, NULL, "writing a BM25 document");
}

static int pg_samples(pool_store *s, int64_t id, char ***out, int *n) {
    pg_store *q = (pg_store *)s;
    *out = NULL;
    *n = 0;
    PGresult *r;
    int rc = pg_run_id(q, "SELECT input FROM samples WHERE adapter_id = $1 ORDER BY idx", id, &r, "reading samples");
    if (rc) return rc;
    int m = PQntuples(r);
    char **v = m ? calloc((size_t)m, sizeof *v) : NULL;
    if (m && !v) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
    for (int i = 0; i < m && !rc; i++)
        if (!(v[i] = col_dup(r, i, 0))) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
    PQclear(r);
    if (rc) {
        rm_pool_free_strs(v, m);
        return rc;
    }
    *out = v;
    *n = m;
    return RM_OK;
}

static int pg_owner(pool_store *s, const char *name, char **origin, double *created) {
    pg_store *q = (pg_store *)s;
    *origin = NULL;
    const char *vals[1] = {name};
    PGresult *r;
    int rc =
        pg_run(q, "SELECT origin, created FROM adapters WHERE name = $1", 1, vals, NULL, NULL, &r, "looking up a name");
    if (rc) return rc;
    if (PQntuples(r) != 1) rc = RM_ENOTFOUND;
    else *origin = col_dup(r, 0, 0), *created = strtod(PQgetvalue(r, 0, 1), NULL);
    PQclear(r);
    return rc;
}

// weights as stored: relative to the weights folder when inside it.
static const char *weights_stored(const pg_store *q, const char *w) {
    const char *root = q->base.weights;
    size_t n = root ? strlen(root) : 0;
    if (w && n && !strncmp(w, root, n) && w[n] == '/' && w[n + 1]) return w + n + 1;
    return w;
}

static int pg_insert(pool_store *s, const rm_adapter_info *info, const char *const *inputs, const char *const *targets,
                     int n, const char *origin, double created, int64_t *id) {
    pg_store *q = (pg_store *)s;
    char rank[16], when[32];
    snprintf(rank, sizeof rank, "%d", info->rank);
    snprintf(when, sizeof when, "%.3f", created);
    const char *vals[9] = {
        info->name, info->task, info->domain, info->base_model, rank, info->targets, weights_stored(q, info->weights),
        when,       origin};
    PGresult *r;
    int rc = pg_run(q,
                    "INSERT INTO adapters(name, task, domain, base_model, rank, targets, weights, created, origin)"
                    " VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    9, vals, NULL, NULL, &r, "adding an adapter");
    if (rc == RM_EINVAL)
        return rm_errorf(RM_EINVAL, "pool add: an adapter named '%s' exists (added by another server just now)",
                         info->name);
    if (rc) return rc;
    *id = col_i64(r, 0, 0);
    PQclear(r);
    char ids[24], idx[16];
    snprintf(ids, sizeof ids, "%lld", (long long)*id);
    for (int i = 0; i < n && !rc; i++) {
        snprintf(idx, sizeof idx, "%d", i);
        const char *sv[4] = {ids, idx, inputs[i], targets ? targets[i] : NULL};
        rc = pg_run(q, "INSERT INTO samples(adapter_id, idx, input, target) VALUES($1, $2, $3, $4)", 4, sv, NULL, NULL,
                    NULL, "adding a sample");
    }
    if (!rc) rc = pg_change(q, "add", *id, info->name);
    return rc;
}

// The change row of a remove keeps the adapter's BM25 document: the other
// handles take it off their statistics without the row.
static int remove_tx(pg_store *q, void *u) {
    int64_t id = *(int64_t *)u;
    PGresult *r;
    int rc = pg_run_id(q, "SELECT name FROM adapters WHERE id = $1 FOR UPDATE", id, &r, "removing an adapter");
    if (rc) return rc;
    if (PQntuples(r) == 1) rc = pg_change(q, "remove", id, PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!rc)
        rc = pg_run_id(q,
                       "UPDATE changes c SET feat = b.feat, doc = b.doc FROM bm25docs b"
                       " WHERE c.seq = (SELECT seq FROM pool_state) AND b.adapter_id = $1",
                       id, NULL, "recording a change");
    if (!rc) rc = pg_run_id(q, "DELETE FROM adapters WHERE id = $1", id, NULL, "removing an adapter");
    return rc;
}

static int pg_remove(pool_store *s, int64_t id) { return pg_in_tx((pg_store *)s, remove_tx, &id); }

#define INFO_SQL                                                                                                       \
    "SELECT a.id, a.name, a.task, a.domain, a.base_model, a.rank, a.targets, a.weights,"                               \
    " (SELECT COUNT(*) FROM samples s WHERE s.adapter_id = a.id) FROM adapters a"

static int pg_infos(pool_store *s, const char *name, rm_adapter_info **out, int *n) {
    pg_store *q = (pg_store *)s;
    *out = NULL;
    *n = 0;
    const char *vals[1] = {name};
    PGresult *r;
    int rc = pg_run(q, name ? INFO_SQL " WHERE a.name = $1" : INFO_SQL " ORDER BY a.id", name ? 1 : 0, vals, NULL, NULL,
                    &r, "reading adapters");
    if (rc) return rc;
    int m = PQntuples(r);
    rm_adapter_info *v = calloc(m ? (size_t)m : 1, sizeof *v);
    if (!v) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
    for (int i = 0; i < m && !rc; i++)
        v[i] = (rm_adapter_info){.id = col_i64(r, i, 0),
                                 .name = col_dup(r, i, 1),
                                 .task = col_dup(r, i, 2),
                                 .domain = col_dup(r, i, 3),
                                 .base_model = col_dup(r, i, 4),
                                 .rank = (int)col_i64(r, i, 5),
                                 .targets = col_dup(r, i, 6),
                                 .weights = weights_read(q, r, i, 7),
                                 .n_samples = (int)col_i64(r, i, 8)};
    PQclear(r);
    if (rc) return rc;
    *out = v;
    *n = m;
    return RM_OK;
}

static int pg_check(pool_store *s, int (*fn)(void *u, const char *name, int n_samples, int has_key, int64_t fp),
                    void *u) {
    pg_store *q = (pg_store *)s;
    PGresult *r;
    int rc = pg_run(q,
                    "SELECT a.name, (SELECT COUNT(*) FROM samples s WHERE s.adapter_id = a.id), k.fingerprint"
                    " FROM adapters a LEFT JOIN keys k ON k.adapter_id = a.id",
                    0, NULL, NULL, NULL, &r, "checking adapters");
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r) && !rc; i++)
        rc = fn(u, PQgetvalue(r, i, 0), (int)col_i64(r, i, 1), !PQgetisnull(r, i, 2), col_i64(r, i, 2));
    PQclear(r);
    return rc;
}

static int pg_changes(pool_store *s, int64_t since, int (*fn)(void *u, const pool_change *c), void *u) {
    pg_store *q = (pg_store *)s;
    PGresult *r;
    int rc = pg_run_id(q, "SELECT seq, op, adapter_id, feat, doc FROM changes WHERE seq > $1 ORDER BY seq", since, &r,
                       "reading the change log");
    if (rc) return rc;
    for (int i = 0; i < PQntuples(r) && !rc; i++) {
        const char *op = PQgetvalue(r, i, 1);
        pool_change c = {.seq = col_i64(r, i, 0),
                         .id = col_i64(r, i, 2),
                         .has_doc = !PQgetisnull(r, i, 4),
                         .feat = col_i64(r, i, 3),
                         .op = !strcmp(op, "add")      ? POOL_ADDED
                               : !strcmp(op, "remove") ? POOL_REMOVED
                                                       : POOL_NEW_EMBEDDER};
        rm_bytes doc = {0};
        if (c.has_doc) rc = col_bytes(q, r, i, 4, &doc);
        c.doc = doc.p, c.doc_bytes = doc.n;
        if (!rc) rc = fn(u, &c);
        free(doc.p);
    }
    PQclear(r);
    return rc;
}

static void sleep_s(double s) {
    if (s > 0) usleep((useconds_t)(s * 1e6));
}

static int pg_wait(pool_store *s, double seconds, int *notified) {
    pg_store *q = (pg_store *)s;
    *notified = 0;
    if (q->listen && PQstatus(q->listen) != CONNECTION_OK) PQfinish(q->listen), q->listen = NULL;
    if (!q->listen) {
        double now = rm_now();
        if (now < q->listen_retry) return sleep_s(seconds), RM_OK;
        q->listen_retry = now + 1.0;
        PGconn *c = NULL;
        if (pg_connect(q, &c)) return sleep_s(seconds), RM_OK; // the server is away: the caller's refreshes say so
        PGresult *r = PQexec(c, "LISTEN " PG_CHANNEL);
        int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok) {
            PQfinish(c);
            return sleep_s(seconds), RM_OK;
        }
        q->listen = c;
        *notified = 1; // changes may have been missed while not listening: catch up
        return RM_OK;
    }
    struct pollfd pfd = {.fd = PQsocket(q->listen), .events = POLLIN};
    int ms = seconds > 0 ? (int)(seconds * 1000) : 0;
    if (poll(&pfd, 1, ms) > 0 && !PQconsumeInput(q->listen)) {
        PQfinish(q->listen), q->listen = NULL; // lost: re-made (and caught up) on the next call
        return RM_OK;
    }
    for (PGnotify *n; (n = PQnotifies(q->listen));) {
        *notified = 1;
        PQfreemem(n);
    }
    return RM_OK;
}

static const pool_store_ops k_pg_ops = {
    .close = pg_close,
    .version = pg_version,
    .read_embedder = pg_read_embedder,
    .write_embedder = pg_write_embedder,
    .fingerprint = pg_fingerprint,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .each = pg_each,
    .put_key = pg_put_key,
    .get_doc = pg_get_doc,
    .put_doc = pg_put_doc,
    .samples = pg_samples,
    .owner = pg_owner,
    .insert = pg_insert,
    .remove = pg_remove,
    .infos = pg_infos,
    .check = pg_check,
    .changes = pg_changes,
    .wait = pg_wait,
};

static const char k_schema[] =
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(7305893215);"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "INSERT INTO meta(key, value) VALUES('format', '" PG_FORMAT "') ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS pool_state(one INT PRIMARY KEY CHECK (one = 1), seq BIGINT NOT NULL);"
    "INSERT INTO pool_state(one, seq) VALUES(1, 0) ON CONFLICT DO NOTHING;"
    "CREATE TABLE IF NOT EXISTS embedder(one INT PRIMARY KEY CHECK (one = 1), bytes BYTEA NOT NULL, fingerprint BIGINT "
    "NOT NULL);"
    "CREATE TABLE IF NOT EXISTS adapters(id BIGSERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, task TEXT, domain TEXT,"
    " base_model TEXT, rank INT, targets TEXT, weights TEXT, created DOUBLE PRECISION, origin TEXT);"
    "CREATE TABLE IF NOT EXISTS samples(adapter_id BIGINT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,"
    " idx INT NOT NULL, input TEXT NOT NULL, target TEXT, PRIMARY KEY(adapter_id, idx));"
    "CREATE TABLE IF NOT EXISTS keys(adapter_id BIGINT PRIMARY KEY REFERENCES adapters(id) ON DELETE CASCADE,"
    " embedder TEXT, fingerprint BIGINT, dim INT, vec BYTEA);"
    "CREATE TABLE IF NOT EXISTS bm25docs(adapter_id BIGINT PRIMARY KEY REFERENCES adapters(id) ON DELETE CASCADE,"
    " feat BIGINT, doc BYTEA);"
    "CREATE TABLE IF NOT EXISTS changes(seq BIGINT PRIMARY KEY, op TEXT NOT NULL, adapter_id BIGINT, name TEXT,"
    " handle BIGINT, at DOUBLE PRECISION, feat BIGINT, doc BYTEA);"
    "COMMIT;";

// Decodes %XX escapes of a URL parameter's value (in place).
static void url_decode(char *s) {
    char *o = s;
    for (; *s; s++) {
        unsigned v;
        if (*s == '%' && s[1] && s[2] && sscanf(s + 1, "%2x", &v) == 1 && v) *o++ = (char)v, s += 2;
        else *o++ = *s;
    }
    *o = 0;
}

// Splits the URL's weights=DIR off the parameters libpq reads.
static int split_url(const char *url, char **conninfo, char **weights) {
    *weights = NULL;
    *conninfo = strdup(url);
    char *params = *conninfo ? strchr(*conninfo, '?') : NULL;
    if (!*conninfo) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!params) return RM_OK;
    char *copy = strdup(params + 1), *save = NULL;
    if (!copy) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    char *o = params + 1;
    *o = 0;
    for (char *t = strtok_r(copy, "&", &save); t; t = strtok_r(NULL, "&", &save)) {
        if (!strncmp(t, "weights=", 8)) {
            free(*weights);
            *weights = strdup(t + 8);
            if (*weights) url_decode(*weights);
            continue;
        }
        if (o != params + 1) *o++ = '&';
        size_t n = strlen(t);
        memmove(o, t, n + 1);
        o += n;
    }
    if (o == params + 1) *params = 0; // nothing left for libpq
    free(copy);
    return RM_OK;
}

// "postgresql://USER@HOST:PORT/DB" for messages (never the password).
static char *url_label(const char *conninfo, char **err) {
    PQconninfoOption *o = PQconninfoParse(conninfo, err);
    if (!o) return NULL;
    const char *user = NULL, *host = NULL, *port = NULL, *db = NULL;
    for (PQconninfoOption *x = o; x->keyword; x++) {
        if (!x->val) continue;
        if (!strcmp(x->keyword, "user")) user = x->val;
        else if (!strcmp(x->keyword, "host")) host = x->val;
        else if (!strcmp(x->keyword, "port")) port = x->val;
        else if (!strcmp(x->keyword, "dbname")) db = x->val;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "postgresql://%s%s%s%s%s/%s", user ? user : "", user ? "@" : "", host ? host : "",
             port ? ":" : "", port ? port : "", db ? db : "");
    PQconninfoFree(o);
    return strdup(buf);
}

int pool_pg_open(const char *url, pool_store **out) {
    *out = NULL;
    pg_store *q = calloc(1, sizeof *q);
    if (!q) return rm_errorf(RM_ENOMEM, "pool: out of memory");
    q->base.ops = &k_pg_ops;
    int rc = split_url(url, &q->conninfo, &q->base.weights);
    char *err = NULL, why[512] = "";
    if (!rc && !(q->base.label = url_label(q->conninfo, &err))) {
        if (err) one_line(why, sizeof why, err);
        rc = err ? rm_errorf(RM_EINVAL, "not a PostgreSQL URL libpq accepts: %s", why)
                 : rm_errorf(RM_ENOMEM, "pool: out of memory");
    }
    PQfreemem(err);
    if (!rc && !(q->base.where = strdup(q->base.label))) rc = rm_errorf(RM_ENOMEM, "pool: out of memory");
    if (!rc && q->base.weights && q->base.weights[0] != '/')
        rc = rm_errorf(RM_EINVAL, "%s: weights=%s must be an absolute folder (shared by every server)", q->base.label,
                       q->base.weights);
    if (!rc && q->base.weights && !rm_is_dir(q->base.weights)) rc = rm_mkdirs(q->base.weights);
    if (!rc && getrandom(&q->handle, sizeof q->handle, 0) != (ssize_t)sizeof q->handle)
        q->handle = (int64_t)getpid() * 1000003 + (int64_t)time(NULL);
    q->handle &= INT64_MAX;
    if (!rc) rc = pg_connect(q, &q->db);
    if (!rc) {
        PGresult *r = PQexec(q->db, k_schema);
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) rc = pg_fail(q, r, "making the pool's tables");
        PQclear(r);
        if (rc) PQclear(PQexec(q->db, "ROLLBACK"));
    }
    if (!rc) {
        PGresult *r;
        rc = pg_run(q, "SELECT value FROM meta WHERE key = 'format'", 0, NULL, NULL, NULL, &r, "reading the format");
        if (!rc && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), PG_FORMAT))
            rc = rm_errorf(RM_EUNSUPPORTED, "%s: pool format '%s' (want " PG_FORMAT ")", q->base.label,
                           PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (rc) {
        pg_close(&q->base);
        return rc;
    }
    *out = &q->base;
    return RM_OK;
}
