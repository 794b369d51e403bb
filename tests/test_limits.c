/* test_limits.c — resource limits (core/memlimit.h, model/model.h qlm_model_load_planned):
 *   - a load whose KV cache cannot fit is refused up front (exit 6, QLM_ELIMIT) with one message
 *     naming the model file, the need by part and the bound, under a real limit set in the child
 *     (`ulimit -v` = RLIMIT_AS, `ulimit -d` = RLIMIT_DATA) — Release builds only: AddressSanitizer
 *     reserves terabytes of address space (and counts its shadow in VmData), so under ASan the
 *     same refusal is tested through the documented override QLM_MEM_AVAILABLE (bytes);
 *   - a normal load under the same limit still runs, and --no-mem-check / QLM_NO_MEM_CHECK=1 skip
 *     the check;
 *   - the weights converted at load (QLM_DEQUANT_ALL on the Q4_1 SmolLM2) are counted as the
 *     closed-form sum of their f32 sizes, and the KV cache as 2 x 4 bytes x layers x ctx x kv_dim;
 *   - `qlm ppl --tokenizer` is honoured for GGUF models: the model's own tokenizer gives the same
 *     perplexity, another vocabulary size is refused (exit 2) naming both sizes.
 * OPENBLAS_NUM_THREADS=1 under the limits: OpenBLAS's worker threads retry their 128 MiB buffer
 * forever when a limit refuses it (seen with ulimit -d 30000), which is not what is tested here. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mapfile.h"
#include "core/memlimit.h"
#include "kernels/cpu.h"
#include "kernels/x16.h"
#include "formats/safetensors.h"
#include "formats/source.h"
#include "model/model.h"
#include "eval/ppl.h"
#include "tokenizer/tokenizer.h"

#define STORIES "models/stories260K/stories260K.gguf"

/* 1048576 positions x 5 layers x 32 kv dims x (K + V) x 4 bytes = 1.25 GiB of KV cache. */
#define HUGE_ARGS "--window 1048576 -b 1 --chunks 1 -t 1"

static void expect_refusal(tu_run *r, const char *file, const char *bound) {
  if (r->status != 6) fail_msg("exit %d, expected 6: %s", r->status, r->err);
  assert_non_null(strstr(r->err, file));
  assert_non_null(strstr(r->err, "KV cache 1.2 GiB at --window 1048576 x 1 windows per batch"));
  assert_non_null(strstr(r->err, bound));
  assert_null(strstr(r->err, "\n" "qlm:")); /* one message */
  assert_string_equal(r->out, "");
}

static void test_rlimit_refusal(void **st) {
  (void)st;
#if defined(__SANITIZE_ADDRESS__)
  skip(); /* see the top of the file: test_override_refusal covers ASan builds */
#else
  char *dir = tu_tmpdir(), *big = tu_write_stories_bigctx(dir), *small = tu_shared(STORIES), args[2048];
  snprintf(args, sizeof args, "ppl -m '%s' " HUGE_ARGS, big);
  tu_run r = tu_run_qlm("export OPENBLAS_NUM_THREADS=1; ulimit -v 1000000;", args);
  expect_refusal(&r, big, "available (RLIMIT_AS)");
  tu_run_free(&r);
  r = tu_run_qlm("export OPENBLAS_NUM_THREADS=1; ulimit -d 800000;", args);
  expect_refusal(&r, big, "available (RLIMIT_DATA)");
  tu_run_free(&r);
  /* under the same limits a normal load runs */
  snprintf(args, sizeof args, "ppl -m '%s' --window 256 --chunks 1 -t 1 -q", small);
  r = tu_run_qlm("export OPENBLAS_NUM_THREADS=1; ulimit -v 1000000; ulimit -d 800000;", args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.out, "PPL = "));
  tu_run_free(&r);
  remove(big);
  remove(dir);
  free(big), free(dir), free(small);
#endif
}

/* The same refusal through QLM_MEM_AVAILABLE (all builds), and the two opt-outs. */
static void test_override_refusal(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), *big = tu_write_stories_bigctx(dir), args[2048];
  snprintf(args, sizeof args, "ppl -m '%s' " HUGE_ARGS, big);
  tu_run r = tu_run_qlm("QLM_MEM_AVAILABLE=1000000000", args);
  expect_refusal(&r, big, "but 953.7 MiB is available (QLM_MEM_AVAILABLE)");
  tu_run_free(&r);
  /* stories260K itself: 16 windows of 1024 positions need 20 MiB of KV cache, 1 MB is allowed */
  char *small = tu_shared(STORIES);
  snprintf(args, sizeof args, "ppl -m '%s' --window 1024 -b 16 --chunks 1 -t 1 -q", small);
  r = tu_run_qlm("QLM_MEM_AVAILABLE=1000000", args);
  assert_int_equal(r.status, 6);
  assert_non_null(strstr(r.err, "KV cache 20.0 MiB at --window 1024 x 16 windows per batch"));
  tu_run_free(&r);
  r = tu_run_qlm("QLM_NO_MEM_CHECK=1 QLM_MEM_AVAILABLE=1000000", args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  tu_run_free(&r);
  char args2[2100];
  snprintf(args2, sizeof args2, "%s --no-mem-check", args);
  r = tu_run_qlm("QLM_MEM_AVAILABLE=1000000", args2);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.out, "PPL = "));
  tu_run_free(&r);
  remove(big);
  remove(dir);
  free(big), free(dir), free(small);
}

/* Closed forms: KV bytes of the state, and the f32 size of every weight QLM_DEQUANT_ALL converts. */
static void test_need_closed_form(void **st) {
  (void)st;
  char *path = tu_shared(STORIES);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_error e = {0};
  assert_int_equal(qlm_source_open(path, NULL, &src, &e), 0);
  assert_int_equal(qlm_model_load(src, &m, &e), 0);
  /* 2 (K, V) x 4 bytes x n_seq 3 x 5 layers x 100 positions x (4 kv heads x 8 dims) */
  assert_int_equal(qlm_state_kv_bytes(&m->hp, 3, 100), 2 * 4 * 3 * 5 * 100 * 32);
  /* an absurd context saturates instead of wrapping */
  assert_true(qlm_state_kv_bytes(&m->hp, 65536, 1 << 24) > (1ull << 40));
  /* the state check on a loaded model: refused with QLM_ELIMIT naming the file */
  setenv("QLM_MEM_AVAILABLE", "1000", 1);
  assert_int_equal(qlm_state_check_mem(m, 1, 2048, 64, 1, "at --ctx 2048", NULL, &e), QLM_ELIMIT);
  assert_non_null(strstr(e.msg, path));
  assert_non_null(strstr(e.msg, "KV cache 2.5 MiB at --ctx 2048"));
  unsetenv("QLM_MEM_AVAILABLE");
  qlm_model_free(m);
  qlm_source_close(src);
  free(path);

  char *smol = tu_smollm2_path();
  if (access(smol, R_OK) != 0) { /* scripts/get-models not run: say so, do not pass silently */
    free(smol);
    fail_msg("SmolLM2 GGUF missing (run scripts/get-models)");
  }
  assert_int_equal(qlm_source_open(smol, NULL, &src, &e), 0);
  int rc;
  uint64_t f32 = 0; /* every tensor not already f32 becomes ne x 4 bytes (tied output: no second copy) */
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *t = &src->tensors[i];
    if (t->type != QLM_TYPE_F32) f32 += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]) * 4;
  }
  char want[96], h[32];
  snprintf(want, sizeof want, "weights dequantized to f32 (QLM_DEQUANT_ALL) %s", qlm_mem_human(f32, h, sizeof h));
  setenv("QLM_DEQUANT_ALL", "1", 1);
  setenv("QLM_MEM_AVAILABLE", "100000000", 1);
  rc = qlm_model_load(src, &m, &e);
  assert_int_equal(rc, QLM_ELIMIT);
  assert_null(m);
  assert_non_null(strstr(e.msg, smol));
  if (!strstr(e.msg, want)) fail_msg("'%s' lacks '%s'", e.msg, want);
  unsetenv("QLM_DEQUANT_ALL");
  /* run from the Q4_1 blocks: the token embedding (rows read as floats) is converted, and on an
   * AVX-512 VNNI CPU every Q4_1 matrix and the Q8_0 output head (the tied embedding, kept in its
   * type for the product) also get their 16-row interleaved copy (kernels/x16.h) */
  rc = qlm_model_load(src, &m, &e);
  unsetenv("QLM_MEM_AVAILABLE");
  assert_int_equal(rc, QLM_ELIMIT);
  assert_null(qlm_source_tensor(src, "output.weight")); /* tied */
  uint64_t conv = (uint64_t)src->hp.n_vocab * (uint64_t)src->hp.n_embd * 4;
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *t = &src->tensors[i];
    const qlm_x16_kind *k = t->n_dims == 2 ? qlm_x16_for(t->type, t->ne[0], qlm_cpu_simd_level()) : NULL;
    if (k) conv += k->bytes(t->ne[1], t->ne[0]);
  }
  snprintf(want, sizeof want, "weights converted at load %s", qlm_mem_human(conv, h, sizeof h));
  if (!strstr(e.msg, want)) fail_msg("'%s' lacks '%s'", e.msg, want);
  char budget[32]; /* what the estimate says it needs, and 16 MiB to spare: the load goes through */
  snprintf(budget, sizeof budget, "%llu", (unsigned long long)(conv + (16u << 20)));
  setenv("QLM_MEM_AVAILABLE", budget, 1);
  rc = qlm_model_load(src, &m, &e);
  unsetenv("QLM_MEM_AVAILABLE");
  if (rc) fail_msg("%s", e.msg);
  qlm_model_free(m);
  qlm_source_close(src);
  free(smol);
}


/* ---- every command checks weights + the state it will make (KV cache, scratch, logits) ----
 * SmolLM2 Q4_1 converts its token embedding at load (49152 x 576 f32 = 108.0 MiB): a budget of
 * 120 MB lets the weights alone through (the check before this change) but not weights + KV cache
 * + scratch; stories260K (nothing converted) then runs under 30 MB.  QLM_X16=0: without the
 * interleaved copies an AVX-512 VNNI CPU makes (+63 MiB), so the figures are the same everywhere. */
#define SMOL_BUDGET "QLM_X16=0 QLM_MEM_AVAILABLE=120000000"

/* 2 (K, V) x 4 bytes x n_seq x n_layer x ctx x kv_dim, as qlm_mem_human prints it. */
static const char *kv_human(const qlm_hparams *hp, uint64_t n_seq, uint64_t ctx, char *buf, int cap) {
  uint64_t kv_dim = (uint64_t)(hp->n_head_kv ? hp->n_head_kv : hp->n_head) * (uint64_t)(hp->n_embd / hp->n_head);
  return qlm_mem_human(2 * 4 * n_seq * (uint64_t)hp->n_layer * ctx * kv_dim, buf, cap);
}

/* Exit 6 with one message naming the file, the converted weights, the KV cache of n_seq x ctx
 * positions (ctx < 0: read from "at N positions" in the message, returned) and the scratch. */
static int expect_state_refusal(const char *args, const char *file, const qlm_hparams *hp, int n_seq, int ctx,
                                const char *hint) {
  tu_run r = tu_run_qlm(SMOL_BUDGET, args);
  if (r.status != 6) fail_msg("%s: exit %d, expected 6: %s", args, r.status, r.err);
  assert_non_null(strstr(r.err, file));
  assert_non_null(strstr(r.err, "weights converted at load 108.0 MiB"));
  const char *kv = strstr(r.err, "KV cache "), *at = kv ? strstr(kv, " at ") : NULL;
  if (!at || (ctx < 0 && sscanf(at, " at %d positions", &ctx) != 1)) fail_msg("no context in: %s", r.err);
  char want[96], h[32];
  snprintf(want, sizeof want, "KV cache %s at %d positions", kv_human(hp, (uint64_t)n_seq, (uint64_t)ctx, h, sizeof h), ctx);
  if (!strstr(r.err, want)) fail_msg("'%s' lacks '%s'", r.err, want);
  assert_non_null(strstr(r.err, " + scratch "));
  assert_non_null(strstr(r.err, "is available (QLM_MEM_AVAILABLE)"));
  if (!strstr(r.err, hint)) fail_msg("'%s' lacks '%s'", r.err, hint);
  assert_null(strstr(r.err, "\n" "qlm:"));
  assert_string_equal(r.out, "");
  tu_run_free(&r);
  return ctx;
}

static void expect_runs(const char *args) {
  tu_run r = tu_run_qlm("QLM_MEM_AVAILABLE=30000000", args);
  if (r.status != 0) fail_msg("%s: exit %d: %s", args, r.status, r.err);
  tu_run_free(&r);
}

/* Tokens of the longest of the first n lines of file (trailing blanks dropped, BOS/EOS as the
 * vocab says), as classify's features see them. */
static int longest_line_tokens(const qlm_source *src, const char *file, int n) {
  qlm_tokenizer *tok = NULL;
  qlm_error e = {0};
  assert_int_equal(qlm_tokenizer_new(&src->vocab, &tok, &e), 0);
  FILE *f = fopen(file, "r");
  assert_non_null(f);
  char line[8192];
  int longest = 0;
  for (int i = 0; i < n && fgets(line, sizeof line, f); i++) {
    size_t l = strcspn(line, "\n"); /* the reader drops trailing blanks */
    while (l > 0 && (line[l - 1] == ' ' || line[l - 1] == '\t' || line[l - 1] == '\r')) l--;
    line[l] = '\0';
    int32_t *ids = NULL;
    int len = 0;
    assert_int_equal(qlm_tokenize(tok, line, strlen(line), 1, 0, &ids, &len, &e), 0);
    free(ids);
    if (len > longest) longest = len;
  }
  fclose(f);
  qlm_tokenizer_free(tok);
  return longest;
}

static void test_commands_check_state(void **st) {
  (void)st;
  char *smol = tu_smollm2_path(), *stories = tu_shared(STORIES), *dir = tu_tmpdir(), args[4096];
  if (access(smol, R_OK) != 0) fail_msg("SmolLM2 GGUF missing (run scripts/get-models)");
  qlm_source *src = NULL;
  qlm_error e = {0};
  assert_int_equal(qlm_source_open(smol, NULL, &src, &e), 0);
  const qlm_hparams *hp = &src->hp;
  const char *hint_b = "use a smaller --batch or --max-tokens, or a quantized file";

  /* replay: one sequence of 512 + --n-predict positions */
  snprintf(args, sizeof args, "replay -m '%s' -n 100 -t 1 -q", smol);
  expect_state_refusal(args, smol, hp, 1, 612, "use a smaller --n-predict");
  /* bench: the prefill state, -p + 1 positions */
  snprintf(args, sizeof args, "bench -m '%s' -p 512 -n 128 -t 1 -r 1 --no-roofline --no-energy", smol);
  expect_state_refusal(args, smol, hp, 1, 513, "use a smaller -p/-n");
  /* classify train: --batch sequences of the longest tokenized tweet (validation split) */
  char *val = tu_shared("data/tweeteval-sentiment/val_text.txt");
  snprintf(args, sizeof args, "classify train -m '%s' --limit 20 -b 8 -t 1 -q -o '%s/head.json'", smol, dir);
  int ctx = expect_state_refusal(args, smol, hp, 8, -1, hint_b);
  assert_int_equal(ctx, longest_line_tokens(src, val, 20));
  /* classify zeroshot: the scorer's context (longest prompt, rounded up to 64) */
  snprintf(args, sizeof args, "classify zeroshot -m '%s' --limit 20 -b 4 -t 1 -q", smol);
  ctx = expect_state_refusal(args, smol, hp, 4, -1, hint_b);
  assert_true(ctx % 64 == 0 && ctx >= 64 && ctx <= 256);
  /* mmlu 5-shot: the same scorer; prompts of several hundred tokens */
  snprintf(args, sizeof args, "mmlu -m '%s' --subjects abstract_algebra --shots 5 --limit 2 -b 2 -t 1 -q", smol);
  ctx = expect_state_refusal(args, smol, hp, 2, -1, hint_b);
  assert_true(ctx % 64 == 0 && ctx >= 256);

  /* runs that fit still run, under a budget too */
  snprintf(args, sizeof args, "replay -m '%s' --duration 6s --speedup 6 -n 8 -t 1 -q", stories);
  expect_runs(args);
  snprintf(args, sizeof args, "bench -m '%s' -p 24 -n 6 -t 1 -r 1 --no-roofline --no-energy", stories);
  expect_runs(args);
  snprintf(args, sizeof args, "classify train -m '%s' --limit 40 -b 8 -t 1 -q -o '%s/head.json'", stories, dir);
  expect_runs(args);
  snprintf(args, sizeof args, "classify zeroshot -m '%s' --limit 10 -b 4 -t 1 -q", stories);
  expect_runs(args);
  snprintf(args, sizeof args, "mmlu -m '%s' --subjects abstract_algebra --limit 2 -b 2 -t 1 -q", stories);
  expect_runs(args);
  snprintf(args, sizeof args, "%s/head.json", dir);
  remove(args);
  remove(dir);
  qlm_source_close(src);
  free(val), free(smol), free(stories), free(dir);
}

/* A safetensors file whose only tensor starts 1 byte into the data section (misaligned for F32):
 * its aligned copy is counted and refused above QLM_MEM_AVAILABLE, naming the file and the tensor. */
static void test_misaligned_copy_checked(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), path[1024];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  enum { N = 250000 }; /* 1,000,000 bytes of F32 */
  char json[256];
  int jn = snprintf(json, sizeof json, "{\"big.weight\": {\"dtype\": \"F32\", \"shape\": [%d], \"data_offsets\": [1, %d]}}",
                    N, 1 + 4 * N);
  while ((8 + jn) % 4 != 0) json[jn++] = ' '; /* data section 4-aligned, so offset 1 is not */
  json[jn] = '\0';
  size_t total = 8 + (size_t)jn + 1 + 4 * (size_t)N;
  unsigned char *buf = calloc(1, total);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)jn >> (8 * i));
  memcpy(buf + 8, json, (size_t)jn);
  float v = 1.5f;
  memcpy(buf + 8 + jn + 1 + 4 * 7, &v, 4);
  tu_write_file(path, buf, total);
  free(buf);

  qlm_st_set s = {0};
  qlm_error e = {0};
  setenv("QLM_MEM_AVAILABLE", "900000", 1);
  int rc = qlm_st_add_file(&s, path, &e);
  qlm_st_free(&s);
  assert_int_equal(rc, QLM_ELIMIT);
  assert_non_null(strstr(e.msg, path));
  if (!strstr(e.msg, "aligned copies of 1 misaligned tensor 976.6 KiB (largest 'big.weight', 976.6 KiB)"))
    fail_msg("%s", e.msg);
  /* within the budget the copy is made, aligned, with the file's values */
  setenv("QLM_MEM_AVAILABLE", "1100000", 1);
  memset(&s, 0, sizeof s);
  rc = qlm_st_add_file(&s, path, &e);
  unsetenv("QLM_MEM_AVAILABLE");
  if (rc) fail_msg("%s", e.msg);
  assert_int_equal(s.n_tensors, 1);
  assert_non_null(s.tensors[0].owned);
  assert_true((uintptr_t)s.tensors[0].data % 4 == 0);
  assert_true(((const float *)s.tensors[0].data)[7] == 1.5f);
  qlm_st_free(&s);
  remove(path);
  remove(dir);
  free(dir);
}

/* --tokenizer for a GGUF model in `qlm ppl` (qlm_source_open applies it for every format). */
static void test_ppl_tokenizer(void **st) {
  (void)st;
  char *gguf = tu_shared(STORIES), *tok512 = tu_shared("models/stories260K/tok512.bin");
  char *smol = tu_shared("tokenizers/smollm2-135m/tokenizer.json"), args[2048];
  snprintf(args, sizeof args, "ppl -m '%s' --tokenizer '%s' --chunks 1 -q -t 1", gguf, smol);
  tu_run r = tu_run_qlm("", args);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, smol));
  assert_non_null(strstr(r.err, "49152 tokens"));
  assert_non_null(strstr(r.err, "vocabulary of 512"));
  tu_run_free(&r);
  snprintf(args, sizeof args, "ppl -m '%s' --tokenizer '%s' --chunks 2 -q -t 1 --json", gguf, tok512);
  tu_run a = tu_run_qlm("", args);
  snprintf(args, sizeof args, "ppl -m '%s' --chunks 2 -q -t 1 --json", gguf);
  tu_run b = tu_run_qlm("", args);
  assert_int_equal(a.status, 0);
  assert_int_equal(b.status, 0);
  const char *pa = strstr(a.out, "\"ppl\""), *pb = strstr(b.out, "\"ppl\"");
  assert_non_null(pa);
  assert_non_null(pb);
  assert_memory_equal(pa, pb, 40);
  tu_run_free(&a);
  tu_run_free(&b);
  free(gguf), free(tok512), free(smol);
}

/* ---- tokenizing in pieces equals tokenizing the whole text ---------------------------- */

typedef struct ids_buf { int32_t *p; size_t n, cap; int pieces; } ids_buf;

static int collect(void *ctx, const int32_t *ids, int n, qlm_error *err) {
  (void)err;
  ids_buf *b = ctx;
  if (b->n + (size_t)n > b->cap) {
    b->cap = (b->n + (size_t)n) * 2;
    b->p = realloc(b->p, b->cap * sizeof *b->p);
    assert_non_null(b->p);
  }
  memcpy(b->p + b->n, ids, (size_t)n * sizeof *ids);
  b->n += (size_t)n;
  b->pieces++;
  return QLM_OK;
}

/* The whole WikiText-2 test file, whole and in pieces of ~4 KB: the same ids, and many pieces. */
static void check_pieces(const char *model, const char *tokenizer) {
  char *wiki = tu_shared("data/wikitext-2-raw/wiki.test.raw");
  qlm_source *src = NULL;
  qlm_tokenizer *tok = NULL;
  qlm_error e = {0};
  char *text = NULL;
  size_t len = 0;
  if (qlm_source_open(model, tokenizer, &src, &e) || qlm_tokenizer_new(&src->vocab, &tok, &e) ||
      qlm_read_file(wiki, 64u << 20, &text, &len, &e))
    fail_msg("%s", e.msg);
  ids_buf whole = {0}, pieces = {0};
  assert_int_equal(qlm_ppl_tokenize_pieces(tok, text, len, 1, 0, collect, &whole, &e), 0);
  assert_int_equal(whole.pieces, 1);
  if (qlm_ppl_tokenize_pieces(tok, text, len, 1, 4096, collect, &pieces, &e)) fail_msg("%s", e.msg);
  assert_true(pieces.pieces > 100); /* 1.3 MB: the text was really split */
  assert_true(whole.n > 250000);
  assert_int_equal(pieces.n, whole.n);
  size_t i = 0;
  while (i < whole.n && whole.p[i] == pieces.p[i]) i++;
  if (i < whole.n) fail_msg("%s: ids differ first at %zu of %zu", model, i, whole.n);
  free(whole.p), free(pieces.p), free(text), free(wiki);
  qlm_tokenizer_free(tok);
  qlm_source_close(src);
}

static void test_pieces_smollm2(void **st) {
  (void)st;
  /* SmolLM2's tokenizer.json on the stories260K GGUF would be refused (49152 vs 512 tokens), so
   * the vocabulary-only GGUF of GPT-2 size is not used either: open the tokenizer.json through
   * a model without a vocabulary of its own, the SmolLM2 Q4_1 GGUF (same 49152 tokens). */
  char *smol = tu_smollm2_path(), *json = tu_shared("tokenizers/smollm2-135m/tokenizer.json");
  if (access(smol, R_OK) != 0) fail_msg("SmolLM2 GGUF missing (run scripts/get-models)");
  check_pieces(smol, json);
  free(smol), free(json);
}

static void test_pieces_stories(void **st) {
  (void)st;
  char *m = tu_shared(STORIES);
  check_pieces(m, NULL);
  free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rlimit_refusal),
      cmocka_unit_test(test_override_refusal),
      cmocka_unit_test(test_need_closed_form),
      cmocka_unit_test(test_commands_check_state),
      cmocka_unit_test(test_misaligned_copy_checked),
      cmocka_unit_test(test_ppl_tokenizer),
      cmocka_unit_test(test_pieces_smollm2),
      cmocka_unit_test(test_pieces_stories),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
