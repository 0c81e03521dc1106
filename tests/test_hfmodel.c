// test_hfmodel.c — Hugging Face model directories end to end against the
// llama2.c reference: stories260K's weights are rewritten in HF layout (Q/K
// rows in HF's RoPE order) as a LlamaForCausalLM and as a Qwen2ForCausalLM
// (zero biases; Qwen2 keeps HF order and rotates pairs (i, i+d/2)). Both
// directories must reproduce the reference greedy ids and logits, which
// checks the Q/K permutation and the NeoX RoPE pairing independently.
#include "testing.h"
#include "base/err.h"
#include "base/file.h"
#include "format/gguf.h"
#include "format/hfdir.h"
#include "format/llama2c.h"
#include "format/safetensors.h"
#include "model/llama.h"
#include "model/sampler.h"

#include <stdlib.h>
#include <string.h>

typedef struct hf_build {
    gguf_file g;
    st_writer *w;
    float *bufs[128];
    int n_bufs;
} hf_build;

static float *keep(hf_build *b, size_t n) {
    float *p = calloc(n, sizeof(float));
    b->bufs[b->n_bufs++] = p;
    return p;
}

// Adds GGUF tensor `src` as HF tensor `dst`, Q/K rows reordered to HF's when qk_heads > 0.
static void add(hf_build *b, const char *src, const char *dst, int head_dim, int qk) {
    const gguf_tensor_info *ti = gguf_find_tensor(&b->g, src);
    if (!ti) {
        rm_test_fail(__FILE__, __LINE__, "missing %s", src);
        return;
    }
    int64_t cols = ti->ne[0], rows = ti->n_dims > 1 ? ti->ne[1] : 1;
    const float *in = ti->data;
    float *out = keep(b, (size_t)(cols * rows));
    for (int64_t r = 0; r < rows; r++) {
        int64_t hf_row = qk ? (r / head_dim) * head_dim + hfdir_qk_src_row(r % head_dim, head_dim) : r;
        memcpy(out + hf_row * cols, in + r * cols, (size_t)cols * sizeof(float));
    }
    int64_t shape[2] = {rows, cols};
    if (ti->n_dims == 1) shape[0] = cols;
    CHECK_OK(st_writer_add(b->w, dst, ST_F32, ti->n_dims, shape, out));
}

static void add_zero_bias(hf_build *b, const char *dst, int64_t n) {
    int64_t shape[1] = {n};
    CHECK_OK(st_writer_add(b->w, dst, ST_F32, 1, shape, keep(b, (size_t)n)));
}

static int build_hf_dir(const char *gguf_path, const char *dir, int qwen2) {
    hf_build b = {0};
    if (gguf_open(&b.g, gguf_path) != RM_OK) return 0;
    rm_mkdirs(dir);
    b.w = st_writer_new();
    const int hd = 8;
    char s[1024], d[160];
    add(&b, "token_embd.weight", "model.embed_tokens.weight", hd, 0);
    add(&b, "output_norm.weight", "model.norm.weight", hd, 0);
    const char *gg[9] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                         "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
    const char *hf[9] = {"input_layernorm",  "self_attn.q_proj", "self_attn.k_proj",
                         "self_attn.v_proj", "self_attn.o_proj", "post_attention_layernorm",
                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    for (int l = 0; l < 5; l++) {
        for (int i = 0; i < 9; i++) {
            snprintf(s, sizeof s, "blk.%d.%s.weight", l, gg[i]);
            snprintf(d, sizeof d, "model.layers.%d.%s.weight", l, hf[i]);
            add(&b, s, d, hd, i == 1 || i == 2);
        }
        if (qwen2) {
            const int64_t bias_n[3] = {64, 32, 32};
            for (int i = 0; i < 3; i++) {
                snprintf(d, sizeof d, "model.layers.%d.%s.bias", l, hf[1 + i]);
                add_zero_bias(&b, d, bias_n[i]);
            }
        }
    }
    snprintf(s, sizeof s, "%s/model.safetensors", dir);
    int ok = st_write(b.w, s) == RM_OK;
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"%s\"], \"hidden_size\": 64, \"intermediate_size\": 172, "
             "\"num_hidden_layers\": 5, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"vocab_size\": 512, "
             "\"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, "
             "\"tie_word_embeddings\": true, \"torch_dtype\": \"float32\"}",
             qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM");
    snprintf(s, sizeof s, "%s/config.json", dir);
    ok = ok && rm_write_file_atomic(s, cfg, strlen(cfg)) == RM_OK;
    st_writer_free(b.w);
    for (int i = 0; i < b.n_bufs; i++) free(b.bufs[i]);
    gguf_close(&b.g);
    return ok;
}

static void check_against_reference(const char *model_path, const char *sh) {
    rm_llama *m;
    CHECK_OK(rm_llama_load(&m, model_path));
    if (!m) return;
    char p[512];
    snprintf(p, sizeof p, "%s/data/stories260K/greedy_from_bos.ids", sh);
    char *ids_text, *logits;
    size_t len, llen;
    REQUIRE(rm_read_file(p, &ids_text, &len) == RM_OK);
    snprintf(p, sizeof p, "%s/data/stories260K/greedy_from_bos.logits16.f32", sh);
    REQUIRE(rm_read_file(p, &logits, &llen) == RM_OK);
    rm_kvcache kv;
    CHECK_OK(rm_kvcache_init(&kv, m->hp.n_layer, 1, 256, m->hp.n_head_kv * m->hp.head_dim));
    float out[512], worst = 0;
    int32_t tok = 1, pos = 0, slot = 0, bad = 0;
    char *cur = ids_text;
    for (int step = 0; step < 256; step++) {
        rm_batch b = {1, &tok, &pos, &slot, NULL, NULL};
        CHECK_OK(rm_llama_forward(m, &kv, NULL, &b, NULL, out));
        int32_t want = (int32_t)strtol(cur, &cur, 10);
        bad += rm_argmax(out, 512) != want;
        if (step < 16)
            for (int i = 0; i < 512; i++) {
                float d = out[i] - ((float *)logits)[step * 512 + i];
                if (d < 0) d = -d;
                if (d > worst) worst = d;
            }
        tok = want;
        pos++;
    }
    CHECKF(bad == 0, "%s: %d of 256 greedy ids differ from the reference", model_path, bad);
    CHECKF(worst <= 1e-4f, "%s: logits differ from the reference by %g", model_path, worst);
    rm_kvcache_free(&kv);
    free(ids_text);
    free(logits);
    rm_llama_free(m);
}

TEST(hfmodel_llama_and_qwen2_dirs_match_reference) {
    const char *sh = rm_test_shared();
    if (!sh) SKIP("../shared absent: no stories260K reference");
    char bin[512], gguf[512], dir[512], out[512];
    snprintf(bin, sizeof bin, "%s/data/stories260K/stories260K.bin", sh);
    snprintf(gguf, sizeof gguf, "%s/hf-src.gguf", rm_test_tmpdir());
    REQUIRE(llama2c_convert(bin, gguf) == RM_OK);
    for (int qwen2 = 0; qwen2 <= 1; qwen2++) {
        snprintf(dir, sizeof dir, "%s/hf-%s", rm_test_tmpdir(), qwen2 ? "qwen2" : "llama");
        REQUIRE(build_hf_dir(gguf, dir, qwen2));
        check_against_reference(dir, sh); // loaded straight from the directory
        snprintf(out, sizeof out, "%s/hf-%s.gguf", rm_test_tmpdir(), qwen2 ? "qwen2" : "llama");
        CHECK_OK(hfdir_convert_to_gguf(dir, out, -1, NULL, NULL));
        check_against_reference(out, sh);
    }
}
