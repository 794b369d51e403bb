/* x16.h — the load-time 16-row interleaved layouts (q4_0x16.h, q4_kx16.h) behind one table, for
 * the loader (which makes them) and matmul (which reads them). */
#ifndef QLM_X16_H
#define QLM_X16_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/cpu.h"

typedef struct qlm_x16_kind {
  int type;            /* the weight type it interleaves */
  int64_t blk_cols;    /* columns per block (32) or super-block (256) */
  size_t wblk;         /* bytes of one block of a 16-row group */
  size_t ablk;         /* bytes of one activation block */
  size_t (*bytes)(int64_t rows, int64_t cols); /* of the interleaved matrix (0: cols not whole blocks, overflow) */
  void (*pack)(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);
  void (*quantize_act)(const float *x, int64_t cols, void *dst, qlm_simd_level level);
  /* Y[t * ldy + r] for the rows of groups [g0, g1); nb blocks per row */
  void (*gemm)(const void *wx, int64_t nb, int64_t rows, int64_t g0, int64_t g1, const void *act, int64_t T, float *Y,
               int64_t ldy);
} qlm_x16_kind;

/* The kind for weights of `type` with `cols` columns when the CPU (capped at `level`) runs its
 * kernel (AVX-512 VNNI) and the columns are whole blocks; NULL otherwise. */
const qlm_x16_kind *qlm_x16_for(int type, int64_t cols, qlm_simd_level level);

#endif
