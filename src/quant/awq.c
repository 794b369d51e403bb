/* awq.c — AWQ, activation-aware weight quantization (Lin et al., MLSys 2024, arXiv 2306.00978).
 *
 * A few input channels carry most of the activation magnitude; their weights matter most.  AWQ
 * protects them by scaling: W x = (W diag(s)) (x / s), with per-input-channel factors
 *   s = max(s_x^alpha, 1e-4) / sqrt(max s * min s),   s_x = mean |x_j| over calibration tokens
 * (llm-awq's auto_scale), or with duo=1 AutoAWQ's "duo scaling" (AwqQuantizer._compute_best_scale,
 * duo_scaling=True, AutoAWQ's default):
 *   s = max(s_x^alpha / (s_w^(1-alpha) + 1e-4), 1e-4) / sqrt(max s * min s),
 *   s_w = per input channel, the mean over all rows of the stacked matrices of |w| / (max |w| of
 *         its group + 1e-6)   (each group normalized to [0, 1]; groups of the AWQ group size)
 * (non-finite factors after the normalization become 1, as AutoAWQ), alpha searched over the grid
 * i/20, i = 0..19, for the smallest output error of the
 * fake-quantized W' = Q(W s) / s.  The driver (quant/quantize.c) multiplies the matrices' columns
 * by s and folds 1/s into the producer of x (norm, v rows, up rows; 1 = q/k/v, 2 = attn_output,
 * 4 = gate/up, 8 = ffn_down as llm-awq's four scaling groups, where the model allows it).
 *
 * The error.  llm-awq runs the real calibration inputs through the whole block that contains the
 * matrices (self-attention for q/k/v, the MLP for gate/up; o_proj and down_proj themselves for
 * the other two) and takes the MSE of its output.  qlm has the Hessian H = sum x x^T / n of each
 * input instead, and uses the exact linear-output error
 *   E(alpha) = tr(dW H dW^T) = sum_rows mean_tokens ((W - W') x)^2
 * summed over every matrix that reads the input.  For attn_output and ffn_down this is the same
 * quantity as the reference (up to its mean over rows, a constant factor); for q/k/v and gate/up
 * it is the error of the linear outputs, not of the block after attention / the gated product.
 *
 * The quantizer is llm-awq's zero-point grid (pseudo_quantize_tensor, zero_point=True):
 *   d = max(max - min, 1e-5) / (2^b - 1),  z = clamp(-round(min / d), 0, 2^b - 1),
 *   u = clamp(round(w / d) + z, 0, 2^b - 1),  w' = (u - z) d
 * with min/max over the group (not widened to include 0) and d rounded to a half first (the
 * reference runs in fp16; the codes are computed from the stored d).  It is stored in qlm's
 * zero-point RTN type (kernels/rtn.h: half d, int16 z, b-bit codes), which holds this grid
 * exactly.  For groups whose range contains 0 (all but degenerate ones) it is bit for bit qlm's
 * "zeropoint" RTN; it differs where the reference clamps z (a group of one sign) and in the 1e-5
 * floor of the range.
 *
 * The clipping search (llm-awq auto_clip, on by default; clip=0 turns it off): for each output row
 * and group, the weights are clamped to +-m with m = max|w| * (1 - i/20), i = 0..9 (shrink 1 to
 * 0.55), fake-quantized, and the m with the smallest error of the group's output is kept.  The
 * reference estimates that error on 512 sampled tokens, (x_g . (w_g - w'_g))^2 per group; here it
 * is exact over all calibration tokens: dw_g H_gg dw_g^T with H_gg the group's diagonal block of
 * the Hessian of x / s (the driver passes the statistics of the scaled input, as the reference
 * clips after scaling).  The reference skips q/k projections; quantize() does not know which
 * matrix it is given, so every matrix is clipped here.
 *
 * Defaults: bits=4 group=128 (the paper's w4 g128), clip on.  alpha=A fixes alpha (no search). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/rtn.h"
#include "kernels/threadpool.h"
#include "quant/awq.h"

#define DEFAULT_BITS 4
#define DEFAULT_GROUP 128
#define SCALE_FLOOR 1e-4f   /* s_x^alpha is clamped here before the normalization */
#define RANGE_FLOOR 1e-5f   /* the reference's floor of max - min */
#define HALF_MIN 5.9604645e-08f /* smallest positive half: d never becomes 0 */
#define ROW_CHUNK 64        /* rows per dgemm in the error of the search */

int qlm_awq_group(int group, int64_t cols) {
  if (group <= 0 || group >= cols) return (int)cols;
  int below = group, above = group;
  while (cols % below) below--;
  while (cols % above) above++;
  return 2 * below >= group ? below : above;
}

/* ---- the quantizer */

/* Scale and zero of a group in [lo, hi]; -1 when d does not fit a half. */
static int group_params(float lo, float hi, int bits, float *d, int *z) {
  float qmax = (float)((1 << bits) - 1);
  float dd = qlm_f16_to_f32(qlm_f32_to_f16(fmaxf(hi - lo, RANGE_FLOOR) / qmax));
  if (!isfinite(dd)) return -1;
  if (dd < HALF_MIN) dd = HALF_MIN;
  float zf = -nearbyintf(lo / dd);
  *d = dd;
  *z = (int)(zf < 0.0f ? 0.0f : zf > qmax ? qmax : zf);
  return 0;
}

static uint8_t code_of(float x, float d, int z, int qmax) {
  float v = nearbyintf(x / d);
  v = v < -1e6f ? -1e6f : v > 1e6f ? 1e6f : v; /* no int overflow for hostile values */
  int u = (int)v + z;
  return (uint8_t)(u < 0 ? 0 : u > qmax ? qmax : u);
}

/* min/max by comparison: the weights are finite (checked), and unlike fminf/fmaxf (library calls
 * on baseline x86-64, 11% of an AWQ run) these inline; they can differ from fminf/fmaxf only in the
 * sign of a zero, which changes neither the grid (z = -round(lo / d) is 0 either way) nor a code. */
static inline float min_f(float a, float b) { return b < a ? b : a; }
static inline float max_f(float a, float b) { return b > a ? b : a; }

/* Quantize x[g] (optionally clamped to +-m first, m >= 0; m < 0: no clamp): codes u, params, and
 * (deq not NULL) the dequantized values. */
static int quant_group(const float *x, int g, int bits, float m, float *d, int *z, uint8_t *u, float *deq) {
  float lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < g; i++) {
    float v = m >= 0.0f ? min_f(max_f(x[i], -m), m) : x[i];
    lo = min_f(lo, v), hi = max_f(hi, v);
  }
  if (group_params(lo, hi, bits, d, z)) return -1;
  int qmax = (1 << bits) - 1;
  for (int i = 0; i < g; i++) {
    float v = m >= 0.0f ? min_f(max_f(x[i], -m), m) : x[i];
    u[i] = code_of(v, *d, *z, qmax);
    if (deq) deq[i] = *d * (float)(u[i] - *z);
  }
  return 0;
}

int qlm_awq_fake_quant(const float *W, int64_t rows, int64_t cols, int bits, int group, float *Wq) {
  int g = qlm_awq_group(group, cols);
  uint8_t *u = malloc((size_t)g);
  if (!u) return -1;
  int rc = 0;
  for (int64_t r = 0; r < rows && !rc; r++)
    for (int64_t c = 0; c < cols && !rc; c += g) {
      float d;
      int z;
      rc = quant_group(W + r * cols + c, g, bits, -1.0f, &d, &z, u, Wq + r * cols + c);
    }
  free(u);
  return rc;
}

/* ---- the output error */

/* tr(dW H dW^T), dW = W - Wq, in chunks of ROW_CHUNK rows: P = dW_chunk H (one dgemm per chunk),
 * then e += dW_i P_i over all elements in order.  With a pool the chunks' dgemms run on its
 * threads (each call the same as in the serial order, so P has the same bits) into one P for all
 * rows, and the sum stays one sequential pass: the result does not depend on the thread count.
 * The alpha search calls this 20 times per scaling group (rows x cols^2 multiply-adds each). */
typedef struct err_job {
  const float *W, *Wq;
  int64_t rows, cols, nr;
  const double *H;
  double *D;  /* per thread: [nr x cols] */
  double *P;  /* [rows x cols] */
} err_job;

static void chunk_product(const err_job *j, double *D, int64_t r0) {
  int64_t n = j->rows - r0 < j->nr ? j->rows - r0 : j->nr, cols = j->cols;
  for (int64_t i = 0; i < n * cols; i++) D[i] = (double)j->W[r0 * cols + i] - (double)j->Wq[r0 * cols + i];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)cols, (int)cols, 1.0, D, (int)cols, j->H,
              (int)cols, 0.0, j->P + r0 * cols, (int)cols);
}

static void err_task(void *ctx, int ith, int nth) {
  const err_job *j = ctx;
  double *D = j->D + (size_t)ith * (size_t)(j->nr * j->cols);
  for (int64_t r0 = (int64_t)ith * j->nr; r0 < j->rows; r0 += (int64_t)nth * j->nr) chunk_product(j, D, r0);
}

static double output_error(const float *W, const float *Wq, int64_t rows, int64_t cols, const double *H,
                           qlm_pool *pool) {
  int nth = pool ? qlm_pool_size(pool) : 1;
  err_job j = {.W = W, .Wq = Wq, .rows = rows, .cols = cols, .nr = rows < ROW_CHUNK ? rows : ROW_CHUNK, .H = H};
  j.D = malloc((size_t)nth * (size_t)(j.nr * cols) * sizeof *j.D + 1);
  j.P = malloc((size_t)(rows * cols) * sizeof *j.P + 1);
  if (!j.D || !j.P) {
    free(j.D), free(j.P);
    return NAN;
  }
  qlm_pool_run(rows > ROW_CHUNK ? pool : NULL, err_task, &j);
  double e = 0.0;
  for (int64_t i = 0; i < rows * cols; i++) e += ((double)W[i] - (double)Wq[i]) * j.P[i];
  free(j.D), free(j.P);
  return e;
}

double qlm_awq_output_error(const float *W, const float *Wq, int64_t rows, int64_t cols, const double *H) {
  return output_error(W, Wq, rows, cols, H, NULL);
}

/* ---- options */

static void awq_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = DEFAULT_BITS;
  if (o->group == 0) o->group = DEFAULT_GROUP; /* "channel" parses to 0 too: ask group >= cols for it */
  o->asym = true;
}

static int awq_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits < 2 || o->bits > 8) return qlm_fail(err, QLM_EUSAGE, "awq: bits=%d: expected 2..8", o->bits);
  if (o->group < 0)
    return qlm_fail(err, QLM_EUSAGE, "awq: group=tensor: AWQ quantizes per group (or per row with a group >= the row)");
  if (o->alpha_set && !(o->alpha >= 0.0f && o->alpha <= 1.0f))
    return qlm_fail(err, QLM_EUSAGE, "awq: alpha=%g: expected a number in [0, 1]", (double)o->alpha);
  if (cols <= 0 || cols > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "awq: rows of %lld weights (expected 1..65535: one group at most per row)",
                    (long long)cols);
  return QLM_OK;
}

static int check_finite(const float *W, int64_t n, const char *what, qlm_error *err) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(W[i])) return qlm_fail(err, QLM_EFORMAT, "awq: %s: element %lld is not finite", what, (long long)i);
  return QLM_OK;
}

static int check_calib(const qlm_calib *c, int64_t cols, bool need_h, qlm_error *err) {
  if (!c || !c->act_absmean || (need_h && !c->hessian))
    return qlm_fail(err, QLM_EUSAGE, "awq: needs calibration statistics (mean |x| and the Hessian of the input)");
  if (c->cols != cols)
    return qlm_fail(err, QLM_EINTERNAL, "awq: calibration of %lld inputs for a matrix of %lld columns",
                    (long long)c->cols, (long long)cols);
  return QLM_OK;
}

/* ---- the scale search */

/* s = max(sx^alpha, 1e-4) normalized by sqrt(max s * min s). */
/* s for one alpha; sw (duo scaling's weight means) or NULL. */
static void scales_for(const float *sx, const float *sw, int64_t cols, float alpha, float *s) {
  float mx = 0.0f, mn = INFINITY;
  for (int64_t j = 0; j < cols; j++) {
    float v = powf(fmaxf(sx[j], 0.0f), alpha);
    if (sw) v /= powf(sw[j], 1.0f - alpha) + 1e-4f;
    v = fmaxf(v, SCALE_FLOOR);
    if (!isfinite(v)) v = SCALE_FLOOR; /* a hostile statistic */
    s[j] = v, mx = fmaxf(mx, v), mn = fminf(mn, v);
  }
  float norm = sqrtf(mx * mn);
  for (int64_t j = 0; j < cols; j++) {
    s[j] /= norm;
    if (!isfinite(s[j])) s[j] = 1.0f;
  }
}

void qlm_awq_weight_means(const float *W, int64_t rows, int64_t cols, int group, float *sw) {
  int g = qlm_awq_group(group, cols);
  double *acc = calloc((size_t)cols, sizeof *acc);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c0 = 0; c0 < cols; c0 += g) {
      const float *w = W + r * cols + c0;
      float m = 0.0f;
      for (int i = 0; i < g; i++) m = fmaxf(m, fabsf(w[i]));
      for (int i = 0; acc && i < g; i++) acc[c0 + i] += fabsf(w[i]) / (m + 1e-6f);
    }
  for (int64_t j = 0; j < cols; j++) sw[j] = acc && rows > 0 ? (float)(acc[j] / (double)rows) : 1.0f;
  free(acc);
}

/* E(alpha) for the scales s: Wq = Q(W s) / s, then tr(dW H dW^T); INFINITY when a scaled group
 * does not fit the half grid. */
static double scaled_error(const float *W, int64_t rows, int64_t cols, const float *s, const qlm_quant_opts *o,
                           const double *H, float *Ws, float *Wq) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j++) Ws[r * cols + j] = W[r * cols + j] * s[j];
  if (qlm_awq_fake_quant(Ws, rows, cols, o->bits, o->group, Wq)) return INFINITY;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j++) Wq[r * cols + j] /= s[j];
  return output_error(W, Wq, rows, cols, H, o->pool);
}

int qlm_awq_search(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o, float *s,
                   float *alpha, double errs[QLM_AWQ_GRID], qlm_error *err) {
  int rc = awq_check(o, rows, cols, err);
  if (!rc) rc = check_calib(calib, cols, !o->alpha_set, err);
  if (!rc) rc = check_finite(W, rows * cols, "weights", err);
  if (!rc) rc = check_finite(calib->act_absmean, cols, "mean |x|", err);
  if (rc) return rc;
  for (int i = 0; errs && i < QLM_AWQ_GRID; i++) errs[i] = NAN;
  float *sw = NULL;
  if (o->duo) {
    if (!(sw = qlm_malloc((size_t)cols * sizeof *sw, "awq: weight means", err))) return QLM_ENOMEM;
    qlm_awq_weight_means(W, rows, cols, o->group, sw);
  }
  if (o->alpha_set) {
    scales_for(calib->act_absmean, sw, cols, o->alpha, s);
    *alpha = o->alpha;
    free(sw);
    return QLM_OK;
  }
  size_t n = (size_t)(rows * cols);
  float *Ws = qlm_malloc(n * sizeof *Ws + 1, "awq: scaled weights", err);
  float *Wq = qlm_malloc(n * sizeof *Wq + 1, "awq: fake-quantized weights", err);
  float *cur = qlm_malloc((size_t)cols * sizeof *cur, "awq: scales", err);
  if (!Ws || !Wq || !cur) {
    free(Ws), free(Wq), free(cur), free(sw);
    return QLM_ENOMEM;
  }
  double best = INFINITY;
  int best_i = -1;
  for (int i = 0; i < QLM_AWQ_GRID; i++) {
    float a = (float)i / (float)QLM_AWQ_GRID;
    scales_for(calib->act_absmean, sw, cols, a, cur);
    double e = scaled_error(W, rows, cols, cur, o, calib->hessian, Ws, Wq);
    if (isnan(e)) {
      rc = qlm_fail(err, QLM_ENOMEM, "awq: out of memory in the error of alpha %g (or a Hessian that is not finite)",
                    (double)a);
      break;
    }
    if (errs) errs[i] = e;
    if (e < best) { /* ties keep the smaller alpha, as the reference's strict "<" */
      best = e, best_i = i;
      memcpy(s, cur, (size_t)cols * sizeof *s);
    }
  }
  if (!rc && best_i < 0)
    rc = qlm_fail(err, QLM_EUNSUPPORTED, "awq: no alpha of the grid gives scaled weights whose groups fit a half scale");
  if (!rc) *alpha = (float)best_i / (float)QLM_AWQ_GRID;
  free(Ws), free(Wq), free(cur), free(sw);
  return rc;
}

static int awq_input_scales(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                            float *s, qlm_error *err) {
  float alpha;
  return qlm_awq_search(W, rows, cols, calib, o, s, &alpha, NULL, err);
}

/* ---- quantize: group-wise zero-point RTN with the clipping search, rows split over threads */

typedef struct job {
  const float *W;        /* [rows x cols] the (scaled) weights */
  int64_t rows, cols;
  int g, bits, type;
  bool clip;
  const double *H;       /* [cols x cols] Hessian of the (scaled) input, when clipping */
  double *HT;            /* [cols / g][g x g] its diagonal g x g blocks, transposed (group_error) */
  unsigned char *out;    /* rows * row_bytes */
  size_t row_bytes, block_bytes;
  float *scratch;        /* per thread: deq[g] */
  double *dw;            /* per thread: [2 g] x - deq and the row sums of the group's error */
  uint8_t *codes;        /* per thread: u[g] */
  int64_t *bad;          /* per thread: 1 + the row of a group whose scale does not fit a half */
} job;

/* dw H_gg dw^T for dw = x - deq over the group starting at column c, in this order:
 *   acc_a = sum_b H[c+a][c+b] dw_b (b increasing),  e = sum_a dw_a acc_a (a increasing, dw_a != 0).
 * The rows' sums go side by side (b outer, a inner, over the transposed block hT[b][a] =
 * H[c+a][c+b]), so the compiler vectorizes across a while each acc_a still adds its products in
 * increasing b, each rounded (C11: no contraction): the bits of the one-row-at-a-time loop, which
 * as a chain of dependent additions was latency-bound (the clipping search was 40% of AWQ). */
static double group_error(const float *x, const float *deq, int g, const double *hT, double *dw) {
  double *acc = dw + g;
  for (int a = 0; a < g; a++) dw[a] = (double)x[a] - deq[a], acc[a] = 0.0;
  for (int b = 0; b < g; b++) {
    const double *h = hT + (size_t)b * g, d = dw[b];
    for (int a = 0; a < g; a++) acc[a] += h[a] * d;
  }
  double e = 0.0;
  for (int a = 0; a < g; a++)
    if (dw[a] != 0.0) e += dw[a] * acc[a];
  return e;
}

/* j->HT: block k (columns c = k g) holds hT[b][a] = H[c+a][c+b]. */
static void transpose_blocks(job *j) {
  int g = j->g;
  for (int64_t c = 0; c < j->cols; c += g) {
    double *hT = j->HT + (size_t)(c / g) * (size_t)g * (size_t)g;
    for (int a = 0; a < g; a++)
      for (int b = 0; b < g; b++) hT[(size_t)b * g + a] = j->H[(c + a) * j->cols + c + b];
  }
}

/* The best clamp of one group (the reference's auto_clip: strict "<", so ties keep less shrink). */
static int clip_group(const job *j, const float *x, int64_t c, float *deq, uint8_t *u, double *dw, float *d, int *z) {
  float amax = 0.0f;
  for (int i = 0; i < j->g; i++) amax = fmaxf(amax, fabsf(x[i]));
  double best = INFINITY;
  float best_m = amax;
  for (int i = 0; i < QLM_AWQ_CLIP_STEPS; i++) {
    float m = amax * (1.0f - (float)i / (float)QLM_AWQ_GRID);
    if (quant_group(x, j->g, j->bits, m, d, z, u, deq)) return -1;
    double e = group_error(x, deq, j->g, j->HT + (size_t)(c / j->g) * (size_t)j->g * (size_t)j->g, dw);
    if (e < best) best = e, best_m = m;
  }
  return quant_group(x, j->g, j->bits, best_m, d, z, u, NULL);
}

static void run_rows(void *ctx, int ith, int nth) {
  job *j = ctx;
  float *deq = j->scratch + (size_t)ith * j->g;
  uint8_t *u = j->codes + (size_t)ith * j->g;
  double *dw = j->dw + (size_t)ith * 2 * (size_t)j->g;
  for (int64_t r = ith; r < j->rows && !j->bad[ith]; r += nth) {
    unsigned char *blk = j->out + (size_t)r * j->row_bytes;
    for (int64_t c = 0; c < j->cols; c += j->g, blk += j->block_bytes) {
      const float *x = j->W + r * j->cols + c;
      float d;
      int z;
      int rc = j->clip ? clip_group(j, x, c, deq, u, dw, &d, &z) : quant_group(x, j->g, j->bits, -1.0f, &d, &z, u, NULL);
      if (rc) {
        j->bad[ith] = r + 1;
        break;
      }
      qlm_rtn_pack(j->type, d, z, u, blk);
    }
  }
}

static int pool_threads(int n_threads, int64_t rows) {
  int n = n_threads > 0 ? n_threads : 1;
  if (n > 64) n = 64;
  return rows < n ? (rows > 0 ? (int)rows : 1) : n;
}

static int awq_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                        qlm_qtensor *out, qlm_error *err) {
  int rc = awq_check(o, rows, cols, err);
  bool clip = !o->no_clip;
  if (!rc && clip && (!calib || !calib->hessian))
    rc = qlm_fail(err, QLM_EUSAGE, "awq: the clipping search needs the calibration Hessian (or clip=0)");
  if (!rc && clip && calib->cols != cols)
    rc = qlm_fail(err, QLM_EINTERNAL, "awq: calibration of %lld inputs for a matrix of %lld columns",
                  (long long)calib->cols, (long long)cols);
  if (!rc) rc = check_finite(W, rows * cols, "weights", err);
  if (rc) return rc;
  int g = qlm_awq_group(o->group, cols), type = qlm_rtn_type(true, o->bits, g);
  if (type < 0) return qlm_fail(err, QLM_EUNSUPPORTED, "awq: no zero-point type for bits=%d group=%d", o->bits, g);
  if ((rc = qlm_qtensor_alloc(out, type, rows, cols, err))) return rc;
  int nth = pool_threads(o->n_threads, rows);
  job j = {.W = W, .rows = rows, .cols = cols, .g = g, .bits = o->bits, .type = type, .clip = clip,
           .H = clip ? calib->hessian : NULL, .out = out->data, .row_bytes = out->row_bytes,
           .block_bytes = (size_t)qlm_rtn_header_bytes(type) + (size_t)qlm_rtn_code_bytes(type)};
  j.scratch = qlm_malloc((size_t)nth * (size_t)g * sizeof *j.scratch, "awq: scratch", err);
  j.codes = qlm_malloc((size_t)nth * (size_t)g, "awq: scratch", err);
  j.bad = qlm_calloc((size_t)nth, sizeof *j.bad, "awq: scratch", err);
  j.dw = qlm_malloc((size_t)nth * 2 * (size_t)g * sizeof *j.dw, "awq: scratch", err);
  j.HT = clip ? qlm_malloc((size_t)cols * (size_t)g * sizeof *j.HT, "awq: Hessian blocks", err) : NULL;
  qlm_pool *pool = nth > 1 ? qlm_pool_new(nth) : NULL;
  bool have = j.scratch && j.codes && j.bad && j.dw && (!clip || j.HT);
  if (!have || (nth > 1 && !pool)) {
    rc = have ? qlm_fail(err, QLM_ENOMEM, "awq: cannot start %d threads", nth) : QLM_ENOMEM;
  } else {
    if (clip) transpose_blocks(&j);
    qlm_pool_run(pool, run_rows, &j);
    for (int t = 0; t < nth && !rc; t++)
      if (j.bad[t])
        rc = qlm_fail(err, QLM_EUNSUPPORTED, "awq: row %lld: a group's range is too wide for a half scale",
                      (long long)(j.bad[t] - 1));
  }
  qlm_pool_free(pool);
  free(j.scratch), free(j.codes), free(j.bad), free(j.dw), free(j.HT);
  if (rc) {
    qlm_qtensor_free(out);
    return rc;
  }
  qlm_qtensor_set_bpw(out);
  int n = snprintf(out->desc, sizeof out->desc, "awq bits=%d group=%d clip=%d", o->bits, g, clip ? 1 : 0);
  if (o->alpha_set && n > 0 && (size_t)n < sizeof out->desc)
    n += snprintf(out->desc + n, sizeof out->desc - (size_t)n, " alpha=%g", (double)o->alpha);
  if (o->duo && n > 0 && (size_t)n < sizeof out->desc) snprintf(out->desc + n, sizeof out->desc - (size_t)n, " duo=1");
  if (o->group > 0 && g != o->group && o->group < cols)
    snprintf(out->note, sizeof out->note, "group %d does not divide the %lld columns: used %d", o->group,
             (long long)cols, g);
  return QLM_OK;
}

const qlm_quant_method qlm_method_awq = {
    .name = "awq",
    .summary = "AWQ: per-input-channel scales s_x^alpha (alpha searched) folded into the producer, then "
               "zero-point group RTN with a clipping search",
    .options = "bits=2..8 (4) group=N (128) clip=0|1 (1) alpha=0..1 (searched) duo=0|1 (0: llm-awq's s_x^a; 1: AutoAWQ's default s_x^a / s_w^(1-a)); needs --calib",
    .needs_calib = true,
    .needs_hessian = true,
    .defaults = awq_defaults,
    .check = awq_check,
    .quantize = awq_quantize,
    .input_scales = awq_input_scales,
    .smooth_slots = 0xFu, /* q/k/v, attn_output, gate/up, ffn_down: llm-awq's four scaling groups */
};
