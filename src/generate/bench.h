/* bench.h — llama-bench-style speed measurement and the machine's rooflines.
 *
 * Tests: "pp" = one batched forward of n_p tokens from an empty cache (prefill), "tg" = n_g
 * single-token forwards after a 1-token prompt (decode).  Token ids are pseudo-random (seeded),
 * so runs are repeatable.  Each test is repeated and summarized as mean ± sample sd of tokens/s.
 *
 * Rooflines (what the hardware could do at best for this model):
 *   decode  t/s <= bandwidth / bytes of weights read per token
 *           (every linear layer's matrices + the output head, in their storage type; the
 *            embedding lookup reads one row and is excluded);
 *   prefill t/s <= FMA peak / (2 * params FLOPs per token) (params of the same matrices).
 * Bandwidth and FMA peak are measured by short probes (method in bench.c) and cached per
 * machine in a JSON file keyed by the CPU model string and the core count. */
#ifndef QLM_BENCH_H
#define QLM_BENCH_H

#include <stdbool.h>
#include <stdio.h>

#include "core/error.h"
#include "model/model.h"

#define QLM_BENCH_MAX_REPS 64
#define QLM_MACHINE_MAX_THREADS 16 /* thread counts remembered per machine */

/* What one token costs in weights (linear layers + output head). */
typedef struct qlm_model_cost {
  double bytes_per_token; /* bytes of weight storage read per decoded token */
  double params;          /* weights in those matrices (FLOPs per token = 2 * params) */
} qlm_model_cost;
void qlm_model_cost_of(const qlm_model *m, qlm_model_cost *c);

/* Roofline arithmetic: the best t/s the limit allows, and a measured t/s as a fraction of it. */
double qlm_roofline_decode_tps(double bandwidth_Bps, double bytes_per_token);
double qlm_roofline_prefill_tps(double flops_per_s, double params);
static inline double qlm_roofline_fraction(double tps, double roof_tps) { return roof_tps > 0 ? tps / roof_tps : 0; }

/* Mean and sample standard deviation (0 for r = 1). */
void qlm_bench_stats(const double *x, int r, double *mean, double *sd);

/* Run both tests on a state made for n_threads: pp_tps[reps], tg_tps[reps] receive tokens/s of
 * each repetition (either may be NULL to skip that test; n_p or n_g ignored then).  One warm-up
 * run precedes each test (pages the weights in, grows caches). */
int qlm_bench_model(const qlm_model *m, int n_p, int n_g, int n_threads, int reps, double *pp_tps, double *tg_tps,
                    qlm_error *err);

/* ---- machine limits ---- */
typedef struct qlm_machine {
  char cpu[128];   /* CPU model string (/proc/cpuinfo "model name") */
  int cores;       /* online CPUs */
  char simd[16];   /* SIMD level the FMA probe used ("avx512", "avx2", "scalar") */
  int n;           /* entries below */
  int threads[QLM_MACHINE_MAX_THREADS];
  double bw_Bps[QLM_MACHINE_MAX_THREADS];      /* streaming-read bandwidth, bytes/s */
  double fma_flops[QLM_MACHINE_MAX_THREADS];   /* fp32 FMA peak, FLOP/s */
} qlm_machine;

/* This CPU's identity (cpu, cores filled; n = 0). */
void qlm_machine_identify(qlm_machine *m);
/* Probes (see bench.c): bytes/s reading a buffer of `bytes` (0 = default: 8x the last-level
 * cache, at least 256 MiB) with n_threads threads; FLOP/s of independent FMA chains. */
int qlm_probe_bandwidth(int n_threads, size_t bytes, double *Bps, qlm_error *err);
int qlm_probe_fma(int n_threads, double *flops, qlm_error *err);
/* Index of the entry for n_threads, or -1. */
int qlm_machine_find(const qlm_machine *m, int n_threads);

/* Default cache path: $XDG_CACHE_HOME/qlm/machine.json, else $HOME/.cache/qlm/machine.json
 * (writes into buf[cap]; returns NULL if neither variable is set). */
const char *qlm_machine_cache_path(char *buf, size_t cap);
/* Load the cache file into *m if it exists, parses, and matches want->cpu and want->cores;
 * otherwise *m = *want (n = 0) and *hit = false.  A malformed file is an error only when
 * strict; a missing or foreign one is simply a miss. */
int qlm_machine_load(const char *path, const qlm_machine *want, qlm_machine *m, bool *hit, qlm_error *err);
int qlm_machine_save(const char *path, const qlm_machine *m, qlm_error *err);
/* Limits for every thread count in threads[n]: from the cache when it has them, else probed
 * (and the cache rewritten; path NULL = no cache).  force: probe again regardless. */
int qlm_machine_limits(const char *path, const int *threads, int n, bool force, qlm_machine *m, qlm_error *err);

/* ---- result table ---- */
typedef struct qlm_bench_row {
  const char *model;      /* file name */
  const char *type;       /* storage type of the FFN weights */
  double size_bytes;      /* file tensors' bytes */
  qlm_model_cost cost;
  int threads;
  int test;               /* 0 = pp, 1 = tg */
  int n_tokens;           /* n_p or n_g */
  int reps;
  double tps[QLM_BENCH_MAX_REPS];
  double mean, sd;        /* tokens/s */
  double roof_tps;        /* roofline tokens/s (0 = unknown) */
} qlm_bench_row;

typedef enum { QLM_BENCH_MD = 0, QLM_BENCH_CSV = 1, QLM_BENCH_JSON = 2 } qlm_bench_format;
/* Write the table (Markdown: machine limits first, then one row per result; CSV: a header and
 * one line per result; JSON: {"machine": {...}, "results": [...]}). */
int qlm_bench_print(FILE *f, qlm_bench_format fmt, const qlm_machine *mach, const qlm_bench_row *rows, int n,
                    qlm_error *err);

#endif
