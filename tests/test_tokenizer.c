/* test_tokenizer.c — the tokenizers against llama.cpp's tokenizer test vectors
 * (../shared/tokenizers/llama.cpp-vocab: X.gguf + X.gguf.inp/.out, generated from the Hugging
 * Face tokenizers), plus unit tests of the algorithms on tiny hand-built vocabs.
 *
 * .inp: test strings separated by "\n__ggml_vocab_test__\n" (the file ends with one more
 * separator); .out: one line per string, " id id id" (empty for no tokens).  As in
 * llama.cpp's test-tokenizer-0, strings are tokenized with add_special = false and
 * parse_special = false (no BOS appears in the expected ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapfile.h"
#include "formats/source.h"
#include "testutil.h"
#include "tokenizer/tokenizer.h"

#define SEP "\n__ggml_vocab_test__\n"

/* Split the .inp text into strings (pointers into `text`, NUL-terminated in place). */
static int split_inputs(char *text, char **out, int max) {
  int n = 0;
  char *p = text;
  for (;;) {
    char *q = strstr(p, SEP);
    if (!q) break;
    assert_true(n < max);
    *q = '\0';
    out[n++] = p;
    p = q + strlen(SEP);
  }
  return n;
}

/* Returns the number of vectors that pass; prints the failures. */
static int run_vectors(const char *name, int *n_total) {
  char rel[256], *path, *inp_path, *out_path, *inp, *outs;
  snprintf(rel, sizeof rel, "tokenizers/llama.cpp-vocab/ggml-vocab-%s.gguf", name);
  path = tu_shared(rel);
  size_t n1 = strlen(path) + 8;
  inp_path = malloc(n1);
  out_path = malloc(n1);
  snprintf(inp_path, n1, "%s.inp", path);
  snprintf(out_path, n1, "%s.out", path);
  qlm_error err = {0};
  if (qlm_read_file(inp_path, 1 << 20, &inp, NULL, &err) || qlm_read_file(out_path, 1 << 20, &outs, NULL, &err))
    fail_msg("%s", err.msg);
  qlm_source *src;
  if (qlm_gguf_open(path, &src, &err)) fail_msg("%s", err.msg);
  qlm_tokenizer *tok;
  if (qlm_tokenizer_new(&src->vocab, &tok, &err)) fail_msg("%s", err.msg);

  char *tests[128];
  int n = split_inputs(inp, tests, 128);
  assert_true(n > 10);
  int pass = 0;
  char *line = outs;
  for (int t = 0; t < n; t++) {
    char *nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    int32_t want[512];
    int nwant = 0;
    for (char *q = line, *end; *q;) {
      long id = strtol(q, &end, 10);
      if (end == q) break;
      assert_true(nwant < 512);
      want[nwant++] = (int32_t)id;
      q = end;
    }
    line = nl + 1;
    int32_t *ids;
    int nids;
    if (qlm_tokenize(tok, tests[t], strlen(tests[t]), 0, 0, &ids, &nids, &err)) fail_msg("%s: %s", name, err.msg);
    int ok = nids == nwant && memcmp(ids, want, sizeof(int32_t) * (size_t)nwant) == 0;
    /* Round trip: every supported tokenizer is lossless on these strings. */
    char *back;
    assert_int_equal(qlm_detokenize(tok, ids, nids, 0, &back, &err), 0);
    int rt = strcmp(back, tests[t]) == 0;
    if (ok && rt) {
      pass++;
    } else {
      printf("  %s #%d '%s': %s%s\n    got ", name, t, tests[t], ok ? "" : "ids differ ", rt ? "" : "round trip differs");
      for (int i = 0; i < nids; i++) printf(" %d", ids[i]);
      printf("\n    want");
      for (int i = 0; i < nwant; i++) printf(" %d", want[i]);
      printf("\n    back '%s'\n", back);
    }
    free(back);
    free(ids);
  }
  printf("%-16s %d/%d vectors pass (ids and round trip)\n", name, pass, n);
  *n_total = n;
  qlm_tokenizer_free(tok);
  qlm_source_close(src);
  free(inp);
  free(outs);
  free(path);
  free(inp_path);
  free(out_path);
  return pass;
}

static void check_vocab(const char *name) {
  int n = 0, pass = run_vectors(name, &n);
  assert_int_equal(pass, n);
}

static void test_llama_spm(void **st) { (void)st; check_vocab("llama-spm"); }
static void test_phi3(void **st) { (void)st; check_vocab("phi-3"); }
static void test_gpt2(void **st) { (void)st; check_vocab("gpt-2"); }
static void test_starcoder(void **st) { (void)st; check_vocab("starcoder"); }
static void test_falcon(void **st) { (void)st; check_vocab("falcon"); }
static void test_deepseek_llm(void **st) { (void)st; check_vocab("deepseek-llm"); }
static void test_deepseek_coder(void **st) { (void)st; check_vocab("deepseek-coder"); }
static void test_mpt(void **st) { (void)st; check_vocab("mpt"); }
static void test_refact(void **st) { (void)st; check_vocab("refact"); }

/* Random strings (ASCII, whitespace runs, digits, Latin-1, Greek, CJK, emoji, combining marks,
 * apostrophes) must survive tokenize + detokenize unchanged: both algorithms are lossless
 * (except SPM on a literal "▁" in the text, which decodes as a space, so none is drawn). */
static void random_roundtrip(const char *name) {
  static const uint32_t pool[] = {'a', 'Z', 'q', ' ', ' ', ' ', '\n', '\t', '\r', '0', '7', '\'', '.', '<', '|', '>', 0xe9,
                                  0xbd, 0x3b1, 0x4e2d, 0x6587, 0xac00, 0x1f999, 0x301, 0xa0, 0x3000, 0x663};
  char rel[256];
  snprintf(rel, sizeof rel, "tokenizers/llama.cpp-vocab/ggml-vocab-%s.gguf", name);
  char *path = tu_shared(rel);
  qlm_error err = {0};
  qlm_source *src;
  qlm_tokenizer *tok;
  if (qlm_gguf_open(path, &src, &err) || qlm_tokenizer_new(&src->vocab, &tok, &err)) fail_msg("%s", err.msg);
  uint64_t rng = 12345;
  for (int t = 0; t < 300; t++) {
    char text[512];
    int len = 0, n_cp = (int)(tu_rand_u64(&rng) % 60);
    for (int i = 0; i < n_cp; i++) {
      uint32_t cp = pool[tu_rand_u64(&rng) % (sizeof pool / sizeof pool[0])];
      if (cp < 0x80) text[len++] = (char)cp;
      else if (cp < 0x800) { text[len++] = (char)(0xc0 | cp >> 6); text[len++] = (char)(0x80 | (cp & 0x3f)); }
      else if (cp < 0x10000) {
        text[len++] = (char)(0xe0 | cp >> 12); text[len++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        text[len++] = (char)(0x80 | (cp & 0x3f));
      } else {
        text[len++] = (char)(0xf0 | cp >> 18); text[len++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        text[len++] = (char)(0x80 | ((cp >> 6) & 0x3f)); text[len++] = (char)(0x80 | (cp & 0x3f));
      }
    }
    text[len] = '\0';
    int32_t *ids;
    int n;
    char *back;
    if (qlm_tokenize(tok, text, (size_t)len, 0, 0, &ids, &n, &err)) fail_msg("%s: %s", name, err.msg);
    assert_int_equal(qlm_detokenize(tok, ids, n, 0, &back, &err), 0);
    if (strcmp(back, text) != 0) fail_msg("%s: round trip of '%s' gave '%s'", name, text, back);
    free(back);
    free(ids);
  }
  qlm_tokenizer_free(tok);
  qlm_source_close(src);
  free(path);
}

static void test_random_roundtrip(void **st) {
  (void)st;
  random_roundtrip("llama-spm");
  random_roundtrip("gpt-2");
  random_roundtrip("deepseek-llm");
  random_roundtrip("falcon");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_llama_spm), cmocka_unit_test(test_phi3),         cmocka_unit_test(test_gpt2),
      cmocka_unit_test(test_starcoder), cmocka_unit_test(test_falcon),       cmocka_unit_test(test_deepseek_llm),
      cmocka_unit_test(test_deepseek_coder), cmocka_unit_test(test_mpt),     cmocka_unit_test(test_refact),
      cmocka_unit_test(test_random_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
