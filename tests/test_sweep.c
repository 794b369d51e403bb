/* test_sweep.c — qlm sweep: config errors, grid expansion, dry run, a full small sweep on
 * stories260K, crash-resume under random SIGKILLs of the whole process group, and --jobs 2. */
#include "testutil.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include "core/mapfile.h"
#include "exp/sweep.h"

/* ---- helpers ---- */

static void rm_rf(const char *dir) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static int exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

typedef struct run_result {
  int status;
  char *out, *err;
} run_result;

/* `qlm ARGS` (shell syntax), stdout and stderr captured. */
static run_result run_qlm(const char *dir, const char *args) {
  const char *bin = getenv("QLM_BIN");
  assert_non_null(bin);
  char cmd[8192], o[600], e[600];
  snprintf(o, sizeof o, "%s/stdout", dir);
  snprintf(e, sizeof e, "%s/stderr", dir);
  snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", bin, args, o, e);
  int st = system(cmd);
  run_result r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
  qlm_error err = {0};
  assert_int_equal(qlm_read_file(o, 64 << 20, &r.out, NULL, &err), 0);
  assert_int_equal(qlm_read_file(e, 64 << 20, &r.err, NULL, &err), 0);
  return r;
}

static void run_free(run_result *r) { free(r->out), free(r->err); }

/* The small grid every run-test uses: stories260K, fp32 + absmax 8/4 + nf4, perplexity on two
 * 64-token windows of a 6 kB text, TweetEval on 20 tweets at batch 1 and 4. */
typedef struct grid {
  char *dir;
  char config[600], db[600], work[600], data[600];
} grid;

static const char *const grid_quants[] = {"fp32", "absmax-b8-gchannel", "absmax-b4-gchannel", "nf4"};
static const char *const grid_tasks[] = {"ppl-hf-window-w64-s32-c2", "classify-b1-l20", "classify-b4-l20"};

static void grid_init(grid *g, const char *extra_quant) {
  g->dir = tu_tmpdir();
  snprintf(g->config, sizeof g->config, "%s/grid.json", g->dir);
  snprintf(g->db, sizeof g->db, "%s/results.db", g->dir);
  snprintf(g->work, sizeof g->work, "%s/qlm-sweep-work", g->dir);
  snprintf(g->data, sizeof g->data, "%s/small.txt", g->dir);
  char *wiki = tu_shared("data/wikitext-2-raw/wiki.test.raw"), *text;
  size_t n;
  qlm_error err = {0};
  assert_int_equal(qlm_read_file(wiki, 64 << 20, &text, &n, &err), 0);
  tu_write_file(g->data, text, n < 6000 ? n : 6000);
  free(text), free(wiki);
  char cfg[4096];
  snprintf(cfg, sizeof cfg,
           "{\"name\": \"test-grid\", \"db\": \"%s\", \"no_energy\": true, \"threads\": 1,\n"
           " \"models\": [{\"name\": \"s\", \"path\": \"$QLM_SHARED/models/stories260K/stories260K.gguf\"}],\n"
           " \"quant\": [\"fp32\", {\"method\": \"absmax\", \"bits\": [8, 4], \"group\": \"channel\"}, \"nf4\"%s],\n"
           " \"tasks\": [{\"task\": \"ppl\", \"window\": 64, \"stride\": 32, \"chunks\": 2, \"data\": \"%s\", \"name\": \"%s\"},\n"
           "           {\"task\": \"classify\", \"batch\": [1, 4], \"limit\": 20}]}\n",
           g->db, extra_quant ? extra_quant : "", g->data, grid_tasks[0]);
  tu_write_file(g->config, cfg, strlen(cfg));
}

static void grid_free(grid *g) {
  rm_rf(g->dir);
  free(g->dir);
}

/* The labels an uninterrupted run records, sorted as SQLite sorts text (memcmp). */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static char *xprintf(const char *fmt, const char *a, const char *b) {
  char *s = NULL;
  assert_true(asprintf(&s, fmt, a, b) > 0);
  return s;
}
static int expected_labels(char **out) {
  int n = 0;
  for (int q = 1; q < 4; q++) out[n++] = xprintf("quantize:s/%s%s", grid_quants[q], "");
  out[n++] = xprintf("train:s/classify-train-l20%s%s", "", "");
  for (int q = 0; q < 4; q++)
    for (int t = 0; t < 3; t++) out[n++] = xprintf("s/%s/%s", grid_quants[q], grid_tasks[t]);
  qsort(out, (size_t)n, sizeof *out, cmp_str);
  return n;
}

/* Whatever state a kill left: no label twice, and every run whole (its phases; evaluations their
 * one result; quantizations their model artefact). */
static void check_runs_complete(const char *db_path) {
  sqlite3 *db;
  sqlite3_stmt *st;
  if (!exists(db_path)) return;
  assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT label, COUNT(*) FROM runs GROUP BY label HAVING COUNT(*) > 1", -1, &st,
                                      NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW) fail_msg("label %s recorded %d times", sqlite3_column_text(st, 0), sqlite3_column_int(st, 1));
  sqlite3_finalize(st);
  const char *bad_sql =
      "SELECT r.label, (SELECT COUNT(*) FROM phases p WHERE p.run_id = r.id),"
      " (SELECT COUNT(*) FROM results x WHERE x.run_id = r.id),"
      " (SELECT COUNT(*) FROM artefacts a WHERE a.run_id = r.id AND a.kind = 'model') FROM runs r";
  assert_int_equal(sqlite3_prepare_v2(db, bad_sql, -1, &st, NULL), SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *l = (const char *)sqlite3_column_text(st, 0);
    int phases = sqlite3_column_int(st, 1), results = sqlite3_column_int(st, 2), models = sqlite3_column_int(st, 3);
    if (phases < 1) fail_msg("run %s has no phases", l);
    if (!strncmp(l, "quantize:", 9) && models != 1) fail_msg("quantize run %s has %d model artefacts", l, models);
    if (strncmp(l, "quantize:", 9) && results != 1) fail_msg("run %s has %d results (expected 1)", l, results);
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* The database holds exactly the expected runs: one per label, none partial. */
static void check_db(const char *db_path) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  char *want[64];
  int n_want = expected_labels(want);
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT label FROM runs ORDER BY label", -1, &st, NULL), SQLITE_OK);
  int k = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *l = (const char *)sqlite3_column_text(st, 0);
    assert_non_null(l);
    if (k >= n_want) fail_msg("extra run labelled %s", l);
    if (strcmp(l, want[k])) fail_msg("run %d: label %s, expected %s (a duplicate or a missing cell)", k, l, want[k]);
    k++;
  }
  sqlite3_finalize(st);
  if (k != n_want) fail_msg("%d runs recorded, expected %d (next missing: %s)", k, n_want, want[k]);
  check_runs_complete(db_path);
  /* each cell's result is on the file its quant config names (quantize once, evaluate many) */
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT r.label, x.model_path FROM runs r JOIN results x ON x.run_id = r.id"
                                          " WHERE r.label GLOB 's/absmax-b4-gchannel/*'", -1, &st, NULL), SQLITE_OK);
  int n4 = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *p = (const char *)sqlite3_column_text(st, 1);
    assert_non_null(strstr(p, "qlm-sweep-work/s/absmax-b4-gchannel.gguf"));
    n4++;
  }
  assert_int_equal(n4, 3);
  sqlite3_finalize(st);
  sqlite3_close(db);
  for (int i = 0; i < n_want; i++) free(want[i]);
}

static int count_runs(const char *db_path) {
  if (!exists(db_path)) return 0;
  sqlite3 *db;
  sqlite3_stmt *st;
  int n = -1;
  assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_busy_timeout(db, 10000);
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM runs", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return n < 0 ? 0 : n;
}

static int count_temporaries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strstr(e->d_name, ".tmp-") != NULL;
  closedir(d);
  return n;
}

/* ---- config parsing ---- */

static void expect_parse_error(const char *text, int code, const char *const *needles) {
  qlm_sweep_config *cfg = NULL;
  qlm_error err = {0};
  int rc = qlm_sweep_parse(text, "grid.json", &cfg, &err);
  if (rc != code) fail_msg("expected error %d, got %d (%s) for:\n%s", code, rc, err.msg, text);
  assert_null(cfg);
  if (strncmp(err.msg, "grid.json: ", 11)) fail_msg("message does not start with the file: %s", err.msg);
  for (int i = 0; needles[i]; i++)
    if (!strstr(err.msg, needles[i])) fail_msg("message lacks '%s': %s", needles[i], err.msg);
}

#define GOOD_MODELS "\"models\": [\"m.gguf\"]"
#define GOOD_QUANT "\"quant\": [\"fp32\"]"
#define GOOD_TASKS "\"tasks\": [{\"task\": \"ppl\"}]"

static void test_config_errors(void **state) {
  (void)state;
  expect_parse_error("{\n  \"models\": [\"m.gguf\"],\n  \"quant\": [\"fp32\"\n}", QLM_EFORMAT,
                     (const char *const[]){"line 4", "not valid JSON", NULL});
  expect_parse_error("{" GOOD_QUANT ", " GOOD_TASKS "}", QLM_EFORMAT, (const char *const[]){"models", "required", NULL});
  expect_parse_error("{" GOOD_MODELS ", " GOOD_QUANT ", \"tasks\": [{\"task\": \"ppl\", \"protcol\": \"x\"}]}", QLM_EFORMAT,
                     (const char *const[]){"tasks[0]", "unknown key \"protcol\"", "protocol", NULL});
  expect_parse_error("{" GOOD_MODELS ", \"quant\": [\"fp32\", {\"method\": \"absmax\", \"bits\": \"eight\"}], " GOOD_TASKS "}",
                     QLM_EFORMAT, (const char *const[]){"quant[1].bits", "expected a number", NULL});
  expect_parse_error("{" GOOD_MODELS ", \"quant\": [{\"method\": \"nf5\"}], " GOOD_TASKS "}", QLM_EFORMAT,
                     (const char *const[]){"quant[0].method", "unknown method 'nf5'", NULL});
  expect_parse_error("{" GOOD_MODELS ", \"quant\": [\"nf4\", {\"method\": \"nf4\"}], " GOOD_TASKS "}", QLM_EFORMAT,
                     (const char *const[]){"same key 'nf4'", NULL});
  expect_parse_error("{" GOOD_MODELS ", " GOOD_QUANT ", \"tasks\": [{\"task\": \"ppl\", \"protocol\": \"hf\"}]}", QLM_EFORMAT,
                     (const char *const[]){"tasks[0].protocol", "unknown protocol 'hf'", NULL});
  expect_parse_error("{" GOOD_MODELS ", " GOOD_QUANT ", \"tasks\": [{\"task\": \"classify\", \"batch\": [1, 0]}]}",
                     QLM_EFORMAT, (const char *const[]){"tasks[0].batch", "[1, 65536]", NULL});
  expect_parse_error("{\"models\": [\"$QLM_NO_SUCH_VARIABLE_X/m.gguf\"], " GOOD_QUANT ", " GOOD_TASKS "}", QLM_EFORMAT,
                     (const char *const[]){"models[0].path", "QLM_NO_SUCH_VARIABLE_X", "not set", NULL});
  expect_parse_error("{" GOOD_MODELS ", " GOOD_QUANT ", " GOOD_TASKS ", \"repetitions\": 0}", QLM_EFORMAT,
                     (const char *const[]){"repetitions", NULL});
  expect_parse_error("{\"models\": [{\"name\": \"..\", \"path\": \"m.gguf\"}], " GOOD_QUANT ", " GOOD_TASKS "}", QLM_EFORMAT,
                     (const char *const[]){"models[0]", "starts with '.'", NULL});
  expect_parse_error("[1, 2]", QLM_EFORMAT, (const char *const[]){"expected a JSON object", NULL});
  /* through the program: exit status of the class, message naming the file */
  char *dir = tu_tmpdir(), path[600], args[1400];
  snprintf(path, sizeof path, "%s/bad.json", dir);
  const char *bad = "{" GOOD_MODELS ", \"quant\": [{\"method\": \"gptq\", \"group\": \"row\"}], " GOOD_TASKS "}";
  tu_write_file(path, bad, strlen(bad));
  snprintf(args, sizeof args, "sweep '%s' --dry-run", path);
  run_result r = run_qlm(dir, args);
  assert_int_equal(r.status, QLM_EFORMAT);
  if (!strstr(r.err, path) || !strstr(r.err, "quant[0].group")) fail_msg("stderr: %s", r.err);
  run_free(&r);
  snprintf(args, sizeof args, "sweep '%s/none.json'", dir);
  r = run_qlm(dir, args);
  assert_int_equal(r.status, QLM_EIO);
  assert_non_null(strstr(r.err, "none.json"));
  run_free(&r);
  rm_rf(dir);
  free(dir);
}

/* ---- expansion ---- */

static int find_job(const qlm_sweep_job *J, int n, const char *label) {
  for (int i = 0; i < n; i++)
    if (!strcmp(J[i].label, label)) return i;
  return -1;
}

static void test_expand(void **state) {
  (void)state;
  const char *text =
      "{\"db\": \"/x/r.db\", \"models\": [\"/m/one.gguf\", {\"name\": \"two\", \"path\": \"~/two.gguf\"}],\n"
      " \"quant\": [\"fp32\", {\"method\": \"absmax\", \"bits\": [8, 4], \"group\": [\"channel\", 64]}],\n"
      " \"tasks\": [{\"task\": \"ppl\", \"protocol\": \"llamacpp\", \"window\": 128, \"chunks\": 3},\n"
      "           {\"task\": \"classify\", \"limit\": 50}],\n"
      " \"batch\": [1, 32], \"repetitions\": 2, \"country\": \"ESP\", \"pue\": 1.2}";
  qlm_sweep_config *cfg;
  qlm_error err = {0};
  if (qlm_sweep_parse(text, "grid.json", &cfg, &err)) fail_msg("%s", err.msg);
  assert_int_equal(cfg->n_models, 2);
  assert_string_equal(cfg->models[0].name, "one");
  const char *home = getenv("HOME");
  char want[600];
  snprintf(want, sizeof want, "%s/two.gguf", home ? home : "");
  if (home) assert_string_equal(cfg->models[1].path, want);
  assert_int_equal(cfg->n_quants, 5); /* fp32 + 2 bits x 2 groups */
  assert_string_equal(cfg->quants[0].key, "fp32");
  assert_string_equal(cfg->quants[1].key, "absmax-b8-gchannel");
  assert_string_equal(cfg->quants[2].key, "absmax-b8-g64");
  assert_string_equal(cfg->quants[4].key, "absmax-b4-g64");
  assert_int_equal(cfg->n_tasks, 3);  /* ppl + classify at batch 1 and 32 (the top-level default) */
  assert_int_equal(cfg->n_trains, 1); /* one head per model for both batch sizes */
  qlm_sweep_job *J;
  int n;
  assert_int_equal(qlm_sweep_expand(cfg, &J, &n, &err), 0);
  /* per model: 4 quantizations + 1 head + 5 quants x 3 tasks x 2 repetitions */
  assert_int_equal(n, 2 * (4 + 1 + 5 * 3 * 2));
  int c = find_job(J, n, "two/absmax-b4-g64/classify-b32-l50#r2"), q = find_job(J, n, "quantize:two/absmax-b4-g64"),
      t = find_job(J, n, "train:two/classify-train-l50"), p = find_job(J, n, "one/fp32/ppl-llamacpp-w128-c3");
  assert_true(c >= 0 && q >= 0 && t >= 0 && p >= 0);
  assert_true(find_job(J, n, "one/fp32/ppl-llamacpp-w128-c3#r1") < 0); /* repetition 1 carries no suffix */
  assert_true(find_job(J, n, "quantize:one/fp32") < 0);                /* fp32 is not quantized */
  assert_int_equal(J[c].dep_quant, q);
  assert_int_equal(J[c].dep_train, t);
  assert_true(q < c && t < c);
  assert_int_equal(J[p].dep_quant, -1);
  /* the child's command line: the quantized file in the work dir beside the database, the head,
   * the batch, the measurement flags and --db */
  char **argv = qlm_sweep_job_argv(cfg, &J[c], "/bin/qlm", 1, 1, &err);
  assert_non_null(argv);
  char line[2048] = "";
  for (char **a = argv; *a; a++) snprintf(line + strlen(line), sizeof line - strlen(line), "%s ", *a);
  assert_string_equal(line, "/bin/qlm classify eval -m /x/qlm-sweep-work/two/absmax-b4-g64.gguf --head "
                            "/x/qlm-sweep-work/two/head-classify-train-l50.json --batch 32 --limit 50 -q -t 1 "
                            "--country ESP --pue 1.2 --db /x/r.db ");
  qlm_sweep_argv_free(argv);
  argv = qlm_sweep_job_argv(cfg, &J[q], "/bin/qlm", 2, 1, &err);
  line[0] = 0;
  for (char **a = argv; *a; a++) snprintf(line + strlen(line), sizeof line - strlen(line), "%s ", *a);
  snprintf(want, sizeof want, "/bin/qlm quantize -m %s/two.gguf -o /x/qlm-sweep-work/two/absmax-b4-g64.gguf --method absmax "
           "--bits 4 --group 64 -t 2 --country ESP --pue 1.2 --db /x/r.db ", home ? home : "");
  if (home) assert_string_equal(line, want);
  qlm_sweep_argv_free(argv);
  free(J);
  qlm_sweep_config_free(cfg);
}

/* ---- running ---- */

static void test_dry_run_runs_nothing(void **state) {
  (void)state;
  grid g;
  grid_init(&g, NULL);
  char args[1400];
  snprintf(args, sizeof args, "sweep '%s' --dry-run", g.config);
  run_result r = run_qlm(g.dir, args);
  if (r.status) fail_msg("exit %d: %s", r.status, r.err);
  char *labels[64];
  int n = expected_labels(labels);
  for (int i = 0; i < n; i++) {
    if (!strstr(r.out, labels[i])) fail_msg("plan lacks %s:\n%s", labels[i], r.out);
    free(labels[i]);
  }
  assert_non_null(strstr(r.out, "16 jobs: 0 done, 16 to run"));
  assert_non_null(strstr(r.out, "rough estimate"));
  assert_false(exists(g.db));
  assert_false(exists(g.work));
  run_free(&r);
  grid_free(&g);
}

static void test_full_sweep_and_resume(void **state) {
  (void)state;
  grid g;
  grid_init(&g, NULL);
  /* a temporary file a killed quantization left behind is removed */
  char stale[700], args[1400];
  snprintf(stale, sizeof stale, "%s/s", g.work);
  assert_int_equal(system((snprintf(args, sizeof args, "mkdir -p '%s'", stale), args)), 0);
  snprintf(stale, sizeof stale, "%s/s/.nf4.gguf.tmp-AbC123", g.work);
  tu_write_file(stale, "partial", 7);
  snprintf(args, sizeof args, "sweep '%s'", g.config);
  run_result r = run_qlm(g.dir, args);
  if (r.status) fail_msg("exit %d:\n%s\n%s", r.status, r.out, r.err);
  assert_non_null(strstr(r.out, "16 ran ok, 0 failed"));
  assert_false(exists(stale));
  check_db(g.db);
  run_free(&r);
  /* again: everything is done, nothing runs, the database is unchanged */
  r = run_qlm(g.dir, args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "16 jobs: 16 done, 0 to run"));
  assert_non_null(strstr(r.out, "0 ran ok"));
  check_db(g.db);
  run_free(&r);
  /* a deleted quantized file is made again without recording its quantization twice */
  snprintf(stale, sizeof stale, "%s/s/nf4.gguf", g.work);
  assert_int_equal(unlink(stale), 0);
  snprintf(args, sizeof args, "sweep '%s' --only 's/nf4/*'", g.config);
  r = run_qlm(g.dir, args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "0 to run")); /* its cells are done: no need to quantize */
  run_free(&r);
  /* one more quant config: its estimate comes from the database (no '~'), and only it runs */
  grid g2 = g;
  char cfg[4096];
  char *text;
  qlm_error err = {0};
  assert_int_equal(qlm_read_file(g.config, 1 << 20, &text, NULL, &err), 0);
  char *at = strstr(text, "\"nf4\"");
  assert_non_null(at);
  snprintf(cfg, sizeof cfg, "%.*s\"nf4\", {\"method\": \"zeropoint\", \"bits\": 3}%s", (int)(at - text), text, at + 5);
  free(text);
  snprintf(g2.config, sizeof g2.config, "%s/grid2.json", g.dir);
  tu_write_file(g2.config, cfg, strlen(cfg));
  snprintf(args, sizeof args, "sweep '%s' --dry-run", g2.config);
  r = run_qlm(g.dir, args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "19 jobs: 15 done, 4 to run")); /* nf4.gguf (deleted) is not needed */
  const char *line = strstr(r.out, "s/zeropoint-b3/ppl-hf-window-w64-s32-c2");
  assert_non_null(line);
  assert_true(line[-1] == ' ' && line[-2] != '~'); /* "db" estimate, not the rough one */
  run_free(&r);
  snprintf(args, sizeof args, "sweep '%s' --only '*/zeropoint-b3/ppl-*'", g2.config);
  r = run_qlm(g.dir, args);
  if (r.status) fail_msg("exit %d:\n%s\n%s", r.status, r.out, r.err);
  assert_non_null(strstr(r.out, "2 ran ok")); /* its quantization and the one cell */
  run_free(&r);
  grid_free(&g);
}

/* Start the sweep in its own process group, SIGKILL the whole group after a random delay. */
static int run_and_kill(const grid *g, double delay_s) {
  const char *bin = getenv("QLM_BIN");
  char log[700];
  snprintf(log, sizeof log, "%s/killed.log", g->dir);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setpgid(0, 0);
    if (!freopen(log, "a", stdout) || !freopen(log, "a", stderr)) _exit(126);
    execl(bin, bin, "sweep", g->config, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid); /* also here: no race with the kill below */
  struct timespec ts = {(time_t)delay_s, (long)((delay_s - (double)(time_t)delay_s) * 1e9)};
  nanosleep(&ts, NULL);
  int killed = kill(-pid, SIGKILL) == 0;
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return killed && WIFSIGNALED(st);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Kill the sweep (the whole process group) at seeded random moments, resume each time, then let
 * it finish: the database must hold exactly the runs of an uninterrupted sweep. */
static void test_crash_resume(void **state) {
  (void)state;
  grid ref, g;
  grid_init(&ref, NULL);
  grid_init(&g, NULL);
  char args[1400];
  snprintf(args, sizeof args, "sweep '%s'", ref.config);
  double t0 = now_s();
  run_result r = run_qlm(ref.dir, args);
  double T = now_s() - t0; /* how long the uninterrupted sweep takes on this machine now */
  if (r.status) fail_msg("exit %d:\n%s\n%s", r.status, r.out, r.err);
  check_db(ref.db);
  run_free(&r);
  uint64_t rng = 20240607;
  int kills = 0, midway = 0;
  for (int k = 0; k < 8 && count_runs(g.db) < 16; k++) {
    /* 10-45% of a whole sweep: early kills land in quantization, later ones in the head, the
     * evaluation cells and their commits; each attempt resumes what the previous ones left */
    double delay = T * (0.10 + 0.35 * tu_rand_uniform(&rng));
    kills += run_and_kill(&g, delay);
    check_runs_complete(g.db);
    int n = count_runs(g.db);
    print_message("kill %d after %.2f s (whole sweep %.2f s): %d of 16 runs recorded\n", k + 1, delay, T, n);
    midway += n > 0 && n < 16;
  }
  assert_true(kills >= 2);  /* attempts were killed mid-sweep, not after it ended */
  assert_true(midway >= 1); /* and the database was left between empty and complete */
  snprintf(args, sizeof args, "sweep '%s'", g.config);
  r = run_qlm(g.dir, args);
  if (r.status) fail_msg("exit %d:\n%s\n%s", r.status, r.out, r.err);
  check_db(g.db); /* the same labels as ref's, once each, every run complete */
  char dir[700];
  snprintf(dir, sizeof dir, "%s/s", g.work);
  assert_int_equal(count_temporaries(dir), 0);
  run_free(&r);
  grid_free(&g);
  grid_free(&ref);
}

static void test_jobs2_no_duplicates(void **state) {
  (void)state;
  grid g;
  grid_init(&g, NULL);
  char args[1400];
  snprintf(args, sizeof args, "sweep '%s' --jobs 2", g.config);
  run_result r = run_qlm(g.dir, args);
  if (r.status) fail_msg("exit %d:\n%s\n%s", r.status, r.out, r.err);
  assert_non_null(strstr(r.out, "16 ran ok"));
  check_db(g.db);
  run_free(&r);
  grid_free(&g);
}

/* A failing quantization blocks its cells only; the exit status is the child's class. */
static void test_failed_job_blocks_dependents(void **state) {
  (void)state;
  grid g;
  grid_init(&g, ", {\"method\": \"absmax\", \"bits\": 9}");
  char args[1400];
  snprintf(args, sizeof args, "sweep '%s' --only '*/absmax-b9/ppl-*'", g.config);
  run_result r = run_qlm(g.dir, args);
  assert_int_equal(r.status, QLM_EUSAGE); /* qlm quantize: bits 9 is out of range */
  assert_non_null(strstr(r.out, "FAILED"));
  assert_non_null(strstr(r.out, "blocked"));
  assert_non_null(strstr(r.err, "quantize:s/absmax-b9"));
  run_free(&r);
  grid_free(&g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_expand),
      cmocka_unit_test(test_dry_run_runs_nothing),
      cmocka_unit_test(test_full_sweep_and_resume),
      cmocka_unit_test(test_crash_resume),
      cmocka_unit_test(test_jobs2_no_duplicates),
      cmocka_unit_test(test_failed_job_blocks_dependents),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
