/* softmax.h — a row of attention scores into bf16 attention weights, in one pass after the max:
 * the bf16 calibration forward's masked softmax (model/forward.c), whose weights·values product
 * reads bf16 weights only.
 *
 *   m = max_i row[i];  e_i = qlm_softmax_exp(row[i] - m)  (below: e^x with FMAs);
 *   out[i] = bf16(e_i) for i < n (round to nearest even, core/fp16.h), 0 for n <= i < n_pad;
 *   returns Σ e_i, summed in 16 lanes (lane l takes i ≡ l mod 16 of the first n & ~15 values, in
 *   order), the rest added in order to 0, then the lanes 0..15 added in order.
 *
 * Every level gives the reference's bits (tests/test_attn.c).  The f32 softmax (forward.c's
 * softmax_row) keeps kernels/vexp.h's e^x without FMA, which the scalar build vectorizes at every
 * level; this row is the bf16 calibration's, where the softmax was 6% of a 2048-token GPTQ
 * calibration: with FMAs (qlm's C11 build contracts nothing by itself) and VSCALEFPS, and on
 * AVX512_BF16 with VCVTNEPS2BF16 for the rounding, the row takes 0.27 instead of 0.55 ns per
 * score on a Zen 4 core. */
#ifndef QLM_SOFTMAX_H
#define QLM_SOFTMAX_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/bgemm.h" /* qlm_bf16 */

/* The largest of row[0..n): 16 lane maxima over the first n & ~15, reduced in lane order, then
 * the tail (comparisons, not fmaxf: no NaN rules, so a caller's loop vectorizes). */
static inline float qlm_row_max(const float *row, int n) {
  float mx[16];
  for (int l = 0; l < 16; l++) mx[l] = -INFINITY;
  int n16 = n & ~15;
  for (int i = 0; i < n16; i += 16)
    for (int l = 0; l < 16; l++) mx[l] = row[i + l] > mx[l] ? row[i + l] : mx[l];
  float m = -INFINITY;
  for (int l = 0; l < 16; l++) m = mx[l] > m ? mx[l] : m;
  for (int i = n16; i < n; i++) m = row[i] > m ? row[i] : m;
  return m;
}

/* qlm_softmax_exp's constants: Cephes expf.c's polynomial (relative error ~1 ulp), and as in
 * kernels/vexp.h the rounding shifter and ln 2 in two parts. */
#define QLM_SMX_LOG2E 1.44269504088896341f
#define QLM_SMX_SHIFTER 12582912.0f /* 1.5 * 2^23: t = x log2(e) + this holds round(x / ln 2) */
#define QLM_SMX_LN2_HI 0.693359375f /* n · this is exact */
#define QLM_SMX_LN2_LO -2.12194440e-4f
#define QLM_SMX_P0 1.9875691500E-4f
#define QLM_SMX_P1 1.3981999507E-3f
#define QLM_SMX_P2 8.3334519073E-3f
#define QLM_SMX_P3 4.1665795894E-2f
#define QLM_SMX_P4 1.6666665459E-1f
#define QLM_SMX_P5 5.0000001201E-1f

/* e^x for x <= 0 as every level computes it, each step rounded once (fmaf: a·b + c, one rounding):
 *   x = max(x, -87)  (a NaN stays; e^-87 is a normal float, so no result is subnormal)
 *   t = fma(x, LOG2E, SHIFTER);  n = t - SHIFTER       (n = round(x / ln 2), exact)
 *   r = fma(n, -LN2_HI, x);  r = fma(n, -LN2_LO, r)    (|r| <= ln 2 / 2)
 *   p = P0;  p = fma(p, r, P1) ... fma(p, r, P5);  y = fma(p, r·r, r) + 1
 *   e = y · 2^n  (exact: VSCALEFPS on AVX-512), a NaN y returned as it is.
 * Within 1 ulp of e^x (tests/test_attn.c: 0.995 measured over [-87, 0]).  Where the build has no
 * FMA instruction fmaf is a library call: the reference is the tests' yardstick and the fallback
 * below AVX2 only. */
static inline float qlm_softmax_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  float t = fmaf(x, QLM_SMX_LOG2E, QLM_SMX_SHIFTER), n = t - QLM_SMX_SHIFTER;
  float r = fmaf(n, -QLM_SMX_LN2_HI, x);
  r = fmaf(n, -QLM_SMX_LN2_LO, r);
  float p = fmaf(QLM_SMX_P0, r, QLM_SMX_P1);
  p = fmaf(p, r, QLM_SMX_P2);
  p = fmaf(p, r, QLM_SMX_P3);
  p = fmaf(p, r, QLM_SMX_P4);
  p = fmaf(p, r, QLM_SMX_P5);
  float y = fmaf(p, r * r, r) + 1.0f;
  if (y != y) return y;
  uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 0] */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

float qlm_softmax_bf16_ref(const float *row, int n, qlm_bf16 *out, int n_pad);
float qlm_softmax_bf16_avx2(const float *row, int n, qlm_bf16 *out, int n_pad);
float qlm_softmax_bf16_avx512(const float *row, int n, qlm_bf16 *out, int n_pad);
float qlm_softmax_bf16_avx512bf16(const float *row, int n, qlm_bf16 *out, int n_pad);
/* The best of the above for this CPU (and QLM_SIMD). */
float qlm_softmax_bf16(const float *row, int n, qlm_bf16 *out, int n_pad);

#endif
