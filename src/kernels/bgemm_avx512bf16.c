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
