// rng.c — see rng.h.
#include "base/rng.h"

uint64_t rm_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float rm_rng_uniform(uint64_t *s) { return (float)(rm_rng_next(s) >> 40) / (float)(1ull << 24); }

double rm_rng_open01(uint64_t *s) { return ((double)(rm_rng_next(s) >> 11) + 0.5) / 9007199254740992.0; }

void rm_shuffle(int *a, int n, uint64_t *s) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rm_rng_next(s) % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

void rm_shuffle_prefix(int *a, int n, int m, uint64_t *s) {
    for (int i = 0; i < m && i < n - 1; i++) {
        int k = i + (int)(rm_rng_next(s) % (uint64_t)(n - i)), t = a[i];
        a[i] = a[k];
        a[k] = t;
    }
}
