/* awq.h — AWQ's pieces (quant/awq.c), exposed for tests and tools. */
#ifndef QLM_AWQ_H
#define QLM_AWQ_H

#include <stdint.h>

#include "core/error.h"
#include "quant/method.h"

#define QLM_AWQ_GRID 20       /* alpha = i / 20, i = 0..19 (llm-awq's n_grid) */
#define QLM_AWQ_CLIP_STEPS 10 /* shrink 1 - i/20, i = 0..9: 1.0 .. 0.55 (max_shrink 0.5) */

/* The group size AWQ uses for rows of `cols` weights (the rule of quant/rtn.c: the asked size if
 * it divides cols, else a nearby divisor; group >= cols means one group per row). */
int qlm_awq_group(int group, int64_t cols);

/* AWQ's zero-point fake quantization of W [rows x cols] (groups of `group`, bits) into Wq:
 *   d = half(max(max - min, 1e-5) / (2^b - 1)),  z = clamp(-round(min / d), 0, 2^b - 1),
 *   u = clamp(round(w / d) + z, 0, 2^b - 1),     w' = d (u - z)
 * exactly the values qlm_method_awq stores.  Returns 0, or -1 when a group's scale does not fit a
 * half (Wq is then incomplete). */
int qlm_awq_fake_quant(const float *W, int64_t rows, int64_t cols, int bits, int group, float *Wq);

/* tr((W - Wq) H (W - Wq)^T) = sum over the rows of the mean squared output error over the
 * calibration tokens, for H = sum x x^T / n [cols x cols]. */
double qlm_awq_output_error(const float *W, const float *Wq, int64_t rows, int64_t cols, const double *H);

/* AutoAWQ's duo-scaling weight statistic s_w [cols] of W [rows x cols] (all matrices that read
 * one input, stacked): per input channel, the mean over rows of |w| / (max |w| of its group + 1e-6),
 * groups as qlm_awq_group(group, cols). */
void qlm_awq_weight_means(const float *W, int64_t rows, int64_t cols, int group, float *sw);

/* The scale search for the matrices W [rows x cols] (all that read one input, stacked): for each
 * alpha of the grid (or only o->alpha when o->alpha_set), s = max(s_x^alpha, 1e-4) / sqrt(max s *
 * min s) with s_x = calib->act_absmean (o->duo: s_x^alpha / (s_w^(1-alpha) + 1e-4) before the floor,
 * s_w = qlm_awq_weight_means), and the error tr(dW H dW^T) of dW = W - Q(W s) / s
 * (calib->hessian; not needed when alpha is given).  Writes the best s, its alpha, and (errs, when
 * not NULL) the error of each grid point (NAN for points not tried). */
int qlm_awq_search(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o, float *s,
                   float *alpha, double errs[QLM_AWQ_GRID], qlm_error *err);

#endif
