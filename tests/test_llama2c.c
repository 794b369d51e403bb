/* test_llama2c.c — llama2.c checkpoints and tokenizer.bin: the shared stories260K files, a
 * synthetic checkpoint whose every weight is its own float index (so the layout is checked
 * against run.c's order written out by hand here), and malformed files. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mapfile.h"
#include "formats/llama2c.h"
#include "formats/source.h"

static void expect_error(int rc, const qlm_error *e, int code, const char *s1, const char *s2) {
  if (rc != code || (s1 && !strstr(e->msg, s1)) || (s2 && !strstr(e->msg, s2)))
    fail_msg("rc %d (want %d), message \"%s\" (want \"%s\" and \"%s\")", rc, code, e->msg, s1 ? s1 : "",
             s2 ? s2 : "");
}

static void test_stories_hparams(void **st) {
  (void)st;
  char *path = tu_shared("models/stories260K/stories260K.bin");
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_llama2c_open(path, NULL, &src, &e), QLM_OK);
  tu_check_stories260k_hparams(&src->hp, 512, QLM_ROPE_INTERLEAVED, 1);
  assert_string_equal(src->format, "llama2c");
  /* token_embd, 5 x 9 per layer, output_norm; no output.weight (tied) */
  assert_int_equal(src->n_tensors, 47);
  assert_null(qlm_source_tensor(src, "output.weight"));
  const qlm_tensor *t = qlm_source_tensor(src, "blk.4.ffn_down.weight");
  assert_non_null(t);
  assert_int_equal(t->ne[0], 172);
  assert_int_equal(t->ne[1], 64);
  assert_int_equal(t->nbytes, 172 * 64 * 4);
  t = qlm_source_tensor(src, "blk.0.attn_k.weight");
  assert_int_equal(t->ne[0], 64);
  assert_int_equal(t->ne[1], 32);
  assert_int_equal(qlm_source_n_params(src), 260032); /* README: 260,032 parameters */
  /* the first embedding weight is the float right after the 28-byte header */
  FILE *f = fopen(path, "rb");
  float first[2];
  assert_int_equal(fseek(f, 28, SEEK_SET), 0);
  assert_int_equal(fread(first, 4, 2, f), 2);
  fclose(f);
  t = qlm_source_tensor(src, "token_embd.weight");
  assert_memory_equal(t->data, first, 8);

  /* tokenizer found beside the checkpoint (tok512.bin); expected texts as in the GGUF copy */
  const qlm_vocab *v = &src->vocab;
  assert_int_equal(v->kind, QLM_TOK_SPM);
  assert_int_equal(v->n_tokens, 512);
  assert_string_equal(v->tokens[0], "<unk>");
  assert_string_equal(v->tokens[1], "<s>");
  assert_string_equal(v->tokens[2], "</s>");
  assert_string_equal(v->tokens[3], "<0x00>");
  assert_string_equal(v->tokens[258], "<0xFF>");
  assert_string_equal(v->tokens[259], "\xe2\x96\x81t"); /* stored " t" */
  assert_int_equal(v->token_len[259], 4);
  assert_string_equal(v->tokens[260], "he");
  assert_float_equal(v->scores[260], -1.0f, 0);
  assert_float_equal(v->scores[261], -2.0f, 0);
  assert_int_equal(v->token_type[0], QLM_TOKATTR_UNKNOWN);
  assert_int_equal(v->token_type[1], QLM_TOKATTR_CONTROL);
  assert_int_equal(v->token_type[2], QLM_TOKATTR_CONTROL);
  for (int i = 3; i < 259; i++) assert_int_equal(v->token_type[i], QLM_TOKATTR_BYTE);
  assert_int_equal(v->token_type[259], QLM_TOKATTR_NORMAL);
  assert_int_equal(v->bos_id, 1);
  assert_int_equal(v->eos_id, 2);
  assert_int_equal(v->unk_id, 0);
  assert_true(v->add_bos);
  assert_true(v->add_space_prefix);
  const qlm_meta *m = qlm_source_meta(src, "general.architecture");
  assert_non_null(m);
  assert_string_equal(m->v.s, "llama");
  qlm_source_close(src);

  /* the same through format detection */
  assert_int_equal(qlm_source_open(path, NULL, &src, &e), QLM_OK);
  assert_string_equal(src->format, "llama2c");
  qlm_source_close(src);
  free(path);
}

/* The .bin was derived from the GGUF copy: every tensor and the whole vocab must agree with
 * what the GGUF reader (an independent parser of an independent file) returns. */
static void test_stories_vs_gguf(void **st) {
  (void)st;
  char *bin = tu_shared("models/stories260K/stories260K.bin"), *gg = tu_shared("models/stories260K/stories260K.gguf");
  qlm_source *a, *g;
  qlm_error e = {0};
  assert_int_equal(qlm_llama2c_open(bin, NULL, &a, &e), QLM_OK);
  if (qlm_gguf_open(gg, &g, &e) != QLM_OK) fail_msg("gguf: %s", e.msg);
  for (int i = 0; i < a->n_tensors; i++) {
    const qlm_tensor *x = &a->tensors[i], *y = qlm_source_tensor(g, x->name);
    if (!y) fail_msg("GGUF lacks %s", x->name);
    assert_int_equal(y->type, QLM_TYPE_F32);
    assert_int_equal(x->ne[0], y->ne[0]);
    assert_int_equal(x->ne[1], y->ne[1]);
    assert_int_equal(x->nbytes, y->nbytes);
    if (memcmp(x->data, y->data, x->nbytes) != 0) fail_msg("%s differs from the GGUF", x->name);
  }
  assert_int_equal(a->hp.n_embd, g->hp.n_embd);
  assert_int_equal(a->hp.n_head_kv, g->hp.n_head_kv);
  assert_int_equal(a->hp.rope_style, g->hp.rope_style);
  const qlm_vocab *va = &a->vocab, *vg = &g->vocab;
  assert_int_equal(va->n_tokens, vg->n_tokens);
  for (int i = 0; i < va->n_tokens; i++) {
    assert_int_equal(va->token_len[i], vg->token_len[i]);
    if (memcmp(va->tokens[i], vg->tokens[i], (size_t)va->token_len[i]) != 0)
      fail_msg("token %d: \"%s\" vs GGUF \"%s\"", i, va->tokens[i], vg->tokens[i]);
    assert_float_equal(va->scores[i], vg->scores[i], 0);
    if (vg->token_type) assert_int_equal(va->token_type[i], vg->token_type[i]);
  }
  assert_int_equal(va->bos_id, vg->bos_id);
  assert_int_equal(va->eos_id, vg->eos_id);
  assert_int_equal(va->unk_id, vg->unk_id);
  qlm_source_close(a);
  qlm_source_close(g);
  free(bin);
  free(gg);
}

static void test_llama2_spm_tokenizer(void **st) {
  (void)st;
  char *path = tu_shared("tokenizers/llama2-spm/tokenizer.bin");
  qlm_vocab v;
  qlm_vocab_init(&v);
  qlm_error e = {0};
  assert_int_equal(qlm_llama2c_read_tokenizer(path, 0, &v, &e), QLM_OK);
  assert_int_equal(v.n_tokens, 32000);
  assert_string_equal(v.tokens[259], "\xe2\x96\x81\xe2\x96\x81"); /* LLaMA's "▁▁" */
  assert_float_equal(v.scores[259], -1e9f, 0);
  assert_string_equal(v.tokens[29871], "\xe2\x96\x81");  /* LLaMA's lone "▁" */
  assert_string_equal(v.tokens[31999], "\xe7\xbb\x99");  /* last token */
  assert_float_equal(v.scores[31999], -31740.0f, 0);
  for (int i = 3; i < 259; i++) assert_int_equal(v.token_type[i], QLM_TOKATTR_BYTE);
  qlm_vocab_free(&v);
  /* with a model vocab size that does not match */
  qlm_vocab_init(&v);
  expect_error(qlm_llama2c_read_tokenizer(path, 512, &v, &e), &e, QLM_EFORMAT, "tokenizer.bin", "32000");
  assert_int_equal(v.n_tokens, 0);
  free(path);
}

/* A tiny checkpoint whose every float equals its index among the weights, plus the expected
 * float offset of each array per run.c's order (written out here, independently of the reader). */
enum { D = 4, HID = 6, NL = 2, NH = 2, NKV = 1, V = 5, SEQ = 3, HS = D / NH, KVD = NKV * HS };

static size_t tiny_floats(int shared) {
  size_t n = V * D + NL * D + NL * D * D + 2 * NL * KVD * D + NL * D * D + NL * D + 3 * NL * HID * D + D +
             SEQ * HS; /* freq real + imag: 2 * SEQ * HS/2 */
  return n + (shared ? 0 : V * D);
}

static char *write_tiny(const char *dir, const char *name, int32_t vocab, size_t nfloats, const int32_t *hdr_override) {
  int32_t hdr[7] = {D, HID, NL, NH, NKV, vocab, SEQ};
  if (hdr_override) memcpy(hdr, hdr_override, sizeof hdr);
  size_t n = 28 + nfloats * 4;
  unsigned char *buf = malloc(n);
  memcpy(buf, hdr, 28);
  for (size_t i = 0; i < nfloats; i++) {
    float f = (float)i;
    memcpy(buf + 28 + 4 * i, &f, 4);
  }
  char *path = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(path, "%s/%s", dir, name);
  tu_write_file(path, buf, n);
  free(buf);
  return path;
}

static void check_first(const qlm_source *src, const char *name, float want, int64_t ne0, int64_t ne1) {
  const qlm_tensor *t = qlm_source_tensor(src, name);
  if (!t) fail_msg("missing %s", name);
  assert_int_equal(t->type, QLM_TYPE_F32);
  if (((const float *)t->data)[0] != want) fail_msg("%s starts with %g, want %g", name, ((const float *)t->data)[0], want);
  assert_int_equal(t->ne[0], ne0);
  assert_int_equal(t->ne[1], ne1);
}

static void test_tiny_layout(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  char *path = write_tiny(dir, "tiny.bin", -V, tiny_floats(0), NULL);
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_llama2c_open(path, NULL, &src, &e), QLM_OK); /* no tokenizer beside it: empty vocab */
  assert_int_equal(src->vocab.n_tokens, 0);
  assert_false(src->hp.tied_embeddings);
  /* offsets (in floats) of each array, run.c order */
  size_t emb = 0, rms_att = emb + V * D, wq = rms_att + NL * D, wk = wq + NL * D * D, wv = wk + NL * KVD * D,
         wo = wv + NL * KVD * D, rms_ffn = wo + NL * D * D, w1 = rms_ffn + NL * D, w2 = w1 + NL * HID * D,
         w3 = w2 + NL * D * HID, fin = w3 + NL * HID * D, wcls = fin + D + SEQ * HS;
  check_first(src, "token_embd.weight", (float)emb, D, V);
  check_first(src, "blk.1.attn_norm.weight", (float)(rms_att + D), D, 1);
  check_first(src, "blk.1.attn_q.weight", (float)(wq + D * D), D, D);
  check_first(src, "blk.1.attn_k.weight", (float)(wk + KVD * D), D, KVD);
  check_first(src, "blk.1.attn_v.weight", (float)(wv + KVD * D), D, KVD);
  check_first(src, "blk.0.attn_output.weight", (float)wo, D, D);
  check_first(src, "blk.1.ffn_norm.weight", (float)(rms_ffn + D), D, 1);
  check_first(src, "blk.1.ffn_gate.weight", (float)(w1 + HID * D), D, HID); /* w1 */
  check_first(src, "blk.1.ffn_down.weight", (float)(w2 + D * HID), HID, D); /* w2 */
  check_first(src, "blk.0.ffn_up.weight", (float)w3, D, HID);              /* w3 */
  check_first(src, "output_norm.weight", (float)fin, D, 1);
  check_first(src, "output.weight", (float)wcls, D, V);
  const qlm_tensor *t = qlm_source_tensor(src, "output.weight");
  assert_float_equal(((const float *)t->data)[V * D - 1], (float)(tiny_floats(0) - 1), 0); /* last float in file */
  qlm_source_close(src);

  /* with a tokenizer.bin beside it: the default lookup finds it, and its size must match */
  unsigned char tok[4 + 5 * 16];
  size_t n = 0;
  int32_t maxlen = 6;
  memcpy(tok, &maxlen, 4);
  n = 4;
  const char *texts[V] = {"<unk>", "\n<s>\n", "\n</s>\n", "<0x41>", " ab"};
  for (int i = 0; i < V; i++) {
    float sc = (float)-i;
    int32_t len = (int32_t)strlen(texts[i]);
    memcpy(tok + n, &sc, 4);
    memcpy(tok + n + 4, &len, 4);
    memcpy(tok + n + 8, texts[i], (size_t)len);
    n += 8 + (size_t)len;
  }
  char tpath[512];
  snprintf(tpath, sizeof tpath, "%s/tok5.bin", dir);
  tu_write_file(tpath, tok, n);
  assert_int_equal(qlm_llama2c_open(path, NULL, &src, &e), QLM_OK);
  assert_int_equal(src->vocab.n_tokens, V);
  assert_string_equal(src->vocab.tokens[4], "\xe2\x96\x81" "ab");
  assert_int_equal(src->vocab.token_type[3], QLM_TOKATTR_BYTE);
  qlm_source_close(src);
  /* truncated tokenizer: clear error naming it */
  tu_write_file(tpath, tok, n - 2);
  expect_error(qlm_llama2c_open(path, NULL, &src, &e), &e, QLM_EFORMAT, "tok5.bin", "truncated");
  assert_null(src);
  tu_write_file(tpath, tok, 10);
  expect_error(qlm_llama2c_open(path, tpath, &src, &e), &e, QLM_EFORMAT, "tok5.bin", "truncated");
  /* a token longer than max_token_length */
  maxlen = 2;
  memcpy(tok, &maxlen, 4);
  tu_write_file(tpath, tok, n);
  expect_error(qlm_llama2c_open(path, NULL, &src, &e), &e, QLM_EFORMAT, "tok5.bin", "max_token_length");
  /* explicit tokenizer that does not exist */
  expect_error(qlm_llama2c_open(path, "/nonexistent/tok.bin", &src, &e), &e, QLM_EIO, "/nonexistent/tok.bin", NULL);
  unlink(tpath);
  unlink(path);
  free(path);
  rmdir(dir);
  free(dir);
}

static void test_malformed(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  qlm_source *src = (qlm_source *)1;
  qlm_error e = {0};
  /* one float too many / too few */
  char *p = write_tiny(dir, "a.bin", V, tiny_floats(1) + 1, NULL);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "implies");
  assert_null(src);
  free(p);
  p = write_tiny(dir, "a.bin", V, tiny_floats(1) - 1, NULL);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "implies");
  free(p);
  /* unshared classifier declared but missing */
  p = write_tiny(dir, "a.bin", -V, tiny_floats(1), NULL);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "implies");
  free(p);
  /* negative / zero / absurd header values */
  int32_t h1[7] = {-4, HID, NL, NH, NKV, V, SEQ};
  p = write_tiny(dir, "a.bin", V, 10, h1);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "dim");
  free(p);
  int32_t h2[7] = {D, HID, 0, NH, NKV, V, SEQ};
  p = write_tiny(dir, "a.bin", V, 10, h2);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "n_layers");
  free(p);
  int32_t h3[7] = {1 << 30, HID, NL, NH, NKV, V, SEQ};
  p = write_tiny(dir, "a.bin", V, 10, h3);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_ELIMIT, "a.bin", "dim");
  free(p);
  int32_t h4[7] = {65536, 1 << 20, 4096, 1, 1, 1 << 22, 1 << 24}; /* all at their limits: huge but no overflow */
  p = write_tiny(dir, "a.bin", V, 10, h4);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "implies");
  free(p);
  int32_t h5[7] = {D, HID, NL, 3, 1, V, SEQ}; /* 4 is not a multiple of 3 heads */
  p = write_tiny(dir, "a.bin", V, 10, h5);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "n_heads");
  free(p);
  int32_t h6[7] = {D, HID, NL, NH, NKV, INT32_MIN, SEQ};
  p = write_tiny(dir, "a.bin", V, 10, h6);
  expect_error(qlm_llama2c_open(p, NULL, &src, &e), &e, QLM_EFORMAT, "a.bin", "vocab_size");
  free(p);
  /* shorter than the header, and empty */
  char path[512];
  snprintf(path, sizeof path, "%s/short.bin", dir);
  tu_write_file(path, "abcdefghij", 10);
  expect_error(qlm_llama2c_open(path, NULL, &src, &e), &e, QLM_EFORMAT, "short.bin", "header");
  tu_write_file(path, "", 0);
  expect_error(qlm_llama2c_open(path, NULL, &src, &e), &e, QLM_EFORMAT, "short.bin", "header");
  unlink(path);
  snprintf(path, sizeof path, "%s/a.bin", dir);
  unlink(path);
  expect_error(qlm_llama2c_open(path, NULL, &src, &e), &e, QLM_EIO, "a.bin", NULL);
  rmdir(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stories_hparams),
      cmocka_unit_test(test_stories_vs_gguf),
      cmocka_unit_test(test_llama2_spm_tokenizer),
      cmocka_unit_test(test_tiny_layout),
      cmocka_unit_test(test_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
