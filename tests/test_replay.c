/* test_replay.c — workload replay (eval/replay.h): schedule, prompts, percentiles, the runner on a
 * fake clock, a real short run on stories260K, and `qlm replay` on the command line. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "core/mapfile.h"
#include "eval/replay.h"
#include "generate/generate.h"
#include "measure/meter.h"

/* ---- schedule ---- */

static void test_schedule_deterministic(void **st) {
  (void)st;
  qlm_error e = {0};
  double *a = NULL, *b = NULL, *c = NULL;
  int na, nb, nc;
  assert_int_equal(qlm_replay_schedule(42, 6, 14400, &a, &na, &e), 0);
  assert_int_equal(qlm_replay_schedule(42, 6, 14400, &b, &nb, &e), 0);
  assert_int_equal(qlm_replay_schedule(43, 6, 14400, &c, &nc, &e), 0);
  assert_int_equal(na, nb);
  assert_memory_equal(a, b, (size_t)na * sizeof *a); /* same seed, same timestamps, bit for bit */
  int differ = na != nc;
  for (int i = 0; !differ && i < na; i++) differ = a[i] != c[i];
  assert_true(differ);
  /* 4 h at one per 6 s: N ~ Poisson(2400), sd 49; 5 sd either side */
  assert_in_range(na, 2400 - 245, 2400 + 245);
  for (int i = 0; i < na; i++) {
    assert_true(a[i] > 0 && a[i] < 14400);
    if (i) assert_true(a[i] > a[i - 1]);
  }
  /* a schedule is a prefix of a longer one with the same seed (the generator does not look at the
   * duration): the first 10 minutes of the 4-hour schedule are the 10-minute schedule */
  double *s = NULL;
  int ns;
  assert_int_equal(qlm_replay_schedule(42, 6, 600, &s, &ns, &e), 0);
  assert_true(ns > 0 && ns < na);
  assert_memory_equal(s, a, (size_t)ns * sizeof *s);
  assert_true(a[ns] >= 600);
  free(a), free(b), free(c), free(s);
  /* bad arguments */
  assert_int_equal(qlm_replay_schedule(1, 0, 100, &a, &na, &e), QLM_EUSAGE);
  assert_int_equal(qlm_replay_schedule(1, 6, -1, &a, &na, &e), QLM_EUSAGE);
  assert_int_equal(qlm_replay_schedule(1, 6, NAN, &a, &na, &e), QLM_EUSAGE);
  assert_int_equal(qlm_replay_schedule(1, 1e-6, 1e9, &a, &na, &e), QLM_ELIMIT);
}

/* Exponential gaps with mean 6 s.  Over a 10^6 s schedule there are n ≈ 166,667 gaps; the sample
 * mean has standard deviation 6/sqrt(n) ≈ 0.0147 s, so |mean - 6| < 0.075 s is a 5-sigma bound
 * (a false failure has probability < 1e-6 per seed).  The share of gaps longer than the mean is
 * e^-1 for an exponential (0.5 for e.g. a uniform gap of the same mean), sd sqrt(p(1-p)/n) ≈
 * 0.0012: 5 sigma is 0.006. */
static void test_schedule_mean_gap(void **st) {
  (void)st;
  for (uint64_t seed = 1; seed <= 4; seed++) {
    qlm_error e = {0};
    double *t = NULL;
    int n;
    assert_int_equal(qlm_replay_schedule(seed, 6, 1e6, &t, &n, &e), 0);
    double sum = 0, prev = 0;
    int longer = 0;
    for (int i = 0; i < n; i++) {
      double g = t[i] - prev;
      sum += g;
      longer += g > 6;
      prev = t[i];
    }
    double mean = sum / n, frac = (double)longer / n;
    if (fabs(mean - 6) >= 0.075 || fabs(frac - exp(-1)) >= 0.006)
      fail_msg("seed %llu: %d gaps, mean %.4f s, share > mean %.4f", (unsigned long long)seed, n, mean, frac);
    free(t);
  }
}

static void test_parse_duration(void **st) {
  (void)st;
  qlm_error e = {0};
  double s;
  assert_int_equal(qlm_parse_duration("30s", &s, &e), 0);
  assert_true(s == 30);
  assert_int_equal(qlm_parse_duration("10m", &s, &e), 0);
  assert_true(s == 600);
  assert_int_equal(qlm_parse_duration("4h", &s, &e), 0);
  assert_true(s == 14400);
  assert_int_equal(qlm_parse_duration("1.5h", &s, &e), 0);
  assert_true(s == 5400);
  assert_int_equal(qlm_parse_duration("90", &s, &e), 0);
  assert_true(s == 90);
  const char *bad[] = {"", "h", "10x", "-5s", "0", "nan", "inf", "4hh", "400d", "1e400"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (qlm_parse_duration(bad[i], &s, &e) != QLM_EUSAGE) fail_msg("'%s' accepted", bad[i]);
    assert_non_null(strstr(e.msg, "--duration"));
  }
}

/* ---- first sentence ---- */

static void check_first(const char *line, const char *want) {
  char out[256];
  size_t n = qlm_first_sentence(line, strlen(line), out, sizeof out);
  if (strcmp(out, want) || n != strlen(want)) fail_msg("'%s' -> '%s' (%zu), want '%s'", line, out, n, want);
}

static void test_first_sentence_fixed(void **st) {
  (void)st;
  check_first("The kitchen stinks . __eou__ I'll throw out the garbage . __eou__", "The kitchen stinks .");
  check_first("What \xE2\x80\x99 s wrong ? Didn \xE2\x80\x99 t you think it was fun ? ! __eou__",
              "What \xE2\x80\x99 s wrong ?");
  check_first("Didn ' t you think it was fun ? ! Yes . __eou__", "Didn ' t you think it was fun ? !");
  check_first("Hello , is Mr . Smith in ? I need him . __eou__", "Hello , is Mr . Smith in ?");
  check_first("Ask Mr. Smith. Then go. __eou__", "Ask Mr. Smith.");
  check_first("Sally , what do we have for dinner __eou__ Fish . __eou__", "Sally , what do we have for dinner");
  check_first("Wait for me \xE3\x80\x82 Now __eou__", "Wait for me \xE3\x80\x82");
  check_first("Well ... I think so . __eou__", "Well ...");
  check_first("  many   spaces\there .  Next . __eou__", "many spaces here .");
  check_first("No end of utterance marker . More", "No end of utterance marker .");
  check_first("", "");
  check_first("__eou__ second . __eou__", "");
  /* the "__eou__" is the end even with no space before it */
  check_first("Hi there__eou__ x", "Hi there");
  /* truncation keeps whole UTF-8 characters: "abcde" + "é" (2 bytes) does not fit in 6 bytes */
  char out[7];
  const char *line = "abcde\xC3\xA9 f .";
  assert_int_equal(qlm_first_sentence(line, strlen(line), out, sizeof out), 5);
  assert_string_equal(out, "abcde");
  /* the length bound is honoured: the text after len is not read */
  const char *two = "One . Two .";
  assert_int_equal(qlm_first_sentence(two, 3, out, sizeof out), 3);
  assert_string_equal(out, "One");
}

/* The real file: one prompt per line, and the first lines as read by eye from the file. */
static void test_first_sentence_real_file(void **st) {
  (void)st;
  char *path = tu_shared("data/dailydialog/dialogues_test.txt");
  qlm_error e = {0};
  char **p = NULL;
  int n = 0;
  assert_int_equal(qlm_dailydialog_load(path, &p, &n, &e), 0);
  char *text = NULL;
  size_t len = 0;
  assert_int_equal(qlm_read_file(path, 64 << 20, &text, &len, &e), 0);
  int lines = 0;
  for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
  if (len && text[len - 1] != '\n') lines++;
  assert_int_equal(n, lines); /* every dialogue of this file has a non-empty first utterance */
  assert_int_equal(n, 2624);
  assert_string_equal(p[0], "The kitchen stinks .");
  assert_string_equal(p[1], "Isn \xE2\x80\x99 t he the best instructor ?");
  assert_string_equal(p[2], "What kind of food do you like ?");
  assert_string_equal(p[3], "Is everything to your satisfaction ?");
  assert_string_equal(p[4], "Would you like a lift home ?");
  assert_string_equal(p[5], "OK , I'm sorry it took so long .");
  assert_string_equal(p[7], "I'm looking for some black pumps to go with my evening gown .");
  assert_string_equal(p[11], "Hi !");
  for (int i = 0; i < n; i++) {
    assert_true(strlen(p[i]) > 0 && strlen(p[i]) < QLM_REPLAY_MAX_SENTENCE);
    assert_null(strstr(p[i], "__eou__"));
  }
  qlm_replay_prompts_free(p, n);
  free(text);
  /* errors name the file */
  assert_int_equal(qlm_dailydialog_load("/nonexistent/dd.txt", &p, &n, &e), QLM_EIO);
  assert_non_null(strstr(e.msg, "/nonexistent/dd.txt"));
  char *dir = tu_tmpdir(), empty[600];
  snprintf(empty, sizeof empty, "%s/empty.txt", dir);
  tu_write_file(empty, "\n  \n__eou__\n", 12);
  assert_int_equal(qlm_dailydialog_load(empty, &p, &n, &e), QLM_EFORMAT);
  assert_non_null(strstr(e.msg, empty));
  remove(empty);
  remove(dir);
  free(dir);
  free(path);
}

/* ---- percentiles ---- */

static void test_percentiles(void **st) {
  (void)st;
  /* numpy.percentile([1,2,3,4,5], [50,95,99]) = 3, 4.8, 4.96 */
  const double x[] = {1, 2, 3, 4, 5};
  assert_float_equal(qlm_percentile_sorted(x, 5, 50), 3, 1e-12);
  assert_float_equal(qlm_percentile_sorted(x, 5, 95), 4.8, 1e-12);
  assert_float_equal(qlm_percentile_sorted(x, 5, 99), 4.96, 1e-12);
  assert_float_equal(qlm_percentile_sorted(x, 5, 0), 1, 0);
  assert_float_equal(qlm_percentile_sorted(x, 5, 100), 5, 0);
  assert_float_equal(qlm_percentile_sorted(x, 1, 99), 1, 0);
  assert_true(isnan(qlm_percentile_sorted(x, 0, 50)));
}

/* ---- the runner on a fake clock ---- */

typedef struct fake {
  double t;           /* the clock */
  double service;     /* seconds each prompt takes */
  double busy_s;      /* seconds generating so far (the power model) */
  int sleeps, nows;
  int fail_at;        /* index whose generation fails (-1 none) */
  int bad_sleep;      /* a sleep asked for a time not in the future */
} fake;

static double fake_now(void *c) {
  fake *f = c;
  f->nows++;
  return f->t;
}
static void fake_sleep(void *c, double t) {
  fake *f = c;
  f->sleeps++;
  if (t <= f->t) f->bad_sleep = 1;
  f->t = t;
}
static int fake_gen(void *c, int i, const char *prompt, qlm_replay_gen_out *o, qlm_error *err) {
  fake *f = c;
  if (i == f->fail_at) return qlm_fail(err, QLM_EIO, "fake failure at %d", i);
  assert_non_null(prompt);
  f->t += f->service;
  f->busy_s += f->service;
  o->n_prompt = i + 1;
  o->n_generated = 10;
  return 0;
}
/* 10 W always, 40 W more while generating */
static double fake_energy(void *c) {
  fake *f = c;
  return 10 * f->t + 40 * f->busy_s;
}

static qlm_replay_config fake_config(fake *f, const double *arr, int n, double duration, double speedup) {
  static char *prompts[] = {"a .", "b ."};
  return (qlm_replay_config){.arrivals = arr, .n_arrivals = n, .duration_s = duration, .speedup = speedup,
                             .prompts = prompts, .n_prompts = 2, .gen = fake_gen, .gen_ctx = f,
                             .energy = fake_energy, .energy_ctx = f,
                             .clock = {.now = fake_now, .sleep_until = fake_sleep, .ctx = f}};
}

static void test_run_fake_clock(void **st) {
  (void)st;
  /* arrivals 1, 2, 2.5, 10; each prompt takes 1.5 s; window 20 s.
   *   #0 arrives 1,   runs 1..2.5          latency 1.5
   *   #1 arrives 2,   waits, runs 2.5..4   latency 2.0 (queued)
   *   #2 arrives 2.5, waits, runs 4..5.5   latency 3.0 (queued)
   *   #3 arrives 10,  runs 10..11.5        latency 1.5
   * latencies sorted 1.5 1.5 2 3: p50 1.75, p95 2.85, p99 2.97 (linear interpolation), mean 2. */
  const double arr[] = {1, 2, 2.5, 10};
  fake f = {.t = 100, .service = 1.5, .fail_at = -1};
  qlm_replay_config c = fake_config(&f, arr, 4, 20, 1);
  qlm_replay_report r;
  qlm_error e = {0};
  assert_int_equal(qlm_replay_run(&c, &r, &e), 0);
  assert_int_equal(r.n_served, 4);
  assert_int_equal(r.n_queued, 2);
  const double start[] = {1, 2.5, 4, 10}, end[] = {2.5, 4, 5.5, 11.5};
  for (int i = 0; i < 4; i++) {
    assert_float_equal(r.items[i].arrival_s, arr[i], 1e-12);
    assert_float_equal(r.items[i].start_s, start[i], 1e-12);
    assert_float_equal(r.items[i].end_s, end[i], 1e-12);
    assert_int_equal(r.items[i].n_prompt, i + 1);
  }
  assert_float_equal(r.wall_s, 20, 1e-12);
  assert_float_equal(r.active_s, 6, 1e-12);
  assert_float_equal(r.idle_s, 14, 1e-12);
  assert_float_equal(r.latency_p50_s, 1.75, 1e-12);
  assert_float_equal(r.latency_p95_s, 2.85, 1e-12);
  assert_float_equal(r.latency_p99_s, 2.97, 1e-12);
  assert_float_equal(r.latency_mean_s, 2.0, 1e-12);
  assert_float_equal(r.latency_max_s, 3.0, 1e-12);
  assert_float_equal(r.wait_mean_s, 0.5, 1e-12); /* (0 + 0.5 + 1.5 + 0) / 4 */
  assert_int_equal(r.prompt_tokens, 10);
  assert_int_equal(r.generated_tokens, 40);
  assert_float_equal(r.tokens_per_s, 40.0 / 6, 1e-12);
  /* energy: 10 W x 20 s + 40 W x 6 s = 440 J; active windows (10+40) W x 6 s = 300 J */
  assert_float_equal(r.energy_j, 440, 1e-9);
  assert_float_equal(r.active_energy_j, 300, 1e-9);
  assert_float_equal(r.idle_energy_j, 140, 1e-9);
  assert_float_equal(r.energy_per_prompt_j, 110, 1e-9);
  assert_float_equal(r.energy_per_hour_j, 440 * 180, 1e-6);
  /* idle time is slept, in one call per gap (before #0, before #3, after #3): no polling */
  assert_int_equal(f.sleeps, 3);
  assert_false(f.bad_sleep);
  assert_true(f.nows < 40);
  qlm_replay_report_free(&r);
}

static void test_run_fake_clock_speedup(void **st) {
  (void)st;
  /* speedup 2 halves arrivals and window: 0.5, 1, 1.25, 5 and 10 s; generation still 1.5 s.
   *   #0 0.5..2, #1 2..3.5 (lat 2.5), #2 3.5..5 (lat 3.75), #3 arrives 5 exactly when #2 ends:
   *   not queued, 5..6.5 */
  const double arr[] = {1, 2, 2.5, 10};
  fake f = {.t = 0, .service = 1.5, .fail_at = -1};
  qlm_replay_config c = fake_config(&f, arr, 4, 20, 2);
  qlm_replay_report r;
  qlm_error e = {0};
  assert_int_equal(qlm_replay_run(&c, &r, &e), 0);
  assert_int_equal(r.n_queued, 2);
  const double lat[] = {1.5, 2.5, 3.75, 1.5};
  for (int i = 0; i < 4; i++) assert_float_equal(r.items[i].end_s - r.items[i].arrival_s, lat[i], 1e-12);
  assert_float_equal(r.wall_s, 10, 1e-12);
  assert_float_equal(r.idle_s, 4, 1e-12);
  qlm_replay_report_free(&r);
  /* a prompt still running at the end of the window extends it (no trailing sleep) */
  const double late[] = {9};
  fake g = {.service = 5, .fail_at = -1};
  c = fake_config(&g, late, 1, 10, 1);
  assert_int_equal(qlm_replay_run(&c, &r, &e), 0);
  assert_float_equal(r.wall_s, 14, 1e-12);
  assert_int_equal(g.sleeps, 1);
  qlm_replay_report_free(&r);
  /* no arrival at all: a window of idle time, NaN latencies */
  fake h = {.fail_at = -1};
  c = fake_config(&h, NULL, 0, 30, 1);
  assert_int_equal(qlm_replay_run(&c, &r, &e), 0);
  assert_int_equal(r.n_served, 0);
  assert_float_equal(r.wall_s, 30, 0);
  assert_float_equal(r.energy_j, 300, 1e-9);
  assert_true(isnan(r.latency_p50_s) && isnan(r.energy_per_prompt_j));
  qlm_replay_report_free(&r);
  /* a failing generation stops the replay with its error */
  fake k = {.service = 1, .fail_at = 2};
  c = fake_config(&k, arr, 4, 20, 1);
  assert_int_equal(qlm_replay_run(&c, &r, &e), QLM_EIO);
  assert_non_null(strstr(e.msg, "fake failure at 2"));
  assert_null(r.items);
  /* unsorted arrivals are refused */
  const double bad[] = {3, 1};
  fake b = {.fail_at = -1};
  c = fake_config(&b, bad, 2, 20, 1);
  assert_int_equal(qlm_replay_run(&c, &r, &e), QLM_EUSAGE);
}

/* ---- a real run: stories260K, 30 s of schedule compressed 3x into 10 s ---- */

typedef struct real_gen {
  const qlm_source *src;
  qlm_tokenizer *tok;
  qlm_model *model;
  qlm_state *state;
  qlm_sampler smp;
} real_gen;

static int real_gen_fn(void *c, int i, const char *prompt, qlm_replay_gen_out *o, qlm_error *err) {
  real_gen *g = c;
  int32_t *ids = NULL;
  int n = 0;
  int rc = qlm_tokenize(g->tok, prompt, strlen(prompt), 1, 0, &ids, &n, err);
  if (rc) return rc;
  qlm_gen_request req = {.prompt = ids, .n_prompt = n, .n_predict = QLM_REPLAY_MAX_NEW_TOKENS, .stop_at_eos = 1};
  qlm_gen_stats gs;
  rc = qlm_generate(g->model, g->tok, g->state, &g->smp, &req, &gs, err);
  free(ids);
  o->n_prompt = gs.n_prompt;
  o->n_generated = gs.n_generated;
  return rc;
}

static double meter_j(void *c) {
  qlm_energy_totals t;
  qlm_energy_read(((qlm_meter *)c)->energy, &t);
  return t.cpu_j + t.ram_j + t.gpu_j;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}

static void test_replay_stories260k(void **st) {
  (void)st;
  char *model = tu_shared("models/stories260K/stories260K.gguf"), *data = tu_shared("data/dailydialog/dialogues_test.txt");
  qlm_error e = {0};
  real_gen g = {0};
  qlm_source *src = NULL;
  assert_int_equal(qlm_source_open(model, NULL, &src, &e), 0);
  g.src = src;
  assert_int_equal(qlm_tokenizer_new(&src->vocab, &g.tok, &e), 0);
  assert_int_equal(qlm_model_load(src, &g.model, &e), 0);
  assert_int_equal(qlm_state_new(g.model, 1, 512, 256, 1, &g.state, &e), 0);
  qlm_sampler_params sp = {.temperature = 0};
  assert_int_equal(qlm_sampler_init(&g.smp, &sp, g.model->hp.n_vocab, &e), 0);
  char **prompts = NULL;
  int n_prompts = 0, n = 0;
  double *times = NULL;
  assert_int_equal(qlm_dailydialog_load(data, &prompts, &n_prompts, &e), 0);
  assert_int_equal(qlm_replay_schedule(7, 6, 30, &times, &n, &e), 0);
  assert_true(n >= 1);
  qlm_meter_opts mo = qlm_meter_default_opts();
  mo.command = "test_replay";
  qlm_meter *m = NULL;
  assert_int_equal(qlm_meter_new(&mo, &m, &e), 0);
  qlm_phase *ph = qlm_meter_begin(m, QLM_PHASE_REPLAY);
  qlm_replay_config c = {.arrivals = times, .n_arrivals = n, .duration_s = 30, .speedup = 3, .prompts = prompts,
                         .n_prompts = n_prompts, .gen = real_gen_fn, .gen_ctx = &g, .energy = meter_j, .energy_ctx = m};
  qlm_replay_report r;
  double cpu0 = cpu_seconds();
  int rc = qlm_replay_run(&c, &r, &e);
  double cpu = cpu_seconds() - cpu0;
  qlm_meter_end(m);
  if (rc) fail_msg("%s", e.msg);
  assert_int_equal(r.n_served, n);
  for (int i = 0; i < n; i++) {
    /* the prompt the model saw is the i-th first sentence with BOS */
    int32_t *ids = NULL;
    int k = 0;
    assert_int_equal(qlm_tokenize(g.tok, prompts[i], strlen(prompts[i]), 1, 0, &ids, &k, &e), 0);
    assert_int_equal(r.items[i].n_prompt, k);
    free(ids);
    assert_in_range(r.items[i].n_generated, 1, QLM_REPLAY_MAX_NEW_TOKENS);
    assert_true(r.items[i].start_s >= r.items[i].arrival_s - 1e-6);
    assert_true(r.items[i].end_s > r.items[i].start_s);
  }
  /* the window is 30 s / 3 = 10 s of wall time (longer only if a prompt ran past it) */
  assert_true(r.wall_s >= 10 - 1e-3);
  assert_true(r.wall_s < 10 + r.active_s + 1.0);
  assert_true(r.idle_s > 0 && r.active_s > 0);
  assert_float_equal(r.idle_s + r.active_s, r.wall_s, 1e-9);
  /* not busy-waiting: one thread, so CPU time beyond the generating time is small */
  if (cpu > r.active_s + 0.5) fail_msg("%.2f CPU s for %.2f active s in %.2f s of wall time", cpu, r.active_s, r.wall_s);
  /* the energy is the meter's: the replay phase measured around it agrees, and idle costs energy */
  double phase_j = qlm_phase_energy_j(ph);
  assert_true(r.energy_j > 0 && r.idle_energy_j > 0 && r.active_energy_j > 0);
  if (fabs(phase_j - r.energy_j) > 0.02 * phase_j) fail_msg("phase %.3f J, replay %.3f J", phase_j, r.energy_j);
  assert_float_equal(r.tokens_per_s, (double)r.generated_tokens / r.active_s, 1e-9);
  qlm_replay_report_free(&r);
  qlm_meter_free(m);
  free(times);
  qlm_replay_prompts_free(prompts, n_prompts);
  qlm_sampler_free(&g.smp);
  qlm_state_free(g.state);
  qlm_model_free(g.model);
  qlm_tokenizer_free(g.tok);
  qlm_source_close(src);
  free(model);
  free(data);
}

/* ---- the command line ---- */

typedef struct run_result {
  int status;
  char *out, *err;
} run_result;

static run_result run_qlm(const char *args) {
  const char *bin = getenv("QLM_BIN");
  assert_non_null(bin);
  char *dir = tu_tmpdir();
  char cmd[4096], out_path[512], err_path[512];
  snprintf(out_path, sizeof out_path, "%s/out", dir);
  snprintf(err_path, sizeof err_path, "%s/err", dir);
  snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", bin, args, out_path, err_path);
  int st = system(cmd);
  run_result r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
  qlm_error e = {0};
  assert_int_equal(qlm_read_file(out_path, 64 << 20, &r.out, NULL, &e), 0);
  assert_int_equal(qlm_read_file(err_path, 64 << 20, &r.err, NULL, &e), 0);
  remove(out_path);
  remove(err_path);
  remove(dir);
  free(dir);
  return r;
}

static void expect_usage(const char *args, int status, const char *in_err) {
  run_result r = run_qlm(args);
  if (r.status != status || !strstr(r.err, in_err))
    fail_msg("qlm %s: exit %d (want %d), stderr: %s", args, r.status, status, r.err);
  free(r.out);
  free(r.err);
}

static void test_cli_usage(void **st) {
  (void)st;
  expect_usage("replay --duration 10x", 2, "--duration");
  expect_usage("replay --duration 0s", 2, "--duration");
  expect_usage("replay --speedup 0", 2, "--speedup");
  expect_usage("replay --n-predict 0", 2, "--n-predict");
  expect_usage("replay --bogus", 2, "bad option");
  expect_usage("replay extra", 2, "unexpected argument 'extra'");
  expect_usage("replay --data /nonexistent/dd.txt", 3, "/nonexistent/dd.txt");
  run_result r = run_qlm("replay --help");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "--speedup"));
  assert_non_null(strstr(r.out, "--emissions")); /* the measurement options */
  free(r.out);
  free(r.err);
  r = run_qlm("--help");
  assert_non_null(strstr(r.out, "replay"));
  free(r.out);
  free(r.err);
}

/* One metric of the only result in a results database (NaN when absent). */
static double db_metric(const char *db_path, const char *name) {
  sqlite3 *h = NULL;
  assert_int_equal(sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_prepare_v2(h, "SELECT value FROM metrics_flat WHERE task = 'replay' AND name = ?1", -1, &q, NULL),
                   SQLITE_OK);
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  double v = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_double(q, 0) : NAN;
  assert_int_equal(sqlite3_step(q), SQLITE_DONE); /* one row only */
  sqlite3_finalize(q);
  sqlite3_close(h);
  return v;
}

/* A 2-second run through the program: JSON record, compression stated; with --db the same record
 * is a result row of the run (not only its phases). */
static void test_cli_json(void **st) {
  (void)st;
  char *model = tu_shared("models/stories260K/stories260K.gguf"), *data = tu_shared("data/dailydialog/dialogues_test.txt");
  char *dir = tu_tmpdir(), db[600], args[2048];
  snprintf(db, sizeof db, "%s/r.db", dir);
  snprintf(args, sizeof args, "replay -m '%s' --data '%s' --duration 12s --speedup 6 --seed 3 -t 1 --json -q --db '%s'",
           model, data, db);
  run_result r = run_qlm(args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  cJSON *j = cJSON_Parse(r.out);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "task")->valuestring, "replay");
  cJSON *m = cJSON_GetObjectItem(j, "metrics"), *s = cJSON_GetObjectItem(j, "settings");
  /* the schedule of seed 3 over 12 s, from the library */
  qlm_error e = {0};
  double *t = NULL;
  int n = 0;
  assert_int_equal(qlm_replay_schedule(3, 6, 12, &t, &n, &e), 0);
  free(t);
  assert_int_equal((int)cJSON_GetObjectItem(m, "prompts")->valuedouble, n);
  assert_true(cJSON_GetObjectItem(m, "wall_s")->valuedouble >= 2 - 1e-3);
  assert_true(cJSON_GetObjectItem(m, "energy_j")->valuedouble > 0);
  assert_non_null(cJSON_GetObjectItem(m, "latency_p99_s"));
  assert_string_equal(cJSON_GetObjectItem(s, "speedup")->valuestring, "6");
  assert_non_null(strstr(cJSON_GetObjectItem(s, "note")->valuestring, "compressed"));
  const char *kinds = cJSON_GetObjectItem(s, "energy")->valuestring; /* "cpu estimated, ram ..." here (no RAPL) */
  assert_true(!strncmp(kinds, "cpu measured", 12) || !strncmp(kinds, "cpu estimated", 13));
  const char *same[] = {"prompts", "latency_p50_s", "latency_p99_s", "energy_per_prompt_j", "tokens_per_s"};
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
    assert_float_equal(db_metric(db, same[i]), cJSON_GetObjectItem(m, same[i])->valuedouble,
                       1e-9 * fabs(cJSON_GetObjectItem(m, same[i])->valuedouble));
  cJSON_Delete(j);
  free(r.out);
  free(r.err);
  free(model);
  free(data);
  remove(db);
  char side[640];
  const char *suffix[] = {"-wal", "-shm"};
  for (int i = 0; i < 2; i++) {
    snprintf(side, sizeof side, "%s%s", db, suffix[i]);
    remove(side);
  }
  rmdir(dir);
  free(dir);
}

/* The meter in the evaluation commands (issue #6): `qlm mmlu` and `qlm classify zeroshot` record
 * the phases load and eval, with the eval phase's tokens equal to the tokens the command reports. */
static void check_measure_json(const char *path, const char *command, double want_tokens) {
  char *text = NULL;
  qlm_error e = {0};
  assert_int_equal(qlm_read_file(path, 1 << 20, &text, NULL, &e), 0);
  cJSON *j = cJSON_Parse(text);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "command")->valuestring, command);
  cJSON *ph = cJSON_GetObjectItem(j, "phases");
  assert_int_equal(cJSON_GetArraySize(ph), 2);
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(ph, 0), "name")->valuestring, "load");
  cJSON *ev = cJSON_GetArrayItem(ph, 1);
  assert_string_equal(cJSON_GetObjectItem(ev, "name")->valuestring, "eval");
  assert_float_equal(cJSON_GetObjectItem(ev, "tokens")->valuedouble, want_tokens, 0);
  assert_true(want_tokens > 0);
  cJSON_Delete(j);
  free(text);
  remove(path);
}

static void test_cli_meter_in_evals(void **st) {
  (void)st;
  char *model = tu_shared("models/stories260K/stories260K.gguf"), *mmlu = tu_shared("data/mmlu"),
       *tweets = tu_shared("data/tweeteval-sentiment"), *dir = tu_tmpdir(), args[4096], mj[600];
  snprintf(mj, sizeof mj, "%s/m.json", dir);
  snprintf(args, sizeof args, "mmlu -m '%s' --data '%s' --subjects abstract_algebra --limit 3 -t 1 --json -q --measure-json '%s'",
           model, mmlu, mj);
  run_result r = run_qlm(args);
  if (r.status != 0) fail_msg("mmlu: exit %d: %s", r.status, r.err);
  /* the last JSON line is the overall record with the tokens scored */
  cJSON *rec = NULL;
  for (char *line = r.out, *nl; line && *line; line = nl ? nl + 1 : NULL) {
    nl = strchr(line, '\n');
    if (nl) *nl = 0;
    cJSON_Delete(rec);
    rec = cJSON_Parse(line);
  }
  assert_non_null(rec);
  check_measure_json(mj, "mmlu", cJSON_GetObjectItem(rec, "tokens")->valuedouble);
  cJSON_Delete(rec);
  free(r.out);
  free(r.err);
  snprintf(args, sizeof args, "classify zeroshot -m '%s' --data '%s' --limit 6 -b 3 -t 1 --json -q --measure-json '%s'",
           model, tweets, mj);
  r = run_qlm(args);
  if (r.status != 0) fail_msg("classify: exit %d: %s", r.status, r.err);
  rec = cJSON_Parse(r.out);
  assert_non_null(rec);
  check_measure_json(mj, "classify", cJSON_GetObjectItem(rec, "tokens")->valuedouble);
  cJSON_Delete(rec);
  free(r.out);
  free(r.err);
  remove(dir);
  free(dir);
  free(model);
  free(mmlu);
  free(tweets);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schedule_deterministic),
      cmocka_unit_test(test_schedule_mean_gap),
      cmocka_unit_test(test_parse_duration),
      cmocka_unit_test(test_first_sentence_fixed),
      cmocka_unit_test(test_first_sentence_real_file),
      cmocka_unit_test(test_percentiles),
      cmocka_unit_test(test_run_fake_clock),
      cmocka_unit_test(test_run_fake_clock_speedup),
      cmocka_unit_test(test_replay_stories260k),
      cmocka_unit_test(test_cli_usage),
      cmocka_unit_test(test_cli_json),
      cmocka_unit_test(test_cli_meter_in_evals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
