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
 * before this kernel — the fused loop saves the store and the re-read of the f32 weights.  Every
 * level gives the reference's bits (tests/test_attn.c). */
#ifndef QLM_SOFTMAX_H
#define QLM_SOFTMAX_H

#include <stdint.h>

#include "kernels/bgemm.h" /* qlm_bf16 */

float qlm_softmax_bf16_ref(const float *row, int n, qlm_bf16 *out, int n_pad);
float qlm_softmax_bf16_avx512(const float *row, int n, qlm_bf16 *out, int n_pad);
/* The best of the above for this CPU (and QLM_SIMD). */
float qlm_softmax_bf16(const float *row, int n, qlm_bf16 *out, int n_pad);

#endif
