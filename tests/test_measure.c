/* test_measure.c — meter, energy (RAPL on a fake powercap tree, NVML through a stub library,
 * the estimate), CO₂ table and formula, CodeCarbon-compatible outputs. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "measure/co2.h"
#include "measure/energy.h"
#include "measure/meter.h"
#include "testutil.h"

/* ---- fake powercap tree ---- */

static void put(const char *dir, const char *file, const char *text) {
  char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, file);
  tu_write_file(p, text, strlen(text));
}

static char *mkdomain(const char *root, const char *dom, const char *name, unsigned long long e, unsigned long long range) {
  char *d = malloc(512), t[64];
  snprintf(d, 512, "%s/%s", root, dom);
  assert_int_equal(mkdir(d, 0755), 0);
  put(d, "name", name);
  snprintf(t, sizeof t, "%llu\n", e);
  put(d, "energy_uj", t);
  snprintf(t, sizeof t, "%llu\n", range);
  put(d, "max_energy_range_uj", t);
  return d;
}

static void set_uj(const char *d, unsigned long long e) {
  char t[64];
  snprintf(t, sizeof t, "%llu\n", e);
  put(d, "energy_uj", t);
}

static void rm_rf(const char *path) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s' 2>/dev/null; rm -rf '%s'", path, path);
  assert_int_equal(system(cmd), 0);
}

/* Two packages (one wraps twice), a dram domain that wraps, and the domains that must not count:
 * core (inside the package), the control-type dir, an mmio duplicate. Joules are exact. */
static void test_rapl_wraparound(void **st) {
  (void)st;
  char *root = tu_tmpdir();
  char *p0 = mkdomain(root, "intel-rapl:0", "package-0", 900000, 1000000);
  char *core = mkdomain(root, "intel-rapl:0:0", "core", 5, 1000000);
  char *dram = mkdomain(root, "intel-rapl:0:1", "dram", 400000, 500000);
  char *p1 = mkdomain(root, "intel-rapl:1", "package-1", 5, 1000000);
  char *mmio = mkdomain(root, "intel-rapl-mmio:0", "package-0", 0, 1000000);
  char ctl[512];
  snprintf(ctl, sizeof ctl, "%s/intel-rapl", root);
  assert_int_equal(mkdir(ctl, 0755), 0);

  qlm_energy_opts o = {.powercap_root = root, .nvml_path = ""};
  qlm_energy *e;
  qlm_error err = {0};
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_int_equal(qlm_energy_cpu(e)->kind, QLM_ENERGY_MEASURED);
  assert_int_equal(qlm_energy_ram(e)->kind, QLM_ENERGY_MEASURED);
  assert_int_equal(qlm_energy_gpu(e)->kind, QLM_ENERGY_NONE);
  assert_non_null(strstr(qlm_energy_cpu(e)->method, "2 package"));
  assert_int_equal(qlm_energy_n_domains(e), 3);

  /* package-0: 900000 -> 950000 (+50000) -> 20000 (wrap: +70000) -> 120000 (+100000) -> 10 (wrap: +880010) */
  unsigned long long seq0[] = {950000, 20000, 120000, 10};
  unsigned long long seq1[] = {1005, 2005, 2005, 3005};       /* +3000 */
  unsigned long long seqd[] = {450000, 100000, 100001, 99999}; /* +50000 +150000 +1 +499998 */
  for (int i = 0; i < 4; i++) {
    set_uj(p0, seq0[i]);
    set_uj(p1, seq1[i]);
    set_uj(dram, seqd[i]);
    set_uj(core, 999999); /* never counted */
    set_uj(mmio, 999999);
    qlm_energy_poll(e);
  }
  qlm_energy_totals t;
  qlm_energy_read(e, &t);
  double cpu_uj = 50000 + 70000 + 100000 + 880010 + 3000;
  double dram_uj = 50000 + 150000 + 1 + 499998;
  assert_true(fabs(t.cpu_j - cpu_uj * 1e-6) < 1e-12);
  assert_true(fabs(t.ram_j - dram_uj * 1e-6) < 1e-12);
  /* per-package sums */
  const char *name;
  double j0 = qlm_energy_domain_j(e, 0, &name);
  assert_string_equal(name, "package-0");
  assert_true(fabs(j0 - 1100010e-6) < 1e-12);
  double j1 = qlm_energy_domain_j(e, 2, &name);
  assert_string_equal(name, "package-1");
  assert_true(fabs(j1 - 3000e-6) < 1e-12);
  qlm_energy_close(e);
  rm_rf(root);
  free(root), free(p0), free(core), free(dram), free(p1), free(mmio);
}

/* Counters that exist but cannot be read: estimate, with the file and the reason. */
static void test_rapl_unreadable(void **st) {
  (void)st;
  char *root = tu_tmpdir();
  char *p0 = mkdomain(root, "intel-rapl:0", "package-0", 1, 1000000);
  char f[600];
  snprintf(f, sizeof f, "%s/energy_uj", p0);
  if (geteuid() == 0) { /* root reads mode-000 files: make the read fail another way */
    assert_int_equal(unlink(f), 0);
    assert_int_equal(mkdir(f, 0755), 0);
  } else {
    assert_int_equal(chmod(f, 0), 0);
  }
  qlm_energy_opts o = {.powercap_root = root, .nvml_path = "", .cpu_tdp_w = 100};
  qlm_energy *e;
  qlm_error err = {0};
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_int_equal(qlm_energy_cpu(e)->kind, QLM_ENERGY_ESTIMATED);
  assert_non_null(strstr(qlm_energy_cpu(e)->note, "cannot be read"));
  assert_non_null(strstr(qlm_energy_cpu(e)->note, "intel-rapl:0/energy_uj"));
  assert_non_null(strstr(qlm_energy_cpu(e)->method, "TDP 100 W (--cpu-tdp)"));
  assert_int_equal(qlm_energy_n_domains(e), 0);
  qlm_energy_close(e);

  /* No powercap at all: estimate, saying there is no counter. */
  o.powercap_root = "/nonexistent/powercap";
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_int_equal(qlm_energy_cpu(e)->kind, QLM_ENERGY_ESTIMATED);
  assert_int_equal(qlm_energy_ram(e)->kind, QLM_ENERGY_ESTIMATED);
  assert_non_null(strstr(qlm_energy_cpu(e)->note, "no RAPL"));
  qlm_energy_close(e);
  rm_rf(root);
  free(root), free(p0);
}

/* NVML through the dlopen path: a stub library with a total-energy counter, then one with power
 * readings only, then no library at all. */
static void test_nvml_stub(void **st) {
  (void)st;
  void *h = dlopen(QLM_NVML_STUB, RTLD_NOW | RTLD_LOCAL);
  assert_non_null(h);
  void (*set)(int, int, unsigned long long, unsigned int);
  *(void **)&set = dlsym(h, "nvml_stub_set");
  assert_non_null(set);

  set(1, 1, 1000, 0);
  qlm_energy_opts o = {.powercap_root = "/nonexistent", .nvml_path = QLM_NVML_STUB};
  qlm_energy *e;
  qlm_error err = {0};
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_int_equal(qlm_energy_gpu(e)->kind, QLM_ENERGY_MEASURED);
  assert_non_null(strstr(qlm_energy_gpu(e)->method, "1 by total energy counter"));
  assert_int_equal(qlm_energy_gpu_count(e), 1);
  assert_string_equal(qlm_energy_gpu_model(e), "Stub GPU");
  set(1, 1, 251000, 0); /* +250000 mJ = 250 J */
  qlm_energy_totals t;
  qlm_energy_read(e, &t);
  assert_true(fabs(t.gpu_j - 250.0) < 1e-9);
  qlm_energy_close(e);

  /* power only: 100 W constant, integrated from open to the read */
  set(1, 0, 0, 100000);
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_non_null(strstr(qlm_energy_gpu(e)->method, "1 by integrated power"));
  struct timespec ts = {0, 50 * 1000 * 1000};
  nanosleep(&ts, NULL);
  qlm_energy_poll(e);
  nanosleep(&ts, NULL);
  qlm_energy_read(e, &t);
  assert_true(t.wall_s >= 0.1);
  assert_true(fabs(t.gpu_j - 100.0 * t.wall_s) < 1e-9 * 100.0 * t.wall_s + 1e-12);
  qlm_energy_close(e);

  /* no GPU on the stub: none, with the reason */
  set(0, 1, 0, 0);
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_int_equal(qlm_energy_gpu(e)->kind, QLM_ENERGY_NONE);
  assert_non_null(strstr(qlm_energy_gpu(e)->note, "no GPU"));
  qlm_energy_close(e);
  dlclose(h);

  /* no NVIDIA library: runs, GPU none, says so */
  o.nvml_path = "/nonexistent/libnvidia-ml.so.1";
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  assert_int_equal(qlm_energy_gpu(e)->kind, QLM_ENERGY_NONE);
  assert_non_null(strstr(qlm_energy_gpu(e)->note, "no NVIDIA GPU energy"));
  qlm_energy_read(e, &t);
  assert_true(t.gpu_j == 0);
  qlm_energy_close(e);
}

static double cpu_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}

static volatile double g_sink;
/* Busy for `seconds` of this thread's CPU time: then at least that much wall time has passed too
 * (the process's CPU time would not do: the meter's sampler thread adds to it). */
static double thread_cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void burn(double seconds) {
  double t0 = thread_cpu_now(), x = 0;
  while (thread_cpu_now() - t0 < seconds)
    for (int i = 0; i < 100000; i++) x += 1e-9 * i;
  g_sink = x;
}

/* The estimate: known TDP x utilisation x time; CodeCarbon's RAM model. */
static void test_estimate(void **st) {
  (void)st;
  /* 100 W TDP, 4 CPUs, 36 CPU-seconds = 9 s at 100 % of the package = 900 J = 2.5e-4 kWh */
  assert_true(fabs(qlm_cpu_energy_estimate(100, 4, 36) - 900.0) < 1e-9);
  assert_true(fabs(qlm_j_to_kwh(qlm_cpu_energy_estimate(100, 4, 36)) - 2.5e-4) < 1e-15);
  /* CodeCarbon v3 examples: 8 GB -> 10 W, 32 GB -> 20 W, 64 GB -> 20 W, 128 GB -> 4*5 + 4*4.5 = 38 W */
  assert_true(qlm_ram_power_codecarbon(1000000000ull) == 10.0);
  assert_true(qlm_ram_power_codecarbon(8000000000ull) == 10.0);
  assert_true(qlm_ram_power_codecarbon(32000000000ull) == 20.0);
  assert_true(qlm_ram_power_codecarbon(64000000000ull) == 20.0);
  assert_true(fabs(qlm_ram_power_codecarbon(128000000000ull) - 38.0) < 1e-9);
  const char *match;
  assert_true(qlm_cpu_tdp_lookup("AMD EPYC 7763 64-Core Processor", &match) == 280);
  assert_string_equal(match, "EPYC 7763");
  assert_true(qlm_cpu_tdp_lookup("AMD EPYC", &match) == 0);

  /* wired: 2 CPUs, 100 W, burn ~0.3 CPU-s -> ~15 J; RAM 32 GB -> 20 W x wall */
  qlm_energy_opts o = {.powercap_root = "/nonexistent", .nvml_path = "", .cpu_tdp_w = 100, .n_cpus = 2,
                       .ram_total_bytes = 32000000000ull};
  qlm_energy *e;
  qlm_error err = {0};
  assert_int_equal(qlm_energy_open(&o, &e, &err), 0);
  double c0 = cpu_now();
  burn(0.3);
  qlm_energy_totals t;
  qlm_energy_read(e, &t);
  double c1 = cpu_now();
  assert_true(t.cpu_s > 0.29 && t.cpu_s <= c1 - c0 + 0.02);
  assert_true(fabs(t.cpu_j - 100.0 * t.cpu_s / 2) < 1e-9);
  assert_true(fabs(t.ram_j - 20.0 * t.wall_s) < 1e-9);
  assert_non_null(strstr(qlm_energy_ram(e)->method, "CodeCarbon v3"));
  qlm_energy_close(e);
}

/* CO2 = kWh x intensity x PUE; every table row has a source and a year. */
static void test_co2(void **st) {
  (void)st;
  static const struct { const char *iso; double g; } seed[] = {{"BEL", 153.14}, {"DEU", 333.77}, {"FRA", 33.44}, {"NLD", 262.93}};
  for (int i = 0; i < 4; i++) {
    const qlm_grid *g = qlm_grid_find(seed[i].iso);
    assert_non_null(g);
    assert_true(g->g_per_kwh == seed[i].g);
    assert_int_equal(g->year, 2024);
  }
  const char *need[] = {"ESP", "BEL", "DEU", "FRA", "NLD", "USA", "GBR", "CHN", "IND", "WLD"};
  for (int i = 0; i < 10; i++) assert_non_null(qlm_grid_find(need[i]));
  int rows = 0;
  for (const qlm_grid *g = qlm_grid_table(); g->iso3; g++, rows++) {
    assert_int_equal(strlen(g->iso3), 3);
    for (int k = 0; k < 3; k++) assert_true(g->iso3[k] >= 'A' && g->iso3[k] <= 'Z');
    assert_non_null(g->source);
    assert_true(strlen(g->source) > 10);
    assert_true(g->year >= 2015 && g->year <= 2025);
    assert_true(g->g_per_kwh > 0 && g->g_per_kwh < 1200);
  }
  assert_true(rows >= 10);
  /* 2 kWh in Germany, PUE 1: 667.54 g; France PUE 1.5: 2 x 33.44 x 1.5 = 100.32 g; Spain 0.5 kWh 87.025 g */
  assert_true(fabs(qlm_co2_grams(2.0, qlm_grid_find("deu")->g_per_kwh, 1.0) - 667.54) < 1e-9);
  assert_true(fabs(qlm_co2_grams(2.0, qlm_grid_find("FRA")->g_per_kwh, 1.5) - 100.32) < 1e-9);
  assert_true(fabs(qlm_co2_grams(0.5, qlm_grid_find("ESP")->g_per_kwh, 1.0) - 87.025) < 1e-9);
  qlm_grid_choice c;
  qlm_error err = {0};
  assert_int_equal(qlm_grid_choose(NULL, -1, &c, &err), 0);
  assert_string_equal(c.iso3, "WLD");
  assert_int_equal(qlm_grid_choose("nld", -1, &c, &err), 0);
  assert_true(c.g_per_kwh == 262.93);
  assert_non_null(strstr(c.source, "2024"));
  assert_int_equal(qlm_grid_choose("NLD", 50, &c, &err), 0);
  assert_true(c.g_per_kwh == 50);
  assert_int_equal(qlm_grid_choose("XYZ", -1, &c, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "XYZ"));
}

/* A deliberate 64 MiB allocation, touched, is seen by the phase peak within 5 %. */
static void test_peak_memory(void **st) {
  (void)st;
  qlm_meter_opts o = qlm_meter_default_opts();
  o.no_energy = true;
  qlm_meter *m;
  qlm_error err = {0};
  assert_int_equal(qlm_meter_new(&o, &m, &err), 0);
  const size_t sz = 64u << 20;
  qlm_meter_begin(m, "alloc");
  unsigned char *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  for (size_t i = 0; i < sz; i += 4096) p[i] = (unsigned char)i;
  qlm_meter_end(m); /* still allocated: seen in either peak mode */
  assert_int_equal(munmap(p, sz), 0);
  const qlm_phase *ph = &m->phases[0];
  double grown = (double)(ph->peak_rss - ph->rss_start);
  assert_true(fabs(grown - (double)sz) < 0.05 * (double)sz);

  if (m->hwm_reset) { /* a spike freed before the phase ends: only the HWM reset sees it */
    qlm_meter_begin(m, "spike");
    p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    for (size_t i = 0; i < sz; i += 4096) p[i] = 1;
    assert_int_equal(munmap(p, sz), 0);
    qlm_meter_end(m);
    ph = &m->phases[1];
    grown = (double)(ph->peak_rss - ph->rss_start);
    assert_true(fabs(grown - (double)sz) < 0.05 * (double)sz);
  } else {
    print_message("note: /proc/self/clear_refs refused; per-phase peaks are sampled\n");
  }
  qlm_meter_finish(m);
  qlm_phase t;
  qlm_meter_total(m, &t);
  assert_true(t.peak_rss >= ph->peak_rss);
  qlm_meter_free(m);
}

/* CodeCarbon's emissions.csv columns, as listed in its v3.3.0 EmissionsData (independent copy). */
static const char CODECARBON_HEADER[] =
    "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,cpu_power,gpu_power,ram_power,"
    "cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,country_name,country_iso_code,region,"
    "cloud_provider,cloud_region,os,python_version,codecarbon_version,cpu_count,cpu_model,gpu_count,gpu_model,"
    "longitude,latitude,ram_total_size,tracking_mode,cpu_utilization_percent,gpu_utilization_percent,"
    "ram_utilization_percent,ram_used_gb,on_cloud,pue,wue";

/* Fields of one CSV line (RFC 4180 quotes). */
static int csv_fields(const char *line, char out[][512], int max) {
  int n = 0;
  const char *c = line;
  while (n < max) {
    size_t k = 0;
    if (*c == '"') {
      for (c++; *c && !(*c == '"' && c[1] != '"'); c++) {
        if (*c == '"') c++;
        if (k < 511) out[n][k++] = *c;
      }
      if (*c == '"') c++;
    } else {
      while (*c && *c != ',' && *c != '\n') {
        if (k < 511) out[n][k++] = *c;
        c++;
      }
    }
    out[n++][k] = 0;
    if (*c != ',') break;
    c++;
  }
  return n;
}

/* energy_consumed of a phase as CodeCarbon writes it: kWh x PUE. */
static double g_pue = 1.5;
static double kwh_of(const qlm_phase *p) { return qlm_j_to_kwh(qlm_phase_energy_j(p)) * g_pue; }

static void test_outputs(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  qlm_meter_opts o = qlm_meter_default_opts();
  o.command = "test";
  o.country = "FRA";
  o.pue = 1.5;
  o.interval_s = 0.05;
  o.energy = (qlm_energy_opts){.powercap_root = "/nonexistent", .nvml_path = "", .cpu_tdp_w = 100, .n_cpus = 2,
                               .ram_total_bytes = 16000000000ull};
  qlm_meter *m;
  qlm_error err = {0};
  assert_int_equal(qlm_meter_new(&o, &m, &err), 0);
  qlm_meter_begin(m, QLM_PHASE_LOAD);
  burn(0.1);
  qlm_meter_begin(m, QLM_PHASE_GENERATE);
  burn(0.2);
  qlm_meter_add_tokens(m, 40);
  qlm_meter_begin(m, QLM_PHASE_LOAD); /* same name again: added to the first */
  burn(0.05);
  qlm_meter_finish(m);
  assert_int_equal(m->n_phases, 2);
  assert_int_equal(m->phases[0].count, 2);
  const qlm_phase *g = &m->phases[1];
  assert_true(g->wall_s >= 0.2);
  assert_true(g->user_s + g->sys_s >= 0.19);
  assert_int_equal(g->tokens, 40);
  /* energy = TDP x CPU-s / 2 + 10 W (16 GB: 2 DIMMs) x wall */
  assert_true(fabs(g->cpu_j - 50.0 * (g->user_s + g->sys_s)) < 0.05 * g->cpu_j + 0.05);
  assert_true(fabs(g->ram_j - 10.0 * g->wall_s) < 1e-3 * 10.0 * g->wall_s); /* edges read microseconds apart */
  double kwh = qlm_j_to_kwh(qlm_phase_energy_j(g));
  assert_true(fabs(qlm_phase_co2_g(m, g) - kwh * 33.44 * 1.5) < 1e-12);
  assert_true(qlm_meter_overhead(m) < 0.01);
  qlm_meter_print_summary(m, stderr);

  char csv[512], json[512];
  snprintf(csv, sizeof csv, "%s/emissions.csv", dir);
  snprintf(json, sizeof json, "%s/run.json", dir);
  assert_int_equal(qlm_meter_write_csv(m, csv, &err), 0);
  assert_int_equal(qlm_meter_write_csv(m, csv, &err), 0); /* appended */
  assert_int_equal(qlm_meter_write_json(m, json, &err), 0);
  FILE *f = fopen(csv, "r");
  assert_non_null(f);
  static char line[8192], fields[64][512];
  assert_non_null(fgets(line, sizeof line, f));
  line[strcspn(line, "\n")] = 0;
  assert_string_equal(line, CODECARBON_HEADER);
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    assert_int_equal(csv_fields(line, fields, 64), 38);
    assert_string_equal(fields[2], m->run_id);
    assert_string_equal(fields[3], rows % 2 ? "test/generate" : "test/load");
    assert_string_equal(fields[16], "FRA");
    assert_non_null(strstr(fields[30], "cpu estimated: TDP 100 W"));
    const qlm_phase *p = &m->phases[rows % 2];
    assert_true(fabs(atof(fields[13]) - kwh_of(p)) < 1e-9);
    rows++;
  }
  fclose(f);
  assert_int_equal(rows, 4);
  (void)kwh;

  char *text = NULL;
  f = fopen(json, "r");
  assert_non_null(f);
  text = calloc(1, 1 << 16);
  assert_true(fread(text, 1, (1 << 16) - 1, f) > 0);
  fclose(f);
  cJSON *root = cJSON_Parse(text);
  assert_non_null(root);
  cJSON *src = cJSON_GetObjectItem(root, "energy_sources");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(src, "cpu"), "kind")->valuestring, "estimated");
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(src, "gpu"), "kind")->valuestring, "none");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(root, "phases")), 2);
  cJSON *w = cJSON_GetObjectItem(root, "co2_g_by_country");
  double e_total = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "total"), "energy_kwh")->valuedouble;
  assert_true(fabs(cJSON_GetObjectItem(w, "DEU")->valuedouble - e_total * 333.77 * 1.5) < 1e-9);
  cJSON_Delete(root);
  free(text);

  /* a file that is not an emissions.csv is not appended to */
  tu_write_file(csv, "a,b\n1,2\n", 8);
  assert_int_equal(qlm_meter_write_csv(m, csv, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "emissions.csv"));
  qlm_meter_free(m);
  rm_rf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rapl_wraparound), cmocka_unit_test(test_rapl_unreadable), cmocka_unit_test(test_nvml_stub),
      cmocka_unit_test(test_estimate),        cmocka_unit_test(test_co2),             cmocka_unit_test(test_peak_memory),
      cmocka_unit_test(test_outputs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
