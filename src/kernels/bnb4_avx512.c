/* bnb4_avx512.c — AVX-512 dot product of NF4/FP4 blocks (kernels/bnb4.h) with f32 activations.
 *
 * The 16-entry code table fits one zmm.  Per block it is scaled by the block's absmax (one
 * multiply, giving exactly the dequantized weights fl(absmax * code[u]) of the reference
 * dequantizer), and vpermps looks the 64 weights up by their codes: vpermps reads only the low
 * 4 bits of each index, so the low nibbles need no mask and the high nibbles one shift.  The
 * four 16-lane products go into four FMA accumulators, summed at the end: the same products as
 * qlm_vec_dot_bnb4_ref, rounded in another order. */
#include <immintrin.h>
#include <string.h>

#include "kernels/bnb4.h"

float qlm_vec_dot_bnb4_avx512(int type, const void *w, const void *a, int64_t n) {
  const __m512 table = _mm512_loadu_ps(qlm_bnb4_code(type));
  const uint8_t *b = w;
  const float *x = a;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  for (int64_t k = 0; k < n / QLM_BNB4_BLOCK; k++, b += QLM_BNB4_BLOCK_BYTES, x += QLM_BNB4_BLOCK) {
    float amax;
    memcpy(&amax, b, 4);
    const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(amax));
    /* bytes 0..15 hold weights 0..15 (low) and 32..47 (high); bytes 16..31 weights 16..31, 48..63 */
    const __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 4)));
    const __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 20)));
    acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(c0, t), _mm512_loadu_ps(x), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(c1, t), _mm512_loadu_ps(x + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(c0, 4), t), _mm512_loadu_ps(x + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(c1, 4), t), _mm512_loadu_ps(x + 48), acc3);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}
