/* q4_0x16.c — the 16-row interleaved Q4_0 layout (q4_0x16.h): packing, the activation blocks and
 * the scalar reference kernel. */
#include "kernels/q4_0x16.h"

#include <string.h>

#include "core/bytes.h"
#include "kernels/qdot.h"
#include "kernels/x16.h"


size_t qlm_q4_0x16_bytes(int64_t rows, int64_t cols) { return qlm_x16_blocks_bytes(rows, cols, QLM_Q4X16_BLK); }

/* Row i's half d at 256 + 2i. */
static void fields(const uint8_t *blk, uint8_t *ob, int i) {
  if (blk) memcpy(ob + 256 + 2 * i, blk, 2);
  else memset(ob + 256 + 2 * i, 0, 2);
}

void qlm_q4_0x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst) {
  qlm_x16_pack_blocks(w, row_bytes, rows, cols, g0, g1, dst, 18, 2, QLM_Q4X16_BLK, fields);
}

void qlm_q4_0x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level) {
  qlm_x16_quantize_blocks(x, cols, dst, level, 0, 8);
}

/* The reference: row i of a group with one activation row, qlm_vec_dot_q4_0_ref's operations in
 * its order. */
static float row_dot(const uint8_t *wg, const uint8_t *a, int64_t nb, int i) {
  float sum = 0.0f;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *w = wg + (size_t)b * QLM_Q4X16_BLK, *ab = a + (size_t)b * QLM_Q4X16_ABLK;
    int32_t isum;
    float da;
    memcpy(&isum, ab + 36, 4);
    memcpy(&da, ab + 32, 4);
    for (int j = 0; j < 4; j++)
      for (int k = 0; k < 4; k++) {
        uint8_t v = w[64 * j + 4 * i + k];
        isum += (int)(v & 0xF) * (int8_t)ab[4 * j + k] + (int)(v >> 4) * (int8_t)ab[16 + 4 * j + k];
      }
    sum += (qlm_rdhalf(w + 256 + 2 * i) * da) * (float)isum;
  }
  return sum;
}

void qlm_q4_0x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy) {
  qlm_x16_scalar_drive(row_dot, QLM_Q4X16_BLK, QLM_Q4X16_ABLK, wx, nb, rows, g0, g1, act, T, Y, ldy);
}
