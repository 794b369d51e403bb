/* q5_0x16.h — Q5_0 weights with 16 rows interleaved, made once at load, for the AVX-512 VNNI
 * decode GEMV and prefill GEMM (issue 9); q4_0x16.h explains why.  Q5_0 is llama.cpp's fallback
 * for rows that are not whole 256-weight super-blocks (SmolLM2's 576-wide ones in a Q4_K file);
 * its one-row dot read at ~0.7 of the bandwidth.
 *
 * Layout: groups of 16 rows (the last one padded with zero rows), group g at g * nb * 352 bytes
 * (nb = cols / 32); in a group, block b (columns 32b..32b+31) at b * 352:
 *   bytes [64j, 64j + 64), j = 0..3: dword i = row i's qs[4j .. 4j+3] of that block, unchanged;
 *                 so its low nibbles are codes 4j..4j+3 and its high nibbles codes 16+4j..16+4j+3
 *   bytes [256, 320): dword i = row i's 32 fifth bits, rearranged: bit j of its byte k (j, k < 4)
 *                 is the 5th bit of code 4j+k, bit 4+j that of code 16+4j+k; so shifting the dword
 *                 left by 4-j (right by j) puts the bits of load j's low (high) nibbles at bit 4
 *                 of the very bytes that hold those nibbles
 *   bytes [320, 352): row i's half d at 320 + 2i.
 * The file's 22 bytes per row and block, rearranged: the same size.
 *
 * Activations: each row quantized to Q8_0 (qdot.h), per block 40 bytes: int8 q[32], float d (the
 * Q8_0 half, widened), int32 -16 * sum(q) (Q5_0's code offset, added once).
 *
 * Arithmetic per (activation, row) pair and block, exactly qlm_vec_dot_q5_0_ref's: the int32 sum
 * of (code - 16) * q, then sum += (d_w d_x) isum, unfused and in its order, so both kernels give
 * the reference's bits, whatever T, the threads or the grouping. */
#ifndef QLM_Q5_0X16_H
#define QLM_Q5_0X16_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"

#define QLM_Q50X16_BLK 352 /* bytes of one block of a 16-row group */
#define QLM_Q50X16_ABLK 40 /* bytes of one activation block */

/* Bytes of the interleaved form of a rows x cols Q5_0 matrix (cols a multiple of 32; 0 on overflow). */
size_t qlm_q5_0x16_bytes(int64_t rows, int64_t cols);
/* Interleave groups [g0, g1) of a Q5_0 matrix into dst (the whole interleaved matrix). */
void qlm_q5_0x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);
/* One activation row x[cols] -> its activation blocks (the Q8_0 quantizer's q and d, -16 sum). */
void qlm_q5_0x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level);

/* As qlm_q4_0x16_gemm_*: nb blocks per row. */
void qlm_q5_0x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy);
void qlm_q5_0x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy);

#endif
