/* quants.h — reference quantizers for llama.cpp's block types.
 *
 * Each function converts n floats (n a multiple of the type's block size: 32 for the legacy
 * types, 256 for k-quants) into n / block_size blocks laid out as documented in kernels/types.c.
 * They reproduce llama.cpp's quantize_row_<type>_ref (ggml-quants.c) byte for byte for every
 * finite input, which is also what llama-quantize writes when it runs without an imatrix: a
 * GGUF file quantized by qlm is bit-identical to one quantized by llama.cpp from the same floats.
 *
 * Byte-exactness depends on IEEE single-precision evaluation without fused multiply-add
 * contraction (the default for ISO C on x86-64 without -mfma; quants.c must not be built with
 * -ffast-math or -ffp-contract=fast).  Inputs should be finite: for NaN/inf the output is
 * deterministic but meaningless (llama.cpp's is undefined behaviour there).
 * The tests in tests/test_quants.c check them against llama.cpp's own code. */
#ifndef QLM_QUANTS_H
#define QLM_QUANTS_H

#include <stdint.h>

/* Quantize n floats (a whole number of blocks) into the storage type's blocks. */
typedef void (*qlm_quantize_fn)(const float *x, void *y, int64_t n);

void qlm_quantize_row_q4_0_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q4_1_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q5_0_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q5_1_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q8_0_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q4_K_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q5_K_ref(const float *x, void *y, int64_t n);
void qlm_quantize_row_q6_K_ref(const float *x, void *y, int64_t n);
/* Q8_K is an activation format (float d, no fp16); bsums are the sums of 16 quants. */
void qlm_quantize_row_q8_K_ref(const float *x, void *y, int64_t n);

/* The reference quantizer of a ggml type id, or NULL if qlm has none for it. */
qlm_quantize_fn qlm_quantizer_of(int type);

#endif
