// hfdir.c — Hugging Face model directory -> GGUF (see hfdir.h).
//
// The conversion is planned first (every tensor found, type- and
// shape-checked against config.json), then written by the GGUF writer, which
// asks for each tensor's bytes in turn (gguf_add_tensor_fill), so memory
// stays at one tensor whatever the model size.
#define _GNU_SOURCE
#include "format/hfdir.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/gguf.h"
#include "format/safetensors.h"
#include "tensor/tensor.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HF_MAX_DIM (1 << 30) // bound on any hyperparameter, keeps products in int64

int64_t hfdir_qk_src_row(int64_t r, int64_t head_dim) {
    // GGUF row 2i+j of a head holds HF row i + j*d/2 (j = 0, 1).
    int64_t head = r / head_dim, k = r % head_dim;
    return head * head_dim + k / 2 + (k % 2) * (head_dim / 2);
}

// ---------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------

// Integer member in [1, HF_MAX_DIM]; dflt < 0 means required.
static int cfg_int(const char *path, const rm_json *j, const char *key, int64_t dflt, int64_t *out) {
    const rm_json *v = rm_json_get(j, key);
    if (!v || v->type == RM_JSON_NULL) {
        if (dflt < 0) return rm_errorf(RM_EFORMAT, "%s: missing %s", path, key);
        *out = dflt;
        return RM_OK;
    }
    int64_t x = rm_json_get_int(j, key, -1);
    if (x < 1 || x > HF_MAX_DIM) return rm_errorf(RM_EFORMAT, "%s: %s must be a positive integer", path, key);
    *out = x;
    return RM_OK;
}

static int cfg_num(const char *path, const rm_json *j, const char *key, double dflt, double *out) {
    const rm_json *v = rm_json_get(j, key);
    if (!v || v->type == RM_JSON_NULL) {
        if (dflt < 0) return rm_errorf(RM_EFORMAT, "%s: missing %s", path, key);
        *out = dflt;
        return RM_OK;
    }
    if (v->type != RM_JSON_NUMBER || !(v->num > 0))
        return rm_errorf(RM_EFORMAT, "%s: %s must be a positive number", path, key);
    *out = v->num;
    return RM_OK;
}

static int cfg_rope_scaling(const char *path, const rm_json *j, hf_config *c) {
    const rm_json *rs = rm_json_get(j, "rope_scaling");
    c->rope_scaling[0] = 0;
    if (!rs || rs->type == RM_JSON_NULL) return RM_OK;
    if (rs->type != RM_JSON_OBJECT) return rm_errorf(RM_EFORMAT, "%s: rope_scaling is not an object", path);
    const char *type = rm_json_get_str(rs, "rope_type", rm_json_get_str(rs, "type", NULL));
    if (!type) return rm_errorf(RM_EFORMAT, "%s: rope_scaling has no type", path);
    if (strcmp(type, "default") == 0) return RM_OK;
    int rc;
    if (strcmp(type, "linear") == 0) {
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "linear");
        return cfg_num(path, rs, "factor", -1, &c->rope_factor);
    }
    if (strcmp(type, "llama3") == 0) {
        snprintf(c->rope_scaling, sizeof c->rope_scaling, "llama3");
        if ((rc = cfg_num(path, rs, "factor", -1, &c->rope_factor)) != RM_OK) return rc;
        if ((rc = cfg_num(path, rs, "low_freq_factor", 1.0, &c->rope_low_freq_factor)) != RM_OK) return rc;
        if ((rc = cfg_num(path, rs, "high_freq_factor", 4.0, &c->rope_high_freq_factor)) != RM_OK) return rc;
        return cfg_int(path, rs, "original_max_position_embeddings", -1, &c->rope_orig_ctx);
    }
    return rm_errorf(RM_EUNSUPPORTED, "%s: rope_scaling type '%s' is not supported (linear, llama3)", path, type);
}

static const struct {
    const char *hf, *model_type, *arch;
} hf_archs[] = {
    {"LlamaForCausalLM", "llama", "llama"},
    {"MistralForCausalLM", "mistral", "llama"},
    {"Qwen2ForCausalLM", "qwen2", "qwen2"},
};

static int cfg_arch(const char *path, const rm_json *j, hf_config *c) {
    const rm_json *archs = rm_json_get(j, "architectures");
    const char *a = NULL, *mt = rm_json_get_str(j, "model_type", NULL);
    if (archs && archs->type == RM_JSON_ARRAY && archs->n > 0 && archs->items[0].type == RM_JSON_STRING)
        a = archs->items[0].str;
    for (size_t i = 0; i < sizeof hf_archs / sizeof hf_archs[0]; i++)
        if ((a && strcmp(a, hf_archs[i].hf) == 0) || (!a && mt && strcmp(mt, hf_archs[i].model_type) == 0)) {
            snprintf(c->hf_arch, sizeof c->hf_arch, "%s", hf_archs[i].hf);
            snprintf(c->arch, sizeof c->arch, "%s", hf_archs[i].arch);
            return RM_OK;
        }
    return rm_errorf(RM_EUNSUPPORTED,
                     "%s: architecture %s is not supported (LlamaForCausalLM, MistralForCausalLM, "
                     "Qwen2ForCausalLM)",
                     path,
                     a    ? a
                     : mt ? mt
                          : "(none given)");
}

int hfdir_read_config(const char *dir, hf_config *c) {
    memset(c, 0, sizeof *c);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!rm_file_exists(path))
        return rm_errorf(RM_ENOTFOUND, "%s: not found (not a Hugging Face model directory?)", path);
    rm_json *j;
    int rc = rm_json_parse_file(path, &j);
    if (rc != RM_OK) return rc;
    if (j->type != RM_JSON_OBJECT) rc = rm_errorf(RM_EFORMAT, "%s: not a JSON object", path);
    if (rc == RM_OK) rc = cfg_arch(path, j, c);
    if (rc == RM_OK) rc = cfg_int(path, j, "vocab_size", -1, &c->vocab_size);
    if (rc == RM_OK) rc = cfg_int(path, j, "hidden_size", -1, &c->hidden_size);
    if (rc == RM_OK) rc = cfg_int(path, j, "intermediate_size", -1, &c->intermediate_size);
    if (rc == RM_OK) rc = cfg_int(path, j, "num_hidden_layers", -1, &c->n_layers);
    if (rc == RM_OK) rc = cfg_int(path, j, "num_attention_heads", -1, &c->n_heads);
    if (rc == RM_OK) rc = cfg_int(path, j, "num_key_value_heads", c->n_heads, &c->n_kv_heads);
    if (rc == RM_OK) rc = cfg_int(path, j, "max_position_embeddings", 2048, &c->max_pos);
    if (rc == RM_OK) rc = cfg_num(path, j, "rms_norm_eps", 1e-6, &c->rms_eps);
    if (rc == RM_OK) rc = cfg_num(path, j, "rope_theta", 10000.0, &c->rope_theta);
    if (rc == RM_OK) rc = cfg_int(path, j, "head_dim", 0, &c->head_dim);
    if (rc == RM_OK) rc = cfg_rope_scaling(path, j, c);
    if (rc == RM_OK) {
        c->tie_embeddings = rm_json_get_bool(j, "tie_word_embeddings", 0);
        const char *nm = rm_json_get_str(j, "_name_or_path", NULL);
        if (!nm || !*nm) {
            nm = strrchr(dir, '/');
            nm = nm && nm[1] ? nm + 1 : dir;
        }
        snprintf(c->name, sizeof c->name, "%s", nm);
        if (c->head_dim == 0) {
            if (c->hidden_size % c->n_heads != 0)
                rc = rm_errorf(RM_EFORMAT, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path,
                               (long long)c->hidden_size, (long long)c->n_heads);
            c->head_dim = c->hidden_size / c->n_heads;
        } else {
            c->head_dim_explicit = c->head_dim * c->n_heads != c->hidden_size;
        }
    }
    if (rc == RM_OK && c->n_heads % c->n_kv_heads != 0)
        rc = rm_errorf(RM_EFORMAT, "%s: num_attention_heads %lld is not a multiple of num_key_value_heads %lld", path,
                       (long long)c->n_heads, (long long)c->n_kv_heads);
    if (rc == RM_OK && c->head_dim % 2 != 0)
        rc = rm_errorf(RM_EFORMAT, "%s: head dimension %lld is odd (RoPE needs pairs)", path, (long long)c->head_dim);
    if (rc == RM_OK && c->n_layers > 4096)
        rc = rm_errorf(RM_EFORMAT, "%s: num_hidden_layers %lld is implausible", path, (long long)c->n_layers);
    rm_json_free(j);
    return rc;
}

// ---------------------------------------------------------------------------
// Weights: one or more safetensors files
// ---------------------------------------------------------------------------

typedef struct hf_weights {
    st_file *files;
    size_t n_files;
} hf_weights;

static void weights_close(hf_weights *w) {
    for (size_t i = 0; i < w->n_files; i++) st_close(&w->files[i]);
    free(w->files);
    memset(w, 0, sizeof *w);
}

static int weights_add(hf_weights *w, const char *dir, const char *file, const char *listed_in) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (!rm_file_exists(path)) {
        if (listed_in) return rm_errorf(RM_ENOTFOUND, "%s: shard %s is listed in %s but missing", dir, file, listed_in);
        return rm_errorf(RM_ENOTFOUND, "%s: not found", path);
    }
    st_file *nf = realloc(w->files, (w->n_files + 1) * sizeof *nf);
    if (!nf) return rm_errorf(RM_ENOMEM, "out of memory");
    w->files = nf;
    int rc = st_open(&w->files[w->n_files], path);
    if (rc == RM_OK) w->n_files++;
    return rc;
}

static int weights_open(hf_weights *w, const char *dir) {
    memset(w, 0, sizeof *w);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!rm_file_exists(path)) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (!rm_file_exists(path))
            return rm_errorf(RM_ENOTFOUND, "%s: no model.safetensors or model.safetensors.index.json", dir);
        return weights_add(w, dir, "model.safetensors", NULL);
    }
    rm_json *j;
    int rc = rm_json_parse_file(path, &j);
    if (rc != RM_OK) return rc;
    const rm_json *map = rm_json_get(j, "weight_map");
    if (!map || map->type != RM_JSON_OBJECT) rc = rm_errorf(RM_EFORMAT, "%s: no weight_map object", path);
    for (size_t i = 0; rc == RM_OK && i < map->n; i++) {
        const rm_json *v = &map->items[i];
        if (v->type != RM_JSON_STRING || !v->len || strchr(v->str, '/') || v->str[0] == '.') {
            rc = rm_errorf(RM_EFORMAT, "%s: weight_map entry %s is not a plain file name", path, map->keys[i]);
            break;
        }
        int seen = 0; // each shard once, in first-mention order
        for (size_t k = 0; k < i && !seen; k++) seen = strcmp(map->items[k].str, v->str) == 0;
        if (!seen) rc = weights_add(w, dir, v->str, "model.safetensors.index.json");
    }
    rm_json_free(j);
    if (rc != RM_OK) weights_close(w);
    return rc;
}

static const st_tensor *weights_find(const hf_weights *w, const char *name) {
    for (size_t i = 0; i < w->n_files; i++) {
        const st_tensor *t = st_find(&w->files[i], name);
        if (t) return t;
    }
    return NULL;
}

// ---------------------------------------------------------------------------
// Conversion plan
// ---------------------------------------------------------------------------

typedef struct hf_progress {
    void (*fn)(void *, int, int);
    void *ctx;
    int done, total;
} hf_progress;

typedef struct hf_job {
    const st_tensor *src;
    rm_type type;       // output type
    int64_t rows, cols; // output: rows of cols elements
    int64_t permute_hd; // head_dim of a Q/K row permutation, 0 for none
    hf_progress *progress;
} hf_job;

// The output type a stored dtype keeps when no out_type is asked for.
static int keep_type(st_dtype d) { return d == ST_F16 ? RM_TYPE_F16 : d == ST_BF16 ? RM_TYPE_BF16 : RM_TYPE_F32; }

static int fill_tensor(void *vctx, void *dst, size_t nbytes) {
    hf_job *j = vctx;
    size_t out_row = rm_row_size(j->type, j->cols), in_es = st_dtype_size(j->src->dtype);
    if (out_row * (size_t)j->rows != nbytes) return rm_errorf(RM_EINVAL, "%s: size mismatch", j->src->name);
    int same = keep_type(j->src->dtype) == (int)j->type && j->src->dtype != ST_F64;
    float *buf = same ? NULL : malloc((size_t)j->cols * sizeof *buf);
    if (!same && !buf) return rm_errorf(RM_ENOMEM, "%s: out of memory", j->src->name);
    int rc = RM_OK;
    for (int64_t r = 0; r < j->rows && rc == RM_OK; r++) {
        int64_t sr = j->permute_hd ? hfdir_qk_src_row(r, j->permute_hd) : r;
        uint8_t *d = (uint8_t *)dst + (size_t)r * out_row;
        if (same) {
            memcpy(d, (const uint8_t *)j->src->data + (size_t)sr * (size_t)j->cols * in_es, out_row);
            continue;
        }
        rc = st_to_f32_range(j->src, (size_t)sr * (size_t)j->cols, (size_t)j->cols, buf);
        if (rc == RM_OK) rm_quantize_row(j->type, buf, d, j->cols);
    }
    free(buf);
    if (rc == RM_OK && j->progress->fn) j->progress->fn(j->progress->ctx, ++j->progress->done, j->progress->total);
    return rc;
}

static void fmt_shape(char *buf, size_t cap, int n, const int64_t *s) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

typedef struct hf_plan {
    const hf_config *cfg;
    const hf_weights *wts;
    const char *dir;
    const rm_ftype *ft; // NULL: float weights keep their type
    gguf_writer *w;
    hf_job *jobs;
    size_t n_jobs, cap_jobs;
    hf_progress progress;
} hf_plan;

// Adds HF tensor `hf` as GGUF tensor `gg` of shape (HF order) [d0] or
// [d0, d1]. optional: absent is fine. permute_hd: Q/K row permutation.
static int plan_tensor(hf_plan *p, const char *hf, const char *gg, int64_t d0, int64_t d1, int64_t permute_hd,
                       int optional) {
    const st_tensor *t = weights_find(p->wts, hf);
    if (!t) {
        if (optional) return RM_OK;
        return rm_errorf(RM_ENOTFOUND, "%s: tensor %s is missing", p->dir, hf);
    }
    int nd = d1 ? 2 : 1;
    int64_t want[2] = {d0, d1};
    if (t->n_dims != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1)) {
        char ws[64], gs[160];
        fmt_shape(ws, sizeof ws, nd, want);
        fmt_shape(gs, sizeof gs, t->n_dims, t->shape);
        return rm_errorf(RM_EMISMATCH, "%s: tensor %s has shape %s, config.json implies %s", p->dir, hf, gs, ws);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s has dtype %s (want a float type)", p->dir, hf,
                         st_dtype_name(t->dtype));
    if (p->n_jobs == p->cap_jobs) {
        // Jobs are referenced by the writer: allocate all of them up front.
        return rm_errorf(RM_EINVAL, "hfdir: internal error: job table full");
    }
    hf_job *j = &p->jobs[p->n_jobs];
    j->src = t;
    // A permuted bias is handled as d0 rows of one element.
    j->rows = nd == 2 || permute_hd ? d0 : 1;
    j->cols = nd == 2 ? d1 : permute_hd ? 1 : d0;
    j->permute_hd = permute_hd;
    j->progress = &p->progress;
    if (nd == 1) j->type = RM_TYPE_F32;
    else if (!p->ft) j->type = (rm_type)keep_type(t->dtype);
    else {
        rm_type want = rm_ftype_tensor_type(*p->ft, gg, (int)p->cfg->n_layers, p->cfg->tie_embeddings);
        j->type = rm_ftype_row_type(want, j->cols);
    }
    int64_t ne[2] = {nd == 2 ? d1 : d0, d0};
    int rc = gguf_add_tensor_fill(p->w, gg, j->type, nd, ne, fill_tensor, j);
    if (rc == RM_OK) p->n_jobs++;
    return rc;
}

static int plan_layer(hf_plan *p, int64_t L) {
    const hf_config *c = p->cfg;
    int64_t H = c->hidden_size, q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int64_t perm = strcmp(c->arch, "llama") == 0 ? c->head_dim : 0;
    int qwen = strcmp(c->arch, "qwen2") == 0;
    static const struct {
        const char *hf, *gg;
        int kind;
    } parts[] = {
        // kind: 0 norm, 1 q, 2 k, 3 v, 4 o, 5 gate/up, 6 down, 7 q bias, 8 k bias, 9 v bias, 10 o bias
        {"input_layernorm.weight", "attn_norm.weight", 0},    {"self_attn.q_proj.weight", "attn_q.weight", 1},
        {"self_attn.k_proj.weight", "attn_k.weight", 2},      {"self_attn.v_proj.weight", "attn_v.weight", 3},
        {"self_attn.o_proj.weight", "attn_output.weight", 4}, {"self_attn.q_proj.bias", "attn_q.bias", 7},
        {"self_attn.k_proj.bias", "attn_k.bias", 8},          {"self_attn.v_proj.bias", "attn_v.bias", 9},
        {"self_attn.o_proj.bias", "attn_output.bias", 10},    {"post_attention_layernorm.weight", "ffn_norm.weight", 0},
        {"mlp.gate_proj.weight", "ffn_gate.weight", 5},       {"mlp.up_proj.weight", "ffn_up.weight", 5},
        {"mlp.down_proj.weight", "ffn_down.weight", 6},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char hf[160], gg[96];
        snprintf(hf, sizeof hf, "model.layers.%lld.%s", (long long)L, parts[i].hf);
        snprintf(gg, sizeof gg, "blk.%lld.%s", (long long)L, parts[i].gg);
        int64_t d0 = 0, d1 = 0, pm = 0;
        int optional = 0;
        switch (parts[i].kind) {
        case 0: d0 = H; break;
        case 1: d0 = q_dim, d1 = H, pm = perm; break;
        case 2: d0 = kv_dim, d1 = H, pm = perm; break;
        case 3: d0 = kv_dim, d1 = H; break;
        case 4: d0 = H, d1 = q_dim; break;
        case 5: d0 = c->intermediate_size, d1 = H; break;
        case 6: d0 = H, d1 = c->intermediate_size; break;
        case 7: d0 = q_dim, pm = perm, optional = !qwen; break;  // Qwen2 has Q/K/V biases;
        case 8: d0 = kv_dim, pm = perm, optional = !qwen; break; // Llama only with attention_bias
        case 9: d0 = kv_dim, optional = !qwen; break;
        case 10: d0 = H, optional = 1; break;
        }
        int rc = plan_tensor(p, hf, gg, d0, d1, pm, optional);
        if (rc != RM_OK) return rc;
    }
    return RM_OK;
}

static int set_arch_u32(gguf_writer *w, const char *arch, const char *key, int64_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_set_u32(w, k, (uint32_t)v);
}

static int set_arch_f32(gguf_writer *w, const char *arch, const char *key, double v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_set_f32(w, k, (float)v);
}

static int write_metadata(gguf_writer *w, const hf_config *c, const char *dir, const rm_ftype *ft, int tok_path) {
    const char *a = c->arch;
    int rc = 0;
    rc |= gguf_set_str(w, "general.architecture", a);
    rc |= gguf_set_str(w, "general.name", c->name);
    if (ft && rm_ftype_file_type_id(*ft) >= 0) rc |= gguf_set_u32(w, "general.file_type", (uint32_t)rm_ftype_file_type_id(*ft));
    rc |= set_arch_u32(w, a, "context_length", c->max_pos);
    rc |= set_arch_u32(w, a, "embedding_length", c->hidden_size);
    rc |= set_arch_u32(w, a, "block_count", c->n_layers);
    rc |= set_arch_u32(w, a, "feed_forward_length", c->intermediate_size);
    rc |= set_arch_u32(w, a, "attention.head_count", c->n_heads);
    rc |= set_arch_u32(w, a, "attention.head_count_kv", c->n_kv_heads);
    rc |= set_arch_f32(w, a, "attention.layer_norm_rms_epsilon", c->rms_eps);
    rc |= set_arch_f32(w, a, "rope.freq_base", c->rope_theta);
    rc |= set_arch_u32(w, a, "rope.dimension_count", c->head_dim);
    rc |= set_arch_u32(w, a, "vocab_size", c->vocab_size);
    if (c->head_dim_explicit) {
        rc |= set_arch_u32(w, a, "attention.key_length", c->head_dim);
        rc |= set_arch_u32(w, a, "attention.value_length", c->head_dim);
    }
    if (c->rope_scaling[0]) {
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", a);
        rc |= gguf_set_str(w, k, c->rope_scaling);
        rc |= set_arch_f32(w, a, "rope.scaling.factor", c->rope_factor);
        if (strcmp(c->rope_scaling, "llama3") == 0) {
            rc |= set_arch_f32(w, a, "rope.scaling.low_freq_factor", c->rope_low_freq_factor);
            rc |= set_arch_f32(w, a, "rope.scaling.high_freq_factor", c->rope_high_freq_factor);
            rc |= set_arch_u32(w, a, "rope.scaling.original_context_length", c->rope_orig_ctx);
        }
    }
    char tok[4096];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
    if (tok_path && rm_file_exists(tok)) {
        char *abs = realpath(tok, NULL);
        rc |= gguf_set_str(w, "ramole.hf_tokenizer_path", abs ? abs : tok);
        free(abs);
    }
    return rc ? rm_error_prefix(RM_ENOMEM, "%s: writing metadata", dir) : RM_OK;
}

int hfdir_convert_to_gguf(const char *dir, const char *out_path, int out_type, void (*progress)(void *, int, int),
                          void *ctx) {
    rm_ftype ft = {(rm_type)out_type, 0};
    return hfdir_convert_to_gguf_ex(dir, out_path, out_type < 0 ? NULL : &ft, progress, ctx, NULL, NULL);
}

int hfdir_convert_to_gguf_ex(const char *dir, const char *out_path, const rm_ftype *ft,
                             void (*progress)(void *, int, int), void *ctx, int (*add_meta)(void *mctx, gguf_writer *w),
                             void *mctx) {
    if (!dir || !out_path) return rm_errorf(RM_EINVAL, "hfdir_convert_to_gguf: NULL argument");
    if (ft && !rm_type_supported(ft->type))
        return rm_errorf(RM_EINVAL, "hfdir_convert_to_gguf: unsupported output type %d", (int)ft->type);
    hf_config cfg;
    int rc = hfdir_read_config(dir, &cfg);
    if (rc != RM_OK) return rc;
    hf_weights wts;
    if ((rc = weights_open(&wts, dir)) != RM_OK) return rc;
    hf_plan p = {.cfg = &cfg, .wts = &wts, .dir = dir, .ft = ft};
    p.w = gguf_writer_new();
    p.cap_jobs = (size_t)cfg.n_layers * 13 + 3;
    p.jobs = calloc(p.cap_jobs, sizeof *p.jobs);
    if (!p.w || !p.jobs) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (rc == RM_OK) rc = write_metadata(p.w, &cfg, dir, ft, add_meta == NULL);
    if (rc == RM_OK && add_meta) rc = add_meta(mctx, p.w);
    if (rc == RM_OK)
        rc = plan_tensor(&p, "model.embed_tokens.weight", "token_embd.weight", cfg.vocab_size, cfg.hidden_size, 0, 0);
    for (int64_t L = 0; L < cfg.n_layers && rc == RM_OK; L++) rc = plan_layer(&p, L);
    if (rc == RM_OK) rc = plan_tensor(&p, "model.norm.weight", "output_norm.weight", cfg.hidden_size, 0, 0, 0);
    if (rc == RM_OK && !cfg.tie_embeddings)
        rc = plan_tensor(&p, "lm_head.weight", "output.weight", cfg.vocab_size, cfg.hidden_size, 0, 1);
    if (rc == RM_OK) {
        p.progress = (hf_progress){progress, ctx, 0, (int)p.n_jobs};
        rc = gguf_write(p.w, out_path);
    }
    gguf_writer_free(p.w);
    free(p.jobs);
    weights_close(&wts);
    return rc;
}
