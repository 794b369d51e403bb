/* report_int.h — what the report's files share: a growable text/byte buffer, the charts, the
 * table writers. Internal to src/report. */
#ifndef QLM_REPORT_INT_H
#define QLM_REPORT_INT_H

#include <stddef.h>

#include "report/report.h"

typedef struct rbuf {
  char *p;     /* [n] bytes, NUL-terminated when text */
  size_t n, cap;
  int oom;     /* an append failed: the buffer is incomplete */
} rbuf;
void rb_put(rbuf *b, const void *data, size_t n);
void rb_printf(rbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rb_free(rbuf *b);
/* Write b to dir/name atomically (fails with QLM_ENOMEM when b->oom). */
int rb_save(const rbuf *b, const char *dir, const char *name, qlm_error *err);

/* snprintf that truncates on purpose (display text built from paths and labels of any length). */
void rep_textf(char *out, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A rendered chart: the same drawing as SVG and PNG. */
typedef struct rep_chart {
  char name[96];     /* file stem under charts/ ("s0_bar_ppl") */
  char title[192];
  int section;       /* -1: about the whole report */
  int w, h;          /* pixels */
  rbuf svg, png;
} rep_chart;

/* All charts of the report (malloc'd array; rep_charts_free releases it). */
int rep_charts_make(const qlm_report *rep, rep_chart **out, int *n, qlm_error *err);
void rep_charts_free(rep_chart *c, int n);

/* Tables (tables.c). */
void rep_markdown(const qlm_report *rep, rbuf *b);
void rep_csv_inference(const qlm_report *rep, rbuf *b);
void rep_csv_quantization(const qlm_report *rep, rbuf *b);
void rep_csv_scores(const qlm_report *rep, rbuf *b);
void rep_html(const qlm_report *rep, const rep_chart *charts, int n_charts, rbuf *b);

/* The section's heading text ("perplexity · stories260K.gguf · llamacpp, batch 8"). */
void rep_section_title(const qlm_rep_row *first, char *out, size_t n);
/* Does any row of the section [s, s+n) have metric k? */
int rep_section_has(const qlm_rep_row *s, int n, int k);
/* The paragraph that defines and justifies the two combined metrics (Markdown and HTML). */
extern const char rep_score_text[];

#endif
