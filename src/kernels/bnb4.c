/* bnb4.c — bitsandbytes NF4/FP4 storage types (layout in kernels/bnb4.h): code tables, the
 * 8-bit dynamic map of double quantization, the dequantizer, the scalar dot product, the
 * expansion of double-quantized tensors, and the traits of the four fixed ids. */
#include "kernels/bnb4.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/cpu.h"

#define QB QLM_BNB4_BLOCK

/* get_4bit_type("nf4"): bnb's float64 literals, divided by max|.| = 1.0 in float32. */
const float qlm_bnb4_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* get_4bit_type("fp4"): by bit pattern, divided by 12 in float32.  Pattern 0b1000 is +0, not
 * -0: bnb lists it as the Python int -0, which is 0. */
const float qlm_bnb4_fp4_code[16] = {
    0.0f,          0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f, 4.0f / 12.0f,  6.0f / 12.0f,
    2.0f / 12.0f,  3.0f / 12.0f,     0.0f,          -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
    -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f,
};

int qlm_bnb4_is_blocks(int type) { return type == QLM_TYPE_NF4 || type == QLM_TYPE_FP4; }
int qlm_bnb4_is_dq(int type) { return type == QLM_TYPE_NF4_DQ || type == QLM_TYPE_FP4_DQ; }

const float *qlm_bnb4_code(int type) {
  if (type == QLM_TYPE_NF4 || type == QLM_TYPE_NF4_DQ) return qlm_bnb4_nf4_code;
  if (type == QLM_TYPE_FP4 || type == QLM_TYPE_FP4_DQ) return qlm_bnb4_fp4_code;
  return NULL;
}

/* ---- The dynamic map: create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8).
 * For i = 0..6: b = torch.linspace(0.1, 1, 2^i + 1) in float32, means m_k = (b_k + b_{k+1}) / 2,
 * values +-(float)10^(i-6) * m_k; then 0 and 1; 254 + 2 = 256 values, sorted.  linspace is
 * computed the way torch's CPU kernel does (float step, the first half counted from start,
 * the second half back from end, each a fused multiply-add: torch's build contracts
 * start + step * k into one FMA, which we found by comparing with torch), so every value is
 * the same float as bnb's (tests/test_bnb4.c checks all 256). */
static float g_dynmap[256];
static pthread_once_t g_dynmap_once = PTHREAD_ONCE_INIT;

static void torch_linspace_f32(float start, float end, int steps, float *out) {
  float step = (end - start) / (float)(steps - 1);
  int halfway = steps / 2;
  for (int k = 0; k < steps; k++)
    out[k] = k < halfway ? fmaf(step, (float)k, start) : fmaf(-step, (float)(steps - k - 1), end);
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static void build_dynmap(void) {
  static const double pow10[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  float b[65];
  int n = 0;
  for (int i = 0; i < 7; i++) {
    int items = (1 << i) + 1;
    torch_linspace_f32(0.1f, 1.0f, items, b);
    float s = (float)pow10[i];
    for (int k = 0; k + 1 < items; k++) {
      float m = (b[k] + b[k + 1]) / 2.0f;
      g_dynmap[n++] = s * m;
      g_dynmap[n++] = -(s * m);
    }
  }
  g_dynmap[n++] = 0.0f;
  g_dynmap[n++] = 1.0f;
  qsort(g_dynmap, (size_t)n, sizeof g_dynmap[0], cmp_float);
}

const float *qlm_bnb_dynamic_map(void) {
  pthread_once(&g_dynmap_once, build_dynmap);
  return g_dynmap;
}

/* ---- Dequantizer and scalar dot product. */
static void bnb4_to_float(int type, const void *src, float *dst, int64_t n) {
  const float *code = qlm_bnb4_code(type);
  const uint8_t *b = src;
  for (int64_t k = 0; k < n / QB; k++, b += QLM_BNB4_BLOCK_BYTES, dst += QB) {
    float amax = qlm_rdf32(b);
    for (int j = 0; j < QB / 2; j++) {
      dst[j] = amax * code[b[4 + j] & 0xF];
      dst[j + QB / 2] = amax * code[b[4 + j] >> 4];
    }
  }
}

float qlm_vec_dot_bnb4_ref(int type, const void *w, const void *a, int64_t n) {
  const float *code = qlm_bnb4_code(type), *x = a;
  const uint8_t *b = w;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / QB; k++, b += QLM_BNB4_BLOCK_BYTES, x += QB) {
    const float amax = qlm_rdf32(b);
    for (int j = 0; j < QB / 2; j++) sum += (amax * code[b[4 + j] & 0xF]) * x[j];
    for (int j = 0; j < QB / 2; j++) sum += (amax * code[b[4 + j] >> 4]) * x[j + QB / 2];
  }
  return sum;
}

static qlm_vec_dot_t_fn bnb4_vec_dot_t_for(int type, int level) {
  if (!qlm_bnb4_is_blocks(type)) return NULL;
  if (level >= QLM_SIMD_AVX512) return qlm_vec_dot_bnb4_avx512;
  if (level >= QLM_SIMD_AVX2) return qlm_vec_dot_bnb4_avx2;
  return qlm_vec_dot_bnb4_ref;
}

static void copy_f32(const float *x, void *dst, int64_t n) { memcpy(dst, x, (size_t)n * sizeof *x); }

/* ---- Double-quantized tensors back to blocks. */
int qlm_bnb4_expand_dq(int dq_type, const void *codes, int64_t rows, int64_t cols, const uint8_t *absmax_q,
                       int64_t n_absmax_q, const float *absmax2, int64_t n_absmax2, float offset, void **out,
                       int *out_type, qlm_error *err) {
  *out = NULL;
  if (!qlm_bnb4_is_dq(dq_type)) return qlm_fail(err, QLM_EFORMAT, "type %d is not nf4_dq or fp4_dq", dq_type);
  if (rows < 0 || cols <= 0 || cols % QB != 0)
    return qlm_fail(err, QLM_EFORMAT, "shape %lld x %lld: rows must be whole blocks of %d weights", (long long)rows,
                    (long long)cols, QB);
  size_t n_blocks, total;
  if (qlm_mul_overflow((size_t)rows, (size_t)(cols / QB), &n_blocks) ||
      qlm_mul_overflow(n_blocks, QLM_BNB4_BLOCK_BYTES, &total))
    return qlm_fail(err, QLM_ELIMIT, "shape %lld x %lld is too large", (long long)rows, (long long)cols);
  if (n_absmax_q < 0 || (uint64_t)n_absmax_q != n_blocks)
    return qlm_fail(err, QLM_EFORMAT, "absmax_q has %lld codes, expected %zu (one per %d-weight block)",
                    (long long)n_absmax_q, n_blocks, QB);
  size_t n2 = (n_blocks + QLM_BNB4_DQ_GROUP - 1) / QLM_BNB4_DQ_GROUP;
  if (n_absmax2 < 0 || (uint64_t)n_absmax2 != n2)
    return qlm_fail(err, QLM_EFORMAT, "absmax2 has %lld values, expected %zu (one per %d absmax codes)",
                    (long long)n_absmax2, n2, QLM_BNB4_DQ_GROUP);
  if (!isfinite(offset)) return qlm_fail(err, QLM_EFORMAT, "absmax_offset is not finite");
  for (size_t i = 0; i < n2; i++)
    if (!isfinite(absmax2[i])) return qlm_fail(err, QLM_EFORMAT, "absmax2[%zu] is not finite", i);
  uint8_t *dst = qlm_malloc(total ? total : 1, "nf4/fp4 blocks", err);
  if (!dst) return QLM_ENOMEM;
  const float *map = qlm_bnb_dynamic_map();
  const uint8_t *src = codes;
  for (size_t b = 0; b < n_blocks; b++) {
    /* As bnb: dequantize_blockwise (code * absmax2, float) then + offset (float). */
    float amax = map[absmax_q[b]] * absmax2[b / QLM_BNB4_DQ_GROUP];
    amax += offset;
    uint8_t *blk = dst + b * QLM_BNB4_BLOCK_BYTES;
    memcpy(blk, &amax, 4); /* little-endian hosts only, as the rest of qlm */
    memcpy(blk + 4, src + b * QLM_BNB4_DQ_BLOCK_BYTES, QLM_BNB4_DQ_BLOCK_BYTES);
  }
  *out = dst;
  *out_type = dq_type == QLM_TYPE_NF4_DQ ? QLM_TYPE_NF4 : QLM_TYPE_FP4;
  return QLM_OK;
}

/* ---- Traits. */
static const qlm_type_traits k_bnb4[4] = {
    {.name = "nf4", .block_size = QB, .type_size = QLM_BNB4_BLOCK_BYTES, .vec_dot_type = QLM_TYPE_F32,
     .quantize_act = copy_f32, .vec_dot_t = qlm_vec_dot_bnb4_ref, .vec_dot_t_for = bnb4_vec_dot_t_for,
     .to_float_t = bnb4_to_float},
    {.name = "fp4", .block_size = QB, .type_size = QLM_BNB4_BLOCK_BYTES, .vec_dot_type = QLM_TYPE_F32,
     .quantize_act = copy_f32, .vec_dot_t = qlm_vec_dot_bnb4_ref, .vec_dot_t_for = bnb4_vec_dot_t_for,
     .to_float_t = bnb4_to_float},
    {.name = "nf4_dq", .block_size = QB, .type_size = QLM_BNB4_DQ_BLOCK_BYTES},
    {.name = "fp4_dq", .block_size = QB, .type_size = QLM_BNB4_DQ_BLOCK_BYTES},
};

const qlm_type_traits *qlm_bnb4_traits(int type) {
  if (type < QLM_TYPE_NF4 || type > QLM_TYPE_FP4_DQ) return NULL;
  return &k_bnb4[type - QLM_TYPE_NF4];
}
