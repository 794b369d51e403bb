/* matmul.c — qlm_matmul: Y[T x rows] = X[T x cols] * W^T, dispatched on the weight's type,
 * the batch size and the SIMD level.
 *
 *   f32, T == 1 (decode): our GEMV kernels (scalar / AVX2 / AVX-512), W's rows split over the pool.
 *   f32, T  > 1 (prefill): one slice of W's rows per pool thread, multiplied by our AVX-512 tile
 *     kernel (kernels/sgemm.h) up to OWN_SGEMM_MAX_T rows of X, by OpenBLAS sgemm beyond that or
 *     without AVX-512 (QLM_SGEMM=0: always OpenBLAS, to compare).  Our kernel's outputs have the
 *     AVX-512 decode GEMV's bits, whatever T.
 *   types with a vec_dot (Q4_0..Q8_0, k-quants; kernels/qdot.h): the T rows of X are quantized
 *     once per call to the type's vec_dot_type (into a per-thread scratch that only grows), then
 *     every thread dots its slice of W's rows with all T quantized rows, straight from the
 *     weight blocks — nothing is dequantized.
 *     Prefill (T >= GEMM_Q_MIN_T) with Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights (Q4_K/Q5_K: rows a
 *     multiple of 256) with AVX-512 VNNI (or AVX2, all but Q8_0) runs the int8 GEMM of kernels/gemm_q.c
 *     (activations quantized once, tiles of 8 weight rows x 16 activation rows; ~1.5x the
 *     dequantize + sgemm path per matrix, bench/gemm_q).
 *     Other prefill (T >= DQ_GEMM_MIN_T) dequantizes tiles of W's rows per thread and uses
 *     sgemm, as for f32: at large T the weight conversion is amortized and BLAS is much faster.
 *   Q4_0, Q4_1, Q5_0 and Q4_K with the 16-row interleaved copy the loader makes on AVX-512 VNNI CPUs (W->x16,
 *     kernels/x16.h): one kernel for decode and prefill at every T, groups of 16 rows split
 *     over the pool; each output is the same whatever T, the thread count or the grouping.
 *   LLM.int8() weights (QLM_FAMILY_INT8_ROW): bitsandbytes' mixed int8 product at every T (see
 *     matmul_int8row below); never the dequantized sgemm, so prefill gives bnb's numbers too.
 *   other types: each row is dequantized in chunks into a stack buffer (traits->to_float) and
 *     dotted with every X row — correct for any type with a dequantizer, but not fast.
 *
 * Threading: the pool is the only source of parallelism.  OpenBLAS is set to 1 thread once and
 * called concurrently from the pool threads on disjoint slices of W (and of Y's columns), so BLAS
 * threads never compete with our spinning workers, and prefill and decode scale the same way. */
#include "kernels/matmul.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "kernels/bgemm.h"
#include "kernels/gemm_q.h"
#include "kernels/gemv.h"
#include "kernels/int8row.h"
#include "kernels/sgemm.h"
#include "kernels/x16.h"
#include "kernels/qdot.h"
#include "kernels/types.h"

/* Below this many multiply-adds a dispatch to the pool costs more than it saves. */
#define MIN_PARALLEL_WORK (64 * 1024)
/* Rows of W are handed out in slices that are multiples of this (whole 4-row kernel steps,
 * and whole 64-byte lines of Y, so threads do not share cache lines of the output). */
#define ROW_GRAIN 16
/* Dequantization chunk of the generic path: 4096 floats on the stack per thread. */
#define DQ_CHUNK 4096
/* Quantized path: activation rows are visited in tiles of this many, so a tile of quantized
 * activations stays in L1/L2 while a thread streams its weight rows past it. */
#define ACT_TILE 16
/* Quantized W with at least this many activation rows goes through dequantized tiles and BLAS. */
#define DQ_GEMM_MIN_T 32
/* Quantized W with at least this many activation rows, of a type kernels/gemm_q.c covers with a
 * SIMD tile kernel, goes through the blocked int8 GEMM instead (QLM_GEMM_Q=0 turns it off, to
 * compare the two paths). */
#define GEMM_Q_MIN_T 16
/* f32 prefill with at most this many activation rows takes kernels/sgemm.h's AVX-512 kernel:
 * 1.1-1.2x OpenBLAS 0.3.21's sgemm at T = 16..256 on the LLaMA-7B shapes, 0.9-1.0x at T = 512
 * (bench/sgemm, one Zen 4 core), where OpenBLAS's packed panels pay off. */
#define OWN_SGEMM_MAX_T 256
/* Floats per thread in a dequantized tile of W rows (256 KiB: stays in L2 during the sgemm). */
#define DQ_TILE_FLOATS (64 * 1024)

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
/* Read at every prefill-sized call (negligible next to the product) so tests can switch it. */
static int gemm_q_on(void) {
  const char *e = getenv("QLM_GEMM_Q");
  return !(e && strcmp(e, "0") == 0);
}
static int own_sgemm_on(void) {
  const char *e = getenv("QLM_SGEMM");
  return !(e && strcmp(e, "0") == 0);
}
static void blas_init(void) { openblas_set_num_threads(1); }
void qlm_blas_single_threaded(void) { pthread_once(&g_blas_once, blas_init); }

typedef struct mm_task {
  const qlm_mat *W;
  const float *X;
  int64_t T;
  float *Y;
  int use_blas;
  int own_sgemm;             /* f32 prefill: kernels/sgemm.h's kernel instead of OpenBLAS */
  qlm_gemv_f32_fn gemv;
  qlm_dot_f32_fn dot;
  const qlm_type_traits *tr; /* generic path */
  int64_t chunk;             /* generic path: floats per dequantized chunk (whole blocks) */
  qlm_vec_dot_fn vec_dot;    /* quantized path (ggml types) */
  qlm_vec_dot_t_fn vec_dot_t;/* quantized path (qlm types: the dot takes the type id) */
  const unsigned char *act;  /* quantized path: T rows of act_row_bytes, X in vec_dot_type */
  size_t act_row_bytes;
  const unsigned char *q4p;  /* Q4_0 + AVX-512 VNNI: T packed activation rows of q4p_row_bytes */
  size_t q4p_row_bytes;
  /* decode (T == 1) with a whole-slice GEMV kernel (Q4_K + AVX-512 VNNI): y[r0..r1) from act */
  void (*gemv_q)(const void *w, size_t row_bytes, int64_t rows, const void *a, int64_t n, float *y);
  /* decode of Q4_1/Q5_0/Q5_1 with AVX-512 VNNI: act's packed form (qdot.h), or NULL */
  const unsigned char *legacy_pack;
  float *dq;                 /* prefill path: dq_rows x cols floats per thread */
  int64_t dq_rows;
} mm_task;

/* Thread ith's rows [*r0, *r1) of W. */
static void split_rows(int64_t rows, int ith, int nth, int64_t *r0, int64_t *r1) {
  int64_t nb = (rows + ROW_GRAIN - 1) / ROW_GRAIN;
  int64_t b0 = nb * ith / nth, b1 = nb * (ith + 1) / nth;
  *r0 = b0 * ROW_GRAIN < rows ? b0 * ROW_GRAIN : rows;
  *r1 = b1 * ROW_GRAIN < rows ? b1 * ROW_GRAIN : rows;
}

/* Rows [r0, r1) of Y for an f32 W. */
static void f32_rows(const mm_task *t, int64_t r0, int64_t r1) {
  const qlm_mat *W = t->W;
  if (r0 >= r1) return;
  int64_t ldw = (int64_t)(W->row_bytes / sizeof(float));
  const float *w = (const float *)W->data + r0 * ldw;
  if (t->T == 1) {
    t->gemv(w, ldw, t->X, t->Y + r0, r1 - r0, W->cols);
  } else if (t->own_sgemm) {
    qlm_sgemm_xwt_avx512(t->X, W->cols, w, ldw, t->Y + r0, W->rows, t->T, r1 - r0, W->cols);
  } else if (t->use_blas) {
    /* Y[:, r0:r1] = X * W[r0:r1]^T, written in place with ldc = rows */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->T, (int)(r1 - r0), (int)W->cols, 1.0f, t->X,
                (int)W->cols, w, (int)ldw, 0.0f, t->Y + r0, (int)W->rows);
  } else {
    for (int64_t i = 0; i < t->T; i++) t->gemv(w, ldw, t->X + i * W->cols, t->Y + i * W->rows + r0, r1 - r0, W->cols);
  }
}

static void task_f32(void *arg, int ith, int nth) {
  const mm_task *t = arg;
  int64_t r0, r1;
  split_rows(t->W->rows, ith, nth, &r0, &r1);
  f32_rows(t, r0, r1);
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
      qlm_dequantize(W->type, row + (size_t)k * chunk_bytes, buf, n);
      for (int64_t i = 0; i < t->T; i++) t->Y[i * W->rows + r] += t->dot(buf, t->X + i * W->cols + c0, n);
    }
  }
}

/* Q4_0 with AVX-512 VNNI: the GEMV on the packed activations (qdot.h), rows streamed in order.
 * One activation row (decode): the thread's whole slice in one call.  Several: slices of
 * Q4P_ROWS rows (4 x 4096 cols = 9 KiB of weights, still in L1) with every activation row. */
#define Q4P_ROWS 4
static void task_quant_q4p(const mm_task *t, int64_t r0, int64_t r1) {
  const qlm_mat *W = t->W;
  const unsigned char *w = (const unsigned char *)W->data;
  int64_t step = t->T == 1 ? r1 - r0 : Q4P_ROWS;
  for (int64_t r = r0; r < r1; r += step) {
    int64_t n = r1 - r < step ? r1 - r : step;
    for (int64_t i = 0; i < t->T; i++)
      qlm_gemv_q4_0_avx512vnni(w + (size_t)r * W->row_bytes, W->row_bytes, n, t->q4p + (size_t)i * t->q4p_row_bytes,
                               W->cols, t->Y + i * W->rows + r);
  }
}

/* Rows [r0, r1) of Y for a quantized W whose activations setup_quant prepared. */
static void quant_rows(const mm_task *t, int64_t r0, int64_t r1) {
  const qlm_mat *W = t->W;
  if (t->q4p) {
    if (r0 < r1) task_quant_q4p(t, r0, r1);
    return;
  }
  if (t->gemv_q) {
    if (r0 < r1) t->gemv_q((const unsigned char *)W->data + (size_t)r0 * W->row_bytes, W->row_bytes, r1 - r0, t->act, W->cols, t->Y + r0);
    return;
  }
  if (t->legacy_pack) {
    if (r0 < r1)
      qlm_gemv_legacy_avx512vnni(W->type, (const unsigned char *)W->data + (size_t)r0 * W->row_bytes, W->row_bytes,
                                 r1 - r0, t->legacy_pack, t->act, W->cols, t->Y + r0);
    return;
  }
  for (int64_t i0 = 0; i0 < t->T; i0 += ACT_TILE) {
    int64_t i1 = i0 + ACT_TILE < t->T ? i0 + ACT_TILE : t->T;
    for (int64_t r = r0; r < r1; r++) {
      const unsigned char *row = (const unsigned char *)W->data + (size_t)r * W->row_bytes;
      if (t->vec_dot_t) {
        for (int64_t i = i0; i < i1; i++)
          t->Y[i * W->rows + r] = t->vec_dot_t(W->type, row, t->act + (size_t)i * t->act_row_bytes, W->cols);
      } else {
        for (int64_t i = i0; i < i1; i++)
          t->Y[i * W->rows + r] = t->vec_dot(row, t->act + (size_t)i * t->act_row_bytes, W->cols);
      }
    }
  }
}

static void task_quant(void *arg, int ith, int nth) {
  const mm_task *t = arg;
  int64_t r0, r1;
  split_rows(t->W->rows, ith, nth, &r0, &r1);
  quant_rows(t, r0, r1);
}

/* Scratch for quantized activations, one per calling thread (matmuls of different states may run
 * concurrently on different threads).  It only grows; a thread's buffer is freed when it exits
 * (the key's destructor) or, for the main thread, stays until the process ends. */
static _Thread_local unsigned char *tl_act;
static _Thread_local size_t tl_act_cap;
static pthread_key_t g_act_key;
static pthread_once_t g_act_once = PTHREAD_ONCE_INIT;
static void act_free(void *p) { free(p); }
static void act_key_init(void) { (void)pthread_key_create(&g_act_key, act_free); }

static unsigned char *act_scratch(size_t n) {
  if (n <= tl_act_cap) return tl_act;
  pthread_once(&g_act_once, act_key_init);
  unsigned char *p = realloc(tl_act, n);
  if (!p) return NULL;
  tl_act = p;
  tl_act_cap = n;
  (void)pthread_setspecific(g_act_key, p);
  return p;
}

static int has_quant_path(const qlm_type_traits *tr, int64_t cols) {
  const qlm_type_traits *at;
  if ((!tr->vec_dot && !tr->vec_dot_t) || !tr->quantize_act || !(at = qlm_type_traits_of(tr->vec_dot_type)))
    return 0;
  return cols % at->block_size == 0;
}

/* Sets up the quantized path (has_quant_path() is true); returns 0 when out of memory: then the
 * generic path still gives the right answer. */
static int setup_quant(mm_task *t, qlm_simd_level level) {
  const qlm_type_traits *tr = t->tr;
  size_t row = qlm_type_row_bytes(tr->vec_dot_type, t->W->cols), total, pack_row = 0, pack_total = 0;
  if (row == 0 || qlm_mul_overflow(row, (size_t)t->T, &total)) return 0;
  /* with VNNI the quantized rows are followed by their packed form (qdot.h): Q4_0 at every T,
   * Q4_1/Q5_0/Q5_1 for decode */
  int vnni = clamp_level(level) == QLM_SIMD_AVX512 && qlm_cpu_has_avx512_vnni();
  int q4p = t->W->type == QLM_TYPE_Q4_0 && vnni;
  int legacy = t->T == 1 && vnni &&
               (t->W->type == QLM_TYPE_Q4_1 || t->W->type == QLM_TYPE_Q5_0 || t->W->type == QLM_TYPE_Q5_1);
  size_t pack_off = (total + 63) & ~(size_t)63;
  if (q4p || legacy) {
    pack_row = q4p ? qlm_q4_0_packed_act_bytes(t->W->cols) : qlm_legacy_packed_act_bytes(t->W->cols);
    if (pack_off < total || qlm_mul_overflow(pack_row, (size_t)t->T, &pack_total) ||
        qlm_add_overflow(pack_off, pack_total, &total))
      return 0;
  }
  unsigned char *buf = act_scratch(total);
  if (!buf) return 0;
  /* the AVX-512 quantizer writes the same bytes as the traits' scalar one, several times faster */
  int q8_1 = tr->quantize_act == qlm_quantize_q8_1;
  int fast = clamp_level(level) == QLM_SIMD_AVX512 && (q8_1 || tr->quantize_act == qlm_quantize_q8_0);
  int fast_k = clamp_level(level) == QLM_SIMD_AVX512 && tr->quantize_act == qlm_quantize_q8_k;
  for (int64_t i = 0; i < t->T; i++) {
    const float *x = t->X + i * t->W->cols;
    if (fast) qlm_gemm_q_quantize_avx512(x, buf + (size_t)i * row, t->W->cols, q8_1);
    else if (fast_k) qlm_quantize_q8_k_avx512(x, buf + (size_t)i * row, t->W->cols);
    else tr->quantize_act(x, buf + (size_t)i * row, t->W->cols);
  }
  if (q4p) {
    for (int64_t i = 0; i < t->T; i++)
      qlm_q4_0_pack_act_avx512(buf + (size_t)i * row, buf + pack_off + (size_t)i * pack_row, t->W->cols / 32);
    t->q4p = buf + pack_off;
    t->q4p_row_bytes = pack_row;
  }
  if (legacy) {
    qlm_legacy_pack_act_avx512(t->W->type, buf, buf + pack_off, t->W->cols);
    t->legacy_pack = buf + pack_off;
  }
  if (tr->vec_dot_t) t->vec_dot_t = qlm_vec_dot_t_for(t->W->type, level);
  else t->vec_dot = qlm_vec_dot_for(t->W->type, level);
  /* the same arithmetic per row as vec_dot (qdot.h), without a call per row */
  if (t->T == 1 && t->vec_dot == qlm_vec_dot_q4_k_avx512vnni) t->gemv_q = qlm_gemv_q4_k_avx512vnni;
  t->act = buf;
  t->act_row_bytes = row;
  return t->vec_dot != NULL || t->vec_dot_t != NULL;
}

/* Prefill with a quantized W: each thread dequantizes its rows of W, a tile at a time, into its
 * part of the scratch and multiplies the tile with all T rows of X by sgemm.  Converting a weight
 * costs about as much as one multiply-add, and here each is reused T >= DQ_GEMM_MIN_T times, so
 * this runs at BLAS speed — far faster than T vec_dots per row — with a small scratch, not a
 * whole f32 copy of the model.  (It is also exact in the weights: no activation rounding.) */
static int setup_dq_gemm(mm_task *t, int nth) {
  int64_t cols = t->W->cols, tile = DQ_TILE_FLOATS / cols / ROW_GRAIN * ROW_GRAIN;
  if (tile < ROW_GRAIN) tile = ROW_GRAIN;
  if (cols > INT32_MAX / 2 || t->W->rows > INT32_MAX / 2 || t->T > INT32_MAX / 2) return 0;
  size_t per, total;
  if (qlm_mul_overflow((size_t)tile, (size_t)cols, &per) || qlm_mul_overflow(per, sizeof(float), &per) ||
      qlm_mul_overflow(per, (size_t)nth, &total))
    return 0;
  unsigned char *buf = act_scratch(total);
  if (!buf) return 0;
  t->dq = (float *)buf;
  t->dq_rows = tile;
  return 1;
}

static void task_dq_gemm(void *arg, int ith, int nth) {
  (void)nth;
  const mm_task *t = arg;
  const qlm_mat *W = t->W;
  int64_t r0, r1, cols = W->cols;
  split_rows(W->rows, ith, nth, &r0, &r1);
  float *buf = t->dq + (size_t)ith * (size_t)t->dq_rows * (size_t)cols;
  for (int64_t r = r0; r < r1; r += t->dq_rows) {
    int64_t n = r1 - r < t->dq_rows ? r1 - r : t->dq_rows;
    for (int64_t k = 0; k < n; k++)
      qlm_dequantize(W->type, (const unsigned char *)W->data + (size_t)(r + k) * W->row_bytes, buf + (size_t)k * (size_t)cols,
                      cols);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->T, (int)n, (int)cols, 1.0f, t->X, (int)cols, buf,
                (int)cols, 0.0f, t->Y + r, (int)W->rows);
  }
}

/* ---- LLM.int8() weights: bitsandbytes' mixed decomposition (int8_vectorwise_quant with a
 * threshold, then int8_mixed_scaled_mm; kernels/int8row.h has the formulas).
 *   1. outlier columns: input features j with |X[t, j]| >= threshold for some token t of this call
 *      (threshold <= 0 or NaN: none);
 *   2. each token row is quantized with its outlier elements left out of the absmax (bnb zeroes
 *      them before taking it), then the codes of every outlier column are zeroed;
 *   3. Y = int8 product (exact int32 sums, one float scale per output) + X[:, outl] W[:, outl]^T
 *      in float, with only those weight columns dequantized (bnb's addmm of subA and subB).
 * This runs at every T: bnb does int8 at every batch size, so prefill is not the dequantized
 * sgemm (which would be exact in the activations and so give other numbers). */
typedef struct i8_task {
  const qlm_mat *W;
  int64_t T;
  float *Y;
  qlm_vec_dot_t_fn dot;
  const unsigned char *act; /* T rows of act_row_bytes: the Q8_ROW activations */
  size_t act_row_bytes;
  const int32_t *ocol;      /* [n_out] outlier columns, ascending */
  int64_t n_out;
  const float *xo;          /* [T x n_out] X at the outlier columns */
  float *wo;                /* [nth x n_out] per-thread dequantized weight columns */
} i8_task;

static void task_int8row(void *arg, int ith, int nth) {
  const i8_task *t = arg;
  const qlm_mat *W = t->W;
  int64_t r0, r1;
  split_rows(W->rows, ith, nth, &r0, &r1);
  float *wo = t->wo ? t->wo + (size_t)ith * (size_t)t->n_out : NULL;
  for (int64_t i0 = 0; i0 < t->T; i0 += ACT_TILE) {
    int64_t i1 = i0 + ACT_TILE < t->T ? i0 + ACT_TILE : t->T;
    for (int64_t r = r0; r < r1; r++) {
      const unsigned char *row = (const unsigned char *)W->data + (size_t)r * W->row_bytes;
      if (t->n_out) { /* bnb's int8_vectorwise_dequant of W[r, outl]: ((float)q * SCB) / 127 */
        float scb;
        memcpy(&scb, row, sizeof scb);
        const int8_t *q = (const int8_t *)(row + QLM_INT8ROW_HEADER);
        for (int64_t j = 0; j < t->n_out; j++) wo[j] = ((float)q[t->ocol[j]] * scb) * QLM_INT8ROW_DEQ;
      }
      for (int64_t i = i0; i < i1; i++) {
        float y = t->dot(W->type, row, t->act + (size_t)i * t->act_row_bytes, W->cols);
        if (t->n_out) {
          const float *x = t->xo + (size_t)i * (size_t)t->n_out;
          float o = 0.0f;
          for (int64_t j = 0; j < t->n_out; j++) o += x[j] * wo[j];
          y += o;
        }
        t->Y[i * W->rows + r] = y;
      }
    }
  }
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Returns 0 when it cannot run (out of memory): qlm_matmul_ex then falls back to the generic
 * dequantizing path (float activations, no int8 rounding of X) where rows are short enough. */
static int matmul_int8row(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool,
                          qlm_simd_level level) {
  const int64_t cols = W->cols;
  size_t arb = qlm_type_row_bytes(qlm_q8row_type(cols), cols);
  if (QLM_TYPE_BLOCK(W->type) != cols || QLM_TYPE_BITS(W->type) != 8 || arb == 0 ||
      W->row_bytes < QLM_INT8ROW_HEADER + (size_t)cols) { /* not a layout the method writes: caller bug */
    memset(Y, 0, (size_t)T * (size_t)W->rows * sizeof *Y);
    return 1;
  }
  qlm_vec_dot_t_fn dot = qlm_vec_dot_t_for(W->type, level);
  if (!dot) return 0;
  if ((double)W->rows * (double)cols * (double)T < MIN_PARALLEL_WORK) pool = NULL;
  const int nth = qlm_pool_size(pool);
  const float thr = W->outlier_threshold;
  /* scratch: activations | column mask | outlier columns; the float parts follow once n_out is known */
  size_t act_bytes, off_mask, off_ocol, off_float, total;
  if (qlm_mul_overflow(arb, (size_t)T, &act_bytes)) return 0;
  off_mask = align64(act_bytes);
  off_ocol = align64(off_mask + (size_t)cols);
  off_float = align64(off_ocol + (size_t)cols * sizeof(int32_t));
  if (off_mask < act_bytes || off_float < off_ocol) return 0;
  unsigned char *buf = act_scratch(off_float);
  if (!buf) return 0;
  uint8_t *mask = buf + off_mask;
  int32_t *ocol = (int32_t *)(buf + off_ocol);
  int64_t n_out = 0;
  if (thr > 0.0f) {
    memset(mask, 0, (size_t)cols);
    for (int64_t i = 0; i < T; i++)
      for (int64_t j = 0; j < cols; j++) mask[j] |= fabsf(X[i * cols + j]) >= thr;
    for (int64_t j = 0; j < cols; j++)
      if (mask[j]) ocol[n_out++] = (int32_t)j;
  }
  size_t xo_n, wo_n;
  if (qlm_mul_overflow((size_t)n_out, (size_t)T, &xo_n) || qlm_mul_overflow((size_t)n_out, (size_t)nth, &wo_n) ||
      qlm_add_overflow(xo_n, wo_n, &total) || qlm_mul_overflow(total, sizeof(float), &total) ||
      qlm_add_overflow(total, off_float, &total))
    return 0;
  if (!(buf = act_scratch(total))) return 0; /* may move: pointers are taken again below */
  ocol = (int32_t *)(buf + off_ocol);
  float *xo = (float *)(buf + off_float), *wo = xo + xo_n;
  for (int64_t i = 0; i < T; i++) {
    unsigned char *a = buf + (size_t)i * arb;
    qlm_q8_row_quantize(X + i * cols, a, cols, thr);
    for (int64_t j = 0; j < n_out; j++) {
      a[QLM_INT8ROW_HEADER + ocol[j]] = 0; /* the whole outlier column leaves the int8 path */
      xo[(size_t)i * (size_t)n_out + (size_t)j] = X[i * cols + ocol[j]];
    }
  }
  if (W->outlier_stats) {
    atomic_fetch_add(&W->outlier_stats->columns, (uint64_t)cols);
    atomic_fetch_add(&W->outlier_stats->outlier_columns, (uint64_t)n_out);
    atomic_fetch_add(&W->outlier_stats->calls, 1);
  }
  i8_task t = {.W = W, .T = T, .Y = Y, .dot = dot, .act = buf, .act_row_bytes = arb, .ocol = ocol, .n_out = n_out,
               .xo = xo, .wo = n_out ? wo : NULL};
  qlm_pool_run(pool, task_int8row, &t);
  return 1;
}

/* ---- Q4_0 / Q4_1 / Q5_0 / Q4_K with their 16-row interleaved copy (kernels/x16.h) ---- */

typedef struct x16_task {
  const qlm_mat *const *W; /* [n], one type and width, each with x16 */
  float *const *Y;         /* [n] */
  int n;
  int64_t T, groups;       /* activation rows; 16-row groups of all n together */
  const unsigned char *act;
  const qlm_x16_kind *kind;
} x16_task;

static int64_t x16_groups(const qlm_mat *W) { return (W->rows + 15) / 16; }

/* Thread ith's share of the groups of all the matrices one after the other. */
static void task_x16(void *arg, int ith, int nth) {
  const x16_task *x = arg;
  int64_t g0 = x->groups * ith / nth, g1 = x->groups * (ith + 1) / nth, base = 0;
  for (int i = 0; i < x->n; base += x16_groups(x->W[i]), i++) {
    const qlm_mat *W = x->W[i];
    int64_t a = g0 > base ? g0 : base, b = g1 < base + x16_groups(W) ? g1 : base + x16_groups(W);
    if (a < b) x->kind->gemm(W->x16, W->cols / x->kind->blk_cols, W->rows, a - base, b - base, x->act, x->T, x->Y[i], W->rows);
  }
}

/* The kind when the n matrices can go through the x16 kernel together, else NULL. */
static const qlm_x16_kind *x16_usable(const qlm_mat *const W[], int n, qlm_simd_level level) {
  for (int i = 0; i < n; i++)
    if (!W[i]->x16 || W[i]->type != W[0]->type || W[i]->cols != W[0]->cols || W[i]->rows <= 0) return NULL;
  return n >= 1 ? qlm_x16_for(W[0]->type, W[0]->cols, level) : NULL;
}

/* Y[i] = X W[i]^T by the x16 kernel; 0 when out of memory (the caller takes another path). */
static int matmul_x16(const qlm_x16_kind *kind, const qlm_mat *const W[], float *const Y[], int n, const float *X,
                      int64_t T, qlm_pool *pool, qlm_simd_level level) {
  int64_t cols = W[0]->cols;
  size_t per, total;
  if (qlm_mul_overflow((size_t)(cols / kind->blk_cols), kind->ablk, &per) || qlm_mul_overflow(per, (size_t)T, &total))
    return 0;
  unsigned char *act = act_scratch(total);
  if (!act) return 0;
  for (int64_t t = 0; t < T; t++) kind->quantize_act(X + t * cols, cols, act + (size_t)t * per, level);
  x16_task x = {.W = W, .Y = Y, .n = n, .T = T, .act = act, .kind = kind};
  double work = 0;
  for (int i = 0; i < n; i++) x.groups += x16_groups(W[i]), work += (double)W[i]->rows * (double)cols * (double)T;
  if (work < MIN_PARALLEL_WORK) pool = NULL;
  qlm_pool_run(pool, task_x16, &x);
  return 1;
}

void qlm_matmul_ex(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_simd_level level,
                   int use_blas) {
  if (T <= 0 || W->rows <= 0) return;
  if (W->cols <= 0) {
    memset(Y, 0, (size_t)T * (size_t)W->rows * sizeof *Y);
    return;
  }
  if (QLM_TYPE_FAMILY(W->type) == QLM_FAMILY_INT8_ROW && matmul_int8row(W, X, T, Y, pool, level)) return;
  const qlm_x16_kind *xk = W->x16 ? x16_usable(&W, 1, level) : NULL;
  if (xk && matmul_x16(xk, &W, &Y, 1, X, T, pool, level)) return;
  mm_task t = {.W = W, .X = X, .T = T, .Y = Y, .use_blas = use_blas,
               .gemv = qlm_gemv_f32_for(level), .dot = qlm_dot_f32_for(level)};
  qlm_task_fn fn = task_f32;
  if (W->type != QLM_TYPE_F32) {
    t.tr = qlm_type_traits_of(W->type);
    /* The model only builds matrices of types with a dequantizer whose rows are whole blocks;
     * anything else is a caller bug, and we refuse to read past the row. */
    if (!t.tr || !qlm_type_can_dequantize(W->type) || t.tr->block_size < 1 || W->cols % t.tr->block_size != 0 ||
        (t.tr->block_size > DQ_CHUNK && !has_quant_path(t.tr, W->cols))) {
      memset(Y, 0, (size_t)T * (size_t)W->rows * sizeof *Y);
      return;
    }
    t.chunk = DQ_CHUNK / t.tr->block_size * t.tr->block_size;
    fn = has_quant_path(t.tr, W->cols) ? task_quant : task_generic;
  } else if (T > 1 && use_blas) {
    /* Not chosen by W's alignment, though rows off 64-byte lines (GGUF's default alignment is 32
     * bytes; qlm writes 64) split every load and cost our kernel 5-11% (bench/sgemm): the bits
     * of a product must not depend on where a matrix happens to be allocated. */
    t.own_sgemm = T <= OWN_SGEMM_MAX_T && clamp_level(level) >= QLM_SIMD_AVX512 && own_sgemm_on();
    if (!t.own_sgemm) pthread_once(&g_blas_once, blas_init);
  }
  if (fn != task_f32 && use_blas && T >= GEMM_Q_MIN_T && qlm_gemm_q_fast(W->type, level)) {
    if (gemm_q_on() && qlm_gemm_q(W, X, T, Y, pool, level)) return;
  }
  double work = (double)W->rows * (double)W->cols * (double)T;
  if (work < MIN_PARALLEL_WORK) pool = NULL;
  if (fn != task_f32 && use_blas && T >= DQ_GEMM_MIN_T && setup_dq_gemm(&t, qlm_pool_size(pool))) {
    pthread_once(&g_blas_once, blas_init);
    fn = task_dq_gemm;
  } else if (fn == task_quant && !setup_quant(&t, level)) {
    if (t.chunk == 0) { /* out of memory, and blocks too long for the stack path */
      memset(Y, 0, (size_t)T * (size_t)W->rows * sizeof *Y);
      return;
    }
    fn = task_generic;
  }
  qlm_pool_run(pool, fn, &t);
}

void qlm_matmul(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool) {
  qlm_matmul_ex(W, X, T, Y, pool, qlm_cpu_simd_level(), 1);
}

/* ---- several matrices of one input in one dispatch (decode) ---- */

typedef struct group_task {
  const mm_task *t; /* [n], set up alike: the same activation bytes */
  int n, f32;
  int64_t rows;     /* of all n together */
} group_task;

/* Thread ith's slice of the rows of all the matrices one after the other. */
static void task_group(void *arg, int ith, int nth) {
  const group_task *g = arg;
  int64_t r0, r1, base = 0;
  split_rows(g->rows, ith, nth, &r0, &r1);
  for (int i = 0; i < g->n; base += g->t[i].W->rows, i++) {
    int64_t a = r0 > base ? r0 : base, b = r1 < base + g->t[i].W->rows ? r1 : base + g->t[i].W->rows;
    if (a >= b) continue;
    if (g->f32) f32_rows(&g->t[i], a - base, b - base);
    else quant_rows(&g->t[i], a - base, b - base);
  }
}

void qlm_matmul_group(const qlm_mat *const W[], float *const Y[], int n, const float *X, int64_t T, qlm_pool *pool) {
  if (n < 1) return;
  const qlm_x16_kind *xk = n <= QLM_MATMUL_GROUP_MAX ? x16_usable(W, n, qlm_cpu_simd_level()) : NULL;
  if (xk && matmul_x16(xk, W, Y, n, X, T, pool, qlm_cpu_simd_level())) return;
  int same = n >= 2 && n <= QLM_MATMUL_GROUP_MAX && T == 1;
  for (int i = 0; same && i < n; i++)
    same = W[i]->type == W[0]->type && W[i]->cols == W[0]->cols && W[i]->rows > 0 && W[i]->cols > 0 &&
           QLM_TYPE_FAMILY(W[i]->type) != QLM_FAMILY_INT8_ROW;
  mm_task t[QLM_MATMUL_GROUP_MAX];
  group_task g = {.t = t, .n = n, .f32 = W[0]->type == QLM_TYPE_F32};
  qlm_simd_level level = qlm_cpu_simd_level();
  if (same) {
    t[0] = (mm_task){.W = W[0], .X = X, .T = T, .Y = Y[0], .gemv = qlm_gemv_f32_for(level)};
    if (!g.f32) {
      t[0].tr = qlm_type_traits_of(W[0]->type);
      same = t[0].tr && qlm_type_can_dequantize(W[0]->type) && W[0]->cols % t[0].tr->block_size == 0 &&
             has_quant_path(t[0].tr, W[0]->cols) && setup_quant(&t[0], level);
    }
  }
  if (!same) { /* one matrix at a time, each by its own path */
    for (int i = 0; i < n; i++) qlm_matmul(W[i], X, T, Y[i], pool);
    return;
  }
  for (int i = 0; i < n; i++) {
    if (i) t[i] = t[0], t[i].W = W[i], t[i].Y = Y[i];
    g.rows += W[i]->rows;
  }
  if ((double)g.rows * (double)W[0]->cols < MIN_PARALLEL_WORK) pool = NULL;
  qlm_pool_run(pool, task_group, &g);
}

/* ---- bf16 products for the calibration forward (qlm_matmul_bf16) ----
 * X is converted once to bf16 rows padded to QLM_BGEMM_K_ALIGN (the threads take row ranges);
 * W's rows are the columns of kernels/bgemm.h's packed B (qlm_bgemm_pack_t; quantized rows
 * dequantized first), multiplied in the outer-product form (qlm_bgemm_op: no lane reductions;
 * 198-217 vs the dot form's 148-172 GFLOP/s per Zen 4 core on SmolLM2's shapes at 512-2048
 * rows).  Each thread takes whole 16-row groups of W: packed from the cache, or a tile at a time
 * into its own scratch, as task_dq_gemm does with sgemm. */
typedef struct bf_task {
  const qlm_mat *W;
  const float *X;
  int64_t T, kp;    /* activation rows; bf16 elements per padded X row */
  float *Y;
  qlm_bf16 *xb;     /* [T x kp] X in bf16 */
  unsigned char *wb;/* per thread: tile x cols floats, then a tile of W packed */
  int64_t tile;     /* weight rows per tile, a multiple of 16 */
  qlm_bf16 *wcache; /* W packed whole (qlm_bf16_cache), or NULL: packed by tiles */
} bf_task;

static void task_bf16_x(void *arg, int ith, int nth) {
  const bf_task *t = arg;
  int64_t i0 = t->T * ith / nth, i1 = t->T * (ith + 1) / nth, cols = t->W->cols;
  for (int64_t i = i0; i < i1; i++) qlm_bf16_from_f32(t->X + i * cols, cols, t->xb + i * t->kp, t->kp);
}

static size_t bf16_tile_bytes(const bf_task *t) {
  return (size_t)t->tile * (size_t)t->W->cols * sizeof(float) +
         (size_t)qlm_bgemm_packed_len(t->W->cols, t->tile) * sizeof(qlm_bf16);
}

/* Rows [r, r + n) of W packed as columns [j0, j0 + n) of packed (f: n x cols floats of scratch
 * for dequantized rows). */
static void bf16_pack_rows(const qlm_mat *W, int64_t r, int64_t n, float *f, qlm_bf16 *packed, int64_t j0) {
  const float *src = (const float *)((const unsigned char *)W->data + (size_t)r * W->row_bytes);
  int64_t ld = (int64_t)(W->row_bytes / sizeof(float));
  if (W->type != QLM_TYPE_F32) {
    for (int64_t k = 0; k < n; k++)
      qlm_dequantize(W->type, (const unsigned char *)W->data + (size_t)(r + k) * W->row_bytes, f + k * W->cols,
                     W->cols);
    src = f, ld = W->cols;
  }
  qlm_bgemm_pack_t(src, ld, W->cols, j0, n, packed);
}

static void task_bf16(void *arg, int ith, int nth) {
  const bf_task *t = arg;
  const qlm_mat *W = t->W;
  int64_t r0, r1, cols = W->cols;
  split_rows(W->rows, ith, nth, &r0, &r1);
  float *f = (float *)(t->wb + (size_t)ith * bf16_tile_bytes(t));
  qlm_bf16 *b = (qlm_bf16 *)(f + (size_t)t->tile * (size_t)cols);
  for (int64_t r = r0; r < r1; r += t->tile) {
    int64_t n = r1 - r < t->tile ? r1 - r : t->tile;
    bf16_pack_rows(W, r, n, f, b, 0);
    qlm_bgemm_op(t->xb, t->kp, b, cols, t->Y + r, W->rows, t->T, n, cols, 1.0f);
  }
}

/* Whether qlm_matmul_bf16 takes W: a float or dequantizable block type (LLM.int8() weights keep
 * their int8 arithmetic).  Without AVX-512 BF16 the product runs as bgemm.h's FMA chains (or, with
 * QLM_SIMD=scalar, its portable reference): the same bits. */
static int bf16_takes(const qlm_mat *W) {
  if (W->rows <= 0 || W->cols <= 0 || W->rows > INT32_MAX || W->cols > INT32_MAX) return 0;
  if (W->type == QLM_TYPE_F32) return 1;
  const qlm_type_traits *tr = qlm_type_traits_of(W->type);
  return tr && QLM_TYPE_FAMILY(W->type) != QLM_FAMILY_INT8_ROW && qlm_type_can_dequantize(W->type) &&
         tr->block_size >= 1 && W->cols % tr->block_size == 0;
}

void qlm_bf16_cache_clear(qlm_bf16_cache *c) {
  if (!c) return;
  for (int i = 0; i < QLM_BF16_CACHE_N; i++) free(c->e[i].w);
  memset(c, 0, sizeof *c);
}

/* Thread ith's rows of W into the entry's packed copy. */
static void task_bf16_w(void *arg, int ith, int nth) {
  const bf_task *t = arg;
  int64_t r0, r1;
  split_rows(t->W->rows, ith, nth, &r0, &r1);
  float *f = (float *)(t->wb + (size_t)ith * bf16_tile_bytes(t));
  for (int64_t r = r0; r < r1; r += t->tile) {
    int64_t n = r1 - r < t->tile ? r1 - r : t->tile;
    bf16_pack_rows(t->W, r, n, f, t->wcache, r);
  }
}

static void task_bf16_cached(void *arg, int ith, int nth) {
  const bf_task *t = arg;
  int64_t r0, r1, cols = t->W->cols;
  split_rows(t->W->rows, ith, nth, &r0, &r1);
  if (r0 < r1)
    qlm_bgemm_op(t->xb, t->kp, t->wcache + r0 * qlm_pad2(cols), cols, t->Y + r0, t->W->rows, t->T, r1 - r0, cols, 1.0f);
}

/* W packed in the cache, made now if it is not there (NULL: out of memory). */
static qlm_bf16 *cached_weights(qlm_bf16_cache *c, bf_task *t, qlm_pool *pool) {
  const qlm_mat *W = t->W;
  for (int i = 0; i < QLM_BF16_CACHE_N; i++) {
    qlm_bf16_weights *e = &c->e[i];
    if (e->w && e->data == W->data && e->type == W->type && e->rows == W->rows && e->cols == W->cols) return e->w;
  }
  qlm_bf16_weights *e = &c->e[c->next];
  free(e->w);
  memset(e, 0, sizeof *e);
  size_t n;
  if (qlm_mul_overflow((size_t)(W->rows + 15) / 16 * 16, (size_t)qlm_pad2(W->cols), &n) ||
      qlm_mul_overflow(n, sizeof(qlm_bf16), &n) || !(e->w = malloc(n)))
    return NULL;
  e->data = W->data, e->type = W->type, e->rows = W->rows, e->cols = W->cols;
  c->next = (c->next + 1) % QLM_BF16_CACHE_N;
  t->wcache = e->w;
  qlm_pool_run(pool, task_bf16_w, t);
  return e->w;
}

int qlm_matmul_bf16_group(const qlm_mat *const W[], float *const Y[], int n, const float *X, int64_t T,
                          qlm_pool *pool, qlm_bf16_cache *cache) {
  if (n < 1 || T < 1) return n < 1;
  for (int i = 0; i < n; i++)
    if (!bf16_takes(W[i]) || W[i]->cols != W[0]->cols) return 0;
  int nth = qlm_pool_size(pool);
  bf_task t = {.W = W[0], .X = X, .T = T, .kp = qlm_bgemm_pad(W[0]->cols)};
  t.tile = DQ_TILE_FLOATS / W[0]->cols / ROW_GRAIN * ROW_GRAIN;
  if (t.tile < ROW_GRAIN) t.tile = ROW_GRAIN;
  size_t xbytes = (size_t)T * (size_t)t.kp * sizeof(qlm_bf16), per = bf16_tile_bytes(&t);
  if (xbytes / (size_t)T / sizeof(qlm_bf16) != (size_t)t.kp || per > (SIZE_MAX - xbytes - 64) / (size_t)nth) return 0;
  unsigned char *buf = act_scratch(xbytes + 64 + per * (size_t)nth);
  if (!buf) return 0;
  t.xb = (qlm_bf16 *)buf;
  t.wb = buf + (xbytes + 63) / 64 * 64;
  qlm_pool_run(pool, task_bf16_x, &t);
  for (int i = 0; i < n; i++) {
    t.W = W[i], t.Y = Y[i];
    t.wcache = cache ? cached_weights(cache, &t, pool) : NULL;
    qlm_pool_run(pool, t.wcache ? task_bf16_cached : task_bf16, &t);
  }
  return 1;
}

int qlm_matmul_bf16(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_bf16_cache *cache) {
  return qlm_matmul_bf16_group(&W, &Y, 1, X, T, pool, cache);
}
