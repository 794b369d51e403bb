/* q4_kx16.h — Q4_K weights with 16 rows interleaved, made once at load, for the AVX-512 VNNI
 * decode GEMV and prefill GEMM (issue 9); q4_0x16.h explains why, this is the same for Q4_K.
 *
 * Layout: groups of 16 rows (the last one padded with zero rows), group g at g * nsb * 2368 bytes
 * (nsb = cols / 256 super-blocks); in a group, super-block s at s * 2368:
 *   bytes [64m, 64m + 64), m = 0..31: dword i = row i's qs[4m .. 4m+3], unchanged (pair p = m / 8:
 *                 low nibbles are weights 64p + 4(m % 8) + 0..3 (sub-block 2p), high nibbles the
 *                 same positions of sub-block 2p + 1);
 *   [2048, 2176): the 6-bit scales as bytes, sub-block j's 16 at 2048 + 16j (row i at + i);
 *   [2176, 2304): the 6-bit mins as bytes in pairs, (mn_2k, mn_2k+1) of row i at 2176 + 32k + 2i;
 *   [2304, 2336): row i's half d at 2304 + 2i;  [2336, 2368): row i's half dmin at 2336 + 2i.
 * 2368 bytes for 16 x 144 = 2304 in the file (+2.8%: the scales unpacked from 6 to 8 bits).
 *
 * Activations: each row quantized to Q8_K (qdot.h), laid out per super-block as 288 bytes: int8
 * q[256], float d, then 4 dwords of int16 pairs (b_2k, b_2k+1), b_j = the sum of sub-block j's 32
 * quants (the two Q8_K bsums of its halves).
 *
 * Arithmetic per (activation, row) pair and super-block, exactly qlm_vec_dot_q4_k_ref's: the
 * integers isum = sum_j sc_j (codes . q)_j and imin = sum_j mn_j b_j, then
 * sum += (d_x d) isum - (d_x dmin) imin in its float operations and order (no fused multiply-add),
 * so both kernels give the reference's bits, whatever T, the threads or the grouping. */
#ifndef QLM_Q4_KX16_H
#define QLM_Q4_KX16_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"

#define QLM_Q4KX16_BLK 2368 /* bytes of one super-block of a 16-row group */
#define QLM_Q4KX16_ABLK 288 /* bytes of one activation super-block */

/* Bytes of the interleaved form of a rows x cols Q4_K matrix (cols a multiple of 256; else 0). */
size_t qlm_q4_kx16_bytes(int64_t rows, int64_t cols);
/* Interleave groups [g0, g1) of a Q4_K matrix into dst (the whole interleaved matrix). */
void qlm_q4_kx16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);
/* One activation row x[cols] -> its activation super-blocks (the Q8_K quantizer's q and d). */
void qlm_q4_kx16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level);

/* As qlm_q4_0x16_gemm_*: nsb super-blocks per row. */
void qlm_q4_kx16_gemm_scalar(const void *wx, int64_t nsb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy);
void qlm_q4_kx16_gemm_avx512vnni(const void *wx, int64_t nsb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy);

#endif
