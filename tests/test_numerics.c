/* test_numerics.c — NaN/Inf guards (model/numerics.h): a GGUF written here with one NaN weight
 * must fail to load naming the tensor and element; --allow-nonfinite (qlm_set_allow_nonfinite)
 * loads it and the evaluation guard then names the position and output of the NaN logits. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/fp16.h"
#include "formats/source.h"
#include "model/model.h"
#include "model/numerics.h"
#include "testutil.h"

enum { E = 8, F = 16, H = 2, KV = 1, V = 16, HD = E / H };

typedef struct buf {
  unsigned char *p;
  size_t n;
} buf;

static void put(buf *b, const void *d, size_t n) {
  b->p = realloc(b->p, b->n + n);
  assert_non_null(b->p);
  memcpy(b->p + b->n, d, n);
  b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
  put_u64(b, strlen(s));
  put(b, s, strlen(s));
}
static void kv_u32(buf *b, const char *k, uint32_t v) {
  put_str(b, k);
  put_u32(b, 4); /* GGUF value type uint32 */
  put_u32(b, v);
}

typedef struct tdesc {
  const char *name;
  int n_dims;
  uint64_t ne[2];
} tdesc;

static const tdesc k_tensors[] = {
  {"token_embd.weight", 2, {E, V}},       {"output_norm.weight", 1, {E, 1}},
  {"blk.0.attn_norm.weight", 1, {E, 1}},  {"blk.0.attn_q.weight", 2, {E, E}},
  {"blk.0.attn_k.weight", 2, {E, KV * HD}}, {"blk.0.attn_v.weight", 2, {E, KV * HD}},
  {"blk.0.attn_output.weight", 2, {E, E}}, {"blk.0.ffn_norm.weight", 1, {E, 1}},
  {"blk.0.ffn_gate.weight", 2, {E, F}},   {"blk.0.ffn_up.weight", 2, {E, F}},
  {"blk.0.ffn_down.weight", 2, {F, E}},
};
#define N_TENSORS (sizeof k_tensors / sizeof *k_tensors)

/* A one-layer LLaMA GGUF v3 with f32 tensors (small deterministic values; norms 1);
 * element `bad_elem` of tensor `bad_tensor` (or none when NULL) is set to `bad`. */
static char *write_model(const char *dir, const char *bad_tensor, int bad_elem, float bad) {
  buf h = {0}, d = {0};
  put(&h, "GGUF", 4);
  put_u32(&h, 3);
  put_u64(&h, N_TENSORS);
  put_u64(&h, 7);
  put_str(&h, "general.architecture");
  put_u32(&h, 8); /* string */
  put_str(&h, "llama");
  kv_u32(&h, "llama.embedding_length", E);
  kv_u32(&h, "llama.feed_forward_length", F);
  kv_u32(&h, "llama.block_count", 1);
  kv_u32(&h, "llama.attention.head_count", H);
  kv_u32(&h, "llama.attention.head_count_kv", KV);
  kv_u32(&h, "llama.context_length", 32);
  uint32_t seed = 1;
  for (size_t t = 0; t < N_TENSORS; t++) {
    const tdesc *td = &k_tensors[t];
    size_t cnt = td->ne[0] * td->ne[1];
    put_str(&h, td->name);
    put_u32(&h, (uint32_t)td->n_dims);
    for (int k = 0; k < td->n_dims; k++) put_u64(&h, td->ne[k]);
    put_u32(&h, 0); /* f32 */
    put_u64(&h, d.n);
    for (size_t i = 0; i < cnt; i++) {
      seed = seed * 1103515245u + 12345u;
      float v = strstr(td->name, "norm") ? 1.0f : ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.2f;
      if (bad_tensor && !strcmp(td->name, bad_tensor) && (int)i == bad_elem) v = bad;
      put(&d, &v, 4);
    }
    static const unsigned char zeros[32];
    put(&d, zeros, (32 - d.n % 32) % 32);
  }
  static const unsigned char zeros[32];
  put(&h, zeros, (32 - h.n % 32) % 32);
  put(&h, d.p, d.n);
  char *path = NULL;
  assert_true(asprintf(&path, "%s/m.gguf", dir) > 0);
  tu_write_file(path, h.p, h.n);
  free(h.p);
  free(d.p);
  return path;
}

static void cleanup(char *dir, char *path) {
  remove(path);
  rmdir(dir);
  free(path);
  free(dir);
}

static int load(const char *path, qlm_source **src, qlm_model **m, qlm_error *err) {
  int rc = qlm_gguf_open(path, src, err);
  assert_int_equal(rc, QLM_OK);
  return qlm_model_load(*src, m, err);
}

/* logits of token 1 at position 0 */
static void run_one(const qlm_model *m, float *logits) {
  qlm_state *s = NULL;
  qlm_error err = {0};
  assert_int_equal(qlm_state_new(m, 1, 4, 1, 1, &s, &err), QLM_OK);
  int32_t tok = 1, pos = 0, seq = 0;
  qlm_batch b = {.n = 1, .token = &tok, .pos = &pos, .seq = &seq};
  assert_int_equal(qlm_forward(m, s, &b, logits, &err), QLM_OK);
  qlm_state_free(s);
}

static void test_clean_model_loads(void **state) {
  char *dir = tu_tmpdir(), *path = write_model(dir, NULL, 0, 0);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_error err = {0};
  assert_int_equal(load(path, &src, &m, &err), QLM_OK);
  float logits[V];
  run_one(m, logits);
  assert_int_equal(qlm_first_nonfinite(logits, V), -1);
  assert_int_equal(qlm_check_logits(logits, V, 0, "test", &err), QLM_OK);
  qlm_model_free(m);
  qlm_source_close(src);
  cleanup(dir, path);
}

static void test_nan_weight_named(void **state) {
  char *dir = tu_tmpdir(), *path = write_model(dir, "blk.0.ffn_up.weight", 21, NAN);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_error err = {0};
  assert_int_equal(load(path, &src, &m, &err), QLM_EFORMAT);
  assert_null(m);
  /* element 21 of a [E=8 x F] matrix: row 2, col 5 */
  assert_non_null(strstr(err.msg, "m.gguf: tensor 'blk.0.ffn_up.weight': element 21 (row 2, col 5) is NaN"));
  assert_non_null(strstr(err.msg, "--allow-nonfinite"));
  qlm_source_close(src);
  cleanup(dir, path);
}

static void test_inf_sign_reported(void **state) {
  char *dir = tu_tmpdir(), *path = write_model(dir, "token_embd.weight", 127, -INFINITY);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_error err = {0};
  assert_int_equal(load(path, &src, &m, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "tensor 'token_embd.weight': element 127 (row 15, col 7) is -Inf"));
  qlm_source_close(src);
  cleanup(dir, path);
}

/* --allow-nonfinite: the model loads; a NaN in the norm makes every logit NaN, which the
 * evaluation guard reports with the position and the first output index. */
static void test_allow_nonfinite(void **state) {
  char *dir = tu_tmpdir(), *path = write_model(dir, "output_norm.weight", 3, NAN);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_error err = {0};
  qlm_set_allow_nonfinite(true);
  assert_int_equal(load(path, &src, &m, &err), QLM_OK);
  float logits[V];
  run_one(m, logits);
  assert_int_equal(qlm_check_logits(logits, V, 0, "perplexity", &err), QLM_OK); /* allowed */
  qlm_set_allow_nonfinite(false);
  assert_int_equal(qlm_first_nonfinite(logits, V), 0);
  assert_int_equal(qlm_check_logits(logits, V, 17, "perplexity", &err), QLM_EINTERNAL);
  assert_non_null(strstr(err.msg, "perplexity: logits at position 17 are not finite: output 0 (token id) is NaN, 16 of 16"));
  qlm_model_free(m);
  qlm_source_close(src);
  cleanup(dir, path);
}

/* Block scales: a Q8_0 tensor (34-byte blocks, f16 d first) with block 1's d = +Inf (0x7C00),
 * and an f16 tensor with a NaN (0x7E00). */
static void test_block_scales(void **state) {
  unsigned char q[3 * 34];
  memset(q, 0, sizeof q);
  for (int b = 0; b < 3; b++) {
    uint16_t d = 0x3C00; /* 1.0 */
    memcpy(q + 34 * b, &d, 2);
  }
  qlm_tensor t = {.name = "blk.0.attn_q.weight", .type = QLM_TYPE_Q8_0, .n_dims = 2, .ne = {32, 3, 1, 1},
                  .data = q, .nbytes = sizeof q};
  qlm_error err = {0};
  assert_int_equal(qlm_check_tensor_finite(&t, "x.gguf", &err), QLM_OK);
  uint16_t inf = 0x7C00;
  memcpy(q + 34, &inf, 2);
  assert_int_equal(qlm_check_tensor_finite(&t, "x.gguf", &err), QLM_EFORMAT);
  assert_string_equal(err.msg, "x.gguf: tensor 'blk.0.attn_q.weight': block 1 scale d is +Inf (use --allow-nonfinite to load anyway)");
  /* Q4_1: the min m at offset 2 */
  unsigned char q41[2 * 20] = {0};
  uint16_t nan = 0x7E00;
  memcpy(q41 + 20 + 2, &nan, 2);
  qlm_tensor t41 = {.name = "w", .type = QLM_TYPE_Q4_1, .n_dims = 2, .ne = {32, 2, 1, 1}, .data = q41, .nbytes = sizeof q41};
  assert_int_equal(qlm_check_tensor_finite(&t41, "y.gguf", &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "block 1 scale m is NaN"));
  uint16_t h[4] = {0x3C00, 0x0000, 0xFE00, 0x3C00};
  qlm_tensor th = {.name = "n", .type = QLM_TYPE_F16, .n_dims = 1, .ne = {4, 1, 1, 1}, .data = h, .nbytes = sizeof h};
  assert_int_equal(qlm_check_tensor_finite(&th, "z.gguf", &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "tensor 'n': element 2 (row 0, col 2) is NaN"));
  h[2] = 0x7BFF; /* 65504, the largest finite f16 */
  assert_int_equal(qlm_check_tensor_finite(&th, "z.gguf", &err), QLM_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_clean_model_loads), cmocka_unit_test(test_nan_weight_named),
    cmocka_unit_test(test_inf_sign_reported), cmocka_unit_test(test_allow_nonfinite),
    cmocka_unit_test(test_block_scales),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
