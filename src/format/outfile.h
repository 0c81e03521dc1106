// outfile.h — streaming writes of large files that appear atomically: data
// goes to "path.tmpPID", which is fsync'd and renamed over path on commit,
// or removed on abort. Used by the GGUF and safetensors writers, whose
// tensors may be far larger than what one buffer should hold.
#ifndef RM_FORMAT_OUTFILE_H
#define RM_FORMAT_OUTFILE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct fmt_out {
    FILE *f;
    char *tmp;        // temporary path (owned)
    const char *path; // final path (not owned; for messages)
    uint64_t pos;     // bytes written so far
} fmt_out;

int fmt_out_open(fmt_out *o, const char *path);
int fmt_out_write(fmt_out *o, const void *p, size_t n);
// Writes zero bytes until pos is a multiple of align.
int fmt_out_pad(fmt_out *o, size_t align);
// Flushes, fsyncs, closes and renames into place. On failure the temporary
// file is removed. Either way o is released.
int fmt_out_commit(fmt_out *o);
// Closes and removes the temporary file (safe after a failed open).
void fmt_out_abort(fmt_out *o);
#endif
