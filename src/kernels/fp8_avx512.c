/* fp8_avx512.c — AVX-512 dot product of FP8 e4m3fn rows (kernels/fp8.h) with f32 activations:
 * the conversion of kernels/fp8_avx2.c on 16 lanes. */
#include <immintrin.h>

#include "core/bytes.h"
#include "kernels/fp8.h"

static inline __m512 decode16(const uint8_t *c) {
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c));
  const __m512i mag = _mm512_and_si512(v, _mm512_set1_epi32(0x7F));
  const __m512i sign = _mm512_slli_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0x80)), 24);
  const __mmask16 nan = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
  __m512 f = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(mag, 20)), _mm512_set1_ps(0x1p120f));
  __m512i bits = _mm512_or_si512(_mm512_castps_si512(f), sign);
  return _mm512_castsi512_ps(_mm512_mask_mov_epi32(bits, nan, _mm512_set1_epi32(-1)));
}

float qlm_vec_dot_fp8_avx512(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const float *t = qlm_e4m3fn_table(), *x = a;
  const uint8_t *b = w;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, b += QLM_FP8_HEADER + (size_t)g, x += g) {
    const uint8_t *c = b + QLM_FP8_HEADER;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= g; i += 32) {
      acc0 = _mm512_fmadd_ps(decode16(c + i), _mm512_loadu_ps(x + i), acc0);
      acc1 = _mm512_fmadd_ps(decode16(c + i + 16), _mm512_loadu_ps(x + i + 16), acc1);
    }
    for (; i + 16 <= g; i += 16) acc0 = _mm512_fmadd_ps(decode16(c + i), _mm512_loadu_ps(x + i), acc0);
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; i < g; i++) acc += t[c[i]] * x[i];
    sum += qlm_rdf32(b) * acc;
  }
  return sum;
}
