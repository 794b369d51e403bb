/* rtn.c — round-to-nearest quantization, absmax (symmetric) and zero-point (asymmetric), at
 * 2..8 bits, per group, per output channel or per tensor (SEEDS.md studies A and C; the
 * formulas of seeds 003/004):
 *   absmax:     d = max|x| / (2^(b-1) - 1),   q = round(x / d)  in +-(2^(b-1) - 1),  x' = d q
 *   zero-point: d = (max - min) / (2^b - 1),  z = round(-min / d),
 *               u = clamp(round(x / d) + z, 0, 2^b - 1),  x' = d (u - z)
 * Rounding is to nearest, ties to even (torch.round).  d is stored as a half (kernels/rtn.h), and
 * the codes are computed from that stored d, so they are the nearest codes for the scale the
 * kernels use; the largest |x| may then sit at most half a unit of d's last place beyond the
 * code range and is clamped.
 *
 * Corner cases: a group of equal values v gets its range widened to include 0 (d = |v|/(2^b-1),
 * exact for v and 0); an all-zero group gets d = 0.  A zero point outside int16 (a group far
 * from 0 relative to its spread, or a spread below the smallest half) also widens the range to
 * include 0.
 *
 * A group size that does not divide the row length is replaced by the largest divisor of the
 * row length below it (the caller reports it: the row-block layout keeps groups within rows). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/rtn.h"
#include "quant/method.h"

/* The group size used for rows of `cols` weights: the asked size when it divides the rows, else
 * the largest divisor of cols below it if that is at least half of it, else the smallest divisor
 * above it (groups must not straddle rows: each row is a whole number of blocks). */
static int effective_group(const qlm_quant_opts *o, int64_t cols) {
  if (o->group <= 0 || o->group >= cols) return (int)cols; /* per channel / per tensor */
  int g = o->group, below = g, above = g;
  while (cols % below) below--;
  while (cols % above) above++;
  return 2 * below >= g ? below : above;
}

static float half_round(float d) { return qlm_f16_to_f32(qlm_f32_to_f16(d)); }

/* Scale and zero point of values in [lo, hi]. */
static void asym_params(float lo, float hi, int bits, float *d, int *z) {
  float qmax = (float)((1 << bits) - 1);
  if (hi == lo) lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
  *d = half_round((hi - lo) / qmax);
  if (*d == 0.0f && lo == 0.0f && hi == 0.0f) {
    *z = 0;
    return;
  }
  float zf = *d > 0.0f ? nearbyintf(-lo / *d) : INFINITY;
  /* a spread too small for a half d, or a range far from 0: include 0 so z is within 0..qmax */
  if (!(fabsf(zf) <= 32767.0f)) {
    lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
    *d = half_round((hi - lo) / qmax);
    zf = nearbyintf(-lo / *d);
  }
  *z = (int)zf;
}

static float sym_scale(float amax, int bits) { return half_round(amax / (float)((1 << (bits - 1)) - 1)); }

/* Codes of one group of g values with scale d and zero z (z = 2^(b-1) for absmax). */
static void encode(const float *x, int g, int bits, bool asym, float d, int z, uint8_t *u) {
  int lo = asym ? 0 : 1, hi = (1 << bits) - 1;
  for (int i = 0; i < g; i++) {
    int v = d > 0.0f ? (int)nearbyintf(x[i] / d) + z : z;
    u[i] = (uint8_t)(v < lo ? lo : v > hi ? hi : v);
  }
}

static void range_of(const float *x, int64_t n, float *lo, float *hi, float *amax) {
  float a = x[0], b = x[0], m = 0.0f;
  for (int64_t i = 0; i < n; i++) {
    a = fminf(a, x[i]), b = fmaxf(b, x[i]);
    m = fmaxf(m, fabsf(x[i]));
  }
  *lo = a, *hi = b, *amax = m;
}

static int rtn_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits < 2 || o->bits > 8) return qlm_fail(err, QLM_EUSAGE, "rtn: bits=%d: expected 2..8", o->bits);
  if (cols > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "rtn: rows of %lld weights are longer than the largest group (65535)",
                    (long long)cols);
  return QLM_OK;
}

static int rtn_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                        qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  int rc = rtn_check(o, rows, cols, err);
  if (rc) return rc;
  int g = effective_group(o, cols), bits = o->bits;
  int type = qlm_rtn_type(o->asym, bits, g);
  if ((rc = qlm_qtensor_alloc(out, type, rows, cols, err))) return rc;
  size_t bs = (size_t)qlm_rtn_header_bytes(type) + (size_t)qlm_rtn_code_bytes(type);
  float t_lo = 0, t_hi = 0, t_amax = 0, d = 0;
  int z = 1 << (bits - 1);
  if (o->group == QLM_GROUP_TENSOR && rows * cols > 0) {
    range_of(W, rows * cols, &t_lo, &t_hi, &t_amax);
    if (o->asym) asym_params(t_lo, t_hi, bits, &d, &z);
    else d = sym_scale(t_amax, bits);
  }
  uint8_t u[0x10000];
  for (int64_t r = 0; r < rows; r++) {
    unsigned char *blk = (unsigned char *)out->data + (size_t)r * out->row_bytes;
    for (int64_t c = 0; c < cols; c += g, blk += bs) {
      const float *x = W + r * cols + c;
      if (o->group != QLM_GROUP_TENSOR) {
        float lo, hi, amax;
        range_of(x, g, &lo, &hi, &amax);
        if (o->asym) asym_params(lo, hi, bits, &d, &z);
        else d = sym_scale(amax, bits);
      }
      encode(x, g, bits, o->asym, d, z, u);
      qlm_rtn_pack(type, d, z, u, blk);
    }
  }
  qlm_qtensor_set_bpw(out);
  char gs[24];
  if (o->group == QLM_GROUP_TENSOR) snprintf(gs, sizeof gs, "tensor");
  else if (o->group == QLM_GROUP_CHANNEL) snprintf(gs, sizeof gs, "channel");
  else snprintf(gs, sizeof gs, "%d", g);
  snprintf(out->desc, sizeof out->desc, "%s bits=%d group=%s", o->asym ? "zeropoint" : "absmax", bits, gs);
  if (o->group > 0 && g != o->group && o->group < cols)
    snprintf(out->note, sizeof out->note, "group %d does not divide the %lld columns: used %d", o->group,
             (long long)cols, g);
  return QLM_OK;
}

static void absmax_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 8;
  o->asym = false;
}

static void zeropoint_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 8;
  o->asym = true;
}

const qlm_quant_method qlm_method_absmax = {
    .name = "absmax",
    .summary = "round-to-nearest, symmetric: d = max|x|/(2^(b-1)-1) per group/channel/tensor",
    .options = "bits=2..8 (8) group=N|channel|tensor (channel)",
    .defaults = absmax_defaults,
    .check = rtn_check,
    .quantize = rtn_quantize,
};

const qlm_quant_method qlm_method_zeropoint = {
    .name = "zeropoint",
    .summary = "round-to-nearest, asymmetric: d = (max-min)/(2^b-1), z = round(-min/d)",
    .options = "bits=2..8 (8) group=N|channel|tensor (channel)",
    .defaults = zeropoint_defaults,
    .check = rtn_check,
    .quantize = rtn_quantize,
};
