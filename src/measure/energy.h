/* energy.h — energy of CPU, RAM and GPU: measured where a counter exists, estimated otherwise.
 *
 * Sources, probed once at open:
 *  - CPU and DRAM: Linux powercap RAPL (<root>/intel-rapl:N package domains, intel-rapl:N:M
 *    "dram" sub-domains; AMD's RAPL counters appear under the same names). energy_uj is a µJ
 *    counter that wraps at max_energy_range_uj; each poll adds the delta (plus the range when
 *    the counter went backwards), so it must be polled at least once per wrap period (minutes
 *    at full power; the sampler polls every second by default). core/uncore sub-domains are
 *    inside the package and skipped; psys is used only when there is no package domain;
 *    intel-rapl-mmio duplicates of the packages are skipped.
 *  - NVIDIA GPUs: NVML loaded with dlopen (no link-time dependency: qlm runs where no NVIDIA
 *    library exists): nvmlDeviceGetTotalEnergyConsumption (mJ since driver load) when the GPU
 *    has it, else nvmlDeviceGetPowerUsage samples integrated with the trapezoid rule.
 *  - No counter (typical VM): an estimate, labelled so everywhere:
 *      CPU power = TDP × utilisation, utilisation = process CPU seconds / (wall × online CPUs)
 *      (CodeCarbon's process mode), so CPU energy = TDP × CPU seconds / online CPUs; TDP from
 *      --cpu-tdp, else a table of common CPUs, else CodeCarbon's generic 85 W.
 *      RAM power = CodeCarbon v3's model of installed memory: DIMMs estimated from the size
 *      (≤2 GB 1, ≤16 GB 2, ≤64 GB 4, ≤128 GB 8, beyond one per 64 GB up to 32), 5 W per DIMM
 *      for the first 4, 90 % of that for DIMMs 5-8, 80 % for 9-16, 70 % beyond, at least 10 W;
 *      RAM energy = that power × wall time.
 *      GPU: none.
 * Every component says which (measured / estimated / none) and how, and, when a counter exists
 * but cannot be used, why (e.g. permission denied on energy_uj). */
#ifndef QLM_ENERGY_H
#define QLM_ENERGY_H

#include <stdint.h>

#include "core/error.h"

enum qlm_energy_kind { QLM_ENERGY_NONE = 0, QLM_ENERGY_MEASURED = 1, QLM_ENERGY_ESTIMATED = 2 };
const char *qlm_energy_kind_name(int kind); /* "none" / "measured" / "estimated" */

typedef struct qlm_energy_opts {
  const char *powercap_root; /* NULL = /sys/class/powercap (tests point it at a fake tree) */
  const char *nvml_path;     /* NULL = libnvidia-ml.so.1; "" = do not look for NVML */
  double cpu_tdp_w;          /* > 0: use this TDP instead of the table */
  int n_cpus;                /* 0 = online CPUs (the utilisation denominator) */
  uint64_t ram_total_bytes;  /* 0 = MemTotal of /proc/meminfo */
} qlm_energy_opts;

typedef struct qlm_energy_component {
  int kind;           /* enum qlm_energy_kind */
  char method[224];   /* how the figure is obtained, e.g. "RAPL powercap: 2 package domains" */
  char note[512];     /* why a counter was not used ("" when nothing to say) */
} qlm_energy_component;

/* Cumulative figures since qlm_energy_open; differences between two reads give a phase. */
typedef struct qlm_energy_totals {
  double cpu_j, ram_j, gpu_j; /* joules */
  double wall_s;              /* monotonic seconds since open */
  double cpu_s;               /* process CPU seconds since open */
  uint64_t gpu_mem_peak;      /* bytes, largest device memory used seen by a poll (0 = no GPU) */
} qlm_energy_totals;

typedef struct qlm_energy qlm_energy;

/* Probe the sources. Never fails for a missing or unreadable counter (that becomes an estimate
 * with a note); fails only for out of memory. */
int qlm_energy_open(const qlm_energy_opts *o, qlm_energy **out, qlm_error *err);
void qlm_energy_close(qlm_energy *e);

/* Read every counter now and accumulate (thread-safe; the sampler thread calls it). */
void qlm_energy_poll(qlm_energy *e);
/* Poll, then copy the cumulative totals. */
void qlm_energy_read(qlm_energy *e, qlm_energy_totals *t);

const qlm_energy_component *qlm_energy_cpu(const qlm_energy *e);
const qlm_energy_component *qlm_energy_ram(const qlm_energy *e);
const qlm_energy_component *qlm_energy_gpu(const qlm_energy *e);

/* RAPL domains in use (per package sums): name ("package-0", "dram"...) and joules so far. */
int qlm_energy_n_domains(const qlm_energy *e);
double qlm_energy_domain_j(qlm_energy *e, int i, const char **name);

/* Facts for the outputs. */
const char *qlm_energy_cpu_model(const qlm_energy *e);
double qlm_energy_cpu_tdp(const qlm_energy *e);   /* W used by the estimate */
int qlm_energy_n_cpus(const qlm_energy *e);
uint64_t qlm_energy_ram_total(const qlm_energy *e);
double qlm_energy_ram_power(const qlm_energy *e); /* W of the RAM model */
int qlm_energy_gpu_count(const qlm_energy *e);
const char *qlm_energy_gpu_model(const qlm_energy *e); /* first GPU's name, "" when none */

/* The estimate's pieces, exposed for tests. */
double qlm_cpu_tdp_lookup(const char *model_name, const char **matched); /* 0 when not in the table */
double qlm_ram_power_codecarbon(uint64_t ram_bytes);                     /* W */
double qlm_cpu_energy_estimate(double tdp_w, int n_cpus, double cpu_seconds); /* J */

#endif
