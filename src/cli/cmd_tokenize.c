/* cmd_tokenize.c — `qlm tokenize`: show how a text is split into tokens. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/mapfile.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *f) {
  fprintf(f, "usage: qlm tokenize [-m MODEL] [--tokenizer PATH] [--ids] [--no-special] (-p TEXT | -f FILE)\n\n"
             "Prints one line per token: id and piece (or only the ids with --ids).\n"
             "  -m, --model PATH      model whose tokenizer is used (default %s)\n"
             "      --tokenizer PATH  a tokenizer.json or llama2.c tokenizer.bin used instead of the model's;\n"
             "                        refused (exit 2) when its size differs from the model's vocabulary\n"
             "  -p, --prompt TEXT     text to tokenize;  -f, --file FILE  read the text from FILE\n"
             "      --ids             print only the ids, on one line\n"
             "      --no-special      do not add BOS/EOS and do not parse special-token text\n\n"
             "example: qlm tokenize -m ../shared/models/stories260K/stories260K.gguf -p 'Once upon a time'\n",
          cli_default_model());
}


int cmd_tokenize(int argc, char **argv) {
  static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"tokenizer", required_argument, 0, 'T'},
                                       {"prompt", required_argument, 0, 'p'}, {"file", required_argument, 0, 'f'},
                                       {"ids", no_argument, 0, 'i'},          {"no-special", no_argument, 0, 'S'},
                                       {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  const char *model = NULL, *tokenizer = NULL, *prompt = NULL, *file = NULL;
  int ids_only = 0, special = 1, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "m:p:f:h", opts, NULL)) != -1) {
    switch (c) {
    case 'm': model = optarg; break;
    case 'T': tokenizer = optarg; break;
    case 'p': prompt = optarg; break;
    case 'f': file = optarg; break;
    case 'i': ids_only = 1; break;
    case 'S': special = 0; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return QLM_EUSAGE;
    }
  }
  if (!prompt && !file) {
    usage(stderr);
    return QLM_EUSAGE;
  }
  qlm_error err = {0};
  qlm_source *src = NULL;
  qlm_tokenizer *tok = NULL;
  char *text = NULL;
  int32_t *ids = NULL;
  /* --tokenizer replaces the model's vocabulary; qlm_source_open refuses one whose size does not
   * match the model's (formats/source.c, hf.c). */
  const char *path = model ? model : cli_default_model();
  int n = 0, rc = qlm_source_open(path, tokenizer, &src, &err);
  if (!rc) rc = qlm_tokenizer_new(&src->vocab, &tok, &err);
  if (!rc && file) rc = qlm_read_file(file, 256u << 20, &text, NULL, &err);
  if (!rc && !file && !(text = strdup(prompt))) rc = qlm_fail(&err, QLM_ENOMEM, "out of memory");
  if (!rc) rc = qlm_tokenize(tok, text, strlen(text), special, special, &ids, &n, &err);
  for (int i = 0; !rc && i < n; i++) {
    if (ids_only) {
      printf(i + 1 < n ? "%d " : "%d\n", ids[i]);
      continue;
    }
    char piece[256];
    int len = qlm_token_to_piece(tok, -1, ids[i], 1, piece, (int)sizeof piece);
    printf("%6d '%.*s'\n", ids[i], len < 0 ? 0 : len > 255 ? 255 : len, piece);
  }
  free(ids);
  free(text);
  qlm_tokenizer_free(tok);
  qlm_source_close(src);
  return rc ? cli_report(&err) : 0;
}
