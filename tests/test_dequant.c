/* test_dequant.c — the type traits table and the reference dequantizers.
 *
 * Two independent references:
 *  1. blocks packed here by hand from the published layouts (ggml-common.h, summarized in
 *     /work/shared/docs/QUANT_FACTS.md §6), with per-weight expected values.  Scales are powers
 *     of two and quants small integers, so every expected value is exact in float and the
 *     comparison is exact whatever the evaluation order.
 *  2. tests/data/dequant/vectors.bin from tools/gen_dequant_vectors.py: random blocks
 *     dequantized by gguf-py's numpy code.  That code computes in float32 in the same order as
 *     ggml (scale * sub-scale first, then * quant, then - min), each step one IEEE rounding,
 *     so a correct C dequantizer matches it bit for bit: tolerance 0. */
#include "core/bytes.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/types.h"

#define H_ONE 0x3c00     /* 1.0 */
#define H_HALF 0x3800    /* 0.5 */
#define H_QUARTER 0x3400 /* 0.25 */
#define H_EIGHTH 0x3000  /* 0.125 */
#define H_MINUS2 0xc000  /* -2.0 */
#define H_MINUS3 0xc200  /* -3.0 */

/* A scrambled but deterministic quant pattern in 0..mod-1 (a multiplicative hash, so that
 * neighbouring weights and weights 32/64/128 apart differ in all bits). */
static int pat(int e, int salt, int mod) { return (int)(((uint32_t)(e + 1) * 2654435761u + (uint32_t)salt * 40503u) >> 13) % mod; }

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }

static void dequant(int type, const void *blk, float *out, int64_t n) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  assert_non_null(t);
  assert_non_null(t->to_float);
  t->to_float(blk, out, n);
}

static void check(const float *got, const float *want, int n, const char *type) {
  for (int i = 0; i < n; i++)
    if (got[i] != want[i]) fail_msg("%s: weight %d: got %.9g, want %.9g", type, i, got[i], want[i]);
}

/* ---- traits ---- */

static void test_traits(void **st) {
  (void)st;
  /* block sizes and bytes per block from ggml-common.h's static_asserts */
  static const struct { int type; const char *name; int bs; size_t ts; } want[] = {
      {QLM_TYPE_F32, "f32", 1, 4},       {QLM_TYPE_F16, "f16", 1, 2},       {QLM_TYPE_BF16, "bf16", 1, 2},
      {QLM_TYPE_Q4_0, "q4_0", 32, 18},   {QLM_TYPE_Q4_1, "q4_1", 32, 20},   {QLM_TYPE_Q5_0, "q5_0", 32, 22},
      {QLM_TYPE_Q5_1, "q5_1", 32, 24},   {QLM_TYPE_Q8_0, "q8_0", 32, 34},   {QLM_TYPE_Q8_1, "q8_1", 32, 36},
      {QLM_TYPE_Q2_K, "q2_K", 256, 84},  {QLM_TYPE_Q3_K, "q3_K", 256, 110}, {QLM_TYPE_Q4_K, "q4_K", 256, 144},
      {QLM_TYPE_Q5_K, "q5_K", 256, 176}, {QLM_TYPE_Q6_K, "q6_K", 256, 210}, {QLM_TYPE_Q8_K, "q8_K", 256, 292},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const qlm_type_traits *t = qlm_type_traits_of(want[i].type);
    assert_non_null(t);
    assert_string_equal(t->name, want[i].name);
    assert_string_equal(qlm_type_name(want[i].type), want[i].name);
    assert_int_equal(t->block_size, want[i].bs);
    assert_int_equal(t->type_size, want[i].ts);
    assert_non_null(t->to_float);
  }
  /* unknown ids */
  assert_null(qlm_type_traits_of(4)); /* removed Q4_2 */
  assert_null(qlm_type_traits_of(16)); /* IQ2_XXS: not implemented */
  assert_null(qlm_type_traits_of(-1));
  assert_null(qlm_type_traits_of(100000));
  assert_string_equal(qlm_type_name(16), "?");
  /* row bytes */
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_F32, 172), 688);
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_Q4_0, 64), 36);
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_Q6_K, 4096), 16 * 210);
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_Q4_0, 48), 0);  /* not whole blocks */
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_Q4_K, 172), 0);
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_F32, -4), 0);
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_F32, INT64_MAX), 0); /* 4 * 2^63 overflows */
  assert_int_equal(qlm_type_row_bytes(16, 256), 0);
  assert_int_equal(qlm_type_row_bytes(QLM_TYPE_Q8_0, 0), 0);
}

/* ---- hand-packed blocks ---- */

static void test_float_types(void **st) {
  (void)st;
  float f[3] = {1.5f, -0.0f, 3.0e-40f}, out[3];
  dequant(QLM_TYPE_F32, f, out, 3);
  assert_memory_equal(out, f, sizeof f);
  uint8_t h[8];
  put16(h, 0x3c00), put16(h + 2, 0xc500), put16(h + 4, 0x0001), put16(h + 6, 0x7bff);
  float want[4] = {1.0f, -5.0f, 5.9604644775390625e-8f, 65504.0f}, got[4];
  dequant(QLM_TYPE_F16, h, got, 4);
  check(got, want, 4, "f16");
  put16(h, 0x3f80), put16(h + 2, 0xc0a0), put16(h + 4, 0x0001), put16(h + 6, 0x4049);
  float wantb[4] = {1.0f, -5.0f, qlm_bits_to_f32(0x00010000), 3.140625f};
  dequant(QLM_TYPE_BF16, h, got, 4);
  check(got, wantb, 4, "bf16");
}

/* Legacy 32-weight types: weight j of a block sits in the low nibble of qs[j] (j < 16) or the
 * high nibble of qs[j-16]; the 5th bit of weight j is bit j of the u32 qh. */
static void pack_nibbles(uint8_t *qs, const int *q) {
  for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0xF) | (q[j + 16] & 0xF) << 4);
}
static void pack_qh(uint8_t *qh, const int *q) {
  uint32_t bits = 0;
  for (int j = 0; j < 32; j++) bits |= (uint32_t)((q[j] >> 4) & 1) << j;
  for (int i = 0; i < 4; i++) qh[i] = (uint8_t)(bits >> (8 * i));
}

static void test_q4_0_q4_1(void **st) {
  (void)st;
  int q[32];
  float want[32], got[32];
  for (int j = 0; j < 32; j++) q[j] = pat(j, 1, 16);
  uint8_t b0[18];
  put16(b0, H_MINUS2);
  pack_nibbles(b0 + 2, q);
  for (int j = 0; j < 32; j++) want[j] = -2.0f * (float)(q[j] - 8);
  dequant(QLM_TYPE_Q4_0, b0, got, 32);
  check(got, want, 32, "q4_0");

  uint8_t b1[20];
  put16(b1, H_HALF), put16(b1 + 2, H_MINUS3);
  pack_nibbles(b1 + 4, q);
  for (int j = 0; j < 32; j++) want[j] = 0.5f * (float)q[j] - 3.0f;
  dequant(QLM_TYPE_Q4_1, b1, got, 32);
  check(got, want, 32, "q4_1");
}

static void test_q5_0_q5_1(void **st) {
  (void)st;
  int q[32];
  float want[32], got[32];
  for (int j = 0; j < 32; j++) q[j] = pat(j, 2, 32);
  uint8_t b0[22];
  put16(b0, H_QUARTER);
  pack_qh(b0 + 2, q);
  pack_nibbles(b0 + 6, q);
  for (int j = 0; j < 32; j++) want[j] = 0.25f * (float)(q[j] - 16);
  dequant(QLM_TYPE_Q5_0, b0, got, 32);
  check(got, want, 32, "q5_0");

  uint8_t b1[24];
  put16(b1, H_HALF), put16(b1 + 2, H_MINUS2);
  pack_qh(b1 + 4, q);
  pack_nibbles(b1 + 8, q);
  for (int j = 0; j < 32; j++) want[j] = 0.5f * (float)q[j] - 2.0f;
  dequant(QLM_TYPE_Q5_1, b1, got, 32);
  check(got, want, 32, "q5_1");
}

static void test_q8_0_q8_1(void **st) {
  (void)st;
  float want[64], got[64];
  uint8_t b0[2 * 34]; /* two blocks, the second with d = -2 */
  uint8_t b1[36];
  put16(b0, H_QUARTER), put16(b0 + 34, H_MINUS2);
  put16(b1, H_EIGHTH), put16(b1 + 2, 0x7c00 /* s: unused by dequantization */);
  for (int j = 0; j < 32; j++) {
    int q = (j * 37) % 256 - 128; /* spans -128..127 */
    b0[2 + j] = (uint8_t)(int8_t)q;
    b0[36 + j] = (uint8_t)(int8_t)(-q - 1);
    b1[4 + j] = (uint8_t)(int8_t)q;
    want[j] = 0.25f * (float)q;
    want[32 + j] = -2.0f * (float)(-q - 1);
  }
  dequant(QLM_TYPE_Q8_0, b0, got, 64);
  check(got, want, 64, "q8_0");
  dequant(QLM_TYPE_Q8_1, b1, got, 32);
  for (int j = 0; j < 32; j++) want[j] *= 0.5f; /* d = 0.125 instead of 0.25 */
  check(got, want, 32, "q8_1");
}

/* k-quants.  2-bit planes (Q2_K quants, Q3_K low bits): weight e = 128*h + 32*k + l lives in byte
 * qs[32*h + l] at bits 2k..2k+1.  Single high bits (Q3_K hmask, Q5_K qh): byte [e % 32], bit e/32. */
static void pack_2bit(uint8_t *qs, const int *q) {
  memset(qs, 0, 64);
  for (int e = 0; e < 256; e++) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    qs[32 * h + l] |= (uint8_t)((q[e] & 3) << (2 * k));
  }
}
static void pack_highbit(uint8_t *hb, const int *q, int bit) {
  memset(hb, 0, 32);
  for (int e = 0; e < 256; e++) hb[e % 32] |= (uint8_t)(((q[e] >> bit) & 1) << (e / 32));
}
/* 4-bit planes of Q4_K/Q5_K: weight e = 64*c + i: byte qs[32*c + i%32], low nibble for i < 32. */
static void pack_4bit_k(uint8_t *qs, const int *q) {
  memset(qs, 0, 128);
  for (int e = 0; e < 256; e++) {
    int c = e / 64, i = e % 64;
    qs[32 * c + i % 32] |= (uint8_t)((q[e] & 0xF) << (i < 32 ? 0 : 4));
  }
}
/* The 12-byte 6-bit scale/min packing of Q4_K/Q5_K (QUANT_FACTS §6):
 * j < 4: scales[j] = scale, scales[j+4] = min; j >= 4: low nibbles of scale and min in
 * scales[j+4] (scale low, min high), their top 2 bits in bits 6-7 of scales[j-4] and scales[j]. */
static void pack_scale_min(uint8_t *s, const int *sc, const int *mn) {
  memset(s, 0, 12);
  for (int j = 0; j < 4; j++) s[j] = (uint8_t)sc[j], s[j + 4] = (uint8_t)mn[j];
  for (int j = 4; j < 8; j++) {
    s[j + 4] = (uint8_t)((sc[j] & 0xF) | (mn[j] & 0xF) << 4);
    s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
    s[j] |= (uint8_t)((mn[j] >> 4) << 6);
  }
}

static void test_q2_k(void **st) {
  (void)st;
  uint8_t b[84];
  int q[256], sc[16], mn[16];
  float want[256], got[256];
  for (int s = 0; s < 16; s++) sc[s] = (s * 7 + 3) % 16, mn[s] = 15 - s, b[s] = (uint8_t)(sc[s] | mn[s] << 4);
  for (int e = 0; e < 256; e++) q[e] = pat(e, 3, 4);
  pack_2bit(b + 16, q);
  put16(b + 80, H_HALF), put16(b + 82, H_QUARTER);
  for (int e = 0; e < 256; e++) want[e] = 0.5f * (float)sc[e / 16] * (float)q[e] - 0.25f * (float)mn[e / 16];
  dequant(QLM_TYPE_Q2_K, b, got, 256);
  check(got, want, 256, "q2_K");
}

static void test_q3_k(void **st) {
  (void)st;
  uint8_t b[110];
  int q[256], sc[16];
  float want[256], got[256];
  for (int s = 0; s < 16; s++) sc[s] = s * 4 - 30 + (s == 15 ? 1 : 0); /* -30..31: the whole signed 6-bit range */
  sc[0] = -32;
  for (int e = 0; e < 256; e++) q[e] = pat(e, 4, 8);
  pack_highbit(b, q, 2);
  pack_2bit(b + 32, q);
  /* scales stored +32 (0..63): low nibble of scale s in byte s (s < 8) or the high nibble of
   * byte s-8; the top 2 bits in byte 8 + s%4 at bit 2*(s/4) */
  uint8_t *s12 = b + 96;
  memset(s12, 0, 12);
  for (int s = 0; s < 16; s++) {
    int u = sc[s] + 32;
    s12[s % 8] |= (uint8_t)((u & 0xF) << (s < 8 ? 0 : 4));
    s12[8 + s % 4] |= (uint8_t)((u >> 4) << (2 * (s / 4)));
  }
  put16(b + 108, H_QUARTER);
  for (int e = 0; e < 256; e++) want[e] = 0.25f * (float)sc[e / 16] * (float)(q[e] - 4);
  dequant(QLM_TYPE_Q3_K, b, got, 256);
  check(got, want, 256, "q3_K");
}

static void k4_setup(int *sc, int *mn, int *q, int qmax) {
  for (int j = 0; j < 8; j++) sc[j] = (j * 23 + 5) % 64, mn[j] = 63 - (j * 17) % 64;
  sc[7] = 63, mn[6] = 63, mn[5] = 0;
  for (int e = 0; e < 256; e++) q[e] = pat(e, qmax, qmax);
}

static void test_q4_k(void **st) {
  (void)st;
  uint8_t b[144];
  int q[256], sc[8], mn[8];
  float want[256], got[256];
  k4_setup(sc, mn, q, 16);
  put16(b, H_EIGHTH), put16(b + 2, H_MINUS2);
  pack_scale_min(b + 4, sc, mn);
  pack_4bit_k(b + 16, q);
  for (int e = 0; e < 256; e++) want[e] = 0.125f * (float)sc[e / 32] * (float)q[e] + 2.0f * (float)mn[e / 32];
  dequant(QLM_TYPE_Q4_K, b, got, 256);
  check(got, want, 256, "q4_K");
}

static void test_q5_k(void **st) {
  (void)st;
  uint8_t b[176];
  int q[256], sc[8], mn[8];
  float want[256], got[256];
  k4_setup(sc, mn, q, 32);
  put16(b, H_HALF), put16(b + 2, H_QUARTER);
  pack_scale_min(b + 4, sc, mn);
  pack_highbit(b + 16, q, 4);
  pack_4bit_k(b + 48, q);
  for (int e = 0; e < 256; e++) want[e] = 0.5f * (float)sc[e / 32] * (float)q[e] - 0.25f * (float)mn[e / 32];
  dequant(QLM_TYPE_Q5_K, b, got, 256);
  check(got, want, 256, "q5_K");
}

static void test_q6_k(void **st) {
  (void)st;
  uint8_t b[210];
  int q[256];
  float want[256], got[256];
  memset(b, 0, sizeof b);
  for (int e = 0; e < 256; e++) q[e] = pat(e, 6, 64);
  /* weight e = 128*h + 32*k + l: low 4 bits in ql[64*h + 32*(k%2) + l] (low nibble for k < 2,
   * high for k >= 2); top 2 bits in qh[32*h + l] at bits 2k */
  for (int e = 0; e < 256; e++) {
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    b[64 * h + 32 * (k % 2) + l] |= (uint8_t)((q[e] & 0xF) << (k < 2 ? 0 : 4));
    b[128 + 32 * h + l] |= (uint8_t)((q[e] >> 4) << (2 * k));
  }
  int sc[16];
  for (int s = 0; s < 16; s++) sc[s] = s * 17 - 128, b[192 + s] = (uint8_t)(int8_t)sc[s];
  put16(b + 208, H_EIGHTH);
  for (int e = 0; e < 256; e++) want[e] = 0.125f * (float)sc[e / 16] * (float)(q[e] - 32);
  dequant(QLM_TYPE_Q6_K, b, got, 256);
  check(got, want, 256, "q6_K");
}

static void test_q8_k(void **st) {
  (void)st;
  uint8_t b[292];
  float want[256], got[256];
  uint32_t d = qlm_f32_to_bits(-0.5f);
  memcpy(b, &d, 4); /* little-endian host */
  for (int e = 0; e < 256; e++) b[4 + e] = (uint8_t)e, want[e] = -0.5f * (float)(int8_t)(uint8_t)e;
  memset(b + 260, 0x55, 32); /* bsums: not used by dequantization */
  dequant(QLM_TYPE_Q8_K, b, got, 256);
  check(got, want, 256, "q8_K");
}

/* ---- gguf-py cross-check ---- */


static void test_gguf_py_vectors(void **st) {
  (void)st;
  size_t n;
  uint8_t *data = tu_read_vectors("dequant/vectors.bin", "QLMDQV1\0", "tools/gen_dequant_vectors.py", &n);
  uint32_t entries = qlm_rd32(data + 8);
  size_t pos = 12;
  int seen[QLM_TYPE_COUNT_GGML] = {0};
  for (uint32_t i = 0; i < entries; i++) {
    assert_true(pos + 16 <= n);
    uint32_t type = qlm_rd32(data + pos), nb = qlm_rd32(data + pos + 4), nbytes = qlm_rd32(data + pos + 8),
             nval = qlm_rd32(data + pos + 12);
    pos += 16;
    const qlm_type_traits *t = qlm_type_traits_of((int)type);
    assert_non_null(t);
    assert_int_equal(nbytes, nb * t->type_size);
    assert_int_equal(nval, nb * (uint32_t)t->block_size);
    assert_true(pos + nbytes + 4 * (size_t)nval <= n);
    /* copy the blocks to an odd address: dequantizers must not assume alignment */
    uint8_t *raw = malloc(nbytes + 1);
    memcpy(raw + 1, data + pos, nbytes);
    float *got = malloc(4 * (size_t)nval), *want = malloc(4 * (size_t)nval);
    memcpy(want, data + pos + nbytes, 4 * (size_t)nval);
    t->to_float(raw + 1, got, nval);
    for (uint32_t j = 0; j < nval; j++)
      if (qlm_f32_to_bits(got[j]) != qlm_f32_to_bits(want[j]))
        fail_msg("%s block %u weight %u: got %.9g, gguf-py %.9g", t->name, j / t->block_size, j % t->block_size,
                 got[j], want[j]);
    seen[type]++;
    free(raw), free(got), free(want);
    pos += nbytes + 4 * (size_t)nval;
  }
  assert_int_equal(pos, n);
  static const int all[] = {QLM_TYPE_F32,  QLM_TYPE_F16,  QLM_TYPE_BF16, QLM_TYPE_Q4_0, QLM_TYPE_Q4_1,
                            QLM_TYPE_Q5_0, QLM_TYPE_Q5_1, QLM_TYPE_Q8_0, QLM_TYPE_Q8_1, QLM_TYPE_Q2_K,
                            QLM_TYPE_Q3_K, QLM_TYPE_Q4_K, QLM_TYPE_Q5_K, QLM_TYPE_Q6_K, QLM_TYPE_Q8_K};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    if (!seen[all[i]]) fail_msg("no vectors for %s", qlm_type_name(all[i]));
  free(data);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_traits),    cmocka_unit_test(test_float_types), cmocka_unit_test(test_q4_0_q4_1),
      cmocka_unit_test(test_q5_0_q5_1), cmocka_unit_test(test_q8_0_q8_1),   cmocka_unit_test(test_q2_k),
      cmocka_unit_test(test_q3_k),      cmocka_unit_test(test_q4_k),        cmocka_unit_test(test_q5_k),
      cmocka_unit_test(test_q6_k),      cmocka_unit_test(test_q8_k),        cmocka_unit_test(test_gguf_py_vectors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
