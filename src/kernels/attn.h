/* attn.h — the two products of attention for a group of query heads that share one key/value
 * head (GQA; a group of 1 for plain multi-head attention), at every SIMD level.
 *
 *   scores: sc[j*ldsc + t] = (float)(sum_i (double)q_j[i] * K_t[i]) * scale
 *   pv:     o_j[i] = sum_t (p_j[t] * inv_j) * V_t[i], t in increasing order, each product rounded
 *           to float before it is added (no FMA); inv_j = 1 / (softmax denominator) of head j
 * for query heads j < nq (q_j = q + j*hd), keys/values t < nk (K_t = K + t*ldk, V_t = V + t*ldv).
 *
 * Scores are accumulated in double: every product of two floats is exact in double, so the
 * rounded sum is (almost always) independent of the order of the i — a model whose q/k rows are
 * permuted per head (NEOX vs interleaved RoPE) gives identical scores, and every SIMD level gives
 * the scalar reference's scores.  pv keeps the reference's order over t and vectorizes over i, so
 * it equals the scalar loop bit for bit at every level.  Sharing each K/V row among the nq heads
 * of a group converts and loads it once instead of nq times. */
#ifndef QLM_ATTN_H
#define QLM_ATTN_H

#include <stddef.h>

#include "kernels/cpu.h"

typedef void (*qlm_attn_scores_fn)(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale,
                                   float *sc, size_t ldsc);
typedef void (*qlm_attn_pv_fn)(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv,
                               int nk, int hd, float *o);

void qlm_attn_scores_scalar(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale, float *sc,
                            size_t ldsc);
void qlm_attn_scores_avx2(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale, float *sc,
                          size_t ldsc);
void qlm_attn_scores_avx512(const float *q, int nq, int hd, const float *K, size_t ldk, int nk, float scale, float *sc,
                            size_t ldsc);
/* o: nq rows of hd floats, one after another (o_j = o + j*hd). */
void qlm_attn_pv_scalar(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv,
                        int nk, int hd, float *o);
void qlm_attn_pv_avx2(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv,
                      int nk, int hd, float *o);
void qlm_attn_pv_avx512(const float *p, const float *inv, int nq, size_t ldp, const float *V, size_t ldv,
                        int nk, int hd, float *o);

/* The kernels of a level (clamped to this CPU). */
qlm_attn_scores_fn qlm_attn_scores_for(qlm_simd_level level);
qlm_attn_pv_fn qlm_attn_pv_for(qlm_simd_level level);

#endif
