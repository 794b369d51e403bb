/* gemm_q_avx2.c — the AVX2 tile kernel of the blocked int8 GEMM (layouts in gemm_q.h).
 *
 * As the AVX-512 kernel with 8 lanes: a register holds half of an activation group (acts 2h and
 * 2h + 1) x the 4 rows of a weight group, lane 4c + r as in the layout, so the data are the same.
 * vpdpbusd is emulated by vpmaddubsw (u8 x s8 -> pairs summed in int16) and vpmaddwd with ones:
 * exact only while 2 * max(u) * 127 fits int16, i.e. codes u <= 128 — true for every covered type
 * but Q8_0 (u = q + 128 up to 255), which qlm_gemm_q_fast therefore leaves to the dequantizing
 * path at this level.  One weight group x up to 2 activation groups (4 halves) per pass: 8
 * accumulators, within AVX2's 16 registers. */
#include <immintrin.h>

#include "kernels/gemm_q.h"

static inline __attribute__((always_inline)) void pass(const uint8_t *w, const uint8_t *ap, const int NH, size_t ag,
                                                       int64_t b0, int64_t b1, int has_min, float *out) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[4];
  /* half j: activation group j / 2, acts 2 (j % 2) and 2 (j % 2) + 1 */
  for (int j = 0; j < NH; j++) acc[j] = _mm256_loadu_ps(out + (j / 2) * 16 + 8 * (j % 2));
  for (int64_t b = b0; b < b1; b++) {
    const uint8_t *wb = w + (size_t)b * QLM_GQ_WBLK, *a[4];
    for (int j = 0; j < NH; j++) a[j] = ap + (size_t)(j / 2) * ag + (size_t)b * QLM_GQ_ABLK + 32 * (j % 2);
    __m256i is[4];
    for (int j = 0; j < NH; j++) is[j] = _mm256_loadu_si256((const __m256i *)(a[j] + 512));
    for (int k = 0; k < 8; k++) {
      __m256i wv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(wb + 16 * k)));
      for (int j = 0; j < NH; j++) {
        __m256i p = _mm256_maddubs_epi16(wv, _mm256_loadu_si256((const __m256i *)(a[j] + 64 * k)));
        is[j] = _mm256_add_epi32(is[j], _mm256_madd_epi16(p, ones));
      }
    }
    __m256 dw = _mm256_broadcast_ps((const __m128 *)(wb + 128));
    __m256 mw = has_min ? _mm256_broadcast_ps((const __m128 *)(wb + 144)) : _mm256_setzero_ps();
    for (int j = 0; j < NH; j++) {
      __m256 da = _mm256_loadu_ps((const float *)(a[j] + 576));
      acc[j] = _mm256_fmadd_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(is[j]), acc[j]);
      if (has_min) acc[j] = _mm256_fmadd_ps(mw, _mm256_loadu_ps((const float *)(a[j] + 640)), acc[j]);
    }
  }
  for (int j = 0; j < NH; j++) _mm256_storeu_ps(out + (j / 2) * 16 + 8 * (j % 2), acc[j]);
}

void qlm_gemm_q_tile_avx2(const uint8_t *wp, int nrg, const uint8_t *ap, int ncg, int64_t nb, int64_t b0, int64_t b1,
                          int has_min, float *acc) {
  const size_t wg = (size_t)nb * QLM_GQ_WBLK, ag = (size_t)nb * QLM_GQ_ABLK;
  for (int rg = 0; rg < nrg; rg++)
    for (int cg = 0; cg < ncg; cg += 2) {
      const uint8_t *w = wp + (size_t)rg * wg, *a = ap + (size_t)cg * ag;
      float *o = acc + (4 * rg + cg) * 16;
      if (ncg - cg >= 2) {
        if (has_min) pass(w, a, 4, ag, b0, b1, 1, o);
        else pass(w, a, 4, ag, b0, b1, 0, o);
      } else {
        if (has_min) pass(w, a, 2, ag, b0, b1, 1, o);
        else pass(w, a, 2, ag, b0, b1, 0, o);
      }
    }
}
