// llama2c.c — see llama2c.h. llama2.c stores W[out][in] row-major, which is
// already GGUF's layout (ne = {in, out}), so tensors are referenced in place.
#include "format/llama2c.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct l2c_cursor {
    const uint8_t *base;
    size_t size, off;
    const char *path;
} l2c_cursor;

// Takes `count` floats from the cursor (checked against the file size).
static int take(l2c_cursor *c, uint64_t count, const float **out, const char *what) {
    uint64_t bytes = count * 4;
    if (count > SIZE_MAX / 4 || bytes > c->size - c->off)
        return rm_errorf(RM_EFORMAT, "%s: truncated: %s needs %llu bytes at offset %zu, file has %zu", c->path, what,
                         (unsigned long long)bytes, c->off, c->size);
    *out = (const float *)(c->base + c->off);
    c->off += (size_t)bytes;
    return RM_OK;
}

// Adds an f32 tensor [n1 rows of n0] (1-D when n1 == 1) referencing data in place.
static int add_f32(gguf_writer *w, const char *name, const float *data, int n0, int n1) {
    int64_t ne[2] = {n0, n1};
    return gguf_add_tensor(w, name, RM_TYPE_F32, n1 > 1 ? 2 : 1, ne, data);
}

// SentencePiece token types as GGUF stores them.
enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_BYTE = 6 };

// llama2.c's tokenizer file at path as GGUF metadata for n tokens. Its
// export wrote SentencePiece's word mark U+2581 as a space and BOS / EOS as
// "\n<s>\n" / "\n</s>\n"; both are turned back.
static int add_tokenizer(gguf_writer *w, const char *path, int n) {
    rm_mmap map;
    int rc = rm_mmap_open(&map, path);
    if (rc) return rc;
    char **tok = calloc((size_t)n, sizeof *tok);
    float *score = malloc((size_t)n * sizeof *score);
    int32_t *type = malloc((size_t)n * sizeof *type);
    size_t off = 4;
    if (!tok || !score || !type) rc = rm_errorf(RM_ENOMEM, "out of memory");
    else if (map.size < 4) rc = rm_errorf(RM_EFORMAT, "%s: too small for a llama2.c tokenizer", path);
    for (int i = 0; !rc && i < n; i++) {
        int32_t len;
        if (map.size - off < 8) {
            rc = rm_errorf(RM_EFORMAT, "%s: truncated at token %d of the model's %d", path, i, n);
            break;
        }
        memcpy(&score[i], map.data + off, 4);
        memcpy(&len, map.data + off + 4, 4);
        off += 8;
        if (len < 0 || (size_t)len > map.size - off) {
            rc = rm_errorf(RM_EFORMAT, "%s: token %d: length %d past the end of the file", path, i, (int)len);
            break;
        }
        const uint8_t *b = map.data + off;
        off += (size_t)len;
        type[i] = TOK_NORMAL;
        if (i == 0) type[i] = TOK_UNKNOWN;
        else if (i == 1 || i == 2) type[i] = TOK_CONTROL;
        else if (len == 6 && !memcmp(b, "<0x", 3) && b[5] == '>') type[i] = TOK_BYTE;
        rm_sb sb;
        rm_sb_init(&sb);
        if (type[i] == TOK_CONTROL) rm_sb_puts(&sb, i == 1 ? "<s>" : "</s>");
        for (int j = 0; type[i] != TOK_CONTROL && j < len; j++) {
            if (b[j] == ' ') rm_sb_puts(&sb, "\xe2\x96\x81"); // U+2581
            else rm_sb_putn(&sb, (const char *)b + j, 1);
        }
        tok[i] = sb.oom ? NULL : sb.buf ? sb.buf : strdup("");
        if (!tok[i]) {
            rm_sb_free(&sb);
            rc = rm_errorf(RM_ENOMEM, "out of memory");
        }
    }
    if (!rc && off != map.size)
        rc = rm_errorf(RM_EFORMAT, "%s: %zu bytes after the model's %d tokens (a tokenizer for another vocabulary?)",
                       path, map.size - off, n);
    if (!rc) rc = gguf_set_str(w, "tokenizer.ggml.model", "llama");
    if (!rc) rc = gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (uint64_t)n);
    if (!rc) rc = gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, score, (uint64_t)n);
    if (!rc) rc = gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, type, (uint64_t)n);
    if (!rc) rc = gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    for (int i = 0; tok && i < n; i++) free(tok[i]);
    free(tok);
    free(score);
    free(type);
    rm_mmap_close(&map);
    return rc;
}

int llama2c_convert(const char *in_path, const char *out_path) { return llama2c_convert_tok(in_path, NULL, out_path); }

int llama2c_convert_tok(const char *in_path, const char *tok_path, const char *out_path) {
    rm_mmap map;
    int rc = rm_mmap_open(&map, in_path);
    if (rc) return rc;
    gguf_writer *w = NULL;
    if (map.size < 28) {
        rc = rm_errorf(RM_EFORMAT, "%s: too small for a llama2.c header (%zu bytes)", in_path, map.size);
        goto done;
    }
    int32_t h[7];
    memcpy(h, map.data, sizeof h);
    // A negative vocab size means a separate classifier. INT32_MIN has no
    // positive counterpart: it is refused below as out of range (0) instead of
    // being negated.
    int dim = h[0], hidden = h[1], nl = h[2], nh = h[3], nkv = h[4], seq = h[6];
    int vocab = h[5] == INT32_MIN ? 0 : h[5] < 0 ? -h[5] : h[5];
    int shared = h[5] > 0;
    // The file has no magic: until the header is plausible nothing of it is
    // echoed (an arbitrary file's first bytes stay out of the message), only
    // which field is wrong.
    const char *bad = dim <= 0 || dim > 65536            ? "dim outside [1, 65536]"
                      : hidden <= 0 || hidden > 1 << 20  ? "hidden_dim outside [1, 2^20]"
                      : nl <= 0 || nl > 1024             ? "n_layers outside [1, 1024]"
                      : nh <= 0 || nh > dim || dim % nh  ? "n_heads not a divisor of dim"
                      : nkv <= 0 || nkv > nh || nh % nkv ? "n_kv_heads not a divisor of n_heads"
                      : vocab <= 0 || vocab > 1 << 24    ? "vocab_size outside [1, 2^24] (sign aside)"
                      : seq <= 0 || seq > 1 << 24        ? "seq_len outside [1, 2^24]"
                                                         : NULL;
    if (bad) {
        rc = rm_errorf(RM_EFORMAT, "%s: not a llama2.c checkpoint: header field %s", in_path, bad);
        goto done;
    }
    int hs = dim / nh, kvd = nkv * hs;
    l2c_cursor c = {map.data, map.size, 28, in_path};
    const float *emb = NULL, *rms_att = NULL, *wq = NULL, *wk = NULL, *wv = NULL, *wo = NULL, *rms_ffn = NULL;
    const float *w1 = NULL, *w2 = NULL, *w3 = NULL, *rms_final = NULL, *fr = NULL, *fi = NULL, *wcls = NULL;
    uint64_t L = (uint64_t)nl, D = (uint64_t)dim, F = (uint64_t)hidden;
    if ((rc = take(&c, (uint64_t)vocab * D, &emb, "token embedding")) || (rc = take(&c, L * D, &rms_att, "rms_att")) ||
        (rc = take(&c, L * D * D, &wq, "wq")) || (rc = take(&c, L * D * kvd, &wk, "wk")) ||
        (rc = take(&c, L * D * kvd, &wv, "wv")) || (rc = take(&c, L * D * D, &wo, "wo")) ||
        (rc = take(&c, L * D, &rms_ffn, "rms_ffn")) || (rc = take(&c, L * D * F, &w1, "w1")) ||
        (rc = take(&c, L * F * D, &w2, "w2")) || (rc = take(&c, L * D * F, &w3, "w3")) ||
        (rc = take(&c, D, &rms_final, "rms_final")) || (rc = take(&c, (uint64_t)seq * hs / 2, &fr, "freq_cis_real")) ||
        (rc = take(&c, (uint64_t)seq * hs / 2, &fi, "freq_cis_imag")))
        goto done;
    wcls = emb;
    if (!shared && (rc = take(&c, (uint64_t)vocab * D, &wcls, "classifier"))) goto done;
    if (c.off != map.size) {
        rc = rm_errorf(RM_EFORMAT, "%s: %zu unexpected trailing bytes after the weights", in_path, map.size - c.off);
        goto done;
    }

    w = gguf_writer_new();
    if (!w) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    const char *base = strrchr(in_path, '/');
    base = base ? base + 1 : in_path;
    if ((rc = gguf_set_str(w, "general.architecture", "llama")) || (rc = gguf_set_str(w, "general.name", base)) ||
        (rc = gguf_set_u32(w, "llama.context_length", (uint32_t)seq)) ||
        (rc = gguf_set_u32(w, "llama.embedding_length", (uint32_t)dim)) ||
        (rc = gguf_set_u32(w, "llama.block_count", (uint32_t)nl)) ||
        (rc = gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)hidden)) ||
        (rc = gguf_set_u32(w, "llama.attention.head_count", (uint32_t)nh)) ||
        (rc = gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)nkv)) ||
        (rc = gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)hs)) ||
        (rc = gguf_set_u32(w, "llama.vocab_size", (uint32_t)vocab)) ||
        (rc = gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) ||
        (rc = gguf_set_f32(w, "llama.rope.freq_base", 10000.0f)) ||
        (rc = gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
        (rc = gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
        (rc = gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1)) ||
        (tok_path && (rc = add_tokenizer(w, tok_path, vocab))))
        goto done;
    // Per-layer arrays: [n_layer][n1][n0] in the file, one GGUF tensor per layer.
    const struct {
        const char *name;
        const float *base;
        int n0, n1;
    } per_layer[9] = {
        {"attn_norm", rms_att, dim, 1}, {"attn_q", wq, dim, dim},      {"attn_k", wk, dim, kvd},
        {"attn_v", wv, dim, kvd},       {"attn_output", wo, dim, dim}, {"ffn_norm", rms_ffn, dim, 1},
        {"ffn_gate", w1, dim, hidden},  {"ffn_down", w2, hidden, dim}, {"ffn_up", w3, dim, hidden},
    };
    if ((rc = add_f32(w, "token_embd.weight", emb, dim, vocab)) ||
        (rc = add_f32(w, "output_norm.weight", rms_final, dim, 1)) ||
        (!shared && (rc = add_f32(w, "output.weight", wcls, dim, vocab))))
        goto done;
    char name[96];
    for (int l = 0; l < nl; l++)
        for (int t = 0; t < 9; t++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, per_layer[t].name);
            size_t per = (size_t)per_layer[t].n0 * per_layer[t].n1;
            if ((rc = add_f32(w, name, per_layer[t].base + (size_t)l * per, per_layer[t].n0, per_layer[t].n1)))
                goto done;
        }
    rc = gguf_write(w, out_path);
done:
    gguf_writer_free(w);
    rm_mmap_close(&map);
    return rc;
}
