/* softmax_avx2.c — kernels/softmax.h's row on AVX2 + FMA: qlm_softmax_exp's operations lane for
 * lane (2^n from n's integer in the exponent bits, a NaN y blended back as the reference returns
 * it), core/fp16.h's bf16 rounding on 32-bit lanes; the 16 summation lanes as two vectors of 8. */
#include <immintrin.h>
#include <math.h>

#include "kernels/softmax.h"

static inline __m256 set1(float v) { return _mm256_set1_ps(v); }

static inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(set1(-87.0f), x); /* a NaN x stays NaN (the second operand), as x < c ? c : x */
  __m256 t = _mm256_fmadd_ps(x, set1(QLM_SMX_LOG2E), set1(QLM_SMX_SHIFTER));
  __m256 n = _mm256_sub_ps(t, set1(QLM_SMX_SHIFTER));
  __m256 r = _mm256_fmadd_ps(n, set1(-QLM_SMX_LN2_HI), x);
  r = _mm256_fmadd_ps(n, set1(-QLM_SMX_LN2_LO), r);
  __m256 p = _mm256_fmadd_ps(set1(QLM_SMX_P0), r, set1(QLM_SMX_P1));
  p = _mm256_fmadd_ps(p, r, set1(QLM_SMX_P2));
  p = _mm256_fmadd_ps(p, r, set1(QLM_SMX_P3));
  p = _mm256_fmadd_ps(p, r, set1(QLM_SMX_P4));
  p = _mm256_fmadd_ps(p, r, set1(QLM_SMX_P5));
  __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), set1(1.0f));
  __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 e = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
  return _mm256_blendv_ps(e, y, _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
}

/* qlm_f32_to_bf16 on 8 lanes, in the low halves of the 32-bit lanes. */
static inline __m256i to_bf16(__m256 v) {
  __m256i x = _mm256_castps_si256(v);
  __m256i odd = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
  __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  __m256i quiet = _mm256_or_si256(x, _mm256_set1_epi32(0x400000));
  return _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet, nan), 16);
}

float qlm_softmax_bf16_avx2(const float *row, int n, qlm_bf16 *out, int n_pad) {
  int n16 = n & ~15;
  __m256 mx0 = set1(-INFINITY), mx1 = mx0;
  for (int i = 0; i < n16; i += 16) { /* row > mx ? row : mx */
    mx0 = _mm256_max_ps(_mm256_loadu_ps(row + i), mx0);
    mx1 = _mm256_max_ps(_mm256_loadu_ps(row + i + 8), mx1);
  }
  float lanes[16], m = -INFINITY;
  _mm256_storeu_ps(lanes, mx0);
  _mm256_storeu_ps(lanes + 8, mx1);
  for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
  for (int i = n16; i < n; i++) m = row[i] > m ? row[i] : m;
  __m256 vm = set1(m), sum0 = _mm256_setzero_ps(), sum1 = sum0;
  for (int i = 0; i < n16; i += 16) {
    __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + i), vm));
    __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + i + 8), vm));
    /* packus interleaves the 128-bit halves (e0 lo, e1 lo, e0 hi, e1 hi): put back in order */
    __m256i h = _mm256_permute4x64_epi64(_mm256_packus_epi32(to_bf16(e0), to_bf16(e1)), 0xD8);
    _mm256_storeu_si256((__m256i *)(out + i), h);
    sum0 = _mm256_add_ps(sum0, e0);
    sum1 = _mm256_add_ps(sum1, e1);
  }
  float tot = 0.0f;
  for (int i = n16; i < n; i++) {
    float e = qlm_softmax_exp(row[i] - m);
    out[i] = qlm_f32_to_bf16(e);
    tot += e;
  }
  _mm256_storeu_ps(lanes, sum0);
  _mm256_storeu_ps(lanes + 8, sum1);
  for (int l = 0; l < 16; l++) tot += lanes[l];
  for (int i = n; i < n_pad; i++) out[i] = 0;
  return tot;
}
