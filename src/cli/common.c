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
