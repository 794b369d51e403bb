/* replay.c — workload replay (see replay.h): DailyDialog first sentences, a seeded Poisson
 * schedule, and a runner that sleeps between arrivals and times every prompt. */
#include "eval/replay.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mapfile.h"

/* ---- first sentence ---- */

/* UTF-8 sentence terminators besides ASCII . ? ! */
static const char *const WIDE_TERMS[] = {"\xE2\x80\xA6" /* … */, "\xE3\x80\x82" /* 。 */, "\xEF\xBC\x9F" /* ？ */,
                                         "\xEF\xBC\x81" /* ！ */};

/* Bytes of terminator characters at the end of s[0..n). */
static size_t trailing_terms(const char *s, size_t n) {
  size_t k = n;
  for (;;) {
    if (k >= 1 && (s[k - 1] == '.' || s[k - 1] == '?' || s[k - 1] == '!')) {
      k--;
      continue;
    }
    int wide = 0;
    for (size_t w = 0; k >= 3 && w < sizeof WIDE_TERMS / sizeof WIDE_TERMS[0]; w++)
      if (!memcmp(s + k - 3, WIDE_TERMS[w], 3)) wide = 1;
    if (!wide) break;
    k -= 3;
  }
  return n - k;
}

static int is_honorific(const char *s, size_t n) {
  static const char *const H[] = {"Mr", "Mrs", "Ms", "Dr", "St", "Jr"};
  for (size_t i = 0; i < sizeof H / sizeof H[0]; i++)
    if (strlen(H[i]) == n && !memcmp(s, H[i], n)) return 1;
  return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

/* Append token t[0..n) to out (single space between tokens) within cap-1 bytes; a token that
 * does not fit is cut on a UTF-8 character boundary and 0 is returned (the sentence stops). */
static int append_token(char *out, size_t cap, size_t *len, const char *t, size_t n) {
  size_t sep = *len ? 1 : 0, room = cap - 1 - *len;
  if (sep + n <= room) {
    if (sep) out[(*len)++] = ' ';
    memcpy(out + *len, t, n);
    *len += n;
    out[*len] = 0;
    return 1;
  }
  if (room > sep) {
    size_t k = room - sep;
    while (k > 0 && ((unsigned char)t[k] & 0xC0) == 0x80) k--; /* t[k] continues a character */
    if (k) {
      if (sep) out[(*len)++] = ' ';
      memcpy(out + *len, t, k);
      *len += k;
      out[*len] = 0;
    }
  }
  return 0;
}

size_t qlm_first_sentence(const char *line, size_t len, char *out, size_t cap) {
  if (!cap) return 0;
  out[0] = 0;
  static const char EOU[] = "__eou__";
  const char *e = memmem(line, len, EOU, sizeof EOU - 1);
  size_t end = e ? (size_t)(e - line) : len, i = 0, olen = 0;
  const char *prev = NULL;
  size_t prev_n = 0;
  int done = 0; /* the sentence has ended; only further terminator tokens are taken */
  while (i < end) {
    while (i < end && is_space(line[i])) i++;
    size_t a = i;
    while (i < end && !is_space(line[i])) i++;
    size_t n = i - a;
    if (!n) break;
    const char *t = line + a;
    size_t tt = trailing_terms(t, n);
    if (done && tt != n) break;
    if (!done && tt) {
      int only_dot = tt == 1 && t[n - 1] == '.';
      if (tt == n) done = !(only_dot && prev && is_honorific(prev, prev_n)); /* "Mr ." */
      else done = !(only_dot && is_honorific(t, n - 1));                    /* "Mr." */
    }
    if (!append_token(out, cap, &olen, t, n)) break;
    prev = t;
    prev_n = n;
  }
  return olen;
}

int qlm_dailydialog_load(const char *path, char ***prompts, int *n, qlm_error *err) {
  *prompts = NULL;
  *n = 0;
  char *text = NULL;
  size_t len = 0;
  int rc = qlm_read_file(path, (size_t)256 << 20, &text, &len, err);
  if (rc) return rc;
  size_t cap = 1024, count = 0;
  char **out = qlm_malloc(cap * sizeof *out, "prompts", err);
  char *buf = qlm_malloc(QLM_REPLAY_MAX_SENTENCE, "prompt", err);
  if (!out || !buf) rc = QLM_ENOMEM;
  for (size_t p = 0; !rc && p < len;) {
    const char *nl = memchr(text + p, '\n', len - p);
    size_t ll = nl ? (size_t)(nl - (text + p)) : len - p;
    size_t sl = qlm_first_sentence(text + p, ll, buf, QLM_REPLAY_MAX_SENTENCE);
    p += ll + 1;
    if (!sl) continue;
    if (count == cap) {
      if (cap >= (size_t)1 << 24) {
        rc = qlm_fail(err, QLM_ELIMIT, "%s: more than %zu dialogues", path, cap);
        break;
      }
      char **g = realloc(out, 2 * cap * sizeof *out);
      if (!g) {
        rc = qlm_fail(err, QLM_ENOMEM, "out of memory reading %s", path);
        break;
      }
      out = g;
      cap *= 2;
    }
    if (!(out[count] = strdup(buf))) {
      rc = qlm_fail(err, QLM_ENOMEM, "out of memory reading %s", path);
      break;
    }
    count++;
  }
  if (!rc && !count) rc = qlm_fail(err, QLM_EFORMAT, "%s: no dialogue (expected one per line, utterances ending in __eou__)", path);
  free(buf);
  free(text);
  if (rc) {
    qlm_replay_prompts_free(out, (int)count);
    return rc;
  }
  *prompts = out;
  *n = (int)count;
  return QLM_OK;
}

void qlm_replay_prompts_free(char **prompts, int n) {
  if (!prompts) return;
  for (int i = 0; i < n; i++) free(prompts[i]);
  free(prompts);
}

/* ---- schedule ---- */

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int qlm_replay_schedule(uint64_t seed, double mean_gap_s, double duration_s, double **times, int *n, qlm_error *err) {
  *times = NULL;
  *n = 0;
  if (!(mean_gap_s > 0) || !isfinite(mean_gap_s) || !(duration_s > 0) || !isfinite(duration_s))
    return qlm_fail(err, QLM_EUSAGE, "replay schedule: mean gap %g s and duration %g s must be positive and finite",
                    mean_gap_s, duration_s);
  double expect = duration_s / mean_gap_s;
  if (expect > 0.9 * QLM_REPLAY_MAX_ARRIVALS)
    return qlm_fail(err, QLM_ELIMIT, "replay schedule: %g s at one prompt per %g s is about %.0f prompts (limit %d)",
                    duration_s, mean_gap_s, expect, QLM_REPLAY_MAX_ARRIVALS);
  size_t cap = (size_t)(expect * 1.1) + 64, count = 0;
  double *t = qlm_malloc(cap * sizeof *t, "schedule", err);
  if (!t) return QLM_ENOMEM;
  uint64_t st = seed;
  double now = 0;
  for (;;) {
    double u = (double)(splitmix64(&st) >> 11) * 0x1.0p-53; /* [0, 1) */
    now += -mean_gap_s * log1p(-u);
    if (now >= duration_s) break;
    if (count == cap) {
      if (cap >= QLM_REPLAY_MAX_ARRIVALS) {
        free(t);
        return qlm_fail(err, QLM_ELIMIT, "replay schedule: more than %d prompts", QLM_REPLAY_MAX_ARRIVALS);
      }
      size_t nc = cap * 2 > QLM_REPLAY_MAX_ARRIVALS ? QLM_REPLAY_MAX_ARRIVALS : cap * 2;
      double *g = realloc(t, nc * sizeof *t);
      if (!g) {
        free(t);
        return qlm_fail(err, QLM_ENOMEM, "out of memory (replay schedule)");
      }
      t = g;
      cap = nc;
    }
    t[count++] = now;
  }
  if (!count) {
    free(t);
    t = NULL;
  }
  *times = t;
  *n = (int)count;
  return QLM_OK;
}

int qlm_parse_duration(const char *s, double *seconds, qlm_error *err) {
  char *end = NULL;
  errno = 0;
  double v = s && *s ? strtod(s, &end) : NAN;
  double unit = 1;
  if (end && *end) {
    if (!strcmp(end, "s")) unit = 1;
    else if (!strcmp(end, "m")) unit = 60;
    else if (!strcmp(end, "h")) unit = 3600;
    else if (!strcmp(end, "d")) unit = 86400;
    else v = NAN;
  }
  if (errno || !isfinite(v) || !(v > 0) || v * unit > 366.0 * 86400)
    return qlm_fail(err, QLM_EUSAGE, "--duration: '%s' is not a duration such as 30s, 10m, 4h (positive, at most a year)",
                    s ? s : "");
  *seconds = v * unit;
  return QLM_OK;
}

double qlm_percentile_sorted(const double *sorted, int n, double p) {
  if (n <= 0) return NAN;
  if (p <= 0) return sorted[0];
  if (p >= 100) return sorted[n - 1];
  double rank = p / 100.0 * (double)(n - 1);
  int lo = (int)floor(rank);
  if (lo >= n - 1) return sorted[n - 1];
  double frac = rank - lo;
  return sorted[lo] + frac * (sorted[lo + 1] - sorted[lo]);
}

/* ---- runner ---- */

static double sys_now(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sys_sleep_until(void *ctx, double t) {
  (void)ctx;
  while (sys_now(NULL) < t) {
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    int e = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    if (e && e != EINTR) break; /* cannot sleep: give up waiting rather than spin */
  }
}

qlm_replay_clock qlm_replay_system_clock(void) { return (qlm_replay_clock){.now = sys_now, .sleep_until = sys_sleep_until}; }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double energy_now(const qlm_replay_config *c) { return c->energy ? c->energy(c->energy_ctx) : NAN; }

/* Latency percentiles, means and per-prompt/per-hour figures from the items. */
static int summarize(const qlm_replay_config *c, qlm_replay_report *r, qlm_error *err) {
  int n = r->n_served;
  r->idle_s = r->wall_s - r->active_s;
  if (r->idle_s < 0) r->idle_s = 0;
  r->idle_energy_j = r->energy_j - r->active_energy_j;
  r->tokens_per_s = r->active_s > 0 ? (double)r->generated_tokens / r->active_s : NAN;
  r->energy_per_prompt_j = n ? r->energy_j / n : NAN;
  r->energy_per_hour_j = r->wall_s > 0 ? r->energy_j / (r->wall_s / 3600.0) : NAN;
  r->latency_p50_s = r->latency_p95_s = r->latency_p99_s = r->latency_mean_s = r->latency_max_s = NAN;
  r->wait_mean_s = NAN;
  if (!n) return QLM_OK;
  double *lat = qlm_malloc((size_t)n * sizeof *lat, "latencies", err);
  if (!lat) return QLM_ENOMEM;
  double sum = 0, wait = 0;
  for (int i = 0; i < n; i++) {
    lat[i] = r->items[i].end_s - r->items[i].arrival_s;
    sum += lat[i];
    wait += r->items[i].start_s - r->items[i].arrival_s;
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  r->latency_p50_s = qlm_percentile_sorted(lat, n, 50);
  r->latency_p95_s = qlm_percentile_sorted(lat, n, 95);
  r->latency_p99_s = qlm_percentile_sorted(lat, n, 99);
  r->latency_mean_s = sum / n;
  r->latency_max_s = lat[n - 1];
  r->wait_mean_s = wait / n;
  free(lat);
  (void)c;
  return QLM_OK;
}

int qlm_replay_run(const qlm_replay_config *c, qlm_replay_report *r, qlm_error *err) {
  memset(r, 0, sizeof *r);
  double speed = c->speedup > 0 ? c->speedup : 1;
  if (!c->gen || c->n_arrivals < 0 || (c->n_arrivals > 0 && (!c->arrivals || !c->prompts || c->n_prompts <= 0)))
    return qlm_fail(err, QLM_EINTERNAL, "replay: no generator, schedule or prompts");
  if (!isfinite(speed) || !(c->duration_s > 0) || !isfinite(c->duration_s))
    return qlm_fail(err, QLM_EUSAGE, "replay: duration %g s and speedup %g must be positive", c->duration_s, speed);
  for (int i = 0; i < c->n_arrivals; i++)
    if (!isfinite(c->arrivals[i]) || c->arrivals[i] < 0 || (i && c->arrivals[i] < c->arrivals[i - 1]))
      return qlm_fail(err, QLM_EUSAGE, "replay: arrival %d (%g s) is not a non-decreasing time", i, c->arrivals[i]);
  qlm_replay_clock clk = c->clock.now ? c->clock : qlm_replay_system_clock();
  if (c->n_arrivals && !(r->items = qlm_calloc((size_t)c->n_arrivals, sizeof *r->items, "replay items", err)))
    return QLM_ENOMEM;
  double t0 = clk.now(clk.ctx), e0 = energy_now(c), prev_end = 0;
  int rc = QLM_OK;
  for (int i = 0; i < c->n_arrivals; i++) {
    qlm_replay_item *it = &r->items[i];
    it->arrival_s = c->arrivals[i] / speed;
    double now = clk.now(clk.ctx) - t0;
    if (now < it->arrival_s) {
      clk.sleep_until(clk.ctx, t0 + it->arrival_s); /* idle: sleep, never spin */
      now = clk.now(clk.ctx) - t0;
    } else if (i > 0 && it->arrival_s < prev_end) {
      r->n_queued++;
    }
    it->start_s = now;
    double ea = energy_now(c);
    qlm_replay_gen_out go = {0};
    rc = c->gen(c->gen_ctx, i, c->prompts[i % c->n_prompts], &go, err);
    it->end_s = prev_end = clk.now(clk.ctx) - t0;
    if (rc) break;
    r->active_energy_j += energy_now(c) - ea;
    it->n_prompt = go.n_prompt;
    it->n_generated = go.n_generated;
    r->active_s += it->end_s - it->start_s;
    r->prompt_tokens += go.n_prompt;
    r->generated_tokens += go.n_generated;
    r->n_served = i + 1;
    if (c->on_item) c->on_item(c->item_ctx, i, c->n_arrivals, it);
  }
  if (rc) {
    qlm_replay_report_free(r);
    return rc;
  }
  double window = c->duration_s / speed; /* the trailing idle time belongs to the window too */
  if (clk.now(clk.ctx) - t0 < window) clk.sleep_until(clk.ctx, t0 + window);
  r->wall_s = clk.now(clk.ctx) - t0;
  r->energy_j = energy_now(c) - e0;
  rc = summarize(c, r, err);
  if (rc) qlm_replay_report_free(r);
  return rc;
}

void qlm_replay_report_free(qlm_replay_report *r) {
  if (!r) return;
  free(r->items);
  r->items = NULL;
}
