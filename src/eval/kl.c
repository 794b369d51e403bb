/* kl.c — the base-logits file (top-k + remainder) and KL divergence statistics. */
#include "eval/kl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/atomic_file.h"

static const char kl_magic[8] = {'Q', 'L', 'M', 'K', 'L', 'D', '1', 0};

static const uint64_t fnv_init = 14695981039346656037ull;
/* The placeholder count of a streamed file until commit patches it: never a valid count, so a
 * file left with it is refused by the size check. */
static const uint64_t count_pending = UINT64_MAX;

uint64_t qlm_kl_test_mem_values;

static uint64_t fnv_i32(uint64_t h, int32_t v) {
  uint32_t u = (uint32_t)v;
  for (int i = 0; i < 4; i++) h = (h ^ ((u >> (8 * i)) & 0xff)) * 1099511628211ull;
  return h;
}

void qlm_kl_plan_fingerprint(const qlm_ppl_plan *p, int64_t n_win, uint64_t *n_records, uint64_t *fingerprint) {
  uint64_t h = fnv_init, n = 0;
  if (n_win <= 0 || n_win > p->n_win) n_win = p->n_win;
  for (int64_t w = 0; w < n_win; w++)
    for (int64_t i = p->win[w].score_from; i < p->win[w].end; i++, n++) h = fnv_i32(h, p->tokens[i]);
  *n_records = n;
  *fingerprint = h;
}

static size_t record_bytes(uint32_t k) { return 12 + 8 * (size_t)k; }

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }
static void put_f32(unsigned char *p, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  put_u32(p, u);
}
static float get_f32(const unsigned char *p) {
  uint32_t u = get_u32(p);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ---- top-k of a row ---- */

typedef struct cand { float v; int32_t id; } cand;

/* a ranks below b: smaller logit, or equal logit and larger id */
static int below(cand a, cand b) { return a.v < b.v || (a.v == b.v && a.id > b.id); }

static void sift_down(cand *h, int n, int i) {
  for (;;) {
    int m = i, l = 2 * i + 1, r = l + 1;
    if (l < n && below(h[l], h[m])) m = l;
    if (r < n && below(h[r], h[m])) m = r;
    if (m == i) return;
    cand t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

static int cmp_desc(const void *a, const void *b) {
  cand x = *(const cand *)a, y = *(const cand *)b;
  return below(y, x) ? -1 : below(x, y) ? 1 : 0;
}

/* The k largest logits, best first (h: [k] scratch). */
static void top_k(const float *logits, int V, int k, cand *h) {
  for (int i = 0; i < k; i++) h[i] = (cand){logits[i], i};
  for (int i = k / 2 - 1; i >= 0; i--) sift_down(h, k, i);
  for (int i = k; i < V; i++) {
    cand c = {logits[i], i};
    if (below(h[0], c)) {
      h[0] = c;
      sift_down(h, k, 0);
    }
  }
  qsort(h, (size_t)k, sizeof *h, cmp_desc);
}

/* ---- writer ---- */

struct qlm_kl_writer {
  qlm_atomic_file af;
  qlm_kl_header h;
  int announced;       /* h.n_records / h.fingerprint given at open and checked at commit */
  uint64_t written, fingerprint; /* records added, FNV-1a of their targets */
  cand *heap;          /* [k] */
  unsigned char *rec;  /* [record_bytes(k)] */
};

static int check_header_fields(const qlm_kl_header *h, const char *path, qlm_error *err) {
  if (h->n_vocab < 2 || h->n_vocab > (1u << 24))
    return qlm_fail(err, QLM_EFORMAT, "%s: n_vocab %u is not in [2, 16777216]", path, h->n_vocab);
  if (h->k < 1 || h->k > QLM_KL_MAX_K || h->k > h->n_vocab)
    return qlm_fail(err, QLM_EFORMAT, "%s: k %u is not in [1, %d] or exceeds n_vocab %u", path, h->k, QLM_KL_MAX_K,
                    h->n_vocab);
  return QLM_OK;
}

static int writer_open(qlm_kl_writer **out, const char *path, const qlm_kl_header *h, int announced, qlm_error *err) {
  *out = NULL;
  int rc = check_header_fields(h, path, err);
  if (rc) return rc;
  qlm_kl_writer *w = qlm_calloc(1, sizeof *w, "KL writer", err);
  if (!w) return QLM_ENOMEM;
  w->h = *h;
  w->announced = announced;
  w->fingerprint = fnv_init;
  w->af.fd = -1;
  if (!(w->heap = qlm_malloc(h->k * sizeof *w->heap, "KL writer", err)) ||
      !(w->rec = qlm_malloc(record_bytes(h->k), "KL writer", err))) {
    qlm_kl_writer_abort(w);
    return QLM_ENOMEM;
  }
  unsigned char hdr[QLM_KL_HEADER_BYTES] = {0};
  memcpy(hdr, kl_magic, 8);
  put_u32(hdr + 8, 1);
  put_u32(hdr + 12, h->n_vocab);
  put_u32(hdr + 16, h->k);
  put_u32(hdr + 20, h->protocol);
  put_u32(hdr + 24, h->window);
  put_u32(hdr + 28, h->stride);
  put_u64(hdr + 32, announced ? h->n_records : count_pending);
  put_u64(hdr + 40, announced ? h->fingerprint : 0);
  if ((rc = qlm_atomic_open(&w->af, path, err)) || (rc = qlm_atomic_write(&w->af, hdr, sizeof hdr, err))) {
    qlm_kl_writer_abort(w);
    return rc;
  }
  *out = w;
  return QLM_OK;
}

int qlm_kl_writer_open(qlm_kl_writer **out, const char *path, const qlm_kl_header *h, qlm_error *err) {
  return writer_open(out, path, h, 1, err);
}

int qlm_kl_writer_open_stream(qlm_kl_writer **out, const char *path, const qlm_kl_header *h, qlm_error *err) {
  return writer_open(out, path, h, 0, err);
}

/* Overwrite bytes [off, off + n) of what was written so far: the part already flushed to the file
 * with pwrite, the part still in the write buffer in place (atomic_file.h's buffer). */
static int patch_bytes(qlm_atomic_file *af, uint64_t off, const unsigned char *d, size_t n, qlm_error *err) {
  uint64_t flushed = af->written - af->buf_len;
  for (size_t i = 0; i < n; i++) {
    uint64_t at = off + i;
    if (at >= flushed) {
      af->buf[at - flushed] = d[i];
    } else if (pwrite(af->fd, d + i, 1, (off_t)at) != 1) {
      return qlm_fail(err, QLM_EIO, "%s: cannot patch the header of the temporary file: %s", af->path, strerror(errno));
    }
  }
  return QLM_OK;
}

int qlm_kl_writer_add(qlm_kl_writer *w, int32_t target, const float *logits, double lse, qlm_error *err) {
  if (w->announced && w->written >= w->h.n_records)
    return qlm_fail(err, QLM_EINTERNAL, "%s: more than the %llu records announced", w->af.path,
                    (unsigned long long)w->h.n_records);
  int V = (int)w->h.n_vocab, k = (int)w->h.k;
  top_k(logits, V, k, w->heap);
  double kept = 0;
  unsigned char *p = w->rec;
  put_u32(p, (uint32_t)target);
  put_f32(p + 4, (float)(lse - (double)logits[target]));
  for (int i = 0; i < k; i++) {
    double lp = (double)w->heap[i].v - lse;
    kept += exp(lp);
    put_u32(p + 12 + 8 * i, (uint32_t)w->heap[i].id);
    put_f32(p + 16 + 8 * i, (float)lp);
  }
  double rest = 1.0 - kept;
  put_f32(p + 8, rest > 0 ? (float)log(rest) : -INFINITY);
  w->written++;
  w->fingerprint = fnv_i32(w->fingerprint, target);
  return qlm_atomic_write(&w->af, p, record_bytes(w->h.k), err);
}

int qlm_kl_writer_commit(qlm_kl_writer *w, qlm_error *err) {
  int rc = QLM_OK;
  if (w->announced && (w->written != w->h.n_records || w->fingerprint != w->h.fingerprint)) {
    rc = qlm_fail(err, QLM_EINTERNAL, "%s: %llu records written, %llu announced (or other targets)", w->af.path,
                  (unsigned long long)w->written, (unsigned long long)w->h.n_records);
  } else {
    /* the count and fingerprint known now go into the header before the rename */
    unsigned char f[16];
    put_u64(f, w->written);
    put_u64(f + 8, w->fingerprint);
    rc = patch_bytes(&w->af, 32, f, sizeof f, err);
    if (!rc) rc = qlm_atomic_commit(&w->af, err);
  }
  qlm_kl_writer_abort(w);
  return rc;
}

void qlm_kl_writer_abort(qlm_kl_writer *w) {
  if (!w) return;
  if (w->af.path || w->af.fd >= 0) qlm_atomic_abort(&w->af);
  free(w->heap);
  free(w->rec);
  free(w);
}

/* ---- reader ----
 *
 * Records are read one at a time from a buffered stream (the file is never loaded or mapped
 * whole).  Each token's KL value is kept for the median and p99: in memory up to
 * kl_mem_values() values, beyond that in an unlinked temporary file, where the order statistics
 * are found exactly by radix selection (four sequential passes of 16 bits each). */

enum { KL_MEM_VALUES = 1 << 20 }; /* 8 MiB of KL values in memory before spilling */

static size_t kl_mem_values(void) {
  return qlm_kl_test_mem_values ? (size_t)qlm_kl_test_mem_values : KL_MEM_VALUES;
}

struct qlm_kl_reader {
  char *path;
  FILE *f;
  qlm_kl_header h;
  int check_fingerprint;  /* streamed: the records' targets are checked against the header at finish */
  uint64_t next;          /* records consumed */
  uint64_t fingerprint;   /* FNV-1a of the targets consumed */
  unsigned char *rec;     /* [record_bytes(k)] */
  double *kld;            /* [kld_cap] per-token KL, the values not yet spilled */
  size_t kld_n, kld_cap;
  FILE *spill;            /* per-token KL values beyond kld_cap, or NULL */
  double kld_sum, kld2_sum, nll_base, nll, dp2;
  uint64_t same_top;
};

static int reader_open(qlm_kl_reader **out, const char *path, const qlm_kl_header *expect, int streamed,
                       qlm_error *err) {
  *out = NULL;
  qlm_kl_reader *r = qlm_calloc(1, sizeof *r, "KL reader", err);
  if (!r) return QLM_ENOMEM;
  int rc = QLM_OK;
  struct stat sb;
  unsigned char d[QLM_KL_HEADER_BYTES];
  size_t got = 0;
  if (!(r->path = strdup(path))) {
    free(r);
    return qlm_fail(err, QLM_ENOMEM, "out of memory");
  }
  if (!(r->f = fopen(path, "rb")) || fstat(fileno(r->f), &sb) != 0)
    rc = qlm_fail(err, QLM_EIO, "%s: %s", path, strerror(errno));
  else if (S_ISDIR(sb.st_mode))
    rc = qlm_fail(err, QLM_EIO, "%s: is a directory", path);
  else
    got = fread(d, 1, sizeof d, r->f);
  size_t size = rc ? 0 : (size_t)sb.st_size;
  qlm_kl_header *h = &r->h;
  if (rc) {
  } else if (got < QLM_KL_HEADER_BYTES || memcmp(d, kl_magic, 8) != 0) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: not a qlm base-logits file (magic QLMKLD1 missing)", path);
  } else if (get_u32(d + 8) != 1) {
    rc = qlm_fail(err, QLM_EUNSUPPORTED, "%s: base-logits version %u (only 1 is known)", path, get_u32(d + 8));
  } else {
    *h = (qlm_kl_header){.n_vocab = get_u32(d + 12), .k = get_u32(d + 16), .protocol = get_u32(d + 20),
                         .window = get_u32(d + 24), .stride = get_u32(d + 28), .n_records = get_u64(d + 32),
                         .fingerprint = get_u64(d + 40)};
    size_t body;
    rc = check_header_fields(h, path, err);
    if (!rc && (h->n_records > (uint64_t)SIZE_MAX || qlm_mul_overflow((size_t)h->n_records, record_bytes(h->k), &body) ||
                qlm_add_overflow(body, QLM_KL_HEADER_BYTES, &body) || body != size))
      rc = qlm_fail(err, QLM_EFORMAT, "%s: %llu records of %zu bytes do not fill the file of %zu bytes", path,
                    (unsigned long long)h->n_records, record_bytes(h->k), size);
  }
  if (!rc && h->n_vocab != expect->n_vocab)
    rc = qlm_fail(err, QLM_EUSAGE, "%s: base model has %u vocabulary entries, this model %u", path, h->n_vocab,
                  expect->n_vocab);
  if (!rc && (h->protocol != expect->protocol || h->window != expect->window || h->stride != expect->stride))
    rc = qlm_fail(err, QLM_EUSAGE, "%s: saved with protocol %s window %u stride %u, but this run uses %s window %u stride %u",
                  path, qlm_ppl_protocol_name((int)h->protocol), h->window, h->stride,
                  qlm_ppl_protocol_name((int)expect->protocol), expect->window, expect->stride);
  if (!rc && !streamed && (h->n_records != expect->n_records || h->fingerprint != expect->fingerprint))
    rc = qlm_fail(err, QLM_EUSAGE, "%s: saved for %llu scored tokens with another text, tokenizer or --chunks (this run scores %llu; "
                  "fingerprints differ)", path, (unsigned long long)h->n_records, (unsigned long long)expect->n_records);
  r->check_fingerprint = streamed;
  r->fingerprint = fnv_init;
  r->kld_cap = h->n_records < kl_mem_values() ? (size_t)h->n_records : kl_mem_values();
  if (!rc && (!(r->rec = qlm_malloc(record_bytes(h->k), "KL record", err)) ||
              !(r->kld = qlm_malloc((r->kld_cap ? r->kld_cap : 1) * sizeof *r->kld, "KL values", err))))
    rc = QLM_ENOMEM;
  if (rc) {
    qlm_kl_reader_free(r);
    return rc;
  }
  *out = r;
  return QLM_OK;
}

int qlm_kl_reader_open(qlm_kl_reader **out, const char *path, const qlm_kl_header *expect, qlm_error *err) {
  return reader_open(out, path, expect, 0, err);
}

int qlm_kl_reader_open_stream(qlm_kl_reader **out, const char *path, const qlm_kl_header *expect, qlm_error *err) {
  return reader_open(out, path, expect, 1, err);
}

/* Keep one per-token KL value: in memory, or appended to the spill file once memory is full. */
static int keep_kld(qlm_kl_reader *r, double v, qlm_error *err) {
  if (r->kld_n == r->kld_cap) {
    if (!r->spill && !(r->spill = tmpfile()))
      return qlm_fail(err, QLM_EIO, "%s: cannot create a temporary file for the KL values: %s", r->path, strerror(errno));
    if (fwrite(r->kld, sizeof *r->kld, r->kld_n, r->spill) != r->kld_n)
      return qlm_fail(err, QLM_EIO, "%s: cannot write the KL values to a temporary file: %s", r->path, strerror(errno));
    r->kld_n = 0;
  }
  r->kld[r->kld_n++] = v;
  return QLM_OK;
}

/* log-probabilities may exceed 0 by rounding only */
static int bad_logp(float v) { return !(v <= 1e-3f) || isnan(v); }

int qlm_kl_reader_add(qlm_kl_reader *r, int32_t target, const float *logits, double lse, qlm_error *err) {
  if (r->next >= r->h.n_records)
    return qlm_fail(err, QLM_EUSAGE, "%s: this run scores more tokens than the file's %llu", r->path,
                    (unsigned long long)r->h.n_records);
  uint64_t idx = r->next;
  const unsigned char *p = r->rec;
  if (fread(r->rec, 1, record_bytes(r->h.k), r->f) != record_bytes(r->h.k))
    return qlm_fail(err, QLM_EIO, "%s: record %llu cannot be read (the file changed while it was read?)", r->path,
                    (unsigned long long)idx);
  int32_t t = (int32_t)get_u32(p);
  float nll_b = get_f32(p + 4), log_rest = get_f32(p + 8);
  if (t != target)
    return qlm_fail(err, QLM_EUSAGE, "%s: record %llu is for token %d, this run scores token %d", r->path,
                    (unsigned long long)idx, t, target);
  if (!isfinite(nll_b) || nll_b < -1e-3f || bad_logp(log_rest))
    return qlm_fail(err, QLM_EFORMAT, "%s: record %llu: nll %g or log remainder %g is invalid", r->path,
                    (unsigned long long)idx, nll_b, log_rest);
  uint32_t V = r->h.n_vocab, k = r->h.k;
  double kl = 0, q_kept = 0, p_kept = 0, prev = INFINITY;
  int32_t top_q = 0;
  for (uint32_t i = 1; i < V; i++)
    if (logits[i] > logits[top_q]) top_q = (int32_t)i;
  for (uint32_t i = 0; i < k; i++) {
    uint32_t id = get_u32(p + 12 + 8 * i);
    float lp = get_f32(p + 16 + 8 * i);
    if (id >= V || !isfinite(lp) || bad_logp(lp) || lp > prev)
      return qlm_fail(err, QLM_EFORMAT, "%s: record %llu entry %u: token %u / log-probability %g is invalid "
                      "(ids < %u, finite, non-increasing)", r->path, (unsigned long long)idx, i, id, lp, V);
    for (uint32_t j = 0; j < i; j++)
      if (get_u32(p + 12 + 8 * j) == id)
        return qlm_fail(err, QLM_EFORMAT, "%s: record %llu: token %u appears twice", r->path, (unsigned long long)idx, id);
    prev = lp;
    double pb = exp((double)lp), lq = (double)logits[id] - lse;
    kl += pb * ((double)lp - lq);
    p_kept += pb;
    q_kept += exp(lq);
    if (i == 0 && (int32_t)id == top_q) r->same_top++;
  }
  if (p_kept > 1.01)
    return qlm_fail(err, QLM_EFORMAT, "%s: record %llu: probabilities sum to %g > 1", r->path, (unsigned long long)idx, p_kept);
  if (isfinite(log_rest)) {
    double pr = exp((double)log_rest), qr = 1.0 - q_kept;
    if (qr < 1e-30) qr = 1e-30;
    kl += pr * ((double)log_rest - log(qr));
  }
  double nll_q = lse - (double)logits[target];
  double dp = exp(-nll_q) - exp(-(double)nll_b);
  int rc = keep_kld(r, kl, err);
  if (rc) return rc;
  r->fingerprint = fnv_i32(r->fingerprint, t);
  r->kld_sum += kl;
  r->kld2_sum += kl * kl;
  r->nll_base += nll_b;
  r->nll += nll_q;
  r->dp2 += dp * dp;
  r->next++;
  return QLM_OK;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Order-preserving map of doubles to unsigned integers (negative values reversed below the
 * positive ones), and back. */
static uint64_t key_of(double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  return u >> 63 ? ~u : u | (1ull << 63);
}
static double value_of(uint64_t k) {
  uint64_t u = k >> 63 ? k & ~(1ull << 63) : ~k;
  double v;
  memcpy(&v, &u, 8);
  return v;
}

enum { N_RANKS = 5 };

/* Histogram of the 16 key bits below `shift` of the values whose higher bits equal each rank's
 * prefix (all values in the first pass). */
static void count_keys(const double *v, size_t n, int shift, const uint64_t *prefix, uint64_t *hist) {
  for (size_t i = 0; i < n; i++) {
    uint64_t k = key_of(v[i]);
    for (int j = 0; j < N_RANKS; j++)
      if (shift == 48 || (k >> (shift + 16)) == prefix[j]) hist[((size_t)j << 16) | ((k >> shift) & 0xffff)]++;
  }
}

/* The values of ranks rank[0..N_RANKS) (0-based, ascending) among the spilled values and those
 * still in memory, exactly: four passes narrow each rank's key by 16 bits. */
static int select_ranks(qlm_kl_reader *r, const uint64_t *rank, double *out, qlm_error *err) {
  uint64_t *hist = qlm_malloc(((size_t)N_RANKS << 16) * sizeof *hist, "KL histograms", err);
  if (!hist) return QLM_ENOMEM;
  uint64_t prefix[N_RANKS] = {0}, left[N_RANKS];
  memcpy(left, rank, sizeof left);
  double buf[4096];
  int rc = QLM_OK;
  for (int shift = 48; !rc && shift >= 0; shift -= 16) {
    memset(hist, 0, ((size_t)N_RANKS << 16) * sizeof *hist);
    rewind(r->spill);
    size_t n;
    while ((n = fread(buf, sizeof *buf, sizeof buf / sizeof *buf, r->spill)) > 0) count_keys(buf, n, shift, prefix, hist);
    count_keys(r->kld, r->kld_n, shift, prefix, hist);
    if (ferror(r->spill)) rc = qlm_fail(err, QLM_EIO, "%s: cannot read back the KL values' temporary file", r->path);
    for (int j = 0; !rc && j < N_RANKS; j++) { /* the bucket holding rank left[j] */
      const uint64_t *h = hist + ((size_t)j << 16);
      uint32_t b = 0;
      while (b < 0xffff && left[j] >= h[b]) left[j] -= h[b++];
      prefix[j] = prefix[j] << 16 | b;
    }
  }
  for (int j = 0; j < N_RANKS; j++) out[j] = value_of(prefix[j]);
  free(hist);
  return rc;
}

/* Median, p99 and max of the per-token values: sorted in memory, or selected from the spill. */
static int order_stats(qlm_kl_reader *r, uint64_t n, qlm_kl_stats *st, qlm_error *err) {
  double pos = 0.99 * ((double)n - 1);
  size_t lo = (size_t)pos;
  uint64_t rank[N_RANKS] = {n / 2 - (n % 2 == 0), n / 2, lo, lo + 1 < n ? lo + 1 : lo, n - 1};
  double v[N_RANKS];
  if (!r->spill) {
    qsort(r->kld, (size_t)n, sizeof *r->kld, cmp_double);
    for (int j = 0; j < N_RANKS; j++) v[j] = r->kld[rank[j]];
  } else {
    int rc = select_ranks(r, rank, v, err);
    if (rc) return rc;
  }
  st->kld_median = n % 2 ? v[1] : 0.5 * (v[0] + v[1]);
  /* p99 by linear interpolation between order statistics (numpy's default) */
  st->kld_p99 = lo + 1 < n ? v[2] + (pos - (double)lo) * (v[3] - v[2]) : v[2];
  st->kld_max = v[4];
  return QLM_OK;
}

int qlm_kl_reader_finish(qlm_kl_reader *r, qlm_kl_stats *st, qlm_error *err) {
  memset(st, 0, sizeof *st);
  if (r->next != r->h.n_records)
    return qlm_fail(err, QLM_EUSAGE, "%s: %llu of its %llu records were compared (a shorter run?)", r->path,
                    (unsigned long long)r->next, (unsigned long long)r->h.n_records);
  if (r->check_fingerprint && r->fingerprint != r->h.fingerprint)
    return qlm_fail(err, QLM_EFORMAT, "%s: the records' target tokens do not match the header's fingerprint "
                    "(a damaged or edited file)", r->path);
  uint64_t n = r->next;
  st->n = (int64_t)n;
  if (!n) return QLM_OK;
  double dn = (double)n, mean = r->kld_sum / dn, var = r->kld2_sum / dn - mean * mean;
  st->kld_mean = mean;
  st->kld_err = n > 1 && var > 0 ? sqrt(var / (dn - 1)) : 0;
  int rc = order_stats(r, n, st, err);
  if (rc) return rc;
  st->top1_agree = (double)r->same_top / dn;
  st->ppl_base = exp(r->nll_base / dn);
  st->ppl = exp(r->nll / dn);
  st->dppl = st->ppl - st->ppl_base;
  st->rms_dp = sqrt(r->dp2 / dn);
  return QLM_OK;
}

void qlm_kl_reader_free(qlm_kl_reader *r) {
  if (!r) return;
  if (r->f) fclose(r->f);
  if (r->spill) fclose(r->spill);
  free(r->rec);
  free(r->kld);
  free(r->path);
  free(r);
}
