/* sweep.h — experiment grids: a JSON config expanded into jobs that `qlm sweep` runs as child
 * processes recording into the results database (src/db/db.h), resumably.
 *
 *   qlm_sweep_config *cfg;  qlm_sweep_load("grid.json", &cfg, &err);   parse and check
 *   qlm_sweep_job *jobs; int n;  qlm_sweep_expand(cfg, &jobs, &n, &err);
 *   qlm_sweep_run(cfg, &opts, &err);                 plan, then run what is not done yet
 *
 * The grid is models x quantization configs x tasks x repetitions. Each job is one child
 * process of the qlm binary (`qlm quantize|ppl|classify|mmlu|replay ... --db DB`) that records
 * one run whose runs.label is the job's label (passed as $QLM_RUN_LABEL):
 *
 *   "<model>/<quant>/<task>"           a task cell (repetition k >= 2 adds "#r<k>")
 *   "quantize:<model>/<quant>"         the quantization a cell's model file comes from
 *   "train:<model>/<train>"            a classification head trained on the base model
 *
 * Quantize once, evaluate many: each (model, quant) is quantized once into the work dir and
 * every task cell reads that file. A job is done iff a runs row with its label exists (for
 * quantize/train jobs also its output file); the child's run is one transaction, so a sweep
 * killed at any moment loses no finished job and leaves no partial one. */
#ifndef QLM_SWEEP_H
#define QLM_SWEEP_H

#include <stdio.h>

#include "core/error.h"

enum { QLM_SWEEP_KEY_MAX = 128, QLM_SWEEP_MAX_JOBS = 100000 };

typedef struct qlm_sweep_args {
  char **v;  /* [n] malloc'd strings */
  int n, cap;
} qlm_sweep_args;

typedef struct qlm_sweep_model {
  char name[64];  /* key part: "name" or the file name without extension, sanitized */
  char *path;     /* expanded ($VAR, ~) */
} qlm_sweep_model;

/* How a cell's model file is made from the model. */
enum { QLM_SWEEP_BASE = 0,   /* the model file as given ("base") */
       QLM_SWEEP_FP32 = 1,   /* the same file, dequantized to f32 at load ("fp32": QLM_DEQUANT_ALL=1) */
       QLM_SWEEP_QUANT = 2 };/* `qlm quantize` into the work dir */

typedef struct qlm_sweep_quant {
  char key[QLM_SWEEP_KEY_MAX]; /* canonical: "fp32", "absmax-b4-g64", "nf4-dq", "q4_K", ... */
  int kind;                    /* QLM_SWEEP_BASE / FP32 / QUANT */
  qlm_sweep_args args;         /* qlm quantize options (--method M --bits B ...) */
  char method[32];             /* method or llama.cpp type name (for the rough estimate) */
  int calibrated;              /* gptq/awq/smoothquant/--target-bpw: runs the model on calibration text */
  long calib_samples, calib_len; /* as passed (defaults 128 x 2048) */
} qlm_sweep_quant;

enum { QLM_TASK_PPL, QLM_TASK_CLASSIFY, QLM_TASK_MMLU, QLM_TASK_REPLAY };

typedef struct qlm_sweep_train {
  char key[QLM_SWEEP_KEY_MAX]; /* "classify-train[-l<limit>][-<feature>]..." */
  qlm_sweep_args args;         /* classify train options (without -m/-o) */
  long limit;                  /* tweets (0 = the split) */
} qlm_sweep_train;

typedef struct qlm_sweep_task {
  char key[QLM_SWEEP_KEY_MAX]; /* "ppl-hf-window-w1024-s512", "classify-b32", "mmlu-k5-l10" */
  int kind;                    /* QLM_TASK_* */
  const char *command;         /* "ppl", "classify", "mmlu", "replay" */
  qlm_sweep_args args;         /* options after the command, without -m/--head/--db/-t */
  int train;                   /* classify: index into cfg->trains, else -1 */
  /* for the rough time estimate */
  long window, chunks, limit, shots;
  double duration_s;           /* replay window / speedup */
  char *data;                  /* data file given, or NULL */
} qlm_sweep_task;

typedef struct qlm_sweep_config {
  char *file;                  /* the config path (error messages) */
  char *name;                  /* "name" (or the file name) */
  qlm_sweep_model *models;
  int n_models;
  qlm_sweep_quant *quants;
  int n_quants;
  qlm_sweep_task *tasks;
  int n_tasks;
  qlm_sweep_train *trains;
  int n_trains;
  int repetitions;             /* >= 1 */
  char *db;                    /* results database (default qlm-results.db) */
  char *work_dir;              /* NULL = <db dir>/qlm-sweep-work */
  qlm_sweep_args measure;      /* --country/--pue/... for every child */
  int threads;                 /* per child; 0 = CPUs / jobs */
} qlm_sweep_config;

enum { QLM_JOB_QUANTIZE, QLM_JOB_TRAIN, QLM_JOB_CELL };

typedef struct qlm_sweep_job {
  int kind;                    /* QLM_JOB_* */
  char label[3 * QLM_SWEEP_KEY_MAX + 32];
  int model, quant, task, train, rep; /* indexes into the config (-1 = not this kind); rep 1.. */
  int dep_quant, dep_train;    /* jobs that must finish first (-1 = none) */
} qlm_sweep_job;

/* Parse a config (text is the file's contents, file names it in messages). Errors name the file
 * and the key ("grid.json: quant[2].bits: ..."). */
int qlm_sweep_parse(const char *text, const char *file, qlm_sweep_config **out, qlm_error *err);
int qlm_sweep_load(const char *path, qlm_sweep_config **out, qlm_error *err);
void qlm_sweep_config_free(qlm_sweep_config *cfg);
/* Replace a string field (db, work_dir) with a copy of s. */
int qlm_sweep_set(char **field, const char *s, qlm_error *err);
int qlm_sweep_args_push(qlm_sweep_args *a, const char *s, qlm_error *err);
void qlm_sweep_args_free(qlm_sweep_args *a);

/* The jobs in run order: for each model, its quantize jobs, its train jobs, then the cells
 * (model-major, then quant, task, repetition). *jobs is malloc'd. */
int qlm_sweep_expand(const qlm_sweep_config *cfg, qlm_sweep_job **jobs, int *n_jobs, qlm_error *err);

/* Files in the work dir (malloc'd): the quantized model of (model, quant), the head of
 * (model, train), a job's log. */
char *qlm_sweep_quant_path(const qlm_sweep_config *cfg, int model, int quant);
char *qlm_sweep_head_path(const qlm_sweep_config *cfg, int model, int train);
char *qlm_sweep_work_dir(const qlm_sweep_config *cfg);

/* The child's argv (NULL-terminated, malloc'd strings; free with qlm_sweep_argv_free):
 * exe COMMAND options... -t threads [--db db] plus the measurement flags. */
char **qlm_sweep_job_argv(const qlm_sweep_config *cfg, const qlm_sweep_job *job, const char *exe, int threads,
                          int record, qlm_error *err);
void qlm_sweep_argv_free(char **argv);

typedef struct qlm_sweep_opts {
  const char *exe;   /* the qlm binary children run (cmd_sweep: /proc/self/exe) */
  const char *only;  /* glob over job labels (fnmatch, '*' crosses '/'); NULL = all */
  int jobs;          /* children at once (>= 1) */
  int threads;       /* per child; 0 = the config's, else CPUs / jobs */
  int dry_run;       /* print the plan only */
  FILE *out;         /* plan and progress (stdout) */
} qlm_sweep_opts;

/* Plan (table of jobs, done or to do, estimated time) and, unless dry_run, run the jobs not done
 * yet. Returns QLM_OK when every selected job is done at the end; a job that failed makes it
 * return that child's exit status (its class) with a message naming the job and its log. */
int qlm_sweep_run(qlm_sweep_config *cfg, const qlm_sweep_opts *o, qlm_error *err);

#endif
