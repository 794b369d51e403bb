/* cmd_replay.c — `qlm replay`: seed 001's inference-footprint protocol (eval/replay.h):
 * DailyDialog first sentences at seeded Poisson arrival times, up to 100 new tokens each,
 * for a window (4 h by default), measured as one meter phase "replay" that includes the idle
 * time between prompts. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/shared_dir.h"
#include "cli/cli.h"
#include "eval/replay.h"
#include "eval/results.h"
#include "generate/generate.h"

typedef struct replay_opts {
  const char *model, *tokenizer, *data, *duration_arg;
  double duration_s, speedup, mean_gap, temp;
  long n_predict, seed, threads;
  int json, quiet;
  cli_measure cm;
} replay_opts;

static const char *default_data(void) {
  static char buf[1024];
  return qlm_shared_path("data/dailydialog/dialogues_test.txt", buf, sizeof buf);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm replay [-m MODEL] [--duration 4h] [--speedup K] [--seed N] [options]\n\n"
          "Replays an inference workload (seed 001's footprint protocol) and measures what it costs:\n"
          "prompts are the first sentence of each DailyDialog dialogue (in file order: the first\n"
          "utterance up to its first . ? ! token), sent at seeded random times (a Poisson process:\n"
          "exponential gaps, mean 6 s), each generating up to 100 tokens, one at a time in arrival\n"
          "order.  Between prompts qlm sleeps; the energy of the whole window, idle included, is\n"
          "measured as the phase \"replay\".  Reports energy per prompt and per hour, idle vs active\n"
          "share of time and energy, latency p50/p95/p99 (arrival to last token, including waiting\n"
          "behind an earlier prompt) and tokens/s.\n\n"
          "  -m, --model PATH       model (default %s)\n"
          "      --tokenizer PATH   tokenizer overriding the model's\n"
          "      --data FILE        DailyDialog dialogues (default %s)\n"
          "  -d, --duration D       window: 30s, 10m, 4h ... (default 4h)\n"
          "      --speedup K        divide every arrival time and the window by K (quick runs; the\n"
          "                         idle share and per-hour figures are then those of the compressed run)\n"
          "      --mean-gap S       mean seconds between prompts (default 6)\n"
          "  -s, --seed N           schedule seed: same seed, same timestamps (default 1)\n"
          "  -n, --n-predict N      new tokens per prompt at most (default 100)\n"
          "      --temp T           0 = greedy (default); > 0 samples (top-k 40, top-p 0.95, seeded)\n"
          "  -t, --threads N        threads (default %d)\n"
          "      --json             the result as one JSON record on stdout\n"
          "  -q, --quiet            no progress or summary on stderr\n\n",
          cli_default_model(), default_data(), cli_default_threads());
  fputs(cli_measure_help, f);
  fputs(cli_db_help, f);
}

static int parse_opts(int argc, char **argv, replay_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},   {"tokenizer", required_argument, 0, 'T'}, {"data", required_argument, 0, 'D'},
      {"duration", required_argument, 0, 'd'}, {"speedup", required_argument, 0, 'K'},  {"mean-gap", required_argument, 0, 'G'},
      {"seed", required_argument, 0, 's'},    {"n-predict", required_argument, 0, 'n'}, {"temp", required_argument, 0, 'E'},
      {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'J'},            {"quiet", no_argument, 0, 'q'},
      CLI_MEASURE_OPTIONS, CLI_DB_OPTION,
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  *o = (replay_opts){.duration_s = QLM_REPLAY_DURATION_S, .duration_arg = "4h", .speedup = 1,
                     .mean_gap = QLM_REPLAY_MEAN_GAP_S, .n_predict = QLM_REPLAY_MAX_NEW_TOKENS, .seed = 1,
                     .threads = cli_default_threads()};
  cli_measure_init(&o->cm, "replay");
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:d:s:n:t:qh", opts, NULL)) != -1) {
    if (c >= CLI_MEASURE_FIRST) {
      rc = cli_measure_opt(&o->cm, c, optarg, err);
      continue;
    }
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'T': o->tokenizer = optarg; break;
    case 'D': o->data = optarg; break;
    case 'd': o->duration_arg = optarg; rc = qlm_parse_duration(optarg, &o->duration_s, err); break;
    case 'K': rc = cli_parse_float("--speedup", optarg, 1, 1e6, &o->speedup, err); break;
    case 'G': rc = cli_parse_float("--mean-gap", optarg, 1e-3, 1e6, &o->mean_gap, err); break;
    case 's': rc = cli_parse_int("--seed", optarg, 0, __LONG_MAX__, &o->seed, err); break;
    case 'n': rc = cli_parse_int("--n-predict", optarg, 1, 1 << 16, &o->n_predict, err); break;
    case 'E': rc = cli_parse_float("--temp", optarg, 0, 100, &o->temp, err); break;
    case 't': rc = cli_parse_int("--threads", optarg, 1, 256, &o->threads, err); break;
    case 'J': o->json = 1; break;
    case 'q': o->quiet = 1; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return qlm_fail(err, QLM_EUSAGE, "replay: bad option (see qlm replay --help)");
    }
  }
  if (!rc && optind < argc) rc = qlm_fail(err, QLM_EUSAGE, "replay: unexpected argument '%s'", argv[optind]);
  if (!o->model) o->model = cli_default_model();
  if (!o->data) o->data = default_data();
  return rc;
}

/* What the generator callback needs: the loaded model and one sequence's state. */
typedef struct replay_session {
  qlm_source *src;
  qlm_tokenizer *tok;
  qlm_model *model;
  qlm_state *state;
  qlm_sampler sampler;
  qlm_meter *meter;
  int n_predict;
  int truncated;      /* prompts cut to fit the context */
  double last_print;  /* progress: wall time of the last line */
  int quiet;
} replay_session;

static void session_free(replay_session *s) {
  qlm_sampler_free(&s->sampler);
  qlm_state_free(s->state);
  qlm_model_free(s->model);
  qlm_tokenizer_free(s->tok);
  qlm_source_close(s->src);
}

static int session_open(const replay_opts *o, replay_session *s, qlm_error *err) {
  s->n_predict = (int)o->n_predict;
  s->quiet = o->quiet;
  int rc = qlm_source_open(o->model, o->tokenizer, &s->src, err);
  if (rc) return rc;
  if (s->src->vocab.kind == QLM_TOK_NONE)
    return qlm_fail(err, QLM_EUSAGE, "%s: no tokenizer found; give one with --tokenizer", o->model);
  if ((rc = qlm_tokenizer_new(&s->src->vocab, &s->tok, err))) return rc;
  /* First sentences are short (at most ~520 bytes in the test split): 512 prompt positions.  The
   * state is known before the load, which refuses one that does not fit with the weights. */
  long ctx = 512 + o->n_predict;
  if (s->src->hp.n_ctx > 0 && ctx > s->src->hp.n_ctx) ctx = s->src->hp.n_ctx;
  if (ctx < 2) return qlm_fail(err, QLM_EUSAGE, "%s: context of %ld positions is too small", o->model, ctx);
  int max_batch = ctx < 512 ? (int)ctx : 512;
  char desc[80];
  snprintf(desc, sizeof desc, "at %ld positions (512 + --n-predict)", ctx);
  qlm_load_plan lp = {.n_seq = 1, .n_ctx = (int)ctx, .max_batch = max_batch, .n_threads = (int)o->threads,
                      .extra_bytes = (uint64_t)s->src->hp.n_vocab * sizeof(float), /* qlm_generate's logits */
                      .ctx_desc = desc, .hint = "use a smaller --n-predict or a quantized file"};
  if ((rc = qlm_model_load_planned(s->src, &lp, &s->model, err))) return rc;
  if ((rc = qlm_state_new(s->model, 1, (int)ctx, max_batch, (int)o->threads, &s->state, err))) return rc;
  qlm_sampler_params sp = {.temperature = (float)o->temp, .top_k = 40, .top_p = 0.95f, .seed = (uint64_t)o->seed};
  return qlm_sampler_init(&s->sampler, &sp, s->model->hp.n_vocab, err);
}

static int gen_one(void *ctx, int index, const char *prompt, qlm_replay_gen_out *out, qlm_error *err) {
  (void)index;
  replay_session *s = ctx;
  int32_t *ids = NULL;
  int n = 0;
  int rc = qlm_tokenize(s->tok, prompt, strlen(prompt), 1, 0, &ids, &n, err);
  if (rc) return rc;
  if (n == 0) { /* an empty prompt starts from BOS */
    free(ids);
    if (s->src->vocab.bos_id < 0) return qlm_fail(err, QLM_EUSAGE, "empty prompt and the tokenizer has no BOS token");
    if (!(ids = qlm_malloc(sizeof *ids, "prompt", err))) return QLM_ENOMEM;
    ids[0] = s->src->vocab.bos_id;
    n = 1;
  }
  int ctx_n = qlm_state_n_ctx(s->state);
  if (n > ctx_n - 1) { /* keep the beginning; leave room for at least two new tokens */
    n = ctx_n - 1;
    s->truncated++;
  }
  int room = ctx_n - n + 1, n_pred = s->n_predict < room ? s->n_predict : room;
  qlm_gen_request req = {.prompt = ids, .n_prompt = n, .n_predict = n_pred, .stop_at_eos = 1};
  qlm_gen_stats st = {0};
  rc = qlm_generate(s->model, s->tok, s->state, &s->sampler, &req, &st, err);
  free(ids);
  if (rc) return rc;
  out->n_prompt = st.n_prompt;
  out->n_generated = st.n_generated;
  if (s->meter) qlm_meter_add_tokens(s->meter, (uint64_t)st.n_prompt + (uint64_t)st.n_generated);
  return QLM_OK;
}

/* Cumulative joules of the meter's energy sources (the sampler thread polls them too). */
static double meter_energy(void *ctx) {
  qlm_meter *m = ctx;
  qlm_energy_totals t;
  qlm_energy_read(m->energy, &t);
  return t.cpu_j + t.ram_j + t.gpu_j;
}

static void on_item(void *ctx, int i, int n, const qlm_replay_item *it) {
  replay_session *s = ctx;
  if (s->quiet) return;
  /* a line a minute (and the last one): a 4-hour run serves ~2,400 prompts */
  if (it->end_s - s->last_print < 60 && i + 1 < n && i > 0) return;
  s->last_print = it->end_s;
  fprintf(stderr, "[%d/%d] t=%.1f s | latency %.3f s (waited %.3f s) | %d + %d tokens\n", i + 1, n, it->end_s,
          it->end_s - it->arrival_s, it->start_s - it->arrival_s, it->n_prompt, it->n_generated);
}

static const char *energy_kinds(const qlm_meter *m, char *buf, size_t cap) {
  if (!m || !m->energy) {
    snprintf(buf, cap, "not measured");
    return buf;
  }
  snprintf(buf, cap, "cpu %s, ram %s, gpu %s", qlm_energy_kind_name(qlm_energy_cpu(m->energy)->kind),
           qlm_energy_kind_name(qlm_energy_ram(m->energy)->kind), qlm_energy_kind_name(qlm_energy_gpu(m->energy)->kind));
  return buf;
}

static double share(double part, double whole) { return whole > 0 ? part / whole : NAN; }

/* The replay as one results record: printed by --json, stored by --db. */
static int fill_result(const replay_opts *o, const replay_session *s, const qlm_replay_report *r, int n_sched,
                       double co2_g, const char *kinds, qlm_result *out, qlm_error *err) {
  qlm_result res;
  qlm_result_init(&res, "replay", s->src);
  snprintf(res.protocol, sizeof res.protocol, "dailydialog-poisson");
  snprintf(res.data, sizeof res.data, "%s", o->data);
  res.tokens = r->prompt_tokens + r->generated_tokens;
  res.seconds = r->wall_s;
  const struct { const char *k; double v; } M[] = {
      {"prompts", r->n_served}, {"prompts_scheduled", n_sched}, {"prompts_queued", r->n_queued},
      {"truncated_prompts", s->truncated}, {"wall_s", r->wall_s}, {"active_s", r->active_s}, {"idle_s", r->idle_s},
      {"active_time_share", share(r->active_s, r->wall_s)}, {"idle_time_share", share(r->idle_s, r->wall_s)},
      {"energy_j", r->energy_j}, {"active_energy_j", r->active_energy_j}, {"idle_energy_j", r->idle_energy_j},
      {"active_energy_share", share(r->active_energy_j, r->energy_j)},
      {"idle_energy_share", share(r->idle_energy_j, r->energy_j)}, {"energy_per_prompt_j", r->energy_per_prompt_j},
      {"energy_per_hour_wh", r->energy_per_hour_j / 3600.0}, {"co2_g", co2_g}, {"latency_p50_s", r->latency_p50_s},
      {"latency_p95_s", r->latency_p95_s}, {"latency_p99_s", r->latency_p99_s}, {"latency_mean_s", r->latency_mean_s},
      {"latency_max_s", r->latency_max_s}, {"wait_mean_s", r->wait_mean_s}, {"prompt_tokens", (double)r->prompt_tokens},
      {"generated_tokens", (double)r->generated_tokens}, {"tokens_per_s", r->tokens_per_s}};
  int rc = 0;
  for (size_t i = 0; !rc && i < sizeof M / sizeof M[0]; i++) rc = qlm_result_add(&res, M[i].k, M[i].v, err);
  char buf[64];
  snprintf(buf, sizeof buf, "%ld", o->seed);
  rc = rc || qlm_result_set(&res, "seed", buf, err);
  snprintf(buf, sizeof buf, "%g", o->duration_s);
  rc = rc || qlm_result_set(&res, "duration_s", buf, err);
  snprintf(buf, sizeof buf, "%g", o->speedup);
  rc = rc || qlm_result_set(&res, "speedup", buf, err);
  snprintf(buf, sizeof buf, "%g", o->mean_gap);
  rc = rc || qlm_result_set(&res, "mean_gap_s", buf, err);
  snprintf(buf, sizeof buf, "%ld", o->n_predict);
  rc = rc || qlm_result_set(&res, "max_new_tokens", buf, err);
  if (o->temp > 0) snprintf(buf, sizeof buf, "temp %g top-k 40 top-p 0.95", o->temp);
  else snprintf(buf, sizeof buf, "greedy");
  rc = rc || qlm_result_set(&res, "sampling", buf, err) ||
       qlm_result_set(&res, "arrivals", "Poisson process (exponential gaps), seeded splitmix64", err) ||
       qlm_result_set(&res, "prompt", "first sentence of each dialogue's first utterance, file order", err) ||
       qlm_result_set(&res, "latency", "scheduled arrival to last token, queueing included", err) ||
       qlm_result_set(&res, "energy", kinds, err);
  if (!rc && o->speedup != 1)
    rc = qlm_result_set(&res, "note", "schedule compressed by speedup: idle share and per-hour figures are the compressed run's", err);
  *out = res;
  return rc;
}

static void report_text(const replay_opts *o, const replay_session *s, const qlm_replay_report *r, int n_sched,
                        double co2_g, const char *kinds) {
  printf("replay: model %s | prompts: first sentences of %s (file order)\n", o->model, o->data);
  printf("schedule: Poisson arrivals, mean gap %g s, seed %ld, window %s (%g s), %d prompts, up to %ld new tokens each, %s\n",
         o->mean_gap, o->seed, o->duration_arg, o->duration_s, n_sched, o->n_predict, o->temp > 0 ? "sampled" : "greedy");
  if (o->speedup != 1)
    printf("SPEEDUP %g: arrival times and the window divided by %g (%.1f s of wall time); generation is not, so the\n"
           "idle share and the per-hour figures below are those of the compressed run, not of the real schedule\n",
           o->speedup, o->speedup, o->duration_s / o->speedup);
  printf("served %d prompts (%d arrived while another was running%s) in %.1f s: active %.1f s (%.1f%%), idle %.1f s (%.1f%%)\n",
         r->n_served, r->n_queued, s->truncated ? ", some truncated to fit the context" : "", r->wall_s, r->active_s,
         100 * share(r->active_s, r->wall_s), r->idle_s, 100 * share(r->idle_s, r->wall_s));
  if (isfinite(r->energy_j))
    printf("energy (%s): %.1f J = %.6f kWh | active %.1f%%, idle %.1f%% | %.2f J per prompt | %.2f Wh per hour | %.4f gCO2e\n",
           kinds, r->energy_j, r->energy_j / 3.6e6, 100 * share(r->active_energy_j, r->energy_j),
           100 * share(r->idle_energy_j, r->energy_j), r->energy_per_prompt_j, r->energy_per_hour_j / 3600.0, co2_g);
  else
    printf("energy: not measured (--no-energy or the meter could not start)\n");
  printf("latency (arrival to last token, queueing included): p50 %.3f s | p95 %.3f s | p99 %.3f s | mean %.3f s | max %.3f s\n",
         r->latency_p50_s, r->latency_p95_s, r->latency_p99_s, r->latency_mean_s, r->latency_max_s);
  printf("tokens: %lld prompt, %lld generated | %.1f generated tokens/s while active\n", (long long)r->prompt_tokens,
         (long long)r->generated_tokens, r->tokens_per_s);
}

int cmd_replay(int argc, char **argv) {
  qlm_error err = {0};
  replay_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  char **prompts = NULL;
  double *times = NULL;
  int n_prompts = 0, n_sched = 0;
  int rc = qlm_dailydialog_load(o.data, &prompts, &n_prompts, &err);
  if (!rc) rc = qlm_replay_schedule((uint64_t)o.seed, o.mean_gap, o.duration_s, &times, &n_sched, &err);
  if (rc) {
    qlm_replay_prompts_free(prompts, n_prompts);
    return cli_report(&err);
  }
  replay_session s = {0};
  qlm_meter *meter = cli_measure_start(&o.cm);
  s.meter = meter;
  if (meter) qlm_meter_begin(meter, QLM_PHASE_LOAD);
  rc = session_open(&o, &s, &err);
  qlm_replay_report r = {0};
  qlm_phase *ph = NULL;
  if (!rc) {
    if (!o.quiet)
      fprintf(stderr, "replay: %d prompts over %s%s, first at %.2f s; sleeping between arrivals\n", n_sched,
              o.duration_arg, o.speedup != 1 ? " (compressed by --speedup)" : "", n_sched ? times[0] / o.speedup : 0.0);
    if (meter) {
      uint64_t wbytes = 0;
      for (int i = 0; i < s.src->n_tensors; i++) wbytes += s.src->tensors[i].nbytes;
      const qlm_hparams *hp = &s.model->hp;
      uint64_t kv = 2ull * 4 * (uint64_t)hp->n_layer * (uint64_t)qlm_state_n_ctx(s.state) * (uint64_t)hp->n_head_kv *
                    (uint64_t)hp->head_dim;
      qlm_meter_set_bytes(meter, wbytes, kv);
      ph = qlm_meter_begin(meter, QLM_PHASE_REPLAY);
      qlm_meter_set_bytes(meter, wbytes, kv);
    }
    qlm_replay_config cfg = {.arrivals = times, .n_arrivals = n_sched, .duration_s = o.duration_s,
                             .speedup = o.speedup, .prompts = prompts, .n_prompts = n_prompts, .gen = gen_one,
                             .gen_ctx = &s, .energy = meter && meter->energy ? meter_energy : NULL,
                             .energy_ctx = meter, .on_item = on_item, .item_ctx = &s};
    rc = qlm_replay_run(&cfg, &r, &err);
    if (meter) qlm_meter_end(meter);
  }
  if (!rc) {
    char kinds[96];
    energy_kinds(meter, kinds, sizeof kinds);
    double co2 = ph && meter->energy ? qlm_phase_co2_g(meter, ph) : NAN;
    static qlm_result res; /* static: a record is about 12 KiB */
    rc = fill_result(&o, &s, &r, n_sched, co2, kinds, &res, &err);
    if (!rc && o.json) rc = qlm_result_print_json(&res, stdout, &err);
    else if (!rc) report_text(&o, &s, &r, n_sched, co2, kinds);
    if (!rc && o.cm.db) { /* --db: the result row with the run and its phases */
      cli_db_set_model(s.src);
      rc = cli_db_add_result(&res, &err);
      if (!rc) cli_db_success();
    }
  }
  qlm_replay_report_free(&r);
  session_free(&s);
  free(times);
  qlm_replay_prompts_free(prompts, n_prompts);
  int mrc = cli_measure_end(&o.cm, meter, o.quiet || rc);
  return rc ? cli_report(&err) : mrc;
}
