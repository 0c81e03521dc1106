// file.c — mmap, whole-file read/write, directories, clock.
#define _GNU_SOURCE
#include "base/file.h"
#include "base/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

// Kernel pseudo-filesystems whose "regular" files are not data at rest.
#define FS_PROC 0x9fa0
#define FS_SYSFS 0x62656572
#define FS_DEBUGFS 0x64626720
#define FS_SECURITYFS 0x73636673

int rm_open_regular(const char *path, int *fd_out, size_t *size) {
    *fd_out = -1;
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return rm_errorf(RM_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    struct statfs sf;
    const char *bad = NULL;
    if (fstat(fd, &st) != 0 || fstatfs(fd, &sf) != 0) bad = "cannot stat it";
    else if (S_ISDIR(st.st_mode)) bad = "is a directory";
    else if (!S_ISREG(st.st_mode)) bad = "not a regular file (a FIFO, socket or device)";
    else if (sf.f_type == FS_PROC || sf.f_type == FS_SYSFS || sf.f_type == FS_DEBUGFS || sf.f_type == FS_SECURITYFS)
        bad = "a kernel pseudo-file (/proc, /sys), not a data file";
    else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) bad = "cannot set it blocking";
    if (bad) {
        close(fd);
        return rm_errorf(RM_EIO, "%s: %s", path, bad);
    }
    *fd_out = fd;
    *size = (size_t)st.st_size;
    return RM_OK;
}

int rm_read_head(const char *path, void *buf, size_t n) {
    int fd;
    size_t size;
    int rc = rm_open_regular(path, &fd, &size);
    if (rc) return rc;
    ssize_t got;
    do got = pread(fd, buf, n, 0);
    while (got < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    return got < 0 ? rm_errorf(RM_EIO, "%s: read failed: %s", path, strerror(e)) : (int)got;
}

int rm_mmap_open(rm_mmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd;
    size_t size;
    int rc = rm_open_regular(path, &fd, &size);
    if (rc) return rc;
    if (size > 0) {
        void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return rm_errorf(RM_EIO, "%s: cannot mmap: %s", path, strerror(e));
        }
        m->data = p;
        m->size = size;
    }
    close(fd);
    return RM_OK;
}

int rm_mmap_open_resident(rm_mmap *m, const char *path) {
    memset(m, 0, sizeof *m);
    int fd;
    size_t size;
    int rc = rm_open_regular(path, &fd, &size);
    if (rc) return rc;
    if (size == 0) {
        close(fd);
        return RM_OK;
    }
    size_t cap = rm_huge_size(size);
    void *p = rm_huge_alloc(size);
    if (!p) {
        close(fd);
        return rm_errorf(RM_ENOMEM, "%s: cannot allocate %zu MiB to hold the file", path, cap >> 20);
    }
    size_t off = 0;
    while (off < size) {
        ssize_t r = pread(fd, (char *)p + off, size - off, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            rm_huge_free(p, size);
            close(fd);
            return rm_errorf(RM_EIO, "%s: read failed at byte %zu: %s", path, off, strerror(e));
        }
        off += (size_t)r;
    }
    close(fd);
    mprotect(p, cap, PROT_READ); // weights are never written: make stray writes fault
    m->data = p;
    m->size = size;
    m->mapped = cap;
    return RM_OK;
}

int rm_mmap_set_writable(rm_mmap *m, int writable) {
    if (!m->data || !m->mapped) return -1;
    return mprotect((void *)m->data, m->mapped, writable ? PROT_READ | PROT_WRITE : PROT_READ);
}

void rm_mmap_close(rm_mmap *m) {
    if (m->data) munmap((void *)m->data, m->mapped > m->size ? m->mapped : m->size);
    m->data = NULL;
    m->size = 0;
    m->mapped = 0;
}

int rm_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    int fd;
    size_t size;
    int rc = rm_open_regular(path, &fd, &size);
    if (rc) return rc;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return rm_errorf(RM_ENOMEM, "%s: out of memory", path);
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return rm_errorf(RM_ENOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return rm_errorf(RM_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return rm_errorf(RM_EIO, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return RM_OK;
}

int rm_write_file_atomic(const char *path, const void *data, size_t len) {
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return rm_errorf(RM_ENOMEM, "out of memory");
    snprintf(tmp, pl + 16, "%s.tmp%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return rm_errorf(RM_EIO, "%s: cannot create: %s", path, strerror(e));
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            free(tmp);
            return rm_errorf(RM_EIO, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return rm_errorf(RM_EIO, "%s: cannot finish write: %s", path, strerror(e));
    }
    free(tmp);
    return RM_OK;
}

int rm_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return rm_errorf(RM_EIO, "%s: cannot open the folder: %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? RM_OK : rm_errorf(RM_EIO, "%s: cannot sync the folder: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

int rm_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int rm_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *rm_tmpdir(void) {
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

int rm_mkdirs(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return rm_errorf(RM_EINVAL, "bad directory path '%s'", path);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return rm_errorf(RM_EIO, "%s: cannot create directory: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    return RM_OK;
}

double rm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *rm_path_absolute(const char *path) {
    if (path[0] == '/') return strdup(path);
    char *r = realpath(path, NULL);
    if (r) return r;
    char *cwd = getcwd(NULL, 0);
    if (!cwd) return NULL;
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s/%s", cwd, path);
    free(cwd);
    return out;
}

enum { HUGE_PAGE = 2 << 20 };

size_t rm_huge_size(size_t bytes) {
    return bytes < HUGE_PAGE ? bytes : (bytes + HUGE_PAGE - 1) & ~((size_t)HUGE_PAGE - 1);
}

void *rm_huge_alloc(size_t bytes) {
    size_t b = rm_huge_size(bytes);
    void *p = b ? mmap(NULL, b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
    if (p == MAP_FAILED) return NULL;
    if (b >= HUGE_PAGE) madvise(p, b, MADV_HUGEPAGE); // advisory: fine if the kernel says no
    return p;
}

void rm_huge_free(void *p, size_t bytes) {
    if (p) munmap(p, rm_huge_size(bytes));
}
