// batch_impl.h — internals of the batched hook shared by lora/batch*.c: the
// hook's state, its helpers and the f16-mirror kernels.
#ifndef RM_LORA_BATCH_IMPL_H
#define RM_LORA_BATCH_IMPL_H
#include <stdint.h>

#include "lora/batch.h"

typedef struct lb_term {
    uint64_t uid;
    const rm_lora_mod *mod;
    int row;
    float coef;
    size_t t_off; // this term's r floats in T
    float *dst;   // where B T goes: NULL = y's row `row`; else out floats (a router row's E_i or q)
} lb_term;

typedef struct lb_group {
    int first, count;
} lb_group; // terms [first, first+count)
typedef struct lb_unit {
    int group, j;
} lb_unit; // one rank row of one group

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
    int *rrows; // rows with router plans
    float *R;   // router scratch, one share per worker
    size_t rrows_cap, R_cap;
    int *srows; // rows with set plans (moe, arrow)
    float *S;   // their scratch, one share per worker
    float *XB;  // smear: each set row's running mean [in]
    size_t srows_cap, S_cap, XB_cap;
};

// Rows computed one by one, each by one worker (router and set plans): the
// rows are lb->rrows / lb->srows [0, n_rows), scratch `share` floats per worker.
typedef struct lb_rowjob {
    const rm_lora_batch *lb;
    const rm_batch *b;
    int avx2, layer, which, n_rows;
    size_t share;
    const float *x;
    int64_t ldx;
    float *y;
    int64_t ldy;
} lb_rowjob;

// Grows *p (a pointer to an array) to hold n elements of size sz; -1 when out of memory.
int lb_grow(void *p, size_t *cap, size_t n, size_t sz);
// Records a failure of the hook (the first one wins; rm_lora_batch_status reports it).
void lb_fail(rm_lora_batch *lb, const char *what);                           // out of memory
void lb_mismatch(rm_lora_batch *lb, int layer, int which, const char *what); // shapes that do not fit
// h[r] = A x (no scale) and y[out] += c B h, from the f16 mirrors when present.
void lora_mod_down(int avx2, const rm_lora_mod *m, const float *x, float *h);
void lora_mod_up(int avx2, const rm_lora_mod *m, const float *h, float c, float *y);
// The rows of b with moe / arrow plans on linear (layer, which) (batch_set.c).
void lb_set_apply(rm_lora_batch *lb, const rm_batch *b, int layer, rm_linear_id which, const float *x, int64_t ldx,
                  float *y, int64_t ldy, int avx2);

// sum_i x[i] * a[i]          x f32, a f16
float lora_dot_f16_avx2(const float *x, const uint16_t *a, int64_t n);
// y[i] += t * b[i]           b f16
void lora_axpy_f16_avx2(float *y, float t, const uint16_t *b, int64_t n);
#endif
