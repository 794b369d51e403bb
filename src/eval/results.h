/* results.h — one record per evaluation: what was measured, on which model, how.
 *
 * Every evaluation (perplexity, KL divergence, later tasks) fills a qlm_result and hands it to
 * the reporting layer: today a JSON object (qlm_result_to_json), later a row in the results
 * database.  Metric names are stable identifiers ("ppl", "ppl_err", "kld_mean", ...). */
#ifndef QLM_RESULTS_H
#define QLM_RESULTS_H

#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "formats/source.h"

enum { QLM_RESULT_MAX_METRICS = 48, QLM_RESULT_MAX_SETTINGS = 16 };

typedef struct qlm_result_metric {
  char name[40];
  double value; /* NaN is written as JSON null */
} qlm_result_metric;

typedef struct qlm_result_setting {
  char key[40];
  char value[216];
} qlm_result_setting;

typedef struct qlm_result {
  char task[32];      /* "perplexity", "kl-divergence" */
  char model[512];    /* path as given */
  char method[128];   /* quantization method recorded in the file ("none" for a plain model) */
  double bits;        /* stored bits per weight over all tensors */
  char protocol[32];  /* evaluation protocol ("hf-window", ...) */
  char data[512];     /* evaluation data path */
  int64_t tokens;     /* tokens scored */
  double seconds;     /* wall time of the measurement */
  int n_metrics;
  qlm_result_metric metrics[QLM_RESULT_MAX_METRICS];
  int n_settings;
  qlm_result_setting settings[QLM_RESULT_MAX_SETTINGS]; /* protocol parameters (window, stride, ...) */
} qlm_result;

/* Start a record for a task on a model: model path, method and bits per weight from the source. */
void qlm_result_init(qlm_result *r, const char *task, const qlm_source *src);
/* Add a metric / setting (fails with QLM_ELIMIT when the record is full or a name is too long). */
int qlm_result_add(qlm_result *r, const char *name, double value, qlm_error *err);
int qlm_result_set(qlm_result *r, const char *key, const char *value, qlm_error *err);
/* Value of a metric, NaN if absent. */
double qlm_result_get(const qlm_result *r, const char *name);

/* The record as a JSON object string (malloc'd), and printed to a stream with a newline. */
char *qlm_result_to_json(const qlm_result *r, qlm_error *err);
int qlm_result_print_json(const qlm_result *r, FILE *f, qlm_error *err);

#endif
