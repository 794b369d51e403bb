/* test_llm_int8.c — LLM.int8() (quant/llm_int8.c, kernels/int8row.c, the outlier path of
 * kernels/matmul.c) against independent reimplementations of bitsandbytes' formulas in double:
 *   weights:      SCB = max|W_row|, q = round_half_even(W * 127 / SCB)
 *   activations:  elements with |x| >= threshold are outliers, their columns outlier columns;
 *                 row_stats = max|x| over the non-outlier elements of the token (bnb zeroes the
 *                 outlier elements, then takes the absmax), q as above, then the codes of whole
 *                 outlier columns are zeroed;
 *   Y = C_i32 * row_stats * SCB * 6.200124e-05 (bnb's constant) + X[:, outl] (q_w * SCB / 127)^T. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/int8row.h"
#include "kernels/matmul.h"
#include "kernels/qdot.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"
#include "quant/method.h"
#include "testutil.h"

#define BNB_MM 6.200124e-05 /* bnb's int8_mm_dequant constant (note: 1/16129 is 6.2000124e-05) */
#define F32_EPS (1.0 / 16777216.0) /* 2^-24, unit roundoff of float */

static const qlm_simd_level LEVELS[3] = {QLM_SIMD_SCALAR, QLM_SIMD_AVX2, QLM_SIMD_AVX512};

/* round half to even in double (torch.round) */
static double rhe(double v) {
  double f = floor(v), d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return fmod(f, 2.0) == 0.0 ? f : f + 1;
}

/* Distance of v from the nearest .5 tie. */
static double tie_dist(double v) { return fabs(v - floor(v) - 0.5); }

static float rdf(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

static void quantize_w(const float *W, int64_t rows, int64_t cols, qlm_qtensor *q) {
  const qlm_quant_method *m = qlm_quant_method_find("llm-int8");
  assert_non_null(m);
  qlm_quant_opts o = {0};
  m->defaults(&o);
  assert_int_equal(o.bits, 8);
  assert_true(o.threshold == 6.0f);
  qlm_error err = {0};
  assert_int_equal(m->check(&o, rows, cols, &err), QLM_OK);
  memset(q, 0, sizeof *q);
  assert_int_equal(m->quantize(W, rows, cols, NULL, &o, q, &err), QLM_OK);
}

static float *random_w(int64_t n, uint64_t *rng) {
  float *w = malloc((size_t)n * sizeof *w);
  for (int64_t i = 0; i < n; i++) w[i] = 0.05f * tu_rand_normal(rng);
  return w;
}

/* Method output: type, name, size, SCB and codes against the double reimplementation. */
static void test_weight_quantization(void **st) {
  (void)st;
  uint64_t rng = 1;
  const int64_t sizes[] = {1, 37, 576, 4099};
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
    const int64_t rows = 9, cols = sizes[si];
    float *W = random_w(rows * cols, &rng);
    for (int64_t c = 0; c < cols; c++) W[2 * cols + c] = 0.0f; /* an all-zero row */
    W[3 * cols] = -7.5f;                                      /* a row with one large value */
    qlm_qtensor q;
    quantize_w(W, rows, cols, &q);
    char name[32];
    snprintf(name, sizeof name, "int8_row_%lld", (long long)cols);
    assert_string_equal(qlm_type_name(q.type), name);
    assert_int_equal(q.row_bytes, 4 + (size_t)cols);
    assert_true(fabs(q.bpw - (8.0 + 32.0 / (double)cols)) < 1e-12);
    assert_string_equal(q.desc, "llm-int8 threshold=6");
    int64_t exact = 0, near_tie = 0;
    float *dq = malloc((size_t)(rows * cols) * sizeof *dq);
    assert_true(qlm_dequantize(q.type, q.data, dq, rows * cols));
    for (int64_t r = 0; r < rows; r++) {
      const uint8_t *b = (const uint8_t *)q.data + r * (int64_t)q.row_bytes;
      double amax = 0;
      for (int64_t c = 0; c < cols; c++) amax = fmax(amax, fabs(W[r * cols + c]));
      assert_true(rdf(b) == (float)amax);
      for (int64_t c = 0; c < cols; c++) {
        int qi = ((const int8_t *)(b + 4))[c];
        double e = amax > 0 ? W[r * cols + c] * 127.0 / amax : 0.0;
        if (tie_dist(e) < 1e-4) { /* float reciprocal arithmetic may land on either side */
          near_tie++;
          assert_true(qi == (int)floor(e) || qi == (int)floor(e) + 1);
        } else {
          assert_int_equal(qi, (int)rhe(e));
          exact++;
        }
        /* dequantized: q * SCB / 127 within two float roundings (bnb: (q * SCB) * (1/127)f) */
        double want = qi * amax / 127.0;
        assert_true(fabs(dq[r * cols + c] - want) <= 3 * F32_EPS * fabs(want));
      }
    }
    assert_true(exact > 0 && near_tie * 100 <= exact + 100);
    free(dq), free(W);
    qlm_qtensor_free(&q);
  }
  /* Ties round to even, as torch.round: SCB = 127, so q = w exactly. */
  float W[4] = {127.0f, 1.5f, -2.5f, 0.5f};
  qlm_qtensor q;
  quantize_w(W, 1, 4, &q);
  const int8_t *c = (const int8_t *)((const uint8_t *)q.data + 4);
  assert_int_equal(c[0], 127), assert_int_equal(c[1], 2), assert_int_equal(c[2], -2), assert_int_equal(c[3], 0);
  qlm_qtensor_free(&q);
}

static void test_method_errors(void **st) {
  (void)st;
  const qlm_quant_method *m = qlm_quant_method_find("llm-int8");
  qlm_quant_opts o = {.bits = 4};
  m->defaults(&o);
  qlm_error err = {0};
  assert_int_equal(m->check(&o, 4, 64, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "bits=4"));
  o.bits = 8;
  assert_int_equal(m->check(&o, 4, 70000, &err), QLM_EUNSUPPORTED);
  assert_non_null(strstr(err.msg, "70000"));
  o.threshold = 3.5f;
  float W[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  qlm_qtensor q = {0};
  assert_int_equal(m->quantize(W, 2, 4, NULL, &o, &q, &err), QLM_OK);
  assert_string_equal(q.desc, "llm-int8 threshold=3.5");
  qlm_qtensor_free(&q);
}

/* Integer dot products: every SIMD level equals an int64 sum, any length, weights -128..127. */
static void test_simd_dots(void **st) {
  (void)st;
  uint64_t rng = 5;
  const int gs[] = {1, 7, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 576, 4097};
  for (size_t gi = 0; gi < sizeof gs / sizeof *gs; gi++) {
    int g = gs[gi], type = qlm_int8row_type(g);
    uint8_t *w = malloc(4 + (size_t)g), *a = malloc(4 + (size_t)g);
    for (int rep = 0; rep < 20; rep++) {
      float sw = 0.01f + tu_rand_uniform(&rng), sa = 1.0f + 5.0f * tu_rand_uniform(&rng);
      memcpy(w, &sw, 4), memcpy(a, &sa, 4);
      int64_t want = 0;
      for (int i = 0; i < g; i++) {
        int8_t wi = rep == 0 ? -128 : (int8_t)tu_rand_u64(&rng);          /* rep 0: all -128 */
        int8_t ai = (int8_t)(rep == 0 ? (i % 2 ? 127 : -127) : (int)(tu_rand_u64(&rng) % 255) - 127);
        w[4 + i] = (uint8_t)wi, a[4 + i] = (uint8_t)ai;
        want += (int64_t)wi * ai;
      }
      assert_int_equal(qlm_int8_dot_i32_ref((const int8_t *)w + 4, (const int8_t *)a + 4, g), want);
      float ref = qlm_vec_dot_int8row_ref(type, w, a, g);
      assert_true(ref == (float)(((float)want * (sa * sw)) * 6.200124e-05f));
      for (int li = 0; li < 3; li++) {
        if (LEVELS[li] > qlm_cpu_detect()) continue;
        qlm_vec_dot_t_fn f = qlm_vec_dot_t_for(type, LEVELS[li]);
        assert_non_null(f);
        assert_true(f(type, w, a, g) == ref);
      }
      if (qlm_cpu_detect() >= QLM_SIMD_AVX512) {
        assert_true(qlm_vec_dot_int8row_avx512(type, w, a, g) == ref);
        if (qlm_cpu_has_avx512_vnni()) assert_true(qlm_vec_dot_int8row_avx512vnni(type, w, a, g) == ref);
      }
    }
    free(w), free(a);
  }
}

/* The independent model of bnb's product: Y[T x rows] in double, and a bound on the float
 * rounding of qlm's result.  thr <= 0: no outliers.  Returns the number of outlier columns.
 * The activation codes are computed as torch computes them, in float32: x * (127f / row_stats),
 * then rounded half to even (in double they could differ at near-ties, one code in ~5000). */
static int64_t bnb_reference(const qlm_qtensor *q, const float *X, int64_t T, double thr, double *Y, double *bound) {
  const int64_t rows = q->rows, cols = q->cols;
  uint8_t *outl = calloc((size_t)cols, 1);
  int64_t n_out = 0;
  for (int64_t c = 0; c < cols; c++) {
    for (int64_t t = 0; thr > 0 && t < T; t++) outl[c] |= fabs(X[t * cols + c]) >= thr;
    n_out += outl[c];
  }
  int *qa = malloc((size_t)cols * sizeof *qa);
  for (int64_t t = 0; t < T; t++) {
    const float *x = X + t * cols;
    double rs = 0;
    for (int64_t c = 0; c < cols; c++)
      if (!(thr > 0 && fabs(x[c]) >= thr)) rs = fmax(rs, fabs(x[c])); /* outlier elements zeroed first */
    for (int64_t c = 0; c < cols; c++) {
      volatile float inv = rs > 0 ? 127.0f / (float)rs : 0.0f; /* volatile: keep it a float32 product */
      double e = !(thr > 0 && fabs(x[c]) >= thr) ? (double)(float)(x[c] * inv) : 0.0;
      qa[c] = outl[c] ? 0 : (int)rhe(e); /* whole outlier columns leave the int8 path */
    }
    for (int64_t r = 0; r < rows; r++) {
      const uint8_t *b = (const uint8_t *)q->data + r * (int64_t)q->row_bytes;
      const int8_t *qw = (const int8_t *)(b + 4);
      double scb = rdf(b);
      int64_t C = 0;
      double fl = 0, fl_abs = 0;
      for (int64_t c = 0; c < cols; c++) {
        C += (int64_t)qw[c] * qa[c];
        if (outl[c]) {
          double wv = qw[c] * scb / 127.0;
          fl += x[c] * wv;
          fl_abs += fabs(x[c] * wv);
        }
      }
      double i8 = (double)C * rs * scb * BNB_MM;
      Y[t * rows + r] = i8 + fl;
      /* int8 part: (float)C exact below 2^24, then 3 roundings and the float constant: 5 eps;
       * float part: n_out products and sums of the dequantized weight (3 roundings each) plus
       * the final add: (n_out + 4) eps of the absolute sum. */
      bound[t * rows + r] =
          5 * F32_EPS * fabs(i8) + (double)(n_out + 4) * F32_EPS * (fl_abs + fabs(i8)) + 1e-30;
    }
  }
  free(qa), free(outl);
  return n_out;
}

static float *random_x(int64_t n, uint64_t *rng, float clip) {
  float *x = malloc((size_t)n * sizeof *x);
  for (int64_t i = 0; i < n; i++) {
    float v = tu_rand_normal(rng);
    x[i] = fminf(fmaxf(v, -clip), clip);
  }
  return x;
}

static void check_against_reference(const qlm_qtensor *q, const qlm_mat *W, const float *X, int64_t T,
                                    qlm_pool *pool, qlm_simd_level level, int64_t want_out) {
  const int64_t rows = q->rows;
  double *R = malloc((size_t)(T * rows) * sizeof *R), *B = malloc((size_t)(T * rows) * sizeof *B);
  float *Y = malloc((size_t)(T * rows) * sizeof *Y);
  assert_int_equal(bnb_reference(q, X, T, W->outlier_threshold, R, B), want_out);
  qlm_matmul_ex(W, X, T, Y, pool, level, 1);
  for (int64_t i = 0; i < T * rows; i++)
    if (!(fabs(Y[i] - R[i]) <= B[i]))
      fail_msg("T=%lld Y[%lld] = %.9g, reference %.9g (bound %.3g)", (long long)T, (long long)i, (double)Y[i], R[i],
               B[i]);
  free(R), free(B), free(Y);
}

/* No activation reaches the threshold: the plain int8 formula, at T = 1, 5, 40 (prefill too),
 * every level and thread count, each row of a T = 40 call equal to a T = 1 call on that row. */
static void test_no_outliers(void **st) {
  (void)st;
  uint64_t rng = 7;
  const int64_t rows = 160, cols = 576;
  float *Wf = random_w(rows * cols, &rng);
  qlm_qtensor q;
  quantize_w(Wf, rows, cols, &q);
  qlm_outlier_stats stats = {0};
  qlm_mat W = {.type = q.type, .rows = rows, .cols = cols, .data = q.data, .row_bytes = q.row_bytes,
               .outlier_threshold = 6.0f, .outlier_stats = &stats};
  qlm_pool *pools[3] = {qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  const int64_t Ts[3] = {1, 5, 40};
  for (int ti = 0; ti < 3; ti++) {
    int64_t T = Ts[ti];
    float *X = random_x(T * cols, &rng, 5.9f);
    check_against_reference(&q, &W, X, T, NULL, QLM_SIMD_SCALAR, 0);
    float *Y0 = malloc((size_t)(T * rows) * sizeof *Y0), *Y = malloc((size_t)(T * rows) * sizeof *Y);
    qlm_matmul_ex(&W, X, T, Y0, NULL, QLM_SIMD_SCALAR, 1);
    for (int li = 0; li < 3; li++)
      for (int p = 0; p < 3; p++) {
        if (LEVELS[li] > qlm_cpu_detect()) continue;
        memset(Y, 0xFF, (size_t)(T * rows) * sizeof *Y);
        qlm_matmul_ex(&W, X, T, Y, pools[p], LEVELS[li], 1);
        assert_memory_equal(Y, Y0, (size_t)(T * rows) * sizeof *Y);
      }
    for (int64_t t = 0; t < T; t++) { /* per-token quantization: a batch is its rows */
      qlm_matmul_ex(&W, X + t * cols, 1, Y, pools[1], qlm_cpu_detect(), 1);
      assert_memory_equal(Y, Y0 + t * rows, (size_t)rows * sizeof *Y);
    }
    free(X), free(Y0), free(Y);
  }
  assert_int_equal(atomic_load(&stats.outlier_columns), 0);
  assert_true(atomic_load(&stats.calls) > 0);
  assert_int_equal(atomic_load(&stats.columns), atomic_load(&stats.calls) * (uint64_t)cols);
  for (int p = 0; p < 3; p++) qlm_pool_free(pools[p]);
  free(Wf);
  qlm_qtensor_free(&q);
}

/* Planted outlier columns: routed to the float path (stats count them), the result equals the
 * bnb model, and the error against the exact product drops a lot compared with pure int8. */
static void test_outliers(void **st) {
  (void)st;
  uint64_t rng = 9;
  const int64_t rows = 192, cols = 512;
  const int64_t ocols[3] = {3, 100, 511};
  float *Wf = random_w(rows * cols, &rng);
  qlm_qtensor q;
  quantize_w(Wf, rows, cols, &q);
  /* W with the quantized values, to separate the activation error (what the decomposition is for) */
  float *Wd = malloc((size_t)(rows * cols) * sizeof *Wd);
  assert_true(qlm_dequantize(q.type, q.data, Wd, rows * cols));
  qlm_outlier_stats stats = {0};
  qlm_mat W = {.type = q.type, .rows = rows, .cols = cols, .data = q.data, .row_bytes = q.row_bytes,
               .outlier_threshold = 6.0f, .outlier_stats = &stats};
  qlm_mat W0 = W;
  W0.outlier_threshold = 0.0f;
  W0.outlier_stats = NULL;
  qlm_pool *pools[3] = {qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  const int64_t Ts[3] = {1, 5, 40};
  uint64_t calls = 0;
  for (int ti = 0; ti < 3; ti++) {
    int64_t T = Ts[ti];
    float *X = random_x(T * cols, &rng, 5.0f);
    for (int64_t t = 0; t < T; t++)
      for (int k = 0; k < 3; k++) X[t * cols + ocols[k]] = (t + k) % 2 ? 20.0f : -20.0f;
    if (T > 1) X[1 * cols + ocols[0]] = 5.5f; /* below 6 in an outlier column: in bnb's token absmax */
    check_against_reference(&q, &W, X, T, NULL, QLM_SIMD_SCALAR, 3);
    calls++;
    float *Y0 = malloc((size_t)(T * rows) * sizeof *Y0), *Y = malloc((size_t)(T * rows) * sizeof *Y);
    qlm_matmul_ex(&W, X, T, Y0, NULL, QLM_SIMD_SCALAR, 1);
    calls++;
    for (int li = 0; li < 3; li++)
      for (int p = 0; p < 3; p++) {
        if (LEVELS[li] > qlm_cpu_detect()) continue;
        memset(Y, 0xFF, (size_t)(T * rows) * sizeof *Y);
        qlm_matmul_ex(&W, X, T, Y, pools[p], LEVELS[li], 1);
        calls++;
        assert_memory_equal(Y, Y0, (size_t)(T * rows) * sizeof *Y);
      }
    /* errors against X Wf^T (exact) and X Wd^T (exact in the weights) */
    qlm_matmul_ex(&W0, X, T, Y, pools[1], qlm_cpu_detect(), 1);
    double e6 = 0, e0 = 0, a6 = 0, a0 = 0;
    for (int64_t t = 0; t < T; t++)
      for (int64_t r = 0; r < rows; r++) {
        double ex = 0, exd = 0;
        for (int64_t c = 0; c < cols; c++) {
          ex += (double)X[t * cols + c] * Wf[r * cols + c];
          exd += (double)X[t * cols + c] * Wd[r * cols + c];
        }
        double y6 = Y0[t * rows + r], y0 = Y[t * rows + r];
        e6 += (y6 - ex) * (y6 - ex), e0 += (y0 - ex) * (y0 - ex);
        a6 += (y6 - exd) * (y6 - exd), a0 += (y0 - exd) * (y0 - exd);
      }
    /* pure int8 rounds every token on a grid of 20/127 instead of ~5/127: its activation error
     * is about 4x larger (16x in squares); the weight error is the same in both, so the total
     * improves by less */
    print_message("T=%lld rms error vs exact: int8 %.4g, threshold 6 %.4g (x%.1f); activation part %.4g vs %.4g "
                  "(x%.1f)\n",
                  (long long)T, sqrt(e0 / (double)(T * rows)), sqrt(e6 / (double)(T * rows)), sqrt(e0 / e6),
                  sqrt(a0 / (double)(T * rows)), sqrt(a6 / (double)(T * rows)), sqrt(a0 / a6));
    assert_true(e0 > 4.0 * e6);  /* total error at least 2x smaller */
    assert_true(a0 > 9.0 * a6);  /* activation error at least 3x smaller */
    free(X), free(Y0), free(Y);
  }
  assert_int_equal(atomic_load(&stats.calls), calls);
  assert_int_equal(atomic_load(&stats.columns), calls * (uint64_t)cols);
  assert_int_equal(atomic_load(&stats.outlier_columns), calls * 3);
  for (int p = 0; p < 3; p++) qlm_pool_free(pools[p]);
  free(Wf), free(Wd);
  qlm_qtensor_free(&q);
}

/* The order bnb uses matters and is the one implemented: a token whose largest value (5.5) sits
 * in an outlier column keeps it in its absmax, although its code is then zeroed. */
static void test_absmax_order(void **st) {
  (void)st;
  const int64_t cols = 4;
  float Wf[4] = {0.5f, 1.0f, -1.0f, 0.25f};
  qlm_qtensor q;
  quantize_w(Wf, 1, cols, &q);
  qlm_mat W = {.type = q.type, .rows = 1, .cols = cols, .data = q.data, .row_bytes = q.row_bytes,
               .outlier_threshold = 6.0f};
  /* token 0 has the outlier 10 in column 0; token 1 has 5.5 there and 1.0 elsewhere */
  float X[8] = {10.0f, 1.0f, 2.0f, 3.0f, 5.5f, 1.0f, 0.3f, -0.7f};
  float Y[2];
  qlm_matmul_ex(&W, X, 2, Y, NULL, QLM_SIMD_SCALAR, 1);
  /* weights: SCB = 1, q = {64 (63.5 -> even 64), 127, -127, 32} (0.25 * 127 = 31.75 -> 32) */
  const int8_t *qw = (const int8_t *)((const uint8_t *)q.data + 4);
  assert_int_equal(qw[0], 64), assert_int_equal(qw[1], 127), assert_int_equal(qw[2], -127), assert_int_equal(qw[3], 32);
  /* token 1, bnb: rs = 5.5, codes of 1.0, 0.3, -0.7: rhe(23.09) = 23, rhe(6.93) = 7, rhe(-16.16) = -16 */
  double want1 = (127.0 * 23 - 127 * 7 + 32 * -16) * 5.5 * 1.0 * BNB_MM + 5.5 * (64 / 127.0);
  /* (zeroing the whole column before the absmax would give rs = 1 and a different answer) */
  double other1 = (127.0 * 127 - 127 * 38 + 32 * -89) * 1.0 * BNB_MM + 5.5 * (64 / 127.0);
  assert_true(fabs(Y[1] - want1) < 1e-5 && fabs(Y[1] - other1) > 1e-3);
  /* token 0: rs = 3, codes rhe(42.33) = 42, rhe(84.67) = 85, 127 */
  double want0 = (127.0 * 42 - 127 * 85 + 32 * 127) * 3.0 * BNB_MM + 10.0 * (64 / 127.0);
  assert_true(fabs(Y[0] - want0) < 1e-5);
  /* threshold 0: all int8, token 0 absmax 10: codes 127, rhe(12.7) = 13, rhe(25.4) = 25, rhe(38.1) = 38 */
  W.outlier_threshold = 0.0f;
  qlm_matmul_ex(&W, X, 2, Y, NULL, QLM_SIMD_SCALAR, 1);
  double pure0 = (64.0 * 127 + 127 * 13 - 127 * 25 + 32 * 38) * 10.0 * BNB_MM;
  assert_true(fabs(Y[0] - pure0) < 1e-5);
  qlm_qtensor_free(&q);
}

/* bitsandbytes' own CPU ops (tools/gen_llm_int8_vectors.py, bnb 0.50.2): weight codes and SCB,
 * activation codes and row_stats with and without outliers exactly; the products within float
 * rounding (the int8 part is the same float operations; bnb's addmm of the outlier columns sums
 * in another order: bound (n_out + 6) eps of the absolute terms). */
static void test_bnb_fixture(void **st) {
  (void)st;
  size_t n;
  uint8_t *d = tu_read_vectors("llm_int8/vectors.bin", "QLMI8V01", "tools/gen_llm_int8_vectors.py", &n);
  int32_t hdr[4];
  memcpy(hdr, d + 8, sizeof hdr);
  const int64_t rows = hdr[0], cols = hdr[1], T = hdr[2];
  assert_true(rows == 24 && cols == 80 && T == 5 && hdr[3] == 2);
  size_t off = 24;
#define TAKE(ptr, bytes) (assert_true(off + (bytes) <= n), (ptr) = (void *)(d + off), off += (bytes))
  const float *Wf, *SCB, *X;
  const int8_t *CB;
  TAKE(Wf, (size_t)(rows * cols) * 4);
  TAKE(CB, (size_t)(rows * cols));
  TAKE(SCB, (size_t)rows * 4);
  TAKE(X, (size_t)(T * cols) * 4);
  float *Wc = malloc((size_t)(rows * cols) * sizeof *Wc), *Xc = malloc((size_t)(T * cols) * sizeof *Xc);
  memcpy(Wc, Wf, (size_t)(rows * cols) * 4), memcpy(Xc, X, (size_t)(T * cols) * 4); /* aligned copies */
  qlm_qtensor q;
  quantize_w(Wc, rows, cols, &q);
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *b = (const uint8_t *)q.data + r * (int64_t)q.row_bytes;
    float scb;
    memcpy(&scb, SCB + r, 4);
    assert_true(rdf(b) == scb);
    assert_memory_equal(b + 4, CB + r * cols, (size_t)cols);
  }
  uint8_t *act = malloc(4 + (size_t)cols);
  float *Y = malloc((size_t)(T * rows) * sizeof *Y), *Wd = malloc((size_t)(rows * cols) * sizeof *Wd);
  assert_true(qlm_dequantize(q.type, q.data, Wd, rows * cols));
  for (int cs = 0; cs < 2; cs++) {
    float thr;
    int32_t n_out;
    memcpy(&thr, d + off, 4), memcpy(&n_out, d + off + 4, 4);
    off += 8;
    assert_true(n_out >= 0 && n_out <= cols);
    int32_t *oc = malloc((size_t)n_out * 4 + 4);
    float *SCA = malloc((size_t)T * 4), *Yb = malloc((size_t)(T * rows) * 4);
    const int8_t *CA;
    const void *p;
    TAKE(p, (size_t)n_out * 4), memcpy(oc, p, (size_t)n_out * 4);
    TAKE(p, (size_t)T * 4), memcpy(SCA, p, (size_t)T * 4);
    TAKE(CA, (size_t)(T * cols));
    TAKE(p, (size_t)(T * rows) * 4), memcpy(Yb, p, (size_t)(T * rows) * 4);
    assert_int_equal(n_out, thr > 0 ? 3 : 0);
    for (int64_t t = 0; t < T; t++) { /* qlm's activation quantizer + column zeroing = bnb's CA, SCA */
      qlm_q8_row_quantize(Xc + t * cols, act, cols, thr);
      for (int32_t j = 0; j < n_out; j++) act[4 + oc[j]] = 0;
      assert_true(rdf(act) == SCA[t]);
      assert_memory_equal(act + 4, CA + t * cols, (size_t)cols);
    }
    qlm_outlier_stats stats = {0};
    qlm_mat W = {.type = q.type, .rows = rows, .cols = cols, .data = q.data, .row_bytes = q.row_bytes,
                 .outlier_threshold = thr, .outlier_stats = &stats};
    for (int li = 0; li < 3; li++) {
      if (LEVELS[li] > qlm_cpu_detect()) continue;
      qlm_matmul_ex(&W, Xc, T, Y, NULL, LEVELS[li], 1);
      for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < rows; r++) {
          double abs_sum = 0;
          for (int32_t j = 0; j < n_out; j++) abs_sum += fabs((double)Xc[t * cols + oc[j]] * Wd[r * cols + oc[j]]);
          double y = Y[t * rows + r], yb = Yb[t * rows + r];
          double bound = (double)(n_out + 6) * F32_EPS * (abs_sum + fabs(yb)) + 1e-30;
          if (!(fabs(y - yb) <= bound))
            fail_msg("threshold %g Y[%lld][%lld] = %.9g, bnb %.9g", (double)thr, (long long)t, (long long)r, y, yb);
        }
    }
    assert_int_equal(atomic_load(&stats.outlier_columns), (uint64_t)n_out * atomic_load(&stats.calls));
    free(oc), free(SCA), free(Yb);
  }
  assert_int_equal(off, n);
#undef TAKE
  free(act), free(Y), free(Wd), free(Wc), free(Xc), free(d);
  qlm_qtensor_free(&q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_weight_quantization), cmocka_unit_test(test_method_errors),
      cmocka_unit_test(test_simd_dots),           cmocka_unit_test(test_no_outliers),
      cmocka_unit_test(test_outliers),            cmocka_unit_test(test_absmax_order),
      cmocka_unit_test(test_bnb_fixture),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
