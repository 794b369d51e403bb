/* x16.c — the table of the 16-row interleaved layouts (x16.h). */
#include "kernels/x16.h"

#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "kernels/gemm_q.h"
#include "kernels/qdot.h"

#include "kernels/q4_0x16.h"
#include "kernels/q4_1x16.h"
#include "kernels/q4_kx16.h"
#include "kernels/q5_0x16.h"
#include "kernels/types.h"

static const qlm_x16_kind KINDS[] = {
    {QLM_TYPE_Q4_0, 32, QLM_Q4X16_BLK, QLM_Q4X16_ABLK, qlm_q4_0x16_bytes, qlm_q4_0x16_pack, qlm_q4_0x16_quantize_act,
     qlm_q4_0x16_gemm_avx512vnni},
    {QLM_TYPE_Q4_1, 32, QLM_Q41X16_BLK, QLM_Q41X16_ABLK, qlm_q4_1x16_bytes, qlm_q4_1x16_pack, qlm_q4_1x16_quantize_act,
     qlm_q4_1x16_gemm_avx512vnni},
    {QLM_TYPE_Q5_0, 32, QLM_Q50X16_BLK, QLM_Q50X16_ABLK, qlm_q5_0x16_bytes, qlm_q5_0x16_pack, qlm_q5_0x16_quantize_act,
     qlm_q5_0x16_gemm_avx512vnni},
    {QLM_TYPE_Q4_K, 256, QLM_Q4KX16_BLK, QLM_Q4KX16_ABLK, qlm_q4_kx16_bytes, qlm_q4_kx16_pack, qlm_q4_kx16_quantize_act,
     qlm_q4_kx16_gemm_avx512vnni},
};

int qlm_x16_supported(qlm_simd_level level) {
  qlm_simd_level hw = qlm_cpu_detect();
  return (level < hw ? level : hw) == QLM_SIMD_AVX512 && qlm_cpu_has_avx512_vnni();
}

const qlm_x16_kind *qlm_x16_for(int type, int64_t cols, qlm_simd_level level) {
  if (!qlm_x16_supported(level)) return NULL;
  for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++)
    if (KINDS[i].type == type) return cols > 0 && cols % KINDS[i].blk_cols == 0 ? &KINDS[i] : NULL;
  return NULL;
}

#define WBATCH_BYTES (256 * 1024)

void qlm_x16_drive(qlm_x16_pass_fn pass, size_t wblk, size_t ablk, const void *wx, int64_t nb, int64_t rows, int64_t g0,
                   int64_t g1, const void *act, int64_t T, float *Y, int64_t ldy) {
  size_t gbytes = (size_t)nb * wblk, astride = (size_t)nb * ablk;
  int64_t batch = gbytes ? (int64_t)(WBATCH_BYTES / gbytes) : 1;
  if (batch < 1 || T <= QLM_X16_NA_MAX) batch = T <= QLM_X16_NA_MAX ? g1 - g0 : 1;
  for (int64_t gb = g0; gb < g1; gb += batch) {
    int64_t ge = g1 - gb < batch ? g1 : gb + batch;
    for (int64_t t0 = 0; t0 < T; t0 += QLM_X16_NA_MAX) {
      int64_t na = T - t0 < QLM_X16_NA_MAX ? T - t0 : QLM_X16_NA_MAX;
      for (int64_t g = gb; g < ge; g++) {
        int64_t r0 = g * 16, nv = rows - r0 < 16 ? rows - r0 : 16;
        pass((const uint8_t *)wx + (size_t)g * gbytes, nb, (const uint8_t *)act + (size_t)t0 * astride, astride, na,
             Y + t0 * ldy + r0, ldy, (uint16_t)((1u << nv) - 1));
      }
    }
  }
}

size_t qlm_x16_blocks_bytes(int64_t rows, int64_t cols, size_t xblk) {
  size_t groups = (size_t)((rows + 15) / 16), per, total;
  if (rows < 0 || cols < 0 || cols % 32) return 0;
  if (qlm_mul_overflow((size_t)(cols / 32), xblk, &per) || qlm_mul_overflow(per, groups, &total)) return 0;
  return total;
}

void qlm_x16_pack_blocks(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst,
                         size_t wblk, int qs, size_t xblk, qlm_x16_fields_fn fields) {
  int64_t nb = cols / 32;
  for (int64_t g = g0; g < g1; g++) {
    uint8_t *o = (uint8_t *)dst + (size_t)g * (size_t)nb * xblk;
    for (int i = 0; i < 16; i++) {
      int64_t r = g * 16 + i;
      const uint8_t *row = r < rows ? (const uint8_t *)w + (size_t)r * row_bytes : NULL;
      for (int64_t b = 0; b < nb; b++) {
        uint8_t *ob = o + (size_t)b * xblk;
        const uint8_t *blk = row ? row + (size_t)b * wblk : NULL;
        for (int j = 0; j < 4; j++) { /* padding: codes 0, which with zero scales add exactly nothing */
          if (blk) memcpy(ob + 64 * j + 4 * i, blk + qs + 4 * j, 4);
          else memset(ob + 64 * j + 4 * i, 0, 4);
        }
        fields(blk, ob, i);
      }
    }
  }
}

void qlm_x16_quantize_blocks(const float *x, int64_t cols, void *dst, qlm_simd_level level, int q8_1, int offset) {
  uint8_t q8[36 * 8], *o = dst; /* Q8_0 (34-byte) or Q8_1 (36-byte) blocks, 8 at a time */
  size_t bb = q8_1 ? 36 : 34, q = q8_1 ? 4 : 2;
  qlm_simd_level hw = qlm_cpu_detect();
  int fast = (level < hw ? level : hw) == QLM_SIMD_AVX512;
  for (int64_t c0 = 0; c0 < cols; c0 += 8 * 32) {
    int64_t n = cols - c0 < 8 * 32 ? cols - c0 : 8 * 32;
    if (fast) qlm_gemm_q_quantize_avx512(x + c0, q8, n, q8_1); /* the scalar quantizer's bytes */
    else if (q8_1) qlm_quantize_q8_1(x + c0, q8, n);
    else qlm_quantize_q8_0(x + c0, q8, n);
    for (int64_t b = 0; b < n / 32; b++, o += QLM_X16_ABLK32) {
      const uint8_t *y = q8 + bb * (size_t)b;
      float d = qlm_rdhalf(y);
      memcpy(o, y + q, 32);
      memcpy(o + 32, &d, 4);
      if (q8_1) {
        float s = qlm_rdhalf(y + 2);
        memcpy(o + 36, &s, 4);
      } else {
        int32_t sum = 0;
        for (int k = 0; k < 32; k++) sum += (int8_t)y[q + k];
        int32_t corr = -offset * sum;
        memcpy(o + 36, &corr, 4);
      }
    }
  }
}

void qlm_x16_scalar_drive(qlm_x16_row_dot_fn dot, size_t xblk, size_t ablk, const void *wx, int64_t nb, int64_t rows,
                          int64_t g0, int64_t g1, const void *act, int64_t T, float *Y, int64_t ldy) {
  for (int64_t g = g0; g < g1; g++) {
    const uint8_t *wg = (const uint8_t *)wx + (size_t)g * (size_t)nb * xblk;
    for (int64_t t = 0; t < T; t++)
      for (int i = 0; i < 16 && g * 16 + i < rows; i++)
        Y[t * ldy + g * 16 + i] = dot(wg, (const uint8_t *)act + (size_t)t * (size_t)nb * ablk, nb, i);
  }
}
