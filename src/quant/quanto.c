/* quanto.c — optimum-quanto's weight quantization (huggingface/optimum-quanto 0.2.7: nn/qmodule.py,
 * tensor/optimizers/{absmax,max,affine}_optimizer.py, library/quantize.py), reproduced in the float
 * type the model runs in (dtype=f16, the default: seed 000's fp16 GPU runs; bf16; f32 for qfloat8).
 * Every quanto operation rounds to that dtype, so each step below is computed in float and rounded
 * (rd) — exactly what torch does for f16/bf16 tensors (the float result of one +, -, / of two halves
 * rounded once is the correctly rounded half result).  The weights are first rounded to the dtype
 * (what quanto sees in a model loaded in that dtype; exact for an f16 checkpoint).
 *
 *   qint8    (AbsmaxOptimizer, per output row):  s = rd(max|w| / 127),  q = clamp(round(rd(w / s)), -128, 127)
 *            stored as the RTN absmax type of 8 bits and group = the row (kernels/rtn.h): half d = s (exact:
 *            an f16 scale is a half; a bf16 one is a half unless below 2^-14 or so, then `note` says so),
 *            u = q + 128; dequantized d * q as quanto's scale * data.
 *   qfloat8  (AbsmaxOptimizer, qmax = 448):  s = rd(max|w| / 448),  c = e4m3fn(clamp(rd(w / s), +-448))
 *            stored as QLM_FAMILY_FP8 (kernels/fp8.h): f32 s (exact for every dtype) + the codes.
 *   qint4/2  (MaxOptimizer, affine, per group):  s = rd(rd(max - min) / (2^b - 1)),  shift = -min,
 *            u = clamp(round(rd(rd(w + shift) / s)), 0, 2^b - 1);  quanto dequantizes rd(rd(s u) - shift).
 *            qlm stores this in the HQQ family (kernels/hqq.h: half s, half float zero z, codes), the
 *            only qlm type with a float offset: s and the codes are quanto's exactly, z = shift / s
 *            rounded to a half, and qlm dequantizes (u - z) * s, which differs from quanto's s u - shift
 *            by |z - half(z)| s <= 2^-11 |shift| plus quanto's own f16 roundings (test_quanto checks it).
 *            The RTN zero-point family cannot hold it (its zero point is an integer).
 *   zeropoint=1 (AffineOptimizer(zeropoint=True)):  z = clamp(round(rd(shift / s)), 0, 2^b - 1),
 *            u = clamp(round(rd(w / s)) + z, 0, 2^b - 1), dequant s (u - z): exactly the RTN zero-point
 *            type (half d = s, integer z).
 * Rounding is half to even (torch.round).
 *
 * Groups (QModuleMixin): 8-bit qtypes are per output row.  For int4/int2 quanto starts at 128 and,
 * if the row length is larger but not a multiple, lowers it by 32 while above 32; if nothing divides
 * (or rows are not longer than 128) it quantizes per row.  quanto groups the flattened tensor, but a
 * size that divides the row length keeps every group within a row, so its groups are exactly qlm's
 * row blocks.  group=N starts the same rule at N.  (qlm's RTN methods instead take the nearest
 * divisor of the row length, quant/rtn.c.)  stories260K's rows of 64 and 172 get per-row scales,
 * as quanto would give them.
 *
 * Where quanto produces NaN (a group whose values are all equal gives scale 0 and 0/0; an all-zero
 * row at 8 bits), qlm instead widens the group's range to include 0 (all equal and nonzero) or writes
 * scale 0 and zero codes (all zero), which reconstruct the values.
 *
 * activations=qint8 (quantize(model, weights=..., activations=qint8) + `with Calibration(): model(x)`,
 * calibrate.py / nn/qmodule.py / library/quantize.py): every QLinear gets one static per-tensor input
 * scale (a scalar in the weight dtype, initially 1).  Calibration's forward pre-hook sets, per forward
 * call, new = max|x| / 127 over the whole call's input (absmax_scale, int8 max 127) and
 * scale = new if scale == 1 (the untouched default) else 0.9 scale + 0.1 new (the pre-hook always
 * uses momentum 0.9).  At run time the input is quantize_symmetric'd: q = clamp(round(x / scale),
 * -128, 127) as int8, and the product is q * (scale * w_scale) (qbytes_mm): the same as a float
 * product with the dequantized input scale * q.  Outputs: QModuleMixin also registers an output
 * quantizer, but Calibration's "streamline" (on by default) removes it from every linear whose
 * output is only consumed by non-quantized ops — all of them in LLaMA-style models (q/k/v -> rope
 * and attention, gate -> silu, up -> mul, o/down -> the residual add; tools/quanto_reference.py
 * checks this on a tiny LlamaForCausalLM), so outputs stay float, as here.
 * qlm: the driver's calibration runs one forward call per window through each layer
 * (quant/calib.c), records each call's max|x| per slot (qlm_calib.call_absmax) and this method
 * applies the momentum rule in the dtype; the scale is stored as the companion tensor
 * "<weight>.input_scale" (f32 [1]) and model/forward.c fake-quantizes the matrix's input with it.
 * Differences from quanto's run: qlm calibrates layer by layer (calib.h: each layer sees the earlier
 * layers already quantized, inputs included, and its own weights and inputs still float while its
 * statistics are gathered), quanto all layers in one pass with the running scales; and at run time
 * qlm divides in f32 where quanto divides in the model dtype.
 * Not done: qfloat8 activations, and the optional HqqOptimizer (use method hqq). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/fp8.h"
#include "kernels/half_round.h"
#include "kernels/hqq.h"
#include "kernels/rtn.h"
#include "quant/quanto.h"

/* x rounded to the emulated dtype. */
static float rd(float x, int dtype) {
  if (dtype == QLM_DTYPE_F16) return qlm_f16_to_f32(qlm_f32_to_f16(x));
  if (dtype == QLM_DTYPE_BF16) return qlm_bf16_to_f32(qlm_f32_to_bf16(x));
  return x;
}

static const char *dtype_name(int dtype) {
  return dtype == QLM_DTYPE_F16 ? "f16" : dtype == QLM_DTYPE_BF16 ? "bf16" : "f32";
}

static const char *qtype_name(const qlm_quant_opts *o) {
  return o->float8 ? "qfloat8" : o->bits == 8 ? "qint8" : o->bits == 4 ? "qint4" : "qint2";
}

/* A row of values rounded to the dtype: rd on every element (kernels/half_round.h). */
static void rd_row(float *x, int64_t n, int dtype) {
  if (dtype == QLM_DTYPE_F16) qlm_round_f16_row(x, n);
  else if (dtype == QLM_DTYPE_BF16) qlm_round_bf16_row(x, n);
}

/* round(v) (ties to even, torch.round) clamped to [lo, hi], integer bounds with |lo|, |hi| < 2^22;
 * NaN (0/0 of a zero scale) gives lo.  Clamping first gives the same result (rounding is monotonic
 * and the bounds are integers) and brings v into the range where adding and subtracting 1.5 * 2^23
 * rounds to an integer in the default rounding mode: plain float operations, so the row loops
 * vectorize (nearbyintf and fmaxf are library calls in a baseline x86-64 build). */
static inline float round_clamp(float v, float lo, float hi) {
  v = v > lo ? v : lo; /* NaN > lo is false: lo */
  v = v < hi ? v : hi;
  return (v + 12582912.0f) - 12582912.0f;
}

/* quanto's group size for rows of `cols` weights (0 = per row), for int4/int2. */
static int quanto_group(const qlm_quant_opts *o, int64_t cols) {
  int g = o->group > 0 ? o->group : 128;
  if (cols <= g) return 0;
  while (cols % g != 0 && g > 32) g -= 32;
  return cols % g == 0 ? g : 0;
}

static void quanto_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 8;
  if (!o->dtype) o->dtype = QLM_DTYPE_F16;
}

static int quanto_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits != 8 && o->bits != 4 && o->bits != 2)
    return qlm_fail(err, QLM_EUSAGE, "quanto: bits=%d: expected 8, 4 or 2 (weights=qint8|qint4|qint2|qfloat8)",
                    o->bits);
  if (o->float8 && o->bits != 8) return qlm_fail(err, QLM_EUSAGE, "quanto: qfloat8 weights have 8 bits, not %d", o->bits);
  if (o->group == QLM_GROUP_TENSOR)
    return qlm_fail(err, QLM_EUSAGE, "quanto: group=tensor: quanto quantizes linear weights per output row or per group");
  if (o->bits == 8 && o->group > 0)
    return qlm_fail(err, QLM_EUSAGE, "quanto: %s weights take no group size (quanto quantizes them per output row)",
                    qtype_name(o));
  if (o->int_zero && o->bits == 8)
    return qlm_fail(err, QLM_EUSAGE, "quanto: zeropoint=1 applies to qint4/qint2 only");
  int dt = o->dtype ? o->dtype : QLM_DTYPE_F16;
  if (dt == QLM_DTYPE_F32 && !o->float8)
    return qlm_fail(err, QLM_EUSAGE,
                    "quanto: dtype=f32: qlm stores %s scales as halves, so only f16 or bf16 scales are kept exactly "
                    "(dtype=f32 is for qfloat8)",
                    qtype_name(o));
  if (cols < 1 || cols > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "quanto: rows of %lld weights: expected 1..65535", (long long)cols);
  return QLM_OK;
}

/* Index of the first non-finite value of x[0..n), or -1: one flag over the row (vectorizes), the
 * position looked up only for the error message. */
static int64_t first_nonfinite(const float *x, int64_t n) {
  int bad = 0;
  for (int64_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
  if (!bad) return -1;
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

/* The row's weights in the dtype (w), checked: finite and within the dtype's range. */
static int load_row(const float *W, int64_t r, int64_t cols, int dtype, float *w, qlm_error *err) {
  const float *row = W + r * cols;
  int64_t c = first_nonfinite(row, cols);
  if (c >= 0) return qlm_fail(err, QLM_EFORMAT, "quanto: weight [%lld][%lld] is not finite", (long long)r, (long long)c);
  memcpy(w, row, (size_t)cols * sizeof *w);
  rd_row(w, cols, dtype);
  if ((c = first_nonfinite(w, cols)) >= 0)
    return qlm_fail(err, QLM_EUNSUPPORTED, "quanto: weight [%lld][%lld] = %g is beyond the range of %s", (long long)r,
                    (long long)c, (double)row[c], dtype_name(dtype));
  return QLM_OK;
}

/* max |w_i| of finite w (the comparison form vectorizes; fmaxf is a library call) */
static float absmax(const float *w, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    float a = fabsf(w[i]);
    m = a > m ? a : m;
  }
  return m;
}

/* t[i] = rd(w[i] / s): the quotient rounded to the dtype, a row at a time. */
static void div_row(const float *w, int n, float s, int dtype, float *t) {
  for (int i = 0; i < n; i++) t[i] = w[i] / s;
  rd_row(t, n, dtype);
}

/* qint8: RTN absmax 8-bit blocks of one row (t: n floats of scratch).  Returns whether the scale
 * was exact in a half. */
static bool int8_row(const float *w, int cols, int dtype, int type, float *t, uint8_t *u, void *blk) {
  float s = rd(absmax(w, cols) / 127.0f, dtype);
  if (s > 0.0f) {
    div_row(w, cols, s, dtype, t);
    for (int i = 0; i < cols; i++) u[i] = (uint8_t)(128 + (int)round_clamp(t[i], -128.0f, 127.0f));
  } else {
    memset(u, 128, (size_t)cols);
  }
  qlm_rtn_pack(type, s, 128, u, blk);
  return qlm_f16_to_f32(qlm_f32_to_f16(s)) == s;
}

static void fp8_row(const float *w, int cols, int dtype, float *t, uint8_t *blk) {
  float s = rd(absmax(w, cols) / QLM_FP8_MAX, dtype);
  uint32_t bits;
  memcpy(&bits, &s, sizeof bits);
  qlm_wr32(blk, bits);
  if (!(s > 0.0f)) {
    memset(blk + QLM_FP8_HEADER, 0, (size_t)cols); /* e4m3fn +0 */
    return;
  }
  div_row(w, cols, s, dtype, t);
  for (int i = 0; i < cols; i++) {
    float v = t[i] > -QLM_FP8_MAX ? t[i] : -QLM_FP8_MAX;
    v = v < QLM_FP8_MAX ? v : QLM_FP8_MAX;
    blk[QLM_FP8_HEADER + i] = qlm_f32_to_e4m3fn(v);
  }
}

/* One affine group of g weights: codes u, scale s and float shift (or integer zero z); t: g floats
 * of scratch. */
static void affine_group(const float *w, int g, int bits, bool int_zero, int dtype, float *t, uint8_t *u, float *s,
                         float *shift, int *z) {
  const int qmax = (1 << bits) - 1;
  float lo = w[0], hi = w[0];
  for (int i = 1; i < g; i++) lo = w[i] < lo ? w[i] : lo, hi = w[i] > hi ? w[i] : hi;
  if (hi == lo) lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f); /* quanto: scale 0 and NaN codes */
  *s = rd(rd(hi - lo, dtype) / (float)qmax, dtype);
  *shift = -lo;
  *z = 0;
  if (!(*s > 0.0f)) { /* an all-zero group */
    *s = 0.0f, *shift = 0.0f;
    memset(u, 0, (size_t)g);
    return;
  }
  const float fq = (float)qmax;
  if (int_zero) {
    *z = (int)round_clamp(rd(*shift / *s, dtype), 0.0f, fq);
    /* clamp(round(t) + z, 0, qmax) = round(clamp(t, -z, qmax - z)) + z: z is an integer in [0, qmax] */
    const float zf = (float)*z;
    div_row(w, g, *s, dtype, t);
    for (int i = 0; i < g; i++) u[i] = (uint8_t)((int)round_clamp(t[i], -zf, fq - zf) + *z);
  } else {
    for (int i = 0; i < g; i++) t[i] = w[i] + *shift;
    rd_row(t, g, dtype);
    div_row(t, g, *s, dtype, t);
    for (int i = 0; i < g; i++) u[i] = (uint8_t)round_clamp(t[i], 0.0f, fq);
  }
}

float qlm_quanto_input_scale(const float *call_absmax, int n, int dtype) {
  float scale = 1.0f;                              /* register_buffer("input_scale", ones(())) */
  const float m = 0.9f, c = (float)(1.0 - 0.9);    /* torch casts the Python scalars to float */
  for (int k = 0; k < n; k++) {
    float nw = rd(rd(call_absmax[k], dtype) / 127.0f, dtype);
    scale = scale == 1.0f ? nw : rd(rd(m * scale, dtype) + rd(nw * c, dtype), dtype);
  }
  return scale;
}

float qlm_quanto_fake_quant_act(float x, float s) {
  return s * fminf(fmaxf(nearbyintf(x * (1.0f / s)), -128.0f), 127.0f);
}

/* activations=qint8: the companion ".input_scale" from the calibration's per-call maxima. */
static int add_input_scale(const qlm_calib *calib, int dtype, qlm_qtensor *out, qlm_error *err) {
  if (!calib || !calib->call_absmax || calib->n_calls < 1)
    return qlm_fail(err, QLM_EUSAGE, "quanto: activations=qint8 needs calibration (the inputs' ranges): run with calibration data");
  float s = qlm_quanto_input_scale(calib->call_absmax, calib->n_calls, dtype);
  if (!(s > 0.0f) || !isfinite(s))
    return qlm_fail(err, QLM_EUSAGE, "quanto: the calibrated input scale is %g (all-zero or non-finite inputs)", (double)s);
  qlm_qaux *a = qlm_qtensor_add_aux(out, ".input_scale", QLM_TYPE_F32, 1, err);
  if (!a) return err && err->code ? err->code : QLM_ENOMEM;
  memcpy(a->data, &s, sizeof s);
  return QLM_OK;
}

static int quanto_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                           qlm_qtensor *out, qlm_error *err) {
  int rc = quanto_check(o, rows, cols, err);
  if (rc) return rc;
  const int dtype = o->dtype ? o->dtype : QLM_DTYPE_F16, n = (int)cols;
  const int gq = o->bits == 8 ? 0 : quanto_group(o, cols), g = gq ? gq : n;
  int type;
  if (o->float8) type = qlm_fp8_type(cols);
  else if (o->bits == 8) type = qlm_rtn_type(false, 8, n);
  else if (o->int_zero) type = qlm_rtn_type(true, o->bits, g);
  else type = qlm_hqq_type(o->bits, g);
  if ((rc = qlm_qtensor_alloc(out, type, rows, cols, err))) return rc;
  float *w = qlm_calloc((size_t)n, sizeof *w, "quanto row", err);
  float *t = qlm_calloc((size_t)n, sizeof *t, "quanto row scratch", err);
  uint8_t *u = qlm_calloc((size_t)n, 1, "quanto codes", err);
  bool inexact = false;
  if (!w || !t || !u) {
    rc = QLM_ENOMEM;
    goto fail;
  }
  size_t bs = out->row_bytes / (size_t)(n / g);
  for (int64_t r = 0; r < rows; r++) {
    uint8_t *blk = (uint8_t *)out->data + (size_t)r * out->row_bytes;
    if ((rc = load_row(W, r, cols, dtype, w, err))) goto fail;
    if (o->float8) {
      fp8_row(w, n, dtype, t, blk);
      continue;
    }
    if (o->bits == 8) {
      if (!int8_row(w, n, dtype, type, t, u, blk)) inexact = true;
      continue;
    }
    for (int c = 0; c < n; c += g, blk += bs) {
      float s, shift;
      int z;
      affine_group(w + c, g, o->bits, o->int_zero, dtype, t, u, &s, &shift, &z);
      if (qlm_f16_to_f32(qlm_f32_to_f16(s)) != s) inexact = true;
      if (o->int_zero) {
        qlm_rtn_pack(type, s, z, u, blk);
        continue;
      }
      float zf = s > 0.0f ? shift / s : 0.0f;
      if (!(fabsf(zf) <= 65504.0f)) {
        rc = qlm_fail(err, QLM_EUNSUPPORTED,
                      "quanto: row %lld, group at column %d: the shift / scale = %g does not fit the half float zero of "
                      "qlm's storage (a group far from 0 relative to its spread)",
                      (long long)r, c, (double)zf);
        goto fail;
      }
      qlm_hqq_pack(type, s, zf, u, blk);
    }
  }
  if (o->act_int8 && (rc = add_input_scale(calib, dtype, out, err))) goto fail;
  qlm_qtensor_set_bpw(out);
  char gs[16];
  if (gq) snprintf(gs, sizeof gs, "%d", gq);
  else snprintf(gs, sizeof gs, "channel");
  snprintf(out->desc, sizeof out->desc, "quanto weights=%s group=%s dtype=%s%s%s", qtype_name(o), gs, dtype_name(dtype),
           o->int_zero ? " zeropoint=1" : "", o->act_int8 ? " activations=qint8" : "");
  if (o->bits < 8 && gq != (o->group > 0 ? o->group : 128) && cols > (o->group > 0 ? o->group : 128))
    snprintf(out->note, sizeof out->note, "group %d does not divide the %lld columns: %s%s (quanto's rule)",
             o->group > 0 ? o->group : 128, (long long)cols, gq ? "used " : "per output row", gq ? gs : "");
  if (inexact)
    snprintf(out->note, sizeof out->note, "some %s scales are below the half range and were rounded to halves",
             dtype_name(dtype));
  free(w), free(t), free(u);
  return QLM_OK;
fail:
  free(w), free(t), free(u);
  qlm_qtensor_free(out);
  return rc;
}

static bool quanto_wants_calib(const qlm_quant_opts *o) { return o->act_int8; }

const qlm_quant_method qlm_method_quanto = {
    .name = "quanto",
    .wants_calib = quanto_wants_calib,
    .summary = "optimum-quanto weights: qint8/qfloat8 absmax per row, qint4/qint2 affine (scale + shift) per group of 128",
    .options = "weights=qint8|qint4|qint2|qfloat8 (qint8) group=N (128, for qint4/qint2) zeropoint=0|1 dtype=f16|bf16|f32 (f16) "
               "activations=qint8|none (none; qint8: static per-tensor int8 input scales from calibration)",
    .defaults = quanto_defaults,
    .check = quanto_check,
    .quantize = quanto_quantize,
};
