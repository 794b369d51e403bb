/* int8row_avx512.c — AVX-512 int8 x int8 row dot products of the LLM.int8() types
 * (kernels/int8row.h).  The file is compiled with -mavx512vnni, but the VNNI version is only
 * chosen when the CPU has it (kernels/int8row.c).
 *
 * Per 64 codes: u = |w| (as u8: -128 gives 128, exact) and s = a with the sign of w (a is within
 * +-127, so negating it is safe); u8 x s8 products are then summed 4 at a time into int32 by
 * vpdpbusd (VNNI) or in pairs into int16 by vpmaddubsw (at most 2 * 128 * 127 = 32512: no
 * saturation) and widened by vpmaddwd.  The int32 total is exact, so both versions equal the
 * scalar reference bit for bit.  The tail of a row is read with a masked load (zeros add 0). */
#include <immintrin.h>

#include "core/bytes.h"
#include "kernels/int8row.h"

static inline __m512i dot64(__m512i acc, __m512i vw, __m512i va, int vnni) {
  const __m512i u = _mm512_abs_epi8(vw);
  const __m512i s = _mm512_mask_sub_epi8(va, _mm512_movepi8_mask(vw), _mm512_setzero_si512(), va);
  if (vnni) return _mm512_dpbusd_epi32(acc, u, s);
  return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
}

static inline int32_t dot_i32(const int8_t *w, const int8_t *a, int64_t n, int vnni) {
  __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    acc0 = dot64(acc0, _mm512_loadu_si512(w + i), _mm512_loadu_si512(a + i), vnni);
    acc1 = dot64(acc1, _mm512_loadu_si512(w + i + 64), _mm512_loadu_si512(a + i + 64), vnni);
  }
  for (; i + 64 <= n; i += 64) acc0 = dot64(acc0, _mm512_loadu_si512(w + i), _mm512_loadu_si512(a + i), vnni);
  if (i < n) {
    const __mmask64 m = _cvtu64_mask64(~0ULL >> (64 - (n - i)));
    acc1 = dot64(acc1, _mm512_maskz_loadu_epi8(m, w + i), _mm512_maskz_loadu_epi8(m, a + i), vnni);
  }
  return _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
}

static inline float vec_dot(int type, const void *w, const void *a, int64_t n, int vnni) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = QLM_INT8ROW_HEADER + (size_t)g;
  const uint8_t *wb = w, *ab = a;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, wb += bs, ab += bs) {
    int32_t c = dot_i32((const int8_t *)(wb + QLM_INT8ROW_HEADER), (const int8_t *)(ab + QLM_INT8ROW_HEADER), g, vnni);
    sum += ((float)c * (qlm_rdf32(ab) * qlm_rdf32(wb))) * QLM_INT8ROW_MM_DEQ;
  }
  return sum;
}

float qlm_vec_dot_int8row_avx512(int type, const void *w, const void *a, int64_t n) {
  return vec_dot(type, w, a, n, 0);
}

float qlm_vec_dot_int8row_avx512vnni(int type, const void *w, const void *a, int64_t n) {
  return vec_dot(type, w, a, n, 1);
}
