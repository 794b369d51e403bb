/* sgemm.c — the scalar reference of kernels/sgemm.h's product: the AVX-512 kernel's exact
 * arithmetic, written plainly (one output at a time, 16 lanes, fmaf). */
#include "kernels/sgemm.h"

#include <math.h>

static float dot_lanes(const float *x, const float *w, int64_t K) {
  float s[16] = {0};
  for (int64_t k0 = 0; k0 < K; k0 += 16)
    for (int l = 0; l < 16; l++) {
      int64_t k = k0 + l;
      s[l] = k < K ? fmaf(w[k], x[k], s[l]) : fmaf(0.0f, 0.0f, s[l]);
    }
  return qlm_sgemm_lanes_sum(s);
}

void qlm_sgemm_xwt_ref(const float *X, int64_t ldx, const float *W, int64_t ldw, float *Y, int64_t ldy, int64_t T,
                       int64_t n, int64_t K) {
  for (int64_t i = 0; i < T; i++)
    for (int64_t j = 0; j < n; j++) Y[i * ldy + j] = dot_lanes(X + i * ldx, W + j * ldw, K);
}
