/* q4_0x16.h — Q4_0 weights with 16 rows interleaved, made once at load, for the AVX-512 VNNI
 * decode GEMV and prefill GEMM (issue 9).
 *
 * Why: in the file layout each row is its own stream of 18-byte blocks.  The decode GEMV then
 * reads one stream per row and the prefill GEMM repacked every weight block on every call
 * (about 60% of its tile time at 16 tokens on LLaMA-7B shapes).  Here the 16 rows of a group sit
 * side by side, so one 64-byte load gives 4 codes of each of 16 rows: an int32 lane per row, and
 * vpdpbusd multiplies it with 4 activation quants broadcast to all lanes.  Nothing is unpacked per
 * call, a thread reads one sequential stream, and each weight load serves up to 8 activation rows.
 * (llama.cpp does the same kind of load-time repack, its block_q4_0x8; the layout here is ours.)
 *
 * Layout: groups of 16 rows (the last one padded with zero rows), group g at g * nb * 288 bytes
 * (nb = cols / 32); in a group, block b (columns 32b..32b+31) at b * 288:
 *   bytes [64j, 64j + 64), j = 0..3: dword i = row i's qs[4j .. 4j+3] of that block, unchanged;
 *                 so its low nibbles are codes 4j..4j+3 and its high nibbles codes 16+4j..16+4j+3
 *   bytes [256, 288): row i's half scale d at 256 + 2i.
 * The same bytes as the file (a permutation of them), so the same size.
 *
 * Activations: each row quantized to Q8_0 (qdot.h) and laid out per block as 40 bytes: int8 q[32],
 * float d (the Q8_0 half d, widened), int32 -8 * sum(q) (Q4_0's code offset, added once).
 *
 * Arithmetic per (activation, row) pair: the int32 block sum of code * q, then
 * sum += (d_w * d_x) * (float)isum block after block, as qlm_vec_dot_q4_0_ref; the scalar kernel
 * does exactly that, the AVX-512 one the same with a fused multiply-add (one rounding fewer per
 * block).  Every output depends only on its own pair, so the result does not depend on how rows or
 * activation rows are split between threads or calls. */
#ifndef QLM_Q4_0X16_H
#define QLM_Q4_0X16_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"

#define QLM_Q4X16_ROWS 16
#define QLM_Q4X16_BLK 288  /* bytes of one block of a 16-row group */
#define QLM_Q4X16_ABLK 40  /* bytes of one activation block */

/* Bytes of the interleaved form of a rows x cols Q4_0 matrix (cols a multiple of 32; 0 on overflow). */
size_t qlm_q4_0x16_bytes(int64_t rows, int64_t cols);
/* Interleave groups [g0, g1) of a Q4_0 matrix (rows of row_bytes at w) into dst (the whole
 * interleaved matrix: group g is written at its own offset). */
void qlm_q4_0x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);

/* One activation row x[cols] -> nb activation blocks (the Q8_0 quantizer's q and d, bit for bit). */
void qlm_q4_0x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level);

/* Y[t * ldy + r] for t in [0, T) and the rows r of groups [g0, g1) that are < rows, from the
 * interleaved weights wx (nb blocks per row) and T activation rows of nb blocks each. */
typedef void (*qlm_q4_0x16_gemm_fn)(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                    int64_t T, float *Y, int64_t ldy);
void qlm_q4_0x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy);
void qlm_q4_0x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy);

#endif
