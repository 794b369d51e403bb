/* rtn_avx512.c — AVX-512 (BW/VL, + VNNI where found) dot products of the RTN types
 * (kernels/rtn.h) with Q8_S activations, for groups of whole 32-chunks at 8 and 4 bits.
 *
 * Two 32-chunks per 512-bit register, each chunk's integer sum in its own 8 int32 lanes, scaled
 * by that chunk's d_w * d_x (as qdot_avx512.c does for Q8_0).  The integers per chunk are
 * sum_j (u_j - c) q_j, exact (c = 2^(b-1), or the group's zero point z):
 *   VNNI:     vpdpbusd multiplies u8 x s8 into int32 without saturation, so u * q directly,
 *             minus c * sum q (the activation's exact int16 sum) at both bit widths.
 *   no VNNI:  as rtn_avx2.c: 8 bits through s = u - 128 and the signed trick (maddubs would
 *             saturate on 255 * 127 pairs), plus (128 - c) sum q; 4 bits as Q4_0 / Q4_1.
 * Chunk pairs: g == 32 pairs two consecutive blocks; otherwise pairs lie within a group and an
 * odd group's last chunk goes through 256 bits.  Floats are summed in another order than the
 * reference; the integers are the same. */
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

/* ---- 512 bits: two chunks */

static inline __m512i dot_us(__m512i u, __m512i s, const int vnni) {
  if (vnni) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

/* Signed x signed, |x| <= 128, |y| <= 127: |x| * (y with x's sign). */
static inline __m512i dot_ss(__m512i x, __m512i y, const int vnni) {
  __mmask64 neg = _mm512_movepi8_mask(x);
  __m512i sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
  return dot_us(_mm512_abs_epi8(x), sy, vnni);
}

static inline __m512i load2x32(const uint8_t *p0, const uint8_t *p1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p0)),
                            _mm256_loadu_si256((const __m256i *)p1), 1);
}

/* Two chunks' 16 packed bytes -> 64 codes 0..15 (chunk 0's 32, then chunk 1's). */
static inline __m512i nibbles2(const uint8_t *p0, const uint8_t *p1) {
  __m128i b0 = _mm_loadu_si128((const __m128i *)p0), b1 = _mm_loadu_si128((const __m128i *)p1);
  __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(_mm_srli_epi16(b0, 4), b0)),
                                 _mm256_set_m128i(_mm_srli_epi16(b1, 4), b1), 1);
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

/* Correction per unit of sum q: the integer to add is off * sum q (see the top). */
static inline int offset(int z, const int bits, const int asym, const int vnni) {
  if (vnni) return -z;
  if (bits == 8) return asym ? 128 - z : 0;
  return asym ? -z : 0;
}

/* Chunks (p0, y0) and (p1, y1), offsets off0 / off1: 16 lanes, 8 per chunk. */
static inline __m512i chunk2(const uint8_t *p0, const uint8_t *p1, const uint8_t *y0, const uint8_t *y1, int off0,
                             int off1, const int bits, const int asym, const int vnni) {
  __m512i q = load2x32(y0 + 4, y1 + 4), v;
  if (bits == 8) {
    __m512i u = load2x32(p0, p1);
    v = vnni ? dot_us(u, q, 1) : dot_ss(_mm512_xor_si512(u, _mm512_set1_epi8((char)0x80)), q, 0);
  } else {
    __m512i u = nibbles2(p0, p1);
    v = (vnni || asym) ? dot_us(u, q, vnni) : dot_ss(_mm512_sub_epi8(u, _mm512_set1_epi8(8)), q, 0);
  }
  if (vnni || asym) { /* into lane 0 of each chunk's 8 */
    v = _mm512_add_epi32(v, _mm512_maskz_set1_epi32(1, off0 * rd_i16(y0 + 2)));
    v = _mm512_add_epi32(v, _mm512_maskz_set1_epi32(1 << 8, off1 * rd_i16(y1 + 2)));
  }
  return v;
}

static inline __m512 scale2(float d0, float d1) { return _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1); }

/* ---- 256 bits: one chunk (the odd last chunk of a group) */

static inline __m256i dot_us1(__m256i u, __m256i s, const int vnni) {
  if (vnni) return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

static inline __m256i dot_ss1(__m256i x, __m256i y, const int vnni) {
  return dot_us1(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x), vnni);
}

static inline __m256i chunk1(const uint8_t *p, const uint8_t *y, int off, const int bits, const int asym,
                             const int vnni) {
  __m256i q = _mm256_loadu_si256((const __m256i *)(y + 4)), v;
  if (bits == 8) {
    __m256i u = _mm256_loadu_si256((const __m256i *)p);
    v = vnni ? dot_us1(u, q, 1) : dot_ss1(_mm256_xor_si256(u, _mm256_set1_epi8((char)0x80)), q, 0);
  } else {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0F));
    v = (vnni || asym) ? dot_us1(u, q, vnni) : dot_ss1(_mm256_sub_epi8(u, _mm256_set1_epi8(8)), q, 0);
  }
  if (vnni || asym) v = _mm256_add_epi32(v, _mm256_zextsi128_si256(_mm_cvtsi32_si128(off * rd_i16(y + 2))));
  return v;
}

static inline int zero_of(const uint8_t *blk, const int bits, const int asym) {
  return asym ? rd_i16(blk + 2) : 1 << (bits - 1);
}

static inline float rtn_dot(int type, const uint8_t *w, const uint8_t *a, int64_t n, const int bits, const int asym,
                            const int vnni) {
  const int g = QLM_TYPE_BLOCK(type), m = g / QK, h = asym ? 4 : 2, cb = QK * bits / 8;
  const size_t bs = (size_t)h + (size_t)g * (size_t)bits / 8;
  const int64_t nb = n / g;
  __m512 acc = _mm512_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  if (m == 1) { /* one chunk per block: pairs of blocks */
    int64_t k = 0;
    for (; k + 2 <= nb; k += 2, w += 2 * bs, a += 2 * Q8S_BYTES) {
      const uint8_t *w1 = w + bs, *a1 = a + Q8S_BYTES;
      int off0 = offset(zero_of(w, bits, asym), bits, asym, vnni), off1 = offset(zero_of(w1, bits, asym), bits, asym, vnni);
      __m512i v = chunk2(w + h, w1 + h, a, a1, off0, off1, bits, asym, vnni);
      acc = _mm512_fmadd_ps(scale2(h2f(w) * h2f(a), h2f(w1) * h2f(a1)), _mm512_cvtepi32_ps(v), acc);
    }
    if (k < nb) {
      __m256i v = chunk1(w + h, a, offset(zero_of(w, bits, asym), bits, asym, vnni), bits, asym, vnni);
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w) * h2f(a)), _mm256_cvtepi32_ps(v), acc1);
    }
  } else {
    for (int64_t k = 0; k < nb; k++, w += bs) {
      const float dw = h2f(w);
      const int off = offset(zero_of(w, bits, asym), bits, asym, vnni);
      const uint8_t *p = w + h;
      int j = 0;
      for (; j + 2 <= m; j += 2, p += 2 * cb, a += 2 * Q8S_BYTES) {
        __m512i v = chunk2(p, p + cb, a, a + Q8S_BYTES, off, off, bits, asym, vnni);
        acc = _mm512_fmadd_ps(scale2(dw * h2f(a), dw * h2f(a + Q8S_BYTES)), _mm512_cvtepi32_ps(v), acc);
      }
      if (j < m) {
        __m256i v = chunk1(p, a, off, bits, asym, vnni);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a)), _mm256_cvtepi32_ps(v), acc1);
        a += Q8S_BYTES;
      }
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc, _mm512_castps256_ps512(acc1)));
}

#define RTN_DOT(name, bits, asym, vnni)                                                                                \
  static float name(int t, const void *w, const void *a, int64_t n) { return rtn_dot(t, w, a, n, bits, asym, vnni); }
RTN_DOT(dot_sym8, 8, 0, 0)
RTN_DOT(dot_asym8, 8, 1, 0)
RTN_DOT(dot_sym4, 4, 0, 0)
RTN_DOT(dot_asym4, 4, 1, 0)
RTN_DOT(dot_sym8_vnni, 8, 0, 1)
RTN_DOT(dot_asym8_vnni, 8, 1, 1)
RTN_DOT(dot_sym4_vnni, 4, 0, 1)
RTN_DOT(dot_asym4_vnni, 4, 1, 1)

qlm_vec_dot_t_fn qlm_rtn_vec_dot_avx512(int type, bool vnni) {
  int fam = QLM_TYPE_FAMILY(type), bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if ((fam != QLM_FAMILY_RTN_SYM && fam != QLM_FAMILY_RTN_ASYM) || g < QK || g % QK) return NULL;
  bool asym = fam == QLM_FAMILY_RTN_ASYM;
  if (bits == 8) return vnni ? (asym ? dot_asym8_vnni : dot_sym8_vnni) : (asym ? dot_asym8 : dot_sym8);
  if (bits == 4) return vnni ? (asym ? dot_asym4_vnni : dot_sym4_vnni) : (asym ? dot_asym4 : dot_sym4);
  return NULL;
}
