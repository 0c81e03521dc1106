// stats.h — small statistics helpers for benchmarks and reports.
#ifndef RM_BASE_STATS_H
#define RM_BASE_STATS_H

// Median of v[0..n) (sorts v in place); 0 when n <= 0.
double rm_median(double *v, int n);
#endif
