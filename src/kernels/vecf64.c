/* vecf64.c — scalar reference and dispatch of vecf64.h. */
#include "kernels/vecf64.h"

#include "kernels/cpu.h"

void qlm_sub_scaled_f64_scalar(double *y, double a, const double *x, int64_t n) {
  for (int64_t j = 0; j < n; j++) y[j] -= a * x[j]; /* C11, no contraction: a rounded product */
}

qlm_sub_scaled_f64_fn qlm_sub_scaled_f64_best(void) {
  return qlm_cpu_simd_level() >= QLM_SIMD_AVX512 ? qlm_sub_scaled_f64_avx512 : qlm_sub_scaled_f64_scalar;
}
