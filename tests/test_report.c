/* test_report.c — qlm report: a results database with known values in, tables/charts/page out.
 *
 * The database is built through qlm_db_record_run with fixed numbers (seed 000's text-generation
 * figures where a perplexity or emission is needed): two repetitions of the base evaluation, a
 * quantize run per config (one config quantized twice), the evaluations of their outputs (one
 * repeated), a classification run with two batch sizes. Every number the report writes is checked
 * against what the test computes by hand from those inputs; the charts are decoded (PNG by cairo,
 * SVG by python3's XML parser) and index.html is loaded in headless Chromium. */
#include <cairo.h>
#include <dirent.h>
#include <fontconfig/fontconfig.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db/db.h"
#include "report/report.h"
#include "testutil.h"

/* ---- building the database ---- */

static const char BASE_SHA[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char Q8_SHA[] = "b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8b8";
static const char Q4_SHA[] = "b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4";
static const char Q3_SHA[] = "b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3b3";
static const double G_ESP = 174.05, PUE = 1.2;

static const qlm_db_machine machine = {"test cpu", 2, 1u << 30, "avx2", "host"};

/* A finished meter with the given phases (energy in joules; grid ESP, PUE 1.2). */
typedef struct ph {
  const char *name;
  double wall, cpu_j, ram_j, gpu_j;
  uint64_t peak;
} ph;

static qlm_meter *meter_with(const ph *p, int n) {
  qlm_meter *m = calloc(1, sizeof *m);
  assert_non_null(m);
  snprintf(m->grid.iso3, sizeof m->grid.iso3, "ESP");
  m->grid.g_per_kwh = G_ESP;
  m->pue = PUE;
  m->finished = true;
  for (int i = 0; i < n; i++) {
    qlm_phase *q = &m->phases[m->n_phases++];
    snprintf(q->name, sizeof q->name, "%s", p[i].name);
    q->count = 1, q->wall_s = p[i].wall, q->cpu_j = p[i].cpu_j, q->ram_j = p[i].ram_j, q->gpu_j = p[i].gpu_j;
    q->peak_rss = p[i].peak;
  }
  return m;
}

static void result(qlm_result *r, const char *task, const char *model, double seconds) {
  memset(r, 0, sizeof *r);
  snprintf(r->task, sizeof r->task, "%s", task);
  snprintf(r->model, sizeof r->model, "%s", model);
  snprintf(r->method, sizeof r->method, "none");
  snprintf(r->protocol, sizeof r->protocol, "%s", strcmp(task, "perplexity") ? "logreg-last" : "llamacpp");
  snprintf(r->data, sizeof r->data, "wiki.test.raw");
  r->bits = 32, r->tokens = 1000, r->seconds = seconds;
}

static void add(qlm_result *r, const char *name, double v) {
  qlm_error err = {0};
  assert_int_equal(qlm_result_add(r, name, v, &err), 0);
}

static void set(qlm_result *r, const char *key, const char *v) {
  qlm_error err = {0};
  assert_int_equal(qlm_result_set(r, key, v, &err), 0);
}

/* The evaluation phases every perplexity run records: load (not counted) + eval. */
static void ppl_run(qlm_db *db, const char *path, const char *sha, double ppl, double seconds, double cpu_j,
                    double ram_j, double mem_mb) {
  qlm_result r;
  result(&r, "perplexity", path, seconds);
  add(&r, "ppl", ppl);
  add(&r, "ppl_err", 0.05);
  add(&r, "peak_rss_mb", mem_mb);
  set(&r, "window", "512");
  ph p[] = {{"load", 5.0, 900.0, 100.0, 0, 1u << 20}, {"eval", seconds + 0.5, cpu_j, ram_j, 0, 1u << 24}};
  qlm_meter *m = meter_with(p, 2);
  qlm_db_model model = {path, sha, 260000, "llama"};
  qlm_db_run run = {.command = "ppl", .machine = &machine, .model = &model};
  qlm_error err = {0};
  assert_int_equal(qlm_db_record_run(db, &run, &r, 1, m, NULL, &err), 0);
  free(m);
}

static void quant_run(qlm_db *db, const char *method, double bits, long group, const char *out, const char *out_sha,
                      double calib_s, double quant_s, double cpu_j) {
  ph p[] = {{"load", 3.0, 500.0, 50.0, 0, 1u << 20}, {"calibrate", calib_s, cpu_j / 2, 0, 0, 1u << 22},
            {"quantize", quant_s, cpu_j / 2, 10.0, 0, 1u << 22}};
  qlm_meter *m = meter_with(p, 3);
  qlm_db_model model = {"/models/base.gguf", BASE_SHA, 0, NULL};
  qlm_db_quant q = {method, bits, group, NULL, NULL, -1};
  qlm_db_artefact a = {out, "model", out_sha};
  qlm_db_run run = {.command = "quantize", .machine = &machine, .model = &model, .quant = &q, .artefacts = &a,
                    .n_artefacts = 1};
  qlm_error err = {0};
  assert_int_equal(qlm_db_record_run(db, &run, NULL, 0, m, NULL, &err), 0);
  free(m);
}

/* One classify run evaluating two batch sizes: its eval energy is shared 3:1 by their seconds. */
static void classify_run(qlm_db *db) {
  qlm_result r[2];
  const char *batches[2] = {"32", "64"};
  double secs[2] = {30.0, 10.0}, acc[2] = {0.74, 0.74}, f1[2] = {0.73, 0.73};
  for (int i = 0; i < 2; i++) {
    result(&r[i], "sentiment-head", "/models/base.gguf", secs[i]);
    add(&r[i], "accuracy", acc[i]);
    add(&r[i], "macro_f1", f1[i]);
    set(&r[i], "batch", batches[i]);
  }
  ph p[] = {{"load", 1.0, 100.0, 10.0, 0, 1u << 20}, {"eval", 40.0, 3600.0, 360.0, 0, 1u << 25}};
  qlm_meter *m = meter_with(p, 2);
  qlm_db_model model = {"/models/base.gguf", BASE_SHA, 260000, "llama"};
  qlm_db_run run = {.command = "classify", .machine = &machine, .model = &model};
  qlm_error err = {0};
  assert_int_equal(qlm_db_record_run(db, &run, r, 2, m, NULL, &err), 0);
  free(m);
}

/* Values of the perplexity runs (seed 000 text generation: base, HQQ 8/4, GPTQ 3; seconds). */
typedef struct ev {
  const char *label;
  int n;
  double ppl[2], secs[2], cpu_j[2], ram_j[2], mem[2];
} ev;
static const ev EVS[] = {
    {"base", 2, {10.168, 10.172}, {386.11, 390.0}, {36000, 36720}, {3600, 3700}, {26.33 * 1024, 26.40 * 1024}},
    {"hqq 8b g64", 1, {10.168}, {337.11}, {30000}, {3000}, {7.82 * 1024}},
    {"hqq 4b g64", 2, {11.351, 11.359}, {372.70, 380.10}, {33000, 33500}, {3300, 3350}, {4.75 * 1024, 4.75 * 1024}},
    {"gptq 3b g128", 1, {13.703}, {509.14}, {45000}, {4500}, {4.20 * 1024}},
};
/* quantize runs: calibrate + quantize seconds and CPU joules (hqq 4-bit quantized twice) */
typedef struct qv {
  const char *label;
  int n;
  double calib[2], quant[2], cpu_j[2];
} qv;
static const qv QVS[] = {
    {"hqq 8b g64", 1, {0.0}, {80.6}, {8000}},
    {"hqq 4b g64", 2, {1.0, 1.5}, {90.0, 92.0}, {9000, 9400}},
    {"gptq 3b g128", 1, {1000.0}, {8182.0}, {900000}},
};

static char *make_db(const char *dir) {
  char *path = malloc(strlen(dir) + 16);
  sprintf(path, "%s/r.db", dir);
  qlm_db *db;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(path, &db, &err), 0);
  quant_run(db, "hqq", 8, 64, "/q/hqq8.gguf", Q8_SHA, QVS[0].calib[0], QVS[0].quant[0], QVS[0].cpu_j[0]);
  quant_run(db, "hqq", 4, 64, "/q/hqq4.gguf", Q4_SHA, QVS[1].calib[0], QVS[1].quant[0], QVS[1].cpu_j[0]);
  quant_run(db, "hqq", 4, 64, "/q/hqq4.gguf", Q4_SHA, QVS[1].calib[1], QVS[1].quant[1], QVS[1].cpu_j[1]);
  quant_run(db, "gptq", 3, 128, "/q/gptq3.gguf", Q3_SHA, QVS[2].calib[0], QVS[2].quant[0], QVS[2].cpu_j[0]);
  const char *paths[] = {"/models/base.gguf", "/q/hqq8.gguf", "/q/hqq4.gguf", "/q/gptq3.gguf"};
  const char *shas[] = {BASE_SHA, Q8_SHA, Q4_SHA, Q3_SHA};
  for (int e = 0; e < 4; e++)
    for (int i = 0; i < EVS[e].n; i++)
      ppl_run(db, paths[e], shas[e], EVS[e].ppl[i], EVS[e].secs[i], EVS[e].cpu_j[i], EVS[e].ram_j[i], EVS[e].mem[i]);
  classify_run(db);
  /* MMLU's per-subject rows are not table rows */
  qlm_result r;
  result(&r, "mmlu", "/models/base.gguf", 1.0);
  add(&r, "acc", 0.5);
  set(&r, "subject", "anatomy");
  qlm_db_model model = {"/models/base.gguf", BASE_SHA, 0, NULL};
  qlm_db_run run = {.command = "mmlu", .machine = &machine, .model = &model};
  assert_int_equal(qlm_db_record_run(db, &run, &r, 1, NULL, NULL, &err), 0);
  qlm_db_close(db);
  return path;
}

/* ---- hand computations ---- */

static double mean_of(const double *v, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += v[i];
  return s / n;
}

static double sd_of(const double *v, int n) {
  if (n < 2) return NAN;
  double m = mean_of(v, n), s = 0;
  for (int i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
  return sqrt(s / (n - 1));
}

static double wh(double j) { return j / 3600.0; }                     /* 1 Wh = 3600 J */
static double grams(double j) { return j / 3.6e6 * G_ESP * PUE; }      /* kWh × g/kWh × PUE */

/* ---- a small CSV reader (RFC 4180 quoting) ---- */

typedef struct csv {
  int rows, cols;
  char **cell; /* [rows][cols], row 0 = header */
} csv;

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)len + 1);
  assert_non_null(s);
  assert_int_equal(fread(s, 1, (size_t)len, f), (size_t)len);
  s[len] = 0;
  fclose(f);
  if (n) *n = (size_t)len;
  return s;
}

static csv csv_read(const char *path) {
  char *s = slurp(path, NULL);
  csv c = {0, 0, NULL};
  int cap = 0, col = 0;
  char field[4096];
  size_t fl = 0;
  int q = 0;
  for (char *p = s;; p++) {
    if (q) {
      if (*p == '"' && p[1] == '"') field[fl++] = '"', p++;
      else if (*p == '"') q = 0;
      else if (*p) field[fl++] = *p;
      else fail_msg("%s: unterminated quote", path);
      continue;
    }
    if (*p == '"') { q = 1; continue; }
    if (*p == ',' || *p == '\n' || !*p) {
      if (!*p && fl == 0 && col == 0) break;
      field[fl] = 0;
      if (c.rows == 0 && c.cell == NULL) {}
      int idx = c.rows * 512 + col;
      if (idx >= cap) {
        cap = (idx + 1) * 2;
        c.cell = realloc(c.cell, (size_t)cap * sizeof *c.cell);
      }
      c.cell[idx] = strdup(field);
      fl = 0, col++;
      assert_true(col < 512);
      if (*p != ',') {
        if (c.rows == 0) c.cols = col;
        else if (col != c.cols) fail_msg("%s: row %d has %d fields, header %d", path, c.rows, col, c.cols);
        c.rows++, col = 0;
      }
      if (!*p) break;
      continue;
    }
    field[fl++] = *p;
    assert_true(fl < sizeof field);
  }
  free(s);
  return c;
}

static const char *csv_at(const csv *c, int row, const char *name) {
  for (int j = 0; j < c->cols; j++)
    if (!strcmp(c->cell[j], name)) return c->cell[row * 512 + j];
  fail_msg("no column %s", name);
  return NULL;
}

static double csv_num(const csv *c, int row, const char *name) {
  const char *s = csv_at(c, row, name);
  return *s ? strtod(s, NULL) : NAN;
}

static int csv_find(const csv *c, const char *task, const char *label) {
  for (int i = 1; i < c->rows; i++)
    if (!strcmp(csv_at(c, i, "task"), task) && !strcmp(csv_at(c, i, "label"), label)) return i;
  fail_msg("no row %s / %s", task, label);
  return -1;
}

static void csv_free(csv *c) {
  for (int i = 0; i < c->rows; i++)
    for (int j = 0; j < c->cols; j++) free(c->cell[i * 512 + j]);
  free(c->cell);
}

static void near(double got, double want, const char *what) {
  if (isnan(want) && isnan(got)) return;
  if (!(fabs(got - want) <= 1e-9 * fmax(1.0, fabs(want))))
    fail_msg("%s: got %.17g, want %.17g", what, got, want);
}

/* ---- the tests ---- */

static void test_scores_by_hand(void **state) {
  (void)state;
  /* seed 000 text generation: base, bnb 8, bnb 4, GPTQ 3 (perplexity; kgCO2eq x 1000 = g) */
  double ppl[] = {10.168, 10.184, 10.897, 13.413}, co2[] = {12.893, 8.381, 5.722, 30.103}, s[4], l[4];
  qlm_score_softmax(ppl, co2, 4, s);
  qlm_score_logppl(ppl, co2, 4, l);
  /* computed with python3: exp(p - max)/sum * co2, and p/sum(p) * co2 */
  const double ws[] = {0.43336583769980075, 0.2862498333637576, 0.398702740616116, 25.965462490106596};
  const double wl[] = {2.935292284268506, 1.9110676637857689, 1.3961003537683045, 9.04060586180646};
  for (int i = 0; i < 4; i++) near(s[i], ws[i], "softmax score"), near(l[i], wl[i], "log-ppl score");
  /* saturation: with perplexities 10 and 40, softmax gives the better run ~e^-30 of the weight;
   * the log-ppl weights stay in the ratio 1:4. Scaling every ppl by 7 changes softmax, not log-ppl. */
  double p2[] = {10, 40}, c2[] = {1, 1}, p7[] = {70, 280};
  qlm_score_softmax(p2, c2, 2, s);
  assert_true(s[0] < 1e-12 && fabs(s[1] - 1) < 1e-12);
  qlm_score_logppl(p2, c2, 2, l);
  near(l[0], 0.2, "log-ppl 10 of 50"), near(l[1], 0.8, "log-ppl 40 of 50");
  double l7[2], s7[2];
  qlm_score_logppl(p7, c2, 2, l7);
  near(l7[0], l[0], "scale invariance"), near(l7[1], l[1], "scale invariance");
  double pa[] = {10, 10.5}, pb[] = {70, 73.5};
  qlm_score_softmax(pa, c2, 2, s), qlm_score_softmax(pb, c2, 2, s7);
  assert_true(fabs(s[0] - s7[0]) > 0.3); /* softmax(ppl) is not scale-invariant */
  /* a run without perplexity or CO2 is left out of the normalisation */
  double p3[] = {10, NAN, 30}, c3[] = {2, 5, 1}, o3[3];
  qlm_score_logppl(p3, c3, 3, o3);
  near(o3[0], 10.0 / 40 * 2, "logppl with a hole"), assert_true(isnan(o3[1])), near(o3[2], 30.0 / 40, "logppl");
  /* stat: two-pass mean and n-1 sd over finite values */
  double v[] = {1, 2, NAN, 4};
  qlm_rep_stat st = qlm_rep_stat_of(v, 4);
  assert_int_equal(st.n, 3);
  near(st.mean, 7.0 / 3, "mean"), near(st.sd, sqrt(((1 - 7.0 / 3) * (1 - 7.0 / 3) + (2 - 7.0 / 3) * (2 - 7.0 / 3) + (4 - 7.0 / 3) * (4 - 7.0 / 3)) / 2), "sd");
}

static char *join(const char *a, const char *b) {
  char *s = malloc(strlen(a) + strlen(b) + 2);
  sprintf(s, "%s/%s", a, b);
  return s;
}

static void check_inference_csv(const char *out) {
  char *path = join(out, "inference.csv");
  csv c = csv_read(path);
  assert_int_equal(c.rows, 1 + 4 + 2); /* header, 4 perplexity rows, 2 classify rows (batch 32, 64) */
  const ev *b = &EVS[0];
  double base_e = 0;
  for (int e = 0; e < 4; e++) {
    const ev *x = &EVS[e];
    int row = csv_find(&c, "perplexity", x->label);
    char what[96];
    snprintf(what, sizeof what, "%s ppl", x->label);
    near(csv_num(&c, row, "ppl_mean"), mean_of(x->ppl, x->n), what);
    near(csv_num(&c, row, "ppl_sd"), sd_of(x->ppl, x->n), what);
    near(csv_num(&c, row, "ppl_n"), x->n, what);
    near(csv_num(&c, row, "n_runs"), x->n, what);
    near(csv_num(&c, row, "ppl_rel"), e ? (mean_of(x->ppl, x->n) - mean_of(b->ppl, b->n)) / mean_of(b->ppl, b->n) : 0,
         "ppl rel");
    near(csv_num(&c, row, "infer_s_mean"), mean_of(x->secs, x->n), "inference time = results.seconds");
    near(csv_num(&c, row, "mem_mib_mean"), mean_of(x->mem, x->n), "memory = peak_rss_mb");
    double ej[2], g[2], cpu[2];
    for (int i = 0; i < x->n; i++)
      ej[i] = wh(x->cpu_j[i] + x->ram_j[i]), g[i] = grams(x->cpu_j[i] + x->ram_j[i]), cpu[i] = wh(x->cpu_j[i]);
    near(csv_num(&c, row, "energy_wh_mean"), mean_of(ej, x->n), "energy: eval phase only (load excluded)");
    near(csv_num(&c, row, "energy_wh_sd"), sd_of(ej, x->n), "energy sd");
    near(csv_num(&c, row, "co2_g_mean"), mean_of(g, x->n), "CO2 = kWh x ESP x PUE");
    near(csv_num(&c, row, "cpu_wh_mean"), mean_of(cpu, x->n), "CPU energy");
    if (e == 0) base_e = mean_of(ej, x->n);
    else near(csv_num(&c, row, "energy_wh_rel"), (mean_of(ej, x->n) - base_e) / base_e, "energy rel");
    near(csv_num(&c, row, "g_per_kwh"), G_ESP, "grid");
    assert_string_equal(csv_at(&c, row, "is_base"), e ? "0" : "1");
    assert_string_equal(csv_at(&c, row, "model"), "base.gguf"); /* every row's base model is the quantize input */
  }
  /* classify: one run, eval phase 3960 J shared 30:10 by the two results' seconds */
  int r32 = csv_find(&c, "sentiment-head", "base bs32"), r64 = csv_find(&c, "sentiment-head", "base bs64");
  assert_string_equal(csv_at(&c, r32, "batch"), "32");
  assert_string_equal(csv_at(&c, r64, "batch"), "64");
  near(csv_num(&c, r32, "accuracy_mean"), 0.74, "accuracy"), near(csv_num(&c, r32, "f1_mean"), 0.73, "f1");
  near(csv_num(&c, r32, "energy_wh_mean"), wh(3960) * 0.75, "batch 32 energy share");
  near(csv_num(&c, r64, "energy_wh_mean"), wh(3960) * 0.25, "batch 64 energy share");
  near(csv_num(&c, r64, "co2_g_mean"), grams(3960) * 0.25, "batch 64 CO2 share");
  near(csv_num(&c, r32, "mem_mib_mean"), 32.0, "memory from the eval phase's peak_rss (no metric)");
  csv_free(&c);
  free(path);
}

static void check_quantization_csv(const char *out) {
  char *path = join(out, "quantization.csv");
  csv c = csv_read(path);
  assert_int_equal(c.rows, 1 + 3);
  for (int k = 0; k < 3; k++) {
    const qv *q = &QVS[k];
    int row = csv_find(&c, "perplexity", q->label);
    double t[2], e[2], g[2];
    for (int i = 0; i < q->n; i++) /* calibrate + quantize; the quantize phase also has 10 J of RAM */
      t[i] = q->calib[i] + q->quant[i], e[i] = wh(q->cpu_j[i] + 10.0), g[i] = grams(q->cpu_j[i] + 10.0);
    near(csv_num(&c, row, "n_quantize_runs"), q->n, q->label);
    near(csv_num(&c, row, "quant_s_mean"), mean_of(t, q->n), "quantization time");
    near(csv_num(&c, row, "quant_s_sd"), sd_of(t, q->n), "quantization time sd");
    near(csv_num(&c, row, "quant_energy_wh_mean"), mean_of(e, q->n), "quantization energy");
    near(csv_num(&c, row, "quant_co2_g_mean"), mean_of(g, q->n), "quantization CO2");
  }
  assert_string_equal(csv_at(&c, csv_find(&c, "perplexity", "gptq 3b g128"), "config_key"),
                      "method=gptq;bits=3;group=128;seed=-1;options=;rules=");
  csv_free(&c);
  free(path);
}

static void check_scores_csv(const char *out) {
  char *path = join(out, "scores.csv");
  csv c = csv_read(path);
  assert_int_equal(c.rows, 1 + 4);
  double ppl[4], co2[4], sum = 0, mx = -INFINITY, se = 0;
  for (int e = 0; e < 4; e++) {
    double g[2];
    for (int i = 0; i < EVS[e].n; i++) g[i] = grams(EVS[e].cpu_j[i] + EVS[e].ram_j[i]);
    ppl[e] = mean_of(EVS[e].ppl, EVS[e].n), co2[e] = mean_of(g, EVS[e].n), sum += ppl[e], mx = fmax(mx, ppl[e]);
  }
  for (int e = 0; e < 4; e++) se += exp(ppl[e] - mx);
  for (int e = 0; e < 4; e++) {
    int row = csv_find(&c, "perplexity", EVS[e].label);
    near(csv_num(&c, row, "score_softmax"), exp(ppl[e] - mx) / se * co2[e], "softmax score");
    near(csv_num(&c, row, "score_logppl"), ppl[e] / sum * co2[e], "log-ppl score");
  }
  csv_free(&c);
  free(path);
}

/* Every chart: PNG decodes with the size its SVG declares; SVGs parse as XML (python3). */
static int check_charts(const char *out) {
  char *dir = join(out, "charts");
  static const char *const want[] = {"s0_bar_ppl", "s0_bar_co2_g", "s0_bar_energy_wh", "s0_bar_infer_s",
                                     "s0_bar_mem_mib", "s0_bar_quant_s", "s0_bar_quant_co2_g", "s0_radar_8bit",
                                     "s0_radar_4bit", "s0_radar_3bit", "s0_scatter_ppl_co2", "s0_energy_breakdown",
                                     "s0_co2_by_country", "s1_bar_accuracy", "s1_bar_f1", "s1_co2_by_country",
                                     "s1_energy_breakdown"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s.png", dir, want[i]);
    cairo_surface_t *s = cairo_image_surface_create_from_png(p);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) fail_msg("%s: not a decodable PNG", p);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    cairo_surface_destroy(s);
    snprintf(p, sizeof p, "%s/%s.svg", dir, want[i]);
    char *svg = slurp(p, NULL), dims[64];
    snprintf(dims, sizeof dims, "width=\"%dpx\" height=\"%dpx\"", w, h);
    if (!strstr(svg, dims)) fail_msg("%s: does not declare %s like its PNG", p, dims);
    free(svg);
  }
  int n_png = 0, n_svg = 0;
  DIR *d = opendir(dir);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d));) {
    size_t l = strlen(e->d_name);
    n_png += l > 4 && !strcmp(e->d_name + l - 4, ".png");
    n_svg += l > 4 && !strcmp(e->d_name + l - 4, ".svg");
    assert_null(strstr(e->d_name, ".tmp-")); /* atomic writes leave no temporary files */
  }
  closedir(d);
  assert_int_equal(n_png, n_svg);
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "python3 -c 'import sys,glob,xml.etree.ElementTree as E\n"
           "fs=sorted(glob.glob(sys.argv[1]+\"/*.svg\"))\n"
           "[E.parse(f) for f in fs]\nprint(len(fs))' '%s' > '%s/svgcount.txt'",
           dir, out);
  if (system(cmd) != 0) fail_msg("an SVG under %s is not well-formed XML (python3 xml.etree)", dir);
  snprintf(cmd, sizeof cmd, "%s/svgcount.txt", out);
  char *cnt = slurp(cmd, NULL);
  assert_int_equal(atoi(cnt), n_svg);
  free(cnt);
  free(dir);
  return n_svg;
}

static int have_chromium(void) { return system("command -v chromium > /dev/null 2>&1") == 0; }

/* index.html in headless Chromium: the DOM it builds has the tables' text and every chart. */
static void check_html(const char *out, int n_charts) {
  if (!have_chromium())
    fail_msg("chromium is not installed: the report's index.html cannot be checked (apt-get install chromium;"
             " scripts/setup installs it)");
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cd '%s' && timeout 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir='%s/chromium-profile'"
           " --dump-dom 'file://%s/index.html' > dom.html 2> chromium.log",
           out, out, out);
  if (system(cmd) != 0) fail_msg("chromium --dump-dom failed (see %s/chromium.log)", out);
  char *p = join(out, "dom.html");
  char *dom = slurp(p, NULL);
  free(p);
  static const char *const want[] = {"qlm report", "perplexity · base.gguf · llamacpp", "hqq 4b g64",
                                     "11.355 ± 0.0056569 (+11.7%)", "gptq 3b g128", "sentiment-head",
                                     "About the combined metric", "softmax(ln ppl)", "Pareto frontier"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(dom, want[i])) fail_msg("index.html as Chromium parsed it lacks \"%s\"", want[i]);
  int n_svg = 0;
  for (const char *s = dom; (s = strstr(s, "<svg")); s++) n_svg++;
  assert_int_equal(n_svg, n_charts);
  assert_null(strstr(dom, "src=\"http")); /* nothing loaded from elsewhere */
  assert_null(strstr(dom, "<link"));
  free(dom);
  snprintf(cmd, sizeof cmd,
           "cd '%s' && timeout 90 chromium --headless --no-sandbox --disable-gpu --user-data-dir='%s/chromium-profile'"
           " --window-size=1200,2400 --screenshot='%s/index.png' 'file://%s/index.html' >> chromium.log 2>&1",
           out, out, out, out);
  if (system(cmd) != 0) fail_msg("chromium --screenshot failed (see %s/chromium.log)", out);
  char *shot = join(out, "index.png");
  cairo_surface_t *s = cairo_image_surface_create_from_png(shot);
  assert_int_equal(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
  assert_int_equal(cairo_image_surface_get_width(s), 1200);
  cairo_surface_destroy(s);
  /* keep the screenshot as an artefact beside the test binary */
  snprintf(cmd, sizeof cmd, "cp '%s' report-index-screenshot.png", shot);
  assert_int_equal(system(cmd), 0);
  free(shot);
}

static void test_report_end_to_end(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *db = make_db(dir);
  qlm_report *rep;
  qlm_error err = {0};
  if (qlm_report_load(db, &rep, &err)) fail_msg("%s", err.msg);
  assert_int_equal(rep->n_sections, 2); /* perplexity; classify (batch 32 and 64 are rows of one section) */
  assert_int_equal(rep->n_rows, 6);
  char *out = join(dir, "out");
  if (qlm_report_write(rep, out, &err)) fail_msg("%s", err.msg);
  qlm_report_free(rep);
  check_inference_csv(out);
  check_quantization_csv(out);
  check_scores_csv(out);
  char *md_path = join(out, "report.md");
  char *md = slurp(md_path, NULL);
  /* mean ± sd (relative change): (11.355 - 10.170) / 10.170 = +11.65 % */
  assert_non_null(strstr(md, "| base.gguf | hqq 4b g64 | 4 | – | 2 | 11.355 ± 0.0056569 (+11.7%) |"));
  assert_non_null(strstr(md, "| base.gguf | gptq 3b g128 | 3 | 1 | 9182 | "));
  free(md);
  free(md_path);
  int n = check_charts(out);
  check_html(out, n);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(out);
  free(db);
  free(dir);
}

static void expect_error(const char *path, int code, const char *needle) {
  qlm_report *rep = NULL;
  qlm_error err = {0};
  assert_int_equal(qlm_report_load(path, &rep, &err), code);
  assert_null(rep);
  if (!strstr(err.msg, path) || !strstr(err.msg, needle))
    fail_msg("message \"%s\" should name %s and say \"%s\"", err.msg, path, needle);
}

static void test_report_errors(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *missing = join(dir, "none.db"), *text = join(dir, "text.db"), *other = join(dir, "other.db"),
       *empty = join(dir, "empty.db"), *zero = join(dir, "zero.db");
  expect_error(missing, QLM_EIO, "No such file");
  struct stat st;
  assert_int_not_equal(stat(missing, &st), 0); /* not created */
  const char junk[] = "this is not a database, just some text long enough to have a header......................"
                      "...................................................................................";
  tu_write_file(text, junk, sizeof junk);
  expect_error(text, QLM_EFORMAT, "not a SQLite database");
  tu_write_file(zero, "", 0);
  expect_error(zero, QLM_EFORMAT, "empty file");
  sqlite3 *h;
  assert_int_equal(sqlite3_open(other, &h), SQLITE_OK);
  assert_int_equal(sqlite3_exec(h, "CREATE TABLE t(x); INSERT INTO t VALUES(1);", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);
  expect_error(other, QLM_EFORMAT, "not a qlm results database");
  assert_int_equal(sqlite3_open(other, &h), SQLITE_OK); /* left as it was: no qlm tables added */
  sqlite3_stmt *q;
  assert_int_equal(sqlite3_prepare_v2(h, "SELECT count(*) FROM sqlite_master", -1, &q, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(q), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(q, 0), 1);
  sqlite3_finalize(q);
  sqlite3_close(h);
  qlm_db *db;
  qlm_error err = {0};
  assert_int_equal(qlm_db_open(empty, &db, &err), 0);
  qlm_db_close(db);
  expect_error(empty, QLM_EUSAGE, "empty");
  /* runs but nothing evaluated */
  assert_int_equal(qlm_db_open(empty, &db, &err), 0);
  quant_run(db, "hqq", 4, 64, "/q/x.gguf", Q4_SHA, 1, 2, 3);
  qlm_db_close(db);
  expect_error(empty, QLM_EUSAGE, "no evaluation results");
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(missing), free(text), free(other), free(empty), free(zero), free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scores_by_hand),
      cmocka_unit_test(test_report_errors),
      cmocka_unit_test(test_report_end_to_end),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  cairo_debug_reset_static_data(); /* cairo's and fontconfig's caches, so LeakSanitizer sees only ours */
  FcFini();
  return rc;
}
