/* q4_1x16.h — Q4_1 weights with 16 rows interleaved, made once at load, for the AVX-512 VNNI
 * decode GEMV and prefill GEMM (issue 9); q4_0x16.h explains why, this is the same for Q4_1, the
 * type of the SmolLM2-135M GGUF qlm downloads (its one-row dot read at ~0.5 of the bandwidth).
 *
 * Layout: groups of 16 rows (the last one padded with zero rows), group g at g * nb * 320 bytes
 * (nb = cols / 32); in a group, block b (columns 32b..32b+31) at b * 320:
 *   bytes [64j, 64j + 64), j = 0..3: dword i = row i's qs[4j .. 4j+3] of that block, unchanged;
 *                 so its low nibbles are codes 4j..4j+3 and its high nibbles codes 16+4j..16+4j+3
 *   bytes [256, 288): row i's half d at 256 + 2i;   [288, 320): row i's half m at 288 + 2i.
 * The file's bytes, permuted: the same size.
 *
 * Activations: each row quantized to Q8_1 (qdot.h) and laid out per block as 40 bytes: int8 q[32],
 * float d, float s (the Q8_1 halves d and s = d * sum(q), widened).
 *
 * Arithmetic per (activation, row) pair and block, exactly qlm_vec_dot_q4_1_ref's: the int32 sum
 * of code * q, then sum += (d_w d_x) isum + m_w s_x in its float operations and order (no fused
 * multiply-add), so both kernels give the reference's bits, whatever T, the threads or the
 * grouping. */
#ifndef QLM_Q4_1X16_H
#define QLM_Q4_1X16_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"

#define QLM_Q41X16_BLK 320 /* bytes of one block of a 16-row group */
#define QLM_Q41X16_ABLK 40 /* bytes of one activation block */

/* Bytes of the interleaved form of a rows x cols Q4_1 matrix (cols a multiple of 32; 0 on overflow). */
size_t qlm_q4_1x16_bytes(int64_t rows, int64_t cols);
/* Interleave groups [g0, g1) of a Q4_1 matrix into dst (the whole interleaved matrix). */
void qlm_q4_1x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);
/* One activation row x[cols] -> its activation blocks (the Q8_1 quantizer's q, d and s). */
void qlm_q4_1x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level);

/* As qlm_q4_0x16_gemm_*: nb blocks per row. */
void qlm_q4_1x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy);
void qlm_q4_1x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy);

#endif
