/* q8_0x16_avx512.c — the AVX-512 VNNI kernel of the 16-row interleaved Q8_0 layout (q8_0x16.h):
 * decode GEMV and prefill GEMM in one, with qlm_vec_dot_q8_0_ref's exact arithmetic.
 *
 * Per 16-row group and block: 8 loads give each row's 32 quants (+128, unsigned) in its int32
 * lane, used as they are for up to 8 activation rows; per activation row 8 vpdpbusd against its
 * quants broadcast from memory, in two chains started from -128 sum(q) and 0, make the 16 exact
 * block sums; then the reference's float operations, unfused and in its order:
 * sum += (d_w d_x) isum.  So the result is the reference's, bit for bit. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/q8_0x16.h"
#include "kernels/x16.h"

#define NA_MAX QLM_X16_NA_MAX /* activation rows per pass over a group's weights */

static inline __attribute__((always_inline)) void group_pass(const uint8_t *wg, int64_t nb, const uint8_t *a,
                                                             size_t astride, const int NA, float *y, int64_t ldy,
                                                             uint16_t m) {
  __m512 acc[NA_MAX];
  for (int t = 0; t < NA; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++, wg += QLM_Q80X16_BLK, a += QLM_Q80X16_ABLK) {
    __m512i w[8];
    for (int j = 0; j < 8; j++) w[j] = _mm512_loadu_si512(wg + 64 * j);
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 512)));
    for (int t = 0; t < NA; t++) {
      const uint8_t *ab = a + (size_t)t * astride;
      __m512i s0 = _mm512_set1_epi32((int32_t)qlm_rd32(ab + 36)), s1 = _mm512_setzero_si512();
      for (int j = 0; j < 8; j += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[j], _mm512_set1_epi32((int32_t)qlm_rd32(ab + 4 * j)));
        s1 = _mm512_dpbusd_epi32(s1, w[j + 1], _mm512_set1_epi32((int32_t)qlm_rd32(ab + 4 * j + 4)));
      }
      __m512 da = _mm512_set1_ps(qlm_bits_to_f32(qlm_rd32(ab + 32)));
      acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1))));
    }
  }
  for (int t = 0; t < NA; t++) _mm512_mask_storeu_ps(y + t * ldy, m, acc[t]);
}

QLM_X16_PASS(pass, group_pass)

void qlm_q8_0x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy) {
  qlm_x16_drive(pass, QLM_Q80X16_BLK, QLM_Q80X16_ABLK, wx, nb, rows, g0, g1, act, T, Y, ldy);
}
