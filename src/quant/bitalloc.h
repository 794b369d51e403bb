/* bitalloc.h — sensitivity-driven mixed precision (`qlm quantize --target-bpw B`).
 *
 * Each quantizable matrix t has candidate settings k (bit widths), each with a cost (bytes it
 * stores) and an error: the relative output error of the layer on the calibration inputs,
 *   e_t(k) = tr(dW H dW^T) / tr(W H W^T),   dW = W - deq(Q_k(W)),  H = sum x x^T / n,
 * i.e. the mean squared error the quantized matrix adds to its outputs over the calibration
 * tokens, relative to the outputs' energy.  The allocation minimizes sum_t e_t(k_t) under a
 * budget of bytes: it starts from every matrix's cheapest setting and repeatedly applies the
 * upgrade with the largest error decrease per extra byte (marginal analysis — optimal when each
 * e_t is convex in its cost, a good heuristic otherwise) while it fits.
 *
 * This is a proxy for the effect on the model's loss: layers are weighted equally by their
 * relative output error, not by how much the final loss feels them. */
#ifndef QLM_BITALLOC_H
#define QLM_BITALLOC_H

#include <stdint.h>

#include "core/error.h"

typedef struct qlm_bit_option {
  int bits;        /* the setting (bit width) */
  double bytes;    /* storage it costs */
  double err;      /* relative output error (see above) */
} qlm_bit_option;

/* Choose one option per matrix: opts[t][0..n_opts[t]) sorted by bytes ascending.  Writes the
 * chosen index per matrix to choice[t] and returns the bytes used (*used).  Fails with
 * QLM_EUSAGE when even the cheapest options exceed the budget (naming it). */
int qlm_bitalloc(int n, const int *n_opts, qlm_bit_option *const *opts, double budget_bytes, int *choice, double *used,
                 qlm_error *err);

/* tr(dW H dW^T) for dW [rows x cols] and H [cols x cols] (row by row: sum_r dW_r H dW_r^T). */
double qlm_output_error(const float *dW, int64_t rows, int64_t cols, const double *H);

#endif
