/* test_bgemm.c — the bf16 product of the calibration forward (kernels/bgemm.h).
 *
 *   conversion:  qlm_f32_to_bf16 (core/fp16.h) rounds to nearest even (ties both ways, carries into the exponent,
 *                overflow to infinity, NaN stays NaN) — checked against the exact rounding
 *                computed in double;
 *   matmul:      qlm_matmul_bf16 (f32 and Q4_0 weights, 1 and 3 threads, one matrix and a group
 *                of three, with and without the bf16 weight cache) equals the outer-form
 *                reference product of bf16(X) and bf16(dequantized W) bit for bit, on any CPU;
 *                LLM.int8() weights are refused;
 *   outer form:  qlm_bgemm_pack's layout element by element, qlm_bgemm_op_ref within its chain's
 *                bound of the exact product, each kernel equal to it bit for bit: AVX-512 BF16,
 *                and the AVX-512F and AVX2 FMA chains (each skipped, and reported as skipped,
 *                where the CPU or QLM_SIMD lacks it), and every kernel's DAZ/FTZ on a known result;
 *                the Hessians' BᵀB (qlm_bgemm_op_upper) equal to qlm_bgemm_op_ref on Bᵀ written
 *                out, and every kernel that runs here equal to that reference. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>

#include "kernels/bgemm.h"
#include "kernels/cpu.h"
#include "kernels/int8row.h"
#include "kernels/matmul.h"
#include "kernels/quants.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"

/* Mixed signs and magnitudes over 2^-8..2^8 (bf16 rounds most of them), now and then a zero. */
static float val(uint64_t *s) {
  if (tu_rand_u64(s) % 61 == 0) return tu_rand_u64(s) & 1 ? -0.0f : 0.0f;
  float sign = tu_rand_u64(s) & 1 ? -1.0f : 1.0f;
  return sign * ldexpf(0.5f + 0.5f * tu_rand_uniform(s), (int)(tu_rand_u64(s) % 17) - 8);
}
/* rows x ld bf16 values: the first K of each row random, the rest zero (bgemm.h's padding). */
static qlm_bf16 *random_bf(int64_t rows, int64_t ld, int64_t K, uint64_t *s) {
  qlm_bf16 *p = aligned_alloc(64, ((size_t)(rows * ld) * 2 + 63) / 64 * 64);
  assert_non_null(p);
  float *row = malloc((size_t)K * sizeof *row);
  assert_non_null(row);
  for (int64_t i = 0; i < rows; i++) {
    for (int64_t k = 0; k < K; k++) row[k] = val(s);
    qlm_bf16_from_f32(row, K, p + i * ld, ld);
  }
  free(row);
  return p;
}

/* The bf16 nearest to f in double arithmetic (ties to even), NaN and overflow aside. */
static float round_bf16_exact(float f) {
  if (f == 0.0f || !isfinite(f)) return f;
  int e;
  frexp((double)f, &e);               /* |f| in [2^(e-1), 2^e) */
  if (e < -125) e = -125;             /* subnormal f32: bf16 keeps the same absolute step */
  double step = ldexp(1.0, e - 8);    /* 8 significand bits */
  double q = (double)f / step, r = nearbyint(q); /* the FPU's default mode: ties to even */
  return (float)(r * step);           /* may carry to 2^e: still exact */
}

static void test_conversion(void **state) {
  (void)state;
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 200000; i++) {
    uint32_t u = (uint32_t)tu_rand_u64(&s);
    float f;
    memcpy(&f, &u, sizeof f);
    if (isnan(f)) {
      assert_true(isnan(qlm_bf16_to_f32(qlm_f32_to_bf16(f))));
      continue;
    }
    float want = round_bf16_exact(f), got = qlm_bf16_to_f32(qlm_f32_to_bf16(f));
    if (fabsf(f) > 0x1.fefffep127f) want = copysignf(INFINITY, f); /* rounds past the largest bf16 */
    if (memcmp(&want, &got, sizeof want)) fail_msg("%a -> %a, want %a", (double)f, (double)got, (double)want);
  }
  /* ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 (even: 1); 1 + 3·2^-8 goes up to 1 + 2^-6 */
  assert_true(qlm_bf16_to_f32(qlm_f32_to_bf16(1.0f + 0x1p-8f)) == 1.0f);
  assert_true(qlm_bf16_to_f32(qlm_f32_to_bf16(1.0f + 0x3p-8f)) == 1.0f + 0x1p-6f);
  qlm_bf16 pad[40];
  float one[3] = {1.0f, -2.0f, 0.5f};
  memset(pad, 0xff, sizeof pad);
  qlm_bf16_from_f32(one, 3, pad, 32);
  assert_int_equal(pad[1], 0xc000);
  for (int i = 3; i < 32; i++) assert_int_equal(pad[i], 0);
  assert_int_equal(pad[32], 0xffff); /* nothing past n_pad */
}

/* qlm_matmul_bf16 against bf16(X) · bf16(W)ᵀ by the outer-form reference (W's rows packed as
 * columns through qlm_bgemm_pack of Wᵀ, not the qlm_bgemm_pack_t the product uses), W f32 or Q4_0. */
static void test_matmul_bf16(void **state) {
  (void)state;
  enum { T = 37, ROWS = 70, COLS = 96 }; /* rows: several threads' ranges and a partial tile */
  uint64_t s = 3;
  float *X = malloc(sizeof(float) * T * COLS), *Wf = malloc(sizeof(float) * ROWS * COLS), *deq = malloc(sizeof(float) * ROWS * COLS);
  float *want = malloc(sizeof(float) * T * ROWS), *got[3];
  int64_t kp = qlm_bgemm_pad(COLS);
  qlm_bf16 *xb = malloc(sizeof(qlm_bf16) * T * kp), *wb = malloc(sizeof(qlm_bf16) * qlm_bgemm_packed_len(COLS, ROWS));
  float *wt = malloc(sizeof(float) * ROWS * COLS); /* W transposed: B(k, j) = W[j][k] */
  size_t qrow = qlm_type_row_bytes(QLM_TYPE_Q4_0, COLS);
  unsigned char *wq = malloc(qrow * ROWS);
  for (int k = 0; k < 3; k++) got[k] = malloc(sizeof(float) * T * ROWS);
  for (int i = 0; i < T * COLS; i++) X[i] = val(&s);
  for (int i = 0; i < ROWS * COLS; i++) Wf[i] = val(&s);
  for (int r = 0; r < ROWS; r++) qlm_quantize_row_q4_0_ref(Wf + r * COLS, wq + r * qrow, COLS);
  for (int i = 0; i < T; i++) qlm_bf16_from_f32(X + i * COLS, COLS, xb + i * kp, kp);
  qlm_pool *pools[2] = {NULL, qlm_pool_new(3)};
  for (int typ = 0; typ < 2; typ++) {
    qlm_mat W = {.type = typ ? QLM_TYPE_Q4_0 : QLM_TYPE_F32, .rows = ROWS, .cols = COLS,
                 .data = typ ? (const void *)wq : (const void *)Wf,
                 .row_bytes = typ ? qrow : COLS * sizeof(float)};
    for (int r = 0; r < ROWS; r++) {
      const float *src = Wf + r * COLS;
      if (typ) qlm_dequantize(QLM_TYPE_Q4_0, wq + r * qrow, deq + r * COLS, COLS), src = deq + r * COLS;
      for (int k = 0; k < COLS; k++) wt[k * ROWS + r] = src[k];
    }
    qlm_bgemm_pack(wt, ROWS, COLS, ROWS, wb);
    qlm_bgemm_op_ref(xb, kp, wb, COLS, want, ROWS, T, ROWS, COLS, 1.0f);
    qlm_bf16_cache cache = {0};
    for (int p = 0; p < 2; p++)
      for (int use = 0; use < 3; use++) { /* no cache; the cache filled; the cache hit */
        qlm_bf16_cache *c = use ? &cache : NULL;
        memset(got[0], 0xff, sizeof(float) * T * ROWS);
        assert_int_equal(qlm_matmul_bf16(&W, X, T, got[0], pools[p], c), 1);
        assert_memory_equal(got[0], want, sizeof(float) * T * ROWS);
        const qlm_mat *Ws[3] = {&W, &W, &W};
        float *const Ys[3] = {got[0], got[1], got[2]};
        for (int k = 0; k < 3; k++) memset(got[k], 0xff, sizeof(float) * T * ROWS);
        assert_int_equal(qlm_matmul_bf16_group(Ws, Ys, 3, X, T, pools[p], c), 1);
        for (int k = 0; k < 3; k++) assert_memory_equal(got[k], want, sizeof(float) * T * ROWS);
        if (use == 1) assert_non_null(cache.e[0].w), assert_null(cache.e[1].w); /* one entry per matrix */
      }
    qlm_bf16_cache_clear(&cache);
    assert_null(cache.e[0].w);
  }
  qlm_mat i8 = {.type = qlm_int8row_type(COLS), .rows = ROWS, .cols = COLS, .data = wq, .row_bytes = qrow};
  assert_int_equal(qlm_matmul_bf16(&i8, X, T, got[0], NULL, NULL), 0); /* keeps its int8 arithmetic */
  qlm_pool_free(pools[1]);
  for (int k = 0; k < 3; k++) free(got[k]);
  free(X), free(Wf), free(deq), free(want), free(xb), free(wb), free(wq), free(wt);
}

/* ---- the outer-product form (qlm_bgemm_op) ---- */

/* M x ld bf16 rows: the first K random (a few subnormal ones among them), the rest zero. */
static qlm_bf16 *op_rows(int64_t M, int64_t ld, int64_t K, uint64_t *s) {
  qlm_bf16 *p = random_bf(M, ld, K, s);
  for (int64_t i = 0; i < M * ld; i++)
    if (i % ld < K && tu_rand_u64(s) % 97 == 0) p[i] = (qlm_bf16)(0x0001 + tu_rand_u64(s) % 0x7f); /* subnormal */
  return p;
}

/* B of K x N (row stride N) with f32 values that are bf16. */
static float *op_source(int64_t K, int64_t N, uint64_t *s) {
  float *b = malloc((size_t)(K * N) * sizeof *b);
  assert_non_null(b);
  for (int64_t i = 0; i < K * N; i++) b[i] = qlm_bf16_to_f32(qlm_f32_to_bf16(val(s)));
  return b;
}

/* The packed layout as bgemm.h states it, element by element (zeros in the padding), also when
 * packed in pieces of rows and columns (qlm_bgemm_pack_rows, as the Hessians gather); the
 * reference against the exact product: one rounding per multiply-add of the chain (K of them,
 * rounded up to even) and one for alpha, so |y - alpha Σ x b| <= (K + 3) u |alpha| Σ |x b|. */
static void test_op_reference(void **state) {
  (void)state;
  uint64_t s = 3;
  const int64_t Ks[] = {2, 7, 64, 301}, N = 37, M = 3;
  for (size_t c = 0; c < sizeof Ks / sizeof Ks[0]; c++) {
    int64_t K = Ks[c], kp = qlm_pad2(K), len = qlm_bgemm_packed_len(K, N);
    float *B = op_source(K, N, &s), Y[3 * 37];
    qlm_bf16 *P = malloc((size_t)len * sizeof *P), *X = random_bf(M, kp, K, &s);
    memset(P, 0xff, (size_t)len * sizeof *P);
    qlm_bgemm_pack(B, N, K, N, P);
    for (int64_t j = 0; j < (N + 15) / 16 * 16; j++)
      for (int64_t k = 0; k < kp; k++) {
        qlm_bf16 want = j < N && k < K ? qlm_f32_to_bf16(B[k * N + j]) : 0;
        assert_int_equal(P[(j / 16) * 16 * kp + (k / 2) * 32 + (j % 16) * 2 + k % 2], want);
      }
    if (K > 5) { /* the same from pieces: rows [0, 5) then [5, K) (an odd start), columns [0, 16) then [16, N) */
      qlm_bf16 *P2 = calloc((size_t)len, sizeof *P2);
      for (int part = 0; part < 2; part++) {
        int64_t j0 = part ? 16 : 0, j1 = part ? N : 16;
        qlm_bgemm_pack_rows(B, N, 0, 5, K, j0, j1, P2);
        qlm_bgemm_pack_rows(B + 5 * N, N, 5, K - 5, K, j0, j1, P2);
      }
      assert_memory_equal(P, P2, (size_t)len * sizeof *P);
      free(P2);
    }
    const float alpha = 0.125f;
    qlm_bgemm_op_ref(X, kp, P, K, Y, N, M, N, K, alpha);
    const double u = ldexp(1.0, -24);
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double e = 0, a = 0;
        for (int64_t k = 0; k < K; k++) {
          double p = (double)qlm_bf16_to_f32(X[i * kp + k]) * B[k * N + j];
          e += p, a += fabs(p);
        }
        if (fabs(Y[i * N + j] - alpha * e) > (K + 3) * u * alpha * a + 1e-30)
          fail_msg("K=%lld (%lld,%lld): %.9g vs exact %.9g", (long long)K, (long long)i, (long long)j, Y[i * N + j],
                   alpha * e);
      }
    free(B), free(P), free(X);
  }
}

typedef void op_kernel(const qlm_bf16 *X, int64_t ldx, const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy,
                       int64_t M, int64_t N, int64_t K, float alpha);
typedef void upper_kernel(const qlm_bf16 *packed, int64_t kpack, float *Y, int64_t ldy, int64_t i0, int64_t i1,
                          int64_t N, int64_t K);

/* The kernels besides the reference, and whether this CPU (and QLM_SIMD) can run each. */
static const struct {
  const char *name;
  op_kernel *op;
  upper_kernel *upper;
} k_kernels[] = {{"avx512bf16", qlm_bgemm_op_avx512bf16, qlm_bgemm_op_upper_avx512bf16},
                 {"avx512 (FMA chains)", qlm_bgemm_op_avx512, qlm_bgemm_op_upper_avx512},
                 {"avx2 (FMA chains)", qlm_bgemm_op_avx2, qlm_bgemm_op_upper_avx2}};
enum { N_KERNELS = sizeof k_kernels / sizeof k_kernels[0] };

static bool kernel_runs(int k) {
  return k == 0 ? qlm_bgemm_fast() : qlm_cpu_simd_level() >= (k == 1 ? QLM_SIMD_AVX512 : QLM_SIMD_AVX2);
}

/* Kernel k equals the reference bit for bit: every tile shape (rows 1..13 over the 8- and 6-row
 * tiles, 1..5 groups and partial last groups over the 3-group tiles, N = 64 over AVX-512 BF16's
 * 4-group tile), odd K, row
 * strides above K, subnormal operands, alpha != 1, and products over the first K rows of a B
 * packed for more (as the attention's value blocks use it); the output's other columns
 * untouched. */
static void op_equals_reference(int kernel) {
  if (!kernel_runs(kernel)) skip();
  uint64_t s = 17;
  const int64_t Ks[] = {2, 9, 64, 130}, Ns[] = {1, 15, 16, 17, 64, 75};
  for (size_t c = 0; c < sizeof Ks / sizeof Ks[0]; c++)
    for (size_t d = 0; d < sizeof Ns / sizeof Ns[0]; d++)
      for (int64_t M = 1; M <= 13; M++) {
        int64_t K = Ks[c], N = Ns[d], kpack = K + (M % 2) * 11, kp = qlm_pad2(K), ldx = kp + 6, ldy = N + 3;
        float *src = op_source(kpack, N, &s);
        float *want = malloc((size_t)(M * ldy) * sizeof *want), *got = malloc((size_t)(M * ldy) * sizeof *got);
        qlm_bf16 *B = malloc((size_t)qlm_bgemm_packed_len(kpack, N) * sizeof *B), *X = op_rows(M, ldx, K, &s);
        qlm_bgemm_pack(src, N, kpack, N, B);
        memset(want, 0x7f, (size_t)(M * ldy) * sizeof *want);
        memset(got, 0x7f, (size_t)(M * ldy) * sizeof *got);
        qlm_bgemm_op_ref(X, ldx, B, kpack, want, ldy, M, N, K, 0.3f);
        k_kernels[kernel].op(X, ldx, B, kpack, got, ldy, M, N, K, 0.3f);
        if (memcmp(want, got, (size_t)(M * ldy) * sizeof *got))
          fail_msg("M=%lld N=%lld K=%lld kpack=%lld: the %s kernel differs from the reference", (long long)M,
                   (long long)N, (long long)K, (long long)kpack, k_kernels[kernel].name);
        free(src), free(want), free(got), free(B), free(X);
      }
}

static void test_op_avx512bf16_equals_reference(void **state) {
  (void)state;
  op_equals_reference(0);
}

static void test_op_avx512_fma_equals_reference(void **state) {
  (void)state;
  op_equals_reference(1);
}

static void test_op_avx2_fma_equals_reference(void **state) {
  (void)state;
  op_equals_reference(2);
}

/* Every kernel (VDPBF16PS itself, and the FMA chains that copy it) reads subnormal operands as
 * zero and flushes subnormal sums.  K = 3,
 * chain order k = 1, 0, 3, 2: x0 = 2^-132 (a subnormal bf16) times 2^100 would add 2^-32 without
 * DAZ; the last step, 2^-70 · 2^-60 = 2^-130 onto zero, would leave a subnormal without FTZ. The
 * result must be zero, as the reference's, and the caller's MXCSR as it was. */
static void test_op_fma_subnormals(void **state) {
  (void)state;
  if (!kernel_runs(2)) skip();
  const int64_t K = 3, N = 1;
  float src[3] = {ldexpf(1.0f, 100), 0.0f, ldexpf(1.0f, -60)}; /* B(k, 0) */
  qlm_bf16 B[64], X[4] = {0x0002, 0, qlm_f32_to_bf16(ldexpf(1.0f, -70)), 0};
  qlm_bgemm_pack(src, 1, K, N, B);
  unsigned csr = _mm_getcsr();
  for (int k = 0; k < N_KERNELS; k++) {
    if (!kernel_runs(k)) continue;
    float y = -1.0f, want = -1.0f;
    qlm_bgemm_op_ref(X, 4, B, K, &want, 1, 1, N, K, 1.0f);
    k_kernels[k].op(X, 4, B, K, &y, 1, 1, N, K, 1.0f);
    assert_true(want == 0.0f);
    if (memcmp(&y, &want, sizeof y)) fail_msg("%s: %a, reference %a", k_kernels[k].name, (double)y, (double)want);
    assert_int_equal(_mm_getcsr(), csr);
  }
}

/* qlm_bgemm_op_upper: the reference equals qlm_bgemm_op_ref with X = Bᵀ written out as rows (the
 * same chains: reading row i out of B's lanes is only addressing), and the AVX-512 kernel equals
 * the reference bit for bit on the upper triangle and writes nothing left of a row's diagonal
 * group, for row ranges starting at 0, 16 and 48, odd K, N with a partial group, and B packed for
 * more rows than used. */
static void test_op_upper(void **state) {
  (void)state;
  uint64_t s = 29;
  const int64_t Ks[] = {1, 9, 64, 301}, Ns[] = {16, 75, 200};
  for (size_t c = 0; c < sizeof Ks / sizeof Ks[0]; c++)
    for (size_t d = 0; d < sizeof Ns / sizeof Ns[0]; d++) {
      int64_t K = Ks[c], N = Ns[d], kpack = K + 3, kp = qlm_pad2(K);
      float *src = op_source(kpack, N, &s), *want = malloc((size_t)(N * N) * sizeof *want);
      float *got = malloc((size_t)(N * N) * sizeof *got), *viaop = malloc((size_t)(N * N) * sizeof *viaop);
      qlm_bf16 *B = malloc((size_t)qlm_bgemm_packed_len(kpack, N) * sizeof *B);
      qlm_bf16 *X = calloc((size_t)(N * kp), sizeof *X);
      qlm_bgemm_pack(src, N, kpack, N, B);
      if (K % 2) /* the last pair's partner row: zero, as the Hessian's odd-T flush makes it */
        for (int64_t j = 0; j < N; j++) B[j / 16 * 16 * qlm_pad2(kpack) + K / 2 * 32 + j % 16 * 2 + 1] = 0;
      for (int64_t i = 0; i < N; i++)
        for (int64_t k = 0; k < K; k++) X[i * kp + k] = qlm_f32_to_bf16(src[k * N + i]);
      qlm_bgemm_op_ref(X, kp, B, kpack, viaop, N, N, N, K, 1.0f);
      const int64_t starts[] = {0, 16, 48};
      for (size_t a = 0; a < 3 && starts[a] < N; a++) {
        int64_t i0 = starts[a], i1 = i0 + 37 < N ? i0 + 37 : N;
        qlm_bgemm_op_upper_ref(B, kpack, want, N, i0, i1, N, K);
        for (int64_t i = i0; i < i1; i++)
          for (int64_t j = i; j < N; j++)
            if (memcmp(&want[i * N + j], &viaop[i * N + j], sizeof *want))
              fail_msg("K=%lld N=%lld (%lld,%lld): upper reference %a, via rows %a", (long long)K, (long long)N,
                       (long long)i, (long long)j, (double)want[i * N + j], (double)viaop[i * N + j]);
        for (int k = 0; k < N_KERNELS; k++) {
          if (!kernel_runs(k)) continue;
          for (int64_t e = 0; e < N * N; e++) got[e] = -7.0f;
          k_kernels[k].upper(B, kpack, got, N, i0, i1, N, K);
          for (int64_t i = 0; i < N; i++) /* nothing outside rows [i0, i1), nothing left of row i's group */
            for (int64_t j = 0; j < N; j++)
              if ((i < i0 || i >= i1 || j < i / 16 * 16) && got[i * N + j] != -7.0f)
                fail_msg("K=%lld N=%lld rows [%lld,%lld): %s wrote (%lld,%lld)", (long long)K, (long long)N,
                         (long long)i0, (long long)i1, k_kernels[k].name, (long long)i, (long long)j);
          for (int64_t i = i0; i < i1; i++)
            for (int64_t j = i; j < N; j++)
              if (memcmp(&want[i * N + j], &got[i * N + j], sizeof *want))
                fail_msg("K=%lld N=%lld (%lld,%lld): %s %a, reference %a", (long long)K, (long long)N, (long long)i,
                         (long long)j, k_kernels[k].name, (double)got[i * N + j], (double)want[i * N + j]);
        }
      }
      free(src), free(want), free(got), free(viaop), free(B), free(X);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conversion),
      cmocka_unit_test(test_matmul_bf16),
      cmocka_unit_test(test_op_reference),
      cmocka_unit_test(test_op_avx512bf16_equals_reference),
      cmocka_unit_test(test_op_avx512_fma_equals_reference),
      cmocka_unit_test(test_op_avx2_fma_equals_reference),
      cmocka_unit_test(test_op_fma_subnormals),
      cmocka_unit_test(test_op_upper),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
