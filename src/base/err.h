// err.h — status codes and the per-thread error message.
//
// Library functions return an int status: 0 (RM_OK) on success, a negative
// RM_E* code on failure. On failure they have also written a human-readable
// message (naming the file / field / value at fault) that the caller reads
// with rm_last_error(). The message is per thread, like errno.
#ifndef RM_BASE_ERR_H
#define RM_BASE_ERR_H

// The codes are public (include/ramole.h); this header adds the helpers.
#include "ramole.h"

// Sets the thread's error message (printf format) and returns `code`, so that
// callers can write `return rm_errorf(RM_EFORMAT, "%s: bad magic", path);`.
int rm_errorf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Prefixes the current message with a context string: "ctx: old message".
// Returns `code` unchanged.
int rm_error_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void rm_clear_error(void);

#endif
