/* test_bnb4.c — bitsandbytes NF4/FP4: tables, quantization and double quantization against the
 * real bitsandbytes (tests/data/bnb4, made by tools/gen_bnb_vectors.py), bits per weight, the
 * expansion of double-quantized tensors, dot products at every SIMD level and the matmul. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "kernels/bnb4.h"
#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/qdot.h"
#include "kernels/threadpool.h"
#include "quant/bnb4.h"
#include "quant/method.h"

#define GEN "tools/gen_bnb_vectors.py"

/* ---- Tables: the published values (docs QUANT_FACTS section 2, bnb's get_4bit_type). */
static void test_code_tables(void **state) {
  (void)state;
  static const double nf4[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                                 -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                                 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                                 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};
  static const double fp4_pat[8] = {0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0};
  for (int i = 0; i < 16; i++) {
    assert_true(qlm_bnb4_nf4_code[i] == (float)nf4[i]);
    float f = (float)fp4_pat[i & 7] / 12.0f;
    assert_true(qlm_bnb4_fp4_code[i] == (i & 8 ? -f : f));
  }
  assert_ptr_equal(qlm_bnb4_code(QLM_TYPE_NF4_DQ), qlm_bnb4_nf4_code);
  assert_ptr_equal(qlm_bnb4_code(QLM_TYPE_FP4), qlm_bnb4_fp4_code);
  assert_null(qlm_bnb4_code(QLM_TYPE_Q4_0));

  size_t n;
  uint8_t *v = tu_read_vectors("bnb4/tables.bin", "QLMBNBT1", GEN, &n);
  assert_int_equal(n, 8 + 4 * (16 + 16 + 256));
  assert_memory_equal(v + 8, qlm_bnb4_nf4_code, 64);
  assert_memory_equal(v + 8 + 64, qlm_bnb4_fp4_code, 64);
  /* the dynamic map, built in C from the published algorithm, bit-equal to bnb's */
  const float *map = qlm_bnb_dynamic_map();
  for (int i = 0; i < 256; i++) {
    float want;
    memcpy(&want, v + 8 + 128 + 4 * i, 4);
    if (memcmp(&want, &map[i], 4)) fail_msg("dynamic map [%d] = %.9g, bnb %.9g", i, (double)map[i], (double)want);
  }
  assert_true(map[255] == 1.0f && map[0] < -0.99f && map[0] > -1.0f);
  free(v);
}

/* ---- Fixtures. */
/* One quant type's record of a case file (see the generator's docstring). */
typedef struct bnb_rec {
  const uint8_t *packed;
  const float *absmax, *deq;
  float offset;
  const uint8_t *aq_native, *aq_default;
  const float *absmax2, *absmax_dq, *deq_dq;
} bnb_rec;

static float *copy_f(const void *p, size_t n) {
  float *f = malloc(n * sizeof *f);
  memcpy(f, p, n * sizeof *f);
  return f;
}

static int ulp_diff(float a, float b) {
  int32_t x, y;
  memcpy(&x, &a, 4), memcpy(&y, &b, 4);
  if ((x < 0) != (y < 0)) return a == b ? 0 : 1 << 30;
  return abs(x - y);
}

static void check_case_type(const char *name, int type, const float *x, int64_t rows, int64_t cols, bool has_deq,
                            const bnb_rec *R) {
  const qlm_quant_method *m = type == QLM_TYPE_NF4 ? &qlm_method_nf4 : &qlm_method_fp4;
  int dq_type = type == QLM_TYPE_NF4 ? QLM_TYPE_NF4_DQ : QLM_TYPE_FP4_DQ;
  int64_t N = rows * cols, nb = N / 64, n2 = (nb + 255) / 256;
  qlm_quant_opts o = {0};
  m->defaults(&o);
  qlm_error err = {0};
  qlm_qtensor q = {0};
  assert_int_equal(m->check(&o, rows, cols, &err), QLM_OK);
  assert_int_equal(m->quantize(x, rows, cols, NULL, &o, &q, &err), QLM_OK);
  assert_int_equal(q.type, type);
  /* codes and absmax equal bnb's exactly */
  const uint8_t *blk = q.data;
  for (int64_t b = 0; b < nb; b++, blk += QLM_BNB4_BLOCK_BYTES) {
    if (memcmp(blk, &R->absmax[b], 4)) fail_msg("%s %s block %lld: absmax differs", name, m->name, (long long)b);
    for (int i = 0; i < 64; i++) {
      int64_t e = b * 64 + i;
      int want = e % 2 ? R->packed[e / 2] & 0xF : R->packed[e / 2] >> 4;
      int got = i < 32 ? blk[4 + i] & 0xF : blk[4 + i - 32] >> 4;
      if (got != want)
        fail_msg("%s %s weight %lld (x = %.9g): code %d, bnb %d", name, m->name, (long long)e, (double)x[e], got, want);
    }
  }
  /* dequantized values equal bnb's exactly: both are the one float product absmax * code */
  float *W = malloc((size_t)N * sizeof *W);
  assert_int_equal(qlm_bnb4_dequantize_qtensor(&q, W, &err), QLM_OK);
  if (has_deq)
    for (int64_t e = 0; e < N; e++)
      if (memcmp(&W[e], &R->deq[e], 4))
        fail_msg("%s %s: deq[%lld] = %.9g, bnb %.9g", name, m->name, (long long)e, (double)W[e], (double)R->deq[e]);
  uint8_t *plain = malloc((size_t)nb * 36);
  memcpy(plain, q.data, (size_t)nb * 36);
  qlm_qtensor_free(&q);

  /* double quantization */
  o.double_quant = true;
  assert_int_equal(m->quantize(x, rows, cols, NULL, &o, &q, &err), QLM_OK);
  assert_int_equal(q.type, dq_type);
  assert_int_equal(q.n_aux, 3);
  assert_string_equal(q.aux[0].suffix, ".absmax_q");
  assert_string_equal(q.aux[1].suffix, ".absmax2");
  assert_string_equal(q.aux[2].suffix, ".absmax_offset");
  assert_int_equal(q.aux[0].n, nb);
  assert_int_equal(q.aux[1].n, n2);
  char desc[64];
  snprintf(desc, sizeof desc, "%s block=64 dq=1", m->name);
  assert_string_equal(q.desc, desc);
  for (int64_t b = 0; b < nb; b++) /* the code bytes are the non-DQ blocks' */
    assert_memory_equal((uint8_t *)q.data + b * 32, plain + b * 36 + 4, 32);
  free(plain);
  float offset;
  memcpy(&offset, q.aux[2].data, 4);
  /* torch sums floats in its own order; ours is the exact mean rounded once */
  assert_true(ulp_diff(offset, R->offset) <= 1);
  /* with bnb's offset, our codes and absmax2 equal bnb's default-backend ones exactly */
  float *v = malloc((size_t)nb * sizeof *v), *a2 = malloc((size_t)n2 * sizeof *a2);
  uint8_t *codes = malloc((size_t)nb);
  for (int64_t b = 0; b < nb; b++) v[b] = R->absmax[b] - R->offset;
  qlm_bnb_quantize_blockwise8(v, nb, 256, codes, a2);
  assert_memory_equal(a2, R->absmax2, (size_t)n2 * 4);
  if (ulp_diff(offset, R->offset) == 0) {
    assert_memory_equal(q.aux[0].data, codes, (size_t)nb);
    assert_memory_equal(q.aux[1].data, R->absmax2, (size_t)n2 * 4);
  }
  const float *map = qlm_bnb_dynamic_map();
  int n_native_diff = 0;
  for (int64_t b = 0; b < nb; b++) {
    if (codes[b] != R->aq_default[b])
      fail_msg("%s %s: absmax code %lld = %d, bnb default backend %d", name, m->name, (long long)b, codes[b],
               R->aq_default[b]);
    /* bnb's native CPU search is not always nearest: ours is never farther */
    float am2 = R->absmax2[b / 256];
    double ours = fabs((double)(map[codes[b]] * am2) - (double)v[b]);
    double nat = fabs((double)(map[R->aq_native[b]] * am2) - (double)v[b]);
    assert_true(ours <= nat);
    n_native_diff += codes[b] != R->aq_native[b];
  }
  if (n_native_diff) printf("  %s %s: %d of %lld absmax codes differ from bnb's native CPU search (ours nearer)\n",
                            name, m->name, n_native_diff, (long long)nb);
  /* our own double-quantized tensor dequantizes through its companions */
  assert_int_equal(qlm_bnb4_dequantize_qtensor(&q, W, &err), QLM_OK);
  const float *code = qlm_bnb4_code(type), *qa2 = q.aux[1].data;
  for (int64_t e = 0; e < N; e++) {
    int64_t b = e / 64;
    float am = map[((uint8_t *)q.aux[0].data)[b]] * qa2[b / 256];
    am += offset;
    const uint8_t *cb = (const uint8_t *)q.data + b * 32;
    int i = (int)(e % 64), u = i < 32 ? cb[i] & 0xF : cb[i - 32] >> 4;
    float want = am * code[u];
    if (memcmp(&W[e], &want, 4)) fail_msg("%s %s dq: own deq[%lld] differs", name, m->name, (long long)e);
  }
  /* expanding bnb's own (native) double-quantized state reproduces bnb's absmax and weights */
  void *blocks = NULL;
  int bt = 0;
  assert_int_equal(qlm_bnb4_expand_dq(dq_type, q.data, rows, cols, R->aq_native, nb, R->absmax2, n2, R->offset,
                                      &blocks, &bt, &err),
                   QLM_OK);
  assert_int_equal(bt, type);
  for (int64_t b = 0; b < nb; b++)
    if (memcmp((uint8_t *)blocks + b * 36, &R->absmax_dq[b], 4))
      fail_msg("%s %s: expanded absmax %lld differs from bnb's", name, m->name, (long long)b);
  if (has_deq) {
    assert_true(qlm_dequantize(bt, blocks, W, N));
    for (int64_t e = 0; e < N; e++)
      if (memcmp(&W[e], &R->deq_dq[e], 4))
        fail_msg("%s %s dq: deq[%lld] = %.9g, bnb %.9g", name, m->name, (long long)e, (double)W[e],
                 (double)R->deq_dq[e]);
  }
  free(blocks);
  free(v), free(a2), free(codes), free(W);
  qlm_qtensor_free(&q);
}

static void check_case(const char *file) {
  size_t n;
  uint8_t *buf = tu_read_vectors(file, "QLMBNB41", GEN, &n);
  tu_rd r = {buf + 8, buf + n};
  uint32_t hdr[3];
  memcpy(hdr, tu_take(&r, 12), 12);
  int64_t rows = hdr[0], cols = hdr[1], N = rows * cols, nb = N / 64, n2 = (nb + 255) / 256;
  bool has_deq = hdr[2] != 0;
  float *x = copy_f(tu_take(&r, (size_t)N * 4), (size_t)N);
  for (int t = 0; t < 2; t++) {
    bnb_rec R = {0};
    R.packed = tu_take(&r, (size_t)N / 2);
    R.absmax = copy_f(tu_take(&r, (size_t)nb * 4), (size_t)nb);
    if (has_deq) R.deq = copy_f(tu_take(&r, (size_t)N * 4), (size_t)N);
    memcpy(&R.offset, tu_take(&r, 4), 4);
    R.aq_native = tu_take(&r, (size_t)nb);
    R.aq_default = tu_take(&r, (size_t)nb);
    R.absmax2 = copy_f(tu_take(&r, (size_t)n2 * 4), (size_t)n2);
    R.absmax_dq = copy_f(tu_take(&r, (size_t)nb * 4), (size_t)nb);
    if (has_deq) R.deq_dq = copy_f(tu_take(&r, (size_t)N * 4), (size_t)N);
    check_case_type(file, t == 0 ? QLM_TYPE_NF4 : QLM_TYPE_FP4, x, rows, cols, has_deq, &R);
    free((void *)R.absmax), free((void *)R.deq), free((void *)R.absmax2), free((void *)R.absmax_dq);
    free((void *)R.deq_dq);
  }
  assert_true(r.p == r.end);
  free(x);
  free(buf);
}

static void test_bnb_gauss(void **state) { (void)state, check_case("bnb4/gauss.bin"); }
static void test_bnb_heavy_tailed(void **state) { (void)state, check_case("bnb4/heavy.bin"); }
static void test_bnb_edge_cases(void **state) { (void)state, check_case("bnb4/edge.bin"); }
static void test_bnb_dq_two_groups(void **state) { (void)state, check_case("bnb4/dq_groups.bin"); }

/* ---- Bits per weight. */
static double bpw_of(const qlm_quant_method *m, int64_t rows, int64_t cols, bool dq) {
  uint64_t rng = 11;
  float *x = malloc((size_t)(rows * cols) * sizeof *x);
  for (int64_t i = 0; i < rows * cols; i++) x[i] = tu_rand_normal(&rng);
  qlm_quant_opts o = {.double_quant = dq};
  m->defaults(&o);
  qlm_qtensor q = {0};
  qlm_error err = {0};
  assert_int_equal(m->quantize(x, rows, cols, NULL, &o, &q, &err), QLM_OK);
  double b = q.bpw;
  qlm_qtensor_free(&q);
  free(x);
  return b;
}

static void test_bpw(void **state) {
  (void)state;
  /* 64 x 256 = 16384 weights = 256 blocks: exactly one absmax2 group */
  assert_true(bpw_of(&qlm_method_nf4, 64, 256, false) == 4.5);
  assert_true(bpw_of(&qlm_method_fp4, 64, 256, false) == 4.5);
  double dq = bpw_of(&qlm_method_nf4, 64, 256, true);
  /* bnb's 4 + 8/64 + 32/(64*256), plus the offset's 32 bits over the tensor */
  assert_true(dq - 32.0 / 16384 == 4.0 + 8.0 / 64 + 32.0 / (64 * 256));
  assert_true(4.0 + 8.0 / 64 + 32.0 / (64 * 256) == 4.126953125);
  /* 3 x 16384 (768 blocks, three groups) and SmolLM2's 576 x 1536 (13824 blocks: 54 groups) */
  assert_true(bpw_of(&qlm_method_fp4, 3, 16384, true) - 32.0 / (3 * 16384) == 4.126953125);
  /* a partial last group: 5 x 640 = 50 blocks, one group of 50 */
  int64_t shapes[][2] = {{576, 1536}, {5, 640}, {7, 64}};
  for (int s = 0; s < 3; s++) {
    int64_t r = shapes[s][0], c = shapes[s][1], N = r * c, B = N / 64;
    double want = ((double)N / 2 + (double)B + 4.0 * (double)((B + 255) / 256) + 4.0) * 8.0 / (double)N;
    double got = bpw_of(&qlm_method_nf4, r, c, true);
    assert_true(fabs(got - want) <= 1e-12 * want);
  }
}

/* ---- Round-trip bound: |x - x'| <= absmax * (largest half gap of the sorted table). */
static void test_roundtrip_bound(void **state) {
  (void)state;
  uint64_t rng = 5;
  int64_t rows = 16, cols = 512, N = rows * cols;
  float *x = malloc((size_t)N * sizeof *x), *y = malloc((size_t)N * sizeof *y);
  for (int64_t i = 0; i < N; i++) x[i] = tu_rand_normal(&rng) * (i % 7 == 0 ? 10.0f : 1.0f);
  for (int t = 0; t < 2; t++) {
    const qlm_quant_method *m = t ? &qlm_method_fp4 : &qlm_method_nf4;
    const float *c = t ? qlm_bnb4_fp4_code : qlm_bnb4_nf4_code;
    float s[16];
    memcpy(s, c, sizeof s);
    for (int i = 1; i < 16; i++) /* insertion sort */
      for (int j = i; j > 0 && s[j - 1] > s[j]; j--) {
        float tmp = s[j];
        s[j] = s[j - 1], s[j - 1] = tmp;
      }
    double half = 0;
    for (int i = 0; i < 15; i++) half = fmax(half, ((double)s[i + 1] - s[i]) / 2);
    assert_true(half > 0.13 && half < 0.17); /* NF4 0.1385 (0.723..1), FP4 0.1667 (0.667..1) */
    qlm_quant_opts o = {0};
    m->defaults(&o);
    qlm_qtensor q = {0};
    qlm_error err = {0};
    assert_int_equal(m->quantize(x, rows, cols, NULL, &o, &q, &err), QLM_OK);
    assert_int_equal(qlm_bnb4_dequantize_qtensor(&q, y, &err), QLM_OK);
    double worst = 0;
    for (int64_t b = 0; b < N / 64; b++) {
      double am = 0;
      for (int i = 0; i < 64; i++) am = fmax(am, fabs(x[b * 64 + i]));
      for (int i = 0; i < 64; i++) {
        double e = fabs((double)x[b * 64 + i] - y[b * 64 + i]);
        /* float rounding of x/absmax and of the product: a few ulps of absmax */
        assert_true(e <= am * half + 4 * am * FLT_EPSILON);
        worst = fmax(worst, e / am);
      }
    }
    assert_true(worst > 0.5 * half); /* the bound is not vacuous */
    qlm_qtensor_free(&q);
  }
  free(x), free(y);
}

/* ---- Method options and shapes. */
static void test_method_check(void **state) {
  (void)state;
  qlm_quant_opts o = {0};
  qlm_error err = {0};
  qlm_method_nf4.defaults(&o);
  assert_int_equal(o.bits, 4);
  assert_int_equal(qlm_method_nf4.check(&o, 4, 100, &err), QLM_EUNSUPPORTED);
  assert_non_null(strstr(err.msg, "100"));
  assert_int_equal(qlm_method_fp4.check(&o, 4, 128, &err), QLM_OK);
  o.bits = 3;
  assert_int_equal(qlm_method_fp4.check(&o, 4, 128, &err), QLM_EUSAGE);
  o.bits = 4, o.group = 128;
  assert_int_equal(qlm_method_fp4.check(&o, 4, 128, &err), QLM_EUSAGE);
  float x[100] = {0};
  qlm_qtensor q = {0};
  o.group = 64;
  assert_int_equal(qlm_method_nf4.quantize(x, 1, 100, NULL, &o, &q, &err), QLM_EUNSUPPORTED);
  assert_null(q.data);
  assert_ptr_equal(qlm_quant_method_find("nf4"), &qlm_method_nf4);
  assert_ptr_equal(qlm_quant_method_find("fp4"), &qlm_method_fp4);
  /* traits */
  assert_int_equal(qlm_type_traits_of(QLM_TYPE_NF4)->type_size, 36);
  assert_int_equal(qlm_type_traits_of(QLM_TYPE_FP4_DQ)->type_size, 32);
  assert_false(qlm_type_can_dequantize(QLM_TYPE_NF4_DQ));
  assert_true(qlm_type_can_dequantize(QLM_TYPE_FP4));
  assert_true(qlm_type_bpw(QLM_TYPE_NF4) == 4.5);
  assert_string_equal(qlm_type_name(QLM_TYPE_NF4), "nf4");
}

/* ---- expand_dq rejects inconsistent companions. */
static void test_expand_dq_rejects(void **state) {
  (void)state;
  int64_t rows = 3, cols = 128, nb = 6;
  uint8_t codes[6 * 32] = {0}, aq[8] = {0};
  float a2[2] = {1.0f, 1.0f};
  void *out = (void *)1;
  int t;
  qlm_error err = {0};
  assert_int_equal(qlm_bnb4_expand_dq(QLM_TYPE_NF4_DQ, codes, rows, cols, aq, nb, a2, 1, 0.5f, &out, &t, &err), QLM_OK);
  assert_int_equal(t, QLM_TYPE_NF4);
  float w[384];
  assert_true(qlm_dequantize(t, out, w, 384));
  /* code 0 of the map * 1 + 0.5, times the NF4 code 0 (-1.0) */
  assert_true(w[0] == -(qlm_bnb_dynamic_map()[0] + 0.5f));
  free(out);
  struct {
    int type;
    int64_t cols, naq, na2;
    float off;
    const char *what;
  } bad[] = {
      {QLM_TYPE_NF4_DQ, 128, 5, 1, 0.5f, "absmax_q"},   {QLM_TYPE_NF4_DQ, 128, 7, 1, 0.5f, "absmax_q"},
      {QLM_TYPE_FP4_DQ, 128, 6, 2, 0.5f, "absmax2"},    {QLM_TYPE_FP4_DQ, 128, 6, 0, 0.5f, "absmax2"},
      {QLM_TYPE_NF4_DQ, 96, 6, 1, 0.5f, "blocks"},      {QLM_TYPE_NF4_DQ, 128, 6, 1, NAN, "offset"},
      {QLM_TYPE_NF4, 128, 6, 1, 0.5f, "nf4_dq"},        {QLM_TYPE_NF4_DQ, 128, -1, 1, 0.5f, "absmax_q"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    out = (void *)1;
    err.msg[0] = 0;
    assert_int_equal(qlm_bnb4_expand_dq(bad[i].type, codes, rows, bad[i].cols, aq, bad[i].naq, a2, bad[i].na2,
                                        bad[i].off, &out, &t, &err),
                     QLM_EFORMAT);
    assert_null(out);
    if (!strstr(err.msg, bad[i].what)) fail_msg("case %zu: message '%s' does not name %s", i, err.msg, bad[i].what);
  }
  float inf2[1] = {INFINITY};
  assert_int_equal(qlm_bnb4_expand_dq(QLM_TYPE_NF4_DQ, codes, rows, cols, aq, nb, inf2, 1, 0.f, &out, &t, &err),
                   QLM_EFORMAT);
}

/* ---- Dot products at every level vs the double-precision dot of the dequantized weights.
 * Every version sums the n float products fl(w_i) * x_i in some order in float; any order of n
 * float operations on products stays within gamma_n = n u / (1 - n u) of sum |w_i x_i|
 * (Higham, Accuracy and Stability, 3.1 / 3.5), u = 2^-24; FMA only removes roundings. */
static const qlm_simd_level LEVELS[3] = {QLM_SIMD_SCALAR, QLM_SIMD_AVX2, QLM_SIMD_AVX512};

static void *quantize_rows(int type, const float *x, int64_t rows, int64_t cols) {
  uint8_t *b = malloc((size_t)(rows * cols / 64) * 36);
  for (int64_t k = 0; k < rows * cols / 64; k++) qlm_bnb4_quantize_block(type, x + k * 64, b + k * 36);
  return b;
}

static void test_vec_dot_levels(void **state) {
  (void)state;
  uint64_t rng = 99;
  static const int64_t lens[] = {64, 128, 192, 576, 1024, 1536, 4096};
  for (int t = 0; t < 2; t++) {
    int type = t ? QLM_TYPE_FP4 : QLM_TYPE_NF4;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
      int64_t n = lens[li];
      float *w = malloc((size_t)n * 4), *x = malloc((size_t)n * 4), *wd = malloc((size_t)n * 4);
      for (int64_t i = 0; i < n; i++) w[i] = tu_rand_normal(&rng) * (i % 64 == 3 ? 8.0f : 1.0f);
      for (int64_t i = 0; i < n; i++) x[i] = tu_rand_normal(&rng);
      void *b = quantize_rows(type, w, 1, n);
      assert_true(qlm_dequantize(type, b, wd, n));
      double exact = 0, mag = 0;
      for (int64_t i = 0; i < n; i++) exact += (double)wd[i] * x[i], mag += fabs((double)wd[i] * x[i]);
      double u = ldexp(1.0, -24), bound = (double)n * u / (1 - (double)n * u) * mag;
      assert_ptr_equal(qlm_vec_dot_t_for(type, QLM_SIMD_SCALAR), qlm_vec_dot_bnb4_ref);
      for (int l = 0; l < 3; l++) {
        if (LEVELS[l] > qlm_cpu_detect()) continue;
        qlm_vec_dot_t_fn f = qlm_vec_dot_t_for(type, LEVELS[l]);
        assert_non_null(f);
        if (l == 1) assert_ptr_equal(f, qlm_vec_dot_bnb4_avx2);
        if (l == 2) assert_ptr_equal(f, qlm_vec_dot_bnb4_avx512);
        float got = f(type, b, x, n);
        if (!(fabs(got - exact) <= bound))
          fail_msg("%s n=%lld %s: %.9g vs exact %.9g (bound %.3g)", qlm_type_name(type), (long long)n,
                   qlm_simd_name(LEVELS[l]), (double)got, exact, bound);
      }
      free(b), free(w), free(x), free(wd);
    }
  }
}

/* The block quantizer at every SIMD level gives the scalar reference's bytes: random blocks at
 * scales from 1e-40 (below bnb's 1e-38 floor) to 1e4, blocks whose values sit exactly on every
 * midpoint of the tables (amax 1 so v = x: the ties that pick the lower code) and one float either
 * side, all-zero blocks, signed zeros, and NaN (absmax becomes |the first NaN|, its values take the
 * last position) and infinities. */
static void test_quantize_blocks_levels(void **state) {
  (void)state;
  enum { NB = 400 };
  float *x = malloc(NB * 64 * sizeof *x);
  uint8_t *ref = malloc(NB * 36), *got = malloc(NB * 36);
  uint64_t rng = 4242;
  for (int t = 0; t < 2; t++) {
    int type = t ? QLM_TYPE_FP4 : QLM_TYPE_NF4;
    const float *c = qlm_bnb4_code(type);
    int nb = 0;
    for (; nb < 200; nb++) {
      float scale = powf(10.0f, -40.0f + 44.0f * tu_rand_uniform(&rng));
      for (int i = 0; i < 64; i++) x[nb * 64 + i] = scale * tu_rand_normal(&rng);
    }
    for (int a = 0; a < 16; a++) /* midpoints of every pair of code values, and neighbours */
      for (int side = -1; side <= 1; side++, nb++) {
        float *b = x + nb * 64;
        b[0] = 1.0f;
        for (int i = 1; i < 64; i++) {
          float m = (c[a] + c[i % 16]) / 2.0f;
          b[i] = side < 0 ? nextafterf(m, -2.0f) : side > 0 ? nextafterf(m, 2.0f) : m;
        }
      }
    for (int i = 0; i < 64; i++) x[nb * 64 + i] = 0.0f; /* all zero */
    nb++;
    for (int i = 0; i < 64; i++) x[nb * 64 + i] = (i & 1) ? -0.0f : 0.0f;
    nb++;
    for (int k = 0; k < 3; k++, nb++) { /* NaN, +inf, -inf inside a random block */
      for (int i = 0; i < 64; i++) x[nb * 64 + i] = tu_rand_normal(&rng);
      x[nb * 64 + 5 + 17 * k] = k == 0 ? NAN : k == 1 ? INFINITY : -INFINITY;
      x[nb * 64 + 40] = k == 0 ? -NAN : x[nb * 64 + 40];
    }
    assert_true(nb <= NB);
    qlm_bnb4_quantize_blocks_at(QLM_SIMD_SCALAR, type, x, ref, (size_t)nb);
    for (int b = 0; b < nb; b++) { /* the scalar level is the reference block quantizer */
      uint8_t one[36];
      qlm_bnb4_quantize_block(type, x + b * 64, one);
      assert_memory_equal(one, ref + b * 36, 36);
    }
    for (int l = 1; l < 3; l++) {
      if (LEVELS[l] > qlm_cpu_detect()) continue;
      memset(got, 0xA5, NB * 36);
      qlm_bnb4_quantize_blocks_at(LEVELS[l], type, x, got, (size_t)nb);
      for (int b = 0; b < nb; b++)
        if (memcmp(got + b * 36, ref + b * 36, 36) != 0)
          fail_msg("%s %s: block %d differs from the scalar quantizer", qlm_type_name(type), qlm_simd_name(LEVELS[l]), b);
    }
  }
  free(x), free(ref), free(got);
}

/* Double quantization's 8-bit codes: the stepped search equals counting the midpoints below each
 * value (torch.bucketize, right=False), on random values, on every midpoint of the dynamic map and
 * its float neighbours, and NaN (all 255 below: code 255). */
static void test_blockwise8_positions(void **state) {
  (void)state;
  const float *map = qlm_bnb_dynamic_map();
  float mid[255];
  for (int k = 0; k < 255; k++) mid[k] = (map[k] + map[k + 1]) / 2.0f;
  enum { N = 3 * 255 + 1000 + 3 };
  float *x = malloc(N * sizeof *x);
  uint8_t *codes = malloc(N);
  float absmax[(N + 255) / 256];
  int n = 0;
  uint64_t rng = 77;
  x[n++] = 1.0f; /* first block's absmax 1: its values are scaled by exactly 1 */
  for (int k = 0; k < 255 && n + 3 <= N; k++) x[n++] = mid[k], x[n++] = nextafterf(mid[k], -2.0f), x[n++] = nextafterf(mid[k], 2.0f);
  while (n < N - 2) x[n++] = tu_rand_normal(&rng);
  x[n++] = NAN, x[n++] = -1.0f;
  qlm_bnb_quantize_blockwise8(x, n, 256, codes, absmax);
  for (int i = 0; i < n; i++) {
    int b = i / 256;
    float am = absmax[b], r = 1.0f / (am < 1e-38f ? 1e-38f : am), v = x[i] * r;
    v = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
    int count = 0;
    for (int k = 0; k < 255; k++) count += !(mid[k] >= v);
    if (codes[i] != count) fail_msg("value %d (%.9g, scaled %.9g): code %d, %d midpoints below", i, (double)x[i], (double)v, codes[i], count);
  }
  free(x), free(codes);
}

/* Every code at every nibble position reaches the dot: one-hot activations read one weight. */
static void test_vec_dot_one_hot(void **state) {
  (void)state;
  uint64_t rng = 3;
  int64_t n = 256;
  float w[256], wd[256], x[256] = {0};
  for (int i = 0; i < n; i++) w[i] = tu_rand_normal(&rng);
  for (int t = 0; t < 2; t++) {
    int type = t ? QLM_TYPE_FP4 : QLM_TYPE_NF4;
    void *b = quantize_rows(type, w, 1, n);
    assert_true(qlm_dequantize(type, b, wd, n));
    for (int l = 0; l < 3; l++) {
      if (LEVELS[l] > qlm_cpu_detect()) continue;
      qlm_vec_dot_t_fn f = qlm_vec_dot_t_for(type, LEVELS[l]);
      for (int i = 0; i < n; i++) {
        x[i] = 1.0f;
        float got = f(type, b, x, n);
        if (got != wd[i]) fail_msg("%s %s one-hot %d: %g vs %g", qlm_type_name(type), qlm_simd_name(LEVELS[l]), i,
                                   (double)got, (double)wd[i]);
        x[i] = 0.0f;
      }
    }
    free(b);
  }
}

/* ---- qlm_matmul_ex with NF4 weights at T = 1 and 5 on 1..3 threads equals per-row vec_dot. */
static void test_matmul_equals_vec_dot(void **state) {
  (void)state;
  uint64_t rng = 77;
  int64_t rows = 67, cols = 1536;
  float *w = malloc((size_t)(rows * cols) * 4);
  for (int64_t i = 0; i < rows * cols; i++) w[i] = tu_rand_normal(&rng) * 0.05f;
  void *b = quantize_rows(QLM_TYPE_NF4, w, rows, cols);
  size_t rb = qlm_type_row_bytes(QLM_TYPE_NF4, cols);
  assert_int_equal(rb, (size_t)cols / 64 * 36);
  qlm_mat W = {.type = QLM_TYPE_NF4, .rows = rows, .cols = cols, .data = b, .row_bytes = rb};
  qlm_pool *pools[3] = {qlm_pool_new(1), qlm_pool_new(2), qlm_pool_new(3)};
  for (int T = 1; T <= 5; T += 4) {
    float *X = malloc((size_t)(T * cols) * 4), *Y = malloc((size_t)(T * rows) * 4);
    for (int64_t i = 0; i < T * cols; i++) X[i] = tu_rand_normal(&rng);
    for (int l = 0; l < 3; l++) {
      if (LEVELS[l] > qlm_cpu_detect()) continue;
      qlm_vec_dot_t_fn f = qlm_vec_dot_t_for(QLM_TYPE_NF4, LEVELS[l]);
      for (int p = 0; p < 3; p++) {
        memset(Y, 0xFF, (size_t)(T * rows) * 4);
        qlm_matmul_ex(&W, X, T, Y, pools[p], LEVELS[l], 1);
        for (int t = 0; t < T; t++)
          for (int64_t r = 0; r < rows; r++) {
            float want = f(QLM_TYPE_NF4, (uint8_t *)b + rb * (size_t)r, X + t * cols, cols);
            if (memcmp(&want, &Y[t * rows + r], 4))
              fail_msg("T=%d %s threads %d: Y[%d][%lld] = %.9g, vec_dot %.9g", T, qlm_simd_name(LEVELS[l]), p + 1, t,
                       (long long)r, (double)Y[t * rows + r], (double)want);
          }
      }
    }
    free(X), free(Y);
  }
  for (int p = 0; p < 3; p++) qlm_pool_free(pools[p]);
  free(b), free(w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_code_tables),       cmocka_unit_test(test_bnb_gauss),
      cmocka_unit_test(test_bnb_heavy_tailed),  cmocka_unit_test(test_bnb_edge_cases),
      cmocka_unit_test(test_bnb_dq_two_groups), cmocka_unit_test(test_bpw),
      cmocka_unit_test(test_roundtrip_bound),   cmocka_unit_test(test_method_check),
      cmocka_unit_test(test_expand_dq_rejects), cmocka_unit_test(test_vec_dot_levels),
      cmocka_unit_test(test_vec_dot_one_hot),   cmocka_unit_test(test_matmul_equals_vec_dot),
      cmocka_unit_test(test_quantize_blocks_levels), cmocka_unit_test(test_blockwise8_positions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
