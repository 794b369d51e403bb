/* q8_0x16.h — Q8_0 weights with 16 rows interleaved, made once at load, for the AVX-512 VNNI
 * decode GEMV and prefill GEMM (issue 9); q4_0x16.h explains why.  Measured against the file
 * layout (its one-row dot for decode, the gemm_q tile for prefill), 2 Zen 4 threads, alternating:
 * prefill 1.6-1.8x faster (SmolLM2-135M pp128 ~900 -> ~1650 t/s; LLaMA-7B shapes 172 -> 307), but
 * SmolLM2 decode ~8% slower (tg128 195 -> 180 t/s, median paired ratio 0.90 over 8 rounds; 7B
 * shapes within noise).  Both decode kernels are memory-bound there; why this one loses on short
 * rows is not understood yet.
 *
 * Layout: groups of 16 rows (the last one padded with zero rows), group g at g * nb * 544 bytes
 * (nb = cols / 32); in a group, block b (columns 32b..32b+31) at b * 544:
 *   bytes [64j, 64j + 64), j = 0..7: dword i = row i's quants 4j..4j+3, each + 128 (as u8: the
 *                 signed quant with its sign bit flipped), so vpdpbusd can take them as unsigned;
 *   bytes [512, 544): row i's half d at 512 + 2i.
 * The file's 34 bytes per row and block, rearranged: the same size.
 *
 * Activations: each row quantized to Q8_0 (qdot.h), per block 40 bytes: int8 q[32], float d (the
 * Q8_0 half, widened), int32 -128 * sum(q) (the +128 taken back, once).
 *
 * Arithmetic per (activation, row) pair and block, exactly qlm_vec_dot_q8_0_ref's: the int32 sum
 * of w * q (as sum (w + 128) q - 128 sum q, exact: |.| <= 32 * 255 * 128), then
 * sum += (d_w d_x) isum, unfused and in its order, so both kernels give the reference's bits,
 * whatever T, the threads or the grouping. */
#ifndef QLM_Q8_0X16_H
#define QLM_Q8_0X16_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"

#define QLM_Q80X16_BLK 544 /* bytes of one block of a 16-row group */
#define QLM_Q80X16_ABLK 40 /* bytes of one activation block */

/* Bytes of the interleaved form of a rows x cols Q8_0 matrix (cols a multiple of 32; 0 on overflow). */
size_t qlm_q8_0x16_bytes(int64_t rows, int64_t cols);
/* Interleave groups [g0, g1) of a Q8_0 matrix into dst (the whole interleaved matrix). */
void qlm_q8_0x16_pack(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);
/* One activation row x[cols] -> its activation blocks (the Q8_0 quantizer's q and d, -128 sum). */
void qlm_q8_0x16_quantize_act(const float *x, int64_t cols, void *dst, qlm_simd_level level);

/* As qlm_q4_0x16_gemm_*: nb blocks per row. */
void qlm_q8_0x16_gemm_scalar(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                             int64_t T, float *Y, int64_t ldy);
void qlm_q8_0x16_gemm_avx512vnni(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act,
                                 int64_t T, float *Y, int64_t ldy);

#endif
