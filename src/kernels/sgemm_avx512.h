/* sgemm_avx512.h — sgemm.h's lane-sum tree on a zmm register, for the files compiled with
 * -mavx512* only (sgemm_avx512.c, and matmul_avx512.c's decode GEMV, which must give the same bits). */
#ifndef QLM_SGEMM_AVX512_H
#define QLM_SGEMM_AVX512_H

#include <immintrin.h>

/* l + (l+8), then + 4, + 2, + 1, as qlm_sgemm_lanes_sum (AVX-512F only: no DQ extract). */
static inline float qlm_lanes_sum_avx512(__m512 v) {
  __m256 lo = _mm512_castps512_ps256(v), hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  __m256 h8 = _mm256_add_ps(lo, hi);
  __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
  __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
  return _mm_cvtss_f32(_mm_add_ss(h2, _mm_movehdup_ps(h2)));
}

#endif
