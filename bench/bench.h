// bench.h — benchmark registration for the ramole-bench binary.
//
// Each bench/bench_<name>.c defines `int bench_<name>(int argc, char **argv)`
// and registers it:
//   RM_BENCH(kernels, "matmul GFLOP/s and GB/s per weight type", bench_kernels)
// `ramole-bench NAME [args]` runs one (argv[0] = NAME); `ramole-bench` with
// no arguments runs them all with default arguments; `ramole-bench --list`.
// Benches print tables on stdout.
#ifndef RM_BENCH_BENCH_H
#define RM_BENCH_BENCH_H

typedef int (*rm_bench_fn)(int argc, char **argv);
void rm_bench_register(const char *name, const char *summary, rm_bench_fn fn);

#define RM_BENCH(name, summary, fn)                                                                                    \
    __attribute__((constructor)) static void register_bench_##name(void) { rm_bench_register(#name, summary, fn); }

// Medians: rm_median (base/stats.h).
#include "base/stats.h"
#endif
