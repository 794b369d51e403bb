/* tables.c — the report's tables in the seeds' layouts, as Markdown, CSV and HTML.
 *
 * One section per (task, task settings, base model): the inference table (seed 000 Tables 3
 * and 5: accuracy, F1, perplexity, inference time, max memory, energy, emissions, each
 * "mean ± sd (relative change vs base)"), the quantization table (Tables 4 and 6: time, energy,
 * emissions of producing each quantized model) and the combined metrics. CSV cells carry full
 * precision (%.17g) so the numbers can be checked against the database; Markdown/HTML round. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "report/report_int.h"

const char rep_score_text[] =
    "Combined metrics (lower is better; computed over the rows of a section that have both a perplexity and "
    "emissions). Seed 000 defines Score_i = softmax(ppl)_i x CO2_i. Because softmax depends only on perplexity "
    "differences, two runs whose perplexities differ by d get weights in the ratio e^d: at d = 3.5 (seed 000's "
    "base vs HQQ 3-bit) that is 33, so the worst run takes nearly all the weight and every other score collapses "
    "towards 0 whatever its emissions; the verdict also changes when all perplexities are measured on another "
    "scale (tokenizer, protocol, data). The log-ppl score applies the same softmax to ln ppl, the mean negative "
    "log-likelihood per token in nats (the scale on which quantization error adds up): "
    "L_i = softmax(ln ppl)_i x CO2_i = ppl_i / sum_j ppl_j x CO2_i. Two runs' weights are then in the ratio of "
    "their perplexities (1.35 instead of 33), the weight never saturates for finite perplexities, and multiplying "
    "every perplexity by a constant leaves every L_i unchanged. Both keep the form 'weight over the compared runs "
    "x CO2', so they can be read side by side.";

static const int infer_cols[] = {QLM_RM_ACC, QLM_RM_F1, QLM_RM_PPL, QLM_RM_TIME, QLM_RM_MEM, QLM_RM_ENERGY, QLM_RM_CO2};
static const int quant_cols[] = {QLM_RM_QTIME, QLM_RM_QENERGY, QLM_RM_QCO2};
#define NCOLS(a) ((int)(sizeof(a) / sizeof((a)[0])))

int rep_section_has(const qlm_rep_row *s, int n, int k) {
  for (int i = 0; i < n; i++)
    if (s[i].m[k].n > 0) return 1;
  return 0;
}

void rep_section_title(const qlm_rep_row *r, char *out, size_t n) {
  rep_textf(out, n, "%s · %s%s%s", r->task, r->model[0] ? r->model : "(no model)", r->protocol[0] ? " · " : "",
           r->protocol);
}

/* ---- cells ---- */

static void fmt_num(char *buf, size_t n, double v) {
  if (!isfinite(v)) snprintf(buf, n, "–");
  else if (fabs(v) >= 1e5 || (v != 0 && fabs(v) < 1e-3)) snprintf(buf, n, "%.3e", v);
  else snprintf(buf, n, "%.5g", v);
}

static void fmt_cell(char *buf, size_t n, const qlm_rep_row *r, int k) {
  const qlm_rep_stat *s = &r->m[k];
  char m[32], sd[40] = "", rel[40] = "";
  fmt_num(m, sizeof m, s->mean);
  if (!s->n) {
    snprintf(buf, n, "–");
    return;
  }
  if (s->n > 1 && isfinite(s->sd)) {
    char t[32];
    fmt_num(t, sizeof t, s->sd);
    snprintf(sd, sizeof sd, " ± %s", t);
  }
  if (!r->is_base && isfinite(r->rel[k])) /* two decimals where one would show ±0.0 */
    snprintf(rel, sizeof rel, fabs(r->rel[k]) < 0.01 ? " (%+.2f%%)" : " (%+.1f%%)", 100 * r->rel[k]);
  snprintf(buf, n, "%s%s%s", m, sd, rel);
}

static void fmt_bits(char *buf, size_t n, const qlm_rep_row *r) {
  if (r->is_base) snprintf(buf, n, "–");
  else if (isfinite(r->bits)) snprintf(buf, n, "%g", r->bits);
  else snprintf(buf, n, "–");
}

/* ---- Markdown / HTML emitters sharing one table builder ---- */

typedef struct emit {
  rbuf *b;
  int html;
  int col; /* cells written in the current row */
} emit;

static void put_escaped(emit *e, const char *s) {
  for (; *s; s++) {
    if (e->html && *s == '<') rb_printf(e->b, "&lt;");
    else if (e->html && *s == '>') rb_printf(e->b, "&gt;");
    else if (e->html && *s == '&') rb_printf(e->b, "&amp;");
    else if (e->html && *s == '"') rb_printf(e->b, "&quot;");
    else if (!e->html && *s == '|') rb_printf(e->b, "\\|");
    else if (!e->html && *s == '\n') rb_printf(e->b, " ");
    else rb_put(e->b, s, 1);
  }
}

static void t_begin(emit *e, const char *caption) {
  if (e->html) {
    rb_printf(e->b, "<table>\n<caption>");
    put_escaped(e, caption);
    rb_printf(e->b, "</caption>\n");
  } else {
    rb_printf(e->b, "%s\n\n", caption);
  }
}

static void t_row(emit *e) { e->col = 0, rb_printf(e->b, e->html ? "<tr>" : "|"); }
static void t_cell(emit *e, const char *s, int head) {
  if (e->html) rb_printf(e->b, head ? "<th>" : "<td>");
  else rb_printf(e->b, " ");
  put_escaped(e, s);
  rb_printf(e->b, e->html ? (head ? "</th>" : "</td>") : " |");
  e->col++;
}
static void t_row_end(emit *e, int head) {
  rb_printf(e->b, e->html ? "</tr>\n" : "\n");
  if (head && !e->html) {
    rb_printf(e->b, "|");
    for (int i = 0; i < e->col; i++) rb_printf(e->b, "---|");
    rb_printf(e->b, "\n");
  }
}
static void t_end(emit *e) { rb_printf(e->b, e->html ? "</table>\n" : "\n"); }

/* A body row's first cells, the same in every table: model, method label, bits. */
static void row_lead(emit *e, const qlm_rep_row *r, char *buf, size_t n) {
  t_row(e);
  t_cell(e, r->model, 0);
  t_cell(e, r->label, 0);
  fmt_bits(buf, n, r);
  t_cell(e, buf, 0);
}

static void inference_table(emit *e, const qlm_rep_row *s, int n) {
  t_begin(e, "Inference (seed 000 Tables 3 and 5): mean ± sd over repetitions, (relative change vs base)");
  t_row(e);
  const char *head[] = {"model", "method", "bits", "batch", "runs"};
  for (int i = 0; i < 5; i++) t_cell(e, head[i], 1);
  for (int c = 0; c < NCOLS(infer_cols); c++)
    if (rep_section_has(s, n, infer_cols[c])) t_cell(e, qlm_rep_metrics[infer_cols[c]].title, 1);
  t_row_end(e, 1);
  for (int i = 0; i < n; i++) {
    const qlm_rep_row *r = &s[i];
    char buf[160];
    row_lead(e, r, buf, sizeof buf);
    t_cell(e, r->batch[0] ? r->batch : "–", 0);
    snprintf(buf, sizeof buf, "%d", r->n_runs);
    t_cell(e, buf, 0);
    for (int c = 0; c < NCOLS(infer_cols); c++)
      if (rep_section_has(s, n, infer_cols[c])) fmt_cell(buf, sizeof buf, r, infer_cols[c]), t_cell(e, buf, 0);
    t_row_end(e, 0);
  }
  t_end(e);
}

static void quant_table(emit *e, const qlm_rep_row *s, int n) {
  int any = 0;
  for (int i = 0; i < n; i++) any |= !s[i].is_base;
  if (!any) return;
  t_begin(e, "Quantization (seed 000 Tables 4 and 6): calibrate + quantize phases, mean ± sd over quantize runs");
  t_row(e);
  const char *head[] = {"model", "method", "bits", "quantize runs"};
  for (int i = 0; i < 4; i++) t_cell(e, head[i], 1);
  for (int c = 0; c < NCOLS(quant_cols); c++) t_cell(e, qlm_rep_metrics[quant_cols[c]].title, 1);
  t_row_end(e, 1);
  for (int i = 0; i < n; i++) {
    const qlm_rep_row *r = &s[i];
    if (r->is_base) continue;
    char buf[160];
    row_lead(e, r, buf, sizeof buf);
    snprintf(buf, sizeof buf, "%d", r->n_qruns);
    t_cell(e, buf, 0);
    for (int c = 0; c < NCOLS(quant_cols); c++) {
      qlm_rep_row tmp = *r;
      tmp.is_base = 1; /* no relative change: the base model is not quantized */
      fmt_cell(buf, sizeof buf, &tmp, quant_cols[c]);
      t_cell(e, buf, 0);
    }
    t_row_end(e, 0);
  }
  t_end(e);
}

static void score_table(emit *e, const qlm_rep_row *s, int n) {
  if (!rep_section_has(s, n, QLM_RM_PPL) || !rep_section_has(s, n, QLM_RM_CO2)) return;
  t_begin(e, "Combined metric (lower is better): seed 000 softmax(ppl) × CO₂ and the log-ppl alternative");
  t_row(e);
  const char *head[] = {"method", "perplexity", "gCO₂e", "Score softmax(ppl)×CO₂", "Score softmax(ln ppl)×CO₂"};
  for (int i = 0; i < 5; i++) t_cell(e, head[i], 1);
  t_row_end(e, 1);
  for (int i = 0; i < n; i++) {
    char buf[64];
    t_row(e);
    t_cell(e, s[i].label, 0);
    fmt_num(buf, sizeof buf, s[i].m[QLM_RM_PPL].mean), t_cell(e, buf, 0);
    fmt_num(buf, sizeof buf, s[i].m[QLM_RM_CO2].mean), t_cell(e, buf, 0);
    fmt_num(buf, sizeof buf, s[i].score_softmax), t_cell(e, buf, 0);
    fmt_num(buf, sizeof buf, s[i].score_logppl), t_cell(e, buf, 0);
    t_row_end(e, 0);
  }
  t_end(e);
}

static int section_len(const qlm_report *rep, int i) {
  int j = i;
  while (j < rep->n_rows && rep->rows[j].section == rep->rows[i].section) j++;
  return j - i;
}

static void now_text(char *buf, size_t n) {
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, n, "%Y-%m-%d %H:%M:%S %z", &tm);
}

void rep_markdown(const qlm_report *rep, rbuf *b) {
  emit e = {b, 0, 0};
  char when[64];
  now_text(when, sizeof when);
  rb_printf(b, "# qlm report\n\nDatabase `%s`: %d runs, %d evaluation results in %d rows (repetitions merged: "
               "mean ± sample sd), %d sections. Written %s.\n\n", rep->db_path, rep->n_runs, rep->n_results,
            rep->n_rows, rep->n_sections, when);
  for (int i = 0, n; i < rep->n_rows; i += n) {
    n = section_len(rep, i);
    const qlm_rep_row *s = &rep->rows[i];
    char title[400];
    rep_section_title(s, title, sizeof title);
    rb_printf(b, "## %s\n\n", title);
    inference_table(&e, s, n);
    quant_table(&e, s, n);
    score_table(&e, s, n);
  }
  rb_printf(b, "## About the combined metric\n\n%s\n", rep_score_text);
}

/* ---- CSV ---- */

static void csv_str(rbuf *b, const char *s) {
  if (!strpbrk(s, ",\"\n\r")) {
    rb_printf(b, "%s,", s);
    return;
  }
  rb_printf(b, "\"");
  for (; *s; s++) rb_printf(b, *s == '"' ? "\"\"" : "%c", *s);
  rb_printf(b, "\",");
}

static void csv_num(rbuf *b, double v) {
  if (isfinite(v)) rb_printf(b, "%.17g,", v);
  else rb_printf(b, ",");
}

static void csv_end(rbuf *b) {
  if (b->n && b->p[b->n - 1] == ',') b->p[--b->n] = 0;
  rb_printf(b, "\n");
}

static void csv_keys(rbuf *b, const qlm_rep_row *r) {
  rb_printf(b, "%d,", r->section);
  csv_str(b, r->task), csv_str(b, r->protocol), csv_str(b, r->settings), csv_str(b, r->batch);
  csv_str(b, r->model), csv_str(b, r->model_key), csv_str(b, r->label), csv_str(b, r->method);
  csv_num(b, r->bits);
  rb_printf(b, "%ld,", r->group);
  csv_str(b, r->options), csv_str(b, r->config_key);
  rb_printf(b, "%d,", r->is_base);
}

static const char csv_key_head[] =
    "section,task,protocol,settings,batch,model,model_key,label,method,bits,group,options,config_key,is_base,";

void rep_csv_inference(const qlm_report *rep, rbuf *b) {
  rb_printf(b, "%sn_runs,run_ids,", csv_key_head);
  for (int k = 0; k <= QLM_RM_GPU_WH; k++)
    rb_printf(b, "%s_mean,%s_sd,%s_n,%s_rel,", qlm_rep_metrics[k].key, qlm_rep_metrics[k].key, qlm_rep_metrics[k].key,
              qlm_rep_metrics[k].key);
  rb_printf(b, "g_per_kwh,pue");
  csv_end(b);
  for (int i = 0; i < rep->n_rows; i++) {
    const qlm_rep_row *r = &rep->rows[i];
    csv_keys(b, r);
    rb_printf(b, "%d,", r->n_runs);
    csv_str(b, r->run_ids);
    for (int k = 0; k <= QLM_RM_GPU_WH; k++) {
      csv_num(b, r->m[k].mean), csv_num(b, r->m[k].sd);
      rb_printf(b, "%d,", r->m[k].n);
      csv_num(b, r->rel[k]);
    }
    csv_num(b, r->g_per_kwh), csv_num(b, r->pue);
    csv_end(b);
  }
}

void rep_csv_quantization(const qlm_report *rep, rbuf *b) {
  rb_printf(b, "%sn_quantize_runs,", csv_key_head);
  for (int k = QLM_RM_QTIME; k < QLM_RM_N; k++)
    rb_printf(b, "%s_mean,%s_sd,%s_n,", qlm_rep_metrics[k].key, qlm_rep_metrics[k].key, qlm_rep_metrics[k].key);
  csv_end(b);
  for (int i = 0; i < rep->n_rows; i++) {
    const qlm_rep_row *r = &rep->rows[i];
    if (r->is_base) continue;
    csv_keys(b, r);
    rb_printf(b, "%d,", r->n_qruns);
    for (int k = QLM_RM_QTIME; k < QLM_RM_N; k++) {
      csv_num(b, r->m[k].mean), csv_num(b, r->m[k].sd);
      rb_printf(b, "%d,", r->m[k].n);
    }
    csv_end(b);
  }
}

void rep_csv_scores(const qlm_report *rep, rbuf *b) {
  rb_printf(b, "%sppl_mean,co2_g_mean,score_softmax,score_logppl", csv_key_head);
  csv_end(b);
  for (int i = 0; i < rep->n_rows; i++) {
    const qlm_rep_row *r = &rep->rows[i];
    if (!r->m[QLM_RM_PPL].n) continue;
    csv_keys(b, r);
    csv_num(b, r->m[QLM_RM_PPL].mean), csv_num(b, r->m[QLM_RM_CO2].mean);
    csv_num(b, r->score_softmax), csv_num(b, r->score_logppl);
    csv_end(b);
  }
}

/* ---- HTML: one self-contained page (inline CSS, charts as inline SVG) ---- */

static const char css[] =
    "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}"
    "h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}"
    "table{border-collapse:collapse;margin:1em 0;font-size:.85em}caption{text-align:left;font-weight:bold;"
    "padding:.3em 0}th,td{border:1px solid #bbb;padding:.25em .5em;text-align:right}th{background:#eef}"
    "td:nth-child(-n+2){text-align:left}tr:nth-child(even){background:#f7f7f7}"
    ".charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0;border:1px solid #ddd;padding:.5em}"
    "figure svg{max-width:100%;height:auto;display:block}figcaption{font-size:.8em;color:#555}"
    "p.note{font-size:.9em;max-width:60em}";

/* The SVG text with its ids made unique in the page: cairo names glyphs and clips "glyph0-1",
 * "clip1" in every file, and ids must not repeat across the inline SVGs of one document. */
static void inline_svg(rbuf *b, const rbuf *svg, int idx) {
  const char *s = svg->p ? svg->p : "";
  const char *start = strstr(s, "<svg");
  if (!start) return;
  char pre[16];
  snprintf(pre, sizeof pre, "c%d-", idx);
  static const char *const pats[] = {"id=\"", "href=\"#", "url(#"};
  for (const char *p = start; *p;) {
    int hit = 0;
    for (int k = 0; k < 3 && !hit; k++) {
      size_t l = strlen(pats[k]);
      if (!strncmp(p, pats[k], l)) rb_put(b, p, l), rb_printf(b, "%s", pre), p += l, hit = 1;
    }
    if (!hit) rb_put(b, p++, 1);
  }
  rb_printf(b, "\n");
}

static void html_charts(rbuf *b, const rep_chart *c, int n, int section) {
  int any = 0;
  for (int i = 0; i < n; i++) {
    if (c[i].section != section) continue;
    if (!any) rb_printf(b, "<div class=\"charts\">\n");
    any = 1;
    emit e = {b, 1, 0};
    rb_printf(b, "<figure id=\"fig-%s\">", c[i].name);
    inline_svg(b, &c[i].svg, i);
    rb_printf(b, "<figcaption>");
    put_escaped(&e, c[i].title);
    rb_printf(b, " — <code>charts/%s.svg</code>, <code>.png</code></figcaption></figure>\n", c[i].name);
  }
  if (any) rb_printf(b, "</div>\n");
}

void rep_html(const qlm_report *rep, const rep_chart *charts, int n_charts, rbuf *b) {
  emit e = {b, 1, 0};
  char when[64];
  now_text(when, sizeof when);
  rb_printf(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>qlm report</title>\n"
               "<style>%s</style></head><body>\n<h1>qlm report</h1>\n<p class=\"note\">Database <code>", css);
  put_escaped(&e, rep->db_path);
  rb_printf(b, "</code>: %d runs, %d evaluation results in %d rows (repetitions merged: mean ± sample sd), %d "
               "sections. Written %s. Tables as CSV: <code>inference.csv</code>, <code>quantization.csv</code>, "
               "<code>scores.csv</code>.</p>\n", rep->n_runs, rep->n_results, rep->n_rows, rep->n_sections, when);
  for (int i = 0, n; i < rep->n_rows; i += n) {
    n = section_len(rep, i);
    const qlm_rep_row *s = &rep->rows[i];
    char title[400];
    rep_section_title(s, title, sizeof title);
    rb_printf(b, "<section><h2>");
    put_escaped(&e, title);
    rb_printf(b, "</h2>\n");
    inference_table(&e, s, n);
    quant_table(&e, s, n);
    score_table(&e, s, n);
    html_charts(b, charts, n_charts, s->section);
    rb_printf(b, "</section>\n");
  }
  rb_printf(b, "<section><h2>About the combined metric</h2>\n<p class=\"note\" id=\"score-note\">");
  put_escaped(&e, rep_score_text);
  rb_printf(b, "</p></section>\n</body></html>\n");
}
