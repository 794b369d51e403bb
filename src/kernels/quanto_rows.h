/* quanto_rows.h — optimum-quanto's per-row weight quantization steps (quant/quanto.c), one row at
 * a time, with a scalar reference and an AVX-512 version picked at run time.
 *
 * Each function takes one row of f32 weights w[0..n), rounds it to the emulated dtype (what quanto
 * sees in a model loaded in f16 / bf16) and computes the scale(s) and codes exactly as quant/quanto.c
 * documents: every +, -, / rounded to the dtype (rd), round half to even, clamped.
 *
 *   q8      qint8 (AbsmaxOptimizer, per row):  s = rd(max|w| / 127),  u = clamp(round(rd(w / s)), -128, 127) + 128;
 *           an all-zero row gives s = 0 and u = 128.
 *   f8      qfloat8 (qmax 448):  s = rd(max|w| / 448),  c = e4m3fn(clamp(rd(w / s), +-448));  s = 0: codes 0.
 *   affine  qint4/qint2 per group of g (MaxOptimizer):  s = rd(rd(max - min) / (2^b - 1)),  shift = -min,
 *           u = clamp(round(rd(rd(w + shift) / s)), 0, 2^b - 1); with int_zero (AffineOptimizer(zeropoint))
 *           z = clamp(round(rd(shift / s)), 0, 2^b - 1), u = clamp(round(rd(w / s)) + z, 0, 2^b - 1).
 *           A constant group's range is widened to include 0; an all-zero group gets s = shift = 0, u = 0.
 *
 * Return: true, or false when some weight is not finite or leaves the dtype's range once rounded (the
 * outputs are then undefined; the caller looks up which weight, for its message).  `t` is n floats of
 * scratch.  The SIMD versions give the same bytes as the scalar one for every input (test_quanto);
 * they are used for dtype f16 and fall back to the scalar code for bf16 and f32. */
#ifndef QLM_QUANTO_ROWS_H
#define QLM_QUANTO_ROWS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/cpu.h"

/* The dtype quanto computes in (quant/quanto.h uses the same values). */
enum { QLM_QDTYPE_F16 = 1, QLM_QDTYPE_BF16 = 2, QLM_QDTYPE_F32 = 3 };

typedef struct qlm_quanto_rows {
  bool (*q8)(const float *w, int n, int dtype, float *t, float *s, uint8_t *u);
  bool (*f8)(const float *w, int n, int dtype, float *t, float *s, uint8_t *c);
  /* s, shift, z: [n / g] per group */
  bool (*affine)(const float *w, int n, int g, int bits, bool int_zero, int dtype, float *t, float *s, float *shift,
                 int *z, uint8_t *u);
  /* affine without int_zero, stored as qlm's HQQ blocks of `type` (kernels/hqq.h: half s, half
   * z = shift / s, the codes), block k of the row at blk + k * qlm_hqq_block_bytes(type); s and shift
   * as affine's, u and z scratch.  Returns -2 done, -1 a weight refused (as affine's false), or the
   * first group k whose shift / s is beyond the half range (quant/quanto.c's message); the blocks
   * are then undefined. */
  int (*affine_hqq)(const float *w, int n, int g, int bits, int dtype, int type, float *t, float *s, float *shift,
                    int *z, uint8_t *u, uint8_t *blk);
} qlm_quanto_rows;

const qlm_quanto_rows *qlm_quanto_rows_for(qlm_simd_level level); /* one level (tests) */
const qlm_quanto_rows *qlm_quanto_rows_get(void);                 /* at qlm_cpu_simd_level() */

/* Shared by the levels. */
float qlm_quanto_rd(float x, int dtype);                     /* x rounded to the dtype */
float qlm_quanto_round_clamp(float v, float lo, float hi);   /* round half even of clamp(v, lo, hi); NaN: lo */
void qlm_quanto_affine_params(float lo, float hi, int bits, bool int_zero, int dtype, float *s, float *shift, int *z);
/* affine_hqq's blocks from affine's results (every level's fallback). */
int qlm_quanto_hqq_blocks(int type, int n, int g, const float *s, const float *shift, const uint8_t *u, uint8_t *blk);

const qlm_quanto_rows *qlm_quanto_rows_scalar(void); /* the reference (the SIMD versions' other dtypes) */
const qlm_quanto_rows *qlm_quanto_rows_avx512(void);
/* q = a / s, the AVX-512 kernels' division of halves a by a half s > 0 (a product and one FMA
 * correction, not vdivps): tests check it against IEEE division for every pair of halves. */
void qlm_quanto_div_halves_avx512(const float *a, int n, float s, float *q);

#endif
