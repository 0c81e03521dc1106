// http.c — see http.h.
//
// A request lives in an rm_http_req held by up to three owners, counted in
// refs: libmicrohttpd's connection (until it reports the request completed),
// the handler (until the answer is given) and a streamed response (until
// libmicrohttpd destroys it). Whoever drops the last reference frees it.
//
// Answers given from other threads wake the connection: it is suspended
// (libmicrohttpd stops polling it) whenever it waits for us, and resumed
// when there is something to send. Both happen under the request's lock, so
// a connection is resumed only while it is suspended and no wake-up is lost.
//
// Connections: libmicrohttpd's own timeout counts silence, so a client that
// sends a byte a second keeps a connection for ever. Each connection is
// recorded from libmicrohttpd's start notice to its close notice with the
// deadline its request must be in by; a watcher thread shuts the socket
// down (libmicrohttpd then sees the end of the stream and closes it) once a
// deadline passes. The socket is closed only after the close notice, which
// takes the same lock, so the watcher never touches a descriptor reused by
// another connection. libmicrohttpd accepts up to max_connections + reserve;
// the connections past max_connections are the reserve: they may only ask
// reserve_path (/health), one per client address, get a short deadline and
// are closed after one answer, so a full table does not hide the server's
// health (unless as many addresses as the reserve has places fill it too).
#define _GNU_SOURCE
#include "serve/http.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_RECEIVING, ST_WAITING, ST_REPLY, ST_STREAM, ST_ANSWERED };

#define RESERVE_SECONDS 2.0 // a reserve connection's deadline for its head and answer

// A connection from its start notice to its close notice (rm_http.cmu).
typedef struct conn_rec {
    int fd;
    int reserve;            // taken past max_connections: reserve_path only
    unsigned char addr[16]; // the client's address (IPv4 in the first 4 bytes)
    double deadline;        // the request must be in by then (rm_http_now; 0: none now)
    int waiting;            // for a request (not yet in)
    int eof_passes;         // watcher passes in a row that found the client's side closed while waiting
    struct conn_rec *prev, *next;
} conn_rec;

struct rm_http_req {
    pthread_mutex_t mu;
    int refs;
    rm_http *h;
    struct MHD_Connection *conn; // NULL once the client is gone
    char method[16];
    char *path;
    rm_sb body;   // held in memory, or
    int spool_fd; // written to this file (-1: none)
    char *map;    // and mapped when complete (map_len bytes: the body and a NUL)
    size_t map_len, body_len;
    int too_large;  // the body passed the limit: the rest is dropped, the answer is 413
    size_t dropped; // bytes dropped so far
    rm_sb headers;  // the answer's extra headers: name NUL value NUL ...
    int state;      // ST_*
    int suspended;  // the connection waits for wake()
    int status;
    char type[64];
    rm_sb out; // the answer, or the stream's pieces not yet sent
    size_t out_sent;
    int stream_done;
    long id;
    size_t limit; // of the body
    double t0;    // when the head came (rm_http_now)
    int answered; // the status queued, 0 until then
    int close;    // a reserve connection: closed after its answer
    void *log_data;
    void (*log_free)(void *);
};

struct rm_http {
    rm_http_params p;
    struct MHD_Daemon *d;
    int fd, port;
    char url[128];
    atomic_int draining, busy, handling;
    atomic_llong n_requests, n_errors, n_deadline, n_reserve, n_gone;
    atomic_long next_id;
    pthread_mutex_t cmu; // guards what follows
    pthread_cond_t ccv;
    conn_rec *conns; // open connections
    int n_open;      // connections in the list
    int n_main;      // of them, not in the reserve
    int watch_stop;
    pthread_t watcher;
    int watching;
};

rm_http_params rm_http_default_params(void) {
    return (rm_http_params){.host = "127.0.0.1",
                            .port = 8080,
                            .threads = 2,
                            .max_connections = 256,
                            .timeout = 60,
                            .request_timeout = 60,
                            .max_per_ip = 64,
                            .reserve = 256,
                            .reserve_path = "/health",
                            .max_body = 4 << 20,
                            .max_head = 64 << 10};
}

// ---- requests ------------------------------------------------------------------

double rm_http_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

long rm_http_id(const rm_http_req *r) { return r->id; }
double rm_http_started(const rm_http_req *r) { return r->t0; }

void rm_http_set_log(rm_http_req *r, void *data, void (*free_fn)(void *)) {
    pthread_mutex_lock(&r->mu);
    if (r->log_free) r->log_free(r->log_data);
    r->log_data = data, r->log_free = free_fn;
    pthread_mutex_unlock(&r->mu);
}

static void req_unref(rm_http_req *r) {
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left) return;
    if (r->log_free) r->log_free(r->log_data);
    pthread_mutex_destroy(&r->mu);
    free(r->path);
    if (r->map) munmap(r->map, r->map_len);
    if (r->spool_fd >= 0) close(r->spool_fd);
    rm_sb_free(&r->headers);
    rm_sb_free(&r->body);
    rm_sb_free(&r->out);
    free(r);
}

// Resumes the connection when it waits for us (lock held).
static void wake(rm_http_req *r) {
    if (r->suspended && r->conn) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
    }
}

const char *rm_http_method(const rm_http_req *r) { return r->method; }
const char *rm_http_path(const rm_http_req *r) { return r->path; }
const char *rm_http_body(const rm_http_req *r, size_t *len) {
    *len = r->body_len;
    return r->map ? r->map : r->body.buf ? r->body.buf : "";
}
const char *rm_http_header(rm_http_req *r, const char *name) {
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

int rm_http_gone(rm_http_req *r) {
    pthread_mutex_lock(&r->mu);
    int gone = !r->conn;
    pthread_mutex_unlock(&r->mu);
    return gone;
}

void rm_http_add_header(rm_http_req *r, const char *name, const char *value) {
    pthread_mutex_lock(&r->mu);
    if (r->headers.len + strlen(name) + strlen(value) + 2 <= 1024) {
        rm_sb_putn(&r->headers, name, strlen(name) + 1);
        rm_sb_putn(&r->headers, value, strlen(value) + 1);
    }
    pthread_mutex_unlock(&r->mu);
}

// The extra headers of r's answer onto resp.
static void add_headers(const rm_http_req *r, struct MHD_Response *resp) {
    for (size_t at = 0; !r->headers.oom && at < r->headers.len;) {
        const char *name = r->headers.buf + at, *value = name + strlen(name) + 1;
        MHD_add_response_header(resp, name, value);
        at += strlen(name) + strlen(value) + 2;
    }
}

static void count_answer(rm_http *h, rm_http_req *r, int status) {
    r->answered = status;
    atomic_fetch_add(&h->n_requests, 1);
    if (status >= 400) atomic_fetch_add(&h->n_errors, 1);
}

void rm_http_reply(rm_http_req *r, int status, const char *content_type, const char *body, size_t len) {
    pthread_mutex_lock(&r->mu);
    r->status = status;
    snprintf(r->type, sizeof r->type, "%s", content_type);
    rm_sb_putn(&r->out, body, len);
    r->state = ST_REPLY;
    wake(r);
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_sub(&r->h->handling, 1);
    req_unref(r); // the handler's reference
}

void rm_http_stream_open(rm_http_req *r, int status, const char *content_type) {
    pthread_mutex_lock(&r->mu);
    r->status = status;
    snprintf(r->type, sizeof r->type, "%s", content_type);
    r->state = ST_STREAM;
    wake(r);
    pthread_mutex_unlock(&r->mu);
}

int rm_http_stream_write(rm_http_req *r, const char *data, size_t len) {
    pthread_mutex_lock(&r->mu);
    int gone = !r->conn;
    if (!gone) {
        rm_sb_putn(&r->out, data, len);
        wake(r);
    }
    pthread_mutex_unlock(&r->mu);
    return gone ? -1 : 0;
}

void rm_http_stream_close(rm_http_req *r) {
    pthread_mutex_lock(&r->mu);
    r->stream_done = 1;
    wake(r);
    pthread_mutex_unlock(&r->mu);
    atomic_fetch_sub(&r->h->handling, 1);
    req_unref(r);
}

// ---- libmicrohttpd callbacks -----------------------------------------------------

// The stream's next bytes; none yet: the connection sleeps until a write.
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    rm_http_req *r = cls;
    ssize_t n = 0;
    pthread_mutex_lock(&r->mu);
    size_t have = r->out.len - r->out_sent;
    if (have) {
        n = (ssize_t)(have < max ? have : max);
        memcpy(buf, r->out.buf + r->out_sent, (size_t)n);
        r->out_sent += (size_t)n;
        if (r->out_sent == r->out.len) r->out.len = r->out_sent = 0;
    } else if (r->stream_done) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else if (r->conn) {
        r->suspended = 1;
        MHD_suspend_connection(r->conn);
    } else {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void stream_free(void *cls) { req_unref(cls); }

static enum MHD_Result queue(const rm_http_req *r, struct MHD_Connection *conn, int status, const char *type,
                             const char *body, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    add_headers(r, resp);
    if (r->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ok;
}

// The error shape every answer of ours uses (OpenAI's).
void rm_http_error_json(rm_sb *b, int status, const char *param, const char *code, const char *msg) {
    const char *type = status >= 500 ? "server_error" : "invalid_request_error"; // OpenAI's 401 too
    rm_sb_puts(b, "{\"error\": {\"message\": ");
    rm_sb_json_str(b, msg, strlen(msg));
    rm_sb_printf(b, ", \"type\": \"%s\", \"param\": ", type);
    if (param && *param) rm_sb_json_str(b, param, strlen(param));
    else rm_sb_puts(b, "null");
    rm_sb_puts(b, ", \"code\": ");
    if (code && *code) rm_sb_json_str(b, code, strlen(code));
    else rm_sb_puts(b, "null");
    rm_sb_puts(b, "}}\n");
}

void rm_http_reply_error_at(rm_http_req *r, int status, const char *param, const char *code, const char *msg) {
    rm_sb b;
    rm_sb_init(&b);
    rm_http_error_json(&b, status, param, code, msg);
    rm_http_reply(r, b.oom ? 500 : status, "application/json", b.buf ? b.buf : "", b.len);
    rm_sb_free(&b);
}

void rm_http_reply_error(rm_http_req *r, int status, const char *msg) {
    rm_http_reply_error_at(r, status, NULL, NULL, msg);
}

// A JSON answer given by this layer itself, before the handler sees the request.
static enum MHD_Result queue_json(rm_http *h, rm_http_req *r, struct MHD_Connection *conn, int status, const rm_sb *b) {
    enum MHD_Result ok = b->oom ? MHD_NO : queue(r, conn, status, "application/json", b->buf ? b->buf : "", b->len);
    if (ok == MHD_YES) count_answer(h, r, status);
    return ok;
}

static enum MHD_Result queue_error(rm_http *h, rm_http_req *r, struct MHD_Connection *conn, int status,
                                   const char *msg) {
    rm_sb b;
    rm_sb_init(&b);
    rm_http_error_json(&b, status, NULL, NULL, msg);
    enum MHD_Result ok = queue_json(h, r, conn, status, &b);
    rm_sb_free(&b);
    return ok;
}

// A file for a body in dir, unlinked at once (nothing is left behind, even
// after a crash); -1 when it cannot be made.
static int spool_open(const char *dir) {
    char path[1024];
    if (snprintf(path, sizeof path, "%s/.body-XXXXXX", dir) >= (int)sizeof path) return -1;
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0 && rm_mkdirs(dir) == RM_OK) {
        snprintf(path, sizeof path, "%s/.body-XXXXXX", dir); // a failed try may have changed it
        fd = mkostemp(path, O_CLOEXEC);
    }
    if (fd >= 0) unlink(path);
    return fd;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

// A spooled body complete: a NUL after it, then the file mapped. 0 or -1.
static int spool_map(rm_http_req *r) {
    if (write_all(r->spool_fd, "", 1)) return -1;
    r->map_len = r->body_len + 1;
    void *m = mmap(NULL, r->map_len, PROT_READ, MAP_PRIVATE, r->spool_fd, 0);
    if (m == MAP_FAILED) return -1;
    r->map = m;
    return 0;
}

// How a request says where its body ends.
typedef struct framing {
    int n_length, chunked;
} framing;
static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    framing *f = cls;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) f->n_length++;
    if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) && value && strcasestr(value, "chunked")) f->chunked = 1;
    return MHD_YES;
}

// ---- connections: deadlines and the reserve ------------------------------------------

static conn_rec *conn_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

// c's request is in (waiting 0: no deadline), or c waits for its next one
// (the deadline seconds from now; 0: none).
static void set_waiting(rm_http *h, conn_rec *c, int waiting, double seconds) {
    if (!c) return;
    pthread_mutex_lock(&h->cmu);
    c->waiting = waiting;
    c->eof_passes = 0;
    c->deadline = waiting && seconds > 0 ? rm_http_now() + seconds : 0;
    pthread_mutex_unlock(&h->cmu);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    rm_http *h = cls;
    conn_rec *c = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (!c) return;
        pthread_mutex_lock(&h->cmu);
        if (c->prev) c->prev->next = c->next;
        else h->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        h->n_main -= !c->reserve;
        h->n_open--;
        pthread_mutex_unlock(&h->cmu);
        free(c);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!fi) return;
    if (!(c = calloc(1, sizeof *c))) { // cannot be watched: not kept
        shutdown(fi->connect_fd, SHUT_RDWR);
        return;
    }
    c->fd = fi->connect_fd;
    const union MHD_ConnectionInfo *ai = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ai ? ai->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET) memcpy(c->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa && sa->sa_family == AF_INET6) memcpy(c->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    pthread_mutex_lock(&h->cmu);
    c->reserve = h->n_main >= h->p.max_connections;
    h->n_main += !c->reserve;
    h->n_open++;
    for (conn_rec *o = h->conns; c->reserve && o; o = o->next)
        if (o->reserve && !memcmp(o->addr, c->addr, sizeof c->addr)) { // one reserve connection per address
            shutdown(c->fd, SHUT_RDWR);
            break;
        }
    double t = c->reserve ? RESERVE_SECONDS : h->p.request_timeout;
    c->deadline = t > 0 ? rm_http_now() + t : 0;
    c->waiting = 1;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    pthread_mutex_unlock(&h->cmu);
    if (c->reserve) atomic_fetch_add(&h->n_reserve, 1);
    *socket_context = c;
}

// Four times a second, shuts down the connections whose deadline has passed,
// and those waiting for a request whose client has closed its side: the end
// of the stream is all there is to read, on two passes in a row (a request
// whose last bytes libmicrohttpd has just read is in by then), so the request
// can never come in full, and libmicrohttpd would keep the place until the
// deadline.
static void *watch_main(void *arg) {
    rm_http *h = arg;
    pthread_mutex_lock(&h->cmu);
    while (!h->watch_stop) {
        double now = rm_http_now();
        for (conn_rec *c = h->conns; c; c = c->next) {
            if (!c->waiting) continue; // a request in hand: its answer may take its time
            char b;
            int late = c->deadline > 0 && now >= c->deadline;
            int eof = !late && recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
            c->eof_passes = eof ? c->eof_passes + 1 : 0;
            int gone = c->eof_passes >= 2;
            if (!late && !gone) continue;
            c->deadline = 0;
            c->waiting = 0;
            shutdown(c->fd, SHUT_RDWR);
            atomic_fetch_add(late ? &h->n_deadline : &h->n_gone, 1);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 250000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&h->ccv, &h->cmu, &ts);
    }
    pthread_mutex_unlock(&h->cmu);
    return NULL;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    rm_http *h = cls;
    rm_http_req *r = *con_cls;
    if (!r) { // the head is in
        if (!(r = calloc(1, sizeof *r)) || !(r->path = strdup(url))) {
            free(r);
            return MHD_NO;
        }
        pthread_mutex_init(&r->mu, NULL);
        r->refs = 1, r->h = h, r->conn = conn, r->spool_fd = -1;
        r->id = atomic_fetch_add(&h->next_id, 1) + 1, r->t0 = rm_http_now();
        snprintf(r->method, sizeof r->method, "%s", method);
        rm_sb_init(&r->body);
        rm_sb_init(&r->out);
        rm_sb_init(&r->headers);
        *con_cls = r;
        atomic_fetch_add(&h->busy, 1);
        conn_rec *c = conn_of(conn);
        if (c && c->reserve) { // the table is full: only the reserve path
            r->close = 1;
            if (strcmp(method, "GET") || !h->p.reserve_path || strcmp(url, h->p.reserve_path)) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "the server has its %d connections open; only GET %.60s is answered now, retry later",
                         h->p.max_connections, h->p.reserve_path ? h->p.reserve_path : "(none)");
                return queue_error(h, r, conn, 503, msg);
            }
        }
        if (atomic_load(&h->draining)) return queue_error(h, r, conn, 503, "the server is shutting down");
        framing f = {0};
        MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
        if (f.n_length > 1 || (f.n_length && f.chunked)) // a request smuggler's favourites (RFC 9112 6.3)
            return queue_error(h, r, conn, 400,
                               "a request needs one Content-Length, or Transfer-Encoding: chunked, not both or two");
        r->limit = h->p.body_limit ? h->p.body_limit(h->p.user, method, url) : h->p.max_body;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > r->limit) {
            char msg[96];
            snprintf(msg, sizeof msg, "request body too large (limit %zu bytes)", r->limit);
            return queue_error(h, r, conn, 413, msg);
        }
        if (h->p.head) { // keys and the like: refused before any of the body is read
            rm_sb b;
            rm_sb_init(&b);
            int status = h->p.head(h->p.user, r, &b);
            enum MHD_Result ok = status ? queue_json(h, r, conn, status, &b) : MHD_YES;
            rm_sb_free(&b);
            if (status) return ok;
        }
        const char *dir = h->p.spool_dir ? h->p.spool_dir(h->p.user, method, url) : NULL;
        if (dir && (r->spool_fd = spool_open(dir)) < 0)
            return queue_error(h, r, conn, 500, "cannot write the request body to disk");
        return MHD_YES;
    }
    if (*upload_size) { // a piece of the body (chunked bodies arrive decoded)
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large || r->body_len + n > r->limit) {
            // past the limit (a chunked body): the rest is dropped as it comes
            // and answered 413 at its end; one that goes on for another limit's
            // worth is cut off
            r->too_large = 1, r->dropped += n;
            return r->dropped > r->limit ? MHD_NO : MHD_YES;
        }
        if (r->spool_fd >= 0) {
            if (write_all(r->spool_fd, upload, n)) return MHD_NO;
        } else if (rm_sb_putn(&r->body, upload, n), r->body.oom) {
            return MHD_NO;
        }
        r->body_len += n;
        return MHD_YES;
    }
    if (r->state == ST_RECEIVING && r->too_large) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body too large (limit %zu bytes)", r->limit);
        r->state = ST_ANSWERED;
        return queue_error(h, r, conn, 413, msg);
    }
    if (r->state == ST_RECEIVING && r->spool_fd >= 0 && !r->map && spool_map(r)) {
        r->state = ST_ANSWERED;
        return queue_error(h, r, conn, 500, "cannot read the request body back from disk");
    }
    pthread_mutex_lock(&r->mu);
    if (r->state == ST_RECEIVING) { // the whole request is in: the handler takes it
        r->state = ST_WAITING;
        r->refs++;
        pthread_mutex_unlock(&r->mu);
        if (!r->close) set_waiting(h, conn_of(conn), 0, 0); // in: the answer may take its time
        atomic_fetch_add(&h->handling, 1);
        h->p.handler(h->p.user, r);
        pthread_mutex_lock(&r->mu);
    }
    enum MHD_Result ok = MHD_YES;
    if (r->state == ST_REPLY) {
        ok = queue(r, conn, r->status, r->type, r->out.buf ? r->out.buf : "", r->out.len);
        if (ok == MHD_YES) count_answer(h, r, r->status);
        r->state = ST_ANSWERED;
    } else if (r->state == ST_STREAM) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, stream_read, r, stream_free);
        if (resp) {
            r->refs++; // the response's, dropped by stream_free
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
            add_headers(r, resp);
            if (r->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
            ok = MHD_queue_response(conn, (unsigned)r->status, resp);
            MHD_destroy_response(resp);
            if (ok == MHD_YES) count_answer(h, r, r->status);
        } else {
            ok = MHD_NO;
        }
        r->state = ST_ANSWERED;
    } else if (r->state == ST_WAITING) { // answered later, from another thread
        r->suspended = 1;
        MHD_suspend_connection(conn);
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode why) {
    rm_http *h = cls;
    rm_http_req *r = *con_cls;
    conn_rec *c = conn_of(conn);
    if (c && !c->reserve) set_waiting(h, c, 1, h->p.request_timeout); // the next request's, if the connection stays
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    r->conn = NULL, r->suspended = 0;
    void *data = r->log_data;
    int status = why == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->answered : 0;
    pthread_mutex_unlock(&r->mu);
    if (h->p.log) h->p.log(h->p.user, r, status, rm_http_now() - r->t0, data);
    atomic_fetch_sub(&h->busy, 1);
    req_unref(r);
}

// ---- the daemon ------------------------------------------------------------------

// A listening socket on host:port (IPv6 sockets also take IPv4 when the host is "::").
static int listen_on(rm_http *h, const char *host, int port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int e = getaddrinfo(host, ps, &hints, &res);
    if (e) return rm_errorf(RM_EINVAL, "cannot listen on %s: %s", host, gai_strerror(e));
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1, zero = 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 4096)) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return rm_errorf(RM_EIO, "cannot listen on %s port %d: %s", host, port, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[INET6_ADDRSTRLEN] = "?";
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a6->sin6_addr, addr, sizeof addr);
        h->port = ntohs(a6->sin6_port);
        snprintf(h->url, sizeof h->url, "http://[%s]:%d", addr, h->port);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a4->sin_addr, addr, sizeof addr);
        h->port = ntohs(a4->sin_port);
        snprintf(h->url, sizeof h->url, "http://%s:%d", addr, h->port);
    }
    h->fd = fd;
    return RM_OK;
}

// Stops the watcher (if it runs) and frees h.
static void http_free(rm_http *h) {
    if (h->watching) {
        pthread_mutex_lock(&h->cmu);
        h->watch_stop = 1;
        pthread_cond_signal(&h->ccv);
        pthread_mutex_unlock(&h->cmu);
        pthread_join(h->watcher, NULL);
    }
    pthread_mutex_destroy(&h->cmu);
    pthread_cond_destroy(&h->ccv);
    free(h);
}

int rm_http_start(const rm_http_params *p, rm_http **out) {
    *out = NULL;
    if (!p->handler || p->threads < 1 || p->max_connections < 1 || p->timeout < 1 || p->max_head < 4096 ||
        p->request_timeout < 0 || p->max_per_ip < 0 || p->reserve < 0)
        return rm_errorf(RM_EINVAL,
                         "http: bad parameters (threads %d, connections %d, timeout %d, head %zu, request timeout %d, "
                         "per address %d, reserve %d)",
                         p->threads, p->max_connections, p->timeout, p->max_head, p->request_timeout, p->max_per_ip,
                         p->reserve);
    rm_http *h = calloc(1, sizeof *h);
    if (!h) return rm_errorf(RM_ENOMEM, "out of memory");
    h->p = *p;
    h->fd = -1;
    pthread_mutex_init(&h->cmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->ccv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = listen_on(h, p->host ? p->host : "127.0.0.1", p->port);
    if (!rc && pthread_create(&h->watcher, NULL, watch_main, h))
        rc = rm_errorf(RM_ENOMEM, "http: cannot start the watcher thread");
    if (rc) {
        if (h->fd >= 0) close(h->fd);
        http_free(h);
        return rc;
    }
    h->watching = 1;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    struct MHD_OptionItem opts[10] = {
        {MHD_OPTION_LISTEN_SOCKET, h->fd, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, p->max_connections + p->reserve, NULL},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h},
        {MHD_OPTION_CONNECTION_TIMEOUT, p->timeout, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)p->max_head, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h},
    };
    int n = 6;
    if (p->max_per_ip) opts[n++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT, p->max_per_ip, NULL};
    if (p->threads > 1) opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, p->threads, NULL};
    opts[n] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, h, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!h->d) {
        close(h->fd);
        http_free(h);
        return rm_errorf(RM_EIO, "http: cannot start the server threads");
    }
    *out = h;
    return RM_OK;
}

int rm_http_port(const rm_http *h) { return h->port; }
const char *rm_http_url(const rm_http *h) { return h->url; }
void rm_http_drain(rm_http *h) { atomic_store(&h->draining, 1); }
int rm_http_busy(rm_http *h) { return atomic_load(&h->busy); }
int rm_http_handling(rm_http *h) { return atomic_load(&h->handling); }

void rm_http_get_stats(rm_http *h, rm_http_stats *st) {
    st->requests = atomic_load(&h->n_requests);
    st->errors = atomic_load(&h->n_errors);
    st->deadline_closed = atomic_load(&h->n_deadline);
    st->client_gone = atomic_load(&h->n_gone);
    st->reserve_used = atomic_load(&h->n_reserve);
    pthread_mutex_lock(&h->cmu);
    st->open = h->n_open;
    st->open_reserve = h->n_open - h->n_main;
    pthread_mutex_unlock(&h->cmu);
}

void rm_http_stop(rm_http *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    close(h->fd);
    http_free(h);
}
