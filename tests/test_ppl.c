/* test_ppl.c — perplexity protocols, the batched scorer, KL divergence and the results record.
 *
 * The closed-form checks use a "bigram" copy of stories260K: every attention output and FFN down
 * projection is zero, so the residual stream is the current token's embedding and
 *   log p(b | ..., a) = log_softmax(output * rmsnorm(embd[a]) * out_norm)[b]
 * which the test computes in double directly from the weights.  Each protocol's perplexity is
 * then exp of the mean of those values over exactly the (predecessor, target) pairs the protocol
 * scores, counted here by hand. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mapfile.h"
#include "eval/kl.h"
#include "eval/ppl.h"
#include "eval/results.h"
#include "formats/gguf_write.h"
#include "testutil.h"

#define STORIES "models/stories260K/stories260K.gguf"

static tu_bigram *B; /* built once for the whole file (testutil.h) */

static qlm_source *open_src(const char *path) {
  qlm_error err = {0};
  qlm_source *s = NULL;
  if (qlm_source_open(path, NULL, &s, &err)) fail_msg("%s", err.msg);
  return s;
}

static int setup_bigram(void **state) {
  (void)state;
  B = tu_bigram_new();
  return 0;
}

static int teardown_bigram(void **state) {
  (void)state;
  tu_bigram_free(B);
  return 0;
}

static double lp(int32_t a, int32_t b) { return B->lp[(size_t)a * B->V + b]; }

static qlm_ppl_plan plan_of(const int32_t *t, int64_t n) {
  qlm_ppl_plan p = {0};
  p.tokens = malloc((size_t)n * sizeof *t);
  memcpy(p.tokens, t, (size_t)n * sizeof *t);
  p.n_tokens = n;
  return p;
}

static void random_tokens(int32_t *t, int n, uint64_t seed) {
  for (int i = 0; i < n; i++) t[i] = (int32_t)(3 + tu_rand_u64(&seed) % (uint64_t)(B->V - 3));
}

static qlm_ppl_stats run(const qlm_ppl_plan *p, int batch, int ubatch, int threads) {
  qlm_error err = {0};
  qlm_ppl_opts o = {.batch = batch, .ubatch = ubatch, .n_threads = threads};
  qlm_ppl_stats st;
  if (qlm_ppl_run(B->model, p, &o, &st, &err)) fail_msg("%s", err.msg);
  return st;
}

static void assert_rel(double got, double want, double tol) {
  if (!(fabs(got - want) <= tol * fabs(want))) fail_msg("got %.10g, want %.10g (rel tol %g)", got, want, tol);
}

/* hf-window: windows of 16 every 5 tokens; every token but the first is scored exactly once, and
 * the perplexity is that of all consecutive pairs, whatever the batching. */
static void test_hf_window_closed_form(void **state) {
  (void)state;
  enum { N = 103 };
  int32_t t[N];
  random_tokens(t, N, 7);
  qlm_error err = {0};
  qlm_ppl_plan p = plan_of(t, N);
  assert_int_equal(qlm_ppl_add_hf_windows(&p, 0, N, 16, 5, &err), 0);
  int seen[N] = {0};
  for (int64_t w = 0; w < p.n_win; w++) {
    assert_true(p.win[w].end - p.win[w].begin <= 16);
    assert_int_equal(p.win[w].begin % 5, 0);
    for (int64_t i = p.win[w].score_from; i < p.win[w].end; i++) seen[i]++;
  }
  assert_int_equal(seen[0], 0);
  for (int i = 1; i < N; i++) assert_int_equal(seen[i], 1);
  assert_int_equal(p.win[p.n_win - 1].end, N);
  double s = 0;
  for (int i = 1; i < N; i++) s -= lp(t[i - 1], t[i]);
  double want = exp(s / (N - 1));
  qlm_ppl_stats a = run(&p, 1, 512, 1), b = run(&p, 3, 7, 2);
  assert_int_equal(a.n_scored, N - 1);
  assert_int_equal(b.n_scored, N - 1);
  assert_rel(a.ppl, want, 1e-5);
  assert_rel(b.ppl, want, 1e-5);
  /* llama.cpp's error: ppl * sqrt(var / (N-1)) */
  double s2 = 0, m = s / (N - 1);
  for (int i = 1; i < N; i++) s2 += pow(-lp(t[i - 1], t[i]) - m, 2);
  assert_rel(a.ppl_err, want * sqrt(s2 / (N - 1) / (N - 2)), 1e-3);
  /* stride == window: disjoint windows, each window's first token unscored except the first's */
  qlm_ppl_plan_free(&p);
  p = plan_of(t, N);
  assert_int_equal(qlm_ppl_add_hf_windows(&p, 0, N, 10, 10, &err), 0);
  assert_int_equal(p.n_win, 11);
  assert_int_equal(qlm_ppl_plan_scored(&p), N - 11);
  assert_int_equal(qlm_ppl_add_hf_windows(&p, 0, N, 10, 11, &err), QLM_EUSAGE);
  qlm_ppl_plan_free(&p);
}

/* llama.cpp: floor(n/n_ctx) chunks, BOS in place of each chunk's first token, tokens
 * n_ctx/2+1 .. n_ctx-1 of each chunk scored (n_ctx - n_ctx/2 - 1 of them). */
static void test_llamacpp_closed_form(void **state) {
  (void)state;
  enum { N = 45, C = 10 };
  int32_t t[N];
  random_tokens(t, N, 11);
  qlm_error err = {0};
  qlm_ppl_plan p = plan_of(t, N);
  assert_int_equal(qlm_ppl_add_llamacpp_chunks(&p, C, 1, &err), 0);
  assert_int_equal(p.n_win, 4);
  double s = 0;
  int n = 0;
  for (int c = 0; c < 4; c++) {
    assert_int_equal(p.win[c].begin, c * C);
    assert_int_equal(p.win[c].replace_first, 1);
    for (int i = c * C + C / 2 + 1; i < (c + 1) * C; i++, n++) s -= lp(t[i - 1], t[i]);
  }
  assert_int_equal(n, 4 * (C - C / 2 - 1));
  qlm_ppl_stats st = run(&p, 2, 9, 1);
  assert_int_equal(st.n_scored, n);
  assert_rel(st.ppl, exp(s / n), 1e-5);
  qlm_ppl_plan_free(&p);
  p = plan_of(t, 19);
  assert_int_equal(qlm_ppl_add_llamacpp_chunks(&p, C, 1, &err), QLM_EUSAGE); /* < 2*n_ctx tokens */
  qlm_ppl_plan_free(&p);
}

/* A bigram never sees llama.cpp's BOS replacement in real chunks (the first scored token follows
 * position n_ctx/2), so a hand-made window scores the token right after the replaced one. */
static void test_replace_first_and_prefix(void **state) {
  (void)state;
  int32_t t[6] = {100, 200, 300, 400, 50, 60};
  qlm_ppl_plan p = plan_of(t, 6);
  qlm_error err = {0};
  p.win = malloc(sizeof *p.win);
  p.cap_win = 1;
  p.n_win = 1;
  p.win[0] = (qlm_ppl_window){.begin = 0, .end = 4, .score_from = 1, .prefix = -1, .replace_first = 1};
  p.max_rows = 3;
  double s = -lp(1, 200) - lp(200, 300) - lp(300, 400);
  assert_rel(run(&p, 1, 512, 1).ppl, exp(s / 3), 1e-5);
  /* lm-eval rolling windows: prefix token predicts the first token; windows of 4 cover all 6 once */
  qlm_ppl_plan_free(&p);
  p = plan_of(t, 6);
  assert_int_equal(qlm_ppl_add_rolling_windows(&p, 0, 6, 4, 2, &err), 0);
  assert_int_equal(p.n_win, 2);
  assert_int_equal(p.win[0].prefix, 2);
  assert_int_equal(p.win[1].begin, 1); /* input right-aligned: tokens[6-4-1 .. 5) */
  assert_int_equal(p.win[1].score_from, 4);
  assert_int_equal(qlm_ppl_plan_scored(&p), 6);
  s = -lp(2, 100);
  for (int i = 1; i < 6; i++) s -= lp(t[i - 1], t[i]);
  assert_rel(run(&p, 2, 3, 1).ppl, exp(s / 6), 1e-5);
  qlm_ppl_plan_free(&p);
}

/* Text protocols: hf-window joins rows with "\n\n" and blank rows become ""; per-line scores each
 * non-empty row alone (its first token unscored). */
static void test_text_protocols(void **state) {
  (void)state;
  const char *text = " \n = Title = \n \n Once upon a time there was a cat .\n The cat sat on the mat .\n";
  const char *rows[] = {"", " = Title = \n", "", " Once upon a time there was a cat .\n", " The cat sat on the mat .\n"};
  qlm_error err = {0};
  /* per-line */
  double s = 0;
  int n = 0;
  for (int r = 0; r < 5; r++) {
    if (!*rows[r]) continue;
    int32_t *ids;
    int k;
    assert_int_equal(qlm_tokenize(B->tok, rows[r], strlen(rows[r]), 1, 0, &ids, &k, &err), 0);
    for (int i = 1; i < k; i++, n++) s -= lp(ids[i - 1], ids[i]);
    free(ids);
  }
  qlm_ppl_plan p;
  qlm_ppl_params prm = {.window = 8, .stride = 3};
  assert_int_equal(qlm_ppl_plan_text(B->tok, text, strlen(text), QLM_PPL_PER_LINE, &prm, 2048, &p, &err), 0);
  assert_int_equal(p.n_docs, 3);
  qlm_ppl_stats st = run(&p, 4, 16, 1);
  assert_int_equal(st.n_scored, n);
  assert_rel(st.ppl, exp(s / n), 1e-5);
  qlm_ppl_plan_free(&p);
  /* hf-window */
  char joined[256] = "";
  for (int r = 0; r < 5; r++) {
    if (r) strcat(joined, "\n\n");
    strcat(joined, rows[r]);
  }
  int32_t *ids;
  int k;
  assert_int_equal(qlm_tokenize(B->tok, joined, strlen(joined), 1, 0, &ids, &k, &err), 0);
  s = 0;
  for (int i = 1; i < k; i++) s -= lp(ids[i - 1], ids[i]);
  assert_int_equal(qlm_ppl_plan_text(B->tok, text, strlen(text), QLM_PPL_HF_WINDOW, &prm, 2048, &p, &err), 0);
  assert_int_equal(p.n_tokens, k);
  assert_memory_equal(p.tokens, ids, (size_t)k * sizeof *ids);
  st = run(&p, 2, 5, 1);
  assert_int_equal(st.n_scored, k - 1);
  assert_rel(st.ppl, exp(s / (k - 1)), 1e-5);
  free(ids);
  qlm_ppl_plan_free(&p);
  /* windows longer than the model's context are refused */
  prm.window = 4096;
  assert_int_equal(qlm_ppl_plan_text(B->tok, text, strlen(text), QLM_PPL_HF_WINDOW, &prm, 2048, &p, &err), QLM_EUSAGE);
  assert_int_equal(qlm_ppl_protocol_parse("lm-eval"), QLM_PPL_LM_EVAL);
  assert_int_equal(qlm_ppl_protocol_parse("wiki"), -1);
}

/* lm-eval: articles split at " = Title = " headings, words counted on the original page with
 * re.split(r"\s+"), bytes its UTF-8 length; the detokenizer's output (Python's re as reference,
 * strings computed with lm-eval's wikitext_detokenizer) is what is tokenized. */
static void test_lm_eval(void **state) {
  (void)state;
  qlm_error err = {0};
  char *d = NULL;
  const char *in = " = Boulter = \n \n He won 1 @,@ 000 km ( 2 miles ) , \" a b \" ; 's N . \n = = Life = = \n";
  assert_int_equal(qlm_wikitext_detokenize(in, strlen(in), &d, &err), 0);
  assert_string_equal(d, " = Boulter =\n\nHe won 1,000 km (2 miles), \"a b\";'s N.\n== Life ==\n");
  free(d);
  /* EleutherAI/wikitext_document_level's pages: "\n".join of the lines from one " = Title = " line
   * to the next; the blank page before the first title is dropped; the last page keeps the text's
   * final "\n".  So the pages are " = A = \n x y @-@ z \n = = B = = \n w " and " = C = \n v \n"
   * (Python: len(re.split(r"\s+", page)) = 15 and 6; 47 UTF-8 bytes in all). */
  const char *text = " \n = A = \n x y @-@ z \n = = B = = \n w \n = C = \n v \n";
  const char *page1 = " = A = \n x y @-@ z \n = = B = = \n w ";
  qlm_ppl_plan p;
  assert_int_equal(qlm_ppl_plan_text(B->tok, text, strlen(text), QLM_PPL_LM_EVAL, NULL, 2048, &p, &err), 0);
  assert_int_equal(p.n_docs, 2);
  assert_true(p.n_words == 15 + 6);
  assert_true(p.n_bytes == 47);
  assert_int_equal(qlm_ppl_plan_scored(&p), p.n_tokens);
  assert_int_equal(p.win[0].prefix, B->src->vocab.bos_id);
  /* the first page's tokens: its detokenized text with the tokenizer's default BOS (lm-eval 0.4.x) */
  assert_int_equal(qlm_wikitext_detokenize(page1, strlen(page1), &d, &err), 0);
  assert_string_equal(d, " = A =\nx y-z\n== B ==\nw ");
  int32_t *ids;
  int k;
  assert_int_equal(qlm_tokenize(B->tok, d, strlen(d), 1, 0, &ids, &k, &err), 0);
  assert_int_equal(ids[0], B->src->vocab.bos_id);
  assert_true(p.win[0].end - p.win[0].begin == k && p.n_tokens > k);
  assert_memory_equal(p.tokens, ids, (size_t)k * sizeof *ids);
  free(ids);
  free(d);
  qlm_ppl_plan_free(&p);
  /* a text without any title is one page; a title on the first line opens the first page */
  const char *t2 = " = Only = \n a b \n";
  assert_int_equal(qlm_ppl_plan_text(B->tok, t2, strlen(t2), QLM_PPL_LM_EVAL, NULL, 2048, &p, &err), 0);
  assert_int_equal(p.n_docs, 1);
  assert_true(p.n_bytes == (double)strlen(t2) && p.n_words == 7);
  qlm_ppl_plan_free(&p);
}

/* ---- stories260K: batching and threads do not change the result; KL to itself is 0 ---- */

static qlm_source *S_src;
static qlm_model *S_model;
static qlm_tokenizer *S_tok;

static void open_stories(void) {
  qlm_error err = {0};
  char *sp = tu_shared(STORIES);
  S_src = open_src(sp);
  free(sp);
  assert_int_equal(qlm_model_load(S_src, &S_model, &err), 0);
  assert_int_equal(qlm_tokenizer_new(&S_src->vocab, &S_tok, &err), 0);
}

static void close_stories(void) {
  qlm_tokenizer_free(S_tok);
  qlm_model_free(S_model);
  qlm_source_close(S_src);
}

static void stories_plan(qlm_ppl_plan *p, int protocol, int window, int stride) {
  qlm_error err = {0};
  char *path = tu_shared("data/calibration/exllamav2/tiny.utf8");
  char *text = NULL;
  size_t len;
  if (qlm_read_file(path, 1 << 26, &text, &len, &err)) fail_msg("%s", err.msg);
  if (len > 6000) len = 6000;
  while (len && (text[len - 1] & 0xc0) == 0x80) len--; /* cut at a character boundary */
  if (len && (unsigned char)text[len - 1] >= 0xc0) len--;
  qlm_ppl_params prm = {.window = window, .stride = stride};
  if (qlm_ppl_plan_text(S_tok, text, len, protocol, &prm, S_model->hp.n_ctx, p, &err)) fail_msg("%s", err.msg);
  free(text);
  free(path);
}

static void test_stories_batch_invariance(void **state) {
  (void)state;
  open_stories();
  qlm_ppl_plan p;
  stories_plan(&p, QLM_PPL_HF_WINDOW, 96, 40);
  qlm_error err = {0};
  qlm_ppl_stats ref, st;
  qlm_ppl_opts o = {.batch = 1, .ubatch = 512, .n_threads = 1};
  assert_int_equal(qlm_ppl_run(S_model, &p, &o, &ref, &err), 0);
  assert_int_equal(ref.n_scored, p.n_tokens - 1);
  assert_true(ref.ppl > 1.5 && ref.ppl < 20); /* in-domain text for a TinyStories model */
  int cfg[][3] = {{4, 512, 2}, {7, 33, 1}, {3, 100, 2}};
  for (int c = 0; c < 3; c++) {
    o = (qlm_ppl_opts){.batch = cfg[c][0], .ubatch = cfg[c][1], .n_threads = cfg[c][2]};
    assert_int_equal(qlm_ppl_run(S_model, &p, &o, &st, &err), 0);
    assert_int_equal(st.n_scored, ref.n_scored);
    assert_rel(st.ppl, ref.ppl, 1e-4);
  }
  /* a window scored in one pass equals the token-by-token forward of the engine */
  qlm_state *s;
  int n = 40;
  assert_int_equal(qlm_state_new(S_model, 1, n, 1, 1, &s, &err), 0);
  float *l = malloc((size_t)S_model->hp.n_vocab * sizeof *l);
  double nll = 0;
  for (int i = 0; i + 1 < n; i++) {
    assert_int_equal(qlm_forward_seq(S_model, s, 0, i, &p.tokens[i], 1, l, &err), 0);
    double mx = l[0], sum = 0;
    for (int k = 1; k < S_model->hp.n_vocab; k++) mx = l[k] > mx ? l[k] : mx;
    for (int k = 0; k < S_model->hp.n_vocab; k++) sum += exp(l[k] - mx);
    nll += mx + log(sum) - l[p.tokens[i + 1]];
  }
  qlm_ppl_plan q = plan_of(p.tokens, n);
  assert_int_equal(qlm_ppl_add_hf_windows(&q, 0, n, n, n, &err), 0);
  o = (qlm_ppl_opts){.batch = 1, .ubatch = 16, .n_threads = 2};
  assert_int_equal(qlm_ppl_run(S_model, &q, &o, &st, &err), 0);
  assert_rel(st.ppl, exp(nll / (n - 1)), 1e-4);
  free(l);
  qlm_state_free(s);
  qlm_ppl_plan_free(&q);
  qlm_ppl_plan_free(&p);
  close_stories();
}

typedef struct kl_ctx { qlm_kl_writer *w; qlm_kl_reader *r; } kl_ctx;

static int kl_tok(void *ctx, int64_t index, int32_t target, const float *logits, double lse, qlm_error *err) {
  (void)index;
  kl_ctx *k = ctx;
  if (k->w) return qlm_kl_writer_add(k->w, target, logits, lse, err);
  return qlm_kl_reader_add(k->r, target, logits, lse, err);
}

/* ---- stories260K against the reference implementations ----
 *
 * Expected values: tools/ppl_reference.py on ../shared/models/stories260K-hf (transformers 5,
 * float32, NLL summed in float64) over the first 40 lines of wiki.test.raw (`head -n 40`, 7786 bytes):
 * hf-window = the code of HF's perplexity guide (exact token mean; 1024/512), per-line = the same
 * loop per non-empty row, llamacpp = llama.cpp perplexity's chunking (n_ctx 512, BOS first), and
 * lm-eval = lm-evaluation-harness 0.4.13 HFLM.loglikelihood_rolling + its wikitext
 * process_results/aggregation (max_length 512 = the HF config's max_position_embeddings).
 * The token ids are qlm's (the HF copy has no tokenizer; the tokenizer is tested against
 * llama.cpp's elsewhere).  qlm's and HF's logits agree to ~1e-6, which moves these PPLs by
 * < 1e-7 (measured: <= 7e-8, lm-eval 2.6e-7 since lm-eval sums log-probabilities in float32);
 * tolerance 2e-6, and 1e-5 for word_perplexity whose exponent is ~16x the token NLL's. */
static void test_stories_reference_values(void **state) {
  (void)state;
  open_stories();
  qlm_error err = {0};
  char *path = tu_shared("data/wikitext-2-raw/wiki.test.raw");
  char *text = NULL;
  size_t len = 0;
  if (qlm_read_file(path, 1 << 24, &text, &len, &err)) fail_msg("%s", err.msg);
  free(path);
  size_t cut = 0;
  for (int lines = 0; cut < len && lines < 40; cut++) lines += text[cut] == '\n';
  assert_int_equal(cut, 7786);
  static const struct {
    int protocol, window, n_win;
    int64_t scored;
    double ppl;
  } ref[] = {
      {QLM_PPL_HF_WINDOW, 0, 9, 4954, 162.28980249375985},
      {QLM_PPL_PER_LINE, 0, 19, 4894, 128.1610297713373},
      {QLM_PPL_LLAMACPP, 0, 9, 2295, 113.37541823791948},
      {QLM_PPL_LM_EVAL, 512, 10, 4658, 87.74390179775722},
  };
  for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
    qlm_ppl_plan p;
    qlm_ppl_params prm = {.window = ref[i].window};
    assert_int_equal(qlm_ppl_plan_text(S_tok, text, cut, ref[i].protocol, &prm, S_model->hp.n_ctx, &p, &err), 0);
    qlm_ppl_opts o = {.batch = 4, .ubatch = 512, .n_threads = 2};
    qlm_ppl_stats st;
    assert_int_equal(qlm_ppl_run(S_model, &p, &o, &st, &err), 0);
    assert_int_equal(st.n_windows, ref[i].n_win);
    assert_int_equal(st.n_scored, ref[i].scored);
    assert_rel(st.ppl, ref[i].ppl, 2e-6);
    if (ref[i].protocol == QLM_PPL_LLAMACPP) /* llama.cpp's +/- from the reference's sum of NLL^2 (80008.78264613857) */
      assert_rel(st.ppl_err, 8.36325943322405, 1e-5);
    if (ref[i].protocol == QLM_PPL_LM_EVAL) {
      assert_int_equal(p.n_docs, 2);
      double ll = -st.nll_sum;
      assert_rel(exp(-ll / p.n_words), 1144380.973553587, 1e-5);
      assert_rel(exp(-ll / p.n_bytes), 14.554054807842775, 2e-6);
      assert_rel(-ll / p.n_bytes / log(2.0), 3.8633492436358283, 2e-6);
    }
    qlm_ppl_plan_free(&p);
  }
  free(text);
  close_stories();
}

static void test_kl_self_and_hostile_files(void **state) {
  (void)state;
  open_stories();
  qlm_ppl_plan p;
  stories_plan(&p, QLM_PPL_LLAMACPP, 64, 0);
  qlm_error err = {0};
  char *dir = tu_tmpdir(), path[600], bad[640];
  snprintf(path, sizeof path, "%s/base.kld", dir);
  snprintf(bad, sizeof bad, "%s/bad.kld", dir);
  qlm_kl_header h = {.n_vocab = (uint32_t)S_model->hp.n_vocab, .k = 16, .protocol = QLM_PPL_LLAMACPP, .window = 64};
  qlm_kl_plan_fingerprint(&p, 0, &h.n_records, &h.fingerprint);
  assert_int_equal(h.n_records, qlm_ppl_plan_scored(&p));
  kl_ctx k = {0};
  assert_int_equal(qlm_kl_writer_open(&k.w, path, &h, &err), 0);
  qlm_ppl_opts o = {.batch = 3, .ubatch = 100, .n_threads = 2, .on_token = kl_tok, .ctx = &k};
  qlm_ppl_stats st;
  assert_int_equal(qlm_ppl_run(S_model, &p, &o, &st, &err), 0);
  assert_int_equal(qlm_kl_writer_commit(k.w, &err), 0);
  k.w = NULL;
  /* the same model, other batching: KL 0, top-1 100 %, same PPL */
  assert_int_equal(qlm_kl_reader_open(&k.r, path, &h, &err), 0);
  o.batch = 1;
  o.n_threads = 1;
  assert_int_equal(qlm_ppl_run(S_model, &p, &o, &st, &err), 0);
  qlm_kl_stats ks;
  assert_int_equal(qlm_kl_reader_finish(k.r, &ks, &err), 0);
  qlm_kl_reader_free(k.r);
  assert_int_equal(ks.n, st.n_scored);
  assert_true(fabs(ks.kld_mean) < 1e-6);
  assert_true(ks.kld_p99 < 1e-5);
  assert_true(ks.top1_agree == 1.0);
  assert_rel(ks.ppl_base, st.ppl, 1e-5);
  assert_true(fabs(ks.dppl) < 1e-4 * st.ppl);
  /* hostile files */
  qlm_mapfile m;
  assert_int_equal(qlm_map_file(path, &m, &err), 0);
  unsigned char *copy = malloc(m.size);
  memcpy(copy, m.data, m.size);
  size_t rec = 12 + 8 * 16;
  tu_write_file(bad, copy, m.size - 5); /* truncated */
  assert_int_equal(qlm_kl_reader_open(&k.r, bad, &h, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "bad.kld"));
  tu_write_file(bad, copy, 10);
  assert_int_equal(qlm_kl_reader_open(&k.r, bad, &h, &err), QLM_EFORMAT);
  copy[16] = 0xff, copy[17] = 0xff; /* k = 65535+ */
  tu_write_file(bad, copy, m.size);
  assert_int_equal(qlm_kl_reader_open(&k.r, bad, &h, &err), QLM_EFORMAT);
  memcpy(copy, m.data, m.size);
  qlm_kl_header h2 = h;
  h2.fingerprint ^= 1;
  assert_int_equal(qlm_kl_reader_open(&k.r, path, &h2, &err), QLM_EUSAGE);
  h2 = h;
  h2.window = 128;
  assert_int_equal(qlm_kl_reader_open(&k.r, path, &h2, &err), QLM_EUSAGE);
  /* record 2, entry 0: a token id beyond the vocabulary */
  memset(copy + QLM_KL_HEADER_BYTES + 2 * rec + 12, 0xff, 4);
  tu_write_file(bad, copy, m.size);
  assert_int_equal(qlm_kl_reader_open(&k.r, bad, &h, &err), 0);
  o.on_token = kl_tok;
  assert_int_equal(qlm_ppl_run(S_model, &p, &o, &st, &err), QLM_EFORMAT);
  assert_non_null(strstr(err.msg, "record 2"));
  qlm_kl_reader_free(k.r);
  free(copy);
  qlm_unmap_file(&m);
  remove(path);
  remove(bad);
  rmdir(dir);
  free(dir);
  qlm_ppl_plan_free(&p);
  close_stories();
}

/* The results record round-trips through JSON (cJSON parses what the writer printed). */
static void test_results_json(void **state) {
  (void)state;
  qlm_error err = {0};
  qlm_result r;
  qlm_result_init(&r, "perplexity", B->src);
  snprintf(r.protocol, sizeof r.protocol, "hf-window");
  r.tokens = 123;
  r.seconds = 1.5;
  assert_int_equal(qlm_result_add(&r, "ppl", 12.25, &err), 0);
  assert_int_equal(qlm_result_add(&r, "word_perplexity", NAN, &err), 0);
  assert_int_equal(qlm_result_set(&r, "window", "1024", &err), 0);
  char *s = qlm_result_to_json(&r, &err);
  cJSON *j = cJSON_Parse(s);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring, B->path);
  assert_string_equal(cJSON_GetObjectItem(j, "method")->valuestring, "none");
  assert_true(fabs(cJSON_GetObjectItem(j, "bits")->valuedouble - 32.0) < 1e-9); /* all f32 */
  assert_int_equal(cJSON_GetObjectItem(j, "tokens")->valueint, 123);
  cJSON *m = cJSON_GetObjectItem(j, "metrics");
  assert_true(cJSON_GetObjectItem(m, "ppl")->valuedouble == 12.25);
  assert_true(cJSON_IsNull(cJSON_GetObjectItem(m, "word_perplexity")));
  assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "settings"), "window")->valuestring, "1024");
  assert_true(qlm_result_get(&r, "ppl") == 12.25);
  assert_true(isnan(qlm_result_get(&r, "none")));
  cJSON_Delete(j);
  free(s);
  char longname[64];
  memset(longname, 'a', 63);
  longname[63] = 0;
  assert_int_equal(qlm_result_add(&r, longname, 1, &err), QLM_ELIMIT);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hf_window_closed_form),
      cmocka_unit_test(test_llamacpp_closed_form),
      cmocka_unit_test(test_replace_first_and_prefix),
      cmocka_unit_test(test_text_protocols),
      cmocka_unit_test(test_lm_eval),
      cmocka_unit_test(test_results_json),
      cmocka_unit_test(test_stories_batch_invariance),
      cmocka_unit_test(test_stories_reference_values),
      cmocka_unit_test(test_kl_self_and_hostile_files),
  };
  return cmocka_run_group_tests(tests, setup_bigram, teardown_bigram);
}
