// test_api.c — the public API (include/ramole.h) end to end: load, info,
// greedy generation from ids against the llama2.c reference, error paths.
#include "testing.h"
#include "ramole.h"
#include "base/file.h"
#include "format/llama2c.h"

#include <stdlib.h>
#include <string.h>

typedef struct collected { int32_t ids[300]; int n; } collected;

static int collect(void *ctx, const char *piece, int len, int32_t id) {
    (void)piece;
    (void)len;
    collected *c = ctx;
    if (id >= 0 && c->n < 300) c->ids[c->n++] = id;
    return 0;
}

TEST(api_generate_ids_matches_reference) {
    const char *sh = rm_test_shared();
    if (!sh) SKIP("../shared absent: no stories260K reference");
    char bin[512], gguf[512], ids_path[512];
    snprintf(bin, sizeof bin, "%s/data/stories260K/stories260K.bin", sh);
    snprintf(ids_path, sizeof ids_path, "%s/data/stories260K/greedy_from_bos.ids", sh);
    snprintf(gguf, sizeof gguf, "%s/api-stories.gguf", rm_test_tmpdir());
    REQUIRE(llama2c_convert(bin, gguf) == RM_OK);
    rm_model_params mp = rm_model_default_params();
    mp.n_threads = 2;
    mp.n_ctx = 300;
    rm_model *m = NULL;
    CHECK_OK(rm_model_load(gguf, &mp, &m));
    REQUIRE(m);
    rm_model_info info;
    rm_model_get_info(m, &info);
    CHECK(!strcmp(info.arch, "llama") && info.n_vocab == 512 && info.n_layer == 5 && info.n_head_kv == 4);
    CHECK(info.has_tokenizer == 0);
    rm_generate_params gp = rm_generate_default_params();
    gp.temperature = 0;
    gp.n_predict = 256;
    collected c = {{0}, 0};
    int32_t bos = 1;
    rm_generate_stats st;
    CHECK_OK(rm_model_generate_ids(m, &bos, 1, &gp, collect, &c, &st));
    CHECK(c.n == 256 && st.n_generated == 256 && st.n_prompt == 1);
    char *text;
    size_t len;
    REQUIRE(rm_read_file(ids_path, &text, &len) == RM_OK);
    char *p = text;
    int bad = 0;
    for (int i = 0; i < 256; i++) bad += (int32_t)strtol(p, &p, 10) != c.ids[i];
    CHECKF(bad == 0, "%d of 256 ids differ from the reference", bad);
    free(text);
    // errors: text prompt without a tokenizer, out-of-vocabulary id, context overflow
    CHECK(rm_model_generate(m, "hello", &gp, NULL, NULL, NULL) == RM_EUNSUPPORTED);
    int32_t bad_id = 512;
    CHECK(rm_model_generate_ids(m, &bad_id, 1, &gp, NULL, NULL, NULL) == RM_EINVAL);
    CHECK(strstr(rm_last_error(), "vocabulary") != NULL);
    gp.n_predict = 400;
    CHECK(rm_model_generate_ids(m, &bos, 1, &gp, NULL, NULL, NULL) == RM_EFULL);
    rm_model_free(m);
    CHECK(rm_model_load("/nonexistent.gguf", &mp, &m) == RM_EIO && m == NULL);
    CHECK(strstr(rm_last_error(), "/nonexistent.gguf") != NULL);
}
