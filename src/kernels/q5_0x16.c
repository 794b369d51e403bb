/* q5_0x16.c — the 16-row interleaved Q5_0 layout (q5_0x16.h): packing, the activation blocks and
 * the scalar reference kernel. */
#include "kernels/q5_0x16.h"

#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "kernels/gemm_q.h"
#include "kernels/qdot.h"

#define QK 32
#define ROWS 16
#define WB 22 /* bytes of a file block: half d, u32 fifth bits, 16 nibble bytes */

size_t qlm_q5_0x16_bytes(int64_t rows, int64_t cols) {
  size_t groups = (size_t)((rows + ROWS - 1) / ROWS), per, total;
  if (rows < 0 || cols < 0 || cols % QK) return 0;
  if (qlm_mul_overflow((size_t)(cols / QK), QLM_Q50X16_BLK, &per) || qlm_mul_overflow(per, groups, &total)) return 0;
  return total;
}

/* A block's 32 fifth bits (bit e = code e's) in the rearranged order of q5_0x16.h. */
static uint32_t rearranged_bits(uint32_t qh) {
  uint32_t out = 0;
  for (int j = 0; j < 4; j++)
    for (int k = 0; k < 4; k++) {
      out |= ((qh >> (4 * j + k)) & 1u) << (8 * k + j);
      out |= ((qh >> (16 + 4 * j + k)) & 1u) << (8 * k + 4 + j);
    }
  return out;
}

void qlm_q5_0x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst) {
  int64_t nb = cols / QK;
  for (int64_t g = g0; g < g1; g++) {
    uint8_t *o = (uint8_t *)dst + (size_t)g * (size_t)nb * QLM_Q50X16_BLK;
    for (int i = 0; i < ROWS; i++) {
      int64_t r = g * ROWS + i;
      const uint8_t *row = r < rows ? (const uint8_t *)w + (size_t)r * row_bytes : NULL;
      for (int64_t b = 0; b < nb; b++) {
        uint8_t *ob = o + (size_t)b * QLM_Q50X16_BLK;
        if (!row) { /* padding: codes 0 and d = +0 add exactly nothing, and are never stored */
          for (int j = 0; j < 4; j++) memset(ob + 64 * j + 4 * i, 0, 4);
          memset(ob + 256 + 4 * i, 0, 4);
          memset(ob + 320 + 2 * i, 0, 2);
          continue;
        }
        const uint8_t *blk = row + (size_t)b * WB;
        for (int j = 0; j < 4; j++) memcpy(ob + 64 * j + 4 * i, blk + 6 + 4 * j, 4);
        qlm_wr32(ob + 256 + 4 * i, rearranged_bits(qlm_rd32(blk + 2)));
        memcpy(ob + 320 + 2 * i, blk, 2);
      }
    }
  }
}

void qlm_q5_0x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level) {
  uint8_t q8[34 * 8], *o = dst; /* Q8_0 blocks, 8 at a time */
  qlm_simd_level hw = qlm_cpu_detect();
  int fast = (level < hw ? level : hw) == QLM_SIMD_AVX512;
  for (int64_t c0 = 0; c0 < cols; c0 += 8 * QK) {
    int64_t n = cols - c0 < 8 * QK ? cols - c0 : 8 * QK;
    if (fast) qlm_gemm_q_quantize_avx512(x + c0, q8, n, 0); /* the scalar quantizer's bytes */
    else qlm_quantize_q8_0(x + c0, q8, n);
    for (int64_t b = 0; b < n / QK; b++, o += QLM_Q50X16_ABLK) {
      const uint8_t *y = q8 + 34 * b;
      int32_t sum = 0;
      for (int k = 0; k < QK; k++) sum += (int8_t)y[2 + k];
      float d = qlm_rdhalf(y);
      int32_t corr = -16 * sum;
      memcpy(o, y + 2, QK);
      memcpy(o + 32, &d, 4);
      memcpy(o + 36, &corr, 4);
    }
  }
}

/* The reference: per pair, qlm_vec_dot_q5_0_ref's operations in its order. */
void qlm_q5_0x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy) {
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = (const uint8_t *)wx + (size_t)g * (size_t)nb * QLM_Q50X16_BLK;
    for (int64_t t = 0; t < T; t++) {
      const uint8_t *a = (const uint8_t *)act + (size_t)t * (size_t)nb * QLM_Q50X16_ABLK;
      for (int i = 0; i < ROWS && g * ROWS + i < rows; i++) {
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
          const uint8_t *w = wg + (size_t)b * QLM_Q50X16_BLK, *ab = a + (size_t)b * QLM_Q50X16_ABLK;
          uint32_t hb = qlm_rd32(w + 256 + 4 * i);
          int32_t isum;
          float da;
          memcpy(&isum, ab + 36, 4);
          memcpy(&da, ab + 32, 4);
          for (int j = 0; j < 4; j++)
            for (int k = 0; k < 4; k++) {
              uint8_t v = w[64 * j + 4 * i + k];
              int lo = (v & 0xF) | (int)((hb >> (8 * k + j)) & 1) << 4;
              int hi = (v >> 4) | (int)((hb >> (8 * k + 4 + j)) & 1) << 4;
              isum += lo * (int8_t)ab[4 * j + k] + hi * (int8_t)ab[16 + 4 * j + k];
            }
          sum += (qlm_rdhalf(w + 320 + 2 * i) * da) * (float)isum;
        }
        Y[t * ldy + g * ROWS + i] = sum;
      }
    }
  }
}
