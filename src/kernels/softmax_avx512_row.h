/* softmax_avx512_row.h — kernels/softmax.h's row on 16 lanes, for the two AVX-512 files that
 * include it: softmax_avx512.c (AVX-512F: the bf16 rounding in integer operations) and
 * softmax_avx512bf16.c (VCVTNEPS2BF16: one instruction).  The reference's operations lane for
 * lane.  Include after <immintrin.h>, in a file compiled for AVX-512F and FMA. */
#ifndef QLM_SOFTMAX_AVX512_ROW_H
#define QLM_SOFTMAX_AVX512_ROW_H

#include <math.h>

#include "kernels/softmax.h"

/* qlm_softmax_exp on 16 lanes. */
static inline __attribute__((always_inline)) __m512 qlm_softmax_exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x); /* (c > x) ? c : x — a NaN x stays NaN, as x < c ? c : x */
  __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(QLM_SMX_LOG2E), _mm512_set1_ps(QLM_SMX_SHIFTER));
  __m512 n = _mm512_sub_ps(t, _mm512_set1_ps(QLM_SMX_SHIFTER));
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-QLM_SMX_LN2_HI), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-QLM_SMX_LN2_LO), r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(QLM_SMX_P0), r, _mm512_set1_ps(QLM_SMX_P1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QLM_SMX_P2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QLM_SMX_P3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QLM_SMX_P4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QLM_SMX_P5));
  __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(y, n); /* y · 2^n rounded once; a NaN y (src1) comes back quiet as it is */
}

/* The row, each vector of 16 weights rounded to bf16 by to_bf16 (inlined: a constant). */
static inline __attribute__((always_inline)) float qlm_softmax_row16(const float *row, int n, qlm_bf16 *out, int n_pad,
                                                                     __m256i (*to_bf16)(__m512)) {
  int n16 = n & ~15;
  __m512 mx = _mm512_set1_ps(-INFINITY);
  for (int i = 0; i < n16; i += 16) mx = _mm512_max_ps(_mm512_loadu_ps(row + i), mx); /* row > mx ? row : mx */
  float lanes[16], m = -INFINITY;
  _mm512_storeu_ps(lanes, mx);
  for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
  for (int i = n16; i < n; i++) m = row[i] > m ? row[i] : m;
  __m512 vm = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
  for (int i = 0; i < n16; i += 16) {
    __m512 e = qlm_softmax_exp16(_mm512_sub_ps(_mm512_loadu_ps(row + i), vm));
    _mm256_storeu_si256((__m256i *)(out + i), to_bf16(e));
    sum = _mm512_add_ps(sum, e);
  }
  float tot = 0.0f;
  for (int i = n16; i < n; i++) {
    float e = qlm_softmax_exp(row[i] - m);
    out[i] = qlm_f32_to_bf16(e);
    tot += e;
  }
  _mm512_storeu_ps(lanes, sum);
  for (int l = 0; l < 16; l++) tot += lanes[l];
  for (int i = n; i < n_pad; i++) out[i] = 0;
  return tot;
}

#endif
