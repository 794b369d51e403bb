/* test_reference.c — qlm's forward pass against Hugging Face transformers.
 *
 * tests/data/ref/<name>/ holds tiny random GPT-2, Qwen2, LLaMA and Mistral checkpoints written by
 * transformers' save_pretrained (F32, F16, BF16, one sharded), and expected.txt: the logits that
 * transformers computed in float32 for a fixed 20-token sequence (tools/make_reference_models.py).
 * Each fixture is opened through the normal path (qlm_source_open -> HF reader -> qlm_model_load)
 * and run three ways: one batched prefill, token by token, and two sequences sharing one batch
 * (then prefill and token by token again with a 2-thread pool); every logit must match within TOL.
 *
 * TOL = 1e-4 absolute: the logits are O(1..10); the two implementations differ only in f32
 * summation order (BLAS vs torch kernels, our SIMD dot products), which over these widths
 * (<= 128-term dot products, 2 layers) changes results by ~1e-6.  Any modelling mistake (RoPE
 * style or theta, GQA head mapping, norm epsilon, GELU variant, a bias, a transposed matrix, the
 * causal mask) moves them by far more: measured on these fixtures with transformers, rms_norm_eps
 * 1e-5 instead of 1e-6 moves llama's logits by 4.9e-4, exact erf GELU instead of gelu_new moves
 * gpt2's by 2.1e-3, rope_theta 1e4 instead of 5e5 moves llama's by 2.5. */
#include "testutil.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/source.h"
#include "model/model.h"

#define TOL 1e-4f
#define CTX 64 /* n_positions / max_position_embeddings of every fixture */

/* What the generator put in each config.json; checked before running, so a failing fixture
 * tells whether the reader (hparams) or the forward pass is at fault. */
typedef struct fixture {
  const char *name;
  qlm_arch arch;
  int n_embd, n_ff, n_head, n_head_kv;
  float rope_theta, norm_eps;
  bool tied;
} fixture;

static const fixture FIXTURES[] = {
    {"gpt2", QLM_ARCH_GPT2, 32, 64, 4, 4, 0.0f, 1e-5f, true},
    {"gpt2-f16", QLM_ARCH_GPT2, 32, 128, 4, 4, 0.0f, 1e-5f, true}, /* n_inner null -> 4*n_embd */
    {"qwen2", QLM_ARCH_QWEN2, 32, 48, 4, 2, 10000.0f, 1e-6f, false},
    {"qwen2-f16", QLM_ARCH_QWEN2, 32, 48, 4, 2, 10000.0f, 1e-6f, false},
    {"qwen2-sharded", QLM_ARCH_QWEN2, 32, 48, 4, 2, 10000.0f, 1e-6f, false},
    {"llama", QLM_ARCH_LLAMA, 32, 40, 4, 2, 500000.0f, 1e-6f, true},
    {"llama-bf16", QLM_ARCH_LLAMA, 32, 40, 4, 2, 500000.0f, 1e-6f, true},
    /* config.json as transformers 5 writes it: "rope_parameters": {"rope_theta": 1e6}, "dtype" */
    {"mistral", QLM_ARCH_LLAMA, 32, 56, 4, 1, 1000000.0f, 1e-5f, false},
};

typedef struct expected {
  int n_tok;       /* T */
  int32_t *tokens; /* [T] */
  int n_vocab;     /* V */
  float *logits;   /* [T x V]: row t = logits after tokens[0..t] */
} expected;

/* Parse expected.txt: '#' comment lines, "tokens N ids...", "logits T V", T*V floats. */
static void read_expected(const char *path, expected *e) {
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("%s: cannot open", path);
  int c;
  while ((c = fgetc(f)) == '#')
    while ((c = fgetc(f)) != '\n' && c != EOF) {}
  ungetc(c, f);
  int T = 0, T2 = 0, V = 0;
  assert_int_equal(fscanf(f, " tokens %d", &T), 1);
  assert_true(T > 0 && T <= CTX);
  e->n_tok = T;
  e->tokens = calloc((size_t)T, sizeof(int32_t));
  for (int i = 0; i < T; i++) assert_int_equal(fscanf(f, "%d", &e->tokens[i]), 1);
  assert_int_equal(fscanf(f, " logits %d %d", &T2, &V), 2);
  assert_int_equal(T2, T);
  assert_true(V > 0 && V <= 4096);
  e->n_vocab = V;
  e->logits = calloc((size_t)T * (size_t)V, sizeof(float));
  for (int i = 0; i < T * V; i++) assert_int_equal(fscanf(f, "%f", &e->logits[i]), 1);
  float extra;
  assert_int_equal(fscanf(f, "%f", &extra), EOF); /* nothing after the last row */
  fclose(f);
}

/* Largest |got - want| over n values (NaN counts as infinite). */
static float max_abs_diff(const float *got, const float *want, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; i++) {
    float d = fabsf(got[i] - want[i]);
    if (!(d <= m)) m = isnan(d) ? INFINITY : d;
  }
  return m;
}

#define CHECK_INT(name, what, got, want)                                                           \
  do {                                                                                             \
    if ((long)(got) != (long)(want)) fail_msg("%s: hparam %s is %ld, config.json says %ld", name, what, \
                                              (long)(got), (long)(want));                         \
  } while (0)
#define CHECK_FLOAT(name, what, got, want)                                                         \
  do {                                                                                             \
    if (!(fabs((double)(got) - (double)(want)) <= 1e-5 * fabs((double)(want))))                    \
      fail_msg("%s: hparam %s is %g, config.json says %g", name, what, (double)(got), (double)(want)); \
  } while (0)

typedef struct loaded {
  qlm_source *src;
  qlm_model *model;
  expected exp;
} loaded;

static void load_fixture(const fixture *fx, loaded *L) {
  char rel[256];
  snprintf(rel, sizeof rel, "ref/%s", fx->name);
  char *dir = tu_testdata(rel);
  snprintf(rel, sizeof rel, "ref/%s/expected.txt", fx->name);
  char *exp_path = tu_testdata(rel);
  read_expected(exp_path, &L->exp);

  qlm_error err = {0};
  if (qlm_source_open(dir, NULL, &L->src, &err) != 0) fail_msg("%s: qlm_source_open: %s", fx->name, err.msg);
  assert_string_equal(L->src->format, "hf");
  /* hparams first, each named, so a failure says whether the reader or the forward pass is off */
  const qlm_hparams *hp = &L->src->hp;
  CHECK_INT(fx->name, "arch", hp->arch, fx->arch);
  CHECK_INT(fx->name, "n_vocab", hp->n_vocab, L->exp.n_vocab);
  CHECK_INT(fx->name, "n_embd", hp->n_embd, fx->n_embd);
  CHECK_INT(fx->name, "n_ff", hp->n_ff, fx->n_ff);
  CHECK_INT(fx->name, "n_layer", hp->n_layer, 2);
  CHECK_INT(fx->name, "n_head", hp->n_head, fx->n_head);
  CHECK_INT(fx->name, "n_head_kv", hp->n_head_kv, fx->n_head_kv);
  CHECK_INT(fx->name, "head_dim", hp->head_dim, fx->n_embd / fx->n_head);
  CHECK_INT(fx->name, "n_ctx", hp->n_ctx, CTX);
  CHECK_INT(fx->name, "tied_embeddings", hp->tied_embeddings, fx->tied);
  CHECK_FLOAT(fx->name, "norm_eps", hp->norm_eps, fx->norm_eps);
  if (fx->arch == QLM_ARCH_GPT2) {
    CHECK_INT(fx->name, "rope_style", hp->rope_style, QLM_ROPE_NONE);
  } else {
    CHECK_INT(fx->name, "rope_style", hp->rope_style, QLM_ROPE_NEOX); /* HF checkpoints rotate halves */
    CHECK_INT(fx->name, "n_rot", hp->n_rot, hp->head_dim);
    CHECK_FLOAT(fx->name, "rope_theta", hp->rope_theta, fx->rope_theta);
  }
  if (qlm_model_load(L->src, &L->model, &err) != 0) fail_msg("%s: qlm_model_load: %s", fx->name, err.msg);
  free(dir);
  free(exp_path);
}

static void unload_fixture(loaded *L) {
  qlm_model_free(L->model);
  qlm_source_close(L->src);
  free(L->exp.tokens);
  free(L->exp.logits);
}

static qlm_state *new_state(const loaded *L, int n_seq, int max_batch, int n_threads) {
  qlm_state *s = NULL;
  qlm_error err = {0};
  if (qlm_state_new(L->model, n_seq, CTX, max_batch, n_threads, &s, &err) != 0) fail_msg("qlm_state_new: %s", err.msg);
  return s;
}

/* All T tokens in one batch; every row's logits against the reference. */
static float run_prefill(const loaded *L, int n_threads) {
  const int T = L->exp.n_tok, V = L->exp.n_vocab;
  qlm_state *s = new_state(L, 1, T, n_threads);
  int32_t pos[CTX], seq[CTX];
  for (int i = 0; i < T; i++) pos[i] = i, seq[i] = 0;
  qlm_batch b = {.n = T, .token = L->exp.tokens, .pos = pos, .seq = seq, .want_logits = NULL};
  float *out = calloc((size_t)T * V, sizeof(float));
  qlm_error err = {0};
  if (qlm_forward(L->model, s, &b, out, &err) != 0) fail_msg("qlm_forward (prefill): %s", err.msg);
  float d = max_abs_diff(out, L->exp.logits, T * V);
  free(out);
  qlm_state_free(s);
  return d;
}

/* One token per call, through the KV cache. */
static float run_decode(const loaded *L, int n_threads) {
  const int T = L->exp.n_tok, V = L->exp.n_vocab;
  qlm_state *s = new_state(L, 1, 1, n_threads);
  float *out = calloc((size_t)V, sizeof(float));
  float worst = 0.0f;
  for (int t = 0; t < T; t++) {
    int32_t pos = t, seq = 0;
    qlm_batch b = {.n = 1, .token = &L->exp.tokens[t], .pos = &pos, .seq = &seq, .want_logits = NULL};
    qlm_error err = {0};
    if (qlm_forward(L->model, s, &b, out, &err) != 0) fail_msg("qlm_forward (token %d): %s", t, err.msg);
    float d = max_abs_diff(out, &L->exp.logits[(size_t)t * V], V);
    if (!(d <= worst)) worst = d;
  }
  free(out);
  qlm_state_free(s);
  return worst;
}

/* Two sequences in one state: seq 1 gets the first 8 tokens, then one batch carries seq 0's
 * whole prefix interleaved with seq 1's remaining 12 tokens.  Checks that rows only attend to
 * their own sequence's cache and that mixed positions in a batch are honoured. */
static float run_two_seqs(const loaded *L) {
  const int T = L->exp.n_tok, V = L->exp.n_vocab, K = 8;
  qlm_state *s = new_state(L, 2, 2 * T, 1);
  qlm_error err = {0};
  int32_t tok[2 * CTX], pos[2 * CTX], seq[2 * CTX];
  for (int i = 0; i < K; i++) tok[i] = L->exp.tokens[i], pos[i] = i, seq[i] = 1;
  float *out = calloc((size_t)2 * T * V, sizeof(float));
  qlm_batch b1 = {.n = K, .token = tok, .pos = pos, .seq = seq, .want_logits = NULL};
  if (qlm_forward(L->model, s, &b1, out, &err) != 0) fail_msg("qlm_forward (seq 1 prefix): %s", err.msg);
  float worst = max_abs_diff(out, L->exp.logits, K * V);

  int n = 0, i0 = 0, i1 = K;
  while (i0 < T || i1 < T) { /* alternate seq 0 and seq 1 rows */
    if (i0 < T) tok[n] = L->exp.tokens[i0], pos[n] = i0, seq[n] = 0, n++, i0++;
    if (i1 < T) tok[n] = L->exp.tokens[i1], pos[n] = i1, seq[n] = 1, n++, i1++;
  }
  qlm_batch b2 = {.n = n, .token = tok, .pos = pos, .seq = seq, .want_logits = NULL};
  if (qlm_forward(L->model, s, &b2, out, &err) != 0) fail_msg("qlm_forward (two sequences): %s", err.msg);
  for (int r = 0; r < n; r++) {
    float d = max_abs_diff(&out[(size_t)r * V], &L->exp.logits[(size_t)pos[r] * V], V);
    if (!(d <= worst)) worst = d;
  }
  free(out);
  qlm_state_free(s);
  return worst;
}

/* Each fixture runs in well under a second (a few seconds under ASan); a hang (e.g. a thread-pool
 * deadlock) should fail this test quickly and say so, not sit until ctest's 900 s timeout. */
#define WATCHDOG_S 120
static const char *g_running = "";
static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "test_reference: watchdog: a fixture did not finish in 120 s (deadlock?): ";
  ssize_t r = write(2, msg, sizeof msg - 1);
  r = write(2, g_running, strlen(g_running));
  r = write(2, "\n", 1);
  (void)r;
  _exit(1);
}

static void test_fixture(void **state) {
  const fixture *fx = *state;
  g_running = fx->name;
  signal(SIGALRM, on_alarm);
  alarm(WATCHDOG_S);
  loaded L = {0};
  load_fixture(fx, &L);
  float d_prefill = run_prefill(&L, 1);
  float d_decode = run_decode(&L, 1);
  float d_two = run_two_seqs(&L);
  print_message("%-14s max |qlm - transformers|: prefill %.3g, token by token %.3g, two sequences %.3g (tolerance %.0e)\n",
                fx->name, d_prefill, d_decode, d_two, TOL);
  unload_fixture(&L);
  alarm(0);
  assert_true(d_prefill <= TOL);
  assert_true(d_decode <= TOL);
  assert_true(d_two <= TOL);
}

/* The same with a 2-thread pool (work split by rows of W and by heads).  Last in the run, so a
 * thread-pool hang (watchdog) does not hide the single-thread results above. */
static void test_two_threads(void **st) {
  (void)st;
  signal(SIGALRM, on_alarm);
  for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
    const fixture *fx = &FIXTURES[k];
    g_running = fx->name;
    alarm(WATCHDOG_S);
    loaded L = {0};
    load_fixture(fx, &L);
    float d_prefill = run_prefill(&L, 2), d_decode = run_decode(&L, 2);
    print_message("%-14s 2 threads: prefill %.3g, token by token %.3g\n", fx->name, d_prefill, d_decode);
    unload_fixture(&L);
    alarm(0);
    if (!(d_prefill <= TOL && d_decode <= TOL)) fail_msg("%s: 2-thread logits differ from transformers", fx->name);
  }
}

/* The reference logits must depend on the model: a sanity check of the fixtures themselves
 * (all-equal or near-uniform logits would let a broken forward pass through). */
static void test_fixtures_not_degenerate(void **st) {
  (void)st;
  for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
    char rel[256];
    snprintf(rel, sizeof rel, "ref/%s/expected.txt", FIXTURES[k].name);
    char *p = tu_testdata(rel);
    expected e = {0};
    read_expected(p, &e);
    for (int t = 0; t < e.n_tok; t++) {
      const float *row = &e.logits[(size_t)t * e.n_vocab];
      float lo = row[0], hi = row[0];
      for (int v = 1; v < e.n_vocab; v++) lo = fminf(lo, row[v]), hi = fmaxf(hi, row[v]);
      assert_true(hi - lo > 1.0f);
    }
    /* consecutive positions differ: attention and positions matter */
    assert_true(max_abs_diff(e.logits, e.logits + e.n_vocab, e.n_vocab) > 0.1f);
    free(e.tokens);
    free(e.logits);
    free(p);
  }
}

int main(void) {
  struct CMUnitTest tests[sizeof FIXTURES / sizeof FIXTURES[0] + 2];
  size_t n = 0;
  tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_fixtures_not_degenerate);
  for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
    tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate(test_fixture, (void *)&FIXTURES[k]);
    tests[n].name = FIXTURES[k].name;
    n++;
  }
  tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_two_threads);
  return _cmocka_run_group_tests("reference", tests, n, NULL, NULL);
}
