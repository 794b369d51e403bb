/* chol2.h — a symmetric positive definite matrix's lower Cholesky factor, inverted, on two
 * threads with a result that does not depend on how many threads run it.
 *
 *   A = L L^T  (A n x n, column-major, its lower triangle read)  ->  L^-1 in A's lower triangle
 *
 * Why: GPTQ needs this once per input width of a layer (quant/gptq.c); on SmolLM2-135M's
 * 1536-wide down projections LAPACK's dpotrf + dtrtri take ~66 ms on one thread, ~2.4 s of a
 * 30-layer quantization, while the second core waits.  OpenBLAS's own threads would split the
 * work by their count, so the bits would change with it; GPTQ's output is the same at any
 * thread count (tested), and so is this.
 *
 * How: A is split once at m (n/2 rounded down to a multiple of 32; no split below n = 256) into
 * blocks [[A11, .], [A21, A22]].  Every step is a LAPACK or BLAS call on those blocks (no
 * arithmetic is written here):
 *   L11 = potrf(A11);  L21 = A21 L11^-T (trsm);  A22 -= L21 L21^T (syrk + gemm);  L22 = potrf(A22)
 *   L^-1 = [[L11^-1, 0], [-L22^-1 L21 L11^-1, L22^-1]]:  two trtri, then two trmm
 * The steps between the two factorizations and after them are cut into two fixed pieces (row or
 * column halves, or the two diagonal blocks); with a pool of two or more threads the pieces of a
 * step run side by side, with one thread one after the other — the same calls on the same data
 * either way.  BLAS must be single-threaded (kernels/matmul.h qlm_blas_single_threaded).
 *
 * The result equals LAPACK's unsplit dpotrf + dtrtri up to rounding (the sums run in another
 * order); test_chol2 checks L^-1 A L^-T = I and the agreement. */
#ifndef QLM_CHOL2_H
#define QLM_CHOL2_H

#include "kernels/threadpool.h"

/* 0 on success; k > 0: the leading minor of order k is not positive definite (A unchanged from
 * then on is not meaningful); -k: L's diagonal element k (1-based) is zero. */
int qlm_chol2_inverse_lower(double *A, int n, qlm_pool *pool);

#endif
