/* x16.h — the load-time 16-row interleaved layouts (q4_0x16.h, q4_1x16.h, q5_0x16.h, q4_kx16.h)
 * behind one table, for the loader (which makes them) and matmul (which reads them). */
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

/* Whether the x16 kernels run here (AVX-512 with VNNI, at `level` capped by the CPU). */
int qlm_x16_supported(qlm_simd_level level);

/* The kind for weights of `type` with `cols` columns when the CPU (capped at `level`) runs its
 * kernel (AVX-512 VNNI) and the columns are whole blocks; NULL otherwise. */
const qlm_x16_kind *qlm_x16_for(int type, int64_t cols, qlm_simd_level level);

/* The packing the 32-weight-block layouts share (q4_0x16.h, q4_1x16.h, q5_0x16.h): per 16-row
 * group and block (xblk bytes), row i's 16 nibble bytes (at byte qs of its file block of wblk
 * bytes) as dword i of the four 64-byte registers at 64j, then the row's other fields, which
 * `fields` writes (blk: the row's file block, NULL for a padding row, whose fields are zero). */
typedef void (*qlm_x16_fields_fn)(const uint8_t *blk, uint8_t *ob, int i);
/* Bytes of such a layout: whole 16-row groups of cols / 32 blocks of xblk bytes (0: cols not
 * whole blocks, or overflow). */
size_t qlm_x16_blocks_bytes(int64_t rows, int64_t cols, size_t xblk);
void qlm_x16_pack_blocks(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst,
                         size_t wblk, int qs, size_t xblk, qlm_x16_fields_fn fields);
/* Their 40-byte activation blocks: the row quantized to Q8_0 (q8_1 = 0) or Q8_1 (1), then per
 * block int8 q[32], float d (the half, widened), and int32 -offset * sum(q) (Q8_0) or float s
 * (Q8_1's half s, widened). */
void qlm_x16_quantize_blocks(const float *x, int64_t cols, void *dst, qlm_simd_level level, int q8_1, int offset);
#define QLM_X16_ABLK32 40

/* The scalar reference kernels' loop: Y[t * ldy + 16 g + i] for the existing rows of groups
 * [g0, g1) = dot(group g's blocks (xblk bytes each), row i, activation row t's blocks (ablk each)). */
typedef float (*qlm_x16_row_dot_fn)(const uint8_t *wg, const uint8_t *a, int64_t nb, int i);
void qlm_x16_scalar_drive(qlm_x16_row_dot_fn dot, size_t xblk, size_t ablk, const void *wx, int64_t nb, int64_t rows,
                          int64_t g0, int64_t g1, const void *act, int64_t T, float *Y, int64_t ldy);

/* The loop both AVX-512 kernels share: groups are taken a batch at a time (about 256 KiB of
 * weights, kept in L2), and every 8 activation rows pass over the whole batch, so activations are
 * read once per batch, not once per group (at 128 rows x 11008 columns they are 1.8 MB, more than
 * L2).  pass(group, nb, act rows, stride, na <= 8, y, ldy, mask of the group's existing rows). */
typedef void (*qlm_x16_pass_fn)(const uint8_t *wg, int64_t nb, const uint8_t *a, size_t astride, int64_t na, float *y,
                                int64_t ldy, uint16_t mask);
void qlm_x16_drive(qlm_x16_pass_fn pass, size_t wblk, size_t ablk, const void *wx, int64_t nb, int64_t rows, int64_t g0,
                   int64_t g1, const void *act, int64_t T, float *Y, int64_t ldy);
#define QLM_X16_NA_MAX 8

/* The pass function of a kernel file: its group_pass(..., NA, ...) for a compile-time NA. */
#define QLM_X16_PASS(name, group_pass)                                                                                 \
  static void name(const uint8_t *wg, int64_t nb, const uint8_t *a, size_t astride, int64_t na, float *y, int64_t ldy, \
                   uint16_t m) {                                                                                       \
    switch (na) {                                                                                                      \
    case 1: group_pass(wg, nb, a, astride, 1, y, ldy, m); break;                                                       \
    case 2: group_pass(wg, nb, a, astride, 2, y, ldy, m); break;                                                       \
    case 3: group_pass(wg, nb, a, astride, 3, y, ldy, m); break;                                                       \
    case 4: group_pass(wg, nb, a, astride, 4, y, ldy, m); break;                                                       \
    case 5: group_pass(wg, nb, a, astride, 5, y, ldy, m); break;                                                       \
    case 6: group_pass(wg, nb, a, astride, 6, y, ldy, m); break;                                                       \
    case 7: group_pass(wg, nb, a, astride, 7, y, ldy, m); break;                                                       \
    default: group_pass(wg, nb, a, astride, 8, y, ldy, m); break;                                                      \
    }                                                                                                                  \
  }

#endif
