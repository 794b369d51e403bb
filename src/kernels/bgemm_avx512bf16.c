/* bgemm_avx512bf16.c — kernels/bgemm.h's X·Wᵀ with AVX-512 BF16 (compiled with -mavx512bf16;
 * called only when qlm_bgemm_fast()).
 *
 * sgemm_avx512.c's scheme with bf16 operands: tiles of RM = 5 weight rows × RN = 5 activation
 * rows, per 32-wide step of k 5 weight loads kept in registers and 5 activation loads each used
 * by 5 VDPBF16PS (25 accumulators); activation rows in chunks of about X_CHUNK_BYTES (in L3 while
 * every weight row passes them), weight rows in chunks of about W_CHUNK_BYTES (in L2). */
#include <immintrin.h>

#include "kernels/bgemm.h"
#include "kernels/sgemm_avx512.h"

#define RM 5
#define RN 5
#define W_CHUNK_BYTES (256 * 1024)
#define X_CHUNK_BYTES (8 * 1024 * 1024)

static inline __m512bh load_bh(const qlm_bf16 *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

/* y[n·ldy + m] for m < rm weight rows, n < rn activation rows (constants after inlining). */
static inline __attribute__((always_inline)) void tile(const int rm, const int rn, const qlm_bf16 *W, int64_t ldw,
                                                       const qlm_bf16 *X, int64_t ldx, float *Y, int64_t ldy,
                                                       int64_t K) {
  __m512 acc[RM][RN];
  __m512bh w[RM];
  for (int m = 0; m < rm; m++)
    for (int n = 0; n < rn; n++) acc[m][n] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += QLM_BGEMM_K_ALIGN) {
    for (int m = 0; m < rm; m++) w[m] = load_bh(W + m * ldw + k);
    for (int n = 0; n < rn; n++) {
      __m512bh x = load_bh(X + n * ldx + k);
      for (int m = 0; m < rm; m++) acc[m][n] = _mm512_dpbf16_ps(acc[m][n], x, w[m]);
    }
  }
  for (int n = 0; n < rn; n++)
    for (int m = 0; m < rm; m++) Y[n * ldy + m] = qlm_lanes_sum_avx512(acc[m][n]);
}

static void tile_any(int rm, int rn, const qlm_bf16 *W, int64_t ldw, const qlm_bf16 *X, int64_t ldx, float *Y,
                     int64_t ldy, int64_t K) {
#define TILE(a, b) \
  case (a) * 8 + (b): tile(a, b, W, ldw, X, ldx, Y, ldy, K); return;
  switch (rm * 8 + rn) {
    TILE(5, 5) TILE(5, 4) TILE(5, 3) TILE(5, 2) TILE(5, 1)
    TILE(4, 5) TILE(4, 4) TILE(4, 3) TILE(4, 2) TILE(4, 1)
    TILE(3, 5) TILE(3, 4) TILE(3, 3) TILE(3, 2) TILE(3, 1)
    TILE(2, 5) TILE(2, 4) TILE(2, 3) TILE(2, 2) TILE(2, 1)
    TILE(1, 5) TILE(1, 4) TILE(1, 3) TILE(1, 2) TILE(1, 1)
  default: return;
  }
#undef TILE
}

/* Rows per chunk: about `bytes` of K-element bf16 rows, a multiple of `tile_rows` (at least one). */
static int64_t chunk_rows(int64_t bytes, int64_t K, int tile_rows) {
  int64_t r = bytes / (2 * (K > 0 ? K : 1)) / tile_rows * tile_rows;
  return r < tile_rows ? tile_rows : r;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

void qlm_bgemm_xwt_avx512bf16(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *W, int64_t ldw, float *Y,
                              int64_t ldy, int64_t T, int64_t n, int64_t K) {
  int64_t tc = chunk_rows(X_CHUNK_BYTES, K, RN), nc = chunk_rows(W_CHUNK_BYTES, K, RM);
  for (int64_t i0 = 0; i0 < T; i0 += tc)
    for (int64_t j0 = 0; j0 < n; j0 += nc)
      for (int64_t i = i0; i < min64(i0 + tc, T); i += RN)
        for (int64_t j = j0; j < min64(j0 + nc, n); j += RM)
          tile_any((int)min64(RM, min64(j0 + nc, n) - j), (int)min64(RN, min64(i0 + tc, T) - i), W + j * ldw, ldw,
                   X + i * ldx, ldx, Y + i * ldy + j, ldy, K);
}

/* ---- outer-product form (bgemm.h qlm_bgemm_op) ----
 * Tiles of OM rows of X x OG groups of 16 packed columns (bgemm.c's qlm_bgemm_op_tiles): per pair
 * of k, OG loads of B, OM broadcasts of X's pair, OM·OG VDPBF16PS into one accumulator per output
 * (24 + 4 + 1 of the 32 registers). */
#define OM 6
#define OG 4

static inline __attribute__((always_inline)) void op_tile(const int rm, const int rg, const qlm_bf16 *const *xr,
                                                          const int64_t xps, const qlm_bf16 *B, int64_t gs, int64_t kp,
                                                          float *Y, int64_t ldy, __mmask16 last, float alpha) {
  __m512 acc[OM][OG];
  for (int r = 0; r < rm; r++)
    for (int g = 0; g < rg; g++) acc[r][g] = _mm512_setzero_ps();
  for (int64_t k = 0, xo = 0; k < kp; k += 2, xo += xps) {
    __m512bh b[OG];
    for (int g = 0; g < rg; g++) b[g] = load_bh(B + (size_t)g * (size_t)gs + (size_t)k * 16);
    for (int r = 0; r < rm; r++) {
      int32_t pair;
      __builtin_memcpy(&pair, xr[r] + xo, sizeof pair);
      __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
      for (int g = 0; g < rg; g++) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], x, b[g]);
    }
  }
  __m512 a = _mm512_set1_ps(alpha);
  for (int r = 0; r < rm; r++)
    for (int g = 0; g < rg; g++) {
      __m512 v = _mm512_mul_ps(acc[r][g], a);
      if (g == rg - 1) _mm512_mask_storeu_ps(Y + r * ldy + g * 16, last, v);
      else _mm512_storeu_ps(Y + r * ldy + g * 16, v);
    }
}

/* qlm_bgemm_tile_fn: the tile for these sizes, the loops' bounds constants. */
static void op_tile_any(int rm, int rg, const qlm_bf16 *const *xr, int64_t xps, const qlm_bf16 *B, int64_t gs,
                        int64_t kp, float *Y, int64_t ldy, int last_cols, float alpha) {
  __mmask16 last = (__mmask16)((1u << last_cols) - 1u);
#define OTILE(a, b)                                                                                     \
  case (a) * 8 + (b):                                                                                   \
    if (xps == 2) op_tile(a, b, xr, 2, B, gs, kp, Y, ldy, last, alpha);                                 \
    else op_tile(a, b, xr, 32, B, gs, kp, Y, ldy, last, alpha);                                         \
    return;
  switch (rm * 8 + rg) {
    OTILE(6, 4) OTILE(6, 3) OTILE(6, 2) OTILE(6, 1)
    OTILE(5, 4) OTILE(5, 3) OTILE(5, 2) OTILE(5, 1)
    OTILE(4, 4) OTILE(4, 3) OTILE(4, 2) OTILE(4, 1)
    OTILE(3, 4) OTILE(3, 3) OTILE(3, 2) OTILE(3, 1)
    OTILE(2, 4) OTILE(2, 3) OTILE(2, 2) OTILE(2, 1)
    OTILE(1, 4) OTILE(1, 3) OTILE(1, 2) OTILE(1, 1)
  default: return;
  }
#undef OTILE
}

void qlm_bgemm_op_avx512bf16(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y,
                             int64_t ldy, int64_t M, int64_t N, int64_t K, float alpha) {
  qlm_bgemm_op_tiles(op_tile_any, OM, OG, X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
}

void qlm_bgemm_op_upper_avx512bf16(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0,
                                   int64_t i1, int64_t N, int64_t K) {
  qlm_bgemm_op_upper_tiles(op_tile_any, OM, OG, packed, kpack, Y, ldy, i0, i1, N, K);
}
