/* matmul_avx512.c — f32 GEMV/dot with AVX-512F (compiled with -mavx512*; only called when
 * kernels/cpu.c found AVX-512 usable).  Same scheme as the AVX2 kernel with 16-wide vectors;
 * the column tail uses masked loads instead of a scalar loop. */
#include <immintrin.h>

#include "kernels/gemv.h"

static inline __mmask16 tail_mask(int64_t n) { return (__mmask16)((1u << n) - 1u); } /* n in [0, 16) */

float qlm_dot_f32_avx512(const float *a, const float *b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void gemv4(const float *w0, int64_t ldw, const float *x, float *y, int64_t cols) {
  const float *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    __m512 xa = _mm512_loadu_ps(x + c), xb = _mm512_loadu_ps(x + c + 16);
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + c), xa, a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + c), xa, a1);
    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + c), xa, a2);
    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + c), xa, a3);
    b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + c + 16), xb, b0);
    b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + c + 16), xb, b1);
    b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + c + 16), xb, b2);
    b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + c + 16), xb, b3);
  }
  for (; c < cols; c += 16) { /* 16-wide steps, the last one masked */
    __mmask16 m = cols - c >= 16 ? (__mmask16)0xffff : tail_mask(cols - c);
    __m512 xa = _mm512_maskz_loadu_ps(m, x + c);
    a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + c), xa, a0);
    a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + c), xa, a1);
    a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + c), xa, a2);
    a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + c), xa, a3);
  }
  y[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
  y[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
  y[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
  y[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
}

void qlm_gemv_f32_avx512(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) gemv4(W + r * ldw, ldw, x, y + r, cols);
  for (; r < rows; r++) y[r] = qlm_dot_f32_avx512(W + r * ldw, x, cols);
}

float qlm_dotd_f32_avx512(const float *a, const float *b, int64_t n) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(a + i), y = _mm512_loadu_ps(b + i);
    s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)), _mm512_cvtps_pd(_mm512_castps512_ps256(y)), s0);
    s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(y, 1)),
                         s1);
  }
  if (i < n) { /* 1..15 left: up to two masked halves of 8 */
    for (int half = 0; half < 2 && i < n; half++, i += 8) {
      __mmask8 m = n - i >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - i)) - 1u);
      s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, a + i)), _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, b + i)),
                           s1);
    }
  }
  return (float)_mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}
