/* test_kernels.c — thread pool, SIMD detection, and the f32 matrix products.
 *
 * Tolerances: every kernel computes the same sums in a different order.  For a dot product of n
 * terms any summation order in float has |computed - exact| <= n * u * sum|w_i x_i| with
 * u = 2^-24 (the classic recursive-summation bound; FMA only tightens it).  So two kernels differ
 * by at most 2 n u sum|w x|, and each is within n u sum|w x| of an exact (double) reference.
 * A real bug (a dropped, repeated or misplaced term) is off by about one term, ~sum|w x| / n,
 * which is far larger for the sizes used here. */
#include "testutil.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/quants.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"
#include "kernels/vecf64.h"
#include "kernels/vexp.h"

static const int SIZES[] = {1, 7, 31, 33, 65, 172, 257, 1000};
#define N_SIZES ((int)(sizeof SIZES / sizeof SIZES[0]))
#define U 5.9604644775390625e-8 /* 2^-24 */

/* ---- thread pool ---- */

typedef struct count_ctx {
  atomic_int hits[8];
  int nth_seen;
} count_ctx;

static void count_task(void *arg, int ith, int nth) {
  count_ctx *c = arg;
  atomic_fetch_add(&c->hits[ith], 1);
  if (ith == 0) c->nth_seen = nth;
}

/* Every index runs exactly once per dispatch, for 10k dispatches, at several pool sizes. */
static void test_pool_every_index_once(void **st) {
  (void)st;
  for (int n = 1; n <= 4; n++) {
    qlm_pool *p = qlm_pool_new(n);
    assert_non_null(p);
    assert_int_equal(qlm_pool_size(p), n);
    count_ctx c;
    for (int i = 0; i < 8; i++) atomic_init(&c.hits[i], 0);
    for (int rep = 0; rep < 10000; rep++) {
      qlm_pool_run(p, count_task, &c);
      /* after run returns, this dispatch's increments are all visible */
      for (int i = 0; i < n; i++) assert_int_equal(atomic_load(&c.hits[i]), rep + 1);
      for (int i = n; i < 8; i++) assert_int_equal(atomic_load(&c.hits[i]), 0);
    }
    assert_int_equal(c.nth_seen, n);
    qlm_pool_free(p);
  }
}

/* Dispatches separated by pauses long enough that workers go to sleep still all complete. */
static void test_pool_wakes_sleepers(void **st) {
  (void)st;
  qlm_pool *p = qlm_pool_new(3);
  count_ctx c;
  for (int i = 0; i < 8; i++) atomic_init(&c.hits[i], 0);
  for (int rep = 0; rep < 20; rep++) {
    struct timespec ts = {0, 2000000}; /* 2 ms >> the spin window */
    nanosleep(&ts, NULL);
    qlm_pool_run(p, count_task, &c);
    for (int i = 0; i < 3; i++) assert_int_equal(atomic_load(&c.hits[i]), rep + 1);
  }
  qlm_pool_free(p);
  qlm_pool_run(NULL, count_task, &c); /* NULL pool: runs inline as (0, 1) */
  assert_int_equal(atomic_load(&c.hits[0]), 21);
  assert_int_equal(c.nth_seen, 1);
}

/* ---- cpu ---- */

static void test_cpu_levels(void **st) {
  (void)st;
  qlm_simd_level hw = qlm_cpu_detect(), lvl = qlm_cpu_simd_level();
  assert_true(lvl <= hw);
  assert_string_equal(qlm_simd_name(QLM_SIMD_SCALAR), "scalar");
  assert_string_equal(qlm_simd_name(QLM_SIMD_AVX2), "avx2");
  assert_string_equal(qlm_simd_name(QLM_SIMD_AVX512), "avx512");
  /* the compiler's own view of the CPU must agree with ours on the base features */
  __builtin_cpu_init();
  if (hw >= QLM_SIMD_AVX2) assert_true(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  if (hw >= QLM_SIMD_AVX512) assert_true(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"));
  /* asking for more than the CPU has gives the best it has */
  assert_ptr_equal(qlm_gemv_f32_for(QLM_SIMD_AVX512), qlm_gemv_f32_for(hw));
}

/* ---- GEMV ---- */

static float *rand_vec(uint64_t *rng, size_t n);

/* Double-accumulated dots are the exact sum rounded once: within half an ulp of the result plus
 * the (double) accumulation error n * 2^-53 * sum|a b|, at every level and length. */
static void test_dotd_levels(void **st) {
  (void)st;
  uint64_t rng = 5;
  for (int n = 0; n <= 300; n += (n < 40 ? 1 : 37)) {
    float *a = rand_vec(&rng, (size_t)n), *b = rand_vec(&rng, (size_t)n);
    double exact = 0, abs_sum = 0;
    for (int i = 0; i < n; i++) exact += (double)a[i] * b[i], abs_sum += fabs((double)a[i] * b[i]);
    for (int lvl = QLM_SIMD_SCALAR; lvl <= (int)qlm_cpu_detect(); lvl++) {
      float d = qlm_dotd_f32_for((qlm_simd_level)lvl)(a, b, n);
      double tol = fabs(exact) * U + 2.0 * n * ldexp(1.0, -53) * abs_sum + 1e-30;
      if (!(fabs(d - exact) <= tol))
        fail_msg("dotd %s n %d: %.9g vs %.12g", qlm_simd_name((qlm_simd_level)lvl), n, d, exact);
    }
    free(a);
    free(b);
  }
}

static float *rand_vec(uint64_t *rng, size_t n) {
  float *v = malloc((n ? n : 1) * sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = tu_rand_normal(rng);
  return v;
}

/* Exact-ish reference in double and sum|w x| for the error bound. */
static void ref_row(const float *w, const float *x, int64_t n, double *dot, double *abs_sum) {
  double d = 0, a = 0;
  for (int64_t i = 0; i < n; i++) {
    d += (double)w[i] * x[i];
    a += fabs((double)w[i] * x[i]);
  }
  *dot = d;
  *abs_sum = a;
}

/* Small integers: every partial sum is exactly representable, so every order gives the same
 * float: the kernels must then agree with the reference exactly. */
static void test_gemv_exact_on_integers(void **st) {
  (void)st;
  uint64_t rng = 7;
  for (int lvl = QLM_SIMD_SCALAR; lvl <= (int)qlm_cpu_detect(); lvl++) {
    qlm_gemv_f32_fn gemv = qlm_gemv_f32_for((qlm_simd_level)lvl);
    for (int si = 0; si < N_SIZES; si++) {
      int rows = SIZES[si], cols = SIZES[(si + 3) % N_SIZES];
      float *W = malloc((size_t)rows * cols * sizeof *W), *x = malloc((size_t)cols * sizeof *x);
      float *y = malloc((size_t)rows * sizeof *y);
      for (int i = 0; i < rows * cols; i++) W[i] = (float)((int)(tu_rand_u64(&rng) % 17) - 8);
      for (int i = 0; i < cols; i++) x[i] = (float)((int)(tu_rand_u64(&rng) % 9) - 4);
      gemv(W, cols, x, y, rows, cols);
      for (int r = 0; r < rows; r++) {
        long long e = 0;
        for (int c = 0; c < cols; c++) e += (long long)W[(size_t)r * cols + c] * (long long)x[c];
        assert_true(y[r] == (float)e);
      }
      free(W);
      free(x);
      free(y);
    }
  }
}

/* Every level, every size pair, threads 1..4, with a row stride larger than cols: within the
 * summation-order bound of the double reference and of the scalar reference. */
static void test_gemv_levels_match_scalar(void **st) {
  (void)st;
  uint64_t rng = 42;
  qlm_pool *pools[5] = {NULL};
  for (int n = 1; n <= 4; n++) pools[n] = qlm_pool_new(n);
  for (int ri = 0; ri < N_SIZES; ri++) {
    for (int ci = 0; ci < N_SIZES; ci++) {
      int64_t rows = SIZES[ri], cols = SIZES[ci], ld = cols + 3;
      float *W = rand_vec(&rng, (size_t)(rows * ld)), *x = rand_vec(&rng, (size_t)cols);
      float *ys = malloc((size_t)rows * sizeof *ys), *y = malloc((size_t)rows * sizeof *y);
      qlm_gemv_f32_scalar(W, ld, x, ys, rows, cols);
      qlm_mat M = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = W, .row_bytes = (size_t)ld * 4};
      for (int lvl = QLM_SIMD_SCALAR; lvl <= (int)qlm_cpu_detect(); lvl++) {
        for (int nt = 1; nt <= 4; nt++) {
          for (int64_t r = 0; r < rows; r++) y[r] = NAN;
          qlm_matmul_ex(&M, x, 1, y, pools[nt], (qlm_simd_level)lvl, 1);
          for (int64_t r = 0; r < rows; r++) {
            double d, a;
            ref_row(W + r * ld, x, cols, &d, &a);
            double bound = (double)cols * U * a;
            if (!(fabs(y[r] - d) <= bound && fabs(y[r] - ys[r]) <= 2 * bound))
              fail_msg("level %s threads %d rows %lld cols %lld row %lld: %.9g vs scalar %.9g vs exact %.9g",
                       qlm_simd_name((qlm_simd_level)lvl), nt, (long long)rows, (long long)cols, (long long)r, y[r],
                       ys[r], d);
          }
        }
      }
      free(W);
      free(x);
      free(ys);
      free(y);
    }
  }
  for (int n = 1; n <= 4; n++) qlm_pool_free(pools[n]);
}

/* Large enough that the pool really splits the rows (the small cases above run inline). */
static void test_gemv_threaded_large(void **st) {
  (void)st;
  uint64_t rng = 3;
  int64_t rows = 1003, cols = 517;
  float *W = rand_vec(&rng, (size_t)(rows * cols)), *x = rand_vec(&rng, (size_t)cols);
  float *y1 = malloc((size_t)rows * 4), *y = malloc((size_t)rows * 4);
  qlm_mat M = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = W, .row_bytes = (size_t)cols * 4};
  qlm_matmul_ex(&M, x, 1, y1, NULL, qlm_cpu_detect(), 1);
  for (int nt = 2; nt <= 4; nt++) {
    qlm_pool *p = qlm_pool_new(nt);
    for (int64_t r = 0; r < rows; r++) y[r] = NAN;
    qlm_matmul(&M, x, 1, y, p);
    /* same kernel on the same rows: threading must not change a single bit */
    if (qlm_cpu_simd_level() == qlm_cpu_detect()) assert_memory_equal(y, y1, (size_t)rows * 4);
    for (int64_t r = 0; r < rows; r++) {
      double d, a;
      ref_row(W + r * cols, x, cols, &d, &a);
      assert_true(fabs(y[r] - d) <= cols * U * a);
    }
    qlm_pool_free(p);
  }
  free(W);
  free(x);
  free(y1);
  free(y);
}

/* T > 1 (BLAS, and the no-BLAS path) equals T separate GEMVs within the order bound. */
static void test_gemm_equals_gemvs(void **st) {
  (void)st;
  uint64_t rng = 9;
  const int Ts[] = {2, 3, 17};
  qlm_pool *p = qlm_pool_new(3);
  for (int ti = 0; ti < 3; ti++) {
    for (int si = 0; si < N_SIZES; si++) {
      int64_t T = Ts[ti], rows = SIZES[si], cols = SIZES[(si + 5) % N_SIZES];
      float *W = rand_vec(&rng, (size_t)(rows * cols)), *X = rand_vec(&rng, (size_t)(T * cols));
      float *Y = malloc((size_t)(T * rows) * 4), *y = malloc((size_t)rows * 4);
      qlm_mat M = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = W, .row_bytes = (size_t)cols * 4};
      for (int blas = 0; blas <= 1; blas++) {
        qlm_matmul_ex(&M, X, T, Y, p, qlm_cpu_simd_level(), blas);
        for (int64_t t = 0; t < T; t++) {
          qlm_matmul(&M, X + t * cols, 1, y, p);
          for (int64_t r = 0; r < rows; r++) {
            double d, a;
            ref_row(W + r * cols, X + t * cols, cols, &d, &a);
            if (!(fabs(Y[t * rows + r] - y[r]) <= 2 * cols * U * a))
              fail_msg("blas %d T %lld rows %lld cols %lld: Y[%lld][%lld] %.9g vs gemv %.9g", blas, (long long)T,
                       (long long)rows, (long long)cols, (long long)t, (long long)r, Y[t * rows + r], y[r]);
          }
        }
      }
      free(W);
      free(X);
      free(Y);
      free(y);
    }
  }
  qlm_pool_free(p);
}

/* Non-f32 weights go through the dequantize-and-dot fallback: f16 weights that are exactly
 * representable must give the same products as the f32 matrix. */
static void test_matmul_f16_fallback(void **st) {
  (void)st;
  const qlm_type_traits *tr = qlm_type_traits_of(QLM_TYPE_F16);
  if (!tr || !tr->to_float) skip();
  uint64_t rng = 11;
  int64_t rows = 37, cols = 5000, T = 3; /* cols > the 4096-float chunk */
  float *W = malloc((size_t)(rows * cols) * 4), *X = rand_vec(&rng, (size_t)(T * cols));
  uint16_t *Wh = malloc((size_t)(rows * cols) * 2);
  for (int64_t i = 0; i < rows * cols; i++) {
    Wh[i] = qlm_f32_to_f16(tu_rand_normal(&rng));
    W[i] = qlm_f16_to_f32(Wh[i]);
  }
  qlm_mat M32 = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = W, .row_bytes = (size_t)cols * 4};
  qlm_mat M16 = {.type = QLM_TYPE_F16, .rows = rows, .cols = cols, .data = Wh, .row_bytes = (size_t)cols * 2};
  float *Y32 = malloc((size_t)(T * rows) * 4), *Y16 = malloc((size_t)(T * rows) * 4);
  qlm_pool *p = qlm_pool_new(2);
  for (int64_t t = 1; t <= T; t++) { /* T = 1 (decode) and T > 1 */
    qlm_matmul(&M32, X, t, Y32, p);
    qlm_matmul(&M16, X, t, Y16, p);
    for (int64_t i = 0; i < t; i++)
      for (int64_t r = 0; r < rows; r++) {
        double d, a;
        ref_row(W + r * cols, X + i * cols, cols, &d, &a);
        assert_true(fabs(Y16[i * rows + r] - d) <= cols * U * a);
        assert_true(fabs(Y16[i * rows + r] - Y32[i * rows + r]) <= 2 * cols * U * a);
      }
  }
  qlm_pool_free(p);
  free(Y32);
  free(Y16);
  free(W);
  free(X);
  free(Wh);
}

/* kernels/vexp.h against libm in double: e^x over [-87, 0] (every 997th float's worth of steps,
 * about 1.4 million points) within 2.5e-7 relative (Cephes' polynomial is ~1 ulp = 6e-8..1.2e-7;
 * the bound leaves room for the range reduction's rounding), e^0 = 1 exactly, below -87 the
 * clamp's e^-87; SiLU within 5e-7 relative (one more rounding in the reciprocal and products) for
 * |x| up to 100, with silu(0) = 0; NaN in, NaN out. */
static void test_vexp(void **state) {
  (void)state;
  double worst = 0.0;
  for (float x = -87.0f; x <= 0.0f; x += 6.1e-5f) {
    double want = exp((double)x), rel = fabs((double)qlm_exp_nonpos(x) - want) / want;
    worst = rel > worst ? rel : worst;
  }
  print_message("exp_nonpos: worst relative error %.3g\n", worst);
  assert_true(worst < 2.5e-7);
  assert_true(qlm_exp_nonpos(0.0f) == 1.0f);
  assert_true(fabs(qlm_exp_nonpos(-200.0f) - exp(-87.0)) < 1e-7 * exp(-87.0));
  worst = 0.0;
  for (float x = -100.0f; x <= 100.0f; x += 1.3e-4f) {
    double want = (double)x / (1.0 + exp(-(double)x));
    if (fabs(want) < 1e-30) continue;
    double rel = fabs((double)qlm_silu(x) - want) / fabs(want);
    worst = rel > worst ? rel : worst;
  }
  print_message("silu: worst relative error %.3g\n", worst);
  assert_true(worst < 5e-7);
  assert_true(qlm_silu(0.0f) == 0.0f);
  assert_true(isnan(qlm_exp_nonpos(NAN)));
  assert_true(isnan(qlm_silu(NAN)));
}

/* qlm_matmul_group (q/k/v, gate/up in one dispatch) gives the bytes of separate qlm_matmul calls:
 * decode (T = 1) in f32 and the quantized decode kernels (Q4_0's packed VNNI GEMV, Q4_K's
 * whole-slice GEMV, Q8_0's vec_dot), matrices of 3 different heights so the threads' slices
 * straddle matrix boundaries, 1 and 3 threads; and T = 5 (the fallback: one call each). */
static void test_matmul_group_same_bytes(void **st) {
  (void)st;
  uint64_t rng = 77;
  const int types[] = {QLM_TYPE_F32, QLM_TYPE_Q4_0, QLM_TYPE_Q8_0, QLM_TYPE_Q4_K};
  const int64_t rows[3] = {256, 64, 80}, cols = 512;
  for (int nth = 1; nth <= 3; nth += 2) {
    qlm_pool *p = qlm_pool_new(nth);
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++)
      for (int64_t T = 1; T <= 5; T += 4) {
        qlm_mat M[3];
        const qlm_mat *W[3];
        float *Y[3], *Z[3], *X = rand_vec(&rng, (size_t)(T * cols));
        void *data[3];
        for (int i = 0; i < 3; i++) {
          float *w = rand_vec(&rng, (size_t)(rows[i] * cols));
          size_t rb = qlm_type_row_bytes(types[ty], cols);
          if (types[ty] == QLM_TYPE_F32) data[i] = w;
          else {
            data[i] = malloc(rb * (size_t)rows[i]);
            for (int64_t r = 0; r < rows[i]; r++)
              qlm_quantizer_of(types[ty])(w + r * cols, (unsigned char *)data[i] + (size_t)r * rb, cols);
            free(w);
          }
          M[i] = (qlm_mat){.type = types[ty], .rows = rows[i], .cols = cols, .data = data[i], .row_bytes = rb};
          W[i] = &M[i];
          Y[i] = malloc((size_t)(T * rows[i]) * 4);
          Z[i] = malloc((size_t)(T * rows[i]) * 4);
          qlm_matmul(&M[i], X, T, Z[i], p);
        }
        qlm_matmul_group(W, Y, 3, X, T, p);
        for (int i = 0; i < 3; i++) {
          if (memcmp(Y[i], Z[i], (size_t)(T * rows[i]) * 4) != 0)
            fail_msg("%s T %lld threads %d matrix %d: group differs from qlm_matmul", qlm_type_name(types[ty]),
                     (long long)T, nth, i);
          free(Y[i]), free(Z[i]), free(data[i]);
        }
        free(X);
      }
    qlm_pool_free(p);
  }
}

/* GPTQ's in-block update y -= a x: the AVX-512 kernel (product rounded, then subtracted) gives the
 * scalar loop's bits at every length, tails included, on values of mixed magnitude; neither
 * writes past n. */
static void test_sub_scaled_f64(void **st) {
  (void)st;
  uint64_t rng = 17;
  for (int n = 0; n <= 70; n++) {
    double *x = malloc(sizeof(double) * (size_t)(n + 1)), *y0 = malloc(sizeof(double) * (size_t)(n + 1)),
           *ys = malloc(sizeof(double) * (size_t)(n + 1)), *yv = malloc(sizeof(double) * (size_t)(n + 1));
    double a = (double)tu_rand_normal(&rng) * 1e3;
    for (int i = 0; i <= n; i++)
      x[i] = (double)tu_rand_normal(&rng) * ldexp(1.0, i % 40 - 20), y0[i] = (double)tu_rand_normal(&rng);
    memcpy(ys, y0, sizeof(double) * (size_t)(n + 1)), memcpy(yv, y0, sizeof(double) * (size_t)(n + 1));
    qlm_sub_scaled_f64_scalar(ys, a, x, n);
    for (int i = 0; i < n; i++) assert_true(ys[i] == y0[i] - (double)(a * x[i]));
    assert_true(ys[n] == y0[n]); /* nothing past n */
    if (qlm_cpu_detect() >= QLM_SIMD_AVX512) {
      qlm_sub_scaled_f64_avx512(yv, a, x, n);
      assert_memory_equal(yv, ys, sizeof(double) * (size_t)(n + 1));
    }
    free(x), free(y0), free(ys), free(yv);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sub_scaled_f64),
      cmocka_unit_test(test_pool_every_index_once),
      cmocka_unit_test(test_pool_wakes_sleepers),
      cmocka_unit_test(test_cpu_levels),
      cmocka_unit_test(test_dotd_levels),
      cmocka_unit_test(test_gemv_exact_on_integers),
      cmocka_unit_test(test_gemv_levels_match_scalar),
      cmocka_unit_test(test_vexp),
      cmocka_unit_test(test_gemv_threaded_large),
      cmocka_unit_test(test_gemm_equals_gemvs),
      cmocka_unit_test(test_matmul_group_same_bytes),
      cmocka_unit_test(test_matmul_f16_fallback),
  };
  if (getenv("QLM_TEST_FILTER")) cmocka_set_test_filter(getenv("QLM_TEST_FILTER")); /* e.g. "test_pool*" */
  return cmocka_run_group_tests(tests, NULL, NULL);
}
