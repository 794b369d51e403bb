/* q5_0x16_avx512.c — the AVX-512 VNNI kernel of the 16-row interleaved Q5_0 layout (q5_0x16.h):
 * decode GEMV and prefill GEMM in one, with qlm_vec_dot_q5_0_ref's exact arithmetic.
 *
 * Per 16-row group and block: 4 loads give each row's 32 low nibbles in its int32 lane (as for
 * Q4_0) and one more its 32 fifth bits, stored so that one 16-bit shift of that register per load
 * brings the bits to bit 4 of the bytes they belong to (q5_0x16.h); one vpternlogd per register
 * merges them (nibble | (bits & 0x10)).  The 5-bit codes 0..31 then serve up to 8 activation rows:
 * per row 8 vpdpbusd against its quants broadcast from memory, in two chains started from -16 sum(q)
 * and 0, make the exact block sums; then the reference's float operations, unfused and in its
 * order: sum += (d_w d_x) isum.  So the result is the reference's, bit for bit. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/q5_0x16.h"
#include "kernels/x16.h"

#define NA_MAX QLM_X16_NA_MAX /* activation rows per pass over a group's weights */
#define OR_AND 0xF8           /* vpternlogd: a | (b & c) */

static inline __attribute__((always_inline)) void group_pass(const uint8_t *wg, int64_t nb, const uint8_t *a,
                                                             size_t astride, const int NA, float *y, int64_t ldy,
                                                             uint16_t m) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m16 = _mm512_set1_epi8(0x10);
  __m512 acc[NA_MAX];
  for (int t = 0; t < NA; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++, wg += QLM_Q50X16_BLK, a += QLM_Q50X16_ABLK) {
    __m512i lo[4], hi[4], qh = _mm512_loadu_si512(wg + 256);
    for (int j = 0; j < 4; j++) {
      __m512i v = _mm512_loadu_si512(wg + 64 * j);
      lo[j] = _mm512_ternarylogic_epi32(_mm512_and_si512(v, m4), _mm512_slli_epi16(qh, 4 - j), m16, OR_AND);
      hi[j] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(v, 4), m4), _mm512_srli_epi16(qh, j), m16,
                                        OR_AND);
    }
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 320)));
    for (int t = 0; t < NA; t++) {
      const uint8_t *ab = a + (size_t)t * astride;
      __m512i s0 = _mm512_set1_epi32((int32_t)qlm_rd32(ab + 36)), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 4; j++) {
        s0 = _mm512_dpbusd_epi32(s0, lo[j], _mm512_set1_epi32((int32_t)qlm_rd32(ab + 4 * j)));
        s1 = _mm512_dpbusd_epi32(s1, hi[j], _mm512_set1_epi32((int32_t)qlm_rd32(ab + 16 + 4 * j)));
      }
      __m512 da = _mm512_set1_ps(qlm_bits_to_f32(qlm_rd32(ab + 32)));
      acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1))));
    }
  }
  for (int t = 0; t < NA; t++) _mm512_mask_storeu_ps(y + t * ldy, m, acc[t]);
}

QLM_X16_PASS(pass, group_pass)

void qlm_q5_0x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy) {
  qlm_x16_drive(pass, QLM_Q50X16_BLK, QLM_Q50X16_ABLK, wx, nb, rows, g0, g1, act, T, Y, ldy);
}
