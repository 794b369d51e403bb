/* write.c — the report's output folder: every file built in memory, then written atomically. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/atomic_file.h"
#include "report/report_int.h"

enum { RB_MAX = 1 << 30 }; /* no report file is anywhere near 1 GiB: past it, something is wrong */

static int rb_reserve(rbuf *b, size_t extra) {
  size_t need;
  if (b->oom || qlm_add_overflow(b->n, extra, &need) || qlm_add_overflow(need, 1, &need) || need > RB_MAX)
    return b->oom = 1, -1;
  if (need <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < need) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return b->oom = 1, -1;
  b->p = p, b->cap = cap;
  return 0;
}

void rb_put(rbuf *b, const void *data, size_t n) {
  if (rb_reserve(b, n)) return;
  memcpy(b->p + b->n, data, n);
  b->n += n;
  b->p[b->n] = 0;
}

void rb_printf(rbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (len < 0 || rb_reserve(b, (size_t)len)) return;
  va_start(ap, fmt);
  vsnprintf(b->p + b->n, (size_t)len + 1, fmt, ap);
  va_end(ap);
  b->n += (size_t)len;
}

void rep_textf(char *out, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out, n, fmt, ap);
  va_end(ap);
}

void rb_free(rbuf *b) {
  free(b->p);
  *b = (rbuf){0};
}

int rb_save(const rbuf *b, const char *dir, const char *name, qlm_error *err) {
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return qlm_fail(err, QLM_EUSAGE, "%s: output path too long", dir);
  if (b->oom) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory while building the file", path);
  qlm_atomic_file af;
  if (qlm_atomic_open(&af, path, err)) return err->code;
  if (qlm_atomic_write(&af, b->p ? b->p : "", b->n, err)) {
    qlm_atomic_abort(&af);
    return err->code;
  }
  return qlm_atomic_commit(&af, err);
}

static int make_dir(const char *path, qlm_error *err) {
  if (mkdir(path, 0777) == 0 || errno == EEXIST) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return QLM_OK;
    return qlm_fail(err, QLM_EIO, "%s: exists and is not a directory", path);
  }
  return qlm_fail(err, QLM_EIO, "%s: cannot create the output directory: %s", path, strerror(errno));
}

int qlm_report_write(const qlm_report *rep, const char *dir, qlm_error *err) {
  char charts_dir[4096];
  if ((size_t)snprintf(charts_dir, sizeof charts_dir, "%s/charts", dir) >= sizeof charts_dir)
    return qlm_fail(err, QLM_EUSAGE, "%s: output path too long", dir);
  if (make_dir(dir, err) || make_dir(charts_dir, err)) return err->code;
  rep_chart *charts = NULL;
  int n_charts = 0;
  if (rep_charts_make(rep, &charts, &n_charts, err)) return err->code;
  int rc = QLM_OK;
  for (int i = 0; !rc && i < n_charts; i++) {
    char name[128];
    snprintf(name, sizeof name, "%s.svg", charts[i].name);
    rc = rb_save(&charts[i].svg, charts_dir, name, err);
    snprintf(name, sizeof name, "%s.png", charts[i].name);
    rc = rc || rb_save(&charts[i].png, charts_dir, name, err);
  }
  struct {
    const char *name;
    void (*fn)(const qlm_report *, rbuf *);
  } tables[] = {{"report.md", rep_markdown},
                {"inference.csv", rep_csv_inference},
                {"quantization.csv", rep_csv_quantization},
                {"scores.csv", rep_csv_scores}};
  for (size_t i = 0; !rc && i < sizeof tables / sizeof tables[0]; i++) {
    rbuf b = {0};
    tables[i].fn(rep, &b);
    rc = rb_save(&b, dir, tables[i].name, err);
    rb_free(&b);
  }
  if (!rc) {
    rbuf b = {0};
    rep_html(rep, charts, n_charts, &b);
    rc = rb_save(&b, dir, "index.html", err);
    rb_free(&b);
  }
  rep_charts_free(charts, n_charts);
  return rc;
}
