/* attn_avx512.c — attention products with AVX-512 (see attn.h for what is computed).
 *
 * scores: the group's queries are converted to double once; each key row is converted once per
 * 8 elements and multiplied into up to 4 query accumulators (8 doubles each), reduced at the end.
 * pv: up to 4 query heads x 32 output floats stay in registers while the value rows stream past. */
#include <immintrin.h>
#include <string.h>

#include "kernels/attn.h"


static inline __mmask8 mask8(int n) { return n >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << n) - 1u); }

/* Sums of the 8 lanes of each of a0..a3 -> lanes 0..3 (each an order-independent double sum of
 * exact products, so the lane order does not matter). */
static inline __m256d reduce4(__m512d a0, __m512d a1, __m512d a2, __m512d a3) {
  __m512d s01 = _mm512_add_pd(_mm512_unpacklo_pd(a0, a1), _mm512_unpackhi_pd(a0, a1)); /* a0,a1 pairs */
  __m512d s23 = _mm512_add_pd(_mm512_unpacklo_pd(a2, a3), _mm512_unpackhi_pd(a2, a3));
  /* 128-bit lanes of s01: (a0 a1) x4; of s23: (a2 a3) x4 -> add across the 4 lanes */
  __m512d x = _mm512_add_pd(_mm512_shuffle_f64x2(s01, s23, 0x44), _mm512_shuffle_f64x2(s01, s23, 0xEE));
  /* x lanes: [s01 L0+L2, s01 L1+L3, s23 L0+L2, s23 L1+L3] */
  __m512d y = _mm512_add_pd(x, _mm512_shuffle_f64x2(x, x, 0xB1)); /* L0+L1 and L2+L3 in both */
  return _mm256_set_m128d(_mm512_extractf64x2_pd(y, 2), _mm512_castpd512_pd128(y));
}

/* G query heads (a compile-time constant at each call, so the accumulators stay in registers)
 * against nk keys, 4 keys at a time; qd holds the queries in double, 512 per head. */
static inline __attribute__((always_inline)) void scores_g(const double (*qd)[512], const int G, int hd,
                                                           const float *K, size_t ldk, int nk, float scale, float *sc,
                                                           size_t ldsc) {
  int t = 0;
  for (; t + 4 <= nk; t += 4) {
    const float *k = K + (size_t)t * ldk;
    __m512d acc[4][4];
    for (int j = 0; j < G; j++)
      for (int u = 0; u < 4; u++) acc[j][u] = _mm512_setzero_pd();
    for (int i = 0; i < hd; i += 8) {
      __mmask8 m = mask8(hd - i);
      __m512d kv[4];
      for (int u = 0; u < 4; u++) kv[u] = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, k + (size_t)u * ldk + i));
      for (int j = 0; j < G; j++) {
        __m512d qv = _mm512_maskz_loadu_pd(m, &qd[j][i]);
        for (int u = 0; u < 4; u++) acc[j][u] = _mm512_fmadd_pd(qv, kv[u], acc[j][u]);
      }
    }
    for (int j = 0; j < G; j++) {
      __m128 f = _mm256_cvtpd_ps(reduce4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
      _mm_storeu_ps(sc + (size_t)j * ldsc + t, _mm_mul_ps(f, _mm_set1_ps(scale)));
    }
  }
  for (; t < nk; t++) {
    const float *k = K + (size_t)t * ldk;
    __m512d acc[4];
    for (int j = 0; j < G; j++) acc[j] = _mm512_setzero_pd();
    for (int i = 0; i < hd; i += 8) {
      __mmask8 m = mask8(hd - i);
      __m512d kv = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, k + i));
      for (int j = 0; j < G; j++) acc[j] = _mm512_fmadd_pd(_mm512_maskz_loadu_pd(m, &qd[j][i]), kv, acc[j]);
    }
    for (int j = 0; j < G; j++) sc[(size_t)j * ldsc + t] = (float)_mm512_reduce_add_pd(acc[j]) * scale;
  }
}

void qlm_attn_scores_avx512(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale, float *sc,
                            size_t ldsc) {
  if (hd > 512) { /* far beyond any model; keeps the stack copy of the queries bounded */
    qlm_attn_scores_scalar(q, nq, hd, K, ldk, nk, scale, sc, ldsc);
    return;
  }
  double qd[4][512];
  for (int j0 = 0; j0 < nq; j0 += 4) {
    int g = nq - j0 < 4 ? nq - j0 : 4;
    for (int j = 0; j < g; j++)
      for (int i = 0; i < hd; i++) qd[j][i] = q[(size_t)(j0 + j) * hd + i];
    float *s = sc + (size_t)j0 * ldsc;
    switch (g) {
    case 1: scores_g((const double (*)[512])qd, 1, hd, K, ldk, nk, scale, s, ldsc); break;
    case 2: scores_g((const double (*)[512])qd, 2, hd, K, ldk, nk, scale, s, ldsc); break;
    case 3: scores_g((const double (*)[512])qd, 3, hd, K, ldk, nk, scale, s, ldsc); break;
    default: scores_g((const double (*)[512])qd, 4, hd, K, ldk, nk, scale, s, ldsc); break;
    }
  }
}

static inline __mmask16 mask16(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

static inline __attribute__((always_inline)) void pv_g(const float *p, const float *inv, const int G, size_t ldp,
                                                       const float *V, size_t ldv, int nk, int hd, float *o) {
  for (int i = 0; i < hd; i += 32) {
    __mmask16 m0 = mask16(hd - i), m1 = mask16(hd - i - 16 > 0 ? hd - i - 16 : 0);
    __m512 a[4][2];
    for (int j = 0; j < G; j++) a[j][0] = a[j][1] = _mm512_setzero_ps();
    for (int t = 0; t < nk; t++) {
      const float *v = V + (size_t)t * ldv + i;
      __m512 v0 = _mm512_maskz_loadu_ps(m0, v), v1 = _mm512_maskz_loadu_ps(m1, v + 16);
      for (int j = 0; j < G; j++) {
        __m512 b = _mm512_set1_ps(p[(size_t)j * ldp + t] * inv[j]);
        a[j][0] = _mm512_add_ps(a[j][0], _mm512_mul_ps(b, v0));
        a[j][1] = _mm512_add_ps(a[j][1], _mm512_mul_ps(b, v1));
      }
    }
    for (int j = 0; j < G; j++) {
      float *oj = o + (size_t)j * hd + i;
      _mm512_mask_storeu_ps(oj, m0, a[j][0]);
      _mm512_mask_storeu_ps(oj + 16, m1, a[j][1]);
    }
  }
}

void qlm_attn_pv_avx512(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv, int nk,
                        int hd, float *o) {
  for (int j0 = 0; j0 < nq; j0 += 4) {
    int g = nq - j0 < 4 ? nq - j0 : 4;
    const float *pj = p + (size_t)j0 * ldp;
    float *oj = o + (size_t)j0 * hd;
    switch (g) {
    case 1: pv_g(pj, inv + j0, 1, ldp, V, ldv, nk, hd, oj); break;
    case 2: pv_g(pj, inv + j0, 2, ldp, V, ldv, nk, hd, oj); break;
    case 3: pv_g(pj, inv + j0, 3, ldp, V, ldv, nk, hd, oj); break;
    default: pv_g(pj, inv + j0, 4, ldp, V, ldv, nk, hd, oj); break;
    }
  }
}
