/* test_db.c — the results database: schema and migration, atomic runs under SIGKILL, concurrent
 * writers, compare's relative changes and noise verdicts, hostile files, SHA-256 vectors. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "db/db.h"
#include "db/sha256.h"
#include "testutil.h"

static char *tmp_path(const char *name) {
  char *dir = tu_tmpdir();
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  free(dir);
  return p;
}

/* One integer from a query on a fresh raw connection (independent of qlm_db). */
static long long q_int(const char *path, const char *sql) {
  sqlite3 *h;
  assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  long long v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

static void q_text(const char *path, const char *sql, char *out, size_t n) {
  sqlite3 *h;
  assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(h);
}

static void rm_db(const char *p) {
  char b[1100];
  unlink(p);
  snprintf(b, sizeof b, "%s-wal", p), unlink(b);
  snprintf(b, sizeof b, "%s-shm", p), unlink(b);
}

static qlm_result make_result(const char *task, const char *protocol, int n, ...) {
  qlm_result r;
  qlm_error err = {0};
  qlm_result_init(&r, task, NULL);
  snprintf(r.protocol, sizeof r.protocol, "%s", protocol);
  r.tokens = 1000;
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    const char *name = va_arg(ap, const char *);
    double v = va_arg(ap, double);
    assert_int_equal(qlm_result_add(&r, name, v, &err), 0);
  }
  va_end(ap);
  return r;
}

static const qlm_db_machine MACHINE = {"Test CPU", 2, 1 << 30, "avx2", "testhost"};

/* ---- SHA-256 against FIPS 180-4 / NIST CAVP vectors ---- */
static void test_sha256(void **state) {
  (void)state;
  char hex[65];
  qlm_sha256_hex("abc", 3, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  qlm_sha256_hex("", 0, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 56 bytes: two padding blocks */
  qlm_sha256_hex(m, strlen(m), hex);
  assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  size_t n = 1000000;
  char *a = malloc(n);
  memset(a, 'a', n);
  char *path = tmp_path("sha.bin");
  tu_write_file(path, a, n);
  qlm_error err = {0};
  assert_int_equal(qlm_sha256_file(path, hex, &err), 0);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  unlink(path);
  assert_int_not_equal(qlm_sha256_file(path, hex, &err), 0);
  assert_non_null(strstr(err.msg, path));
  free(path);
  free(a);
}

/* ---- schema ---- */
static void test_create_schema(void **state) {
  (void)state;
  char *p = tmp_path("create.db");
  rm_db(p);
  qlm_db *db;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(p, &db, &err), 0);
  assert_int_equal(qlm_db_schema_version(db), QLM_DB_SCHEMA_VERSION);
  qlm_db_close(db);
  assert_int_equal(q_int(p, "PRAGMA user_version"), 2);
  const char *tables[] = {"runs", "models", "quant_configs", "results", "metrics", "result_settings", "phases",
                          "artefacts"};
  for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'", tables[i]);
    assert_int_equal(q_int(p, sql), 1);
  }
  assert_int_equal(q_int(p, "SELECT count(*) FROM sqlite_master WHERE type='view' AND name='metrics_flat'"), 1);
  char mode[32];
  q_text(p, "PRAGMA journal_mode", mode, sizeof mode);
  assert_string_equal(mode, "wal");
  /* opening again is a no-op */
  assert_int_equal(qlm_db_open(p, &db, &err), 0);
  qlm_db_close(db);
  assert_int_equal(q_int(p, "PRAGMA user_version"), 2);
  rm_db(p);
  free(p);
}

/* A version-1 file made by hand (the v1 layout as released), with one run, is migrated to v2 and
 * keeps its run; a newer-than-known version is refused. */
static void test_migrate_v1(void **state) {
  (void)state;
  char *p = tmp_path("v1.db");
  rm_db(p);
  sqlite3 *h;
  assert_int_equal(sqlite3_open(p, &h), SQLITE_OK);
  const char *v1 =
      "CREATE TABLE models(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, path TEXT NOT NULL, sha256 TEXT,"
      " params INTEGER, arch TEXT);"
      "CREATE TABLE runs(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, command TEXT NOT NULL, started TEXT NOT"
      " NULL, finished TEXT NOT NULL, qlm_version TEXT, git_commit TEXT, cpu_model TEXT, cores INTEGER, ram_bytes"
      " INTEGER, simd TEXT, hostname TEXT, command_line TEXT, model_id INTEGER, quant_id INTEGER);"
      "CREATE TABLE quant_configs(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, method TEXT NOT NULL, bits REAL,"
      " group_size INTEGER, options TEXT, rules TEXT, seed INTEGER, config_key TEXT NOT NULL);"
      "CREATE TABLE results(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, idx INTEGER NOT NULL, task TEXT NOT NULL,"
      " protocol TEXT, data TEXT, model_path TEXT, method TEXT, bits REAL, tokens INTEGER, seconds REAL,"
      " UNIQUE(run_id, idx));"
      "CREATE TABLE metrics(id INTEGER PRIMARY KEY, result_id INTEGER NOT NULL, name TEXT NOT NULL, value REAL,"
      " stderr REAL, UNIQUE(result_id, name));"
      "CREATE TABLE artefacts(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,"
      " sha256 TEXT, bytes INTEGER);"
      "INSERT INTO runs(uuid, command, started, finished) VALUES('0123abcd-old', 'ppl', '2025-01-01T00:00:00',"
      " '2025-01-01T00:01:00');"
      "INSERT INTO results(run_id, idx, task, protocol) VALUES(1, 0, 'perplexity', 'hf-window');"
      "INSERT INTO metrics(result_id, name, value, stderr) VALUES(1, 'ppl', 12.5, 0.25);"
      "PRAGMA user_version = 1;";
  assert_int_equal(sqlite3_exec(h, v1, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);

  qlm_db *db;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(p, &db, &err), 0);
  assert_int_equal(qlm_db_schema_version(db), 2);
  int64_t id;
  assert_int_equal(qlm_db_find_run(db, "0123", &id, &err), 0);
  assert_int_equal(id, 1);
  qlm_result r = make_result("perplexity", "hf-window", 2, "ppl", 13.0, "ppl_err", 0.5);
  qlm_db_run run = {.command = "ppl", .machine = &MACHINE, .label = "new"};
  assert_int_equal(qlm_db_record_run(db, &run, &r, 1, NULL, &id, &err), 0);
  assert_int_equal(id, 2);
  qlm_db_close(db);
  assert_int_equal(q_int(p, "SELECT count(*) FROM runs"), 2);
  assert_int_equal(q_int(p, "SELECT count(*) FROM runs WHERE label IS NULL AND uuid = '0123abcd-old'"), 1);
  assert_int_equal(q_int(p, "SELECT count(*) FROM metrics_flat WHERE name = 'ppl'"), 2);
  assert_int_equal(q_int(p, "SELECT count(*) FROM sqlite_master WHERE name = 'phases'"), 1);
  /* the new run's ppl_err is the stderr of ppl, not a metric of its own */
  assert_int_equal(q_int(p, "SELECT count(*) FROM metrics_flat WHERE run_id = 2"), 1);
  assert_int_equal(q_int(p, "SELECT stderr * 1000 FROM metrics_flat WHERE run_id = 2"), 500);

  /* from the future: refused, naming the file */
  assert_int_equal(sqlite3_open(p, &h), SQLITE_OK);
  assert_int_equal(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);
  assert_int_equal(qlm_db_open(p, &db, &err), QLM_EUNSUPPORTED);
  assert_null(db);
  assert_non_null(strstr(err.msg, p));
  rm_db(p);
  free(p);
}

/* ---- atomicity: SIGKILL in the middle of recording leaves nothing ---- */
static void kill_at(void *ctx, int row) {
  if (row == *(int *)ctx) raise(SIGKILL);
}

static void record_in_child(const char *p, int kill_row) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    qlm_db *db;
    qlm_error err = {0};
    if (qlm_db_open(p, &db, &err)) _exit(3);
    qlm_db_set_row_hook(db, kill_at, &kill_row);
    qlm_result r[2] = {make_result("perplexity", "hf-window", 3, "ppl", 10.0, "nll_mean", 2.3, "tokens_per_s", 50.0),
                       make_result("classify", "frozen", 2, "accuracy", 0.6, "macro_f1", 0.55)};
    qlm_db_model m = {"m.gguf", "ab12", 1000, "llama"};
    qlm_db_quant q = {"absmax", 4, 64, NULL, NULL, 0};
    qlm_db_artefact a = {"/nonexistent/out.gguf", "model", "00ff"};
    qlm_db_run run = {.command = "test", .machine = &MACHINE, .model = &m, .quant = &q, .artefacts = &a, .n_artefacts = 1};
    int rc = qlm_db_record_run(db, &run, r, 2, NULL, NULL, &err);
    qlm_db_close(db);
    _exit(rc ? 4 : 0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (kill_row > 0) {
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
  } else {
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
}

static void test_atomic_kill(void **state) {
  (void)state;
  char *p = tmp_path("atomic.db");
  rm_db(p);
  /* a full run writes: model, run, quant, quant link, 2 results, 5 metrics, artefact = 12 rows */
  for (int k = 1; k <= 11; k += 2) record_in_child(p, k);
  const char *tables[] = {"runs", "models", "quant_configs", "results", "metrics", "artefacts"};
  for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
    char sql[100];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tables[i]);
    assert_int_equal(q_int(p, sql), 0);
  }
  record_in_child(p, 0); /* uninterrupted: everything */
  assert_int_equal(q_int(p, "SELECT count(*) FROM runs"), 1);
  assert_int_equal(q_int(p, "SELECT count(*) FROM results"), 2);
  assert_int_equal(q_int(p, "SELECT count(*) FROM metrics"), 5);
  assert_int_equal(q_int(p, "SELECT count(*) FROM artefacts WHERE sha256 = '00ff'"), 1);
  assert_int_equal(q_int(p, "SELECT count(*) FROM runs r JOIN quant_configs q ON q.id = r.quant_id WHERE q.bits = 4"), 1);
  char ok[32];
  q_text(p, "PRAGMA integrity_check", ok, sizeof ok);
  assert_string_equal(ok, "ok");
  rm_db(p);
  free(p);
}

/* ---- two writer processes, 50 runs each ---- */
static void test_concurrent_writers(void **state) {
  (void)state;
  char *p = tmp_path("concurrent.db");
  rm_db(p);
  pid_t pid[2];
  for (int w = 0; w < 2; w++) {
    pid[w] = fork();
    assert_true(pid[w] >= 0);
    if (pid[w] == 0) {
      qlm_db *db;
      qlm_error err = {0};
      if (qlm_db_open(p, &db, &err)) {
        fprintf(stderr, "writer %d: %s\n", w, err.msg);
        _exit(3);
      }
      for (int i = 0; i < 50; i++) {
        char label[32];
        snprintf(label, sizeof label, "w%d-%02d", w, i);
        qlm_result r = make_result("perplexity", "hf-window", 2, "ppl", 10.0 + i, "tokens_per_s", 100.0 * w);
        qlm_db_model m = {"m.gguf", w ? "bb" : "aa", 0, NULL};
        qlm_db_run run = {.command = "test", .machine = &MACHINE, .label = label, .model = &m};
        if (qlm_db_record_run(db, &run, &r, 1, NULL, NULL, &err)) {
          fprintf(stderr, "writer %d: %s\n", w, err.msg);
          _exit(4);
        }
      }
      qlm_db_close(db);
      _exit(0);
    }
  }
  for (int w = 0; w < 2; w++) {
    int status;
    assert_int_equal(waitpid(pid[w], &status, 0), pid[w]);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
  }
  assert_int_equal(q_int(p, "SELECT count(*) FROM runs"), 100);
  assert_int_equal(q_int(p, "SELECT count(DISTINCT uuid) FROM runs"), 100);
  assert_int_equal(q_int(p, "SELECT count(DISTINCT label) FROM runs"), 100);
  assert_int_equal(q_int(p, "SELECT count(*) FROM models"), 2);
  assert_int_equal(q_int(p, "SELECT count(*) FROM metrics"), 200);
  /* each writer's runs point at its own model and carry its own values */
  assert_int_equal(q_int(p, "SELECT count(*) FROM runs r JOIN models m ON m.id = r.model_id"
                            " WHERE substr(r.label, 1, 2) = 'w1' AND m.sha256 = 'bb'"), 50);
  assert_int_equal(q_int(p, "SELECT sum(value) FROM metrics_flat WHERE name = 'ppl'"), 2 * (50 * 10 + 49 * 50 / 2));
  char ok[32];
  q_text(p, "PRAGMA integrity_check", ok, sizeof ok);
  assert_string_equal(ok, "ok");
  rm_db(p);
  free(p);
}

/* ---- compare on fixed rows, checked against numbers computed by hand ---- */
static int64_t add_run(qlm_db *db, const char *sha, const char *method, double ppl, double ppl_err, double tps,
                       double only) {
  qlm_error err = {0};
  qlm_result r = make_result("perplexity", "hf-window", 3, "ppl", ppl, "ppl_err", ppl_err, "tokens_per_s", tps);
  if (isfinite(only)) assert_int_equal(qlm_result_add(&r, "only_b", only, &err), 0);
  qlm_db_model m = {"m.gguf", sha, 0, NULL};
  qlm_db_quant q = {method, 4, 64, NULL, NULL, -1};
  qlm_db_run run = {.command = "ppl", .machine = &MACHINE, .model = &m, .quant = method ? &q : NULL};
  int64_t id;
  assert_int_equal(qlm_db_record_run(db, &run, &r, 1, NULL, &id, &err), 0);
  return id;
}

static const qlm_cmp_row *row(const qlm_cmp_row *rows, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(rows[i].name, name)) return &rows[i];
  fail_msg("no row %s", name);
  return NULL;
}

static void test_compare(void **state) {
  (void)state;
  char *p = tmp_path("compare.db");
  rm_db(p);
  qlm_db *db;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(p, &db, &err), 0);
  /* config X (3 repetitions): ppl 10, 11, 12; tokens/s 100, 140, 120.
   * config Y (2 repetitions): ppl 13, 15;     tokens/s 130, 90. */
  int64_t a1 = add_run(db, "aa", "nf4", 10, 0.1, 100, NAN);
  add_run(db, "aa", "nf4", 11, 0.1, 140, NAN);
  add_run(db, "aa", "nf4", 12, 0.1, 120, NAN);
  add_run(db, "aa", "hqq", 13, 0.1, 130, NAN);
  int64_t b2 = add_run(db, "aa", "hqq", 15, 0.1, 90, 7);
  /* two single runs of another model: no repetitions, stderr rule */
  int64_t c = add_run(db, "cc", NULL, 20, 0.5, 50, NAN);
  int64_t d = add_run(db, "dd", NULL, 21.2, 0.5, 60, NAN);

  qlm_cmp_row *rows;
  int n;
  assert_int_equal(qlm_db_compare(db, a1, b2, &rows, &n, &err), 0);
  assert_int_equal(n, 3); /* ppl, tokens_per_s, only_b (ppl_err is ppl's stderr) */
  const qlm_cmp_row *r = row(rows, n, "ppl");
  assert_float_equal(r->a, 10, 0);
  assert_float_equal(r->b, 15, 0);
  assert_float_equal(r->delta, 5, 1e-12);
  assert_float_equal(r->rel, 0.5, 1e-12);
  assert_int_equal(r->n_a, 3);
  assert_int_equal(r->n_b, 2);
  /* pooled: SS = (1 + 0 + 1) + (1 + 1) = 4 over 3 dof; sigma = sqrt(4/3); threshold = 2 sqrt2 sigma */
  assert_float_equal(r->sigma, sqrt(4.0 / 3.0), 1e-12);
  assert_float_equal(r->threshold, 2 * sqrt(2.0) * sqrt(4.0 / 3.0), 1e-12); /* 3.266 < 5 */
  assert_int_equal(r->basis, QLM_CMP_BASIS_REPS);
  assert_int_equal(r->verdict, QLM_CMP_EXCEEDS);
  r = row(rows, n, "tokens_per_s");
  assert_float_equal(r->rel, -0.1, 1e-12); /* (90 - 100) / 100 */
  /* SS = (400 + 400 + 0) + (400 + 400) = 1600 over 3 dof: threshold 65.3 > 10 */
  assert_float_equal(r->sigma, sqrt(1600.0 / 3.0), 1e-9);
  assert_int_equal(r->verdict, QLM_CMP_WITHIN);
  assert_string_equal(qlm_cmp_verdict_name(r->verdict, r->basis), "within noise");
  r = row(rows, n, "only_b");
  assert_true(isnan(r->a));
  assert_float_equal(r->b, 7, 0);
  assert_int_equal(r->verdict, QLM_CMP_NO_NOISE);
  free(rows);

  assert_int_equal(qlm_db_compare(db, c, d, &rows, &n, &err), 0);
  r = row(rows, n, "ppl");
  assert_float_equal(r->rel, 0.06, 1e-12);                    /* 1.2 / 20 */
  assert_float_equal(r->threshold, 2 * sqrt(0.5), 1e-12);     /* 2 sqrt(0.25 + 0.25) = 1.414 > 1.2 */
  assert_int_equal(r->basis, QLM_CMP_BASIS_STDERR);
  assert_int_equal(r->verdict, QLM_CMP_WITHIN);
  r = row(rows, n, "tokens_per_s");
  assert_float_equal(r->rel, 0.2, 1e-12);
  assert_int_equal(r->verdict, QLM_CMP_NO_NOISE);
  free(rows);

  /* the same config on both sides: one group (3 values, 2 dof): SS 2, sigma 1 */
  int64_t a3 = 3;
  assert_int_equal(qlm_db_compare(db, a1, a3, &rows, &n, &err), 0);
  r = row(rows, n, "ppl");
  assert_float_equal(r->sigma, 1.0, 1e-12);
  assert_int_equal(r->verdict, QLM_CMP_WITHIN); /* 2 < 2.83 */
  free(rows);
  qlm_db_close(db);

  /* the command line: relative change printed */
  char cmd[2048];
  const char *bin = getenv("QLM_BIN");
  if (bin) {
    snprintf(cmd, sizeof cmd, "%s compare %lld %lld --db '%s'", bin, (long long)a1, (long long)b2, p);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char buf[8192];
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    buf[got] = 0;
    assert_int_equal(pclose(f), 0);
    assert_non_null(strstr(buf, "+50.00%"));
    assert_non_null(strstr(buf, "exceeds noise"));
    assert_non_null(strstr(buf, "-10.00%"));
  }
  rm_db(p);
  free(p);
}

/* ---- hostile files ---- */
static void test_not_a_database(void **state) {
  (void)state;
  char *p = tmp_path("notadb.db");
  char junk[4096];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)("this is not a database\n"[i % 23]);
  tu_write_file(p, junk, sizeof junk);
  qlm_db *db;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(p, &db, &err), QLM_EFORMAT);
  assert_null(db);
  assert_non_null(strstr(err.msg, p));
  assert_non_null(strstr(err.msg, "not a SQLite database"));
  /* the file is left alone */
  FILE *f = fopen(p, "rb");
  char back[4096];
  assert_int_equal(fread(back, 1, sizeof back, f), sizeof back);
  fclose(f);
  assert_memory_equal(back, junk, sizeof junk);
  const char *bin = getenv("QLM_BIN");
  if (bin) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s compare 1 2 --db '%s' 2>&1", bin, p);
    FILE *pf = popen(cmd, "r");
    char buf[4096];
    size_t got = fread(buf, 1, sizeof buf - 1, pf);
    buf[got] = 0;
    int st = pclose(pf);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), QLM_EFORMAT);
    assert_non_null(strstr(buf, p));
    assert_non_null(strstr(buf, "not a SQLite database"));
  }
  unlink(p);
  /* a directory cannot be a database */
  char *dir = tu_tmpdir();
  assert_int_not_equal(qlm_db_open(dir, &db, &err), 0);
  assert_non_null(strstr(err.msg, dir));
  free(dir);
  /* unknown runs: a clear message */
  char *q = tmp_path("empty.db");
  rm_db(q);
  assert_int_equal(qlm_db_open(q, &db, &err), 0);
  int64_t id;
  assert_int_equal(qlm_db_find_run(db, "42", &id, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "42"));
  assert_int_equal(qlm_db_find_run(db, "x'; DROP TABLE runs; --", &id, &err), QLM_EUSAGE);
  qlm_db_close(db);
  assert_int_equal(q_int(q, "SELECT count(*) FROM sqlite_master WHERE name = 'runs'"), 1);
  rm_db(q);
  free(q);
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sha256),          cmocka_unit_test(test_create_schema),
      cmocka_unit_test(test_migrate_v1),      cmocka_unit_test(test_atomic_kill),
      cmocka_unit_test(test_concurrent_writers), cmocka_unit_test(test_compare),
      cmocka_unit_test(test_not_a_database),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
