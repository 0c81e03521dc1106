// proto.c — see proto.h.
#include "retrieve/proto.h"
#include "base/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rm_proto_params rm_proto_default_params(void) {
    return (rm_proto_params){.n = 1, .mix = 1.0f, .tau = 0.0f, .min_size = 1, .iters = 20};
}

int rm_proto_on(const rm_proto_params *p) { return p->n > 1 && p->mix > 0; }
int rm_proto_skip_mean(const rm_proto_params *p) { return rm_proto_on(p) && p->mix >= 1; }

static double dotd(const float *a, const float *b, int dim) {
    double s = 0;
    for (int d = 0; d < dim; d++) s += (double)a[d] * b[d];
    return s;
}

static void normalise(const rm_embedder *e, float *v, int dim) {
    if (e) {
        rm_embedder_normalise(e, v);
        return;
    }
    double ss = dotd(v, v, dim);
    float s = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (int d = 0; d < dim; d++) v[d] *= s;
}

// c[j] = normalised sum of the rows assigned to j; size[j] their count.
static void centres(const rm_embedder *e, int dim, const float *emb, int n, const int *as, int k, float *c, int *size) {
    memset(c, 0, (size_t)k * (size_t)dim * sizeof *c);
    memset(size, 0, (size_t)k * sizeof *size);
    for (int i = 0; i < n; i++) {
        if (as[i] < 0) continue;
        float *cj = c + (size_t)as[i] * (size_t)dim;
        const float *x = emb + (size_t)i * (size_t)dim;
        for (int d = 0; d < dim; d++) cj[d] += x[d];
        size[as[i]]++;
    }
    for (int j = 0; j < k; j++)
        if (size[j]) normalise(e, c + (size_t)j * (size_t)dim, dim);
}

// Each row (but skip) to its most similar centre among k (ties: the smaller);
// returns how many assignments changed.
static int assign_rows(int dim, const float *emb, int n, int skip, const float *c, int k, const int *size, int *as) {
    int changed = 0;
    for (int i = 0; i < n; i++) {
        if (i == skip) continue;
        int best = -1;
        double bs = 0;
        for (int j = 0; j < k; j++) {
            if (size && !size[j]) continue; // an emptied cluster stays empty
            double s = dotd(emb + (size_t)i * (size_t)dim, c + (size_t)j * (size_t)dim, dim);
            if (best < 0 || s > bs) {
                best = j;
                bs = s;
            }
        }
        changed += as[i] != best;
        as[i] = best;
    }
    return changed;
}

// k-means with k centres (see proto.h); *small = 1 when a cluster has fewer
// than min_size members.
static int kmeans_k(const rm_embedder *e, int dim, const float *emb, int n, int skip, const rm_proto_params *p, int k,
                    float *out, int *n_out, int *assign, int *small) {
    *n_out = 0;
    *small = 0;
    float *c = malloc((size_t)k * (size_t)dim * sizeof *c), *mean = malloc((size_t)dim * sizeof *mean);
    int *as = calloc((size_t)(n > 0 ? n : 1), sizeof *as), *size = malloc((size_t)k * sizeof *size);
    double *near = malloc((size_t)n * sizeof *near); // best similarity to the chosen centres
    if (!c || !mean || !as || !size || !near) {
        free(c);
        free(mean);
        free(as);
        free(size);
        free(near);
        return rm_errorf(RM_ENOMEM, "prototypes: out of memory");
    }
    // Seeds: the sample nearest the mean, then farthest-first.
    for (int i = 0; i < n; i++) as[i] = i == skip ? -1 : 0;
    centres(e, dim, emb, n, as, 1, mean, size);
    int pick = -1;
    double ps = 0;
    for (int i = 0; i < n; i++) {
        if (i == skip) continue;
        double s = dotd(emb + (size_t)i * (size_t)dim, mean, dim);
        if (pick < 0 || s > ps) {
            pick = i;
            ps = s;
        }
    }
    for (int j = 0; j < k; j++) {
        memcpy(c + (size_t)j * (size_t)dim, emb + (size_t)pick * (size_t)dim, (size_t)dim * sizeof *c);
        int next = -1;
        double ns = 0;
        for (int i = 0; i < n; i++) {
            if (i == skip) continue;
            double s = dotd(emb + (size_t)i * (size_t)dim, c + (size_t)j * (size_t)dim, dim);
            if (j == 0 || s > near[i]) near[i] = s;
            if (next < 0 || near[i] < ns) {
                next = i;
                ns = near[i];
            }
        }
        pick = next;
    }
    // Lloyd iterations.
    for (int i = 0; i < n; i++) as[i] = -1;
    assign_rows(dim, emb, n, skip, c, k, NULL, as);
    for (int it = 0; it < p->iters; it++) {
        centres(e, dim, emb, n, as, k, c, size);
        if (!assign_rows(dim, emb, n, skip, c, k, size, as)) break;
    }
    centres(e, dim, emb, n, as, k, c, size);
    int map[RM_PROTO_MAX];
    for (int j = 0; j < k; j++) {
        map[j] = -1;
        if (size[j] > 0) {
            *small |= size[j] < p->min_size;
            memcpy(out + (size_t)*n_out * (size_t)dim, c + (size_t)j * (size_t)dim, (size_t)dim * sizeof *out);
            map[j] = (*n_out)++;
        }
    }
    if (assign)
        for (int i = 0; i < n; i++) assign[i] = as[i] < 0 ? -1 : map[as[i]];
    free(c);
    free(mean);
    free(as);
    free(size);
    free(near);
    return RM_OK;
}

int rm_proto_kmeans(const rm_embedder *e, int dim, const float *emb, int n, int skip, const rm_proto_params *p,
                    float *out, int *n_out, int *assign) {
    *n_out = 0;
    int m = n - (skip >= 0 && skip < n);
    int k = p->n < 1 ? 1 : p->n > RM_PROTO_MAX ? RM_PROTO_MAX : p->n;
    if (k > m) k = m;
    int rc = RM_OK, small = 1;
    for (; m > 0 && k >= 1 && small && !rc; k--) // fewer centres until every cluster is big enough
        rc = kmeans_k(e, dim, emb, n, skip, p, k, out, n_out, assign, &small);
    return rc;
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = ((const rm_hit *)a)->id, y = ((const rm_hit *)b)->id;
    return x < y ? -1 : x > y;
}

// Better first: higher score, then smaller id.
static int better(const rm_hit *a, const rm_hit *b) {
    return a->score > b->score || (a->score == b->score && a->id < b->id);
}

int rm_proto_merge(const rm_proto_params *p, const rm_hit *rows, int n_rows, int k, rm_hit *out, int *n_out) {
    *n_out = 0;
    if (n_rows <= 0 || k <= 0) return RM_OK;
    rm_hit *r = malloc((size_t)n_rows * sizeof *r);
    if (!r) return rm_errorf(RM_ENOMEM, "prototypes: out of memory");
    memcpy(r, rows, (size_t)n_rows * sizeof *r);
    qsort(r, (size_t)n_rows, sizeof *r, cmp_id); // an adapter's rows together
    float mix = p->mix < 0 ? 0 : p->mix > 1 ? 1 : p->mix;
    for (int i = 0; i < n_rows;) {
        int64_t a = r[i].id / RM_PROTO_ROWS;
        int has_mean = 0, has_proto = 0, i0 = i;
        float sm = 0, sp = 0;
        for (; i < n_rows && r[i].id / RM_PROTO_ROWS == a; i++) {
            if (r[i].id % RM_PROTO_ROWS == 0) {
                sm = r[i].score;
                has_mean = 1;
            } else if (!has_proto || r[i].score > sp) {
                sp = r[i].score;
                has_proto = 1;
            }
        }
        if (has_proto && p->tau > 0) { // soft: max + tau ln(mean exp((s - max) / tau))
            double z = 0;
            int np = 0;
            for (int j = i0; j < i; j++)
                if (r[j].id % RM_PROTO_ROWS) {
                    z += exp((r[j].score - sp) / p->tau);
                    np++;
                }
            sp += (float)(p->tau * log(z / np));
        }
        if (!has_mean) sm = sp;
        if (!has_proto) sp = sm;
        rm_hit h = {a, (1.0f - mix) * sm + mix * sp};
        // insert into the best-k list
        int m = *n_out;
        if (m == k) {
            if (!better(&h, &out[k - 1])) continue;
            m--;
        }
        int j = m;
        while (j > 0 && better(&h, &out[j - 1])) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = h;
        *n_out = m + 1;
    }
    free(r);
    return RM_OK;
}
