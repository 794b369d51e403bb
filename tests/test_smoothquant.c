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

static char *write_calib_text(const char *dir) {
  char *path = malloc(512);
  snprintf(path, 512, "%s/calib.txt", dir);
  const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
                     "One day, she saw a big red ball in the park. She ran to get it and laughed.";
  tu_write_file(path, text, strlen(text));
  return path;
}

/* Folding the factors into the producers (norm weights and biases, v rows — fused q|k|v in GPT-2
 * — and up rows) leaves the f32 model's logits unchanged up to rounding. */
static void test_folding_keeps_outputs(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), *txt = write_calib_text(dir);
  char *models[2] = {tu_shared(STORIES), tu_testdata("ref/gpt2")};
  for (int i = 0; i < 2; i++) {
    qlm_quant_method every_slot = qlm_method_smoothquant; /* every slot its factors can fold into */
    every_slot.smooth_slots = 0xF;
    qlm_quant_params p = {.method = &every_slot, .n_threads = 1, .calib_text = txt,
                          .calib = {.n_samples = 2, .seq_len = 24, .seed = 2}};
    int changed;
    double r = tu_smooth_only_drift(models[i], dir, &p, &changed);
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
