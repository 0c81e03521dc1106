// generate.c — see generate.h.
#include "model/generate.h"
#include "base/err.h"
#include "base/file.h"

#include <stdlib.h>
#include <string.h>

int rm_generate(rm_llama *m, rm_kvcache *kv, rm_threadpool *tp, const int32_t *prompt, int n_prompt, int n_new,
                const rm_sampler_params *sp, const rm_linear_hook *hook, const void *plan, int chunk, rm_token_cb cb,
                void *cb_ctx, rm_gen_stats *stats) {
    rm_gen_stats st = {0};
    if (n_prompt <= 0) return rm_errorf(RM_EINVAL, "generate: empty prompt (the model needs at least one token)");
    if (n_prompt + n_new > kv->n_ctx)
        return rm_errorf(RM_EFULL, "generate: prompt %d + new %d tokens exceed the context of %d", n_prompt, n_new,
                         kv->n_ctx);
    if (chunk <= 0) chunk = 512;
    int V = m->hp.n_vocab;
    rm_sampler smp;
    int rc = rm_sampler_init(&smp, sp, V);
    if (rc) return rc;
    int cap = chunk > 1 ? chunk : 1;
    int32_t *tok = malloc((size_t)cap * sizeof(int32_t)), *pos = malloc((size_t)cap * sizeof(int32_t));
    int32_t *slot = calloc((size_t)cap, sizeof(int32_t));
    uint8_t *want = calloc((size_t)cap, 1);
    const void **plans = malloc((size_t)cap * sizeof(void *));
    float *logits = malloc((size_t)V * sizeof(float));
    if (!tok || !pos || !slot || !want || !plans || !logits) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < cap; i++) plans[i] = plan;
    rm_kvcache_clear_slot(kv, 0);
    for (int i = 0; i < n_prompt; i++) rm_sampler_accept(&smp, prompt[i]);

    double t0 = rm_now();
    for (int start = 0; start < n_prompt; start += chunk) {
        int n = n_prompt - start < chunk ? n_prompt - start : chunk;
        for (int i = 0; i < n; i++) {
            tok[i] = prompt[start + i];
            pos[i] = start + i;
            want[i] = start + i == n_prompt - 1;
        }
        rm_batch b = {n, tok, pos, slot, want, plan ? plans : NULL};
        if ((rc = rm_llama_forward(m, kv, tp, &b, hook, logits))) goto done;
    }
    st.n_prompt = n_prompt;
    st.prompt_s = rm_now() - t0;

    t0 = rm_now();
    for (int i = 0; i < n_new; i++) {
        int32_t next = rm_sampler_sample(&smp, logits);
        rm_sampler_accept(&smp, next);
        st.n_gen++;
        int stop = cb ? cb(cb_ctx, next) : 0;
        if (m->tok && rm_tokenizer_is_eog(m->tok, next)) stop = 1;
        if (stop || i == n_new - 1) break;
        tok[0] = next;
        pos[0] = n_prompt + i;
        want[0] = 1;
        rm_batch b = {1, tok, pos, slot, want, plan ? plans : NULL};
        if ((rc = rm_llama_forward(m, kv, tp, &b, hook, logits))) goto done;
    }
    st.gen_s = rm_now() - t0;
done:
    if (stats) *stats = st;
    rm_sampler_free(&smp);
    free(tok);
    free(pos);
    free(slot);
    free(want);
    free(plans);
    free(logits);
    return rc;
}
