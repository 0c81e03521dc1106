// peft.c — PEFT LoRA adapters: adapter_config.json + adapter_model.safetensors.
//
// Config fields used: peft_type (must be LORA), r, lora_alpha, use_rslora,
// rank_pattern / alpha_pattern (PEFT's rule: key K applies to module name M
// when M matches the regex (.*\.)?(K)$, first key wins), target_modules (list:
// M == t or M ends with "." t; string: "all-linear" or a regex M must fully
// match), fan_in_fan_out, use_dora, modules_to_save, bias. Ranks come from
// the tensor shapes. B's Q/K rows are in Hugging Face RoPE order.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "lora/adapter.h"
#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "format/safetensors.h"

#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEFT_MAX_LAYERS 4096

// ---------------------------------------------------------------- names

// 1 when subject matches the regex: whole subject, or (suffix) ending with
// "." + pattern as PEFT's patterns do. Returns < 0 on a bad pattern.
static int regex_match(const char *pattern, const char *subject, int suffix, const char *path) {
    size_t n = strlen(pattern) + 32;
    char *rx = malloc(n);
    if (!rx) return rm_errorf(RM_ENOMEM, "out of memory");
    snprintf(rx, n, suffix ? "(?:.*\\.)?(?:%s)" : "(?:%s)", pattern);
    int err;
    PCRE2_SIZE off;
    pcre2_code *c =
        pcre2_compile((PCRE2_SPTR)rx, PCRE2_ZERO_TERMINATED, PCRE2_ANCHORED | PCRE2_ENDANCHORED, &err, &off, NULL);
    free(rx);
    if (!c) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return rm_errorf(RM_EFORMAT, "%s: bad pattern '%s' in adapter_config.json: %s", path, pattern, (char *)msg);
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(c, NULL);
    int hit = md && pcre2_match(c, (PCRE2_SPTR)subject, strlen(subject), 0, 0, md, NULL) >= 0;
    pcre2_match_data_free(md);
    pcre2_code_free(c);
    return hit;
}

// Module name "model.layers.N.self_attn.q_proj" as PEFT keys patterns on.
static void module_name(int layer, int which, char *buf, size_t cap) {
    snprintf(buf, cap, "model.layers.%d.%s.%s", layer, which <= RM_LIN_O ? "self_attn" : "mlp", rm_linear_names[which]);
}

// Parses "[base_model.model.]model.layers.N.{self_attn|mlp}.X_proj.lora_{A|B}[.default].weight".
static int parse_tensor_name(const char *path, const char *name, int *layer, int *which, int *is_b) {
    if (strstr(name, "lora_embedding_"))
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: embedding LoRAs are not supported", path, name);
    if (strstr(name, "lora_magnitude_vector"))
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: DoRA adapters are not supported", path, name);
    if (strstr(name, "lm_head."))
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: LoRA on the output layer (lm_head) is not supported", path,
                         name);
    if (strstr(name, "modules_to_save"))
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s: modules_to_save (fully trained layers) are not supported",
                         path, name);
    const char *s = name;
    if (!strncmp(s, "base_model.model.", 17)) s += 17;
    if (strncmp(s, "model.layers.", 13)) goto bad;
    s += 13;
    char *end;
    long l = strtol(s, &end, 10);
    if (end == s || *end != '.' || l < 0 || l >= PEFT_MAX_LAYERS) goto bad;
    s = end + 1;
    int w = -1;
    for (int i = 0; i < RM_LIN_COUNT; i++) {
        char want[64];
        snprintf(want, sizeof want, "%s.%s.", i <= RM_LIN_O ? "self_attn" : "mlp", rm_linear_names[i]);
        if (!strncmp(s, want, strlen(want))) {
            w = i;
            s += strlen(want);
            break;
        }
    }
    if (w < 0) goto bad;
    if (!strncmp(s, "lora_A", 6)) *is_b = 0;
    else if (!strncmp(s, "lora_B", 6)) *is_b = 1;
    else goto bad;
    s += 6;
    if (!strncmp(s, ".default", 8)) s += 8;
    if (strcmp(s, ".weight")) goto bad;
    *layer = (int)l;
    *which = w;
    return RM_OK;
bad:
    return rm_errorf(RM_EFORMAT,
                     "%s: unexpected tensor %s (want model.layers.N.{self_attn,mlp}.*_proj.lora_{A,B}.weight)", path,
                     name);
}

// ---------------------------------------------------------------- config

typedef struct peft_cfg {
    rm_json *root;
    int r, rslora, fan_in_fan_out;
    double alpha;
    const rm_json *targets, *rank_pattern, *alpha_pattern;
} peft_cfg;

static int read_config(peft_cfg *c, const char *cfg_path) {
    memset(c, 0, sizeof *c);
    int rc = rm_json_parse_file(cfg_path, &c->root);
    if (rc) return rc;
    const rm_json *j = c->root;
    if (j->type != RM_JSON_OBJECT) return rm_errorf(RM_EFORMAT, "%s: not a JSON object", cfg_path);
    const char *type = rm_json_get_str(j, "peft_type", "LORA");
    if (strcmp(type, "LORA"))
        return rm_errorf(RM_EUNSUPPORTED, "%s: peft_type %s is not supported (only LORA)", cfg_path, type);
    if (rm_json_get_bool(j, "use_dora", 0))
        return rm_errorf(RM_EUNSUPPORTED, "%s: DoRA adapters (use_dora) are not supported", cfg_path);
    const rm_json *mts = rm_json_get(j, "modules_to_save");
    if (mts && !(mts->type == RM_JSON_NULL || (mts->type == RM_JSON_ARRAY && mts->n == 0)))
        return rm_errorf(RM_EUNSUPPORTED, "%s: modules_to_save (fully trained layers) are not supported", cfg_path);
    const char *bias = rm_json_get_str(j, "bias", "none");
    if (strcmp(bias, "none"))
        return rm_errorf(RM_EUNSUPPORTED, "%s: trained biases (bias=%s) are not supported", cfg_path, bias);
    c->r = (int)rm_json_get_int(j, "r", 8);
    c->alpha = rm_json_get_num(j, "lora_alpha", 8);
    c->rslora = rm_json_get_bool(j, "use_rslora", 0);
    c->fan_in_fan_out = rm_json_get_bool(j, "fan_in_fan_out", 0);
    if (!isfinite(c->alpha)) return rm_errorf(RM_EFORMAT, "%s: lora_alpha is not a finite number", cfg_path);
    c->targets = rm_json_get(j, "target_modules");
    c->rank_pattern = rm_json_get(j, "rank_pattern");
    c->alpha_pattern = rm_json_get(j, "alpha_pattern");
    if (c->targets && c->targets->type != RM_JSON_NULL && c->targets->type != RM_JSON_STRING &&
        c->targets->type != RM_JSON_ARRAY)
        return rm_errorf(RM_EFORMAT, "%s: target_modules must be a list or a string", cfg_path);
    return RM_OK;
}

// 1 if the module is targeted by target_modules (absent: everything).
static int is_targeted(const peft_cfg *c, const char *module, const char *cfg_path) {
    const rm_json *t = c->targets;
    if (!t || t->type == RM_JSON_NULL) return 1;
    if (t->type == RM_JSON_STRING) {
        if (!strcmp(t->str, "all-linear")) return 1;
        return regex_match(t->str, module, 0, cfg_path);
    }
    size_t ml = strlen(module);
    for (size_t i = 0; i < t->n; i++) {
        const rm_json *e = &t->items[i];
        if (e->type != RM_JSON_STRING) continue;
        size_t el = strlen(e->str);
        if (!strcmp(module, e->str) || (ml > el && module[ml - el - 1] == '.' && !strcmp(module + ml - el, e->str)))
            return 1;
    }
    return 0;
}

// The value of the first pattern key matching the module, or dflt.
static int pattern_value(const rm_json *pat, const char *module, double dflt, double *out, const char *cfg_path) {
    *out = dflt;
    if (!pat || pat->type != RM_JSON_OBJECT) return RM_OK;
    for (size_t i = 0; i < pat->n; i++) {
        int hit = regex_match(pat->keys[i], module, 1, cfg_path);
        if (hit < 0) return hit;
        if (!hit) continue;
        if (pat->items[i].type != RM_JSON_NUMBER || !isfinite(pat->items[i].num))
            return rm_errorf(RM_EFORMAT, "%s: pattern '%s' needs a number", cfg_path, pat->keys[i]);
        *out = pat->items[i].num;
        return RM_OK;
    }
    return RM_OK;
}

// ---------------------------------------------------------------- loading

// Converts a PEFT tensor to f32 into a new buffer.
static int tensor_f32(const char *path, const st_tensor *t, float **out) {
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return rm_errorf(RM_EUNSUPPORTED, "%s: tensor %s has dtype %s (want F32, F16 or BF16)", path, t->name,
                         st_dtype_name(t->dtype));
    size_t n = t->nbytes / st_dtype_size(t->dtype);
    *out = malloc((n ? n : 1) * sizeof(float));
    if (!*out) return rm_errorf(RM_ENOMEM, "out of memory");
    int rc = st_to_f32(t, *out);
    if (!rc) rc = rm_lora_check_finite(*out, (int64_t)n, path, t->name);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

// A module's declared rank and shape from the two tensors' headers (nothing
// read), checked against m when not NULL.
static int module_shape(const peft_cfg *c, const char *path, const char *module, int l, int w, const st_tensor *ta,
                        const st_tensor *tb, const rm_llama *m, int64_t *r, int64_t *in, int64_t *out,
                        int *transposed) {
    if (ta->n_dims != 2 || tb->n_dims != 2)
        return rm_errorf(RM_EFORMAT, "%s: %s: lora_A and lora_B must be 2-D", path, module);
    int64_t a0 = ta->shape[0], a1 = ta->shape[1], b0 = tb->shape[0], b1 = tb->shape[1];
    *transposed = 0;
    if (a0 == b1) {
        *r = a0, *in = a1, *out = b0;
    } else if (c->fan_in_fan_out && a1 == b0) {
        *transposed = 1; // stored as [in, r] and [r, out]
        *r = a1, *in = a0, *out = b1;
    } else {
        return rm_errorf(RM_EFORMAT, "%s: %s: lora_A [%lld, %lld] and lora_B [%lld, %lld] do not share a rank", path,
                         module, (long long)a0, (long long)a1, (long long)b0, (long long)b1);
    }
    return rm_lora_check_shape(m, path, l, w, *r, *in, *out);
}

// Fills one module from its lora_A and lora_B tensors.
static int load_module(rm_lora_mod *mod, const peft_cfg *c, const char *path, const char *module, int l, int w,
                       const st_tensor *ta, const st_tensor *tb, double alpha) {
    int64_t r, in, out;
    int transposed;
    int rc = module_shape(c, path, module, l, w, ta, tb, NULL, &r, &in, &out, &transposed);
    if (rc) return rc;
    float s = (float)(alpha / (c->rslora ? sqrt((double)r) : (double)r));
    rc = rm_lora_mod_alloc(mod, (int)r, in, out, s);
    if (rc) return rm_error_prefix(rc, "%s: %s", path, module);
    float *fa = NULL, *fb = NULL;
    if ((rc = tensor_f32(path, ta, &fa)) || (rc = tensor_f32(path, tb, &fb))) goto done;
    for (int64_t j = 0; j < r; j++) {
        for (int64_t i = 0; i < in; i++) mod->A[j * in + i] = transposed ? fa[i * r + j] : fa[j * in + i];
        for (int64_t o = 0; o < out; o++) mod->Bt[j * out + o] = transposed ? fb[j * out + o] : fb[o * r + j];
    }
done:
    free(fa);
    free(fb);
    return rc;
}

// Resolves DIR or DIR/adapter_model.safetensors into the two file names.
static int peft_paths(const char *path, char **st_path, char **cfg_path) {
    size_t n = strlen(path) + 64;
    *st_path = malloc(n);
    *cfg_path = malloc(n);
    if (!*st_path || !*cfg_path) return rm_errorf(RM_ENOMEM, "out of memory");
    if (rm_is_dir(path)) {
        snprintf(*st_path, n, "%s/adapter_model.safetensors", path);
        snprintf(*cfg_path, n, "%s/adapter_config.json", path);
    } else {
        snprintf(*st_path, n, "%s", path);
        const char *slash = strrchr(path, '/');
        int dl = slash ? (int)(slash - path) : 1;
        snprintf(*cfg_path, n, "%.*s/adapter_config.json", dl, slash ? path : ".");
    }
    if (!rm_file_exists(*cfg_path))
        return rm_errorf(RM_ENOTFOUND, "%s: no adapter_config.json beside the weights", path);
    if (!rm_file_exists(*st_path))
        return rm_errorf(RM_ENOTFOUND, "%s: no adapter_model.safetensors (PEFT .bin files are not supported)", path);
    return RM_OK;
}

int rm_lora_load_peft(rm_lora **out, const char *path) { return rm_lora_load_peft_checked(out, path, NULL); }

int rm_lora_load_peft_checked(rm_lora **out, const char *path, const rm_llama *m) {
    *out = NULL;
    char *st_path = NULL, *cfg_path = NULL;
    peft_cfg c = {0};
    st_file f;
    int f_open = 0;
    const st_tensor **pairs = NULL;
    rm_lora *a = NULL;
    int rc = peft_paths(path, &st_path, &cfg_path);
    if (!rc) rc = read_config(&c, cfg_path);
    if (!rc && !(rc = st_open(&f, st_path))) f_open = 1;
    if (rc) goto done;
    // First pass: names -> (layer, which, A|B), and the layer count.
    int n_layer = 0;
    pairs = calloc((size_t)PEFT_MAX_LAYERS * RM_LIN_COUNT * 2, sizeof *pairs);
    if (!pairs) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < f.n_tensors; i++) {
        int l = 0, w = 0, is_b = 0;
        if ((rc = parse_tensor_name(st_path, f.tensors[i].name, &l, &w, &is_b))) goto done;
        const st_tensor **slot = &pairs[((size_t)l * RM_LIN_COUNT + w) * 2 + is_b];
        if (*slot) {
            rc = rm_errorf(RM_EFORMAT, "%s: two tensors for %s", st_path, f.tensors[i].name);
            goto done;
        }
        *slot = &f.tensors[i];
        if (l + 1 > n_layer) n_layer = l + 1;
    }
    if (!n_layer) {
        rc = rm_errorf(RM_EFORMAT, "%s: no LoRA tensors", st_path);
        goto done;
    }
    // Every module's declared shape is checked before any tensor is read.
    for (int i = 0; i < n_layer * RM_LIN_COUNT; i++) {
        const st_tensor *ta = pairs[(size_t)i * 2], *tb = pairs[(size_t)i * 2 + 1];
        int64_t r, in, o;
        int tr;
        char module[96];
        module_name(i / RM_LIN_COUNT, i % RM_LIN_COUNT, module, sizeof module);
        if (ta && tb &&
            (rc = module_shape(&c, st_path, module, i / RM_LIN_COUNT, i % RM_LIN_COUNT, ta, tb, m, &r, &in, &o, &tr)))
            goto done;
    }
    if ((rc = rm_lora_new(&a, n_layer))) goto done;
    for (int l = 0; l < n_layer; l++)
        for (int w = 0; w < RM_LIN_COUNT; w++) {
            const st_tensor *ta = pairs[((size_t)l * RM_LIN_COUNT + w) * 2],
                            *tb = pairs[((size_t)l * RM_LIN_COUNT + w) * 2 + 1];
            if (!ta && !tb) continue;
            char module[96];
            module_name(l, w, module, sizeof module);
            if (!ta || !tb) {
                rc = rm_errorf(RM_EFORMAT, "%s: %s has lora_%s but not lora_%s", st_path, module, ta ? "A" : "B",
                               ta ? "B" : "A");
                goto done;
            }
            int t = is_targeted(&c, module, cfg_path);
            if (t < 0) {
                rc = t;
                goto done;
            }
            if (!t) {
                rc = rm_errorf(RM_EFORMAT, "%s: %s has LoRA weights but is not in target_modules", st_path, module);
                goto done;
            }
            double alpha;
            if ((rc = pattern_value(c.alpha_pattern, module, c.alpha, &alpha, cfg_path))) goto done;
            if ((rc = load_module(&a->mods[l * RM_LIN_COUNT + w], &c, st_path, module, l, w, ta, tb, alpha))) goto done;
        }
    free(a->path);
    a->path = strdup(path);
    if (!a->path) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    a->alpha = (float)c.alpha;
    a->rank = c.r;
    a->rslora = c.rslora;
    a->qk_permuted = 0;
    a->format = "peft";
done:
    if (rc) rm_lora_free(a);
    else *out = a;
    free(pairs);
    if (f_open) st_close(&f);
    rm_json_free(c.root);
    free(st_path);
    free(cfg_path);
    return rc;
}

// ---------------------------------------------------------------- saving

// Appends a module name as a regex matching itself only (dots escaped).
static void put_module_key(rm_sb *sb, int l, int w) {
    char name[96], rx[192];
    module_name(l, w, name, sizeof name);
    size_t k = 0;
    for (const char *p = name; *p && k + 3 < sizeof rx; p++) {
        if (*p == '.') rx[k++] = '\\';
        rx[k++] = *p;
    }
    rx[k] = 0;
    rm_sb_json_str(sb, rx, k);
}

static double module_alpha(const rm_lora *a, const rm_lora_mod *m) {
    return (double)m->scale * (a->rslora ? sqrt((double)m->r) : (double)m->r);
}

static int write_config(const rm_lora *a, const char *dir) {
    const rm_lora_mod *first = NULL;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT && !first; i++)
        if (a->mods[i].r) first = &a->mods[i];
    if (!first) return rm_errorf(RM_EINVAL, "%s: adapter has no LoRA weights", a->path);
    int r = first->r;
    double alpha = module_alpha(a, first);
    rm_sb sb;
    rm_sb_init(&sb);
    rm_sb_puts(&sb, "{\n  \"peft_type\": \"LORA\",\n  \"task_type\": \"CAUSAL_LM\",\n  \"bias\": \"none\",\n");
    rm_sb_printf(&sb, "  \"r\": %d,\n  \"lora_alpha\": %.9g,\n  \"use_rslora\": %s,\n", r, alpha,
                 a->rslora ? "true" : "false");
    rm_sb_puts(&sb, "  \"fan_in_fan_out\": false,\n  \"use_dora\": false,\n  \"modules_to_save\": null,\n");
    rm_sb_puts(&sb, "  \"target_modules\": [");
    unsigned t = rm_lora_targets(a);
    int k = 0;
    for (int w = 0; w < RM_LIN_COUNT; w++)
        if (t & (1u << w)) rm_sb_printf(&sb, "%s\"%s\"", k++ ? ", " : "", rm_linear_names[w]);
    rm_sb_puts(&sb, "]");
    for (int pass = 0; pass < 2; pass++) { // rank_pattern, then alpha_pattern
        rm_sb_printf(&sb, ",\n  \"%s\": {", pass ? "alpha_pattern" : "rank_pattern");
        k = 0;
        for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
            const rm_lora_mod *m = &a->mods[i];
            if (!m->r) continue;
            double al = module_alpha(a, m);
            if (pass == 0 && m->r == r) continue;
            if (pass == 1 && (float)al == (float)alpha) continue;
            rm_sb_puts(&sb, k++ ? ",\n    " : "\n    ");
            put_module_key(&sb, i / RM_LIN_COUNT, i % RM_LIN_COUNT);
            if (pass == 0) rm_sb_printf(&sb, ": %d", m->r);
            else rm_sb_printf(&sb, ": %.9g", al);
        }
        rm_sb_puts(&sb, k ? "\n  }" : "}");
    }
    rm_sb_puts(&sb, "\n}\n");
    int rc = RM_OK;
    if (sb.oom) rc = rm_errorf(RM_ENOMEM, "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    if (!rc) rc = rm_write_file_atomic(path, sb.buf, sb.len);
    rm_sb_free(&sb);
    return rc;
}

int rm_lora_save_peft(const rm_lora *a, const char *dir) {
    int rc = rm_mkdirs(dir);
    if (rc) return rc;
    st_writer *sw = st_writer_new();
    float **bufs = calloc((size_t)a->n_layer * RM_LIN_COUNT, sizeof *bufs);
    if (!sw || !bufs) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT && !rc; i++) {
        const rm_lora_mod *m = &a->mods[i];
        if (!m->r) continue;
        if ((rc = rm_lora_export_b(a, i, 0, 1.0f, &bufs[i]))) break; // Hugging Face order
        char name[160], module[96];
        module_name(i / RM_LIN_COUNT, i % RM_LIN_COUNT, module, sizeof module);
        int64_t sa[2] = {m->r, m->in}, sbs[2] = {m->out, m->r};
        snprintf(name, sizeof name, "base_model.model.%s.lora_A.weight", module);
        if ((rc = st_writer_add(sw, name, ST_F32, 2, sa, m->A))) break;
        snprintf(name, sizeof name, "base_model.model.%s.lora_B.weight", module);
        rc = st_writer_add(sw, name, ST_F32, 2, sbs, bufs[i]);
    }
    if (!rc) {
        char path[4096];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        rc = st_write(sw, path);
    }
    if (!rc) rc = write_config(a, dir);
done:
    if (bufs)
        for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) free(bufs[i]);
    free(bufs);
    st_writer_free(sw);
    return rc;
}
