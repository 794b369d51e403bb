/* vexp.h — e^x for x <= 0, written so that loops over arrays vectorize (softmax weights, SiLU).
 *
 * x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2; e^r by Cephes' degree-6 polynomial
 * (expf.c, relative error about 1 ulp); 2^n put into the exponent bits.  n is read from the bits of
 * t = x log2(e) + 1.5 * 2^23 (adding the shifter rounds to an integer in the low mantissa bits)
 * instead of converting a float to int, so a NaN stays a NaN without undefined behaviour.  x below
 * -87 gives e^-87 (~1.6e-38, the smallest normal floats' range: it weighs nothing beside e^0).
 * Branch-free; FMA contraction is off in qlm's C11 build, so every SIMD level and the scalar loop
 * give the same bits. */
#ifndef QLM_VEXP_H
#define QLM_VEXP_H

#include <stdint.h>
#include <string.h>

static inline float qlm_exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifter = 12582912.0f; /* 1.5 * 2^23 */
  float t = x * 1.44269504088896341f + shifter, n = t - shifter;
  float r = x - n * 0.693359375f - n * -2.12194440e-4f; /* ln2 in two parts: the first is exact in n */
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  float y = p * r * r + r + 1.0f;
  int32_t tb;
  memcpy(&tb, &t, sizeof tb);
  uint32_t bits = (uint32_t)(tb - 0x4B400000 + 127) << 23; /* bits of t minus the shifter's = n */
  float sc;
  memcpy(&sc, &bits, sizeof sc);
  return y * sc;
}

/* SiLU x / (1 + e^-x) from e = e^-|x| only: x (1 / (1 + e)) for x >= 0, x e (1 / (1 + e)) below. */
static inline float qlm_silu(float x) {
  float e = qlm_exp_nonpos(x < 0.0f ? x : -x), r = 1.0f / (1.0f + e);
  return x >= 0.0f ? x * r : x * e * r;
}

#endif
