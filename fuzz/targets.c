// targets.c — see targets.h. Loaders that take a path get the bytes written
// to a scratch directory first (one per process, removed by rm_fuzz_cleanup);
// adapters are loaded for a small synthetic base so that binding runs too.
#define _GNU_SOURCE
#include "targets.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"
#include "format/llama2c.h"
#include "format/safetensors.h"
#include "lora/adapter.h"
#include "model/llama.h"
#include "model/synth.h"
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------- scratch files

static char g_dir[64];

static const char *scratch_dir(void) {
    if (!g_dir[0]) {
        snprintf(g_dir, sizeof g_dir, "/tmp/ramole-fuzz-XXXXXX");
        if (!mkdtemp(g_dir)) g_dir[0] = 0;
    }
    return g_dir[0] ? g_dir : NULL;
}

// Writes data to scratch/<name> (path in buf); 0 on success.
static int scratch_write(const char *name, const void *data, size_t size, char *buf, size_t cap) {
    const char *d = scratch_dir();
    if (!d) return -1;
    snprintf(buf, cap, "%s/%s", d, name);
    FILE *f = fopen(buf, "wb");
    if (!f) return -1;
    int bad = size && fwrite(data, 1, size, f) != size;
    return fclose(f) || bad ? -1 : 0;
}

// The synthetic base adapters are bound to: 2 layers of width 32, written and
// loaded once.
static rm_llama *g_base;

static rm_llama *base_model(void) {
    if (g_base) return g_base;
    static const rm_synth_shape shape = {"fuzz-base", 258, 32, 2, 4, 2, 64, 64};
    char path[128];
    if (scratch_write("base.gguf", "", 0, path, sizeof path)) return NULL;
    if (rm_synth_write(&shape, RM_TYPE_F32, 1, path, NULL, NULL) || rm_llama_load(&g_base, path)) g_base = NULL;
    return g_base;
}

// Tokenizes a few fixed strings and detokenizes the ids (exercises the
// tables a tokenizer was built from).
static void exercise_tokenizer(const rm_tokenizer *t, const char *text, size_t len) {
    int32_t ids[512];
    for (int special = 0; special < 2; special++) {
        int n = rm_tokenize(t, text, len, special, special, ids, 512);
        rm_detok d;
        rm_detok_init(&d, t);
        char out[64];
        for (int i = 0; i < n && i < 512; i++) {
            rm_detok_push(&d, ids[i], out, sizeof out);
            rm_token_to_bytes(t, ids[i], special, out, sizeof out);
        }
        rm_detok_flush(&d, out, sizeof out);
    }
}

static const char k_sample[] = "Hello world! 12345 <s> caf\xc3\xa9 \xf0\x9f\xa6\x99 \xff\x80 \t\n  end";

// ---------------------------------------------------------------- targets

static int fuzz_json(const uint8_t *d, size_t n) {
    rm_json *j = NULL;
    int rc = rm_json_parse((const char *)d, n, "fuzz.json", &j);
    rm_json_free(j);
    return rc;
}

static int fuzz_gguf(const uint8_t *d, size_t n) {
    gguf_file g;
    int rc = gguf_parse(&g, d, n, "fuzz.gguf");
    if (rc) return rc;
    rm_tokenizer *t = NULL;
    if (rm_tokenizer_from_gguf(&t, &g) == RM_OK) {
        exercise_tokenizer(t, k_sample, sizeof k_sample - 1);
        rm_tokenizer_free(t);
    }
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        rm_tensor v;
        (void)gguf_tensor_view(&g, &g.tensors[i], &v);
    }
    gguf_close(&g);
    // The model loader on the same bytes (from a file, as it is used).
    char path[128];
    rm_llama *m = NULL;
    if (!scratch_write("model.gguf", d, n, path, sizeof path) && rm_llama_load(&m, path) == RM_OK) rm_llama_free(m);
    return RM_OK;
}

static int fuzz_lora_gguf(const uint8_t *d, size_t n) {
    char path[128];
    if (scratch_write("lora.gguf", d, n, path, sizeof path)) return RM_EIO;
    rm_lora *a = NULL;
    int rc = rm_lora_load(&a, path);
    rm_lora_free(a);
    rm_llama *m = base_model();
    if (!rc && m && !(rc = rm_lora_load_for(&a, path, m))) rm_lora_free(a);
    return rc;
}

static int fuzz_safetensors(const uint8_t *d, size_t n) {
    st_file f;
    int rc = st_parse(&f, d, n, "fuzz.safetensors");
    if (rc) return rc;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const st_tensor *t = &f.tensors[i];
        size_t es = st_dtype_size(t->dtype), count = es ? t->nbytes / es : 0;
        if (count > (1u << 20)) continue;
        float *buf = malloc((count ? count : 1) * sizeof *buf);
        if (buf) (void)st_to_f32(t, buf);
        free(buf);
    }
    st_close(&f);
    return RM_OK;
}

// Input: a 2-byte little-endian length L, then L bytes of adapter_config.json,
// then adapter_model.safetensors.
static int fuzz_peft(const uint8_t *d, size_t n) {
    if (n < 2) return RM_EINVAL;
    size_t cl = (size_t)d[0] | (size_t)d[1] << 8;
    if (cl > n - 2) cl = n - 2;
    char path[160];
    if (!scratch_dir()) return RM_EIO;
    snprintf(path, sizeof path, "%s/peft", scratch_dir());
    if (rm_mkdirs(path)) return RM_EIO;
    if (scratch_write("peft/adapter_config.json", d + 2, cl, path, sizeof path) ||
        scratch_write("peft/adapter_model.safetensors", d + 2 + cl, n - 2 - cl, path, sizeof path))
        return RM_EIO;
    snprintf(path, sizeof path, "%s/peft", scratch_dir());
    rm_lora *a = NULL;
    rm_llama *m = base_model();
    int rc = m ? rm_lora_load_for(&a, path, m) : rm_lora_load(&a, path);
    rm_lora_free(a);
    return rc;
}

static int fuzz_tokenizer_json(const uint8_t *d, size_t n) {
    char path[160];
    if (!scratch_dir()) return RM_EIO;
    snprintf(path, sizeof path, "%s/hf", scratch_dir());
    if (rm_mkdirs(path) || scratch_write("hf/tokenizer.json", d, n, path, sizeof path)) return RM_EIO;
    rm_tokenizer *t = NULL;
    int rc = rm_tokenizer_from_hf(&t, path);
    if (rc) return rc;
    exercise_tokenizer(t, k_sample, sizeof k_sample - 1);
    exercise_tokenizer(t, "", 0);
    rm_tokenizer_free(t);
    return RM_OK;
}

// The vocabularies the tokenizer target picks from: the reference ones in
// ../shared (RAMOLE_SHARED) when present, then the synthetic base's. Slots
// are fixed so that a saved input means the same vocabulary everywhere.
static const char *const k_vocabs[] = {"llama-spm", "gpt-2", "deepseek-coder", "falcon", "bert-bge"};
#define N_VOCABS (int)(sizeof k_vocabs / sizeof k_vocabs[0])
static gguf_file g_vocab_file[N_VOCABS];
static rm_tokenizer *g_vocab[N_VOCABS];
static int g_vocabs_loaded;

static void load_vocabs(void) {
    g_vocabs_loaded = 1;
    const char *shared = getenv("RAMOLE_SHARED");
    if (!shared) shared = "../shared";
    for (int i = 0; i < N_VOCABS; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-%s.gguf", shared, k_vocabs[i]);
        if (!rm_file_exists(path) || gguf_open(&g_vocab_file[i], path)) continue;
        if (rm_tokenizer_from_gguf(&g_vocab[i], &g_vocab_file[i]) != RM_OK) gguf_close(&g_vocab_file[i]);
    }
    rm_clear_error();
}

// Input: one byte choosing the vocabulary (its value mod 6: the five
// reference vocabularies in k_vocabs' order, then the synthetic base's) and
// the flags (bit 7: add BOS, bit 6: parse special tokens), then the text.
static int fuzz_tokenize(const uint8_t *d, size_t n) {
    if (!g_vocabs_loaded) load_vocabs();
    if (n < 1) return RM_EINVAL;
    int pick = d[0] % (N_VOCABS + 1);
    const rm_tokenizer *t = pick < N_VOCABS ? g_vocab[pick] : base_model() ? base_model()->tok : NULL;
    if (!t) return RM_ENOTFOUND; // that vocabulary is not here
    int32_t ids[4096];
    int got = rm_tokenize(t, (const char *)d + 1, n - 1, d[0] >> 7, (d[0] >> 6) & 1, ids, 4096);
    rm_detok dt;
    rm_detok_init(&dt, t);
    char out[256];
    for (int i = 0; i < got && i < 4096; i++) rm_detok_push(&dt, ids[i], out, sizeof out);
    rm_detok_flush(&dt, out, sizeof out);
    return got < 0 ? got : RM_OK;
}

static int fuzz_llama2c(const uint8_t *d, size_t n) {
    char in[128], out[128];
    if (scratch_write("in.bin", d, n, in, sizeof in) || scratch_write("out.gguf", "", 0, out, sizeof out)) return RM_EIO;
    return llama2c_convert(in, out);
}

const rm_fuzz_target rm_fuzz_targets[] = {
    {"json", fuzz_json, "the JSON reader (rm_json_parse)"},
    {"gguf", fuzz_gguf, "GGUF model files: the parser, the tokenizer it holds, the model loader"},
    {"lora_gguf", fuzz_lora_gguf, "GGUF LoRA adapters, loaded alone and for a base"},
    {"safetensors", fuzz_safetensors, "safetensors files and their f32 conversion"},
    {"peft", fuzz_peft, "PEFT adapter directories (config length, config, safetensors)"},
    {"tokenizer_json", fuzz_tokenizer_json, "Hugging Face tokenizer.json"},
    {"tokenize", fuzz_tokenize, "the tokenizers on arbitrary bytes (first byte picks vocabulary and flags)"},
    {"llama2c", fuzz_llama2c, "llama2.c checkpoints converted to GGUF"},
    {NULL, NULL, NULL},
};

const rm_fuzz_target *rm_fuzz_find(const char *name) {
    for (const rm_fuzz_target *t = rm_fuzz_targets; t->name; t++)
        if (!strcmp(t->name, name)) return t;
    return NULL;
}

void rm_fuzz_cleanup(void) {
    rm_llama_free(g_base);
    g_base = NULL;
    for (int i = 0; i < N_VOCABS; i++) {
        if (!g_vocab[i]) continue;
        rm_tokenizer_free(g_vocab[i]);
        gguf_close(&g_vocab_file[i]);
        g_vocab[i] = NULL;
    }
    g_vocabs_loaded = 0;
    if (g_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", g_dir);
        g_dir[0] = 0;
    }
}
