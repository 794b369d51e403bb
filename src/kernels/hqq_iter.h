/* hqq_iter.h — the body of one HQQ solver iteration (kernels/hqq.h), included by hqq.c,
 * hqq_avx2.c and hqq_avx512.c so that each compiles it for its own instruction set.  Only
 * plain IEEE operations in a fixed order (no FMA: the project builds ISO C, which does not
 * contract), so all three give bit-identical results. */
#ifndef QLM_HQQ_ITER_H
#define QLM_HQQ_ITER_H

#include <math.h>

#include "kernels/hqq.h"

#define HQQ_LANES 16
/* x + 1.5*2^23 - 1.5*2^23 rounds x in [0, 2^22) to the nearest integer, ties to even (the
 * default rounding mode), exactly as torch.round / nearbyintf, and vectorizes everywhere. */
#define HQQ_ROUND_MAGIC 12582912.0f

/* The code of w: clamp(round(w * si + z), 0, qmax).  Clamping first gives the same result
 * (rounding is monotonic and the bounds are integers) and keeps the value in the magic range. */
static inline float hqq_code(float w, float si, float z, float qmax) {
  float v = w * si + z;
  v = v > 0.0f ? v : 0.0f;
  v = v < qmax ? v : qmax;
  return (v + HQQ_ROUND_MAGIC) - HQQ_ROUND_MAGIC;
}

/* The zero update of a group where some |W - W_r| may pass the shrink threshold: shrink_p with
 * powf, element by element (rare for LLM weights, whose errors are far below it). */
static double hqq_zero_slow(const qlm_hqq_iter_args *a, const float *W, float si, float z) {
  float acc[HQQ_LANES] = {0};
  for (int j = 0; j < a->g; j++) {
    float w = W[j], q = hqq_code(w, si, z, a->qmax);
    float e = w - (q - z) / si, ax = fabsf(e);
    float sh = ax - a->inv_beta * powf(ax, a->p_m1);
    sh = sh > 0.0f ? sh : 0.0f;
    float we = e < 0.0f ? -sh : sh;
    acc[j % HQQ_LANES] += q - (w - we) * si;
  }
  float sum = 0.0f;
  for (int l = 0; l < HQQ_LANES; l++) sum += acc[l];
  return sum;
}

/* One lane step: error |w - W_r| into ae/mx, and W_q - W * si (the zero update when W_e = 0). */
#define HQQ_LANE_STEP(j, l)                                                                                          \
  do {                                                                                                               \
    float w_ = W[j], q_ = hqq_code(w_, s, zk, a->qmax);                                                              \
    float e_ = fabsf(w_ - (q_ - zk) / s);                                                                            \
    ae[l] += e_;                                                                                                     \
    mx[l] = mx[l] > e_ ? mx[l] : e_;                                                                                 \
    az[l] += q_ - w_ * s;                                                                                            \
  } while (0)

static inline double hqq_iter_body(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si,
                                   float *z) {
  const int g = a->g;
  double total = 0.0;
  for (int64_t k = 0; k < ng; k++, W += g) {
    const float s = si[k], zk = z[k];
    float ae[HQQ_LANES] = {0}, az[HQQ_LANES] = {0}, mx[HQQ_LANES] = {0};
    int i = 0;
    for (; i + HQQ_LANES <= g; i += HQQ_LANES)
      for (int l = 0; l < HQQ_LANES; l++) HQQ_LANE_STEP(i + l, l);
    for (int l = 0; i + l < g; l++) HQQ_LANE_STEP(i + l, l);
    float se = 0.0f, sz = 0.0f, m = 0.0f;
    for (int l = 0; l < HQQ_LANES; l++) {
      se += ae[l];
      sz += az[l];
      m = m > mx[l] ? m : mx[l];
    }
    /* W_e is 0 everywhere unless some error reaches the threshold (then recompute with it) */
    if (!(m < a->shrink_thr)) sz = (float)hqq_zero_slow(a, W, s, zk);
    z[k] = sz / (float)g;
    total += se;
  }
  return total;
}

#endif
