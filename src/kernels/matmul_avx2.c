/* matmul_avx2.c — f32 GEMV/dot with AVX2 + FMA (compiled with -mavx2 -mfma; only called when
 * kernels/cpu.c found them).
 *
 * Decode is memory-bound: each weight is used once, so the goal is to stream W at full bandwidth.
 * Four rows are processed together so every x load is shared by four FMAs, and each row keeps two
 * accumulators (8 independent FMA chains hide the FMA latency). */
#include <immintrin.h>

#include "kernels/gemv.h"

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float qlm_dot_f32_avx2(const float *a, const float *b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

static void gemv4(const float *w0, int64_t ldw, const float *x, float *y, int64_t cols) {
  const float *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    __m256 xa = _mm256_loadu_ps(x + c), xb = _mm256_loadu_ps(x + c + 8);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), xa, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + c), xa, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + c), xa, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + c), xa, a3);
    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c + 8), xb, b0);
    b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + c + 8), xb, b1);
    b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + c + 8), xb, b2);
    b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + c + 8), xb, b3);
  }
  if (c + 8 <= cols) {
    __m256 xa = _mm256_loadu_ps(x + c);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + c), xa, a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + c), xa, a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + c), xa, a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + c), xa, a3);
    c += 8;
  }
  float s0 = hsum256(_mm256_add_ps(a0, b0)), s1 = hsum256(_mm256_add_ps(a1, b1));
  float s2 = hsum256(_mm256_add_ps(a2, b2)), s3 = hsum256(_mm256_add_ps(a3, b3));
  for (; c < cols; c++) {
    s0 += w0[c] * x[c];
    s1 += w1[c] * x[c];
    s2 += w2[c] * x[c];
    s3 += w3[c] * x[c];
  }
  y[0] = s0;
  y[1] = s1;
  y[2] = s2;
  y[3] = s3;
}

void qlm_gemv_f32_avx2(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) gemv4(W + r * ldw, ldw, x, y + r, cols);
  for (; r < rows; r++) y[r] = qlm_dot_f32_avx2(W + r * ldw, x, cols);
}

float qlm_dotd_f32_avx2(const float *a, const float *b, int64_t n) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
    s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), _mm256_cvtps_pd(_mm256_castps256_ps128(y)), s0);
    s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)), s1);
  }
  s0 = _mm256_add_pd(s0, s1);
  __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s0), _mm256_extractf128_pd(s0, 1));
  double s = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  for (; i < n; i++) s += (double)a[i] * b[i];
  return (float)s;
}
