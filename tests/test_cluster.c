// test_cluster.c — replicas of `ramole serve` sharing one pool in
// PostgreSQL (docs/deploy.md): what one replica uploads or deletes the other
// retrieves or stops retrieving; a replica killed during uploads leaves no
// half adapter and catches up when it returns; a database restart is
// survived. Skipped, saying why, when PostgreSQL's binaries are absent. The
// times printed are for information; nothing here asserts wall-clock time
// (the waits are generous loops).
#define _GNU_SOURCE
#include "testing.h"
#include "pg_helpers.h"
#include "serve_helpers.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "retrieve/embed.h"
#include "retrieve/pool.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// A request with a body of the given type on a new connection (no SIGPIPE
// when the server is gone): its status (-1: no answer), *json the body.
static int cl_request(int port, const char *method, const char *path, const char *ctype, const char *body, size_t len,
                      rm_json **json) {
    *json = NULL;
    int fd = rm_test_connect(port);
    if (fd < 0) return -1;
    char head[512];
    int n =
        snprintf(head, sizeof head,
                 "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                 method, path, ctype, len);
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n || (len && send(fd, body, len, MSG_NOSIGNAL) != (ssize_t)len)) {
        close(fd);
        return -1;
    }
    int status = rm_test_read_response(fd, json);
    return status ? status : -1;
}

// POST /v1/adapters with the adapter file and the sample inputs of task a
// (multipart/form-data): the status.
static int cl_upload(int port, const char *name, const char *gguf, int a) {
    rm_sb b, samples;
    rm_sb_init(&b), rm_sb_init(&samples);
    rm_sb_puts(&samples, "[");
    for (int i = 0; i < 3; i++) {
        if (i) rm_sb_puts(&samples, ", ");
        rm_sb_json_str(&samples, serve_samples[a][i], strlen(serve_samples[a][i]));
    }
    rm_sb_puts(&samples, "]");
    char *data = NULL;
    size_t len = 0;
    int status = -1;
    if (!rm_read_file(gguf, &data, &len)) {
        const char *fields[2][2] = {{"name", name}, {"samples", samples.buf}};
        for (int f = 0; f < 2; f++)
            rm_sb_printf(&b, "--cLuStEr\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", fields[f][0],
                         fields[f][1]);
        rm_sb_puts(&b, "--cLuStEr\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.gguf\"\r\n\r\n");
        rm_sb_putn(&b, data, len);
        rm_sb_puts(&b, "\r\n--cLuStEr--\r\n");
        rm_json *j = NULL;
        status = cl_request(port, "POST", "/v1/adapters", "multipart/form-data; boundary=cLuStEr", b.buf, b.len, &j);
        rm_json_free(j);
    }
    free(data);
    rm_sb_free(&b), rm_sb_free(&samples);
    return status;
}

// The names of the adapters a retrieving completion on port chose for
// query (comma-separated in out; "" when the request failed).
static int cl_retrieve(int port, const char *query, int k, char *out, size_t cap) {
    char req[1024];
    snprintf(req, sizeof req, "{\"prompt\": \"%s\", \"retrieve\": %d, \"max_tokens\": 1, \"temperature\": 0}", query,
             k);
    rm_json *j = NULL;
    int status = cl_request(port, "POST", "/v1/completions", "application/json", req, strlen(req), &j);
    const rm_json *ad = j ? rm_json_get(j, "adapters") : NULL;
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; ad && i < ad->n && at + 2 < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, "%s%s,", i ? "" : ",", rm_json_get_str(&ad->items[i], "name", "?"));
    rm_json_free(j);
    return status;
}

// 1 when the adapter called name answers as a model on port.
static int cl_serves(int port, const char *name) {
    char req[512];
    snprintf(req, sizeof req, "{\"model\": \"%s\", \"prompt\": \"hello\", \"max_tokens\": 1, \"temperature\": 0}",
             name);
    rm_json *j = NULL;
    int status = cl_request(port, "POST", "/v1/completions", "application/json", req, strlen(req), &j);
    rm_json_free(j);
    return status == 200;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct cluster {
    char url[700], model[512];
    char w[5][512];      // the five tasks' adapter files
    rm_test_server r[2]; // replicas A and B
} cluster;

// Starts replica i on the cluster's pool; its log is tmpdir/replica-<i>.log.
static int cl_start(cluster *c, int i) {
    char args[2048], from[600], to[600];
    snprintf(args, sizeof args, "-m %s --pool '%s' -t 1 --ctx 256", c->model, c->url);
    if (rm_test_server_start(&c->r[i], args)) return -1;
    snprintf(from, sizeof from, "%s/serve.log", rm_test_tmpdir());
    snprintf(to, sizeof to, "%s/replica-%c.log", rm_test_tmpdir(), 'a' + i);
    return rename(from, to); // the server keeps writing to it
}

// A pool in database db (embedder fitted on every task's samples, tasks
// 0..2's adapters in it) with its weights folder, and replicas A and B on it.
static int cl_up(cluster *c, const char *db) {
    char extra[600];
    snprintf(extra, sizeof extra, "weights=%s/%s-weights", rm_test_tmpdir(), db);
    if (!serve_tiny_model() || rm_test_pg_url(db, extra, c->url, sizeof c->url)) return -1;
    snprintf(c->model, sizeof c->model, "%s", serve_tiny_model());
    if (serve_make_adapters(c->model, c->w) || serve_make_pool(c->url, (const int[]){1, 1, 1, 0, 0}, c->w)) return -1;
    return cl_start(c, 0) || cl_start(c, 1) ? -1 : 0;
}

static void cl_down(cluster *c) {
    for (int i = 0; i < 2; i++)
        if (c->r[i].pid > 0) CHECKF(rm_test_server_stop(&c->r[i]) == 0, "replica %c did not stop cleanly", 'A' + i);
    // upload bodies were spooled in the weights folder, not in a folder named
    // after the URL in the working directory (what mkdir -p makes of it)
    char stray[sizeof c->url];
    snprintf(stray, sizeof stray, "postgresql:/%.680s", c->url + 13);
    CHECKF(strncmp(c->url, "postgresql://", 13) == 0 && access(stray, F_OK) != 0, "%s was created", stray);
}

// Waits (polling, up to 20 s) until retrieval on port does (want 1) or does
// not (want 0) choose name for query; the seconds it took, or -1.
static double cl_wait_retrieved(int port, const char *query, const char *name, int want) {
    char got[1024], needle[300];
    snprintf(needle, sizeof needle, ",%s,", name);
    double t0 = now_s();
    while (now_s() - t0 < 20) {
        int status = cl_retrieve(port, query, 3, got, sizeof got);
        if (status == 200 && (strstr(got, needle) != NULL) == want) return now_s() - t0;
        nap_ms(10);
    }
    return -1;
}

static const char *k_weather_q = "Will it snow in Berlin? Give the weather forecast.";

// Upload through A, retrieved through B; delete through B, gone in A.
TEST(cluster_upload_via_a_retrieved_via_b) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    if (!rm_test_pg_available()) SKIP(rm_test_pg_why());
    cluster c = {0};
    REQUIRE(cl_up(&c, "cluster_sync") == 0);
    int a = c.r[0].port, b = c.r[1].port;
    char got[1024];
    CHECK(cl_retrieve(b, k_weather_q, 3, got, sizeof got) == 200 && !strstr(got, ",weather,"));
    double t0 = now_s();
    CHECK(cl_upload(a, "weather", c.w[3], 3) == 201);
    double up = now_s() - t0, seen = cl_wait_retrieved(b, k_weather_q, "weather", 1);
    CHECKF(seen >= 0, "B never retrieved what A stored");
    printf("     upload through A answered in %.0f ms; B retrieved it %.0f ms after the answer\n", up * 1e3,
           seen * 1e3);
    fflush(stdout);
    CHECK(cl_serves(b, "weather"));
    rm_json *j = NULL;
    CHECK(cl_request(b, "DELETE", "/v1/adapters/weather", "application/json", "", 0, &j) == 200);
    rm_json_free(j);
    double gone = cl_wait_retrieved(a, k_weather_q, "weather", 0);
    CHECKF(gone >= 0, "A still retrieves what B deleted");
    printf("     deleted through B; gone from A's retrieval %.0f ms after the answer\n", gone * 1e3);
    fflush(stdout);
    CHECK(!cl_serves(a, "weather"));
    // the same name again through B, retrievable through A
    CHECK(cl_upload(b, "weather", c.w[3], 3) == 201);
    CHECK(cl_wait_retrieved(a, k_weather_q, "weather", 1) >= 0);
    cl_down(&c);
}

// Every adapter of the pool in database url: it passes rm_pool_check (no
// half adapter) and the names into names (comma-separated, ",a,b,").
static int cl_pool_names(const char *url, char *names, size_t cap) {
    rm_pool *p = NULL;
    int rc = rm_pool_open(url, NULL, &p);
    if (!rc) rc = rm_pool_check(p);
    rm_adapter_info *list = NULL;
    int n = 0;
    if (!rc) rc = rm_pool_list(p, &list, &n);
    size_t at = (size_t)snprintf(names, cap, ",");
    for (int i = 0; !rc && i < n && at + 2 < cap; i++) {
        at += (size_t)snprintf(names + at, cap - at, "%s,", list[i].name);
        if (!list[i].weights || !rm_file_exists(list[i].weights))
            rc = rm_errorf(RM_EFORMAT, "%s: weights %s missing", list[i].name,
                           list[i].weights ? list[i].weights : "(none)");
    }
    rm_pool_free_list(list, n);
    rm_pool_close(p);
    return rc;
}

// kill -9 of replica A during 20 uploads through it: every upload answered
// 201 is served by B, the pool holds no half adapter, and A restarted
// serves everything B does.
TEST(cluster_kill_replica_during_uploads) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    if (!rm_test_pg_available()) SKIP(rm_test_pg_why());
    cluster c = {0};
    REQUIRE(cl_up(&c, "cluster_kill") == 0);
    int ok[20] = {0}, killed_at = -1;
    for (int i = 0; i < 20; i++) {
        char name[32];
        snprintf(name, sizeof name, "up%02d", i);
        if (i == 8) { // A dies while this upload is under way
            pid_t pid = fork();
            REQUIRE(pid >= 0);
            if (pid == 0) {
                nap_ms(5 + (int)(getpid() % 20));
                kill(c.r[0].pid, SIGKILL);
                _exit(0);
            }
            ok[i] = cl_upload(c.r[0].port, name, c.w[i % 5], i % 5) == 201;
            waitpid(pid, NULL, 0);
            int st;
            waitpid(c.r[0].pid, &st, 0);
            CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
            killed_at = i;
            REQUIRE(cl_start(&c, 0) == 0); // A returns
            continue;
        }
        ok[i] = cl_upload(c.r[0].port, name, c.w[i % 5], i % 5) == 201;
        CHECKF(ok[i], "upload %d through A", i);
    }
    char names[2048];
    CHECK_OK(cl_pool_names(c.url, names, sizeof names));
    for (int i = 0; i < 20; i++) {
        char name[32], needle[40];
        snprintf(name, sizeof name, "up%02d", i);
        snprintf(needle, sizeof needle, ",%s,", name);
        if (ok[i]) CHECKF(strstr(names, needle), "%s was answered 201 but is not in the pool", name);
        int served = 0; // by B within a generous wait (its follower catches up)
        for (int t = 0; t < 200 && !served; t++) served = cl_serves(c.r[1].port, name) || (nap_ms(10), 0);
        CHECKF(served == (strstr(names, needle) != NULL), "%s: in the pool %d, served by B %d", name,
               strstr(names, needle) != NULL, served);
        CHECKF(cl_serves(c.r[0].port, name) == served, "%s: A restarted disagrees with B", name);
    }
    printf("     A killed during upload %d (answered %s)\n", killed_at, ok[killed_at] ? "201" : "without 201");
    fflush(stdout);
    cl_down(&c);
}

// Load: a child process sending retrieving completions to both replicas
// until SIGTERM, then writing how many were answered 200 and how many not.
static volatile sig_atomic_t g_load_stop;
static void load_stop(int sig) { (void)sig, g_load_stop = 1; }

static pid_t cl_load_start(const cluster *c, int *fd) {
    int pfd[2];
    if (pipe(pfd)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGTERM, load_stop);
        long n[2] = {0, 0};
        char got[1024];
        for (int i = 0; !g_load_stop; i++) {
            int status = cl_retrieve(c->r[i % 2].port, serve_samples[i % 5][i % 3], 2, got, sizeof got);
            n[status == 200]++;
        }
        _exit(write(pfd[1], n, sizeof n) == sizeof n ? 0 : 1);
    }
    close(pfd[1]);
    *fd = pfd[0];
    return pid;
}

static void cl_load_stop(pid_t pid, int fd, long *ok, long *failed) {
    long n[2] = {0, -1};
    kill(pid, SIGTERM);
    if (read(fd, n, sizeof n) != sizeof n) n[0] = 0, n[1] = -1;
    close(fd);
    waitpid(pid, NULL, 0);
    *ok = n[1], *failed = n[0];
}

// PostgreSQL stopped and started under replicas serving a steady load:
// every completion is answered; meanwhile retrieval and
// named adapters go on from memory (a query whose candidates' samples were
// never read ranks by keys alone) and uploads fail with 503 storing
// nothing; afterwards uploads work again and the other replica sees them.
TEST(cluster_postgres_restart) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    if (!rm_test_pg_available()) SKIP(rm_test_pg_why());
    cluster c = {0};
    REQUIRE(cl_up(&c, "cluster_restart") == 0);
    int a = c.r[0].port, b = c.r[1].port;
    char got[1024];
    CHECK(cl_retrieve(b, k_weather_q, 3, got, sizeof got) == 200);
    int load_fd = -1;
    pid_t load = cl_load_start(&c, &load_fd);
    REQUIRE(load > 0);
    nap_ms(300);
    REQUIRE(rm_test_pg_stop() == 0);
    CHECK(cl_upload(a, "during", c.w[3], 3) == 503);
    // from memory: retrieval chooses adapters, one named as the model answers
    CHECK(cl_retrieve(b, k_weather_q, 3, got, sizeof got) == 200 && got[0]);
    CHECK(cl_retrieve(a, "Translate to English: Guten Morgen.", 3, got, sizeof got) == 200 && got[0]);
    CHECK(cl_serves(b, serve_names[1]));
    REQUIRE(rm_test_pg_start() == 0);
    int status = -1;
    for (int t = 0; t < 100 && status != 201; t++)
        status = cl_upload(a, "weather", c.w[3], 3), status == 201 || (nap_ms(50), 0);
    CHECK(status == 201);
    CHECK(cl_wait_retrieved(b, k_weather_q, "weather", 1) >= 0);
    long ok = 0, failed = 0;
    cl_load_stop(load, load_fd, &ok, &failed);
    CHECKF(ok > 0 && failed == 0, "completions under load through the restart: %ld answered 200, %ld not", ok, failed);
    printf("     %ld retrieving completions through the outage and restart, %ld not answered 200\n", ok, failed);
    fflush(stdout);
    char names[2048];
    CHECK_OK(cl_pool_names(c.url, names, sizeof names));
    CHECKF(!strstr(names, ",during,"), "the upload refused during the outage is stored: %s", names);
    cl_down(&c);
}
