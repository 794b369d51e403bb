/* hqq.h — storage of the HQQ types (QLM_FAMILY_HQQ, kernels/types.h) and the inner loop of
 * HQQ's proximal solver (quant/hqq.c drives it).
 *
 * A type is (bits b in 1..8, group g in 1..65535); one block holds one group of g consecutive
 * weights of a row:
 *   [0..2)    half s          the group's scale (hqq's stored scale = 1 / its inverse scale)
 *   [2..4)    half z          the zero point: a float, not an integer (hqq optimizes it)
 *   [4..4+P)  codes, P = ceil(g * b / 8) bytes, unsigned b-bit codes u_i in the layouts of the
 *             RTN types (kernels/rtn.h):
 *     b == 8:             byte i = u_i
 *     b == 4 and 32 | g:  per 32 weights (16 bytes): byte j = u_j | u_{j+16} << 4
 *     otherwise:          a little-endian bit stream: u_i in bits [i*b, i*b + b)
 *   w_i = (u_i - z) * s       in float, in that order (hqq's Quantizer.dequantize)
 * 4-bit g64 is 4 + 32/64 = 4.5 bits per weight.
 *
 * Dot products: the activations stay f32 (vec_dot_type QLM_TYPE_F32).  Every version sums the
 * products w_i * x_i of the dequantized weights w_i = fl(fl(u_i - z) * s) (bit-equal to the
 * dequantizer's output).  The scalar reference adds them one by one into one float in index
 * order; the SIMD versions (4 bits with 32 | g, 8 and 2 bits with 16 | g) build per group the
 * table t[k] = (k - z) * s of all 2^b weights (the same floats), look the codes up with vpermps
 * and FMA into 8 or 16 lanes, so they differ from the reference only in summation order: each
 * is within gamma_n * sum|w_i x_i| of the exact dot (gamma_n = n eps / (1 - n eps)). */
#ifndef QLM_HQQ_KERNELS_H
#define QLM_HQQ_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/types.h"

#define QLM_HQQ_HEADER 4 /* half s + half z */

/* The HQQ type for (bits, group), or -1 if out of range. */
int qlm_hqq_type(int bits, int group);
int qlm_hqq_code_bytes(int type);
size_t qlm_hqq_block_bytes(int type);

/* Write one block: scale s, zero z (stored as halves), codes u[g] (each < 2^bits). */
void qlm_hqq_pack(int type, float s, float z, const uint8_t *u, void *block);
/* Read one block back: s, z (the halves as floats) and the codes. */
void qlm_hqq_unpack(int type, const void *block, float *s, float *z, uint8_t *u);

/* Scalar reference dot product (see above), n a multiple of the group size. */
float qlm_vec_dot_hqq_ref(int type, const void *w, const void *a, int64_t n);
/* SIMD versions for a type, or NULL where there is none (kernels/hqq_avx2.c, hqq_avx512.c). */
qlm_vec_dot_t_fn qlm_hqq_vec_dot_avx2(int type);
qlm_vec_dot_t_fn qlm_hqq_vec_dot_avx512(int type);

/* ---- The solver's inner loop (one iteration of hqq's optimize_weights_proximal on groups).
 *
 * For each of ng groups of g consecutive weights W with inverse scale si[k] and zero z[k]:
 *   W_q = clamp(round(W * si + z), 0, 2^b - 1)      round half to even (torch.round)
 *   W_r = (W_q - z) / si
 *   W_e = shrink_p(W - W_r),  shrink_p(x) = sign(x) * max(0, |x| - inv_beta * |x|^(p - 1))
 *   z  <- mean(W_q - (W - W_e) * si)                (written back into z[k])
 * and returns the sum over all weights of |W - W_r| (the early-stopping error, before the
 * update).  Sums run over 16 fixed lanes (element i in lane i % 16, lanes added 0..15), written
 * so that the compiler vectorizes them without reassociating: every level returns bit-identical
 * results, and the scalar one is the reference. */
typedef struct qlm_hqq_iter_args {
  int g;            /* group size */
  float qmax;       /* 2^bits - 1 */
  float inv_beta;   /* 1 / beta, as a float (torch multiplies by the scalar in float) */
  float p_m1;       /* lp_norm - 1 (the exponent of |x|) */
  float shrink_thr; /* below this |x| shrink_p(x) is certainly 0 (safety margin included) */
} qlm_hqq_iter_args;

typedef double (*qlm_hqq_iter_fn)(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z);
double qlm_hqq_iter_ref(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z);
double qlm_hqq_iter_avx2(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z);
double qlm_hqq_iter_avx512(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z);
/* The version for a SIMD level (an int holding a qlm_simd_level, clamped to this CPU). */
qlm_hqq_iter_fn qlm_hqq_iter_for(int level);

#endif
