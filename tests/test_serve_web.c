// test_serve_web.c — the page of `ramole serve` and what it leans on: the
// page's files served from the binary (with their types and a
// Content-Security-Policy), /info and one adapter with its samples; the page
// in headless Chromium (tests/web_page.cjs through playwright-core); keys
// refused on the head before any body is read; an upload's body written to
// a file in the pool's folder as it arrives, with its limit kept while it
// streams; and a stream whose client leaves cancelled in the engine.
#define _GNU_SOURCE
#include "testing.h"
#include "serve_helpers.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"

#include <dirent.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int serve_send_all(int fd, const char *data, size_t len) {
    while (len) {
        ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        data += w, len -= (size_t)w;
    }
    return 0;
}

// Reads what comes within ms milliseconds of silence, until the close (1) or
// the silence (0).
static int take(int fd, rm_sb *out, int ms) {
    char buf[8192];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0) return 0;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0) return 1;
        rm_sb_putn(out, buf, (size_t)r);
    }
}

static int status_of(const rm_sb *raw) {
    int st = 0;
    if (raw->buf) sscanf(raw->buf, "HTTP/1.%*d %d", &st);
    return st;
}

// A request on a new connection (head lines extra, may be NULL; body may be
// NULL), read to the close: status, the whole answer in raw.
static int fetch(int port, const char *method, const char *path, const char *extra, const char *body, rm_sb *raw) {
    int fd = rm_test_connect(port);
    if (fd < 0) return -1;
    char head[1024];
    size_t bl = body ? strlen(body) : 0;
    int n =
        snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Length: %zu\r\n\r\n",
                 method, path, extra ? extra : "", bl);
    raw->len = 0;
    int ok = !serve_send_all(fd, head, (size_t)n) && !serve_send_all(fd, body ? body : "", bl) && take(fd, raw, 60000);
    close(fd);
    rm_sb_putn(raw, "", 0);
    return ok ? status_of(raw) : -1;
}

// The body of an answer read by fetch (not chunked), or "".
static const char *body_of(const rm_sb *raw) {
    const char *b = raw->buf ? strstr(raw->buf, "\r\n\r\n") : NULL;
    return b ? b + 4 : "";
}

// The size of the file the server (pid) holds open whose path has the
// spooled bodies' prefix in dir, or -1 when it holds none.
static long long spooled(int pid, const char *dir) {
    char fds[64], link[700], target[1200], want[800];
    snprintf(fds, sizeof fds, "/proc/%d/fd", pid);
    snprintf(want, sizeof want, "%s/.body-", dir);
    DIR *d = opendir(fds);
    long long size = -1;
    for (struct dirent *e; d && (e = readdir(d));) {
        snprintf(link, sizeof link, "%s/%s", fds, e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        struct stat st;
        if (n <= 0) continue;
        target[n] = 0;
        if (strstr(target, want) && stat(link, &st) == 0) size = (long long)st.st_size;
    }
    if (d) closedir(d);
    return size;
}

// The files in the pool's folder whose names start with a dot (uploads and
// bodies under way), space-separated.
static void dot_files(const char *dir, char *out, size_t cap) {
    DIR *d = opendir(dir);
    out[0] = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(out + strlen(out), cap - strlen(out), "%s ", e->d_name);
    if (d) closedir(d);
}

int serve_start_pooled(rm_test_server *sp, const char *name, const int *want, const char *flags, char (*w)[512],
                       char *pool, size_t cap) {
    char args[2048];
    if (!serve_tiny_model() || serve_make_adapters(serve_tiny_model(), w) != RM_OK) return -1;
    snprintf(pool, cap, "%s/%s", rm_test_tmpdir(), name);
    if (serve_make_pool(pool, want, w) != RM_OK) return -1;
    snprintf(args, sizeof args, "-m %s --pool %s %s", serve_tiny_model(), pool, flags);
    return rm_test_server_start(sp, args);
}

const char *serve_npm_package(const char *pkg, const char *version, char *dir, size_t cap) {
    static char why[300];
    if (system("node --version >/dev/null 2>&1") != 0)
        return "node is not installed (Debian: apt-get install nodejs npm; scripts/deps.sh web)";
    char probe[800], cmd[3000];
    const char *bin = rm_test_bin(), *slash = strrchr(bin, '/');
    snprintf(dir, cap, "%.*s/npm-%s", slash ? (int)(slash - bin) : 1, slash ? bin : ".", pkg);
    snprintf(probe, sizeof probe, "%s/node_modules/%s/package.json", dir, pkg);
    if (rm_file_exists(probe)) return NULL;
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s && timeout 600 npm install --prefix %s --no-audit --no-fund --loglevel=error %s@%s "
             ">%s/npm.log 2>&1",
             dir, dir, pkg, version, rm_test_tmpdir());
    if (system(cmd) == 0 && rm_file_exists(probe)) return NULL;
    snprintf(why, sizeof why, "npm could not install %s (no registry?); see `npm install %s@%s`", pkg, pkg, version);
    return why;
}

int serve_node(const char *script, const char *args, char **out) {
    char path[700], cmd[4096];
    snprintf(path, sizeof path, "%s/node.out", rm_test_tmpdir());
    snprintf(cmd, sizeof cmd, "timeout 600 node %s %s >%s 2>&1", script, args, path);
    int rc = system(cmd);
    size_t len = 0;
    *out = NULL;
    rm_read_file(path, out, &len);
    return rc == 0 && *out && strstr(*out, "ok ");
}

// The page and its JSON: served from the binary byte for byte as the files
// in src/serve/web/, each with its type and a policy allowing only this
// server; open without a key (a browser cannot send one for a page) while
// the API needs it; /info; one adapter with its samples; a stream's last
// chunk names its adapters.
TEST(serve_web_page) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char w[5][512], pool[512];
    rm_test_server sp;
    REQUIRE(serve_start_pooled(&sp, "web-pool", (const int[]){1, 1, 0, 0, 0}, "-t 1 --ctx 256 --api-key page-key", w,
                               pool, sizeof pool) == 0);
    rm_sb raw;
    rm_sb_init(&raw);
    const char *files[3][3] = {{"/", "index.html", "text/html"},
                               {"/app.js", "app.js", "text/javascript"},
                               {"/app.css", "app.css", "text/css"}};
    for (int i = 0; i < 3; i++) {
        char path[300], *want = NULL, type[200];
        size_t len = 0;
        snprintf(path, sizeof path, "src/serve/web/%s", files[i][1]);
        REQUIRE(rm_read_file(path, &want, &len) == RM_OK);
        CHECKF(fetch(sp.port, "GET", files[i][0], NULL, NULL, &raw) == 200, "GET %s", files[i][0]);
        snprintf(type, sizeof type, "\r\nContent-Type: %s; charset=utf-8\r\n", files[i][2]);
        CHECKF(raw.buf && strcasestr(raw.buf, type), "GET %s: its type", files[i][0]);
        CHECK(raw.buf && strcasestr(raw.buf, "\r\nContent-Security-Policy: default-src 'self';"));
        CHECK(raw.buf && strcasestr(raw.buf, "\r\nX-Content-Type-Options: nosniff\r\n"));
        const char *body = body_of(&raw);
        CHECKF(strlen(body) == len && !memcmp(body, want, len), "GET %s is %s byte for byte", files[i][0], path);
        free(want);
    }
    CHECK(fetch(sp.port, "GET", "/index.htm", NULL, NULL, &raw) == 404);
    CHECK(fetch(sp.port, "POST", "/", NULL, "{}", &raw) == 405);

    // the API behind it needs the key
    const char *key = "Authorization: Bearer page-key\r\n";
    CHECK(fetch(sp.port, "GET", "/info", NULL, NULL, &raw) == 401);
    CHECK(fetch(sp.port, "GET", "/info", key, NULL, &raw) == 200);
    rm_json *j = NULL;
    const char *b = body_of(&raw);
    CHECK(rm_json_parse(b, strlen(b), "info", &j) == RM_OK && j);
    if (j) {
        CHECK(!strcmp(rm_json_get_str(j, "model", ""), "serve-tiny") &&
              !strcmp(rm_json_get_str(j, "auto_model", ""), "ramole-auto"));
        CHECK(rm_json_get_int(j, "adapters", 0) == 2 && rm_json_get_int(j, "retrieve", 0) == 3);
        const rm_json *router = rm_json_get(j, "router"), *api = rm_json_get(j, "api_key");
        CHECK(router && router->type == RM_JSON_BOOL && !router->boolean && api && api->boolean);
        CHECK(!strstr(b, "page-key"));
    }
    rm_json_free(j);
    j = NULL;

    // one adapter with its samples
    CHECK(fetch(sp.port, "GET", "/v1/adapters/german", NULL, NULL, &raw) == 401);
    CHECK(fetch(sp.port, "GET", "/v1/adapters/german", key, NULL, &raw) == 200);
    b = body_of(&raw);
    CHECK(rm_json_parse(b, strlen(b), "adapter", &j) == RM_OK && j);
    const rm_json *smp = j ? rm_json_get(j, "samples") : NULL;
    CHECK(j && !strcmp(rm_json_get_str(j, "name", ""), "german") && rm_json_get_int(j, "n_samples", 0) == 3);
    CHECK(smp && smp->n == 3 && smp->items[0].type == RM_JSON_STRING &&
          !strcmp(smp->items[0].str, serve_samples[0][0]));
    CHECK(j && rm_json_get_str(j, "weights", NULL) && rm_file_exists(rm_json_get_str(j, "weights", "")));
    rm_json_free(j);
    j = NULL;
    CHECK(fetch(sp.port, "GET", "/v1/adapters/nobody", key, NULL, &raw) == 404);

    // a stream's last chunk names the adapters (as a whole answer does)
    const char *req =
        "{\"prompt\": \"Translate to German: the cat.\", \"retrieve\": 1, \"max_tokens\": 3, \"stream\": true}";
    CHECK(fetch(sp.port, "POST", "/v1/completions", key, req, &raw) == 200);
    const char *fin = raw.buf ? strstr(raw.buf, "\"finish_reason\": \"length\"") : NULL;
    CHECKF(fin && strstr(fin, "\"adapters\": [{\"name\": \"german\", \"score\": "), "the last chunk: %s",
           raw.buf ? raw.buf : "");
    rm_sb_free(&raw);
    CHECK(rm_test_server_stop(&sp) == 0);
}

// Keys are checked on the request's head: a client without the right one
// gets 401 at once, before it has sent its body (the server reads none of
// it and stores none of it); with the right key the server waits for the
// body as usual.
TEST(serve_keys_before_body) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char w[5][512], pool[512], store[600];
    rm_test_server sp;
    REQUIRE(serve_start_pooled(&sp, "kb-pool", (const int[]){1, 0, 0, 0, 0},
                               "-t 1 --ctx 256 --api-key user-k --admin-key admin-k --max-upload 4000000", w, pool,
                               sizeof pool) == 0);
    snprintf(store, sizeof store, "%s/adapters", pool);
    struct {
        const char *path, *auth;
    } refused[] = {
        {"/v1/adapters", "Authorization: Bearer user-k\r\n"}, // an upload needs the admin key
        {"/v1/adapters", ""},
        {"/v1/completions", "Authorization: Bearer wrong\r\n"},
        {"/v1/chat/completions", ""},
    };
    rm_sb raw;
    rm_sb_init(&raw);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        int fd = rm_test_connect(sp.port);
        REQUIRE(fd >= 0);
        char head[512];
        int n = snprintf(head, sizeof head,
                         "POST %s HTTP/1.1\r\nHost: t\r\n%sContent-Type: multipart/form-data; boundary=B\r\n"
                         "Content-Length: 3000000\r\n\r\n",
                         refused[i].path, refused[i].auth);
        CHECK(serve_send_all(fd, head, (size_t)n) == 0);
        raw.len = 0;
        take(fd, &raw, 20000); // the answer comes, though not a byte of the 3 MB promised has been sent
        rm_sb_putn(&raw, "", 0);
        CHECKF(status_of(&raw) == 401 && strstr(raw.buf, "invalid_api_key"), "%s without its key: %s", refused[i].path,
               raw.buf ? raw.buf : "(nothing)");
        CHECK(spooled(sp.pid, store) < 0);
        close(fd);
    }
    // the admin key: the server waits for the body, then answers it
    int fd = rm_test_connect(sp.port);
    REQUIRE(fd >= 0);
    const char *head = "POST /v1/adapters HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer admin-k\r\n"
                       "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 12\r\n\r\n";
    CHECK(serve_send_all(fd, head, strlen(head)) == 0);
    raw.len = 0;
    CHECK(take(fd, &raw, 300) == 0 && raw.len == 0);
    CHECK(serve_send_all(fd, "--B--\r\n12345", 12) == 0);
    take(fd, &raw, 20000);
    rm_sb_putn(&raw, "", 0);
    CHECKF(status_of(&raw) == 400, "an empty upload with the admin key: %s", raw.buf ? raw.buf : "(nothing)");
    close(fd);
    rm_sb_free(&raw);
    CHECK(rm_test_server_stop(&sp) == 0);
}

void serve_part(rm_sb *b, const char *name, const char *filename, const char *data, size_t len) {
    rm_sb_printf(b, "--XyZzy42\r\nContent-Disposition: form-data; name=\"%s\"", name);
    if (filename) rm_sb_printf(b, "; filename=\"%s\"\r\nContent-Type: application/octet-stream", filename);
    rm_sb_puts(b, "\r\n\r\n");
    rm_sb_putn(b, data, len);
    rm_sb_puts(b, "\r\n");
}

// An upload's body goes to a file in the pool's folder as it arrives (seen
// half sent: the server holds an unlinked file there of exactly the bytes
// sent so far), and the upload then works as before; a chunked body past
// --max-upload is answered 413 while it streams and leaves nothing behind.
TEST(serve_upload_spooled) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char w[5][512], pool[512], store[600], left[1024];
    rm_test_server sp;
    REQUIRE(serve_start_pooled(&sp, "sp-pool", (const int[]){1, 1, 0, 0, 0}, "-t 1 --ctx 256 --max-upload 3000000", w,
                               pool, sizeof pool) == 0);
    snprintf(store, sizeof store, "%s/adapters", pool);

    rm_sb body, raw;
    rm_sb_init(&body), rm_sb_init(&raw);
    char *gguf = NULL, *pad = malloc(1 << 20);
    size_t glen = 0;
    REQUIRE(pad && rm_read_file(w[3], &gguf, &glen) == RM_OK);
    memset(pad, 'p', 1 << 20);
    serve_part(&body, "name", NULL, "weather", 7);
    serve_part(&body, "samples", NULL, "[\"Will it rain in Paris tomorrow? Give the weather forecast.\"]", 62);
    serve_part(&body, "padding", NULL, pad, 1 << 20); // a field the upload does not read: the body is over 1 MiB
    serve_part(&body, "file", "weather.gguf", gguf, glen);
    rm_sb_puts(&body, "--XyZzy42--\r\n");
    int fd = rm_test_connect(sp.port);
    REQUIRE(fd >= 0);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /v1/adapters HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Content-Type: multipart/form-data; boundary=XyZzy42\r\nContent-Length: %zu\r\n\r\n",
                     body.len);
    size_t half = body.len / 2;
    CHECK(serve_send_all(fd, head, (size_t)n) == 0 && serve_send_all(fd, body.buf, half) == 0);
    long long size = -1;
    for (int t = 0; t < 200 && size != (long long)half; t++) {
        usleep(50000);
        size = spooled(sp.pid, store);
    }
    CHECKF(size == (long long)half, "half sent (%zu bytes): the server's file in the pool's folder holds %lld", half,
           size);
    CHECK(serve_send_all(fd, body.buf + half, body.len - half) == 0);
    take(fd, &raw, 60000);
    close(fd);
    rm_sb_putn(&raw, "", 0);
    CHECKF(status_of(&raw) == 201, "the upload: %s", raw.buf ? raw.buf : "(nothing)");
    const char *ask =
        "{\"prompt\": \"Will it snow in Oslo? Give the weather forecast.\", \"retrieve\": 1, \"max_tokens\": 2}";
    CHECK(fetch(sp.port, "POST", "/v1/completions", NULL, ask, &raw) == 200 &&
          strstr(raw.buf, "\"name\": \"weather\""));

    // chunked, past the limit: 413 while it streams (not the whole body read)
    fd = rm_test_connect(sp.port);
    REQUIRE(fd >= 0);
    const char *chead = "POST /v1/adapters HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                        "Content-Type: multipart/form-data; boundary=XyZzy42\r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK(serve_send_all(fd, chead, strlen(chead)) == 0);
    char size_line[32];
    int sent_ok = 1;
    for (int i = 0; i < 4 && sent_ok; i++) { // 4 MiB of chunks over a 3 MB limit
        int sl = snprintf(size_line, sizeof size_line, "%x\r\n", 1 << 20);
        sent_ok = !serve_send_all(fd, size_line, (size_t)sl) && !serve_send_all(fd, pad, 1 << 20) &&
                  !serve_send_all(fd, "\r\n", 2);
    }
    if (sent_ok) serve_send_all(fd, "0\r\n\r\n", 5);
    raw.len = 0;
    take(fd, &raw, 60000);
    close(fd);
    rm_sb_putn(&raw, "", 0);
    CHECKF(status_of(&raw) == 413, "a chunked upload past the limit: %s", raw.buf ? raw.buf : "(nothing)");
    size = 0;
    for (int t = 0; t < 100 && size >= 0; t++) {
        usleep(50000);
        size = spooled(sp.pid, store);
    }
    CHECK(size < 0);
    dot_files(store, left, sizeof left);
    CHECKF(!left[0], "left in the pool's folder: %s", left);
    CHECK(fetch(sp.port, "GET", "/health", NULL, NULL, &raw) == 200);
    free(gguf), free(pad);
    rm_sb_free(&body), rm_sb_free(&raw);
    CHECK(rm_test_server_stop(&sp) == 0);
}

// A client that closes its stream early: its sequences (16 samples, 4 in
// slots and 12 waiting for one) are cancelled in the engine instead of running
// to max_tokens: the slots free up, fewer tokens are generated than 4 whole
// sequences would take (16 x 480 were asked for), and the metrics count the
// 16 as cancelled (or, for the few that drew the end of text first, finished).
TEST(serve_stream_cancelled) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    REQUIRE(serve_tiny_model());
    char args[1024];
    snprintf(args, sizeof args, "-m %s -t 1 --ctx 512 --slots 4", serve_tiny_model());
    rm_test_server sp;
    REQUIRE(rm_test_server_start(&sp, args) == 0);
    int fd = rm_test_connect(sp.port);
    REQUIRE(fd >= 0);
    const char *body =
        "{\"prompt\": \"Once\", \"max_tokens\": 480, \"n\": 16, \"temperature\": 0.8, \"seed\": 3, \"stream\": true}";
    CHECK(rm_test_send(fd, "POST", "/v1/completions", body) == 0);
    char buf[4096];
    size_t got = 0;
    for (ssize_t r = 1; r > 0 && got < 8192; got += (size_t)r) r = read(fd, buf, sizeof buf); // it runs: tokens come
    CHECK(got >= 8192);
    close(fd);
    rm_sb raw;
    rm_sb_init(&raw);
    double ended = 0; // the metrics are the engine's after its last step: wait until all 16 have ended
    for (int t = 0; t < 600 && !(ended >= 16); t++) {
        usleep(50000);
        CHECK(fetch(sp.port, "GET", "/metrics", NULL, NULL, &raw) == 200);
        ended = rm_test_metric_in(raw.buf, "requests_cancelled_total") +
                rm_test_metric_in(raw.buf, "requests_finished_total");
    }
    CHECK(rm_test_metric_in(raw.buf, "requests_running") == 0 && rm_test_metric_in(raw.buf, "requests_waiting") == 0);
    double cancelled = rm_test_metric_in(raw.buf, "requests_cancelled_total"),
           finished = rm_test_metric_in(raw.buf, "requests_finished_total"),
           generated = rm_test_metric_in(raw.buf, "generation_tokens_total");
    // A sample may draw the end-of-text token (temperature 0.8) and finish on
    // its own before the client leaves, more often the later the server gets
    // to the close; every other one must be cancelled.
    CHECKF(cancelled + finished == 16 && cancelled >= 12, "%g of the 16 sequences cancelled, %g finished", cancelled,
           finished);
    CHECKF(generated > 0 && generated < 16 * 480 / 4, "%g tokens generated after the client left (16 x 480 asked)",
           generated);
    // the server serves on, with the slots free
    CHECK(fetch(sp.port, "POST", "/v1/completions", NULL, "{\"prompt\": \"Once\", \"max_tokens\": 2}", &raw) == 200);
    rm_sb_free(&raw);
    CHECK(rm_test_server_stop(&sp) == 0);
}

// The page in headless Chromium (tests/web_page.cjs): playwright-core is
// installed with npm under the build directory on first use; skipped with
// the reason when node, npm (the registry) or Chromium is not there.
TEST(serve_web_browser) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *chromium = "/usr/bin/chromium";
    if (!rm_file_exists(chromium))
        SKIP("chromium is not installed (Debian: apt-get install chromium; scripts/deps.sh web)");
    char pw[600], router[600], pool[512], w[5][512], args[2048];
    const char *why = serve_npm_package("playwright-core", "1.65.2", pw, sizeof pw);
    if (why) SKIP(why);
    REQUIRE(serve_tiny_model());
    snprintf(router, sizeof router, "%s/browser-router.gguf", rm_test_tmpdir());
    REQUIRE(serve_save_router(serve_tiny_model(), router, 5) == RM_OK);
    snprintf(args, sizeof args, "--router %s --retrieve 2 -t 1 --ctx 512 --api-key user-k --admin-key admin-k", router);
    rm_test_server sp;
    REQUIRE(serve_start_pooled(&sp, "browser-pool", (const int[]){1, 1, 0, 0, 0}, args, w, pool, sizeof pool) == 0);
    char *said = NULL;
    snprintf(args, sizeof args, "%s http://127.0.0.1:%d %s user-k admin-k %s", pw, sp.port, chromium, w[3]);
    CHECKF(serve_node("tests/web_page.cjs", args, &said), "the browser test said: %s", said ? said : "(nothing)");
    free(said);
    CHECK(rm_test_server_stop(&sp) == 0);
}
