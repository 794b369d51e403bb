/* gemv.h — the per-ISA f32 kernels behind qlm_matmul (internal to kernels/ and tests).
 *
 * gemv: y[r] = sum_c W[r*ldw + c] * x[c] for r in [0, rows), any rows/cols >= 0.
 * dot:  sum_i a[i] * b[i].
 * The scalar versions are the reference (one accumulator, in index order); the SIMD versions
 * sum in a different order, so they agree with it within float rounding, not bit for bit. */
#ifndef QLM_GEMV_H
#define QLM_GEMV_H

#include <stdint.h>

#include "kernels/cpu.h"
#include "kernels/matmul.h"

typedef void (*qlm_gemv_f32_fn)(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols);
typedef float (*qlm_dot_f32_fn)(const float *a, const float *b, int64_t n);

void qlm_gemv_f32_scalar(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols);
float qlm_dot_f32_scalar(const float *a, const float *b, int64_t n);
void qlm_gemv_f32_avx2(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols);
float qlm_dot_f32_avx2(const float *a, const float *b, int64_t n);
void qlm_gemv_f32_avx512(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols);
float qlm_dot_f32_avx512(const float *a, const float *b, int64_t n);

/* Dot product accumulated in double, rounded once to float.  Used for attention scores: the
 * result is then (almost always) independent of the element order, so a model whose q/k rows
 * are permuted per head (NEOX vs interleaved RoPE layouts) gives bit-identical scores. */
typedef float (*qlm_dotd_f32_fn)(const float *a, const float *b, int64_t n);
float qlm_dotd_f32_scalar(const float *a, const float *b, int64_t n);
float qlm_dotd_f32_avx2(const float *a, const float *b, int64_t n);
float qlm_dotd_f32_avx512(const float *a, const float *b, int64_t n);
qlm_dotd_f32_fn qlm_dotd_f32_for(qlm_simd_level level);

/* The kernels of a level (clamped to what this CPU supports). */
qlm_gemv_f32_fn qlm_gemv_f32_for(qlm_simd_level level);
qlm_dot_f32_fn qlm_dot_f32_for(qlm_simd_level level);

/* qlm_matmul with an explicit SIMD level (tests compare levels; qlm_matmul uses
 * qlm_cpu_simd_level()).  use_blas = 0 forces T > 1 f32 products through T gemv calls. */
void qlm_matmul_ex(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_simd_level level,
                   int use_blas);

#endif
