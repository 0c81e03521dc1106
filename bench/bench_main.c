// bench_main.c — the ramole-bench binary: dispatches to registered benches.
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name, *summary;
    rm_bench_fn fn;
} bench_entry;
static bench_entry g_benches[64];
static int g_n_benches;

void rm_bench_register(const char *name, const char *summary, rm_bench_fn fn) {
    if (g_n_benches < 64) g_benches[g_n_benches++] = (bench_entry){name, summary, fn};
}

static void usage(void) {
    fprintf(stderr, "usage: ramole-bench [NAME [args...]]   (no NAME: run all)\n");
    for (int i = 0; i < g_n_benches; i++) fprintf(stderr, "  %-12s %s\n", g_benches[i].name, g_benches[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        int rc = 0;
        for (int i = 0; i < g_n_benches; i++) {
            char *args[] = {(char *)g_benches[i].name, NULL};
            printf("== %s: %s\n", g_benches[i].name, g_benches[i].summary);
            rc |= g_benches[i].fn(1, args);
        }
        return rc;
    }
    if (!strcmp(argv[1], "--list") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return 0;
    }
    for (int i = 0; i < g_n_benches; i++)
        if (!strcmp(argv[1], g_benches[i].name)) return g_benches[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "ramole-bench: unknown bench '%s'\n", argv[1]);
    usage();
    return 2;
}
