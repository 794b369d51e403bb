/* bgemm.c — the scalar reference of kernels/bgemm.h's product (VDPBF16PS's arithmetic, written
 * plainly), the f32 -> bf16 rows and the dispatch. */
#include "kernels/bgemm.h"

#include <float.h>
#include <math.h>

#include "kernels/cpu.h"
#include "kernels/sgemm.h"

void qlm_bf16_from_f32(const float *x, int64_t n, qlm_bf16 *y, int64_t n_pad) {
  for (int64_t i = 0; i < n; i++) y[i] = qlm_f32_to_bf16(x[i]);
  for (int64_t i = n; i < n_pad; i++) y[i] = 0;
}

/* An operand as VDPBF16PS reads it: subnormals are zero (DAZ). */
static float operand(qlm_bf16 h) {
  float f = qlm_bf16_to_f32(h);
  return fabsf(f) < FLT_MIN ? copysignf(0.0f, f) : f;
}

/* acc + x·w rounded once (the product is exact in f32), a subnormal result flushed (FTZ). */
static float madd(float acc, qlm_bf16 x, qlm_bf16 w) {
  float p = operand(x) * operand(w);
  float s = acc + p;
  return fabsf(s) < FLT_MIN ? copysignf(0.0f, s) : s;
}

static float dot_lanes(const qlm_bf16 *x, const qlm_bf16 *w, int64_t K) {
  float s[16] = {0};
  for (int64_t k0 = 0; k0 < K; k0 += QLM_BGEMM_K_ALIGN)
    for (int l = 0; l < 16; l++) {
      int64_t k = k0 + 2 * l;
      s[l] = madd(s[l], x[k + 1], w[k + 1]);
      s[l] = madd(s[l], x[k], w[k]);
    }
  return qlm_sgemm_lanes_sum(s);
}

void qlm_bgemm_xwt_ref(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *W, int64_t ldw, float *Y, int64_t ldy,
                       int64_t T, int64_t n, int64_t K) {
  for (int64_t i = 0; i < T; i++)
    for (int64_t j = 0; j < n; j++) Y[i * ldy + j] = dot_lanes(X + i * ldx, W + j * ldw, K);
}

bool qlm_bgemm_fast(void) { return qlm_cpu_simd_level() >= QLM_SIMD_AVX512 && qlm_cpu_has_avx512_bf16(); }

void qlm_bgemm_xwt(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *W, int64_t ldw, float *Y, int64_t ldy, int64_t T,
                   int64_t n, int64_t K) {
  if (qlm_bgemm_fast()) qlm_bgemm_xwt_avx512bf16(X, ldx, W, ldw, Y, ldy, T, n, K);
  else qlm_bgemm_xwt_ref(X, ldx, W, ldw, Y, ldy, T, n, K);
}
