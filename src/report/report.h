/* report.h — tables, charts and a web page from a results database (qlm report).
 *
 *   qlm_report *rep;  qlm_report_load("qlm-results.db", &rep, &err);   read and group the runs
 *   qlm_report_write(rep, "report/", &err);                             tables, charts, index.html
 *   qlm_report_free(rep);
 *
 * What a row is. Every evaluation result (results table; MMLU's per-subject rows excepted)
 * belongs to one experiment: (task, task settings, base model, quantization config). Results of
 * the same experiment recorded by different runs are repetitions and become one row with the
 * mean ± sample standard deviation of each metric. The rows of one task, task settings (all but the
 * batch size) and base model form a section (one table in the seeds' layout); rows without a
 * quantization config are the section's base, one per batch size, and every row's relative
 * change is (mean − base mean) / |base mean| against the base at its batch size, else the first
 * base row (seed 000 compares its base at batch 32 with quantized models at batch 64).
 *
 * Linking an evaluation to its quantization (load.c documents the rule in full): an evaluation
 * run's model is the output of a `qlm quantize` run when the quantize run's artefact of kind
 * "model" has the same sha256 as the evaluated model (or, when either hash is missing, the same
 * path). The quantize run's config and input model are then the evaluation's config and base. */
#ifndef QLM_REPORT_H
#define QLM_REPORT_H

#include <stdint.h>

#include "core/error.h"

/* The metrics of a row, in the column order of the tables. */
enum {
  QLM_RM_ACC,         /* accuracy (classification: "accuracy"; MMLU: "acc_micro") */
  QLM_RM_F1,          /* macro-F1 */
  QLM_RM_PPL,         /* perplexity */
  QLM_RM_TIME,        /* inference (evaluation) wall seconds */
  QLM_RM_MEM,         /* peak resident memory of the evaluation, MiB */
  QLM_RM_ENERGY,      /* evaluation energy, Wh (CPU + RAM + GPU) */
  QLM_RM_CO2,         /* evaluation emissions, g CO₂e */
  QLM_RM_CPU_WH,      /* the energy's parts, Wh */
  QLM_RM_RAM_WH,
  QLM_RM_GPU_WH,
  QLM_RM_QTIME,       /* quantization (calibrate + quantize phases) wall seconds */
  QLM_RM_QENERGY,     /* quantization energy, Wh */
  QLM_RM_QCO2,        /* quantization emissions, g CO₂e */
  QLM_RM_N
};

typedef struct qlm_rep_metric_info {
  const char *key;    /* CSV column stem ("accuracy", "ppl", ...) */
  const char *title;  /* table heading / chart axis ("perplexity", "energy (Wh)", ...) */
  int lower_better;   /* 1 when smaller is better (ppl, time, memory, energy, CO₂) */
} qlm_rep_metric_info;
extern const qlm_rep_metric_info qlm_rep_metrics[QLM_RM_N];

typedef struct qlm_rep_stat {
  double mean, sd;    /* over the repetitions' finite values; sd NaN with one value */
  int n;              /* finite values (0: mean NaN) */
} qlm_rep_stat;

typedef struct qlm_rep_row {
  char task[32];           /* "perplexity", "sentiment-head", "mmlu", ... */
  char protocol[32];
  char settings[512];      /* protocol|data|key=value;... of the result except batch (what must be equal) */
  char batch[16];          /* the "batch" setting, "" when absent */
  char model[256];         /* base model: file name of its path */
  char model_key[600];     /* models.key of the base model */
  char method[64];         /* quantization method; "base" for the unquantized row */
  double bits;             /* configured bits (NaN when not given) */
  long group;              /* group size (0 channel/default, -1 tensor) */
  char options[128];       /* the config's other options */
  char config_key[512];    /* quant_configs.config_key; "" for the base row */
  char label[96];          /* short display name: "base", "absmax 4b g64", ... */
  int is_base;
  int n_runs;              /* evaluation runs averaged */
  int n_qruns;             /* quantize runs averaged for QTIME/QENERGY/QCO2 */
  char run_ids[128];       /* the evaluation runs' ids, comma-separated (truncated with "...") */
  int section;             /* index of the row's section (rows are sorted by section) */
  double pue, g_per_kwh;   /* mean grid intensity and PUE the emissions were computed with */
  qlm_rep_stat m[QLM_RM_N];
  double rel[QLM_RM_N];    /* (mean - base mean)/|base mean|; NaN without a base or value */
  double score_softmax;    /* seed 000: softmax(ppl)_i × CO₂_i over the section (NaN without ppl/CO₂) */
  double score_logppl;     /* softmax(ln ppl)_i × CO₂_i = ppl_i/Σppl × CO₂_i (see score.c) */
} qlm_rep_row;

typedef struct qlm_report {
  char db_path[1024];
  qlm_rep_row *rows;       /* [n_rows], sorted by section, base first, then bits desc, method */
  int n_rows;
  int n_sections;
  int n_runs, n_results;   /* what the database holds (runs of any command; results used) */
} qlm_report;

/* Read the database (opened read-only; never created or migrated). Fails with QLM_EIO when the
 * file is missing, QLM_EFORMAT when it is not a SQLite database or not a qlm results database,
 * QLM_EUSAGE when it holds no runs. */
int qlm_report_load(const char *db_path, qlm_report **out, qlm_error *err);
void qlm_report_free(qlm_report *rep);

/* Write everything into dir (created if absent): report.md, inference.csv, quantization.csv,
 * scores.csv, charts/ *.svg and *.png, index.html — each file atomically. */
int qlm_report_write(const qlm_report *rep, const char *dir, qlm_error *err);

/* The combined metrics over n runs (score.c). Entries with a non-finite or non-positive ppl or a
 * non-finite CO₂ are left out of the normalisation and get NaN.
 *   softmax:  S_i = exp(ppl_i) / Σ_j exp(ppl_j) × CO₂_i                     (seed 000)
 *   log-ppl:  L_i = exp(ln ppl_i) / Σ_j exp(ln ppl_j) × CO₂_i = ppl_i / Σ_j ppl_j × CO₂_i
 * Lower is better for both. */
void qlm_score_softmax(const double *ppl, const double *co2, int n, double *out);
void qlm_score_logppl(const double *ppl, const double *co2, int n, double *out);

/* Mean and sample standard deviation (n - 1) of the finite values among v[n]. */
qlm_rep_stat qlm_rep_stat_of(const double *v, int n);

#endif
