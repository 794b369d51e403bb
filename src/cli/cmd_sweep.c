/* cmd_sweep.c — `qlm sweep CONFIG`: an experiment grid run into the results database, resumably
 * (src/exp/sweep.h). */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "exp/sweep.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm sweep CONFIG.json [--dry-run] [--only PATTERN] [--jobs N] [--db FILE] [options]\n\n"
          "Runs an experiment grid — models x quantization configs x tasks x repetitions — into the SQLite\n"
          "results database, one child process of qlm per job, and prints the plan first (every job, done or\n"
          "to do, with an estimated time and the total). Quantize once, evaluate many: each (model, quant)\n"
          "is quantized once into the work dir and every task reads that file.\n\n"
          "Resumable: each job's run is recorded with runs.label = the job's key, in one transaction, and a\n"
          "job is done iff that label is in the database (quantize/train jobs: and their file exists). Run the\n"
          "same command again after a crash, a kill or a failed job: it skips what is done and does the rest;\n"
          "add a model, method or task to the config and only the new cells run.\n\n"
          "Jobs and their labels:\n"
          "  quantize:MODEL/QUANT      qlm quantize -m MODEL -o WORK/MODEL/QUANT.gguf (the quant options)\n"
          "  train:MODEL/classify-...  qlm classify train on the base model (f32), head in WORK/MODEL/\n"
          "  MODEL/QUANT/TASK[#rN]     qlm ppl|classify eval|mmlu|replay on the quantized file (repetition N>1)\n"
          "Keys are canonical: QUANT = method-b<bits>-g<group>[-dq]... (\"nf4-dq\", \"absmax-b4-g64\", \"q4_K\",\n"
          "\"fp32\"), TASK = ppl-<protocol>[-w<window>][-s<stride>][-c<chunks>], classify-b<batch>[-l<limit>],\n"
          "mmlu-k<shots>[-l<limit>], replay-<duration>[-x<speedup>]; a \"name\" in the config replaces one.\n\n"
          "  --dry-run          print the plan only (creates nothing, runs nothing)\n"
          "  --only PATTERN     only the jobs whose label matches the glob ('*' also matches '/'), plus the\n"
          "                     quantize/train jobs they need; e.g. --only '*/nf4*/*' or --only '*/ppl-*'\n"
          "  -j, --jobs N       run N independent jobs at once (default 1); they share the database, and a\n"
          "                     cell waits for the quantization it reads\n"
          "  -t, --threads N    threads per child (default: the config's \"threads\", else CPUs / jobs)\n"
          "      --db FILE      results database (overrides the config's \"db\"; default %s)\n"
          "      --work-dir D   quantized models, heads and logs (default: the config's \"work_dir\", else\n"
          "                     qlm-sweep-work/ beside the database); logs/LABEL.log holds each child's output\n"
          "      --country ISO3, --pue P, --carbon-intensity G, --cpu-tdp W, --no-energy\n"
          "                     measurement flags passed to every child (override the config's)\n\n"
          "Config (JSON; relative paths are relative to the current directory; paths may use ~, $HOME,\n"
          "$QLM_SHARED (default: ../shared, else the shared folder beside qlm's checkout) or any set $VARIABLE):\n"
          "  {\n"
          "    \"name\": \"my-grid\",                      label of the sweep in messages\n"
          "    \"db\": \"results.db\",                     results database (default %s)\n"
          "    \"work_dir\": \"work\",                     default: <db dir>/qlm-sweep-work\n"
          "    \"models\": [\"$QLM_SHARED/models/stories260K/stories260K.gguf\",\n"
          "               {\"name\": \"smollm2\", \"path\": \"~/.cache/qlm/models/SmolLM2-135M-Instruct.Q4_1.gguf\"}],\n"
          "    \"quant\": [\"fp32\",                       fp32: the model dequantized to f32 at load\n"
          "              \"base\",                       base: the model file as it is\n"
          "              {\"method\": \"absmax\", \"bits\": [8, 4], \"group\": [\"channel\", 64]},  products expand\n"
          "              {\"method\": \"nf4\", \"dq\": true},\n"
          "              {\"method\": \"gptq\", \"bits\": 4, \"group\": 128, \"calib_samples\": 32, \"calib_len\": 512},\n"
          "              {\"type\": \"q4_K\"}],                  llama.cpp types\n"
          "       other quant keys: threshold, opt (\"k=v\" or a list), rules (list of --rule lines),\n"
          "       rules_file, calib, seed, keep_embeddings, target_bpw, args (extra options), name\n"
          "    \"tasks\": [\n"
          "      {\"task\": \"ppl\", \"protocol\": \"hf-window\", \"window\": 1024, \"stride\": 512, \"chunks\": 0},\n"
          "      {\"task\": \"classify\", \"batch\": [1, 32, 64], \"limit\": 0},   head trained once per model;\n"
          "                                                   one cell per batch size (\"feature\", \"seed\")\n"
          "      {\"task\": \"mmlu\", \"shots\": 5, \"limit\": 20, \"subjects\": [\"astronomy\"]},\n"
          "      {\"task\": \"replay\", \"duration\": \"4h\", \"speedup\": 60}],\n"
          "       every task also takes \"data\" (a data path), \"args\" (extra options) and \"name\"\n"
          "    \"batch\": [32, 64],          default batch sizes of classify tasks\n"
          "    \"repetitions\": 1,           each task cell this many times (run-to-run noise for qlm compare)\n"
          "    \"country\": \"ESP\", \"pue\": 1.0, \"carbon_intensity\": 150, \"no_energy\": false,\n"
          "    \"threads\": 2\n"
          "  }\n"
          "A typo in a key, a wrong type or an unknown method/protocol is an error naming the file and key.\n\n"
          "Estimates: the mean time of earlier runs of the same task on the same model (another quant) or of\n"
          "the same command on the same model file in the database; else a rough guess from the parameter\n"
          "count (marked ~).\n\n"
          "Exit status: 0 when every job is done; else that of the first failed job (its class), after\n"
          "running every job that does not depend on it.\n\n"
          "examples:\n"
          "  qlm sweep examples/stories260K-sweep.json --dry-run\n"
          "  qlm sweep examples/stories260K-sweep.json --jobs 2\n"
          "  qlm sweep examples/seed000-smollm2.json --country ESP --only '*/ppl-*'\n"
          "  qlm report --db seed000.db     (tables and charts of what the sweep recorded)\n",
          QLM_DB_DEFAULT_PATH, QLM_DB_DEFAULT_PATH);
}

enum { OPT_DRY = 0x2000, OPT_ONLY, OPT_WORK, OPT_DB, OPT_COUNTRY, OPT_PUE, OPT_CARBON, OPT_TDP, OPT_NOENERGY };

/* A measurement flag given on the command line replaces the config's of the same name. */
static int set_measure(qlm_sweep_config *cfg, const char *opt, const char *val, qlm_error *err) {
  qlm_sweep_args a = {0};
  int rc = QLM_OK;
  for (int i = 0; i < cfg->measure.n && !rc; i++) {
    int has_val = strcmp(cfg->measure.v[i], "--no-energy") != 0;
    if (!strcmp(cfg->measure.v[i], opt)) {
      i += has_val;
      continue;
    }
    rc = qlm_sweep_args_push(&a, cfg->measure.v[i], err);
    if (!rc && has_val && i + 1 < cfg->measure.n) rc = qlm_sweep_args_push(&a, cfg->measure.v[++i], err);
  }
  if (!rc) rc = qlm_sweep_args_push(&a, opt, err);
  if (!rc && val) rc = qlm_sweep_args_push(&a, val, err);
  if (rc) {
    qlm_sweep_args_free(&a);
    return rc;
  }
  qlm_sweep_args_free(&cfg->measure);
  cfg->measure = a;
  return QLM_OK;
}

int cmd_sweep(int argc, char **argv) {
  static const struct option opts[] = {
      {"dry-run", no_argument, 0, OPT_DRY},   {"only", required_argument, 0, OPT_ONLY},
      {"jobs", required_argument, 0, 'j'},    {"threads", required_argument, 0, 't'},
      {"db", required_argument, 0, OPT_DB},   {"work-dir", required_argument, 0, OPT_WORK},
      {"country", required_argument, 0, OPT_COUNTRY}, {"pue", required_argument, 0, OPT_PUE},
      {"carbon-intensity", required_argument, 0, OPT_CARBON}, {"cpu-tdp", required_argument, 0, OPT_TDP},
      {"no-energy", no_argument, 0, OPT_NOENERGY}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  qlm_error err = {0};
  qlm_sweep_opts so = {.jobs = 1, .out = stdout};
  const char *db = NULL, *work = NULL;
  const char *measure[16];
  int n_measure = 0;
  long v;
  double d;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "j:t:h", opts, NULL)) != -1) {
    switch (c) {
    case OPT_DRY: so.dry_run = 1; break;
    case OPT_ONLY: so.only = optarg; break;
    case 'j':
      if (cli_parse_int("--jobs", optarg, 1, 256, &v, &err)) return cli_report(&err);
      so.jobs = (int)v;
      break;
    case 't':
      if (cli_parse_int("--threads", optarg, 1, 1024, &v, &err)) return cli_report(&err);
      so.threads = (int)v;
      break;
    case OPT_DB: db = optarg; break;
    case OPT_WORK: work = optarg; break;
    case OPT_PUE:
    case OPT_CARBON:
    case OPT_TDP:
      if (cli_parse_float(c == OPT_PUE ? "--pue" : c == OPT_CARBON ? "--carbon-intensity" : "--cpu-tdp", optarg,
                          c == OPT_PUE ? 1 : c == OPT_TDP ? 0.1 : 0, c == OPT_PUE ? 10 : 1e5, &d, &err))
        return cli_report(&err);
      /* fall through */
    case OPT_COUNTRY:
    case OPT_NOENERGY:
      if (n_measure + 2 > 16) return cli_report(&(qlm_error){QLM_EUSAGE, "sweep: too many measurement flags"});
      measure[n_measure++] = c == OPT_COUNTRY ? "--country" : c == OPT_PUE ? "--pue" : c == OPT_CARBON ? "--carbon-intensity"
                             : c == OPT_TDP ? "--cpu-tdp" : "--no-energy";
      measure[n_measure++] = c == OPT_NOENERGY ? NULL : optarg;
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return QLM_EUSAGE;
    }
  }
  if (optind != argc - 1) {
    usage(stderr);
    return cli_report(&(qlm_error){QLM_EUSAGE, "sweep: give exactly one config file (qlm sweep CONFIG.json)"});
  }
  qlm_sweep_config *cfg = NULL;
  if (qlm_sweep_load(argv[optind], &cfg, &err)) return cli_report(&err);
  int rc = (db && qlm_sweep_set(&cfg->db, db, &err)) || (work && qlm_sweep_set(&cfg->work_dir, work, &err));
  for (int i = 0; !rc && i < n_measure; i += 2) rc = set_measure(cfg, measure[i], measure[i + 1], &err);
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) snprintf(exe, sizeof exe, "/proc/self/exe");
  else exe[n] = 0;
  so.exe = exe;
  if (!rc) rc = qlm_sweep_run(cfg, &so, &err);
  qlm_sweep_config_free(cfg);
  return rc ? cli_report(&err) : 0;
}
