/* test_chol2.c — kernels/chol2.h: the inverse Cholesky factor in two fixed pieces per step.
 *
 *   identity:    M = L^-1 A L^-T equals I within 1e-11 (A = I + X X^T / n has eigenvalues in
 *                [1, ~5], so L^-1 has norm <= 1 and M's rounding error is a few n u ~ 1e-13);
 *                L^-1 is lower triangular with a positive diagonal (the unique such factor);
 *   LAPACK:      it agrees with the unsplit dpotrf + dtrtri within 1e-12 of max |L^-1| (the
 *                same factor; only the order of the sums differs);
 *   threads:     the same bits with no pool, a pool of 2 and a pool of 3;
 *   sizes:       below the split (n = 5, 255), at it (256), and odd splits (300, 577, 1000);
 *   errors:      a negative pivot in the first block or in the second gives LAPACK's leading
 *                minor (1-based) of the whole matrix. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/chol2.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"

extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info,
                    size_t uplo_len, size_t diag_len);

/* A = I + X X^T / n (column-major, symmetric), X n x n standard normal. */
static double *spd(int n, uint64_t seed) {
  double *X = malloc(sizeof(double) * (size_t)n * n), *A = calloc((size_t)n * n, sizeof(double));
  assert_non_null(X);
  assert_non_null(A);
  for (size_t i = 0; i < (size_t)n * n; i++) X[i] = tu_rand_normal(&seed);
  for (int j = 0; j < n; j++)
    for (int i = 0; i < n; i++) {
      double s = 0.0;
      for (int k = 0; k < n; k++) s += X[i + (size_t)k * n] * X[j + (size_t)k * n];
      A[i + (size_t)j * n] = s / n + (i == j);
    }
  free(X);
  return A;
}

static double *copy(const double *A, int n) {
  double *B = malloc(sizeof(double) * (size_t)n * n);
  assert_non_null(B);
  memcpy(B, A, sizeof(double) * (size_t)n * n);
  return B;
}

/* max |(L^-1 A L^-T - I)_ij| for Li = L^-1 in the lower triangle of Li (column-major). */
static double identity_error(const double *Li, const double *A, int n) {
  double *T = calloc((size_t)n * n, sizeof(double)), worst = 0.0;
  assert_non_null(T);
  for (int i = 0; i < n; i++) /* T = Li A */
    for (int j = 0; j < n; j++) {
      double s = 0.0;
      for (int k = 0; k <= i; k++) s += Li[i + (size_t)k * n] * A[k + (size_t)j * n];
      T[i + (size_t)j * n] = s;
    }
  for (int i = 0; i < n; i++) /* (T Li^T)_ij */
    for (int j = 0; j <= i; j++) {
      double s = 0.0;
      for (int k = 0; k <= j; k++) s += T[i + (size_t)k * n] * Li[j + (size_t)k * n];
      worst = fmax(worst, fabs(s - (i == j)));
    }
  free(T);
  return worst;
}

static void test_inverse_factor(void **state) {
  (void)state;
  qlm_blas_single_threaded();
  const int sizes[] = {5, 255, 256, 300, 577, 1000};
  qlm_pool *p2 = qlm_pool_new(2), *p3 = qlm_pool_new(3);
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
    int n = sizes[si], info = 0;
    double *A = spd(n, 11 + si), *L1 = copy(A, n), *L2 = copy(A, n), *L3 = copy(A, n), *R = copy(A, n);
    assert_int_equal(qlm_chol2_inverse_lower(L1, n, NULL), 0);
    assert_int_equal(qlm_chol2_inverse_lower(L2, n, p2), 0);
    assert_int_equal(qlm_chol2_inverse_lower(L3, n, p3), 0);
    dpotrf_("L", &n, R, &n, &info, 1);
    assert_int_equal(info, 0);
    dtrtri_("L", "N", &n, R, &n, &info, 1, 1);
    assert_int_equal(info, 0);
    double top = 0.0, diff = 0.0;
    for (int j = 0; j < n; j++)
      for (int i = j; i < n; i++) {
        size_t at = i + (size_t)j * n;
        if (L1[at] != L2[at] || L1[at] != L3[at]) fail_msg("n=%d: (%d, %d) differs with the thread count", n, i, j);
        if (i == j && !(L1[at] > 0.0)) fail_msg("n=%d: diagonal %d is %g", n, i, L1[at]);
        top = fmax(top, fabs(R[at]));
        diff = fmax(diff, fabs(L1[at] - R[at]));
      }
    double id = identity_error(L1, A, n);
    if (id > 1e-11) fail_msg("n=%d: |L^-1 A L^-T - I| = %g", n, id);
    if (diff > 1e-12 * top) fail_msg("n=%d: differs from LAPACK's unsplit factor by %g (max %g)", n, diff, top);
    free(A), free(L1), free(L2), free(L3), free(R);
  }
  qlm_pool_free(p2);
  qlm_pool_free(p3);
}

static void test_not_positive_definite(void **state) {
  (void)state;
  qlm_blas_single_threaded();
  const int n = 600, bad[] = {10, 450}; /* the split is at 288: one in each factorization */
  qlm_pool *p2 = qlm_pool_new(2);
  for (int b = 0; b < 2; b++) {
    double *A = spd(n, 99);
    A[bad[b] + (size_t)bad[b] * n] = -1.0;
    assert_int_equal(qlm_chol2_inverse_lower(A, n, p2), bad[b] + 1);
    free(A);
  }
  qlm_pool_free(p2);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_inverse_factor),
                                     cmocka_unit_test(test_not_positive_definite)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
