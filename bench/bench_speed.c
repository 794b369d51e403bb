/* bench_speed.c — prefill and decode tokens/s of the engine, llama-bench style.
 *
 * usage: bench_speed [-p 512] [-n 128] [-t 1,2] [-r 3] MODEL...
 * pp: one batched forward of p tokens (random ids, seeded) from an empty cache;
 * tg: n single-token forwards after a 1-token prompt. Mean ± sd over r repetitions.
 * The measuring itself is src/generate/bench.c (shared with `qlm bench`, which adds rooflines).
 * Prints a Markdown table; "bpw" is the bits per weight of the transformer blocks' matrices (with
 * companion tensors such as NF4 double-quant constants), "x base" the speed relative to the
 * first MODEL at the same thread count and test (measured in this run). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/source.h"
#include "generate/bench.h"
#include "kernels/cpu.h"
#include "model/model.h"

static int die(const qlm_error *e) {
  fprintf(stderr, "bench_speed: %s\n", e->msg);
  return e->code ? e->code : 1;
}

/* The storage type the engine runs the FFN in (what "backend" means for this model). */
static const char *weight_type(const qlm_model *m) { return qlm_type_name(m->layers[0].w_up.type); }

/* Bits per weight of the blocks' 2-D weight matrices, companions included. */
static double linear_bpw(const qlm_source *src) {
  double bytes = 0, n = 0;
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *t = &src->tensors[i];
    if (strncmp(t->name, "blk.", 4)) continue;
    if (strstr(t->name, ".weight.")) bytes += (double)t->nbytes; /* a companion */
    else if (t->n_dims == 2) bytes += (double)t->nbytes, n += (double)(t->ne[0] * t->ne[1]);
  }
  return n > 0 ? 8.0 * bytes / n : 0.0;
}

static double g_base[16][2]; /* t/s of the first model per thread count and test */

static int bench_model(const char *path, int n_p, int n_g, const int *threads, int n_thr, int reps, bool first) {
  qlm_error err = {0};
  qlm_source *src;
  qlm_model *m;
  if (qlm_source_open(path, NULL, &src, &err) || qlm_model_load(src, &m, &err)) return die(&err);
  const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  size_t bytes = 0;
  for (int i = 0; i < src->n_tensors; i++) bytes += src->tensors[i].nbytes;
  for (int ti = 0; ti < n_thr; ti++) {
    double tps[2][QLM_BENCH_MAX_REPS];
    if (qlm_bench_model(m, n_p, n_g, threads[ti], reps, tps[0], tps[1], &err)) return die(&err);
    for (int test = 0; test < 2; test++) {
      double mean, sd;
      qlm_bench_stats(tps[test], reps, &mean, &sd);
      if (first) g_base[ti][test] = mean;
      printf("| %-28s | %8.2f MiB | %6.3f | %-14s %-6s | %7d | %5s%-4d | %10.2f ± %-6.2f | %6.2f |\n", name,
             bytes / 1048576.0, linear_bpw(src), weight_type(m), qlm_simd_name(qlm_cpu_simd_level()), threads[ti],
             test == 0 ? "pp" : "tg", test == 0 ? n_p : n_g, mean, sd, mean / g_base[ti][test]);
      fflush(stdout);
    }
  }
  qlm_model_free(m);
  qlm_source_close(src);
  return 0;
}

int main(int argc, char **argv) {
  int n_p = 512, n_g = 128, reps = 3, threads[16] = {1, 2}, n_thr = 2, i = 1;
  for (; i < argc && argv[i][0] == '-'; i += 2) {
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "-p")) n_p = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-n")) n_g = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-r")) reps = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-t")) {
      n_thr = 0;
      for (char *s = strtok(argv[i + 1], ","); s && n_thr < 16; s = strtok(NULL, ",")) threads[n_thr++] = atoi(s);
    }
  }
  if (i >= argc || n_p < 1 || n_g < 1 || reps < 1 || reps > QLM_BENCH_MAX_REPS) {
    fprintf(stderr, "usage: bench_speed [-p 512] [-n 128] [-t 1,2] [-r 3] MODEL...\n");
    return 2;
  }
  printf("| %-28s | %12s | %6s | %-21s | %7s | %9s | %19s | %6s |\n", "model", "size", "bpw", "backend", "threads", "test",
         "t/s", "x base");
  printf("|------------------------------|--------------|--------|-----------------------|---------|-----------|---------------------|--------|\n");
  for (int first = i; i < argc; i++)
    if (bench_model(argv[i], n_p, n_g, threads, n_thr, reps, i == first)) return 1;
  return 0;
}
