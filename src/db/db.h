/* db.h — the results database: every qlm run, its model, quantization config, measured phases,
 * metrics and artefacts in one SQLite file (default qlm-results.db).
 *
 *   qlm_db *db;  qlm_db_open("qlm-results.db", &db, &err);      creates or migrates the schema
 *   qlm_db_record_run(db, &run, results, n, meter, &id, &err);  one run = one transaction
 *   qlm_db_close(db);
 *
 * Schema (PRAGMA user_version = QLM_DB_SCHEMA_VERSION; qlm_db_open applies the migrations in
 * order, each in its own IMMEDIATE transaction, so concurrent openers cannot migrate twice):
 *
 *   runs(id, uuid UNIQUE, command, started, finished, qlm_version, git_commit, cpu_model, cores,
 *        ram_bytes, simd, hostname, command_line, model_id -> models, quant_id -> quant_configs,
 *        label)                                   label: free text a sweep uses to name its cell
 *   models(id, key UNIQUE, path, sha256, params, arch)   key = "sha256:<hex>" or "path:<path>"
 *   quant_configs(id, run_id, method, bits, group_size, options, rules, seed, config_key)
 *        config_key: canonical text of all the fields; runs with equal model key and config_key
 *        are repetitions of the same experiment (what qlm compare uses as run-to-run noise)
 *   results(id, run_id, idx, task, protocol, data, model_path, method, bits, tokens, seconds)
 *   metrics(id, result_id, name, value, stderr)   "X_err" of a result becomes the stderr of "X"
 *   result_settings(result_id, key, value)        protocol parameters (window, batch, ...)
 *   phases(id, run_id, name, count, wall_s, user_s, sys_s, rss_start, peak_rss, peak_method,
 *          weight_bytes, kv_bytes, tokens, cpu_kwh, ram_kwh, gpu_kwh, gpu_mem_peak,
 *          cpu_energy, ram_energy, gpu_energy ("measured"/"estimated"/"none"),
 *          cpu_method, ram_method, gpu_method, co2_g, country, g_per_kwh, pue)
 *   artefacts(id, run_id, path, kind, sha256, bytes)     kind: "model", "logits", "head", ...
 *   view metrics_flat(run_id, result_id, idx, task, protocol, name, value, stderr, tokens)
 *
 * Version history: 1 = runs, models, quant_configs, results, metrics, artefacts;
 * 2 = adds phases, result_settings, runs.label, indexes and the metrics_flat view.
 *
 * NULL in a column means unknown (a NaN metric is stored as NULL). Times are ISO 8601 local
 * time with the UTC offset. Writers: WAL mode and a busy timeout, so parallel processes (sweeps
 * with --jobs) can record into the same file; each run's rows go in one BEGIN IMMEDIATE ...
 * COMMIT, so a killed process leaves either the whole run or nothing. */
#ifndef QLM_DB_H
#define QLM_DB_H

#include <stdint.h>

#include "core/error.h"
#include "eval/results.h"
#include "measure/meter.h"

#define QLM_DB_DEFAULT_PATH "qlm-results.db"
#define QLM_DB_SCHEMA_VERSION 2
#define QLM_DB_BUSY_TIMEOUT_MS 60000

typedef struct qlm_db qlm_db;
typedef struct sqlite3 sqlite3;

/* Open (creating if absent) and migrate to QLM_DB_SCHEMA_VERSION. A file that is not a SQLite
 * database, or one from a newer qlm, fails with a message naming the file. */
int qlm_db_open(const char *path, qlm_db **out, qlm_error *err);
void qlm_db_close(qlm_db *db);
int qlm_db_schema_version(qlm_db *db);  /* -1 on error */
sqlite3 *qlm_db_sqlite(qlm_db *db);     /* the handle, for queries (sweeps, reports) */
const char *qlm_db_path(const qlm_db *db);

typedef struct qlm_db_machine {
  char cpu_model[256];  /* /proc/cpuinfo "model name" */
  int cores;            /* online CPUs */
  uint64_t ram_bytes;   /* MemTotal */
  char simd[32];        /* kernels' SIMD level: "scalar", "avx2", "avx512" */
  char hostname[128];
} qlm_db_machine;
void qlm_db_machine_detect(qlm_db_machine *m);

typedef struct qlm_db_model {
  const char *path;
  const char *sha256;   /* hex; NULL = not hashed (a folder, or unknown) */
  int64_t params;       /* <= 0: unknown */
  const char *arch;     /* "llama", "qwen2", "gpt2"; NULL = unknown */
} qlm_db_model;

typedef struct qlm_db_quant {
  const char *method;   /* "absmax", "nf4", "gptq", a ggml type name, ... */
  double bits;          /* NaN/0 = not given */
  long group;           /* group size; 0 = per channel/default, -1 = per tensor */
  const char *options;  /* other method options as text ("dq=1 threshold=6", ...) */
  const char *rules;    /* --rule lines joined with '\n' */
  int64_t seed;         /* < 0 = none */
} qlm_db_quant;

typedef struct qlm_db_artefact {
  const char *path;
  const char *kind;     /* "model", "logits", "head", "emissions", ... */
  const char *sha256;   /* hex; NULL = hash the file now (if it is a regular file) */
} qlm_db_artefact;

typedef struct qlm_db_run {
  const char *uuid;         /* NULL = the meter's run id, else a fresh random UUID */
  const char *command;      /* "ppl", "quantize", ... (required) */
  const char *command_line; /* the argv joined with spaces */
  const char *started;      /* ISO 8601; NULL = the meter's start, else now */
  const char *label;        /* NULL = none */
  const qlm_db_machine *machine;   /* NULL = detected now */
  const qlm_db_model *model;       /* NULL = none */
  const qlm_db_quant *quant;       /* NULL = none */
  const qlm_db_artefact *artefacts;
  int n_artefacts;
} qlm_db_run;

/* Record one run with its results (may be 0) and the meter's phases (meter may be NULL; it
 * should be finished) in one transaction. *run_id (may be NULL) gets the new runs.id. */
int qlm_db_record_run(qlm_db *db, const qlm_db_run *run, const qlm_result *results, int n_results,
                      const qlm_meter *meter, int64_t *run_id, qlm_error *err);

/* Test hook: called after every row inserted by qlm_db_record_run (tests kill the process there). */
void qlm_db_set_row_hook(qlm_db *db, void (*fn)(void *ctx, int row), void *ctx);

/* Resolve "42" (runs.id) or a unique uuid prefix (>= 4 hex digits) to a run id. */
int qlm_db_find_run(qlm_db *db, const char *spec, int64_t *run_id, qlm_error *err);

/* ---- compare (compare.c) ----
 * Metrics of run A and run B matched by (task, protocol, n-th result of that task/protocol in
 * the run, metric name). Noise: the repetitions of each run are the runs with the same model
 * key and quantization config_key that have the same metric; σ is the pooled standard deviation
 * of the two groups' values (each group around its own mean, n_A + n_B - 2 degrees of freedom).
 * A single run's difference has sd σ·√2, so the verdict is "exceeds noise" when
 * |B - A| > 2·√2·σ, "within noise" otherwise. Without repetitions (dof 0) but with both stderrs
 * (perplexity's ±), the rule is |B - A| > 2·√(se_A² + se_B²) ("exceeds stderr"/"within stderr");
 * otherwise "no repetitions". */
enum { QLM_CMP_NO_NOISE = 0, QLM_CMP_WITHIN = 1, QLM_CMP_EXCEEDS = 2 };
enum { QLM_CMP_BASIS_NONE = 0, QLM_CMP_BASIS_REPS = 1, QLM_CMP_BASIS_STDERR = 2 };
typedef struct qlm_cmp_row {
  char task[32], protocol[32];
  int occurrence;          /* n-th result with this task/protocol in the run (0-based) */
  char name[40];
  double a, b;             /* values (NaN = absent in that run) */
  double delta, rel;       /* b - a, (b - a)/|a| (NaN when a is 0 or absent) */
  int n_a, n_b;            /* repetitions found (including the run itself) */
  double sigma;            /* pooled run-to-run sd (NaN without repetitions) */
  double threshold;        /* |delta| above which the difference exceeds the noise (NaN = none) */
  int basis;               /* QLM_CMP_BASIS_* */
  int verdict;             /* QLM_CMP_* */
} qlm_cmp_row;

/* Rows (malloc'd, *n_rows) in run A's order, then B-only metrics. */
int qlm_db_compare(qlm_db *db, int64_t run_a, int64_t run_b, qlm_cmp_row **rows, int *n_rows, qlm_error *err);
const char *qlm_cmp_verdict_name(int verdict, int basis);

#endif
