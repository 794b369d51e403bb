#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/wait.h>

#include "core/mapfile.h"
#include "formats/gguf_write.h"
#include "kernels/types.h"
#include "model/model.h"
#include "quant/quantize.h"
#include "tokenizer/tokenizer.h"

static char *join(const char *env, const char *dflt, const char *rel) {
  const char *base = getenv(env);
  if (!base || !*base) base = dflt;
  size_t n = strlen(base) + strlen(rel) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", base, rel);
  return p;
}

char *tu_shared(const char *rel) { return join("QLM_SHARED", "../shared", rel); }
char *tu_testdata(const char *rel) { return join("QLM_TESTDATA", "tests/data", rel); }

char *tu_tmpdir(void) {
  char tmpl[] = "/tmp/qlm-test-XXXXXX";
  char *d = mkdtemp(tmpl);
  assert_non_null(d);
  return strdup(d);
}

void tu_write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

uint64_t tu_rand_u64(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

float tu_rand_uniform(uint64_t *s) { return (float)(tu_rand_u64(s) >> 40) / (float)(1ull << 24); }

float tu_rand_normal(uint64_t *s) {
  float u1 = tu_rand_uniform(s), u2 = tu_rand_uniform(s);
  if (u1 < 1e-7f) u1 = 1e-7f;
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

void tu_check_stories260k_hparams(const qlm_hparams *hp, int n_ctx, int rope_style, int tied) {
  assert_int_equal(hp->arch, QLM_ARCH_LLAMA);
  assert_int_equal(hp->n_embd, 64);
  assert_int_equal(hp->n_ff, 172);
  assert_int_equal(hp->n_layer, 5);
  assert_int_equal(hp->n_head, 8);
  assert_int_equal(hp->n_head_kv, 4);
  assert_int_equal(hp->n_vocab, 512);
  assert_int_equal(hp->n_ctx, n_ctx);
  assert_int_equal(hp->head_dim, 8);
  assert_int_equal(hp->n_rot, 8);
  assert_int_equal(hp->rope_style, rope_style);
  assert_int_equal(hp->tied_embeddings, tied);
  assert_true(fabsf(hp->norm_eps - 1e-5f) < 1e-9f);
  assert_true(hp->rope_theta == 10000.0f);
}

char *tu_smollm2_path(void) {
  const char *p = getenv("QLM_SMOLLM2_GGUF");
  if (p && *p) return strdup(p);
  const char *cache = getenv("QLM_CACHE"), *home = getenv("HOME");
  char buf[1024];
  if (cache && *cache) snprintf(buf, sizeof buf, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
  else snprintf(buf, sizeof buf, "%s/.cache/qlm/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
  return strdup(buf);
}

uint8_t *tu_read_vectors(const char *rel, const char *magic8, const char *generator, size_t *n) {
  char *path = tu_testdata(rel);
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s (run %s)", path, generator);
  enum { cap = 1 << 20 };
  uint8_t *data = malloc(cap);
  assert_non_null(data);
  *n = fread(data, 1, cap, f);
  fclose(f);
  if (*n <= 12 || *n >= cap) fail_msg("%s: unexpected size %zu", path, *n);
  if (memcmp(data, magic8, 8) != 0) fail_msg("%s: bad magic (regenerate with %s)", path, generator);
  free(path);
  return data;
}

void tu_greedy(const qlm_source *src, int n, const int32_t *forced, int32_t *out, float *all_logits) {
  qlm_model *m;
  qlm_state *st;
  qlm_error err = {0};
  if (qlm_model_load(src, &m, &err)) fail_msg("%s", err.msg);
  if (qlm_state_new(m, 1, n + 1, 1, 1, &st, &err)) fail_msg("%s", err.msg);
  int V = m->hp.n_vocab;
  float *logits = malloc((size_t)V * sizeof *logits);
  int32_t tok = 1;
  for (int i = 0; i < n; i++) {
    if (qlm_forward_seq(m, st, 0, i, &tok, 1, logits, &err)) fail_msg("%s", err.msg);
    int best = 0;
    for (int v = 0; v < V; v++) {
      if (!isfinite(logits[v])) fail_msg("step %d: logit %d is %g", i, v, logits[v]);
      if (logits[v] > logits[best]) best = v;
    }
    if (all_logits) memcpy(all_logits + (size_t)i * (size_t)V, logits, (size_t)V * sizeof *logits);
    out[i] = tok = best;
    if (forced) tok = forced[i];
  }
  free(logits);
  qlm_state_free(st);
  qlm_model_free(m);
}

int tu_common_prefix(const int32_t *a, const int32_t *b, int n) {
  int i = 0;
  while (i < n && a[i] == b[i]) i++;
  return i;
}

void tu_write_bigram_gguf(const char *path) {
  qlm_error err = {0};
  char *sp = tu_shared("models/stories260K/stories260K.gguf");
  qlm_source *st = NULL;
  if (qlm_source_open(sp, NULL, &st, &err)) fail_msg("%s", err.msg);
  free(sp);
  qlm_gguf_writer *w = qlm_gguf_writer_new(&err);
  for (int i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta[i].key, "general.alignment")) assert_int_equal(qlm_gguf_add_meta(w, &st->meta[i], &err), 0);
  void *zeros = calloc(1, 1 << 20);
  for (int i = 0; i < st->n_tensors; i++) {
    const qlm_tensor *t = &st->tensors[i];
    int zero = strstr(t->name, "attn_output") || strstr(t->name, "ffn_down");
    assert_true(t->nbytes <= 1 << 20);
    assert_int_equal(qlm_gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, zero ? zeros : t->data, t->nbytes, &err), 0);
  }
  assert_int_equal(qlm_gguf_write(w, path, NULL, &err), 0);
  qlm_gguf_writer_free(w);
  free(zeros);
  qlm_source_close(st);
}

tu_bigram *tu_bigram_new(void) {
  qlm_error err = {0};
  tu_bigram *B = calloc(1, sizeof *B);
  B->dir = tu_tmpdir();
  snprintf(B->path, sizeof B->path, "%s/bigram.gguf", B->dir);
  tu_write_bigram_gguf(B->path);
  if (qlm_source_open(B->path, NULL, &B->src, &err)) fail_msg("%s", err.msg);
  assert_int_equal(qlm_model_load(B->src, &B->model, &err), 0);
  assert_int_equal(qlm_tokenizer_new(&B->src->vocab, &B->tok, &err), 0);
  const qlm_tensor *emb = qlm_source_tensor(B->src, "token_embd.weight"),
                   *on = qlm_source_tensor(B->src, "output_norm.weight"), *out = qlm_source_tensor(B->src, "output.weight");
  assert_non_null(emb);
  assert_non_null(on);
  assert_non_null(out);
  assert_int_equal(emb->type, QLM_TYPE_F32);
  int E = (int)emb->ne[0], V = (int)emb->ne[1];
  B->V = V;
  B->E = E;
  B->hid = malloc((size_t)V * E * sizeof *B->hid);
  B->lp = malloc((size_t)V * V * sizeof *B->lp);
  const float *e = emb->data, *g = on->data, *o = out->data;
  double *l = malloc((size_t)V * sizeof *l);
  for (int a = 0; a < V; a++) {
    double ss = 0, *xn = B->hid + (size_t)a * E;
    for (int j = 0; j < E; j++) ss += (double)e[(size_t)a * E + j] * e[(size_t)a * E + j];
    double sc = 1.0 / sqrt(ss / E + (double)B->src->hp.norm_eps);
    for (int j = 0; j < E; j++) xn[j] = e[(size_t)a * E + j] * sc * g[j];
    double mx = -INFINITY, sum = 0;
    for (int b = 0; b < V; b++) {
      double d = 0;
      for (int j = 0; j < E; j++) d += (double)o[(size_t)b * E + j] * xn[j];
      l[b] = d;
      mx = d > mx ? d : mx;
    }
    for (int b = 0; b < V; b++) sum += exp(l[b] - mx);
    for (int b = 0; b < V; b++) B->lp[(size_t)a * V + b] = l[b] - mx - log(sum);
  }
  free(l);
  return B;
}

void tu_bigram_free(tu_bigram *B) {
  if (!B) return;
  qlm_tokenizer_free(B->tok);
  qlm_model_free(B->model);
  qlm_source_close(B->src);
  remove(B->path);
  rmdir(B->dir);
  free(B->dir);
  free(B->hid);
  free(B->lp);
  free(B);
}

static int keep_f32(const float *W, int64_t rows, int64_t cols, const qlm_calib *calib, const qlm_quant_opts *o,
                    qlm_qtensor *out, qlm_error *err) {
  (void)calib, (void)o;
  int rc = qlm_qtensor_alloc(out, QLM_TYPE_F32, rows, cols, err);
  if (rc) return rc;
  memcpy(out->data, W, (size_t)(rows * cols) * sizeof *W);
  qlm_qtensor_set_bpw(out);
  snprintf(out->desc, sizeof out->desc, "smooth-only");
  return QLM_OK;
}

double tu_smooth_only_drift(const char *model, const char *dir, const qlm_quant_params *base, int *norm_changed) {
  char out[512];
  snprintf(out, sizeof out, "%s/s.gguf", dir);
  qlm_source *src, *q;
  qlm_error err = {0};
  if (qlm_source_open(model, NULL, &src, &err)) fail_msg("%s", err.msg);
  qlm_quant_method smooth_only = *base->method;
  smooth_only.quantize = keep_f32;
  smooth_only.check = NULL;
  qlm_quant_params p = *base;
  p.method = &smooth_only;
  int32_t ids[400];
  if (src->vocab.n_tokens == 0) { /* e.g. the tiny GPT-2: no tokenizer */
    uint64_t r = 9;
    for (int i = 0; i < 400; i++) ids[i] = (int32_t)(tu_rand_u64(&r) % (uint64_t)src->hp.n_vocab);
    p.calib_ids = ids, p.n_calib_ids = 400;
  }
  qlm_quant_summary sum;
  if (qlm_quantize(src, out, &p, &sum, &err)) fail_msg("%s", err.msg);
  if (qlm_source_open(out, NULL, &q, &err)) fail_msg("%s", err.msg);
  const qlm_tensor *n0 = qlm_source_tensor(src, "blk.0.attn_norm.weight"), *n1 = qlm_source_tensor(q, "blk.0.attn_norm.weight");
  *norm_changed = memcmp(n0->data, n1->data, n0->nbytes) != 0;
  enum { N = 24 };
  int V = src->hp.n_vocab;
  int32_t a[N], b[N];
  float *la = malloc((size_t)N * V * sizeof *la), *lb = malloc((size_t)N * V * sizeof *lb);
  tu_greedy(src, N, NULL, a, la);
  tu_greedy(q, N, a, b, lb);
  double maxd = 0, maxl = 0;
  for (size_t i = 0; i < (size_t)N * V; i++) maxd = fmax(maxd, fabs((double)la[i] - lb[i])), maxl = fmax(maxl, fabs(la[i]));
  free(la), free(lb);
  qlm_source_close(q);
  qlm_source_close(src);
  unlink(out);
  return maxd / maxl;
}

tu_run tu_run_qlm(const char *prefix, const char *args) {
  const char *bin = getenv("QLM_BIN");
  assert_non_null(bin);
  char *dir = tu_tmpdir();
  char cmd[8192], op[512], ep[512];
  snprintf(op, sizeof op, "%s/out", dir);
  snprintf(ep, sizeof ep, "%s/err", dir);
  int n = prefix ? snprintf(cmd, sizeof cmd, "bash -c \"%s exec '%s' %s\" >'%s' 2>'%s' </dev/null", prefix, bin, args, op, ep)
                 : snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", bin, args, op, ep);
  assert_true(n > 0 && (size_t)n < sizeof cmd);
  int st = system(cmd);
  tu_run r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
  qlm_error e = {0};
  assert_int_equal(qlm_read_file(op, 64 << 20, &r.out, NULL, &e), 0);
  assert_int_equal(qlm_read_file(ep, 64 << 20, &r.err, NULL, &e), 0);
  remove(op);
  remove(ep);
  rmdir(dir);
  free(dir);
  return r;
}

void tu_run_free(tu_run *r) {
  free(r->out);
  free(r->err);
  r->out = r->err = NULL;
}

const void *tu_take(tu_rd *r, size_t n) {
  assert_true((size_t)(r->end - r->p) >= n);
  const void *q = r->p;
  r->p += n;
  return q;
}

uint32_t tu_take_u32(tu_rd *r) {
  uint32_t v;
  memcpy(&v, tu_take(r, 4), 4);
  return v;
}

char *tu_write_stories_bigctx(const char *dir) {
  char *model = tu_shared("models/stories260K/stories260K.gguf"), *big = malloc(strlen(dir) + 16);
  qlm_mapfile m;
  qlm_error e = {0};
  assert_int_equal(qlm_map_file(model, &m, &e), 0);
  uint8_t *copy = malloc(m.size);
  memcpy(copy, m.data, m.size);
  const char *key = "llama.context_length";
  uint8_t *p = memmem(copy, m.size, key, strlen(key));
  assert_non_null(p);
  uint32_t type, ctx;
  memcpy(&type, p + strlen(key), 4);
  memcpy(&ctx, p + strlen(key) + 4, 4);
  assert_int_equal(type, 4); /* GGUF uint32 */
  assert_int_equal(ctx, 2048);
  ctx = 1u << 24;
  memcpy(p + strlen(key) + 4, &ctx, 4);
  sprintf(big, "%s/bigctx.gguf", dir);
  tu_write_file(big, copy, m.size);
  free(copy);
  qlm_unmap_file(&m);
  free(model);
  return big;
}

void tu_put(tu_bytes *b, const void *d, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
  }
  memcpy(b->p + b->n, d, n);
  b->n += n;
}
void tu_put_u8(tu_bytes *b, uint8_t v) { tu_put(b, &v, 1); }
void tu_put_u32(tu_bytes *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  tu_put(b, x, 4);
}
void tu_put_u64(tu_bytes *b, uint64_t v) {
  tu_put_u32(b, (uint32_t)v);
  tu_put_u32(b, (uint32_t)(v >> 32));
}
void tu_put_strn(tu_bytes *b, const char *s, size_t n) {
  tu_put_u64(b, n);
  tu_put(b, s, n);
}
void tu_put_str(tu_bytes *b, const char *s) { tu_put_strn(b, s, strlen(s)); }
void tu_pad_to(tu_bytes *b, size_t align) {
  while (b->n % align) tu_put_u8(b, 0);
}
void tu_mark(tu_bytes *b) {
  if (b->n_mark < 128) b->mark[b->n_mark++] = b->n;
}

double tu_logit_drift(const qlm_source *q, const int32_t *ref, const float *lref, int n) {
  int V = q->hp.n_vocab;
  int32_t got[64];
  float *l = malloc((size_t)n * V * sizeof *l);
  tu_greedy(q, n, ref, got, l);
  double d = 0;
  for (size_t i = 0; i < (size_t)n * V; i++) d += fabs((double)l[i] - lref[i]);
  free(l);
  return d / ((double)n * V);
}
