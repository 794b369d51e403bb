/* q4_1x16.c — the 16-row interleaved Q4_1 layout (q4_1x16.h): packing, the activation blocks and
 * the scalar reference kernel. */
#include "kernels/q4_1x16.h"

#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "kernels/gemm_q.h"
#include "kernels/qdot.h"

#define QK 32
#define ROWS 16
#define WB 20 /* bytes of a file block: half d, half m, 16 nibble bytes */

size_t qlm_q4_1x16_bytes(int64_t rows, int64_t cols) {
  size_t groups = (size_t)((rows + ROWS - 1) / ROWS), per, total;
  if (rows < 0 || cols < 0 || cols % QK) return 0;
  if (qlm_mul_overflow((size_t)(cols / QK), QLM_Q41X16_BLK, &per) || qlm_mul_overflow(per, groups, &total)) return 0;
  return total;
}

void qlm_q4_1x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst) {
  int64_t nb = cols / QK;
  for (int64_t g = g0; g < g1; g++) {
    uint8_t *o = (uint8_t *)dst + (size_t)g * (size_t)nb * QLM_Q41X16_BLK;
    for (int i = 0; i < ROWS; i++) {
      int64_t r = g * ROWS + i;
      const uint8_t *row = r < rows ? (const uint8_t *)w + (size_t)r * row_bytes : NULL;
      for (int64_t b = 0; b < nb; b++) {
        uint8_t *ob = o + (size_t)b * QLM_Q41X16_BLK;
        if (!row) { /* padding: codes 0 and d = m = +0 add exactly nothing, and are never stored */
          for (int j = 0; j < 4; j++) memset(ob + 64 * j + 4 * i, 0, 4);
          memset(ob + 256 + 2 * i, 0, 2);
          memset(ob + 288 + 2 * i, 0, 2);
          continue;
        }
        const uint8_t *blk = row + (size_t)b * WB;
        for (int j = 0; j < 4; j++) memcpy(ob + 64 * j + 4 * i, blk + 4 + 4 * j, 4);
        memcpy(ob + 256 + 2 * i, blk, 2);
        memcpy(ob + 288 + 2 * i, blk + 2, 2);
      }
    }
  }
}

void qlm_q4_1x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level) {
  uint8_t q8[36 * 8], *o = dst; /* Q8_1 blocks, 8 at a time */
  qlm_simd_level hw = qlm_cpu_detect();
  int fast = (level < hw ? level : hw) == QLM_SIMD_AVX512;
  for (int64_t c0 = 0; c0 < cols; c0 += 8 * QK) {
    int64_t n = cols - c0 < 8 * QK ? cols - c0 : 8 * QK;
    if (fast) qlm_gemm_q_quantize_avx512(x + c0, q8, n, 1); /* the scalar quantizer's bytes */
    else qlm_quantize_q8_1(x + c0, q8, n);
    for (int64_t b = 0; b < n / QK; b++, o += QLM_Q41X16_ABLK) {
      const uint8_t *y = q8 + 36 * b;
      float d = qlm_rdhalf(y), s = qlm_rdhalf(y + 2);
      memcpy(o, y + 4, QK);
      memcpy(o + 32, &d, 4);
      memcpy(o + 36, &s, 4);
    }
  }
}

/* The reference: per pair, qlm_vec_dot_q4_1_ref's operations in its order. */
void qlm_q4_1x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy) {
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = (const uint8_t *)wx + (size_t)g * (size_t)nb * QLM_Q41X16_BLK;
    for (int64_t t = 0; t < T; t++) {
      const uint8_t *a = (const uint8_t *)act + (size_t)t * (size_t)nb * QLM_Q41X16_ABLK;
      for (int i = 0; i < ROWS && g * ROWS + i < rows; i++) {
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
          const uint8_t *w = wg + (size_t)b * QLM_Q41X16_BLK, *ab = a + (size_t)b * QLM_Q41X16_ABLK;
          int32_t isum = 0;
          float da, sa;
          memcpy(&da, ab + 32, 4);
          memcpy(&sa, ab + 36, 4);
          for (int j = 0; j < 4; j++)
            for (int k = 0; k < 4; k++) {
              uint8_t v = w[64 * j + 4 * i + k];
              isum += (int)(v & 0xF) * (int8_t)ab[4 * j + k] + (int)(v >> 4) * (int8_t)ab[16 + 4 * j + k];
            }
          sum += (qlm_rdhalf(w + 256 + 2 * i) * da) * (float)isum + qlm_rdhalf(w + 288 + 2 * i) * sa;
        }
        Y[t * ldy + g * ROWS + i] = sum;
      }
    }
  }
}
