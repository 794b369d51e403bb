/* test_qdot.c — quantized dot products (kernels/qdot.h), the quantized matmul path, and SmolLM2
 * run with its weights kept quantized.
 *
 * Ground truth is always the reference dequantizer (traits->to_float, itself checked against
 * llama.cpp in test_dequant.c) and exact double sums.
 *
 * Error of vec_dot(w, quantize_act(x)) against the exact sum w . x (w = to_float of the blocks):
 *   x is replaced by x^_i = q_i * d16 where d = amax_b / 127 over x's block b, q_i = round(x_i / d),
 *   and d16 is d as stored (half for Q8_0/Q8_1, |d - d16| <= 2^-11 d; float for Q8_K, exact).
 *   |x_i - x^_i| <= |x_i - q_i d| + |q_i| |d - d16| <= d/2 + 127 * 2^-11 d = e_b, so
 *   |sum w_i (x_i - x^_i)| <= sum_b e_b * sum_{i in b} |w_i|.
 *   Q4_1/Q5_1 also use s = half(d * sum q) instead of d16 * sum q for the m term: at most
 *   |m| * |sum q| * d * (2^-11 + 2^-11) more per block.
 *   On top comes float rounding of the kernel's own sum: <= n u sum |w_i x^_i| (u = 2^-24), as in
 *   test_kernels.c; we allow 4 n u for the products of scales.
 * A wrong weight or misplaced nibble is off by about |w_i x_i| ~ sum|w x| / n at least, far more
 * than these bounds for the sizes here. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "formats/source.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/qdot.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define U 5.9604644775390625e-8 /* 2^-24 */

static const int TYPES[] = {QLM_TYPE_Q4_0, QLM_TYPE_Q4_1, QLM_TYPE_Q5_0, QLM_TYPE_Q5_1, QLM_TYPE_Q8_0,
                            QLM_TYPE_Q2_K, QLM_TYPE_Q3_K, QLM_TYPE_Q4_K, QLM_TYPE_Q5_K, QLM_TYPE_Q6_K};
#define N_TYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

/* Byte offsets of the half-precision scale fields of one block: d, and m/dmin (-1 if none). */
static void scale_fields(int type, int *d_off, int *m_off) {
  *m_off = -1;
  switch (type) {
  case QLM_TYPE_Q4_1: case QLM_TYPE_Q5_1: case QLM_TYPE_Q4_K: case QLM_TYPE_Q5_K: *d_off = 0; *m_off = 2; break;
  case QLM_TYPE_Q2_K: *d_off = 80; *m_off = 82; break;
  case QLM_TYPE_Q3_K: *d_off = 108; break;
  case QLM_TYPE_Q6_K: *d_off = 208; break;
  default: *d_off = 0; break; /* Q4_0, Q5_0, Q8_0 */
  }
}

static void put_half(uint8_t *p, float v) {
  uint16_t h = qlm_f32_to_f16(v);
  p[0] = (uint8_t)h;
  p[1] = (uint8_t)(h >> 8);
}

/* n weights of `type`: random quant bits, scales in realistic ranges (or exactly 1 and `m` when
 * `unit` is set, for the exact-integer test). */
static uint8_t *random_blocks(int type, int64_t n, uint64_t *rng, int unit) {
  const qlm_type_traits *tr = qlm_type_traits_of(type);
  size_t bytes = qlm_type_row_bytes(type, n);
  uint8_t *b = malloc(bytes);
  assert_non_null(b);
  for (size_t i = 0; i < bytes; i++) b[i] = (uint8_t)tu_rand_u64(rng);
  int d_off, m_off;
  scale_fields(type, &d_off, &m_off);
  for (int64_t k = 0; k < n / tr->block_size; k++) {
    uint8_t *blk = b + (size_t)k * tr->type_size;
    int affine = type == QLM_TYPE_Q4_1 || type == QLM_TYPE_Q5_1;
    put_half(blk + d_off, unit ? 1.0f : 0.002f + 0.02f * tu_rand_uniform(rng));
    if (m_off >= 0)
      put_half(blk + m_off, unit ? (affine ? -3.0f : 1.0f) : (affine ? 0.1f * (tu_rand_uniform(rng) - 0.5f) : 0.001f + 0.01f * tu_rand_uniform(rng)));
  }
  return b;
}

static float *dequant(int type, const void *b, int64_t n) {
  float *f = malloc((size_t)n * sizeof *f);
  assert_non_null(f);
  qlm_type_traits_of(type)->to_float(b, f, n);
  return f;
}

static void *quant_act(int type, const float *x, int64_t n) {
  const qlm_type_traits *tr = qlm_type_traits_of(type);
  void *a = malloc(qlm_type_row_bytes(tr->vec_dot_type, n));
  assert_non_null(a);
  tr->quantize_act(x, a, n);
  return a;
}

static int64_t act_block(int type) { return qlm_type_traits_of(qlm_type_traits_of(type)->vec_dot_type)->block_size; }

/* Activations N(0,1) with a few outliers (as real hidden states have). */
static float *random_x(int64_t n, uint64_t *rng) {
  float *x = malloc((size_t)n * sizeof *x);
  assert_non_null(x);
  for (int64_t i = 0; i < n; i++) x[i] = tu_rand_normal(rng) * (tu_rand_uniform(rng) < 0.02f ? 20.0f : 1.0f);
  return x;
}

static const int64_t SIZES[] = {256, 512, 1536, 4096};
#define N_SIZES ((int)(sizeof SIZES / sizeof SIZES[0]))

/* Scalar reference vec_dot against the exact dot, within the derived bound; and against the dot
 * with the dequantized activations, within float rounding. */
static void test_vec_dot_ref_within_activation_bound(void **st) {
  (void)st;
  uint64_t rng = 42;
  for (int ti = 0; ti < N_TYPES; ti++) {
    int type = TYPES[ti];
    const qlm_type_traits *tr = qlm_type_traits_of(type), *at = qlm_type_traits_of(tr->vec_dot_type);
    assert_non_null(tr->vec_dot);
    assert_non_null(at);
    int half_d = tr->vec_dot_type != QLM_TYPE_Q8_K, has_s = tr->vec_dot_type == QLM_TYPE_Q8_1;
    for (int si = 0; si < N_SIZES; si++) {
      int64_t n = SIZES[si], ab = at->block_size;
      uint8_t *wb = random_blocks(type, n, &rng, 0);
      float *w = dequant(type, wb, n), *x = random_x(n, &rng);
      uint8_t *a = quant_act(type, x, n);
      float *xh = dequant(tr->vec_dot_type, a, n);
      double exact = 0, exact_h = 0, mag = 0, bound = 0;
      for (int64_t i = 0; i < n; i++) {
        exact += (double)w[i] * x[i];
        exact_h += (double)w[i] * xh[i];
        mag += fabs((double)w[i] * xh[i]);
      }
      for (int64_t b0 = 0; b0 < n; b0 += ab) {
        double amax = 0, sw = 0;
        for (int64_t i = b0; i < b0 + ab; i++) {
          amax = fmax(amax, fabs(x[i]));
          sw += fabs(w[i]);
        }
        double d = amax / 127;
        bound += sw * d * (0.5 + (half_d ? 127.0 / 2048 : 1e-6));
      }
      double s_err = 0; /* Q8_1's s term (see the top of the file) */
      if (has_s) {
        for (int64_t k = 0; k < n / 32; k++) {
          const uint8_t *yb = a + 36 * k;
          int sq = 0;
          for (int j = 0; j < 32; j++) sq += (int8_t)yb[4 + j];
          double m = fabs(qlm_f16_to_f32((uint16_t)(wb[tr->type_size * k + 2] | (wb[tr->type_size * k + 3] << 8))));
          double d = qlm_f16_to_f32((uint16_t)(yb[0] | (yb[1] << 8)));
          s_err += m * fabs((double)sq) * d * (2.0 / 2048) * 1.01;
        }
      }
      double fl = 4.0 * (double)n * U * mag + 1e-6;
      float got = tr->vec_dot(wb, a, n);
      if (fabs(got - exact_h) > fl + s_err)
        fail_msg("%s n=%lld: vec_dot %.9g vs dequantized-activation dot %.9g (tol %.3g)", tr->name, (long long)n,
                 (double)got, exact_h, fl + s_err);
      if (fabs(got - exact) > bound + fl + s_err)
        fail_msg("%s n=%lld: vec_dot %.9g vs exact %.9g: error %.3g > bound %.3g", tr->name, (long long)n, (double)got,
                 exact, fabs(got - exact), bound + fl + s_err);
      /* the bound is not vacuous: it is well below the size of the dot's terms */
      assert_true(bound < 0.5 * mag);
      free(wb), free(w), free(x), free(a), free(xh);
    }
  }
}

static const qlm_simd_level LEVELS[] = {QLM_SIMD_SCALAR, QLM_SIMD_AVX2, QLM_SIMD_AVX512};

/* Every SIMD version by name: qlm_vec_dot_for picks only one AVX-512 version (with or without
 * VNNI), so the other is tested through this table; the matmul test checks that the dispatch
 * returns the version listed here for the CPU's VNNI support. */
typedef struct simd_fn {
  int type;
  qlm_simd_level level;
  int vnni; /* needs AVX-512 VNNI */
  qlm_vec_dot_fn fn;
  const char *name;
} simd_fn;

static const simd_fn SIMD_FNS[] = {
    {QLM_TYPE_Q4_0, QLM_SIMD_AVX2, 0, qlm_vec_dot_q4_0_avx2, "q4_0_avx2"},
    {QLM_TYPE_Q4_1, QLM_SIMD_AVX2, 0, qlm_vec_dot_q4_1_avx2, "q4_1_avx2"},
    {QLM_TYPE_Q5_0, QLM_SIMD_AVX2, 0, qlm_vec_dot_q5_0_avx2, "q5_0_avx2"},
    {QLM_TYPE_Q5_1, QLM_SIMD_AVX2, 0, qlm_vec_dot_q5_1_avx2, "q5_1_avx2"},
    {QLM_TYPE_Q8_0, QLM_SIMD_AVX2, 0, qlm_vec_dot_q8_0_avx2, "q8_0_avx2"},
    {QLM_TYPE_Q4_K, QLM_SIMD_AVX2, 0, qlm_vec_dot_q4_k_avx2, "q4_k_avx2"},
    {QLM_TYPE_Q6_K, QLM_SIMD_AVX2, 0, qlm_vec_dot_q6_k_avx2, "q6_k_avx2"},
    {QLM_TYPE_Q4_0, QLM_SIMD_AVX512, 0, qlm_vec_dot_q4_0_avx512, "q4_0_avx512"},
    {QLM_TYPE_Q4_1, QLM_SIMD_AVX512, 0, qlm_vec_dot_q4_1_avx512, "q4_1_avx512"},
    {QLM_TYPE_Q5_0, QLM_SIMD_AVX512, 0, qlm_vec_dot_q5_0_avx512, "q5_0_avx512"},
    {QLM_TYPE_Q5_1, QLM_SIMD_AVX512, 0, qlm_vec_dot_q5_1_avx512, "q5_1_avx512"},
    {QLM_TYPE_Q8_0, QLM_SIMD_AVX512, 0, qlm_vec_dot_q8_0_avx512, "q8_0_avx512"},
    {QLM_TYPE_Q4_K, QLM_SIMD_AVX512, 0, qlm_vec_dot_q4_k_avx512, "q4_k_avx512"},
    {QLM_TYPE_Q6_K, QLM_SIMD_AVX512, 0, qlm_vec_dot_q6_k_avx512, "q6_k_avx512"},
    {QLM_TYPE_Q4_0, QLM_SIMD_AVX512, 1, qlm_vec_dot_q4_0_avx512vnni, "q4_0_avx512vnni"},
    {QLM_TYPE_Q4_1, QLM_SIMD_AVX512, 1, qlm_vec_dot_q4_1_avx512vnni, "q4_1_avx512vnni"},
    {QLM_TYPE_Q5_0, QLM_SIMD_AVX512, 1, qlm_vec_dot_q5_0_avx512vnni, "q5_0_avx512vnni"},
    {QLM_TYPE_Q5_1, QLM_SIMD_AVX512, 1, qlm_vec_dot_q5_1_avx512vnni, "q5_1_avx512vnni"},
    {QLM_TYPE_Q8_0, QLM_SIMD_AVX512, 1, qlm_vec_dot_q8_0_avx512vnni, "q8_0_avx512vnni"},
    {QLM_TYPE_Q4_K, QLM_SIMD_AVX512, 1, qlm_vec_dot_q4_k_avx512vnni, "q4_k_avx512vnni"},
};
#define N_SIMD_FNS ((int)(sizeof SIMD_FNS / sizeof SIMD_FNS[0]))

static int simd_fn_runs_here(const simd_fn *f) {
  return f->level <= qlm_cpu_detect() && (!f->vnni || qlm_cpu_has_avx512_vnni());
}

/* The version qlm_vec_dot_for(type, level) must return on this CPU (the VNNI one where there is
 * one and the CPU has VNNI); NULL if the type has none at that level. */
static qlm_vec_dot_fn expected_simd_fn(int type, qlm_simd_level level) {
  int vnni = level == QLM_SIMD_AVX512 && qlm_cpu_has_avx512_vnni();
  for (int want = vnni; want >= 0; want--)
    for (int k = 0; k < N_SIMD_FNS; k++)
      if (SIMD_FNS[k].type == type && SIMD_FNS[k].level == level && SIMD_FNS[k].vnni == want) return SIMD_FNS[k].fn;
  return NULL;
}

/* Integer data (all scales 1, activations integers with block amax 127, so d_x = 1): every sum the
 * kernels form is an integer below 2^24, exact in float.  So every SIMD level must return exactly
 * the integer dot of the dequantized weights with x — this checks the integer parts bit for bit. */
static void test_vec_dot_levels_exact_on_integers(void **st) {
  (void)st;
  uint64_t rng = 7;
  /* 1312 = 41 blocks of 32: an odd count, for the kernels that take blocks in pairs */
  static const int64_t NS[] = {256, 512, 768, 1536, 1312};
  for (int ti = 0; ti < N_TYPES; ti++) {
    int type = TYPES[ti];
    const qlm_type_traits *tr = qlm_type_traits_of(type);
    for (int si = 0; si < 5; si++) {
      int64_t n = NS[si], ab = act_block(type);
      if (n % tr->block_size) continue;
      uint8_t *wb = random_blocks(type, n, &rng, 1);
      float *w = dequant(type, wb, n), *x = malloc((size_t)n * sizeof *x);
      for (int64_t i = 0; i < n; i++) x[i] = (float)((int)(tu_rand_u64(&rng) % 31) - 15);
      for (int64_t b0 = 0; b0 < n; b0 += ab) x[b0 + (int64_t)(tu_rand_u64(&rng) % (uint64_t)ab)] = (b0 / ab) % 2 ? 127.0f : -127.0f;
      uint8_t *a = quant_act(type, x, n);
      double exact = 0, mag = 0;
      for (int64_t i = 0; i < n; i++) {
        exact += (double)w[i] * x[i];
        mag += fabs((double)w[i] * x[i]);
      }
      assert_true(mag < 16777216.0); /* premise: every partial sum is exact in float */
      for (int li = 0; li < 3; li++) {
        if (LEVELS[li] > qlm_cpu_detect()) continue;
        float got = qlm_vec_dot_for(type, LEVELS[li])(wb, a, n);
        if ((double)got != exact)
          fail_msg("%s n=%lld level %s: %.1f, exact %.1f", tr->name, (long long)n, qlm_simd_name(LEVELS[li]),
                   (double)got, exact);
      }
      for (int k = 0; k < N_SIMD_FNS; k++) {
        if (SIMD_FNS[k].type != type || !simd_fn_runs_here(&SIMD_FNS[k])) continue;
        float got = SIMD_FNS[k].fn(wb, a, n);
        if ((double)got != exact) fail_msg("%s n=%lld: %.1f, exact %.1f", SIMD_FNS[k].name, (long long)n, (double)got, exact);
      }
      free(wb), free(w), free(x), free(a);
    }
  }
}

/* On realistic data every level agrees with the scalar reference within float rounding. */
static void test_vec_dot_levels_match_reference(void **st) {
  (void)st;
  uint64_t rng = 99;
  static const int64_t NS[] = {256, 512, 1280, 1536, 2816, 1312, 32};
  for (int ti = 0; ti < N_TYPES; ti++) {
    int type = TYPES[ti];
    const qlm_type_traits *tr = qlm_type_traits_of(type);
    for (int si = 0; si < 7; si++) {
      int64_t n = NS[si];
      if (n % tr->block_size) continue;
      uint8_t *wb = random_blocks(type, n, &rng, 0);
      float *w = dequant(type, wb, n), *x = random_x(n, &rng);
      uint8_t *a = quant_act(type, x, n);
      float *xh = dequant(tr->vec_dot_type, a, n);
      double mag = 0;
      for (int64_t i = 0; i < n; i++) mag += fabs((double)w[i] * xh[i]);
      float ref = tr->vec_dot(wb, a, n);
      for (int li = 1; li < 3; li++) {
        if (LEVELS[li] > qlm_cpu_detect()) continue;
        float got = qlm_vec_dot_for(type, LEVELS[li])(wb, a, n);
        double tol = 8.0 * (double)n * U * mag + 1e-6;
        if (fabs((double)got - ref) > tol)
          fail_msg("%s n=%lld level %s: %.9g vs reference %.9g (tol %.3g)", tr->name, (long long)n,
                   qlm_simd_name(LEVELS[li]), (double)got, (double)ref, tol);
      }
      for (int k = 0; k < N_SIMD_FNS; k++) {
        if (SIMD_FNS[k].type != type || !simd_fn_runs_here(&SIMD_FNS[k])) continue;
        float got = SIMD_FNS[k].fn(wb, a, n);
        double tol = 8.0 * (double)n * U * mag + 1e-6;
        if (fabs((double)got - ref) > tol)
          fail_msg("%s n=%lld: %.9g vs reference %.9g (tol %.3g)", SIMD_FNS[k].name, (long long)n, (double)got,
                   (double)ref, tol);
      }
      free(wb), free(w), free(x), free(a), free(xh);
    }
  }
}

/* The packed Q4_0 activations (qdot.h): every field from the Q8_0 bytes as the layout says, the
 * partial last quad zero-padded; the AVX-512 packer writes the same bytes; the GEMV equals the
 * one-row vec_dot bit for bit for any row count (and so, through the tests above, the reference
 * within the bound), also across vec_dot's 64-block stack chunks and with 1..3 trailing blocks. */
static void test_q4_0_packed_gemv(void **st) {
  (void)st;
  uint64_t rng = 17;
  static const int64_t NB[] = {1, 2, 3, 4, 5, 7, 8, 18, 41, 64, 65, 130};
  for (int si = 0; si < (int)(sizeof NB / sizeof NB[0]); si++) {
    int64_t nb = NB[si], n = 32 * nb;
    float *x = random_x(n, &rng);
    uint8_t *a = malloc((size_t)nb * 34);
    qlm_quantize_q8_0(x, a, n);
    size_t pb = qlm_q4_0_packed_act_bytes(n);
    assert_int_equal(pb, (size_t)((nb + 3) / 4) * 256);
    uint8_t *p = malloc(pb), *p2 = malloc(pb);
    memset(p, 0xAB, pb);
    qlm_q4_0_pack_act(a, p, nb);
    for (int64_t q = 0; q < (nb + 3) / 4; q++) {
      const uint8_t *o = p + 256 * q;
      for (int i = 0; i < 16; i++) {
        int64_t b = 4 * q + i / 4;
        int s = 0;
        for (int j = 0; j < 4; j++) {
          int jj = 4 * (i % 4) + j; /* position in the block's half */
          int8_t lo = b < nb ? (int8_t)a[34 * b + 2 + jj] : 0, hi = b < nb ? (int8_t)a[34 * b + 18 + jj] : 0;
          assert_int_equal((int8_t)o[4 * i + j], lo);
          assert_int_equal((int8_t)o[64 + 4 * i + j], hi);
          s += lo + hi;
        }
        int32_t off;
        float dx;
        memcpy(&off, o + 128 + 4 * i, 4);
        memcpy(&dx, o + 192 + 4 * i, 4);
        assert_int_equal(off, -8 * s);
        uint16_t h = b < nb ? (uint16_t)(a[34 * b] | a[34 * b + 1] << 8) : 0;
        assert_true(dx == qlm_f16_to_f32(h));
      }
    }
    if (qlm_cpu_detect() >= QLM_SIMD_AVX512 && qlm_cpu_has_avx512_vnni()) {
      memset(p2, 0xCD, pb);
      qlm_q4_0_pack_act_avx512(a, p2, nb);
      assert_memory_equal(p, p2, pb);
      const int64_t rows = 37;
      size_t rb = qlm_type_row_bytes(QLM_TYPE_Q4_0, n);
      uint8_t *wb = random_blocks(QLM_TYPE_Q4_0, rows * n, &rng, 0);
      float y[37];
      for (int64_t r0 = 0; r0 < rows; r0 += 9) { /* calls of 9 rows and a last one of 1 */
        int64_t cnt = rows - r0 < 9 ? rows - r0 : 9;
        qlm_gemv_q4_0_avx512vnni(wb + rb * (size_t)r0, rb, cnt, p, n, y + r0);
      }
      for (int64_t r = 0; r < rows; r++) {
        float want = qlm_vec_dot_q4_0_avx512vnni(wb + rb * (size_t)r, a, n);
        if (memcmp(&want, &y[r], sizeof want) != 0)
          fail_msg("q4_0 gemv nb=%lld row %lld: %.9g, vec_dot %.9g", (long long)nb, (long long)r, (double)y[r], (double)want);
      }
      free(wb);
    }
    free(x), free(a), free(p), free(p2);
  }
}

/* The AVX-512 Q8_K quantizer writes the scalar one's bytes: on N(0,1) data with outliers, on an
 * all-zero block, a block with +-inf (amax = inf: d = inf, codes from NaN products clamp to -127)
 * and a block with a NaN (handed to the scalar code), at the decode sizes 4096 and 11008. */
static void test_quantize_q8_k_avx512_bytes(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512) {
    print_message("no AVX-512 on this CPU: the AVX-512 Q8_K quantizer is not run\n");
    return;
  }
  uint64_t rng = 23;
  static const int64_t NS[] = {256, 4096, 11008};
  for (int si = 0; si < 3; si++) {
    int64_t n = NS[si];
    float *x = random_x(n, &rng);
    if (n > 256) {
      memset(x + 256, 0, 256 * sizeof *x);              /* block 1: all zero */
      x[512 + 3] = INFINITY, x[512 + 200] = -INFINITY;  /* block 2 */
      x[768 + 77] = NAN;                                /* block 3 */
      x[1024 + 5] = 1e-30f;                             /* block 4: tiny next to normal values */
    }
    size_t bytes = qlm_type_row_bytes(QLM_TYPE_Q8_K, n);
    uint8_t *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 0x11, bytes), memset(b, 0x22, bytes);
    qlm_quantize_q8_k(x, a, n);
    qlm_quantize_q8_k_avx512(x, b, n);
    for (size_t i = 0; i < bytes; i++)
      if (a[i] != b[i]) fail_msg("n=%lld: byte %zu (block %zu offset %zu): avx512 %d, scalar %d", (long long)n, i, i / 292, i % 292, b[i], a[i]);
    free(x), free(a), free(b);
  }
}

/* The Q4_K decode GEMV (q4_k_gemv_avx512.c) on LLaMA-7B row lengths (4096, 11008) and odd row
 * counts: qlm_gemv_q4_k_avx512vnni on any split of the rows equals the one-row VNNI dot bit for
 * bit; that dot is within float rounding of the scalar reference (the bound of
 * test_vec_dot_levels_match_reference) and exact on integer data; and qlm_matmul_ex at T = 1
 * (which takes this GEMV and the AVX-512 quantizer) gives the same bits with 1, 2 and 3 threads. */
static void test_q4_k_gemv(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512 || !qlm_cpu_has_avx512_vnni()) {
    print_message("no AVX-512 VNNI on this CPU: the Q4_K GEMV is not run\n");
    return;
  }
  uint64_t rng = 29;
  qlm_pool *pools[3] = {qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  static const int64_t COLS[] = {256, 4096, 11008};
  static const int64_t ROWS[] = {1, 7, 37, 301};
  const qlm_type_traits *tr = qlm_type_traits_of(QLM_TYPE_Q4_K);
  for (int ci = 0; ci < 3; ci++) {
    int64_t cols = COLS[ci];
    size_t rb = qlm_type_row_bytes(QLM_TYPE_Q4_K, cols);
    for (int ri = 0; ri < 4; ri++) {
      int64_t rows = ROWS[ri];
      if (cols == 11008 && rows == 301) rows = 67; /* keep the test short */
      uint8_t *wb = random_blocks(QLM_TYPE_Q4_K, rows * cols, &rng, 0);
      float *x = random_x(cols, &rng), *y = malloc((size_t)rows * sizeof *y), *ym = malloc((size_t)rows * sizeof *ym);
      uint8_t *a = quant_act(QLM_TYPE_Q4_K, x, cols);
      float *xh = dequant(QLM_TYPE_Q8_K, a, cols);
      for (int64_t r0 = 0; r0 < rows; r0 += 5) { /* calls of 5 rows and a shorter last one */
        int64_t cnt = rows - r0 < 5 ? rows - r0 : 5;
        qlm_gemv_q4_k_avx512vnni(wb + rb * (size_t)r0, rb, cnt, a, cols, y + r0);
      }
      for (int64_t r = 0; r < rows; r++) {
        const uint8_t *w = wb + rb * (size_t)r;
        float want = qlm_vec_dot_q4_k_avx512vnni(w, a, cols), ref = tr->vec_dot(w, a, cols);
        if (memcmp(&want, &y[r], sizeof want) != 0)
          fail_msg("q4_k gemv cols=%lld rows=%lld row %lld: %.9g, vec_dot %.9g", (long long)cols, (long long)rows,
                   (long long)r, (double)y[r], (double)want);
        float *wf = dequant(QLM_TYPE_Q4_K, w, cols);
        double mag = 0;
        for (int64_t i = 0; i < cols; i++) mag += fabs((double)wf[i] * xh[i]);
        double tol = 8.0 * (double)cols * U * mag + 1e-6;
        if (fabs((double)want - ref) > tol)
          fail_msg("q4_k avx512vnni cols=%lld row %lld: %.9g vs reference %.9g (tol %.3g)", (long long)cols, (long long)r,
                   (double)want, (double)ref, tol);
        free(wf);
      }
      qlm_mat W = {.type = QLM_TYPE_Q4_K, .rows = rows, .cols = cols, .data = wb, .row_bytes = rb};
      for (int p = 0; p < 3; p++) {
        memset(ym, 0xFF, (size_t)rows * sizeof *ym);
        qlm_matmul_ex(&W, x, 1, ym, pools[p], QLM_SIMD_AVX512, 1);
        if (memcmp(y, ym, (size_t)rows * sizeof *y) != 0)
          fail_msg("q4_k matmul cols=%lld rows=%lld threads %d differs from the GEMV", (long long)cols, (long long)rows, p + 1);
      }
      free(wb), free(x), free(y), free(ym), free(a), free(xh);
    }
  }
  for (int p = 0; p < 3; p++) qlm_pool_free(pools[p]);
}

/* The Q4_1 / Q5_0 / Q5_1 decode GEMV (legacy_gemv_avx512.c): with the activation packed once,
 * every row on any split of the rows equals the type's one-row VNNI dot bit for bit, on even and
 * odd block counts (an odd last block goes to the reference, as in the dot) and LLaMA-7B's row
 * length; and qlm_matmul_ex at T = 1 (which takes this GEMV) gives the same bits with 1, 2 and 3
 * threads. */
static void test_legacy_gemv(void **st) {
  (void)st;
  if (qlm_cpu_detect() < QLM_SIMD_AVX512 || !qlm_cpu_has_avx512_vnni()) {
    print_message("no AVX-512 VNNI on this CPU: the Q4_1/Q5_0/Q5_1 GEMV is not run\n");
    return;
  }
  uint64_t rng = 31;
  qlm_pool *pools[3] = {qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  static const int TYPES_L[] = {QLM_TYPE_Q4_1, QLM_TYPE_Q5_0, QLM_TYPE_Q5_1};
  static const int64_t COLS[] = {32, 96, 544, 4096};
  for (int ti = 0; ti < 3; ti++)
    for (int ci = 0; ci < 4; ci++) {
      int type = TYPES_L[ti];
      const qlm_type_traits *tr = qlm_type_traits_of(type);
      int64_t cols = COLS[ci], rows = 37;
      size_t rb = qlm_type_row_bytes(type, cols);
      uint8_t *wb = random_blocks(type, rows * cols, &rng, 0);
      float *x = random_x(cols, &rng), *y = malloc((size_t)rows * sizeof *y), *ym = malloc((size_t)rows * sizeof *ym);
      uint8_t *a = quant_act(type, x, cols);
      uint8_t *pk = malloc(qlm_legacy_packed_act_bytes(cols) + 1);
      qlm_legacy_pack_act_avx512(type, a, pk, cols);
      qlm_vec_dot_fn dot = qlm_vec_dot_for(type, QLM_SIMD_AVX512);
      for (int64_t r0 = 0; r0 < rows; r0 += 5) { /* calls of 5 rows and a shorter last one */
        int64_t cnt = rows - r0 < 5 ? rows - r0 : 5;
        qlm_gemv_legacy_avx512vnni(type, wb + rb * (size_t)r0, rb, cnt, pk, a, cols, y + r0);
      }
      for (int64_t r = 0; r < rows; r++) {
        float want = dot(wb + rb * (size_t)r, a, cols);
        if (memcmp(&want, &y[r], sizeof want) != 0)
          fail_msg("%s gemv cols=%lld row %lld: %.9g, vec_dot %.9g", tr->name, (long long)cols, (long long)r,
                   (double)y[r], (double)want);
      }
      qlm_mat W = {.type = type, .rows = rows, .cols = cols, .data = wb, .row_bytes = rb};
      for (int p = 0; p < 3; p++) {
        memset(ym, 0xFF, (size_t)rows * sizeof *ym);
        qlm_matmul_ex(&W, x, 1, ym, pools[p], QLM_SIMD_AVX512, 1);
        if (memcmp(y, ym, (size_t)rows * sizeof *y) != 0)
          fail_msg("%s matmul cols=%lld threads %d differs from the GEMV", tr->name, (long long)cols, p + 1);
      }
      free(wb), free(x), free(y), free(ym), free(a), free(pk);
    }
  for (int p = 0; p < 3; p++) qlm_pool_free(pools[p]);
}

/* The activation quantizers: |q| <= 127, d = amax / 127 as stored, sums as stored. */
static void test_quantize_act_format(void **st) {
  (void)st;
  uint64_t rng = 5;
  int64_t n = 512;
  float *x = random_x(n, &rng);
  float zeros[32] = {0};
  uint8_t q0[34];
  qlm_quantize_q8_0(zeros, q0, 32);
  for (int j = 0; j < 34; j++) assert_int_equal(q0[j], 0);
  uint8_t *k = malloc(292 * 2);
  qlm_quantize_q8_k(x, k, n);
  for (int b = 0; b < 2; b++) {
    const uint8_t *blk = k + 292 * b;
    float d;
    memcpy(&d, blk, 4);
    float amax = 0;
    for (int i = 0; i < 256; i++) amax = fmaxf(amax, fabsf(x[256 * b + i]));
    assert_true(d == amax / 127.0f);
    for (int g = 0; g < 16; g++) {
      int s = 0;
      for (int j = 0; j < 16; j++) {
        int8_t q = (int8_t)blk[4 + 16 * g + j];
        assert_true(q >= -127);
        assert_true(fabsf(x[256 * b + 16 * g + j] - q * d) <= 0.5f * d * 1.0001f);
        s += q;
      }
      int16_t bs;
      memcpy(&bs, blk + 260 + 2 * g, 2);
      assert_int_equal(bs, s);
    }
  }
  free(k);
  free(x);
}

/* qlm_matmul with quantized W equals vec_dot per row and activation row, bit for bit (it is the
 * same function on the same bytes), for T = 1 and 5, at every level and thread count; and the
 * scalar level equals the reference. */
static void test_matmul_quant_equals_vec_dot(void **st) {
  (void)st;
  uint64_t rng = 11;
  qlm_pool *pools[4] = {NULL, qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  const int64_t rows = 300, cols = 512;
  for (int ti = 0; ti < N_TYPES; ti++) {
    int type = TYPES[ti];
    const qlm_type_traits *tr = qlm_type_traits_of(type);
    size_t rb = qlm_type_row_bytes(type, cols), ab = qlm_type_row_bytes(tr->vec_dot_type, cols);
    uint8_t *wb = random_blocks(type, rows * cols, &rng, 0);
    qlm_mat W = {.type = type, .rows = rows, .cols = cols, .data = wb, .row_bytes = rb};
    for (int T = 1; T <= 5; T += 4) {
      float *X = random_x(T * cols, &rng), *Y = malloc((size_t)(T * rows) * sizeof *Y);
      uint8_t *A = malloc(ab * (size_t)T);
      for (int t = 0; t < T; t++) tr->quantize_act(X + t * cols, A + ab * (size_t)t, cols);
      for (int li = 0; li < 3; li++) {
        if (LEVELS[li] > qlm_cpu_detect()) continue;
        qlm_vec_dot_fn dot = qlm_vec_dot_for(type, LEVELS[li]);
        if (li == 0) assert_ptr_equal(dot, tr->vec_dot);
        /* the dispatch really picks the SIMD version, so the SIMD path is what is compared */
        qlm_vec_dot_fn want_fn = li > 0 ? expected_simd_fn(type, LEVELS[li]) : NULL;
        if (want_fn && dot != want_fn) fail_msg("%s level %s: qlm_vec_dot_for returned another function", tr->name, qlm_simd_name(LEVELS[li]));
        for (int p = 0; p < 4; p++) {
          memset(Y, 0xFF, (size_t)(T * rows) * sizeof *Y);
          qlm_matmul_ex(&W, X, T, Y, pools[p], LEVELS[li], 1);
          for (int t = 0; t < T; t++)
            for (int64_t r = 0; r < rows; r++) {
              float want = dot(wb + rb * (size_t)r, A + ab * (size_t)t, cols);
              if (memcmp(&want, &Y[t * rows + r], sizeof want) != 0)
                fail_msg("%s T=%d level %s threads %d: Y[%d][%lld] = %.9g, vec_dot %.9g", tr->name, T,
                         qlm_simd_name(LEVELS[li]), p, t, (long long)r, (double)Y[t * rows + r], (double)want);
            }
        }
      }
      free(X), free(Y), free(A);
    }
    free(wb);
  }
  for (int p = 1; p < 4; p++) qlm_pool_free(pools[p]);
}

/* Prefill-sized T (>= 32) with QLM_GEMM_Q=0 runs through dequantized tiles and sgemm: it must
 * equal the f32 matmul of the dequantized matrix within float rounding (n u sum|w x| per element,
 * both ways).  (The default prefill path of the types kernels/gemm_q.c covers quantizes the
 * activations like T == 1 does; tests/test_gemm.c checks it against vec_dot.) */
static void test_matmul_quant_prefill_equals_dequantized(void **st) {
  (void)st;
  uint64_t rng = 13;
  qlm_pool *pool = qlm_pool_new(2);
  const int64_t rows = 200, cols = 768;
  const int T = 40;
  setenv("QLM_GEMM_Q", "0", 1);
  for (int ti = 0; ti < N_TYPES; ti++) {
    int type = TYPES[ti];
    uint8_t *wb = random_blocks(type, rows * cols, &rng, 0);
    float *w = dequant(type, wb, rows * cols), *X = random_x(T * cols, &rng);
    float *Y = malloc(sizeof(float) * (size_t)(T * rows)), *Z = malloc(sizeof(float) * (size_t)(T * rows));
    qlm_mat Wq = {.type = type, .rows = rows, .cols = cols, .data = wb, .row_bytes = qlm_type_row_bytes(type, cols)};
    qlm_mat Wf = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = w, .row_bytes = (size_t)cols * 4};
    qlm_matmul_ex(&Wq, X, T, Y, pool, qlm_cpu_simd_level(), 1);
    qlm_matmul_ex(&Wf, X, T, Z, NULL, QLM_SIMD_SCALAR, 0);
    for (int t = 0; t < T; t++)
      for (int64_t r = 0; r < rows; r++) {
        double mag = 0;
        for (int64_t c = 0; c < cols; c++) mag += fabs((double)w[r * cols + c] * X[t * cols + c]);
        double tol = 2.0 * (double)cols * U * mag + 1e-6;
        if (fabs((double)Y[t * rows + r] - Z[t * rows + r]) > tol)
          fail_msg("%s: Y[%d][%lld] = %.9g, f32 %.9g", qlm_type_name(type), t, (long long)r, (double)Y[t * rows + r],
                   (double)Z[t * rows + r]);
      }
    free(wb), free(w), free(X), free(Y), free(Z);
  }
  unsetenv("QLM_GEMM_Q");
  qlm_pool_free(pool);
}

/* ---- SmolLM2 end to end ---- */


static float *all_logits(const qlm_source *src, int dequant_all, const int32_t *ids, int n, qlm_model **mout) {
  qlm_error err = {0};
  qlm_model *m;
  if (dequant_all) setenv("QLM_DEQUANT_ALL", "1", 1);
  int rc = qlm_model_load(src, &m, &err);
  unsetenv("QLM_DEQUANT_ALL");
  if (rc) fail_msg("%s", err.msg);
  qlm_state *s;
  assert_int_equal(qlm_state_new(m, 1, n, 1, 2, &s, &err), 0);
  float *logits = malloc((size_t)n * (size_t)m->hp.n_vocab * sizeof *logits);
  assert_non_null(logits);
  /* one token at a time, as in decoding: T = 1 matmuls take the vec_dot path (a batch of
   * >= 32 rows would take the dequantize-and-sgemm path instead) */
  for (int i = 0; i < n; i++) {
    int32_t pos = i, seq = 0;
    qlm_batch b = {.n = 1, .token = ids + i, .pos = &pos, .seq = &seq, .want_logits = NULL};
    if (qlm_forward(m, s, &b, logits + (size_t)i * (size_t)m->hp.n_vocab, &err)) fail_msg("%s", err.msg);
  }
  qlm_state_free(s);
  *mout = m;
  return logits;
}

/* The Q4_1 model run quantized (activations to 8 bits) against the same weights dequantized to
 * f32, on 64 tokens of WikiText-2 text.  The only difference is the 8-bit activation rounding
 * (up to 0.4% of each block's max per element, in every matmul of 30 layers), so the logits move
 * a little.  Measured (AVX-512 / AVX2 / scalar): greedy token agrees at 61-62 of 64 positions, and
 * where it differs the quantized pick is within 0.064 of the f32 best (near-ties); mean |dlogit|
 * 0.16-0.17, max 1.24, with logits up to 33; mean NLL of the text 3.588/3.577 vs 3.588.
 * Limits, about 2x the measurements: agreement >= 90%, differing picks within 0.5 logit of the
 * f32 best, mean |dlogit| < 0.3, max < 2.5, |delta NLL| < 0.03 nats.  A real bug (a wrong
 * nibble, scale or block) breaks the model and misses these by far. */
static void test_smollm2_quantized_close_to_f32(void **st) {
  (void)st;
  char *path = tu_smollm2_path();
  qlm_source *src;
  qlm_error err = {0};
  if (qlm_source_open(path, NULL, &src, &err)) {
    free(path);
    fail_msg("cannot open SmolLM2 (run scripts/get-models first): %s", err.msg);
  }
  free(path);
  qlm_tokenizer *tok;
  assert_int_equal(qlm_tokenizer_new(&src->vocab, &tok, &err), 0);
  const char *text =
      " The tower is 324 metres ( 1 @,@ 063 ft ) tall , about the same height as an 81 @-@ storey building , and the "
      "tallest structure in Paris . Its base is square , measuring 125 metres ( 410 ft ) on each side . During its "
      "construction , the Eiffel Tower surpassed the Washington Monument to become the tallest man @-@ made structure";
  int32_t *ids;
  int n;
  assert_int_equal(qlm_tokenize(tok, text, strlen(text), 0, 0, &ids, &n, &err), 0);
  assert_true(n >= 64);
  n = 64;
  qlm_model *mq, *mf;
  float *lq = all_logits(src, 0, ids, n, &mq), *lf = all_logits(src, 1, ids, n, &mf);
  /* the quantized model really is quantized, the other really f32 */
  assert_int_equal(mq->layers[0].wq.type, QLM_TYPE_Q4_1);
  assert_int_equal(mq->layers[29].w_down.type, QLM_TYPE_Q4_1);
  assert_int_equal(mq->output.type, QLM_TYPE_Q8_0);
  assert_int_equal(mq->tok_embd.type, QLM_TYPE_F32);
  assert_int_equal(mf->layers[0].wq.type, QLM_TYPE_F32);
  assert_int_equal(mf->output.type, QLM_TYPE_F32);
  int V = mq->hp.n_vocab, agree = 0;
  double sum = 0, maxd = 0, span = 0, nll_q = 0, nll_f = 0, worst_gap = 0;
  for (int t = 0; t < n; t++) {
    const float *a = lq + (size_t)t * V, *b = lf + (size_t)t * V;
    int ia = 0, ib = 0;
    double za = 0, zb = 0;
    for (int v = 0; v < V; v++) {
      double d = fabs((double)a[v] - b[v]);
      sum += d;
      maxd = fmax(maxd, d);
      span = fmax(span, fabs(b[v]));
      if (a[v] > a[ia]) ia = v;
      if (b[v] > b[ib]) ib = v;
    }
    for (int v = 0; v < V; v++) za += exp((double)a[v] - a[ia]), zb += exp((double)b[v] - b[ib]);
    if (t + 1 < n) { /* negative log-likelihood of the text's next token */
      nll_q += log(za) + a[ia] - a[ids[t + 1]];
      nll_f += log(zb) + b[ib] - b[ids[t + 1]];
    }
    agree += ia == ib;
    /* where the picks differ, how much worse the quantized pick is under the f32 logits */
    worst_gap = fmax(worst_gap, (double)b[ib] - b[ia]);
  }
  double mean = sum / ((double)n * V);
  nll_q /= n - 1, nll_f /= n - 1;
  print_message("SmolLM2 quantized vs f32 over %d positions: top-1 agreement %d/%d (worst f32 gap of a differing pick "
                "%.4f), mean |dlogit| %.5f, max %.4f (max |logit| %.2f), mean NLL %.5f vs %.5f\n",
                n, agree, n, worst_gap, mean, maxd, span, nll_q, nll_f);
  assert_true(agree >= (90 * n + 99) / 100);
  assert_true(worst_gap < 0.5);
  assert_true(mean < 0.3);
  assert_true(maxd < 2.5);
  assert_true(fabs(nll_q - nll_f) < 0.03);
  free(lq), free(lf), free(ids);
  qlm_model_free(mq);
  qlm_model_free(mf);
  qlm_tokenizer_free(tok);
  qlm_source_close(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quantize_act_format),
      cmocka_unit_test(test_vec_dot_ref_within_activation_bound),
      cmocka_unit_test(test_vec_dot_levels_exact_on_integers),
      cmocka_unit_test(test_vec_dot_levels_match_reference),
      cmocka_unit_test(test_matmul_quant_equals_vec_dot),
      cmocka_unit_test(test_q4_0_packed_gemv),
      cmocka_unit_test(test_quantize_q8_k_avx512_bytes),
      cmocka_unit_test(test_q4_k_gemv),
      cmocka_unit_test(test_legacy_gemv),
      cmocka_unit_test(test_matmul_quant_prefill_equals_dequantized),
      cmocka_unit_test(test_smollm2_quantized_close_to_f32),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
