#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/shared_dir.h"
#include "db/sha256.h"

#include "cli/cli.h"

const char *cli_default_model(void) {
  const char *m = getenv("QLM_MODEL");
  static char buf[4096];
  return (m && *m) ? m : qlm_shared_path("models/stories260K/stories260K.gguf", buf, sizeof buf);
}

int cli_report(const qlm_error *err) {
  fprintf(stderr, "qlm: %s\n", err->msg);
  return err->code ? err->code : QLM_EINTERNAL;
}

int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out, qlm_error *err) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return qlm_fail(err, QLM_EUSAGE, "%s: '%s' is not an integer", opt, s);
  if (v < lo || v > hi) return qlm_fail(err, QLM_EUSAGE, "%s: %ld is out of range [%ld, %ld]", opt, v, lo, hi);
  *out = v;
  return QLM_OK;
}

int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out, qlm_error *err) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v)) return qlm_fail(err, QLM_EUSAGE, "%s: '%s' is not a number", opt, s);
  if (v < lo || v > hi) return qlm_fail(err, QLM_EUSAGE, "%s: %g is out of range [%g, %g]", opt, v, lo, hi);
  *out = v;
  return QLM_OK;
}

int cli_default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* ---- results database (--db) ---- */

enum { CLI_DB_MAX_RESULTS = 4096, CLI_DB_MAX_ARTEFACTS = 16 };

/* What the running command produced so far (one command per process, so one pending run). */
static struct {
  int argc;
  char **argv;
  int ok;                      /* the command succeeded: record it */
  qlm_result *results;         /* [n_results] copies */
  int n_results, cap;
  int has_model;
  char model_path[1024], arch[16];
  int64_t params;
  int has_quant;
  qlm_db_quant quant;
  char quant_method[128];
  char *quant_options, *quant_rules; /* malloc'd, from argv unless given */
  char *artefacts[CLI_DB_MAX_ARTEFACTS], *artefact_kinds[CLI_DB_MAX_ARTEFACTS];
  int n_artefacts;
} g_db;

const char cli_db_help[] =
    "      --db FILE             record this run (model, config, results, phases, artefacts) in the SQLite\n"
    "                            results database FILE (created if absent; qlm compare reads it)\n";

void cli_db_set_argv(int argc, char **argv) {
  g_db.argc = argc;
  g_db.argv = argv;
}

void cli_db_set_model_path(const char *path) {
  g_db.has_model = 1;
  snprintf(g_db.model_path, sizeof g_db.model_path, "%s", path ? path : "");
}

void cli_db_set_model(const qlm_source *src) {
  if (!src) return;
  static const char *const arch[] = {"llama", "qwen2", "gpt2"};
  cli_db_set_model_path(src->path);
  g_db.params = qlm_source_n_params(src);
  unsigned a = (unsigned)src->hp.arch;
  snprintf(g_db.arch, sizeof g_db.arch, "%s", a < 3 ? arch[a] : "unknown");
}

void cli_db_success(void) { g_db.ok = 1; }

int cli_db_add_result(const qlm_result *r, qlm_error *err) {
  if (g_db.n_results == g_db.cap) {
    int nc = g_db.cap ? 2 * g_db.cap : 4;
    qlm_result *p = nc > CLI_DB_MAX_RESULTS ? NULL : realloc(g_db.results, (size_t)nc * sizeof *p);
    if (!p) return qlm_fail(err, QLM_ENOMEM, "--db: cannot keep %d result records", nc);
    g_db.results = p, g_db.cap = nc;
  }
  g_db.results[g_db.n_results++] = *r;
  g_db.ok = 1;
  return QLM_OK;
}

/* The values of the named options on the command line, "--name value" or "--name=value",
 * joined as "name=value" by sep (flags without a value: just "name"). NULL when none. */
static char *argv_options(const char *const *names, const char *const *flags, char sep, int values_only) {
  char *s = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&s, &n);
  if (!f) return NULL;
  int any = 0;
  for (int i = 1; i < g_db.argc; i++) {
    const char *a = g_db.argv[i];
    if (strncmp(a, "--", 2) != 0) continue;
    for (int k = 0; names && names[k]; k++) {
      size_t l = strlen(names[k]);
      if (strncmp(a + 2, names[k], l) != 0 || (a[2 + l] != 0 && a[2 + l] != '=')) continue;
      const char *v = a[2 + l] == '=' ? a + 3 + l : i + 1 < g_db.argc ? g_db.argv[++i] : "";
      fprintf(f, "%s%s%s%s", any ? (char[]){sep, 0} : "", values_only ? "" : names[k], values_only ? "" : "=", v);
      any = 1;
    }
    for (int k = 0; flags && flags[k]; k++)
      if (!strcmp(a + 2, flags[k])) fprintf(f, "%s%s", any ? (char[]){sep, 0} : "", flags[k]), any = 1;
  }
  fclose(f);
  if (!any) free(s), s = NULL;
  return s;
}

void cli_db_set_quant(const qlm_db_quant *q) {
  static const char *const opts[] = {"opt", "threshold", "target-bpw", "calib", "calib-samples", "calib-len",
                                     "keep-embeddings", "type", NULL};
  static const char *const flags[] = {"dq", NULL};
  static const char *const rules[] = {"rule", "rules", NULL};
  g_db.has_quant = 1;
  g_db.quant = *q;
  snprintf(g_db.quant_method, sizeof g_db.quant_method, "%s", q->method ? q->method : "");
  g_db.quant.method = g_db.quant_method;
  free(g_db.quant_options);
  free(g_db.quant_rules);
  g_db.quant_options = q->options ? strdup(q->options) : argv_options(opts, flags, ' ', 0);
  g_db.quant_rules = q->rules ? strdup(q->rules) : argv_options(rules, NULL, '\n', 1);
  g_db.quant.options = g_db.quant_options;
  g_db.quant.rules = g_db.quant_rules;
  g_db.ok = 1;
}

int cli_db_add_quant_option(const char *name, const char *value, qlm_error *err) {
  const char *prev = g_db.quant_options ? g_db.quant_options : "";
  size_t n = strlen(prev) + strlen(name) + strlen(value) + 3;
  char *s = malloc(n);
  if (!s) return qlm_fail(err, QLM_ENOMEM, "--db: out of memory (option %s)", name);
  snprintf(s, n, "%s%s%s=%s", prev, *prev ? " " : "", name, value);
  free(g_db.quant_options);
  g_db.quant_options = s;
  g_db.quant.options = s;
  return QLM_OK;
}

int cli_db_add_artefact(const char *path, const char *kind, qlm_error *err) {
  if (g_db.n_artefacts == CLI_DB_MAX_ARTEFACTS) return qlm_fail(err, QLM_ELIMIT, "--db: more than %d artefacts", CLI_DB_MAX_ARTEFACTS);
  char *p = strdup(path), *k = strdup(kind);
  if (!p || !k) {
    free(p), free(k);
    return qlm_fail(err, QLM_ENOMEM, "--db: out of memory (artefact %s)", path);
  }
  g_db.artefacts[g_db.n_artefacts] = p;
  g_db.artefact_kinds[g_db.n_artefacts++] = k;
  return QLM_OK;
}

static void db_clear(void) {
  free(g_db.results);
  free(g_db.quant_options);
  free(g_db.quant_rules);
  for (int i = 0; i < g_db.n_artefacts; i++) free(g_db.artefacts[i]), free(g_db.artefact_kinds[i]);
  int argc = g_db.argc;
  char **argv = g_db.argv;
  memset(&g_db, 0, sizeof g_db);
  g_db.argc = argc, g_db.argv = argv;
}

static char *command_line(void) {
  char *s = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&s, &n);
  if (!f) return NULL;
  fputs("qlm", f);
  for (int i = 0; i < g_db.argc; i++) fprintf(f, " %s", g_db.argv[i]);
  fclose(f);
  return s;
}

int cli_db_commit(const char *db_path, const char *command, const qlm_meter *m, qlm_error *err) {
  if (!db_path) return QLM_OK;
  qlm_db_artefact arts[CLI_DB_MAX_ARTEFACTS];
  for (int i = 0; i < g_db.n_artefacts; i++) arts[i] = (qlm_db_artefact){g_db.artefacts[i], g_db.artefact_kinds[i], NULL};
  char hex[65];
  qlm_error herr = {0};
  struct stat st;
  /* models are identified by content: hash the file (a folder is identified by its path) */
  int hashed = g_db.has_model && stat(g_db.model_path, &st) == 0 && S_ISREG(st.st_mode) &&
               qlm_sha256_file(g_db.model_path, hex, &herr) == QLM_OK;
  qlm_db_model model = {g_db.model_path, hashed ? hex : NULL, g_db.params, g_db.arch[0] ? g_db.arch : NULL};
  char *cl = command_line();
  /* qlm sweep names each cell's run through the environment of the child it spawns */
  const char *label = getenv("QLM_RUN_LABEL");
  qlm_db_run run = {.command = command, .command_line = cl, .label = label && *label ? label : NULL,
                    .model = g_db.has_model ? &model : NULL,
                    .quant = g_db.has_quant ? &g_db.quant : NULL, .artefacts = arts, .n_artefacts = g_db.n_artefacts};
  qlm_db *db = NULL;
  int64_t id = 0;
  int rc = qlm_db_open(db_path, &db, err);
  if (!rc) rc = qlm_db_record_run(db, &run, g_db.results, g_db.n_results, m, &id, err);
  qlm_db_close(db);
  free(cl);
  db_clear();
  if (!rc) fprintf(stderr, "qlm: recorded run %lld in %s\n", (long long)id, db_path);
  return rc;
}

int cli_db_record(const char *db_path, const char *command, const qlm_result *r, const qlm_source *src, qlm_error *err) {
  if (!db_path) return QLM_OK;
  cli_db_set_model(src);
  int rc = cli_db_add_result(r, err);
  return rc ? rc : cli_db_commit(db_path, command, NULL, err);
}

/* cli_measure_end's part: record the run when --db was given and the command succeeded. */
static int cli_measure_db(cli_measure *cm, const qlm_meter *m) {
  if (!cm->db || !g_db.ok) return 0;
  qlm_error err = {0};
  int rc = cli_db_commit(cm->db, cm->mo.command, m, &err);
  return rc ? cli_report(&err) : 0;
}

/* ---- measurement flags ---- */

const char cli_measure_help[] =
    "measurement (time, CPU, peak RAM, energy, CO2 per phase; summary on stderr at the end):\n"
    "      --country ISO3        grid carbon intensity of this country (ESP BEL DEU FRA NLD USA GBR CHN IND\n"
    "                            ITA CHE; default WLD, the world average)\n"
    "      --carbon-intensity G  gCO2e/kWh instead of the country's figure\n"
    "      --pue P               data-centre power usage effectiveness (default 1.0)\n"
    "      --cpu-tdp W           CPU TDP for the energy estimate when no RAPL counter can be read\n"
    "      --energy-interval S   energy sampling period in seconds (default 1)\n"
    "      --emissions FILE      append one CodeCarbon-compatible row per phase to FILE (emissions.csv)\n"
    "      --measure-json FILE   write the full measurement record as JSON\n"
    "      --no-energy           time, CPU and memory only\n";

void cli_measure_init(cli_measure *cm, const char *command) {
  *cm = (cli_measure){.mo = qlm_meter_default_opts()};
  cm->mo.command = command;
}

int cli_measure_opt(cli_measure *cm, int c, const char *arg, qlm_error *err) {
  switch (c) {
  case CLI_OPT_COUNTRY: {
    qlm_grid_choice g;
    cm->mo.country = arg;
    return qlm_grid_choose(arg, -1, &g, err); /* fail early on an unknown code */
  }
  case CLI_OPT_CARBON: return cli_parse_float("--carbon-intensity", arg, 0, 1e5, &cm->mo.carbon_intensity, err);
  case CLI_OPT_PUE: return cli_parse_float("--pue", arg, 1.0, 10.0, &cm->mo.pue, err);
  case CLI_OPT_TDP: return cli_parse_float("--cpu-tdp", arg, 0.1, 10000, &cm->mo.energy.cpu_tdp_w, err);
  case CLI_OPT_INTERVAL: return cli_parse_float("--energy-interval", arg, 0.01, 3600, &cm->mo.interval_s, err);
  case CLI_OPT_EMISSIONS: cm->emissions = arg; return QLM_OK;
  case CLI_OPT_MEASURE_JSON: cm->json = arg; return QLM_OK;
  case CLI_OPT_NO_ENERGY: cm->mo.no_energy = true; return QLM_OK;
  case CLI_OPT_DB: cm->db = arg; return QLM_OK;
  default: return qlm_fail(err, QLM_EINTERNAL, "measurement option %d unknown", c);
  }
}

qlm_meter *cli_measure_start(cli_measure *cm) {
  qlm_error err = {0};
  qlm_meter *m = NULL;
  if (qlm_meter_new(&cm->mo, &m, &err)) {
    fprintf(stderr, "qlm: measurement off: %s\n", err.msg);
    return NULL;
  }
  return m;
}

int cli_measure_end(cli_measure *cm, qlm_meter *m, int quiet) {
  if (!m) return cli_measure_db(cm, NULL);
  qlm_meter_finish(m);
  if (!quiet) qlm_meter_print_summary(m, stderr);
  qlm_error err = {0};
  int rc = 0;
  if (cm->emissions && (rc = qlm_meter_write_csv(m, cm->emissions, &err))) cli_report(&err);
  if (!rc && cm->json && (rc = qlm_meter_write_json(m, cm->json, &err))) cli_report(&err);
  if (!rc) rc = cli_measure_db(cm, m);
  qlm_meter_free(m);
  return rc;
}
