/* rtn_kernels.c — decode (T = 1) matrix-vector speed of the RTN types next to f32, Q8_0 and Q4_0.
 *
 * usage: rtn_kernels [rows cols [ms [best]]]   (default 576 576 300: SmolLM2-135M's attention
 * matrices; "best": only the best SIMD level this CPU has, not every level)
 * For each type: ns per y = W x on one thread through qlm_matmul_ex (activation quantization
 * included, as in the model), at every SIMD level this CPU has, and GB/s of weight bytes read.
 * NF4 (bitsandbytes, f32 activations and a table lookup) is the yardstick for the 4-bit types.
 * Weights are N(0, 0.02) quantized by the methods themselves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu.h"
#include "kernels/gemv.h"
#include "kernels/matmul.h"
#include "kernels/types.h"
#include "generate/generate.h"
#include "quant/method.h"

typedef struct bcase {
  const char *label;
  const qlm_quant_method *m; /* NULL: f32 */
  qlm_quant_opts o;
} bcase;

static uint64_t rng_state = 88172645463325252ull;
static float randn(void) {
  /* sum of 12 uniforms - 6: close enough to N(0,1) for timing */
  float s = 0;
  for (int i = 0; i < 12; i++) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    s += (float)(rng_state >> 40) / 16777216.0f;
  }
  return s - 6.0f;
}

int main(int argc, char **argv) {
  int64_t rows = argc > 2 ? atoll(argv[1]) : 576, cols = argc > 2 ? atoll(argv[2]) : 576;
  double ms = argc > 3 ? atof(argv[3]) : 300;
  const int best_only = argc > 4 && !strcmp(argv[4], "best");
  if (rows < 1 || cols < 1 || rows * cols > (1 << 26)) return fprintf(stderr, "rtn_kernels: bad shape\n"), 2;
  float *W = malloc((size_t)(rows * cols) * sizeof *W), *x = malloc((size_t)cols * sizeof *x),
        *y = malloc((size_t)rows * sizeof *y);
  if (!W || !x || !y) return 1;
  for (int64_t i = 0; i < rows * cols; i++) W[i] = 0.02f * randn();
  for (int64_t i = 0; i < cols; i++) x[i] = randn();
  const bcase cases[] = {
      {"f32", NULL, {0}},
      {"q8_0", &qlm_method_ggml, {.type = QLM_TYPE_Q8_0}},
      {"q4_0", &qlm_method_ggml, {.type = QLM_TYPE_Q4_0}},
      {"nf4", &qlm_method_nf4, {0}},
      {"absmax8 g32", &qlm_method_absmax, {.bits = 8, .group = 32}},
      {"absmax8 g128", &qlm_method_absmax, {.bits = 8, .group = 128}},
      {"absmax8 channel", &qlm_method_absmax, {.bits = 8, .group = QLM_GROUP_CHANNEL}},
      {"zeropoint8 g32", &qlm_method_zeropoint, {.bits = 8, .group = 32}},
      {"zeropoint8 g128", &qlm_method_zeropoint, {.bits = 8, .group = 128}},
      {"absmax4 g32", &qlm_method_absmax, {.bits = 4, .group = 32}},
      {"absmax4 g64", &qlm_method_absmax, {.bits = 4, .group = 64}},
      {"absmax4 g128", &qlm_method_absmax, {.bits = 4, .group = 128}},
      {"absmax4 g48 (16 | g)", &qlm_method_absmax, {.bits = 4, .group = 48}},
      {"zeropoint4 g32", &qlm_method_zeropoint, {.bits = 4, .group = 32}},
      {"zeropoint4 g64", &qlm_method_zeropoint, {.bits = 4, .group = 64}},
      {"zeropoint4 g128", &qlm_method_zeropoint, {.bits = 4, .group = 128}},
      {"absmax3 g128 (scalar ref)", &qlm_method_absmax, {.bits = 3, .group = 128}},
  };
  printf("%lld x %lld, one thread, T = 1, cpu %s%s\n\n", (long long)rows, (long long)cols,
         qlm_simd_name(qlm_cpu_detect()), qlm_cpu_has_avx512_vnni() ? "+vnni" : "");
  printf("| type | level | bpw | ns / matvec | GB/s weights | x f32 (same level) |\n|---|---|---|---|---|---|\n");
  double f32_ns[3] = {0};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    qlm_qtensor q = {0};
    qlm_mat M = {.type = QLM_TYPE_F32, .rows = rows, .cols = cols, .data = W, .row_bytes = (size_t)cols * 4};
    if (cases[ci].m) {
      qlm_quant_opts o = cases[ci].o;
      qlm_error err = {0};
      cases[ci].m->defaults(&o);
      if (cases[ci].m->quantize(W, rows, cols, NULL, &o, &q, &err)) {
        fprintf(stderr, "rtn_kernels: %s: %s\n", cases[ci].label, err.msg);
        continue;
      }
      M.type = q.type, M.data = q.data, M.row_bytes = q.row_bytes;
    }
    double bytes = (double)M.row_bytes * (double)rows;
    for (int lv = best_only ? (int)qlm_cpu_detect() : QLM_SIMD_SCALAR; lv <= (int)qlm_cpu_detect(); lv++) {
      qlm_matmul_ex(&M, x, 1, y, NULL, (qlm_simd_level)lv, 1); /* warm up */
      long iters = 0;
      double t0 = qlm_now_s(), t;
      do {
        for (int k = 0; k < 20; k++) qlm_matmul_ex(&M, x, 1, y, NULL, (qlm_simd_level)lv, 1);
        iters += 20;
      } while ((t = qlm_now_s() - t0) < ms / 1000.0);
      double ns = t / (double)iters * 1e9;
      if (!cases[ci].m) f32_ns[lv] = ns;
      printf("| %s | %s | %.2f | %.0f | %.1f | %.2f |\n", cases[ci].label, qlm_simd_name((qlm_simd_level)lv),
             bytes * 8 / (double)(rows * cols), ns, bytes / ns, f32_ns[lv] / ns);
    }
    qlm_qtensor_free(&q);
  }
  free(W), free(x), free(y);
  return 0;
}
