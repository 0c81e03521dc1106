// threadpool.c — a fixed pool of pthreads running parallel-for jobs.
//
// A job is published by bumping an atomic generation counter; workers spin on
// it for a short while (decode issues ~150 small jobs per token, a futex wake
// per job would cost more than the job), then sleep on a condition variable.
// Nothing is allocated per job: the job is (fn, ctx) stored in the pool.
//
// Lost-wakeup argument: the publisher does `gen++` then reads `sleepers`; a
// worker going to sleep does `sleepers++` (under the mutex) then reads `gen`.
// Both are sequentially consistent, so at least one of them sees the other's
// write: either the publisher sees a sleeper and broadcasts under the mutex,
// or the worker sees the new generation and does not wait.
#define _GNU_SOURCE
#include "base/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

// How long an idle worker spins before it sleeps.
#define SPIN_NS 300000L
// Busy-wait iterations (~20 us) before spinning switches to sched_yield().
#define PAUSE_SPINS 1000

struct rm_threadpool {
    int n;              // threads including the caller
    pthread_t *threads; // n-1 helpers
    rm_task_fn fn;      // the current job (written before gen is bumped)
    void *ctx;
    atomic_uint gen;     // job generation
    atomic_int pending;  // helpers still working on the current job
    atomic_int sleepers; // helpers waiting on cv
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

typedef struct {
    rm_threadpool *tp;
    int ith;
} worker_arg;

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

// Waits until gen differs from `seen` (or stop); returns the new generation.
static unsigned wait_for_job(rm_threadpool *tp, unsigned seen) {
    long t0 = now_ns();
    for (int i = 0;; i++) {
        unsigned g = atomic_load_explicit(&tp->gen, memory_order_acquire);
        if (g != seen || atomic_load(&tp->stop)) return g;
        if (i < PAUSE_SPINS) {
            cpu_relax();
        } else { // let a runnable thread have the core (pool larger than the machine)
            sched_yield();
            if (now_ns() - t0 > SPIN_NS) break;
        }
    }
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->sleepers, 1);
    unsigned g;
    while ((g = atomic_load(&tp->gen)) == seen && !atomic_load(&tp->stop)) pthread_cond_wait(&tp->cv, &tp->mu);
    atomic_fetch_sub(&tp->sleepers, 1);
    pthread_mutex_unlock(&tp->mu);
    return g;
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    rm_threadpool *tp = wa->tp;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(tp, seen);
        if (atomic_load(&tp->stop)) break;
        tp->fn(tp->ctx, ith, tp->n);
        atomic_fetch_sub_explicit(&tp->pending, 1, memory_order_release);
    }
    return NULL;
}

rm_threadpool *rm_threadpool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 1024) n_threads = 1024;
    rm_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n = n_threads;
    atomic_init(&tp->gen, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->sleepers, 0);
    atomic_init(&tp->stop, 0);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, NULL);
    tp->threads = calloc((size_t)n_threads, sizeof *tp->threads);
    if (!tp->threads) goto fail;
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) goto fail_started;
        wa->tp = tp;
        wa->ith = i;
        if (pthread_create(&tp->threads[i - 1], NULL, worker_main, wa) != 0) {
            free(wa);
            goto fail_started;
        }
        continue;
    fail_started:
        tp->n = i; // only i-1 helpers exist; free() joins those
        rm_threadpool_free(tp);
        return NULL;
    }
    return tp;
fail:
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp->threads);
    free(tp);
    return NULL;
}

void rm_threadpool_free(rm_threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, 1);
    atomic_fetch_add(&tp->gen, 1);
    pthread_cond_broadcast(&tp->cv);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i - 1], NULL);
    pthread_mutex_destroy(&tp->mu);
    pthread_cond_destroy(&tp->cv);
    free(tp->threads);
    free(tp);
}

int rm_threadpool_size(const rm_threadpool *tp) { return tp ? tp->n : 1; }

void rm_threadpool_run(rm_threadpool *tp, rm_task_fn fn, void *ctx) {
    if (!tp || tp->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    tp->fn = fn;
    tp->ctx = ctx;
    atomic_store(&tp->pending, tp->n - 1);
    atomic_fetch_add(&tp->gen, 1); // seq_cst: publishes fn/ctx/pending
    if (atomic_load(&tp->sleepers) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
    }
    fn(ctx, 0, tp->n);
    // Helpers finish at about the same time as the caller: spin, then yield.
    for (long i = 0; atomic_load_explicit(&tp->pending, memory_order_acquire) > 0; i++) {
        if (i < PAUSE_SPINS) cpu_relax();
        else sched_yield();
    }
}
