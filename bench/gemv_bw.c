/* gemv_bw.c — how close decode's matrix-vector product comes to the memory system: qlm_matmul_ex
 * with one activation row (the decode path: f32 GEMV, vec_dot rows of the legacy types, the 16-row interleaved
 * Q4_0/Q4_K kernels of kernels/x16.h with their load-time copy made here as the loader makes it)
 * on a matrix of seeded random weights, next to a plain read of the same weight bytes by the same
 * pool threads (4 independent 64-bit sums each).  The two alternate per repetition and each keeps
 * its best, so drift of the shared machine hits both alike.  matmul ÷ plain read is the fraction
 * of the achievable bandwidth decode uses: well below 1 means the kernel is compute-bound.
 * rows 11008 x cols 4096 (LLaMA-2-7B's gate/up; 26-180 MB by type) may sit partly in a large L3;
 * the default rows 44032 (4x) reads from DRAM.  Block scales are set to 0.01 so sums stay finite.
 *
 * usage: gemv_bw [type=q4_K|q4_0|q4_1|q5_0|q5_1|q8_0|f32] [rows=44032] [cols=4096] [threads=2] [reps=10]
 *        QLM_X16=0: without the interleaved copy (the file's layout), to compare */
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
#include "kernels/x16.h"

typedef struct plain_read {
  const uint64_t *w;
  size_t bytes;
  uint64_t sink[256];
} plain_read;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Thread ith sums its share of whole 64-byte lines. */
static void read_share(void *arg, int ith, int nth) {
  plain_read *p = arg;
  size_t lines = p->bytes / 64, w0 = lines * (size_t)ith / (size_t)nth * 8, w1 = lines * (size_t)(ith + 1) / (size_t)nth * 8;
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (size_t x = w0; x + 4 <= w1; x += 4) s0 += p->w[x], s1 += p->w[x + 1], s2 += p->w[x + 2], s3 += p->w[x + 3];
  p->sink[ith % 256] = s0 + s1 + s2 + s3;
}

/* Seeded random bytes; every block's half scale (and Q4_K's dmin, Q4_1/Q5_1's m) 0.01; f32: small floats. */
static void fill_weights(int type, uint8_t *w, size_t row_bytes, int64_t rows, int64_t cols) {
  uint64_t s = 42;
  size_t n = row_bytes * (size_t)rows;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    w[i] = (uint8_t)(s >> 56);
  }
  if (type == QLM_TYPE_F32) {
    float *f = (float *)w;
    for (size_t i = 0; i < n / 4; i++) f[i] = (float)(w[4 * i] % 64) / 1024.0f - 0.03f;
    return;
  }
  int64_t blk = type == QLM_TYPE_Q4_K ? 256 : 32;
  size_t bb = row_bytes / (size_t)(cols / blk);
  uint16_t h = qlm_f32_to_f16(0.01f);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t b = 0; b < cols / blk; b++) {
      uint8_t *p = w + (size_t)r * row_bytes + (size_t)b * bb;
      memcpy(p, &h, 2);
      if (type == QLM_TYPE_Q4_K || type == QLM_TYPE_Q4_1 || type == QLM_TYPE_Q5_1) memcpy(p + 2, &h, 2); /* dmin, m */
    }
}

int main(int argc, char **argv) {
  const char *tn = argc > 1 ? argv[1] : "q4_K";
  int64_t rows = argc > 2 ? atoll(argv[2]) : 44032, cols = argc > 3 ? atoll(argv[3]) : 4096;
  int threads = argc > 4 ? atoi(argv[4]) : 2, reps = argc > 5 ? atoi(argv[5]) : 10;
  const struct { const char *name; int type; } types[] = {
      {"f32", QLM_TYPE_F32}, {"q8_0", QLM_TYPE_Q8_0}, {"q5_0", QLM_TYPE_Q5_0}, {"q5_1", QLM_TYPE_Q5_1},
      {"q4_0", QLM_TYPE_Q4_0}, {"q4_1", QLM_TYPE_Q4_1}, {"q4_K", QLM_TYPE_Q4_K}};
  int type = -1;
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (!strcmp(tn, types[i].name)) type = types[i].type;
  if (type < 0 || rows < 16 || cols < 32 || cols % (type == QLM_TYPE_Q4_K ? 256 : 32) || threads < 1 || threads > 256 ||
      reps < 1) {
    fprintf(stderr, "gemv_bw: type f32|q8_0|q5_0|q5_1|q4_0|q4_1|q4_K, rows >= 16, cols whole blocks (32; q4_K 256), 1..256 threads "
                    "(usage at the top of bench/gemv_bw.c)\n");
    return 2;
  }
  qlm_simd_level level = qlm_cpu_simd_level();
  size_t row_bytes = qlm_type_row_bytes(type, cols), bytes = row_bytes * (size_t)rows;
  uint8_t *w = aligned_alloc(64, (bytes + 63) / 64 * 64);
  float *x = malloc((size_t)cols * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
  if (!w || !x || !y) return fprintf(stderr, "gemv_bw: out of memory\n"), 1;
  fill_weights(type, w, row_bytes, rows, cols);
  for (int64_t i = 0; i < cols; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
  qlm_mat W = {.type = type, .rows = rows, .cols = cols, .data = w, .row_bytes = row_bytes};
  const char *x16_env = getenv("QLM_X16"); /* QLM_X16=0: the file's layout, as the loader does */
  const qlm_x16_kind *k = x16_env && !strcmp(x16_env, "0") ? NULL : qlm_x16_for(type, cols, level);
  void *wx = NULL;
  if (k) { /* what the loader does: the interleaved copy replaces the file's bytes for matmuls */
    size_t xb = k->bytes(rows, cols);
    if (!(wx = aligned_alloc(64, (xb + 63) / 64 * 64))) return fprintf(stderr, "gemv_bw: out of memory\n"), 1;
    k->pack(w, row_bytes, rows, cols, 0, (rows + 15) / 16, wx);
    W.x16 = wx;
    bytes = xb;
  }
  plain_read pr = {.w = wx ? wx : (const void *)w, .bytes = bytes};
  qlm_pool *pool = threads > 1 ? qlm_pool_new(threads) : NULL;
  double best[2] = {1e30, 1e30};
  for (int r = 0; r < reps + 1; r++) { /* round 0 warms up */
    double t0 = now();
    qlm_matmul_ex(&W, x, 1, y, pool, level, 1);
    double t1 = now();
    qlm_pool_run(pool, read_share, &pr);
    double t2 = now();
    if (r > 0) best[0] = t1 - t0 < best[0] ? t1 - t0 : best[0], best[1] = t2 - t1 < best[1] ? t2 - t1 : best[1];
  }
  printf("%s %lld x %lld (%.1f MB read%s), %d threads, best of %d: matmul %.1f GB/s, plain read %.1f GB/s, "
         "matmul / plain %.2f\n", tn, (long long)rows, (long long)cols, bytes / 1e6, k ? ", 16-row interleaved" : "",
         threads, reps, bytes / best[0] / 1e9, bytes / best[1] / 1e9, best[1] / best[0]);
  qlm_pool_free(pool);
  free(wx), free(w), free(x), free(y);
  return 0;
}
