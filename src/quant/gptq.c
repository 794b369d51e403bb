/* gptq.c — GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
 * Pre-trained Transformers", ICLR 2023), following the reference implementations (IST-DASLab
 * gptq, AutoGPTQ `fasterquant`) step by step.
 *
 * Input: the layer's weights W [rows x cols] and its input statistics calib->hessian =
 * sum x x^T / n_tokens (the mean over calibration tokens, method.h).  GPTQ's Hessian of the
 * layer-wise loss ||W X - Ŵ X||^2 is H = 2 X X^T / n; we use H = 2 * calib->hessian.  The scale
 * of H only matters in one place: a dead input (H_ii = 0) gets H_ii = 1, which enters the mean
 * of diag(H) used for dampening (the reference averages over sequences, we over tokens).
 *
 *   1. dead inputs: H_ii == 0 -> H_ii = 1 and W[:, i] = 0
 *   2. static_groups: every group's grid from these weights, before any update or permutation
 *   3. act_order: permute columns (of W and both sides of H) by decreasing diag(H), stably
 *   4. H += damp * mean(diag H) * I;  U = upper Cholesky factor of H^-1 (H^-1 = U^T U), from
 *      LAPACK: the Cholesky factor of H with its order reversed (dpotrf) and that factor's
 *      inverse (dtrtri) — see inverse_cholesky
 *   5. columns in lazy blocks of B (128): for column i of the block, q = quant(w_i),
 *      e = (w_i - q) / U_ii, the block's later columns -= e U_i,j; after the block, all later
 *      columns -= E_block U_block,later (one dgemm).  Loss = sum (w - q)^2 / U_ii^2 / 2.
 *      Rows are independent here (they share only U), so opts.n_threads threads each take a
 *      range of rows through all blocks; the result is bit-identical for any thread count.
 *   6. the permutation is undone when the codes are stored.
 * Steps 1, 3 and 4 act on H alone (step 1's zeroing of W aside), so the matrices that read one
 * input (q/k/v, gate/up) share their result, U and the permutation, through qlm_calib.memo: one
 * LAPACK factorization per input instead of one per matrix.
 *
 * Grid (GPTQ's min-max quantizer, per output row and group, maxq = 2^b - 1):
 *   lo = min(min x, 0), hi = max(max x, 0);
 *   sym:  hi = max(|lo|, hi) and lo = -hi if lo < 0 (a group with no negative value keeps
 *         lo = 0: its scale is then hi/maxq, the reference's quirk);  z = (maxq + 1) / 2
 *   lo = hi = 0 -> lo = -1, hi = 1;   s = (hi - lo) / maxq;   asym: z = round(-lo / d)
 *   u = clamp(round(x / d) + z, 0, maxq),  q = d (u - z)
 * Both variants are stored in qlm's zero-point RTN layout (kernels/rtn.h: half d, int16 z,
 * b-bit codes; the "sym" grid uses code 0 too, so it does not fit the symmetric layout).  The
 * stored d is a half: lo, hi and s are computed in float from the float-rounded weights and s
 * is rounded to half (d, never below the smallest half 2^-24), and z and the codes are computed
 * from that d, so the codes are the nearest ones for the scale the kernels use and the error
 * GPTQ propagates is the error of the stored weights.  round() is to nearest, ties to even
 * (torch.round); the algorithm itself runs in double.
 *
 * Dynamic groups (the default, static_groups=0): a group's grid is computed when its first
 * column is reached, as the reference does it: from W as it stands after the previous blocks'
 * deferred updates (the in-block updates of the current block live in a block copy and are not
 * seen), so a group that starts inside a block (group < block) sees slightly stale weights.
 * Per-channel (group=channel, GPTQ's group_size -1): one grid per row from the original W.
 *
 * act_order with dynamic groups (AutoGPTQ's default desc_act=True, static_groups=False): groups are
 * runs of g columns in the PERMUTED order, so in the original order a column's group is
 * g_idx[j] = (position of j in the permutation) / g — not contiguous.  qlm's kernels need groups
 * that are contiguous runs of a row, so the matrix is stored with its columns in the permuted
 * order (codes of permuted position p in group p / g, exactly AutoGPTQ's groups and grids) and
 * the permutation as the companion tensor "<weight>.perm" (f32 [cols], perm[p] = the original
 * column; model/model.h): at run time the model gathers the input x[perm[p]] into position p
 * before the product (one pass over the input per matrix; the row-block kernels are unchanged).
 * act_order with static_groups or per-channel grids needs no permutation: its groups are those of
 * the original order, stored in that order.  A group size that does not divide the row is replaced
 * as in quant/rtn.c (and noted). */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/chol2.h"
#include "kernels/rtn.h"
#include "kernels/threadpool.h"
#include "kernels/vecf64.h"
#include "quant/gptq.h"

#define GPTQ_DAMP_DEFAULT 0.01f
#define GPTQ_BLOCK_DEFAULT 128
#define GPTQ_MAX_COLS 65536 /* H is cols^2 doubles: 32 GiB at this size */

typedef struct gptq_grid {
  float d; /* scale, a half value */
  int z;   /* zero point, codes are 0..maxq */
} gptq_grid;

static float half_round(float d) { return qlm_f16_to_f32(qlm_f32_to_f16(d)); }

/* The group size used for rows of `cols` weights (same rule as quant/rtn.c): the asked size when
 * it divides the rows, else the largest divisor below it if that is at least half of it, else
 * the smallest divisor above it. */
static int effective_group(const qlm_quant_opts *o, int64_t cols) {
  if (o->group <= 0 || o->group >= cols) return (int)cols;
  int g = o->group, below = g, above = g;
  while (cols % below) below--;
  while (cols % above) above++;
  return 2 * below >= g ? below : above;
}

/* GPTQ's min-max grid of x[0..n) (see the top of the file).  Fails when the scale is beyond a
 * half (weights near 1e6 or more). */
static int grid_of(const double *x, int64_t n, int bits, bool sym, gptq_grid *g) {
  float lo = 0.0f, hi = 0.0f, maxq = (float)((1 << bits) - 1);
  for (int64_t i = 0; i < n; i++) {
    float v = (float)x[i];
    lo = fminf(lo, v), hi = fmaxf(hi, v);
  }
  if (sym) {
    hi = fmaxf(-lo, hi);
    if (lo < 0.0f) lo = -hi;
  }
  if (lo == 0.0f && hi == 0.0f) lo = -1.0f, hi = 1.0f;
  float d = half_round((hi - lo) / maxq);
  if (!(d <= 65504.0f)) return -1;
  if (d == 0.0f) d = 0x1p-24f; /* the smallest half: a spread this small rounds to 0 */
  g->d = d;
  g->z = sym ? (1 << (bits - 1)) : (int)nearbyintf(-lo / d);
  return 0;
}

/* Quantize w on grid g: the code in *u, the dequantized value returned. */
static double quant(double w, gptq_grid g, int maxq, uint8_t *u) {
  double v = nearbyint(w / (double)g.d) + g.z;
  v = v < 0.0 ? 0.0 : v > maxq ? maxq : v;
  *u = (uint8_t)v;
  return (double)g.d * (v - g.z);
}

static int gptq_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits < 2 || o->bits > 8) return qlm_fail(err, QLM_EUSAGE, "gptq: bits=%d: expected 2..8", o->bits);
  if (o->group == QLM_GROUP_TENSOR)
    return qlm_fail(err, QLM_EUSAGE, "gptq: group=tensor: GPTQ's grids are per row (group=channel) or per group");
  if (!(o->damp >= 0.0f) || !isfinite(o->damp))
    return qlm_fail(err, QLM_EUSAGE, "gptq: damp=%g: expected a number >= 0", (double)o->damp);
  if (o->block < 0 || o->block > 65536) return qlm_fail(err, QLM_EUSAGE, "gptq: block=%d: expected 1..65536", o->block);
  if (cols < 1 || cols > GPTQ_MAX_COLS)
    return qlm_fail(err, QLM_EUNSUPPORTED, "gptq: rows of %lld weights: expected 1..%d", (long long)cols,
                    GPTQ_MAX_COLS);
  int g = effective_group(o, cols);
  if (g > 0xFFFF)
    return qlm_fail(err, QLM_EUNSUPPORTED, "gptq: rows of %lld weights are longer than the largest group (65535)",
                    (long long)cols);
  if (o->act_order && !o->static_groups && g < cols && cols > (1 << 24))
    return qlm_fail(err, QLM_EUNSUPPORTED, "gptq: act_order with dynamic groups stores a permutation of at most 2^24 "
                    "columns as f32");
  return QLM_OK;
}

static void gptq_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 4;
  if (!o->damp_set) o->damp = GPTQ_DAMP_DEFAULT, o->damp_set = true;
  if (!o->block) o->block = GPTQ_BLOCK_DEFAULT;
}

/* Steps 1, 3 and 4's result, which depends only on the Hessian, damp and act_order: the matrices
 * that read the same input (q/k/v; gate/up) share it through qlm_calib.memo. */
typedef struct gptq_factor {
  double *U;        /* [n x n] U (row-major, upper) */
  int64_t *perm;    /* [n] permuted position -> original column */
} gptq_factor;

static void factor_free(void *p) {
  gptq_factor *f = p;
  if (f) free(f->U), free(f->perm);
  free(f);
}

/* Working memory of one run. */
typedef struct gptq_work {
  double *H;        /* [n x n] the Hessian, then U (row-major, upper); not owned when from a memo */
  bool h_borrowed;  /* H is a memo's factor */
  double *W;        /* [rows x n] working weights, permuted */
  double *W1;       /* [rows x B] the current block, with its in-block updates */
  double *E;        /* [rows x B] the block's scaled errors */
  int64_t *perm;    /* [n] permuted position -> original column */
  gptq_grid *grids; /* [rows x n_groups] grid of each original group */
  gptq_grid *cur;   /* [rows] dynamic groups: the grid in use */
  uint8_t *codes;   /* [rows x n] codes in original column order (act_order + dynamic groups: in
                       the permuted order, the order they are stored in) */
  qlm_sub_scaled_f64_fn sub_scaled; /* the in-block update, same bits at every SIMD level */
} gptq_work;

static void work_free(gptq_work *w) {
  if (!w->h_borrowed) free(w->H);
  free(w->W), free(w->W1), free(w->E), free(w->perm), free(w->grids), free(w->cur), free(w->codes);
}

static int work_alloc(gptq_work *w, int64_t rows, int64_t n, int64_t B, int64_t ng, qlm_error *err) {
  size_t nn, rn, rb, rg;
  if (qlm_mul_overflow((size_t)n, (size_t)n, &nn) || qlm_mul_overflow((size_t)rows, (size_t)n, &rn) ||
      qlm_mul_overflow((size_t)rows, (size_t)B, &rb) || qlm_mul_overflow((size_t)rows, (size_t)ng, &rg) ||
      nn > SIZE_MAX / sizeof(double) || rn > SIZE_MAX / sizeof(double) || rb > SIZE_MAX / sizeof(double) ||
      rg > SIZE_MAX / sizeof(gptq_grid))
    return qlm_fail(err, QLM_ELIMIT, "gptq: layer of %lld x %lld is too large", (long long)rows, (long long)n);
  if (!(w->W = qlm_malloc((rn ? rn : 1) * sizeof(double), "gptq weights", err))) return QLM_ENOMEM;
  if (!(w->W1 = qlm_malloc((rb ? rb : 1) * sizeof(double), "gptq block", err))) return QLM_ENOMEM;
  if (!(w->E = qlm_malloc((rb ? rb : 1) * sizeof(double), "gptq block errors", err))) return QLM_ENOMEM;
  if (!(w->perm = qlm_malloc((size_t)n * sizeof(int64_t), "gptq permutation", err))) return QLM_ENOMEM;
  if (!(w->grids = qlm_calloc(rg ? rg : 1, sizeof(gptq_grid), "gptq grids", err))) return QLM_ENOMEM;
  if (!(w->cur = qlm_calloc(rows ? (size_t)rows : 1, sizeof(gptq_grid), "gptq grids", err))) return QLM_ENOMEM;
  if (!(w->codes = qlm_calloc(rn ? rn : 1, 1, "gptq codes", err))) return QLM_ENOMEM;
  return QLM_OK;
}

/* act_order: columns by decreasing diag(H), ties by column (a stable order). */
typedef struct diag_key {
  double h;
  int64_t col;
} diag_key;
static int by_diag_desc(const void *a, const void *b) {
  const diag_key *x = a, *y = b;
  if (x->h != y->h) return x->h > y->h ? -1 : 1;
  return x->col < y->col ? -1 : x->col > y->col;
}

/* Both sides of the square H [n x n] by perm (new position p holds the old column perm[p]). */
static int permute_square(double *H, const int64_t *perm, int64_t n, qlm_error *err) {
  double *tmp = qlm_malloc((size_t)n * (size_t)n * sizeof(double), "gptq permutation", err);
  if (!tmp) return QLM_ENOMEM;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) tmp[i * n + j] = H[perm[i] * n + perm[j]];
  memcpy(H, tmp, (size_t)n * (size_t)n * sizeof(double));
  free(tmp);
  return QLM_OK;
}

/* The columns of W [rows x n] by perm. */
static int permute_columns(double *W, const int64_t *perm, int64_t rows, int64_t n, qlm_error *err) {
  double *tmp = qlm_malloc((size_t)n * sizeof(double), "gptq permutation", err);
  if (!tmp) return QLM_ENOMEM;
  for (int64_t r = 0; r < rows; r++) {
    double *row = W + r * n;
    for (int64_t p = 0; p < n; p++) tmp[p] = row[perm[p]];
    memcpy(row, tmp, (size_t)n * sizeof(double));
  }
  free(tmp);
  return QLM_OK;
}

/* Reverse the n*n array in place: for a square matrix (row- or column-major alike) element (i, j)
 * moves to (n-1-i, n-1-j), i.e. J A J with J the reversal permutation. */
static void reverse_square(double *A, int64_t n) {
  for (int64_t a = 0, b = n * n - 1; a < b; a++, b--) {
    double t = A[a];
    A[a] = A[b];
    A[b] = t;
  }
}

/* H (dampened, symmetric) -> U, the upper triangular factor with U^T U = H^-1, row-major with
 * zeros below the diagonal: what the reference computes as cholesky(H) -> cholesky_inverse ->
 * cholesky(upper), in half its flops (2n^3/3 instead of 4n^3/3; on SmolLM2-135M's 1536-wide
 * down projections this was most of GPTQ's solve time).  With J the reversal permutation and
 * J H J = L L^T (lower Cholesky, dpotrf), R = J L J is upper triangular and H = R R^T, so
 * H^-1 = R^-T R^-1 = U^T U with U = R^-1 = J L^-1 J (dtrtri): upper with a positive diagonal,
 * hence the same unique factor as the reference's (equal up to rounding).  dpotrf and dtrtri run
 * in kernels/chol2.c's two fixed pieces per step, on the pool's threads when it has two. */
static int inverse_cholesky(double *H, int64_t n64, float damp, qlm_pool *pool, qlm_error *err) {
  int n = (int)n64;
  reverse_square(H, n64);
  int info = qlm_chol2_inverse_lower(H, n, pool); /* LAPACK's dpotrf + dtrtri, split over two threads */
  if (info > 0)
    return qlm_fail(err, QLM_EUSAGE,
                    "gptq: the Hessian is not positive definite after dampening (damp=%g; leading minor %d of "
                    "the reversed order): use a larger damp or more calibration tokens",
                    (double)damp, info);
  if (info < 0) return qlm_fail(err, QLM_EUSAGE, "gptq: the dampened Hessian is singular (damp=%g)", (double)damp);
  /* column-major L^-1 in the lower triangle; reversed, U(i, j) = A[i + j n] for i <= j */
  reverse_square(H, n64);
  /* into row-major (the upper triangle from the lower one) and clear below the diagonal, in 8 x 8
   * tiles: element by element, every access down a column missed the cache (15 ms at n = 1536,
   * 3.6 ms tiled; larger tiles were slower: rows 12 KiB apart share one L1 set) */
  enum { TILE = 8 };
  for (int64_t i0 = 0; i0 < n; i0 += TILE)
    for (int64_t j0 = i0; j0 < n; j0 += TILE)
      for (int64_t i = i0; i < i0 + TILE && i < n; i++)
        for (int64_t j = j0 > i + 1 ? j0 : i + 1; j < j0 + TILE && j < n; j++) {
          H[i * n + j] = H[j * n + i];
          H[j * n + i] = 0.0;
        }
  return QLM_OK;
}

/* Steps 1, 3 and 4 on the Hessian alone (the top comment): U and the permutation into *f. */
static int make_factor(const double *hessian, int64_t n, const qlm_quant_opts *o, gptq_factor *f, qlm_pool *pool,
                       qlm_error *err) {
  size_t nn;
  if (qlm_mul_overflow((size_t)n, (size_t)n, &nn) || nn > SIZE_MAX / sizeof(double))
    return qlm_fail(err, QLM_ELIMIT, "gptq: a Hessian of %lld inputs is too large", (long long)n);
  if (!(f->U = qlm_malloc(nn * sizeof(double), "gptq Hessian", err))) return QLM_ENOMEM;
  if (!(f->perm = qlm_malloc((size_t)n * sizeof(int64_t), "gptq permutation", err))) return QLM_ENOMEM;
  double *H = f->U;
  for (int64_t i = 0; i < n * n; i++) {
    if (!isfinite(hessian[i]))
      return qlm_fail(err, QLM_EUSAGE, "gptq: Hessian entry (%lld, %lld) is not finite", (long long)(i / n),
                      (long long)(i % n));
    H[i] = 2.0 * hessian[i];
  }
  for (int64_t i = 0; i < n; i++)
    if (H[i * n + i] == 0.0) H[i * n + i] = 1.0; /* a dead input (its weights are zeroed in prepare) */
  for (int64_t i = 0; i < n; i++) f->perm[i] = i;
  if (o->act_order) {
    diag_key *keys = qlm_malloc((size_t)n * sizeof(diag_key), "gptq diagonal", err);
    if (!keys) return QLM_ENOMEM;
    for (int64_t i = 0; i < n; i++) keys[i] = (diag_key){H[i * n + i], i};
    qsort(keys, (size_t)n, sizeof(diag_key), by_diag_desc);
    for (int64_t i = 0; i < n; i++) f->perm[i] = keys[i].col;
    free(keys);
    int rc = permute_square(H, f->perm, n, err);
    if (rc) return rc;
  }
  double mean = 0.0;
  for (int64_t i = 0; i < n; i++) mean += H[i * n + i];
  mean /= (double)n;
  for (int64_t i = 0; i < n; i++) H[i * n + i] += (double)o->damp * mean;
  return inverse_cholesky(H, n, o->damp, pool, err);
}

/* The factor for this Hessian and these options: the memo's when it was made for them (the
 * memo's matrices share one Hessian, its caller's promise), else made here and, when there is a
 * memo, left in it.  *borrowed: the memo owns it. */
static int factor_of(const qlm_calib *calib, int64_t n, const qlm_quant_opts *o, gptq_factor **out, bool *borrowed,
                     qlm_pool *pool, qlm_error *err) {
  char key[sizeof calib->memo->key];
  snprintf(key, sizeof key, "gptq n=%lld damp=%.9g act_order=%d", (long long)n, (double)o->damp, o->act_order ? 1 : 0);
  qlm_calib_memo *memo = calib->memo;
  if (memo && memo->data && !strcmp(memo->key, key)) {
    *out = memo->data, *borrowed = true;
    return QLM_OK;
  }
  gptq_factor *f = qlm_calloc(1, sizeof *f, "gptq factor", err);
  if (!f) return QLM_ENOMEM;
  int rc = make_factor(calib->hessian, n, o, f, pool, err);
  if (rc) {
    factor_free(f);
    return rc;
  }
  if (memo) {
    qlm_calib_memo_clear(memo);
    memo->data = f, memo->free_data = factor_free;
    snprintf(memo->key, sizeof memo->key, "%s", key);
  }
  *out = f, *borrowed = memo != NULL;
  return QLM_OK;
}

/* Steps 1-4 of the top comment: fill w->W, grids, the permutation and U (w->H). */
static int prepare(gptq_work *w, const float *W, int64_t rows, int64_t n, const qlm_calib *calib,
                   const qlm_quant_opts *o, int g, qlm_pool *pool, qlm_error *err) {
  int bits = o->bits, ng = (int)(n / g);
  bool sym = !o->asym;
  gptq_factor *f;
  int rc = factor_of(calib, n, o, &f, &w->h_borrowed, pool, err);
  if (rc) return rc;
  w->H = f->U;
  memcpy(w->perm, f->perm, (size_t)n * sizeof *w->perm);
  if (!w->h_borrowed) { /* this run's alone: take U over, free the rest */
    f->U = NULL;
    factor_free(f);
  }
  for (int64_t i = 0; i < rows * n; i++) {
    if (!isfinite(W[i]))
      return qlm_fail(err, QLM_EUSAGE, "gptq: weight (%lld, %lld) is not finite", (long long)(i / n),
                      (long long)(i % n));
    w->W[i] = W[i];
  }
  /* per channel: one grid per row from the original weights (dead columns included, as the
   * reference computes it before zeroing them) */
  if (g == n)
    for (int64_t r = 0; r < rows; r++)
      if (grid_of(w->W + r * n, n, bits, sym, &w->grids[r])) goto too_large;
  for (int64_t i = 0; i < n; i++)
    if (calib->hessian[i * n + i] == 0.0)
      for (int64_t r = 0; r < rows; r++) w->W[r * n + i] = 0.0;
  if (g < n && o->static_groups)
    for (int64_t r = 0; r < rows; r++)
      for (int k = 0; k < ng; k++)
        if (grid_of(w->W + r * n + (int64_t)k * g, g, bits, sym, &w->grids[r * ng + k])) goto too_large;
  if (o->act_order) return permute_columns(w->W, w->perm, rows, n, err);
  return QLM_OK;
too_large:
  return qlm_fail(err, QLM_EUSAGE, "gptq: weights too large for a half-precision group scale (|w| near 1e6 or more)");
}

/* Step 5 for one block [i1, i2) of one row r. */
static int quant_block_row(gptq_work *w, const qlm_quant_opts *o, int64_t r, int64_t n, int64_t i1, int64_t i2, int g,
                           int64_t B, float *w_hat, double *loss) {
  int maxq = (1 << o->bits) - 1, ng = (int)(n / g);
  bool dynamic = g < n && !o->static_groups;
  double *w1 = w->W1 + r * B, *e = w->E + r * B;
  const double *U = w->H;
  /* the running loss in a register, stored once: through the pointer, every column's update was
   * a store to a line the other threads' losses share (rows_task.loss) */
  double acc = *loss;
  memcpy(w1, w->W + r * n + i1, (size_t)(i2 - i1) * sizeof(double));
  for (int64_t c = i1; c < i2; c++) {
    int64_t i = c - i1, orig = w->perm[c];
    gptq_grid gr;
    if (g == n) gr = w->grids[r];
    else if (!dynamic) gr = w->grids[r * ng + orig / g];
    else {
      if (c % g == 0) { /* from W: the previous blocks' updates, not this block's (the reference's order) */
        if (grid_of(w->W + r * n + c, g, o->bits, !o->asym, &w->cur[r])) return -1;
        w->grids[r * ng + c / g] = w->cur[r];
      }
      gr = w->cur[r];
    }
    uint8_t u;
    double q = quant(w1[i], gr, maxq, &u), d = U[c * n + c], err = (w1[i] - q) / d;
    w->codes[r * n + (dynamic && o->act_order ? c : orig)] = u;
    if (w_hat) w_hat[r * n + orig] = (float)q;
    acc += err * err / 2.0;
    e[i] = err;
    const double *urow = U + c * n + i1;
    w->sub_scaled(w1 + i + 1, err, urow + i + 1, i2 - i1 - (i + 1)); /* w1[j] -= err * urow[j], j > i */
  }
  *loss = acc;
  return 0;
}

/* Step 5 for rows [r0, r1): every block of those rows, then the deferred update of their later
 * columns, W[r0:r1, i2:] -= E[r0:r1] U[i1:i2, i2:].  GPTQ treats the rows of W independently
 * (U is shared and read-only), so row ranges run on different threads with no synchronisation,
 * and each row sees exactly the arithmetic of the serial order (the dgemm's k-sum for one
 * element does not depend on how many rows the call has).  Returns the first failing row, or -1. */
static int64_t quant_rows(gptq_work *w, const qlm_quant_opts *o, int64_t r0, int64_t r1, int64_t n, int g, int64_t B,
                          float *w_hat, double *loss) {
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    int64_t i2 = i1 + B < n ? i1 + B : n;
    for (int64_t r = r0; r < r1; r++)
      if (quant_block_row(w, o, r, n, i1, i2, g, B, w_hat, loss)) return r;
    if (i2 < n && r1 > r0)
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)(n - i2), (int)(i2 - i1), -1.0,
                  w->E + r0 * B, (int)B, w->H + i1 * n + i2, (int)n, 1.0, w->W + r0 * n + i2, (int)n);
  }
  return -1;
}

#define GPTQ_MAX_THREADS 256
#define GPTQ_ROW_GRAIN 16 /* rows per thread share: whole multiples, so the BLAS tiles line up the same */

typedef struct rows_task {
  gptq_work *w;
  const qlm_quant_opts *o;
  int64_t rows, n, B;
  int g;
  float *w_hat;
  double loss[GPTQ_MAX_THREADS];    /* per thread, summed in thread order afterwards */
  int64_t bad_row[GPTQ_MAX_THREADS];/* per thread: first row whose grid failed, or -1 */
} rows_task;

static void rows_worker(void *arg, int ith, int nth) {
  rows_task *t = arg;
  int64_t nb = (t->rows + GPTQ_ROW_GRAIN - 1) / GPTQ_ROW_GRAIN;
  int64_t r0 = nb * ith / nth * GPTQ_ROW_GRAIN, r1 = nb * (ith + 1) / nth * GPTQ_ROW_GRAIN;
  if (r1 > t->rows) r1 = t->rows;
  if (r0 > r1) r0 = r1;
  t->loss[ith] = 0.0;
  t->bad_row[ith] = quant_rows(t->w, t->o, r0, r1, t->n, t->g, t->B, t->w_hat, &t->loss[ith]);
}

/* OpenBLAS's own threads stay off (as in kernels/matmul.c): our row ranges are the threads, and
 * LAPACK's result must not depend on whether a matmul ran earlier in the process. */
static pthread_once_t g_gptq_blas_once = PTHREAD_ONCE_INIT;
static void gptq_blas_init(void) { openblas_set_num_threads(1); }

static int gptq_run(const float *W, int64_t rows, int64_t n, const qlm_calib *calib, const qlm_quant_opts *o, int g,
                    qlm_qtensor *out, float *w_hat, double *loss_out, qlm_error *err) {
  pthread_once(&g_gptq_blas_once, gptq_blas_init);
  int64_t B = o->block > 0 ? o->block : GPTQ_BLOCK_DEFAULT;
  if (B > n) B = n;
  int64_t ng = n / g;
  gptq_work w = {.sub_scaled = qlm_sub_scaled_f64_best()};
  /* threads: at most one per GPTQ_ROW_GRAIN rows (a pool costs ~0.1 ms to start, a matrix ms) */
  int nt = o->n_threads > 0 ? o->n_threads : 1;
  int64_t max_nt = (rows + GPTQ_ROW_GRAIN - 1) / GPTQ_ROW_GRAIN;
  if (nt > max_nt) nt = (int)(max_nt > 0 ? max_nt : 1);
  if (nt > GPTQ_MAX_THREADS) nt = GPTQ_MAX_THREADS;
  qlm_pool *pool = nt > 1 ? qlm_pool_new(nt) : NULL; /* NULL (no threads to be had): one thread */
  int rc = work_alloc(&w, rows, n, B, ng, err);
  if (!rc) rc = prepare(&w, W, rows, n, calib, o, g, pool, err);
  double loss = 0.0;
  rows_task *task = rc ? NULL : qlm_calloc(1, sizeof *task, "gptq threads", err);
  if (!rc && !task) rc = QLM_ENOMEM;
  if (!rc) {
    *task = (rows_task){.w = &w, .o = o, .rows = rows, .n = n, .B = B, .g = g, .w_hat = w_hat};
    qlm_pool_run(pool, rows_worker, task);
    int nth = pool ? qlm_pool_size(pool) : 1;
    for (int i = 0; i < nth; i++) loss += task->loss[i];
    for (int i = 0; i < nth && !rc; i++)
      if (task->bad_row[i] >= 0)
        rc = qlm_fail(err, QLM_EUSAGE, "gptq: row %lld: updated weights too large for a half-precision group scale",
                      (long long)task->bad_row[i]);
  }
  qlm_pool_free(pool);
  free(task);
  if (!rc) {
    int type = qlm_rtn_type(true, o->bits, g);
    size_t bs = (size_t)qlm_rtn_header_bytes(type) + (size_t)qlm_rtn_code_bytes(type);
    rc = qlm_qtensor_alloc(out, type, rows, n, err);
    for (int64_t r = 0; !rc && r < rows; r++) {
      unsigned char *blk = (unsigned char *)out->data + (size_t)r * out->row_bytes;
      for (int64_t k = 0; k < ng; k++, blk += bs) {
        gptq_grid gr = w.grids[r * ng + k];
        qlm_rtn_pack(type, gr.d, gr.z, w.codes + r * n + k * g, blk);
      }
    }
    if (!rc && o->act_order && !o->static_groups && g < n) { /* stored permuted: the companion */
      qlm_qaux *a = qlm_qtensor_add_aux(out, ".perm", QLM_TYPE_F32, n, err);
      if (!a) rc = err && err->code ? err->code : QLM_ENOMEM;
      for (int64_t p = 0; a && p < n; p++) ((float *)a->data)[p] = (float)w.perm[p];
    }
  }
  if (loss_out) *loss_out = loss;
  work_free(&w);
  return rc;
}

int qlm_gptq_quantize_ex(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                         qlm_qtensor *out, float *w_hat, double *loss, qlm_error *err) {
  qlm_quant_opts op = *o;
  gptq_defaults(&op);
  int rc = gptq_check(&op, rows, cols, err);
  if (rc) return rc;
  if (rows < 0) return qlm_fail(err, QLM_EUSAGE, "gptq: %lld rows", (long long)rows);
  if (!calib || !calib->hessian)
    return qlm_fail(err, QLM_EUSAGE,
                    "gptq: needs the layer's input Hessian from calibration (none was given): run with calibration "
                    "data");
  if (calib->cols != cols)
    return qlm_fail(err, QLM_EUSAGE, "gptq: the Hessian is for %lld inputs but the weight has %lld columns",
                    (long long)calib->cols, (long long)cols);
  if (calib->n_tokens <= 0)
    return qlm_fail(err, QLM_EUSAGE, "gptq: the Hessian was gathered from %lld tokens", (long long)calib->n_tokens);
  int g = effective_group(&op, cols);
  if ((rc = gptq_run(W, rows, cols, calib, &op, g, out, w_hat, loss, err))) {
    qlm_qtensor_free(out);
    return rc;
  }
  qlm_qtensor_set_bpw(out);
  char gs[24];
  if (g == cols) snprintf(gs, sizeof gs, "channel");
  else snprintf(gs, sizeof gs, "%d", g);
  char desc[200]; /* at most ~80 characters in practice; the compiler cannot know */
  snprintf(desc, sizeof desc, "gptq bits=%d group=%s asym=%d damp=%g act_order=%d static_groups=%d block=%d", op.bits,
           gs, op.asym ? 1 : 0, (double)op.damp, op.act_order ? 1 : 0, op.static_groups ? 1 : 0, op.block);
  size_t len = strlen(desc) < sizeof out->desc - 1 ? strlen(desc) : sizeof out->desc - 1;
  memcpy(out->desc, desc, len);
  out->desc[len] = 0;
  if (op.group > 0 && g != op.group && op.group < cols)
    snprintf(out->note, sizeof out->note, "group %d does not divide the %lld columns: used %d", op.group,
             (long long)cols, g);
  return QLM_OK;
}

/* The weights in the original column order (the stored columns un-permuted when there is a
 * ".perm" companion). */
static int gptq_dequantize(const qlm_qtensor *q, float *W, qlm_error *err) {
  if (!qlm_dequantize(q->type, q->data, W, q->rows * q->cols))
    return qlm_fail(err, QLM_EINTERNAL, "gptq: type %s has no dequantizer", qlm_type_name(q->type));
  if (q->n_aux == 0) return QLM_OK;
  if (q->n_aux != 1 || strcmp(q->aux[0].suffix, ".perm") || q->aux[0].n != q->cols)
    return qlm_fail(err, QLM_EINTERNAL, "gptq: unexpected companion tensors");
  float *row = qlm_malloc((size_t)q->cols * sizeof *row + 1, "a gptq row", err);
  if (!row) return QLM_ENOMEM;
  const float *perm = q->aux[0].data;
  for (int64_t r = 0; r < q->rows; r++) {
    float *w = W + r * q->cols;
    memcpy(row, w, (size_t)q->cols * sizeof *row);
    for (int64_t p = 0; p < q->cols; p++) w[(int64_t)perm[p]] = row[p];
  }
  free(row);
  return QLM_OK;
}

static int gptq_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                         qlm_qtensor *out, qlm_error *err) {
  return qlm_gptq_quantize_ex(W, rows, cols, calib, o, out, NULL, NULL, err);
}

double qlm_gptq_layer_error(const float *W, const float *W_hat, int64_t rows, int64_t cols, const double *H) {
  double total = 0.0;
  double *dw = malloc((size_t)cols * sizeof(double));
  if (!dw) return NAN;
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < cols; j++) dw[j] = (double)W[r * cols + j] - (double)W_hat[r * cols + j];
    for (int64_t i = 0; i < cols; i++) {
      double s = 0.0;
      for (int64_t j = 0; j < cols; j++) s += H[i * cols + j] * dw[j];
      total += dw[i] * s;
    }
  }
  free(dw);
  return total;
}

const qlm_quant_method qlm_method_gptq = {
    .name = "gptq",
    .needs_calib = true,
    .needs_hessian = true,
    .summary = "GPTQ (Frantar et al. 2023): error-compensating rounding from the layer's input Hessian",
    .options = "bits=2..8 (4) group=N|channel (channel) asym=0|1 (0: GPTQ's sym grid, zero 2^(b-1)) damp=F (0.01) "
               "act_order=0|1 (0; with dynamic groups the columns are stored permuted + a .perm companion) "
               "static_groups=0|1 (0) block=N (128) true_sequential=0|1 (1: within a layer q/k/v, o, gate/up, down "
               "are quantized in turn, each on inputs from the earlier ones quantized, in one forward per layer; 0: "
               "the whole layer on the float layer's inputs)",
    .defaults = gptq_defaults,
    .check = gptq_check,
    .quantize = gptq_quantize,
    .dequantize = gptq_dequantize,
};
