/* rtn_avx2.c — AVX2 dot products of the RTN types (kernels/rtn.h) with Q8_S activations, for
 * groups of whole 32-chunks at 8 and 4 bits (compiled with -mavx2 -mfma -mf16c; only chosen
 * when kernels/cpu.c found them).
 *
 * Per 32-chunk the integer sum_j (u_j - c) q_j (c = 2^(b-1), or the group's zero point z) is
 * exact, held as 8 int32 lanes:
 *   8 bits: u is 0..255, so maddubs(u, q) could saturate (2 * 255 * 127 > 32767).  Instead
 *           s = u - 128 (an xor with 0x80) is an int8 and s * q goes through the signed trick
 *           |s| * (q with s's sign): 2 * 128 * 127 < 32767.  Then sum (u - c) q = sum s q +
 *           (128 - c) * sum q, the second term from the activation's exact int16 sum.
 *   4 bits: symmetric: u - 8 as int8 and the signed trick (as Q4_0); zero point: maddubs(u, q)
 *           (2 * 15 * 127 fits) minus z * sum q.
 * The lanes are converted to float and accumulated with scale d_w * d_x per chunk: the same
 * integers as qlm_vec_dot_rtn_ref, floats summed in another order. */
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

static inline __m256i load32(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 8 int32: sums of 4 consecutive u8 * s8 products (pair sums must fit int16). */
static inline __m256i dot_us(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Signed x signed, |x| <= 128 and |y| <= 127: |x| * (y with x's sign). */
static inline __m256i dot_ss(__m256i x, __m256i y) { return dot_us(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)); }

/* 16 packed bytes -> 32 codes 0..15: low nibbles (codes 0..15) then high nibbles (16..31). */
static inline __m256i nibbles(const uint8_t *p) {
  __m128i b = _mm_loadu_si128((const __m128i *)p);
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0F));
}

/* One chunk: codes p, activation block y; lanes sum to sum_j (u_j - c) q_j.  `off` is the
 * correction per unit of sum q (see the top); bits and asym are constants at every call. */
static inline __m256i chunk(const uint8_t *p, const uint8_t *y, int off, const int bits, const int asym) {
  __m256i q = load32(y + 4), v;
  if (bits == 8) v = dot_ss(_mm256_xor_si256(load32(p), _mm256_set1_epi8((char)0x80)), q);
  else if (!asym) v = dot_ss(_mm256_sub_epi8(nibbles(p), _mm256_set1_epi8(8)), q);
  else v = dot_us(nibbles(p), q);
  if (asym) v = _mm256_add_epi32(v, _mm256_zextsi128_si256(_mm_cvtsi32_si128(off * rd_i16(y + 2))));
  return v;
}

static inline float rtn_dot(int type, const uint8_t *w, const uint8_t *a, int64_t n, const int bits, const int asym) {
  const int g = QLM_TYPE_BLOCK(type), m = g / QK, h = asym ? 4 : 2, cb = QK * bits / 8;
  const size_t bs = (size_t)h + (size_t)g * (size_t)bits / 8;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, w += bs) {
    const float dw = h2f(w);
    /* 8 bits: (128 - z) sum q; 4 bits: -z sum q (symmetric types need no correction) */
    const int off = !asym ? 0 : bits == 8 ? 128 - rd_i16(w + 2) : -rd_i16(w + 2);
    const uint8_t *p = w + h;
    int j = 0;
    for (; j + 2 <= m; j += 2, p += 2 * cb, a += 2 * Q8S_BYTES) {
      __m256i v0 = chunk(p, a, off, bits, asym), v1 = chunk(p + cb, a + Q8S_BYTES, off, bits, asym);
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a)), _mm256_cvtepi32_ps(v0), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a + Q8S_BYTES)), _mm256_cvtepi32_ps(v1), acc1);
    }
    if (j < m) {
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a)), _mm256_cvtepi32_ps(chunk(p, a, off, bits, asym)), acc0);
      a += Q8S_BYTES;
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

static float dot_sym8(int t, const void *w, const void *a, int64_t n) { return rtn_dot(t, w, a, n, 8, 0); }
static float dot_asym8(int t, const void *w, const void *a, int64_t n) { return rtn_dot(t, w, a, n, 8, 1); }
static float dot_sym4(int t, const void *w, const void *a, int64_t n) { return rtn_dot(t, w, a, n, 4, 0); }
static float dot_asym4(int t, const void *w, const void *a, int64_t n) { return rtn_dot(t, w, a, n, 4, 1); }

qlm_vec_dot_t_fn qlm_rtn_vec_dot_avx2(int type) {
  int fam = QLM_TYPE_FAMILY(type), bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if ((fam != QLM_FAMILY_RTN_SYM && fam != QLM_FAMILY_RTN_ASYM) || g < QK || g % QK) return NULL;
  bool asym = fam == QLM_FAMILY_RTN_ASYM;
  if (bits == 8) return asym ? dot_asym8 : dot_sym8;
  if (bits == 4) return asym ? dot_asym4 : dot_sym4;
  return NULL;
}
