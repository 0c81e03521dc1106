// threadpool.h — a fixed pool of pthreads running parallel-for jobs.
//
// The calling thread takes part as worker 0, so a pool of n threads starts
// n-1 helpers. Workers spin briefly before sleeping, so back-to-back jobs (one
// per linear layer during decode) do not pay a futex wake each.
#ifndef RM_BASE_THREADPOOL_H
#define RM_BASE_THREADPOOL_H

typedef struct rm_threadpool rm_threadpool;

// fn(ctx, ith, nth): worker `ith` of `nth` does its share of the job.
typedef void (*rm_task_fn)(void *ctx, int ith, int nth);

// n_threads <= 0 means "number of online CPUs". Returns NULL on failure.
rm_threadpool *rm_threadpool_create(int n_threads);
void rm_threadpool_free(rm_threadpool *tp);
int rm_threadpool_size(const rm_threadpool *tp);

// Runs fn on every worker (ith = 0..nth-1) and returns when all are done.
// tp == NULL runs fn(ctx, 0, 1) on the caller. Not re-entrant: a job must
// not call rm_threadpool_run on the same pool.
void rm_threadpool_run(rm_threadpool *tp, rm_task_fn fn, void *ctx);

// Splits [0, n) into nth nearly equal ranges and returns worker ith's range.
static inline void rm_split_range(long n, int ith, int nth, long *begin, long *end) {
    long per = n / nth, rem = n % nth;
    *begin = ith * per + (ith < rem ? ith : rem);
    *end = *begin + per + (ith < rem ? 1 : 0);
}

#endif
