// cli.h — subcommand registration and small argument helpers for `ramole`.
//
// Each subcommand lives in tools/cmd_<name>.c and registers itself:
//   RM_COMMAND(generate, "generate text from a model", cmd_generate)
// where cmd_generate(int argc, char **argv) gets argv[0] = "generate" and
// returns the process exit code. `ramole CMD --help` is the command's job.
#ifndef RM_TOOLS_CLI_H
#define RM_TOOLS_CLI_H
#include <stdio.h>

typedef int (*rm_cmd_fn)(int argc, char **argv);
void rm_cli_register(const char *name, const char *summary, rm_cmd_fn fn);

#define RM_COMMAND(name, summary, fn)                                                                                  \
    __attribute__((constructor)) static void register_cmd_##name(void) { rm_cli_register(#name, summary, fn); }

// Argument helpers: each returns 1 if argv[*i] matched (and advances *i past
// a value), 0 otherwise. On a missing/bad value they print an error and exit(2)
// (tools/ may exit; the library never does).
int cli_flag(int argc, char **argv, int *i, const char *name, const char *alias);
int cli_str(int argc, char **argv, int *i, const char *name, const char *alias, const char **out);
int cli_int(int argc, char **argv, int *i, const char *name, const char *alias, long *out);
int cli_float(int argc, char **argv, int *i, const char *name, const char *alias, double *out);
// --kv-type f32|f16: the KV cache's elements (RM_KV_F32 / RM_KV_F16) into *out.
int cli_kv_type(int argc, char **argv, int *i, int *out);
// The folder of llama.cpp's bench drivers: given, else $RAMOLE_LLAMACPP_BENCH,
// else ~/.cache/ramole-llamacpp-bench (written into buf).
const char *cli_llamacpp_dir(const char *given, char *buf, size_t cap);
// s in single quotes for /bin/sh (' as '\''); -1 when it does not fit in cap.
int cli_sh_quote(const char *s, char *out, size_t cap);
// Prints "ramole: <msg>: <rm_last_error()>" to stderr and returns 1.
int cli_fail(const char *what);
// Prints a GGUF file's ramole.* keys (one a line; string arrays joined by
// commas, u64 in hex) and its tensor count, for `router info` and `gate info`.
struct gguf_file;
void cli_print_ramole_keys(const struct gguf_file *g);
// `ramole CMD info FILE [--base MODEL]` for a file of general.type `type`
// tied to a base (a router, a gate): prints its ramole.* keys; with --base,
// fits(FILE, model) loads it against that model and "fits base MODEL" is
// printed. Returns the exit code.
struct rm_llama;
int cli_info_tied(int argc, char **argv, const char *cmd, const char *type,
                  int (*fits)(const char *path, const struct rm_llama *m));

// A list given as "a,b,c" (the option may be repeated: items accumulate) or
// @FILE (items separated by commas or new lines; spaces trimmed, blank lines
// skipped). Items are malloc'd; free with cli_list_free.
typedef struct cli_list {
    char **item;
    int n;
} cli_list;
// Appends spec's items; prints why (naming opt) and returns 2 on an empty
// item, an unreadable or empty file, or no memory.
int cli_list_add(cli_list *l, const char *opt, const char *spec);
void cli_list_free(cli_list *l);
#endif
