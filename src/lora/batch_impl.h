// batch_impl.h — internals of the batched hook shared by lora/batch*.c: the
// hook's state, its helpers and the LoRA kernels.
#ifndef RM_LORA_BATCH_IMPL_H
#define RM_LORA_BATCH_IMPL_H
#include <stdint.h>

#include "lora/adapter.h"
#include "lora/batch.h"

typedef struct lb_term {
    uint64_t uid;
    const rm_lora_mod *mod;
    int row;
    int slot;     // the index of the adapter in the row's plan; -1: a router's query (no B T)
    int rrow;     // router terms: the row's index in lb->rrows; -1 for the others
    float coef;
    size_t t_off; // this term's r floats in T
} lb_term;

#define LB_GRAM_FLOATS ((size_t)16 << 20) // 64 MB of router products at most

typedef struct lb_group {
    int first, count;
} lb_group; // terms [first, first+count)
typedef struct lb_unit {
    int group, j;
} lb_unit; // rows [j, j + LB_NJ) of A (fewer at the end) of one group

struct rm_lora_batch {
    rm_threadpool *tp;
    double seconds;
    int status;
    char msg[256];
    lb_term *terms;
    lb_group *groups;
    lb_unit *units;
    float *T;
    size_t terms_cap, groups_cap, units_cap, T_cap;
    int *rrows;      // rows with router plans
    size_t *roff;    // per router row, the T offsets of its k expert terms and its query ((size_t)-1: none)
    size_t rrows_cap, roff_cap;
    struct lb_gram *gram; // router x expert products B_r^T B_i per linear (batch_router.c)
    size_t gram_cap, gram_n, gram_floats;
    size_t gram_budget; // floats the products may take (LB_GRAM_FLOATS; tests lower it)
    uint64_t gram_clock;
    int *srows; // rows with set plans (moe, arrow)
    float *S;   // their scratch, one share per worker
    float *XB;  // smear: each set row's running mean [in]
    size_t srows_cap, S_cap, XB_cap;
};

// Rows computed one by one, each by one worker (set plans): the rows are
// lb->srows [0, n_rows), scratch `share` floats per worker.
typedef struct lb_rowjob {
    const rm_lora_batch *lb;
    const rm_batch *b;
    int isa, layer, which, n_rows;
    size_t share;
    const float *x;
    int64_t ldx;
    float *y;
    int64_t ldy;
} lb_rowjob;

// Router rows (batch_router.c): appends the terms of b's router rows on
// (layer, which) at lb->terms[*n_terms ...] and their rows to lb->rrows;
// returns how many rows, -1 on a failure (recorded).
int lb_router_terms(rm_lora_batch *lb, const rm_batch *b, int layer, int which, int *n_terms, int64_t ldx,
                    int64_t ldy);
// With T filled by the down pass: each router row's softmax weights, its
// expert terms' T scaled by them (and the route statistics).
void lb_router_weights(rm_lora_batch *lb, const rm_batch *b, int layer, int which, int n_terms, int n_rrows,
                       int64_t out);
void lb_gram_free(rm_lora_batch *lb);
// Grows *p (a pointer to an array) to hold n elements of size sz; -1 when out of memory.
int lb_grow(void *p, size_t *cap, size_t n, size_t sz);
// Records a failure of the hook (the first one wins; rm_lora_batch_status reports it).
void lb_fail(rm_lora_batch *lb, const char *what);                           // out of memory
void lb_mismatch(rm_lora_batch *lb, int layer, int which, const char *what); // shapes that do not fit
// The module of adapter a on linear (layer, which), or NULL.
const rm_lora_mod *lb_mod_of(const rm_lora *a, int layer, int which);
// Whether m differs in shape from lb->terms[0] (when n_terms > 0) or does not
// fit rows of ldx inputs / ldy outputs.
int lb_term_misfit(const rm_lora_batch *lb, int n_terms, const rm_lora_mod *m, int64_t ldx, int64_t ldy);
// h[r] = A x (no scale) and y[out] += c B h, from the f16 mirrors when present.
void lora_mod_down(int isa, const rm_lora_mod *m, const float *x, float *h);
void lora_mod_up(int isa, const rm_lora_mod *m, const float *h, float c, float *y);
// The rows of b with moe / arrow plans on linear (layer, which) (batch_set.c).
void lb_set_apply(rm_lora_batch *lb, const rm_batch *b, int layer, rm_linear_id which, const float *x, int64_t ldx,
                  float *y, int64_t ldy, int isa);

// One matrix of a module as a kernel reads it: f32 rows (f, ld apart), or
// its packed f16 mirror (h), or its packed 8-bit mirror (q, with one scale
// per row in s); adapter.h has the layouts. kind: 0 f32, 1 f16, 2 8-bit.
typedef struct lb_w {
    const float *f;
    const uint16_t *h;
    const int8_t *q;
    const float *s;
} lb_w;
static inline int lb_kind(lb_w w) { return w.q ? 2 : w.h ? 1 : 0; }
// A and B^T of m as the hook reads them: the 8-bit mirror, else the f16 one, else f32.
static inline lb_w lb_a(const rm_lora_mod *m) {
    lb_w w = {0};
    if (m->A8) w.q = m->A8, w.s = m->s8;
    else if (m->A16) w.h = m->A16;
    else w.f = m->A;
    return w;
}
static inline lb_w lb_b(const rm_lora_mod *m) {
    lb_w w = {0};
    if (m->Bt8) w.q = m->Bt8, w.s = m->s8 + m->r;
    else if (m->Bt16) w.h = m->Bt16;
    else w.f = m->Bt;
    return w;
}

// The LoRA kernels, one set per family (isa: 0 scalar, 1 avx2, 2 avx512; see
// lora_isa). A module's A [r, in] and B^T [r, out] (ldb = out) are read as
// the lb_w says.
//
// down: t[i][j0 + j] = c[i] * (x[i] . A[j0 + j])   i < nt <= LB_NT, j < nj <= LB_NJ
//       (8-bit: c[i] * (s[j] * (x[i] . q[j])), the dot over the integers as floats)
// up:   y[i][o] = fma chain over j < nj of t[i][j] * B[j0 + j][o], started at
//       y[i][o], for o in [o0, o1) (o0 a multiple of 32) and i < nt <= LB_NT
//       (the y[i] distinct); r is the module's rank. init: the chain starts at 0
//       instead (y written, not added to: the same bits as y zeroed first)
//       (8-bit: the terms are (t[i][j] * s[j0 + j]) * q[j0 + j][o]; lora_up makes
//       the coefficients, the family's kernel gets them with s NULL)
// Each dot and each output element is computed the same way whatever nt, nj
// and [o0, o1) are, so a row's bits do not depend on what is computed beside it.
#define LB_NT 4
#define LB_NJ 4
int lora_isa(void);
#define LB_DOWN_ARGS int nt, const float *const *x, const float *c, float *const *t, lb_w A, int64_t in, int j0, int nj
#define LB_UP_ARGS                                                                                                     \
    int nt, float *const *y, const float *const *t, lb_w B, int64_t ldb, int r, int j0, int nj, int64_t o0, int64_t o1, \
        int init
// In the ISA files: calls BODY(F, N) with F = the lb_w's kind (0, 1, 2) and N =
// nt (1 .. LB_NT) as compile-time constants, so that each case is compiled
// with its registers.
#define LB_SPECIALISE_NT(F, nt, BODY)                                                                                  \
    do {                                                                                                               \
        if ((nt) == 1) BODY(F, 1);                                                                                     \
        else if ((nt) == 2) BODY(F, 2);                                                                                \
        else if ((nt) == 3) BODY(F, 3);                                                                                \
        else BODY(F, 4);                                                                                               \
    } while (0)
#define LB_SPECIALISE(kind, nt, BODY)                                                                                  \
    do {                                                                                                               \
        if ((kind) == 2) LB_SPECIALISE_NT(2, nt, BODY);                                                                \
        else if ((kind) == 1) LB_SPECIALISE_NT(1, nt, BODY);                                                           \
        else LB_SPECIALISE_NT(0, nt, BODY);                                                                            \
    } while (0)
// How far ahead the kernels ask for their operands (prefetches do not fault
// past the end): f32 rows LB_PF elements on; the packed mirrors' streams LB_PF_A
// bytes on in A's blocks and LB_PF_B in B^T's (on a Zen 5, 2 to 8 KB measured:
// 4 KB is at or near the best for f16 and 8-bit; without them the AVX2 hook
// took 16-17% of a rank-16 decode step with f16 copies against 11-13%).
#define LB_PF 512
#ifndef LB_PF_A
#define LB_PF_A 4096
#endif
#ifndef LB_PF_B
#define LB_PF_B 4096
#endif
// Bytes per element of kind F in a packed mirror.
#define LB_ESZ(F) ((F) == 2 ? 1 : 2)
void lora_down(int isa, LB_DOWN_ARGS);
void lora_up(int isa, LB_UP_ARGS);
void lora_down_avx2(LB_DOWN_ARGS);
void lora_up_avx2(LB_UP_ARGS);
void lora_down_avx512(LB_DOWN_ARGS);
void lora_up_avx512(LB_UP_ARGS);
#endif
