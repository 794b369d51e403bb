/* rtn.c — the round-to-nearest storage types: layout (see rtn.h), dequantizer, scalar dot
 * products and the traits builder for QLM_FAMILY_RTN_SYM / QLM_FAMILY_RTN_ASYM ids. */
#include "kernels/rtn.h"

#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/qdot.h"

#define QK 32
#define Q8S_BYTES 36

int qlm_rtn_type(bool asym, int bits, int group) {
  if (bits < 2 || bits > 8 || group < 1 || group > 0xFFFF) return -1;
  return qlm_type_make(asym ? QLM_FAMILY_RTN_ASYM : QLM_FAMILY_RTN_SYM, bits, group);
}

static bool is_asym(int type) { return QLM_TYPE_FAMILY(type) == QLM_FAMILY_RTN_ASYM; }

int qlm_rtn_header_bytes(int type) { return is_asym(type) ? 4 : 2; }

int qlm_rtn_code_bytes(int type) { return (QLM_TYPE_BLOCK(type) * QLM_TYPE_BITS(type) + 7) / 8; }

/* Which of the three code layouts of rtn.h a type uses. */
enum { CODES_BYTES, CODES_NIB32, CODES_STREAM };
static int code_layout(int bits, int group) {
  if (bits == 8) return CODES_BYTES;
  if (bits == 4 && group % QK == 0) return CODES_NIB32;
  return CODES_STREAM;
}

static void pack_codes(int bits, int g, const uint8_t *u, uint8_t *p) {
  switch (code_layout(bits, g)) {
  case CODES_BYTES: memcpy(p, u, (size_t)g); break;
  case CODES_NIB32:
    for (int c = 0; c < g; c += QK, p += QK / 2)
      for (int j = 0; j < QK / 2; j++) p[j] = (uint8_t)(u[c + j] | u[c + j + QK / 2] << 4);
    break;
  default:
    memset(p, 0, (size_t)(g * bits + 7) / 8);
    for (int i = 0; i < g; i++) {
      int bit = i * bits;
      uint32_t v = (uint32_t)u[i] << (bit % 8);
      for (int k = 0; v; k++, v >>= 8) p[bit / 8 + k] |= (uint8_t)v;
    }
  }
}

static void unpack_codes(int bits, int g, const uint8_t *p, uint8_t *u) {
  switch (code_layout(bits, g)) {
  case CODES_BYTES: memcpy(u, p, (size_t)g); break;
  case CODES_NIB32:
    for (int c = 0; c < g; c += QK, p += QK / 2)
      for (int j = 0; j < QK / 2; j++) {
        u[c + j] = p[j] & 0xF;
        u[c + j + QK / 2] = p[j] >> 4;
      }
    break;
  default: {
    int total = (g * bits + 7) / 8;
    for (int i = 0; i < g; i++) {
      int bit = i * bits, byte = bit / 8;
      uint32_t v = p[byte];
      if (byte + 1 < total) v |= (uint32_t)p[byte + 1] << 8;
      u[i] = (uint8_t)((v >> (bit % 8)) & ((1u << bits) - 1));
    }
  }
  }
}

void qlm_rtn_pack_header(int type, float d, int z, void *block) {
  uint8_t *b = block;
  qlm_wr16(b, qlm_f32_to_f16(d));
  if (is_asym(type)) qlm_wr16(b + 2, (uint16_t)(int16_t)z);
}

void qlm_rtn_pack(int type, float d, int z, const uint8_t *u, void *block) {
  uint8_t *b = block;
  qlm_rtn_pack_header(type, d, z, b);
  pack_codes(QLM_TYPE_BITS(type), QLM_TYPE_BLOCK(type), u, b + qlm_rtn_header_bytes(type));
}

void qlm_rtn_unpack(int type, const void *block, float *d, int *z, uint8_t *u) {
  const uint8_t *b = block;
  *d = qlm_rdhalf(b);
  *z = is_asym(type) ? (int16_t)qlm_rd16(b + 2) : 1 << (QLM_TYPE_BITS(type) - 1);
  unpack_codes(QLM_TYPE_BITS(type), QLM_TYPE_BLOCK(type), b + qlm_rtn_header_bytes(type), u);
}

/* Code i of a block's code bytes p (any layout). */
static inline int code_at(int bits, int g, const uint8_t *p, int i) {
  switch (code_layout(bits, g)) {
  case CODES_BYTES: return p[i];
  case CODES_NIB32: {
    int c = i / QK * (QK / 2), j = i % QK;
    return j < QK / 2 ? p[c + j] & 0xF : p[c + j - QK / 2] >> 4;
  }
  default: {
    int bit = i * bits, byte = bit / 8;
    uint32_t v = p[byte];
    if ((bit % 8) + bits > 8) v |= (uint32_t)p[byte + 1] << 8;
    return (int)((v >> (bit % 8)) & ((1u << bits) - 1));
  }
  }
}

/* Codes c..c+31 of a block's code bytes p, for 32 | g.  In the stream layout a 32-chunk starts
 * on a byte (32 b bits) and every 8 codes fill exactly b bytes, so they are read 8 at a time. */
static void chunk_codes(int bits, int g, const uint8_t *p, int c, uint8_t *u) {
  switch (code_layout(bits, g)) {
  case CODES_BYTES: memcpy(u, p + c, QK); break;
  case CODES_NIB32:
    for (int j = 0; j < QK / 2; j++) {
      u[j] = p[c / 2 + j] & 0xF;
      u[j + QK / 2] = p[c / 2 + j] >> 4;
    }
    break;
  default: {
    const uint8_t *s = p + c / 8 * bits;
    const uint64_t mask = (1u << bits) - 1;
    for (int k = 0; k < QK; k += 8, s += bits) {
      uint64_t v = 0;
      for (int i = 0; i < bits; i++) v |= (uint64_t)s[i] << (8 * i);
      for (int i = 0; i < 8; i++) u[k + i] = (uint8_t)((v >> (i * bits)) & mask);
    }
  }
  }
}

static size_t block_bytes(int type) { return (size_t)qlm_rtn_header_bytes(type) + (size_t)qlm_rtn_code_bytes(type); }

static void read_header(int type, const uint8_t *b, float *d, int *z) {
  *d = qlm_rdhalf(b);
  *z = is_asym(type) ? (int16_t)qlm_rd16(b + 2) : 1 << (QLM_TYPE_BITS(type) - 1);
}

/* Dequantizer: w = d * (u - z), the float product of rtn.h's formula. */
static void rtn_to_float(int type, const void *src, float *dst, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type), bits = QLM_TYPE_BITS(type), h = qlm_rtn_header_bytes(type);
  const size_t bs = block_bytes(type);
  const uint8_t *b = src;
  for (int64_t k = 0; k < n / g; k++, b += bs, dst += g) {
    float d;
    int z;
    read_header(type, b, &d, &z);
    if (g % QK == 0) { /* 32 codes at a time (GPTQ's staged calibration dequantizes every matrix) */
      uint8_t u[QK];
      for (int c = 0; c < g; c += QK) {
        chunk_codes(bits, g, b + h, c, u);
        for (int i = 0; i < QK; i++) dst[c + i] = d * (float)(u[i] - z);
      }
    } else {
      for (int i = 0; i < g; i++) dst[i] = d * (float)(code_at(bits, g, b + h, i) - z);
    }
  }
}

/* Whether a type's activations are Q8_S (32 | g, bits other than 4) or stay f32 (see rtn.h). */
static bool act_is_q8s(int type) { return QLM_TYPE_BLOCK(type) % QK == 0 && QLM_TYPE_BITS(type) != 4; }

/* Q8_S activations: weights against Q8_S activations, an exact integer sum per 32-chunk; floats summed
 * chunk by chunk within a group, then group by group. */
static float dot_q8s_ref(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type), bits = QLM_TYPE_BITS(type), h = qlm_rtn_header_bytes(type);
  const size_t bs = block_bytes(type);
  const uint8_t *wb = w, *ab = a;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, wb += bs) {
    float d;
    int z;
    read_header(type, wb, &d, &z);
    float acc = 0.0f;
    for (int c = 0; c < g; c += QK, ab += Q8S_BYTES) {
      const int8_t *q = (const int8_t *)(ab + 4);
      uint8_t u[QK];
      chunk_codes(bits, g, wb + h, c, u);
      int32_t isum = 0;
      for (int j = 0; j < QK; j++) isum += u[j] * q[j];
      isum -= z * (int16_t)qlm_rd16(ab + 2);
      acc += qlm_rdhalf(ab) * (float)isum;
    }
    sum += d * acc;
  }
  return sum;
}

/* f32 activations (4 bits, or groups that are not whole 32-chunks): per group the unscaled sum
 * of (u - c) x in element order, times d, then summed group by group. */
static float dot_f32_ref(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type), bits = QLM_TYPE_BITS(type), h = qlm_rtn_header_bytes(type);
  const size_t bs = block_bytes(type);
  const uint8_t *wb = w;
  const float *x = a;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, wb += bs, x += g) {
    float d;
    int z;
    read_header(type, wb, &d, &z);
    float acc = 0.0f;
    for (int i = 0; i < g; i++) acc += (float)(code_at(bits, g, wb + h, i) - z) * x[i];
    sum += d * acc;
  }
  return sum;
}

float qlm_vec_dot_rtn_ref(int type, const void *w, const void *a, int64_t n) {
  return act_is_q8s(type) ? dot_q8s_ref(type, w, a, n) : dot_f32_ref(type, w, a, n);
}

/* SIMD where rtn_avx2.c / rtn_avx512.c have a kernel (they return NULL otherwise), built for the
 * same activation type as the traits choose. */
static qlm_vec_dot_t_fn rtn_vec_dot_t_for(int type, int level) {
  qlm_vec_dot_t_fn r = NULL;
  if (level >= QLM_SIMD_AVX512) r = qlm_rtn_vec_dot_avx512(type, qlm_cpu_has_avx512_vnni());
  if (!r && level >= QLM_SIMD_AVX2) r = qlm_rtn_vec_dot_avx2(type);
  return r;
}

/* f32 activations: a copy. */
static void copy_f32(const float *x, void *dst, int64_t n) { memcpy(dst, x, (size_t)n * sizeof *x); }

int qlm_rtn_traits(int type, qlm_type_traits *tr, char *name, size_t cap) {
  int fam = QLM_TYPE_FAMILY(type), bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if ((fam != QLM_FAMILY_RTN_SYM && fam != QLM_FAMILY_RTN_ASYM) || bits < 2 || bits > 8 || g < 1) return 0;
  snprintf(name, cap, "%s%d_g%d", fam == QLM_FAMILY_RTN_ASYM ? "zeropoint" : "absmax", bits, g);
  memset(tr, 0, sizeof *tr);
  tr->block_size = g;
  tr->type_size = block_bytes(type);
  tr->to_float_t = rtn_to_float;
  if (act_is_q8s(type)) {
    tr->vec_dot_type = QLM_TYPE_Q8_S;
    tr->quantize_act = qlm_quantize_q8_s;
  } else {
    tr->vec_dot_type = QLM_TYPE_F32;
    tr->quantize_act = copy_f32;
  }
  tr->vec_dot_t = qlm_vec_dot_rtn_ref;
  tr->vec_dot_t_for = rtn_vec_dot_t_for;
  return 1;
}

/* ---- Q8_S activations (see rtn.h): half d, int16 sum, int8 q[32]. */
static void q8_s_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += Q8S_BYTES, dst += QK) {
    float d = qlm_rdhalf(b);
    for (int j = 0; j < QK; j++) dst[j] = d * (float)(int8_t)b[4 + j];
  }
}

const qlm_type_traits *qlm_rtn_traits_q8_s(void) {
  static const qlm_type_traits tr = {.name = "q8_s", .block_size = QK, .type_size = Q8S_BYTES, .to_float = q8_s_to_float};
  return &tr;
}
