/* bnb4_avx512.c — AVX-512 dot product of NF4/FP4 blocks (kernels/bnb4.h) with f32 activations.
 *
 * The 16-entry code table fits one zmm.  Per block it is scaled by the block's absmax (one
 * multiply, giving exactly the dequantized weights fl(absmax * code[u]) of the reference
 * dequantizer), and vpermps looks the 64 weights up by their codes: vpermps reads only the low
 * 4 bits of each index, so the low nibbles need no mask and the high nibbles one shift.  The
 * four 16-lane products go into four FMA accumulators, summed at the end: the same products as
 * qlm_vec_dot_bnb4_ref, rounded in another order. */
#include <immintrin.h>
#include <stdbool.h>
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

/* Why this equals the scalar quantize_block_mid (quant/bnb4.c) bit for bit: absmax is a max (exact
 * in any order; a block with a NaN is handed to the scalar rule, which returns the first NaN's
 * magnitude); r = 1 / max(absmax, 1e-38) is the same scalar division; x * r is one IEEE product
 * and the clamp to [-1, 1] lets NaN through as the scalar ternaries do; the sorted position is the
 * count of midpoints with !(mid >= v), the same predicate (ordered >=: NaN counts all 15). */
static float block_absmax(const float *x, bool *nan) {
  __m512 m = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int i = 0; i < QLM_BNB4_BLOCK; i += 16) {
    __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    bad |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    m = _mm512_max_ps(m, a);
  }
  *nan = bad != 0;
  return _mm512_reduce_max_ps(m);
}

/* The sorted positions of the 16 values x * r, clamped */
static __m512i positions(const float mid[15], __m512 x, __m512 r) {
  const __m512 one = _mm512_set1_ps(1.0f), m_one = _mm512_set1_ps(-1.0f);
  __m512 v = _mm512_mul_ps(x, r);
  v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, m_one, _CMP_LT_OQ), m_one);
  v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, one, _CMP_GT_OQ), one);
  __m512i pos = _mm512_setzero_si512();
  const __m512i inc = _mm512_set1_epi32(1);
  for (int k = 0; k < 15; k++) {
    __mmask16 below = (__mmask16)~_mm512_cmp_ps_mask(_mm512_set1_ps(mid[k]), v, _CMP_GE_OQ);
    pos = _mm512_mask_add_epi32(pos, below, pos, inc);
  }
  return pos;
}

void qlm_bnb4_quantize_blocks_avx512(const float mid[15], const uint8_t *order, const float *x, uint8_t *blocks,
                                     size_t n_blocks) {
  int32_t ord[16];
  for (int k = 0; k < 16; k++) ord[k] = order ? order[k] : k;
  const __m512i perm = _mm512_loadu_si512(ord);
  for (size_t b = 0; b < n_blocks; b++, x += QLM_BNB4_BLOCK, blocks += QLM_BNB4_BLOCK_BYTES) {
    bool nan;
    float amax = block_absmax(x, &nan);
    if (nan) { /* the scalar rule: |the first NaN| */
      for (int i = 0; i < QLM_BNB4_BLOCK; i++)
        if (x[i] != x[i]) {
          amax = __builtin_fabsf(x[i]);
          break;
        }
    }
    const __m512 r = _mm512_set1_ps(1.0f / (amax < 1e-38f ? 1e-38f : amax));
    __m512i u[4];
    for (int q = 0; q < 4; q++) u[q] = _mm512_permutexvar_epi32(positions(mid, _mm512_loadu_ps(x + 16 * q), r), perm);
    memcpy(blocks, &amax, 4);
    /* byte j holds code j (low nibble) and code j + 32 (high) */
    _mm_storeu_si128((__m128i *)(blocks + 4), _mm512_cvtepi32_epi8(_mm512_or_si512(u[0], _mm512_slli_epi32(u[2], 4))));
    _mm_storeu_si128((__m128i *)(blocks + 20), _mm512_cvtepi32_epi8(_mm512_or_si512(u[1], _mm512_slli_epi32(u[3], 4))));
  }
}
