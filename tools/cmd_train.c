// cmd_train.c — `ramole train`: a small Llama-architecture model trained from
// scratch (byte-level vocabulary) on plain text or {"inputs", "targets"} data.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/json.h"
#include "cli.h"
#include "model/synth.h"
#include "train_args.h"
#include "train/train.h"

static void help(void) {
    printf("usage: ramole train --config FILE.json --data FILE --out MODEL.gguf [options]\n\n"
           "Trains a Llama-architecture model from scratch with a byte-level vocabulary (bytes\n"
           "0-255, <s> = 256, </s> = 257) and writes it as an f32 GGUF model, plus MODEL.loss.svg.\n"
           "FILE ending in .jsonl or .json holds {\"inputs\", \"targets\"} examples (loss on the\n"
           "targets, --template applies); anything else is plain text for language modelling.\n\n"
           "The config is a JSON object (defaults in brackets):\n"
           "  n_vocab [258] n_embd [256] n_layer [4] n_head [8] n_head_kv [n_head] n_ff [4*n_embd*2/3]\n"
           "  n_ctx [seq] seq [256] batch [8] accum [1] steps | epochs [1] lr [1e-3] warmup [steps/20]\n"
           "  min_lr_ratio [0.1] weight_decay [0.1] clip [1.0] seed [1]\n"
           "  bpe_merges [0]: learn that many byte-level BPE merges from the data first (GPT-2\n"
           "  pre-tokenizer); they become tokens 258... of the model's vocabulary\n"
           "  curriculum {\"data\": FILE, \"steps\": N[, \"template\": T]}: the first N steps train on FILE (a path "
           "relative\n"
           "  to the config's folder; JSONL: the loss on the targets only, prompts made with T, a\n"
           "  template text such as \"{inputs}\"), the rest on --data\n\n"
           "  --steps N / --epochs E / --lr LR / --seed S / --batch B / --accum K / --seq T /\n"
           "  --warmup N / --weight-decay W / --clip C    override the config\n"
           "  --eval FILE          held-out data for eval loss (and exact match for JSONL)\n"
           "  --template FILE      prompt template with {inputs} for JSONL (default: Alpaca)\n"
           "  --threads N          threads (all cores)\n"
           "  --checkpoint FILE    save every --save-every steps and at the end; --resume FILE\n"
           "  --json               last stdout line: {\"steps\", \"initial_loss\", \"final_loss\",\n"
           "                       \"eval_loss\", \"eval_em\", \"tokens_per_s\", \"params\"}\n");
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

// tok: the model's tokenizer when it has merges (NULL: bytes are the ids).
static int load_data(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int seq) {
    if (ends_with(path, ".jsonl") || ends_with(path, ".json"))
        return rm_tdata_load_jsonl(d, path, tmpl, tok, 256, 257, seq);
    return rm_tdata_load_text(d, path, tok, 256, seq + 1 > 2 ? seq : 2);
}

// The merges of a byte-level BPE of n_merges learned from the text of path,
// cut by the pre-tokenizer of the byte-level model at init.
static int learn_merges(const char *init, const char *path, int n_merges, char ***merges, int *n) {
    rm_llama *m = NULL;
    char *text = NULL;
    size_t len;
    int rc = rm_llama_load(&m, init);
    if (!rc) rc = rm_read_file(path, &text, &len);
    if (!rc) rc = rm_bpe_learn(m->tok, text, len, n_merges, merges, n);
    free(text);
    rm_llama_free(m);
    return rc;
}

// What the config file and the command line set.
typedef struct train_cfg {
    rm_synth_shape shape;
    rm_train_params p;
    long steps, cfg_steps, bpe, warm_steps, warmup;
    int n_merges; // BPE merges learned (their tokenizer then encodes the data)
    double epochs;
    char warm_path[4096], warm_tmpl[1024]; // the curriculum's data (relative to the config's folder) and template
} train_cfg;

// The command line into a and *cfg_path; 1 after --help, 2 on a bad argument.
static int parse_args(int argc, char **argv, const char **cfg_path, train_args *a) {
    // -1: take the value from the config
    *a = (train_args){.steps = -1,
                      .seed = -1,
                      .batch = -1,
                      .accum = -1,
                      .seq = -1,
                      .warmup = -1,
                      .epochs = -1,
                      .lr = -1,
                      .weight_decay = -1,
                      .clip = -1};
    *cfg_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) {
            help();
            return 1;
        }
        if (!train_args_match(argc, argv, &i, a) && !cli_str(argc, argv, &i, "--config", "-c", cfg_path)) {
            fprintf(stderr, "ramole train: unknown argument '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (!*cfg_path || !a->data || !a->out) {
        fprintf(stderr, "ramole train: --config, --data and --out are required (see --help)\n");
        return 2;
    }
    return 0;
}

// Reads the config at path (the command line's values win) into c and checks
// it: 2 with the reason printed when it is inconsistent, 1 when unreadable.
static int read_config(const char *path, const train_args *a, train_cfg *c) {
    rm_json *cfg;
    if (rm_json_parse_file(path, &cfg)) return cli_fail(path);
    int d = (int)rm_json_get_int(cfg, "n_embd", 256), H = (int)rm_json_get_int(cfg, "n_head", 8);
    int seq = a->seq > 0 ? (int)a->seq : (int)rm_json_get_int(cfg, "seq", 256);
    c->shape = (rm_synth_shape){"train",
                                (int)rm_json_get_int(cfg, "n_vocab", 258),
                                d,
                                (int)rm_json_get_int(cfg, "n_layer", 4),
                                H,
                                (int)rm_json_get_int(cfg, "n_head_kv", H),
                                (int)rm_json_get_int(cfg, "n_ff", (8 * d / 3 + 31) / 32 * 32),
                                (int)rm_json_get_int(cfg, "n_ctx", seq)};
    rm_train_params *p = &c->p;
    rm_train_default_params(p);
    p->seq = seq;
    p->batch = a->batch > 0 ? (int)a->batch : (int)rm_json_get_int(cfg, "batch", 8);
    p->accum = a->accum > 0 ? (int)a->accum : (int)rm_json_get_int(cfg, "accum", 1);
    p->lr = a->lr > 0 ? (float)a->lr : (float)rm_json_get_num(cfg, "lr", 1e-3);
    p->min_lr_ratio = (float)rm_json_get_num(cfg, "min_lr_ratio", 0.1);
    p->weight_decay = a->weight_decay >= 0 ? (float)a->weight_decay : (float)rm_json_get_num(cfg, "weight_decay", 0.1);
    p->clip = a->clip >= 0 ? (float)a->clip : (float)rm_json_get_num(cfg, "clip", 1.0);
    p->seed = a->seed >= 0 ? (uint64_t)a->seed : (uint64_t)rm_json_get_int(cfg, "seed", 1);
    p->threads = (int)a->threads;
    c->steps = a->steps;
    c->cfg_steps = rm_json_get_int(cfg, "steps", 0);
    c->bpe = rm_json_get_int(cfg, "bpe_merges", 0);
    // a curriculum: the first warm_steps steps on another text (a path relative to the config's folder)
    const rm_json *cur = rm_json_get(cfg, "curriculum");
    c->warm_steps = rm_json_get_int(cur, "steps", 0);
    const char *wd = rm_json_get_str(cur, "data", NULL), *wt = rm_json_get_str(cur, "template", NULL);
    int wt_ok = (wt || !rm_json_get(cur, "template")) &&
                (!wt || snprintf(c->warm_tmpl, sizeof c->warm_tmpl, "%s", wt) < (int)sizeof c->warm_tmpl);
    if (wd) {
        const char *slash = strrchr(path, '/');
        if (wd[0] == '/' || !slash) snprintf(c->warm_path, sizeof c->warm_path, "%s", wd);
        else snprintf(c->warm_path, sizeof c->warm_path, "%.*s/%s", (int)(slash - path), path, wd);
    }
    c->warmup = a->warmup >= 0 ? a->warmup : rm_json_get_int(cfg, "warmup", -1);
    c->epochs = a->epochs >= 0 ? a->epochs : rm_json_get_num(cfg, "epochs", 1.0);
    int bad_cur = (cur && (!wd || c->warm_steps <= 0)) || (!cur && c->warm_steps) || !wt_ok;
    rm_json_free(cfg);
    const rm_synth_shape *sh = &c->shape;
    const char *why =
        bad_cur ? "curriculum needs \"data\" and \"steps\" > 0 (and \"template\", if any, a string under 1024 bytes)"
        : c->bpe < 0 || c->bpe > 100000 ? "bpe_merges must be 0..100000"
        : sh->n_vocab < 258 || d <= 0 || H <= 0 || sh->n_head_kv <= 0 || H % sh->n_head_kv || d % H ||
                sh->n_layer <= 0 || sh->n_ff <= 0 || seq <= 1 || seq > sh->n_ctx || p->batch <= 0 || p->accum <= 0
            ? "inconsistent shape or batch (n_vocab >= 258, n_embd % n_head == 0, n_head % n_head_kv == 0, "
              "1 < seq <= n_ctx)"
            : NULL;
    if (why) {
        fprintf(stderr, "ramole train: %s: %s\n", path, why);
        return 2;
    }
    return 0;
}

// The model's random init (uniform, 1/sqrt(fan_in)) and byte-level vocabulary,
// via the synth writer; with bpe_merges, the merges are learned from the data
// first and become tokens 258... Loaded into s->m; 1 on failure (printed).
static int init_model(const train_args *a, train_cfg *c, train_state *s) {
    char init[4096];
    snprintf(init, sizeof init, "%s.init.tmp", a->out);
    char **merges = NULL;
    int n_merges = 0, rc = 0;
    if (c->bpe > 0) {
        rm_synth_shape bytes = c->shape;
        bytes.n_vocab = 258;
        if (rm_synth_write(&bytes, RM_TYPE_F32, c->p.seed, init, NULL, NULL) ||
            learn_merges(init, a->data, (int)c->bpe, &merges, &n_merges))
            rc = cli_fail("learning the BPE");
        if (!rc && c->shape.n_vocab < 258 + n_merges) c->shape.n_vocab = 258 + n_merges;
        if (!rc)
            fprintf(stderr, "train: %d BPE merges learned from %s (vocabulary %d)\n", n_merges, a->data,
                    c->shape.n_vocab);
    }
    if (!rc && (rm_synth_write_bpe(&c->shape, (const char *const *)merges, n_merges, RM_TYPE_F32, c->p.seed, init, NULL,
                                   NULL) ||
                rm_llama_load(&s->m, init)))
        rc = cli_fail("init");
    if (!rc) unlink(init);
    c->n_merges = n_merges;
    for (int i = 0; i < n_merges; i++) free(merges[i]);
    free(merges);
    return rc;
}

// Trains the model of c on the data (and the curriculum's first steps); the
// model saved at a->out. 1 on failure (printed).
static int run(const train_args *a, train_cfg *c, train_state *s) {
    size_t tlen;
    if (a->template_path && rm_read_file(a->template_path, &s->tmpl, &tlen)) return cli_fail(a->template_path);
    if (init_model(a, c, s)) return 1;
    const rm_tokenizer *tok = c->n_merges ? s->m->tok : NULL;
    rm_tdata warm = {0};
    int seq = c->p.seq, rc = 1;
    if (load_data(&s->train, a->data, s->tmpl, tok, seq)) cli_fail(a->data);
    else if (a->eval && load_data(&s->eval, a->eval, s->tmpl, tok, seq)) cli_fail(a->eval);
    else if (c->warm_path[0] && load_data(&warm, c->warm_path, c->warm_tmpl[0] ? c->warm_tmpl : s->tmpl, tok, seq))
        cli_fail(c->warm_path);
    else rc = 0;
    rm_train_params *p = &c->p;
    if (!rc) {
        p->steps = c->steps > 0       ? (int)c->steps
                   : c->cfg_steps > 0 ? (int)c->cfg_steps
                                      : rm_train_steps_for_epochs(&s->train, p->batch, p->seq, p->accum, 1, c->epochs);
        p->warmup = c->warmup >= 0 ? (int)c->warmup : p->steps / 20;
        if (rm_trainer_create(&s->t, s->m, p) || rm_trainer_full(s->t)) rc = cli_fail("trainer");
        else if (a->resume && rm_trainer_load_checkpoint(s->t, a->resume)) rc = cli_fail(a->resume);
    }
    if (!rc) {
        const rm_synth_shape *sh = &c->shape;
        fprintf(stderr,
                "train: %zu parameters (%d layers, %d dims, %d heads/%d kv, ff %d, vocab %d), %d examples, %d steps of "
                "%d x "
                "%d x %d tokens\n",
                rm_trainer_n_trainable(s->t), sh->n_layer, sh->n_embd, sh->n_head, sh->n_head_kv, sh->n_ff, sh->n_vocab,
                s->train.n, p->steps, p->accum, p->batch, p->seq);
        rm_train_run_opts o = {.steps = p->steps,
                               .pack = 1,
                               .eval_every = s->eval.n ? (p->steps + 9) / 10 : 0,
                               .eval_em_max = s->eval.n && s->train.ex[0].n_prompt > 1 ? 200 : 0,
                               .checkpoint = a->checkpoint,
                               .save_every = (int)a->save_every,
                               .progress = 1,
                               .warm = warm.n ? &warm : NULL,
                               .warm_steps = (int)c->warm_steps};
        if (warm.n) {
            long n_prompt = 0, n_all = 0;
            for (int i = 0; i < warm.n; i++) n_prompt += warm.ex[i].n_prompt, n_all += warm.ex[i].n;
            fprintf(stderr, "train: the first %ld steps on %s (%d examples, %ld prompt and %ld target tokens)\n",
                    c->warm_steps, c->warm_path, warm.n, n_prompt, n_all - n_prompt);
        }
        if (rm_train_run(s->t, &s->train, s->eval.n ? &s->eval : NULL, &o, &s->rep)) rc = cli_fail("training");
        else if (rm_trainer_save_model(s->t, a->out)) rc = cli_fail(a->out);
    }
    rm_tdata_free(&warm);
    return rc;
}

// The loss curve beside the model, the summary on stderr, --json's line.
static int report(const train_args *a, const train_state *s) {
    char svg[4096];
    const char *out = a->out;
    snprintf(svg, sizeof svg, "%.*s.loss.svg", (int)(strlen(out) - (ends_with(out, ".gguf") ? 5 : 0)), out);
    if (rm_train_write_curve(&s->rep, svg, "training loss")) return cli_fail(svg);
    char ev[48] = "";
    if (s->eval.n) snprintf(ev, sizeof ev, ", eval loss %.4f", s->rep.eval_loss);
    fprintf(stderr, "train: %d steps, loss %.4f -> %.4f%s, %.0f tokens/s; wrote %s and %s\n", s->rep.steps,
            s->rep.initial_loss, s->rep.final_loss, ev, s->rep.tokens_per_s, out, svg);
    if (a->json) {
        rm_sb sb;
        rm_sb_init(&sb);
        rm_train_report_json(&s->rep, (long)rm_trainer_n_trainable(s->t), &sb);
        printf("%s\n", sb.buf ? sb.buf : "{}");
        rm_sb_free(&sb);
    }
    return 0;
}

static int cmd_train(int argc, char **argv) {
    const char *cfg_path;
    train_args a;
    train_cfg c = {0};
    int rc = parse_args(argc, argv, &cfg_path, &a);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = read_config(cfg_path, &a, &c))) return rc;
    train_state s = {0};
    rc = run(&a, &c, &s) || report(&a, &s);
    train_state_free(&s);
    return rc;
}

RM_COMMAND(train, "train a small Llama-architecture model from scratch (byte-level)", cmd_train)
