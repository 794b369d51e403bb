/* cmd_run.c — `qlm run`: load a model, encode a prompt, generate, report tokens/s. */
#include <getopt.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/mapfile.h"
#include "generate/generate.h"
#include "kernels/cpu.h"

typedef struct run_opts {
  const char *model, *tokenizer, *prompt, *prompt_file;
  long n_predict, threads, n_ctx;
  double temp, top_k, top_p;
  long seed;
  int no_bos, chat, ignore_eos, quiet;
  cli_measure cm;       /* --country, --emissions, ... */
} run_opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm run [-m MODEL] [-p PROMPT] [options]\n\n"
          "Generates text: the prompt is processed as one batch (prefill), then one token at a time (decode).\n"
          "Prints the text as it is generated, then prefill and decode tokens/s on stderr.\n\n"
          "  -m, --model PATH       GGUF file, HF folder or llama2.c .bin (default %s)\n"
          "      --tokenizer PATH   tokenizer.bin / tokenizer.json overriding the model's\n"
          "  -p, --prompt TEXT      prompt (default: empty, i.e. start from BOS)\n"
          "  -f, --file PATH        read the prompt from a file\n"
          "  -n, --n-predict N      tokens to generate at most (default 256)\n"
          "      --temp T           temperature; 0 = greedy argmax (default 0.8)\n"
          "      --top-k K          sample among the K most likely tokens; 0 = all (default 40)\n"
          "      --top-p P          nucleus sampling threshold; 1 = off (default 0.95)\n"
          "  -s, --seed S           random seed: same seed, same text (default 42)\n"
          "  -t, --threads N        threads (default: all %d CPUs)\n"
          "  -c, --ctx N            context positions to allocate (default: prompt + n-predict, capped by the model)\n"
          "      --chat             wrap the prompt in the model's chat markers (ChatML: <|im_start|>user ...)\n"
          "      --no-bos           do not prepend BOS even if the tokenizer asks for it\n"
          "      --ignore-eos       keep generating after an end-of-sequence token\n"
          "  -q, --quiet            print only the generated text (no prompt echo, no statistics)\n\n"
          "example: qlm run -m smollm2.gguf --chat -p \"What is the capital of France?\" --temp 0\n\n",
          cli_default_model(), cli_default_threads());
  fputs(cli_measure_help, f);
  fputs(cli_db_help, f);
}

static int parse_opts(int argc, char **argv, run_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},  {"tokenizer", required_argument, 0, 'T'}, {"prompt", required_argument, 0, 'p'},
      {"file", required_argument, 0, 'f'},   {"n-predict", required_argument, 0, 'n'}, {"temp", required_argument, 0, 'E'},
      {"top-k", required_argument, 0, 'K'},  {"top-p", required_argument, 0, 'P'},     {"seed", required_argument, 0, 's'},
      {"threads", required_argument, 0, 't'}, {"ctx", required_argument, 0, 'c'},      {"chat", no_argument, 0, 'C'},
      {"no-bos", no_argument, 0, 'B'},       {"ignore-eos", no_argument, 0, 'I'},      {"quiet", no_argument, 0, 'q'},
      CLI_MEASURE_OPTIONS, CLI_DB_OPTION,
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  *o = (run_opts){.n_predict = 256, .temp = 0.8, .top_k = 40, .top_p = 0.95, .seed = 42,
                  .threads = cli_default_threads()};
  cli_measure_init(&o->cm, "run");
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:p:f:n:s:t:c:qh", opts, NULL)) != -1) {
    if (c >= CLI_MEASURE_FIRST) {
      rc = cli_measure_opt(&o->cm, c, optarg, err);
      continue;
    }
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'T': o->tokenizer = optarg; break;
    case 'p': o->prompt = optarg; break;
    case 'f': o->prompt_file = optarg; break;
    case 'n': rc = cli_parse_int("--n-predict", optarg, 0, 1 << 20, &o->n_predict, err); break;
    case 'E': rc = cli_parse_float("--temp", optarg, 0, 100, &o->temp, err); break;
    case 'K': rc = cli_parse_float("--top-k", optarg, 0, 1 << 24, &o->top_k, err); break;
    case 'P': rc = cli_parse_float("--top-p", optarg, 0, 1, &o->top_p, err); break;
    case 's': rc = cli_parse_int("--seed", optarg, 0, __LONG_MAX__, &o->seed, err); break;
    case 't': rc = cli_parse_int("--threads", optarg, 1, 256, &o->threads, err); break;
    case 'c': rc = cli_parse_int("--ctx", optarg, 1, 1 << 20, &o->n_ctx, err); break;
    case 'C': o->chat = 1; break;
    case 'B': o->no_bos = 1; break;
    case 'I': o->ignore_eos = 1; break;
    case 'q': o->quiet = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return qlm_fail(err, QLM_EUSAGE, "run: bad option (see qlm run --help)");
    }
  }
  if (!rc && optind < argc) rc = qlm_fail(err, QLM_EUSAGE, "run: unexpected argument '%s'", argv[optind]);
  if (!o->model) o->model = cli_default_model();
  return rc;
}

/* The prompt text as the model sees it (chat markers added when asked). malloc'd. */
static int build_prompt(const run_opts *o, char **out, qlm_error *err) {
  char *text = NULL;
  if (o->prompt_file) {
    int rc = qlm_read_file(o->prompt_file, 64u << 20, &text, NULL, err);
    if (rc) return rc;
  } else {
    text = strdup(o->prompt ? o->prompt : "");
  }
  if (!text) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  if (o->chat) {
    size_t n = strlen(text) + 64;
    char *wrapped = malloc(n);
    if (!wrapped) {
      free(text);
      return qlm_fail(err, QLM_ENOMEM, "out of memory");
    }
    snprintf(wrapped, n, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", text);
    free(text);
    text = wrapped;
  }
  *out = text;
  return QLM_OK;
}

static int print_piece(void *ctx, int32_t token, const char *piece, int len) {
  (void)ctx;
  (void)token;
  fwrite(piece, 1, (size_t)len, stdout);
  fflush(stdout);
  return 0;
}

typedef struct run_session {
  qlm_source *src;
  qlm_tokenizer *tok;
  qlm_model *model;
  qlm_state *state;
  qlm_sampler sampler;
  int32_t *ids;
  int n_ids;
  char *text;
} run_session;

static void session_free(run_session *s) {
  qlm_sampler_free(&s->sampler);
  qlm_state_free(s->state);
  qlm_model_free(s->model);
  qlm_tokenizer_free(s->tok);
  qlm_source_close(s->src);
  free(s->ids);
  free(s->text);
}

static int session_open(const run_opts *o, run_session *s, qlm_error *err) {
  int rc = qlm_source_open(o->model, o->tokenizer, &s->src, err);
  if (rc) return rc;
  if (s->src->vocab.kind == QLM_TOK_NONE)
    return qlm_fail(err, QLM_EUSAGE, "%s: no tokenizer found; give one with --tokenizer", o->model);
  if ((rc = qlm_tokenizer_new(&s->src->vocab, &s->tok, err))) return rc;
  if ((rc = qlm_model_load(s->src, &s->model, err))) return rc;
  if ((rc = build_prompt(o, &s->text, err))) return rc;
  int add_special = !o->no_bos;
  if ((rc = qlm_tokenize(s->tok, s->text, strlen(s->text), add_special, o->chat, &s->ids, &s->n_ids, err))) return rc;
  if (s->n_ids == 0) { /* an empty prompt starts from BOS, as llama2.c does */
    if (s->src->vocab.bos_id < 0) return qlm_fail(err, QLM_EUSAGE, "empty prompt and the tokenizer has no BOS token");
    free(s->ids);
    if (!(s->ids = qlm_malloc(sizeof *s->ids, "prompt", err))) return QLM_ENOMEM;
    s->ids[0] = s->src->vocab.bos_id;
    s->n_ids = 1;
  }
  long need = s->n_ids + (o->n_predict > 0 ? o->n_predict - 1 : 0);
  long ctx = o->n_ctx ? o->n_ctx : need;
  if (ctx > s->model->hp.n_ctx && s->model->hp.n_ctx > 0) ctx = s->model->hp.n_ctx;
  if (s->n_ids > ctx)
    return qlm_fail(err, QLM_EUSAGE, "prompt has %d tokens, more than the %ld context positions", s->n_ids, ctx);
  int max_batch = s->n_ids < 512 ? s->n_ids : 512;
  char desc[48];
  snprintf(desc, sizeof desc, "at %s %ld", o->n_ctx ? "--ctx" : "context", ctx);
  if ((rc = qlm_state_check_mem(s->model, 1, (int)ctx, max_batch, (int)o->threads, desc, "use a smaller --ctx", err)))
    return rc;
  if ((rc = qlm_state_new(s->model, 1, (int)ctx, max_batch, (int)o->threads, &s->state, err))) return rc;
  qlm_sampler_params sp = {.temperature = (float)o->temp, .top_k = (int)o->top_k, .top_p = (float)o->top_p,
                           .seed = (uint64_t)o->seed};
  return qlm_sampler_init(&s->sampler, &sp, s->model->hp.n_vocab, err);
}

int cmd_run(int argc, char **argv) {
  qlm_error err = {0};
  run_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  run_session s = {0};
  qlm_meter *meter = cli_measure_start(&o.cm);
  if (meter) qlm_meter_begin(meter, QLM_PHASE_LOAD);
  int rc = session_open(&o, &s, &err);
  if (rc) {
    session_free(&s);
    cli_measure_end(&o.cm, meter, 1);
    return cli_report(&err);
  }
  if (meter) { /* weights as stored; KV cache: keys + values, f32, n_layer x n_ctx x n_head_kv*head_dim */
    uint64_t wbytes = 0;
    for (int i = 0; i < s.src->n_tensors; i++) wbytes += s.src->tensors[i].nbytes;
    const qlm_hparams *hp = &s.model->hp;
    uint64_t kv = 2ull * 4 * (uint64_t)hp->n_layer * (uint64_t)qlm_state_n_ctx(s.state) * (uint64_t)hp->n_head_kv *
                  (uint64_t)hp->head_dim;
    qlm_meter_set_bytes(meter, wbytes, kv);
    qlm_meter_begin(meter, QLM_PHASE_GENERATE);
    qlm_meter_set_bytes(meter, wbytes, kv);
  }
  long room = (long)qlm_state_n_ctx(s.state) - s.n_ids + 1;
  int n_predict = (int)(o.n_predict < room ? o.n_predict : room);
  if (!o.quiet) {
    char *echo = NULL;
    if (qlm_detokenize(s.tok, s.ids, s.n_ids, 0, &echo, &err) == 0) fputs(echo, stdout);
    free(echo);
  }
  qlm_gen_request req = {.prompt = s.ids, .n_prompt = s.n_ids, .n_predict = n_predict,
                         .stop_at_eos = !o.ignore_eos, .on_piece = print_piece};
  qlm_gen_stats st;
  rc = qlm_generate(s.model, s.tok, s.state, &s.sampler, &req, &st, &err);
  if (meter && !rc) qlm_meter_add_tokens(meter, (uint64_t)st.n_prompt + (uint64_t)st.n_generated);
  printf("\n");
  if (!rc && !o.quiet)
    fprintf(stderr,
            "\nprefill: %d tokens in %.3f s (%.1f tokens/s) | decode: %d tokens in %.3f s (%.1f tokens/s)\n"
            "threads %ld | simd %s | temp %g top-k %g top-p %g seed %ld%s\n",
            st.n_prompt, st.t_prefill_s, st.t_prefill_s > 0 ? st.n_prompt / st.t_prefill_s : 0.0, st.n_generated,
            st.t_decode_s, st.t_decode_s > 0 ? st.n_generated / st.t_decode_s : 0.0, o.threads, qlm_simd_name(qlm_cpu_simd_level()),
            o.temp, o.top_k, o.top_p, o.seed, st.stopped_by == 1 ? " | stopped at end-of-sequence" : "");
  uint64_t cols = atomic_load(&s.model->int8_stats.columns);
  if (!rc && !o.quiet && cols) {
    uint64_t outl = atomic_load(&s.model->int8_stats.outlier_columns);
    fprintf(stderr, "LLM.int8(): %llu of %llu activation columns were outliers (%.3f%%), multiplied in float\n",
            (unsigned long long)outl, (unsigned long long)cols, 100.0 * (double)outl / (double)cols);
  }
  if (!rc && o.cm.db) { /* --db: the run with its phases (no metrics) */
    cli_db_set_model(s.src);
    cli_db_success();
  }
  session_free(&s);
  int mrc = cli_measure_end(&o.cm, meter, o.quiet || rc);
  return rc ? cli_report(&err) : mrc;
}
