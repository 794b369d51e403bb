/* qdot_avx2.c — quantized dot products with AVX2 (compiled with -mavx2 -mfma -mf16c; only called
 * when kernels/cpu.c found them).  Same integers as the scalar references in qdot.c.
 *
 * The workhorse is vpmaddubsw: u8 x s8 products summed in pairs to int16, then vpmaddwd with ones
 * (or with the sub-block scales, for k-quants) to int32.  Signed x signed (Q8_0, Q4_0 after the
 * -8, Q5_0 after the -16) uses the sign trick: |x| * (y with x's sign).  The int16 pair sums
 * cannot saturate because activation quants are in [-127, 127] (qdot.h): 2 * 128 * 127 < 32767. */
#include <immintrin.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/qdot.h"

static inline float h2f(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* 8 floats: sums of 4 consecutive u8 * s8 products. */
static inline __m256 dot_us(__m256i u, __m256i s) {
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

static inline __m256 dot_ss(__m256i x, __m256i y) { return dot_us(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)); }

/* 16 packed bytes -> 32 values 0..15: low nibbles (weights 0..15) then high nibbles (16..31). */
static inline __m256i nibbles(const uint8_t *qs) {
  __m128i b = _mm_loadu_si128((const __m128i *)qs);
  __m256i v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

static inline __m256i load32(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

float qlm_vec_dot_q8_0_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 68, y += 68) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_ss(load32(x + 2), load32(y + 2)), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x + 34) * h2f(y + 34)), dot_ss(load32(x + 36), load32(y + 36)), acc1);
  }
  if (i < nb) acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_ss(load32(x + 2), load32(y + 2)), acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

float qlm_vec_dot_q4_0_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  const __m256i off = _mm256_set1_epi8(8);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 36, y += 68) {
    __m256i q0 = _mm256_sub_epi8(nibbles(x + 2), off), q1 = _mm256_sub_epi8(nibbles(x + 20), off);
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_ss(q0, load32(y + 2)), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x + 18) * h2f(y + 34)), dot_ss(q1, load32(y + 36)), acc1);
  }
  if (i < nb) {
    __m256i q0 = _mm256_sub_epi8(nibbles(x + 2), off);
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_ss(q0, load32(y + 2)), acc0);
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

float qlm_vec_dot_q4_1_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float summ = 0.0f; /* sum over blocks of m_w * s_y (the offset term) */
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 40, y += 72) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_us(nibbles(x + 4), load32(y + 4)), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x + 20) * h2f(y + 36)), dot_us(nibbles(x + 24), load32(y + 40)), acc1);
    summ += h2f(x + 2) * h2f(y + 2) + h2f(x + 22) * h2f(y + 38);
  }
  if (i < nb) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_us(nibbles(x + 4), load32(y + 4)), acc0);
    summ += h2f(x + 2) * h2f(y + 2);
  }
  return hsum(_mm256_add_ps(acc0, acc1)) + summ;
}

/* The u32 qh of a Q5 block -> 32 bytes, byte j = 0xFF if bit j (the 5th bit of weight j) is set.
 * Each 128-bit lane gathers the two qh bytes it needs (lane 0: bytes 0, 1; lane 1: bytes 2, 3),
 * then byte j tests its bit j % 8. */
static inline __m256i bits_to_bytes(const uint8_t *qh) {
  __m256i v = _mm256_set1_epi32((int)qlm_rd32(qh));
  v = _mm256_shuffle_epi8(v, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
}

/* Q5_0 weights as signed q - 16: where the 5th bit is set, q - 16 is just the nibble; where it
 * is clear, q - 16 = nibble - 16, which as an int8 is the nibble with its top four bits set. */
static inline __m256i q5_0_values(const uint8_t *blk) {
  __m256i hi = _mm256_andnot_si256(bits_to_bytes(blk + 2), _mm256_set1_epi8((char)0xF0));
  return _mm256_or_si256(nibbles(blk + 6), hi);
}

/* Q5_1 weights as unsigned q = nibble | 16 * bit, 0..31. */
static inline __m256i q5_1_values(const uint8_t *blk) {
  __m256i hi = _mm256_and_si256(bits_to_bytes(blk + 4), _mm256_set1_epi8(0x10));
  return _mm256_or_si256(nibbles(blk + 8), hi);
}

float qlm_vec_dot_q5_0_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 44, y += 68) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_ss(q5_0_values(x), load32(y + 2)), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x + 22) * h2f(y + 34)), dot_ss(q5_0_values(x + 22), load32(y + 36)), acc1);
  }
  if (i < nb) acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_ss(q5_0_values(x), load32(y + 2)), acc0);
  return hsum(_mm256_add_ps(acc0, acc1));
}

float qlm_vec_dot_q5_1_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float summ = 0.0f; /* sum over blocks of m_w * s_y (the offset term) */
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 48, y += 72) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_us(q5_1_values(x), load32(y + 4)), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x + 24) * h2f(y + 36)), dot_us(q5_1_values(x + 24), load32(y + 40)), acc1);
    summ += h2f(x + 2) * h2f(y + 2) + h2f(x + 26) * h2f(y + 38);
  }
  if (i < nb) {
    acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(x) * h2f(y)), dot_us(q5_1_values(x), load32(y + 4)), acc0);
    summ += h2f(x + 2) * h2f(y + 2);
  }
  return hsum(_mm256_add_ps(acc0, acc1)) + summ;
}

/* 6-bit scale and min of sub-block j of Q4_K/Q5_K (layout in types.c). */
static inline void k4_scales(const uint8_t *sc, uint8_t *s, uint8_t *m) {
  for (int j = 0; j < 4; j++) {
    s[j] = sc[j] & 63;
    m[j] = sc[j + 4] & 63;
    s[j + 4] = (uint8_t)((sc[j + 8] & 0xF) | ((sc[j] >> 6) << 4));
    m[j + 4] = (uint8_t)((sc[j + 8] >> 4) | ((sc[j + 4] >> 6) << 4));
  }
}

static inline int bsum(const uint8_t *y, int g) {
  int16_t v;
  memcpy(&v, y + 260 + 2 * g, 2);
  return v;
}

float qlm_vec_dot_q4_k_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps();
  float sum = 0.0f;
  for (int64_t i = 0; i < n / 256; i++, x += 144, y += 292) {
    float dy = qlm_rdf32(y), d = dy * h2f(x), dmin = dy * h2f(x + 2);
    uint8_t s[8], m[8];
    k4_scales(x + 4, s, m);
    int imin = 0;
    for (int j = 0; j < 8; j++) imin += m[j] * (bsum(y, 2 * j) + bsum(y, 2 * j + 1));
    const uint8_t *qs = x + 16, *q8 = y + 4;
    __m256i isum = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
      __m256i b = load32(qs + 32 * c);
      __m256i lo = _mm256_and_si256(b, m4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m4);
      __m256i plo = _mm256_maddubs_epi16(lo, load32(q8 + 64 * c));
      __m256i phi = _mm256_maddubs_epi16(hi, load32(q8 + 64 * c + 32));
      plo = _mm256_madd_epi16(plo, _mm256_set1_epi16(s[2 * c]));
      phi = _mm256_madd_epi16(phi, _mm256_set1_epi16(s[2 * c + 1]));
      isum = _mm256_add_epi32(isum, _mm256_add_epi32(plo, phi));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
    sum -= dmin * (float)imin;
  }
  return hsum(acc) + sum;
}

/* The four 32-weight quarters of one Q6_K half as values 0..63 (layout in types.c). */
static inline void q6_quarters(const uint8_t *ql, const uint8_t *qh, __m256i q[4]) {
  const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
  __m256i l0 = load32(ql), l1 = load32(ql + 32), h = load32(qh);
  q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
  q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
  q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
  q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
}

/* The -32 offset is applied through the activation block sums: sum_g sc_g * 32 * bsum_g. */
float qlm_vec_dot_q6_k_avx2(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  __m256 acc = _mm256_setzero_ps();
  float sum = 0.0f;
  for (int64_t i = 0; i < n / 256; i++, x += 210, y += 292) {
    const int8_t *sc = (const int8_t *)(x + 192);
    float d = qlm_rdf32(y) * h2f(x + 208);
    int ioff = 0;
    for (int g = 0; g < 16; g++) ioff += sc[g] * bsum(y, g);
    __m256i isum = _mm256_setzero_si256();
    for (int h = 0; h < 2; h++) {
      __m256i q[4];
      q6_quarters(x + 64 * h, x + 128 + 32 * h, q);
      for (int k = 0; k < 4; k++) {
        __m256i p = _mm256_maddubs_epi16(q[k], load32(y + 4 + 128 * h + 32 * k));
        __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[8 * h + 2 * k + 1]), _mm_set1_epi16(sc[8 * h + 2 * k]));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scv));
      }
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
    sum -= d * (float)(32 * ioff);
  }
  return hsum(acc) + sum;
}
