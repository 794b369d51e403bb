/* cmd_quantize.c — `qlm quantize` (any method, selective precision) and `qlm export-gguf`
 * (llama.cpp block types only, a file llama.cpp loads). */
#include <getopt.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/shared_dir.h"
#include "kernels/cpu.h"
#include "quant/quantize.h"

typedef struct quant_opts {
  const char *model, *tokenizer, *out;
  const qlm_quant_method *method;
  qlm_quant_opts qo;
  int type, embd_type;
  long threads;
  qlm_rules *rules;
  bool export_gguf;        /* export-gguf: --type only */
  const char *calib;       /* calibration text */
  long calib_samples, calib_len, seed;
  bool calib_bf16;         /* --calib-dtype bf16 (the default from AVX-512 up: faster there) */
  double target_bpw;
  cli_measure cm;          /* --country, --emissions, ... */
} quant_opts;

static char g_default_calib[512];
/* The default calibration text: C4 under the shared folder (core/shared_dir.h). */
static const char *default_calib(void) {
  return qlm_shared_path(QLM_CALIB_DEFAULT_TEXT, g_default_calib, sizeof g_default_calib);
}

static void list_methods(FILE *f) {
  const qlm_quant_method *const *m = qlm_quant_methods();
  for (int i = 0; m[i]; i++) fprintf(f, "  %-10s %s\n  %-10s   options: %s\n", m[i]->name, m[i]->summary, "",
                                     m[i]->options ? m[i]->options : "-");
}

static void usage(FILE *f, bool export_gguf) {
  if (export_gguf) {
    fprintf(f,
            "usage: qlm export-gguf -m MODEL -o OUT.gguf --type TYPE [--keep-embeddings f32|f16|same] [-t N]\n\n"
            "Writes a GGUF file llama.cpp loads: linear weights in llama.cpp's block type TYPE (%s),\n"
            "byte-identical to llama.cpp's reference quantizers; same as qlm quantize --type TYPE.\n",
            qlm_quantize_types);
    return;
  }
  fprintf(f,
          "usage: qlm quantize -m MODEL -o OUT.gguf (--method M [--bits B] [--group G] | --type TYPE)\n"
          "                    [--rules FILE] [--rule 'SELECTOR ACTION [key=value...]'] [options]\n\n"
          "Quantizes the linear-layer weights (attn_q/k/v/output, attn_qkv, ffn_gate/up/down) with a method\n"
          "and writes the qlm model file: one GGUF holding the quantized tensors (qlm's own types where\n"
          "llama.cpp has none), the method and options of every tensor, the source and the time taken.\n"
          "qlm run/info/eval load it directly. Norms and biases stay f32; embeddings and output head f32\n"
          "unless --keep-embeddings or a rule says otherwise. Any input qlm loads works (HF folder, GGUF,\n"
          "also already-quantized, llama2.c); it is dequantized first. Written to a temporary file and renamed.\n\n"
          "  -m, --model PATH          GGUF file, HF folder or llama2.c .bin (default %s)\n"
          "      --tokenizer PATH      tokenizer.bin / tokenizer.json overriding the model's\n"
          "  -o, --output PATH         the file to write (required)\n"
          "      --method M            quantization method for the linear layers (below)\n"
          "      --bits B              bits per weight (absmax/zeropoint: 2..8)\n"
          "      --group G             group size along a row: a number, 'channel' (default) or 'tensor'\n"
          "      --dq                  nf4/fp4: double quantization of the absmax constants\n"
          "      --threshold T         llm-int8: outlier threshold on |activation| (default 6.0)\n"
          "      --opt KEY=VALUE       any other method option\n"
          "      --type TYPE           llama.cpp type instead of a method: %s\n"
          "      --rules FILE          selective precision rules, one per line (first match wins)\n"
          "      --rule 'RULE'         one rule on the command line (before the file's rules; repeatable)\n"
          "      --keep-embeddings T   token_embd/output: f32 (default), f16, or same (= the linear layers)\n"
          "      --calib FILE          calibration text for calibrated methods (gptq): .jsonl with a \"text\"\n"
          "                            field per line, or plain text; default %s\n"
          "                            (C4 web text: never the WikiText-2 test split used for perplexity)\n"
          "      --calib-samples N     windows of calibration text (default 128)\n"
          "      --calib-len L         tokens per window (default 2048, capped by the model's context)\n"
          "      --seed S              where the windows start (default 0)\n"
          "      --calib-dtype D       bf16 (default) or f32: bf16 runs the calibration forward's linear\n"
          "                            products, its attention scores and weights x values and the Hessians\n"
          "                            X^T X with bf16 inputs and f32 sums (softmax, norms stay f32), as the\n"
          "                            reference GPTQ/AWQ calibrate in fp16: 2.2x faster than f32 with\n"
          "                            AVX512_BF16, 1.1-1.2x with AVX-512F (the same bf16 products as f32\n"
          "                            FMAs); f32 is the default on AVX2 (bf16 0.8-0.9x there, the same bits)\n"
          "                            and below\n"
          "      --target-bpw B        mixed precision: give each linear matrix 2/3/4/5/6/8 bits (as the\n"
          "                            method allows) so they average B bits/weight, spending bits where the\n"
          "                            layer's output error on the calibration text drops most\n"
          "      --activations qint8   quanto: int8 inputs of every linear with a static per-tensor scale\n"
          "                            calibrated on --calib text (quanto's Calibration(), momentum 0.9);\n"
          "                            stored as '<weight>.input_scale' (= --opt activations=qint8)\n"
          "      --duo                 awq: AutoAWQ's duo scaling s = s_x^a / s_w^(1-a) (= --opt duo=1;\n"
          "                            default off: llm-awq's s = s_x^a)\n"
          "  -t, --threads N           threads (default: all %d CPUs)\n\n"
          "Methods:\n",
          cli_default_model(), qlm_quantize_types, default_calib(), cli_default_threads());
  list_methods(f);
  fprintf(f,
          "\nRules: SELECTOR ACTION [key=value ...], SELECTOR = * or comma-separated layers=0-4|10,\n"
          "component=attn_q|attn_k|attn_v|attn_o|ffn_gate|ffn_up|ffn_down|embd|output|attn|ffn|linear,\n"
          "name=GLOB; ACTION = a method or f32/f16. Example (int8 in the first 5 layers, the rest f32):\n"
          "  qlm quantize -m model.gguf -o out.gguf --rule 'layers=0-4,component=linear absmax bits=8' --rule '* f32'\n\n"
          "Prints per tensor: i/N, shape, method, bits/weight, relative error ||W-Q||/||W||, max |W-Q|, ETA;\n"
          "then sizes before/after and the quantization time.\n"
          "examples:\n"
          "  qlm quantize -m stories260K.gguf -o s.nf4.gguf --method nf4 --dq\n"
          "  qlm quantize -m stories260K.gguf -o s.a8.gguf --method quanto --activations qint8\n"
          "  qlm quantize -m stories260K.gguf -o s.gptq.gguf --method gptq --bits 4 --group 32 --opt act_order=1\n"
          "  qlm quantize -m stories260K.gguf -o s.awq.gguf --method awq --bits 4 --group 32 --duo\n"
          "  qlm quantize -m SmolLM2.gguf -o s.a4.gguf --method absmax --bits 4 --group 64\n"
          "  qlm quantize -m stories260K.gguf -o s.q8_0.gguf --type q8_0\n\n");
  fputs(cli_measure_help, f);
  fputs(cli_db_help, f);
}

static int add_opt(quant_opts *o, const char *key, const char *value, qlm_error *err) {
  return qlm_quant_opts_parse_kv(&o->qo, key, value, "quantize", err);
}

static int parse_method_opt(quant_opts *o, int c, const char *arg, qlm_error *err) {
  char kv[256];
  char *eq;
  switch (c) {
  case 'M':
    if (!(o->method = qlm_quant_method_find(arg)))
      return qlm_fail(err, QLM_EUSAGE, "--method: unknown method '%s' (see qlm quantize --help)", arg);
    return QLM_OK;
  case 'b': return add_opt(o, "bits", arg, err);
  case 'g': return add_opt(o, "group", arg, err);
  case 'd': return add_opt(o, "dq", "1", err);
  case 'H': return add_opt(o, "threshold", arg, err);
  case 'A': return add_opt(o, "activations", arg, err);
  case 'D': return add_opt(o, "duo", "1", err);
  case 'O':
    snprintf(kv, sizeof kv, "%s", arg);
    if (!(eq = strchr(kv, '='))) return qlm_fail(err, QLM_EUSAGE, "--opt: '%s' should be KEY=VALUE", arg);
    *eq = 0;
    return add_opt(o, kv, eq + 1, err);
  case 'R': return qlm_rules_add(o->rules, arg, "--rule", err);
  case 'F': return qlm_rules_add_file(o->rules, arg, err);
  default: return QLM_OK;
  }
}

static int parse_opts(int argc, char **argv, quant_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},  {"tokenizer", required_argument, 0, 'T'},
      {"output", required_argument, 0, 'o'}, {"type", required_argument, 0, 'y'},
      {"method", required_argument, 0, 'M'}, {"bits", required_argument, 0, 'b'},
      {"group", required_argument, 0, 'g'},  {"dq", no_argument, 0, 'd'},
      {"threshold", required_argument, 0, 'H'}, {"opt", required_argument, 0, 'O'},
      {"rule", required_argument, 0, 'R'},   {"rules", required_argument, 0, 'F'},
      {"keep-embeddings", required_argument, 0, 'e'}, {"threads", required_argument, 0, 't'},
      {"calib", required_argument, 0, 'C'},  {"calib-samples", required_argument, 0, 'S'},
      {"calib-len", required_argument, 0, 'L'}, {"seed", required_argument, 0, 's'},
      {"calib-dtype", required_argument, 0, 'c'},
      {"target-bpw", required_argument, 0, 'B'}, {"activations", required_argument, 0, 'A'},
      {"duo", no_argument, 0, 'D'},
      CLI_MEASURE_OPTIONS, CLI_DB_OPTION,
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:o:t:h", opts, NULL)) != -1) {
    if (c >= CLI_MEASURE_FIRST) {
      rc = cli_measure_opt(&o->cm, c, optarg, err);
      continue;
    }
    if (o->export_gguf && strchr("MbgdHORFCSLsBADc", c))
      return qlm_fail(err, QLM_EUSAGE, "export-gguf takes --type only (use qlm quantize for methods and rules)");
    switch (c) {
    case 'm': o->model = optarg; break;
    case 'T': o->tokenizer = optarg; break;
    case 'o': o->out = optarg; break;
    case 'y':
      if ((o->type = qlm_quantize_parse_type(optarg)) < 0)
        rc = qlm_fail(err, QLM_EUSAGE, "--type: '%s' is not one of %s", optarg, qlm_quantize_types);
      break;
    case 'e':
      if (strcmp(optarg, "same") == 0) o->embd_type = -1;
      else if (strcmp(optarg, "f32") == 0) o->embd_type = QLM_TYPE_F32;
      else if (strcmp(optarg, "f16") == 0) o->embd_type = QLM_TYPE_F16;
      else rc = qlm_fail(err, QLM_EUSAGE, "--keep-embeddings: '%s' is not f32, f16 or same", optarg);
      break;
    case 't': rc = cli_parse_int("--threads", optarg, 1, 256, &o->threads, err); break;
    case 'C': o->calib = optarg; break;
    case 'S': rc = cli_parse_int("--calib-samples", optarg, 1, 1 << 20, &o->calib_samples, err); break;
    case 'L': rc = cli_parse_int("--calib-len", optarg, 2, 1 << 20, &o->calib_len, err); break;
    case 's': rc = cli_parse_int("--seed", optarg, 0, 0x7fffffffL, &o->seed, err); break;
    case 'c':
      if (strcmp(optarg, "f32") && strcmp(optarg, "bf16"))
        rc = qlm_fail(err, QLM_EUSAGE, "--calib-dtype: '%s' is not f32 or bf16", optarg);
      else o->calib_bf16 = !strcmp(optarg, "bf16");
      break;
    case 'B': {
      char *end;
      o->target_bpw = strtod(optarg, &end);
      if (*end || end == optarg || !(o->target_bpw >= 1.0 && o->target_bpw <= 32.0))
        rc = qlm_fail(err, QLM_EUSAGE, "--target-bpw: '%s' is not a number of bits per weight (1..32)", optarg);
      break;
    }
    case 'h': usage(stdout, o->export_gguf); exit(0);
    case '?': usage(stderr, o->export_gguf); return qlm_fail(err, QLM_EUSAGE, "quantize: bad option (see --help)");
    default: rc = parse_method_opt(o, c, optarg, err); break;
    }
  }
  if (rc) return rc;
  if (optind < argc) return qlm_fail(err, QLM_EUSAGE, "quantize: unexpected argument '%s'", argv[optind]);
  if (o->method && o->type >= 0)
    return qlm_fail(err, QLM_EUSAGE, "quantize: give --method or --type, not both (--type q4_K = --method gguf --opt type=q4_K)");
  if (!o->method && (o->qo.bits || o->qo.group || o->qo.double_quant || o->qo.threshold_set))
    return qlm_fail(err, QLM_EUSAGE, "quantize: --bits/--group/--dq/--threshold need --method");
  if (!o->method && o->type < 0 && !qlm_rules_count(o->rules))
    return qlm_fail(err, QLM_EUSAGE, "quantize: say what to do: --method M, --type TYPE or --rules FILE (see --help)");
  if (!o->out) return qlm_fail(err, QLM_EUSAGE, "quantize: -o OUTPUT is required");
  if (!o->model) o->model = cli_default_model();
  if (o->type < 0 && !o->method) o->type = QLM_TYPE_F32; /* rules only: unmatched matrices stay f32 */
  return QLM_OK;
}

static void shape_str(const qlm_quant_tensor *t, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "%lld", (long long)t->ne[0]);
  for (int d = 1; d < t->n_dims && n > 0 && (size_t)n < cap; d++)
    n += snprintf(buf + n, cap - (size_t)n, "x%lld", (long long)t->ne[d]);
}

static void print_tensor(void *ctx, const qlm_quant_tensor *t) {
  (void)ctx;
  char shape[96];
  shape_str(t, shape, sizeof shape);
  double left = t->params_done > 0 ? t->elapsed * (double)(t->n_params - t->params_done) / (double)t->params_done : 0;
  printf("[%3d/%3d] %-26s %-11s %-28s %6.3f bpw  rel_err %.3e max_err %.3e  ETA %.1fs", t->index, t->n_tensors,
         t->name, shape, t->method, t->bpw, t->rel_err, t->max_err, left);
  if (t->fallback) printf("\n          FALLBACK (%s): %s", qlm_type_name(t->type), t->fallback_why);
  printf("\n");
  fflush(stdout);
}

static void print_calib(void *ctx, int n_samples, int seq_len, const char *text) {
  const quant_opts *o = ctx;
  printf("calibration: %d windows of %d tokens from %s, layer by layer, products in %s\n", n_samples, seq_len, text,
         o->calib_bf16 ? "bf16" : "f32");
  fflush(stdout);
}

static void print_alloc(void *ctx, int n, double bpw) {
  (void)ctx;
  printf("mixed precision: bits chosen for %d matrices, %.3f bits/weight on average (before fallbacks)\n", n, bpw);
  fflush(stdout);
}

/* The driver loads, quantizes and frees one tensor after another.  With glibc's adaptive mmap
 * threshold, some of those buffers still come from fresh mappings whose every page faults on
 * first touch (~2.5 us a page on the VM measured); from the heap, the previous tensor's freed
 * buffers are reused, already faulted.  Measured on SmolLM2-135M, quanto qint8 (the methods'
 * calls): 0.021-0.027 s by default, 0.017-0.020 s with this, peak RSS unchanged (752 MiB); a
 * 32 MiB threshold measured slower than the default (0.030 s).  Cost: freed blocks inside the
 * heap stay mapped, so HQQ 4-bit of the same model peaked at 747 instead of 703 MiB (and ran in
 * 1.06 instead of 1.31 s); GPTQ 8 x 512 peaked lower (845 vs 855 MiB).  Should glibc refuse the value,
 * its default stays: only speed depends on it. */
static void heap_for_large_buffers(void) { (void)mallopt(M_MMAP_THRESHOLD, 1 << 30); }

static int run(int argc, char **argv, bool export_gguf) {
  heap_for_large_buffers();
  qlm_error err = {0};
  quant_opts o = {.type = -1, .embd_type = QLM_TYPE_F32, .threads = cli_default_threads(), .export_gguf = export_gguf,
                  .calib = default_calib(), .calib_samples = 128, .calib_len = 2048,
                  .calib_bf16 = qlm_cpu_simd_level() >= QLM_SIMD_AVX512};
  if (!(o.rules = qlm_rules_new(&err))) return cli_report(&err);
  cli_measure_init(&o.cm, export_gguf ? "export-gguf" : "quantize");
  int rc = parse_opts(argc, argv, &o, &err);
  qlm_meter *meter = rc ? NULL : cli_measure_start(&o.cm);
  if (meter) qlm_meter_begin(meter, QLM_PHASE_LOAD);
  if (!rc && export_gguf && o.type < 0) rc = qlm_fail(&err, QLM_EUSAGE, "export-gguf: --type is required");
  qlm_source *src = NULL;
  if (!rc) rc = qlm_source_open(o.model, o.tokenizer, &src, &err);
  if (rc) {
    qlm_rules_free(o.rules);
    cli_measure_end(&o.cm, meter, 1);
    return cli_report(&err);
  }
  if (meter) { /* the quantize phase includes calibration (if any) and writing the file */
    uint64_t wbytes = 0;
    for (int i = 0; i < src->n_tensors; i++) wbytes += src->tensors[i].nbytes;
    qlm_meter_set_bytes(meter, wbytes, 0);
    qlm_meter_begin(meter, QLM_PHASE_QUANTIZE);
  }
  qlm_quant_params p = {.method = o.method, .opts = o.qo, .type = o.type, .embd_type = o.embd_type,
                        .rules = o.rules, .n_threads = (int)o.threads, .source_label = o.model,
                        .on_tensor = print_tensor, .on_calib = print_calib, .calib_text = o.calib,
                        .calib = {.n_samples = (int)o.calib_samples, .seq_len = (int)o.calib_len,
                                  .seed = (uint64_t)o.seed, .bf16 = o.calib_bf16},
                        .target_bpw = o.target_bpw, .on_alloc = print_alloc, .ctx = &o};
  qlm_quant_summary s;
  rc = qlm_quantize(src, o.out, &p, &s, &err);
  qlm_source_close(src);
  qlm_rules_free(o.rules);
  if (meter && !rc) qlm_meter_set_bytes(meter, s.bytes_out, 0);
  if (rc) {
    cli_measure_end(&o.cm, meter, 1);
    return cli_report(&err);
  }
  double np = s.n_params > 0 ? (double)s.n_params : 1;
  printf("\n%d tensors: %d quantized, %d kept f32, %d fallen back to another type\n", s.n_tensors, s.n_quantized,
         s.n_kept, s.n_fallback);
  printf("tensor data: %llu bytes (%.3f bits/weight) -> %llu bytes (%.3f bits/weight, %.2fx smaller); file %llu bytes\n",
         (unsigned long long)s.bytes_in, 8.0 * (double)s.bytes_in / np, (unsigned long long)s.bytes_out,
         8.0 * (double)s.bytes_out / np, s.bytes_out ? (double)s.bytes_in / (double)s.bytes_out : 0.0,
         (unsigned long long)s.file_bytes);
  printf("quantization: %.3f s (of which the methods' quantize calls on weights in memory: %.3f s); wrote %s\n",
         s.seconds, s.method_seconds, o.out);
  fflush(stdout);
  if (o.cm.db) { /* --db: the config, the input model and the file written (recorded by cli_measure_end) */
    cli_db_set_model_path(o.model);
    qlm_quant_opts eff = o.qo; /* the method's defaults too (nf4's 4 bits, hqq's group 64): what was run */
    if (o.method && o.method->defaults) o.method->defaults(&eff);
    cli_db_set_quant(&(qlm_db_quant){.method = o.method ? o.method->name : qlm_type_name(o.type), .bits = eff.bits,
                                     .group = eff.group, .seed = o.seed});
    if (s.calibrated && cli_db_add_quant_option("calib-dtype", s.calib_bf16 ? "bf16" : "f32", &err)) cli_report(&err);
    if (cli_db_add_artefact(o.out, "model", &err)) cli_report(&err);
  }
  return cli_measure_end(&o.cm, meter, 0);
}

int cmd_quantize(int argc, char **argv) { return run(argc, argv, false); }
int cmd_export_gguf(int argc, char **argv) { return run(argc, argv, true); }
