/* rtn_avx2.c — AVX2 dot products of the RTN types (kernels/rtn.h): 8 bits with Q8_S activations
 * for groups of whole 32-chunks, 4 bits with f32 activations for groups of whole 16-chunks
 * (compiled with -mavx2 -mfma -mf16c; only chosen when kernels/cpu.c found them).
 *
 * 8 bits.  Per 32-chunk the integer sum_j (u_j - c) q_j (c = 128, or the group's zero point z)
 * is exact, held as 8 int32 lanes: u is 0..255, so maddubs(u, q) could saturate
 * (2 * 255 * 127 > 32767).  Instead s = u - 128 (an xor with 0x80) is an int8 and s * q goes
 * through the signed trick |s| * (q with s's sign): 2 * 128 * 127 < 32767.  Then
 * sum (u - c) q = sum s q + (128 - c) * sum q, the second term from the activation's exact int16
 * sum.  The lanes are converted to float and accumulated with scale d_w * d_x per chunk: the
 * same integers as qlm_vec_dot_rtn_ref, floats summed in another order.
 *
 * 4 bits.  A table lookup, as bnb4_avx2.c does for NF4: per group the 16 possible weights
 * t[k] = fl(d * (k - c)) (c = 8, or z; k - c is exact in float, so t[k] is bit for bit the
 * dequantizer's weight) sit in two ymm, entries 0..7 and 8..15; vpermps looks both halves up by
 * the low 3 bits of a code and bit 3 picks one with blendv (which reads the sign bit, where a
 * shift by 28 moves bit 3).  Products go into four FMA accumulators: the exact products of the
 * dequantized weights with x, rounded once per FMA, in another order than the reference. */
#include <immintrin.h>
#include <string.h>

#include "kernels/rtn.h"

#define QK 32
#define Q8S_BYTES 36 /* half d, int16 sum of q, int8 q[32] */

static inline float h2f(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

static inline int rd_i16(const uint8_t *p) {
  int16_t v;
  memcpy(&v, p, 2);
  return v;
}

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* ================================================================ 8 bits, Q8_S activations */

static inline __m256i load32(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 8 int32: sums of 4 consecutive u8 * s8 products (pair sums must fit int16). */
static inline __m256i dot_us(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Signed x signed, |x| <= 128 and |y| <= 127: |x| * (y with x's sign). */
static inline __m256i dot_ss(__m256i x, __m256i y) { return dot_us(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)); }

/* One chunk: codes p, activation block y; lanes sum to sum_j (u_j - c) q_j.  `off` is
 * 128 - z, the correction per unit of sum q (asym is a constant at every call). */
static inline __m256i chunk8(const uint8_t *p, const uint8_t *y, int off, const int asym) {
  __m256i v = dot_ss(_mm256_xor_si256(load32(p), _mm256_set1_epi8((char)0x80)), load32(y + 4));
  if (asym) v = _mm256_add_epi32(v, _mm256_zextsi128_si256(_mm_cvtsi32_si128(off * rd_i16(y + 2))));
  return v;
}

static inline float dot8(int type, const uint8_t *w, const uint8_t *a, int64_t n, const int asym) {
  const int g = QLM_TYPE_BLOCK(type), m = g / QK, h = asym ? 4 : 2;
  const size_t bs = (size_t)h + (size_t)g;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, w += bs) {
    const float dw = h2f(w);
    const int off = asym ? 128 - rd_i16(w + 2) : 0;
    const uint8_t *p = w + h;
    int j = 0;
    for (; j + 2 <= m; j += 2, p += 2 * QK, a += 2 * Q8S_BYTES) {
      __m256i v0 = chunk8(p, a, off, asym), v1 = chunk8(p + QK, a + Q8S_BYTES, off, asym);
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a)), _mm256_cvtepi32_ps(v0), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a + Q8S_BYTES)), _mm256_cvtepi32_ps(v1), acc1);
    }
    if (j < m) {
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a)), _mm256_cvtepi32_ps(chunk8(p, a, off, asym)), acc0);
      a += Q8S_BYTES;
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

/* ================================================================ 4 bits, f32 activations */

typedef struct table4 {
  __m256 lo, hi; /* t[0..8), t[8..16) */
} table4;

/* The group's 16 weights t[k] = fl(d * (k - c)), c = 8 or the zero point z. */
static inline table4 table_of(const uint8_t *blk, const int asym) {
  const __m256 k = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), eight = _mm256_set1_ps(8.0f);
  const __m256 c = _mm256_set1_ps(asym ? (float)rd_i16(blk + 2) : 8.0f), d = _mm256_set1_ps(h2f(blk));
  table4 t = {_mm256_mul_ps(_mm256_sub_ps(k, c), d), _mm256_mul_ps(_mm256_sub_ps(_mm256_add_ps(k, eight), c), d)};
  return t;
}

/* t[idx & 15] per lane: both halves by the low 3 bits, bit 3 (moved to the sign) picks. */
static inline __m256 lookup(table4 t, __m256i idx) {
  __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t.lo, idx), _mm256_permutevar8x32_ps(t.hi, idx), sel);
}

/* One 32-chunk of the nibble layout: bytes p[j] = u_j | u_{j+16} << 4 against x[0..32).  Low
 * nibbles need no mask (vpermps reads bits 0..2, the shift by 28 drops bits 4..7). */
static inline void chunk32(const uint8_t *p, const float *x, table4 t, __m256 *a0, __m256 *a1, __m256 *a2,
                           __m256 *a3) {
  __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
  __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
  *a0 = _mm256_fmadd_ps(lookup(t, c0), _mm256_loadu_ps(x), *a0);
  *a1 = _mm256_fmadd_ps(lookup(t, c1), _mm256_loadu_ps(x + 8), *a1);
  *a2 = _mm256_fmadd_ps(lookup(t, _mm256_srli_epi32(c0, 4)), _mm256_loadu_ps(x + 16), *a2);
  *a3 = _mm256_fmadd_ps(lookup(t, _mm256_srli_epi32(c1, 4)), _mm256_loadu_ps(x + 24), *a3);
}

/* 32 | g: the nibble layout, one chunk per step into four accumulators. */
static inline float dot4_nib(int type, const uint8_t *w, const float *x, int64_t n, const int asym) {
  const int g = QLM_TYPE_BLOCK(type), h = asym ? 4 : 2;
  const size_t bs = (size_t)h + (size_t)g / 2;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, w += bs) {
    const table4 t = table_of(w, asym);
    const uint8_t *p = w + h;
    for (int j = 0; j < g; j += QK, p += QK / 2, x += QK) chunk32(p, x, t, &a0, &a1, &a2, &a3);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

/* 8 codes of the stream layout (byte j = u_2j | u_2j+1 << 4) from 4 bytes as 8 int32 indices:
 * each byte twice, the odd copies shifted down a nibble (lookup ignores the bits above 4). */
static inline __m256i codes8(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  const __m128i b = _mm_cvtsi32_si128(v);
  return _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b)), _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4));
}

/* 16 | g, 32 does not divide g: the stream layout, 16 weights at a time. */
static inline float dot4_stream(int type, const uint8_t *w, const float *x, int64_t n, const int asym) {
  const int g = QLM_TYPE_BLOCK(type), h = asym ? 4 : 2;
  const size_t bs = (size_t)h + (size_t)g / 2;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, w += bs) {
    const table4 t = table_of(w, asym);
    const uint8_t *p = w + h;
    for (int j = 0; j < g; j += 16, p += 8, x += 16) {
      a0 = _mm256_fmadd_ps(lookup(t, codes8(p)), _mm256_loadu_ps(x), a0);
      a1 = _mm256_fmadd_ps(lookup(t, codes8(p + 4)), _mm256_loadu_ps(x + 8), a1);
    }
  }
  return hsum(_mm256_add_ps(a0, a1));
}

static float dot_sym8(int t, const void *w, const void *a, int64_t n) { return dot8(t, w, a, n, 0); }
static float dot_asym8(int t, const void *w, const void *a, int64_t n) { return dot8(t, w, a, n, 1); }
static float dot_sym4(int t, const void *w, const void *a, int64_t n) { return dot4_nib(t, w, a, n, 0); }
static float dot_asym4(int t, const void *w, const void *a, int64_t n) { return dot4_nib(t, w, a, n, 1); }
static float dot_sym4_s(int t, const void *w, const void *a, int64_t n) { return dot4_stream(t, w, a, n, 0); }
static float dot_asym4_s(int t, const void *w, const void *a, int64_t n) { return dot4_stream(t, w, a, n, 1); }

qlm_vec_dot_t_fn qlm_rtn_vec_dot_avx2(int type) {
  int fam = QLM_TYPE_FAMILY(type), bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if (fam != QLM_FAMILY_RTN_SYM && fam != QLM_FAMILY_RTN_ASYM) return NULL;
  bool asym = fam == QLM_FAMILY_RTN_ASYM;
  if (bits == 8 && g % QK == 0) return asym ? dot_asym8 : dot_sym8;
  if (bits == 4 && g % QK == 0) return asym ? dot_asym4 : dot_sym4;
  if (bits == 4 && g % 16 == 0) return asym ? dot_asym4_s : dot_sym4_s;
  return NULL;
}
