/* quanto_rows.c — the scalar reference of quanto's row steps and the dispatch (quanto_rows.h). */
#include "kernels/quanto_rows.h"

#include <math.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/fp8.h"
#include "kernels/half_round.h"
#include "kernels/hqq.h"

float qlm_quanto_rd(float x, int dtype) {
  if (dtype == QLM_QDTYPE_F16) return qlm_f16_to_f32(qlm_f32_to_f16(x));
  if (dtype == QLM_QDTYPE_BF16) return qlm_bf16_to_f32(qlm_f32_to_bf16(x));
  return x;
}

/* Clamping first gives the same result as rounding first (rounding is monotonic and the bounds are
 * integers, |bound| < 2^22) and brings v where adding and subtracting 1.5 * 2^23 rounds it to an
 * integer, half to even, in the default rounding mode: plain float operations that vectorize
 * (nearbyintf and fmaxf are library calls in a baseline x86-64 build). */
float qlm_quanto_round_clamp(float v, float lo, float hi) {
  v = v > lo ? v : lo; /* NaN > lo is false: lo */
  v = v < hi ? v : hi;
  return (v + 12582912.0f) - 12582912.0f;
}

void qlm_quanto_affine_params(float lo, float hi, int bits, bool int_zero, int dtype, float *s, float *shift, int *z) {
  const float qmax = (float)((1 << bits) - 1);
  if (hi == lo) lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f); /* quanto: scale 0 and NaN codes */
  *s = qlm_quanto_rd(qlm_quanto_rd(hi - lo, dtype) / qmax, dtype);
  *shift = -lo;
  *z = 0;
  if (!(*s > 0.0f)) { /* an all-zero group */
    *s = 0.0f, *shift = 0.0f;
    return;
  }
  if (int_zero) *z = (int)qlm_quanto_round_clamp(qlm_quanto_rd(*shift / *s, dtype), 0.0f, qmax);
}

/* A row of values rounded to the dtype. */
static void rd_row(float *x, int64_t n, int dtype) {
  if (dtype == QLM_QDTYPE_F16) qlm_round_f16_row(x, n);
  else if (dtype == QLM_QDTYPE_BF16) qlm_round_bf16_row(x, n);
}

/* t = w rounded to the dtype; false if some w or rd(w) is not finite. */
static bool load_row(const float *w, int n, int dtype, float *t) {
  int bad = 0;
  for (int i = 0; i < n; i++) bad |= !isfinite(w[i]);
  memcpy(t, w, (size_t)n * sizeof *t);
  rd_row(t, n, dtype);
  for (int i = 0; i < n; i++) bad |= !isfinite(t[i]);
  return !bad;
}

/* max |w_i| of finite w (the comparison form vectorizes; fmaxf is a library call) */
static float absmax(const float *w, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; i++) {
    float a = fabsf(w[i]);
    m = a > m ? a : m;
  }
  return m;
}

/* t[i] = rd(w[i] / s) (w may be t) */
static void div_row(const float *w, int n, float s, int dtype, float *t) {
  for (int i = 0; i < n; i++) t[i] = w[i] / s;
  rd_row(t, n, dtype);
}

static bool q8_scalar(const float *w, int n, int dtype, float *t, float *s, uint8_t *u) {
  if (!load_row(w, n, dtype, t)) return false;
  *s = qlm_quanto_rd(absmax(t, n) / 127.0f, dtype);
  if (!(*s > 0.0f)) {
    memset(u, 128, (size_t)n);
    return true;
  }
  div_row(t, n, *s, dtype, t);
  for (int i = 0; i < n; i++) u[i] = (uint8_t)(128 + (int)qlm_quanto_round_clamp(t[i], -128.0f, 127.0f));
  return true;
}

static bool f8_scalar(const float *w, int n, int dtype, float *t, float *s, uint8_t *c) {
  if (!load_row(w, n, dtype, t)) return false;
  *s = qlm_quanto_rd(absmax(t, n) / QLM_FP8_MAX, dtype);
  if (!(*s > 0.0f)) {
    memset(c, 0, (size_t)n); /* e4m3fn +0 */
    return true;
  }
  div_row(t, n, *s, dtype, t);
  for (int i = 0; i < n; i++) {
    float v = t[i] > -QLM_FP8_MAX ? t[i] : -QLM_FP8_MAX;
    v = v < QLM_FP8_MAX ? v : QLM_FP8_MAX;
    c[i] = qlm_f32_to_e4m3fn(v);
  }
  return true;
}

/* One group of g rounded weights x (overwritten as scratch). */
static void affine_group(float *x, int g, int bits, bool int_zero, int dtype, float *s, float *shift, int *z,
                         uint8_t *u) {
  const float fq = (float)((1 << bits) - 1);
  float lo = x[0], hi = x[0];
  for (int i = 1; i < g; i++) lo = x[i] < lo ? x[i] : lo, hi = x[i] > hi ? x[i] : hi;
  qlm_quanto_affine_params(lo, hi, bits, int_zero, dtype, s, shift, z);
  if (!(*s > 0.0f)) {
    memset(u, 0, (size_t)g);
    return;
  }
  if (int_zero) {
    /* clamp(round(t) + z, 0, qmax) = round(clamp(t, -z, qmax - z)) + z: z is an integer in [0, qmax] */
    const float zf = (float)*z;
    div_row(x, g, *s, dtype, x);
    for (int i = 0; i < g; i++) u[i] = (uint8_t)((int)qlm_quanto_round_clamp(x[i], -zf, fq - zf) + *z);
  } else {
    for (int i = 0; i < g; i++) x[i] = x[i] + *shift;
    rd_row(x, g, dtype);
    div_row(x, g, *s, dtype, x);
    for (int i = 0; i < g; i++) u[i] = (uint8_t)qlm_quanto_round_clamp(x[i], 0.0f, fq);
  }
}

static bool affine_scalar(const float *w, int n, int g, int bits, bool int_zero, int dtype, float *t, float *s,
                          float *shift, int *z, uint8_t *u) {
  if (!load_row(w, n, dtype, t)) return false;
  for (int c = 0, k = 0; c < n; c += g, k++) affine_group(t + c, g, bits, int_zero, dtype, s + k, shift + k, z + k, u + c);
  return true;
}

int qlm_quanto_hqq_blocks(int type, int n, int g, const float *s, const float *shift, const uint8_t *u, uint8_t *blk) {
  const size_t bb = qlm_hqq_block_bytes(type);
  for (int k = 0; k < n / g; k++, blk += bb) {
    float zf = s[k] > 0.0f ? shift[k] / s[k] : 0.0f;
    if (!(fabsf(zf) <= 65504.0f)) return k;
    qlm_hqq_pack(type, s[k], zf, u + (size_t)k * (size_t)g, blk);
  }
  return -2;
}

static int affine_hqq_scalar(const float *w, int n, int g, int bits, int dtype, int type, float *t, float *s,
                             float *shift, int *z, uint8_t *u, uint8_t *blk) {
  if (!affine_scalar(w, n, g, bits, false, dtype, t, s, shift, z, u)) return -1;
  return qlm_quanto_hqq_blocks(type, n, g, s, shift, u, blk);
}

static const qlm_quanto_rows k_scalar = {.q8 = q8_scalar, .f8 = f8_scalar, .affine = affine_scalar,
                                         .affine_hqq = affine_hqq_scalar};

const qlm_quanto_rows *qlm_quanto_rows_for(qlm_simd_level level) {
#if defined(__x86_64__) || defined(__i386__)
  if (level >= QLM_SIMD_AVX512 && qlm_cpu_detect() >= QLM_SIMD_AVX512) return qlm_quanto_rows_avx512();
#endif
  (void)level;
  return &k_scalar;
}

const qlm_quanto_rows *qlm_quanto_rows_get(void) { return qlm_quanto_rows_for(qlm_cpu_simd_level()); }

const qlm_quanto_rows *qlm_quanto_rows_scalar(void) { return &k_scalar; }
