// cmd_lora_train.c — `ramole lora train`: trains a LoRA adapter on a frozen
// base (any weight type) from {"inputs", "targets"} data and writes a PEFT
// directory (and a GGUF LoRA with --gguf).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "base/json.h"
#include "cli.h"
#include "lora/adapter.h"
#include "train_args.h"
#include "train/train.h"

// Reached as `ramole lora train` through tools/cmd_lora.c.
int rm_cmd_lora_train(int argc, char **argv);

static void help(void) {
    printf("usage: ramole lora train --base MODEL.gguf --data FILE.jsonl --out DIR [options]\n\n"
           "Trains a LoRA adapter on the frozen base (f32, f16, q8_0, ... weights) with the\n"
           "loss on the target tokens of {\"inputs\", \"targets\"} examples (JSON lines or a JSON\n"
           "array, e.g. the Flan files) rendered through a prompt template, and writes DIR\n"
           "(adapter_config.json + adapter_model.safetensors, PEFT layout) and DIR/loss.svg.\n\n"
           "  --eval FILE          held-out examples (default: 10%% of --data, at most 200)\n"
           "  --rank R             LoRA rank (8)\n"
           "  --alpha A            LoRA alpha (2*rank); scale alpha/r, alpha/sqrt(r) with --rslora\n"
           "  --targets LIST       q,k,v,o,gate,up,down | attn | mlp | all (q,v)\n"
           "  --rslora             rank-stabilised scaling\n"
           "  --epochs E | --steps N   length of training (1 epoch)\n"
           "  --lr LR              peak learning rate (2e-4), linear warm-up then cosine\n"
           "  --warmup N           warm-up steps (3%% of the steps)\n"
           "  --batch B            sequences per micro-batch (4)\n"
           "  --accum K            micro-batches per step (1)\n"
           "  --seq T              tokens per sequence (longest example, at most 512)\n"
           "  --no-pack            one example per sequence (default: pack short ones)\n"
           "  --weight-decay W     AdamW decoupled weight decay (0)\n"
           "  --clip C             gradient-norm clip (1.0; 0 = off)\n"
           "  --seed S             seed of the adapter init and data order (1)\n"
           "  --threads N          threads (all cores)\n"
           "  --template FILE      prompt template with {inputs} (default: the Alpaca template)\n"
           "  --eval-em N          examples scored for exact match (200; 0 = none)\n"
           "  --checkpoint FILE    save (every --save-every steps and at the end) / --resume FILE\n"
           "  --gguf               also write DIR/adapter.gguf (llama.cpp LoRA)\n"
           "  --json               last stdout line: {\"steps\", \"initial_loss\", \"final_loss\",\n"
           "                       \"eval_loss\", \"eval_em\", \"tokens_per_s\"}\n");
}

int rm_cmd_lora_train(int argc, char **argv) {
    const char *base = NULL, *targets_s = "q,v";
    long rank = 8, em_max = 200;
    double alpha = -1;
    int rslora = 0, gguf = 0, pack = 1;
    train_args a = {.batch = 4, .accum = 1, .seed = 1, .warmup = -1, .epochs = 1, .lr = 2e-4, .clip = 1.0};
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 0;
        } else if (train_args_match(argc, argv, &i, &a)) {
        } else if (cli_str(argc, argv, &i, "--base", "-m", &base)) {
        } else if (cli_str(argc, argv, &i, "--targets", NULL, &targets_s)) {
        } else if (cli_int(argc, argv, &i, "--rank", "-r", &rank)) {
        } else if (cli_int(argc, argv, &i, "--eval-em", NULL, &em_max)) {
        } else if (cli_float(argc, argv, &i, "--alpha", NULL, &alpha)) {
        } else if (cli_flag(argc, argv, &i, "--rslora", NULL)) rslora = 1;
        else if (cli_flag(argc, argv, &i, "--gguf", NULL)) gguf = 1;
        else if (cli_flag(argc, argv, &i, "--no-pack", NULL)) pack = 0;
        else {
            fprintf(stderr, "ramole lora train: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    const char *data = a.data, *out = a.out, *tmpl_path = a.template_path;
    long steps = a.steps, batch = a.batch, accum = a.accum, seq = a.seq;
    if (!base || !data || !out) {
        fprintf(stderr, "ramole lora train: --base, --data and --out are required (see --help)\n");
        return 2;
    }
    if (rank <= 0 || batch <= 0 || accum <= 0 || seq < 0 || steps < 0 || !(a.lr > 0)) {
        fprintf(stderr, "ramole lora train: rank, batch, accum, steps and lr must be positive\n");
        return 2;
    }
    unsigned targets;
    if (rm_lora_parse_targets(targets_s, &targets)) return cli_fail("--targets");
    train_state st = {0};
    size_t tlen;
    if (tmpl_path && rm_read_file(tmpl_path, &st.tmpl, &tlen)) return cli_fail("--template");

    int rc = 1;
    rm_lora *lora = NULL;
    if (rm_llama_load(&st.m, base)) {
        cli_fail(base);
        goto done;
    }
    if (train_args_load_data(&a, st.m, st.tmpl, &st.train, &st.eval)) goto done;
    rm_train_params p;
    train_args_params(&a, &st.train, pack, &p);
    if (rm_trainer_create(&st.t, st.m, &p) ||
        rm_trainer_add_lora(st.t, targets, (int)rank, alpha > 0 ? (float)alpha : 2.0f * rank, rslora)) {
        cli_fail("trainer");
        goto done;
    }
    fprintf(stderr,
            "lora train: %d examples (%d held out), rank %ld on %s, %zu trainable parameters, %d steps of %d x %d x %d "
            "tokens\n",
            st.train.n, st.eval.n, rank, targets_s, rm_trainer_n_trainable(st.t), p.steps, p.accum, p.batch, p.seq);
    if (train_args_run(&a, st.t, &st.train, &st.eval, pack, (int)em_max, &st.rep)) goto done;
    if (rm_trainer_export_lora(st.t, &lora) || rm_lora_save_peft(lora, out)) {
        cli_fail(out);
        goto done;
    }
    char path[4096];
    if (gguf) {
        snprintf(path, sizeof path, "%s/adapter.gguf", out);
        if (rm_lora_save_gguf(lora, path)) {
            cli_fail(path);
            goto done;
        }
    }
    snprintf(path, sizeof path, "%s/loss.svg", out);
    if (train_args_finish(&a, &st.rep, "lora train", out, path, "LoRA training loss")) goto done;
    rc = 0;
done:
    rm_lora_free(lora);
    train_state_free(&st);
    return rc;
}
