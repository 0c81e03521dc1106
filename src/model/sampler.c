// sampler.c — see sampler.h. The chain: repetition penalty -> greedy, or
// temperature -> top-k -> softmax -> top-p -> min-p -> draw.
#include "model/sampler.h"
#include "base/err.h"
#include "base/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rm_sampler_params rm_sampler_default_params(void) {
    rm_sampler_params p = {0};
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0x5eed;
    return p;
}

int rm_sampler_params_check(const rm_sampler_params *p) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return rm_errorf(RM_EINVAL, "temperature must be in [0, 100] (0: greedy), not %g", (double)p->temperature);
    if (p->top_k < 0) return rm_errorf(RM_EINVAL, "top_k must be >= 0 (0: off), not %d", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return rm_errorf(RM_EINVAL, "top_p must be in (0, 1] (1: off), not %g", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return rm_errorf(RM_EINVAL, "min_p must be in [0, 1] (0: off), not %g", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 100.0f))
        return rm_errorf(RM_EINVAL, "repeat_penalty must be in (0, 100] (1: off), not %g", (double)p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > (1 << 20))
        return rm_errorf(RM_EINVAL, "repeat_last_n must be in [0, 1048576], not %d", p->repeat_last_n);
    return RM_OK;
}

int rm_sampler_params_from_json(rm_sampler_params *p, const rm_json *req) {
    double t, tp, mp, rp;
    int64_t k, seed;
    int rc;
    if ((rc = rm_json_field_num(req, "temperature", 0.0, 100.0, p->temperature, &t)) ||
        (rc = rm_json_field_num(req, "top_p", 1e-30, 1.0, p->top_p, &tp)) ||
        (rc = rm_json_field_int(req, "top_k", 0, INT32_MAX, p->top_k, &k)) ||
        (rc = rm_json_field_num(req, "min_p", 0.0, 1.0, p->min_p, &mp)) ||
        (rc = rm_json_field_num(req, "repeat_penalty", 1e-30, 100.0, p->repeat_penalty, &rp)) ||
        (rc = rm_json_field_int(req, "seed", 0, INT64_MAX, -1, &seed)))
        return rc;
    p->temperature = (float)t, p->top_p = (float)tp, p->top_k = (int)k, p->min_p = (float)mp;
    p->repeat_penalty = (float)rp;
    if (seed >= 0) p->seed = (uint64_t)seed; // -1: absent
    return rm_sampler_params_check(p);
}

int rm_sampler_init(rm_sampler *s, const rm_sampler_params *p, int n_vocab) {
    memset(s, 0, sizeof *s);
    int rc = rm_sampler_params_check(p);
    if (rc) return rc;
    s->p = *p;
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    s->rng = p->seed;
    s->n_vocab = n_vocab;
    s->probs = malloc((size_t)n_vocab * sizeof(float));
    s->idx = malloc((size_t)n_vocab * sizeof(int32_t));
    s->recent = malloc((size_t)(s->p.repeat_last_n + 1) * sizeof(int32_t));
    if (!s->probs || !s->idx || !s->recent) {
        rm_sampler_free(s);
        return rm_errorf(RM_ENOMEM, "sampler: out of memory");
    }
    return RM_OK;
}

void rm_sampler_free(rm_sampler *s) {
    free(s->probs);
    free(s->idx);
    free(s->recent);
    memset(s, 0, sizeof *s);
}

void rm_sampler_accept(rm_sampler *s, int32_t token) {
    int cap = s->p.repeat_last_n;
    if (cap <= 0) return;
    s->recent[s->recent_head] = token;
    s->recent_head = (s->recent_head + 1) % cap;
    if (s->n_recent < cap) s->n_recent++;
}

int32_t rm_argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

static const float *g_sort_keys;
static int cmp_desc(const void *a, const void *b) {
    float x = g_sort_keys[*(const int32_t *)a], y = g_sort_keys[*(const int32_t *)b];
    if (x != y) return x > y ? -1 : 1;
    return *(const int32_t *)a - *(const int32_t *)b;
}

// Moves the k largest entries of logits (by index list) to the front, sorted.
static int top_candidates(rm_sampler *s, const float *logits, int k) {
    int n = s->n_vocab;
    for (int i = 0; i < n; i++) s->idx[i] = i;
    if (k <= 0 || k > n) k = n;
    if (k < n) { // partial selection: keep a sorted buffer of the best k
        int m = 0;
        for (int i = 0; i < n; i++) {
            float v = logits[i];
            if (m == k && v <= logits[s->idx[m - 1]]) continue;
            int j = m < k ? m++ : k - 1;
            while (j > 0 && logits[s->idx[j - 1]] < v) {
                s->idx[j] = s->idx[j - 1];
                j--;
            }
            s->idx[j] = i;
        }
        return k;
    }
    g_sort_keys = logits; // single-threaded use of qsort's comparator
    qsort(s->idx, (size_t)n, sizeof(int32_t), cmp_desc);
    return n;
}

int32_t rm_sampler_sample(rm_sampler *s, float *logits) {
    int n = s->n_vocab;
    if (s->p.repeat_penalty != 1.0f && s->n_recent > 0) {
        // each distinct recent token is penalised once
        for (int i = 0; i < s->n_recent; i++) {
            int32_t t = s->recent[i];
            if (t < 0 || t >= n) continue;
            int seen = 0;
            for (int j = 0; j < i; j++) seen |= s->recent[j] == t;
            if (seen) continue;
            logits[t] = logits[t] > 0 ? logits[t] / s->p.repeat_penalty : logits[t] * s->p.repeat_penalty;
        }
    }
    if (s->p.temperature <= 0.0f) return rm_argmax(logits, n);

    int m = top_candidates(s, logits, s->p.top_k);
    float mx = logits[s->idx[0]], sum = 0.0f;
    for (int i = 0; i < m; i++) {
        s->probs[i] = expf((logits[s->idx[i]] - mx) / s->p.temperature);
        sum += s->probs[i];
    }
    for (int i = 0; i < m; i++) s->probs[i] /= sum;
    if (s->p.top_p < 1.0f) { // smallest prefix whose mass reaches top_p
        float cum = 0.0f;
        int keep = m;
        for (int i = 0; i < m; i++) {
            cum += s->probs[i];
            if (cum >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        m = keep;
    }
    if (s->p.min_p > 0.0f) {
        float floor_p = s->p.min_p * s->probs[0];
        int keep = 1;
        while (keep < m && s->probs[keep] >= floor_p) keep++;
        m = keep;
    }
    float total = 0.0f;
    for (int i = 0; i < m; i++) total += s->probs[i];
    float r = rm_rng_uniform(&s->rng) * total, cum = 0.0f;
    for (int i = 0; i < m; i++) {
        cum += s->probs[i];
        if (r < cum) return s->idx[i];
    }
    return s->idx[m - 1];
}
