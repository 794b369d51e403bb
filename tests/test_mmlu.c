/* test_mmlu.c — MMLU files and prompts, the multiple-choice log-likelihood scorer, and MMLU
 * accuracy on a model whose answers are known.
 *
 * The scorer (contexts batched as separate sequences, continuations written over the same cache
 * positions) is checked against a plain forward pass of context + continuation per choice on the
 * real stories260K; MMLU predictions against the closed-form "bigram" model of test_ppl.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/classify.h"
#include "eval/mmlu.h"
#include "formats/gguf_write.h"
#include "testutil.h"

#define STORIES "models/stories260K/stories260K.gguf"

static char *write_tmp(char *dir, const char *name, const char *text) {
  char *p = malloc(700);
  snprintf(p, 700, "%s/%s", dir, name);
  tu_write_file(p, text, strlen(text));
  return p;
}

static void test_csv(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *p = write_tmp(dir, "x.csv",
                      "question,choice0,choice1,choice2,choice3,answer\n"
                      "  What is 1+1? ,1,2,3,4,1\n"
                      "\"Statement 1 | a, b.\nStatement 2 | \"\"c\"\"\",\"True, True\",F,x,y,3\r\n");
  qlm_mmlu_question *q;
  int n;
  qlm_error err = {0};
  assert_int_equal(qlm_mmlu_read_csv(p, &q, &n, &err), 0);
  assert_int_equal(n, 2);
  assert_string_equal(q[0].question, "  What is 1+1? ");
  assert_string_equal(q[0].choice[1], "2");
  assert_int_equal(q[0].answer, 1);
  assert_string_equal(q[1].question, "Statement 1 | a, b.\nStatement 2 | \"c\"");
  assert_string_equal(q[1].choice[0], "True, True");
  assert_int_equal(q[1].answer, 3);

  /* prompts: lm-eval's template, question stripped, 1-shot from the dev list */
  qlm_mmlu_subject s = {.name = "high_school_physics", .test = q, .n_test = 2, .dev = q + 1, .n_dev = 1};
  char *pr = qlm_mmlu_prompt(&s, &q[0], 0);
  assert_string_equal(pr, "The following are multiple choice questions (with answers) about high school physics.\n\n"
                          "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:");
  free(pr);
  pr = qlm_mmlu_prompt(&s, &q[0], 5); /* only one dev example exists */
  assert_string_equal(pr, "The following are multiple choice questions (with answers) about high school physics.\n\n"
                          "Statement 1 | a, b.\nStatement 2 | \"c\"\nA. True, True\nB. F\nC. x\nD. y\nAnswer: D\n\n"
                          "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:");
  free(pr);
  qlm_mmlu_questions_free(q, n);
  assert_string_equal(qlm_mmlu_category("high_school_physics"), "stem");
  assert_string_equal(qlm_mmlu_category("professional_law"), "humanities");
  assert_null(qlm_mmlu_category("cooking"));

  /* hostile files */
  static const char *bad[] = {"question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,4\n",
                              "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d\n",
                              "question,choice0,choice1,choice2,choice3,answer\n\"q,a,b,c,d,1\n",
                              "q,choice0,choice1,choice2,choice3,answer\n", ""};
  for (int i = 0; i < 5; i++) {
    char *b = write_tmp(dir, "bad.csv", bad[i]);
    assert_int_equal(qlm_mmlu_read_csv(b, &q, &n, &err), QLM_EFORMAT);
    assert_non_null(strstr(err.msg, b));
    remove(b);
    free(b);
  }
  remove(p);
  free(p);
  rmdir(dir);
  free(dir);
}

/* Log-likelihood of cont after ctx by one fresh forward pass over ctx + cont[:-1], all logits. */
static double ref_loglik(const qlm_model *m, const int32_t *ctx, int nc, const int32_t *cont, int nk) {
  qlm_error err = {0};
  int n = nc + nk - 1, V = m->hp.n_vocab;
  qlm_state *s = NULL;
  assert_int_equal(qlm_state_new(m, 1, n, n, 1, &s, &err), 0);
  int32_t *tok = malloc((size_t)n * sizeof *tok), *pos = malloc((size_t)n * sizeof *pos), *seq = calloc((size_t)n, sizeof *seq);
  float *lg = malloc((size_t)n * V * sizeof *lg);
  for (int i = 0; i < n; i++) {
    tok[i] = i < nc ? ctx[i] : cont[i - nc];
    pos[i] = i;
  }
  qlm_batch b = {.n = n, .token = tok, .pos = pos, .seq = seq};
  assert_int_equal(qlm_forward(m, s, &b, lg, &err), 0);
  double ll = 0;
  for (int k = 0; k < nk; k++) {
    const float *l = lg + (size_t)(nc - 1 + k) * V;
    double mx = -INFINITY, sum = 0;
    for (int v = 0; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    for (int v = 0; v < V; v++) sum += exp(l[v] - mx);
    ll += l[cont[k]] - mx - log(sum);
  }
  free(tok);
  free(pos);
  free(seq);
  free(lg);
  qlm_state_free(s);
  return ll;
}

static void test_scorer_matches_forward(void **state) {
  (void)state;
  qlm_error err = {0};
  char *sp = tu_shared(STORIES);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_tokenizer *tok = NULL;
  if (qlm_source_open(sp, NULL, &src, &err)) fail_msg("%s", err.msg);
  assert_int_equal(qlm_model_load(src, &m, &err), 0);
  assert_int_equal(qlm_tokenizer_new(&src->vocab, &tok, &err), 0);
  const char *ctxs[3] = {"Once upon a time, there was a little girl named", "The cat sat on the",
                         "Tom and his mom went to the park. They saw a big"};
  const char *ch[4] = {" Lily", " mat and slept", " dog", " elephant who was very sad"};
  qlm_mc_item it[3];
  for (int i = 0; i < 3; i++) assert_int_equal(qlm_mc_item_build(tok, ctxs[i], ch, 3 + (i == 2), 1, &it[i], &err), 0);
  double ll1[3][QLM_MC_MAX_CHOICES], ll3[3 * QLM_MC_MAX_CHOICES];
  qlm_mc_scorer *s1 = NULL, *s3 = NULL;
  assert_int_equal(qlm_mc_scorer_new(m, 1, 0, 1, &s1, &err), 0);
  assert_int_equal(qlm_mc_scorer_new(m, 3, 0, 2, &s3, &err), 0);
  qlm_run_stats st = {0};
  for (int i = 0; i < 3; i++) assert_int_equal(qlm_mc_score(s1, &it[i], 1, ll1[i], NULL, &err), 0);
  assert_int_equal(qlm_mc_score(s3, it, 3, ll3, &st, &err), 0);
  int64_t rows = 0;
  for (int i = 0; i < 3; i++) {
    rows += it[i].n_ctx;
    for (int j = 0; j < it[i].n_choices; j++) {
      rows += it[i].n_cont[j] - 1;
      double want = ref_loglik(m, it[i].ctx, it[i].n_ctx, it[i].cont[j], it[i].n_cont[j]);
      if (fabs(ll1[i][j] - want) > 2e-3 || fabs(ll3[i * QLM_MC_MAX_CHOICES + j] - want) > 2e-3)
        fail_msg("item %d choice %d: batch 1 %g, batch 3 %g, reference %g", i, j, ll1[i][j],
                 ll3[i * QLM_MC_MAX_CHOICES + j], want);
    }
  }
  assert_true(it[0].n_cont[1] > 1); /* multi-token continuations are exercised */
  assert_int_equal(st.tokens, rows);
  /* contexts longer than the limit lose their beginning */
  int mk = 1;
  for (int j = 0; j < 4; j++) mk = it[2].n_cont[j] > mk ? it[2].n_cont[j] : mk;
  int limit = mk + 3, keep = limit - (mk - 1);
  assert_true(it[2].n_ctx > keep);
  qlm_mc_scorer *s8 = NULL;
  assert_int_equal(qlm_mc_scorer_new(m, 1, limit, 1, &s8, &err), 0);
  qlm_run_stats st8 = {0};
  double ll8[QLM_MC_MAX_CHOICES];
  if (qlm_mc_score(s8, &it[2], 1, ll8, &st8, &err)) fail_msg("%s", err.msg);
  assert_int_equal(st8.truncated, 1);
  double want = ref_loglik(m, it[2].ctx + it[2].n_ctx - keep, keep, it[2].cont[0], it[2].n_cont[0]);
  assert_true(fabs(ll8[0] - want) < 2e-3);
  qlm_mc_scorer_free(s8);
  for (int i = 0; i < 3; i++) qlm_mc_item_free(&it[i]);
  qlm_mc_scorer_free(s1);
  qlm_mc_scorer_free(s3);
  qlm_tokenizer_free(tok);
  qlm_model_free(m);
  qlm_source_close(src);
  free(sp);
}

/* ---- MMLU on the bigram model ---- */

static void test_mmlu_bigram(void **state) {
  (void)state;
  qlm_error err = {0};
  char *dir = tu_tmpdir(), path[700];
  /* the bigram copy: attention outputs and FFN down projections zeroed */
  snprintf(path, sizeof path, "%s/bigram.gguf", dir);
  tu_write_bigram_gguf(path);
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  qlm_tokenizer *tok = NULL;
  if (qlm_source_open(path, NULL, &src, &err)) fail_msg("%s", err.msg);
  assert_int_equal(qlm_model_load(src, &m, &err), 0);
  assert_int_equal(qlm_tokenizer_new(&src->vocab, &tok, &err), 0);

  /* log p(b | a) in closed form */
  const qlm_tensor *emb = qlm_source_tensor(src, "token_embd.weight"), *on = qlm_source_tensor(src, "output_norm.weight"),
                   *out = qlm_source_tensor(src, "output.weight");
  int E = (int)emb->ne[0], V = (int)emb->ne[1];
  const float *e = emb->data, *g = on->data, *o = out->data;

  /* expected letter per question: argmax over " A".." D" of the summed closed-form log-probability
   * of the continuation tokens (lm-eval's split: whole prompt+choice minus the prompt's tokens) */
  static const char *qs[4][5] = {{"What do cats like?", "milk", "rocks", "rain", "cars"},
                                 {"Who is Lily?", "a girl", "a dog", "a tree", "a boat"},
                                 {"Where is the sun?", "up", "down", "left", "right"},
                                 {"  Why did Tom cry? ", "sad", "hurt", "lost", "tired"}};
  char sub[800], csv[4096];
  snprintf(sub, sizeof sub, "%s/test", dir);
  assert_int_equal(mkdir(sub, 0700), 0);
  snprintf(sub, sizeof sub, "%s/dev", dir);
  assert_int_equal(mkdir(sub, 0700), 0);
  qlm_mmlu_subject tmp = {.name = "animal_stories"};
  qlm_mmlu_question dq = {.question = (char *)"Is the sky blue?", .choice = {"yes", "no", "maybe", "never"}, .answer = 0};
  tmp.dev = &dq;
  tmp.n_dev = 1;
  int want[2][4];
  double *lrow = malloc((size_t)V * sizeof *lrow), *xn = malloc((size_t)E * sizeof *xn);
  for (int shot = 0; shot < 2; shot++)
    for (int q = 0; q < 4; q++) {
      qlm_mmlu_question tq = {.question = (char *)qs[q][0], .choice = {(char *)qs[q][1], (char *)qs[q][2],
                                                                       (char *)qs[q][3], (char *)qs[q][4]}};
      char *prompt = qlm_mmlu_prompt(&tmp, &tq, shot);
      int32_t *ctx = NULL, *wh = NULL;
      int nc, nw;
      assert_int_equal(qlm_tokenize(tok, prompt, strlen(prompt), 0, 0, &ctx, &nc, &err), 0);
      double best = -INFINITY;
      for (int c = 0; c < 4; c++) {
        char whole[2048];
        snprintf(whole, sizeof whole, "%s%s", prompt, QLM_MMLU_CHOICES[c]);
        assert_int_equal(qlm_tokenize(tok, whole, strlen(whole), 0, 0, &wh, &nw, &err), 0);
        assert_true(nw > nc);
        double ll = 0;
        for (int t = nc; t < nw; t++) {
          int a = t == nc ? ctx[nc - 1] : wh[t - 1];
          double ss = 0, mx = -INFINITY, sum = 0;
          for (int j = 0; j < E; j++) ss += (double)e[(size_t)a * E + j] * e[(size_t)a * E + j];
          double sc = 1.0 / sqrt(ss / E + (double)src->hp.norm_eps);
          for (int j = 0; j < E; j++) xn[j] = e[(size_t)a * E + j] * sc * g[j];
          for (int b = 0; b < V; b++) {
            double d = 0;
            for (int j = 0; j < E; j++) d += (double)o[(size_t)b * E + j] * xn[j];
            lrow[b] = d;
            mx = d > mx ? d : mx;
          }
          for (int b = 0; b < V; b++) sum += exp(lrow[b] - mx);
          ll += lrow[wh[t]] - mx - log(sum);
        }
        if (ll > best) {
          best = ll;
          want[shot][q] = c;
        }
        free(wh);
      }
      free(ctx);
      free(prompt);
    }
  free(lrow);
  free(xn);
  /* answers: the 0-shot expectation, except question 3 which gets another letter */
  int n = snprintf(csv, sizeof csv, "question,choice0,choice1,choice2,choice3,answer\n");
  for (int q = 0; q < 4; q++)
    n += snprintf(csv + n, sizeof csv - (size_t)n, "\"%s\",%s,%s,%s,%s,%d\n", qs[q][0], qs[q][1], qs[q][2], qs[q][3],
                  qs[q][4], q == 2 ? (want[0][q] + 1) % 4 : want[0][q]);
  snprintf(sub, sizeof sub, "%s/test/animal_stories_test.csv", dir);
  tu_write_file(sub, csv, strlen(csv));
  const char *dev = "question,choice0,choice1,choice2,choice3,answer\nIs the sky blue?,yes,no,maybe,never,0\n";
  char devp[800];
  snprintf(devp, sizeof devp, "%s/dev/animal_stories_dev.csv", dir);
  tu_write_file(devp, dev, strlen(dev));

  qlm_mmlu_subject *subj = NULL;
  int ns = 0;
  assert_int_equal(qlm_mmlu_load(dir, NULL, &subj, &ns, &err), 0);
  assert_int_equal(ns, 1);
  assert_string_equal(subj[0].name, "animal_stories");
  assert_int_equal(subj[0].n_test, 4);
  assert_int_equal(subj[0].n_dev, 1);
  qlm_mc_scorer *sc = NULL;
  assert_int_equal(qlm_mc_scorer_new(m, 3, 0, 2, &sc, &err), 0);
  for (int shot = 0; shot < 2; shot++) {
    int pred[4];
    qlm_run_stats rs = {0};
    assert_int_equal(qlm_mmlu_eval(sc, tok, &subj[0], shot, 0, 0, 3, pred, &rs, &err), 0);
    int correct = 0;
    for (int q = 0; q < 4; q++) {
      assert_int_equal(pred[q], want[shot][q]);
      correct += pred[q] == subj[0].test[q].answer;
    }
    if (shot == 0) assert_int_equal(correct, 3);
    assert_true(rs.tokens > 0);
  }
  qlm_mc_scorer_free(sc);
  qlm_mmlu_free(subj, ns);
  /* a named subject that does not exist is an I/O error naming the file */
  assert_int_equal(qlm_mmlu_load(dir, "no_such_subject", &subj, &ns, &err), QLM_EIO);
  assert_non_null(strstr(err.msg, "no_such_subject_test.csv"));
  assert_int_equal(qlm_mmlu_load(dir, "../etc", &subj, &ns, &err), QLM_EUSAGE);
  remove(sub);
  remove(devp);
  snprintf(sub, sizeof sub, "%s/test", dir);
  rmdir(sub);
  snprintf(sub, sizeof sub, "%s/dev", dir);
  rmdir(sub);
  qlm_tokenizer_free(tok);
  qlm_model_free(m);
  qlm_source_close(src);
  remove(path);
  rmdir(dir);
  free(dir);
}

/* Every subject's category equals lm-evaluation-harness's own table (tests/data/mmlu/categories.tsv,
 * written from the installed lm-eval by tools/gen_mmlu_categories.py), and all 57 are there. */
static void test_categories_match_lm_eval(void **state) {
  (void)state;
  char *path = tu_testdata("mmlu/categories.tsv");
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[256];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char *tab = strchr(line, '\t'), *nl = strchr(line, '\n');
    assert_non_null(tab);
    if (nl) *nl = 0;
    *tab = 0;
    const char *cat = qlm_mmlu_category(line);
    assert_non_null(cat);
    assert_string_equal(cat, tab + 1);
    n++;
  }
  fclose(f);
  free(path);
  assert_int_equal(n, 57);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_csv),
      cmocka_unit_test(test_scorer_matches_forward),
      cmocka_unit_test(test_mmlu_bigram),
      cmocka_unit_test(test_categories_match_lm_eval),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
