/* q4_k_gemv_avx512.c — Q4_K weights x Q8_K activations with AVX-512 BW (+ VNNI): the one-row dot
 * product and the decode GEMV built on it (qdot.h).
 *
 * Why: the previous AVX-512 dot unpacked each super-block's 8 scales and 8 mins with a scalar
 * loop of byte operations, summed the mins against the activation's bsums in another scalar loop,
 * and built its per-sub-block scale vectors with two broadcasts and an insert per 64 weights.
 * It took ~13.4 ns per 256-weight super-block on one Zen 4 core with the data in L2 (~10.8 GB/s
 * of weights), below one core's ~17 GB/s DRAM bandwidth, so Q4_K decode was compute-bound
 * (bench/synthetic-7b: half of llama.cpp's tokens/s).  Now per super-block (144 weight bytes):
 *   scales and mins: the 12 packed bytes are unpacked with a few 64-bit mask/shift operations
 *     into 8 scale bytes and 8 min bytes (both 6-bit), no per-element loop;
 *   weights: each 32-byte run of nibbles is loaded once broadcast to both 256-bit halves, and a
 *     masked 16-bit shift + and gives its 64 values in the order of the Q8_K quants (low
 *     nibbles = weights 64c..64c+31, high = 64c+32..64c+63), so the activation is read as is;
 *   products: vpmaddubsw (u8 x s8 -> int16 pairs, |sum| <= 2 * 15 * 127, no saturation), then
 *     vpdpwssd (VNNI; else vpmaddwd + add) multiplies each int16 by its sub-block's scale and
 *     accumulates int32 — the scale vector is one vpshufb of the broadcast scale bytes;
 *   mins: vpmaddwd of the 8 mins (each repeated for its sub-block's two 16-quant bsums) with the
 *     activation's 16 bsums, 8 int32 lanes, scaled by dmin * d_x into a separate accumulator.
 * The integers are the scalar reference's (qdot.c: sum_j s_j sum_i v_i q_i and sum_j m_j bsum_j,
 * both exact in int32: |.| <= 8 * 63 * 32 * 15 * 127); only the float summation order differs.
 *
 * The GEMV does the rows one after the other with the same inline row function as the one-row
 * dot, so the two agree bit for bit (the matmul test relies on it); as for Q4_0, one row at a time
 * streams from DRAM better than several interleaved rows. */
#include <immintrin.h>
#include <string.h>

#include "kernels/qdot.h"

#define QK 256
#define W_BYTES 144 /* half d, half dmin, 12 scale bytes, 128 nibble bytes */
#define A_BYTES 292 /* float d, int8 q[256], int16 bsums[16] */

/* The 12 packed scale bytes -> 8 scale bytes (*sc, byte j = s_j) and 8 min bytes (*mn).
 * Layout (ggml's get_scale_min_k4): for j < 4, s_j = b[j] & 63, m_j = b[j+4] & 63;
 * s_{j+4} = (b[j+8] & 15) | (b[j] >> 6) << 4, m_{j+4} = (b[j+8] >> 4) | (b[j+4] >> 6) << 4. */
static inline __attribute__((always_inline)) void scales_mins(const uint8_t *b, uint64_t *sc, uint64_t *mn) {
  uint64_t a;
  uint32_t c;
  memcpy(&a, b, 8);
  memcpy(&c, b + 8, 4);
  uint64_t lo = a & 0x3F3F3F3F3F3F3F3Full; /* s_0..s_3 | m_0..m_3 */
  /* (a >> 2) & 0x30 per byte is (b[k] >> 6) << 4: s_4..s_7's and m_4..m_7's top bits */
  uint64_t hi = ((uint64_t)(c & 0x0F0F0F0Fu) | (uint64_t)((c >> 4) & 0x0F0F0F0Fu) << 32) | ((a >> 2) & 0x3030303030303030ull);
  *sc = (lo & 0xFFFFFFFFull) | hi << 32;
  *mn = (lo >> 32) | (hi & 0xFFFFFFFF00000000ull);
}

/* vpshufb control giving int16 lanes with sub-block (2c + lane128 / 2)'s scale byte, zero high
 * byte: the register of 64-weight run c holds sub-block 2c in its low 256 bits, 2c + 1 above. */
static inline __m512i scale_ctrl(int c) {
  const char z = (char)0x80, s0 = (char)(2 * c), s1 = (char)(2 * c + 1);
  return _mm512_set_epi8(z, s1, z, s1, z, s1, z, s1, z, s1, z, s1, z, s1, z, s1, /* lane 3 */
                         z, s1, z, s1, z, s1, z, s1, z, s1, z, s1, z, s1, z, s1, /* lane 2 */
                         z, s0, z, s0, z, s0, z, s0, z, s0, z, s0, z, s0, z, s0, /* lane 1 */
                         z, s0, z, s0, z, s0, z, s0, z, s0, z, s0, z, s0, z, s0);
}

/* int32 lanes += int16 pairs p times int16 pairs s (vpdpwssd with VNNI). */
static inline __attribute__((always_inline)) __m512i dpwssd(__m512i acc, __m512i p, __m512i s, int vnni) {
  if (vnni) return _mm512_dpwssd_epi32(acc, p, s);
  return _mm512_add_epi32(acc, _mm512_madd_epi16(p, s));
}

/* 64 weights of run c (x = the block's 32 nibble bytes of that run), as u8 0..15 in Q8_K order. */
static inline __attribute__((always_inline)) __m512i run_weights(const uint8_t *x) {
  __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x));
  b = _mm512_mask_srli_epi16(b, (__mmask32)0xFFFF0000u, b, 4);
  return _mm512_and_si512(b, _mm512_set1_epi8(0x0F));
}

/* nb super-blocks of row x with activation y: acc += d d_x * sum_j s_j (v . q)_j per lane,
 * accm += dmin d_x * m_j (bsum_2j + bsum_2j+1) per lane. */
static inline __attribute__((always_inline)) void row_dot(const uint8_t *x, const uint8_t *y, int64_t nb, int vnni,
                                                          __m512 *acc, __m256 *accm) {
  const __m512i c0 = scale_ctrl(0), c1 = scale_ctrl(1), c2 = scale_ctrl(2), c3 = scale_ctrl(3);
  for (int64_t i = 0; i < nb; i++, x += W_BYTES, y += A_BYTES) {
    uint64_t sc, mn;
    scales_mins(x + 4, &sc, &mn);
    uint32_t dm;
    float dy;
    memcpy(&dm, x, 4);
    memcpy(&dy, y, 4);
    /* [d, dmin] * d_x */
    __m128 dd = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)dm)), _mm_set1_ps(dy));
    __m512i s = _mm512_set1_epi64((long long)sc);
    const uint8_t *q = x + 16, *a = y + 4;
    __m512i i0 = _mm512_maddubs_epi16(run_weights(q), _mm512_loadu_si512(a));
    __m512i i1 = _mm512_maddubs_epi16(run_weights(q + 32), _mm512_loadu_si512(a + 64));
    __m512i i2 = _mm512_maddubs_epi16(run_weights(q + 64), _mm512_loadu_si512(a + 128));
    __m512i i3 = _mm512_maddubs_epi16(run_weights(q + 96), _mm512_loadu_si512(a + 192));
    __m512i s0 = dpwssd(_mm512_setzero_si512(), i0, _mm512_shuffle_epi8(s, c0), vnni);
    __m512i s1 = dpwssd(_mm512_setzero_si512(), i1, _mm512_shuffle_epi8(s, c1), vnni);
    s0 = dpwssd(s0, i2, _mm512_shuffle_epi8(s, c2), vnni);
    s1 = dpwssd(s1, i3, _mm512_shuffle_epi8(s, c3), vnni);
    *acc = _mm512_fmadd_ps(_mm512_broadcastss_ps(dd), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), *acc);
    /* mins: int32 lane j = m_j in both int16 halves, so vpmaddwd pairs it with bsums 2j, 2j+1 */
    __m256i m = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)mn));
    m = _mm256_or_si256(m, _mm256_slli_epi32(m, 16));
    __m256i pm = _mm256_madd_epi16(m, _mm256_loadu_si256((const __m256i *)(y + 260)));
    *accm = _mm256_fmadd_ps(_mm256_broadcastss_ps(_mm_movehdup_ps(dd)), _mm256_cvtepi32_ps(pm), *accm);
  }
}

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline __attribute__((always_inline)) float row(const uint8_t *x, const uint8_t *y, int64_t n, int vnni) {
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  row_dot(x, y, n / QK, vnni, &acc, &accm);
  return _mm512_reduce_add_ps(acc) - hsum256(accm);
}

float qlm_vec_dot_q4_k_avx512(const void *w, const void *a, int64_t n) { return row(w, a, n, 0); }
float qlm_vec_dot_q4_k_avx512vnni(const void *w, const void *a, int64_t n) { return row(w, a, n, 1); }

/* qlm_quantize_q8_k with AVX-512, the same bytes: per 256 values amax = max |x| (a block with a NaN
 * goes to the scalar code, whose comparisons decide which lanes it ignores), d = amax / 127 as a
 * float, q = round-half-even(x * (127 / amax)) by the same 1.5 * 2^23 trick, clamped to
 * [-127, 127] with max/min that return the bound on NaN as the scalar ternaries do, and each
 * 16-quant bsum summed exactly in int32.  It runs once per matmul on the calling thread while the
 * workers wait: the scalar loop took ~1.4 ns per value (~6 us per 4096-column matmul). */
void qlm_quantize_q8_k_avx512(const float *x, void *dst, int64_t n) {
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f), magic = _mm512_set1_ps(12582912.0f);
  const __m512 absmask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  uint8_t *b = dst;
  for (int64_t i = 0; i < n / QK; i++, x += QK, b += A_BYTES) {
    __m512 m = _mm512_setzero_ps();
    for (int g = 0; g < 16; g++) m = _mm512_max_ps(_mm512_and_ps(_mm512_loadu_ps(x + 16 * g), absmask), m);
    float amax = _mm512_reduce_max_ps(m);
    if (!(amax >= 0.0f)) {
      qlm_quantize_q8_k(x, b, QK);
      continue;
    }
    const __m512 vid = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    float d = amax / 127.0f;
    memcpy(b, &d, 4);
    int16_t bs[16];
    for (int g = 0; g < 16; g++) {
      __m512 v = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * g), vid), magic), magic);
      __m512i q = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
      _mm_storeu_si128((__m128i *)(b + 4 + 16 * g), _mm512_cvtepi32_epi8(q));
      bs[g] = (int16_t)_mm512_reduce_add_epi32(q);
    }
    memcpy(b + 260, bs, sizeof bs);
  }
}

void qlm_gemv_q4_k_avx512vnni(const void *w, size_t row_bytes, int64_t rows, const void *a, int64_t n, float *y) {
  const uint8_t *x = w;
  for (int64_t r = 0; r < rows; r++, x += row_bytes) y[r] = row(x, a, n, 1);
}
