// targets.h — one entry point per parser, fed arbitrary bytes. libFuzzer
// drives them (fuzz/driver.c, `make fuzz`); the test suite replays every file
// under tests/regress/<target>/ through the same functions (tests/test_regress.c),
// so each finding stays fixed under the sanitizer build.
//
// A target must never crash, hang, leak or hit undefined behaviour, whatever
// the bytes; it returns 0 when the input was accepted, else the status.
#ifndef RM_FUZZ_TARGETS_H
#define RM_FUZZ_TARGETS_H
#include <stddef.h>
#include <stdint.h>

typedef struct rm_fuzz_target {
    const char *name;
    int (*run)(const uint8_t *data, size_t size);
    const char *what;
} rm_fuzz_target;

// NULL-terminated table of every target.
extern const rm_fuzz_target rm_fuzz_targets[];
const rm_fuzz_target *rm_fuzz_find(const char *name);
// Removes the scratch directory the targets write their files to.
void rm_fuzz_cleanup(void);
#endif
