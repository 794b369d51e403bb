/* meter.c — phases, rusage, peak memory and the sampler thread; see meter.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "measure/meter.h"

static double mono_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + 1e-6 * (double)tv.tv_usec; }

/* A "VmXXX:   1234 kB" line of /proc/self/status, in bytes. */
static uint64_t status_field(const char *key) {
  char buf[4096];
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *p = strstr(buf, key);
  if (!p) return 0;
  return 1024 * strtoull(p + strlen(key), NULL, 10);
}

uint64_t qlm_rss_now(void) { return status_field("VmRSS:"); }
uint64_t qlm_rss_hwm(void) { return status_field("VmHWM:"); }

/* Reset VmHWM to the current RSS. Returns 1 when the kernel accepted it. */
static int hwm_reset(void) {
  int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  int ok = write(fd, "5", 1) == 1;
  close(fd);
  return ok;
}

qlm_meter_opts qlm_meter_default_opts(void) {
  return (qlm_meter_opts){.interval_s = 1.0, .carbon_intensity = -1, .pue = 1.0};
}

static void make_uuid(char *out, size_t cap) {
  unsigned char b[16];
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, b, sizeof b) != (ssize_t)sizeof b) { /* fall back to time and pid */
    uint64_t x = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() ^ (uint64_t)(mono_s() * 1e9);
    for (int i = 0; i < 16; i++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      b[i] = (unsigned char)x;
    }
  }
  if (fd >= 0) close(fd);
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
  snprintf(out, cap, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
           b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void *sampler_main(void *arg) {
  qlm_meter *m = arg;
  struct timespec now;
  pthread_mutex_lock(&m->mu);
  while (!m->stop) {
    clock_gettime(CLOCK_REALTIME, &now);
    double when = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec + m->opts.interval_s;
    struct timespec until = {.tv_sec = (time_t)when, .tv_nsec = (long)((when - (double)(time_t)when) * 1e9)};
    if (until.tv_nsec >= 1000000000L) until.tv_nsec = 999999999L;
    while (!m->stop && pthread_cond_timedwait(&m->cv, &m->mu, &until) != ETIMEDOUT) {}
    if (m->stop) break;
    pthread_mutex_unlock(&m->mu);
    if (m->energy) qlm_energy_poll(m->energy);
    uint64_t rss = m->hwm_reset ? 0 : qlm_rss_now();
    pthread_mutex_lock(&m->mu);
    if (rss > m->sampled_peak) m->sampled_peak = rss;
    m->sampler_polls++;
  }
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  m->sampler_cpu_s = (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

int qlm_meter_new(const qlm_meter_opts *o, qlm_meter **out, qlm_error *err) {
  qlm_meter_opts def = qlm_meter_default_opts();
  if (!o) o = &def;
  if (o->pue < 0 || o->interval_s < 0) return qlm_fail(err, QLM_EUSAGE, "meter: negative --pue or --energy-interval");
  qlm_meter *m = qlm_calloc(1, sizeof *m, "meter", err);
  if (!m) return QLM_ENOMEM;
  m->opts = *o;
  if (m->opts.interval_s <= 0) m->opts.interval_s = 1.0;
  m->pue = o->pue > 0 ? o->pue : 1.0;
  m->cur = -1;
  m->t_start = mono_s();
  make_uuid(m->run_id, sizeof m->run_id);
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(m->started, sizeof m->started, "%Y-%m-%dT%H:%M:%S", &tm);
  pthread_mutex_init(&m->mu, NULL);
  pthread_cond_init(&m->cv, NULL);
  int rc = qlm_grid_choose(o->country, o->carbon_intensity, &m->grid, err);
  if (!rc && !o->no_energy) rc = qlm_energy_open(&o->energy, &m->energy, err);
  if (rc) {
    qlm_meter_free(m);
    return rc;
  }
  m->process_peak = qlm_rss_hwm();
  m->hwm_reset = hwm_reset();
  if (!o->no_energy && !o->no_sampler) {
    if (pthread_create(&m->thread, NULL, sampler_main, m) == 0) m->thread_running = true;
  }
  m->call_s += mono_s() - m->t_start;
  *out = m;
  return QLM_OK;
}

void qlm_meter_free(qlm_meter *m) {
  if (!m) return;
  qlm_meter_finish(m);
  qlm_energy_close(m->energy);
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
  free(m);
}

static void end_locked(qlm_meter *m, double t) {
  if (m->cur < 0) return;
  qlm_phase *p = &m->phases[m->cur];
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  p->wall_s += t - p->t0_wall;
  p->user_s += tv_s(ru.ru_utime) - p->t0_user;
  p->sys_s += tv_s(ru.ru_stime) - p->t0_sys;
  if (m->energy) {
    qlm_energy_totals e;
    qlm_energy_read(m->energy, &e);
    p->cpu_j += e.cpu_j - p->e0.cpu_j;
    p->ram_j += e.ram_j - p->e0.ram_j;
    p->gpu_j += e.gpu_j - p->e0.gpu_j;
    if (e.gpu_mem_peak > p->gpu_mem_peak) p->gpu_mem_peak = e.gpu_mem_peak;
  }
  uint64_t hwm = qlm_rss_hwm(), peak;
  if (m->hwm_reset) {
    peak = hwm;
  } else {
    uint64_t now = qlm_rss_now();
    peak = m->sampled_peak > now ? m->sampled_peak : now;
  }
  if (peak > p->peak_rss) p->peak_rss = peak;
  if (hwm > m->process_peak) m->process_peak = hwm;
  m->cur = -1;
}

qlm_phase *qlm_meter_begin(qlm_meter *m, const char *name) {
  double t = mono_s();
  pthread_mutex_lock(&m->mu);
  end_locked(m, t);
  int i = 0;
  while (i < m->n_phases && strcmp(m->phases[i].name, name) != 0) i++;
  if (i == m->n_phases) {
    if (m->n_phases == QLM_METER_MAX_PHASES) {
      pthread_mutex_unlock(&m->mu);
      return NULL;
    }
    memset(&m->phases[i], 0, sizeof m->phases[i]);
    snprintf(m->phases[i].name, sizeof m->phases[i].name, "%s", name);
    m->n_phases++;
  }
  qlm_phase *p = &m->phases[i];
  /* Close the previous high-water mark into the process peak, then restart it for this phase. */
  uint64_t hwm = qlm_rss_hwm();
  if (hwm > m->process_peak) m->process_peak = hwm;
  if (m->hwm_reset) m->hwm_reset = hwm_reset();
  uint64_t rss = qlm_rss_now();
  if (!p->count) p->rss_start = rss;
  m->sampled_peak = rss;
  p->count++;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  p->t0_user = tv_s(ru.ru_utime);
  p->t0_sys = tv_s(ru.ru_stime);
  if (m->energy) qlm_energy_read(m->energy, &p->e0);
  m->cur = i;
  p->t0_wall = mono_s();
  m->call_s += p->t0_wall - t;
  pthread_mutex_unlock(&m->mu);
  return p;
}

void qlm_meter_end(qlm_meter *m) {
  double t = mono_s();
  pthread_mutex_lock(&m->mu);
  end_locked(m, t);
  m->call_s += mono_s() - t;
  pthread_mutex_unlock(&m->mu);
}

static qlm_phase *target(qlm_meter *m) {
  int i = m->cur >= 0 ? m->cur : m->n_phases - 1;
  return i >= 0 ? &m->phases[i] : NULL;
}

void qlm_meter_add_tokens(qlm_meter *m, uint64_t n) {
  pthread_mutex_lock(&m->mu);
  qlm_phase *p = target(m);
  if (p) p->tokens += n;
  pthread_mutex_unlock(&m->mu);
}

void qlm_meter_set_bytes(qlm_meter *m, uint64_t weight_bytes, uint64_t kv_bytes) {
  pthread_mutex_lock(&m->mu);
  qlm_phase *p = target(m);
  if (p) {
    p->weight_bytes = weight_bytes;
    p->kv_bytes = kv_bytes;
  }
  pthread_mutex_unlock(&m->mu);
}

void qlm_meter_finish(qlm_meter *m) {
  if (m->finished) return;
  qlm_meter_end(m);
  if (m->thread_running) {
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->thread, NULL);
    m->thread_running = false;
  }
  m->t_end = mono_s();
  m->finished = true;
}

void qlm_meter_total(const qlm_meter *m, qlm_phase *t) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "total");
  for (int i = 0; i < m->n_phases; i++) {
    const qlm_phase *p = &m->phases[i];
    t->count += p->count;
    t->wall_s += p->wall_s;
    t->user_s += p->user_s;
    t->sys_s += p->sys_s;
    t->tokens += p->tokens;
    t->cpu_j += p->cpu_j;
    t->ram_j += p->ram_j;
    t->gpu_j += p->gpu_j;
    if (i == 0) t->rss_start = p->rss_start;
    if (p->peak_rss > t->peak_rss) t->peak_rss = p->peak_rss;
    if (p->weight_bytes > t->weight_bytes) t->weight_bytes = p->weight_bytes;
    if (p->kv_bytes > t->kv_bytes) t->kv_bytes = p->kv_bytes;
    if (p->gpu_mem_peak > t->gpu_mem_peak) t->gpu_mem_peak = p->gpu_mem_peak;
  }
  if (m->process_peak > t->peak_rss) t->peak_rss = m->process_peak;
}

double qlm_phase_energy_j(const qlm_phase *p) { return p->cpu_j + p->ram_j + p->gpu_j; }

double qlm_phase_co2_g(const qlm_meter *m, const qlm_phase *p) {
  return qlm_co2_grams(qlm_j_to_kwh(qlm_phase_energy_j(p)), m->grid.g_per_kwh, m->pue);
}

double qlm_meter_overhead(const qlm_meter *m) {
  double wall = (m->finished ? m->t_end : mono_s()) - m->t_start;
  return wall > 0 ? (m->call_s + m->sampler_cpu_s) / wall : 0;
}

const char *qlm_meter_peak_method(const qlm_meter *m) {
  return m->hwm_reset ? "VmHWM reset per phase (/proc/self/clear_refs)"
                      : "VmRSS sampled at phase edges and by the sampler (clear_refs refused)";
}

/* ---- summary ---- */

static void fmt_bytes(char *b, size_t cap, uint64_t v) {
  if (v >= (1ull << 30)) snprintf(b, cap, "%.2f GiB", (double)v / (double)(1ull << 30));
  else snprintf(b, cap, "%.1f MiB", (double)v / (double)(1ull << 20));
}

static const char *phase_label(const qlm_meter *m) {
  if (!m->energy) return "off";
  int est = qlm_energy_cpu(m->energy)->kind == QLM_ENERGY_ESTIMATED || qlm_energy_ram(m->energy)->kind == QLM_ENERGY_ESTIMATED;
  return est ? "est" : "meas";
}

static void print_row(const qlm_meter *m, const qlm_phase *p, FILE *f) {
  char peak[32], tps[32] = "-";
  fmt_bytes(peak, sizeof peak, p->peak_rss);
  if (p->tokens && p->wall_s > 0) snprintf(tps, sizeof tps, "%.1f", (double)p->tokens / p->wall_s);
  fprintf(f, "  %-10s %9.3f %9.3f %11s %8llu %9s", p->name, p->wall_s, p->user_s + p->sys_s, peak,
          (unsigned long long)p->tokens, tps);
  if (m->energy)
    fprintf(f, " %11.3e %-4s %10.4g\n", qlm_j_to_kwh(qlm_phase_energy_j(p)), phase_label(m), qlm_phase_co2_g(m, p));
  else
    fprintf(f, " %11s %-4s %10s\n", "-", "off", "-");
}

static void print_component(const char *what, const qlm_energy_component *c, FILE *f) {
  fprintf(f, "  %s %-9s %s%s%s\n", what, qlm_energy_kind_name(c->kind), c->method, c->note[0] ? " — " : "", c->note);
}

void qlm_meter_print_summary(const qlm_meter *m, FILE *f) {
  qlm_phase t;
  qlm_meter_total(m, &t);
  fprintf(f, "\nmeasurement (qlm %s, run %.8s)\n", m->opts.command ? m->opts.command : "", m->run_id);
  fprintf(f, "  %-10s %9s %9s %11s %8s %9s %11s %-4s %10s\n", "phase", "wall s", "cpu s", "peak RAM", "tokens", "tok/s",
          "energy kWh", "", "gCO2e");
  for (int i = 0; i < m->n_phases; i++) print_row(m, &m->phases[i], f);
  print_row(m, &t, f);
  if (m->energy) {
    print_component("cpu", qlm_energy_cpu(m->energy), f);
    print_component("ram", qlm_energy_ram(m->energy), f);
    print_component("gpu", qlm_energy_gpu(m->energy), f);
    fprintf(f, "  CO2: %s %s %.4g gCO2e/kWh (%s) x PUE %.2f\n", m->grid.iso3, m->grid.name, m->grid.g_per_kwh,
            m->grid.source, m->pue);
  } else {
    fprintf(f, "  energy: off (--no-energy)\n");
  }
  char peak[32];
  fmt_bytes(peak, sizeof peak, t.peak_rss);
  fprintf(f, "  peak RAM: %s process high-water mark; per phase by %s\n", peak, qlm_meter_peak_method(m));
  fprintf(f, "  meter overhead: %.3f%% of wall time (%.2f ms in meter calls, %.2f ms sampler CPU, %d polls)\n",
          100.0 * qlm_meter_overhead(m), 1e3 * m->call_s, 1e3 * m->sampler_cpu_s, m->sampler_polls);
}
