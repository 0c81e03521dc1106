// gguf_lora.c — llama.cpp's GGUF LoRA format, and rm_lora_load.
//
// Keys: general.type = "adapter", adapter.type = "lora", adapter.lora.alpha
// (scale = alpha / r; alpha 0 means scale 1), general.architecture.
// Tensors: blk.N.<attn_q|...|ffn_down>.weight.lora_a with ne = [in, r] and
// .lora_b with ne = [r, out] (rows of A, rows of B). For llama files B's Q/K
// rows are in GGUF (permuted) RoPE order, as llama.cpp's converter writes them.
#include "lora/adapter.h"
#include "base/err.h"
#include "base/file.h"
#include "format/gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int arch_wants_permuted(const char *arch) { return strcmp(arch, "qwen2") != 0; }

// "blk.N.attn_q.weight.lora_a" -> (N, RM_LIN_Q, 0)
static int parse_name(const char *path, const char *name, int *layer, int *which, int *is_b) {
    size_t n = strlen(name);
    if (n > 7 && (!strcmp(name + n - 7, ".lora_a") || !strcmp(name + n - 7, ".lora_b"))) {
        if (!strncmp(name, "token_embd.", 11))
            return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: embedding LoRAs are not supported", path, name);
        if (!strncmp(name, "output.", 7))
            return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: LoRA on the output layer is not supported", path, name);
    }
    if (strncmp(name, "blk.", 4)) goto bad;
    char *end;
    long l = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || l < 0 || l >= 4096) goto bad;
    const char *s = end + 1;
    for (int w = 0; w < RM_LIN_COUNT; w++) {
        size_t k = strlen(rm_linear_gguf[w]);
        if (strncmp(s, rm_linear_gguf[w], k) || strncmp(s + k, ".weight.lora_", 13)) continue;
        const char *ab = s + k + 13;
        if (strcmp(ab, "a") && strcmp(ab, "b")) goto bad;
        *layer = (int)l;
        *which = w;
        *is_b = ab[0] == 'b';
        return RM_OK;
    }
bad:
    return rm_errorf(RM_EFORMAT, "%s: unexpected tensor %s (want blk.N.<linear>.weight.lora_a/lora_b)", path, name);
}

// Reads a 2-D tensor of any supported type as f32 rows [ne1][ne0].
static int read_f32(const gguf_file *g, const gguf_tensor_info *ti, float **out) {
    rm_tensor t;
    int rc = gguf_tensor_view(g, ti, &t);
    if (rc) return rc;
    size_t row = rm_row_size(t.type, t.ne[0]);
    *out = malloc((size_t)t.ne[0] * (size_t)t.ne[1] * sizeof(float));
    if (!*out) return rm_errorf(RM_ENOMEM, "out of memory");
    for (int64_t r = 0; r < t.ne[1]; r++)
        rm_dequantize_row(t.type, (const uint8_t *)t.data + (size_t)r * row, *out + (size_t)r * t.ne[0], t.ne[0]);
    char name[160];
    gguf_str_copy(ti->name, name, sizeof name);
    rc = rm_lora_check_finite(*out, t.ne[0] * t.ne[1], g->path, name);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

// The module's declared rank and shape, checked (against m when not NULL)
// from the tensor infos alone: nothing is read or allocated.
static int module_shape(const gguf_file *g, const gguf_tensor_info *ta, const gguf_tensor_info *tb, int l, int w,
                        const rm_llama *m, int64_t *r, int64_t *in, int64_t *out) {
    const char *path = g->path;
    if (ta->n_dims > 2 || tb->n_dims > 2 || ta->ne[2] != 1 || tb->ne[2] != 1 || ta->ne[3] != 1 || tb->ne[3] != 1)
        return rm_errorf(RM_EFORMAT, "%s: blk.%d.%s: lora_a and lora_b must be 2-D", path, l, rm_linear_gguf[w]);
    *in = ta->ne[0], *r = ta->ne[1], *out = tb->ne[1];
    if (tb->ne[0] != *r)
        return rm_errorf(RM_EFORMAT, "%s: blk.%d.%s: lora_a [%lld, %lld] and lora_b [%lld, %lld] do not share a rank",
                         path, l, rm_linear_gguf[w], (long long)ta->ne[0], (long long)ta->ne[1], (long long)tb->ne[0],
                         (long long)tb->ne[1]);
    return rm_lora_check_shape(m, path, l, w, *r, *in, *out);
}

static int load_module(rm_lora_mod *mod, const gguf_file *g, const gguf_tensor_info *ta, const gguf_tensor_info *tb,
                       float alpha, int l, int w) {
    int64_t r, in, out;
    int rc = module_shape(g, ta, tb, l, w, NULL, &r, &in, &out);
    if (!rc) rc = rm_lora_mod_alloc(mod, (int)r, in, out, alpha != 0.0f ? alpha / (float)r : 1.0f);
    if (rc) return rc;
    float *fa = NULL, *fb = NULL;
    if ((rc = read_f32(g, ta, &fa)) || (rc = read_f32(g, tb, &fb))) goto done;
    memcpy(mod->A, fa, (size_t)r * (size_t)in * sizeof(float));
    for (int64_t j = 0; j < r; j++)
        for (int64_t o = 0; o < out; o++) mod->Bt[j * out + o] = fb[o * r + j];
done:
    free(fa);
    free(fb);
    return rc;
}

int rm_lora_load_gguf(rm_lora **out, const char *path) { return rm_lora_load_gguf_checked(out, path, NULL); }

int rm_lora_load_gguf_checked(rm_lora **out, const char *path, const rm_llama *m) {
    *out = NULL;
    gguf_file g;
    int rc = gguf_open(&g, path);
    if (rc) return rc;
    gguf_str s;
    char buf[64];
    if (gguf_get_str(&g, "general.type", &s) == RM_OK && gguf_str_eq(s, "ramole.router"))
        rc = rm_errorf(RM_EFORMAT, "%s: is a ramole router, not an adapter (give it with --router)", path);
    else if (gguf_get_str(&g, "general.type", &s) == RM_OK && !gguf_str_eq(s, "adapter")) {
        gguf_str_copy(s, buf, sizeof buf);
        rc = rm_errorf(RM_EFORMAT, "%s: general.type is '%s': not an adapter", path, buf);
    } else {
        rc = rm_lora_read_gguf(out, &g, m);
    }
    gguf_close(&g);
    return rc;
}

int rm_lora_read_gguf(rm_lora **out, const struct gguf_file *gf, const rm_llama *m) {
    *out = NULL;
    const gguf_file g = *gf;
    const char *path = g.path;
    int rc = RM_OK;
    rm_lora *a = NULL;
    const gguf_tensor_info **pairs = NULL;
    gguf_str s;
    char buf[64];
    if (gguf_get_str(&g, "adapter.type", &s) != RM_OK) {
        rc = rm_errorf(RM_EFORMAT, "%s: no adapter.type: not an adapter (a model file?)", path);
        goto done;
    }
    if (!gguf_str_eq(s, "lora")) {
        gguf_str_copy(s, buf, sizeof buf);
        rc = rm_errorf(RM_EUNSUPPORTED, "%s: adapter.type '%s' is not supported (only lora)", path, buf);
        goto done;
    }
    float alpha = 0.0f;
    rc = gguf_get_f32(&g, "adapter.lora.alpha", &alpha);
    if (rc && rc != RM_ENOTFOUND) goto done;
    rc = RM_OK;
    int n_layer = 0;
    pairs = calloc((size_t)4096 * RM_LIN_COUNT * 2, sizeof *pairs);
    if (!pairs) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        char name[160];
        int l = 0, w = 0, is_b = 0;
        gguf_str_copy(g.tensors[i].name, name, sizeof name);
        if ((rc = parse_name(path, name, &l, &w, &is_b))) goto done;
        const gguf_tensor_info **slot = &pairs[((size_t)l * RM_LIN_COUNT + w) * 2 + is_b];
        if (*slot) {
            rc = rm_errorf(RM_EFORMAT, "%s: tensor %s appears twice", path, name);
            goto done;
        }
        *slot = &g.tensors[i];
        if (l + 1 > n_layer) n_layer = l + 1;
    }
    if (!n_layer) {
        rc = rm_errorf(RM_EFORMAT, "%s: no LoRA tensors", path);
        goto done;
    }
    // Every module's declared shape is checked before any tensor is read.
    for (int i = 0; i < n_layer * RM_LIN_COUNT; i++) {
        const gguf_tensor_info *ta = pairs[(size_t)i * 2], *tb = pairs[(size_t)i * 2 + 1];
        int64_t r, in, o;
        if (ta && tb && (rc = module_shape(&g, ta, tb, i / RM_LIN_COUNT, i % RM_LIN_COUNT, m, &r, &in, &o))) goto done;
    }
    if ((rc = rm_lora_new(&a, n_layer))) goto done;
    if (gguf_get_str(&g, "general.architecture", &s) == RM_OK) gguf_str_copy(s, a->arch, sizeof a->arch);
    for (int i = 0; i < n_layer * RM_LIN_COUNT; i++) {
        const gguf_tensor_info *ta = pairs[(size_t)i * 2], *tb = pairs[(size_t)i * 2 + 1];
        if (!ta && !tb) continue;
        int l = i / RM_LIN_COUNT, w = i % RM_LIN_COUNT;
        if (!ta || !tb) {
            rc = rm_errorf(RM_EFORMAT, "%s: blk.%d.%s has lora_%s but not lora_%s", path, l, rm_linear_gguf[w],
                           ta ? "a" : "b", ta ? "b" : "a");
            goto done;
        }
        if ((rc = load_module(&a->mods[i], &g, ta, tb, alpha, l, w))) goto done;
        if (!a->rank) a->rank = a->mods[i].r;
    }
    free(a->path);
    if (!(a->path = strdup(path))) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    a->alpha = alpha;
    a->qk_permuted = arch_wants_permuted(a->arch);
    a->format = "gguf";
done:
    if (rc) rm_lora_free(a);
    else *out = a;
    free(pairs);
    return rc;
}

int rm_lora_save_gguf(const rm_lora *a, const char *path) { return rm_lora_save_gguf_with(a, path, NULL, NULL); }

int rm_lora_save_gguf_with(const rm_lora *a, const char *path, int (*meta)(struct gguf_writer *, const void *),
                           const void *ctx) {
    const rm_lora_mod *first = NULL;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT && !first; i++)
        if (a->mods[i].r) first = &a->mods[i];
    if (!first) return rm_errorf(RM_EINVAL, "%s: adapter has no LoRA weights", a->path);
    const char *arch = a->arch[0] ? a->arch : "llama";
    int permuted = arch_wants_permuted(arch);
    // One alpha for the file; modules whose scale it cannot express carry the
    // ratio in B.
    float alpha = first->scale * (float)first->r;
    int rc = RM_OK;
    gguf_writer *gw = gguf_writer_new();
    float **bufs = calloc((size_t)a->n_layer * RM_LIN_COUNT, sizeof *bufs);
    if (!gw || !bufs) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = gguf_set_str(gw, "general.architecture", arch)) || (rc = gguf_set_str(gw, "general.type", "adapter")) ||
        (rc = gguf_set_str(gw, "adapter.type", "lora")) || (rc = gguf_set_f32(gw, "adapter.lora.alpha", alpha)) ||
        (meta && (rc = meta(gw, ctx))))
        goto done;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *m = &a->mods[i];
        if (!m->r) continue;
        float implied = alpha / (float)m->r;
        float factor = m->scale == implied ? 1.0f : m->scale / implied;
        if ((rc = rm_lora_export_b(a, i, permuted, factor, &bufs[i]))) goto done;
        char name[96];
        int64_t na[2] = {m->in, m->r}, nb[2] = {m->r, m->out};
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_a", i / RM_LIN_COUNT, rm_linear_gguf[i % RM_LIN_COUNT]);
        if ((rc = gguf_add_tensor(gw, name, RM_TYPE_F32, 2, na, m->A))) goto done;
        snprintf(name, sizeof name, "blk.%d.%s.weight.lora_b", i / RM_LIN_COUNT, rm_linear_gguf[i % RM_LIN_COUNT]);
        if ((rc = gguf_add_tensor(gw, name, RM_TYPE_F32, 2, nb, bufs[i]))) goto done;
    }
    rc = gguf_write(gw, path);
done:
    if (bufs)
        for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) free(bufs[i]);
    free(bufs);
    gguf_writer_free(gw);
    return rc;
}

// ---------------------------------------------------------------- dispatch

int rm_lora_load(rm_lora **out, const char *path) { return rm_lora_load_checked(out, path, NULL); }

int rm_lora_load_checked(rm_lora **out, const char *path, const rm_llama *m) {
    *out = NULL;
    if (rm_is_dir(path)) return rm_lora_load_peft_checked(out, path, m);
    size_t n = strlen(path);
    if (n >= 12 && !strcmp(path + n - 12, ".safetensors")) return rm_lora_load_peft_checked(out, path, m);
    char magic[4] = {0};
    int got = rm_read_head(path, magic, 4);
    if (got < 0) return got;
    if (got == 4 && !memcmp(magic, "GGUF", 4)) return rm_lora_load_gguf_checked(out, path, m);
    return rm_errorf(RM_EFORMAT, "%s: neither a PEFT adapter directory nor a GGUF LoRA file", path);
}
