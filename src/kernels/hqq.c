/* hqq.c — the HQQ storage types: layout (see hqq.h), dequantizer, scalar dot product, the
 * traits builder for QLM_FAMILY_HQQ ids, and the scalar build of the solver's inner loop. */
#include "kernels/hqq.h"

#include <stdio.h>
#include <string.h>

#include "core/bytes.h"
#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/hqq_iter.h"

#define QK 32

int qlm_hqq_type(int bits, int group) {
  if (bits < 1 || bits > 8 || group < 1 || group > 0xFFFF) return -1;
  return qlm_type_make(QLM_FAMILY_HQQ, bits, group);
}

int qlm_hqq_code_bytes(int type) { return (QLM_TYPE_BLOCK(type) * QLM_TYPE_BITS(type) + 7) / 8; }

size_t qlm_hqq_block_bytes(int type) { return QLM_HQQ_HEADER + (size_t)qlm_hqq_code_bytes(type); }

/* Which of the three code layouts of hqq.h a type uses. */
enum { CODES_BYTES, CODES_NIB32, CODES_STREAM };
static int code_layout(int bits, int g) {
  if (bits == 8) return CODES_BYTES;
  if (bits == 4 && g % QK == 0) return CODES_NIB32;
  return CODES_STREAM;
}

static void pack_codes(int bits, int g, const uint8_t *u, uint8_t *p) {
  int layout = code_layout(bits, g);
  if (layout == CODES_BYTES) {
    memcpy(p, u, (size_t)g);
  } else if (layout == CODES_NIB32) {
    for (int c = 0; c < g; c += QK, p += QK / 2)
      for (int j = 0; j < QK / 2; j++) p[j] = (uint8_t)(u[c + j] | u[c + j + QK / 2] << 4);
  } else {
    /* bit stream: code i covers bits [i*b, i*b + b), at most two bytes since b <= 8 */
    memset(p, 0, (size_t)(g * bits + 7) / 8);
    for (int i = 0; i < g; i++) {
      int bit = i * bits;
      unsigned v = (unsigned)u[i] << (bit % 8);
      p[bit / 8] |= (uint8_t)v;
      if (v >> 8) p[bit / 8 + 1] |= (uint8_t)(v >> 8);
    }
  }
}

/* Code i of a block's code bytes p. */
static inline int code_at(int bits, int g, const uint8_t *p, int i) {
  int layout = code_layout(bits, g);
  if (layout == CODES_BYTES) return p[i];
  if (layout == CODES_NIB32) {
    const uint8_t *c = p + i / QK * (QK / 2);
    int j = i % QK;
    return j < QK / 2 ? c[j] & 0xF : c[j - QK / 2] >> 4;
  }
  int bit = i * bits, byte = bit / 8;
  unsigned v = p[byte];
  if (bit % 8 + bits > 8) v |= (unsigned)p[byte + 1] << 8;
  return (int)((v >> (bit % 8)) & ((1u << bits) - 1));
}

static void unpack_codes(int bits, int g, const uint8_t *p, uint8_t *u) {
  for (int i = 0; i < g; i++) u[i] = (uint8_t)code_at(bits, g, p, i);
}

void qlm_hqq_pack(int type, float s, float z, const uint8_t *u, void *block) {
  uint8_t *b = block;
  qlm_wrhalf(b, s);
  qlm_wrhalf(b + 2, z);
  pack_codes(QLM_TYPE_BITS(type), QLM_TYPE_BLOCK(type), u, b + QLM_HQQ_HEADER);
}

void qlm_hqq_unpack(int type, const void *block, float *s, float *z, uint8_t *u) {
  const uint8_t *b = block;
  *s = qlm_rdhalf(b);
  *z = qlm_rdhalf(b + 2);
  unpack_codes(QLM_TYPE_BITS(type), QLM_TYPE_BLOCK(type), b + QLM_HQQ_HEADER, u);
}

/* Dequantizer: w = (u - z) * s, hqq's order of float operations. */
static void hqq_to_float(int type, const void *src, float *dst, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type), bits = QLM_TYPE_BITS(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const uint8_t *b = src;
  for (int64_t k = 0; k < n / g; k++, b += bs, dst += g) {
    float s = qlm_rdhalf(b), z = qlm_rdhalf(b + 2);
    for (int i = 0; i < g; i++) dst[i] = ((float)code_at(bits, g, b + QLM_HQQ_HEADER, i) - z) * s;
  }
}

float qlm_vec_dot_hqq_ref(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type), bits = QLM_TYPE_BITS(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const uint8_t *b = w;
  const float *x = a;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, b += bs, x += g) {
    float s = qlm_rdhalf(b), z = qlm_rdhalf(b + 2);
    for (int i = 0; i < g; i++) {
      float wi = ((float)code_at(bits, g, b + QLM_HQQ_HEADER, i) - z) * s;
      sum += wi * x[i];
    }
  }
  return sum;
}

static qlm_vec_dot_t_fn hqq_vec_dot_t_for(int type, int level) {
  qlm_vec_dot_t_fn r = NULL;
  if (level >= QLM_SIMD_AVX512) r = qlm_hqq_vec_dot_avx512(type);
  if (!r && level >= QLM_SIMD_AVX2) r = qlm_hqq_vec_dot_avx2(type);
  return r ? r : qlm_vec_dot_hqq_ref;
}

/* f32 activations: a copy. */
static void copy_f32(const float *x, void *dst, int64_t n) { memcpy(dst, x, (size_t)n * sizeof *x); }

int qlm_hqq_traits(int type, qlm_type_traits *tr, char *name, size_t cap) {
  int bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if (QLM_TYPE_FAMILY(type) != QLM_FAMILY_HQQ || bits < 1 || bits > 8 || g < 1) return 0;
  snprintf(name, cap, "hqq%d_g%d", bits, g);
  memset(tr, 0, sizeof *tr);
  tr->block_size = g;
  tr->type_size = qlm_hqq_block_bytes(type);
  tr->to_float_t = hqq_to_float;
  tr->vec_dot_type = QLM_TYPE_F32;
  tr->quantize_act = copy_f32;
  tr->vec_dot_t = qlm_vec_dot_hqq_ref;
  tr->vec_dot_t_for = hqq_vec_dot_t_for;
  return 1;
}

/* ---- solver inner loop, scalar build */
double qlm_hqq_iter_ref(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z) {
  return hqq_iter_body(a, W, ng, si, z);
}

qlm_hqq_iter_fn qlm_hqq_iter_for(int level) {
  if (level > (int)qlm_cpu_detect()) level = (int)qlm_cpu_detect();
  if (level >= QLM_SIMD_AVX512) return qlm_hqq_iter_avx512;
  if (level >= QLM_SIMD_AVX2) return qlm_hqq_iter_avx2;
  return qlm_hqq_iter_ref;
}
