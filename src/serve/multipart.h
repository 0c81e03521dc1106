// multipart.h — multipart/form-data bodies (RFC 7578): what a browser form
// or `curl -F` sends, here the files of an uploaded adapter and its fields.
#ifndef RM_SERVE_MULTIPART_H
#define RM_SERVE_MULTIPART_H
#include <stddef.h>

typedef struct rm_part {
    char name[64];      // the form field's name
    char filename[256]; // the file's name as the client gave it (only when has_filename)
    int has_filename;
    const char *data; // inside the body (not copied)
    size_t len;
} rm_part;

// Splits body[0..len) by the boundary of content_type (the request's
// Content-Type header) into at most cap parts. RM_OK, or RM_EINVAL with a
// message naming what is wrong.
int rm_multipart_parse(const char *content_type, const char *body, size_t len, rm_part *parts, int cap, int *n_parts);
// The first part called name, or NULL.
const rm_part *rm_multipart_find(const rm_part *parts, int n, const char *name);
#endif
