// follow.c — keeps a server's in-memory pool in step with what other
// servers sharing the pool change: a thread waits for the pool's change
// notices (rm_pool_wait_change: PostgreSQL's NOTIFY; a SQLite pool cannot be
// told) and refreshes the pool when one comes, and at least once a second
// (a cheap version check) in case a notice was missed.
#include "serve/server_impl.h"
#include "base/err.h"
#include "base/file.h"

#include <stdlib.h>

// How long the thread waits for a notice before looking at its stop flag.
#define FOLLOW_WAIT_S 0.2

static void *follow_main(void *arg) {
    rm_server *s = arg;
    double last = rm_now();
    while (!atomic_load(&s->follow_stop)) {
        int notified = 0;
        rm_pool_wait_change(s->pool, FOLLOW_WAIT_S, &notified); // without the lock: the one call that may
        if (atomic_load(&s->follow_stop)) break;
        double now = rm_now();
        if (!notified && now - last < 1.0) continue;
        last = now;
        int changed = 0;
        pthread_mutex_lock(&s->pool_mu);
        int rc = notified ? rm_pool_refresh(s->pool, &changed) : rm_pool_refresh_if_changed(s->pool, &changed);
        int size = rm_pool_size(s->pool);
        pthread_mutex_unlock(&s->pool_mu);
        if (!rc) atomic_store(&s->pool_size, size);
        atomic_store(&s->pool_reachable, rc != RM_EUNAVAILABLE);
        if (changed) atomic_fetch_add(&s->n_pool_reloads, 1);
    }
    return NULL;
}

int server_follow_start(rm_server *s) {
    if (!s->pool) return RM_OK;
    atomic_store(&s->pool_reachable, 1);
    if (pthread_create(&s->follow_thread, NULL, follow_main, s))
        return rm_errorf(RM_ENOMEM, "cannot start the pool's follower thread");
    s->follow_started = 1;
    return RM_OK;
}

void server_follow_stop(rm_server *s) {
    if (!s->follow_started) return;
    atomic_store(&s->follow_stop, 1);
    pthread_join(s->follow_thread, NULL);
    s->follow_started = 0;
}

int server_pool_status(int rc) {
    switch (rc) {
    case RM_OK: return 0;
    case RM_EUNAVAILABLE: return 503;
    case RM_ETOOBIG: return 413;
    case RM_ENOTFOUND: return 404;
    case RM_ENOMEM: return 500;
    default: return 400;
    }
}
