/* test_cli.c — the qlm program as a user runs it: outputs, exit codes, error messages. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/mapfile.h"
#include "formats/source.h"

#include <sqlite3.h>

typedef tu_run run_result;

/* Run `qlm ARGS` (ARGS is shell syntax) capturing stdout and stderr into temporary files. */
static run_result run_qlm(const char *args) { return tu_run_qlm(NULL, args); }

static void run_free(run_result *r) { tu_run_free(r); }

static char *shared_arg(const char *rel) { return tu_shared(rel); }

/* `qlm run --temp 0` prints the text documented for the model (llama2.c's run.c output). */
static void test_run_greedy_matches_documented_text(void **st) {
  (void)st;
  char *model = shared_arg("models/stories260K/stories260K.gguf"), *md_path = shared_arg("models/stories260K/stories260K.md");
  char args[1024];
  snprintf(args, sizeof args, "run -m '%s' --temp 0 -n 256 -q -t 2", model);
  run_result r = run_qlm(args);
  if (r.status != 0) fail_msg("exit %d: %s", r.status, r.err);
  char *md;
  qlm_error e = {0};
  assert_int_equal(qlm_read_file(md_path, 1 << 20, &md, NULL, &e), 0);
  const char *start = strstr(md, "-t 0.0\n") + strlen("-t 0.0\n");
  const char *end = strstr(start, "```");
  size_t n = (size_t)(end - start);
  while (n && (start[n - 1] == '\n')) n--;
  size_t m = strlen(r.out);
  while (m && (r.out[m - 1] == '\n')) m--;
  if (m != n || memcmp(r.out, start, n) != 0) fail_msg("got:\n%s", r.out);
  free(md);
  run_free(&r);
  free(model);
  free(md_path);
}

/* Sampling with a seed is reproducible, and different seeds give different text. */
static void test_run_seeded_sampling(void **st) {
  (void)st;
  char *model = shared_arg("models/stories260K/stories260K.gguf");
  char a1[1024], a2[1024];
  snprintf(a1, sizeof a1, "run -m '%s' --temp 1 --top-p 0.9 -s 7 -n 64 -q", model);
  snprintf(a2, sizeof a2, "run -m '%s' --temp 1 --top-p 0.9 -s 8 -n 64 -q", model);
  run_result r1 = run_qlm(a1), r2 = run_qlm(a1), r3 = run_qlm(a2);
  assert_int_equal(r1.status, 0);
  assert_string_equal(r1.out, r2.out);
  assert_string_not_equal(r1.out, r3.out);
  assert_true(strlen(r1.out) > 40);
  run_free(&r1);
  run_free(&r2);
  run_free(&r3);
  free(model);
}

static void test_run_prints_speed(void **st) {
  (void)st;
  char *model = shared_arg("models/stories260K/stories260K.bin");
  char args[1024];
  snprintf(args, sizeof args, "run -m '%s' -p 'Once upon a time' --temp 0 -n 32", model);
  run_result r = run_qlm(args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "Once upon a time"));
  assert_non_null(strstr(r.err, "prefill:"));
  assert_non_null(strstr(r.err, "tokens/s"));
  run_free(&r);
  free(model);
}

static void test_info(void **st) {
  (void)st;
  char *model = shared_arg("models/stories260K/stories260K.gguf");
  char args[1024];
  snprintf(args, sizeof args, "info '%s'", model);
  run_result r = run_qlm(args);
  assert_int_equal(r.status, 0);
  /* 48 tensors; token_embd and output are separate 64x512 tensors in this GGUF */
  assert_non_null(strstr(r.out, "n_embd 64, n_ff 172, n_layer 5, n_head 8, n_head_kv 4"));
  assert_non_null(strstr(r.out, "in 48 tensors"));
  assert_non_null(strstr(r.out, "32.000 bits/weight"));
  assert_non_null(strstr(r.out, "blk.0.ffn_down.weight"));
  assert_non_null(strstr(r.out, "sentencepiece-bpe, 512 tokens"));
  run_free(&r);
  free(model);
}

/* A truncated GGUF: exit code 4 (format), message names the file, nothing on stdout. */
static void test_truncated_model_error(void **st) {
  (void)st;
  char *model = shared_arg("models/stories260K/stories260K.gguf"), *dir = tu_tmpdir();
  char bad[512], args[1024];
  snprintf(bad, sizeof bad, "%s/truncated.gguf", dir);
  qlm_mapfile m;
  qlm_error e = {0};
  assert_int_equal(qlm_map_file(model, &m, &e), 0);
  tu_write_file(bad, m.data, m.size / 2);
  qlm_unmap_file(&m);
  snprintf(args, sizeof args, "run -m '%s' -n 4", bad);
  run_result r = run_qlm(args);
  assert_int_equal(r.status, 4);
  assert_non_null(strstr(r.err, bad));
  assert_string_equal(r.out, "");
  run_free(&r);
  remove(bad);
  remove(dir);
  free(dir);
  free(model);
}

static void test_usage_errors(void **st) {
  (void)st;
  run_result r = run_qlm("run --temp banana");
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "--temp"));
  run_free(&r);
  r = run_qlm("frobnicate");
  assert_int_equal(r.status, 2);
  run_free(&r);
  r = run_qlm("run -m /nonexistent/model.gguf");
  assert_int_equal(r.status, 3);
  assert_non_null(strstr(r.err, "/nonexistent/model.gguf"));
  run_free(&r);
  r = run_qlm("--help");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "exit status"));
  run_free(&r);
  r = run_qlm("quantize -o /nonexistent/x.gguf --method gptq --calib-dtype fp16");
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "--calib-dtype: 'fp16' is not f32 or bf16"));
  run_free(&r);
}

/* A bf16 calibration gives the same weights at every SIMD level: AVX-512 BF16 where the CPU has
 * it, the AVX-512F and AVX2 FMA chains, the portable reference (kernels/bgemm.h).  GPTQ 4-bit of
 * stories260K on 4 windows of 64 tokens, each level run as a user would (QLM_SIMD caps it; a
 * level above this CPU's runs as the CPU's own, and compares all the same).  bf16 is the
 * default from AVX-512 up (the run without --calib-dtype, recorded in the database as
 * calib-dtype=bf16); on AVX2, where the FMA chains are slower than f32, f32 is; qlm info shows
 * the calibration (qlm.calib.*). */
static void test_bf16_calibration_same_at_every_level(void **st) {
  (void)st;
  char *model = shared_arg("models/stories260K/stories260K.gguf"), *dir = tu_tmpdir();
  const struct {
    const char *simd, *dtype, *says;
  } runs[] = {{"avx512", "--calib-dtype bf16", "products in bf16"},
              {"avx512-nobf16", "--calib-dtype bf16", "products in bf16"},
              {"avx2", "--calib-dtype bf16", "products in bf16"},
              {"scalar", "--calib-dtype bf16", "products in bf16"},
              {NULL, "", "products in bf16"},
              {"avx2", "", "products in f32"}};
  qlm_source *ref = NULL;
  char db[600];
  snprintf(db, sizeof db, "%s/runs.db", dir);
  for (int l = 0; l < 6; l++) {
    char args[2048], out[600];
    snprintf(out, sizeof out, "%s/%d.gguf", dir, l);
    snprintf(args, sizeof args,
             "quantize -m '%s' -o '%s' --method gptq --bits 4 --group 32 --calib-samples 4 --calib-len 64 %s -t 2%s%s",
             model, out, runs[l].dtype, l == 4 ? " --db " : "", l == 4 ? db : "");
    if (runs[l].simd) setenv("QLM_SIMD", runs[l].simd, 1);
    run_result r = run_qlm(args);
    unsetenv("QLM_SIMD");
    if (r.status != 0) fail_msg("QLM_SIMD=%s: exit %d: %s", runs[l].simd, r.status, r.err);
    if (!strstr(r.out, runs[l].says)) fail_msg("run %d: no '%s' in\n%s", l, runs[l].says, r.out);
    run_free(&r);
    if (l == 0) { /* qlm info shows what the file was calibrated on */
      snprintf(args, sizeof args, "info '%s' --no-tensors", out);
      r = run_qlm(args);
      assert_int_equal(r.status, 0);
      if (!strstr(r.out, "calibrated:   4 windows of 64 tokens from ") || !strstr(r.out, "seed 0, products in bf16"))
        fail_msg("qlm info:\n%s", r.out);
      run_free(&r);
    }
    qlm_source *q = NULL;
    qlm_error e = {0};
    if (qlm_source_open(out, NULL, &q, &e)) fail_msg("%s", e.msg);
    unlink(out);
    if (!ref) {
      ref = q;
      continue;
    }
    assert_int_equal(q->n_tensors, ref->n_tensors);
    bool same = true;
    for (int i = 0; i < q->n_tensors; i++) {
      const qlm_tensor *a = &ref->tensors[i], *b = qlm_source_tensor(q, a->name);
      assert_non_null(b);
      same &= a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes);
    }
    if (same != (l < 5)) fail_msg("run %d (QLM_SIMD=%s %s): weights %s the first run's", l, runs[l].simd, runs[l].dtype,
                                  same ? "equal to" : "differ from");
    qlm_source_close(q);
  }
  qlm_source_close(ref);
  sqlite3 *h;
  sqlite3_stmt *stmt;
  assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(h, "SELECT options FROM quant_configs", -1, &stmt, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
  const char *opts = (const char *)sqlite3_column_text(stmt, 0);
  if (!opts || !strstr(opts, "calib-dtype=bf16")) fail_msg("recorded options: %s", opts ? opts : "(null)");
  sqlite3_finalize(stmt);
  sqlite3_close(h);
  unlink(db);
  rmdir(dir);
  free(dir);
  free(model);
}

/* The default model and data are found without $QLM_SHARED from any working directory: qlm looks
 * for a "shared" folder beside its executable's folders (core/shared_dir.h).  Layout built here:
 *   DIR/repo/build/qlm (a copy: /proc/self/exe resolves links)   DIR/shared/models/... (a link). */
static void test_default_paths_found_beside_executable(void **st) {
  (void)st;
  const char *bin = getenv("QLM_BIN");
  assert_non_null(bin);
  char *model = shared_arg("models/stories260K/stories260K.gguf"), *dir = tu_tmpdir();
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "set -e; cd '%s'; mkdir -p repo/build shared/models/stories260K; cp '%s' repo/build/qlm;"
           " ln -s '%s' shared/models/stories260K/stories260K.gguf",
           dir, bin, model);
  assert_int_equal(system(cmd), 0);
  /* from / with QLM_SHARED unset: the default model opens through DIR/shared */
  char args[2048];
  snprintf(args, sizeof args, "cd / && env -u QLM_SHARED '%s/repo/build/qlm' info --no-tensors >'%s/out' 2>&1", dir, dir);
  assert_int_equal(system(args), 0);
  char p[1024], *text = NULL;
  qlm_error e = {0};
  snprintf(p, sizeof p, "%s/out", dir);
  assert_int_equal(qlm_read_file(p, 1 << 20, &text, NULL, &e), 0);
  assert_non_null(strstr(text, "n_embd 64, n_ff 172, n_layer 5"));
  assert_non_null(strstr(text, dir)); /* the path it opened is the one beside the executable */
  free(text);
  /* $QLM_SHARED wins, and a wrong one is named in the error (exit 3: cannot open) */
  snprintf(args, sizeof args, "cd / && QLM_SHARED=/nonexistent-shared '%s/repo/build/qlm' info >'%s/out' 2>&1", dir, dir);
  int status = system(args);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 3);
  assert_int_equal(qlm_read_file(p, 1 << 20, &text, NULL, &e), 0);
  assert_non_null(strstr(text, "/nonexistent-shared/models/stories260K/stories260K.gguf"));
  free(text);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
  free(dir);
  free(model);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_run_greedy_matches_documented_text),
      cmocka_unit_test(test_run_seeded_sampling),
      cmocka_unit_test(test_run_prints_speed),
      cmocka_unit_test(test_info),
      cmocka_unit_test(test_truncated_model_error),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_bf16_calibration_same_at_every_level),
      cmocka_unit_test(test_default_paths_found_beside_executable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
