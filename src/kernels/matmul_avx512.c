/* matmul_avx512.c — f32 GEMV/dot with AVX-512F (compiled with -mavx512*; only called when
 * kernels/cpu.c found AVX-512 usable).  Same scheme as the AVX2 kernel with 16-wide vectors;
 * the column tail uses masked loads instead of a scalar loop. */
#include <immintrin.h>

#include "kernels/gemv.h"
#include "kernels/sgemm.h"
#include "kernels/sgemm_avx512.h"

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

/* One row with kernels/sgemm.h's arithmetic: one 16-lane FMA chain in order of k (the last step
 * masked), lanes summed by its tree.  These are the prefill kernel's bits, so a token decoded on
 * its own gets the logits it gets inside a prompt.  One chain is bound by the FMA latency, 16
 * floats per 4 cycles (~57 GB/s at 3.6 GHz), still above what one core streams from DRAM. */
static inline float gemv_row(const float *w, const float *x, int64_t cols) {
  __m512 a = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= cols; c += 16) a = _mm512_fmadd_ps(_mm512_loadu_ps(w + c), _mm512_loadu_ps(x + c), a);
  if (c < cols) {
    __mmask16 m = tail_mask(cols - c);
    a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + c), _mm512_maskz_loadu_ps(m, x + c), a);
  }
  return qlm_lanes_sum_avx512(a);
}

/* Rows one after the other, in memory order: a single stream per thread is what the hardware
 * prefetcher follows best on short rows.  Four rows interleaved (sharing each x load) measured
 * 48 t/s decoding SmolLM2-135M in f32 on 2 Zen 4 threads, one row at a time 60-76 t/s
 * (kernels/q4_0_gemv_avx512.c found the same for Q4_0).  Long rows (LLaMA-7B's 4096 and 11008)
 * are the other way round: the prefill kernel's 5-row tiles at T = 1 decoded the 7B-shaped model
 * at 7.3-11.0 t/s, the same as llama.cpp in alternating runs, one row at a time 6.4-7.3 t/s.
 * Both give the same bits (sgemm.h's arithmetic), so the choice is only about speed. */
#define GEMV_TILE_MIN_COLS 2048
void qlm_gemv_f32_avx512(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols) {
  if (cols >= GEMV_TILE_MIN_COLS) {
    qlm_sgemm_xwt_avx512(x, cols, W, ldw, y, rows, 1, rows, cols);
    return;
  }
  for (int64_t r = 0; r < rows; r++) y[r] = gemv_row(W + r * ldw, x, cols);
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
