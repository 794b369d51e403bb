/* cpu.h — which SIMD kernels this machine can run, decided once at run time.
 *
 * Levels are ordered: a machine that runs a level runs every lower one.  The environment
 * variable QLM_SIMD=scalar|avx2|avx512 caps the level (to test or benchmark the fallbacks);
 * it can never raise it above what the CPU and OS support. */
#ifndef QLM_CPU_H
#define QLM_CPU_H

#include <stdbool.h>

typedef enum qlm_simd_level {
  QLM_SIMD_SCALAR = 0, /* portable C */
  QLM_SIMD_AVX2 = 1,   /* AVX2 + FMA + F16C */
  QLM_SIMD_AVX512 = 2, /* AVX-512 F + BW + VL + DQ (+ the AVX2 set) */
} qlm_simd_level;

/* What the CPU and OS support (cpuid + xgetbv), ignoring QLM_SIMD. Cached. */
qlm_simd_level qlm_cpu_detect(void);
/* AVX-512 VNNI is usable (only meaningful when qlm_cpu_detect() == QLM_SIMD_AVX512). */
bool qlm_cpu_has_avx512_vnni(void);
/* AVX-512 BF16 (VDPBF16PS) is usable (only meaningful when qlm_cpu_detect() == QLM_SIMD_AVX512). */
bool qlm_cpu_has_avx512_bf16(void);
/* The level the kernels use: qlm_cpu_detect() capped by QLM_SIMD. Cached on first call. */
qlm_simd_level qlm_cpu_simd_level(void);
/* "scalar", "avx2", "avx512". */
const char *qlm_simd_name(qlm_simd_level level);

#endif
