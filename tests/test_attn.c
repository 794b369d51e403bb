/* test_attn.c — the attention products of kernels/attn.h at every SIMD level.
 *
 * scores: every level sums exact float products in double (in different orders), so each may
 *   differ from the scalar reference only by the rounding of a double sum that differs in its last
 *   bits: at most 1 ulp of the float result (checked: |diff| <= 1 ulp), and exactly equal on
 *   integer-valued inputs (exact sums);
 * pv: every level does the reference's float operations per element in its order: bit-identical.
 * Shapes cover tails (head sizes not a multiple of 4/8/16, groups of 1..6 query heads). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attn.h"
#include "kernels/cpu.h"

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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scores_levels),
      cmocka_unit_test(test_pv_levels),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
