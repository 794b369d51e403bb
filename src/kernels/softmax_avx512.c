/* softmax_avx512.c — kernels/softmax.h's row on AVX-512F: the reference's operations lane for lane
 * (vexp.h's e^x as separate multiplies and adds, as the C11 build compiles it: no FMA), the bf16
 * rounding of core/fp16.h on 32-bit lanes, narrowed by VPMOVDW. */
#include <immintrin.h>
#include <math.h>

#include "kernels/softmax.h"
#include "kernels/vexp.h"

/* qlm_exp_nonpos on 16 lanes. */
static inline __m512 exp_nonpos16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* (c > x) ? c : x — a NaN x stays NaN, as x < c ? c : x */
  const __m512 shifter = _mm512_set1_ps(12582912.0f);
  __m512 t = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), shifter);
  __m512 n = _mm512_sub_ps(t, shifter);
  __m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f))),
                           _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201E-1f));
  __m512 y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
  __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000)),
                                                    _mm512_set1_epi32(127)),
                                   23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(bits));
}

/* qlm_f32_to_bf16 on 16 lanes: round to nearest even, a NaN made quiet. */
static inline __m256i to_bf16(__m512 v) {
  __m512i x = _mm512_castps_si512(v);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  __m512i quiet = _mm512_or_si512(x, _mm512_set1_epi32(0x400000)); /* bit 6 of the upper half */
  __m512i h = _mm512_srli_epi32(_mm512_mask_blend_epi32(nan, rounded, quiet), 16);
  return _mm512_cvtepi32_epi16(h);
}

float qlm_softmax_bf16_avx512(const float *row, int n, qlm_bf16 *out, int n_pad) {
  int n16 = n & ~15;
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int i = 0; i < n16; i += 16) mx = _mm512_max_ps(_mm512_loadu_ps(row + i), mx); /* row > mx ? row : mx */
  float lanes[16], m = -INFINITY;
  _mm512_storeu_ps(lanes, mx);
  for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
  for (int i = n16; i < n; i++) m = row[i] > m ? row[i] : m;
  __m512 vm = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
  for (int i = 0; i < n16; i += 16) {
    __m512 e = exp_nonpos16(_mm512_sub_ps(_mm512_loadu_ps(row + i), vm));
    _mm256_storeu_si256((__m256i *)(out + i), to_bf16(e));
    sum = _mm512_add_ps(sum, e);
  }
  float tot = 0.0f;
  for (int i = n16; i < n; i++) {
    float e = qlm_exp_nonpos(row[i] - m);
    out[i] = qlm_f32_to_bf16(e);
    tot += e;
  }
  _mm512_storeu_ps(lanes, sum);
  for (int l = 0; l < 16; l++) tot += lanes[l];
  for (int i = n; i < n_pad; i++) out[i] = 0;
  return tot;
}
