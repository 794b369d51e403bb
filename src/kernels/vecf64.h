/* vecf64.h — double-precision vector steps of the solvers in quant/ (GPTQ's in-block update),
 * at every SIMD level with the same bits: each element's product is rounded, then subtracted
 * (never fused), so the vector widths only change how many elements go at once. */
#ifndef QLM_VECF64_H
#define QLM_VECF64_H

#include <stdint.h>

/* y[j] = y[j] - a * x[j] for j < n (the product rounded to double first). */
typedef void (*qlm_sub_scaled_f64_fn)(double *y, double a, const double *x, int64_t n);
void qlm_sub_scaled_f64_scalar(double *y, double a, const double *x, int64_t n);
void qlm_sub_scaled_f64_avx512(double *y, double a, const double *x, int64_t n);
/* The fastest this CPU has (kernels/cpu.c, QLM_SIMD cap included). */
qlm_sub_scaled_f64_fn qlm_sub_scaled_f64_best(void);

#endif
