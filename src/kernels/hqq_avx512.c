/* hqq_avx512.c — AVX-512 dot products of HQQ blocks (kernels/hqq.h) with f32 activations, and
 * the AVX-512 build of the solver's inner loop (kernels/hqq_iter.h).
 *
 * Per group the table t[k] = (k - z) * s of the 16 weights a 4-bit code can stand for is one
 * zmm (the same float operations as the dequantizer, so the same floats); vpermps looks 16
 * weights up at once by their codes (it reads only the low 4 bits of each index, so the low
 * nibbles need no mask and the high ones one shift) and FMA adds them times x.  2-bit codes
 * use the same table (4 entries used); 8-bit codes are converted and scaled directly. */
#include <immintrin.h>
#include <string.h>

#include "kernels/hqq.h"
#include "kernels/hqq_iter.h"

static inline __m512 group_table(const uint8_t *b) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  float s, z;
  s = _cvtsh_ss((unsigned short)(b[0] | b[1] << 8));
  z = _cvtsh_ss((unsigned short)(b[2] | b[3] << 8));
  return _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(z)), _mm512_set1_ps(s));
}

/* 4 bits, 32 | g: per 32 weights 16 bytes, byte j = u_j | u_{j+16} << 4. */
static float dot4(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const uint8_t *b = w;
  const float *x = a;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, b += bs) {
    const __m512 t = group_table(b);
    const uint8_t *p = b + QLM_HQQ_HEADER;
    for (int c = 0; c < g; c += 32, p += 16, x += 32) {
      const __m512i u = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
      acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(u, t), _mm512_loadu_ps(x), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(u, 4), t), _mm512_loadu_ps(x + 16), acc1);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* 2 bits, 16 | g: bit stream, 16 codes in 4 bytes (code i at bits 2i). */
static float dot2(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i three = _mm512_set1_epi32(3);
  const uint8_t *b = w;
  const float *x = a;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, b += bs) {
    const __m512 t = group_table(b);
    const uint8_t *p = b + QLM_HQQ_HEADER;
    int c = 0;
    for (; c + 32 <= g; c += 32, p += 8, x += 32) {
      int32_t v0, v1;
      memcpy(&v0, p, 4);
      memcpy(&v1, p + 4, 4);
      __m512i u0 = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(v0), shifts), three);
      __m512i u1 = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(v1), shifts), three);
      acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(u0, t), _mm512_loadu_ps(x), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(u1, t), _mm512_loadu_ps(x + 16), acc1);
    }
    for (; c < g; c += 16, p += 4, x += 16) {
      int32_t v0;
      memcpy(&v0, p, 4);
      __m512i u0 = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(v0), shifts), three);
      acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(u0, t), _mm512_loadu_ps(x), acc0);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

/* 8 bits, 16 | g: w = (u - z) * s computed 16 at a time. */
static float dot8(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = qlm_hqq_block_bytes(type);
  const uint8_t *b = w;
  const float *x = a;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < n / g; k++, b += bs) {
    const __m512 s = _mm512_set1_ps(_cvtsh_ss((unsigned short)(b[0] | b[1] << 8)));
    const __m512 z = _mm512_set1_ps(_cvtsh_ss((unsigned short)(b[2] | b[3] << 8)));
    const uint8_t *p = b + QLM_HQQ_HEADER;
    int c = 0;
    for (; c + 32 <= g; c += 32, x += 32) {
      __m512 u0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + c))));
      __m512 u1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + c + 16))));
      acc0 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(u0, z), s), _mm512_loadu_ps(x), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(u1, z), s), _mm512_loadu_ps(x + 16), acc1);
    }
    for (; c < g; c += 16, x += 16) {
      __m512 u0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + c))));
      acc0 = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(u0, z), s), _mm512_loadu_ps(x), acc0);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

qlm_vec_dot_t_fn qlm_hqq_vec_dot_avx512(int type) {
  const int bits = QLM_TYPE_BITS(type), g = QLM_TYPE_BLOCK(type);
  if (bits == 4 && g % 32 == 0) return dot4;
  if (bits == 2 && g % 16 == 0) return dot2;
  if (bits == 8 && g % 16 == 0) return dot8;
  return NULL;
}

double qlm_hqq_iter_avx512(const qlm_hqq_iter_args *a, const float *W, int64_t ng, const float *si, float *z) {
  return hqq_iter_body(a, W, ng, si, z);
}
