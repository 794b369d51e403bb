/* bitalloc.c — marginal-analysis bit allocation and the output-error measure (bitalloc.h). */
#include "quant/bitalloc.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

double qlm_output_error(const float *dW, int64_t rows, int64_t cols, const double *H) {
  double *d = malloc((size_t)cols * sizeof *d), *hd = malloc((size_t)cols * sizeof *hd), total = 0;
  if (!d || !hd) {
    free(d), free(hd);
    return NAN;
  }
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < cols; j++) d[j] = dW[r * cols + j];
    cblas_dsymv(CblasRowMajor, CblasUpper, (int)cols, 1.0, H, (int)cols, d, 1, 0.0, hd, 1);
    total += cblas_ddot((int)cols, d, 1, hd, 1);
  }
  free(d), free(hd);
  return total;
}

int qlm_bitalloc(int n, const int *n_opts, qlm_bit_option *const *opts, double budget_bytes, int *choice, double *used,
                 qlm_error *err) {
  double total = 0;
  for (int t = 0; t < n; t++) {
    if (n_opts[t] < 1) return qlm_fail(err, QLM_EINTERNAL, "bit allocation: a matrix without options");
    choice[t] = 0;
    total += opts[t][0].bytes;
  }
  if (total > budget_bytes)
    return qlm_fail(err, QLM_EUSAGE, "--target-bpw: even the fewest bits need %.0f bytes, above the budget of %.0f",
                    total, budget_bytes);
  for (;;) {
    int best_t = -1, best_j = -1;
    double best_gain = 0;
    for (int t = 0; t < n; t++) {
      int k = choice[t];
      /* the best next step of this matrix: any larger option (errors need not be convex) */
      for (int j = k + 1; j < n_opts[t]; j++) {
        double db = opts[t][j].bytes - opts[t][k].bytes, de = opts[t][k].err - opts[t][j].err;
        if (db <= 0 || total + db > budget_bytes || de <= 0) continue;
        double gain = de / db;
        if (gain > best_gain) best_gain = gain, best_t = t, best_j = j;
      }
    }
    if (best_t < 0) break;
    total += opts[best_t][best_j].bytes - opts[best_t][choice[best_t]].bytes;
    choice[best_t] = best_j;
  }
  *used = total;
  return QLM_OK;
}
