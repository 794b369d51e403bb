/* attn_avx2.c — attention products with AVX2 + FMA (see attn.h for what is computed).
 * As the AVX-512 version with 4 doubles / 8 floats per register; tails go through the scalar
 * loop on the same terms (the double sum is order-independent in practice, pv is per element). */
#include <immintrin.h>
#include <string.h>

#include "kernels/attn.h"

#define QG 8

void qlm_attn_scores_avx2(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale, float *sc,
                          size_t ldsc) {
  if (hd > 512) {
    qlm_attn_scores_scalar(q, nq, hd, K, ldk, nk, scale, sc, ldsc);
    return;
  }
  double qd[QG][512];
  int hd4 = hd & ~3;
  for (int j0 = 0; j0 < nq; j0 += QG) {
    int g = nq - j0 < QG ? nq - j0 : QG;
    for (int j = 0; j < g; j++)
      for (int i = 0; i < hd; i++) qd[j][i] = q[(size_t)(j0 + j) * hd + i];
    for (int t = 0; t < nk; t++) {
      const float *k = K + (size_t)t * ldk;
      __m256d acc[QG];
      for (int j = 0; j < QG; j++) acc[j] = _mm256_setzero_pd();
      for (int i = 0; i < hd4; i += 4) {
        __m256d kv = _mm256_cvtps_pd(_mm_loadu_ps(k + i));
        for (int j = 0; j < g; j++) acc[j] = _mm256_fmadd_pd(_mm256_loadu_pd(&qd[j][i]), kv, acc[j]);
      }
      for (int j = 0; j < g; j++) {
        double d[4];
        _mm256_storeu_pd(d, acc[j]);
        double s = (d[0] + d[1]) + (d[2] + d[3]);
        for (int i = hd4; i < hd; i++) s += qd[j][i] * k[i];
        sc[(size_t)(j0 + j) * ldsc + t] = (float)s * scale;
      }
    }
  }
}

void qlm_attn_pv_avx2(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv, int nk, int hd,
                      float *o) {
  int hd8 = hd & ~7;
  for (int j0 = 0; j0 < nq; j0 += 4) {
    int g = nq - j0 < 4 ? nq - j0 : 4;
    for (int i = 0; i < hd8; i += 16) {
      int two = i + 16 <= hd8;
      __m256 a[4][2];
      for (int j = 0; j < 4; j++) a[j][0] = a[j][1] = _mm256_setzero_ps();
      for (int t = 0; t < nk; t++) {
        const float *v = V + (size_t)t * ldv + i;
        __m256 v0 = _mm256_loadu_ps(v), v1 = two ? _mm256_loadu_ps(v + 8) : _mm256_setzero_ps();
        for (int j = 0; j < g; j++) {
          __m256 b = _mm256_set1_ps(p[(size_t)(j0 + j) * ldp + t] * inv[j0 + j]);
          a[j][0] = _mm256_add_ps(a[j][0], _mm256_mul_ps(b, v0));
          a[j][1] = _mm256_add_ps(a[j][1], _mm256_mul_ps(b, v1));
        }
      }
      for (int j = 0; j < g; j++) {
        float *oj = o + (size_t)(j0 + j) * hd + i;
        _mm256_storeu_ps(oj, a[j][0]);
        if (two) _mm256_storeu_ps(oj + 8, a[j][1]);
      }
      if (!two) i -= 8; /* the loop's += 16 then lands on hd8 */
    }
    for (int j = 0; j < g; j++) { /* tail elements: the scalar loop */
      float *oj = o + (size_t)(j0 + j) * hd;
      const float *pj = p + (size_t)(j0 + j) * ldp;
      for (int i = hd8; i < hd; i++) {
        float s = 0.0f;
        for (int t = 0; t < nk; t++) {
          float prod = (pj[t] * inv[j0 + j]) * V[(size_t)t * ldv + i];
          s += prod;
        }
        oj[i] = s;
      }
    }
  }
}
