/* q8_0x16.c — the 16-row interleaved Q8_0 layout (q8_0x16.h): packing, the activation blocks and
 * the scalar reference kernel. */
#include "kernels/q8_0x16.h"

#include <string.h>

#include "core/bytes.h"
#include "kernels/x16.h"

size_t qlm_q8_0x16_bytes(int64_t rows, int64_t cols) { return qlm_x16_blocks_bytes(rows, cols, QLM_Q80X16_BLK); }

void qlm_q8_0x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst) {
  int64_t nb = cols / 32;
  for (int64_t g = g0; g < g1; g++) {
    uint8_t *o = (uint8_t *)dst + (size_t)g * (size_t)nb * QLM_Q80X16_BLK;
    for (int i = 0; i < 16; i++) {
      int64_t r = g * 16 + i;
      const uint8_t *row = r < rows ? (const uint8_t *)w + (size_t)r * row_bytes : NULL;
      for (int64_t b = 0; b < nb; b++) {
        uint8_t *ob = o + (size_t)b * QLM_Q80X16_BLK;
        const uint8_t *blk = row ? row + (size_t)b * 34 : NULL;
        /* padding: stored quants 128 (= 0) and d = +0 add exactly nothing, and are never stored */
        for (int k = 0; k < 32; k++) ob[64 * (k / 4) + 4 * i + k % 4] = (uint8_t)((blk ? blk[2 + k] : 0) ^ 0x80);
        if (blk) memcpy(ob + 512 + 2 * i, blk, 2);
        else memset(ob + 512 + 2 * i, 0, 2);
      }
    }
  }
}

void qlm_q8_0x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level) {
  qlm_x16_quantize_blocks(x, cols, dst, level, 0, 128);
}

/* The reference: row i of a group with one activation row, qlm_vec_dot_q8_0_ref's operations in
 * its order. */
static float row_dot(const uint8_t *wg, const uint8_t *a, int64_t nb, int i) {
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *w = wg + (size_t)b * QLM_Q80X16_BLK, *ab = a + (size_t)b * QLM_Q80X16_ABLK;
    int32_t isum;
    float da;
    memcpy(&isum, ab + 36, 4);
    memcpy(&da, ab + 32, 4);
    for (int k = 0; k < 32; k++) isum += (int)w[64 * (k / 4) + 4 * i + k % 4] * (int8_t)ab[k];
    sum += (qlm_rdhalf(w + 512 + 2 * i) * da) * (float)isum;
  }
  return sum;
}

void qlm_q8_0x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy) {
  qlm_x16_scalar_drive(row_dot, QLM_Q80X16_BLK, QLM_Q80X16_ABLK, wx, nb, rows, g0, g1, act, T, Y, ldy);
}
