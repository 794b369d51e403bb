/* matmul.h — the matrix products of the model, dispatched on the weight's storage type.
 *
 * A weight matrix W has `rows` outputs and `cols` inputs and is stored row-major as
 * `rows` rows of qlm_type_row_bytes(type, cols) bytes.  Y = X W^T for T activation rows:
 *   X: [T x cols] floats, Y: [T x rows] floats.
 * T == 1 (decode) runs our own SIMD matrix-vector kernels; T > 1 (prefill) may use BLAS for f32. */
#ifndef QLM_MATMUL_H
#define QLM_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/bgemm.h"
#include "kernels/threadpool.h"

/* Counters of LLM.int8() outlier decomposition, summed over calls (updated atomically). */
typedef struct qlm_outlier_stats {
  _Atomic uint64_t columns;        /* activation columns seen (cols per call) */
  _Atomic uint64_t outlier_columns;/* of those, columns with some |x| >= threshold */
  _Atomic uint64_t calls;          /* matmul calls */
} qlm_outlier_stats;

typedef struct qlm_mat {
  int type;          /* qlm_type */
  int64_t rows;      /* output features */
  int64_t cols;      /* input features */
  const void *data;  /* rows * row_bytes */
  size_t row_bytes;  /* bytes per row */
  /* LLM.int8() weights (QLM_FAMILY_INT8_ROW) only: activation columns with any |x| >= this go
   * through the float path (0 or less: none do); counters may be NULL. */
  float outlier_threshold;
  qlm_outlier_stats *outlier_stats;
  /* Q4_0, Q4_1, Q5_0 or Q4_K, or NULL: the same weights with 16 rows interleaved (kernels/x16.h), made at
   * load when the CPU has AVX-512 VNNI; then every matmul of W reads this instead of data (which
   * stays valid, for everything else that reads the weights). */
  const void *x16;
} qlm_mat;

/* Y[T x rows] = X[T x cols] * W^T.  Work is split over the pool's threads by rows of W. */
void qlm_matmul(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool);

/* Y[i] = X W[i]^T for n <= QLM_MATMUL_GROUP_MAX matrices of one input (q/k/v, gate/up): the same
 * results as n qlm_matmul calls.  A decode step (T == 1) with matrices of one type and width
 * quantizes X once and splits all their rows over the pool in one dispatch (one wait for the
 * threads instead of n: at SmolLM2's size each wait is a few percent of a token); anything else
 * is n qlm_matmul calls. */
#define QLM_MATMUL_GROUP_MAX 4
void qlm_matmul_group(const qlm_mat *const W[], float *const Y[], int n, const float *X, int64_t T, qlm_pool *pool);

/* Y[i] = X W[i]^T in bf16 with f32 sums (kernels/bgemm.h: X and the weights rounded to bf16 —
 * quantized weights dequantized first), for the calibration forward's --calib-dtype bf16; all
 * W[i] of one width.  The same bits on any CPU (without AVX-512 BF16: bgemm.h's scalar
 * reference, ~50x slower).  Returns 0, computing nothing, where it does not apply (LLM.int8()
 * weights, a type without a dequantizer, out of memory): the caller then takes qlm_matmul. */
typedef struct qlm_bf16_cache qlm_bf16_cache;
int qlm_matmul_bf16_group(const qlm_mat *const W[], float *const Y[], int n, const float *X, int64_t T,
                          qlm_pool *pool, qlm_bf16_cache *cache);
int qlm_matmul_bf16(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_bf16_cache *cache);

/* bf16 copies of the last QLM_BF16_CACHE_N matrices qlm_matmul_bf16 multiplied (may be NULL: each
 * call converts W again, a tile at a time).  Converting a quantized weight costs about as much as
 * a few hundred bf16 multiply-adds, so with T = 512 rows per call it was ~40% of the calibration
 * forward; the calibration pass runs every window through the same matrices.  An entry is found
 * by W's data pointer and shape: whoever changes a matrix's weights in place, or frees them,
 * must clear the cache first (the calibration pass does after each quantized slot).  Same bits
 * with and without. */
#define QLM_BF16_CACHE_N 8
typedef struct qlm_bf16_weights {
  const void *data;   /* the matrix's qlm_mat.data, type and shape: the key */
  int type;
  int64_t rows, cols;
  qlm_bf16 *w;        /* W's rows packed as the columns of kernels/bgemm.h's B; NULL: empty entry */
} qlm_bf16_weights;
struct qlm_bf16_cache {
  qlm_bf16_weights e[QLM_BF16_CACHE_N];
  int next;           /* the entry to replace next (round robin) */
};
void qlm_bf16_cache_clear(qlm_bf16_cache *c);

/* Keeps OpenBLAS to the calling thread (once per process): qlm splits the work over its own pool
 * and calls BLAS from inside it, so BLAS's own threads would only oversubscribe the cores. */
void qlm_blas_single_threaded(void);

#endif
