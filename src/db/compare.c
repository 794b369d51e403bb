/* compare.c — metric-by-metric difference of two recorded runs, judged against run-to-run noise
 * (the rule is stated in db.h and in `qlm compare --help`). */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"

enum { CMP_MAX_GROUP = 1000, CMP_MAX_ROWS = 100000 };

typedef struct id_list {
  int64_t *v; /* [n] run ids */
  int n;
} id_list;

static int sql_err(qlm_db *db, qlm_error *err, const char *what) {
  return qlm_fail(err, QLM_EIO, "%s: %s: %s", qlm_db_path(db), what, sqlite3_errmsg(qlm_db_sqlite(db)));
}

/* Runs that repeat run x: same command, same model row, same quantization config_key. */
static int group_of(qlm_db *db, int64_t x, id_list *g, qlm_error *err) {
  static const char sql[] =
      "SELECT r.id FROM runs r LEFT JOIN quant_configs q ON q.id = r.quant_id,"
      " runs x LEFT JOIN quant_configs qx ON qx.id = x.quant_id"
      " WHERE x.id = ? AND r.command = x.command AND r.model_id IS x.model_id AND q.config_key IS qx.config_key"
      " ORDER BY r.id LIMIT ?";
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(qlm_db_sqlite(db), sql, -1, &st, NULL) != SQLITE_OK) return sql_err(db, err, "finding repetitions");
  sqlite3_bind_int64(st, 1, x);
  sqlite3_bind_int(st, 2, CMP_MAX_GROUP);
  g->v = qlm_malloc(CMP_MAX_GROUP * sizeof *g->v, "repetition list", err);
  g->n = 0;
  if (!g->v) return sqlite3_finalize(st), err->code;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) g->v[g->n++] = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? QLM_OK : sql_err(db, err, "finding repetitions");
}

static int in_list(const id_list *g, int64_t id) {
  for (int i = 0; i < g->n; i++)
    if (g->v[i] == id) return 1;
  return 0;
}

/* Occurrence of a result = how many earlier results of the run share its task and protocol. */
#define OCC_SQL                                                                                                   \
  "(SELECT COUNT(*) FROM results r2 WHERE r2.run_id = res.run_id AND r2.task = res.task"                          \
  " AND r2.protocol IS res.protocol AND r2.idx < res.idx)"

/* The value (and stderr) of one metric in one run; returns 1 when present and not NULL. */
static int metric_value(qlm_db *db, int64_t run, const qlm_cmp_row *k, double *v, double *se) {
  static const char sql[] = "SELECT m.value, m.stderr FROM metrics m JOIN results res ON res.id = m.result_id"
                            " WHERE res.run_id = ? AND res.task = ? AND res.protocol IS ? AND m.name = ?"
                            " AND " OCC_SQL " = ? AND m.value IS NOT NULL";
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(qlm_db_sqlite(db), sql, -1, &st, NULL) != SQLITE_OK) return 0;
  sqlite3_bind_int64(st, 1, run);
  sqlite3_bind_text(st, 2, k->task, -1, SQLITE_TRANSIENT);
  k->protocol[0] ? sqlite3_bind_text(st, 3, k->protocol, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, 3);
  sqlite3_bind_text(st, 4, k->name, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(st, 5, k->occurrence);
  int found = sqlite3_step(st) == SQLITE_ROW;
  if (found) {
    *v = sqlite3_column_double(st, 0);
    *se = sqlite3_column_type(st, 1) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 1);
  }
  sqlite3_finalize(st);
  return found;
}

/* Sum of squared deviations from the mean of this metric over a group; n values found. */
static double group_ss(qlm_db *db, const id_list *g, const qlm_cmp_row *k, int *n) {
  double vals[CMP_MAX_GROUP];
  *n = 0;
  for (int i = 0; i < g->n; i++) {
    double v, se;
    if (metric_value(db, g->v[i], k, &v, &se)) vals[(*n)++] = v;
  }
  if (*n == 0) return 0;
  double mean = 0, ss = 0;
  for (int i = 0; i < *n; i++) mean += vals[i];
  mean /= *n;
  for (int i = 0; i < *n; i++) ss += (vals[i] - mean) * (vals[i] - mean);
  return ss;
}

static void judge(qlm_db *db, const id_list *ga, const id_list *gb, int same_group, qlm_cmp_row *r, double se_a,
                  double se_b) {
  r->delta = r->b - r->a;
  r->rel = isfinite(r->a) && r->a != 0 ? r->delta / fabs(r->a) : NAN;
  r->sigma = r->threshold = NAN;
  r->basis = QLM_CMP_BASIS_NONE;
  r->verdict = QLM_CMP_NO_NOISE;
  int na = 0, nb = 0;
  double ss = group_ss(db, ga, r, &na), dof = na - 1;
  if (same_group) nb = na; /* both runs repeat one experiment: one group */
  else ss += group_ss(db, gb, r, &nb), dof += nb - 1;
  r->n_a = na, r->n_b = nb;
  if (!isfinite(r->delta)) return;
  if (dof >= 1) {
    r->sigma = sqrt(ss / dof);
    r->threshold = 2.0 * sqrt(2.0) * r->sigma;
    r->basis = QLM_CMP_BASIS_REPS;
  } else if (isfinite(se_a) && isfinite(se_b)) {
    r->threshold = 2.0 * sqrt(se_a * se_a + se_b * se_b);
    r->basis = QLM_CMP_BASIS_STDERR;
  } else {
    return;
  }
  r->verdict = fabs(r->delta) > r->threshold ? QLM_CMP_EXCEEDS : QLM_CMP_WITHIN;
}

/* The metric keys of one run in order. */
static int keys_of(qlm_db *db, int64_t run, qlm_cmp_row **rows, int *n, int *cap, qlm_error *err) {
  static const char sql[] = "SELECT res.task, COALESCE(res.protocol, ''), " OCC_SQL ", m.name FROM metrics m"
                            " JOIN results res ON res.id = m.result_id WHERE res.run_id = ? ORDER BY res.idx, m.id";
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(qlm_db_sqlite(db), sql, -1, &st, NULL) != SQLITE_OK) return sql_err(db, err, "reading metrics");
  sqlite3_bind_int64(st, 1, run);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    qlm_cmp_row k = {0};
    snprintf(k.task, sizeof k.task, "%s", (const char *)sqlite3_column_text(st, 0));
    snprintf(k.protocol, sizeof k.protocol, "%s", (const char *)sqlite3_column_text(st, 1));
    k.occurrence = sqlite3_column_int(st, 2);
    snprintf(k.name, sizeof k.name, "%s", (const char *)sqlite3_column_text(st, 3));
    int dup = 0;
    for (int i = 0; i < *n && !dup; i++)
      dup = !strcmp((*rows)[i].task, k.task) && !strcmp((*rows)[i].protocol, k.protocol) &&
            (*rows)[i].occurrence == k.occurrence && !strcmp((*rows)[i].name, k.name);
    if (dup) continue;
    if (*n == *cap) {
      int nc = *cap ? 2 * *cap : 64;
      qlm_cmp_row *p = nc > CMP_MAX_ROWS ? NULL : realloc(*rows, (size_t)nc * sizeof *p);
      if (!p) {
        sqlite3_finalize(st);
        return qlm_fail(err, QLM_ELIMIT, "%s: too many metrics to compare", qlm_db_path(db));
      }
      *rows = p, *cap = nc;
    }
    (*rows)[(*n)++] = k;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? QLM_OK : sql_err(db, err, "reading metrics");
}

int qlm_db_compare(qlm_db *db, int64_t run_a, int64_t run_b, qlm_cmp_row **rows, int *n_rows, qlm_error *err) {
  *rows = NULL;
  *n_rows = 0;
  int n = 0, cap = 0;
  id_list ga = {0}, gb = {0};
  int rc = keys_of(db, run_a, rows, &n, &cap, err) || keys_of(db, run_b, rows, &n, &cap, err) ||
           group_of(db, run_a, &ga, err) || group_of(db, run_b, &gb, err);
  if (!rc) {
    int same = in_list(&ga, run_b);
    for (int i = 0; i < n; i++) {
      qlm_cmp_row *r = &(*rows)[i];
      double se_a = NAN, se_b = NAN;
      if (!metric_value(db, run_a, r, &r->a, &se_a)) r->a = NAN;
      if (!metric_value(db, run_b, r, &r->b, &se_b)) r->b = NAN;
      judge(db, &ga, &gb, same, r, se_a, se_b);
    }
  }
  free(ga.v);
  free(gb.v);
  if (rc) {
    free(*rows);
    *rows = NULL;
    return rc;
  }
  *n_rows = n;
  return QLM_OK;
}

const char *qlm_cmp_verdict_name(int verdict, int basis) {
  if (verdict == QLM_CMP_NO_NOISE) return "no repetitions";
  if (basis == QLM_CMP_BASIS_STDERR) return verdict == QLM_CMP_EXCEEDS ? "exceeds stderr" : "within stderr";
  return verdict == QLM_CMP_EXCEEDS ? "exceeds noise" : "within noise";
}
