/* test_gemm.c — the blocked int8 GEMM for prefill (kernels/gemm_q.h) against T x rows independent
 * dot products of the same quantized activations (the vec_dot references of kernels/qdot.c).
 *
 * The integer block sums of both are exact, so:
 *   scalar tile kernel: performs the reference's float operations in its order -> bit-identical;
 *   SIMD tile kernels:  fuse each block's multiply-add (one rounding less per block), so they may
 *     differ from the reference by the rounding of nb block additions and nb products:
 *     |diff| <= 2 (nb + 1) u sum_b |term_b|, u = 2^-24, term_b = d_w d_a isum_b (+ m_w s_a); we
 *     check against exactly that bound, with sum_b |term_b| computed from the blocks.
 * Shapes have odd T and row counts (partial tiles of activations and of weight groups), and every
 * SIMD level this CPU has, scalar included, runs; one and two threads.
 * Q4_K/Q5_K are done per 32-weight sub-block (d_w = d sc_j, m_w = -dmin mn_j) while the reference
 * sums integers over the 256-weight super-block: never bit-identical, bound below. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/gemm_q.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/qdot.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"

static const int TYPES[] = {QLM_TYPE_Q4_0, QLM_TYPE_Q4_1, QLM_TYPE_Q5_0, QLM_TYPE_Q5_1,
                            QLM_TYPE_Q8_0, QLM_TYPE_Q4_K, QLM_TYPE_Q5_K};
static int is_k(int type) { return type == QLM_TYPE_Q4_K || type == QLM_TYPE_Q5_K; }
#define N_TYPES (int)(sizeof TYPES / sizeof TYPES[0])

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}
static float unif(uint64_t *s) { return (float)((next(s) >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }

/* Random blocks: random code bytes, then every half scale/min field set to a sane value (random
 * halves could be inf/NaN).  Field offsets are those of the layouts in kernels/types.c. */
static uint8_t *random_w(int type, int64_t rows, int64_t cols, uint64_t *rng) {
  const qlm_type_traits *tr = qlm_type_traits_of(type);
  size_t n = qlm_type_row_bytes(type, cols) * (size_t)rows;
  uint8_t *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next(rng);
  for (size_t o = 0; o < n; o += tr->type_size) {
    if (is_k(type)) { /* d, dmin at bytes 0, 2 (scales and mins: the random 6-bit fields) */
      qlm_wr16(b + o, qlm_f32_to_f16(0.001f + 0.002f * fabsf(unif(rng))));
      qlm_wr16(b + o + 2, qlm_f32_to_f16(0.001f * fabsf(unif(rng))));
      continue;
    }
    qlm_wr16(b + o, qlm_f32_to_f16(0.01f + 0.05f * fabsf(unif(rng))));
    if (type == QLM_TYPE_Q4_1 || type == QLM_TYPE_Q5_1) qlm_wr16(b + o + 2, qlm_f32_to_f16(0.1f * unif(rng)));
  }
  return b;
}

/* k-quants: sum_b |term_b| <= sum_e (|w_e| + 2 |m_e|) |a_e| with |m_e| = dmin * mn <= 63 dmin
 * (|d sc u| = |w + m|; |m s_a| <= |m| sum |a|), w and a dequantized. */
static double term_mag_k(int type, const uint8_t *w, const uint8_t *a, int64_t cols) {
  const qlm_type_traits *tr = qlm_type_traits_of(type);
  float *wf = malloc(sizeof(float) * (size_t)cols), *af = malloc(sizeof(float) * (size_t)cols);
  assert_true(wf && af && qlm_dequantize(type, w, wf, cols) && qlm_dequantize(QLM_TYPE_Q8_K, a, af, cols));
  double mag = 0;
  for (int64_t e = 0; e < cols; e++) {
    double dmin = fabs(qlm_rdhalf(w + (size_t)(e / 256) * tr->type_size + 2));
    mag += (fabs(wf[e]) + 2 * 63 * dmin) * fabs(af[e]);
  }
  free(wf), free(af);
  return mag;
}

/* sum_b |term_b| of one (weight row, activation row) pair: |d_w d_a isum_b| + |m_w s_a|. */
static double term_mag(int type, const uint8_t *w, const uint8_t *a, int64_t cols) {
  if (is_k(type)) return term_mag_k(type, w, a, cols);
  const qlm_type_traits *tr = qlm_type_traits_of(type), *at = qlm_type_traits_of(tr->vec_dot_type);
  int has_min = type == QLM_TYPE_Q4_1 || type == QLM_TYPE_Q5_1, qo = (int)at->type_size - 32;
  double mag = 0;
  for (int64_t b = 0; b < cols / 32; b++) {
    const uint8_t *wb = w + (size_t)b * tr->type_size, *ab = a + (size_t)b * at->type_size;
    float wf[32];
    qlm_dequantize(type, wb, wf, 32);
    float m = has_min ? qlm_rdhalf(wb + 2) : 0.0f, dw = qlm_rdhalf(wb), da = qlm_rdhalf(ab);
    double is = 0; /* |isum| <= sum |v q| with v = (w - m) / d */
    for (int j = 0; j < 32; j++) is += fabs((wf[j] - m) / dw) * abs((int8_t)ab[qo + j]);
    mag += fabs((double)dw * da) * (is + 1) + (has_min ? fabs((double)m * qlm_rdhalf(ab + 2)) : 0);
  }
  return mag;
}

static void check(int type, int64_t rows, int64_t cols, int64_t T, qlm_simd_level level, qlm_pool *pool,
                  uint64_t *rng) {
  const qlm_type_traits *tr = qlm_type_traits_of(type), *at = qlm_type_traits_of(tr->vec_dot_type);
  uint8_t *w = random_w(type, rows, cols, rng);
  size_t wrow = qlm_type_row_bytes(type, cols), arow = qlm_type_row_bytes(tr->vec_dot_type, cols);
  float *X = malloc(sizeof(float) * (size_t)(T * cols)), *Y = malloc(sizeof(float) * (size_t)(T * rows));
  uint8_t *a = malloc(arow * (size_t)T);
  assert_true(X && Y && a && at);
  for (int64_t i = 0; i < T * cols; i++) X[i] = unif(rng) * (i % 7 == 0 ? 4.0f : 1.0f);
  for (int64_t t = 0; t < T; t++) tr->quantize_act(X + t * cols, a + (size_t)t * arow, cols);
  for (int64_t i = 0; i < T * rows; i++) Y[i] = NAN;
  qlm_mat W = {.type = type, .rows = rows, .cols = cols, .data = w, .row_bytes = wrow};
  assert_int_equal(qlm_gemm_q(&W, X, T, Y, pool, level), 1);
  int simd = qlm_gemm_q_fast(type, level);
  for (int64_t t = 0; t < T; t++)
    for (int64_t r = 0; r < rows; r++) {
      const uint8_t *wr = w + (size_t)r * wrow, *ar = a + (size_t)t * arow;
      float ref = tr->vec_dot(wr, ar, cols), y = Y[t * rows + r];
      /* k-quants: also the reference's own roundings of d_y d isum - d_y dmin imin per super-block
       * and ours of d sc, dmin mn, d_a sum per sub-block: a few u of the terms each */
      double tol = is_k(type) ? 2.0 * (double)(cols / 32 + 8) * ldexp(1.0, -24) * term_mag(type, wr, ar, cols)
                   : simd     ? 2.0 * (double)(cols / 32 + 1) * ldexp(1.0, -24) * term_mag(type, wr, ar, cols)
                              : 0.0;
      if (!(fabs((double)y - ref) <= tol))
        fail_msg("%s level %s rows %lld cols %lld T %lld: Y[%lld][%lld] = %.9g, vec_dot %.9g (tol %.3g)",
                 qlm_type_name(type), qlm_simd_name(level), (long long)rows, (long long)cols, (long long)T,
                 (long long)t, (long long)r, (double)y, (double)ref, tol);
    }
  free(w), free(X), free(Y), free(a);
}

static void test_gemm_q_equals_vec_dot(void **st) {
  (void)st;
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  qlm_pool *pool = qlm_pool_new(2);
  const int64_t shapes[][3] = {{1, 256, 1}, {7, 512, 5}, {37, 256, 17}, {200, 768, 40}, {16, 256, 16}, {9, 256, 33}};
  for (int lv = QLM_SIMD_SCALAR; lv <= (int)qlm_cpu_detect(); lv++)
    for (int ti = 0; ti < N_TYPES; ti++)
      for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int p = 0; p < 2; p++)
          check(TYPES[ti], shapes[s][0], shapes[s][1], shapes[s][2], (qlm_simd_level)lv, p ? pool : NULL, &rng);
  qlm_pool_free(pool);
}

/* The scalar tile kernel is exact (see the top): a check of the check's zero tolerance on a
 * product whose value is known by hand.  Q8_0 weights all 1 with d = 1 and activations all equal
 * to 1 (q = 127, d_a = 1/127 in half): y = cols * 127 * half(1/127). */
static void test_gemm_q_hand_value(void **st) {
  (void)st;
  const int64_t cols = 64, rows = 3, T = 2;
  uint8_t w[3 * 68];
  for (int b = 0; b < 6; b++) {
    qlm_wr16(w + 34 * b, qlm_f32_to_f16(1.0f));
    memset(w + 34 * b + 2, 1, 32);
  }
  float X[2 * 64], Y[6];
  for (int i = 0; i < 128; i++) X[i] = 1.0f;
  qlm_mat W = {.type = QLM_TYPE_Q8_0, .rows = rows, .cols = cols, .data = w, .row_bytes = 68};
  float want = (float)(64 * 127) * qlm_f16_to_f32(qlm_f32_to_f16(1.0f / 127.0f));
  for (int lv = QLM_SIMD_SCALAR; lv <= (int)qlm_cpu_detect(); lv++) {
    assert_int_equal(qlm_gemm_q(&W, X, T, Y, NULL, (qlm_simd_level)lv), 1);
    for (int i = 0; i < 6; i++) assert_float_equal(Y[i], want, 1e-6 * want);
  }
}

/* Types it does not cover are refused (the caller then takes another path), Y untouched. */
static void test_gemm_q_refuses(void **st) {
  (void)st;
  float X[256] = {0}, Y[1] = {42.0f};
  uint8_t w[210] = {0};
  qlm_mat W = {.type = QLM_TYPE_Q6_K, .rows = 1, .cols = 256, .data = w, .row_bytes = 210};
  assert_int_equal(qlm_gemm_q(&W, X, 1, Y, NULL, QLM_SIMD_SCALAR), 0);
  assert_true(Y[0] == 42.0f);
  assert_false(qlm_gemm_q_covers(QLM_TYPE_Q6_K));
  /* Q4_K rows that are not whole 256-weight super-blocks */
  uint8_t wk[144 * 3] = {0};
  float Xk[2 * 576] = {0};
  qlm_mat K = {.type = QLM_TYPE_Q4_K, .rows = 1, .cols = 576, .data = wk, .row_bytes = sizeof wk};
  assert_int_equal(qlm_gemm_q(&K, Xk, 2, Y, NULL, QLM_SIMD_SCALAR), 0);
  assert_true(Y[0] == 42.0f);
  assert_true(qlm_gemm_q_covers(QLM_TYPE_Q4_0));
}

/* qlm_matmul_ex at prefill size takes the GEMM where it is fast: same numbers as qlm_gemm_q. */
static void test_matmul_uses_gemm_q(void **st) {
  (void)st;
  uint64_t rng = 5;
  const int64_t rows = 48, cols = 128, T = 20;
  uint8_t *w = random_w(QLM_TYPE_Q4_0, rows, cols, &rng);
  float X[20 * 128], Y[20 * 48], Z[20 * 48];
  for (int i = 0; i < T * cols; i++) X[i] = unif(&rng);
  qlm_mat W = {.type = QLM_TYPE_Q4_0, .rows = rows, .cols = cols, .data = w,
               .row_bytes = qlm_type_row_bytes(QLM_TYPE_Q4_0, cols)};
  qlm_simd_level lv = qlm_cpu_simd_level();
  qlm_matmul_ex(&W, X, T, Y, NULL, lv, 1);
  assert_int_equal(qlm_gemm_q(&W, X, T, Z, NULL, lv), 1);
  if (qlm_gemm_q_fast(QLM_TYPE_Q4_0, lv)) assert_memory_equal(Y, Z, sizeof Y);
  free(w);
}

/* The AVX-512 activation quantizer writes the bytes of qlm_quantize_q8_0 / _q8_1 (so both paths
 * see identical activations), including blocks of zeros, ties, huge values, inf and NaN. */
static void test_quantize_avx512_same_bytes(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  uint64_t rng = 77;
  enum { N = 32 * 40 };
  float x[N];
  for (int i = 0; i < N; i++) x[i] = unif(&rng) * (i % 5 == 0 ? 100.0f : 1.0f);
  for (int i = 0; i < 32; i++) x[i] = 0.0f;                   /* an all-zero block */
  for (int i = 32; i < 64; i++) x[i] = (float)(i - 48) * 0.5f; /* ties after scaling by 127/amax */
  x[70] = INFINITY;
  x[100] = NAN;
  x[140] = -INFINITY, x[141] = NAN;
  x[200] = 3e38f;
  x[31 * 32 + 7] = 1e-30f;
  uint8_t a[40 * 36], b[40 * 36];
  for (int q81 = 0; q81 < 2; q81++) {
    size_t n = q81 ? 40 * 36 : 40 * 34;
    memset(a, 0xAA, sizeof a), memset(b, 0x55, sizeof b);
    if (q81) qlm_quantize_q8_1(x, a, N);
    else qlm_quantize_q8_0(x, a, N);
    qlm_gemm_q_quantize_avx512(x, b, N, q81);
    assert_memory_equal(a, b, n);
  }
}

/* The AVX-512 Q8_K quantizer the GEMM uses (kernels/qdot.h) writes the bytes of qlm_quantize_q8_k: d as f32, the q, and the 16
 * int16 sums, with a zero super-block, ties, huge values, inf and NaN. */
static void test_quantize_q8k_avx512_same_bytes(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  uint64_t rng = 78;
  enum { NSB = 6, N = 256 * NSB };
  static float x[N];
  for (int i = 0; i < N; i++) x[i] = unif(&rng) * (i % 5 == 0 ? 100.0f : 1.0f);
  for (int i = 0; i < 256; i++) x[i] = 0.0f;                     /* an all-zero super-block */
  for (int i = 256; i < 512; i++) x[i] = (float)(i - 384) * 0.5f; /* ties after scaling by 127/amax */
  x[600] = INFINITY;                                             /* inf: id = 0, inf * 0 = NaN -> -127 */
  x[800] = NAN;                                                  /* NaN: the scalar fallback */
  x[1100] = 3e38f, x[1101] = -3e38f;
  x[1300] = 1e-30f;
  static uint8_t a[292 * NSB], b[292 * NSB];
  memset(a, 0xAA, sizeof a), memset(b, 0x55, sizeof b);
  qlm_quantize_q8_k(x, a, N);
  qlm_quantize_q8_k_avx512(x, b, N);
  assert_memory_equal(a, b, sizeof a);
}

/* The AVX-512 Q4_K/Q5_K super-block repack against the type's own dequantizer: in every weight-group
 * block, row r's weight e is d_r * u + m_r, which must equal qlm_dequantize's d sc q - dmin mn
 * exactly (the same two roundings); NULL rows give zero codes and scales. */
static void test_repack_ksuper_avx512(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  uint64_t rng = 79;
  for (int q5 = 0; q5 < 2; q5++) {
    int type = q5 ? QLM_TYPE_Q5_K : QLM_TYPE_Q4_K;
    size_t bytes = qlm_type_traits_of(type)->type_size;
    uint8_t *w = random_w(type, 4, 256, &rng), o[8 * QLM_GQ_WBLK];
    float ref[4][256];
    for (int r = 0; r < 4; r++) assert_true(qlm_dequantize(type, w + (size_t)r * bytes, ref[r], 256));
    for (int nulls = 0; nulls < 2; nulls++) { /* nulls: rows 1 and 3 missing */
      const uint8_t *rows[4];
      for (int r = 0; r < 4; r++) rows[r] = nulls && r % 2 ? NULL : w + (size_t)r * bytes;
      memset(o, 0xCD, sizeof o);
      qlm_gemm_q_repack_ksuper_avx512(rows, q5, o);
      for (int j = 0; j < 8; j++)
        for (int r = 0; r < 4; r++) {
          const uint8_t *blk = o + (size_t)j * QLM_GQ_WBLK;
          float d, m;
          memcpy(&d, blk + 128 + 4 * r, 4);
          memcpy(&m, blk + 144 + 4 * r, 4);
          for (int e = 0; e < 32; e++) {
            int u = blk[16 * (e / 4) + 4 * r + e % 4];
            if (!rows[r]) {
              assert_true(u == 0 && d == 0.0f && m == 0.0f);
              continue;
            }
            assert_true(u < (q5 ? 32 : 16));
            float got = d * (float)u + m, want = ref[r][32 * j + e];
            if (got != want) fail_msg("q5 %d sub-block %d row %d e %d: %.9g, dequantized %.9g", q5, j, r, e, got, want);
          }
        }
    }
    free(w);
  }
}

/* The AVX-512 activation-block repack against the layout of gemm_q.h written out by hand:
 * step k, act c, row r -> act c's codes 4k..4k+3; corr, d, s of act c in lanes 4c..4c+3. */
static void test_repack_act_avx512(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) skip();
  uint64_t rng = 1234;
  uint8_t codes[4][32], o[QLM_GQ_ABLK];
  int32_t corr[4];
  float d[4], s[4];
  for (int c = 0; c < 4; c++) {
    for (int j = 0; j < 32; j++) codes[c][j] = (uint8_t)(next(&rng) >> 56);
    corr[c] = (int32_t)(next(&rng) >> 40) - (1 << 23);
    d[c] = unif(&rng), s[c] = unif(&rng);
  }
  const uint8_t *qv[4] = {codes[0], codes[1], codes[2], codes[3]};
  memset(o, 0xCD, sizeof o);
  qlm_gemm_q_repack_act_avx512(qv, corr, d, s, o);
  for (int k = 0; k < 8; k++)
    for (int c = 0; c < 4; c++)
      for (int r = 0; r < 4; r++) assert_memory_equal(o + 64 * k + 16 * c + 4 * r, codes[c] + 4 * k, 4);
  for (int c = 0; c < 4; c++)
    for (int r = 0; r < 4; r++) {
      assert_memory_equal(o + 512 + 4 * (4 * c + r), &corr[c], 4);
      assert_memory_equal(o + 576 + 4 * (4 * c + r), &d[c], 4);
      assert_memory_equal(o + 640 + 4 * (4 * c + r), &s[c], 4);
    }
}

/* LLaMA-7B widths (4096 and 11008 = 43 super-blocks) with odd rows and T, one to three threads:
 * the AVX-512 repacks, the Q8_K quantizer and the VNNI tile against the vec_dot references. */
static void test_gemm_q_7b_widths(void **st) {
  (void)st;
  uint64_t rng = 80;
  const int types[] = {QLM_TYPE_Q4_0, QLM_TYPE_Q8_0, QLM_TYPE_Q4_K, QLM_TYPE_Q5_K};
  const int64_t shapes[][3] = {{21, 4096, 19}, {13, 11008, 17}};
  for (int nth = 1; nth <= 3; nth++) {
    qlm_pool *pool = nth > 1 ? qlm_pool_new(nth) : NULL;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
      for (size_t s = 0; s < 2; s++)
        check(types[ti], shapes[s][0], shapes[s][1], shapes[s][2], qlm_cpu_simd_level(), pool, &rng);
    qlm_pool_free(pool);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gemm_q_equals_vec_dot),
      cmocka_unit_test(test_gemm_q_hand_value),
      cmocka_unit_test(test_gemm_q_refuses),
      cmocka_unit_test(test_matmul_uses_gemm_q),
      cmocka_unit_test(test_quantize_avx512_same_bytes),
      cmocka_unit_test(test_quantize_q8k_avx512_same_bytes),
      cmocka_unit_test(test_repack_ksuper_avx512), cmocka_unit_test(test_repack_act_avx512),
      cmocka_unit_test(test_gemm_q_7b_widths),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
