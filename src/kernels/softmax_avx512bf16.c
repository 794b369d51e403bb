/* softmax_avx512bf16.c — kernels/softmax.h's row (softmax_avx512_row.h) with the bf16 rounding by
 * VCVTNEPS2BF16 (compiled with -mavx512bf16; called only where the CPU has it).  Its rounding is
 * core/fp16.h's for every weight the row makes: to nearest even, a NaN made quiet ((x >> 16) |
 * 0x40), and it flushes subnormal inputs to zero, but no e^x of qlm_softmax_exp is subnormal. */
#include <immintrin.h>

#include "kernels/softmax_avx512_row.h"

static inline __attribute__((always_inline)) __m256i to_bf16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

float qlm_softmax_bf16_avx512bf16(const float *row, int n, qlm_bf16 *out, int n_pad) {
  return qlm_softmax_row16(row, n, out, n_pad, to_bf16);
}
