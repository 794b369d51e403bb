/* quanto.c — optimum-quanto's weight quantization (huggingface/optimum-quanto 0.2.7: nn/qmodule.py,
 * tensor/optimizers/{absmax,max,affine}_optimizer.py, library/quantize.py), reproduced in the float
 * type the model runs in (dtype=f16, the default: seed 000's fp16 GPU runs; bf16; f32 for qfloat8).
 * Every quanto operation rounds to that dtype, so each step below is computed in float and rounded
 * (rd) — exactly what torch does for f16/bf16 tensors (the float result of one +, -, / of two halves
 * rounded once is the correctly rounded half result).  The weights are first rounded to the dtype
 * (what quanto sees in a model loaded in that dtype; exact for an f16 checkpoint).  The per-row
 * arithmetic is in kernels/quanto_rows.c (scalar reference, AVX-512 for f16); this file chooses the
 * storage, splits the rows across the driver's threads and reports errors.
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/fp8.h"
#include "kernels/hqq.h"
#include "kernels/quanto_rows.h"
#include "kernels/rtn.h"
#include "kernels/threadpool.h"
#include "quant/quanto.h"

static const char *dtype_name(int dtype) {
  return dtype == QLM_DTYPE_F16 ? "f16" : dtype == QLM_DTYPE_BF16 ? "bf16" : "f32";
}

static const char *qtype_name(const qlm_quant_opts *o) {
  return o->float8 ? "qfloat8" : o->bits == 8 ? "qint8" : o->bits == 4 ? "qint4" : "qint2";
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

/* The message for row r that a row kernel refused (kernels/quanto_rows.h): its first weight that
 * is not finite, or not within the dtype's range once rounded. */
static int row_error(const float *W, int64_t r, int64_t cols, int dtype, qlm_error *err) {
  const float *row = W + r * cols;
  int64_t c = first_nonfinite(row, cols);
  if (c >= 0) return qlm_fail(err, QLM_EFORMAT, "quanto: weight [%lld][%lld] is not finite", (long long)r, (long long)c);
  for (c = 0; c < cols; c++)
    if (!isfinite(qlm_quanto_rd(row[c], dtype))) break;
  return qlm_fail(err, QLM_EUNSUPPORTED, "quanto: weight [%lld][%lld] = %g is beyond the range of %s", (long long)r,
                  (long long)c, (double)row[c], dtype_name(dtype));
}

float qlm_quanto_input_scale(const float *call_absmax, int n, int dtype) {
  float scale = 1.0f;                              /* register_buffer("input_scale", ones(())) */
  const float m = 0.9f, c = (float)(1.0 - 0.9);    /* torch casts the Python scalars to float */
  for (int k = 0; k < n; k++) {
    float nw = qlm_quanto_rd(qlm_quanto_rd(call_absmax[k], dtype) / 127.0f, dtype);
    scale = scale == 1.0f ? nw : qlm_quanto_rd(qlm_quanto_rd(m * scale, dtype) + qlm_quanto_rd(nw * c, dtype), dtype);
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

/* The rows of one tensor, handed out to the pool's threads in chunks of consecutive rows, in
 * increasing order, by an atomic counter: a thread that starts late (a pool worker still waking up
 * from its sleep between tensors) takes fewer chunks instead of the caller waiting idle for its
 * fixed half. */
typedef struct quanto_job {
  const float *W;
  int64_t rows, chunk;   /* rows per chunk */
  _Atomic int64_t next;  /* first row not yet handed out */
  int n, g, bits, dtype, type;
  bool float8, int_zero;
  uint8_t *out;
  size_t row_bytes, block_bytes;
  const qlm_quanto_rows *k;
  float *scratch;        /* [nth][n + 2 * (n / g)] row, scales, shifts */
  int *zeros;            /* [nth][n / g] */
  uint8_t *codes;        /* [nth][n] */
  int64_t *bad_row;      /* [nth] the thread's first failing row + 1, 0 = none */
  int *bad_col;          /* [nth] -1: a weight (row_error tells which); else the group whose zero overflows */
  bool *inexact;         /* [nth] some scale is not exactly a half */
} quanto_job;

/* An f16 scale is a half by construction (rounded to one); a bf16 scale below 2^-14 or so is not. */
static bool not_half(int dtype, float s) { return dtype != QLM_DTYPE_F16 && qlm_f16_to_f32(qlm_f32_to_f16(s)) != s; }

/* Quantize row r into its blocks; -2 done, -1 a weight the kernel refused, c >= 0 the column of a
 * group whose shift / scale does not fit a half zero. */
static int quanto_row(const quanto_job *j, int ith, int64_t r) {
  const int n = j->n, ng = n / j->g;
  float *t = j->scratch + (size_t)ith * (size_t)(n + 2 * ng), *s = t + n, *shift = s + ng;
  int *z = j->zeros + (size_t)ith * (size_t)ng;
  uint8_t *u = j->codes + (size_t)ith * (size_t)n, *blk = j->out + (size_t)r * j->row_bytes;
  const float *w = j->W + r * n;
  if (j->float8) {
    if (!j->k->f8(w, n, j->dtype, t, s, blk + QLM_FP8_HEADER)) return -1;
    uint32_t bits;
    memcpy(&bits, s, sizeof bits);
    qlm_wr32(blk, bits);
    return -2;
  }
  if (j->bits == 8) { /* 8-bit codes are stored as they are (rtn.h): written in place */
    if (!j->k->q8(w, n, j->dtype, t, s, blk + qlm_rtn_header_bytes(j->type))) return -1;
    qlm_rtn_pack_header(j->type, s[0], 128, blk);
    if (not_half(j->dtype, s[0])) j->inexact[ith] = true;
    return -2;
  }
  if (j->int_zero) {
    if (!j->k->affine(w, n, j->g, j->bits, true, j->dtype, t, s, shift, z, u)) return -1;
    for (int k = 0; k < ng; k++, blk += j->block_bytes) qlm_rtn_pack(j->type, s[k], z[k], u + k * j->g, blk);
  } else {
    int k = j->k->affine_hqq(w, n, j->g, j->bits, j->dtype, j->type, t, s, shift, z, u, blk);
    if (k != -2) return k < 0 ? -1 : k * j->g;
  }
  for (int k = 0; k < ng; k++)
    if (not_half(j->dtype, s[k])) j->inexact[ith] = true;
  return -2;
}

/* A thread takes its chunks in increasing order, so its first failure is its smallest failing row,
 * and every row before that row was handed out earlier: job_error's minimum over the threads is
 * still the first failure in row order. */
static void quanto_rows_task(void *ctx, int ith, int nth) {
  quanto_job *j = ctx;
  (void)nth;
  for (;;) {
    int64_t r0 = atomic_fetch_add_explicit(&j->next, j->chunk, memory_order_relaxed);
    if (r0 >= j->rows) return;
    int64_t r1 = r0 + j->chunk < j->rows ? r0 + j->chunk : j->rows;
    for (int64_t r = r0; r < r1; r++) {
      int c = quanto_row(j, ith, r);
      if (c != -2) {
        j->bad_row[ith] = r + 1, j->bad_col[ith] = c;
        return;
      }
    }
  }
}

/* The failure of the first failing row (the rows are done in order within each thread, so the
 * smallest first failure over the threads is the sequential order's). */
static int job_error(const quanto_job *j, int nth, qlm_error *err) {
  int worst = -1;
  for (int i = 0; i < nth; i++)
    if (j->bad_row[i] && (worst < 0 || j->bad_row[i] < j->bad_row[worst])) worst = i;
  if (worst < 0) return QLM_OK;
  int64_t r = j->bad_row[worst] - 1;
  if (j->bad_col[worst] < 0) return row_error(j->W, r, j->n, j->dtype, err);
  return qlm_fail(err, QLM_EUNSUPPORTED,
                  "quanto: row %lld, group at column %d: the shift / scale does not fit the half float zero of "
                  "qlm's storage (a group far from 0 relative to its spread)",
                  (long long)r, j->bad_col[worst]);
}

static int quanto_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                           qlm_qtensor *out, qlm_error *err) {
  _Static_assert((int)QLM_QDTYPE_F16 == (int)QLM_DTYPE_F16 && (int)QLM_QDTYPE_BF16 == (int)QLM_DTYPE_BF16 &&
                     (int)QLM_QDTYPE_F32 == (int)QLM_DTYPE_F32,
                 "kernels/quanto_rows.h and quant/method.h name the dtypes alike");
  int rc = quanto_check(o, rows, cols, err);
  if (rc) return rc;
  const int dtype = o->dtype ? o->dtype : QLM_DTYPE_F16, n = (int)cols;
  const int gq = o->bits == 8 ? 0 : quanto_group(o, cols), g = gq ? gq : n;
  int type;
  if (o->float8) type = qlm_fp8_type(cols);
  else if (o->bits == 8) type = qlm_rtn_type(false, 8, n);
  else if (o->int_zero) type = qlm_rtn_type(true, o->bits, g);
  else type = qlm_hqq_type(o->bits, g);
  /* every byte of every row is written below (headers and codes; 4-bit nibbles and bit streams
   * fill their bytes), or the tensor is freed */
  if ((rc = qlm_qtensor_alloc_unzeroed(out, type, rows, cols, err))) return rc;
  qlm_pool *pool = o->pool && rows >= 64 ? o->pool : NULL; /* a few rows are not worth waking threads */
  const int nth = pool ? qlm_pool_size(pool) : 1, ng = n / g;
  /* chunks of ~16K weights: a few microseconds each, dozens per thread in a matrix of 1M weights */
  quanto_job j = {.W = W, .rows = rows, .chunk = n < 16384 ? 16384 / n : 1, .n = n, .g = g, .bits = o->bits, .dtype = dtype, .type = type,
                  .float8 = o->float8, .int_zero = o->int_zero, .out = out->data, .row_bytes = out->row_bytes,
                  .block_bytes = out->row_bytes / (size_t)ng, .k = qlm_quanto_rows_get()};
  j.scratch = qlm_malloc((size_t)nth * (size_t)(n + 2 * ng) * sizeof *j.scratch, "quanto rows", err);
  j.zeros = qlm_malloc((size_t)nth * (size_t)ng * sizeof *j.zeros, "quanto rows", err);
  j.codes = qlm_malloc((size_t)nth * (size_t)n, "quanto codes", err);
  j.bad_row = qlm_calloc((size_t)nth, sizeof *j.bad_row, "quanto rows", err);
  j.bad_col = qlm_calloc((size_t)nth, sizeof *j.bad_col, "quanto rows", err);
  j.inexact = qlm_calloc((size_t)nth, sizeof *j.inexact, "quanto rows", err);
  bool inexact = false;
  if (!j.scratch || !j.zeros || !j.codes || !j.bad_row || !j.bad_col || !j.inexact) {
    rc = QLM_ENOMEM;
  } else {
    qlm_pool_run(pool, quanto_rows_task, &j);
    rc = job_error(&j, nth, err);
    for (int i = 0; i < nth; i++) inexact |= j.inexact[i];
  }
  free(j.scratch), free(j.zeros), free(j.codes), free(j.bad_row), free(j.bad_col), free(j.inexact);
  if (!rc && o->act_int8) rc = add_input_scale(calib, dtype, out, err);
  if (rc) {
    qlm_qtensor_free(out);
    return rc;
  }
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
  return QLM_OK;
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
