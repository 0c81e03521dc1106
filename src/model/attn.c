// attn.c — serving attention (see attn.h).
//
// The batch is cut into blocks of at most BLOCK consecutive rows of one slot
// (a prompt being prefilled gives long runs, a decode step one row per slot).
// For a block and one KV head, for each query head of its group:
//   S = Q K^T   (Q: the block's rows of that head; K^T read in place from the
//               cache, which stores K transposed; positions 0..len-1 where
//               len - 1 is the block's largest position)
//   P = softmax(S / sqrt(hd)) per row over its own positions 0..pos (0 beyond)
//   O = P V
// Both products go through rm_gemm_nn (rm_gemm_nn_bh over an f16 cache,
// the same arithmetic on its values as floats), which computes every element as one
// chain of FMAs in index order whatever the matrix sizes, and a weight of 0
// adds exactly 0. So a row's output does not depend on which rows share its
// block, how a prompt is cut into forward calls, or prefill vs decode: the
// results are bitwise the same, and every K and V element read serves all
// rows of the block at once.
#include "model/attn.h"
#include "tensor/gemm.h"
#include "tensor/tensor.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

enum { BLOCK = 48 };

size_t rm_attention_scratch(const rm_llama_hparams *hp, const rm_kvcache *kv, int nth, int n_rows) {
    _Static_assert(sizeof(int) == sizeof(float), "the block table shares the float scratch");
    return (size_t)nth * BLOCK * (size_t)kv->n_ctx + 2 * (size_t)n_rows;
}

// Scales s[0..len) and turns it into softmax weights over t <= pos; the
// weights of t > pos (other rows' future in the same block) become 0. The
// exponentials and their sum are rm_exp_sum_f32's: the same bits on every
// ISA and for a row wherever it sits in a batch.
static void softmax_row(float *s, int len, int pos, float scale) {
    float mx = rm_scale_max_f32(s, pos + 1, scale);
    float sum = rm_exp_sum_f32(s, pos + 1, mx);
    rm_scale_f32(s, pos + 1, 1.0f / sum);
    if (len > pos + 1) memset(s + pos + 1, 0, sizeof(float) * (size_t)(len - pos - 1));
}

typedef struct {
    const rm_llama_hparams *hp;
    const rm_kvcache *kv;
    const rm_batch *b;
    int layer;
    const float *q;
    float *out;
    float *scratch;
    const int *blocks; // [n_blocks][2]: first row, rows
    int n_blocks;
    atomic_long next; // next work item
} attn_job;

// Rows r0..r0+nr-1 (one slot), KV head kvh: all the query heads of its group.
// A product's rows are one head of the block's rows (qd apart) or, for a
// single row (a decode step), up to BLOCK heads of it (hd apart), so that
// each K and V element read serves the whole group, not one head.
static void block_kvhead(const attn_job *j, float *s, int r0, int nr, int kvh) {
    const rm_llama_hparams *hp = j->hp;
    const int hd = hp->head_dim, H = hp->n_head, group = H / hp->n_head_kv;
    const int slot = j->b->slot[r0];
    int len = 0;
    for (int i = 0; i < nr; i++) len = j->b->pos[r0 + i] + 1 > len ? j->b->pos[r0 + i] + 1 : len;
    const size_t kt_at = rm_kv_block(j->kv, j->layer, slot) + rm_kv_k_index(j->kv, kvh * hd, 0);
    const size_t v_at = rm_kv_block(j->kv, j->layer, slot) + (size_t)kvh * hd;
    const int half = j->kv->type == RM_KV_F16;
    const void *kt = half ? (const void *)((const rm_f16 *)j->kv->k + kt_at) : (const float *)j->kv->k + kt_at;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t qd = (size_t)H * hd;
    const int heads_per = nr == 1 ? (group < BLOCK ? group : BLOCK) : 1;
    const int64_t ld = nr == 1 ? hd : (int64_t)qd;
    for (int h = kvh * group; h < (kvh + 1) * group; h += heads_per) {
        const int rows = nr == 1 ? ((kvh + 1) * group - h < heads_per ? (kvh + 1) * group - h : heads_per) : nr;
        memset(s, 0, sizeof(float) * (size_t)rows * len);
        const float *q = j->q + r0 * qd + (size_t)h * hd;
        rm_gemm_nn_strips(NULL, s, len, q, ld, kt, half, 32 * (int64_t)j->kv->kv_dim, rows, len, hd);
        for (int i = 0; i < rows; i++) softmax_row(s + (size_t)i * len, len, j->b->pos[r0 + (nr == 1 ? 0 : i)], scale);
        float *o = j->out + r0 * qd + (size_t)h * hd;
        for (int i = 0; i < rows; i++) memset(o + i * ld, 0, sizeof(float) * hd);
        if (half) rm_gemm_nn_bh(NULL, o, ld, s, len, (const rm_f16 *)j->kv->v + v_at, j->kv->kv_dim, rows, hd, len);
        else rm_gemm_nn(NULL, o, ld, s, len, (const float *)j->kv->v + v_at, j->kv->kv_dim, rows, hd, len);
    }
}

// Work items are (block, KV head) pairs, taken from a shared counter last
// block first: a prompt's later blocks attend to more positions, so equal
// contiguous ranges left the worker with the end of a prompt most of the work.
static void attn_task(void *ctx, int ith, int nth) {
    (void)nth;
    attn_job *j = ctx;
    const int Hk = j->hp->n_head_kv;
    const long items = (long)j->n_blocks * Hk;
    float *s = j->scratch + (size_t)ith * BLOCK * j->kv->n_ctx;
    for (;;) {
        long it = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (it >= items) break;
        it = items - 1 - it;
        const int *blk = j->blocks + 2 * (it / Hk);
        block_kvhead(j, s, blk[0], blk[1], (int)(it % Hk));
    }
}

void rm_attention_serve(rm_threadpool *tp, const rm_llama_hparams *hp, const rm_kvcache *kv, const rm_batch *b,
                        int layer, const float *q, float *out, float *scratch) {
    // The block table follows the per-thread score areas in the scratch.
    const int n = b->n, nth = rm_threadpool_size(tp);
    int *blocks = (int *)(scratch + (size_t)nth * BLOCK * kv->n_ctx), n_blocks = 0;
    for (int r0 = 0; r0 < n;) {
        int r1 = r0 + 1;
        while (r1 < n && r1 - r0 < BLOCK && b->slot[r1] == b->slot[r0]) r1++;
        blocks[2 * n_blocks] = r0;
        blocks[2 * n_blocks + 1] = r1 - r0;
        n_blocks++;
        r0 = r1;
    }
    attn_job j = {hp, kv, b, layer, q, out, scratch, blocks, n_blocks, 0};
    rm_threadpool_run(tp, attn_task, &j);
}
