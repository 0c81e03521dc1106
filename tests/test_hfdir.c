// test_hfdir.c — Hugging Face directory -> GGUF: tiny Llama / Mistral
// (sharded) / Qwen2 models written with the safetensors writer, converted,
// read back; the Q/K row permutation against hand-computed rows and against
// RoPE itself; quantized output; the error cases.
#define _GNU_SOURCE
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "base/fp16.h"
#include "base/json.h"
#include "format/gguf.h"
#include "format/ftype.h"
#include "format/hfdir.h"
#include "format/safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// Model shape: vocab 10, hidden 64, 4 heads of 16, 2 KV heads, ffn 96, 2 layers.
enum { V = 10, H = 64, NH = 4, NKV = 2, HD = 16, FF = 96, NL = 2 };

typedef struct mopts {
    const char *hf_arch;   // architectures[0]
    int qwen_bias;         // add q/k/v biases
    int lm_head;           // write lm_head.weight
    int tie;               // tie_word_embeddings
    int sharded;           // two shards + index
    const char *skip;      // tensor to leave out
    const char *bad_shape; // tensor written with one row too many
    const char *rope;      // rope_scaling JSON or NULL
    int tokenizer;         // write a tokenizer.json
} mopts;

// Tensor `ti`'s HF element (r, c): exact in f32, unique per tensor.
static float hval(int ti, int64_t r, int64_t c) { return (float)ti * 256.0f + (float)r + (float)c / 128.0f; }

typedef struct gen_tensor {
    char name[96];
    st_dtype dt;
    int nd;
    int64_t shape[2];
    void *data;
} gen_tensor;
static gen_tensor g_gen[64];
static int g_ngen;

static int gen_index(const char *name) {
    for (int i = 0; i < g_ngen; i++)
        if (strcmp(g_gen[i].name, name) == 0) return i;
    return -1;
}

static void gen_add(const mopts *o, const char *name, st_dtype dt, int64_t d0, int64_t d1) {
    if (o->skip && strcmp(o->skip, name) == 0) return;
    gen_tensor *t = &g_gen[g_ngen];
    int ti = g_ngen++;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dt = dt;
    t->nd = d1 ? 2 : 1;
    t->shape[0] = d0 + (o->bad_shape && strcmp(o->bad_shape, name) == 0);
    t->shape[1] = d1;
    int64_t rows = t->nd == 2 ? t->shape[0] : 1, cols = t->nd == 2 ? d1 : t->shape[0];
    t->data = malloc((size_t)(rows * cols) * st_dtype_size(dt));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float v = t->nd == 2 ? hval(ti, r, c) : hval(ti, c, 0);
            size_t k = (size_t)(r * cols + c);
            if (dt == ST_F32) ((float *)t->data)[k] = v;
            else if (dt == ST_F16) ((uint16_t *)t->data)[k] = rm_f32_to_f16(v);
            else ((uint16_t *)t->data)[k] = rm_f32_to_bf16(v);
        }
}

static void gen_free(void) {
    for (int i = 0; i < g_ngen; i++) free(g_gen[i].data);
    g_ngen = 0;
}

static int write_text(const char *dir, const char *file, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return rm_write_file_atomic(path, text, strlen(text));
}

// Creates a fresh model directory `name` under the test tmpdir; its path in out.
static int make_model(const char *name, const mopts *o, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", rm_test_tmpdir(), name);
    if (rm_mkdirs(out) != RM_OK) return -1;
    gen_free();
    gen_add(o, "model.embed_tokens.weight", ST_F32, V, H);
    for (int L = 0; L < NL; L++) {
        char n[96];
#define T(suffix, dt, d0, d1) (snprintf(n, sizeof n, "model.layers.%d.%s", L, suffix), gen_add(o, n, dt, d0, d1))
        T("input_layernorm.weight", ST_F32, H, 0);
        T("self_attn.q_proj.weight", ST_F32, NH * HD, H);
        T("self_attn.k_proj.weight", ST_F32, NKV * HD, H);
        T("self_attn.v_proj.weight", ST_F16, NKV * HD, H);
        T("self_attn.o_proj.weight", ST_BF16, H, NH * HD);
        if (o->qwen_bias) {
            T("self_attn.q_proj.bias", ST_F32, NH * HD, 0);
            T("self_attn.k_proj.bias", ST_BF16, NKV * HD, 0);
            T("self_attn.v_proj.bias", ST_F32, NKV * HD, 0);
        }
        T("post_attention_layernorm.weight", ST_BF16, H, 0);
        T("mlp.gate_proj.weight", ST_F32, FF, H);
        T("mlp.up_proj.weight", ST_F32, FF, H);
        T("mlp.down_proj.weight", ST_F32, H, FF);
#undef T
    }
    gen_add(o, "model.norm.weight", ST_F32, H, 0);
    if (o->lm_head) gen_add(o, "lm_head.weight", ST_F32, V, H);

    // Shard 1 takes the tensors before layer 1, shard 2 the rest.
    st_writer *w[2] = {st_writer_new(), st_writer_new()};
    rm_sb idx;
    rm_sb_init(&idx);
    rm_sb_puts(&idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
    int rc = 0, shard = 0;
    for (int i = 0; i < g_ngen; i++) {
        gen_tensor *t = &g_gen[i];
        if (o->sharded && strstr(t->name, "layers.1.")) shard = 1;
        rc |= st_writer_add(w[o->sharded ? shard : 0], t->name, t->dt, t->nd, t->shape, t->data);
        rm_sb_printf(&idx, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", t->name, shard + 1);
    }
    rm_sb_puts(&idx, "}}");
    rc |= st_writer_meta(w[0], "format", "pt");
    char path[1024];
    if (o->sharded) {
        for (int s = 0; s < 2; s++) {
            snprintf(path, sizeof path, "%s/model-0000%d-of-00002.safetensors", out, s + 1);
            rc |= st_write(w[s], path);
        }
        rc |= write_text(out, "model.safetensors.index.json", idx.buf);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        rc |= st_write(w[0], path);
    }
    st_writer_free(w[0]);
    st_writer_free(w[1]);
    rm_sb_free(&idx);

    rm_sb cfg;
    rm_sb_init(&cfg);
    rm_sb_printf(&cfg,
                 "{\"architectures\": [\"%s\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
                 "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
                 "\"vocab_size\": %d, \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05, "
                 "\"rope_theta\": 500000.0, \"tie_word_embeddings\": %s, \"torch_dtype\": \"float32\", "
                 "\"_name_or_path\": \"tiny/%s\"",
                 o->hf_arch, H, FF, NL, NH, NKV, V, o->tie ? "true" : "false", name);
    if (o->rope) rm_sb_printf(&cfg, ", \"rope_scaling\": %s", o->rope);
    rm_sb_puts(&cfg, "}");
    rc |= write_text(out, "config.json", cfg.buf);
    if (o->tokenizer) rc |= write_text(out, "tokenizer.json", "{}");
    rm_sb_free(&cfg);
    return rc;
}

// Value of GGUF tensor element (row r, col c) as f32 (F32/F16/BF16 only).
static float gval(const gguf_tensor_info *t, int64_t r, int64_t c) {
    int64_t k = r * t->ne[0] + c;
    if (t->type == RM_TYPE_F32) {
        float f;
        memcpy(&f, (const char *)t->data + 4 * k, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)t->data + 2 * k, 2);
    return t->type == RM_TYPE_F16 ? rm_f16_to_f32(h) : rm_bf16_to_f32(h);
}

static uint32_t get_u32(const gguf_file *g, const char *key) {
    uint32_t v = 0;
    if (gguf_get_u32(g, key, &v) != RM_OK) rm_test_fail(__FILE__, __LINE__, "missing %s", key);
    return v;
}

static float get_f32(const gguf_file *g, const char *key) {
    float v = 0;
    if (gguf_get_f32(g, key, &v) != RM_OK) rm_test_fail(__FILE__, __LINE__, "missing %s", key);
    return v;
}

static int str_is(const gguf_file *g, const char *key, const char *want) {
    gguf_str s;
    return gguf_get_str(g, key, &s) == RM_OK && gguf_str_eq(s, want);
}

// The hand-computed GGUF row order of one 16-row head: (2i, 2i+1) <- (i, i+8).
static const int64_t k_perm16[16] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};

// Checks GGUF tensor gg against generated HF tensor hf; perm: rows permuted per head.
static void check_tensor(const gguf_file *g, const char *gg, const char *hf, int perm, int line) {
    const gguf_tensor_info *t = gguf_find_tensor(g, gg);
    int ti = gen_index(hf);
    if (!t || ti < 0) {
        rm_test_fail(__FILE__, line, "tensor %s / %s missing", gg, hf);
        return;
    }
    const gen_tensor *s = &g_gen[ti];
    int64_t rows = s->nd == 2 ? s->shape[0] : 1, cols = s->nd == 2 ? s->shape[1] : s->shape[0];
    if (t->ne[0] != cols || (s->nd == 2 && t->ne[1] != rows) || t->n_dims != s->nd) {
        rm_test_fail(__FILE__, line, "%s: shape [%lld,%lld]", gg, (long long)t->ne[0], (long long)t->ne[1]);
        return;
    }
    int bad = 0;
    for (int64_t r = 0; r < rows && !bad; r++)
        for (int64_t c = 0; c < cols && !bad; c++) {
            int64_t sr = perm ? (r / HD) * HD + k_perm16[r % HD] : r;
            float want = s->nd == 2 ? hval(ti, sr, c) : hval(ti, c, 0);
            if (s->dt == ST_F16) want = rm_f16_to_f32(rm_f32_to_f16(want));
            if (s->dt == ST_BF16) want = rm_bf16_to_f32(rm_f32_to_bf16(want));
            if (t->type == RM_TYPE_F16) want = rm_f16_to_f32(rm_f32_to_f16(want)); // converted on the way
            if (gval(t, r, c) != want) {
                rm_test_fail(__FILE__, line, "%s[%lld,%lld] = %g, want %g", gg, (long long)r, (long long)c,
                             gval(t, r, c), want);
                bad = 1;
            }
        }
}
#define CHECK_TENSOR(g, gg, hf, perm) check_tensor(g, gg, hf, perm, __LINE__)

static void count_progress(void *ctx, int done, int total) {
    int *p = ctx;
    p[0]++;
    p[1] = done;
    p[2] = total;
}

// make_model + convert to TMP/name.gguf + open it in g; 0 on success.
static int convert_model(const char *name, const mopts *o, int out_type, int *prog, gguf_file *g) {
    char dir[512], out[600];
    if (make_model(name, o, dir, sizeof dir) != 0) return -1;
    snprintf(out, sizeof out, "%s/%s.gguf", rm_test_tmpdir(), name);
    int rc = hfdir_convert_to_gguf(dir, out, out_type, prog ? count_progress : NULL, prog);
    if (rc == RM_OK) rc = gguf_open(g, out);
    if (rc != RM_OK) rm_test_fail(__FILE__, __LINE__, "%s: %s", name, rm_last_error());
    return rc;
}

// ---------------------------------------------------------------------------

TEST(hfdir_qk_permutation_by_hand) {
    // head_dim 4, two heads: GGUF rows 0..7 come from HF rows 0,2,1,3 | 4,6,5,7.
    int64_t want4[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int r = 0; r < 8; r++) CHECKF(hfdir_qk_src_row(r, 4) == want4[r], "row %d", r);
    for (int r = 0; r < 32; r++) CHECKF(hfdir_qk_src_row(r, 16) == (r / 16) * 16 + k_perm16[r % 16], "row %d", r);
    // head_dim 2 is the identity.
    for (int r = 0; r < 6; r++) CHECK(hfdir_qk_src_row(r, 2) == r);
}

// The permutation is right when RoPE in the GGUF convention (rotate pairs
// (2i, 2i+1)) on permuted rows equals RoPE in the HF convention (rotate pairs
// (i, i+d/2)) followed by the same permutation.
TEST(hfdir_qk_permutation_matches_rope) {
    enum { D = 8 };
    float x[D] = {0.3f, -1.2f, 2.0f, 0.7f, -0.4f, 1.1f, 0.05f, -2.2f};
    for (int pos = 0; pos < 5; pos++) {
        float hf[D], px[D], gg[D];
        for (int i = 0; i < D / 2; i++) {
            double th = pos * pow(10000.0, -2.0 * i / D);
            float cs = (float)cos(th), sn = (float)sin(th);
            hf[i] = x[i] * cs - x[i + D / 2] * sn;
            hf[i + D / 2] = x[i] * sn + x[i + D / 2] * cs;
        }
        for (int r = 0; r < D; r++) px[r] = x[hfdir_qk_src_row(r, D)];
        for (int i = 0; i < D / 2; i++) {
            double th = pos * pow(10000.0, -2.0 * i / D);
            float cs = (float)cos(th), sn = (float)sin(th);
            gg[2 * i] = px[2 * i] * cs - px[2 * i + 1] * sn;
            gg[2 * i + 1] = px[2 * i] * sn + px[2 * i + 1] * cs;
        }
        for (int r = 0; r < D; r++) CHECK_NEAR(gg[r], hf[hfdir_qk_src_row(r, D)], 1e-6);
    }
}

TEST(hfdir_convert_llama) {
    mopts o = {.hf_arch = "LlamaForCausalLM",
               .lm_head = 1,
               .tokenizer = 1,
               .rope = "{\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                       "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}"};
    int prog[3] = {0};
    gguf_file g;
    REQUIRE(convert_model("llama", &o, -1, prog, &g) == 0);
    CHECK(prog[0] == 21 && prog[1] == 21 && prog[2] == 21);
    CHECK(str_is(&g, "general.architecture", "llama"));
    CHECK(str_is(&g, "general.name", "tiny/llama"));
    CHECK(get_u32(&g, "llama.context_length") == 4096);
    CHECK(get_u32(&g, "llama.embedding_length") == H);
    CHECK(get_u32(&g, "llama.block_count") == NL);
    CHECK(get_u32(&g, "llama.feed_forward_length") == FF);
    CHECK(get_u32(&g, "llama.attention.head_count") == NH);
    CHECK(get_u32(&g, "llama.attention.head_count_kv") == NKV);
    CHECK(get_u32(&g, "llama.rope.dimension_count") == HD);
    CHECK(get_u32(&g, "llama.vocab_size") == V);
    CHECK(get_f32(&g, "llama.attention.layer_norm_rms_epsilon") == 1e-5f);
    CHECK(get_f32(&g, "llama.rope.freq_base") == 500000.0f);
    CHECK(str_is(&g, "llama.rope.scaling.type", "llama3"));
    CHECK(get_f32(&g, "llama.rope.scaling.factor") == 8.0f);
    CHECK(get_f32(&g, "llama.rope.scaling.low_freq_factor") == 1.0f);
    CHECK(get_f32(&g, "llama.rope.scaling.high_freq_factor") == 4.0f);
    CHECK(get_u32(&g, "llama.rope.scaling.original_context_length") == 8192);
    gguf_str tp;
    CHECK(gguf_get_str(&g, "ramole.hf_tokenizer_path", &tp) == RM_OK && tp.len > 15);
    CHECK(gguf_find(&g, "llama.attention.key_length") == NULL); // head_dim = hidden / heads
    CHECK(g.n_tensors == 21);

    CHECK_TENSOR(&g, "token_embd.weight", "model.embed_tokens.weight", 0);
    CHECK_TENSOR(&g, "output_norm.weight", "model.norm.weight", 0);
    CHECK_TENSOR(&g, "output.weight", "lm_head.weight", 0);
    for (int L = 0; L < NL; L++) {
        char gg[64], hf[96];
#define PAIR(gs, hs, perm)                                                                                             \
    (snprintf(gg, sizeof gg, "blk.%d.%s", L, gs), snprintf(hf, sizeof hf, "model.layers.%d.%s", L, hs),                \
     CHECK_TENSOR(&g, gg, hf, perm))
        PAIR("attn_norm.weight", "input_layernorm.weight", 0);
        PAIR("attn_q.weight", "self_attn.q_proj.weight", 1);
        PAIR("attn_k.weight", "self_attn.k_proj.weight", 1);
        PAIR("attn_v.weight", "self_attn.v_proj.weight", 0);
        PAIR("attn_output.weight", "self_attn.o_proj.weight", 0);
        PAIR("ffn_norm.weight", "post_attention_layernorm.weight", 0);
        PAIR("ffn_gate.weight", "mlp.gate_proj.weight", 0);
        PAIR("ffn_up.weight", "mlp.up_proj.weight", 0);
        PAIR("ffn_down.weight", "mlp.down_proj.weight", 0);
#undef PAIR
    }
    // Types kept as stored, norms in F32, shapes in GGUF order.
    const gguf_tensor_info *t = gguf_find_tensor(&g, "blk.0.attn_v.weight");
    CHECK(t && t->type == RM_TYPE_F16 && t->ne[0] == H && t->ne[1] == NKV * HD);
    t = gguf_find_tensor(&g, "blk.0.attn_output.weight");
    CHECK(t && t->type == RM_TYPE_BF16);
    t = gguf_find_tensor(&g, "blk.1.ffn_norm.weight");
    CHECK(t && t->type == RM_TYPE_F32 && t->n_dims == 1 && t->ne[0] == H);
    t = gguf_find_tensor(&g, "blk.1.ffn_down.weight");
    CHECK(t && t->ne[0] == FF && t->ne[1] == H);
    // Spot check of the permutation on raw values: GGUF attn_q row 1 is HF row 8.
    t = gguf_find_tensor(&g, "blk.0.attn_q.weight");
    REQUIRE(t);
    int qi = gen_index("model.layers.0.self_attn.q_proj.weight");
    CHECK(gval(t, 1, 0) == hval(qi, 8, 0) && gval(t, 2, 5) == hval(qi, 1, 5) && gval(t, 17, 0) == hval(qi, 24, 0));
    gguf_close(&g);
    gen_free();
}

TEST(hfdir_convert_mistral_sharded_tied) {
    mopts o = {
        .hf_arch = "MistralForCausalLM", .lm_head = 0, .sharded = 1, .rope = "{\"type\": \"linear\", \"factor\": 2.0}"};
    gguf_file g;
    REQUIRE(convert_model("mistral", &o, -1, NULL, &g) == 0);
    CHECK(str_is(&g, "general.architecture", "llama"));
    CHECK(str_is(&g, "llama.rope.scaling.type", "linear"));
    CHECK(get_f32(&g, "llama.rope.scaling.factor") == 2.0f);
    CHECK(gguf_find(&g, "llama.rope.scaling.low_freq_factor") == NULL);
    CHECK(gguf_find(&g, "ramole.hf_tokenizer_path") == NULL);
    CHECK(g.n_tensors == 20);
    CHECK(gguf_find_tensor(&g, "output.weight") == NULL);                                 // tied: lm_head absent
    CHECK_TENSOR(&g, "blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", 1); // shard 1
    CHECK_TENSOR(&g, "blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 1); // shard 2
    CHECK_TENSOR(&g, "output_norm.weight", "model.norm.weight", 0);
    gguf_close(&g);

    // tie_word_embeddings = true drops a present lm_head as well.
    o = (mopts){.hf_arch = "LlamaForCausalLM", .lm_head = 1, .tie = 1};
    REQUIRE(convert_model("tied", &o, -1, NULL, &g) == 0);
    CHECK(gguf_find_tensor(&g, "output.weight") == NULL && g.n_tensors == 20);
    gguf_close(&g);
    gen_free();
}

TEST(hfdir_convert_qwen2) {
    char dir[512], out[600];
    mopts o = {.hf_arch = "Qwen2ForCausalLM", .qwen_bias = 1, .lm_head = 1};
    gguf_file g;
    REQUIRE(convert_model("qwen2", &o, -1, NULL, &g) == 0);
    snprintf(out, sizeof out, "%s/qwen2.gguf", rm_test_tmpdir());
    CHECK(str_is(&g, "general.architecture", "qwen2"));
    CHECK(get_u32(&g, "qwen2.block_count") == NL);
    CHECK(get_u32(&g, "qwen2.attention.head_count_kv") == NKV);
    CHECK(g.n_tensors == 27);
    // No permutation for Qwen2; biases present, F32.
    CHECK_TENSOR(&g, "blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 0);
    CHECK_TENSOR(&g, "blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", 0);
    CHECK_TENSOR(&g, "blk.0.attn_q.bias", "model.layers.0.self_attn.q_proj.bias", 0);
    CHECK_TENSOR(&g, "blk.1.attn_k.bias", "model.layers.1.self_attn.k_proj.bias", 0);
    CHECK_TENSOR(&g, "blk.1.attn_v.bias", "model.layers.1.self_attn.v_proj.bias", 0);
    const gguf_tensor_info *t = gguf_find_tensor(&g, "blk.1.attn_k.bias");
    CHECK(t && t->type == RM_TYPE_F32 && t->n_dims == 1 && t->ne[0] == NKV * HD);
    gguf_close(&g);

    // A Qwen2 model without its biases is incomplete.
    o.qwen_bias = 0;
    REQUIRE(make_model("qwen2_nobias", &o, dir, sizeof dir) == 0);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_ENOTFOUND);
    CHECK(strstr(rm_last_error(), "model.layers.0.self_attn.q_proj.bias") != NULL);
    gen_free();
}

TEST(hfdir_convert_quantized) {
    char dir[512], out[600];
    mopts o = {.hf_arch = "LlamaForCausalLM", .lm_head = 1};
    gguf_file g;
    REQUIRE(convert_model("quant", &o, RM_TYPE_Q8_0, NULL, &g) == 0);
    snprintf(dir, sizeof dir, "%s/quant", rm_test_tmpdir());
    uint32_t ft;
    CHECK(gguf_get_u32(&g, "general.file_type", &ft) == RM_OK && ft == 7);
    const gguf_tensor_info *t = gguf_find_tensor(&g, "blk.0.attn_q.weight");
    REQUIRE(t && t->type == RM_TYPE_Q8_0);
    int qi = gen_index("model.layers.0.self_attn.q_proj.weight");
    float row[H];
    for (int r = 0; r < NH * HD; r++) {
        rm_dequantize_row(RM_TYPE_Q8_0, (const char *)t->data + (size_t)r * rm_row_size(RM_TYPE_Q8_0, H), row, H);
        int64_t sr = (r / HD) * HD + k_perm16[r % HD];
        for (int c = 0; c < H; c++) CHECK_NEAR(row[c], hval(qi, sr, c), 0.01 * fabs(hval(qi, sr, c)) + 1e-3);
    }
    t = gguf_find_tensor(&g, "blk.1.ffn_down.weight"); // rows of 96 = 3 blocks
    CHECK(t && t->type == RM_TYPE_Q8_0);
    t = gguf_find_tensor(&g, "blk.0.ffn_norm.weight");
    CHECK(t && t->type == RM_TYPE_F32);
    t = gguf_find_tensor(&g, "token_embd.weight");
    CHECK(t && t->type == RM_TYPE_Q8_0);
    gguf_close(&g);

    // Q4_K blocks are 256 wide: rows of 64 and 96 fall back to q5_0 (as
    // llama.cpp's quantizer does), which decodes close to the stored values.
    snprintf(out, sizeof out, "%s/q4k.gguf", rm_test_tmpdir());
    CHECK_OK(hfdir_convert_to_gguf(dir, out, RM_TYPE_Q4_K, NULL, NULL));
    REQUIRE(gguf_open(&g, out) == RM_OK);
    for (uint64_t i = 0; i < g.n_tensors; i++)
        CHECK(g.tensors[i].type == (g.tensors[i].n_dims == 2 ? RM_TYPE_Q5_0 : RM_TYPE_F32));
    t = gguf_find_tensor(&g, "blk.0.attn_q.weight");
    REQUIRE(t);
    for (int r = 0; r < NH * HD; r++) {
        rm_dequantize_row(RM_TYPE_Q5_0, (const char *)t->data + (size_t)r * rm_row_size(RM_TYPE_Q5_0, H), row, H);
        int64_t sr = (r / HD) * HD + k_perm16[r % HD];
        float amax = 0;
        for (int c = 0; c < H; c++) amax = fmaxf(amax, fabsf(hval(qi, sr, c)));
        for (int c = 0; c < H; c++) CHECK_NEAR(row[c], hval(qi, sr, c), amax / 16 * 0.51 + 1e-3 * amax); // half a step
    }
    gguf_close(&g);
    CHECK(hfdir_convert_to_gguf(dir, out, 77, NULL, NULL) == RM_EINVAL);
    // A mixture: the file type says so; output.weight, q6_K in it, falls
    // back to q8_0, the other matrices (q4_K) to q5_0 (2 layers: no layer's
    // attn_v / ffn_down is in q6_K).
    rm_ftype mix;
    CHECK_OK(rm_ftype_parse("Q4_K_M", &mix));
    CHECK_OK(hfdir_convert_to_gguf_ex(dir, out, &mix, NULL, NULL, NULL, NULL));
    REQUIRE(gguf_open(&g, out) == RM_OK);
    CHECK(gguf_get_u32(&g, "general.file_type", &ft) == RM_OK && ft == 15); // llama.cpp's MOSTLY_Q4_K_M
    int outputs = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) {
        const gguf_tensor_info *ti = &g.tensors[i];
        int is_out = ti->name.len == 13 && memcmp(ti->name.ptr, "output.weight", 13) == 0;
        outputs += is_out;
        CHECKF(ti->type == (ti->n_dims == 1 ? RM_TYPE_F32 : is_out ? RM_TYPE_Q8_0 : RM_TYPE_Q5_0), "%.*s: %s",
               (int)ti->name.len, ti->name.ptr, rm_type_name(ti->type));
    }
    CHECK(outputs == 1);
    gguf_close(&g);
    gen_free();
}

// The _M mixtures' per-tensor types, against the rule written out here: q6_K
// for the output matrix (the token embeddings when tied) and for attn_v /
// ffn_down in layers [0, n/8), [n - n/8, n) and every third layer from n/8
// on (n/8 + 2, n/8 + 5, ...); the base type everywhere else.
TEST(ftype_mixtures) {
    rm_ftype f;
    char name[64], buf[24];
    CHECK_OK(rm_ftype_parse("q4_k_m", &f));
    CHECK(f.type == RM_TYPE_Q4_K && f.k_m == 1 && strcmp(rm_ftype_name(f, buf, sizeof buf), "q4_K_M") == 0);
    CHECK_OK(rm_ftype_parse("Q5_K_M", &f));
    CHECK(f.type == RM_TYPE_Q5_K && f.k_m == 1 && rm_ftype_file_type_id(f) == 17);
    CHECK_OK(rm_ftype_parse("q6_k", &f));
    CHECK(f.type == RM_TYPE_Q6_K && f.k_m == 0 && rm_ftype_file_type_id(f) == 18);
    CHECK_OK(rm_ftype_parse("q3_k", &f));
    CHECK(f.type == RM_TYPE_Q3_K && f.k_m == 0 && rm_ftype_file_type_id(f) == 11); // llama.cpp's MOSTLY_Q3_K_S
    CHECK(rm_ftype_parse("q3_k_m", &f) == RM_EINVAL && strstr(rm_last_error(), "q3_k_m"));
    CHECK(rm_ftype_parse("q8_0_m", &f) == RM_EINVAL && rm_ftype_parse("_m", &f) == RM_EINVAL);
    CHECK(rm_ftype_parse("q4_k_mm", &f) == RM_EINVAL && rm_ftype_parse(NULL, &f) == RM_EINVAL);
    CHECK(rm_ftype_parse("a_very_long_type_name_m", &f) == RM_EINVAL);
    CHECK_OK(rm_ftype_parse("q4_k_m", &f));
    const int more22[] = {0, 1, 4, 7, 10, 13, 16, 19, 20, 21}; // n = 22: n/8 = 2
    for (int l = 0; l < 22; l++) {
        int more = 0;
        for (int k = 0; k < 10; k++) more |= more22[k] == l;
        const char *parts[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
        for (int p = 0; p < 7; p++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, parts[p]);
            int v_or_down = p == 2 || p == 6;
            CHECKF(rm_ftype_tensor_type(f, name, 22, 0) == (v_or_down && more ? RM_TYPE_Q6_K : RM_TYPE_Q4_K), "%s",
                   name);
        }
    }
    CHECK(rm_ftype_tensor_type(f, "output.weight", 22, 0) == RM_TYPE_Q6_K);
    CHECK(rm_ftype_tensor_type(f, "token_embd.weight", 22, 0) == RM_TYPE_Q4_K);
    CHECK(rm_ftype_tensor_type(f, "token_embd.weight", 22, 1) == RM_TYPE_Q6_K);
    CHECK(rm_ftype_tensor_type(f, "blk.x.attn_v.weight", 22, 0) == RM_TYPE_Q4_K);
    // fewer than 8 layers: n/8 = 0, every third layer from 0 on (2, 5)
    CHECK(rm_ftype_tensor_type(f, "blk.2.ffn_down.weight", 5, 0) == RM_TYPE_Q6_K);
    CHECK(rm_ftype_tensor_type(f, "blk.0.ffn_down.weight", 5, 0) == RM_TYPE_Q4_K);
    CHECK(rm_ftype_tensor_type((rm_ftype){RM_TYPE_Q8_0, 0}, "output.weight", 22, 0) == RM_TYPE_Q8_0);
    // rows that are not whole blocks: llama.cpp's fallbacks (Qwen2-0.5B's 896)
    CHECK(rm_ftype_row_type(RM_TYPE_Q4_K, 2048) == RM_TYPE_Q4_K && rm_ftype_row_type(RM_TYPE_Q4_K, 896) == RM_TYPE_Q5_0);
    CHECK(rm_ftype_row_type(RM_TYPE_Q5_K, 896) == RM_TYPE_Q5_1 && rm_ftype_row_type(RM_TYPE_Q6_K, 896) == RM_TYPE_Q8_0);
    CHECK(rm_ftype_row_type(RM_TYPE_Q4_K, 100) == RM_TYPE_F16 && rm_ftype_row_type(RM_TYPE_Q8_0, 100) == RM_TYPE_F16);
    CHECK(rm_ftype_row_type(RM_TYPE_BF16, 7) == RM_TYPE_BF16);
    CHECK(rm_ftype_row_type(RM_TYPE_Q3_K, 896) == RM_TYPE_Q4_0 && rm_ftype_row_type(RM_TYPE_Q3_K, 512) == RM_TYPE_Q3_K);
}

TEST(hfdir_errors) {
    char dir[512], out[600], path[700];
    snprintf(out, sizeof out, "%s/err.gguf", rm_test_tmpdir());
    // No config.json.
    snprintf(dir, sizeof dir, "%s/empty_model", rm_test_tmpdir());
    REQUIRE(rm_mkdirs(dir) == RM_OK);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_ENOTFOUND);
    CHECK(strstr(rm_last_error(), "config.json") != NULL);
    // Unknown architecture, named.
    mopts o = {.hf_arch = "GPT2LMHeadModel", .lm_head = 1};
    REQUIRE(make_model("gpt2", &o, dir, sizeof dir) == 0);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_EUNSUPPORTED);
    CHECK(strstr(rm_last_error(), "GPT2LMHeadModel") != NULL);
    // A missing tensor, named.
    o = (mopts){.hf_arch = "LlamaForCausalLM", .lm_head = 1, .skip = "model.layers.1.mlp.up_proj.weight"};
    REQUIRE(make_model("missing", &o, dir, sizeof dir) == 0);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_ENOTFOUND);
    CHECK(strstr(rm_last_error(), "model.layers.1.mlp.up_proj.weight") != NULL);
    // A shape that disagrees with config.json: name, expected and got.
    o = (mopts){.hf_arch = "LlamaForCausalLM", .lm_head = 1, .bad_shape = "model.layers.0.self_attn.k_proj.weight"};
    REQUIRE(make_model("badshape", &o, dir, sizeof dir) == 0);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_EMISMATCH);
    CHECK(strstr(rm_last_error(), "model.layers.0.self_attn.k_proj.weight") != NULL);
    CHECK(strstr(rm_last_error(), "[33, 64]") != NULL && strstr(rm_last_error(), "[32, 64]") != NULL);
    // A shard listed in the index but missing.
    o = (mopts){.hf_arch = "LlamaForCausalLM", .lm_head = 1, .sharded = 1};
    REQUIRE(make_model("noshard", &o, dir, sizeof dir) == 0);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    REQUIRE(unlink(path) == 0);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_ENOTFOUND);
    CHECK(strstr(rm_last_error(), "model-00002-of-00002.safetensors") != NULL);
    // A hostile shard name.
    REQUIRE(write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"../../etc/passwd\"}}") == 0);
    CHECK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == RM_EFORMAT);
    // Bad hyperparameters: each config.json fails with its status, naming the field.
    static const struct {
        const char *extra;
        int rc;
        const char *msg;
    } bad[] = {
        {"\"intermediate_size\": 96, \"num_key_value_heads\": 3", RM_EFORMAT, "num_key_value_heads"},
        {"\"num_key_value_heads\": 2", RM_EFORMAT, "intermediate_size"},
        {"\"intermediate_size\": 96, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4}", RM_EUNSUPPORTED, "yarn"},
        {"\"intermediate_size\": -96", RM_EFORMAT, "intermediate_size"},
        {"\"intermediate_size\": 96, \"head_dim\": 15", RM_EFORMAT, "odd"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char cfg[512];
        snprintf(cfg, sizeof cfg,
                 "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                 "\"num_attention_heads\": 4, \"vocab_size\": 10, %s}",
                 bad[i].extra);
        REQUIRE(write_text(dir, "config.json", cfg) == 0);
        CHECKF(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL) == bad[i].rc, "case %zu", i);
        CHECKF(strstr(rm_last_error(), bad[i].msg) != NULL, "case %zu: %s", i, rm_last_error());
    }
    // Nothing was written by any of the failures.
    CHECK(!rm_file_exists(out));
    gen_free();
}

TEST(hfdir_read_config_defaults) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/cfg_defaults", rm_test_tmpdir());
    REQUIRE(rm_mkdirs(dir) == RM_OK);
    REQUIRE(write_text(dir, "config.json",
                       "{\"model_type\": \"mistral\", \"hidden_size\": 4096, "
                       "\"intermediate_size\": 14336, \"num_hidden_layers\": 32, "
                       "\"num_attention_heads\": 32, \"vocab_size\": 32000, "
                       "\"head_dim\": null}") == 0);
    hf_config c;
    CHECK_OK(hfdir_read_config(dir, &c));
    CHECK(strcmp(c.arch, "llama") == 0 && strcmp(c.hf_arch, "MistralForCausalLM") == 0);
    CHECK(c.n_kv_heads == 32 && c.head_dim == 128 && !c.head_dim_explicit);
    CHECK(c.rope_theta == 10000.0 && c.rms_eps == 1e-6 && c.max_pos == 2048 && !c.tie_embeddings);
    CHECK(strcmp(c.name, "cfg_defaults") == 0 && c.rope_scaling[0] == 0);
    // An explicit head_dim that differs from hidden / heads.
    REQUIRE(write_text(dir, "config.json",
                       "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 64, "
                       "\"intermediate_size\": 96, \"num_hidden_layers\": 2, "
                       "\"num_attention_heads\": 4, \"vocab_size\": 10, \"head_dim\": 32}") == 0);
    CHECK_OK(hfdir_read_config(dir, &c));
    CHECK(c.head_dim == 32 && c.head_dim_explicit && strcmp(c.arch, "qwen2") == 0);
}

// Runs `ramole info ARGS` and returns its exit status; stdout into out.
static int run_info(const char *args, char *out, size_t cap) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s info %s 2>/dev/null", rm_test_bin(), args);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(hfdir_cli_info) {
    if (access(rm_test_bin(), X_OK) != 0) SKIP("no ramole binary");
    mopts o = {.hf_arch = "Qwen2ForCausalLM", .qwen_bias = 1, .lm_head = 1};
    gguf_file g;
    REQUIRE(convert_model("info_model", &o, RM_TYPE_Q8_0, NULL, &g) == 0);
    gguf_close(&g);
    static char out[1 << 16];
    char args[1024], dir[512];
    snprintf(dir, sizeof dir, "%s/info_model", rm_test_tmpdir());
    snprintf(args, sizeof args, "--tensors %s/info_model.gguf", rm_test_tmpdir());
    CHECK(run_info(args, out, sizeof out) == 0);
    CHECK(strstr(out, "architecture:  qwen2") != NULL);
    CHECK(strstr(out, "block_count") != NULL);
    CHECK(strstr(out, "q8_0") != NULL && strstr(out, "tensors:       27") != NULL);
    CHECK(strstr(out, "blk.1.attn_k.bias") != NULL && strstr(out, "[64, 32]") != NULL);
    snprintf(args, sizeof args, "%s/model.safetensors", dir);
    CHECK(run_info(args, out, sizeof out) == 0);
    CHECK(strstr(out, "model.layers.0.self_attn.q_proj.weight") != NULL && strstr(out, "BF16") != NULL);
    CHECK(run_info(dir, out, sizeof out) == 0);
    CHECK(strstr(out, "Qwen2ForCausalLM") != NULL && strstr(out, "num_key_value_heads") != NULL);
    // A corrupt file: exit status 1.
    char bad[600];
    snprintf(bad, sizeof bad, "%s/corrupt.gguf", rm_test_tmpdir());
    REQUIRE(rm_write_file_atomic(bad, "GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\x7f", 16) == RM_OK);
    CHECK(run_info(bad, out, sizeof out) == 1);
    snprintf(bad, sizeof bad, "%s/corrupt.safetensors", rm_test_tmpdir());
    REQUIRE(rm_write_file_atomic(bad, "\x10\0\0\0\0\0\0\0{", 9) == RM_OK);
    CHECK(run_info(bad, out, sizeof out) == 1);
    CHECK(run_info("--help", out, sizeof out) == 0);
    gen_free();
}
