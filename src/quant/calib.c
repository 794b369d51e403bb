/* calib.c — calibration text, windows and the sequential statistics pass (calib.h). */
#include "quant/calib.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"

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
  float *tmp;            /* [max cols^2] ssyrk scratch */
  int max_calls;         /* capacity of st->call_absmax */
  bool want_hessian;
} acc_ctx;

/* Accumulate one slot's inputs X [T x cols]: absmax, sum of squares and (optionally) X^T X — the
 * latter per call in float by BLAS (ssyrk, T <= seq_len terms), then added in double. */
static void accumulate(void *ctx, int layer, qlm_linear_slot slot, const float *X, int T, int cols) {
  (void)layer;
  acc_ctx *a = ctx;
  qlm_layer_stats *st = a->st;
  float *amax = st->absmax[slot];
  double *sq = st->sqsum[slot], *ab = st->abssum[slot];
  float call_max = 0.0f;
  for (int t = 0; t < T; t++)
    for (int j = 0; j < cols; j++) {
      float x = X[(size_t)t * cols + j];
      amax[j] = fmaxf(amax[j], fabsf(x));
      call_max = fmaxf(call_max, fabsf(x));
      sq[j] += (double)x * (double)x;
      ab[j] += fabs((double)x);
    }
  if (slot == QLM_SLOT_QKV) st->n_tokens += T, st->n_calls++; /* q/k/v's input comes first in every call */
  if (st->n_calls > 0 && st->n_calls <= a->max_calls) st->call_absmax[slot][st->n_calls - 1] = call_max;
  if (!a->want_hessian) return;
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, cols, T, 1.0f, X, cols, 0.0f, a->tmp, cols);
  double *H = st->hessian[slot];
  for (int i = 0; i < cols; i++)
    for (int j = i; j < cols; j++) {
      H[(size_t)i * cols + j] += a->tmp[(size_t)i * cols + j];
      if (j != i) H[(size_t)j * cols + i] = H[(size_t)i * cols + j];
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

/* Run every sample's stream xs through layer il: in place, or (scratch non-NULL) on a copy so
 * xs keeps the layer's input (the statistics pass, before the caller quantizes the layer). */
static int run_layer(qlm_model *m, qlm_state *s, const qlm_batch *b, float *xs, float *scratch, int n_samples,
                     int il, qlm_linear_hook hook, void *ctx, qlm_error *err) {
  size_t stride = (size_t)b->n * (size_t)m->hp.n_embd;
  for (int k = 0; k < n_samples; k++) {
    qlm_state_clear(s, 0);
    qlm_batch bk = *b;
    bk.token += (size_t)k * b->n;
    float *x = xs + (size_t)k * stride;
    if (scratch) x = memcpy(scratch, x, stride * sizeof *x);
    int rc = qlm_forward_layer(m, s, &bk, il, x, hook, ctx, err);
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
  if (!rc) rc = stats_new(hp, o->want_hessian, n_samples, &st, err);
  int32_t *seq = pos + seq_len;
  for (int i = 0; !rc && i < seq_len; i++) pos[i] = i, seq[i] = 0;
  qlm_batch b = {.n = seq_len, .token = tokens, .pos = pos, .seq = seq};
  for (int k = 0; !rc && k < n_samples; k++) {
    qlm_batch bk = b;
    bk.token += (size_t)k * seq_len;
    rc = qlm_embed(m, &bk, xs + (size_t)k * stride, err);
  }
  acc_ctx a = {.st = &st, .tmp = tmp, .want_hessian = o->want_hessian, .max_calls = n_samples};
  float *scratch = rc ? NULL : qlm_malloc(stride * sizeof(float), "calibration activations", err);
  if (!rc && !scratch) rc = QLM_ENOMEM;
  for (int il = 0; !rc && il < hp->n_layer; il++) {
    stats_clear(&st);
    rc = run_layer(m, s, &b, xs, scratch, n_samples, il, accumulate, &a, err);
    if (!rc && on_layer) rc = on_layer(ctx, il, &st, err);
    if (!rc) rc = run_layer(m, s, &b, xs, NULL, n_samples, il, NULL, NULL, err);
  }
  free(scratch);
  stats_free(&st);
  qlm_state_free(s);
  free(tmp);
  free(pos);
  free(xs);
  return rc;
}
