/* smoothquant.c — SmoothQuant W8A8 (Xiao et al. 2023, arXiv 2211.10438).
 *
 * Activation outliers make per-token int8 activations lossy; SmoothQuant moves part of their
 * range into the weights with per-input-channel factors
 *   s_j = max|X_j|^alpha / max|W_j|^(1-alpha)        (alpha = 0.5 by default; s_j >= 1e-5)
 * where max|X_j| is over the calibration tokens and max|W_j| over every matrix that reads X.
 * The driver (quant/quantize.c) folds 1/s into the norm that produces X (so X' = X / s) and
 * multiplies the matrices' columns by s: W' X' = W X before rounding.  Then, as the paper's W8A8
 * setting: weights per output channel int8 (absmax), activations per token int8 at run time,
 * int8 x int8 dot products — which is exactly qlm's LLM.int8() storage and kernels with no
 * outlier columns (threshold 0), so that is what is stored ("smoothquant alpha=0.5 threshold=0").
 * Folding needs a norm in front: the q/k/v and gate/up inputs are smoothed; attn_output and
 * ffn_down are quantized W8A8 without smoothing (the paper smooths the inputs that follow
 * LayerNorms). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "quant/method.h"

#define DEFAULT_ALPHA 0.5f

static void sq_defaults(qlm_quant_opts *o) {
  if (!o->alpha_set) o->alpha = DEFAULT_ALPHA;
  if (!o->bits) o->bits = 8;
}

static int sq_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  if (o->bits != 8) return qlm_fail(err, QLM_EUSAGE, "smoothquant: bits=%d: only W8A8 (bits=8)", o->bits);
  qlm_quant_opts i8 = {.bits = 8, .threshold = 0.0f, .threshold_set = true};
  return qlm_method_llm_int8.check ? qlm_method_llm_int8.check(&i8, rows, cols, err) : QLM_OK;
}

static int sq_input_scales(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                           float *s, qlm_error *err) {
  if (!calib || !calib->act_absmax)
    return qlm_fail(err, QLM_EUSAGE, "smoothquant: needs the activation ranges of calibration data");
  for (int64_t j = 0; j < cols; j++) {
    float wmax = 0.0f;
    for (int64_t r = 0; r < rows; r++) wmax = fmaxf(wmax, fabsf(W[r * cols + j]));
    float xmax = calib->act_absmax[j];
    float v = powf(xmax, o->alpha) / powf(wmax, 1.0f - o->alpha);
    /* a channel never active, or with no weight, keeps its scale (the reference clamps at 1e-5;
     * 0/0 and x/0 would poison the norm) */
    s[j] = (xmax > 0.0f && wmax > 0.0f && isfinite(v)) ? fmaxf(v, 1e-5f) : 1.0f;
  }
  return QLM_OK;
}

static int sq_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                       qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  int rc = sq_check(o, rows, cols, err);
  if (rc) return rc;
  qlm_quant_opts i8 = {.bits = 8, .threshold = 0.0f, .threshold_set = true};
  if ((rc = qlm_method_llm_int8.quantize(W, rows, cols, NULL, &i8, out, err))) return rc;
  snprintf(out->desc, sizeof out->desc, "smoothquant alpha=%g threshold=0", (double)o->alpha);
  return QLM_OK;
}

const qlm_quant_method qlm_method_smoothquant = {
    .name = "smoothquant",
    .summary = "SmoothQuant W8A8: activation outliers migrated into the weights, int8 x int8 per token",
    .options = "alpha=0..1 (0.5); needs --calib",
    .needs_calib = true,
    .defaults = sq_defaults,
    .check = sq_check,
    .quantize = sq_quantize,
    .input_scales = sq_input_scales,
    .smooth_slots = 1u << 0 | 1u << 2, /* the inputs that follow a norm: q/k/v and gate/up */
};
