/* cpu.c — run-time SIMD detection.
 *
 * A feature is usable only if the CPU reports it (cpuid) AND the OS saves the register state
 * on context switches (OSXSAVE + XCR0 bits read with xgetbv): YMM state for AVX2, plus
 * opmask/ZMM state for AVX-512. */
#include "kernels/cpu.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}
#endif

static qlm_simd_level g_detected = QLM_SIMD_SCALAR;
static bool g_vnni = false;
static bool g_bf16 = false; /* AVX512_BF16: cpuid leaf 7 subleaf 1, eax bit 5 */
static qlm_simd_level g_level = QLM_SIMD_SCALAR;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void detect(void) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return;
  bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!osxsave || !avx) return;
  uint64_t xcr0 = read_xcr0();
  bool os_ymm = (xcr0 & 0x6) == 0x6;      /* SSE + AVX state */
  bool os_zmm = (xcr0 & 0xe6) == 0xe6;    /* + opmask, ZMM_Hi256, Hi16_ZMM */
  if (__get_cpuid_max(0, NULL) < 7) return;
  __cpuid_count(7, 0, a, b, c, d);
  bool avx2 = b & (1u << 5);
  bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  bool vnni = c & (1u << 11);
  unsigned max_sub = a; /* leaf 7 subleaf 0: eax = the highest subleaf */
  bool bf16 = false;
  if (max_sub >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    bf16 = a & (1u << 5);
  }
  if (os_ymm && avx2 && fma && f16c) g_detected = QLM_SIMD_AVX2;
  if (g_detected == QLM_SIMD_AVX2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl) {
    g_detected = QLM_SIMD_AVX512;
    g_vnni = vnni;
    g_bf16 = bf16;
  }
#endif
}

static void init(void) {
  detect();
  g_level = g_detected;
  const char *env = getenv("QLM_SIMD");
  if (env && *env) {
    qlm_simd_level want = g_level;
    if (strcmp(env, "scalar") == 0) want = QLM_SIMD_SCALAR;
    else if (strcmp(env, "avx2") == 0) want = QLM_SIMD_AVX2;
    else if (strcmp(env, "avx512") == 0) want = QLM_SIMD_AVX512;
    else if (strcmp(env, "avx512-nobf16") == 0) want = QLM_SIMD_AVX512, g_bf16 = false; /* as Skylake-SP..Ice Lake */
    else fprintf(stderr, "qlm: QLM_SIMD=%s: unknown level (scalar, avx2, avx512, avx512-nobf16); using %s\n", env,
                 qlm_simd_name(g_level));
    if (want < g_level) g_level = want;
  }
}

qlm_simd_level qlm_cpu_detect(void) {
  pthread_once(&g_once, init);
  return g_detected;
}

bool qlm_cpu_has_avx512_vnni(void) {
  pthread_once(&g_once, init);
  return g_vnni;
}

bool qlm_cpu_has_avx512_bf16(void) {
  pthread_once(&g_once, init);
  return g_bf16;
}

qlm_simd_level qlm_cpu_simd_level(void) {
  pthread_once(&g_once, init);
  return g_level;
}

const char *qlm_simd_name(qlm_simd_level level) {
  switch (level) {
  case QLM_SIMD_SCALAR: return "scalar";
  case QLM_SIMD_AVX2: return "avx2";
  case QLM_SIMD_AVX512: return "avx512";
  }
  return "?";
}
