/* softmax.h — a row of attention scores into bf16 attention weights, in one pass after the max:
 * the bf16 calibration forward's masked softmax (model/forward.c), whose weights·values product
 * reads bf16 weights only.
 *
 *   m = max_i row[i];  e_i = qlm_exp_nonpos(row[i] - m)  (kernels/vexp.h, no FMA);
 *   out[i] = bf16(e_i) for i < n (round to nearest even, core/fp16.h), 0 for n <= i < n_pad;
 *   returns Σ e_i, summed in 16 lanes (lane l takes i ≡ l mod 16 of the first n & ~15 values, in
 *   order), the rest added in order to 0, then the lanes 0..15 added in order.
 *
 * That is the arithmetic of the f32 softmax (forward.c's softmax_row, which writes e_i back in
 * place) followed by qlm_bf16_from_f32, so the bf16 weights and their sum are the same bits as
 * those two in sequence; the fused loop saves the store and the re-read of the f32 weights.  Every
 * level gives the reference's bits (tests/test_attn.c). */
#ifndef QLM_SOFTMAX_H
#define QLM_SOFTMAX_H

#include <math.h>
#include <stdint.h>

#include "kernels/bgemm.h" /* qlm_bf16 */

/* The largest of row[0..n): 16 lane maxima over the first n & ~15, reduced in lane order, then
 * the tail (comparisons, not fmaxf: no NaN rules, so a caller's loop vectorizes). */
static inline float qlm_row_max(const float *row, int n) {
  float mx[16];
  for (int l = 0; l < 16; l++) mx[l] = -INFINITY;
  int n16 = n & ~15;
  for (int i = 0; i < n16; i += 16)
    for (int l = 0; l < 16; l++) mx[l] = row[i + l] > mx[l] ? row[i + l] : mx[l];
  float m = -INFINITY;
  for (int l = 0; l < 16; l++) m = mx[l] > m ? mx[l] : m;
  for (int i = n16; i < n; i++) m = row[i] > m ? row[i] : m;
  return m;
}

float qlm_softmax_bf16_ref(const float *row, int n, qlm_bf16 *out, int n_pad);
float qlm_softmax_bf16_avx512(const float *row, int n, qlm_bf16 *out, int n_pad);
/* The best of the above for this CPU (and QLM_SIMD). */
float qlm_softmax_bf16(const float *row, int n, qlm_bf16 *out, int n_pad);

#endif
