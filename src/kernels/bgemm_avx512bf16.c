/* bgemm_avx512bf16.c — kernels/bgemm.h's outer-product form with AVX-512 BF16 (compiled with
 * -mavx512bf16; called only when qlm_bgemm_fast()). */
#include <immintrin.h>

#include "kernels/bgemm.h"

static inline __m512bh load_bh(const qlm_bf16 *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

/* A tile of rm <= om rows of X x rg <= og groups of 16 packed columns (bgemm.c's loops): per pair
 * of k, rg loads of B, rm broadcasts of X's pair, rm·rg VDPBF16PS into one accumulator per
 * output.  Two shapes, both 24 accumulators + og loads + 1 broadcast of the 32 registers: 8 x 3
 * (8 broadcasts + 3 loads per 24 products), and 6 x 4 for products of 4 groups (the attention's
 * weights x values: 64 columns in one pass).  One Zen 4 core, side by side: q·kᵀ (64 x 2048, K
 * 64) 189 -> 216 GFLOP/s with 8 x 3, the q/k/v product (2048 x 960, K 576) 197 -> 206;
 * weights·values (64 x 64, K 2048) 234 with 6 x 4, 216 with 8 x 3. */
static inline __attribute__((always_inline)) void op_tile(const int rm, const int rg, const qlm_bf16 *const *xr,
                                                          const int64_t xps, const qlm_bf16 *B, int64_t gs, int64_t kp,
                                                          float *Y, int64_t ldy, __mmask16 last, float alpha) {
  __m512 acc[8][4];
#pragma GCC unroll 8
  for (int r = 0; r < rm; r++)
#pragma GCC unroll 4
    for (int g = 0; g < rg; g++) acc[r][g] = _mm512_setzero_ps();
  for (int64_t k = 0, xo = 0; k < kp; k += 2, xo += xps) {
    __m512bh b[4];
    for (int g = 0; g < rg; g++) b[g] = load_bh(B + (size_t)g * (size_t)gs + (size_t)k * 16);
    for (int r = 0; r < rm; r++) {
      int32_t pair;
      __builtin_memcpy(&pair, xr[r] + xo, sizeof pair);
      __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
      for (int g = 0; g < rg; g++) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], x, b[g]);
    }
  }
  __m512 a = _mm512_set1_ps(alpha);
#pragma GCC unroll 8 /* whole: a loop left would keep acc in memory (24 spills and reloads a tile) */
  for (int r = 0; r < rm; r++)
#pragma GCC unroll 4
    for (int g = 0; g < rg; g++) {
      __m512 v = _mm512_mul_ps(acc[r][g], a);
      if (g == rg - 1) _mm512_mask_storeu_ps(Y + r * ldy + g * 16, last, v);
      else _mm512_storeu_ps(Y + r * ldy + g * 16, v);
    }
}

/* qlm_bgemm_tile_fn: the tile for these sizes, the loops' bounds constants. */
#define OTILE(a, b)                                                                                     \
  case (a) * 8 + (b):                                                                                   \
    if (xps == 2) op_tile(a, b, xr, 2, B, gs, kp, Y, ldy, last, alpha);                                 \
    else op_tile(a, b, xr, 32, B, gs, kp, Y, ldy, last, alpha);                                         \
    return;

static void op_tile_8x3(int rm, int rg, const qlm_bf16 *const *xr, int64_t xps, const qlm_bf16 *B, int64_t gs,
                        int64_t kp, float *Y, int64_t ldy, int last_cols, float alpha) {
  __mmask16 last = (__mmask16)((1u << last_cols) - 1u);
  switch (rm * 8 + rg) {
    OTILE(8, 3) OTILE(8, 2) OTILE(8, 1) OTILE(7, 3) OTILE(7, 2) OTILE(7, 1)
    OTILE(6, 3) OTILE(6, 2) OTILE(6, 1) OTILE(5, 3) OTILE(5, 2) OTILE(5, 1)
    OTILE(4, 3) OTILE(4, 2) OTILE(4, 1) OTILE(3, 3) OTILE(3, 2) OTILE(3, 1)
    OTILE(2, 3) OTILE(2, 2) OTILE(2, 1) OTILE(1, 3) OTILE(1, 2) OTILE(1, 1)
  default: return;
  }
}

static void op_tile_6x4(int rm, int rg, const qlm_bf16 *const *xr, int64_t xps, const qlm_bf16 *B, int64_t gs,
                        int64_t kp, float *Y, int64_t ldy, int last_cols, float alpha) {
  __mmask16 last = (__mmask16)((1u << last_cols) - 1u);
  switch (rm * 8 + rg) {
    OTILE(6, 4) OTILE(5, 4) OTILE(4, 4) OTILE(3, 4) OTILE(2, 4) OTILE(1, 4)
  default: op_tile_8x3(rm, rg, xr, xps, B, gs, kp, Y, ldy, last_cols, alpha);
  }
}
#undef OTILE

void qlm_bgemm_op_avx512bf16(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y,
                             int64_t ldy, int64_t M, int64_t N, int64_t K, float alpha) {
  if ((N + 15) / 16 == 4) qlm_bgemm_op_tiles(op_tile_6x4, 6, 4, X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
  else qlm_bgemm_op_tiles(op_tile_8x3, 8, 3, X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
}

void qlm_bgemm_op_upper_avx512bf16(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0,
                                   int64_t i1, int64_t N, int64_t K) {
  qlm_bgemm_op_upper_tiles(op_tile_8x3, 8, 3, packed, kpack, Y, ldy, i0, i1, N, K);
}
