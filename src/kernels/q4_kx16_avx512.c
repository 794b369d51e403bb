/* q4_kx16_avx512.c — the AVX-512 VNNI kernel of the 16-row interleaved Q4_K layout (q4_kx16.h):
 * decode GEMV and prefill GEMM in one, with qlm_vec_dot_q4_k_ref's exact arithmetic.
 *
 * Per 16-row group and super-block, sub-block by sub-block: 8 loads and an and (even j) or a
 * shift-and (odd j) give the 32 codes of each row in its int32 lane, used for up to 8 activation
 * rows; per activation row 8 vpdpbusd against its quants broadcast from memory make the 16 exact
 * sub-block sums, times the 16 rows' 6-bit scales (vpmulld) into isum.  The mins: 4 vpdpwssd of
 * the rows' (mn_2k, mn_2k+1) pairs with the activation's sub-block sums make imin.  Then the
 * reference's float operations, unfused and in its order: sum += (d_x d) isum - (d_x dmin) imin.
 * So the result is the reference's, bit for bit. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/q4_kx16.h"
#include "kernels/x16.h"

#define NA_MAX QLM_X16_NA_MAX /* activation rows per pass over a group's weights */

/* One sub-block's 16 exact sums: codes w[0..8) (4 per row per register) . the 32 quants at q. */
static inline __attribute__((always_inline)) __m512i sub_block_sum(const __m512i w[8], const uint8_t *q) {
  __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
  for (int r = 0; r < 8; r += 2) {
    s0 = _mm512_dpbusd_epi32(s0, w[r], _mm512_set1_epi32((int32_t)qlm_rd32(q + 4 * r)));
    s1 = _mm512_dpbusd_epi32(s1, w[r + 1], _mm512_set1_epi32((int32_t)qlm_rd32(q + 4 * r + 4)));
  }
  return _mm512_add_epi32(s0, s1);
}

/* Sub-block j of a super-block for NA activation rows: isum[t] += sc_j * (codes . quants)_j. */
static inline __attribute__((always_inline)) void sub_block(const uint8_t *wg, const uint8_t *a, size_t astride,
                                                            const int NA, int j, __m512i *isum) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  const uint8_t *wp = wg + 512 * (j / 2); /* the low (even j) or high (odd j) nibbles of pair j / 2 */
  __m512i w[8];
  for (int r = 0; r < 8; r++) {
    __m512i v = _mm512_loadu_si512(wp + 64 * r);
    w[r] = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v, 4) : v, m4);
  }
  __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wg + 2048 + 16 * j)));
  for (int t = 0; t < NA; t++)
    isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(sub_block_sum(w, a + (size_t)t * astride + 32 * j), sc));
}

static inline __attribute__((always_inline)) void group_pass(const uint8_t *wg, int64_t nsb, const uint8_t *a,
                                                             size_t astride, const int NA, float *y, int64_t ldy,
                                                             uint16_t msk) {
  __m512 acc[NA_MAX];
  for (int t = 0; t < NA; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t s = 0; s < nsb; s++, wg += QLM_Q4KX16_BLK, a += QLM_Q4KX16_ABLK) {
    __m512i isum[NA_MAX], imin[NA_MAX];
    for (int t = 0; t < NA; t++) isum[t] = imin[t] = _mm512_setzero_si512();
    /* decode (one or two activation rows): the sub-block loop unrolled, so its addresses are
     * constants (per-j address arithmetic was a third of the instructions; 2 threads read 0.72 of
     * the plain-read bandwidth from L3 before, 0.95 after); with more rows the loop stays rolled
     * (unrolled, their registers spill: pp128 4% slower) */
    if (NA <= 2) {
#pragma GCC unroll 8
      for (int j = 0; j < 8; j++) sub_block(wg, a, astride, NA, j, isum);
    } else {
      for (int j = 0; j < 8; j++) sub_block(wg, a, astride, NA, j, isum);
    }
    for (int k = 0; k < 4; k++) {
      __m512i mn = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(wg + 2176 + 32 * k)));
      for (int t = 0; t < NA; t++)
        imin[t] = _mm512_dpwssd_epi32(imin[t], mn, _mm512_set1_epi32((int32_t)qlm_rd32(a + (size_t)t * astride + 260 + 4 * k)));
    }
    __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 2304)));
    __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 2336)));
    for (int t = 0; t < NA; t++) {
      __m512 dy = _mm512_set1_ps(qlm_bits_to_f32(qlm_rd32(a + (size_t)t * astride + 256)));
      __m512 hi = _mm512_mul_ps(_mm512_mul_ps(dy, d), _mm512_cvtepi32_ps(isum[t]));
      __m512 lo = _mm512_mul_ps(_mm512_mul_ps(dy, dmin), _mm512_cvtepi32_ps(imin[t]));
      acc[t] = _mm512_add_ps(acc[t], _mm512_sub_ps(hi, lo));
    }
  }
  for (int t = 0; t < NA; t++) _mm512_mask_storeu_ps(y + t * ldy, msk, acc[t]);
}

QLM_X16_PASS(pass, group_pass)

void qlm_q4_kx16_gemm_avx512vnni(const void *wx, int64_t nsb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy) {
  qlm_x16_drive(pass, QLM_Q4KX16_BLK, QLM_Q4KX16_ABLK, wx, nsb, rows, g0, g1, act, T, Y, ldy);
}
