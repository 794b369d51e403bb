/* types.c — the traits table of weight storage types and their scalar reference dequantizers.
 *
 * Layouts follow ggml's block definitions (ggml-common.h) byte for byte, so GGUF tensor data
 * can be used in place.  All multi-byte fields are little-endian; "half" is IEEE binary16.
 * Legacy types use blocks of QK = 32 weights, k-quants super-blocks of QK_K = 256.
 *
 * The dequantizers are deliberately plain: one formula per element, in the same float
 * evaluation order as ggml (scale products first, then the quant), so results are
 * bit-identical to llama.cpp's and gguf-py's reference dequantizers. */
#include "core/bytes.h"
#include "kernels/types.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "core/error.h"
#include "core/fp16.h"
#include "kernels/qdot.h"

#define QK 32
#define QK_K 256


/* ---- F32: 1 weight, 4 bytes (IEEE binary32). */
static void f32_to_float(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

/* ---- F16: 1 weight, 2 bytes (IEEE binary16). */
static void f16_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *p = src;
  for (int64_t i = 0; i < n; i++) dst[i] = qlm_rdhalf(p + 2 * i);
}

/* ---- BF16: 1 weight, 2 bytes (upper half of a binary32). */
static void bf16_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *p = src;
  for (int64_t i = 0; i < n; i++) dst[i] = qlm_bf16_to_f32(qlm_rd16(p + 2 * i));
}

/* ---- Q4_0: 32 weights, 18 bytes.
 *   [0..2)   half d
 *   [2..18)  qs[16]: byte j holds weight j in its low nibble and weight j+16 in its high nibble
 *   w = (q - 8) * d,  q in 0..15 */
static void q4_0_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += 18, dst += QK) {
    float d = qlm_rdhalf(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
      dst[j] = (float)((qs[j] & 0xF) - 8) * d;
      dst[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
  }
}

/* ---- Q4_1: 32 weights, 20 bytes.
 *   [0..2) half d, [2..4) half m, [4..20) qs[16] nibbles as in Q4_0
 *   w = q * d + m */
static void q4_1_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += 20, dst += QK) {
    float d = qlm_rdhalf(b), m = qlm_rdhalf(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
      dst[j] = (float)(qs[j] & 0xF) * d + m;
      dst[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
  }
}

/* ---- Q5_0: 32 weights, 22 bytes.
 *   [0..2) half d
 *   [2..6) qh: u32, bit j = 5th (high) bit of weight j
 *   [6..22) qs[16]: low 4 bits, nibbles as in Q4_0
 *   w = (q - 16) * d,  q in 0..31 */
static void q5_0_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += 22, dst += QK) {
    float d = qlm_rdhalf(b);
    uint32_t qh = qlm_rd32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
      int q0 = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
      int q1 = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
      dst[j] = (float)(q0 - 16) * d;
      dst[j + 16] = (float)(q1 - 16) * d;
    }
  }
}

/* ---- Q5_1: 32 weights, 24 bytes.
 *   [0..2) half d, [2..4) half m, [4..8) qh u32 high bits, [8..24) qs[16] low nibbles
 *   w = q * d + m,  q in 0..31 */
static void q5_1_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += 24, dst += QK) {
    float d = qlm_rdhalf(b), m = qlm_rdhalf(b + 2);
    uint32_t qh = qlm_rd32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
      int q0 = (qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
      int q1 = (qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
      dst[j] = (float)q0 * d + m;
      dst[j + 16] = (float)q1 * d + m;
    }
  }
}

/* ---- Q8_0: 32 weights, 34 bytes.
 *   [0..2) half d, [2..34) int8 qs[32];  w = q * d */
static void q8_0_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += 34, dst += QK) {
    float d = qlm_rdhalf(b);
    for (int j = 0; j < QK; j++) dst[j] = (float)(int8_t)b[2 + j] * d;
  }
}

/* ---- Q8_1: 32 weights, 36 bytes (an activation format: ggml stores s = d * sum(q)).
 *   [0..2) half d, [2..4) half s, [4..36) int8 qs[32];  w = q * d */
static void q8_1_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK; i++, b += 36, dst += QK) {
    float d = qlm_rdhalf(b);
    for (int j = 0; j < QK; j++) dst[j] = (float)(int8_t)b[4 + j] * d;
  }
}

/* ---- Q2_K: 256 weights, 84 bytes; 16 sub-blocks of 16 weights.
 *   [0..16)   scales[16]: sub-block s has scale = scales[s] & 0xF, min = scales[s] >> 4
 *   [16..80)  qs[64]: 2-bit quants.  Weight e (0..255): half h = e/128, r = e%128,
 *             byte qs[32*h + r%32], bits at shift 2*(r/32)
 *   [80..82)  half d, [82..84) half dmin
 *   w = (d * scale_s) * q - (dmin * min_s),  s = e/16 */
static void q2_k_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK_K; i++, b += 84, dst += QK_K) {
    const uint8_t *sc = b, *qs = b + 16;
    float d = qlm_rdhalf(b + 80), dmin = qlm_rdhalf(b + 82);
    for (int e = 0; e < QK_K; e++) {
      int h = e / 128, r = e % 128, s = e / 16;
      int q = (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      float dl = d * (float)(sc[s] & 0xF), ml = dmin * (float)(sc[s] >> 4);
      dst[e] = dl * (float)q - ml;
    }
  }
}

/* ---- Q3_K: 256 weights, 110 bytes; 16 sub-blocks of 16 weights, symmetric.
 *   [0..32)    hmask[32]: high (3rd) bit; weight e: byte hmask[e%32], bit (e/32)
 *   [32..96)   qs[64]: low 2 bits, packed as in Q2_K
 *   [96..108)  scales[12]: 16 signed 6-bit scales stored +32:
 *              low 4 bits: s<8 ? scales[s] & 0xF : scales[s-8] >> 4
 *              high 2 bits: (scales[8 + s%4] >> (2*(s/4))) & 3
 *   [108..110) half d
 *   q = low2 | high<<2 in 0..7;  w = (d * (scale_s - 32)) * (q - 4) */
static int q3_k_scale(const uint8_t *sc, int s) {
  int lo = s < 8 ? (sc[s] & 0xF) : (sc[s - 8] >> 4);
  int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
  return (lo | (hi << 4)) - 32;
}

static void q3_k_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK_K; i++, b += 110, dst += QK_K) {
    const uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    float d = qlm_rdhalf(b + 108);
    for (int e = 0; e < QK_K; e++) {
      int h = e / 128, r = e % 128;
      int lo = (qs[32 * h + r % 32] >> (2 * (r / 32))) & 3;
      int hi = (hm[e % 32] >> (e / 32)) & 1;
      float dl = d * (float)q3_k_scale(sc, e / 16);
      dst[e] = dl * (float)((lo | (hi << 2)) - 4);
    }
  }
}

/* 6-bit scale and min of sub-block j (0..7) from the 12-byte packing shared by Q4_K and Q5_K:
 *   j < 4: scale = sc[j] & 63,  min = sc[j+4] & 63
 *   j >= 4: scale = (sc[j+4] & 0xF) | (sc[j-4] >> 6) << 4,  min = (sc[j+4] >> 4) | (sc[j] >> 6) << 4 */
/* ---- Q4_K: 256 weights, 144 bytes; 8 sub-blocks of 32 weights, affine.
 *   [0..2) half d, [2..4) half dmin, [4..16) scales[12] (see k4_scale_min)
 *   [16..144) qs[128]: weight e: chunk c = e/64, byte qs[32*c + e%32], low nibble if e%64 < 32 else high
 *   w = (d * scale_j) * q - (dmin * min_j),  j = e/32 */
static void q4_k_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK_K; i++, b += 144, dst += QK_K) {
    float d = qlm_rdhalf(b), dmin = qlm_rdhalf(b + 2);
    const uint8_t *sc = b + 4, *qs = b + 16;
    for (int e = 0; e < QK_K; e++) {
      int sv, mv;
      qlm_k4_scale_min(sc, e / 32, &sv, &mv);
      uint8_t byte = qs[32 * (e / 64) + e % 32];
      int q = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
      dst[e] = (d * (float)sv) * (float)q - dmin * (float)mv;
    }
  }
}

/* ---- Q5_K: 256 weights, 176 bytes; as Q4_K plus a 5th bit.
 *   [0..2) half d, [2..4) half dmin, [4..16) scales[12], [16..48) qh[32], [48..176) qs[128]
 *   low 4 bits as in Q4_K; high bit of weight e: (qh[e%32] >> (e/32)) & 1
 *   w = (d * scale_j) * q - (dmin * min_j),  q in 0..31 */
static void q5_k_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK_K; i++, b += 176, dst += QK_K) {
    float d = qlm_rdhalf(b), dmin = qlm_rdhalf(b + 2);
    const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 48;
    for (int e = 0; e < QK_K; e++) {
      int sv, mv;
      qlm_k4_scale_min(sc, e / 32, &sv, &mv);
      uint8_t byte = qs[32 * (e / 64) + e % 32];
      int q = (e % 64) < 32 ? (byte & 0xF) : (byte >> 4);
      q |= ((qh[e % 32] >> (e / 32)) & 1) << 4;
      dst[e] = (d * (float)sv) * (float)q - dmin * (float)mv;
    }
  }
}

/* ---- Q6_K: 256 weights, 210 bytes; 16 sub-blocks of 16 weights, symmetric.
 *   [0..128)   ql[128]: low 4 bits.  Weight e: half h = e/128, r = e%128, quarter k = r/32, l = r%32:
 *              byte ql[64*h + 32*(k&1) + l], low nibble if k < 2 else high nibble
 *   [128..192) qh[64]: high 2 bits: byte qh[32*h + l], bits at shift 2*k
 *   [192..208) int8 scales[16], one per 16 weights (s = e/16)
 *   [208..210) half d
 *   w = (d * scale_s) * (q - 32),  q in 0..63 */
static void q6_k_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK_K; i++, b += 210, dst += QK_K) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = qlm_rdhalf(b + 208);
    for (int e = 0; e < QK_K; e++) {
      int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
      uint8_t lb = ql[64 * h + 32 * (k & 1) + l];
      int lo = k < 2 ? (lb & 0xF) : (lb >> 4);
      int hi = (qh[32 * h + l] >> (2 * k)) & 3;
      dst[e] = (d * (float)sc[e / 16]) * (float)((lo | (hi << 4)) - 32);
    }
  }
}

/* ---- Q8_K: 256 weights, 292 bytes (an activation format).
 *   [0..4) float d, [4..260) int8 qs[256], [260..292) int16 bsums[16] (sums of 16 quants)
 *   w = d * q */
static void q8_k_to_float(const void *src, float *dst, int64_t n) {
  const uint8_t *b = src;
  for (int64_t i = 0; i < n / QK_K; i++, b += 292, dst += QK_K) {
    float d = qlm_bits_to_f32(qlm_rd32(b));
    for (int j = 0; j < QK_K; j++) dst[j] = d * (float)(int8_t)b[4 + j];
  }
}

/* ---- I8: 1 weight, 1 byte (two's complement). */
static void i8_to_float(const void *src, float *dst, int64_t n) {
  const int8_t *p = src;
  for (int64_t i = 0; i < n; i++) dst[i] = (float)p[i];
}

/* The ggml types' traits, fields by name (the fields of qlm's own types stay zero). */
#define T(nm, bs, ts, tf, vdt, qa, vd)                                                                                 \
  {.name = nm, .block_size = bs, .type_size = ts, .to_float = tf, .vec_dot_type = vdt, .quantize_act = qa, .vec_dot = vd}
static const qlm_type_traits k_traits[QLM_TYPE_COUNT_GGML] = {
    [QLM_TYPE_F32] = T("f32", 1, 4, f32_to_float, 0, NULL, NULL),
    [QLM_TYPE_F16] = T("f16", 1, 2, f16_to_float, 0, NULL, NULL),
    [QLM_TYPE_Q4_0] = T("q4_0", QK, 18, q4_0_to_float, QLM_TYPE_Q8_0, qlm_quantize_q8_0, qlm_vec_dot_q4_0_ref),
    [QLM_TYPE_Q4_1] = T("q4_1", QK, 20, q4_1_to_float, QLM_TYPE_Q8_1, qlm_quantize_q8_1, qlm_vec_dot_q4_1_ref),
    [QLM_TYPE_Q5_0] = T("q5_0", QK, 22, q5_0_to_float, QLM_TYPE_Q8_0, qlm_quantize_q8_0, qlm_vec_dot_q5_0_ref),
    [QLM_TYPE_Q5_1] = T("q5_1", QK, 24, q5_1_to_float, QLM_TYPE_Q8_1, qlm_quantize_q8_1, qlm_vec_dot_q5_1_ref),
    [QLM_TYPE_Q8_0] = T("q8_0", QK, 34, q8_0_to_float, QLM_TYPE_Q8_0, qlm_quantize_q8_0, qlm_vec_dot_q8_0_ref),
    [QLM_TYPE_Q8_1] = T("q8_1", QK, 36, q8_1_to_float, 0, NULL, NULL),
    [QLM_TYPE_Q2_K] = T("q2_K", QK_K, 84, q2_k_to_float, QLM_TYPE_Q8_K, qlm_quantize_q8_k, qlm_vec_dot_q2_k_ref),
    [QLM_TYPE_Q3_K] = T("q3_K", QK_K, 110, q3_k_to_float, QLM_TYPE_Q8_K, qlm_quantize_q8_k, qlm_vec_dot_q3_k_ref),
    [QLM_TYPE_Q4_K] = T("q4_K", QK_K, 144, q4_k_to_float, QLM_TYPE_Q8_K, qlm_quantize_q8_k, qlm_vec_dot_q4_k_ref),
    [QLM_TYPE_Q5_K] = T("q5_K", QK_K, 176, q5_k_to_float, QLM_TYPE_Q8_K, qlm_quantize_q8_k, qlm_vec_dot_q5_k_ref),
    [QLM_TYPE_Q6_K] = T("q6_K", QK_K, 210, q6_k_to_float, QLM_TYPE_Q8_K, qlm_quantize_q8_k, qlm_vec_dot_q6_k_ref),
    [QLM_TYPE_Q8_K] = T("q8_K", QK_K, 292, q8_k_to_float, 0, NULL, NULL),
    [QLM_TYPE_I8] = T("i8", 1, 1, i8_to_float, 0, NULL, NULL),
    [QLM_TYPE_BF16] = T("bf16", 1, 2, bf16_to_float, 0, NULL, NULL),
};
#undef T

/* ---- qlm's own types.
 * Fixed ids are answered by the file that defines them.  Parameterized ids (family << 24 | ...)
 * get their traits built once by the family's builder and kept in a small table that only grows:
 * an entry is filled under the lock and then published by storing its id atomically, so lookups
 * (every matmul call) never lock. */
#define MAX_PARAM_TYPES 512
typedef struct param_entry {
  _Atomic int id;        /* 0 until published */
  qlm_type_traits tr;
  char name[40];
} param_entry;
static param_entry g_param[MAX_PARAM_TYPES];
static _Atomic int g_n_param;
static pthread_mutex_t g_param_lock = PTHREAD_MUTEX_INITIALIZER;

int qlm_type_make(int family, int bits, int block) {
  if (family < 1 || family > 127 || bits < 0 || bits > 255 || block < 1 || block > 0xFFFF) return -1;
  return (int)((unsigned)family << 24 | (unsigned)bits << 16 | (unsigned)block);
}

static const param_entry *param_find(int type) {
  int n = atomic_load(&g_n_param);
  for (int i = 0; i < n; i++)
    if (atomic_load(&g_param[i].id) == type) return &g_param[i];
  return NULL;
}

static const qlm_type_traits *param_traits(int type) {
  const param_entry *e = param_find(type);
  if (e) return &e->tr;
  qlm_type_traits tr = {0};
  char name[sizeof g_param[0].name];
  int ok = 0;
  switch (QLM_TYPE_FAMILY(type)) {
  case QLM_FAMILY_RTN_SYM:
  case QLM_FAMILY_RTN_ASYM: ok = qlm_rtn_traits(type, &tr, name, sizeof name); break;
  case QLM_FAMILY_INT8_ROW:
  case QLM_FAMILY_Q8_ROW: ok = qlm_int8row_traits(type, &tr, name, sizeof name); break;
  case QLM_FAMILY_HQQ: ok = qlm_hqq_traits(type, &tr, name, sizeof name); break;
  case QLM_FAMILY_FP8: ok = qlm_fp8_traits(type, &tr, name, sizeof name); break;
  default: break;
  }
  if (!ok) return NULL;
  pthread_mutex_lock(&g_param_lock);
  const qlm_type_traits *out = NULL;
  if ((e = param_find(type))) {
    out = &e->tr;
  } else {
    int n = atomic_load(&g_n_param);
    if (n < MAX_PARAM_TYPES) {
      param_entry *ne = &g_param[n];
      ne->tr = tr;
      memcpy(ne->name, name, sizeof ne->name);
      ne->tr.name = ne->name;
      atomic_store(&ne->id, type);
      atomic_store(&g_n_param, n + 1);
      out = &ne->tr;
    }
  }
  pthread_mutex_unlock(&g_param_lock);
  return out;
}

const qlm_type_traits *qlm_type_traits_of(int type) {
  if (type < 0) return NULL;
  if (type < QLM_TYPE_COUNT_GGML) return k_traits[type].name ? &k_traits[type] : NULL;
  if (type >= QLM_TYPE_NF4 && type <= QLM_TYPE_FP4_DQ) return qlm_bnb4_traits(type);
  if (type == QLM_TYPE_Q8_S) return qlm_rtn_traits_q8_s();
  if (type >= QLM_TYPE_QLM_FIXED_END) return param_traits(type);
  return NULL;
}

bool qlm_dequantize(int type, const void *src, float *dst, int64_t n) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  if (!t) return false;
  if (t->to_float_t) t->to_float_t(type, src, dst, n);
  else if (t->to_float) t->to_float(src, dst, n);
  else return false;
  return true;
}

bool qlm_type_can_dequantize(int type) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  return t && (t->to_float || t->to_float_t);
}

double qlm_type_bpw(int type) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  return t ? (double)t->type_size * 8.0 / (double)t->block_size : 0.0;
}

const char *qlm_type_name(int type) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  return t ? t->name : "?";
}

size_t qlm_type_row_bytes(int type, int64_t n) {
  const qlm_type_traits *t = qlm_type_traits_of(type);
  if (!t || n < 0 || n % t->block_size != 0) return 0;
  size_t out;
  if (qlm_mul_overflow((size_t)(n / t->block_size), t->type_size, &out)) return 0;
  return out;
}
