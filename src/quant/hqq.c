/* hqq.c — HQQ, half-quadratic quantization (quant/hqq.h), as the `hqq` package (0.2.x) does it
 * with its defaults (Quantizer.quantize + optimize_weights_proximal_legacy, QUANT_FACTS.md 1):
 *
 *   start (min-max): si = (1/(max - min)) * (2^b - 1) (1 if |max - min| <= 1e-4, at most 2e4),
 *                    z = -min * si, rounded when round_zero (bits == 4);
 *   iterate (kernels/hqq_iter.h): W_q = clamp(round(W si + z)), W_r = (W_q - z)/si,
 *                    W_e = shrink_p(W - W_r, beta), z = mean_group(W_q - (W - W_e) si),
 *                    beta *= kappa (kappa = 1 in hqq's current default solver);
 *   stop:            after the first iteration whose mean |W - W_r| over the WHOLE matrix is
 *                    not below the best so far; the zero computed in that iteration is kept
 *                    (hqq does not roll back);
 *   store:           W_q = clamp(round(W si + z)), s = 1/si; s and z as halves (kernels/hqq.h).
 * Only the zero point is optimized: hqq's default solver never updates the scale.
 *
 * The work is split over a thread pool by slabs of groups; every iteration is one pass over the
 * matrix in lockstep (the early stop is global), and the per-slab error sums are added in slab
 * order, so the result does not depend on the thread count or the SIMD level. */
#include "quant/hqq.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/hqq.h"

#define SLAB 128 /* groups per unit of work */

void qlm_hqq_params_default(qlm_hqq_params *p, int bits, int group) {
  memset(p, 0, sizeof *p);
  p->bits = bits;
  p->group = group;
  p->axis = 1;
  p->round_zero = bits == 4;
  p->optimize = true;
  p->lp_norm = 0.7f;
  p->beta = 10.0f;
  p->kappa = 1.0f;
  p->iters = 20;
  p->early_stop = true;
}

int qlm_hqq_params_check(const qlm_hqq_params *p, qlm_error *err) {
  if (p->bits < 1 || p->bits > 8) return qlm_fail(err, QLM_EUSAGE, "hqq: bits=%d: expected 1..8", p->bits);
  if (p->axis == 0)
    return qlm_fail(err, QLM_EUNSUPPORTED,
                    "hqq: axis=0 (groups down the columns) is not supported: qlm stores groups along a row "
                    "(hqq's axis=1)");
  if (p->axis != 1) return qlm_fail(err, QLM_EUSAGE, "hqq: axis=%d: expected 1 (or 0, unsupported)", p->axis);
  if (p->group < 1 || p->group > 0xFFFF)
    return qlm_fail(err, QLM_EUSAGE, "hqq: group=%d: expected 1..65535", p->group);
  if (!(p->lp_norm >= 0.1f && p->lp_norm <= 1.0f))
    return qlm_fail(err, QLM_EUSAGE, "hqq: lp_norm=%g: expected 0.1..1", (double)p->lp_norm);
  if (!(p->beta > 0.0f && p->beta < 1e30f)) return qlm_fail(err, QLM_EUSAGE, "hqq: beta=%g: expected > 0", (double)p->beta);
  if (!(p->kappa >= 1.0f && p->kappa <= 10.0f))
    return qlm_fail(err, QLM_EUSAGE, "hqq: kappa=%g: expected 1..10", (double)p->kappa);
  if (p->iters < 1 || p->iters > 10000) return qlm_fail(err, QLM_EUSAGE, "hqq: iters=%d: expected 1..10000", p->iters);
  return QLM_OK;
}

void qlm_hqq_init_group(const float *x, int g, const qlm_hqq_params *p, float *si, float *z) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < g; i++) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  const float qmax = (float)((1 << p->bits) - 1), denom = hi - lo;
  /* hqq writes max_v / denom with a Python number on the left, which torch evaluates as
   * reciprocal(denom) * max_v: two roundings, reproduced here so the scales match bit for bit */
  float s = fabsf(denom) <= 1e-4f ? 1.0f : (1.0f / denom) * qmax;
  s = s < 2e4f ? s : 2e4f; /* so that fp16 does not overflow (hqq's clamp) */
  float zz = -lo * s;
  if (p->round_zero) zz = nearbyintf(zz);
  *si = s, *z = zz;
}

/* Shared state of one qlm_hqq_optimize call; threads take slabs ith, ith + nth, ... */
typedef struct job {
  const float *W;
  int64_t ng, n_slabs;
  const qlm_hqq_params *p;
  float *si, *z;
  uint8_t *u;
  double *slab_err;             /* [n_slabs] this iteration's sum |W - W_r| per slab */
  qlm_hqq_iter_fn iter;
  qlm_hqq_iter_args args;
  enum { PHASE_INIT, PHASE_ITER, PHASE_ENCODE } phase;
  _Atomic int64_t bad_group;    /* first group found with non-finite weights + 1, or 0 */
} job;

static void slab_range(const job *j, int64_t s, int64_t *k0, int64_t *k1) {
  *k0 = s * SLAB;
  *k1 = *k0 + SLAB < j->ng ? *k0 + SLAB : j->ng;
}

static void init_slab(job *j, int64_t k0, int64_t k1) {
  const int g = j->p->group;
  for (int64_t k = k0; k < k1; k++) {
    const float *x = j->W + k * g;
    for (int i = 0; i < g; i++)
      if (!isfinite(x[i])) {
        int64_t expect = 0;
        atomic_compare_exchange_strong(&j->bad_group, &expect, k + 1);
        break;
      }
    qlm_hqq_init_group(x, g, j->p, &j->si[k], &j->z[k]);
  }
}

static void encode_slab(job *j, int64_t k0, int64_t k1) {
  const int g = j->p->group;
  const float qmax = (float)((1 << j->p->bits) - 1);
  for (int64_t k = k0; k < k1; k++) {
    const float *x = j->W + k * g;
    uint8_t *u = j->u + k * g;
    for (int i = 0; i < g; i++) {
      float v = nearbyintf(x[i] * j->si[k] + j->z[k]);
      u[i] = (uint8_t)(v > 0.0f ? (v < qmax ? v : qmax) : 0.0f);
    }
  }
}

static void run_slabs(void *ctx, int ith, int nth) {
  job *j = ctx;
  for (int64_t s = ith; s < j->n_slabs; s += nth) {
    int64_t k0, k1;
    slab_range(j, s, &k0, &k1);
    if (j->phase == PHASE_INIT) init_slab(j, k0, k1);
    else if (j->phase == PHASE_ENCODE) encode_slab(j, k0, k1);
    else j->slab_err[s] = j->iter(&j->args, j->W + k0 * j->p->group, k1 - k0, j->si + k0, j->z + k0);
  }
}

/* The solver's per-iteration constants for a beta. */
static void set_beta(qlm_hqq_iter_args *a, double beta, double p) {
  a->inv_beta = (float)(1.0 / beta);
  /* shrink_p(x) = 0 iff |x|^(2-p) <= 1/beta; below the threshold minus 0.1% the float
   * evaluation is certainly <= 0 too (its rounding error is ~1e-6 relative), so it is skipped */
  a->shrink_thr = (float)(pow(1.0 / beta, 1.0 / (2.0 - p)) * (1.0 - 1e-3));
}

int qlm_hqq_optimize(const float *W, int64_t ng, const qlm_hqq_params *p, int level, qlm_pool *pool, float *si,
                     float *z, uint8_t *u, double *errs, int *n_iter, qlm_error *err) {
  int rc = qlm_hqq_params_check(p, err);
  if (rc) return rc;
  if (n_iter) *n_iter = 0;
  job j = {.W = W, .ng = ng, .n_slabs = (ng + SLAB - 1) / SLAB, .p = p, .si = si, .z = z, .u = u};
  j.slab_err = qlm_calloc(j.n_slabs ? (size_t)j.n_slabs : 1, sizeof *j.slab_err, "hqq error sums", err);
  if (!j.slab_err) return QLM_ENOMEM;
  j.phase = PHASE_INIT;
  qlm_pool_run(pool, run_slabs, &j);
  int64_t bad = atomic_load(&j.bad_group);
  if (bad) {
    free(j.slab_err);
    return qlm_fail(err, QLM_EFORMAT, "hqq: group %lld (weights %lld..%lld) holds a weight that is not finite",
                    (long long)(bad - 1), (long long)((bad - 1) * p->group), (long long)(bad * p->group - 1));
  }
  if (p->optimize) {
    j.iter = qlm_hqq_iter_for(level);
    j.args = (qlm_hqq_iter_args){.g = p->group, .qmax = (float)((1 << p->bits) - 1), .p_m1 = p->lp_norm - 1.0f};
    double beta = p->beta, n = (double)ng * p->group;
    float best = INFINITY;
    j.phase = PHASE_ITER;
    for (int it = 0; it < p->iters; it++) {
      set_beta(&j.args, beta, p->lp_norm);
      qlm_pool_run(pool, run_slabs, &j);
      double sum = 0.0;
      for (int64_t s = 0; s < j.n_slabs; s++) sum += j.slab_err[s];
      float e = n > 0 ? (float)(sum / n) : 0.0f;
      if (errs) errs[it] = e;
      if (n_iter) *n_iter = it + 1;
      beta *= p->kappa;
      if (!p->early_stop) continue;
      if (e < best) best = e;
      else break;
    }
  }
  if (u) {
    j.phase = PHASE_ENCODE;
    qlm_pool_run(pool, run_slabs, &j);
  }
  free(j.slab_err);
  return QLM_OK;
}

/* The group size used for rows of `cols` weights (the rule of quant/rtn.c): the asked size when
 * it divides the rows, else the largest divisor below it if that is at least half of it, else
 * the smallest divisor above it; a whole row when it asks for at least a row. */
static int effective_group(int group, int64_t cols) {
  if (group <= 0 || group >= cols) return (int)cols;
  int below = group, above = group;
  while (cols % below) below--;
  while (cols % above) above++;
  return 2 * below >= group ? below : above;
}

static int pool_threads(int n_threads) {
  if (n_threads > 0) return n_threads;
  const char *e = getenv("QLM_THREADS");
  long v = e ? strtol(e, NULL, 10) : 0;
  return v >= 1 && v <= 256 ? (int)v : 2;
}

/* Half of v, failing when it is not finite (a group far beyond fp16's range). */
static int to_half(float v, const char *what, int64_t row, int64_t col, uint16_t *h, qlm_error *err) {
  *h = qlm_f32_to_f16(v);
  if (!isfinite(qlm_f16_to_f32(*h)))
    return qlm_fail(err, QLM_EUNSUPPORTED, "hqq: row %lld, group at column %lld: %s %g does not fit a half",
                    (long long)row, (long long)col, what, (double)v);
  return QLM_OK;
}

int qlm_hqq_quantize(const float *W, int64_t rows, int64_t cols, const qlm_hqq_params *p0, int n_threads,
                     qlm_qtensor *out, qlm_error *err) {
  int rc = qlm_hqq_params_check(p0, err);
  if (rc) return rc;
  if (rows < 0 || cols < 1) return qlm_fail(err, QLM_EUSAGE, "hqq: bad shape %lld x %lld", (long long)rows, (long long)cols);
  qlm_hqq_params p = *p0;
  p.group = effective_group(p0->group, cols);
  if (p.group > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "hqq: rows of %lld weights are longer than the largest group (65535)",
                    (long long)cols);
  int type = qlm_hqq_type(p.bits, p.group);
  if ((rc = qlm_qtensor_alloc(out, type, rows, cols, err))) return rc;
  const int64_t gpr = cols / p.group, ng = rows * gpr;
  size_t n = (size_t)rows * (size_t)cols; /* fits: qlm_qtensor_alloc checked rows * row bytes */
  float *si = qlm_malloc((size_t)(ng ? ng : 1) * sizeof *si, "hqq scales", err);
  float *z = si ? qlm_malloc((size_t)(ng ? ng : 1) * sizeof *z, "hqq zeros", err) : NULL;
  uint8_t *u = z ? qlm_malloc(n ? n : 1, "hqq codes", err) : NULL;
  qlm_pool *pool = NULL;
  if (!u) {
    rc = QLM_ENOMEM;
    goto done;
  }
  int nth = pool_threads(n_threads);
  if (nth > 1) pool = qlm_pool_new(nth);
  if ((rc = qlm_hqq_optimize(W, ng, &p, (int)qlm_cpu_simd_level(), pool, si, z, u, NULL, NULL, err))) goto done;
  const size_t bs = qlm_hqq_block_bytes(type);
  for (int64_t k = 0; k < ng; k++) {
    int64_t r = k / gpr, c = (k % gpr) * p.group;
    uint16_t hs, hz;
    if ((rc = to_half(1.0f / si[k], "scale", r, c, &hs, err)) || (rc = to_half(z[k], "zero", r, c, &hz, err))) goto done;
    qlm_hqq_pack(type, qlm_f16_to_f32(hs), qlm_f16_to_f32(hz), u + k * p.group,
                 (uint8_t *)out->data + (size_t)r * out->row_bytes + (size_t)(k % gpr) * bs);
  }
  qlm_qtensor_set_bpw(out);
  snprintf(out->desc, sizeof out->desc, "hqq bits=%d group=%d", p.bits, p.group);
  if (p0->group < cols && p.group != p0->group)
    snprintf(out->note, sizeof out->note, "group %d does not divide the %lld columns: used %d", p0->group,
             (long long)cols, p.group);
done:
  qlm_pool_free(pool);
  free(si);
  free(z);
  free(u);
  if (rc) qlm_qtensor_free(out);
  return rc;
}

/* ---- the method (quant/method.h): bits and group from the options, hqq's defaults otherwise */

static void hqq_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 4;
  if (o->group == QLM_GROUP_CHANNEL) o->group = 64; /* 0 is also "unset": hqq's default group */
}

static int hqq_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits < 1 || o->bits > 8) return qlm_fail(err, QLM_EUSAGE, "hqq: bits=%d: expected 1..8", o->bits);
  if (o->group == QLM_GROUP_TENSOR)
    return qlm_fail(err, QLM_EUNSUPPORTED, "hqq: group=tensor: hqq optimizes per group; use a group size");
  if (effective_group(o->group, cols) > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "hqq: rows of %lld weights are longer than the largest group (65535)",
                    (long long)cols);
  return QLM_OK;
}

static int hqq_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                        qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  int rc = hqq_check(o, rows, cols, err);
  if (rc) return rc;
  qlm_hqq_params p;
  qlm_hqq_params_default(&p, o->bits, o->group > 0 ? o->group : 64);
  return qlm_hqq_quantize(W, rows, cols, &p, o->n_threads, out, err);
}

const qlm_quant_method qlm_method_hqq = {
    .name = "hqq",
    .summary = "HQQ: zero points optimized for an lp-norm (p=0.7) error, half-quadratic solver, no calibration",
    .options = "bits=1..8 (4) group=N (64)",
    .defaults = hqq_defaults,
    .check = hqq_check,
    .quantize = hqq_quantize,
};
