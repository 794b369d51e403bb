/* cmd_mmlu.c — `qlm mmlu`: MMLU multiple-choice accuracy, zero- or few-shot, in
 * lm-evaluation-harness's prompt format, scored by the log-likelihood of " A".." D". */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/shared_dir.h"
#include "cli/cli.h"
#include "cli/mem_plan.h"
#include "eval/classify.h"
#include "eval/mmlu.h"
#include "eval/results.h"
#include "model/model.h"

typedef struct mmlu_opts {
  const char *model, *tokenizer, *data, *subjects;
  long shots, limit, batch, threads, max_tokens;
  int bos, json, quiet;
  cli_measure cm;       /* --country, --emissions, ... */
} mmlu_opts;

static const char *default_data(void) {
  static char buf[1024];
  return qlm_shared_path("data/mmlu", buf, sizeof buf);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm mmlu [-m MODEL] [--shots 0|5] [--subjects a,b,...] [options]\n\n"
          "MMLU accuracy as lm-evaluation-harness computes it: per question the prompt\n"
          "  \"The following are multiple choice questions (with answers) about <subject>.\\n\\n\"\n"
          "  + N dev examples \"<q>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: <X>\\n\\n\" + the question ending \"Answer:\",\n"
          "and the answer is the letter whose continuation \" A\"..\" D\" has the highest log-likelihood.\n"
          "Prints accuracy per subject, per category (stem, humanities, social sciences, other; size-weighted),\n"
          "the macro average (mean over subjects) and the micro average (over all questions).\n\n"
          "  -m, --model PATH      model (default %s)\n"
          "      --tokenizer PATH  tokenizer overriding the model's\n"
          "      --data DIR        MMLU folder with test/ and dev/ (default %s)\n"
          "      --subjects LIST   comma list of subjects (default: all 57)\n"
          "  -k, --shots N         dev examples per prompt, 0..5 (default 0)\n"
          "      --limit N         first N test questions per subject (quick runs)\n"
          "  -b, --batch N         questions per forward call, one sequence each, no padding (default 1)\n"
          "      --max-tokens N    context limit; longer prompts lose their beginning (default: the model's)\n"
          "      --bos             add BOS/EOS as the vocab says (lm-eval adds none)\n"
          "  -t, --threads N       threads (default %d)\n"
          "      --json            JSON result records: one per subject, then the overall one\n"
          "  -q, --quiet           no progress on stderr\n\n",
          cli_default_model(), default_data(), cli_default_threads());
  fputs(cli_measure_help, f);
  fputs(cli_db_help, f);
}

static int parse_opts(int argc, char **argv, mmlu_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},  {"tokenizer", required_argument, 0, 'T'}, {"data", required_argument, 0, 'D'},
      {"subjects", required_argument, 0, 'S'}, {"shots", required_argument, 0, 'k'},   {"limit", required_argument, 0, 'n'},
      {"batch", required_argument, 0, 'b'},  {"max-tokens", required_argument, 0, 'X'}, {"bos", no_argument, 0, 'B'},
      {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'J'},           {"quiet", no_argument, 0, 'q'},
      CLI_MEASURE_OPTIONS, CLI_DB_OPTION,
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  *o = (mmlu_opts){.threads = cli_default_threads(), .batch = 1};
  cli_measure_init(&o->cm, "mmlu");
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:k:b:t:qh", opts, NULL)) != -1) {
    if (c >= CLI_MEASURE_FIRST) {
      rc = cli_measure_opt(&o->cm, c, optarg, err);
      continue;
    }
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'T': o->tokenizer = optarg; break;
    case 'D': o->data = optarg; break;
    case 'S': o->subjects = optarg; break;
    case 'k': rc = cli_parse_int("--shots", optarg, 0, 5, &o->shots, err); break;
    case 'n': rc = cli_parse_int("--limit", optarg, 1, 1 << 20, &o->limit, err); break;
    case 'b': rc = cli_parse_int("--batch", optarg, 1, 256, &o->batch, err); break;
    case 'X': rc = cli_parse_int("--max-tokens", optarg, 16, 1 << 20, &o->max_tokens, err); break;
    case 'B': o->bos = 1; break;
    case 't': rc = cli_parse_int("--threads", optarg, 1, 256, &o->threads, err); break;
    case 'J': o->json = 1; break;
    case 'q': o->quiet = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return qlm_fail(err, QLM_EUSAGE, "mmlu: bad option (see qlm mmlu --help)");
    }
  }
  if (!rc && optind < argc) rc = qlm_fail(err, QLM_EUSAGE, "mmlu: unexpected argument '%s'", argv[optind]);
  if (!o->model) o->model = cli_default_model();
  if (!o->data) o->data = default_data();
  return rc;
}

static const char *const CATS[4] = {"stem", "humanities", "social_sciences", "other"};

static int subject_record(const qlm_source *src, const mmlu_opts *o, const char *protocol, const char *subject,
                          int n, int correct, const qlm_run_stats *st, qlm_error *err) {
  qlm_result r;
  qlm_result_init(&r, "mmlu", src);
  snprintf(r.protocol, sizeof r.protocol, "%s", protocol);
  snprintf(r.data, sizeof r.data, "%s", o->data);
  r.tokens = st->tokens;
  r.seconds = st->seconds;
  const char *cat = qlm_mmlu_category(subject);
  int rc = qlm_result_add(&r, "acc", n ? (double)correct / n : NAN, err) || qlm_result_add(&r, "n", n, err) ||
           qlm_result_set(&r, "subject", subject, err) || qlm_result_set(&r, "category", cat ? cat : "unknown", err);
  return rc ? rc : qlm_result_print_json(&r, stdout, err);
}

/* The scorer's state over every question this run scores (mem_plan.h), as a load plan: the longest
 * prompt's context x --batch sequences, QLM_MC_ROWS rows of scratch and of logits. */
static int plan_state(const qlm_source *src, const qlm_tokenizer *tok, const mmlu_opts *o, const qlm_mmlu_subject *subj,
                      int n_subj, qlm_load_plan *lp, char *desc, size_t desc_cap, qlm_error *err) {
  cli_mc_need need;
  cli_mc_need_init(&need, (int)o->max_tokens, src->hp.n_ctx);
  for (int i = 0; i < n_subj; i++) {
    const qlm_mmlu_subject *s = &subj[i];
    int n = o->limit && o->limit < s->n_test ? (int)o->limit : s->n_test;
    for (int q = 0; q < n; q++) {
      char *prompt = qlm_mmlu_prompt(s, &s->test[q], (int)o->shots);
      if (!prompt) return qlm_fail(err, QLM_ENOMEM, "mmlu: out of memory building a prompt");
      int rc = cli_mc_need_add(&need, tok, prompt, QLM_MMLU_CHOICES, 4, o->bos, err);
      free(prompt);
      if (rc) return qlm_fail_prefix(err, "%s question %d", s->name, q + 1);
    }
  }
  int ctx = qlm_mc_state_ctx(need.need, need.limit);
  snprintf(desc, desc_cap, "at %d positions (longest prompt) x --batch %ld", ctx, o->batch);
  *lp = (qlm_load_plan){.n_seq = (int)o->batch, .n_ctx = ctx, .max_batch = QLM_MC_ROWS, .n_threads = (int)o->threads,
                        .extra_bytes = (uint64_t)QLM_MC_ROWS * (uint64_t)src->hp.n_vocab * sizeof(float),
                        .ctx_desc = desc, .hint = "use a smaller --batch or --max-tokens, or a quantized file"};
  return QLM_OK;
}

int cmd_mmlu(int argc, char **argv) {
  qlm_error err = {0};
  mmlu_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  qlm_source *src = NULL;
  qlm_tokenizer *tok = NULL;
  qlm_model *model = NULL;
  qlm_mmlu_subject *subj = NULL;
  qlm_mc_scorer *sc = NULL;
  int n_subj = 0, *pred = NULL;
  qlm_meter *meter = cli_measure_start(&o.cm);
  if (meter) qlm_meter_begin(meter, QLM_PHASE_LOAD);
  int rc = qlm_source_open(o.model, o.tokenizer, &src, &err);
  if (!rc && src->vocab.kind == QLM_TOK_NONE) rc = qlm_fail(&err, QLM_EUSAGE, "%s: no tokenizer found", o.model);
  if (!rc) rc = qlm_tokenizer_new(&src->vocab, &tok, &err);
  if (!rc) rc = qlm_mmlu_load(o.data, o.subjects, &subj, &n_subj, &err);
  qlm_load_plan lp;
  char desc[96];
  if (!rc) rc = plan_state(src, tok, &o, subj, n_subj, &lp, desc, sizeof desc, &err);
  if (!rc) rc = qlm_model_load_planned(src, &lp, &model, &err);
  if (!rc) rc = qlm_mc_scorer_new(model, (int)o.batch, (int)o.max_tokens, (int)o.threads, &sc, &err);
  char protocol[32];
  snprintf(protocol, sizeof protocol, "lm-eval-%ldshot", o.shots);
  qlm_run_stats total = {0};
  int64_t n_all = 0, c_all = 0, cat_n[4] = {0}, cat_c[4] = {0};
  double macro = 0;
  if (!rc) qlm_peak_rss_reset();
  if (!rc && meter) { /* weights as stored */
    uint64_t wbytes = 0;
    for (int i = 0; i < src->n_tensors; i++) wbytes += src->tensors[i].nbytes;
    qlm_meter_set_bytes(meter, wbytes, 0);
    qlm_meter_begin(meter, QLM_PHASE_EVAL);
    qlm_meter_set_bytes(meter, wbytes, 0);
  }
  if (!rc && !o.json) {
    printf("model %s | MMLU %s, %ld-shot (dev examples), %s%s\n", o.model, o.data, o.shots,
           o.limit ? "first questions per subject only (--limit)" : "all test questions", o.bos ? ", BOS added" : "");
    printf("%-40s %6s %8s %9s\n", "subject", "n", "acc", "time s");
  }
  for (int i = 0; !rc && i < n_subj; i++) {
    const qlm_mmlu_subject *s = &subj[i];
    int n = o.limit && o.limit < s->n_test ? (int)o.limit : s->n_test, correct = 0;
    if (!(pred = qlm_malloc((size_t)(n ? n : 1) * sizeof *pred, "predictions", &err))) {
      rc = QLM_ENOMEM;
      break;
    }
    if (o.shots > s->n_dev)
      fprintf(stderr, "qlm: warning: %s has only %d dev examples for %ld shots\n", s->name, s->n_dev, o.shots);
    qlm_run_stats st = {0};
    rc = qlm_mmlu_eval(sc, tok, s, (int)o.shots, n, o.bos, (int)o.batch, pred, &st, &err);
    for (int q = 0; !rc && q < n; q++) correct += pred[q] == s->test[q].answer;
    free(pred);
    pred = NULL;
    if (rc) break;
    n_all += n;
    c_all += correct;
    macro += n ? (double)correct / n : 0;
    total.tokens += st.tokens;
    if (meter) qlm_meter_add_tokens(meter, (uint64_t)st.tokens);
    total.seconds += st.seconds;
    total.truncated += st.truncated;
    const char *cat = qlm_mmlu_category(s->name);
    for (int k = 0; k < 4; k++)
      if (cat && !strcmp(cat, CATS[k])) {
        cat_n[k] += n;
        cat_c[k] += correct;
      }
    if (o.json) rc = subject_record(src, &o, protocol, s->name, n, correct, &st, &err);
    else printf("%-40s %6d %8.4f %9.2f\n", s->name, n, n ? (double)correct / n : NAN, st.seconds);
    if (!o.quiet && o.json) fprintf(stderr, "%s: %d/%d\n", s->name, correct, n);
    fflush(stdout);
  }
  int64_t peak = qlm_peak_rss_bytes();
  if (!rc) {
    qlm_result r;
    qlm_result_init(&r, "mmlu", src);
    snprintf(r.protocol, sizeof r.protocol, "%s", protocol);
    snprintf(r.data, sizeof r.data, "%s", o.data);
    r.tokens = total.tokens;
    r.seconds = total.seconds;
    char buf[64];
    rc = qlm_result_add(&r, "acc_micro", n_all ? (double)c_all / n_all : NAN, &err) ||
         qlm_result_add(&r, "acc_macro", n_subj ? macro / n_subj : NAN, &err) ||
         qlm_result_add(&r, "n", (double)n_all, &err) || qlm_result_add(&r, "subjects", n_subj, &err) ||
         qlm_result_add(&r, "truncated", (double)total.truncated, &err) ||
         qlm_result_add(&r, "peak_rss_mb", peak >= 0 ? peak / 1048576.0 : NAN, &err);
    for (int k = 0; !rc && k < 4; k++) {
      char name[40];
      snprintf(name, sizeof name, "acc_%s", CATS[k]);
      rc = qlm_result_add(&r, name, cat_n[k] ? (double)cat_c[k] / cat_n[k] : NAN, &err);
    }
    snprintf(buf, sizeof buf, "%ld", o.shots);
    rc = rc || qlm_result_set(&r, "shots", buf, &err) || qlm_result_set(&r, "bos", o.bos ? "yes" : "no", &err);
    snprintf(buf, sizeof buf, "%ld", o.batch);
    rc = rc || qlm_result_set(&r, "batch", buf, &err);
    if (!rc && o.limit) {
      snprintf(buf, sizeof buf, "%ld", o.limit);
      rc = qlm_result_set(&r, "limit_per_subject", buf, &err);
    }
    if (!rc && o.cm.db) { /* --db: the overall record, with the phases, by cli_measure_end */
      cli_db_set_model(src);
      rc = cli_db_add_result(&r, &err);
    }
    if (!rc && o.json) rc = qlm_result_print_json(&r, stdout, &err);
    else if (!rc) {
      printf("\n");
      for (int k = 0; k < 4; k++)
        if (cat_n[k]) printf("%-40s %6lld %8.4f\n", CATS[k], (long long)cat_n[k], (double)cat_c[k] / cat_n[k]);
      printf("%-40s %6lld %8.4f\n", "macro average (mean over subjects)", (long long)n_all, n_subj ? macro / n_subj : NAN);
      printf("%-40s %6lld %8.4f\n", "micro average (over questions)", (long long)n_all,
             n_all ? (double)c_all / n_all : NAN);
      printf("time %.2f s | %lld tokens (%.1f tokens/s) | peak memory %.1f MiB | batch %ld (no padding)\n",
             total.seconds, (long long)total.tokens, total.seconds > 0 ? total.tokens / total.seconds : 0.0,
             peak >= 0 ? peak / 1048576.0 : NAN, o.batch);
      if (total.truncated) printf("%lld prompts lost their beginning to fit the context\n", (long long)total.truncated);
    }
  }
  qlm_mc_scorer_free(sc);
  qlm_mmlu_free(subj, n_subj);
  qlm_model_free(model);
  qlm_tokenizer_free(tok);
  qlm_source_close(src);
  int mrc = cli_measure_end(&o.cm, meter, o.quiet || rc);
  return rc ? cli_report(&err) : mrc;
}
