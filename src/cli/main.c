/* main.c — the qlm command line: dispatches to one function per subcommand. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0) {
    printf("qlm %s — quantize, run and measure LLMs\n", QLM_VERSION);
    return 0;
  }
  fprintf(stderr, "qlm: unknown command '%s'\n", argv[1]);
  return 2;
}
