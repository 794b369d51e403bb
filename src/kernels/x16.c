/* x16.c — the table of the 16-row interleaved layouts (x16.h). */
#include "kernels/x16.h"

#include "kernels/q4_0x16.h"
#include "kernels/q4_kx16.h"
#include "kernels/types.h"

static const qlm_x16_kind KINDS[] = {
    {QLM_TYPE_Q4_0, 32, QLM_Q4X16_BLK, QLM_Q4X16_ABLK, qlm_q4_0x16_bytes, qlm_q4_0x16_pack, qlm_q4_0x16_quantize_act,
     qlm_q4_0x16_gemm_avx512vnni},
    {QLM_TYPE_Q4_K, 256, QLM_Q4KX16_BLK, QLM_Q4KX16_ABLK, qlm_q4_kx16_bytes, qlm_q4_kx16_pack, qlm_q4_kx16_quantize_act,
     qlm_q4_kx16_gemm_avx512vnni},
};

const qlm_x16_kind *qlm_x16_for(int type, int64_t cols, qlm_simd_level level) {
  if (!qlm_q4_0x16_supported(level)) return NULL;
  for (size_t i = 0; i < sizeof KINDS / sizeof KINDS[0]; i++)
    if (KINDS[i].type == type) return cols > 0 && cols % KINDS[i].blk_cols == 0 ? &KINDS[i] : NULL;
  return NULL;
}
