/* qdot.c — activation quantizers and the scalar reference dot products of quantized weights
 * (see qdot.h for the scheme), and the run-time choice of SIMD versions.
 *
 * Each weight block is first unpacked to small integers v (offsets such as Q4_0's -8 already
 * applied) plus its float scale(s); the integer dot with the activation quants is exact in
 * int32, and one float multiply-add per block (per sub-block scale for k-quants) combines them.
 * Unpacking follows the layouts documented in types.c. */
#include "core/bytes.h"
#include "kernels/qdot.h"

#include <string.h>

#include "core/fp16.h"

#define QK 32
#define QK_K 256


/* ---------------------------------------------------------------- activation quantizers */

/* q[i] = round-half-even(x[i] * 127 / amax) for a block of nb floats; returns d = amax / 127.
 * Adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to the nearest integer
 * (ties to even) in the default rounding mode: exact like nearbyintf, but vectorizable.
 * Non-finite inputs give garbage quants but never undefined behaviour (the clamps catch NaN). */
static float quant_block(const float *x, int8_t *q, int nb) {
  float amax = 0.0f;
  for (int i = 0; i < nb; i++) {
    float a = x[i] < 0 ? -x[i] : x[i];
    amax = a > amax ? a : amax;
  }
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < nb; i++) {
    float v = x[i] * id;
    v = (v + 12582912.0f) - 12582912.0f;
    v = v >= -127.0f ? v : -127.0f;
    v = v <= 127.0f ? v : 127.0f;
    q[i] = (int8_t)(int)v;
  }
  return amax / 127.0f;
}

void qlm_quantize_q8_0(const float *x, void *dst, int64_t n) {
  uint8_t *b = dst;
  for (int64_t i = 0; i < n / QK; i++, b += 34, x += QK) {
    int8_t q[QK];
    float d = quant_block(x, q, QK);
    qlm_wr16(b, qlm_f32_to_f16(d));
    memcpy(b + 2, q, QK);
  }
}

void qlm_quantize_q8_1(const float *x, void *dst, int64_t n) {
  uint8_t *b = dst;
  for (int64_t i = 0; i < n / QK; i++, b += 36, x += QK) {
    int8_t q[QK];
    float d = quant_block(x, q, QK);
    int sum = 0;
    for (int j = 0; j < QK; j++) sum += q[j];
    qlm_wr16(b, qlm_f32_to_f16(d));
    qlm_wr16(b + 2, qlm_f32_to_f16(d * (float)sum)); /* as ggml: s = d * sum(q), in half */
    memcpy(b + 4, q, QK);
  }
}

void qlm_quantize_q8_s(const float *x, void *dst, int64_t n) {
  uint8_t *b = dst;
  for (int64_t i = 0; i < n / QK; i++, b += 36, x += QK) {
    int8_t q[QK];
    float d = quant_block(x, q, QK);
    int sum = 0;
    for (int j = 0; j < QK; j++) sum += q[j];
    qlm_wr16(b, qlm_f32_to_f16(d));
    qlm_wr16(b + 2, (uint16_t)(int16_t)sum); /* exact: |sum| <= 32 * 127 */
    memcpy(b + 4, q, QK);
  }
}

void qlm_quantize_q8_k(const float *x, void *dst, int64_t n) {
  uint8_t *b = dst;
  for (int64_t i = 0; i < n / QK_K; i++, b += 292, x += QK_K) {
    int8_t q[QK_K];
    float d = quant_block(x, q, QK_K);
    uint32_t bits = qlm_f32_to_bits(d);
    for (int k = 0; k < 4; k++) b[k] = (uint8_t)(bits >> (8 * k));
    memcpy(b + 4, q, QK_K);
    for (int g = 0; g < 16; g++) {
      int s = 0;
      for (int j = 0; j < 16; j++) s += q[16 * g + j];
      qlm_wr16(b + 260 + 2 * g, (uint16_t)(int16_t)s);
    }
  }
}

/* ---------------------------------------------------------------- Q4_0 packed activations */

size_t qlm_q4_0_packed_act_bytes(int64_t n) { return (size_t)((n / QK + 3) / 4) * QLM_Q4_0_QUAD_BYTES; }

/* The layout is in qdot.h.  Scalar: it runs once per matmul on one activation row (cols / 32
 * blocks), next to rows x cols / 32 block dots. */
void qlm_q4_0_pack_act(const void *a, void *dst, int64_t nb) {
  const uint8_t *y = a;
  uint8_t *o = dst;
  for (int64_t q0 = 0; q0 < nb; q0 += 4, o += QLM_Q4_0_QUAD_BYTES) {
    int8_t lo[64] = {0}, hi[64] = {0};
    int32_t off[16] = {0};
    float dx[16] = {0};
    for (int k = 0; k < 4 && q0 + k < nb; k++) {
      const uint8_t *b = y + (size_t)(q0 + k) * 34;
      memcpy(lo + 16 * k, b + 2, 16);
      memcpy(hi + 16 * k, b + 18, 16);
      float d = qlm_rdhalf(b);
      for (int g = 0; g < 4; g++) dx[4 * k + g] = d;
    }
    for (int i = 0; i < 16; i++) {
      int s = 0;
      for (int j = 0; j < 4; j++) s += lo[4 * i + j] + hi[4 * i + j];
      off[i] = -8 * s;
    }
    memcpy(o, lo, 64);
    memcpy(o + 64, hi, 64);
    memcpy(o + 128, off, 64);
    memcpy(o + 192, dx, 64);
  }
}

/* ---------------------------------------------------------------- legacy types (32 weights) */

static int idot32(const int8_t *v, const int8_t *q) {
  int s = 0;
  for (int j = 0; j < QK; j++) s += v[j] * q[j];
  return s;
}

/* Low nibbles are weights 0..15, high nibbles 16..31; `off` is subtracted. */
static void unpack_nibbles(const uint8_t *qs, int off, int8_t *v) {
  for (int j = 0; j < 16; j++) {
    v[j] = (int8_t)((qs[j] & 0xF) - off);
    v[j + 16] = (int8_t)((qs[j] >> 4) - off);
  }
}

static void unpack_5bit(const uint8_t *qs, uint32_t qh, int off, int8_t *v) {
  for (int j = 0; j < 16; j++) {
    v[j] = (int8_t)(((qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4)) - off);
    v[j + 16] = (int8_t)(((qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - off);
  }
}

float qlm_vec_dot_q4_0_ref(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK; i++, x += 18, y += 34) {
    int8_t v[QK];
    unpack_nibbles(x + 2, 8, v);
    sum += (qlm_rdhalf(x) * qlm_rdhalf(y)) * (float)idot32(v, (const int8_t *)(y + 2));
  }
  return sum;
}

float qlm_vec_dot_q4_1_ref(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK; i++, x += 20, y += 36) {
    int8_t v[QK];
    unpack_nibbles(x + 4, 0, v);
    sum += (qlm_rdhalf(x) * qlm_rdhalf(y)) * (float)idot32(v, (const int8_t *)(y + 4)) + qlm_rdhalf(x + 2) * qlm_rdhalf(y + 2);
  }
  return sum;
}

float qlm_vec_dot_q5_0_ref(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK; i++, x += 22, y += 34) {
    int8_t v[QK];
    unpack_5bit(x + 6, qlm_rd32(x + 2), 16, v);
    sum += (qlm_rdhalf(x) * qlm_rdhalf(y)) * (float)idot32(v, (const int8_t *)(y + 2));
  }
  return sum;
}

float qlm_vec_dot_q5_1_ref(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK; i++, x += 24, y += 36) {
    int8_t v[QK];
    unpack_5bit(x + 8, qlm_rd32(x + 4), 0, v);
    sum += (qlm_rdhalf(x) * qlm_rdhalf(y)) * (float)idot32(v, (const int8_t *)(y + 4)) + qlm_rdhalf(x + 2) * qlm_rdhalf(y + 2);
  }
  return sum;
}

float qlm_vec_dot_q8_0_ref(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  float sum = 0.0f;
  for (int64_t i = 0; i < n / QK; i++, x += 34, y += 34)
    sum += (qlm_rdhalf(x) * qlm_rdhalf(y)) * (float)idot32((const int8_t *)(x + 2), (const int8_t *)(y + 2));
  return sum;
}

/* ---------------------------------------------------------------- k-quants (256 weights) */

/* A super-block unpacked: w_e = d * sc[g] * v[e] - dmin * mn[g] with g = e / 16 (scales of
 * 32-weight sub-blocks are repeated for both halves). */
typedef struct kblock {
  int8_t v[QK_K];
  int sc[16], mn[16];
  float d, dmin;
} kblock;

/* Against a Q8_K block y: d_y * (d * sum_g sc_g (v . q)_g - dmin * sum_g mn_g bsum_g). */
static float kdot(const kblock *k, const uint8_t *y) {
  const int8_t *q = (const int8_t *)(y + 4);
  int isum = 0, imin = 0;
  for (int g = 0; g < 16; g++) {
    int s = 0;
    for (int j = 0; j < 16; j++) s += k->v[16 * g + j] * q[16 * g + j];
    isum += k->sc[g] * s;
    imin += k->mn[g] * (int16_t)qlm_rd16(y + 260 + 2 * g);
  }
  float dy = qlm_bits_to_f32(qlm_rd32(y));
  return dy * k->d * (float)isum - dy * k->dmin * (float)imin;
}

static void unpack_q2_k(const uint8_t *b, kblock *k) {
  const uint8_t *sc = b, *qs = b + 16;
  for (int e = 0; e < QK_K; e++) {
    int h = e / 128, r = e % 128;
    k->v[e] = (int8_t)((qs[32 * h + r % 32] >> (2 * (r / 32))) & 3);
  }
  for (int g = 0; g < 16; g++) {
    k->sc[g] = sc[g] & 0xF;
    k->mn[g] = sc[g] >> 4;
  }
  k->d = qlm_rdhalf(b + 80);
  k->dmin = qlm_rdhalf(b + 82);
}

static void unpack_q3_k(const uint8_t *b, kblock *k) {
  const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
  for (int e = 0; e < QK_K; e++) {
    int h = e / 128, r = e % 128;
    int lo = (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
    int hi = (hm[e % 32] >> (e / 32)) & 1;
    k->v[e] = (int8_t)((lo | (hi << 2)) - 4);
  }
  for (int g = 0; g < 16; g++) {
    int lo = g < 8 ? (sc[g] & 0xF) : (sc[g - 8] >> 4);
    int hi = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
    k->sc[g] = (lo | (hi << 4)) - 32;
    k->mn[g] = 0;
  }
  k->d = qlm_rdhalf(b + 108);
  k->dmin = 0.0f;
}

/* Q4_K and Q5_K share scales and the nibble layout; qh is NULL for Q4_K. */
static void unpack_q45_k(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, kblock *k) {
  for (int e = 0; e < QK_K; e++) {
    uint8_t byte = qs[32 * (e / 64) + e % 32];
    int q = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
    if (qh) q |= ((qh[e % 32] >> (e / 32)) & 1) << 4;
    k->v[e] = (int8_t)q;
  }
  for (int j = 0; j < 8; j++) {
    int s, m;
    qlm_k4_scale_min(b + 4, j, &s, &m);
    k->sc[2 * j] = k->sc[2 * j + 1] = s;
    k->mn[2 * j] = k->mn[2 * j + 1] = m;
  }
  k->d = qlm_rdhalf(b);
  k->dmin = qlm_rdhalf(b + 2);
}

static void unpack_q4_k(const uint8_t *b, kblock *k) { unpack_q45_k(b, NULL, b + 16, k); }
static void unpack_q5_k(const uint8_t *b, kblock *k) { unpack_q45_k(b, b + 16, b + 48, k); }

static void unpack_q6_k(const uint8_t *b, kblock *k) {
  const uint8_t *ql = b, *qh = b + 128;
  for (int e = 0; e < QK_K; e++) {
    int h = e / 128, r = e % 128, kk = r / 32, l = r % 32;
    uint8_t lb = ql[64 * h + 32 * (kk & 1) + l];
    int lo = kk < 2 ? (lb & 0xF) : (lb >> 4);
    int hi = (qh[32 * h + l] >> (2 * kk)) & 3;
    k->v[e] = (int8_t)((lo | (hi << 4)) - 32);
  }
  for (int g = 0; g < 16; g++) {
    k->sc[g] = (int8_t)b[192 + g];
    k->mn[g] = 0;
  }
  k->d = qlm_rdhalf(b + 208);
  k->dmin = 0.0f;
}

#define K_DOT(name, bytes)                                                     \
  float qlm_vec_dot_##name##_ref(const void *w, const void *a, int64_t n) {    \
    const uint8_t *x = w, *y = a;                                              \
    float sum = 0.0f;                                                          \
    kblock k;                                                                  \
    for (int64_t i = 0; i < n / QK_K; i++, x += (bytes), y += 292) {           \
      unpack_##name(x, &k);                                                    \
      sum += kdot(&k, y);                                                      \
    }                                                                          \
    return sum;                                                                \
  }
K_DOT(q2_k, 84)
K_DOT(q3_k, 110)
K_DOT(q4_k, 144)
K_DOT(q5_k, 176)
K_DOT(q6_k, 210)

/* ---------------------------------------------------------------- dispatch */

qlm_vec_dot_fn qlm_vec_dot_for(int type, qlm_simd_level level) {
  qlm_simd_level hw = qlm_cpu_detect();
  if (level > hw) level = hw;
  bool vnni = level == QLM_SIMD_AVX512 && qlm_cpu_has_avx512_vnni();
  switch (type) {
  case QLM_TYPE_Q4_0:
    if (level == QLM_SIMD_AVX512) return vnni ? qlm_vec_dot_q4_0_avx512vnni : qlm_vec_dot_q4_0_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q4_0_avx2;
    break;
  case QLM_TYPE_Q4_1:
    if (level == QLM_SIMD_AVX512) return vnni ? qlm_vec_dot_q4_1_avx512vnni : qlm_vec_dot_q4_1_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q4_1_avx2;
    break;
  case QLM_TYPE_Q5_0:
    if (level == QLM_SIMD_AVX512) return vnni ? qlm_vec_dot_q5_0_avx512vnni : qlm_vec_dot_q5_0_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q5_0_avx2;
    break;
  case QLM_TYPE_Q5_1:
    if (level == QLM_SIMD_AVX512) return vnni ? qlm_vec_dot_q5_1_avx512vnni : qlm_vec_dot_q5_1_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q5_1_avx2;
    break;
  case QLM_TYPE_Q8_0:
    if (level == QLM_SIMD_AVX512) return vnni ? qlm_vec_dot_q8_0_avx512vnni : qlm_vec_dot_q8_0_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q8_0_avx2;
    break;
  case QLM_TYPE_Q4_K:
    if (level == QLM_SIMD_AVX512) return vnni ? qlm_vec_dot_q4_k_avx512vnni : qlm_vec_dot_q4_k_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q4_k_avx2;
    break;
  case QLM_TYPE_Q6_K:
    if (level == QLM_SIMD_AVX512) return qlm_vec_dot_q6_k_avx512;
    if (level == QLM_SIMD_AVX2) return qlm_vec_dot_q6_k_avx2;
    break;
  default: break;
  }
  const qlm_type_traits *t = qlm_type_traits_of(type);
  return t ? t->vec_dot : NULL;
}

qlm_vec_dot_t_fn qlm_vec_dot_t_for(int type, qlm_simd_level level) {
  qlm_simd_level hw = qlm_cpu_detect();
  if (level > hw) level = hw;
  const qlm_type_traits *t = qlm_type_traits_of(type);
  if (!t || !t->vec_dot_t) return NULL;
  qlm_vec_dot_t_fn f = t->vec_dot_t_for ? t->vec_dot_t_for(type, (int)level) : NULL;
  return f ? f : t->vec_dot_t;
}
