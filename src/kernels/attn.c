/* attn.c — scalar reference attention products and the choice of SIMD versions (attn.h). */
#include "kernels/attn.h"

#include <string.h>

void qlm_attn_scores_scalar(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale, float *sc,
                            size_t ldsc) {
  for (int j = 0; j < nq; j++) {
    const float *qj = q + (size_t)j * hd;
    for (int t = 0; t < nk; t++) {
      const float *k = K + (size_t)t * ldk;
      double s = 0.0;
      for (int i = 0; i < hd; i++) s += (double)qj[i] * k[i];
      sc[(size_t)j * ldsc + t] = (float)s * scale;
    }
  }
}

void qlm_attn_pv_scalar(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv, int nk,
                        int hd, float *o) {
  for (int j = 0; j < nq; j++) {
    float *oj = o + (size_t)j * hd;
    const float *pj = p + (size_t)j * ldp;
    memset(oj, 0, (size_t)hd * sizeof *oj);
    for (int t = 0; t < nk; t++) {
      const float *v = V + (size_t)t * ldv;
      for (int i = 0; i < hd; i++) {
        float prod = (pj[t] * inv[j]) * v[i]; /* rounded, then added: the vector versions do the same */
        oj[i] += prod;
      }
    }
  }
}

static qlm_simd_level clamp(qlm_simd_level level) {
  qlm_simd_level hw = qlm_cpu_detect();
  return level > hw ? hw : level;
}

qlm_attn_scores_fn qlm_attn_scores_for(qlm_simd_level level) {
  switch (clamp(level)) {
  case QLM_SIMD_AVX512: return qlm_attn_scores_avx512;
  case QLM_SIMD_AVX2: return qlm_attn_scores_avx2;
  default: return qlm_attn_scores_scalar;
  }
}

qlm_attn_pv_fn qlm_attn_pv_for(qlm_simd_level level) {
  switch (clamp(level)) {
  case QLM_SIMD_AVX512: return qlm_attn_pv_avx512;
  case QLM_SIMD_AVX2: return qlm_attn_pv_avx2;
  default: return qlm_attn_pv_scalar;
  }
}
