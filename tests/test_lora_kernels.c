// test_lora_kernels.c — the batched hook's LoRA kernels (lora/batch_impl.h):
// every family the CPU has, from f32 and from the packed f16 and 8-bit mirrors, against
// a double-precision product computed here for odd shapes and every block
// size; a dot or an output element has the same bits whatever block or
// column range it is computed in; and the packed mirrors hold each weight
// where (and as) adapter.h says.
#include "testing.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/fp16.h"
#include "lora/adapter.h"
#include "lora/batch_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_seed = 0x10AAB5EEDull;
static float rnd(void) { // uniform in [-1, 1)
    g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_seed >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

// The families this CPU runs (scalar always).
static int families(int *isa) {
    int n = 0;
    isa[n++] = 0;
    const rm_cpu_features *f = rm_cpu();
    if (f->avx2 && f->fma && f->f16c) isa[n++] = 1;
    if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx2 && f->fma && f->f16c) isa[n++] = 2;
    return n;
}

// A module of rank r, W [out, in], random A and B, with its f16 and 8-bit mirrors.
static int make_mod(rm_lora_mod *m, int r, int64_t in, int64_t out) {
    memset(m, 0, sizeof *m);
    int rc = rm_lora_mod_alloc(m, r, in, out, 1.0f);
    if (rc) return rc;
    for (size_t i = 0; i < (size_t)r * (size_t)in; i++) m->A[i] = 0.5f * rnd();
    for (size_t i = 0; i < (size_t)r * (size_t)out; i++) m->Bt[i] = 0.5f * rnd();
    rc = rm_lora_mod_make_f16(m);
    return rc ? rc : rm_lora_mod_make_q8(m);
}

static void free_mod(rm_lora_mod *m) {
    free(m->A);
    free(m->Bt);
    free(m->A16);
    free(m->Bt16);
    free(m->A8);
    free(m->Bt8);
    free(m->s8);
}

// The matrix A (a = 1) or B^T of m as a kernel of kind 0 (f32), 1 (f16), 2 (8-bit) reads it.
static lb_w view(const rm_lora_mod *m, int kind, int a) {
    lb_w w = {0};
    if (kind == 2) w.q = a ? m->A8 : m->Bt8, w.s = a ? m->s8 : m->s8 + m->r;
    else if (kind == 1) w.h = a ? m->A16 : m->Bt16;
    else w.f = a ? m->A : m->Bt;
    return w;
}

// The 8-bit value of v in a row of n values v0 as adapter.h describes it:
// scale = largest magnitude / 127, the value rounded to nearest.
static double q8_value(float v, const float *v0, int64_t n, int8_t *q) {
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(v0[i]));
    float s = (float)mx / 127.0f;
    double r = s > 0 ? nearbyint((double)v / s) : 0;
    if (q) *q = (int8_t)r;
    return s * r;
}

// A's (j, k) and B^T's (j, o) as the kernels should see them.
static double as_kind(float v, int kind, const float *row, int64_t n) {
    return kind == 2 ? q8_value(v, row, n, NULL) : kind == 1 ? rm_f16_to_f32(rm_f32_to_f16(v)) : v;
}
static double a_at(const rm_lora_mod *m, int kind, int j, int64_t k) {
    const float *row = m->A + (size_t)j * (size_t)m->in;
    return as_kind(row[k], kind, row, m->in);
}
static double b_at(const rm_lora_mod *m, int kind, int j, int64_t o) {
    const float *row = m->Bt + (size_t)j * (size_t)m->out;
    return as_kind(row[o], kind, row, m->out);
}

TEST(lora_kernels_match_double_reference) {
    static const int ins[] = {1, 7, 16, 50, 100}, outs[] = {1, 5, 32, 47, 160}, ranks[] = {1, 3, 4, 6, 16};
    int isa[3], nf = families(isa), checked = 0;
    for (int s = 0; s < 5; s++) {
        int64_t in = ins[s], out = outs[(s * 3 + 1) % 5];
        int r = ranks[(s * 2 + 3) % 5];
        rm_lora_mod m;
        REQUIRE(make_mod(&m, r, in, out) == RM_OK);
        float x[4][100], y0[4][160], y[4][160], t[4][16], c[4];
        for (int i = 0; i < 4; i++) {
            for (int k = 0; k < in; k++) x[i][k] = rnd();
            for (int o = 0; o < out; o++) y0[i][o] = rnd();
            c[i] = 0.25f + (float)i;
        }
        for (int fi = 0; fi < nf; fi++)
            for (int kind = 0; kind < 3; kind++) // f32, f16, 8-bit
                for (int nt = 1; nt <= LB_NT; nt++)
                    for (int nj = 1; nj <= LB_NJ && nj <= r; nj++) {
                        int j0 = r - nj; // the last rows: the packed mirror's padded block when r % 4
                        const float *xp[4] = {x[0], x[1], x[2], x[3]};
                        float *tp[4] = {t[0], t[1], t[2], t[3]};
                        memset(t, 0, sizeof t);
                        lora_down(isa[fi], nt, xp, c, tp, view(&m, kind, 1), in, j0, nj);
                        for (int i = 0; i < nt; i++)
                            for (int j = j0; j < j0 + nj; j++) {
                                double want = 0, mag = 0;
                                for (int64_t k = 0; k < in; k++) {
                                    want += (double)x[i][k] * a_at(&m, kind, j, k);
                                    mag += fabs((double)x[i][k] * a_at(&m, kind, j, k));
                                }
                                want *= c[i];
                                CHECKF(fabs(t[i][j] - want) <= 1e-5 * c[i] * (mag + 1e-30),
                                       "isa %d kind %d in %lld: down t[%d][%d] = %g, want %g", isa[fi], kind,
                                       (long long)in, i, j, t[i][j], want);
                                checked++;
                            }
                        // up over all r from the t just made (rows outside [j0, j0+nj) are 0)
                        memcpy(y, y0, sizeof y);
                        float *yp[4] = {y[0], y[1], y[2], y[3]};
                        const float *tc[4] = {t[0], t[1], t[2], t[3]};
                        lora_up(isa[fi], nt, yp, tc, view(&m, kind, 0), out, r, 0, r, 0, out, 0);
                        for (int i = 0; i < nt; i++)
                            for (int64_t o = 0; o < out; o++) {
                                double want = y0[i][o], mag = fabs(y0[i][o]);
                                for (int j = 0; j < r; j++) {
                                    want += (double)t[i][j] * b_at(&m, kind, j, o);
                                    mag += fabs((double)t[i][j] * b_at(&m, kind, j, o));
                                }
                                CHECKF(fabs(y[i][o] - want) <= 1e-5 * mag + 1e-30,
                                       "isa %d kind %d out %lld: up y[%d][%lld] = %g, want %g", isa[fi], kind,
                                       (long long)out, i, (long long)o, y[i][o], want);
                            }
                    }
        free_mod(&m);
    }
    CHECK(checked == 1110 * nf); // every (shape, layout, block) of every family was compared
}

TEST(lora_kernels_bits_independent_of_blocking) {
    int isa[3], nf = families(isa);
    const int r = 7;
    const int64_t in = 61, out = 150; // in: 32 + 16 + a tail; out: blocks of 128, 64, 32 and a tail
    rm_lora_mod m;
    REQUIRE(make_mod(&m, r, in, out) == RM_OK);
    float x[4][61], y0[4][150], c[4] = {1.0f, -0.5f, 2.0f, 0.125f};
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < in; k++) x[i][k] = rnd();
        for (int o = 0; o < out; o++) y0[i][o] = rnd();
    }
    for (int fi = 0; fi < nf; fi++)
        for (int kind = 0; kind < 3; kind++) { // f32, f16, 8-bit
            lb_w A = view(&m, kind, 1), B = view(&m, kind, 0);
            // down: 4 terms x blocks of 4 rows vs each (term, row) alone
            float tb[4][8], ta[4][8];
            const float *xp[4] = {x[0], x[1], x[2], x[3]};
            float *tp[4] = {tb[0], tb[1], tb[2], tb[3]};
            for (int j0 = 0; j0 < r; j0 += LB_NJ)
                lora_down(isa[fi], 4, xp, c, tp, A, in, j0, r - j0 < LB_NJ ? r - j0 : LB_NJ);
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < r; j++) {
                    float *one = ta[i];
                    lora_down(isa[fi], 1, &xp[i], &c[i], &one, A, in, j, 1);
                }
            for (int i = 0; i < 4; i++)
                CHECKF(memcmp(tb[i], ta[i], sizeof(float) * (size_t)r) == 0, "isa %d kind %d: down term %d differs",
                       isa[fi], kind, i);
            // up: 4 terms over [0, out) vs one term at a time over [0, 32) and
            // [32, out), the rank in two pieces [0, 3) and [3, r)
            float ya[4][150], yb[4][150];
            memcpy(ya, y0, sizeof ya);
            memcpy(yb, y0, sizeof yb);
            float *yp[4] = {ya[0], ya[1], ya[2], ya[3]};
            const float *tc[4] = {tb[0], tb[1], tb[2], tb[3]};
            lora_up(isa[fi], 4, yp, tc, B, out, r, 0, r, 0, out, 0);
            for (int i = 0; i < 4; i++) {
                float *y1 = yb[i];
                const float *t1 = tb[i], *t2 = tb[i] + 3;
                lora_up(isa[fi], 1, &y1, &t1, B, out, r, 0, 3, 0, 32, 0);
                lora_up(isa[fi], 1, &y1, &t2, B, out, r, 3, r - 3, 0, 32, 0);
                lora_up(isa[fi], 1, &y1, &t1, B, out, r, 0, 3, 32, out, 0);
                lora_up(isa[fi], 1, &y1, &t2, B, out, r, 3, r - 3, 32, out, 0);
                CHECKF(memcmp(ya[i], yb[i], sizeof(float) * (size_t)out) == 0, "isa %d kind %d: up term %d differs",
                       isa[fi], kind, i);
            }
            // init: written from 0, the same bits as added to zeros
            float z[4][150] = {{0}}, w[4][150];
            memset(w, 0x7f, sizeof w); // whatever was there is not read
            float *zp[4] = {z[0], z[1], z[2], z[3]}, *wp[4] = {w[0], w[1], w[2], w[3]};
            lora_up(isa[fi], 4, zp, tc, B, out, r, 0, r, 0, out, 0);
            lora_up(isa[fi], 4, wp, tc, B, out, r, 0, r, 0, out, 1);
            CHECKF(memcmp(z, w, sizeof z) == 0, "isa %d kind %d: init differs from zeros", isa[fi], kind);
        }
    free_mod(&m);
}

TEST(lora_mirror_layout) {
    const int r = 6;
    const int64_t in = 37, out = 70;
    rm_lora_mod m;
    REQUIRE(make_mod(&m, r, in, out) == RM_OK);
    // A: blocks of 4 rows, [in rounded to 16 / 16][4][16]; 8 rows x 48 columns in all
    CHECK(rm_lora_a16_size(r, in) == 8 * 48);
    for (int j = 0; j < 8; j++)
        for (int k = 0; k < 48; k++) {
            size_t at = (size_t)(j / 4) * 4 * 48 + (size_t)(k / 16) * 64 + (size_t)(j % 4) * 16 + (size_t)(k % 16);
            uint16_t want = j < r && k < in ? rm_f32_to_f16(m.A[(size_t)j * in + (size_t)k]) : 0;
            CHECKF(m.A16[at] == want, "A16 (%d, %d)", j, k);
            int8_t q = 0;
            if (j < r && k < in) q8_value(m.A[(size_t)j * in + (size_t)k], m.A + (size_t)j * in, in, &q);
            CHECKF(m.A8[at] == q, "A8 (%d, %d) = %d, want %d", j, k, m.A8[at], q);
        }
    // B^T: blocks of 32 columns, [r][32]; 96 columns in all
    CHECK(rm_lora_b16_size(r, out) == 96 * (size_t)r);
    for (int j = 0; j < r; j++)
        for (int o = 0; o < 96; o++) {
            size_t at = (size_t)(o / 32) * 32 * r + (size_t)j * 32 + (size_t)(o % 32);
            uint16_t want = o < out ? rm_f32_to_f16(m.Bt[(size_t)j * out + (size_t)o]) : 0;
            CHECKF(m.Bt16[at] == want, "Bt16 (%d, %d)", j, o);
            int8_t q = 0;
            if (o < out) q8_value(m.Bt[(size_t)j * out + (size_t)o], m.Bt + (size_t)j * out, out, &q);
            CHECKF(m.Bt8[at] == q, "Bt8 (%d, %d) = %d, want %d", j, o, m.Bt8[at], q);
        }
    free_mod(&m);
}
