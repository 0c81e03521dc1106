// adapter_args.c — see adapter_args.h.
#include "adapter_args.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "retrieve/pool_store.h"
#include "cli.h"

void adapter_args_init(adapter_args *a, long k, long k_min) {
    memset(a, 0, sizeof *a);
    a->k = k;
    a->k_min = k_min;
    a->min_score = -INFINITY;
    a->compose = -1;
}

int adapter_args_match(int argc, char **argv, int *i, adapter_args *a) {
    const char *spec;
    if (cli_str(argc, argv, i, "--lora", NULL, &spec)) {
        if (a->n_lora < RM_PLAN_MAX) a->lora[a->n_lora] = spec;
        a->n_lora++;
        return 1;
    }
    return cli_str(argc, argv, i, "--pool", NULL, &a->pool) ||
           cli_str(argc, argv, i, "--compose", NULL, &a->compose_s) ||
           cli_str(argc, argv, i, "--router", NULL, &a->router) || cli_int(argc, argv, i, "--retrieve", NULL, &a->k) ||
           cli_float(argc, argv, i, "--min-score", NULL, &a->min_score);
}

// A spec "PATH:WORD" whose WORD is not a number, and which is no file as a
// whole, names a weight that is not one.
static int bad_weight(const char *spec) {
    const char *colon = strrchr(spec, ':');
    if (!colon || strchr(colon, '/') || rm_file_exists(spec)) return 0;
    char *end;
    strtod(colon + 1, &end);
    return !colon[1] || *end != 0;
}

int adapter_args_check(adapter_args *a, const char *cmd) {
    if (a->n_lora > RM_PLAN_MAX) {
        fprintf(stderr, "ramole %s: at most %d --lora\n", cmd, RM_PLAN_MAX);
        return 2;
    }
    for (int i = 0; i < a->n_lora; i++)
        if (bad_weight(a->lora[i])) {
            fprintf(stderr, "ramole %s: --lora %s: bad weight '%s' (PATH[:WEIGHT], WEIGHT a number)\n", cmd, a->lora[i],
                    strrchr(a->lora[i], ':') + 1);
            return 2;
        }
    if (a->compose_s) {
        rm_compose_mode cm;
        if (rm_compose_parse(a->compose_s, &cm)) return cli_fail("--compose") + 1;
        a->compose = (int)cm;
    }
    if ((a->compose == RM_COMPOSE_ROUTER) != (a->router != NULL)) {
        fprintf(stderr, "ramole %s: %s\n", cmd,
                a->router ? "--router goes with --compose router" : "--compose router needs --router FILE");
        return 2;
    }
    if (a->pool && a->n_lora) {
        fprintf(stderr, "ramole %s: give --pool or --lora, not both\n", cmd);
        return 2;
    }
    if (a->k < a->k_min || a->k > RM_PLAN_MAX) {
        fprintf(stderr, "ramole %s: --retrieve must be %ld..%d\n", cmd, a->k_min, RM_PLAN_MAX);
        return 2;
    }
    return a->pool ? cli_pool_present(cmd, a->pool) : 0;
}

int cli_pool_present(const char *cmd, const char *dir) {
    if (pool_is_pg_url(dir)) return 0; // a database: opening it says what is wrong (unreachable, no tables)
    char db[4096];
    snprintf(db, sizeof db, "%s/pool.db", dir);
    if (rm_file_exists(db)) return 0;
    fprintf(stderr, "ramole %s: no pool at %s (create one with `ramole pool init --pool %s --corpus FILE`)\n", cmd, dir,
            dir);
    return 2;
}
