/* forward.c — the KV-cache state and the batched transformer forward pass.
 *
 * A batch of T rows (tokens of one or more sequences) goes through every layer together, so
 * each weight matrix is applied once to all T rows (qlm_matmul with T rows: BLAS for prefill,
 * our GEMV kernels for T == 1).  Per layer:
 *   llama/qwen2: x += Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n) with n = rmsnorm(x)
 *                x += Wdown·(silu(Wgate·n) * Wup·n)          with n = rmsnorm(x)
 *   gpt2:        x += Wo·attn(...) + bo                      with n = layernorm(x), qkv biases
 *                x += Wdown·gelu(Wup·n + bup) + bdown        with n = layernorm(x)
 * then logits = Wout·norm(x) for the rows whose logits are wanted.
 * Keys and values are written to the cache at (seq, pos) before attention, so a row attends to
 * positions 0..pos of its own sequence whether they came in earlier calls or earlier in this batch. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "kernels/attn.h"
#include "kernels/bgemm.h"
#include "kernels/gemv.h"
#include "kernels/softmax.h"
#include "kernels/vexp.h"
#include "model/model.h"

struct qlm_state {
  const qlm_model *m;
  int n_seq, n_ctx, max_batch;
  int kv_dim;                  /* n_head_kv * head_dim */
  size_t seq_stride;           /* floats per sequence in a cache: n_layer * n_ctx * kv_dim */
  float *k_cache, *v_cache;    /* [n_seq][n_layer][n_ctx][kv_dim] */
  int *n_past;                 /* [n_seq] positions filled */
  int *batch_next;             /* [n_seq] scratch: next position expected in the batch, -1 = none yet */
  int32_t *seq_pos, *seq_id;   /* [max_batch] qlm_forward_seq's batch arrays */
  int8_t *seq_want;            /* [max_batch] */
  float *x;                    /* [B][n_embd] residual stream */
  float *xn;                   /* [B][n_embd] normalized input of a sub-layer */
  float *q;                    /* [B][n_head * head_dim] */
  float *k, *v;                /* [B][kv_dim] */
  float *att;                  /* [B][n_head * head_dim] attention output */
  float *tmp;                  /* [B][n_embd] sub-layer output before the residual add */
  float *hb, *hb2;             /* [B][n_ff] */
  float *xin;                  /* [B][n_ff + n_embd + n_head*hd] (more than any input width) a linear's transformed input (qlm_lin_in) */
  float *rope_cos, *rope_sin;  /* [B][n_rot / 2] */
  int32_t *rope_pos;           /* [B] the position row r of the rope table holds, -1 none (rope_table) */
  float *scores;               /* [n_threads][n_head / n_head_kv][n_ctx] attention weights per thread */
  qlm_pool *pool;
  qlm_attn_scores_fn att_scores; /* attention products (kernels/attn.h) */
  qlm_attn_pv_fn att_pv;
  bool gemm_att;               /* qlm_state_set_gemm_attention: one-sequence batches by BLAS */
  bool bf16;                   /* qlm_state_set_bf16: multi-row linear products, attention scores and weights·values in bf16 */
  qlm_bf16_cache bf16_cache;   /* their weights in bf16 (qlm_state_weights_changed clears it) */
  qlm_bf16 *vpack;             /* bf16 on: [n_head_kv][qlm_bgemm_packed_len(n_ctx, head_dim)] values, packed */
  qlm_bf16 *prows;             /* bf16 on: [n_threads][gatt_rows][pad2(n_ctx)] a block's attention weights */
  float *gsc;                  /* [n_threads][gatt_rows][n_ctx] its scores, then weights */
  qlm_bf16 *kpack;             /* bf16 on: [n_head_kv][qlm_bgemm_packed_len(head_dim, n_ctx)] keys, packed as B = Kᵀ */
  qlm_bf16 *qbf;               /* bf16 on: [B][n_head][pad2(head_dim)] the queries after rope, in bf16 (qkv_range) */
  int gatt_rows;               /* min(QLM_GATT_ROWS, max_batch): query rows per block */
};

int qlm_state_n_ctx(const qlm_state *s) { return s->n_ctx; }

static void free_att_bf16(qlm_state *s) {
  free(s->vpack), free(s->prows), free(s->kpack), free(s->qbf);
  s->vpack = s->prows = s->kpack = s->qbf = NULL;
}

void qlm_state_free(qlm_state *s) {
  if (!s) return;
  qlm_bf16_cache_clear(&s->bf16_cache);
  free_att_bf16(s);
  free(s->k_cache);
  free(s->v_cache);
  free(s->n_past);
  free(s->batch_next);
  free(s->seq_pos);
  free(s->seq_id);
  free(s->seq_want);
  free(s->x);
  free(s->xn);
  free(s->q);
  free(s->k);
  free(s->v);
  free(s->att);
  free(s->tmp);
  free(s->hb);
  free(s->hb2);
  free(s->xin);
  free(s->rope_cos);
  free(s->rope_sin);
  free(s->rope_pos);
  free(s->scores);
  free(s->gsc);
  qlm_pool_free(s->pool);
  free(s);
}

int qlm_state_new(const qlm_model *m, int n_seq, int n_ctx, int max_batch, int n_threads, qlm_state **out,
                  qlm_error *err) {
  *out = NULL;
  const qlm_hparams *hp = &m->hp;
  if (n_ctx <= 0) n_ctx = hp->n_ctx;
  if (n_ctx <= 0) return qlm_fail(err, QLM_EUSAGE, "context size must be positive (the model does not give one)");
  if (hp->arch == QLM_ARCH_GPT2 && n_ctx > hp->n_ctx)
    return qlm_fail(err, QLM_EUSAGE, "context size %d exceeds the %d learned positions of this gpt2 model", n_ctx,
                    hp->n_ctx);
  if (n_ctx > (1 << 24)) return qlm_fail(err, QLM_EUSAGE, "context size %d is too large", n_ctx);
  if (n_seq < 1 || n_seq > 65536) return qlm_fail(err, QLM_EUSAGE, "number of sequences %d is not in [1, 65536]", n_seq);
  qlm_state_defaults(hp, &n_ctx, &max_batch, &n_threads); /* n_ctx was set above the same way */
  if (max_batch > 65536) return qlm_fail(err, QLM_EUSAGE, "batch size %d is larger than 65536", max_batch);
  if (n_threads > 1024) return qlm_fail(err, QLM_EUSAGE, "thread count %d is larger than 1024", n_threads);

  qlm_state *s = qlm_calloc(1, sizeof *s, "state", err);
  if (!s) return QLM_ENOMEM;
  s->m = m;
  s->n_seq = n_seq;
  s->n_ctx = n_ctx;
  s->max_batch = max_batch;
  s->kv_dim = hp->n_head_kv * hp->head_dim;
  s->att_scores = qlm_attn_scores_for(qlm_cpu_simd_level());
  s->att_pv = qlm_attn_pv_for(qlm_cpu_simd_level());
  int rc = QLM_ENOMEM;
  if (qlm_mul_overflow((size_t)hp->n_layer * (size_t)n_ctx, (size_t)s->kv_dim, &s->seq_stride)) {
    rc = qlm_fail(err, QLM_ELIMIT, "state: KV cache size overflows");
    goto fail;
  }
  /* every buffer from the one table the memory check also reads (model.h qlm_state_buffers) */
  qlm_state_buf bufs[QLM_SB_COUNT];
  void *p[QLM_SB_COUNT];
  qlm_state_buffers(hp, n_seq, n_ctx, max_batch, n_threads, bufs);
  if ((rc = qlm_state_alloc_buffers(bufs, p, NULL, err))) goto fail;
  s->k_cache = p[QLM_SB_K_CACHE], s->v_cache = p[QLM_SB_V_CACHE];
  s->n_past = p[QLM_SB_N_PAST], s->batch_next = p[QLM_SB_BATCH_NEXT];
  s->seq_pos = p[QLM_SB_SEQ_POS], s->seq_id = p[QLM_SB_SEQ_ID], s->seq_want = p[QLM_SB_SEQ_WANT];
  s->x = p[QLM_SB_X], s->xn = p[QLM_SB_XN], s->tmp = p[QLM_SB_TMP];
  s->q = p[QLM_SB_Q], s->att = p[QLM_SB_ATT], s->k = p[QLM_SB_K], s->v = p[QLM_SB_V];
  s->hb = p[QLM_SB_HB], s->hb2 = p[QLM_SB_HB2], s->xin = p[QLM_SB_XIN];
  s->rope_cos = p[QLM_SB_ROPE_COS], s->rope_sin = p[QLM_SB_ROPE_SIN], s->scores = p[QLM_SB_SCORES];
  s->rope_pos = p[QLM_SB_ROPE_POS];
  for (int r = 0; r < max_batch; r++) s->rope_pos[r] = -1;
  s->gsc = p[QLM_SB_GATT_SCORES];
  s->gatt_rows = max_batch < QLM_GATT_ROWS ? max_batch : QLM_GATT_ROWS;
  s->gemm_att = true;
  qlm_blas_single_threaded(); /* the BLAS attention runs inside the pool's threads */
  rc = QLM_ENOMEM;
  s->pool = qlm_pool_new(n_threads);
  if (!s->pool) {
    rc = qlm_fail(err, QLM_ENOMEM, "state: cannot create a pool of %d threads", n_threads);
    goto fail;
  }
  *out = s;
  return QLM_OK;
fail:
  qlm_state_free(s);
  return rc;
}

void qlm_state_clear(qlm_state *s, int seq) {
  if (s && seq >= 0 && seq < s->n_seq) s->n_past[seq] = 0;
}

/* ---- element-wise pieces ---- */

/* sum of x[i]^2 in double, in 8 lanes (i mod 8) added pairwise at the end: one serial chain of n
 * dependent adds was ~2% of a calibration forward; the lanes let the compiler vectorize without
 * reassociating, so every SIMD level computes the same sum (each square is exact in double). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static double sum_squares(const float *x, int n) {
  double lane[8] = {0};
  int n8 = n & ~7;
  for (int i = 0; i < n8; i += 8)
    for (int l = 0; l < 8; l++) lane[l] += (double)x[i + l] * x[i + l];
  for (int i = n8; i < n; i++) lane[i - n8] += (double)x[i] * x[i];
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

static void rmsnorm(float *o, const float *x, const float *w, int n, float eps) {
  double ss = sum_squares(x, n);
  float scale = (float)(1.0 / sqrt(ss / n + eps));
  for (int i = 0; i < n; i++) o[i] = x[i] * scale * w[i];
}

static void layernorm(float *o, const float *x, const float *w, const float *b, int n, float eps) {
  double mean = 0.0, var = 0.0;
  for (int i = 0; i < n; i++) mean += x[i];
  mean /= n;
  for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
  float scale = (float)(1.0 / sqrt(var / n + eps));
  for (int i = 0; i < n; i++) o[i] = (float)(x[i] - mean) * scale * w[i] + b[i];
}

/* ---- row-parallel element-wise work ----
 * Norms, biases, rope, the cache stores, residual adds and activations treat each row on its
 * own, so a prefill batch's rows are split into contiguous ranges over the pool's threads: every
 * row gets the same arithmetic as on one thread, hence the same bits at any thread count.  Done
 * serially they were ~5% of a 2-thread calibration forward's CPU time (8 x 2048 tokens), spent
 * on one core while the other waited. */
#define PAR_MIN_ROWS 8 /* fewer rows (decode) stay on the calling thread: a dispatch costs ~µs */

typedef void (*rows_fn)(const void *job, int r0, int r1);

typedef struct rows_par {
  rows_fn fn;
  const void *job;
  int T;
} rows_par;

static void rows_par_worker(void *arg, int ith, int nth) {
  const rows_par *p = arg;
  int r0 = (int)((int64_t)p->T * ith / nth), r1 = (int)((int64_t)p->T * (ith + 1) / nth);
  if (r1 > r0) p->fn(p->job, r0, r1);
}

/* fn(job, r0, r1) over rows [0, T), split over s's pool when there are enough rows. */
static void for_rows(qlm_state *s, int T, rows_fn fn, const void *job) {
  if (T < PAR_MIN_ROWS) {
    fn(job, 0, T);
    return;
  }
  rows_par p = {fn, job, T};
  qlm_pool_run(s->pool, rows_par_worker, &p);
}

typedef struct norm_job {
  const qlm_model *m;
  float *o;
  const float *x, *w, *b; /* b: gpt2's LayerNorm bias only */
} norm_job;

static void norm_range(const void *job, int r0, int r1) {
  const norm_job *j = job;
  int n = j->m->hp.n_embd;
  float eps = j->m->hp.norm_eps;
  for (int i = r0; i < r1; i++) {
    float *o = j->o + (size_t)i * n;
    const float *x = j->x + (size_t)i * n;
    if (j->m->hp.arch == QLM_ARCH_GPT2) layernorm(o, x, j->w, j->b, n, eps);
    else rmsnorm(o, x, j->w, n, eps);
  }
}

/* T rows of x -> o with the model's norm (w, b: b only for gpt2's LayerNorm). */
static void norm_rows(qlm_state *s, float *o, const float *x, int T, const float *w, const float *b) {
  norm_job j = {s->m, o, x, w, b};
  for_rows(s, T, norm_range, &j);
}

typedef struct residual_job {
  float *x;
  const float *y, *b; /* b may be NULL */
  int n;
} residual_job;

static void residual_range(const void *job, int r0, int r1) {
  const residual_job *j = job;
  for (int i = r0; i < r1; i++) {
    float *x = j->x + (size_t)i * j->n;
    const float *y = j->y + (size_t)i * j->n;
    if (j->b)
      for (int k = 0; k < j->n; k++) x[k] += y[k] + j->b[k];
    else
      for (int k = 0; k < j->n; k++) x[k] += y[k];
  }
}

/* x [T x n] += y + b (b may be NULL): a sub-layer's output and bias into the residual stream. */
static void add_residual(qlm_state *s, float *x, const float *y, const float *b, int T, int n) {
  residual_job j = {x, y, b, n};
  for_rows(s, T, residual_range, &j);
}

static void add_bias_row(float *y, const float *b, int n) {
  if (b)
    for (int j = 0; j < n; j++) y[j] += b[j];
}

/* GPT-2's GELU, tanh approximation. */
static float gelu(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

/* cos/sin of pos * theta^(-2i/n_rot), i < n_rot/2, for every row (shared by all layers).  A row
 * whose table already holds its position is kept: the calibration's samples all start at 0, and
 * the staged pass asks for the table once per layer and sample (pow/sin/cos were ~1% of its time). */
static void rope_table(qlm_state *s, const qlm_batch *b) {
  const qlm_hparams *hp = &s->m->hp;
  int half = hp->n_rot / 2;
  for (int r = 0; r < b->n; r++) {
    if (s->rope_pos[r] == b->pos[r]) continue;
    for (int i = 0; i < half; i++) {
      double freq = pow((double)hp->rope_theta, -2.0 * i / hp->n_rot);
      double a = (double)b->pos[r] * freq;
      s->rope_cos[(size_t)r * half + i] = (float)cos(a);
      s->rope_sin[(size_t)r * half + i] = (float)sin(a);
    }
    s->rope_pos[r] = b->pos[r];
  }
}

/* Rotate n_heads heads of head_dim in one row.  INTERLEAVED rotates pairs (2i, 2i+1) (GGUF llama,
 * llama2.c); NEOX pairs (i, i + n_rot/2) (HF layout).  Dims past n_rot are left alone. */
static void rope_row(const qlm_hparams *hp, float *v, int n_heads, const float *cs, const float *sn) {
  int half = hp->n_rot / 2;
  for (int h = 0; h < n_heads; h++) {
    float *x = v + (size_t)h * hp->head_dim;
    for (int i = 0; i < half; i++) {
      int a = hp->rope_style == QLM_ROPE_NEOX ? i : 2 * i;
      int b = hp->rope_style == QLM_ROPE_NEOX ? i + half : 2 * i + 1;
      float x0 = x[a], x1 = x[b];
      x[a] = x0 * cs[i] - x1 * sn[i];
      x[b] = x0 * sn[i] + x1 * cs[i];
    }
  }
}

/* row[0..n) -> e^(row - max) in place; returns the sum.  16 lanes kept apart so the compiler
 * vectorizes without reassociating. */
__attribute__((target_clones("avx512f", "default"))) static float softmax_row(float *row, int n) {
  float m = qlm_row_max(row, n), sum[16] = {0};
  int n16 = n & ~15;
  for (int i = 0; i < n16; i += 16)
    for (int l = 0; l < 16; l++) {
      float e = qlm_exp_nonpos(row[i + l] - m);
      row[i + l] = e;
      sum[l] += e;
    }
  float tot = 0.0f;
  for (int i = n16; i < n; i++) {
    row[i] = qlm_exp_nonpos(row[i] - m);
    tot += row[i];
  }
  for (int l = 0; l < 16; l++) tot += sum[l];
  return tot;
}

/* ---- attention ---- */

typedef struct att_task {
  qlm_state *s;
  const qlm_batch *b;
  int layer;
  float *out;  /* [T x n_head*head_dim] the attention outputs */
} att_task;

/* One (row, kv head, part) item: for query heads [h0, h1) of those sharing that key/value head
 * (GQA), softmax(q·K^T / sqrt(hd)) V over positions 0..pos of the row's sequence.  sc holds one
 * row of n_ctx scores per query head. */
static void attend(qlm_state *s, const qlm_batch *b, int layer, int r, int kvh, int h0, int h1, float *sc,
                   float *out) {
  const qlm_hparams *hp = &s->m->hp;
  int hd = hp->head_dim, gs = h1 - h0, pos = b->pos[r], nk = pos + 1;
  size_t qd = (size_t)hp->n_head * hd, ldsc = (size_t)s->n_ctx;
  size_t q0 = (size_t)r * qd + ((size_t)kvh * (size_t)(hp->n_head / hp->n_head_kv) + (size_t)h0) * hd;
  const float *q = s->q + q0;
  size_t base = (size_t)b->seq[r] * s->seq_stride + (size_t)layer * s->n_ctx * s->kv_dim + (size_t)kvh * hd;
  const float *K = s->k_cache + base, *V = s->v_cache + base;
  s->att_scores(q, gs, hd, K, (size_t)s->kv_dim, nk, 1.0f / sqrtf((float)hd), sc, ldsc);
  float *o = out + q0;
  for (int j0 = 0; j0 < gs; j0 += 8) { /* 8 heads' 1 / denominators at a time */
    int g = gs - j0 < 8 ? gs - j0 : 8;
    float inv[8];
    for (int j = 0; j < g; j++) inv[j] = 1.0f / softmax_row(sc + (size_t)(j0 + j) * ldsc, nk); /* att_pv: p[t] * inv */
    s->att_pv(sc + (size_t)j0 * ldsc, inv, g, ldsc, V, (size_t)s->kv_dim, nk, hd, o + (size_t)j0 * hd);
  }
}

static void att_worker(void *arg, int ith, int nth) {
  const att_task *t = arg;
  int n_kv = t->s->m->hp.n_head_kv, gs = t->s->m->hp.n_head / n_kv;
  float *sc = t->s->scores + (size_t)ith * (size_t)gs * (size_t)t->s->n_ctx;
  /* few (row, kv head) items (decode): each group's query heads are split into parts, one a head,
   * so all threads get work; otherwise whole groups, sharing each K/V row among their heads */
  int parts = t->b->n * n_kv < 4 * nth ? gs : 1, per = gs / parts, n_items = t->b->n * n_kv * parts;
  /* items interleaved over threads: rows at later positions cost more, striding balances them */
  for (int j = ith; j < n_items; j += nth) {
    int part = j % parts, g = j / parts;
    attend(t->s, t->b, t->layer, g / n_kv, g % n_kv, part * per, part * per + per, sc, t->out);
  }
}

/* ---- attention by BLAS (qlm_state_set_gemm_attention; on by default) ----
 * For a batch of one sequence (rows at consecutive positions), each (query head, block of
 * QLM_GATT_ROWS rows) is two matrix products: S = scale * Q_blk K^T over the keys 0..last position of
 * the block (sgemm), a masked softmax per row (row r keeps keys t <= pos[r]), and O_blk = P V
 * (sgemm), scaled by 1 / (row sum).  Products are f32 with BLAS's summation order (the exact-order
 * kernels above accumulate scores in double): a relative difference of ~1e-6, far below the fp16
 * forward of the reference GPTQ/AWQ implementations and of llama.cpp's f16 KV cache.  The work
 * (2 T^2 hd per head, a third of a SmolLM2 layer at 2048 tokens) then runs near the FMA peak
 * instead of a row at a time: SmolLM2-135M Q4_0 pp512 on 2 Zen 4 threads went from ~760 to
 * ~980 tokens/s with this and the vectorized SiLU (kernels/vexp.h). */


typedef struct gatt_task {
  qlm_state *s;
  const qlm_batch *b;
  int layer;
  int nk_all;   /* keys in the cache for this batch (its last position + 1): what kpack and vpack hold */
  float *out;   /* [T x n_head*head_dim] the attention outputs */
} gatt_task;

/* Offset in the K and V caches of key/value head kvh's first position for t's sequence and layer. */
static size_t kv_head_base(const gatt_task *t, int kvh) {
  const qlm_state *s = t->s;
  return (size_t)t->b->seq[0] * s->seq_stride + (size_t)t->layer * s->n_ctx * s->kv_dim +
         (size_t)kvh * (size_t)s->m->hp.head_dim;
}

/* S [m x nk] = scale · q kᵀ for query rows [r0, r0 + m) of head h (S's rows nk apart): f32 by
 * BLAS, or under bf16 by kernels/bgemm.h from the queries qkv_range rounded to bf16 and the keys
 * packed by pack_worker (scale = 1/sqrt(head_dim) applied to the f32 sums).  bf16 q and k (2^-9
 * relative each) move a score s by up to ~2^-8 |s|, which exp makes a relative change of its
 * weight: the attention outputs move more than with f32 scores (tests/test_calib.c), as in a
 * bf16 forward of torch, 4x the fp16 of the reference GPTQ/AWQ implementations.  SmolLM2-135M
 * GPTQ 4-bit g128 on 16 x 512 C4 tokens, WikiText-2 PPL (hf-window, 40 windows), seeds 0-3: f32
 * scores 31.21 31.07 29.48 31.39 (mean 30.79), bf16 30.82 29.74 29.62 30.91 (30.27): within the
 * seeds' spread.  On SmolLM2's shapes the bf16 product runs at 2.3x sgemm's rate, and 128 x
 * 2048-token GPTQ calibration went from 389.5 to 349.6 s on 2 Zen 4 threads (bench/gptq-speed). */
static void gatt_scores(const gatt_task *t, int h, int r0, int m, int nk, float *S) {
  qlm_state *s = t->s;
  const qlm_hparams *hp = &s->m->hp;
  int hd = hp->head_dim, qd = hp->n_head * hd, kvh = h / (hp->n_head / hp->n_head_kv);
  float scale = 1.0f / sqrtf((float)hd);
  if (s->bf16) {
    int64_t ldq = hp->n_head * qlm_pad2(hd);
    const qlm_bf16 *qr = s->qbf + r0 * ldq + h * qlm_pad2(hd);
    const qlm_bf16 *kp = s->kpack + (size_t)kvh * (size_t)qlm_bgemm_packed_len(hd, s->n_ctx);
    qlm_bgemm_op(qr, ldq, kp, hd, S, nk, m, nk, hd, scale);
    return;
  }
  const float *q = s->q + (size_t)r0 * qd + (size_t)h * hd;
  size_t base = kv_head_base(t, kvh);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, hd, scale, q, qd, s->k_cache + base, s->kv_dim, 0.0f, S,
              nk);
}

/* This thread's bf16 attention weights: gatt_rows rows of pad2(n_ctx). */
static qlm_bf16 *gatt_prows(const gatt_task *t, int ith) {
  return t->s->prows + (size_t)ith * (size_t)t->s->gatt_rows * (size_t)qlm_pad2(t->s->n_ctx);
}

/* o [m rows, qd apart] = P V for head h's weights: in f32 P = S [m x nk] (zeros past each row's
 * keys); in bf16 gatt_prows' rows, pad2(nk) apart, against the values packed for all nk_all keys. */
static void gatt_values(const gatt_task *t, int ith, int h, int m, int nk, const float *S, float *o) {
  qlm_state *s = t->s;
  const qlm_hparams *hp = &s->m->hp;
  int hd = hp->head_dim, qd = hp->n_head * hd, kvh = h / (hp->n_head / hp->n_head_kv);
  if (s->bf16) {
    const qlm_bf16 *vp = s->vpack + (size_t)kvh * (size_t)qlm_bgemm_packed_len(s->n_ctx, hd);
    qlm_bgemm_op(gatt_prows(t, ith), qlm_pad2(nk), vp, t->nk_all, o, qd, m, hd, nk, 1.0f);
    return;
  }
  size_t base = kv_head_base(t, kvh);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, nk, 1.0f, S, nk, s->v_cache + base, s->kv_dim, 0.0f, o,
              qd);
}

static void gatt_worker(void *arg, int ith, int nth) {
  const gatt_task *t = arg;
  qlm_state *s = t->s;
  const qlm_batch *b = t->b;
  const qlm_hparams *hp = &s->m->hp;
  int hd = hp->head_dim, nh = hp->n_head, T = b->n;
  int qb = s->gatt_rows, qd = nh * hd, nblk = (T + qb - 1) / qb;
  float *S = s->gsc + (size_t)ith * (size_t)qb * (size_t)s->n_ctx;
  /* items (row block, head), heads fastest: a block's heads cost the same, later blocks more */
  for (int it = ith; it < nblk * nh; it += nth) {
    int h = it % nh, r0 = (it / nh) * qb, r1 = r0 + qb < T ? r0 + qb : T, m = r1 - r0;
    int nk = b->pos[r1 - 1] + 1;
    gatt_scores(t, h, r0, m, nk, S);
    float inv[QLM_GATT_ROWS];
    for (int i = 0; i < m; i++) {
      float *row = S + (size_t)i * nk;
      int n = b->pos[r0 + i] + 1; /* causal: keys after the row's position get weight 0 */
      if (s->bf16) {
        int nk2 = (int)qlm_pad2(nk);
        inv[i] = 1.0f / qlm_softmax_bf16(row, n, gatt_prows(t, ith) + (size_t)i * (size_t)nk2, nk2);
        continue;
      }
      inv[i] = 1.0f / softmax_row(row, n);
      memset(row + n, 0, (size_t)(nk - n) * sizeof *row);
    }
    float *o = t->out + (size_t)r0 * qd + (size_t)h * hd;
    gatt_values(t, ith, h, m, nk, S, o);
    for (int i = 0; i < m; i++)
      for (int d = 0; d < hd; d++) o[(size_t)i * qd + d] *= inv[i];
  }
}

/* bf16 attention: every key/value head's cached keys (as Kᵀ) and values at positions [0, nk_all)
 * packed (kernels/bgemm.h), one head per thread at a time. */
static void pack_worker(void *arg, int ith, int nth) {
  const gatt_task *t = arg;
  qlm_state *s = t->s;
  const qlm_hparams *hp = &s->m->hp;
  int hd = hp->head_dim;
  for (int kvh = ith; kvh < hp->n_head_kv; kvh += nth) {
    size_t base = kv_head_base(t, kvh);
    qlm_bgemm_pack(s->v_cache + base, s->kv_dim, t->nk_all, hd,
                   s->vpack + (size_t)kvh * (size_t)qlm_bgemm_packed_len(s->n_ctx, hd));
    qlm_bgemm_pack_t(s->k_cache + base, s->kv_dim, hd, 0, t->nk_all,
                     s->kpack + (size_t)kvh * (size_t)qlm_bgemm_packed_len(hd, s->n_ctx));
  }
}

/* Whether batch b can take the BLAS attention: switched on, and all rows of one sequence. */
static bool gemm_attention_fits(const qlm_state *s, const qlm_batch *b) {
  if (!s->gemm_att || b->n < 2) return false;
  for (int r = 1; r < b->n; r++)
    if (b->seq[r] != b->seq[0]) return false;
  return true;
}

int qlm_state_set_bf16(qlm_state *s, bool on, qlm_error *err) {
  s->bf16 = false;
  qlm_bf16_cache_clear(&s->bf16_cache);
  free_att_bf16(s);
  if (!on) return QLM_OK;
  const qlm_hparams *hp = &s->m->hp;
  size_t nkv = (size_t)hp->n_head_kv, nt = (size_t)qlm_pool_size(s->pool), rows = (size_t)s->gatt_rows;
  size_t ctx2 = (size_t)qlm_pad2(s->n_ctx);
  s->vpack = qlm_malloc(nkv * (size_t)qlm_bgemm_packed_len(s->n_ctx, hp->head_dim) * sizeof(qlm_bf16), "bf16 values", err);
  s->prows = qlm_malloc(nt * rows * ctx2 * sizeof(qlm_bf16), "bf16 attention weights", err);
  s->kpack = qlm_malloc(nkv * (size_t)qlm_bgemm_packed_len(hp->head_dim, s->n_ctx) * sizeof(qlm_bf16), "bf16 keys", err);
  s->qbf = qlm_malloc((size_t)s->max_batch * (size_t)hp->n_head * (size_t)qlm_pad2(hp->head_dim) * sizeof(qlm_bf16),
                      "bf16 queries", err);
  if (!s->vpack || !s->prows || !s->kpack || !s->qbf) {
    free_att_bf16(s);
    return QLM_ENOMEM;
  }
  s->bf16 = true;
  return QLM_OK;
}

void qlm_state_weights_changed(qlm_state *s) { qlm_bf16_cache_clear(&s->bf16_cache); }

struct qlm_pool *qlm_state_pool(qlm_state *s) { return s->pool; }

int qlm_state_set_gemm_attention(qlm_state *s, bool on, qlm_error *err) {
  (void)err; /* its buffer is the state's (QLM_SB_GATT_SCORES) */
  s->gemm_att = on;
  return QLM_OK;
}

/* ---- the pass ---- */

static int check_batch(const qlm_model *m, qlm_state *s, const qlm_batch *b, qlm_error *err) {
  if (b->n < 1 || b->n > s->max_batch)
    return qlm_fail(err, QLM_EUSAGE, "batch of %d rows: must be 1..%d (the state's max_batch)", b->n, s->max_batch);
  if (!b->token || !b->pos || !b->seq) return qlm_fail(err, QLM_EUSAGE, "batch: token, pos and seq arrays are required");
  for (int i = 0; i < s->n_seq; i++) s->batch_next[i] = -1;
  for (int i = 0; i < b->n; i++) {
    int32_t tok = b->token[i], pos = b->pos[i], seq = b->seq[i];
    if (tok < 0 || tok >= m->hp.n_vocab)
      return qlm_fail(err, QLM_EUSAGE, "batch row %d: token id %d is out of the vocabulary (0..%d)", i, tok,
                      m->hp.n_vocab - 1);
    if (seq < 0 || seq >= s->n_seq)
      return qlm_fail(err, QLM_EUSAGE, "batch row %d: sequence %d is out of range (0..%d)", i, seq, s->n_seq - 1);
    if (pos < 0 || pos >= s->n_ctx)
      return qlm_fail(err, QLM_EUSAGE, "batch row %d: position %d is out of the context (0..%d)", i, pos,
                      s->n_ctx - 1);
    int want = s->batch_next[seq];
    if (want >= 0 && pos != want)
      return qlm_fail(err, QLM_EUSAGE, "batch row %d: sequence %d position %d, expected %d (consecutive positions)", i,
                      seq, pos, want);
    if (want < 0 && pos > s->n_past[seq])
      return qlm_fail(err, QLM_EUSAGE, "batch row %d: sequence %d position %d leaves a gap: only %d positions are cached",
                      i, seq, pos, s->n_past[seq]);
    s->batch_next[seq] = pos + 1;
  }
  return QLM_OK;
}

/* Rows [r0, r1) of q, k, v after their product: biases, rope (at the rows' rope_table entries),
 * then k and v into the cache at (seq, pos). */
typedef struct qkv_job {
  qlm_state *s;
  const qlm_batch *b;
  const qlm_layer *L;
  int layer;
  bool q_bf16;  /* also the queries in bf16 (s->qbf): the bf16 BLAS attention reads them */
} qkv_job;

/* One row's queries [n_head * head_dim] into bf16 [n_head][pad2(head_dim)] (the X rows of the bf16
 * scores: an odd head_dim's pad zero). */
static void q_to_bf16(const qlm_hparams *hp, const float *q, qlm_bf16 *out) {
  int hd = hp->head_dim, hd2 = (int)qlm_pad2(hd);
  if (hd2 == hd) {
    qlm_bf16_from_f32(q, (int64_t)hp->n_head * hd, out, (int64_t)hp->n_head * hd);
    return;
  }
  for (int h = 0; h < hp->n_head; h++) qlm_bf16_from_f32(q + (size_t)h * hd, hd, out + (size_t)h * hd2, hd2);
}

static void qkv_range(const void *job, int r0, int r1) {
  const qkv_job *j = job;
  qlm_state *s = j->s;
  const qlm_hparams *hp = &s->m->hp;
  int QD = hp->n_head * hp->head_dim, half = hp->n_rot / 2;
  size_t kvd = (size_t)s->kv_dim;
  for (int r = r0; r < r1; r++) {
    float *q = s->q + (size_t)r * QD, *k = s->k + r * kvd, *v = s->v + r * kvd;
    add_bias_row(q, j->L->bq, QD);
    add_bias_row(k, j->L->bk, s->kv_dim);
    add_bias_row(v, j->L->bv, s->kv_dim);
    if (hp->rope_style != QLM_ROPE_NONE) {
      const float *cs = s->rope_cos + (size_t)r * half, *sn = s->rope_sin + (size_t)r * half;
      rope_row(hp, q, hp->n_head, cs, sn);
      rope_row(hp, k, hp->n_head_kv, cs, sn);
    }
    size_t off = (size_t)j->b->seq[r] * s->seq_stride + ((size_t)j->layer * s->n_ctx + (size_t)j->b->pos[r]) * kvd;
    memcpy(s->k_cache + off, k, kvd * sizeof(float));
    memcpy(s->v_cache + off, v, kvd * sizeof(float));
    if (j->q_bf16) q_to_bf16(hp, q, s->qbf + (size_t)r * (size_t)hp->n_head * (size_t)qlm_pad2(hp->head_dim));
  }
}

typedef struct hook_fn {
  qlm_linear_hook fn;
  void *ctx;
} hook_fn;

static void call_hook(const hook_fn *h, int il, qlm_linear_slot slot, const float *X, int T, int cols) {
  if (h && h->fn) h->fn(h->ctx, il, slot, X, T, cols);
}

/* Y = X W^T after the matrix's input transform (model.h, qlm_lin_in): the permutation of its
 * columns, then int8 quantization with a static per-tensor scale (ties to even, as torch.round). */
static void linear(qlm_state *s, const qlm_mat *W, const qlm_lin_in *in, const float *X, int T, float *Y) {
  if (in->perm || in->act_scale > 0.0f) {
    int64_t n = W->cols;
    float sc = in->act_scale, inv = sc > 0.0f ? 1.0f / sc : 0.0f;
    for (int r = 0; r < T; r++) {
      const float *x = X + (size_t)r * n;
      float *y = s->xin + (size_t)r * n;
      for (int64_t j = 0; j < n; j++) y[j] = in->perm ? x[in->perm[j]] : x[j];
      if (sc > 0.0f)
        for (int64_t j = 0; j < n; j++) y[j] = sc * fminf(fmaxf(nearbyintf(y[j] * inv), -128.0f), 127.0f);
    }
    X = s->xin;
  }
  if (s->bf16 && T > 1 && qlm_matmul_bf16(W, X, T, Y, s->pool, &s->bf16_cache)) return;
  qlm_matmul(W, X, T, Y, s->pool);
}

/* Y[i] = X W[i]^T for matrices of one input: one dispatch (qlm_matmul_group) when none has an
 * input transform, else linear() each. */
static void linear_group(qlm_state *s, const qlm_mat *const W[], const qlm_lin_in *const in[], int n, const float *X,
                         int T, float *const Y[]) {
  bool plain = true;
  for (int i = 0; i < n; i++) plain = plain && !in[i]->perm && !(in[i]->act_scale > 0.0f);
  if (plain && s->bf16 && T > 1 && qlm_matmul_bf16_group(W, Y, n, X, T, s->pool, &s->bf16_cache)) return;
  if (plain) {
    qlm_matmul_group(W, Y, n, X, T, s->pool);
    return;
  }
  for (int i = 0; i < n; i++) linear(s, W[i], in[i], X, T, Y[i]);
}

/* q, k, v of the normalized input xn [T x n_embd] (biases, rope at the positions of rope_table),
 * their keys/values stored in s's cache at b's positions, and attention over the cache: out
 * [T x n_head*head_dim] (the input of wo; s->att, or a caller's buffer). */
static void attention_block(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *xn, float *out) {
  const qlm_hparams *hp = &m->hp;
  const qlm_layer *L = &m->layers[il];
  int T = b->n;
  const qlm_mat *W[3] = {&L->wq, &L->wk, &L->wv};
  const qlm_lin_in *in[3] = {&L->in_q, &L->in_k, &L->in_v};
  float *Y[3] = {s->q, s->k, s->v};
  linear_group(s, W, in, 3, xn, T, Y);
  bool gemm = gemm_attention_fits(s, b);
  qkv_job j = {.s = s, .b = b, .L = L, .layer = il, .q_bf16 = gemm && s->bf16};
  for_rows(s, T, qkv_range, &j);
  if (gemm) {
    gatt_task gt = {.s = s, .b = b, .layer = il, .nk_all = b->pos[T - 1] + 1, .out = out};
    if (s->bf16) qlm_pool_run(s->pool, pack_worker, &gt);
    qlm_pool_run(s->pool, gatt_worker, &gt);
  } else {
    att_task at = {.s = s, .b = b, .layer = il, .out = out};
    qlm_pool_run(T * hp->n_head > 1 ? s->pool : NULL, att_worker, &at);
  }
}

/* x [T x n_embd] += wo · att + bo, att [T x n_head*head_dim] (s->tmp holds the product). */
static void attn_residual(const qlm_model *m, qlm_state *s, int il, const float *att, int T, float *x) {
  const qlm_layer *L = &m->layers[il];
  linear(s, &L->wo, &L->in_o, att, T, s->tmp);
  add_residual(s, x, s->tmp, L->bo, T, m->hp.n_embd);
}

/* The feed-forward's hidden activation of the normalized input xn [T x n_embd]: out [T x n_ff]
 * = silu(w_gate · xn) * (w_up · xn), or gelu(w_up · xn + b_up) for gpt2; the products in s->hb
 * and s->hb2 (out may be s->hb). */
/* o[i] = silu(h[i]) * u[i] (kernels/vexp.h's exp: vectorized, the same bits at every level) */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void swiglu(float *o, const float *h, const float *u,
                                                                               size_t n) {
  for (size_t i = 0; i < n; i++) o[i] = qlm_silu(h[i]) * u[i];
}

/* Rows [r0, r1) of out: gelu(hb + b_up) (gpt2; hb keeps hb + b_up) or silu(hb) * hb2. */
typedef struct act_job {
  qlm_state *s;
  const float *b_up; /* gpt2 */
  float *out;
} act_job;

static void act_range(const void *job, int r0, int r1) {
  const act_job *j = job;
  const qlm_model *m = j->s->m;
  size_t F = (size_t)m->hp.n_ff;
  float *h = j->s->hb + (size_t)r0 * F, *o = j->out + (size_t)r0 * F;
  if (m->hp.arch == QLM_ARCH_GPT2)
    for (int r = r0; r < r1; r++, h += F, o += F) {
      add_bias_row(h, j->b_up, (int)F);
      for (size_t i = 0; i < F; i++) o[i] = gelu(h[i]);
    }
  else
    swiglu(o, h, j->s->hb2 + (size_t)r0 * F, (size_t)(r1 - r0) * F);
}

static void ffn_activation(const qlm_model *m, qlm_state *s, int il, const float *xn, int T, float *out) {
  const qlm_layer *L = &m->layers[il];
  if (m->hp.arch == QLM_ARCH_GPT2) {
    linear(s, &L->w_up, &L->in_up, xn, T, s->hb);
  } else {
    const qlm_mat *W[2] = {&L->w_gate, &L->w_up};
    const qlm_lin_in *in[2] = {&L->in_gate, &L->in_up};
    float *Y[2] = {s->hb, s->hb2};
    linear_group(s, W, in, 2, xn, T, Y);
  }
  act_job j = {s, L->b_up, out};
  for_rows(s, T, act_range, &j);
}

/* x [T x n_embd] += w_down · h + b_down, h [T x n_ff] (s->tmp holds the product). */
static void ffn_residual(const qlm_model *m, qlm_state *s, int il, const float *h, int T, float *x) {
  const qlm_layer *L = &m->layers[il];
  linear(s, &L->w_down, &L->in_down, h, T, s->tmp);
  add_residual(s, x, s->tmp, L->b_down, T, m->hp.n_embd);
}

/* inputs_only: stop after the hook has seen the last linear's input (x is left half-updated: the
 * attention residual is added, the feed-forward's is not). */
static void layer_forward(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const hook_fn *hook,
                          bool inputs_only) {
  const qlm_hparams *hp = &m->hp;
  const qlm_layer *L = &m->layers[il];
  int T = b->n, E = hp->n_embd, F = hp->n_ff, QD = hp->n_head * hp->head_dim;

  norm_rows(s, s->xn, s->x, T, L->attn_norm, L->attn_norm_b);
  call_hook(hook, il, QLM_SLOT_QKV, s->xn, T, E);
  attention_block(m, s, b, il, s->xn, s->att);
  call_hook(hook, il, QLM_SLOT_O, s->att, T, QD);
  attn_residual(m, s, il, s->att, T, s->x);

  norm_rows(s, s->xn, s->x, T, L->ffn_norm, L->ffn_norm_b);
  call_hook(hook, il, QLM_SLOT_UP, s->xn, T, E);
  ffn_activation(m, s, il, s->xn, T, s->hb);
  call_hook(hook, il, QLM_SLOT_DOWN, s->hb, T, F);
  if (inputs_only) return;
  ffn_residual(m, s, il, s->hb, T, s->x);
}

static void embed_rows(const qlm_model *m, const qlm_batch *b, float *xs) {
  int E = m->hp.n_embd;
  for (int r = 0; r < b->n; r++) {
    const float *e = (const float *)m->tok_embd.data + (size_t)b->token[r] * (size_t)E;
    float *x = xs + (size_t)r * E;
    memcpy(x, e, (size_t)E * sizeof *x);
    if (m->pos_embd)
      for (int i = 0; i < E; i++) x[i] += m->pos_embd[(size_t)b->pos[r] * E + i];
  }
}

/* compact: wanted rows' logits are written one after another (forward_seq) instead of at their row index.
 * hidden (may be NULL): receives the final-norm output of every row [n x n_embd]. */
static int forward(const qlm_model *m, qlm_state *s, const qlm_batch *b, float *logits, float *hidden, int compact,
                   qlm_error *err) {
  int rc = check_batch(m, s, b, err);
  if (rc) return rc;
  const qlm_hparams *hp = &m->hp;
  int T = b->n, E = hp->n_embd, V = hp->n_vocab;
  embed_rows(m, b, s->x);
  if (hp->rope_style != QLM_ROPE_NONE) rope_table(s, b);
  for (int il = 0; il < hp->n_layer; il++) layer_forward(m, s, b, il, NULL, false);
  /* a sequence now ends after its last row here (a batch starting before n_past rewrites and truncates) */
  for (int i = 0; i < s->n_seq; i++)
    if (s->batch_next[i] >= 0) s->n_past[i] = s->batch_next[i];
  if (hidden) norm_rows(s, hidden, s->x, T, m->out_norm, m->out_norm_b);
  if (!logits) return QLM_OK;

  /* final norm and output matmul over runs of consecutive wanted rows */
  int out_row = 0;
  for (int r = 0; r < T;) {
    if (b->want_logits && !b->want_logits[r]) {
      r++;
      continue;
    }
    int r1 = r + 1;
    while (r1 < T && (!b->want_logits || b->want_logits[r1])) r1++;
    norm_rows(s, s->xn + (size_t)r * E, s->x + (size_t)r * E, r1 - r, m->out_norm, m->out_norm_b);
    float *dst = logits + (size_t)(compact ? out_row : r) * V;
    qlm_matmul(&m->output, s->xn + (size_t)r * E, r1 - r, dst, s->pool);
    out_row += r1 - r;
    r = r1;
  }
  return QLM_OK;
}

int qlm_embed(const qlm_model *m, const qlm_batch *b, float *x, qlm_error *err) {
  for (int r = 0; r < b->n; r++)
    if (b->token[r] < 0 || b->token[r] >= m->hp.n_vocab || (m->pos_embd && (b->pos[r] < 0 || b->pos[r] >= m->hp.n_ctx)))
      return qlm_fail(err, QLM_EUSAGE, "batch row %d: token %d or position %d out of range", r, b->token[r], b->pos[r]);
  embed_rows(m, b, x);
  return QLM_OK;
}

/* x [b->n x n_embd] through layer il; x_out NULL: only as far as the last linear input. */
static int forward_layer(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x, float *x_out,
                         qlm_linear_hook hook, void *ctx, qlm_error *err) {
  if (il < 0 || il >= m->hp.n_layer) return qlm_fail(err, QLM_EUSAGE, "forward: layer %d is out of range", il);
  int rc = check_batch(m, s, b, err);
  if (rc) return rc;
  size_t bytes = (size_t)b->n * (size_t)m->hp.n_embd * sizeof *x;
  memcpy(s->x, x, bytes);
  if (m->hp.rope_style != QLM_ROPE_NONE) rope_table(s, b);
  hook_fn h = {hook, ctx};
  layer_forward(m, s, b, il, &h, !x_out);
  if (x_out) memcpy(x_out, s->x, bytes);
  return QLM_OK;
}

int qlm_forward_layer(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, float *x, qlm_linear_hook hook,
                      void *ctx, qlm_error *err) {
  return forward_layer(m, s, b, il, x, x, hook, ctx, err);
}

int qlm_forward_layer_inputs(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x,
                             qlm_linear_hook hook, void *ctx, qlm_error *err) {
  return forward_layer(m, s, b, il, x, NULL, hook, ctx, err);
}

/* ---- one layer in stages (model.h; the calibration's true-sequential pass) ----
 * The pieces of layer_forward, each on the caller's x: composed in order per sample they compute
 * exactly what qlm_forward_layer does (the same functions on the same values). */

/* The checks of a stage that does not touch the cache: the layer exists and b fits the state. */
static int check_stage(const qlm_model *m, const qlm_state *s, const qlm_batch *b, int il, qlm_error *err) {
  if (il < 0 || il >= m->hp.n_layer) return qlm_fail(err, QLM_EUSAGE, "forward: layer %d is out of range", il);
  if (b->n < 1 || b->n > s->max_batch)
    return qlm_fail(err, QLM_EUSAGE, "batch of %d rows: must be 1..%d (the state's max_batch)", b->n, s->max_batch);
  return QLM_OK;
}

int qlm_stage_qkv_input(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x,
                        const float **X, qlm_error *err) {
  int rc = check_stage(m, s, b, il, err);
  if (rc) return rc;
  const qlm_layer *L = &m->layers[il];
  norm_rows(s, s->xn, x, b->n, L->attn_norm, L->attn_norm_b);
  *X = s->xn;
  return QLM_OK;
}

int qlm_stage_attention(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x, float *out,
                        const float **X, qlm_error *err) {
  int rc = check_stage(m, s, b, il, err);
  if (!rc) rc = check_batch(m, s, b, err);
  if (rc) return rc;
  if (m->hp.rope_style != QLM_ROPE_NONE) rope_table(s, b);
  const qlm_layer *L = &m->layers[il];
  norm_rows(s, s->xn, x, b->n, L->attn_norm, L->attn_norm_b);
  *X = out ? out : s->att;
  attention_block(m, s, b, il, s->xn, out ? out : s->att);
  return QLM_OK;
}

int qlm_stage_attn_residual(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *att, float *x,
                            qlm_error *err) {
  int rc = check_stage(m, s, b, il, err);
  if (rc) return rc;
  attn_residual(m, s, il, att, b->n, x);
  return QLM_OK;
}

int qlm_stage_ffn_input(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x,
                        const float **X, qlm_error *err) {
  int rc = check_stage(m, s, b, il, err);
  if (rc) return rc;
  const qlm_layer *L = &m->layers[il];
  norm_rows(s, s->xn, x, b->n, L->ffn_norm, L->ffn_norm_b);
  *X = s->xn;
  return QLM_OK;
}

int qlm_stage_ffn_act(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *x, float *out,
                      const float **X, qlm_error *err) {
  int rc = check_stage(m, s, b, il, err);
  if (rc) return rc;
  const qlm_layer *L = &m->layers[il];
  norm_rows(s, s->xn, x, b->n, L->ffn_norm, L->ffn_norm_b);
  /* out is written by the activation's elementwise pass (streaming; the products stay in the
   * state's buffers, which the cache holds) */
  *X = out ? out : s->hb;
  ffn_activation(m, s, il, s->xn, b->n, out ? out : s->hb);
  return QLM_OK;
}

int qlm_stage_ffn_residual(const qlm_model *m, qlm_state *s, const qlm_batch *b, int il, const float *h, float *x,
                           qlm_error *err) {
  int rc = check_stage(m, s, b, il, err);
  if (rc) return rc;
  ffn_residual(m, s, il, h, b->n, x);
  return QLM_OK;
}

int qlm_forward(const qlm_model *m, qlm_state *s, const qlm_batch *b, float *logits, qlm_error *err) {
  return forward(m, s, b, logits, NULL, 0, err);
}

int qlm_forward_hidden(const qlm_model *m, qlm_state *s, const qlm_batch *b, float *hidden, qlm_error *err) {
  return forward(m, s, b, NULL, hidden, 0, err);
}

int qlm_forward_seq(const qlm_model *m, qlm_state *s, int seq, int pos0, const int32_t *tokens, int n,
                    float *logits_last, qlm_error *err) {
  if (n < 1) return qlm_fail(err, QLM_EUSAGE, "forward: no tokens given");
  if (seq < 0 || seq >= s->n_seq) return qlm_fail(err, QLM_EUSAGE, "forward: sequence %d is out of range", seq);
  if (pos0 < 0 || pos0 > s->n_ctx - n)
    return qlm_fail(err, QLM_EUSAGE, "forward: positions %d..%d do not fit the context of %d", pos0, pos0 + n - 1,
                    s->n_ctx);
  int B = s->max_batch, rc = QLM_OK;
  int32_t *pos = s->seq_pos, *sq = s->seq_id;
  int8_t *want = s->seq_want;
  for (int i0 = 0; i0 < n && !rc; i0 += B) {
    int c = n - i0 < B ? n - i0 : B;
    for (int j = 0; j < c; j++) {
      pos[j] = pos0 + i0 + j;
      sq[j] = seq;
      want[j] = logits_last && i0 + j == n - 1;
    }
    qlm_batch b = {.n = c, .token = tokens + i0, .pos = pos, .seq = sq, .want_logits = want};
    rc = forward(m, s, &b, i0 + c == n ? logits_last : NULL, NULL, 1, err);
  }
  return rc;
}
