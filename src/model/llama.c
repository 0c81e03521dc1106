// llama.c — Llama-family weights (GGUF) and the ragged-batch forward pass.
//
// Shapes: n = rows in the batch, d = n_embd, hd = head_dim, H = n_head,
// Hk = n_head_kv, kvd = Hk*hd, f = n_ff, V = n_vocab.
#include "model/llama.h"
#include "model/attn.h"
#include "base/err.h"
#include "base/fp16.h"
#include "model/ops.h"
#include "format/hfdir.h"
#include "base/file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const rm_linear_names[RM_LIN_COUNT] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"};
const char *const rm_linear_gguf[RM_LIN_COUNT] = {"attn_q",   "attn_k", "attn_v",  "attn_output",
                                                  "ffn_gate", "ffn_up", "ffn_down"};

// ---------------------------------------------------------------- loading

static int get_u32_arch(const gguf_file *g, const char *arch, const char *suffix, uint32_t *out, int required) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_u32(g, key, out);
    if (rc == RM_ENOTFOUND && !required) return RM_OK;
    if (rc == RM_ENOTFOUND) return rm_errorf(RM_EFORMAT, "%s: missing metadata key %s", g->path, key);
    return rc;
}

static int get_f32_arch(const gguf_file *g, const char *arch, const char *suffix, float *out) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_f32(g, key, out);
    return rc == RM_ENOTFOUND ? RM_OK : rc;
}

static int read_hparams(rm_llama *m) {
    const gguf_file *g = &m->gguf;
    gguf_str archs;
    if (gguf_get_str(g, "general.architecture", &archs) != RM_OK)
        return rm_errorf(RM_EFORMAT, "%s: no general.architecture: not a model file", g->path);
    char arch[64];
    gguf_str_copy(archs, arch, sizeof arch);
    rm_llama_hparams *hp = &m->hp;
    memset(hp, 0, sizeof *hp);
    if (!strcmp(arch, "llama") || !strcmp(arch, "mistral")) hp->arch = RM_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2")) hp->arch = RM_ARCH_QWEN2;
    else
        return rm_errorf(RM_EUNSUPPORTED, "%s: architecture '%s' is not supported (llama, mistral, qwen2)", g->path,
                         arch);

    uint32_t d = 0, nl = 0, nh = 0, nkv = 0, ff = 0, ctx = 2048, kl = 0, rd = 0, nv = 0, orig = 0;
    int rc;
    if ((rc = get_u32_arch(g, arch, "embedding_length", &d, 1)) ||
        (rc = get_u32_arch(g, arch, "block_count", &nl, 1)) ||
        (rc = get_u32_arch(g, arch, "attention.head_count", &nh, 1)) ||
        (rc = get_u32_arch(g, arch, "feed_forward_length", &ff, 1)) ||
        (rc = get_u32_arch(g, arch, "attention.head_count_kv", &nkv, 0)) ||
        (rc = get_u32_arch(g, arch, "context_length", &ctx, 0)) ||
        (rc = get_u32_arch(g, arch, "attention.key_length", &kl, 0)) ||
        (rc = get_u32_arch(g, arch, "rope.dimension_count", &rd, 0)) ||
        (rc = get_u32_arch(g, arch, "vocab_size", &nv, 0)) ||
        (rc = get_u32_arch(g, arch, "rope.scaling.original_context_length", &orig, 0)))
        return rc;
    if (nkv == 0) nkv = nh;
    if (d == 0 || nl == 0 || nh == 0 || ff == 0 || d > 65536 || nl > 1024 || nh > 1024 || ff > 1 << 20)
        return rm_errorf(RM_EFORMAT, "%s: implausible hyperparameters (embd %u, layers %u, heads %u, ff %u)", g->path,
                         d, nl, nh, ff);
    if (nh % nkv != 0)
        return rm_errorf(RM_EFORMAT, "%s: head_count %u is not a multiple of head_count_kv %u", g->path, nh, nkv);
    if (kl == 0) {
        if (d % nh) return rm_errorf(RM_EFORMAT, "%s: embedding_length %u not divisible by heads %u", g->path, d, nh);
        kl = d / nh;
    }
    if (rd == 0) rd = kl;
    if (rd > kl || rd % 2)
        return rm_errorf(RM_EFORMAT, "%s: rope.dimension_count %u does not fit head size %u", g->path, rd, kl);
    hp->n_embd = (int)d;
    hp->n_layer = (int)nl;
    hp->n_head = (int)nh;
    hp->n_head_kv = (int)nkv;
    hp->n_ff = (int)ff;
    hp->n_ctx_train = (int)ctx;
    hp->head_dim = (int)kl;
    hp->rope_dim = (int)rd;
    hp->n_vocab = (int)nv;
    hp->rms_eps = 1e-5f;
    hp->rope_base = 10000.0f;
    hp->rope_neox = hp->arch == RM_ARCH_QWEN2;
    if ((rc = get_f32_arch(g, arch, "attention.layer_norm_rms_epsilon", &hp->rms_eps)) ||
        (rc = get_f32_arch(g, arch, "rope.freq_base", &hp->rope_base)))
        return rc;
    char key[160];
    gguf_str st;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    hp->rope_factor = 1.0f;
    if (gguf_get_str(g, key, &st) == RM_OK && !gguf_str_eq(st, "none")) {
        if (gguf_str_eq(st, "linear")) hp->rope_scaling = RM_ROPE_SCALING_LINEAR;
        else if (gguf_str_eq(st, "llama3")) hp->rope_scaling = RM_ROPE_SCALING_LLAMA3;
        else {
            char t[64];
            gguf_str_copy(st, t, sizeof t);
            return rm_errorf(RM_EUNSUPPORTED, "%s: rope scaling type '%s' is not supported (linear, llama3)", g->path,
                             t);
        }
        if ((rc = get_f32_arch(g, arch, "rope.scaling.factor", &hp->rope_factor))) return rc;
        hp->rope_low_freq = 1.0f;
        hp->rope_high_freq = 4.0f;
        if ((rc = get_f32_arch(g, arch, "rope.scaling.low_freq_factor", &hp->rope_low_freq)) ||
            (rc = get_f32_arch(g, arch, "rope.scaling.high_freq_factor", &hp->rope_high_freq)))
            return rc;
        hp->rope_orig_ctx = orig ? (int)orig : (int)ctx;
        if (!(hp->rope_factor > 0) || !(hp->rope_high_freq > hp->rope_low_freq))
            return rm_errorf(RM_EFORMAT, "%s: bad rope scaling parameters", g->path);
    } else {
        // Older files give only the factor (linear scaling).
        snprintf(key, sizeof key, "%s.rope.scale_linear", arch);
        if (gguf_get_f32(g, key, &hp->rope_factor) == RM_OK && hp->rope_factor > 0 && hp->rope_factor != 1.0f)
            hp->rope_scaling = RM_ROPE_SCALING_LINEAR;
        else hp->rope_factor = 1.0f;
    }
    return RM_OK;
}

// Finds a tensor and checks its 2-D shape [ne1 rows of ne0].
static int get_tensor(rm_llama *m, const char *name, int64_t ne0, int64_t ne1, rm_tensor *out, int required) {
    const gguf_tensor_info *ti = gguf_find_tensor(&m->gguf, name);
    if (!ti) {
        if (!required) return RM_ENOTFOUND;
        return rm_errorf(RM_EFORMAT, "%s: missing tensor %s", m->path, name);
    }
    int rc = gguf_tensor_view(&m->gguf, ti, out);
    if (rc) return rc;
    int64_t got1 = out->n_dims >= 2 ? out->ne[1] : 1;
    if (out->ne[0] != ne0 || got1 != ne1 || out->ne[2] != 1 || out->ne[3] != 1)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld]", m->path, name,
                         (long long)out->ne[0], (long long)got1, (long long)ne0, (long long)ne1);
    m->weight_bytes += ti->nbytes;
    return RM_OK;
}

// A 1-D weight (norm or bias) copied to f32.
static int get_vector(rm_llama *m, const char *name, int64_t n, float **out, int required) {
    rm_tensor t;
    int rc = get_tensor(m, name, n, 1, &t, required);
    if (rc) return rc;
    if (t.type != RM_TYPE_F32 && t.type != RM_TYPE_F16 && t.type != RM_TYPE_BF16)
        return rm_errorf(RM_EFORMAT, "%s: tensor %s must be f32/f16/bf16, is %s", m->path, name, rm_type_name(t.type));
    *out = malloc((size_t)n * sizeof(float));
    if (!*out) return rm_errorf(RM_ENOMEM, "out of memory");
    rm_dequantize_row(t.type, t.data, *out, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite((*out)[i])) return rm_errorf(RM_EFORMAT, "%s: tensor %s holds NaN/Inf", m->path, name);
    return RM_OK;
}

static int load_weights(rm_llama *m) {
    rm_llama_hparams *hp = &m->hp;
    const gguf_tensor_info *te = gguf_find_tensor(&m->gguf, "token_embd.weight");
    if (!te) return rm_errorf(RM_EFORMAT, "%s: missing tensor token_embd.weight", m->path);
    if (hp->n_vocab == 0) hp->n_vocab = (int)(te->n_dims >= 2 ? te->ne[1] : 0);
    int64_t d = hp->n_embd, qd = (int64_t)hp->n_head * hp->head_dim, kvd = (int64_t)hp->n_head_kv * hp->head_dim;
    int rc;
    if ((rc = get_tensor(m, "token_embd.weight", d, hp->n_vocab, &m->tok_embd, 1))) return rc;
    if ((rc = get_vector(m, "output_norm.weight", d, &m->output_norm, 1))) return rc;
    rc = get_tensor(m, "output.weight", d, hp->n_vocab, &m->output, 0);
    if (rc == RM_ENOTFOUND) {
        m->output = m->tok_embd; // tied classifier
        m->weight_bytes += rm_tensor_nbytes(m->tok_embd.type, 2, m->tok_embd.ne);
    } else if (rc) {
        return rc;
    }
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return rm_errorf(RM_ENOMEM, "out of memory");
    const int64_t shape[RM_LIN_COUNT][2] = {{d, qd},       {d, kvd},      {d, kvd},     {qd, d},
                                            {d, hp->n_ff}, {d, hp->n_ff}, {hp->n_ff, d}};
    char name[128];
    for (int l = 0; l < hp->n_layer; l++) {
        rm_llama_layer *L = &m->layers[l];
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);
        if ((rc = get_vector(m, name, d, &L->attn_norm, 1))) return rc;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);
        if ((rc = get_vector(m, name, d, &L->ffn_norm, 1))) return rc;
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, rm_linear_gguf[w]);
            if ((rc = get_tensor(m, name, shape[w][0], shape[w][1], &L->w[w], 1))) return rc;
        }
        float **bias[3] = {&L->bq, &L->bk, &L->bv};
        for (int w = 0; w < 3; w++) {
            snprintf(name, sizeof name, "blk.%d.%s.bias", l, rm_linear_gguf[w]);
            rc = get_vector(m, name, shape[w][1], bias[w], hp->arch == RM_ARCH_QWEN2);
            if (rc && rc != RM_ENOTFOUND) return rc;
        }
    }
    return RM_OK;
}

// The matrices decode streams, rearranged for this CPU's kernels where that
// pays (rm_repack_for_kernels): only in a resident copy (a mapped file stays
// as it is). A classifier tied to the embedding table takes the table with
// it: the r16 layout is per row, so an embedding row still dequantizes on
// its own (rm_dequantize_row), and whatever reads the table as stored (a
// merge, the router's fingerprint) unpacks it (rm_r16_unpack_row).
static void repack_weights(rm_llama *m) {
    if (rm_mmap_set_writable(&m->gguf.map, 1) != 0) return;
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) rm_repack_for_kernels(&m->layers[l].w[w], NULL);
    if (rm_repack_for_kernels(&m->output, NULL) && m->output.data == m->tok_embd.data)
        m->tok_embd.type = m->output.type;
    rm_mmap_set_writable(&m->gguf.map, 0);
}

// A Hugging Face model directory is converted to a temporary GGUF (weights
// kept in their stored type, the tokenizer.json as GGUF metadata), mapped,
// and the file unlinked at once.
static int open_model_gguf(rm_llama *m, const char *path) {
    const char *mm = getenv("RAMOLE_MMAP");
    return mm && *mm && strcmp(mm, "0") ? gguf_open(&m->gguf, path) : gguf_open_resident(&m->gguf, path);
}

static int open_model_file(rm_llama *m, const char *path) {
    if (!rm_is_dir(path)) return open_model_gguf(m, path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/ramole-hf-XXXXXX", rm_tmpdir());
    int fd = mkstemp(tmp);
    if (fd < 0) return rm_errorf(RM_EIO, "%s: cannot create a temporary file for the conversion", tmp);
    close(fd);
    int rc = hfdir_convert_to_gguf_ex(path, tmp, NULL, NULL, NULL, rm_tokenizer_hfdir_meta, (void *)path);
    if (!rc) rc = open_model_gguf(m, tmp);
    unlink(tmp);
    return rc;
}

// The tokenizer: GGUF metadata, else the tokenizer.json an older conversion noted.
static int load_tokenizer(rm_llama *m) {
    if (gguf_find(&m->gguf, "tokenizer.ggml.tokens")) return rm_tokenizer_from_gguf(&m->tok, &m->gguf);
    gguf_str p;
    if (gguf_get_str(&m->gguf, "ramole.hf_tokenizer_path", &p) != RM_OK) return RM_OK;
    char path[4096];
    gguf_str_copy(p, path, sizeof path);
    if (!rm_file_exists(path)) return RM_OK; // moved away: the model is still usable with ids
    return rm_tokenizer_from_hf(&m->tok, path);
}

int rm_llama_load(rm_llama **out, const char *path) {
    *out = NULL;
    rm_llama *m = calloc(1, sizeof *m);
    if (!m) return rm_errorf(RM_ENOMEM, "out of memory");
    m->path = strdup(path);
    int rc = open_model_file(m, path);
    if (!rc) rc = read_hparams(m);
    if (!rc) rc = load_weights(m);
    if (!rc) repack_weights(m);
    if (!rc) {
        m->rope_freq = malloc((size_t)(m->hp.rope_dim / 2) * sizeof(float));
        if (!m->rope_freq) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else rm_rope_freqs(&m->hp, m->rope_freq);
    }
    if (rc) {
        rm_llama_free(m);
        return rc;
    }
    m->bos = -1;
    uint32_t bos;
    if (gguf_get_u32(&m->gguf, "tokenizer.ggml.bos_token_id", &bos) == RM_OK) m->bos = (int32_t)bos;
    m->add_bos = m->bos >= 0;
    int ab;
    if (gguf_get_bool(&m->gguf, "tokenizer.ggml.add_bos_token", &ab) == RM_OK) m->add_bos = ab && m->bos >= 0;
    rc = load_tokenizer(m);
    if (rc) {
        rm_error_prefix(rc, "%s: tokenizer", path);
        rm_llama_free(m);
        return rc;
    }
    if (m->tok) {
        if (m->bos < 0) {
            m->bos = rm_tokenizer_bos(m->tok);
            m->add_bos = m->bos >= 0 && rm_tokenizer_add_bos(m->tok);
        }
        if (rm_tokenizer_n_vocab(m->tok) > m->hp.n_vocab) {
            rc = rm_errorf(RM_EFORMAT, "%s: tokenizer has %d tokens but the model only %d", path,
                           rm_tokenizer_n_vocab(m->tok), m->hp.n_vocab);
            rm_llama_free(m);
            return rc;
        }
    }
    *out = m;
    return RM_OK;
}

void rm_llama_free(rm_llama *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->hp.n_layer; l++) {
            rm_llama_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
        }
        free(m->layers);
    }
    free(m->output_norm);
    free(m->rope_freq);
    free(m->slot_len);
    if (m->tok) rm_tokenizer_free(m->tok);
    gguf_close(&m->gguf);
    free(m->buf);
    free(m->path);
    free(m);
}

size_t rm_llama_bytes_per_token(const rm_llama *m) {
    size_t total = rm_row_size(m->tok_embd.type, m->hp.n_embd); // one embedding row
    total += rm_tensor_nbytes(m->output.type, 2, m->output.ne);
    for (int l = 0; l < m->hp.n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++)
            total += rm_tensor_nbytes(m->layers[l].w[w].type, 2, m->layers[l].w[w].ne);
    return total;
}

// Checks every row against the model and the cache before anything is written.
static int check_batch(const rm_llama *m, const rm_kvcache *kv, const rm_batch *b, int32_t *len) {
    if (b->n <= 0) return rm_errorf(RM_EINVAL, "forward: empty batch");
    if (kv->n_layer != m->hp.n_layer || kv->kv_dim != m->hp.n_head_kv * m->hp.head_dim)
        return rm_errorf(RM_EMISMATCH, "forward: kv cache shape does not match the model");
    memcpy(len, kv->len, (size_t)kv->n_slots * sizeof(int32_t));
    for (int r = 0; r < b->n; r++) {
        int s = b->slot[r], p = b->pos[r], t = b->token[r];
        if (t < 0 || t >= m->hp.n_vocab)
            return rm_errorf(RM_EINVAL, "forward: row %d: token id %d out of range [0, %d)", r, t, m->hp.n_vocab);
        if (s < 0 || s >= kv->n_slots)
            return rm_errorf(RM_EINVAL, "forward: row %d: kv slot %d out of range [0, %d)", r, s, kv->n_slots);
        if (p < 0 || p >= kv->n_ctx)
            return rm_errorf(RM_EFULL, "forward: row %d: position %d outside the context of %d", r, p, kv->n_ctx);
        if (p > len[s])
            return rm_errorf(RM_EINVAL, "forward: row %d: position %d skips ahead of slot %d (holds %d)", r, p, s,
                             len[s]);
        if (p + 1 > len[s]) len[s] = p + 1;
    }
    return RM_OK;
}

static float *scratch(rm_llama *m, size_t floats) {
    if (floats > m->buf_cap) {
        free(m->buf);
        m->buf = malloc(floats * sizeof(float));
        m->buf_cap = m->buf ? floats : 0;
    }
    return m->buf;
}

// The row-wise steps between the products (norms, biases, rotary embedding
// and the cache writes, SiLU), split by rows over the pool once a batch has enough
// rows to pay for the dispatch; each row's arithmetic is the same either way.
enum { ROWS_SPLIT_MIN = 4 };

typedef struct {
    int step; // STEP_*
    const rm_llama_hparams *hp;
    const rm_batch *b;
    rm_kvcache *kv;
    int layer;
    const rm_llama_layer *L;
    float *y, *q, *k, *v;
    const float *x, *w, *cs;
} rows_job;

enum { STEP_NORM, STEP_ROPE_KV, STEP_SILU };

static void rows_range(const rows_job *j, int r0, int r1) {
    const rm_llama_hparams *hp = j->hp;
    const size_t d = (size_t)hp->n_embd, qd = (size_t)hp->n_head * hp->head_dim;
    const size_t kvd = (size_t)hp->n_head_kv * hp->head_dim;
    switch (j->step) {
    case STEP_NORM: rm_rmsnorm_forward(j->y + r0 * d, j->x + r0 * d, j->w, r1 - r0, (int)d, hp->rms_eps); break;
    case STEP_ROPE_KV: // and the q, k, v biases first (Qwen2)
        for (int r = r0; r < r1; r++) {
            const float *cs = j->cs + (size_t)r * hp->rope_dim;
            if (j->L->bq) rm_bias_add(j->q + r * qd, j->L->bq, 1, (int)qd);
            if (j->L->bk) rm_bias_add(j->k + r * kvd, j->L->bk, 1, (int)kvd);
            if (j->L->bv) rm_bias_add(j->v + r * kvd, j->L->bv, 1, (int)kvd);
            rm_rope_forward(hp, j->q + r * qd, hp->n_head, cs);
            rm_rope_forward(hp, j->k + r * kvd, hp->n_head_kv, cs);
            rm_kv_put(j->kv, j->layer, j->b->slot[r], j->b->pos[r], j->k + r * kvd, j->v + r * kvd);
        }
        break;
    case STEP_SILU: // y = silu(y) * x, rows of n_ff
        rm_silu_mul_f32(j->y + (size_t)r0 * hp->n_ff, j->y + (size_t)r0 * hp->n_ff, j->x + (size_t)r0 * hp->n_ff,
                        (int64_t)(r1 - r0) * hp->n_ff);
        break;
    }
}

static void rows_task(void *ctx, int ith, int nth) {
    const rows_job *j = ctx;
    long r0, r1;
    rm_split_range(j->b->n, ith, nth, &r0, &r1);
    if (r0 < r1) rows_range(j, (int)r0, (int)r1);
}

static void rows_run(rm_threadpool *tp, const rows_job *j) {
    if (tp && j->b->n >= ROWS_SPLIT_MIN) rm_threadpool_run(tp, rows_task, (void *)j);
    else rows_range(j, 0, j->b->n);
}

static void linear(rm_threadpool *tp, const rm_linear_hook *hook, const rm_batch *b, const rm_llama_layer *L, int layer,
                   rm_linear_id w, const float *x, int64_t ldx, float *y, int64_t ldy, int accumulate) {
    rm_matmul(tp, &L->w[w], x, ldx, y, ldy, b->n, accumulate);
    if (hook && hook->apply) hook->apply(hook->ctx, b, layer, w, x, ldx, y, ldy);
}

// Several linears of one layer reading the same x (Q, K, V; gate, up): one
// matmul job, then each one's hook.
static void linears(rm_threadpool *tp, const rm_linear_hook *hook, const rm_batch *b, const rm_llama_layer *L,
                    int layer, int count, const rm_linear_id *w, const float *x, int64_t ldx, float *const *y,
                    const int64_t *ldy) {
    const rm_tensor *W[RM_MATMUL_MAX];
    for (int i = 0; i < count; i++) W[i] = &L->w[w[i]];
    rm_matmul_many(tp, count, W, x, ldx, y, ldy, b->n, 0);
    for (int i = 0; hook && hook->apply && i < count; i++) hook->apply(hook->ctx, b, layer, w[i], x, ldx, y[i], ldy[i]);
}

int rm_llama_forward(rm_llama *m, rm_kvcache *kv, rm_threadpool *tp, const rm_batch *b, const rm_linear_hook *hook,
                     float *logits) {
    return rm_llama_forward_hidden(m, kv, tp, b, hook, logits, NULL);
}

int rm_llama_forward_hidden(rm_llama *m, rm_kvcache *kv, rm_threadpool *tp, const rm_batch *b,
                            const rm_linear_hook *hook, float *logits, float *hidden) {
    const rm_llama_hparams *hp = &m->hp;
    if (kv->n_slots > m->slot_len_cap) {
        int32_t *nl = realloc(m->slot_len, (size_t)kv->n_slots * sizeof(int32_t));
        if (!nl) return rm_errorf(RM_ENOMEM, "out of memory");
        m->slot_len = nl;
        m->slot_len_cap = kv->n_slots;
    }
    int32_t *len = m->slot_len;
    int rc = check_batch(m, kv, b, len);
    if (rc) return rc;

    int n = b->n, d = hp->n_embd, hd = hp->head_dim, H = hp->n_head, Hk = hp->n_head_kv, f = hp->n_ff;
    size_t qd = (size_t)H * hd, kvd = (size_t)Hk * hd;
    int nth = tp ? rm_threadpool_size(tp) : 1;
    size_t need = (size_t)n * (2 * d + 2 * qd + 2 * kvd + 2 * (size_t)f + (size_t)hp->rope_dim) +
                  rm_attention_scratch(hp, kv, nth, n);
    float *buf = scratch(m, need);
    if (!buf) return rm_errorf(RM_ENOMEM, "forward: cannot allocate scratch for %d rows", n);
    float *x = buf, *xb = x + (size_t)n * d, *q = xb + (size_t)n * d, *att = q + (size_t)n * qd;
    float *k = att + (size_t)n * qd, *v = k + (size_t)n * kvd, *g = v + (size_t)n * kvd;
    float *u = g + (size_t)n * f, *cs = u + (size_t)n * f, *scores = cs + (size_t)n * hp->rope_dim;

    size_t erow = rm_row_size(m->tok_embd.type, d);
    for (int r = 0; r < n; r++) {
        rm_dequantize_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)b->token[r] * erow,
                          x + (size_t)r * d, d);
        rm_rope_angles_freq(m->rope_freq, hp->rope_dim / 2, b->pos[r], cs + (size_t)r * hp->rope_dim);
    }

    static const rm_linear_id qkv_ids[3] = {RM_LIN_Q, RM_LIN_K, RM_LIN_V}, gate_up_ids[2] = {RM_LIN_GATE, RM_LIN_UP};
    for (int l = 0; l < hp->n_layer; l++) {
        const rm_llama_layer *L = &m->layers[l];
        // attention block
        rows_run(tp, &(rows_job){STEP_NORM, hp, b, kv, l, .y = xb, .x = x, .w = L->attn_norm});
        linears(tp, hook, b, L, l, 3, qkv_ids, xb, d, (float *const[]){q, k, v},
                (const int64_t[]){(int64_t)qd, (int64_t)kvd, (int64_t)kvd});
        rows_run(tp, &(rows_job){STEP_ROPE_KV, hp, b, kv, l, L, .q = q, .k = k, .v = v, .cs = cs});
        rm_attention_serve(tp, hp, kv, b, l, q, att, scores);
        linear(tp, hook, b, L, l, RM_LIN_O, att, (int64_t)qd, x, d, 1); // x += att Wo^T
        // feed-forward block
        rows_run(tp, &(rows_job){STEP_NORM, hp, b, kv, l, .y = xb, .x = x, .w = L->ffn_norm});
        linears(tp, hook, b, L, l, 2, gate_up_ids, xb, d, (float *const[]){g, u}, (const int64_t[]){f, f});
        rows_run(tp, &(rows_job){STEP_SILU, hp, b, kv, l, .y = g, .x = u}); // g = silu(g) * u
        linear(tp, hook, b, L, l, RM_LIN_DOWN, g, f, x, d, 1);              // x += h Wdown^T
    }
    memcpy(kv->len, len, (size_t)kv->n_slots * sizeof(int32_t));

    // final norm and classifier for the wanted rows only
    int n_out = 0;
    for (int r = 0; r < n; r++) {
        if (b->want && !b->want[r]) continue;
        rm_rmsnorm_forward(xb + (size_t)n_out * d, x + (size_t)r * d, m->output_norm, 1, d, hp->rms_eps);
        n_out++;
    }
    if (n_out > 0 && hidden) memcpy(hidden, xb, (size_t)n_out * d * sizeof(float));
    if (n_out > 0 && logits) rm_matmul(tp, &m->output, xb, d, logits, hp->n_vocab, n_out, 0);
    return RM_OK;
}
