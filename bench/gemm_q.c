/* gemm_q.c — prefill matmul speed with quantized weights: the blocked int8 GEMM (kernels/gemm_q.c)
 * vs dequantized tiles + sgemm (QLM_GEMM_Q=0), on SmolLM2-135M's matrix shapes.
 * Best of N runs (the minimum is the least disturbed by other load on a shared machine).
 *
 * usage: gemm_q [T=512] [threads=1] [reps=5]   -> per type and shape: ms and GMAC/s of both paths */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fp16.h"
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

static double best_ms(const qlm_mat *W, const float *X, int T, float *Y, qlm_pool *pool, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps + 1; r++) {
    double t0 = now();
    qlm_matmul_ex(W, X, T, Y, pool, qlm_cpu_simd_level(), 1);
    double dt = now() - t0;
    if (r > 0 && dt < best) best = dt;
  }
  return best * 1e3;
}

int main(int argc, char **argv) {
  int T = argc > 1 ? atoi(argv[1]) : 512, nth = argc > 2 ? atoi(argv[2]) : 1, reps = argc > 3 ? atoi(argv[3]) : 5;
  const int types[] = {QLM_TYPE_Q8_0, QLM_TYPE_Q4_0, QLM_TYPE_Q4_1, QLM_TYPE_Q5_0, QLM_TYPE_Q4_K, QLM_TYPE_Q6_K};
  const int64_t shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}};
  qlm_pool *pool = qlm_pool_new(nth);
  uint64_t s = 1;
  printf("| type | rows x cols | T | gemm_q ms | dq+sgemm ms | gemm_q GMAC/s | dq+sgemm GMAC/s |\n");
  printf("|---|---|---|---|---|---|---|\n");
  for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
    for (size_t si = 0; si < 3; si++) {
      int type = types[ti];
      const qlm_type_traits *tr = qlm_type_traits_of(type);
      int64_t rows = shapes[si][0], cols = shapes[si][1];
      size_t rb = qlm_type_row_bytes(type, cols), n = rb * (size_t)rows;
      uint8_t *w = malloc(n);
      float *X = malloc(sizeof(float) * (size_t)T * (size_t)cols);
      float *Y = malloc(sizeof(float) * (size_t)T * (size_t)rows);
      for (size_t i = 0; i < n; i++) w[i] = (uint8_t)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 56);
      for (size_t o = 0; o < n; o += tr->type_size) { /* sane half scales at the block starts */
        uint16_t h = qlm_f32_to_f16(0.01f);
        memcpy(w + o, &h, 2);
        if (type == QLM_TYPE_Q4_K || type == QLM_TYPE_Q4_1) memcpy(w + o + 2, &h, 2);
      }
      if (type == QLM_TYPE_Q6_K)
        for (size_t o = 0; o < n; o += tr->type_size) {
          uint16_t h = qlm_f32_to_f16(0.01f);
          memcpy(w + o + 208, &h, 2);
        }
      for (int64_t i = 0; i < T * cols; i++) X[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
      qlm_mat W = {.type = type, .rows = rows, .cols = cols, .data = w, .row_bytes = rb};
      setenv("QLM_GEMM_Q", "1", 1);
      double a = best_ms(&W, X, T, Y, pool, reps);
      setenv("QLM_GEMM_Q", "0", 1);
      double b = best_ms(&W, X, T, Y, pool, reps);
      double mac = (double)rows * cols * T;
      printf("| %s | %lld x %lld | %d | %.2f | %.2f | %.1f | %.1f |\n", qlm_type_name(type), (long long)rows,
             (long long)cols, T, a, b, mac / a * 1e-6, mac / b * 1e-6);
      free(w), free(X), free(Y);
    }
  qlm_pool_free(pool);
  return 0;
}
