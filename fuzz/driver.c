// driver.c — the libFuzzer entry point, built once per target with
// -DRM_FUZZ_TARGET=<name> (Makefile: build-fuzz/fuzz_<name>).
#include "targets.h"
#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>

#define STR2(x) #x
#define STR(x) STR2(x)

static const rm_fuzz_target *g_target;

static void at_exit(void) { rm_fuzz_cleanup(); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    g_target = rm_fuzz_find(STR(RM_FUZZ_TARGET));
    if (!g_target) {
        fprintf(stderr, "fuzz: unknown target %s\n", STR(RM_FUZZ_TARGET));
        exit(2);
    }
    atexit(at_exit);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    g_target->run(data, size);
    rm_clear_error();
    return 0;
}
