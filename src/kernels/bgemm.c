/* bgemm.c — the scalar reference of kernels/bgemm.h's product (VDPBF16PS's arithmetic, written
 * plainly), the f32 -> bf16 rows and packing, the tile loops shared by the SIMD kernels, and the
 * dispatch. */
#include "kernels/bgemm.h"

#include <float.h>
#include <math.h>
#include <string.h>
#include <xmmintrin.h> /* MXCSR */

#include "kernels/cpu.h"

/* target_clones: the loop vectorizes (integer operations: the same bits at every level); the
 * conversions of X, the attention weights and the packed operands were ~6% of a bf16 calibration
 * forward as scalar loops. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void from_f32(const float *x, int64_t n,
                                                                                 qlm_bf16 *y, int64_t n_pad) {
  for (int64_t i = 0; i < n; i++) y[i] = qlm_f32_to_bf16(x[i]);
  for (int64_t i = n; i < n_pad; i++) y[i] = 0;
}

/* (The clones stay static: clang's target_clones leaves an external name unresolved.) */
void qlm_bf16_from_f32(const float *x, int64_t n, qlm_bf16 *y, int64_t n_pad) { from_f32(x, n, y, n_pad); }

/* An operand as VDPBF16PS reads it: subnormals are zero (DAZ). */
static float operand(qlm_bf16 h) {
  float f = qlm_bf16_to_f32(h);
  return fabsf(f) < FLT_MIN ? copysignf(0.0f, f) : f;
}

/* acc + x·w rounded once (the product is exact in f32), a subnormal result flushed (FTZ). */
static float madd(float acc, qlm_bf16 x, qlm_bf16 w) {
  float p = operand(x) * operand(w);
  float s = acc + p;
  return fabsf(s) < FLT_MIN ? copysignf(0.0f, s) : s;
}

bool qlm_bgemm_fast(void) { return qlm_cpu_simd_level() >= QLM_SIMD_AVX512 && qlm_cpu_has_avx512_bf16(); }

/* ---- outer-product form ---- */

/* Row by row (src read in order; with the groups inner, walking down 16 columns at a time was
 * 0.86 ns per value on 2048 x 1536, this 0.28), a whole pair of rows as 32-bit lanes;
 * target_clones as qlm_bf16_from_f32. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void pack_rows(
    const float *src, int64_t ld, int64_t k0, int64_t nk, int64_t kpack, int64_t j0, int64_t j1, qlm_bf16 *packed) {
  for (int64_t k = 0; k < nk;) {
    const float *a = src + k * ld, *b = a + ld;
    bool pair = (k0 + k) % 2 == 0 && k + 1 < nk;
    for (int64_t g0 = j0; g0 < j1; g0 += 16) {
      qlm_bf16 *dst = packed + qlm_bgemm_packed_at(kpack, k0 + k, g0);
      int64_t w = j1 - g0 < 16 ? j1 - g0 : 16;
      if (pair)
        for (int64_t l = 0; l < w; l++) { /* little-endian: row k's value at the lower address */
          uint32_t v = (uint32_t)qlm_f32_to_bf16(a[g0 + l]) | (uint32_t)qlm_f32_to_bf16(b[g0 + l]) << 16;
          memcpy(dst + 2 * l, &v, sizeof v);
        }
      else
        for (int64_t l = 0; l < w; l++) dst[l * 2] = qlm_f32_to_bf16(a[g0 + l]);
    }
    k += pair ? 2 : 1;
  }
}

void qlm_bgemm_pack_rows(const float *src, int64_t ld, int64_t k0, int64_t nk, int64_t kpack, int64_t j0, int64_t j1,
                         qlm_bf16 *packed) {
  pack_rows(src, ld, k0, nk, kpack, j0, j1, packed);
}

void qlm_bgemm_pack(const float *src, int64_t ld, int64_t K, int64_t N, qlm_bf16 *packed) {
  memset(packed, 0, (size_t)qlm_bgemm_packed_len(K, N) * sizeof *packed);
  qlm_bgemm_pack_rows(src, ld, 0, K, K, 0, N, packed);
}

void qlm_bgemm_pack_t(const float *src, int64_t ld, int64_t K, int64_t j0, int64_t n, qlm_bf16 *packed) {
  int64_t kp = qlm_pad2(K);
  for (int64_t g0 = 0; g0 < n; g0 += 16) {
    qlm_bf16 *g = packed + (j0 + g0) * kp;
    int64_t w = n - g0 < 16 ? n - g0 : 16;
    if (w < 16 || kp > K) memset(g, 0, (size_t)(16 * kp) * sizeof *g);
    for (int64_t l = 0; l < w; l++) {
      const float *row = src + (g0 + l) * ld;
      for (int64_t k = 0; k < K; k++) g[(k / 2) * 32 + l * 2 + (k % 2)] = qlm_f32_to_bf16(row[k]);
    }
  }
}

void qlm_bgemm_op_ref(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                      int64_t M, int64_t N, int64_t K, float alpha) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      const qlm_bf16 *x = X + i * ldx;
      float acc = 0.0f;
      for (int64_t k = 0; k < qlm_pad2(K); k += 2) {
        acc = madd(acc, x[k + 1], packed[qlm_bgemm_packed_at(kpack, k + 1, j)]);
        acc = madd(acc, x[k], packed[qlm_bgemm_packed_at(kpack, k, j)]);
      }
      Y[i * ldy + j] = alpha * acc;
    }
}

void qlm_bgemm_op_upper_ref(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                            int64_t N, int64_t K) {
  for (int64_t i = i0; i < i1; i++)
    for (int64_t j = i; j < N; j++) {
      float acc = 0.0f;
      for (int64_t k = 0; k < qlm_pad2(K); k += 2) {
        acc = madd(acc, packed[qlm_bgemm_packed_at(kpack, k + 1, i)], packed[qlm_bgemm_packed_at(kpack, k + 1, j)]);
        acc = madd(acc, packed[qlm_bgemm_packed_at(kpack, k, i)], packed[qlm_bgemm_packed_at(kpack, k, j)]);
      }
      Y[i * ldy + j] = acc;
    }
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Groups outer, rows inner: a tile column's packed B (og·16·K bf16, 8 KiB at og = 4, K = 64)
 * stays in L1 while every row passes. */
void qlm_bgemm_op_tiles(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed,
                        int64_t kpack, float *Y, int64_t ldy, int64_t M, int64_t N, int64_t K, float alpha) {
  int64_t kp = qlm_pad2(K), gs = 16 * qlm_pad2(kpack), ng = (N + 15) / 16;
  for (int64_t g0 = 0; g0 < ng; g0 += og) {
    int rg = (int)min64(og, ng - g0), last = (int)min64(16, N - (g0 + rg - 1) * 16);
    for (int64_t i = 0; i < M; i += om) {
      const qlm_bf16 *xr[QLM_BGEMM_MAX_OM];
      for (int r = 0; r < om && i + r < M; r++) xr[r] = X + (i + r) * ldx;
      tile((int)min64(om, M - i), rg, xr, 2, packed + g0 * gs, gs, kp, Y + i * ldy + g0 * 16, ldy, last, alpha);
    }
  }
}

/* Rows [r0, r1) as X read out of B's lanes, times the tile column's groups [g0, g0 + rg). */
static void upper_rows(qlm_bgemm_tile_fn *tile, int om, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                       int64_t r0, int64_t r1, int64_t g0, int rg, int last, int64_t kp) {
  int64_t gs = 16 * qlm_pad2(kpack);
  for (int64_t i = r0; i < r1; i += om) {
    const qlm_bf16 *xr[QLM_BGEMM_MAX_OM];
    for (int r = 0; r < om && i + r < r1; r++) xr[r] = packed + qlm_bgemm_packed_at(kpack, 0, i + r);
    tile((int)min64(om, r1 - i), rg, xr, 32, packed + g0 * gs, gs, kp, Y + i * ldy + g0 * 16, ldy, last, 1.0f);
  }
}

/* From the group holding row i0 on; in each tile column the rows above it whole, then the rows of
 * each of its groups times that group and those right of it (a whole tile column for every row
 * up to its last column computed 10.9% more products than the upper triangle of a 576-column
 * Hessian in 128-row tiles, this 2.6%). */
void qlm_bgemm_op_upper_tiles(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *packed, int64_t kpack, float *Y,
                              int64_t ldy, int64_t i0, int64_t i1, int64_t N, int64_t K) {
  int64_t kp = qlm_pad2(K), ng = (N + 15) / 16;
  for (int64_t g0 = i0 / 16; g0 < ng; g0 += og) {
    int rg = (int)min64(og, ng - g0), last = (int)min64(16, N - (g0 + rg - 1) * 16);
    upper_rows(tile, om, packed, kpack, Y, ldy, i0, min64(i1, g0 * 16), g0, rg, last, kp);
    for (int64_t g = g0; g < g0 + rg; g++)
      upper_rows(tile, om, packed, kpack, Y, ldy, max64(i0, g * 16), min64(i1, (g + 1) * 16), g, (int)(g0 + rg - g),
                 last, kp);
  }
}

/* MXCSR's DAZ (bit 6) and FTZ (bit 15): VDPBF16PS's treatment of subnormals for SSE/AVX FMAs. */
#define MXCSR_DAZ_FTZ 0x8040u

void qlm_bgemm_op_emulated(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *X, int64_t ldx,
                           const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t M, int64_t N, int64_t K,
                           float alpha) {
  unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | MXCSR_DAZ_FTZ);
  qlm_bgemm_op_tiles(tile, om, og, X, ldx, packed, kpack, Y, ldy, M, N, K, 1.0f);
  _mm_setcsr(csr);
  if (alpha != 1.0f) /* the reference's alpha·acc, rounded once, without flushing */
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) Y[i * ldy + j] = alpha * Y[i * ldy + j];
}

void qlm_bgemm_op_upper_emulated(qlm_bgemm_tile_fn *tile, int om, int og, const qlm_bf16 *packed, int64_t kpack,
                                 float *Y, int64_t ldy, int64_t i0, int64_t i1, int64_t N, int64_t K) {
  unsigned csr = _mm_getcsr();
  _mm_setcsr(csr | MXCSR_DAZ_FTZ);
  qlm_bgemm_op_upper_tiles(tile, om, og, packed, kpack, Y, ldy, i0, i1, N, K);
  _mm_setcsr(csr);
}

void qlm_bgemm_op_upper(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                        int64_t N, int64_t K) {
  qlm_simd_level l = qlm_cpu_simd_level();
  if (qlm_bgemm_fast()) qlm_bgemm_op_upper_avx512bf16(packed, kpack, Y, ldy, i0, i1, N, K);
  else if (l >= QLM_SIMD_AVX512) qlm_bgemm_op_upper_avx512(packed, kpack, Y, ldy, i0, i1, N, K);
  else if (l >= QLM_SIMD_AVX2) qlm_bgemm_op_upper_avx2(packed, kpack, Y, ldy, i0, i1, N, K);
  else qlm_bgemm_op_upper_ref(packed, kpack, Y, ldy, i0, i1, N, K);
}

void qlm_bgemm_op(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                  int64_t M, int64_t N, int64_t K, float alpha) {
  qlm_simd_level l = qlm_cpu_simd_level();
  if (qlm_bgemm_fast()) qlm_bgemm_op_avx512bf16(X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
  else if (l >= QLM_SIMD_AVX512) qlm_bgemm_op_avx512(X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
  else if (l >= QLM_SIMD_AVX2) qlm_bgemm_op_avx2(X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
  else qlm_bgemm_op_ref(X, ldx, packed, kpack, Y, ldy, M, N, K, alpha);
}
