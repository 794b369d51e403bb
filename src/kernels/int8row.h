/* int8row.h — LLM.int8() storage (QLM_FAMILY_INT8_ROW weights, QLM_FAMILY_Q8_ROW activations).
 *
 * bitsandbytes' vector-wise int8 (backends/default/ops.py, LLM.int8() paper arXiv 2208.07339):
 * one absmax per output row of W ("SCB") and one per token of the activations ("row_stats"),
 * both kept as the raw absmax (not absmax/127), exactly as bnb stores them:
 *   q = round_half_even(x * (127.0f / absmax))              (float32 arithmetic, as torch does)
 *   weight dequant:  w = ((float)q * SCB) * 7.874015718698502e-3f     (int8_vectorwise_dequant)
 *   int8 product:    y = ((float)C_i32 * (row_stats * SCB)) * 6.200124e-05f   (int8_mm_dequant)
 * where C_i32 is the exact int32 sum of q_w * q_a over the row.
 *
 * A type's block is a whole row of g = cols weights (ids qlm_type_make(family, 8, g), g 1..65535):
 *   [0..4)     f32 absmax (little-endian)  SCB of the weight row / row_stats of the token
 *   [4..4+g)   int8 q[g]
 * so type_size = 4 + g, 8 + 32/g bits per weight.  Quantizers produce |q| <= 127; the weight
 * dot products stay exact for -128 read from a hostile file, but the activation codes must be
 * within +-127 (only this file's quantizers write them).
 *
 * Outlier decomposition (bnb int8_vectorwise_quant with threshold > 0): an activation element
 * with |x| >= threshold is an outlier and its column (input feature) an outlier column.  bnb
 * zeroes the outlier ELEMENTS, then takes each token's absmax and rounds (so the other, smaller
 * values of an outlier column still count in that token's absmax), then zeroes the int8 codes of
 * the whole outlier columns; X[:, outlier cols] is multiplied in float with the dequantized
 * weight columns and added (kernels/matmul.c).  qlm_q8_row_quantize does the per-token part. */
#ifndef QLM_INT8ROW_H
#define QLM_INT8ROW_H

#include <stdint.h>

#include "kernels/types.h"

#define QLM_INT8ROW_HEADER 4
/* bnb's constants: 1/127 and 1/(127*127) as float32. */
#define QLM_INT8ROW_DEQ 7.874015718698502e-3f
#define QLM_INT8ROW_MM_DEQ 6.200124e-05f

/* Weight / activation type of rows of `cols` values, or -1 if cols is not in 1..65535. */
int qlm_int8row_type(int64_t cols);
int qlm_q8row_type(int64_t cols);

/* Quantize one row of n floats into a block (f32 absmax + int8 q[n]), as bnb does for weights
 * and (with threshold 0) for activations: absmax = max|x|, q = rint(x * (127.0f / absmax)); an
 * all-zero (or non-finite-absmax) row gets absmax 0 and q = 0. */
void qlm_int8row_quantize_row(const float *x, void *block, int64_t n);
/* One activation row with outlier elements held back: elements with |x| >= threshold
 * (threshold > 0) are left out of the absmax and get q = 0; with threshold <= 0 this is
 * qlm_int8row_quantize_row.  (The caller zeroes the codes of whole outlier columns.) */
void qlm_q8_row_quantize(const float *x, void *block, int64_t n, float threshold);

/* Scalar reference: sum over the blocks of ((float)C_i32 * (sa * sw)) * 6.200124e-05f. */
float qlm_vec_dot_int8row_ref(int type, const void *w, const void *a, int64_t n);
/* SIMD versions (kernels/int8row_avx2.c, int8row_avx512.c): the same int32 sums, so results
 * are bit-identical to the reference. */
float qlm_vec_dot_int8row_avx2(int type, const void *w, const void *a, int64_t n);
float qlm_vec_dot_int8row_avx512(int type, const void *w, const void *a, int64_t n);
float qlm_vec_dot_int8row_avx512vnni(int type, const void *w, const void *a, int64_t n);
/* The int32 sums alone (n int8 codes each), for tests. */
int32_t qlm_int8_dot_i32_ref(const int8_t *w, const int8_t *a, int64_t n);

#endif
