// pg_helpers.c — see pg_helpers.h.
#define _GNU_SOURCE
#include "pg_helpers.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int g_state; // 0 not tried, 1 running, -1 unavailable
static char g_why[512], g_bin[256], g_dir[64];
static int g_port;
static pid_t g_owner;       // the process that started it (forked children leave it alone)
static char g_made[64][64]; // databases made in this run
static int g_n_made;

const char *rm_test_pg_why(void) { return g_why; }

static int find_bin(void) {
    const char *env = getenv("RAMOLE_PG_BIN");
    const char *cands[] = {env, "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                           "/usr/lib/postgresql/14/bin", NULL};
    for (int i = 0; i < 4; i++) {
        char p[300];
        if (!cands[i]) continue;
        snprintf(p, sizeof p, "%s/pg_ctl", cands[i]);
        if (access(p, X_OK) == 0) {
            snprintf(g_bin, sizeof g_bin, "%s", cands[i]);
            return 1;
        }
    }
    return 0;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t n = sizeof a;
    int port = 0;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof a) && !getsockname(fd, (struct sockaddr *)&a, &n))
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

// Runs a command as the server's user (postgres when root), output in the log.
static int run_as(const char *cmd) {
    char full[4096];
    if (geteuid() == 0)
        snprintf(full, sizeof full, "runuser -u postgres -- sh -c '%s' >>%s/setup.log 2>&1", cmd, g_dir);
    else snprintf(full, sizeof full, "sh -c '%s' >>%s/setup.log 2>&1", cmd, g_dir);
    return system(full);
}

int rm_test_pg_start(void) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s/pg_ctl -D %s/data -l %s/server.log -w -t 60 -o \"-p %d -k %s -c listen_addresses=127.0.0.1 -c "
             "fsync=off -c max_connections=200\" start",
             g_bin, g_dir, g_dir, g_port, g_dir);
    return run_as(cmd) == 0 ? 0 : -1;
}

int rm_test_pg_stop(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/pg_ctl -D %s/data -w -m fast stop", g_bin, g_dir);
    return run_as(cmd) == 0 ? 0 : -1;
}

static void pg_cleanup(void) {
    if (g_state != 1 || getpid() != g_owner) return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/pg_ctl -D %s/data -w -m immediate stop", g_bin, g_dir);
    run_as(cmd);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_dir);
}

int rm_test_pg_available(void) {
    if (g_state) return g_state == 1;
    g_state = -1;
    if (!find_bin()) {
        snprintf(g_why, sizeof g_why,
                 "PostgreSQL's server is not installed (no pg_ctl in /usr/lib/postgresql/15/bin; apt-get install "
                 "postgresql-15)");
        return 0;
    }
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (geteuid() == 0 && !pw) {
        snprintf(g_why, sizeof g_why, "running as root and there is no user postgres to run PostgreSQL as");
        return 0;
    }
    snprintf(g_dir, sizeof g_dir, "/tmp/ramole-pg-XXXXXX");
    if (!mkdtemp(g_dir)) {
        snprintf(g_why, sizeof g_why, "cannot make a temporary folder");
        return 0;
    }
    if (pw && chown(g_dir, pw->pw_uid, pw->pw_gid)) {
        snprintf(g_why, sizeof g_why, "cannot give %s to postgres", g_dir);
        return 0;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/initdb -D %s/data -A trust -U ramole -E UTF8 --locale=C --no-sync", g_bin, g_dir);
    g_port = free_port();
    g_owner = getpid();
    if (run_as(cmd) != 0 || !g_port || rm_test_pg_start() != 0) {
        snprintf(g_why, sizeof g_why, "PostgreSQL did not start (see %s/setup.log, %s/server.log)", g_dir, g_dir);
        return 0;
    }
    g_state = 1;
    atexit(pg_cleanup);
    return 1;
}

int rm_test_pg_url(const char *name, const char *extra, char *url, size_t cap) {
    if (!rm_test_pg_available()) return -1;
    int made = 0;
    for (int i = 0; i < g_n_made; i++) made |= !strcmp(g_made[i], name);
    if (!made) {
        char admin[256], sql[256];
        snprintf(admin, sizeof admin, "postgresql://ramole@127.0.0.1:%d/postgres", g_port);
        PGconn *c = PQconnectdb(admin);
        int ok = c && PQstatus(c) == CONNECTION_OK;
        snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name); // the cluster is this run's: none exists yet
        PGresult *r = ok ? PQexec(c, sql) : NULL;
        ok = ok && r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        PQfinish(c);
        if (!ok) return -1;
        if (g_n_made < 64) snprintf(g_made[g_n_made++], sizeof g_made[0], "%s", name);
    }
    snprintf(url, cap, "postgresql://ramole@127.0.0.1:%d/%s%s%s", g_port, name, extra ? "?" : "", extra ? extra : "");
    return 0;
}
