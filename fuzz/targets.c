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
#include "retrieve/embed.h"
#include "retrieve/pool.h"
#include "serve/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

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
    if (scratch_write("in.bin", d, n, in, sizeof in) || scratch_write("out.gguf", "", 0, out, sizeof out))
        return RM_EIO;
    return llama2c_convert(in, out);
}

// ---------------------------------------------------------------- the server

// `ramole serve` on the synthetic base with a pool of two adapters (a small
// context, so that no request generates for long), started on a free
// loopback port on first use.
static rm_server *g_server;
static int g_port;

// scratch/pool: a lexical embedder and adapters "cat" and "dog" (random, rank 2).
static int make_pool(const char *dir) {
    static const char *const samples[2][2] = {{"the cat sat", "a cat and a mat"}, {"the dog ran", "a dog and a log"}};
    static const char *const names[2] = {"cat", "dog"};
    rm_pool_params pp = rm_pool_default_params();
    rm_pool *pool = NULL;
    rm_embedder *e = NULL;
    rm_feat_params fp = rm_feat_default_params();
    fp.bits = 10;
    int rc = rm_pool_open(dir, &pp, &pool);
    if (!rc) rc = rm_lexical_create(&fp, &samples[0][0], NULL, 4, NULL, &e);
    if (!rc) rc = rm_pool_set_embedder(pool, e);
    for (int a = 0; a < 2 && !rc; a++) {
        char w[160];
        rm_lora *l = NULL;
        snprintf(w, sizeof w, "%s/%s.gguf", dir, names[a]);
        rc = rm_lora_random(&l, g_base, 2, 0x7f, 7 + (uint64_t)a);
        if (!rc) rc = rm_lora_save_gguf(l, w);
        rm_lora_free(l);
        rm_adapter_info info = {.name = names[a], .weights = w};
        if (!rc) rc = rm_pool_add(pool, &info, samples[a], NULL, 2, NULL);
    }
    if (pool) rm_pool_close(pool);
    return rc;
}

static int server_port(void) {
    if (g_server) return g_port;
    if (!base_model()) return -1;
    static char path[128], pool[128]; // the server keeps these
    snprintf(path, sizeof path, "%s/base.gguf", scratch_dir());
    snprintf(pool, sizeof pool, "%s/pool", scratch_dir());
    if (make_pool(pool)) return -1;
    rm_server_params p = rm_server_default_params();
    p.model = path, p.pool = pool, p.max_upload = 1 << 20, p.adapter_cache = 1 << 20;
    p.compute_threads = 1, p.slots = 2, p.ctx = 64, p.rows = 64;
    // libmicrohttpd keeps a connection whose client closed mid-request until
    // the deadline: a short one and a large table, so that inputs do not fill it
    p.http.port = 0, p.http.threads = 1, p.http.timeout = 5, p.http.request_timeout = 1, p.http.max_body = 1 << 16;
    p.http.max_connections = 4096, p.http.max_per_ip = 0;
    if (rm_server_start(&p, &g_server)) {
        g_server = NULL;
        return -1;
    }
    const char *colon = strrchr(rm_server_url(g_server), ':');
    g_port = colon ? atoi(colon + 1) : -1;
    return g_port;
}

// Sends the bytes on a new loopback connection, ends the sending side
// (libmicrohttpd does not act on that end), reads what the server answers
// until it closes, or until nothing comes and no request is being worked on
// (a head or body left incomplete), then waits for the server's work to end
// (5 s at most each), so that what an input covers is counted for it.
static int http_exchange(const void *data, size_t n) {
    int port = server_port();
    if (port <= 0) return RM_EIO;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return RM_EIO;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return RM_EIO;
    }
    const char *p = data;
    for (size_t left = n; left;) { // the server may close early (a refused head): stop sending then
        ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
        if (w <= 0) break;
        p += w, left -= (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    for (int ms = 0, quiet = 0; ms < 5000 && quiet < 3; ms++) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, 1);
        if (r > 0 && read(fd, buf, sizeof buf) <= 0) break;
        if (r < 0) break;
        quiet = r == 0 && !rm_server_working(g_server) ? quiet + 1 : 0;
    }
    close(fd);
    for (int ms = 0; ms < 5000 && rm_server_working(g_server); ms++) usleep(1000);
    return RM_OK;
}

// Arbitrary bytes as what a client sends: the request parser
// (libmicrohttpd), then the server's routes on what it lets through.
static int fuzz_http(const uint8_t *d, size_t n) { return http_exchange(d, n); }

// Arbitrary bytes as the body of one of the server's POST routes (the first
// byte picks it), in a well-formed request.
static int fuzz_serve_body(const uint8_t *d, size_t n) {
    static const char *const routes[][2] = {
        {"/v1/completions", "application/json"},
        {"/v1/chat/completions", "application/json"},
        {"/v1/embeddings", "application/json"},
        {"/tokenize", "application/json"},
        {"/detokenize", "application/json"},
        {"/v1/adapters", "application/json"},
        {"/v1/adapters", "multipart/form-data; boundary=XyZzy42"},
        {"/v1/unload_lora_adapter", "application/json"},
    };
    if (n < 1) return RM_EINVAL;
    const char *const *r = routes[d[0] % (sizeof routes / sizeof routes[0])];
    rm_sb b;
    rm_sb_init(&b);
    rm_sb_printf(
        &b, "POST %s HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
        r[0], r[1], n - 1);
    rm_sb_putn(&b, (const char *)d + 1, n - 1);
    int rc = b.oom ? RM_ENOMEM : http_exchange(b.buf, b.len);
    rm_sb_free(&b);
    return rc;
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
    {"http", fuzz_http, "bytes a client sends to `ramole serve`: libmicrohttpd's parser, then the server's routes"},
    {"serve_body", fuzz_serve_body, "a request body through the server's POST routes (first byte picks the route)"},
    {NULL, NULL, NULL},
};

const rm_fuzz_target *rm_fuzz_find(const char *name) {
    for (const rm_fuzz_target *t = rm_fuzz_targets; t->name; t++)
        if (!strcmp(t->name, name)) return t;
    return NULL;
}

void rm_fuzz_cleanup(void) {
    if (g_server) {
        rm_server_drain(g_server, 10, NULL);
        rm_server_free(g_server);
        g_server = NULL;
    }
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
