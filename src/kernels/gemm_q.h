/* gemm_q.h — prefill products Y[T x rows] = X[T x cols] W^T with a quantized W, as a blocked
 * int8 GEMM (internal to kernels/ and tests).
 *
 * The T rows of X are quantized once per call to the weight type's vec_dot_type (the same
 * quantizer as the T == 1 path, so the activation bytes are identical) and repacked; each thread
 * repacks a chunk of its rows of W at a time; a micro-kernel then computes a tile of 8 weight
 * rows x 16 activation rows, so every weight block loaded is used 16 times and every activation
 * block 8 times.  Integer block sums are exact:
 *   sum_j w_j a_j = d_w d_a sum_j (u_j - off) q_j (+ m_w s_a)
 * with u_j = the weight's unsigned code (Q4_0: nibble, off 8; Q5_0: 5 bits, off 16; Q8_0: q + 128,
 * off 128; Q4_1/Q5_1: off 0 and the min term m_w s_a, s_a = Q8_1's d*sum(q) in half).  Only the
 * float sum over blocks may round differently from qlm_vec_dot_*: the scalar tile kernel does the
 * reference's operations in the reference's order (bit-identical), the AVX-512 VNNI kernel fuses
 * the per-block multiply-add.
 *
 * Layouts (a block = 32 weights; "group" = 4 rows of W or 4 rows of X; lane l = 4 c + r pairs
 * activation c with weight row r of the groups):
 *   weight group, per block (WBLK = 160 bytes): u8 u[8 steps][4 rows][4], f32 d[4], f32 m[4]
 *   activation group, per block (ABLK = 704 bytes): s8 q[8 steps][4 acts][4 rows][4] (act c's
 *     4 bytes of the step repeated for each r), i32 corr[16] = -off * sum(q_c), f32 d[16], f32 s[16]
 * k-quants Q4_K/Q5_K (activations Q8_K): each 32-weight sub-block is a block with d_w = d sc_j,
 * m_w = -dmin mn_j, s_a = d_a * (sum of its q); these are not bit-identical to the reference,
 * which sums integers over the whole 256-weight super-block (tests/test_gemm.c bounds the gap).
 * Covered types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K (not Q6_K: scales per 16 weights). */
#ifndef QLM_GEMM_Q_H
#define QLM_GEMM_Q_H

#include <stdint.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"

/* The tiled GEMM covers this type (any level: the scalar tile kernel is the fallback). */
int qlm_gemm_q_covers(int type);
/* It covers the type at `level` (clamped to this CPU) with a SIMD tile kernel: AVX-512 VNNI, or
 * AVX2 (also on AVX-512 CPUs without VNNI) for all but Q8_0. */
int qlm_gemm_q_fast(int type, qlm_simd_level level);
/* Y = X W^T with the tile kernel of `level` (clamped to this CPU; scalar when it has none).
 * Returns 0 (Y untouched) when it cannot run: a type it does not cover, cols not a whole number of
 * blocks, sizes beyond its limits, or out of memory — the caller then takes another path. */
int qlm_gemm_q(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_simd_level level);

/* Tile kernels (gemm_q.c, gemm_q_avx512.c): nrg (1 or 2) weight groups at wp (consecutive, each
 * nb * WBLK bytes) x ncg (1..4) activation groups at ap (each nb * ABLK bytes), blocks [b0, b1):
 * acc[(4 rg + cg) * 16 + 4 c + r] += the pair's block terms, in block order (so a product over
 * all blocks may be done in several calls).  has_min: add the m_w s_a terms. */
#define QLM_GQ_WBLK 160
#define QLM_GQ_ABLK 704
void qlm_gemm_q_tile_scalar(const uint8_t *wp, int nrg, const uint8_t *ap, int ncg, int64_t nb, int64_t b0, int64_t b1,
                            int has_min, float *acc);
void qlm_gemm_q_tile_avx2(const uint8_t *wp, int nrg, const uint8_t *ap, int ncg, int64_t nb, int64_t b0, int64_t b1,
                          int has_min, float *acc);
void qlm_gemm_q_tile_avx512vnni(const uint8_t *wp, int nrg, const uint8_t *ap, int ncg, int64_t nb, int64_t b0,
                                int64_t b1, int has_min, float *acc);

/* qlm_quantize_q8_0 (q8_1 = 0) / qlm_quantize_q8_1 (q8_1 = 1) with AVX-512: the same bytes. */
void qlm_gemm_q_quantize_avx512(const float *x, uint8_t *dst, int64_t n, int q8_1);
/* The activation-group block (gemm_q.h's ABLK layout) of one block of 4 quantized activations:
 * codes qv[c] (32 int8 each), corr[c], d[c], s[c] each repeated over the 4 weight rows; the same
 * bytes as the scalar repack. */
void qlm_gemm_q_repack_act_avx512(const uint8_t *const qv[4], const int32_t corr[4], const float d[4], const float s[4],
                                  uint8_t *o);
/* The repack of one 32-weight block of 4 rows of Q4_0 (q8_0 = 0) / Q8_0 (q8_0 = 1) with AVX-512
 * (rows[r] NULL: a zero row); the same bytes as the scalar repack. */
void qlm_gemm_q_repack_wblock_avx512(const uint8_t *const rows[4], int q8_0, uint8_t *o);
/* The repack of one super-block of 4 rows of Q4_K (q5 = 0) / Q5_K (q5 = 1) into its 8 weight-group
 * blocks (8 x QLM_GQ_WBLK bytes at o) with AVX-512 (rows[r] NULL: a zero row); the scalar's bytes. */
void qlm_gemm_q_repack_ksuper_avx512(const uint8_t *const rows[4], int q5, uint8_t *o);

#endif
