/* emissions.c — the outputs of a meter: CodeCarbon-compatible emissions.csv and JSON.
 *
 * emissions.csv has exactly CodeCarbon's columns (v3.3.0 EmissionsData order) and units:
 * duration s, emissions kg CO₂e, emissions_rate kg/s, *_power W (average over the phase),
 * *_energy and energy_consumed kWh, ram_total_size / ram_used_gb GB. One row per phase;
 * experiment_id is "<command>/<phase>". energy_consumed = (cpu + gpu + ram) × PUE, as
 * CodeCarbon applies PUE to the energy, and emissions = energy_consumed × intensity.
 * CodeCarbon has no column for "measured or estimated", so tracking_mode carries it after
 * the mode: "process; cpu estimated: <method>; ram ...; gpu none". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/atomic_file.h"
#include "core/mapfile.h"
#include "measure/meter.h"

const char *const qlm_emissions_columns[] = {
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy", "energy_consumed",
    "water_consumed", "country_name", "country_iso_code", "region", "cloud_provider", "cloud_region", "os",
    "python_version", "codecarbon_version", "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude",
    "latitude", "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue", NULL};

/* A growable string. */
typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* A CSV field, quoted (RFC 4180) when it holds a comma, quote or line break. */
static void sb_field(sbuf *b, const char *s, int first) {
  if (!first) sb_str(b, ",");
  if (!strpbrk(s, ",\"\r\n")) {
    sb_str(b, s);
    return;
  }
  sb_str(b, "\"");
  for (const char *c = s; *c; c++) {
    if (*c == '"') sb_str(b, "\"\"");
    else sb_add(b, c, 1);
  }
  sb_str(b, "\"");
}

static void sb_num(sbuf *b, double v) {
  char t[64];
  snprintf(t, sizeof t, "%.10g", v);
  sb_field(b, t, 0);
}

static void header_line(sbuf *b) {
  for (int i = 0; qlm_emissions_columns[i]; i++) sb_field(b, qlm_emissions_columns[i], i == 0);
  sb_str(b, "\n");
}

static void os_string(char *out, size_t cap) {
  struct utsname u;
  if (uname(&u) == 0) snprintf(out, cap, "%.40s-%.80s-%.40s", u.sysname, u.release, u.machine);
  else snprintf(out, cap, "Linux");
}

static void tracking_mode(const qlm_meter *m, char *out, size_t cap) {
  if (!m->energy) {
    snprintf(out, cap, "process; energy not measured (--no-energy)");
    return;
  }
  const qlm_energy_component *c[3] = {qlm_energy_cpu(m->energy), qlm_energy_ram(m->energy), qlm_energy_gpu(m->energy)};
  const char *nm[3] = {"cpu", "ram", "gpu"};
  size_t n = (size_t)snprintf(out, cap, "process");
  for (int i = 0; i < 3 && n < cap; i++)
    n += (size_t)snprintf(out + n, cap - n, "; %s %s%s%s", nm[i], qlm_energy_kind_name(c[i]->kind),
                          c[i]->method[0] ? ": " : "", c[i]->method);
}

static void csv_row(const qlm_meter *m, const qlm_phase *p, const char *stamp, sbuf *b) {
  char exp[96], os[192], mode[1024], num[32];
  double w = p->wall_s > 0 ? p->wall_s : 0;
  double kwh = qlm_j_to_kwh(qlm_phase_energy_j(p)) * m->pue;
  double kg = qlm_phase_co2_g(m, p) / 1000.0;
  int ncpu = m->energy ? qlm_energy_n_cpus(m->energy) : 0;
  double ram_gb = m->energy ? (double)qlm_energy_ram_total(m->energy) / 1e9 : 0;
  snprintf(exp, sizeof exp, "%s/%s", m->opts.command ? m->opts.command : "qlm", p->name);
  os_string(os, sizeof os);
  tracking_mode(m, mode, sizeof mode);
  sb_field(b, stamp, 1);
  sb_field(b, "qlm", 0);
  sb_field(b, m->run_id, 0);
  sb_field(b, exp, 0);
  sb_num(b, w);
  sb_num(b, kg);
  sb_num(b, w > 0 ? kg / w : 0);
  sb_num(b, w > 0 ? p->cpu_j / w : 0);
  sb_num(b, w > 0 ? p->gpu_j / w : 0);
  sb_num(b, w > 0 ? p->ram_j / w : 0);
  sb_num(b, qlm_j_to_kwh(p->cpu_j));
  sb_num(b, qlm_j_to_kwh(p->gpu_j));
  sb_num(b, qlm_j_to_kwh(p->ram_j));
  sb_num(b, kwh);
  sb_num(b, 0); /* water_consumed: WUE 0 */
  sb_field(b, m->grid.name ? m->grid.name : "", 0);
  sb_field(b, m->grid.iso3, 0);
  sb_field(b, "", 0); /* region */
  sb_field(b, "", 0); /* cloud_provider */
  sb_field(b, "", 0); /* cloud_region */
  sb_field(b, os, 0);
  sb_field(b, "", 0); /* python_version: not Python */
  sb_field(b, "qlm-" QLM_VERSION, 0);
  sb_num(b, ncpu);
  sb_field(b, m->energy ? qlm_energy_cpu_model(m->energy) : "", 0);
  sb_num(b, m->energy ? qlm_energy_gpu_count(m->energy) : 0);
  sb_field(b, m->energy ? qlm_energy_gpu_model(m->energy) : "", 0);
  sb_field(b, "", 0); /* longitude */
  sb_field(b, "", 0); /* latitude */
  sb_num(b, ram_gb);
  sb_field(b, mode, 0);
  sb_num(b, w > 0 && ncpu ? 100.0 * (p->user_s + p->sys_s) / (w * ncpu) : 0);
  sb_num(b, 0); /* gpu_utilization_percent: not sampled */
  sb_num(b, ram_gb > 0 ? 100.0 * ((double)p->peak_rss / 1e9) / ram_gb : 0);
  sb_num(b, (double)p->peak_rss / 1e9);
  sb_field(b, "N", 0);
  snprintf(num, sizeof num, "%.10g", m->pue);
  sb_field(b, num, 0);
  sb_num(b, 0); /* wue */
  sb_str(b, "\n");
}

static int write_all(const char *path, const char *data, size_t n, qlm_error *err) {
  qlm_atomic_file af;
  int rc = qlm_atomic_open(&af, path, err);
  if (rc) return rc;
  if ((rc = qlm_atomic_write(&af, data, n, err))) {
    qlm_atomic_abort(&af);
    return rc;
  }
  return qlm_atomic_commit(&af, err);
}

int qlm_meter_write_csv(const qlm_meter *m, const char *path, qlm_error *err) {
  sbuf hdr = {0}, b = {0};
  header_line(&hdr);
  if (hdr.oom) return free(hdr.p), qlm_fail(err, QLM_ENOMEM, "%s: out of memory", path);
  struct stat st;
  if (stat(path, &st) == 0) { /* append, as CodeCarbon does, when the header is the same */
    char *old = NULL;
    size_t len = 0;
    int rc = qlm_read_file(path, 256u << 20, &old, &len, err);
    if (rc) return free(hdr.p), rc;
    if (len < hdr.n || memcmp(old, hdr.p, hdr.n) != 0) {
      free(old);
      free(hdr.p);
      return qlm_fail(err, QLM_EFORMAT, "%s: exists and its first line is not CodeCarbon's emissions.csv header; "
                      "not appending (choose another --emissions file)", path);
    }
    sb_add(&b, old, len);
    if (len && old[len - 1] != '\n') sb_str(&b, "\n");
    free(old);
  } else {
    sb_add(&b, hdr.p, hdr.n);
  }
  free(hdr.p);
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  for (int i = 0; i < m->n_phases; i++) csv_row(m, &m->phases[i], stamp, &b);
  if (b.oom) return free(b.p), qlm_fail(err, QLM_ENOMEM, "%s: out of memory", path);
  int rc = write_all(path, b.p, b.n, err);
  free(b.p);
  return rc;
}

/* ---- JSON ---- */

static cJSON *component_json(const qlm_energy_component *c) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "kind", qlm_energy_kind_name(c->kind));
  cJSON_AddStringToObject(o, "method", c->method);
  if (c->note[0]) cJSON_AddStringToObject(o, "note", c->note);
  return o;
}

static cJSON *phase_json(const qlm_meter *m, const qlm_phase *p) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", p->name);
  cJSON_AddNumberToObject(o, "count", p->count);
  cJSON_AddNumberToObject(o, "wall_s", p->wall_s);
  cJSON_AddNumberToObject(o, "cpu_user_s", p->user_s);
  cJSON_AddNumberToObject(o, "cpu_sys_s", p->sys_s);
  cJSON_AddNumberToObject(o, "rss_start_bytes", (double)p->rss_start);
  cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)p->peak_rss);
  cJSON_AddNumberToObject(o, "weight_bytes", (double)p->weight_bytes);
  cJSON_AddNumberToObject(o, "kv_cache_bytes", (double)p->kv_bytes);
  cJSON_AddNumberToObject(o, "tokens", (double)p->tokens);
  cJSON_AddNumberToObject(o, "tokens_per_s", p->wall_s > 0 ? (double)p->tokens / p->wall_s : 0);
  if (p->gpu_mem_peak) cJSON_AddNumberToObject(o, "gpu_mem_peak_bytes", (double)p->gpu_mem_peak);
  if (m->energy) {
    cJSON *e = cJSON_AddObjectToObject(o, "energy_j");
    cJSON_AddNumberToObject(e, "cpu", p->cpu_j);
    cJSON_AddNumberToObject(e, "ram", p->ram_j);
    cJSON_AddNumberToObject(e, "gpu", p->gpu_j);
    cJSON_AddNumberToObject(e, "total", qlm_phase_energy_j(p));
    cJSON_AddNumberToObject(o, "energy_kwh", qlm_j_to_kwh(qlm_phase_energy_j(p)));
    cJSON_AddNumberToObject(o, "co2_g", qlm_phase_co2_g(m, p));
  }
  return o;
}

char *qlm_meter_json(const qlm_meter *m) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "qlm_version", QLM_VERSION);
  cJSON_AddStringToObject(root, "command", m->opts.command ? m->opts.command : "");
  cJSON_AddStringToObject(root, "run_id", m->run_id);
  cJSON_AddStringToObject(root, "started", m->started);
  cJSON_AddNumberToObject(root, "wall_s", (m->finished ? m->t_end : m->t_start) - m->t_start);
  cJSON_AddNumberToObject(root, "process_peak_rss_bytes", (double)m->process_peak);
  cJSON_AddStringToObject(root, "peak_method", qlm_meter_peak_method(m));
  cJSON *ov = cJSON_AddObjectToObject(root, "overhead");
  cJSON_AddNumberToObject(ov, "fraction_of_wall", qlm_meter_overhead(m));
  cJSON_AddNumberToObject(ov, "meter_calls_s", m->call_s);
  cJSON_AddNumberToObject(ov, "sampler_cpu_s", m->sampler_cpu_s);
  cJSON_AddNumberToObject(ov, "sampler_polls", m->sampler_polls);
  cJSON_AddNumberToObject(ov, "interval_s", m->opts.interval_s);
  if (m->energy) {
    cJSON *en = cJSON_AddObjectToObject(root, "energy_sources");
    cJSON_AddItemToObject(en, "cpu", component_json(qlm_energy_cpu(m->energy)));
    cJSON_AddItemToObject(en, "ram", component_json(qlm_energy_ram(m->energy)));
    cJSON_AddItemToObject(en, "gpu", component_json(qlm_energy_gpu(m->energy)));
    cJSON *hw = cJSON_AddObjectToObject(root, "hardware");
    cJSON_AddStringToObject(hw, "cpu_model", qlm_energy_cpu_model(m->energy));
    cJSON_AddNumberToObject(hw, "cpu_count", qlm_energy_n_cpus(m->energy));
    if (qlm_energy_cpu_tdp(m->energy) > 0) cJSON_AddNumberToObject(hw, "cpu_tdp_w", qlm_energy_cpu_tdp(m->energy));
    cJSON_AddNumberToObject(hw, "ram_total_bytes", (double)qlm_energy_ram_total(m->energy));
    cJSON_AddNumberToObject(hw, "ram_model_w", qlm_energy_ram_power(m->energy));
    cJSON_AddNumberToObject(hw, "gpu_count", qlm_energy_gpu_count(m->energy));
    cJSON_AddStringToObject(hw, "gpu_model", qlm_energy_gpu_model(m->energy));
    cJSON *doms = cJSON_AddArrayToObject(root, "rapl_domains");
    for (int i = 0; i < qlm_energy_n_domains(m->energy); i++) {
      const char *name;
      double j = qlm_energy_domain_j(m->energy, i, &name);
      cJSON *d = cJSON_CreateObject();
      cJSON_AddStringToObject(d, "name", name);
      cJSON_AddNumberToObject(d, "joules", j);
      cJSON_AddItemToArray(doms, d);
    }
  }
  cJSON *g = cJSON_AddObjectToObject(root, "grid");
  cJSON_AddStringToObject(g, "country_iso_code", m->grid.iso3);
  cJSON_AddStringToObject(g, "country_name", m->grid.name ? m->grid.name : "");
  cJSON_AddNumberToObject(g, "g_co2e_per_kwh", m->grid.g_per_kwh);
  cJSON_AddStringToObject(g, "source", m->grid.source);
  cJSON_AddNumberToObject(g, "pue", m->pue);
  cJSON *ph = cJSON_AddArrayToObject(root, "phases");
  for (int i = 0; i < m->n_phases; i++) cJSON_AddItemToArray(ph, phase_json(m, &m->phases[i]));
  qlm_phase t;
  qlm_meter_total(m, &t);
  cJSON_AddItemToObject(root, "total", phase_json(m, &t));
  if (m->energy) { /* what-if: the same energy on every grid of the table */
    cJSON *w = cJSON_AddObjectToObject(root, "co2_g_by_country");
    double kwh = qlm_j_to_kwh(qlm_phase_energy_j(&t));
    for (const qlm_grid *r = qlm_grid_table(); r->iso3; r++)
      cJSON_AddNumberToObject(w, r->iso3, qlm_co2_grams(kwh, r->g_per_kwh, m->pue));
  }
  char *s = cJSON_Print(root);
  cJSON_Delete(root);
  return s;
}

int qlm_meter_write_json(const qlm_meter *m, const char *path, qlm_error *err) {
  char *s = qlm_meter_json(m);
  if (!s) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory building the JSON", path);
  int rc = write_all(path, s, strlen(s), err);
  free(s);
  return rc;
}
