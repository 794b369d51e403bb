/* quants.c — reference quantizers producing the same bytes as llama.cpp's quantize_row_*_ref.
 *
 * Written from the published format definitions (block layouts: kernels/types.c) and the
 * algorithm descriptions of ggml-quants.c; verified byte for byte against llama.cpp's own code
 * by tests/test_quants.c (vectors from tools/gen_quant_vectors.py).
 *
 * Byte-exactness rules followed throughout (deviating from any of them changes output bytes
 * for some inputs):
 *  - every float expression is evaluated in float, left to right, in exactly the reference's
 *    order (a*b*c is (a*b)*c; no algebraic rewrites such as x/d -> x*(1/d));
 *  - legacy types round by truncation after adding 0.5 / 8.5 / 16.5 (C float->int conversion);
 *    Q8_0 uses roundf (half away from zero); k-quants use nearest_int (half to even, the
 *    1.5*2^23 "magic number" trick, reproduced bit for bit so that even out-of-range values
 *    behave identically);
 *  - the inverse scale used to quantize is computed from the float scale, not from the scale
 *    after rounding to fp16, except in the k-quants' final pass, which (like the reference)
 *    re-reads the fp16 super-block scales;
 *  - fp16 conversion is round-to-nearest-even (qlm_f32_to_f16 equals ggml's
 *    ggml_compute_fp32_to_fp16 for every float; the test checks a large sample).
 * ISO C mode (-std=c11) means gcc does not contract a*b+c into fused multiply-adds even where
 * FMA exists (aarch64, -march=native); clang contracts by default, hence the pragma.  Never
 * build this file with -ffast-math. */
#include "core/bytes.h"
#include "kernels/quants.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#include <float.h>
#include <math.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/types.h"

#define QK 32
#define QK_K 256
#define GROUP_MAX_EPS 1e-15f /* below this a group's largest |x| counts as all zero (k-quants) */

static int imin(int a, int b) { return a < b ? a : b; }
static int imax(int a, int b) { return a > b ? a : b; }

/* C's float -> int conversion (truncation toward zero) where it is defined; 0 elsewhere
 * (NaN or out of range, where ggml's conversion is undefined behaviour). */
static int trunc_int(float v) {
  if (!(v > -2147483648.0f && v < 2147483648.0f)) return 0;
  return (int)v;
}

/* Round to nearest, ties to even, exact for |v| < 2^22: adding 1.5*2^23 leaves the rounded
 * integer in the low mantissa bits.  ggml asserts the range; outside it (or for NaN) this still
 * returns the same bits-derived value as ggml's release build. */
static int nearest_int(float v) {
  float biased = v + 12582912.0f;
  uint32_t bits = qlm_f32_to_bits(biased);
  return (int)(bits & 0x007fffffu) - 0x00400000;
}

/* The element with the largest magnitude, keeping its sign (the first one on ties). */
static float signed_absmax(const float *x, int n, float *amax_out) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; j++) {
    if (amax < fabsf(x[j])) {
      amax = fabsf(x[j]);
      max = x[j];
    }
  }
  if (amax_out) *amax_out = amax;
  return max;
}

static void min_max(const float *x, int n, float *mn, float *mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < n; j++) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo, *mx = hi;
}

/* ---------------------------------------------------------------- legacy types (32 weights) */

/* Q4_0: d = signed max / -8, so the extreme weight maps to q = 0 and the others fill 0..15. */
void qlm_quantize_row_q4_0_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK; i++, x += QK, b += 18) {
    const float max = signed_absmax(x, QK, NULL);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    qlm_wrhalf(b, d);
    for (int j = 0; j < QK / 2; j++) {
      const float x0 = x[j] * id, x1 = x[j + QK / 2] * id;
      const int q0 = imin(15, (int8_t)trunc_int(x0 + 8.5f));
      const int q1 = imin(15, (int8_t)trunc_int(x1 + 8.5f));
      b[2 + j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
    }
  }
}

/* Q4_1: affine over [min, max], d = (max - min) / 15, m = min. */
void qlm_quantize_row_q4_1_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK; i++, x += QK, b += 20) {
    float min, max;
    min_max(x, QK, &min, &max);
    const float d = (max - min) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    qlm_wrhalf(b, d);
    qlm_wrhalf(b + 2, min);
    for (int j = 0; j < QK / 2; j++) {
      const float x0 = (x[j] - min) * id, x1 = (x[j + QK / 2] - min) * id;
      const int q0 = imin(15, (int8_t)trunc_int(x0 + 0.5f));
      const int q1 = imin(15, (int8_t)trunc_int(x1 + 0.5f));
      b[4 + j] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
    }
  }
}

/* Store 32 five-bit quants: low nibbles as in Q4_0, bit 4 of weight j at bit j of the u32 qh. */
static void pack5(const int *q, uint8_t *qh_out, uint8_t *qs) {
  uint32_t qh = 0;
  for (int j = 0; j < QK / 2; j++) {
    qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + QK / 2] & 0xF) << 4));
    qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    qh |= (uint32_t)((q[j + QK / 2] >> 4) & 1) << (j + QK / 2);
  }
  qlm_wr32(qh_out, qh);
}

/* Q5_0: d = signed max / -16, q = x/d + 16 in 0..31. */
void qlm_quantize_row_q5_0_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK; i++, x += QK, b += 22) {
    const float max = signed_absmax(x, QK, NULL);
    const float d = max / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int q[QK];
    for (int j = 0; j < QK; j++) q[j] = (uint8_t)imin(31, (int8_t)trunc_int(x[j] * id + 16.5f));
    qlm_wrhalf(b, d);
    pack5(q, b + 2, b + 6);
  }
}

/* Q5_1: affine, d = (max - min) / 31.  The reference does not clamp q to 31 (it cannot exceed
 * it by more than rounding), it keeps the low 5 bits of the byte; so do we. */
void qlm_quantize_row_q5_1_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK; i++, x += QK, b += 24) {
    float min, max;
    min_max(x, QK, &min, &max);
    const float d = (max - min) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int q[QK];
    for (int j = 0; j < QK; j++) q[j] = (uint8_t)trunc_int((x[j] - min) * id + 0.5f);
    qlm_wrhalf(b, d);
    qlm_wrhalf(b + 2, min);
    pack5(q, b + 4, b + 8);
  }
}

/* Q8_0: symmetric, d = max|x| / 127, q = roundf(x / d) (half away from zero). */
void qlm_quantize_row_q8_0_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK; i++, x += QK, b += 34) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = amax > fabsf(x[j]) ? amax : fabsf(x[j]);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    qlm_wrhalf(b, d);
    for (int j = 0; j < QK; j++) b[2 + j] = (uint8_t)(int8_t)trunc_int(roundf(x[j] * id));
  }
}

/* ---------------------------------------------------------------- k-quant searches */

/* Weighted least-squares fit of an affine quantizer x ~ scale * L + min, L in 0..nmax, min <= 0
 * (ggml's make_qkx2_quants, without imatrix).  Starts from the min/max grid, then tries
 * nstep+1 other grid densities iscale = (rmin + rdelta*is + nmax) / (max - min); for each it
 * solves the 2x2 normal equations for (scale, min) and keeps the one with the lowest weighted
 * squared error.  Returns scale; *neg_min = -min (>= 0); L gets the chosen quants. */
static float fit_affine(int n, int nmax, const float *x, const float *w, uint8_t *L, float *neg_min,
                        float rmin, float rdelta, int nstep) {
  uint8_t Laux[32];
  float min = x[0], max = x[0];
  float sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; i++) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    memset(L, 0, (size_t)n);
    *neg_min = -min;
    return 0.0f;
  }
  float iscale = (float)nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; i++) {
    int l = nearest_int(iscale * (x[i] - min));
    L[i] = (uint8_t)imax(0, imin(nmax, l));
    float diff = scale * (float)L[i] + min - x[i];
    best_error += w[i] * (diff * diff);
  }
  for (int is = 0; is <= nstep; is++) {
    iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; i++) {
      int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
      Laux[i] = (uint8_t)l;
      sum_l += w[i] * (float)l;
      sum_l2 += w[i] * (float)l * (float)l;
      sum_xl += w[i] * (float)l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) { /* the fit wants a positive offset: pin min at 0, refit the scale */
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; i++) {
        float diff = this_scale * (float)Laux[i] + this_min - x[i];
        cur_error += w[i] * (diff * diff);
      }
      if (cur_error < best_error) {
        memcpy(L, Laux, (size_t)n);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *neg_min = -min;
  return scale;
}

/* Symmetric quantizer x ~ scale * (L - nmax), L - nmax in -nmax..nmax-1, weights x^2
 * (ggml's make_qx_quants with rmse_type 1 and no imatrix).  Starts from iscale = -nmax / max
 * (max = signed absmax, so the extreme weight maps to -nmax) and tries 18 nearby grids
 * -(nmax + 0.1*is) / max, keeping the least-squares scale with the largest sumlx^2 / suml2
 * (the smallest weighted error).  Returns scale (0 for an all-zero group). */
static float fit_symmetric(int n, int nmax, const float *x, int8_t *L) {
  float amax;
  const float max = signed_absmax(x, n, &amax);
  if (amax < GROUP_MAX_EPS) {
    memset(L, 0, (size_t)n);
    return 0.0f;
  }
  float iscale = (float)-nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; i++) {
    int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = (int8_t)(l + nmax);
    float w = x[i] * x[i];
    sumlx += w * x[i] * (float)l;
    suml2 += w * (float)l * (float)l;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; is++) {
    if (is == 0) continue;
    iscale = -((float)nmax + 0.1f * (float)is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; i++) {
      int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
      float w = x[i] * x[i];
      sumlx += w * x[i] * (float)l;
      suml2 += w * (float)l * (float)l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i]))));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

/* ---------------------------------------------------------------- Q4_K / Q5_K */

/* The common part of Q4_K and Q5_K for one 256-weight super-block: fit (scale, min) per
 * 32-weight sub-block, quantize them to 6 bits against the super-block maxima, write
 * d, dmin and scales[12] into hdr[0..16), and the final quants (0..nmax) into L. */
static void k4_superblock(const float *x, int nmax, float rmin, int nstep, uint8_t *hdr, uint8_t *L) {
  float scales[QK_K / 32], mins[QK_K / 32], weights[32];
  float max_scale = 0, max_min = 0; /* the mins are stored negated, so both are >= 0 */
  for (int j = 0; j < QK_K / 32; j++) {
    const float *xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; l++) sum_x2 += xs[l] * xs[l];
    const float av_x = sqrtf(sum_x2 / 32);
    for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xs[l]);
    scales[j] = fit_affine(32, nmax, xs, weights, L + 32 * j, &mins[j], rmin, 0.1f, nstep);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }

  uint8_t *sc = hdr + 4;
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < QK_K / 32; j++) {
    /* the reference stores nearest_int into a uint8_t before clamping: keep that wrap */
    const uint8_t ls = (uint8_t)imin(63, (uint8_t)nearest_int(inv_scale * scales[j]));
    const uint8_t lm = (uint8_t)imin(63, (uint8_t)nearest_int(inv_min * mins[j]));
    if (j < 4) {
      sc[j] = ls;
      sc[j + 4] = lm;
    } else { /* low nibbles in sc[j+4], top 2 bits in the spare bits 6-7 of sc[j-4] / sc[j] */
      sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
      sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
      sc[j] |= (uint8_t)((lm >> 4) << 6);
    }
  }
  qlm_wrhalf(hdr, max_scale / 63.f);
  qlm_wrhalf(hdr + 2, max_min / 63.f);

  /* Requantize every weight against the scales as stored (fp16 d times 6-bit sub-scale).
   * A sub-block whose stored scale is 0 keeps the quants of the search. */
  const float d_all = qlm_rdhalf(hdr), dmin_all = qlm_rdhalf(hdr + 2);
  for (int j = 0; j < QK_K / 32; j++) {
    int sv, mv;
    if (j < 4) {
      sv = sc[j] & 63, mv = sc[j + 4] & 63;
    } else {
      sv = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
      mv = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
    }
    const float d = d_all * (float)sv;
    if (d == 0.0f) continue;
    const float dm = dmin_all * (float)mv;
    for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)imax(0, imin(nmax, nearest_int((x[32 * j + l] + dm) / d)));
  }
}

void qlm_quantize_row_q4_K_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 144) {
    uint8_t L[QK_K];
    memset(b, 0, 144);
    k4_superblock(x, 15, -1.0f, 20, b, L);
    uint8_t *qs = b + 16; /* per 64 weights: byte l = weight l (low nibble) | weight l+32 (high) */
    for (int c = 0; c < QK_K / 64; c++)
      for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + l + 32] << 4));
  }
}

void qlm_quantize_row_q5_K_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 176) {
    uint8_t L[QK_K];
    memset(b, 0, 176);
    k4_superblock(x, 31, -0.5f, 15, b, L);
    uint8_t *qh = b + 16, *qs = b + 48; /* bit 4 of weight e at bit e/32 of qh[e%32] */
    for (int c = 0; c < QK_K / 64; c++)
      for (int l = 0; l < 32; l++) {
        const int q0 = L[64 * c + l], q1 = L[64 * c + l + 32];
        qs[32 * c + l] = (uint8_t)((q0 & 0xF) | ((q1 & 0xF) << 4));
        qh[l] |= (uint8_t)(((q0 >> 4) << (2 * c)) | ((q1 >> 4) << (2 * c + 1)));
      }
  }
}

/* ---------------------------------------------------------------- Q6_K */

void qlm_quantize_row_q6_K_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 210) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    float max_scale = 0, max_abs_scale = 0; /* the sub-scale with the largest magnitude, signed */
    memset(b, 0, 210);
    for (int s = 0; s < QK_K / 16; s++) {
      scales[s] = fit_symmetric(16, 32, x + 16 * s, L + 16 * s);
      if (fabsf(scales[s]) > max_abs_scale) {
        max_abs_scale = fabsf(scales[s]);
        max_scale = scales[s];
      }
    }
    if (max_abs_scale < GROUP_MAX_EPS) continue; /* all zero: every byte 0, d = +0 */

    uint8_t *ql = b, *qh = b + 128, *sc = b + 192;
    const float iscale = -128.f / max_scale;
    qlm_wrhalf(b + 208, 1 / iscale);
    for (int s = 0; s < QK_K / 16; s++) sc[s] = (uint8_t)imin(127, nearest_int(iscale * scales[s]));

    const float d_all = qlm_rdhalf(b + 208);
    for (int s = 0; s < QK_K / 16; s++) {
      const float d = d_all * (float)(int8_t)sc[s];
      if (d == 0.0f) continue; /* keeps the quants of the search */
      for (int l = 0; l < 16; l++) L[16 * s + l] = (int8_t)(imax(-32, imin(31, nearest_int(x[16 * s + l] / d))) + 32);
    }

    /* per 128 weights: ql[l] = w[l] | w[l+64] << 4, ql[l+32] = w[l+32] | w[l+96] << 4,
     * qh[l] = top 2 bits of w[l], w[l+32], w[l+64], w[l+96] at shifts 0, 2, 4, 6 */
    for (int h = 0; h < QK_K / 128; h++, ql += 64, qh += 32) {
      const int8_t *q = L + 128 * h;
      for (int l = 0; l < 32; l++) {
        ql[l] = (uint8_t)((q[l] & 0xF) | ((q[l + 64] & 0xF) << 4));
        ql[l + 32] = (uint8_t)((q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4));
        qh[l] = (uint8_t)((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6));
      }
    }
  }
}

/* ---------------------------------------------------------------- Q8_K */

/* Symmetric, iscale = -127 / signed max; d is a float32.  For an all-zero block ggml leaves
 * bsums unwritten; qlm writes zeros there (the generator pre-zeroes ggml's output too). */
void qlm_quantize_row_q8_K_ref(const float *x, void *y, int64_t n) {
  uint8_t *b = y;
  for (int64_t i = 0; i < n / QK_K; i++, x += QK_K, b += 292) {
    float amax;
    const float max = signed_absmax(x, QK_K, &amax);
    memset(b, 0, 292);
    if (amax == 0.0f) continue;
    const float iscale = -127.f / max;
    int8_t q[QK_K];
    for (int j = 0; j < QK_K; j++) q[j] = (int8_t)(uint8_t)imin(127, nearest_int(iscale * x[j]));
    for (int s = 0; s < QK_K / 16; s++) {
      int sum = 0;
      for (int l = 0; l < 16; l++) sum += q[16 * s + l];
      qlm_wr16(b + 260 + 2 * s, (uint16_t)(int16_t)sum);
    }
    memcpy(b + 4, q, QK_K);
    qlm_wr32(b, qlm_f32_to_bits(1 / iscale));
  }
}

qlm_quantize_fn qlm_quantizer_of(int type) {
  switch (type) {
    case QLM_TYPE_Q4_0: return qlm_quantize_row_q4_0_ref;
    case QLM_TYPE_Q4_1: return qlm_quantize_row_q4_1_ref;
    case QLM_TYPE_Q5_0: return qlm_quantize_row_q5_0_ref;
    case QLM_TYPE_Q5_1: return qlm_quantize_row_q5_1_ref;
    case QLM_TYPE_Q8_0: return qlm_quantize_row_q8_0_ref;
    case QLM_TYPE_Q4_K: return qlm_quantize_row_q4_K_ref;
    case QLM_TYPE_Q5_K: return qlm_quantize_row_q5_K_ref;
    case QLM_TYPE_Q6_K: return qlm_quantize_row_q6_K_ref;
    case QLM_TYPE_Q8_K: return qlm_quantize_row_q8_K_ref;
    default: return NULL;
  }
}
