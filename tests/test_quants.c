/* test_quants.c — reference quantizers (kernels/quants.c) against llama.cpp and the format.
 *
 * Independent references:
 *  1. tests/data/quants/vectors.bin (tools/gen_quant_vectors.py): inputs and the bytes that
 *     llama.cpp's own quantize_row_<type>_ref (ggml-quants.c, llama-cpp-python 0.3.36's vendored
 *     copy) produces for them, incl. edge cases (zeros, constants, outliers, tiny and huge
 *     magnitudes, negative-dominant blocks).  For the legacy types gguf-py's numpy quantizers
 *     give the same bytes.  Compared with memcmp: qlm must write identical files.  Plus
 *     hashes.txt: a hash of llama.cpp's output for a long generated row per type.
 *  2. blocks derived by hand from the format definitions (scales that are exact powers of two,
 *     inputs on the grid), so the expected bytes follow from the formulas alone.
 *  3. round-trip bounds that follow from the formats: every weight whose quant is not clamped
 *     dequantizes (through the traits table's to_float) to within half a quantization step of
 *     its input, with the step taken from the stored (fp16-rounded) scales. */
#include "core/bytes.h"
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/quants.h"
#include "kernels/types.h"


/* The types with a quantizer, and their (block size, bytes per block) from ggml-common.h. */
/* qmax: the largest |quant| a legacy type multiplies its fp16-rounded scale by (0 for the
 * k-quants and Q8_K, which requantize against the stored scales or keep d in float). */
static const struct { int type; int bs; int ts; int qmax; } k_types[] = {
    {QLM_TYPE_Q4_0, 32, 18, 8},     {QLM_TYPE_Q4_1, 32, 20, 15},    {QLM_TYPE_Q5_0, 32, 22, 16},
    {QLM_TYPE_Q5_1, 32, 24, 31},    {QLM_TYPE_Q8_0, 32, 34, 127},   {QLM_TYPE_Q4_K, 256, 144, 0},
    {QLM_TYPE_Q5_K, 256, 176, 0},   {QLM_TYPE_Q6_K, 256, 210, 0},   {QLM_TYPE_Q8_K, 256, 292, 0},
};
#define N_TYPES (int)(sizeof k_types / sizeof k_types[0])

/* Quantize n floats of `type` into a fresh buffer (caller frees). */
static uint8_t *quantize(int type, const float *x, int64_t n, size_t *nbytes) {
  qlm_quantize_fn q = qlm_quantizer_of(type);
  assert_non_null(q);
  size_t bytes = qlm_type_row_bytes(type, n);
  assert_true(bytes > 0);
  uint8_t *out = malloc(bytes);
  assert_non_null(out);
  memset(out, 0xA5, bytes); /* quantizers must write every byte */
  q(x, out, n);
  if (nbytes) *nbytes = bytes;
  return out;
}

static float *dequantize(int type, const uint8_t *blocks, int64_t n) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  assert_non_null(t);
  assert_non_null(t->to_float);
  float *y = malloc((size_t)n * sizeof(float));
  assert_non_null(y);
  t->to_float(blocks, y, n);
  return y;
}

/* ---- 1. byte-exact against llama.cpp ---- */

static void test_llama_cpp_vectors(void **st) {
  (void)st;
  size_t n;
  uint8_t *data = tu_read_vectors("quants/vectors.bin", "QLMQV1\0\0", "tools/gen_quant_vectors.py", &n);
  uint32_t entries = qlm_rd32(data + 8);
  size_t pos = 12;
  int cases_per_type[QLM_TYPE_COUNT_GGML] = {0};
  for (uint32_t e = 0; e < entries; e++) {
    assert_true(pos + 16 <= n);
    const int type = (int)qlm_rd32(data + pos);
    const uint32_t cas = qlm_rd32(data + pos + 4), nval = qlm_rd32(data + pos + 8), nbytes = qlm_rd32(data + pos + 12);
    pos += 16;
    assert_true(type >= 0 && type < QLM_TYPE_COUNT_GGML);
    assert_true(nval > 0 && nval <= 4096);
    assert_int_equal(nbytes, qlm_type_row_bytes(type, nval));
    assert_true(pos + 4 * (size_t)nval + nbytes <= n);
    float *x = malloc(4 * (size_t)nval);
    memcpy(x, data + pos, 4 * (size_t)nval);
    const uint8_t *want = data + pos + 4 * (size_t)nval;
    pos += 4 * (size_t)nval + nbytes;

    size_t got_n;
    uint8_t *got = quantize(type, x, nval, &got_n);
    assert_int_equal(got_n, nbytes);
    if (memcmp(got, want, nbytes) != 0) {
      size_t i = 0;
      while (got[i] == want[i]) i++;
      const size_t ts = qlm_type_traits_of(type)->type_size;
      fail_msg("%s, case %u: byte %zu (block %zu, offset %zu): got 0x%02x, llama.cpp wrote 0x%02x",
               qlm_type_name(type), cas, i, i / ts, i % ts, got[i], want[i]);
    }
    cases_per_type[type]++;
    free(got);
    free(x);
  }
  assert_int_equal(pos, n);
  for (int t = 0; t < N_TYPES; t++)
    if (cases_per_type[k_types[t].type] < 12)
      fail_msg("%s: only %d cases in vectors.bin", qlm_type_name(k_types[t].type), cases_per_type[k_types[t].type]);
  free(data);
}

/* The stress rows of hashes.txt: tools/gen_quant_vectors.py's stress_input(), bit for bit. */
static void stress_input(uint64_t seed, float *x, int64_t n) {
  uint64_t s = seed;
  int e = 0, pos = 0;
  for (int64_t i = 0; i < n; i++) {
    if (i % 16 == 0) {
      const uint64_t g = tu_rand_u64(&s);
      e = -20 + (int)(g >> 60), pos = ((g >> 56) & 3) == 0;
    }
    const uint64_t u = tu_rand_u64(&s);
    const float v = ldexpf((float)((int32_t)(u >> 40) - (1 << 23)), e + ((u & 63) == 0 ? 4 : 0));
    x[i] = pos ? fabsf(v) : v;
  }
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

/* ~2000 super-blocks per type: catches evaluation-order slips in the k-quant searches, which
 * change only a few super-blocks in a thousand (too rare for the explicit vectors). */
static void test_llama_cpp_hashes(void **st) {
  (void)st;
  char *path = tu_testdata("quants/hashes.txt");
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("cannot open %s (run tools/gen_quant_vectors.py)", path);
  char line[256];
  int checked = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    int type;
    char name[16];
    long long nval;
    unsigned long long seed, want;
    assert_int_equal(sscanf(line, "%d %15s %lld %llx %llx", &type, name, &nval, &seed, &want), 5);
    assert_string_equal(name, qlm_type_name(type));
    assert_true(nval > 0 && nval <= (1 << 22));
    float *x = malloc((size_t)nval * sizeof(float));
    assert_non_null(x);
    stress_input(seed, x, nval);
    size_t nb;
    uint8_t *got = quantize(type, x, nval, &nb);
    const uint64_t h = fnv1a64(got, nb);
    if (h != want) fail_msg("%s: %lld values quantize to bytes with hash %016llx, llama.cpp's hash %016llx", name, nval,
                            (unsigned long long)h, want);
    checked++;
    free(got);
    free(x);
  }
  fclose(f);
  free(path);
  assert_int_equal(checked, N_TYPES);
}

/* ---- 2. blocks derived by hand from the format definitions ---- */

/* Q4_0: x_j = (j % 16) - 8, so max = -8 (element 0), d = max / -8 = 1, q = x + 8 = j % 16.
 * Byte j holds weight j (low nibble) and weight j+16 (high): j | j << 4. */
static void test_hand_q4_0(void **st) {
  (void)st;
  float x[32];
  for (int j = 0; j < 32; j++) x[j] = (float)(j % 16 - 8);
  uint8_t *b = quantize(QLM_TYPE_Q4_0, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0x3c00); /* d = 1.0 */
  for (int j = 0; j < 16; j++) assert_int_equal(b[2 + j], j | j << 4);
  free(b);
  /* the sign of d follows the signed max: a positive maximum gives a negative d */
  for (int j = 0; j < 32; j++) x[j] = -x[j]; /* max = +8 at element 0 -> d = -1, q = 8 - x */
  b = quantize(QLM_TYPE_Q4_0, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0xbc00); /* d = -1.0 */
  for (int j = 0; j < 16; j++) assert_int_equal(b[2 + j], j | j << 4);
  free(b);
}

/* Q4_1: x_j = (j % 16) + 2: min 2, max 17, d = 15/15 = 1, m = 2, q = j % 16. */
static void test_hand_q4_1(void **st) {
  (void)st;
  float x[32];
  for (int j = 0; j < 32; j++) x[j] = (float)(j % 16 + 2);
  uint8_t *b = quantize(QLM_TYPE_Q4_1, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0x3c00);     /* d = 1 */
  assert_int_equal(qlm_rd16(b + 2), 0x4000); /* m = 2 */
  for (int j = 0; j < 16; j++) assert_int_equal(b[4 + j], j | j << 4);
  free(b);
}

/* Q5_0: x_j = j - 16: max = -16, d = 1, q = x + 16 = j; low nibbles j | j << 4 (weights j and
 * j+16 share their low 4 bits), 5th bit set exactly for weights 16..31: qh = 0xffff0000. */
static void test_hand_q5_0(void **st) {
  (void)st;
  float x[32];
  for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
  uint8_t *b = quantize(QLM_TYPE_Q5_0, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0x3c00);
  assert_int_equal(qlm_rd32(b + 2), 0xffff0000u);
  for (int j = 0; j < 16; j++) assert_int_equal(b[6 + j], j | j << 4);
  free(b);
}

/* Q5_1: x_j = j + 1: min 1, max 32, d = 31/31 = 1, m = 1, q = j. */
static void test_hand_q5_1(void **st) {
  (void)st;
  float x[32];
  for (int j = 0; j < 32; j++) x[j] = (float)(j + 1);
  uint8_t *b = quantize(QLM_TYPE_Q5_1, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0x3c00);
  assert_int_equal(qlm_rd16(b + 2), 0x3c00);
  assert_int_equal(qlm_rd32(b + 4), 0xffff0000u);
  for (int j = 0; j < 16; j++) assert_int_equal(b[8 + j], j | j << 4);
  free(b);
}

/* Q8_0: amax 127 -> d = 1 and q = x exactly (incl. -127 and a value that is not the max);
 * then halves: with amax 63.5, d = 0.5, x = k + 0.25 -> q = round(2k + 0.5) rounds half away
 * from zero (roundf), so 0.25 -> 1 and -0.25 -> -1. */
static void test_hand_q8_0(void **st) {
  (void)st;
  float x[32];
  for (int j = 0; j < 32; j++) x[j] = (float)(j * 8 - 127);
  uint8_t *b = quantize(QLM_TYPE_Q8_0, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0x3c00);
  for (int j = 0; j < 32; j++) assert_int_equal((int8_t)b[2 + j], j * 8 - 127);
  free(b);
  for (int j = 0; j < 32; j++) x[j] = j == 0 ? 63.5f : (j % 2 ? 0.25f : -0.25f) + (float)(j - 16);
  b = quantize(QLM_TYPE_Q8_0, x, 32, NULL);
  assert_int_equal(qlm_rd16(b), 0x3800); /* 0.5 */
  assert_int_equal((int8_t)b[2], 127);
  for (int j = 1; j < 32; j++) {
    const double want2x = 2.0 * ((j % 2 ? 0.25 : -0.25) + (j - 16)); /* an exact .5 */
    const int want = (int)(want2x + (want2x > 0 ? 0.5 : -0.5));  /* half away from zero */
    if ((int8_t)b[2 + j] != want) fail_msg("q8_0 weight %d: got %d, want %d", j, (int8_t)b[2 + j], want);
  }
  free(b);
}

/* All-zero input: every scale is zero and every weight dequantizes to exactly 0 (no NaN from
 * 0/0).  The bytes are fixed by the formulas: Q4_0/Q5_0 compute d = max / -8 (-16) with
 * max = +0, so d is -0 (fp16 0x8000); their codes are q = trunc(0 + 8.5) = 8 and q = 16 (so
 * all 5th bits set); everything else is 0. */
static void test_zeros(void **st) {
  (void)st;
  static float x[512];
  for (int t = 0; t < N_TYPES; t++) {
    const int type = k_types[t].type;
    size_t nb;
    uint8_t *b = quantize(type, x, 512, &nb);
    uint8_t want[292 * 2];
    memset(want, 0, sizeof want);
    for (size_t blk = 0; blk < nb / (size_t)k_types[t].ts; blk++) {
      uint8_t *w = want + blk * (size_t)k_types[t].ts;
      if (type == QLM_TYPE_Q4_0) w[1] = 0x80, memset(w + 2, 0x88, 16);
      if (type == QLM_TYPE_Q5_0) w[1] = 0x80, memset(w + 2, 0xff, 4);
    }
    if (memcmp(b, want, nb) != 0) fail_msg("%s: all-zero input gives unexpected bytes", qlm_type_name(type));
    float *y = dequantize(type, b, 512);
    for (int i = 0; i < 512; i++)
      if (y[i] != 0.0f) fail_msg("%s: weight %d of a zero row dequantizes to %g", qlm_type_name(type), i, y[i]);
    free(y);
    free(b);
  }
}

/* ---- 3. round trips through the traits' dequantizers ---- */

/* Per block: the quantization step (d of the weight's sub-block, from the stored bytes), and
 * whether the weight's code is at an end of its range where the quantizer clamps (a clamped
 * quant may be off by more than half a step).  Ends that are exact images of the block's
 * extreme value (Q4_0's q = 0 is d * -8 = max; Q8_0's +-127) are not clamps. */
static void step_and_code(int type, const uint8_t *b, int e, float *step, int *at_edge) {
  switch (type) {
    case QLM_TYPE_Q4_0: {
      int q = e < 16 ? b[2 + e] & 0xF : b[2 + e - 16] >> 4;
      *step = fabsf(qlm_rdhalf(b)), *at_edge = q == 15;
      break;
    }
    case QLM_TYPE_Q4_1: {
      int q = e < 16 ? b[4 + e] & 0xF : b[4 + e - 16] >> 4;
      *step = qlm_rdhalf(b), *at_edge = q == 15;
      break;
    }
    case QLM_TYPE_Q5_0: case QLM_TYPE_Q5_1: {
      const int off = type == QLM_TYPE_Q5_0 ? 2 : 4;
      int lo = e < 16 ? b[off + 4 + e] & 0xF : b[off + 4 + e - 16] >> 4;
      int q = lo | (int)((qlm_rd32(b + off) >> e) & 1) << 4;
      *step = fabsf(qlm_rdhalf(b)), *at_edge = q == 31;
      break;
    }
    case QLM_TYPE_Q8_0: {
      int q = (int8_t)b[2 + e];
      *step = qlm_rdhalf(b), *at_edge = q == -128; /* never written */
      break;
    }
    case QLM_TYPE_Q4_K: case QLM_TYPE_Q5_K: {
      const uint8_t *sc = b + 4;
      const int j = e / 32;
      int sv = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
      const uint8_t *qs = b + (type == QLM_TYPE_Q4_K ? 16 : 48);
      uint8_t byte = qs[32 * (e / 64) + e % 32];
      int q = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
      int qmax = 15;
      if (type == QLM_TYPE_Q5_K) q |= ((b[16 + e % 32] >> (e / 32)) & 1) << 4, qmax = 31;
      *step = qlm_rdhalf(b) * (float)sv, *at_edge = q == 0 || q == qmax;
      break;
    }
    case QLM_TYPE_Q6_K: {
      int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
      uint8_t lb = b[64 * h + 32 * (k & 1) + l];
      int q = (k < 2 ? (lb & 0xF) : (lb >> 4)) | ((b[128 + 32 * h + l] >> (2 * k)) & 3) << 4;
      *step = fabsf(qlm_rdhalf(b + 208) * (float)(int8_t)b[192 + e / 16]), *at_edge = q == 0 || q == 63;
      break;
    }
    case QLM_TYPE_Q8_K: {
      int q = (int8_t)b[4 + e];
      *step = fabsf(qlm_bits_to_f32(qlm_rd32(b))), *at_edge = q == 127;
      break;
    }
    default: fail_msg("no step for type %d", type);
  }
}

/* Quantize, dequantize, and check every non-clamped weight is within half a step (plus float
 * rounding) and every output is finite.  Returns how many weights were exempt as clamped. */
static int roundtrip(int t, const float *x, int n, const char *what) {
  const int type = k_types[t].type, bs = k_types[t].bs, ts = k_types[t].ts;
  uint8_t *b = quantize(type, x, n, NULL);
  float *y = dequantize(type, b, n);
  int edge = 0;
  for (int blk = 0; blk < n / bs; blk++) {
    float amax = 0;
    for (int e = 0; e < bs; e++) amax = fmaxf(amax, fabsf(x[blk * bs + e]));
    for (int e = 0; e < bs; e++) {
      const int i = blk * bs + e;
      float step = 0;
      int at_edge = 0;
      step_and_code(type, b + (size_t)blk * (size_t)ts, e, &step, &at_edge);
      if (!isfinite(y[i])) fail_msg("%s %s: weight %d dequantizes to %g", qlm_type_name(type), what, i, y[i]);
      edge += at_edge;
      if (step == 0.0f) continue; /* a k-quant sub-block whose 6-bit scale rounded to 0 */
      /* half a step, plus float rounding; the legacy types quantize with the float scale d but
       * store it as fp16, so |q| * |d - fp16(d)| <= qmax * step * 2^-11 more, and the affine
       * ones (Q4_1/Q5_1) also the fp16 rounding of the min m */
      float tol = 0.5f * step * 1.0001f + 1e-5f * amax + (float)k_types[t].qmax * step * 0x1p-10f;
      if (type == QLM_TYPE_Q4_1 || type == QLM_TYPE_Q5_1) tol += fabsf(qlm_rdhalf(b + (size_t)blk * ts + 2)) * 1e-3f;
      if (!at_edge && fabsf(x[i] - y[i]) > tol)
        fail_msg("%s %s: weight %d: x %.9g -> %.9g, error %g > half step %g", qlm_type_name(type), what, i, x[i], y[i],
                 fabsf(x[i] - y[i]), 0.5 * step);
      /* clamped codes: still within one and a half steps of the input (no wrap-around) */
      if (at_edge && fabsf(x[i] - y[i]) > 3 * tol + 0.02f * amax)
        fail_msg("%s %s: clamped weight %d: x %.9g -> %.9g", qlm_type_name(type), what, i, x[i], y[i]);
    }
  }
  free(y);
  free(b);
  return edge;
}

static void test_roundtrip_bounds(void **st) {
  (void)st;
  enum { N = 4096 };
  float *x = malloc(N * sizeof(float));
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  for (int t = 0; t < N_TYPES; t++) {
    for (int i = 0; i < N; i++) x[i] = tu_rand_normal(&rng);
    /* sanity of the check itself: on Gaussian data the half-step bound covers most weights
     * (k-quants put each sub-block's min and max on codes 0 and qmax: 2 in 32 are exempt) */
    const int edge = roundtrip(t, x, N, "normal");
    if (edge > N / 8) fail_msg("%s: %d of %d weights exempt as clamped", qlm_type_name(k_types[t].type), edge, N);
    for (int i = 0; i < N; i++) x[i] = tu_rand_normal(&rng) * 1e-3f + 0.05f; /* all positive, offset */
    roundtrip(t, x, N, "offset");
    for (int i = 0; i < N; i++) x[i] = tu_rand_normal(&rng) * (i % 97 == 0 ? 20.0f : 0.3f); /* outliers */
    roundtrip(t, x, N, "outliers");
  }
  free(x);
}

/* Error levels on Gaussian weights: for a b-bit grid over a block's range (about 4.5 sigma for
 * 32 normal samples) the RMS error is step / sqrt(12), e.g. 4.5 / 15 / 3.46 = 0.087 for
 * Q4_0.  Measured (this data): q4_0 0.086, q4_1 0.079, q5_0 0.043, q5_1 0.038, q8_0 0.0054,
 * q4_K 0.072, q5_K 0.036, q6_K 0.018, q8_K 0.0070.  The bounds leave ~20% room; the orderings
 * check that the k-quant searches beat the legacy types of the same width. */
static double rel_rmse(int type, const float *x, int n) {
  uint8_t *b = quantize(type, x, n, NULL);
  float *y = dequantize(type, b, n);
  double se = 0, ss = 0;
  for (int i = 0; i < n; i++) se += (double)(x[i] - y[i]) * (x[i] - y[i]), ss += (double)x[i] * x[i];
  free(y);
  free(b);
  return sqrt(se / ss);
}

static void test_error_levels(void **st) {
  (void)st;
  enum { N = 256 * 64 };
  float *x = malloc(N * sizeof(float));
  uint64_t rng = 12345;
  for (int i = 0; i < N; i++) x[i] = tu_rand_normal(&rng);
  const double q4_0 = rel_rmse(QLM_TYPE_Q4_0, x, N), q4_1 = rel_rmse(QLM_TYPE_Q4_1, x, N);
  const double q5_0 = rel_rmse(QLM_TYPE_Q5_0, x, N), q5_1 = rel_rmse(QLM_TYPE_Q5_1, x, N);
  const double q8_0 = rel_rmse(QLM_TYPE_Q8_0, x, N), q4_k = rel_rmse(QLM_TYPE_Q4_K, x, N);
  const double q5_k = rel_rmse(QLM_TYPE_Q5_K, x, N), q6_k = rel_rmse(QLM_TYPE_Q6_K, x, N);
  const double q8_k = rel_rmse(QLM_TYPE_Q8_K, x, N);
  printf("rel. RMSE: q4_0 %.4f q4_1 %.4f q5_0 %.4f q5_1 %.4f q8_0 %.4f q4_K %.4f q5_K %.4f q6_K %.4f q8_K %.4f\n",
         q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q5_k, q6_k, q8_k);
  assert_true(q8_0 < 0.0065 && q8_k < 0.0085);
  assert_true(q6_k < 0.022 && q5_k < 0.044 && q4_k < 0.087);
  assert_true(q5_0 < 0.052 && q5_1 < 0.046 && q4_0 < 0.104 && q4_1 < 0.095);
  assert_true(q4_k < q4_0 && q4_k < q4_1 && q5_k < q5_0 && q5_k < q5_1); /* the searches pay off */
  assert_true(q8_0 < q6_k && q6_k < q5_k && q5_k < q4_k);                /* more bits, less error */
  free(x);
}

/* Rows of several blocks are quantized block by block: quantizing the whole row equals
 * quantizing each block on its own (no state leaks between blocks). */
static void test_blocks_independent(void **st) {
  (void)st;
  enum { N = 1024 };
  float *x = malloc(N * sizeof(float));
  uint64_t rng = 777;
  for (int i = 0; i < N; i++) x[i] = tu_rand_normal(&rng) * (float)(1 + i / 256);
  for (int t = 0; t < N_TYPES; t++) {
    const int bs = k_types[t].bs, ts = k_types[t].ts;
    size_t nb;
    uint8_t *whole = quantize(k_types[t].type, x, N, &nb);
    for (int blk = 0; blk < N / bs; blk++) {
      uint8_t *one = quantize(k_types[t].type, x + blk * bs, bs, NULL);
      if (memcmp(one, whole + (size_t)blk * ts, (size_t)ts) != 0)
        fail_msg("%s: block %d differs when quantized alone", qlm_type_name(k_types[t].type), blk);
      free(one);
    }
    free(whole);
  }
  free(x);
}

static void test_quantizer_table(void **st) {
  (void)st;
  for (int t = 0; t < N_TYPES; t++) {
    assert_non_null(qlm_quantizer_of(k_types[t].type));
    const qlm_type_traits *tr = qlm_type_traits_of(k_types[t].type);
    assert_int_equal(tr->block_size, k_types[t].bs);
    assert_int_equal(tr->type_size, (size_t)k_types[t].ts);
  }
  assert_ptr_equal(qlm_quantizer_of(QLM_TYPE_Q4_0), qlm_quantize_row_q4_0_ref);
  assert_ptr_equal(qlm_quantizer_of(QLM_TYPE_Q6_K), qlm_quantize_row_q6_K_ref);
  assert_null(qlm_quantizer_of(QLM_TYPE_F32));
  assert_null(qlm_quantizer_of(QLM_TYPE_Q2_K));
  assert_null(qlm_quantizer_of(-1));
  assert_null(qlm_quantizer_of(123456));
  /* n = 0 writes nothing */
  uint8_t guard = 0x5a;
  qlm_quantize_row_q4_K_ref(NULL, &guard, 0);
  assert_int_equal(guard, 0x5a);
}

/* fp16 rounding of the scales must be round-to-nearest-even, as ggml's conversion (checked
 * against ggml_compute_fp32_to_fp16 on all 2^32 inputs when the vectors were made; here the
 * cases that distinguish it from truncation or round-half-up). */
static void test_fp16_rounding(void **st) {
  (void)st;
  assert_int_equal(qlm_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);          /* tie, even below */
  assert_int_equal(qlm_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);      /* tie, even above */
  assert_int_equal(qlm_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01); /* above the tie */
  assert_int_equal(qlm_f32_to_f16(0x1p-25f), 0x0000);                 /* half the smallest subnormal: tie to 0 */
  assert_int_equal(qlm_f32_to_f16(3 * 0x1p-25f), 0x0002);             /* 1.5 ulp: tie to even 2 */
  assert_int_equal(qlm_f32_to_f16(65520.0f), 0x7c00);                 /* rounds to inf */
  assert_int_equal(qlm_f32_to_f16(65519.0f), 0x7bff);
  assert_int_equal(qlm_f32_to_f16(-0.0f), 0x8000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_llama_cpp_vectors), cmocka_unit_test(test_llama_cpp_hashes),
      cmocka_unit_test(test_hand_q4_0),
      cmocka_unit_test(test_hand_q4_1),         cmocka_unit_test(test_hand_q5_0),
      cmocka_unit_test(test_hand_q5_1),         cmocka_unit_test(test_hand_q8_0),
      cmocka_unit_test(test_zeros),             cmocka_unit_test(test_roundtrip_bounds),
      cmocka_unit_test(test_error_levels),      cmocka_unit_test(test_blocks_independent),
      cmocka_unit_test(test_quantizer_table),   cmocka_unit_test(test_fp16_rounding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
