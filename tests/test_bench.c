/* test_bench.c — qlm bench's library: roofline arithmetic, model cost, probes, machine cache,
 * CSV/JSON output. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db/db.h"
#include "generate/bench.h"
#include "testutil.h"

#include <sqlite3.h>

/* Fixed numbers worked by hand: 20 GB/s over 100 MB per token = 200 t/s; 150 t/s is 75% of it.
 * 100 GFLOP/s over 2 x 1e9 FLOPs per token = 50 t/s; 40 t/s is 80%. */
static void test_roofline_arithmetic(void **state) {
  (void)state;
  assert_float_equal(qlm_roofline_decode_tps(20e9, 100e6), 200.0, 1e-9);
  assert_float_equal(qlm_roofline_fraction(150.0, 200.0), 0.75, 1e-12);
  assert_float_equal(qlm_roofline_prefill_tps(100e9, 1e9), 50.0, 1e-9);
  assert_float_equal(qlm_roofline_fraction(40.0, 50.0), 0.8, 1e-12);
  assert_float_equal(qlm_roofline_decode_tps(20e9, 0), 0.0, 0); /* unknown cost: no roofline */
  assert_float_equal(qlm_roofline_fraction(40.0, 0), 0.0, 0);
  double x[] = {2, 4, 4, 4, 5, 5, 7, 9}, mean, sd;
  qlm_bench_stats(x, 8, &mean, &sd);
  assert_float_equal(mean, 5.0, 1e-12);
  assert_float_equal(sd, sqrt(32.0 / 7.0), 1e-12); /* sample sd: sum of squares 32, n-1 = 7 */
  qlm_bench_stats(x, 1, &mean, &sd);
  assert_float_equal(sd, 0.0, 0);
}

/* stories260K (models/stories260K.md): dim 64, 5 layers, 8 heads, 4 kv heads (head dim 8),
 * hidden 172 (2/3 of 4x64 rounded up to a multiple of 4), vocab 512, all f32.
 * Per layer: wq 64x64 + wk 32x64 + wv 32x64 + wo 64x64 + 3 x 172x64 = 45312; head 512x64. */
static void test_model_cost_and_speed(void **state) {
  (void)state;
  char *path = tu_shared("models/stories260K/stories260K.gguf");
  qlm_error err = {0};
  qlm_source *src;
  qlm_model *m;
  assert_int_equal(qlm_source_open(path, NULL, &src, &err), 0);
  assert_int_equal(qlm_model_load(src, &m, &err), 0);
  qlm_model_cost c;
  qlm_model_cost_of(m, &c);
  double params = 5.0 * 45312 + 512.0 * 64;
  assert_float_equal(c.params, params, 0.5);
  assert_float_equal(c.bytes_per_token, 4 * params, 0.5);
  double pp[2], tg[2];
  assert_int_equal(qlm_bench_model(m, 16, 8, 1, 2, pp, tg, &err), 0);
  for (int i = 0; i < 2; i++) assert_true(pp[i] > 0 && tg[i] > 0 && isfinite(pp[i]) && isfinite(tg[i]));
  assert_int_equal(qlm_bench_model(m, 16, 8, 1, 0, pp, tg, &err), QLM_EUSAGE); /* reps < 1 */
  qlm_model_free(m);
  qlm_source_close(src);
  free(path);
}

static void test_probes_plausible(void **state) {
  (void)state;
  qlm_error err = {0};
  double bw = 0, fl = 0;
  assert_int_equal(qlm_probe_bandwidth(1, (size_t)64 << 20, &bw, &err), 0);
  assert_true(bw > 1e9 && bw < 1e13); /* > 1 GB/s, < 10 TB/s */
  assert_int_equal(qlm_probe_bandwidth(2, (size_t)64 << 20, &bw, &err), 0);
  assert_true(bw > 1e9 && bw < 1e13);
  assert_int_equal(qlm_probe_fma(1, &fl, &err), 0);
  assert_true(fl > 1e9 && fl < 1e13); /* > 1 GFLOP/s per core, < 10 TFLOP/s */
  assert_int_equal(qlm_probe_bandwidth(0, 0, &bw, &err), QLM_EUSAGE);
  assert_int_equal(qlm_probe_bandwidth(4, 100, &bw, &err), QLM_EUSAGE); /* buffer smaller than the slices */
}

static void fake_machine(qlm_machine *m, const char *cpu) {
  qlm_machine_identify(m);
  if (cpu) snprintf(m->cpu, sizeof m->cpu, "%s", cpu);
  m->n = 2;
  m->threads[0] = 1, m->bw_Bps[0] = 12.5e9, m->fma_flops[0] = 77e9;
  m->threads[1] = 2, m->bw_Bps[1] = 20.25e9, m->fma_flops[1] = 150e9;
}

static void test_machine_cache(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), path[1024];
  snprintf(path, sizeof path, "%s/sub/machine.json", dir); /* parent created on save */
  qlm_error err = {0};
  qlm_machine want, got, saved;
  bool hit = true;
  qlm_machine_identify(&want);
  assert_true(want.cores >= 1 && want.cpu[0]);
  /* missing file: a miss, not an error */
  assert_int_equal(qlm_machine_load(path, &want, &got, &hit, &err), 0);
  assert_false(hit);
  assert_int_equal(got.n, 0);
  /* round trip */
  fake_machine(&saved, NULL);
  assert_int_equal(qlm_machine_save(path, &saved, &err), 0);
  assert_int_equal(qlm_machine_load(path, &want, &got, &hit, &err), 0);
  assert_true(hit);
  assert_string_equal(got.cpu, want.cpu);
  assert_int_equal(got.cores, want.cores);
  assert_int_equal(got.n, 2);
  assert_int_equal(qlm_machine_find(&got, 2), 1);
  assert_int_equal(qlm_machine_find(&got, 3), -1);
  assert_float_equal(got.bw_Bps[1], 20.25e9, 0);
  assert_float_equal(got.fma_flops[0], 77e9, 0);
  /* limits come from the cache without probing (the fake numbers could not be measured) */
  int th[] = {2};
  assert_int_equal(qlm_machine_limits(path, th, 1, false, &got, &err), 0);
  assert_float_equal(got.bw_Bps[qlm_machine_find(&got, 2)], 20.25e9, 0);
  /* another CPU string: stale, so a miss; limits probe again and rewrite the file */
  fake_machine(&saved, "Some Other CPU @ 1.00GHz");
  assert_int_equal(qlm_machine_save(path, &saved, &err), 0);
  assert_int_equal(qlm_machine_load(path, &want, &got, &hit, &err), 0);
  assert_false(hit);
  int th1[] = {1};
  assert_int_equal(qlm_machine_limits(path, th1, 1, false, &got, &err), 0);
  assert_int_equal(got.n, 1);
  assert_string_equal(got.cpu, want.cpu);
  assert_true(got.bw_Bps[0] != 12.5e9 && got.bw_Bps[0] > 1e9);
  assert_int_equal(qlm_machine_load(path, &want, &saved, &hit, &err), 0);
  assert_true(hit);
  assert_float_equal(saved.bw_Bps[0], got.bw_Bps[0], 0);
  /* another core count: stale too */
  fake_machine(&saved, NULL);
  saved.cores = want.cores + 7;
  assert_int_equal(qlm_machine_save(path, &saved, &err), 0);
  assert_int_equal(qlm_machine_load(path, &want, &got, &hit, &err), 0);
  assert_false(hit);
  /* malformed: an error naming the file */
  tu_write_file(path, "{\"cpu\": 3", 9);
  assert_int_equal(qlm_machine_load(path, &want, &got, &hit, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "machine.json"));
  tu_write_file(path, "{\"cpu\":\"x\",\"cores\":2,\"threads\":[1],\"bandwidth_Bps\":[-1],\"fma_flops\":[1]}", 72);
  assert_int_equal(qlm_machine_load(path, &want, &got, &hit, &err), QLM_EFORMAT);
  unlink(path);
  snprintf(path, sizeof path, "%s/sub", dir);
  rmdir(path);
  rmdir(dir);
  free(dir);
}

static void make_rows(qlm_bench_row *r, qlm_machine *mach) {
  fake_machine(mach, "CPU, with \"comma\"");
  memset(r, 0, 2 * sizeof *r);
  for (int t = 0; t < 2; t++) {
    r[t].model = "my,model.gguf";
    r[t].type = "q4_0";
    r[t].size_bytes = 1048576;
    r[t].cost = (qlm_model_cost){.bytes_per_token = 100e6, .params = 1e9};
    r[t].threads = 2;
    r[t].test = t;
    r[t].n_tokens = t ? 128 : 512;
    r[t].reps = 2;
    r[t].tps[0] = t ? 150 : 40;
    r[t].tps[1] = t ? 150 : 40;
    qlm_bench_stats(r[t].tps, 2, &r[t].mean, &r[t].sd);
    r[t].roof_tps = t ? qlm_roofline_decode_tps(20e9, 100e6) : qlm_roofline_prefill_tps(100e9, 1e9);
  }
}

static char *print_to_string(qlm_bench_format fmt, const qlm_machine *mach, const qlm_bench_row *r, int n) {
  FILE *f = tmpfile();
  assert_non_null(f);
  qlm_error err = {0};
  assert_int_equal(qlm_bench_print(f, fmt, mach, r, n, &err), 0);
  long len = ftell(f);
  rewind(f);
  char *s = calloc((size_t)len + 1, 1);
  assert_int_equal(fread(s, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  return s;
}

static void test_json_output(void **state) {
  (void)state;
  qlm_bench_row r[2];
  qlm_machine mach;
  make_rows(r, &mach);
  char *s = print_to_string(QLM_BENCH_JSON, &mach, r, 2);
  cJSON *root = cJSON_Parse(s);
  assert_non_null(root);
  const cJSON *m = cJSON_GetObjectItem(root, "machine"), *res = cJSON_GetObjectItem(root, "results");
  assert_string_equal(cJSON_GetObjectItem(m, "cpu")->valuestring, "CPU, with \"comma\"");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "limits")), 2);
  assert_int_equal(cJSON_GetArraySize(res), 2);
  const cJSON *tg = cJSON_GetArrayItem(res, 1), *pp = cJSON_GetArrayItem(res, 0);
  assert_string_equal(cJSON_GetObjectItem(tg, "test")->valuestring, "tg128");
  assert_string_equal(cJSON_GetObjectItem(pp, "test")->valuestring, "pp512");
  assert_string_equal(cJSON_GetObjectItem(tg, "model")->valuestring, "my,model.gguf");
  assert_float_equal(cJSON_GetObjectItem(tg, "roof_tps")->valuedouble, 200.0, 1e-9);
  assert_float_equal(cJSON_GetObjectItem(tg, "roof_fraction")->valuedouble, 0.75, 1e-9);
  assert_float_equal(cJSON_GetObjectItem(pp, "roof_fraction")->valuedouble, 0.8, 1e-9);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pp, "samples_tps")), 2);
  cJSON_Delete(root);
  free(s);
}

/* Split one CSV line (RFC 4180 quoting) into at most max fields, in place. */
static int csv_split(char *line, char **f, int max) {
  int n = 0;
  char *w = line, *p = line;
  while (n < max) {
    f[n++] = w;
    int q = *p == '"';
    if (q) p++;
    for (;;) {
      if (q && *p == '"' && p[1] == '"') *w++ = '"', p += 2;
      else if (q && *p == '"') q = 0, p++;
      else if (!q && (*p == ',' || !*p)) break;
      else *w++ = *p++;
    }
    int end = !*p;
    *w++ = 0;
    p++;
    if (end) break;
  }
  return n;
}

static void test_csv_output(void **state) {
  (void)state;
  qlm_bench_row r[2];
  qlm_machine mach;
  make_rows(r, &mach);
  char *s = print_to_string(QLM_BENCH_CSV, &mach, r, 2);
  char *save, *line = strtok_r(s, "\n", &save), *f[32];
  assert_non_null(line);
  int nh = csv_split(line, f, 32);
  assert_int_equal(nh, 13);
  assert_string_equal(f[0], "model");
  assert_string_equal(f[6], "test");
  assert_string_equal(f[12], "roof_fraction");
  int rows = 0;
  while ((line = strtok_r(NULL, "\n", &save))) {
    assert_int_equal(csv_split(line, f, 32), nh);
    assert_string_equal(f[0], "my,model.gguf");
    assert_string_equal(f[6], rows ? "tg128" : "pp512");
    assert_float_equal(strtod(f[12], NULL), rows ? 0.75 : 0.8, 1e-6);
    assert_float_equal(strtod(f[4], NULL), 100e6, 0.5);
    rows++;
  }
  assert_int_equal(rows, 2);
  free(s);
  /* Markdown: the machine's limits and one row per result */
  s = print_to_string(QLM_BENCH_MD, &mach, r, 2);
  assert_non_null(strstr(s, "|  tg128 |"));
  assert_non_null(strstr(s, "75.0%"));
  assert_non_null(strstr(s, "20.25"));
  free(s);
}

/* One integer or real from a query (first column of the first row; NaN when none/NULL). */
static double query_num(sqlite3 *h, const char *sql) {
  sqlite3_stmt *st = NULL;
  double v = NAN;
  assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) v = sqlite3_column_double(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* qlm bench --db: the meter's phases carry the tokens each phase processed (warm-ups included:
 * (reps + 1) x n_p for prefill, 16 + reps x n_g for generate), and the recorded pp_tps/tg_tps
 * are the means printed in the JSON table. */
static void test_cli_db_record(void **state) {
  (void)state;
  const char *bin = getenv("QLM_BIN");
  assert_non_null(bin);
  char dir[] = "/tmp/qlm-bench-XXXXXX", cmd[2048], db_path[256], out[256];
  assert_non_null(mkdtemp(dir));
  snprintf(db_path, sizeof db_path, "%s/r.db", dir);
  snprintf(out, sizeof out, "%s/out.json", dir);
  char *model = tu_shared("models/stories260K/stories260K.gguf");
  snprintf(cmd, sizeof cmd, "'%s' bench -m '%s' -p 24 -n 6 -t 1 -r 2 --json --no-roofline --no-energy --db '%s' > '%s' 2>/dev/null",
           bin, model, db_path, out);
  free(model);
  assert_int_equal(system(cmd), 0);
  FILE *f = fopen(out, "rb");
  assert_non_null(f);
  char *js = calloc(1 << 16, 1);
  assert_true(fread(js, 1, (1 << 16) - 1, f) > 0);
  fclose(f);
  cJSON *root = cJSON_Parse(js);
  assert_non_null(root);
  const cJSON *res = cJSON_GetObjectItem(root, "results");
  assert_int_equal(cJSON_GetArraySize(res), 2);
  double pp = cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "tps_mean")->valuedouble;
  double tg = cJSON_GetObjectItem(cJSON_GetArrayItem(res, 1), "tps_mean")->valuedouble;
  qlm_db *db = NULL;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(db_path, &db, &err), 0);
  sqlite3 *h = qlm_db_sqlite(db);
  assert_float_equal(query_num(h, "SELECT count(*) FROM runs WHERE command = 'bench'"), 1, 0);
  assert_float_equal(query_num(h, "SELECT tokens FROM phases WHERE name = 'prefill'"), 3 * 24, 0);
  assert_float_equal(query_num(h, "SELECT tokens FROM phases WHERE name = 'generate'"), 16 + 2 * 6, 0);
  assert_float_equal(query_num(h, "SELECT count(*) FROM phases WHERE name = 'load'"), 1, 0);
  double pp_db = query_num(h, "SELECT value FROM metrics_flat WHERE task = 'bench' AND name = 'pp_tps'");
  double tg_db = query_num(h, "SELECT value FROM metrics_flat WHERE task = 'bench' AND name = 'tg_tps'");
  assert_true(pp > 0 && tg > 0);
  assert_float_equal(pp_db, pp, 1e-6 * pp);
  assert_float_equal(tg_db, tg, 1e-6 * tg);
  assert_true(isnan(query_num(h, "SELECT value FROM metrics_flat WHERE name = 'pp_roof'"))); /* --no-roofline */
  qlm_db_close(db);
  cJSON_Delete(root);
  free(js);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roofline_arithmetic), cmocka_unit_test(test_model_cost_and_speed),
      cmocka_unit_test(test_probes_plausible),    cmocka_unit_test(test_machine_cache),
      cmocka_unit_test(test_json_output),         cmocka_unit_test(test_csv_output),
      cmocka_unit_test(test_cli_db_record),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
