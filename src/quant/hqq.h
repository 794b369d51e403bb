/* hqq.h — HQQ, half-quadratic quantization (Badri & Shaji 2023; the mobiusml `hqq` package):
 * calibration-free affine group quantization whose zero points are optimized to minimize an
 * lp-norm (p < 1) of the weight error (SEEDS/METHODS.md, QUANT_FACTS.md section 1).
 *
 * Exposed beyond the method (qlm_method_hqq in method.h) so that tests can run the solver on one
 * matrix and see its error per iteration, and so that callers can ask for hqq's other options
 * (qlm_quant_opts carries only bits and group). */
#ifndef QLM_QUANT_HQQ_H
#define QLM_QUANT_HQQ_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "kernels/threadpool.h"
#include "quant/method.h"

typedef struct qlm_hqq_params {
  int bits;          /* 1..8 */
  int group;         /* weights per group, along a row */
  int axis;          /* hqq's grouping axis: 1 = groups along a row (the only one qlm's row blocks
                      * hold); 0 (groups down a column) is refused with QLM_EUNSUPPORTED */
  bool round_zero;   /* round the initial zero point (hqq's BaseQuantizeConfig: bits == 4) */
  bool optimize;     /* run the solver (hqq's default); false = min-max quantization */
  float lp_norm;     /* p of the lp-norm, 0.1..1 (0.7) */
  float beta;        /* initial half-quadratic penalty (10) */
  float kappa;       /* beta *= kappa after every iteration; 1 = constant beta, what hqq's default
                      * solver (optimize_weights_proximal_legacy, since 2025-05) does; hqq 1.0.0
                      * and the paper used 1.01 */
  int iters;         /* at most this many iterations (20) */
  bool early_stop;   /* stop after the first iteration whose mean |W - W_r| does not decrease */
} qlm_hqq_params;

/* hqq's defaults for (bits, group): axis 1, round_zero iff bits == 4, p 0.7, beta 10, kappa 1,
 * 20 iterations, early stop. */
void qlm_hqq_params_default(qlm_hqq_params *p, int bits, int group);
int qlm_hqq_params_check(const qlm_hqq_params *p, qlm_error *err);

/* Initial inverse scale and zero of one group of g weights (hqq's min-max start):
 *   si = (1 / (max - min)) * (2^b - 1) (torch's order for hqq's max_v / denom), 1 where |max - min| <= 1e-4, at most 2e4;  z = -min * si,
 *   rounded (half to even) when round_zero. */
void qlm_hqq_init_group(const float *x, int g, const qlm_hqq_params *p, float *si, float *z);

/* Run HQQ on ng groups of p->group consecutive weights (W is [ng x group]):
 *   si[ng], z[ng]   the inverse scales and the optimized zeros, as floats (hqq's values before
 *                   they are stored; the stored scale is 1 / si)
 *   u[ng * group]   the codes clamp(round(W * si + z), 0, 2^b - 1)  (may be NULL)
 *   errs[p->iters]  mean |W - W_r| measured at each iteration run (may be NULL); *n_iter = how
 *                   many ran.  The early stop is global over the whole matrix, as in hqq.
 * level picks the SIMD build of the inner loop (all give identical results); pool may be NULL. */
int qlm_hqq_optimize(const float *W, int64_t ng, const qlm_hqq_params *p, int level, qlm_pool *pool, float *si,
                     float *z, uint8_t *u, double *errs, int *n_iter, qlm_error *err);

/* Quantize W [rows x cols] into QLM_FAMILY_HQQ blocks (kernels/hqq.h).  A group that does not
 * divide cols is replaced as quant/rtn.c does (out->note says so).  n_threads <= 0: the
 * environment variable QLM_THREADS, else 2. */
int qlm_hqq_quantize(const float *W, int64_t rows, int64_t cols, const qlm_hqq_params *p, int n_threads,
                     qlm_qtensor *out, qlm_error *err);

#endif
