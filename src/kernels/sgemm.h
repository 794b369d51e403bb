/* sgemm.h — f32 X·Wᵀ for prefill, both operands K-contiguous (internal to kernels/ and tests).
 *
 *   Y[i·ldy + j] = Σ_k X[i·ldx + k] · W[j·ldw + k]      for i < T, j < n
 *
 * X is T activation rows, W is n rows of a row-major weight matrix (qlm_mat's layout), so both
 * are read along k; no packing.  The AVX-512 kernel computes 5 weight rows × 5 activation rows
 * per tile (25 accumulators), which is what lets it beat OpenBLAS's sgemm at the batch sizes of
 * a prompt (T ≲ 256; bench/sgemm).
 *
 * Arithmetic, fixed so that every output's bits are independent of T, n, the tile it falls in
 * and the thread split: lane l of one 16-lane accumulator takes the fused multiply-adds of
 * k ≡ l (mod 16) in increasing k (a missing k in the last step adds fma(0, 0, ·)), and the 16
 * lanes are summed by the tree of qlm_sgemm_lanes_sum.  qlm_sgemm_xwt_ref does exactly this
 * with fmaf, so the AVX-512 kernel must match it bit for bit (test_sgemm); the AVX-512 decode
 * GEMV (matmul_avx512.c) uses the same chain, so a token's logits do not depend on whether it
 * was decoded alone or inside a prompt. */
#ifndef QLM_SGEMM_H
#define QLM_SGEMM_H

#include <stdint.h>

/* The lane-sum tree: halves added pairwise, s[l] + s[l + 8], then + 4, + 2, + 1. */
static inline float qlm_sgemm_lanes_sum(const float s[16]) {
  float h8[8], h4[4], h2[2];
  for (int l = 0; l < 8; l++) h8[l] = s[l] + s[l + 8];
  for (int l = 0; l < 4; l++) h4[l] = h8[l] + h8[l + 4];
  for (int l = 0; l < 2; l++) h2[l] = h4[l] + h4[l + 2];
  return h2[0] + h2[1];
}

void qlm_sgemm_xwt_ref(const float *X, int64_t ldx, const float *W, int64_t ldw, float *Y, int64_t ldy, int64_t T,
                       int64_t n, int64_t K);
void qlm_sgemm_xwt_avx512(const float *X, int64_t ldx, const float *W, int64_t ldw, float *Y, int64_t ldy,
                          int64_t T, int64_t n, int64_t K);

#endif
