/* main.c — the qlm command line: one function per subcommand (cmd_*.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "model/numerics.h"
#include "core/error.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *summary;
} commands[] = {
    {"info", cmd_info, "show a model's architecture, hyper-parameters, tensors and tokenizer"},
    {"run", cmd_run, "generate text from a prompt (greedy or sampled), with tokens/s"},
    {"tokenize", cmd_tokenize, "print the token ids (and pieces) of a text"},
    {"quantize", cmd_quantize, "quantize a model (absmax, zeropoint, llm-int8, nf4, fp4, hqq, gptq, smoothquant, gguf; rules)"},
    {"export-gguf", cmd_export_gguf, "write a GGUF in llama.cpp's block types that llama.cpp loads"},
    {"ppl", cmd_ppl, "perplexity under hf-window/per-line/llamacpp/lm-eval protocols; KL divergence to a base"},
    {"classify", cmd_classify, "sentiment (TweetEval): train a head on frozen features, evaluate it, or zero-shot"},
    {"mmlu", cmd_mmlu, "MMLU accuracy, zero- or few-shot, lm-eval's prompt, by answer-letter log-likelihood"},
    {"compare", cmd_compare, "two runs recorded with --db, metric by metric: relative change, beyond run-to-run noise?"},
    {"sweep", cmd_sweep, "run an experiment grid from a config into the results database; resumable, --jobs N"},
    {"report", cmd_report, "tables, charts and index.html from a results database (seed layouts, combined metric)"},
    {"replay", cmd_replay, "replay a DailyDialog workload at seeded random times (seed 001): energy, latency"},
    {"bench", cmd_bench, "prefill/decode tokens/s (llama-bench style) and fraction of the memory/FMA roofline"},
};

static void usage(FILE *f) {
  fprintf(f,
          "qlm %s — quantize, run and measure large language models on the CPU\n\n"
          "usage: qlm COMMAND [options]     (qlm COMMAND --help for its options)\n\ncommands:\n",
          QLM_VERSION);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f,
          "\nmodels: a GGUF file (v2/v3), a Hugging Face folder (config.json + *.safetensors [+ tokenizer.json]),\n"
          "or a llama2.c checkpoint (.bin, with tokenizer.bin or tok*.bin beside it).\n"
          "default model: $QLM_MODEL, else %s\n\n"
          "any command: --allow-nonfinite  run models with NaN/Inf weights or logits (else an error names\n"
          "             the tensor and element, or the position and output)\n\n"
          "exit status:\n"
          "  0 success          2 usage (bad option)      3 io (cannot open/read/write)\n"
          "  4 format (malformed file)   5 unsupported (valid but not implemented)\n"
          "  6 limit (size beyond limits or memory)    7 out of memory    8 internal error\n",
          cli_default_model());
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return argc < 2 ? QLM_EUSAGE : 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("qlm %s\n", QLM_VERSION);
    return 0;
  }
  /* --allow-nonfinite (any command): load and evaluate models with NaN/Inf weights or logits
   * instead of stopping with an error naming the tensor / position (model/numerics.h) */
  int n = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--allow-nonfinite") == 0) qlm_set_allow_nonfinite(true);
    else argv[n++] = argv[i];
  }
  argc = n;
  argv[argc] = NULL;
  cli_db_set_argv(argc - 1, argv + 1); /* the command line each --db run records */
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "qlm: unknown command '%s' (qlm --help lists them)\n", argv[1]);
  return QLM_EUSAGE;
}
