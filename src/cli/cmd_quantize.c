/* cmd_quantize.c — `qlm quantize`: write a model's weights in one of llama.cpp's block types. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "quant/quantize.h"

typedef struct quant_opts {
  const char *model, *tokenizer, *out;
  int type, embd_type;
  long threads;
} quant_opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm quantize -m MODEL -o OUT.gguf --type TYPE [options]\n\n"
          "Writes a GGUF file (readable by qlm and llama.cpp) whose linear-layer weights\n"
          "(attn_q/k/v/output, attn_qkv, ffn_gate/up/down) are stored as TYPE; norms and biases stay f32.\n"
          "A matrix whose rows are not a whole number of TYPE's blocks (32 weights, 256 for *_K) falls\n"
          "back as llama-quantize does (q4_K->q5_0, q5_K->q5_1, q6_K->q8_0, else f16); fallbacks are\n"
          "listed. Already-quantized inputs are\n"
          "dequantized first. The output is written to a temporary file and renamed into place.\n\n"
          "  -m, --model PATH          GGUF file, HF folder or llama2.c .bin (default %s)\n"
          "      --tokenizer PATH      tokenizer.bin / tokenizer.json overriding the model's\n"
          "  -o, --output PATH         the GGUF file to write (required)\n"
          "      --type TYPE           %s (required)\n"
          "      --keep-embeddings T   type of token_embd/output: f32 (default), f16, or same (= TYPE)\n"
          "  -t, --threads N           threads (default: all %d CPUs)\n\n"
          "Prints per tensor: shape, type, relative error ||W-Q||/||W|| and max |W-Q|; then a summary.\n"
          "example: qlm quantize -m stories260K.gguf -o stories260K.q8_0.gguf --type q8_0\n",
          cli_default_model(), qlm_quantize_types, cli_default_threads());
}

static int parse_opts(int argc, char **argv, quant_opts *o, qlm_error *err) {
  static const struct option opts[] = {
      {"model", required_argument, 0, 'm'},   {"tokenizer", required_argument, 0, 'T'},
      {"output", required_argument, 0, 'o'},  {"type", required_argument, 0, 'y'},
      {"keep-embeddings", required_argument, 0, 'e'}, {"threads", required_argument, 0, 't'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  *o = (quant_opts){.type = -1, .embd_type = QLM_TYPE_F32, .threads = cli_default_threads()};
  int c, rc = 0;
  optind = 1;
  while (!rc && (c = getopt_long(argc, argv, "m:o:t:h", opts, NULL)) != -1) {
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
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return qlm_fail(err, QLM_EUSAGE, "quantize: bad option (see qlm quantize --help)");
    }
  }
  if (!rc && optind < argc) rc = qlm_fail(err, QLM_EUSAGE, "quantize: unexpected argument '%s'", argv[optind]);
  if (!rc && o->type < 0) rc = qlm_fail(err, QLM_EUSAGE, "quantize: --type is required (%s)", qlm_quantize_types);
  if (!rc && !o->out) rc = qlm_fail(err, QLM_EUSAGE, "quantize: -o OUTPUT is required");
  if (!o->model) o->model = cli_default_model();
  return rc;
}

static void print_tensor(void *ctx, const qlm_quant_tensor *t) {
  (void)ctx;
  char shape[96];
  int n = snprintf(shape, sizeof shape, "%lld", (long long)t->ne[0]);
  for (int d = 1; d < t->n_dims && n > 0 && (size_t)n < sizeof shape; d++)
    n += snprintf(shape + n, sizeof shape - (size_t)n, "x%lld", (long long)t->ne[d]);
  printf("[%3d/%3d] %-28s %-12s %5s -> %-5s rel_err %.3e max_err %.3e", t->index, t->n_tensors, t->name, shape,
         qlm_type_name(t->src_type), qlm_type_name(t->type), t->rel_err, t->max_err);
  if (t->fallback)
    printf("  FALLBACK: %lld columns are not a multiple of the %s block size %d", (long long)t->ne[0],
           qlm_type_name(t->wanted_type), qlm_type_traits_of(t->wanted_type)->block_size);
  printf("\n");
  fflush(stdout);
}

int cmd_quantize(int argc, char **argv) {
  qlm_error err = {0};
  quant_opts o;
  if (parse_opts(argc, argv, &o, &err)) return cli_report(&err);
  qlm_source *src = NULL;
  int rc = qlm_source_open(o.model, o.tokenizer, &src, &err);
  if (rc) return cli_report(&err);
  qlm_quant_params p = {.type = o.type, .embd_type = o.embd_type, .n_threads = (int)o.threads,
                        .source_label = o.model, .on_tensor = print_tensor};
  qlm_quant_summary s;
  rc = qlm_quantize(src, o.out, &p, &s, &err);
  qlm_source_close(src);
  if (rc) return cli_report(&err);
  double np = s.n_params > 0 ? (double)s.n_params : 1;
  printf("\n%d tensors: %d quantized, %d kept f32, %d fallen back to another type\n", s.n_tensors, s.n_quantized, s.n_kept,
         s.n_fallback);
  printf("tensor data: %llu bytes (%.3f bits/weight) -> %llu bytes (%.3f bits/weight); file %llu bytes\n",
         (unsigned long long)s.bytes_in, 8.0 * (double)s.bytes_in / np, (unsigned long long)s.bytes_out,
         8.0 * (double)s.bytes_out / np, (unsigned long long)s.file_bytes);
  printf("quantization: %.3f s; wrote %s\n", s.seconds, o.out);
  return 0;
}
