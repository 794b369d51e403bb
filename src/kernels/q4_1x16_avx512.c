/* q4_1x16_avx512.c — the AVX-512 VNNI kernel of the 16-row interleaved Q4_1 layout (q4_1x16.h):
 * decode GEMV and prefill GEMM in one, with qlm_vec_dot_q4_1_ref's exact arithmetic.
 *
 * Per 16-row group and block: 4 loads give each row's 32 codes in its int32 lane (low nibbles of
 * load j: codes 4j..4j+3, high nibbles: codes 16+4j..16+4j+3), unpacked once by and / shift-and
 * and used for up to 8 activation rows; per activation row 8 vpdpbusd against its quants
 * broadcast from memory (codes are 0..15, no offset) make the 16 rows' exact sums, in two chains
 * (lo, hi) so a block does not wait on one 8-long dependency chain.  Then the reference's float
 * operations, unfused and in its order: sum += (d_w d_x) isum + m_w s_x.  So the result is the
 * reference's, bit for bit. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/q4_1x16.h"
#include "kernels/x16.h"

#define NA_MAX QLM_X16_NA_MAX /* activation rows per pass over a group's weights */

static inline __attribute__((always_inline)) void group_pass(const uint8_t *wg, int64_t nb, const uint8_t *a,
                                                             size_t astride, const int NA, float *y, int64_t ldy,
                                                             uint16_t m) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[NA_MAX];
  for (int t = 0; t < NA; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++, wg += QLM_Q41X16_BLK, a += QLM_Q41X16_ABLK) {
    __m512i lo[4], hi[4];
    for (int j = 0; j < 4; j++) {
      __m512i v = _mm512_loadu_si512(wg + 64 * j);
      lo[j] = _mm512_and_si512(v, m4);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 256)));
    __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 288)));
    for (int t = 0; t < NA; t++) {
      const uint8_t *ab = a + (size_t)t * astride;
      __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 4; j++) {
        s0 = _mm512_dpbusd_epi32(s0, lo[j], _mm512_set1_epi32((int32_t)qlm_rd32(ab + 4 * j)));
        s1 = _mm512_dpbusd_epi32(s1, hi[j], _mm512_set1_epi32((int32_t)qlm_rd32(ab + 16 + 4 * j)));
      }
      __m512i s = _mm512_add_epi32(s0, s1);
      __m512 da = _mm512_set1_ps(qlm_bits_to_f32(qlm_rd32(ab + 32)));
      __m512 sa = _mm512_set1_ps(qlm_bits_to_f32(qlm_rd32(ab + 36)));
      __m512 term = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(s)), _mm512_mul_ps(mw, sa));
      acc[t] = _mm512_add_ps(acc[t], term);
    }
  }
  for (int t = 0; t < NA; t++) _mm512_mask_storeu_ps(y + t * ldy, m, acc[t]);
}

QLM_X16_PASS(pass, group_pass)

void qlm_q4_1x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy) {
  qlm_x16_drive(pass, QLM_Q41X16_BLK, QLM_Q41X16_ABLK, wx, nb, rows, g0, g1, act, T, Y, ldy);
}
