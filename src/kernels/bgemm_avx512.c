/* bgemm_avx512.c — kernels/bgemm.h's outer-product form without AVX512_BF16: the VDPBF16PS
 * chains as AVX-512F FMAs on the operands widened to f32 (bit for bit the reference; bgemm.h
 * says why).  Called through qlm_bgemm_op when the CPU has AVX-512F but not BF16 (Skylake-SP to
 * Ice Lake), and by test_bgemm everywhere AVX-512F runs.
 *
 * Tiles of OM rows x OG groups: per pair of k, OG loads of B widened to 2·OG vectors (odd k: the
 * pair's top half kept; even k: shifted up), per row the pair's two values broadcast, then
 * 2·OM·OG FMAs (18 accumulators + 6 widened B + 2 broadcasts of the 32 registers). */
#include <immintrin.h>
#include <string.h>

#include "kernels/bgemm.h"

#define OM 6
#define OG 3

static inline __attribute__((always_inline)) void op_tile(const int rm, const int rg, const qlm_bf16 *const *xr,
                                                          const int64_t xps, const qlm_bf16 *B, int64_t gs, int64_t kp,
                                                          float *Y, int64_t ldy, __mmask16 last) {
  const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
  __m512 acc[OM][OG];
  for (int r = 0; r < rm; r++)
    for (int g = 0; g < rg; g++) acc[r][g] = _mm512_setzero_ps();
  for (int64_t k = 0, xo = 0; k < kp; k += 2, xo += xps) {
    __m512 bo[OG], be[OG];
    for (int g = 0; g < rg; g++) {
      __m512i v = _mm512_loadu_si512((const void *)(B + (size_t)g * (size_t)gs + (size_t)k * 16));
      bo[g] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
      be[g] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    }
    for (int r = 0; r < rm; r++) {
      int32_t pair;
      memcpy(&pair, xr[r] + xo, sizeof pair);
      __m512i xp = _mm512_set1_epi32(pair); /* a broadcast load; the halves split in vector lanes */
      __m512 xodd = _mm512_castsi512_ps(_mm512_and_si512(xp, hi)), xeven = _mm512_castsi512_ps(_mm512_slli_epi32(xp, 16));
      for (int g = 0; g < rg; g++) {
        acc[r][g] = _mm512_fmadd_ps(xodd, bo[g], acc[r][g]);
        acc[r][g] = _mm512_fmadd_ps(xeven, be[g], acc[r][g]);
      }
    }
  }
#pragma GCC unroll 8 /* whole: a loop left would keep acc in memory (spills and reloads a tile) */
  for (int r = 0; r < rm; r++)
#pragma GCC unroll 4
    for (int g = 0; g < rg; g++) {
      if (g == rg - 1) _mm512_mask_storeu_ps(Y + r * ldy + g * 16, last, acc[r][g]);
      else _mm512_storeu_ps(Y + r * ldy + g * 16, acc[r][g]);
    }
}

/* qlm_bgemm_tile_fn (alpha is applied by qlm_bgemm_op_emulated, outside DAZ/FTZ). */
static void op_tile_any(int rm, int rg, const qlm_bf16 *const *xr, int64_t xps, const qlm_bf16 *B, int64_t gs,
                        int64_t kp, float *Y, int64_t ldy, int last_cols, float alpha) {
  (void)alpha;
  __mmask16 last = (__mmask16)((1u << last_cols) - 1u);
#define OTILE(a, b)                                                                                     \
  case (a) * 8 + (b):                                                                                   \
    if (xps == 2) op_tile(a, b, xr, 2, B, gs, kp, Y, ldy, last);                                        \
    else op_tile(a, b, xr, 32, B, gs, kp, Y, ldy, last);                                                \
    return;
  switch (rm * 8 + rg) {
    OTILE(6, 3) OTILE(6, 2) OTILE(6, 1)
    OTILE(5, 3) OTILE(5, 2) OTILE(5, 1)
    OTILE(4, 3) OTILE(4, 2) OTILE(4, 1)
    OTILE(3, 3) OTILE(3, 2) OTILE(3, 1)
    OTILE(2, 3) OTILE(2, 2) OTILE(2, 1)
    OTILE(1, 3) OTILE(1, 2) OTILE(1, 1)
  default: return;
  }
#undef OTILE
}

void qlm_bgemm_op_avx512(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                         int64_t M, int64_t N, int64_t K, float alpha) {
  qlm_bgemm_op_emulated(op_tile_any, OM, OG, X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
}

void qlm_bgemm_op_upper_avx512(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                               int64_t N, int64_t K) {
  qlm_bgemm_op_upper_emulated(op_tile_any, OM, OG, packed, kpack, Y, ldy, i0, i1, N, K);
}
