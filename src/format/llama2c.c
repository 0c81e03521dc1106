// llama2c.c — see llama2c.h. llama2.c stores W[out][in] row-major, which is
// already GGUF's layout (ne = {in, out}), so tensors are referenced in place.
#include "format/llama2c.h"
#include "base/err.h"
#include "format/gguf.h"

#include <stdint.h>
#include <stdio.h>
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

int llama2c_convert(const char *in_path, const char *out_path) {
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
    int dim = h[0], hidden = h[1], nl = h[2], nh = h[3], nkv = h[4], vocab = h[5] < 0 ? -h[5] : h[5], seq = h[6];
    int shared = h[5] > 0;
    if (dim <= 0 || hidden <= 0 || nl <= 0 || nh <= 0 || nkv <= 0 || vocab <= 0 || seq <= 0 || dim > 65536 ||
        hidden > 1 << 20 || nl > 1024 || nh > dim || nkv > nh || vocab > 1 << 24 || seq > 1 << 24 || dim % nh ||
        nh % nkv) {
        rc = rm_errorf(RM_EFORMAT, "%s: implausible llama2.c header (dim %d hidden %d layers %d heads %d kv %d vocab %d seq %d)",
                       in_path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
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
    if (!w) { rc = rm_errorf(RM_ENOMEM, "out of memory"); goto done; }
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
        (rc = gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1)))
        goto done;
    int64_t ne[2];
    char name[96];
#define ADD(nm, ptr, n0, n1)                                                             \
    do {                                                                                 \
        ne[0] = (n0);                                                                    \
        ne[1] = (n1);                                                                    \
        if ((rc = gguf_add_tensor(w, nm, RM_TYPE_F32, (n1) > 1 ? 2 : 1, ne, ptr))) goto done; \
    } while (0)
    ADD("token_embd.weight", emb, dim, vocab);
    ADD("output_norm.weight", rms_final, dim, 1);
    if (!shared) ADD("output.weight", wcls, dim, vocab);
    for (int l = 0; l < nl; l++) {
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        ADD(name, rms_att + (size_t)l * dim, dim, 1);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        ADD(name, wq + (size_t)l * dim * dim, dim, dim);
        snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);
        ADD(name, wk + (size_t)l * dim * kvd, dim, kvd);
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        ADD(name, wv + (size_t)l * dim * kvd, dim, kvd);
        snprintf(name, sizeof name, "blk.%d.attn_output.weight", l);
        ADD(name, wo + (size_t)l * dim * dim, dim, dim);
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        ADD(name, rms_ffn + (size_t)l * dim, dim, 1);
        snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);
        ADD(name, w1 + (size_t)l * dim * hidden, dim, hidden);
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        ADD(name, w2 + (size_t)l * dim * hidden, hidden, dim);
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);
        ADD(name, w3 + (size_t)l * dim * hidden, dim, hidden);
    }
#undef ADD
    rc = gguf_write(w, out_path);
done:
    gguf_writer_free(w);
    rm_mmap_close(&map);
    return rc;
}
