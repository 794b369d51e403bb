/* fp8.c — float8 e4m3fn storage (layout and conversions in kernels/fp8.h): the converters, the
 * dequantizer, the scalar dot product and the traits builder of QLM_FAMILY_FP8 ids. */
#include "kernels/fp8.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/cpu.h"

int qlm_fp8_type(int64_t cols) { return cols >= 1 && cols <= 0xFFFF ? qlm_type_make(QLM_FAMILY_FP8, 8, (int)cols) : -1; }

/* The value of a code from its fields: exponent field e (bias 7), mantissa m. */
static float e4m3_value(uint8_t c) {
  int e = (c >> 3) & 0xF, m = c & 7;
  float v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = ldexpf((float)m, -9); /* subnormal: m * 2^-9 */
  else v = ldexpf((float)(8 + m), e - 10);   /* (1 + m/8) * 2^(e-7) */
  return (c & 0x80) ? -v : v;
}

static float g_table[256];
static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;
static void build_table(void) {
  for (int c = 0; c < 256; c++) g_table[c] = e4m3_value((uint8_t)c);
}

const float *qlm_e4m3fn_table(void) {
  pthread_once(&g_table_once, build_table);
  return g_table;
}

float qlm_e4m3fn_to_f32(uint8_t c) { return qlm_e4m3fn_table()[c]; }

/* On the bit pattern (quanto's qfloat8 quantization calls this per weight, so it must be cheap):
 * in the normal range adding 2^19 - 1 + (bit 20) and shifting out 20 bits rounds the 23-bit
 * significand to 3 bits, ties to even, with the carry moving into the exponent as it should; the
 * float exponent bias 127 becomes e4m3's 7 by subtracting 120 << 3.  The subnormal range is the
 * nearest multiple of 2^-9: a * 2^9 < 8 is exact, and adding and subtracting 1.5 * 2^23 rounds it
 * to an integer, ties to even; 8 * 2^-9 = 2^-6 is code 0x08, the smallest normal, so the carry is
 * right there too. */
uint8_t qlm_f32_to_e4m3fn(float x) {
  uint32_t bits = qlm_f32_to_bits(x);
  uint8_t sign = (uint8_t)((bits >> 24) & 0x80);
  uint32_t abits = bits & 0x7fffffffu;
  if (abits > 0x7f800000u) return (uint8_t)(sign | 0x7F);   /* NaN */
  if (abits >= 0x43e80000u) return (uint8_t)(sign | 0x7E);  /* >= 464, midway 448..480 rounds to even (448); saturate */
  if (abits < 0x3c800000u) {                               /* < 2^-6 */
    float m = (qlm_bits_to_f32(abits) * 512.0f + 12582912.0f) - 12582912.0f;
    return (uint8_t)(sign | (uint8_t)m);
  }
  uint32_t r = (abits + 0x7ffffu + ((abits >> 20) & 1u)) >> 20;
  return (uint8_t)(sign | (uint8_t)(r - (120u << 3)));
}

static void fp8_to_float(int type, const void *src, float *dst, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const float *t = qlm_e4m3fn_table();
  const uint8_t *b = src;
  for (int64_t k = 0; k < n / g; k++, b += QLM_FP8_HEADER + (size_t)g, dst += g) {
    float s = qlm_rdf32(b);
    for (int i = 0; i < g; i++) dst[i] = s * t[b[QLM_FP8_HEADER + i]];
  }
}

float qlm_vec_dot_fp8_ref(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const float *t = qlm_e4m3fn_table(), *x = a;
  const uint8_t *b = w;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, b += QLM_FP8_HEADER + (size_t)g, x += g) {
    float acc = 0.0f;
    for (int i = 0; i < g; i++) acc += t[b[QLM_FP8_HEADER + i]] * x[i];
    sum += qlm_rdf32(b) * acc;
  }
  return sum;
}

static qlm_vec_dot_t_fn fp8_vec_dot_t_for(int type, int level) {
  (void)type;
  if (level >= QLM_SIMD_AVX512) return qlm_vec_dot_fp8_avx512;
  if (level >= QLM_SIMD_AVX2) return qlm_vec_dot_fp8_avx2;
  return qlm_vec_dot_fp8_ref;
}

static void copy_f32(const float *x, void *dst, int64_t n) { memcpy(dst, x, (size_t)n * sizeof *x); }

int qlm_fp8_traits(int type, qlm_type_traits *tr, char *name, size_t cap) {
  int g = QLM_TYPE_BLOCK(type);
  if (QLM_TYPE_FAMILY(type) != QLM_FAMILY_FP8 || QLM_TYPE_BITS(type) != 8 || g < 1) return 0;
  snprintf(name, cap, "fp8_e4m3_row_%d", g);
  memset(tr, 0, sizeof *tr);
  tr->block_size = g;
  tr->type_size = QLM_FP8_HEADER + (size_t)g;
  tr->to_float_t = fp8_to_float;
  tr->vec_dot_type = QLM_TYPE_F32;
  tr->quantize_act = copy_f32;
  tr->vec_dot_t = qlm_vec_dot_fp8_ref;
  tr->vec_dot_t_for = fp8_vec_dot_t_for;
  return 1;
}
