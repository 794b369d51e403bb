/* classify.h — text classification with a frozen model: labelled text sets, frozen features
 * (final hidden state), a multinomial logistic-regression head, zero-shot prompting, and the
 * metrics of scikit-learn's classification_report.
 *
 * Pipeline (issue #5, seed 000's sentiment study adapted to frozen features):
 *   texts -> qlm_features (one vector per text: the final-norm hidden state of the last token, or
 *   the mean over the text's tokens) -> qlm_logreg (softmax head, L2, seeded, early stopping)
 *   -> predictions -> qlm_cls_metrics (accuracy, macro-F1, per-class report, confusion matrix).
 * The zero-shot baseline skips the head: the class is the label word with the highest
 * log-probability after a prompt (qlm_zeroshot, zeroshot.c). */
#ifndef QLM_CLASSIFY_H
#define QLM_CLASSIFY_H

#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

enum { QLM_CLS_MAX_CLASSES = 64, QLM_CLS_MAX_TEXTS = 1 << 22, QLM_CLS_MAX_TEXT_BYTES = 1 << 16 };

/* ---- labelled texts ---- */

/* One text per line (trailing whitespace and CR stripped), labels one integer per line. */
typedef struct qlm_textset {
  int n;
  char **text; /* [n] NUL-terminated */
  int *label;  /* [n] 0..n_class-1, or NULL when no label file was given */
} qlm_textset;

/* Read texts (and labels when label_path is non-NULL: same number of lines, each an integer in
 * [0, n_class)); max_n > 0 keeps only the first max_n.  Errors name the file and line. */
int qlm_textset_load(const char *text_path, const char *label_path, int n_class, int max_n, qlm_textset *out,
                     qlm_error *err);
void qlm_textset_free(qlm_textset *t);
/* Class names from a mapping file ("0\tnegative" lines); *n_class receives their count. */
int qlm_class_names_load(const char *path, char names[][32], int *n_class, qlm_error *err);

/* ---- metrics ---- */

typedef struct qlm_cls_metrics {
  int n_class;
  int64_t n;                                       /* samples */
  int64_t confusion[QLM_CLS_MAX_CLASSES][QLM_CLS_MAX_CLASSES]; /* [true][predicted] */
  int64_t support[QLM_CLS_MAX_CLASSES];            /* true count per class */
  double precision[QLM_CLS_MAX_CLASSES], recall[QLM_CLS_MAX_CLASSES], f1[QLM_CLS_MAX_CLASSES];
  double accuracy;
  double macro_precision, macro_recall, macro_f1;  /* unweighted means over classes */
  double weighted_precision, weighted_recall, weighted_f1; /* weighted by support */
} qlm_cls_metrics;

/* Metrics of predictions y_pred against y_true (both in [0, n_class)).  A precision or recall
 * whose denominator is 0 counts as 0, as scikit-learn's zero_division="warn" does. */
int qlm_cls_metrics_compute(const int *y_true, const int *y_pred, int64_t n, int n_class, qlm_cls_metrics *m,
                            qlm_error *err);
/* scikit-learn's classification_report text (same widths and rounding) for the classes named
 * names[0..n_class), with `digits` decimals.  malloc'd, NULL when out of memory. */
char *qlm_cls_report(const qlm_cls_metrics *m, const char *const *names, int digits);
/* The confusion matrix as a table: rows true class, columns predicted class. */
void qlm_cls_print_confusion(FILE *f, const qlm_cls_metrics *m, const char *const *names);

/* ---- multinomial logistic regression ----
 * p(c | x) = softmax_c(W_c . z + b_c) with z = (x - mean) / scale (standardized features, the
 * statistics of the training set).  Loss = mean cross-entropy + l2/2 * |W|^2 (bias not
 * penalized), minimized by full-batch gradient descent with Armijo backtracking. */
typedef struct qlm_logreg {
  int n_class, dim;
  float *mean, *scale; /* [dim] feature standardization */
  float *W;            /* [n_class x dim] */
  float *b;            /* [n_class] */
  double l2;           /* penalty it was trained with */
} qlm_logreg;

typedef struct qlm_logreg_opts {
  double l2;        /* L2 strength (>= 0) */
  int max_iter;     /* gradient steps (default 500) */
  int patience;     /* early stopping: steps without a better held-out loss before stopping (default 30) */
  double tol;       /* stop when the gradient norm falls below tol (default 1e-6) */
  uint64_t seed;    /* initial weights N(0, 0.01^2) from this seed */
} qlm_logreg_opts;

typedef struct qlm_logreg_info {
  int iters, best_iter;    /* steps taken, step with the best held-out loss (or the last) */
  double train_loss, heldout_loss; /* at the kept weights (held-out NaN without a held-out set) */
} qlm_logreg_info;

/* Fit on X [n x dim], y [n]; with a held-out set (Xh [nh x dim], yh, nh > 0) the weights with the
 * lowest held-out cross-entropy are kept (early stopping).  out must be freed with qlm_logreg_free. */
int qlm_logreg_fit(const float *X, const int *y, int n, int dim, int n_class, const float *Xh, const int *yh, int nh,
                   const qlm_logreg_opts *o, qlm_logreg *out, qlm_logreg_info *info, qlm_error *err);
void qlm_logreg_free(qlm_logreg *lr);
/* Class probabilities of one feature vector x [dim] into prob [n_class]; returns the argmax. */
int qlm_logreg_predict(const qlm_logreg *lr, const float *x, double *prob);
/* k-fold cross-validation over candidate L2 strengths: mean held-out-fold accuracy per
 * candidate into cv_acc [n_l2] (may be NULL); returns the index of the best (ties: larger l2).
 * Folds are a seeded permutation of the rows. */
int qlm_logreg_cv(const float *X, const int *y, int n, int dim, int n_class, const double *l2, int n_l2, int k,
                  const qlm_logreg_opts *o, double *cv_acc, int *best, qlm_error *err);

/* The head as JSON (cJSON): n_class, dim, l2, mean, scale, W, b, plus `info` key/values (feature
 * kind, training data, ...; may be NULL).  Written atomically. */
int qlm_logreg_save(const char *path, const qlm_logreg *lr, const char *const *info_kv, int n_info, qlm_error *err);
/* Load a head; info_value (may be NULL) receives the string value of info key `info_key`. */
int qlm_logreg_load(const char *path, qlm_logreg *lr, const char *info_key, char *info_value, size_t cap,
                    qlm_error *err);

/* ---- frozen features ---- */

typedef enum qlm_feature_kind { QLM_FEAT_LAST = 0, QLM_FEAT_MEAN = 1 } qlm_feature_kind;
int qlm_feature_kind_parse(const char *s); /* "last" | "mean", -1 otherwise */
const char *qlm_feature_kind_name(int kind);

typedef struct qlm_run_stats {
  int64_t tokens;      /* tokens fed to the model */
  int64_t truncated;   /* texts cut to fit the context */
  double seconds;      /* wall time of the forward passes */
} qlm_run_stats;

/* Rows (tokens) per forward call of qlm_features_extract (its state's batch). */
enum { QLM_FEAT_ROWS = 512 };

/* One feature per text into feat [n x n_embd]: each text is tokenized (add_special as the vocab
 * says, at most max_tokens tokens, longer ones keep the first max_tokens), and `batch` texts run
 * together as separate sequences of one forward call (no padding: each sequence has its own rows,
 * positions and cache).  progress may be NULL. */
int qlm_features_extract(const qlm_model *m, const qlm_tokenizer *tok, char *const *texts, int n, int kind, int batch,
                         int max_tokens, int n_threads, float *feat, qlm_run_stats *st,
                         void (*progress)(void *ctx, int done, int total), void *pctx, qlm_error *err);

/* ---- zero-shot prompting (zeroshot.c) ----
 * prompt = template with every "{text}" replaced by the text (trailing whitespace stripped); the
 * class is argmax over c of log p(label_word[c] | prompt), summed over the word's tokens. */
typedef struct qlm_zeroshot_opts {
  const char *template_;         /* must contain "{text}" */
  const char *const *label_words; /* [n_class] continuations, e.g. " negative" */
  int n_class;
  int batch, n_threads, max_tokens;
} qlm_zeroshot_opts;

/* The default prompt and label words used by `qlm classify zeroshot` (not the seeds': their
 * exact prompt is not in the shared notes). */
extern const char *const QLM_ZEROSHOT_TEMPLATE;
extern const char *const QLM_ZEROSHOT_LABELS[3];

/* Predicted class per text into pred [n] (and the label words' log-probabilities into ll
 * [n x n_class] when non-NULL). */
/* tpl with each "{text}" replaced by text (malloc'd; NULL when out of memory): the prompt
 * qlm_zeroshot_classify scores (the memory check of `qlm classify zeroshot` sizes it too). */
char *qlm_zeroshot_prompt(const char *tpl, const char *text);

int qlm_zeroshot_classify(const qlm_model *m, const qlm_tokenizer *tok, char *const *texts, int n,
                          const qlm_zeroshot_opts *o, int *pred, double *ll, qlm_run_stats *st,
                          void (*progress)(void *ctx, int done, int total), void *pctx, qlm_error *err);

#endif
