// test_regress.c — every input under tests/regress/<target>/ (fuzzing and
// probe findings) replayed through the fuzz targets (fuzz/targets.c), so the
// sanitizer build keeps them fixed; and the findings' behaviour asserted.
#include "testing.h"
#include "targets.h"
#include "base/err.h"
#include "base/file.h"
#include "format/gguf.h"
#include "format/llama2c.h"
#include "model/tokenizer.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

TEST(regress_inputs_replay) {
    int files = 0;
    for (const rm_fuzz_target *t = rm_fuzz_targets; t->name; t++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/regress/%s", t->name);
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            char *buf = NULL;
            size_t len = 0;
            REQUIRE(rm_read_file(path, &buf, &len) == RM_OK);
            t->run((const uint8_t *)buf, len); // must not crash, leak or hit UB
            rm_clear_error();
            free(buf);
            files++;
        }
        closedir(d);
    }
    rm_fuzz_cleanup();
    CHECKF(files >= 4, "only %d regression inputs found (run from the repository root)", files);
}

// Every target accepts the empty input and short junk without harm.
TEST(regress_targets_empty_and_junk) {
    static const uint8_t junk[] = {0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    for (const rm_fuzz_target *t = rm_fuzz_targets; t->name; t++) {
        t->run(junk, 0);
        t->run(junk, sizeof junk);
        rm_clear_error();
    }
    rm_fuzz_cleanup();
}

// A 28-byte llama2.c header with vocab size -2^31: refused (it was negated,
// undefined behaviour), naming the field and echoing none of the bytes.
TEST(regress_llama2c_vocab_int_min) {
    char out[512];
    snprintf(out, sizeof out, "%s/x.gguf", rm_test_tmpdir());
    int rc = llama2c_convert("tests/regress/llama2c/vocab-int-min.bin", out);
    CHECK(rc == RM_EFORMAT);
    CHECKF(strstr(rm_last_error(), "vocab_size") && !strstr(rm_last_error(), "2147483648"), "message: %s",
           rm_last_error());
}

// The falcon vocabulary has no token for byte 0xFF: the text is refused with
// the byte named instead of the byte being dropped ("a\xffb" gave 2 ids).
TEST(regress_falcon_unspellable_byte) {
    const char *shared = rm_test_shared();
    char path[512];
    snprintf(path, sizeof path, "%s/data/tokenizers/ggml-vocab-falcon.gguf", shared ? shared : ".");
    if (!shared || !rm_file_exists(path)) SKIP("no ../shared/data/tokenizers");
    gguf_file g;
    rm_tokenizer *t = NULL;
    REQUIRE(gguf_open(&g, path) == RM_OK);
    if (rm_tokenizer_from_gguf(&t, &g) != RM_OK) {
        gguf_close(&g);
        REQUIRE(0);
    }
    int32_t ids[16];
    for (int pass = 0; pass < 2; pass++) { // the second pass goes through the word cache
        int n = rm_tokenize(t, "a\xff" "b", 3, 0, 0, ids, 16);
        CHECKF(n < 0 && strstr(rm_last_error(), "0xff"), "pass %d: %d ids, %s", pass, n, rm_last_error());
        n = rm_tokenize(t, "\xff", 1, 0, 0, ids, 16);
        CHECK(n < 0);
    }
    CHECK(rm_tokenize(t, "ab", 2, 0, 0, ids, 16) > 0);
    rm_tokenizer_free(t);
    gguf_close(&g);
}
