/* x16.c — the table of the 16-row interleaved layouts (x16.h). */
#include "kernels/x16.h"

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
