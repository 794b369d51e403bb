#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/cli.h"

const char *cli_default_model(void) {
  const char *m = getenv("QLM_MODEL");
  return (m && *m) ? m : "../shared/models/stories260K/stories260K.gguf";
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
  if (!m) return 0;
  qlm_meter_finish(m);
  if (!quiet) qlm_meter_print_summary(m, stderr);
  qlm_error err = {0};
  int rc = 0;
  if (cm->emissions && (rc = qlm_meter_write_csv(m, cm->emissions, &err))) cli_report(&err);
  if (!rc && cm->json && (rc = qlm_meter_write_json(m, cm->json, &err))) cli_report(&err);
  qlm_meter_free(m);
  return rc;
}
