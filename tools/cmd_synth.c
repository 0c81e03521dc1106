// cmd_synth.c — `ramole synth`: random-weight models of real shapes.
#include "cli.h"
#include "base/err.h"
#include "base/progress.h"
#include "model/synth.h"

#include <stdlib.h>
#include <string.h>

static void on_progress(void *ctx, long done, long total) {
    (void)total;
    rm_progress_update(ctx, done, 0);
}

static int cmd_synth(int argc, char **argv) {
    const char *shape = "tiny", *type = "q8_0", *out = NULL;
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            printf("usage: ramole synth [--shape %s]\n"
                   "                    [--type "
                   "f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q3_k|q4_k|q5_k|q6_k|q4_k_m|q5_k_m] [--seed S] OUT.gguf\n\n"
                   "Writes a model of a real model's shape with random weights and a byte-level tokenizer,\n"
                   "for benchmarks and tests (its text is gibberish). q4_k_m / q5_k_m mix types as llama.cpp's\n"
                   "Q4_K_M / Q5_K_M files do: q6_K for the output (tied) embeddings and for attn_v and ffn_down\n"
                   "in the first and last eighth of the layers and every third layer between.\n",
                   rm_synth_names());
            return 0;
        } else if (cli_str(argc, argv, &i, "--shape", NULL, &shape)) {
        } else if (cli_str(argc, argv, &i, "--type", NULL, &type)) {
        } else if (cli_int(argc, argv, &i, "--seed", NULL, &seed)) {
        } else if (argv[i][0] == '-' || out) {
            fprintf(stderr, "ramole synth: unexpected argument '%s'\n", argv[i]);
            return 2;
        } else {
            out = argv[i];
        }
    }
    if (!out) {
        fprintf(stderr, "ramole synth: OUT.gguf is required\n");
        return 2;
    }
    const rm_synth_shape *s = rm_synth_find(shape);
    if (!s) {
        fprintf(stderr, "ramole synth: unknown shape '%s' (known: %s)\n", shape, rm_synth_names());
        return 2;
    }
    rm_ftype t;
    if (rm_ftype_parse(type, &t)) return cli_fail("--type");
    rm_progress p;
    rm_progress_start(&p, "synth", "tensors", 2 + 9L * s->n_layer);
    if (rm_synth_write_ftype(s, t, (uint64_t)seed, out, on_progress, &p)) return cli_fail("synth");
    rm_progress_finish(&p, 2 + 9L * s->n_layer);
    char tn[24];
    fprintf(stderr, "wrote %s (%s, %s)\n", out, s->name, rm_ftype_name(t, tn, sizeof tn));
    return 0;
}

RM_COMMAND(synth, "write a random-weight model of a real shape", cmd_synth)
