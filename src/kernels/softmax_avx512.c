/* softmax_avx512.c — kernels/softmax.h's row on AVX-512F (softmax_avx512_row.h), the bf16
 * rounding of core/fp16.h on 32-bit lanes, narrowed by VPMOVDW. */
#include <immintrin.h>

#include "kernels/softmax_avx512_row.h"

/* qlm_f32_to_bf16 on 16 lanes: round to nearest even, a NaN made quiet. */
static inline __attribute__((always_inline)) __m256i to_bf16(__m512 v) {
  __m512i x = _mm512_castps_si512(v);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  __m512i quiet = _mm512_or_si512(x, _mm512_set1_epi32(0x400000)); /* bit 6 of the upper half */
  __m512i h = _mm512_srli_epi32(_mm512_mask_blend_epi32(nan, rounded, quiet), 16);
  return _mm512_cvtepi32_epi16(h);
}

float qlm_softmax_bf16_avx512(const float *row, int n, qlm_bf16 *out, int n_pad) {
  return qlm_softmax_row16(row, n, out, n_pad, to_bf16);
}
