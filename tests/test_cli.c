// test_cli.c — the `ramole` command line: every refusal says why, commands
// that only read a pool never create one, --version, and a llama2.c model
// converted with its tokenizer takes text.
#include "testing.h"
#include "ramole.h"
#include "base/file.h"
#include "model/synth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// `ramole ARGS` exits with status 2 and says why on stderr.
static void check_refused(const char *args, const char *why) {
    int rc = rm_test_cli(args);
    CHECKF(rc == 2 && strstr(rm_test_cli_err(), why), "ramole %s: exit %d, stderr '%s' (want '%s')", args, rc,
           rm_test_cli_err(), why);
}

TEST(cli_refusals_say_why) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char model[512], args[2048];
    snprintf(model, sizeof model, "%s/tiny.gguf", rm_test_tmpdir());
    REQUIRE(rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 7, model, NULL, NULL) == RM_OK);
    check_refused("retrieve -p text", "--pool DIR is required");
    check_refused("retrieve --pool /nonexistent -p text -k 0", "-k must be 1..");
    snprintf(args, sizeof args, "generate -m %s -p hi --lora %s:abc", model, model);
    check_refused(args, "bad weight 'abc'");
    snprintf(args, sizeof args, "generate -m %s -p hi --temp -1", model);
    check_refused(args, "--temp must be >= 0");
    snprintf(args, sizeof args, "generate -m %s -p hi --top-p 1.5", model);
    check_refused(args, "--top-p must be in [0, 1]");
    snprintf(args, sizeof args, "generate -m %s -p hi --compose router", model);
    check_refused(args, "--compose router needs --router FILE");
    snprintf(args, sizeof args, "generate -m %s -p hi --lora %s --pool %s", model, model, rm_test_tmpdir());
    check_refused(args, "give --pool or --lora, not both");
    snprintf(args, sizeof args, "generate -m %s -p hi --pool %s --retrieve 0", model, rm_test_tmpdir());
    check_refused(args, "--retrieve must be 1..16");
    snprintf(args, sizeof args, "generate -m %s -p hi --kv-type q8", model);
    check_refused(args, "--kv-type wants f32 or f16, got 'q8'");
    snprintf(args, sizeof args, "serve -m %s --kv-type f64", model);
    check_refused(args, "--kv-type wants f32 or f16, got 'f64'");
    check_refused("convert --from hf in out --tokenizer tok.bin", "--tokenizer goes with --from llama2c");
    check_refused("pool frobnicate --pool x", "unknown command 'frobnicate'");
    setenv("RAMOLE_ISA", "bogus", 1);
    check_refused("help", "RAMOLE_ISA=bogus is not a kernel family (auto, scalar, avx2, avx512, avx512bf16)");
    unsetenv("RAMOLE_ISA");
    // the f16 cache generates
    snprintf(args, sizeof args, "generate -m %s --prompt-ids '5 6 7' -n 4 --temp 0 --ids --kv-type f16", model);
    CHECKF(rm_test_cli(args) == 0 && strlen(rm_test_cli_out()) > 4, "generate --kv-type f16: %s", rm_test_cli_err());
    // a weight that is a number is no refusal (the adapter is then loaded: here it is no adapter)
    snprintf(args, sizeof args, "generate -m %s -p hi --lora %s:0.5", model, model);
    CHECK(rm_test_cli(args) == 1 && !strstr(rm_test_cli_err(), "bad weight"));
}

// Commands that only read a pool refuse a path holding none, and leave it absent.
TEST(cli_read_only_commands_never_create_a_pool) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char dir[512], args[4096], model[512], want[2048];
    snprintf(dir, sizeof dir, "%s/mistyped-pool", rm_test_tmpdir());
    snprintf(want, sizeof want, "no pool at %s (create one with `ramole pool init --pool %s --corpus FILE`)", dir, dir);
    snprintf(args, sizeof args, "retrieve --pool %s -p 'some text'", dir);
    check_refused(args, want);
    const char *subs[4] = {"list", "show --name x", "check", "remove --name x"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "pool %s --pool %s", subs[i], dir);
        check_refused(args, want);
    }
    snprintf(model, sizeof model, "%s/tiny.gguf", rm_test_tmpdir());
    REQUIRE(rm_synth_write(rm_synth_find("tiny"), RM_TYPE_F32, 7, model, NULL, NULL) == RM_OK);
    snprintf(args, sizeof args, "generate -m %s -p hi --pool %s", model, dir);
    check_refused(args, want);
    CHECK(!rm_file_exists(dir));
}

TEST(cli_version) {
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    char want[64];
    snprintf(want, sizeof want, "ramole %s\n", rm_version());
    CHECK(rm_test_cli("--version") == 0 && !strcmp(rm_test_cli_out(), want));
}

// Appends one token of llama2.c's tokenizer file: score, length, bytes.
static void put_token(FILE *f, float score, const char *text) {
    int32_t len = (int32_t)strlen(text);
    fwrite(&score, 4, 1, f);
    fwrite(&len, 4, 1, f);
    fwrite(text, 1, (size_t)len, f);
}

// stories260K converted with a tokenizer file of its 512 tokens (llama2.c's
// layout: <unk>, BOS, EOS, the 256 bytes, then pieces with a space for
// SentencePiece's word mark) takes -p TEXT; the text comes back detokenized.
TEST(cli_convert_llama2c_with_tokenizer) {
    const char *sh = rm_test_shared();
    if (!sh) SKIP("../shared absent: no stories260K");
    if (!rm_file_exists(rm_test_bin())) SKIP("no ramole binary");
    const char *tmp = rm_test_tmpdir();
    char tok[512], gguf[512], args[2048];
    snprintf(tok, sizeof tok, "%s/tok512.bin", tmp);
    snprintf(gguf, sizeof gguf, "%s/stories.gguf", tmp);
    FILE *f = fopen(tok, "wb");
    REQUIRE(f);
    int32_t max_len = 8;
    fwrite(&max_len, 4, 1, f);
    put_token(f, 0, "<unk>");
    put_token(f, 0, "\n<s>\n");
    put_token(f, 0, "\n</s>\n");
    for (int b = 0; b < 256; b++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        put_token(f, 0, hex);
    }
    // merged pairwise by the score of the merge: "a"+"b" (-1) before " "+"a" (-2), then " "+"ab" (0)
    const char *pieces[] = {" ab", "ab", " a", "a", "b", " "};
    int n_pieces = (int)(sizeof pieces / sizeof pieces[0]);
    for (int i = 0; i < 512 - 259; i++) {
        char filler[16];
        snprintf(filler, sizeof filler, "zq%d", i);
        put_token(f, i < n_pieces ? -(float)i : -1000.0f - (float)i, i < n_pieces ? pieces[i] : filler);
    }
    fclose(f);
    char bin[512];
    snprintf(bin, sizeof bin, "%s/data/stories260K/stories260K.bin", sh);
    snprintf(args, sizeof args, "convert --from llama2c %s %s --tokenizer %s", bin, gguf, tok);
    REQUIRE(rm_test_cli(args) == 0);
    snprintf(args, sizeof args, "tokenize -m %s -p 'ab ab' --ids", gguf);
    CHECK(rm_test_cli(args) == 0);
    CHECKF(!strcmp(rm_test_cli_out(), "259 259\n"), "ids '%s'", rm_test_cli_out());
    snprintf(args, sizeof args, "generate -m %s -p 'ab ab' -n 8 --temp 0", gguf);
    CHECK(rm_test_cli(args) == 0 && !strncmp(rm_test_cli_out(), "ab ab", 5));
    // a tokenizer of another vocabulary size is refused
    f = fopen(tok, "ab");
    REQUIRE(f);
    put_token(f, 0, "extra");
    fclose(f);
    snprintf(args, sizeof args, "convert --from llama2c %s %s/other.gguf --tokenizer %s", bin, tmp, tok);
    CHECK(rm_test_cli(args) == 1 && strstr(rm_test_cli_err(), "another vocabulary"));
}

// libramole.so beside the ramole binary under test exports the rm_ functions
// of include/ramole.h and nothing else.
TEST(cli_library_exports_only_the_api) {
    char so[1024], cmd[1200];
    snprintf(so, sizeof so, "%s", rm_test_bin());
    char *slash = strrchr(so, '/');
    snprintf(slash ? slash + 1 : so, sizeof so - (size_t)(slash ? slash + 1 - so : 0), "libramole.so");
    if (!rm_file_exists(so)) SKIP("no libramole.so beside the ramole binary (the sanitized build has none)");
    if (system("command -v nm >/dev/null 2>&1") != 0) SKIP("no nm");
    snprintf(cmd, sizeof cmd, "nm -D --defined-only '%s'", so);
    FILE *p = popen(cmd, "r");
    REQUIRE(p);
    char line[512];
    int n = 0, other = 0, has_load = 0;
    while (fgets(line, sizeof line, p)) {
        char addr[64], type[8], name[256];
        if (sscanf(line, "%63s %7s %255s", addr, type, name) != 3) continue;
        n++;
        if (strncmp(name, "rm_", 3) != 0) {
            if (other++ < 5) rm_test_fail(__FILE__, __LINE__, "libramole.so exports %s", name);
        }
        has_load |= !strcmp(name, "rm_model_load");
    }
    CHECK(pclose(p) == 0);
    CHECKF(n > 0 && other == 0 && has_load, "%d exported, %d without the rm_ prefix", n, other);
    CHECKF(n < 40, "%d symbols exported: internal rm_ functions too?", n);
}
