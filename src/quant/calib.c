/* calib.c — calibration text, windows and the sequential statistics pass (calib.h). */
#include "quant/calib.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/mapfile.h"
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

typedef struct acc_ctx {
  qlm_layer_stats *st;
  float *tmp;            /* [max cols^2] f32 products of one call (upper triangle) */
  int max_calls;         /* capacity of st->call_absmax */
  bool want_hessian;
  qlm_pool *pool;        /* the accumulation's threads (the forward's pool is idle meanwhile) */
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
#define HESS_TILE 64

typedef struct hess_task {
  double *H;
  float *tmp;
  const float *X;
  int T, cols;
} hess_task;

static void hess_tile(const hess_task *h, int k) {
  int c = h->cols, i0 = k * HESS_TILE, i1 = i0 + HESS_TILE < c ? i0 + HESS_TILE : c, nb = i1 - i0;
  float *tp = h->tmp + (size_t)i0 * c;
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, nb, h->T, 1.0f, h->X + i0, c, 0.0f, tp + i0, c);
  if (i1 < c)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nb, c - i1, h->T, 1.0f, h->X + i0, c, h->X + i1, c, 0.0f,
                tp + i1, c);
  for (int i = i0; i < i1; i++) {
    double *Hr = h->H + (size_t)i * c;
    const float *tr = h->tmp + (size_t)i * c;
    for (int j = i; j < c; j++) Hr[j] += tr[j];
  }
}

static void hess_worker(void *arg, int ith, int nth) {
  const hess_task *h = arg;
  int nt = (h->cols + HESS_TILE - 1) / HESS_TILE;
  /* tiles shrink down the triangle: deal them out boustrophedon (0 1 1 0 0 1 ...) to balance */
  for (int k = 0; k < nt; k++) {
    int round = k / nth, pos = k % nth, owner = round % 2 ? nth - 1 - pos : pos;
    if (owner == ith) hess_tile(h, k);
  }
}

void qlm_calib_hessian_add(double *H, float *tmp, const float *X, int T, int cols, qlm_pool *pool) {
  hess_task h = {.H = H, .tmp = tmp, .X = X, .T = T, .cols = cols};
  qlm_pool_run(pool, hess_worker, &h);
}

/* Accumulate one slot's inputs X [T x cols]: absmax, sums of squares and of |x|, and (optionally)
 * X^T X — per call in f32, then added into the double sum.
 *
 * Why f32 per call is enough: an entry of one call's X^T X is a sum of T <= seq_len products; in
 * f32 (products and sums rounded to 2^-24) its error is at most ~T * 2^-24 * sum_t |x_ti x_tj|
 * <= T * 2^-24 * sqrt(H_ii H_jj) (Cauchy-Schwarz), i.e. 1.2e-4 relative to the diagonal for
 * T = 2048 in the worst case, ~sqrt(T) * 2^-24 = 3e-6 typically; the calls are then summed in
 * double (no further growth).  GPTQ adds damp = 1% of the mean diagonal before inverting, two
 * orders above this, and the reference implementations (AutoGPTQ, IST-DASLab gptq) themselves
 * accumulate H = X X^T in float32 on the GPU over all samples.  Only the upper triangle is kept
 * here; qlm_calib_run mirrors it once per layer. */
static void accumulate(void *ctx, int layer, qlm_linear_slot slot, const float *X, int T, int cols) {
  (void)layer;
  acc_ctx *a = ctx;
  double t0 = wall_s();
  qlm_layer_stats *st = a->st;
  col_task ct = {.st = st, .slot = slot, .X = X, .T = T, .cols = cols};
  qlm_pool_run(a->pool, col_worker, &ct);
  float call_max = 0.0f;
  for (int i = 0; i < (a->pool ? qlm_pool_size(a->pool) : 1); i++) call_max = fmaxf(call_max, ct.call_max[i]);
  if (slot == QLM_SLOT_QKV) st->n_tokens += T, st->n_calls++; /* q/k/v's input comes first in every call */
  if (st->n_calls > 0 && st->n_calls <= a->max_calls) st->call_absmax[slot][st->n_calls - 1] = call_max;
  if (a->want_hessian) qlm_calib_hessian_add(st->hessian[slot], a->tmp, X, T, cols, a->pool);
  a->stats_s += wall_s() - t0;
}

/* Copy the accumulated upper triangles of every Hessian into the lower ones (symmetric H). */
static void mirror_hessians(qlm_layer_stats *st) {
  for (int k = 0; k < QLM_N_SLOTS; k++) {
    double *H = st->hessian[k];
    size_t c = (size_t)st->cols[k];
    for (size_t i = 0; H && i < c; i++)
      for (size_t j = 0; j < i; j++) H[i * c + j] = H[j * c + i];
  }
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

int qlm_calib_run(qlm_model *m, const int32_t *tokens, int n_samples, int seq_len, const qlm_calib_opts *o,
                  int n_threads, qlm_calib_layer_fn on_layer, void *ctx, qlm_error *err) {
  const qlm_hparams *hp = &m->hp;
  size_t stride = (size_t)seq_len * (size_t)hp->n_embd, total;
  if (qlm_mul_overflow(stride, (size_t)n_samples, &total) || qlm_mul_overflow(total, sizeof(float), &total))
    return qlm_fail(err, QLM_ELIMIT, "calibration: %d x %d tokens are too many", n_samples, seq_len);
  int max_cols = hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd;
  if (hp->n_head * hp->head_dim > max_cols) max_cols = hp->n_head * hp->head_dim;
  float *xs = qlm_malloc(total, "calibration activations", err);
  int32_t *pos = qlm_malloc((size_t)seq_len * 2 * sizeof(int32_t), "calibration positions", err);
  float *tmp = o->want_hessian ? qlm_malloc((size_t)max_cols * max_cols * sizeof(float), "a Hessian scratch", err) : NULL;
  qlm_state *s = NULL;
  qlm_layer_stats st = {0};
  int rc = (!xs || !pos || (o->want_hessian && !tmp)) ? QLM_ENOMEM : QLM_OK;
  if (!rc) rc = qlm_state_new(m, 1, seq_len, seq_len, n_threads, &s, err);
  if (!rc) rc = qlm_state_set_gemm_attention(s, true, err); /* a window is one sequence: attention by BLAS */
  if (!rc) rc = stats_new(hp, o->want_hessian, n_samples, &st, err);
  int32_t *seq = pos + seq_len;
  for (int i = 0; !rc && i < seq_len; i++) pos[i] = i, seq[i] = 0;
  qlm_batch b = {.n = seq_len, .token = tokens, .pos = pos, .seq = seq};
  for (int k = 0; !rc && k < n_samples; k++) {
    qlm_batch bk = b;
    bk.token += (size_t)k * seq_len;
    rc = qlm_embed(m, &bk, xs + (size_t)k * stride, err);
  }
  long nproc = sysconf(_SC_NPROCESSORS_ONLN); /* as qlm_state_new reads n_threads <= 0 */
  int nt = n_threads > 0 ? n_threads : nproc > 0 ? (int)(nproc < 256 ? nproc : 256) : 1;
  if (nt > CALIB_MAX_THREADS) nt = CALIB_MAX_THREADS;
  qlm_pool *pool = !rc && nt > 1 ? qlm_pool_new(nt) : NULL;
  if (!rc && nt > 1 && !pool) rc = qlm_fail(err, QLM_ENOMEM, "calibration: cannot create a pool of %d threads", nt);
  acc_ctx a = {.st = &st, .tmp = tmp, .want_hessian = o->want_hessian, .max_calls = n_samples, .pool = pool};
  double w[3] = {0}, c[3] = {0}; /* wall and CPU seconds: statistics pass, on_layer, post pass */
  for (int il = 0; !rc && il < hp->n_layer; il++) {
    stats_clear(&st);
    double w0 = wall_s(), c0 = cpu_s();
    rc = run_layer(m, s, &b, xs, true, n_samples, il, accumulate, &a, err);
    if (!rc) mirror_hessians(&st);
    double w1 = wall_s(), c1 = cpu_s();
    if (!rc && on_layer) rc = on_layer(ctx, il, &st, err);
    double w2 = wall_s(), c2 = cpu_s();
    if (!rc) rc = run_layer(m, s, &b, xs, false, n_samples, il, NULL, NULL, err);
    w[0] += w1 - w0, w[1] += w2 - w1, w[2] += wall_s() - w2;
    c[0] += c1 - c0, c[1] += c2 - c1, c[2] += cpu_s() - c2;
  }
  /* the phase split for bench/gptq-speed (stderr: the command's own output is unchanged) */
  const char *tv = getenv("QLM_CALIB_TIMES");
  if (!rc && tv && *tv && strcmp(tv, "0"))
    fprintf(stderr,
            "calib phases (wall / CPU s): statistics forward %.2f / %.2f (of which input statistics + Hessians "
            "%.2f wall), per-layer method %.2f / %.2f, forward through the quantized layer %.2f / %.2f; "
            "%d x %d tokens, %d layers\n",
            w[0], c[0], a.stats_s, w[1], c[1], w[2], c[2], n_samples, seq_len, hp->n_layer);
  qlm_pool_free(pool);
  stats_free(&st);
  qlm_state_free(s);
  free(tmp);
  free(pos);
  free(xs);
  return rc;
}
