/* cmd_compare.c — `qlm compare RUN_A RUN_B`: two recorded runs metric by metric, with the
 * relative change and whether it exceeds the run-to-run noise (src/db/compare.c). */
#include <getopt.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "db/db.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm compare RUN_A RUN_B [--db FILE]\n\n"
          "Compares two runs recorded with --db, metric by metric: A, B, delta = B - A, relative change\n"
          "(B - A)/|A|, and whether the difference exceeds the run-to-run noise. RUN is runs.id or a uuid\n"
          "prefix (at least 4 hex digits).\n\n"
          "Noise. The repetitions of a run are the recorded runs of the same command on the same model\n"
          "(same sha256, or same path for folders) with the same quantization config. sigma is the pooled\n"
          "standard deviation of the metric over A's and B's repetitions (each around its own mean,\n"
          "n_A + n_B - 2 degrees of freedom). The difference of two single runs has standard deviation\n"
          "sigma*sqrt(2), so:\n"
          "  exceeds noise   |B - A| > 2*sqrt(2)*sigma       (about 95%% two-sided for normal noise)\n"
          "  within noise    otherwise\n"
          "Without repetitions, a metric recorded with its standard error (perplexity's +/-) is judged by\n"
          "|B - A| > 2*sqrt(se_A^2 + se_B^2) (exceeds/within stderr); other metrics say 'no repetitions'.\n\n"
          "  --db FILE     the results database (default %s)\n"
          "  --all         also list metrics present in only one of the runs\n",
          QLM_DB_DEFAULT_PATH);
}

static void fmt(char *buf, size_t n, double v) {
  if (isnan(v)) snprintf(buf, n, "-");
  else snprintf(buf, n, "%.6g", v);
}

static void print_rows(const qlm_cmp_row *rows, int n, int all) {
  printf("%-44s %12s %12s %12s %9s %4s %4s %11s  %s\n", "metric", "A", "B", "B-A", "rel", "nA", "nB", "threshold",
         "verdict");
  for (int i = 0; i < n; i++) {
    const qlm_cmp_row *r = &rows[i];
    if (!all && (isnan(r->a) || isnan(r->b))) continue;
    char key[128], a[32], b[32], d[32], rel[32], th[32];
    snprintf(key, sizeof key, "%s%s%s%s/%s", r->task, r->protocol[0] ? "/" : "", r->protocol,
             r->occurrence ? (char[]){'#', (char)('0' + (r->occurrence % 10)), 0} : "", r->name);
    fmt(a, sizeof a, r->a), fmt(b, sizeof b, r->b), fmt(d, sizeof d, r->delta), fmt(th, sizeof th, r->threshold);
    if (isnan(r->rel)) snprintf(rel, sizeof rel, "-");
    else snprintf(rel, sizeof rel, "%+.2f%%", 100 * r->rel);
    printf("%-44s %12s %12s %12s %9s %4d %4d %11s  %s\n", key, a, b, d, rel, r->n_a, r->n_b, th,
           isnan(r->delta) ? "-" : qlm_cmp_verdict_name(r->verdict, r->basis));
  }
}

static int describe(qlm_db *db, int64_t id, const char *tag) {
  sqlite3_stmt *st;
  const char *sql = "SELECT r.uuid, r.command, r.started, COALESCE(m.path, '-'), COALESCE(q.method, '-'), q.bits,"
                    " COALESCE(q.group_size, 0), COALESCE(r.git_commit, '?') FROM runs r LEFT JOIN models m ON m.id ="
                    " r.model_id LEFT JOIN quant_configs q ON q.id = r.quant_id WHERE r.id = ?";
  if (sqlite3_prepare_v2(qlm_db_sqlite(db), sql, -1, &st, NULL) != SQLITE_OK) return 0;
  sqlite3_bind_int64(st, 1, id);
  if (sqlite3_step(st) == SQLITE_ROW)
    printf("%s: run %lld %.8s %s %s | model %s | quant %s bits %g group %d | commit %s\n", tag, (long long)id,
           sqlite3_column_text(st, 0), sqlite3_column_text(st, 1), sqlite3_column_text(st, 2),
           sqlite3_column_text(st, 3), sqlite3_column_text(st, 4), sqlite3_column_double(st, 5),
           sqlite3_column_int(st, 6), sqlite3_column_text(st, 7));
  sqlite3_finalize(st);
  return 0;
}

int cmd_compare(int argc, char **argv) {
  static const struct option opts[] = {CLI_DB_OPTION, {"all", no_argument, 0, 'a'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *path = QLM_DB_DEFAULT_PATH;
  int c, all = 0;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case CLI_OPT_DB: path = optarg; break;
    case 'a': all = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return QLM_EUSAGE;
    }
  }
  qlm_error err = {0};
  if (argc - optind != 2) {
    usage(stderr);
    qlm_fail(&err, QLM_EUSAGE, "compare: give two runs (RUN_A RUN_B)");
    return cli_report(&err);
  }
  qlm_db *db = NULL;
  int64_t a = 0, b = 0;
  qlm_cmp_row *rows = NULL;
  int n = 0;
  int rc = qlm_db_open(path, &db, &err) || qlm_db_find_run(db, argv[optind], &a, &err) ||
           qlm_db_find_run(db, argv[optind + 1], &b, &err) || qlm_db_compare(db, a, b, &rows, &n, &err);
  if (!rc) {
    describe(db, a, "A");
    describe(db, b, "B");
    print_rows(rows, n, all);
  }
  free(rows);
  qlm_db_close(db);
  return rc ? cli_report(&err) : 0;
}
