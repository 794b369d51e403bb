/* q4_0_gemv_avx512.c — Q4_0 weights x Q8_0 activations with AVX-512 BW + VNNI: the decode GEMV
 * (qdot.h has the packed activation layout it reads).
 *
 * Why: the previous one-row VNNI dot spent ~1.46 ns per 32-weight block on one Zen 4 core
 * (~12 GB/s of weights, below the core's ~17 GB/s DRAM bandwidth), so Q4_0 decode was
 * compute-bound.  Now, per 4 blocks (72 weight bytes): one 64-byte load and one masked 8-byte
 * load, one word permute that gathers the 4 blocks' 64 nibble bytes, and/shift/and, two vpdpbusd
 * (the first starts from the activation's precomputed -8 * sum(q), so Q4_0's offset is free), one
 * word permute + vcvtph2ps for the 4 scales, mul, cvt, fma.  Everything that depends on the
 * activation alone (its nibble-matching byte order, the offset sums, d_x as floats) is made once
 * per matmul by qlm_q4_0_pack_act.  Two accumulators (even / odd quads) shorten the FMA chain.
 * Measured on one Zen 4 core through qlm_matmul_ex (T = 1, CPU time, best of 3; a throwaway
 * microbenchmark): 4096 columns: 0.68-0.71 ns/block with 1536 rows (3.5 MB, in L3; was 1.38-1.44),
 * 16.7-17.5 GB/s streaming a 200 MB matrix from DRAM (was 11.8-12.2; the bandwidth probe says
 * 17.3); 576 columns (SmolLM2), 1536 rows (0.5 MB, L2): 0.78 ns/block (was 1.78), from DRAM
 * 13.9-15.3 GB/s (was 9.7-10.0).
 *
 * Rows are done one after the other, not several per pass: 2 or 4 rows interleaved (sharing the
 * activation loads) were a little faster in cache but slower from DRAM (7.9 / 11.6 GB/s vs 16.2
 * for one row): several concurrent streams per core defeat the hardware prefetcher, and
 * software prefetch won only part of it back.  Byte permutes (VBMI) or four 128-bit inserts
 * instead of the word permute measured the same.
 *
 * Lane bookkeeping: the permuted register holds block k's 16 nibble bytes at bytes 16k..16k+15,
 * so int32 lane i of vpdpbusd belongs to block i / 4, and the scale vector repeats each block's
 * d_w d_x over its 4 lanes. */
#include <immintrin.h>
#include <string.h>

#include "kernels/qdot.h"

#define QUAD_W 72 /* bytes of 4 Q4_0 blocks */

/* Word indices of the 4 blocks' nibble bytes in the 36 words at a quad's start (A = words 0..31,
 * B = words 32..35): block k's qs start at byte 18k + 2 = word 9k + 1. */
static inline __m512i qs_index(void) {
  return _mm512_set_epi16(35, 34, 33, 32, 31, 30, 29, 28, 26, 25, 24, 23, 22, 21, 20, 19, 17, 16, 15, 14, 13, 12, 11,
                          10, 8, 7, 6, 5, 4, 3, 2, 1);
}

/* Word index of block (p / 4)'s half d for word p < 16 (words 16..31 unused). */
static inline __m512i d_index(void) {
  return _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 27, 27, 27, 27, 18, 18, 18, 18, 9, 9, 9, 9, 0,
                          0, 0, 0);
}

/* One quad of one row: A = its first 64 bytes, B = the next 8 (zero-extended). */
static inline __attribute__((always_inline)) __m512 quad(__m512i A, __m512i B, __m512i qsi, __m512i di, __m512i alo,
                                                         __m512i ahi, __m512i off, __m512 dx, __m512 acc) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512i qs = _mm512_permutex2var_epi16(A, qsi, B);
  __m512i lo = _mm512_and_si512(qs, m4), hi = _mm512_and_si512(_mm512_srli_epi16(qs, 4), m4);
  __m512i p = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(off, lo, alo), hi, ahi);
  __m512 dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(di, A)));
  return _mm512_fmadd_ps(_mm512_mul_ps(dw, dx), _mm512_cvtepi32_ps(p), acc);
}

/* Quad q of a row x (72 bytes each) with quad q of the packed activation ap. */
static inline __attribute__((always_inline)) __m512 quad_at(const uint8_t *x, const uint8_t *ap, __m512i qsi, __m512i di,
                                                            __m512 acc) {
  return quad(_mm512_loadu_si512(x), _mm512_maskz_loadu_epi16(0xF, x + 64), qsi, di, _mm512_loadu_si512(ap),
              _mm512_loadu_si512(ap + 64), _mm512_loadu_si512(ap + 128), _mm512_loadu_ps(ap + 192), acc);
}

/* nb blocks of row x with the packed activation ap into acc[0] (even quads and the partial last
 * one) and acc[1] (odd quads).  Calls on consecutive stretches of a row that start at even quads
 * give the same arithmetic as one call on the whole row.  The partial quad is read with masked
 * loads: missing blocks read as zero bytes (zero nibbles, d = 0) and add exactly +0. */
static inline __attribute__((always_inline)) void row_dot(const uint8_t *x, const uint8_t *ap, int64_t nb, __m512 acc[2]) {
  const __m512i qsi = qs_index(), di = d_index();
  int64_t nq = nb / 4, q = 0;
  for (; q + 2 <= nq; q += 2, x += 2 * QUAD_W, ap += 2 * QLM_Q4_0_QUAD_BYTES) {
    acc[0] = quad_at(x, ap, qsi, di, acc[0]);
    acc[1] = quad_at(x + QUAD_W, ap + QLM_Q4_0_QUAD_BYTES, qsi, di, acc[1]);
  }
  if (q < nq) {
    acc[0] = quad_at(x, ap, qsi, di, acc[0]);
    x += QUAD_W, ap += QLM_Q4_0_QUAD_BYTES;
  }
  int tail = (int)(nb - 4 * nq);
  if (tail) {
    __mmask64 m = (((__mmask64)1) << (18 * tail)) - 1; /* 18, 36 or 54 bytes */
    acc[0] = quad(_mm512_maskz_loadu_epi8(m, x), _mm512_setzero_si512(), qsi, di, _mm512_loadu_si512(ap),
                  _mm512_loadu_si512(ap + 64), _mm512_loadu_si512(ap + 128), _mm512_loadu_ps(ap + 192), acc[0]);
  }
}

static inline float finish(const __m512 acc[2]) { return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])); }

void qlm_gemv_q4_0_avx512vnni(const void *w, size_t row_bytes, int64_t rows, const void *packed, int64_t n,
                              float *y) {
  const uint8_t *x = w;
  for (int64_t r = 0; r < rows; r++, x += row_bytes) {
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    row_dot(x, packed, n / 32, acc);
    y[r] = finish(acc);
  }
}

/* qlm_q4_0_pack_act with AVX-512 (same bytes; it runs once per decode matmul, where the scalar
 * loop was a visible fixed cost next to small matrices).  Whole quads here, a partial last one by the scalar code. */
void qlm_q4_0_pack_act_avx512(const void *a, void *dst, int64_t nb) {
  const uint8_t *y = a;
  uint8_t *o = dst;
  const __m512i ones = _mm512_set1_epi8(1);
  int64_t q = 0;
  for (; q < nb / 4; q++, y += 4 * 34, o += QLM_Q4_0_QUAD_BYTES) {
    __m512i lo = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(y + 2)));
    __m512i hi = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(y + 18)));
    lo = _mm512_inserti32x4(lo, _mm_loadu_si128((const __m128i *)(y + 36)), 1);
    hi = _mm512_inserti32x4(hi, _mm_loadu_si128((const __m128i *)(y + 52)), 1);
    lo = _mm512_inserti32x4(lo, _mm_loadu_si128((const __m128i *)(y + 70)), 2);
    hi = _mm512_inserti32x4(hi, _mm_loadu_si128((const __m128i *)(y + 86)), 2);
    lo = _mm512_inserti32x4(lo, _mm_loadu_si128((const __m128i *)(y + 104)), 3);
    hi = _mm512_inserti32x4(hi, _mm_loadu_si128((const __m128i *)(y + 120)), 3);
    /* lane i: sum of lo[4i..4i+3] + hi[4i..4i+3] (1 x s8 products), then times -8 */
    __m512i sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, lo), ones, hi);
    __m512i off = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 3));
    uint16_t h[4];
    for (int k = 0; k < 4; k++) memcpy(&h[k], y + 34 * k, 2);
    __m128 d = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, (short)h[3], (short)h[2], (short)h[1], (short)h[0]));
    __m512 dx = _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                                      _mm512_castps128_ps512(d));
    _mm512_storeu_si512(o, lo);
    _mm512_storeu_si512(o + 64, hi);
    _mm512_storeu_si512(o + 128, off);
    _mm512_storeu_ps(o + 192, dx);
  }
  if (4 * q < nb) qlm_q4_0_pack_act(y, o, nb - 4 * q);
}

/* One row against a plain Q8_0 activation: packed in chunks on the stack, the accumulator carried
 * from chunk to chunk, so the arithmetic is exactly qlm_gemv_q4_0_avx512vnni's for that row. */
float qlm_vec_dot_q4_0_avx512vnni(const void *w, const void *a, int64_t n) {
  enum { CHUNK_QUADS = 16 };
  _Alignas(64) uint8_t buf[CHUNK_QUADS * QLM_Q4_0_QUAD_BYTES];
  const uint8_t *x = w, *y = a;
  int64_t nb = n / 32;
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  for (int64_t b0 = 0; b0 < nb; b0 += 4 * CHUNK_QUADS) {
    int64_t cnt = nb - b0 < 4 * CHUNK_QUADS ? nb - b0 : 4 * CHUNK_QUADS;
    qlm_q4_0_pack_act_avx512(y + (size_t)b0 * 34, buf, cnt);
    row_dot(x + (size_t)b0 * 18, buf, cnt, acc); /* chunks start at even quads */
  }
  return finish(acc);
}
