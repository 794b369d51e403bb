/* bnb4_avx2.c — AVX2 dot product of NF4/FP4 blocks (kernels/bnb4.h) with f32 activations.
 *
 * The 16-entry code table, scaled per block by the block's absmax (so the looked-up values are
 * exactly the reference dequantizer's fl(absmax * code[u])), sits in two ymm: entries 0..7 and
 * 8..15.  vpermps looks up both halves by the low 3 bits of the code, and bit 3 picks one with
 * blendv (which reads the sign bit, where a shift by 28 moves bit 3).  Products go into four
 * FMA accumulators, summed at the end: the reference's products rounded in another order. */
#include <immintrin.h>
#include <string.h>

#include "kernels/bnb4.h"

static inline __m256 lookup(__m256 lo, __m256 hi, __m256i idx) {
  __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), sel);
}

float qlm_vec_dot_bnb4_avx2(int type, const void *w, const void *a, int64_t n) {
  const float *code = qlm_bnb4_code(type);
  const __m256 tlo = _mm256_loadu_ps(code), thi = _mm256_loadu_ps(code + 8);
  const uint8_t *b = w;
  const float *x = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / QLM_BNB4_BLOCK; k++, b += QLM_BNB4_BLOCK_BYTES, x += QLM_BNB4_BLOCK) {
    float amax;
    memcpy(&amax, b, 4);
    const __m256 s = _mm256_set1_ps(amax);
    const __m256 lo = _mm256_mul_ps(tlo, s), hi = _mm256_mul_ps(thi, s);
    /* 8 code bytes at a time: byte j holds weight j (low nibble) and j + 32 (high nibble). */
    for (int j = 0; j < 32; j += 16) {
      __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 4 + j)));
      __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 12 + j)));
      /* low nibbles need no mask: vpermps reads bits 0..2, the shift by 28 drops bits 4..7 */
      acc0 = _mm256_fmadd_ps(lookup(lo, hi, c0), _mm256_loadu_ps(x + j), acc0);
      acc1 = _mm256_fmadd_ps(lookup(lo, hi, c1), _mm256_loadu_ps(x + j + 8), acc1);
      acc2 = _mm256_fmadd_ps(lookup(lo, hi, _mm256_srli_epi32(c0, 4)), _mm256_loadu_ps(x + j + 32), acc2);
      acc3 = _mm256_fmadd_ps(lookup(lo, hi, _mm256_srli_epi32(c1, 4)), _mm256_loadu_ps(x + j + 40), acc3);
    }
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}
