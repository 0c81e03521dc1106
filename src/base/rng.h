// rng.h — the library's one seeded random-number generator (splitmix64: a
// 64-bit state, any seed) and what is drawn from it: uniform floats, shuffles.
// The sampler, weight initialisation, training data order and the retriever's
// splits and projections all draw from it, so that a seed means the same
// sequence everywhere.
#ifndef RM_BASE_RNG_H
#define RM_BASE_RNG_H
#include <stdint.h>

// The next 64 random bits; advances *s.
uint64_t rm_rng_next(uint64_t *s);
// Uniform in [0, 1) with 24 bits (the top bits of rm_rng_next).
float rm_rng_uniform(uint64_t *s);
// Uniform in (0, 1) with 53 bits: never 0 nor 1 (safe under log()).
double rm_rng_open01(uint64_t *s);
// Shuffles a[0..n) (Fisher-Yates from the end).
void rm_shuffle(int *a, int n, uint64_t *s);
// The first m entries of a[0..n) become a uniformly random m-subset of a, in
// random order (Fisher-Yates from the front, stopped after m).
void rm_shuffle_prefix(int *a, int n, int m, uint64_t *s);
#endif
