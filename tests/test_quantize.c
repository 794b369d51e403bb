/* test_quantize.c — `qlm quantize` and the GGUF writer.
 * References: the llama.cpp-exact reference quantizers applied to the source rows (independent of
 * the writer), the GGUF reader, and the greedy tokens of the unquantized stories260K. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include "core/atomic_file.h"
#include "core/fp16.h"
#include "core/mapfile.h"
#include "formats/gguf_write.h"
#include "kernels/quants.h"
#include "model/model.h"
#include "quant/quantize.h"

#define STORIES "models/stories260K/stories260K.gguf"

static qlm_source *open_src(const char *path) {
  qlm_source *s = NULL;
  qlm_error err = {0};
  if (qlm_source_open(path, NULL, &s, &err)) fail_msg("%s", err.msg);
  return s;
}

static qlm_source *open_shared(const char *rel) {
  char *p = tu_shared(rel);
  qlm_source *s = open_src(p);
  free(p);
  return s;
}

typedef struct fallbacks {
  int n;
  char names[64][64];
} fallbacks;

static void collect(void *ctx, const qlm_quant_tensor *t) {
  fallbacks *f = ctx;
  if (t->fallback && f->n < 64) snprintf(f->names[f->n++], 64, "%s", t->name);
}

/* Quantize src to dir/name with `type`; returns the malloc'd output path. */
static char *quantize_to(const qlm_source *src, const char *dir, const char *name, int type, fallbacks *fb,
                         qlm_quant_summary *sum) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *out = malloc(n);
  snprintf(out, n, "%s/%s", dir, name);
  qlm_quant_params p = {.type = type, .embd_type = QLM_TYPE_F32, .n_threads = 2, .on_tensor = fb ? collect : NULL,
                        .ctx = fb};
  qlm_quant_summary s;
  qlm_error err = {0};
  if (qlm_quantize(src, out, &p, sum ? sum : &s, &err)) fail_msg("%s", err.msg);
  return out;
}

static void rm_rf(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[1024];
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      remove(p);
    }
  closedir(d);
  rmdir(dir);
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static bool is_linear(const char *name) {
  return strstr(name, "attn_q.") || strstr(name, "attn_k.") || strstr(name, "attn_v.") ||
         strstr(name, "attn_output.") || strstr(name, "ffn_gate.") || strstr(name, "ffn_up.") ||
         strstr(name, "ffn_down.");
}

/* stories260K -> Q8_0: types, bytes against the reference quantizer, metadata, greedy tokens. */
static void test_stories_q8_0(void **state) {
  (void)state;
  qlm_source *src = open_shared(STORIES);
  char *dir = tu_tmpdir();
  fallbacks fb = {0};
  qlm_quant_summary sum;
  char *out = quantize_to(src, dir, "q8.gguf", QLM_TYPE_Q8_0, &fb, &sum);
  /* the five 172-column ffn_down matrices fall back to f16, and are reported */
  assert_int_equal(fb.n, 5);
  for (int i = 0; i < fb.n; i++) assert_non_null(strstr(fb.names[i], "ffn_down.weight"));
  assert_int_equal(sum.n_fallback, 5);
  assert_int_equal(sum.n_quantized, 30);
  assert_int_equal(sum.n_kept, 13);
  qlm_source *q = open_src(out);
  assert_int_equal(q->n_tensors, src->n_tensors);
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *s = &src->tensors[i], *t = qlm_source_tensor(q, s->name);
    assert_non_null(t);
    assert_int_equal(s->type, QLM_TYPE_F32);
    assert_memory_equal(s->ne, t->ne, sizeof s->ne);
    int64_t cols = s->ne[0], rows = s->ne[1] * s->ne[2] * s->ne[3];
    const float *x = s->data;
    if (is_linear(s->name) && cols % 32 == 0) {
      assert_int_equal(t->type, QLM_TYPE_Q8_0);
      size_t rb = (size_t)(cols / 32) * 34;
      unsigned char *ref = malloc(rb);
      for (int64_t r = 0; r < rows; r++) {
        qlm_quantize_row_q8_0_ref(x + r * cols, ref, cols);
        assert_memory_equal(ref, (const unsigned char *)t->data + r * rb, rb);
      }
      free(ref);
    } else if (is_linear(s->name)) {
      assert_int_equal(t->type, QLM_TYPE_F16);
      const unsigned char *h = t->data;
      for (int64_t j = 0; j < cols * rows; j++)
        assert_int_equal(h[2 * j] | h[2 * j + 1] << 8, qlm_f32_to_f16(x[j]));
    } else { /* norms and the embeddings stay f32, bit for bit */
      assert_int_equal(t->type, QLM_TYPE_F32);
      assert_memory_equal(s->data, t->data, s->nbytes);
    }
  }
  /* metadata: the input's copied, file type and provenance set */
  const qlm_meta *m = qlm_source_meta(q, "general.file_type");
  assert_non_null(m);
  assert_int_equal(m->v.u, 7); /* LLAMA_FTYPE_MOSTLY_Q8_0 */
  assert_string_equal(qlm_source_meta(q, "qlm.quantize.type")->v.s, "q8_0");
  assert_string_equal(qlm_source_meta(q, "qlm.source")->v.s, src->path);
  assert_non_null(qlm_source_meta(q, "qlm.quantize.seconds"));
  assert_int_equal(q->vocab.n_tokens, 512);
  for (int i = 0; i < 512; i++) assert_string_equal(q->vocab.tokens[i], src->vocab.tokens[i]);
  assert_memory_equal(&q->hp, &src->hp, sizeof q->hp);
  /* 8 bits: the greedy 64 tokens are the f32 model's */
  int32_t a[64], b[64];
  tu_greedy(src, 64, NULL, a, NULL);
  tu_greedy(q, 64, NULL, b, NULL);
  assert_memory_equal(a, b, sizeof a);
  /* quantizing the Q8_0 file again reproduces every tensor byte for byte (Q8_0 is idempotent on
   * its own grid), and every metadata value but the provenance of the run */
  char *out2 = quantize_to(q, dir, "q8b.gguf", QLM_TYPE_Q8_0, NULL, NULL);
  qlm_source *q2 = open_src(out2);
  assert_int_equal(q2->n_tensors, q->n_tensors);
  for (int i = 0; i < q->n_tensors; i++) {
    const qlm_tensor *t2 = qlm_source_tensor(q2, q->tensors[i].name);
    assert_int_equal(t2->type, q->tensors[i].type);
    assert_int_equal(t2->nbytes, q->tensors[i].nbytes);
    assert_memory_equal(t2->data, q->tensors[i].data, t2->nbytes);
  }
  assert_int_equal(q2->n_meta, q->n_meta);
  /* same model read twice: same logits */
  int32_t c[64];
  tu_greedy(q2, 64, NULL, c, NULL);
  assert_memory_equal(a, c, sizeof a);
  qlm_source_close(q2);
  qlm_source_close(q);
  qlm_source_close(src);
  free(out);
  free(out2);
  rm_rf(dir);
  free(dir);
}

/* Every --type writes a file that loads and generates; 4-bit text starts like the f32 text. */
static void test_every_type_generates(void **state) {
  (void)state;
  static const char *const names[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K", "f16", "f32"};
  qlm_source *src = open_shared(STORIES);
  char *dir = tu_tmpdir();
  int32_t ref[64];
  tu_greedy(src, 64, NULL, ref, NULL);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    int type = qlm_quantize_parse_type(names[i]);
    assert_true(type >= 0);
    qlm_quant_summary sum;
    char *out = quantize_to(src, dir, "t.gguf", type, NULL, &sum);
    qlm_source *q = open_src(out);
    int32_t toks[64];
    tu_greedy(q, 64, NULL, toks, NULL);
    int same = tu_common_prefix(ref, toks, 64);
    print_message("%-5s %7llu bytes (%.3f bits/weight), greedy tokens equal to f32 for %d of 64\n", names[i],
                  (unsigned long long)sum.file_bytes, 8.0 * (double)sum.bytes_out / (double)sum.n_params, same);
    if (type == QLM_TYPE_F32 || type == QLM_TYPE_F16 || type == QLM_TYPE_Q8_0) assert_int_equal(same, 64);
    /* 4 bits on a 260K-parameter model: the first sentence survives ("Once upon a time, there
     * was a little girl named Lily. She loved to play" is 15 tokens) */
    if (type == QLM_TYPE_Q4_0 || type == QLM_TYPE_Q4_K) assert_true(same >= 15);
    for (int k = 0; k < 64; k++) assert_true(toks[k] >= 0 && toks[k] < 512);
    qlm_source_close(q);
    free(out);
  }
  qlm_source_close(src);
  rm_rf(dir);
  free(dir);
}

/* llama2.c (interleaved, like GGUF) and HF (rotate-half: q/k rows permuted back) sources give the
 * same Q8_0 weights and the same greedy tokens as the GGUF source. */
static void test_other_sources(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  qlm_source *g = open_shared(STORIES);
  char *bin_path = tu_shared("models/stories260K/stories260K.bin");
  qlm_source *b = open_src(bin_path), *h = open_shared("models/stories260K-hf");
  char *og = quantize_to(g, dir, "g.gguf", QLM_TYPE_Q8_0, NULL, NULL);
  char *ob = quantize_to(b, dir, "b.gguf", QLM_TYPE_Q8_0, NULL, NULL);
  char *oh = quantize_to(h, dir, "h.gguf", QLM_TYPE_Q8_0, NULL, NULL);
  qlm_source *qg = open_src(og), *qb = open_src(ob), *qh = open_src(oh);
  assert_int_equal(qb->hp.rope_style, QLM_ROPE_INTERLEAVED);
  assert_int_equal(qh->hp.rope_style, QLM_ROPE_INTERLEAVED);
  assert_int_equal(qb->vocab.n_tokens, 512); /* llama2.c tokenizer written as tokenizer.ggml.* */
  assert_int_equal(qb->vocab.kind, QLM_TOK_SPM);
  const char *names[] = {"blk.0.attn_q.weight", "blk.3.attn_k.weight", "blk.4.ffn_up.weight"};
  for (int i = 0; i < 3; i++) {
    const qlm_tensor *a = qlm_source_tensor(qg, names[i]), *x = qlm_source_tensor(qb, names[i]),
                     *y = qlm_source_tensor(qh, names[i]);
    assert_int_equal(a->nbytes, x->nbytes);
    assert_int_equal(a->nbytes, y->nbytes);
    assert_memory_equal(a->data, x->data, a->nbytes);
    assert_memory_equal(a->data, y->data, a->nbytes);
  }
  int32_t tg[64], tb[64], th[64];
  tu_greedy(qg, 64, NULL, tg, NULL);
  tu_greedy(qb, 64, NULL, tb, NULL);
  tu_greedy(qh, 64, NULL, th, NULL);
  assert_memory_equal(tg, tb, sizeof tg);
  assert_memory_equal(tg, th, sizeof tg);
  qlm_source_close(qg);
  qlm_source_close(qb);
  qlm_source_close(qh);
  qlm_source_close(g);
  qlm_source_close(b);
  qlm_source_close(h);
  free(og);
  free(ob);
  free(oh);
  free(bin_path);
  rm_rf(dir);
  free(dir);
}

/* k-quants on shapes that fit (256 columns), the k-quant fallbacks, and an f16 input. */
static void test_kquants_synthetic(void **state) {
  (void)state;
  qlm_error err = {0};
  qlm_source *src = qlm_source_new("synthetic", "test", &err);
  assert_non_null(src);
  src->hp = (qlm_hparams){.arch = QLM_ARCH_LLAMA, .n_embd = 256, .n_head = 2, .n_head_kv = 2, .head_dim = 128,
                          .n_rot = 128, .rope_style = QLM_ROPE_INTERLEAVED, .norm_eps = 1e-5f, .rope_theta = 1e4f};
  uint64_t rs = 7;
  static float w256[256 * 4], w96[96 * 3], w100[100 * 2];
  static uint16_t h256[256 * 2];
  for (size_t i = 0; i < 256 * 4; i++) w256[i] = tu_rand_normal(&rs);
  for (size_t i = 0; i < 96 * 3; i++) w96[i] = tu_rand_normal(&rs);
  for (size_t i = 0; i < 100 * 2; i++) w100[i] = tu_rand_normal(&rs);
  for (size_t i = 0; i < 256 * 2; i++) h256[i] = qlm_f32_to_f16(tu_rand_normal(&rs));
  int64_t ne_a[4] = {256, 4, 1, 1}, ne_b[4] = {96, 3, 1, 1}, ne_c[4] = {100, 2, 1, 1}, ne_d[4] = {256, 2, 1, 1};
  assert_non_null(qlm_source_add_tensor(src, "blk.0.attn_q.weight", QLM_TYPE_F32, 2, ne_a, w256, sizeof w256, &err));
  assert_non_null(qlm_source_add_tensor(src, "blk.0.ffn_up.weight", QLM_TYPE_F32, 2, ne_b, w96, sizeof w96, &err));
  assert_non_null(qlm_source_add_tensor(src, "blk.0.ffn_down.weight", QLM_TYPE_F32, 2, ne_c, w100, sizeof w100, &err));
  assert_non_null(qlm_source_add_tensor(src, "blk.0.ffn_gate.weight", QLM_TYPE_F16, 2, ne_d, h256, sizeof h256, &err));
  char *dir = tu_tmpdir();
  const int ktypes[] = {QLM_TYPE_Q4_K, QLM_TYPE_Q5_K, QLM_TYPE_Q6_K};
  const int fallback[] = {QLM_TYPE_Q5_0, QLM_TYPE_Q5_1, QLM_TYPE_Q8_0};
  for (int k = 0; k < 3; k++) {
    fallbacks fb = {0};
    char *out = quantize_to(src, dir, "k.gguf", ktypes[k], &fb, NULL);
    assert_int_equal(fb.n, 2);
    qlm_source *q = open_src(out);
    const qlm_tensor *a = qlm_source_tensor(q, "blk.0.attn_q.weight"), *b = qlm_source_tensor(q, "blk.0.ffn_up.weight"),
                     *c = qlm_source_tensor(q, "blk.0.ffn_down.weight"), *d = qlm_source_tensor(q, "blk.0.ffn_gate.weight");
    assert_int_equal(a->type, ktypes[k]);
    assert_int_equal(b->type, fallback[k]);
    assert_int_equal(c->type, QLM_TYPE_F16);
    assert_int_equal(d->type, ktypes[k]);
    const qlm_type_traits *tk = qlm_type_traits_of(ktypes[k]), *tf = qlm_type_traits_of(fallback[k]);
    unsigned char ref[4096];
    for (int r = 0; r < 4; r++) {
      qlm_quantizer_of(ktypes[k])(w256 + 256 * r, ref, 256);
      assert_memory_equal(ref, (const unsigned char *)a->data + r * tk->type_size, tk->type_size);
    }
    for (int r = 0; r < 3; r++) {
      qlm_quantizer_of(fallback[k])(w96 + 96 * r, ref, 96);
      assert_memory_equal(ref, (const unsigned char *)b->data + r * 3 * tf->type_size, 3 * tf->type_size);
    }
    float f[256];
    for (int r = 0; r < 2; r++) { /* the f16 input is dequantized first */
      for (int j = 0; j < 256; j++) f[j] = qlm_f16_to_f32(h256[256 * r + j]);
      qlm_quantizer_of(ktypes[k])(f, ref, 256);
      assert_memory_equal(ref, (const unsigned char *)d->data + r * tk->type_size, tk->type_size);
    }
    qlm_source_close(q);
    free(out);
  }
  qlm_source_close(src);
  rm_rf(dir);
  free(dir);
}

/* The writer round-trips every metadata value type through the reader. */
static void test_writer_metadata(void **state) {
  (void)state;
  qlm_error err = {0};
  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/m.gguf", dir);
  qlm_gguf_writer *w = qlm_gguf_writer_new(&err);
  assert_non_null(w);
  char *strs[] = {"a", "", "héllo wörld"};
  uint8_t i16le[] = {0xfe, 0xff, 0x05, 0x00}; /* int16 -2, 5 */
  assert_int_equal(qlm_gguf_add_scalar(w, "u8", QLM_META_U8, 200, &err), 0);
  assert_int_equal(qlm_gguf_add_scalar(w, "i8", QLM_META_I8, (uint8_t)-5, &err), 0);
  assert_int_equal(qlm_gguf_add_scalar(w, "u16", QLM_META_U16, 65000, &err), 0);
  assert_int_equal(qlm_gguf_add_scalar(w, "i16", QLM_META_I16, (uint16_t)-300, &err), 0);
  assert_int_equal(qlm_gguf_add_u32(w, "u32", 4000000000u, &err), 0);
  assert_int_equal(qlm_gguf_add_i32(w, "i32", -70000, &err), 0);
  assert_int_equal(qlm_gguf_add_scalar(w, "u64", QLM_META_U64, 1ull << 40, &err), 0);
  assert_int_equal(qlm_gguf_add_scalar(w, "i64", QLM_META_I64, (uint64_t)-(1ll << 40), &err), 0);
  assert_int_equal(qlm_gguf_add_f32(w, "f32", 0.1f, &err), 0);
  assert_int_equal(qlm_gguf_add_f64(w, "f64", 0.1, &err), 0);
  assert_int_equal(qlm_gguf_add_bool(w, "b", true, &err), 0);
  assert_int_equal(qlm_gguf_add_str(w, "s", "text", &err), 0);
  assert_int_equal(qlm_gguf_add_str_arr(w, "sa", strs, 3, &err), 0);
  assert_int_equal(qlm_gguf_add_arr(w, "ia", QLM_META_I16, i16le, 2, &err), 0);
  assert_int_equal(qlm_gguf_add_u32(w, "u32", 1, &err), QLM_EINTERNAL); /* duplicate key */
  float data[3 * 32];
  for (int i = 0; i < 96; i++) data[i] = (float)i;
  int64_t ne[2] = {32, 3}, ne1[1] = {5};
  assert_int_equal(qlm_gguf_add_tensor(w, "x", QLM_TYPE_F32, 2, ne, data, sizeof data, &err), 0);
  assert_int_equal(qlm_gguf_add_tensor(w, "y", QLM_TYPE_F32, 1, ne1, data, 20, &err), 0);
  assert_int_equal(qlm_gguf_add_tensor(w, "z", QLM_TYPE_F32, 1, ne1, data, 24, &err), QLM_EINTERNAL);
  uint64_t size;
  assert_int_equal(qlm_gguf_write(w, path, &size, &err), 0);
  qlm_gguf_writer_free(w);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((uint64_t)st.st_size, size);
  assert_int_equal(size % QLM_GGUF_ALIGNMENT, 0);
  qlm_source *s = open_src(path);
  assert_int_equal(qlm_source_meta(s, "general.alignment")->v.u, QLM_GGUF_ALIGNMENT);
  assert_int_equal(qlm_source_meta(s, "u8")->v.u, 200);
  assert_int_equal(qlm_source_meta(s, "i8")->v.i, -5);
  assert_int_equal(qlm_source_meta(s, "u16")->v.u, 65000);
  assert_int_equal(qlm_source_meta(s, "i16")->v.i, -300);
  assert_int_equal(qlm_source_meta(s, "u32")->v.u, 4000000000u);
  assert_int_equal(qlm_source_meta(s, "i32")->v.i, -70000);
  assert_int_equal(qlm_source_meta(s, "u64")->v.u, 1ull << 40);
  assert_true(qlm_source_meta(s, "i64")->v.i == -(1ll << 40));
  assert_true(qlm_source_meta(s, "f32")->v.f == (double)0.1f);
  assert_true(qlm_source_meta(s, "f64")->v.f == 0.1);
  assert_int_equal(qlm_source_meta(s, "b")->type, QLM_META_BOOL);
  assert_string_equal(qlm_source_meta(s, "s")->v.s, "text");
  const qlm_meta *sa = qlm_source_meta(s, "sa"), *ia = qlm_source_meta(s, "ia");
  assert_int_equal(sa->arr_len, 3);
  for (int i = 0; i < 3; i++) assert_string_equal(((char **)sa->arr)[i], strs[i]);
  assert_int_equal(ia->arr_type, QLM_META_I16);
  assert_memory_equal(ia->arr, i16le, 4);
  assert_memory_equal(qlm_source_tensor(s, "x")->data, data, sizeof data);
  assert_memory_equal(qlm_source_tensor(s, "y")->data, data, 20);
  /* the copy of every entry through add_meta writes the same metadata section */
  qlm_gguf_writer *w2 = qlm_gguf_writer_new(&err);
  for (int i = 0; i < s->n_meta; i++)
    if (strcmp(s->meta[i].key, "general.alignment")) assert_int_equal(qlm_gguf_add_meta(w2, &s->meta[i], &err), 0);
  for (int i = 0; i < s->n_tensors; i++) {
    const qlm_tensor *t = &s->tensors[i];
    assert_int_equal(qlm_gguf_add_tensor(w2, t->name, t->type, t->n_dims, t->ne, t->data, t->nbytes, &err), 0);
  }
  char path2[600];
  snprintf(path2, sizeof path2, "%s/m2.gguf", dir);
  assert_int_equal(qlm_gguf_write(w2, path2, NULL, &err), 0);
  qlm_gguf_writer_free(w2);
  qlm_mapfile m1, m2;
  assert_int_equal(qlm_map_file(path, &m1, &err), 0);
  assert_int_equal(qlm_map_file(path2, &m2, &err), 0);
  assert_int_equal(m1.size, m2.size);
  assert_memory_equal(m1.data, m2.data, m1.size);
  qlm_unmap_file(&m1);
  qlm_unmap_file(&m2);
  qlm_source_close(s);
  rm_rf(dir);
  free(dir);
}

/* A failure midway leaves an existing destination intact and no temporary file behind. */
static void test_atomic_failure_keeps_destination(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), path[512];
  snprintf(path, sizeof path, "%s/out.gguf", dir);
  tu_write_file(path, "previous contents", 17);
  qlm_source *src = open_shared(STORIES);
  qlm_quant_params p = {.type = QLM_TYPE_Q8_0, .n_threads = 1};
  qlm_quant_summary sum;
  qlm_error err = {0};
  qlm_atomic_test_fail_after = 100000; /* "disk full" after 100 kB */
  int rc = qlm_quantize(src, path, &p, &sum, &err);
  qlm_atomic_test_fail_after = 0;
  assert_int_equal(rc, QLM_EIO);
  assert_non_null(strstr(err.msg, path));
  assert_non_null(strstr(err.msg, "No space left"));
  char *text;
  assert_int_equal(qlm_read_file(path, 1024, &text, NULL, &err), 0);
  assert_string_equal(text, "previous contents");
  free(text);
  assert_int_equal(count_entries(dir), 1);
  /* and a successful write replaces it */
  assert_int_equal(qlm_quantize(src, path, &p, &sum, &err), 0);
  assert_int_equal(count_entries(dir), 1);
  qlm_source *q = open_src(path);
  qlm_source_close(q);
  qlm_source_close(src);
  rm_rf(dir);
  free(dir);
}

/* ---- the CLI */

typedef tu_run run_result;

/* Run `prefix 'qlm' ARGS` through the shell; prefix may set limits (ulimit). */
static run_result run_cli(const char *prefix, const char *args) { return tu_run_qlm(prefix, args); }

static void run_free(run_result *r) { tu_run_free(r); }

static void test_cli(void **state) {
  (void)state;
  char *model = tu_shared(STORIES), *dir = tu_tmpdir(), args[2048], out[512];
  run_result r = run_cli("", "quantize --help");
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "--keep-embeddings"));
  run_free(&r);
  snprintf(out, sizeof out, "%s/q.gguf", dir);
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --type q3_X", model, out);
  r = run_cli("", args);
  assert_int_equal(r.status, 2);
  assert_non_null(strstr(r.err, "q3_X"));
  run_free(&r);
  /* a successful run: per-tensor lines with the fallback, the summary */
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --type q4_0 -t 2", model, out);
  r = run_cli("", args);
  if (r.status) fail_msg("%s", r.err);
  assert_non_null(strstr(r.out, "[  1/ 48]"));
  assert_non_null(strstr(r.out, "blk.0.ffn_down.weight"));
  assert_non_null(strstr(r.out, "FALLBACK"));
  assert_non_null(strstr(r.out, "30 quantized, 13 kept f32, 5 fallen back"));
  assert_non_null(strstr(r.out, "bits/weight"));
  run_free(&r);
  /* --keep-embeddings same quantizes token_embd/output too */
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --type q8_0 --keep-embeddings same", model, out);
  r = run_cli("", args);
  assert_int_equal(r.status, 0);
  run_free(&r);
  qlm_source *q = open_src(out);
  assert_int_equal(qlm_source_tensor(q, "token_embd.weight")->type, QLM_TYPE_Q8_0);
  qlm_source_close(q);
  /* missing directory: exit 3, the path named, nothing created */
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s/nodir/q.gguf' --type q8_0", model, dir);
  r = run_cli("", args);
  assert_int_equal(r.status, 3);
  assert_non_null(strstr(r.err, "nodir/q.gguf"));
  run_free(&r);
  struct stat st;
  char nodir[600];
  snprintf(nodir, sizeof nodir, "%s/nodir", dir);
  assert_int_not_equal(stat(nodir, &st), 0);
  /* file-size limit (ulimit -f 100 = 51200 bytes): EFBIG reported, old file intact, no temp file */
  tu_write_file(out, "old", 3);
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --type q8_0", model, out);
  r = run_cli("ulimit -f 100;", args);
  assert_int_equal(r.status, 3);
  assert_non_null(strstr(r.err, out));
  assert_non_null(strstr(r.err, "too large"));
  run_free(&r);
  char *text;
  qlm_error e = {0};
  assert_int_equal(qlm_read_file(out, 1024, &text, NULL, &e), 0);
  assert_string_equal(text, "old");
  free(text);
  assert_int_equal(count_entries(dir), 1);
  /* no permission to write in the directory (root ignores permissions: skipped then) */
  if (geteuid() != 0) {
    char ro[600];
    snprintf(ro, sizeof ro, "%s/ro", dir);
    assert_int_equal(mkdir(ro, 0555), 0);
    snprintf(args, sizeof args, "quantize -m '%s' -o '%s/q.gguf' --type q8_0", model, ro);
    r = run_cli("", args);
    assert_int_equal(r.status, 3);
    assert_non_null(strstr(r.err, "ro/q.gguf"));
    assert_non_null(strstr(r.err, "Permission denied"));
    run_free(&r);
    assert_int_equal(count_entries(ro), 0);
    rmdir(ro);
  }
  rm_rf(dir);
  free(dir);
  free(model);
}

/* Methods, rules and the qlm model file through the command line, as a user runs them. */
static void test_cli_methods(void **state) {
  (void)state;
  char *model = tu_shared(STORIES), *dir = tu_tmpdir(), args[2048], out[512], rules[512];
  snprintf(out, sizeof out, "%s/a4.gguf", dir);
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --method absmax --bits 4 --group 64", model, out);
  run_result r = run_cli("", args);
  if (r.status) fail_msg("%s", r.err);
  assert_non_null(strstr(r.out, "absmax bits=4 group=64"));
  assert_non_null(strstr(r.out, "ETA"));
  assert_non_null(strstr(r.out, "4.250 bpw")); /* half scale + 32 bytes per 64 weights */
  assert_non_null(strstr(r.out, "group 64 does not divide the 172 columns: used 43"));
  run_free(&r);
  snprintf(args, sizeof args, "info '%s'", out);
  r = run_cli("", args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "default method 'absmax'"));
  assert_non_null(strstr(r.out, "absmax4_g64"));
  assert_non_null(strstr(r.out, "absmax bits=4 group=64"));
  run_free(&r);
  snprintf(args, sizeof args, "run -m '%s' --temp 0 -n 8 -q", out);
  r = run_cli("", args);
  assert_int_equal(r.status, 0);
  run_free(&r);
  /* LLM.int8(): run reports the outlier columns it saw */
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --method llm-int8 --threshold 3", model, out);
  r = run_cli("", args);
  if (r.status) fail_msg("%s", r.err);
  assert_non_null(strstr(r.out, "llm-int8 threshold=3"));
  run_free(&r);
  snprintf(args, sizeof args, "run -m '%s' --temp 0 -n 8", out);
  r = run_cli("", args);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.err, "LLM.int8():"));
  run_free(&r);
  /* usage errors: exit 2 and a message that says what is wrong */
  const char *bad[][2] = {
      {"--method nope", "unknown method 'nope'"},
      {"--bits 4", "need --method"},
      {"--method absmax --bits 9", "bits=9"},
      {"--method absmax --type q8_0", "not both"},
      {"--method absmax --opt colour=red", "unknown option 'colour'"},
      {"", "say what to do"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(args, sizeof args, "quantize -m '%s' -o '%s' %s", model, out, bad[i][0]);
    r = run_cli("", args);
    assert_int_equal(r.status, 2);
    if (!strstr(r.err, bad[i][1])) fail_msg("'%s': %s", bad[i][0], r.err);
    run_free(&r);
  }
  snprintf(args, sizeof args, "export-gguf -m '%s' -o '%s' --method absmax", model, out);
  r = run_cli("", args);
  assert_int_equal(r.status, 2);
  run_free(&r);
  /* a rules file: errors name the file and line */
  snprintf(rules, sizeof rules, "%s/rules.txt", dir);
  const char *text = "layers=0-1 absmax bits=8\ncomponent=feet nf4\n";
  tu_write_file(rules, text, strlen(text));
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --rules '%s'", model, out, rules);
  r = run_cli("", args);
  assert_int_equal(r.status, 2);
  char want[600];
  snprintf(want, sizeof want, "%s:2", rules);
  if (!strstr(r.err, want)) fail_msg("%s", r.err);
  run_free(&r);
  rm_rf(dir);
  free(dir);
  free(model);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cli_methods),
      cmocka_unit_test(test_stories_q8_0),
      cmocka_unit_test(test_every_type_generates),
      cmocka_unit_test(test_other_sources),
      cmocka_unit_test(test_kquants_synthetic),
      cmocka_unit_test(test_writer_metadata),
      cmocka_unit_test(test_atomic_failure_keeps_destination),
      cmocka_unit_test(test_cli),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
