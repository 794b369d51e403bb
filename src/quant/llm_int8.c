/* llm_int8.c — LLM.int8() (bitsandbytes Linear8bitLt, arXiv 2208.07339).
 *
 * Weights: vector-wise absmax int8, one row (output feature) per block of the INT8_ROW type
 * (kernels/int8row.h): SCB = max|W_row|, q = round_half_even(W * (127.0f / SCB)), stored as
 * f32 SCB + int8 q[cols]: 8 + 32/cols bits per weight.
 * Activations are quantized per token at run time, with outlier columns (|x| >= threshold) kept
 * in float (kernels/matmul.c).  The threshold is not part of the weights: it is written into the
 * tensor's desc ("llm-int8 threshold=6"), from which the model loader sets
 * qlm_mat.outlier_threshold.  Default 6.0 (the paper's alpha and HF's llm_int8_threshold). */
#include <stdio.h>

#include "kernels/int8row.h"
#include "quant/method.h"

#define DEFAULT_THRESHOLD 6.0f

static void llm_int8_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 8;
  if (!o->threshold_set) o->threshold = DEFAULT_THRESHOLD; /* threshold=0: no outliers, pure int8 */
}

static int llm_int8_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits != 8) return qlm_fail(err, QLM_EUSAGE, "llm-int8: bits=%d: only 8 is defined", o->bits);
  if (!(o->threshold >= 0.0f) || o->threshold > 1e30f)
    return qlm_fail(err, QLM_EUSAGE, "llm-int8: threshold=%g: expected a number >= 0", (double)o->threshold);
  if (cols < 1 || cols > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "llm-int8: rows of %lld weights: a row must hold 1..65535 weights",
                    (long long)cols);
  return QLM_OK;
}

static int llm_int8_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib,
                             const qlm_quant_opts *o, qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  int rc = llm_int8_check(o, rows, cols, err);
  if (rc) return rc;
  if ((rc = qlm_qtensor_alloc(out, qlm_int8row_type(cols), rows, cols, err))) return rc;
  for (int64_t r = 0; r < rows; r++)
    qlm_int8row_quantize_row(W + r * cols, (unsigned char *)out->data + (size_t)r * out->row_bytes, cols);
  qlm_qtensor_set_bpw(out);
  snprintf(out->desc, sizeof out->desc, "llm-int8 threshold=%g", (double)o->threshold);
  return QLM_OK;
}

const qlm_quant_method qlm_method_llm_int8 = {
    .name = "llm-int8",
    .summary = "LLM.int8(): int8 absmax per output row; activations int8 per token, outlier columns in float",
    .options = "threshold=T (6; activation columns with |x| >= T stay float)",
    .defaults = llm_int8_defaults,
    .check = llm_int8_check,
    .quantize = llm_int8_quantize,
};
