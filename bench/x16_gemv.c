/* x16_gemv.c — how close the 16-row interleaved kernels (kernels/x16.h: Q4_0, Q4_K) come to the
 * memory system when decoding: one activation row against a matrix of seeded random weights,
 * split over `threads` threads by 16-row groups as qlm_matmul does, next to a plain read of the
 * same bytes by the same threads (4 independent 64-bit sums each).  The two alternate per
 * repetition and each keeps its best, so drift of the shared machine hits both alike.  The ratio
 * kernel ÷ plain read is the fraction of the achievable bandwidth the kernel uses: below ~0.9 it
 * is compute-bound.  rows 11008 (26 MB of Q4_K) mostly sits in a large L3; rows 44032 (104 MB)
 * reads from DRAM.  Per-row blocks get a half scale of 0.01 so the sums stay finite.
 *
 * usage: x16_gemv [type=q4_K|q4_0] [rows=44032] [cols=4096] [threads=2] [reps=10] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fp16.h"
#include "kernels/cpu.h"
#include "kernels/types.h"
#include "kernels/x16.h"

#define MAX_THREADS 64

typedef struct job {
  const qlm_x16_kind *k;
  const void *wx, *act;
  size_t bytes;
  int64_t rows, cols, groups;
  float *y;
  int threads, plain;
  pthread_barrier_t start;
  double t0[MAX_THREADS], t1[MAX_THREADS];
  uint64_t sink[MAX_THREADS];
} job;

typedef struct arg {
  job *j;
  int ith;
} arg;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *p) {
  arg *a = p;
  job *j = a->j;
  int i = a->ith, n = j->threads;
  pthread_barrier_wait(&j->start);
  j->t0[i] = now(); /* each thread's own clock: with more threads than cores, a waiting main thread is late */
  if (!j->plain) {
    j->k->gemm(j->wx, j->cols / j->k->blk_cols, j->rows, j->groups * i / n, j->groups * (i + 1) / n, j->act, 1, j->y,
               j->rows);
  } else {
    size_t w0 = j->bytes / 64 * i / n * 8, w1 = j->bytes / 64 * (i + 1) / n * 8; /* 64-byte lines, in words */
    const uint64_t *w = j->wx;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t x = w0; x + 4 <= w1; x += 4) s0 += w[x], s1 += w[x + 1], s2 += w[x + 2], s3 += w[x + 3];
    j->sink[i] = s0 + s1 + s2 + s3;
  }
  j->t1[i] = now();
  return NULL;
}

/* One timed pass of the kernel (plain = 0) or the plain read: first start to last end. */
static double pass(job *j, int plain) {
  pthread_t th[MAX_THREADS];
  arg a[MAX_THREADS];
  j->plain = plain;
  pthread_barrier_init(&j->start, NULL, (unsigned)j->threads);
  for (int i = 0; i < j->threads; i++) {
    a[i] = (arg){j, i};
    pthread_create(&th[i], NULL, worker, &a[i]);
  }
  for (int i = 0; i < j->threads; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&j->start);
  double t0 = j->t0[0], t1 = j->t1[0];
  for (int i = 1; i < j->threads; i++) t0 = j->t0[i] < t0 ? j->t0[i] : t0, t1 = j->t1[i] > t1 ? j->t1[i] : t1;
  return t1 - t0;
}

/* Seeded random blocks with every block's half scale(s) set to 0.01. */
static void fill_weights(int type, uint8_t *w, size_t row_bytes, int64_t rows, int64_t cols) {
  uint64_t s = 42;
  for (size_t i = 0; i < row_bytes * (size_t)rows; i++) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    w[i] = (uint8_t)(s >> 56);
  }
  int64_t blk = type == QLM_TYPE_Q4_K ? 256 : 32;
  size_t bb = row_bytes / (size_t)(cols / blk);
  uint16_t h = qlm_f32_to_f16(0.01f);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t b = 0; b < cols / blk; b++) {
      uint8_t *p = w + (size_t)r * row_bytes + (size_t)b * bb;
      memcpy(p, &h, 2);
      if (type == QLM_TYPE_Q4_K) memcpy(p + 2, &h, 2); /* dmin */
    }
}

int main(int argc, char **argv) {
  const char *tn = argc > 1 ? argv[1] : "q4_K";
  int64_t rows = argc > 2 ? atoll(argv[2]) : 44032, cols = argc > 3 ? atoll(argv[3]) : 4096;
  int threads = argc > 4 ? atoi(argv[4]) : 2, reps = argc > 5 ? atoi(argv[5]) : 10;
  int type = !strcmp(tn, "q4_K") ? QLM_TYPE_Q4_K : !strcmp(tn, "q4_0") ? QLM_TYPE_Q4_0 : -1;
  qlm_simd_level level = qlm_cpu_simd_level();
  const qlm_x16_kind *k = type >= 0 ? qlm_x16_for(type, cols, level) : NULL;
  if (!k || rows < 16 || threads < 1 || threads > MAX_THREADS || reps < 1) {
    fprintf(stderr, "x16_gemv: type q4_K or q4_0, cols whole blocks, rows >= 16, 1..%d threads, an AVX-512 VNNI CPU "
                    "(usage at the top of bench/x16_gemv.c)\n", MAX_THREADS);
    return 2;
  }
  size_t row_bytes = qlm_type_row_bytes(type, cols), xbytes = k->bytes(rows, cols);
  uint8_t *w = malloc(row_bytes * (size_t)rows);
  void *wx = aligned_alloc(64, (xbytes + 63) / 64 * 64), *act = aligned_alloc(64, (size_t)(cols / k->blk_cols) * k->ablk + 64);
  float *x = malloc((size_t)cols * sizeof *x), *y = malloc((size_t)rows * sizeof *y);
  if (!w || !wx || !act || !x || !y) {
    fprintf(stderr, "x16_gemv: out of memory\n");
    return 1;
  }
  fill_weights(type, w, row_bytes, rows, cols);
  k->pack(w, row_bytes, rows, cols, 0, (rows + 15) / 16, wx);
  free(w);
  for (int64_t i = 0; i < cols; i++) x[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
  k->quantize_act(x, cols, act, level);
  job j = {.k = k, .wx = wx, .act = act, .bytes = xbytes, .rows = rows, .cols = cols, .groups = (rows + 15) / 16,
           .y = y, .threads = threads};
  double best[2] = {1e30, 1e30};
  for (int r = 0; r < reps + 1; r++) /* the first round warms up (page faults, clocks) */
    for (int plain = 0; plain < 2; plain++) {
      double dt = pass(&j, plain);
      if (r > 0 && dt < best[plain]) best[plain] = dt;
    }
  printf("%s %lld x %lld (%.1f MB interleaved), %d threads, best of %d: kernel %.1f GB/s, plain read %.1f GB/s, "
         "kernel / plain %.2f\n", tn, (long long)rows, (long long)cols, xbytes / 1e6, threads, reps,
         xbytes / best[0] / 1e9, xbytes / best[1] / 1e9, best[1] / best[0]);
  free(wx), free(act), free(x), free(y);
  return 0;
}
