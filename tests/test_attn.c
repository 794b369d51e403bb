/* test_attn.c — the attention products of kernels/attn.h at every SIMD level.
 *
 * scores: every level sums exact float products in double (in different orders), so each may
 *   differ from the scalar reference only by the rounding of a double sum that differs in its last
 *   bits: at most 1 ulp of the float result (checked: |diff| <= 1 ulp), and exactly equal on
 *   integer-valued inputs (exact sums);
 * pv: every level does the reference's float operations per element in its order: bit-identical.
 * Shapes cover tails (head sizes not a multiple of 4/8/16, groups of 1..6 query heads).
 * softmax (kernels/softmax.h, the bf16 calibration's attention weights): the reference within
 *   its rounding of the softmax computed in double, the padding zeroed and nothing past it
 *   written, its e^x within 1.5 ulp of exp's; the AVX2, AVX-512 and AVX-512 BF16 rows
 *   bit-identical to the reference (NaN and clamped scores included), each skipped, and reported
 *   as skipped, on a CPU (or QLM_SIMD) without its instructions. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/cpu.h"
#include "kernels/softmax.h"

static float unif(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return (float)((*s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void test_scores_levels(void **st) {
  (void)st;
  uint64_t rng = 11;
  const int hds[] = {1, 5, 17, 64, 100}, nqs[] = {1, 3, 6}, nks[] = {1, 9, 37};
  for (int integer = 0; integer < 2; integer++)
    for (int a = 0; a < 5; a++)
      for (int b = 0; b < 3; b++)
        for (int c = 0; c < 3; c++) {
          int hd = hds[a], nq = nqs[b], nk = nks[c];
          size_t ldk = (size_t)hd + 3, ldsc = (size_t)nk + 2;
          float *q = malloc(sizeof(float) * (size_t)(nq * hd)), *K = malloc(sizeof(float) * ldk * (size_t)nk);
          float *ref = malloc(sizeof(float) * ldsc * (size_t)nq), *got = malloc(sizeof(float) * ldsc * (size_t)nq);
          for (int i = 0; i < nq * hd; i++) q[i] = integer ? (float)(int)(unif(&rng) * 20) : unif(&rng);
          for (size_t i = 0; i < ldk * (size_t)nk; i++) K[i] = integer ? (float)(int)(unif(&rng) * 20) : unif(&rng);
          float scale = integer ? 1.0f : 0.125f;
          qlm_attn_scores_scalar(q, nq, hd, K, ldk, nk, scale, ref, ldsc);
          if (integer) /* exact: check the reference itself against the plain sum */
            for (int j = 0; j < nq; j++)
              for (int t = 0; t < nk; t++) {
                double s = 0;
                for (int i = 0; i < hd; i++) s += (double)q[j * hd + i] * K[(size_t)t * ldk + i];
                assert_true(ref[(size_t)j * ldsc + t] == (float)s);
              }
          for (int lv = QLM_SIMD_AVX2; lv <= (int)qlm_cpu_detect(); lv++) {
            qlm_attn_scores_for((qlm_simd_level)lv)(q, nq, hd, K, ldk, nk, scale, got, ldsc);
            for (int j = 0; j < nq; j++)
              for (int t = 0; t < nk; t++) {
                float r = ref[(size_t)j * ldsc + t], g = got[(size_t)j * ldsc + t];
                if (integer) assert_true(r == g);
                else assert_true(fabsf(r - g) <= nextafterf(fabsf(r), INFINITY) - fabsf(r));
              }
          }
          free(q), free(K), free(ref), free(got);
        }
}

static void test_pv_levels(void **st) {
  (void)st;
  uint64_t rng = 12;
  const int hds[] = {1, 5, 17, 40, 64, 100}, nqs[] = {1, 3, 4, 6}, nks[] = {1, 9, 37};
  for (int a = 0; a < 6; a++)
    for (int b = 0; b < 4; b++)
      for (int c = 0; c < 3; c++) {
        int hd = hds[a], nq = nqs[b], nk = nks[c];
        size_t ldp = (size_t)nk + 1, ldv = (size_t)hd + 2;
        float *p = malloc(sizeof(float) * ldp * (size_t)nq), *V = malloc(sizeof(float) * ldv * (size_t)nk);
        float *ref = malloc(sizeof(float) * (size_t)(nq * hd)), *got = malloc(sizeof(float) * (size_t)(nq * hd));
        for (size_t i = 0; i < ldp * (size_t)nq; i++) p[i] = fabsf(unif(&rng));
        for (size_t i = 0; i < ldv * (size_t)nk; i++) V[i] = unif(&rng);
        float inv[6];
        for (int j = 0; j < nq; j++) inv[j] = 1.0f / (1.0f + (float)j * 0.37f);
        qlm_attn_pv_scalar(p, inv, nq, ldp, V, ldv, nk, hd, ref);
        /* the reference against its definition at one element */
        float o = 0.0f;
        for (int t = 0; t < nk; t++) {
          float a = p[(size_t)(nq - 1) * ldp + t] * inv[nq - 1], prod = a * V[(size_t)t * ldv + hd - 1];
          o += prod;
        }
        assert_true(ref[(nq - 1) * hd + hd - 1] == o);
        for (int lv = QLM_SIMD_AVX2; lv <= (int)qlm_cpu_detect(); lv++) {
          memset(got, 0xFF, sizeof(float) * (size_t)(nq * hd));
          qlm_attn_pv_for((qlm_simd_level)lv)(p, inv, nq, ldp, V, ldv, nk, hd, got);
          assert_memory_equal(ref, got, sizeof(float) * (size_t)(nq * hd));
        }
        free(p), free(V), free(ref), free(got);
      }
}

/* A row of n scores in [-spread, spread]; with odd, a NaN whose payload is all ones at 5 (it
 * passes through e^x: rounded naively it would carry into the sign) and one far below the max
 * (clamped). */
static void score_row(float *row, int n, float spread, bool odd, uint64_t *rng) {
  for (int i = 0; i < n; i++) row[i] = unif(rng) * spread;
  if (odd && n > 7) {
    uint32_t nan = 0x7fffffffu;
    memcpy(&row[5], &nan, sizeof nan);
    row[7] = -1000.0f;
  }
}

static const int k_softmax_ns[] = {1, 2, 15, 16, 17, 33, 100, 511, 2048};
enum { N_SOFTMAX = sizeof k_softmax_ns / sizeof k_softmax_ns[0], MAX_N = 2048, PAD = 3, GUARD = 4 };

static void test_softmax_bf16_reference(void **st) {
  (void)st;
  uint64_t rng = 13;
  float *row = malloc(sizeof(float) * MAX_N);
  qlm_bf16 *out = malloc(sizeof(qlm_bf16) * (MAX_N + PAD + GUARD));
  for (int c = 0; c < N_SOFTMAX; c++) {
    int n = k_softmax_ns[c];
    score_row(row, n, 12.0f, false, &rng);
    memset(out, 0xAB, sizeof(qlm_bf16) * (size_t)(n + PAD + GUARD));
    float tot = qlm_softmax_bf16_ref(row, n, out, n + PAD);
    double m = -INFINITY, sum = 0.0;
    for (int i = 0; i < n; i++) m = row[i] > m ? row[i] : m;
    for (int i = 0; i < n; i++) sum += exp((double)row[i] - m);
    /* each e_i within 1.5 ulp (test_softmax_exp), summed in lanes of <= 128 terms then 16 lanes:
     * below (2 + 128 + 16) 2^-24 relative, ~8.7e-6 */
    if (fabs(tot - sum) > 1e-5 * sum) fail_msg("n %d: sum %.9g, want %.9g", n, (double)tot, sum);
    for (int i = 0; i < n; i++) {
      double e = exp((double)row[i] - m), got = qlm_bf16_to_f32(out[i]);
      /* bf16 keeps 8 significand bits: within half a step (2^-8 relative) plus e_i's own error */
      if (fabs(got - e) > e * 0x1.01p-8) fail_msg("n %d, i %d: weight %.9g, want %.9g", n, i, got, e);
    }
    for (int i = n; i < n + PAD; i++) assert_int_equal(out[i], 0);
    for (int i = n + PAD; i < n + PAD + GUARD; i++) assert_int_equal(out[i], 0xABAB);
  }
  free(row), free(out);
}

typedef float softmax_fn(const float *row, int n, qlm_bf16 *out, int n_pad);

/* fn's row bit for bit as the reference's: sums, weights and padding (skipped where !runs). */
static void softmax_equals_reference(softmax_fn *fn, bool runs) {
  if (!runs) skip();
  uint64_t rng = 14;
  float *row = malloc(sizeof(float) * MAX_N);
  qlm_bf16 *want = malloc(sizeof(qlm_bf16) * (MAX_N + PAD)), *got = malloc(sizeof(qlm_bf16) * (MAX_N + PAD));
  for (int odd = 0; odd < 2; odd++)
    for (int c = 0; c < N_SOFTMAX; c++)
      for (int rep = 0; rep < 4; rep++) {
        int n = k_softmax_ns[c];
        score_row(row, n, rep < 2 ? 12.0f : 100.0f, odd, &rng);
        memset(got, 0xAB, sizeof(qlm_bf16) * (size_t)(n + PAD));
        float a = qlm_softmax_bf16_ref(row, n, want, n + PAD), b = fn(row, n, got, n + PAD);
        if (memcmp(&a, &b, sizeof a)) fail_msg("n %d: sum %a, reference %a", n, (double)b, (double)a);
        assert_memory_equal(want, got, sizeof(qlm_bf16) * (size_t)(n + PAD));
      }
  /* 2^20 weights: about 16 land on each of the rounding's edge cases (low 16 bits 0x7fff, 0x8000) */
  for (int rep = 0; rep < 512; rep++) {
    score_row(row, MAX_N, 20.0f, false, &rng);
    float a = qlm_softmax_bf16_ref(row, MAX_N, want, MAX_N), b = fn(row, MAX_N, got, MAX_N);
    assert_memory_equal(&a, &b, sizeof a);
    assert_memory_equal(want, got, sizeof(qlm_bf16) * MAX_N);
  }
  free(row), free(want), free(got);
}

static void test_softmax_bf16_avx2_equals_reference(void **st) {
  (void)st;
  softmax_equals_reference(qlm_softmax_bf16_avx2, qlm_cpu_simd_level() >= QLM_SIMD_AVX2);
}

static void test_softmax_bf16_avx512_equals_reference(void **st) {
  (void)st;
  softmax_equals_reference(qlm_softmax_bf16_avx512, qlm_cpu_simd_level() >= QLM_SIMD_AVX512);
}

static void test_softmax_bf16_avx512bf16_equals_reference(void **st) {
  (void)st;
  softmax_equals_reference(qlm_softmax_bf16_avx512bf16, qlm_bgemm_fast());
}

/* qlm_softmax_exp against exp in double over [-87, 0] (every 2^-12): within 1.5 ulp (Cephes'
 * polynomial ~1 ulp, plus the reduction's and the last steps' roundings; 0.995 measured); e^0 = 1
 * exactly; x below -87 gives e^-87, a normal float. */
static void test_softmax_exp(void **st) {
  (void)st;
  double worst = 0.0;
  for (double x = -87.0; x <= 0.0; x += 0x1p-12) {
    float got = qlm_softmax_exp((float)x);
    double want = exp((double)(float)x), ulp = nextafterf((float)want, INFINITY) - (float)want;
    double err = fabs(got - want) / ulp;
    worst = err > worst ? err : worst;
  }
  if (worst > 1.5) fail_msg("qlm_softmax_exp: %.3f ulp", worst);
  assert_true(qlm_softmax_exp(0.0f) == 1.0f);
  assert_true(qlm_softmax_exp(-1000.0f) == qlm_softmax_exp(-87.0f));
  assert_true(qlm_softmax_exp(-87.0f) >= 0x1p-126f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scores_levels),
      cmocka_unit_test(test_pv_levels),
      cmocka_unit_test(test_softmax_exp),
      cmocka_unit_test(test_softmax_bf16_reference),
      cmocka_unit_test(test_softmax_bf16_avx2_equals_reference),
      cmocka_unit_test(test_softmax_bf16_avx512_equals_reference),
      cmocka_unit_test(test_softmax_bf16_avx512bf16_equals_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
