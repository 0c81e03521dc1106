// cpu.h — run-time CPU feature detection (CPUID + XGETBV), used to pick kernels.
#ifndef RM_BASE_CPU_H
#define RM_BASE_CPU_H

typedef struct rm_cpu_features {
    int avx2, fma, f16c;
    int avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16;
    int avxvnni;
    int amx_int8, amx_bf16; // usable only after the OS grants tile data (cpu.c asks)
} rm_cpu_features;

const rm_cpu_features *rm_cpu(void);
// Overrides detection (tests use it to force the scalar path): "scalar",
// "avx2", "avx512" (without the bf16 dot products and AMX), "avx512bf16" or
// NULL/"auto" (everything detected). Also read from env RAMOLE_ISA at first use.
void rm_cpu_force(const char *isa);
// Short description, e.g. "avx2 fma f16c".
const char *rm_cpu_describe(void);
#endif
