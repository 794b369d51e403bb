/* q4_kx16.c — the 16-row interleaved Q4_K layout (q4_kx16.h): packing, the activation blocks and
 * the scalar reference kernel. */
#include "kernels/q4_kx16.h"

#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "core/fp16.h"
#include "kernels/qdot.h"
#include "kernels/types.h"

#define QKK 256
#define ROWS 16
#define FILE_BLK 144 /* bytes of a Q4_K super-block in the file */
#define Q8K_BLK 292  /* f32 d, q[256], int16 bsums[16] */

size_t qlm_q4_kx16_bytes(int64_t rows, int64_t cols) {
  size_t groups = (size_t)((rows + ROWS - 1) / ROWS), per, total;
  if (rows < 0 || cols < 0 || cols % QKK) return 0;
  if (qlm_mul_overflow((size_t)(cols / QKK), QLM_Q4KX16_BLK, &per) || qlm_mul_overflow(per, groups, &total)) return 0;
  return total;
}

/* Row i's super-block f (NULL: a zero row) into the group's super-block o. */
static void pack_row(const uint8_t *f, int i, uint8_t *o) {
  if (!f) { /* codes, scales, mins and d all 0: adds exactly nothing, and is never stored */
    for (int m = 0; m < 32; m++) memset(o + 64 * m + 4 * i, 0, 4);
    for (int j = 0; j < 8; j++) o[2048 + 16 * j + i] = 0;
    for (int k = 0; k < 4; k++) memset(o + 2176 + 32 * k + 2 * i, 0, 2);
    memset(o + 2304 + 2 * i, 0, 2);
    memset(o + 2336 + 2 * i, 0, 2);
    return;
  }
  for (int m = 0; m < 32; m++) memcpy(o + 64 * m + 4 * i, f + 16 + 4 * m, 4);
  for (int j = 0; j < 8; j++) {
    int sc, mn;
    qlm_k4_scale_min(f + 4, j, &sc, &mn);
    o[2048 + 16 * j + i] = (uint8_t)sc;
    o[2176 + 32 * (j / 2) + 2 * i + j % 2] = (uint8_t)mn;
  }
  memcpy(o + 2304 + 2 * i, f, 2);
  memcpy(o + 2336 + 2 * i, f + 2, 2);
}

void qlm_q4_kx16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst) {
  int64_t nsb = cols / QKK;
  for (int64_t g = g0; g < g1; g++) {
    uint8_t *o = (uint8_t *)dst + (size_t)g * (size_t)nsb * QLM_Q4KX16_BLK;
    for (int i = 0; i < ROWS; i++) {
      int64_t r = g * ROWS + i;
      const uint8_t *row = r < rows ? (const uint8_t *)w + (size_t)r * row_bytes : NULL;
      for (int64_t s = 0; s < nsb; s++)
        pack_row(row ? row + (size_t)s * FILE_BLK : NULL, i, o + (size_t)s * QLM_Q4KX16_BLK);
    }
  }
}

void qlm_q4_kx16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level) {
  uint8_t q8[Q8K_BLK], *o = dst;
  qlm_simd_level hw = qlm_cpu_detect();
  int fast = (level < hw ? level : hw) == QLM_SIMD_AVX512;
  for (int64_t c0 = 0; c0 < cols; c0 += QKK, o += QLM_Q4KX16_ABLK) {
    if (fast) qlm_quantize_q8_k_avx512(x + c0, q8, QKK); /* the scalar quantizer's bytes */
    else qlm_quantize_q8_k(x + c0, q8, QKK);
    memcpy(o, q8 + 4, QKK);
    memcpy(o + 256, q8, 4);
    for (int j = 0; j < 8; j++) {
      int16_t b = (int16_t)((int16_t)qlm_rd16(q8 + 260 + 4 * j) + (int16_t)qlm_rd16(q8 + 262 + 4 * j));
      memcpy(o + 260 + 2 * j, &b, 2);
    }
    memset(o + 276, 0, QLM_Q4KX16_ABLK - 276);
  }
}

/* The reference: per pair, qlm_vec_dot_q4_k_ref's integers and float operations in its order. */
void qlm_q4_kx16_gemm_scalar(const void *wx, int64_t nsb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy) {
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = (const uint8_t *)wx + (size_t)g * (size_t)nsb * QLM_Q4KX16_BLK;
    for (int64_t t = 0; t < T; t++)
      for (int i = 0; i < ROWS && g * ROWS + i < rows; i++) {
        float sum = 0.0f;
        for (int64_t s = 0; s < nsb; s++) {
          const uint8_t *w = wg + (size_t)s * QLM_Q4KX16_BLK;
          const uint8_t *a = (const uint8_t *)act + ((size_t)t * (size_t)nsb + (size_t)s) * QLM_Q4KX16_ABLK;
          const int8_t *q = (const int8_t *)a;
          int isum = 0, imin = 0;
          for (int j = 0; j < 8; j++) {
            int sj = 0;
            for (int e = 0; e < 32; e++) { /* weight 32j + e: pair j / 2, vector 8 (j / 2) + e / 4 */
              uint8_t byte = w[64 * (8 * (j / 2) + e / 4) + 4 * i + e % 4];
              sj += (j % 2 ? byte >> 4 : byte & 0xF) * q[32 * j + e];
            }
            isum += w[2048 + 16 * j + i] * sj;
            imin += w[2176 + 32 * (j / 2) + 2 * i + j % 2] * (int16_t)qlm_rd16(a + 260 + 2 * j);
          }
          float dy;
          memcpy(&dy, a + 256, 4);
          sum += dy * qlm_rdhalf(w + 2304 + 2 * i) * (float)isum - dy * qlm_rdhalf(w + 2336 + 2 * i) * (float)imin;
        }
        Y[t * ldy + g * ROWS + i] = sum;
      }
  }
}
