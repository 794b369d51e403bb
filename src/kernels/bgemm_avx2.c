/* bgemm_avx2.c — kernels/bgemm.h's outer-product form on AVX2 + FMA: the VDPBF16PS chains as
 * FMAs on the operands widened to f32, bit for bit the reference (bgemm.h says why); for CPUs
 * without AVX-512.
 *
 * Tiles of up to OM = 4 rows x one group of 16 packed columns, the group as two 8-lane halves:
 * per pair of k, two loads of B widened to 4 vectors, per row the pair's two values broadcast,
 * then 4 FMAs per row (8 accumulators + 4 widened B + 2 broadcasts + 1 mask of the 16 registers). */
#include <immintrin.h>
#include <string.h>

#include "kernels/bgemm.h"

#define OM 4

static inline __attribute__((always_inline)) void op_tile(const int rm, const qlm_bf16 *const *xr, const int64_t xps,
                                                          const qlm_bf16 *B, int64_t kp, float *Y, int64_t ldy,
                                                          int last_cols) {
  const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
  __m256 acc[OM][2];
  for (int r = 0; r < rm; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0, xo = 0; k < kp; k += 2, xo += xps) {
    __m256i v0 = _mm256_loadu_si256((const __m256i *)(B + (size_t)k * 16));
    __m256i v1 = _mm256_loadu_si256((const __m256i *)(B + (size_t)k * 16 + 16));
    __m256 bo0 = _mm256_castsi256_ps(_mm256_and_si256(v0, hi)), be0 = _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16));
    __m256 bo1 = _mm256_castsi256_ps(_mm256_and_si256(v1, hi)), be1 = _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16));
    for (int r = 0; r < rm; r++) {
      int32_t pair;
      memcpy(&pair, xr[r] + xo, sizeof pair);
      __m256i xp = _mm256_set1_epi32(pair); /* a broadcast load; the halves split in vector lanes */
      __m256 xodd = _mm256_castsi256_ps(_mm256_and_si256(xp, hi)), xeven = _mm256_castsi256_ps(_mm256_slli_epi32(xp, 16));
      acc[r][0] = _mm256_fmadd_ps(xeven, be0, _mm256_fmadd_ps(xodd, bo0, acc[r][0]));
      acc[r][1] = _mm256_fmadd_ps(xeven, be1, _mm256_fmadd_ps(xodd, bo1, acc[r][1]));
    }
  }
  if (last_cols == 16) {
    for (int r = 0; r < rm; r++) {
      _mm256_storeu_ps(Y + r * ldy, acc[r][0]);
      _mm256_storeu_ps(Y + r * ldy + 8, acc[r][1]);
    }
    return;
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(last_cols), lane);
  __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(last_cols - 8), lane);
  for (int r = 0; r < rm; r++) {
    _mm256_maskstore_ps(Y + r * ldy, m0, acc[r][0]);
    _mm256_maskstore_ps(Y + r * ldy + 8, m1, acc[r][1]);
  }
}

/* qlm_bgemm_tile_fn with og = 1 (alpha is applied by qlm_bgemm_op_emulated, outside DAZ/FTZ). */
static void op_tile_any(int rm, int rg, const qlm_bf16 *const *xr, int64_t xps, const qlm_bf16 *B, int64_t gs,
                        int64_t kp, float *Y, int64_t ldy, int last_cols, float alpha) {
  (void)rg, (void)gs, (void)alpha;
#define OTILE(a)                                                                                        \
  case (a):                                                                                             \
    if (xps == 2) op_tile(a, xr, 2, B, kp, Y, ldy, last_cols);                                          \
    else op_tile(a, xr, 32, B, kp, Y, ldy, last_cols);                                                  \
    return;
  switch (rm) {
    OTILE(4) OTILE(3) OTILE(2) OTILE(1)
  default: return;
  }
#undef OTILE
}

void qlm_bgemm_op_avx2(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                       int64_t M, int64_t N, int64_t K, float alpha) {
  qlm_bgemm_op_emulated(op_tile_any, OM, 1, X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
}

void qlm_bgemm_op_upper_avx2(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                             int64_t N, int64_t K) {
  qlm_bgemm_op_upper_emulated(op_tile_any, OM, 1, packed, kpack, Y, ldy, i0, i1, N, K);
}
