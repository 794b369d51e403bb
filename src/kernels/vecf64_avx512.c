/* vecf64_avx512.c — vecf64.h with AVX-512F: explicit multiply then subtract (no FMA), the masked
 * tail included, so every element gets the scalar code's bits. */
#include <immintrin.h>

#include "kernels/vecf64.h"

void qlm_sub_scaled_f64_avx512(double *y, double a, const double *x, int64_t n) {
  __m512d va = _mm512_set1_pd(a);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm512_storeu_pd(y + j, _mm512_sub_pd(_mm512_loadu_pd(y + j), _mm512_mul_pd(va, _mm512_loadu_pd(x + j))));
  if (j < n) {
    __mmask8 m = (__mmask8)((1u << (n - j)) - 1u);
    __m512d p = _mm512_mul_pd(va, _mm512_maskz_loadu_pd(m, x + j));
    _mm512_mask_storeu_pd(y + j, m, _mm512_sub_pd(_mm512_maskz_loadu_pd(m, y + j), p));
  }
}
