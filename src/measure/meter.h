/* meter.h — what a command costs: time, CPU, memory, tokens, energy and CO₂ per named phase.
 *
 *   qlm_meter *m;  qlm_meter_new(&opts, &m, &err);
 *   qlm_meter_begin(m, QLM_PHASE_LOAD);     ... load ...
 *   qlm_meter_begin(m, QLM_PHASE_GENERATE); ... qlm_meter_add_tokens(m, n) ...
 *   qlm_meter_finish(m);  qlm_meter_print_summary(m, stderr);  qlm_meter_write_csv(m, path, &err);
 *   qlm_meter_free(m);
 *
 * Phases do not nest: begin ends the open phase. Beginning a name again adds to that phase
 * (a replay alternates generate and idle many times).
 *
 * Per-phase peak memory: at each phase start the process's high-water mark (VmHWM) is reset
 * to the current RSS by writing 5 to /proc/self/clear_refs (Linux >= 4.0), and VmHWM at the
 * end is the phase's peak — exact, no sampling. Where that write is refused, the peak is the
 * largest VmRSS seen at the phase edges and by the sampler thread (so it can miss a spike
 * shorter than the interval); peak_method says which.
 *
 * Energy comes from qlm_energy (energy.h), read at phase edges and polled by a background
 * thread every interval_s (needed for RAPL counter wrap-around and NVML power integration).
 * Overhead: the time spent in meter calls plus the sampler thread's CPU time, reported as a
 * fraction of the run's wall time. */
#ifndef QLM_METER_H
#define QLM_METER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "measure/co2.h"
#include "measure/energy.h"

#define QLM_PHASE_LOAD "load"
#define QLM_PHASE_CALIBRATE "calibrate"
#define QLM_PHASE_QUANTIZE "quantize"
#define QLM_PHASE_EVAL "eval"
#define QLM_PHASE_PREFILL "prefill"
#define QLM_PHASE_GENERATE "generate"
#define QLM_PHASE_REPLAY "replay"
#define QLM_METER_MAX_PHASES 16

typedef struct qlm_meter_opts {
  const char *command;       /* "run", "quantize", ... (names the run in the outputs) */
  bool no_energy;            /* time/CPU/memory only: no energy sources, no sampler thread */
  double interval_s;         /* sampler period (default 1 s when 0 and !no_sampler) */
  bool no_sampler;           /* no background thread (tests poll by hand) */
  qlm_energy_opts energy;
  const char *country;       /* ISO-3166 alpha-3; NULL = world average */
  double carbon_intensity;   /* g CO₂e/kWh overriding the country; < 0 = unset */
  double pue;                /* power usage effectiveness; 0 = 1.0 */
} qlm_meter_opts;

/* Defaults: interval 1 s, no carbon-intensity override, PUE 1.0. */
qlm_meter_opts qlm_meter_default_opts(void);

typedef struct qlm_phase {
  char name[32];
  int count;                 /* times begun */
  double wall_s;             /* seconds */
  double user_s, sys_s;      /* process CPU seconds (all threads) */
  uint64_t rss_start;        /* bytes resident when the phase (first) began */
  uint64_t peak_rss;         /* bytes: highest resident set during the phase */
  uint64_t weight_bytes;     /* bytes of model weights in use (set by the command) */
  uint64_t kv_bytes;         /* bytes of KV cache allocated */
  uint64_t tokens;           /* tokens processed */
  double cpu_j, ram_j, gpu_j;/* energy in joules (see the meter's energy components) */
  uint64_t gpu_mem_peak;     /* bytes, 0 without a GPU */
  /* private: the snapshot at begin */
  double t0_wall, t0_user, t0_sys;
  qlm_energy_totals e0;
} qlm_phase;

typedef struct qlm_meter {
  qlm_meter_opts opts;
  qlm_energy *energy;        /* NULL with no_energy */
  qlm_grid_choice grid;
  double pue;
  char run_id[40];           /* random UUID v4 */
  char started[32];          /* ISO 8601 local time of qlm_meter_new */
  qlm_phase phases[QLM_METER_MAX_PHASES];
  int n_phases;
  int cur;                   /* open phase or -1 */
  bool hwm_reset;            /* per-phase peaks by VmHWM reset (else sampled) */
  uint64_t process_peak;     /* bytes: the process's high-water mark over the whole run */
  uint64_t sampled_peak;     /* fallback: largest VmRSS sampled in the open phase */
  double t_start;            /* monotonic seconds at new */
  double t_end;              /* at finish */
  double call_s;             /* seconds spent inside meter calls (overhead) */
  double sampler_cpu_s;      /* CPU seconds of the sampler thread (overhead) */
  int sampler_polls;
  bool finished;
  /* sampler thread */
  pthread_t thread;
  bool thread_running, stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} qlm_meter;

int qlm_meter_new(const qlm_meter_opts *o, qlm_meter **out, qlm_error *err);
void qlm_meter_free(qlm_meter *m);

/* Start phase `name` (ending the open one); returns it (NULL when the table is full). */
qlm_phase *qlm_meter_begin(qlm_meter *m, const char *name);
void qlm_meter_end(qlm_meter *m);
/* Add to the open phase (or the last one when none is open). */
void qlm_meter_add_tokens(qlm_meter *m, uint64_t n);
void qlm_meter_set_bytes(qlm_meter *m, uint64_t weight_bytes, uint64_t kv_bytes);
/* End the open phase and stop the sampler. Idempotent. */
void qlm_meter_finish(qlm_meter *m);

/* Sum over the phases (peak = max); name "total". */
void qlm_meter_total(const qlm_meter *m, qlm_phase *out);
double qlm_phase_energy_j(const qlm_phase *p);
double qlm_phase_co2_g(const qlm_meter *m, const qlm_phase *p);
/* Meter overhead as a fraction of the run's wall time. */
double qlm_meter_overhead(const qlm_meter *m);
const char *qlm_meter_peak_method(const qlm_meter *m);

/* Current resident set and high-water mark of this process (bytes; 0 when unknown). */
uint64_t qlm_rss_now(void);
uint64_t qlm_rss_hwm(void);

/* One screen: per phase time, CPU, peak RAM, tokens/s, energy (measured/estimated), gCO₂e. */
void qlm_meter_print_summary(const qlm_meter *m, FILE *f);

/* emissions.c: CodeCarbon-compatible emissions.csv (one row per phase; appended when the file
 * already has the same header, as CodeCarbon does) and the full JSON record; written atomically. */
extern const char *const qlm_emissions_columns[];   /* NULL-terminated, CodeCarbon's order */
int qlm_meter_write_csv(const qlm_meter *m, const char *path, qlm_error *err);
int qlm_meter_write_json(const qlm_meter *m, const char *path, qlm_error *err);
/* The JSON text (malloc'd) — what write_json writes. */
char *qlm_meter_json(const qlm_meter *m);

#endif
