/* half_round.c — scalar rows and the dispatch (half_round.h). */
#include "kernels/half_round.h"

#include "core/fp16.h"

static void f16_row_scalar(float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = qlm_f16_to_f32(qlm_f32_to_f16(x[i]));
}

static void bf16_row_scalar(float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = qlm_bf16_to_f32(qlm_f32_to_bf16(x[i]));
}

qlm_round_row_fn qlm_round_f16_row_for(qlm_simd_level level) {
#if defined(__x86_64__) || defined(__i386__)
  if (level >= QLM_SIMD_AVX2 && qlm_cpu_detect() >= QLM_SIMD_AVX2) return qlm_round_f16_row_avx2;
#endif
  (void)level;
  return f16_row_scalar;
}

qlm_round_row_fn qlm_round_bf16_row_for(qlm_simd_level level) {
#if defined(__x86_64__) || defined(__i386__)
  if (level >= QLM_SIMD_AVX2 && qlm_cpu_detect() >= QLM_SIMD_AVX2) return qlm_round_bf16_row_avx2;
#endif
  (void)level;
  return bf16_row_scalar;
}

void qlm_round_f16_row(float *x, int64_t n) { qlm_round_f16_row_for(qlm_cpu_simd_level())(x, n); }
void qlm_round_bf16_row(float *x, int64_t n) { qlm_round_bf16_row_for(qlm_cpu_simd_level())(x, n); }
