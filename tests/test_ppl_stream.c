/* test_ppl_stream.c — `qlm ppl` in bounded memory: the streamed windows are the whole-text plan's.
 *
 *   - stream vs plan: for each protocol on stories260K (WikiText-2 test slices), qlm_ppl_run_stream
 *     scores exactly the tokens qlm_ppl_run scores on the plan of qlm_ppl_plan_text (the reference
 *     path, itself checked against tools/ppl_reference.py in test_ppl.c): the same (index, target)
 *     sequence, the same NLL sums bit for bit, windows, rows fed, max_rows, documents, words and
 *     bytes — with tokenizer pieces of a few hundred bytes (many pieces), with the lookahead cut
 *     to force per-line/lm-eval's counting pass, and with a window limit (--chunks);
 *   - memory: a 320 MB TinyStories-like text written in the test's folder; `qlm ppl --chunks 4`
 *     (hf-window and llamacpp) must finish with a peak RSS far below the text's size, measured
 *     with getrusage(RUSAGE_CHILDREN) in a forked child that runs only that command;
 *   - KL files written by a stream: the header's record count and fingerprint patched at commit,
 *     save-logits then kl-base of the same model gives KL 0 and top-1 100 %, a file whose count
 *     was patched (or left at the placeholder) or whose targets were edited is refused with the
 *     documented error, and the exact median/p99 are the same when the values spill to disk. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/mapfile.h"
#include "eval/kl.h"
#include "eval/ppl.h"
#include "testutil.h"

#define STORIES "models/stories260K/stories260K.gguf"

static qlm_source *S_src;
static qlm_model *S_model;
static qlm_tokenizer *S_tok;
static char *WIKI;      /* wiki.test.raw */
static size_t WIKI_LEN;

static int setup(void **state) {
  (void)state;
  qlm_error err = {0};
  char *sp = tu_shared(STORIES), *wp = tu_shared("data/wikitext-2-raw/wiki.test.raw");
  if (qlm_source_open(sp, NULL, &S_src, &err) || qlm_model_load(S_src, &S_model, &err) ||
      qlm_tokenizer_new(&S_src->vocab, &S_tok, &err) || qlm_read_file(wp, 1 << 24, &WIKI, &WIKI_LEN, &err)) {
    fprintf(stderr, "setup: %s\n", err.msg);
    return -1;
  }
  free(sp), free(wp);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  qlm_tokenizer_free(S_tok);
  qlm_model_free(S_model);
  qlm_source_close(S_src);
  free(WIKI);
  return 0;
}

/* The scored tokens in order: (index in the token array, target id). */
typedef struct seen { int64_t *idx; int32_t *tgt; size_t n, cap; } seen;

static int record(void *ctx, int64_t index, int32_t target, const float *logits, double lse, qlm_error *err) {
  (void)logits, (void)lse, (void)err;
  seen *s = ctx;
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 1024;
    s->idx = realloc(s->idx, s->cap * sizeof *s->idx);
    s->tgt = realloc(s->tgt, s->cap * sizeof *s->tgt);
  }
  s->idx[s->n] = index;
  s->tgt[s->n++] = target;
  return QLM_OK;
}

/* The first `lines` lines of wiki.test.raw (its length). */
static size_t wiki_lines(int lines) {
  size_t cut = 0;
  for (int l = 0; cut < WIKI_LEN && l < lines; cut++) l += WIKI[cut] == '\n';
  return cut;
}

/* Plan and stream of the same text and settings score the same tokens to the same bits. */
static void check_same(const char *what, size_t len, int protocol, int window, int stride, int64_t max_windows, int batch,
                       int expect_complete) {
  qlm_error err = {0};
  qlm_ppl_params prm = {.window = window, .stride = stride};
  qlm_ppl_plan p;
  if (qlm_ppl_plan_text(S_tok, WIKI, len, protocol, &prm, S_model->hp.n_ctx, &p, &err)) fail_msg("%s: %s", what, err.msg);
  seen a = {0}, b = {0};
  qlm_ppl_opts o = {.batch = batch, .ubatch = 100, .n_threads = 2, .max_windows = max_windows, .on_token = record, .ctx = &a};
  qlm_ppl_stats sp, ss;
  assert_int_equal(qlm_ppl_run(S_model, &p, &o, &sp, &err), 0);
  qlm_ppl_stream *s = NULL;
  if (qlm_ppl_stream_open(S_tok, WIKI, len, "slice", protocol, &prm, S_model->hp.n_ctx, max_windows, &s, &err))
    fail_msg("%s: %s", what, err.msg);
  int max_rows = 0;
  assert_int_equal(qlm_ppl_stream_max_rows(s, &max_rows, &err), 0);
  assert_int_equal(max_rows, p.max_rows);
  o.ctx = &b;
  if (qlm_ppl_run_stream(S_model, s, &o, &ss, &err)) fail_msg("%s: %s", what, err.msg);
  qlm_ppl_stream_info in;
  qlm_ppl_stream_get_info(s, &in);
  /* the same tokens scored from the same positions, and the same sums to the last bit */
  if (a.n != b.n) fail_msg("%s: plan scores %zu tokens, stream %zu", what, a.n, b.n);
  assert_true(a.n > 0);
  assert_memory_equal(a.idx, b.idx, a.n * sizeof *a.idx);
  assert_memory_equal(a.tgt, b.tgt, a.n * sizeof *a.tgt);
  if (sp.nll_sum != ss.nll_sum || sp.nll2_sum != ss.nll2_sum || sp.ppl != ss.ppl || sp.ppl_err != ss.ppl_err)
    fail_msg("%s: plan ppl %.17g (nll %.17g), stream %.17g (nll %.17g)", what, sp.ppl, sp.nll_sum, ss.ppl, ss.nll_sum);
  assert_int_equal(sp.n_windows, ss.n_windows);
  assert_int_equal(sp.n_fed, ss.n_fed);
  assert_int_equal(in.window, p.window);
  assert_int_equal(in.stride, p.stride);
  assert_int_equal(in.complete, expect_complete);
  if (in.complete) { /* the whole text read: the plan's totals */
    assert_int_equal(in.n_tokens, p.n_tokens);
    assert_int_equal(in.n_win, p.n_win);
    assert_int_equal(in.n_docs, p.n_docs);
    assert_true(in.n_words == p.n_words && in.n_bytes == p.n_bytes);
    assert_int_equal(in.bytes_read, len);
  } else { /* stopped after the window past the limit: part of the text left unread */
    assert_true(in.n_win > max_windows && in.n_win < p.n_win);
    assert_true(in.bytes_read < len);
  }
  qlm_ppl_stream_free(s);
  qlm_ppl_plan_free(&p);
  free(a.idx), free(a.tgt), free(b.idx), free(b.tgt);
}

/* Default settings on test_ppl.c's reference slice (40 lines), then small windows over 60 lines
 * with pieces of ~300 bytes, so the joined rows / raw text are cut hundreds of times. */
static void test_stream_equals_plan(void **state) {
  (void)state;
  size_t s40 = wiki_lines(40), s60 = wiki_lines(60);
  assert_int_equal(s40, 7786);
  check_same("hf-window 40 lines", s40, QLM_PPL_HF_WINDOW, 0, 0, 0, 4, 1);
  check_same("per-line 40 lines", s40, QLM_PPL_PER_LINE, 0, 0, 0, 4, 1);
  check_same("llamacpp 40 lines", s40, QLM_PPL_LLAMACPP, 0, 0, 0, 4, 1);
  check_same("lm-eval 40 lines", s40, QLM_PPL_LM_EVAL, 512, 0, 0, 4, 1);
  qlm_ppl_test_piece_bytes = 300;
  check_same("hf-window pieces", s60, QLM_PPL_HF_WINDOW, 48, 20, 0, 5, 1);
  check_same("llamacpp pieces", s60, QLM_PPL_LLAMACPP, 40, 0, 0, 3, 1);
  check_same("hf-window stride = window", s40, QLM_PPL_HF_WINDOW, 64, 64, 0, 2, 1);
  /* --chunks: the first windows only, and the text is not read to its end */
  check_same("hf-window chunks", s60, QLM_PPL_HF_WINDOW, 48, 20, 7, 3, 0);
  check_same("llamacpp chunks", s60, QLM_PPL_LLAMACPP, 40, 0, 5, 2, 0);
  qlm_ppl_test_piece_bytes = 0;
  /* per-line / lm-eval: with a lookahead of a few ids no window fills the context before the
   * lookahead ends, so max_rows comes from the counting pass over the rest */
  qlm_ppl_test_lookahead_tokens = 3;
  check_same("per-line counted", s60, QLM_PPL_PER_LINE, 512, 0, 0, 6, 1);
  check_same("lm-eval counted", s60, QLM_PPL_LM_EVAL, 256, 0, 0, 2, 1);
  check_same("per-line counted chunks", s60, QLM_PPL_PER_LINE, 512, 0, 9, 4, 0);
  qlm_ppl_test_lookahead_tokens = 0;
  check_same("lm-eval small windows", s40, QLM_PPL_LM_EVAL, 64, 0, 0, 8, 1);
}

/* Errors of the whole-text path come from the stream too, prefixed with the text's name. */
static void test_stream_errors(void **state) {
  (void)state;
  qlm_error err = {0};
  qlm_ppl_stream *s = NULL;
  int rows;
  qlm_ppl_params prm = {.window = 512};
  const char *t = "Once upon a time.\n"; /* far fewer than 2 * 512 tokens */
  assert_int_equal(qlm_ppl_stream_open(S_tok, t, strlen(t), "tiny.txt", QLM_PPL_LLAMACPP, &prm, 2048, 0, &s, &err), 0);
  assert_int_equal(qlm_ppl_stream_max_rows(s, &rows, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "tiny.txt"));
  assert_non_null(strstr(err.msg, "at least 2*n_ctx = 1024"));
  qlm_ppl_stream_free(s);
  assert_int_equal(qlm_ppl_stream_open(S_tok, "", 0, "empty.txt", QLM_PPL_PER_LINE, NULL, 2048, 0, &s, &err), 0);
  assert_int_equal(qlm_ppl_stream_max_rows(s, &rows, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "no token to score"));
  qlm_ppl_stream_free(s);
  prm = (qlm_ppl_params){.window = 4096};
  assert_int_equal(qlm_ppl_stream_open(S_tok, t, strlen(t), "x", QLM_PPL_HF_WINDOW, &prm, 2048, 0, &s, &err), QLM_EUSAGE);
  prm = (qlm_ppl_params){.window = 64, .stride = 8};
  assert_int_equal(qlm_ppl_stream_open(S_tok, t, strlen(t), "x", QLM_PPL_LLAMACPP, &prm, 2048, 0, &s, &err), QLM_EUSAGE);
  assert_non_null(strstr(err.msg, "--stride applies"));
}

/* ---- memory ---- */

static const char *const WORDS[] = {
    "Once", "upon", "a", "time", "there", "was", "little", "girl", "named", "Lily", "she", "loved", "to", "play",
    "with", "her", "big", "red", "ball", "in", "the", "park", "one", "day", "saw", "dog", "and", "said", "hello",
    "Tom", "boy", "who", "liked", "cake", "they", "were", "happy", "friends", "sun", "was", "warm", "bird", "sang",
    "tree", "mom", "smiled", "went", "home", "together", "because", "it", "rained", "so", "jumped", "puddle"};

/* A text of about `mb` MB: a few MB of random sentences and paragraphs, written over and over
 * (each copy with another first line, so no two stretches are the same text). */
static void write_big_text(const char *path, size_t mb) {
  enum { BLOCK = 4 << 20 };
  char *b = malloc(BLOCK + 256);
  size_t n = 0;
  uint64_t rng = 12345;
  while (n < BLOCK) {
    int words = 4 + (int)(tu_rand_u64(&rng) % 12);
    for (int w = 0; w < words; w++) {
      const char *x = WORDS[tu_rand_u64(&rng) % (sizeof WORDS / sizeof *WORDS)];
      n += (size_t)sprintf(b + n, "%s%s", w ? " " : "", x);
    }
    b[n++] = '.';
    b[n++] = tu_rand_u64(&rng) % 5 ? ' ' : '\n'; /* paragraphs of a few sentences */
  }
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  for (size_t done = 0, copy = 0; done < mb << 20; done += n, copy++) {
    fprintf(f, "Story %zu.\n", copy);
    assert_int_equal(fwrite(b, 1, n, f), n);
  }
  assert_int_equal(fclose(f), 0);
  free(b);
}

/* Peak RSS (KiB) of `qlm ARGS` alone: run in a forked child, whose RUSAGE_CHILDREN then covers
 * just that command; its exit status and the peak come back through a pipe. */
static long peak_rss_kib(const char *prefix, const char *args, int *status, char *errbuf, size_t errcap) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fd[0]);
    tu_run r = tu_run_qlm(prefix, args);
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    long out[2] = {r.status, ru.ru_maxrss};
    if (write(fd[1], out, sizeof out) != sizeof out) _exit(2);
    size_t el = strlen(r.err) < 2000 ? strlen(r.err) : 2000;
    if (write(fd[1], r.err, el) < 0) _exit(2);
    _exit(0);
  }
  close(fd[1]);
  long got[2] = {-1, -1};
  assert_int_equal(read(fd[0], got, sizeof got), (ssize_t)sizeof got);
  ssize_t k = read(fd[0], errbuf, errcap - 1);
  errbuf[k > 0 ? k : 0] = 0;
  close(fd[0]);
  int ws;
  waitpid(pid, &ws, 0);
  *status = (int)got[0];
  return got[1];
}

/* A 320 MB text: --chunks 4 reads the first few pieces only.  The whole-text path (text read into
 * memory, all ids kept: >= 320 MB + 4 bytes an id) cannot pass; it is also stopped after 120 s of CPU.
 * The bound: Release 64 MiB (measured ~12 MiB); ASan keeps shadow memory and a quarantine of freed
 * blocks (up to 256 MiB by default), so its bound is 96 MiB (measured ~42 MiB): still under a
 * third of the text's size. */
static void test_memory_bounded(void **state) {
  (void)state;
#if defined(__SANITIZE_ADDRESS__)
  const long bound_kib = 96 << 10;
#else
  const long bound_kib = 64 << 10;
#endif
  char *dir = tu_tmpdir(), path[600], *model = tu_shared(STORIES), args[1400], err[2048];
  snprintf(path, sizeof path, "%s/big.txt", dir);
  write_big_text(path, 320);
  const char *protos[] = {"hf-window", "llamacpp"};
  for (int i = 0; i < 2; i++) {
    snprintf(args, sizeof args, "ppl -m '%s' --data '%s' -P %s --chunks 4 -t 2 --json", model, path, protos[i]);
    int status;
    long kib = peak_rss_kib("ulimit -t 120;", args, &status, err, sizeof err);
    if (status != 0) fail_msg("%s: exit %d: %s", protos[i], status, err);
    fprintf(stderr, "# %s --chunks 4 on 320 MB: peak RSS %.1f MiB (bound %ld MiB)\n", protos[i], kib / 1024.0,
            bound_kib >> 10);
    if (kib > bound_kib) fail_msg("%s: peak RSS %ld KiB > %ld KiB", protos[i], kib, bound_kib);
  }
  remove(path);
  rmdir(dir);
  free(dir), free(model);
}

/* ---- KL files written by a stream ---- */

static uint64_t rd_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static cJSON *run_json(const char *args, int expect_status, tu_run *r) {
  *r = tu_run_qlm("", args);
  if (r->status != expect_status) fail_msg("qlm %s: exit %d (expected %d): %s", args, r->status, expect_status, r->err);
  return expect_status ? NULL : cJSON_Parse(r->out);
}

static double metric(cJSON *j, const char *name) {
  cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "metrics"), name);
  assert_non_null(m);
  return m->valuedouble;
}

static void test_kl_stream_files(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), *model = tu_shared(STORIES), data[600], base[600], bad[600], args[2200];
  snprintf(data, sizeof data, "%s/slice.txt", dir);
  snprintf(base, sizeof base, "%s/base.kld", dir);
  snprintf(bad, sizeof bad, "%s/bad.kld", dir);
  tu_write_file(data, WIKI, wiki_lines(40));
  tu_run r;
  snprintf(args, sizeof args, "ppl -m '%s' --data '%s' -P llamacpp -w 128 -t 2 -q --json --save-logits '%s' --top-k 8", model,
           data, base);
  cJSON *j = run_json(args, 0, &r);
  int64_t tokens = (int64_t)cJSON_GetObjectItem(j, "tokens")->valuedouble;
  double ppl = metric(j, "ppl");
  cJSON_Delete(j);
  tu_run_free(&r);
  /* the header holds the count patched at commit; the size is header + count records */
  qlm_error e = {0};
  qlm_mapfile m;
  assert_int_equal(qlm_map_file(base, &m, &e), 0);
  size_t rec = 12 + 8 * 8;
  assert_true(tokens > 100);
  assert_int_equal(rd_u64(m.data + 32), (uint64_t)tokens);
  assert_int_equal(m.size, QLM_KL_HEADER_BYTES + (size_t)tokens * rec);
  /* the same model against itself: KL 0, the same top-1 everywhere, the same PPL */
  snprintf(args, sizeof args, "ppl -m '%s' --data '%s' -P llamacpp -w 128 -t 1 -b 3 -q --json --kl-base '%s'", model, data, base);
  j = run_json(args, 0, &r);
  assert_true(fabs(metric(j, "kld_mean")) < 1e-6 && metric(j, "kld_p99") < 1e-5);
  assert_true(metric(j, "top1_agree") == 1.0);
  assert_true(fabs(metric(j, "ppl_base") - ppl) < 1e-5 * ppl);
  cJSON_Delete(j);
  tu_run_free(&r);
  unsigned char *copy = malloc(m.size);
  /* a count patched by one more record, or left at the placeholder: the documented size error */
  const uint64_t counts[] = {(uint64_t)tokens + 1, UINT64_MAX};
  snprintf(args, sizeof args, "ppl -m '%s' --data '%s' -P llamacpp -w 128 -t 1 -q --kl-base '%s'", model, data, bad);
  for (int i = 0; i < 2; i++) {
    memcpy(copy, m.data, m.size);
    for (int b = 0; b < 8; b++) copy[32 + b] = (unsigned char)(counts[i] >> (8 * b));
    tu_write_file(bad, copy, m.size);
    run_json(args, 4, &r);
    assert_non_null(strstr(r.err, "bad.kld"));
    assert_non_null(strstr(r.err, "records of 76 bytes do not fill the file"));
    tu_run_free(&r);
  }
  /* the file cut by one record (count still the old one): the same size error */
  tu_write_file(bad, m.data, m.size - rec);
  run_json(args, 4, &r);
  assert_non_null(strstr(r.err, "do not fill the file"));
  tu_run_free(&r);
  /* the header's fingerprint edited: every target still matches the run, the hash does not */
  memcpy(copy, m.data, m.size);
  copy[40] ^= 1;
  tu_write_file(bad, copy, m.size);
  run_json(args, 4, &r);
  assert_non_null(strstr(r.err, "do not match the header's fingerprint"));
  tu_run_free(&r);
  /* a record's target edited: stopped at that record */
  memcpy(copy, m.data, m.size);
  copy[QLM_KL_HEADER_BYTES + 5 * rec] ^= 1;
  tu_write_file(bad, copy, m.size);
  run_json(args, 2, &r);
  assert_non_null(strstr(r.err, "record 5 is for token"));
  tu_run_free(&r);
  /* another --chunks: fewer tokens scored than the file holds */
  snprintf(args, sizeof args, "ppl -m '%s' --data '%s' -P llamacpp -w 128 -t 1 -q --chunks 2 --kl-base '%s'", model, data, base);
  run_json(args, 2, &r);
  assert_non_null(strstr(r.err, "records were compared"));
  tu_run_free(&r);
  free(copy);
  qlm_unmap_file(&m);
  remove(base), remove(bad), remove(data);
  rmdir(dir);
  free(dir), free(model);
}

typedef struct kl_pair { qlm_kl_writer *w; qlm_kl_reader *r; } kl_pair;

static int kl_tok(void *ctx, int64_t index, int32_t target, const float *logits, double lse, qlm_error *err) {
  (void)index;
  kl_pair *k = ctx;
  if (k->w) return qlm_kl_writer_add(k->w, target, logits, lse, err);
  return qlm_kl_reader_add(k->r, target, logits, lse, err);
}

/* KL of one window setting to another model run (other window: other distributions), read with
 * all values in memory and with all but 7 spilled to disk: the same statistics, bit for bit. */
static void test_kl_spill_exact(void **state) {
  (void)state;
  qlm_error err = {0};
  char *dir = tu_tmpdir(), path[600];
  snprintf(path, sizeof path, "%s/base.kld", dir);
  size_t len = wiki_lines(40);
  qlm_ppl_params prm = {.window = 64, .stride = 32};
  qlm_kl_header h = {.n_vocab = (uint32_t)S_model->hp.n_vocab, .k = 16, .protocol = QLM_PPL_HF_WINDOW, .window = 64, .stride = 32};
  kl_pair k = {0};
  qlm_ppl_stream *s = NULL;
  qlm_ppl_stats st;
  assert_int_equal(qlm_kl_writer_open_stream(&k.w, path, &h, &err), 0);
  assert_int_equal(qlm_ppl_stream_open(S_tok, WIKI, len, "slice", QLM_PPL_HF_WINDOW, &prm, S_model->hp.n_ctx, 0, &s, &err), 0);
  qlm_ppl_opts o = {.batch = 4, .ubatch = 128, .n_threads = 2, .on_token = kl_tok, .ctx = &k};
  assert_int_equal(qlm_ppl_run_stream(S_model, s, &o, &st, &err), 0);
  qlm_ppl_stream_free(s);
  assert_int_equal(qlm_kl_writer_commit(k.w, &err), 0);
  k.w = NULL;
  qlm_kl_stats ks[2];
  for (int spill = 0; spill < 2; spill++) {
    qlm_kl_test_mem_values = spill ? 7 : 0;
    /* the same windows scored with batch 1: slightly other logits, so KL values are not all 0 */
    assert_int_equal(qlm_kl_reader_open_stream(&k.r, path, &h, &err), 0);
    assert_int_equal(qlm_ppl_stream_open(S_tok, WIKI, len, "slice", QLM_PPL_HF_WINDOW, &prm, S_model->hp.n_ctx, 0, &s, &err), 0);
    o.batch = 1;
    assert_int_equal(qlm_ppl_run_stream(S_model, s, &o, &st, &err), 0);
    qlm_ppl_stream_free(s);
    if (qlm_kl_reader_finish(k.r, &ks[spill], &err)) fail_msg("%s", err.msg);
    qlm_kl_reader_free(k.r);
    k.r = NULL;
  }
  qlm_kl_test_mem_values = 0;
  assert_int_equal(ks[0].n, st.n_scored);
  assert_true(ks[0].n > 1000);
  assert_true(ks[0].kld_median == ks[1].kld_median && ks[0].kld_p99 == ks[1].kld_p99 && ks[0].kld_max == ks[1].kld_max);
  assert_true(ks[0].kld_mean == ks[1].kld_mean && ks[0].top1_agree == ks[1].top1_agree);
  assert_true(ks[0].kld_max >= ks[0].kld_p99 && ks[0].kld_p99 >= ks[0].kld_median);
  remove(path);
  rmdir(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_memory_bounded), /* first: nothing else of this process is a child */
      cmocka_unit_test(test_stream_equals_plan),
      cmocka_unit_test(test_stream_errors),
      cmocka_unit_test(test_kl_stream_files),
      cmocka_unit_test(test_kl_spill_exact),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
