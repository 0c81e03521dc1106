// test_regress.c — every input under tests/regress/<target>/ (fuzzing and
// probe findings) replayed through the fuzz targets (fuzz/targets.c), so the
// sanitizer build keeps them fixed; and the findings' behaviour asserted.
#include "testing.h"
#include "targets.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"
#include "format/llama2c.h"
#include "format/safetensors.h"
#include "lora/adapter.h"
#include "model/sampler.h"
#include "model/synth.h"
#include "model/tokenizer.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TEST(regress_inputs_replay) {
    int files = 0;
    for (const rm_fuzz_target *t = rm_fuzz_targets; t->name; t++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/regress/%s", t->name);
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            char *buf = NULL;
            size_t len = 0;
            REQUIRE(rm_read_file(path, &buf, &len) == RM_OK);
            t->run((const uint8_t *)buf, len); // must not crash, leak or hit UB
            rm_clear_error();
            free(buf);
            files++;
        }
        closedir(d);
    }
    rm_fuzz_cleanup();
    CHECKF(files >= 4, "only %d regression inputs found (run from the repository root)", files);
}

// Every target accepts the empty input and short junk without harm.
TEST(regress_targets_empty_and_junk) {
    static const uint8_t junk[] = {0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    for (const rm_fuzz_target *t = rm_fuzz_targets; t->name; t++) {
        t->run(junk, 0);
        t->run(junk, sizeof junk);
        rm_clear_error();
    }
    rm_fuzz_cleanup();
}

// A 28-byte llama2.c header with vocab size -2^31: refused (it was negated,
// undefined behaviour), naming the field and echoing none of the bytes.
TEST(regress_llama2c_vocab_int_min) {
    char out[512];
    snprintf(out, sizeof out, "%s/x.gguf", rm_test_tmpdir());
    int rc = llama2c_convert("tests/regress/llama2c/vocab-int-min.bin", out);
    CHECK(rc == RM_EFORMAT);
    CHECKF(strstr(rm_last_error(), "vocab_size") && !strstr(rm_last_error(), "2147483648"), "message: %s",
           rm_last_error());
}

// The falcon vocabulary has no token for byte 0xFF: the text is refused with
// the byte named instead of the byte being dropped ("a\xffb" gave 2 ids).
TEST(regress_falcon_unspellable_byte) {
    const char *shared = rm_test_shared();
    char path[512];
    snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-falcon.gguf", shared ? shared : ".");
    if (!shared || !rm_file_exists(path)) SKIP("no ../shared/data/tokenizers");
    gguf_file g;
    rm_tokenizer *t = NULL;
    REQUIRE(gguf_open(&g, path) == RM_OK);
    if (rm_tokenizer_from_gguf(&t, &g) != RM_OK) {
        gguf_close(&g);
        REQUIRE(0);
    }
    int32_t ids[16];
    for (int pass = 0; pass < 2; pass++) { // the second pass goes through the word cache
        int n = rm_tokenize(t,
                            "a\xff"
                            "b",
                            3, 0, 0, ids, 16);
        CHECKF(n < 0 && strstr(rm_last_error(), "0xff"), "pass %d: %d ids, %s", pass, n, rm_last_error());
        n = rm_tokenize(t, "\xff", 1, 0, 0, ids, 16);
        CHECK(n < 0);
    }
    CHECK(rm_tokenize(t, "ab", 2, 0, 0, ids, 16) > 0);
    rm_tokenizer_free(t);
    gguf_close(&g);
}

// ---- a sparse GGUF LoRA declaring lora_a [16777216, 32]

// Appends little-endian integers and GGUF strings to a byte buffer.
typedef struct bytes {
    uint8_t b[1024];
    size_t n;
} bytes;
static void put(bytes *o, uint64_t v, int size) {
    for (int i = 0; i < size; i++) o->b[o->n++] = (uint8_t)(v >> (8 * i));
}
static void put_str(bytes *o, const char *s) {
    put(o, strlen(s), 8);
    memcpy(o->b + o->n, s, strlen(s));
    o->n += strlen(s);
}
static void put_kv_str(bytes *o, const char *k, const char *v) {
    put_str(o, k);
    put(o, 8, 4); // GGUF string
    put_str(o, v);
}
static void put_tensor(bytes *o, const char *name, uint64_t ne0, uint64_t ne1, uint64_t offset) {
    put_str(o, name);
    put(o, 2, 4);
    put(o, ne0, 8);
    put(o, ne1, 8);
    put(o, 0, 4); // F32
    put(o, offset, 8);
}

// Writes the header of a GGUF LoRA whose blk.0.attn_q lora_a is [in, r] and
// lora_b [r, out], then extends the file (sparse) to the size the header
// declares: a 4 KiB file on disk with a 2 GiB tensor.
static int write_sparse_lora(const char *path, uint64_t in, uint64_t r, uint64_t out) {
    bytes o = {.n = 0};
    memcpy(o.b, "GGUF", 4);
    o.n = 4;
    put(&o, 3, 4);
    put(&o, 2, 8); // tensors
    put(&o, 3, 8); // metadata
    put_kv_str(&o, "general.architecture", "llama");
    put_kv_str(&o, "general.type", "adapter");
    put_kv_str(&o, "adapter.type", "lora");
    uint64_t a_bytes = in * r * 4, b_off = (a_bytes + 31) / 32 * 32;
    put_tensor(&o, "blk.0.attn_q.weight.lora_a", in, r, 0);
    put_tensor(&o, "blk.0.attn_q.weight.lora_b", r, out, b_off);
    size_t data = (o.n + 31) / 32 * 32;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int bad = fwrite(o.b, 1, o.n, f) != o.n;
    bad |= fclose(f) != 0;
    return bad || truncate(path, (off_t)(data + b_off + r * out * 4)) ? -1 : 0;
}

TEST(regress_sparse_lora_refused_before_reading) {
    char path[512], model[512];
    snprintf(path, sizeof path, "%s/sparse-lora.gguf", rm_test_tmpdir());
    snprintf(model, sizeof model, "%s/regress-tiny.gguf", rm_test_tmpdir());
    REQUIRE(write_sparse_lora(path, 16777216, 32, 256) == 0);
    rm_lora *a = NULL;
    // Alone: the declared width is beyond any LLM's.
    CHECK(rm_lora_load(&a, path) == RM_EFORMAT && !a);
    CHECKF(strstr(rm_last_error(), "declared shape [256, 16777216]"), "%s", rm_last_error());
    // For a base: its shape is not the base's.
    rm_llama *m = NULL;
    REQUIRE(rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 3, model, NULL, NULL) == RM_OK);
    REQUIRE(rm_llama_load(&m, model) == RM_OK);
    CHECK(rm_lora_load_for(&a, path, m) == RM_EFORMAT && !a);
    // Within the limits but not the base's shape: refused as a mismatch, still before reading.
    REQUIRE(write_sparse_lora(path, 200000, 32, 256) == 0);
    CHECK(rm_lora_load_for(&a, path, m) == RM_EMISMATCH && !a);
    CHECKF(strstr(rm_last_error(), "does not match the base weight"), "%s", rm_last_error());
    rm_llama_free(m);
}

// Loaders open only regular files with data: a FIFO (which blocked the open
// for ever), a device, a directory and /proc files are refused at once,
// naming what they are.
TEST(regress_loaders_refuse_non_regular_files) {
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/upload.fifo", rm_test_tmpdir());
    REQUIRE(mkfifo(fifo, 0600) == 0);
    rm_lora *a = NULL;
    gguf_file g;
    rm_json *j = NULL;
    char *text = NULL;
    size_t len;
    CHECK(rm_lora_load(&a, fifo) == RM_EIO && !a);
    CHECKF(strstr(rm_last_error(), "not a regular file"), "%s", rm_last_error());
    CHECK(gguf_open(&g, fifo) == RM_EIO);
    CHECK(rm_json_parse_file(fifo, &j) == RM_EIO && !j);
    CHECK(rm_read_file(fifo, &text, &len) == RM_EIO && !text);
    CHECK(rm_lora_load(&a, "/dev/zero") == RM_EIO);
    CHECK(gguf_open(&g, "/proc/self/status") == RM_EIO);
    CHECKF(strstr(rm_last_error(), "pseudo-file"), "%s", rm_last_error());
    CHECK(rm_read_file("/proc/self/environ", &text, &len) == RM_EIO && !text);
    CHECK(rm_read_file(rm_test_tmpdir(), &text, &len) == RM_EIO && !text);
    // The CLI's format sniffing goes through the same check.
    char args[600];
    snprintf(args, sizeof args, "info %s", fifo);
    CHECK(rm_test_cli(args) != 0 && strstr(rm_test_cli_err(), "not a regular file"));
}

// A file that is not safetensors: its first 8 bytes (read as the header
// length) do not appear in the message.
TEST(regress_errors_do_not_echo_file_bytes) {
    char path[512];
    snprintf(path, sizeof path, "%s/secret.safetensors", rm_test_tmpdir());
    const char *secret = "root:x:0:0:root:/root:/bin/bash\n";
    REQUIRE(rm_write_file_atomic(path, secret, strlen(secret)) == RM_OK);
    st_file st;
    CHECK(st_open(&st, path) == RM_EFORMAT);
    // "root:x:0" as a little-endian u64
    CHECKF(!strstr(rm_last_error(), "3475222254926655346") && strstr(rm_last_error(), "not a safetensors file"), "%s",
           rm_last_error());
}

// Finite but huge adapter weights (3e38) were accepted and every answer
// became token 0: the update's norm relative to the base weight's is bounded.
TEST(regress_lora_huge_weights_refused) {
    char model[512], path[512];
    snprintf(model, sizeof model, "%s/regress-tiny.gguf", rm_test_tmpdir());
    snprintf(path, sizeof path, "%s/huge.gguf", rm_test_tmpdir());
    if (!rm_file_exists(model))
        REQUIRE(rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 3, model, NULL, NULL) == RM_OK);
    rm_llama *m = NULL;
    REQUIRE(rm_llama_load(&m, model) == RM_OK);
    // case 0: a random adapter (updates a few percent of W) is accepted;
    // 1: every weight of layer 0's v_proj 3e38; 2: its B 800 times larger (~40x W).
    for (int c = 0; c < 3; c++) {
        rm_lora *a = NULL, *b = NULL;
        REQUIRE(rm_lora_random(&a, m, 4, 1u << RM_LIN_V, 1) == RM_OK);
        rm_lora_mod *v = &a->mods[RM_LIN_V];
        for (int64_t i = 0; c == 1 && i < v->r * v->in; i++) v->A[i] = 3e38f;
        for (int64_t i = 0; c > 0 && i < v->r * v->out; i++) v->Bt[i] = c == 1 ? 3e38f : v->Bt[i] * 800.0f;
        REQUIRE(rm_lora_save_gguf(a, path) == RM_OK);
        rm_lora_free(a);
        int rc = rm_lora_load_for(&b, path, m);
        if (c == 0) {
            CHECK_OK(rc);
        } else {
            CHECK(rc == RM_EFORMAT && !b);
            CHECKF(strstr(rm_last_error(), "layer 0 v_proj") && strstr(rm_last_error(), "times the base weight's"),
                   "%s", rm_last_error());
        }
        rm_lora_free(b);
    }
    rm_llama_free(m);
}

// Sampling fields of a request: max_tokens 1e20 became 16, temperature -5
// or infinity and top_p 7 were accepted. The library's strict readers give
// the errors a server turns into 400s.
TEST(regress_request_sampling_fields_strict) {
    static const struct {
        const char *body;
        int ok;
        const char *says;
    } cases[] = {
        {"{}", 1, NULL},
        {"{\"temperature\": 0, \"top_p\": 1, \"top_k\": 0, \"min_p\": 0, \"seed\": 7}", 1, NULL},
        {"{\"top_k\": 4.0, \"repeat_penalty\": 1.1}", 1, NULL},
        {"{\"temperature\": -5}", 0, "\"temperature\" must be in [0, 100]"},
        {"{\"temperature\": 1e400}", 0, "\"temperature\" must be a finite number"},
        {"{\"temperature\": \"hot\"}", 0, "\"temperature\" must be a number"},
        {"{\"top_p\": 7}", 0, "\"top_p\" must be in"},
        {"{\"top_p\": 0}", 0, "\"top_p\" must be in"},
        {"{\"top_k\": 2.5}", 0, "\"top_k\" must be an integer"},
        {"{\"top_k\": -1}", 0, "\"top_k\" must be an integer"},
        {"{\"min_p\": 2}", 0, "\"min_p\" must be in [0, 1]"},
        {"{\"seed\": -3}", 0, "\"seed\" must be an integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rm_json *j = NULL;
        REQUIRE(rm_json_parse(cases[i].body, strlen(cases[i].body), "body", &j) == RM_OK);
        rm_sampler_params p = rm_sampler_default_params();
        int rc = rm_sampler_params_from_json(&p, j);
        if (cases[i].ok) CHECKF(rc == RM_OK, "%s: %s", cases[i].body, rm_last_error());
        else
            CHECKF(rc == RM_EINVAL && strstr(rm_last_error(), cases[i].says), "%s: %d %s", cases[i].body, rc,
                   rm_last_error());
        rm_json_free(j);
    }
    // The values read are the ones given; absent ones keep the defaults.
    rm_json *j = NULL;
    const char *body = "{\"top_k\": 1e1, \"seed\": 9}";
    REQUIRE(rm_json_parse(body, strlen(body), "body", &j) == RM_OK);
    rm_sampler_params p = rm_sampler_default_params();
    CHECK_OK(rm_sampler_params_from_json(&p, j));
    CHECK(p.top_k == 10 && p.seed == 9 && p.top_p == rm_sampler_default_params().top_p);
    rm_json_free(j);
    // max_tokens: integral and in range, or a clear error.
    static const struct {
        const char *body;
        int64_t want;
    } mt[] = {
        {"{}", 16},
        {"{\"max_tokens\": 64}", 64},
        {"{\"max_tokens\": 64.0}", 64},
        {"{\"max_tokens\": 1e20}", -1},
        {"{\"max_tokens\": 2.5}", -1},
        {"{\"max_tokens\": -1}", -1},
        {"{\"max_tokens\": \"8\"}", -1},
        {"{\"max_tokens\": null}", 16},
    };
    for (size_t i = 0; i < sizeof mt / sizeof mt[0]; i++) {
        REQUIRE(rm_json_parse(mt[i].body, strlen(mt[i].body), "body", &j) == RM_OK);
        int64_t n = 0;
        int rc = rm_json_field_int(j, "max_tokens", 0, 1 << 20, 16, &n);
        if (mt[i].want >= 0) CHECKF(rc == RM_OK && n == mt[i].want, "%s: %d %lld", mt[i].body, rc, (long long)n);
        else
            CHECKF(rc == RM_EINVAL && strstr(rm_last_error(), "\"max_tokens\" must be"), "%s: %s", mt[i].body,
                   rm_last_error());
        rm_json_free(j);
    }
    // The sampler itself refuses what the check refuses.
    rm_sampler s;
    p = rm_sampler_default_params();
    p.top_p = 7.0f;
    CHECK(rm_sampler_init(&s, &p, 10) == RM_EINVAL);
    rm_sampler_free(&s);
}

// A tokenizer.json of a few bytes declaring token id 16777215: its tables
// (sized by the largest id) are refused before they are allocated.
TEST(regress_tokenizer_json_sparse_ids_refused) {
    rm_tokenizer *t = NULL;
    CHECK(rm_tokenizer_from_hf(&t, "tests/regress/tokenizer_json/vocab-sparse-ids.json") == RM_EFORMAT && !t);
    CHECKF(strstr(rm_last_error(), "ids must be dense"), "%s", rm_last_error());
}
