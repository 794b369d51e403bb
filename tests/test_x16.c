/* test_x16.c — the 16-row interleaved layouts and their kernels (kernels/x16.h).
 *
 * Q4_0 (kernels/q4_0x16.h):
 *   layout:  every code and scale of the file's blocks found where the header says, by index
 *            arithmetic on the code number (not the packer's dword copies); padding rows zero;
 *   activations: the Q8_0 quantizer's q and d, and -8 * sum(q);
 *   scalar kernel: qlm_vec_dot_q4_0_ref's operations in its order -> bit-identical to it;
 *   AVX-512 VNNI kernel: one fused multiply-add per block, so within 2 (nb + 1) u sum_b |term_b|
 *            of the reference (the bound test_gemm.c explains); bit-identical to the gemm_q tile,
 *            which does the same operations;
 *   matmul:  the result of a row does not depend on T, the thread count or the grouping of
 *            matrices (bit for bit);
 *   model:   stories260K quantized to Q4_0 gives bit-identical logits for a 64-token batch with
 *            and without the copy (the batch path then uses the gemm_q tile), and the same
 *            greedy text.
 * Q4_K (kernels/q4_kx16.h): the layout by index arithmetic, the activation blocks from the Q8_K
 *   quantizer, and both kernels bit-identical to qlm_vec_dot_q4_k_ref (they do its integer sums and
 *   its unfused float operations in its order), through qlm_matmul_ex too, at every T and thread
 *   count.
 * Q4_1 (kernels/q4_1x16.h): the same three checks against the Q8_1 quantizer and
 *   qlm_vec_dot_q4_1_ref; Q5_0 (kernels/q5_0x16.h) against the Q8_0 quantizer and
 *   qlm_vec_dot_q5_0_ref, the fifth bits found by index arithmetic too. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "generate/sampler.h"
#include "kernels/cpu.h"
#include "kernels/gemm_q.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/q4_0x16.h"
#include "kernels/q4_1x16.h"
#include "kernels/q4_kx16.h"
#include "kernels/q5_0x16.h"
#include "kernels/qdot.h"
#include "kernels/threadpool.h"
#include "kernels/x16.h"
#include "kernels/types.h"
#include "model/model.h"

static uint64_t next(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}
static float unif(uint64_t *s) { return (float)((next(s) >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }

/* Random Q4_0 rows: random code bytes, sane half scales. */
static uint8_t *random_q4_0(int64_t rows, int64_t cols, uint64_t *rng) {
  size_t n = qlm_type_row_bytes(QLM_TYPE_Q4_0, cols) * (size_t)rows;
  uint8_t *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next(rng);
  for (size_t o = 0; o < n; o += 18) qlm_wr16(b + o, qlm_f32_to_f16(0.01f + 0.05f * fabsf(unif(rng))));
  return b;
}

static uint8_t *packed(const uint8_t *w, int64_t rows, int64_t cols) {
  size_t n = qlm_q4_0x16_bytes(rows, cols);
  uint8_t *p = malloc(n);
  assert_non_null(p);
  memset(p, 0xA5, n);
  qlm_q4_0x16_pack(w, qlm_type_row_bytes(QLM_TYPE_Q4_0, cols), rows, cols, 0, (rows + 15) / 16, p);
  return p;
}

/* Code e (0..31) of row i of a group's block: the file keeps code e < 16 in the low nibble of
 * qs[e] and code e >= 16 in the high nibble of qs[e - 16]. */
static int packed_code(const uint8_t *blk, int i, int e) {
  int k = e % 16;
  uint8_t byte = blk[64 * (k / 4) + 4 * i + k % 4];
  return e < 16 ? byte & 0xF : byte >> 4;
}
static int file_code(const uint8_t *blk, int e) { return e < 16 ? blk[2 + e] & 0xF : blk[2 + e - 16] >> 4; }

static void test_layout(void **st) {
  (void)st;
  uint64_t rng = 11;
  const int64_t rows = 37, cols = 96, nb = cols / 32;
  assert_int_equal(qlm_q4_0x16_bytes(rows, cols), 3 * nb * QLM_Q4X16_BLK);
  assert_int_equal(qlm_q4_0x16_bytes(rows, 33), 0);
  uint8_t *w = random_q4_0(rows, cols, &rng), *p = packed(w, rows, cols);
  for (int64_t r = 0; r < 48; r++)
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *blk = p + ((size_t)(r / 16) * (size_t)nb + (size_t)b) * QLM_Q4X16_BLK;
      int i = (int)(r % 16);
      const uint8_t *f = r < rows ? w + (size_t)r * 18 * (size_t)nb + (size_t)b * 18 : NULL;
      for (int e = 0; e < 32; e++) assert_int_equal(packed_code(blk, i, e), f ? file_code(f, e) : 0);
      assert_int_equal(qlm_rd16(blk + 256 + 2 * i), f ? qlm_rd16(f) : 0);
    }
  /* packing group ranges separately writes the same bytes */
  uint8_t *q = malloc(qlm_q4_0x16_bytes(rows, cols));
  assert_non_null(q);
  qlm_q4_0x16_pack(w, 18 * (size_t)nb, rows, cols, 1, 3, q);
  qlm_q4_0x16_pack(w, 18 * (size_t)nb, rows, cols, 0, 1, q);
  assert_memory_equal(p, q, qlm_q4_0x16_bytes(rows, cols));
  free(w), free(p), free(q);
}

/* Activation blocks: the Q8_0 quantizer's bytes at every SIMD level. */
static void test_activations(void **st) {
  (void)st;
  uint64_t rng = 12;
  enum { N = 32 * 19 };
  float x[N];
  for (int i = 0; i < N; i++) x[i] = unif(&rng) * (i % 9 == 0 ? 50.0f : 1.0f);
  for (int i = 64; i < 96; i++) x[i] = 0.0f;
  uint8_t q8[19 * 34], a[19 * QLM_Q4X16_ABLK];
  qlm_quantize_q8_0(x, q8, N);
  for (int lv = QLM_SIMD_SCALAR; lv <= (int)qlm_cpu_detect(); lv++) {
    memset(a, 0x5A, sizeof a);
    qlm_q4_0x16_quantize_act(x, N, a, (qlm_simd_level)lv);
    for (int b = 0; b < 19; b++) {
      const uint8_t *y = q8 + 34 * b, *ab = a + QLM_Q4X16_ABLK * b;
      int32_t sum = 0, corr;
      float d;
      for (int k = 0; k < 32; k++) sum += (int8_t)y[2 + k];
      assert_memory_equal(ab, y + 2, 32);
      memcpy(&d, ab + 32, 4);
      memcpy(&corr, ab + 36, 4);
      assert_true(d == qlm_rdhalf(y));
      assert_int_equal(corr, -8 * sum);
    }
  }
}

/* sum_b |d_w d_a isum_b| of one pair, from the file blocks and the Q8_0 row. */
static double term_mag(const uint8_t *w, const uint8_t *a, int64_t nb) {
  double mag = 0;
  for (int64_t b = 0; b < nb; b++, w += 18, a += 34) {
    int isum = 0;
    for (int e = 0; e < 32; e++) isum += (file_code(w, e) - 8) * (int8_t)a[2 + e];
    mag += fabs((double)qlm_rdhalf(w) * qlm_rdhalf(a) * isum);
  }
  return mag;
}

/* Both kernels against qlm_vec_dot_q4_0_ref on T activation rows. */
static void check_kernels(int64_t rows, int64_t cols, int64_t T, uint64_t *rng) {
  int64_t nb = cols / 32;
  uint8_t *w = random_q4_0(rows, cols, rng), *p = packed(w, rows, cols);
  float *X = malloc(sizeof(float) * (size_t)(T * cols)), *Y = malloc(sizeof(float) * (size_t)(T * rows));
  uint8_t *q8 = malloc((size_t)(T * nb) * 34), *act = malloc((size_t)(T * nb) * QLM_Q4X16_ABLK);
  assert_true(X && Y && q8 && act);
  for (int64_t i = 0; i < T * cols; i++) X[i] = unif(rng) * (i % 7 == 0 ? 4.0f : 1.0f);
  for (int64_t t = 0; t < T; t++) {
    qlm_quantize_q8_0(X + t * cols, q8 + (size_t)(t * nb) * 34, cols);
    qlm_q4_0x16_quantize_act(X + t * cols, cols, act + (size_t)(t * nb) * QLM_Q4X16_ABLK, QLM_SIMD_SCALAR);
  }
  int simd = qlm_x16_supported(QLM_SIMD_AVX512);
  for (int k = 0; k < 1 + simd; k++) {
    for (int64_t i = 0; i < T * rows; i++) Y[i] = NAN;
    (k ? qlm_q4_0x16_gemm_avx512vnni : qlm_q4_0x16_gemm_scalar)(p, nb, rows, 0, (rows + 15) / 16, act, T, Y, rows);
    for (int64_t t = 0; t < T; t++)
      for (int64_t r = 0; r < rows; r++) {
        const uint8_t *wr = w + (size_t)(r * nb) * 18, *ar = q8 + (size_t)(t * nb) * 34;
        float ref = qlm_vec_dot_q4_0_ref(wr, ar, cols), y = Y[t * rows + r];
        double tol = k ? 2.0 * (double)(nb + 1) * ldexp(1.0, -24) * term_mag(wr, ar, nb) : 0.0;
        if (!(fabs((double)y - ref) <= tol))
          fail_msg("%s rows %lld cols %lld T %lld: Y[%lld][%lld] = %.9g, ref %.9g (tol %.3g)", k ? "avx512" : "scalar",
                   (long long)rows, (long long)cols, (long long)T, (long long)t, (long long)r, (double)y, (double)ref,
                   tol);
      }
  }
  free(w), free(p), free(X), free(Y), free(q8), free(act);
}

static void test_kernels_equal_reference(void **st) {
  (void)st;
  uint64_t rng = 13;
  const int64_t shapes[][3] = {{1, 32, 1}, {16, 64, 2}, {37, 256, 3}, {300, 4096, 9}, {48, 11008, 17}, {5, 96, 8}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) check_kernels(shapes[s][0], shapes[s][1], shapes[s][2], &rng);
}

/* qlm_matmul_ex with the copy: bit-identical to the gemm_q tile (same operations) at T >= 16,
 * and each activation row's result independent of T, threads and qlm_matmul_group. */
static void test_matmul(void **st) {
  (void)st;
  qlm_simd_level lv = qlm_cpu_simd_level();
  if (!qlm_x16_supported(lv)) skip();
  uint64_t rng = 14;
  const int64_t rows = 200, rows2 = 40, cols = 512, T = 19;
  uint8_t *w = random_q4_0(rows, cols, &rng), *w2 = random_q4_0(rows2, cols, &rng);
  uint8_t *p = packed(w, rows, cols), *p2 = packed(w2, rows2, cols);
  float *X = malloc(sizeof(float) * T * cols), *Y = malloc(sizeof(float) * T * rows), *Z = malloc(sizeof(float) * T * rows);
  float y1[200], y2[40], z2[40];
  assert_true(X && Y && Z);
  for (int64_t i = 0; i < T * cols; i++) X[i] = unif(&rng);
  size_t rb = qlm_type_row_bytes(QLM_TYPE_Q4_0, cols);
  qlm_mat plain = {.type = QLM_TYPE_Q4_0, .rows = rows, .cols = cols, .data = w, .row_bytes = rb};
  qlm_mat W = plain, W2 = {.type = QLM_TYPE_Q4_0, .rows = rows2, .cols = cols, .data = w2, .row_bytes = rb, .x16 = p2};
  W.x16 = p;
  qlm_pool *pools[3] = {NULL, qlm_pool_new(2), qlm_pool_new(3)};
  qlm_matmul_ex(&plain, X, T, Z, NULL, lv, 1); /* T >= 16: the gemm_q tile */
  for (int k = 0; k < 3; k++) {
    memset(Y, 0, sizeof(float) * T * rows);
    qlm_matmul_ex(&W, X, T, Y, pools[k], lv, 1);
    if (qlm_gemm_q_fast(QLM_TYPE_Q4_0, lv)) assert_memory_equal(Y, Z, sizeof(float) * T * rows);
    for (int64_t t = 0; t < T; t += 6) { /* one row alone, as decode computes it */
      qlm_matmul_ex(&W, X + t * cols, 1, y1, pools[k], lv, 1);
      assert_memory_equal(y1, Y + t * rows, sizeof y1);
    }
  }
  /* the group call: the same bits as separate calls */
  const qlm_mat *Ws[2] = {&W, &W2};
  float *Ys[2] = {y1, y2};
  qlm_matmul_group(Ws, Ys, 2, X + 3 * cols, 1, pools[1]);
  qlm_matmul_ex(&W2, X + 3 * cols, 1, z2, NULL, lv, 1);
  assert_memory_equal(y1, Y + 3 * rows, sizeof y1);
  assert_memory_equal(y2, z2, sizeof y2);
  for (int k = 1; k < 3; k++) qlm_pool_free(pools[k]);
  free(w), free(w2), free(p), free(p2), free(X), free(Y), free(Z);
}

/* ---- stories260K in Q4_0, with and without the copy */

typedef struct run {
  qlm_source *src;
  qlm_model *model;
  qlm_state *state;
} run;

static void open_run(const char *path, const char *x16, run *r) {
  qlm_error err = {0};
  setenv("QLM_X16", x16, 1);
  if (qlm_source_open(path, NULL, &r->src, &err) || qlm_model_load(r->src, &r->model, &err) ||
      qlm_state_new(r->model, 1, 256, 64, 2, &r->state, &err))
    fail_msg("%s", err.msg);
  unsetenv("QLM_X16");
}

static void close_run(run *r) {
  qlm_state_free(r->state);
  qlm_model_free(r->model);
  qlm_source_close(r->src);
}

static float *batch_logits(run *r, const int32_t *ids, int n) {
  int V = r->model->hp.n_vocab;
  float *logits = malloc(sizeof(float) * (size_t)(n * V));
  int32_t pos[64], seq[64] = {0};
  for (int i = 0; i < n; i++) pos[i] = i;
  qlm_error err = {0};
  qlm_batch b = {.n = n, .token = ids, .pos = pos, .seq = seq};
  if (qlm_forward(r->model, r->state, &b, logits, &err)) fail_msg("%s", err.msg);
  return logits;
}

static void greedy(run *r, int32_t *out, int n) {
  qlm_error err = {0};
  int32_t tok = 1;
  int V = r->model->hp.n_vocab;
  float *logits = malloc(sizeof(float) * (size_t)V);
  qlm_state_clear(r->state, 0);
  for (int i = 0; i < n; i++) {
    int32_t pos = i, seq = 0;
    qlm_batch b = {.n = 1, .token = &tok, .pos = &pos, .seq = &seq};
    if (qlm_forward(r->model, r->state, &b, logits, &err)) fail_msg("%s", err.msg);
    tok = out[i] = qlm_argmax(logits, V);
  }
  free(logits);
}

static void test_model(void **st) {
  (void)st;
  if (!qlm_x16_supported(qlm_cpu_simd_level())) skip();
  char *model = tu_shared("models/stories260K/stories260K.gguf"), *dir = tu_tmpdir(), args[2048], out[512];
  snprintf(out, sizeof out, "%s/q4_0.gguf", dir);
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --type q4_0", model, out);
  tu_run q = tu_run_qlm("", args);
  if (q.status) fail_msg("%s", q.err);
  tu_run_free(&q);
  run a, b;
  open_run(out, "1", &a);
  open_run(out, "0", &b);
  /* the copy exists for the Q4_0 matrices (w_gate: 172 rows, a partial last group) */
  assert_int_equal(a.model->layers[0].wq.type, QLM_TYPE_Q4_0);
  assert_non_null(a.model->layers[0].wq.x16);
  assert_non_null(a.model->layers[0].w_gate.x16);
  assert_null(b.model->layers[0].wq.x16);
  int32_t ids[64];
  for (int i = 0; i < 64; i++) ids[i] = 1 + (i * 37) % 500;
  float *la = batch_logits(&a, ids, 64), *lb = batch_logits(&b, ids, 64);
  if (qlm_gemm_q_fast(QLM_TYPE_Q4_0, qlm_cpu_simd_level()))
    assert_memory_equal(la, lb, sizeof(float) * 64 * (size_t)a.model->hp.n_vocab);
  int32_t ga[64], gb[64];
  greedy(&a, ga, 64);
  greedy(&b, gb, 64);
  assert_memory_equal(ga, gb, sizeof ga);
  free(la), free(lb);
  close_run(&a), close_run(&b);
  free(model), free(dir);
}

/* ---- Q4_K */

/* Random Q4_K rows: random bytes (codes and the packed 6-bit scales and mins), sane d and dmin. */
static uint8_t *random_q4_k(int64_t rows, int64_t cols, uint64_t *rng) {
  size_t n = qlm_type_row_bytes(QLM_TYPE_Q4_K, cols) * (size_t)rows;
  uint8_t *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next(rng);
  for (size_t o = 0; o < n; o += 144) {
    qlm_wr16(b + o, qlm_f32_to_f16(0.001f + 0.002f * fabsf(unif(rng))));
    qlm_wr16(b + o + 2, qlm_f32_to_f16(0.001f * fabsf(unif(rng))));
  }
  return b;
}

static uint8_t *packed_k(const uint8_t *w, int64_t rows, int64_t cols) {
  size_t n = qlm_q4_kx16_bytes(rows, cols);
  uint8_t *p = malloc(n);
  assert_non_null(p);
  memset(p, 0xA5, n);
  qlm_q4_kx16_pack(w, qlm_type_row_bytes(QLM_TYPE_Q4_K, cols), rows, cols, 0, (rows + 15) / 16, p);
  return p;
}

static void test_k_layout(void **st) {
  (void)st;
  uint64_t rng = 21;
  const int64_t rows = 21, cols = 512, nsb = 2;
  assert_int_equal(qlm_q4_kx16_bytes(rows, cols), 2 * nsb * QLM_Q4KX16_BLK);
  assert_int_equal(qlm_q4_kx16_bytes(rows, 288), 0);
  uint8_t *w = random_q4_k(rows, cols, &rng), *p = packed_k(w, rows, cols);
  for (int64_t r = 0; r < 32; r++)
    for (int64_t s = 0; s < nsb; s++) {
      const uint8_t *blk = p + ((size_t)(r / 16) * (size_t)nsb + (size_t)s) * QLM_Q4KX16_BLK;
      const uint8_t *f = r < rows ? w + ((size_t)r * (size_t)nsb + (size_t)s) * 144 : NULL;
      int i = (int)(r % 16);
      for (int e = 0; e < 256; e++) { /* the file: byte qs[32 (e / 64) + e % 32], high nibble in the 2nd half */
        int want = f ? (e % 64 < 32 ? f[16 + 32 * (e / 64) + e % 32] & 0xF : f[16 + 32 * (e / 64) + e % 32] >> 4) : 0;
        int j = e / 32, k = e % 32; /* sub-block j, vector 8 (j / 2) + k / 4, byte k % 4 of lane i */
        uint8_t byte = blk[64 * (8 * (j / 2) + k / 4) + 4 * i + k % 4];
        assert_int_equal(j % 2 ? byte >> 4 : byte & 0xF, want);
      }
      for (int j = 0; j < 8; j++) {
        int sc = 0, mn = 0;
        if (f) qlm_k4_scale_min(f + 4, j, &sc, &mn);
        assert_int_equal(blk[2048 + 16 * j + i], sc);
        assert_int_equal(blk[2176 + 32 * (j / 2) + 2 * i + j % 2], mn);
      }
      assert_int_equal(qlm_rd16(blk + 2304 + 2 * i), f ? qlm_rd16(f) : 0);
      assert_int_equal(qlm_rd16(blk + 2336 + 2 * i), f ? qlm_rd16(f + 2) : 0);
    }
  free(w), free(p);
}

static void test_k_activations(void **st) {
  (void)st;
  uint64_t rng = 22;
  enum { N = 256 * 3 };
  float x[N];
  for (int i = 0; i < N; i++) x[i] = unif(&rng) * (i % 11 == 0 ? 30.0f : 1.0f);
  uint8_t q8[3 * 292], a[3 * QLM_Q4KX16_ABLK];
  qlm_quantize_q8_k(x, q8, N);
  for (int lv = QLM_SIMD_SCALAR; lv <= (int)qlm_cpu_detect(); lv++) {
    memset(a, 0x5A, sizeof a);
    qlm_q4_kx16_quantize_act(x, N, a, (qlm_simd_level)lv);
    for (int s = 0; s < 3; s++) {
      const uint8_t *y = q8 + 292 * s, *ab = a + QLM_Q4KX16_ABLK * s;
      assert_memory_equal(ab, y + 4, 256);
      assert_memory_equal(ab + 256, y, 4);
      for (int j = 0; j < 8; j++) {
        int sum = 0;
        for (int e = 0; e < 32; e++) sum += (int8_t)y[4 + 32 * j + e];
        assert_int_equal((int16_t)qlm_rd16(ab + 260 + 2 * j), sum);
      }
    }
  }
}

/* Both kernels, and qlm_matmul_ex with the copy at 1 and 2 threads: the reference's bits. */
static void check_k(int64_t rows, int64_t cols, int64_t T, qlm_pool *pool, uint64_t *rng) {
  int64_t nsb = cols / 256;
  size_t wrow = qlm_type_row_bytes(QLM_TYPE_Q4_K, cols);
  uint8_t *w = random_q4_k(rows, cols, rng), *p = packed_k(w, rows, cols);
  float *X = malloc(sizeof(float) * (size_t)(T * cols)), *Y = malloc(sizeof(float) * (size_t)(T * rows));
  uint8_t *q8 = malloc((size_t)(T * nsb) * 292), *act = malloc((size_t)(T * nsb) * QLM_Q4KX16_ABLK);
  assert_true(X && Y && q8 && act);
  for (int64_t i = 0; i < T * cols; i++) X[i] = unif(rng) * (i % 7 == 0 ? 4.0f : 1.0f);
  for (int64_t t = 0; t < T; t++) {
    qlm_quantize_q8_k(X + t * cols, q8 + (size_t)(t * nsb) * 292, cols);
    qlm_q4_kx16_quantize_act(X + t * cols, cols, act + (size_t)(t * nsb) * QLM_Q4KX16_ABLK, QLM_SIMD_SCALAR);
  }
  qlm_simd_level lv = qlm_cpu_simd_level();
  int simd = qlm_x16_supported(lv);
  qlm_mat W = {.type = QLM_TYPE_Q4_K, .rows = rows, .cols = cols, .data = w, .row_bytes = wrow, .x16 = p};
  /* paths: 0 the scalar kernel; with AVX-512 VNNI also 1 its kernel and 2 qlm_matmul_ex */
  for (int k = 0; k < (simd ? 3 : 1); k++) {
    for (int64_t i = 0; i < T * rows; i++) Y[i] = NAN;
    if (k == 0) qlm_q4_kx16_gemm_scalar(p, nsb, rows, 0, (rows + 15) / 16, act, T, Y, rows);
    else if (k == 1) qlm_q4_kx16_gemm_avx512vnni(p, nsb, rows, 0, (rows + 15) / 16, act, T, Y, rows);
    else qlm_matmul_ex(&W, X, T, Y, pool, lv, 1);
    for (int64_t t = 0; t < T; t++)
      for (int64_t r = 0; r < rows; r++) {
        float ref = qlm_vec_dot_q4_k_ref(w + (size_t)r * wrow, q8 + (size_t)(t * nsb) * 292, cols);
        if (!(Y[t * rows + r] == ref))
          fail_msg("path %d rows %lld cols %lld T %lld: Y[%lld][%lld] = %.9g, ref %.9g", k, (long long)rows,
                   (long long)cols, (long long)T, (long long)t, (long long)r, (double)Y[t * rows + r], (double)ref);
      }
  }
  free(w), free(p), free(X), free(Y), free(q8), free(act);
}

static void test_k_kernels_equal_reference(void **st) {
  (void)st;
  uint64_t rng = 23;
  qlm_pool *pool = qlm_pool_new(2);
  const int64_t shapes[][3] = {{1, 256, 1}, {16, 512, 2}, {37, 256, 3}, {100, 4096, 9}, {20, 11008, 17}, {5, 768, 8}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int pl = 0; pl < 2; pl++) check_k(shapes[s][0], shapes[s][1], shapes[s][2], pl ? pool : NULL, &rng);
  qlm_pool_free(pool);
}

/* ---- Q4_1 and Q5_0: the same checks, from a description of each */

typedef struct blk32_kind {
  int type;
  size_t wb;        /* bytes of a file block */
  int qs;           /* offset of its nibbles */
  int q8_1;         /* activations in Q8_1 (else Q8_0) */
  size_t xblk, ablk;
  size_t (*bytes)(int64_t rows, int64_t cols);
  void (*pack)(const void *w, size_t row_bytes, int64_t rows, int64_t cols, int64_t g0, int64_t g1, void *dst);
  void (*quantize_act)(const float *x, int64_t cols, void *dst, qlm_simd_level level);
  void (*gemm_scalar)(const void *, int64_t, int64_t, int64_t, int64_t, const void *, int64_t, float *, int64_t);
  void (*gemm_vnni)(const void *, int64_t, int64_t, int64_t, int64_t, const void *, int64_t, float *, int64_t);
  float (*ref)(const void *w, const void *a, int64_t n);
  int offset;       /* Q8_0 activations: the stored -offset * sum(q) */
} blk32_kind;

static const blk32_kind K_Q4_1 = {QLM_TYPE_Q4_1, 20, 4, 1, QLM_Q41X16_BLK, QLM_Q41X16_ABLK, qlm_q4_1x16_bytes,
                                  qlm_q4_1x16_pack, qlm_q4_1x16_quantize_act, qlm_q4_1x16_gemm_scalar,
                                  qlm_q4_1x16_gemm_avx512vnni, qlm_vec_dot_q4_1_ref, 0};
static const blk32_kind K_Q5_0 = {QLM_TYPE_Q5_0, 22, 6, 0, QLM_Q50X16_BLK, QLM_Q50X16_ABLK, qlm_q5_0x16_bytes,
                                  qlm_q5_0x16_pack, qlm_q5_0x16_quantize_act, qlm_q5_0x16_gemm_scalar,
                                  qlm_q5_0x16_gemm_avx512vnni, qlm_vec_dot_q5_0_ref, 16};

/* Random rows: random bytes, then sane half scales (d small and positive; Q4_1's m either sign). */
static uint8_t *random_blk32(const blk32_kind *k, int64_t rows, int64_t cols, uint64_t *rng) {
  size_t n = qlm_type_row_bytes(k->type, cols) * (size_t)rows;
  uint8_t *b = malloc(n);
  assert_non_null(b);
  for (size_t i = 0; i < n; i++) b[i] = (uint8_t)next(rng);
  for (size_t o = 0; o < n; o += k->wb) {
    qlm_wr16(b + o, qlm_f32_to_f16(0.002f + 0.01f * fabsf(unif(rng))));
    if (k->type == QLM_TYPE_Q4_1) qlm_wr16(b + o + 2, qlm_f32_to_f16(0.08f * unif(rng)));
  }
  return b;
}

static uint8_t *packed_blk32(const blk32_kind *k, const uint8_t *w, int64_t rows, int64_t cols) {
  size_t n = k->bytes(rows, cols);
  uint8_t *p = malloc(n);
  assert_non_null(p);
  memset(p, 0xA5, n);
  k->pack(w, qlm_type_row_bytes(k->type, cols), rows, cols, 0, (rows + 15) / 16, p);
  return p;
}

/* Row i's code e of a packed block and of its file block f (NULL: padding, 0), by the headers'
 * index arithmetic: the nibble as for Q4_0; Q5_0's fifth bit (file: bit e of the u32 at byte 2)
 * at bit (e < 16 ? e / 4 : 4 + (e - 16) / 4) of byte e % 4 of the row's dword at 256. */
static int blk32_code(const blk32_kind *k, const uint8_t *blk, int i, int e) {
  int c = packed_code(blk, i, e);
  if (k->type == QLM_TYPE_Q5_0) c |= ((blk[256 + 4 * i + e % 4] >> (e < 16 ? e / 4 : 4 + (e - 16) / 4)) & 1) << 4;
  return c;
}
static int blk32_file_code(const blk32_kind *k, const uint8_t *f, int e) {
  if (!f) return 0;
  int c = e < 16 ? f[k->qs + e] & 0xF : f[k->qs + e - 16] >> 4;
  if (k->type == QLM_TYPE_Q5_0) c |= (int)((qlm_rd32(f + 2) >> e) & 1) << 4;
  return c;
}

static void check_blk32_layout(const blk32_kind *k, uint64_t *rng) {
  const int64_t rows = 37, cols = 96, nb = cols / 32;
  int d_at = k->type == QLM_TYPE_Q5_0 ? 320 : 256; /* the half d; Q4_1's m follows at 288 */
  assert_int_equal(k->bytes(rows, cols), 3 * nb * k->xblk);
  assert_int_equal(k->bytes(rows, 33), 0);
  uint8_t *w = random_blk32(k, rows, cols, rng), *p = packed_blk32(k, w, rows, cols);
  for (int64_t r = 0; r < 48; r++)
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *blk = p + ((size_t)(r / 16) * (size_t)nb + (size_t)b) * k->xblk;
      int i = (int)(r % 16);
      const uint8_t *f = r < rows ? w + ((size_t)r * (size_t)nb + (size_t)b) * k->wb : NULL;
      for (int e = 0; e < 32; e++) assert_int_equal(blk32_code(k, blk, i, e), blk32_file_code(k, f, e));
      assert_int_equal(qlm_rd16(blk + d_at + 2 * i), f ? qlm_rd16(f) : 0);
      if (k->type == QLM_TYPE_Q4_1) assert_int_equal(qlm_rd16(blk + 288 + 2 * i), f ? qlm_rd16(f + 2) : 0);
    }
  uint8_t *q = malloc(k->bytes(rows, cols)); /* group ranges packed separately: the same bytes */
  assert_non_null(q);
  k->pack(w, k->wb * (size_t)nb, rows, cols, 1, 3, q);
  k->pack(w, k->wb * (size_t)nb, rows, cols, 0, 1, q);
  assert_memory_equal(p, q, k->bytes(rows, cols));
  free(w), free(p), free(q);
}

/* Activation blocks: the Q8_0 / Q8_1 quantizer's q and d, and -offset * sum(q) or s, at every
 * SIMD level. */
static void check_blk32_activations(const blk32_kind *k, uint64_t *rng) {
  enum { N = 32 * 19 };
  float x[N];
  for (int i = 0; i < N; i++) x[i] = unif(rng) * (i % 9 == 0 ? 50.0f : 1.0f);
  for (int i = 64; i < 96; i++) x[i] = 0.0f;
  size_t yb = k->q8_1 ? 36 : 34, yq = k->q8_1 ? 4 : 2;
  uint8_t q8[19 * 36], a[19 * QLM_X16_ABLK32];
  if (k->q8_1) qlm_quantize_q8_1(x, q8, N);
  else qlm_quantize_q8_0(x, q8, N);
  for (int lv = QLM_SIMD_SCALAR; lv <= (int)qlm_cpu_detect(); lv++) {
    memset(a, 0x5A, sizeof a);
    k->quantize_act(x, N, a, (qlm_simd_level)lv);
    for (int b = 0; b < 19; b++) {
      const uint8_t *y = q8 + yb * (size_t)b, *ab = a + k->ablk * (size_t)b;
      float d, s;
      int32_t sum = 0, corr;
      for (int e = 0; e < 32; e++) sum += (int8_t)y[yq + e];
      assert_memory_equal(ab, y + yq, 32);
      memcpy(&d, ab + 32, 4);
      assert_true(d == qlm_rdhalf(y));
      memcpy(&s, ab + 36, 4), memcpy(&corr, ab + 36, 4);
      if (k->q8_1) assert_true(s == qlm_rdhalf(y + 2));
      else assert_int_equal(corr, -k->offset * sum);
    }
  }
}

/* Both kernels, and qlm_matmul_ex with the copy (1 and 2 threads, any T): the reference's bits. */
static void check_blk32(const blk32_kind *k, int64_t rows, int64_t cols, int64_t T, qlm_pool *pool, uint64_t *rng) {
  int64_t nb = cols / 32;
  size_t wrow = qlm_type_row_bytes(k->type, cols), yb = k->q8_1 ? 36 : 34;
  uint8_t *w = random_blk32(k, rows, cols, rng), *p = packed_blk32(k, w, rows, cols);
  float *X = malloc(sizeof(float) * (size_t)(T * cols)), *Y = malloc(sizeof(float) * (size_t)(T * rows));
  uint8_t *q8 = malloc((size_t)(T * nb) * yb), *act = malloc((size_t)(T * nb) * k->ablk);
  assert_true(X && Y && q8 && act);
  for (int64_t i = 0; i < T * cols; i++) X[i] = unif(rng) * (i % 7 == 0 ? 4.0f : 1.0f);
  for (int64_t t = 0; t < T; t++) {
    if (k->q8_1) qlm_quantize_q8_1(X + t * cols, q8 + (size_t)(t * nb) * yb, cols);
    else qlm_quantize_q8_0(X + t * cols, q8 + (size_t)(t * nb) * yb, cols);
    k->quantize_act(X + t * cols, cols, act + (size_t)(t * nb) * k->ablk, QLM_SIMD_SCALAR);
  }
  qlm_simd_level lv = qlm_cpu_simd_level();
  int simd = qlm_x16_supported(lv);
  qlm_mat W = {.type = k->type, .rows = rows, .cols = cols, .data = w, .row_bytes = wrow, .x16 = p};
  for (int path = 0; path < (simd ? 3 : 1); path++) { /* 0 the scalar kernel, 1 the VNNI one, 2 qlm_matmul_ex */
    for (int64_t i = 0; i < T * rows; i++) Y[i] = NAN;
    if (path == 0) k->gemm_scalar(p, nb, rows, 0, (rows + 15) / 16, act, T, Y, rows);
    else if (path == 1) k->gemm_vnni(p, nb, rows, 0, (rows + 15) / 16, act, T, Y, rows);
    else qlm_matmul_ex(&W, X, T, Y, pool, lv, 1);
    for (int64_t t = 0; t < T; t++)
      for (int64_t r = 0; r < rows; r++) {
        float ref = k->ref(w + (size_t)r * wrow, q8 + (size_t)(t * nb) * yb, cols);
        if (!(Y[t * rows + r] == ref))
          fail_msg("%s path %d rows %lld cols %lld T %lld: Y[%lld][%lld] = %.9g, ref %.9g", qlm_type_name(k->type),
                   path, (long long)rows, (long long)cols, (long long)T, (long long)t, (long long)r,
                   (double)Y[t * rows + r], (double)ref);
      }
  }
  free(w), free(p), free(X), free(Y), free(q8), free(act);
}

static void check_blk32_kernels(const blk32_kind *k, uint64_t *rng) {
  qlm_pool *pool = qlm_pool_new(2);
  const int64_t shapes[][3] = {{1, 32, 1}, {16, 64, 2}, {37, 576, 3}, {100, 4096, 9}, {20, 1536, 17}, {5, 96, 8}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int pl = 0; pl < 2; pl++) check_blk32(k, shapes[s][0], shapes[s][1], shapes[s][2], pl ? pool : NULL, rng);
  qlm_pool_free(pool);
}

static void test_1_layout(void **st) {
  (void)st;
  uint64_t rng = 31;
  check_blk32_layout(&K_Q4_1, &rng);
}
static void test_1_activations(void **st) {
  (void)st;
  uint64_t rng = 32;
  check_blk32_activations(&K_Q4_1, &rng);
}
static void test_1_kernels_equal_reference(void **st) {
  (void)st;
  uint64_t rng = 33;
  check_blk32_kernels(&K_Q4_1, &rng);
}
static void test_5_layout(void **st) {
  (void)st;
  uint64_t rng = 41;
  check_blk32_layout(&K_Q5_0, &rng);
}
static void test_5_activations(void **st) {
  (void)st;
  uint64_t rng = 42;
  check_blk32_activations(&K_Q5_0, &rng);
}
static void test_5_kernels_equal_reference(void **st) {
  (void)st;
  uint64_t rng = 43;
  check_blk32_kernels(&K_Q5_0, &rng);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_activations),
      cmocka_unit_test(test_kernels_equal_reference),
      cmocka_unit_test(test_matmul),
      cmocka_unit_test(test_model),
      cmocka_unit_test(test_k_layout),
      cmocka_unit_test(test_k_activations),
      cmocka_unit_test(test_k_kernels_equal_reference),
      cmocka_unit_test(test_1_layout),
      cmocka_unit_test(test_1_activations),
      cmocka_unit_test(test_1_kernels_equal_reference),
      cmocka_unit_test(test_5_layout),
      cmocka_unit_test(test_5_activations),
      cmocka_unit_test(test_5_kernels_equal_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
