// outfile.c — temp-file + rename streaming writer (see outfile.h).
#define _GNU_SOURCE
#include "format/outfile.h"
#include "base/err.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fmt_out_open(fmt_out *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->path = path;
    size_t n = strlen(path) + 24;
    o->tmp = malloc(n);
    if (!o->tmp) return rm_errorf(RM_ENOMEM, "%s: out of memory", path);
    snprintf(o->tmp, n, "%s.tmp%d", path, (int)getpid());
    o->f = fopen(o->tmp, "wb");
    if (!o->f) {
        int rc = rm_errorf(RM_EIO, "%s: cannot create: %s", o->tmp, strerror(errno));
        fmt_out_abort(o);
        return rc;
    }
    setvbuf(o->f, NULL, _IOFBF, 1 << 20);
    return RM_OK;
}

int fmt_out_write(fmt_out *o, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, o->f) != n) return rm_errorf(RM_EIO, "%s: write failed: %s", o->path, strerror(errno));
    o->pos += n;
    return RM_OK;
}

int fmt_out_pad(fmt_out *o, size_t align) {
    static const char zeros[256];
    size_t pad = (size_t)((align - o->pos % align) % align);
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        int rc = fmt_out_write(o, zeros, k);
        if (rc != RM_OK) return rc;
        pad -= k;
    }
    return RM_OK;
}

int fmt_out_commit(fmt_out *o) {
    int rc = RM_OK;
    if (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0)
        rc = rm_errorf(RM_EIO, "%s: write failed: %s", o->path, strerror(errno));
    int closed = fclose(o->f);
    o->f = NULL;
    if (closed != 0 && rc == RM_OK) rc = rm_errorf(RM_EIO, "%s: close failed: %s", o->path, strerror(errno));
    if (rc == RM_OK && rename(o->tmp, o->path) != 0)
        rc = rm_errorf(RM_EIO, "%s: cannot rename into place: %s", o->path, strerror(errno));
    if (rc != RM_OK) {
        fmt_out_abort(o);
        return rc;
    }
    free(o->tmp);
    o->tmp = NULL;
    return RM_OK;
}

void fmt_out_abort(fmt_out *o) {
    if (o->f) fclose(o->f);
    if (o->tmp) unlink(o->tmp);
    free(o->tmp);
    o->f = NULL;
    o->tmp = NULL;
}
