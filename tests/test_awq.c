/* test_awq.c — AWQ (quant/awq.c).
 * References: the exact f32 products of synthetic layers on their own inputs (not the Hessian the
 * method uses), qlm's zero-point RTN (AWQ at alpha = 0 without clipping is the same grid), the
 * quantizer formulas of llm-awq written out here, and the unquantized model's logits (folding the
 * scales must not change them before rounding; quantized, AWQ must drift less than RTN). */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fp16.h"
#include "kernels/rtn.h"
#include "kernels/types.h"
#include "model/model.h"
#include "kernels/threadpool.h"
#include "quant/awq.h"
#include "quant/method.h"
#include "quant/quantize.h"

#define STORIES "models/stories260K/stories260K.gguf"

/* A synthetic input X [T x C]: gaussian, channel j scaled by gain[j]; its H = X^T X / T and mean |x|. */
typedef struct layer_in {
  int T, C;
  float *X, *absmean;
  double *H;
} layer_in;

static layer_in make_input(int T, int C, const float *gain, uint64_t seed, bool signs_only) {
  layer_in in = {.T = T, .C = C};
  in.X = malloc((size_t)T * C * sizeof *in.X);
  in.absmean = calloc((size_t)C, sizeof *in.absmean);
  in.H = calloc((size_t)C * C, sizeof *in.H);
  uint64_t rng = seed;
  for (int t = 0; t < T; t++)
    for (int j = 0; j < C; j++) {
      float v = signs_only ? (tu_rand_u64(&rng) & 1 ? 1.0f : -1.0f) : tu_rand_normal(&rng);
      in.X[t * C + j] = v * gain[j];
    }
  for (int t = 0; t < T; t++)
    for (int i = 0; i < C; i++) {
      double xi = in.X[t * C + i];
      in.absmean[i] += fabsf(in.X[t * C + i]) / (float)T;
      for (int j = 0; j < C; j++) in.H[(size_t)i * C + j] += xi * in.X[t * C + j] / T;
    }
  return in;
}

static void free_input(layer_in *in) { free(in->X), free(in->absmean), free(in->H); }

/* sum over tokens and rows of (x (W - Wq)^T)^2 / T, directly from X: x is divided by s (NULL: 1)
 * for Wq, which multiplies the scaled input. */
static double direct_error(const layer_in *in, const float *W, const float *Wq, const float *s, int R) {
  double e = 0;
  for (int t = 0; t < in->T; t++)
    for (int r = 0; r < R; r++) {
      double a = 0, b = 0;
      for (int j = 0; j < in->C; j++) {
        double x = in->X[t * in->C + j];
        a += x * W[r * in->C + j];
        b += (s ? x / s[j] : x) * Wq[r * in->C + j];
      }
      e += (a - b) * (a - b);
    }
  return e / in->T;
}

static float *dequant(const qlm_qtensor *q) {
  float *w = malloc((size_t)(q->rows * q->cols) * sizeof *w);
  for (int64_t r = 0; r < q->rows; r++)
    assert_true(qlm_dequantize(q->type, (const unsigned char *)q->data + r * q->row_bytes, w + r * q->cols, q->cols));
  return w;
}

static float *random_weights(int R, int C, uint64_t seed) {
  float *W = malloc((size_t)R * C * sizeof *W);
  uint64_t rng = seed;
  for (int i = 0; i < R * C; i++) W[i] = 0.02f * tu_rand_normal(&rng);
  return W;
}

/* The error the search minimizes, tr(dW H dW^T), is the output error over the tokens. */
static void test_output_error_is_token_mse(void **st) {
  (void)st;
  enum { T = 40, C = 48, R = 24 };
  float gain[C];
  for (int j = 0; j < C; j++) gain[j] = 1.0f + (float)(j % 5);
  layer_in in = make_input(T, C, gain, 3, false);
  float *W = random_weights(R, C, 4), *Wq = random_weights(R, C, 5);
  double e = qlm_awq_output_error(W, Wq, R, C, in.H), ref = direct_error(&in, W, Wq, NULL, R);
  assert_true(fabs(e - ref) <= 1e-9 * ref);
  free(W), free(Wq);
  free_input(&in);
}

/* alpha = 0 (given) and no clipping: s = 1 and the stored tensor is qlm's zero-point RTN, byte for
 * byte, at several widths; the default is the paper's w4 g128 with clipping. */
static void test_alpha_zero_is_rtn(void **st) {
  (void)st;
  enum { R = 64, C = 256 };
  float *W = random_weights(R, C, 11);
  float gain[C];
  for (int j = 0; j < C; j++) gain[j] = j % 50 == 7 ? 30.0f : 1.0f;
  layer_in in = make_input(32, C, gain, 12, false);
  qlm_calib cal = {.cols = C, .n_tokens = 32, .act_absmean = in.absmean, .hessian = in.H};
  qlm_error err = {0};
  qlm_quant_opts d = {0};
  assert_ptr_equal(qlm_quant_method_find("awq"), &qlm_method_awq);
  qlm_method_awq.defaults(&d);
  assert_int_equal(d.bits, 4);
  assert_int_equal(d.group, 128);
  assert_true(d.asym && !d.no_clip);
  const int bits[] = {3, 4, 8, 2}, groups[] = {32, 128, 64, 256};
  for (int k = 0; k < 4; k++) {
    qlm_quant_opts o = {.bits = bits[k], .group = groups[k], .alpha = 0.0f, .alpha_set = true, .no_clip = true};
    qlm_method_awq.defaults(&o);
    float s[C];
    assert_int_equal(qlm_method_awq.input_scales(W, R, C, &cal, &o, s, &err), 0);
    for (int j = 0; j < C; j++) assert_true(s[j] == 1.0f);
    qlm_qtensor a = {0}, b = {0};
    assert_int_equal(qlm_method_awq.quantize(W, R, C, &cal, &o, &a, &err), 0);
    qlm_quant_opts z = {.bits = bits[k], .group = groups[k]};
    qlm_method_zeropoint.defaults(&z);
    assert_int_equal(qlm_method_zeropoint.quantize(W, R, C, NULL, &z, &b, &err), 0);
    assert_int_equal(a.type, b.type);
    assert_int_equal(a.type, qlm_rtn_type(true, bits[k], groups[k]));
    assert_memory_equal(a.data, b.data, a.row_bytes * R);
    char want[96];
    snprintf(want, sizeof want, "awq bits=%d group=%d clip=0 alpha=0", bits[k], groups[k]);
    assert_string_equal(a.desc, want);
    /* the fake quantizer of the search is the stored grid */
    float *Wq = malloc(sizeof(float) * R * C), *deq = dequant(&a);
    assert_int_equal(qlm_awq_fake_quant(W, R, C, bits[k], groups[k], Wq), 0);
    assert_memory_equal(Wq, deq, sizeof(float) * R * C);
    free(Wq), free(deq);
    qlm_qtensor_free(&a), qlm_qtensor_free(&b);
  }
  free(W);
  free_input(&in);
}

/* llm-awq's grid where it differs from widening the range to 0: a group of one sign keeps its own
 * min/max, the zero is clamped to 0..15 and the codes to the grid. */
static void test_one_sign_group(void **st) {
  (void)st;
  enum { G = 8 };
  const float x[G] = {1.0f, 1.5f, 2.0f, 2.25f, 3.0f, 1.2f, 2.7f, 1.9f};
  float q[G];
  assert_int_equal(qlm_awq_fake_quant(x, 1, G, 4, G, q), 0);
  float d = qlm_f16_to_f32(qlm_f32_to_f16((3.0f - 1.0f) / 15.0f));
  float z = -nearbyintf(1.0f / d); /* -8: clamped to 0 */
  assert_true(z < 0);
  for (int i = 0; i < G; i++) {
    float u = fminf(fmaxf(nearbyintf(x[i] / d), 0.0f), 15.0f); /* round(x/d) + 0, clamped */
    assert_true(q[i] == d * u);
  }
  assert_true(q[4] == 15.0f * d && q[4] < 3.0f); /* the top is clipped by the clamp */
}

/* Outlier channels (mean |x| 25x the rest): the search picks alpha > 0 and AWQ's output error is far
 * below RTN's on the same grid; clipping lowers it further.  Errors are measured on X itself. */
static void test_outliers(void **st) {
  (void)st;
  enum { T = 256, C = 256, R = 96 };
  float gain[C];
  for (int j = 0; j < C; j++) gain[j] = (j * 7) % 64 == 5 ? 25.0f : 1.0f;
  layer_in in = make_input(T, C, gain, 21, false);
  float *W = random_weights(R, C, 22);
  qlm_calib cal = {.cols = C, .n_tokens = T, .act_absmean = in.absmean, .hessian = in.H};
  qlm_error err = {0};
  const int bits[] = {4, 3};
  for (int k = 0; k < 2; k++) {
    qlm_quant_opts o = {.bits = bits[k], .group = 64, .n_threads = 2};
    qlm_method_awq.defaults(&o);
    float s[C], alpha;
    double errs[QLM_AWQ_GRID];
    assert_int_equal(qlm_awq_search(W, R, C, &cal, &o, s, &alpha, errs, &err), 0);
    /* the search's products on a pool (R = 96: two row chunks) give the same bits at 2 and 3 threads */
    for (int nth = 2; nth <= 3; nth++) {
      qlm_quant_opts op = o;
      op.pool = qlm_pool_new(nth);
      float sp[C], alpha_p;
      double errs_p[QLM_AWQ_GRID];
      assert_int_equal(qlm_awq_search(W, R, C, &cal, &op, sp, &alpha_p, errs_p, &err), 0);
      assert_memory_equal(errs_p, errs, sizeof errs);
      assert_memory_equal(sp, s, sizeof s);
      qlm_pool_free(op.pool);
    }
    /* scaled weights, quantized with and without clipping, against x / s */
    float *Ws = malloc(sizeof(float) * R * C);
    for (int r = 0; r < R; r++)
      for (int j = 0; j < C; j++) Ws[r * C + j] = W[r * C + j] * s[j];
    double *Hs = malloc(sizeof(double) * C * C);
    for (int i = 0; i < C; i++)
      for (int j = 0; j < C; j++) Hs[i * C + j] = in.H[i * C + j] / ((double)s[i] * s[j]);
    qlm_calib cs = {.cols = C, .n_tokens = T, .act_absmean = in.absmean, .hessian = Hs};
    double e[2];
    for (int c = 0; c < 2; c++) {
      qlm_quant_opts oc = o;
      oc.no_clip = !c;
      qlm_qtensor q = {0};
      assert_int_equal(qlm_method_awq.quantize(Ws, R, C, &cs, &oc, &q, &err), 0);
      float *deq = dequant(&q);
      e[c] = direct_error(&in, W, deq, s, R);
      free(deq);
      qlm_qtensor_free(&q);
    }
    qlm_quant_opts z = {.bits = bits[k], .group = 64};
    qlm_method_zeropoint.defaults(&z);
    qlm_qtensor q = {0};
    assert_int_equal(qlm_method_zeropoint.quantize(W, R, C, NULL, &z, &q, &err), 0);
    float *deq = dequant(&q);
    double e_rtn = direct_error(&in, W, deq, NULL, R);
    free(deq);
    qlm_qtensor_free(&q);
    print_message("%d-bit g64, outliers: alpha %.2f; output error RTN %.4g, AWQ %.4g (%.2fx lower), +clip %.4g\n",
                  bits[k], (double)alpha, e_rtn, e[0], e_rtn / e[0], e[1]);
    assert_true(alpha > 0.0f);
    /* tools/awq_reference.py (llm-awq's search in numpy, on the token outputs of this same layer):
     * alpha 0.40 / 0.35, errors (x rows) at alpha 0, at the best alpha, and after the clipping
     * search (its per-group token error, where qlm uses the Hessian's diagonal blocks) */
    const double ref_alpha[2] = {0.40, 0.35}, ref_e0[2] = {0.960387, 3.9255}, ref_best[2] = {0.233756, 1.10843},
                 ref_clip[2] = {0.206769, 0.824316};
    assert_true(fabs(alpha - ref_alpha[k]) < 1e-6);
    assert_true(fabs(errs[0] - ref_e0[k]) <= 1e-4 * ref_e0[k]);
    assert_true(fabs(errs[0] - e_rtn) <= 1e-4 * e_rtn); /* alpha 0 of the search = RTN, on X itself */
    int bi = (int)lrintf(alpha * QLM_AWQ_GRID);
    assert_true(fabs(errs[bi] - e[0]) <= 1e-4 * e[0]); /* the search's estimate is the real error */
    assert_true(fabs(errs[bi] - ref_best[k]) <= 1e-4 * ref_best[k]);
    for (int i = 0; i < QLM_AWQ_GRID; i++) assert_true(errs[bi] <= errs[i]);
    assert_true(e[0] < 0.7 * e_rtn);
    assert_true(e[1] <= e[0]);
    assert_true(fabs(e[1] - ref_clip[k]) <= 1e-3 * ref_clip[k]);
    free(Ws), free(Hs);
  }
  free(W);
  free_input(&in);
}

/* duo=1, AutoAWQ's default duo scaling s = s_x^a / (s_w^(1-a) + 1e-4), on test_outliers' layer:
 * the weight statistic, the chosen alpha and the errors at alpha 0 and at the best alpha equal
 * tools/awq_reference.py's (numpy, on the token outputs) */
static void test_duo(void **st) {
  (void)st;
  enum { T = 256, C = 256, R = 96 };
  float gain[C];
  for (int j = 0; j < C; j++) gain[j] = (j * 7) % 64 == 5 ? 25.0f : 1.0f;
  layer_in in = make_input(T, C, gain, 21, false);
  float *W = random_weights(R, C, 22);
  qlm_calib cal = {.cols = C, .n_tokens = T, .act_absmean = in.absmean, .hessian = in.H};
  qlm_error err = {0};
  float sw[C];
  qlm_awq_weight_means(W, R, C, 64, sw);
  const double ref_sw[4] = {0.26422598, 0.28785344, 0.3066736, 0.28883789};
  for (int j = 0; j < 4; j++) assert_true(fabs(sw[j] - ref_sw[j]) <= 1e-6 * ref_sw[j]);
  const int bits[] = {4, 3};
  const double ref_alpha[2] = {0.35, 0.35}, ref_e0[2] = {1.01676, 4.37896}, ref_best[2] = {0.233396, 1.06079};
  for (int k = 0; k < 2; k++) {
    qlm_quant_opts o = {.bits = bits[k], .group = 64, .n_threads = 2, .duo = true}, o1 = o;
    o1.duo = false;
    qlm_method_awq.defaults(&o), qlm_method_awq.defaults(&o1);
    float s[C], s1[C], alpha, alpha1;
    double errs[QLM_AWQ_GRID], errs1[QLM_AWQ_GRID];
    assert_int_equal(qlm_awq_search(W, R, C, &cal, &o, s, &alpha, errs, &err), 0);
    assert_int_equal(qlm_awq_search(W, R, C, &cal, &o1, s1, &alpha1, errs1, &err), 0);
    int bi = (int)lrintf(alpha * QLM_AWQ_GRID);
    print_message("%d-bit g64 duo scaling: alpha %.2f, error %.5g (alpha 0: %.5g); s_x^alpha alone: alpha %.2f, %.5g\n",
                  bits[k], (double)alpha, errs[bi], errs[0], (double)alpha1, errs1[(int)lrintf(alpha1 * QLM_AWQ_GRID)]);
    assert_true(fabs(alpha - ref_alpha[k]) < 1e-6);
    assert_true(fabs(errs[0] - ref_e0[k]) <= 1e-4 * ref_e0[k]);
    assert_true(fabs(errs[bi] - ref_best[k]) <= 1e-4 * ref_best[k]);
    /* at alpha 0 duo scales by 1 / s_w: not RTN any more (non-duo's alpha 0 is) */
    assert_true(errs[0] != errs1[0]);
    /* a fixed alpha with duo gives the same s as that grid point of the search */
    qlm_quant_opts oa = o;
    oa.alpha = alpha, oa.alpha_set = true;
    float sa[C], aa;
    assert_int_equal(qlm_awq_search(W, R, C, &cal, &oa, sa, &aa, NULL, &err), 0);
    assert_memory_equal(sa, s, sizeof s);
  }
  qlm_quant_opts p = {0};
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "duo", "1", "cli", &err), QLM_OK);
  assert_true(p.duo);
  assert_int_equal(qlm_quant_opts_parse_kv(&p, "duo", "2", "cli", &err), QLM_EUSAGE);
  free(W);
  free_input(&in);
}

/* Isotropic inputs: with equal mean |x| every alpha gives s = 1 and the search keeps alpha = 0;
 * with gaussian inputs the scales stay near 1 and AWQ is never worse than RTN. */
static void test_isotropic(void **st) {
  (void)st;
  enum { T = 128, C = 128, R = 64 };
  float gain[C];
  for (int j = 0; j < C; j++) gain[j] = 1.0f;
  float *W = random_weights(R, C, 31);
  qlm_error err = {0};
  for (int gauss = 0; gauss < 2; gauss++) {
    layer_in in = make_input(T, C, gain, 32, !gauss);
    qlm_calib cal = {.cols = C, .n_tokens = T, .act_absmean = in.absmean, .hessian = in.H};
    qlm_quant_opts o = {.bits = 4, .group = 32};
    qlm_method_awq.defaults(&o);
    float s[C], alpha, smin = INFINITY, smax = 0;
    double errs[QLM_AWQ_GRID];
    assert_int_equal(qlm_awq_search(W, R, C, &cal, &o, s, &alpha, errs, &err), 0);
    for (int j = 0; j < C; j++) smin = fminf(smin, s[j]), smax = fmaxf(smax, s[j]);
    print_message("isotropic (%s): alpha %.2f, s in [%.3f, %.3f], error at alpha 0 %.4g, best %.4g\n",
                  gauss ? "gaussian" : "signs", (double)alpha, (double)smin, (double)smax, errs[0],
                  errs[(int)lrintf(alpha * QLM_AWQ_GRID)]);
    if (!gauss) {
      assert_true(alpha == 0.0f);
      for (int i = 0; i < QLM_AWQ_GRID; i++) assert_true(errs[i] == errs[0]);
      for (int j = 0; j < C; j++) assert_true(s[j] == 1.0f);
    } else {
      assert_true(smin > 0.85f && smax < 1.15f);
      assert_true(errs[(int)lrintf(alpha * QLM_AWQ_GRID)] <= errs[0]);
    }
    free_input(&in);
  }
  free(W);
}

static void test_folding_keeps_outputs(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), *txt = tu_shared("data/calibration/exllamav2/tiny.utf8");
  char *models[2] = {tu_shared(STORIES), tu_testdata("ref/gpt2")};
  for (int i = 0; i < 2; i++) {
    /* AWQ's searched scales, folded into every producer (norms, v rows, up rows) */
    qlm_quant_params p = {.method = &qlm_method_awq, .opts = {.bits = 3, .group = 16}, .n_threads = 2, .calib_text = txt,
                          .calib = {.n_samples = 4, .seq_len = 64, .seed = 2}};
    int changed;
    double r = tu_smooth_only_drift(models[i], dir, &p, &changed);
    print_message("%s: AWQ scales folded into producers: max |dlogit| / max |logit| = %.3g\n", models[i], r);
    assert_true(changed);
    assert_true(r <= 1e-5);
    free(models[i]);
  }
  rmdir(dir);
  free(txt), free(dir);
}

/* stories260K with in-domain calibration text, 4 and 3 bits g32: AWQ drifts less from f32 than
 * zero-point RTN on the same grid; the file holds zero-point RTN tensors described as AWQ. */
static void test_end_to_end(void **st) {
  (void)st;
  enum { N = 64 };
  char *model = tu_shared(STORIES), *text = tu_shared("data/calibration/exllamav2/tiny.utf8"), *dir = tu_tmpdir(),
       out[512];
  snprintf(out, sizeof out, "%s/a.gguf", dir);
  qlm_source *src;
  qlm_error err = {0};
  if (qlm_source_open(model, NULL, &src, &err)) fail_msg("%s", err.msg);
  int V = src->hp.n_vocab;
  int32_t ref[N];
  float *lref = malloc((size_t)N * V * sizeof *lref);
  tu_greedy(src, N, NULL, ref, lref);
  qlm_quant_summary sum;
  const int bits[] = {4, 3};
  for (int i = 0; i < 2; i++) {
    double d[3];
    for (int k = 0; k < 3; k++) { /* awq, awq clip=0, zeropoint */
      qlm_quant_params p = {.method = k == 2 ? &qlm_method_zeropoint : &qlm_method_awq,
                            .opts = {.bits = bits[i], .group = 32, .no_clip = k == 1},
                            .n_threads = 2, .calib_text = text, .calib = {.n_samples = 32, .seq_len = 128, .seed = 1}};
      if (qlm_quantize(src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
      qlm_source *q;
      assert_int_equal(qlm_source_open(out, NULL, &q, &err), 0);
      if (k < 2) {
        const qlm_tensor *t = qlm_source_tensor(q, "blk.0.ffn_up.weight");
        assert_non_null(t);
        assert_int_equal(t->type, qlm_rtn_type(true, bits[i], 32));
      }
      d[k] = tu_logit_drift(q, ref, lref, N);
      qlm_source_close(q);
    }
    print_message("%d-bit g32: mean |dlogit| awq %.4f, awq clip=0 %.4f, zeropoint RTN %.4f\n", bits[i], d[0], d[1], d[2]);
    assert_true(d[0] < d[2]);
    assert_true(d[1] < d[2]);
  }
  unlink(out);
  rmdir(dir);
  qlm_source_close(src);
  free(model), free(text), free(dir), free(lref);
}

static void test_bad_options(void **st) {
  (void)st;
  qlm_error err = {0};
  qlm_quant_opts o = {0};
  assert_int_equal(qlm_quant_opts_parse_kv(&o, "clip", "2", "rules:3", &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "rules:3"));
  assert_non_null(strstr(err.msg, "clip=2"));
  assert_int_equal(qlm_quant_opts_parse_kv(&o, "alpha", "1.5", "cli", &err), QLM_EUSAGE);
  assert_int_equal(qlm_quant_opts_parse_kv(&o, "clip", "0", "cli", &err), 0);
  assert_true(o.no_clip);
  assert_int_equal(qlm_quant_opts_parse_kv(&o, "clip", "on", "cli", &err), 0);
  assert_false(o.no_clip);
  const struct {
    int bits, group;
  } bad[] = {{1, 32}, {9, 32}, {4, QLM_GROUP_TENSOR}};
  for (int i = 0; i < 3; i++) {
    qlm_quant_opts b = {.bits = bad[i].bits, .group = bad[i].group};
    qlm_method_awq.defaults(&b);
    assert_int_equal(qlm_method_awq.check(&b, 8, 64, &err), QLM_EUSAGE);
    assert_non_null(strstr(err.msg, "awq"));
  }
  qlm_quant_opts g = {0};
  qlm_method_awq.defaults(&g);
  assert_int_equal(qlm_method_awq.check(&g, 8, 70000, &err), QLM_EUNSUPPORTED);
  float W[8 * 64], s[64], absmean[64];
  double H[64 * 64] = {0};
  for (int i = 0; i < 8 * 64; i++) W[i] = (float)(i % 13) - 6.0f;
  for (int j = 0; j < 64; j++) absmean[j] = 1.0f, H[j * 64 + j] = 1.0;
  qlm_qtensor q = {0};
  /* clipping and the search need calibration statistics */
  assert_int_equal(qlm_method_awq.quantize(W, 8, 64, NULL, &g, &q, &err), QLM_EUSAGE);
  assert_null(q.data);
  assert_int_equal(qlm_method_awq.input_scales(W, 8, 64, NULL, &g, s, &err), QLM_EUSAGE);
  qlm_calib no_h = {.cols = 64, .n_tokens = 1, .act_absmean = absmean};
  assert_int_equal(qlm_method_awq.input_scales(W, 8, 64, &no_h, &g, s, &err), QLM_EUSAGE);
  qlm_calib wrong = {.cols = 32, .n_tokens = 1, .act_absmean = absmean, .hessian = H};
  assert_int_equal(qlm_method_awq.input_scales(W, 8, 64, &wrong, &g, s, &err), QLM_EINTERNAL);
  assert_int_equal(qlm_method_awq.quantize(W, 8, 64, &wrong, &g, &q, &err), QLM_EINTERNAL);
  /* hostile weights */
  qlm_calib ok = {.cols = 64, .n_tokens = 1, .act_absmean = absmean, .hessian = H};
  W[77] = NAN;
  assert_int_equal(qlm_method_awq.quantize(W, 8, 64, &ok, &g, &q, &err), QLM_EFORMAT);
  assert_int_equal(qlm_method_awq.input_scales(W, 8, 64, &ok, &g, s, &err), QLM_EFORMAT);
  W[77] = 3e38f, W[78] = -3e38f; /* a group far beyond a half scale */
  assert_int_equal(qlm_method_awq.quantize(W, 8, 64, &ok, &g, &q, &err), QLM_EUNSUPPORTED);
  assert_null(q.data);
  /* the driver refuses AWQ without calibration text */
  char *model = tu_shared(STORIES), *dir = tu_tmpdir(), out[512];
  snprintf(out, sizeof out, "%s/x.gguf", dir);
  qlm_source *src;
  assert_int_equal(qlm_source_open(model, NULL, &src, &err), 0);
  qlm_quant_params p = {.method = &qlm_method_awq, .n_threads = 1};
  qlm_quant_summary sum;
  assert_int_equal(qlm_quantize(src, out, &p, &sum, &err), QLM_EUSAGE);
  qlm_source_close(src);
  unlink(out);
  rmdir(dir);
  free(model), free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_output_error_is_token_mse),
      cmocka_unit_test(test_alpha_zero_is_rtn),
      cmocka_unit_test(test_one_sign_group),
      cmocka_unit_test(test_outliers),
      cmocka_unit_test(test_isotropic),
      cmocka_unit_test(test_duo),
      cmocka_unit_test(test_folding_keeps_outputs),
      cmocka_unit_test(test_end_to_end),
      cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
