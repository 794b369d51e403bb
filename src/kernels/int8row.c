/* int8row.c — LLM.int8() storage types (layout and formulas in kernels/int8row.h): quantizers,
 * dequantizer, scalar dot product and the traits builder of QLM_FAMILY_INT8_ROW / Q8_ROW ids. */
#include "kernels/int8row.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/cpu.h"

int qlm_int8row_type(int64_t cols) {
  return cols >= 1 && cols <= 0xFFFF ? qlm_type_make(QLM_FAMILY_INT8_ROW, 8, (int)cols) : -1;
}

int qlm_q8row_type(int64_t cols) {
  return cols >= 1 && cols <= 0xFFFF ? qlm_type_make(QLM_FAMILY_Q8_ROW, 8, (int)cols) : -1;
}

/* round_half_even(x * inv) as an int8 within +-127; NaN (from non-finite input) gives 0. */
static inline int8_t code_of(float x, float inv) {
  float v = rintf(x * inv);
  if (!(v == v)) return 0;
  return (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : (int)v);
}

/* Writes the block of row x with the given absmax; elements with |x| >= thr (thr > 0) get 0. */
static void encode_row(const float *x, uint8_t *b, int64_t n, float amax, float thr) {
  uint32_t bits;
  memcpy(&bits, &amax, sizeof bits);
  qlm_wr32(b, bits); /* f32, little-endian */
  int8_t *q = (int8_t *)(b + QLM_INT8ROW_HEADER);
  if (!(amax > 0.0f)) {
    memset(q, 0, (size_t)n);
    return;
  }
  /* bnb multiplies by the float reciprocal 127/absmax (it does not divide each element) */
  const float inv = 127.0f / amax;
  if (thr > 0.0f) {
    for (int64_t i = 0; i < n; i++) q[i] = fabsf(x[i]) >= thr ? 0 : code_of(x[i], inv);
  } else {
    for (int64_t i = 0; i < n; i++) q[i] = code_of(x[i], inv);
  }
}

void qlm_q8_row_quantize(const float *x, void *block, int64_t n, float threshold) {
  float amax = 0.0f;
  if (threshold > 0.0f) {
    for (int64_t i = 0; i < n; i++) {
      float a = fabsf(x[i]);
      if (a < threshold) amax = fmaxf(amax, a); /* outliers are zeroed before bnb's absmax */
    }
  } else {
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
  }
  encode_row(x, block, n, amax, threshold);
}

void qlm_int8row_quantize_row(const float *x, void *block, int64_t n) { qlm_q8_row_quantize(x, block, n, 0.0f); }

/* traits->quantize_act has no type id: n is taken as one row (the matmul passes n = cols). */
static void quantize_act_row(const float *x, void *dst, int64_t n) { qlm_int8row_quantize_row(x, dst, n); }

/* Dequantizer of both families: ((float)q * absmax) * (1/127 as float), bnb's order. */
static void int8row_to_float(int type, const void *src, float *dst, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const uint8_t *b = src;
  for (int64_t k = 0; k < n / g; k++, b += QLM_INT8ROW_HEADER + (size_t)g, dst += g) {
    float s = qlm_rdf32(b);
    const int8_t *q = (const int8_t *)(b + QLM_INT8ROW_HEADER);
    for (int i = 0; i < g; i++) dst[i] = ((float)q[i] * s) * QLM_INT8ROW_DEQ;
  }
}

int32_t qlm_int8_dot_i32_ref(const int8_t *w, const int8_t *a, int64_t n) {
  int32_t s = 0; /* |s| <= 128 * 127 * 65535 < 2^31 */
  for (int64_t i = 0; i < n; i++) s += (int32_t)w[i] * a[i];
  return s;
}

float qlm_vec_dot_int8row_ref(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = QLM_INT8ROW_HEADER + (size_t)g;
  const uint8_t *wb = w, *ab = a;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, wb += bs, ab += bs) {
    const int8_t *qw = (const int8_t *)(wb + QLM_INT8ROW_HEADER), *qa = (const int8_t *)(ab + QLM_INT8ROW_HEADER);
    int32_t c = qlm_int8_dot_i32_ref(qw, qa, g);
    sum += ((float)c * (qlm_rdf32(ab) * qlm_rdf32(wb))) * QLM_INT8ROW_MM_DEQ;
  }
  return sum;
}

static qlm_vec_dot_t_fn int8row_vec_dot_t_for(int type, int level) {
  (void)type;
  if (level >= QLM_SIMD_AVX512)
    return qlm_cpu_has_avx512_vnni() ? qlm_vec_dot_int8row_avx512vnni : qlm_vec_dot_int8row_avx512;
  if (level >= QLM_SIMD_AVX2) return qlm_vec_dot_int8row_avx2;
  return NULL;
}

int qlm_int8row_traits(int type, qlm_type_traits *tr, char *name, size_t cap) {
  int fam = QLM_TYPE_FAMILY(type), bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if ((fam != QLM_FAMILY_INT8_ROW && fam != QLM_FAMILY_Q8_ROW) || bits != 8 || g < 1) return 0;
  memset(tr, 0, sizeof *tr);
  tr->block_size = g;
  tr->type_size = QLM_INT8ROW_HEADER + (size_t)g;
  tr->to_float_t = int8row_to_float;
  if (fam == QLM_FAMILY_INT8_ROW) {
    snprintf(name, cap, "int8_row_%d", g);
    tr->vec_dot_type = qlm_q8row_type(g);
    tr->quantize_act = quantize_act_row;
    tr->vec_dot_t = qlm_vec_dot_int8row_ref;
    tr->vec_dot_t_for = int8row_vec_dot_t_for;
  } else {
    snprintf(name, cap, "q8_row_%d", g);
  }
  return 1;
}
