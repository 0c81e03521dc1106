// index.c — see index.h. Keys live in one array of rows (stride elements,
// zero-padded to a multiple of 32); an open-addressing table maps ids to rows.
#include "retrieve/index.h"
#include "retrieve/index_kernels.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/fp16.h"
#include "base/threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 512 // keys scored per kernel call (scores stay in L1/L2)

struct rm_index {
    int dim, stride;
    rm_key_type type;
    size_t n, cap;
    int64_t *ids;      // [cap]
    void *keys;        // [cap][stride] of the key type
    float *kscale;     // [cap] (INT8 only)
    int64_t *slot_id;  // hash table: id per slot
    int32_t *slot_pos; // row of that id, -1 empty
    size_t n_slots;    // power of two, > 2n
    int n_threads;
    rm_threadpool *tp;
};

static int g_force_scalar;
void rm_index_force_scalar(int on) { g_force_scalar = on; }
static int use_avx2(void) {
    const rm_cpu_features *f = rm_cpu();
    return !g_force_scalar && f->avx2 && f->fma && f->f16c;
}

static size_t elem_size(rm_key_type t) { return t == RM_KEY_F32 ? 4 : t == RM_KEY_F16 ? 2 : 1; }

int rm_key_type_parse(const char *s, rm_key_type *out) {
    if (!strcmp(s, "f32")) *out = RM_KEY_F32;
    else if (!strcmp(s, "f16")) *out = RM_KEY_F16;
    else if (!strcmp(s, "int8") || !strcmp(s, "i8") || !strcmp(s, "q8")) *out = RM_KEY_I8;
    else return rm_errorf(RM_EINVAL, "key type '%s' (want f32, f16 or int8)", s);
    return RM_OK;
}

const char *rm_key_type_name(rm_key_type t) { return t == RM_KEY_F32 ? "f32" : t == RM_KEY_F16 ? "f16" : "int8"; }

// ---------------------------------------------------------------------------
// Scalar kernels (the specification)

// s[qi][j] = q[qi] . keys[j]
void index_scores_f32(const float *q, int nq, const float *keys, size_t n, int stride, float *s) {
    for (size_t j = 0; j < n; j++)
        for (int qi = 0; qi < nq; qi++) {
            const float *a = q + (size_t)qi * stride, *b = keys + j * stride;
            float acc = 0;
            for (int d = 0; d < stride; d++) acc += a[d] * b[d];
            s[(size_t)qi * n + j] = acc;
        }
}

// s[qi][j] = q[qi] . f32(keys[j])
void index_scores_f16(const float *q, int nq, const uint16_t *keys, size_t n, int stride, float *s) {
    for (size_t j = 0; j < n; j++)
        for (int qi = 0; qi < nq; qi++) {
            const float *a = q + (size_t)qi * stride;
            const uint16_t *b = keys + j * stride;
            float acc = 0;
            for (int d = 0; d < stride; d++) acc += a[d] * rm_f16_to_f32(b[d]);
            s[(size_t)qi * n + j] = acc;
        }
}

// s[qi][j] = (u8[j] . q8[qi] - 128 qsum[qi]) * qscale[qi] * kscale[j]
void index_scores_i8(const int8_t *q8, const int32_t *qsum, const float *qscale, int nq, const uint8_t *keys,
                     const float *kscale, size_t n, int stride, float *s) {
    for (size_t j = 0; j < n; j++)
        for (int qi = 0; qi < nq; qi++) {
            const int8_t *a = q8 + (size_t)qi * stride;
            const uint8_t *b = keys + j * stride;
            int32_t acc = 0;
            for (int d = 0; d < stride; d++) acc += (int32_t)b[d] * a[d];
            s[(size_t)qi * n + j] = (float)(acc - 128 * qsum[qi]) * qscale[qi] * kscale[j];
        }
}

// Symmetric quantisation: x ~ q * scale with q in [-qmax, qmax]; padding 0.
// Returns the scale; *sum (may be NULL) gets the sum of q.
static float quantise(const float *x, int dim, int stride, int qmax, int8_t *q, int32_t *sum) {
    float amax = 0;
    for (int d = 0; d < dim; d++) amax = fmaxf(amax, fabsf(x[d]));
    float scale = amax > 0 ? amax / (float)qmax : 1.0f, inv = 1.0f / scale;
    int32_t s = 0;
    for (int d = 0; d < stride; d++) {
        q[d] = d < dim ? (int8_t)lrintf(x[d] * inv) : 0;
        s += q[d];
    }
    if (sum) *sum = s;
    return scale;
}

// ---------------------------------------------------------------------------
// Storage

int rm_index_create(int dim, rm_key_type type, rm_index **out) {
    *out = NULL;
    if (dim < 1 || dim > (1 << 22)) return rm_errorf(RM_EINVAL, "index: dimension %d", dim);
    if (type != RM_KEY_F32 && type != RM_KEY_F16 && type != RM_KEY_I8)
        return rm_errorf(RM_EINVAL, "index: key type %d", (int)type);
    rm_index *ix = calloc(1, sizeof *ix);
    if (!ix) return rm_errorf(RM_ENOMEM, "index: out of memory");
    ix->dim = dim;
    ix->stride = (dim + 31) / 32 * 32;
    ix->type = type;
    ix->n_threads = 1;
    *out = ix;
    return RM_OK;
}

void rm_index_free(rm_index *ix) {
    if (!ix) return;
    rm_threadpool_free(ix->tp);
    free(ix->ids);
    free(ix->keys);
    free(ix->kscale);
    free(ix->slot_id);
    free(ix->slot_pos);
    free(ix);
}

int rm_index_dim(const rm_index *ix) { return ix->dim; }
size_t rm_index_size(const rm_index *ix) { return ix->n; }
rm_key_type rm_index_type(const rm_index *ix) { return ix->type; }

void rm_index_set_threads(rm_index *ix, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads == ix->n_threads) return;
    rm_threadpool_free(ix->tp);
    ix->tp = n_threads > 1 ? rm_threadpool_create(n_threads) : NULL;
    ix->n_threads = ix->tp ? rm_threadpool_size(ix->tp) : 1;
}

static size_t slot_of(const rm_index *ix, int64_t id) {
    uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;
    size_t mask = ix->n_slots - 1, s = (size_t)(h >> 17) & mask;
    while (ix->slot_pos[s] >= 0 && ix->slot_id[s] != id) s = (s + 1) & mask;
    return s;
}

static int find_row(const rm_index *ix, int64_t id) {
    if (!ix->n_slots) return -1;
    return ix->slot_pos[slot_of(ix, id)];
}

static int rehash(rm_index *ix, size_t n_slots) {
    int64_t *sid = malloc(n_slots * sizeof *sid);
    int32_t *spos = malloc(n_slots * sizeof *spos);
    if (!sid || !spos) {
        free(sid);
        free(spos);
        return RM_ENOMEM;
    }
    free(ix->slot_id);
    free(ix->slot_pos);
    ix->slot_id = sid;
    ix->slot_pos = spos;
    ix->n_slots = n_slots;
    for (size_t s = 0; s < n_slots; s++) spos[s] = -1;
    for (size_t r = 0; r < ix->n; r++) {
        size_t s = slot_of(ix, ix->ids[r]);
        sid[s] = ix->ids[r];
        spos[s] = (int32_t)r;
    }
    return RM_OK;
}

static int grow(rm_index *ix) {
    if (ix->n >= (size_t)INT32_MAX - 1) return rm_errorf(RM_EFULL, "index: too many keys");
    size_t cap = ix->cap ? ix->cap * 2 : 64;
    int64_t *ids = realloc(ix->ids, cap * sizeof *ids);
    if (!ids) return rm_errorf(RM_ENOMEM, "index: out of memory");
    ix->ids = ids;
    void *keys = realloc(ix->keys, cap * (size_t)ix->stride * elem_size(ix->type));
    if (!keys) return rm_errorf(RM_ENOMEM, "index: out of memory");
    ix->keys = keys;
    float *ks = realloc(ix->kscale, cap * sizeof *ks);
    if (!ks) return rm_errorf(RM_ENOMEM, "index: out of memory");
    ix->kscale = ks;
    ix->cap = cap;
    if (rehash(ix, cap * 4)) return rm_errorf(RM_ENOMEM, "index: out of memory");
    return RM_OK;
}

static void store_row(rm_index *ix, size_t r, const float *key) {
    size_t st = (size_t)ix->stride;
    if (ix->type == RM_KEY_F32) {
        float *k = (float *)ix->keys + r * st;
        for (int d = 0; d < ix->stride; d++) k[d] = d < ix->dim ? key[d] : 0.0f;
        ix->kscale[r] = 1.0f;
    } else if (ix->type == RM_KEY_F16) {
        uint16_t *k = (uint16_t *)ix->keys + r * st;
        for (int d = 0; d < ix->stride; d++) k[d] = d < ix->dim ? rm_f32_to_f16(key[d]) : 0;
        ix->kscale[r] = 1.0f;
    } else {
        uint8_t *k = (uint8_t *)ix->keys + r * st;
        ix->kscale[r] = quantise(key, ix->dim, ix->stride, 127, (int8_t *)k, NULL);
        for (int d = 0; d < ix->stride; d++) k[d] = (uint8_t)((int8_t)k[d] + 128); // biased storage
    }
}

int rm_index_add(rm_index *ix, int64_t id, const float *key) {
    for (int d = 0; d < ix->dim; d++)
        if (!isfinite(key[d]))
            return rm_errorf(RM_EINVAL, "index: key of id %lld has a non-finite value", (long long)id);
    int r = find_row(ix, id);
    if (r >= 0) {
        store_row(ix, (size_t)r, key);
        return RM_OK;
    }
    if (ix->n == ix->cap) {
        int rc = grow(ix);
        if (rc) return rc;
    }
    store_row(ix, ix->n, key);
    ix->ids[ix->n] = id;
    size_t s = slot_of(ix, id);
    ix->slot_id[s] = id;
    ix->slot_pos[s] = (int32_t)ix->n;
    ix->n++;
    return RM_OK;
}

int rm_index_remove(rm_index *ix, int64_t id) {
    int r = find_row(ix, id);
    if (r < 0) return rm_errorf(RM_ENOTFOUND, "index: no key with id %lld", (long long)id);
    size_t last = ix->n - 1, es = elem_size(ix->type) * (size_t)ix->stride;
    if ((size_t)r != last) { // move the last row into the hole
        memcpy((char *)ix->keys + (size_t)r * es, (char *)ix->keys + last * es, es);
        ix->kscale[r] = ix->kscale[last];
        ix->ids[r] = ix->ids[last];
    }
    ix->n--;
    return rehash(ix, ix->n_slots) ? rm_errorf(RM_ENOMEM, "index: out of memory") : RM_OK;
}

// ---------------------------------------------------------------------------
// Search

// hits[0..*n) best first; keeps the k best (higher score, then smaller id).
static void topk_push(rm_hit *hits, int *n, int k, int64_t id, float score) {
    int m = *n;
    if (m == k) {
        const rm_hit *w = &hits[k - 1];
        if (score < w->score || (score == w->score && id > w->id)) return;
        m--;
    }
    int i = m;
    while (i > 0 && (hits[i - 1].score < score || (hits[i - 1].score == score && hits[i - 1].id > id))) {
        hits[i] = hits[i - 1];
        i--;
    }
    hits[i] = (rm_hit){id, score};
    *n = m + 1;
}

static int excluded(const int64_t *ex, int n, int64_t id) {
    for (int i = 0; i < n; i++)
        if (ex[i] == id) return 1;
    return 0;
}

typedef struct {
    const rm_index *ix;
    const float *q;   // [nq][stride] padded queries
    const int8_t *q8; // INT8: quantised queries
    const int32_t *qsum;
    const float *qscale;
    int nq, k, avx2;
    const int64_t *const *exclude;
    const int *n_exclude;
    rm_hit *hits;   // [nth][nq][k]
    int *n_hits;    // [nth][nq]
    float *scratch; // [nth][nq][BLOCK]
} search_job;

static void score_block(const search_job *j, size_t r0, size_t n, float *s) {
    const rm_index *ix = j->ix;
    size_t st = (size_t)ix->stride;
    if (ix->type == RM_KEY_F32) {
        const float *k = (const float *)ix->keys + r0 * st;
        (j->avx2 ? index_scores_f32_avx2 : index_scores_f32)(j->q, j->nq, k, n, ix->stride, s);
    } else if (ix->type == RM_KEY_F16) {
        const uint16_t *k = (const uint16_t *)ix->keys + r0 * st;
        (j->avx2 ? index_scores_f16_avx2 : index_scores_f16)(j->q, j->nq, k, n, ix->stride, s);
    } else {
        const uint8_t *k = (const uint8_t *)ix->keys + r0 * st;
        (j->avx2 ? index_scores_i8_avx2 : index_scores_i8)(j->q8, j->qsum, j->qscale, j->nq, k, ix->kscale + r0, n,
                                                           ix->stride, s);
    }
}

static void search_worker(void *ctx, int ith, int nth) {
    const search_job *j = ctx;
    long begin, end;
    rm_split_range((long)((j->ix->n + BLOCK - 1) / BLOCK), ith, nth, &begin, &end);
    rm_hit *hits = j->hits + (size_t)ith * (size_t)j->nq * (size_t)j->k;
    int *n_hits = j->n_hits + (size_t)ith * (size_t)j->nq;
    float *s = j->scratch + (size_t)ith * (size_t)j->nq * BLOCK;
    for (int qi = 0; qi < j->nq; qi++) n_hits[qi] = 0;
    for (long b = begin; b < end; b++) {
        size_t r0 = (size_t)b * BLOCK, n = j->ix->n - r0 < BLOCK ? j->ix->n - r0 : BLOCK;
        score_block(j, r0, n, s);
        for (int qi = 0; qi < j->nq; qi++) {
            rm_hit *h = hits + (size_t)qi * (size_t)j->k;
            const float *sq = s + (size_t)qi * n;
            const int64_t *ex = j->exclude ? j->exclude[qi] : NULL;
            int nex = j->n_exclude && ex ? j->n_exclude[qi] : 0;
            for (size_t r = 0; r < n; r++) {
                int64_t id = j->ix->ids[r0 + r];
                float sc = sq[r];
                if (n_hits[qi] == j->k && (sc < h[j->k - 1].score || (sc == h[j->k - 1].score && id > h[j->k - 1].id)))
                    continue;
                if (nex && excluded(ex, nex, id)) continue;
                topk_push(h, &n_hits[qi], j->k, id, sc);
            }
        }
    }
}

int rm_index_search_batch(const rm_index *ix, const float *q, int nq, int k, const int64_t *const *exclude,
                          const int *n_exclude, rm_hit *out, int *n_out) {
    if (nq < 0 || k < 1) return rm_errorf(RM_EINVAL, "index search: nq %d, k %d", nq, k);
    if (nq == 0) return RM_OK;
    int nth = ix->n > 4 * BLOCK ? ix->n_threads : 1;
    size_t st = (size_t)ix->stride;
    search_job j = {.ix = ix, .nq = nq, .k = k, .avx2 = use_avx2(), .exclude = exclude, .n_exclude = n_exclude};
    float *qp = calloc((size_t)nq * st, sizeof *qp);
    int8_t *q8 = ix->type == RM_KEY_I8 ? malloc((size_t)nq * st) : NULL;
    float *qscale = malloc((size_t)nq * sizeof *qscale);
    int32_t *qsum = malloc((size_t)nq * sizeof *qsum);
    rm_hit *hits = malloc((size_t)nth * (size_t)nq * (size_t)k * sizeof *hits);
    int *n_hits = malloc((size_t)nth * (size_t)nq * sizeof *n_hits);
    float *scratch = malloc((size_t)nth * (size_t)nq * BLOCK * sizeof *scratch);
    int rc = RM_OK;
    if (!qp || !qscale || !qsum || !hits || !n_hits || !scratch || (ix->type == RM_KEY_I8 && !q8)) {
        rc = rm_errorf(RM_ENOMEM, "index search: out of memory");
        goto done;
    }
    for (int qi = 0; qi < nq; qi++) {
        memcpy(qp + (size_t)qi * st, q + (size_t)qi * (size_t)ix->dim, (size_t)ix->dim * sizeof *qp);
        if (q8)
            qscale[qi] =
                quantise(q + (size_t)qi * (size_t)ix->dim, ix->dim, ix->stride, 64, q8 + (size_t)qi * st, &qsum[qi]);
    }
    j.q = qp;
    j.q8 = q8;
    j.qscale = qscale;
    j.qsum = qsum;
    j.hits = hits;
    j.n_hits = n_hits;
    j.scratch = scratch;
    if (nth > 1) rm_threadpool_run(ix->tp, search_worker, &j);
    else search_worker(&j, 0, 1);
    // Merge the workers' lists into worker 0's.
    for (int t = 1; t < nth; t++)
        for (int qi = 0; qi < nq; qi++) {
            const rm_hit *h = hits + ((size_t)t * nq + qi) * (size_t)k;
            for (int i = 0; i < n_hits[(size_t)t * nq + qi]; i++)
                topk_push(hits + (size_t)qi * k, &n_hits[qi], k, h[i].id, h[i].score);
        }
    for (int qi = 0; qi < nq; qi++) {
        memcpy(out + (size_t)qi * k, hits + (size_t)qi * k, (size_t)n_hits[qi] * sizeof *out);
        n_out[qi] = n_hits[qi];
    }
done:
    free(qp);
    free(q8);
    free(qscale);
    free(qsum);
    free(hits);
    free(n_hits);
    free(scratch);
    return rc;
}

int rm_index_search(const rm_index *ix, const float *q, int k, const int64_t *exclude, int n_exclude, rm_hit *out,
                    int *n_out) {
    return rm_index_search_batch(ix, q, 1, k, &exclude, &n_exclude, out, n_out);
}
