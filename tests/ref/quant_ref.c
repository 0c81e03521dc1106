// quant_ref.c - goldens for ramole's quantized formats (q8_0, q4_0, q4_1,
// q5_0, q5_1, q4_K, q5_K, q6_K, q3_K) from ggml itself: loads llama.cpp's prebuilt
// libggml-base.so (the one ../shared/tools/llamacpp-bench/build.sh fetches),
// quantizes a few rows of made-up floats with ggml's reference quantizers
// (quantize_row_<type>_ref) and dequantizes the blocks with ggml's
// dequantize_row_<type>. Run once, from the repo root:
//
//   cc -O1 -o /tmp/quant_ref tests/ref/quant_ref.c -ldl -lm
//   /tmp/quant_ref LIB tests/ref/quant.golden
//
// where LIB is ~/.cache/ramole-llamacpp-bench/bins/package/bins/linux-x64/libggml-base.so.
//
// Golden layout (little-endian): b"RMQNTG01", u32 n_types, then per type
// u32 ggml type id, u32 rows, u32 n (elements a row), u32 row_bytes, then per
// row f32 x[n], the row's blocks (row_bytes bytes, ggml's quantizer),
// f32 y[n] (ggml's dequantization of those blocks).
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*quant_fn)(const float *x, void *y, int64_t k);
typedef void (*dequant_fn)(const void *x, float *y, int64_t k);

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static double urand(void) { // uniform in [0, 1)
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * 0x1p-53;
}
static double nrand(void) { // standard normal (Box-Muller)
    double u = urand(), v = urand();
    return sqrt(-2 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

// Row kinds: weights-like normals, normals with outliers, all positive
// (exercises the mins), mostly zeros with a few values, tiny magnitudes.
static void fill(float *x, int n, int kind) {
    for (int i = 0; i < n; i++) {
        double v = nrand() * 0.02;
        switch (kind) {
        case 1: if (i % 37 == 3) v *= 12; break;
        case 2: v = fabs(v) + 0.01; break;
        case 3: v = i % 11 == 0 ? v * 5 : 0; break;
        case 4: v *= 1e-3; break;
        }
        x[i] = (float)v;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s libggml-base.so out.golden\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    struct {
        int id;
        const char *quant, *dequant;
        int bytes;
        int blk;
    } types[] = {{8, "quantize_row_q8_0_ref", "dequantize_row_q8_0", 34, 32},
                 {2, "quantize_row_q4_0_ref", "dequantize_row_q4_0", 18, 32},
                 {3, "quantize_row_q4_1_ref", "dequantize_row_q4_1", 20, 32},
                 {6, "quantize_row_q5_0_ref", "dequantize_row_q5_0", 22, 32},
                 {7, "quantize_row_q5_1_ref", "dequantize_row_q5_1", 24, 32},
                 {12, "quantize_row_q4_K_ref", "dequantize_row_q4_K", 144, 256},
                 {13, "quantize_row_q5_K_ref", "dequantize_row_q5_K", 176, 256},
                 {14, "quantize_row_q6_K_ref", "dequantize_row_q6_K", 210, 256},
                 {11, "quantize_row_q3_K_ref", "dequantize_row_q3_K", 110, 256}};
    const int NT = (int)(sizeof types / sizeof types[0]);
    enum { ROWS = 5, N = 512 };
    FILE *f = fopen(argv[2], "wb");
    if (!f) return 1;
    uint32_t hdr[1] = {(uint32_t)NT};
    fwrite("RMQNTG01", 1, 8, f);
    fwrite(hdr, 4, 1, f);
    float x[N], y[N];
    uint8_t blocks[N / 32 * 34];
    for (int t = 0; t < NT; t++) {
        quant_fn q = (quant_fn)dlsym(lib, types[t].quant);
        dequant_fn d = (dequant_fn)dlsym(lib, types[t].dequant);
        if (!q || !d) {
            fprintf(stderr, "missing %s / %s\n", types[t].quant, types[t].dequant);
            return 1;
        }
        uint32_t th[4] = {(uint32_t)types[t].id, ROWS, N, (uint32_t)(N / types[t].blk * types[t].bytes)};
        fwrite(th, 4, 4, f);
        for (int r = 0; r < ROWS; r++) {
            fill(x, N, r);
            q(x, blocks, N);
            d(blocks, y, N);
            fwrite(x, 4, N, f);
            fwrite(blocks, 1, th[3], f);
            fwrite(y, 4, N, f);
        }
    }
    fclose(f);
    return 0;
}
