/* calib.c — calibration text, windows and the sequential statistics pass (calib.h). */
#include "quant/calib.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mapfile.h"
#include "core/memlimit.h"
#include "kernels/threadpool.h"

#define MAX_TEXT_BYTES ((size_t)1 << 30)

/* ---- text */

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n, qlm_error *err) {
  if (*len + n + 3 > *cap) {
    size_t nc = (*cap ? *cap * 2 : 1 << 16);
    while (nc < *len + n + 3) nc *= 2;
    char *p = realloc(*buf, nc);
    if (!p) return qlm_fail(err, QLM_ENOMEM, "out of memory reading calibration text");
    *buf = p, *cap = nc;
  }
  if (*len) memcpy(*buf + *len, "\n\n", 2), *len += 2;
  memcpy(*buf + *len, s, n);
  *len += n;
  (*buf)[*len] = 0;
  return QLM_OK;
}

static int load_jsonl(const char *path, const char *raw, size_t n, char **text, size_t *len, qlm_error *err) {
  char *out = NULL;
  size_t olen = 0, cap = 0;
  int lineno = 0, rc = QLM_OK;
  for (const char *p = raw; p < raw + n && !rc;) {
    const char *nl = memchr(p, '\n', (size_t)(raw + n - p));
    const char *end = nl ? nl : raw + n;
    lineno++;
    if (end > p) {
      cJSON *j = cJSON_ParseWithLength(p, (size_t)(end - p));
      const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
      if (!cJSON_IsString(t))
        rc = qlm_fail(err, QLM_EFORMAT, "%s:%d: expected a JSON object with a string \"text\"", path, lineno);
      else
        rc = append(&out, &olen, &cap, t->valuestring, strlen(t->valuestring), err);
      cJSON_Delete(j);
    }
    p = end + 1;
  }
  if (!rc && !olen) rc = qlm_fail(err, QLM_EFORMAT, "%s: no text in the file", path);
  if (rc) {
    free(out);
    return rc;
  }
  *text = out;
  *len = olen;
  return QLM_OK;
}

int qlm_calib_load_text(const char *path, char **text, size_t *len, qlm_error *err) {
  char *raw;
  size_t n;
  int rc = qlm_read_file(path, MAX_TEXT_BYTES, &raw, &n, err);
  if (rc) return rc;
  size_t pl = strlen(path);
  if (pl > 6 && !strcmp(path + pl - 6, ".jsonl")) {
    rc = load_jsonl(path, raw, n, text, len, err);
    free(raw);
    return rc;
  }
  if (n == 0) {
    free(raw);
    return qlm_fail(err, QLM_EFORMAT, "%s: the calibration text is empty", path);
  }
  *text = raw;
  *len = n;
  return QLM_OK;
}

/* ---- windows */

static uint64_t next_rand(uint64_t *s) {
  *s += 0x9E3779B97F4A7C15ull; /* splitmix64 */
  uint64_t z = *s;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int qlm_calib_sample_ids(const int32_t *ids, int n_ids, int bos, const qlm_calib_opts *o, int32_t **tokens,
                         int *seq_len, qlm_error *err) {
  if (o->n_samples < 1 || o->seq_len < 2)
    return qlm_fail(err, QLM_EUSAGE, "calibration: need at least 1 sample of 2 tokens (got %d x %d)", o->n_samples,
                    o->seq_len);
  int nb = bos >= 0; /* windows start with BOS, as the model saw text in training */
  int L = o->seq_len;
  if (L - nb > n_ids) L = n_ids + nb;
  if (L < 2) return qlm_fail(err, QLM_EUSAGE, "calibration: the text has only %d tokens", n_ids);
  int32_t *out = qlm_malloc((size_t)o->n_samples * (size_t)L * sizeof *out, "calibration tokens", err);
  if (!out) return QLM_ENOMEM;
  uint64_t st = o->seed;
  int span = n_ids - (L - nb) + 1; /* possible start offsets */
  for (int s = 0; s < o->n_samples; s++) {
    int start = (int)(next_rand(&st) % (uint64_t)span);
    int32_t *w = out + (size_t)s * L;
    if (nb) w[0] = bos;
    memcpy(w + nb, ids + start, (size_t)(L - nb) * sizeof *w);
  }
  *tokens = out;
  *seq_len = L;
  return QLM_OK;
}

int qlm_calib_sample(const qlm_tokenizer *tok, const char *text, size_t len, const qlm_calib_opts *o,
                     int32_t **tokens, int *seq_len, qlm_error *err) {
  int32_t *ids;
  int n_ids;
  int rc = qlm_tokenize(tok, text, len, 0, 0, &ids, &n_ids, err);
  if (rc) return qlm_fail_prefix(err, "calibration text");
  const qlm_vocab *v = qlm_tokenizer_vocab(tok);
  rc = qlm_calib_sample_ids(ids, n_ids, v->add_bos ? v->bos_id : -1, o, tokens, seq_len, err);
  free(ids);
  return rc;
}

/* ---- the sequential pass */

/* A slot's inputs gathered for one Hessian product (accumulate, hess_flush). */
typedef struct hess_pending {
  float *x;              /* f32 Hessians: [cap x cols] the gathered rows (NULL: each call alone) */
  qlm_bf16 *xp;          /* bf16 Hessians: the gathered rows packed (qlm_bgemm_packed_len(cap, cols), zeroed) */
  int T;                 /* rows gathered and not yet in the Hessian */
} hess_pending;

typedef struct acc_ctx {
  qlm_layer_stats *st;
  float *tmp;            /* [max cols^2] f32 products of one product (upper triangle) */
  hess_pending pend[QLM_N_SLOTS];
  int cap;               /* rows per Hessian product: max(HESS_BATCH, seq_len) */
  int max_calls;         /* capacity of st->call_absmax */
  int calls[QLM_N_SLOTS];/* calls seen per slot in this layer (index into call_absmax) */
  bool want_hessian;
  bool hessian_only;     /* no column statistics (qlm_calib_opts) */
  qlm_pool *pool;        /* the accumulation's threads: the forward's pool (qlm_state_pool) */
  double stats_s;        /* wall seconds in accumulate (the phase report, QLM_CALIB_TIMES) */
} acc_ctx;

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double wall_s(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu_s(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); } /* all threads */

#define CALIB_MAX_THREADS 1024

/* One slot's inputs X [T x cols] for the column statistics: thread ith takes a contiguous run of
 * columns and walks the rows (each column's sums keep the serial order: thread-count invariant). */
typedef struct col_task {
  qlm_layer_stats *st;
  qlm_linear_slot slot;
  const float *X;
  int T, cols;
  float call_max[CALIB_MAX_THREADS];
} col_task;

static void col_worker(void *arg, int ith, int nth) {
  col_task *c = arg;
  int j0 = (int)((int64_t)c->cols * ith / nth), j1 = (int)((int64_t)c->cols * (ith + 1) / nth);
  float *amax = c->st->absmax[c->slot];
  double *sq = c->st->sqsum[c->slot], *ab = c->st->abssum[c->slot];
  float cm = 0.0f;
  for (int t = 0; t < c->T; t++) {
    const float *x = c->X + (size_t)t * c->cols;
    for (int j = j0; j < j1; j++) { /* comparisons, not fmaxf: no NaN rules, so it vectorizes */
      float a = fabsf(x[j]);
      amax[j] = a > amax[j] ? a : amax[j];
      cm = a > cm ? a : cm;
      double v = (double)x[j];
      sq[j] += v * v;
      ab[j] += fabs(v);
    }
  }
  c->call_max[ith] = cm;
}

/* The Hessian's upper triangle in row tiles of HESS_TILE: tile k is rows [k*HESS_TILE, ...) of
 * H += X^T X, computed in f32 by BLAS (ssyrk for the diagonal block, sgemm right of it) into
 * tmp and added to the double sum by the same thread.  The tiles and their BLAS calls do not
 * depend on the thread count, so neither does the result. */
#define HESS_TILE 128 /* 64 before: 576 columns x 512 tokens 108-114 -> 117-127 GFLOP/s, 1536 the same */

typedef struct hess_task {
  double *H;
  float *tmp;
  const float *X;
  int T, cols;
} hess_task;

/* Rows [i0, i1) of the call's products (tmp, upper triangle) into the double sum H. */
static void add_upper(const hess_task *h, int i0, int i1) {
  int c = h->cols;
  for (int i = i0; i < i1; i++) {
    double *Hr = h->H + (size_t)i * c;
    const float *tr = h->tmp + (size_t)i * c;
    for (int j = i; j < c; j++) Hr[j] += tr[j];
  }
}

static void hess_tile(const hess_task *h, int k) {
  int c = h->cols, i0 = k * HESS_TILE, i1 = i0 + HESS_TILE < c ? i0 + HESS_TILE : c, nb = i1 - i0;
  float *tp = h->tmp + (size_t)i0 * c;
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, nb, h->T, 1.0f, h->X + i0, c, 0.0f, tp + i0, c);
  if (i1 < c)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nb, c - i1, h->T, 1.0f, h->X + i0, c, h->X + i1, c, 0.0f,
                tp + i1, c);
  add_upper(h, i0, i1);
}

/* Which of nth threads takes tile k: tiles shrink down the triangle, so they are dealt out
 * boustrophedon (0 1 1 0 0 1 ...) to balance. */
static int tile_owner(int k, int nth) {
  int round = k / nth, pos = k % nth;
  return round % 2 ? nth - 1 - pos : pos;
}

static void hess_worker(void *arg, int ith, int nth) {
  const hess_task *h = arg;
  int nt = (h->cols + HESS_TILE - 1) / HESS_TILE;
  for (int k = 0; k < nt; k++)
    if (tile_owner(k, nth) == ith) hess_tile(h, k);
}

void qlm_calib_hessian_add(double *H, float *tmp, const float *X, int T, int cols, qlm_pool *pool) {
  hess_task h = {.H = H, .tmp = tmp, .X = X, .T = T, .cols = cols};
  qlm_pool_run(pool, hess_worker, &h);
}

/* bf16: the rows of X packed as the rows of kernels/bgemm.h's B (group stride for kpack rows),
 * then the upper triangle of BᵀB by qlm_bgemm_op_upper in the row tiles above (no transposed
 * copy: a row of Xᵀ is one lane of B's groups). */
typedef struct hess_bf16_task {
  hess_task h;           /* X, T: the rows to pack (at t_off); then T: all rows packed */
  qlm_bf16 *xp;          /* packed for kpack rows, qlm_bgemm_packed_len(kpack, cols) */
  int64_t kpack, t_off;
} hess_bf16_task;

/* Thread ith's column groups of X's rows into xp from row t_off on. */
static void pack_worker(void *arg, int ith, int nth) {
  const hess_bf16_task *b = arg;
  int64_t ng = (b->h.cols + 15) / 16, j0 = ng * ith / nth * 16, j1 = ng * (ith + 1) / nth * 16;
  if (j1 > b->h.cols) j1 = b->h.cols;
  if (j0 < j1) qlm_bgemm_pack_rows(b->h.X, b->h.cols, b->t_off, b->h.T, b->kpack, j0, j1, b->xp);
}

static void hess_bf16_tile(const hess_bf16_task *b, int k) {
  const hess_task *h = &b->h;
  int c = h->cols, i0 = k * HESS_TILE, i1 = i0 + HESS_TILE < c ? i0 + HESS_TILE : c;
  qlm_bgemm_op_upper(b->xp, b->kpack, h->tmp, c, i0, i1, c, h->T);
  add_upper(h, i0, i1);
}

static void hess_bf16_worker(void *arg, int ith, int nth) {
  const hess_bf16_task *b = arg;
  int nt = (b->h.cols + HESS_TILE - 1) / HESS_TILE;
  for (int k = 0; k < nt; k++)
    if (tile_owner(k, nth) == ith) hess_bf16_tile(b, k);
}

/* X [T x cols] into rows [t_off, t_off + T) of xp (packed for kpack rows). */
static void xp_append(qlm_bf16 *xp, int64_t kpack, int t_off, const float *X, int T, int cols, qlm_pool *pool) {
  hess_bf16_task b = {.h = {.X = X, .T = T, .cols = cols}, .xp = xp, .kpack = kpack, .t_off = t_off};
  qlm_pool_run(pool, pack_worker, &b);
}

/* H += the products of xp's first T rows; an odd T's partner row is zeroed here (the padding
 * columns past cols were zeroed when xp was made and are never written). */
static void hessian_add_xp(double *H, float *tmp, qlm_bf16 *xp, int64_t kpack, int T, int cols, qlm_pool *pool) {
  if (T % 2)
    for (int j = 0; j < cols; j++) xp[qlm_bgemm_packed_at(kpack, T, j)] = 0;
  hess_bf16_task b = {.h = {.H = H, .tmp = tmp, .T = T, .cols = cols}, .xp = xp, .kpack = kpack};
  qlm_pool_run(pool, hess_bf16_worker, &b);
}

void qlm_calib_hessian_add_bf16(double *H, float *tmp, qlm_bf16 *xp, const float *X, int T, int cols, qlm_pool *pool) {
  memset(xp, 0, (size_t)qlm_bgemm_packed_len(T, cols) * sizeof *xp);
  xp_append(xp, T, 0, X, T, cols, pool);
  hessian_add_xp(H, tmp, xp, T, T, cols, pool);
}

/* Rows per Hessian product: the calls of a slot (one sample each) are gathered up to this many
 * tokens and multiplied at once.  With 512-token samples, one product per call ran at 125 (576
 * inputs) and 249 (1536) GFLOP/s on 2 Zen 4 threads in bf16, at 2048 rows 279 and 327; f32 98 /
 * 173 -> 180 / 184 (the tiles' fixed costs and the per-call double accumulation). */
#define HESS_BATCH 2048

/* Slot's gathered rows into its Hessian. */
static void hess_flush(acc_ctx *a, qlm_linear_slot slot) {
  hess_pending *p = &a->pend[slot];
  if (!a->want_hessian || p->T == 0) return;
  int cols = a->st->cols[slot];
  if (p->xp) hessian_add_xp(a->st->hessian[slot], a->tmp, p->xp, a->cap, p->T, cols, a->pool);
  else qlm_calib_hessian_add(a->st->hessian[slot], a->tmp, p->x, p->T, cols, a->pool);
  p->T = 0;
}

/* The statistics are complete: the rows still gathered into the Hessian (timed as accumulate). */
static void slot_complete(acc_ctx *a, qlm_linear_slot slot) {
  double t0 = wall_s();
  hess_flush(a, slot);
  a->stats_s += wall_s() - t0;
}

/* One call's X [T x cols] towards slot's Hessian: gathered, multiplied when cap rows are reached
 * (or at hess_flush); an f32 call with nothing gathered that fills cap alone is multiplied from X. */
static void hess_gather(acc_ctx *a, qlm_linear_slot slot, const float *X, int T, int cols) {
  hess_pending *p = &a->pend[slot];
  if (p->T > 0 && p->T + T > a->cap) hess_flush(a, slot);
  if (p->xp) xp_append(p->xp, a->cap, p->T, X, T, cols, a->pool);
  else if (p->x && T < a->cap) memcpy(p->x + (size_t)p->T * (size_t)cols, X, (size_t)T * (size_t)cols * sizeof *X);
  else {
    qlm_calib_hessian_add(a->st->hessian[slot], a->tmp, X, T, cols, a->pool);
    return;
  }
  p->T += T;
  if (p->T >= a->cap) hess_flush(a, slot);
}

/* Accumulate one slot's inputs X [T x cols]: absmax, sums of squares and of |x|, and (optionally)
 * X^T X — in f32 per product of up to cap = max(HESS_BATCH, seq_len) gathered rows, then added
 * into the double sum.
 *
 * Why f32 per product is enough: an entry of one product's X^T X is a sum of T <= cap products;
 * in f32 (products and sums rounded to 2^-24) its error is at most ~T * 2^-24 * sum_t |x_ti x_tj|
 * <= T * 2^-24 * sqrt(H_ii H_jj) (Cauchy-Schwarz), i.e. 1.2e-4 relative to the diagonal for
 * T = 2048 in the worst case, ~sqrt(T) * 2^-24 = 3e-6 typically; the products are then summed
 * in double (no further growth).  GPTQ adds damp = 1% of the mean diagonal before inverting, two
 * orders above this, and the reference implementations (AutoGPTQ, IST-DASLab gptq) themselves
 * accumulate H = X X^T in float32 on the GPU over all samples.  Only the upper triangle is kept
 * here; qlm_calib_run mirrors it once per layer. */
static void accumulate(void *ctx, int layer, qlm_linear_slot slot, const float *X, int T, int cols) {
  (void)layer;
  acc_ctx *a = ctx;
  double t0 = wall_s();
  qlm_layer_stats *st = a->st;
  col_task ct = {.st = st, .slot = slot, .X = X, .T = T, .cols = cols};
  if (!a->hessian_only) qlm_pool_run(a->pool, col_worker, &ct);
  float call_max = 0.0f;
  for (int i = 0; i < (a->pool ? qlm_pool_size(a->pool) : 1); i++) call_max = fmaxf(call_max, ct.call_max[i]);
  if (slot == QLM_SLOT_QKV) st->n_tokens += T, st->n_calls++; /* q/k/v's input comes first in every call */
  /* the k-th call of this slot is sample k's (the staged pass sees all samples of one slot in a row) */
  int k = a->calls[slot]++;
  if (k < a->max_calls) st->call_absmax[slot][k] = call_max;
  if (a->want_hessian) hess_gather(a, slot, X, T, cols);
  a->stats_s += wall_s() - t0;
}

/* Copy the accumulated upper triangle of slot k's Hessian into the lower one (symmetric H). */
static void mirror_hessian(qlm_layer_stats *st, int k) {
  double *H = st->hessian[k];
  size_t c = (size_t)st->cols[k];
  /* in 8 x 8 tiles: element by element, every read down a column missed the cache (n = 1536:
   * 3.9 -> 1.6 ms; rows 12 KiB apart share one L1 set, so larger tiles gain less) */
  enum { TILE = 8 };
  for (size_t i0 = 0; H && i0 < c; i0 += TILE)
    for (size_t j0 = 0; j0 <= i0; j0 += TILE)
      for (size_t i = i0; i < i0 + TILE && i < c; i++)
        for (size_t j = j0; j < j0 + TILE && j < i; j++) H[i * c + j] = H[j * c + i];
}

static void mirror_hessians(qlm_layer_stats *st) {
  for (int k = 0; k < QLM_N_SLOTS; k++) mirror_hessian(st, k);
}

static void stats_free(qlm_layer_stats *st) {
  for (int k = 0; k < QLM_N_SLOTS; k++) {
    free(st->hessian[k]);
    free(st->absmax[k]);
    free(st->sqsum[k]);
    free(st->abssum[k]);
    free(st->call_absmax[k]);
  }
  memset(st, 0, sizeof *st);
}

static int stats_new(const qlm_hparams *hp, bool hessian, int n_calls, qlm_layer_stats *st, qlm_error *err) {
  memset(st, 0, sizeof *st);
  st->cols[QLM_SLOT_QKV] = st->cols[QLM_SLOT_UP] = hp->n_embd;
  st->cols[QLM_SLOT_O] = hp->n_head * hp->head_dim;
  st->cols[QLM_SLOT_DOWN] = hp->n_ff;
  for (int k = 0; k < QLM_N_SLOTS; k++) {
    size_t c = (size_t)st->cols[k];
    st->absmax[k] = qlm_calloc(c, sizeof(float), "calibration statistics", err);
    st->sqsum[k] = qlm_calloc(c, sizeof(double), "calibration statistics", err);
    st->abssum[k] = qlm_calloc(c, sizeof(double), "calibration statistics", err);
    st->call_absmax[k] = qlm_calloc((size_t)n_calls + 1, sizeof(float), "calibration statistics", err);
    if (hessian) st->hessian[k] = qlm_calloc(c * c, sizeof(double), "a calibration Hessian", err);
    if (!st->absmax[k] || !st->sqsum[k] || !st->abssum[k] || !st->call_absmax[k] || (hessian && !st->hessian[k])) {
      stats_free(st);
      return QLM_ENOMEM;
    }
  }
  return QLM_OK;
}

static void stats_clear(qlm_layer_stats *st) {
  st->n_tokens = 0;
  st->n_calls = 0;
  for (int k = 0; k < QLM_N_SLOTS; k++) {
    size_t c = (size_t)st->cols[k];
    memset(st->absmax[k], 0, c * sizeof(float));
    memset(st->sqsum[k], 0, c * sizeof(double));
    memset(st->abssum[k], 0, c * sizeof(double));
    if (st->hessian[k]) memset(st->hessian[k], 0, c * c * sizeof(double));
  }
}

/* Run every sample's stream xs through layer il: in place (the pass that makes the next layer's
 * inputs), or (stats) only as far as the last linear input, leaving xs as it is (the statistics
 * pass, before the caller quantizes the layer: its output would be thrown away). */
static int run_layer(qlm_model *m, qlm_state *s, const qlm_batch *b, float *xs, bool stats, int n_samples, int il,
                     qlm_linear_hook hook, void *ctx, qlm_error *err) {
  size_t stride = (size_t)b->n * (size_t)m->hp.n_embd;
  for (int k = 0; k < n_samples; k++) {
    qlm_state_clear(s, 0);
    qlm_batch bk = *b;
    bk.token += (size_t)k * b->n;
    float *x = xs + (size_t)k * stride;
    int rc = stats ? qlm_forward_layer_inputs(m, s, &bk, il, x, hook, ctx, err)
                   : qlm_forward_layer(m, s, &bk, il, x, hook, ctx, err);
    if (rc) return rc;
  }
  return QLM_OK;
}

/* What both passes hold: the residual streams of all samples, the state, the statistics and the
 * accumulation's threads. */
typedef struct calib_pass {
  qlm_model *m;
  int n_samples, seq_len;
  size_t stride;         /* floats per sample's stream: seq_len * n_embd */
  float *xs;             /* [n_samples x seq_len x n_embd] residual streams */
  int32_t *pos;          /* [2 x seq_len] positions, then sequence ids (all 0) */
  float *tmp;            /* [max cols^2] the Hessian scratch (NULL without Hessians) */
  qlm_state *s;
  qlm_layer_stats st;
  qlm_pool *pool;        /* the state's (not owned) */
  acc_ctx a;
  qlm_batch b;           /* sample 0's batch (sample_batch moves it) */
} calib_pass;

static void pass_close(calib_pass *p) {
  stats_free(&p->st);
  qlm_state_free(p->s);
  free(p->tmp);
  for (int k = 0; k < QLM_N_SLOTS; k++) free(p->a.pend[k].x), free(p->a.pend[k].xp);
  free(p->pos);
  free(p->xs);
  memset(p, 0, sizeof *p);
}

/* Each slot's gathering buffer for cap rows: bf16 always (packed, zeroed: the padding stays
 * zero), f32 only when more than one call fits (else each call is multiplied from its X). */
static int pending_alloc(hess_pending pend[QLM_N_SLOTS], const int cols[QLM_N_SLOTS], int cap, int seq_len, bool bf16,
                         qlm_error *err) {
  for (int k = 0; k < QLM_N_SLOTS; k++) {
    size_t c = (size_t)cols[k];
    if (bf16) pend[k].xp = qlm_calloc((size_t)qlm_bgemm_packed_len(cap, cols[k]), sizeof(qlm_bf16), "a Hessian scratch", err);
    else if (cap > seq_len) pend[k].x = qlm_malloc(c * (size_t)cap * sizeof(float), "a Hessian scratch", err);
    if (bf16 ? !pend[k].xp : cap > seq_len && !pend[k].x) return QLM_ENOMEM;
  }
  return QLM_OK;
}

/* Allocate everything and embed every sample into xs. */
static int pass_open(calib_pass *p, qlm_model *m, const int32_t *tokens, int n_samples, int seq_len,
                     const qlm_calib_opts *o, int n_threads, qlm_error *err) {
  memset(p, 0, sizeof *p);
  const qlm_hparams *hp = &m->hp;
  p->m = m, p->n_samples = n_samples, p->seq_len = seq_len;
  p->stride = (size_t)seq_len * (size_t)hp->n_embd;
  size_t total;
  if (qlm_mul_overflow(p->stride, (size_t)n_samples, &total) || qlm_mul_overflow(total, sizeof(float), &total))
    return qlm_fail(err, QLM_ELIMIT, "calibration: %d x %d tokens are too many", n_samples, seq_len);
  int max_cols = hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd;
  if (hp->n_head * hp->head_dim > max_cols) max_cols = hp->n_head * hp->head_dim;
  p->xs = qlm_malloc(total, "calibration activations", err);
  p->pos = qlm_malloc((size_t)seq_len * 2 * sizeof(int32_t), "calibration positions", err);
  if (o->want_hessian) p->tmp = qlm_malloc((size_t)max_cols * max_cols * sizeof(float), "a Hessian scratch", err);
  int rc = (!p->xs || !p->pos || (o->want_hessian && !p->tmp)) ? QLM_ENOMEM : QLM_OK;
  if (!rc) rc = qlm_state_new(m, 1, seq_len, seq_len, n_threads, &p->s, err);
  if (!rc) rc = qlm_state_set_bf16(p->s, o->bf16, err);
  if (!rc) rc = qlm_state_set_gemm_attention(p->s, true, err); /* a window is one sequence: attention by BLAS */
  if (!rc) rc = stats_new(hp, o->want_hessian, n_samples, &p->st, err);
  p->a.cap = seq_len > HESS_BATCH ? seq_len : HESS_BATCH;
  if (!rc && o->want_hessian) rc = pending_alloc(p->a.pend, p->st.cols, p->a.cap, seq_len, o->bf16, err);
  int32_t *seq = p->pos + seq_len;
  for (int i = 0; !rc && i < seq_len; i++) p->pos[i] = i, seq[i] = 0;
  p->b = (qlm_batch){.n = seq_len, .token = tokens, .pos = p->pos, .seq = seq};
  for (int k = 0; !rc && k < n_samples; k++) {
    qlm_batch bk = p->b;
    bk.token += (size_t)k * seq_len;
    rc = qlm_embed(m, &bk, p->xs + (size_t)k * p->stride, err);
  }
  /* The forward's threads also accumulate: with a pool of their own, whichever pool was idle
   * spun and yielded for a while after every hand-over, taking a core from the busy one (2.5% of
   * a 2-thread calibration's CPU in spinning and sched_yield). */
  p->pool = p->s ? qlm_state_pool(p->s) : NULL;
  p->a.st = &p->st, p->a.tmp = p->tmp, p->a.want_hessian = o->want_hessian, p->a.hessian_only = o->hessian_only;
  p->a.max_calls = n_samples, p->a.pool = p->pool;
  if (rc) pass_close(p);
  return rc;
}

/* A new layer: zero statistics and per-slot call counts. */
static void pass_layer_start(calib_pass *p) {
  stats_clear(&p->st);
  memset(p->a.calls, 0, sizeof p->a.calls);
}

/* After the last layer: hand out the residual streams when asked (qlm_calib_opts.x_out). */
static void pass_output(const calib_pass *p, const qlm_calib_opts *o) {
  if (o->x_out) memcpy(o->x_out, p->xs, (size_t)p->n_samples * p->stride * sizeof(float));
}

/* Sample k's batch. */
static qlm_batch sample_batch(const calib_pass *p, int k) {
  qlm_batch bk = p->b;
  bk.token += (size_t)k * p->seq_len;
  return bk;
}

static bool phase_times_wanted(void) {
  const char *tv = getenv("QLM_CALIB_TIMES");
  return tv && *tv && strcmp(tv, "0");
}

int qlm_calib_run(qlm_model *m, const int32_t *tokens, int n_samples, int seq_len, const qlm_calib_opts *o,
                  int n_threads, qlm_calib_layer_fn on_layer, void *ctx, qlm_error *err) {
  calib_pass p;
  int rc = pass_open(&p, m, tokens, n_samples, seq_len, o, n_threads, err);
  if (rc) return rc;
  double w[3] = {0}, c[3] = {0}; /* wall and CPU seconds: statistics pass, on_layer, post pass */
  for (int il = 0; !rc && il < m->hp.n_layer; il++) {
    pass_layer_start(&p);
    double w0 = wall_s(), c0 = cpu_s();
    rc = run_layer(m, p.s, &p.b, p.xs, true, n_samples, il, accumulate, &p.a, err);
    for (int k = 0; !rc && k < QLM_N_SLOTS; k++) slot_complete(&p.a, (qlm_linear_slot)k);
    if (!rc) mirror_hessians(&p.st);
    double w1 = wall_s(), c1 = cpu_s();
    if (!rc && on_layer) rc = on_layer(ctx, il, &p.st, err);
    qlm_state_weights_changed(p.s);
    double w2 = wall_s(), c2 = cpu_s();
    if (!rc) rc = run_layer(m, p.s, &p.b, p.xs, false, n_samples, il, NULL, NULL, err);
    w[0] += w1 - w0, w[1] += w2 - w1, w[2] += wall_s() - w2;
    c[0] += c1 - c0, c[1] += c2 - c1, c[2] += cpu_s() - c2;
  }
  if (!rc) pass_output(&p, o);
  /* the phase split for bench/gptq-speed (stderr: the command's own output is unchanged) */
  if (!rc && phase_times_wanted())
    fprintf(stderr,
            "calib phases (wall / CPU s): statistics forward %.2f / %.2f (of which input statistics + Hessians "
            "%.2f wall), per-layer method %.2f / %.2f, forward through the quantized layer %.2f / %.2f; "
            "%d x %d tokens, %d layers\n",
            w[0], c[0], p.a.stats_s, w[1], c[1], w[2], c[2], n_samples, seq_len, m->hp.n_layer);
  pass_close(&p);
  return rc;
}

/* ---- the true-sequential pass (one forward per layer) */

/* Which intermediate results the staged pass keeps (QLM_CALIB_STORE_*; auto: what fits half of the
 * memory available, the attention outputs first — per byte they save the most: recomputing them
 * costs the q/k/v products and attention, ~3 n_embd + seq_len FMAs per stored float in SmolLM2,
 * the activations ~2 n_embd per float). */
static void store_choice(const calib_pass *p, int store, bool *keep_att, bool *keep_act) {
  const qlm_hparams *hp = &p->m->hp;
  double tokens = (double)p->n_samples * p->seq_len;
  double att = tokens * hp->n_head * hp->head_dim * sizeof(float), act = tokens * hp->n_ff * sizeof(float);
  if (store == QLM_CALIB_STORE_AUTO) {
    qlm_mem_avail av = qlm_mem_available();
    double budget = av.known ? 0.5 * (double)av.bytes : INFINITY;
    *keep_att = att <= budget;
    *keep_act = *keep_att && att + act <= budget;
  } else {
    *keep_att = store == QLM_CALIB_STORE_ATT || store == QLM_CALIB_STORE_ALL;
    *keep_act = store == QLM_CALIB_STORE_ALL;
  }
}

/* A slot's statistics are complete: mirror its Hessian and hand it to the caller. */
static int slot_done(calib_pass *p, int il, qlm_linear_slot slot, qlm_calib_slot_fn on_slot, void *ctx,
                     double *method_w, double *method_c, qlm_error *err) {
  slot_complete(&p->a, slot);
  mirror_hessian(&p->st, slot);
  double w0 = wall_s(), c0 = cpu_s();
  int rc = on_slot ? on_slot(ctx, il, slot, &p->st, err) : QLM_OK;
  qlm_state_weights_changed(p->s); /* on_slot may have put quantized matrices into the model */
  *method_w += wall_s() - w0, *method_c += cpu_s() - c0;
  return rc;
}

/* Stage qkv of layer il over all samples: statistics of attn_norm(x). */
static int stage_qkv(calib_pass *p, int il, qlm_error *err) {
  for (int k = 0; k < p->n_samples; k++) {
    qlm_batch bk = sample_batch(p, k);
    const float *X;
    int rc = qlm_stage_qkv_input(p->m, p->s, &bk, il, p->xs + (size_t)k * p->stride, &X, err);
    if (rc) return rc;
    accumulate(&p->a, il, QLM_SLOT_QKV, X, bk.n, p->st.cols[QLM_SLOT_QKV]);
  }
  return QLM_OK;
}

/* Sample k's attention output [seq_len x n_head*head_dim] with the layer's current q/k/v: in out,
 * or in the state when out is NULL. */
static int sample_attention(calib_pass *p, int il, int k, float *out, const float **att, qlm_error *err) {
  qlm_batch bk = sample_batch(p, k);
  qlm_state_clear(p->s, 0);
  return qlm_stage_attention(p->m, p->s, &bk, il, p->xs + (size_t)k * p->stride, out, att, err);
}

/* Stage o: statistics of the attention outputs; att_keep (may be NULL) receives them (written
 * there by the attention: a copy was 1.6% of a 128 x 2048 calibration's wall time). */
static int stage_o(calib_pass *p, int il, float *att_keep, qlm_error *err) {
  size_t n = (size_t)p->seq_len * (size_t)p->st.cols[QLM_SLOT_O];
  for (int k = 0; k < p->n_samples; k++) {
    const float *X;
    int rc = sample_attention(p, il, k, att_keep ? att_keep + (size_t)k * n : NULL, &X, err);
    if (rc) return rc;
    accumulate(&p->a, il, QLM_SLOT_O, X, p->seq_len, p->st.cols[QLM_SLOT_O]);
  }
  return QLM_OK;
}

/* Stage up: x += wo·att (the attention kept, or recomputed), statistics of ffn_norm(x). */
static int stage_up(calib_pass *p, int il, const float *att_keep, qlm_error *err) {
  size_t n = (size_t)p->seq_len * (size_t)p->st.cols[QLM_SLOT_O];
  for (int k = 0; k < p->n_samples; k++) {
    qlm_batch bk = sample_batch(p, k);
    float *x = p->xs + (size_t)k * p->stride;
    const float *att = att_keep ? att_keep + (size_t)k * n : NULL, *X;
    int rc = att ? QLM_OK : sample_attention(p, il, k, NULL, &att, err);
    if (!rc) rc = qlm_stage_attn_residual(p->m, p->s, &bk, il, att, x, err);
    if (!rc) rc = qlm_stage_ffn_input(p->m, p->s, &bk, il, x, &X, err);
    if (rc) return rc;
    accumulate(&p->a, il, QLM_SLOT_UP, X, bk.n, p->st.cols[QLM_SLOT_UP]);
  }
  return QLM_OK;
}

/* Stage down: statistics of the feed-forward activations; act_keep (may be NULL) receives them
 * (written there by the feed-forward). */
static int stage_down(calib_pass *p, int il, float *act_keep, qlm_error *err) {
  size_t n = (size_t)p->seq_len * (size_t)p->st.cols[QLM_SLOT_DOWN];
  for (int k = 0; k < p->n_samples; k++) {
    qlm_batch bk = sample_batch(p, k);
    const float *X;
    float *out = act_keep ? act_keep + (size_t)k * n : NULL;
    int rc = qlm_stage_ffn_act(p->m, p->s, &bk, il, p->xs + (size_t)k * p->stride, out, &X, err);
    if (rc) return rc;
    accumulate(&p->a, il, QLM_SLOT_DOWN, X, bk.n, p->st.cols[QLM_SLOT_DOWN]);
  }
  return QLM_OK;
}

/* The end of the layer: x += w_down·h (the activations kept, or recomputed). */
static int stage_finish(calib_pass *p, int il, const float *act_keep, qlm_error *err) {
  size_t n = (size_t)p->seq_len * (size_t)p->st.cols[QLM_SLOT_DOWN];
  for (int k = 0; k < p->n_samples; k++) {
    qlm_batch bk = sample_batch(p, k);
    float *x = p->xs + (size_t)k * p->stride;
    const float *h = act_keep ? act_keep + (size_t)k * n : NULL;
    int rc = h ? QLM_OK : qlm_stage_ffn_act(p->m, p->s, &bk, il, x, NULL, &h, err);
    if (!rc) rc = qlm_stage_ffn_residual(p->m, p->s, &bk, il, h, x, err);
    if (rc) return rc;
  }
  return QLM_OK;
}

int qlm_calib_run_staged(qlm_model *m, const int32_t *tokens, int n_samples, int seq_len, const qlm_calib_opts *o,
                         int n_threads, qlm_calib_slot_fn on_slot, void *ctx, qlm_error *err) {
  calib_pass p;
  int rc = pass_open(&p, m, tokens, n_samples, seq_len, o, n_threads, err);
  if (rc) return rc;
  bool keep_att, keep_act;
  store_choice(&p, o->store, &keep_att, &keep_act);
  size_t tokens_n = (size_t)n_samples * (size_t)seq_len;
  float *att = keep_att ? qlm_malloc(tokens_n * (size_t)p.st.cols[QLM_SLOT_O] * sizeof(float),
                                     "calibration attention outputs", err) : NULL;
  float *act = keep_act ? qlm_malloc(tokens_n * (size_t)p.st.cols[QLM_SLOT_DOWN] * sizeof(float),
                                     "calibration feed-forward activations", err) : NULL;
  if ((keep_att && !att) || (keep_act && !act)) rc = QLM_ENOMEM;
  double w0 = wall_s(), c0 = cpu_s(), mw = 0.0, mc = 0.0; /* mw, mc: in on_slot */
  for (int il = 0; !rc && il < m->hp.n_layer; il++) {
    pass_layer_start(&p);
    rc = stage_qkv(&p, il, err);
    if (!rc) rc = slot_done(&p, il, QLM_SLOT_QKV, on_slot, ctx, &mw, &mc, err);
    if (!rc) rc = stage_o(&p, il, att, err);
    if (!rc) rc = slot_done(&p, il, QLM_SLOT_O, on_slot, ctx, &mw, &mc, err);
    if (!rc) rc = stage_up(&p, il, att, err);
    if (!rc) rc = slot_done(&p, il, QLM_SLOT_UP, on_slot, ctx, &mw, &mc, err);
    if (!rc) rc = stage_down(&p, il, act, err);
    if (!rc) rc = slot_done(&p, il, QLM_SLOT_DOWN, on_slot, ctx, &mw, &mc, err);
    if (!rc) rc = stage_finish(&p, il, act, err);
  }
  if (!rc) pass_output(&p, o);
  if (!rc && phase_times_wanted())
    fprintf(stderr,
            "calib phases (wall / CPU s): one staged forward per layer %.2f / %.2f (of which input statistics + "
            "Hessians %.2f wall), per-slot method %.2f / %.2f; kept: attention outputs %s, activations %s; "
            "%d x %d tokens, %d layers\n",
            wall_s() - w0 - mw, cpu_s() - c0 - mc, p.a.stats_s, mw, mc, att ? "yes" : "no (recomputed)",
            act ? "yes" : "no (recomputed)", n_samples, seq_len, m->hp.n_layer);
  free(att);
  free(act);
  pass_close(&p);
  return rc;
}
