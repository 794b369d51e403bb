/* test_sgemm.c — the f32 prefill kernel (kernels/sgemm.h) and its place in qlm_matmul.
 *
 *   reference:  qlm_sgemm_xwt_ref is within the fused-chain error bound of a double-precision
 *               product (|err| <= (K/16 + 5) u sum_k |x_k w_k|: one rounding per FMA of a lane's
 *               chain of ceil(K/16) steps, 4 for the lane tree, one to float), so it computes the
 *               product at all — an oracle independent of the kernel;
 *   AVX-512:    bit-identical to the reference for every tile shape (edge tiles 1..5 x 1..5),
 *               K with and without a partial last step, row strides larger than K, and
 *               negative zeros and mixed magnitudes;
 *   matmul:     through qlm_matmul_ex, f32 prefill rows (the kernel) equal decode (T = 1, the
 *               AVX-512 GEMV, short and long rows) bit for bit, at 1, 2 and 3 threads, also with rows off 64-byte
 *               lines; beyond OWN_SGEMM_MAX_T OpenBLAS takes over and agrees within the bound. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/sgemm.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}
/* Mixed signs and magnitudes over 2^-8..2^8, and now and then an exact (negative) zero. */
static float val(uint64_t *s) {
  uint64_t r = next(s);
  if (r % 97 == 0) return (r >> 8) & 1 ? -0.0f : 0.0f;
  float u = (float)((r >> 11) * (1.0 / 9007199254740992.0));
  return ((r >> 9) & 1 ? -1.0f : 1.0f) * ldexpf(0.5f + u, (int)((r >> 3) % 17) - 8);
}
static float *random_f(size_t n, uint64_t *s) {
  float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  assert_non_null(p);
  for (size_t i = 0; i < n; i++) p[i] = val(s);
  return p;
}

/* |Y - exact| <= depth u sum |x w|, with exact and sum in double; depth = roundings along the
 * longest path of the sum: ceil(K/16) + 5 for sgemm.h's chain, K + 1 for any summation order. */
static void assert_near_exact_depth(const float *X, int64_t ldx, const float *W, int64_t ldw, const float *Y,
                                    int64_t ldy, int64_t T, int64_t n, int64_t K, double depth) {
  const double u = ldexp(1.0, -24);
  for (int64_t i = 0; i < T; i++)
    for (int64_t j = 0; j < n; j++) {
      double e = 0, a = 0;
      for (int64_t k = 0; k < K; k++) {
        double p = (double)X[i * ldx + k] * W[j * ldw + k];
        e += p, a += fabs(p);
      }
      double bound = depth * u * a + 1e-30;
      if (fabs(Y[i * ldy + j] - e) > bound)
        fail_msg("(%lld, %lld) K=%lld: %.9g vs exact %.9g, bound %.3g", (long long)i, (long long)j, (long long)K,
                 Y[i * ldy + j], e, bound);
    }
}

static void assert_near_exact(const float *X, int64_t ldx, const float *W, int64_t ldw, const float *Y, int64_t ldy,
                              int64_t T, int64_t n, int64_t K) {
  assert_near_exact_depth(X, ldx, W, ldw, Y, ldy, T, n, K, (double)((K + 15) / 16) + 5);
}

static void test_reference_near_exact(void **state) {
  (void)state;
  uint64_t s = 11;
  const int64_t Ks[] = {1, 15, 16, 17, 100, 576};
  for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++) {
    int64_t K = Ks[a], T = 3, n = 4;
    float *X = random_f((size_t)(T * K), &s), *W = random_f((size_t)(n * K), &s), Y[12];
    qlm_sgemm_xwt_ref(X, K, W, K, Y, n, T, n, K);
    assert_near_exact(X, K, W, K, Y, n, T, n, K);
    free(X), free(W);
  }
}

static void test_avx512_equals_reference(void **state) {
  (void)state;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  uint64_t s = 7;
  const int64_t Ks[] = {1, 5, 16, 31, 48, 577, 1000};
  for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++)
    for (int64_t T = 1; T <= 11; T += 2)
      for (int64_t n = 1; n <= 13; n += 3) {
        int64_t K = Ks[a], ldx = K + 3, ldw = K + 9, ldy = n + 2; /* strides beyond K and n */
        float *X = random_f((size_t)(T * ldx), &s), *W = random_f((size_t)(n * ldw), &s);
        float *Y = calloc((size_t)(T * ldy), sizeof *Y), *R = calloc((size_t)(T * ldy), sizeof *R);
        assert_true(Y && R);
        qlm_sgemm_xwt_avx512(X, ldx, W, ldw, Y, ldy, T, n, K);
        qlm_sgemm_xwt_ref(X, ldx, W, ldw, R, ldy, T, n, K);
        if (memcmp(Y, R, sizeof *Y * (size_t)(T * ldy)) != 0)
          fail_msg("T=%lld n=%lld K=%lld: AVX-512 kernel differs from the reference", (long long)T, (long long)n,
                   (long long)K);
        free(X), free(W), free(Y), free(R);
      }
}

/* Blocking: a K whose chunks hold few rows, so T and n cross several chunks of both kinds. */
static void test_avx512_chunks(void **state) {
  (void)state;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  uint64_t s = 3;
  int64_t K = 40000, T = 13, n = 12; /* 256 KiB of W = 1.6 rows -> one 5-row tile per chunk */
  float *X = random_f((size_t)(T * K), &s), *W = random_f((size_t)(n * K), &s);
  float *Y = malloc(sizeof *Y * (size_t)(T * n)), *R = malloc(sizeof *R * (size_t)(T * n));
  assert_true(Y && R);
  qlm_sgemm_xwt_avx512(X, K, W, K, Y, n, T, n, K);
  qlm_sgemm_xwt_ref(X, K, W, K, R, n, T, n, K);
  assert_memory_equal(Y, R, sizeof *Y * (size_t)(T * n));
  free(X), free(W), free(Y), free(R);
}

/* Prefill through qlm_matmul_ex equals T decode calls, bit for bit, at 1..3 threads; decode
 * takes one row at a time (cols 272) or the 5-row tiles (cols >= 2048, GEMV_TILE_MIN_COLS). */
static void check_prefill_equals_decode(int64_t rows, int64_t cols, int64_t T, uint64_t seed) {
  uint64_t s = seed;
  float *w = random_f((size_t)(rows * cols), &s), *X = random_f((size_t)(T * cols), &s);
  qlm_mat W = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = w, .row_bytes = sizeof(float) * (size_t)cols};
  float *one = malloc(sizeof(float) * (size_t)(T * rows)), *all = malloc(sizeof(float) * (size_t)(T * rows));
  assert_true(one && all);
  for (int nth = 1; nth <= 3; nth++) {
    qlm_pool *pool = nth > 1 ? qlm_pool_new(nth) : NULL;
    for (int64_t i = 0; i < T; i++) qlm_matmul_ex(&W, X + i * cols, 1, one + i * rows, pool, QLM_SIMD_AVX512, 1);
    memset(all, 0xff, sizeof(float) * (size_t)(T * rows));
    qlm_matmul_ex(&W, X, T, all, pool, QLM_SIMD_AVX512, 1);
    assert_memory_equal(one, all, sizeof(float) * (size_t)(T * rows));
    qlm_pool_free(pool);
  }
  assert_near_exact(X, cols, w, cols, all, rows, T, rows, cols);
  free(w), free(X), free(one), free(all);
}

static void test_matmul_prefill_equals_decode(void **state) {
  (void)state;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  check_prefill_equals_decode(70, 272, 9, 5);  /* rows: 4 slices of 16 and a partial one; 17 steps */
  check_prefill_equals_decode(37, 2056, 6, 6); /* long rows, a partial last step */
}

/* Rows off 64-byte lines: the same kernel (the bits do not depend on the address); T past the
 * kernel's range: OpenBLAS, within the bound of any summation order. */
static void test_matmul_misaligned_and_blas(void **state) {
  (void)state;
  uint64_t s = 9;
  int64_t rows = 33, cols = 64, T = 300;
  float *w = random_f((size_t)(rows * cols) + 8, &s), *X = random_f((size_t)(T * cols), &s);
  float *Y = malloc(sizeof(float) * (size_t)(T * rows));
  assert_non_null(Y);
  qlm_mat W = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = w + 8, .row_bytes = sizeof(float) * (size_t)cols};
  qlm_matmul(&W, X, 7, Y, NULL); /* 32 bytes off the line */
  if (qlm_cpu_simd_level() >= QLM_SIMD_AVX512) {
    float *R = malloc(sizeof(float) * (size_t)(7 * rows));
    assert_non_null(R);
    qlm_sgemm_xwt_ref(X, cols, w + 8, cols, R, rows, 7, rows, cols);
    assert_memory_equal(Y, R, sizeof(float) * (size_t)(7 * rows));
    free(R);
  }
  assert_near_exact(X, cols, w + 8, cols, Y, rows, 7, rows, cols);
  W.data = w;
  qlm_matmul(&W, X, T, Y, NULL);
  assert_near_exact_depth(X, cols, w, cols, Y, rows, T, rows, cols, (double)cols + 1);
  free(w), free(X), free(Y);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reference_near_exact),
      cmocka_unit_test(test_avx512_equals_reference),
      cmocka_unit_test(test_avx512_chunks),
      cmocka_unit_test(test_matmul_prefill_equals_decode),
      cmocka_unit_test(test_matmul_misaligned_and_blas),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
