/* half_round.h — round a row of floats to the nearest IEEE half or bfloat16, in place.
 *
 * optimum-quanto computes its scales and codes in the weight's dtype (f16 or bf16): every +, -,
 * / of two halves is a float result rounded back to a half.  kernels/quanto_rows.c reproduces that by
 * rounding each intermediate row to the dtype.  Done one value at a time (core/fp16.h) this was
 * most of quanto's quantization time; these do a row at a time.
 *
 * Result: x[i] = (float)(half)x[i] (or bfloat16), round to nearest, ties to even; overflow goes to
 * infinity (half) as the C conversion does; subnormal halves are kept, not flushed.  Bit for bit
 * the same as qlm_f16_to_f32(qlm_f32_to_f16(x)) and qlm_bf16_to_f32(qlm_f32_to_bf16(x)) for every
 * non-NaN float (the AVX2 version uses the F16C conversions, which are exact IEEE roundings);
 * a NaN stays a NaN (its payload may differ). */
#ifndef QLM_HALF_ROUND_H
#define QLM_HALF_ROUND_H

#include <stdint.h>

#include "kernels/cpu.h"

typedef void (*qlm_round_row_fn)(float *x, int64_t n);

void qlm_round_f16_row(float *x, int64_t n);  /* at qlm_cpu_simd_level() */
void qlm_round_bf16_row(float *x, int64_t n);

/* The implementation of one SIMD level (tests compare the levels). */
qlm_round_row_fn qlm_round_f16_row_for(qlm_simd_level level);
qlm_round_row_fn qlm_round_bf16_row_for(qlm_simd_level level);

void qlm_round_f16_row_avx2(float *x, int64_t n);
void qlm_round_bf16_row_avx2(float *x, int64_t n);

#endif
