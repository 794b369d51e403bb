/* qdot_avx512.c — quantized dot products with AVX-512 BW/VL/DQ (+ VNNI for the _avx512vnni
 * versions; the file is compiled with -mavx512vnni, but the VNNI versions are only chosen when
 * kernels/cpu.c found it).  Same integers as the scalar references in qdot.c.
 *
 * Legacy types: two 32-weight blocks per 512-bit register; each block's integer sum lands in its
 * own 8 int32 lanes, which are scaled by that block's d_w * d_x (a two-valued scale vector).
 * With VNNI, vpdpbusd does u8 x s8 -> int32 in one instruction instead of maddubs + madd.
 * Q5_0/Q5_1: the two blocks' u32 qh are exactly a 64-bit byte mask (bit j <-> weight j), so the
 * 5th bit is added with one masked byte add.
 * k-quants: 64 weights per register; the sub-block scales are applied by vpmaddwd. */
#include <immintrin.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/qdot.h"

static inline float h2f(const uint8_t *p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

static inline int bsum(const uint8_t *y, int g) {
  int16_t v;
  memcpy(&v, y + 260 + 2 * g, 2);
  return v;
}

/* 16 int32: sums of 4 consecutive u8 * s8 products. `vnni` is a compile-time constant at every
 * call site, so each caller is specialized. */
static inline __m512i dot_us(__m512i u, __m512i s, int vnni) {
  if (vnni) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

/* Signed x signed: |x| * (y with x's sign). */
static inline __m512i dot_ss(__m512i x, __m512i y, int vnni) {
  __mmask64 neg = _mm512_movepi8_mask(x);
  __m512i ax = _mm512_abs_epi8(x);
  __m512i sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
  return dot_us(ax, sy, vnni);
}

/* Two 32-byte runs (one per block) in one register. */
static inline __m512i load2x32(const uint8_t *p0, const uint8_t *p1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p0)),
                            _mm256_loadu_si256((const __m256i *)p1), 1);
}

/* Two blocks' 16 packed bytes -> 64 values 0..15 (block 0's 32 weights, then block 1's). */
static inline __m512i nibbles2(const uint8_t *qs0, const uint8_t *qs1) {
  __m128i b0 = _mm_loadu_si128((const __m128i *)qs0), b1 = _mm_loadu_si128((const __m128i *)qs1);
  __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(_mm_srli_epi16(b0, 4), b0)),
                                 _mm256_set_m128i(_mm_srli_epi16(b1, 4), b1), 1);
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

static inline __m512 scale2(float d0, float d1) {
  return _mm512_insertf32x8(_mm512_set1_ps(d0), _mm256_set1_ps(d1), 1);
}

/* Block pairs are done in 512 bits; an odd last block uses the scalar reference on one block
 * (the integers are identical, only the float summation order changes). */
static inline float q8_0(const uint8_t *x, const uint8_t *y, int64_t n, int vnni) {
  __m512 acc = _mm512_setzero_ps();
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 68, y += 68) {
    __m512i p = dot_ss(load2x32(x + 2, x + 36), load2x32(y + 2, y + 36), vnni);
    acc = _mm512_fmadd_ps(scale2(h2f(x) * h2f(y), h2f(x + 34) * h2f(y + 34)), _mm512_cvtepi32_ps(p), acc);
  }
  float s = _mm512_reduce_add_ps(acc);
  if (i < nb) s += qlm_vec_dot_q8_0_ref(x, y, 32);
  return s;
}

static inline float q4_0(const uint8_t *x, const uint8_t *y, int64_t n, int vnni) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i off = _mm512_set1_epi8(8);
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 36, y += 68) {
    __m512i q = _mm512_sub_epi8(nibbles2(x + 2, x + 20), off);
    __m512i p = dot_ss(q, load2x32(y + 2, y + 36), vnni);
    acc = _mm512_fmadd_ps(scale2(h2f(x) * h2f(y), h2f(x + 18) * h2f(y + 34)), _mm512_cvtepi32_ps(p), acc);
  }
  float s = _mm512_reduce_add_ps(acc);
  if (i < nb) s += qlm_vec_dot_q4_0_ref(x, y, 32);
  return s;
}

static inline float q4_1(const uint8_t *x, const uint8_t *y, int64_t n, int vnni) {
  __m512 acc = _mm512_setzero_ps();
  float summ = 0.0f;
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 40, y += 72) {
    __m512i p = dot_us(nibbles2(x + 4, x + 24), load2x32(y + 4, y + 40), vnni);
    acc = _mm512_fmadd_ps(scale2(h2f(x) * h2f(y), h2f(x + 20) * h2f(y + 36)), _mm512_cvtepi32_ps(p), acc);
    summ += h2f(x + 2) * h2f(y + 2) + h2f(x + 22) * h2f(y + 38);
  }
  float s = _mm512_reduce_add_ps(acc) + summ;
  if (i < nb) s += qlm_vec_dot_q4_1_ref(x, y, 32);
  return s;
}

/* The 5th bits of two Q5 blocks (u32 qh at byte `off` of each) as a 64-bit byte mask, in the
 * order of nibbles2: bit j of block 0's qh is byte j, of block 1's is byte 32 + j. */
static inline __mmask64 high_bits2(const uint8_t *b0, const uint8_t *b1, int off) {
  return (__mmask64)qlm_rd32(b0 + off) | (__mmask64)qlm_rd32(b1 + off) << 32;
}

/* Q5_0: v = q - 16 is negative exactly where the 5th bit is clear, so the sign trick needs no
 * sign test: |v| = 16 - nibble there (nibble elsewhere), and those activations are negated. */
static inline float q5_0(const uint8_t *x, const uint8_t *y, int64_t n, int vnni) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i sixteen = _mm512_set1_epi8(16), zero = _mm512_setzero_si512();
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 44, y += 68) {
    __mmask64 neg = _knot_mask64(high_bits2(x, x + 22, 2));
    __m512i nib = nibbles2(x + 6, x + 28), q8 = load2x32(y + 2, y + 36);
    __m512i av = _mm512_mask_sub_epi8(nib, neg, sixteen, nib);
    __m512i sy = _mm512_mask_sub_epi8(q8, neg, zero, q8);
    __m512i p = dot_us(av, sy, vnni);
    acc = _mm512_fmadd_ps(scale2(h2f(x) * h2f(y), h2f(x + 22) * h2f(y + 34)), _mm512_cvtepi32_ps(p), acc);
  }
  float s = _mm512_reduce_add_ps(acc);
  if (i < nb) s += qlm_vec_dot_q5_0_ref(x, y, 32);
  return s;
}

/* Q5_1: q = nibble + 16 where the 5th bit is set, 0..31, unsigned as maddubs/vpdpbusd want. */
static inline float q5_1(const uint8_t *x, const uint8_t *y, int64_t n, int vnni) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i sixteen = _mm512_set1_epi8(16);
  float summ = 0.0f;
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 48, y += 72) {
    __m512i nib = nibbles2(x + 8, x + 32);
    __m512i q = _mm512_mask_add_epi8(nib, high_bits2(x, x + 24, 4), nib, sixteen);
    __m512i p = dot_us(q, load2x32(y + 4, y + 40), vnni);
    acc = _mm512_fmadd_ps(scale2(h2f(x) * h2f(y), h2f(x + 24) * h2f(y + 36)), _mm512_cvtepi32_ps(p), acc);
    summ += h2f(x + 2) * h2f(y + 2) + h2f(x + 26) * h2f(y + 38);
  }
  float s = _mm512_reduce_add_ps(acc) + summ;
  if (i < nb) s += qlm_vec_dot_q5_1_ref(x, y, 32);
  return s;
}

float qlm_vec_dot_q8_0_avx512(const void *w, const void *a, int64_t n) { return q8_0(w, a, n, 0); }
float qlm_vec_dot_q4_0_avx512(const void *w, const void *a, int64_t n) { return q4_0(w, a, n, 0); }
float qlm_vec_dot_q4_1_avx512(const void *w, const void *a, int64_t n) { return q4_1(w, a, n, 0); }
float qlm_vec_dot_q5_0_avx512(const void *w, const void *a, int64_t n) { return q5_0(w, a, n, 0); }
float qlm_vec_dot_q5_1_avx512(const void *w, const void *a, int64_t n) { return q5_1(w, a, n, 0); }
float qlm_vec_dot_q8_0_avx512vnni(const void *w, const void *a, int64_t n) { return q8_0(w, a, n, 1); }
/* Q4_0 with VNNI: qlm_vec_dot_q4_0_avx512vnni is in q4_0_gemv_avx512.c (the decode GEMV's kernel on
 * one row, so the matmul and the dot agree bit for bit). */
float qlm_vec_dot_q4_1_avx512vnni(const void *w, const void *a, int64_t n) { return q4_1(w, a, n, 1); }
float qlm_vec_dot_q5_0_avx512vnni(const void *w, const void *a, int64_t n) { return q5_0(w, a, n, 1); }
float qlm_vec_dot_q5_1_avx512vnni(const void *w, const void *a, int64_t n) { return q5_1(w, a, n, 1); }

/* Q4_K: qlm_vec_dot_q4_k_avx512 and _avx512vnni are in q4_k_gemv_avx512.c (with the decode GEMV). */

float qlm_vec_dot_q6_k_avx512(const void *w, const void *a, int64_t n) {
  const uint8_t *x = w, *y = a;
  const __m256i m4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
  /* int16 lane i of a 64-weight register belongs to sub-block i / 8 (pairs of weights) */
  const __m512i idx_lo = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0,
                                          0, 0, 0, 0, 0, 0, 0);
  const __m512i idx_hi = _mm512_add_epi16(idx_lo, _mm512_set1_epi16(4));
  __m512 acc = _mm512_setzero_ps();
  float sum = 0.0f;
  for (int64_t i = 0; i < n / 256; i++, x += 210, y += 292) {
    const int8_t *sc = (const int8_t *)(x + 192);
    float d = qlm_rdf32(y) * h2f(x + 208);
    int ioff = 0;
    for (int g = 0; g < 16; g++) ioff += sc[g] * bsum(y, g);
    __m512i isum = _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) {
      const uint8_t *ql = x + 64 * h, *qh = x + 128 + 32 * h;
      __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
      __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
      __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m3), 4));
      __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m3), 4));
      __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m3), 4));
      __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m3), 4));
      __m512i s8 = _mm512_castsi128_si512(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(sc + 8 * h))));
      __m512i qa = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
      __m512i qb = _mm512_inserti64x4(_mm512_castsi256_si512(q2), q3, 1);
      __m512i pa = _mm512_maddubs_epi16(qa, _mm512_loadu_si512(y + 4 + 128 * h));
      __m512i pb = _mm512_maddubs_epi16(qb, _mm512_loadu_si512(y + 4 + 128 * h + 64));
      isum = _mm512_add_epi32(isum, _mm512_madd_epi16(pa, _mm512_permutexvar_epi16(idx_lo, s8)));
      isum = _mm512_add_epi32(isum, _mm512_madd_epi16(pb, _mm512_permutexvar_epi16(idx_hi, s8)));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(isum), acc);
    sum -= d * (float)(32 * ioff);
  }
  return _mm512_reduce_add_ps(acc) + sum;
}
