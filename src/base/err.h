// err.h — status codes and the per-thread error message.
//
// Library functions return an int status: 0 (RM_OK) on success, a negative
// RM_E* code on failure. On failure they have also written a human-readable
// message (naming the file / field / value at fault) that the caller reads
// with rm_last_error(). The message is per thread, like errno.
#ifndef RM_BASE_ERR_H
#define RM_BASE_ERR_H

enum {
    RM_OK = 0,
    RM_EIO = -1,        // cannot open / read / write a file
    RM_EFORMAT = -2,    // file or request is malformed (bad magic, truncated, inconsistent)
    RM_ENOMEM = -3,     // allocation failed
    RM_EINVAL = -4,     // bad argument from the caller
    RM_EUNSUPPORTED = -5, // well-formed but not supported (type, architecture, feature)
    RM_EMISMATCH = -6,  // does not fit the base model / other input
    RM_ENOTFOUND = -7,  // named thing does not exist
    RM_EFULL = -8,      // capacity exhausted (KV slots, context length)
};

// Sets the thread's error message (printf format) and returns `code`, so that
// callers can write `return rm_errorf(RM_EFORMAT, "%s: bad magic", path);`.
int rm_errorf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Prefixes the current message with a context string: "ctx: old message".
// Returns `code` unchanged.
int rm_error_prefix(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// The last message set on this thread ("" if none).
const char *rm_last_error(void);
void rm_clear_error(void);
const char *rm_status_name(int code);

#endif
