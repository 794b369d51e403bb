/* rtn.h — storage of the round-to-nearest types (QLM_FAMILY_RTN_SYM / _ASYM, kernels/types.h).
 *
 * A type is (symmetric or zero-point, bits b in 2..8, group g in 1..65535); one block holds one
 * group of g consecutive weights of a row:
 *   [0..2)           half d                       the group's scale
 *   [2..4)  (asym)   int16 z                      the zero point (any integer)
 *   [h..h+P)         codes, P = ceil(g * b / 8) bytes, unsigned b-bit codes u_i:
 *     b == 8:                 byte i = u_i
 *     b == 4 and 32 | g:      per 32 weights (16 bytes): byte j = u_j | u_{j+16} << 4  (ggml's order,
 *                             so SIMD kernels unpack a 32-chunk with one shift and mask)
 *     otherwise:              a little-endian bit stream: u_i in bits [i*b, i*b + b)
 *   symmetric:  w_i = d * (u_i - 2^(b-1)),  u_i in 1..2^b-1   (q = u - 2^(b-1) in +-(2^(b-1)-1))
 *   zero-point: w_i = d * (u_i - z),        u_i in 0..2^b-1
 * Per-channel quantization is a group of the row length; per-tensor quantization is the same
 * layout with one d (and z) repeated in every row's header (16-32 bits per row).
 *
 * Dot products.  8 bits with 32 | g (and 2, 3, 5, 6, 7 bits with 32 | g): the activations are
 * quantized to Q8_S (half d, exact int16 sum of the quants, int8 q[32]) and each 32-chunk is an
 * exact integer sum, with c = 2^(b-1) or z:
 *   sum_i w_i x_i ~ d * sum_chunks d_x,k * (sum u_i q_i - c * sum q_i)
 * 4 bits (any g) and every other g: the activations stay f32.  The scalar reference sums
 * (u_i - c) x_i per group and scales by d; the 4-bit SIMD kernels (16 | g: nibble layout when
 * 32 | g, stream layout otherwise) look each weight up in the group's 16-entry table
 * t[k] = fl(d (k - c)) (the dequantized weights, bit for bit) and FMA it with x, like the NF4
 * kernels: measured faster than Q8_S integer dots at 4 bits, not at 8 (see bench/rtn_kernels). */
#ifndef QLM_RTN_H
#define QLM_RTN_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/types.h"

/* The RTN type for (asym, bits, group), or -1 if out of range. */
int qlm_rtn_type(bool asym, int bits, int group);
/* Header bytes (2 sym, 4 asym) and code bytes of a block of `type`. */
int qlm_rtn_header_bytes(int type);
int qlm_rtn_code_bytes(int type);

/* Write one block: scale d, zero z (ignored for symmetric types), codes u[g] (each < 2^bits). */
void qlm_rtn_pack(int type, float d, int z, const uint8_t *u, void *block);
/* Write only the header: for 8-bit types, whose code bytes are the codes, a caller can write them in place. */
void qlm_rtn_pack_header(int type, float d, int z, void *block);
/* Read one block back: d, z (2^(b-1) for symmetric types) and the codes. */
void qlm_rtn_unpack(int type, const void *block, float *d, int *z, uint8_t *u);

/* Scalar reference dot products (kernels/rtn.c), n a multiple of the group size. */
float qlm_vec_dot_rtn_ref(int type, const void *w, const void *a, int64_t n);

/* SIMD dot products (kernels/rtn_avx2.c, rtn_avx512.c) for bits 8 with 32 | g (Q8_S activations:
 * the reference's integers, floats summed in another order) and bits 4 with 16 | g (f32
 * activations: the dequantized weights times x, summed in another order); NULL otherwise. */
qlm_vec_dot_t_fn qlm_rtn_vec_dot_avx2(int type);
qlm_vec_dot_t_fn qlm_rtn_vec_dot_avx512(int type, bool vnni);

#endif
