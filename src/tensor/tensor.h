// tensor.h — weight types (GGUF block layouts), quantization, and the matmul
// every linear layer goes through.
//
// Layout convention (as GGUF): ne[0] is the innermost, contiguous dimension.
// A weight matrix W[out,in] has ne[0] = in, ne[1] = out and its rows are
// stored one after another, each rm_row_size(type, in) bytes.
#ifndef RM_TENSOR_TENSOR_H
#define RM_TENSOR_TENSOR_H
#include <stddef.h>
#include <stdint.h>

#include "base/threadpool.h"

// Values are the GGML type ids used in GGUF files.
typedef enum rm_type {
    RM_TYPE_F32 = 0,
    RM_TYPE_F16 = 1,
    RM_TYPE_Q4_0 = 2,
    RM_TYPE_Q4_1 = 3,
    RM_TYPE_Q5_0 = 6,
    RM_TYPE_Q5_1 = 7,
    RM_TYPE_Q8_0 = 8,
    RM_TYPE_Q3_K = 11,
    RM_TYPE_Q4_K = 12,
    RM_TYPE_Q5_K = 13,
    RM_TYPE_Q6_K = 14,
    RM_TYPE_BF16 = 30,
    // In memory only, never in a file: q8_0 / q4_0 / q4_K weights rearranged
    // at load for the AVX-512 VNNI kernels (rm_repack_for_kernels; layouts in
    // repack.c). Same row size as the base type; rows are dequantized whole.
    RM_TYPE_Q8_0_R16 = 1008,
    RM_TYPE_Q4_0_R16 = 1002,
    RM_TYPE_Q4_K_R16 = 1012,
} rm_type;

typedef struct rm_tensor {
    rm_type type;
    int n_dims;
    int64_t ne[4]; // unused dims are 1
    void *data;    // not owned (mmap'd file or caller memory)
} rm_tensor;

// 1 for a weight type ramole reads and writes in files, 0 otherwise (any
// GGML id may reach this; the in-memory r16 types are not file types).
int rm_type_supported(int type);
const char *rm_type_name(int type);                // "f32", "q8_0", ... ("?" if unknown)
int rm_type_parse(const char *name, rm_type *out); // case-insensitive; RM_EINVAL if unknown
int rm_type_block_elems(rm_type t);                // elements per block (1, 32 or 256)
size_t rm_type_block_bytes(rm_type t);             // bytes per block
// Bytes of a row of n elements; 0 if n is not a multiple of the block size.
size_t rm_row_size(rm_type t, int64_t n);
// Bytes of the whole tensor, with overflow checking: returns 0 and sets an
// error on overflow or when ne[0] is not a multiple of the block size.
size_t rm_tensor_nbytes(rm_type t, int n_dims, const int64_t *ne);

// dst (type t) <- src[n] f32. n must be a multiple of the block size.
void rm_quantize_row(rm_type t, const float *src, void *dst, int64_t n);
// dst[n] f32 <- src (type t). For the r16 types src must be a whole row.
void rm_dequantize_row(rm_type t, const void *src, float *dst, int64_t n);

// The r16 layouts (repack.c). rm_type_r16_base: q8_0 / q4_0 / q4_K for their r16
// type, -1 for any other. pack: a row of n elements of `base` -> its r16
// layout; unpack: an r16 row back to the base layout (other types: copied).
int rm_type_r16_base(int type);
void rm_r16_pack_row(int base, const void *src, void *dst, int64_t n);
void rm_r16_unpack_row(int type, const void *src, void *dst, int64_t n);
void rm_r16_dequantize_row(int type, const void *src, float *dst, int64_t n);
// Rearranges W's rows in place for this CPU's kernels when that pays: q8_0 /
// q4_0 weights with at least 16 blocks a row and q4_K weights with at least
// two super-blocks, under the AVX-512 VNNI family,
// unless RAMOLE_REPACK=0. W->data must be writable. Returns 1 when W was
// repacked (W->type is then the r16 type), else 0.
int rm_repack_for_kernels(rm_tensor *W, rm_threadpool *tp);

// y[n,out] = x[n,in] @ W[out,in]^T   (+= when accumulate)
// x rows are ldx floats apart, y rows ldy floats apart (x and y must not
// overlap; ldx/ldy are ignored when n == 1). in = W->ne[0],
// out = W->ne[1]. Any supported W type; quantized W quantizes x on the fly
// (Q8 activations). Threads split the work; tp may be NULL (one thread).
void rm_matmul(rm_threadpool *tp, const rm_tensor *W, const float *x, int64_t ldx, float *y, int64_t ldy, int n,
               int accumulate);

// rm_matmul of up to RM_MATMUL_MAX matrices by the same x: y[g] = x W[g]^T.
// Those of one type and input size (Q, K, V; gate, up) run as one job: x is
// quantized once and the threads share one queue of row chunks (one wake-up
// and one wait instead of one per matrix). Each y[g] is what rm_matmul gives.
#define RM_MATMUL_MAX 3
void rm_matmul_many(rm_threadpool *tp, int count, const rm_tensor *const *W, const float *x, int64_t ldx,
                    float *const *y, const int64_t *ldy, int n, int accumulate);

// Reference (scalar, single-thread) version of rm_matmul: the specification
// that the SIMD paths are tested against. It dequantizes W and sums in double.
// rm_matmul differs from it by at most, per output,
//   sum_b 0.51 * d_b * sum_{i in b} |w_i|  +  1e-4 * sum_i |x_i w_i|
// where d_b = max|x| / 127 over activation block b (32 elements; 256 for q4_K,
// q5_K and q6_K)
// is the int8 activation step for quantized W (the first term is 0 for
// f32/f16/bf16 W) and the second term covers f32 summation order.
void rm_matmul_ref(const rm_tensor *W, const float *x, int64_t ldx, float *y, int64_t ldy, int n, int accumulate);

// The kernel family rm_matmul runs for weights of type t on this CPU (after
// RAMOLE_ISA / rm_cpu_force): "scalar", "avx2", "avx512" (float weights) or
// "avx512-vnni" (quantized weights).
const char *rm_matmul_family(rm_type t);

// sum_i a[i]*b[i], SIMD-dispatched (attention uses it).
float rm_dot_f32(const float *a, const float *b, int64_t n);
// y[i] += a * x[i]
void rm_axpy_f32(float *y, float a, const float *x, int64_t n);
// h[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] (h may be g or u),
// with the exponential of kernels.h (within 2 ulp of exp; the same bits on
// every ISA).
void rm_silu_mul_f32(float *h, const float *g, const float *u, int64_t n);
// s[i] = exp(s[i] - mx) with the same exponential; returns their sum, taken
// in 16 lanes (lane i % 16 adds value i in order, then the lanes in order):
// the same bits on every ISA, whatever the memory around s.
float rm_exp_sum_f32(float *s, int64_t n, float mx);
// s[i] *= c, and rm_scale_max_f32 returns the largest s[i] after (-inf for
// n = 0; a NaN is passed over). Elementwise products: the same bits on every ISA.
float rm_scale_max_f32(float *s, int64_t n, float c);
void rm_scale_f32(float *s, int64_t n, float c);

// Measures this machine's sustainable read bandwidth in GB/s with the pool's
// threads (streams a buffer much larger than the last-level cache).
double rm_measure_read_bandwidth(rm_threadpool *tp);

// Measures this machine's int8 multiply-add ceiling in GOP/s (2 ops per
// multiply-add) with all the pool's threads, operands in registers, with the
// instructions of the kernel family rm_matmul_family reports for q8_0:
// *kernel_gops for the sequence the q8_0 / q4_0 kernels run per step
// (AVX2: sign, maddubs, madd, cvt, FMA per 32 products; AVX-512 VNNI:
// vpdpbusd, cvt, FMA per 64), *bare_gops for the bare dot product (maddubs +
// madd; vpdpbusd). Both are 0 without AVX2.
void rm_measure_int8_peak(rm_threadpool *tp, double *kernel_gops, double *bare_gops);
// The bf16 dot-product rate (GFLOP/s, vdpbf16ps chains in registers on every
// worker) of the avx512-bf16 family; 0 where it does not run.
double rm_measure_bf16_peak(rm_threadpool *tp);
#endif
