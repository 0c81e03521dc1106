// adapter.c — the adapter object: construction, binding to a base model
// (validation + Q/K permutation), targets, random adapters. The file formats
// are in peft.c and gguf_lora.c, merging in merge.c.
#include "lora/adapter.h"
#include "base/err.h"
#include "base/fp16.h"
#include "model/sampler.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

uint64_t rm_lora_next_uid(void) {
    static atomic_uint_fast64_t next = 1;
    return (uint64_t)atomic_fetch_add(&next, 1);
}

int rm_lora_check_finite(const float *v, int64_t n, const char *path, const char *name) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return rm_errorf(RM_EFORMAT, "%s: tensor %s holds NaN/Inf (element %lld)", path, name, (long long)i);
    return RM_OK;
}

int rm_lora_new(rm_lora **out, int n_layer) {
    *out = NULL;
    if (n_layer <= 0 || n_layer > 4096) return rm_errorf(RM_EINVAL, "lora: bad layer count %d", n_layer);
    rm_lora *a = calloc(1, sizeof *a);
    if (a) a->mods = calloc((size_t)n_layer * RM_LIN_COUNT, sizeof *a->mods);
    if (a) a->path = strdup("");
    if (!a || !a->mods || !a->path) {
        rm_lora_free(a);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    a->n_layer = n_layer;
    a->uid = rm_lora_next_uid();
    a->format = "memory";
    *out = a;
    return RM_OK;
}

// Frees the module's f16 and 8-bit mirrors (they follow A and B, which are changing or going).
static void drop_mirrors(rm_lora_mod *mod) {
    free(mod->A16);
    free(mod->Bt16);
    free(mod->A8);
    free(mod->Bt8);
    free(mod->s8);
    mod->A16 = mod->Bt16 = NULL;
    mod->A8 = mod->Bt8 = NULL;
    mod->s8 = NULL;
}

int rm_lora_mod_make_f16(rm_lora_mod *m) {
    if (!m->r || m->A16) return RM_OK;
    m->A16 = calloc(rm_lora_a16_size(m->r, m->in), sizeof(uint16_t)); // the padding is 0
    m->Bt16 = calloc(rm_lora_b16_size(m->r, m->out), sizeof(uint16_t));
    if (!m->A16 || !m->Bt16) {
        free(m->A16);
        free(m->Bt16);
        m->A16 = m->Bt16 = NULL;
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    for (int j = 0; j < m->r; j++) {
        const float *a = m->A + (size_t)j * (size_t)m->in, *b = m->Bt + (size_t)j * (size_t)m->out;
        for (int64_t k = 0; k < m->in; k++) m->A16[rm_lora_a16_at(m->in, j, k)] = rm_f32_to_f16(a[k]);
        for (int64_t o = 0; o < m->out; o++) m->Bt16[rm_lora_b16_at(m->r, j, o)] = rm_f32_to_f16(b[o]);
    }
    return RM_OK;
}

// The scale of n values (largest magnitude / 127; 0 for an all-zero row).
static float q8_scale(const float *v, int64_t n) {
    float mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmaxf(mx, fabsf(v[i]));
    return mx / 127.0f;
}
static int8_t q8_round(float v, float s) {
    if (s == 0) return 0;
    float q = roundf(v / s);
    return (int8_t)(q > 127 ? 127 : q < -127 ? -127 : q);
}

int rm_lora_mod_make_q8(rm_lora_mod *m) {
    if (!m->r || m->A8) return RM_OK;
    m->A8 = calloc(rm_lora_a16_size(m->r, m->in), 1); // the padding is 0
    m->Bt8 = calloc(rm_lora_b16_size(m->r, m->out), 1);
    m->s8 = calloc(2 * (size_t)m->r, sizeof(float));
    if (!m->A8 || !m->Bt8 || !m->s8) {
        free(m->A8);
        free(m->Bt8);
        free(m->s8);
        m->A8 = m->Bt8 = NULL;
        m->s8 = NULL;
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    for (int j = 0; j < m->r; j++) {
        const float *a = m->A + (size_t)j * (size_t)m->in, *b = m->Bt + (size_t)j * (size_t)m->out;
        float sa = m->s8[j] = q8_scale(a, m->in), sb = m->s8[m->r + j] = q8_scale(b, m->out);
        for (int64_t k = 0; k < m->in; k++) m->A8[rm_lora_a16_at(m->in, j, k)] = q8_round(a[k], sa);
        for (int64_t o = 0; o < m->out; o++) m->Bt8[rm_lora_b16_at(m->r, j, o)] = q8_round(b[o], sb);
    }
    return RM_OK;
}

static int make_mirrors(rm_lora *a, const char *what, int (*make)(rm_lora_mod *)) {
    if (!a->base) return rm_errorf(RM_EINVAL, "%s: bind the adapter before making %s mirrors", a->path, what);
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
        int rc = make(&a->mods[i]);
        if (rc) return rc;
    }
    return RM_OK;
}

int rm_lora_make_f16(rm_lora *a) { return make_mirrors(a, "f16", rm_lora_mod_make_f16); }
int rm_lora_make_q8(rm_lora *a) { return make_mirrors(a, "8-bit", rm_lora_mod_make_q8); }

int rm_lora_mod_alloc(rm_lora_mod *mod, int r, int64_t in, int64_t out, float scale) {
    if (r <= 0 || r > RM_LORA_MAX_RANK || in <= 0 || out <= 0 || in > (1 << 24) || out > (1 << 24))
        return rm_errorf(RM_EINVAL, "lora: bad module shape r=%d in=%lld out=%lld", r, (long long)in, (long long)out);
    drop_mirrors(mod);
    free(mod->A);
    free(mod->Bt);
    mod->A = calloc((size_t)r * (size_t)in, sizeof(float));
    mod->Bt = calloc((size_t)r * (size_t)out, sizeof(float));
    if (!mod->A || !mod->Bt) {
        free(mod->A);
        free(mod->Bt);
        memset(mod, 0, sizeof *mod);
        return rm_errorf(RM_ENOMEM, "lora: out of memory for a rank-%d module [%lld x %lld]", r, (long long)out,
                         (long long)in);
    }
    mod->r = r;
    mod->in = in;
    mod->out = out;
    mod->scale = scale;
    return RM_OK;
}

void rm_lora_free(rm_lora *a) {
    if (!a) return;
    if (a->mods)
        for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
            drop_mirrors(&a->mods[i]);
            free(a->mods[i].A);
            free(a->mods[i].Bt);
        }
    free(a->mods);
    free(a->path);
    free(a);
}

// ---------------------------------------------------------------- targets

int rm_lora_parse_targets(const char *s, unsigned *mask) {
    static const char *const short_names[RM_LIN_COUNT] = {"q", "k", "v", "o", "gate", "up", "down"};
    unsigned m = 0;
    const char *p = s;
    while (p && *p) {
        size_t n = strcspn(p, ",");
        char tok[32];
        if (n == 0 || n >= sizeof tok) return rm_errorf(RM_EINVAL, "lora: bad target list '%s'", s);
        memcpy(tok, p, n);
        tok[n] = 0;
        if (!strcmp(tok, "all") || !strcmp(tok, "all-linear")) m |= (1u << RM_LIN_COUNT) - 1;
        else if (!strcmp(tok, "attn")) m |= 0xfu;
        else if (!strcmp(tok, "mlp")) m |= 0x70u;
        else {
            int found = 0;
            for (int w = 0; w < RM_LIN_COUNT; w++)
                if (!strcmp(tok, short_names[w]) || !strcmp(tok, rm_linear_names[w]) ||
                    !strcmp(tok, rm_linear_gguf[w])) {
                    m |= 1u << w;
                    found = 1;
                }
            if (!found)
                return rm_errorf(RM_EINVAL, "lora: unknown target '%s' (q,k,v,o,gate,up,down, all, attn, mlp)", tok);
        }
        p += n;
        if (*p == ',') p++;
    }
    if (!m) return rm_errorf(RM_EINVAL, "lora: empty target list");
    *mask = m;
    return RM_OK;
}

unsigned rm_lora_targets(const rm_lora *a) {
    unsigned m = 0;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++)
        if (a->mods[i].r) m |= 1u << (i % RM_LIN_COUNT);
    return m;
}

int rm_lora_max_rank(const rm_lora *a) {
    int r = 0;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++)
        if (a->mods[i].r > r) r = a->mods[i].r;
    return r;
}

size_t rm_lora_bytes(const rm_lora *a) {
    size_t b = sizeof *a + (size_t)a->n_layer * RM_LIN_COUNT * sizeof *a->mods;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *m = &a->mods[i];
        size_t n = (size_t)m->r * (size_t)(m->in + m->out);
        b += n * sizeof(float);
        size_t packed = rm_lora_a16_size(m->r, m->in) + rm_lora_b16_size(m->r, m->out);
        if (m->A16) b += packed * sizeof(uint16_t);
        if (m->A8) b += packed + 2 * (size_t)m->r * sizeof(float);
    }
    return b;
}

int rm_lora_parse_spec(const char *spec, char *path, size_t cap, float *weight, int *has_weight) {
    const char *colon = strrchr(spec, ':');
    size_t n = strlen(spec);
    *has_weight = 0;
    if (colon && colon[1]) {
        char *end;
        double w = strtod(colon + 1, &end);
        if (*end == 0 && isfinite(w)) {
            *weight = (float)w;
            *has_weight = 1;
            n = (size_t)(colon - spec);
        }
    }
    if (n == 0 || n >= cap) return rm_errorf(RM_EINVAL, "lora: bad adapter spec '%s' (PATH[:WEIGHT])", spec);
    memcpy(path, spec, n);
    path[n] = 0;
    return RM_OK;
}

// ---------------------------------------------------------------- binding

void rm_lora_qk_permute(float *v, int n_head, int head_dim, int inverse) {
    int half = head_dim / 2;
    float tmp[2048];
    if (head_dim > (int)(sizeof tmp / sizeof tmp[0])) return; // rejected by rm_lora_bind
    for (int h = 0; h < n_head; h++) {
        float *row = v + (size_t)h * head_dim;
        memcpy(tmp, row, (size_t)head_dim * sizeof(float));
        // GGUF row 2i+j holds HF row j*half+i
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                if (inverse) row[j * half + i] = tmp[2 * i + j];
                else row[2 * i + j] = tmp[j * half + i];
            }
    }
}

static const char *base_arch(const rm_llama *m) { return m->hp.arch == RM_ARCH_QWEN2 ? "qwen2" : "llama"; }

static int arch_family(const char *arch) {
    if (!strcmp(arch, "llama") || !strcmp(arch, "mistral")) return RM_ARCH_LLAMA;
    if (!strcmp(arch, "qwen2")) return RM_ARCH_QWEN2;
    return -1;
}

int rm_lora_check_shape(const rm_llama *m, const char *path, int l, int w, int64_t r, int64_t in, int64_t out) {
    if (r <= 0 || r > RM_LORA_MAX_RANK)
        return rm_errorf(RM_EFORMAT, "%s: layer %d %s: rank %lld outside [1, %d]", path, l, rm_linear_names[w],
                         (long long)r, RM_LORA_MAX_RANK);
    if (in <= 0 || out <= 0 || in > RM_LORA_MAX_DIM || out > RM_LORA_MAX_DIM)
        return rm_errorf(RM_EFORMAT, "%s: layer %d %s: declared shape [%lld, %lld] (out, in) is outside [1, %d]", path,
                         l, rm_linear_names[w], (long long)out, (long long)in, RM_LORA_MAX_DIM);
    if (!m) return RM_OK;
    if (l >= m->hp.n_layer)
        return rm_errorf(RM_EMISMATCH, "%s: adapter has weights for layer %d, the base model has %d layers", path, l,
                         m->hp.n_layer);
    const rm_tensor *W = &m->layers[l].w[w];
    if (in != W->ne[0] || out != W->ne[1])
        return rm_errorf(
            RM_EMISMATCH,
            "%s: layer %d %s: adapter shape [%lld, %lld] (out, in) does not match the base weight [%lld, %lld]", path,
            l, rm_linear_names[w], (long long)out, (long long)in, (long long)W->ne[1], (long long)W->ne[0]);
    if (r > in || r > out)
        return rm_errorf(RM_EMISMATCH, "%s: layer %d %s: rank %lld exceeds min(in, out)", path, l, rm_linear_names[w],
                         (long long)r);
    return RM_OK;
}

int rm_lora_load_for(rm_lora **out, const char *path, const rm_llama *m) {
    int rc = rm_lora_load_checked(out, path, m);
    if (!rc && (rc = rm_lora_bind(*out, m))) {
        rm_lora_free(*out);
        *out = NULL;
    }
    return rc;
}

// ---------------------------------------------------------------- scale

// Frobenius norm of W, estimated from up to 64 rows spread evenly over it
// (exact for up to 64 rows): cheap on any weight type.
static double weight_norm(const rm_tensor *W) {
    int64_t rows = W->ne[1], step = rows > 64 ? rows / 64 : 1, seen = 0;
    size_t row_bytes = rm_row_size(W->type, W->ne[0]);
    float *buf = malloc((size_t)W->ne[0] * sizeof *buf);
    if (!buf) return -1.0;
    double sum = 0.0;
    for (int64_t r = 0; r < rows && seen < 64; r += step, seen++) {
        rm_dequantize_row(W->type, (const uint8_t *)W->data + (size_t)r * row_bytes, buf, W->ne[0]);
        for (int64_t i = 0; i < W->ne[0]; i++) sum += (double)buf[i] * buf[i];
    }
    free(buf);
    return sqrt(sum * (double)rows / (double)seen);
}

// Sum of squares of n floats, in double (f32 weights near FLT_MAX square fine).
static double sum_sq(const float *v, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return s;
}

static double dot_d(const float *x, const float *y, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * y[i];
    return s;
}

// ||s B A||_F, exactly: ||BA||_F^2 = sum_ij (B^T B)_ij (A A^T)_ij, r x r Gram
// matrices of Bt's and A's rows; an upper bound s ||B|| ||A|| is returned
// when that is already under `enough` (most adapters: no r^2 pass).
static double update_norm(const rm_lora_mod *m, double enough) {
    double bound = fabs((double)m->scale) * sqrt(sum_sq(m->A, (size_t)m->r * (size_t)m->in)) *
                   sqrt(sum_sq(m->Bt, (size_t)m->r * (size_t)m->out));
    if (bound <= enough) return bound;
    double s2 = 0.0;
    for (int i = 0; i < m->r; i++)
        for (int j = 0; j < m->r; j++)
            s2 += dot_d(m->Bt + (size_t)i * m->out, m->Bt + (size_t)j * m->out, m->out) *
                  dot_d(m->A + (size_t)i * m->in, m->A + (size_t)j * m->in, m->in);
    return fabs((double)m->scale) * sqrt(s2 > 0.0 ? s2 : 0.0);
}

int rm_lora_check_scale(const rm_lora *a, const rm_llama *m) {
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *mod = &a->mods[i];
        if (!mod->r) continue;
        int l = i / RM_LIN_COUNT, w = i % RM_LIN_COUNT;
        double wn = weight_norm(&m->layers[l].w[w]);
        if (wn < 0.0) return rm_errorf(RM_ENOMEM, "out of memory");
        if (wn == 0.0) continue; // nothing to be relative to
        double un = update_norm(mod, RM_LORA_MAX_REL_NORM * wn);
        if (!(un <= RM_LORA_MAX_REL_NORM * wn))
            return rm_errorf(
                RM_EFORMAT,
                "%s: layer %d %s: the adapter's update s*B*A has norm %.3g, %.3g times the base weight's (%.3g); "
                "over %g times is refused as corrupt",
                a->path, l, rm_linear_names[w], un, un / wn, wn, RM_LORA_MAX_REL_NORM);
    }
    return RM_OK;
}

// ---------------------------------------------------------------- binding (cont.)

int rm_lora_bind(rm_lora *a, const rm_llama *m) {
    const rm_llama_hparams *hp = &m->hp;
    if (a->base == m) return RM_OK;
    if (a->arch[0] && arch_family(a->arch) != (int)hp->arch)
        return rm_errorf(RM_EMISMATCH, "%s: adapter is for architecture '%s', the base model is '%s'", a->path, a->arch,
                         base_arch(m));
    if (a->n_layer > hp->n_layer) {
        for (int i = hp->n_layer * RM_LIN_COUNT; i < a->n_layer * RM_LIN_COUNT; i++)
            if (a->mods[i].r)
                return rm_errorf(RM_EMISMATCH, "%s: adapter has weights for layer %d, the base model has %d layers",
                                 a->path, i / RM_LIN_COUNT, hp->n_layer);
    }
    int n_mod = 0;
    for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
        const rm_lora_mod *mod = &a->mods[i];
        if (!mod->r) continue;
        int l = i / RM_LIN_COUNT, w = i % RM_LIN_COUNT;
        int rc = rm_lora_check_shape(m, a->path, l, w, mod->r, mod->in, mod->out);
        if (rc) return rc;
        if (!isfinite(mod->scale))
            return rm_errorf(RM_EFORMAT, "%s: layer %d %s: scale is not finite", a->path, l, rm_linear_names[w]);
        n_mod++;
    }
    if (!n_mod) return rm_errorf(RM_EFORMAT, "%s: adapter has no LoRA weights", a->path);
    int rc = rm_lora_check_scale(a, m);
    if (rc) return rc;
    if (hp->head_dim % 2 || hp->head_dim > 2048)
        return rm_errorf(RM_EUNSUPPORTED, "%s: head size %d cannot be permuted", a->path, hp->head_dim);
    // Everything checked: now change the adapter.
    int want_perm = !hp->rope_neox;
    if (a->qk_permuted != want_perm) {
        for (int i = 0; i < a->n_layer * RM_LIN_COUNT; i++) {
            rm_lora_mod *mod = &a->mods[i];
            int w = i % RM_LIN_COUNT;
            if (!mod->r || (w != RM_LIN_Q && w != RM_LIN_K)) continue;
            int heads = w == RM_LIN_Q ? hp->n_head : hp->n_head_kv;
            drop_mirrors(mod);
            for (int j = 0; j < mod->r; j++)
                rm_lora_qk_permute(mod->Bt + (size_t)j * mod->out, heads, hp->head_dim, !want_perm);
        }
        a->qk_permuted = want_perm;
    }
    if (!a->arch[0]) strcpy(a->arch, base_arch(m));
    a->base = m;
    a->n_head = hp->n_head;
    a->n_head_kv = hp->n_head_kv;
    a->head_dim = hp->head_dim;
    return RM_OK;
}

int rm_lora_export_b(const rm_lora *a, int i, int permuted, float factor, float **out) {
    const rm_lora_mod *m = &a->mods[i];
    int w = i % RM_LIN_COUNT, qk = w == RM_LIN_Q || w == RM_LIN_K;
    int flip = qk && permuted != a->qk_permuted;
    *out = NULL;
    if (flip && !a->n_head)
        return rm_errorf(RM_EINVAL,
                         "%s: changing the Q/K row order needs the head count: bind the adapter to its base model",
                         a->path);
    float *b = malloc((size_t)m->r * (size_t)m->out * sizeof(float));
    float *col = malloc((size_t)m->out * sizeof(float));
    if (!b || !col) {
        free(b);
        free(col);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    for (int j = 0; j < m->r; j++) {
        memcpy(col, m->Bt + (size_t)j * m->out, (size_t)m->out * sizeof(float));
        if (flip) rm_lora_qk_permute(col, w == RM_LIN_Q ? a->n_head : a->n_head_kv, a->head_dim, !permuted);
        for (int64_t o = 0; o < m->out; o++) b[o * m->r + j] = col[o] * factor;
    }
    free(col);
    *out = b;
    return RM_OK;
}

// ---------------------------------------------------------------- random

int rm_lora_random(rm_lora **out, const rm_llama *m, int r, unsigned targets, uint64_t seed) {
    *out = NULL;
    rm_lora *a;
    int rc = rm_lora_new(&a, m->hp.n_layer);
    if (rc) return rc;
    uint64_t st = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e5bbull;
    a->alpha = 2.0f * (float)r;
    a->rank = r;
    float s = a->alpha / (float)r;
    for (int l = 0; l < m->hp.n_layer && !rc; l++)
        for (int w = 0; w < RM_LIN_COUNT && !rc; w++) {
            if (!(targets & (1u << w))) continue;
            const rm_tensor *W = &m->layers[l].w[w];
            rm_lora_mod *mod = &a->mods[l * RM_LIN_COUNT + w];
            if ((rc = rm_lora_mod_alloc(mod, r, W->ne[0], W->ne[1], s))) break;
            // |A x| ~ |x|/sqrt(3) per rank; B sized so s*B*A*x is ~5% of W*x.
            float ra = 1.0f / sqrtf((float)W->ne[0]), rb = 0.15f / (s * sqrtf((float)r));
            for (int64_t i = 0; i < r * W->ne[0]; i++) mod->A[i] = (2.0f * rm_rng_uniform(&st) - 1.0f) * ra;
            for (int64_t i = 0; i < r * W->ne[1]; i++) mod->Bt[i] = (2.0f * rm_rng_uniform(&st) - 1.0f) * rb;
        }
    if (!rc) {
        a->qk_permuted = !m->hp.rope_neox; // generated in the base's own order
        rc = rm_lora_bind(a, m);
    }
    if (rc) {
        rm_lora_free(a);
        return rc;
    }
    *out = a;
    return RM_OK;
}
