// http.h — the HTTP layer of `ramole serve`, on libmicrohttpd: listening
// (IPv4, IPv6 or both), I/O threads, connection and body limits, timeouts,
// keep-alive and pipelining, chunked request bodies, and requests answered
// later from any thread (a whole answer, or a stream of pieces).
//
// The handler is called once per request, on an I/O thread, when its body
// is complete. It must not block: it answers at once, or hands the request
// to another thread, which answers later. Every request gets exactly one
// rm_http_reply or one rm_http_stream_open ... rm_http_stream_close; until
// then the connection waits (suspended, costing no I/O thread).
//
// Draining (SIGTERM): requests already received run to their end; new ones
// are answered 503 at once. rm_http_busy() tells when none is left.
#ifndef RM_SERVE_HTTP_H
#define RM_SERVE_HTTP_H
#include "base/json.h"

#include <stddef.h>

typedef struct rm_http rm_http;
typedef struct rm_http_req rm_http_req;
typedef void (*rm_http_handler)(void *user, rm_http_req *r);

typedef struct rm_http_params {
    const char *host;    // an IPv4 or IPv6 address or a host name; "::" listens on both families
    int port;            // 0: a free port (rm_http_port tells which)
    int threads;         // I/O threads (>= 1)
    int max_connections; // open connections at once that may carry any request
    int timeout;         // seconds a connection may stay silent (idle, or sending its head or body slowly)
    // Seconds a request's head and body may take in all, counted from the
    // connection's opening (or its previous answer's end) and not reset by
    // the bytes that trickle in; past it the connection is closed. 0: none.
    int request_timeout;
    int max_per_ip; // open connections from one client address (more are closed at once); 0: no cap
    // Connections past max_connections (up to this many more) that may only
    // ask reserve_path ("GET /health"): anything else gets 503 at once, and
    // each is closed after one answer or 2 s; one per client address. 0:
    // none (past the limit new connections wait in the listen queue).
    int reserve;
    const char *reserve_path;
    size_t max_body; // request bodies above this are answered 413
    size_t max_head; // memory per connection for the request line and headers (larger: 431)
    rm_http_handler handler;
    void *user;
    // Called once per request when it is over (answered, or its client gone:
    // status 0), on an I/O thread: its status, seconds since its head came,
    // and what rm_http_set_log attached (NULL if nothing). May be NULL.
    void (*log)(void *user, const rm_http_req *r, int status, double seconds, void *data);
    // The body limit of a request (from its head), instead of max_body. May be NULL.
    size_t (*body_limit)(void *user, const char *method, const char *path);
    // Called with a request's head, before any of its body is read: 0 lets
    // it go on; else an HTTP status, answered at once with the JSON that
    // was appended to b (the body is then never read). May be NULL.
    int (*head)(void *user, rm_http_req *r, rm_sb *b);
    // A folder in which a request's body is written as it arrives (a file
    // unlinked at once, mapped when complete), or NULL to hold it in
    // memory. May be NULL (all in memory).
    const char *(*spool_dir)(void *user, const char *method, const char *path);
} rm_http_params;
rm_http_params rm_http_default_params(void);

// Binds and starts the I/O threads; the error names the address.
int rm_http_start(const rm_http_params *p, rm_http **out);
int rm_http_port(const rm_http *h);
// The address as a URL (http://127.0.0.1:8080, http://[::1]:8080).
const char *rm_http_url(const rm_http *h);
// New requests get 503 from now on.
void rm_http_drain(rm_http *h);
// Requests received and not yet wholly answered.
int rm_http_busy(rm_http *h);
// Requests handed to the handler whose answer has not been given yet.
int rm_http_handling(rm_http *h);
// Stops the I/O threads and closes every connection. Call once rm_http_busy()
// is 0 (a request waiting for its answer cannot be dropped safely).
void rm_http_stop(rm_http *h);

typedef struct rm_http_stats {
    long long requests, errors; // answers given, and those with a status of 400 or more
    long long deadline_closed;  // connections closed at their request_timeout deadline
    long long client_gone;      // connections closed because the client closed its side before its request was in
    long long reserve_used;     // connections taken into the reserve (the table full)
    int open, open_reserve;     // connections open now, and of them those in the reserve
} rm_http_stats;
void rm_http_get_stats(rm_http *h, rm_http_stats *st);

// ---- a request (valid from the handler call to its answer) ----
const char *rm_http_method(const rm_http_req *r);
const char *rm_http_path(const rm_http_req *r);              // without the query string
const char *rm_http_body(const rm_http_req *r, size_t *len); // NUL-terminated (a spooled body: mapped, read-only)
// The request's number (1, 2, ... in the order heads arrive), and the
// monotonic time its head arrived (seconds; see rm_http_now).
long rm_http_id(const rm_http_req *r);
double rm_http_started(const rm_http_req *r);
double rm_http_now(void);
// Attaches data for the log callback (freed with free_fn after it; replaces
// what was attached). Any thread, before the answer is given.
void rm_http_set_log(rm_http_req *r, void *data, void (*free_fn)(void *));
// A request header (case-insensitive name), or NULL. Only in the handler call.
const char *rm_http_header(rm_http_req *r, const char *name);
// 1 once the client has gone (its connection closed before the answer was
// all sent). Any thread, until the answer is given.
int rm_http_gone(rm_http_req *r);
// A header for the answer (copied; up to 1 KiB of them). Before the answer.
void rm_http_add_header(rm_http_req *r, const char *name, const char *value);

// The whole answer (copied). Any thread.
void rm_http_reply(rm_http_req *r, int status, const char *content_type, const char *body, size_t len);
// A streamed answer of unknown length (chunked on HTTP/1.1): open, write
// pieces, close. stream_write returns -1 once the client has gone (the
// writer may stop early; close is still required). Any thread.
void rm_http_stream_open(rm_http_req *r, int status, const char *content_type);
int rm_http_stream_write(rm_http_req *r, const char *data, size_t len);
void rm_http_stream_close(rm_http_req *r);

// OpenAI's error shape, {"error": {"message", "type", "param", "code"}}
// (param: the request field at fault, code: a short name such as
// "model_not_found"; NULL or "": null), appended to b; and answered with it.
void rm_http_error_json(rm_sb *b, int status, const char *param, const char *code, const char *msg);
void rm_http_reply_error_at(rm_http_req *r, int status, const char *param, const char *code, const char *msg);
void rm_http_reply_error(rm_http_req *r, int status, const char *msg);
#endif
