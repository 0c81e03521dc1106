// router.c — RouterLoRA files (see router.h).
#include "lora/router.h"
#include "base/err.h"
#include "format/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// FNV-1a over n bytes, continuing from h.
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static const char *arch_name(const rm_llama *m) { return m->hp.arch == RM_ARCH_QWEN2 ? "qwen2" : "llama"; }

uint64_t rm_router_base_fingerprint(const rm_llama *m) {
    const rm_llama_hparams *hp = &m->hp;
    int shape[5] = {hp->n_vocab, hp->n_embd, hp->n_layer, hp->n_ff, (int)hp->arch};
    uint64_t h = fnv(0xcbf29ce484222325ull, shape, sizeof shape);
    // the embedding table's first MiB as stored in the file (a tied table
    // repacked for this CPU's kernels is unpacked row by row)
    const size_t row = rm_row_size(m->tok_embd.type, hp->n_embd), emb = row * (size_t)hp->n_vocab;
    size_t left = emb < (1u << 20) ? emb : (1u << 20);
    uint8_t *base = rm_type_r16_base(m->tok_embd.type) >= 0 ? malloc(row) : NULL;
    if (!base) h = fnv(h, m->tok_embd.data, left); // not repacked (or out of memory: the stored bytes as they are)
    for (size_t r = 0; base && left > 0; r++) {
        rm_r16_unpack_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + r * row, base, hp->n_embd);
        h = fnv(h, base, left < row ? left : row);
        left -= left < row ? left : row;
    }
    free(base);
    h = fnv(h, m->output_norm, (size_t)hp->n_embd * sizeof(float));
    for (int l = 0; l < hp->n_layer; l++) h = fnv(h, m->layers[l].attn_norm, (size_t)hp->n_embd * sizeof(float));
    return h;
}

typedef struct router_meta {
    const rm_llama *base;
    int rank;
    const rm_router_training *tr;
    char targets[64];
} router_meta;

int rm_base_meta_write(gguf_writer *gw, const char *prefix, const rm_llama *base) {
    const rm_llama_hparams *hp = &base->hp;
    const char *names[4] = {"n_layer", "n_embd", "n_ff", "n_vocab"};
    uint32_t vals[4] = {(uint32_t)hp->n_layer, (uint32_t)hp->n_embd, (uint32_t)hp->n_ff, (uint32_t)hp->n_vocab};
    char key[128];
    snprintf(key, sizeof key, "%s.base.architecture", prefix);
    int rc = gguf_set_str(gw, key, arch_name(base));
    for (int i = 0; i < 4 && !rc; i++) {
        snprintf(key, sizeof key, "%s.base.%s", prefix, names[i]);
        rc = gguf_set_u32(gw, key, vals[i]);
    }
    snprintf(key, sizeof key, "%s.base.fingerprint", prefix);
    return rc ? rc : gguf_set_u64(gw, key, rm_router_base_fingerprint(base));
}

static int write_meta(gguf_writer *gw, const void *ctx) {
    const router_meta *rm = ctx;
    int rc;
    if ((rc = gguf_set_str(gw, "general.type", "ramole.router")) ||
        (rc = gguf_set_u32(gw, "ramole.router.version", 1)) ||
        (rc = gguf_set_u32(gw, "ramole.router.rank", (uint32_t)rm->rank)) ||
        (rc = gguf_set_str(gw, "ramole.router.targets", rm->targets)) ||
        (rc = gguf_set_u32(gw, "ramole.router.trained_k", (uint32_t)rm->tr->trained_k)) ||
        (rc = gguf_set_str(gw, "ramole.router.trained_with", rm->tr->with)) ||
        (!strcmp(rm->tr->with, "retrieval") &&
         (rc = gguf_set_f32(gw, "ramole.router.lora_dropout", rm->tr->lora_dropout))))
        return rc;
    return rm_base_meta_write(gw, "ramole.router", rm->base);
}

int rm_router_save(const rm_lora *router, const rm_llama *base, int trained_k, const char *path) {
    rm_router_training tr = {trained_k, "fixed", NAN};
    return rm_router_save_trained(router, base, &tr, path);
}

int rm_router_save_trained(const rm_lora *router, const rm_llama *base, const rm_router_training *tr,
                           const char *path) {
    if (router->base != base) return rm_errorf(RM_EINVAL, "%s: the router is not bound to this base model", path);
    if (strcmp(tr->with, "fixed") && strcmp(tr->with, "retrieval"))
        return rm_errorf(RM_EINVAL, "%s: trained with '%s' (fixed or retrieval)", path, tr->with);
    router_meta meta = {base, rm_lora_max_rank(router), tr, ""};
    static const char *const short_names[RM_LIN_COUNT] = {"q", "k", "v", "o", "gate", "up", "down"};
    unsigned t = rm_lora_targets(router);
    for (int w = 0; w < RM_LIN_COUNT; w++)
        if (t & (1u << w))
            snprintf(meta.targets + strlen(meta.targets), sizeof meta.targets - strlen(meta.targets), "%s%s",
                     meta.targets[0] ? "," : "", short_names[w]);
    return rm_lora_save_gguf_with(router, path, write_meta, &meta);
}

int rm_router_read_training(const char *path, rm_router_training *tr) {
    memset(tr, 0, sizeof *tr);
    tr->lora_dropout = NAN;
    gguf_file g;
    int rc = gguf_open(&g, path);
    if (rc) return rc;
    gguf_str s;
    uint32_t k = 0;
    if (gguf_get_str(&g, "general.type", &s) != RM_OK || !gguf_str_eq(s, "ramole.router")) {
        gguf_close(&g);
        return rm_errorf(RM_EFORMAT, "%s: not a ramole router", path);
    }
    if (gguf_get_u32(&g, "ramole.router.trained_k", &k) == RM_OK) tr->trained_k = (int)k;
    if (gguf_get_str(&g, "ramole.router.trained_with", &s) == RM_OK) gguf_str_copy(s, tr->with, sizeof tr->with);
    gguf_get_f32(&g, "ramole.router.lora_dropout", &tr->lora_dropout);
    gguf_close(&g);
    return RM_OK;
}

// Checks one u32 key of the file against the base's value.
static int check_u32(const gguf_file *g, const char *prefix, const char *what, const char *name, uint32_t want) {
    char key[128];
    snprintf(key, sizeof key, "%s.base.%s", prefix, name);
    uint32_t v;
    int rc = gguf_get_u32(g, key, &v);
    if (rc == RM_ENOTFOUND) return rm_errorf(RM_EFORMAT, "%s: %s without %s", g->path, what, key);
    if (rc) return rc;
    if (v != want)
        return rm_errorf(RM_EMISMATCH, "%s: the %s was trained for a base with %s %u; this base has %u", g->path, what,
                         name, v, want);
    return RM_OK;
}

int rm_base_meta_check(const gguf_file *g, const char *prefix, const char *what, const rm_llama *base) {
    const rm_llama_hparams *hp = &base->hp;
    char key[128], buf[64];
    gguf_str s;
    snprintf(key, sizeof key, "%s.base.architecture", prefix);
    if (gguf_get_str(g, key, &s) != RM_OK) return rm_errorf(RM_EFORMAT, "%s: %s without %s", g->path, what, key);
    gguf_str_copy(s, buf, sizeof buf);
    if (strcmp(buf, arch_name(base)))
        return rm_errorf(RM_EMISMATCH, "%s: the %s was trained for a %s base; this base is %s", g->path, what, buf,
                         arch_name(base));
    int rc;
    if ((rc = check_u32(g, prefix, what, "n_layer", (uint32_t)hp->n_layer)) ||
        (rc = check_u32(g, prefix, what, "n_embd", (uint32_t)hp->n_embd)) ||
        (rc = check_u32(g, prefix, what, "n_ff", (uint32_t)hp->n_ff)) ||
        (rc = check_u32(g, prefix, what, "n_vocab", (uint32_t)hp->n_vocab)))
        return rc;
    uint64_t fp = 0;
    snprintf(key, sizeof key, "%s.base.fingerprint", prefix);
    if ((rc = gguf_get_u64(g, key, &fp))) {
        if (rc == RM_ENOTFOUND) rc = rm_errorf(RM_EFORMAT, "%s: %s without %s", g->path, what, key);
        return rc;
    }
    uint64_t mine = rm_router_base_fingerprint(base);
    if (fp != mine)
        return rm_errorf(
            RM_EMISMATCH,
            "%s: the %s was trained on another base model of the same shape (fingerprint "
            "%016llx, this base %016llx; the same model in another weight type counts as another base); train "
            "one for this base",
            g->path, what, (unsigned long long)fp, (unsigned long long)mine);
    return RM_OK;
}

int rm_router_load(rm_lora **out, const char *path, const rm_llama *base) {
    *out = NULL;
    gguf_file g;
    int rc = gguf_open(&g, path);
    if (rc) return rc;
    gguf_str s;
    uint32_t version = 0;
    rm_lora *a = NULL;
    if (gguf_get_str(&g, "general.type", &s) != RM_OK || !gguf_str_eq(s, "ramole.router")) {
        rc = rm_errorf(RM_EFORMAT,
                       "%s: not a ramole router (general.type is not 'ramole.router'; train one with "
                       "`ramole router train`)",
                       path);
        goto done;
    }
    if ((rc = gguf_get_u32(&g, "ramole.router.version", &version)) || version != 1) {
        rc = rm_errorf(RM_EUNSUPPORTED, "%s: router version %u is not supported (1)", path, version);
        goto done;
    }
    if ((rc = rm_base_meta_check(&g, "ramole.router", "router", base))) goto done;
    if ((rc = rm_lora_read_gguf(&a, &g, base)) || (rc = rm_lora_bind(a, base))) goto done;
    *out = a;
    a = NULL;
done:
    rm_lora_free(a);
    gguf_close(&g);
    return rc;
}
