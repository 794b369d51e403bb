/* load.c — read a results database into report rows (see report.h for what a row is).
 *
 * Linking rule (evaluation run → the quantize run that produced its model):
 *   an evaluation run E evaluated models row M. E is the evaluation of a quantized model made by
 *   quantize run Q when Q has an artefact of kind 'model' whose sha256 equals M.sha256 — the file
 *   evaluated is byte for byte the file written. Only when either hash is missing (a folder, an
 *   unhashed file) does the artefact's path equal to M.path link them instead; a path alone is not
 *   trusted when both hashes exist, since the file at a path may have been overwritten. With
 *   several such Q (a deterministic method writes identical bytes every time) the first recorded
 *   one names the config. E's config is then Q's quant_configs row and E's base model is Q's input
 *   model (Q's models row), so the unquantized evaluation of that model — a run whose model is not
 *   any quantize run's output and that has no config of its own — is the base of E's section.
 *   An evaluation run that carries a config itself (quant_id) but links to no quantize run is
 *   grouped under its own model with that config (no base).
 *
 * Per-result costs: inference time is results.seconds (the evaluation's own wall time; the
 * run's non-load phases when absent). Energy, its CPU/RAM/GPU parts and CO₂ are the run's phases
 * other than "load"; a run with several results (classify with several --batch sizes) shares them
 * in proportion to the results' seconds. Memory is the result's peak_rss_mb metric, else the
 * largest peak_rss of those phases. Quantization cost is the calibrate + quantize phases of every
 * quantize run with the same input model key and config_key (repetitions: mean ± sd). */
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "db/db.h"
#include "report/report.h"

const qlm_rep_metric_info qlm_rep_metrics[QLM_RM_N] = {
    {"accuracy", "accuracy", 0},         {"f1", "macro-F1", 0},
    {"ppl", "perplexity", 1},            {"infer_s", "inference time (s)", 1},
    {"mem_mib", "max memory (MiB)", 1},  {"energy_wh", "energy (Wh)", 1},
    {"co2_g", "emissions (gCO2e)", 1},   {"cpu_wh", "CPU energy (Wh)", 1},
    {"ram_wh", "RAM energy (Wh)", 1},    {"gpu_wh", "GPU energy (Wh)", 1},
    {"quant_s", "quantization time (s)", 1}, {"quant_energy_wh", "quantization energy (Wh)", 1},
    {"quant_co2_g", "quantization emissions (gCO2e)", 1},
};

enum { MAX_RESULTS = 1000000 };

/* One evaluation result, before repetitions are merged. */
typedef struct rec {
  char task[32], protocol[32], settings[512], batch[16];
  char base_key[600], base_path[512];
  char method[64], options[128], config_key[512];
  double bits;
  long group;
  int is_base;
  int64_t run_id;
  double v[QLM_RM_N];
  double pue, g_per_kwh;
} rec;

typedef struct loader {
  sqlite3 *h;
  const char *path;
  qlm_error *err;
  rec *recs;
  int n, cap;
} loader;

/* snprintf that may truncate on purpose (long paths and options are display text here) */
static void textf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void textf(char *out, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out, n, fmt, ap);
  va_end(ap);
}

static double col_d(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static void col_s(sqlite3_stmt *st, int i, char *out, size_t n) {
  const unsigned char *s = sqlite3_column_text(st, i);
  snprintf(out, n, "%s", s ? (const char *)s : "");
}

static int sql_fail(loader *L, const char *what) {
  int ec = sqlite3_errcode(L->h);
  if (ec == SQLITE_NOTADB)
    return qlm_fail(L->err, QLM_EFORMAT, "%s: not a SQLite database, so not a qlm results database", L->path);
  if (ec == SQLITE_CORRUPT) return qlm_fail(L->err, QLM_EFORMAT, "%s: database is corrupt (%s)", L->path, what);
  return qlm_fail(L->err, QLM_EIO, "%s: %s: %s", L->path, what, sqlite3_errmsg(L->h));
}

static int prepare(loader *L, const char *sql, sqlite3_stmt **st) {
  return sqlite3_prepare_v2(L->h, sql, -1, st, NULL) == SQLITE_OK ? QLM_OK : sql_fail(L, "reading the results");
}

static int64_t count_of(loader *L, const char *sql) {
  sqlite3_stmt *st;
  int64_t n = -1;
  if (sqlite3_prepare_v2(L->h, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

/* ---- opening: never create, and say precisely what the file is when it is not ours ---- */

static int open_ro(loader *L) {
  if (sqlite3_open_v2(L->path, &L->h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
    return qlm_fail(L->err, QLM_EIO, "%s: cannot open the results database: %s", L->path,
                    L->h ? sqlite3_errmsg(L->h) : "out of memory");
  sqlite3_busy_timeout(L->h, QLM_DB_BUSY_TIMEOUT_MS);
  return QLM_OK;
}

static int check_schema(loader *L, int *version) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(L->h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return sql_fail(L, "reading the header");
  int rc = sqlite3_step(st);
  *version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) return sql_fail(L, "reading the header");
  int64_t tables = count_of(L, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                               " ('runs','models','quant_configs','results','metrics','artefacts')");
  if (tables < 0) return sql_fail(L, "reading the schema");
  if (*version < 1 || tables != 6)
    return qlm_fail(L->err, QLM_EFORMAT,
                    "%s: a SQLite database but not a qlm results database (schema version %d, %lld of the 6 qlm"
                    " tables); record runs with --db FILE",
                    L->path, *version, (long long)tables);
  if (*version > QLM_DB_SCHEMA_VERSION)
    return qlm_fail(L->err, QLM_EUNSUPPORTED, "%s: schema version %d is newer than this qlm's (%d): use a newer qlm",
                    L->path, *version, QLM_DB_SCHEMA_VERSION);
  return QLM_OK;
}

static int open_db(loader *L) {
  struct stat sb;
  if (stat(L->path, &sb) != 0)
    return qlm_fail(L->err, QLM_EIO, "%s: %s (give the results database written by --db FILE)", L->path, strerror(errno));
  if (!S_ISREG(sb.st_mode)) return qlm_fail(L->err, QLM_EIO, "%s: not a regular file", L->path);
  if (sb.st_size == 0) return qlm_fail(L->err, QLM_EFORMAT, "%s: empty file, not a qlm results database", L->path);
  int version = 0;
  if (open_ro(L) || check_schema(L, &version)) return L->err->code;
  if (version < QLM_DB_SCHEMA_VERSION) { /* an older qlm's file: migrate it the usual way, then read */
    sqlite3_close_v2(L->h);
    L->h = NULL;
    qlm_db *db = NULL;
    if (qlm_db_open(L->path, &db, L->err)) return L->err->code;
    qlm_db_close(db);
    if (open_ro(L) || check_schema(L, &version)) return L->err->code;
  }
  return QLM_OK;
}

/* ---- phases ---- */

typedef struct cost {
  double wall, peak, cpu, ram, gpu, co2, g, pue; /* s, bytes, kWh ×3, g, g/kWh, - */
  int n;                                         /* phases summed */
} cost;

static int phase_cost(loader *L, int64_t run_id, int quantize, cost *c) {
  static const char eval_sql[] =
      "SELECT sum(wall_s), max(peak_rss), sum(cpu_kwh), sum(ram_kwh), sum(gpu_kwh), sum(co2_g), avg(g_per_kwh),"
      " avg(pue), count(*) FROM phases WHERE run_id = ? AND name <> 'load'";
  static const char quant_sql[] =
      "SELECT sum(wall_s), max(peak_rss), sum(cpu_kwh), sum(ram_kwh), sum(gpu_kwh), sum(co2_g), avg(g_per_kwh),"
      " avg(pue), count(*) FROM phases WHERE run_id = ? AND name IN ('calibrate', 'quantize')";
  sqlite3_stmt *st;
  if (prepare(L, quantize ? quant_sql : eval_sql, &st)) return L->err->code;
  sqlite3_bind_int64(st, 1, run_id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    *c = (cost){col_d(st, 0), col_d(st, 1), col_d(st, 2), col_d(st, 3), col_d(st, 4), col_d(st, 5), col_d(st, 6),
                col_d(st, 7), sqlite3_column_int(st, 8)};
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? QLM_OK : sql_fail(L, "reading phases");
}

static double kwh_sum(const cost *c) {
  /* a part that was not measured is NULL: the total is the sum of the parts that were */
  double s = 0;
  int any = 0;
  const double p[3] = {c->cpu, c->ram, c->gpu};
  for (int i = 0; i < 3; i++)
    if (isfinite(p[i])) s += p[i], any = 1;
  return any ? s : NAN;
}

/* ---- the quantize run behind an evaluated model ---- */

static int link_quant(loader *L, const char *sha, const char *path, rec *r, int *found) {
  static const char sql[] =
      "SELECT qc.method, qc.bits, IFNULL(qc.group_size, 0), IFNULL(qc.options, ''), qc.config_key,"
      " IFNULL(bm.key, ''), IFNULL(bm.path, '') FROM artefacts a JOIN runs qr ON qr.id = a.run_id"
      " JOIN quant_configs qc ON qc.id = qr.quant_id LEFT JOIN models bm ON bm.id = qr.model_id"
      " WHERE a.kind = 'model' AND (a.sha256 = ?1 OR ((a.sha256 IS NULL OR ?1 IS NULL) AND a.path = ?2))"
      " ORDER BY qr.id LIMIT 1";
  sqlite3_stmt *st;
  if (prepare(L, sql, &st)) return L->err->code;
  sha && *sha ? sqlite3_bind_text(st, 1, sha, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, 1);
  sqlite3_bind_text(st, 2, path, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(st);
  *found = rc == SQLITE_ROW;
  if (*found) {
    col_s(st, 0, r->method, sizeof r->method);
    r->bits = col_d(st, 1);
    r->group = (long)sqlite3_column_int64(st, 2);
    col_s(st, 3, r->options, sizeof r->options);
    col_s(st, 4, r->config_key, sizeof r->config_key);
    col_s(st, 5, r->base_key, sizeof r->base_key);
    col_s(st, 6, r->base_path, sizeof r->base_path);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? QLM_OK : sql_fail(L, "linking a model to its quantize run");
}

static int own_quant(loader *L, int64_t quant_id, rec *r) {
  sqlite3_stmt *st;
  if (prepare(L, "SELECT method, bits, IFNULL(group_size, 0), IFNULL(options, ''), config_key FROM quant_configs"
                 " WHERE id = ?", &st))
    return L->err->code;
  sqlite3_bind_int64(st, 1, quant_id);
  if (sqlite3_step(st) == SQLITE_ROW) {
    col_s(st, 0, r->method, sizeof r->method);
    r->bits = col_d(st, 1);
    r->group = (long)sqlite3_column_int64(st, 2);
    col_s(st, 3, r->options, sizeof r->options);
    col_s(st, 4, r->config_key, sizeof r->config_key);
  }
  sqlite3_finalize(st);
  return QLM_OK;
}

/* ---- results ---- */

static int push(loader *L, const rec *r) {
  if (L->n == L->cap) {
    if (L->cap >= MAX_RESULTS)
      return qlm_fail(L->err, QLM_ELIMIT, "%s: more than %d evaluation results", L->path, MAX_RESULTS);
    int nc = L->cap ? 2 * L->cap : 64;
    size_t bytes;
    if (qlm_mul_overflow((size_t)nc, sizeof *L->recs, &bytes)) return qlm_fail(L->err, QLM_ELIMIT, "%s: too many results", L->path);
    rec *p = realloc(L->recs, bytes);
    if (!p) return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory (%d results)", L->path, nc);
    L->recs = p, L->cap = nc;
  }
  L->recs[L->n++] = *r;
  return QLM_OK;
}

/* MMLU writes one result per subject besides its summary; only the summary is a table row. */
#define NOT_SUBJECT(alias) \
  "NOT EXISTS (SELECT 1 FROM result_settings s WHERE s.result_id = " alias ".id AND s.key = 'subject')"

static const char results_sql[] =
    "SELECT r.run_id, r.task, IFNULL(r.protocol, ''), IFNULL(r.data, ''), r.seconds,"
    " (SELECT group_concat(kv, ';') FROM (SELECT key || '=' || IFNULL(value, '') AS kv FROM result_settings s"
    "   WHERE s.result_id = r.id AND key <> 'batch' ORDER BY key)),"
    " (SELECT value FROM result_settings s WHERE s.result_id = r.id AND s.key = 'batch'),"
    " (SELECT value FROM metrics m WHERE m.result_id = r.id AND m.name IN ('accuracy', 'acc_micro')"
    "   ORDER BY m.name DESC LIMIT 1),"
    " (SELECT value FROM metrics m WHERE m.result_id = r.id AND m.name = 'macro_f1'),"
    " (SELECT value FROM metrics m WHERE m.result_id = r.id AND m.name = 'ppl'),"
    " (SELECT value FROM metrics m WHERE m.result_id = r.id AND m.name = 'peak_rss_mb'),"
    " (SELECT count(*) FROM results r2 WHERE r2.run_id = r.run_id AND " NOT_SUBJECT("r2") "),"
    " (SELECT sum(seconds) FROM results r2 WHERE r2.run_id = r.run_id AND " NOT_SUBJECT("r2") "),"
    " IFNULL(mo.key, ''), IFNULL(mo.path, ''), mo.sha256, ru.quant_id"
    " FROM results r JOIN runs ru ON ru.id = r.run_id LEFT JOIN models mo ON mo.id = ru.model_id"
    " WHERE " NOT_SUBJECT("r") " ORDER BY r.id";

static int one_result(loader *L, sqlite3_stmt *st) {
  rec r;
  memset(&r, 0, sizeof r);
  for (int k = 0; k < QLM_RM_N; k++) r.v[k] = NAN;
  r.run_id = sqlite3_column_int64(st, 0);
  col_s(st, 1, r.task, sizeof r.task);
  col_s(st, 2, r.protocol, sizeof r.protocol);
  char data[256], kv[256];
  col_s(st, 3, data, sizeof data);
  double seconds = col_d(st, 4);
  col_s(st, 5, kv, sizeof kv);
  textf(r.settings, sizeof r.settings, "%s|%s|%s", r.protocol, data, kv);
  col_s(st, 6, r.batch, sizeof r.batch);
  r.v[QLM_RM_ACC] = col_d(st, 7);
  r.v[QLM_RM_F1] = col_d(st, 8);
  r.v[QLM_RM_PPL] = col_d(st, 9);
  if (!isfinite(r.v[QLM_RM_ACC]) && !isfinite(r.v[QLM_RM_F1]) && !isfinite(r.v[QLM_RM_PPL])) return QLM_OK;
  double mem_mb = col_d(st, 10), n_in_run = col_d(st, 11), sum_s = col_d(st, 12);
  char mkey[600], mpath[512], sha[80];
  col_s(st, 13, mkey, sizeof mkey);
  col_s(st, 14, mpath, sizeof mpath);
  col_s(st, 15, sha, sizeof sha);
  int has_quant = sqlite3_column_type(st, 16) != SQLITE_NULL;
  int64_t quant_id = sqlite3_column_int64(st, 16);

  int linked = 0;
  r.group = 0;
  r.bits = NAN;
  if (link_quant(L, sha, mpath, &r, &linked)) return L->err->code;
  if (!linked) {
    snprintf(r.base_key, sizeof r.base_key, "%s", mkey);
    snprintf(r.base_path, sizeof r.base_path, "%s", mpath);
    if (has_quant && own_quant(L, quant_id, &r)) return L->err->code;
    r.is_base = !has_quant;
    if (r.is_base) snprintf(r.method, sizeof r.method, "base");
  }

  cost c;
  if (phase_cost(L, r.run_id, 0, &c)) return L->err->code;
  /* this result's share of the run's evaluation phases */
  double share = 1.0;
  if (n_in_run > 1) share = isfinite(seconds) && sum_s > 0 ? seconds / sum_s : 1.0 / n_in_run;
  r.v[QLM_RM_TIME] = isfinite(seconds) ? seconds : c.wall * share;
  r.v[QLM_RM_MEM] = isfinite(mem_mb) ? mem_mb : c.peak / 1048576.0;
  r.v[QLM_RM_ENERGY] = kwh_sum(&c) * 1000 * share;
  r.v[QLM_RM_CPU_WH] = c.cpu * 1000 * share;
  r.v[QLM_RM_RAM_WH] = c.ram * 1000 * share;
  r.v[QLM_RM_GPU_WH] = c.gpu * 1000 * share;
  r.v[QLM_RM_CO2] = c.co2 * share;
  r.g_per_kwh = c.g;
  r.pue = c.pue;
  return push(L, &r);
}

static int read_results(loader *L) {
  sqlite3_stmt *st;
  if (prepare(L, results_sql, &st)) return L->err->code;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    if (one_result(L, st)) {
      sqlite3_finalize(st);
      return L->err->code;
    }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? QLM_OK : sql_fail(L, "reading results");
}

/* ---- grouping ---- */

static int cmp_nan_desc(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) - isnan(b);
  return (a < b) - (a > b);
}

/* section keys, then base first, then the experiment */
static int cmp_rec(const void *pa, const void *pb) {
  const rec *a = pa, *b = pb;
  int c;
  if ((c = strcmp(a->task, b->task)) || (c = strcmp(a->settings, b->settings)) || (c = strcmp(a->base_key, b->base_key)))
    return c;
  if (a->is_base != b->is_base) return b->is_base - a->is_base;
  double ba = atof(a->batch), bb = atof(b->batch);
  if (ba != bb) return (ba > bb) - (ba < bb);
  if ((c = strcmp(a->batch, b->batch)) || (c = cmp_nan_desc(a->bits, b->bits)) || (c = strcmp(a->method, b->method)) ||
      (c = strcmp(a->config_key, b->config_key)))
    return c;
  return (a->run_id > b->run_id) - (a->run_id < b->run_id);
}

static int same_section(const rec *a, const rec *b) {
  return !strcmp(a->task, b->task) && !strcmp(a->settings, b->settings) && !strcmp(a->base_key, b->base_key);
}

static int same_row(const rec *a, const rec *b) {
  return same_section(a, b) && a->is_base == b->is_base && !strcmp(a->config_key, b->config_key) &&
         !strcmp(a->batch, b->batch);
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s && s[1] ? s + 1 : path;
}

static void make_label(qlm_rep_row *w) {
  char bs[32] = "";
  if (w->batch[0]) textf(bs, sizeof bs, " bs%s", w->batch);
  if (w->is_base) {
    textf(w->label, sizeof w->label, "base%s", bs);
    return;
  }
  char bits[24] = "", group[24] = "";
  if (isfinite(w->bits)) snprintf(bits, sizeof bits, " %gb", w->bits);
  if (w->group > 0) snprintf(group, sizeof group, " g%ld", w->group);
  else if (w->group < 0) snprintf(group, sizeof group, " tensor");
  int short_opt = w->options[0] && strlen(w->options) <= 16;
  textf(w->label, sizeof w->label, "%.40s%s%s%s%.16s%s", w->method, bits, group, short_opt ? " " : "",
        short_opt ? w->options : "", bs);
}

/* Quantization cost of a row: every quantize run of the base model with the row's config. */
static int quant_cost(loader *L, qlm_rep_row *w) {
  static const char sql[] = "SELECT r.id FROM runs r JOIN quant_configs qc ON qc.id = r.quant_id JOIN models m ON"
                            " m.id = r.model_id WHERE r.command = 'quantize' AND m.key = ? AND qc.config_key = ?"
                            " ORDER BY r.id LIMIT 10000";
  sqlite3_stmt *st;
  if (prepare(L, sql, &st)) return L->err->code;
  sqlite3_bind_text(st, 1, w->model_key, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 2, w->config_key, -1, SQLITE_TRANSIENT);
  enum { CAP = 10000 };
  double *v = malloc(3 * CAP * sizeof *v);
  if (!v) {
    sqlite3_finalize(st);
    return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory", L->path);
  }
  int n = 0, rc = QLM_OK;
  while (!rc && n < CAP && sqlite3_step(st) == SQLITE_ROW) {
    cost c;
    rc = phase_cost(L, sqlite3_column_int64(st, 0), 1, &c);
    if (rc) break;
    v[n] = c.n ? c.wall : NAN, v[CAP + n] = kwh_sum(&c) * 1000, v[2 * CAP + n] = c.co2;
    n++;
  }
  sqlite3_finalize(st);
  if (!rc) {
    w->n_qruns = n;
    w->m[QLM_RM_QTIME] = qlm_rep_stat_of(v, n);
    w->m[QLM_RM_QENERGY] = qlm_rep_stat_of(v + CAP, n);
    w->m[QLM_RM_QCO2] = qlm_rep_stat_of(v + 2 * CAP, n);
  }
  free(v);
  return rc;
}

static int make_row(loader *L, const rec *g, int n, qlm_rep_row *w) {
  memset(w, 0, sizeof *w);
  const rec *r = &g[0];
  snprintf(w->task, sizeof w->task, "%s", r->task);
  snprintf(w->protocol, sizeof w->protocol, "%s", r->protocol);
  snprintf(w->settings, sizeof w->settings, "%s", r->settings);
  snprintf(w->batch, sizeof w->batch, "%s", r->batch);
  textf(w->model, sizeof w->model, "%s", base_name(r->base_path));
  snprintf(w->model_key, sizeof w->model_key, "%s", r->base_key);
  snprintf(w->method, sizeof w->method, "%s", r->method);
  snprintf(w->options, sizeof w->options, "%s", r->options);
  snprintf(w->config_key, sizeof w->config_key, "%s", r->config_key);
  w->bits = r->bits, w->group = r->group, w->is_base = r->is_base, w->n_runs = n;
  make_label(w);
  double *v = malloc((size_t)n * sizeof *v);
  if (!v) return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory", L->path);
  for (int k = 0; k < QLM_RM_N; k++) {
    for (int i = 0; i < n; i++) v[i] = g[i].v[k];
    w->m[k] = qlm_rep_stat_of(v, n);
  }
  for (int i = 0; i < n; i++) v[i] = g[i].g_per_kwh;
  w->g_per_kwh = qlm_rep_stat_of(v, n).mean;
  for (int i = 0; i < n; i++) v[i] = g[i].pue;
  w->pue = qlm_rep_stat_of(v, n).mean;
  free(v);
  size_t len = 0;
  for (int i = 0; i < n && len + 24 < sizeof w->run_ids; i++) {
    len += (size_t)snprintf(w->run_ids + len, sizeof w->run_ids - len, "%s%lld", i ? "," : "", (long long)g[i].run_id);
    if (i + 1 < n && len + 24 >= sizeof w->run_ids) snprintf(w->run_ids + len, sizeof w->run_ids - len, ",...");
  }
  for (int k = 0; k < QLM_RM_N; k++) w->rel[k] = NAN;
  w->score_softmax = w->score_logppl = NAN;
  return w->is_base ? QLM_OK : quant_cost(L, w);
}

/* Relative changes against the section's base and the combined metrics over the section. */
static int finish_section(qlm_rep_row *s, int n, qlm_error *err) {
  for (int i = 0; n > 0 && s[0].is_base && i < n; i++) {
    /* the base evaluated at the same batch size, else the first base row (seed 000 compares its
     * base at batch 32 with quantized models at batch 64) */
    const qlm_rep_row *base = &s[0];
    for (int j = 0; j < n && s[j].is_base; j++)
      if (!strcmp(s[j].batch, s[i].batch)) base = &s[j];
    for (int k = 0; k < QLM_RM_N; k++) {
      double b = base->m[k].mean, x = s[i].m[k].mean;
      s[i].rel[k] = isfinite(b) && isfinite(x) && b != 0 ? (x - b) / fabs(b) : NAN;
    }
  }
  if (n <= 0) return QLM_OK;
  double *buf = calloc((size_t)4 * (size_t)n, sizeof *buf);
  if (!buf) return qlm_fail(err, QLM_ENOMEM, "report: out of memory (scores)");
  double *ppl = buf, *co2 = buf + n, *sm = buf + 2 * n, *lg = buf + 3 * n;
  for (int i = 0; i < n; i++) ppl[i] = s[i].m[QLM_RM_PPL].mean, co2[i] = s[i].m[QLM_RM_CO2].mean;
  qlm_score_softmax(ppl, co2, n, sm);
  qlm_score_logppl(ppl, co2, n, lg);
  for (int i = 0; i < n; i++) s[i].score_softmax = sm[i], s[i].score_logppl = lg[i];
  free(buf);
  return QLM_OK;
}

static int build_rows(loader *L, qlm_report *rep) {
  if (L->n == 0) return QLM_OK;
  qsort(L->recs, (size_t)L->n, sizeof *L->recs, cmp_rec);
  rep->rows = calloc((size_t)L->n, sizeof *rep->rows);
  if (!rep->rows) return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory (%d rows)", L->path, L->n);
  int section = -1, sec_start = 0;
  for (int i = 0; i < L->n;) {
    int j = i + 1;
    while (j < L->n && same_row(&L->recs[i], &L->recs[j])) j++;
    if (i == 0 || !same_section(&L->recs[i], &L->recs[i - 1])) {
      if (section >= 0 && finish_section(rep->rows + sec_start, rep->n_rows - sec_start, L->err)) return L->err->code;
      section++, sec_start = rep->n_rows;
    }
    qlm_rep_row *w = &rep->rows[rep->n_rows];
    if (make_row(L, L->recs + i, j - i, w)) return L->err->code;
    w->section = section;
    rep->n_rows++;
    i = j;
  }
  rep->n_sections = section + 1;
  return finish_section(rep->rows + sec_start, rep->n_rows - sec_start, L->err);
}

int qlm_report_load(const char *db_path, qlm_report **out, qlm_error *err) {
  *out = NULL;
  loader L = {.path = db_path, .err = err};
  qlm_report *rep = calloc(1, sizeof *rep);
  if (!rep) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory", db_path);
  snprintf(rep->db_path, sizeof rep->db_path, "%s", db_path);
  int rc = open_db(&L);
  if (!rc) {
    rep->n_runs = (int)count_of(&L, "SELECT count(*) FROM runs");
    if (rep->n_runs < 0) rc = sql_fail(&L, "counting runs");
    else if (rep->n_runs == 0)
      rc = qlm_fail(err, QLM_EUSAGE, "%s: the results database is empty (no runs recorded; run e.g. qlm ppl"
                                     " --db %s first)", db_path, db_path);
  }
  if (!rc) rc = read_results(&L);
  if (!rc) rep->n_results = L.n, rc = build_rows(&L, rep);
  if (!rc && rep->n_rows == 0)
    rc = qlm_fail(err, QLM_EUSAGE, "%s: %d runs but no evaluation results (perplexity, accuracy or F1) to report;"
                                   " evaluate with qlm ppl/classify/mmlu --db %s", db_path, rep->n_runs, db_path);
  free(L.recs);
  if (L.h) sqlite3_close_v2(L.h);
  if (rc) {
    qlm_report_free(rep);
    return rc;
  }
  *out = rep;
  return QLM_OK;
}

void qlm_report_free(qlm_report *rep) {
  if (!rep) return;
  free(rep->rows);
  free(rep);
}
