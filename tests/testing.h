// testing.h — the tiny test framework: tests register themselves, one runner
// (tests/runner.c) runs them all and ends with "N passed, N failed".
//
//   TEST(gguf_roundtrip) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-5); }
//   SKIP("no ../shared")   -- marks the test skipped and returns
//
// A failed CHECK reports file:line and marks the test failed (the test goes
// on, so one run shows every broken check). REQUIRE returns on failure.
//
// Every test runs in a child process of its own (tests/runner.c): a crash
// fails that test only, and what a test leaves in memory or running is gone
// with its process. What a test allocated before a failing REQUIRE is not
// reported as a leak (the child of a failed test skips the leak check); a
// leak in a test that passes fails it under ASan. RAMOLE_TEST_NOFORK=1 runs
// the tests in one process (for a debugger).
#ifndef RM_TESTING_H
#define RM_TESTING_H
#include <math.h>
#include <stdio.h>
#include <sys/types.h>

typedef void (*rm_test_fn)(void);
void rm_test_register(const char *name, const char *file, rm_test_fn fn);
void rm_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rm_test_skip(const char *why);
// Path of the shared reference data ("../shared" by default, env RAMOLE_SHARED),
// or NULL when it is absent.
const char *rm_test_shared(void);
// Path of a fresh temporary directory of this test's own (removed when the
// test ends).
const char *rm_test_tmpdir(void);
// 1 when running under sanitizers (make test-san): long tests may shrink.
int rm_test_sanitized(void);
// The ramole binary under test (env RAMOLE_BIN), for CLI tests.
const char *rm_test_bin(void);
// Runs `ramole ARGS` (args as a shell would split them) with stdout and
// stderr in the test's tmpdir; returns its exit status (-1: could not run).
int rm_test_cli(const char *args);
// What the last rm_test_cli printed on stdout / stderr.
const char *rm_test_cli_out(void);
const char *rm_test_cli_err(void);

// `ramole serve ARGS --port 0` started in a child process (its stderr in
// tmpdir/serve.log); the port is read from that log.
typedef struct rm_test_server {
    pid_t pid;
    int port;
} rm_test_server;
int rm_test_server_start(rm_test_server *sp, const char *args);
// SIGTERM; its exit status (0: it shut down cleanly).
int rm_test_server_stop(rm_test_server *sp);
// A loopback connection to port (-1 on failure); one request on it; the whole
// response read to its end (status returned, *json the parsed body or NULL).
int rm_test_connect(int port);
int rm_test_send(int fd, const char *method, const char *path, const char *body);
struct rm_json;
int rm_test_read_response(int fd, struct rm_json **json);
// One request on a new connection: its status, *json the body.
int rm_test_http(int port, const char *method, const char *path, const char *body, struct rm_json **json);
// One request on a new connection, the whole raw answer (head and body)
// appended to sb; -1 when it could not be sent.
struct rm_sb;
int rm_test_http_raw(int port, const char *method, const char *path, const char *body, struct rm_sb *sb);
// The value of ramole_NAME in a /metrics answer or its text (NAN when absent);
// asked of the server on port; waited for (polled every 50 ms until it equals
// want: 1, or 0 after `ms`).
double rm_test_metric_in(const char *text, const char *name);
double rm_test_metric(int port, const char *name);
int rm_test_wait_metric(int port, const char *name, double want, int ms);

#define TEST(name)                                                                                                     \
    static void test_##name(void);                                                                                     \
    __attribute__((constructor)) static void register_##name(void) { rm_test_register(#name, __FILE__, test_##name); } \
    static void test_##name(void)

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) rm_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                                             \
    } while (0)
#define CHECKF(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (!(cond)) rm_test_fail(__FILE__, __LINE__, __VA_ARGS__);                                                    \
    } while (0)
#define REQUIRE(cond)                                                                                                  \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            rm_test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);                                                    \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)
#define CHECK_NEAR(a, b, tol)                                                                                          \
    do {                                                                                                               \
        double a_ = (a), b_ = (b);                                                                                     \
        if (!(fabs(a_ - b_) <= (tol)))                                                                                 \
            rm_test_fail(__FILE__, __LINE__, "%s = %.9g vs %s = %.9g (tol %g)", #a, a_, #b, b_, (double)(tol));        \
    } while (0)
#define CHECK_OK(expr)                                                                                                 \
    do {                                                                                                               \
        int rc_ = (expr);                                                                                              \
        if (rc_ != 0) rm_test_fail(__FILE__, __LINE__, "%s -> %d: %s", #expr, rc_, rm_last_error());                   \
    } while (0)
#define SKIP(why)                                                                                                      \
    do {                                                                                                               \
        rm_test_skip(why);                                                                                             \
        return;                                                                                                        \
    } while (0)
#endif
