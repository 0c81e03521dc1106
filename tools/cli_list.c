// cli_list.c — lists of names or paths on the command line (see cli.h).
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "cli.h"

void cli_list_free(cli_list *l) {
    for (int i = 0; i < l->n; i++) free(l->item[i]);
    free(l->item);
    memset(l, 0, sizeof *l);
}

// Appends s[0..n) trimmed of spaces; empty items are skipped (*added 0).
static int push(cli_list *l, const char *s, size_t n, int *added) {
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    *added = n > 0;
    if (!n) return 0;
    char **ni = realloc(l->item, ((size_t)l->n + 1) * sizeof *ni), *v = strndup(s, n);
    if (ni) l->item = ni;
    if (!ni || !v) {
        free(v);
        return -1;
    }
    l->item[l->n++] = v;
    return 0;
}

int cli_list_add(cli_list *l, const char *opt, const char *spec) {
    char *text = NULL;
    size_t len;
    int from_file = spec[0] == '@', count = 0;
    if (from_file && rm_read_file(spec + 1, &text, &len)) return cli_fail(opt) + 1;
    const char *s = from_file ? text : spec;
    for (;;) {
        size_t n = strcspn(s, from_file ? ",\n\r" : ",");
        int added;
        if (push(l, s, n, &added)) {
            free(text);
            fprintf(stderr, "ramole: out of memory\n");
            return 2;
        }
        if (!added && !from_file) {
            fprintf(stderr, "ramole: %s '%s' has an empty item\n", opt, spec);
            return 2;
        }
        count += added;
        if (!s[n]) break;
        s += n + 1;
    }
    free(text);
    if (!count) {
        fprintf(stderr, "ramole: %s %s names nothing\n", opt, spec);
        return 2;
    }
    return 0;
}
