// lorahub.c — see lorahub.h.
#include "eval/lorahub.h"
#include "base/cmaes.h"
#include "base/err.h"
#include "base/json.h"
#include "lora/batch.h"
#include "lora/compose.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rm_lorahub_params rm_lorahub_default_params(void) {
    return (rm_lorahub_params){
        .n_examples = 5, .n_candidates = 20, .iterations = 40, .l1 = 0.05, .sigma = 0.5, .bound = 1.5, .seed = 1};
}

// ---------------------------------------------------------------- examples

typedef struct pairs {
    char **in, **out;
    int n, cap;
} pairs;

static void pairs_free(pairs *p) {
    for (int i = 0; i < p->n; i++) {
        free(p->in[i]);
        free(p->out[i]);
    }
    free(p->in);
    free(p->out);
}

static int add_record(void *user, const rm_json *o, long index) {
    pairs *p = user;
    const char *in = rm_json_get_str(o, "inputs", NULL), *out = rm_json_get_str(o, "targets", NULL);
    if (!in || !out) return rm_errorf(RM_EFORMAT, "example %ld has no string \"inputs\" and \"targets\"", index);
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        char **a = realloc(p->in, (size_t)cap * sizeof *a);
        if (a) p->in = a;
        char **b = realloc(p->out, (size_t)cap * sizeof *b);
        if (b) p->out = b;
        if (!a || !b) return rm_errorf(RM_ENOMEM, "out of memory");
        p->cap = cap;
    }
    p->in[p->n] = strdup(in);
    p->out[p->n] = strdup(out);
    p->n++;
    return p->in[p->n - 1] && p->out[p->n - 1] ? RM_OK : rm_errorf(RM_ENOMEM, "out of memory");
}

// [bos] prompt target [eos] of one pair, as `lora train` lays it out (prompt cut to keep its end).
static int add_example(rm_tdata *d, const rm_llama *m, const char *tmpl, const char *in, const char *target,
                       int max_len) {
    int32_t bos = m->add_bos ? m->bos : -1, eos = m->tok ? rm_tokenizer_eos(m->tok) : -1, *p = NULL, *t = NULL,
            *ids = NULL;
    int np = 0, nt = 0, nb = bos >= 0, ne = eos >= 0;
    char *prompt = rm_template_render(tmpl ? tmpl : rm_alpaca_template, in);
    int rc = prompt ? rm_tokenize_text(m->tok, prompt, &p, &np) : RM_ENOMEM;
    if (!rc) rc = rm_tokenize_text(m->tok, target, &t, &nt);
    int keep = np < max_len - nb - nt - ne ? np : max_len - nb - nt - ne;
    if (!rc && keep < 1)
        rc = rm_errorf(RM_EINVAL, "a target of %d tokens leaves no room for its prompt in %d", nt, max_len);
    if (!rc && !(ids = malloc((size_t)(nb + keep + nt + ne) * sizeof *ids))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (!rc) {
        if (nb) ids[0] = bos;
        memcpy(ids + nb, p + np - keep, (size_t)keep * sizeof *ids);
        memcpy(ids + nb + keep, t, (size_t)nt * sizeof *ids);
        if (ne) ids[nb + keep + nt] = eos;
        rc = rm_tdata_add(d, ids, nb + keep + nt + ne, nb + keep);
    }
    if (!rc && !(d->ex[d->n - 1].inputs = strdup(in))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    free(prompt);
    free(p);
    free(t);
    free(ids);
    return rc;
}

int rm_lorahub_examples(const char *path, const char *tmpl, const rm_llama *m, int n, uint64_t seed, int max_len,
                        rm_tdata *out) {
    memset(out, 0, sizeof *out);
    if (n < 1) return rm_errorf(RM_EINVAL, "lorahub: %d examples (1 or more)", n);
    pairs all = {0};
    int rc = rm_json_each_record(path, add_record, &all);
    if (!rc && all.n == 0) rc = rm_errorf(RM_EFORMAT, "%s: no examples", path);
    int *order = rc ? NULL : malloc((size_t)all.n * sizeof *order);
    if (!rc && !order) rc = rm_errorf(RM_ENOMEM, "out of memory");
    if (!rc) {
        for (int i = 0; i < all.n; i++) order[i] = i;
        uint64_t rng = seed;
        rm_shuffle(order, all.n, &rng);
        out->eos = m->tok ? rm_tokenizer_eos(m->tok) : -1;
        out->has_eos = out->eos >= 0;
    }
    for (int i = 0; !rc && i < n && i < all.n; i++)
        if ((rc = add_example(out, m, tmpl, all.in[order[i]], all.out[order[i]], max_len)))
            rm_error_prefix(rc, "%s: example %d", path, order[i] + 1);
    free(order);
    pairs_free(&all);
    if (rc) rm_tdata_free(out);
    return rc;
}

// ---------------------------------------------------------------- candidates

void rm_lorahub_free_names(char **names, int n) {
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
}

int rm_lorahub_candidates(rm_pool *pool, const char *const *inputs, int n_inputs, int n, const char *const *exclude,
                          int n_exclude, char ***names, int *n_out) {
    *names = NULL;
    *n_out = 0;
    rm_adapter_info *list = NULL;
    int n_list = 0, rc = rm_pool_list(pool, &list, &n_list);
    if (rc) return rc;
    double *score = calloc((size_t)n_list + 1, sizeof *score);
    int *order = malloc(((size_t)n_list + 1) * sizeof *order);
    rm_hit *hits = malloc(((size_t)n_list + 1) * sizeof *hits);
    if (!score || !order || !hits) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int q = 0; !rc && q < n_inputs; q++) {
        int n_hits = 0;
        if ((rc = rm_pool_search(pool, inputs[q], n_list, exclude, n_exclude, hits, &n_hits))) break;
        for (int r = 0; r < n_hits; r++)
            for (int i = 0; i < n_list; i++)
                if (list[i].id == hits[r].id) score[i] += 1.0 / (60.0 + r + 1);
    }
    // rank the adapters with weights that some search returned (ties: pool order)
    int m = 0;
    for (int i = 0; !rc && i < n_list; i++)
        if (score[i] > 0 && list[i].weights && *list[i].weights) order[m++] = i;
    for (int i = 1; i < m; i++)
        for (int j = i; j > 0 && score[order[j]] > score[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    if (m > n) m = n;
    if (!rc && !(*names = calloc((size_t)m + 1, sizeof **names))) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < m; i++)
        if (!((*names)[i] = strdup(list[order[i]].name))) rc = rm_errorf(RM_ENOMEM, "out of memory");
        else *n_out = i + 1;
    if (rc) {
        rm_lorahub_free_names(*names, *n_out);
        *names = NULL;
        *n_out = 0;
    }
    free(score);
    free(order);
    free(hits);
    rm_pool_free_list(list, n_list);
    return rc;
}

// ---------------------------------------------------------------- the objective

enum { ROW_BUDGET = 2048 }; // rows per forward pass (whole sequences; one longer sequence runs alone)

struct rm_lorahub {
    rm_llama *m;
    rm_threadpool *tp;
    const rm_tdata *ex;
    int n;           // candidates
    rm_lora **cands; // [n] not owned
    rm_lora_batch *lb;
    rm_linear_hook hook;
    rm_kvcache kv; // kv.n_slots sequences of up to kv.n_ctx positions
    int32_t *tok, *pos, *slot;
    uint8_t *want;
    const void **plans;
    float *logits; // [cap_rows][n_vocab]
    int cap_rows;
    long n_targets; // target tokens over the examples
};

void rm_lorahub_free(rm_lorahub *h) {
    if (!h) return;
    rm_lora_batch_free(h->lb);
    rm_kvcache_free(&h->kv);
    free(h->cands);
    free(h->tok);
    free(h->pos);
    free(h->slot);
    free(h->want);
    free(h->plans);
    free(h->logits);
    free(h);
}

// Room for rows rows and slots sequences of n_ctx positions.
static int ensure(rm_lorahub *h, int rows, int slots, int n_ctx) {
    if (rows > h->cap_rows) {
        size_t r = (size_t)rows;
        free(h->tok), free(h->pos), free(h->slot), free(h->want), free(h->plans), free(h->logits);
        h->tok = malloc(r * sizeof *h->tok);
        h->pos = malloc(r * sizeof *h->pos);
        h->slot = malloc(r * sizeof *h->slot);
        h->want = malloc(r);
        h->plans = malloc(r * sizeof *h->plans);
        h->logits = malloc(r * (size_t)h->m->hp.n_vocab * sizeof *h->logits);
        h->cap_rows = rows;
        if (!h->tok || !h->pos || !h->slot || !h->want || !h->plans || !h->logits) {
            h->cap_rows = 0;
            return rm_errorf(RM_ENOMEM, "lorahub: out of memory");
        }
    }
    if (slots > h->kv.n_slots || n_ctx > h->kv.n_ctx) {
        rm_kvcache_free(&h->kv);
        memset(&h->kv, 0, sizeof h->kv);
        const rm_llama_hparams *hp = &h->m->hp;
        return rm_kvcache_init(&h->kv, hp->n_layer, slots, n_ctx, hp->n_head_kv * hp->head_dim);
    }
    return RM_OK;
}

int rm_lorahub_new(rm_lorahub **out, rm_llama *m, rm_threadpool *tp, const rm_tdata *examples, int n,
                   rm_lora *const *cands) {
    *out = NULL;
    if (n < 1 || n > RM_CMAES_MAX_DIM)
        return rm_errorf(RM_EINVAL, "lorahub: %d candidates (1..%d)", n, RM_CMAES_MAX_DIM);
    if (!examples || examples->n < 1) return rm_errorf(RM_EINVAL, "lorahub: no examples");
    rm_lorahub *h = calloc(1, sizeof *h);
    if (!h) return rm_errorf(RM_ENOMEM, "out of memory");
    h->m = m, h->tp = tp, h->ex = examples, h->n = n;
    int rc = RM_OK;
    for (int e = 0; !rc && e < examples->n; e++) {
        const rm_texample *x = &examples->ex[e];
        if (x->n_prompt < 1 || x->n <= x->n_prompt)
            rc = rm_errorf(RM_EINVAL, "lorahub: example %d has no prompt or no target", e + 1);
        h->n_targets += x->n - x->n_prompt;
    }
    if (!rc && (!(h->cands = malloc((size_t)n * sizeof *h->cands)) || !(h->lb = rm_lora_batch_new(tp))))
        rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < n; i++) {
        h->cands[i] = cands[i];
        if (cands[i]->base != m)
            rc = rm_errorf(RM_EMISMATCH, "lorahub: candidate %s is not bound to the model", cands[i]->path);
    }
    if (rc) {
        rm_lorahub_free(h);
        return rc;
    }
    h->hook = rm_lora_batch_hook(h->lb);
    *out = h;
    return RM_OK;
}

// Sum over the target tokens of -log softmax(logits)[target], of the wanted
// rows [0, n_rows) of the last forward pass, added to loss[point of the row].
static void add_cross_entropy(const rm_lorahub *h, int n_rows, const int *row_point, double *loss) {
    int V = h->m->hp.n_vocab, k = 0;
    for (int r = 0; r < n_rows; r++) {
        if (!h->want[r]) continue;
        const float *z = h->logits + (size_t)k++ * V;
        int32_t target = h->tok[r + 1]; // the next row of the same sequence
        double mx = z[0], s = 0;
        for (int v = 1; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
        loss[row_point[r]] += mx + log(s) - z[target];
    }
}

int rm_lorahub_objective(rm_lorahub *h, int n_points, const double *w, double l1, double *f) {
    int n = h->n, n_ex = h->ex->n, rc = RM_OK, max_len = 0;
    for (int e = 0; e < n_ex; e++) max_len = h->ex->ex[e].n > max_len ? h->ex->ex[e].n : max_len;
    rm_lora **fused = calloc((size_t)n_points, sizeof *fused);
    rm_lora_plan *plans = calloc((size_t)n_points, sizeof *plans);
    double *ce = calloc((size_t)n_points, sizeof *ce);
    int *row_point = malloc((size_t)(ROW_BUDGET > max_len ? ROW_BUDGET : max_len) * sizeof *row_point);
    float *wf = malloc((size_t)n * sizeof *wf);
    if (!fused || !plans || !ce || !row_point || !wf) rc = rm_errorf(RM_ENOMEM, "out of memory");
    for (int p = 0; !rc && p < n_points; p++) {
        for (int i = 0; i < n; i++) wf[i] = (float)w[(size_t)p * n + i];
        rc = rm_lora_fuse(&fused[p], n, h->cands, wf);
        if (!rc) rc = rm_lora_plan_init(&plans[p], RM_COMPOSE_SELECTION, 1, &fused[p], NULL, NULL);
    }
    // sequences (point p, example e) in order, packed whole into forward passes of up to
    // ROW_BUDGET rows (a longer one runs alone). Every token of a sequence is a row, so the
    // target of a wanted row r is the next row's token; the last row is wanted by none.
    int total = n_points * n_ex, next = 0;
    while (!rc && next < total) {
        int rows = 0, seqs = 0;
        while (next + seqs < total) {
            int len = h->ex->ex[(next + seqs) % n_ex].n;
            if (seqs > 0 && rows + len > ROW_BUDGET) break;
            rows += len, seqs++;
        }
        if ((rc = ensure(h, rows, seqs, max_len))) break;
        int r = 0;
        for (int s = 0; s < seqs; s++) {
            int q = next + s, p = q / n_ex;
            const rm_texample *x = &h->ex->ex[q % n_ex];
            rm_kvcache_clear_slot(&h->kv, s);
            for (int j = 0; j < x->n; j++, r++) {
                h->tok[r] = x->ids[j];
                h->pos[r] = j;
                h->slot[r] = s;
                h->want[r] = j >= x->n_prompt - 1 && j < x->n - 1;
                h->plans[r] = &plans[p];
                row_point[r] = p;
            }
        }
        rm_batch b = {r, h->tok, h->pos, h->slot, h->want, h->plans};
        rc = rm_llama_forward(h->m, &h->kv, h->tp, &b, &h->hook, h->logits);
        if (!rc) rc = rm_lora_batch_status(h->lb);
        if (!rc) add_cross_entropy(h, r, row_point, ce);
        next += seqs;
    }
    for (int p = 0; !rc && p < n_points; p++) {
        double a = 0;
        for (int i = 0; i < n; i++) a += fabs((double)(float)w[(size_t)p * n + i]);
        f[p] = ce[p] / (double)h->n_targets + l1 * a;
    }
    for (int p = 0; plans && p < n_points; p++) rm_lora_plan_free(&plans[p]);
    for (int p = 0; fused && p < n_points; p++) rm_lora_free(fused[p]);
    free(fused);
    free(plans);
    free(ce);
    free(row_point);
    free(wf);
    return rc;
}

// ---------------------------------------------------------------- the search

typedef struct search_ctx {
    rm_lorahub *h;
    double l1;
} search_ctx;

static int search_fn(void *user, int n, int dim, const double *x, double *fx) {
    search_ctx *c = user;
    (void)dim;
    return rm_lorahub_objective(c->h, n, x, c->l1, fx);
}

int rm_lorahub_search(rm_lorahub *h, const rm_lorahub_params *p, rm_lorahub_result *res) {
    memset(res, 0, sizeof *res);
    if (p->iterations < 1 || !(p->bound > 0) || !(p->sigma > 0) || !(p->l1 >= 0))
        return rm_errorf(RM_EINVAL, "lorahub: %d iterations, bound %g, sigma %g, l1 %g", p->iterations, p->bound,
                         p->sigma, p->l1);
    int n = h->n;
    double *x0 = malloc((size_t)n * sizeof *x0), *best = malloc((size_t)n * sizeof *best);
    res->w = malloc((size_t)n * sizeof *res->w);
    int rc = x0 && best && res->w ? RM_OK : rm_errorf(RM_ENOMEM, "out of memory");
    if (!rc) {
        for (int i = 0; i < n; i++) x0[i] = 1.0 / n;
        rm_cmaes_params cp = rm_cmaes_default_params();
        cp.budget = p->iterations, cp.sigma = p->sigma, cp.lo = -p->bound, cp.hi = p->bound, cp.seed = p->seed;
        search_ctx c = {h, p->l1};
        rm_cmaes_result cr;
        rc = rm_cmaes_minimize(n, x0, &cp, search_fn, &c, best, &cr);
        res->f0 = cr.f0, res->f = cr.best_f, res->evaluations = cr.evaluations;
        for (int i = 0; !rc && i < n; i++) res->w[i] = (float)best[i];
    }
    free(x0);
    free(best);
    if (rc) rm_lorahub_result_free(res);
    return rc;
}

void rm_lorahub_result_free(rm_lorahub_result *r) {
    free(r->w);
    memset(r, 0, sizeof *r);
}
