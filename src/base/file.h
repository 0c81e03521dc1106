// file.h — read-only memory-mapped files and small file helpers.
#ifndef RM_BASE_FILE_H
#define RM_BASE_FILE_H
#include <stddef.h>
#include <stdint.h>

typedef struct rm_mmap {
    const uint8_t *data; // NULL for an empty file
    size_t size;
    size_t mapped; // bytes to unmap when larger than size (resident copies), else 0
} rm_mmap;

// Opens `path` for reading only when it is a regular file holding data: a
// FIFO (which would block the open), socket, device, directory or a /proc or
// /sys pseudo-file is refused with RM_EIO naming what it is. *fd and *size
// (its size) on success. Every loader
// opens files through this.
int rm_open_regular(const char *path, int *fd, size_t *size);
// Reads the first n bytes of a regular file (rm_open_regular's checks) into
// buf: the count read (< n for a shorter file), or a negative status.
int rm_read_head(const char *path, void *buf, size_t n);
// Maps `path` read-only (rm_open_regular's checks). On failure returns RM_EIO
// with a message naming the path.
int rm_mmap_open(rm_mmap *m, const char *path);
void rm_mmap_close(rm_mmap *m);
// Reads the file into private anonymous memory that asks for transparent huge
// pages (MADV_HUGEPAGE), so a model streamed once per token takes far fewer
// TLB misses than through 4 KiB page-cache pages (decode ~17% faster on
// TinyLlama here). Costs a copy at load and the page cache's sharing.
// Released with rm_mmap_close.
int rm_mmap_open_resident(rm_mmap *m, const char *path);
// Lets a resident copy be written (writable = 1) or makes it read-only again.
// Returns 0, or -1 for a plain mapping of the file (never writable).
int rm_mmap_set_writable(rm_mmap *m, int writable);

// Reads a whole file into a NUL-terminated malloc'd buffer (*out, *len).
int rm_read_file(const char *path, char **out, size_t *len);
// Writes `len` bytes atomically: to "path.tmp", fsync, then rename over path.
int rm_write_file_atomic(const char *path, const void *data, size_t len);
int rm_file_exists(const char *path);
int rm_is_dir(const char *path);
// The folder for temporary files: $TMPDIR when set and not empty, else /tmp.
const char *rm_tmpdir(void);
// fsync of a folder: the names made or renamed in it are on disk.
int rm_fsync_dir(const char *dir);
// mkdir -p
int rm_mkdirs(const char *path);
// The absolute form of path (malloc'd): the resolved path when it exists,
// else the current directory joined with it; NULL when out of memory or the
// current directory cannot be read. An absolute path is returned as given.
char *rm_path_absolute(const char *path);

// Monotonic seconds.
double rm_now(void);

// Zeroed private anonymous memory of `bytes` that asks for transparent huge
// pages when it spans one (then mapped in whole 2 MiB pages: rm_huge_size);
// NULL when the kernel refuses. Model weights, the KV cache and the
// bandwidth probe live in it: streamed once per token, they would otherwise
// pay a TLB miss every 4 KiB. Released with rm_huge_free(p, bytes).
void *rm_huge_alloc(size_t bytes);
size_t rm_huge_size(size_t bytes);
void rm_huge_free(void *p, size_t bytes);

#endif
