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
int cmd_classify(int argc, char **argv);
int cmd_mmlu(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* ---- measurement flags every command accepts (src/measure) ----
 * Add CLI_MEASURE_OPTIONS to a getopt_long table and pass option codes >= CLI_MEASURE_FIRST to
 * cli_measure_opt; print cli_measure_help in --help. */
#include "measure/meter.h"
enum { CLI_MEASURE_FIRST = 0x1000, CLI_OPT_COUNTRY = 0x1000, CLI_OPT_CARBON, CLI_OPT_PUE, CLI_OPT_TDP, CLI_OPT_INTERVAL,
       CLI_OPT_EMISSIONS, CLI_OPT_NO_ENERGY, CLI_OPT_MEASURE_JSON };
#define CLI_MEASURE_OPTIONS                                                                                        \
  {"country", required_argument, 0, CLI_OPT_COUNTRY}, {"carbon-intensity", required_argument, 0, CLI_OPT_CARBON},  \
      {"pue", required_argument, 0, CLI_OPT_PUE}, {"cpu-tdp", required_argument, 0, CLI_OPT_TDP},                  \
      {"energy-interval", required_argument, 0, CLI_OPT_INTERVAL},                                                  \
      {"emissions", required_argument, 0, CLI_OPT_EMISSIONS}, {"no-energy", no_argument, 0, CLI_OPT_NO_ENERGY},     \
      {"measure-json", required_argument, 0, CLI_OPT_MEASURE_JSON}
typedef struct cli_measure {
  qlm_meter_opts mo;
  const char *emissions;    /* --emissions FILE: CodeCarbon-compatible CSV (appended) */
  const char *json;         /* --measure-json FILE */
  const char *db;           /* --db FILE (CLI_DB_OPTION): record the run there */
} cli_measure;
extern const char cli_measure_help[];
void cli_measure_init(cli_measure *cm, const char *command);
/* Handle one measurement option (c >= CLI_MEASURE_FIRST). */
int cli_measure_opt(cli_measure *cm, int c, const char *arg, qlm_error *err);
/* Start the meter (NULL on failure, which is reported and does not stop the command). */
qlm_meter *cli_measure_start(cli_measure *cm);
/* Finish, print the summary on stderr (unless quiet), write the files asked for, free.
 * Returns 0, or the error class of a failed write (reported). */
int cli_measure_end(cli_measure *cm, qlm_meter *m, int quiet);

/* ---- results database (--db FILE, src/db/db.h) ----
 * Commands collect what they produced (results, quantization config, artefacts) and record one
 * run at their end, in one transaction. main() saves the command line. Add CLI_DB_OPTION to a
 * getopt_long table; with cli_measure it goes through cli_measure_opt into cm->db and
 * cli_measure_end records the run with the meter's phases (only after cli_db_success()). */
#include "db/db.h"
#include "eval/results.h"
enum { CLI_OPT_DB = 0x1100 };
#define CLI_DB_OPTION {"db", required_argument, 0, CLI_OPT_DB}
extern const char cli_db_help[];
void cli_db_set_argv(int argc, char **argv);
/* Model row from an open source (path, params, arch; sha256 of the file when it is one). */
void cli_db_set_model(const qlm_source *src);
void cli_db_set_model_path(const char *path);
/* Copy a result record into the pending run (also marks the run as succeeded). */
int cli_db_add_result(const qlm_result *r, qlm_error *err);
/* Quantization config (options and rules default to the --opt/--dq/--threshold/--target-bpw/--calib*
 * and --rule/--rules values of the command line). */
void cli_db_set_quant(const qlm_db_quant *q);
/* After cli_db_set_quant: one more option (name=value) for a setting resolved at run time, not
 * read from the command line (--calib-dtype's default). */
int cli_db_add_quant_option(const char *name, const char *value, qlm_error *err);
int cli_db_add_artefact(const char *path, const char *kind, qlm_error *err);
void cli_db_success(void);
/* Record the pending run into db_path (with the meter's phases when m != NULL) and clear it.
 * Does nothing when db_path is NULL. runs.label = $QLM_RUN_LABEL when set (qlm sweep names its
 * cells that way). */
int cli_db_commit(const char *db_path, const char *command, const qlm_meter *m, qlm_error *err);
/* One result, its model, recorded at once: set_model + add_result + commit. */
int cli_db_record(const char *db_path, const char *command, const qlm_result *r, const qlm_source *src, qlm_error *err);
int cmd_compare(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_report(int argc, char **argv);

#endif
