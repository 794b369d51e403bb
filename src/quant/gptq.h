/* gptq.h — GPTQ's internals exposed for tests and tools (the method itself is qlm_method_gptq
 * in quant/method.h). */
#ifndef QLM_GPTQ_H
#define QLM_GPTQ_H

#include <stdint.h>

#include "quant/method.h"

/* Run GPTQ like qlm_method_gptq.quantize (same checks, same result in out) and also return
 * what the algorithm itself computed: w_hat [rows x cols] (may be NULL) receives the quantized
 * weights Q in the original column order, as the algorithm produced them (before packing), and
 * loss (may be NULL) GPTQ's own loss sum (w - q)^2 / U_ii^2 / 2. */
int qlm_gptq_quantize_ex(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                         qlm_qtensor *out, float *w_hat, double *loss, qlm_error *err);

/* The layer's reconstruction error tr((W - Ŵ) H (W - Ŵ)^T) for W, Ŵ [rows x cols] and H
 * [cols x cols] (with H = X X^T / n this is ||W X - Ŵ X||^2 / n). */
double qlm_gptq_layer_error(const float *W, const float *W_hat, int64_t rows, int64_t cols, const double *H);

#endif
