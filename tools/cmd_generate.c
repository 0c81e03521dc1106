// cmd_generate.c — `ramole generate`: text or ids in, new tokens out.
#include "cli.h"
#include "base/err.h"
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
        if (end == s || v < 0 || v > 0x7fffffff) { free(ids); return -1; }
        if (n == cap) {
            int32_t *nb = realloc(ids, (size_t)(cap *= 2) * sizeof(int32_t));
            if (!nb) { free(ids); return -1; }
            ids = nb;
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
    if (rm_pool_open_existing(dir, &pool)) { cli_fail("--pool"); return -1; }
    int rc = rm_pool_pick(pool, text, k, min_score, pk);
    rm_pool_close(pool);
    if (rc) { cli_fail("retrieving"); return -1; }
    if (pk->n == 0) {
        fprintf(stderr, "retrieved: none (no adapter with weights scores %g or more); the base model answers\n", min_score);
        return 0;
    }
    for (int i = 0; i < pk->n; i++) fprintf(stderr, "%s %s (%.3f)", i ? "," : "retrieved:", pk->name[i], pk->score[i]);
    fputc('\n', stderr);
    return pk->n;
}

static int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *prompt_ids = NULL;
    long n_new = 64, threads = 0, ctx = 0, top_k = 40, last_n = 64, seed = 24301;
    double temp = 0.8, top_p = 0.95, min_p = 0.05, rep = 1.0;
    int ids_mode = 0, n_lora = 0, compose = -1;
    const char *lora[RM_PLAN_MAX], *compose_s = NULL, *pool_dir = NULL, *router = NULL;
    rm_pick pooled = {0};
    long k_retrieve = 3;
    double min_score = -INFINITY;
    rm_lora_session ls = {0};
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (cli_str(argc, argv, &i, "--model", "-m", &model)) {}
        else if (cli_str(argc, argv, &i, "--prompt", "-p", &prompt)) {}
        else if (cli_str(argc, argv, &i, "--prompt-ids", NULL, &prompt_ids)) {}
        else if (cli_int(argc, argv, &i, "--n-predict", "-n", &n_new)) {}
        else if (cli_int(argc, argv, &i, "--threads", "-t", &threads)) {}
        else if (cli_int(argc, argv, &i, "--ctx", "-c", &ctx)) {}
        else if (cli_int(argc, argv, &i, "--top-k", NULL, &top_k)) {}
        else if (cli_int(argc, argv, &i, "--repeat-last-n", NULL, &last_n)) {}
        else if (cli_int(argc, argv, &i, "--seed", NULL, &seed)) {}
        else if (cli_float(argc, argv, &i, "--temp", NULL, &temp)) {}
        else if (cli_float(argc, argv, &i, "--top-p", NULL, &top_p)) {}
        else if (cli_float(argc, argv, &i, "--min-p", NULL, &min_p)) {}
        else if (cli_float(argc, argv, &i, "--repeat-penalty", NULL, &rep)) {}
        else if (cli_flag(argc, argv, &i, "--ids", NULL)) ids_mode = 1;
        else if (cli_str(argc, argv, &i, "--lora", NULL, &lora[n_lora < RM_PLAN_MAX ? n_lora : 0])) n_lora++;
        else if (cli_str(argc, argv, &i, "--compose", NULL, &compose_s)) {}
        else if (cli_str(argc, argv, &i, "--pool", NULL, &pool_dir)) {}
        else if (cli_str(argc, argv, &i, "--router", NULL, &router)) {}
        else if (cli_int(argc, argv, &i, "--retrieve", NULL, &k_retrieve)) {}
        else if (cli_float(argc, argv, &i, "--min-score", NULL, &min_score)) {}
        else { fprintf(stderr, "ramole generate: unknown option '%s' (see --help)\n", argv[i]); return 2; }
    }
    if (!model) { fprintf(stderr, "ramole generate: -m MODEL is required\n"); return 2; }
    if (prompt && prompt_ids) { fprintf(stderr, "ramole generate: give -p or --prompt-ids, not both\n"); return 2; }
    if (n_new < 0) { fprintf(stderr, "ramole generate: -n must be >= 0\n"); return 2; }
    if (n_lora > RM_PLAN_MAX) { fprintf(stderr, "ramole generate: at most %d --lora\n", RM_PLAN_MAX); return 2; }
    if (compose_s) {
        rm_compose_mode cm;
        if (rm_compose_parse(compose_s, &cm)) return cli_fail("--compose");
        compose = (int)cm;
    }
    if ((compose == RM_COMPOSE_ROUTER) != (router != NULL)) {
        fprintf(stderr, "ramole generate: %s\n", router ? "--router goes with --compose router" : "--compose router needs --router FILE");
        return 2;
    }
    if (pool_dir) {
        if (n_lora) { fprintf(stderr, "ramole generate: give --pool or --lora, not both\n"); return 2; }
        if (!prompt) { fprintf(stderr, "ramole generate: --pool retrieves by the prompt text: give -p TEXT\n"); return 2; }
        if (k_retrieve < 1 || k_retrieve > RM_PLAN_MAX) {
            fprintf(stderr, "ramole generate: --retrieve must be 1..%d\n", RM_PLAN_MAX);
            return 2;
        }
    }

    rm_llama *m;
    if (rm_llama_load(&m, model)) return cli_fail("cannot load model");
    int rc = 1;
    int32_t *ids = NULL, *extra = NULL;
    int n_ids = 0;
    rm_threadpool *tp = NULL;
    rm_kvcache kv = {0};
    int add_bos = m->add_bos;
    if (prompt_ids) {
        int n = parse_ids(prompt_ids, &extra);
        if (n < 0) { fprintf(stderr, "ramole generate: --prompt-ids wants space-separated ids\n"); goto out; }
        ids = malloc((size_t)(n + 1) * sizeof(int32_t));
        if (!ids) goto out;
        if (add_bos) ids[n_ids++] = m->bos;
        for (int i = 0; i < n; i++) ids[n_ids++] = extra[i];
    } else {
        if (!m->tok) { fprintf(stderr, "ramole generate: %s has no tokenizer; use --prompt-ids\n", model); goto out; }
        const char *text = prompt ? prompt : "";
        int n = rm_tokenize(m->tok, text, strlen(text), add_bos, 0, NULL, 0);
        if (n < 0) { cli_fail("cannot tokenize the prompt"); goto out; }
        ids = malloc((size_t)(n + 1) * sizeof(int32_t));
        if (!ids) goto out;
        n_ids = rm_tokenize(m->tok, text, strlen(text), add_bos, 0, ids, n + 1);
    }
    if (n_ids == 0) { fprintf(stderr, "ramole generate: the prompt is empty and the model adds no BOS\n"); goto out; }
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= m->hp.n_vocab) {
            fprintf(stderr, "ramole generate: prompt id %d is outside the vocabulary [0, %d)\n", ids[i], m->hp.n_vocab);
            goto out;
        }
    if (ctx <= 0) ctx = m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096;
    if (ctx < n_ids + n_new) ctx = n_ids + n_new;
    tp = rm_threadpool_create((int)threads);
    if (!tp) { fprintf(stderr, "ramole generate: cannot start threads\n"); goto out; }
    if (rm_kvcache_init(&kv, m->hp.n_layer, 1, (int)ctx, m->hp.n_head_kv * m->hp.head_dim)) { cli_fail("kv cache"); goto out; }
    if (pool_dir) {
        int n = retrieve_adapters(pool_dir, prompt, (int)k_retrieve, (float)min_score, &pooled);
        if (n < 0) goto out;
        for (n_lora = 0; n_lora < n; n_lora++) lora[n_lora] = pooled.weights[n_lora];
    }
    if (n_lora && rm_lora_session_init(&ls, m, tp, n_lora, lora, compose, router)) {
        cli_fail(pool_dir ? "the retrieved adapters" : "--lora");
        goto out;
    }

    rm_sampler_params sp = rm_sampler_default_params();
    sp.temperature = (float)temp;
    sp.top_k = (int)top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repeat_penalty = (float)rep;
    sp.repeat_last_n = (int)last_n;
    sp.seed = (uint64_t)seed;
    gen_out o = {ids_mode, 1, {0}};
    if (m->tok) rm_detok_init(&o.detok, m->tok);
    if (!ids_mode && prompt) { fputs(prompt, stdout); fflush(stdout); }
    rm_gen_stats st;
    if (n_new > 0 && (rm_generate(m, &kv, tp, ids, n_ids, (int)n_new, &sp, n_lora ? &ls.hook : NULL,
                                  n_lora ? &ls.plan : NULL, 0, on_token, &o, &st) ||
                      (n_lora && rm_lora_batch_status(ls.batch)))) {
        cli_fail("generation failed");
        goto out;
    }
    if (ids_mode) {
        printf("\n");
    } else {
        if (m->tok) {
            char buf[64];
            int n = rm_detok_flush(&o.detok, buf, sizeof buf);
            if (n > 0) fwrite(buf, 1, (size_t)n, stdout);
        }
        printf("\n");
        if (n_new > 0)
            fprintf(stderr, "prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s | %d threads\n",
                    st.n_prompt, st.n_prompt / (st.prompt_s > 0 ? st.prompt_s : 1e-9), st.n_gen,
                    st.n_gen > 1 ? (st.n_gen - 1) / (st.gen_s > 0 ? st.gen_s : 1e-9) : 0.0, rm_threadpool_size(tp));
    }
    rc = 0;
out:
    rm_pick_free(&pooled);
    rm_lora_session_free(&ls);
    rm_kvcache_free(&kv);
    rm_threadpool_free(tp);
    free(ids);
    free(extra);
    rm_llama_free(m);
    return rc;
}

RM_COMMAND(generate, "generate text (or token ids) from a model", cmd_generate)
