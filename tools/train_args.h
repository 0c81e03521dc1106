// train_args.h — the options `ramole train` and `ramole lora train` share.
#ifndef RM_TOOLS_TRAIN_ARGS_H
#define RM_TOOLS_TRAIN_ARGS_H

typedef struct train_args {
    const char *data, *out, *eval, *template_path, *checkpoint, *resume;
    long steps, seed, threads, save_every, batch, accum, seq, warmup;
    double epochs, lr, weight_decay, clip;
    int json;
} train_args;

// Matches argv[*i] against --data --out/-o --eval --template --checkpoint
// --resume --steps --seed --threads/-t --save-every --batch --accum --seq
// --warmup --epochs --lr --weight-decay --clip --json (see cli.h helpers).
int train_args_match(int argc, char **argv, int *i, train_args *a);
#endif
