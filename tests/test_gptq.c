/* test_gptq.c — GPTQ (quant/gptq.c) on seeded synthetic layers with correlated inputs, and
 * against the torch reference of tools/gptq_reference.py (tests/data/gptq/vectors.bin). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "core/fp16.h"
#include "kernels/rtn.h"
#include "kernels/types.h"
#include "quant/gptq.h"
#include "quant/method.h"
#include "quant/quantize.h"
#include "model/model.h"
#include "testutil.h"

/* A synthetic layer: W [rows x cols], inputs X [cols x T] that are strongly correlated (a
 * rank-8 mix plus noise, uneven channel scales), H = X X^T / T. */
typedef struct layer {
  int64_t rows, cols, T;
  float *W, *X;
  double *H;
} layer;

static void make_layer(layer *L, int64_t rows, int64_t cols, int64_t T, uint64_t seed, const int *dead, int n_dead) {
  uint64_t s = seed;
  L->rows = rows, L->cols = cols, L->T = T;
  L->W = malloc(sizeof(float) * rows * cols);
  L->X = malloc(sizeof(float) * cols * T);
  L->H = calloc((size_t)(cols * cols), sizeof(double));
  for (int64_t i = 0; i < rows * cols; i++) L->W[i] = 0.05f * tu_rand_normal(&s);
  enum { K = 8 };
  float *A = malloc(sizeof(float) * cols * K), *Z = malloc(sizeof(float) * K * T);
  for (int64_t i = 0; i < cols * K; i++) A[i] = tu_rand_normal(&s);
  for (int64_t i = 0; i < K * T; i++) Z[i] = tu_rand_normal(&s);
  for (int64_t c = 0; c < cols; c++) {
    float sc = expf(0.5f * tu_rand_normal(&s));
    for (int64_t t = 0; t < T; t++) {
      float v = 0.3f * tu_rand_normal(&s);
      for (int k = 0; k < K; k++) v += A[c * K + k] * Z[k * T + t];
      L->X[c * T + t] = sc * v;
    }
  }
  for (int i = 0; i < n_dead; i++)
    for (int64_t t = 0; t < T; t++) L->X[dead[i] * T + t] = 0.0f;
  for (int64_t i = 0; i < cols; i++)
    for (int64_t j = 0; j <= i; j++) {
      double acc = 0.0;
      for (int64_t t = 0; t < T; t++) acc += (double)L->X[i * T + t] * L->X[j * T + t];
      L->H[i * cols + j] = L->H[j * cols + i] = acc / (double)T;
    }
  free(A), free(Z);
}

static void free_layer(layer *L) { free(L->W), free(L->X), free(L->H); }

static qlm_calib calib_of(const layer *L) {
  qlm_calib c = {.cols = L->cols, .n_tokens = L->T, .hessian = L->H};
  return c;
}

/* ||W X - Ŵ X||^2 computed from X directly (independent of H and of gptq.c's helper). */
static double output_error(const layer *L, const float *Wh) {
  double total = 0.0;
  for (int64_t r = 0; r < L->rows; r++)
    for (int64_t t = 0; t < L->T; t++) {
      double y = 0.0;
      for (int64_t c = 0; c < L->cols; c++)
        y += ((double)L->W[r * L->cols + c] - Wh[r * L->cols + c]) * L->X[c * L->T + t];
      total += y * y;
    }
  return total;
}

static float *dequant(const qlm_qtensor *q) {
  float *w = malloc(sizeof(float) * q->rows * q->cols);
  for (int64_t r = 0; r < q->rows; r++)
    assert_true(qlm_dequantize(q->type, (const char *)q->data + r * q->row_bytes, w + r * q->cols, q->cols));
  return w;
}

static qlm_quant_opts gopts(int bits, int group, bool asym) {
  qlm_quant_opts o = {0};
  o.bits = bits, o.group = group, o.asym = asym;
  qlm_method_gptq.defaults(&o);
  return o;
}

/* GPTQ's min-max grid written here from its definition (QUANT_FACTS.md section 3), with the
 * scale rounded to half as qlm stores it. */
static void ref_grid(const float *x, int n, int bits, bool asym, float *d, int *z) {
  float lo = 0, hi = 0, maxq = (float)((1 << bits) - 1);
  for (int i = 0; i < n; i++) lo = fminf(lo, x[i]), hi = fmaxf(hi, x[i]);
  if (!asym) {
    hi = fmaxf(fabsf(lo), hi);
    if (lo < 0) lo = -hi;
  }
  if (lo == 0 && hi == 0) lo = -1, hi = 1;
  *d = qlm_f16_to_f32(qlm_f32_to_f16((hi - lo) / maxq));
  *z = asym ? (int)nearbyintf(-lo / *d) : 1 << (bits - 1);
}

/* (1) With a huge dampening H ~ λI: no error is propagated and GPTQ is plain rounding on its grid. */
static void test_huge_damp_is_rounding(void **state) {
  (void)state;
  layer L;
  make_layer(&L, 16, 128, 256, 11, NULL, 0);
  qlm_calib cal = calib_of(&L);
  const int groups[] = {32, 0, 64};
  for (int k = 0; k < 6; k++) {
    bool asym = k & 1;
    int bits = k < 2 ? 4 : k < 4 ? 3 : 8, group = groups[k / 2];
    qlm_quant_opts o = gopts(bits, group, asym);
    o.damp = 1e10f;
    qlm_qtensor q = {0};
    qlm_error err = {0};
    assert_int_equal(qlm_method_gptq.quantize(L.W, L.rows, L.cols, &cal, &o, &q, &err), QLM_OK);
    int g = group ? group : (int)L.cols;
    assert_int_equal(q.type, qlm_rtn_type(true, bits, g));
    size_t bs = (size_t)qlm_rtn_header_bytes(q.type) + (size_t)qlm_rtn_code_bytes(q.type);
    uint8_t u[128];
    for (int64_t r = 0; r < L.rows; r++)
      for (int64_t c = 0; c < L.cols; c += g) {
        const float *x = L.W + r * L.cols + c;
        float d, dr;
        int z, zr;
        qlm_rtn_unpack(q.type, (const char *)q.data + r * q.row_bytes + (c / g) * bs, &d, &z, u);
        ref_grid(x, g, bits, asym, &dr, &zr);
        assert_true(d == dr);
        assert_int_equal(z, zr);
        for (int i = 0; i < g; i++) {
          double v = nearbyint((double)x[i] / dr) + zr;
          v = v < 0 ? 0 : v > (1 << bits) - 1 ? (1 << bits) - 1 : v;
          assert_int_equal(u[i], (int)v);
        }
      }
    qlm_qtensor_free(&q);
  }
  free_layer(&L);
}

/* (2) Output error below RTN's (zero-point RTN, same bits and group) by a clear margin. */
static void test_beats_rtn(void **state) {
  (void)state;
  layer L;
  make_layer(&L, 32, 256, 1024, 22, NULL, 0);
  qlm_calib cal = calib_of(&L);
  const int cfg[][2] = {{4, 128}, {4, 32}, {3, 64}, {2, 0}, {8, 64}};
  for (int k = 0; k < 5; k++) {
    qlm_quant_opts o = gopts(cfg[k][0], cfg[k][1], true), ro = {0};
    ro.bits = cfg[k][0], ro.group = cfg[k][1];
    qlm_method_zeropoint.defaults(&ro);
    qlm_qtensor q = {0}, rq = {0};
    qlm_error err = {0};
    float *wh = malloc(sizeof(float) * L.rows * L.cols);
    double loss = 0;
    assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &o, &q, wh, &loss, &err), QLM_OK);
    assert_int_equal(qlm_method_zeropoint.quantize(L.W, L.rows, L.cols, NULL, &ro, &rq, &err), QLM_OK);
    float *wg = dequant(&q), *wr = dequant(&rq);
    assert_memory_equal(wg, wh, sizeof(float) * L.rows * L.cols); /* stored == algorithm's Ŵ */
    double eg = output_error(&L, wg), er = output_error(&L, wr);
    /* the helper agrees with the direct computation: tr(ΔHΔ^T) = ||ΔX||^2 / T */
    double tr = qlm_gptq_layer_error(L.W, wg, L.rows, L.cols, L.H) * (double)L.T;
    assert_true(fabs(tr - eg) <= 1e-6 * eg);
    print_message("gptq bits=%d group=%d: ||WX-ŴX||^2 %.5g, rtn zeropoint %.5g (ratio %.3f)\n", cfg[k][0], cfg[k][1],
                  eg, er, eg / er);
    assert_true(eg < 0.6 * er);
    free(wh), free(wg), free(wr);
    qlm_qtensor_free(&q), qlm_qtensor_free(&rq);
  }
  free_layer(&L);
}

/* (3b) Threads: the rows are split among n_threads (quant/gptq.c), and the codes, grids, Ŵ and
 * the companion are bit-identical to one thread's for every grid kind (the loss is summed per
 * thread, so it may differ in the last bits).  100 rows: a share that is not a whole tile. */
static void test_threads_identical(void **state) {
  (void)state;
  layer L;
  make_layer(&L, 100, 256, 600, 44, NULL, 0);
  qlm_calib cal = calib_of(&L);
  struct { int group; bool act_order, static_groups; } cfg[] = {{128, false, false}, {64, true, false}, {64, true, true}, {0, false, false}};
  for (int k = 0; k < 4; k++) {
    qlm_quant_opts o1 = gopts(4, cfg[k].group, true);
    o1.act_order = cfg[k].act_order, o1.static_groups = cfg[k].static_groups;
    qlm_qtensor q1 = {0};
    qlm_error err = {0};
    float *w1 = malloc(sizeof(float) * L.rows * L.cols), *wn = malloc(sizeof(float) * L.rows * L.cols);
    double l1 = 0, ln = 0;
    o1.n_threads = 1;
    assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &o1, &q1, w1, &l1, &err), QLM_OK);
    const int nts[] = {2, 3, 8};
    for (int t = 0; t < 3; t++) {
      qlm_quant_opts on = o1;
      on.n_threads = nts[t];
      qlm_qtensor qn = {0};
      assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &on, &qn, wn, &ln, &err), QLM_OK);
      assert_int_equal(qn.type, q1.type);
      assert_int_equal(qn.n_aux, q1.n_aux);
      assert_memory_equal(qn.data, q1.data, (size_t)q1.rows * q1.row_bytes);
      for (int a = 0; a < q1.n_aux; a++) assert_memory_equal(qn.aux[a].data, q1.aux[a].data, (size_t)q1.aux[a].n * 4);
      assert_memory_equal(wn, w1, sizeof(float) * L.rows * L.cols);
      assert_true(fabs(ln - l1) <= 1e-12 * l1);
      qlm_qtensor_free(&qn);
    }
    free(w1), free(wn);
    qlm_qtensor_free(&q1);
  }
  free_layer(&L);
}

/* (3c) The memo (qlm_calib.memo): matrices that share an input share GPTQ's factor.  Two weight
 * matrices of different heights on one Hessian, quantized through one memo, give the bytes they
 * give without it, for each option set the factor depends on (damp, act_order); a memo made for
 * other options is replaced, not reused (the option sets follow each other through one memo). */
static void test_memo_shared_factor(void **state) {
  (void)state;
  const int dead[] = {5, 77};
  layer A, B;
  make_layer(&A, 48, 192, 400, 61, dead, 2);
  make_layer(&B, 80, 192, 400, 62, dead, 2);
  /* B's weights on A's statistics; B's own Hessian (same dead inputs) is handed in with the memo
   * for B, so the bytes match only if B's factor really came from the memo */
  struct { float damp; bool act_order; int group; } cfg[] = {{0.01f, false, 64}, {0.01f, true, 64}, {0.1f, true, 64}, {0.01f, false, 0}};
  qlm_calib_memo memo = {0};
  for (int k = 0; k < 4; k++) {
    qlm_quant_opts o = gopts(4, cfg[k].group, true);
    o.damp = cfg[k].damp, o.damp_set = true, o.act_order = cfg[k].act_order;
    const layer *Ls[2] = {&A, &B};
    for (int m = 0; m < 2; m++) {
      const layer *L = Ls[m];
      qlm_calib plain = calib_of(&A), shared = plain;
      shared.memo = &memo;
      if (m == 1) shared.hessian = B.H;
      qlm_qtensor q0 = {0}, q1 = {0};
      qlm_error err = {0};
      assert_int_equal(qlm_gptq_quantize_ex(L->W, L->rows, L->cols, &plain, &o, &q0, NULL, NULL, &err), QLM_OK);
      assert_int_equal(qlm_gptq_quantize_ex(L->W, L->rows, L->cols, &shared, &o, &q1, NULL, NULL, &err), QLM_OK);
      assert_non_null(memo.data); /* filled by the first matrix of this option set, kept by the second */
      assert_int_equal(q1.n_aux, q0.n_aux);
      assert_memory_equal(q1.data, q0.data, (size_t)q0.rows * q0.row_bytes);
      for (int a = 0; a < q0.n_aux; a++) assert_memory_equal(q1.aux[a].data, q0.aux[a].data, (size_t)q0.aux[a].n * 4);
      qlm_qtensor_free(&q0), qlm_qtensor_free(&q1);
    }
  }
  qlm_calib_memo_clear(&memo);
  assert_null(memo.data);
  free_layer(&A), free_layer(&B);
}

/* (3) act-order with static groups: the stored tensor gives exactly the algorithm's Ŵ (the
 * permutation undone), each group's grid is that of the original group, and act-order changes
 * (and here improves) the result. */
static void test_act_order_static(void **state) {
  (void)state;
  layer L;
  make_layer(&L, 24, 192, 768, 33, NULL, 0);
  qlm_calib cal = calib_of(&L);
  const int groups[] = {32, 64, 0};
  for (int k = 0; k < 3; k++) {
    qlm_quant_opts o = gopts(4, groups[k], k != 1), o0 = o;
    o.act_order = true, o.static_groups = true;
    o0.static_groups = true;
    qlm_qtensor q = {0}, q0 = {0};
    qlm_error err = {0};
    float *wh = malloc(sizeof(float) * L.rows * L.cols), *wh0 = malloc(sizeof(float) * L.rows * L.cols);
    assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &o, &q, wh, NULL, &err), QLM_OK);
    assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &o0, &q0, wh0, NULL, &err), QLM_OK);
    float *w = dequant(&q);
    assert_memory_equal(w, wh, sizeof(float) * L.rows * L.cols);
    /* static grids come from the original weights: the same with and without act-order */
    assert_true(q.type == q0.type);
    int g = groups[k] ? groups[k] : (int)L.cols, hb = qlm_rtn_header_bytes(q.type);
    size_t bs = (size_t)hb + (size_t)qlm_rtn_code_bytes(q.type);
    for (int64_t r = 0; r < L.rows; r++)
      for (int64_t b = 0; b < L.cols / g; b++)
        assert_memory_equal((char *)q.data + r * q.row_bytes + b * bs, (char *)q0.data + r * q0.row_bytes + b * bs, hb);
    double e = output_error(&L, w), e0 = output_error(&L, wh0);
    print_message("static groups g=%d: act-order %.5g, natural order %.5g\n", g, e, e0);
    assert_true(e != e0);
    assert_true(e < 1.05 * e0);
    free(w), free(wh), free(wh0);
    qlm_qtensor_free(&q), qlm_qtensor_free(&q0);
  }
  free_layer(&L);
}

/* (3b) act_order with dynamic groups (AutoGPTQ's default): stored permuted with a ".perm"
 * companion; the method's dequantizer gives the algorithm's Q in the original order; on a layer
 * with uneven input scales it beats the natural order. */
static void test_act_order_dynamic(void **state) {
  (void)state;
  layer L;
  make_layer(&L, 24, 192, 768, 34, NULL, 0);
  qlm_calib cal = calib_of(&L);
  const int groups[] = {32, 64};
  for (int k = 0; k < 2; k++) {
    qlm_quant_opts o = gopts(4, groups[k], k), o0 = o;
    o.act_order = true;
    qlm_qtensor q = {0}, q0 = {0};
    qlm_error err = {0};
    float *wh = malloc(sizeof(float) * L.rows * L.cols), *wh0 = malloc(sizeof(float) * L.rows * L.cols);
    float *back = malloc(sizeof(float) * L.rows * L.cols);
    assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &o, &q, wh, NULL, &err), QLM_OK);
    assert_int_equal(qlm_gptq_quantize_ex(L.W, L.rows, L.cols, &cal, &o0, &q0, wh0, NULL, &err), QLM_OK);
    assert_int_equal(q.n_aux, 1);
    assert_int_equal(q0.n_aux, 0);
    assert_int_equal(qlm_method_gptq.dequantize(&q, back, &err), QLM_OK);
    assert_memory_equal(back, wh, sizeof(float) * L.rows * L.cols);
    /* bpw: the permutation costs 32 bits per column, shared by the rows */
    assert_true(fabs(q.bpw - q0.bpw - 32.0 / (double)L.rows) < 1e-9);
    double e = output_error(&L, wh), e0 = output_error(&L, wh0);
    print_message("dynamic groups g=%d: act-order %.5g, natural order %.5g\n", groups[k], e, e0);
    assert_true(e < e0);
    free(wh), free(wh0), free(back);
    qlm_qtensor_free(&q), qlm_qtensor_free(&q0);
  }
  free_layer(&L);
}

/* (4) Dead inputs (zero columns of X): their weights become 0, everything stays finite, the
 * error on the live inputs still beats RTN; an all-dead Hessian gives an all-zero layer. */
static void test_dead_inputs(void **state) {
  (void)state;
  const int dead[] = {0, 17, 63, 64, 127};
  layer L;
  make_layer(&L, 16, 128, 512, 44, dead, 5);
  qlm_calib cal = calib_of(&L);
  for (int act = 0; act < 2; act++) {
    qlm_quant_opts o = gopts(4, 32, true);
    o.act_order = o.static_groups = act;
    qlm_qtensor q = {0};
    qlm_error err = {0};
    assert_int_equal(qlm_method_gptq.quantize(L.W, L.rows, L.cols, &cal, &o, &q, &err), QLM_OK);
    float *w = dequant(&q);
    for (int64_t r = 0; r < L.rows; r++) {
      for (int i = 0; i < 5; i++) assert_true(w[r * L.cols + dead[i]] == 0.0f);
      for (int64_t c = 0; c < L.cols; c++) assert_true(isfinite(w[r * L.cols + c]));
    }
    qlm_quant_opts ro = {.bits = 4, .group = 32};
    qlm_method_zeropoint.defaults(&ro);
    qlm_qtensor rq = {0};
    assert_int_equal(qlm_method_zeropoint.quantize(L.W, L.rows, L.cols, NULL, &ro, &rq, &err), QLM_OK);
    float *wr = dequant(&rq);
    assert_true(output_error(&L, w) < 0.6 * output_error(&L, wr));
    free(w), free(wr);
    qlm_qtensor_free(&q), qlm_qtensor_free(&rq);
  }
  memset(L.H, 0, sizeof(double) * L.cols * L.cols);
  qlm_quant_opts o = gopts(4, 64, false);
  qlm_qtensor q = {0};
  qlm_error err = {0};
  assert_int_equal(qlm_method_gptq.quantize(L.W, L.rows, L.cols, &cal, &o, &q, &err), QLM_OK);
  float *w = dequant(&q);
  for (int64_t i = 0; i < L.rows * L.cols; i++) assert_true(w[i] == 0.0f);
  free(w);
  qlm_qtensor_free(&q);
  free_layer(&L);
}

static void expect_fail(const float *W, int64_t rows, int64_t cols, const qlm_calib *cal, qlm_quant_opts o, int code,
                        const char *needle) {
  qlm_qtensor q = {0};
  qlm_error err = {0};
  int rc = qlm_method_gptq.check(&o, rows, cols, &err);
  if (rc == QLM_OK) rc = qlm_method_gptq.quantize(W, rows, cols, cal, &o, &q, &err);
  if (rc != code || !strstr(err.msg, needle)) print_message("got %d: %s\n", rc, err.msg);
  assert_int_equal(rc, code);
  assert_non_null(strstr(err.msg, needle));
  assert_null(q.data);
}

/* (5) Bad options, shapes and inputs give clear errors. */
static void test_errors(void **state) {
  (void)state;
  layer L;
  make_layer(&L, 8, 64, 128, 55, NULL, 0);
  qlm_calib cal = calib_of(&L), bad = cal;
  expect_fail(L.W, 8, 64, NULL, gopts(4, 32, 0), QLM_EUSAGE, "Hessian");
  bad.hessian = NULL;
  expect_fail(L.W, 8, 64, &bad, gopts(4, 32, 0), QLM_EUSAGE, "Hessian");
  bad = cal, bad.cols = 32;
  expect_fail(L.W, 8, 64, &bad, gopts(4, 32, 0), QLM_EUSAGE, "32 inputs");
  expect_fail(L.W, 8, 64, &cal, gopts(9, 32, 0), QLM_EUSAGE, "bits=9");
  expect_fail(L.W, 8, 64, &cal, gopts(1, 32, 0), QLM_EUSAGE, "bits=1");
  expect_fail(L.W, 8, 64, &cal, gopts(4, QLM_GROUP_TENSOR, 0), QLM_EUSAGE, "group=tensor");
  qlm_quant_opts o = gopts(4, 32, 0);
  float *W = malloc(sizeof(float) * 8 * 64);
  memcpy(W, L.W, sizeof(float) * 8 * 64);
  W[70] = NAN;
  expect_fail(W, 8, 64, &cal, gopts(4, 32, 0), QLM_EUSAGE, "weight (1, 6) is not finite");
  W[70] = 1e30f;
  expect_fail(W, 8, 64, &cal, gopts(4, 32, 0), QLM_EUSAGE, "too large");
  free(W);
  /* an indefinite Hessian without dampening */
  L.H[3 * 64 + 3] = -5.0;
  o = gopts(4, 32, 0);
  o.damp = 0;
  expect_fail(L.W, 8, 64, &cal, o, QLM_EUSAGE, "not positive definite");
  L.H[3 * 64 + 3] = NAN;
  expect_fail(L.W, 8, 64, &cal, gopts(4, 32, 0), QLM_EUSAGE, "Hessian entry (3, 3) is not finite");
  /* option words */
  qlm_error err = {0};
  qlm_quant_opts p = {0};
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "damp", "-1", "rules:3", &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "rules:3: damp=-1"));
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "block", "0", "cli", &err), QLM_EUSAGE);
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "act_order", "maybe", "cli", &err), QLM_EUSAGE);
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "damp", "0.05", "cli", &err), QLM_OK);
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "desc_act", "1", "cli", &err), QLM_OK);
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "static_groups", "yes", "cli", &err), QLM_OK);
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "block", "64", "cli", &err), QLM_OK);
  assert_true(p.damp == 0.05f && p.damp_set && p.act_order && p.static_groups && p.block == 64);
  free_layer(&L);
}

/* (6) The torch reference (tools/gptq_reference.py): codes and zero points equal, scales within
 * one half ulp (a half computed from float min/max of weights that differ from the reference's
 * only by double rounding of differently ordered sums), loss within 1e-9. */
static void test_reference(void **state) {
  (void)state;
  size_t n;
  uint8_t *d = tu_read_vectors("gptq/vectors.bin", "QLMGPTQ1", "tools/gptq_reference.py", &n);
  int32_t hdr[3];
  memcpy(hdr, d + 8, sizeof hdr);
  int64_t rows = hdr[0], cols = hdr[1], ncase = hdr[2];
  size_t off = 20;
  float *W = malloc(sizeof(float) * rows * cols);
  double *H = malloc(sizeof(double) * cols * cols);
  assert_true(off + sizeof(float) * rows * cols + sizeof(double) * cols * cols <= n);
  memcpy(W, d + off, sizeof(float) * rows * cols), off += sizeof(float) * rows * cols;
  memcpy(H, d + off, sizeof(double) * cols * cols), off += sizeof(double) * cols * cols;
  qlm_calib cal = {.cols = cols, .n_tokens = 1024, .hessian = H};
  float *wh = malloc(sizeof(float) * rows * cols);
  uint8_t *u = malloc(cols);
  for (int k = 0; k < ncase; k++) {
    int32_t c[6];
    float damp;
    double loss_ref, loss;
    assert_true(off + 28 + 8 <= n);
    memcpy(c, d + off, sizeof c), memcpy(&damp, d + off + 24, 4), memcpy(&loss_ref, d + off + 28, 8);
    off += 36;
    int g = c[1] ? c[1] : (int)cols, ng = (int)(cols / g);
    qlm_quant_opts o = {.bits = c[0], .group = c[1], .asym = c[2], .act_order = c[3], .static_groups = c[4],
                        .block = c[5], .damp = damp, .damp_set = true};
    qlm_qtensor q = {0};
    qlm_error err = {0};
    assert_int_equal(qlm_gptq_quantize_ex(W, rows, cols, &cal, &o, &q, wh, &loss, &err), QLM_OK);
    const uint8_t *codes = d + off;
    off += (size_t)(rows * cols);
    const uint8_t *dref = d + off, *zref = d + off + 4 * rows * ng;
    off += (size_t)(8 * rows * ng);
    assert_true(off <= n);
    size_t bs = (size_t)qlm_rtn_header_bytes(q.type) + (size_t)qlm_rtn_code_bytes(q.type);
    /* act_order with dynamic groups: stored in the permuted column order, with the permutation as
     * the ".perm" companion (stored position p holds original column perm[p]) */
    bool permuted = c[3] && !c[4] && g < cols;
    assert_int_equal(q.n_aux, permuted ? 1 : 0);
    int64_t *perm = malloc(sizeof(int64_t) * cols);
    for (int64_t p = 0; p < cols; p++) perm[p] = p;
    if (permuted) {
      assert_string_equal(q.aux[0].suffix, ".perm");
      assert_int_equal(q.aux[0].n, cols);
      for (int64_t p = 0; p < cols; p++) perm[p] = (int64_t)((const float *)q.aux[0].data)[p];
      for (int64_t p = 1; p < cols; p++) /* decreasing diag(H), ties by column */
        assert_true(H[perm[p - 1] * cols + perm[p - 1]] > H[perm[p] * cols + perm[p]] ||
                    (H[perm[p - 1] * cols + perm[p - 1]] == H[perm[p] * cols + perm[p]] && perm[p - 1] < perm[p]));
    }
    /* the stored tensor, dequantized by the method, is the algorithm's Q in the original order */
    float *back = malloc(sizeof(float) * rows * cols);
    assert_int_equal(qlm_method_gptq.dequantize(&q, back, &err), QLM_OK);
    for (int64_t i = 0; i < rows * cols; i++) assert_true(fabsf(back[i] - wh[i]) <= 1e-6f * (fabsf(wh[i]) + 1e-3f));
    free(back);
    int code_diff = 0;
    double max_rel = 0;
    for (int64_t r = 0; r < rows; r++)
      for (int b = 0; b < ng; b++) {
        float dq, dr;
        int z;
        int32_t zr;
        qlm_rtn_unpack(q.type, (const char *)q.data + r * q.row_bytes + b * bs, &dq, &z, u);
        memcpy(&dr, dref + 4 * (r * ng + b), 4), memcpy(&zr, zref + 4 * (r * ng + b), 4);
        max_rel = fmax(max_rel, fabs(dq - dr) / dr);
        assert_true(fabs(dq - dr) <= dr * 0x1p-10f);
        assert_int_equal(z, zr);
        for (int i = 0; i < g; i++) code_diff += u[i] != codes[r * cols + perm[b * g + i]];
      }
    free(perm);
    print_message("reference case %d (bits=%d group=%d asym=%d act=%d static=%d block=%d): %d codes differ, "
                  "scales max rel diff %.3g, loss %.9g vs %.9g\n",
                  k, c[0], c[1], c[2], c[3], c[4], c[5], code_diff, max_rel, loss, loss_ref);
    assert_int_equal(code_diff, 0);
    assert_true(fabs(loss - loss_ref) <= 1e-9 * loss_ref);
    qlm_qtensor_free(&q);
  }
  assert_int_equal(off, n);
  free(u), free(wh), free(W), free(H), free(d);
}

/* (7) stories260K through the driver with act_order and dynamic groups: every linear stored
 * permuted with its ".perm", the loaded model gathers its inputs, and the text stays close to
 * the f32 model's (a missing or wrong gather gives noise). */
static void test_stories_act_order(void **state) {
  (void)state;
  char *sp = tu_shared("models/stories260K/stories260K.gguf"), *calib = tu_shared("data/calibration/llama-factory/c4_demo.jsonl");
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_source_open(sp, NULL, &src, &err)) fail_msg("%s", err.msg);
  enum { N = 64 };
  int32_t ref[N], forced[N];
  tu_greedy(src, N, NULL, ref, NULL);
  char *dir = tu_tmpdir(), out[512];
  int agree[2];
  for (int act = 0; act < 2; act++) {
    snprintf(out, sizeof out, "%s/gptq_act%d.gguf", dir, act);
    qlm_quant_params p = {.method = &qlm_method_gptq, .embd_type = QLM_TYPE_F32, .n_threads = 2, .calib_text = calib,
                          .calib = {.n_samples = 8, .seq_len = 128, .seed = 1},
                          .opts = {.bits = 4, .group = 32, .asym = true, .act_order = act}};
    qlm_quant_summary s;
    if (qlm_quantize(src, out, &p, &s, &err)) fail_msg("%s", err.msg);
    assert_int_equal(s.n_quantized + s.n_fallback, 35); /* ffn_down's 172 columns: groups of 43 (noted) */
    qlm_source *q = NULL;
    if (qlm_source_open(out, NULL, &q, &err)) fail_msg("%s", err.msg);
    qlm_model *m = NULL;
    if (qlm_model_load(q, &m, &err)) fail_msg("%s", err.msg);
    for (int il = 0; il < m->hp.n_layer; il++) {
      const qlm_layer *L = &m->layers[il];
      assert_true(act ? L->in_q.perm && L->in_o.perm && L->in_down.perm : !L->in_q.perm && !L->in_down.perm);
      assert_true(L->in_q.act_scale == 0.0f);
    }
    qlm_model_free(m);
    tu_greedy(q, N, ref, forced, NULL);
    agree[act] = 0;
    for (int k = 0; k < N; k++) agree[act] += forced[k] == ref[k];
    qlm_source_close(q);
    unlink(out);
  }
  print_message("gptq 4-bit g32 on stories260K: teacher-forced picks equal to f32 %d/%d (act_order) %d/%d (natural)\n",
                agree[1], N, agree[0], N);
  assert_true(agree[1] >= N - 8 && agree[0] >= N - 8);
  rmdir(dir);
  free(dir), free(sp), free(calib);
  qlm_source_close(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_huge_damp_is_rounding), cmocka_unit_test(test_beats_rtn),
      cmocka_unit_test(test_act_order_static), cmocka_unit_test(test_threads_identical),
      cmocka_unit_test(test_memo_shared_factor),      cmocka_unit_test(test_dead_inputs),
      cmocka_unit_test(test_act_order_dynamic),     cmocka_unit_test(test_stories_act_order),
      cmocka_unit_test(test_errors),                cmocka_unit_test(test_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
