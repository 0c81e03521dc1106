// web.h — the page `ramole serve` gives at / (src/serve/web/: index.html,
// app.js, app.css, favicon.svg), built into the binary: the Makefile turns those files
// into a C source (scripts/embed_files.c) compiled with the library.
#ifndef RM_SERVE_WEB_H
#define RM_SERVE_WEB_H
#include <stddef.h>

typedef struct rm_web_file {
    const char *name;          // the file's name ("index.html")
    const unsigned char *data; // its bytes (a NUL follows them)
    size_t len;
} rm_web_file;
// Every file, then one with name NULL.
extern const rm_web_file rm_web_files[];
#endif
