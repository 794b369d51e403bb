/* energy.c — RAPL (powercap), NVML (dlopen) and the TDP/RAM estimate; see energy.h. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "measure/energy.h"

#define MAX_RAPL 32
#define MAX_GPU 16

enum { DOM_PACKAGE, DOM_DRAM, DOM_PSYS };

typedef struct rapl_domain {
  char path[512];        /* <root>/intel-rapl:N[:M] */
  char name[32];         /* contents of `name` */
  int kind;              /* DOM_* */
  uint64_t range_uj;     /* max_energy_range_uj: the counter wraps to 0 there */
  uint64_t last_uj;      /* previous reading */
  double joules;         /* accumulated */
} rapl_domain;

/* The few NVML entry points we use (types as in nvml.h: nvmlReturn_t is an int, 0 = success). */
typedef struct nvml_memory { unsigned long long total, free, used; } nvml_memory;
typedef struct nvml_api {
  void *lib;
  int (*init)(void);
  int (*shutdown)(void);
  int (*count)(unsigned int *);
  int (*handle)(unsigned int, void **);
  int (*name)(void *, char *, unsigned int);
  int (*energy)(void *, unsigned long long *); /* mJ */
  int (*power)(void *, unsigned int *);        /* mW */
  int (*memory)(void *, nvml_memory *);
} nvml_api;

typedef struct gpu_dev {
  void *h;
  int has_counter;            /* total energy counter works */
  unsigned long long last_mj; /* previous counter reading */
  double last_w;              /* previous power sample (power mode) */
  double joules;
} gpu_dev;

struct qlm_energy {
  pthread_mutex_t mu;
  qlm_energy_component cpu, ram, gpu;
  rapl_domain rapl[MAX_RAPL];
  int n_rapl;
  nvml_api nv;
  gpu_dev gpus[MAX_GPU];
  int n_gpu;
  char gpu_model[96];
  uint64_t gpu_mem_peak;
  char cpu_model[128];
  double tdp_w;          /* estimate's TDP */
  int n_cpus;
  uint64_t ram_total;
  double ram_w;          /* RAM model power */
  struct timespec t0;
  double cpu0_s;         /* process CPU time at open */
  double last_wall, last_cpu; /* previous poll (for the power-sample integration) */
  double cpu_j, ram_j;   /* measured CPU/DRAM joules (RAPL) */
};

const char *qlm_energy_kind_name(int kind) {
  return kind == QLM_ENERGY_MEASURED ? "measured" : kind == QLM_ENERGY_ESTIMATED ? "estimated" : "none";
}

static double ts_s(const struct timespec *t) { return (double)t->tv_sec + 1e-9 * (double)t->tv_nsec; }

static double proc_cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return ts_s(&t);
}

static double wall_since(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return ts_s(&t) - ts_s(t0);
}

/* ---- the estimate ---- */

/* Manufacturer TDP (base power) of common CPUs, matched as substrings of /proc/cpuinfo's
 * "model name"; the more specific names come first. Source: vendor spec sheets
 * (ark.intel.com, amd.com product pages). */
static const struct { const char *match; double tdp_w; } g_tdp[] = {
    {"EPYC 9654", 360}, {"EPYC 9554", 360}, {"EPYC 9454", 290}, {"EPYC 7763", 280}, {"EPYC 7742", 225},
    {"EPYC 7713", 225}, {"EPYC 7543", 225}, {"EPYC 7502", 180}, {"EPYC 7452", 155}, {"EPYC 7313", 155},
    {"Threadripper 3990X", 280}, {"Threadripper PRO 5995WX", 280},
    {"Ryzen 9 7950X", 170}, {"Ryzen 9 5950X", 105}, {"Ryzen 9 5900X", 105}, {"Ryzen 7 5800X", 105},
    {"Ryzen 7 7700X", 105}, {"Ryzen 5 5600X", 65},
    {"Platinum 8480", 350}, {"Platinum 8380", 270}, {"Platinum 8358", 250}, {"Platinum 8280", 205},
    {"Platinum 8259CL", 210}, {"Gold 6348", 235}, {"Gold 6338", 205}, {"Gold 6248", 150}, {"Gold 6230", 125},
    {"Gold 5218", 125}, {"Silver 4214", 85}, {"E5-2698 v4", 135}, {"E5-2690 v4", 135}, {"E5-2686 v4", 145},
    {"i9-14900K", 125}, {"i9-13900K", 125}, {"i9-12900K", 125}, {"i7-13700K", 125}, {"i7-12700K", 125},
    {"i5-13600K", 125}, {"i5-12600K", 125}, {"i7-10700K", 125}, {"i7-9700K", 95}, {"i7-8700K", 95},
    {"i7-8700", 65}, {"i5-8400", 65}, {"i7-1165G7", 28}, {"i7-1185G7", 28}, {"i5-1135G7", 28},
};
#define GENERIC_TDP_W 85.0 /* CodeCarbon's POWER_CONSTANT for an unknown CPU */

double qlm_cpu_tdp_lookup(const char *model_name, const char **matched) {
  if (matched) *matched = NULL;
  if (!model_name) return 0;
  for (size_t i = 0; i < sizeof g_tdp / sizeof g_tdp[0]; i++)
    if (strstr(model_name, g_tdp[i].match)) {
      if (matched) *matched = g_tdp[i].match;
      return g_tdp[i].tdp_w;
    }
  return 0;
}

double qlm_ram_power_codecarbon(uint64_t ram_bytes) {
  double gb = (double)ram_bytes / 1e9;
  int dimms = gb <= 2 ? 1 : gb <= 16 ? 2 : gb <= 64 ? 4 : gb <= 128 ? 8 : (int)ceil(gb / 64.0);
  if (dimms > 32) dimms = 32;
  double w = 0;
  for (int d = 1; d <= dimms; d++) w += 5.0 * (d <= 4 ? 1.0 : d <= 8 ? 0.9 : d <= 16 ? 0.8 : 0.7);
  return w < 10.0 ? 10.0 : w;
}

double qlm_cpu_energy_estimate(double tdp_w, int n_cpus, double cpu_seconds) {
  return n_cpus > 0 ? tdp_w * cpu_seconds / (double)n_cpus : 0;
}

/* ---- small file helpers ---- */

/* Read a small text file into buf (NUL-terminated, trailing newline cut). Returns 0 or errno. */
static int read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n = read(fd, buf, cap - 1);
  int e = n < 0 ? errno : 0;
  close(fd);
  if (e) return e;
  buf[n] = 0;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
  return 0;
}

static int read_u64(const char *path, uint64_t *v) {
  char buf[64], *end;
  int e = read_small(path, buf, sizeof buf);
  if (e) return e;
  errno = 0;
  unsigned long long x = strtoull(buf, &end, 10);
  if (errno || end == buf || *end) return EINVAL;
  *v = x;
  return 0;
}

static void cpu_model_name(char *out, size_t cap) {
  snprintf(out, cap, "unknown CPU");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    char *c = strchr(line, ':');
    if (strncmp(line, "model name", 10) == 0 && c) {
      c++;
      while (*c == ' ' || *c == '\t') c++;
      c[strcspn(c, "\n")] = 0;
      snprintf(out, cap, "%s", c);
      break;
    }
  }
  fclose(f);
}

static uint64_t mem_total(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) break;
  fclose(f);
  return (uint64_t)kb * 1024;
}

/* ---- RAPL ---- */

/* "intel-rapl:N" -> 1, "intel-rapl:N:M" -> 2, anything else (mmio, the control dir) -> 0. */
static int rapl_level(const char *d) {
  if (strncmp(d, "intel-rapl:", 11) != 0) return 0;
  const char *p = d + 11;
  int colons = 0;
  for (; *p; p++) {
    if (*p == ':') colons++;
    else if (*p < '0' || *p > '9') return 0;
  }
  return colons == 0 ? 1 : colons == 1 ? 2 : 0;
}

static int cmp_dirent(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Find the domains; on an unreadable counter keep none and explain in e->cpu.note. */
static void rapl_probe(qlm_energy *e, const char *root) {
  DIR *d = opendir(root);
  if (!d) {
    snprintf(e->cpu.note, sizeof e->cpu.note, "%s: %s (no RAPL powercap counters)", root, strerror(errno));
    return;
  }
  char *names[128];
  int n = 0, n_mmio = 0;
  struct dirent *de;
  while ((de = readdir(d)) && n < 128) {
    if (strncmp(de->d_name, "intel-rapl-mmio:", 16) == 0) n_mmio++;
    if (rapl_level(de->d_name) && (names[n] = strdup(de->d_name))) n++;
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], cmp_dirent);
  rapl_domain psys[4];
  int n_psys = 0, bad = 0;
  for (int i = 0; i < n; i++) {
    rapl_domain r = {0};
    char p[600];
    snprintf(r.path, sizeof r.path, "%s/%s", root, names[i]);
    snprintf(p, sizeof p, "%s/name", r.path);
    if (read_small(p, r.name, sizeof r.name)) continue;
    if (strncmp(r.name, "package", 7) == 0) r.kind = DOM_PACKAGE;
    else if (strcmp(r.name, "dram") == 0) r.kind = DOM_DRAM;
    else if (strcmp(r.name, "psys") == 0) r.kind = DOM_PSYS;
    else continue; /* core, uncore: already inside the package */
    snprintf(p, sizeof p, "%s/energy_uj", r.path);
    int err = read_u64(p, &r.last_uj);
    if (!err) {
      snprintf(p, sizeof p, "%s/max_energy_range_uj", r.path);
      err = read_u64(p, &r.range_uj);
    }
    if (err) {
      if (!bad)
        snprintf(e->cpu.note, sizeof e->cpu.note,
                 "RAPL counters exist but cannot be read: %.240s: %s%s", p, strerror(err),
                 err == EACCES || err == EPERM ? " (run as root or: sudo chmod -R a+r /sys/class/powercap/*)" : "");
      bad = 1;
      continue;
    }
    if (r.kind == DOM_PSYS) {
      if (n_psys < 4) psys[n_psys++] = r;
    } else if (e->n_rapl < MAX_RAPL) {
      e->rapl[e->n_rapl++] = r;
    }
  }
  for (int i = 0; i < n; i++) free(names[i]);
  int n_pkg = 0;
  for (int i = 0; i < e->n_rapl; i++) n_pkg += e->rapl[i].kind == DOM_PACKAGE;
  if (bad) { /* a partial set would undercount: use none of it */
    e->n_rapl = 0;
    return;
  }
  if (!n_pkg) { /* psys (whole SoC) only when there is no package domain */
    for (int i = 0; i < n_psys && e->n_rapl < MAX_RAPL; i++) e->rapl[e->n_rapl++] = psys[i];
    n_pkg = n_psys;
  }
  if (!n_pkg) {
    e->n_rapl = 0;
    if (!e->cpu.note[0])
      snprintf(e->cpu.note, sizeof e->cpu.note, "%s: no RAPL package domain%s", root, n_mmio ? " (only intel-rapl-mmio)" : "");
  }
}

static void rapl_poll(qlm_energy *e) {
  char p[600];
  for (int i = 0; i < e->n_rapl; i++) {
    rapl_domain *r = &e->rapl[i];
    uint64_t now;
    snprintf(p, sizeof p, "%s/energy_uj", r->path);
    if (read_u64(p, &now)) continue; /* a transient failure: the next poll catches up */
    uint64_t delta = now >= r->last_uj ? now - r->last_uj : now + r->range_uj - r->last_uj;
    if (now < r->last_uj && r->range_uj < r->last_uj) delta = 0; /* inconsistent range: skip */
    r->last_uj = now;
    r->joules += 1e-6 * (double)delta;
  }
}

/* ---- NVML ---- */

static void nvml_probe(qlm_energy *e, const char *path) {
  if (path && !*path) {
    snprintf(e->gpu.note, sizeof e->gpu.note, "NVML not searched");
    return;
  }
  const char *lib = path ? path : "libnvidia-ml.so.1";
  nvml_api *nv = &e->nv;
  if (!(nv->lib = dlopen(lib, RTLD_NOW | RTLD_LOCAL))) {
    const char *why = dlerror();
    snprintf(e->gpu.note, sizeof e->gpu.note, "no NVIDIA GPU energy: %s", why ? why : lib);
    return;
  }
  *(void **)&nv->init = dlsym(nv->lib, "nvmlInit_v2");
  *(void **)&nv->shutdown = dlsym(nv->lib, "nvmlShutdown");
  *(void **)&nv->count = dlsym(nv->lib, "nvmlDeviceGetCount_v2");
  *(void **)&nv->handle = dlsym(nv->lib, "nvmlDeviceGetHandleByIndex_v2");
  *(void **)&nv->name = dlsym(nv->lib, "nvmlDeviceGetName");
  *(void **)&nv->energy = dlsym(nv->lib, "nvmlDeviceGetTotalEnergyConsumption");
  *(void **)&nv->power = dlsym(nv->lib, "nvmlDeviceGetPowerUsage");
  *(void **)&nv->memory = dlsym(nv->lib, "nvmlDeviceGetMemoryInfo");
  unsigned int n = 0;
  const char *fail = !nv->init || !nv->shutdown || !nv->count || !nv->handle ? "missing nvmlInit_v2/nvmlDeviceGetCount_v2"
                     : nv->init() != 0                                       ? "nvmlInit_v2 failed"
                     : nv->count(&n) != 0                                    ? "nvmlDeviceGetCount_v2 failed"
                     : n == 0                                                ? "no GPU"
                                                                             : NULL;
  if (fail) {
    snprintf(e->gpu.note, sizeof e->gpu.note, "%s: %s; no GPU energy", lib, fail);
    if (nv->init && nv->shutdown && strcmp(fail, "nvmlInit_v2 failed") != 0 && !strstr(fail, "missing")) nv->shutdown();
    dlclose(nv->lib);
    memset(nv, 0, sizeof *nv);
    return;
  }
  int n_counter = 0;
  for (unsigned int i = 0; i < n && e->n_gpu < MAX_GPU; i++) {
    gpu_dev g = {0};
    if (nv->handle(i, &g.h) != 0) continue;
    g.has_counter = nv->energy && nv->energy(g.h, &g.last_mj) == 0;
    unsigned int mw;
    if (!g.has_counter && !(nv->power && nv->power(g.h, &mw) == 0)) continue; /* neither: cannot measure */
    if (!g.has_counter) g.last_w = 1e-3 * mw;
    if (e->n_gpu == 0 && nv->name) nv->name(g.h, e->gpu_model, sizeof e->gpu_model);
    n_counter += g.has_counter;
    e->gpus[e->n_gpu++] = g;
  }
  if (!e->n_gpu) {
    snprintf(e->gpu.note, sizeof e->gpu.note, "%s: %u GPU(s) but neither energy counter nor power reading", lib, n);
    return;
  }
  e->gpu.kind = QLM_ENERGY_MEASURED;
  snprintf(e->gpu.method, sizeof e->gpu.method, "NVML (%s): %d GPU(s), %d by total energy counter, %d by integrated power samples",
           lib, e->n_gpu, n_counter, e->n_gpu - n_counter);
}

static void nvml_poll(qlm_energy *e, double dt) {
  for (int i = 0; i < e->n_gpu; i++) {
    gpu_dev *g = &e->gpus[i];
    if (g->has_counter) {
      unsigned long long mj;
      if (e->nv.energy(g->h, &mj) == 0) { /* on error keep the last value: delta 0, as CodeCarbon */
        if (mj >= g->last_mj) g->joules += 1e-3 * (double)(mj - g->last_mj);
        g->last_mj = mj;
      }
    } else {
      unsigned int mw;
      if (e->nv.power(g->h, &mw) == 0) {
        double w = 1e-3 * mw;
        g->joules += 0.5 * (w + g->last_w) * dt;
        g->last_w = w;
      }
    }
    nvml_memory m;
    if (e->nv.memory && e->nv.memory(g->h, &m) == 0 && m.used > e->gpu_mem_peak) e->gpu_mem_peak = m.used;
  }
}

/* ---- open / poll / read ---- */

int qlm_energy_open(const qlm_energy_opts *o, qlm_energy **out, qlm_error *err) {
  qlm_energy_opts def = {0};
  if (!o) o = &def;
  qlm_energy *e = qlm_calloc(1, sizeof *e, "energy meter", err);
  if (!e) return QLM_ENOMEM;
  pthread_mutex_init(&e->mu, NULL);
  clock_gettime(CLOCK_MONOTONIC, &e->t0);
  e->cpu0_s = proc_cpu_s();
  cpu_model_name(e->cpu_model, sizeof e->cpu_model);
  long nc = sysconf(_SC_NPROCESSORS_ONLN);
  e->n_cpus = o->n_cpus > 0 ? o->n_cpus : nc > 0 ? (int)nc : 1;
  e->ram_total = o->ram_total_bytes ? o->ram_total_bytes : mem_total();
  e->ram_w = qlm_ram_power_codecarbon(e->ram_total);

  rapl_probe(e, o->powercap_root ? o->powercap_root : "/sys/class/powercap");
  int n_pkg = 0, n_dram = 0, n_psys = 0;
  for (int i = 0; i < e->n_rapl; i++) {
    n_dram += e->rapl[i].kind == DOM_DRAM;
    n_pkg += e->rapl[i].kind != DOM_DRAM;
    n_psys += e->rapl[i].kind == DOM_PSYS;
  }
  if (n_pkg) {
    e->cpu.kind = QLM_ENERGY_MEASURED;
    snprintf(e->cpu.method, sizeof e->cpu.method, "RAPL powercap energy_uj: %d %s domain(s), summed (machine-wide)", n_pkg,
             n_psys ? "psys" : "package");
  } else {
    const char *matched;
    double tdp = o->cpu_tdp_w > 0 ? o->cpu_tdp_w : qlm_cpu_tdp_lookup(e->cpu_model, &matched);
    e->tdp_w = tdp > 0 ? tdp : GENERIC_TDP_W;
    e->cpu.kind = QLM_ENERGY_ESTIMATED;
    snprintf(e->cpu.method, sizeof e->cpu.method, "TDP %.0f W (%s) x process CPU utilisation over %d CPUs", e->tdp_w,
             o->cpu_tdp_w > 0 ? "--cpu-tdp" : tdp > 0 ? "table" : "CPU not in table: CodeCarbon's generic 85 W", e->n_cpus);
  }
  if (n_dram) {
    e->ram.kind = QLM_ENERGY_MEASURED;
    snprintf(e->ram.method, sizeof e->ram.method, "RAPL powercap energy_uj: %d dram domain(s)", n_dram);
  } else {
    e->ram.kind = QLM_ENERGY_ESTIMATED;
    snprintf(e->ram.method, sizeof e->ram.method, "CodeCarbon v3 RAM model: %.1f GB installed -> %.1f W x wall time",
             (double)e->ram_total / 1e9, e->ram_w);
  }
  nvml_probe(e, o->nvml_path);
  *out = e;
  return QLM_OK;
}

void qlm_energy_close(qlm_energy *e) {
  if (!e) return;
  if (e->nv.lib) {
    e->nv.shutdown();
    dlclose(e->nv.lib);
  }
  pthread_mutex_destroy(&e->mu);
  free(e);
}

static void poll_locked(qlm_energy *e) {
  double wall = wall_since(&e->t0);
  double dt = wall - e->last_wall;
  e->last_wall = wall;
  e->last_cpu = proc_cpu_s() - e->cpu0_s;
  rapl_poll(e);
  nvml_poll(e, dt > 0 ? dt : 0);
}

void qlm_energy_poll(qlm_energy *e) {
  pthread_mutex_lock(&e->mu);
  poll_locked(e);
  pthread_mutex_unlock(&e->mu);
}

void qlm_energy_read(qlm_energy *e, qlm_energy_totals *t) {
  pthread_mutex_lock(&e->mu);
  poll_locked(e);
  memset(t, 0, sizeof *t);
  t->wall_s = e->last_wall;
  t->cpu_s = e->last_cpu;
  for (int i = 0; i < e->n_rapl; i++) *(e->rapl[i].kind == DOM_DRAM ? &t->ram_j : &t->cpu_j) += e->rapl[i].joules;
  if (e->cpu.kind == QLM_ENERGY_ESTIMATED) t->cpu_j = qlm_cpu_energy_estimate(e->tdp_w, e->n_cpus, t->cpu_s);
  if (e->ram.kind == QLM_ENERGY_ESTIMATED) t->ram_j = e->ram_w * t->wall_s;
  for (int i = 0; i < e->n_gpu; i++) t->gpu_j += e->gpus[i].joules;
  t->gpu_mem_peak = e->gpu_mem_peak;
  pthread_mutex_unlock(&e->mu);
}

const qlm_energy_component *qlm_energy_cpu(const qlm_energy *e) { return &e->cpu; }
const qlm_energy_component *qlm_energy_ram(const qlm_energy *e) { return &e->ram; }
const qlm_energy_component *qlm_energy_gpu(const qlm_energy *e) { return &e->gpu; }
int qlm_energy_n_domains(const qlm_energy *e) { return e->n_rapl; }

double qlm_energy_domain_j(qlm_energy *e, int i, const char **name) {
  pthread_mutex_lock(&e->mu);
  double j = i >= 0 && i < e->n_rapl ? e->rapl[i].joules : 0;
  if (name) *name = i >= 0 && i < e->n_rapl ? e->rapl[i].name : "";
  pthread_mutex_unlock(&e->mu);
  return j;
}

const char *qlm_energy_cpu_model(const qlm_energy *e) { return e->cpu_model; }
double qlm_energy_cpu_tdp(const qlm_energy *e) { return e->tdp_w; }
int qlm_energy_n_cpus(const qlm_energy *e) { return e->n_cpus; }
uint64_t qlm_energy_ram_total(const qlm_energy *e) { return e->ram_total; }
double qlm_energy_ram_power(const qlm_energy *e) { return e->ram_w; }
int qlm_energy_gpu_count(const qlm_energy *e) { return e->n_gpu; }
const char *qlm_energy_gpu_model(const qlm_energy *e) { return e->gpu_model; }
