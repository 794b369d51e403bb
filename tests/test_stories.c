/* test_stories.c — end to end on the real pretrained stories260K in its three formats.
 * References: the greedy text documented by the model's author (stories260K.md, produced by
 * llama2.c's run.c), and agreement of the logits of the GGUF, llama2.c and HF-safetensors copies
 * (which exercise the interleaved and the rotate-half RoPE layouts). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"
#include "generate/generate.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define N_STEPS 256 /* run.c's default number of steps, used for the documented text */

/* The greedy text in stories260K.md: the code block that follows the `-t 0.0` command. */
static char *documented_greedy_text(void) {
  char *path = tu_shared("models/stories260K/stories260K.md"), *md;
  qlm_error err = {0};
  assert_int_equal(qlm_read_file(path, 1 << 20, &md, NULL, &err), 0);
  const char *cmd = strstr(md, "-t 0.0\n");
  assert_non_null(cmd);
  const char *start = cmd + strlen("-t 0.0\n");
  const char *end = strstr(start, "```");
  assert_non_null(end);
  while (end > start && (end[-1] == '\n' || end[-1] == ' ')) end--;
  char *text = strndup(start, (size_t)(end - start));
  free(md);
  free(path);
  return text;
}

typedef struct loaded {
  qlm_source *src;
  qlm_model *model;
  qlm_tokenizer *tok;
  qlm_state *state;
} loaded;

static void load(const char *rel, const char *tok_rel, loaded *l) {
  char *path = tu_shared(rel), *tpath = tok_rel ? tu_shared(tok_rel) : NULL;
  qlm_error err = {0};
  int rc = qlm_source_open(path, tpath, &l->src, &err);
  if (rc) fail_msg("%s", err.msg);
  rc = qlm_model_load(l->src, &l->model, &err);
  if (rc) fail_msg("%s", err.msg);
  l->tok = NULL;
  if (l->src->vocab.kind != QLM_TOK_NONE) assert_int_equal(qlm_tokenizer_new(&l->src->vocab, &l->tok, &err), 0);
  rc = qlm_state_new(l->model, 1, N_STEPS, 64, 2, &l->state, &err);
  if (rc) fail_msg("%s", err.msg);
  free(path);
  free(tpath);
}

static void unload(loaded *l) {
  qlm_state_free(l->state);
  qlm_tokenizer_free(l->tok);
  qlm_model_free(l->model);
  qlm_source_close(l->src);
}

typedef struct text_buf {
  char buf[8192];
  size_t n;
} text_buf;

static int append_piece(void *ctx, int32_t token, const char *piece, int len) {
  (void)token;
  text_buf *t = ctx;
  assert_true(t->n + (size_t)len < sizeof t->buf);
  memcpy(t->buf + t->n, piece, (size_t)len);
  t->n += (size_t)len;
  t->buf[t->n] = 0;
  return 0;
}

/* Greedy generation from BOS for N_STEPS tokens, as `run -t 0.0` does. */
static void check_greedy_text(const char *rel, const char *tok_rel) {
  loaded l;
  load(rel, tok_rel, &l);
  qlm_sampler smp;
  qlm_sampler_params sp = {.temperature = 0};
  qlm_error err = {0};
  assert_int_equal(qlm_sampler_init(&smp, &sp, l.model->hp.n_vocab, &err), 0);
  int32_t bos = l.src->vocab.bos_id;
  assert_int_equal(bos, 1);
  text_buf text = {.n = 0};
  qlm_gen_request req = {.prompt = &bos, .n_prompt = 1, .n_predict = N_STEPS, .stop_at_eos = 1,
                         .on_piece = append_piece, .ctx = &text};
  qlm_gen_stats st;
  if (qlm_generate(l.model, l.tok, l.state, &smp, &req, &st, &err)) fail_msg("%s", err.msg);
  char *expected = documented_greedy_text();
  while (text.n > 0 && (text.buf[text.n - 1] == '\n' || text.buf[text.n - 1] == ' ')) text.buf[--text.n] = 0;
  if (strcmp(text.buf, expected) != 0) fail_msg("%s: greedy text differs:\n--- got\n%s\n--- expected\n%s", rel, text.buf, expected);
  free(expected);
  qlm_sampler_free(&smp);
  unload(&l);
}

static void test_greedy_gguf(void **st) {
  (void)st;
  check_greedy_text("models/stories260K/stories260K.gguf", NULL);
}

static void test_greedy_llama2c(void **st) {
  (void)st;
  check_greedy_text("models/stories260K/stories260K.bin", "models/stories260K/tok512.bin");
}

/* All-position logits of one sequence, computed as one batch. [n x n_vocab], malloc'd. */
static float *all_logits(loaded *l, const int32_t *ids, int n) {
  int V = l->model->hp.n_vocab;
  float *logits = malloc((size_t)n * V * sizeof *logits);
  int32_t *pos = malloc((size_t)n * sizeof *pos), *seq = calloc((size_t)n, sizeof *seq);
  for (int i = 0; i < n; i++) pos[i] = i;
  qlm_error err = {0};
  qlm_state_clear(l->state, 0);
  for (int i0 = 0; i0 < n; i0 += 64) { /* the state was made for batches of 64 rows */
    int m = n - i0 < 64 ? n - i0 : 64;
    qlm_batch b = {.n = m, .token = ids + i0, .pos = pos + i0, .seq = seq + i0};
    if (qlm_forward(l->model, l->state, &b, logits + (size_t)i0 * V, &err)) fail_msg("%s", err.msg);
  }
  free(pos);
  free(seq);
  return logits;
}

/* The three copies of the weights give the same logits at every position of 256 tokens. */
static void test_formats_agree(void **st) {
  (void)st;
  loaded g, b, h;
  load("models/stories260K/stories260K.gguf", NULL, &g);
  load("models/stories260K/stories260K.bin", "models/stories260K/tok512.bin", &b);
  load("models/stories260K-hf", NULL, &h);
  assert_int_equal(h.model->hp.rope_style, QLM_ROPE_NEOX);
  assert_int_equal(g.model->hp.rope_style, QLM_ROPE_INTERLEAVED);
  /* a real text, so attention sees a varied context */
  const char *text = "Once upon a time, there was a little dog named Max. Max liked to run in the big green park "
                     "with his friend Sue. One day, they found a shiny red box under a tree. \"What is in the box?\" "
                     "asked Sue. Max barked and wagged his tail. They opened it and saw many small toys. They were "
                     "very happy and played all day until the sun went down. Then they went home to sleep.";
  int32_t *ids;
  int n;
  qlm_error err = {0};
  assert_int_equal(qlm_tokenize(g.tok, text, strlen(text), 1, 0, &ids, &n, &err), 0);
  int32_t seqids[N_STEPS];
  for (int i = 0; i < N_STEPS; i++) seqids[i] = ids[i % n]; /* repeat the text to fill 256 positions */
  free(ids);
  /* Both attention paths (model.h qlm_state_set_gemm_attention).  The row kernels sum scores in
   * double, so the HF copy's permuted q/k rows change nothing but the last bits of the products
   * after it: 1e-5.  The BLAS path (the default for a batch of one sequence) sums q.k in f32 in
   * the rows' order, which the permutation changes: each score moves by a few ulp, and over five
   * layers the logits (|logit| up to ~20) by ~1.5e-5 measured; 1e-4 is ~5 ulp of 20. */
  for (int gemm = 0; gemm < 2; gemm++) {
    loaded *all[3] = {&g, &b, &h};
    for (int i = 0; i < 3; i++) assert_int_equal(qlm_state_set_gemm_attention(all[i]->state, gemm, &err), 0);
    float *lg = all_logits(&g, seqids, N_STEPS), *lb = all_logits(&b, seqids, N_STEPS);
    float *lh = all_logits(&h, seqids, N_STEPS);
    size_t total = (size_t)N_STEPS * g.model->hp.n_vocab;
    double max_gb = 0, max_gh = 0;
    for (size_t i = 0; i < total; i++) {
      max_gb = fmax(max_gb, fabs(lg[i] - lb[i]));
      max_gh = fmax(max_gh, fabs(lg[i] - lh[i]));
    }
    print_message("%s attention: max |logit diff| gguf-bin %.3g, gguf-hf %.3g over %zu logits\n",
                  gemm ? "BLAS" : "row-kernel", max_gb, max_gh, total);
    assert_true(max_gb <= 1e-5); /* the same weights in the same layout: the same arithmetic */
    assert_true(max_gh <= (gemm ? 1e-4 : 1e-5));
    free(lg);
    free(lb);
    free(lh);
  }
  unload(&g);
  unload(&b);
  unload(&h);
}

/* Without an add_bos_token key a SentencePiece GGUF adds BOS (llama.cpp's default), so a prompt
 * tokenizes as it does from the llama2.c copy, whose tokenizer always adds it. */
static void test_prompt_tokens_agree(void **st) {
  (void)st;
  loaded g, b;
  load("models/stories260K/stories260K.gguf", NULL, &g);
  load("models/stories260K/stories260K.bin", "models/stories260K/tok512.bin", &b);
  const char *text = "Once upon a time";
  int32_t *ig, *ib;
  int ng, nb;
  qlm_error err = {0};
  assert_int_equal(qlm_tokenize(g.tok, text, strlen(text), 1, 0, &ig, &ng, &err), 0);
  assert_int_equal(qlm_tokenize(b.tok, text, strlen(text), 1, 0, &ib, &nb, &err), 0);
  assert_int_equal(ng, nb);
  assert_int_equal(ig[0], 1);
  assert_memory_equal(ig, ib, (size_t)ng * sizeof *ig);
  free(ig);
  free(ib);
  unload(&g);
  unload(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_greedy_gguf),
      cmocka_unit_test(test_greedy_llama2c),
      cmocka_unit_test(test_formats_agree),
      cmocka_unit_test(test_prompt_tokens_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
