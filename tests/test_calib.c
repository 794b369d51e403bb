/* test_calib.c — calibration: text and windows, the layer-by-layer forward, the statistics of
 * the linear inputs, and the driver's sequential pass for calibrated methods.
 * References: the model's own batched forward (logits), and layer-0 inputs computed here from the
 * embedding and norm weights in double. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"
#include "model/model.h"
#include "quant/bitalloc.h"
#include "quant/calib.h"
#include "quant/method.h"
#include "quant/quantize.h"
#include "tokenizer/tokenizer.h"

#define STORIES "models/stories260K/stories260K.gguf"

static qlm_source *g_src;
static qlm_model *g_m;

static int setup(void **st) {
  (void)st;
  char *p = tu_shared(STORIES);
  qlm_error err = {0};
  int rc = qlm_source_open(p, NULL, &g_src, &err) || qlm_model_load(g_src, &g_m, &err);
  free(p);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  return rc ? -1 : 0;
}

static int teardown(void **st) {
  (void)st;
  qlm_model_free(g_m);
  qlm_source_close(g_src);
  return 0;
}

/* Embedding + qlm_forward_layer over every layer + final norm and head = qlm_forward's logits. */
static void test_forward_layer_equals_forward(void **st) {
  (void)st;
  const qlm_hparams *hp = &g_m->hp;
  enum { T = 24 };
  int32_t tok[T], pos[T], seq[T];
  uint64_t r = 7;
  for (int i = 0; i < T; i++) tok[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)hp->n_vocab), pos[i] = i, seq[i] = 0;
  qlm_error err = {0};
  qlm_state *s;
  assert_int_equal(qlm_state_new(g_m, 1, T, T, 1, &s, &err), 0);
  float *ref = malloc((size_t)T * hp->n_vocab * sizeof *ref), *x = malloc((size_t)T * hp->n_embd * sizeof *x);
  qlm_batch b = {.n = T, .token = tok, .pos = pos, .seq = seq};
  assert_int_equal(qlm_forward(g_m, s, &b, ref, &err), 0);
  qlm_state_clear(s, 0);
  assert_int_equal(qlm_embed(g_m, &b, x, &err), 0);
  for (int il = 0; il < hp->n_layer; il++) assert_int_equal(qlm_forward_layer(g_m, s, &b, il, x, NULL, NULL, &err), 0);
  /* final RMS norm and the head, written out here */
  float *xn = malloc((size_t)T * hp->n_embd * sizeof *xn), *got = malloc((size_t)T * hp->n_vocab * sizeof *got);
  for (int t = 0; t < T; t++) {
    const float *xr = x + (size_t)t * hp->n_embd;
    float ss = 0;
    for (int i = 0; i < hp->n_embd; i++) ss += xr[i] * xr[i];
    float scale = 1.0f / sqrtf(ss / (float)hp->n_embd + hp->norm_eps);
    for (int i = 0; i < hp->n_embd; i++) xn[(size_t)t * hp->n_embd + i] = xr[i] * scale * g_m->out_norm[i];
  }
  qlm_matmul(&g_m->output, xn, T, got, NULL);
  double maxd = 0;
  for (size_t i = 0; i < (size_t)T * hp->n_vocab; i++) maxd = fmax(maxd, fabs((double)got[i] - ref[i]));
  print_message("layer-by-layer vs batched forward: max |dlogit| %.3g\n", maxd);
  assert_true(maxd < 1e-4); /* same kernels; only the final norm's summation order differs */
  free(xn), free(got), free(ref), free(x);
  qlm_state_free(s);
}

/* Statistics of layer 0's q/k/v input equal rmsnorm(embedding) * attn_norm computed in double. */
typedef struct cap {
  qlm_layer_stats copy0; /* layer 0 only: absmax/sqsum/H of slot QKV */
  int layers_seen;
  int64_t n_tokens;
} cap;

static int capture(void *ctx, int il, const qlm_layer_stats *st, qlm_error *err) {
  (void)err;
  cap *c = ctx;
  c->layers_seen++;
  c->n_tokens = st->n_tokens;
  if (il == 0) {
    int n = st->cols[QLM_SLOT_QKV];
    c->copy0.cols[0] = n;
    c->copy0.absmax[0] = malloc((size_t)n * sizeof(float));
    c->copy0.sqsum[0] = malloc((size_t)n * sizeof(double));
    c->copy0.hessian[0] = malloc((size_t)n * n * sizeof(double));
    memcpy(c->copy0.absmax[0], st->absmax[QLM_SLOT_QKV], (size_t)n * sizeof(float));
    memcpy(c->copy0.sqsum[0], st->sqsum[QLM_SLOT_QKV], (size_t)n * sizeof(double));
    memcpy(c->copy0.hessian[0], st->hessian[QLM_SLOT_QKV], (size_t)n * n * sizeof(double));
    for (int k = 0; k < QLM_N_SLOTS; k++) assert_true(st->n_tokens > 0 && st->sqsum[k][0] >= 0);
    assert_int_equal(st->cols[QLM_SLOT_DOWN], g_m->hp.n_ff);
  }
  return QLM_OK;
}

/* Layer 0's q/k/v inputs rmsnorm(embedding) * attn_norm of n tokens, in double: their X^T X
 * (H, E x E), sums of squares and absmax (E = n_embd). */
static void layer0_reference(const int32_t *tok, int n, double *H, double *sq, double *am) {
  const qlm_hparams *hp = &g_m->hp;
  int E = hp->n_embd;
  const float *emb = g_m->tok_embd.data, *w = g_m->layers[0].attn_norm;
  for (int t = 0; t < n; t++) {
    const float *e = emb + (size_t)tok[t] * E;
    double ss = 0, x[256];
    for (int i = 0; i < E; i++) ss += (double)e[i] * e[i];
    double scale = 1.0 / sqrt(ss / E + hp->norm_eps);
    for (int i = 0; i < E; i++) x[i] = e[i] * scale * w[i];
    for (int i = 0; i < E; i++) {
      sq[i] += x[i] * x[i];
      am[i] = fmax(am[i], fabs(x[i]));
      for (int j = 0; j < E; j++) H[(size_t)i * E + j] += x[i] * x[j];
    }
  }
}

static void test_layer0_statistics(void **st) {
  (void)st;
  const qlm_hparams *hp = &g_m->hp;
  enum { NS = 3, L = 40 };
  int32_t tok[NS * L];
  uint64_t r = 11;
  for (int i = 0; i < NS * L; i++) tok[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)hp->n_vocab);
  cap c = {0};
  qlm_calib_opts o = {.want_hessian = true};
  qlm_error err = {0};
  assert_int_equal(qlm_calib_run(g_m, tok, NS, L, &o, 2, capture, &c, &err), 0);
  assert_int_equal(c.layers_seen, hp->n_layer);
  assert_int_equal(c.n_tokens, NS * L);
  int E = hp->n_embd;
  double *H = calloc((size_t)E * E, sizeof *H), *sq = calloc((size_t)E, sizeof *sq), *am = calloc((size_t)E, sizeof *am);
  layer0_reference(tok, NS * L, H, sq, am);
  double hmax = 0, hdiff = 0;
  for (int i = 0; i < E; i++) {
    assert_true(fabs(c.copy0.absmax[0][i] - am[i]) <= 1e-5 * am[i] + 1e-7);
    assert_true(fabs(c.copy0.sqsum[0][i] - sq[i]) <= 1e-4 * sq[i] + 1e-7);
    for (int j = 0; j < E; j++) {
      hmax = fmax(hmax, fabs(H[(size_t)i * E + j]));
      hdiff = fmax(hdiff, fabs(c.copy0.hessian[0][(size_t)i * E + j] - H[(size_t)i * E + j]));
      assert_true(c.copy0.hessian[0][(size_t)i * E + j] == c.copy0.hessian[0][(size_t)j * E + i]); /* symmetric */
    }
  }
  print_message("layer 0 Hessian: max |dH| %.3g of max |H| %.3g\n", hdiff, hmax);
  /* float x (1 ulp) and float products summed over <= 40 tokens per sample */
  assert_true(hdiff <= 1e-5 * hmax);
  free(H), free(sq), free(am);
  free(c.copy0.absmax[0]), free(c.copy0.sqsum[0]), free(c.copy0.hessian[0]);
}

/* The pass gathers a slot's calls into products of up to 2048 rows (calib.c, HESS_BATCH): five
 * 500-token samples make one product of four calls and one of the fifth.  Layer 0's q/k/v
 * Hessian from qlm_calib_run, f32 and bf16, against the double reference, within the per-product
 * bounds of the two tests below for T = 2000 rows, plus 8 2^-24 for the f32 inputs' own rounding
 * (norm and scale: a few ulps of each x); a call dropped or counted twice moves H by ~1/5. */
static void test_hessian_gathered(void **st) {
  (void)st;
  const qlm_hparams *hp = &g_m->hp;
  enum { NS = 5, L = 500, TP = 2000 };
  assert_true(hp->n_ctx >= L);
  int32_t *tok = malloc(NS * L * sizeof *tok);
  uint64_t r = 23;
  for (int i = 0; i < NS * L; i++) tok[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)hp->n_vocab);
  int E = hp->n_embd;
  double *H = calloc((size_t)E * E, sizeof *H), *sq = calloc((size_t)E, sizeof *sq), *am = calloc((size_t)E, sizeof *am);
  layer0_reference(tok, NS * L, H, sq, am);
  for (int bf16 = 0; bf16 < 2; bf16++) {
    cap c = {0};
    qlm_calib_opts o = {.want_hessian = true, .bf16 = bf16};
    qlm_error err = {0};
    assert_int_equal(qlm_calib_run(g_m, tok, NS, L, &o, 2, capture, &c, &err), 0);
    assert_int_equal(c.n_tokens, NS * L);
    double u = 0x1p-24, rel = bf16 ? 0x1p-8 + 0x1p-18 + (TP + 5.0 + 8.0) * u : (TP + 8.0) * u, worst = 0.0;
    for (int i = 0; i < E; i++)
      for (int j = 0; j < E; j++) {
        double d = fabs(c.copy0.hessian[0][(size_t)i * E + j] - H[(size_t)i * E + j]);
        double bound = rel * sqrt(H[(size_t)i * E + i] * H[(size_t)j * E + j]);
        worst = fmax(worst, d / bound);
        if (d > bound) fail_msg("%s: H(%d, %d) off by %g, bound %g", bf16 ? "bf16" : "f32", i, j, d, bound);
      }
    print_message("gathered %s Hessian: worst |dH| / bound %.3g\n", bf16 ? "bf16" : "f32", worst);
    assert_true(worst > 0.0);
    free(c.copy0.absmax[0]), free(c.copy0.sqsum[0]), free(c.copy0.hessian[0]);
  }
  free(H), free(sq), free(am), free(tok);
}

/* One call's inputs X [T x C] for the Hessian tests: correlated (a shared factor per token gives
 * large off-diagonal sums) and offset; ref (upper triangle) += X^T X in double. */
static void hessian_call(float *X, int T, int C, uint64_t *r, double *ref) {
  for (int t = 0; t < T; t++) {
    float common = tu_rand_normal(r);
    for (int j = 0; j < C; j++)
      X[(size_t)t * C + j] = (1.0f + 0.01f * (float)j) * (0.5f + common + 0.3f * tu_rand_normal(r));
  }
  for (int i = 0; i < C; i++)
    for (int j = i; j < C; j++) {
      double acc = 0.0;
      for (int t = 0; t < T; t++) acc += (double)X[(size_t)t * C + i] * X[(size_t)t * C + j];
      ref[(size_t)i * C + j] += acc;
    }
}

/* The Hessian accumulation (qlm_calib_hessian_add: f32 BLAS per call, double across calls) against
 * a double reference over a 2048-token call with correlated, offset inputs, within the bound
 * argued in calib.c: |dH_ij| <= T * 2^-24 * sqrt(H_ii H_jj) per call; bit-identical for any
 * thread count; only the upper triangle is written. */
static void test_hessian_f32_vs_double(void **st) {
  (void)st;
  enum { T = 2048, C = 200, CALLS = 2 }; /* 200 columns: three whole 64-row tiles and a partial one */
  float *X = malloc((size_t)T * C * sizeof *X), *tmp = malloc((size_t)C * C * sizeof *tmp);
  double *ref = calloc((size_t)C * C, sizeof *ref);
  double *H[3];
  uint64_t r = 5;
  qlm_pool *pools[3] = {NULL, qlm_pool_new(2), qlm_pool_new(3)};
  for (int k = 0; k < 3; k++) H[k] = calloc((size_t)C * C, sizeof(double));
  for (int call = 0; call < CALLS; call++) {
    hessian_call(X, T, C, &r, ref);
    for (int k = 0; k < 3; k++) qlm_calib_hessian_add(H[k], tmp, X, T, C, pools[k]);
  }
  double worst = 0.0, u = 0x1p-24;
  for (int i = 0; i < C; i++)
    for (int j = 0; j < C; j++) {
      size_t e = (size_t)i * C + j;
      if (j < i) {
        assert_true(H[0][e] == 0.0); /* lower triangle untouched */
        continue;
      }
      double bound = (double)T * u * sqrt(ref[(size_t)i * C + i] * ref[(size_t)j * C + j]);
      double d = fabs(H[0][e] - ref[e]);
      worst = fmax(worst, d / bound);
      assert_true(d <= bound);
      assert_true(H[1][e] == H[0][e] && H[2][e] == H[0][e]); /* thread-count invariant */
    }
  print_message("f32-per-call Hessian: worst |dH| / bound %.3g (bound T 2^-24 sqrt(Hii Hjj), T = %d)\n", worst, T);
  assert_true(worst > 0.0); /* the f32 path really rounds: the check can fail */
  for (int k = 0; k < 3; k++) free(H[k]), qlm_pool_free(pools[k]);
  free(X), free(tmp), free(ref);
}

/* The bf16 Hessian (qlm_calib_hessian_add_bf16, --calib-dtype bf16) against the double-precision
 * X^T X of the unrounded inputs: rounding each x to bf16 moves a product by at most
 * (2 * 2^-9 + 2^-18) |x_i x_j|, the f32 chain of a call (one rounding per multiply-add) adds
 * (T + 1) 2^-24 of sum |x_i x_j|, so per call |dH_ij| <= (2^-8 + 2^-18 + (T + 5) 2^-24)
 * sqrt(H_ii H_jj) (Cauchy-Schwarz; 4 spare).  T = 2000 and 1999 (odd: the last pair's partner
 * is zero), 200 columns (a partial 16-column group); 1, 2 and 3 threads give the same bits. */
static void test_hessian_bf16_vs_double(void **st) {
  (void)st;
  enum { T = 2000, C = 200, CALLS = 2 };
  float *X = malloc((size_t)T * C * sizeof *X), *tmp = malloc((size_t)C * C * sizeof *tmp);
  qlm_bf16 *xt = malloc((size_t)qlm_bgemm_packed_len(T, C) * sizeof *xt);
  double *ref = calloc((size_t)C * C, sizeof *ref), *hf = calloc((size_t)C * C, sizeof *hf);
  double *H[3];
  uint64_t r = 11;
  qlm_pool *pools[3] = {NULL, qlm_pool_new(2), qlm_pool_new(3)};
  for (int k = 0; k < 3; k++) H[k] = calloc((size_t)C * C, sizeof(double));
  for (int call = 0; call < CALLS; call++) {
    int Tc = call ? T - 1 : T;
    hessian_call(X, Tc, C, &r, ref);
    for (int k = 0; k < 3; k++) qlm_calib_hessian_add_bf16(H[k], tmp, xt, X, Tc, C, pools[k]);
    qlm_calib_hessian_add(hf, tmp, X, Tc, C, NULL);
  }
  double worst = 0.0, rel = 0x1p-8 + 0x1p-18 + (T + 5.0) * 0x1p-24, dsum = 0.0;
  for (int i = 0; i < C; i++)
    for (int j = i; j < C; j++) {
      size_t e = (size_t)i * C + j;
      double bound = rel * sqrt(ref[(size_t)i * C + i] * ref[(size_t)j * C + j]), d = fabs(H[0][e] - ref[e]);
      worst = fmax(worst, d / bound);
      assert_true(d <= bound);
      assert_true(H[1][e] == H[0][e] && H[2][e] == H[0][e]);
      dsum += fabs(H[0][e] - hf[e]);
    }
  for (int i = 1; i < C; i++) assert_true(H[0][(size_t)i * C] == 0.0); /* lower triangle untouched */
  print_message("bf16 Hessian: worst |dH| / bound %.3g (bound %.3g sqrt(Hii Hjj))\n", worst, rel);
  assert_true(dsum > 0.0); /* it really is not the f32 path */
  for (int k = 0; k < 3; k++) free(H[k]), qlm_pool_free(pools[k]);
  free(X), free(tmp), free(xt), free(ref), free(hf);
}

/* The statistics pass sees the same linear inputs as the full layer (qlm_forward_layer_inputs
 * leaves x alone and skips only the last product); qlm_calib_run's statistics of the layer-0 q/k/v
 * input (the embeddings' norm: no matmul before it) do not depend on the thread count, and every
 * Hessian comes out symmetric. */
typedef struct grab {
  float *x[QLM_N_SLOTS];
  int cols[QLM_N_SLOTS];
} grab;

static void grab_hook(void *ctx, int layer, qlm_linear_slot slot, const float *X, int T, int cols) {
  (void)layer;
  grab *g = ctx;
  g->cols[slot] = cols;
  g->x[slot] = realloc(g->x[slot], (size_t)T * cols * sizeof(float));
  memcpy(g->x[slot], X, (size_t)T * cols * sizeof(float));
}

typedef struct all_stats {
  double *h[64][QLM_N_SLOTS];
  double *sq[64][QLM_N_SLOTS];
} all_stats;

static int keep_all(void *ctx, int il, const qlm_layer_stats *st, qlm_error *err) {
  (void)err;
  all_stats *a = ctx;
  if (il >= 64) return QLM_OK;
  for (int k = 0; k < QLM_N_SLOTS; k++) {
    size_t c = (size_t)st->cols[k];
    a->h[il][k] = malloc(c * c * sizeof(double));
    a->sq[il][k] = malloc(c * sizeof(double));
    memcpy(a->h[il][k], st->hessian[k], c * c * sizeof(double));
    memcpy(a->sq[il][k], st->sqsum[k], c * sizeof(double));
  }
  return QLM_OK;
}

static void test_inputs_pass(void **st) {
  (void)st;
  const qlm_hparams *hp = &g_m->hp;
  enum { T = 30, NS = 2 };
  int32_t tok[NS * T], pos[T], seq[T];
  uint64_t r = 9;
  for (int i = 0; i < NS * T; i++) tok[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)hp->n_vocab);
  for (int i = 0; i < T; i++) pos[i] = i, seq[i] = 0;
  qlm_error err = {0};
  qlm_state *s;
  assert_int_equal(qlm_state_new(g_m, 1, T, T, 2, &s, &err), 0);
  qlm_batch b = {.n = T, .token = tok, .pos = pos, .seq = seq};
  size_t n = (size_t)T * hp->n_embd;
  float *x = malloc(n * sizeof *x), *x0 = malloc(n * sizeof *x0);
  assert_int_equal(qlm_embed(g_m, &b, x, &err), 0);
  for (int il = 0; il < 2 && il < hp->n_layer; il++) {
    grab full = {0}, part = {0};
    memcpy(x0, x, n * sizeof *x);
    qlm_state_clear(s, 0);
    assert_int_equal(qlm_forward_layer_inputs(g_m, s, &b, il, x, grab_hook, &part, &err), 0);
    assert_memory_equal(x, x0, n * sizeof *x); /* only read */
    qlm_state_clear(s, 0);
    assert_int_equal(qlm_forward_layer(g_m, s, &b, il, x, grab_hook, &full, &err), 0);
    for (int k = 0; k < QLM_N_SLOTS; k++) {
      assert_true(full.cols[k] > 0 && full.cols[k] == part.cols[k]);
      assert_memory_equal(full.x[k], part.x[k], (size_t)T * full.cols[k] * sizeof(float));
      free(full.x[k]), free(part.x[k]);
    }
  }
  qlm_state_free(s);
  free(x), free(x0);
  /* statistics with 1 and 3 threads */
  all_stats a1 = {0}, a3 = {0};
  qlm_calib_opts o = {.want_hessian = true};
  assert_int_equal(qlm_calib_run(g_m, tok, NS, T, &o, 1, keep_all, &a1, &err), 0);
  assert_int_equal(qlm_calib_run(g_m, tok, NS, T, &o, 3, keep_all, &a3, &err), 0);
  int cols[QLM_N_SLOTS] = {hp->n_embd, hp->n_head * hp->head_dim, hp->n_embd, hp->n_ff};
  for (int il = 0; il < hp->n_layer && il < 64; il++)
    for (int k = 0; k < QLM_N_SLOTS; k++) {
      size_t c = (size_t)cols[k];
      if (il == 0 && k == QLM_SLOT_QKV) { /* later inputs come through qlm_matmul, whose BLAS calls differ by thread count */
        assert_memory_equal(a1.h[il][k], a3.h[il][k], c * c * sizeof(double));
        assert_memory_equal(a1.sq[il][k], a3.sq[il][k], c * sizeof(double));
      }
      for (size_t i = 0; i < c; i++)
        for (size_t j = 0; j < i; j++) assert_true(a1.h[il][k][i * c + j] == a1.h[il][k][j * c + i]);
      free(a1.h[il][k]), free(a3.h[il][k]), free(a1.sq[il][k]), free(a3.sq[il][k]);
    }
}

/* The BLAS attention of the calibration passes (qlm_state_set_gemm_attention) against the
 * default row-by-row kernels: every layer's output over a 200-token window (blocks of 64 rows and
 * a partial one) within 2e-5 of the residual stream's scale (f32 sums in another order and the
 * polynomial exp: ~1e-6 expected). */
static void test_gemm_attention(void **st) {
  (void)st;
  const qlm_hparams *hp = &g_m->hp;
  int T = 200 < hp->n_ctx ? 200 : hp->n_ctx;
  int32_t *tok = malloc((size_t)T * sizeof *tok), *pos = malloc((size_t)T * sizeof *pos), *seq = calloc((size_t)T, sizeof *seq);
  uint64_t r = 13;
  for (int i = 0; i < T; i++) tok[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)hp->n_vocab), pos[i] = i;
  qlm_error err = {0};
  qlm_state *s;
  assert_int_equal(qlm_state_new(g_m, 1, T, T, 2, &s, &err), 0);
  qlm_batch b = {.n = T, .token = tok, .pos = pos, .seq = seq};
  size_t n = (size_t)T * hp->n_embd;
  float *xa = malloc(n * sizeof *xa), *xb = malloc(n * sizeof *xb), *xc = malloc(n * sizeof *xc);
  assert_int_equal(qlm_embed(g_m, &b, xa, &err), 0);
  memcpy(xb, xa, n * sizeof *xa);
  memcpy(xc, xa, n * sizeof *xa);
  double worst = 0.0;
  for (int il = 0; il < hp->n_layer; il++) {
    assert_int_equal(qlm_state_set_gemm_attention(s, false, &err), 0);
    qlm_state_clear(s, 0);
    assert_int_equal(qlm_forward_layer(g_m, s, &b, il, xa, NULL, NULL, &err), 0);
    assert_int_equal(qlm_state_set_gemm_attention(s, true, &err), 0);
    qlm_state_clear(s, 0);
    assert_int_equal(qlm_forward_layer(g_m, s, &b, il, xb, NULL, NULL, &err), 0);
    double scale = 0.0, d = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(xa[i])), d = fmax(d, fabs((double)xa[i] - xb[i]));
    worst = fmax(worst, d / scale);
    memcpy(xb, xa, n * sizeof *xa); /* each layer from the same input */
  }
  print_message("BLAS attention vs row kernels: worst layer output difference %.3g of max |x|\n", worst);
  assert_true(worst < 2e-5);
  assert_true(worst > 0.0); /* it really took the other path */
  qlm_state_free(s);
  free(xa), free(xb), free(xc), free(tok), free(pos), free(seq);
}

/* --calib-dtype bf16's attention (qlm_state_set_bf16: q/k/v products, scores and weights·values
 * in bf16, softmax f32) against the f32 state, stage by stage over every layer of a 200-token
 * window (blocks of 64 rows and a partial one): the attention outputs within 2^-4 of their
 * largest magnitude, not equal (the bf16 path ran), and the same bits at 1 and 3 threads.  bf16
 * moves q, k, v and the weights by ~2^-9 relative, and a score s by up to ~2^-8 |s|, which exp
 * turns into a relative change of the weight: stories260K's peaky heads (head_dim 8) measured
 * 0.046 (0.015 while the scores were f32); a wrong head, block, key range or mask moves the
 * outputs by their own size. */
static void test_bf16_attention(void **st) {
  (void)st;
  const qlm_hparams *hp = &g_m->hp;
  int T = 200 < hp->n_ctx ? 200 : hp->n_ctx, QD = hp->n_head * hp->head_dim;
  int32_t *tok = malloc((size_t)T * sizeof *tok), *pos = malloc((size_t)T * sizeof *pos), *seq = calloc((size_t)T, sizeof *seq);
  uint64_t r = 31;
  for (int i = 0; i < T; i++) tok[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)hp->n_vocab), pos[i] = i;
  qlm_error err = {0};
  qlm_state *s[3];
  const int threads[3] = {2, 1, 3}; /* f32, then bf16 at 1 and 3 threads */
  for (int k = 0; k < 3; k++) {
    assert_int_equal(qlm_state_new(g_m, 1, T, T, threads[k], &s[k], &err), 0);
    assert_int_equal(qlm_state_set_bf16(s[k], k > 0, &err), 0);
  }
  qlm_batch b = {.n = T, .token = tok, .pos = pos, .seq = seq};
  size_t n = (size_t)T * hp->n_embd, na = (size_t)T * QD;
  float *x = malloc(n * sizeof *x), *att[3];
  for (int k = 0; k < 3; k++) att[k] = malloc(na * sizeof *att[k]);
  assert_int_equal(qlm_embed(g_m, &b, x, &err), 0);
  double worst = 0.0;
  for (int il = 0; il < hp->n_layer; il++) {
    for (int k = 0; k < 3; k++) {
      const float *a;
      qlm_state_clear(s[k], 0);
      assert_int_equal(qlm_stage_attention(g_m, s[k], &b, il, x, NULL, &a, &err), 0);
      memcpy(att[k], a, na * sizeof *a);
    }
    assert_memory_equal(att[1], att[2], na * sizeof *att[1]);
    double scale = 0.0, d = 0.0;
    for (size_t i = 0; i < na; i++) scale = fmax(scale, fabs(att[0][i])), d = fmax(d, fabs((double)att[0][i] - att[1][i]));
    worst = fmax(worst, d / scale);
    assert_int_equal(qlm_forward_layer(g_m, s[0], &b, il, x, NULL, NULL, &err), 0); /* next layer's input: f32 */
  }
  print_message("bf16 attention vs f32: worst layer difference %.3g of max |attention output|\n", worst);
  assert_true(worst < 0x1p-4);
  assert_true(worst > 0.0);
  for (int k = 0; k < 3; k++) qlm_state_free(s[k]), free(att[k]);
  free(x), free(tok), free(pos), free(seq);
}

static void test_text_and_windows(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/c.jsonl", dir);
  const char *jl = "{\"text\": \"Once upon a time there was a cat.\"}\n\n{\"text\": \"The dog ran to the park.\"}\n";
  tu_write_file(path, jl, strlen(jl));
  char *text;
  size_t len;
  qlm_error err = {0};
  assert_int_equal(qlm_calib_load_text(path, &text, &len, &err), 0);
  assert_string_equal(text, "Once upon a time there was a cat.\n\nThe dog ran to the park.");
  qlm_tokenizer *tok;
  assert_int_equal(qlm_tokenizer_new(&g_src->vocab, &tok, &err), 0);
  int32_t *all, *w1, *w2;
  int n_all, L1, L2;
  assert_int_equal(qlm_tokenize(tok, text, len, 0, 0, &all, &n_all, &err), 0);
  qlm_calib_opts o = {.n_samples = 5, .seq_len = 8, .seed = 3};
  assert_int_equal(qlm_calib_sample(tok, text, len, &o, &w1, &L1, &err), 0);
  assert_int_equal(qlm_calib_sample(tok, text, len, &o, &w2, &L2, &err), 0);
  assert_int_equal(L1, 8);
  assert_memory_equal(w1, w2, sizeof(int32_t) * 5 * 8); /* seeded */
  for (int s = 0; s < 5; s++) {
    assert_int_equal(w1[s * 8], g_src->vocab.bos_id); /* stories260K's vocabulary adds BOS */
    bool found = false; /* the other 7 tokens are a run of the tokenized text */
    for (int k = 0; k + 7 <= n_all && !found; k++) found = !memcmp(all + k, w1 + s * 8 + 1, 7 * sizeof(int32_t));
    assert_true(found);
  }
  free(w2);
  o.seq_len = 100000; /* longer than the text: shrinks to it */
  assert_int_equal(qlm_calib_sample(tok, text, len, &o, &w2, &L2, &err), 0);
  assert_int_equal(L2, n_all + 1);
  free(w1), free(w2), free(all), free(text);
  qlm_tokenizer_free(tok);
  /* a bad line is named */
  const char *bad = "{\"text\": \"ok\"}\n{\"txt\": 1}\n";
  tu_write_file(path, bad, strlen(bad));
  assert_int_equal(qlm_calib_load_text(path, &text, &len, &err), QLM_EFORMAT);
  char want[600];
  snprintf(want, sizeof want, "%s:2", path);
  assert_non_null(strstr(err.msg, want));
  unlink(path);
  rmdir(dir);
  free(dir);
}

/* The driver's sequential pass: a calibrated method (here a probe that checks what it gets and
 * then quantizes with 8-bit absmax) sees every linear matrix once, layer by layer, with the
 * statistics of its own input. */
static int g_probe_calls;
static int probe_quantize(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                          qlm_qtensor *out, qlm_error *err) {
  assert_non_null(calib);
  assert_int_equal(calib->cols, cols);
  assert_int_equal(calib->n_tokens, 2 * 16);
  assert_non_null(calib->hessian);
  for (int64_t j = 0; j < cols; j++) /* H/n's diagonal is the mean square */
    assert_true(fabs(calib->hessian[j * cols + j] - calib->act_sqmean[j]) <= 1e-5 * calib->act_sqmean[j] + 1e-9);
  g_probe_calls++;
  qlm_quant_opts a = *o;
  a.bits = 8;
  return qlm_method_absmax.quantize(W, rows, cols, NULL, &a, out, err);
}

static void test_driver_calibrated_pass(void **st) {
  (void)st;
  qlm_quant_method probe = qlm_method_absmax;
  probe.name = "probe";
  probe.needs_calib = probe.needs_hessian = true;
  probe.quantize = probe_quantize;
  char *dir = tu_tmpdir(), out[512], txt[512];
  snprintf(out, sizeof out, "%s/p.gguf", dir);
  snprintf(txt, sizeof txt, "%s/calib.txt", dir);
  const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
                     "One day, she saw a big red ball in the park.";
  tu_write_file(txt, text, strlen(text));
  qlm_quant_params p = {.method = &probe, .opts = {.bits = 8}, .n_threads = 2, .calib_text = txt,
                        .calib = {.n_samples = 2, .seq_len = 16, .seed = 1}};
  qlm_quant_summary sum;
  qlm_error err = {0};
  g_probe_calls = 0;
  if (qlm_quantize(g_src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
  assert_int_equal(g_probe_calls, 7 * g_m->hp.n_layer); /* every linear matrix, once */
  qlm_source *q;
  assert_int_equal(qlm_source_open(out, NULL, &q, &err), 0);
  int32_t ref[32], got[32];
  tu_greedy(g_src, 32, NULL, ref, NULL);
  tu_greedy(q, 32, NULL, got, NULL);
  assert_int_equal(tu_common_prefix(ref, got, 32), 32); /* 8-bit keeps the greedy text */
  /* the file says what it was calibrated on */
  assert_true(sum.calibrated);
  const qlm_meta *mt = qlm_source_meta(q, "qlm.calib.text"), *mn = qlm_source_meta(q, "qlm.calib.samples");
  const qlm_meta *ml = qlm_source_meta(q, "qlm.calib.len"), *ms = qlm_source_meta(q, "qlm.calib.seed");
  const qlm_meta *md = qlm_source_meta(q, "qlm.calib.dtype");
  assert_true(mt && mn && ml && ms && md);
  assert_string_equal(mt->v.s, txt);
  assert_int_equal(mn->v.u, 2);
  assert_int_equal(ml->v.u, sum.calib_len);
  assert_true(sum.calib_len > 0 && sum.calib_len <= 16);
  assert_int_equal(ms->v.u, 1);
  assert_string_equal(md->v.s, "f32");
  qlm_source_close(q);
  /* a method without calibration writes none of it */
  qlm_quant_params plain = {.method = &qlm_method_absmax, .opts = {.bits = 8}, .n_threads = 1};
  if (qlm_quantize(g_src, out, &plain, &sum, &err)) fail_msg("%s", err.msg);
  assert_false(sum.calibrated);
  assert_int_equal(qlm_source_open(out, NULL, &q, &err), 0);
  assert_null(qlm_source_meta(q, "qlm.calib.text"));
  assert_null(qlm_source_meta(q, "qlm.calib.dtype"));
  qlm_source_close(q);
  /* no calibration text: a usage error */
  p.calib_text = NULL;
  assert_int_equal(qlm_quantize(g_src, out, &p, &sum, &err), QLM_EUSAGE);
  unlink(out), unlink(txt);
  rmdir(dir);
  free(dir);
}

/* GPTQ end to end on stories260K with in-domain calibration text (TinyStories-style): its
 * quantized model drifts less from f32 than round-to-nearest on the same grid, and 8-bit GPTQ
 * keeps the 64-token greedy text. */
static void test_gptq_end_to_end(void **st) {
  (void)st;
  enum { N = 64 };
  int V = g_src->hp.n_vocab;
  int32_t ref[N], got[N];
  float *lref = malloc((size_t)N * V * sizeof *lref);
  tu_greedy(g_src, N, NULL, ref, lref);
  char *text = tu_shared("data/calibration/exllamav2/tiny.utf8"), *dir = tu_tmpdir(), out[512];
  snprintf(out, sizeof out, "%s/g.gguf", dir);
  qlm_error err = {0};
  qlm_quant_summary sum;
  const int bits[] = {3, 4, 8};
  for (int i = 0; i < 3; i++) {
    double d[2];
    for (int k = 0; k < 2; k++) {
      qlm_quant_params p = {.method = k ? &qlm_method_zeropoint : &qlm_method_gptq, .opts = {.bits = bits[i], .group = 32},
                            .n_threads = 2, .calib_text = text, .calib = {.n_samples = 32, .seq_len = 128, .seed = 1}};
      if (qlm_quantize(g_src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
      qlm_source *q;
      assert_int_equal(qlm_source_open(out, NULL, &q, &err), 0);
      d[k] = tu_logit_drift(q, ref, lref, N);
      if (bits[i] == 8 && !k) {
        tu_greedy(q, N, NULL, got, NULL);
        assert_int_equal(tu_common_prefix(ref, got, N), N);
      }
      qlm_source_close(q);
    }
    print_message("%d-bit g32: mean |dlogit| gptq %.4f, zeropoint RTN %.4f\n", bits[i], d[0], d[1]);
    /* at 8 bits both are at the activation-rounding floor: only "no worse" (5%) is meaningful */
    assert_true(bits[i] == 8 ? d[0] <= 1.05 * d[1] : d[0] < d[1]);
  }
  unlink(out);
  rmdir(dir);
  free(dir), free(text), free(lref);
}

/* Marginal-analysis allocation against brute force on small problems with convex error curves
 * (where it is optimal): same minimum total error within the budget. */
static void test_bitalloc_optimal(void **st) {
  (void)st;
  uint64_t r = 3;
  for (int trial = 0; trial < 200; trial++) {
    enum { N = 4, K = 4 };
    qlm_bit_option o[N][K], *po[N];
    int n_opts[N], choice[N];
    double min_bytes = 0, max_bytes = 0;
    for (int t = 0; t < N; t++) {
      double sens = 0.1 + tu_rand_uniform(&r), size = 100 * (1 + (int)(tu_rand_uniform(&r) * 4));
      for (int k = 0; k < K; k++) /* error ~ sens * 4^-bits: convex in the cost */
        o[t][k] = (qlm_bit_option){.bits = 2 + 2 * k, .bytes = size * (2 + 2 * k), .err = sens * pow(4.0, -(2 + 2 * k))};
      po[t] = o[t], n_opts[t] = K;
      min_bytes += o[t][0].bytes, max_bytes += o[t][K - 1].bytes;
    }
    double budget = min_bytes + tu_rand_uniform(&r) * (max_bytes - min_bytes), used;
    qlm_error err = {0};
    assert_int_equal(qlm_bitalloc(N, n_opts, po, budget, choice, &used, &err), 0);
    double got = 0, best = INFINITY;
    for (int t = 0; t < N; t++) got += o[t][choice[t]].err;
    assert_true(used <= budget);
    for (int code = 0; code < K * K * K * K; code++) {
      double b = 0, e = 0;
      for (int t = 0, c = code; t < N; t++, c /= K) b += o[t][c % K].bytes, e += o[t][c % K].err;
      if (b <= budget) best = fmin(best, e);
    }
    /* marginal analysis is optimal for convex curves up to the one step that did not fit:
     * allow that step's error difference */
    assert_true(got <= best * 4.0 + 1e-12);
    if (trial == 0) print_message("allocation error %.4g vs brute-force optimum %.4g\n", got, best);
  }
  qlm_bit_option one = {.bits = 2, .bytes = 1000, .err = 1}, *p1 = &one;
  int n1 = 1, c1;
  double u;
  qlm_error err = {0};
  assert_int_equal(qlm_bitalloc(1, &n1, &p1, 10, &c1, &u, &err), QLM_EUSAGE); /* cannot fit */
}

/* --target-bpw through the driver: every searched matrix gets a candidate bit width and the
 * average over them stays within the target. */
static void test_target_bpw(void **st) {
  (void)st;
  char *text = tu_shared("data/calibration/exllamav2/tiny.utf8"), *dir = tu_tmpdir(), out[512];
  snprintf(out, sizeof out, "%s/m.gguf", dir);
  const double targets[] = {3.5, 5.0};
  for (int ti = 0; ti < 2; ti++) {
    qlm_quant_params p = {.method = &qlm_method_absmax, .opts = {.group = 32}, .n_threads = 2, .calib_text = text,
                          .calib = {.n_samples = 8, .seq_len = 64, .seed = 1}, .target_bpw = targets[ti]};
    qlm_quant_summary sum;
    qlm_error err = {0};
    if (qlm_quantize(g_src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
    qlm_source *q;
    assert_int_equal(qlm_source_open(out, NULL, &q, &err), 0);
    double bytes = 0, n = 0;
    int hist[9] = {0};
    for (int i = 0; i < q->n_tensors; i++) {
      const qlm_tensor *t = &q->tensors[i];
      if (QLM_TYPE_FAMILY(t->type) != QLM_FAMILY_RTN_SYM) continue;
      int b = QLM_TYPE_BITS(t->type);
      assert_true(b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8);
      hist[b]++;
      bytes += (double)t->nbytes, n += (double)(t->ne[0] * t->ne[1]);
    }
    double bpw = 8 * bytes / n;
    print_message("target %.1f bpw: %.3f reached; matrices at 2/3/4/5/6/8 bits: %d/%d/%d/%d/%d/%d\n", targets[ti], bpw,
                  hist[2], hist[3], hist[4], hist[5], hist[6], hist[8]);
    assert_true(bpw <= targets[ti] + 1e-9 && bpw >= targets[ti] - 1.0);
    qlm_source_close(q);
  }
  unlink(out);
  rmdir(dir);
  free(dir), free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_layer_equals_forward),
      cmocka_unit_test(test_layer0_statistics),
      cmocka_unit_test(test_hessian_gathered),
      cmocka_unit_test(test_hessian_f32_vs_double),
      cmocka_unit_test(test_hessian_bf16_vs_double),
      cmocka_unit_test(test_inputs_pass),
      cmocka_unit_test(test_gemm_attention),
      cmocka_unit_test(test_bf16_attention),
      cmocka_unit_test(test_text_and_windows),
      cmocka_unit_test(test_driver_calibrated_pass),
      cmocka_unit_test(test_gptq_end_to_end),
      cmocka_unit_test(test_bitalloc_optimal),
      cmocka_unit_test(test_target_bpw),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
