/* ggml_block.c — llama.cpp's block types as a method: the reference quantizers of
 * kernels/quants.c (byte-identical to llama.cpp's quantize_row_*_ref), so a model quantized
 * this way is exactly what llama-quantize would write for the same weights (without imatrix).
 * Options: type=q8_0|q4_0|q4_1|q5_0|q5_1|q4_K|q5_K|q6_K (default q8_0). */
#include <stdio.h>

#include "kernels/quants.h"
#include "kernels/types.h"
#include "quant/method.h"

static void ggml_defaults(qlm_quant_opts *o) {
  if (!o->type) o->type = QLM_TYPE_Q8_0;
}

static int ggml_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (!qlm_quantizer_of(o->type))
    return qlm_fail(err, QLM_EUSAGE, "gguf: type %s has no quantizer (use q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K)",
                    qlm_type_name(o->type));
  const qlm_type_traits *tr = qlm_type_traits_of(o->type);
  if (cols % tr->block_size)
    return qlm_fail(err, QLM_EUNSUPPORTED, "gguf: rows of %lld weights are not whole %s blocks of %d", (long long)cols,
                    tr->name, tr->block_size);
  return QLM_OK;
}

static int ggml_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                         qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  int rc = ggml_check(o, rows, cols, err);
  if (rc || (rc = qlm_qtensor_alloc(out, o->type, rows, cols, err))) return rc;
  qlm_quantize_fn q = qlm_quantizer_of(o->type);
  for (int64_t r = 0; r < rows; r++) q(W + r * cols, (unsigned char *)out->data + (size_t)r * out->row_bytes, cols);
  qlm_qtensor_set_bpw(out);
  snprintf(out->desc, sizeof out->desc, "gguf type=%s", qlm_type_name(o->type));
  return QLM_OK;
}

const qlm_quant_method qlm_method_ggml = {
    .name = "gguf",
    .summary = "llama.cpp block types, byte-identical to llama.cpp's reference quantizers",
    .options = "type=q8_0|q4_0|q4_1|q5_0|q5_1|q4_K|q5_K|q6_K (q8_0)",
    .defaults = ggml_defaults,
    .check = ggml_check,
    .quantize = ggml_quantize,
};
