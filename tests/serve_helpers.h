// serve_helpers.h — what the serve tests share (defined in test_serve.c): a
// tiny synthetic model, five small tasks' sample inputs, random adapters for
// them and a pool holding some of them.
#ifndef RM_TEST_SERVE_HELPERS_H
#define RM_TEST_SERVE_HELPERS_H
#include <stddef.h>
#include <stdint.h>

// Path of the tiny model (written once into the test tmpdir), or NULL.
const char *serve_tiny_model(void);
extern const char *serve_samples[5][3];
extern const char *serve_names[5];
// Random rank-4 adapters for every task, saved as GGUF files (paths in w).
int serve_make_adapters(const char *model, char (*w)[512]);
// A fresh pool in dir (a folder, or an empty PostgreSQL database's URL;
// lexical embedder fitted on every sample) holding task a's adapter for
// every a with want[a], weights w[a] (NULL: none).
int serve_make_pool(const char *dir, const int *want, char (*weights)[512]);
// "token_ids" of a completion answer as "1 2 3" ("" when none).
struct rm_json;
void serve_ids_of(const struct rm_json *j, char *out, size_t cap);
// A PEFT adapter for another base (v_proj with input size 100; the tiny
// model's is 256) in dir.
int serve_make_bad_peft(const char *dir);
// A random RouterLoRA for the model (rank 2), saved at path.
int serve_save_router(const char *model, const char *path, uint64_t seed);

// Sends all of data on a socket: 0, or -1 (the peer gone: no SIGPIPE).
int serve_send_all(int fd, const char *data, size_t len);
// Appends a part of a multipart/form-data body with the boundary XyZzy42: a
// field, or a file (filename not NULL) with data.
struct rm_sb;
void serve_part(struct rm_sb *b, const char *name, const char *filename, const char *data, size_t len);
struct rm_test_server;
// `ramole serve` on the tiny model with a fresh pool TMP/NAME (made as
// serve_make_pool makes it, its path in pool) and flags after those; the
// adapters' files in w. 0, or -1 when something could not be made.
int serve_start_pooled(struct rm_test_server *sp, const char *name, const int *want, const char *flags, char (*w)[512],
                       char *pool, size_t cap);
// The npm package PKG@VERSION installed on first use under the build
// directory (beside the ramole binary) in its own folder npm-NAME, path in
// dir: NULL, or why it cannot be (for SKIP: no node, no registry).
const char *serve_npm_package(const char *pkg, const char *version, char *dir, size_t cap);
// Runs `node SCRIPT ARGS` (10 minutes at most): 1 when it exited 0 having
// printed "ok ..."; what it printed in *out (malloc'd, may be NULL).
int serve_node(const char *script, const char *args, char **out);
#endif
