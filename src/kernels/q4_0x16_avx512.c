/* q4_0x16_avx512.c — the AVX-512 VNNI kernel of the 16-row interleaved Q4_0 layout (q4_0x16.h):
 * decode GEMV and prefill GEMM in one.
 *
 * Per 16-row group and block: 4 loads give each row's 32 codes in its int32 lane (low nibbles of
 * load j: codes 4j..4j+3, high nibbles: codes 16+4j..16+4j+3), unpacked once by and / shift-and
 * and used for up to 8 activation rows.  Per activation row: 8 vpdpbusd against its quants
 * broadcast from memory (4 bytes to every lane, folded into the instruction), started from its
 * -8 * sum(q); then one multiply d_w * d_x, one conversion and one fused multiply-add into that
 * row's 16 float sums.  So per block of 16 x 32 weights and 8 activation rows: 64 vpdpbusd, 13
 * weight operations and 24 float ones, nothing repacked per call; a thread's groups are one
 * sequential stream of memory.  With 1 or 2 activation rows (decode) the 8 vpdpbusd are split in
 * two chains (lo, hi) summed at the end, so a block does not wait on one 8-long dependency chain;
 * the integer sums are exact either way. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "kernels/q4_0x16.h"

#define NA_MAX 8 /* activation rows per pass over a group's weights */

static inline int32_t rd32(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

static inline float rdf(const uint8_t *p) {
  float v;
  memcpy(&v, p, 4);
  return v;
}

/* NA activation rows (act blocks at a + t * astride) with one group (wg): 16 sums each, stored
 * to y + t * ldy under mask m (the group's rows that exist). */
static inline __attribute__((always_inline)) void group_pass(const uint8_t *wg, int64_t nb, const uint8_t *a,
                                                             size_t astride, const int NA, float *y, int64_t ldy,
                                                             __mmask16 m) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[NA_MAX];
  for (int t = 0; t < NA; t++) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++, wg += QLM_Q4X16_BLK, a += QLM_Q4X16_ABLK) {
    __m512i lo[4], hi[4];
    for (int j = 0; j < 4; j++) {
      __m512i v = _mm512_loadu_si512(wg + 64 * j);
      lo[j] = _mm512_and_si512(v, m4);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
    __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(wg + 256)));
    for (int t = 0; t < NA; t++) {
      const uint8_t *ab = a + (size_t)t * astride;
      __m512i s = _mm512_set1_epi32(rd32(ab + 36));
      if (NA <= 2) {
        __m512i s1 = _mm512_setzero_si512();
        for (int j = 0; j < 4; j++) {
          s = _mm512_dpbusd_epi32(s, lo[j], _mm512_set1_epi32(rd32(ab + 4 * j)));
          s1 = _mm512_dpbusd_epi32(s1, hi[j], _mm512_set1_epi32(rd32(ab + 16 + 4 * j)));
        }
        s = _mm512_add_epi32(s, s1);
      } else {
        for (int j = 0; j < 4; j++) s = _mm512_dpbusd_epi32(s, lo[j], _mm512_set1_epi32(rd32(ab + 4 * j)));
        for (int j = 0; j < 4; j++) s = _mm512_dpbusd_epi32(s, hi[j], _mm512_set1_epi32(rd32(ab + 16 + 4 * j)));
      }
      __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(rdf(ab + 32)));
      acc[t] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(s), acc[t]);
    }
  }
  for (int t = 0; t < NA; t++) _mm512_mask_storeu_ps(y + t * ldy, m, acc[t]);
}

/* Groups are taken a batch at a time (about WBATCH_BYTES of weights, kept in L2), and every
 * NA_MAX activation rows (L1) pass over the whole batch: activations are read once per batch, not
 * once per group (at 128 rows x 11008 columns they are 1.8 MB, more than L2). */
#define WBATCH_BYTES (256 * 1024)

static void pass(const uint8_t *wg, int64_t nb, const uint8_t *a, size_t astride, int64_t na, float *y, int64_t ldy,
                 __mmask16 m) {
  switch (na) {
  case 1: group_pass(wg, nb, a, astride, 1, y, ldy, m); break;
  case 2: group_pass(wg, nb, a, astride, 2, y, ldy, m); break;
  case 3: group_pass(wg, nb, a, astride, 3, y, ldy, m); break;
  case 4: group_pass(wg, nb, a, astride, 4, y, ldy, m); break;
  case 5: group_pass(wg, nb, a, astride, 5, y, ldy, m); break;
  case 6: group_pass(wg, nb, a, astride, 6, y, ldy, m); break;
  case 7: group_pass(wg, nb, a, astride, 7, y, ldy, m); break;
  default: group_pass(wg, nb, a, astride, 8, y, ldy, m); break;
  }
}

void qlm_q4_0x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy) {
  size_t gbytes = (size_t)nb * QLM_Q4X16_BLK, astride = (size_t)nb * QLM_Q4X16_ABLK;
  int64_t batch = gbytes ? (int64_t)(WBATCH_BYTES / gbytes) : 1;
  if (batch < 1 || T <= NA_MAX) batch = T <= NA_MAX ? g1 - g0 : 1;
  for (int64_t gb = g0; gb < g1; gb += batch) {
    int64_t ge = g1 - gb < batch ? g1 : gb + batch;
    for (int64_t t0 = 0; t0 < T; t0 += NA_MAX) {
      int64_t na = T - t0 < NA_MAX ? T - t0 : NA_MAX;
      for (int64_t g = gb; g < ge; g++) {
        int64_t r0 = g * QLM_Q4X16_ROWS, nv = rows - r0 < QLM_Q4X16_ROWS ? rows - r0 : QLM_Q4X16_ROWS;
        pass((const uint8_t *)wx + (size_t)g * gbytes, nb, (const uint8_t *)act + (size_t)t0 * astride, astride, na,
             Y + t0 * ldy + r0, ldy, (__mmask16)((1u << nv) - 1));
      }
    }
  }
}
