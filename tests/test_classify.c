/* test_classify.c — classification metrics and report, logistic regression, frozen features and
 * zero-shot classification.
 *
 * Features and zero-shot scores are checked on a "bigram" copy of stories260K (every attention
 * output and FFN down projection zeroed, as in test_ppl.c): the residual stream is then the current
 * token's embedding, so the final hidden state of a token a is rmsnorm(embd[a]) * out_norm and
 *   log p(b | ..., a) = log_softmax(output * hidden(a))[b],
 * both computed here in double straight from the file's weights. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eval/classify.h"
#include "formats/gguf_write.h"
#include "testutil.h"

/* ---- metrics ---- */

/* scikit-learn's documentation example for classification_report, verbatim. */
static void test_report_sklearn_example(void **state) {
  (void)state;
  int yt[] = {0, 1, 2, 2, 2}, yp[] = {0, 0, 2, 2, 1};
  qlm_cls_metrics m;
  qlm_error err = {0};
  assert_int_equal(qlm_cls_metrics_compute(yt, yp, 5, 3, &m, &err), 0);
  const char *names[] = {"class 0", "class 1", "class 2"};
  char *rep = qlm_cls_report(&m, names, 2);
  const char *want = "              precision    recall  f1-score   support\n"
                     "\n"
                     "     class 0       0.50      1.00      0.67         1\n"
                     "     class 1       0.00      0.00      0.00         1\n"
                     "     class 2       1.00      0.67      0.80         3\n"
                     "\n"
                     "    accuracy                           0.60         5\n"
                     "   macro avg       0.50      0.56      0.49         5\n"
                     "weighted avg       0.70      0.60      0.61         5\n";
  assert_string_equal(rep, want);
  free(rep);
}

/* Hand-computed: 10 samples, 3 classes.
 * true: 0 0 0 0 1 1 1 2 2 2   pred: 0 0 1 2 1 1 0 2 2 1
 * confusion [[2,1,1],[1,2,0],[0,1,2]]; precision 2/3, 2/4, 2/3; recall 2/4, 2/3, 2/3. */
static void test_metrics_hand(void **state) {
  (void)state;
  int yt[] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2}, yp[] = {0, 0, 1, 2, 1, 1, 0, 2, 2, 1};
  qlm_cls_metrics m;
  qlm_error err = {0};
  assert_int_equal(qlm_cls_metrics_compute(yt, yp, 10, 3, &m, &err), 0);
  const int64_t cm[3][3] = {{2, 1, 1}, {1, 2, 0}, {0, 1, 2}};
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) assert_int_equal(m.confusion[a][b], cm[a][b]);
  assert_int_equal(m.support[0], 4);
  assert_int_equal(m.support[1], 3);
  assert_int_equal(m.support[2], 3);
  double P[3] = {2.0 / 3, 0.5, 2.0 / 3}, R[3] = {0.5, 2.0 / 3, 2.0 / 3}, F[3], mf = 0, wf = 0;
  for (int c = 0; c < 3; c++) {
    F[c] = 2 * P[c] * R[c] / (P[c] + R[c]);
    assert_true(fabs(m.precision[c] - P[c]) < 1e-12);
    assert_true(fabs(m.recall[c] - R[c]) < 1e-12);
    assert_true(fabs(m.f1[c] - F[c]) < 1e-12);
    mf += F[c] / 3;
    wf += F[c] * m.support[c] / 10.0;
  }
  /* F: 4/7, 4/7, 2/3 -> macro (4/7 + 4/7 + 2/3) / 3 */
  assert_true(fabs(F[0] - 4.0 / 7) < 1e-12);
  assert_true(fabs(m.macro_f1 - (8.0 / 7 + 2.0 / 3) / 3) < 1e-12);
  assert_true(fabs(m.macro_f1 - mf) < 1e-12);
  assert_true(fabs(m.weighted_f1 - wf) < 1e-12);
  assert_true(fabs(m.accuracy - 0.6) < 1e-12);
  /* a label outside the classes is an error, not a crash */
  int bad[] = {0, 3};
  assert_int_equal(qlm_cls_metrics_compute(bad, bad, 2, 3, &m, &err), QLM_EUSAGE);
}

/* ---- logistic regression ---- */

/* Three well separated Gaussian blobs in 6 dimensions (one noise dimension with a huge scale,
 * which standardization must handle). */
static void blobs(float *X, int *y, int n, uint64_t seed) {
  static const float centers[3][6] = {{4, 0, 0, 1, 0, 0}, {0, 4, 0, 0, 1, 0}, {0, 0, 4, 0, 0, 1}};
  for (int i = 0; i < n; i++) {
    y[i] = i % 3;
    for (int j = 0; j < 6; j++) X[i * 6 + j] = centers[y[i]][j] + 0.5f * tu_rand_normal(&seed);
    X[i * 6 + 5] = 1000.0f * tu_rand_normal(&seed);
  }
}

static void test_logreg_separable(void **state) {
  (void)state;
  enum { N = 150, NT = 300, D = 6 };
  float X[N * D], Xt[NT * D];
  int y[N], yt[NT];
  blobs(X, y, N, 1);
  blobs(Xt, yt, NT, 2);
  qlm_error err = {0};
  qlm_logreg lr;
  qlm_logreg_info info;
  qlm_logreg_opts o = {.l2 = 1e-2, .seed = 3, .max_iter = 2000, .tol = 1e-9};
  assert_int_equal(qlm_logreg_fit(X, y, N, D, 3, NULL, NULL, 0, &o, &lr, &info, &err), 0);
  for (int i = 0; i < N; i++) assert_int_equal(qlm_logreg_predict(&lr, X + i * D, NULL), y[i]);
  for (int i = 0; i < NT; i++) assert_int_equal(qlm_logreg_predict(&lr, Xt + i * D, NULL), yt[i]);
  /* optimality (the gradient of the regularized loss vanishes), computed here in standardized space:
   * mean_i (p_ic - [y_i = c]) z_i + l2 W_c = 0 and mean_i (p_ic - [y_i = c]) = 0 */
  double g[3][D + 1] = {{0}};
  for (int i = 0; i < N; i++) {
    double p[3];
    qlm_logreg_predict(&lr, X + i * D, p);
    for (int c = 0; c < 3; c++) {
      double r = p[c] - (c == y[i]);
      for (int j = 0; j < D; j++) g[c][j] += r * ((X[i * D + j] - lr.mean[j]) / lr.scale[j]) / N;
      g[c][D] += r / N;
    }
  }
  double gn = 0;
  for (int c = 0; c < 3; c++) {
    for (int j = 0; j < D; j++) gn += pow(g[c][j] + o.l2 * lr.W[c * D + j], 2);
    gn += g[c][D] * g[c][D];
  }
  assert_true(sqrt(gn) < 1e-4);
  /* probabilities sum to 1 */
  double p[3];
  qlm_logreg_predict(&lr, Xt, p);
  assert_true(fabs(p[0] + p[1] + p[2] - 1) < 1e-12);

  /* save / load keeps the predictions; a corrupted head is a clear error */
  char *dir = tu_tmpdir(), path[600];
  snprintf(path, sizeof path, "%s/head.json", dir);
  const char *kv[] = {"feature", "mean", "trained_on", "blobs"};
  assert_int_equal(qlm_logreg_save(path, &lr, kv, 2, &err), 0);
  qlm_logreg l2;
  char v[64];
  assert_int_equal(qlm_logreg_load(path, &l2, "trained_on", v, sizeof v, &err), 0);
  assert_string_equal(v, "blobs");
  for (int i = 0; i < NT; i++) {
    double a[3], b[3];
    assert_int_equal(qlm_logreg_predict(&lr, Xt + i * D, a), qlm_logreg_predict(&l2, Xt + i * D, b));
    for (int c = 0; c < 3; c++) assert_true(fabs(a[c] - b[c]) < 1e-5);
  }
  qlm_logreg_free(&l2);
  tu_write_file(path, "{\"format\":\"qlm-logreg-head-1\",\"n_class\":3,\"dim\":2,\"mean\":[0,0]}", 60);
  assert_int_equal(qlm_logreg_load(path, &l2, NULL, NULL, 0, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, path));
  remove(path);
  rmdir(dir);
  free(dir);
  qlm_logreg_free(&lr);
}

/* Early stopping keeps the weights of the best held-out loss; cross-validation prefers a sensible
 * L2 over a huge one on noisy labels. */
static void test_logreg_early_stop_cv(void **state) {
  (void)state;
  enum { N = 120, D = 6 };
  float X[N * D];
  int y[N];
  blobs(X, y, N, 5);
  for (int i = 0; i < N; i += 7) y[i] = (y[i] + 1) % 3; /* label noise */
  qlm_error err = {0};
  qlm_logreg lr;
  qlm_logreg_info info;
  qlm_logreg_opts o = {.l2 = 0, .seed = 1, .max_iter = 400, .patience = 5};
  assert_int_equal(qlm_logreg_fit(X, y, 90, D, 3, X + 90 * D, y + 90, 30, &o, &lr, &info, &err), 0);
  assert_true(info.best_iter <= info.iters);
  assert_true(info.iters - info.best_iter <= 5 || info.iters == 400);
  assert_true(isfinite(info.heldout_loss));
  qlm_logreg_free(&lr);
  double grid[] = {1e-3, 1e3}, acc[2];
  int best = -1;
  assert_int_equal(qlm_logreg_cv(X, y, N, D, 3, grid, 2, 4, &o, acc, &best, &err), 0);
  assert_int_equal(best, 0);
  assert_true(acc[0] > 0.8);
  /* bad arguments */
  assert_int_equal(qlm_logreg_cv(X, y, N, D, 3, grid, 2, 1, &o, acc, &best, &err), QLM_EUSAGE);
  int yb[2] = {0, 7};
  assert_int_equal(qlm_logreg_fit(X, yb, 2, D, 3, NULL, NULL, 0, &o, &lr, NULL, &err), QLM_EUSAGE);
}

/* ---- text sets ---- */

static void test_textset(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), tp[600], lp[600];
  snprintf(tp, sizeof tp, "%s/t.txt", dir);
  snprintf(lp, sizeof lp, "%s/l.txt", dir);
  tu_write_file(tp, "good day \nbad\r\nmeh\n", 19);
  tu_write_file(lp, "2\n0\n1\n", 6);
  qlm_textset t;
  qlm_error err = {0};
  assert_int_equal(qlm_textset_load(tp, lp, 3, 0, &t, &err), 0);
  assert_int_equal(t.n, 3);
  assert_string_equal(t.text[0], "good day");
  assert_string_equal(t.text[1], "bad");
  assert_int_equal(t.label[0], 2);
  assert_int_equal(t.label[2], 1);
  qlm_textset_free(&t);
  assert_int_equal(qlm_textset_load(tp, lp, 3, 2, &t, &err), 0);
  assert_int_equal(t.n, 2);
  qlm_textset_free(&t);
  tu_write_file(lp, "2\n0\n", 4);
  assert_int_equal(qlm_textset_load(tp, lp, 3, 0, &t, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "2 labels for the 3 texts"));
  tu_write_file(lp, "2\n3\nx\n", 6);
  assert_int_equal(qlm_textset_load(tp, lp, 3, 0, &t, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "line 2"));
  remove(tp);
  remove(lp);
  rmdir(dir);
  free(dir);
}

/* ---- features and zero-shot on the bigram model ---- */

static tu_bigram *B; /* testutil.h */

static int setup_bigram(void **state) {
  (void)state;
  B = tu_bigram_new();
  return 0;
}

static int teardown_bigram(void **state) {
  (void)state;
  tu_bigram_free(B);
  return 0;
}

static char *const TEXTS[] = {"Once upon a time there was a cat.", "The dog ran", "Lily was happy and sad.",
                              "Tom", "The sun is big and the sky is blue and the bird sang a song."};
enum { NT = 5 };

static int32_t *toks(const char *s, int add_special, int *n) {
  qlm_error err = {0};
  int32_t *ids = NULL;
  if (qlm_tokenize(B->tok, s, strlen(s), add_special, 0, &ids, n, &err)) fail_msg("%s", err.msg);
  return ids;
}

/* last-token and mean features equal the closed form, whatever the batch size */
static void test_features_closed_form(void **state) {
  (void)state;
  int E = B->E;
  qlm_error err = {0};
  float *f1 = malloc((size_t)NT * E * sizeof *f1), *f3 = malloc((size_t)NT * E * sizeof *f3);
  for (int kind = 0; kind < 2; kind++) {
    qlm_run_stats st = {0};
    assert_int_equal(qlm_features_extract(B->model, B->tok, TEXTS, NT, kind, 1, 0, 1, f1, &st, NULL, NULL, &err), 0);
    assert_int_equal(qlm_features_extract(B->model, B->tok, TEXTS, NT, kind, 3, 0, 2, f3, NULL, NULL, NULL, &err), 0);
    int64_t total = 0;
    for (int i = 0; i < NT; i++) {
      int n;
      int32_t *ids = toks(TEXTS[i], 1, &n);
      total += n;
      for (int j = 0; j < E; j++) {
        double want = 0;
        if (kind == QLM_FEAT_LAST) want = B->hid[(size_t)ids[n - 1] * E + j];
        else
          for (int t = 0; t < n; t++) want += B->hid[(size_t)ids[t] * E + j] / n;
        if (fabs(f1[i * E + j] - want) > 1e-4 * (1 + fabs(want)))
          fail_msg("kind %d text %d dim %d: got %g want %g", kind, i, j, f1[i * E + j], want);
        assert_true(fabs(f3[i * E + j] - f1[i * E + j]) <= 1e-5 * (1 + fabs(want)));
      }
      free(ids);
    }
    assert_int_equal(st.tokens, total);
  }
  free(f1);
  free(f3);
}

/* zero-shot: the class whose label word's summed bigram log-probability (first token after the
 * prompt's last token) is highest */
static void test_zeroshot_closed_form(void **state) {
  (void)state;
  const char *tpl = "Story: {text}\nMood:";
  const char *words[3] = {" sad", " happy", " angry"};
  qlm_zeroshot_opts o = {.template_ = tpl, .label_words = words, .n_class = 3, .batch = 2, .n_threads = 2};
  int pred[NT];
  double ll[NT * 3];
  qlm_run_stats st = {0};
  qlm_error err = {0};
  assert_int_equal(qlm_zeroshot_classify(B->model, B->tok, TEXTS, NT, &o, pred, ll, &st, NULL, NULL, &err), 0);
  int multi = 0;
  for (int i = 0; i < NT; i++) {
    char prompt[256];
    snprintf(prompt, sizeof prompt, "Story: %s\nMood:", TEXTS[i]);
    int nc;
    int32_t *ctx = toks(prompt, 1, &nc);
    int best = 0;
    double bl = -INFINITY;
    for (int c = 0; c < 3; c++) {
      char whole[300];
      snprintf(whole, sizeof whole, "%s%s", prompt, words[c]);
      int nw;
      int32_t *w = toks(whole, 1, &nw);
      assert_true(nw > nc);
      multi += nw - nc > 1;
      double want = 0;
      for (int t = nc; t < nw; t++) want += B->lp[(size_t)(t == nc ? ctx[nc - 1] : w[t - 1]) * B->V + w[t]];
      if (fabs(ll[i * 3 + c] - want) > 1e-4) fail_msg("text %d class %d: got %g want %g", i, c, ll[i * 3 + c], want);
      if (want > bl) {
        bl = want;
        best = c;
      }
      free(w);
    }
    assert_int_equal(pred[i], best);
    free(ctx);
  }
  assert_true(multi > 0); /* some label word spans several tokens in this 512-token vocab */
  /* a template without {text} is refused */
  o.template_ = "no placeholder";
  assert_int_equal(qlm_zeroshot_classify(B->model, B->tok, TEXTS, NT, &o, pred, NULL, NULL, NULL, NULL, &err), QLM_EUSAGE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_report_sklearn_example),
      cmocka_unit_test(test_metrics_hand),
      cmocka_unit_test(test_logreg_separable),
      cmocka_unit_test(test_logreg_early_stop_cv),
      cmocka_unit_test(test_textset),
      cmocka_unit_test_setup_teardown(test_features_closed_form, setup_bigram, teardown_bigram),
      cmocka_unit_test_setup_teardown(test_zeroshot_closed_form, setup_bigram, teardown_bigram),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
