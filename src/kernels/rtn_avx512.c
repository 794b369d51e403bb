/* rtn_avx512.c — AVX-512 (BW/VL, + VNNI where found) dot products of the RTN types
 * (kernels/rtn.h): 8 bits with Q8_S activations for groups of whole 32-chunks, 4 bits with f32
 * activations for groups of whole 16-chunks.
 *
 * 8 bits.  Two 32-chunks per 512-bit register, each chunk's integer sum in its own 8 int32
 * lanes, scaled by that chunk's d_w * d_x (as qdot_avx512.c does for Q8_0).  The integers per
 * chunk are sum_j (u_j - c) q_j, exact (c = 128, or the group's zero point z):
 *   VNNI:     vpdpbusd multiplies u8 x s8 into int32 without saturation, so u * q directly,
 *             minus c * sum q (the activation's exact int16 sum).
 *   no VNNI:  as rtn_avx2.c: s = u - 128 and the signed trick (maddubs would saturate on
 *             255 * 127 pairs), plus (128 - c) sum q.
 * Chunk pairs: g == 32 pairs two consecutive blocks; otherwise pairs lie within a group and an
 * odd group's last chunk goes through 256 bits.  Floats are summed in another order than the
 * reference; the integers are the same.
 *
 * 4 bits.  A table lookup, as bnb4_avx512.c does for NF4: per group the 16 possible weights
 * t[k] = fl(d * (k - c)) (c = 8, or z; k - c is exact in float, so t[k] is bit for bit the
 * dequantizer's weight) sit in one zmm, and vpermps looks 16 weights up by their codes (it reads
 * only the low 4 bits of each index, so low nibbles need no mask).  Products go into four FMA
 * accumulators: the exact products of the dequantized weights with x, rounded once per FMA, in
 * another order than the reference (which sums (u - c) x per group and then scales by d). */
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

/* ================================================================ 8 bits, Q8_S activations */

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

/* Correction per unit of sum q: the integer to add is off * sum q (see the top). */
static inline int offset(int z, const int asym, const int vnni) {
  if (vnni) return -z;
  return asym ? 128 - z : 0;
}

/* Chunks (p0, y0) and (p1, y1), offsets off0 / off1: 16 lanes, 8 per chunk. */
static inline __m512i chunk2(const uint8_t *p0, const uint8_t *p1, const uint8_t *y0, const uint8_t *y1, int off0,
                             int off1, const int asym, const int vnni) {
  __m512i q = load2x32(y0 + 4, y1 + 4), u = load2x32(p0, p1);
  __m512i v = vnni ? dot_us(u, q, 1) : dot_ss(_mm512_xor_si512(u, _mm512_set1_epi8((char)0x80)), q, 0);
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

static inline __m256i chunk1(const uint8_t *p, const uint8_t *y, int off, const int asym, const int vnni) {
  __m256i q = _mm256_loadu_si256((const __m256i *)(y + 4)), u = _mm256_loadu_si256((const __m256i *)p);
  __m256i v = vnni ? dot_us1(u, q, 1) : dot_ss1(_mm256_xor_si256(u, _mm256_set1_epi8((char)0x80)), q, 0);
  if (vnni || asym) v = _mm256_add_epi32(v, _mm256_zextsi128_si256(_mm_cvtsi32_si128(off * rd_i16(y + 2))));
  return v;
}

static inline int zero_of(const uint8_t *blk, const int asym) { return asym ? rd_i16(blk + 2) : 128; }

static inline float dot8(int type, const uint8_t *w, const uint8_t *a, int64_t n, const int asym, const int vnni) {
  const int g = QLM_TYPE_BLOCK(type), m = g / QK, h = asym ? 4 : 2;
  const size_t bs = (size_t)h + (size_t)g;
  const int64_t nb = n / g;
  __m512 acc = _mm512_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  if (m == 1) { /* one chunk per block: pairs of blocks */
    int64_t k = 0;
    for (; k + 2 <= nb; k += 2, w += 2 * bs, a += 2 * Q8S_BYTES) {
      const uint8_t *w1 = w + bs, *a1 = a + Q8S_BYTES;
      int off0 = offset(zero_of(w, asym), asym, vnni), off1 = offset(zero_of(w1, asym), asym, vnni);
      __m512i v = chunk2(w + h, w1 + h, a, a1, off0, off1, asym, vnni);
      acc = _mm512_fmadd_ps(scale2(h2f(w) * h2f(a), h2f(w1) * h2f(a1)), _mm512_cvtepi32_ps(v), acc);
    }
    if (k < nb) {
      __m256i v = chunk1(w + h, a, offset(zero_of(w, asym), asym, vnni), asym, vnni);
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w) * h2f(a)), _mm256_cvtepi32_ps(v), acc1);
    }
  } else {
    for (int64_t k = 0; k < nb; k++, w += bs) {
      const float dw = h2f(w);
      const int off = offset(zero_of(w, asym), asym, vnni);
      const uint8_t *p = w + h;
      int j = 0;
      for (; j + 2 <= m; j += 2, p += 2 * QK, a += 2 * Q8S_BYTES) {
        __m512i v = chunk2(p, p + QK, a, a + Q8S_BYTES, off, off, asym, vnni);
        acc = _mm512_fmadd_ps(scale2(dw * h2f(a), dw * h2f(a + Q8S_BYTES)), _mm512_cvtepi32_ps(v), acc);
      }
      if (j < m) {
        __m256i v = chunk1(p, a, off, asym, vnni);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(dw * h2f(a)), _mm256_cvtepi32_ps(v), acc1);
        a += Q8S_BYTES;
      }
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc, _mm512_castps256_ps512(acc1)));
}

/* ================================================================ 4 bits, f32 activations */

/* A group's 16 weights t[k] = fl(d * (k - c)), c = 8 or the zero point z. */
static inline __m512 table4(const uint8_t *blk, const int asym) {
  const float d = h2f(blk), z = asym ? (float)rd_i16(blk + 2) : 0.0f;
  const __m512 k = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 k8 = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  return _mm512_mul_ps(asym ? _mm512_sub_ps(k, _mm512_set1_ps(z)) : k8, _mm512_set1_ps(d));
}

/* One 32-chunk of the nibble layout: bytes p[j] = u_j | u_{j+16} << 4 against x[0..32). */
static inline void chunk32(const uint8_t *p, const float *x, __m512 t, __m512 *a0, __m512 *a1) {
  const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
  *a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(c, t), _mm512_loadu_ps(x), *a0);
  *a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), t), _mm512_loadu_ps(x + 16), *a1);
}

/* 32 | g: the nibble layout.  Two chunks per step into four accumulators; g == 32 takes two
 * blocks per step (one table each), so the FMA chains stay four deep in every case. */
static inline float dot4_nib(int type, const uint8_t *w, const float *x, int64_t n, const int asym) {
  const int g = QLM_TYPE_BLOCK(type), h = asym ? 4 : 2;
  const size_t bs = (size_t)h + (size_t)g / 2;
  const int64_t nb = n / g;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
  int64_t k = 0;
  if (g == QK)
    for (; k + 2 <= nb; k += 2, w += 2 * bs, x += 2 * QK) {
      chunk32(w + h, x, table4(w, asym), &a0, &a1);
      chunk32(w + bs + h, x + QK, table4(w + bs, asym), &a2, &a3);
    }
  for (; k < nb; k++, w += bs) {
    const __m512 t = table4(w, asym);
    const uint8_t *p = w + h;
    int j = 0;
    for (; j + 2 * QK <= g; j += 2 * QK, p += QK, x += 2 * QK) {
      chunk32(p, x, t, &a0, &a1);
      chunk32(p + QK / 2, x + QK, t, &a2, &a3);
    }
    if (j < g) {
      chunk32(p, x, t, &a0, &a1);
      x += QK;
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* 16 codes of the stream layout (byte j = u_2j | u_2j+1 << 4) as 16 int32 indices: each byte
 * twice, the odd copies shifted down a nibble (vpermps ignores the bits above 4). */
static inline __m512i codes16(const uint8_t *p) {
  const __m128i b = _mm_loadl_epi64((const __m128i *)p);
  const __m512i sh = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
  return _mm512_srlv_epi32(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b)), sh);
}

/* 16 | g, 32 does not divide g: the stream layout, 16 weights at a time, two accumulators. */
static inline float dot4_stream(int type, const uint8_t *w, const float *x, int64_t n, const int asym) {
  const int g = QLM_TYPE_BLOCK(type), h = asym ? 4 : 2;
  const size_t bs = (size_t)h + (size_t)g / 2;
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, w += bs) {
    const __m512 t = table4(w, asym);
    const uint8_t *p = w + h;
    int j = 0;
    for (; j + 32 <= g; j += 32, p += 16, x += 32) {
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(codes16(p), t), _mm512_loadu_ps(x), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(codes16(p + 8), t), _mm512_loadu_ps(x + 16), a1);
    }
    if (j < g) { /* g is an odd multiple of 16 */
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(codes16(p), t), _mm512_loadu_ps(x), a0);
      x += 16;
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

#define RTN_DOT8(name, asym, vnni)                                                                                     \
  static float name(int t, const void *w, const void *a, int64_t n) { return dot8(t, w, a, n, asym, vnni); }
RTN_DOT8(dot_sym8, 0, 0)
RTN_DOT8(dot_asym8, 1, 0)
RTN_DOT8(dot_sym8_vnni, 0, 1)
RTN_DOT8(dot_asym8_vnni, 1, 1)

static float dot_sym4(int t, const void *w, const void *a, int64_t n) { return dot4_nib(t, w, a, n, 0); }
static float dot_asym4(int t, const void *w, const void *a, int64_t n) { return dot4_nib(t, w, a, n, 1); }
static float dot_sym4_s(int t, const void *w, const void *a, int64_t n) { return dot4_stream(t, w, a, n, 0); }
static float dot_asym4_s(int t, const void *w, const void *a, int64_t n) { return dot4_stream(t, w, a, n, 1); }

qlm_vec_dot_t_fn qlm_rtn_vec_dot_avx512(int type, bool vnni) {
  int fam = QLM_TYPE_FAMILY(type), bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if (fam != QLM_FAMILY_RTN_SYM && fam != QLM_FAMILY_RTN_ASYM) return NULL;
  bool asym = fam == QLM_FAMILY_RTN_ASYM;
  if (bits == 8 && g % QK == 0) return vnni ? (asym ? dot_asym8_vnni : dot_sym8_vnni) : (asym ? dot_asym8 : dot_sym8);
  if (bits == 4 && g % QK == 0) return asym ? dot_asym4 : dot_sym4;
  if (bits == 4 && g % 16 == 0) return asym ? dot_asym4_s : dot_sym4_s;
  return NULL;
}
