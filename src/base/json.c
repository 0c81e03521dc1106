// json.c — strict RFC 8259 DOM parser and the rm_sb string builder (see json.h).
//
// The parser is recursive descent over text[0..len) (the text need not be
// NUL-terminated). Depth is bounded by RM_JSON_MAX_DEPTH, so hostile input
// cannot exhaust the stack; every read checks the end of the buffer first.
// On error the message is "WHAT:LINE:COL: problem" (1-based line and column,
// column counted in bytes).
#include "base/json.h"
#include "base/err.h"
#include "base/file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Parser state and errors
// ---------------------------------------------------------------------------

typedef struct json_parser {
    const char *text;
    size_t len, pos;
    const char *what;
    int depth;
} json_parser;

// Sets "what:line:col: msg" for the byte at `at` and returns RM_EFORMAT.
static int json_fail_at(const json_parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int json_fail_at(const json_parser *p, size_t at, const char *fmt, ...) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->text[i] == '\n') {
            line++;
            col = 1;
        } else col++;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return rm_errorf(RM_EFORMAT, "%s:%zu:%zu: %s", p->what, line, col, msg);
}

static int json_oom(const json_parser *p) {
    return rm_errorf(RM_ENOMEM, "%s: out of memory while parsing JSON", p->what);
}

static void json_skip_ws(json_parser *p) {
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

// Describes the byte at pos for error messages ("end of input", "'x'", "byte 0xNN").
static void json_describe(const json_parser *p, char *buf, size_t cap) {
    if (p->pos >= p->len) {
        snprintf(buf, cap, "end of input");
        return;
    }
    unsigned char c = (unsigned char)p->text[p->pos];
    if (c >= 0x20 && c < 0x7f) snprintf(buf, cap, "'%c'", c);
    else snprintf(buf, cap, "byte 0x%02x", c);
}

static int json_unexpected(const json_parser *p, const char *expected) {
    char got[32];
    json_describe(p, got, sizeof got);
    return json_fail_at(p, p->pos, "expected %s, got %s", expected, got);
}

// ---------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------

// Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid (overlong,
// surrogate, > U+10FFFF, truncated or stray continuation byte).
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t need;
    unsigned cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else return 0;
    if (n < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return need;
}

// Writes code point cp (valid, not a surrogate) as UTF-8; returns bytes written.
static size_t utf8_encode(unsigned cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

static int json_parse_value(json_parser *p, rm_json *out);

static int hex4(const json_parser *p, size_t at, unsigned *out) {
    if (p->len - at < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[at + (size_t)i];
        unsigned d;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

// Decodes one \u escape of four hex digits (plus its low surrogate when it is a high one)
// starting at the 'u'; advances p->pos past it and writes UTF-8 to buf.
static int json_unicode_escape(json_parser *p, char *buf, size_t *n) {
    size_t start = p->pos - 1; // the backslash
    unsigned cp;
    if (hex4(p, p->pos + 1, &cp) != 0) return json_fail_at(p, start, "bad \\u escape (want 4 hex digits)");
    p->pos += 5;
    if (cp >= 0xdc00 && cp <= 0xdfff) return json_fail_at(p, start, "lone low surrogate \\u%04x", cp);
    if (cp >= 0xd800 && cp <= 0xdbff) {
        unsigned lo;
        if (p->len - p->pos < 6 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u' ||
            hex4(p, p->pos + 2, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
            return json_fail_at(p, start, "high surrogate \\u%04x not followed by a low surrogate", cp);
        p->pos += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    *n = utf8_encode(cp, buf);
    return RM_OK;
}

// Parses a string starting at the opening quote. Result is malloc'd,
// NUL-terminated, its length in *len_out.
static int json_parse_string(json_parser *p, char **str_out, size_t *len_out) {
    size_t start = p->pos;
    p->pos++; // opening quote
    // Decoded output is never longer than the source span, so size it by a
    // first scan to the closing quote.
    size_t end = p->pos;
    while (end < p->len && p->text[end] != '"') end += p->text[end] == '\\' ? 2 : 1;
    if (end >= p->len) return json_fail_at(p, start, "unterminated string");
    char *buf = malloc(end - p->pos + 1);
    if (!buf) return json_oom(p);
    size_t n = 0;
    int rc = RM_OK;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->text[p->pos];
        if (c < 0x20) {
            rc = json_fail_at(p, p->pos, "unescaped control character 0x%02x in string", c);
            break;
        }
        if (c == '\\') {
            char e = p->text[p->pos + 1];
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                buf[n++] = map[simple - "\"\\/bfnrt"];
                p->pos += 2;
            } else if (e == 'u') {
                size_t k = 0;
                p->pos++;
                if ((rc = json_unicode_escape(p, buf + n, &k)) != RM_OK) break;
                n += k;
            } else {
                rc = json_fail_at(p, p->pos, "bad escape in string");
                break;
            }
            continue;
        }
        size_t k = utf8_valid_len((const unsigned char *)p->text + p->pos, end - p->pos);
        if (k == 0) {
            rc = json_fail_at(p, p->pos, "invalid UTF-8 byte 0x%02x in string", c);
            break;
        }
        memcpy(buf + n, p->text + p->pos, k);
        n += k;
        p->pos += k;
    }
    if (rc != RM_OK) {
        free(buf);
        return rc;
    }
    p->pos = end + 1;
    buf[n] = 0;
    *str_out = buf;
    *len_out = n;
    return RM_OK;
}

static size_t json_digits(const json_parser *p, size_t at) {
    size_t i = at;
    while (i < p->len && p->text[i] >= '0' && p->text[i] <= '9') i++;
    return i - at;
}

// number = [ '-' ] int [ frac ] [ exp ], int = '0' / digit1-9 *digit
static int json_parse_number(json_parser *p, rm_json *out) {
    size_t start = p->pos, i = p->pos;
    int neg = 0, integral = 1;
    if (p->text[i] == '-') {
        neg = 1;
        i++;
    }
    size_t nd = json_digits(p, i);
    if (nd == 0) return json_fail_at(p, i, "bad number: digit expected");
    if (p->text[i] == '0' && nd > 1) return json_fail_at(p, i, "bad number: leading zero");
    size_t int_begin = i, int_end = i + nd;
    i = int_end;
    if (i < p->len && p->text[i] == '.') {
        integral = 0;
        size_t fd = json_digits(p, i + 1);
        if (fd == 0) return json_fail_at(p, i + 1, "bad number: digit expected after '.'");
        i += 1 + fd;
    }
    if (i < p->len && (p->text[i] == 'e' || p->text[i] == 'E')) {
        integral = 0;
        i++;
        if (i < p->len && (p->text[i] == '+' || p->text[i] == '-')) i++;
        size_t ed = json_digits(p, i);
        if (ed == 0) return json_fail_at(p, i, "bad number: digit expected in exponent");
        i += ed;
    }
    // strtod needs a NUL-terminated copy.
    size_t n = i - start;
    char small[64], *tmp = n < sizeof small ? small : malloc(n + 1);
    if (!tmp) return json_oom(p);
    memcpy(tmp, p->text + start, n);
    tmp[n] = 0;
    errno = 0;
    out->num = strtod(tmp, NULL); // overflow gives +-HUGE_VAL, underflow 0: both acceptable
    if (tmp != small) free(tmp);
    out->type = RM_JSON_NUMBER;
    out->is_int = 0;
    if (integral) {
        // Exact int64 when it fits: accumulate as a negative number, whose
        // range includes INT64_MIN.
        int64_t v = 0;
        int fits = 1;
        for (size_t k = int_begin; k < int_end; k++) {
            int d = p->text[k] - '0';
            if (v < (INT64_MIN + d) / 10) {
                fits = 0;
                break;
            }
            v = v * 10 - d;
        }
        if (fits && !neg && v == INT64_MIN) fits = 0;
        if (fits) {
            out->inum = neg ? v : -v;
            out->is_int = 1;
        }
    }
    if (!out->is_int) out->inum = isfinite(out->num) && fabs(out->num) < 9.2e18 ? (int64_t)out->num : 0;
    p->pos = i;
    return RM_OK;
}

static int json_literal(json_parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) return json_unexpected(p, "a value");
    p->pos += n;
    return RM_OK;
}

// Grows a (items, keys) pair of arrays to hold at least n+1 entries.
static int json_grow(json_parser *p, rm_json *v, size_t *cap, int with_keys) {
    if (v->n < *cap) return RM_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    rm_json *items = realloc(v->items, nc * sizeof *items);
    if (!items) return json_oom(p);
    v->items = items;
    if (with_keys) {
        char **keys = realloc(v->keys, nc * sizeof *keys);
        if (!keys) return json_oom(p);
        v->keys = keys;
    }
    *cap = nc;
    return RM_OK;
}

// Parses an array or object (at '[' or '{'). Items parsed so far are counted
// in v->n so that rm_json_free can release a partial container.
static int json_parse_container(json_parser *p, rm_json *v, int is_obj) {
    char close = is_obj ? '}' : ']';
    v->type = is_obj ? RM_JSON_OBJECT : RM_JSON_ARRAY;
    if (++p->depth > RM_JSON_MAX_DEPTH) return json_fail_at(p, p->pos, "nesting deeper than %d", RM_JSON_MAX_DEPTH);
    p->pos++;
    json_skip_ws(p);
    size_t cap = 0;
    if (p->pos < p->len && p->text[p->pos] == close) {
        p->pos++;
        p->depth--;
        return RM_OK;
    }
    for (;;) {
        int rc = json_grow(p, v, &cap, is_obj);
        if (rc != RM_OK) return rc;
        rm_json *item = &v->items[v->n];
        memset(item, 0, sizeof *item);
        if (is_obj) {
            v->keys[v->n] = NULL;
            json_skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != '"') return json_unexpected(p, "a string key");
            size_t klen;
            rc = json_parse_string(p, &v->keys[v->n], &klen);
            if (rc != RM_OK) return rc;
            v->n++; // from here the slot is owned (item is a null value until parsed)
            json_skip_ws(p);
            if (p->pos >= p->len || p->text[p->pos] != ':') return json_unexpected(p, "':'");
            p->pos++;
            if ((rc = json_parse_value(p, item)) != RM_OK) return rc;
        } else {
            v->n++;
            if ((rc = json_parse_value(p, item)) != RM_OK) return rc;
        }
        json_skip_ws(p);
        if (p->pos < p->len && p->text[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->text[p->pos] == close) {
            p->pos++;
            break;
        }
        return json_unexpected(p, is_obj ? "',' or '}'" : "',' or ']'");
    }
    p->depth--;
    return RM_OK;
}

static int json_parse_value(json_parser *p, rm_json *out) {
    json_skip_ws(p);
    if (p->pos >= p->len) return json_unexpected(p, "a value");
    char c = p->text[p->pos];
    switch (c) {
    case '{': return json_parse_container(p, out, 1);
    case '[': return json_parse_container(p, out, 0);
    case '"': out->type = RM_JSON_STRING; return json_parse_string(p, &out->str, &out->len);
    case 't':
        out->type = RM_JSON_BOOL;
        out->boolean = 1;
        return json_literal(p, "true");
    case 'f':
        out->type = RM_JSON_BOOL;
        out->boolean = 0;
        return json_literal(p, "false");
    case 'n': out->type = RM_JSON_NULL; return json_literal(p, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return json_parse_number(p, out);
        return json_unexpected(p, "a value");
    }
}

// ---------------------------------------------------------------------------
// Public parse / free
// ---------------------------------------------------------------------------

static void json_free_contents(rm_json *j) {
    if (j->type == RM_JSON_STRING) free(j->str);
    if (j->type == RM_JSON_ARRAY || j->type == RM_JSON_OBJECT) {
        for (size_t i = 0; i < j->n; i++) {
            json_free_contents(&j->items[i]);
            if (j->keys) free(j->keys[i]);
        }
        free(j->items);
        free(j->keys);
    }
}

void rm_json_free(rm_json *j) {
    if (!j) return;
    json_free_contents(j);
    free(j);
}

int rm_json_parse(const char *text, size_t len, const char *what, rm_json **out) {
    *out = NULL;
    json_parser p = {.text = text, .len = text ? len : 0, .what = what ? what : "<json>"};
    // RFC 8259 section 8.1: a parser may ignore a leading byte order mark.
    if (p.len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) p.pos = 3;
    rm_json *root = calloc(1, sizeof *root);
    if (!root) return json_oom(&p);
    int rc = json_parse_value(&p, root);
    if (rc == RM_OK) {
        json_skip_ws(&p);
        if (p.pos < p.len) rc = json_unexpected(&p, "end of input after the value");
    }
    if (rc != RM_OK) {
        rm_json_free(root);
        return rc;
    }
    *out = root;
    return RM_OK;
}

int rm_json_parse_file(const char *path, rm_json **out) {
    *out = NULL;
    char *text;
    size_t len;
    int rc = rm_read_file(path, &text, &len);
    if (rc != RM_OK) return rc;
    rc = rm_json_parse(text, len, path, out);
    free(text);
    return rc;
}

int rm_json_each_record(const char *path, int (*fn)(void *user, const rm_json *rec, long index), void *user) {
    char *text;
    size_t len;
    int rc = rm_read_file(path, &text, &len);
    if (rc) return rc;
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++;
    if (i < len && text[i] == '[') { // one JSON array
        rm_json *j = NULL;
        rc = rm_json_parse(text, len, path, &j);
        for (size_t k = 0; !rc && k < j->n; k++) rc = fn(user, &j->items[k], (long)k + 1);
        rm_json_free(j);
    } else { // JSON lines; blank lines are skipped
        long line = 0;
        for (size_t s = 0; s < len && !rc;) {
            size_t e = s;
            while (e < len && text[e] != '\n') e++;
            line++;
            size_t a = s;
            while (a < e && (text[a] == ' ' || text[a] == '\r' || text[a] == '\t')) a++;
            if (a < e) {
                rm_json *j = NULL;
                char what[600];
                snprintf(what, sizeof what, "%s:%ld", path, line);
                rc = rm_json_parse(text + a, e - a, what, &j);
                if (!rc) rc = fn(user, j, line);
                rm_json_free(j);
            }
            s = e + 1;
        }
    }
    free(text);
    return rc;
}

// ---------------------------------------------------------------------------
// Accessors
// ---------------------------------------------------------------------------

const rm_json *rm_json_get(const rm_json *obj, const char *key) {
    if (!obj || obj->type != RM_JSON_OBJECT || !key) return NULL;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const char *rm_json_get_str(const rm_json *obj, const char *key, const char *dflt) {
    const rm_json *v = rm_json_get(obj, key);
    return v && v->type == RM_JSON_STRING ? v->str : dflt;
}

char *rm_json_strdup(const rm_json *j) {
    if (!j || j->type != RM_JSON_STRING) return NULL;
    char *s = malloc(j->len + 1);
    if (s) {
        memcpy(s, j->str, j->len);
        s[j->len] = 0;
    }
    return s;
}

double rm_json_get_num(const rm_json *obj, const char *key, double dflt) {
    const rm_json *v = rm_json_get(obj, key);
    return v && v->type == RM_JSON_NUMBER ? v->num : dflt;
}

int64_t rm_json_get_int(const rm_json *obj, const char *key, int64_t dflt) {
    const rm_json *v = rm_json_get(obj, key);
    if (!v || v->type != RM_JSON_NUMBER) return dflt;
    if (v->is_int) return v->inum;
    // 1e3 or 4.0 are integers written another way; 0.5 is not.
    if (isfinite(v->num) && v->num == floor(v->num) && fabs(v->num) < 9.2e18) return (int64_t)v->num;
    return dflt;
}

// The field's number, or dflt when absent/null (*have 0); RM_EINVAL when it is
// not a finite number.
static int field_number(const rm_json *obj, const char *key, double *num, int *have) {
    const rm_json *v = rm_json_get(obj, key);
    *have = v && v->type != RM_JSON_NULL;
    if (!*have) return RM_OK;
    if (v->type != RM_JSON_NUMBER) return rm_errorf(RM_EINVAL, "\"%s\" must be a number", key);
    if (!isfinite(v->num)) return rm_errorf(RM_EINVAL, "\"%s\" must be a finite number", key);
    *num = v->num;
    return RM_OK;
}

int rm_json_field_int(const rm_json *obj, const char *key, int64_t lo, int64_t hi, int64_t dflt, int64_t *out) {
    *out = dflt;
    double num = 0.0;
    int have, rc = field_number(obj, key, &num, &have);
    if (rc || !have) return rc;
    const rm_json *v = rm_json_get(obj, key);
    int integral = v->is_int || num == floor(num);
    if (!integral || num < (double)lo || num > (double)hi)
        return rm_errorf(RM_EINVAL, "\"%s\" must be an integer in [%lld, %lld], not %.17g", key, (long long)lo,
                         (long long)hi, num);
    *out = v->is_int ? v->inum : (int64_t)num;
    return RM_OK;
}

int rm_json_field_num(const rm_json *obj, const char *key, double lo, double hi, double dflt, double *out) {
    *out = dflt;
    double num = 0.0;
    int have, rc = field_number(obj, key, &num, &have);
    if (rc || !have) return rc;
    if (num < lo || num > hi) return rm_errorf(RM_EINVAL, "\"%s\" must be in [%g, %g], not %.17g", key, lo, hi, num);
    *out = num;
    return RM_OK;
}

int rm_json_get_bool(const rm_json *obj, const char *key, int dflt) {
    const rm_json *v = rm_json_get(obj, key);
    return v && v->type == RM_JSON_BOOL ? v->boolean : dflt;
}

// ---------------------------------------------------------------------------
// String builder
// ---------------------------------------------------------------------------

void rm_sb_init(rm_sb *sb) { memset(sb, 0, sizeof *sb); }

void rm_sb_free(rm_sb *sb) {
    free(sb->buf);
    rm_sb_init(sb);
}

// Makes room for `extra` more bytes plus the NUL; 0 on success.
static int sb_reserve(rm_sb *sb, size_t extra) {
    if (sb->oom) return -1;
    if (extra > SIZE_MAX - sb->len - 1) {
        sb->oom = 1;
        return -1;
    }
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap) return 0;
    size_t nc = sb->cap ? sb->cap : 64;
    while (nc < need) nc = nc > SIZE_MAX / 2 ? need : nc * 2;
    char *nb = realloc(sb->buf, nc);
    if (!nb) {
        sb->oom = 1;
        return -1;
    }
    sb->buf = nb;
    sb->cap = nc;
    return 0;
}

void rm_sb_putn(rm_sb *sb, const char *s, size_t n) {
    if (sb_reserve(sb, n) != 0) return;
    if (n) memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = 0;
}

void rm_sb_puts(rm_sb *sb, const char *s) { rm_sb_putn(sb, s, strlen(s)); }

void rm_sb_printf(rm_sb *sb, const char *fmt, ...) {
    if (sb_reserve(sb, 0) != 0) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->oom = 1;
        return;
    }
    if ((size_t)n >= sb->cap - sb->len) {
        if (sb_reserve(sb, (size_t)n) != 0) return;
        va_start(ap, fmt);
        vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
        va_end(ap);
    }
    sb->len += (size_t)n;
}

// Escapes quote, backslash and control characters; valid UTF-8 passes
// through unchanged, and each byte of an invalid sequence becomes U+FFFD so
// that the output is always valid JSON.
void rm_sb_json_str(rm_sb *sb, const char *s, size_t n) {
    rm_sb_putn(sb, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t run = i; // copy plain runs in one go
        while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\') run++;
        if (run > i) {
            rm_sb_putn(sb, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = u[i];
        if (c == '"') rm_sb_putn(sb, "\\\"", 2);
        else if (c == '\\') rm_sb_putn(sb, "\\\\", 2);
        else if (c == '\n') rm_sb_putn(sb, "\\n", 2);
        else if (c == '\r') rm_sb_putn(sb, "\\r", 2);
        else if (c == '\t') rm_sb_putn(sb, "\\t", 2);
        else if (c == '\b') rm_sb_putn(sb, "\\b", 2);
        else if (c == '\f') rm_sb_putn(sb, "\\f", 2);
        else if (c < 0x20) rm_sb_printf(sb, "\\u%04x", c);
        else {
            size_t k = utf8_valid_len(u + i, n - i);
            if (k == 0) {
                rm_sb_putn(sb, "\xef\xbf\xbd", 3);
                k = 1;
            } else rm_sb_putn(sb, s + i, k);
            i += k;
            continue;
        }
        i++;
    }
    rm_sb_putn(sb, "\"", 1);
}

// Shortest of %.15g / %.17g that reads back as the same double.
void rm_sb_json_num(rm_sb *sb, double v) {
    if (!isfinite(v)) {
        rm_sb_puts(sb, "null");
        return;
    }
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    rm_sb_puts(sb, buf);
}
