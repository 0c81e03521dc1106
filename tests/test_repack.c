// test_repack.c — the r16 weight layouts (src/tensor/repack.c): the layout
// round-trips byte for byte, the AVX-512 repack writes exactly the layout the
// scalar specification describes, a matmul on repacked weights gives the
// same bits as on the file's layout, and a model loaded repacked answers and
// merges exactly as one loaded as it is.
#include "testing.h"
#include "base/cpu.h"
#include "base/err.h"
#include "base/file.h"
#include "format/gguf.h"
#include "lora/adapter.h"
#include "lora/router.h"
#include "model/kvcache.h"
#include "model/llama.h"
#include "model/synth.h"
#include "tensor/kernels.h"
#include "tensor/tensor.h"

#include <stdlib.h>
#include <string.h>

static uint64_t g_seed = 0x5EED0F16ull;
static float rnd(void) { // uniform in [-1, 1)
    g_seed = g_seed * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_seed >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static int vnni(void) { return rm_cpu()->avx512bw && rm_cpu()->avx512vnni && rm_cpu()->avx2; }

// W[out, in] of type t with random values.
static rm_tensor make_w(rm_type t, int in, int out) {
    rm_tensor W = {t, 2, {in, out, 1, 1}, NULL};
    size_t rs = rm_row_size(t, in);
    W.data = malloc(rs * (size_t)out);
    float *row = malloc(sizeof(float) * (size_t)in);
    for (int r = 0; r < out; r++) {
        for (int i = 0; i < in; i++) row[i] = 0.05f * rnd();
        rm_quantize_row(t, row, (uint8_t *)W.data + rs * (size_t)r, in);
    }
    free(row);
    return W;
}

static rm_tensor copy_w(const rm_tensor *W) {
    rm_tensor C = *W;
    size_t n = rm_row_size(W->type, W->ne[0]) * (size_t)W->ne[1];
    C.data = malloc(n);
    memcpy(C.data, W->data, n);
    return C;
}

static const rm_type k_base[] = {RM_TYPE_Q8_0, RM_TYPE_Q4_0, RM_TYPE_Q4_K};
static rm_type r16_of(rm_type t) {
    return t == RM_TYPE_Q8_0 ? RM_TYPE_Q8_0_R16 : t == RM_TYPE_Q4_0 ? RM_TYPE_Q4_0_R16 : RM_TYPE_Q4_K_R16;
}
// 16 blocks (one full group), 33 (two and a tail of one), 24 (one and a tail of 8), 40 (2 + 8);
// q4_K: 2 super-blocks (one full group), 3 (one and a tail), 4 (two), 5 (two and a tail)
static int k_in(rm_type t, int a) {
    static const int in32[] = {512, 1056, 768, 1280}, in256[] = {512, 768, 1024, 1280};
    return t == RM_TYPE_Q4_K ? in256[a] : in32[a];
}

// The layout as repack.c states it: byte e of block l of group G at
// G*GQ + 64*(e/4) + 4*l + e%4 (q8_0 plus 128), the f16 scales after all full
// groups' quants, the tail blocks where they were. Checked here from the
// statement, independently of the code's loops.
// The q4_K layout as repack.c states it, checked against the row's
// super-blocks the same way; returns the number of places that differ.
static int k16_layout_diffs(const uint8_t *src, const uint8_t *p, int in) {
    const int nb = in / 256, F = nb / 2;
    int bad = 0;
    for (int b = 0; b < nb; b++) {
        const uint8_t *blk = src + 144 * b; // d, dmin, scales[12], qs[128]
        if (b >= 2 * F) {
            bad += memcmp(p + 144 * b, blk, 144) != 0;
            continue;
        }
        const int G = b / 2, s = b % 2;
        const uint8_t *t = p + 256 * F + 32 * G;
        bad += memcmp(t + 2 * s, blk, 2) != 0;     // d
        bad += memcmp(t + 4 + 2 * s, blk + 2, 2) != 0; // dmin
        for (int w = 0; w < 3; w++) bad += memcmp(t + 8 + 8 * w + 4 * s, blk + 4 + 4 * w, 4) != 0;
        for (int j = 0; j < 8; j++)
            for (int e = 0; e < 16; e++) {
                const uint8_t *qs = blk + 16 + 32 * (j / 2);
                int lo = (qs[e] >> (4 * (j % 2))) & 15, hi = (qs[e + 16] >> (4 * (j % 2))) & 15;
                bad += p[256 * G + 64 * (e / 4) + 4 * (8 * s + j) + e % 4] != (uint8_t)(lo | hi << 4);
            }
    }
    return bad;
}

TEST(repack_layout_as_documented) {
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 4; a++) {
            const rm_type t = k_base[k];
            const int in = k_in(t, a), nb = in / 32, F = nb / 16, q8 = t == RM_TYPE_Q8_0;
            const int bb = q8 ? 34 : 18, pb = q8 ? 32 : 16, gq = 16 * pb;
            rm_tensor W = make_w(t, in, 1);
            const size_t rs = rm_row_size(t, in);
            uint8_t *p = malloc(rs), *back = malloc(rs);
            rm_r16_pack_row(t, W.data, p, in);
            const uint8_t *src = W.data;
            int bad = 0;
            for (int b = 0; t != RM_TYPE_Q4_K && b < nb; b++) {
                if (b >= 16 * F) { // tail: untouched
                    bad += memcmp(p + b * bb, src + b * bb, (size_t)bb) != 0;
                    continue;
                }
                int G = b / 16, l = b % 16;
                bad += memcmp(p + F * gq + 2 * b, src + b * bb, 2) != 0;
                for (int e = 0; e < pb; e++)
                    bad += p[G * gq + 64 * (e / 4) + 4 * l + e % 4] != (uint8_t)(src[b * bb + 2 + e] + (q8 ? 128 : 0));
            }
            if (t == RM_TYPE_Q4_K) bad = k16_layout_diffs(src, p, in);
            CHECKF(bad == 0, "%s in=%d: %d places differ from the documented layout", rm_type_name(t), in, bad);
            rm_r16_unpack_row(r16_of(t), p, back, in);
            CHECKF(memcmp(back, src, rs) == 0, "%s in=%d: unpack(pack(row)) is not the row", rm_type_name(t), in);
            // dequantized whole, the repacked row gives the same floats
            float *x = malloc(sizeof(float) * in), *y = malloc(sizeof(float) * in);
            rm_dequantize_row(t, src, x, in);
            rm_dequantize_row(r16_of(t), p, y, in);
            CHECKF(memcmp(x, y, sizeof(float) * in) == 0, "%s in=%d: dequantized r16 differs", rm_type_name(t), in);
            // quantizing straight into r16 = quantizing, then packing
            uint8_t *qr = malloc(rs);
            rm_quantize_row(r16_of(t), x, qr, in);
            CHECK(memcmp(qr, p, rs) == 0);
            free(qr);
            free(x);
            free(y);
            free(p);
            free(back);
            free(W.data);
        }
}

// The r16 types exist in memory only: no file type, no name to parse.
TEST(repack_types_not_file_types) {
    CHECK(!rm_type_supported(RM_TYPE_Q8_0_R16) && !rm_type_supported(RM_TYPE_Q4_0_R16) &&
          !rm_type_supported(RM_TYPE_Q4_K_R16));
    rm_type t;
    CHECK(rm_type_parse("q8_0-r16", &t) != RM_OK && rm_type_parse("q4_K-r16", &t) != RM_OK);
    CHECK(rm_row_size(RM_TYPE_Q8_0_R16, 1024) == rm_row_size(RM_TYPE_Q8_0, 1024));
    CHECK(rm_row_size(RM_TYPE_Q4_K_R16, 1024) == rm_row_size(RM_TYPE_Q4_K, 1024));
    CHECK(rm_type_r16_base(RM_TYPE_Q4_0_R16) == RM_TYPE_Q4_0 && rm_type_r16_base(RM_TYPE_Q4_K) == -1);
    CHECK(rm_type_r16_base(RM_TYPE_Q4_K_R16) == RM_TYPE_Q4_K);
    // and the GGUF writer refuses to put one in a file
    gguf_writer *w = gguf_writer_new();
    REQUIRE(w);
    uint8_t row[34 * 16] = {0};
    const int64_t ne[2] = {512, 1};
    CHECK(gguf_add_tensor(w, "blk.0.attn_q.weight", RM_TYPE_Q8_0_R16, 2, ne, row) != RM_OK);
    gguf_writer_free(w);
}

// What rm_repack_for_kernels writes (the AVX-512 repack, threaded) is the
// documented layout, row by row; RAMOLE_REPACK=0 and unsuitable matrices are
// left alone.
TEST(repack_simd_writes_the_layout) {
    if (!vnni()) SKIP("no avx512 with vnni on this machine: weights are never repacked here");
    rm_threadpool *tp = rm_threadpool_create(2);
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 4; a++) {
            rm_tensor W = make_w(k_base[k], k_in(k_base[k], a), 37), R = copy_w(&W);
            CHECK(rm_repack_for_kernels(&R, a % 2 ? tp : NULL) == 1);
            CHECK(R.type == r16_of(k_base[k]));
            size_t rs = rm_row_size(W.type, W.ne[0]);
            uint8_t *p = malloc(rs);
            int bad = 0;
            for (int r = 0; r < 37; r++) {
                rm_r16_pack_row(W.type, (uint8_t *)W.data + rs * r, p, W.ne[0]);
                bad += memcmp(p, (uint8_t *)R.data + rs * r, rs) != 0;
            }
            CHECKF(bad == 0, "%s in=%d: %d rows differ from the scalar layout", rm_type_name(W.type), (int)W.ne[0],
                   bad);
            free(p);
            free(R.data);
            free(W.data);
        }
    rm_tensor small = make_w(RM_TYPE_Q8_0, 480, 3), k4 = make_w(RM_TYPE_Q4_K, 256, 3); // 15 blocks; 1 super-block
    CHECK(rm_repack_for_kernels(&small, NULL) == 0 && small.type == RM_TYPE_Q8_0);
    CHECK(rm_repack_for_kernels(&k4, NULL) == 0 && k4.type == RM_TYPE_Q4_K);
    rm_tensor off = make_w(RM_TYPE_Q8_0, 512, 3);
    setenv("RAMOLE_REPACK", "0", 1);
    CHECK(rm_repack_for_kernels(&off, NULL) == 0 && off.type == RM_TYPE_Q8_0);
    unsetenv("RAMOLE_REPACK");
    free(small.data);
    free(k4.data);
    free(off.data);
    rm_threadpool_free(tp);
}

// y = x W^T on repacked weights is bitwise what the same family computes on
// the file's layout, for every activation row count through the decode,
// tiled and edge paths, with and without threads; families that cannot read
// r16 (forced after the load) fall back to the scalar reference exactly.
TEST(repack_matmul_bitwise) {
    if (!vnni()) SKIP("no avx512 with vnni on this machine: weights are never repacked here");
    rm_threadpool *tp = rm_threadpool_create(2);
    for (int k = 0; k < 3; k++)
        for (int a = 0; a < 4; a++) {
            const int in = k_in(k_base[k], a), out = 29;
            rm_tensor W = make_w(k_base[k], in, out), R = copy_w(&W);
            REQUIRE(rm_repack_for_kernels(&R, NULL) == 1);
            float *x = malloc(sizeof(float) * in * 40), *y0 = malloc(sizeof(float) * out * 40),
                  *y1 = malloc(sizeof(float) * out * 40);
            for (int i = 0; i < in * 40; i++) x[i] = rnd();
            for (int n = 1; n <= 40; n += rm_test_sanitized() ? 9 : 1) {
                rm_matmul(n % 2 ? tp : NULL, &W, x, in, y0, out, n, 0);
                rm_matmul(n % 3 ? tp : NULL, &R, x, in, y1, out, n, 0);
                CHECKF(memcmp(y0, y1, sizeof(float) * out * n) == 0, "%s in=%d n=%d: repacked differs",
                       rm_type_name(W.type), in, n);
            }
            rm_cpu_force("avx2");
            CHECK(strcmp(rm_matmul_family(R.type), "scalar") == 0);
            rm_matmul(NULL, &R, x, in, y1, out, 3, 0);
            rm_matmul_ref(&W, x, in, y0, out, 3, 0);
            CHECK(memcmp(y0, y1, sizeof(float) * out * 3) == 0);
            rm_cpu_force(NULL);
            free(x);
            free(y0);
            free(y1);
            free(R.data);
            free(W.data);
        }
    rm_threadpool_free(tp);
}

// A q8_0 model whose matrices have full 16-block groups and tails (n_embd
// 512, n_ff 1056, an untied classifier), and a q4_K one with full groups and
// tails of super-blocks: loaded repacked (the default here) and with
// RAMOLE_REPACK=0, the logits of a prompt are the same bits, and a merge with
// an adapter writes the same file.
static int model_logits(const char *path, float *logits, rm_llama **keep) {
    rm_llama *m;
    if (rm_llama_load(&m, path)) return -1;
    rm_kvcache kv;
    if (rm_kvcache_init(&kv, m->hp.n_layer, 1, 16, m->hp.n_head_kv * m->hp.head_dim)) return -1;
    int32_t tok[5] = {1, 7, 42, 99, 3}, pos[5] = {0, 1, 2, 3, 4}, slot[5] = {0};
    uint8_t want[5] = {1, 0, 1, 0, 1};
    rm_batch b = {5, tok, pos, slot, want, NULL};
    int rc = rm_llama_forward(m, &kv, NULL, &b, NULL, logits);
    rm_kvcache_free(&kv);
    *keep = m;
    return rc;
}

// The synthetic model ties its classifier to the embedding table; real ones
// (TinyLlama, Llama 2) have their own: copy the file with an output.weight.
static int untie(const char *in, const char *out) {
    gguf_file g;
    int rc = gguf_open(&g, in);
    if (rc) return rc;
    gguf_writer *w = gguf_writer_new();
    for (uint64_t k = 0; k < g.n_kv && !rc; k++) {
        char key[256];
        gguf_str_copy(g.kv[k].key, key, sizeof key);
        rc = gguf_set_value(w, key, &g.kv[k].val);
    }
    for (uint64_t t = 0; t < g.n_tensors && !rc; t++) {
        const gguf_tensor_info *ti = &g.tensors[t];
        char name[160];
        gguf_str_copy(ti->name, name, sizeof name);
        rc = gguf_add_tensor(w, name, (rm_type)ti->type, ti->n_dims, ti->ne, ti->data);
        if (!rc && strcmp(name, "token_embd.weight") == 0)
            rc = gguf_add_tensor(w, "output.weight", (rm_type)ti->type, ti->n_dims, ti->ne, ti->data);
    }
    if (!rc) rc = gguf_write(w, out);
    gguf_writer_free(w);
    gguf_close(&g);
    return rc;
}

// One model of weight type t and shape sh (its classifier tied to the
// embedding table or its own), loaded both ways (repacked: the matrices and
// the classifier become r16, a tied table with it: embedding rows are read
// through rm_dequantize_row), with the same router fingerprint.
static void same_answers_and_merge(rm_type t, rm_synth_shape shape, int tied) {
    char path[512], m0[512], m1[512];
    snprintf(path, sizeof path, "%s/r16.gguf", rm_test_tmpdir());
    snprintf(m0, sizeof m0, "%s/tied.gguf", rm_test_tmpdir());
    snprintf(m1, sizeof m1, "%s/merged1.gguf", rm_test_tmpdir());
    REQUIRE(rm_synth_write(&shape, t, 21, tied ? path : m0, NULL, NULL) == RM_OK);
    REQUIRE(tied || untie(m0, path) == RM_OK);
    snprintf(m0, sizeof m0, "%s/merged0.gguf", rm_test_tmpdir());
    const int nv = shape.n_vocab;
    float *l0 = malloc(sizeof(float) * nv * 3), *l1 = malloc(sizeof(float) * nv * 3);
    rm_llama *a = NULL, *b = NULL;
    setenv("RAMOLE_REPACK", "0", 1);
    REQUIRE(model_logits(path, l0, &a) == RM_OK);
    unsetenv("RAMOLE_REPACK");
    REQUIRE(model_logits(path, l1, &b) == RM_OK);
    const rm_type r = r16_of(t);
    CHECK(a->layers[0].w[0].type == t && b->layers[0].w[0].type == r);
    CHECK(b->output.type == r && b->layers[1].w[RM_LIN_COUNT - 1].type == r);
    CHECK(tied == (b->output.data == b->tok_embd.data) && b->tok_embd.type == (tied ? r : t));
    CHECKF(memcmp(l0, l1, sizeof(float) * nv * 3) == 0, "%s: logits differ repacked", rm_type_name(t));
    CHECKF(rm_router_base_fingerprint(a) == rm_router_base_fingerprint(b), "%s: the router fingerprint moved",
           rm_type_name(t));
    // merge: an adapter on q and v of every layer (touched matrices), the others copied
    rm_lora *la = NULL, *lb = NULL;
    REQUIRE(rm_lora_random(&la, a, 4, 0x5, 77) == RM_OK && rm_lora_random(&lb, b, 4, 0x5, 77) == RM_OK);
    float w = 1.0f;
    CHECK_OK(rm_lora_merge(a, 1, &la, &w, -1, m0));
    CHECK_OK(rm_lora_merge(b, 1, &lb, &w, -1, m1));
    char *d0 = NULL, *d1 = NULL;
    size_t n0 = 0, n1 = 0;
    REQUIRE(rm_read_file(m0, &d0, &n0) == RM_OK && rm_read_file(m1, &d1, &n1) == RM_OK);
    CHECKF(n0 == n1 && n0 > 0 && memcmp(d0, d1, n0) == 0, "%s: merged files differ", rm_type_name(t));
    free(d0);
    free(d1);
    rm_lora_free(la);
    rm_lora_free(lb);
    rm_llama_free(a);
    rm_llama_free(b);
    free(l0);
    free(l1);
}

TEST(repack_model_same_answers_and_merge) {
    if (!vnni()) SKIP("no avx512 with vnni on this machine: weights are never repacked here");
    for (int tied = 0; tied < 2; tied++) {
        same_answers_and_merge(RM_TYPE_Q8_0, (rm_synth_shape){"r16", 300, 512, 2, 8, 4, 1056, 64}, tied);
        // q4_K: n_embd 512 (one full group of two super-blocks), n_ff 768 (one and a tail)
        same_answers_and_merge(RM_TYPE_Q4_K, (rm_synth_shape){"r16k", 300, 512, 2, 8, 4, 768, 64}, tied);
    }
}
