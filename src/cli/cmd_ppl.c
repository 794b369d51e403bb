/* cmd_ppl.c — `qlm ppl`: perplexity of a model on a text under a named protocol, and KL
 * divergence to a base model's saved distributions. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/shared_dir.h"
#include "cli/cli.h"
#include "core/mapfile.h"
#include "core/memlimit.h"
#include "eval/kl.h"
#include "eval/ppl.h"
#include "eval/results.h"
#include "model/model.h"

typedef struct ppl_opts {
  const char *model, *tokenizer, *data, *save_logits, *kl_base;
  int protocol;
  long window, stride, batch, ubatch, threads, chunks, top_k;
  int json, quiet;
  cli_measure cm; /* --country, --emissions, --db FILE (record the result there), ... */
} ppl_opts;

static const char *default_data(void) {
  static char buf[1024];
  return qlm_shared_path("data/wikitext-2-raw/wiki.test.raw", buf, sizeof buf);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm ppl [-m MODEL] [--data FILE] [--protocol P] [options]\n\n"
          "Perplexity PPL = exp(mean over scored tokens of -log p(token | context)) on a text (default: the\n"
          "WikiText-2 raw test split), under one of the protocols other tools use (their numbers differ):\n\n"
          "  hf-window  Hugging Face's perplexity guide: rows joined with \"\\n\\n\", tokenized whole; windows of\n"
          "             --window tokens (1024) every --stride tokens (512); each window scores only the tokens\n"
          "             the previous one did not, so every token but the first is scored once.\n"
          "  per-line   seed 000's code: the same windows, but each non-empty line tokenized and scored alone.\n"
          "  llamacpp   llama.cpp's perplexity tool: text tokenized whole, chunks of --window (n_ctx, 512) from\n"
          "             a fresh context (first token replaced by BOS when the vocab adds BOS), only the second\n"
          "             half scored; PPL +/- error as llama.cpp computes it.\n"
          "  lm-eval    lm-evaluation-harness wikitext: per article, detokenized, rolling windows of --window\n"
          "             (the model's context); also word_perplexity, byte_perplexity, bits_per_byte.\n\n"
          "The text is streamed: mapped, tokenized piece by piece and scored as its windows are made, so\n"
          "memory does not grow with its length (per-line: bounded by the longest line; lm-eval: by the\n"
          "longest article).  Progress shows windows, or bytes read while the number of windows is unknown.\n\n"
          "  -m, --model PATH       GGUF file, HF folder or llama2.c .bin (default %s)\n"
          "      --tokenizer PATH   tokenizer overriding the model's\n"
          "      --data FILE        text to score (default %s)\n"
          "  -P, --protocol P       hf-window | per-line | llamacpp | lm-eval (default hf-window)\n"
          "  -w, --window N         window / context length (default per protocol, at most the model's context)\n"
          "      --stride N         hf-window and per-line stride (default window/2)\n"
          "  -b, --batch N          windows evaluated together, one sequence each (default: fit 4096 rows, <= 16)\n"
          "      --ubatch N         rows per forward call (default 512)\n"
          "      --chunks N         score only the first N windows (quick estimates; 0 = all); hf-window and\n"
          "                         llamacpp stop reading the text there, per-line and lm-eval tokenize the rest\n"
          "                         once (without keeping it) unless a row/article fills a window\n"
          "  -t, --threads N        threads (default: all %d CPUs)\n"
          "      --save-logits FILE store this model's next-token distributions (top-k + remainder) for KL\n"
          "      --top-k K          tokens kept per position by --save-logits (default %d)\n"
          "      --kl-base FILE     compare with the distributions saved from a base model: mean/median/p99\n"
          "                         KL divergence, top-1 agreement, delta PPL (same text, protocol, window)\n"
          "      --json             print one JSON result record on stdout instead of text\n"
          "      --no-mem-check     load even when the weights converted at load + KV cache seem not to fit the\n"
          "                         memory available (MemAvailable, ulimit -v / -d); otherwise refused (exit 6)\n"
          "  -q, --quiet            no progress on stderr\n\n"
          "examples:\n"
          "  qlm ppl -m base.gguf --protocol llamacpp --save-logits base.kld\n"
          "  qlm ppl -m q4.gguf --protocol llamacpp --kl-base base.kld --json\n",
          cli_default_model(), default_data(), cli_default_threads(), QLM_KL_DEFAULT_K);
  fputs(cli_measure_help, f);
  fputs(cli_db_help, f);
}

static int parse_opts(int argc, char **argv, ppl_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},   {"tokenizer", required_argument, 0, 'T'}, {"data", required_argument, 0, 'D'},
      {"protocol", required_argument, 0, 'P'}, {"window", required_argument, 0, 'w'},   {"stride", required_argument, 0, 'S'},
      {"batch", required_argument, 0, 'b'},   {"ubatch", required_argument, 0, 'U'},    {"chunks", required_argument, 0, 'C'},
      {"threads", required_argument, 0, 't'}, {"save-logits", required_argument, 0, 'L'}, {"top-k", required_argument, 0, 'K'},
      {"kl-base", required_argument, 0, 'B'}, {"json", no_argument, 0, 'J'}, {"no-mem-check", no_argument, 0, 'N'},            {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},          CLI_DB_OPTION, CLI_MEASURE_OPTIONS, {0, 0, 0, 0}};
  *o = (ppl_opts){.threads = cli_default_threads(), .top_k = QLM_KL_DEFAULT_K, .ubatch = 512};
  cli_measure_init(&o->cm, "ppl");
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:P:w:b:t:qh", opts, NULL)) != -1) {
    if (c >= CLI_MEASURE_FIRST) {
      rc = cli_measure_opt(&o->cm, c, optarg, err);
      continue;
    }
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'T': o->tokenizer = optarg; break;
    case 'D': o->data = optarg; break;
    case 'P':
      if ((o->protocol = qlm_ppl_protocol_parse(optarg)) < 0)
        rc = qlm_fail(err, QLM_EUSAGE, "--protocol: unknown '%s' (hf-window, per-line, llamacpp, lm-eval)", optarg);
      break;
    case 'w': rc = cli_parse_int("--window", optarg, 2, 1 << 20, &o->window, err); break;
    case 'S': rc = cli_parse_int("--stride", optarg, 1, 1 << 20, &o->stride, err); break;
    case 'b': rc = cli_parse_int("--batch", optarg, 1, 256, &o->batch, err); break;
    case 'U': rc = cli_parse_int("--ubatch", optarg, 1, 8192, &o->ubatch, err); break;
    case 'C': rc = cli_parse_int("--chunks", optarg, 0, __LONG_MAX__, &o->chunks, err); break;
    case 't': rc = cli_parse_int("--threads", optarg, 1, 256, &o->threads, err); break;
    case 'L': o->save_logits = optarg; break;
    case 'K': rc = cli_parse_int("--top-k", optarg, 1, QLM_KL_MAX_K, &o->top_k, err); break;
    case 'B': o->kl_base = optarg; break;
    case 'J': o->json = 1; break;
    case 'N': qlm_mem_check_set_enabled(false); break;
    case 'q': o->quiet = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return qlm_fail(err, QLM_EUSAGE, "ppl: bad option (see qlm ppl --help)");
    }
  }
  if (!rc && optind < argc) rc = qlm_fail(err, QLM_EUSAGE, "ppl: unexpected argument '%s'", argv[optind]);
  if (!rc && o->stride && o->window && o->stride > o->window)
    rc = qlm_fail(err, QLM_EUSAGE, "--stride %ld is larger than --window %ld", o->stride, o->window);
  if (!o->model) o->model = cli_default_model();
  if (!o->data) o->data = default_data();
  return rc;
}

typedef struct ppl_session {
  const ppl_opts *o;
  qlm_source *src;
  qlm_tokenizer *tok;
  qlm_model *model;
  qlm_mapfile map;          /* the text, mapped */
  qlm_ppl_stream *stream;   /* its windows, made as they are scored */
  int max_rows;             /* most rows a window feeds (the whole text's) */
  size_t dropped;           /* bytes at the start of the mapping given back to the kernel */
  qlm_kl_writer *writer;
  qlm_kl_reader *reader;
  double last_progress;
} ppl_session;

static void session_free(ppl_session *s) {
  qlm_kl_writer_abort(s->writer);
  qlm_kl_reader_free(s->reader);
  qlm_ppl_stream_free(s->stream);
  qlm_unmap_file(&s->map);
  qlm_model_free(s->model);
  qlm_tokenizer_free(s->tok);
  qlm_source_close(s->src);
}

static int on_token(void *ctx, int64_t index, int32_t target, const float *logits, double lse, qlm_error *err) {
  (void)index;
  ppl_session *s = ctx;
  int rc = QLM_OK;
  if (s->writer) rc = qlm_kl_writer_add(s->writer, target, logits, lse, err);
  if (!rc && s->reader) rc = qlm_kl_reader_add(s->reader, target, logits, lse, err);
  return rc;
}

/* The mapped text before what the stream still reads is dropped from memory (the mapping's pages
 * would otherwise stay resident as it is read), every 16 MiB. */
static void drop_read_text(ppl_session *s, size_t bytes_read) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), upto = bytes_read / page * page;
  if (!s->map.data || upto < s->dropped + ((size_t)16 << 20)) return;
  madvise((void *)s->map.data, upto, MADV_DONTNEED); /* advice only: harmless if refused */
  s->dropped = upto;
}

/* Windows done of the total when known, else the share of the text read (a stream learns the
 * number of windows only at the end of the text). */
static void progress(void *ctx, int64_t done, int64_t total, double sec) {
  ppl_session *s = ctx;
  qlm_ppl_stream_info in;
  qlm_ppl_stream_get_info(s->stream, &in);
  drop_read_text(s, in.bytes_read);
  int tty = isatty(2), last = total >= 0 ? done == total : in.complete;
  if (s->o->quiet || (!tty && sec - s->last_progress < 10 && !last)) return;
  s->last_progress = sec;
  double frac = total > 0 ? (double)done / (double)total : in.text_bytes ? (double)in.bytes_read / (double)in.text_bytes : 1;
  double eta = frac > 0 ? sec * (1 - frac) / frac : 0;
  if (total >= 0)
    fprintf(stderr, "%s[%lld/%lld windows] %5.1f%%  %.0f s elapsed, ETA %.0f s%s", tty ? "\r" : "", (long long)done,
            (long long)total, 100.0 * frac, sec, eta, tty ? (last ? "\n" : "") : "\n");
  else
    fprintf(stderr, "%s[%lld windows, %.1f of %.1f MB read] %5.1f%%  %.0f s elapsed, ETA %.0f s%s", tty ? "\r" : "",
            (long long)done, (double)in.bytes_read / 1e6, (double)in.text_bytes / 1e6, 100.0 * frac, sec, eta,
            tty ? (last ? "\n" : "") : "\n");
}

static int open_session(const ppl_opts *o, ppl_session *s, qlm_error *err) {
  s->o = o;
  int rc = qlm_source_open(o->model, o->tokenizer, &s->src, err);
  if (rc) return rc;
  if (s->src->vocab.kind == QLM_TOK_NONE)
    return qlm_fail(err, QLM_EUSAGE, "%s: no tokenizer found; give one with --tokenizer", o->model);
  /* the state qlm_ppl_run will create, bounded above: windows of at most `window` rows, batch as
   * cmd_ppl chooses it below, and the logits buffer of one forward call */
  qlm_ppl_params prm0 = {.window = (int)o->window, .stride = (int)o->stride};
  int window = qlm_ppl_window_for(o->protocol, &prm0, s->src->hp.n_ctx);
  long batch = o->batch ? o->batch : 4096 / (window > 0 ? window : 1);
  if (batch < 1) batch = 1;
  if (batch > 16 && !o->batch) batch = 16;
  char desc[96];
  snprintf(desc, sizeof desc, "at --window %d x %ld windows per batch", window, batch);
  qlm_load_plan lp = {.n_seq = (int)batch, .n_ctx = window, .max_batch = (int)o->ubatch, .n_threads = (int)o->threads,
                      .extra_bytes = (uint64_t)o->ubatch * (uint64_t)(s->src->hp.n_vocab > 0 ? s->src->hp.n_vocab : 0) * 4,
                      .ctx_desc = desc, .hint = "use a smaller --window or --batch, or a quantized file"};
  if ((rc = qlm_model_load_planned(s->src, &lp, &s->model, err)) || (rc = qlm_tokenizer_new(&s->src->vocab, &s->tok, err)))
    return rc;
  if ((rc = qlm_map_file(o->data, &s->map, err))) return rc;
  qlm_ppl_params prm = {.window = (int)o->window, .stride = (int)o->stride};
  const char *text = s->map.data ? (const char *)s->map.data : "";
  if ((rc = qlm_ppl_stream_open(s->tok, text, s->map.size, o->data, o->protocol, &prm, s->model->hp.n_ctx, o->chunks,
                                &s->stream, err)))
    return rc;
  return qlm_ppl_stream_max_rows(s->stream, &s->max_rows, err);
}

static int open_kl(const ppl_opts *o, ppl_session *s, int window, int stride, qlm_error *err) {
  qlm_kl_header h = {.n_vocab = (uint32_t)s->model->hp.n_vocab, .k = (uint32_t)o->top_k, .protocol = (uint32_t)o->protocol,
                     .window = (uint32_t)window, .stride = (uint32_t)stride};
  if (h.k > h.n_vocab) h.k = h.n_vocab;
  int rc = QLM_OK; /* the record count and fingerprint are checked / written as the stream is scored */
  if (o->save_logits) rc = qlm_kl_writer_open_stream(&s->writer, o->save_logits, &h, err);
  if (!rc && o->kl_base) rc = qlm_kl_reader_open_stream(&s->reader, o->kl_base, &h, err);
  return rc;
}

/* The window and stride the stream uses (for the record and the KL header). */
static void plan_settings(const ppl_session *s, int *window, int *stride) {
  qlm_ppl_stream_info in;
  qlm_ppl_stream_get_info(s->stream, &in);
  *window = in.window;
  *stride = in.stride;
}

static int report(const ppl_session *s, const qlm_ppl_stats *st, const qlm_kl_stats *kl, int window, int stride,
                  qlm_error *err) {
  const ppl_opts *o = s->o;
  qlm_ppl_stream_info in, *p = &in;
  qlm_ppl_stream_get_info(s->stream, &in);
  qlm_result r;
  qlm_result_init(&r, kl ? "kl-divergence" : "perplexity", s->src);
  snprintf(r.protocol, sizeof r.protocol, "%s", qlm_ppl_protocol_name(o->protocol));
  snprintf(r.data, sizeof r.data, "%s", o->data);
  r.tokens = st->n_scored;
  r.seconds = st->seconds;
  char buf[64];
  int rc = 0;
  double tps = st->seconds > 0 ? (double)st->n_scored / st->seconds : 0;
  int complete = p->complete && st->n_windows == p->n_win;
  double ll = -st->nll_sum;
  double word_ppl = NAN, byte_ppl = NAN, bpb = NAN;
  if (p->protocol == QLM_PPL_LM_EVAL && complete && p->n_words > 0) {
    word_ppl = exp(-ll / p->n_words);
    byte_ppl = exp(-ll / p->n_bytes);
    bpb = -ll / p->n_bytes / log(2.0);
  }
  rc = rc || qlm_result_add(&r, "ppl", st->ppl, err) || qlm_result_add(&r, "ppl_err", st->ppl_err, err) ||
       qlm_result_add(&r, "nll_mean", st->n_scored ? st->nll_sum / (double)st->n_scored : NAN, err) ||
       qlm_result_add(&r, "tokens_per_s", tps, err) ||
       qlm_result_add(&r, "rows_fed", (double)st->n_fed, err) || qlm_result_add(&r, "windows", (double)st->n_windows, err);
  if (p->protocol == QLM_PPL_LM_EVAL)
    rc = rc || qlm_result_add(&r, "word_perplexity", word_ppl, err) || qlm_result_add(&r, "byte_perplexity", byte_ppl, err) ||
         qlm_result_add(&r, "bits_per_byte", bpb, err);
  if (kl)
    rc = rc || qlm_result_add(&r, "kld_mean", kl->kld_mean, err) || qlm_result_add(&r, "kld_err", kl->kld_err, err) ||
         qlm_result_add(&r, "kld_median", kl->kld_median, err) || qlm_result_add(&r, "kld_p99", kl->kld_p99, err) ||
         qlm_result_add(&r, "kld_max", kl->kld_max, err) || qlm_result_add(&r, "top1_agree", kl->top1_agree, err) ||
         qlm_result_add(&r, "ppl_base", kl->ppl_base, err) || qlm_result_add(&r, "dppl", kl->dppl, err) ||
         qlm_result_add(&r, "rms_dp", kl->rms_dp, err);
  snprintf(buf, sizeof buf, "%d", window);
  rc = rc || qlm_result_set(&r, "window", buf, err);
  if (stride) {
    snprintf(buf, sizeof buf, "%d", stride);
    rc = rc || qlm_result_set(&r, "stride", buf, err);
  }
  /* windows in all: known when the whole text was read (--chunks may stop before: "N+") */
  snprintf(buf, sizeof buf, "%lld of %lld%s", (long long)st->n_windows, (long long)p->n_win, p->complete ? "" : "+");
  rc = rc || qlm_result_set(&r, "windows_run", buf, err);
  if (rc) return rc;
  if (o->cm.db && o->save_logits && (rc = cli_db_add_artefact(o->save_logits, "logits", err))) return rc;
  if (o->cm.db) { /* recorded with the meter's phases by cli_measure_end */
    cli_db_set_model(s->src);
    if ((rc = cli_db_add_result(&r, err))) return rc;
  }
  if (o->json) return qlm_result_print_json(&r, stdout, err);
  printf("model %s | %s | %.3f bits/weight\n", r.model, r.method, r.bits);
  printf("protocol %s, window %d%s%s on %s: %lld of %lld%s windows, %lld%s documents\n", r.protocol, window,
         stride ? ", stride " : "", stride ? (snprintf(buf, sizeof buf, "%d", stride), buf) : "", o->data,
         (long long)st->n_windows, (long long)p->n_win, p->complete ? "" : "+", (long long)p->n_docs,
         p->complete || p->protocol == QLM_PPL_HF_WINDOW || p->protocol == QLM_PPL_LLAMACPP ? "" : "+");
  if (!p->complete)
    printf("stopped reading at --chunks %ld: %zu of %zu bytes of the text read\n", o->chunks, p->bytes_read, p->text_bytes);
  printf("PPL = %.4f +/- %.4f\n", st->ppl, st->ppl_err);
  if (st->n_nonfinite)
    printf("WARNING: %lld tokens had a non-finite log-probability and were left out (--allow-nonfinite)\n",
           (long long)st->n_nonfinite);
  printf("tokens scored %lld | time %.2f s | %.1f tokens/s scored | %.1f rows/s fed\n", (long long)st->n_scored,
         st->seconds, tps, st->seconds > 0 ? (double)st->n_fed / st->seconds : 0.0);
  if (p->protocol == QLM_PPL_LM_EVAL) {
    if (complete)
      printf("word_perplexity %.4f | byte_perplexity %.4f | bits_per_byte %.4f (%.0f words, %.0f bytes)\n", word_ppl,
             byte_ppl, bpb, p->n_words, p->n_bytes);
    else
      printf("word/byte perplexity: only with all windows (no --chunks)\n");
  }
  if (kl)
    printf("KL divergence to the base: mean %.6f +/- %.6f | median %.6f | p99 %.6f | max %.6f\n"
           "same top-1 token %.3f%% | base PPL %.4f | PPL %.4f | delta PPL %+.4f | RMS delta p %.3f%%\n",
           kl->kld_mean, kl->kld_err, kl->kld_median, kl->kld_p99, kl->kld_max, 100 * kl->top1_agree, kl->ppl_base,
           kl->ppl, kl->dppl, 100 * kl->rms_dp);
  return QLM_OK;
}

int cmd_ppl(int argc, char **argv) {
  qlm_error err = {0};
  ppl_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  ppl_session s = {0};
  qlm_meter *meter = cli_measure_start(&o.cm);
  if (meter) qlm_meter_begin(meter, QLM_PHASE_LOAD);
  int window = 0, stride = 0, rc = open_session(&o, &s, &err);
  if (meter) qlm_meter_begin(meter, QLM_PHASE_EVAL);
  if (!rc) {
    plan_settings(&s, &window, &stride);
    rc = open_kl(&o, &s, window, stride, &err);
  }
  qlm_ppl_stats st = {0};
  qlm_kl_stats kl = {0};
  if (!rc) {
    long batch = o.batch ? o.batch : 4096 / (s.max_rows > 0 ? s.max_rows : 1);
    if (batch < 1) batch = 1;
    if (batch > 16 && !o.batch) batch = 16;
    qlm_ppl_opts po = {.batch = (int)batch, .ubatch = (int)o.ubatch, .n_threads = (int)o.threads,
                       .max_windows = o.chunks, .on_token = (s.writer || s.reader) ? on_token : NULL, .ctx = &s,
                       .progress = progress};
    if (!o.quiet)
      fprintf(stderr, "%s: streaming %s (%zu bytes), windows of up to %d rows, %ld windows per batch, %ld threads\n",
              qlm_ppl_protocol_name(o.protocol), o.data, s.map.size, s.max_rows, batch, o.threads);
    rc = qlm_ppl_run_stream(s.model, s.stream, &po, &st, &err);
    if (!rc && !o.quiet) {
      qlm_ppl_stream_info in;
      qlm_ppl_stream_get_info(s.stream, &in);
      fprintf(stderr, "%s: %lld%s tokens, %lld%s windows, %lld scored\n", qlm_ppl_protocol_name(o.protocol),
              (long long)in.n_tokens, in.complete ? "" : "+", (long long)in.n_win, in.complete ? "" : "+",
              (long long)st.n_scored);
    }
  }
  if (!rc && s.writer) {
    rc = qlm_kl_writer_commit(s.writer, &err);
    s.writer = NULL;
  }
  if (!rc && s.reader) rc = qlm_kl_reader_finish(s.reader, &kl, &err);
  if (meter && !rc) qlm_meter_add_tokens(meter, (uint64_t)st.n_fed);
  if (!rc) rc = report(&s, &st, s.reader ? &kl : NULL, window, stride, &err);
  session_free(&s);
  if (rc) cli_report(&err);
  int mrc = cli_measure_end(&o.cm, meter, o.quiet || o.json || rc);
  return rc ? (err.code ? err.code : QLM_EINTERNAL) : mrc;
}
