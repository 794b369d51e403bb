/* hqq_avx2.c — AVX2 dot products of HQQ blocks (kernels/hqq.h) with f32 activations, and the
 * AVX2 build of the solver's inner loop (kernels/hqq_iter.h).
 *
 * Per group the table t[k] = (k - z) * s (the dequantizer's floats) sits in two ymm, entries
 * 0..7 and 8..15; vpermps looks up both halves by the low 3 bits of a code and bit 3 picks one
 * with blendv (which reads the sign bit, where a shift by 28 moves bit 3).  2-bit codes need
 * only the low half; 8-bit codes are converted and scaled directly. */
#include <immintrin.h>
#include <string.h>

#include "kernels/hqq.h"
#include "kernels/hqq_iter.h"

static inline void group_table(const uint8_t *b, __m256 *lo, __m256 *hi) {
  const __m256 i0 = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), i8 = _mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15);
  const __m256 s = _mm256_set1_ps(_cvtsh_ss((unsigned short)(b[0] | b[1] << 8)));
  const __m256 z = _mm256_set1_ps(_cvtsh_ss((unsigned short)(b[2] | b[3] << 8)));
  *lo = _mm256_mul_ps(_mm256_sub_ps(i0, z), s);
  *hi = _mm256_mul_ps(_mm256_sub_ps(i8, z), s);
}

static inline __m256 lookup(__m256 lo, __m256 hi, __m256i idx) {
  __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), sel);
}

static inline float hsum(__m256 s) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

/* 4 bits, 32 | g: per 32 weights 16 bytes, byte j = u_j | u_{j+16} << 4. */
static float dot4(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const uint8_t *b = w;
  const float *x = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, b += bs) {
    __m256 lo, hi;
    group_table(b, &lo, &hi);
    const uint8_t *p = b + QLM_HQQ_HEADER;
    for (int c = 0; c < g; c += 32, p += 16, x += 32) {
      __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
      __m256i c1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8)));
      /* low nibbles need no mask: vpermps reads bits 0..2, the shift by 28 drops bits 4..7 */
      acc0 = _mm256_fmadd_ps(lookup(lo, hi, c0), _mm256_loadu_ps(x), acc0);
      acc1 = _mm256_fmadd_ps(lookup(lo, hi, c1), _mm256_loadu_ps(x + 8), acc1);
      acc2 = _mm256_fmadd_ps(lookup(lo, hi, _mm256_srli_epi32(c0, 4)), _mm256_loadu_ps(x + 16), acc2);
      acc3 = _mm256_fmadd_ps(lookup(lo, hi, _mm256_srli_epi32(c1, 4)), _mm256_loadu_ps(x + 24), acc3);
    }
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

/* 2 bits, 16 | g: bit stream, 8 codes in 2 bytes (code i at bits 2i). */
static float dot2(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i three = _mm256_set1_epi32(3);
  const uint8_t *b = w;
  const float *x = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, b += bs) {
    __m256 lo, hi;
    group_table(b, &lo, &hi);
    const uint8_t *p = b + QLM_HQQ_HEADER;
    for (int c = 0; c < g; c += 16, p += 4, x += 16) {
      int v0 = p[0] | p[1] << 8, v1 = p[2] | p[3] << 8;
      __m256i u0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(v0), shifts), three);
      __m256i u1 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(v1), shifts), three);
      acc0 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(lo, u0), _mm256_loadu_ps(x), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(lo, u1), _mm256_loadu_ps(x + 8), acc1);
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

/* 8 bits, 16 | g: w = (u - z) * s computed 8 at a time. */
static float dot8(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const uint8_t *b = w;
  const float *x = a;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, b += bs) {
    const __m256 s = _mm256_set1_ps(_cvtsh_ss((unsigned short)(b[0] | b[1] << 8)));
    const __m256 z = _mm256_set1_ps(_cvtsh_ss((unsigned short)(b[2] | b[3] << 8)));
    const uint8_t *p = b + QLM_HQQ_HEADER;
    for (int c = 0; c < g; c += 16, x += 16) {
      __m256 u0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + c))));
      __m256 u1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + c + 8))));
      acc0 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(u0, z), s), _mm256_loadu_ps(x), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(u1, z), s), _mm256_loadu_ps(x + 8), acc1);
    }
  }
  return hsum(_mm256_add_ps(acc0, acc1));
}

qlm_vec_dot_t_fn qlm_hqq_vec_dot_avx2(int type) {
  const int bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if (bits == 4 && g % 32 == 0) return dot4;
  if (bits == 2 && g % 16 == 0) return dot2;
  if (bits == 8 && g % 16 == 0) return dot8;
  return NULL;
}

double qlm_hqq_iter_avx2(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z) {
  return hqq_iter_body(a, W, ng, si, z);
}
