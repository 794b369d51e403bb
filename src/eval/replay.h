/* replay.h — workload replay: seed 001's inference-footprint protocol.
 *
 * Prompts (the first sentence of each DailyDialog dialogue, in file order, wrapping around when
 * the schedule is longer than the file) arrive at fixed, seeded random times: a Poisson process,
 * i.e. independent exponential gaps with mean 6 s (seed 001: "≈ one prompt every 6 s, random
 * fixed timestamps"), over a duration (4 h in the seed).  Each prompt generates at most 100 new
 * tokens.  One prompt is served at a time, in arrival order: a prompt that arrives while another
 * runs waits, and its latency (arrival to last token) includes the wait.  Between prompts the
 * runner sleeps until the next arrival (no busy-waiting), so the energy of the whole window —
 * idle included — is what a deployment that serves this traffic would pay.
 *
 * --speedup K divides every arrival time (and the duration) by K: the gaps shrink, generation
 * does not, so the idle share and per-hour figures of a compressed run are not those of the
 * real schedule; outputs say so.
 *
 * The clock, the generator and the energy reader are injected (qlm_replay_config) so tests run
 * the scheduler on a fake clock. */
#ifndef QLM_REPLAY_H
#define QLM_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define QLM_REPLAY_MEAN_GAP_S 6.0      /* seed 001 */
#define QLM_REPLAY_MAX_NEW_TOKENS 100  /* seed 001 */
#define QLM_REPLAY_DURATION_S 14400.0  /* 4 h, seed 001 */
#define QLM_REPLAY_MAX_ARRIVALS 10000000 /* 10 M prompts: ~2 years at one per 6 s */
#define QLM_REPLAY_MAX_SENTENCE 4096   /* bytes kept of a first sentence */

/* ---- prompts ---- */

/* The first sentence of one DailyDialog line (utterances separated by "__eou__"), written to
 * out[cap] NUL-terminated; returns its length in bytes (0 when the line has no text).
 * Definition: take the first utterance (text before the first "__eou__"), split it on ASCII
 * whitespace into tokens (the corpus is pre-tokenized: "The kitchen stinks ."), and keep the
 * tokens up to and including the first sentence terminator — a token made only of . ? ! …
 * (or the full-width 。？！), or a token ending in one of them — together with any terminator
 * tokens right after it ("fun ? !").  A "." that follows an honorific (Mr Mrs Ms Dr St Jr,
 * "Mr ." or "Mr.") does not end the sentence.  Tokens are re-joined with single spaces; the
 * corpus's spacing around punctuation is kept, as a model fed the dataset would see it.
 * Without a terminator the whole first utterance is the sentence ("Sally , what do we have for
 * dinner").  Truncated (at a UTF-8 boundary) to cap-1 bytes. */
size_t qlm_first_sentence(const char *line, size_t len, char *out, size_t cap);

/* Every non-empty dialogue's first sentence from a DailyDialog file (dialogues_*.txt, one
 * dialogue per line).  Fails naming the file when it has no dialogue. */
int qlm_dailydialog_load(const char *path, char ***prompts, int *n, qlm_error *err);
void qlm_replay_prompts_free(char **prompts, int n);

/* ---- schedule ---- */

/* Arrival times in seconds (ascending, all < duration_s) of a Poisson process with the given
 * mean gap, from a seeded generator (splitmix64, 53-bit uniforms u, gap = -mean·ln(1-u)):
 * the same seed gives the same schedule on every run.  *times is malloc'd (NULL when n = 0). */
int qlm_replay_schedule(uint64_t seed, double mean_gap_s, double duration_s, double **times, int *n,
                        qlm_error *err);

/* "30s", "10m", "4h", "1.5h", "90" (seconds) -> seconds (> 0). */
int qlm_parse_duration(const char *s, double *seconds, qlm_error *err);

/* p-th percentile (0..100) of sorted[n] with linear interpolation between order statistics
 * (numpy's default): rank = p/100·(n-1).  NaN for n = 0. */
double qlm_percentile_sorted(const double *sorted, int n, double p);

/* ---- runner ---- */

typedef struct qlm_replay_clock {
  double (*now)(void *ctx);                    /* monotonic seconds */
  void (*sleep_until)(void *ctx, double t);    /* return at (or after) `now() == t`; must sleep */
  void *ctx;
} qlm_replay_clock;

/* CLOCK_MONOTONIC and clock_nanosleep(TIMER_ABSTIME). */
qlm_replay_clock qlm_replay_system_clock(void);

typedef struct qlm_replay_gen_out {
  int n_prompt;     /* tokens prefilled */
  int n_generated;  /* tokens generated */
} qlm_replay_gen_out;

/* Serve prompt `index` (text `prompt`); returns 0 or an error class (the replay stops). */
typedef int (*qlm_replay_gen_fn)(void *ctx, int index, const char *prompt, qlm_replay_gen_out *out, qlm_error *err);
/* Cumulative joules so far (any origin). */
typedef double (*qlm_replay_energy_fn)(void *ctx);

typedef struct qlm_replay_item {
  double arrival_s, start_s, end_s; /* wall seconds since the replay began */
  int n_prompt, n_generated;
} qlm_replay_item;

typedef struct qlm_replay_config {
  const double *arrivals;      /* [n_arrivals] schedule seconds (uncompressed), ascending */
  int n_arrivals;
  double duration_s;           /* schedule seconds; the window ends at duration_s / speedup */
  double speedup;              /* >= 1 (0 = 1) */
  char *const *prompts;        /* [n_prompts]; arrival i gets prompts[i % n_prompts] */
  int n_prompts;
  qlm_replay_gen_fn gen;
  void *gen_ctx;
  qlm_replay_energy_fn energy; /* NULL: energy figures are NaN */
  void *energy_ctx;
  qlm_replay_clock clock;      /* .now NULL = the system clock */
  /* Called after each prompt (may be NULL). */
  void (*on_item)(void *ctx, int i, int n, const qlm_replay_item *it);
  void *item_ctx;
} qlm_replay_config;

typedef struct qlm_replay_report {
  int n_served;                 /* prompts served */
  int n_queued;                 /* prompts that arrived while another was running */
  double wall_s;                /* window: max(duration/speedup, end of the last prompt) */
  double active_s, idle_s;      /* generating / not (sum = wall_s) */
  double energy_j;              /* whole window, NaN without an energy reader */
  double active_energy_j, idle_energy_j;
  double latency_p50_s, latency_p95_s, latency_p99_s, latency_mean_s, latency_max_s;
  double wait_mean_s;           /* arrival to start, mean */
  int64_t prompt_tokens, generated_tokens;
  double tokens_per_s;          /* generated tokens / active seconds */
  double energy_per_prompt_j;   /* energy_j / n_served */
  double energy_per_hour_j;     /* energy_j / wall hours */
  qlm_replay_item *items;       /* [n_served], malloc'd */
} qlm_replay_report;

int qlm_replay_run(const qlm_replay_config *c, qlm_replay_report *r, qlm_error *err);
void qlm_replay_report_free(qlm_replay_report *r);

#endif
