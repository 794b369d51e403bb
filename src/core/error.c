#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qlm_fail(qlm_error *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
  }
  return code;
}

int qlm_fail_prefix(qlm_error *err, const char *fmt, ...) {
  if (!err) return QLM_EINTERNAL;
  char prefix[512], old[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  /* truncation of an overlong message is acceptable: it stays NUL-terminated */
  size_t n = strlen(prefix);
  if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
  memcpy(err->msg, prefix, n);
  memcpy(err->msg + n, ": ", 2);
  size_t room = sizeof err->msg - n - 3;
  size_t m = strnlen(old, room);
  memcpy(err->msg + n + 2, old, m);
  err->msg[n + 2 + m] = 0;
  return err->code;
}

const char *qlm_errclass_name(int code) {
  switch (code) {
  case QLM_OK: return "ok";
  case QLM_EUSAGE: return "usage";
  case QLM_EIO: return "io";
  case QLM_EFORMAT: return "format";
  case QLM_EUNSUPPORTED: return "unsupported";
  case QLM_ELIMIT: return "limit";
  case QLM_ENOMEM: return "out-of-memory";
  case QLM_EINTERNAL: return "internal";
  default: return "unknown";
  }
}

void *qlm_malloc(size_t n, const char *what, qlm_error *err) {
  void *p = malloc(n ? n : 1);
  if (!p) qlm_fail(err, QLM_ENOMEM, "out of memory allocating %zu bytes for %s", n, what);
  return p;
}

void *qlm_calloc(size_t count, size_t size, const char *what, qlm_error *err) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p) qlm_fail(err, QLM_ENOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
  return p;
}
