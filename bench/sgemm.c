/* sgemm.c — f32 prefill matmul speed: kernels/sgemm.h's AVX-512 tile kernel vs OpenBLAS sgemm
 * (QLM_SGEMM=0), both through qlm_matmul_ex (the same row split over the pool), on the
 * LLaMA-2-7B and SmolLM2-135M matrix shapes.  The two paths alternate per repetition and each
 * keeps its best (the least disturbed run on a shared machine), so drift hits both alike.
 *
 * usage: sgemm [T=128] [threads=1] [reps=5]   -> per shape: GFLOP/s of both, ours ÷ OpenBLAS */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double run_s(const qlm_mat *W, const float *X, int T, float *Y, qlm_pool *pool, const char *own) {
  setenv("QLM_SGEMM", own, 1);
  double t0 = now();
  qlm_matmul_ex(W, X, T, Y, pool, qlm_cpu_simd_level(), 1);
  return now() - t0;
}

int main(int argc, char **argv) {
  int T = argc > 1 ? atoi(argv[1]) : 128, nth = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 5;
  /* rows x cols: 7B q/k/v/o, gate/up, down; SmolLM2 q/o, gate/up, down, output head */
  const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {576, 576}, {1536, 576}, {576, 1536},
                               {49152, 576}};
  const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
  if (T < 2 || nth < 1 || reps < 1) {
    fprintf(stderr, "usage: sgemm [T>=2] [threads>=1] [reps>=1]\n");
    return 2;
  }
  qlm_pool *pool = qlm_pool_new(nth);
  printf("| rows x cols | T | threads | ours GFLOP/s | OpenBLAS GFLOP/s | ours ÷ OpenBLAS |\n|---|---|---|---|---|---|\n");
  for (int si = 0; si < nshapes; si++) {
    int64_t rows = shapes[si][0], cols = shapes[si][1];
    /* 64-byte aligned, as the loader's and the state's buffers are */
    float *w = aligned_alloc(64, sizeof(float) * (size_t)rows * (size_t)cols),
          *X = aligned_alloc(64, sizeof(float) * (size_t)T * (size_t)cols),
          *Y = aligned_alloc(64, sizeof(float) * (size_t)T * (size_t)rows);
    if (!w || !X || !Y) {
      fprintf(stderr, "sgemm: out of memory\n");
      return 1;
    }
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    for (int64_t i = 0; i < T * cols; i++) X[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
    qlm_mat W = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = w, .row_bytes = sizeof(float) * (size_t)cols};
    double ours = 1e30, blas = 1e30;
    run_s(&W, X, T, Y, pool, "1"), run_s(&W, X, T, Y, pool, "0"); /* warm-up: pages, caches */
    for (int r = 0; r < reps; r++) {
      double a = run_s(&W, X, T, Y, pool, "1"), b = run_s(&W, X, T, Y, pool, "0");
      ours = a < ours ? a : ours, blas = b < blas ? b : blas;
    }
    double flop = 2.0 * (double)rows * (double)cols * T;
    printf("| %lld x %lld | %d | %d | %.1f | %.1f | %.2f |\n", (long long)rows, (long long)cols, T, nth, flop / ours * 1e-9,
           flop / blas * 1e-9, blas / ours);
    free(w), free(X), free(Y);
  }
  qlm_pool_free(pool);
  return 0;
}
