/* quanto_rows_avx512.c — quanto's row steps (quanto_rows.h) 16 values at a time, for dtype f16.
 *
 * Why they equal the scalar reference bit for bit:
 *   - rounding to f16 is vcvtps2ph (round to nearest even) then vcvtph2ps, the exact IEEE rounding
 *     the scalar qlm_f32_to_f16 makes;
 *   - every division is of a half by a positive half scale, and div_half's product-and-correction
 *     gives the IEEE quotient for every such pair (test_quanto checks all 2^31 of them);
 *   - max |rd(w)| is rd(max |w|): rounding is monotonic and symmetric;
 *   - max, min and absmax are exact whatever the order; the one order-dependent detail, the sign of
 *     a group minimum equal to zero (it reaches the stored zero point as shift / s = -0 or +0), is
 *     taken from the first zero of the group, as the scalar loop's strict "<" does;
 *   - round(clamp(v)) is the scalar code's clamp, rounded half to even by vcvtps2dq in the default
 *     mode (the scalar +-1.5 * 2^23 rounding assumes the same mode);
 *   - the e4m3fn cast below is qlm_f32_to_e4m3fn's formula for finite |v| <= 448 (all the row ever
 *     casts: its values are clamped there). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/fp8.h"
#include "kernels/hqq.h"
#include "kernels/quanto_rows.h"

static inline __mmask16 tail_mask(int left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u); }

static inline __m512 rd16(__m512 v) {
  return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* x rounded to a half, by F16C (qlm_quanto_rd's IEEE rounding without its branches) */
static inline float rd16s(float x) { return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }

/* a / s for halves a and s > 0, given y = 1 / s (correctly rounded: one scalar division per row or
 * group): q0 = a y, its remainder r = a - q0 s (exact by FMA: q0 is within an ulp of a / s) and
 * q0 + r y, the correctly rounded quotient by Markstein's theorem, except that a = -0 gives +0
 * (harmless where the quotient is then rounded to an integer code).  Three FMA-unit operations
 * where vdivps takes ~6 cycles per 16 lanes on Zen 4 (the row kernels' largest single cost). */
static inline __m512 div_half_nosign(__m512 a, __m512 s, __m512 y) {
  const __m512 q0 = _mm512_mul_ps(a, y);
  return _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, s, a), y, q0);
}

/* The IEEE quotient a / s, signed zeros included (qfloat8 codes keep the sign of a zero). */
static inline __m512 div_half(__m512 a, __m512 s, __m512 y) {
  /* q | (a & sign): the sign of a nonzero quotient is already a's */
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(div_half_nosign(a, s, y)),
                                                       _mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u), 0xF8));
}

/* The row's max |rd16(w)| = rd16(max |w|), from an integer maximum over the magnitudes' bit patterns
 * (NaN's and infinity's are the largest): one AND and one max per 16 weights, the rounding left to the
 * pass that divides.  False if some w or rd16(w) is not finite. */
static bool row_absmax(const float *w, int n, float *amax) {
  const __m512i mag = _mm512_set1_epi32(0x7fffffff);
  __m512i m = _mm512_setzero_si512();
  for (int i = 0; i < n; i += 16)
    m = _mm512_max_epu32(m, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail_mask(n - i), w + i), mag));
  uint32_t bits = (uint32_t)_mm512_reduce_max_epu32(m);
  if (bits >= 0x7f800000u) return false;
  float a;
  memcpy(&a, &bits, sizeof a);
  *amax = rd16s(a);
  return *amax < __builtin_inff();
}

/* t = rd16(w) over the row; false if a value is not finite (before or after rounding). *amax = max|t|. */
static bool load_row(const float *w, int n, float *t, float *amax) {
  const __m512 inf = _mm512_set1_ps(__builtin_inff());
  __m512 m = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __m512 h = rd16(_mm512_maskz_loadu_ps(k, w + i)), a = _mm512_abs_ps(h);
    bad |= (__mmask16)(k & ~_mm512_cmp_ps_mask(a, inf, _CMP_LT_OQ)); /* NaN and inf are not < inf */
    m = _mm512_max_ps(m, a);
    _mm512_mask_storeu_ps(t + i, k, h);
  }
  *amax = _mm512_reduce_max_ps(m);
  return bad == 0;
}

/* rd16(rd16(w) / s) rounded to an integer by vcvtps2dq (half to even in the default mode; |q| <= 2 * 127
 * as s is amax / 127 rounded to a half > 0, so no overflow) */
static inline __m512i q8_int(__m512 w, __m512 sv, __m512 yv) {
  return _mm512_cvtps_epi32(rd16(div_half_nosign(rd16(w), sv, yv)));
}

/* Two passes over w, none over scratch: the maximum, then each weight's integer q8_int saturated to
 * -128..127 (the clamp) and stored as the byte q + 128 = q ^ 0x80.  64 weights at a time are packed
 * with two saturating pack steps and one permutation instead of four vpmovsdb. */
static bool q8_row(const float *w, int n, int dtype, float *t, float *s, uint8_t *u) {
  if (dtype != QLM_QDTYPE_F16) return qlm_quanto_rows_scalar()->q8(w, n, dtype, t, s, u);
  float amax;
  if (!row_absmax(w, n, &amax)) return false;
  *s = rd16s(amax / 127.0f);
  if (!(*s > 0.0f)) {
    memset(u, 128, (size_t)n);
    return true;
  }
  const __m512 sv = _mm512_set1_ps(*s), yv = _mm512_set1_ps(1.0f / *s);
  /* vpackssdw and vpacksswb work within 128-bit lanes: dword j of the result holds q[j % 4][4 (j / 4) ..] */
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  int i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512i q0 = q8_int(_mm512_loadu_ps(w + i), sv, yv), q1 = q8_int(_mm512_loadu_ps(w + i + 16), sv, yv);
    __m512i q2 = q8_int(_mm512_loadu_ps(w + i + 32), sv, yv), q3 = q8_int(_mm512_loadu_ps(w + i + 48), sv, yv);
    __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(q0, q1), _mm512_packs_epi32(q2, q3));
    _mm512_storeu_si512(u + i, _mm512_xor_si512(_mm512_permutexvar_epi32(order, b), _mm512_set1_epi8((char)0x80)));
  }
  for (; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    __m128i b = _mm512_cvtsepi32_epi8(q8_int(_mm512_maskz_loadu_ps(k, w + i), sv, yv));
    _mm_mask_storeu_epi8(u + i, k, _mm_xor_si128(b, _mm_set1_epi8((char)0x80)));
  }
  return true;
}

/* qlm_f32_to_e4m3fn for finite |v| <= 448: below 2^-6 a subnormal code round(|v| * 2^9) (exact
 * product, so a fused multiply-add could not change it); else the float's exponent and top 3
 * mantissa bits rounded to nearest even on the bit pattern, exponent rebiased 127 -> 7. */
static inline __m512i e4m3fn(__m512 v) {
  const __m512i b = _mm512_castps_si512(v), one = _mm512_set1_epi32(1);
  const __m512i ab = _mm512_and_si512(b, _mm512_set1_epi32(0x7fffffff));
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(b, 24), _mm512_set1_epi32(0x80));
  const __mmask16 subn = _mm512_cmplt_epu32_mask(ab, _mm512_set1_epi32(0x3c800000));
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  __m512 m = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_castsi512_ps(ab), _mm512_set1_ps(512.0f)), magic), magic);
  __m512i r = _mm512_add_epi32(ab, _mm512_add_epi32(_mm512_set1_epi32(0x7ffff), _mm512_and_si512(_mm512_srli_epi32(ab, 20), one)));
  __m512i cn = _mm512_sub_epi32(_mm512_srli_epi32(r, 20), _mm512_set1_epi32(120 << 3));
  return _mm512_or_si512(_mm512_mask_blend_epi32(subn, cn, _mm512_cvtps_epi32(m)), sign);
}

/* 16 codes by e4m3fn from the halves h (rounded quotients), clamped to +-448: the general path */
static inline __m128i e4m3fn_halves(__m256i h) {
  const __m512 q = _mm512_cvtph_ps(h);
  return _mm512_cvtepi32_epi8(e4m3fn(_mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(-QLM_FP8_MAX)), _mm512_set1_ps(QLM_FP8_MAX))));
}

/* e4m3fn's formula on the bit patterns of 32 halves whose magnitude, clamped to 448 (0x5F00), is at
 * least 2^-6 (0x2400, e4m3's normal range): the top 3 of the 10 mantissa bits rounded to nearest even,
 * the exponent rebiased 15 -> 7, the sign moved to bit 7; the same code as from the float, whose
 * low 13 mantissa bits are zero.  *small: the lanes below 2^-6 (zeros, e4m3 subnormals). */
static inline __m512i e4m3fn_normal(__m512i h, __mmask32 *small) {
  const __m512i m = _mm512_min_epu16(_mm512_and_si512(h, _mm512_set1_epi16(0x7fff)), _mm512_set1_epi16(0x5F00));
  *small = _mm512_cmplt_epu16_mask(m, _mm512_set1_epi16(0x2400));
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi16(m, 7), _mm512_set1_epi16(1));
  const __m512i r = _mm512_add_epi16(m, _mm512_add_epi16(odd, _mm512_set1_epi16(0x3F)));
  const __m512i c = _mm512_sub_epi16(_mm512_srli_epi16(r, 7), _mm512_set1_epi16(8 << 3));
  return _mm512_or_si512(c, _mm512_srli_epi16(_mm512_and_si512(h, _mm512_set1_epi16((short)0x8000)), 8));
}

/* The halves of rd16(rd16(w) / s) for 16 weights (the sign of a zero kept: it is the code's). */
static inline __m256i f8_quotients(__m512 w, __m512 sv, __m512 yv) {
  return _mm512_cvtps_ph(div_half(rd16(w), sv, yv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

/* 32 weights at a time: the quotients' half bit patterns are converted 32 to a vector by
 * e4m3fn_normal; a block with a lane below 2^-6 (rare: |w| < amax / 2^15) takes the general path. */
static bool f8_row(const float *w, int n, int dtype, float *t, float *s, uint8_t *c) {
  if (dtype != QLM_QDTYPE_F16) return qlm_quanto_rows_scalar()->f8(w, n, dtype, t, s, c);
  float amax;
  if (!row_absmax(w, n, &amax)) return false;
  *s = rd16s(amax / QLM_FP8_MAX);
  if (!(*s > 0.0f)) {
    memset(c, 0, (size_t)n);
    return true;
  }
  const __m512 sv = _mm512_set1_ps(*s), yv = _mm512_set1_ps(1.0f / *s);
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i h0 = f8_quotients(_mm512_loadu_ps(w + i), sv, yv), h1 = f8_quotients(_mm512_loadu_ps(w + i + 16), sv, yv);
    __mmask32 small;
    const __m512i code = e4m3fn_normal(_mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1), &small);
    if (!small) {
      _mm256_storeu_si256((__m256i *)(c + i), _mm512_cvtepi16_epi8(code));
      continue;
    }
    _mm_storeu_si128((__m128i *)(c + i), e4m3fn_halves(h0));
    _mm_storeu_si128((__m128i *)(c + i + 16), e4m3fn_halves(h1));
  }
  for (; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    _mm_mask_storeu_epi8(c + i, k, e4m3fn_halves(f8_quotients(_mm512_maskz_loadu_ps(k, w + i), sv, yv)));
  }
  return true;
}

/* min and max of x[0..g) (finite), the minimum's sign as the scalar loop leaves it */
static void group_range(const float *x, int g, float *lo, float *hi) {
  __m512 mn = _mm512_set1_ps(x[0]), mx = mn;
  for (int i = 0; i < g; i += 16) {
    __mmask16 k = tail_mask(g - i);
    __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    mn = _mm512_mask_min_ps(mn, k, mn, v);
    mx = _mm512_mask_max_ps(mx, k, mx, v);
  }
  *lo = _mm512_reduce_min_ps(mn), *hi = _mm512_reduce_max_ps(mx);
  if (*lo == 0.0f)
    for (int i = 0; i < g; i++)
      if (x[i] == 0.0f) {
        *lo = x[i];
        break;
      }
}

/* qlm_quanto_affine_params for dtype f16, step for step, rounding by F16C instead of the scalar
 * conversions (whose data-dependent branches made this call a quarter of qint4's time). */
static inline void affine_params(float lo, float hi, int bits, bool int_zero, float *s, float *shift, int *z) {
  const float qmax = (float)((1 << bits) - 1);
  if (hi == lo) lo = fminf(lo, 0.0f), hi = fmaxf(hi, 0.0f);
  *s = rd16s(rd16s(hi - lo) / qmax);
  *shift = -lo;
  *z = 0;
  if (!(*s > 0.0f)) {
    *s = 0.0f, *shift = 0.0f;
    return;
  }
  if (int_zero) *z = (int)qlm_quanto_round_clamp(rd16s(*shift / *s), 0.0f, qmax);
}

static void affine_group(const float *x, int g, int bits, bool int_zero, float *s, float *shift, int *z, uint8_t *u) {
  float lo, hi;
  group_range(x, g, &lo, &hi);
  affine_params(lo, hi, bits, int_zero, s, shift, z);
  if (!(*s > 0.0f)) {
    memset(u, 0, (size_t)g);
    return;
  }
  /* round(clamp(v, -z, qmax - z)) + z: the clamped value rounded by vcvtps2dq itself (half to even
   * in the default mode, as the scalar +-1.5 * 2^23) */
  const float fq = (float)((1 << bits) - 1);
  const __m512 sv = _mm512_set1_ps(*s), yv = _mm512_set1_ps(1.0f / *s), sh = _mm512_set1_ps(*shift);
  const __m512 lo_v = _mm512_set1_ps(int_zero ? -(float)*z : 0.0f), hi_v = _mm512_set1_ps(int_zero ? fq - (float)*z : fq);
  const __m512i zv = _mm512_set1_epi32(int_zero ? *z : 0);
  for (int i = 0; i < g; i += 16) {
    __mmask16 k = tail_mask(g - i);
    __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    if (!int_zero) v = rd16(_mm512_add_ps(v, sh));
    v = _mm512_min_ps(_mm512_max_ps(rd16(div_half_nosign(v, sv, yv)), lo_v), hi_v);
    _mm512_mask_cvtepi32_storeu_epi8(u + i, k, _mm512_add_epi32(_mm512_cvtps_epi32(v), zv));
  }
}

static bool affine_row(const float *w, int n, int g, int bits, bool int_zero, int dtype, float *t, float *s,
                       float *shift, int *z, uint8_t *u) {
  if (dtype != QLM_QDTYPE_F16) return qlm_quanto_rows_scalar()->affine(w, n, g, bits, int_zero, dtype, t, s, shift, z, u);
  float amax;
  if (!load_row(w, n, t, &amax)) return false;
  for (int c = 0, k = 0; c < n; c += g, k++) affine_group(t + c, g, bits, int_zero, s + k, shift + k, z + k, u + c);
  return true;
}

/* The 4-bit codes of one group (32 | g, s > 0) straight into the nibble layout of hqq.h (byte j of
 * each 32 = u_j | u_{j+16} << 4): one vpmovdb per 32 weights and no code bytes in between.  The
 * steps are affine_group's (its clamp at 0 too: rd(t + shift) >= 0 anyway). */
static void group_nibbles(const float *x, int g, float s, float y, float shift, uint8_t *p) {
  const __m512 sv = _mm512_set1_ps(s), yv = _mm512_set1_ps(y), sh = _mm512_set1_ps(shift);
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(15.0f);
  for (int i = 0; i < g; i += 32, p += 16) {
    __m512i c[2];
    for (int h = 0; h < 2; h++) {
      __m512 v = rd16(_mm512_add_ps(_mm512_loadu_ps(x + i + 16 * h), sh));
      c[h] = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(rd16(div_half_nosign(v, sv, yv)), lo), hi));
    }
    _mm_storeu_si128((__m128i *)p, _mm512_cvtepi32_epi8(_mm512_or_si512(c[0], _mm512_slli_epi32(c[1], 4))));
  }
}

/* affine_params (4 bits, no integer zero, f16) of up to 16 groups at once, lanes k < m, from their
 * ranges lo, hi; with y = 1 / s and the block header's halves of s and of z = shift / s (0 for an
 * all-zero group).  Every step is the scalar one: the IEEE division and rounding, and the widening
 * of a constant group (vminps(lo, 0) and fminf agree but on the sign of a zero lo, and then s = 0
 * resets the shift to +0 either way).  Returns a mask of the groups whose z is beyond the half range. */
static __mmask16 params16(const float *lo_a, const float *hi_a, int m, float *s, float *shift, float *y,
                          uint16_t *hs, uint16_t *hz) {
  const __mmask16 k = tail_mask(m);
  const __m512 zero = _mm512_setzero_ps(), sign = _mm512_set1_ps(-0.0f);
  __m512 lo = _mm512_maskz_loadu_ps(k, lo_a), hi = _mm512_maskz_loadu_ps(k, hi_a);
  const __mmask16 eq = _mm512_cmp_ps_mask(hi, lo, _CMP_EQ_OQ);
  lo = _mm512_mask_min_ps(lo, eq, lo, zero), hi = _mm512_mask_max_ps(hi, eq, hi, zero);
  __m512 sv = rd16(_mm512_div_ps(rd16(_mm512_sub_ps(hi, lo)), _mm512_set1_ps(15.0f)));
  const __mmask16 ok = _mm512_cmp_ps_mask(sv, zero, _CMP_GT_OQ);
  sv = _mm512_maskz_mov_ps(ok, sv);
  const __m512 sh = _mm512_maskz_xor_ps(ok, lo, sign);
  const __m512 one = _mm512_set1_ps(1.0f), zv = _mm512_maskz_div_ps(ok, sh, sv);
  _mm512_mask_storeu_ps(s, k, sv);
  _mm512_mask_storeu_ps(shift, k, sh);
  _mm512_mask_storeu_ps(y, k, _mm512_maskz_div_ps(ok, one, sv));
  _mm256_mask_storeu_epi16(hs, k, _mm512_cvtps_ph(sv, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  _mm256_mask_storeu_epi16(hz, k, _mm512_cvtps_ph(zv, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return (__mmask16)(k & ~_mm512_cmp_ps_mask(_mm512_abs_ps(zv), _mm512_set1_ps(65504.0f), _CMP_LE_OQ));
}

/* qint4 with 32 | g in f16: affine_row's steps and qlm_quanto_hqq_blocks' headers, 16 groups' scales
 * at a time; other cases are affine_row + those blocks. */
static int affine_hqq_row(const float *w, int n, int g, int bits, int dtype, int type, float *t, float *s,
                          float *shift, int *z, uint8_t *u, uint8_t *blk) {
  if (dtype != QLM_QDTYPE_F16 || bits != 4 || g % 32 != 0) {
    if (!affine_row(w, n, g, bits, false, dtype, t, s, shift, z, u)) return -1;
    return qlm_quanto_hqq_blocks(type, n, g, s, shift, u, blk);
  }
  float amax;
  if (!load_row(w, n, t, &amax)) return -1;
  const int ng = n / g;
  const size_t bb = QLM_HQQ_HEADER + (size_t)g / 2;
  for (int k0 = 0; k0 < ng; k0 += 16) {
    const int m = ng - k0 < 16 ? ng - k0 : 16;
    float lo[16], hi[16], y[16];
    uint16_t hs[16], hz[16];
    for (int k = 0; k < m; k++) group_range(t + (size_t)(k0 + k) * (size_t)g, g, &lo[k], &hi[k]);
    __mmask16 bad = params16(lo, hi, m, s + k0, shift + k0, y, hs, hz);
    if (bad) return k0 + __builtin_ctz(bad);
    for (int k = 0; k < m; k++) {
      uint8_t *b = blk + (size_t)(k0 + k) * bb;
      z[k0 + k] = 0;
      qlm_wr16(b, hs[k]);
      qlm_wr16(b + 2, hz[k]);
      if (s[k0 + k] > 0.0f) group_nibbles(t + (size_t)(k0 + k) * (size_t)g, g, s[k0 + k], y[k], shift[k0 + k], b + QLM_HQQ_HEADER);
      else memset(b + QLM_HQQ_HEADER, 0, (size_t)g / 2);
    }
  }
  return -2;
}

void qlm_quanto_div_halves_avx512(const float *a, int n, float s, float *q) {
  const __m512 sv = _mm512_set1_ps(s), yv = _mm512_set1_ps(1.0f / s);
  for (int i = 0; i < n; i += 16) {
    __mmask16 k = tail_mask(n - i);
    _mm512_mask_storeu_ps(q + i, k, div_half(_mm512_maskz_loadu_ps(k, a + i), sv, yv));
  }
}

static const qlm_quanto_rows k_avx512 = {.q8 = q8_row, .f8 = f8_row, .affine = affine_row, .affine_hqq = affine_hqq_row};

const qlm_quanto_rows *qlm_quanto_rows_avx512(void) { return &k_avx512; }
