// err.c — per-thread error message (see err.h).
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[1024];

int rm_errorf(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return code;
}

int rm_error_prefix(int code, const char *fmt, ...) {
    char prefix[512], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    size_t np = strlen(prefix), no = strlen(old);
    if (np > sizeof g_msg - 3) np = sizeof g_msg - 3;
    if (no > sizeof g_msg - 3 - np) no = sizeof g_msg - 3 - np;
    memcpy(g_msg, prefix, np);
    memcpy(g_msg + np, ": ", 2);
    memcpy(g_msg + np + 2, old, no);
    g_msg[np + 2 + no] = 0;
    return code;
}

const char *rm_last_error(void) { return g_msg; }
void rm_clear_error(void) { g_msg[0] = 0; }

const char *rm_status_name(int code) {
    switch (code) {
    case RM_OK: return "ok";
    case RM_EIO: return "i/o error";
    case RM_EFORMAT: return "malformed input";
    case RM_ENOMEM: return "out of memory";
    case RM_EINVAL: return "invalid argument";
    case RM_EUNSUPPORTED: return "unsupported";
    case RM_EMISMATCH: return "mismatch";
    case RM_ENOTFOUND: return "not found";
    case RM_EFULL: return "capacity exhausted";
    case RM_ETOOBIG: return "too large";
    case RM_EUNAVAILABLE: return "unavailable";
    default: return "error";
    }
}
