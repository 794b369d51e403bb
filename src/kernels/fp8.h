/* fp8.h — float8 e4m3fn weights (QLM_FAMILY_FP8, kernels/types.h): optimum-quanto's qfloat8.
 *
 * e4m3fn (torch.float8_e4m3fn, OCP FP8): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
 * infinities; 0x7F / 0xFF are NaN; the largest finite value is 448 (0x7E); subnormals are
 * m * 2^-9.  Conversion from float (qlm_f32_to_e4m3fn) is torch's: round to nearest, ties to even,
 * and — as torch 2.x's CPU cast does — values beyond the largest finite one, infinities included,
 * saturate to +-448; NaN stays NaN (0x7F, with the sign).
 *
 * A type's block is a whole row of g weights (ids qlm_type_make(QLM_FAMILY_FP8, 8, g), g 1..65535):
 *   [0..4)     f32 scale (little-endian)       quanto's per-output-channel scale max|w| / 448
 *   [4..4+g)   e4m3fn codes c_i
 *   w_i = scale * e4m3(c_i)                    (one float product, as quanto's dequantize in f32)
 * so type_size = 4 + g: 8 + 32/g bits per weight.
 *
 * Dot products take f32 activations (vec_dot_type QLM_TYPE_F32; quanto's weights-only qfloat8).
 * Per block the scalar reference sums e4m3(c_i) * x_i in index order into one float and then
 * multiplies by the scale; the SIMD versions form the same products (exact conversion of the codes:
 * the 7 magnitude bits shifted into a float's exponent and mantissa and scaled by 2^120, NaN codes
 * made NaN) and sum them in 8 or 16 lanes, so they differ from the reference only in summation
 * order: each is within gamma_n * sum|e4m3(c_i) x_i| * scale (plus one rounding of the product by
 * the scale) of the exact dot. */
#ifndef QLM_FP8_H
#define QLM_FP8_H

#include <stdint.h>

#include "kernels/types.h"

#define QLM_FP8_HEADER 4
#define QLM_FP8_MAX 448.0f

/* The FP8 type of rows of `cols` weights, or -1 if cols is not in 1..65535. */
int qlm_fp8_type(int64_t cols);

/* float -> e4m3fn byte (torch's .to(torch.float8_e4m3fn) on the CPU, see above). */
uint8_t qlm_f32_to_e4m3fn(float x);
/* e4m3fn byte -> float (exact; NaN for 0x7F / 0xFF). */
float qlm_e4m3fn_to_f32(uint8_t c);
/* The 256 values of the codes (built once, thread-safe). */
const float *qlm_e4m3fn_table(void);

/* Scalar reference dot product (see above), n a multiple of the block (row) size. */
float qlm_vec_dot_fp8_ref(int type, const void *w, const void *a, int64_t n);
/* SIMD versions (kernels/fp8_avx2.c, fp8_avx512.c). */
float qlm_vec_dot_fp8_avx2(int type, const void *w, const void *a, int64_t n);
float qlm_vec_dot_fp8_avx512(int type, const void *w, const void *a, int64_t n);

#endif
