/* bench.c — speed tests (prefill/decode tokens/s), machine probes, rooflines, result tables.
 *
 * Probe methods (both short, < 1 s each per thread count, results cached; see bench.h):
 *
 *  Memory bandwidth: a buffer of 8x the last-level cache (at least 256 MiB) is written once
 *  (first touch, by the threads that later read it), then each of n threads streams through
 *  its own contiguous slice with aligned 64-byte (AVX-512) or 32-byte (AVX2) integer loads into
 *  4 independent accumulators (so the loads, not the adds, limit the loop).  Bytes read ÷ wall
 *  time of the slowest thread, best of 3 passes.  The buffer is far larger than the caches, so
 *  this is DRAM read bandwidth — what decoding a model bigger than the caches is bound by.
 *
 *  FMA peak: each of n threads runs 16 (AVX-512) or 12 (AVX2) independent chains of fp32
 *  vector FMAs acc = acc * a + b.  Independent chains hide the FMA latency (about 4 cycles
 *  with 2 pipes needs >= 8 in flight); the chains stay finite (|a| < 1).  FLOPs = iterations x
 *  chains x lanes x 2, ÷ wall time, best of 3.  The level is what the CPU supports
 *  (qlm_cpu_detect), not the QLM_SIMD cap: the roofline is the hardware's.
 *
 * The vector code uses per-function target attributes so this file needs no -m flags and runs
 * on any x86-64 (and compiles elsewhere with the scalar fallbacks). */
#include "generate/bench.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/mapfile.h"
#include "generate/generate.h"
#include "kernels/cpu.h"
#include "kernels/threadpool.h"
#include "kernels/types.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QLM_BENCH_X86 1
#endif

/* The probe loops must be measured optimized even in a Debug build (at -O0 every accumulator
 * would round-trip through the stack and the "peak" would be a store-forwarding benchmark). */
#if defined(__GNUC__) && !defined(__clang__)
#define PROBE_OPT __attribute__((optimize("O2")))
#else
#define PROBE_OPT
#endif

/* ---------------------------------------------------------------- model cost */

static void add_mat(const qlm_mat *w, qlm_model_cost *c) {
  if (w->rows <= 0 || !w->data) return; /* absent (e.g. gpt2's gate) */
  c->bytes_per_token += (double)w->rows * (double)w->row_bytes;
  c->params += (double)w->rows * (double)w->cols;
}

void qlm_model_cost_of(const qlm_model *m, qlm_model_cost *c) {
  *c = (qlm_model_cost){0};
  for (int l = 0; l < m->hp.n_layer; l++) {
    const qlm_layer *L = &m->layers[l];
    const qlm_mat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) add_mat(mats[i], c);
  }
  add_mat(&m->output, c); /* read whole for every token's logits, tied or not */
}

double qlm_roofline_decode_tps(double bandwidth_Bps, double bytes_per_token) {
  return bytes_per_token > 0 ? bandwidth_Bps / bytes_per_token : 0;
}

double qlm_roofline_prefill_tps(double flops_per_s, double params) {
  return params > 0 ? flops_per_s / (2.0 * params) : 0;
}

void qlm_bench_stats(const double *x, int r, double *mean, double *sd) {
  double s = 0, s2 = 0;
  for (int i = 0; i < r; i++) s += x[i];
  *mean = r > 0 ? s / r : 0;
  for (int i = 0; i < r; i++) s2 += (x[i] - *mean) * (x[i] - *mean);
  *sd = r > 1 ? sqrt(s2 / (r - 1)) : 0;
}

/* ---------------------------------------------------------------- speed tests */

/* Seconds for one prefill of n_p tokens (fresh cache). */
static double time_prefill(const qlm_model *m, qlm_state *st, const int32_t *ids, int n_p, qlm_error *err) {
  qlm_state_clear(st, 0);
  double t0 = qlm_now_s();
  if (qlm_forward_seq(m, st, 0, 0, ids, n_p, NULL, err)) return -1;
  return qlm_now_s() - t0;
}

/* Seconds for n_g decode steps after one prompt token. */
static double time_decode(const qlm_model *m, qlm_state *st, const int32_t *ids, int n_g, float *logits,
                          qlm_error *err) {
  qlm_state_clear(st, 0);
  if (qlm_forward_seq(m, st, 0, 0, ids, 1, logits, err)) return -1;
  double t0 = qlm_now_s();
  for (int i = 0; i < n_g; i++)
    if (qlm_forward_seq(m, st, 0, 1 + i, &ids[1 + i], 1, logits, err)) return -1;
  return qlm_now_s() - t0;
}

int qlm_bench_model(const qlm_model *m, int n_p, int n_g, int n_threads, int reps, double *pp_tps, double *tg_tps,
                    qlm_error *err) {
  if (reps < 1 || reps > QLM_BENCH_MAX_REPS || n_threads < 1 || (pp_tps && n_p < 1) || (tg_tps && n_g < 1))
    return qlm_fail(err, QLM_EUSAGE, "bench: need 1 <= reps <= %d, threads >= 1, tokens >= 1", QLM_BENCH_MAX_REPS);
  if (!pp_tps) n_p = 0;
  if (!tg_tps) n_g = 0;
  int n_tok = n_p > n_g + 1 ? n_p : n_g + 1;
  if (n_tok < 16) n_tok = 16; /* the decode warm-up prefills 16 tokens */
  int rc = 0;
  qlm_state *st = NULL;
  int32_t *ids = qlm_malloc((size_t)n_tok * sizeof *ids, "bench token ids", err);
  float *logits = qlm_malloc((size_t)m->hp.n_vocab * sizeof *logits, "bench logits", err);
  if (!ids || !logits) {
    rc = err->code;
    goto done;
  }
  uint64_t rng = 12345; /* same ids every run: a PCG-style LCG, top bits */
  for (int i = 0; i < n_tok; i++) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = (int32_t)((rng >> 33) % (uint64_t)m->hp.n_vocab);
  }
  if ((rc = qlm_state_new(m, 1, n_tok + 1, n_p > 16 ? n_p : 16, n_threads, &st, err))) goto done;
  for (int test = 0; test < 2; test++) {
    double *out = test == 0 ? pp_tps : tg_tps;
    if (!out) continue;
    if (time_prefill(m, st, ids, test == 0 ? n_p : 16, err) < 0) { /* warm-up */
      rc = err->code;
      goto done;
    }
    for (int r = 0; r < reps; r++) {
      double s = test == 0 ? time_prefill(m, st, ids, n_p, err) : time_decode(m, st, ids, n_g, logits, err);
      if (s < 0) {
        rc = err->code;
        goto done;
      }
      out[r] = (test == 0 ? n_p : n_g) / (s > 1e-9 ? s : 1e-9);
    }
  }
done:
  qlm_state_free(st);
  free(ids);
  free(logits);
  return rc;
}

/* ---------------------------------------------------------------- probes */

#ifdef QLM_BENCH_X86
PROBE_OPT __attribute__((target("avx512f"))) static uint64_t read_avx512(const void *p, size_t n) {
  const __m512i *v = p;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 4 <= n / 64; i += 4) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(v + i));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(v + i + 1));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(v + i + 2));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(v + i + 3));
  }
  uint64_t t[8], r = 0; /* summed unsigned: the intrinsic reduce is a signed (overflowing) add */
  _mm512_storeu_si512(t, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  for (int k = 0; k < 8; k++) r += t[k];
  return r;
}

PROBE_OPT __attribute__((target("avx2"))) static uint64_t read_avx2(const void *p, size_t n) {
  const __m256i *v = p;
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 4 <= n / 32; i += 4) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(v + i));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(v + i + 1));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(v + i + 2));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(v + i + 3));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  uint64_t t[4];
  _mm256_storeu_si256((__m256i *)t, s);
  return t[0] + t[1] + t[2] + t[3];
}

/* The chains are named variables, not an array indexed in a loop: at -O2 GCC does not fully
 * unroll such a loop, and the array would live in memory (a store-forwarding benchmark). */
#define CHAINS4(F, a, b, c0, c1, c2, c3) c0 = F(c0, a, b), c1 = F(c1, a, b), c2 = F(c2, a, b), c3 = F(c3, a, b)

/* 16 chains x 16 lanes x 2 FLOPs per iteration. */
PROBE_OPT __attribute__((target("avx512f"))) static float fma_avx512(long iters, float seed) {
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
  __m512 c0 = _mm512_set1_ps(seed), c1 = _mm512_set1_ps(seed + 1), c2 = _mm512_set1_ps(seed + 2), c3 = _mm512_set1_ps(seed + 3);
  /* every chain starts apart: equal chains would be merged by the compiler (common subexpressions) */
  __m512 c4 = _mm512_set1_ps(seed + 4), c5 = _mm512_set1_ps(seed + 5), c6 = _mm512_set1_ps(seed + 6), c7 = _mm512_set1_ps(seed + 7);
  __m512 c8 = _mm512_set1_ps(seed + 8), c9 = _mm512_set1_ps(seed + 9), c10 = _mm512_set1_ps(seed + 10), c11 = _mm512_set1_ps(seed + 11);
  __m512 c12 = _mm512_set1_ps(seed + 12), c13 = _mm512_set1_ps(seed + 13), c14 = _mm512_set1_ps(seed + 14), c15 = _mm512_set1_ps(seed + 15);
  for (long i = 0; i < iters; i++) {
    CHAINS4(_mm512_fmadd_ps, a, b, c0, c1, c2, c3);
    CHAINS4(_mm512_fmadd_ps, a, b, c4, c5, c6, c7);
    CHAINS4(_mm512_fmadd_ps, a, b, c8, c9, c10, c11);
    CHAINS4(_mm512_fmadd_ps, a, b, c12, c13, c14, c15);
  }
  __m512 s0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                            _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
  __m512 s1 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                            _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15)));
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

/* 12 chains x 8 lanes x 2 FLOPs per iteration. */
PROBE_OPT __attribute__((target("avx2,fma"))) static float fma_avx2(long iters, float seed) {
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
  __m256 c0 = _mm256_set1_ps(seed), c1 = _mm256_set1_ps(seed + 1), c2 = _mm256_set1_ps(seed + 2), c3 = _mm256_set1_ps(seed + 3);
  __m256 c4 = _mm256_set1_ps(seed + 4), c5 = _mm256_set1_ps(seed + 5), c6 = _mm256_set1_ps(seed + 6), c7 = _mm256_set1_ps(seed + 7);
  __m256 c8 = _mm256_set1_ps(seed + 8), c9 = _mm256_set1_ps(seed + 9), c10 = _mm256_set1_ps(seed + 10), c11 = _mm256_set1_ps(seed + 11);
  for (long i = 0; i < iters; i++) {
    CHAINS4(_mm256_fmadd_ps, a, b, c0, c1, c2, c3);
    CHAINS4(_mm256_fmadd_ps, a, b, c4, c5, c6, c7);
    CHAINS4(_mm256_fmadd_ps, a, b, c8, c9, c10, c11);
  }
  __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                           _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)),
                                         _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11))));
  float t[8];
  _mm256_storeu_ps(t, s);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

PROBE_OPT static uint64_t read_scalar(const void *p, size_t n) {
  const uint64_t *v = p;
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i + 4 <= n / 8; i += 4) a0 += v[i], a1 += v[i + 1], a2 += v[i + 2], a3 += v[i + 3];
  return a0 + a1 + a2 + a3;
}

/* 8 chains x 1 lane x 2 FLOPs per iteration (fmaf may be a library call: a fallback only). */
PROBE_OPT static float fma_scalar(long iters, float seed) {
  float c[8];
  for (int k = 0; k < 8; k++) c[k] = seed + (float)k;
  for (long i = 0; i < iters; i++)
    for (int k = 0; k < 8; k++) c[k] = fmaf(c[k], 0.999f, 1e-3f);
  return c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7];
}

typedef struct probe_ctx {
  unsigned char *buf; /* [bytes], 64-byte aligned */
  size_t bytes;
  int level;          /* qlm_simd_level */
  int fill;           /* 1: write the slices (first touch) instead of reading */
  long iters;         /* FMA iterations per thread */
  volatile uint64_t sink[QLM_MACHINE_MAX_THREADS]; /* keeps the results alive */
} probe_ctx;

/* Thread ith's slice: a multiple of 256 bytes (4 AVX-512 loads). */
static void slice(const probe_ctx *c, int ith, int nth, size_t *off, size_t *len) {
  size_t per = c->bytes / (size_t)nth / 256 * 256;
  *off = per * (size_t)ith;
  *len = per;
}

static void read_task(void *vctx, int ith, int nth) {
  probe_ctx *c = vctx;
  size_t off, len;
  slice(c, ith, nth, &off, &len);
  if (c->fill) {
    memset(c->buf + off, ith + 1, len);
    return;
  }
  uint64_t s;
#ifdef QLM_BENCH_X86
  if (c->level >= QLM_SIMD_AVX512) s = read_avx512(c->buf + off, len);
  else if (c->level >= QLM_SIMD_AVX2) s = read_avx2(c->buf + off, len);
  else
#endif
    s = read_scalar(c->buf + off, len);
  c->sink[ith % QLM_MACHINE_MAX_THREADS] += s;
}

static void fma_task(void *vctx, int ith, int nth) {
  (void)nth;
  probe_ctx *c = vctx;
  float s;
#ifdef QLM_BENCH_X86
  if (c->level >= QLM_SIMD_AVX512) s = fma_avx512(c->iters, (float)ith);
  else if (c->level >= QLM_SIMD_AVX2) s = fma_avx2(c->iters, (float)ith);
  else
#endif
    s = fma_scalar(c->iters, (float)ith);
  c->sink[ith % QLM_MACHINE_MAX_THREADS] += (uint64_t)(s != s); /* never true; forces the use */
}

static size_t default_probe_bytes(void) {
  long llc = 0;
#ifdef _SC_LEVEL3_CACHE_SIZE
  llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
  size_t b = llc > 0 ? (size_t)llc * 8 : 0;
  size_t lo = (size_t)256 << 20, hi = (size_t)2 << 30;
  return b < lo ? lo : b > hi ? hi : b;
}

int qlm_probe_bandwidth(int n_threads, size_t bytes, double *Bps, qlm_error *err) {
  if (n_threads < 1 || n_threads > 1024) return qlm_fail(err, QLM_EUSAGE, "bandwidth probe: threads %d out of range", n_threads);
  if (!bytes) bytes = default_probe_bytes();
  if (bytes < (size_t)n_threads * 256) return qlm_fail(err, QLM_EUSAGE, "bandwidth probe: buffer of %zu bytes too small", bytes);
  probe_ctx *c = qlm_calloc(1, sizeof *c, "probe context", err);
  if (!c) return err->code;
  c->bytes = bytes;
  if (posix_memalign((void **)&c->buf, 64, bytes)) {
    free(c);
    return qlm_fail(err, QLM_ENOMEM, "bandwidth probe: cannot allocate %zu bytes", bytes);
  }
  qlm_pool *pool = qlm_pool_new(n_threads);
  c->level = qlm_cpu_detect();
  c->fill = 1;
  qlm_pool_run(pool, read_task, c);
  c->fill = 0;
  qlm_pool_run(pool, read_task, c); /* warm-up pass (TLB, frequency) */
  size_t per = bytes / (size_t)n_threads / 256 * 256;
  double best = 0;
  for (int pass = 0; pass < 3; pass++) {
    double t0 = qlm_now_s();
    qlm_pool_run(pool, read_task, c);
    double dt = qlm_now_s() - t0, bw = (double)per * n_threads / (dt > 1e-9 ? dt : 1e-9);
    if (bw > best) best = bw;
  }
  qlm_pool_free(pool);
  free(c->buf);
  free(c);
  *Bps = best;
  return 0;
}

int qlm_probe_fma(int n_threads, double *flops, qlm_error *err) {
  if (n_threads < 1 || n_threads > 1024) return qlm_fail(err, QLM_EUSAGE, "FMA probe: threads %d out of range", n_threads);
  probe_ctx *c = qlm_calloc(1, sizeof *c, "probe context", err);
  if (!c) return err->code;
  c->level = qlm_cpu_detect();
  double per_iter = c->level >= QLM_SIMD_AVX512 ? 16 * 16 * 2 : c->level >= QLM_SIMD_AVX2 ? 12 * 8 * 2 : 8 * 2;
  c->iters = c->level >= QLM_SIMD_AVX2 ? 1L << 20 : 1L << 18; /* ~10-50 ms per pass */
  qlm_pool *pool = qlm_pool_new(n_threads);
  qlm_pool_run(pool, fma_task, c); /* warm-up: bring the vector units up to speed */
  double best = 0;
  for (int pass = 0; pass < 3; pass++) {
    double t0 = qlm_now_s();
    qlm_pool_run(pool, fma_task, c);
    double dt = qlm_now_s() - t0, f = per_iter * (double)c->iters * n_threads / (dt > 1e-9 ? dt : 1e-9);
    if (f > best) best = f;
  }
  qlm_pool_free(pool);
  free(c);
  *flops = best;
  return 0;
}

/* ---------------------------------------------------------------- machine cache */

void qlm_machine_identify(qlm_machine *m) {
  *m = (qlm_machine){0};
  snprintf(m->cpu, sizeof m->cpu, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f)) {
      if (strncmp(line, "model name", 10)) continue;
      const char *v = strchr(line, ':');
      if (!v) continue;
      v++;
      while (*v == ' ' || *v == '\t') v++;
      size_t n = strcspn(v, "\n");
      snprintf(m->cpu, sizeof m->cpu, "%.*s", (int)n, v);
      break;
    }
    fclose(f);
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  m->cores = n > 0 && n < 1 << 20 ? (int)n : 1;
  snprintf(m->simd, sizeof m->simd, "%s", qlm_simd_name(qlm_cpu_detect()));
}

int qlm_machine_find(const qlm_machine *m, int n_threads) {
  for (int i = 0; i < m->n; i++)
    if (m->threads[i] == n_threads) return i;
  return -1;
}

const char *qlm_machine_cache_path(char *buf, size_t cap) {
  const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
  int n;
  if (x && *x) n = snprintf(buf, cap, "%s/qlm/machine.json", x);
  else if (h && *h) n = snprintf(buf, cap, "%s/.cache/qlm/machine.json", h);
  else return NULL;
  return n > 0 && (size_t)n < cap ? buf : NULL;
}

/* Read {"threads": [...], "bandwidth_Bps": [...], "fma_flops": [...]} into m (all or nothing). */
static int parse_machine(const char *path, const char *text, qlm_machine *m, qlm_error *err) {
  cJSON *root = cJSON_Parse(text);
  if (!root) return qlm_fail(err, QLM_EFORMAT, "%s: not valid JSON", path);
  int rc = 0;
  const cJSON *cpu = cJSON_GetObjectItemCaseSensitive(root, "cpu"), *cores = cJSON_GetObjectItemCaseSensitive(root, "cores"),
              *simd = cJSON_GetObjectItemCaseSensitive(root, "simd"),
              *th = cJSON_GetObjectItemCaseSensitive(root, "threads"),
              *bw = cJSON_GetObjectItemCaseSensitive(root, "bandwidth_Bps"),
              *fl = cJSON_GetObjectItemCaseSensitive(root, "fma_flops");
  int n = cJSON_GetArraySize(th);
  if (!cJSON_IsString(cpu) || !cJSON_IsNumber(cores) || !cJSON_IsArray(th) || !cJSON_IsArray(bw) || !cJSON_IsArray(fl) ||
      n > QLM_MACHINE_MAX_THREADS || cJSON_GetArraySize(bw) != n || cJSON_GetArraySize(fl) != n) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: expected cpu, cores, and threads/bandwidth_Bps/fma_flops arrays of equal length <= %d",
                  path, QLM_MACHINE_MAX_THREADS);
    goto done;
  }
  *m = (qlm_machine){0};
  snprintf(m->cpu, sizeof m->cpu, "%s", cpu->valuestring);
  m->cores = (int)cores->valuedouble;
  if (cJSON_IsString(simd)) snprintf(m->simd, sizeof m->simd, "%s", simd->valuestring);
  for (int i = 0; i < n; i++) {
    const cJSON *t = cJSON_GetArrayItem(th, i), *b = cJSON_GetArrayItem(bw, i), *f = cJSON_GetArrayItem(fl, i);
    if (!cJSON_IsNumber(t) || !cJSON_IsNumber(b) || !cJSON_IsNumber(f) || t->valuedouble < 1 || t->valuedouble > 1024 ||
        !(b->valuedouble > 0) || !(f->valuedouble > 0) || !isfinite(b->valuedouble) || !isfinite(f->valuedouble)) {
      rc = qlm_fail(err, QLM_EFORMAT, "%s: entry %d: threads must be 1..1024, limits positive and finite", path, i);
      goto done;
    }
    m->threads[i] = (int)t->valuedouble;
    m->bw_Bps[i] = b->valuedouble;
    m->fma_flops[i] = f->valuedouble;
  }
  m->n = n;
done:
  cJSON_Delete(root);
  return rc;
}

int qlm_machine_load(const char *path, const qlm_machine *want, qlm_machine *m, bool *hit, qlm_error *err) {
  *hit = false;
  *m = *want;
  m->n = 0;
  if (!path || access(path, F_OK)) return 0; /* no cache yet */
  char *text = NULL;
  qlm_machine got;
  int rc = qlm_read_file(path, 1 << 20, &text, NULL, err);
  if (!rc) rc = parse_machine(path, text, &got, err);
  free(text);
  if (rc) return rc;
  if (strcmp(got.cpu, want->cpu) || got.cores != want->cores) return 0; /* another machine's: stale */
  *m = got;
  *hit = true;
  return 0;
}

/* mkdir -p of path's directory (best effort: the write reports what really fails). */
static void make_parent_dirs(const char *path) {
  char d[1024];
  if (snprintf(d, sizeof d, "%s", path) >= (int)sizeof d) return;
  for (char *p = d + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (access(d, F_OK)) (void)mkdir(d, 0755);
    *p = '/';
  }
}

int qlm_machine_save(const char *path, const qlm_machine *m, qlm_error *err) {
  cJSON *root = cJSON_CreateObject(), *th = cJSON_CreateArray(), *bw = cJSON_CreateArray(), *fl = cJSON_CreateArray();
  cJSON_AddStringToObject(root, "cpu", m->cpu);
  cJSON_AddNumberToObject(root, "cores", m->cores);
  cJSON_AddStringToObject(root, "simd", m->simd);
  for (int i = 0; i < m->n; i++) {
    cJSON_AddItemToArray(th, cJSON_CreateNumber(m->threads[i]));
    cJSON_AddItemToArray(bw, cJSON_CreateNumber(m->bw_Bps[i]));
    cJSON_AddItemToArray(fl, cJSON_CreateNumber(m->fma_flops[i]));
  }
  cJSON_AddItemToObject(root, "threads", th);
  cJSON_AddItemToObject(root, "bandwidth_Bps", bw);
  cJSON_AddItemToObject(root, "fma_flops", fl);
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  if (!text) return qlm_fail(err, QLM_ENOMEM, "%s: cannot format machine limits", path);
  make_parent_dirs(path);
  qlm_atomic_file af;
  int rc = qlm_atomic_open(&af, path, err);
  if (!rc && (rc = qlm_atomic_write(&af, text, strlen(text), err)) == 0) rc = qlm_atomic_commit(&af, err);
  if (rc) qlm_atomic_abort(&af);
  free(text);
  return rc;
}

int qlm_machine_limits(const char *path, const int *threads, int n, bool force, qlm_machine *m, qlm_error *err) {
  qlm_machine want;
  bool hit = false;
  qlm_machine_identify(&want);
  qlm_error lerr = {0};
  if (force || qlm_machine_load(path, &want, m, &hit, &lerr)) *m = want; /* unreadable cache: probe afresh */
  bool changed = false;
  for (int i = 0; i < n; i++) {
    if (qlm_machine_find(m, threads[i]) >= 0) continue;
    if (m->n >= QLM_MACHINE_MAX_THREADS) return qlm_fail(err, QLM_ELIMIT, "machine limits: more than %d thread counts", QLM_MACHINE_MAX_THREADS);
    int k = m->n;
    int rc = qlm_probe_bandwidth(threads[i], 0, &m->bw_Bps[k], err);
    if (!rc) rc = qlm_probe_fma(threads[i], &m->fma_flops[k], err);
    if (rc) return rc;
    m->threads[k] = threads[i];
    m->n++;
    changed = true;
  }
  if (changed && path) {
    qlm_error serr = {0};
    if (qlm_machine_save(path, m, &serr)) fprintf(stderr, "qlm: warning: %s\n", serr.msg); /* the numbers stand */
  }
  return 0;
}

/* ---------------------------------------------------------------- output */

static const char *test_name(const qlm_bench_row *r, char *buf, size_t cap) {
  snprintf(buf, cap, "%s%d", r->test == 0 ? "pp" : "tg", r->n_tokens);
  return buf;
}

static void print_md(FILE *f, const qlm_machine *mach, const qlm_bench_row *rows, int n) {
  if (mach && mach->n) {
    fprintf(f, "machine: %s, %d cores, %s\n\n| threads | bandwidth GB/s | FMA peak GFLOP/s |\n|--------:|---------------:|-----------------:|\n",
            mach->cpu, mach->cores, mach->simd);
    for (int i = 0; i < mach->n; i++)
      fprintf(f, "| %7d | %14.2f | %16.1f |\n", mach->threads[i], mach->bw_Bps[i] / 1e9, mach->fma_flops[i] / 1e9);
    fprintf(f, "\n");
  }
  fprintf(f, "| %-32s | %-10s | %10s | %8s | %7s | %6s | %19s | %10s | %6s |\n", "model", "type", "size MiB", "params M",
          "threads", "test", "t/s", "roof t/s", "% roof");
  fprintf(f, "|----------------------------------|------------|-----------:|---------:|--------:|-------:|--------------------:|-----------:|-------:|\n");
  for (int i = 0; i < n; i++) {
    const qlm_bench_row *r = &rows[i];
    char tn[32];
    fprintf(f, "| %-32s | %-10s | %10.2f | %8.2f | %7d | %6s | %9.2f ± %-7.2f | %10.2f | %5.1f%% |\n", r->model, r->type,
            r->size_bytes / 1048576.0, r->cost.params / 1e6, r->threads, test_name(r, tn, sizeof tn), r->mean, r->sd,
            r->roof_tps, 100.0 * qlm_roofline_fraction(r->mean, r->roof_tps));
  }
}

/* CSV field: quoted when it holds a comma, quote or newline (RFC 4180). */
static void csv_str(FILE *f, const char *s) {
  if (!strpbrk(s, ",\"\n\r")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void print_csv(FILE *f, const qlm_bench_row *rows, int n) {
  fprintf(f, "model,type,size_bytes,params,bytes_per_token,threads,test,n_tokens,reps,tps_mean,tps_sd,roof_tps,roof_fraction\n");
  for (int i = 0; i < n; i++) {
    const qlm_bench_row *r = &rows[i];
    char tn[32];
    csv_str(f, r->model);
    fputc(',', f);
    csv_str(f, r->type);
    fprintf(f, ",%.0f,%.0f,%.0f,%d,%s,%d,%d,%.4f,%.4f,%.4f,%.6f\n", r->size_bytes, r->cost.params, r->cost.bytes_per_token,
            r->threads, test_name(r, tn, sizeof tn), r->n_tokens, r->reps, r->mean, r->sd, r->roof_tps,
            qlm_roofline_fraction(r->mean, r->roof_tps));
  }
}

static int print_json(FILE *f, const qlm_machine *mach, const qlm_bench_row *rows, int n, qlm_error *err) {
  cJSON *root = cJSON_CreateObject(), *res = cJSON_CreateArray();
  if (mach) {
    cJSON *mj = cJSON_AddObjectToObject(root, "machine"), *lim = cJSON_CreateArray();
    cJSON_AddStringToObject(mj, "cpu", mach->cpu);
    cJSON_AddNumberToObject(mj, "cores", mach->cores);
    cJSON_AddStringToObject(mj, "simd", mach->simd);
    for (int i = 0; i < mach->n; i++) {
      cJSON *e = cJSON_CreateObject();
      cJSON_AddNumberToObject(e, "threads", mach->threads[i]);
      cJSON_AddNumberToObject(e, "bandwidth_Bps", mach->bw_Bps[i]);
      cJSON_AddNumberToObject(e, "fma_flops", mach->fma_flops[i]);
      cJSON_AddItemToArray(lim, e);
    }
    cJSON_AddItemToObject(mj, "limits", lim);
  }
  for (int i = 0; i < n; i++) {
    const qlm_bench_row *r = &rows[i];
    char tn[32];
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "model", r->model);
    cJSON_AddStringToObject(e, "type", r->type);
    cJSON_AddNumberToObject(e, "size_bytes", r->size_bytes);
    cJSON_AddNumberToObject(e, "params", r->cost.params);
    cJSON_AddNumberToObject(e, "bytes_per_token", r->cost.bytes_per_token);
    cJSON_AddNumberToObject(e, "threads", r->threads);
    cJSON_AddStringToObject(e, "test", test_name(r, tn, sizeof tn));
    cJSON_AddNumberToObject(e, "n_tokens", r->n_tokens);
    cJSON *s = cJSON_AddArrayToObject(e, "samples_tps");
    for (int k = 0; k < r->reps && k < QLM_BENCH_MAX_REPS; k++) cJSON_AddItemToArray(s, cJSON_CreateNumber(r->tps[k]));
    cJSON_AddNumberToObject(e, "tps_mean", r->mean);
    cJSON_AddNumberToObject(e, "tps_sd", r->sd);
    cJSON_AddNumberToObject(e, "roof_tps", r->roof_tps);
    cJSON_AddNumberToObject(e, "roof_fraction", qlm_roofline_fraction(r->mean, r->roof_tps));
    cJSON_AddItemToArray(res, e);
  }
  cJSON_AddItemToObject(root, "results", res);
  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  if (!text) return qlm_fail(err, QLM_ENOMEM, "bench: cannot format JSON");
  fprintf(f, "%s\n", text);
  free(text);
  return 0;
}

int qlm_bench_print(FILE *f, qlm_bench_format fmt, const qlm_machine *mach, const qlm_bench_row *rows, int n,
                    qlm_error *err) {
  if (fmt == QLM_BENCH_JSON) return print_json(f, mach, rows, n, err);
  if (fmt == QLM_BENCH_CSV) print_csv(f, rows, n);
  else print_md(f, mach, rows, n);
  return 0;
}
