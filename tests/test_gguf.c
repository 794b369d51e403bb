/* test_gguf.c — the GGUF reader on real files (stories260K, llama.cpp vocab files) and on small
 * files written here byte by byte from the GGUF spec, valid and malformed. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fp16.h"
#include "formats/source.h"

/* ---- a minimal GGUF writer ---- */

typedef tu_bytes buf;

static void put_f32(buf *b, float f) { tu_put_u32(b, qlm_f32_to_bits(f)); }

/* value-type ids from the GGUF spec */
enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 };

static void kv_u32(buf *b, const char *k, uint32_t v) { tu_put_str(b, k), tu_put_u32(b, T_U32), tu_put_u32(b, v); }
static void kv_f32(buf *b, const char *k, float v) { tu_put_str(b, k), tu_put_u32(b, T_F32), put_f32(b, v); }
static void kv_str(buf *b, const char *k, const char *v) { tu_put_str(b, k), tu_put_u32(b, T_STR), tu_put_str(b, v); }
static void kv_bool(buf *b, const char *k, int v) { tu_put_str(b, k), tu_put_u32(b, T_BOOL), tu_put_u8(b, (uint8_t)v); }

/* What the generic valid file contains; tests change fields to make it malformed. */
typedef struct spec {
  const char *magic;
  uint32_t version;
  int alignment_kv;       /* write general.alignment = alignment */
  uint32_t alignment;     /* used for layout; default 32 */
  const char *name1;      /* name of the second tensor */
  uint32_t type1;         /* type of the second tensor (q4_0 normally) */
  uint64_t ne1[2];        /* its dims */
  int64_t offset1_delta;  /* added to the second tensor's offset */
  int n_scores;           /* entries in tokenizer.ggml.scores */
  uint32_t bos;
} spec;

static spec default_spec(void) {
  spec s = {"GGUF", 3, 0, 32, "blk.0.attn_q.weight", 2 /* q4_0 */, {64, 2}, 0, 4, 1};
  return s;
}

/* Tensor 0: f32 "token_embd.weight" [32, 4] with value i*0.5 at i; tensor 1: spec'd type. */
static void build(buf *b, const spec *s) {
  memset(b, 0, sizeof *b);
  uint32_t align = s->alignment && !(s->alignment & (s->alignment - 1)) ? s->alignment : 32; /* layout */
  tu_put(b, s->magic, 4);
  tu_put_u32(b, s->version);
  tu_put_u64(b, 2);                      /* tensors */
  tu_put_u64(b, 20 + !!s->alignment_kv); /* kv count */
  kv_str(b, "general.architecture", "llama");
  kv_u32(b, "llama.context_length", 128);
  kv_u32(b, "llama.embedding_length", 32);
  kv_u32(b, "llama.feed_forward_length", 96);
  kv_u32(b, "llama.block_count", 1);
  kv_u32(b, "llama.attention.head_count", 4);
  kv_f32(b, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
  kv_f32(b, "llama.rope.freq_base", 500000.0f);
  if (s->alignment_kv) kv_u32(b, "general.alignment", s->alignment);
  kv_str(b, "tokenizer.ggml.model", "llama");
  tu_put_str(b, "tokenizer.ggml.tokens"), tu_put_u32(b, T_ARR), tu_put_u32(b, T_STR), tu_put_u64(b, 4);
  tu_put_str(b, "<unk>"), tu_put_str(b, "<s>"), tu_put_str(b, "</s>"), tu_put_str(b, "\xe2\x96\x81hi");
  tu_put_str(b, "tokenizer.ggml.scores"), tu_put_u32(b, T_ARR), tu_put_u32(b, T_F32), tu_put_u64(b, (uint64_t)s->n_scores);
  for (int i = 0; i < s->n_scores; i++) put_f32(b, -1.5f * (float)i);
  tu_put_str(b, "tokenizer.ggml.token_type"), tu_put_u32(b, T_ARR), tu_put_u32(b, T_I32), tu_put_u64(b, 4);
  tu_put_u32(b, 2), tu_put_u32(b, 3), tu_put_u32(b, 3), tu_put_u32(b, 1);
  kv_u32(b, "tokenizer.ggml.bos_token_id", s->bos);
  kv_u32(b, "tokenizer.ggml.eos_token_id", 2);
  kv_bool(b, "tokenizer.ggml.add_space_prefix", 0);
  /* every other scalar type, to check decoding */
  tu_put_str(b, "t.i8"), tu_put_u32(b, T_I8), tu_put_u8(b, 0xfe);
  tu_put_str(b, "t.i16"), tu_put_u32(b, T_I16), tu_put_u8(b, 0x00), tu_put_u8(b, 0x80);
  tu_put_str(b, "t.i64"), tu_put_u32(b, T_I64), tu_put_u64(b, (uint64_t)-5);
  tu_put_str(b, "t.f64"), tu_put_u32(b, T_F64), tu_put_u64(b, 0x3ff8000000000000ull); /* 1.5 */
  tu_put_str(b, "t.u16arr"), tu_put_u32(b, T_ARR), tu_put_u32(b, T_U16), tu_put_u64(b, 3);
  tu_put_u8(b, 1), tu_put_u8(b, 0), tu_put_u8(b, 2), tu_put_u8(b, 0), tu_put_u8(b, 0xff), tu_put_u8(b, 0xff);
  /* tensor infos */
  tu_put_str(b, "token_embd.weight"), tu_put_u32(b, 2), tu_put_u64(b, 32), tu_put_u64(b, 4), tu_put_u32(b, 0), tu_put_u64(b, 0);
  uint64_t off1 = 32 * 4 * 4; /* 512: already aligned */
  off1 = (off1 + align - 1) / align * align;
  tu_put_str(b, s->name1), tu_put_u32(b, 2), tu_put_u64(b, s->ne1[0]), tu_put_u64(b, s->ne1[1]), tu_put_u32(b, s->type1);
  tu_put_u64(b, off1 + (uint64_t)s->offset1_delta); /* wraps mod 2^64 on purpose */
  tu_pad_to(b, align);
  size_t data0 = b->n;
  for (int i = 0; i < 128; i++) put_f32(b, 0.5f * (float)i);
  while (b->n < data0 + off1) tu_put_u8(b, 0);
  /* q4_0 blocks: d = 1.0 (0x3c00), qs byte j = j | (15-j)<<4 -> weights j-8 and 7-j */
  for (int blk = 0; blk < 4; blk++) {
    tu_put_u8(b, 0x00), tu_put_u8(b, 0x3c);
    for (int j = 0; j < 16; j++) tu_put_u8(b, (uint8_t)(j | (15 - j) << 4));
  }
}

static char *g_dir;

static char *write_tmp(const char *name, const buf *b) {
  size_t n = strlen(g_dir) + strlen(name) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", g_dir, name);
  tu_write_file(p, b->p, b->n);
  return p;
}

/* Open path and expect failure of class `code` with a message naming the file. */
static void expect_fail(const char *path, int code, const char *needle) {
  qlm_source *src = (qlm_source *)1;
  qlm_error err = {0};
  int rc = qlm_gguf_open(path, &src, &err);
  if (rc != code || (needle && !strstr(err.msg, needle)))
    fail_msg("%s: expected error %d containing '%s', got %d: %s", path, code, needle ? needle : "", rc, err.msg);
  assert_null(src);
  assert_int_equal(err.code, code);
  assert_non_null(strstr(err.msg, path));
}

static void expect_spec_fail(const spec *s, int code, const char *needle) {
  buf b;
  build(&b, s);
  char *p = write_tmp("bad.gguf", &b);
  expect_fail(p, code, needle);
  unlink(p);
  free(p);
  free(b.p);
}

/* ---- valid synthetic file ---- */

static void test_valid_synthetic(void **st) {
  (void)st;
  buf b;
  spec s = default_spec();
  build(&b, &s);
  char *p = write_tmp("ok.gguf", &b);
  qlm_source *src = NULL;
  qlm_error err = {0};
  int rc = qlm_gguf_open(p, &src, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_string_equal(src->format, "gguf");
  assert_int_equal(src->n_tensors, 2);
  /* hparams */
  assert_int_equal(src->hp.arch, QLM_ARCH_LLAMA);
  assert_int_equal(src->hp.n_ctx, 128);
  assert_int_equal(src->hp.n_embd, 32);
  assert_int_equal(src->hp.n_ff, 96);
  assert_int_equal(src->hp.n_layer, 1);
  assert_int_equal(src->hp.n_head, 4);
  assert_int_equal(src->hp.n_head_kv, 4); /* defaults to head_count */
  assert_int_equal(src->hp.head_dim, 8);
  assert_int_equal(src->hp.n_rot, 8);
  assert_int_equal(src->hp.n_vocab, 4);   /* token_embd ne[1] */
  assert_true(src->hp.norm_eps == 1e-6f);
  assert_true(src->hp.rope_theta == 500000.0f);
  assert_int_equal(src->hp.rope_style, QLM_ROPE_INTERLEAVED);
  assert_true(src->hp.tied_embeddings);
  /* tensors */
  const qlm_tensor *t0 = qlm_source_tensor(src, "token_embd.weight");
  assert_non_null(t0);
  assert_int_equal(t0->type, QLM_TYPE_F32);
  assert_int_equal(t0->n_dims, 2);
  assert_int_equal(t0->ne[0], 32);
  assert_int_equal(t0->ne[1], 4);
  assert_int_equal(t0->ne[2], 1);
  assert_int_equal(t0->nbytes, 512);
  for (int i = 0; i < 128; i++) assert_true(((const float *)t0->data)[i] == 0.5f * (float)i);
  const qlm_tensor *t1 = qlm_source_tensor(src, "blk.0.attn_q.weight");
  assert_non_null(t1);
  assert_int_equal(t1->type, QLM_TYPE_Q4_0);
  assert_int_equal(t1->nbytes, 4 * 18);
  assert_int_equal((const uint8_t *)t1->data - (const uint8_t *)t0->data, 512);
  float w[128];
  qlm_type_traits_of(QLM_TYPE_Q4_0)->to_float(t1->data, w, 128);
  for (int i = 0; i < 128; i++) {
    int j = i % 32;
    assert_true(w[i] == (float)(j < 16 ? j - 8 : 7 - (j - 16)));
  }
  /* metadata of every scalar kind */
  const qlm_meta *m = qlm_source_meta(src, "t.i8");
  assert_int_equal(m->type, QLM_META_I8);
  assert_int_equal(m->v.i, -2);
  m = qlm_source_meta(src, "t.i16");
  assert_int_equal(m->v.i, -32768);
  m = qlm_source_meta(src, "t.i64");
  assert_int_equal(m->v.i, -5);
  m = qlm_source_meta(src, "t.f64");
  assert_true(m->v.f == 1.5);
  m = qlm_source_meta(src, "t.u16arr");
  assert_int_equal(m->type, QLM_META_ARRAY);
  assert_int_equal(m->arr_type, QLM_META_U16);
  assert_int_equal(m->arr_len, 3);
  const uint8_t *a = m->arr;
  assert_int_equal(a[0] | a[1] << 8, 1);
  assert_int_equal(a[4] | a[5] << 8, 0xffff);
  m = qlm_source_meta(src, "tokenizer.ggml.tokens");
  assert_int_equal(m->arr_type, QLM_META_STRING);
  assert_string_equal(((char **)m->arr)[3], "\xe2\x96\x81hi");
  m = qlm_source_meta(src, "general.architecture");
  assert_int_equal(m->type, QLM_META_STRING);
  assert_string_equal(m->v.s, "llama");
  /* vocab */
  const qlm_vocab *v = &src->vocab;
  assert_int_equal(v->kind, QLM_TOK_SPM);
  assert_int_equal(v->n_tokens, 4);
  assert_string_equal(v->tokens[1], "<s>");
  assert_int_equal(v->token_len[3], 5);
  assert_true(v->scores[2] == -3.0f);
  assert_int_equal(v->token_type[0], QLM_TOKATTR_UNKNOWN);
  assert_int_equal(v->token_type[1], QLM_TOKATTR_CONTROL);
  assert_int_equal(v->bos_id, 1);
  assert_int_equal(v->eos_id, 2);
  assert_int_equal(v->unk_id, -1);
  assert_false(v->add_space_prefix); /* explicitly false in the file, overriding the SPM default */
  assert_string_equal(v->pre, "default");
  assert_int_equal(v->n_merges, 0);
  qlm_source_close(src);
  /* through the format-detecting entry point too */
  rc = qlm_source_open(p, NULL, &src, &err);
  if (rc) fail_msg("%s", err.msg);
  assert_string_equal(src->format, "gguf");
  qlm_source_close(src);
  unlink(p);
  free(p);
  free(b.p);
}

/* general.alignment = 64 moves the second tensor to 512 (already aligned) and the data start. */
static void test_alignment_64(void **st) {
  (void)st;
  buf b;
  spec s = default_spec();
  s.alignment_kv = 1;
  s.alignment = 64;
  build(&b, &s);
  char *p = write_tmp("a64.gguf", &b);
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_gguf_open(p, &src, &err)) fail_msg("%s", err.msg);
  const qlm_tensor *t0 = qlm_source_tensor(src, "token_embd.weight");
  /* the mapping is page-aligned, so a data section aligned in the file is aligned in memory */
  assert_int_equal((uintptr_t)t0->data % 64, 0);
  assert_int_equal((uintptr_t)qlm_source_tensor(src, "blk.0.attn_q.weight")->data % 64, 0);
  assert_true(((const float *)t0->data)[5] == 2.5f);
  qlm_source_close(src);
  unlink(p);
  free(p);
  free(b.p);
}

/* GGUF v2 has the same layout as v3 (v3 only added big-endian files, marked by the version). */
static void test_version2(void **st) {
  (void)st;
  buf b;
  spec s = default_spec();
  s.version = 2;
  build(&b, &s);
  char *p = write_tmp("v2.gguf", &b);
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_gguf_open(p, &src, &err)) fail_msg("%s", err.msg);
  assert_int_equal(src->n_tensors, 2);
  assert_int_equal(src->hp.n_embd, 32);
  qlm_source_close(src);
  unlink(p);
  free(p);
  free(b.p);
}

/* ---- malformed files ---- */

static void test_bad_magic_and_version(void **st) {
  (void)st;
  spec s = default_spec();
  s.magic = "GGUG";
  expect_spec_fail(&s, QLM_EFORMAT, "magic");
  s = default_spec();
  s.version = 1;
  expect_spec_fail(&s, QLM_EUNSUPPORTED, "version 1");
  s.version = 4;
  expect_spec_fail(&s, QLM_EUNSUPPORTED, "version 4");
  s.version = 0x03000000; /* a big-endian file */
  expect_spec_fail(&s, QLM_EUNSUPPORTED, "version");
  /* empty file */
  uint8_t none[1] = {0};
  buf b = {.p = none}; /* a non-NULL pointer: fwrite's argument must not be NULL */
  char *p = write_tmp("empty.gguf", &b);
  expect_fail(p, QLM_EFORMAT, "magic");
  unlink(p);
  free(p);
  /* missing file */
  char *q = malloc(strlen(g_dir) + 32);
  sprintf(q, "%s/does-not-exist.gguf", g_dir);
  expect_fail(q, QLM_EIO, NULL);
  free(q);
}

/* Every proper prefix of a valid file must fail cleanly with a format error. */
static void test_truncated_everywhere(void **st) {
  (void)st;
  buf b;
  spec s = default_spec();
  build(&b, &s);
  for (size_t cut = 0; cut < b.n; cut += (cut < 700 ? 1 : 7)) {
    buf t = {.p = b.p, .n = cut, .cap = cut};
    char *p = write_tmp("trunc.gguf", &t);
    expect_fail(p, QLM_EFORMAT, NULL);
    unlink(p);
    free(p);
  }
  free(b.p);
}

static void test_tensor_past_eof(void **st) {
  (void)st;
  spec s = default_spec();
  s.offset1_delta = 4096;
  expect_spec_fail(&s, QLM_EFORMAT, "past end of file");
  s.offset1_delta = (int64_t)0x7fffffffffffff00ll; /* aligned and absurd: must not wrap around */
  expect_spec_fail(&s, QLM_EFORMAT, "past end of file");
}

static void test_unaligned_offset(void **st) {
  (void)st;
  spec s = default_spec();
  s.offset1_delta = 4;
  expect_spec_fail(&s, QLM_EFORMAT, "alignment");
}

static void test_bad_alignment_value(void **st) {
  (void)st;
  spec s = default_spec();
  s.alignment_kv = 1;
  s.alignment = 48;
  expect_spec_fail(&s, QLM_EFORMAT, "general.alignment");
  s.alignment = 0;
  expect_spec_fail(&s, QLM_EFORMAT, "general.alignment");
}

static void test_absurd_dims(void **st) {
  (void)st;
  spec s = default_spec();
  s.ne1[0] = 1ull << 40, s.ne1[1] = 1ull << 40; /* element count overflows int64 */
  expect_spec_fail(&s, QLM_EFORMAT, "overflow");
  s.ne1[0] = 64, s.ne1[1] = 1ull << 62; /* bytes fit int64 arithmetic? no: 2*18*2^62 overflows */
  expect_spec_fail(&s, QLM_EFORMAT, "overflow");
  s.ne1[0] = 64, s.ne1[1] = 1ull << 40; /* no overflow, but 36 TiB past end of file */
  expect_spec_fail(&s, QLM_EFORMAT, "past end of file");
  s.ne1[0] = 0;
  expect_spec_fail(&s, QLM_EFORMAT, "dimension 0");
  s.ne1[0] = 48, s.ne1[1] = 2; /* not a whole number of q4_0 blocks */
  expect_spec_fail(&s, QLM_EFORMAT, "block size");
}

static void test_duplicate_tensor(void **st) {
  (void)st;
  spec s = default_spec();
  s.name1 = "token_embd.weight";
  expect_spec_fail(&s, QLM_EFORMAT, "more than once");
}

static void test_unknown_tensor_type(void **st) {
  (void)st;
  spec s = default_spec();
  s.type1 = 16; /* IQ2_XXS: a real ggml type qlm does not implement */
  expect_spec_fail(&s, QLM_EUNSUPPORTED, "type 16");
  s.type1 = 4; /* a removed ggml id */
  expect_spec_fail(&s, QLM_EUNSUPPORTED, "type 4");
  s.type1 = 12345;
  expect_spec_fail(&s, QLM_EFORMAT, "type 12345");
}

static void test_vocab_inconsistent(void **st) {
  (void)st;
  spec s = default_spec();
  s.n_scores = 3;
  expect_spec_fail(&s, QLM_EFORMAT, "tokenizer.ggml.scores");
  s = default_spec();
  s.bos = 4;
  expect_spec_fail(&s, QLM_EFORMAT, "bos_token_id");
}

/* Hand-made header followed by one key/value, to poke at value decoding. */
static void header(buf *b, uint64_t n_tensors, uint64_t n_kv) {
  memset(b, 0, sizeof *b);
  tu_put(b, "GGUF", 4);
  tu_put_u32(b, 3);
  tu_put_u64(b, n_tensors);
  tu_put_u64(b, n_kv);
}

static void expect_buf_fail(buf *b, int code, const char *needle) {
  char *p = write_tmp("kv.gguf", b);
  expect_fail(p, code, needle);
  unlink(p);
  free(p);
  free(b->p);
}

static void test_bad_metadata(void **st) {
  (void)st;
  buf b;
  /* string length past EOF */
  header(&b, 0, 1);
  tu_put_str(&b, "general.name"), tu_put_u32(&b, T_STR), tu_put_u64(&b, 100), tu_put(&b, "abc", 3);
  expect_buf_fail(&b, QLM_EFORMAT, "truncated");
  /* absurd string length */
  header(&b, 0, 1);
  tu_put_str(&b, "general.name"), tu_put_u32(&b, T_STR), tu_put_u64(&b, 1ull << 60);
  expect_buf_fail(&b, QLM_ELIMIT, "limit");
  /* absurd key length */
  header(&b, 0, 1);
  tu_put_u64(&b, 1ull << 62);
  expect_buf_fail(&b, QLM_ELIMIT, "limit");
  /* unknown value type */
  header(&b, 0, 1);
  tu_put_str(&b, "x"), tu_put_u32(&b, 13), tu_put_u32(&b, 0);
  expect_buf_fail(&b, QLM_EFORMAT, "unknown value type 13");
  /* array count larger than the file */
  header(&b, 0, 1);
  tu_put_str(&b, "x"), tu_put_u32(&b, T_ARR), tu_put_u32(&b, T_U32), tu_put_u64(&b, 1000), tu_put_u32(&b, 1);
  expect_buf_fail(&b, QLM_EFORMAT, "truncated");
  /* string array whose count is huge but within the element limit: no giant allocation */
  header(&b, 0, 1);
  tu_put_str(&b, "tokenizer.ggml.tokens"), tu_put_u32(&b, T_ARR), tu_put_u32(&b, T_STR), tu_put_u64(&b, 1u << 25);
  expect_buf_fail(&b, QLM_EFORMAT, "truncated");
  /* array beyond the limit */
  header(&b, 0, 1);
  tu_put_str(&b, "x"), tu_put_u32(&b, T_ARR), tu_put_u32(&b, T_U8), tu_put_u64(&b, 1ull << 40);
  expect_buf_fail(&b, QLM_ELIMIT, "limit");
  /* nested array */
  header(&b, 0, 1);
  tu_put_str(&b, "x"), tu_put_u32(&b, T_ARR), tu_put_u32(&b, T_ARR), tu_put_u64(&b, 1), tu_put_u32(&b, T_U8), tu_put_u64(&b, 0);
  expect_buf_fail(&b, QLM_EUNSUPPORTED, "nested");
  /* bool that is not 0/1 */
  header(&b, 0, 1);
  tu_put_str(&b, "x"), tu_put_u32(&b, T_BOOL), tu_put_u8(&b, 7);
  expect_buf_fail(&b, QLM_EFORMAT, "bool");
  /* NUL inside a string */
  header(&b, 0, 1);
  tu_put_str(&b, "x"), tu_put_u32(&b, T_STR), tu_put_u64(&b, 3), tu_put(&b, "a\0b", 3);
  expect_buf_fail(&b, QLM_EFORMAT, "NUL");
  /* duplicate key */
  header(&b, 0, 2);
  kv_u32(&b, "a.b", 1), kv_u32(&b, "a.b", 2);
  expect_buf_fail(&b, QLM_EFORMAT, "more than once");
  /* wrong type for a known key */
  header(&b, 0, 2);
  kv_str(&b, "general.architecture", "llama"), kv_str(&b, "llama.block_count", "five");
  expect_buf_fail(&b, QLM_EFORMAT, "llama.block_count");
  header(&b, 0, 1);
  kv_str(&b, "general.alignment", "32");
  expect_buf_fail(&b, QLM_EFORMAT, "general.alignment");
  /* a hyper-parameter that does not fit an int */
  header(&b, 0, 2);
  kv_str(&b, "general.architecture", "qwen2");
  tu_put_str(&b, "qwen2.embedding_length"), tu_put_u32(&b, T_U64), tu_put_u64(&b, 1ull << 40);
  expect_buf_fail(&b, QLM_EFORMAT, "out of range");
  /* too many tensors / kvs */
  header(&b, 1u << 21, 0);
  expect_buf_fail(&b, QLM_ELIMIT, "tensors");
  header(&b, 0, 1u << 21);
  expect_buf_fail(&b, QLM_ELIMIT, "metadata");
  /* tensor count that cannot fit in the file */
  header(&b, 1000, 0);
  expect_buf_fail(&b, QLM_EFORMAT, "tensor infos");
  /* n_dims 5 */
  header(&b, 1, 0);
  tu_put_str(&b, "t"), tu_put_u32(&b, 5);
  for (int i = 0; i < 8; i++) tu_put_u64(&b, 1);
  expect_buf_fail(&b, QLM_EFORMAT, "n_dims 5");
}

/* A file with only metadata (like llama.cpp's vocab files) and an unknown architecture loads. */
static void test_metadata_only_unknown_arch(void **st) {
  (void)st;
  buf b;
  header(&b, 0, 2);
  kv_str(&b, "general.architecture", "mamba");
  kv_u32(&b, "mamba.block_count", 3);
  char *p = write_tmp("meta.gguf", &b);
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_gguf_open(p, &src, &err)) fail_msg("%s", err.msg);
  assert_int_equal(src->n_tensors, 0);
  assert_int_equal(src->hp.n_layer, 0); /* only filled for supported architectures */
  assert_string_equal(qlm_source_meta(src, "general.architecture")->v.s, "mamba");
  assert_int_equal(src->vocab.n_tokens, 0);
  qlm_source_close(src);
  unlink(p);
  free(p);
  free(b.p);
}

static qlm_source *open_buf(buf *b, const char *name) {
  char *p = write_tmp(name, b);
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_gguf_open(p, &src, &err)) fail_msg("%s", err.msg);
  unlink(p);
  free(p);
  free(b->p);
  return src;
}

/* Per-architecture keys: epsilon key, RoPE style, defaults. */
static void test_arch_hparams(void **st) {
  (void)st;
  buf b;
  header(&b, 0, 6);
  kv_str(&b, "general.architecture", "gpt2");
  kv_u32(&b, "gpt2.embedding_length", 64);
  kv_u32(&b, "gpt2.attention.head_count", 4);
  kv_u32(&b, "gpt2.context_length", 1024);
  kv_f32(&b, "gpt2.attention.layer_norm_epsilon", 1e-5f);
  kv_f32(&b, "gpt2.attention.layer_norm_rms_epsilon", 0.5f); /* the llama key: must be ignored */
  qlm_source *src = open_buf(&b, "gpt2.gguf");
  assert_int_equal(src->hp.arch, QLM_ARCH_GPT2);
  assert_int_equal(src->hp.rope_style, QLM_ROPE_NONE);
  assert_true(src->hp.norm_eps == 1e-5f);
  assert_int_equal(src->hp.head_dim, 16);
  assert_int_equal(src->hp.n_head_kv, 4);
  assert_int_equal(src->hp.n_ctx, 1024);
  assert_int_equal(src->hp.n_rot, 0);
  qlm_source_close(src);

  header(&b, 0, 6);
  kv_str(&b, "general.architecture", "qwen2");
  kv_u32(&b, "qwen2.embedding_length", 896);
  kv_u32(&b, "qwen2.attention.head_count", 14);
  kv_u32(&b, "qwen2.attention.head_count_kv", 2);
  kv_f32(&b, "qwen2.rope.freq_base", 1000000.0f);
  kv_f32(&b, "qwen2.attention.layer_norm_rms_epsilon", 1e-6f);
  src = open_buf(&b, "qwen2.gguf");
  assert_int_equal(src->hp.arch, QLM_ARCH_QWEN2);
  assert_int_equal(src->hp.rope_style, QLM_ROPE_NEOX);
  assert_int_equal(src->hp.head_dim, 64);
  assert_int_equal(src->hp.n_rot, 64);
  assert_int_equal(src->hp.n_head_kv, 2);
  assert_true(src->hp.rope_theta == 1000000.0f);
  assert_true(src->hp.norm_eps == 1e-6f);
  qlm_source_close(src);

  header(&b, 0, 1);
  kv_str(&b, "general.architecture", "llama");
  src = open_buf(&b, "llama-defaults.gguf");
  assert_true(src->hp.rope_theta == 10000.0f); /* default base */
  assert_int_equal(src->hp.n_layer, 0);        /* missing keys stay zero: the model loader rejects them */
  qlm_source_close(src);
}

/* Random byte corruption: never crash; failures carry the path. */
static void test_random_corruption(void **st) {
  (void)st;
  buf b;
  spec s = default_spec();
  build(&b, &s);
  uint64_t rng = 12345;
  uint8_t *copy = malloc(b.n);
  int failures = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(copy, b.p, b.n);
    int flips = 1 + (int)(tu_rand_u64(&rng) % 4);
    for (int f = 0; f < flips; f++) {
      size_t at = tu_rand_u64(&rng) % 700; /* the header part, where the structure is */
      copy[at] = (uint8_t)tu_rand_u64(&rng);
    }
    buf t = {.p = copy, .n = b.n, .cap = b.n};
    char *p = write_tmp("fuzz.gguf", &t);
    qlm_source *src = NULL;
    qlm_error err = {0};
    int rc = qlm_gguf_open(p, &src, &err);
    if (rc) {
      failures++;
      assert_null(src);
      assert_non_null(strstr(err.msg, p));
    } else {
      qlm_source_close(src);
    }
    unlink(p);
    free(p);
  }
  assert_true(failures > 100); /* most corruptions of the structure must be detected */
  free(copy);
  free(b.p);
}

/* ---- real files ---- */

static void test_stories260k(void **st) {
  (void)st;
  char *path = tu_shared("models/stories260K/stories260K.gguf");
  qlm_source *src = NULL;
  qlm_error err = {0};
  if (qlm_gguf_open(path, &src, &err)) fail_msg("%s", err.msg);
  /* values from /work/shared/models/README.md */
  assert_int_equal(src->n_tensors, 48);
  /* the converter wrote its default context 2048; this GGUF carries an explicit output.weight */
  tu_check_stories260k_hparams(&src->hp, 2048, QLM_ROPE_INTERLEAVED, 0);
  assert_int_equal(qlm_source_n_params(src), 260032 + 512 * 64); /* README counts the tied copy once */
  const qlm_tensor *t = qlm_source_tensor(src, "blk.4.ffn_down.weight");
  assert_non_null(t);
  assert_int_equal(t->type, QLM_TYPE_F32);
  assert_int_equal(t->ne[0], 172);
  assert_int_equal(t->ne[1], 64);
  assert_int_equal(t->nbytes, 172 * 64 * 4);
  assert_string_equal(qlm_source_meta(src, "general.architecture")->v.s, "llama");
  const qlm_vocab *v = &src->vocab;
  assert_int_equal(v->kind, QLM_TOK_SPM);
  assert_int_equal(v->n_tokens, 512);
  assert_non_null(v->scores);
  assert_non_null(v->token_type);
  assert_int_equal(v->bos_id, 1);
  assert_int_equal(v->eos_id, 2);
  assert_int_equal(v->unk_id, 0);
  assert_string_equal(v->tokens[1], "<s>");
  assert_true(v->add_space_prefix);

  /* cross-check against the llama2.c export of the same model: its token embedding table
   * follows a 7-int header and must equal token_embd.weight bit for bit */
  char *bin = tu_shared("models/stories260K/stories260K.bin");
  FILE *f = fopen(bin, "rb");
  assert_non_null(f);
  int32_t hdr[7];
  assert_int_equal(fread(hdr, 4, 7, f), 7);
  assert_int_equal(hdr[0], 64);
  size_t n = 64 * 512;
  float *emb = malloc(n * sizeof *emb);
  assert_int_equal(fread(emb, sizeof *emb, n, f), n);
  fclose(f);
  const qlm_tensor *te = qlm_source_tensor(src, "token_embd.weight");
  assert_non_null(te);
  assert_memory_equal(te->data, emb, n * sizeof *emb);
  free(emb);
  free(bin);
  qlm_source_close(src);
  free(path);
}

static void test_llama_cpp_vocabs(void **st) {
  (void)st;
  char *dir = tu_shared("tokenizers/llama.cpp-vocab");
  DIR *d = opendir(dir);
  assert_non_null(d);
  int seen = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 5, ".gguf") != 0) continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    qlm_source *src = NULL;
    qlm_error err = {0};
    if (qlm_gguf_open(path, &src, &err)) fail_msg("%s", err.msg);
    const qlm_vocab *v = &src->vocab;
    assert_true(v->n_tokens >= 30000 && v->n_tokens <= 200000);
    assert_int_equal(src->n_tensors, 0);
    if (strstr(e->d_name, "bert")) {
      assert_int_equal(v->kind, QLM_TOK_NONE);
    } else if (v->kind == QLM_TOK_BPE) {
      assert_true(v->n_merges > 30000);
      assert_false(v->add_space_prefix);
    } else {
      assert_int_equal(v->kind, QLM_TOK_SPM);
      assert_non_null(v->scores);
      assert_true(v->add_space_prefix);
    }
    for (int i = 0; i < v->n_tokens; i++) assert_int_equal(v->token_len[i], (int)strlen(v->tokens[i]));
    if (strcmp(e->d_name, "ggml-vocab-gpt-2.gguf") == 0) {
      assert_int_equal(v->kind, QLM_TOK_BPE);
      assert_int_equal(v->n_tokens, 50257);
      assert_int_equal(v->n_merges, 50000);
      assert_string_equal(v->pre, "gpt-2");
      assert_int_equal(v->bos_id, 50256);
      assert_string_equal(v->merges[0], "\xc4\xa0 t"); /* GPT-2's first merge: "Ġ t" */
      assert_string_equal(v->tokens[0], "!");
    }
    if (strcmp(e->d_name, "ggml-vocab-llama-spm.gguf") == 0) {
      assert_int_equal(v->kind, QLM_TOK_SPM);
      assert_int_equal(v->n_tokens, 32000);
      assert_string_equal(v->tokens[3], "<0x00>");
      assert_int_equal(v->token_type[3], QLM_TOKATTR_BYTE);
      assert_true(v->add_bos);
      assert_false(v->add_eos);
      assert_int_equal(src->hp.arch, QLM_ARCH_LLAMA);
    }
    if (strcmp(e->d_name, "ggml-vocab-deepseek-llm.gguf") == 0) {
      assert_int_equal(v->kind, QLM_TOK_BPE);
      assert_string_equal(v->pre, "deepseek-llm");
      assert_int_equal(v->bos_id, 100000);
    }
    qlm_source_close(src);
    seen++;
  }
  closedir(d);
  assert_true(seen >= 12);
  free(dir);
}

static int setup(void **st) {
  (void)st;
  g_dir = tu_tmpdir();
  return 0;
}
static int teardown(void **st) {
  (void)st;
  rmdir(g_dir);
  free(g_dir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_synthetic),
      cmocka_unit_test(test_alignment_64),
      cmocka_unit_test(test_version2),
      cmocka_unit_test(test_bad_magic_and_version),
      cmocka_unit_test(test_truncated_everywhere),
      cmocka_unit_test(test_tensor_past_eof),
      cmocka_unit_test(test_unaligned_offset),
      cmocka_unit_test(test_bad_alignment_value),
      cmocka_unit_test(test_absurd_dims),
      cmocka_unit_test(test_duplicate_tensor),
      cmocka_unit_test(test_unknown_tensor_type),
      cmocka_unit_test(test_vocab_inconsistent),
      cmocka_unit_test(test_bad_metadata),
      cmocka_unit_test(test_metadata_only_unknown_arch),
      cmocka_unit_test(test_arch_hparams),
      cmocka_unit_test(test_random_corruption),
      cmocka_unit_test(test_stories260k),
      cmocka_unit_test(test_llama_cpp_vocabs),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
