/* bnb4.c — the bitsandbytes 4-bit methods "nf4" and "fp4" (QLoRA, arXiv 2305.14314), block 64,
 * with optional double quantization of the absmax constants.
 *
 * Per block of 64 weights of a row (rows must be whole blocks), as bnb's quantize_4bit (its
 * default torch backend, which is what bnb runs on CPU):
 *   absmax = max |x_i|                                       (float)
 *   s_i    = clamp(x_i * (1 / max(absmax, 1e-38)), -1, 1)    (float reciprocal, then multiply)
 *   u_i    = the code whose value is nearest to s_i: with the table sorted and midpoints
 *            m_k = (c_k + c_{k+1}) / 2 (float), the sorted position is the number of m_k < s_i
 *            (torch.bucketize, right=False), so a value exactly on a midpoint takes the LOWER
 *            code; FP4 maps the sorted position to the bit pattern through bnb's argsort order.
 * An all-zero block gets absmax 0 and every code for 0.0 (NF4 7; FP4 0 for -0 and 0).
 *
 * Double quantization (opts.double_quant, bnb's compress_statistics):
 *   offset = mean(absmax)  (exact mean rounded to float; torch's float sum may differ by an ulp)
 *   absmax - offset is quantized by quantize_blockwise(blocksize=256) with the 8-bit dynamic
 *   map: per 256 constants absmax2 = max |.|, codes nearest on s = v * (1/absmax2) by midpoints
 *   (bnb's default backend; bnb's native CPU library does an approximate binary search that
 *   sometimes picks a farther code, see tests/test_bnb4.c).
 * Stored as: main tensor NF4_DQ/FP4_DQ (codes only), and companions ".absmax_q" (I8, uint8 code
 * per 64-block, blocks row-major = bnb's flattened order), ".absmax2" (F32, one per 256 codes,
 * the last group may be partial) and ".absmax_offset" (F32, 1).  Bits per weight:
 *   4 + 8/64 + 32 * ceil(B/256) / N + 32 / N   (B = N/64 blocks; the last term is the offset)
 * = 4.12695... when B is a multiple of 256 (bnb's count leaves out the offset's 32 bits). */
#include "quant/bnb4.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/bnb4.h"
#include "kernels/threadpool.h"

#define QB QLM_BNB4_BLOCK

/* Sorted position -> code.  NF4 is sorted.  FP4: torch.argsort of bnb's FP4 table (the two
 * zeros at patterns 0 and 8 come out as 0 then 8, so (-m, 0] -> 0 and (0, m] -> 8). */
static const uint8_t k_fp4_order[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};

/* The 15 midpoints of a type's sorted table. */
static void midpoints(int type, float mid[15]) {
  const float *c = qlm_bnb4_code(type);
  int fp4 = c == qlm_bnb4_fp4_code;
  for (int k = 0; k < 15; k++) {
    float a = c[fp4 ? k_fp4_order[k] : k], b = c[fp4 ? k_fp4_order[k + 1] : k + 1];
    mid[k] = (a + b) / 2.0f;
  }
}

/* The scale factor of bnb: 1 / max(absmax, 1e-38) in float (NaN stays NaN, as in torch). */
static float inv_scale(float amax) { return 1.0f / (amax < 1e-38f ? 1e-38f : amax); }

/* clamp(v, -1, 1) letting NaN through, as torch.clamp. */
static float clamp1(float v) { return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v; }

/* max |x| over n values; NaN if any is NaN (torch's max propagates NaN): |the first NaN|.  One
 * branch-free pass (it vectorizes), the NaN looked up only when there is one. */
static float absmax_of(const float *x, int64_t n) {
  float m = 0.0f;
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    float a = fabsf(x[i]);
    bad |= isnan(a);
    m = a > m ? a : m;
  }
  for (int64_t i = 0; bad && i < n; i++)
    if (isnan(x[i])) return fabsf(x[i]);
  return m;
}

/* torch.bucketize(v, mid, right=False) over 255 sorted midpoints, for the values v[0..n): the
 * number of mid[k] < v (NaN gives 255, as torch).  The predicate !(mid[k] >= v) holds for a
 * prefix of the midpoints (all of them for NaN), so its length is found by the fixed steps
 * 128, 64, ..., 1: add the step when the midpoint just past it is still below v.  Done for all the
 * values step by step, the searches are independent and overlap (one search at a time, each step
 * waits for the last: that was as slow as the 4-bit quantization that double quantization serves). */
static void bucketize255(const float mid[255], const float *v, int n, int32_t *pos) {
  for (int i = 0; i < n; i++) pos[i] = 0;
  for (int step = 128; step >= 1; step /= 2)
    for (int i = 0; i < n; i++) pos[i] += step & -(int32_t) !(mid[pos[i] + step - 1] >= v[i]);
}

/* For the 15 sorted midpoints of a 4-bit table, bucketize's binary search equals counting the
 * midpoints with !(mid >= v) (NaN counts all 15, as there): written as a count so the block's 64
 * values are done side by side (this loop was most of NF4/FP4's quantization time). */
static void quantize_block_mid(int type, const float *mid, const float *x, uint8_t *blk) {
  int fp4 = qlm_bnb4_code(type) == qlm_bnb4_fp4_code;
  float amax = absmax_of(x, QB), r = inv_scale(amax);
  float v[QB];
  int32_t pos[QB];
  for (int i = 0; i < QB; i++) v[i] = clamp1(x[i] * r), pos[i] = 0;
  for (int k = 0; k < 15; k++)
    for (int i = 0; i < QB; i++) pos[i] += !(mid[k] >= v[i]);
  uint8_t u[QB];
  for (int i = 0; i < QB; i++) u[i] = fp4 ? k_fp4_order[pos[i]] : (uint8_t)pos[i];
  memcpy(blk, &amax, 4); /* little-endian f32, as the kernels read it */
  for (int j = 0; j < QB / 2; j++) blk[4 + j] = (uint8_t)(u[j] | u[j + QB / 2] << 4);
}

void qlm_bnb4_quantize_block(int type, const float *x, void *block) {
  float mid[15];
  midpoints(type, mid);
  quantize_block_mid(type, mid, x, block);
}

void qlm_bnb_quantize_blockwise8(const float *x, int64_t n, int blocksize, uint8_t *codes, float *absmax) {
  const float *map = qlm_bnb_dynamic_map();
  float mid[255];
  for (int k = 0; k < 255; k++) mid[k] = (map[k] + map[k + 1]) / 2.0f;
  float v[256];
  int32_t pos[256];
  for (int64_t b0 = 0, g = 0; b0 < n; b0 += blocksize, g++) {
    int64_t len = n - b0 < blocksize ? n - b0 : blocksize;
    float am = absmax_of(x + b0, len), r = inv_scale(am);
    absmax[g] = am;
    for (int64_t c = 0; c < len; c += 256) { /* pieces of 256 (bnb's double quantization uses 256) */
      int m = len - c < 256 ? (int)(len - c) : 256;
      for (int i = 0; i < m; i++) v[i] = clamp1(x[b0 + c + i] * r);
      bucketize255(mid, v, m, pos);
      for (int i = 0; i < m; i++) codes[b0 + c + i] = (uint8_t)pos[i];
    }
  }
}

float qlm_bnb4_absmax_mean(const float *absmax, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += absmax[i];
  return n > 0 ? (float)(s / (double)n) : 0.0f;
}

/* ---- The method. */
static int bnb4_type(const qlm_quant_method *m, bool dq) {
  int nf4 = m == &qlm_method_nf4;
  return dq ? (nf4 ? QLM_TYPE_NF4_DQ : QLM_TYPE_FP4_DQ) : (nf4 ? QLM_TYPE_NF4 : QLM_TYPE_FP4);
}

static void bnb4_defaults(qlm_quant_opts *o) {
  if (!o->bits) o->bits = 4;
  if (!o->group) o->group = QB;
}

static int bnb4_check_named(const char *name, const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  (void)rows;
  if (o->bits != 4) return qlm_fail(err, QLM_EUSAGE, "%s: bits=%d: the format has 4 bits", name, o->bits);
  if (o->group != QB && o->group != 0)
    return qlm_fail(err, QLM_EUSAGE, "%s: group=%d: the block size is %d", name, o->group, QB);
  if (cols <= 0 || cols % QB != 0)
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: rows of %lld weights are not whole blocks of %d", name,
                    (long long)cols, QB);
  return QLM_OK;
}

static int nf4_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  return bnb4_check_named("nf4", o, rows, cols, err);
}

static int fp4_check(const qlm_quant_opts *o, int64_t rows, int64_t cols, qlm_error *err) {
  return bnb4_check_named("fp4", o, rows, cols, err);
}

/* Double quantization of the absmax of `blocks` (NF4/FP4 blocks) into out's companions; the
 * main tensor gets the code bytes. */
static int store_dq(const uint8_t *blocks, size_t n_blocks, qlm_qtensor *out, qlm_error *err) {
  float *amax = qlm_malloc(n_blocks * sizeof *amax, "absmax", err);
  if (!amax) return QLM_ENOMEM;
  uint8_t *dst = out->data;
  for (size_t b = 0; b < n_blocks; b++) {
    const uint8_t *blk = blocks + b * QLM_BNB4_BLOCK_BYTES;
    amax[b] = qlm_rdf32(blk);
    memcpy(dst + b * QLM_BNB4_DQ_BLOCK_BYTES, blk + 4, QLM_BNB4_DQ_BLOCK_BYTES);
  }
  float offset = qlm_bnb4_absmax_mean(amax, (int64_t)n_blocks);
  for (size_t b = 0; b < n_blocks; b++) amax[b] -= offset;
  int64_t n2 = (int64_t)((n_blocks + QLM_BNB4_DQ_GROUP - 1) / QLM_BNB4_DQ_GROUP);
  qlm_qaux *aq = qlm_qtensor_add_aux(out, ".absmax_q", QLM_TYPE_I8, (int64_t)n_blocks, err);
  qlm_qaux *a2 = aq ? qlm_qtensor_add_aux(out, ".absmax2", QLM_TYPE_F32, n2, err) : NULL;
  qlm_qaux *ao = a2 ? qlm_qtensor_add_aux(out, ".absmax_offset", QLM_TYPE_F32, 1, err) : NULL;
  if (!ao) {
    free(amax);
    return err ? err->code : QLM_ENOMEM;
  }
  qlm_bnb_quantize_blockwise8(amax, (int64_t)n_blocks, QLM_BNB4_DQ_GROUP, aq->data, a2->data);
  memcpy(ao->data, &offset, 4);
  free(amax);
  return QLM_OK;
}

void qlm_bnb4_quantize_blocks_at(qlm_simd_level level, int type, const float *x, uint8_t *blocks, size_t n_blocks) {
  float mid[15];
  midpoints(type, mid);
#if defined(__x86_64__) || defined(__i386__)
  if (level >= QLM_SIMD_AVX512 && qlm_cpu_detect() >= QLM_SIMD_AVX512) {
    qlm_bnb4_quantize_blocks_avx512(mid, qlm_bnb4_code(type) == qlm_bnb4_fp4_code ? k_fp4_order : NULL, x, blocks,
                                    n_blocks);
    return;
  }
#endif
  (void)level;
  for (size_t b = 0; b < n_blocks; b++) quantize_block_mid(type, mid, x + b * QB, blocks + b * QLM_BNB4_BLOCK_BYTES);
}

/* The blocks of one tensor, split into contiguous ranges across the driver's threads. */
typedef struct blocks_job {
  int type;
  const float *W;
  uint8_t *blocks;
  size_t n_blocks;
} blocks_job;

static void blocks_task(void *ctx, int ith, int nth) {
  const blocks_job *j = ctx;
  size_t b0 = j->n_blocks * (size_t)ith / (size_t)nth, b1 = j->n_blocks * (size_t)(ith + 1) / (size_t)nth;
  qlm_bnb4_quantize_blocks_at(qlm_cpu_simd_level(), j->type, j->W + b0 * QB, j->blocks + b0 * QLM_BNB4_BLOCK_BYTES,
                              b1 - b0);
}

static int bnb4_quantize(const qlm_quant_method *m, const float *W, int64_t rows, int64_t cols,
                         const qlm_quant_opts *o, qlm_qtensor *out, qlm_error *err) {
  int rc = bnb4_check_named(m->name, o, rows, cols, err);
  if (rc) return rc;
  int type = bnb4_type(m, false);
  size_t n_blocks = (size_t)rows * (size_t)(cols / QB);
  uint8_t *blocks;
  qlm_qtensor full = {0};
  if (o->double_quant) {
    size_t bytes;
    if (qlm_mul_overflow(n_blocks, QLM_BNB4_BLOCK_BYTES, &bytes))
      return qlm_fail(err, QLM_ELIMIT, "%s: tensor of %lld x %lld is too large", m->name, (long long)rows,
                      (long long)cols);
    blocks = qlm_malloc(bytes ? bytes : 1, "nf4/fp4 blocks", err);
    if (!blocks) return QLM_ENOMEM;
    if ((rc = qlm_qtensor_alloc(out, bnb4_type(m, true), rows, cols, err))) {
      free(blocks);
      return rc;
    }
  } else {
    if ((rc = qlm_qtensor_alloc(&full, type, rows, cols, err))) return rc;
    blocks = full.data;
  }
  blocks_job j = {.type = type, .W = W, .blocks = blocks, .n_blocks = n_blocks};
  qlm_pool_run(o->pool && n_blocks >= 1024 ? o->pool : NULL, blocks_task, &j);
  if (o->double_quant) {
    rc = store_dq(blocks, n_blocks, out, err);
    free(blocks);
    if (rc) {
      qlm_qtensor_free(out);
      return rc;
    }
  } else {
    *out = full;
  }
  qlm_qtensor_set_bpw(out);
  snprintf(out->desc, sizeof out->desc, "%s block=%d dq=%d", m->name, QB, o->double_quant ? 1 : 0);
  return QLM_OK;
}

static int nf4_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                        qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  return bnb4_quantize(&qlm_method_nf4, W, rows, cols, o, out, err);
}

static int fp4_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                        qlm_qtensor *out, qlm_error *err) {
  (void)calib;
  return bnb4_quantize(&qlm_method_fp4, W, rows, cols, o, out, err);
}

/* The companion of q called `suffix` with n elements of `type`, or NULL. */
static const qlm_qaux *find_aux(const qlm_qtensor *q, const char *suffix) {
  for (int i = 0; i < q->n_aux; i++)
    if (!strcmp(q->aux[i].suffix, suffix)) return &q->aux[i];
  return NULL;
}

int qlm_bnb4_dequantize_qtensor(const qlm_qtensor *q, float *W, qlm_error *err) {
  size_t n = (size_t)q->rows * (size_t)q->cols;
  if (qlm_bnb4_is_blocks(q->type)) {
    if (!qlm_dequantize(q->type, q->data, W, (int64_t)n)) return qlm_fail(err, QLM_EINTERNAL, "nf4/fp4: no dequantizer");
    return QLM_OK;
  }
  if (!qlm_bnb4_is_dq(q->type))
    return qlm_fail(err, QLM_EUSAGE, "tensor of type %s is not nf4/fp4", qlm_type_name(q->type));
  const qlm_qaux *aq = find_aux(q, ".absmax_q"), *a2 = find_aux(q, ".absmax2"), *ao = find_aux(q, ".absmax_offset");
  if (!aq || !a2 || !ao || aq->type != QLM_TYPE_I8 || a2->type != QLM_TYPE_F32 || ao->type != QLM_TYPE_F32 || ao->n != 1)
    return qlm_fail(err, QLM_EFORMAT, "%s: double-quantized tensor lacks its absmax companions", q->desc);
  float offset;
  memcpy(&offset, ao->data, 4);
  void *blocks = NULL;
  int bt, rc = qlm_bnb4_expand_dq(q->type, q->data, q->rows, q->cols, aq->data, aq->n, a2->data, a2->n, offset,
                                  &blocks, &bt, err);
  if (rc) return rc;
  qlm_dequantize(bt, blocks, W, (int64_t)n);
  free(blocks);
  return QLM_OK;
}

const qlm_quant_method qlm_method_nf4 = {
    .name = "nf4",
    .summary = "bitsandbytes NF4 (QLoRA normal-float 4-bit), absmax per 64 weights",
    .options = "dq=0|1 (0): double-quantize the absmax (8-bit, block 256)",
    .defaults = bnb4_defaults,
    .check = nf4_check,
    .quantize = nf4_quantize,
    .dequantize = qlm_bnb4_dequantize_qtensor,
};

const qlm_quant_method qlm_method_fp4 = {
    .name = "fp4",
    .summary = "bitsandbytes FP4 (E2M1), absmax per 64 weights",
    .options = "dq=0|1 (0): double-quantize the absmax (8-bit, block 256)",
    .defaults = bnb4_defaults,
    .check = fp4_check,
    .quantize = fp4_quantize,
    .dequantize = qlm_bnb4_dequantize_qtensor,
};
