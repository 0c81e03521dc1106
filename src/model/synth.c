// synth.c — see synth.h.
#include "model/synth.h"
#include "base/err.h"
#include "format/gguf.h"
#include "model/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const rm_synth_shape g_shapes[] = {
    {"tiny", 258, 256, 4, 8, 4, 768, 512},
    {"tinyllama-1.1b", 32000, 2048, 22, 32, 4, 5632, 2048},
    {"llama-7b", 32000, 4096, 32, 32, 32, 11008, 4096},
};

const rm_synth_shape *rm_synth_find(const char *name) {
    for (size_t i = 0; i < sizeof g_shapes / sizeof g_shapes[0]; i++)
        if (!strcmp(g_shapes[i].name, name)) return &g_shapes[i];
    return NULL;
}

const char *rm_synth_names(void) { return "tiny, tinyllama-1.1b, llama-7b"; }

// GPT-2's byte -> printable unicode code point mapping.
static int byte_to_codepoint(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) return b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= '!' && i <= '~') || (i >= 0xa1 && i <= 0xac) || (i >= 0xae && i <= 0xff))) n++;
    return 256 + n;
}

static void utf8_encode(int cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    } else {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        out[3] = 0;
    }
}

static int write_tokenizer(gguf_writer *w, int n_vocab, const char *const *merges, int n_merges) {
    char **toks = calloc((size_t)n_vocab, sizeof(char *));
    int32_t *types = calloc((size_t)n_vocab, sizeof(int32_t));
    float *scores = calloc((size_t)n_vocab, sizeof(float));
    int rc = RM_OK;
    if (!toks || !types || !scores) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_vocab; i++) {
        int mi = i - 258;
        toks[i] = malloc(mi >= 0 && mi < n_merges ? strlen(merges[mi]) + 1 : 24);
        if (!toks[i]) {
            rc = rm_errorf(RM_ENOMEM, "out of memory");
            goto done;
        }
        if (i < 256) {
            utf8_encode(byte_to_codepoint(i), toks[i]);
            types[i] = 1;
        } else if (i == 256) {
            strcpy(toks[i], "<s>");
            types[i] = 3;
        } else if (i == 257) {
            strcpy(toks[i], "</s>");
            types[i] = 3;
        } else if (mi < n_merges) { // the merge's two parts joined
            char *o = toks[i];
            for (const char *c = merges[mi]; *c; c++)
                if (*c != ' ') *o++ = *c;
            *o = 0;
            types[i] = 1;
        } else {
            snprintf(toks[i], 24, "<unused_%d>", i - 258);
            types[i] = 3;
        }
        scores[i] = -(float)i;
    }
    if ((rc = gguf_set_str(w, "tokenizer.ggml.model", "gpt2")) ||
        (rc = gguf_set_str(w, "tokenizer.ggml.pre", "default")) ||
        (rc = gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, (uint64_t)n_vocab)) ||
        (rc = gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, (uint64_t)n_vocab)) ||
        (rc = gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, (uint64_t)n_vocab)) ||
        (rc = gguf_set_arr_str(w, "tokenizer.ggml.merges", merges, (uint64_t)n_merges)) ||
        (rc = gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 256)) ||
        (rc = gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 257)) ||
        (rc = gguf_set_bool(w, "tokenizer.ggml.add_bos_token", 1)))
        goto done;
done:
    if (toks)
        for (int i = 0; i < n_vocab; i++) free(toks[i]);
    free(toks);
    free(types);
    free(scores);
    return rc;
}

typedef struct synth_tensor {
    char name[64];
    int64_t ne[2];
    int n_dims;
    rm_type type;
    void *data;
} synth_tensor;

// Fills a tensor with uniform(-a, a) values, a = sqrt(3 / fan_in) (unit output variance), or ones for norms.
static int fill_tensor(synth_tensor *t, uint64_t *rng, int is_norm) {
    int64_t in = t->ne[0], rows = t->n_dims > 1 ? t->ne[1] : 1;
    size_t rs = rm_row_size(t->type, in);
    if (rs == 0)
        return rm_errorf(RM_EINVAL, "synth: %s: row of %lld is not a multiple of the %s block", t->name, (long long)in,
                         rm_type_name(t->type));
    t->data = malloc(rs * (size_t)rows);
    float *row = malloc((size_t)in * sizeof(float));
    if (!t->data || !row) {
        free(row);
        return rm_errorf(RM_ENOMEM, "synth: out of memory for %s", t->name);
    }
    float a = sqrtf(3.0f / (float)in);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < in; i++) row[i] = is_norm ? 1.0f : (2.0f * rm_rng_uniform(rng) - 1.0f) * a;
        rm_quantize_row(t->type, row, (uint8_t *)t->data + (size_t)r * rs, in);
    }
    free(row);
    return RM_OK;
}

static int synth_write(const rm_synth_shape *s, const char *const *merges, int n_merges, rm_ftype ft,
                       uint64_t seed, const char *out_path, void (*progress)(void *ctx, long done, long total),
                       void *ctx);

int rm_synth_write(const rm_synth_shape *s, rm_type type, uint64_t seed, const char *out_path,
                   void (*progress)(void *ctx, long done, long total), void *ctx) {
    return synth_write(s, NULL, 0, (rm_ftype){type, 0}, seed, out_path, progress, ctx);
}

int rm_synth_write_ftype(const rm_synth_shape *s, rm_ftype ftype, uint64_t seed, const char *out_path,
                         void (*progress)(void *ctx, long done, long total), void *ctx) {
    return synth_write(s, NULL, 0, ftype, seed, out_path, progress, ctx);
}

int rm_synth_write_bpe(const rm_synth_shape *s, const char *const *merges, int n_merges, rm_type type, uint64_t seed,
                       const char *out_path, void (*progress)(void *ctx, long done, long total), void *ctx) {
    return synth_write(s, merges, n_merges, (rm_ftype){type, 0}, seed, out_path, progress, ctx);
}

static int synth_write(const rm_synth_shape *s, const char *const *merges, int n_merges, rm_ftype ft,
                       uint64_t seed, const char *out_path, void (*progress)(void *ctx, long done, long total),
                       void *ctx) {
    const rm_type type = ft.type;
    if (n_merges < 0 || (n_merges > 0 && s->n_vocab < 258 + n_merges))
        return rm_errorf(RM_EINVAL, "synth: a vocabulary of %d cannot hold 258 + %d merged tokens", s->n_vocab,
                         n_merges);
    int hd = s->n_embd / s->n_head, kvd = s->n_head_kv * hd;
    int n_t = 2 + 9 * s->n_layer;
    synth_tensor *ts = calloc((size_t)n_t, sizeof *ts);
    gguf_writer *w = gguf_writer_new();
    int rc = RM_OK;
    if (!ts || !w) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    double bytes = 0;
    int k = 0;
#define T(nm, n0, n1, ty)                                                                                              \
    do {                                                                                                               \
        synth_tensor *t_ = &ts[k++];                                                                                   \
        snprintf(t_->name, sizeof t_->name, "%s", nm);                                                                 \
        t_->ne[0] = (n0);                                                                                              \
        t_->ne[1] = (n1);                                                                                              \
        t_->n_dims = (n1) > 1 ? 2 : 1;                                                                                 \
        t_->type = (ty);                                                                                               \
        bytes += (double)rm_row_size(ty, n0) * (n1);                                                                   \
    } while (0)
    char nm[64];
    T("token_embd.weight", s->n_embd, s->n_vocab, rm_ftype_tensor_type(ft, "token_embd.weight", s->n_layer, 1));
    T("output_norm.weight", s->n_embd, 1, RM_TYPE_F32);
    for (int l = 0; l < s->n_layer; l++) {
        const struct {
            const char *n;
            int i, o;
            rm_type t;
        } spec[9] = {{"attn_norm", s->n_embd, 1, RM_TYPE_F32},
                     {"attn_q", s->n_embd, s->n_embd, type},
                     {"attn_k", s->n_embd, kvd, type},
                     {"attn_v", s->n_embd, kvd, type},
                     {"attn_output", s->n_embd, s->n_embd, type},
                     {"ffn_norm", s->n_embd, 1, RM_TYPE_F32},
                     {"ffn_gate", s->n_embd, s->n_ff, type},
                     {"ffn_up", s->n_embd, s->n_ff, type},
                     {"ffn_down", s->n_ff, s->n_embd, type}};
        for (int j = 0; j < 9; j++) {
            snprintf(nm, sizeof nm, "blk.%d.%s.weight", l, spec[j].n);
            rm_type ty = spec[j].o == 1 ? RM_TYPE_F32 : rm_ftype_tensor_type(ft, nm, s->n_layer, 1); // norms f32
            T(nm, spec[j].i, spec[j].o, ty);
        }
    }
#undef T
    if (bytes > 16e9) {
        rc = rm_errorf(RM_EINVAL, "synth: %s as %s would hold %.1f GB in memory; pick a smaller type", s->name,
                       rm_type_name(type), bytes / 1e9);
        goto done;
    }
    char arch_name[80];
    char ftn[24];
    snprintf(arch_name, sizeof arch_name, "synth-%s-%s", s->name, rm_ftype_name(ft, ftn, sizeof ftn));
    if ((rc = gguf_set_str(w, "general.architecture", "llama")) || (rc = gguf_set_str(w, "general.name", arch_name)) ||
        (rc = gguf_set_u32(w, "llama.context_length", (uint32_t)s->n_ctx)) ||
        (rc = gguf_set_u32(w, "llama.embedding_length", (uint32_t)s->n_embd)) ||
        (rc = gguf_set_u32(w, "llama.block_count", (uint32_t)s->n_layer)) ||
        (rc = gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)s->n_ff)) ||
        (rc = gguf_set_u32(w, "llama.attention.head_count", (uint32_t)s->n_head)) ||
        (rc = gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_head_kv)) ||
        (rc = gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)hd)) ||
        (rc = gguf_set_u32(w, "llama.vocab_size", (uint32_t)s->n_vocab)) ||
        (rc = gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f)) ||
        (rc = gguf_set_f32(w, "llama.rope.freq_base", 10000.0f)) ||
        (rc = write_tokenizer(w, s->n_vocab, merges, n_merges)))
        goto done;
    uint64_t rng = seed;
    for (int i = 0; i < n_t; i++) {
        synth_tensor *t = &ts[i];
        if ((rc = fill_tensor(t, &rng, strstr(t->name, "norm") != NULL))) goto done;
        if ((rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data))) goto done;
        if (progress) progress(ctx, i + 1, n_t);
    }
    rc = gguf_write(w, out_path);
done:
    if (ts)
        for (int i = 0; i < n_t; i++) free(ts[i].data);
    free(ts);
    gguf_writer_free(w);
    return rc;
}
