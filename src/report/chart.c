/* chart.c — the report's charts, drawn once with cairo onto an SVG surface and once onto an
 * image surface (PNG). Four kinds, each with title, axes, ticks, labels and legend:
 *   horizontal bars (one metric per chart, ± sd whiskers; stacked for the CPU/RAM/GPU energy
 *   breakdown, seed 001 Figures 40–41), radar (methods at one bit width, seed 000 Figures 20–22),
 *   scatter (perplexity vs CO₂ with the Pareto frontier) and grouped bars (CO₂ of the same energy
 *   on each country's grid, seed 001 Figure 42, intensities from measure/co2.h).
 * Text uses cairo's toy API with DejaVu Sans. */
#include <cairo-svg.h>
#include <cairo.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "measure/co2.h"
#include "report/report_int.h"

enum { MAX_SERIES = 8 };

/* Okabe–Ito: distinguishable with the common colour-vision deficiencies */
static const double palette[MAX_SERIES][3] = {
    {0.000, 0.447, 0.698}, {0.902, 0.624, 0.000}, {0.000, 0.620, 0.451}, {0.800, 0.475, 0.655},
    {0.337, 0.706, 0.914}, {0.835, 0.369, 0.000}, {0.500, 0.500, 0.500}, {0.941, 0.894, 0.259},
};

static void color(cairo_t *cr, int i, double alpha) {
  const double *c = palette[((i % MAX_SERIES) + MAX_SERIES) % MAX_SERIES];
  cairo_set_source_rgba(cr, c[0], c[1], c[2], alpha);
}

/* ---- text ---- */

static void font(cairo_t *cr, double size, int bold) {
  cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
}

static double text_w(cairo_t *cr, const char *s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s, &e);
  return e.x_advance;
}

/* Text with its anchor at x (ha: 0 left, 0.5 centre, 1 right) and its middle at y. */
static void text(cairo_t *cr, double x, double y, double ha, const char *s) {
  cairo_font_extents_t fe;
  cairo_font_extents(cr, &fe);
  cairo_move_to(cr, x - ha * text_w(cr, s), y + (fe.ascent - fe.descent) / 2);
  cairo_show_text(cr, s);
}

static void text_vertical(cairo_t *cr, double x, double y, const char *s) {
  cairo_save(cr);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, -M_PI / 2);
  text(cr, 0, 0, 0.5, s);
  cairo_restore(cr);
}

static void title(cairo_t *cr, double w, const char *s) {
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  font(cr, 15, 1);
  text(cr, w / 2, 20, 0.5, s);
}

static void background(cairo_t *cr) {
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
}

/* ---- axes ---- */

typedef struct axis {
  double lo, hi, step; /* nice bounds and tick spacing */
} axis;

static axis nice_axis(double lo, double hi, int target) {
  if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
  if (hi <= lo) hi = lo + (lo != 0 ? fabs(lo) * 0.1 : 1);
  double raw = (hi - lo) / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
  double step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  return (axis){floor(lo / step + 1e-9) * step, ceil(hi / step - 1e-9) * step, step};
}

static void tick_label(char *buf, size_t n, double v, double step) {
  if (fabs(v) < step * 1e-6) v = 0;
  int dec = (int)-floor(log10(step) + 1e-9);
  if (fabs(v) >= 1e6 || (v != 0 && fabs(v) < 1e-4)) snprintf(buf, n, "%.2g", v);
  else snprintf(buf, n, "%.*f", dec > 0 ? (dec < 8 ? dec : 8) : 0, v);
}

static void value_label(char *buf, size_t n, double v) {
  if (!isfinite(v)) snprintf(buf, n, "n/a");
  else if (fabs(v) >= 1e4 && fabs(v) < 1e9) snprintf(buf, n, "%.0f", v);
  else if (fabs(v) >= 1e9 || (v != 0 && fabs(v) < 1e-3)) snprintf(buf, n, "%.3g", v);
  else snprintf(buf, n, "%.4g", v);
}

/* ---- horizontal bars (one metric; stacked parts when parts != NULL) ---- */

typedef struct hbar {
  const char *title, *xlabel;
  int n;
  const char *const *labels;  /* [n] */
  const double *v, *sd;       /* [n] bar length and whisker (NaN: none) */
  int n_parts;                /* 0, or stacked parts */
  const double *parts[3];     /* [n_parts][n] */
  const char *part_names[3];
  int base;                   /* row drawn in grey (the base), -1 = none */
} hbar;

static void draw_hbar(cairo_t *cr, double W, double H, const void *ctx) {
  const hbar *c = ctx;
  background(cr);
  title(cr, W, c->title);
  font(cr, 12, 0);
  double lw = 0;
  for (int i = 0; i < c->n; i++) lw = fmax(lw, text_w(cr, c->labels[i]));
  lw = fmin(lw, W * 0.4);
  double x0 = 16 + lw, x1 = W - 60, y0 = c->n_parts ? 62 : 40, y1 = H - 50;
  double lo = 0, hi = 0;
  for (int i = 0; i < c->n; i++) {
    double v = c->v[i], e = isfinite(c->sd[i]) ? c->sd[i] : 0;
    if (isfinite(v)) lo = fmin(lo, v - e), hi = fmax(hi, v + e);
  }
  axis a = nice_axis(lo, hi, 6);
  double sx = (x1 - x0) / (a.hi - a.lo);
#define XP(v) (x0 + ((v) - a.lo) * sx)
  /* grid and ticks */
  font(cr, 11, 0);
  for (double t = a.lo; t <= a.hi + a.step * 1e-6; t += a.step) {
    cairo_set_source_rgb(cr, 0.88, 0.88, 0.88);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, XP(t), y0), cairo_line_to(cr, XP(t), y1), cairo_stroke(cr);
    char buf[32];
    tick_label(buf, sizeof buf, t, a.step);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    text(cr, XP(t), y1 + 12, 0.5, buf);
  }
  font(cr, 12, 0);
  text(cr, (x0 + x1) / 2, H - 16, 0.5, c->xlabel);
  if (c->n_parts) { /* legend above the plot */
    double lx = x0;
    for (int p = 0; p < c->n_parts; p++) {
      color(cr, p, 1);
      cairo_rectangle(cr, lx, 36, 12, 12), cairo_fill(cr);
      cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
      text(cr, lx + 16, 42, 0, c->part_names[p]);
      lx += 32 + text_w(cr, c->part_names[p]);
    }
  }
  double band = (y1 - y0) / (c->n > 0 ? c->n : 1), bh = band * 0.62;
  for (int i = 0; i < c->n; i++) {
    double yc = y0 + band * (i + 0.5);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    font(cr, 12, i == c->base);
    text(cr, x0 - 8, yc, 1, c->labels[i]);
    font(cr, 11, 0);
    double v = c->v[i];
    char buf[48];
    value_label(buf, sizeof buf, v);
    if (!isfinite(v)) {
      cairo_set_source_rgb(cr, 0.5, 0.5, 0.5);
      text(cr, XP(0) + 4, yc, 0, buf);
      continue;
    }
    if (c->n_parts) {
      double acc = 0;
      for (int p = 0; p < c->n_parts; p++) {
        double pv = c->parts[p][i];
        if (!isfinite(pv) || pv <= 0) continue;
        color(cr, p, 1);
        cairo_rectangle(cr, XP(acc), yc - bh / 2, (pv)*sx, bh), cairo_fill(cr);
        acc += pv;
      }
    } else {
      if (i == c->base) cairo_set_source_rgb(cr, 0.55, 0.55, 0.55);
      else color(cr, 0, 1);
      double xa = XP(fmin(0, v)), xb = XP(fmax(0, v));
      cairo_rectangle(cr, xa, yc - bh / 2, xb - xa, bh), cairo_fill(cr);
      if (isfinite(c->sd[i]) && c->sd[i] > 0) { /* ± sd whisker */
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        cairo_set_line_width(cr, 1.2);
        double e0 = XP(v - c->sd[i]), e1 = XP(v + c->sd[i]);
        cairo_move_to(cr, e0, yc), cairo_line_to(cr, e1, yc);
        cairo_move_to(cr, e0, yc - bh / 4), cairo_line_to(cr, e0, yc + bh / 4);
        cairo_move_to(cr, e1, yc - bh / 4), cairo_line_to(cr, e1, yc + bh / 4);
        cairo_stroke(cr);
      }
    }
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    double end = v + (isfinite(c->sd[i]) && !c->n_parts ? c->sd[i] : 0);
    text(cr, XP(fmax(0, end)) + 4, yc, 0, buf);
  }
  /* axis line */
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_set_line_width(cr, 1.2);
  cairo_move_to(cr, XP(0), y0), cairo_line_to(cr, XP(0), y1);
  cairo_move_to(cr, x0, y1), cairo_line_to(cr, x1, y1), cairo_stroke(cr);
#undef XP
}

/* ---- radar ---- */

typedef struct radar {
  const char *title;
  int n_axes, n_series;
  const char *const *axes;    /* [n_axes] */
  const char *const *names;   /* [n_series] */
  const double *v;            /* [n_series][n_axes] ratio to the base, higher = better (NaN = 0) */
} radar;

static void draw_radar(cairo_t *cr, double W, double H, const void *ctx) {
  const radar *c = ctx;
  background(cr);
  title(cr, W, c->title);
  double cx = W * 0.38, cy = H * 0.54, R = fmin(W * 0.27, H * 0.34), vmax = 1.25;
  for (int i = 0; i < c->n_series * c->n_axes; i++)
    if (isfinite(c->v[i])) vmax = fmax(vmax, c->v[i]);
  axis a = nice_axis(0, vmax, 4);
  double k = R / a.hi;
#define ANG(j) (-M_PI / 2 + 2 * M_PI * (j) / c->n_axes)
  font(cr, 10, 0);
  for (double t = a.step; t <= a.hi + a.step * 1e-6; t += a.step) { /* rings */
    cairo_set_source_rgb(cr, 0.85, 0.85, 0.85);
    cairo_set_line_width(cr, 1);
    for (int j = 0; j <= c->n_axes; j++) {
      double x = cx + t * k * cos(ANG(j)), y = cy + t * k * sin(ANG(j));
      j ? cairo_line_to(cr, x, y) : cairo_move_to(cr, x, y);
    }
    cairo_stroke(cr);
    char buf[32];
    tick_label(buf, sizeof buf, t, a.step);
    cairo_set_source_rgb(cr, 0.4, 0.4, 0.4);
    text(cr, cx + 4, cy - t * k, 0, buf);
  }
  font(cr, 12, 0);
  for (int j = 0; j < c->n_axes; j++) { /* spokes and their names */
    cairo_set_source_rgb(cr, 0.6, 0.6, 0.6);
    cairo_move_to(cr, cx, cy), cairo_line_to(cr, cx + R * cos(ANG(j)), cy + R * sin(ANG(j))), cairo_stroke(cr);
    double ca = cos(ANG(j));
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, cx + (R + 14) * ca, cy + (R + 14) * sin(ANG(j)), ca > 0.3 ? 0 : ca < -0.3 ? 1 : 0.5, c->axes[j]);
  }
  /* the base: 1.0 on every axis */
  cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
  cairo_set_line_width(cr, 1.5);
  double dash[] = {5, 4};
  cairo_set_dash(cr, dash, 2, 0);
  for (int j = 0; j <= c->n_axes; j++) {
    double x = cx + k * cos(ANG(j)), y = cy + k * sin(ANG(j));
    j ? cairo_line_to(cr, x, y) : cairo_move_to(cr, x, y);
  }
  cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  for (int s = 0; s < c->n_series; s++) {
    for (int j = 0; j <= c->n_axes; j++) {
      double v = c->v[s * c->n_axes + j % c->n_axes];
      if (!isfinite(v) || v < 0) v = 0;
      double x = cx + v * k * cos(ANG(j)), y = cy + v * k * sin(ANG(j));
      j ? cairo_line_to(cr, x, y) : cairo_move_to(cr, x, y);
    }
    color(cr, s, 0.15);
    cairo_fill_preserve(cr);
    color(cr, s, 1);
    cairo_set_line_width(cr, 2.2);
    cairo_stroke(cr);
  }
#undef ANG
  /* legend */
  double lx = W * 0.72, ly = 60;
  font(cr, 12, 0);
  cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
  cairo_set_dash(cr, dash, 2, 0);
  cairo_move_to(cr, lx, ly), cairo_line_to(cr, lx + 22, ly), cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  text(cr, lx + 28, ly, 0, "base = 1");
  for (int s = 0; s < c->n_series; s++) {
    ly += 22;
    color(cr, s, 1);
    cairo_rectangle(cr, lx, ly - 6, 22, 12), cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, lx + 28, ly, 0, c->names[s]);
  }
  font(cr, 10, 0);
  cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
  text(cr, lx, H - 30, 0, "ratio to the base, oriented so");
  text(cr, lx, H - 17, 0, "that outward is better");
}

/* ---- scatter with Pareto frontier ---- */

typedef struct scatter {
  const char *title, *xlabel, *ylabel;
  int n;
  const char *const *labels;
  const double *x, *y;        /* [n]; both minimised */
  const int *front;           /* [n] 1 = on the Pareto frontier */
} scatter;

static void draw_scatter(cairo_t *cr, double W, double H, const void *ctx) {
  const scatter *c = ctx;
  background(cr);
  title(cr, W, c->title);
  double x0 = 78, x1 = W - 30, y0 = 62, y1 = H - 56;
  double xl = INFINITY, xh = -INFINITY, yl = INFINITY, yh = -INFINITY;
  for (int i = 0; i < c->n; i++)
    if (isfinite(c->x[i]) && isfinite(c->y[i]))
      xl = fmin(xl, c->x[i]), xh = fmax(xh, c->x[i]), yl = fmin(yl, c->y[i]), yh = fmax(yh, c->y[i]);
  double px = (xh - xl) * 0.08 + fabs(xh) * 0.02 + 1e-12, py = (yh - yl) * 0.08 + fabs(yh) * 0.02 + 1e-12;
  axis ax = nice_axis(xl - px, xh + px, 6), ay = nice_axis(yl - py, yh + py, 6);
#define XP(v) (x0 + ((v) - ax.lo) / (ax.hi - ax.lo) * (x1 - x0))
#define YP(v) (y1 - ((v) - ay.lo) / (ay.hi - ay.lo) * (y1 - y0))
  font(cr, 11, 0);
  char buf[48];
  for (double t = ax.lo; t <= ax.hi + ax.step * 1e-6; t += ax.step) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, XP(t), y0), cairo_line_to(cr, XP(t), y1), cairo_stroke(cr);
    tick_label(buf, sizeof buf, t, ax.step);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    text(cr, XP(t), y1 + 12, 0.5, buf);
  }
  for (double t = ay.lo; t <= ay.hi + ay.step * 1e-6; t += ay.step) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x0, YP(t)), cairo_line_to(cr, x1, YP(t)), cairo_stroke(cr);
    tick_label(buf, sizeof buf, t, ay.step);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    text(cr, x0 - 6, YP(t), 1, buf);
  }
  cairo_set_line_width(cr, 1.2);
  cairo_move_to(cr, x0, y0), cairo_line_to(cr, x0, y1), cairo_line_to(cr, x1, y1), cairo_stroke(cr);
  font(cr, 12, 0);
  text(cr, (x0 + x1) / 2, H - 16, 0.5, c->xlabel);
  text_vertical(cr, 18, (y0 + y1) / 2, c->ylabel);
  /* frontier: its points in x order joined by a staircase (the region it dominates) */
  int order[256], nf = 0;
  for (int i = 0; i < c->n && nf < 256; i++)
    if (c->front[i] && isfinite(c->x[i]) && isfinite(c->y[i])) order[nf++] = i;
  for (int i = 1; i < nf; i++)
    for (int j = i; j > 0 && c->x[order[j]] < c->x[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1], order[j - 1] = t;
    }
  cairo_set_source_rgb(cr, 0.8, 0.1, 0.1);
  cairo_set_line_width(cr, 1.8);
  double dash[] = {6, 4};
  cairo_set_dash(cr, dash, 2, 0);
  for (int i = 0; i < nf; i++) {
    double x = XP(c->x[order[i]]), y = YP(c->y[order[i]]);
    if (i == 0) cairo_move_to(cr, x, y);
    else cairo_line_to(cr, x, YP(c->y[order[i - 1]])), cairo_line_to(cr, x, y);
  }
  cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  font(cr, 10, 0);
  for (int i = 0; i < c->n; i++) {
    if (!isfinite(c->x[i]) || !isfinite(c->y[i])) continue;
    double x = XP(c->x[i]), y = YP(c->y[i]);
    color(cr, i, 1);
    cairo_arc(cr, x, y, 5, 0, 2 * M_PI), cairo_fill(cr);
    if (c->front[i]) {
      cairo_set_source_rgb(cr, 0.8, 0.1, 0.1);
      cairo_set_line_width(cr, 1.8);
      cairo_arc(cr, x, y, 8.5, 0, 2 * M_PI), cairo_stroke(cr);
    }
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, x + 10, y - 9, x > (x0 + x1) * 0.7 ? 1 : 0, c->labels[i]);
  }
  /* legend */
  font(cr, 11, 0);
  cairo_set_source_rgb(cr, 0.8, 0.1, 0.1);
  cairo_set_dash(cr, dash, 2, 0);
  cairo_move_to(cr, x0 + 10, 44), cairo_line_to(cr, x0 + 36, 44), cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  cairo_arc(cr, x0 + 23, 44, 6, 0, 2 * M_PI), cairo_stroke(cr);
  cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
  text(cr, x0 + 44, 44, 0, "Pareto frontier: no other run has both lower CO\u2082 and lower perplexity");
#undef XP
#undef YP
}

/* ---- grouped vertical bars ---- */

typedef struct gbar {
  const char *title, *ylabel;
  int n_cat, n_series;
  const char *const *cats;    /* [n_cat] */
  const char *const *names;   /* [n_series] */
  const double *v;            /* [n_series][n_cat] */
} gbar;

static void draw_gbar(cairo_t *cr, double W, double H, const void *ctx) {
  const gbar *c = ctx;
  background(cr);
  title(cr, W, c->title);
  double x0 = 78, x1 = W - 190, y0 = 44, y1 = H - 56, hi = 0;
  for (int i = 0; i < c->n_series * c->n_cat; i++)
    if (isfinite(c->v[i])) hi = fmax(hi, c->v[i]);
  axis a = nice_axis(0, hi, 6);
#define YP(v) (y1 - ((v) - a.lo) / (a.hi - a.lo) * (y1 - y0))
  font(cr, 11, 0);
  char buf[48];
  for (double t = a.lo; t <= a.hi + a.step * 1e-6; t += a.step) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, x0, YP(t)), cairo_line_to(cr, x1, YP(t)), cairo_stroke(cr);
    tick_label(buf, sizeof buf, t, a.step);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    text(cr, x0 - 6, YP(t), 1, buf);
  }
  double gw = (x1 - x0) / (c->n_cat > 0 ? c->n_cat : 1), bw = gw * 0.8 / (c->n_series > 0 ? c->n_series : 1);
  for (int k = 0; k < c->n_cat; k++) {
    for (int s = 0; s < c->n_series; s++) {
      double v = c->v[s * c->n_cat + k];
      if (!isfinite(v)) continue;
      color(cr, s, 1);
      cairo_rectangle(cr, x0 + gw * k + gw * 0.1 + bw * s, YP(v), bw, YP(0) - YP(v)), cairo_fill(cr);
    }
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, x0 + gw * (k + 0.5), y1 + 12, 0.5, c->cats[k]);
  }
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_set_line_width(cr, 1.2);
  cairo_move_to(cr, x0, y0), cairo_line_to(cr, x0, y1), cairo_line_to(cr, x1, y1), cairo_stroke(cr);
  font(cr, 12, 0);
  text(cr, (x0 + x1) / 2, H - 16, 0.5, "grid (ISO 3166 alpha-3; WLD = world average)");
  text_vertical(cr, 18, (y0 + y1) / 2, c->ylabel);
  double ly = y0 + 6;
  for (int s = 0; s < c->n_series; s++, ly += 20) {
    color(cr, s, 1);
    cairo_rectangle(cr, x1 + 16, ly - 6, 14, 12), cairo_fill(cr);
    cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
    text(cr, x1 + 36, ly, 0, c->names[s]);
  }
#undef YP
}

/* ---- rendering ---- */

static cairo_status_t to_rbuf(void *closure, const unsigned char *data, unsigned int n) {
  rbuf *b = closure;
  rb_put(b, data, n);
  return b->oom ? CAIRO_STATUS_NO_MEMORY : CAIRO_STATUS_SUCCESS;
}

typedef void (*draw_fn)(cairo_t *cr, double w, double h, const void *ctx);

static int draw_on(cairo_surface_t *s, draw_fn fn, const void *ctx, int w, int h, const char *name, qlm_error *err) {
  cairo_t *cr = cairo_create(s);
  fn(cr, w, h, ctx);
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  if (st != CAIRO_STATUS_SUCCESS)
    return qlm_fail(err, QLM_EINTERNAL, "chart %s: cairo: %s", name, cairo_status_to_string(st));
  return QLM_OK;
}

static int render(rep_chart *out, draw_fn fn, const void *ctx, qlm_error *err) {
  cairo_surface_t *s = cairo_svg_surface_create_for_stream(to_rbuf, &out->svg, out->w, out->h);
  cairo_svg_surface_set_document_unit(s, CAIRO_SVG_UNIT_PX);
  int rc = draw_on(s, fn, ctx, out->w, out->h, out->name, err);
  cairo_surface_finish(s);
  cairo_status_t st = cairo_surface_status(s);
  cairo_surface_destroy(s);
  if (!rc && (st != CAIRO_STATUS_SUCCESS || out->svg.oom))
    rc = qlm_fail(err, QLM_ENOMEM, "chart %s: SVG: %s", out->name, cairo_status_to_string(st));
  if (rc) return rc;
  s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, out->w, out->h);
  rc = draw_on(s, fn, ctx, out->w, out->h, out->name, err);
  if (!rc && (st = cairo_surface_write_to_png_stream(s, to_rbuf, &out->png)) != CAIRO_STATUS_SUCCESS)
    rc = qlm_fail(err, QLM_ENOMEM, "chart %s: PNG: %s", out->name, cairo_status_to_string(st));
  cairo_surface_destroy(s);
  return rc;
}

/* ---- which charts a report has ---- */

typedef struct chart_list {
  rep_chart *c;
  int n, cap;
} chart_list;

static rep_chart *new_chart(chart_list *L, int section, int w, int h, qlm_error *err, const char *title,
                            const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static rep_chart *new_chart(chart_list *L, int section, int w, int h, qlm_error *err, const char *title,
                            const char *fmt, ...) {
  if (L->n == L->cap) {
    int nc = L->cap ? 2 * L->cap : 16;
    rep_chart *p = realloc(L->c, (size_t)nc * sizeof *p);
    if (!p) return qlm_fail(err, QLM_ENOMEM, "report: out of memory (%d charts)", nc), NULL;
    L->c = p, L->cap = nc;
  }
  rep_chart *c = &L->c[L->n++];
  memset(c, 0, sizeof *c);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->name, sizeof c->name, fmt, ap);
  va_end(ap);
  snprintf(c->title, sizeof c->title, "%s", title);
  c->section = section, c->w = w, c->h = h;
  return c;
}

static const int bar_metrics[] = {QLM_RM_ACC,    QLM_RM_F1,  QLM_RM_PPL,   QLM_RM_TIME, QLM_RM_MEM,
                                  QLM_RM_ENERGY, QLM_RM_CO2, QLM_RM_QTIME, QLM_RM_QCO2};

static int bar_charts(chart_list *L, const qlm_rep_row *s, int n, const char *stitle, qlm_error *err) {
  const char *labels[n];
  double v[n], sd[n];
  int base = s[0].is_base ? 0 : -1;
  for (int i = 0; i < n; i++) labels[i] = s[i].label;
  for (size_t m = 0; m < sizeof bar_metrics / sizeof bar_metrics[0]; m++) {
    int k = bar_metrics[m];
    if (!rep_section_has(s, n, k)) continue;
    for (int i = 0; i < n; i++) v[i] = s[i].m[k].mean, sd[i] = s[i].m[k].sd;
    char t[192];
    rep_textf(t, sizeof t, "%s — %s", qlm_rep_metrics[k].title, stitle);
    rep_chart *c = new_chart(L, s[0].section, 760, 110 + 30 * n, err, t, "s%d_bar_%s", s[0].section, qlm_rep_metrics[k].key);
    if (!c) return err->code;
    hbar h = {t, qlm_rep_metrics[k].title, n, labels, v, sd, 0, {0}, {0}, base};
    if (render(c, draw_hbar, &h, err)) return err->code;
  }
  return QLM_OK;
}

/* Radar per bit width: each method's ratio to the base on every axis, oriented so that larger is
 * better (quality: value/base, or base/value for perplexity; costs: base/value). */
static int radar_charts(chart_list *L, const qlm_rep_row *s, int n, const char *stitle, qlm_error *err) {
  if (!s[0].is_base) return QLM_OK;
  static const struct { int k; const char *name; } ax_all[] = {
      {QLM_RM_ACC, "accuracy"}, {QLM_RM_F1, "F1"},         {QLM_RM_PPL, "1/perplexity"}, {QLM_RM_TIME, "speed"},
      {QLM_RM_MEM, "1/memory"}, {QLM_RM_ENERGY, "1/energy"}, {QLM_RM_CO2, "1/CO\u2082"}};
  const char *axes[7];
  int ak[7], na = 0;
  for (int j = 0; j < 7; j++) {
    double b = s[0].m[ax_all[j].k].mean;
    if (isfinite(b) && b > 0) axes[na] = ax_all[j].name, ak[na++] = ax_all[j].k;
  }
  if (na < 3) return QLM_OK;
  double done[64];
  int nd = 0;
  for (int i = 1; i < n && nd < 64; i++) {
    double bits = s[i].bits;
    if (!isfinite(bits)) continue;
    int seen = 0;
    for (int d = 0; d < nd; d++) seen |= done[d] == bits;
    if (seen) continue;
    done[nd++] = bits;
    const char *names[MAX_SERIES];
    double v[MAX_SERIES * 7];
    int ns = 0;
    for (int r = 1; r < n && ns < MAX_SERIES; r++) {
      if (s[r].bits != bits) continue;
      names[ns] = s[r].label;
      for (int j = 0; j < na; j++) {
        double b = s[0].m[ak[j]].mean, x = s[r].m[ak[j]].mean;
        v[ns * na + j] = qlm_rep_metrics[ak[j]].lower_better ? b / x : x / b;
      }
      ns++;
    }
    char t[192];
    rep_textf(t, sizeof t, "%g-bit methods vs base — %s", bits, stitle);
    char bname[32];
    snprintf(bname, sizeof bname, "%g", bits);
    for (char *p = bname; *p; p++)
      if (*p == '.') *p = '_';
    rep_chart *c = new_chart(L, s[0].section, 760, 520, err, t, "s%d_radar_%sbit", s[0].section, bname);
    if (!c) return err->code;
    radar rd = {t, na, ns, axes, names, v};
    if (render(c, draw_radar, &rd, err)) return err->code;
  }
  return QLM_OK;
}

static int scatter_chart(chart_list *L, const qlm_rep_row *s, int n, const char *stitle, qlm_error *err) {
  const char *labels[n];
  double x[n], y[n];
  int front[n], usable = 0;
  for (int i = 0; i < n; i++) {
    labels[i] = s[i].label, x[i] = s[i].m[QLM_RM_CO2].mean, y[i] = s[i].m[QLM_RM_PPL].mean;
    usable += isfinite(x[i]) && isfinite(y[i]);
  }
  if (usable < 2) return QLM_OK;
  for (int i = 0; i < n; i++) { /* on the frontier: no other point is at least as good on both and better on one */
    front[i] = isfinite(x[i]) && isfinite(y[i]);
    for (int j = 0; j < n && front[i]; j++)
      if (j != i && isfinite(x[j]) && isfinite(y[j]) && x[j] <= x[i] && y[j] <= y[i] && (x[j] < x[i] || y[j] < y[i]))
        front[i] = 0;
  }
  char t[192];
  rep_textf(t, sizeof t, "perplexity vs emissions, Pareto frontier — %s", stitle);
  rep_chart *c = new_chart(L, s[0].section, 760, 520, err, t, "s%d_scatter_ppl_co2", s[0].section);
  if (!c) return err->code;
  scatter sc = {t, "evaluation emissions (gCO\u2082e)", "perplexity", n, labels, x, y, front};
  return render(c, draw_scatter, &sc, err);
}

static int energy_chart(chart_list *L, const qlm_rep_row *s, int n, const char *stitle, qlm_error *err) {
  if (!rep_section_has(s, n, QLM_RM_ENERGY)) return QLM_OK;
  const char *labels[n];
  double cpu[n], ram[n], gpu[n], tot[n], sd[n];
  for (int i = 0; i < n; i++) {
    labels[i] = s[i].label, cpu[i] = s[i].m[QLM_RM_CPU_WH].mean, ram[i] = s[i].m[QLM_RM_RAM_WH].mean;
    gpu[i] = s[i].m[QLM_RM_GPU_WH].mean, sd[i] = NAN;
    double parts[3] = {cpu[i], gpu[i], ram[i]}, sum = 0;
    int any = 0;
    for (int p = 0; p < 3; p++)
      if (isfinite(parts[p])) sum += parts[p], any = 1;
    tot[i] = any ? sum : NAN;
  }
  char t[192];
  rep_textf(t, sizeof t, "energy by component — %s", stitle);
  rep_chart *c = new_chart(L, s[0].section, 760, 130 + 30 * n, err, t, "s%d_energy_breakdown", s[0].section);
  if (!c) return err->code;
  hbar h = {t, "evaluation energy (Wh)", n, labels, tot, sd, 3, {cpu, gpu, ram}, {"CPU", "GPU", "RAM"}, -1};
  return render(c, draw_hbar, &h, err);
}

static int country_chart(chart_list *L, const qlm_rep_row *s, int n, const char *stitle, qlm_error *err) {
  if (!rep_section_has(s, n, QLM_RM_ENERGY)) return QLM_OK;
  const qlm_grid *g = qlm_grid_table();
  int nc = 0;
  while (g[nc].iso3 && nc < 32) nc++;
  const char *cats[32], *names[MAX_SERIES];
  double v[MAX_SERIES * 32];
  for (int k = 0; k < nc; k++) cats[k] = g[k].iso3;
  int ns = 0;
  for (int i = 0; i < n && ns < MAX_SERIES; i++) {
    double e = s[i].m[QLM_RM_ENERGY].mean;
    if (!isfinite(e)) continue;
    names[ns] = s[i].label;
    double pue = isfinite(s[i].pue) && s[i].pue > 0 ? s[i].pue : 1.0;
    for (int k = 0; k < nc; k++) v[ns * nc + k] = qlm_co2_grams(e / 1000.0, g[k].g_per_kwh, pue);
    ns++;
  }
  char t[192];
  rep_textf(t, sizeof t, "CO\u2082 of the same energy on each grid — %s", stitle);
  rep_chart *c = new_chart(L, s[0].section, 900, 460, err, t, "s%d_co2_by_country", s[0].section);
  if (!c) return err->code;
  gbar gb = {t, "evaluation emissions (gCO\u2082e)", nc, ns, cats, names, v};
  return render(c, draw_gbar, &gb, err);
}

int rep_charts_make(const qlm_report *rep, rep_chart **out, int *n_out, qlm_error *err) {
  chart_list L = {0};
  int rc = QLM_OK;
  for (int i = 0, n; !rc && i < rep->n_rows; i += n) {
    n = 0;
    while (i + n < rep->n_rows && rep->rows[i + n].section == rep->rows[i].section) n++;
    if (n > 200) n = 200; /* a chart with more bars is unreadable: the tables have them all */
    const qlm_rep_row *s = &rep->rows[i];
    char stitle[160];
    rep_section_title(s, stitle, sizeof stitle);
    rc = bar_charts(&L, s, n, stitle, err) || radar_charts(&L, s, n, stitle, err) ||
         scatter_chart(&L, s, n, stitle, err) || energy_chart(&L, s, n, stitle, err) ||
         country_chart(&L, s, n, stitle, err);
    while (i + n < rep->n_rows && rep->rows[i + n].section == rep->rows[i].section) n++;
  }
  if (rc) {
    rep_charts_free(L.c, L.n);
    return err->code ? err->code : rc;
  }
  *out = L.c, *n_out = L.n;
  return QLM_OK;
}

void rep_charts_free(rep_chart *c, int n) {
  for (int i = 0; c && i < n; i++) rb_free(&c[i].svg), rb_free(&c[i].png);
  free(c);
}
