// cpu.c — run-time CPU feature detection (CPUID + XGETBV).
//
// A feature counts only when the CPU has it *and* the OS saves its register
// state (XCR0): YMM for AVX2/FMA/F16C, opmask+ZMM for AVX-512, tile data for
// AMX (after asking the kernel for permission with arch_prctl).
//
// Four views are computed once: everything detected, AVX-512 without its bf16
// dot products and AMX, capped at AVX2, and scalar. rm_cpu() returns the view
// selected by rm_cpu_force() / RAMOLE_ISA.
#define _GNU_SOURCE
#include "base/cpu.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/syscall.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

enum { VIEW_SCALAR, VIEW_AVX2, VIEW_AVX512, VIEW_ALL };
#define N_VIEWS 4

static rm_cpu_features g_view[N_VIEWS];
static char g_desc[N_VIEWS][160];
static _Atomic int g_sel = VIEW_ALL;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
static unsigned long long read_xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(rm_cpu_features *f) {
    unsigned a, b, c, d;
    memset(f, 0, sizeof *f);
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return;
    unsigned long long xcr0 = read_xcr0();
    int ymm_ok = (xcr0 & 0x6) == 0x6;
    int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;
    int tile_ok_os = (xcr0 & 0x60000) == 0x60000;
    if (!ymm_ok) return;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    unsigned b7 = 0, c7 = 0, d7 = 0, a71 = 0;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b7, c7, d7);
        unsigned sub_max = a;
        if (sub_max >= 1) __cpuid_count(7, 1, a71, b, c, d);
    }
    f->fma = fma;
    f->f16c = f16c;
    f->avx2 = (b7 >> 5) & 1;
    f->avxvnni = (a71 >> 4) & 1;
    if (zmm_ok) {
        f->avx512f = (b7 >> 16) & 1;
        f->avx512dq = (b7 >> 17) & 1;
        f->avx512bw = (b7 >> 30) & 1;
        f->avx512vl = (b7 >> 31) & 1;
        f->avx512vnni = (c7 >> 11) & 1;
        f->avx512bf16 = (a71 >> 5) & 1;
    }
    int amx_tile = (d7 >> 24) & 1;
    if (amx_tile && tile_ok_os) {
        // Linux >= 5.16 requires a per-process permission for tile data.
        if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) {
            f->amx_bf16 = (d7 >> 22) & 1;
            f->amx_int8 = (d7 >> 25) & 1;
        }
    }
}
#else
static void detect(rm_cpu_features *f) { memset(f, 0, sizeof *f); }
#endif

static void describe(const rm_cpu_features *f, char *out, size_t cap) {
    const struct {
        const int *on;
        const char *name;
    } names[] = {
        {&f->avx2, "avx2"},
        {&f->fma, "fma"},
        {&f->f16c, "f16c"},
        {&f->avx512f, "avx512f"},
        {&f->avx512bw, "avx512bw"},
        {&f->avx512vl, "avx512vl"},
        {&f->avx512dq, "avx512dq"},
        {&f->avx512vnni, "avx512vnni"},
        {&f->avx512bf16, "avx512bf16"},
        {&f->avxvnni, "avxvnni"},
        {&f->amx_int8, "amx-int8"},
        {&f->amx_bf16, "amx-bf16"},
    };
    out[0] = 0;
    size_t len = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!*names[i].on) continue;
        size_t k = strlen(names[i].name);
        if (len + k + 2 > cap) break;
        if (len) out[len++] = ' ';
        memcpy(out + len, names[i].name, k + 1);
        len += k;
    }
    if (!len) snprintf(out, cap, "scalar");
}

static int parse_isa(const char *isa) {
    if (!isa || !*isa || strcasecmp(isa, "auto") == 0) return VIEW_ALL;
    if (strcasecmp(isa, "scalar") == 0) return VIEW_SCALAR;
    if (strcasecmp(isa, "avx2") == 0) return VIEW_AVX2;
    if (strcasecmp(isa, "avx512") == 0) return VIEW_AVX512;
    if (strcasecmp(isa, "avx512bf16") == 0) return VIEW_ALL;
    return -1;
}

static void cpu_init(void) {
    detect(&g_view[VIEW_ALL]);
    rm_cpu_features *a2 = &g_view[VIEW_AVX2];
    memset(a2, 0, sizeof *a2);
    a2->avx2 = g_view[VIEW_ALL].avx2;
    a2->fma = g_view[VIEW_ALL].fma;
    a2->f16c = g_view[VIEW_ALL].f16c;
    a2->avxvnni = g_view[VIEW_ALL].avxvnni;
    g_view[VIEW_AVX512] = g_view[VIEW_ALL]; // without the bf16 dot products and AMX
    g_view[VIEW_AVX512].avx512bf16 = g_view[VIEW_AVX512].amx_int8 = g_view[VIEW_AVX512].amx_bf16 = 0;
    memset(&g_view[VIEW_SCALAR], 0, sizeof g_view[VIEW_SCALAR]);
    for (int i = 0; i < N_VIEWS; i++) describe(&g_view[i], g_desc[i], sizeof g_desc[i]);
    int sel = parse_isa(getenv("RAMOLE_ISA"));
    if (sel >= 0) atomic_store(&g_sel, sel);
}

const rm_cpu_features *rm_cpu(void) {
    pthread_once(&g_once, cpu_init);
    return &g_view[atomic_load(&g_sel)];
}

void rm_cpu_force(const char *isa) {
    pthread_once(&g_once, cpu_init);
    int sel = parse_isa(isa);
    atomic_store(&g_sel, sel >= 0 ? sel : VIEW_ALL);
}

const char *rm_cpu_describe(void) {
    pthread_once(&g_once, cpu_init);
    return g_desc[atomic_load(&g_sel)];
}
