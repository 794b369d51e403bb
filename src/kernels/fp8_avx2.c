/* fp8_avx2.c — AVX2 dot product of FP8 e4m3fn rows (kernels/fp8.h) with f32 activations.
 *
 * A code converts to float without a table: its 7 magnitude bits shifted left by 20 land in a
 * binary32's exponent (4 bits) and mantissa (3 bits), which as a float is the e4m3 value times
 * 2^-120 — for subnormal codes too, the float is then subnormal with the same mantissa — so one
 * multiplication by 2^120 (exact) gives the value; the sign bit goes to bit 31 and NaN codes
 * (magnitude 0x7F) get all bits set.  Six integer/float operations per 8 codes, no gather. */
#include <immintrin.h>

#include "core/bytes.h"
#include "kernels/fp8.h"

static inline __m256 decode8(const uint8_t *c) {
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
  const __m256i mag = _mm256_and_si256(v, _mm256_set1_epi32(0x7F));
  const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x80)), 24);
  const __m256i nan = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F));
  __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(mag, 20)), _mm256_set1_ps(0x1p120f));
  return _mm256_or_ps(f, _mm256_castsi256_ps(_mm256_or_si256(sign, nan)));
}

static inline float hsum(__m256 s) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

float qlm_vec_dot_fp8_avx2(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const float *t = qlm_e4m3fn_table(), *x = a;
  const uint8_t *b = w;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, b += QLM_FP8_HEADER + (size_t)g, x += g) {
    const uint8_t *c = b + QLM_FP8_HEADER;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= g; i += 16) {
      acc0 = _mm256_fmadd_ps(decode8(c + i), _mm256_loadu_ps(x + i), acc0);
      acc1 = _mm256_fmadd_ps(decode8(c + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    for (; i + 8 <= g; i += 8) acc0 = _mm256_fmadd_ps(decode8(c + i), _mm256_loadu_ps(x + i), acc0);
    float acc = hsum(_mm256_add_ps(acc0, acc1));
    for (; i < g; i++) acc += t[c[i]] * x[i];
    sum += qlm_rdf32(b) * acc;
  }
  return sum;
}
