/* test_smoothquant.c — SmoothQuant W8A8 and the driver's smoothing (scales folded into norms).
 * References: the unquantized model's logits (folding must not change them before rounding), the
 * exact f32 product of a synthetic layer, and plain W8A8 without smoothing. */
#include "testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/matmul.h"
#include "kernels/types.h"
#include "model/model.h"
#include "quant/method.h"
#include "quant/quantize.h"

#define STORIES "models/stories260K/stories260K.gguf"

/* A layer whose input has a few channels 30x larger than the rest (the activation outliers
 * SmoothQuant is about): W8A8 with smoothing beats W8A8 without, against the exact product. */
static void test_smoothing_reduces_w8a8_error(void **st) {
  (void)st;
  enum { T = 16, C = 256, R = 128 };
  static float X[T * C], W[R * C], Xs[T * C], Ws[R * C], s[C], Y[T * R], Yq[T * R];
  uint64_t rng = 5;
  for (int i = 0; i < T * C; i++) X[i] = tu_rand_normal(&rng) * ((i % C) % 37 == 3 ? 30.0f : 1.0f);
  for (int i = 0; i < R * C; i++) W[i] = 0.02f * tu_rand_normal(&rng);
  for (int t = 0; t < T; t++) /* exact */
    for (int r = 0; r < R; r++) {
      double a = 0;
      for (int j = 0; j < C; j++) a += (double)X[t * C + j] * W[r * C + j];
      Y[t * R + r] = (float)a;
    }
  float amax[C] = {0};
  for (int t = 0; t < T; t++)
    for (int j = 0; j < C; j++) amax[j] = fmaxf(amax[j], fabsf(X[t * C + j]));
  qlm_quant_opts o = {0};
  qlm_method_smoothquant.defaults(&o);
  assert_true(o.alpha == 0.5f);
  qlm_calib cal = {.cols = C, .n_tokens = T, .act_absmax = amax};
  qlm_error err = {0};
  assert_int_equal(qlm_method_smoothquant.input_scales(W, R, C, &cal, &o, s, &err), 0);
  for (int j = 0; j < C; j++) { /* s_j = sqrt(max|X_j| / max|W_j|) at alpha 0.5 */
    float wmax = 0;
    for (int r = 0; r < R; r++) wmax = fmaxf(wmax, fabsf(W[r * C + j]));
    assert_true(fabsf(s[j] - sqrtf(amax[j]) / sqrtf(wmax)) <= 1e-5f * s[j]);
  }
  for (int t = 0; t < T; t++)
    for (int j = 0; j < C; j++) Xs[t * C + j] = X[t * C + j] / s[j];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < C; j++) Ws[r * C + j] = W[r * C + j] * s[j];
  double e_plain = 0, e_smooth = 0;
  for (int pass = 0; pass < 2; pass++) {
    qlm_qtensor q = {0};
    const qlm_quant_method *m = pass ? &qlm_method_smoothquant : &qlm_method_llm_int8;
    qlm_quant_opts qo = pass ? o : (qlm_quant_opts){.bits = 8, .threshold = 0.0f, .threshold_set = true};
    if (!pass) m->defaults(&qo);
    assert_int_equal(m->quantize(pass ? Ws : W, R, C, NULL, &qo, &q, &err), 0);
    qlm_mat M = {.type = q.type, .rows = R, .cols = C, .data = q.data, .row_bytes = q.row_bytes,
                 .outlier_threshold = 0.0f};
    qlm_matmul(&M, pass ? Xs : X, T, Yq, NULL);
    double e = 0;
    for (int i = 0; i < T * R; i++) e += ((double)Yq[i] - Y[i]) * ((double)Yq[i] - Y[i]);
    *(pass ? &e_smooth : &e_plain) = e;
    if (pass) assert_non_null(strstr(q.desc, "threshold=0"));
    qlm_qtensor_free(&q);
  }
  print_message("W8A8 squared error: plain %.4g, smoothed %.4g (%.1fx lower)\n", e_plain, e_smooth, e_plain / e_smooth);
  assert_true(e_smooth * 4 < e_plain);
}

/* A method that only smooths (SmoothQuant's scales, weights kept f32): the folded model computes
 * the same logits as the original (before rounding: f32 arithmetic only). */
static int keep_f32(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                    qlm_qtensor *out, qlm_error *err) {
  (void)calib, (void)o;
  int rc = qlm_qtensor_alloc(out, QLM_TYPE_F32, rows, cols, err);
  if (rc) return rc;
  memcpy(out->data, W, (size_t)(rows * cols) * sizeof *W);
  qlm_qtensor_set_bpw(out);
  snprintf(out->desc, sizeof out->desc, "smooth-only");
  return QLM_OK;
}

static char *write_calib_text(const char *dir) {
  char *path = malloc(512);
  snprintf(path, 512, "%s/calib.txt", dir);
  const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
                     "One day, she saw a big red ball in the park. She ran to get it and laughed.";
  tu_write_file(path, text, strlen(text));
  return path;
}

/* Smooth-only quantization of `model` (every slot SmoothQuant's factors can fold into); returns
 * the max |dlogit| over 24 teacher-forced steps relative to the max |logit|. */
static double smooth_only_drift(const char *model, const char *dir, const char *txt, bool *norm_changed) {
  char out[512];
  snprintf(out, sizeof out, "%s/s.gguf", dir);
  qlm_source *src, *q;
  qlm_error err = {0};
  if (qlm_source_open(model, NULL, &src, &err)) fail_msg("%s", err.msg);
  qlm_quant_method smooth_only = qlm_method_smoothquant;
  smooth_only.quantize = keep_f32;
  smooth_only.check = NULL;
  smooth_only.smooth_slots = 0xF;
  qlm_quant_params p = {.method = &smooth_only, .n_threads = 1, .calib_text = txt,
                        .calib = {.n_samples = 2, .seq_len = 24, .seed = 2}};
  int32_t ids[200];
  if (src->vocab.n_tokens == 0) { /* the tiny GPT-2 has no tokenizer: random ids */
    uint64_t r = 9;
    for (int i = 0; i < 200; i++) ids[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)src->hp.n_vocab);
    p.calib_ids = ids, p.n_calib_ids = 200;
  }
  qlm_quant_summary sum;
  if (qlm_quantize(src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
  if (qlm_source_open(out, NULL, &q, &err)) fail_msg("%s", err.msg);
  const qlm_tensor *n0 = qlm_source_tensor(src, "blk.0.attn_norm.weight"), *n1 = qlm_source_tensor(q, "blk.0.attn_norm.weight");
  *norm_changed = memcmp(n0->data, n1->data, n0->nbytes) != 0;
  enum { N = 24 };
  int V = src->hp.n_vocab;
  int32_t a[N], b[N];
  float *la = malloc((size_t)N * V * sizeof *la), *lb = malloc((size_t)N * V * sizeof *lb);
  tu_greedy(src, N, NULL, a, la);
  tu_greedy(q, N, a, b, lb);
  double maxd = 0, maxl = 0;
  for (size_t i = 0; i < (size_t)N * V; i++) maxd = fmax(maxd, fabs((double)la[i] - lb[i])), maxl = fmax(maxl, fabs(la[i]));
  free(la), free(lb);
  qlm_source_close(q);
  qlm_source_close(src);
  unlink(out);
  return maxd / maxl;
}

/* Folding the factors into the producers (norm weights and biases, v rows — fused q|k|v in GPT-2
 * — and up rows) leaves the f32 model's logits unchanged up to rounding. */
static void test_folding_keeps_outputs(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), *txt = write_calib_text(dir);
  char *models[2] = {tu_shared(STORIES), tu_testdata("ref/gpt2")};
  for (int i = 0; i < 2; i++) {
    bool changed;
    double r = smooth_only_drift(models[i], dir, txt, &changed);
    print_message("%s: smoothing folded into producers: max |dlogit| / max |logit| = %.3g\n", models[i], r);
    assert_true(changed); /* the factors are not all 1 */
    assert_true(r <= 1e-5);
    free(models[i]);
  }
  /* and the real SmoothQuant file runs and keeps the greedy text */
  char *model = tu_shared(STORIES), out[512];
  snprintf(out, sizeof out, "%s/sq.gguf", dir);
  qlm_source *src, *q;
  qlm_error err = {0};
  assert_int_equal(qlm_source_open(model, NULL, &src, &err), 0);
  qlm_quant_params p = {.method = &qlm_method_smoothquant, .n_threads = 1, .calib_text = txt,
                        .calib = {.n_samples = 2, .seq_len = 24, .seed = 2}};
  qlm_quant_summary sum;
  if (qlm_quantize(src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
  assert_int_equal(qlm_source_open(out, NULL, &q, &err), 0);
  enum { N = 32 };
  int32_t a[N], b[N];
  tu_greedy(src, N, NULL, a, NULL);
  tu_greedy(q, N, NULL, b, NULL);
  print_message("smoothquant W8A8: greedy prefix %d/%d\n", tu_common_prefix(a, b, N), N);
  assert_true(tu_common_prefix(a, b, N) >= N / 2);
  qlm_source_close(q);
  qlm_source_close(src);
  unlink(out), unlink(txt);
  rmdir(dir);
  free(txt), free(dir), free(model);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_smoothing_reduces_w8a8_error),
      cmocka_unit_test(test_folding_keeps_outputs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
