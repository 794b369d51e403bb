/* qdot.h — dot products of quantized weights with quantized activations (internal to kernels/
 * and tests).
 *
 * The ggml scheme: a matrix stays in its storage blocks; the activation row x is quantized once
 * to 8 bits (the weight type's vec_dot_type, see types.h), and every weight row is then dotted
 * with it in integer arithmetic, one float multiply per block:
 *   w_i = d_w * v_i (+ m_w),  x_i ~ d_x * q_i   =>   sum w_i x_i ~ d_w d_x sum v_i q_i (+ m_w d_x sum q_i)
 *
 * Activation formats (ggml's layouts, types.c):
 *   Q8_0: half d, int8 q[32];             Q8_1: half d, half s = d * sum(q), int8 q[32]
 *   Q8_K: float d, int8 q[256], int16 bsums[16] (sums of each 16 quants)
 * Our activation quantizers are symmetric with d = amax / 127 and q = round-half-even(x * 127 / amax),
 * so |q| <= 127 (the SIMD kernels rely on that: |q| * 127 * 2 fits int16 in maddubs).  They are the
 * same function at every SIMD level, so every level sees identical activation bytes.
 *
 * Scalar versions are the reference: integer sums per block, then a float sum over blocks in
 * block order.  SIMD versions compute the same integers and sum the floats in another order. */
#ifndef QLM_QDOT_H
#define QLM_QDOT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"
#include "kernels/types.h"

/* Activation quantizers (scalar, written so the compiler can vectorize them). */
void qlm_quantize_q8_0(const float *x, void *dst, int64_t n);
void qlm_quantize_q8_1(const float *x, void *dst, int64_t n);
void qlm_quantize_q8_k(const float *x, void *dst, int64_t n);
/* Q8_S (qlm's, for the RTN types): half d, int16 sum of the 32 q (exact), int8 q[32]. */
void qlm_quantize_q8_s(const float *x, void *dst, int64_t n);

/* Scalar reference dot products: weights of type T with activations in its vec_dot_type. */
float qlm_vec_dot_q4_0_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_1_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_0_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_1_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q8_0_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q2_k_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q3_k_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_k_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_k_ref(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q6_k_ref(const void *w, const void *a, int64_t n);

/* AVX2 + FMA + F16C (qdot_avx2.c). */
float qlm_vec_dot_q4_0_avx2(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_1_avx2(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_0_avx2(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_1_avx2(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q8_0_avx2(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_k_avx2(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q6_k_avx2(const void *w, const void *a, int64_t n);

/* AVX-512 BW/VL (qdot_avx512.c); _vnni versions use vpdpbusd (AVX-512 VNNI). */
float qlm_vec_dot_q4_0_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_1_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_0_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_1_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q8_0_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_0_avx512vnni(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_1_avx512vnni(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_0_avx512vnni(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q5_1_avx512vnni(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q8_0_avx512vnni(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_k_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q6_k_avx512(const void *w, const void *a, int64_t n);
float qlm_vec_dot_q4_k_avx512vnni(const void *w, const void *a, int64_t n);

/* The best dot product of `type` at `level` (clamped to this CPU; falls back to lower levels,
 * then to the scalar reference).  NULL if the type has no vec_dot. */
qlm_vec_dot_fn qlm_vec_dot_for(int type, qlm_simd_level level);
/* The same for qlm's own types (traits->vec_dot_t); NULL if the type has none. */
qlm_vec_dot_t_fn qlm_vec_dot_t_for(int type, qlm_simd_level level);

/* ---- Q4_0 decode GEMV with AVX-512 VNNI (q4_0_gemv_avx512.c).
 * The activation row (Q8_0, the bytes qlm_quantize_q8_0 writes) is first repacked once per
 * matmul into "quads" of 4 blocks (128 values), QLM_Q4_0_QUAD_BYTES each, laid out for the
 * kernel so that nothing activation-only is recomputed per weight row:
 *   int8  lo[64]   block k's q[0..15] at 16k        (pairs with the weights' low nibbles)
 *   int8  hi[64]   block k's q[16..31] at 16k       (pairs with the high nibbles)
 *   int32 off[16]  lane i: -8 * (sum of lo[4i..4i+3] and hi[4i..4i+3])  (Q4_0's -8, exact)
 *   float dx[16]   lane i: d of block i / 4
 * A last partial quad is zero-padded (zero quants, d = 0), so it adds exactly nothing.
 * The GEMV's arithmetic per row does not depend on the number of rows per call, and
 * qlm_vec_dot_q4_0_avx512vnni is the same kernel on one row, so they agree bit for bit (the
 * matmul test relies on it). */
#define QLM_Q4_0_QUAD_BYTES 256
/* Bytes of the packed form of an n-value activation row (n a multiple of 32). */
size_t qlm_q4_0_packed_act_bytes(int64_t n);
/* Packs blocks [0, nb) of a Q8_0 row `a` into `dst` (qlm_q4_0_packed_act_bytes(32 nb) bytes). */
void qlm_q4_0_pack_act(const void *a, void *dst, int64_t nb);
/* The same bytes with AVX-512 VNNI (q4_0_gemv_avx512.c). */
void qlm_q4_0_pack_act_avx512(const void *a, void *dst, int64_t nb);
/* y[r] = dot(row r of w, activation) for r in [0, rows); rows are row_bytes apart, n values. */
void qlm_gemv_q4_0_avx512vnni(const void *w, size_t row_bytes, int64_t rows, const void *packed, int64_t n, float *y);

/* ---- Q4_1 / Q5_0 / Q5_1 decode GEMV with AVX-512 VNNI (legacy_gemv_avx512.c, which explains the
 * packed layout): the activation row (Q8_1 for Q4_1 and Q5_1, Q8_0 for Q5_0) is packed once per
 * matmul, QLM_LEGACY_PAIR_BYTES per pair of blocks; each row then gets the bits of the type's
 * qlm_vec_dot_*_avx512vnni. */
#define QLM_LEGACY_PAIR_BYTES 256
/* Bytes of the packed form of an n-value activation row. */
size_t qlm_legacy_packed_act_bytes(int64_t n);
/* Packs the pairs of an activation row `a` (n values) for weights of `type` into dst. */
void qlm_legacy_pack_act_avx512(int type, const void *a, void *dst, int64_t n);
/* y[r] = dot(row r of w, a) for r in [0, rows), rows row_bytes apart; packed is a's packed form. */
void qlm_gemv_legacy_avx512vnni(int type, const void *w, size_t row_bytes, int64_t rows, const void *packed,
                                const void *a, int64_t n, float *y);

/* qlm_quantize_q8_k with AVX-512 (q4_k_gemv_avx512.c): the same bytes, several times faster. */
void qlm_quantize_q8_k_avx512(const float *x, void *dst, int64_t n);

/* ---- Q4_K decode GEMV with AVX-512 VNNI (q4_k_gemv_avx512.c): y[r] = dot(row r of w, a) for r in
 * [0, rows), rows row_bytes apart, n values (a multiple of 256), `a` one Q8_K row as
 * qlm_quantize_q8_k writes it.  Row by row the same arithmetic as qlm_vec_dot_q4_k_avx512vnni,
 * so the two agree bit for bit. */
void qlm_gemv_q4_k_avx512vnni(const void *w, size_t row_bytes, int64_t rows, const void *a, int64_t n, float *y);

#endif
