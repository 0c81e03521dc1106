// cmd_convert.c — `ramole convert`: other model formats to GGUF.
#include "cli.h"
#include "base/err.h"
#include "base/progress.h"
#include "format/hfdir.h"
#include "format/llama2c.h"
#include "model/tokenizer.h"
#include "tensor/tensor.h"

#include <string.h>

static void on_progress(void *ctx, int done, int total) {
    rm_progress *p = ctx;
    p->total = total;
    rm_progress_update(p, done, done == total);
}

static int cmd_convert(int argc, char **argv) {
    const char *from = NULL, *type = NULL, *in = NULL, *out = NULL, *tok = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            printf("usage: ramole convert --from llama2c IN.bin OUT.gguf [--tokenizer tokenizer.bin]\n"
                   "       ramole convert --from hf DIR OUT.gguf [--type "
                   "f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q3_k|q4_k|q5_k|q6_k|q4_k_m|q5_k_m]\n\n"
                   "  --type T           the matrices' type, or q4_k_m / q5_k_m: mixed as llama.cpp's Q4_K_M /\n"
                   "                     Q5_K_M files (q6_K for the output and part of attn_v / ffn_down)\n"
                   "  --tokenizer FILE   llama2.c's tokenizer file for the checkpoint (tokenizer.bin, or\n"
                   "                     tok512.bin for stories260K): embedded, so that -p TEXT works\n");
            return 0;
        } else if (cli_str(argc, argv, &i, "--from", NULL, &from)) {
        } else if (cli_str(argc, argv, &i, "--type", NULL, &type)) {
        } else if (cli_str(argc, argv, &i, "--tokenizer", NULL, &tok)) {
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "ramole convert: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            fprintf(stderr, "ramole convert: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!from || !in || !out) {
        fprintf(stderr, "ramole convert: need --from FORMAT IN OUT (see --help)\n");
        return 2;
    }
    if (!strcmp(from, "llama2c")) {
        if (type) {
            fprintf(stderr, "ramole convert: --type is not supported with --from llama2c\n");
            return 2;
        }
        if (llama2c_convert_tok(in, tok, out)) return cli_fail("convert");
    } else if (!strcmp(from, "hf")) {
        if (tok) {
            fprintf(stderr, "ramole convert: --tokenizer goes with --from llama2c (a Hugging Face dir has its own)\n");
            return 2;
        }
        rm_ftype ft;
        if (type && rm_ftype_parse(type, &ft)) return cli_fail("--type");
        rm_progress p;
        rm_progress_start(&p, "convert", "tensors", 0);
        if (hfdir_convert_to_gguf_ex(in, out, type ? &ft : NULL, on_progress, &p, rm_tokenizer_hfdir_meta, (void *)in)) {
            if (p.enabled) fputc('\n', stderr);
            return cli_fail("convert");
        }
        rm_progress_finish(&p, p.total);
    } else {
        fprintf(stderr, "ramole convert: unknown source format '%s' (llama2c, hf)\n", from);
        return 2;
    }
    fprintf(stderr, "wrote %s\n", out);
    return 0;
}

RM_COMMAND(convert, "convert llama2.c checkpoints or Hugging Face model dirs to GGUF", cmd_convert)
