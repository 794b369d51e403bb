/* classify.c — labelled text sets, classification metrics and report, the logistic-regression
 * head (L-BFGS with early stopping, k-fold cross-validation, JSON save/load) and frozen features. */
#include "eval/classify.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/atomic_file.h"
#include "core/mapfile.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- labelled texts ---- */

/* Split a buffer into lines in place (trailing whitespace removed); a final newline ends the
 * last line rather than starting an empty one. */
static int split_lines(char *buf, size_t len, char ***lines, int *n, const char *path, qlm_error *err) {
  int cap = 0, k = 0;
  char **v = NULL;
  size_t i = 0;
  while (i < len) {
    char *s = buf + i, *nl = memchr(s, '\n', len - i);
    size_t l = nl ? (size_t)(nl - s) : len - i;
    i += l + (nl ? 1 : 0);
    s[l] = '\0';
    while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r')) s[--l] = '\0';
    if (l > QLM_CLS_MAX_TEXT_BYTES) {
      free(v);
      return qlm_fail(err, QLM_ELIMIT, "%s: line %d is %zu bytes (limit %d)", path, k + 1, l, QLM_CLS_MAX_TEXT_BYTES);
    }
    if (k == cap) {
      if (cap >= QLM_CLS_MAX_TEXTS) {
        free(v);
        return qlm_fail(err, QLM_ELIMIT, "%s: more than %d lines", path, QLM_CLS_MAX_TEXTS);
      }
      cap = cap ? cap * 2 : 1024;
      char **nv = realloc(v, (size_t)cap * sizeof *v);
      if (!nv) {
        free(v);
        return qlm_fail(err, QLM_ENOMEM, "%s: out of memory reading lines", path);
      }
      v = nv;
    }
    v[k++] = s;
  }
  *lines = v;
  *n = k;
  return QLM_OK;
}

void qlm_textset_free(qlm_textset *t) {
  if (!t) return;
  if (t->text)
    for (int i = 0; i < t->n; i++) free(t->text[i]);
  free(t->text);
  free(t->label);
  memset(t, 0, sizeof *t);
}

static int parse_label(const char *s, int n_class, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < 0 || v >= n_class) return -1;
  *out = (int)v;
  return 0;
}

int qlm_textset_load(const char *text_path, const char *label_path, int n_class, int max_n, qlm_textset *out,
                     qlm_error *err) {
  memset(out, 0, sizeof *out);
  if (n_class < 1 || n_class > QLM_CLS_MAX_CLASSES)
    return qlm_fail(err, QLM_EUSAGE, "%d classes: must be 1..%d", n_class, QLM_CLS_MAX_CLASSES);
  char *tb = NULL, *lb = NULL, **tl = NULL, **ll = NULL;
  size_t tn = 0, ln = 0;
  int nt = 0, nl = 0, rc = qlm_read_file(text_path, 1u << 30, &tb, &tn, err);
  if (!rc) rc = split_lines(tb, tn, &tl, &nt, text_path, err);
  if (!rc && label_path) {
    if (!(rc = qlm_read_file(label_path, 1u << 28, &lb, &ln, err))) rc = split_lines(lb, ln, &ll, &nl, label_path, err);
    if (!rc && nl != nt)
      rc = qlm_fail(err, QLM_EFORMAT, "%s: %d labels for the %d texts of %s", label_path, nl, nt, text_path);
  }
  int n = max_n > 0 && max_n < nt ? max_n : nt;
  if (!rc && (!(out->text = qlm_calloc((size_t)n + 1, sizeof *out->text, "texts", err)) ||
              (label_path && !(out->label = qlm_calloc((size_t)n + 1, sizeof *out->label, "labels", err)))))
    rc = QLM_ENOMEM;
  for (int i = 0; !rc && i < n; i++) {
    if (!(out->text[i] = strdup(tl[i]))) rc = qlm_fail(err, QLM_ENOMEM, "%s: out of memory", text_path);
    out->n = i + 1;
    if (!rc && label_path && parse_label(ll[i], n_class, &out->label[i]))
      rc = qlm_fail(err, QLM_EFORMAT, "%s: line %d: '%.40s' is not a class in 0..%d", label_path, i + 1, ll[i],
                    n_class - 1);
  }
  free(tl);
  free(ll);
  free(tb);
  free(lb);
  if (rc) qlm_textset_free(out);
  return rc;
}

int qlm_class_names_load(const char *path, char names[][32], int *n_class, qlm_error *err) {
  char *buf = NULL, **lines = NULL;
  size_t len = 0;
  int n = 0, rc = qlm_read_file(path, 1u << 20, &buf, &len, err);
  if (!rc) rc = split_lines(buf, len, &lines, &n, path, err);
  if (!rc && (n < 1 || n > QLM_CLS_MAX_CLASSES))
    rc = qlm_fail(err, QLM_EFORMAT, "%s: %d classes (expected 1..%d lines 'id<TAB>name')", path, n, QLM_CLS_MAX_CLASSES);
  for (int i = 0; !rc && i < n; i++) {
    char *tab = strchr(lines[i], '\t');
    int id;
    if (!tab) {
      rc = qlm_fail(err, QLM_EFORMAT, "%s: line %d has no tab ('id<TAB>name')", path, i + 1);
      break;
    }
    *tab = '\0';
    if (parse_label(lines[i], n, &id) || id != i)
      rc = qlm_fail(err, QLM_EFORMAT, "%s: line %d: id '%s' should be %d", path, i + 1, lines[i], i);
    else if (strlen(tab + 1) == 0 || strlen(tab + 1) >= 32)
      rc = qlm_fail(err, QLM_EFORMAT, "%s: line %d: class name must be 1..31 bytes", path, i + 1);
    else
      snprintf(names[i], 32, "%s", tab + 1);
  }
  if (!rc) *n_class = n;
  free(lines);
  free(buf);
  return rc;
}

/* ---- metrics ---- */

static double ratio(int64_t a, int64_t b) { return b > 0 ? (double)a / (double)b : 0.0; }

int qlm_cls_metrics_compute(const int *y_true, const int *y_pred, int64_t n, int n_class, qlm_cls_metrics *m,
                            qlm_error *err) {
  memset(m, 0, sizeof *m);
  if (n_class < 1 || n_class > QLM_CLS_MAX_CLASSES)
    return qlm_fail(err, QLM_EUSAGE, "metrics: %d classes (must be 1..%d)", n_class, QLM_CLS_MAX_CLASSES);
  if (n < 1) return qlm_fail(err, QLM_EUSAGE, "metrics: no samples");
  m->n_class = n_class;
  m->n = n;
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i++) {
    int t = y_true[i], p = y_pred[i];
    if (t < 0 || t >= n_class || p < 0 || p >= n_class)
      return qlm_fail(err, QLM_EUSAGE, "metrics: sample %lld has label %d / prediction %d outside 0..%d", (long long)i,
                      t, p, n_class - 1);
    m->confusion[t][p]++;
    correct += t == p;
  }
  m->accuracy = (double)correct / (double)n;
  for (int c = 0; c < n_class; c++) {
    int64_t tp = m->confusion[c][c], pred = 0, sup = 0;
    for (int k = 0; k < n_class; k++) {
      pred += m->confusion[k][c];
      sup += m->confusion[c][k];
    }
    m->support[c] = sup;
    m->precision[c] = ratio(tp, pred);
    m->recall[c] = ratio(tp, sup);
    double s = m->precision[c] + m->recall[c];
    m->f1[c] = s > 0 ? 2 * m->precision[c] * m->recall[c] / s : 0.0;
    m->macro_precision += m->precision[c] / n_class;
    m->macro_recall += m->recall[c] / n_class;
    m->macro_f1 += m->f1[c] / n_class;
    double w = (double)sup / (double)n;
    m->weighted_precision += w * m->precision[c];
    m->weighted_recall += w * m->recall[c];
    m->weighted_f1 += w * m->f1[c];
  }
  return QLM_OK;
}

/* A growing string for the report. */
typedef struct sbuf {
  char *s;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (k < 0) {
      b->oom = 1;
      return;
    }
    if (b->s && b->len + (size_t)k < b->cap) {
      b->len += (size_t)k;
      return;
    }
    size_t nc = (b->cap ? b->cap * 2 : 1024) + (size_t)k;
    char *ns = realloc(b->s, nc);
    if (!ns) {
      b->oom = 1;
      return;
    }
    b->s = ns;
    b->cap = nc;
  }
}

/* scikit-learn 1.x classification_report: width = max(longest name, "weighted avg", digits);
 * header "{:>w} " + " {:>9}" x 4, a blank line, one row per class "{:>w} " + " {:>9.df}" x 3 +
 * " {:>9}", a blank line, then accuracy (precision/recall columns blank), macro avg, weighted avg. */
char *qlm_cls_report(const qlm_cls_metrics *m, const char *const *names, int digits) {
  int w = (int)strlen("weighted avg");
  for (int c = 0; c < m->n_class; c++)
    if ((int)strlen(names[c]) > w) w = (int)strlen(names[c]);
  if (digits > w) w = digits;
  sbuf b = {0};
  sb_printf(&b, "%*s  %9s %9s %9s %9s\n\n", w, "", "precision", "recall", "f1-score", "support");
  for (int c = 0; c < m->n_class; c++)
    sb_printf(&b, "%*s  %9.*f %9.*f %9.*f %9lld\n", w, names[c], digits, m->precision[c], digits, m->recall[c], digits,
              m->f1[c], (long long)m->support[c]);
  sb_printf(&b, "\n");
  sb_printf(&b, "%*s  %9s %9s %9.*f %9lld\n", w, "accuracy", "", "", digits, m->accuracy, (long long)m->n);
  sb_printf(&b, "%*s  %9.*f %9.*f %9.*f %9lld\n", w, "macro avg", digits, m->macro_precision, digits, m->macro_recall,
            digits, m->macro_f1, (long long)m->n);
  sb_printf(&b, "%*s  %9.*f %9.*f %9.*f %9lld\n", w, "weighted avg", digits, m->weighted_precision, digits,
            m->weighted_recall, digits, m->weighted_f1, (long long)m->n);
  if (b.oom) {
    free(b.s);
    return NULL;
  }
  return b.s;
}

void qlm_cls_print_confusion(FILE *f, const qlm_cls_metrics *m, const char *const *names) {
  int w = (int)strlen("true \\ predicted");
  for (int c = 0; c < m->n_class; c++)
    if ((int)strlen(names[c]) > w) w = (int)strlen(names[c]);
  fprintf(f, "%-*s", w, "true \\ predicted");
  for (int c = 0; c < m->n_class; c++) fprintf(f, " %10s", names[c]);
  fprintf(f, "\n");
  for (int t = 0; t < m->n_class; t++) {
    fprintf(f, "%-*s", w, names[t]);
    for (int p = 0; p < m->n_class; p++) fprintf(f, " %10lld", (long long)m->confusion[t][p]);
    fprintf(f, "\n");
  }
}

/* ---- logistic regression ---- */

/* The problem in standardized coordinates; parameters theta = [W (C x D) | b (C)]. */
typedef struct lr_problem {
  const double *Z; /* [n x D] standardized features */
  const int *y;
  int n, D, C;
  double l2;
} lr_problem;

/* Mean cross-entropy + l2/2 |W|^2 and its gradient g (may be NULL). */
static double lr_loss(const lr_problem *p, const double *th, double *g) {
  int C = p->C, D = p->D;
  const double *W = th, *bias = th + (size_t)C * D;
  size_t np = (size_t)C * D + (size_t)C;
  if (g) memset(g, 0, np * sizeof *g);
  double loss = 0, z[QLM_CLS_MAX_CLASSES];
  for (int i = 0; i < p->n; i++) {
    const double *x = p->Z + (size_t)i * D;
    double mx = -INFINITY, s = 0;
    for (int c = 0; c < C; c++) {
      double a = bias[c];
      for (int j = 0; j < D; j++) a += W[(size_t)c * D + j] * x[j];
      z[c] = a;
      if (a > mx) mx = a;
    }
    for (int c = 0; c < C; c++) s += exp(z[c] - mx);
    double lse = mx + log(s);
    loss += lse - z[p->y[i]];
    if (!g) continue;
    for (int c = 0; c < C; c++) {
      double r = exp(z[c] - lse) - (c == p->y[i]);
      if (r == 0) continue;
      for (int j = 0; j < D; j++) g[(size_t)c * D + j] += r * x[j];
      g[(size_t)C * D + c] += r;
    }
  }
  double reg = 0;
  for (size_t k = 0; k < (size_t)C * D; k++) reg += W[k] * W[k];
  if (g) {
    for (size_t k = 0; k < np; k++) g[k] /= p->n;
    for (size_t k = 0; k < (size_t)C * D; k++) g[k] += p->l2 * W[k];
  }
  return loss / p->n + 0.5 * p->l2 * reg;
}

static double dotv(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* Standardize X into Z with the given statistics. */
static void standardize(const float *X, int n, int D, const float *mean, const float *scale, double *Z) {
  for (int i = 0; i < n; i++)
    for (int j = 0; j < D; j++) Z[(size_t)i * D + j] = ((double)X[(size_t)i * D + j] - mean[j]) / scale[j];
}

void qlm_logreg_free(qlm_logreg *lr) {
  if (!lr) return;
  free(lr->mean);
  free(lr->scale);
  free(lr->W);
  free(lr->b);
  memset(lr, 0, sizeof *lr);
}

static int lr_alloc(qlm_logreg *lr, int C, int D, qlm_error *err) {
  memset(lr, 0, sizeof *lr);
  lr->n_class = C;
  lr->dim = D;
  if (!(lr->mean = qlm_calloc((size_t)D, sizeof(float), "head", err)) ||
      !(lr->scale = qlm_calloc((size_t)D, sizeof(float), "head", err)) ||
      !(lr->W = qlm_calloc((size_t)C * D, sizeof(float), "head", err)) ||
      !(lr->b = qlm_calloc((size_t)C, sizeof(float), "head", err))) {
    qlm_logreg_free(lr);
    return QLM_ENOMEM;
  }
  return QLM_OK;
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static double rng_normal(uint64_t *s) {
  double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0, v = (double)(rng_next(s) >> 11) / 9007199254740992.0;
  return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

enum { LBFGS_M = 8 };

int qlm_logreg_fit(const float *X, const int *y, int n, int dim, int n_class, const float *Xh, const int *yh, int nh,
                   const qlm_logreg_opts *o, qlm_logreg *out, qlm_logreg_info *info, qlm_error *err) {
  memset(out, 0, sizeof *out);
  if (n < 1 || dim < 1 || n_class < 2 || n_class > QLM_CLS_MAX_CLASSES || nh < 0)
    return qlm_fail(err, QLM_EUSAGE, "logistic regression: %d samples, %d features, %d classes (need n >= 1, 2..%d classes)",
                    n, dim, n_class, QLM_CLS_MAX_CLASSES);
  for (int i = 0; i < n; i++)
    if (y[i] < 0 || y[i] >= n_class) return qlm_fail(err, QLM_EUSAGE, "logistic regression: label %d of sample %d", y[i], i);
  for (int i = 0; i < nh; i++)
    if (yh[i] < 0 || yh[i] >= n_class)
      return qlm_fail(err, QLM_EUSAGE, "logistic regression: held-out label %d of sample %d", yh[i], i);
  int max_iter = o && o->max_iter > 0 ? o->max_iter : 500, patience = o && o->patience > 0 ? o->patience : 30;
  double tol = o && o->tol > 0 ? o->tol : 1e-6, l2 = o ? o->l2 : 0;
  if (!(l2 >= 0) || !isfinite(l2)) return qlm_fail(err, QLM_EUSAGE, "logistic regression: l2 %g must be >= 0", l2);
  uint64_t seed = o ? o->seed : 0;
  int C = n_class, D = dim, rc = lr_alloc(out, C, D, err);
  if (rc) return rc;
  out->l2 = l2;
  /* feature statistics of the training rows */
  for (int j = 0; j < D; j++) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) s += X[(size_t)i * D + j];
    double mu = s / n;
    for (int i = 0; i < n; i++) ss += (X[(size_t)i * D + j] - mu) * (X[(size_t)i * D + j] - mu);
    double sd = sqrt(ss / n);
    out->mean[j] = (float)mu;
    out->scale[j] = sd > 1e-12 && isfinite(sd) ? (float)sd : 1.0f;
  }
  size_t np = (size_t)C * D + (size_t)C, zn, zhn;
  if (qlm_mul_overflow((size_t)n, (size_t)D, &zn) || qlm_mul_overflow((size_t)nh, (size_t)D, &zhn)) {
    qlm_logreg_free(out);
    return qlm_fail(err, QLM_ELIMIT, "logistic regression: %d x %d features overflow", n, D);
  }
  double *Z = qlm_malloc(zn * sizeof *Z, "standardized features", err);
  double *Zh = qlm_malloc((zhn ? zhn : 1) * sizeof *Zh, "standardized features", err);
  double *work = qlm_calloc(np * (6 + 2 * LBFGS_M), sizeof *work, "optimizer", err);
  if (!Z || !Zh || !work) {
    rc = QLM_ENOMEM;
    goto done;
  }
  standardize(X, n, D, out->mean, out->scale, Z);
  if (nh) standardize(Xh, nh, D, out->mean, out->scale, Zh);
  double *th = work, *g = th + np, *d = g + np, *tn = d + np, *gn = tn + np, *best = gn + np;
  double *S = best + np, *Y = S + np * LBFGS_M, rho[LBFGS_M], alpha[LBFGS_M];
  for (size_t k = 0; k < (size_t)C * D; k++) th[k] = 0.01 * rng_normal(&seed);
  lr_problem P = {Z, y, n, D, C, l2}, H = {Zh, yh, nh, D, C, 0.0};
  double f = lr_loss(&P, th, g), best_h = nh ? lr_loss(&H, th, NULL) : NAN, best_f = f;
  memcpy(best, th, np * sizeof *th);
  int it = 0, best_it = 0, m_used = 0, head = 0;
  for (it = 1; it <= max_iter; it++) {
    /* L-BFGS two-loop recursion: d = -H g */
    for (size_t k = 0; k < np; k++) d[k] = -g[k];
    for (int i = 0; i < m_used; i++) {
      int s = (head - 1 - i + LBFGS_M) % LBFGS_M;
      alpha[s] = rho[s] * dotv(S + np * s, d, np);
      for (size_t k = 0; k < np; k++) d[k] -= alpha[s] * Y[np * s + k];
    }
    if (m_used) {
      int s = (head - 1 + LBFGS_M) % LBFGS_M;
      double gamma = dotv(S + np * s, Y + np * s, np) / dotv(Y + np * s, Y + np * s, np);
      for (size_t k = 0; k < np; k++) d[k] *= gamma;
    }
    for (int i = m_used - 1; i >= 0; i--) {
      int s = (head - 1 - i + LBFGS_M) % LBFGS_M;
      double beta = rho[s] * dotv(Y + np * s, d, np);
      for (size_t k = 0; k < np; k++) d[k] += (alpha[s] - beta) * S[np * s + k];
    }
    double gd = dotv(g, d, np);
    if (!(gd < 0)) { /* not a descent direction: restart from steepest descent */
      for (size_t k = 0; k < np; k++) d[k] = -g[k];
      gd = -dotv(g, g, np);
      m_used = 0;
    }
    /* Armijo backtracking; the first step of plain gradient descent is scaled to length 1 */
    double t = m_used ? 1.0 : 1.0 / fmax(1.0, sqrt(-gd)), fn = f;
    int ok = 0;
    for (int ls = 0; ls < 50; ls++) {
      for (size_t k = 0; k < np; k++) tn[k] = th[k] + t * d[k];
      fn = lr_loss(&P, tn, gn);
      if (fn <= f + 1e-4 * t * gd) {
        ok = 1;
        break;
      }
      t *= 0.5;
    }
    if (!ok) break; /* no decrease possible at this precision: converged */
    int s = head;
    double sy = 0;
    for (size_t k = 0; k < np; k++) {
      S[np * s + k] = tn[k] - th[k];
      Y[np * s + k] = gn[k] - g[k];
    }
    sy = dotv(S + np * s, Y + np * s, np);
    if (sy > 1e-12) {
      rho[s] = 1.0 / sy;
      head = (head + 1) % LBFGS_M;
      if (m_used < LBFGS_M) m_used++;
    }
    memcpy(th, tn, np * sizeof *th);
    memcpy(g, gn, np * sizeof *g);
    f = fn;
    if (nh) {
      double h = lr_loss(&H, th, NULL);
      if (h < best_h) {
        best_h = h;
        best_f = f;
        best_it = it;
        memcpy(best, th, np * sizeof *th);
      } else if (it - best_it >= patience) {
        break;
      }
    } else {
      best_f = f;
      best_it = it;
      memcpy(best, th, np * sizeof *th);
    }
    if (sqrt(dotv(g, g, np)) < tol) break;
  }
  for (size_t k = 0; k < (size_t)C * D; k++) out->W[k] = (float)best[k];
  for (int c = 0; c < C; c++) out->b[c] = (float)best[(size_t)C * D + c];
  if (info) *info = (qlm_logreg_info){.iters = it > max_iter ? max_iter : it, .best_iter = best_it,
                                      .train_loss = best_f, .heldout_loss = best_h};
done:
  free(Z);
  free(Zh);
  free(work);
  if (rc) qlm_logreg_free(out);
  return rc;
}

int qlm_logreg_predict(const qlm_logreg *lr, const float *x, double *prob) {
  double z[QLM_CLS_MAX_CLASSES], mx = -INFINITY, s = 0;
  int arg = 0;
  for (int c = 0; c < lr->n_class; c++) {
    double a = lr->b[c];
    const float *w = lr->W + (size_t)c * lr->dim;
    for (int j = 0; j < lr->dim; j++) a += (double)w[j] * (((double)x[j] - lr->mean[j]) / lr->scale[j]);
    z[c] = a;
    if (a > mx) {
      mx = a;
      arg = c;
    }
  }
  for (int c = 0; c < lr->n_class; c++) s += exp(z[c] - mx);
  if (prob)
    for (int c = 0; c < lr->n_class; c++) prob[c] = exp(z[c] - mx) / s;
  return arg;
}

int qlm_logreg_cv(const float *X, const int *y, int n, int dim, int n_class, const double *l2, int n_l2, int k,
                  const qlm_logreg_opts *o, double *cv_acc, int *best, qlm_error *err) {
  if (k < 2 || k > n) return qlm_fail(err, QLM_EUSAGE, "cross-validation: %d folds for %d samples", k, n);
  if (n_l2 < 1) return qlm_fail(err, QLM_EUSAGE, "cross-validation: no L2 candidates");
  int *perm = qlm_malloc((size_t)n * sizeof *perm, "folds", err), *yt = qlm_malloc((size_t)n * sizeof *yt, "folds", err);
  float *Xt = qlm_malloc((size_t)n * dim * sizeof *Xt, "folds", err);
  int rc = (!perm || !yt || !Xt) ? QLM_ENOMEM : QLM_OK;
  uint64_t seed = (o ? o->seed : 0) ^ 0x5DEECE66Dull;
  if (!rc) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates */
      int j = (int)(rng_next(&seed) % (uint64_t)(i + 1)), t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
  }
  double best_acc = -1;
  *best = 0;
  for (int li = 0; !rc && li < n_l2; li++) {
    qlm_logreg_opts lo = o ? *o : (qlm_logreg_opts){0};
    lo.l2 = l2[li];
    int64_t correct = 0;
    for (int f = 0; !rc && f < k; f++) {
      int nt = 0;
      for (int i = 0; i < n; i++)
        if (i % k != f) {
          memcpy(Xt + (size_t)nt * dim, X + (size_t)perm[i] * dim, (size_t)dim * sizeof *Xt);
          yt[nt++] = y[perm[i]];
        }
      qlm_logreg lr;
      if ((rc = qlm_logreg_fit(Xt, yt, nt, dim, n_class, NULL, NULL, 0, &lo, &lr, NULL, err))) break;
      for (int i = f; i < n; i += k) correct += qlm_logreg_predict(&lr, X + (size_t)perm[i] * dim, NULL) == y[perm[i]];
      qlm_logreg_free(&lr);
    }
    double acc = (double)correct / n;
    if (cv_acc) cv_acc[li] = acc;
    if (acc > best_acc || (acc == best_acc && l2[li] > l2[*best])) {
      best_acc = acc;
      *best = li;
    }
  }
  free(perm);
  free(yt);
  free(Xt);
  return rc;
}

/* ---- head files ---- */

static cJSON *float_array(const float *v, int n) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < n; i++) {
    cJSON *x = cJSON_CreateNumber((double)v[i]);
    if (!x || !cJSON_AddItemToArray(a, x)) {
      cJSON_Delete(x);
      cJSON_Delete(a);
      return NULL;
    }
  }
  return a;
}

int qlm_logreg_save(const char *path, const qlm_logreg *lr, const char *const *info_kv, int n_info, qlm_error *err) {
  cJSON *o = cJSON_CreateObject(), *info = cJSON_CreateObject();
  int rc = QLM_OK;
  char *s = NULL;
  if (!o || !info) goto oom;
  cJSON_AddStringToObject(o, "format", "qlm-logreg-head-1");
  cJSON_AddNumberToObject(o, "n_class", lr->n_class);
  cJSON_AddNumberToObject(o, "dim", lr->dim);
  cJSON_AddNumberToObject(o, "l2", lr->l2);
  for (int i = 0; i < n_info; i++) cJSON_AddStringToObject(info, info_kv[2 * i], info_kv[2 * i + 1]);
  cJSON_AddItemToObject(o, "info", info);
  info = NULL;
  cJSON *a;
  if (!(a = float_array(lr->mean, lr->dim)) || !cJSON_AddItemToObject(o, "mean", a)) goto oom;
  if (!(a = float_array(lr->scale, lr->dim)) || !cJSON_AddItemToObject(o, "scale", a)) goto oom;
  if (!(a = float_array(lr->W, lr->n_class * lr->dim)) || !cJSON_AddItemToObject(o, "W", a)) goto oom;
  if (!(a = float_array(lr->b, lr->n_class)) || !cJSON_AddItemToObject(o, "b", a)) goto oom;
  if (!(s = cJSON_Print(o))) goto oom;
  qlm_atomic_file af;
  if (!(rc = qlm_atomic_open(&af, path, err))) {
    if ((rc = qlm_atomic_write(&af, s, strlen(s), err)) || (rc = qlm_atomic_write(&af, "\n", 1, err)))
      qlm_atomic_abort(&af);
    else
      rc = qlm_atomic_commit(&af, err);
  }
  goto done;
oom:
  rc = qlm_fail(err, QLM_ENOMEM, "%s: out of memory building the head's JSON", path);
done:
  free(s);
  cJSON_Delete(o);
  cJSON_Delete(info);
  return rc;
}

static int read_floats(const cJSON *o, const char *key, float *dst, int n, const char *path, qlm_error *err) {
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n)
    return qlm_fail(err, QLM_EFORMAT, "%s: '%s' must be an array of %d numbers", path, key, n);
  int i = 0;
  const cJSON *x;
  cJSON_ArrayForEach(x, a) {
    if (!cJSON_IsNumber(x) || !isfinite(x->valuedouble))
      return qlm_fail(err, QLM_EFORMAT, "%s: '%s'[%d] is not a finite number", path, key, i);
    dst[i++] = (float)x->valuedouble;
  }
  return QLM_OK;
}

int qlm_logreg_load(const char *path, qlm_logreg *lr, const char *info_key, char *info_value, size_t cap,
                    qlm_error *err) {
  memset(lr, 0, sizeof *lr);
  char *text = NULL;
  int rc = qlm_read_file(path, 256u << 20, &text, NULL, err);
  if (rc) return rc;
  cJSON *o = cJSON_Parse(text);
  free(text);
  if (!o) return qlm_fail(err, QLM_EFORMAT, "%s: not valid JSON", path);
  const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(o, "format"), *nc = cJSON_GetObjectItemCaseSensitive(o, "n_class"),
              *dm = cJSON_GetObjectItemCaseSensitive(o, "dim"), *l2 = cJSON_GetObjectItemCaseSensitive(o, "l2");
  if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "qlm-logreg-head-1"))
    rc = qlm_fail(err, QLM_EFORMAT, "%s: not a qlm head (format must be \"qlm-logreg-head-1\")", path);
  else if (!cJSON_IsNumber(nc) || nc->valuedouble < 2 || nc->valuedouble > QLM_CLS_MAX_CLASSES || !cJSON_IsNumber(dm) ||
           dm->valuedouble < 1 || dm->valuedouble > 1 << 20 || nc->valuedouble != (int)nc->valuedouble ||
           dm->valuedouble != (int)dm->valuedouble)
    rc = qlm_fail(err, QLM_EFORMAT, "%s: n_class must be 2..%d and dim 1..%d", path, QLM_CLS_MAX_CLASSES, 1 << 20);
  if (!rc) rc = lr_alloc(lr, (int)nc->valuedouble, (int)dm->valuedouble, err);
  if (!rc) {
    lr->l2 = cJSON_IsNumber(l2) ? l2->valuedouble : NAN;
    rc = read_floats(o, "mean", lr->mean, lr->dim, path, err);
    if (!rc) rc = read_floats(o, "scale", lr->scale, lr->dim, path, err);
    if (!rc) rc = read_floats(o, "W", lr->W, lr->n_class * lr->dim, path, err);
    if (!rc) rc = read_floats(o, "b", lr->b, lr->n_class, path, err);
    for (int j = 0; !rc && j < lr->dim; j++)
      if (!(lr->scale[j] > 0)) rc = qlm_fail(err, QLM_EFORMAT, "%s: scale[%d] must be positive", path, j);
  }
  if (!rc && info_key && info_value && cap) {
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(o, "info");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, info_key);
    snprintf(info_value, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
  }
  cJSON_Delete(o);
  if (rc) qlm_logreg_free(lr);
  return rc;
}

/* ---- features ---- */

int qlm_feature_kind_parse(const char *s) {
  if (!strcmp(s, "last")) return QLM_FEAT_LAST;
  if (!strcmp(s, "mean")) return QLM_FEAT_MEAN;
  return -1;
}

const char *qlm_feature_kind_name(int kind) { return kind == QLM_FEAT_MEAN ? "mean" : "last"; }


int qlm_features_extract(const qlm_model *m, const qlm_tokenizer *tok, char *const *texts, int n, int kind, int batch,
                         int max_tokens, int n_threads, float *feat, qlm_run_stats *st,
                         void (*progress)(void *ctx, int done, int total), void *pctx, qlm_error *err) {
  int E = m->hp.n_embd, rc = QLM_OK, max_len = 1;
  if (batch < 1 || batch > 4096) return qlm_fail(err, QLM_EUSAGE, "features: batch %d is not in 1..4096", batch);
  if (max_tokens <= 0 || max_tokens > m->hp.n_ctx) max_tokens = m->hp.n_ctx;
  int32_t **ids = qlm_calloc((size_t)n + 1, sizeof *ids, "token lists", err);
  int *len = qlm_calloc((size_t)n + 1, sizeof *len, "token lists", err);
  int32_t *tk = qlm_malloc(QLM_FEAT_ROWS * 3 * sizeof *tk, "batch", err);
  float *hid = qlm_malloc((size_t)QLM_FEAT_ROWS * E * sizeof *hid, "hidden states", err);
  qlm_state *s = NULL;
  if (!ids || !len || !tk || !hid) rc = QLM_ENOMEM;
  /* tokenize everything first, so the cache is sized for the longest text */
  for (int i = 0; !rc && i < n; i++) {
    rc = qlm_tokenize(tok, texts[i], strlen(texts[i]), 1, 0, &ids[i], &len[i], err);
    if (rc) {
      qlm_fail_prefix(err, "text %d", i + 1);
      break;
    }
    if (len[i] < 1) rc = qlm_fail(err, QLM_EUSAGE, "text %d: no tokens (empty text and no BOS)", i + 1);
    if (len[i] > max_tokens) {
      len[i] = max_tokens;
      if (st) st->truncated++;
    }
    if (len[i] > max_len) max_len = len[i];
  }
  if (!rc) rc = qlm_state_new(m, batch, max_len, QLM_FEAT_ROWS, n_threads, &s, err);
  double t0 = now_s();
  int32_t *pos = tk + QLM_FEAT_ROWS, *seq = pos + QLM_FEAT_ROWS;
  for (int i0 = 0; !rc && i0 < n; i0 += batch) {
    int nb = n - i0 < batch ? n - i0 : batch;
    for (int j = 0; j < nb; j++) {
      qlm_state_clear(s, j);
      memset(feat + (size_t)(i0 + j) * E, 0, (size_t)E * sizeof *feat);
    }
    /* the batch's texts one after another, QLM_FEAT_ROWS rows per call; a text may span two calls */
    int j = 0, p = 0;
    while (!rc && j < nb) {
      int r = 0;
      for (; r < QLM_FEAT_ROWS && j < nb; r++) {
        tk[r] = ids[i0 + j][p];
        pos[r] = p;
        seq[r] = j;
        if (++p == len[i0 + j]) {
          j++;
          p = 0;
        }
      }
      qlm_batch b = {.n = r, .token = tk, .pos = pos, .seq = seq};
      if ((rc = qlm_forward_hidden(m, s, &b, hid, err))) break;
      if (st) st->tokens += r;
      for (int k = 0; k < r; k++) {
        int t = i0 + seq[k];
        float *f = feat + (size_t)t * E;
        const float *h = hid + (size_t)k * E;
        if (kind == QLM_FEAT_MEAN)
          for (int e = 0; e < E; e++) f[e] += h[e] / (float)len[t];
        else if (pos[k] == len[t] - 1)
          memcpy(f, h, (size_t)E * sizeof *f);
      }
    }
    if (progress && !rc) progress(pctx, i0 + nb, n);
  }
  if (st) st->seconds += now_s() - t0;
  qlm_state_free(s);
  if (ids)
    for (int i = 0; i < n; i++) free(ids[i]);
  free(ids);
  free(len);
  free(tk);
  free(hid);
  return rc;
}
