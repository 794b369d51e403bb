/* bgemm.h — bf16 products with f32 sums: the calibration's products under --calib-dtype bf16
 * (quant/calib.h): the linear layers, the attention's scores and weights·values, and the
 * Hessians XᵀX.  On AVX-512 BF16 by VDPBF16PS (32 multiply-adds per instruction, twice the f32
 * FMA rate of a Zen 4 core: 229 vs 116 GFLOP/s measured), elsewhere by the same chains as f32
 * FMAs (below).
 *
 * Operands are bf16 (the top half of an f32: 8 significand bits).  Accuracy: rounding x and w to
 * bf16 costs up to 2^-8 relative per product (2 x 2^-9), then one f32 rounding per multiply-add
 * of the chain.  GPTQ's and AWQ's reference implementations run the calibration forward in fp16
 * (2^-11 per operand) on the GPU; bf16 keeps f32's range, so no activation overflows. */
#ifndef QLM_BGEMM_H
#define QLM_BGEMM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/fp16.h" /* qlm_f32_to_bf16, qlm_bf16_to_f32: the conversions */

typedef uint16_t qlm_bf16;

/* Row stride of bf16 activation rows (qlm_matmul_bf16), in elements: whole 64-byte lines. */
#define QLM_BGEMM_K_ALIGN 32

/* n rounded up to QLM_BGEMM_K_ALIGN. */
static inline int64_t qlm_bgemm_pad(int64_t n) { return (n + QLM_BGEMM_K_ALIGN - 1) / QLM_BGEMM_K_ALIGN * QLM_BGEMM_K_ALIGN; }

/* y[0..n) = bf16(x[0..n)), then zeros up to n_pad (>= n). */
void qlm_bf16_from_f32(const float *x, int64_t n, qlm_bf16 *y, int64_t n_pad);

/* AVX-512 BF16 is usable (kernels/cpu.c's detection; QLM_SIMD below avx512, or avx512-nobf16,
 * turns it off). */
bool qlm_bgemm_fast(void);

/* ---- the product: outer-product form ----
 *
 *   Y[i·ldy + j] = alpha · Σ_k X[i·ldx + k] · B(k, j)      for i < M, j < N, k < K
 *
 * Each output has one accumulator lane (a dot form, reducing 16 lanes per output, ran at 38
 * GFLOP/s when K = head_dim = 64): B is packed (qlm_bgemm_pack) in groups of 16 columns, per
 * pair of k the 16 columns' (B(2p, j), B(2p+1, j)); a step broadcasts X's pair (x[2p], x[2p+1])
 * of a row to all lanes.  Arithmetic (qlm_bgemm_op_ref), VDPBF16PS's own (Intel SDM), so that
 * every output's bits are independent of M, N, the tile and the thread split: per output, for
 * p = 0, 1, ... in order acc += x[2p+1]·b(2p+1), then acc += x[2p]·b(2p), each rounded once to
 * nearest even (the product of two bf16 is exact in f32), operands that are subnormal read as
 * zero and subnormal results flushed to zero; then y = alpha·acc rounded once.  On SmolLM2's attention
 * shapes (64 query rows, head_dim 64, 1024 keys) one Zen 4 core: weights·values 232 GFLOP/s
 * (q·kᵀ 188), OpenBLAS sgemm 94 (82).
 *
 * B is packed for kpack rows (its groups lie 16·pad2(kpack) values apart) and a product may use
 * its first K <= kpack (the keys of an earlier block).  X rows hold pad2(K) values, those past
 * K zero. */
static inline int64_t qlm_pad2(int64_t k) { return (k + 1) / 2 * 2; }

/* Where B(k, j) lies in a B packed for kpack rows: group j / 16, pair k / 2, lane j % 16, k % 2. */
static inline int64_t qlm_bgemm_packed_at(int64_t kpack, int64_t k, int64_t j) {
  return (j / 16) * 16 * qlm_pad2(kpack) + (k / 2) * 32 + (j % 16) * 2 + (k % 2);
}

/* The packed B of kpack x N: qlm_bgemm_packed_len(kpack, N) bf16 values. */
static inline int64_t qlm_bgemm_packed_len(int64_t kpack, int64_t N) { return (N + 15) / 16 * 16 * qlm_pad2(kpack); }

/* f32 B (K x N, B(k, j) = src[k·ld + j]) -> bf16 packed for kpack = K (zeros past N and K). */
void qlm_bgemm_pack(const float *src, int64_t ld, int64_t K, int64_t N, qlm_bf16 *packed);
/* Rows [k0, k0 + nk) of a B packed for kpack rows, columns [j0, j1) (j0 a multiple of 16): B(k0 +
 * k, j) = src[k·ld + j].  Nothing else is written (the caller keeps the padding zero). */
void qlm_bgemm_pack_rows(const float *src, int64_t ld, int64_t k0, int64_t nk, int64_t kpack, int64_t j0, int64_t j1,
                         qlm_bf16 *packed);
/* The same for B = srcᵀ (B(k, j) = src[j·ld + k]: the rows of a weight matrix as B's columns),
 * packing the columns [j0, j0 + n) of B into packed's groups j0/16...: j0 a multiple of 16, and
 * the whole packed B of N columns has kpack = K. */
void qlm_bgemm_pack_t(const float *src, int64_t ld, int64_t K, int64_t j0, int64_t n, qlm_bf16 *packed);

/* Bᵀ B from one packed B (K x N, packed for kpack >= K rows): Y[i·ldy + j] = Σ_k B(k, i) B(k, j)
 * for i in [i0, i1), j in [i, N) — the upper triangle of a Hessian XᵀX whose X rows were packed
 * as B's rows, with no transposed copy: row i's pairs are lane i % 16 of B's group i / 16.  The
 * arithmetic of qlm_bgemm_op (one chain per output), i0 a multiple of 16; the SIMD kernels also
 * write the entries left of the diagonal in its 16-column group (j >= i / 16 * 16), none further
 * left; the reference writes only j >= i. */
void qlm_bgemm_op_upper_ref(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                            int64_t N, int64_t K);
void qlm_bgemm_op_upper_avx512bf16(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0,
                                   int64_t i1, int64_t N, int64_t K);
void qlm_bgemm_op_upper(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                        int64_t N, int64_t K);

void qlm_bgemm_op_ref(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                      int64_t M, int64_t N, int64_t K, float alpha);
void qlm_bgemm_op_avx512bf16(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y,
                             int64_t ldy, int64_t M, int64_t N, int64_t K, float alpha);
/* Without AVX512_BF16 the same chains run as f32 FMAs: the operands widened to f32 exactly (a
 * bf16 is an f32's top half), fma(x_odd, b_odd, acc) then fma(x_even, b_even, acc) with MXCSR's
 * DAZ and FTZ set (subnormal operands read as zero, subnormal results flushed: VDPBF16PS's
 * rules) for the chains, cleared again for alpha·acc.  A product of two bf16 is exact in f32, so
 * each FMA rounds once, as the instruction does: the same bits as the reference at half the
 * instruction's rate, so the bf16 products are the same on every x86-64 CPU (what a GPTQ
 * calibration then solves with is OpenBLAS's double-precision LAPACK/BLAS, whose kernels
 * OpenBLAS picks per CPU). */
void qlm_bgemm_op_avx512(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                         int64_t M, int64_t N, int64_t K, float alpha);
void qlm_bgemm_op_upper_avx512(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                               int64_t N, int64_t K);
void qlm_bgemm_op_avx2(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                       int64_t M, int64_t N, int64_t K, float alpha);
void qlm_bgemm_op_upper_avx2(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                             int64_t N, int64_t K);
/* The best of the above for this CPU (and QLM_SIMD): AVX-512 BF16, else the AVX-512F or AVX2
 * FMA chains, else the reference; all the same bits. */
void qlm_bgemm_op(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                  int64_t M, int64_t N, int64_t K, float alpha);

/* ---- internal to the kernels: one loop over tiles for every instruction set ----
 * A tile is rm <= om rows of X (row r's pair p at xr[r] + p·xps: xps = 2 for plain rows, 32 for
 * rows read out of a packed B) times rg <= og groups of 16 packed columns (group g at B + g·gs,
 * kp values each), written to Y's rows ldy apart with alpha; the last group has last_cols
 * columns (1..16). */
typedef void qlm_bgemm_tile_fn(int rm, int rg, const qlm_bf16 *const *xr, int64_t xps, const qlm_bf16 *B, int64_t gs,
                               int64_t kp, float *Y, int64_t ldy, int last_cols, float alpha);
#define QLM_BGEMM_MAX_OM 8
void qlm_bgemm_op_tiles(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed,
                        int64_t kpack, float *Y, int64_t ldy, int64_t M, int64_t N, int64_t K, float alpha);
void qlm_bgemm_op_upper_tiles(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *packed, int64_t kpack, float *Y,
                              int64_t ldy, int64_t i0, int64_t i1, int64_t N, int64_t K);
/* The same for FMA tiles that emulate VDPBF16PS: the tiles run with MXCSR's DAZ and FTZ set (and
 * write the bare sums); then the caller's MXCSR is back and Y's M x N outputs are scaled by alpha. */
void qlm_bgemm_op_emulated(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *X, int64_t ldx,
                           const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t M, int64_t N, int64_t K,
                           float alpha);
void qlm_bgemm_op_upper_emulated(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *packed, int64_t kpack,
                                 float *Y, int64_t ldy, int64_t i0, int64_t i1, int64_t N, int64_t K);

#endif
