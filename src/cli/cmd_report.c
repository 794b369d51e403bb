/* cmd_report.c — `qlm report --db FILE -o DIR`: tables, charts and index.html from a results
 * database (src/report). */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"
#include "report/report.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: qlm report [--db FILE] [-o DIR]\n\n"
          "Reads a results database written by --db (qlm quantize, ppl, classify, mmlu, sweep) and writes:\n"
          "  DIR/report.md         the tables in the seeds' layouts, one section per task, task settings and\n"
          "                        base model: inference (accuracy, macro-F1, perplexity, time, max memory,\n"
          "                        energy, gCO2e; seed 000 Tables 3/5) and quantization cost (Tables 4/6),\n"
          "                        each as mean +/- sd over repetitions and relative change vs the base\n"
          "  DIR/inference.csv     the same numbers at full precision; quantization.csv; scores.csv\n"
          "  DIR/charts/*.svg/.png a bar chart per metric, a radar per bit width comparing methods, perplexity\n"
          "                        vs CO2 with the Pareto frontier, energy by CPU/GPU/RAM, CO2 of the same\n"
          "                        energy on each country's grid\n"
          "  DIR/index.html        everything on one self-contained page (inline SVG and CSS, works offline)\n\n"
          "Rows. Repetitions (same base model, quantization config and task settings) are merged. An\n"
          "evaluated model is linked to the quantize run that wrote it by the file's sha256 (artefact of\n"
          "kind 'model'; by path when a hash is missing); the unquantized evaluation of the quantize run's\n"
          "input model is the base of the section.\n\n"
          "Combined metric. Seed 000's softmax(ppl) x CO2 beside softmax(ln ppl) x CO2 = ppl_i/sum(ppl) x CO2,\n"
          "which does not saturate when perplexities differ by more than a few units (report.md explains).\n\n"
          "  --db FILE     results database (default %s); never created or modified, except that a\n"
          "                database from an older qlm is migrated to the current schema first\n"
          "  -o, --out DIR output folder (default report; created if absent; files replaced atomically)\n\n"
          "example:\n"
          "  qlm quantize -m model.gguf -o m-q4.gguf --method absmax --bits 4 --db r.db\n"
          "  qlm ppl -m model.gguf --db r.db && qlm ppl -m m-q4.gguf --db r.db\n"
          "  qlm report --db r.db -o report && xdg-open report/index.html\n",
          QLM_DB_DEFAULT_PATH);
}

int cmd_report(int argc, char **argv) {
  static const struct option opts[] = {
      CLI_DB_OPTION, {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  const char *db = QLM_DB_DEFAULT_PATH, *out = "report";
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
    switch (c) {
    case CLI_OPT_DB: db = optarg; break;
    case 'o': out = optarg; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return QLM_EUSAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "qlm report: unexpected argument '%s' (see qlm report --help)\n", argv[optind]);
    return QLM_EUSAGE;
  }
  qlm_error err = {0};
  qlm_report *rep = NULL;
  if (qlm_report_load(db, &rep, &err)) return cli_report(&err);
  int rc = qlm_report_write(rep, out, &err);
  if (!rc)
    printf("report: %d rows in %d sections from %d runs of %s -> %s/index.html (report.md, *.csv, charts/)\n",
           rep->n_rows, rep->n_sections, rep->n_runs, db, out);
  qlm_report_free(rep);
  return rc ? cli_report(&err) : 0;
}
