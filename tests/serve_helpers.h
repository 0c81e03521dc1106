// serve_helpers.h — what the serve tests share (defined in test_serve.c): a
// tiny synthetic model, five small tasks' sample inputs, random adapters for
// them and a pool holding some of them.
#ifndef RM_TEST_SERVE_HELPERS_H
#define RM_TEST_SERVE_HELPERS_H
// Path of the tiny model (written once into the test tmpdir), or NULL.
const char *serve_tiny_model(void);
extern const char *serve_samples[5][3];
extern const char *serve_names[5];
// Random rank-4 adapters for every task, saved as GGUF files (paths in w).
int serve_make_adapters(const char *model, char (*w)[512]);
// A fresh pool in dir (lexical embedder fitted on every sample) holding task
// a's adapter for every a with want[a], weights w[a] (NULL: none).
int serve_make_pool(const char *dir, const int *want, char (*weights)[512]);
// "token_ids" of a completion answer as "1 2 3" ("" when none).
struct rm_json;
void serve_ids_of(const struct rm_json *j, char *out, size_t cap);
// A PEFT adapter for another base (v_proj with input size 100; the tiny
// model's is 256) in dir.
int serve_make_bad_peft(const char *dir);
#endif
