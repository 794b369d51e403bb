/* softmax.c — the reference bf16 softmax row and the dispatch (kernels/softmax.h). */
#include "kernels/softmax.h"

#include <math.h>

#include "kernels/cpu.h"

float qlm_softmax_bf16_ref(const float *row, int n, qlm_bf16 *out, int n_pad) {
  float m = qlm_row_max(row, n), sum[16] = {0}, tot = 0.0f;
  int n16 = n & ~15;
  for (int i = 0; i < n16; i += 16)
    for (int l = 0; l < 16; l++) {
      float e = qlm_softmax_exp(row[i + l] - m);
      out[i + l] = qlm_f32_to_bf16(e);
      sum[l] += e;
    }
  for (int i = n16; i < n; i++) {
    float e = qlm_softmax_exp(row[i] - m);
    out[i] = qlm_f32_to_bf16(e);
    tot += e;
  }
  for (int l = 0; l < 16; l++) tot += sum[l];
  for (int i = n; i < n_pad; i++) out[i] = 0;
  return tot;
}

float qlm_softmax_bf16(const float *row, int n, qlm_bf16 *out, int n_pad) {
  if (qlm_bgemm_fast()) return qlm_softmax_bf16_avx512bf16(row, n, out, n_pad); /* AVX-512 with BF16 */
  if (qlm_cpu_simd_level() >= QLM_SIMD_AVX512) return qlm_softmax_bf16_avx512(row, n, out, n_pad);
  if (qlm_cpu_simd_level() >= QLM_SIMD_AVX2) return qlm_softmax_bf16_avx2(row, n, out, n_pad);
  return qlm_softmax_bf16_ref(row, n, out, n_pad);
}
