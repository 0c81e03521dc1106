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
           "  curriculum {\"data\": FILE, \"steps\": N[, \"template\": T]}: the first N steps train on FILE (a path relative\n"
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
    if (ends_with(path, ".jsonl") || ends_with(path, ".json")) return rm_tdata_load_jsonl(d, path, tmpl, tok, 256, 257, seq);
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


static int cmd_train(int argc, char **argv) {
    const char *cfg_path = NULL;
    // -1: take the value from the config
    train_args a = {.steps = -1, .seed = -1, .batch = -1, .accum = -1, .seq = -1, .warmup = -1, .epochs = -1,
                    .lr = -1, .weight_decay = -1, .clip = -1};
    for (int i = 1; i < argc; i++) {
        if (cli_flag(argc, argv, &i, "--help", "-h")) { help(); return 0; }
        else if (train_args_match(argc, argv, &i, &a)) {}
        else if (cli_str(argc, argv, &i, "--config", "-c", &cfg_path)) {}
        else { fprintf(stderr, "ramole train: unknown argument '%s' (see --help)\n", argv[i]); return 2; }
    }
    const char *data = a.data, *out = a.out;
    if (!cfg_path || !data || !out) {
        fprintf(stderr, "ramole train: --config, --data and --out are required (see --help)\n");
        return 2;
    }
    rm_json *cfg;
    if (rm_json_parse_file(cfg_path, &cfg)) return cli_fail(cfg_path);
    int d = (int)rm_json_get_int(cfg, "n_embd", 256), H = (int)rm_json_get_int(cfg, "n_head", 8);
    int seq = a.seq > 0 ? (int)a.seq : (int)rm_json_get_int(cfg, "seq", 256);
    rm_synth_shape shape = {
        "train", (int)rm_json_get_int(cfg, "n_vocab", 258), d, (int)rm_json_get_int(cfg, "n_layer", 4), H,
        (int)rm_json_get_int(cfg, "n_head_kv", H), (int)rm_json_get_int(cfg, "n_ff", (8 * d / 3 + 31) / 32 * 32),
        (int)rm_json_get_int(cfg, "n_ctx", seq)};
    rm_train_params p;
    rm_train_default_params(&p);
    p.seq = seq;
    p.batch = a.batch > 0 ? (int)a.batch : (int)rm_json_get_int(cfg, "batch", 8);
    p.accum = a.accum > 0 ? (int)a.accum : (int)rm_json_get_int(cfg, "accum", 1);
    p.lr = a.lr > 0 ? (float)a.lr : (float)rm_json_get_num(cfg, "lr", 1e-3);
    p.min_lr_ratio = (float)rm_json_get_num(cfg, "min_lr_ratio", 0.1);
    p.weight_decay = a.weight_decay >= 0 ? (float)a.weight_decay : (float)rm_json_get_num(cfg, "weight_decay", 0.1);
    p.clip = a.clip >= 0 ? (float)a.clip : (float)rm_json_get_num(cfg, "clip", 1.0);
    p.seed = a.seed >= 0 ? (uint64_t)a.seed : (uint64_t)rm_json_get_int(cfg, "seed", 1);
    p.threads = (int)a.threads;
    long steps = a.steps, cfg_steps = rm_json_get_int(cfg, "steps", 0), bpe = rm_json_get_int(cfg, "bpe_merges", 0);
    // a curriculum: the first warm_steps steps on another text (a path relative to the config's folder)
    const rm_json *cur = rm_json_get(cfg, "curriculum");
    long warm_steps = rm_json_get_int(cur, "steps", 0);
    char warm_path[4096] = "";
    const char *wd = rm_json_get_str(cur, "data", NULL), *wt = rm_json_get_str(cur, "template", NULL);
    char warm_tmpl[1024] = "";
    int wt_ok = (wt || !rm_json_get(cur, "template")) &&
                (!wt || snprintf(warm_tmpl, sizeof warm_tmpl, "%s", wt) < (int)sizeof warm_tmpl);
    if (wd) {
        const char *slash = strrchr(cfg_path, '/');
        if (wd[0] == '/' || !slash) snprintf(warm_path, sizeof warm_path, "%s", wd);
        else snprintf(warm_path, sizeof warm_path, "%.*s/%s", (int)(slash - cfg_path), cfg_path, wd);
    }
    long warmup = a.warmup >= 0 ? a.warmup : rm_json_get_int(cfg, "warmup", -1);
    double epochs = a.epochs >= 0 ? a.epochs : rm_json_get_num(cfg, "epochs", 1.0);
    rm_json_free(cfg);
    if ((cur && (!wd || warm_steps <= 0)) || (!cur && warm_steps) || !wt_ok) {
        fprintf(stderr, "ramole train: %s: curriculum needs \"data\" and \"steps\" > 0 (and \"template\", if any, a string under 1024 bytes)\n",
                cfg_path);
        return 2;
    }
    if (bpe < 0 || bpe > 100000) {
        fprintf(stderr, "ramole train: %s: bpe_merges must be 0..100000\n", cfg_path);
        return 2;
    }
    if (shape.n_vocab < 258 || d <= 0 || H <= 0 || shape.n_head_kv <= 0 || H % shape.n_head_kv || d % H ||
        shape.n_layer <= 0 || shape.n_ff <= 0 || seq <= 1 || seq > shape.n_ctx || p.batch <= 0 || p.accum <= 0) {
        fprintf(stderr, "ramole train: %s: inconsistent shape or batch (n_vocab >= 258, n_embd %% n_head == 0, "
                        "n_head %% n_head_kv == 0, 1 < seq <= n_ctx)\n", cfg_path);
        return 2;
    }
    char *tmpl = NULL, init[4096], svg[4096];
    size_t tlen;
    if (a.template_path && rm_read_file(a.template_path, &tmpl, &tlen)) return cli_fail(a.template_path);
    snprintf(init, sizeof init, "%s.init.tmp", out);
    snprintf(svg, sizeof svg, "%.*s.loss.svg", (int)(strlen(out) - (ends_with(out, ".gguf") ? 5 : 0)), out);

    int rc = 1;
    rm_llama *m = NULL;
    rm_trainer *t = NULL;
    rm_tdata train = {0}, eval = {0}, warm = {0};
    rm_train_report rep = {0};
    // random init (uniform, 1/sqrt(fan_in)) and the byte-level vocabulary, via the synth writer;
    // with bpe_merges, the merges are learned from the data first and become tokens 258...
    char **merges = NULL;
    int n_merges = 0;
    if (bpe > 0) {
        rm_synth_shape bytes = shape;
        bytes.n_vocab = 258;
        if (rm_synth_write(&bytes, RM_TYPE_F32, p.seed, init, NULL, NULL) || learn_merges(init, data, (int)bpe, &merges, &n_merges)) {
            cli_fail("learning the BPE");
            goto done;
        }
        if (shape.n_vocab < 258 + n_merges) shape.n_vocab = 258 + n_merges;
        fprintf(stderr, "train: %d BPE merges learned from %s (vocabulary %d)\n", n_merges, data, shape.n_vocab);
    }
    if (rm_synth_write_bpe(&shape, (const char *const *)merges, n_merges, RM_TYPE_F32, p.seed, init, NULL, NULL) ||
        rm_llama_load(&m, init)) {
        cli_fail("init");
        goto done;
    }
    unlink(init);
    const rm_tokenizer *tok = n_merges ? m->tok : NULL;
    if (load_data(&train, data, tmpl, tok, seq)) { cli_fail(data); goto done; }
    if (a.eval && load_data(&eval, a.eval, tmpl, tok, seq)) { cli_fail(a.eval); goto done; }
    if (warm_path[0] && load_data(&warm, warm_path, warm_tmpl[0] ? warm_tmpl : tmpl, tok, seq)) { cli_fail(warm_path); goto done; }
    p.steps = steps > 0 ? (int)steps : cfg_steps > 0 ? (int)cfg_steps
                                                     : rm_train_steps_for_epochs(&train, p.batch, p.seq, p.accum, 1, epochs);
    p.warmup = warmup >= 0 ? (int)warmup : p.steps / 20;
    if (rm_trainer_create(&t, m, &p) || rm_trainer_full(t)) { cli_fail("trainer"); goto done; }
    if (a.resume && rm_trainer_load_checkpoint(t, a.resume)) { cli_fail(a.resume); goto done; }
    fprintf(stderr, "train: %zu parameters (%d layers, %d dims, %d heads/%d kv, ff %d, vocab %d), %d examples, %d steps of %d x %d x %d tokens\n",
            rm_trainer_n_trainable(t), shape.n_layer, d, H, shape.n_head_kv, shape.n_ff, shape.n_vocab, train.n, p.steps,
            p.accum, p.batch, p.seq);
    rm_train_run_opts o = {.steps = p.steps, .pack = 1, .eval_every = eval.n ? (p.steps + 9) / 10 : 0,
                           .eval_em_max = eval.n && train.ex[0].n_prompt > 1 ? 200 : 0, .checkpoint = a.checkpoint,
                           .save_every = (int)a.save_every, .progress = 1, .warm = warm.n ? &warm : NULL,
                           .warm_steps = (int)warm_steps};
    if (warm.n) {
        long n_prompt = 0, n_all = 0;
        for (int i = 0; i < warm.n; i++) n_prompt += warm.ex[i].n_prompt, n_all += warm.ex[i].n;
        fprintf(stderr, "train: the first %ld steps on %s (%d examples, %ld prompt and %ld target tokens)\n", warm_steps,
                warm_path, warm.n, n_prompt, n_all - n_prompt);
    }
    if (rm_train_run(t, &train, eval.n ? &eval : NULL, &o, &rep)) { cli_fail("training"); goto done; }
    if (rm_trainer_save_model(t, out)) { cli_fail(out); goto done; }
    if (rm_train_write_curve(&rep, svg, "training loss")) { cli_fail(svg); goto done; }
    char ev[48] = "";
    if (eval.n) snprintf(ev, sizeof ev, ", eval loss %.4f", rep.eval_loss);
    fprintf(stderr, "train: %d steps, loss %.4f -> %.4f%s, %.0f tokens/s; wrote %s and %s\n", rep.steps,
            rep.initial_loss, rep.final_loss, ev, rep.tokens_per_s, out, svg);
    if (a.json) {
        rm_sb sb;
        rm_sb_init(&sb);
        rm_train_report_json(&rep, (long)rm_trainer_n_trainable(t), &sb);
        printf("%s\n", sb.buf ? sb.buf : "{}");
        rm_sb_free(&sb);
    }
    rc = 0;
done:
    for (int i = 0; i < n_merges; i++) free(merges[i]);
    free(merges);
    rm_train_report_free(&rep);
    rm_trainer_free(t);
    rm_tdata_free(&train);
    rm_tdata_free(&eval);
    rm_tdata_free(&warm);
    rm_llama_free(m);
    free(tmpl);
    return rc;
}

RM_COMMAND(train, "train a small Llama-architecture model from scratch (byte-level)", cmd_train)
