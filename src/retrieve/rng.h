// rng.h — internal to src/retrieve: the seeded generator shared by the split,
// the initial projection and the trainer (splitmix64), and a partial shuffle.
#ifndef RM_RETRIEVE_RNG_H
#define RM_RETRIEVE_RNG_H
#include <stdint.h>

static inline uint64_t retr_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in (0, 1).
static inline double retr_rng_uniform(uint64_t *s) { return ((double)(retr_rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }

// Partial Fisher-Yates: the first m entries of a[0..n) become a uniformly
// random m-subset of a, in random order.
static inline void retr_shuffle_prefix(int *a, int n, int m, uint64_t *s) {
    for (int i = 0; i < m && i < n - 1; i++) {
        int k = i + (int)(retr_rng_next(s) % (uint64_t)(n - i));
        int t = a[i]; a[i] = a[k]; a[k] = t;
    }
}
#endif
