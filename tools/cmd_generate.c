// cmd_generate.c — `ramole generate`: text or ids in, new tokens out.
#include "adapter_args.h"
#include "cli.h"
#include "base/err.h"
#include "base/grow.h"
#include "base/json.h"
#include "lora/session.h"
#include "model/generate.h"
#include "base/file.h"
#include "retrieve/pick.h"

#include <stdio.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void help(void) {
    printf("usage: ramole generate -m MODEL [-p TEXT | --prompt-ids \"ID ID ...\"] [options]\n\n"
           "  -m, --model PATH      GGUF model\n"
           "  -p, --prompt TEXT     prompt text (tokenized with the model's tokenizer)\n"
           "  --prompt-ids IDS      prompt as token ids; they follow BOS when the model adds BOS\n"
           "  -n, --n-predict N     new tokens to generate (default 64)\n"
           "  --temp T              temperature; 0 = greedy (default 0.8)\n"
           "  --top-k K             (default 40; 0 = off)\n"
           "  --top-p P             (default 0.95; 1 = off)\n"
           "  --min-p P             (default 0.05; 0 = off)\n"
           "  --repeat-penalty R    (default 1 = off)   --repeat-last-n N (default 64)\n"
           "  --seed S              sampling seed (default 24301)\n"
           "  -t, --threads N       threads (default: all cores)\n"
           "  -c, --ctx N           context size (default: min(model, 4096))\n"
           "  --kv-type f32|f16     the KV cache's elements (default f32); f16: half the memory and the\n"
           "                        bytes attention reads at depth, at f16 precision\n"
           "  --ids                 print the new token ids on one line, nothing else on stdout\n"
           "  --lora PATH[:WEIGHT]  apply a LoRA adapter (PEFT dir or GGUF); repeat for several (up to 16)\n"
           "  --compose MODE        selection | mixture | fusion | router (default: selection for one\n"
           "                        adapter, mixture for more); weights default to 1/k\n"
           "  --router FILE         the trained router for --compose router (`ramole router train`)\n"
           "  --pool DIR            RAMoLE: retrieve the adapters for the prompt (-p) from this pool\n"
           "                        (`ramole pool`) and compose them as if given with --lora; the\n"
           "                        retrieved ones are named on stderr. Adapters without weights are\n"
           "                        passed over.\n"
           "  --retrieve K          how many adapters to take from the pool (default 3)\n"
           "  --min-score S         only adapters whose retrieval score is S or more; with none, the\n"
           "                        base model answers (a request no adapter fits)\n");
}

typedef struct gen_out {
    int ids;
    int first;
    rm_detok detok;
} gen_out;

static int on_token(void *ctx, int32_t id) {
    gen_out *o = ctx;
    if (o->ids) {
        printf(o->first ? "%d" : " %d", id);
        o->first = 0;
        return 0;
    }
    rm_sb piece;
    rm_sb_init(&piece);
    int n = rm_detok_push_sb(&o->detok, id, &piece);
    if (n > 0) fwrite(piece.buf, 1, piece.len, stdout);
    fflush(stdout);
    rm_sb_free(&piece);
    return n < 0;
}

// Parses "1 2 3" into ids; returns count or -1.
static int parse_ids(const char *s, int32_t **out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc((size_t)cap * sizeof(int32_t));
    if (!ids) return -1;
    while (*s) {
        while (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') s++;
        if (!*s) break;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 0x7fffffff) {
            free(ids);
            return -1;
        }
        if (RM_GROW(ids, n, cap, 16)) {
            free(ids);
            return -1;
        }
        ids[n++] = (int32_t)v;
        s = end;
    }
    *out = ids;
    return n;
}

// The k adapters of the pool in dir that best fit text and have weights,
// named on stderr. Returns how many (paths in pk->weights), or -1 with the
// reason printed.
static int retrieve_adapters(const char *dir, const char *text, int k, float min_score, rm_pick *pk) {
    rm_pool *pool = NULL;
    if (rm_pool_open_existing(dir, &pool)) {
        cli_fail("--pool");
        return -1;
    }
    int rc = rm_pool_pick(pool, text, k, min_score, pk);
    rm_pool_close(pool);
    if (rc) {
        cli_fail("retrieving");
        return -1;
    }
    if (pk->n == 0) {
        fprintf(stderr, "retrieved: none (no adapter with weights scores %g or more); the base model answers\n",
                min_score);
        return 0;
    }
    for (int i = 0; i < pk->n; i++) fprintf(stderr, "%s %s (%.3f)", i ? "," : "retrieved:", pk->name[i], pk->score[i]);
    fputc('\n', stderr);
    return pk->n;
}

typedef struct gen_args {
    const char *model, *prompt, *prompt_ids;
    long n_new, threads, ctx, top_k, last_n, seed;
    double temp, top_p, min_p, rep;
    int ids_mode, kv_type;
    adapter_args ad;
} gen_args;

// The command line into a; 1 after --help, 2 on an unknown option.
static int parse_args(int argc, char **argv, gen_args *a) {
    *a = (gen_args){
        .n_new = 64, .top_k = 40, .last_n = 64, .seed = 24301, .temp = 0.8, .top_p = 0.95, .min_p = 0.05, .rep = 1.0};
    adapter_args_init(&a->ad, 3, 1);
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 1;
        }
        if (!(cli_str(argc, argv, &i, "--model", "-m", &a->model) ||
              cli_str(argc, argv, &i, "--prompt", "-p", &a->prompt) ||
              cli_str(argc, argv, &i, "--prompt-ids", NULL, &a->prompt_ids) ||
              cli_int(argc, argv, &i, "--n-predict", "-n", &a->n_new) ||
              cli_int(argc, argv, &i, "--threads", "-t", &a->threads) ||
              cli_int(argc, argv, &i, "--ctx", "-c", &a->ctx) || cli_int(argc, argv, &i, "--top-k", NULL, &a->top_k) ||
              cli_kv_type(argc, argv, &i, &a->kv_type) ||
              cli_int(argc, argv, &i, "--repeat-last-n", NULL, &a->last_n) ||
              cli_int(argc, argv, &i, "--seed", NULL, &a->seed) ||
              cli_float(argc, argv, &i, "--temp", NULL, &a->temp) ||
              cli_float(argc, argv, &i, "--top-p", NULL, &a->top_p) ||
              cli_float(argc, argv, &i, "--min-p", NULL, &a->min_p) ||
              cli_float(argc, argv, &i, "--repeat-penalty", NULL, &a->rep) ||
              adapter_args_match(argc, argv, &i, &a->ad))) {
            if (!strcmp(argv[i], "--ids")) {
                a->ids_mode = 1;
                continue;
            }
            fprintf(stderr, "ramole generate: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    return 0;
}

// Refuses, with the reason, what cannot run (2); 0 when a can.
static int check_args(gen_args *a) {
    const char *why = !a->model                           ? "-m MODEL is required"
                      : a->prompt && a->prompt_ids        ? "give -p or --prompt-ids, not both"
                      : a->n_new < 0                      ? "-n must be >= 0"
                      : a->threads < 0                    ? "-t must be >= 0 (0: all cores)"
                      : a->ctx < 0                        ? "-c must be >= 0 (0: the model's, at most 4096)"
                      : !(a->temp >= 0)                   ? "--temp must be >= 0 (0: greedy)"
                      : a->top_k < 0                      ? "--top-k must be >= 0 (0: off)"
                      : !(a->top_p >= 0 && a->top_p <= 1) ? "--top-p must be in [0, 1] (1: off)"
                      : !(a->min_p >= 0 && a->min_p <= 1) ? "--min-p must be in [0, 1] (0: off)"
                      : !(a->rep > 0)                     ? "--repeat-penalty must be > 0 (1: off)"
                      : a->last_n < 0                     ? "--repeat-last-n must be >= 0"
                      : a->ad.pool && !a->prompt          ? "--pool retrieves by the prompt text: give -p TEXT"
                                                          : NULL;
    if (why) {
        fprintf(stderr, "ramole generate: %s\n", why);
        return 2;
    }
    return adapter_args_check(&a->ad, "generate");
}

// The prompt's ids (BOS first when the model adds one) into *ids; prints why and returns 1 on failure.
static int prompt_tokens(const gen_args *a, const rm_llama *m, int32_t **ids, int *n_ids) {
    int add_bos = m->add_bos, n;
    *n_ids = 0;
    if (a->prompt_ids) {
        int32_t *given = NULL;
        n = parse_ids(a->prompt_ids, &given);
        if (n < 0) {
            fprintf(stderr, "ramole generate: --prompt-ids wants space-separated ids\n");
            return 1;
        }
        *ids = malloc((size_t)(n + 1) * sizeof(int32_t));
        if (*ids && add_bos) (*ids)[(*n_ids)++] = m->bos;
        for (int i = 0; *ids && i < n; i++) (*ids)[(*n_ids)++] = given[i];
        free(given);
    } else {
        if (!m->tok) {
            fprintf(stderr, "ramole generate: %s has no tokenizer; use --prompt-ids\n", a->model);
            return 1;
        }
        const char *text = a->prompt ? a->prompt : "";
        n = rm_tokenize(m->tok, text, strlen(text), add_bos, 0, NULL, 0);
        if (n < 0) return cli_fail("cannot tokenize the prompt");
        *ids = malloc((size_t)(n + 1) * sizeof(int32_t));
        if (*ids) *n_ids = rm_tokenize(m->tok, text, strlen(text), add_bos, 0, *ids, n + 1);
    }
    if (!*ids) return cli_fail("prompt");
    if (*n_ids == 0) {
        fprintf(stderr, "ramole generate: the prompt is empty and the model adds no BOS\n");
        return 1;
    }
    for (int i = 0; i < *n_ids; i++)
        if ((*ids)[i] < 0 || (*ids)[i] >= m->hp.n_vocab) {
            fprintf(stderr, "ramole generate: prompt id %d is outside the vocabulary [0, %d)\n", (*ids)[i],
                    m->hp.n_vocab);
            return 1;
        }
    return 0;
}

// What a run holds, freed by run_free.
typedef struct gen_run {
    rm_llama *m;
    int32_t *ids;
    int n_ids, n_lora;
    rm_threadpool *tp;
    rm_kvcache kv;
    rm_pick pooled;
    rm_lora_session ls;
    rm_gen_stats st;
} gen_run;

static void run_free(gen_run *r) {
    rm_pick_free(&r->pooled);
    rm_lora_session_free(&r->ls);
    rm_kvcache_free(&r->kv);
    rm_threadpool_free(r->tp);
    free(r->ids);
    rm_llama_free(r->m);
}

// Loads the model and the adapters (given or retrieved) and generates, the
// text (or ids) streamed to stdout. Prints why and returns 1 on failure.
static int run(const gen_args *a, gen_run *r) {
    if (rm_llama_load(&r->m, a->model)) return cli_fail("cannot load model");
    if (prompt_tokens(a, r->m, &r->ids, &r->n_ids)) return 1;
    const rm_llama_hparams *hp = &r->m->hp;
    long ctx = a->ctx > 0 ? a->ctx : hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (ctx < r->n_ids + a->n_new) ctx = r->n_ids + a->n_new;
    if (!(r->tp = rm_threadpool_create((int)a->threads))) {
        fprintf(stderr, "ramole generate: cannot start threads\n");
        return 1;
    }
    if (rm_kvcache_init_type(&r->kv, hp->n_layer, 1, (int)ctx, hp->n_head_kv * hp->head_dim, a->kv_type))
        return cli_fail("kv cache");
    const char *lora[RM_PLAN_MAX];
    r->n_lora = a->ad.n_lora;
    memcpy(lora, a->ad.lora, sizeof lora);
    if (a->ad.pool) {
        int n = retrieve_adapters(a->ad.pool, a->prompt, (int)a->ad.k, (float)a->ad.min_score, &r->pooled);
        if (n < 0) return 1;
        for (r->n_lora = 0; r->n_lora < n; r->n_lora++) lora[r->n_lora] = r->pooled.weights[r->n_lora];
    }
    if (r->n_lora && rm_lora_session_init(&r->ls, r->m, r->tp, r->n_lora, lora, a->ad.compose, a->ad.router))
        return cli_fail(a->ad.pool ? "the retrieved adapters" : "--lora");
    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = (float)a->temp;
    sp.top_k = (int)a->top_k;
    sp.top_p = (float)a->top_p;
    sp.min_p = (float)a->min_p;
    sp.repeat_penalty = (float)a->rep;
    sp.repeat_last_n = (int)a->last_n;
    sp.seed = (uint64_t)a->seed;
    gen_out o = {a->ids_mode, 1, {0}};
    if (r->m->tok) rm_detok_init(&o.detok, r->m->tok);
    if (!a->ids_mode && a->prompt) {
        fputs(a->prompt, stdout);
        fflush(stdout);
    }
    int with = r->n_lora > 0;
    if (a->n_new > 0 && (rm_generate(r->m, &r->kv, r->tp, r->ids, r->n_ids, (int)a->n_new, &sp,
                                     with ? &r->ls.hook : NULL, with ? &r->ls.plan : NULL, 0, on_token, &o, &r->st) ||
                         (with && rm_lora_batch_status(r->ls.batch))))
        return cli_fail("generation failed");
    if (!a->ids_mode && r->m->tok) {
        char buf[64];
        int n = rm_detok_flush(&o.detok, buf, sizeof buf);
        if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
    }
    return 0;
}

// Ends the output line; the speed on a line of its own on stderr (after
// stdout is flushed, so that it never lands inside the text).
static void report(const gen_args *a, const gen_run *r) {
    fputc('\n', stdout);
    fflush(stdout);
    if (a->ids_mode || a->n_new == 0) return;
    const rm_gen_stats *st = &r->st;
    fprintf(stderr, "prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s | %d threads\n", st->n_prompt,
            st->n_prompt / (st->prompt_s > 0 ? st->prompt_s : 1e-9), st->n_gen,
            st->n_gen > 1 ? (st->n_gen - 1) / (st->gen_s > 0 ? st->gen_s : 1e-9) : 0.0, rm_threadpool_size(r->tp));
}

static int cmd_generate(int argc, char **argv) {
    gen_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = check_args(&a))) return rc;
    gen_run r = {0};
    rc = run(&a, &r);
    if (!rc) report(&a, &r);
    run_free(&r);
    return rc;
}

RM_COMMAND(generate, "generate text (or token ids) from a model", cmd_generate)
