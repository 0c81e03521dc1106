// matmul_avx512.c — AVX-512 versions of the q8_0 matmul and the f32 dot
// (compiled with the AVX-512 flags; called only when base/cpu.h reports
// avx512f/bw/vl). Untested on the development machine (Zen 3 has no AVX-512):
// kept small and structured like the AVX2 kernels, which they mirror with two
// q8_0 blocks per 512-bit register.
#include "tensor/kernels.h"

#include <immintrin.h>

// y[n,out] = x[n,in] @ W[out,in]^T  for q8_0 W, one weight row x one activation row at a time.
// Two blocks per step: lanes 0..7 hold block b, lanes 8..15 block b+1.
void rm_mm_q8_0_avx512(const rm_mm *m, int64_t r0, int64_t r1, int c0, int c1) {
    const int64_t nb = m->in / 32;
    const __m512i ones = _mm512_set1_epi16(1);
    for (int64_t r = r0; r < r1; r++) {
        const rm_block_q8_0 *w = (const rm_block_q8_0 *)(m->w + (size_t)r * m->w_row);
        for (int c = c0; c < c1; c++) {
            const int8_t *xq = m->qx.q + (int64_t)c * m->in;
            const float *xd = m->qx.d + (int64_t)c * nb;
            __m512 acc = _mm512_setzero_ps();
            int64_t b = 0;
            for (; b + 2 <= nb; b += 2) {
                __m256i w0 = _mm256_loadu_si256((const __m256i *)w[b].qs);
                __m256i w1 = _mm256_loadu_si256((const __m256i *)w[b + 1].qs);
                __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
                __m512i xv = _mm512_loadu_si512((const void *)(xq + 32 * b));
                // |w| * sign(x, w): negate x where w < 0, zero it where w == 0.
                __m512i aw = _mm512_abs_epi8(wv);
                __mmask64 neg = _mm512_movepi8_mask(wv), zero = _mm512_testn_epi8_mask(wv, wv);
                __m512i sx = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
                sx = _mm512_maskz_mov_epi8(~zero, sx);
                __m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), ones);
                __m256 d0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * xd[b]);
                __m256 d1 = _mm256_set1_ps(_cvtsh_ss(w[b + 1].d) * xd[b + 1]);
                __m512 d = _mm512_insertf32x8(_mm512_castps256_ps512(d0), d1, 1);
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc);
            }
            float sum = _mm512_reduce_add_ps(acc);
            for (; b < nb; b++) {
                int isum = 0;
                for (int k = 0; k < 32; k++) isum += w[b].qs[k] * xq[32 * b + k];
                sum += (float)isum * (_cvtsh_ss(w[b].d) * xd[b]);
            }
            rm_mm_store(m, c, r, sum);
        }
    }
}

float rm_dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s);
    float r = _mm512_reduce_add_ps(s);
    for (; i < n; i++) r += a[i] * b[i];
    return r;
}
