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
 *
 * Threads
 *   - rm_last_error() is per thread; every other function sets only the
 *     calling thread's message.
 *   - rm_model: one generation at a time per model (it holds one KV cache
 *     and one thread pool, which rm_model_generate* use): serialize
 *     rm_model_generate and rm_model_generate_ids on the same model, or load
 *     the model once per thread. rm_model_get_info, rm_model_tokenize,
 *     rm_model_load_adapter and rm_model_load_router only read the model and
 *     may run on any thread, also during a generation on it.
 *   - rm_adapter: read-only once loaded; may be named by any generation on the
 *     model it was loaded for (each generation's use is read-only).
 *   - rm_adapter_pool: one thread at a time per handle (a retrieval keeps its
 *     strings in the handle). Separate handles, in threads or processes, may
 *     open the same pool at once: the pool's storage is shared safely.
 *   - Every *_free / *_close must come after the handle's last use on any thread.
 */
#ifndef RAMOLE_H
#define RAMOLE_H
#include <stddef.h>
#include <stdint.h>

/* The library's version; rm_version() returns it, `ramole --version` prints
 * it, and the installed ramole.pc carries it. */
#define RM_VERSION "0.1.0"

/* Marks what libramole.so exports: the rm_ functions of this header; the
 * library's other symbols are hidden (it is built with -fvisibility=hidden). */
#ifndef RM_API
#if defined(__GNUC__)
#define RM_API __attribute__((visibility("default")))
#else
#define RM_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifndef RM_STATUS_DEFINED
#define RM_STATUS_DEFINED
enum {
    RM_OK = 0,
    RM_EIO = -1,           /* cannot open / read / write a file */
    RM_EFORMAT = -2,       /* file or request is malformed */
    RM_ENOMEM = -3,        /* allocation failed */
    RM_EINVAL = -4,        /* bad argument */
    RM_EUNSUPPORTED = -5,  /* well-formed but not supported */
    RM_EMISMATCH = -6,     /* does not fit the base model / other input */
    RM_ENOTFOUND = -7,     /* named thing does not exist */
    RM_EFULL = -8,         /* capacity exhausted (KV slots, context) */
    RM_ETOOBIG = -9,       /* input over a size limit (an upload's samples or bytes): HTTP 413 */
    RM_EUNAVAILABLE = -10, /* a server the call needs (the pool's database) cannot be reached: HTTP 503 */
};
#endif

RM_API const char *rm_last_error(void); /* message of the last failure on this thread */
RM_API const char *rm_status_name(int status);
RM_API const char *rm_version(void);

/* ---- models ---- */
typedef struct rm_model rm_model;

typedef struct rm_model_params {
    int n_threads; /* <= 0: all cores */
    int n_ctx;     /* context per sequence; <= 0: min(model's, 4096) */
    int kv_f16;    /* 1: the KV cache holds f16 keys and values (half the memory); 0: f32 (the default) */
} rm_model_params;
RM_API rm_model_params rm_model_default_params(void);

/* Loads a GGUF model (llama, mistral, qwen2). */
RM_API int rm_model_load(const char *path, const rm_model_params *params, rm_model **out);
RM_API void rm_model_free(rm_model *m);

typedef struct rm_model_info {
    const char *arch; /* "llama" or "qwen2" */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train;
    size_t weight_bytes;
    int has_tokenizer;
} rm_model_info;
RM_API void rm_model_get_info(const rm_model *m, rm_model_info *out);

/* Text -> ids. Returns the count (may exceed cap: call again) or < 0. */
RM_API int rm_model_tokenize(const rm_model *m, const char *text, int add_bos, int32_t *ids, int cap);

typedef struct rm_adapter rm_adapter;

/* How the adapters of one generation are composed (the RAMoLE paper's four ways). */
enum {
    RM_COMPOSITION_AUTO = -1, /* selection for one adapter, mixture for more */
    RM_COMPOSITION_SELECTION, /* one adapter: y = W x + s B A x */
    RM_COMPOSITION_MIXTURE,   /* the average of the adapters' outputs */
    RM_COMPOSITION_FUSION,    /* one adapter of the averaged A and B */
    RM_COMPOSITION_ROUTER     /* a trained RouterLoRA weighs their outputs per token (needs router) */
};

typedef struct rm_generate_params {
    int n_predict;        /* new tokens (default 64) */
    float temperature;    /* <= 0: greedy (default 0.8) */
    int top_k;            /* default 40; 0 = off */
    float top_p;          /* default 0.95; 1 = off */
    float min_p;          /* default 0.05; 0 = off */
    float repeat_penalty; /* default 1 = off */
    uint64_t seed;
    const rm_adapter *const *adapters; /* LoRA adapters to apply (NULL: the base model alone) */
    int n_adapters;                    /* up to 16 */
    int composition;                   /* RM_COMPOSITION_* (default AUTO) */
    const rm_adapter *router;          /* for RM_COMPOSITION_ROUTER (rm_model_load_router) */
} rm_generate_params;
RM_API rm_generate_params rm_generate_default_params(void);

/* Called with each piece of new text (UTF-8, possibly empty) and its token
 * id; return nonzero to stop. */
typedef int (*rm_text_cb)(void *ctx, const char *piece, int len, int32_t id);

typedef struct rm_generate_stats {
    int n_prompt, n_generated;
    double prompt_tps, generate_tps;
} rm_generate_stats;

/* Generates from a text prompt (BOS added as the model wants). stats may be NULL. */
RM_API int rm_model_generate(rm_model *m, const char *prompt, const rm_generate_params *params, rm_text_cb cb,
                             void *ctx, rm_generate_stats *stats);
/* The same from token ids (used as given: include BOS yourself). */
RM_API int rm_model_generate_ids(rm_model *m, const int32_t *ids, int n_ids, const rm_generate_params *params,
                                 rm_text_cb cb, void *ctx, rm_generate_stats *stats);

/* ---- LoRA adapters and the adapter pool (RAMoLE) -------------------------------- */

/* Loads a LoRA adapter (a PEFT directory or a GGUF LoRA file) and checks it
 * against the model: one made for another base is refused with the reason.
 * It stays valid until rm_adapter_free, which must come after the model's
 * last generation with it and before rm_model_free. */
RM_API int rm_model_load_adapter(rm_model *m, const char *path, rm_adapter **out);
/* Loads a RouterLoRA (`ramole router train`) trained on this model. */
RM_API int rm_model_load_router(rm_model *m, const char *path, rm_adapter **out);
RM_API void rm_adapter_free(rm_adapter *a);

/* A pool of adapters on disk (`ramole pool ...`): each with sample inputs of
 * its training data, retrieved by the similarity of a request to them
 * (LoraRetriever). */
typedef struct rm_adapter_pool rm_adapter_pool;
/* Opens an existing pool directory (never creates one). */
RM_API int rm_adapter_pool_open(const char *dir, rm_adapter_pool **out);
RM_API void rm_adapter_pool_close(rm_adapter_pool *p);

typedef struct rm_retrieved {
    const char *name;    /* the adapter's name in the pool */
    const char *weights; /* where its weights are: pass to rm_model_load_adapter */
    float score;         /* retrieval score (higher is closer) */
} rm_retrieved;
/* The up to k (<= 16) best adapters with weights for a request's text and a
 * score of at least min_score (-INFINITY: any), best first, into out[k].
 * Returns how many (0: none fits; the base model should answer) or < 0. The
 * strings stay valid until the next retrieval from p or its close. */
RM_API int rm_adapter_pool_retrieve(rm_adapter_pool *p, const char *text, int k, float min_score, rm_retrieved *out);
/* Adds an adapter: its name (unique), where its weights are, and its sample
 * inputs (embedded now; the adapter is retrievable at once). With m, the
 * weights are loaded and checked against that model first, and nothing is
 * stored when they do not fit. */
RM_API int rm_adapter_pool_add(rm_adapter_pool *p, rm_model *m, const char *name, const char *weights,
                               const char *const *samples, int n_samples);

#ifdef __cplusplus
}
#endif
#endif
