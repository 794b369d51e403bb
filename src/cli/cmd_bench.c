/* cmd_bench.c — `qlm bench`: llama-bench-style prefill/decode tokens/s with each result's
 * fraction of the machine's roofline.
 *
 * Roofline probes (src/generate/bench.c, cached in ~/.cache/qlm/machine.json per CPU model and
 * core count):
 *  - memory bandwidth: threads stream-read their slices of a buffer 8x the last-level cache
 *    (>= 256 MiB) with wide integer loads into independent accumulators; best of 3 passes;
 *  - FMA peak: per thread 16 (AVX-512) / 12 (AVX2) independent fp32 FMA chains (enough to hide
 *    the FMA latency); FLOPs = iterations x chains x lanes x 2; best of 3.
 * Decode roofline = bandwidth ÷ bytes of weights per token (all linear layers + output head, in
 * storage; embedding lookup excluded); prefill roofline = FMA peak ÷ (2 x those params). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "generate/bench.h"
#include "model/model.h"

#define BENCH_MAX_MODELS 32

typedef struct bench_opts {
  const char *models[BENCH_MAX_MODELS];
  int n_models;
  long n_p, n_g, reps;
  int threads[QLM_MACHINE_MAX_THREADS], n_threads;
  qlm_bench_format fmt;
  const char *cache; /* NULL: default path */
  int no_cache, no_roof, reprobe;
  cli_measure cm;    /* --country, --emissions, --db FILE, ...: phases load / prefill / generate */
} bench_opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm bench -m MODEL [-m MODEL2 ...] [-p 512] [-n 128] [-t 1,2] [-r 3] [--csv|--json]\n\n"
          "Tokens/s in llama-bench's manner, per model and thread count:\n"
          "  ppN  prefill: one batched forward of N pseudo-random tokens from an empty cache;\n"
          "  tgN  decode: N single-token forwards after a 1-token prompt.\n"
          "Each test runs once to warm up, then -r times: mean ± sample standard deviation.\n\n"
          "Rooflines (each result's fraction of what the machine allows):\n"
          "  decode  t/s <= memory bandwidth ÷ bytes of weights read per token (every linear layer's\n"
          "          matrices + the output head, in their storage type; the embedding lookup excluded);\n"
          "  prefill t/s <= FMA peak ÷ (2 x params of those matrices).\n"
          "The machine's limits are measured once per thread count and cached in %s\n"
          "(keyed by the CPU model string and core count; another CPU invalidates it):\n"
          "  bandwidth: the threads stream-read their own slices of a buffer 8x the last-level cache\n"
          "             (at least 256 MiB, first touched by the same threads) with aligned 64/32-byte\n"
          "             integer loads into 4 independent accumulators; bytes ÷ time, best of 3 passes.\n"
          "  FMA peak:  each thread runs 16 (AVX-512) or 12 (AVX2) independent chains of fp32 vector\n"
          "             FMAs (enough in flight to hide the FMA latency); FLOPs = iterations x chains x\n"
          "             lanes x 2 ÷ time, best of 3.  Uses what the CPU supports, not the QLM_SIMD cap.\n\n"
          "  -m, --model PATH      model to measure (repeatable, up to %d)\n"
          "  -p, --n-prompt N      prefill tokens (default 512)\n"
          "  -n, --n-gen N         decode tokens (default 128)\n"
          "  -t, --threads LIST    comma-separated thread counts (default 1,2)\n"
          "  -r, --repetitions N   repetitions per test (default 3, at most %d)\n"
          "      --csv             CSV instead of Markdown\n"
          "      --json            JSON instead of Markdown\n"
          "      --machine-cache F cache file for the probes (default above)\n"
          "      --no-cache        probe, do not read or write the cache\n"
          "      --reprobe         probe again and rewrite the cache\n"
          "      --no-roofline     skip the probes and the roofline columns\n\n"
          "The meter records the phases load (each model), prefill (every pp run, warm-up included) and\n"
          "generate (every tg run) with their time, peak RAM and energy; with --db each model x thread\n"
          "count is one result (task \"bench\": pp_tps, pp_tps_sd, tg_tps, tg_tps_sd, pp_roof, tg_roof).\n"
          "The energy sampler wakes once per --energy-interval; --no-energy removes even that.\n",
          "~/.cache/qlm/machine.json", BENCH_MAX_MODELS, QLM_BENCH_MAX_REPS);
  fputs(cli_db_help, f);
  fputs(cli_measure_help, f);
}

static int parse_threads(const char *s, bench_opts *o, qlm_error *err) {
  o->n_threads = 0;
  const char *p = s;
  while (*p) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 1 || v > 1024 || (*end && *end != ','))
      return qlm_fail(err, QLM_EUSAGE, "--threads '%s': expected comma-separated counts 1..1024", s);
    if (o->n_threads >= QLM_MACHINE_MAX_THREADS)
      return qlm_fail(err, QLM_EUSAGE, "--threads '%s': at most %d counts", s, QLM_MACHINE_MAX_THREADS);
    o->threads[o->n_threads++] = (int)v;
    p = *end ? end + 1 : end;
  }
  if (!o->n_threads) return qlm_fail(err, QLM_EUSAGE, "--threads: empty list");
  return 0;
}

static int parse_opts(int argc, char **argv, bench_opts *o, qlm_error *err) {
  enum { O_CSV = 0x100, O_JSON, O_CACHE, O_NOCACHE, O_REPROBE, O_NOROOF };
  static const struct option opts[] = {{"model", required_argument, 0, 'm'},        {"n-prompt", required_argument, 0, 'p'},
                                       {"n-gen", required_argument, 0, 'n'},        {"threads", required_argument, 0, 't'},
                                       {"repetitions", required_argument, 0, 'r'},  {"csv", no_argument, 0, O_CSV},
                                       {"json", no_argument, 0, O_JSON},            {"machine-cache", required_argument, 0, O_CACHE},
                                       {"no-cache", no_argument, 0, O_NOCACHE},     {"reprobe", no_argument, 0, O_REPROBE},
                                       {"no-roofline", no_argument, 0, O_NOROOF},   {"help", no_argument, 0, 'h'},
                                       CLI_DB_OPTION,                               CLI_MEASURE_OPTIONS,
                                       {0, 0, 0, 0}};
  *o = (bench_opts){.n_p = 512, .n_g = 128, .reps = 3, .threads = {1, 2}, .n_threads = 2};
  cli_measure_init(&o->cm, "bench");
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:p:n:t:r:h", opts, NULL)) != -1) {
    switch (c) {
    case 'm':
      if (o->n_models >= BENCH_MAX_MODELS) return qlm_fail(err, QLM_EUSAGE, "bench: at most %d models", BENCH_MAX_MODELS);
      o->models[o->n_models++] = optarg;
      break;
    case 'p': rc = cli_parse_int("--n-prompt", optarg, 1, 1 << 16, &o->n_p, err); break;
    case 'n': rc = cli_parse_int("--n-gen", optarg, 1, 1 << 16, &o->n_g, err); break;
    case 'r': rc = cli_parse_int("--repetitions", optarg, 1, QLM_BENCH_MAX_REPS, &o->reps, err); break;
    case 't': rc = parse_threads(optarg, o, err); break;
    case O_CSV: o->fmt = QLM_BENCH_CSV; break;
    case O_JSON: o->fmt = QLM_BENCH_JSON; break;
    case O_CACHE: o->cache = optarg; break;
    case O_NOCACHE: o->no_cache = 1; break;
    case O_REPROBE: o->reprobe = 1; break;
    case O_NOROOF: o->no_roof = 1; break;
    case 'h': usage(stdout); exit(0);
    default:
      if (c >= CLI_MEASURE_FIRST) {
        rc = cli_measure_opt(&o->cm, c, optarg, err);
        break;
      }
      usage(stderr); return qlm_fail(err, QLM_EUSAGE, "bench: bad option (see qlm bench --help)");
    }
  }
  if (rc) return rc;
  if (optind < argc) return qlm_fail(err, QLM_EUSAGE, "bench: unexpected argument '%s' (models go after -m)", argv[optind]);
  if (!o->n_models) o->models[o->n_models++] = cli_default_model();
  return 0;
}

static const char *base_name(const char *path) {
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--; /* HF folders given with a trailing slash */
  const char *s = path + n;
  while (s > path && s[-1] != '/') s--;
  return s;
}

/* Measure one model at every thread count, appending 2 rows per count to rows[*n]. */
/* The pp and tg runs of one thread count, each in its meter phase (tokens: warm-up included). */
static int bench_timed(const bench_opts *o, const qlm_model *m, int threads, qlm_meter *meter, double *pp_tps,
                       double *tg_tps, qlm_error *err) {
  if (meter) qlm_meter_begin(meter, QLM_PHASE_PREFILL);
  int rc = qlm_bench_model(m, (int)o->n_p, (int)o->n_g, threads, (int)o->reps, pp_tps, NULL, err);
  if (meter && !rc) qlm_meter_add_tokens(meter, (uint64_t)(o->reps + 1) * (uint64_t)o->n_p);
  if (meter) qlm_meter_begin(meter, QLM_PHASE_GENERATE);
  if (!rc) rc = qlm_bench_model(m, (int)o->n_p, (int)o->n_g, threads, (int)o->reps, NULL, tg_tps, err);
  if (meter && !rc) qlm_meter_add_tokens(meter, 16 + (uint64_t)o->reps * (uint64_t)o->n_g); /* 16: warm-up prompt */
  return rc;
}

/* One result per thread count for --db: the two rows' means, sds and roofline fractions. */
static int bench_record(const bench_opts *o, const qlm_source *src, const qlm_bench_row *pp, const qlm_bench_row *tg,
                        qlm_error *err) {
  qlm_result r;
  char buf[32];
  qlm_result_init(&r, "bench", src);
  r.tokens = (int64_t)(o->n_p + o->n_g) * o->reps;
  r.seconds = o->reps * (o->n_p / (pp->mean > 0 ? pp->mean : 1) + o->n_g / (tg->mean > 0 ? tg->mean : 1));
  int rc = qlm_result_add(&r, "pp_tps", pp->mean, err) || qlm_result_add(&r, "pp_tps_sd", pp->sd, err) ||
           qlm_result_add(&r, "tg_tps", tg->mean, err) || qlm_result_add(&r, "tg_tps_sd", tg->sd, err) ||
           qlm_result_add(&r, "pp_roof", pp->roof_tps > 0 ? pp->mean / pp->roof_tps : NAN, err) ||
           qlm_result_add(&r, "tg_roof", tg->roof_tps > 0 ? tg->mean / tg->roof_tps : NAN, err);
  snprintf(buf, sizeof buf, "%d", pp->threads);
  rc = rc || qlm_result_set(&r, "threads", buf, err);
  snprintf(buf, sizeof buf, "%ld", o->n_p);
  rc = rc || qlm_result_set(&r, "n_prompt", buf, err);
  snprintf(buf, sizeof buf, "%ld", o->n_g);
  rc = rc || qlm_result_set(&r, "n_gen", buf, err);
  snprintf(buf, sizeof buf, "%ld", o->reps);
  rc = rc || qlm_result_set(&r, "repetitions", buf, err);
  return rc ? err->code : cli_db_add_result(&r, err);
}

/* The states qlm_bench_model (generate/bench.c) makes, as one load plan: the prefill run's
 * (n_p + 1 positions, n_p rows) and the decode run's (n_g + 2 positions, 16 rows), each at least
 * 17 positions and 16 rows, one at a time — the plan takes the larger context and the larger
 * row count (exact for the default -p 512 -n 128, an upper bound otherwise) at the largest thread
 * count, plus the token ids and the logits row. */
static qlm_load_plan bench_plan(const bench_opts *o, const qlm_source *src, char *desc, size_t cap) {
  int pp_tok = o->n_p > 16 ? (int)o->n_p : 16, tg_tok = o->n_g + 1 > 16 ? (int)o->n_g + 1 : 16,
      n_tok = pp_tok > tg_tok ? pp_tok : tg_tok, threads = 1;
  for (int i = 0; i < o->n_threads; i++)
    if (o->threads[i] > threads) threads = o->threads[i];
  snprintf(desc, cap, "at %d positions (-p %ld, -n %ld)", n_tok + 1, o->n_p, o->n_g);
  return (qlm_load_plan){.n_seq = 1, .n_ctx = n_tok + 1, .max_batch = pp_tok, .n_threads = threads,
                         .extra_bytes = (uint64_t)n_tok * sizeof(int32_t) + (uint64_t)src->hp.n_vocab * sizeof(float),
                         .ctx_desc = desc, .hint = "use a smaller -p/-n or a quantized file"};
}

static int bench_one(const bench_opts *o, const char *path, const qlm_machine *mach, qlm_bench_row *rows, int *n,
                     char *names, qlm_meter *meter, qlm_error *err) {
  qlm_source *src = NULL;
  qlm_model *m = NULL;
  if (meter) qlm_meter_begin(meter, QLM_PHASE_LOAD);
  int rc = qlm_source_open(path, NULL, &src, err);
  char desc[80];
  qlm_load_plan lp;
  if (!rc) lp = bench_plan(o, src, desc, sizeof desc);
  if (!rc) rc = qlm_model_load_planned(src, &lp, &m, err);
  if (rc) {
    qlm_source_close(src);
    return rc;
  }
  double size = 0;
  for (int i = 0; i < src->n_tensors; i++) size += (double)src->tensors[i].nbytes;
  qlm_model_cost cost;
  qlm_model_cost_of(m, &cost);
  if (meter) qlm_meter_set_bytes(meter, (uint64_t)size, 0);
  if (o->cm.db && o->n_models == 1) cli_db_set_model(src);
  snprintf(names, 256, "%.255s", base_name(path));
  for (int ti = 0; ti < o->n_threads && !rc; ti++) {
    qlm_bench_row *pp = &rows[(*n)++], *tg = &rows[(*n)++];
    rc = bench_timed(o, m, o->threads[ti], meter, pp->tps, tg->tps, err);
    int k = mach ? qlm_machine_find(mach, o->threads[ti]) : -1;
    for (int t = 0; t < 2 && !rc; t++) {
      qlm_bench_row *r = t == 0 ? pp : tg;
      r->model = names;
      r->type = qlm_type_name(m->layers[0].w_up.type);
      r->size_bytes = size;
      r->cost = cost;
      r->threads = o->threads[ti];
      r->test = t;
      r->n_tokens = (int)(t == 0 ? o->n_p : o->n_g);
      r->reps = (int)o->reps;
      qlm_bench_stats(r->tps, r->reps, &r->mean, &r->sd);
      r->roof_tps = k < 0 ? 0
                    : t == 0 ? qlm_roofline_prefill_tps(mach->fma_flops[k], cost.params)
                             : qlm_roofline_decode_tps(mach->bw_Bps[k], cost.bytes_per_token);
      if (o->fmt == QLM_BENCH_MD) /* progress on stderr: a long run shows life */
        fprintf(stderr, "qlm bench: %s %d threads %s%d: %.2f ± %.2f t/s\n", names, r->threads, t ? "tg" : "pp",
                r->n_tokens, r->mean, r->sd);
    }
    if (!rc && o->cm.db) rc = bench_record(o, src, pp, tg, err);
  }
  qlm_model_free(m);
  qlm_source_close(src);
  return rc;
}

int cmd_bench(int argc, char **argv) {
  qlm_error err = {0};
  bench_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  qlm_machine mach = {0};
  int have_mach = 0;
  if (!o.no_roof) {
    char buf[1024];
    const char *path = o.no_cache ? NULL : o.cache ? o.cache : qlm_machine_cache_path(buf, sizeof buf);
    if (qlm_machine_limits(path, o.threads, o.n_threads, o.reprobe || o.no_cache, &mach, &err)) return cli_report(&err);
    have_mach = 1;
  }
  int cap = o.n_models * o.n_threads * 2;
  qlm_bench_row *rows = calloc((size_t)cap, sizeof *rows);
  char(*names)[256] = calloc((size_t)o.n_models, sizeof *names);
  int n = 0, rc = 0;
  if (!rows || !names) {
    free(rows);
    free(names);
    qlm_fail(&err, QLM_ENOMEM, "bench: cannot allocate the result table");
    return cli_report(&err);
  }
  qlm_meter *meter = cli_measure_start(&o.cm);
  for (int i = 0; i < o.n_models && !rc; i++)
    rc = bench_one(&o, o.models[i], have_mach ? &mach : NULL, rows, &n, names[i], meter, &err);
  if (!rc) rc = qlm_bench_print(stdout, o.fmt, have_mach ? &mach : NULL, rows, n, &err);
  free(rows);
  free(names);
  if (rc) cli_report(&err);
  int mrc = cli_measure_end(&o.cm, meter, o.fmt != QLM_BENCH_MD || rc);
  return rc ? (err.code ? err.code : QLM_EINTERNAL) : mrc;
}
