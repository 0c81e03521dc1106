// matmul.c — rm_matmul: the reference (scalar) version, the dispatch to SIMD
// kernels, activation quantization, threading; plus dot/axpy and the
// read-bandwidth probe.
//
// Threading: workers take chunks of weight rows (multiples of 12, about 8
// chunks per worker) from a shared counter; each chunk streams its slice of W
// once per activation block (decode is memory-bound, so this is what
// matters). When W has too few rows to share, the activation rows are split
// instead. Activation rows are processed in blocks small enough to stay in L2
// while a weight tile sweeps them.
#include "tensor/tensor.h"
#include "tensor/kernels.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/file.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------
// Scalar kernel = the specification. Dequantizes W a block at a time and
// accumulates the dot product in double.

// y[n,out] = x[n,in] @ W[out,in]^T   (rows [r0,r1) of W, rows [c0,c1) of x)
static void mm_scalar_rows(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1);

static void mm_scalar(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1) {
    if (rm_type_r16_base(m->type) >= 0) {
        mm_scalar_rows(m, r0, r1, c0, c1);
        return;
    }
    int blk = rm_type_block_elems(m->type);
    size_t bbytes = rm_type_block_bytes(m->type);
    float wbuf[256];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = m->w + (size_t)r * m->w_row;
        for (int c = c0; c < c1; c++) {
            const float *x = m->x + (int64_t)c * m->ldx;
            double acc = 0;
            for (int64_t b = 0; b < m->in / blk; b++) {
                rm_dequantize_row(m->type, w + (size_t)b * bbytes, wbuf, blk);
                for (int j = 0; j < blk; j++) acc += (double)wbuf[j] * (double)x[b * blk + j];
            }
            rm_mm_store(m, c, r, (float)acc);
        }
    }
}

// The same for weights that dequantize only a whole row at a time (r16):
// the row once, then the same sums in double.
static void mm_scalar_rows(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1) {
    float *wrow = malloc((size_t)m->in * sizeof(float));
    if (!wrow) {
        rm_errorf(RM_ENOMEM, "matmul: out of memory for a row of %lld", (long long)m->in);
        return;
    }
    for (int64_t r = r0; r < r1; r++) {
        rm_dequantize_row(m->type, m->w + (size_t)r * m->w_row, wrow, m->in);
        for (int c = c0; c < c1; c++) {
            const float *x = m->x + (int64_t)c * m->ldx;
            double acc = 0;
            for (int64_t i = 0; i < m->in; i++) acc += (double)wrow[i] * (double)x[i];
            rm_mm_store(m, c, r, (float)acc);
        }
    }
    free(wrow);
}

static int mm_setup(rm_mm *m, const rm_tensor *W, const float *x, int64_t ldx, float *y, int64_t ldy, int n,
                    int accumulate) {
    memset(m, 0, sizeof *m);
    if (!W || !rm_type_block_elems(W->type)) return rm_errorf(RM_EUNSUPPORTED, "matmul: unsupported weight type");
    m->type = W->type;
    m->in = W->ne[0];
    m->out = W->ne[1];
    m->w_row = rm_row_size(W->type, m->in);
    if (m->in <= 0 || m->out <= 0 || m->w_row == 0 || n < 0 || (n > 1 && (ldx < m->in || ldy < m->out)))
        return rm_errorf(RM_EINVAL, "matmul: bad shape in=%lld out=%lld n=%d", (long long)m->in, (long long)m->out, n);
    if (n > 0 && (!W->data || !x || !y)) return rm_errorf(RM_EINVAL, "matmul: NULL data");
    m->w = W->data;
    m->n = n;
    m->x = x;
    m->ldx = ldx;
    m->y = y;
    m->ldy = ldy;
    m->accumulate = accumulate;
    return RM_OK;
}

void rm_matmul_ref(const rm_tensor *W, const float *x, int64_t ldx, float *y, int64_t ldy, int n, int accumulate) {
    rm_mm m;
    if (mm_setup(&m, W, x, ldx, y, ldy, n, accumulate) != RM_OK) return;
    mm_scalar(&m, 0, m.out, 0, n);
}

// ---------------------------------------------------------------------------
// Activation quantization (int8, scale amax/127 per m->qx.blk elements).

// qx[n,in] int8 = quantize(x[n,in]), rows [c0,c1)
void rm_quantize_x(const rm_mm *m, int c0, int c1) {
    int blk = m->qx.blk;
    int64_t nb = m->in / blk, ns = m->in / 32;
    for (int c = c0; c < c1; c++) {
        const float *x = m->x + (int64_t)c * m->ldx;
        int8_t *q = m->qx.q + (int64_t)c * m->in;
        for (int64_t b = 0; b < nb; b++) {
            float amax = 0;
            for (int j = 0; j < blk; j++) {
                float a = fabsf(x[b * blk + j]);
                amax = a > amax ? a : amax;
            }
            float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0;
            m->qx.d[c * nb + b] = d;
            for (int j = 0; j < blk; j++) q[b * blk + j] = (int8_t)lrintf(x[b * blk + j] * id);
        }
        for (int64_t s = 0; s < ns; s++) {
            int sum = 0;
            for (int j = 0; j < 32; j++) sum += q[s * 32 + j];
            m->qx.sum[c * ns + s] = (int16_t)sum;
        }
    }
}

// ---------------------------------------------------------------------------
// Dispatch and threading.

static int use_avx2(void) {
    const rm_cpu_features *f = rm_cpu();
    return f->avx2 && f->fma && f->f16c;
}

static int use_avx512(void) {
    const rm_cpu_features *f = rm_cpu();
    return f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && use_avx2();
}

// The int8 kernels for AVX-512 need VNNI too; without it (Skylake-X) the AVX2
// ones run.
static int use_avx512_vnni(void) { return use_avx512() && rm_cpu()->avx512vnni; }
// bf16 weights with the bf16 dot products (vdpbf16ps): activations rounded to bf16.
static int use_avx512_bf16(void) { return use_avx512() && rm_cpu()->avx512bf16; }

// The 32-value block types the AVX-512 kernels read through the 16-block copy
// of the activations.
static int is_blk32(rm_type t) {
    return t == RM_TYPE_Q8_0 || t == RM_TYPE_Q4_0 || t == RM_TYPE_Q4_1 || t == RM_TYPE_Q5_0 || t == RM_TYPE_Q5_1;
}

static int is_quantized(rm_type t) {
    return is_blk32(t) || t == RM_TYPE_Q4_K || t == RM_TYPE_Q5_K || t == RM_TYPE_Q6_K || t == RM_TYPE_Q3_K ||
           rm_type_r16_base(t) >= 0;
}

const char *rm_matmul_family(rm_type t) {
    if (!use_avx2() || (rm_type_r16_base(t) >= 0 && !use_avx512_vnni())) return "scalar";
    if (is_quantized(t)) return use_avx512_vnni() ? "avx512-vnni" : "avx2";
    if (t == RM_TYPE_BF16 && use_avx512_bf16()) return "avx512-bf16";
    return use_avx512() && t != RM_TYPE_F32 ? "avx512" : "avx2";
}

// The kernel for W's type on this CPU; *qblk = activation quantization block
// (0 when the kernel reads f32 activations); *t16 = 1 when it reads the
// 16-block copy of the activations too (rm_qx); *xbf = 1 when it reads their
// bf16 copy (rm_mm.xh).
static rm_mm_kernel pick_kernel(rm_type t, int *qblk, int *t16, int *xbf) {
    *qblk = *t16 = 0;
    *xbf = t == RM_TYPE_BF16 && use_avx512_bf16();
    if (*xbf) return rm_mm_bf16dp_avx512;
    *t16 = (is_blk32(t) || t == RM_TYPE_Q4_K || t == RM_TYPE_Q5_K || rm_type_r16_base(t) >= 0) && use_avx512_vnni();
    if (rm_type_r16_base(t) >= 0) { // repacked for the VNNI kernels; another family (forced later) reads them slowly
        *qblk = !*t16 ? 0 : t == RM_TYPE_Q4_K_R16 ? 256 : 32;
        return !*t16                     ? mm_scalar
               : t == RM_TYPE_Q8_0_R16   ? rm_mm_q8_0_r16_avx512
               : t == RM_TYPE_Q4_0_R16   ? rm_mm_q4_0_r16_avx512
                                         : rm_mm_q4_k_r16_avx512;
    }
    if (!use_avx2()) return mm_scalar;
    const int v512 = use_avx512(), q512 = use_avx512_vnni();
    switch (t) {
    // f32 weights stay on AVX2:
    // rm_matmul meets them only in training's attention products, whose
    // summation order training runs are sensitive to (a toy adapter that
    // learns with one order can stall with another), so they keep the order
    // they had
    case RM_TYPE_F32: return rm_mm_f32_avx2;
    case RM_TYPE_F16: return v512 ? rm_mm_f16_avx512 : rm_mm_f16_avx2;
    case RM_TYPE_BF16: return v512 ? rm_mm_bf16_avx512 : rm_mm_bf16_avx2;
    case RM_TYPE_Q8_0: *qblk = 32; return q512 ? rm_mm_q8_0_avx512 : rm_mm_q8_0_avx2;
    case RM_TYPE_Q4_0: *qblk = 32; return q512 ? rm_mm_q4_0_avx512 : rm_mm_q4_0_avx2;
    case RM_TYPE_Q4_K: *qblk = 256; return q512 ? rm_mm_q4_k_avx512 : rm_mm_q4_k_avx2;
    case RM_TYPE_Q4_1: *qblk = 32; return q512 ? rm_mm_q4_1_avx512 : rm_mm_q4_1_avx2;
    case RM_TYPE_Q5_0: *qblk = 32; return q512 ? rm_mm_q5_0_avx512 : rm_mm_q5_0_avx2;
    case RM_TYPE_Q5_1: *qblk = 32; return q512 ? rm_mm_q5_1_avx512 : rm_mm_q5_1_avx2;
    case RM_TYPE_Q5_K: *qblk = 256; return q512 ? rm_mm_q5_k_avx512 : rm_mm_q5_k_avx2;
    case RM_TYPE_Q6_K: *qblk = 256; return q512 ? rm_mm_q6_k_avx512 : rm_mm_q6_k_avx2;
    case RM_TYPE_Q3_K: *qblk = 256; return q512 ? rm_mm_q3_k_avx512 : rm_mm_q3_k_avx2;
    default: break;
    }
    return mm_scalar;
}

// ---------------------------------------------------------------------------
// Repacking weights at load (repack.c has the layout).

typedef struct {
    rm_tensor *W;
    size_t w_row;
    uint8_t *tmp; // a row per worker
} repack_job;

static void repack_task(void *ctx, int ith, int nth) {
    repack_job *j = ctx;
    long b, e;
    rm_split_range(j->W->ne[1], ith, nth, &b, &e);
    rm_r16_pack_rows_avx512(j->W->type, j->W->data, j->w_row, j->W->ne[0], b, e, j->tmp + (size_t)ith * j->w_row);
}

int rm_repack_for_kernels(rm_tensor *W, rm_threadpool *tp) {
    const char *env = getenv("RAMOLE_REPACK");
    if ((env && strcmp(env, "0") == 0) || !use_avx512_vnni()) return 0;
    if ((W->type != RM_TYPE_Q8_0 && W->type != RM_TYPE_Q4_0 && W->type != RM_TYPE_Q4_K) || W->n_dims != 2 ||
        W->ne[0] < 16 * 32 || !W->data)
        return 0;
    repack_job j = {W, rm_row_size(W->type, W->ne[0]), NULL};
    j.tmp = malloc(j.w_row * (size_t)rm_threadpool_size(tp));
    if (!j.tmp) return 0; // the kernels read the base layout just as well, only slower
    rm_threadpool_run(tp, repack_task, &j);
    free(j.tmp);
    W->type = W->type == RM_TYPE_Q8_0 ? RM_TYPE_Q8_0_R16 : W->type == RM_TYPE_Q4_0 ? RM_TYPE_Q4_0_R16 : RM_TYPE_Q4_K_R16;
    return 1;
}

typedef struct {
    rm_mm m[RM_MATMUL_MAX];
    int count;
    rm_mm_kernel k;
    int split_x;                   // 1: split activation rows across workers, 0: weight rows
    int xb;                        // activation rows per block
    long chunk[RM_MATMUL_MAX];     // weight rows per work item (a multiple of 12), per matrix
    long first[RM_MATMUL_MAX + 1]; // work items of matrix g: [first[g], first[g+1])
    atomic_long next;              // next work item
} mm_job;

static void mm_task(void *ctx, int ith, int nth) {
    mm_job *j = ctx;
    const int n = j->m[0].n;
    if (j->split_x) {
        long b, e;
        rm_split_range(n, ith, nth, &b, &e);
        for (int g = 0; g < j->count; g++)
            for (long c = b; c < e; c += j->xb)
                j->k(&j->m[g], 0, j->m[g].out, (int)c, (int)(c + j->xb < e ? c + j->xb : e));
        return;
    }
    // Workers take chunks of weight rows from a shared counter, so a worker
    // that starts late (woken from sleep, or sharing its core with another
    // process) takes fewer chunks instead of holding everyone up.
    for (int g = 0;;) {
        long item = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        while (g < j->count && item >= j->first[g + 1]) g++;
        if (g == j->count) return;
        const rm_mm *m = &j->m[g];
        int64_t r0 = (int64_t)(item - j->first[g]) * j->chunk[g];
        int64_t r1 = r0 + j->chunk[g] < m->out ? r0 + j->chunk[g] : m->out;
        for (int c = 0; c < n; c += j->xb) j->k(m, r0, r1, c, c + j->xb < n ? c + j->xb : n);
    }
}

static void bf16_task(void *ctx, int ith, int nth) {
    const rm_mm *m = ctx;
    long b, e;
    rm_split_range(m->n, ith, nth, &b, &e);
    rm_x_to_bf16_avx512(m, (int)b, (int)e);
}

static void quantize_task(void *ctx, int ith, int nth) {
    const rm_mm *m = ctx;
    long b, e;
    rm_split_range(m->n, ith, nth, &b, &e);
    if (use_avx2()) rm_quantize_x_avx2(m, (int)b, (int)e);
    else rm_quantize_x(m, (int)b, (int)e);
    if (m->qx.groups) rm_qx_t16_avx512(m, (int)b, (int)e);
}

// The matrices of j->m (same type and input size, one x) in one pass of the
// pool: x is quantized once and the workers share one queue of row chunks.
static void matmul_group(rm_threadpool *tp, mm_job *job) {
    rm_mm *m0 = &job->m[0];
    const int n = m0->n;
    int qblk, t16, xbf;
    job->k = pick_kernel(m0->type, &qblk, &t16, &xbf);
    void *qbuf = NULL;
    if (xbf) { // the activations' bf16 copy, rows padded to 32
        int64_t ld = (m0->in + 31) & ~(int64_t)31;
        qbuf = aligned_alloc(64, (size_t)n * (size_t)ld * sizeof(uint16_t));
        if (!qbuf) {
            job->k = mm_scalar; // out of memory for the copy: the float kernel
        } else {
            for (int g = 0; g < job->count; g++) job->m[g].xh = qbuf, job->m[g].ldxh = ld;
            if (n >= 16 && tp) rm_threadpool_run(tp, bf16_task, m0);
            else bf16_task(m0, 0, 1);
        }
    } else if (qblk) {
        size_t nq = (size_t)n * (size_t)m0->in, nd = nq / (size_t)qblk, ns = nq / 32;
        size_t groups = t16 ? ((size_t)m0->in / 32 + 15) / 16 : 0, ng = (size_t)n * groups;
        size_t off_d = (nq + 63) & ~(size_t)63, off_s = off_d + ((nd * 4 + 63) & ~(size_t)63);
        size_t off_tq = off_s + ((ns * 2 + 63) & ~(size_t)63), off_td = off_tq + ng * 512;
        size_t off_ts = off_td + ng * 64, total = (off_ts + ng * 32 + 63) & ~(size_t)63;
        qbuf = aligned_alloc(64, total);
        if (!qbuf) {
            // Out of memory for the int8 copy: fall back to the float kernel.
            job->k = mm_scalar;
        } else {
            char *qb = qbuf;
            rm_qx qx = {qblk,
                        qbuf,
                        (float *)(qb + off_d),
                        (int16_t *)(qb + off_s),
                        (int64_t)groups,
                        (int8_t *)(qb + off_tq),
                        (float *)(qb + off_td),
                        (int16_t *)(qb + off_ts)};
            for (int g = 0; g < job->count; g++) job->m[g].qx = qx;
            if (n >= 16 && tp) rm_threadpool_run(tp, quantize_task, m0);
            else quantize_task(m0, 0, 1);
        }
    }
    size_t row_bytes = (size_t)m0->in * (xbf ? 2 : qbuf ? 1 : sizeof(float)); // per activation row streamed
    int nth = rm_threadpool_size(tp);
    long xb = (long)((192 * 1024) / row_bytes) & ~3L, out = 0;
    job->xb = (int)(xb < 4 ? 4 : xb > n ? n : xb);
    for (int g = 0; g < job->count; g++) out += job->m[g].out;
    job->split_x = out < 16L * nth && n >= 4L * nth;
    // About 8 chunks per worker over all the matrices, in groups of 12 rows
    // (a multiple of every kernel's register tile height).
    job->first[0] = 0;
    for (int g = 0; g < job->count; g++) {
        long share = (job->m[g].out * 8L * nth + out - 1) / out; // this matrix's part of the chunks
        long chunk = ((job->m[g].out + share - 1) / share + 11) / 12 * 12;
        job->chunk[g] = chunk;
        job->first[g + 1] = job->first[g] + (job->m[g].out + chunk - 1) / chunk;
    }
    atomic_init(&job->next, 0);
    rm_threadpool_run(tp, mm_task, job);
    free(qbuf);
}

void rm_matmul(rm_threadpool *tp, const rm_tensor *W, const float *x, int64_t ldx, float *y, int64_t ldy, int n,
               int accumulate) {
    rm_matmul_many(tp, 1, &W, x, ldx, &y, &ldy, n, accumulate);
}

void rm_matmul_many(rm_threadpool *tp, int count, const rm_tensor *const *W, const float *x, int64_t ldx,
                    float *const *y, const int64_t *ldy, int n, int accumulate) {
    mm_job job;
    job.count = 0;
    for (int g = 0; g < count; g++) {
        rm_mm *m = &job.m[job.count];
        if (mm_setup(m, W[g], x, ldx, y[g], ldy[g], n, accumulate) != RM_OK || n == 0) continue;
        // a matrix that cannot join the group (another type or input size) goes alone
        if (job.count > 0 && (m->type != job.m[0].type || m->in != job.m[0].in || job.count == RM_MATMUL_MAX)) {
            mm_job one;
            one.count = 1;
            one.m[0] = *m;
            matmul_group(tp, &one);
            continue;
        }
        job.count++;
    }
    if (job.count) matmul_group(tp, &job);
}

// ---------------------------------------------------------------------------
// Vector helpers.

float rm_dot_f32(const float *a, const float *b, int64_t n) {
    if (use_avx512()) return rm_dot_f32_avx512(a, b, n);
    if (use_avx2()) return rm_dot_f32_avx2(a, b, n);
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void rm_axpy_f32(float *y, float a, const float *x, int64_t n) {
    if (use_avx2()) {
        rm_axpy_f32_avx2(y, a, x, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

// The steps of kernels.h's exponential on one value (fmaf: the FMAs the
// vector kernels use, rounded once).
static float exp_steps(float x) {
    static const float c[8] = RM_EXP_TAYLOR;
    x = x < RM_EXP_HI ? x : RM_EXP_HI; // as vminps / vmaxps order their operands
    x = x > RM_EXP_LO ? x : RM_EXP_LO;
    float n = nearbyintf(x * RM_EXP_LOG2E);
    float r = fmaf(n, -RM_EXP_LN2_LO, fmaf(n, -RM_EXP_LN2_HI, x));
    float p = c[0];
    for (int i = 1; i < 8; i++) p = fmaf(p, r, c[i]);
    uint32_t bits;
    memcpy(&bits, &p, 4);
    bits += (uint32_t)(int32_t)n << 23;
    memcpy(&p, &bits, 4);
    return p;
}

void rm_silu_mul_f32(float *h, const float *g, const float *u, int64_t n) {
    if (use_avx512()) {
        rm_silu_mul_f32_avx512(h, g, u, n);
        return;
    }
    if (use_avx2()) {
        rm_silu_mul_f32_avx2(h, g, u, n);
        return;
    }
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + exp_steps(0.0f - g[i])) * u[i]; // 0 - g as the vector kernels
}

float rm_exp_sum_f32(float *s, int64_t n, float mx) {
    if (use_avx512()) return rm_exp_sum_f32_avx512(s, n, mx);
    if (use_avx2()) return rm_exp_sum_f32_avx2(s, n, mx);
    float lane[16] = {0}, sum = 0.0f;
    for (int64_t i = 0; i < n; i++) lane[i % 16] += (s[i] = exp_steps(s[i] - mx));
    for (int k = 0; k < 16; k++) sum += lane[k];
    return sum;
}

float rm_scale_max_f32(float *s, int64_t n, float c) {
    if (use_avx512()) return rm_scale_max_f32_avx512(s, n, c);
    if (use_avx2()) return rm_scale_max_f32_avx2(s, n, c);
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s[i] *= c;
        if (s[i] > mx) mx = s[i];
    }
    return mx;
}

void rm_scale_f32(float *s, int64_t n, float c) {
    if (use_avx512()) rm_scale_f32_avx512(s, n, c);
    else if (use_avx2()) rm_scale_f32_avx2(s, n, c);
    else
        for (int64_t i = 0; i < n; i++) s[i] *= c;
}

// ---------------------------------------------------------------------------
// Read bandwidth: every worker sums its slice of a 1 GiB buffer; best of 3.

typedef struct {
    const float *buf;
    long n;
    double sums[1024];
} bw_job;

static void bw_task(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    long b, e;
    rm_split_range(j->n, ith, nth, &b, &e);
    double s = 0;
    if (use_avx2()) {
        s = rm_sum_f32_avx2(j->buf + b, e - b);
    } else {
        for (long i = b; i < e; i++) s += j->buf[i];
    }
    j->sums[ith & 1023] = s;
}

static void bw_fill(void *ctx, int ith, int nth) {
    bw_job *j = ctx;
    long b, e;
    rm_split_range(j->n, ith, nth, &b, &e);
    float *p = (float *)j->buf;
    for (long i = b; i < e; i++) p[i] = (float)(i & 7);
}

double rm_measure_read_bandwidth(rm_threadpool *tp) {
    size_t bytes = (size_t)1 << 30;
    bw_job *j = calloc(1, sizeof *j);
    // huge pages, as model weights get (rm_mmap_open_resident): with 4 KiB
    // pages the probe paid TLB misses decode does not, and decode measured
    // above its "bound" (44 vs 30 GB/s on a Zen 5)
    float *buf = j ? rm_huge_alloc(bytes) : NULL;
    if (!buf) {
        free(j);
        rm_errorf(RM_ENOMEM, "bandwidth probe: cannot allocate 1 GiB");
        return 0;
    }
    j->buf = buf;
    j->n = (long)(bytes / sizeof(float));
    rm_threadpool_run(tp, bw_fill, j); // first touch from the workers
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = rm_now();
        rm_threadpool_run(tp, bw_task, j);
        double dt = rm_now() - t0;
        if (dt > 0 && (double)bytes / dt / 1e9 > best) best = (double)bytes / dt / 1e9;
    }
    rm_huge_free(buf, bytes);
    free(j);
    return best;
}

// ---------------------------------------------------------------------------
// int8 compute ceiling: every worker runs the register-only loop; the rate is
// the total over the slowest worker's time (workers start together).

typedef struct {
    long iters;
    int full, avx512; // avx512: 0 the AVX2 int8 step, 1 the VNNI one, 2 vdpbf16ps
    double t[1024];
    float sink[1024];
} peak_job;

static void peak_task(void *ctx, int ith, int nth) {
    peak_job *j = ctx;
    double t0 = rm_now();
    j->sink[ith & 1023] = j->avx512 == 2 ? rm_bf16_peak_avx512(j->iters)
                          : j->avx512  ? rm_int8_peak_avx512(j->iters, j->full)
                                       : rm_int8_peak_avx2(j->iters, j->full);
    j->t[ith & 1023] = rm_now() - t0;
}

// The best of 3 rates (G ops/s) of peak_task over the pool, each timed by its
// slowest worker: iters x 10 chains x per_step multiply-adds, 2 ops each.
static double peak_rate(rm_threadpool *tp, long iters, int full, int avx512, double per_step) {
    int nth = rm_threadpool_size(tp);
    if (nth > 1024) nth = 1024;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        peak_job j = {.iters = iters, .full = full, .avx512 = avx512};
        rm_threadpool_run(tp, peak_task, &j);
        double slowest = 0;
        for (int i = 0; i < nth; i++) slowest = j.t[i] > slowest ? j.t[i] : slowest;
        double g = slowest > 0 ? (double)nth * (double)j.iters * 10 * per_step * 2 / slowest / 1e9 : 0;
        if (g > best) best = g;
    }
    return best;
}

double rm_measure_bf16_peak(rm_threadpool *tp) {
    if (!use_avx512_bf16()) return 0;
    return peak_rate(tp, 4000000, 0, 2, 32); // 32 bf16 products a step
}

void rm_measure_int8_peak(rm_threadpool *tp, double *kernel_gops, double *bare_gops) {
    *kernel_gops = *bare_gops = 0;
    if (!use_avx2()) return;
    const int avx512 = use_avx512_vnni();
    // int8 products per chain step: AVX2 32; AVX-512 512 (a kernel step: 16
    // blocks) or 64 (one vpdpbusd)
    for (int full = 0; full <= 1; full++) {
        const double per_step = !avx512 ? 32 : full ? 512 : 64;
        *(full ? kernel_gops : bare_gops) = peak_rate(tp, per_step > 64 ? 500000 : 4000000, full, avx512, per_step);
    }
}
