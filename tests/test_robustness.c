/* test_robustness.c — what must hold when things go wrong around the readers and writers:
 *   - `qlm tokenize --tokenizer` refuses a tokenizer whose vocabulary is not the model's;
 *   - a writer killed (SIGKILL) midway through its file, after writing it but before fsync, or
 *     after fsync but before the rename leaves the destination as it was (core/atomic_file.h);
 *   - an allocation the memory limit refuses is a clean "out of memory" naming what was needed.
 * Disk-full and file-size limits (ENOSPC, ulimit -f) are tested in test_quantize.c. */
#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/mapfile.h"
#include "formats/source.h"
#include "quant/quantize.h"

#define STORIES "models/stories260K/stories260K.gguf"

typedef tu_run run_result;

/* Run `prefix qlm ARGS` through bash (prefix may set limits). */
static run_result run_qlm(const char *prefix, const char *args) { return tu_run_qlm(prefix, args); }

static void run_free(run_result *r) { tu_run_free(r); }

/* ---- tokenize with a tokenizer that is not the model's -------------------------------- */

static void test_tokenize_vocab_mismatch(void **st) {
  (void)st;
  char *gguf = tu_shared(STORIES), *bin = tu_shared("models/stories260K/stories260K.bin");
  char *tok512 = tu_shared("models/stories260K/tok512.bin");
  char *smol = tu_shared("tokenizers/smollm2-135m/tokenizer.json");
  char *spm = tu_shared("tokenizers/llama2-spm/tokenizer.bin");
  char args[2048];
  /* SmolLM2's 49152-token tokenizer.json with the 512-token stories260K: refused, both sizes named */
  snprintf(args, sizeof args, "tokenize -m '%s' --tokenizer '%s' -p 'Once upon a time'", gguf, smol);
  run_result r = run_qlm("", args);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, smol));
  assert_non_null(strstr(r.err, "49152 tokens"));
  assert_non_null(strstr(r.err, "vocabulary of 512"));
  assert_string_equal(r.out, "");
  run_free(&r);
  /* llama2's 32000-token tokenizer.bin with the llama2.c checkpoint: refused by the llama2.c reader,
   * which reads tokenizer.bin against the header's vocab_size (exit 4, as in test_malformed's
   * tokenizer.bin rows; every command opens it the same way) */
  snprintf(args, sizeof args, "tokenize -m '%s' --tokenizer '%s' -p 'Once upon a time'", bin, spm);
  r = run_qlm("", args);
  assert_int_equal(r.status, 4);
  assert_non_null(strstr(r.err, spm));
  assert_non_null(strstr(r.err, "holds 32000 tokens but the model's vocab_size is 512"));
  assert_string_equal(r.out, "");
  run_free(&r);
  /* the model's own tokenizer given explicitly: the same ids as without --tokenizer */
  snprintf(args, sizeof args, "tokenize -m '%s' --tokenizer '%s' --ids -p 'Once upon a time'", gguf, tok512);
  run_result a = run_qlm("", args);
  snprintf(args, sizeof args, "tokenize -m '%s' --ids -p 'Once upon a time'", gguf);
  run_result b = run_qlm("", args);
  assert_int_equal(a.status, 0);
  assert_int_equal(b.status, 0);
  assert_string_equal(a.out, b.out);
  assert_true(strlen(a.out) > 4);
  run_free(&a);
  run_free(&b);
  /* a vocabulary-only GGUF (no tensors, its own 50257 tokens) with SmolLM2's: refused */
  char *gpt2 = tu_shared("tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf");
  snprintf(args, sizeof args, "tokenize -m '%s' --tokenizer '%s' -p 'hi'", gpt2, smol);
  r = run_qlm("", args);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "vocabulary of 50257"));
  run_free(&r);
  free(gpt2);
  free(gguf), free(bin), free(tok512), free(smol), free(spm);
}

/* ---- writers killed midway ------------------------------------------------------------ */

/* Interposed on libc for the code linked into this program (atomic_file.c calls these): when
 * armed in a child, they SIGKILL the process at the chosen point of a file write. */
enum { KILL_NONE, KILL_MIDWAY, KILL_BEFORE_FSYNC, KILL_BEFORE_RENAME };
static int g_kill;
static size_t g_written;

ssize_t write(int fd, const void *buf, size_t n) {
  if (g_kill == KILL_MIDWAY && (g_written += n) > 200000) raise(SIGKILL);
  return syscall(SYS_write, fd, buf, n);
}

int fsync(int fd) {
  if (g_kill == KILL_BEFORE_FSYNC) raise(SIGKILL);
  return (int)syscall(SYS_fsync, fd);
}

int rename(const char *from, const char *to) {
  if (g_kill == KILL_BEFORE_RENAME) raise(SIGKILL);
  return (int)syscall(SYS_renameat, AT_FDCWD, from, AT_FDCWD, to);
}

static int count_entries(const char *dir, int *tmp) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  *tmp = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    n++;
    if (strstr(e->d_name, ".tmp-")) (*tmp)++;
  }
  closedir(d);
  return n;
}

static void test_writer_killed(void **st) {
  (void)st;
  char *model = tu_shared(STORIES), *dir = tu_tmpdir(), path[600];
  snprintf(path, sizeof path, "%s/out.gguf", dir);
  static const char old[] = "previous contents";
  tu_write_file(path, old, sizeof old - 1);
  const int points[] = {KILL_MIDWAY, KILL_BEFORE_FSYNC, KILL_BEFORE_RENAME};
  for (int k = 0; k < 3; k++) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      qlm_source *src;
      qlm_error err = {0};
      if (qlm_source_open(model, NULL, &src, &err)) _exit(100);
      qlm_quant_params p = {.type = QLM_TYPE_Q8_0, .n_threads = 1};
      qlm_quant_summary sum;
      g_kill = points[k];
      qlm_quantize(src, path, &p, &sum, &err);
      _exit(101); /* not reached: killed inside the write */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFSIGNALED(status)) fail_msg("kill point %d: the writer exited with %d instead of being killed", k,
                                       WEXITSTATUS(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    char *text;
    qlm_error e = {0};
    assert_int_equal(qlm_read_file(path, 1024, &text, NULL, &e), 0);
    assert_string_equal(text, old); /* the destination is unchanged */
    free(text);
    int tmp, n = count_entries(dir, &tmp);
    assert_int_equal(tmp, k + 1); /* the killed writer's temporary file stays beside it */
    assert_int_equal(n, k + 2);
  }
  /* a later write still succeeds and replaces the destination */
  qlm_source *src;
  qlm_error err = {0};
  assert_int_equal(qlm_source_open(model, NULL, &src, &err), 0);
  qlm_quant_params p = {.type = QLM_TYPE_Q8_0, .n_threads = 1};
  qlm_quant_summary sum;
  assert_int_equal(qlm_quantize(src, path, &p, &sum, &err), 0);
  qlm_source_close(src);
  assert_int_equal(qlm_source_open(path, NULL, &src, &err), 0);
  assert_int_equal(qlm_source_tensor(src, "blk.0.attn_q.weight")->type, QLM_TYPE_Q8_0);
  qlm_source_close(src);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(dir);
  free(model);
}

/* ---- memory the limit refuses ---------------------------------------------------------- */

/* A KV cache larger than the address-space limit: refused up front (exit 6) or, with the check
 * off, a clean exit 7 that says what it needed; never a crash.  (ASan reserves terabytes of
 * shadow memory, so this runs in the other builds.) */
static void test_memory_limit(void **st) {
  (void)st;
#if defined(__SANITIZE_ADDRESS__)
  skip();
#else
  char *dir = tu_tmpdir(), *big = tu_write_stories_bigctx(dir), args[1024];
  /* 1048576 positions x 5 layers x 32 kv x 2 x 4 bytes = 1.3 GB of KV cache, 600 MB allowed: refused
   * before allocating (exit 6, the need and the file named); with the check off, the allocation
   * itself fails cleanly (exit 7). */
  snprintf(args, sizeof args, "run -m '%s' --ctx 1048576 -n 4 -p Once -t 1", big);
  run_result r = run_qlm("ulimit -v 600000;", args);
  if (r.status != 6) fail_msg("exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.err, big));
  assert_non_null(strstr(r.err, "KV cache 1.2 GiB at --ctx 1048576"));
  assert_string_equal(r.out, "");
  run_free(&r);
  r = run_qlm("ulimit -v 600000; QLM_NO_MEM_CHECK=1", args);
  if (r.status != 7) fail_msg("exit %d: %s", r.status, r.err);
  assert_non_null(strstr(r.err, "out of memory allocating 167772160 x 4 bytes for KV cache"));
  assert_string_equal(r.out, "");
  run_free(&r);
  /* within the limit the same model runs */
  snprintf(args, sizeof args, "run -m '%s' --ctx 256 -n 4 -p Once -t 1 -q", big);
  r = run_qlm("ulimit -v 600000;", args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  run_free(&r);
  remove(big);
  remove(dir);
  free(big);
  free(dir);
#endif
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tokenize_vocab_mismatch),
      cmocka_unit_test(test_writer_killed),
      cmocka_unit_test(test_memory_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
