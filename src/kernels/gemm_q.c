/* gemm_q.c — the blocked int8 GEMM for prefill with quantized weights (see gemm_q.h): repacking
 * of weights and activations, the scalar tile kernel (the reference) and the threaded driver.
 *
 * Per call: pass 1 (all threads) quantizes X row by row with the type's activation quantizer and
 * repacks groups of 4 rows; pass 2 gives every thread a slice of W's rows (multiples of 16, so no
 * two threads write one cache line of Y); a thread repacks CHUNK_ROWS rows of its slice at a time
 * into its own scratch, then runs the tile kernel over (16 activation rows) x (8 weight rows)
 * tiles.  All scratch is one buffer per calling thread that only grows: no per-call allocation
 * once the largest shape has been seen. */
#include "kernels/gemm_q.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytes.h"
#include "core/error.h"
#include "core/fp16.h"
#include "kernels/qdot.h"
#include "kernels/types.h"

#define QK 32
#define ROW_GRAIN 16   /* rows of W per unit of the thread split (as matmul.c) */
#define CHUNK_ROWS 64  /* rows of W repacked at a time per thread (a multiple of 8) */
#define TILE_ACTS 16   /* activation rows per tile: 4 groups */
#define MIN_PARALLEL_WORK (64 * 1024)

/* How one weight type is unpacked: block bytes, the activation layout it pairs with. */
typedef struct wtype {
  int type;
  int bytes;      /* bytes per block of the type (32 weights; k-quants: 256, unpacked 32 at a time) */
  int off;        /* subtracted from the unsigned code */
  int has_min;    /* Q4_1/Q5_1: + m_w s_a */
  int act_type;   /* Q8_0, Q8_1 or Q8_K */
} wtype;

static const wtype WTYPES[] = {
    {QLM_TYPE_Q4_0, 18, 8, 0, QLM_TYPE_Q8_0},  {QLM_TYPE_Q4_1, 20, 0, 1, QLM_TYPE_Q8_1},
    {QLM_TYPE_Q5_0, 22, 16, 0, QLM_TYPE_Q8_0}, {QLM_TYPE_Q5_1, 24, 0, 1, QLM_TYPE_Q8_1},
    {QLM_TYPE_Q8_0, 34, 128, 0, QLM_TYPE_Q8_0},
    /* k-quants: each 32-weight sub-block j of a super-block is a block here with
     * d_w = d * sc_j, m_w = -dmin * mn_j and s_a = d_a * (sum of the sub-block's q) */
    {QLM_TYPE_Q4_K, 144, 0, 1, QLM_TYPE_Q8_K}, {QLM_TYPE_Q5_K, 176, 0, 1, QLM_TYPE_Q8_K},
};

static int is_k(const wtype *wt) { return wt->act_type == QLM_TYPE_Q8_K; }

/* Q4_K/Q5_K sub-block j (0..7) of the super-block at b: codes u[32] (0..15, Q5_K 0..31), d, m. */
static void unpack_k(const wtype *wt, const uint8_t *b, int j, uint8_t *u, float *d, float *m) {
  const uint8_t *sc = b + 4, *qh = wt->type == QLM_TYPE_Q5_K ? b + 16 : NULL;
  const uint8_t *qs = (qh ? b + 48 : b + 16) + 32 * (j / 2);
  int s, mn;
  qlm_k4_scale_min(sc, j, &s, &mn);
  for (int e = 0; e < 32; e++) {
    int q = j % 2 ? qs[e] >> 4 : qs[e] & 0xF;
    if (qh) q |= ((qh[e] >> j) & 1) << 4;
    u[e] = (uint8_t)q;
  }
  *d = qlm_rdhalf(b) * (float)s;
  *m = -(qlm_rdhalf(b + 2) * (float)mn);
}

static const wtype *wtype_of(int type) {
  for (size_t i = 0; i < sizeof WTYPES / sizeof WTYPES[0]; i++)
    if (WTYPES[i].type == type) return &WTYPES[i];
  return NULL;
}

int qlm_gemm_q_covers(int type) { return wtype_of(type) != NULL; }

static qlm_simd_level clamp(qlm_simd_level level) {
  qlm_simd_level hw = qlm_cpu_detect();
  return level > hw ? hw : level;
}

static int has_vnni(qlm_simd_level level) { return clamp(level) == QLM_SIMD_AVX512 && qlm_cpu_has_avx512_vnni(); }

int qlm_gemm_q_fast(int type, qlm_simd_level level) {
  if (!wtype_of(type)) return 0;
  if (has_vnni(level)) return 1;
  return clamp(level) >= QLM_SIMD_AVX2 && type != QLM_TYPE_Q8_0; /* see gemm_q_avx2.c */
}

/* One weight block -> unsigned codes u[32] (weight j = d * (u[j] - off) + m), d, m. */
static void unpack_block(const wtype *wt, const uint8_t *b, uint8_t *u, float *d, float *m) {
  const uint8_t *qs;
  uint32_t qh = 0;
  *d = qlm_rdhalf(b);
  *m = 0.0f;
  switch (wt->type) {
  case QLM_TYPE_Q8_0:
    for (int j = 0; j < QK; j++) u[j] = (uint8_t)((int)(int8_t)b[2 + j] + 128);
    return;
  case QLM_TYPE_Q4_0: qs = b + 2; break;
  case QLM_TYPE_Q4_1: *m = qlm_rdhalf(b + 2); qs = b + 4; break;
  case QLM_TYPE_Q5_0: qh = qlm_rd32(b + 2); qs = b + 6; break;
  default: /* Q5_1 */ *m = qlm_rdhalf(b + 2); qh = qlm_rd32(b + 4); qs = b + 8; break;
  }
  for (int j = 0; j < 16; j++) {
    u[j] = (uint8_t)((qs[j] & 0xF) | ((qh >> j) & 1) << 4);
    u[j + 16] = (uint8_t)((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
  }
}

/* Rows [r0, r0 + n) of W (n <= 4; missing rows are zero) -> one weight group of nb blocks.
 * Each output block is written front to back from the 4 rows' unpacked codes. */
static void repack_wgroup(const wtype *wt, const qlm_mat *W, int64_t r0, int n, int64_t nb, uint8_t *dst, int simd) {
  const uint8_t *row[4];
  for (int r = 0; r < n; r++) row[r] = (const uint8_t *)W->data + (size_t)(r0 + r) * W->row_bytes;
  if (simd && (wt->type == QLM_TYPE_Q4_0 || wt->type == QLM_TYPE_Q8_0)) {
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *blk[4];
      for (int r = 0; r < 4; r++) blk[r] = r < n ? row[r] + (size_t)b * (size_t)wt->bytes : NULL;
      qlm_gemm_q_repack_wblock_avx512(blk, wt->type == QLM_TYPE_Q8_0, dst + (size_t)b * QLM_GQ_WBLK);
    }
    return;
  }
  if (simd && is_k(wt)) { /* a super-block (8 weight-group blocks) at a time */
    for (int64_t sb = 0; sb < nb / 8; sb++) {
      const uint8_t *blk[4];
      for (int r = 0; r < 4; r++) blk[r] = r < n ? row[r] + (size_t)sb * (size_t)wt->bytes : NULL;
      qlm_gemm_q_repack_ksuper_avx512(blk, wt->type == QLM_TYPE_Q5_K, dst + (size_t)sb * 8 * QLM_GQ_WBLK);
    }
    return;
  }
  for (int64_t b = 0; b < nb; b++) {
    uint8_t u[4][QK], *o = dst + (size_t)b * QLM_GQ_WBLK;
    float d[4] = {0}, m[4] = {0};
    for (int r = 0; r < 4; r++) {
      if (r >= n) memset(u[r], 0, QK);
      else if (is_k(wt)) unpack_k(wt, row[r] + (size_t)(b / 8) * (size_t)wt->bytes, (int)(b % 8), u[r], &d[r], &m[r]);
      else unpack_block(wt, row[r] + (size_t)b * (size_t)wt->bytes, u[r], &d[r], &m[r]);
    }
    for (int k = 0; k < 8; k++)
      for (int r = 0; r < 4; r++) memcpy(o + 16 * k + 4 * r, u[r] + 4 * k, 4);
    memcpy(o + 128, d, sizeof d);
    memcpy(o + 144, m, sizeof m);
  }
}

/* Activation rows 0..n-1 (n <= 4) of a group, already quantized to act_type at qa[c] -> the group
 * at dst (rows n..3 zero).  Written block by block, front to back. */
static void repack_act(const wtype *wt, const uint8_t *const qa[4], int n, int64_t nb, uint8_t *dst, int simd) {
  int abytes = wt->act_type == QLM_TYPE_Q8_1 ? 36 : 34, qoff = abytes - QK;
  static const uint8_t zeros[QK];
  for (int64_t b = 0; b < nb; b++) {
    uint8_t *o = dst + (size_t)b * QLM_GQ_ABLK;
    const uint8_t *qv[4];
    int32_t corr[4] = {0};
    float d[4] = {0}, s[4] = {0};
    for (int c = 0; c < 4; c++) {
      qv[c] = zeros;
      if (c >= n) continue;
      int sum = 0;
      if (is_k(wt)) { /* Q8_K: f32 d, q[256], int16 bsums[16] per super-block of 292 bytes */
        const uint8_t *sb = qa[c] + (size_t)(b / 8) * 292;
        qv[c] = sb + 4 + 32 * (b % 8);
        d[c] = qlm_bits_to_f32(qlm_rd32(sb));
        sum = (int16_t)qlm_rd16(sb + 260 + 4 * (b % 8)) + (int16_t)qlm_rd16(sb + 262 + 4 * (b % 8));
        s[c] = d[c] * (float)sum;
      } else {
        const uint8_t *y = qa[c] + (size_t)b * (size_t)abytes;
        qv[c] = y + qoff;
        for (int j = 0; j < QK; j++) sum += (int8_t)qv[c][j];
        d[c] = qlm_rdhalf(y);
        s[c] = wt->act_type == QLM_TYPE_Q8_1 ? qlm_rdhalf(y + 2) : 0.0f;
      }
      corr[c] = -wt->off * sum;
    }
    if (simd) {
      qlm_gemm_q_repack_act_avx512(qv, corr, d, s, o);
      continue;
    }
    for (int k = 0; k < 8; k++)
      for (int c = 0; c < 4; c++)
        for (int r = 0; r < 4; r++) memcpy(o + 64 * k + 16 * c + 4 * r, qv[c] + 4 * k, 4);
    for (int c = 0; c < 4; c++)
      for (int r = 0; r < 4; r++) {
        memcpy(o + 512 + 4 * (4 * c + r), &corr[c], 4);
        memcpy(o + 576 + 4 * (4 * c + r), &d[c], 4);
        memcpy(o + 640 + 4 * (4 * c + r), &s[c], 4);
      }
  }
}

/* The reference tile: per (activation, weight row) pair exactly the operations of
 * qlm_vec_dot_*_ref, in its block order. */
void qlm_gemm_q_tile_scalar(const uint8_t *wp, int nrg, const uint8_t *ap, int ncg, int64_t nb, int64_t b0, int64_t b1,
                            int has_min, float *acc) {
  for (int cg = 0; cg < ncg; cg++)
    for (int rg = 0; rg < nrg; rg++)
      for (int c = 0; c < 4; c++)
        for (int r = 0; r < 4; r++) {
          const uint8_t *w = wp + ((size_t)rg * (size_t)nb + (size_t)b0) * QLM_GQ_WBLK;
          const uint8_t *a = ap + ((size_t)cg * (size_t)nb + (size_t)b0) * QLM_GQ_ABLK;
          int l = 4 * c + r;
          float sum = acc[(4 * rg + cg) * 16 + l];
          for (int64_t b = b0; b < b1; b++, w += QLM_GQ_WBLK, a += QLM_GQ_ABLK) {
            int32_t isum;
            float dw, mw, da, sa;
            memcpy(&isum, a + 512 + 4 * l, 4);
            for (int k = 0; k < 8; k++)
              for (int i = 0; i < 4; i++) isum += (int)w[16 * k + 4 * r + i] * (int8_t)a[64 * k + 4 * l + i];
            memcpy(&dw, w + 128 + 4 * r, 4);
            memcpy(&mw, w + 144 + 4 * r, 4);
            memcpy(&da, a + 576 + 4 * l, 4);
            memcpy(&sa, a + 640 + 4 * l, 4);
            if (has_min) sum += (dw * da) * (float)isum + mw * sa;
            else sum += (dw * da) * (float)isum;
          }
          acc[(4 * rg + cg) * 16 + l] = sum;
        }
}

/* ---- scratch: one buffer per calling thread, only grows (as matmul.c's) */

static _Thread_local unsigned char *tl_buf;
static _Thread_local size_t tl_cap;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static void buf_free(void *p) { free(p); }
static void key_init(void) { (void)pthread_key_create(&g_key, buf_free); }

static unsigned char *scratch(size_t n) {
  if (n <= tl_cap) return tl_buf;
  pthread_once(&g_once, key_init);
  unsigned char *p = realloc(tl_buf, n);
  if (!p) return NULL;
  tl_buf = p;
  tl_cap = n;
  (void)pthread_setspecific(g_key, p);
  return p;
}

typedef void (*tile_fn)(const uint8_t *, int, const uint8_t *, int, int64_t, int64_t, int64_t, int, float *);

typedef struct gq_task {
  const wtype *wt;
  const qlm_type_traits *at; /* the weight type's traits (its quantize_act) */
  const qlm_mat *W;
  const float *X;
  int64_t T, nb, n_ag;       /* activation rows, blocks per row, activation groups (T padded to 16) */
  float *Y;
  uint8_t *act;              /* n_ag * nb * ABLK */
  uint8_t *qtmp;             /* per thread: 4 quantized activation rows (qrow bytes each) */
  size_t qrow;
  uint8_t *wbuf;             /* per thread: CHUNK_ROWS / 4 weight groups */
  size_t wchunk;             /* bytes of one thread's wbuf */
  tile_fn tile;
  int q512;                  /* AVX-512 activation quantizer */
} gq_task;

static void task_act(void *arg, int ith, int nth) {
  const gq_task *t = arg;
  uint8_t *q = t->qtmp + (size_t)ith * 4 * t->qrow;
  size_t gbytes = (size_t)t->nb * QLM_GQ_ABLK;
  for (int64_t g = ith; g < t->n_ag; g += nth) {
    const uint8_t *qa[4];
    int n = 0;
    for (int c = 0; c < 4 && 4 * g + c < t->T; c++, n++) {
      const float *x = t->X + (4 * g + c) * t->W->cols;
      uint8_t *qc = q + (size_t)c * t->qrow;
      if (t->q512 && is_k(t->wt) && t->at->quantize_act == qlm_quantize_q8_k)
        qlm_quantize_q8_k_avx512(x, qc, t->W->cols); /* kernels/qdot.h: the scalar quantizer's bytes */
      else if (t->q512) qlm_gemm_q_quantize_avx512(x, qc, t->W->cols, t->wt->act_type == QLM_TYPE_Q8_1);
      else t->at->quantize_act(x, qc, t->W->cols);
      qa[c] = qc;
    }
    repack_act(t->wt, qa, n, t->nb, t->act + (size_t)g * gbytes, t->q512); /* rows past T: d = 0, add nothing */
  }
}

/* Blocks per pass over a chunk of rows: 4 activation groups x K_BLOCKS blocks (22 KiB) stay in
 * L1 while all the chunk's weight groups go past them. */
#define K_BLOCKS 8

static void task_gemm(void *arg, int ith, int nth) {
  const gq_task *t = arg;
  const qlm_mat *W = t->W;
  int64_t nbk = (W->rows + ROW_GRAIN - 1) / ROW_GRAIN;
  int64_t r0 = nbk * ith / nth * ROW_GRAIN, r1 = nbk * (ith + 1) / nth * ROW_GRAIN;
  if (r1 > W->rows) r1 = W->rows;
  uint8_t *wb = t->wbuf + (size_t)ith * t->wchunk;
  size_t wg = (size_t)t->nb * QLM_GQ_WBLK, ag = (size_t)t->nb * QLM_GQ_ABLK;
  float acc[CHUNK_ROWS / 8][128]; /* per pair of weight groups: [4 rg + cg][16 lanes] */
  for (int64_t c0 = r0; c0 < r1; c0 += CHUNK_ROWS) {
    int64_t cn = r1 - c0 < CHUNK_ROWS ? r1 - c0 : CHUNK_ROWS;
    int ngr = (int)((cn + 3) / 4);
    for (int g = 0; g < ngr; g++) {
      int64_t n = cn - 4 * g < 4 ? cn - 4 * g : 4;
      repack_wgroup(t->wt, W, c0 + 4 * g, (int)n, t->nb, wb + (size_t)g * wg, t->q512);
    }
    for (int64_t a0 = 0; a0 < t->n_ag; a0 += TILE_ACTS / 4) {
      int ncg = t->n_ag - a0 < TILE_ACTS / 4 ? (int)(t->n_ag - a0) : TILE_ACTS / 4;
      memset(acc, 0, sizeof acc);
      for (int64_t k0 = 0; k0 < t->nb; k0 += K_BLOCKS) {
        int64_t k1 = t->nb - k0 < K_BLOCKS ? t->nb : k0 + K_BLOCKS;
        for (int g = 0; g < ngr; g += 2)
          t->tile(wb + (size_t)g * wg, ngr - g < 2 ? ngr - g : 2, t->act + (size_t)a0 * ag, ncg, t->nb, k0, k1,
                  t->wt->has_min, acc[g / 2]);
      }
      /* lane 4c + r of acc[g/2][(4 rg + cg) * 16] -> Y[4 (a0 + cg) + c][c0 + 4 (g + rg) + r] */
      for (int g = 0; g < ngr; g++)
        for (int cg = 0; cg < ncg; cg++)
          for (int c = 0; c < 4; c++) {
            int64_t ti = 4 * (a0 + cg) + c, rr = c0 + 4 * g, n = cn - 4 * g < 4 ? cn - 4 * g : 4;
            const float *src = &acc[g / 2][(4 * (g % 2) + cg) * 16 + 4 * c];
            float *dst = t->Y + ti * W->rows + rr;
            if (ti >= t->T) continue;
            if (n == 4) memcpy(dst, src, 4 * sizeof(float)); /* fixed size: inlined, no call */
            else
              for (int64_t i = 0; i < n; i++) dst[i] = src[i];
          }
    }
  }
}

int qlm_gemm_q(const qlm_mat *W, const float *X, int64_t T, float *Y, qlm_pool *pool, qlm_simd_level level) {
  const wtype *wt = wtype_of(W->type);
  const qlm_type_traits *wtr = qlm_type_traits_of(W->type);
  if (!wt || !wtr || T <= 0 || W->rows <= 0 || W->cols <= 0 || W->cols % QK != 0 ||
      (is_k(wt) && W->cols % 256 != 0) || W->row_bytes < qlm_type_row_bytes(W->type, W->cols) || T > (1 << 24))
    return 0;
  /* activations are quantized by the weight type's own quantize_act, to the layout expected here */
  if (wtr->vec_dot_type != wt->act_type || !wtr->quantize_act) return 0;
  if ((double)W->rows * (double)W->cols * (double)T < MIN_PARALLEL_WORK) pool = NULL;
  int nth = qlm_pool_size(pool);
  gq_task t = {.wt = wt, .at = wtr, .W = W, .X = X, .T = T, .nb = W->cols / QK, .n_ag = (T + 15) / 16 * 4, .Y = Y};
  t.q512 = clamp(level) == QLM_SIMD_AVX512;
  t.tile = !qlm_gemm_q_fast(W->type, level) ? qlm_gemm_q_tile_scalar
           : has_vnni(level)                ? qlm_gemm_q_tile_avx512vnni
                                            : qlm_gemm_q_tile_avx2;
  size_t act_bytes, qrow_all, wall, total;
  t.qrow = qlm_type_row_bytes(wt->act_type, W->cols);
  if (t.qrow == 0 || qlm_mul_overflow((size_t)t.n_ag, (size_t)t.nb, &act_bytes) ||
      qlm_mul_overflow(act_bytes, QLM_GQ_ABLK, &act_bytes) ||
      qlm_mul_overflow((size_t)CHUNK_ROWS / 4, (size_t)t.nb, &t.wchunk) ||
      qlm_mul_overflow(t.wchunk, QLM_GQ_WBLK, &t.wchunk) || qlm_mul_overflow(t.wchunk, (size_t)nth, &wall) ||
      qlm_mul_overflow(t.qrow, (size_t)nth * 4, &qrow_all) || qlm_add_overflow(act_bytes, wall, &total) ||
      qlm_add_overflow(total, qrow_all + 64, &total))
    return 0;
  uint8_t *buf = scratch(total);
  if (!buf) return 0;
  t.act = buf;
  t.wbuf = buf + act_bytes;
  t.qtmp = t.wbuf + wall;
  qlm_pool_run(pool, task_act, &t);
  qlm_pool_run(pool, task_gemm, &t);
  return 1;
}
