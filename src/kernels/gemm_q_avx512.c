/* gemm_q_avx512.c — the AVX-512 VNNI tile kernel of the blocked int8 GEMM (layouts in gemm_q.h).
 *
 * A register holds 16 (activation c, weight row r) pairs of one weight group and one activation
 * group, lane 4c + r.  Per block and step k (4 of the block's 32 weights): the weight group's 16
 * bytes are broadcast to the four 128-bit lanes (lane 4c + r gets row r's 4 codes), the activation
 * group's 64 bytes already hold act c's 4 quants in lanes 4c..4c+3, and one vpdpbusd adds the 4
 * products of every pair.  After 8 steps each int32 lane is that pair's exact block sum (started
 * at -off * sum(q), the code offset), converted to float and multiplied-added with d_w d_a.
 * Up to 2 weight groups x 4 activation groups = 8 x 16 pairs: 16 accumulators, 6 loads per 8
 * vpdpbusd.  The float accumulators are loaded from and stored to `out` (lane order) around the
 * blocks [b0, b1), so the caller can keep a few blocks of activations in L1 across weight groups. */
#include <immintrin.h>
#include <string.h>

#include "core/fp16.h"
#include "kernels/gemm_q.h"
#include "kernels/qdot.h"

static inline __attribute__((always_inline)) void tile(const uint8_t *wp, const int NRG, const uint8_t *ap,
                                                       const int NCG, int64_t nb, int64_t b0, int64_t b1, int has_min,
                                                       float *out) {
  const size_t wg = (size_t)nb * QLM_GQ_WBLK, ag = (size_t)nb * QLM_GQ_ABLK;
  __m512 acc[2][4];
  for (int rg = 0; rg < NRG; rg++)
    for (int cg = 0; cg < NCG; cg++) acc[rg][cg] = _mm512_loadu_ps(out + (4 * rg + cg) * 16);
  for (int64_t b = b0; b < b1; b++) {
    const uint8_t *w[2], *a[4];
    for (int rg = 0; rg < NRG; rg++) w[rg] = wp + (size_t)rg * wg + (size_t)b * QLM_GQ_WBLK;
    for (int cg = 0; cg < NCG; cg++) a[cg] = ap + (size_t)cg * ag + (size_t)b * QLM_GQ_ABLK;
    __m512i is[2][4];
    for (int cg = 0; cg < NCG; cg++) {
      __m512i corr = _mm512_loadu_si512(a[cg] + 512);
      for (int rg = 0; rg < NRG; rg++) is[rg][cg] = corr;
    }
    for (int k = 0; k < 8; k++) {
      __m512i wv[2];
      for (int rg = 0; rg < NRG; rg++)
        wv[rg] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(w[rg] + 16 * k)));
      for (int cg = 0; cg < NCG; cg++) {
        __m512i av = _mm512_loadu_si512(a[cg] + 64 * k);
        for (int rg = 0; rg < NRG; rg++) is[rg][cg] = _mm512_dpbusd_epi32(is[rg][cg], wv[rg], av);
      }
    }
    __m512 dw[2], mw[2];
    for (int rg = 0; rg < NRG; rg++) {
      dw[rg] = _mm512_broadcast_f32x4(_mm_loadu_ps((const float *)(w[rg] + 128)));
      if (has_min) mw[rg] = _mm512_broadcast_f32x4(_mm_loadu_ps((const float *)(w[rg] + 144)));
    }
    for (int cg = 0; cg < NCG; cg++) {
      __m512 da = _mm512_loadu_ps((const float *)(a[cg] + 576));
      __m512 sa = has_min ? _mm512_loadu_ps((const float *)(a[cg] + 640)) : _mm512_setzero_ps();
      for (int rg = 0; rg < NRG; rg++) {
        acc[rg][cg] = _mm512_fmadd_ps(_mm512_mul_ps(dw[rg], da), _mm512_cvtepi32_ps(is[rg][cg]), acc[rg][cg]);
        if (has_min) acc[rg][cg] = _mm512_fmadd_ps(mw[rg], sa, acc[rg][cg]);
      }
    }
  }
  for (int rg = 0; rg < NRG; rg++)
    for (int cg = 0; cg < NCG; cg++) _mm512_storeu_ps(out + (4 * rg + cg) * 16, acc[rg][cg]);
}

void qlm_gemm_q_tile_avx512vnni(const uint8_t *wp, int nrg, const uint8_t *ap, int ncg, int64_t nb, int64_t b0,
                                int64_t b1, int has_min, float *out) {
#define T_(R, C)                                                                                                       \
  case (R) * 8 + (C): has_min ? tile(wp, R, ap, C, nb, b0, b1, 1, out) : tile(wp, R, ap, C, nb, b0, b1, 0, out); return;
  switch (nrg * 8 + ncg) {
    T_(1, 1) T_(1, 2) T_(1, 3) T_(1, 4) T_(2, 1) T_(2, 2) T_(2, 3) T_(2, 4)
  default: return;
  }
#undef T_
}

/* The activation quantizers of kernels/qdot.c (Q8_0, or Q8_1 when q8_1), byte for byte: per block
 * of 32, d = amax / 127, q = round-half-even(x * (127 / amax)) clamped to [-127, 127] (NaN -> -127,
 * as the scalar comparisons do: max/min return their second operand on NaN); d (and Q8_1's
 * s = d * sum(q)) stored as half by the same scalar conversion. */
void qlm_gemm_q_quantize_avx512(const float *x, uint8_t *dst, int64_t n, int q8_1) {
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f), magic = _mm512_set1_ps(12582912.0f);
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  size_t bb = q8_1 ? 36 : 34, qo = q8_1 ? 4 : 2;
  for (int64_t i = 0; i < n / 32; i++, x += 32, dst += bb) {
    __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    __m512 a = _mm512_max_ps(_mm512_and_ps(x1, absmask), _mm512_and_ps(x0, absmask));
    float amax = _mm512_reduce_max_ps(a);
    if (!(amax >= 0.0f)) { /* a NaN in the block: the scalar loop decides which lanes it ignores */
      qlm_quantize_q8_0(x, dst, 32);
      if (q8_1) qlm_quantize_q8_1(x, dst, 32);
      continue;
    }
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    __m512 vid = _mm512_set1_ps(id);
    __m512 v0 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x0, vid), magic), magic);
    __m512 v1 = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x1, vid), magic), magic);
    v0 = _mm512_min_ps(_mm512_max_ps(v0, lo), hi);
    v1 = _mm512_min_ps(_mm512_max_ps(v1, lo), hi);
    __m512i i0 = _mm512_cvttps_epi32(v0), i1 = _mm512_cvttps_epi32(v1);
    _mm_storeu_si128((__m128i *)(dst + qo), _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(dst + qo + 16), _mm512_cvtepi32_epi8(i1));
    float d = amax / 127.0f;
    uint16_t h = qlm_f32_to_f16(d);
    memcpy(dst, &h, 2);
    if (q8_1) {
      int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
      uint16_t hs = qlm_f32_to_f16(d * (float)sum);
      memcpy(dst + 2, &hs, 2);
    }
  }
}

/* Step k's 64 bytes hold act c's dword k in lanes 4c..4c+3: a two-source dword permute of
 * [act 0 | act 1] and [act 2 | act 3] with lane j -> dword 8 (j / 4) + k.  The 16-lane tails
 * (corr, d, s) repeat value c over lanes 4c..4c+3. */
void qlm_gemm_q_repack_act_avx512(const uint8_t *const qv[4], const int32_t corr[4], const float d[4], const float s[4],
                                  uint8_t *o) {
  __m512i a01 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)qv[0])),
                                   _mm256_loadu_si256((const __m256i *)qv[1]), 1);
  __m512i a23 = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)qv[2])),
                                   _mm256_loadu_si256((const __m256i *)qv[3]), 1);
  const __m512i base = _mm512_set_epi32(24, 24, 24, 24, 16, 16, 16, 16, 8, 8, 8, 8, 0, 0, 0, 0);
  for (int k = 0; k < 8; k++)
    _mm512_storeu_si512(o + 64 * k, _mm512_permutex2var_epi32(a01, _mm512_add_epi32(base, _mm512_set1_epi32(k)), a23));
  const __m512i rep = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  _mm512_storeu_si512(o + 512, _mm512_permutexvar_epi32(rep, _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)corr))));
  _mm512_storeu_ps(o + 576, _mm512_permutexvar_ps(rep, _mm512_castps128_ps512(_mm_loadu_ps(d))));
  _mm512_storeu_ps(o + 640, _mm512_permutexvar_ps(rep, _mm512_castps128_ps512(_mm_loadu_ps(s))));
}

/* Four rows' 32 codes (u[r], one byte each) -> the 128 code bytes of a weight-group block:
 * step k / row r (bytes 16 k + 4 r) holds row r's codes 4k..4k+3. */
static inline void interleave_codes(const __m256i u[4], uint8_t *o) {
  __m512i z01 = _mm512_inserti64x4(_mm512_castsi256_si512(u[0]), u[1], 1);
  __m512i z23 = _mm512_inserti64x4(_mm512_castsi256_si512(u[2]), u[3], 1);
  /* lane 4k + r <- dword k of row r: r = 0, 1 in z01 (0 + k, 8 + k), r = 2, 3 in z23 (16 + k, 24 + k) */
  const __m512i i0 = _mm512_set_epi32(27, 19, 11, 3, 26, 18, 10, 2, 25, 17, 9, 1, 24, 16, 8, 0);
  const __m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(4));
  _mm512_storeu_si512(o, _mm512_permutex2var_epi32(z01, i0, z23));
  _mm512_storeu_si512(o + 64, _mm512_permutex2var_epi32(z01, i1, z23));
}

/* Repack of one block of 4 weight rows (rows[r] = the block in row r, NULL past the matrix) of
 * Q4_0 (q8_0 = 0) or Q8_0 (q8_0 = 1) into a weight-group block (gemm_q.h), as the scalar repack:
 * codes u (Q4_0 nibbles; Q8_0 q + 128), then step k / row r holds row r's codes 4k..4k+3. */
void qlm_gemm_q_repack_wblock_avx512(const uint8_t *const rows[4], int q8_0, uint8_t *o) {
  __m256i u[4];
  float d[4] = {0};
  for (int r = 0; r < 4; r++) {
    if (!rows[r]) {
      u[r] = _mm256_setzero_si256();
      continue;
    }
    uint16_t h;
    memcpy(&h, rows[r], 2);
    d[r] = qlm_f16_to_f32(h);
    if (q8_0) {
      u[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(rows[r] + 2)), _mm256_set1_epi8((char)0x80));
    } else {
      __m128i qs = _mm_loadu_si128((const __m128i *)(rows[r] + 2)), m4 = _mm_set1_epi8(0x0F);
      u[r] = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), m4), _mm_and_si128(qs, m4));
    }
  }
  interleave_codes(u, o);
  memcpy(o + 128, d, sizeof d);
  memset(o + 144, 0, 16);
}

/* One super-block of 4 rows of Q4_K (q5 = 0: 144 bytes d, dmin, scales[12], qs[128]) or Q5_K
 * (q5 = 1: 176 bytes, qh[32] before qs) -> its 8 weight-group blocks (8 x 160 bytes at o), the
 * same bytes as the scalar repack: sub-block j's codes (qs pair j / 2, low nibbles for even j,
 * high for odd, Q5_K bit j of qh as bit 4), d = d * sc_j and m = -(dmin * mn_j) in the scalar's
 * float operations.  rows[r] NULL: a zero row (codes, d and m 0). */
void qlm_gemm_q_repack_ksuper_avx512(const uint8_t *const rows[4], int q5, uint8_t *o) {
  float dsup[4] = {0}, msup[4] = {0};
  int sc[4][8] = {{0}}, mn[4][8] = {{0}};
  for (int r = 0; r < 4; r++) {
    if (!rows[r]) continue;
    uint16_t h;
    memcpy(&h, rows[r], 2);
    dsup[r] = qlm_f16_to_f32(h);
    memcpy(&h, rows[r] + 2, 2);
    msup[r] = qlm_f16_to_f32(h);
    for (int j = 0; j < 8; j++) qlm_k4_scale_min(rows[r] + 4, j, &sc[r][j], &mn[r][j]);
  }
  const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
  for (int j = 0; j < 8; j++, o += QLM_GQ_WBLK) {
    __m256i u[4];
    float d[4], m[4];
    for (int r = 0; r < 4; r++) {
      if (!rows[r]) {
        u[r] = _mm256_setzero_si256();
        d[r] = m[r] = 0.0f;
        continue;
      }
      const uint8_t *qs = rows[r] + (q5 ? 48 : 16) + 32 * (j / 2);
      __m256i q = _mm256_loadu_si256((const __m256i *)qs);
      q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(q, 4) : q, m4);
      if (q5) { /* bit j of each qh byte -> bit 4 of the code */
        __m256i qh = _mm256_loadu_si256((const __m256i *)(rows[r] + 16));
        __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j)), one);
        q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4)); /* bit is 0/1 per byte: no carry across bytes */
      }
      u[r] = q;
      d[r] = dsup[r] * (float)sc[r][j];
      m[r] = -(msup[r] * (float)mn[r][j]);
    }
    interleave_codes(u, o);
    memcpy(o + 128, d, sizeof d);
    memcpy(o + 144, m, sizeof m);
  }
}
