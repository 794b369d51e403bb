/* legacy_gemv_avx512.c — the decode GEMV of Q4_1, Q5_0 and Q5_1 with AVX-512 VNNI (qdot.h):
 * qdot_avx512.c's dot products with their activation-only work done once per matmul instead of
 * once per weight row.
 *
 * Why: per pair of blocks (64 weights, 40-48 bytes) the one-row dot converted four or eight
 * halves one at a time (load, move, vcvtph2ps each) and re-read the activation's quants and
 * scales; ~1 instruction per weight byte.  bench/gemv_bw put it at 0.59 (Q4_1), 0.67 (Q5_1) and
 * 0.75 (Q5_0) of a plain read of the same bytes on 2 Zen 4 threads: compute-bound, where Q4_0's
 * interleaved kernel reads at 0.93-1.0.  Q4_1 is the type of the SmolLM2-135M GGUF qlm downloads.
 * Measured (Zen 4): one thread on weights in L2, 10.8 -> 16.8 GB/s (Q4_1), 14.1 -> 19.5 (Q5_0),
 * 12.0 -> 17.6 (Q5_1); SmolLM2-135M Q4_1 tg64 on 2 threads 186 -> 241 t/s (4 alternating runs).
 * From DRAM it still reads at ~0.5 of a plain read: ~33 instructions per 40 bytes is the core's
 * limit; reading at bandwidth needs the 16-row interleaved layout, which Q4_1 now has
 * (q4_1x16.h: 0.91), and Q5_0 (q5_0x16.h: 0.94), so this GEMV serves those two only without the
 * copy (QLM_X16=0), and Q5_1.
 *
 * The packed activation (QLM_LEGACY_PAIR_BYTES per pair of blocks 2p, 2p + 1):
 *   int8  q[64]      block 2p's quants, then block 2p + 1's
 *   float d[16]      lanes 0-7 block 2p's d, lanes 8-15 block 2p + 1's (halves as floats)
 *   int32 off[16]    Q5_0: lane i: -16 * (q[4i] + ... + q[4i + 3]), exact (else unused)
 *   float s[2]       Q8_1's s of the two blocks (Q4_1, Q5_1; else unused)
 * Per pair and row the weights' halves are converted by one vcvtph2ps, and the arithmetic is the
 * one-row dot's, lane for lane and in its order, so the two agree bit for bit (tested):
 *   Q4_1, Q5_1: p = codes . q (codes 0..15, or 0..31 with the 5th bit added by a masked byte
 *     add); acc += (d_w d_x per half) * p;  summ += m_0 s_0 + m_1 s_1;
 *   Q5_0: the dot's sign trick gave each int32 lane sum_4 v q with v = code - 16; here the lane
 *     starts from off = -16 sum_4 q and adds code . q: the same integer.
 * An odd last block goes to the scalar reference on the original activation block, as the dot's
 * does. */
#include <immintrin.h>
#include <string.h>

#include "core/bytes.h"
#include "kernels/qdot.h"
#include "kernels/types.h"

typedef struct legacy_layout {
  int wbytes;  /* bytes of a weight block */
  int qs;      /* offset of its 16 nibble bytes */
  int qh;      /* offset of its u32 of 5th bits, or -1 */
  int has_m;   /* a half m after d (Q4_1, Q5_1) */
  int abytes;  /* bytes of an activation block (Q8_0 34, Q8_1 36) */
  int aq;      /* offset of its quants */
} legacy_layout;

static const legacy_layout Q4_1 = {20, 4, -1, 1, 36, 4}, Q5_0 = {22, 6, 2, 0, 34, 2}, Q5_1 = {24, 8, 4, 1, 36, 4};

static const legacy_layout *layout_of(int type) {
  return type == QLM_TYPE_Q4_1 ? &Q4_1 : type == QLM_TYPE_Q5_0 ? &Q5_0 : type == QLM_TYPE_Q5_1 ? &Q5_1 : NULL;
}

size_t qlm_legacy_packed_act_bytes(int64_t n) { return (size_t)(n / 64) * QLM_LEGACY_PAIR_BYTES; }

static inline float half_at(const uint8_t *p) { return _cvtsh_ss((unsigned short)qlm_rd16(p)); }

void qlm_legacy_pack_act_avx512(int type, const void *a, void *dst, int64_t n) {
  const legacy_layout *lp = layout_of(type);
  if (!lp) return;
  legacy_layout l = *lp;
  const uint8_t *y = a;
  uint8_t *o = dst;
  for (int64_t p = 0; p < n / 64; p++, y += 2 * l.abytes, o += QLM_LEGACY_PAIR_BYTES) {
    __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(y + l.aq))),
                                   _mm256_loadu_si256((const __m256i *)(y + l.abytes + l.aq)), 1);
    __m512 d = _mm512_insertf32x8(_mm512_set1_ps(half_at(y)), _mm256_set1_ps(half_at(y + l.abytes)), 1);
    /* lane sums of 4 quants: vpdpbusd with all-ones u8 */
    __m512i off = _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), q),
                                     _mm512_set1_epi32(-16));
    float s[16] = {0};
    if (l.has_m) s[0] = half_at(y + 2), s[1] = half_at(y + l.abytes + 2);
    _mm512_storeu_si512(o, q);
    _mm512_storeu_ps(o + 64, d);
    _mm512_storeu_si512(o + 128, off);
    _mm512_storeu_ps(o + 192, _mm512_loadu_ps(s));
  }
}

/* Two blocks' 16 packed bytes -> 64 values 0..15 (block 0's 32 weights, then block 1's). */
static inline __m512i nibbles2(const uint8_t *qs0, const uint8_t *qs1) {
  __m128i b0 = _mm_loadu_si128((const __m128i *)qs0), b1 = _mm_loadu_si128((const __m128i *)qs1);
  __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(_mm_srli_epi16(b0, 4), b0)),
                                 _mm256_set_m128i(_mm_srli_epi16(b1, 4), b1), 1);
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

/* One row: the one-row dot's arithmetic (qdot_avx512.c) with the packed activation. */
static inline __attribute__((always_inline)) float row_dot(const legacy_layout *l, const uint8_t *x,
                                                           const uint8_t *ap, const uint8_t *a, int64_t n,
                                                           float (*ref)(const void *, const void *, int64_t)) {
  __m512 acc = _mm512_setzero_ps();
  const __m512i sixteen = _mm512_set1_epi8(16);
  const __m512i lo_hi = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0); /* d_0 x 8, d_1 x 8 */
  float summ = 0.0f;
  int64_t nb = n / 32, i = 0;
  for (; i + 2 <= nb; i += 2, x += 2 * l->wbytes, ap += QLM_LEGACY_PAIR_BYTES) {
    const uint8_t *x1 = x + l->wbytes;
    __m512i q = nibbles2(x + l->qs, x1 + l->qs);
    if (l->qh >= 0)
      q = _mm512_mask_add_epi8(q, (__mmask64)qlm_rd32(x + l->qh) | (__mmask64)qlm_rd32(x1 + l->qh) << 32, q, sixteen);
    /* the two blocks' leading halves (d, m) -> floats [d_0, m_0, d_1, m_1] */
    __m128 h = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)qlm_rd32(x1), (int)qlm_rd32(x)));
    __m512i p = _mm512_dpbusd_epi32(l->qh >= 0 && !l->has_m ? _mm512_loadu_si512(ap + 128) : _mm512_setzero_si512(),
                                    q, _mm512_loadu_si512(ap));
    __m512 dw = _mm512_permutexvar_ps(lo_hi, _mm512_castps128_ps512(h));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_loadu_ps(ap + 64)), _mm512_cvtepi32_ps(p), acc);
    if (l->has_m) {
      float s0, s1;
      memcpy(&s0, ap + 192, 4), memcpy(&s1, ap + 196, 4);
      summ += _mm_cvtss_f32(_mm_movehdup_ps(h)) * s0 + _mm_cvtss_f32(_mm_shuffle_ps(h, h, 3)) * s1;
    }
  }
  float s = _mm512_reduce_add_ps(acc) + summ;
  if (i < nb) s += ref(x, a + (size_t)i * (size_t)l->abytes, 32);
  return s;
}

static inline __attribute__((always_inline)) void gemv(const legacy_layout *l, const void *w, size_t row_bytes,
                                                       int64_t rows, const void *packed, const void *a, int64_t n,
                                                       float *y, float (*ref)(const void *, const void *, int64_t)) {
  for (int64_t r = 0; r < rows; r++) y[r] = row_dot(l, (const uint8_t *)w + (size_t)r * row_bytes, packed, a, n, ref);
}

void qlm_gemv_legacy_avx512vnni(int type, const void *w, size_t row_bytes, int64_t rows, const void *packed,
                                const void *a, int64_t n, float *y) {
  /* one instance per type: its layout's constants fold into the loop */
  switch (type) {
  case QLM_TYPE_Q4_1: gemv(&Q4_1, w, row_bytes, rows, packed, a, n, y, qlm_vec_dot_q4_1_ref); break;
  case QLM_TYPE_Q5_0: gemv(&Q5_0, w, row_bytes, rows, packed, a, n, y, qlm_vec_dot_q5_0_ref); break;
  case QLM_TYPE_Q5_1: gemv(&Q5_1, w, row_bytes, rows, packed, a, n, y, qlm_vec_dot_q5_1_ref); break;
  default: break;
  }
}
