// cmd_gate.c — `ramole gate train|info`: the MoE-style gates and SMEAR over a
// fixed set of a pool's adapters (docs/baselines.md). `train` trains a gate on
// a frozen base and frozen adapters; `info` shows a gate file.
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "cli.h"
#include "format/gguf.h"
#include "lora/gate.h"
#include "retrieve/pick.h"
#include "retrieve/poolset.h"
#include "train/train.h"
#include "train_args.h"

static void help(void) {
    printf("usage: ramole gate train --base MODEL.gguf --pool DIR (--adapters NAMES | --adapters-of-tasks TASKS)\n"
           "                         --data FILE[,FILE...] --kind soft|topk|top1|smear --out GATE.gguf [options]\n"
           "       ramole gate info GATE.gguf [--base MODEL.gguf]\n\n"
           "train: learns a gate W_g [n, in] per adapted linear over a fixed set of n adapters of the pool\n"
           "(frozen, as the frozen base), starting from 0 (uniform soft routing). Per token, z = W_g x and\n"
           "  soft   y = W x + sum_i softmax(z)_i E_i             (E_i = s_i B_i A_i x)\n"
           "  topk   the softmax over the K largest z only (--k, default 3)\n"
           "  top1   only the argmax, weighted by its softmax probability (Switch style)\n"
           "  smear  the adapters' parameters merged by softmax(W_g m), m = the mean of x over the\n"
           "         sequence so far; y = W x + (sum a_i s_i B_i)(sum a_i A_i) x (equal ranks)\n"
           "Data: {\"inputs\", \"targets\"[, \"task\"]} JSON lines or arrays. Writes GATE.gguf (tied to the\n"
           "base; it names its adapters, which `eval --compose moe --gate GATE.gguf --pool DIR` finds\n"
           "again in the pool) and GATE.gguf.svg (loss curve).\n\n"
           "  --adapters NAMES       the set: pool adapter names, comma-separated or @FILE (one a line)\n"
           "  --adapters-of-tasks T  the set: each task's adapter (the entry whose task, else name, is T)\n"
           "  --train-tasks T        only the examples whose \"task\" is one of T (list or @FILE)\n"
           "  --kind K  --k K        routing, and experts per token for topk (3)\n"
           "  --eval FILE            held-out examples (default: 10%% of --data, at most 200)\n"
           "  --epochs E | --steps N   length of training (1 epoch)\n"
           "  --lr LR                peak learning rate (1e-3), linear warm-up then cosine\n"
           "  --warmup N  --batch B (4)  --accum K (1)  --seq T  --no-pack  --weight-decay W  --clip C\n"
           "  --seed S  --threads N  --template FILE  --checkpoint FILE  --resume FILE  --json\n"
           "  --eval-em N            held-out examples scored for exact match with the gate (200; 0 = none)\n");
}

static int gate_train(int argc, char **argv) {
    const char *base = NULL, *pool_dir = NULL, *adapters = NULL, *of_tasks = NULL, *train_tasks = NULL, *kind_s = NULL;
    int pack = 1;
    long k = 3, em_max = 200;
    train_args a = {.batch = 4, .accum = 1, .seed = 1, .warmup = -1, .epochs = 1, .lr = 1e-3, .clip = 1.0};
    for (int i = 2; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 0;
        } else if (train_args_match(argc, argv, &i, &a)) {
        } else if (cli_str(argc, argv, &i, "--base", "-m", &base)) {
        } else if (cli_str(argc, argv, &i, "--pool", NULL, &pool_dir)) {
        } else if (cli_str(argc, argv, &i, "--adapters", NULL, &adapters)) {
        } else if (cli_str(argc, argv, &i, "--adapters-of-tasks", NULL, &of_tasks)) {
        } else if (cli_str(argc, argv, &i, "--train-tasks", NULL, &train_tasks)) {
        } else if (cli_str(argc, argv, &i, "--kind", NULL, &kind_s)) {
        } else if (cli_int(argc, argv, &i, "--k", NULL, &k)) {
        } else if (cli_int(argc, argv, &i, "--eval-em", NULL, &em_max)) {
        } else if (cli_flag(argc, argv, &i, "--no-pack", NULL)) pack = 0;
        else {
            fprintf(stderr, "ramole gate train: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!base || !pool_dir || !a.data || !a.out || !kind_s || !adapters == !of_tasks) {
        fprintf(stderr,
                "ramole gate train: --base, --pool, one of --adapters and --adapters-of-tasks, --data, --kind and "
                "--out are required (see --help)\n");
        return 2;
    }
    rm_gate_kind kind;
    if (rm_gate_kind_parse(kind_s, &kind)) {
        cli_fail("--kind");
        return 2;
    }
    if (k < 1 || a.batch <= 0 || a.accum <= 0 || a.seq < 0 || a.steps < 0 || !(a.lr > 0)) {
        fprintf(stderr, "ramole gate train: k, batch, accum, steps and lr must be positive\n");
        return 2;
    }
    cli_list names = {0}, tasks = {0};
    char *tmpl = NULL;
    size_t tlen;
    int rc = cli_list_add(&names, adapters ? "--adapters" : "--adapters-of-tasks", adapters ? adapters : of_tasks);
    if (!rc && train_tasks) rc = cli_list_add(&tasks, "--train-tasks", train_tasks);
    if (!rc && a.template_path && rm_read_file(a.template_path, &tmpl, &tlen)) rc = cli_fail("--template");
    if (rc) {
        cli_list_free(&names);
        cli_list_free(&tasks);
        return rc;
    }
    a.tasks = (const char *const *)tasks.item;
    a.n_tasks = tasks.n;

    rc = 1;
    rm_llama *m = NULL;
    rm_pool *pool = NULL;
    rm_lora_set *set = NULL;
    rm_gate *gate = NULL;
    rm_trainer *t = NULL;
    rm_tdata train = {0}, eval = {0};
    rm_train_report rep = {0};
    if (rm_llama_load(&m, base)) {
        cli_fail(base);
        goto done;
    }
    if (rm_pool_open_existing(pool_dir, &pool) ||
        rm_pool_load_set(pool, m, (const char *const *)names.item, names.n, of_tasks != NULL, &set)) {
        cli_fail("--pool");
        goto done;
    }
    if (train_args_load_data(&a, m, tmpl, &train, &eval)) goto done;
    rm_train_params p;
    train_args_params(&a, &train, pack, &p);
    if (rm_trainer_create(&t, m, &p) || rm_trainer_add_gate(t, set, kind, (int)k)) {
        cli_fail("trainer");
        goto done;
    }
    fprintf(stderr,
            "gate train: %s gate over %d adapters%s, %d examples (%d held out), %zu trainable parameters, %d steps "
            "of %d x %d x %d tokens\n",
            rm_gate_kind_name(kind), set->n, kind == RM_GATE_TOPK ? " (top k)" : "", train.n, eval.n,
            rm_trainer_n_trainable(t), p.steps, p.accum, p.batch, p.seq);
    if (train_args_run(&a, t, &train, &eval, pack, (int)em_max, &rep)) goto done;
    if (rm_trainer_export_gate(t, &gate) || rm_gate_save(gate, a.out)) {
        cli_fail(a.out);
        goto done;
    }
    char curve[4200];
    snprintf(curve, sizeof curve, "%s.svg", a.out);
    if (train_args_finish(&a, &rep, "gate train", a.out, curve, "gate training loss")) goto done;
    rc = 0;
done:
    rm_train_report_free(&rep);
    rm_trainer_free(t);
    rm_gate_free(gate);
    rm_lora_set_free(set);
    if (pool) rm_pool_close(pool);
    rm_tdata_free(&train);
    rm_tdata_free(&eval);
    rm_llama_free(m);
    cli_list_free(&names);
    cli_list_free(&tasks);
    free(tmpl);
    return rc;
}

// Loads the gate at path against m (for `gate info --base`).
static int gate_fits(const char *path, const rm_llama *m) {
    rm_gate *g = NULL;
    int rc = rm_gate_load(&g, path, m);
    rm_gate_free(g);
    return rc;
}

static int cmd_gate(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        help();
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "train")) return gate_train(argc, argv);
    if (!strcmp(argv[1], "info")) return cli_info_tied(argc, argv, "gate", "ramole.gate", gate_fits);
    fprintf(stderr, "ramole gate: unknown subcommand '%s' (train, info)\n", argv[1]);
    return 2;
}

RM_COMMAND(gate, "train a MoE / SMEAR gate over a fixed set of a pool's adapters, or show a gate file", cmd_gate)
