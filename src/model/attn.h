// attn.h — attention of the serving forward pass over the KV cache, for a
// ragged batch: every row attends to positions 0..pos of its own slot.
#ifndef RM_MODEL_ATTN_H
#define RM_MODEL_ATTN_H
#include <stddef.h>

#include "base/threadpool.h"
#include "model/kvcache.h"
#include "model/llama.h"

// Floats of scratch rm_attention_serve needs for a batch of n_rows rows with
// a pool of nth threads.
size_t rm_attention_scratch(const rm_llama_hparams *hp, const rm_kvcache *kv, int nth, int n_rows);

// out[r, h*hd ..] = softmax(q[r, h] . K[slot_r, 0..pos_r] / sqrt(hd)) V[slot_r, 0..pos_r]
// for every row r of b and head h (grouped-query: head h reads KV head
// h / (n_head / n_head_kv)). q and out are [b->n, n_head*hd]; the cache holds
// layer's K and V for every position a row reads (its own included).
void rm_attention_serve(rm_threadpool *tp, const rm_llama_hparams *hp, const rm_kvcache *kv, const rm_batch *b,
                        int layer, const float *q, float *out, float *scratch);
#endif
