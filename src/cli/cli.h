/* cli.h — what the subcommands share: option helpers and the usual "open model" sequence. */
#ifndef QLM_CLI_H
#define QLM_CLI_H

#include "core/error.h"
#include "formats/source.h"
#include "tokenizer/tokenizer.h"

/* Default model when -m is not given: $QLM_MODEL, else the shared stories260K GGUF. */
const char *cli_default_model(void);

/* Print "qlm: <message>" to stderr and return the error class as exit status. */
int cli_report(const qlm_error *err);

/* Parse a whole decimal/float option value or fail with QLM_EUSAGE naming the option. */
int cli_parse_int(const char *opt, const char *s, long lo, long hi, long *out, qlm_error *err);
int cli_parse_float(const char *opt, const char *s, double lo, double hi, double *out, qlm_error *err);

/* Number of CPUs available to this process. */
int cli_default_threads(void);

int cmd_info(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_export_gguf(int argc, char **argv);
int cmd_ppl(int argc, char **argv);

#endif
