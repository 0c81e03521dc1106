// multipart.c — see multipart.h. The body is hostile: every search is
// bounded by its length, names are copied with their sizes checked, and any
// deviation from the grammar is an error that says where.
#define _GNU_SOURCE
#include "serve/multipart.h"
#include "base/err.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

// The value of parameter key (name, filename, boundary) in a header value
// such as `form-data; name="x"; filename="y"`, quoted or not, into out.
// 1 when found, 0 when absent, -1 when too long or malformed.
static int param(const char *v, size_t vlen, const char *key, char *out, size_t cap) {
    size_t kl = strlen(key);
    for (size_t i = 0; i < vlen;) {
        while (i < vlen && (v[i] == ';' || v[i] == ' ' || v[i] == '\t')) i++;
        size_t start = i;
        while (i < vlen && v[i] != ';' && v[i] != '"') i++;
        if (i < vlen && v[i] == '"') { // a quoted value inside this parameter: skip to its end
            i++;
            while (i < vlen && v[i] != '"') i++;
            if (i >= vlen) return -1;
            i++;
            while (i < vlen && v[i] != ';') i++;
        }
        const char *p = v + start;
        size_t plen = i - start;
        if (plen > kl && !strncasecmp(p, key, kl) && p[kl] == '=') {
            const char *val = p + kl + 1;
            size_t n = plen - kl - 1;
            if (n >= 2 && val[0] == '"' && val[n - 1] == '"') val++, n -= 2;
            if (n >= cap || memchr(val, 0, n)) return -1;
            memcpy(out, val, n);
            out[n] = 0;
            return 1;
        }
    }
    return 0;
}

int rm_multipart_parse(const char *content_type, const char *body, size_t len, rm_part *parts, int cap, int *n_parts) {
    *n_parts = 0;
    char boundary[80];
    if (!content_type || strncasecmp(content_type, "multipart/form-data", 19))
        return rm_errorf(RM_EINVAL, "the upload must be multipart/form-data");
    if (param(content_type + 19, strlen(content_type + 19), "boundary", boundary, 71) != 1 || !boundary[0])
        return rm_errorf(RM_EINVAL, "multipart: no boundary (1 to 70 characters) in the Content-Type");
    char delim[84];
    int dl = snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    // the first delimiter may open the body (no preamble): look for it after a virtual CRLF
    const char *p;
    if (len >= (size_t)dl - 2 && !memcmp(body, delim + 2, (size_t)dl - 2)) p = body + dl - 2;
    else if ((p = memmem(body, len, delim, (size_t)dl))) p += dl;
    else return rm_errorf(RM_EINVAL, "multipart: the boundary never occurs");
    const char *end = body + len;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return RM_OK; // the closing delimiter
        while (p < end && (*p == ' ' || *p == '\t')) p++;             // transport padding
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return rm_errorf(RM_EINVAL, "multipart: a delimiter not followed by CRLF");
        p += 2;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
            return rm_errorf(RM_EINVAL, "multipart: a part without headers");
        const char *head_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!head_end) return rm_errorf(RM_EINVAL, "multipart: a part's headers do not end");
        if (*n_parts == cap) return rm_errorf(RM_EINVAL, "multipart: more than %d parts", cap);
        rm_part *pt = &parts[*n_parts];
        memset(pt, 0, sizeof *pt);
        for (const char *h = p; h < head_end;) { // header lines
            const char *eol = memmem(h, (size_t)(head_end + 2 - h), "\r\n", 2);
            if (!eol) eol = head_end;
            const char *colon = memchr(h, ':', (size_t)(eol - h));
            if (colon && colon - h == 19 && !strncasecmp(h, "Content-Disposition", 19)) {
                const char *v = colon + 1;
                while (v < eol && (*v == ' ' || *v == '\t')) v++;
                if ((size_t)(eol - v) < 9 || strncasecmp(v, "form-data", 9))
                    return rm_errorf(RM_EINVAL, "multipart: a part that is not form-data");
                if (param(v + 9, (size_t)(eol - v - 9), "name", pt->name, sizeof pt->name) != 1)
                    return rm_errorf(RM_EINVAL, "multipart: a part without a name (up to %zu bytes)",
                                     sizeof pt->name - 1);
                int f = param(v + 9, (size_t)(eol - v - 9), "filename", pt->filename, sizeof pt->filename);
                if (f < 0) return rm_errorf(RM_EINVAL, "multipart: a file name too long or malformed");
                pt->has_filename = f == 1;
            }
            h = eol + 2;
        }
        if (!pt->name[0])
            return rm_errorf(RM_EINVAL, "multipart: a part without Content-Disposition: form-data; name=...");
        const char *data = head_end + 4;
        if (data > end) return rm_errorf(RM_EINVAL, "multipart: truncated");
        const char *next = memmem(data, (size_t)(end - data), delim, (size_t)dl);
        if (!next) return rm_errorf(RM_EINVAL, "multipart: part '%s' is not closed by the boundary", pt->name);
        pt->data = data, pt->len = (size_t)(next - data);
        (*n_parts)++;
        p = next + dl;
    }
}

const rm_part *rm_multipart_find(const rm_part *parts, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(parts[i].name, name)) return &parts[i];
    return NULL;
}
