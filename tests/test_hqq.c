/* test_hqq.c — HQQ (quant/hqq.c, kernels/hqq.c): block layout, the solver against the real hqq
 * package (tests/data/hqq/hqq_ref.bin, made by tools/hqq_reference.py), its early-stopped error
 * sequence, quality against RTN zero-point at the same grid, 8 bits against RTN, identical
 * results at every SIMD level and thread count, dot products and matmul at every level, errors,
 * and stories260K end to end through qlm_quantize. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/hqq.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "model/model.h"
#include "quant/hqq.h"
#include "quant/method.h"
#include "quant/quantize.h"

#define GEN "tools/hqq_reference.py"
static const qlm_simd_level LEVELS[] = {QLM_SIMD_SCALAR, QLM_SIMD_AVX2, QLM_SIMD_AVX512};

static float *gaussian(int64_t n, float sd, uint64_t seed) {
  float *w = malloc((size_t)n * sizeof *w);
  for (int64_t i = 0; i < n; i++) w[i] = sd * tu_rand_normal(&seed);
  return w;
}

/* Heavy tails: a normal divided by sqrt(chi2_3 / 3), i.e. Student t with 3 degrees of freedom. */
static float *heavy(int64_t n, float sd, uint64_t seed) {
  float *w = malloc((size_t)n * sizeof *w);
  for (int64_t i = 0; i < n; i++) {
    float a = tu_rand_normal(&seed), b = tu_rand_normal(&seed), c = tu_rand_normal(&seed);
    w[i] = sd * tu_rand_normal(&seed) / sqrtf((a * a + b * b + c * c) / 3.0f + 1e-6f);
  }
  return w;
}

/* ---- layout: pack/unpack round trip at every bits and odd groups, and the documented bytes */
static void test_layout(void **state) {
  (void)state;
  uint64_t seed = 7;
  const int groups[] = {1, 7, 16, 32, 48, 64, 100, 128};
  for (int bits = 1; bits <= 8; bits++)
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
      int g = groups[gi], type = qlm_hqq_type(bits, g);
      assert_true(type > 0);
      assert_int_equal(qlm_hqq_block_bytes(type), 4 + (size_t)(g * bits + 7) / 8);
      assert_int_equal(qlm_type_row_bytes(type, 3 * g), 3 * qlm_hqq_block_bytes(type));
      uint8_t u[128], back[128], blk[4 + 128];
      for (int i = 0; i < g; i++) u[i] = (uint8_t)(tu_rand_u64(&seed) & ((1u << bits) - 1));
      memset(blk, 0xAA, sizeof blk);
      qlm_hqq_pack(type, 0.0123f, 6.4f, u, blk);
      float s, z;
      qlm_hqq_unpack(type, blk, &s, &z, back);
      assert_memory_equal(u, back, (size_t)g);
      assert_true(s == qlm_f16_to_f32(qlm_f32_to_f16(0.0123f)) && z == qlm_f16_to_f32(qlm_f32_to_f16(6.4f)));
      /* the documented code bytes, built independently here */
      uint8_t want[128] = {0};
      for (int i = 0; i < g; i++) {
        if (bits == 8) want[i] = u[i];
        else if (bits == 4 && g % 32 == 0) want[i / 32 * 16 + i % 16] |= (uint8_t)(u[i] << (i % 32 < 16 ? 0 : 4));
        else
          for (int k = 0; k < bits; k++)
            if (u[i] >> k & 1) want[(i * bits + k) / 8] |= (uint8_t)(1u << ((i * bits + k) % 8));
      }
      assert_memory_equal(blk + 4, want, (size_t)(g * bits + 7) / 8);
      /* the dequantizer: (u - z) * s in float */
      float deq[128];
      assert_true(qlm_dequantize(type, blk, deq, g));
      for (int i = 0; i < g; i++) assert_true(deq[i] == ((float)u[i] - z) * s);
    }
  assert_int_equal(qlm_hqq_type(0, 64), -1);
  assert_int_equal(qlm_hqq_type(9, 64), -1);
  assert_string_equal(qlm_type_name(qlm_hqq_type(4, 64)), "hqq4_g64");
  assert_true(fabs(qlm_type_bpw(qlm_hqq_type(4, 64)) - 4.5) < 1e-12);
}

/* ---- against the real hqq package */
/* qlm runs the same algorithm in float32 on the CPU as hqq does, but sums each group's mean in
 * another order: a zero differs by a few ulps of the sum of 64 terms of size <= 2^b per
 * iteration (~64 * 2^-24 * 2^b), and such differences can move a code whose W*si + z lies
 * within them of a .5 boundary, which feeds back into the next zero.  Bounds: the iteration
 * count and the scales exactly; the zeros within 1e-3 code steps; at most 0.2% of the codes
 * different, each by one step; the per-iteration errors within 1e-4 relative. */
static void test_against_hqq(void **state) {
  (void)state;
  size_t n;
  uint8_t *buf = tu_read_vectors("hqq/hqq_ref.bin", "QLMHQQ01", GEN, &n);
  tu_rd r = {buf + 8, buf + n};
  uint32_t n_mats = tu_take_u32(&r);
  assert_true(n_mats >= 1 && n_mats <= 8);
  const float *mats[8];
  uint32_t rows[8], cols[8];
  for (uint32_t m = 0; m < n_mats; m++) {
    rows[m] = tu_take_u32(&r), cols[m] = tu_take_u32(&r);
    mats[m] = tu_take(&r, (size_t)rows[m] * cols[m] * 4);
  }
  uint32_t n_cases = tu_take_u32(&r);
  assert_true(n_cases >= 4);
  for (uint32_t c = 0; c < n_cases; c++) {
    uint32_t mi = tu_take_u32(&r), bits = tu_take_u32(&r), group = tu_take_u32(&r), rz = tu_take_u32(&r), nit = tu_take_u32(&r);
    assert_true(mi < n_mats && nit >= 1 && nit <= 20);
    int64_t N = (int64_t)rows[mi] * cols[mi], ng = N / group;
    const float *rerr = tu_take(&r, 4 * nit), *rscale = tu_take(&r, (size_t)ng * 4), *rzero = tu_take(&r, (size_t)ng * 4);
    const uint8_t *rcodes = tu_take(&r, (size_t)N);
    float W[65536];
    assert_true(N <= 65536);
    memcpy(W, mats[mi], (size_t)N * 4);
    qlm_hqq_params p;
    qlm_hqq_params_default(&p, (int)bits, (int)group);
    assert_int_equal(p.round_zero, rz != 0);
    float *si = malloc((size_t)ng * 4), *z = malloc((size_t)ng * 4);
    uint8_t *u = malloc((size_t)N);
    double errs[20];
    int it;
    qlm_error err = {0};
    if (qlm_hqq_optimize(W, ng, &p, QLM_SIMD_SCALAR, NULL, si, z, u, errs, &it, &err)) fail_msg("%s", err.msg);
    int diff = 0;
    double dz = 0;
    for (int64_t k = 0; k < ng; k++) {
      float s = 1.0f / si[k];
      if (s != rscale[k]) fail_msg("case %u group %lld: scale %.9g, hqq %.9g", c, (long long)k, (double)s, (double)rscale[k]);
      dz = fmax(dz, fabs((double)z[k] - rzero[k]));
    }
    for (int64_t i = 0; i < N; i++)
      if (u[i] != rcodes[i]) {
        diff++;
        assert_true(abs((int)u[i] - (int)rcodes[i]) == 1);
      }
    double de = 0;
    for (int i = 0; i < it && i < (int)nit; i++) de = fmax(de, fabs(errs[i] - rerr[i]) / rerr[i]);
    print_message("matrix %u bits %u: %d iterations (hqq %u), max |dz| %.3g, codes differing %d/%lld, max rel "
                  "error difference %.3g\n",
                  mi, bits, it, nit, dz, diff, (long long)N, de);
    assert_int_equal(it, (int)nit);
    assert_true(dz <= 1e-3);
    assert_true(diff <= N / 500);
    assert_true(de <= 1e-4);
    free(si), free(z), free(u);
  }
  assert_true(r.p == r.end);
  free(buf);
}

/* ---- the early-stopped error sequence: strictly decreasing while the solver runs; the last
 * iteration is the first that did not decrease (or the iteration limit) */
static void check_sequence(const float *W, int64_t ng, int bits, float kappa) {
  qlm_hqq_params p;
  qlm_hqq_params_default(&p, bits, 64);
  p.kappa = kappa;
  double errs[20];
  int it;
  qlm_error err = {0};
  float *si = malloc((size_t)ng * 4), *z = malloc((size_t)ng * 4);
  if (qlm_hqq_optimize(W, ng, &p, QLM_SIMD_AVX512, NULL, si, z, NULL, errs, &it, &err)) fail_msg("%s", err.msg);
  assert_true(it >= 2 && it <= 20);
  for (int i = 1; i < it - 1; i++) assert_true(errs[i] < errs[i - 1]);
  if (it < 20) assert_true(errs[it - 1] >= errs[it - 2]);
  /* iteration 0 measures the min-max start: the solver improved on it */
  assert_true(errs[it - 2] < errs[0] || it == 2);
  free(si), free(z);
}

static void test_error_sequence(void **state) {
  (void)state;
  const int64_t N = 64 * 1024;
  float *g = gaussian(N, 0.02f, 11), *h = heavy(N, 1.0f, 12);
  for (int bits = 2; bits <= 4; bits++) {
    check_sequence(g, N / 64, bits, 1.0f);
    check_sequence(h, N / 64, bits, 1.0f);
    check_sequence(h, N / 64, bits, 1.01f); /* hqq 1.0's beta schedule */
  }
  free(g), free(h);
}

/* ---- quality: mean |W - W_r| (the solver's measure) no worse than RTN zero-point (min-max,
 * integer zero) with the same 2^b levels and group; and mean squared error printed */
static void errors_of(const qlm_quant_method *m, const float *W, int64_t rows, int64_t cols, int bits, double *l1,
                      double *l2) {
  qlm_quant_opts o = {.bits = bits, .group = 64, .asym = true};
  if (m->defaults) m->defaults(&o);
  o.bits = bits, o.group = 64;
  qlm_qtensor q = {0};
  qlm_error err = {0};
  if (m->quantize(W, rows, cols, NULL, &o, &q, &err)) fail_msg("%s: %s", m->name, err.msg);
  float *d = malloc((size_t)(rows * cols) * 4);
  assert_true(qlm_dequantize(q.type, q.data, d, rows * cols));
  *l1 = *l2 = 0;
  for (int64_t i = 0; i < rows * cols; i++) {
    double e = (double)d[i] - W[i];
    *l1 += fabs(e), *l2 += e * e;
  }
  *l1 /= (double)(rows * cols), *l2 /= (double)(rows * cols);
  free(d);
  qlm_qtensor_free(&q);
}

static void test_quality_vs_rtn(void **state) {
  (void)state;
  const int64_t R = 96, C = 512;
  for (int kind = 0; kind < 2; kind++) {
    float *W = kind ? heavy(R * C, 0.02f, 21) : gaussian(R * C, 0.02f, 22);
    for (int bits = 2; bits <= 5; bits++) {
      double h1, h2, r1, r2;
      errors_of(&qlm_method_hqq, W, R, C, bits, &h1, &h2);
      errors_of(&qlm_method_zeropoint, W, R, C, bits, &r1, &r2);
      print_message("%-8s bits %d: mean|err| hqq %.4g rtn %.4g (%.1f%%), mse hqq %.4g rtn %.4g\n",
                    kind ? "t3" : "gaussian", bits, h1, r1, 100.0 * (h1 / r1 - 1), h2, r2);
      assert_true(h1 <= r1);
    }
    free(W);
  }
}

/* ---- 8 bits: the zero moves by less than a step, so every weight stays within one step of RTN */
static void test_8bit_vs_rtn(void **state) {
  (void)state;
  const int64_t R = 16, C = 256, N = R * C;
  float *W = gaussian(N, 0.05f, 31);
  qlm_quant_opts o = {.bits = 8, .group = 64, .asym = true};
  qlm_qtensor qh = {0}, qr = {0};
  qlm_error err = {0};
  if (qlm_method_hqq.quantize(W, R, C, NULL, &o, &qh, &err)) fail_msg("%s", err.msg);
  if (qlm_method_zeropoint.quantize(W, R, C, NULL, &o, &qr, &err)) fail_msg("%s", err.msg);
  float *dh = malloc(N * 4), *dr = malloc(N * 4);
  assert_true(qlm_dequantize(qh.type, qh.data, dh, N) && qlm_dequantize(qr.type, qr.data, dr, N));
  size_t bs = qlm_hqq_block_bytes(qh.type);
  int same = 0;
  for (int64_t i = 0; i < N; i++) {
    const uint8_t *blk = (const uint8_t *)qh.data + (i / 64) * bs;
    float s = qlm_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
    assert_true(fabsf(dh[i] - dr[i]) <= 1.01f * s);
    same += dh[i] == dr[i];
  }
  print_message("8 bits: %d/%lld weights equal to RTN's, all within one step\n", same, (long long)N);
  free(dh), free(dr), free(W);
  qlm_qtensor_free(&qh), qlm_qtensor_free(&qr);
}

/* ---- the solver gives bit-identical results at every SIMD level and thread count */
static void test_solver_deterministic(void **state) {
  (void)state;
  const int64_t N = 300 * 64 + 0; /* not a whole number of slabs */
  float *W = heavy(N, 0.5f, 41);
  for (int bits = 1; bits <= 8; bits += 3) {
    qlm_hqq_params p;
    qlm_hqq_params_default(&p, bits, 48);
    int64_t ng = N / 48;
    float *si0 = malloc(ng * 4), *z0 = malloc(ng * 4), *si = malloc(ng * 4), *z = malloc(ng * 4);
    uint8_t *u0 = malloc(N), *u = malloc(N);
    double e0[20], e[20];
    int it0, it;
    qlm_error err = {0};
    if (qlm_hqq_optimize(W, ng, &p, QLM_SIMD_SCALAR, NULL, si0, z0, u0, e0, &it0, &err)) fail_msg("%s", err.msg);
    for (int l = 0; l < 3; l++)
      for (int t = 1; t <= 3; t++) {
        qlm_pool *pool = qlm_pool_new(t);
        if (qlm_hqq_optimize(W, ng, &p, LEVELS[l], pool, si, z, u, e, &it, &err)) fail_msg("%s", err.msg);
        qlm_pool_free(pool);
        assert_int_equal(it, it0);
        assert_memory_equal(si, si0, ng * 4);
        assert_memory_equal(z, z0, ng * 4);
        assert_memory_equal(u, u0, N);
        assert_memory_equal(e, e0, sizeof(double) * (size_t)it);
      }
    free(si0), free(z0), free(si), free(z), free(u0), free(u);
  }
  free(W);
}

/* ---- dot products and matmul at every level, T = 1, 5, 40, 1..3 threads, against the exact
 * (double) product of the dequantized weights: every summation order of n products is within
 * gamma_n * sum|w_i x_i| of it (gamma_n = n u / (1 - n u), u = 2^-24); FMA only removes roundings */
static void test_matmul_levels(void **state) {
  (void)state;
  const struct {
    int bits, g, cols;
  } cases[] = {{4, 64, 384}, {4, 32, 96}, {4, 128, 256}, {2, 64, 384}, {2, 16, 80}, {8, 64, 192}, {8, 16, 48},
               {3, 64, 192}, {4, 48, 96},  {1, 64, 128}};
  const int rows = 37;
  qlm_pool *pools[3] = {qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    const int cols = cases[ci].cols;
    float *Wf = heavy((int64_t)rows * cols, 0.05f, 50 + ci);
    qlm_hqq_params p;
    qlm_hqq_params_default(&p, cases[ci].bits, cases[ci].g);
    qlm_qtensor q = {0};
    qlm_error err = {0};
    if (qlm_hqq_quantize(Wf, rows, cols, &p, 1, &q, &err)) fail_msg("%s", err.msg);
    assert_int_equal(q.type, qlm_hqq_type(cases[ci].bits, cases[ci].g));
    float *D = malloc((size_t)rows * cols * 4);
    assert_true(qlm_dequantize(q.type, q.data, D, (int64_t)rows * cols));
    qlm_mat W = {.type = q.type, .rows = rows, .cols = cols, .data = q.data, .row_bytes = q.row_bytes};
    const int Ts[] = {1, 5, 40};
    for (int ti = 0; ti < 3; ti++) {
      int T = Ts[ti];
      float *X = gaussian((int64_t)T * cols, 1.0f, 60 + ti), *Y = malloc((size_t)T * rows * 4);
      const double gamma = cols * 0x1p-24 / (1 - cols * 0x1p-24);
      for (int l = 0; l < 3; l++)
        for (int t = 0; t < 3; t++) {
          qlm_matmul_ex(&W, X, T, Y, pools[t], LEVELS[l], 1);
          for (int i = 0; i < T; i++)
            for (int r = 0; r < rows; r++) {
              double exact = 0, mag = 0;
              for (int c = 0; c < cols; c++) {
                exact += (double)D[r * cols + c] * X[i * cols + c];
                mag += fabs((double)D[r * cols + c] * X[i * cols + c]);
              }
              double d = fabs(Y[i * rows + r] - exact), bound = 1.01 * gamma * mag + 1e-30;
              if (d > bound)
                fail_msg("hqq%d_g%d T=%d level %d threads %d: y[%d][%d] = %.9g, exact %.9g (bound %.3g)", cases[ci].bits,
                         cases[ci].g, T, l, t + 1, i, r, (double)Y[i * rows + r], exact, bound);
            }
        }
      /* the scalar reference dot is the row-wise sum in index order */
      for (int r = 0; r < rows; r++) {
        float want = 0;
        for (int c = 0; c < cols; c++) want += D[r * cols + c] * X[c];
        assert_true(qlm_vec_dot_hqq_ref(q.type, (const uint8_t *)q.data + r * q.row_bytes, X, cols) == want);
      }
      free(X), free(Y);
    }
    free(D), free(Wf);
    qlm_qtensor_free(&q);
  }
  for (int t = 0; t < 3; t++) qlm_pool_free(pools[t]);
}

/* ---- options, shapes and hostile inputs */
static void test_errors(void **state) {
  (void)state;
  float W[2 * 96];
  for (int i = 0; i < 2 * 96; i++) W[i] = (float)(i % 17) * 0.01f - 0.05f;
  qlm_hqq_params p;
  qlm_hqq_params_default(&p, 4, 64);
  qlm_qtensor q = {0};
  qlm_error err = {0};
  p.axis = 0;
  assert_int_equal(qlm_hqq_quantize(W, 2, 96, &p, 1, &q, &err), QLM_EUNSUPPORTED);
  assert_non_null(strstr(err.msg, "axis=0"));
  p.axis = 1, p.bits = 9;
  assert_int_equal(qlm_hqq_quantize(W, 2, 96, &p, 1, &q, &err), QLM_EUSAGE);
  p.bits = 4, p.lp_norm = 1.5f;
  assert_int_equal(qlm_hqq_quantize(W, 2, 96, &p, 1, &q, &err), QLM_EUSAGE);
  p.lp_norm = 0.7f;
  /* 64 does not divide 96: the largest divisor below (48) */
  assert_int_equal(qlm_hqq_quantize(W, 2, 96, &p, 1, &q, &err), QLM_OK);
  assert_int_equal(q.type, qlm_hqq_type(4, 48));
  assert_non_null(strstr(q.note, "used 48"));
  assert_string_equal(q.desc, "hqq bits=4 group=48");
  assert_true(fabs(q.bpw - (4.0 + 32.0 / 48)) < 1e-9);
  qlm_qtensor_free(&q);
  /* method interface: defaults 4 bits group 64, group=tensor refused */
  qlm_quant_opts o = {0};
  qlm_method_hqq.defaults(&o);
  assert_int_equal(o.bits, 4);
  assert_int_equal(o.group, 64);
  o.group = QLM_GROUP_TENSOR;
  assert_int_equal(qlm_method_hqq.check(&o, 2, 96, &err), QLM_EUNSUPPORTED);
  /* non-finite weights */
  W[70] = NAN;
  assert_int_equal(qlm_hqq_quantize(W, 2, 96, &p, 2, &q, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "not finite"));
  W[70] = 1e9f; /* a zero far beyond a half */
  int rc = qlm_hqq_quantize(W, 2, 96, &p, 2, &q, &err);
  assert_int_equal(rc, QLM_EUNSUPPORTED);
  assert_non_null(strstr(err.msg, "does not fit a half"));
  assert_null(q.data);
  /* constant groups: scale 1 (hqq's rule for |max - min| <= 1e-4), exact reconstruction */
  float C[64];
  for (int i = 0; i < 64; i++) C[i] = 0.25f;
  assert_int_equal(qlm_hqq_quantize(C, 1, 64, &p, 1, &q, &err), QLM_OK);
  float d[64];
  assert_true(qlm_dequantize(q.type, q.data, d, 64));
  for (int i = 0; i < 64; i++) assert_true(d[i] == 0.25f);
  qlm_qtensor_free(&q);
}

/* ---- stories260K end to end: quantize with hqq through the driver, load, run greedy */
static void test_stories_end_to_end(void **state) {
  (void)state;
  char *sp = tu_shared("models/stories260K/stories260K.gguf");
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_source_open(sp, NULL, &src, &err)) fail_msg("%s", err.msg);
  enum { N = 48 };
  int32_t ref[N], got[N];
  tu_greedy(src, N, NULL, ref, NULL);
  char *dir = tu_tmpdir();
  const int bits[] = {8, 4};
  for (int bi = 0; bi < 2; bi++) {
    char out[512];
    snprintf(out, sizeof out, "%s/hqq%d.gguf", dir, bits[bi]);
    qlm_quant_params p = {.method = &qlm_method_hqq, .opts = {.bits = bits[bi], .group = 64},
                          .embd_type = QLM_TYPE_F32, .n_threads = 2};
    qlm_quant_summary s;
    if (qlm_quantize(src, out, &p, &s, &err)) fail_msg("%s", err.msg);
    assert_true(s.n_quantized > 0);
    qlm_source *q = NULL;
    if (qlm_source_open(out, NULL, &q, &err)) fail_msg("%s", err.msg);
    tu_greedy(q, N, NULL, got, NULL);
    int same = tu_common_prefix(ref, got, N);
    print_message("hqq %d-bit g64 stories260K: %d tensors quantized, greedy prefix equal to f32 %d/%d\n", bits[bi],
                  s.n_quantized, same, N);
    if (bits[bi] == 8) assert_true(same >= N / 2);
    qlm_source_close(q);
    unlink(out);
  }
  rmdir(dir);
  free(dir);
  free(sp);
  qlm_source_close(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),         cmocka_unit_test(test_against_hqq),
      cmocka_unit_test(test_error_sequence), cmocka_unit_test(test_quality_vs_rtn),
      cmocka_unit_test(test_8bit_vs_rtn),    cmocka_unit_test(test_solver_deterministic),
      cmocka_unit_test(test_matmul_levels),  cmocka_unit_test(test_errors),
      cmocka_unit_test(test_stories_end_to_end),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
