/* int8row_avx2.c — AVX2 int8 x int8 row dot product of the LLM.int8() types (kernels/int8row.h).
 *
 * Per 32 codes: maddubs(|w| as u8, a * sign(w)) gives int16 pair sums, madd with ones widens them
 * to int32.  |w| of -128 is 0x80 = 128 read as unsigned, so any weight byte is exact; the
 * activation is negated, which is safe because the quantizer keeps it within +-127.  A pair sum is
 * at most 2 * 128 * 127 = 32512, so maddubs never saturates: the int32 total is exact and the
 * result equals the scalar reference bit for bit. */
#include <immintrin.h>

#include "core/bytes.h"
#include "kernels/int8row.h"

static inline __m256i dot32(__m256i acc, const int8_t *w, const int8_t *a) {
  const __m256i vw = _mm256_loadu_si256((const __m256i *)w), va = _mm256_loadu_si256((const __m256i *)a);
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(vw), _mm256_sign_epi8(va, vw));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static int32_t dot_i32(const int8_t *w, const int8_t *a, int64_t n) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = dot32(acc0, w + i, a + i);
    acc1 = dot32(acc1, w + i + 32, a + i + 32);
  }
  if (i + 32 <= n) acc0 = dot32(acc0, w + i, a + i), i += 32;
  __m256i acc = _mm256_add_epi32(acc0, acc1);
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  int32_t sum = _mm_cvtsi128_si32(s);
  for (; i < n; i++) sum += (int32_t)w[i] * a[i];
  return sum;
}

float qlm_vec_dot_int8row_avx2(int type, const void *w, const void *a, int64_t n) {
  const int g = QLM_TYPE_BLOCK(type);
  const size_t bs = QLM_INT8ROW_HEADER + (size_t)g;
  const uint8_t *wb = w, *ab = a;
  float sum = 0.0f;
  for (int64_t k = 0; k < n / g; k++, wb += bs, ab += bs) {
    int32_t c = dot_i32((const int8_t *)(wb + QLM_INT8ROW_HEADER), (const int8_t *)(ab + QLM_INT8ROW_HEADER), g);
    sum += ((float)c * (qlm_rdf32(ab) * qlm_rdf32(wb))) * QLM_INT8ROW_MM_DEQ;
  }
  return sum;
}
