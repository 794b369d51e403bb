/* matmul.c — qlm_matmul: Y[T x rows] = X[T x cols] * W^T, dispatched on the weight's type,
 * the batch size and the SIMD level.
 *
 *   f32, T == 1 (decode): our GEMV kernels (scalar / AVX2 / AVX-512), W's rows split over the pool.
 *   f32, T  > 1 (prefill): OpenBLAS sgemm, again one slice of W's rows per pool thread.
 *   other types: each row is dequantized in chunks into a stack buffer (traits->to_float) and
 *     dotted with every X row — correct for any type with a dequantizer, but not fast.
 *
 * Threading: the pool is the only source of parallelism.  OpenBLAS is set to 1 thread once and
 * called concurrently from the pool threads on disjoint slices of W (and of Y's columns), so BLAS
 * threads never compete with our spinning workers, and prefill and decode scale the same way. */
#include "kernels/matmul.h"

#include <cblas.h>
#include <pthread.h>
#include <string.h>

#include "kernels/gemv.h"
#include "kernels/types.h"

/* Below this many multiply-adds a dispatch to the pool costs more than it saves. */
#define MIN_PARALLEL_WORK (64 * 1024)
/* Rows of W are handed out in slices that are multiples of this (whole 4-row kernel steps,
 * and whole 64-byte lines of Y, so threads do not share cache lines of the output). */
#define ROW_GRAIN 16
/* Dequantization chunk of the generic path: 4096 floats on the stack per thread. */
#define DQ_CHUNK 4096

void qlm_gemv_f32_scalar(const float *W, int64_t ldw, const float *x, float *y, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; r++) y[r] = qlm_dot_f32_scalar(W + r * ldw, x, cols);
}

float qlm_dot_f32_scalar(const float *a, const float *b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

float qlm_dotd_f32_scalar(const float *a, const float *b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return (float)s;
}

static qlm_simd_level clamp_level(qlm_simd_level level) {
  qlm_simd_level hw = qlm_cpu_detect();
  return level > hw ? hw : level;
}

qlm_gemv_f32_fn qlm_gemv_f32_for(qlm_simd_level level) {
  switch (clamp_level(level)) {
  case QLM_SIMD_AVX512: return qlm_gemv_f32_avx512;
  case QLM_SIMD_AVX2: return qlm_gemv_f32_avx2;
  default: return qlm_gemv_f32_scalar;
  }
}

qlm_dot_f32_fn qlm_dot_f32_for(qlm_simd_level level) {
  switch (clamp_level(level)) {
  case QLM_SIMD_AVX512: return qlm_dot_f32_avx512;
  case QLM_SIMD_AVX2: return qlm_dot_f32_avx2;
  default: return qlm_dot_f32_scalar;
  }
}

qlm_dotd_f32_fn qlm_dotd_f32_for(qlm_simd_level level) {
  switch (clamp_level(level)) {
  case QLM_SIMD_AVX512: return qlm_dotd_f32_avx512;
  case QLM_SIMD_AVX2: return qlm_dotd_f32_avx2;
  default: return qlm_dotd_f32_scalar;
  }
}

static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
static void blas_init(void) { openblas_set_num_threads(1); }

typedef struct mm_task {
  const qlm_mat *W;
  const float *X;
  int64_t T;
  float *Y;
  int use_blas;
  qlm_gemv_f32_fn gemv;
  qlm_dot_f32_fn dot;
  const qlm_type_traits *tr; /* generic path */
  int64_t chunk;             /* generic path: floats per dequantized chunk (whole blocks) */
} mm_task;

/* Thread ith's rows [*r0, *r1) of W. */
static void split_rows(int64_t rows, int ith, int nth, int64_t *r0, int64_t *r1) {
  int64_t nb = (rows + ROW_GRAIN - 1) / ROW_GRAIN;
  int64_t b0 = nb * ith / nth, b1 = nb * (ith + 1) / nth;
  *r0 = b0 * ROW_GRAIN < rows ? b0 * ROW_GRAIN : rows;
  *r1 = b1 * ROW_GRAIN < rows ? b1 * ROW_GRAIN : rows;
}

static void task_f32(void *arg, int ith, int nth) {
  const mm_task *t = arg;
  const qlm_mat *W = t->W;
  int64_t r0, r1;
  split_rows(W->rows, ith, nth, &r0, &r1);
  if (r0 >= r1) return;
  int64_t ldw = (int64_t)(W->row_bytes / sizeof(float));
  const float *w = (const float *)W->data + r0 * ldw;
  if (t->T == 1) {
    t->gemv(w, ldw, t->X, t->Y + r0, r1 - r0, W->cols);
  } else if (t->use_blas) {
    /* Y[:, r0:r1] = X * W[r0:r1]^T, written in place with ldc = rows */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->T, (int)(r1 - r0), (int)W->cols, 1.0f, t->X,
                (int)W->cols, w, (int)ldw, 0.0f, t->Y + r0, (int)W->rows);
  } else {
    for (int64_t i = 0; i < t->T; i++) t->gemv(w, ldw, t->X + i * W->cols, t->Y + i * W->rows + r0, r1 - r0, W->cols);
  }
}

static void task_generic(void *arg, int ith, int nth) {
  const mm_task *t = arg;
  const qlm_mat *W = t->W;
  float buf[DQ_CHUNK];
  int64_t r0, r1;
  split_rows(W->rows, ith, nth, &r0, &r1);
  size_t chunk_bytes = (size_t)(t->chunk / t->tr->block_size) * t->tr->type_size;
  for (int64_t r = r0; r < r1; r++) {
    const unsigned char *row = (const unsigned char *)W->data + (size_t)r * W->row_bytes;
    for (int64_t i = 0; i < t->T; i++) t->Y[i * W->rows + r] = 0.0f;
    for (int64_t c0 = 0, k = 0; c0 < W->cols; c0 += t->chunk, k++) {
      int64_t n = W->cols - c0 < t->chunk ? W->cols - c0 : t->chunk;
      t->tr->to_float(row + (size_t)k * chunk_bytes, buf, n);
      for (int64_t i = 0; i < t->T; i++) t->Y[i * W->rows + r] += t->dot(buf, t->X + i * W->cols + c0, n);
    }
  }
}

void qlm_matmul_ex(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_simd_level level,
                   int use_blas) {
  if (T <= 0 || W->rows <= 0) return;
  if (W->cols <= 0) {
    memset(Y, 0, (size_t)T * (size_t)W->rows * sizeof *Y);
    return;
  }
  mm_task t = {.W = W, .X = X, .T = T, .Y = Y, .use_blas = use_blas,
               .gemv = qlm_gemv_f32_for(level), .dot = qlm_dot_f32_for(level)};
  qlm_task_fn fn = task_f32;
  if (W->type != QLM_TYPE_F32) {
    t.tr = qlm_type_traits_of(W->type);
    /* The model only builds matrices of types with a dequantizer whose rows are whole blocks;
     * anything else is a caller bug, and we refuse to read past the row. */
    if (!t.tr || !t.tr->to_float || t.tr->block_size < 1 || t.tr->block_size > DQ_CHUNK ||
        W->cols % t.tr->block_size != 0) {
      memset(Y, 0, (size_t)T * (size_t)W->rows * sizeof *Y);
      return;
    }
    t.chunk = DQ_CHUNK / t.tr->block_size * t.tr->block_size;
    fn = task_generic;
  } else if (T > 1 && use_blas) {
    pthread_once(&g_blas_once, blas_init);
  }
  double work = (double)W->rows * (double)W->cols * (double)T;
  if (work < MIN_PARALLEL_WORK) pool = NULL;
  qlm_pool_run(pool, fn, &t);
}

void qlm_matmul(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool) {
  qlm_matmul_ex(W, X, T, Y, pool, qlm_cpu_simd_level(), 1);
}
