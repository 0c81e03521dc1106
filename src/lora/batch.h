// batch.h — heterogeneous batched LoRA: the model's linear hook for a ragged
// batch whose rows carry different composition plans (b->plan[r] points to an
// rm_lora_plan, NULL = base model only).
//
// For each linear, after the base product for all rows, the rows' terms are
// grouped by adapter (the union of the batch's plans: the paper's b x p
// mapping matrix M, kept sparse): for each adapter, T = (w s) X_rows A^T
// [rows, r], then Y_rows += T B^T. Each adapter's A and B are read once per
// batch, and only the adapters a row uses are computed for it.
//
// Every row's terms are added in the same order whatever its batch mates
// (adapters by uid), so a sequence's outputs do not depend on them.
//
// Rows with a router plan (RouterLoRA): y += sum_i softmax(q . E_i / sqrt(out))
// E_i with E_i = s_i B_i A_i x, q = s_r B_r A_r x. The scores come from the
// down pass's t_i = s_i A_i x, t_r = s_r A_r x as t_r^T (B_r^T B_i) t_i, with
// the small products B_r^T B_i made once per (router, expert, linear) and kept
// in the batch (batch_router.c); the experts' terms then join the mixture's
// (grouped by adapter, t_i scaled by its weight), so a router row costs the
// mixture's work plus the router's A. Per row these are the operations of
// rm_lora_router_row, bit for bit.
#ifndef RM_LORA_BATCH_H
#define RM_LORA_BATCH_H
#include "lora/compose.h"

typedef struct rm_lora_batch rm_lora_batch;

// tp may be NULL (one thread). Returns NULL when out of memory.
rm_lora_batch *rm_lora_batch_new(rm_threadpool *tp);
void rm_lora_batch_free(rm_lora_batch *lb);
// The hook to pass to rm_llama_forward / rm_generate.
rm_linear_hook rm_lora_batch_hook(rm_lora_batch *lb);
// The hook cannot return an error: on one (out of memory) it skips the
// LoRA terms and records it. Returns RM_OK or that failure (message set) and
// clears it; check after a forward pass.
int rm_lora_batch_status(rm_lora_batch *lb);
// Wall seconds spent applying LoRA terms since the last call (for benchmarks:
// the share of a forward pass that the adapters cost).
double rm_lora_batch_seconds(rm_lora_batch *lb);

// RouterLoRA on one row of linear (layer, which): y[out] += sum_i alpha_i E_i(x)
// for the router plan p with the kernel family isa (rm_lora_kernel_family()
// is what the hook uses). scratch holds rm_lora_router_scratch(k, r) floats
// (k experts, r the largest rank among the experts and the router). It makes
// every B_r^T B_i anew (the hook keeps them). alpha (may be NULL) gets the
// row's k expert weights.
void rm_lora_router_row(int isa, const rm_lora_plan *p, int layer, int which, const float *x, float *y, float *scratch,
                        float *alpha);
size_t rm_lora_router_scratch(int k, int r);
// The family of LoRA kernels the hook runs on this CPU: 0 scalar, 1 AVX2
// (with FMA and F16C), 2 AVX-512; RAMOLE_ISA / rm_cpu_force lower it.
int rm_lora_kernel_family(void);
#endif
