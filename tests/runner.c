// runner.c — runs every registered test (optionally only those whose name
// contains argv[1]) and ends with the line "N passed, N failed, N skipped".
//
// Each test runs in a child process of its own (RAMOLE_TEST_NOFORK=1 runs
// them in this process, for a debugger): a crash or a sanitizer report ends
// that test only and is reported with its name. A child whose test passed
// leaves by exit(), so LeakSanitizer still checks it for leaks (a leak fails
// the test); one whose test failed leaves by _exit(), since a REQUIRE that
// returned early leaves its test's memory behind by design.
#define _GNU_SOURCE
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *name, *file;
    rm_test_fn fn;
} test_entry;
static test_entry *g_tests;
static int g_n_tests, g_cap_tests, g_cur_failed, g_cur_skipped;
static char g_rootdir[256]; // this run's folder: one folder per test inside it
static char g_tmpdir[512];  // the running test's folder (made on first use)
static const char *g_cur_name = "";

void rm_test_register(const char *name, const char *file, rm_test_fn fn) {
    if (g_n_tests == g_cap_tests) {
        int cap = g_cap_tests ? 2 * g_cap_tests : 256;
        test_entry *t = realloc(g_tests, (size_t)cap * sizeof *t);
        if (!t) {
            fprintf(stderr, "ramole-tests: no memory to register test %s\n", name);
            exit(2);
        }
        g_tests = t, g_cap_tests = cap;
    }
    g_tests[g_n_tests++] = (test_entry){name, file, fn};
}

void rm_test_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "    FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    g_cur_failed++;
}

void rm_test_skip(const char *why) {
    fprintf(stderr, "    skipped: %s\n", why);
    g_cur_skipped = 1;
}

const char *rm_test_shared(void) {
    const char *p = getenv("RAMOLE_SHARED");
    if (!p) p = "../shared";
    struct stat st;
    char probe[512];
    snprintf(probe, sizeof probe, "%s/README.md", p);
    return stat(probe, &st) == 0 ? p : NULL;
}

// The run's folder holds one folder per test, named after it.
const char *rm_test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        if (!g_rootdir[0]) {
            snprintf(g_rootdir, sizeof g_rootdir, "/tmp/ramole-test-XXXXXX");
            if (!mkdtemp(g_rootdir)) {
                perror("mkdtemp");
                exit(2);
            }
        }
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/%s", g_rootdir, g_cur_name);
        if (mkdir(g_tmpdir, 0700) && errno != EEXIST) {
            perror(g_tmpdir);
            exit(2);
        }
    }
    return g_tmpdir;
}

// rm -rf path (nothing when path is empty).
static void remove_tree(const char *path) {
    if (!path[0]) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

int rm_test_sanitized(void) { return getenv("RAMOLE_SANITIZED") != NULL; }

const char *rm_test_bin(void) {
    const char *p = getenv("RAMOLE_BIN");
    return p ? p : "build/ramole";
}

int rm_test_cli(const char *args) {
    size_t n = strlen(rm_test_bin()) + strlen(args) + 2 * strlen(rm_test_tmpdir()) + 64;
    char *cmd = malloc(n);
    if (!cmd) return -1;
    snprintf(cmd, n, "%s %s >%s/cli.out 2>%s/cli.err", rm_test_bin(), args, rm_test_tmpdir(), rm_test_tmpdir());
    int rc = system(cmd);
    free(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

// The text of tmpdir/<name> (at most 64 KiB; a static buffer per name).
static const char *read_cli_file(const char *name, char *buf, size_t cap) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", rm_test_tmpdir(), name);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

const char *rm_test_cli_out(void) {
    static char buf[1 << 16];
    return read_cli_file("cli.out", buf, sizeof buf);
}

const char *rm_test_cli_err(void) {
    static char buf[1 << 16];
    return read_cli_file("cli.err", buf, sizeof buf);
}

static int cmp_tests(const void *a, const void *b) {
    const test_entry *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

// ---- `ramole serve` in a child process, spoken to over loopback sockets

// Starts `ramole serve ARGS --port 0` and reads the port from its stderr.
int rm_test_server_start(rm_test_server *sp, const char *args) {
    char log[512], cmd[4096];
    snprintf(log, sizeof log, "%s/serve.log", rm_test_tmpdir());
    unlink(log);
    snprintf(cmd, sizeof cmd, "exec %s serve %s --port 0 2>%s", rm_test_bin(), args, log);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    sp->pid = pid, sp->port = 0;
    for (int t = 0; t < 600 && !sp->port; t++) { // up to 60 s (sanitized builds load slowly)
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        char *text = NULL;
        size_t len = 0;
        if (rm_read_file(log, &text, &len) == 0 && text) {
            const char *p = strstr(text, "listening on http://"); // http://127.0.0.1:P or http://[::1]:P
            const char *colon = p ? strchr(p + 20, p[20] == '[' ? ']' : ':') : NULL;
            if (colon && *colon == ']') colon++;
            if (colon && *colon == ':') sp->port = atoi(colon + 1);
            free(text);
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return -1; // it died
    }
    return sp->port ? 0 : -1;
}

// Stops it with SIGTERM; returns its exit status (0 when it shut down cleanly).
int rm_test_server_stop(rm_test_server *sp) {
    kill(sp->pid, SIGTERM);
    int st = 0;
    waitpid(sp->pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int rm_test_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

int rm_test_send(int fd, const char *method, const char *path, const char *body) {
    char head[512];
    size_t bl = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                     method, path, bl);
    if (write(fd, head, (size_t)n) != n) return -1;
    return bl && write(fd, body, bl) != (ssize_t)bl ? -1 : 0;
}

// Appends what fd gives until its end to sb, and closes fd.
static void read_to_end(int fd, rm_sb *sb) {
    char buf[4096];
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) rm_sb_putn(sb, buf, (size_t)r);
    close(fd);
}

// Reads the whole response; returns the status, *json the parsed body (or NULL).
int rm_test_read_response(int fd, rm_json **json) {
    rm_sb sb;
    rm_sb_init(&sb);
    read_to_end(fd, &sb);
    int status = 0;
    *json = NULL;
    if (sb.buf && sscanf(sb.buf, "HTTP/1.1 %d", &status) == 1) {
        const char *body = strstr(sb.buf, "\r\n\r\n");
        if (body) rm_json_parse(body + 4, strlen(body + 4), "response", json);
    }
    rm_sb_free(&sb);
    return status;
}

static int connect_and_send(int port, const char *method, const char *path, const char *body) {
    int fd = rm_test_connect(port);
    if (fd >= 0 && rm_test_send(fd, method, path, body)) {
        close(fd);
        return -1;
    }
    return fd;
}

int rm_test_http(int port, const char *method, const char *path, const char *body, rm_json **json) {
    int fd = connect_and_send(port, method, path, body);
    return fd < 0 ? -1 : rm_test_read_response(fd, json);
}

int rm_test_http_raw(int port, const char *method, const char *path, const char *body, rm_sb *sb) {
    int fd = connect_and_send(port, method, path, body);
    if (fd < 0) return -1;
    read_to_end(fd, sb);
    return 0;
}

double rm_test_metric_in(const char *text, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "\nramole_%s ", name);
    const char *p = text ? strstr(text, key) : NULL;
    return p ? atof(p + strlen(key)) : NAN;
}

double rm_test_metric(int port, const char *name) {
    rm_sb sb;
    rm_sb_init(&sb);
    double v = rm_test_http_raw(port, "GET", "/metrics", NULL, &sb) ? NAN : rm_test_metric_in(sb.buf, name);
    rm_sb_free(&sb);
    return v;
}

int rm_test_wait_metric(int port, const char *name, double want, int ms) {
    for (int t = 0; t <= ms; t += 50) {
        if (rm_test_metric(port, name) == want) return 1;
        usleep(50000);
    }
    return 0;
}

// A child's exit status (apart from 1, which sanitizers use).
enum { VERDICT_PASS = 0, VERDICT_FAIL = 76, VERDICT_SKIP = 77 };

// Runs test t in this process; its verdict.
static int run_here(const test_entry *t) {
    g_cur_failed = 0;
    g_cur_skipped = 0;
    rm_clear_error();
    t->fn();
    return g_cur_failed ? VERDICT_FAIL : g_cur_skipped ? VERDICT_SKIP : VERDICT_PASS;
}

static volatile sig_atomic_t g_child; // the running test's process group, for a signal to this runner

static void forward_signal(int sig) {
    if (g_child > 0) kill(-g_child, SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

// Runs test t in a child process (its own process group: whatever the test
// started and left running is ended with it); its verdict, the reason
// printed when it did not end by itself.
static int run_forked(const test_entry *t) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return VERDICT_FAIL;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int v = run_here(t);
        fflush(stdout);
        fflush(stderr);
        if (v == VERDICT_FAIL) _exit(v); // no leak check: a failed REQUIRE returns with its memory
        exit(v);                         // leak check (sanitized builds): a leak makes the exit status nonzero
    }
    setpgid(pid, pid);
    g_child = pid;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    g_child = 0;
    kill(-pid, SIGKILL); // servers and other children the test left behind
    if (WIFSIGNALED(st)) {
        fprintf(stderr, "    FAIL %s: killed by signal %d (%s)\n", t->name, WTERMSIG(st), strsignal(WTERMSIG(st)));
        return VERDICT_FAIL;
    }
    int code = WEXITSTATUS(st);
    if (code == VERDICT_PASS || code == VERDICT_SKIP || code == VERDICT_FAIL) return code;
    fprintf(stderr, "    FAIL %s: exited with status %d (a sanitizer report or leak above?)\n", t->name, code);
    return VERDICT_FAIL;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int fork_each = !getenv("RAMOLE_TEST_NOFORK");
    if (fork_each) {
        signal(SIGINT, forward_signal);
        signal(SIGTERM, forward_signal);
    }
    if (g_n_tests) qsort(g_tests, (size_t)g_n_tests, sizeof g_tests[0], cmp_tests);
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_n_tests; i++) {
        if (filter && !strstr(g_tests[i].name, filter)) continue;
        g_cur_name = g_tests[i].name;
        g_tmpdir[0] = 0;
        if (fork_each) rm_test_tmpdir(); // made here, so that this process can remove it
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int v = fork_each ? run_forked(&g_tests[i]) : run_here(&g_tests[i]);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        remove_tree(g_tmpdir);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        const char *verdict = v == VERDICT_FAIL ? "FAIL" : v == VERDICT_SKIP ? "skip" : "ok";
        fprintf(stderr, "%-4s %-40s %8.1f ms\n", verdict, g_tests[i].name, ms);
        if (v == VERDICT_FAIL) failed++;
        else if (v == VERDICT_SKIP) skipped++;
        else passed++;
    }
    if (g_rootdir[0] && rmdir(g_rootdir)) remove_tree(g_rootdir);
    fflush(stderr);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    free(g_tests);
    return failed ? 1 : 0;
}
