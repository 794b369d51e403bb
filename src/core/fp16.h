/* fp16.h — IEEE half and bfloat16 <-> float conversion (bit-exact, scalar). */
#ifndef QLM_FP16_H
#define QLM_FP16_H

#include <stdint.h>
#include <string.h>

static inline float qlm_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t qlm_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* IEEE 754 binary16 -> binary32, exact for every input incl. subnormals, inf, NaN. */
static inline float qlm_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0x1f) return qlm_bits_to_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return qlm_bits_to_f32(sign);
    /* subnormal: mant * 2^-24 */
    float f = (float)mant * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  return qlm_bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/* binary32 -> binary16, round to nearest even; overflow to inf; NaN stays NaN. */
static inline uint16_t qlm_f32_to_f16(float f) {
  uint32_t x = qlm_f32_to_bits(f);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return (uint16_t)(sign | 0x7e00); /* NaN */
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
  if (absx < 0x38800000u) { /* result is subnormal or zero: value * 2^24, round to nearest even */
    float a = qlm_bits_to_f32(absx) * 16777216.0f;
    uint32_t m = (uint32_t)a;
    float rem = a - (float)m;
    if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t mant = absx & 0x7fffff, exp = (absx >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

static inline float qlm_bf16_to_f32(uint16_t b) { return qlm_bits_to_f32((uint32_t)b << 16); }

static inline uint16_t qlm_f32_to_bf16(float f) {
  uint32_t x = qlm_f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  x += 0x7fff + ((x >> 16) & 1); /* round to nearest even */
  return (uint16_t)(x >> 16);
}

#endif
