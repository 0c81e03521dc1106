// ramole.c — the `ramole` command: dispatches to the registered subcommands.
#include "cli.h"
#include "base/err.h"
#include "model/kvcache.h"
#include "ramole.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *name, *summary;
    rm_cmd_fn fn;
} cmd_entry;
static cmd_entry g_cmds[128];
static int g_n_cmds;

void rm_cli_register(const char *name, const char *summary, rm_cmd_fn fn) {
    if (g_n_cmds == (int)(sizeof g_cmds / sizeof g_cmds[0])) { // a build error in effect: say so at once
        fprintf(stderr, "ramole: more than %d commands registered; raise the table's size in tools/ramole.c\n",
                g_n_cmds);
        exit(70);
    }
    g_cmds[g_n_cmds++] = (cmd_entry){name, summary, fn};
}

// RAMOLE_ISA, when set, must name a kernel family (src/base/cpu.c reads it).
static int check_isa_env(void) {
    static const char *const names[] = {"auto", "scalar", "avx2", "avx512", "avx512bf16"};
    const char *isa = getenv("RAMOLE_ISA");
    if (!isa || !*isa) return 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(isa, names[i])) return 0;
    fprintf(stderr, "ramole: RAMOLE_ISA=%s is not a kernel family (auto, scalar, avx2, avx512, avx512bf16)\n", isa);
    return 2;
}

static void die_value(const char *name) {
    fprintf(stderr, "ramole: option %s needs a value\n", name);
    exit(2);
}

static int matches(const char *arg, const char *name, const char *alias) {
    return strcmp(arg, name) == 0 || (alias && strcmp(arg, alias) == 0);
}

int cli_flag(int argc, char **argv, int *i, const char *name, const char *alias) {
    (void)argc;
    return matches(argv[*i], name, alias);
}

int cli_str(int argc, char **argv, int *i, const char *name, const char *alias, const char **out) {
    if (!matches(argv[*i], name, alias)) return 0;
    if (*i + 1 >= argc) die_value(name);
    *out = argv[++*i];
    return 1;
}

int cli_int(int argc, char **argv, int *i, const char *name, const char *alias, long *out) {
    const char *s;
    if (!cli_str(argc, argv, i, name, alias, &s)) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0) {
        fprintf(stderr, "ramole: option %s wants an integer, got '%s'\n", name, s);
        exit(2);
    }
    *out = v;
    return 1;
}

int cli_float(int argc, char **argv, int *i, const char *name, const char *alias, double *out) {
    const char *s;
    if (!cli_str(argc, argv, i, name, alias, &s)) return 0;
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end != 0) {
        fprintf(stderr, "ramole: option %s wants a number, got '%s'\n", name, s);
        exit(2);
    }
    *out = v;
    return 1;
}

int cli_kv_type(int argc, char **argv, int *i, int *out) {
    const char *s;
    if (!cli_str(argc, argv, i, "--kv-type", NULL, &s)) return 0;
    if ((*out = rm_kv_type_parse(s)) < 0) {
        fprintf(stderr, "ramole: --kv-type wants f32 or f16, got '%s'\n", s);
        exit(2);
    }
    return 1;
}

int cli_fail(const char *what) {
    fprintf(stderr, "ramole: %s: %s\n", what, rm_last_error());
    return 1;
}

static int cmp_cmd(const void *a, const void *b) {
    return strcmp(((const cmd_entry *)a)->name, ((const cmd_entry *)b)->name);
}

static void usage(FILE *f) {
    fprintf(f, "ramole — serving LLMs with a large pool of LoRA adapters (RAMoLE)\n\n"
               "usage: ramole COMMAND [options]   (ramole COMMAND --help for its options)\n"
               "       ramole --version\n\ncommands:\n");
    for (int i = 0; i < g_n_cmds; i++) fprintf(f, "  %-14s %s\n", g_cmds[i].name, g_cmds[i].summary);
}

int main(int argc, char **argv) {
    qsort(g_cmds, (size_t)g_n_cmds, sizeof g_cmds[0], cmp_cmd);
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        printf("ramole %s\n", rm_version());
        return 0;
    }
    if (check_isa_env()) return 2;
    if (argc < 2 || !strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        if (argc >= 3 && !strcmp(argv[1], "help")) {
            for (int i = 0; i < g_n_cmds; i++)
                if (!strcmp(g_cmds[i].name, argv[2])) {
                    char *av[] = {argv[2], "--help", NULL};
                    return g_cmds[i].fn(2, av);
                }
        }
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 0; i < g_n_cmds; i++)
        if (!strcmp(g_cmds[i].name, argv[1])) return g_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "ramole: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
