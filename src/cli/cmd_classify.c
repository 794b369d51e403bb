/* cmd_classify.c — `qlm classify train|eval|zeroshot`: sentiment classification (TweetEval) with
 * a frozen model: a logistic-regression head on final hidden states, or zero-shot prompting. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/shared_dir.h"
#include "cli/cli.h"
#include "cli/mem_plan.h"
#include "eval/classify.h"
#include "eval/mmlu.h"
#include "eval/results.h"
#include "model/model.h"

enum { MAX_BATCHES = 8 };

typedef struct cls_opts {
  const char *mode, *model, *tokenizer, *data, *head, *out, *template_, *labels;
  int feature, json, quiet, n_batch;
  long batches[MAX_BATCHES], threads, limit, folds, seed, max_tokens;
  double l2;
  cli_measure cm;       /* --country, --emissions, ... */
} cls_opts;

static const char *default_data(void) {
  static char buf[1024];
  return qlm_shared_path("data/tweeteval-sentiment", buf, sizeof buf);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm classify train    -m BASE [--out HEAD] [options]\n"
          "       qlm classify eval     -m MODEL --head HEAD [--batch 1,32,64] [options]\n"
          "       qlm classify zeroshot -m MODEL [--batch 1,32,64] [options]\n\n"
          "Sentiment classification on TweetEval (0 negative, 1 neutral, 2 positive) with a frozen model.\n"
          "  train     extracts one feature per tweet (final-norm hidden state of the last token, or the mean\n"
          "            over the tweet's tokens) and fits a multinomial logistic-regression head (L2, seeded,\n"
          "            L-BFGS).  TweetEval's train text is not in the shared data, so without train_text.txt\n"
          "            the head is trained on the 2,000-tweet validation split: 10%% held out for early\n"
          "            stopping, k-fold cross-validation on the rest chooses the L2 strength.\n"
          "  eval      runs MODEL (any quantization) with the head on the test split (12,284 tweets).\n"
          "  zeroshot  picks the label word with the highest log-probability after a prompt (no head).\n"
          "eval and zeroshot print accuracy, macro-F1, scikit-learn's classification_report and the confusion\n"
          "matrix, and time and peak memory per batch size.  Batched tweets run as separate sequences of one\n"
          "forward call: qlm needs no padding, so results do not depend on the batch size.\n\n"
          "  -m, --model PATH      model (default %s)\n"
          "      --tokenizer PATH  tokenizer overriding the model's\n"
          "      --data DIR        TweetEval folder (default %s)\n"
          "      --head FILE       head to evaluate (eval)\n"
          "  -o, --out FILE        where train writes the head (default head.json)\n"
          "      --feature K       last | mean (train; default last)\n"
          "      --folds K         cross-validation folds (train; default 5)\n"
          "      --l2 X            fixed L2 strength instead of cross-validation (train)\n"
          "      --seed N          seed of the split, folds and initial weights (default 1)\n"
          "  -b, --batch LIST      tweets per forward call, comma list of sizes to time (default 32)\n"
          "      --limit N         only the first N tweets of the split (quick runs)\n"
          "      --max-tokens N    longest prompt in tokens (default: the model's context)\n"
          "      --template T      zero-shot prompt, {text} is the tweet (default below)\n"
          "      --labels A,B,C    zero-shot label words, each scored after a space (default negative,neutral,positive)\n"
          "  -t, --threads N       threads (default %d)\n"
          "      --json            one JSON result record per batch size on stdout\n"
          "  -q, --quiet           no progress on stderr\n\n"
          "default zero-shot prompt (our own: seed 000's exact prompt is not in the shared notes):\n  \"%s\"\n",
          cli_default_model(), default_data(), cli_default_threads(), QLM_ZEROSHOT_TEMPLATE);
  fputs("\n", f);
  fputs(cli_measure_help, f);
  fputs(cli_db_help, f);
}

static int parse_batches(const char *s, cls_opts *o, qlm_error *err) {
  o->n_batch = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *sv = NULL, *t = strtok_r(buf, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) {
    if (o->n_batch == MAX_BATCHES) return qlm_fail(err, QLM_EUSAGE, "--batch: at most %d sizes", MAX_BATCHES);
    int rc = cli_parse_int("--batch", t, 1, 1024, &o->batches[o->n_batch++], err);
    if (rc) return rc;
  }
  return o->n_batch ? QLM_OK : qlm_fail(err, QLM_EUSAGE, "--batch: no sizes given");
}

static int parse_opts(int argc, char **argv, cls_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},    {"tokenizer", required_argument, 0, 'T'}, {"data", required_argument, 0, 'D'},
      {"head", required_argument, 0, 'H'},     {"out", required_argument, 0, 'o'},       {"feature", required_argument, 0, 'F'},
      {"folds", required_argument, 0, 'k'},    {"l2", required_argument, 0, 'L'},        {"seed", required_argument, 0, 's'},
      {"batch", required_argument, 0, 'b'},    {"limit", required_argument, 0, 'n'},     {"max-tokens", required_argument, 0, 'X'},
      {"template", required_argument, 0, 'P'}, {"labels", required_argument, 0, 'W'},    {"threads", required_argument, 0, 't'},
      {"json", no_argument, 0, 'J'},           {"quiet", no_argument, 0, 'q'},           {"help", no_argument, 0, 'h'},
      CLI_MEASURE_OPTIONS,                     CLI_DB_OPTION, {0, 0, 0, 0}};
  *o = (cls_opts){.threads = cli_default_threads(), .folds = 5, .seed = 1, .l2 = -1, .n_batch = 1, .batches = {32}};
  cli_measure_init(&o->cm, "classify");
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(argc < 2 ? stderr : stdout);
    if (argc < 2) return qlm_fail(err, QLM_EUSAGE, "classify: give a mode (train, eval, zeroshot)");
    exit(0);
  }
  o->mode = argv[1];
  if (strcmp(o->mode, "train") && strcmp(o->mode, "eval") && strcmp(o->mode, "zeroshot"))
    return qlm_fail(err, QLM_EUSAGE, "classify: unknown mode '%s' (train, eval, zeroshot)", o->mode);
  int c, rc = 0;
  optind = 2;
  while (!rc && (c = getopt_long(argc, argv, "m:o:b:t:qh", opts, NULL)) != -1) {
    if (c >= CLI_MEASURE_FIRST) {
      rc = cli_measure_opt(&o->cm, c, optarg, err);
      continue;
    }
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'T': o->tokenizer = optarg; break;
    case 'D': o->data = optarg; break;
    case 'H': o->head = optarg; break;
    case 'o': o->out = optarg; break;
    case 'F':
      if ((o->feature = qlm_feature_kind_parse(optarg)) < 0) rc = qlm_fail(err, QLM_EUSAGE, "--feature: '%s' (last, mean)", optarg);
      break;
    case 'k': rc = cli_parse_int("--folds", optarg, 2, 20, &o->folds, err); break;
    case 'L': rc = cli_parse_float("--l2", optarg, 0, 1e6, &o->l2, err); break;
    case 's': rc = cli_parse_int("--seed", optarg, 0, __LONG_MAX__, &o->seed, err); break;
    case 'b': rc = parse_batches(optarg, o, err); break;
    case 'n': rc = cli_parse_int("--limit", optarg, 1, QLM_CLS_MAX_TEXTS, &o->limit, err); break;
    case 'X': rc = cli_parse_int("--max-tokens", optarg, 8, 1 << 20, &o->max_tokens, err); break;
    case 'P': o->template_ = optarg; break;
    case 'W': o->labels = optarg; break;
    case 't': rc = cli_parse_int("--threads", optarg, 1, 256, &o->threads, err); break;
    case 'J': o->json = 1; break;
    case 'q': o->quiet = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return qlm_fail(err, QLM_EUSAGE, "classify: bad option (see qlm classify --help)");
    }
  }
  if (!rc && optind < argc) rc = qlm_fail(err, QLM_EUSAGE, "classify: unexpected argument '%s'", argv[optind]);
  if (!rc && !strcmp(o->mode, "eval") && !o->head) rc = qlm_fail(err, QLM_EUSAGE, "classify eval: --head is required");
  if (!o->model) o->model = cli_default_model();
  if (!o->data) o->data = default_data();
  if (!o->out) o->out = "head.json";
  return rc;
}

typedef struct cls_session {
  const cls_opts *o;
  qlm_source *src;
  qlm_tokenizer *tok;
  qlm_model *model;
  char names[QLM_CLS_MAX_CLASSES][32];
  const char *name_ptr[QLM_CLS_MAX_CLASSES];
  int n_class;
  double last_progress;
  qlm_meter *meter;     /* NULL when measurement could not start */
} cls_session;

static void session_free(cls_session *s) {
  qlm_model_free(s->model);
  qlm_tokenizer_free(s->tok);
  qlm_source_close(s->src);
}

static int open_session(const cls_opts *o, cls_session *s, qlm_error *err) {
  s->o = o;
  char path[1200];
  snprintf(path, sizeof path, "%s/mapping.txt", o->data);
  int rc = qlm_class_names_load(path, s->names, &s->n_class, err);
  for (int c = 0; c < s->n_class; c++) s->name_ptr[c] = s->names[c];
  if (!rc) rc = qlm_source_open(o->model, o->tokenizer, &s->src, err);
  if (!rc && s->src->vocab.kind == QLM_TOK_NONE)
    rc = qlm_fail(err, QLM_EUSAGE, "%s: no tokenizer found; give one with --tokenizer", o->model);
  if (!rc) rc = qlm_tokenizer_new(&s->src->vocab, &s->tok, err);
  return rc; /* the model is loaded by load_model, once the texts say how big the state will be */
}

/* Load the model with the memory check of what the run will allocate (model.h qlm_load_plan):
 * the features' state (`batch` sequences of ctx positions, QLM_FEAT_ROWS rows of scratch and of
 * hidden states, eval/classify.c) or the zero-shot scorer's (`batch` sequences of ctx positions,
 * QLM_MC_ROWS rows of scratch and of logits, eval/mmlu.c), plus the command's own `extra` bytes. */
static int load_model(cls_session *s, int zeroshot, long batch, int ctx, uint64_t extra, qlm_error *err) {
  const qlm_hparams *hp = &s->src->hp;
  uint64_t rows = zeroshot ? QLM_MC_ROWS : QLM_FEAT_ROWS;
  extra += rows * (uint64_t)(zeroshot ? hp->n_vocab : hp->n_embd) * sizeof(float);
  char desc[96];
  snprintf(desc, sizeof desc, "at %d positions (longest %s) x --batch %ld", ctx, zeroshot ? "prompt" : "tweet", batch);
  qlm_load_plan lp = {.n_seq = (int)batch, .n_ctx = ctx, .max_batch = (int)rows, .n_threads = (int)s->o->threads,
                      .extra_bytes = extra, .ctx_desc = desc,
                      .hint = "use a smaller --batch or --max-tokens, or a quantized file"};
  int rc = qlm_model_load_planned(s->src, &lp, &s->model, err);
  if (!rc && s->meter) { /* the load phase ends here; weights as stored */
    uint64_t wbytes = 0;
    for (int i = 0; i < s->src->n_tensors; i++) wbytes += s->src->tensors[i].nbytes;
    qlm_meter_set_bytes(s->meter, wbytes, 0);
    qlm_meter_begin(s->meter, QLM_PHASE_EVAL);
    qlm_meter_set_bytes(s->meter, wbytes, 0);
  }
  return rc;
}

/* The zero-shot scorer's context over texts[0..n) (mem_plan.h). */
static int zeroshot_ctx(const cls_session *s, char *const *texts, int n, const char *tpl, const char *const *words,
                        int n_words, int *ctx, qlm_error *err) {
  cli_mc_need need;
  cli_mc_need_init(&need, (int)s->o->max_tokens, s->src->hp.n_ctx);
  for (int i = 0; i < n; i++) {
    char *prompt = qlm_zeroshot_prompt(tpl, texts[i]);
    if (!prompt) return qlm_fail(err, QLM_ENOMEM, "zero-shot: out of memory building a prompt");
    int rc = cli_mc_need_add(&need, s->tok, prompt, words, n_words, 1, err);
    free(prompt);
    if (rc) return qlm_fail_prefix(err, "text %d", i + 1);
  }
  *ctx = qlm_mc_state_ctx(need.need, need.limit);
  return QLM_OK;
}

/* The largest of the --batch sizes (states are made one batch size at a time). */
static long max_batch_size(const cls_opts *o) {
  long b = 1;
  for (int i = 0; i < o->n_batch; i++)
    if (o->batches[i] > b) b = o->batches[i];
  return b;
}

static int load_split(const cls_session *s, const char *split, qlm_textset *t, qlm_error *err) {
  char tp[1200], lp[1200];
  snprintf(tp, sizeof tp, "%s/%s_text.txt", s->o->data, split);
  snprintf(lp, sizeof lp, "%s/%s_labels.txt", s->o->data, split);
  return qlm_textset_load(tp, lp, s->n_class, (int)s->o->limit, t, err);
}

static void progress(void *ctx, int done, int total) {
  cls_session *s = ctx;
  int tty = isatty(2);
  if (s->o->quiet) return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
  if (!tty && t - s->last_progress < 10 && done < total) return;
  s->last_progress = t;
  fprintf(stderr, "%s[%d/%d texts] %5.1f%%%s", tty ? "\r" : "", done, total, 100.0 * done / total,
          tty ? (done == total ? "\n" : "") : "\n");
}

static int file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

/* ---- train ---- */

static int cmd_train(cls_session *s, qlm_error *err) {
  const cls_opts *o = s->o;
  char tp[1200];
  snprintf(tp, sizeof tp, "%s/train_text.txt", o->data);
  int have_train = file_exists(tp), E = s->src->hp.n_embd, rc, ctx_tr = 1, ctx_va = 1;
  qlm_textset tr = {0}, va = {0};
  rc = load_split(s, "val", &va, err);
  if (!rc && have_train) rc = load_split(s, "train", &tr, err);
  /* features of every row, and without a train split their shuffled copy */
  uint64_t feat_bytes = (uint64_t)(have_train ? tr.n + va.n : 2 * va.n) * (uint64_t)E * sizeof(float);
  if (!rc && have_train) rc = cli_features_ctx(s->tok, tr.text, tr.n, (int)o->max_tokens, s->src->hp.n_ctx, &ctx_tr, err);
  if (!rc) rc = cli_features_ctx(s->tok, va.text, va.n, (int)o->max_tokens, s->src->hp.n_ctx, &ctx_va, err);
  if (!rc) rc = load_model(s, 0, o->batches[0], ctx_tr > ctx_va ? ctx_tr : ctx_va, feat_bytes, err);
  const char *trained_on = have_train ? "TweetEval train split (validation split for early stopping)"
                                      : "TweetEval validation split (2,000 tweets; train text unavailable): 90% "
                                        "fit with k-fold CV for L2, 10% held out for early stopping";
  char trained_buf[200];
  if (o->limit) { /* say that only a slice was used */
    snprintf(trained_buf, sizeof trained_buf, "%.150s; first %ld tweets only (--limit)", trained_on, o->limit);
    trained_on = trained_buf;
  }
  if (!o->quiet) fprintf(stderr, "training data: %s\n", trained_on);
  /* the rows: (train, held-out) */
  int n_all = have_train ? tr.n + va.n : va.n;
  float *F = rc ? NULL : qlm_malloc((size_t)n_all * E * sizeof *F, "features", err);
  int *y = rc ? NULL : qlm_malloc((size_t)n_all * sizeof *y, "labels", err);
  if (!rc && (!F || !y)) rc = QLM_ENOMEM;
  qlm_run_stats st = {0};
  long batch = o->batches[0];
  if (!rc && have_train)
    rc = qlm_features_extract(s->model, s->tok, tr.text, tr.n, o->feature, (int)batch, (int)o->max_tokens,
                              (int)o->threads, F, &st, progress, s, err);
  int off = have_train ? tr.n : 0;
  if (!rc)
    rc = qlm_features_extract(s->model, s->tok, va.text, va.n, o->feature, (int)batch, (int)o->max_tokens,
                              (int)o->threads, F + (size_t)off * E, &st, progress, s, err);
  if (!rc && s->meter) qlm_meter_add_tokens(s->meter, (uint64_t)st.tokens);
  int n_fit = 0, n_hold = 0;
  float *Xf = NULL, *Xh = NULL;
  int *yf = NULL, *yh = NULL;
  if (!rc) {
    if (have_train) {
      memcpy(y, tr.label, (size_t)tr.n * sizeof *y);
      memcpy(y + tr.n, va.label, (size_t)va.n * sizeof *y);
      n_fit = tr.n;
      n_hold = va.n;
      Xf = F;
      yf = y;
      Xh = F + (size_t)tr.n * E;
      yh = y + tr.n;
    } else {
      /* seeded shuffle of the validation rows, last 10% held out */
      uint64_t seed = (uint64_t)o->seed * 0x9E3779B97F4A7C15ull + 1;
      int n = va.n, *perm = qlm_malloc((size_t)n * sizeof *perm, "permutation", err);
      float *G = qlm_malloc((size_t)n * E * sizeof *G, "features", err);
      if (!perm || !G) rc = QLM_ENOMEM;
      for (int i = 0; !rc && i < n; i++) perm[i] = i;
      for (int i = n - 1; !rc && i > 0; i--) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        int j = (int)(seed % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
      }
      for (int i = 0; !rc && i < n; i++) {
        memcpy(G + (size_t)i * E, F + (size_t)perm[i] * E, (size_t)E * sizeof *G);
        y[i] = va.label[perm[i]];
      }
      free(perm);
      if (!rc) {
        free(F);
        F = G;
      } else {
        free(G);
      }
      n_hold = n / 10 > 0 ? n / 10 : 1;
      n_fit = n - n_hold;
      Xf = F;
      yf = y;
      Xh = F + (size_t)n_fit * E;
      yh = y + n_fit;
    }
  }
  static const double grid[] = {1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0};
  enum { NG = sizeof grid / sizeof grid[0] };
  double cv_acc[NG], l2 = o->l2;
  qlm_logreg_opts lo = {.seed = (uint64_t)o->seed, .max_iter = 300};
  int best = 0;
  if (!rc && n_fit < 2) rc = qlm_fail(err, QLM_EUSAGE, "classify train: only %d training tweets", n_fit);
  if (!rc && l2 < 0) {
    if (!o->quiet) fprintf(stderr, "cross-validating L2 over %d values, %ld folds ...\n", NG, o->folds);
    rc = qlm_logreg_cv(Xf, yf, n_fit, E, s->n_class, grid, NG, (int)(o->folds < n_fit ? o->folds : n_fit), &lo,
                       cv_acc, &best, err);
    l2 = grid[best];
  }
  qlm_logreg lr = {0};
  qlm_logreg_info info = {0};
  lo.l2 = l2;
  lo.max_iter = 1000;
  if (!rc) rc = qlm_logreg_fit(Xf, yf, n_fit, E, s->n_class, Xh, yh, n_hold, &lo, &lr, &info, err);
  double acc_fit = 0, acc_hold = 0;
  for (int i = 0; !rc && i < n_fit; i++) acc_fit += qlm_logreg_predict(&lr, Xf + (size_t)i * E, NULL) == yf[i];
  for (int i = 0; !rc && i < n_hold; i++) acc_hold += qlm_logreg_predict(&lr, Xh + (size_t)i * E, NULL) == yh[i];
  if (!rc) {
    acc_fit /= n_fit;
    acc_hold /= n_hold;
    char dim[32], l2s[32];
    snprintf(dim, sizeof dim, "%d", E);
    snprintf(l2s, sizeof l2s, "%g", l2);
    const char *kv[] = {"feature", qlm_feature_kind_name(o->feature), "base_model", o->model, "trained_on", trained_on,
                        "n_embd", dim, "l2", l2s};
    rc = qlm_logreg_save(o->out, &lr, kv, 5, err);
  }
  if (!rc) {
    qlm_result r;
    qlm_result_init(&r, "classify-train", s->src);
    snprintf(r.protocol, sizeof r.protocol, "logreg-%s", qlm_feature_kind_name(o->feature));
    snprintf(r.data, sizeof r.data, "%s", o->data);
    r.tokens = st.tokens;
    r.seconds = st.seconds;
    char buf[64];
    snprintf(buf, sizeof buf, "%g", l2);
    rc = qlm_result_add(&r, "fit_accuracy", acc_fit, err) || qlm_result_add(&r, "heldout_accuracy", acc_hold, err) ||
         qlm_result_add(&r, "heldout_loss", info.heldout_loss, err) || qlm_result_add(&r, "l2", l2, err) ||
         qlm_result_add(&r, "iterations", info.iters, err) || qlm_result_add(&r, "best_iteration", info.best_iter, err) ||
         qlm_result_add(&r, "n_fit", n_fit, err) || qlm_result_add(&r, "n_heldout", n_hold, err) ||
         qlm_result_set(&r, "trained_on", trained_on, err) || qlm_result_set(&r, "head", o->out, err) ||
         qlm_result_set(&r, "feature", qlm_feature_kind_name(o->feature), err);
    for (int g = 0; !rc && o->l2 < 0 && g < NG; g++) {
      char name[40];
      snprintf(name, sizeof name, "cv_acc_l2_%g", grid[g]);
      rc = qlm_result_add(&r, name, cv_acc[g], err);
    }
    if (!rc && o->cm.db) { /* --db: the training record and the head file */
      cli_db_set_model(s->src);
      rc = cli_db_add_result(&r, err) || cli_db_add_artefact(o->out, "head", err);
    }
    if (!rc && o->json) rc = qlm_result_print_json(&r, stdout, err);
    else if (!rc) {
      printf("model %s | %s | %.3f bits/weight\n", r.model, r.method, r.bits);
      printf("trained on: %s\n", trained_on);
      printf("feature: %s hidden state (final norm), %d dims | %d tweets fit, %d held out\n",
             qlm_feature_kind_name(o->feature), E, n_fit, n_hold);
      if (o->l2 < 0) {
        printf("%ld-fold cross-validation accuracy by L2:", o->folds);
        for (int g = 0; g < NG; g++) printf(" %g:%.4f", grid[g], cv_acc[g]);
        printf("\n");
      }
      printf("L2 %g | %d iterations, kept %d (early stopping on held-out loss %.4f)\n", l2, info.iters,
             info.best_iter, info.heldout_loss);
      printf("accuracy: fit %.4f | held out %.4f\n", acc_fit, acc_hold);
      printf("features: %lld tokens in %.2f s | head written to %s\n", (long long)st.tokens, st.seconds, o->out);
    }
  }
  qlm_logreg_free(&lr);
  free(F);
  free(y);
  qlm_textset_free(&tr);
  qlm_textset_free(&va);
  return rc;
}

/* ---- eval / zeroshot ---- */

static int report(cls_session *s, const char *task, const char *protocol, const qlm_textset *t, const int *pred,
                  long batch, const qlm_run_stats *st, int64_t peak, const char *trained_on, int same, qlm_error *err) {
  const cls_opts *o = s->o;
  qlm_cls_metrics m;
  int rc = qlm_cls_metrics_compute(t->label, pred, t->n, s->n_class, &m, err);
  if (rc) return rc;
  qlm_result r;
  qlm_result_init(&r, task, s->src);
  snprintf(r.protocol, sizeof r.protocol, "%s", protocol);
  snprintf(r.data, sizeof r.data, "%s/test_text.txt", o->data);
  r.tokens = st->tokens;
  r.seconds = st->seconds;
  char buf[64], name[40];
  rc = qlm_result_add(&r, "accuracy", m.accuracy, err) || qlm_result_add(&r, "macro_f1", m.macro_f1, err) ||
       qlm_result_add(&r, "weighted_f1", m.weighted_f1, err) || qlm_result_add(&r, "n", (double)m.n, err) ||
       qlm_result_add(&r, "texts_per_s", st->seconds > 0 ? t->n / st->seconds : NAN, err) ||
       qlm_result_add(&r, "peak_rss_mb", peak >= 0 ? (double)peak / 1048576.0 : NAN, err) ||
       qlm_result_add(&r, "truncated", (double)st->truncated, err);
  for (int c = 0; !rc && c < s->n_class && c < 8; c++) {
    snprintf(name, sizeof name, "precision_%.24s", s->names[c]);
    rc = qlm_result_add(&r, name, m.precision[c], err);
    snprintf(name, sizeof name, "recall_%.24s", s->names[c]);
    rc = rc || qlm_result_add(&r, name, m.recall[c], err);
    snprintf(name, sizeof name, "f1_%.24s", s->names[c]);
    rc = rc || qlm_result_add(&r, name, m.f1[c], err);
    snprintf(name, sizeof name, "support_%.24s", s->names[c]);
    rc = rc || qlm_result_add(&r, name, (double)m.support[c], err);
  }
  for (int a = 0; !rc && a < s->n_class && s->n_class <= 4; a++)
    for (int b = 0; !rc && b < s->n_class; b++) {
      snprintf(name, sizeof name, "confusion_%d_%d", a, b);
      rc = qlm_result_add(&r, name, (double)m.confusion[a][b], err);
    }
  snprintf(buf, sizeof buf, "%ld", batch);
  rc = rc || qlm_result_set(&r, "batch", buf, err) || qlm_result_set(&r, "padding", "none (one sequence per tweet)", err) ||
       qlm_result_set(&r, "split", "test", err);
  if (!rc && trained_on && *trained_on) rc = qlm_result_set(&r, "head_trained_on", trained_on, err);
  if (!rc && o->head) rc = qlm_result_set(&r, "head", o->head, err);
  if (rc) return rc;
  if (o->cm.db) { /* --db: recorded with the phases by cli_measure_end */
    cli_db_set_model(s->src);
    if ((rc = cli_db_add_result(&r, err))) return rc;
  }
  if (o->json) return qlm_result_print_json(&r, stdout, err);
  printf("model %s | %s | %.3f bits/weight | %s\n", r.model, r.method, r.bits, protocol);
  if (trained_on && *trained_on) printf("head trained on: %s\n", trained_on);
  printf("test split: %d tweets%s | batch %ld (no padding: one sequence per tweet)\n", t->n,
         o->limit ? " (--limit)" : "", batch);
  printf("accuracy %.4f | macro-F1 %.4f\n\n", m.accuracy, m.macro_f1);
  char *rep = qlm_cls_report(&m, s->name_ptr, 4);
  if (rep) printf("%s\n", rep);
  free(rep);
  qlm_cls_print_confusion(stdout, &m, s->name_ptr);
  printf("\ntime %.2f s (%.1f tweets/s, %lld tokens, %.1f tokens/s) | peak memory %.1f MiB%s\n", st->seconds,
         st->seconds > 0 ? t->n / st->seconds : 0.0, (long long)st->tokens,
         st->seconds > 0 ? st->tokens / st->seconds : 0.0, peak >= 0 ? peak / 1048576.0 : NAN,
         same ? "" : " | NOTE: predictions differ from the first batch size");
  if (st->truncated) printf("%lld prompts truncated to fit the context\n", (long long)st->truncated);
  printf("\n");
  return QLM_OK;
}

/* Split "a,b,c" into label words " a", " b", " c". */
static int parse_labels(const char *s, char words[][64], int *n, qlm_error *err) {
  *n = 0;
  const char *p = s;
  while (*p) {
    const char *c = strchr(p, ',');
    size_t l = c ? (size_t)(c - p) : strlen(p);
    if (*n == QLM_MC_MAX_CHOICES || l == 0 || l > 60) return qlm_fail(err, QLM_EUSAGE, "--labels: bad list '%s'", s);
    snprintf(words[*n], 64, " %.*s", (int)l, p);
    (*n)++;
    p += l + (c ? 1 : 0);
  }
  return QLM_OK;
}

static int cmd_eval(cls_session *s, int zeroshot, qlm_error *err) {
  const cls_opts *o = s->o;
  qlm_textset t = {0};
  qlm_logreg lr = {0};
  char trained_on[256] = "", feature[16] = "last", words[QLM_MC_MAX_CHOICES][64];
  const char *word_ptr[QLM_MC_MAX_CHOICES];
  int n_words = s->n_class, E = s->src->hp.n_embd, rc = QLM_OK, ctx = 1;
  for (int c = 0; c < n_words && c < 3; c++) word_ptr[c] = QLM_ZEROSHOT_LABELS[c];
  if (zeroshot && o->labels) {
    rc = parse_labels(o->labels, words, &n_words, err);
    for (int c = 0; c < n_words; c++) word_ptr[c] = words[c];
    if (!rc && n_words != s->n_class)
      rc = qlm_fail(err, QLM_EUSAGE, "--labels: %d words for %d classes", n_words, s->n_class);
  } else if (zeroshot && s->n_class != 3) {
    rc = qlm_fail(err, QLM_EUSAGE, "zeroshot: %d classes; give --labels", s->n_class);
  }
  if (!rc && !zeroshot) {
    rc = qlm_logreg_load(o->head, &lr, "trained_on", trained_on, sizeof trained_on, err);
    char fk[16] = "";
    if (!rc && lr.dim != E)
      rc = qlm_fail(err, QLM_EUSAGE, "%s: head has %d features, model %s has n_embd %d", o->head, lr.dim, o->model, E);
    if (!rc && lr.n_class != s->n_class)
      rc = qlm_fail(err, QLM_EUSAGE, "%s: head has %d classes, the data %d", o->head, lr.n_class, s->n_class);
    if (!rc) {
      qlm_logreg tmp;
      if (!qlm_logreg_load(o->head, &tmp, "feature", fk, sizeof fk, err)) {
        qlm_logreg_free(&tmp);
        if (qlm_feature_kind_parse(fk) >= 0) snprintf(feature, sizeof feature, "%s", fk);
      }
    }
    if (!rc && !trained_on[0]) snprintf(trained_on, sizeof trained_on, "(not recorded in the head)");
  }
  if (!rc) rc = load_split(s, "test", &t, err);
  const char *tpl = o->template_ ? o->template_ : QLM_ZEROSHOT_TEMPLATE;
  if (!rc && zeroshot && strstr(tpl, "{text}")) rc = zeroshot_ctx(s, t.text, t.n, tpl, word_ptr, n_words, &ctx, err);
  else if (!rc && !zeroshot) rc = cli_features_ctx(s->tok, t.text, t.n, (int)o->max_tokens, s->src->hp.n_ctx, &ctx, err);
  if (!rc)
    rc = load_model(s, zeroshot, max_batch_size(o), ctx, zeroshot ? 0 : (uint64_t)t.n * (uint64_t)E * sizeof(float), err);
  int *pred = rc ? NULL : qlm_malloc((size_t)t.n * sizeof *pred, "predictions", err);
  int *first = rc ? NULL : qlm_malloc((size_t)t.n * sizeof *first, "predictions", err);
  float *F = (rc || zeroshot) ? NULL : qlm_malloc((size_t)t.n * E * sizeof *F, "features", err);
  if (!rc && (!pred || !first || (!zeroshot && !F))) rc = QLM_ENOMEM;
  char protocol[32];
  snprintf(protocol, sizeof protocol, zeroshot ? "zeroshot-loglik" : "logreg-%s", feature);
  for (int bi = 0; !rc && bi < o->n_batch; bi++) {
    long batch = o->batches[bi];
    qlm_run_stats st = {0};
    qlm_peak_rss_reset();
    if (s->meter) qlm_meter_begin(s->meter, QLM_PHASE_EVAL); /* again per batch size: its own peak reset too */
    if (!o->quiet) fprintf(stderr, "%s: %d tweets, batch %ld ...\n", protocol, t.n, batch);
    if (zeroshot) {
      qlm_zeroshot_opts zo = {.template_ = tpl,
                              .label_words = word_ptr, .n_class = n_words, .batch = (int)batch,
                              .n_threads = (int)o->threads, .max_tokens = (int)o->max_tokens};
      rc = qlm_zeroshot_classify(s->model, s->tok, t.text, t.n, &zo, pred, NULL, &st, progress, s, err);
    } else {
      rc = qlm_features_extract(s->model, s->tok, t.text, t.n, qlm_feature_kind_parse(feature), (int)batch,
                                (int)o->max_tokens, (int)o->threads, F, &st, progress, s, err);
      for (int i = 0; !rc && i < t.n; i++) pred[i] = qlm_logreg_predict(&lr, F + (size_t)i * E, NULL);
    }
    int64_t peak = qlm_peak_rss_bytes();
    if (!rc && s->meter) qlm_meter_add_tokens(s->meter, (uint64_t)st.tokens);
    int same = 1;
    if (!rc && bi == 0) memcpy(first, pred, (size_t)t.n * sizeof *pred);
    else if (!rc) same = !memcmp(first, pred, (size_t)t.n * sizeof *pred);
    if (!rc)
      rc = report(s, zeroshot ? "sentiment-zeroshot" : "sentiment-head", protocol, &t, pred, batch, &st, peak,
                  trained_on, same, err);
  }
  free(pred);
  free(first);
  free(F);
  qlm_logreg_free(&lr);
  qlm_textset_free(&t);
  return rc;
}

int cmd_classify(int argc, char **argv) {
  qlm_error err = {0};
  cls_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  cls_session s = {0};
  s.meter = cli_measure_start(&o.cm);
  if (s.meter) qlm_meter_begin(s.meter, QLM_PHASE_LOAD);
  int rc = open_session(&o, &s, &err); /* the meter's eval phase starts in load_model */
  if (!rc) {
    if (!strcmp(o.mode, "train")) rc = cmd_train(&s, &err);
    else rc = cmd_eval(&s, !strcmp(o.mode, "zeroshot"), &err);
  }
  session_free(&s);
  int mrc = cli_measure_end(&o.cm, s.meter, o.quiet || rc);
  return rc ? cli_report(&err) : mrc;
}
