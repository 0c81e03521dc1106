// gate.c — MoE / SMEAR gates: routing, construction, files (see gate.h).
#include "lora/gate.h"
#include "base/err.h"
#include "format/gguf.h"
#include "lora/router.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const g_kind_names[] = {"soft", "topk", "top1", "smear"};

int rm_gate_kind_parse(const char *s, rm_gate_kind *out) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, g_kind_names[i])) {
            *out = (rm_gate_kind)i;
            return RM_OK;
        }
    return rm_errorf(RM_EINVAL, "unknown gate kind '%s' (soft, topk, top1, smear)", s);
}

const char *rm_gate_kind_name(rm_gate_kind k) { return (unsigned)k < 4 ? g_kind_names[k] : "?"; }

// ---------------------------------------------------------------- routing

int rm_gate_route(rm_gate_kind kind, int k, int n, const float *z, const uint8_t *excluded, float *alpha, float *p) {
    int chosen = 0;
    for (int i = 0; i < n; i++) alpha[i] = 0.0f;
    if (kind == RM_GATE_TOPK) { // the k largest allowed logits (ties: lower index), marked with 1
        for (int c = 0; c < k; c++) {
            int best = -1;
            for (int i = 0; i < n; i++)
                if (!(excluded && excluded[i]) && alpha[i] == 0.0f && (best < 0 || z[i] > z[best])) best = i;
            if (best < 0) break;
            alpha[best] = 1.0f;
            chosen++;
        }
    } else {
        for (int i = 0; i < n; i++) {
            alpha[i] = excluded && excluded[i] ? 0.0f : 1.0f;
            chosen += alpha[i] != 0.0f;
        }
    }
    if (!chosen) return 0;
    float mx = -INFINITY, sum = 0.0f;
    for (int i = 0; i < n; i++)
        if (alpha[i] != 0.0f) mx = z[i] > mx ? z[i] : mx;
    for (int i = 0; i < n; i++)
        if (alpha[i] != 0.0f) sum += (alpha[i] = expf(z[i] - mx));
    for (int i = 0; i < n; i++) alpha[i] /= sum;
    if (kind != RM_GATE_TOP1) return chosen;
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!(excluded && excluded[i]) && (best < 0 || z[i] > z[best])) best = i;
    if (p) memcpy(p, alpha, (size_t)n * sizeof(float));
    for (int i = 0; i < n; i++)
        if (i != best) alpha[i] = 0.0f;
    return 1;
}

// ---------------------------------------------------------------- construction

void rm_gate_free(rm_gate *g) {
    if (!g) return;
    for (int i = 0; g->names && i < g->n; i++) free(g->names[i]);
    for (int i = 0; g->w && i < g->n_layer * RM_LIN_COUNT; i++) free(g->w[i]);
    free(g->names);
    free(g->w);
    free(g);
}

// An empty gate for base (names and W_g arrays allocated, all NULL).
static int gate_alloc(rm_gate **out, const rm_llama *base, rm_gate_kind kind, int k, int n) {
    rm_gate *g = calloc(1, sizeof *g);
    if (!g) return rm_errorf(RM_ENOMEM, "out of memory");
    g->kind = kind;
    g->k = kind == RM_GATE_TOPK ? k : kind == RM_GATE_TOP1 ? 1 : n;
    g->n = n;
    g->base = base;
    g->n_layer = base->hp.n_layer;
    g->names = calloc((size_t)n, sizeof *g->names);
    g->w = calloc((size_t)g->n_layer * RM_LIN_COUNT, sizeof *g->w);
    if (!g->names || !g->w) {
        rm_gate_free(g);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    *out = g;
    return RM_OK;
}

// The rank of the set's modules on (layer, which) when they are all equal,
// else -1 (0: none).
static int equal_rank(const rm_lora_set *set, int layer, int which) {
    int r = 0;
    for (int i = 0; i < set->n; i++) {
        const rm_lora_mod *m = rm_lora_set_mod(set, i, layer, which);
        if (!m) continue;
        if (r && m->r != r) return -1;
        r = m->r;
    }
    return r;
}

int rm_gate_check_set(const rm_gate *g, const rm_lora_set *set) {
    if (g->base != set->base)
        return rm_errorf(RM_EMISMATCH, "gate: the gate and the adapter set have different base models");
    if (g->n != set->n) return rm_errorf(RM_EMISMATCH, "gate: trained over %d adapters; the set has %d", g->n, set->n);
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->names[i], set->name[i]))
            return rm_errorf(RM_EMISMATCH, "gate: adapter %d of the gate is '%s'; of the set '%s'", i, g->names[i],
                             set->name[i]);
    for (int l = 0; l < set->n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            int r = equal_rank(set, l, w);
            if (r == 0) continue;
            if (l >= g->n_layer || !g->w[l * RM_LIN_COUNT + w])
                return rm_errorf(RM_EMISMATCH, "gate: no gate on layer %d %s, which the adapters adapt", l,
                                 rm_linear_names[w]);
            if (g->kind == RM_GATE_SMEAR && r < 0)
                return rm_errorf(RM_EMISMATCH,
                                 "smear: the adapters have different ranks on layer %d %s (merging needs "
                                 "equal ranks)",
                                 l, rm_linear_names[w]);
        }
    return RM_OK;
}

int rm_gate_new(rm_gate **out, const rm_lora_set *set, rm_gate_kind kind, int k) {
    *out = NULL;
    if ((unsigned)kind > RM_GATE_SMEAR) return rm_errorf(RM_EINVAL, "gate: bad kind %d", (int)kind);
    if (kind == RM_GATE_TOPK && (k < 1 || k > set->n))
        return rm_errorf(RM_EINVAL, "gate: topk with k = %d over %d adapters (1..%d)", k, set->n, set->n);
    rm_gate *g;
    int rc = gate_alloc(&g, set->base, kind, k, set->n);
    for (int i = 0; !rc && i < set->n; i++)
        if (!(g->names[i] = strdup(set->name[i]))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int l = 0; !rc && l < set->n_layer && l < g->n_layer; l++)
        for (int w = 0; !rc && w < RM_LIN_COUNT; w++) {
            if (!equal_rank(set, l, w)) continue;
            size_t in = (size_t)set->base->layers[l].w[w].ne[0];
            if (!(g->w[l * RM_LIN_COUNT + w] = calloc(in * (size_t)set->n, sizeof(float))))
                rc = rm_errorf(RM_ENOMEM, "gate: out of memory");
        }
    if (!rc) rc = rm_gate_check_set(g, set);
    if (rc) {
        rm_gate_free(g);
        return rc;
    }
    *out = g;
    return RM_OK;
}

// ---------------------------------------------------------------- files

int rm_gate_save(const rm_gate *g, const char *path) {
    gguf_writer *gw = gguf_writer_new();
    if (!gw) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc;
    if ((rc = gguf_set_str(gw, "general.type", "ramole.gate")) || (rc = gguf_set_u32(gw, "ramole.gate.version", 1)) ||
        (rc = gguf_set_str(gw, "ramole.gate.kind", rm_gate_kind_name(g->kind))) ||
        (rc = gguf_set_u32(gw, "ramole.gate.k", (uint32_t)g->k)) ||
        (rc = gguf_set_u32(gw, "ramole.gate.n_adapters", (uint32_t)g->n)) ||
        (rc = gguf_set_arr_str(gw, "ramole.gate.adapters", (const char *const *)g->names, (uint64_t)g->n)) ||
        (rc = rm_base_meta_write(gw, "ramole.gate", g->base)))
        goto done;
    char name[96];
    for (int i = 0; !rc && i < g->n_layer * RM_LIN_COUNT; i++) {
        if (!g->w[i]) continue;
        snprintf(name, sizeof name, "blk.%d.%s.gate", i / RM_LIN_COUNT, rm_linear_gguf[i % RM_LIN_COUNT]);
        int64_t ne[2] = {g->base->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0], g->n};
        rc = gguf_add_tensor(gw, name, RM_TYPE_F32, 2, ne, g->w[i]);
    }
    if (!rc) rc = gguf_write(gw, path);
done:
    gguf_writer_free(gw);
    return rc;
}

// Reads kind, k, n and the names of an opened gate file into a new gate.
static int read_header(const gguf_file *f, const rm_llama *base, rm_gate **out) {
    const char *path = f->path;
    gguf_str s;
    char buf[32];
    uint32_t version = 0, k = 0, n = 0;
    rm_gate_kind kind = RM_GATE_SOFT; // set by rm_gate_kind_parse (gcc cannot see it when the call is inlined)
    int rc;
    if (gguf_get_str(f, "general.type", &s) != RM_OK || !gguf_str_eq(s, "ramole.gate"))
        return rm_errorf(RM_EFORMAT,
                         "%s: not a ramole gate (general.type is not 'ramole.gate'; train one with "
                         "`ramole gate train`)",
                         path);
    if (gguf_get_u32(f, "ramole.gate.version", &version) || version != 1)
        return rm_errorf(RM_EUNSUPPORTED, "%s: gate version %u is not supported (1)", path, version);
    if ((rc = rm_base_meta_check(f, "ramole.gate", "gate", base))) return rc;
    if (gguf_get_str(f, "ramole.gate.kind", &s) != RM_OK)
        return rm_errorf(RM_EFORMAT, "%s: gate without ramole.gate.kind", path);
    gguf_str_copy(s, buf, sizeof buf);
    if (rm_gate_kind_parse(buf, &kind)) return rm_errorf(RM_EFORMAT, "%s: unknown gate kind '%s'", path, buf);
    if (gguf_get_u32(f, "ramole.gate.k", &k) || gguf_get_u32(f, "ramole.gate.n_adapters", &n))
        return rm_errorf(RM_EFORMAT, "%s: gate without ramole.gate.k or ramole.gate.n_adapters", path);
    if (n < 1 || n > RM_SET_MAX)
        return rm_errorf(RM_EFORMAT, "%s: a gate over %u adapters (1..%d)", path, n, RM_SET_MAX);
    if (kind == RM_GATE_TOPK && (k < 1 || k > n))
        return rm_errorf(RM_EFORMAT, "%s: topk gate with k = %u of %u", path, k, n);
    const gguf_value *names = NULL;
    if (gguf_get_arr(f, "ramole.gate.adapters", &names) || names->arr.type != GGUF_TYPE_STRING)
        return rm_errorf(RM_EFORMAT, "%s: gate without its list of adapter names (ramole.gate.adapters)", path);
    if (names->arr.n != n)
        return rm_errorf(RM_EFORMAT, "%s: adapter count mismatch: n_adapters is %u but %llu adapter names are listed",
                         path, n, (unsigned long long)names->arr.n);
    rm_gate *g;
    if ((rc = gate_alloc(&g, base, kind, (int)k, (int)n))) return rc;
    for (uint32_t i = 0; !rc && i < n; i++) {
        gguf_str e = names->arr.strs[i];
        if (e.len == 0 || e.len > 4096) rc = rm_errorf(RM_EFORMAT, "%s: adapter name %u is empty or too long", path, i);
        else if (!(g->names[i] = malloc(e.len + 1))) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else gguf_str_copy(e, g->names[i], e.len + 1);
        for (uint32_t j = 0; !rc && j < i; j++)
            if (!strcmp(g->names[j], g->names[i]))
                rc = rm_errorf(RM_EFORMAT, "%s: adapter '%s' listed twice", path, g->names[i]);
    }
    if (rc) {
        rm_gate_free(g);
        return rc;
    }
    *out = g;
    return RM_OK;
}

int rm_gate_load(rm_gate **out, const char *path, const rm_llama *base) {
    *out = NULL;
    gguf_file f;
    int rc = gguf_open(&f, path);
    if (rc) return rc;
    rm_gate *g = NULL;
    uint64_t found = 0;
    char name[96];
    if ((rc = read_header(&f, base, &g))) goto done;
    for (int i = 0; !rc && i < g->n_layer * RM_LIN_COUNT; i++) {
        snprintf(name, sizeof name, "blk.%d.%s.gate", i / RM_LIN_COUNT, rm_linear_gguf[i % RM_LIN_COUNT]);
        const gguf_tensor_info *ti = gguf_find_tensor(&f, name);
        if (!ti) continue;
        int64_t in = base->layers[i / RM_LIN_COUNT].w[i % RM_LIN_COUNT].ne[0];
        if (ti->type != RM_TYPE_F32 || ti->n_dims != 2 || ti->ne[0] != in || ti->ne[1] != g->n) {
            rc = rm_errorf(RM_EFORMAT, "%s: tensor %s is not f32 [%lld, %d] (adapter count or base shape mismatch)",
                           path, name, (long long)in, g->n);
            break;
        }
        if (!(g->w[i] = malloc(ti->nbytes))) {
            rc = rm_errorf(RM_ENOMEM, "out of memory");
            break;
        }
        memcpy(g->w[i], ti->data, ti->nbytes);
        if ((rc = rm_lora_check_finite(g->w[i], in * g->n, path, name))) break;
        found++;
    }
    if (!rc && found == 0) rc = rm_errorf(RM_EFORMAT, "%s: the gate has no gate tensors", path);
    if (!rc && found != f.n_tensors)
        rc = rm_errorf(RM_EFORMAT, "%s: %llu tensors are no gate of this base's layers", path,
                       (unsigned long long)(f.n_tensors - found));
    if (!rc) {
        *out = g;
        g = NULL;
    }
done:
    rm_gate_free(g);
    gguf_close(&f);
    return rc;
}
