// lora_export.c — the trainer's adapters as an rm_lora (lora/adapter.h), which
// saves them as PEFT or GGUF LoRA and serves them through lora/batch.
#include "train/train_impl.h"

#include <stdio.h>
#include <string.h>

#include "base/err.h"
#include "lora/adapter.h"

int rm_trainer_export_lora(rm_trainer *t, rm_lora **out) {
    *out = NULL;
    if (!t->lora_rank) return rm_errorf(RM_EINVAL, "lora export: the trainer has no adapters");
    const rm_llama_hparams *hp = &t->m->hp;
    rm_lora *a;
    int rc = rm_lora_new(&a, t->L);
    if (rc) return rc;
    snprintf(a->arch, sizeof a->arch, "%s", hp->arch == RM_ARCH_QWEN2 ? "qwen2" : "llama");
    a->alpha = t->lora_alpha;
    a->rank = t->lora_rank;
    a->rslora = t->lora_rslora;
    for (int i = 0; i < t->L * RM_LIN_COUNT && !rc; i++) {
        const rm_tlinear *L = &t->lin[i];
        if (!L->rank) continue;
        rm_lora_mod *mod = &a->mods[i];
        if ((rc = rm_lora_mod_alloc(mod, L->rank, L->in, L->out, L->scale))) break;
        memcpy(mod->A, L->A, (size_t)L->rank * L->in * sizeof(float));
        for (int o = 0; o < L->out; o++) // Bt[r, out] = B[out, r]^T
            for (int j = 0; j < L->rank; j++) mod->Bt[(size_t)j * L->out + o] = L->B[(size_t)o * L->rank + j];
    }
    if (!rc) {
        a->qk_permuted = !hp->rope_neox; // trained in the base's own row order
        rc = rm_lora_bind(a, t->m);
    }
    if (rc) {
        rm_lora_free(a);
        return rc;
    }
    *out = a;
    return RM_OK;
}
