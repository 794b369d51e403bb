/* bnb4.h — the bitsandbytes NF4/FP4 method's building blocks (quant/bnb4.c), for the tests and
 * for error reporting.  The methods themselves are qlm_method_nf4 / qlm_method_fp4 (method.h). */
#ifndef QLM_QUANT_BNB4_H
#define QLM_QUANT_BNB4_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/cpu.h"
#include "quant/method.h"

/* Quantize 64 floats into one NF4/FP4 block (kernels/bnb4.h) as bnb's quantize_4bit does. */
void qlm_bnb4_quantize_block(int type, const float *x, void *block);
/* The same for n_blocks consecutive blocks with the kernel of one SIMD level (the method uses
 * qlm_cpu_simd_level(); every level gives the same bytes). */
void qlm_bnb4_quantize_blocks_at(qlm_simd_level level, int type, const float *x, uint8_t *blocks, size_t n_blocks);
/* bnb's quantize_blockwise with the dynamic map (default-backend algorithm): n values in blocks
 * of `blocksize` (the last may be partial) -> codes[n], absmax[ceil(n / blocksize)]. */
void qlm_bnb_quantize_blockwise8(const float *x, int64_t n, int blocksize, uint8_t *codes, float *absmax);
/* mean(absmax) as the double-quantization offset: the exact mean rounded to float. */
float qlm_bnb4_absmax_mean(const float *absmax, int64_t n);
/* Dequantize a tensor made by the nf4/fp4 methods (with or without double quantization) into
 * W[rows x cols]; other tensors or inconsistent companions are errors. */
int qlm_bnb4_dequantize_qtensor(const qlm_qtensor *q, float *W, qlm_error *err);

#endif
