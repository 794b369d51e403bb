/* bnb4.h — bitsandbytes 4-bit storage types: NF4 and FP4 (QLoRA), blockwise absmax, block 64.
 *
 * Layout of one block of QLM_TYPE_NF4 / QLM_TYPE_FP4 (64 consecutive weights of a row, 36 bytes):
 *   [0..4)    float absmax       little-endian f32, the block's max |w| (bnb's `absmax`)
 *   [4..36)   uint8 codes[32]    byte j holds code u_j in its low nibble and u_{j+32} in its high
 *                                nibble (so a SIMD kernel gets weights 0..31 with one mask and
 *                                32..63 with one shift)
 *   w_i = absmax * table[u_i]    one f32 multiply, exactly bnb's dequantization
 * table is qlm_bnb4_nf4_code (sorted normal quantiles) or qlm_bnb4_fp4_code (indexed by the FP4
 * bit pattern s.e1e0.m, not sorted).  bnb itself packs two codes per byte the other way round
 * ((u[2i] << 4) | u[2i+1] over the flattened tensor); only the nibble order differs, the codes
 * and absmax are the same numbers.
 *
 * QLM_TYPE_NF4_DQ / QLM_TYPE_FP4_DQ (double quantization) are the 32 code bytes alone, same
 * nibble order.  They appear only in model files: the absmax of block b (blocks numbered
 * row-major over the whole tensor) is stored as an 8-bit code of bnb's dynamic map,
 *   absmax_b = dynamic_map[absmax_q[b]] * absmax2[b / 256] + offset
 * in three companion tensors (quant/bnb4.c), and qlm_bnb4_expand_dq() turns the pair back into
 * NF4/FP4 blocks when the model is loaded.  They have no dequantizer or dot product.
 *
 * Dot products: the activations stay f32 (vec_dot_type QLM_TYPE_F32).  Every version sums the
 * products w_i * x_i of the dequantized weights w_i = fl(absmax * table[u_i]) (bit-equal to the
 * dequantizer's output) in float.  The scalar reference adds them one by one into one float in
 * index order (weights 0..63 of block 0, then block 1, ...); the SIMD versions use FMA into 16
 * (AVX-512) or 8 (AVX2) lanes of 4 accumulators each, summed at the end, so they differ from the
 * reference only in rounding order (each is within the usual n-term bound gamma_n * sum|w_i x_i|
 * of the exact dot). */
#ifndef QLM_BNB4_H
#define QLM_BNB4_H

#include <stdint.h>

#include "core/error.h"
#include "kernels/types.h"

#define QLM_BNB4_BLOCK 64        /* weights per block */
#define QLM_BNB4_BLOCK_BYTES 36  /* f32 absmax + 32 code bytes */
#define QLM_BNB4_DQ_BLOCK_BYTES 32
#define QLM_BNB4_DQ_GROUP 256    /* absmax constants per second-level (absmax2) block */

/* bnb's code tables (get_4bit_type("nf4"/"fp4")), indexed by the 4-bit code. */
extern const float qlm_bnb4_nf4_code[16];
extern const float qlm_bnb4_fp4_code[16];
/* The table of NF4/NF4_DQ or FP4/FP4_DQ; NULL for other types. */
const float *qlm_bnb4_code(int type);
/* bnb's 8-bit dynamic map, create_dynamic_map(signed=True, max_exponent_bits=7): 256 sorted
 * values in [-0.99297, 1], built on first use (thread-safe). */
const float *qlm_bnb_dynamic_map(void);

/* Whether type is one of NF4, FP4 (dequantizable blocks) / NF4_DQ, FP4_DQ (codes only). */
int qlm_bnb4_is_blocks(int type);
int qlm_bnb4_is_dq(int type);

/* Turn a double-quantized tensor into NF4/FP4 blocks.
 *   dq_type    QLM_TYPE_NF4_DQ or QLM_TYPE_FP4_DQ; codes: rows * cols/64 blocks of 32 bytes
 *   absmax_q   n_absmax_q codes, one per 64-block (must be rows * cols / 64)
 *   absmax2    n_absmax2 floats, one per 256 codes (must be ceil(n_absmax_q / 256))
 *   offset     added to every absmax
 * On success *out is a malloc'd rows x cols tensor of *out_type (NF4/FP4).  Sizes that do not
 * match, cols not a multiple of 64, or non-finite constants are QLM_EFORMAT errors naming what
 * is wrong (the caller prefixes the file and tensor name). */
int qlm_bnb4_expand_dq(int dq_type, const void *codes, int64_t rows, int64_t cols, const uint8_t *absmax_q,
                       int64_t n_absmax_q, const float *absmax2, int64_t n_absmax2, float offset, void **out,
                       int *out_type, qlm_error *err);

/* Scalar reference dot product (the traits' vec_dot_t): w in NF4/FP4 blocks, a = n floats. */
float qlm_vec_dot_bnb4_ref(int type, const void *w, const void *a, int64_t n);
/* SIMD versions (bnb4_avx2.c, bnb4_avx512.c). */
float qlm_vec_dot_bnb4_avx2(int type, const void *w, const void *a, int64_t n);
float qlm_vec_dot_bnb4_avx512(int type, const void *w, const void *a, int64_t n);

/* Quantize n_blocks blocks of 64 floats x into NF4/FP4 blocks, 16 values at a time: the same bytes
 * as quant/bnb4.c's scalar block quantizer (qlm_bnb4_quantize_block) for every input.
 *   mid    the 15 midpoints of the table in sorted order; order: sorted position -> code (NULL for
 *          NF4, whose table is sorted; FP4's argsort order) */
void qlm_bnb4_quantize_blocks_avx512(const float mid[15], const uint8_t *order, const float *x, uint8_t *blocks,
                                     size_t n_blocks);

#endif
