// test_tokgguf.c — tokenizers written as GGUF metadata (rm_tokenizer_write_gguf)
// and Hugging Face directories converted into self-contained GGUF files.
//
// 1. Every reference vocabulary in ../shared/data/tokenizers is loaded,
//    written to a new GGUF, loaded back, and checked against llama.cpp's
//    reference ids (*.gguf.out) for every test string (*.gguf.inp).
// 2. Small model directories with a tokenizer.json (byte fallback, WordPiece,
//    byte-level BPE with its own regex, GPT-2 from the reference vocabulary)
//    are converted with `ramole convert --from hf`, the directory is moved
//    away, and the GGUF's tokenizer must encode like the tokenizer.json.
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"
#include "testing.h"

// ---- helpers ----

// " 1 2 3" form of ids, as in the .out files.
static void ids_str(const int32_t *ids, int n, char *buf, size_t cap) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n && o + 16 < cap; i++) o += (size_t)snprintf(buf + o, cap - o, " %d", (int)ids[i]);
}

// Text of ids through the streaming detokenizer (malloc'd, *len set).
static char *detok(const rm_tokenizer *t, const int32_t *ids, int n, size_t *len) {
    int need = rm_detok_max_bytes(t);
    char *buf = malloc((size_t)(n + 1) * (size_t)need + 16);
    if (!buf) return NULL;
    rm_detok d;
    rm_detok_init(&d, t);
    size_t o = 0;
    for (int i = 0; i < n; i++) o += (size_t)rm_detok_push(&d, ids[i], buf + o, need);
    o += (size_t)rm_detok_flush(&d, buf + o, 8);
    *len = o;
    return buf;
}

// Writes t into a fresh GGUF at path (no tensors) and loads it back.
static rm_tokenizer *roundtrip(const rm_tokenizer *t, const char *path, gguf_file *g) {
    gguf_writer *w = gguf_writer_new();
    if (!w) return NULL;
    int rc = gguf_set_str(w, "general.architecture", "llama");
    if (rc == RM_OK) rc = rm_tokenizer_write_gguf(t, w);
    if (rc == RM_OK) rc = gguf_write(w, path);
    gguf_writer_free(w);
    rm_tokenizer *back = NULL;
    if (rc == RM_OK) rc = gguf_open(g, path);
    if (rc == RM_OK && (rc = rm_tokenizer_from_gguf(&back, g)) != RM_OK) gguf_close(g);
    if (rc != RM_OK) rm_test_fail(__FILE__, __LINE__, "%s: %s", path, rm_last_error());
    return back;
}

// Same vocabulary, specials, flags, pieces and chat template.
static void check_same_tokenizer(const rm_tokenizer *a, const rm_tokenizer *b, const char *what) {
    CHECKF(rm_tokenizer_n_vocab(a) == rm_tokenizer_n_vocab(b), "%s: n_vocab %d vs %d", what, rm_tokenizer_n_vocab(a),
           rm_tokenizer_n_vocab(b));
    CHECKF(!strcmp(rm_tokenizer_kind(a), rm_tokenizer_kind(b)), "%s: kind %s vs %s", what, rm_tokenizer_kind(a),
           rm_tokenizer_kind(b));
    CHECKF(rm_tokenizer_bos(a) == rm_tokenizer_bos(b) && rm_tokenizer_eos(a) == rm_tokenizer_eos(b),
           "%s: bos/eos %d/%d vs %d/%d", what, rm_tokenizer_bos(a), rm_tokenizer_eos(a), rm_tokenizer_bos(b),
           rm_tokenizer_eos(b));
    CHECKF(rm_tokenizer_add_bos(a) == rm_tokenizer_add_bos(b), "%s: add_bos", what);
    CHECKF(a->add_eos == b->add_eos && a->add_space_prefix == b->add_space_prefix && a->unk == b->unk &&
               a->sep == b->sep && a->cls == b->cls && a->pad == b->pad && a->ignore_merges == b->ignore_merges &&
               a->prefix_first_only == b->prefix_first_only && a->bpe_byte_level == b->bpe_byte_level,
           "%s: flags or special ids differ", what);
    if (a->kind == TOK_KIND_WPM)
        CHECKF(a->wpm_lowercase == b->wpm_lowercase && a->wpm_strip_accents == b->wpm_strip_accents &&
                   a->wpm_max_chars == b->wpm_max_chars,
               "%s: WordPiece options differ", what);
    const char *ta = rm_tokenizer_chat_template(a), *tb = rm_tokenizer_chat_template(b);
    CHECKF((!ta && !tb) || (ta && tb && !strcmp(ta, tb)), "%s: chat template differs", what);
    int n = rm_tokenizer_n_vocab(a) < rm_tokenizer_n_vocab(b) ? rm_tokenizer_n_vocab(a) : rm_tokenizer_n_vocab(b);
    int bad = 0;
    for (int i = 0; i < n && bad < 3; i++) {
        char pa[1024], pb[1024];
        for (int sp = 0; sp < 2; sp++) {
            int la = rm_token_to_bytes(a, i, sp, pa, sizeof pa), lb = rm_token_to_bytes(b, i, sp, pb, sizeof pb);
            if (la != lb || (la > 0 && la <= (int)sizeof pa && memcmp(pa, pb, (size_t)la)) ||
                rm_tokenizer_is_eog(a, i) != rm_tokenizer_is_eog(b, i) || a->type[i] != b->type[i]) {
                rm_test_fail(__FILE__, __LINE__, "%s: token %d differs", what, i);
                bad++;
                break;
            }
        }
    }
}

// Encodes s with both tokenizers (add_bos, parse_special) and compares ids and decoded text.
static int same_encoding(const rm_tokenizer *a, const rm_tokenizer *b, const char *s, size_t len, int add_bos,
                         int parse_special, const char *what) {
    int na = rm_tokenize(a, s, len, add_bos, parse_special, NULL, 0);
    int nb = rm_tokenize(b, s, len, add_bos, parse_special, NULL, 0);
    if (na < 0 || nb < 0) {
        rm_test_fail(__FILE__, __LINE__, "%s: rm_tokenize failed: %s", what, rm_last_error());
        return 0;
    }
    int32_t *ia = malloc((size_t)(na + 1) * sizeof *ia), *ib = malloc((size_t)(nb + 1) * sizeof *ib);
    int ok = ia && ib && rm_tokenize(a, s, len, add_bos, parse_special, ia, na) == na &&
             rm_tokenize(b, s, len, add_bos, parse_special, ib, nb) == nb && na == nb &&
             !memcmp(ia, ib, (size_t)na * sizeof *ia);
    if (!ok) {
        char ga[2048], gb[2048];
        ids_str(ia, ia ? na : 0, ga, sizeof ga);
        ids_str(ib, ib ? nb : 0, gb, sizeof gb);
        rm_test_fail(__FILE__, __LINE__, "%s: '%.*s' (bos %d, special %d)\n      tokenizer.json '%s'\n      gguf '%s'",
                     what, (int)len, s, add_bos, parse_special, ga, gb);
    } else {
        size_t da, db;
        char *ta = detok(a, ia, na, &da), *tb = detok(b, ib, nb, &db);
        ok = ta && tb && da == db && !memcmp(ta, tb, da);
        CHECKF(ok, "%s: '%.*s' decodes differently", what, (int)len, s);
        free(ta);
        free(tb);
    }
    free(ia);
    free(ib);
    return ok;
}

// ---- reference vocabularies: GGUF -> rm_tokenizer_write_gguf -> GGUF ----

// Splits the .inp file at llama.cpp's separator; returns the count (<= cap).
static int split_inputs(char *inp, size_t len, const char **str, size_t *slen, int cap) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int n = 0;
    for (size_t pos = 0; pos < len && n < cap;) {
        char *hit = memmem(inp + pos, len - pos, sep, sizeof sep - 1);
        size_t end = hit ? (size_t)(hit - inp) : len;
        str[n] = inp + pos;
        slen[n++] = end - pos;
        if (!hit) break;
        *hit = 0;
        pos = end + sizeof sep - 1;
    }
    return n;
}

// One vocabulary file: the rewritten tokenizer against the .out reference.
static void check_vocab_file(const char *path) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    gguf_file g0, g1;
    rm_tokenizer *t0 = NULL, *t1 = NULL;
    char *inp = NULL, *out = NULL, p2[1200];
    size_t li, lo;
    if (gguf_open(&g0, path) != RM_OK) {
        rm_test_fail(__FILE__, __LINE__, "%s", rm_last_error());
        return;
    }
    if (rm_tokenizer_from_gguf(&t0, &g0) != RM_OK) {
        rm_test_fail(__FILE__, __LINE__, "%s: %s", base, rm_last_error());
        gguf_close(&g0);
        return;
    }
    snprintf(p2, sizeof p2, "%s/%s", rm_test_tmpdir(), base);
    t1 = roundtrip(t0, p2, &g1);
    if (!t1) goto done;
    check_same_tokenizer(t0, t1, base);
    // The rewritten file names the same tokenizer the way llama.cpp reads it.
    gguf_str m0, m1;
    CHECK(gguf_get_str(&g0, "tokenizer.ggml.model", &m0) == RM_OK &&
          gguf_get_str(&g1, "tokenizer.ggml.model", &m1) == RM_OK && m0.len == m1.len &&
          !memcmp(m0.ptr, m1.ptr, (size_t)m0.len));
    CHECKF(gguf_find(&g1, "ramole.tokenizer.spm_merges") == NULL, "%s: a GGUF vocabulary needs no ramole keys", base);

    snprintf(p2, sizeof p2, "%s.inp", path);
    REQUIRE(rm_read_file(p2, &inp, &li) == RM_OK);
    snprintf(p2, sizeof p2, "%s.out", path);
    if (rm_read_file(p2, &out, &lo) != RM_OK) {
        rm_test_fail(__FILE__, __LINE__, "%s: no .out", base);
        goto done;
    }
    const char *str[256];
    size_t slen[256];
    int n = split_inputs(inp, li, str, slen, 256), exact = 0;
    char *line = out;
    for (int i = 0; i < n; i++) {
        if (!line || !*line) {
            rm_test_fail(__FILE__, __LINE__, "%s: fewer reference lines than strings", base);
            break;
        }
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        int32_t ids[1024];
        int k = rm_tokenize(t1, str[i], slen[i], 0, 0, ids, 1024);
        char got[8192];
        ids_str(ids, k < 0 || k > 1024 ? 0 : k, got, sizeof got);
        if (k >= 0 && k <= 1024 && !strcmp(got, line)) exact++;
        else
            rm_test_fail(__FILE__, __LINE__, "%s: string %d '%.*s'\n      got '%s'\n     want '%s'", base, i,
                         (int)slen[i], str[i], got, line);
        // Decoding: the same text as the original tokenizer gives.
        if (k >= 0 && k <= 1024) {
            size_t d0, d1;
            char *s0 = detok(t0, ids, k, &d0), *s1 = detok(t1, ids, k, &d1);
            CHECKF(s0 && s1 && d0 == d1 && !memcmp(s0, s1, d0), "%s: string %d decodes differently", base, i);
            free(s0);
            free(s1);
        }
        line = nl ? nl + 1 : NULL;
    }
    fprintf(stderr, "    %s rewritten: %d/%d strings exact\n", base, exact, n);
done:
    free(inp);
    free(out);
    rm_tokenizer_free(t1);
    if (t1) gguf_close(&g1);
    rm_tokenizer_free(t0);
    gguf_close(&g0);
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

TEST(tokgguf_shared_vocabs) {
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/data/tokenizers", shared);
    DIR *d = opendir(dir);
    if (!d) SKIP("no ../shared/data/tokenizers");
    char *names[64];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 64;)
        if (ends_with(e->d_name, ".gguf")) names[n++] = strdup(e->d_name);
    closedir(d);
    if (n == 0) SKIP("no vocabularies in ../shared/data/tokenizers");
    int checked = 0;
    for (int i = 0; i < n; i++) {
        char path[1024], inp[1100];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(inp, sizeof inp, "%s.inp", path);
        if (names[i] && rm_file_exists(inp)) {
            check_vocab_file(path);
            checked++;
        }
        free(names[i]);
    }
    CHECK(checked > 0);
}

// Written twice, the metadata is the same (nothing is lost or invented on the way).
TEST(tokgguf_rewrite_stable) {
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared");
    static const char *const names[] = {"llama-spm", "gpt-2", "bert-bge"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char path[512], p1[600], p2[600];
        snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-%s.gguf", shared, names[k]);
        if (!rm_file_exists(path)) SKIP("no ../shared/data/tokenizers");
        gguf_file g0, g1, g2;
        rm_tokenizer *t0 = NULL;
        REQUIRE(gguf_open(&g0, path) == RM_OK);
        CHECK_OK(rm_tokenizer_from_gguf(&t0, &g0));
        snprintf(p1, sizeof p1, "%s/stable1-%s.gguf", rm_test_tmpdir(), names[k]);
        snprintf(p2, sizeof p2, "%s/stable2-%s.gguf", rm_test_tmpdir(), names[k]);
        rm_tokenizer *t1 = t0 ? roundtrip(t0, p1, &g1) : NULL;
        rm_tokenizer *t2 = t1 ? roundtrip(t1, p2, &g2) : NULL;
        if (t2) {
            char *a = NULL, *b = NULL;
            size_t la = 0, lb = 0;
            CHECK(rm_read_file(p1, &a, &la) == RM_OK && rm_read_file(p2, &b, &lb) == RM_OK);
            CHECKF(a && b && la == lb && !memcmp(a, b, la), "%s: second rewrite differs", names[k]);
            free(a);
            free(b);
            // The tokens, scores and types are those of the original file.
            const gguf_value *v0, *v1;
            static const char *const keys[] = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                                               "tokenizer.ggml.token_type"};
            for (int q = 0; q < 3; q++) {
                if (gguf_get_arr(&g0, keys[q], &v0) != RM_OK) {
                    rm_clear_error();
                    continue;
                }
                REQUIRE(gguf_get_arr(&g1, keys[q], &v1) == RM_OK);
                CHECK(v0->arr.n == v1->arr.n);
                int same = v0->arr.n == v1->arr.n;
                for (uint64_t i = 0; same && i < v0->arr.n; i++)
                    same = q == 0 ? v0->arr.strs[i].len == v1->arr.strs[i].len &&
                                        !memcmp(v0->arr.strs[i].ptr, v1->arr.strs[i].ptr, (size_t)v0->arr.strs[i].len)
                                  : gguf_arr_f64(v0, i) == gguf_arr_f64(v1, i);
                CHECKF(same, "%s: %s differs from the original", names[k], keys[q]);
            }
            rm_tokenizer_free(t2);
            gguf_close(&g2);
        }
        if (t1) {
            rm_tokenizer_free(t1);
            gguf_close(&g1);
        }
        rm_tokenizer_free(t0);
        gguf_close(&g0);
    }
}

// ---- Hugging Face directories -> ramole convert --from hf -> GGUF ----

// Model shape: hidden 8, 2 heads of 4 (1 KV head), ffn 16, 1 layer; the
// vocabulary size is the tokenizer's. All weights zero: only the files matter.
enum { MH = 8, MNH = 2, MNKV = 1, MHD = 4, MFF = 16 };

static int write_text(const char *dir, const char *file, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return rm_write_file_atomic(path, text, strlen(text));
}

static int write_model(const char *dir, int vocab) {
    size_t max = (size_t)vocab * MH > (size_t)MFF * MH ? (size_t)vocab * MH : (size_t)MFF * MH;
    float *zero = calloc(max, sizeof *zero);
    st_writer *w = st_writer_new();
    if (!zero || !w) {
        free(zero);
        st_writer_free(w);
        return -1;
    }
    static const struct {
        const char *name;
        int d0, d1;
    } ts[] = {
        {"model.layers.0.input_layernorm.weight", MH, 0},
        {"model.layers.0.self_attn.q_proj.weight", MNH * MHD, MH},
        {"model.layers.0.self_attn.k_proj.weight", MNKV * MHD, MH},
        {"model.layers.0.self_attn.v_proj.weight", MNKV * MHD, MH},
        {"model.layers.0.self_attn.o_proj.weight", MH, MNH * MHD},
        {"model.layers.0.post_attention_layernorm.weight", MH, 0},
        {"model.layers.0.mlp.gate_proj.weight", MFF, MH},
        {"model.layers.0.mlp.up_proj.weight", MFF, MH},
        {"model.layers.0.mlp.down_proj.weight", MH, MFF},
        {"model.norm.weight", MH, 0},
    };
    int64_t emb[2] = {vocab, MH};
    int rc = st_writer_add(w, "model.embed_tokens.weight", ST_F32, 2, emb, zero);
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t shape[2] = {ts[i].d0, ts[i].d1};
        rc |= st_writer_add(w, ts[i].name, ST_F32, ts[i].d1 ? 2 : 1, shape, zero);
    }
    char path[1024], cfg[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rc |= st_write(w, path);
    st_writer_free(w);
    free(zero);
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
             "\"vocab_size\": %d, \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-05, "
             "\"tie_word_embeddings\": true}",
             MH, MFF, MNH, MNKV, vocab);
    rc |= write_text(dir, "config.json", cfg);
    return rc ? -1 : 0;
}

static int run_cmd(const char *cmd) {
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct hf_case {
    const char *name;
    const char *tokenizer_json;   // text, or NULL when written by the caller into TMP/name
    const char *tokenizer_config; // tokenizer_config.json or NULL
    const char *const *texts;     // strings to compare (NULL-terminated)
    const char *pre;              // expected tokenizer.ggml.pre (NULL: absent)
    const char *model;            // expected tokenizer.ggml.model
} hf_case;

static const char *const k_texts[] = {
    "Hello world",
    " Hi  there,\tfriend!\n\nNew line",
    "Hi i\xc3\xa9 caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\xa6\x99",
    "</s>Hi<s> Hi</s>",
    "don't DON'T 12345 3.14 ...?!",
    "HELLO Hello hello",
    "",
    NULL,
};

// Converts TMP/name with the CLI, moves the directory away, and compares the
// GGUF's tokenizer with the tokenizer.json's. Returns 1 when it ran.
static int check_hf_case(const hf_case *c, const char *dir) {
    char path[1024], moved[1024], out[1024], cmd[4096];
    if (c->tokenizer_json && write_text(dir, "tokenizer.json", c->tokenizer_json) != RM_OK) return 0;
    if (c->tokenizer_config && write_text(dir, "tokenizer_config.json", c->tokenizer_config) != RM_OK) return 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    rm_tokenizer *hf = NULL;
    CHECK_OK(rm_tokenizer_from_hf(&hf, path));
    if (!hf) return 0;
    if (write_model(dir, rm_tokenizer_n_vocab(hf)) != 0) {
        rm_test_fail(__FILE__, __LINE__, "%s: cannot write the model", c->name);
        rm_tokenizer_free(hf);
        return 0;
    }
    snprintf(out, sizeof out, "%s/%s.gguf", rm_test_tmpdir(), c->name);
    snprintf(cmd, sizeof cmd, "%s convert --from hf %s %s 2>/dev/null", rm_test_bin(), dir, out);
    CHECKF(run_cmd(cmd) == 0, "%s: %s failed", c->name, cmd);
    snprintf(moved, sizeof moved, "%s.moved", dir);
    CHECK(rename(dir, moved) == 0);

    gguf_file g;
    rm_tokenizer *t = NULL;
    if (gguf_open(&g, out) != RM_OK) {
        rm_test_fail(__FILE__, __LINE__, "%s: %s", c->name, rm_last_error());
        rm_tokenizer_free(hf);
        return 1;
    }
    CHECKF(gguf_find(&g, "ramole.hf_tokenizer_path") == NULL, "%s: the GGUF still points at tokenizer.json", c->name);
    gguf_str s;
    CHECKF(gguf_get_str(&g, "tokenizer.ggml.model", &s) == RM_OK && gguf_str_eq(s, c->model), "%s: model", c->name);
    if (c->pre)
        CHECKF(gguf_get_str(&g, "tokenizer.ggml.pre", &s) == RM_OK && gguf_str_eq(s, c->pre), "%s: pre", c->name);
    else CHECKF(gguf_find(&g, "tokenizer.ggml.pre") == NULL, "%s: unexpected pre", c->name);
    CHECK_OK(rm_tokenizer_from_gguf(&t, &g));
    if (t) {
        check_same_tokenizer(hf, t, c->name);
        int same = 0, n = 0;
        for (int i = 0; c->texts[i]; i++)
            for (int m = 0; m < 4; m++, n++)
                same += same_encoding(hf, t, c->texts[i], strlen(c->texts[i]), m & 1, m >> 1, c->name);
        fprintf(stderr, "    %s: %d/%d encodings as tokenizer.json\n", c->name, same, n);
    }
    // The model loads from the GGUF alone, with its tokenizer.
    rm_llama *lm = NULL;
    CHECK_OK(rm_llama_load(&lm, out));
    CHECKF(lm && lm->tok && rm_tokenizer_n_vocab(lm->tok) == rm_tokenizer_n_vocab(hf), "%s: no tokenizer in the model",
           c->name);
    rm_llama_free(lm);
    rm_tokenizer_free(t);
    gguf_close(&g);
    rm_tokenizer_free(hf);
    return 1;
}

static int make_case_dir(const char *name, char *dir, size_t cap) {
    snprintf(dir, cap, "%s/hf-%s", rm_test_tmpdir(), name);
    return rm_mkdirs(dir) == RM_OK ? 0 : -1;
}

// A Llama-2-style tokenizer.json: BPE over "▁"-escaped text with byte fallback.
static void spm_json(rm_sb *sb, const char *pre_part) {
    rm_sb_printf(sb,
                 "{\"version\":\"1.0\",%s,\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
                 "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
                 "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{"
                 "\"<unk>\":0,\"<s>\":1,\"</s>\":2",
                 pre_part);
    for (int b = 0; b < 256; b++) rm_sb_printf(sb, ",\"<0x%02X>\":%d", b, 3 + b);
    // Letters, then merges whose result ids are not in rank order.
    static const char *const pieces[] = {"\xe2\x96\x81",
                                         "H",
                                         "i",
                                         "e",
                                         "l",
                                         "o",
                                         "w",
                                         "r",
                                         "d",
                                         "t",
                                         "h",
                                         "\xe2\x96\x81H",
                                         "\xe2\x96\x81Hi",
                                         "\xe2\x96\x81i",
                                         "ll",
                                         "llo",
                                         "He",
                                         "\xe2\x96\x81t",
                                         "\xe2\x96\x81th",
                                         "er",
                                         "\xe2\x96\x81w",
                                         "or",
                                         "ld",
                                         "\xe2\x96\x81Hello",
                                         "Hell",
                                         "el",
                                         "\xe2\x96\x81He",
                                         NULL};
    int id = 259;
    for (int i = 0; pieces[i]; i++) {
        rm_sb_puts(sb, ",");
        rm_sb_json_str(sb, pieces[i], strlen(pieces[i]));
        rm_sb_printf(sb, ":%d", id++);
    }
    rm_sb_puts(sb, "},\"merges\":[\"\xe2\x96\x81 H\",[\"\xe2\x96\x81H\",\"i\"],\"\xe2\x96\x81 i\",\"l l\",\"ll o\","
                   "\"e l\",\"\xe2\x96\x81 t\",\"\xe2\x96\x81t h\",\"e r\",\"o r\",\"l d\",\"\xe2\x96\x81 w\","
                   "\"\xe2\x96\x81H e\",\"H e\",\"He ll\",\"\xe2\x96\x81He llo\"]}}");
}

TEST(tokgguf_hf_byte_fallback) {
    if (access(rm_test_bin(), X_OK) != 0) SKIP("no ramole binary");
    static const char *const pres[2] = {
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xe2\x96\x81\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]},\"pre_tokenizer\":null",
        "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
        "\"prepend_scheme\":\"first\",\"split\":false}"};
    static const char *const names[2] = {"spm-prepend", "spm-first"};
    for (int k = 0; k < 2; k++) {
        rm_sb sb;
        rm_sb_init(&sb);
        spm_json(&sb, pres[k]);
        REQUIRE(!sb.oom);
        char dir[600];
        REQUIRE(make_case_dir(names[k], dir, sizeof dir) == 0);
        hf_case c = {names[k], sb.buf, NULL, k_texts, NULL, "llama"};
        if (k == 1)
            c.tokenizer_config = "{\"add_bos_token\":true,\"add_eos_token\":false,\"bos_token\":\"<s>\","
                                 "\"eos_token\":{\"content\":\"</s>\"},\"chat_template\":\"{% for m in messages %}"
                                 "{{'[INST] ' + m['content'] + ' [/INST]'}}{% endfor %}\"}";
        check_hf_case(&c, dir);
        rm_sb_free(&sb);
    }
}

TEST(tokgguf_hf_wordpiece) {
    if (access(rm_test_bin(), X_OK) != 0) SKIP("no ramole binary");
    // Cased WordPiece (lowercase false, accents kept), max 12 chars a word.
    static const char json[] =
        "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"[PAD]\",\"special\":true},"
        "{\"id\":1,\"content\":\"[UNK]\",\"special\":true},{\"id\":2,\"content\":\"[CLS]\",\"special\":true},"
        "{\"id\":3,\"content\":\"[SEP]\",\"special\":true},{\"id\":4,\"content\":\"[MASK]\",\"special\":true}],"
        "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_chinese_chars\":true,"
        "\"strip_accents\":false,\"lowercase\":false},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
        "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_prefix\":\"##\","
        "\"max_input_chars_per_word\":12,\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,\"[SEP]\":3,\"[MASK]\":4,"
        "\"Hello\":5,\"hello\":6,\"HELLO\":7,\"world\":8,\"H\":9,\"##i\":10,\"there\":11,\",\":12,\"!\":13,"
        "\"friend\":14,\"caf\":15,\"##\xc3\xa9\":16,\"i\":17,\"\xc3\xa9\":18,\"##s\":19,\"don\":20,\"'\":21,"
        "\"t\":22,\"12\":23,\"##345\":24,\"3\":25,\".\":26,\"14\":27,\"?\":28,\"New\":29,\"line\":30,"
        "\"\xe4\xbd\xa0\":31,\"\xe5\xa5\xbd\":32,\"DON\":33,\"T\":34}}}";
    char dir[600];
    REQUIRE(make_case_dir("wordpiece", dir, sizeof dir) == 0);
    hf_case c = {"wordpiece", json, NULL, k_texts, NULL, "bert"};
    check_hf_case(&c, dir);
}

// Byte-level BPE (all 256 byte characters) with a Split regex that is no
// known llama.cpp pre-tokenizer: the regex travels in ramole.tokenizer.pre_regex.
TEST(tokgguf_hf_custom_regex) {
    if (access(rm_test_bin(), X_OK) != 0) SKIP("no ramole binary");
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_puts(
        &sb, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":256,\"content\":\"<|endoftext|>\",\"special\":true},"
             "{\"id\":257,\"content\":\"<|user|>\",\"special\":false}],"
             "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
             "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"[0-9]{1,2}| ?[A-Za-z]+|\\\\s+\"},\"behavior\":\"Isolated\"},"
             "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
             "\"decoder\":{\"type\":\"ByteLevel\"},"
             "\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char u[4];
        int l = tok_byte_to_unicode(b, u);
        if (b) rm_sb_puts(&sb, ",");
        rm_sb_json_str(&sb, u, (size_t)l);
        rm_sb_printf(&sb, ":%d", b);
    }
    rm_sb_puts(&sb, ",\"<|endoftext|>\":256,\"<|user|>\":257,\"He\":258,\"ll\":259,\"llo\":260,\"Hello\":261,"
                    "\"\xc4\xa0w\":262,\"or\":263,\"\xc4\xa0wor\":264,\"ld\":265,\"12\":266,\"\xc4\xa0Hi\":267,"
                    "\"\xc4\xa0world\":268},\"merges\":[\"H e\",\"l l\",\"ll o\",\"He llo\",\"\xc4\xa0 w\",\"o r\","
                    "\"\xc4\xa0w or\",\"l d\",\"1 2\"]}}");
    REQUIRE(!sb.oom);
    char dir[600];
    REQUIRE(make_case_dir("custom-regex", dir, sizeof dir) == 0);
    static const char *const texts[] = {"Hello world 12345", "<|user|>Hello<|endoftext|> Hi", " \n\tx\xc3\xa9", NULL};
    hf_case c = {"custom-regex", sb.buf, NULL, texts, NULL, "gpt2"};
    check_hf_case(&c, dir);
    rm_sb_free(&sb);
}

// GPT-2's reference vocabulary as a tokenizer.json (ByteLevel pre-tokenizer):
// the converted GGUF names the pre-tokenizer "gpt-2" and reproduces llama.cpp's ids.
TEST(tokgguf_hf_gpt2) {
    if (access(rm_test_bin(), X_OK) != 0) SKIP("no ramole binary");
    const char *shared = rm_test_shared();
    if (!shared) SKIP("no ../shared");
    char path[512];
    snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-gpt-2.gguf", shared);
    if (!rm_file_exists(path)) SKIP("no ../shared/data/tokenizers");
    gguf_file g;
    REQUIRE(gguf_open(&g, path) == RM_OK);
    const gguf_value *toks, *types, *merges;
    REQUIRE(gguf_get_arr(&g, "tokenizer.ggml.tokens", &toks) == RM_OK);
    REQUIRE(gguf_get_arr(&g, "tokenizer.ggml.token_type", &types) == RM_OK);
    REQUIRE(gguf_get_arr(&g, "tokenizer.ggml.merges", &merges) == RM_OK);
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_puts(&sb, "{\"version\":\"1.0\",\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                    "\"use_regex\":true},\"added_tokens\":[");
    int first = 1;
    for (uint64_t i = 0; i < toks->arr.n; i++) {
        int64_t ty = gguf_arr_i64(types, i);
        if (ty != TOK_CONTROL && ty != TOK_USER) continue;
        rm_sb_printf(&sb, "%s{\"id\":%llu,\"content\":", first ? "" : ",", (unsigned long long)i);
        rm_sb_json_str(&sb, toks->arr.strs[i].ptr, (size_t)toks->arr.strs[i].len);
        rm_sb_printf(&sb, ",\"special\":%s}", ty == TOK_CONTROL ? "true" : "false");
        first = 0;
    }
    rm_sb_puts(&sb, "],\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (uint64_t i = 0; i < toks->arr.n; i++) {
        if (i) rm_sb_puts(&sb, ",");
        rm_sb_json_str(&sb, toks->arr.strs[i].ptr, (size_t)toks->arr.strs[i].len);
        rm_sb_printf(&sb, ":%llu", (unsigned long long)i);
    }
    rm_sb_puts(&sb, "},\"merges\":[");
    for (uint64_t i = 0; i < merges->arr.n; i++) {
        if (i) rm_sb_puts(&sb, ",");
        rm_sb_json_str(&sb, merges->arr.strs[i].ptr, (size_t)merges->arr.strs[i].len);
    }
    rm_sb_puts(&sb, "]}}");
    REQUIRE(!sb.oom);
    gguf_close(&g);
    char dir[600];
    REQUIRE(make_case_dir("gpt-2", dir, sizeof dir) == 0);
    hf_case c = {"gpt-2", sb.buf, "{\"chat_template\":\"{{ messages }}\"}", k_texts, "gpt-2", "gpt2"};
    check_hf_case(&c, dir);
    rm_sb_free(&sb);
}

// Loading a model directory converts it with its tokenizer written in.
TEST(tokgguf_llama_load_dir) {
    char dir[600];
    REQUIRE(make_case_dir("load-dir", dir, sizeof dir) == 0);
    rm_sb sb;
    rm_sb_init(&sb);
    spm_json(&sb, "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
                  "\"prepend_scheme\":\"always\",\"split\":false}");
    REQUIRE(!sb.oom);
    REQUIRE(write_text(dir, "tokenizer.json", sb.buf) == RM_OK);
    rm_sb_free(&sb);
    char path[700];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    rm_tokenizer *hf = NULL;
    CHECK_OK(rm_tokenizer_from_hf(&hf, path));
    REQUIRE(hf);
    REQUIRE(write_model(dir, rm_tokenizer_n_vocab(hf)) == 0);
    rm_llama *m = NULL;
    CHECK_OK(rm_llama_load(&m, dir));
    if (m) {
        REQUIRE(m->tok);
        CHECK(!strcmp(rm_tokenizer_kind(m->tok), "bpe"));
        for (int i = 0; k_texts[i]; i++) same_encoding(hf, m->tok, k_texts[i], strlen(k_texts[i]), 1, 1, "load-dir");
        rm_llama_free(m);
    }
    rm_tokenizer_free(hf);
}

// A byte-fallback BPE is written as a "llama" vocabulary whose scores follow
// the merge ranks: read as plain SentencePiece (what llama.cpp does, here by
// turning ramole.tokenizer.spm_merges off) it encodes these texts the same.
TEST(tokgguf_spm_scores_view) {
    rm_sb sb;
    rm_sb_init(&sb);
    spm_json(&sb, "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
                  "\"prepend_scheme\":\"always\",\"split\":false}");
    REQUIRE(!sb.oom);
    char path[600], out[600];
    snprintf(path, sizeof path, "%s/scores-view.json", rm_test_tmpdir());
    snprintf(out, sizeof out, "%s/scores-view.gguf", rm_test_tmpdir());
    REQUIRE(rm_write_file_atomic(path, sb.buf, sb.len) == RM_OK);
    rm_sb_free(&sb);
    rm_tokenizer *hf = NULL, *spm = NULL;
    CHECK_OK(rm_tokenizer_from_hf(&hf, path));
    REQUIRE(hf);
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    CHECK_OK(rm_tokenizer_write_gguf(hf, w));
    CHECK_OK(gguf_set_bool(w, "ramole.tokenizer.spm_merges", 0));
    CHECK_OK(gguf_write(w, out));
    gguf_writer_free(w);
    gguf_file g;
    REQUIRE(gguf_open(&g, out) == RM_OK);
    CHECK_OK(rm_tokenizer_from_gguf(&spm, &g));
    if (spm) {
        CHECK(!strcmp(rm_tokenizer_kind(spm), "spm"));
        static const char *const texts[] = {"Hello world", "Hi there Hi i", "HeHello hello Hell", "\xc3\xa9t\xc3\xa9",
                                            NULL};
        for (int i = 0; texts[i]; i++) same_encoding(hf, spm, texts[i], strlen(texts[i]), 1, 0, "scores view");
        rm_tokenizer_free(spm);
    }
    gguf_close(&g);
    rm_tokenizer_free(hf);
}
