/* test_calib_staged.c — the true-sequential calibration pass (quant/calib.h,
 * qlm_calib_run_staged) and the layer stages it runs on (model.h, qlm_stage_*).
 * References: qlm_forward_layer (the stages composed must equal it bit for bit), the whole-layer
 * pass qlm_calib_run (with nothing quantized the staged pass must give its statistics and final
 * residual stream; with each slot round-to-nearest quantized, the staged statistics of slot s of
 * layer il must be the whole-layer pass's on a model built beforehand with layers < il and slots
 * < s of layer il quantized — the definition of "true sequential", constructed independently),
 * and the driver end to end (GPTQ true_sequential=1 and =0, and with the bf16 calibration forward,
 * against RTN on stories260K). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "quant/calib.h"
#include "quant/method.h"
#include "quant/quantize.h"

#define N_MODELS 3

static qlm_source *g_src[N_MODELS];
static qlm_model *g_m[N_MODELS];
static const char *g_name[N_MODELS] = {"stories260K", "ref/qwen2", "ref/gpt2"};

static int setup(void **st) {
  (void)st;
  char *paths[N_MODELS] = {tu_shared("models/stories260K/stories260K.gguf"), tu_testdata("ref/qwen2"),
                           tu_testdata("ref/gpt2")};
  int rc = 0;
  for (int i = 0; i < N_MODELS && !rc; i++) {
    qlm_error err = {0};
    rc = qlm_source_open(paths[i], NULL, &g_src[i], &err) || qlm_model_load(g_src[i], &g_m[i], &err);
    if (rc) fprintf(stderr, "%s: %s\n", paths[i], err.msg);
  }
  for (int i = 0; i < N_MODELS; i++) free(paths[i]);
  return rc ? -1 : 0;
}

static int teardown(void **st) {
  (void)st;
  for (int i = 0; i < N_MODELS; i++) {
    qlm_model_free(g_m[i]);
    qlm_source_close(g_src[i]);
  }
  return 0;
}

static int window_len(const qlm_model *m, int want) { return m->hp.n_ctx < want ? m->hp.n_ctx : want; }

static int32_t *random_tokens(const qlm_model *m, int n, uint64_t seed) {
  int32_t *t = malloc((size_t)n * sizeof *t);
  for (int i = 0; i < n; i++) t[i] = (int32_t)(tu_rand_u64(&seed) % (uint64_t)m->hp.n_vocab);
  return t;
}

/* ---- (1) the stages composed = qlm_forward_layer, bit for bit, with both attention paths */

typedef struct grab {
  float *x[QLM_N_SLOTS];
} grab;

static void grab_hook(void *ctx, int layer, qlm_linear_slot slot, const float *X, int T, int cols) {
  (void)layer;
  grab *g = ctx;
  g->x[slot] = realloc(g->x[slot], (size_t)T * cols * sizeof(float));
  memcpy(g->x[slot], X, (size_t)T * cols * sizeof(float));
}

static void test_stages_equal_forward_layer(void **st) {
  (void)st;
  for (int mi = 0; mi < N_MODELS; mi++) {
    const qlm_model *m = g_m[mi];
    const qlm_hparams *hp = &m->hp;
    int T = window_len(m, 80), cols[QLM_N_SLOTS] = {hp->n_embd, hp->n_head * hp->head_dim, hp->n_embd, hp->n_ff};
    int32_t *tok = random_tokens(m, T, 11 + (uint64_t)mi), *pos = malloc((size_t)T * sizeof *pos),
            *seq = calloc((size_t)T, sizeof *seq);
    for (int i = 0; i < T; i++) pos[i] = i;
    qlm_error err = {0};
    qlm_state *s;
    assert_int_equal(qlm_state_new(m, 1, T, T, 2, &s, &err), 0);
    qlm_batch b = {.n = T, .token = tok, .pos = pos, .seq = seq};
    size_t n = (size_t)T * hp->n_embd;
    float *xa = malloc(n * sizeof *xa), *xb = malloc(n * sizeof *xb);
    for (int gemm = 0; gemm < 2; gemm++) {
      assert_int_equal(qlm_state_set_gemm_attention(s, gemm, &err), 0);
      assert_int_equal(qlm_embed(m, &b, xa, &err), 0);
      memcpy(xb, xa, n * sizeof *xa);
      for (int il = 0; il < hp->n_layer; il++) {
        grab ref = {0};
        qlm_state_clear(s, 0);
        assert_int_equal(qlm_forward_layer(m, s, &b, il, xa, grab_hook, &ref, &err), 0);
        const float *X[QLM_N_SLOTS];
        float *att = malloc((size_t)T * cols[1] * sizeof *att);
        qlm_state_clear(s, 0);
        assert_int_equal(qlm_stage_qkv_input(m, s, &b, il, xb, &X[0], &err), 0);
        assert_memory_equal(X[0], ref.x[0], (size_t)T * cols[0] * sizeof(float));
        /* into the caller's buffer, as the calibration keeps it */
        assert_int_equal(qlm_stage_attention(m, s, &b, il, xb, att, &X[1], &err), 0);
        assert_ptr_equal(X[1], att);
        assert_memory_equal(att, ref.x[1], (size_t)T * cols[1] * sizeof(float));
        assert_int_equal(qlm_stage_attn_residual(m, s, &b, il, att, xb, &err), 0);
        assert_int_equal(qlm_stage_ffn_input(m, s, &b, il, xb, &X[2], &err), 0);
        assert_memory_equal(X[2], ref.x[2], (size_t)T * cols[2] * sizeof(float));
        float *h = malloc((size_t)T * cols[3] * sizeof *h);
        const float *Xh;
        assert_int_equal(qlm_stage_ffn_act(m, s, &b, il, xb, h, &Xh, &err), 0);
        assert_ptr_equal(Xh, h);
        assert_memory_equal(h, ref.x[3], (size_t)T * cols[3] * sizeof(float));
        /* and in the state's own buffer again (out was for that call only) */
        assert_int_equal(qlm_stage_ffn_act(m, s, &b, il, xb, NULL, &X[3], &err), 0);
        assert_ptr_not_equal(X[3], h);
        assert_memory_equal(X[3], ref.x[3], (size_t)T * cols[3] * sizeof(float));
        free(h);
        assert_int_equal(qlm_stage_ffn_residual(m, s, &b, il, X[3], xb, &err), 0);
        assert_memory_equal(xa, xb, n * sizeof *xa);
        for (int k = 0; k < QLM_N_SLOTS; k++) free(ref.x[k]);
        free(att);
      }
    }
    /* errors name what is wrong */
    const float *X;
    assert_int_equal(qlm_stage_ffn_input(m, s, &b, hp->n_layer, xa, &X, &err), QLM_EUSAGE);
    assert_non_null(strstr(err.msg, "layer"));
    qlm_state_clear(s, 0);
    pos[0] = 1; /* a gap before the first row */
    assert_int_equal(qlm_stage_attention(m, s, &b, 0, xa, NULL, &X, &err), QLM_EUSAGE);
    assert_non_null(strstr(err.msg, "position"));
    qlm_state_free(s);
    free(xa), free(xb), free(tok), free(pos), free(seq);
  }
}

/* ---- recorded statistics */

typedef struct slot_rec {
  bool have;
  int64_t n_tokens;
  int n_calls;
  double *h, *sq, *ab;
  float *amax, *call;
} slot_rec;

#define MAX_LAYERS 16

typedef struct recorder {
  int ns;                                  /* samples (length of call_absmax) */
  int only_layer, only_slot;               /* record just this (layer, slot); -1: all */
  slot_rec r[MAX_LAYERS][QLM_N_SLOTS];
  /* staged with a quantizing callback */
  qlm_model *m;                            /* the model to quantize into (NULL: leave it) */
  float *owned[MAX_LAYERS * 8];
  int n_owned;
  int later_nonzero;                       /* slots after the one handed over that were not zero */
} recorder;

static void record_slot(recorder *rc, int il, int k, const qlm_layer_stats *st) {
  if (il >= MAX_LAYERS || (rc->only_layer >= 0 && (il != rc->only_layer || k != rc->only_slot))) return;
  slot_rec *r = &rc->r[il][k];
  size_t c = (size_t)st->cols[k];
  r->have = true;
  r->n_tokens = st->n_tokens;
  r->n_calls = st->n_calls;
  r->h = malloc(c * c * sizeof(double));
  r->sq = malloc(c * sizeof(double));
  r->ab = malloc(c * sizeof(double));
  r->amax = malloc(c * sizeof(float));
  r->call = malloc((size_t)rc->ns * sizeof(float));
  memcpy(r->h, st->hessian[k], c * c * sizeof(double));
  memcpy(r->sq, st->sqsum[k], c * sizeof(double));
  memcpy(r->ab, st->abssum[k], c * sizeof(double));
  memcpy(r->amax, st->absmax[k], c * sizeof(float));
  memcpy(r->call, st->call_absmax[k], (size_t)rc->ns * sizeof(float));
}

static void recorder_free(recorder *rc) {
  for (int il = 0; il < MAX_LAYERS; il++)
    for (int k = 0; k < QLM_N_SLOTS; k++) {
      slot_rec *r = &rc->r[il][k];
      free(r->h), free(r->sq), free(r->ab), free(r->amax), free(r->call);
    }
  for (int i = 0; i < rc->n_owned; i++) free(rc->owned[i]);
  memset(rc, 0, sizeof *rc);
}

/* The two records are bit-identical. */
static void assert_same(const slot_rec *a, const slot_rec *b, int cols, int ns, const char *what, int il, int k) {
  if (!a->have || !b->have) fail_msg("%s: layer %d slot %d: not recorded", what, il, k);
  size_t c = (size_t)cols;
  bool same = a->n_tokens == b->n_tokens && a->n_calls == b->n_calls && !memcmp(a->h, b->h, c * c * sizeof(double)) &&
              !memcmp(a->sq, b->sq, c * sizeof(double)) && !memcmp(a->ab, b->ab, c * sizeof(double)) &&
              !memcmp(a->amax, b->amax, c * sizeof(float)) && !memcmp(a->call, b->call, (size_t)ns * sizeof(float));
  if (!same) {
    double d = 0.0;
    for (size_t i = 0; i < c * c; i++) d = fmax(d, fabs(a->h[i] - b->h[i]));
    fail_msg("%s: layer %d slot %d: statistics differ (max |dH| %.3g, tokens %lld/%lld, calls %d/%d)", what, il, k, d,
             (long long)a->n_tokens, (long long)b->n_tokens, a->n_calls, b->n_calls);
  }
}

static int on_layer_record(void *ctx, int il, const qlm_layer_stats *st, qlm_error *err) {
  (void)err;
  for (int k = 0; k < QLM_N_SLOTS; k++) record_slot(ctx, il, k, st);
  return QLM_OK;
}

/* Round-to-nearest of an f32 matrix, 4-bit absmax per row: a new f32 matrix (owned by rc). */
static qlm_mat rtn_mat(recorder *rc, const qlm_mat *W) {
  assert_int_equal(W->type, QLM_TYPE_F32);
  size_t n = (size_t)W->rows * (size_t)W->cols;
  float *q = malloc(n * sizeof *q + 1);
  for (int64_t r = 0; r < W->rows; r++) {
    const float *w = (const float *)((const unsigned char *)W->data + (size_t)r * W->row_bytes);
    float mx = 0.0f;
    for (int64_t j = 0; j < W->cols; j++) mx = fmaxf(mx, fabsf(w[j]));
    float d = mx > 0.0f ? mx / 7.0f : 1.0f;
    for (int64_t j = 0; j < W->cols; j++) q[r * W->cols + j] = d * nearbyintf(w[j] / d);
  }
  assert_true(rc->n_owned < (int)(sizeof rc->owned / sizeof rc->owned[0]));
  rc->owned[rc->n_owned++] = q;
  return (qlm_mat){.type = QLM_TYPE_F32, .rows = W->rows, .cols = W->cols, .data = q,
                   .row_bytes = (size_t)W->cols * sizeof(float)};
}

/* The matrices of layer il that read `slot`, replaced by their RTN copies. */
static void quantize_slot(recorder *rc, qlm_model *m, int il, int slot) {
  qlm_layer *L = &m->layers[il];
  qlm_mat *mats[QLM_N_SLOTS][3] = {{&L->wq, &L->wk, &L->wv}, {&L->wo}, {&L->w_gate, &L->w_up}, {&L->w_down}};
  for (int j = 0; j < 3; j++)
    if (mats[slot][j] && mats[slot][j]->rows > 0) *mats[slot][j] = rtn_mat(rc, mats[slot][j]);
}

static int on_slot_record(void *ctx, int il, qlm_linear_slot slot, const qlm_layer_stats *st, qlm_error *err) {
  (void)err;
  recorder *rc = ctx;
  record_slot(rc, il, slot, st);
  for (int k = slot + 1; k < QLM_N_SLOTS; k++) /* later slots are still empty */
    for (int j = 0; j < st->cols[k]; j++) rc->later_nonzero += st->sqsum[k][j] != 0.0 || st->hessian[k][j] != 0.0;
  if (rc->m) quantize_slot(rc, rc->m, il, slot);
  return QLM_OK;
}

/* A shallow copy of m with its own layer array (matrices can be swapped without touching m). */
static qlm_model copy_model(const qlm_model *m) {
  qlm_model c = *m;
  c.layers = malloc((size_t)m->hp.n_layer * sizeof *c.layers);
  memcpy(c.layers, m->layers, (size_t)m->hp.n_layer * sizeof *c.layers);
  return c;
}

/* ---- (2) nothing quantized: the staged pass = the whole-layer pass, for every store mode */

static void test_noop_equals_whole_layer(void **st) {
  (void)st;
  for (int mi = 0; mi < N_MODELS; mi++) {
    qlm_model *m = g_m[mi];
    const qlm_hparams *hp = &m->hp;
    enum { NS = 3 };
    int T = window_len(m, 48), cols[QLM_N_SLOTS] = {hp->n_embd, hp->n_head * hp->head_dim, hp->n_embd, hp->n_ff};
    assert_true(hp->n_layer <= MAX_LAYERS);
    int32_t *tok = random_tokens(m, NS * T, 5 + (uint64_t)mi);
    size_t nx = (size_t)NS * T * hp->n_embd;
    float *x_ref = malloc(nx * sizeof(float)), *x_got = malloc(nx * sizeof(float));
    qlm_error err = {0};
    recorder ref = {.ns = NS, .only_layer = -1};
    qlm_calib_opts o = {.want_hessian = true, .x_out = x_ref};
    assert_int_equal(qlm_calib_run(m, tok, NS, T, &o, 2, on_layer_record, &ref, &err), 0);
    const int stores[] = {QLM_CALIB_STORE_NONE, QLM_CALIB_STORE_ATT, QLM_CALIB_STORE_ALL, QLM_CALIB_STORE_AUTO,
                          QLM_CALIB_STORE_AUTO};
    for (int si = 0; si < 5; si++) {
      if (si == 4) setenv("QLM_MEM_AVAILABLE", "4096", 1); /* auto with no room: recompute both */
      recorder got = {.ns = NS, .only_layer = -1};
      qlm_calib_opts os = {.want_hessian = true, .x_out = x_got, .store = stores[si]};
      memset(x_got, 0, nx * sizeof(float));
      if (qlm_calib_run_staged(m, tok, NS, T, &os, 2, on_slot_record, &got, &err)) fail_msg("%s", err.msg);
      unsetenv("QLM_MEM_AVAILABLE");
      for (int il = 0; il < hp->n_layer; il++)
        for (int k = 0; k < QLM_N_SLOTS; k++) assert_same(&got.r[il][k], &ref.r[il][k], cols[k], NS, g_name[mi], il, k);
      assert_int_equal(got.later_nonzero, 0);
      assert_memory_equal(x_got, x_ref, nx * sizeof(float));
      recorder_free(&got);
    }
    /* hessian_only (what the GPTQ driver asks for): the same Hessians, token and call counts and
     * residual; the column statistics are not gathered (zero) */
    recorder ho = {.ns = NS, .only_layer = -1};
    qlm_calib_opts oh = {.want_hessian = true, .hessian_only = true, .x_out = x_got};
    if (qlm_calib_run_staged(m, tok, NS, T, &oh, 2, on_slot_record, &ho, &err)) fail_msg("%s", err.msg);
    for (int il = 0; il < hp->n_layer; il++)
      for (int k = 0; k < QLM_N_SLOTS; k++) {
        const slot_rec *a = &ho.r[il][k], *b = &ref.r[il][k];
        size_t c = (size_t)cols[k];
        assert_true(a->have);
        assert_true(a->n_tokens == b->n_tokens && a->n_calls == b->n_calls);
        assert_memory_equal(a->h, b->h, c * c * sizeof(double));
        for (size_t j = 0; j < c; j++) assert_true(a->amax[j] == 0.0f && a->sq[j] == 0.0 && a->ab[j] == 0.0);
        for (int j = 0; j < NS; j++) assert_true(a->call[j] == 0.0f);
      }
    assert_memory_equal(x_got, x_ref, nx * sizeof(float));
    recorder_free(&ho);
    print_message("%s: staged pass without quantization = whole-layer pass (statistics of %d layers x 4 slots, "
                  "final residual), bit for bit, stores none/att/all/auto/auto-without-memory; hessian_only: same "
                  "Hessians, no column statistics\n",
                  g_name[mi], hp->n_layer);
    recorder_free(&ref);
    free(tok), free(x_ref), free(x_got);
  }
}

/* ---- (3) quantizing callback: the staged statistics are the definition's */

static void test_rtn_matches_definition(void **st) {
  (void)st;
  for (int mi = 0; mi < N_MODELS; mi++) {
    const qlm_model *m0 = g_m[mi];
    const qlm_hparams *hp = &m0->hp;
    enum { NS = 2 };
    int T = window_len(m0, 40), cols[QLM_N_SLOTS] = {hp->n_embd, hp->n_head * hp->head_dim, hp->n_embd, hp->n_ff};
    int32_t *tok = random_tokens(m0, NS * T, 21 + (uint64_t)mi);
    size_t nx = (size_t)NS * T * hp->n_embd;
    float *x_ref = malloc(nx * sizeof(float)), *x_got = malloc(nx * sizeof(float));
    qlm_error err = {0};
    /* the staged pass, quantizing each slot when its statistics are complete */
    qlm_model ms = copy_model(m0);
    recorder got = {.ns = NS, .only_layer = -1, .m = &ms};
    qlm_calib_opts os = {.want_hessian = true, .x_out = x_got, .store = QLM_CALIB_STORE_ALL};
    if (qlm_calib_run_staged(&ms, tok, NS, T, &os, 2, on_slot_record, &got, &err)) fail_msg("%s", err.msg);
    /* the same without quantizing: the quantization must have changed what later slots see */
    recorder plain = {.ns = NS, .only_layer = 0, .only_slot = QLM_SLOT_O};
    qlm_calib_opts op = {.want_hessian = true};
    assert_int_equal(qlm_calib_run_staged((qlm_model *)m0, tok, NS, T, &op, 2, on_slot_record, &plain, &err), 0);
    assert_true(memcmp(plain.r[0][QLM_SLOT_O].h, got.r[0][QLM_SLOT_O].h,
                       (size_t)cols[1] * cols[1] * sizeof(double)) != 0);
    recorder_free(&plain);
    /* the definition: for (il, slot), the whole-layer pass on a model whose layers < il and
     * slots < slot of layer il were quantized beforehand */
    for (int il = 0; il < hp->n_layer; il++)
      for (int k = 0; k < QLM_N_SLOTS; k++) {
        qlm_model mr = copy_model(m0);
        recorder ref = {.ns = NS, .only_layer = il, .only_slot = k};
        for (int jl = 0; jl <= il; jl++)
          for (int j = 0; j < (jl < il ? QLM_N_SLOTS : k); j++) quantize_slot(&ref, &mr, jl, j);
        qlm_calib_opts o = {.want_hessian = true};
        assert_int_equal(qlm_calib_run(&mr, tok, NS, T, &o, 2, on_layer_record, &ref, &err), 0);
        assert_same(&got.r[il][k], &ref.r[il][k], cols[k], NS, g_name[mi], il, k);
        recorder_free(&ref);
        free(mr.layers);
      }
    /* the final residual stream: the whole-layer pass on the model quantized throughout */
    qlm_model mr = copy_model(m0);
    recorder all = {.ns = NS, .only_layer = -2};
    for (int jl = 0; jl < hp->n_layer; jl++)
      for (int j = 0; j < QLM_N_SLOTS; j++) quantize_slot(&all, &mr, jl, j);
    qlm_calib_opts o = {.want_hessian = true, .x_out = x_ref};
    assert_int_equal(qlm_calib_run(&mr, tok, NS, T, &o, 2, NULL, NULL, &err), 0);
    assert_memory_equal(x_got, x_ref, nx * sizeof(float));
    print_message("%s: staged statistics with RTN per slot = whole-layer statistics on the model quantized up to "
                  "that slot (%d layers x 4 slots, final residual), bit for bit\n",
                  g_name[mi], hp->n_layer);
    recorder_free(&all);
    free(mr.layers);
    recorder_free(&got);
    free(ms.layers);
    free(tok), free(x_ref), free(x_got);
  }
}

/* ---- (4) the driver: GPTQ true_sequential=1 (default) and =0 */

static void test_driver_gptq(void **st) {
  (void)st;
  qlm_error err = {0};
  qlm_quant_opts po = {0};
  assert_int_equal(qlm_quant_opts_parse_kv(&po, "true_sequential", "0", "test", &err), 0);
  assert_true(po.no_true_sequential);
  assert_int_equal(qlm_quant_opts_parse_kv(&po, "true_sequential", "1", "test", &err), 0);
  assert_false(po.no_true_sequential);
  assert_int_equal(qlm_quant_opts_parse_kv(&po, "true_sequential", "2", "rules:3", &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "rules:3: true_sequential=2"));

  enum { N = 64 };
  int V = g_src[0]->hp.n_vocab;
  int32_t ref[N];
  float *lref = malloc((size_t)N * V * sizeof *lref);
  tu_greedy(g_src[0], N, NULL, ref, lref);
  char *text = tu_shared("data/calibration/exllamav2/tiny.utf8"), *dir = tu_tmpdir(), out[4][512];
  double d[4];
  for (int k = 0; k < 4; k++) { /* gptq true-sequential, gptq whole-layer, RTN zero-point, gptq bf16 */
    snprintf(out[k], sizeof out[k], "%s/g%d.gguf", dir, k);
    qlm_quant_params p = {.method = k != 2 ? &qlm_method_gptq : &qlm_method_zeropoint,
                          .opts = {.bits = 4, .group = 32, .no_true_sequential = k == 1},
                          .n_threads = 2, .calib_text = text,
                          .calib = {.n_samples = 16, .seq_len = 128, .seed = 1, .bf16 = k == 3}};
    qlm_quant_summary sum;
    if (qlm_quantize(g_src[0], out[k], &p, &sum, &err)) fail_msg("%s", err.msg);
    qlm_source *q;
    assert_int_equal(qlm_source_open(out[k], NULL, &q, &err), 0);
    d[k] = tu_logit_drift(q, ref, lref, N);
    qlm_source_close(q);
  }
  print_message("stories260K 4-bit g32: mean |dlogit| gptq true-sequential %.4f, gptq whole-layer %.4f, RTN %.4f, "
                "gptq true-sequential with a bf16 calibration forward %.4f\n", d[0], d[1], d[2], d[3]);
  assert_true(d[0] != d[1]); /* the option really switches the pass */
  assert_true(d[0] < d[2] && d[1] < d[2]);
  assert_true(d[3] != d[0]); /* bf16 really changes the statistics */
  assert_true(d[3] < d[2]);
  assert_true(fabs(d[3] - d[0]) < d[2] - d[0]); /* bf16 moves the result less than GPTQ gains over RTN */
  for (int k = 0; k < 4; k++) unlink(out[k]);
  rmdir(dir);
  free(dir), free(text), free(lref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stages_equal_forward_layer),
      cmocka_unit_test(test_noop_equals_whole_layer),
      cmocka_unit_test(test_rtn_matches_definition),
      cmocka_unit_test(test_driver_gptq),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
