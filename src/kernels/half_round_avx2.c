/* half_round_avx2.c — rows rounded to half (F16C) or bfloat16 (integer rounding), 8 at a time. */
#include <immintrin.h>

#include "core/fp16.h"
#include "kernels/half_round.h"

void qlm_round_f16_row_avx2(float *x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; i++) x[i] = qlm_f16_to_f32(qlm_f32_to_f16(x[i]));
}

/* bits + 0x7fff + (bit 16) then clear the low half: round to nearest even on the bit pattern,
 * exactly qlm_f32_to_bf16 for every non-NaN float (a carry into the exponent is the correct
 * rounding up to the next binade or to infinity). */
void qlm_round_bf16_row_avx2(float *x, int64_t n) {
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), hi = _mm256_set1_epi32((int)0xffff0000u);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    __m256i b = _mm256_castps_si256(v);
    __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(b, 16), one)));
    __m256 out = _mm256_castsi256_ps(_mm256_and_si256(r, hi));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q); /* NaN stays NaN */
    _mm256_storeu_ps(x + i, _mm256_blendv_ps(out, v, nan));
  }
  for (; i < n; i++) x[i] = qlm_bf16_to_f32(qlm_f32_to_bf16(x[i]));
}
