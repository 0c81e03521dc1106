/* ramole.h — public C API of ramole, a CPU-first LLM serving engine for large
 * pools of LoRA adapters (RAMoLE: retrieval-augmented mixture of LoRA experts).
 *
 * Conventions
 *   - Every function that can fail returns an int status: RM_OK (0) or a
 *     negative RM_E* code. On failure, rm_last_error() returns a message for
 *     the calling thread that names the file / field / value at fault.
 *   - Handles are opaque; every load or create function has its free.
 *   - Parameter structs come from *_default_params(); change what you need.
 *   - The library never prints to stdout and never exits the process.
 */
#ifndef RAMOLE_H
#define RAMOLE_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef RM_STATUS_DEFINED
#define RM_STATUS_DEFINED
enum {
    RM_OK = 0,
    RM_EIO = -1,          /* cannot open / read / write a file */
    RM_EFORMAT = -2,      /* file or request is malformed */
    RM_ENOMEM = -3,       /* allocation failed */
    RM_EINVAL = -4,       /* bad argument */
    RM_EUNSUPPORTED = -5, /* well-formed but not supported */
    RM_EMISMATCH = -6,    /* does not fit the base model / other input */
    RM_ENOTFOUND = -7,    /* named thing does not exist */
    RM_EFULL = -8,        /* capacity exhausted (KV slots, context) */
};
#endif

const char *rm_last_error(void);   /* message of the last failure on this thread */
const char *rm_status_name(int status);
const char *rm_version(void);

/* ---- models ---- */
typedef struct rm_model rm_model;

typedef struct rm_model_params {
    int n_threads;   /* <= 0: all cores */
    int n_ctx;       /* context per sequence; <= 0: min(model's, 4096) */
} rm_model_params;
rm_model_params rm_model_default_params(void);

/* Loads a GGUF model (llama, mistral, qwen2). */
int rm_model_load(const char *path, const rm_model_params *params, rm_model **out);
void rm_model_free(rm_model *m);

typedef struct rm_model_info {
    const char *arch;        /* "llama" or "qwen2" */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train;
    size_t weight_bytes;
    int has_tokenizer;
} rm_model_info;
void rm_model_get_info(const rm_model *m, rm_model_info *out);

/* Text -> ids. Returns the count (may exceed cap: call again) or < 0. */
int rm_model_tokenize(const rm_model *m, const char *text, int add_bos, int32_t *ids, int cap);

typedef struct rm_generate_params {
    int n_predict;           /* new tokens (default 64) */
    float temperature;       /* <= 0: greedy (default 0.8) */
    int top_k;               /* default 40; 0 = off */
    float top_p;             /* default 0.95; 1 = off */
    float min_p;             /* default 0.05; 0 = off */
    float repeat_penalty;    /* default 1 = off */
    uint64_t seed;
} rm_generate_params;
rm_generate_params rm_generate_default_params(void);

/* Called with each piece of new text (UTF-8, possibly empty) and its token
 * id; return nonzero to stop. */
typedef int (*rm_text_cb)(void *ctx, const char *piece, int len, int32_t id);

typedef struct rm_generate_stats {
    int n_prompt, n_generated;
    double prompt_tps, generate_tps;
} rm_generate_stats;

/* Generates from a text prompt (BOS added as the model wants). stats may be NULL. */
int rm_model_generate(rm_model *m, const char *prompt, const rm_generate_params *params, rm_text_cb cb,
                      void *ctx, rm_generate_stats *stats);
/* The same from token ids (used as given: include BOS yourself). */
int rm_model_generate_ids(rm_model *m, const int32_t *ids, int n_ids, const rm_generate_params *params,
                          rm_text_cb cb, void *ctx, rm_generate_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
