// adapter_args.h — the adapter options `ramole generate` and `ramole eval`
// share: --lora PATH[:WEIGHT] (repeatable), --pool DIR, --retrieve K,
// --min-score S, --compose MODE, --router FILE. Parsed, then checked, with
// every refusal saying why.
#ifndef RM_TOOLS_ADAPTER_ARGS_H
#define RM_TOOLS_ADAPTER_ARGS_H
#include "lora/compose.h"

typedef struct adapter_args {
    const char *lora[RM_PLAN_MAX];
    int n_lora; // how many --lora were given (may exceed RM_PLAN_MAX: refused by the check)
    const char *pool, *compose_s, *router;
    long k;           // --retrieve
    long k_min;       // the least --retrieve taken (generate 1; eval 0, "not retrieving")
    double min_score; // --min-score (-INFINITY: any)
    int compose;      // after adapter_args_check: -1 (not given) or an rm_compose_mode
} adapter_args;

// Defaults: no adapters, --retrieve k (k_min the least one may give).
void adapter_args_init(adapter_args *a, long k, long k_min);
// Matches argv[*i] against the options above (see cli.h helpers).
int adapter_args_match(int argc, char **argv, int *i, adapter_args *a);
// Checks what was given, for command cmd (named in the messages): at most
// RM_PLAN_MAX --lora, each PATH[:WEIGHT] with a number for WEIGHT, a known
// --compose, --router exactly with --compose router, --retrieve k_min..RM_PLAN_MAX,
// not --pool with --lora, and a pool that exists. Prints why and returns 2 on a refusal.
int adapter_args_check(adapter_args *a, const char *cmd);

// 0 when dir holds a pool; else prints "ramole CMD: no pool at DIR (create one
// with `ramole pool init --pool DIR --corpus FILE`)" and returns 2. For the
// commands that only read a pool (they must never create one).
int cli_pool_present(const char *cmd, const char *dir);
#endif
