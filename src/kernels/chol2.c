/* chol2.c — L^-1 of A = L L^T in two fixed pieces per step (chol2.h says why and how). */
#include "kernels/chol2.h"

#include <cblas.h>
#include <stddef.h>

/* LAPACK from OpenBLAS, Fortran convention: arguments by reference, column-major storage, and
 * a hidden length argument for each character argument. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len, size_t diag_len);

#define CHOL2_MIN_SPLIT 256 /* below this the pieces are too small to gain from a second thread */

typedef enum step { STEP_TRSM, STEP_SYRK, STEP_TRTRI, STEP_TRMM_RIGHT, STEP_TRMM_LEFT } step;

/* The blocks of A (column-major, leading dimension n): A11 [m x m] at A, A21 [k x m] at A + m,
 * A22 [k x k] at A + m + m n, k = n - m. */
typedef struct chol2_task {
  double *A;
  int n, m, k;
  step step;
  int info[2]; /* STEP_TRTRI: each piece's dtrtri info */
} chol2_task;

static double *a11(const chol2_task *t) { return t->A; }
static double *a21(const chol2_task *t) { return t->A + t->m; }
static double *a22(const chol2_task *t) { return t->A + t->m + (size_t)t->m * (size_t)t->n; }

/* Rows [r0, r1) of A21 (p = 0: the first half of its k rows, 1: the rest). */
static void row_half(const chol2_task *t, int p, int *r0, int *r1) {
  *r0 = p ? t->k / 2 : 0;
  *r1 = p ? t->k : t->k / 2;
}

/* A22 -= L21 L21^T, lower triangle: with h = k/2, piece 0 takes the top-left h x h triangle and
 * the left half of the h columns of the bottom-left block; piece 1 the bottom-right triangle and
 * the other half of those columns (equal work for each). */
static void syrk_piece(const chol2_task *t, int p) {
  int n = t->n, m = t->m, k = t->k, h = k / 2, c0 = p ? h / 2 : 0, c1 = p ? h : h / 2;
  const double *L21a = a21(t), *L21b = a21(t) + h; /* rows [0, h) and [h, k) of L21 */
  double *A22 = a22(t);
  if (p == 0) cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, h, m, -1.0, L21a, n, 1.0, A22, n);
  else cblas_dsyrk(CblasColMajor, CblasLower, CblasNoTrans, k - h, m, -1.0, L21b, n, 1.0, A22 + h + (size_t)h * n, n);
  if (c1 > c0)
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, k - h, c1 - c0, m, -1.0, L21b, n, L21a + c0, n, 1.0,
                A22 + h + (size_t)c0 * n, n);
}

static void piece(chol2_task *t, int p) {
  int n = t->n, m = t->m, k = t->k, r0, r1;
  row_half(t, p, &r0, &r1);
  switch (t->step) {
  case STEP_TRSM: /* L21 = A21 L11^-T, by rows */
    if (r1 > r0)
      cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, r1 - r0, m, 1.0, a11(t), n,
                  a21(t) + r0, n);
    break;
  case STEP_SYRK: syrk_piece(t, p); break;
  case STEP_TRTRI: /* the two diagonal blocks' inverses */
    dtrtri_("L", "N", p ? &k : &m, p ? a22(t) : a11(t), &n, &t->info[p], 1, 1);
    break;
  case STEP_TRMM_RIGHT: /* L21 L11^-1, by rows */
    if (r1 > r0)
      cblas_dtrmm(CblasColMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, r1 - r0, m, 1.0, a11(t), n,
                  a21(t) + r0, n);
    break;
  case STEP_TRMM_LEFT: { /* -L22^-1 (L21 L11^-1), by columns */
    int c0 = p ? m / 2 : 0, c1 = p ? m : m / 2;
    if (c1 > c0)
      cblas_dtrmm(CblasColMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, k, c1 - c0, -1.0, a22(t), n,
                  a21(t) + (size_t)c0 * n, n);
    break;
  }
  }
}

/* Thread ith takes pieces ith, ith + nth, ...: both on one thread, one each on two, none on more. */
static void chol2_worker(void *arg, int ith, int nth) {
  for (int p = ith; p < 2; p += nth) piece(arg, p);
}

static void run_step(chol2_task *t, step s, qlm_pool *pool) {
  t->step = s;
  qlm_pool_run(pool, chol2_worker, t);
}

/* LAPACK's info of a factorization or inverse as this file's return value (argument errors
 * cannot happen with the arguments built here). */
static int unsplit(double *A, int n) {
  int info = 0;
  dpotrf_("L", &n, A, &n, &info, 1);
  if (info) return info;
  dtrtri_("L", "N", &n, A, &n, &info, 1, 1);
  return info > 0 ? -info : info;
}

int qlm_chol2_inverse_lower(double *A, int n, qlm_pool *pool) {
  if (n < CHOL2_MIN_SPLIT) return unsplit(A, n);
  chol2_task t = {.A = A, .n = n, .m = n / 2 / 32 * 32};
  t.k = n - t.m;
  int info = 0;
  dpotrf_("L", &t.m, a11(&t), &n, &info, 1);
  if (info) return info;
  run_step(&t, STEP_TRSM, pool);
  run_step(&t, STEP_SYRK, pool);
  dpotrf_("L", &t.k, a22(&t), &n, &info, 1);
  if (info) return info > 0 ? t.m + info : info;
  run_step(&t, STEP_TRTRI, pool);
  if (t.info[0]) return t.info[0] > 0 ? -t.info[0] : t.info[0];
  if (t.info[1]) return t.info[1] > 0 ? -(t.m + t.info[1]) : t.info[1];
  run_step(&t, STEP_TRMM_RIGHT, pool);
  run_step(&t, STEP_TRMM_LEFT, pool);
  return 0;
}
