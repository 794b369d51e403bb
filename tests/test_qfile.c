/* test_qfile.c — the quantization driver end to end: selective-precision rules, the qlm model
 * file (write, read back, run), and every method on the real stories260K model.
 * References: the unquantized model's greedy tokens and logits; the methods' own quantize
 * functions applied in the test to the source weights (independent of the driver and writer). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/types.h"
#include "model/model.h"
#include "quant/method.h"
#include "quant/quantize.h"
#include "quant/rules.h"

#define STORIES "models/stories260K/stories260K.gguf"
#define N_GREEDY 64

static qlm_source *open_path(const char *path) {
  qlm_source *s = NULL;
  qlm_error err = {0};
  if (qlm_source_open(path, NULL, &s, &err)) fail_msg("%s", err.msg);
  return s;
}

static qlm_source *open_stories(void) {
  char *p = tu_shared(STORIES);
  qlm_source *s = open_path(p);
  free(p);
  return s;
}

/* ---- rules */

static qlm_rules *rules_of(const char *const *lines, int n) {
  qlm_error err = {0};
  qlm_rules *r = qlm_rules_new(&err);
  assert_non_null(r);
  for (int i = 0; i < n; i++)
    if (qlm_rules_add(r, lines[i], "test", &err)) fail_msg("%s", err.msg);
  return r;
}

static void test_rules_match(void **state) {
  (void)state;
  const char *lines[] = {
      "# seed 003: int8 in the first layers",
      "layers=0-1|4,component=attn_q|ffn  absmax bits=8",
      "component=embd f16",
      "name=blk.*.attn_v.weight nf4 dq=1",
      "",
      "layers=2 zeropoint bits=4 group=64",
      "* f32",
  };
  qlm_rules *r = rules_of(lines, 7);
  assert_int_equal(qlm_rules_count(r), 5);
  qlm_choice c;
  assert_true(qlm_rules_match(r, "blk.0.attn_q.weight", &c));
  assert_int_equal(c.kind, QLM_CHOICE_METHOD);
  assert_ptr_equal(c.method, &qlm_method_absmax);
  assert_int_equal(c.opts.bits, 8);
  assert_true(qlm_rules_match(r, "blk.4.ffn_down.weight", &c));
  assert_ptr_equal(c.method, &qlm_method_absmax);
  /* layer 1's attn_k is not attn_q nor ffn: falls to the later rules */
  assert_true(qlm_rules_match(r, "blk.1.attn_k.weight", &c));
  assert_int_equal(c.kind, QLM_CHOICE_F32);
  assert_true(qlm_rules_match(r, "token_embd.weight", &c));
  assert_int_equal(c.kind, QLM_CHOICE_F16);
  assert_true(qlm_rules_match(r, "blk.3.attn_v.weight", &c));
  assert_ptr_equal(c.method, &qlm_method_nf4);
  assert_true(c.opts.double_quant);
  assert_true(qlm_rules_match(r, "blk.2.ffn_up.weight", &c));
  assert_ptr_equal(c.method, &qlm_method_zeropoint);
  assert_true(c.opts.asym);
  assert_int_equal(c.opts.bits, 4);
  assert_int_equal(c.opts.group, 64);
  /* first match wins: layer 0's attn_v matches rule 4 only after rule 2 fails (attn_v not attn_q) */
  assert_true(qlm_rules_match(r, "blk.0.attn_v.weight", &c));
  assert_ptr_equal(c.method, &qlm_method_nf4);
  assert_true(strstr(qlm_rules_text(r), "layers=2 zeropoint bits=4 group=64") != NULL);
  qlm_rules_free(r);

  int layer;
  assert_string_equal(qlm_tensor_component("blk.12.attn_output.weight", &layer), "attn_o");
  assert_int_equal(layer, 12);
  assert_string_equal(qlm_tensor_component("output.weight", &layer), "output");
  assert_int_equal(layer, -1);
  assert_null(qlm_tensor_component("blk.3.attn_norm.weight", &layer));
}

static void expect_rule_error(const char *line, const char *needle) {
  qlm_error err = {0};
  qlm_rules *r = qlm_rules_new(&err);
  assert_int_equal(qlm_rules_add(r, line, "rules.txt:7", &err), QLM_EUSAGE);
  if (!strstr(err.msg, needle) || !strstr(err.msg, "rules.txt:7")) fail_msg("'%s': got '%s'", line, err.msg);
  qlm_rules_free(r);
}

static void test_rules_errors(void **state) {
  (void)state;
  expect_rule_error("layers=0-4 absmx bits=8", "unknown method 'absmx'");
  expect_rule_error("layers=4-0 absmax", "layers=4-0");
  expect_rule_error("component=mlp absmax", "component=mlp");
  expect_rule_error("colour=red absmax", "unknown selector 'colour'");
  expect_rule_error("* absmax bits=nine", "bits=nine");
  expect_rule_error("* absmax wobble=1", "unknown option 'wobble'");
  expect_rule_error("* f32 bits=8", "takes no options");
  expect_rule_error("layers=0-4", "expected SELECTOR ACTION");

  /* a file: errors name the file and line (blank and comment lines count) */
  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/rules.txt", dir);
  const char *text = "# comment\n\n* absmax bits=8\nlayers=x nf4\n";
  tu_write_file(path, text, strlen(text));
  qlm_error err = {0};
  qlm_rules *r = qlm_rules_new(&err);
  assert_int_equal(qlm_rules_add_file(r, path, &err), QLM_EUSAGE);
  char want[600];
  snprintf(want, sizeof want, "%s:4", path);
  if (!strstr(err.msg, want)) fail_msg("got '%s'", err.msg);
  err = (qlm_error){0};
  snprintf(path, sizeof path, "%s/missing.txt", dir);
  assert_int_equal(qlm_rules_add_file(r, path, &err), QLM_EIO);
  assert_non_null(strstr(err.msg, "missing.txt"));
  qlm_rules_free(r);
  free(dir);
}

/* ---- end to end on stories260K */

/* Quantize src with default (method, opts) and rules into dir/name; returns the malloc'd path. */
static char *quantize_to(const qlm_source *src, const char *dir, const char *name, const qlm_quant_method *m,
                         qlm_quant_opts o, int type, const qlm_rules *rules) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *out = malloc(n);
  snprintf(out, n, "%s/%s", dir, name);
  qlm_quant_params p = {.method = m, .opts = o, .type = type, .embd_type = QLM_TYPE_F32, .rules = rules,
                        .n_threads = 2};
  qlm_quant_summary s;
  qlm_error err = {0};
  if (qlm_quantize(src, out, &p, &s, &err)) fail_msg("%s: %s", name, err.msg);
  return out;
}

/* 8-bit RTN (absmax and zero-point, per channel and per group of 32) and Q8_0 keep the 64-token
 * greedy output of the f32 model. */
static void test_8bit_keeps_greedy(void **state) {
  (void)state;
  qlm_source *src = open_stories();
  int32_t ref[N_GREEDY], got[N_GREEDY];
  tu_greedy(src, N_GREEDY, NULL, ref, NULL);
  char *dir = tu_tmpdir();
  struct {
    const char *name;
    const qlm_quant_method *m;
    qlm_quant_opts o;
    int type;
  } cases[] = {
      {"a8.gguf", &qlm_method_absmax, {.bits = 8}, 0},
      {"a8g32.gguf", &qlm_method_absmax, {.bits = 8, .group = 32}, 0},
      {"z8.gguf", &qlm_method_zeropoint, {.bits = 8}, 0},
      {"q8_0.gguf", NULL, {0}, QLM_TYPE_Q8_0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *path = quantize_to(src, dir, cases[i].name, cases[i].m, cases[i].o, cases[i].type, NULL);
    qlm_source *q = open_path(path);
    tu_greedy(q, N_GREEDY, NULL, got, NULL);
    int same = tu_common_prefix(ref, got, N_GREEDY);
    print_message("%-12s greedy tokens identical to f32: %d/%d\n", cases[i].name, same, N_GREEDY);
    assert_int_equal(same, N_GREEDY);
    qlm_source_close(q);
    unlink(path);
    free(path);
  }
  rmdir(dir);
  free(dir);
  qlm_source_close(src);
}

/* The file holds exactly what the method produces: every quantized tensor's bytes equal the
 * method's quantize() of the source weights (run here), its recorded method equals the
 * method's description, and the model runs from it. */
static void test_file_roundtrip(void **state) {
  (void)state;
  qlm_source *src = open_stories();
  char *dir = tu_tmpdir();
  qlm_quant_opts o = {.bits = 4, .group = 32};
  char *path = quantize_to(src, dir, "z4.gguf", &qlm_method_zeropoint, o, 0, NULL);
  qlm_source *q = open_path(path);
  const qlm_meta *m = qlm_source_meta(q, "qlm.quantize.method");
  assert_non_null(m);
  assert_string_equal(m->v.s, "zeropoint");
  assert_non_null(qlm_source_meta(q, "qlm.version"));
  assert_non_null(qlm_source_meta(q, "qlm.quantize.seconds"));
  int n_checked = 0;
  qlm_quant_opts full = o;
  qlm_method_zeropoint.defaults(&full);
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *t = &src->tensors[i];
    const qlm_tensor *u = qlm_source_tensor(q, t->name);
    assert_non_null(u);
    char key[300];
    snprintf(key, sizeof key, "qlm.tensor.%s.method", t->name);
    const qlm_meta *tm = qlm_source_meta(q, key);
    if (!tm) {
      assert_int_equal(u->type, QLM_TYPE_F32);
      continue;
    }
    assert_int_equal(t->type, QLM_TYPE_F32); /* stories260K's GGUF is f32 */
    qlm_qtensor ref = {0};
    qlm_error err = {0};
    if (qlm_method_zeropoint.quantize(t->data, t->ne[1], t->ne[0], NULL, &full, &ref, &err)) fail_msg("%s", err.msg);
    assert_int_equal(u->type, ref.type);
    assert_int_equal(u->nbytes, ref.row_bytes * (size_t)ref.rows);
    assert_memory_equal(u->data, ref.data, u->nbytes);
    assert_string_equal(tm->v.s, ref.desc);
    qlm_qtensor_free(&ref);
    n_checked++;
  }
  assert_int_equal(n_checked, 35); /* 7 matrices x 5 layers */
  /* runs, and stays close to f32: 4-bit zero-point groups of 32 on this tiny model */
  int32_t ref_tok[N_GREEDY], got[N_GREEDY], again[N_GREEDY];
  tu_greedy(src, N_GREEDY, NULL, ref_tok, NULL);
  tu_greedy(q, N_GREEDY, NULL, got, NULL);
  tu_greedy(q, N_GREEDY, NULL, again, NULL);
  assert_memory_equal(got, again, sizeof got);
  print_message("zeropoint4 g32: greedy prefix identical to f32: %d/%d\n", tu_common_prefix(ref_tok, got, N_GREEDY),
                N_GREEDY);
  qlm_source_close(q);
  unlink(path);
  free(path);
  rmdir(dir);
  free(dir);
  qlm_source_close(src);
}

/* Seed 003's selective precision: int8 in the first layers, the rest f32. */
static void test_rules_end_to_end(void **state) {
  (void)state;
  qlm_source *src = open_stories();
  char *dir = tu_tmpdir();
  const char *lines[] = {"layers=0-1,component=linear absmax bits=8", "component=embd|output f16", "* f32"};
  qlm_rules *r = rules_of(lines, 3);
  char *path = quantize_to(src, dir, "sel.gguf", NULL, (qlm_quant_opts){0}, QLM_TYPE_F32, r);
  qlm_source *q = open_path(path);
  int n_int8 = 0;
  for (int i = 0; i < q->n_tensors; i++) {
    const qlm_tensor *t = &q->tensors[i];
    int layer;
    const char *comp = qlm_tensor_component(t->name, &layer);
    if (comp && layer >= 0 && layer <= 1) {
      assert_int_equal(QLM_TYPE_FAMILY(t->type), QLM_FAMILY_RTN_SYM);
      assert_int_equal(QLM_TYPE_BITS(t->type), 8);
      n_int8++;
    } else if (comp && (!strcmp(comp, "embd") || !strcmp(comp, "output"))) {
      assert_int_equal(t->type, QLM_TYPE_F16);
    } else {
      assert_int_equal(t->type, QLM_TYPE_F32);
    }
  }
  assert_int_equal(n_int8, 14);
  const qlm_meta *m = qlm_source_meta(q, "qlm.quantize.rules");
  assert_non_null(m);
  assert_non_null(strstr(m->v.s, "layers=0-1,component=linear absmax bits=8"));
  int32_t ref[N_GREEDY], got[N_GREEDY];
  tu_greedy(src, N_GREEDY, NULL, ref, NULL);
  tu_greedy(q, N_GREEDY, NULL, got, NULL);
  assert_int_equal(tu_common_prefix(ref, got, N_GREEDY), N_GREEDY);
  qlm_source_close(q);
  qlm_rules_free(r);
  unlink(path);
  free(path);
  rmdir(dir);
  free(dir);
  qlm_source_close(src);
}

/* Mean |logit - f32 logit| over the f32 model's greedy text (teacher forcing), and the greedy
 * prefix the quantized model keeps. */
static double logit_drift(const char *path, const int32_t *ref, const float *lref, int V, int *prefix) {
  int32_t got[N_GREEDY];
  float *lgot = malloc((size_t)N_GREEDY * (size_t)V * sizeof *lgot);
  qlm_source *q = open_path(path);
  tu_greedy(q, N_GREEDY, ref, got, lgot);
  double dl = 0;
  for (size_t k = 0; k < (size_t)N_GREEDY * (size_t)V; k++) dl += fabs((double)lgot[k] - (double)lref[k]);
  tu_greedy(q, N_GREEDY, NULL, got, NULL);
  *prefix = tu_common_prefix(ref, got, N_GREEDY);
  qlm_source_close(q);
  free(lgot);
  return dl / ((double)N_GREEDY * V);
}

/* Every method and bit width loads and runs; prints how close each stays to f32.  Bounds:
 * 8-bit RTN drifts no more than 1.5x llama.cpp's Q8_0 on the same text (3x with one scale per
 * tensor), and within one method
 * and grouping the drift does not grow with bits (allowing 10% noise). */
static void test_every_combination_runs(void **state) {
  (void)state;
  qlm_source *src = open_stories();
  char *dir = tu_tmpdir();
  int V = src->hp.n_vocab, prefix;
  int32_t ref[N_GREEDY];
  float *lref = malloc((size_t)N_GREEDY * (size_t)V * sizeof *lref);
  tu_greedy(src, N_GREEDY, NULL, ref, lref);
  char *path = quantize_to(src, dir, "q8.gguf", NULL, (qlm_quant_opts){0}, QLM_TYPE_Q8_0, NULL);
  double d_q8 = logit_drift(path, ref, lref, V, &prefix);
  print_message("q8_0                     : prefix %2d/%d, mean |dlogit| %.4f\n", prefix, N_GREEDY, d_q8);
  unlink(path);
  free(path);
  const qlm_quant_method *rtn[] = {&qlm_method_absmax, &qlm_method_zeropoint};
  const int groups[] = {32, 64, QLM_GROUP_CHANNEL, QLM_GROUP_TENSOR};
  const int bits_list[] = {2, 3, 4, 5, 6, 8};
  int n_runs = 0;
  for (int mi = 0; mi < 2; mi++)
    for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
      double prev = INFINITY;
      for (size_t bi = 0; bi < sizeof bits_list / sizeof bits_list[0]; bi++) {
        qlm_quant_opts o = {.bits = bits_list[bi], .group = groups[gi]};
        path = quantize_to(src, dir, "c.gguf", rtn[mi], o, 0, NULL);
        double dl = logit_drift(path, ref, lref, V, &prefix);
        print_message("%-9s bits %d group %4d: prefix %2d/%d, mean |dlogit| %.4f\n", rtn[mi]->name, o.bits, o.group,
                      prefix, N_GREEDY, dl);
        assert_true(dl <= prev * 1.1);
        if (o.bits == 8) assert_true(dl <= (o.group == QLM_GROUP_TENSOR ? 3.0 : 1.5) * d_q8);
        prev = dl;
        unlink(path);
        free(path);
        n_runs++;
      }
    }
  assert_int_equal(n_runs, 2 * 6 * 4);
  /* the other methods against references measured here: 8-bit ones against Q8_0, 4-bit ones
   * against 4-bit absmax per channel */
  path = quantize_to(src, dir, "a4.gguf", &qlm_method_absmax, (qlm_quant_opts){.bits = 4}, 0, NULL);
  double d_a4 = logit_drift(path, ref, lref, V, &prefix);
  unlink(path);
  free(path);
  struct {
    const qlm_quant_method *m;
    qlm_quant_opts o;
    int type;
    double bound;
  } others[] = {
      /* LLM.int8() scales activations per token (one scale per row), Q8_0 per 32 values */
      {&qlm_method_llm_int8, {0}, 0, 2.5 * d_q8},
      {&qlm_method_llm_int8, {.threshold = 0.0f, .threshold_set = true}, 0, 2.5 * d_q8},
      {&qlm_method_nf4, {0}, 0, 1.5 * d_a4},
      {&qlm_method_nf4, {.double_quant = true}, 0, 1.5 * d_a4},
      {&qlm_method_fp4, {0}, 0, 2.0 * d_a4},
      {&qlm_method_fp4, {.double_quant = true}, 0, 2.0 * d_a4},
      {NULL, {0}, QLM_TYPE_Q4_0, 1.5 * d_a4},
      {NULL, {0}, QLM_TYPE_Q4_K, 1.5 * d_a4},
      {NULL, {0}, QLM_TYPE_Q5_1, 1.5 * d_a4},
  };
  for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
    path = quantize_to(src, dir, "o.gguf", others[i].m, others[i].o, others[i].type, NULL);
    double dl = logit_drift(path, ref, lref, V, &prefix);
    print_message("%-9s %-18s: prefix %2d/%d, mean |dlogit| %.4f (bound %.4f)\n",
                  others[i].m ? others[i].m->name : "gguf", others[i].m ? (others[i].o.double_quant ? "dq" : others[i].o.threshold_set ? "threshold=0" : "") : qlm_type_name(others[i].type),
                  prefix, N_GREEDY, dl, others[i].bound);
    assert_true(dl <= others[i].bound);
    unlink(path);
    free(path);
  }
  free(lref);
  rmdir(dir);
  free(dir);
  qlm_source_close(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rules_match),
      cmocka_unit_test(test_rules_errors),
      cmocka_unit_test(test_8bit_keeps_greedy),
      cmocka_unit_test(test_file_roundtrip),
      cmocka_unit_test(test_rules_end_to_end),
      cmocka_unit_test(test_every_combination_runs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
