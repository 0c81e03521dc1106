// train_args.c — see train_args.h.
#include "train_args.h"

#include "cli.h"

int train_args_match(int argc, char **argv, int *i, train_args *a) {
    if (cli_flag(argc, argv, i, "--json", NULL)) {
        a->json = 1;
        return 1;
    }
    return cli_str(argc, argv, i, "--data", NULL, &a->data) || cli_str(argc, argv, i, "--out", "-o", &a->out) ||
           cli_str(argc, argv, i, "--eval", NULL, &a->eval) ||
           cli_str(argc, argv, i, "--template", NULL, &a->template_path) ||
           cli_str(argc, argv, i, "--checkpoint", NULL, &a->checkpoint) ||
           cli_str(argc, argv, i, "--resume", NULL, &a->resume) || cli_int(argc, argv, i, "--steps", NULL, &a->steps) ||
           cli_int(argc, argv, i, "--seed", NULL, &a->seed) || cli_int(argc, argv, i, "--threads", "-t", &a->threads) ||
           cli_int(argc, argv, i, "--save-every", NULL, &a->save_every) ||
           cli_int(argc, argv, i, "--batch", NULL, &a->batch) || cli_int(argc, argv, i, "--accum", NULL, &a->accum) ||
           cli_int(argc, argv, i, "--seq", NULL, &a->seq) || cli_int(argc, argv, i, "--warmup", NULL, &a->warmup) ||
           cli_float(argc, argv, i, "--epochs", NULL, &a->epochs) || cli_float(argc, argv, i, "--lr", NULL, &a->lr) ||
           cli_float(argc, argv, i, "--weight-decay", NULL, &a->weight_decay) ||
           cli_float(argc, argv, i, "--clip", NULL, &a->clip);
}
