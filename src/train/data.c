// data.c — training data: prompt templates, tokenized examples, packed
// micro-batches, held-out loss and exact-match accuracy.
#include "train/train_impl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/grow.h"
#include "base/file.h"
#include "base/json.h"
#include "lora/batch.h"

// ---------------------------------------------------------------- batches

int rm_tbatch_alloc(rm_tbatch *b, int B, int T) {
    memset(b, 0, sizeof *b);
    size_t N = (size_t)B * T;
    b->B = B;
    b->T = T;
    b->token = calloc(N, sizeof(int32_t));
    b->target = calloc(N, sizeof(int32_t));
    b->pos = calloc(N, sizeof(int32_t));
    b->start = calloc(N, sizeof(int32_t));
    if (!b->token || !b->target || !b->pos || !b->start) {
        rm_tbatch_free(b);
        return rm_errorf(RM_ENOMEM, "out of memory");
    }
    return RM_OK;
}

int rm_tbatch_alloc_sets(rm_tbatch *b, int K) {
    if (K < 1 || K > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "train: %d expert slots a row (1..%d)", K, RM_PLAN_MAX);
    size_t n = (size_t)b->B * b->T * K;
    int32_t *e = malloc(n * sizeof *e);
    if (!e) return rm_errorf(RM_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) e[i] = -1;
    free(b->exp);
    b->exp = e;
    b->K = K;
    return RM_OK;
}

void rm_tbatch_free(rm_tbatch *b) {
    free(b->token);
    free(b->target);
    free(b->pos);
    free(b->start);
    free(b->exp);
    memset(b, 0, sizeof *b);
}

long rm_tbatch_count(const rm_tbatch *b) {
    long n = 0;
    for (long r = 0; r < (long)b->B * b->T; r++) n += b->target[r] >= 0;
    return n;
}

// ---------------------------------------------------------------- examples

void rm_tdata_free(rm_tdata *d) {
    for (int i = 0; i < d->n; i++) {
        free(d->ex[i].ids);
        free(d->ex[i].inputs);
    }
    free(d->ex);
    for (int i = 0; i < d->n_tasks; i++) free(d->tasks[i]);
    free(d->tasks);
    memset(d, 0, sizeof *d);
}

// Room for one more example.
static int tdata_grow(rm_tdata *d) { return RM_GROW(d->ex, d->n, d->cap, 64); }

int rm_tdata_add(rm_tdata *d, const int32_t *ids, int n, int n_prompt) {
    if (n <= 0 || n_prompt < 0 || n_prompt > n)
        return rm_errorf(RM_EINVAL, "data: bad example (%d tokens, prompt %d)", n, n_prompt);
    int rc = tdata_grow(d);
    if (rc) return rc;
    rm_texample *e = &d->ex[d->n];
    memset(e, 0, sizeof *e);
    e->ids = malloc((size_t)n * sizeof(int32_t));
    if (!e->ids) return rm_errorf(RM_ENOMEM, "out of memory");
    memcpy(e->ids, ids, (size_t)n * sizeof(int32_t));
    e->n = n;
    e->n_prompt = n_prompt;
    e->task = -1;
    memset(e->set, 0xff, sizeof e->set); // -1: no expert
    d->n++;
    return RM_OK;
}

// The index of task name in d->tasks, added when absent (-1: out of memory).
static int task_index(rm_tdata *d, const char *name) {
    for (int i = 0; i < d->n_tasks; i++)
        if (!strcmp(d->tasks[i], name)) return i;
    char **nt = realloc(d->tasks, ((size_t)d->n_tasks + 1) * sizeof *nt);
    if (!nt) return -1;
    d->tasks = nt;
    if (!(nt[d->n_tasks] = strdup(name))) return -1;
    return d->n_tasks++;
}

int rm_tdata_task_count(const rm_tdata *d, const char *name) {
    int n = 0;
    for (int i = 0; i < d->n; i++) n += d->ex[i].task >= 0 && !strcmp(d->tasks[d->ex[i].task], name);
    return n;
}

int rm_tdata_split_spread(rm_tdata *d, rm_tdata *held, int n) {
    if (n <= 0) return RM_OK;
    if (n > d->n) n = d->n;
    int kept = 0, taken = 0, rc = RM_OK;
    held->has_eos = d->has_eos;
    held->eos = d->eos;
    held->set_k = d->set_k;
    for (int i = 0; i < d->n; i++) {
        rm_texample e = d->ex[i];
        // example i is held out when it is the first at or past (taken + 1/2) * d->n / n
        int take = !rc && taken < n && (2 * (long)i + 1) * n >= (2 * (long)taken + 1) * d->n;
        if (take && e.task >= 0 && (e.task = task_index(held, d->tasks[e.task])) < 0)
            rc = rm_errorf(RM_ENOMEM, "out of memory");
        if (take && !rc && !(rc = tdata_grow(held))) {
            held->ex[held->n++] = e;
            taken++;
        } else {
            d->ex[kept++] = d->ex[i];
        }
    }
    d->n = kept;
    return rc;
}

const char *const rm_alpaca_template =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{inputs}\n\n### Response:\n";

char *rm_template_render(const char *tmpl, const char *inputs) {
    const char *mark = "{inputs}";
    size_t ml = strlen(mark), il = strlen(inputs), n = 0;
    for (const char *p = strstr(tmpl, mark); p; p = strstr(p + ml, mark)) n++;
    size_t len = strlen(tmpl) + (n ? n * il - n * ml : il) + 1;
    char *out = malloc(len), *o = out;
    if (!out) {
        rm_errorf(RM_ENOMEM, "out of memory");
        return NULL;
    }
    const char *p = tmpl;
    for (const char *q; (q = strstr(p, mark)); p = q + ml) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, inputs, il);
        o += il;
    }
    strcpy(o, p);
    if (!n) strcat(o, inputs);
    return out;
}

int rm_tokenize_text(const rm_tokenizer *tok, const char *text, int32_t **ids, int *n) {
    size_t len = strlen(text);
    if (len > (1u << 28)) return rm_errorf(RM_EINVAL, "data: text of %zu bytes is too long", len);
    int cap = (int)len + 16;
    int32_t *buf = malloc((size_t)cap * sizeof(int32_t));
    if (!buf) return rm_errorf(RM_ENOMEM, "out of memory");
    int got;
    if (!tok) {
        for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)text[i];
        got = (int)len;
    } else {
        got = rm_tokenize(tok, text, len, 0, 0, buf, cap);
        if (got > cap) {
            int32_t *nb = realloc(buf, (size_t)got * sizeof(int32_t));
            if (!nb) {
                free(buf);
                return rm_errorf(RM_ENOMEM, "out of memory");
            }
            buf = nb;
            got = rm_tokenize(tok, text, len, 0, 0, buf, got);
        }
        if (got < 0) {
            free(buf);
            return got;
        }
    }
    *ids = buf;
    *n = got;
    return RM_OK;
}

// [bos] prompt target [eos], loss on target + eos; skipped (returns 1) when it cannot fit max_len.
static int add_pair(rm_tdata *d, const char *tmpl, const char *inputs, const char *targets, const rm_tokenizer *tok,
                    int32_t bos, int32_t eos, int max_len) {
    char *prompt = rm_template_render(tmpl ? tmpl : rm_alpaca_template, inputs);
    if (!prompt) return RM_ENOMEM;
    int32_t *p = NULL, *g = NULL;
    int np = 0, ng = 0;
    int rc = rm_tokenize_text(tok, prompt, &p, &np);
    free(prompt);
    if (!rc) rc = rm_tokenize_text(tok, targets, &g, &ng);
    int nb = bos >= 0, ne = eos >= 0;
    int32_t *ids = NULL;
    if (!rc && nb + ne + ng + 1 > max_len) rc = 1; // target alone does not fit: skip
    if (!rc) {
        int keep = np;
        if (nb + keep + ng + ne > max_len) keep = max_len - nb - ng - ne; // keep the prompt's end
        ids = malloc((size_t)(nb + keep + ng + ne) * sizeof(int32_t));
        if (!ids) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else {
            int n = 0;
            if (nb) ids[n++] = bos;
            memcpy(ids + n, p + (np - keep), (size_t)keep * sizeof(int32_t));
            n += keep;
            int n_prompt = n;
            memcpy(ids + n, g, (size_t)ng * sizeof(int32_t));
            n += ng;
            if (ne) ids[n++] = eos;
            rc = rm_tdata_add(d, ids, n, n_prompt);
        }
    }
    free(ids);
    free(p);
    free(g);
    return rc;
}

typedef struct load_ctx {
    rm_tdata *d;
    const char *path, *tmpl;
    const rm_tokenizer *tok;
    int32_t bos, eos;
    int max_len, skipped;
    int tasks;               // mixed-task data: "task" required, kept with the inputs
    const char *const *keep; // tasks to take (NULL: all)
    int n_keep;
} load_ctx;

static int add_json_example(void *user, const rm_json *o, long index) {
    load_ctx *c = user;
    const char *in = rm_json_get_str(o, "inputs", NULL), *out = rm_json_get_str(o, "targets", NULL);
    if (!in || !out)
        return rm_errorf(RM_EFORMAT, "%s: example %ld has no string \"inputs\" and \"targets\"", c->path, index);
    const char *task = c->tasks || c->keep ? rm_json_get_str(o, "task", NULL) : NULL;
    if (c->tasks && !task) return rm_errorf(RM_EFORMAT, "%s: example %ld has no string \"task\"", c->path, index);
    int wanted = !c->keep;
    for (int i = 0; !wanted && task && i < c->n_keep; i++) wanted = !strcmp(c->keep[i], task);
    if (!wanted) return RM_OK;
    int n0 = c->d->n, rc = add_pair(c->d, c->tmpl, in, out, c->tok, c->bos, c->eos, c->max_len);
    if (rc == 1) {
        c->skipped++;
        return RM_OK;
    }
    if (rc || !c->tasks || c->d->n == n0) return rc;
    rm_texample *e = &c->d->ex[c->d->n - 1];
    if ((e->task = task_index(c->d, task)) < 0 || !(e->inputs = strdup(in)))
        return rm_errorf(RM_ENOMEM, "out of memory");
    return RM_OK;
}

static int load_records(load_ctx *c) {
    c->d->has_eos = c->eos >= 0;
    c->d->eos = c->eos;
    return rm_json_each_record(c->path, add_json_example, c);
}

int rm_tdata_load_jsonl_tasks(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int32_t bos,
                              int32_t eos, int max_len, const char *const *tasks, int n_tasks) {
    load_ctx c = {d, path, tmpl, tok, bos, eos, max_len, 0, 0, n_tasks ? tasks : NULL, n_tasks};
    int rc = load_records(&c);
    if (!rc && d->n == 0)
        rc = rm_errorf(RM_EFORMAT, "%s: no usable examples (%d too long for %d tokens%s)", path, c.skipped, max_len,
                       n_tasks ? "; the others of other tasks" : "");
    return rc;
}

int rm_tdata_load_jsonl(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int32_t bos,
                        int32_t eos, int max_len) {
    return rm_tdata_load_jsonl_tasks(d, path, tmpl, tok, bos, eos, max_len, NULL, 0);
}
int rm_tdata_load_tasks(rm_tdata *d, const char *path, const char *tmpl, const rm_tokenizer *tok, int32_t bos,
                        int32_t eos, int max_len, const char *const *keep, int n_keep) {
    load_ctx c = {d, path, tmpl, tok, bos, eos, max_len, 0, 1, keep, n_keep};
    return load_records(&c);
}

int rm_tdata_retrieve(rm_tdata *d, int k, rm_tdata_retrieve_fn fn, void *user) {
    if (k < 1 || k > RM_PLAN_MAX) return rm_errorf(RM_EINVAL, "data: %d experts an example (1..%d)", k, RM_PLAN_MAX);
    int idx[RM_PLAN_MAX];
    for (int i = 0; i < d->n; i++) {
        rm_texample *e = &d->ex[i];
        if (e->task < 0 || !e->inputs)
            return rm_errorf(RM_EINVAL, "data: example %d has no task and inputs to retrieve for", i);
        for (int v = 0; v < 2; v++) {
            int n = 0, rc = fn(user, e->inputs, v ? d->tasks[e->task] : NULL, k, idx, &n);
            if (rc) return rc;
            if (n < 0 || n > k) return rm_errorf(RM_EINVAL, "data: retrieval returned %d experts for %d", n, k);
            for (int j = 0; j < n; j++)
                if (idx[j] < 0) return rm_errorf(RM_EINVAL, "data: retrieval returned expert %d", idx[j]);
            for (int j = 0; j < RM_PLAN_MAX; j++) e->set[v][j] = j < n ? idx[j] : -1;
        }
    }
    d->set_k = k;
    return RM_OK;
}

int rm_tdata_load_text(rm_tdata *d, const char *path, const rm_tokenizer *tok, int32_t bos, int max_len) {
    char *text;
    size_t len;
    int rc = rm_read_file(path, &text, &len);
    if (rc) return rc;
    int32_t *ids;
    int n;
    rc = rm_tokenize_text(tok, text, &ids, &n);
    free(text);
    if (rc) return rc;
    int nb = bos >= 0, chunk = max_len - nb;
    if (chunk < 2) {
        free(ids);
        return rm_errorf(RM_EINVAL, "data: sequence length %d too short", max_len);
    }
    int32_t *buf = malloc((size_t)max_len * sizeof(int32_t));
    if (!buf) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int s = 0; !rc && s + 1 < n; s += chunk) {
        int k = n - s < chunk ? n - s : chunk;
        if (nb) buf[0] = bos;
        memcpy(buf + nb, ids + s, (size_t)k * sizeof(int32_t));
        rc = rm_tdata_add(d, buf, k + nb, nb);
    }
    free(buf);
    free(ids);
    if (!rc && d->n == 0) rc = rm_errorf(RM_EFORMAT, "%s: no text", path);
    return rc;
}

// ---------------------------------------------------------------- batch filling

// Rows [row0, row0+k) get example e from position 0, and its expert set
// set[which] when the batch has sets (slots beyond d's set_k stay empty).
static void place(rm_tbatch *b, int row0, const rm_texample *e, int k, int which) {
    for (int i = 0; i < k; i++) {
        int r = row0 + i;
        b->token[r] = e->ids[i];
        b->pos[r] = i;
        b->start[r] = row0;
        b->target[r] = i + 1 < e->n && i + 1 >= e->n_prompt ? e->ids[i + 1] : -1;
        for (int j = 0; b->exp && j < b->K; j++) b->exp[(size_t)r * b->K + j] = j < RM_PLAN_MAX ? e->set[which][j] : -1;
    }
}

// Padding rows: attend to themselves, no loss, no experts.
static void pad_rows(rm_tbatch *b, int r0, int r1) {
    for (int r = r0; r < r1; r++) {
        b->token[r] = 0;
        b->pos[r] = 0;
        b->start[r] = r;
        b->target[r] = -1;
        for (int j = 0; b->exp && j < b->K; j++) b->exp[(size_t)r * b->K + j] = -1;
    }
}

int rm_tbatch_fill(rm_tbatch *b, const rm_tdata *d, int *order, int *cursor, int pack, uint64_t *rng, int *epoch) {
    return rm_tbatch_fill_dropout(b, d, order, cursor, pack, rng, epoch, 0.0f, NULL);
}

int rm_tbatch_fill_dropout(rm_tbatch *b, const rm_tdata *d, int *order, int *cursor, int pack, uint64_t *rng,
                           int *epoch, float drop, uint64_t *drop_rng) {
    int used = 0;
    for (int s = 0; s < b->B; s++) {
        int o = 0, row0 = s * b->T;
        do {
            const rm_texample *e = &d->ex[order[*cursor]];
            if (o > 0 && o + e->n > b->T) break;
            int k = e->n < b->T - o ? e->n : b->T - o;
            int which = d->set_k && b->exp && drop_rng ? rm_rng_uniform(drop_rng) < drop : 0;
            place(b, row0 + o, e, k, which);
            o += k;
            used++;
            if (++*cursor == d->n) {
                *cursor = 0;
                if (epoch) (*epoch)++;
                if (rng) rm_shuffle(order, d->n, rng);
            }
        } while (pack && o < b->T && used < d->n);
        pad_rows(b, row0 + o, row0 + b->T);
    }
    return used;
}

void rm_trainer_reset_order(rm_trainer *t) {
    free(t->order);
    t->order = NULL;
    t->n_order = t->cursor = 0;
}

int rm_trainer_next_batch(rm_trainer *t, const rm_tdata *d, rm_tbatch *b, int pack, int *epoch) {
    if (d->n == 0) return rm_errorf(RM_EINVAL, "data: no examples");
    if (!t->order || t->n_order != d->n) {
        free(t->order);
        t->order = malloc((size_t)d->n * sizeof(int));
        if (!t->order) return rm_errorf(RM_ENOMEM, "out of memory");
        t->n_order = d->n;
        for (int i = 0; i < d->n; i++) t->order[i] = i;
        rm_shuffle(t->order, d->n, &t->rng);
        t->cursor = 0;
    }
    if (d->set_k && !b->exp) return rm_errorf(RM_EINVAL, "train: the data has expert sets, the batch no room for them");
    if (d->set_k > b->K && b->exp)
        return rm_errorf(RM_EINVAL, "train: %d experts an example, the batch has %d slots", d->set_k, b->K);
    rm_tbatch_fill_dropout(b, d, t->order, &t->cursor, pack, &t->rng, &t->epoch, t->p.lora_dropout, &t->drop_rng);
    if (epoch) *epoch = t->epoch;
    return RM_OK;
}

// ---------------------------------------------------------------- evaluation

int rm_trainer_eval_loss(rm_trainer *t, const rm_tdata *d, double *loss) {
    return rm_trainer_eval_loss_set(t, d, 0, loss);
}

int rm_trainer_eval_loss_set(rm_trainer *t, const rm_tdata *d, int which, double *loss) {
    if (which < 0 || which > 1) return rm_errorf(RM_EINVAL, "train: expert set %d (0 or 1)", which);
    rm_tbatch b;
    int rc = rm_tbatch_alloc(&b, t->p.batch, t->p.seq);
    if (!rc && d->set_k) rc = rm_tbatch_alloc_sets(&b, d->set_k > t->router_k ? d->set_k : t->router_k);
    if (rc) {
        rm_tbatch_free(&b);
        return rc;
    }
    double total = 0.0;
    long count = 0;
    for (int i = 0; !rc && i < d->n;) {
        for (int s = 0; s < b.B; s++, i++) {
            if (i >= d->n) {
                pad_rows(&b, s * b.T, (s + 1) * b.T);
                continue;
            }
            int k = d->ex[i].n < b.T ? d->ex[i].n : b.T;
            place(&b, s * b.T, &d->ex[i], k, which);
            pad_rows(&b, s * b.T + k, (s + 1) * b.T);
        }
        double l;
        rc = rm_trainer_forward(t, &b, 1.0f, 0, &l, NULL);
        total += l;
        count += rm_tbatch_count(&b);
    }
    rm_tbatch_free(&b);
    *loss = count ? total / (double)count : 0.0;
    return rc;
}

int rm_trainer_eval_em(rm_trainer *t, const rm_tdata *d, int max_examples, double *em) {
    rm_llama *m = t->m;
    int n = max_examples > 0 && max_examples < d->n ? max_examples : d->n;
    enum { S = 32 }; // sequences decoded together
    int max_len = 0;
    for (int i = 0; i < n; i++) max_len = d->ex[i].n > max_len ? d->ex[i].n : max_len;
    rm_kvcache kv;
    int rc = rm_kvcache_init(&kv, m->hp.n_layer, S, max_len + 8, m->hp.n_head_kv * m->hp.head_dim);
    if (rc) return rc;
    size_t rows = (size_t)S * (max_len + 8);
    int32_t *tok = malloc(rows * sizeof(int32_t)), *pos = malloc(rows * sizeof(int32_t)),
            *slot = malloc(rows * sizeof(int32_t));
    uint8_t *want = malloc(rows);
    float *logits = malloc((size_t)S * m->hp.n_vocab * sizeof(float));
    int32_t *gen = malloc((size_t)S * (max_len + 8) * sizeof(int32_t));
    int *ngen = calloc(S, sizeof(int)), *done = calloc(S, sizeof(int));
    // the adapters as the server applies them: an rm_lora through lora/batch's
    // hook, one plan for all (LoRA, fixed-set router) or a router plan per
    // example over its own experts (expert sets)
    rm_lora *lora = NULL;
    rm_lora_plan plan = {0}, own[S], *gplans = NULL; // gate mode: a plan per slot (SMEAR keeps each sequence's sums)
    rm_gate *gate = NULL;
    const void *seq_plan[S];
    rm_lora_batch *lb = NULL;
    rm_linear_hook hook = {0};
    const void **plans = malloc(rows * sizeof(void *));
    int per_example = t->rt && d->set_k;
    memset(own, 0, sizeof own);
    int rc_l = t->gate        ? train_gate_plans(t, S, &gate, &gplans)
               : t->lora_rank ? rm_trainer_export_lora(t, &lora)
                              : RM_OK;
    if (!rc_l && t->rt && !per_example && t->n_experts != t->router_k)
        rc_l = rm_errorf(RM_EINVAL, "eval: the examples have no expert sets (the router's table has %d experts)",
                         t->n_experts);
    if (!rc_l && lora && t->router_k && !per_example)
        rc_l = rm_lora_plan_init_router(&plan, t->router_k, t->experts, lora);
    else if (!rc_l && lora && !t->router_k) rc_l = rm_lora_plan_init(&plan, RM_COMPOSE_SELECTION, 1, &lora, NULL, NULL);
    if (!rc_l && (lora || gplans)) {
        lb = rm_lora_batch_new(t->tp);
        if (lb) hook = rm_lora_batch_hook(lb);
        else rc_l = rm_errorf(RM_ENOMEM, "out of memory");
    }
    if (!rc) rc = rc_l;
    int correct = 0;
    if (!rc && (!tok || !pos || !slot || !want || !logits || !gen || !ngen || !done || !plans))
        rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int s = 0; s < S; s++)
        seq_plan[s] = gplans ? (const void *)&gplans[s] : lora && !per_example ? (const void *)&plan : NULL;
    for (int c0 = 0; !rc && c0 < n; c0 += S) {
        int c1 = c0 + S < n ? c0 + S : n, nr = 0;
        for (int s = 0; !rc && per_example && lora && s < c1 - c0; s++) {
            const rm_texample *e = &d->ex[c0 + s];
            rm_lora *ex[RM_PLAN_MAX];
            int k = 0;
            for (int j = 0; j < RM_PLAN_MAX; j++)
                if (e->set[0][j] >= 0 && e->set[0][j] < t->n_experts) ex[k++] = t->experts[e->set[0][j]];
            rm_lora_plan_free(&own[s]);
            seq_plan[s] = NULL; // no expert: the base alone
            if (k && !(rc = rm_lora_plan_init_router(&own[s], k, ex, lora))) seq_plan[s] = &own[s];
        }
        for (int s = 0; s < c1 - c0; s++) {
            rm_kvcache_clear_slot(&kv, s);
            const rm_texample *e = &d->ex[c0 + s];
            for (int i = 0; i < e->n_prompt; i++, nr++) {
                plans[nr] = seq_plan[s];
                tok[nr] = e->ids[i];
                pos[nr] = i;
                slot[nr] = s;
                want[nr] = i == e->n_prompt - 1;
            }
            ngen[s] = 0;
            done[s] = e->n_prompt == 0;
        }
        rm_batch b = {.n = nr, .token = tok, .pos = pos, .slot = slot, .want = want, .plan = plans};
        if (nr == 0) continue;
        rc = rm_llama_forward(m, &kv, t->tp, &b, hook.apply ? &hook : NULL, logits);
        if (!rc && lb) rc = rm_lora_batch_status(lb);
        for (int step = 0; !rc; step++) {
            // pick the argmax of each live sequence, then feed the picks
            int k = 0;
            nr = 0;
            for (int s = 0; s < c1 - c0; s++) {
                if (done[s]) continue;
                const rm_texample *e = &d->ex[c0 + s];
                const float *z = logits + (size_t)k++ * m->hp.n_vocab;
                int best = 0;
                for (int v = 1; v < m->hp.n_vocab; v++) best = z[v] > z[best] ? v : best;
                int limit = e->n - e->n_prompt + 4;
                if ((d->has_eos && best == d->eos) || (m->tok && rm_tokenizer_is_eog(m->tok, best))) {
                    done[s] = 1;
                    continue;
                }
                gen[s * (max_len + 8) + ngen[s]++] = best;
                if (ngen[s] >= limit || e->n_prompt + ngen[s] >= max_len + 8) {
                    done[s] = 1;
                    continue;
                }
                plans[nr] = seq_plan[s];
                tok[nr] = best;
                pos[nr] = e->n_prompt + ngen[s] - 1;
                slot[nr] = s;
                want[nr] = 1;
                nr++;
            }
            if (nr == 0) break;
            b.n = nr;
            rc = rm_llama_forward(m, &kv, t->tp, &b, hook.apply ? &hook : NULL, logits);
            if (!rc && lb) rc = rm_lora_batch_status(lb);
        }
        for (int s = 0; !rc && s < c1 - c0; s++) {
            const rm_texample *e = &d->ex[c0 + s];
            int tl = e->n - e->n_prompt - (d->has_eos ? 1 : 0); // the target without its EOS
            correct +=
                ngen[s] == tl && !memcmp(gen + s * (max_len + 8), e->ids + e->n_prompt, (size_t)tl * sizeof(int32_t));
        }
    }
    free(tok);
    free(pos);
    free(slot);
    free(want);
    free(logits);
    free(gen);
    free(ngen);
    free(done);
    free(plans);
    if (lb) rm_lora_batch_free(lb);
    for (int s = 0; s < S; s++) rm_lora_plan_free(&own[s]);
    train_gate_plans_free(gate, gplans, S);
    if (lora) {
        if (plan.n) rm_lora_plan_free(&plan);
        rm_lora_free(lora);
    }
    rm_kvcache_free(&kv);
    *em = n ? (double)correct / n : 0.0;
    return rc;
}
