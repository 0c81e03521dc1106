// json.h — a small JSON DOM parser and a string builder for writing JSON.
//
// Parsing is strict RFC 8259 (no comments, no trailing commas), UTF-8 in,
// \uXXXX escapes (with surrogate pairs) decoded to UTF-8. Nesting depth is
// limited (RM_JSON_MAX_DEPTH) so hostile input cannot blow the stack. Errors
// name the line and column.
#ifndef RM_BASE_JSON_H
#define RM_BASE_JSON_H
#include <stddef.h>
#include <stdint.h>

#define RM_JSON_MAX_DEPTH 256

typedef enum { RM_JSON_NULL, RM_JSON_BOOL, RM_JSON_NUMBER, RM_JSON_STRING, RM_JSON_ARRAY, RM_JSON_OBJECT } rm_json_type;

typedef struct rm_json rm_json;
struct rm_json {
    rm_json_type type;
    int boolean;    // RM_JSON_BOOL
    double num;     // RM_JSON_NUMBER
    int64_t inum;   // RM_JSON_NUMBER, exact when is_int
    int is_int;     // the literal was an integer that fits int64
    char *str;      // RM_JSON_STRING: NUL-terminated UTF-8 (may contain \0; use len)
    size_t len;     // string length in bytes
    size_t n;       // ARRAY / OBJECT: number of items
    rm_json *items; // ARRAY / OBJECT: values, n of them
    char **keys;    // OBJECT: keys, n of them (NUL-terminated)
};

// Parses text[0..len). `what` names the source in error messages (a path).
int rm_json_parse(const char *text, size_t len, const char *what, rm_json **out);
// Reads and parses a file.
int rm_json_parse_file(const char *path, rm_json **out);
void rm_json_free(rm_json *j);
// Calls fn for every record of a file that holds one JSON array (each item)
// or JSON lines (each non-blank line; a parse error names path:line); index
// is the item's or line's 1-based number. Stops at fn's first non-zero return
// and returns it.
int rm_json_each_record(const char *path, int (*fn)(void *user, const rm_json *rec, long index), void *user);

// Object member by key (first match), or NULL. NULL-safe on obj.
const rm_json *rm_json_get(const rm_json *obj, const char *key);
// Convenience accessors with defaults (NULL-safe, type-checked).
const char *rm_json_get_str(const rm_json *obj, const char *key, const char *dflt);
double rm_json_get_num(const rm_json *obj, const char *key, double dflt);
// A malloc'd NUL-terminated copy of a string value; NULL when j is not a
// string (or NULL) or memory runs out.
char *rm_json_strdup(const rm_json *j);
int64_t rm_json_get_int(const rm_json *obj, const char *key, int64_t dflt);
int rm_json_get_bool(const rm_json *obj, const char *key, int dflt);
// Strict readers for request fields: an absent or null key gives dflt; a
// value of another type, or a number not finite, not integral (for _int; 4.0
// and 1e3 are integral) or outside [lo, hi], is RM_EINVAL with a message
// naming the key, what it must be and the value given (a server's 400).
int rm_json_field_int(const rm_json *obj, const char *key, int64_t lo, int64_t hi, int64_t dflt, int64_t *out);
int rm_json_field_num(const rm_json *obj, const char *key, double lo, double hi, double dflt, double *out);

// Growable string buffer (for writing JSON, HTTP bodies, ...).
typedef struct rm_sb {
    char *buf; // NUL-terminated; NULL until first write
    size_t len, cap;
    int oom; // set if an allocation failed; further writes are ignored
} rm_sb;
void rm_sb_init(rm_sb *sb);
void rm_sb_free(rm_sb *sb);
void rm_sb_putn(rm_sb *sb, const char *s, size_t n);
void rm_sb_puts(rm_sb *sb, const char *s);
void rm_sb_printf(rm_sb *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Appends s[0..n) as a quoted, escaped JSON string.
void rm_sb_json_str(rm_sb *sb, const char *s, size_t n);
// Appends a number the way JSON wants it (NaN/Inf become null).
void rm_sb_json_num(rm_sb *sb, double v);
#endif
