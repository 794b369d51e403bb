/* sgemm_avx512.c — kernels/sgemm.h's X·Wᵀ with AVX-512F (compiled with -mavx512*; called only
 * when kernels/cpu.c found AVX-512 usable).
 *
 * Tile: RM = 5 weight rows × RN = 5 activation rows.  Per 16-wide step of k: 5 weight loads kept
 * in registers, 5 activation loads each used by 5 FMAs — 25 accumulators + 5 + 1 = 31 of the 32
 * zmm registers, 10 loads per 25 FMAs, so the FMA unit, not the loads, sets the pace.
 *
 * Blocking (measured on Zen 4, 1 MiB L2, bench/sgemm): activation rows in chunks of about
 * X_CHUNK_BYTES (they stay in L3 while every weight row passes them), weight rows in chunks of
 * about W_CHUNK_BYTES (they stay in L2 while every activation tile of the chunk passes them).
 * Without the activation chunking, T = 512 at K = 11008 fell to 59 GFLOP/s on one core (X no
 * longer in L3); without the weight chunking T = 512 at K = 4096 ran ~5% slower. */
#include <immintrin.h>

#include "kernels/sgemm.h"
#include "kernels/sgemm_avx512.h"

#define RM 5
#define RN 5
#define W_CHUNK_BYTES (256 * 1024)
#define X_CHUNK_BYTES (8 * 1024 * 1024)

/* y[n·ldy + m] for m < rm weight rows, n < rn activation rows; rm, rn are constants after inlining,
 * so the accumulator arrays live in registers. */
static inline __attribute__((always_inline)) void tile(const int rm, const int rn, const float *W, int64_t ldw,
                                                       const float *X, int64_t ldx, float *Y, int64_t ldy,
                                                       int64_t K) {
  __m512 acc[RM][RN], w[RM];
  for (int m = 0; m < rm; m++)
    for (int n = 0; n < rn; n++) acc[m][n] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    for (int m = 0; m < rm; m++) w[m] = _mm512_loadu_ps(W + m * ldw + k);
    for (int n = 0; n < rn; n++) {
      __m512 x = _mm512_loadu_ps(X + n * ldx + k);
      for (int m = 0; m < rm; m++) acc[m][n] = _mm512_fmadd_ps(w[m], x, acc[m][n]);
    }
  }
  if (k < K) { /* the last, partial step: missing k load as 0 on both sides */
    __mmask16 t = (__mmask16)((1u << (K - k)) - 1u);
    for (int m = 0; m < rm; m++) w[m] = _mm512_maskz_loadu_ps(t, W + m * ldw + k);
    for (int n = 0; n < rn; n++) {
      __m512 x = _mm512_maskz_loadu_ps(t, X + n * ldx + k);
      for (int m = 0; m < rm; m++) acc[m][n] = _mm512_fmadd_ps(w[m], x, acc[m][n]);
    }
  }
  for (int n = 0; n < rn; n++)
    for (int m = 0; m < rm; m++) Y[n * ldy + m] = qlm_lanes_sum_avx512(acc[m][n]);
}

/* One tile of any shape up to RM × RN: full tiles go to the 5 × 5 code, edges to their own. */
static void tile_any(int rm, int rn, const float *W, int64_t ldw, const float *X, int64_t ldx, float *Y, int64_t ldy,
                     int64_t K) {
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

/* Rows per chunk: about `bytes` of K-float rows, a multiple of `tile` (at least one tile). */
static int64_t chunk_rows(int64_t bytes, int64_t K, int tile_rows) {
  int64_t r = bytes / (4 * (K > 0 ? K : 1)) / tile_rows * tile_rows;
  return r < tile_rows ? tile_rows : r;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

void qlm_sgemm_xwt_avx512(const float *X, int64_t ldx, const float *W, int64_t ldw, float *Y, int64_t ldy,
                          int64_t T, int64_t n, int64_t K) {
  int64_t tc = chunk_rows(X_CHUNK_BYTES, K, RN), nc = chunk_rows(W_CHUNK_BYTES, K, RM);
  for (int64_t i0 = 0; i0 < T; i0 += tc)
    for (int64_t j0 = 0; j0 < n; j0 += nc)
      for (int64_t i = i0; i < min64(i0 + tc, T); i += RN)
        for (int64_t j = j0; j < min64(j0 + nc, n); j += RM)
          tile_any((int)min64(RM, min64(j0 + nc, n) - j), (int)min64(RN, min64(i0 + tc, T) - i), W + j * ldw, ldw,
                   X + i * ldx, ldx, Y + i * ldy + j, ldy, K);
}
