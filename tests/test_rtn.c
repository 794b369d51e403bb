/* test_rtn.c — round-to-nearest quantization (quant/rtn.c: absmax and zero-point) and the RTN
 * storage types and dot products (kernels/rtn.h, rtn.c, rtn_avx2.c, rtn_avx512.c).
 *
 * Method.  Every number is checked against values computed here from the formulas of rtn.h and
 * quant/rtn.c, in double, with the block bytes decoded here from the layout of rtn.h:
 *   absmax:     d = half(max|x| / (2^(b-1) - 1))            codes u = q + 2^(b-1), |q| <= 2^(b-1)-1
 *   zero-point: d = half((max - min) / (2^b - 1)), z = round(-min / d)
 * Stored d is within half a half-precision ulp of the exact quotient (plus one float rounding of
 * the quotient and, for zero-point, of max - min).
 * Reconstruction error, per element of a group with stored d (u_h = spacing of halves at d:
 * 2^(e-10) for normal d in [2^e, 2^(e+1)), 2^-24 for subnormal d):
 *   inside the code range rounding is to the nearest code: |x - x'| <= d/2.  The codes are
 *   computed from the stored d, which may be up to u_h/2 smaller than the exact scale, so the
 *   extreme value may lie beyond the last code and be clamped:
 *     absmax:     max|x| / d <= qmax (1 + u_h / (2d)), so clamping costs at most qmax u_h / 2
 *                 (<= 0.062 d for normal d): bound max(d/2, qmax u_h / 2);
 *     zero-point: max/d + z = (max-min)/d + (z - (-min/d)) <= qmax + qmax u_h/(2d) + 1/2:
 *                 bound d/2 + qmax u_h / 2.
 *   plus float rounding of x / d (relative 2^-24 of |x/d| <= qmax + |z| + 1 units of d).
 *
 * Kernels, Q8_S activations (32 | g, bits other than 4).  Each 32-chunk's sum_j (u_j - c) q_j is
 * an exact integer at every level; only the float summation of the chunks' d_w d_x isum differs.
 * So:
 *   integer-valued data (d_w, d_x powers of two, every partial sum a multiple of the smallest
 *   d_w d_x below 2^24 of it, checked) must give bit-identical results at every level, equal
 *   to the exact sum;
 *   real data: each float term passes through at most K = n/32 + 12 roundings (product of the
 *   scales, FMA per chunk, n/32 accumulations per lane, the horizontal sum), and the SIMD lanes
 *   hold partial sums bounded by sum_j (|u_j| + 128) |q_j| + (|c| + 128) |sum q| per chunk
 *   (the 8-bit kernels without VNNI work with u - 128 and add (128 - c) sum q), so
 *   |result - exact| <= K 2^-24 B with B = sum_chunks |d_w d_x| (that bound).
 * A misplaced code or a saturated int16 (u = 255, q = 127 pairs would saturate vpmaddubsw) is
 * off by ~ d_w d_x 100, far more.
 *
 * Kernels, f32 activations (4 bits at every group size, other bits when 32 does not divide g).
 * The reference sums fl((u - c) x) per group in element order (g roundings), scales by d (1)
 * and adds the groups (n/g); the SIMD 4-bit kernels (16 | g) look up t = fl(d (u - c)), which is
 * the dequantized weight (1 rounding against d (u - c)), and accumulate t x by FMA: at most n/8
 * FMAs in one lane (AVX2: 8 lanes; AVX-512 has 16), 2 to join the accumulators, 4 for the
 * horizontal sum.  So both are within K 2^-24 B of the exact sum_i d (u_i - c) x_i, with
 * K = g + n/g + n/8 + 12 (a bound for either, the 12 covering the conversions and the one-time
 * slack) and B = sum_i |d (u_i - c) x_i|; the library's dequantizer agrees with d (u - c)
 * exactly here (|u - c| < 2^24), so this is also the distance to the exact double dot of the
 * dequantized weights and the f32 activations.  Integer-valued data (d (u - c) and x on a grid
 * of 0.5, every partial sum below 2^24 units) must again be exact at every level.  A misplaced
 * code is off by ~ |d x|, about B / n, far above K 2^-24 B for the n tested. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/qdot.h"
#include "kernels/rtn.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"
#include "quant/method.h"

#define U24 5.9604644775390625e-8 /* 2^-24 */
#define QK 32
#define Q8S 36

/* ------------------------------------------------------------------ helpers */

static int rd_i16(const uint8_t *p) { return (int16_t)(uint16_t)(p[0] | p[1] << 8); }
static float rd_half(const uint8_t *p) { return qlm_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  assert_non_null(p);
  return p;
}

/* Student-t with 3 degrees of freedom: heavy tails (kurtosis infinite), as real weights have. */
static float rand_t3(uint64_t *rng) {
  double c = 0;
  for (int i = 0; i < 3; i++) {
    double z = tu_rand_normal(rng);
    c += z * z;
  }
  return (float)(tu_rand_normal(rng) / sqrt(c / 3.0));
}

enum { DIST_GAUSS, DIST_T3, DIST_LAPLACE_OUTLIERS, DIST_POSITIVE, N_DIST };
static const char *DIST_NAME[] = {"gaussian", "student-t3", "laplace+outliers", "positive"};

static float *make_tensor(int dist, int64_t n, uint64_t seed) {
  uint64_t rng = seed;
  float *w = xmalloc((size_t)n * sizeof *w);
  for (int64_t i = 0; i < n; i++) {
    switch (dist) {
    case DIST_GAUSS: w[i] = 0.02f * tu_rand_normal(&rng); break;
    case DIST_T3: w[i] = 0.02f * rand_t3(&rng); break;
    case DIST_LAPLACE_OUTLIERS: {
      float u = tu_rand_uniform(&rng) - 0.5f;
      w[i] = -0.02f * copysignf(logf(1.0f - 2.0f * fabsf(u) + 1e-12f), u);
      if (tu_rand_uniform(&rng) < 0.002f) w[i] *= 40.0f; /* planted outliers */
      break;
    }
    default: w[i] = 0.5f + 0.1f * tu_rand_normal(&rng); break; /* shifted: all far from 0 */
    }
  }
  return w;
}

/* Spacing of half-precision numbers at |d| (d a half). */
static double half_ulp(double d) {
  d = fabs(d);
  if (d < ldexp(1.0, -14)) return ldexp(1.0, -24);
  int e;
  frexp(d, &e); /* d = f 2^e, f in [0.5, 1) */
  return ldexp(1.0, e - 1 - 10);
}

/* The group size quant/rtn.c must use for `group` on rows of `cols`, computed independently:
 * the asked size if it divides cols, else the largest divisor below it if that is at least half
 * of it, else the smallest divisor above it. */
static int expect_group(int group, int64_t cols) {
  if (group <= 0 || group >= cols) return (int)cols;
  int below = group, above = group;
  while (cols % below) below--;
  while (cols % above) above++;
  return 2 * below >= group ? below : above;
}

static void quantize(const qlm_quant_method *m, const float *W, int64_t rows, int64_t cols, int bits, int group,
                     qlm_qtensor *q) {
  qlm_quant_opts o = {.bits = bits, .group = group};
  m->defaults(&o);
  qlm_error err = {0};
  memset(q, 0, sizeof *q);
  int rc = m->check(&o, rows, cols, &err);
  if (rc == QLM_OK) rc = m->quantize(W, rows, cols, NULL, &o, q, &err);
  if (rc != QLM_OK) fail_msg("%s bits=%d group=%d: %s", m->name, bits, group, err.msg);
}

/* Code i of a block's code bytes, decoded from rtn.h's layout description (not rtn.c's). */
static int decode_code(int bits, int g, const uint8_t *p, int i) {
  if (bits == 8) return p[i];
  if (bits == 4 && g % 32 == 0) {
    int c = i / 32, j = i % 32;
    return j < 16 ? p[16 * c + j] & 15 : p[16 * c + j - 16] >> 4;
  }
  int v = 0;
  for (int k = 0; k < bits; k++) {
    int bit = i * bits + k;
    v |= ((p[bit / 8] >> (bit % 8)) & 1) << k;
  }
  return v;
}

typedef struct blockview {
  double d;
  int z;
  int u[4096];
} blockview;

static void view_block(int type, const uint8_t *b, blockview *v) {
  int bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type), asym = QLM_TYPE_FAMILY(type) == QLM_FAMILY_RTN_ASYM;
  assert_true(g <= 4096);
  v->d = rd_half(b);
  v->z = asym ? rd_i16(b + 2) : 1 << (bits - 1);
  for (int i = 0; i < g; i++) v->u[i] = decode_code(bits, g, b + (asym ? 4 : 2), i);
}

static size_t block_bytes(int type) {
  int asym = QLM_TYPE_FAMILY(type) == QLM_FAMILY_RTN_ASYM;
  return (size_t)(asym ? 4 : 2) + ((size_t)QLM_TYPE_BLOCK(type) * (size_t)QLM_TYPE_BITS(type) + 7) / 8;
}

/* ------------------------------------------------------------------ (a) the method */

typedef struct group_stats {
  double sse;     /* sum of squared errors */
  double max_d;   /* largest stored d */
} group_stats;

/* Quantize W with (m, bits, group), check the type, the layout, the scales and zero points
 * against values computed here, and every element against the derived error bound.  Returns
 * the sum of squared errors.  ds (optional) receives each block's d, row-major. */
static double check_method(const qlm_quant_method *m, const float *W, int64_t rows, int64_t cols, int bits, int group,
                           double *ds) {
  bool asym = m == &qlm_method_zeropoint;
  qlm_qtensor q;
  quantize(m, W, rows, cols, bits, group, &q);
  int g = expect_group(group, cols);
  int type = qlm_rtn_type(asym, bits, g);
  assert_int_equal(q.type, type);
  assert_int_equal(QLM_TYPE_BLOCK(q.type), g);
  assert_int_equal(q.rows, rows);
  assert_int_equal(q.cols, cols);
  size_t bs = block_bytes(type), hdr = asym ? 4 : 2;
  assert_int_equal(q.row_bytes, bs * (size_t)(cols / g));
  /* bits per weight, exactly: (header + code bytes) * 8 / g */
  double bpw = (double)(hdr + ((size_t)g * (size_t)bits + 7) / 8) * 8.0 / g;
  assert_true(q.bpw == bpw);
  assert_true(qlm_type_bpw(type) == bpw);

  int qmax_sym = (1 << (bits - 1)) - 1, qmax_asym = (1 << bits) - 1;
  /* per-tensor statistics, for group=tensor */
  double t_lo = W[0], t_hi = W[0], t_amax = 0;
  for (int64_t i = 0; i < rows * cols; i++) {
    t_lo = fmin(t_lo, W[i]), t_hi = fmax(t_hi, W[i]);
    t_amax = fmax(t_amax, fabs(W[i]));
  }
  float *deq = xmalloc((size_t)cols * sizeof *deq);
  static blockview v;
  double sse = 0;
  for (int64_t r = 0; r < rows; r++) {
    const uint8_t *row = (const uint8_t *)q.data + (size_t)r * q.row_bytes;
    assert_true(qlm_dequantize(type, row, deq, cols));
    for (int64_t c0 = 0, k = 0; c0 < cols; c0 += g, k++) {
      const float *x = W + r * cols + c0;
      view_block(type, row + (size_t)k * bs, &v);
      if (ds) ds[r * (cols / g) + k] = v.d;
      double lo = x[0], hi = x[0], amax = 0;
      for (int i = 0; i < g; i++) {
        lo = fmin(lo, x[i]), hi = fmax(hi, x[i]);
        amax = fmax(amax, fabs(x[i]));
      }
      if (group == QLM_GROUP_TENSOR) lo = t_lo, hi = t_hi, amax = t_amax;
      /* the scale and zero point */
      double want;
      if (!asym) {
        want = amax / qmax_sym;
      } else {
        if (hi == lo) lo = fmin(lo, 0), hi = fmax(hi, 0);
        want = (hi - lo) / qmax_asym;
      }
      double tol_d = half_ulp(want) / 2 + want * 2 * U24;
      if (!(fabs(v.d - want) <= tol_d))
        fail_msg("%s b=%d g=%d row %lld block %lld: d=%.9g, expected half(%.9g)", m->name, bits, group, (long long)r,
                 (long long)k, v.d, want);
      if (asym && v.d > 0) {
        double t = -lo / v.d;
        assert_true(fabs(t) <= 32767); /* the synthetic data never needs the far-from-0 fallback */
        double zr = nearbyint(t);
        if (fabs(fabs(t - trunc(t)) - 0.5) < 1e-5) /* within float rounding of a tie: either */
          assert_true(v.z == (int)floor(t) || v.z == (int)ceil(t));
        else if (v.z != (int)zr)
          fail_msg("%s b=%d: z=%d, expected round(%.9g)", m->name, bits, v.z, t);
      }
      /* codes in range; the dequantizer agrees with d (u - z) */
      double ulp = half_ulp(v.d), bound;
      if (!asym) bound = fmax(v.d / 2, qmax_sym * ulp / 2);
      else bound = v.d / 2 + qmax_asym * ulp / 2;
      bound += v.d * U24 * (qmax_asym + abs(v.z) + 2);
      for (int i = 0; i < g; i++) {
        assert_true(v.u[i] >= (asym ? 0 : 1) && v.u[i] <= qmax_asym);
        double xr = v.d * (v.u[i] - v.z);
        assert_true((double)deq[c0 + i] == xr);
        double e = fabs(x[i] - xr);
        if (!(e <= bound))
          fail_msg("%s b=%d g=%d: x=%.9g x'=%.9g error %.3g > bound %.3g (d=%.6g z=%d)", m->name, bits, group, x[i], xr, e,
                   bound, v.d, v.z);
        sse += e * e;
      }
    }
  }
  free(deq);
  qlm_qtensor_free(&q);
  return sse;
}

static const int BITS[] = {8, 6, 5, 4, 3, 2};
static const int GROUPS[] = {32, 64, 128, 96, 48, QLM_GROUP_CHANNEL, QLM_GROUP_TENSOR};
#define N_BITS 6
#define N_GROUPS 7

/* Every (method, bits, group) on Gaussian, heavy-tailed and outlier tensors: scales, zero points
 * and per-element error bound (check_method). */
static void test_method_bounds(void **st) {
  (void)st;
  const int64_t rows = 8, cols = 384; /* 384 = 3 * 128: every group above divides it */
  for (int dist = 0; dist < N_DIST; dist++) {
    float *W = make_tensor(dist, rows * cols, 1000 + (uint64_t)dist);
    for (int mi = 0; mi < 2; mi++)
      for (int bi = 0; bi < N_BITS; bi++)
        for (int gi = 0; gi < N_GROUPS; gi++)
          check_method(mi ? &qlm_method_zeropoint : &qlm_method_absmax, W, rows, cols, BITS[bi], GROUPS[gi], NULL);
    free(W);
  }
}

/* Nested groups: every group's d is at most the d of the coarser group holding it (max over a
 * subset, and half rounding is monotone) — guaranteed, checked exactly.  The MSE itself is not
 * guaranteed to be monotone element by element or even per group (a rounding error is some value
 * in [0, d/2], and a value that a coarse grid hits exactly may miss a finer one), but it is
 * ~ mean(d^2)/12 for continuous data, so over 2^17 elements with scales that differ by several
 * percent the order holds by a margin far above the sampling noise (checked: 2% margin). */
static void test_finer_groups_not_worse(void **st) {
  (void)st;
  const int64_t rows = 256, cols = 512;
  const int nested[] = {32, 64, 128, QLM_GROUP_CHANNEL, QLM_GROUP_TENSOR};
  double *ds[5];
  for (int dist = 0; dist < N_DIST; dist++) {
    float *W = make_tensor(dist, rows * cols, 2000 + (uint64_t)dist);
    for (int mi = 0; mi < 2; mi++) {
      const qlm_quant_method *m = mi ? &qlm_method_zeropoint : &qlm_method_absmax;
      for (int bi = 0; bi < N_BITS; bi++) {
        double mse[5];
        for (int k = 0; k < 5; k++) {
          int g = expect_group(nested[k], cols);
          ds[k] = xmalloc((size_t)(rows * (cols / g)) * sizeof(double));
          mse[k] = check_method(m, W, rows, cols, BITS[bi], nested[k], ds[k]) / (double)(rows * cols);
        }
        for (int k = 1; k < 5; k++) {
          int gf = expect_group(nested[k - 1], cols), gc = expect_group(nested[k], cols);
          for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c += gf) {
              double df = ds[k - 1][r * (cols / gf) + c / gf], dc = ds[k][r * (cols / gc) + c / gc];
              assert_true(df <= dc);
            }
          if (!(mse[k - 1] * 1.02 <= mse[k]))
            fail_msg("%s %s b=%d: MSE %.4g at group %d > %.4g at group %d", m->name, DIST_NAME[dist], BITS[bi], mse[k - 1],
                     nested[k - 1], mse[k], nested[k]);
        }
        for (int k = 0; k < 5; k++) free(ds[k]);
      }
    }
    free(W);
  }
}

/* More bits never hurt: MSE strictly decreases with b.  Not guaranteed element-wise (the grids
 * of b and b+1 bits are not nested), but d about halves per bit: where d is small against the
 * spread of the data (Gaussian, groups) the error ~ d^2/12 about quarters (checked: ratio < 0.3);
 * where most values round to 0 (per-tensor scales on heavy tails, few bits) the error is mostly
 * those values themselves and falls slowly (checked: ratio < 0.95; 0.91 is the worst here). */
static void test_bits_monotone(void **st) {
  (void)st;
  const int64_t rows = 64, cols = 384;
  for (int dist = 0; dist < N_DIST; dist++) {
    float *W = make_tensor(dist, rows * cols, 3000 + (uint64_t)dist);
    for (int mi = 0; mi < 2; mi++)
      for (int gi = 0; gi < N_GROUPS; gi++) {
        double prev = INFINITY;
        for (int b = 2; b <= 8; b++) {
          double mse = check_method(mi ? &qlm_method_zeropoint : &qlm_method_absmax, W, rows, cols, b, GROUPS[gi], NULL);
          double want = dist == DIST_GAUSS ? 0.3 : 0.95;
          if (!(mse < prev * want))
            fail_msg("%s %s group %d: MSE at %d bits %.4g is not well below %.4g at %d", mi ? "zeropoint" : "absmax",
                     DIST_NAME[dist], GROUPS[gi], b, mse, prev, b - 1);
          prev = mse;
        }
      }
    free(W);
  }
}

/* On skewed data (all values in 0.5 +- 0.3) absmax wastes half its codes on the sign and most of
 * the rest on [0, min): zero-point's MSE is far lower, at every bits and group. */
static void test_zeropoint_beats_absmax_on_skewed(void **st) {
  (void)st;
  const int64_t rows = 32, cols = 384;
  float *W = make_tensor(DIST_POSITIVE, rows * cols, 4000);
  for (int bi = 0; bi < N_BITS; bi++)
    for (int gi = 0; gi < N_GROUPS; gi++) {
      double a = check_method(&qlm_method_absmax, W, rows, cols, BITS[bi], GROUPS[gi], NULL);
      double z = check_method(&qlm_method_zeropoint, W, rows, cols, BITS[bi], GROUPS[gi], NULL);
      if (!(z < 0.5 * a)) fail_msg("b=%d group %d: zeropoint MSE %.4g vs absmax %.4g", BITS[bi], GROUPS[gi], z, a);
    }
  free(W);
}

/* A group that does not divide the row length falls back to the largest divisor below it. */
static void test_effective_group(void **st) {
  (void)st;
  struct { int64_t cols; int group, want; } cases[] = {
      {576, 128, 96}, {576, 64, 64}, {576, 100, 96}, {100, 32, 25}, {97, 32, 97}, {98, 40, 49}, {100, 60, 50}, {576, 576, 576}, {576, 1000, 576}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(expect_group(cases[i].group, cases[i].cols), cases[i].want);
    float *W = make_tensor(DIST_GAUSS, 4 * cases[i].cols, 5000 + i);
    for (int mi = 0; mi < 2; mi++) {
      qlm_qtensor q;
      quantize(mi ? &qlm_method_zeropoint : &qlm_method_absmax, W, 4, cases[i].cols, 4, cases[i].group, &q);
      assert_int_equal(QLM_TYPE_BLOCK(q.type), cases[i].want);
      qlm_qtensor_free(&q);
      check_method(mi ? &qlm_method_zeropoint : &qlm_method_absmax, W, 4, cases[i].cols, 4, cases[i].group, NULL);
    }
    free(W);
  }
}

/* Constant and all-zero groups: zero gives d = 0 and exact zeros; a constant v is held within the
 * bound (range widened to include 0), and exactly when v / qmax is a half. */
static void test_constant_and_zero_groups(void **st) {
  (void)st;
  const int64_t cols = 128;
  float W[4 * 128];
  for (int b = 2; b <= 8; b++) {
    float vals[4] = {0.0f, 0.3f, -7.25f, (float)((1 << (b - 1)) - 1) * 0.015625f};
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < cols; j++) W[i * cols + j] = vals[i];
    for (int mi = 0; mi < 2; mi++) {
      const qlm_quant_method *m = mi ? &qlm_method_zeropoint : &qlm_method_absmax;
      check_method(m, W, 4, cols, b, 32, NULL);
      qlm_qtensor q;
      quantize(m, W, 4, cols, b, 32, &q);
      float out[4 * 128];
      assert_true(qlm_dequantize(q.type, q.data, out, 4 * cols));
      for (int j = 0; j < cols; j++) assert_true(out[j] == 0.0f); /* row 0: zeros */
      assert_true(rd_half(q.data) == 0.0f);
      if (!mi) /* absmax: d = v / qmax = 2^-6 exactly, so v is exact */
        for (int j = 0; j < cols; j++) assert_true(out[3 * cols + j] == vals[3]);
      qlm_qtensor_free(&q);
    }
  }
  /* zero-point, a spread far below the smallest half scale (1 and 1 + 2^-23): the range is
   * widened to include 0, so the values come back within d/2 of 1 instead of as 0 */
  for (int j = 0; j < cols; j++) W[j] = j % 2 ? 1.0f : 1.00000012f;
  for (int b = 2; b <= 8; b++) {
    qlm_qtensor q;
    quantize(&qlm_method_zeropoint, W, 1, cols, b, 32, &q);
    float out[128], d = rd_half(q.data);
    assert_true(d > 0.0f);
    assert_true(qlm_dequantize(q.type, q.data, out, cols));
    for (int j = 0; j < cols; j++) assert_true(fabsf(out[j] - W[j]) <= d / 2 + 1e-6f);
    qlm_qtensor_free(&q);
  }
}

/* Bad options are usage errors that say what is wrong. */
static void test_bad_options(void **st) {
  (void)st;
  qlm_error err = {0};
  qlm_quant_opts o = {.bits = 9};
  assert_int_equal(qlm_method_absmax.check(&o, 4, 64, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "bits=9"));
  o.bits = 1;
  assert_int_equal(qlm_method_zeropoint.check(&o, 4, 64, &err), QLM_EUSAGE);
  o.bits = 4;
  assert_int_equal(qlm_method_absmax.check(&o, 1, 70000, &err), QLM_EUNSUPPORTED);
}

/* Layout: header bytes, the three code layouts of rtn.h byte by byte, and pack/unpack round
 * trips of random codes (stream layouts at 2, 3, 5, 6, 7 bits and 4 bits with 32 not dividing g). */
static void test_layout_pack_unpack(void **st) {
  (void)st;
  uint64_t rng = 77;
  const int groups[] = {32, 20, 48, 96, 7, 128, 1};
  uint8_t u[256], u2[256], blk[512];
  for (int asym = 0; asym < 2; asym++)
    for (int bits = 2; bits <= 8; bits++)
      for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
        int g = groups[gi], type = qlm_rtn_type(asym, bits, g);
        assert_true(type > 0);
        assert_int_equal(qlm_rtn_header_bytes(type), asym ? 2 + 2 : 2);
        assert_int_equal(qlm_rtn_code_bytes(type), (g * bits + 7) / 8);
        const qlm_type_traits *tr = qlm_type_traits_of(type);
        assert_non_null(tr);
        assert_int_equal(tr->type_size, block_bytes(type));
        assert_int_equal(tr->block_size, g);
        for (int rep = 0; rep < 4; rep++) {
          for (int i = 0; i < g; i++) u[i] = (uint8_t)(tu_rand_u64(&rng) & ((1u << bits) - 1));
          if (rep == 0) memset(u, (1 << bits) - 1, (size_t)g); /* all ones: bits of neighbours must not leak */
          int z = asym ? (int)(tu_rand_u64(&rng) % 65536) - 32768 : 0;
          float d = qlm_f16_to_f32(qlm_f32_to_f16(tu_rand_uniform(&rng)));
          memset(blk, 0xA5, sizeof blk);
          qlm_rtn_pack(type, d, z, u, blk);
          assert_int_equal(blk[block_bytes(type)], 0xA5); /* nothing written past the block */
          /* independent decode */
          assert_true(rd_half(blk) == d);
          if (asym) assert_int_equal(rd_i16(blk + 2), z);
          for (int i = 0; i < g; i++) assert_int_equal(decode_code(bits, g, blk + (asym ? 4 : 2), i), u[i]);
          float d2;
          int z2;
          qlm_rtn_unpack(type, blk, &d2, &z2, u2);
          assert_true(d2 == d);
          assert_int_equal(z2, asym ? z : 1 << (bits - 1));
          assert_memory_equal(u, u2, (size_t)g);
        }
      }
  /* the 4-bit 32-chunk order, byte by byte: byte j = u_j | u_{j+16} << 4 */
  for (int i = 0; i < 64; i++) u[i] = (uint8_t)(i % 16);
  qlm_rtn_pack(qlm_rtn_type(false, 4, 64), 1.0f, 0, u, blk);
  for (int c = 0; c < 2; c++)
    for (int j = 0; j < 16; j++) assert_int_equal(blk[2 + 16 * c + j], u[32 * c + j] | u[32 * c + j + 16] << 4);
  /* a 3-bit stream: codes 1..7,0 pack to the little-endian bit string of 0o01234567 reversed */
  for (int i = 0; i < 8; i++) u[i] = (uint8_t)((i + 1) & 7);
  qlm_rtn_pack(qlm_rtn_type(false, 3, 8), 1.0f, 0, u, blk);
  uint32_t bitsv = (uint32_t)blk[2] | (uint32_t)blk[3] << 8 | (uint32_t)blk[4] << 16;
  for (int i = 0; i < 8; i++) assert_int_equal((bitsv >> (3 * i)) & 7, u[i]);
}

/* ------------------------------------------------------------------ (b) the dot products */

/* 32 | g (nibble layout at 4 bits), 16 | g only (4-bit stream layout, SIMD), neither */
static const int KGROUPS[] = {32, 64, 128, 96, 160, 20, 48, 16, 80, 24};
#define N_KGROUPS 10

/* Whether a level runs here; if not the test is reported as skipped. */
static void need_level(qlm_simd_level level) {
  if (qlm_cpu_detect() < level) {
    print_message("%s: not supported by this CPU, skipped\n", qlm_simd_name(level));
    skip();
  }
}

typedef struct kcase {
  int type;
  int64_t n;
  uint8_t *w;  /* n / g blocks */
  float *x;    /* n activations */
  uint8_t *a;  /* x in the type's vec_dot_type */
  double exact;/* sum of dequantized w times dequantized a, exactly */
  double B;    /* the float rounding magnitude of the top of the file */
  double unit; /* integer mode: every partial sum is a multiple of this */
} kcase;

static void kcase_free(kcase *k) {
  free(k->w);
  free(k->x);
  free(k->a);
}

/* Exact value and rounding magnitude of case k from the integers (blocks decoded here). */
static void kcase_reference(kcase *k) {
  int g = QLM_TYPE_BLOCK(k->type);
  size_t bs = block_bytes(k->type);
  static blockview v;
  k->exact = 0, k->B = 0;
  for (int64_t b = 0; b < k->n / g; b++) {
    view_block(k->type, k->w + (size_t)b * bs, &v);
    if (qlm_type_traits_of(k->type)->vec_dot_type == QLM_TYPE_Q8_S) {
      assert_true(g % QK == 0);
      for (int c = 0; c < g; c += QK) {
        const uint8_t *ab = k->a + (size_t)((b * g + c) / QK) * Q8S;
        double dx = rd_half(ab);
        const int8_t *q = (const int8_t *)(ab + 4);
        int64_t isum = 0, sq = 0, mag = 0;
        for (int j = 0; j < QK; j++) {
          isum += (int64_t)(v.u[c + j] - v.z) * q[j];
          sq += q[j];
          mag += (int64_t)(v.u[c + j] + 128) * abs(q[j]);
        }
        assert_int_equal(sq, rd_i16(ab + 2)); /* the activation's stored sum is exact */
        mag += (int64_t)(abs(v.z) + 128) * llabs(sq);
        k->exact += v.d * dx * (double)isum;
        k->B += fabs(v.d * dx) * (double)mag;
      }
    } else {
      const float *x = (const float *)k->a + b * g;
      for (int i = 0; i < g; i++) {
        k->exact += v.d * (double)(v.u[i] - v.z) * x[i];
        k->B += fabs(v.d * (double)(v.u[i] - v.z) * x[i]);
      }
    }
  }
  /* the same via the library's dequantizers, in double: equal to the integer formula up to
   * one float rounding of each d (u - z) (exact unless |u - z| >= 2^13, only for wild z) */
  float *wf = xmalloc((size_t)k->n * sizeof *wf), *af = xmalloc((size_t)k->n * sizeof *af);
  assert_true(qlm_dequantize(k->type, k->w, wf, k->n));
  int at = qlm_type_traits_of(k->type)->vec_dot_type;
  if (at == QLM_TYPE_F32) memcpy(af, k->a, (size_t)k->n * sizeof *af);
  else assert_true(qlm_dequantize(at, k->a, af, k->n));
  double dd = 0, mag = 0;
  for (int64_t i = 0; i < k->n; i++) dd += (double)wf[i] * af[i], mag += fabs((double)wf[i] * af[i]);
  assert_true(fabs(dd - k->exact) <= 2 * U24 * mag);
  free(wf);
  free(af);
}

static void kcase_act(kcase *k) {
  const qlm_type_traits *tr = qlm_type_traits_of(k->type);
  assert_non_null(tr);
  size_t ab = qlm_type_row_bytes(tr->vec_dot_type, k->n);
  assert_true(ab > 0);
  k->a = xmalloc(ab);
  tr->quantize_act(k->x, k->a, k->n);
}

/* Integer-valued case: d_w in {1, 2} (times 0.5 for the f32 path), d_x in {0.5, 1, 2}, codes
 * uniform (so 0 and 2^b - 1 occur), activation quants mostly small with +-127 in every chunk, and
 * the first chunk all u = 2^b - 1 against q = +127 (where vpmaddubsw on raw 8-bit codes would
 * saturate).  The caller's n keeps every partial sum below 2^24 units (asserted). */
static void kcase_integer(kcase *k, int type, int64_t n, uint64_t *rng) {
  int bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type), asym = QLM_TYPE_FAMILY(type) == QLM_FAMILY_RTN_ASYM;
  size_t bs = block_bytes(type);
  k->type = type, k->n = n;
  k->w = xmalloc((size_t)(n / g) * bs);
  k->x = xmalloc((size_t)n * sizeof *k->x);
  uint8_t u[4096];
  for (int64_t b = 0; b < n / g; b++) {
    for (int i = 0; i < g; i++) u[i] = (uint8_t)(tu_rand_u64(rng) & ((1u << bits) - 1));
    if (b == 0) memset(u, (1 << bits) - 1, g < QK ? (size_t)g : QK);
    float d = b == 0 ? 1.0f : (float)(1 + (tu_rand_u64(rng) & 1));
    int z = asym ? (int)(tu_rand_u64(rng) % (uint64_t)((1 << bits) + 128)) - 64 : 0;
    qlm_rtn_pack(type, d, z, u, k->w + (size_t)b * bs);
  }
  for (int64_t c = 0; c < n; c += QK) {
    int len = n - c < QK ? (int)(n - c) : QK;
    float dx = c == 0 ? 1.0f : ldexpf(1.0f, (int)(tu_rand_u64(rng) % 3) - 1);
    for (int j = 0; j < len; j++) {
      int q = (int)(tu_rand_u64(rng) % 31) - 15;
      if (tu_rand_u64(rng) % 32 == 0) q = tu_rand_u64(rng) & 1 ? 127 : -127;
      if (c == 0) q = 127;
      k->x[c + j] = dx * (float)q;
    }
    k->x[c + tu_rand_u64(rng) % (uint64_t)len] = dx * (tu_rand_u64(rng) & 1 ? 127.0f : -127.0f);
  }
  kcase_act(k);
  kcase_reference(k);
  /* every value involved is a multiple of the smallest scale product: 1 * 0.5 (f32 path: the
   * activation grid 0.5 times codes), and all partial sums are at most B */
  k->unit = 0.5;
  if (!(k->B / k->unit < 16777216.0)) fail_msg("test data too large for exact sums (n=%lld)", (long long)n);
}

/* Real case: Gaussian weights quantized by the method (row of n), activations N(0,1) with
 * outliers; or (wild) random codes, d and z over the whole int16 range. */
static void kcase_real(kcase *k, int type, int64_t n, uint64_t *rng, int wild) {
  int bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type), asym = QLM_TYPE_FAMILY(type) == QLM_FAMILY_RTN_ASYM;
  size_t bs = block_bytes(type);
  k->type = type, k->n = n;
  k->x = xmalloc((size_t)n * sizeof *k->x);
  for (int64_t i = 0; i < n; i++) k->x[i] = tu_rand_normal(rng) * (tu_rand_uniform(rng) < 0.02f ? 30.0f : 1.0f);
  if (wild) {
    k->w = xmalloc((size_t)(n / g) * bs);
    uint8_t u[4096];
    for (int64_t b = 0; b < n / g; b++) {
      for (int i = 0; i < g; i++) u[i] = (uint8_t)(tu_rand_u64(rng) & ((1u << bits) - 1));
      int z = asym ? (int)(tu_rand_u64(rng) % 65536) - 32768 : 0;
      qlm_rtn_pack(type, 1e-3f * tu_rand_normal(rng), z, u, k->w + (size_t)b * bs);
    }
  } else {
    float *W = make_tensor(DIST_T3, n, tu_rand_u64(rng));
    qlm_qtensor q;
    quantize(asym ? &qlm_method_zeropoint : &qlm_method_absmax, W, 1, n, bits, g, &q);
    assert_int_equal(q.type, type);
    k->w = q.data; /* take ownership */
    q.data = NULL;
    qlm_qtensor_free(&q);
    free(W);
  }
  kcase_act(k);
  kcase_reference(k);
  k->unit = 0;
}

/* Tolerance of a vec_dot on case k (top of the file). */
static double kcase_tol(const kcase *k) {
  int g = QLM_TYPE_BLOCK(k->type);
  double K = qlm_type_traits_of(k->type)->vec_dot_type == QLM_TYPE_Q8_S ? (double)(k->n / QK) + 12
                                                                        : (double)g + (double)(k->n / g) + (double)(k->n / 8) + 12;
  return K * U24 * k->B * 1.01;
}

/* All kernels of a level: integer cases bit-identical to the exact sum, real cases within the
 * bound.  fn_for gives the function under test for a type (NULL: the dispatcher's). */
static void check_level(qlm_simd_level level, qlm_vec_dot_t_fn (*fn_for)(int type)) {
  uint64_t rng = 9000 + (uint64_t)level;
  int n_simd = 0;
  for (int asym = 0; asym < 2; asym++)
    for (int bits = 2; bits <= 8; bits++)
      for (int gi = 0; gi < N_KGROUPS; gi++) {
        int g = KGROUPS[gi], type = qlm_rtn_type(asym, bits, g);
        qlm_vec_dot_t_fn fn = fn_for ? fn_for(type) : qlm_vec_dot_t_for(type, level);
        if (!fn) continue; /* a direct SIMD entry without this type: the reference runs instead */
        bool simd = fn != qlm_vec_dot_rtn_ref;
        n_simd += simd;
        /* dispatch: SIMD above scalar for 8 bits with 32 | g and 4 bits with 16 | g; the
         * reference otherwise.  4 bits always take f32 activations, 8 bits Q8_S. */
        if (!fn_for)
          assert_int_equal(simd, level > QLM_SIMD_SCALAR && ((bits == 8 && g % QK == 0) || (bits == 4 && g % 16 == 0)));
        assert_int_equal(qlm_type_traits_of(type)->vec_dot_type,
                         g % QK == 0 && bits != 4 ? QLM_TYPE_Q8_S : QLM_TYPE_F32);
        /* integer data: 1..3 groups (odd chunk counts too) */
        for (int64_t nb = 1; nb <= 3; nb++) {
          int64_t n = g * nb * (g < 64 ? 2 : 1);
          if (n > 12 * QK) continue; /* keeps the exact sums below 2^24 units */
          kcase k;
          kcase_integer(&k, type, n, &rng);
          float r = fn(type, k.w, k.a, k.n);
          if ((double)r != k.exact)
            fail_msg("%s %s: integer data, n=%lld: %.9g, exact %.9g", qlm_simd_name(level), qlm_type_name(type),
                     (long long)k.n, r, k.exact);
          assert_true((double)(float)k.exact == k.exact);
          kcase_free(&k);
        }
        /* real data, method-quantized and wild */
        for (int wild = 0; wild < 2; wild++)
          for (int rep = 0; rep < 4; rep++) {
            /* 1, 7 (odd) groups; many; 133 (a long odd row, g = 32 pairs blocks) */
            if (rep == 3 && g > 64) continue;
            int64_t n = (int64_t)g * (rep == 0 ? 1 : rep == 1 ? 7 : rep == 3 ? 133 : (g >= 96 ? 12 : 36));
            kcase k;
            kcase_real(&k, type, n, &rng, wild);
            float r = fn(type, k.w, k.a, k.n), ref = qlm_vec_dot_rtn_ref(type, k.w, k.a, k.n);
            double tol = kcase_tol(&k);
            if (!(fabs(r - k.exact) <= tol) || !(fabs(ref - k.exact) <= tol))
              fail_msg("%s %s n=%lld wild=%d: %.9g (ref %.9g), exact %.9g, tol %.3g", qlm_simd_name(level),
                       qlm_type_name(type), (long long)n, wild, r, ref, k.exact, tol);
            kcase_free(&k);
          }
      }
  if (level > QLM_SIMD_SCALAR || fn_for) assert_true(n_simd > 0);
}

static void test_kernels_scalar(void **st) {
  (void)st;
  check_level(QLM_SIMD_SCALAR, NULL);
}

static void test_kernels_avx2(void **st) {
  (void)st;
  need_level(QLM_SIMD_AVX2);
  check_level(QLM_SIMD_AVX2, NULL);
}

static void test_kernels_avx512(void **st) {
  (void)st;
  need_level(QLM_SIMD_AVX512);
  print_message("avx512: VNNI %s\n", qlm_cpu_has_avx512_vnni() ? "yes" : "no (vpdpbusd path not run)");
  check_level(QLM_SIMD_AVX512, NULL);
}

static qlm_vec_dot_t_fn avx512_plain(int type) { return qlm_rtn_vec_dot_avx512(type, false); }

/* The AVX-512 kernels without VNNI (maddubs), which the dispatcher does not pick on a VNNI CPU. */
static void test_kernels_avx512_no_vnni(void **st) {
  (void)st;
  need_level(QLM_SIMD_AVX512);
  check_level(QLM_SIMD_AVX512, avx512_plain);
}

/* The SIMD entry points: kernels exactly for 8 bits with 32 | g and 4 bits with 16 | g; types of
 * other families, bit widths and group sizes get none (the reference runs). */
static void test_kernel_entry_points(void **st) {
  (void)st;
  assert_null(qlm_rtn_vec_dot_avx2(QLM_TYPE_Q8_0));
  assert_null(qlm_rtn_vec_dot_avx512(QLM_TYPE_Q4_0, true));
  assert_null(qlm_rtn_vec_dot_avx2(qlm_rtn_type(false, 8, 20)));
  assert_null(qlm_rtn_vec_dot_avx512(qlm_rtn_type(false, 8, 48), true));
  assert_null(qlm_rtn_vec_dot_avx2(qlm_rtn_type(true, 3, 64)));
  assert_null(qlm_rtn_vec_dot_avx2(qlm_rtn_type(true, 4, 40)));
  assert_null(qlm_rtn_vec_dot_avx512(qlm_rtn_type(false, 4, 8), false));
  for (int asym = 0; asym < 2; asym++)
    for (int g = 16; g <= 128; g += 16) {
      int t4 = qlm_rtn_type(asym, 4, g);
      assert_non_null(qlm_rtn_vec_dot_avx2(t4));
      assert_non_null(qlm_rtn_vec_dot_avx512(t4, false));
      assert_non_null(qlm_rtn_vec_dot_avx512(t4, true));
      assert_int_equal(qlm_type_traits_of(t4)->vec_dot_type, QLM_TYPE_F32);
      assert_int_equal(qlm_rtn_vec_dot_avx2(qlm_rtn_type(asym, 8, g)) != NULL, g % QK == 0);
    }
}

/* ------------------------------------------------------------------ matmul */

/* qlm_matmul_ex with RTN weights: T = 1 and 5 (quantized activations) bit-identical to per-row
 * vec_dot at every thread count; T = 40 (dequantized tiles + sgemm) within float rounding of
 * the f32 product of the dequantized weights (n u sum |w x|, sgemm's summation), and with
 * use_blas = 0 bit-identical to the vec_dots again. */
static void test_matmul(void **st) {
  (void)st;
  const int64_t rows = 47, cols = 1920; /* 1920 = 2^7 * 15: groups 32, 64, 128, 96, 48, 20, 16, 80 divide it;
                                          * an odd row count splits unevenly over 2 and 3 threads */
  float *W = make_tensor(DIST_T3, rows * cols, 6000);
  uint64_t rng = 6001;
  const int64_t Ts[] = {1, 5, 40};
  float *X = xmalloc((size_t)(40 * cols) * sizeof *X), *Y = xmalloc((size_t)(40 * rows) * sizeof *Y);
  float *wf = xmalloc((size_t)(rows * cols) * sizeof *wf);
  for (int64_t i = 0; i < 40 * cols; i++) X[i] = tu_rand_normal(&rng) * (tu_rand_uniform(&rng) < 0.01f ? 20.0f : 1.0f);
  qlm_pool *pools[3] = {NULL, qlm_pool_new(2), qlm_pool_new(3)};
  struct { int asym, bits, group; } cases[] = {{0, 8, 32},  {1, 8, 128}, {0, 4, 64}, {1, 4, 32},
                                               {0, 4, 96},  {0, 4, 32},  {1, 4, 48}, {0, 4, 16},
                                               {1, 4, 80},  {1, 3, 48},  {0, 8, 20}, {1, 6, QLM_GROUP_CHANNEL},
                                               {0, 2, 128}, {0, 4, QLM_GROUP_CHANNEL}};
  qlm_simd_level levels[] = {QLM_SIMD_SCALAR, qlm_cpu_detect()};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    qlm_qtensor q;
    quantize(cases[ci].asym ? &qlm_method_zeropoint : &qlm_method_absmax, W, rows, cols, cases[ci].bits,
             cases[ci].group, &q);
    assert_true(qlm_dequantize(q.type, q.data, wf, rows * cols));
    const qlm_type_traits *tr = qlm_type_traits_of(q.type);
    qlm_mat M = {.type = q.type, .rows = rows, .cols = cols, .data = q.data, .row_bytes = q.row_bytes};
    size_t arow = qlm_type_row_bytes(tr->vec_dot_type, cols);
    uint8_t *act = xmalloc(arow * 40);
    for (int64_t i = 0; i < 40; i++) tr->quantize_act(X + i * cols, act + (size_t)i * arow, cols);
    for (int li = 0; li < 2; li++) {
      qlm_vec_dot_t_fn fn = qlm_vec_dot_t_for(q.type, levels[li]);
      for (int ti = 0; ti < 3; ti++)
        for (int p = 0; p < 3; p++)
          for (int blas = 0; blas < 2; blas++) {
            int64_t T = Ts[ti];
            if (T < 40 && !blas) continue; /* same path as with blas */
            memset(Y, 0xFF, (size_t)(T * rows) * sizeof *Y);
            qlm_matmul_ex(&M, X, T, Y, pools[p], levels[li], blas);
            for (int64_t i = 0; i < T; i++)
              for (int64_t r = 0; r < rows; r++) {
                float y = Y[i * rows + r];
                if (T < 40 || !blas) {
                  float want = fn(q.type, (const uint8_t *)q.data + (size_t)r * q.row_bytes, act + (size_t)i * arow, cols);
                  if (memcmp(&y, &want, sizeof y))
                    fail_msg("%s %s T=%lld threads=%d row %lld: %.9g vs vec_dot %.9g", qlm_type_name(q.type),
                             qlm_simd_name(levels[li]), (long long)T, p + 1, (long long)r, y, want);
                } else {
                  double e = 0, mag = 0;
                  for (int64_t c = 0; c < cols; c++) {
                    e += (double)wf[r * cols + c] * X[i * cols + c];
                    mag += fabs((double)wf[r * cols + c] * X[i * cols + c]);
                  }
                  if (!(fabs(y - e) <= 2.0 * cols * U24 * mag))
                    fail_msg("%s T=40 threads=%d row %lld: %.9g vs f32 product %.9g", qlm_type_name(q.type), p + 1,
                             (long long)r, y, e);
                }
              }
          }
    }
    free(act);
    qlm_qtensor_free(&q);
  }
  for (int p = 1; p < 3; p++) qlm_pool_free(pools[p]);
  free(W);
  free(X);
  free(Y);
  free(wf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout_pack_unpack),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_method_bounds),
      cmocka_unit_test(test_effective_group),
      cmocka_unit_test(test_constant_and_zero_groups),
      cmocka_unit_test(test_bits_monotone),
      cmocka_unit_test(test_zeropoint_beats_absmax_on_skewed),
      cmocka_unit_test(test_finer_groups_not_worse),
      cmocka_unit_test(test_kernel_entry_points),
      cmocka_unit_test(test_kernels_scalar),
      cmocka_unit_test(test_kernels_avx2),
      cmocka_unit_test(test_kernels_avx512),
      cmocka_unit_test(test_kernels_avx512_no_vnni),
      cmocka_unit_test(test_matmul),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
