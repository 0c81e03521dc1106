// test_kernels.c — tensor types, quantization, matmul kernels, thread pool, CPU dispatch.
//
// Matmul tolerance (SIMD path vs rm_matmul_ref, which dequantizes W and sums
// in double): quantized W quantizes the activations to int8 with scale
// d_b = amax_b/127 per activation block b (32 elements; 256 for the k-quants), which
// moves each x_i by at most d_b/2. So
//   |y - y_ref| <= sum_b 0.51*d_b * sum_{i in b} |w_i|  +  1e-4 * sum_i |x_i w_i|
// (the second term covers f32 accumulation order). Float W (f32/f16/bf16)
// gets only the second term, except bf16 W in the avx512-bf16 family, whose
// kernel rounds the activations to bf16 (each x_i moves by at most 2^-9 |x_i|):
// + 2^-8 * sum_i |x_i w_i|.
#include "testing.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/fp16.h"
#include "base/json.h"
#include "base/threadpool.h"
#include "tensor/tensor.h"
#include "tensor/kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const rm_type k_types[] = {RM_TYPE_F32,  RM_TYPE_F16,  RM_TYPE_BF16, RM_TYPE_Q8_0, RM_TYPE_Q4_0, RM_TYPE_Q4_1,
                                  RM_TYPE_Q5_0, RM_TYPE_Q5_1, RM_TYPE_Q4_K, RM_TYPE_Q5_K, RM_TYPE_Q6_K, RM_TYPE_Q3_K};
#define N_TYPES ((int)(sizeof k_types / sizeof k_types[0]))

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { // uniform in [-1, 1)
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

// Random data with some structure: a few large outliers and exact zeros.
static void fill(float *v, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float r = frand();
        v[i] = scale * r;
        if (i % 97 == 5) v[i] *= 8;
        if (i % 61 == 7) v[i] = 0;
    }
}

// ---------------------------------------------------------------------------
// fp16 / bf16

__attribute__((target("f16c"))) static float f16c_to_f32(uint16_t h) {
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
__attribute__((target("f16c"))) static uint16_t f16c_from_f32(float f) {
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

TEST(kernel_f16_all_halves) {
    int have = rm_cpu()->f16c;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rm_f16_to_f32((rm_f16)h);
        uint16_t back = rm_f32_to_f16(f);
        int nan = ((h >> 10) & 31) == 31 && (h & 0x3ff);
        if (nan) {
            CHECKF(isnan(f) && ((back >> 10) & 31) == 31 && (back & 0x3ff), "nan %04x", h);
        } else {
            CHECKF(back == h, "round trip %04x -> %g -> %04x", h, f, back);
        }
        if (have && !nan) {
            float g = f16c_to_f32((uint16_t)h);
            CHECKF(memcmp(&f, &g, 4) == 0, "f16c %04x: %g vs %g", h, f, g);
        }
    }
    if (!have) return;
    // f32 -> f16 rounding vs F16C on halfway points, subnormals, overflow.
    for (uint32_t h = 0; h < 0x7c00; h += 7) {
        float a = rm_f16_to_f32((rm_f16)h), b = rm_f16_to_f32((rm_f16)(h + 1));
        float probes[] = {a, (a + b) / 2, nextafterf((a + b) / 2, 0), nextafterf((a + b) / 2, 1e9f), -a, -(a + b) / 2};
        for (int k = 0; k < 6; k++) {
            uint16_t mine = rm_f32_to_f16(probes[k]), ref = f16c_from_f32(probes[k]);
            CHECKF(mine == ref, "f32 %a -> %04x, f16c %04x", probes[k], mine, ref);
        }
    }
    float edges[] = {65504.0f, 65519.0f, 65520.0f, 1e10f, -1e10f,   5.96e-8f,
                     2.98e-8f, 2.99e-8f, 1e-10f,   -0.0f, INFINITY, -INFINITY};
    for (int k = 0; k < (int)(sizeof edges / sizeof edges[0]); k++)
        CHECKF(rm_f32_to_f16(edges[k]) == f16c_from_f32(edges[k]), "edge %g", edges[k]);
}

TEST(kernel_bf16) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rm_bf16_to_f32((rm_bf16)h);
        if (isnan(f)) continue;
        CHECKF(rm_f32_to_bf16(f) == h, "bf16 round trip %04x", h);
    }
    CHECK(rm_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(rm_f32_to_bf16(1.00390625f) == 0x3f80);                // halfway, round to even (down)
    CHECK(rm_f32_to_bf16(1.01171875f) == 0x3f82);                // halfway, round to even (up)
    CHECK(rm_f32_to_bf16(nextafterf(1.00390625f, 2)) == 0x3f81); // just above halfway
    CHECK(isnan(rm_bf16_to_f32(rm_f32_to_bf16(NAN))));
    CHECK(rm_f32_to_bf16(INFINITY) == 0x7f80);
}

// ---------------------------------------------------------------------------
// types and sizes

TEST(kernel_type_table) {
    CHECK(strcmp(rm_type_name(RM_TYPE_Q4_K), "q4_K") == 0); // as ggml spells it
    CHECK(strcmp(rm_type_name(77), "?") == 0);
    CHECK(!rm_type_supported(10) && !rm_type_supported(-1) && rm_type_supported(30)); // q2_K: not (yet)
    for (int i = 0; i < N_TYPES; i++) {
        rm_type t;
        CHECK_OK(rm_type_parse(rm_type_name(k_types[i]), &t));
        CHECK(t == k_types[i]);
    }
    rm_type t;
    CHECK_OK(rm_type_parse("Q8_0", &t));
    CHECK(t == RM_TYPE_Q8_0);
    CHECK(rm_type_parse("q5_2", &t) == RM_EINVAL);
    CHECK(rm_type_block_elems(RM_TYPE_Q4_K) == 256 && rm_type_block_bytes(RM_TYPE_Q4_K) == 144);
    CHECK(rm_type_block_elems(RM_TYPE_Q8_0) == 32 && rm_type_block_bytes(RM_TYPE_Q8_0) == 34);
    CHECK(rm_type_block_elems(RM_TYPE_Q4_0) == 32 && rm_type_block_bytes(RM_TYPE_Q4_0) == 18);
    CHECK(rm_row_size(RM_TYPE_F16, 7) == 14);
    CHECK(rm_row_size(RM_TYPE_Q8_0, 4096) == 128 * 34);
    CHECK(rm_row_size(RM_TYPE_Q8_0, 33) == 0);
    CHECK(rm_row_size(RM_TYPE_Q4_K, 512) == 288);
    // q4_1 / q5_0 / q5_1: 32 values in 20 / 22 / 24 bytes; q5_K / q6_K: 256 in
    // 176 / 210 (ggml's block sizes)
    CHECK(rm_type_block_bytes(RM_TYPE_Q4_1) == 20 && rm_type_block_bytes(RM_TYPE_Q5_0) == 22);
    CHECK(rm_type_block_bytes(RM_TYPE_Q5_1) == 24 && rm_type_block_elems(RM_TYPE_Q5_1) == 32);
    CHECK(strcmp(rm_type_name(RM_TYPE_Q5_K), "q5_K") == 0 && strcmp(rm_type_name(RM_TYPE_Q6_K), "q6_K") == 0);
    CHECK(rm_type_block_elems(RM_TYPE_Q5_K) == 256 && rm_type_block_bytes(RM_TYPE_Q5_K) == 176);
    CHECK(rm_type_block_elems(RM_TYPE_Q6_K) == 256 && rm_type_block_bytes(RM_TYPE_Q6_K) == 210);
    CHECK(rm_row_size(RM_TYPE_Q6_K, 2048) == 8 * 210 && rm_row_size(RM_TYPE_Q5_K, 100) == 0);
    CHECK(strcmp(rm_type_name(RM_TYPE_Q3_K), "q3_K") == 0 && rm_type_supported(11)); // ggml's id 11, 110 bytes
    CHECK(rm_type_block_elems(RM_TYPE_Q3_K) == 256 && rm_type_block_bytes(RM_TYPE_Q3_K) == 110);
}

TEST(kernel_tensor_nbytes_overflow) {
    int64_t ne[4] = {2048, 5632, 1, 1};
    CHECK(rm_tensor_nbytes(RM_TYPE_Q8_0, 2, ne) == (size_t)64 * 34 * 5632);
    CHECK(rm_tensor_nbytes(RM_TYPE_F32, 4, ne) == (size_t)2048 * 5632 * 4);
    int64_t big[4] = {INT64_MAX / 2 + 1, 4, 1, 1};
    CHECK(rm_tensor_nbytes(RM_TYPE_F32, 1, big) == 0);
    int64_t big2[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
    rm_clear_error();
    CHECK(rm_tensor_nbytes(RM_TYPE_F16, 4, big2) == 0);
    CHECK(strlen(rm_last_error()) > 0);
    int64_t big3[4] = {256, INT64_MAX, 1, 1};
    CHECK(rm_tensor_nbytes(RM_TYPE_Q4_K, 2, big3) == 0);
    int64_t odd[4] = {100, 2, 1, 1};
    CHECK(rm_tensor_nbytes(RM_TYPE_Q8_0, 2, odd) == 0);
    int64_t neg[4] = {32, -1, 1, 1};
    CHECK(rm_tensor_nbytes(RM_TYPE_Q8_0, 2, neg) == 0);
    CHECK(rm_tensor_nbytes(RM_TYPE_Q8_0, 5, ne) == 0);
}

// ---------------------------------------------------------------------------
// hand-built blocks decode to values computed from the spec

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

TEST(kernel_known_blocks) {
    float out[256];
    // q8_0: d = 0.5 (f16 0x3800), q[j] = j - 16  ->  x[j] = (j-16)/2
    uint8_t q8[34];
    put16(q8, 0x3800);
    for (int j = 0; j < 32; j++) q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    rm_dequantize_row(RM_TYPE_Q8_0, q8, out, 32);
    for (int j = 0; j < 32; j++) CHECK_NEAR(out[j], (j - 16) * 0.5, 0);
    // q4_0: d = 2 (0x4000), byte j = (lo=j, hi=15-j): x[j] = 2*(j-8), x[j+16] = 2*(7-j)
    uint8_t q4[18];
    put16(q4, 0x4000);
    for (int j = 0; j < 16; j++) q4[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    rm_dequantize_row(RM_TYPE_Q4_0, q4, out, 32);
    for (int j = 0; j < 16; j++) {
        CHECK_NEAR(out[j], 2.0 * (j - 8), 0);
        CHECK_NEAR(out[j + 16], 2.0 * (7 - j), 0);
    }
    // q4_K: d = 1 (0x3c00), dmin = 0.25 (0x3400).
    // Scales/mins chosen: ls = {1,2,3,4, 17,33,63,5}, lm = {0,1,2,3, 16,20,40,63}.
    // Packing: bytes 0..3 = ls[0..3] | (ls[4..7]>>4)<<6; bytes 4..7 = lm[0..3] | (lm[4..7]>>4)<<6;
    // bytes 8..11 = (ls[4..7]&15) | (lm[4..7]&15)<<4.
    uint8_t k4[144];
    memset(k4, 0, sizeof k4);
    put16(k4, 0x3c00);
    put16(k4 + 2, 0x3400);
    int ls[8] = {1, 2, 3, 4, 17, 33, 63, 5}, lm[8] = {0, 1, 2, 3, 16, 20, 40, 63};
    uint8_t sc[12] = {
        1 | (1 << 6), 2 | (2 << 6), 3 | (3 << 6),  4 | (0 << 6),  // ls[4..7]>>4 = 1,2,3,0
        0 | (1 << 6), 1 | (1 << 6), 2 | (2 << 6),  3 | (3 << 6),  // lm[4..7]>>4 = 1,1,2,3
        1 | (0 << 4), 1 | (4 << 4), 15 | (8 << 4), 5 | (15 << 4), // low nibbles
    };
    memcpy(k4 + 4, sc, 12);
    // quants: sub-block s element j = (j + s) % 16; pairs (2k, 2k+1) share bytes 32k..32k+31.
    for (int s = 0; s < 8; s++)
        for (int j = 0; j < 32; j++) k4[16 + 32 * (s / 2) + j] |= (uint8_t)(((j + s) % 16) << (4 * (s % 2)));
    rm_dequantize_row(RM_TYPE_Q4_K, k4, out, 256);
    double k4_sum = 0;
    for (int s = 0; s < 8; s++)
        for (int j = 0; j < 32; j++) {
            double want = 1.0 * ls[s] * ((j + s) % 16) - 0.25 * lm[s];
            k4_sum += want;
            CHECKF(out[32 * s + j] == want, "q4_K s=%d j=%d: %g vs %g", s, j, out[32 * s + j], want);
        }
    // The same blocks through rm_matmul on every ISA with x = 1 (exact in
    // int8): y = the sum of the values above. q8_0: 0.5 * sum(j-16) = -8;
    // q4_0: 2 * (sum_{j<16} (j-8) + sum_{j<16} (7-j)) = 2 * (-8 - 8) = -32.
    float ones[256], y = 0;
    for (int j = 0; j < 256; j++) ones[j] = 1;
    const char *isas[] = {"scalar", "avx2", NULL};
    struct {
        rm_type t;
        void *data;
        int in;
        double want;
    } cases[] = {{RM_TYPE_Q8_0, q8, 32, -8}, {RM_TYPE_Q4_0, q4, 32, -32}, {RM_TYPE_Q4_K, k4, 256, k4_sum}};
    for (int k = 0; k < 3; k++) {
        rm_cpu_force(isas[k]);
        for (int c = 0; c < 3; c++) {
            rm_tensor W = {.type = cases[c].t, .n_dims = 2, .ne = {cases[c].in, 1, 1, 1}, .data = cases[c].data};
            rm_matmul(NULL, &W, ones, cases[c].in, &y, 1, 1, 0);
            CHECK_NEAR(y, cases[c].want, 1e-5 * fabs(cases[c].want) + 1e-6);
        }
    }
    rm_cpu_force(NULL);
}

// ---------------------------------------------------------------------------
// Quantized formats against ggml: tests/ref/quant.golden holds rows quantized
// by ggml's reference quantizers and dequantized by ggml (made once by
// tests/ref/quant_ref.c from llama.cpp's libggml-base.so; layout there).

static int read_u32s(FILE *f, uint32_t *v, int n) { return fread(v, 4, (size_t)n, f) == (size_t)n; }

TEST(kernel_quant_ggml_golden) {
    FILE *f = fopen("tests/ref/quant.golden", "rb");
    CHECKF(f != NULL, "tests/ref/quant.golden: cannot open (run from the repo root)");
    if (!f) return;
    char magic[8];
    uint32_t ntypes = 0;
    CHECK(fread(magic, 1, 8, f) == 8 && memcmp(magic, "RMQNTG01", 8) == 0 && read_u32s(f, &ntypes, 1));
    int seen = 0;
    for (uint32_t t = 0; t < ntypes; t++) {
        uint32_t h[4];
        if (!read_u32s(f, h, 4)) break;
        rm_type type = (rm_type)h[0];
        const int n = (int)h[2];
        CHECKF(rm_type_supported(type) && rm_row_size(type, n) == h[3], "golden type %u", h[0]);
        if (!rm_type_supported(type) || rm_row_size(type, n) != h[3] || n > 4096) break;
        float *x = malloc(4 * (size_t)n), *y = malloc(4 * (size_t)n), *ours = malloc(4 * (size_t)n);
        uint8_t *blocks = malloc(h[3]), *mine = malloc(h[3]);
        double err_ggml = 0, err_ours = 0;
        for (uint32_t r = 0; r < h[1]; r++) {
            if (fread(x, 4, (size_t)n, f) != (size_t)n || fread(blocks, 1, h[3], f) != h[3] ||
                fread(y, 4, (size_t)n, f) != (size_t)n) {
                CHECKF(0, "%s: golden truncated", rm_type_name(type));
                break;
            }
            // ggml's blocks decode to ggml's values (to float rounding: the
            // two may or may not fuse step*q - min into one rounding)
            rm_dequantize_row(type, blocks, ours, n);
            for (int i = 0; i < n; i++)
                if (!(fabsf(ours[i] - y[i]) <= 1e-6f * fabsf(y[i]) + 1e-12f)) {
                    CHECKF(0, "%s row %u: value %d decodes to %.9g, ggml %.9g", rm_type_name(type), r, i, ours[i],
                           y[i]);
                    break;
                }
            // our quantizer against ggml's on the same rows
            rm_quantize_row(type, x, mine, n);
            rm_dequantize_row(type, mine, ours, n);
            for (int i = 0; i < n; i++) {
                err_ggml += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
                err_ours += ((double)ours[i] - x[i]) * ((double)ours[i] - x[i]);
            }
        }
        printf("    %s: squared error of ramole's quantizer / ggml's: %.3f\n", rm_type_name(type), err_ours / err_ggml);
        CHECKF(err_ours <= 1.10 * err_ggml, "%s: squared error %.4g vs ggml's %.4g", rm_type_name(type), err_ours,
               err_ggml);
        seen++;
        free(x), free(y), free(ours), free(blocks), free(mine);
    }
    CHECK(seen == 9);
    fclose(f);
}

// ---------------------------------------------------------------------------
// quantize / dequantize round trip

TEST(kernel_quant_roundtrip) {
    enum { N = 4096 };
    float *x = malloc(N * 4), *y = malloc(N * 4);
    uint8_t *buf = malloc(N * 4);
    fill(x, N, 1.0f);
    for (int ti = 0; ti < N_TYPES; ti++) {
        rm_type t = k_types[ti];
        rm_quantize_row(t, x, buf, N);
        rm_dequantize_row(t, buf, y, N);
        int blk = rm_type_block_elems(t);
        for (int b = 0; b < N / blk; b++) {
            float amax = 0, lo = 0, hi = 0;
            for (int j = 0; j < blk; j++) {
                float v = x[b * blk + j];
                amax = fmaxf(amax, fabsf(v));
                lo = fminf(lo, v);
                hi = fmaxf(hi, v);
            }
            // Per-element bound: half a step (plus f16 rounding of the scale).
            double tol;
            switch (t) {
            case RM_TYPE_F32: tol = 0; break;
            case RM_TYPE_F16: tol = amax * 0x1p-11; break;
            case RM_TYPE_BF16: tol = amax * 0x1p-8; break;
            case RM_TYPE_Q8_0: tol = amax / 127 * 0.5 * 1.01 + amax * 1e-3; break;
            case RM_TYPE_Q4_0: tol = amax / 8 * 1.01 + amax * 1e-3; break;       // +max clips at 7/8
            case RM_TYPE_Q3_K: tol = amax * 0.3; break; // the short side clips at 3 of 4 steps: amax / 4
            default: tol = (hi - lo) / 15 * 0.6 * 1.3 + (hi - lo) * 0.02; break; // 6-bit scales cost a little
            }
            for (int j = 0; j < blk; j++) {
                int i = b * blk + j;
                if (!(fabs(y[i] - x[i]) <= tol)) {
                    CHECKF(0, "%s: x[%d] = %g -> %g (tol %g)", rm_type_name(t), i, x[i], y[i], tol);
                    b = N; // one report per type
                    break;
                }
            }
        }
    }
    // Exact cases: q8_0 round-to-nearest with d = amax/127.
    float v[32];
    for (int j = 0; j < 32; j++) v[j] = (float)(j - 16) * 0.25f;
    v[31] = 31.75f; // amax -> d = 0.25, exact in f16
    v[0] = -31.75f;
    uint8_t b8[34];
    rm_quantize_row(RM_TYPE_Q8_0, v, b8, 32);
    CHECK(b8[0] == 0x00 && b8[1] == 0x34); // f16(0.25) = 0x3400
    CHECK((int8_t)b8[2] == -127 && (int8_t)b8[33] == 127 && (int8_t)b8[2 + 16] == 0 && (int8_t)b8[2 + 17] == 1);
    // q4_0: signed max -8 maps to q = 0; d = max/-8.
    for (int j = 0; j < 32; j++) v[j] = (float)(j % 16) - 7.0f; // -7..8, max magnitude 8 (positive)
    uint8_t b4[18];
    rm_quantize_row(RM_TYPE_Q4_0, v, b4, 32);
    float d = rm_f16_to_f32((rm_f16)(b4[0] | b4[1] << 8));
    CHECK(d == -1.0f);
    CHECK((b4[2 + 15] & 15) == 0); // x = 8 -> q - 8 = -8
    rm_dequantize_row(RM_TYPE_Q4_0, b4, y, 32);
    for (int j = 0; j < 32; j++) CHECK_NEAR(y[j], v[j], 0);
    free(x);
    free(y);
    free(buf);
}

// ---------------------------------------------------------------------------
// matmul: SIMD paths vs the reference

typedef struct {
    rm_tensor W;
    float *wf; // the dequantized weights (for the tolerance)
    float *x, *y, *yref;
    int in, out, n;
} mm_case;

static int case_init(mm_case *c, rm_type t, int in, int out, int n) {
    memset(c, 0, sizeof *c);
    if (in % rm_type_block_elems(t)) return 0;
    c->in = in, c->out = out, c->n = n;
    size_t rs = rm_row_size(t, in);
    c->W.type = t;
    c->W.n_dims = 2;
    c->W.ne[0] = in, c->W.ne[1] = out, c->W.ne[2] = c->W.ne[3] = 1;
    c->W.data = malloc(rs * out);
    c->wf = malloc(sizeof(float) * in * out);
    float *tmp = malloc(sizeof(float) * in);
    for (int r = 0; r < out; r++) {
        fill(tmp, in, 0.05f);
        rm_quantize_row(t, tmp, (uint8_t *)c->W.data + rs * r, in);
        rm_dequantize_row(t, (uint8_t *)c->W.data + rs * r, c->wf + (size_t)in * r, in);
    }
    free(tmp);
    int ldx = in + 3, ldy = out + 1;
    c->x = malloc(sizeof(float) * ldx * n);
    fill(c->x, (int64_t)ldx * n, 1.0f);
    c->y = malloc(sizeof(float) * ldy * n);
    c->yref = malloc(sizeof(float) * ldy * n);
    return 1;
}

static void case_free(mm_case *c) {
    free(c->W.data);
    free(c->wf);
    free(c->x);
    free(c->y);
    free(c->yref);
}

static double case_tol(const mm_case *c, int r, int i) {
    rm_type t = c->W.type;
    int qb = rm_type_block_elems(t) == 256 ? 256 : 32;
    int quant = rm_type_block_elems(t) > 1;
    const float *x = c->x + (size_t)i * (c->in + 3), *w = c->wf + (size_t)r * c->in;
    double tol = 1e-30, mag = 0;
    for (int b = 0; b < c->in / qb; b++) {
        double amax = 0, sw = 0;
        for (int j = 0; j < qb; j++) {
            amax = fmax(amax, fabs(x[b * qb + j]));
            sw += fabs(w[b * qb + j]);
            mag += fabs(x[b * qb + j] * w[b * qb + j]);
        }
        if (quant) tol += 0.51 * amax / 127 * sw;
    }
    if (t == RM_TYPE_BF16 && strcmp(rm_matmul_family(t), "avx512-bf16") == 0) tol += 0x1p-8 * mag;
    return tol + 1e-4 * mag;
}

// Runs rm_matmul (with pool tp) and the reference; returns the number of
// elements out of tolerance (reports the first).
static int case_check(mm_case *c, rm_threadpool *tp, int accumulate) {
    int ldx = c->in + 3, ldy = c->out + 1, bad = 0;
    for (int i = 0; i < ldy * c->n; i++) c->y[i] = c->yref[i] = (float)(i % 5) - 2;
    rm_matmul(tp, &c->W, c->x, ldx, c->y, ldy, c->n, accumulate);
    rm_matmul_ref(&c->W, c->x, ldx, c->yref, ldy, c->n, accumulate);
    for (int i = 0; i < c->n; i++) {
        for (int r = 0; r < ldy; r++) {
            float a = c->y[(size_t)i * ldy + r], b = c->yref[(size_t)i * ldy + r];
            if (r == c->out) { // padding column must be untouched
                if (a != (float)(((size_t)i * ldy + r) % 5) - 2 && !bad++) CHECKF(0, "padding overwritten");
                continue;
            }
            double tol = case_tol(c, r, i);
            if (!(fabs(a - b) <= tol) && !bad++)
                CHECKF(0, "%s in=%d out=%d n=%d acc=%d: y[%d,%d] = %.7g vs ref %.7g (tol %g) isa=%s",
                       rm_type_name(c->W.type), c->in, c->out, c->n, accumulate, i, r, a, b, tol, rm_cpu_describe());
        }
    }
    return bad;
}

static void matmul_vs_ref(const char *isa, int big) {
    rm_cpu_force(isa);
    int ins[] = {32, 64, 768, 4352};
    int ns[] = {1, 2, 3, 7, 32, 33};
    int outs[] = {1, 5, 67};
    rm_threadpool *tp = rm_threadpool_create(2);
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 6; b++)
                for (int o = 0; o < 3; o++) {
                    if (!big && ins[a] > 1000 && ns[b] > 7) continue;
                    mm_case c;
                    if (!case_init(&c, k_types[ti], ins[a], outs[o], ns[b])) continue;
                    case_check(&c, (b + o) % 2 ? tp : NULL, (a + b) % 2);
                    case_free(&c);
                }
    rm_threadpool_free(tp);
    rm_cpu_force(NULL);
}

TEST(kernel_matmul_scalar_vs_ref) { matmul_vs_ref("scalar", 0); }
TEST(kernel_matmul_avx2_vs_ref) {
    if (!rm_cpu()->avx2) SKIP("no avx2");
    matmul_vs_ref("avx2", !rm_test_sanitized());
}
TEST(kernel_matmul_avx512_vs_ref) {
    if (!rm_cpu()->avx512bw) SKIP("no avx512 on this machine");
    matmul_vs_ref("avx512", !rm_test_sanitized());
}
TEST(kernel_matmul_avx512bf16_vs_ref) {
    if (!(rm_cpu()->avx512bw && rm_cpu()->avx512bf16)) SKIP("no avx512 bf16 dot products on this machine");
    matmul_vs_ref("avx512bf16", !rm_test_sanitized());
}

// Every activation row count 1..64 (each tile shape and edge, the decode
// path, the prepacked path) for every type, with inputs that leave partial
// groups: 15 and 33 blocks of 32 (the AVX-512 kernels take 16 at a time),
// 3 super-blocks for q4_K, 100 floats (not a multiple of 16) for the float
// types; per family this CPU runs.
static void all_row_counts(const char *isa) {
    rm_cpu_force(isa);
    rm_threadpool *tp = rm_threadpool_create(2);
    const int ins[] = {100, 480, 768, 1056};
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int a = 0; a < 4; a++)
            for (int n = 1; n <= 64; n += rm_test_sanitized() ? 7 : 1) {
                mm_case c;
                if (!case_init(&c, k_types[ti], ins[a], 13, n)) continue;
                case_check(&c, n % 2 ? tp : NULL, n % 3 == 0);
                case_free(&c);
            }
    rm_threadpool_free(tp);
    rm_cpu_force(NULL);
}
TEST(kernel_matmul_all_row_counts_avx2) {
    if (!(rm_cpu()->avx2 && rm_cpu()->fma && rm_cpu()->f16c)) SKIP("no avx2 on this machine");
    all_row_counts("avx2");
}
TEST(kernel_matmul_all_row_counts_avx512) {
    if (!(rm_cpu()->avx512bw && rm_cpu()->avx512vnni && rm_cpu()->avx2)) SKIP("no avx512 with vnni on this machine");
    all_row_counts("avx512");
}
TEST(kernel_matmul_all_row_counts_avx512bf16) {
    if (!(rm_cpu()->avx512bw && rm_cpu()->avx512bf16)) SKIP("no avx512 bf16 dot products on this machine");
    all_row_counts("avx512bf16");
}

// Large batch (prefill-like) through the tiled path.
TEST(kernel_matmul_prefill_shape) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        mm_case c;
        if (!case_init(&c, k_types[ti], 512, 70, rm_test_sanitized() ? 40 : 130)) continue;
        rm_threadpool *tp = rm_threadpool_create(2);
        case_check(&c, tp, 0);
        rm_threadpool_free(tp);
        case_free(&c);
    }
}

// 1, 2 and 3 threads give bitwise the same result as no pool.
static void threads_bitwise(const char *isa) {
    rm_cpu_force(isa);
    int shapes[][3] = {{256, 67, 33}, {512, 5, 33}, {256, 9, 1}, {768, 130, 8}};
    for (int ti = 0; ti < N_TYPES; ti++)
        for (int s = 0; s < 4; s++) {
            mm_case c;
            if (!case_init(&c, k_types[ti], shapes[s][0], shapes[s][1], shapes[s][2])) continue;
            int ldx = c.in + 3, ldy = c.out + 1;
            rm_matmul(NULL, &c.W, c.x, ldx, c.yref, ldy, c.n, 0);
            for (int nt = 1; nt <= 3; nt++) {
                rm_threadpool *tp = rm_threadpool_create(nt);
                REQUIRE(tp && rm_threadpool_size(tp) == nt);
                memset(c.y, 0, sizeof(float) * ldy * c.n);
                rm_matmul(tp, &c.W, c.x, ldx, c.y, ldy, c.n, 0);
                int same = 1;
                for (int i = 0; i < c.n; i++)
                    same &= memcmp(c.y + (size_t)i * ldy, c.yref + (size_t)i * ldy, sizeof(float) * c.out) == 0;
                CHECKF(same, "%s %s %dx%d n=%d: %d threads differ", isa, rm_type_name(c.W.type), c.out, c.in, c.n, nt);
                rm_threadpool_free(tp);
            }
            case_free(&c);
        }
    rm_cpu_force(NULL);
}

// A row's result does not depend on how many activation rows share the call:
// decode (1 or 2 rows: weight rows walked one at a time) and the tiled path
// (register tiles of several weight and activation rows, narrower tiles at
// the edges) give the same bits.
static void rows_alone_bitwise(const char *isa) {
    rm_cpu_force(isa);
    for (int ti = 0; ti < N_TYPES; ti++) {
        mm_case c;
        if (!case_init(&c, k_types[ti], 512, 37, 11)) continue;
        rm_matmul(NULL, &c.W, c.x, c.in, c.yref, c.out, c.n, 0);
        for (int w = 1; w <= 3; w++)
            for (int i = 0; i + w <= c.n; i += w) {
                rm_matmul(NULL, &c.W, c.x + (size_t)i * c.in, c.in, c.y, c.out, w, 0);
                CHECKF(memcmp(c.y, c.yref + (size_t)i * c.out, sizeof(float) * c.out * w) == 0,
                       "%s %s: rows %d..%d alone differ from the batch of %d", isa, rm_type_name(c.W.type), i,
                       i + w - 1, c.n);
            }
        case_free(&c);
    }
    rm_cpu_force(NULL);
}

// Both properties hold for every kernel family this CPU can run.
static int family_runs(const char *isa) {
    if (strcmp(isa, "avx2") == 0) return rm_cpu()->avx2 && rm_cpu()->fma && rm_cpu()->f16c;
    if (strcmp(isa, "avx512") == 0) return rm_cpu()->avx512bw && rm_cpu()->avx2;
    if (strcmp(isa, "avx512bf16") == 0) return rm_cpu()->avx512bw && rm_cpu()->avx2 && rm_cpu()->avx512bf16;
    return 1;
}
static const char *k_isas[] = {"scalar", "avx2", "avx512", "avx512bf16"};
TEST(kernel_matmul_threads_bitwise) {
    for (int k = 0; k < 4; k++)
        if (family_runs(k_isas[k])) threads_bitwise(k_isas[k]);
}
TEST(kernel_matmul_rows_alone_bitwise) {
    for (int k = 0; k < 4; k++)
        if (family_runs(k_isas[k])) rows_alone_bitwise(k_isas[k]);
}

// rm_matmul_many gives each matrix exactly what rm_matmul gives it: a group
// of one type (one job), and a group whose last member has another type or
// input size (it runs alone).
TEST(kernel_matmul_many_equals_single) {
    rm_threadpool *tp = rm_threadpool_create(2);
    const int ns[] = {1, 2, 5, 40};
    for (int ni = 0; ni < 4; ni++) {
        int n = ns[ni];
        mm_case a, b, c, d;
        REQUIRE(case_init(&a, RM_TYPE_Q8_0, 256, 67, n) && case_init(&b, RM_TYPE_Q8_0, 256, 9, n));
        REQUIRE(case_init(&c, RM_TYPE_Q8_0, 256, 130, n) && case_init(&d, RM_TYPE_F16, 256, 20, n));
        mm_case *cs[4] = {&a, &b, &c, &d};
        for (int g = 0; g < 4; g++) memcpy(cs[g]->x, a.x, sizeof(float) * 256 * n); // one x for all
        for (int g = 0; g < 4; g++) rm_matmul(tp, &cs[g]->W, a.x, 256, cs[g]->yref, cs[g]->out, n, 0);
        const rm_tensor *W3[3] = {&a.W, &b.W, &c.W}, *W2[2] = {&b.W, &d.W};
        float *y3[3] = {a.y, b.y, c.y}, *y2[2] = {b.y, d.y};
        int64_t l3[3] = {a.out, b.out, c.out}, l2[2] = {b.out, d.out};
        rm_matmul_many(tp, 3, W3, a.x, 256, y3, l3, n, 0);
        for (int g = 0; g < 3; g++)
            CHECKF(memcmp(cs[g]->y, cs[g]->yref, sizeof(float) * cs[g]->out * n) == 0, "n=%d: matrix %d of 3 differs",
                   n, g);
        memset(b.y, 0, sizeof(float) * b.out * n);
        rm_matmul_many(NULL, 2, W2, a.x, 256, y2, l2, n, 0);
        CHECKF(memcmp(b.y, b.yref, sizeof(float) * b.out * n) == 0 &&
                   memcmp(d.y, d.yref, sizeof(float) * d.out * n) == 0,
               "n=%d: q8_0 + f16 group differs", n);
        for (int g = 0; g < 4; g++) case_free(cs[g]);
    }
    rm_threadpool_free(tp);
}

TEST(kernel_matmul_accumulate) {
    mm_case c;
    REQUIRE(case_init(&c, RM_TYPE_Q8_0, 64, 5, 3));
    int ldx = c.in + 3, ldy = c.out + 1;
    rm_matmul(NULL, &c.W, c.x, ldx, c.yref, ldy, c.n, 0);
    for (int i = 0; i < ldy * c.n; i++) c.y[i] = 1.5f;
    rm_matmul(NULL, &c.W, c.x, ldx, c.y, ldy, c.n, 1);
    for (int i = 0; i < c.n; i++)
        for (int r = 0; r < c.out; r++) CHECK_NEAR(c.y[i * ldy + r], c.yref[i * ldy + r] + 1.5f, 1e-5);
    case_free(&c);
}

// The AVX2 activation quantizer produces the same bytes as the scalar one.
TEST(kernel_quantize_x_avx2_matches_scalar) {
    if (!rm_cpu()->avx2 || !rm_cpu()->fma) SKIP("no avx2");
    enum { IN = 768, N = 3 };
    float *x = malloc(sizeof(float) * IN * N);
    fill(x, IN * N, 3.0f);
    for (int j = 0; j < 32; j++) x[IN + j] = 0; // an all-zero block
    x[5] = 1e-30f;
    for (int blk = 32; blk <= 256; blk *= 8) {
        int8_t q1[IN * N], q2[IN * N];
        float d1[IN * N / 32], d2[IN * N / 32];
        int16_t s1[IN * N / 32], s2[IN * N / 32];
        rm_mm m = {.in = IN, .n = N, .x = x, .ldx = IN, .qx = {.blk = blk, .q = q1, .d = d1, .sum = s1}};
        rm_quantize_x(&m, 0, N);
        m.qx = (rm_qx){.blk = blk, .q = q2, .d = d2, .sum = s2};
        rm_quantize_x_avx2(&m, 0, N);
        CHECK(memcmp(q1, q2, sizeof q1) == 0);
        CHECK(memcmp(d1, d2, sizeof(float) * IN * N / blk) == 0);
        CHECK(memcmp(s1, s2, sizeof s1) == 0);
    }
    free(x);
}

// ---------------------------------------------------------------------------
// silu(g) * u: against the double-precision formula, and the same bits on
// every ISA (odd lengths for the tails; in place as the forward pass calls it)

TEST(kernel_silu_mul) {
    enum { N = 4099 };
    float *g = malloc(N * sizeof(float)), *u = malloc(N * sizeof(float)), *h[3];
    for (int k = 0; k < 3; k++) h[k] = malloc(N * sizeof(float));
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < N; i++) { // a sweep of -100..100, then random values of every scale
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double r = (double)(s >> 11) / 9007199254740992.0;
        g[i] = i < 2001 ? (float)(-100.0 + 0.1 * i) : (float)((r - 0.5) * ldexp(1.0, (int)(s >> 58) % 24 - 12));
        u[i] = (float)(r * 4 - 2);
    }
    g[0] = 0.0f, g[1] = -0.0f, g[2] = 87.5f, g[3] = -87.5f, g[4] = 1e-30f, g[5] = -200.0f;
    double worst = 0;
    float *part = malloc((N + 1) * sizeof(float));
    const char *isas[] = {"scalar", "avx2", "avx512"};
    for (int k = 0; k < 3; k++) {
        rm_cpu_force(isas[k]);
        if (k == 2 && !rm_cpu()->avx512f) printf("     no AVX-512 here: the avx512 pass runs the AVX2 kernel\n");
        memcpy(h[k], g, N * sizeof(float));
        rm_silu_mul_f32(h[k], h[k], u, N); // in place (h = g), as the forward pass
        for (int n = 1; n <= N; n += n < 40 ? 1 : 1021) { // a shorter run: the same values, nothing past n written
            memcpy(part, g, (size_t)n * sizeof(float));
            part[n] = 12345.0f;
            rm_silu_mul_f32(part, part, u, n);
            CHECKF(memcmp(part, h[k], (size_t)n * sizeof(float)) == 0 && part[n] == 12345.0f, "%s: n = %d", isas[k], n);
        }
        for (int i = 0; i < N; i++) {
            double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            double err = fabs(h[k][i] - want) / (fabs(want) + 1e-30);
            if (fabs(want) > 1e-30 && err > worst) worst = err;
            CHECKF(fabs(h[k][i] - want) <= 4e-7 * fabs(want) + 1e-35, "%s: g %g u %g: %.9g, want %.9g", isas[k], g[i],
                   u[i], h[k][i], want);
        }
        CHECKF(memcmp(h[k], h[0], N * sizeof(float)) == 0, "%s differs from scalar", isas[k]);
    }
    rm_cpu_force(NULL);
    printf("     worst relative error %.2g\n", worst);
    free(part);
    free(g);
    free(u);
    for (int k = 0; k < 3; k++) free(h[k]);
}

// softmax's exponentials and their sum: against double precision, and the same
// bits on every ISA for every length (the tails)
TEST(kernel_exp_sum) {
    enum { N = 1500 };
    float src[N + 1], got[3][N + 1], sums[3];
    uint64_t st = 12345;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 40.0 - 30.0); // scores in [-30, 10)
    }
    const char *isas[] = {"scalar", "avx2", "avx512"};
    for (int n = 1; n <= N; n += n < 48 ? 1 : 97)
        for (int k = 0; k < 3; k++) {
            rm_cpu_force(isas[k]);
            float mx = src[0];
            for (int i = 1; i < n; i++) mx = src[i] > mx ? src[i] : mx;
            memcpy(got[k], src, (size_t)n * sizeof(float));
            got[k][n] = -7.0f;
            sums[k] = rm_exp_sum_f32(got[k], n, mx);
            double want = 0;
            int ok = got[k][n] == -7.0f;
            for (int i = 0; i < n; i++) {
                double e = exp((double)(src[i] - mx)); // of the float difference, as softmax takes it
                want += e;
                ok &= fabs(got[k][i] - e) <= 4e-7 * e + 1e-37;
            }
            CHECKF(ok, "%s: n = %d: an exponential is off, or s[n] was written", isas[k], n);
            CHECKF(fabs(sums[k] - want) <= 1e-6 * want, "%s: n = %d: sum %.9g, want %.9g", isas[k], n, sums[k], want);
            if (k)
                CHECKF(memcmp(got[k], got[0], (size_t)n * sizeof(float)) == 0 && sums[k] == sums[0],
                       "%s: n = %d: not the scalar bits", isas[k], n);
        }
    rm_cpu_force(NULL);
}

// softmax's scaling: each product is s[i] * c as a float, the max is the
// largest of them (a NaN passed over), on every ISA, every tail, and nothing
// past n is touched
TEST(kernel_scale_max) {
    enum { N = 300 };
    float src[N + 1], got[N + 1];
    uint64_t st = 777;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (float)((double)(st >> 11) / 9007199254740992.0 * 20.0 - 10.0);
    }
    src[37] = NAN;
    const char *isas[] = {"scalar", "avx2", "avx512"};
    for (int k = 0; k < 3; k++) {
        rm_cpu_force(isas[k]);
        for (int n = 0; n <= N; n += n < 40 ? 1 : 29) {
            const float c = 0.125f + (float)n / 1024.0f;
            float want = -INFINITY;
            int ok = 1;
            memcpy(got, src, (size_t)n * sizeof(float));
            got[n] = -7.0f;
            float mx = rm_scale_max_f32(got, n, c);
            for (int i = 0; i < n; i++) {
                const float v = src[i] * c;
                if (v > want) want = v;
                ok &= memcmp(&got[i], &v, sizeof v) == 0;
            }
            CHECKF(ok && got[n] == -7.0f, "%s: n = %d: a product is off, or s[n] was written", isas[k], n);
            CHECKF(mx == want, "%s: n = %d: max %g, want %g", isas[k], n, mx, want);
            rm_scale_f32(got, n, 2.0f);
            for (int i = 0; i < n; i++) {
                const float v = src[i] * c * 2.0f;
                ok &= memcmp(&got[i], &v, sizeof v) == 0;
            }
            CHECKF(ok && got[n] == -7.0f, "%s: n = %d: rm_scale_f32 is off, or wrote s[n]", isas[k], n);
        }
    }
    rm_cpu_force(NULL);
}

// ---------------------------------------------------------------------------
// dot / axpy

TEST(kernel_dot_axpy) {
    const char *isas[] = {"scalar", "avx2", "avx512"};
    float a[1031], b[1031], y[1031], y2[1031];
    fill(a, 1031, 1);
    fill(b, 1031, 1);
    for (int k = 0; k < 3; k++) {
        rm_cpu_force(isas[k]);
        for (int n = 0; n <= 1031; n += (n < 40 ? 1 : 97)) {
            double ref = 0, mag = 0;
            for (int i = 0; i < n; i++) ref += (double)a[i] * b[i], mag += fabs((double)a[i] * b[i]);
            CHECK_NEAR(rm_dot_f32(a, b, n), ref, 1e-6 * mag + 1e-30);
            memcpy(y, b, sizeof y);
            memcpy(y2, b, sizeof y);
            rm_axpy_f32(y, 0.75f, a, n);
            for (int i = 0; i < n; i++) y2[i] += 0.75f * a[i];
            int same = 1;
            for (int i = 0; i < 1031; i++) same &= fabsf(y[i] - y2[i]) <= 1e-6f * (fabsf(y2[i]) + 1);
            CHECKF(same, "axpy n=%d isa=%s", n, isas[k]);
        }
    }
    rm_cpu_force(NULL);
}

// ---------------------------------------------------------------------------
// thread pool and cpu

typedef struct {
    atomic_int hits[8];
    atomic_long total;
} tp_ctx;
static void tp_task(void *p, int ith, int nth) {
    tp_ctx *c = p;
    atomic_fetch_add(&c->hits[ith], 1);
    atomic_fetch_add(&c->total, nth);
}

TEST(kernel_threadpool) {
    for (int nt = 1; nt <= 4; nt++) {
        rm_threadpool *tp = rm_threadpool_create(nt);
        REQUIRE(tp);
        CHECK(rm_threadpool_size(tp) == nt);
        tp_ctx c;
        memset(&c, 0, sizeof c);
        for (int rep = 0; rep < 2000; rep++) rm_threadpool_run(tp, tp_task, &c);
        for (int i = 0; i < nt; i++) CHECK(atomic_load(&c.hits[i]) == 2000);
        CHECK(atomic_load(&c.total) == 2000L * nt * nt);
        rm_threadpool_free(tp);
    }
    tp_ctx c;
    memset(&c, 0, sizeof c);
    rm_threadpool_run(NULL, tp_task, &c);
    CHECK(atomic_load(&c.hits[0]) == 1);
    rm_threadpool *tp = rm_threadpool_create(0);
    CHECK(tp && rm_threadpool_size(tp) >= 1);
    rm_threadpool_free(tp);
    long b, e, prev = 0;
    for (int i = 0; i < 3; i++) {
        rm_split_range(10, i, 3, &b, &e);
        CHECK(b == prev && e > b);
        prev = e;
    }
    CHECK(prev == 10);
}

TEST(kernel_cpu_force) {
    const rm_cpu_features *f = rm_cpu();
    int avx2 = f->avx2;
    rm_cpu_force("scalar");
    CHECK(rm_cpu()->avx2 == 0 && rm_cpu()->avx512f == 0);
    CHECK(strcmp(rm_cpu_describe(), "scalar") == 0);
    CHECK(strcmp(rm_matmul_family(RM_TYPE_Q8_0), "scalar") == 0);
    rm_cpu_force("avx2");
    CHECK(rm_cpu()->avx2 == avx2 && rm_cpu()->avx512f == 0);
    CHECK(strcmp(rm_matmul_family(RM_TYPE_Q4_0), avx2 ? "avx2" : "scalar") == 0);
    rm_cpu_force(NULL);
    if (f->avx512bw && f->avx512vnni && avx2) {
        CHECK(strcmp(rm_matmul_family(RM_TYPE_Q4_K), "avx512-vnni") == 0);
        CHECK(strcmp(rm_matmul_family(RM_TYPE_Q6_K), "avx512-vnni") == 0);
        CHECK(strcmp(rm_matmul_family(RM_TYPE_Q3_K), "avx512-vnni") == 0);
        CHECK(strcmp(rm_matmul_family(RM_TYPE_Q5_K), "avx512-vnni") == 0);
        CHECK(strcmp(rm_matmul_family(RM_TYPE_Q5_0), "avx512-vnni") == 0);
        CHECK(strcmp(rm_matmul_family(RM_TYPE_F16), "avx512") == 0);
        // bf16 weights: the bf16 dot products where the CPU has them, unless
        // RAMOLE_ISA=avx512 asks for AVX-512 without them
        int bf = f->avx512bf16;
        CHECK(strcmp(rm_matmul_family(RM_TYPE_BF16), bf ? "avx512-bf16" : "avx512") == 0);
        rm_cpu_force("avx512");
        CHECK(rm_cpu()->avx512bw && !rm_cpu()->avx512bf16);
        CHECK(strcmp(rm_matmul_family(RM_TYPE_BF16), "avx512") == 0);
        rm_cpu_force("avx512bf16");
        CHECK(rm_cpu()->avx512bf16 == bf);
        rm_cpu_force(NULL);
    }
    CHECK(rm_cpu()->avx2 == avx2);
    CHECK(strlen(rm_cpu_describe()) > 0);
}

// The int8 peak probe (ramole bench's compute bound) runs on every thread of
// the pool and reports a rate; without AVX2 it reports 0 (no such kernels);
// so does the bf16 probe outside the avx512-bf16 family.
// Only that it runs and what it returns are checked, never how fast.
TEST(kernel_int8_peak_probe) {
    rm_threadpool *tp = rm_threadpool_create(2);
    REQUIRE(tp);
    double k = -1, b = -1;
    rm_cpu_force("scalar");
    rm_measure_int8_peak(tp, &k, &b);
    CHECK(k == 0 && b == 0);
    rm_cpu_force(NULL);
    if (rm_cpu()->avx2 && rm_cpu()->fma && rm_cpu()->f16c) {
        rm_measure_int8_peak(tp, &k, &b);
        CHECK(k > 0 && b > 0 && k < 1e7 && b < 1e7); // GOP/s: positive and finite
    }
    // the bf16 dot-product probe: 0 unless the avx512-bf16 family runs
    rm_cpu_force("avx512");
    CHECK(rm_measure_bf16_peak(tp) == 0);
    rm_cpu_force(NULL);
    if (strcmp(rm_matmul_family(RM_TYPE_BF16), "avx512-bf16") == 0) {
        double g = rm_measure_bf16_peak(tp);
        CHECK(g > 0 && g < 1e7);
    }
    rm_threadpool_free(tp);
}

// Writes the executable shell script dir/name (dir is created); 0 on success.
static int write_script(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (mkdir(dir, 0755) != 0) return -1;
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f) == 0 && chmod(path, 0755) == 0 ? 0 : -1;
}

// `ramole bench` names the kernel family that ran (the one rm_matmul_family
// reports here, for the same CPU and RAMOLE_ISA) and, with --compare
// llamacpp, reads the driver's second run and divides by it: a stand-in
// driver prints a warm-up line to be skipped and known rates.
TEST(cli_bench_kernels_and_compare) {
    const char *tmp = rm_test_tmpdir();
    char args[2048], lc[512];
    snprintf(args, sizeof args, "synth --shape tiny --type q4_0 %s/bench-tiny.gguf", tmp);
    REQUIRE(rm_test_cli(args) == 0);
    snprintf(lc, sizeof lc, "%s/fake-llamacpp", tmp);
    REQUIRE(write_script(lc, "lb",
                         "#!/bin/sh\n"
                         "echo '{\"run\": 0, \"prefill64_tps\": 1, \"prefill512_tps\": 1, \"decode_tps\": 1, "
                         "\"batch8_tps\": 1, \"batch32_tps\": 1}'\n"
                         "echo '{\"run\": 1, \"prefill64_tps\": 10, \"prefill512_tps\": 20, \"decode_tps\": 30, "
                         "\"batch8_tps\": 40, \"batch32_tps\": 50}'\n") == 0);
    snprintf(args, sizeof args,
             "bench -m %s/bench-tiny.gguf -t 2 --runs 1 --steps 1 --json --compare llamacpp --llamacpp-dir %s", tmp,
             lc);
    REQUIRE(rm_test_cli(args) == 0);
    rm_json *j = NULL;
    const char *out = rm_test_cli_out();
    REQUIRE(rm_json_parse(out, strlen(out), "bench output", &j) == RM_OK);
    CHECKF(strcmp(rm_json_get_str(j, "kernels", ""), rm_matmul_family(RM_TYPE_Q4_0)) == 0,
           "kernels '%s', expected '%s'", rm_json_get_str(j, "kernels", ""), rm_matmul_family(RM_TYPE_Q4_0));
    CHECK(strstr(rm_test_cli_err(), rm_matmul_family(RM_TYPE_Q4_0)) != NULL);
    const char *by_type = rm_json_get_str(j, "kernels_by_type", "");
    char want_kind[64]; // the output matrix (too short a row to repack) stays q4_0
    snprintf(want_kind, sizeof want_kind, "q4_0 %s", rm_matmul_family(RM_TYPE_Q4_0));
    CHECKF(strncmp(by_type, want_kind, strlen(want_kind)) == 0, "kernels_by_type '%s', want '%s' first", by_type,
           want_kind);
    const char *keys[5] = {"prefill64_tps", "prefill512_tps", "decode_tps", "batch8_tps", "batch32_tps"};
    const rm_json *l = rm_json_get(j, "llamacpp"), *ratio = rm_json_get(j, "ratio");
    REQUIRE(l && ratio);
    for (int k = 0; k < 5; k++) {
        double ours = rm_json_get_num(j, keys[k], -1), theirs = rm_json_get_num(l, keys[k], -1);
        CHECKF(theirs == 10.0 * (k + 1), "%s: llama.cpp %g (the driver's second line says %d)", keys[k], theirs,
               10 * (k + 1));
        CHECKF(ours > 0 && fabs(rm_json_get_num(ratio, keys[k], -1) - ours / theirs) <= 1e-3 * ours / theirs,
               "%s: ratio %g for %g / %g", keys[k], rm_json_get_num(ratio, keys[k], -1), ours, theirs);
    }
    // one run: decode's share of the bound is that run's decode over the
    // bound of the probe taken with it (the median of one)
    double dec = rm_json_get_num(j, "decode_tps", -1), bound = rm_json_get_num(j, "decode_bound_tps", -1);
    double frac = rm_json_get_num(j, "decode_bound_frac", -1);
    CHECKF(bound > 0 && frac > 0 && fabs(frac - dec / bound) <= 1e-3 * dec / bound,
           "decode_bound_frac %g for %g / %g", frac, dec, bound);
    rm_json_free(j);
    // a missing driver and an unknown engine are refused before any work
    snprintf(args, sizeof args, "bench -m %s/bench-tiny.gguf --compare llamacpp --llamacpp-dir %s/nowhere", tmp, tmp);
    CHECK(rm_test_cli(args) == 2 && strstr(rm_test_cli_err(), "no llama.cpp bench driver at"));
    snprintf(args, sizeof args, "bench -m %s/bench-tiny.gguf --compare vllm", tmp);
    CHECK(rm_test_cli(args) == 2 && strstr(rm_test_cli_err(), "--compare takes 'llamacpp'"));
}

// `ramole bench-lora --compare llamacpp` hands llama.cpp's driver the same
// workload it serves (a sets file of B lines of k adapter numbers, each
// adapter written as a<i>.gguf beside it) and divides by the rate the driver
// prints; the stand-in driver answers only when what it was handed is
// complete, and the folder is gone afterwards.
TEST(cli_bench_lora_compare) {
    const char *tmp = rm_test_tmpdir();
    char args[2048], lc[512];
    snprintf(args, sizeof args, "synth --shape tiny --type q8_0 %s/bl-tiny.gguf", tmp);
    REQUIRE(rm_test_cli(args) == 0);
    snprintf(lc, sizeof lc, "%s/fake-lbl", tmp);
    REQUIRE(write_script(lc, "lbl",
                         "#!/bin/sh\n"
                         "# MODEL BINDIR THREADS ADAPTER_DIR SETS PROMPT STEPS\n"
                         "[ \"$6\" = 5 ] && [ \"$7\" = 3 ] || exit 1\n"
                         "[ \"$(wc -l < \"$5\")\" -eq 4 ] || exit 1\n"
                         "for n in $(cat \"$5\"); do [ -s \"$4/a$n.gguf\" ] || exit 1; done\n"
                         "awk 'NF != 2 { bad = 1 } END { exit bad }' \"$5\" || exit 1\n"
                         "echo \"$4\" > \"$(dirname \"$0\")/seen\"\n"
                         "echo '{\"engine\": \"llama.cpp\", \"tps\": 100}'\n") == 0);
    snprintf(args, sizeof args,
             "bench-lora -m %s/bl-tiny.gguf --adapters 6 --batch 4 --k 2 --rank 4 --prompt 5 --steps 3 "
             "--reps 2 -t 2 --json --compare llamacpp --llamacpp-dir %s",
             tmp, lc);
    int rc = rm_test_cli(args);
    CHECKF(rc == 0, "bench-lora --compare: exit %d: %s", rc, rm_test_cli_err());
    rm_json *j = NULL;
    const char *out = rm_test_cli_out();
    REQUIRE(rm_json_parse(out, strlen(out), "bench-lora output", &j) == RM_OK);
    double ours = rm_json_get_num(j, "workload_tps", -1);
    CHECK(rm_json_get_num(j, "llamacpp_workload_tps", -1) == 100);
    CHECKF(ours > 0 && fabs(rm_json_get_num(j, "workload_ratio", -1) - ours / 100) <= 1e-3 * ours / 100,
           "ratio %g for %g / 100", rm_json_get_num(j, "workload_ratio", -1), ours);
    rm_json_free(j);
    char seen[600], dir[600] = "";
    snprintf(seen, sizeof seen, "%s/seen", lc);
    FILE *f = fopen(seen, "r");
    REQUIRE(f);
    CHECK(fgets(dir, sizeof dir, f) != NULL);
    fclose(f);
    dir[strcspn(dir, "\n")] = 0;
    struct stat st;
    CHECKF(dir[0] && stat(dir, &st) != 0, "the workload folder %s is left behind", dir);
    // only compositions llama.cpp has
    snprintf(args, sizeof args, "bench-lora -m %s/bl-tiny.gguf --compose router --compare llamacpp --llamacpp-dir %s",
             tmp, lc);
    CHECK(rm_test_cli(args) == 2 && strstr(rm_test_cli_err(), "needs --compose mixture or selection"));
    snprintf(args, sizeof args, "bench-lora -m %s/bl-tiny.gguf --compare llamacpp --llamacpp-dir %s/nowhere", tmp, tmp);
    CHECK(rm_test_cli(args) == 2 && strstr(rm_test_cli_err(), "no llama.cpp LoRA driver at"));
}
