/* test_malformed.c — hostile files through the qlm program: every reader must fail with the
 * documented error class (src/core/error.h; exit 3 I/O, 4 malformed, 5 unsupported, 6 limit)
 * and a message on stderr that names the file and the offending field or value — never a
 * crash, a sanitizer report (this test also runs in the ASan build) or a silent success.
 *
 * Every malformed file is made here, from tiny valid files this test builds byte by byte (GGUF,
 * safetensors + config.json + tokenizer.json, llama2.c checkpoint + tokenizer.bin, rules) or
 * from the shared stories260K model read at run time.  Each case is a row of a table: what is
 * broken, the command, the expected exit code and the text stderr must contain.  All rows run;
 * the ones that fail are listed before the test fails. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/mapfile.h"
#include "formats/gguf_write.h"
#include "formats/source.h"

/* ---- running qlm ---------------------------------------------------------------------- */

typedef struct run_result {
  int status; /* exit code; 128 + signal when killed */
  char *out, *err;
} run_result;

static char *g_dir; /* this test's temporary folder */

static run_result run_qlm(const char *args) {
  const char *bin = getenv("QLM_BIN");
  assert_non_null(bin);
  char cmd[8192], op[600], ep[600];
  snprintf(op, sizeof op, "%s/.out", g_dir);
  snprintf(ep, sizeof ep, "%s/.err", g_dir);
  snprintf(cmd, sizeof cmd, "'%s' %s >'%s' 2>'%s' </dev/null", bin, args, op, ep);
  int st = system(cmd);
  run_result r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
  qlm_error e = {0};
  assert_int_equal(qlm_read_file(op, 64 << 20, &r.out, NULL, &e), 0);
  assert_int_equal(qlm_read_file(ep, 64 << 20, &r.err, NULL, &e), 0);
  return r;
}

static int g_failed; /* rows that did not behave */

/* One row: `qlm ARGS` exits with `code` and stderr contains `file` and `needle` (either may be
 * NULL).  Exit 0 rows are files the format allows (they must load). */
static void row(const char *what, const char *args, int code, const char *file, const char *needle) {
  run_result r = run_qlm(args);
  bool ok = r.status == code && (!code || !file || strstr(r.err, file)) && (!code || !needle || strstr(r.err, needle));
  if (code != 0 && strstr(r.err, "Sanitizer")) ok = false;
  if (code != 0 && r.out[0]) ok = false; /* a failed load prints nothing on stdout */
  printf("  %-4s %-58s exit %d (want %d)\n", ok ? "ok" : "FAIL", what, r.status, code);
  if (!ok) {
    printf("       qlm %s\n       stderr: %.600s\n       wanted: '%s' and '%s'\n", args, r.err, file ? file : "",
           needle ? needle : "");
    g_failed++;
  }
  free(r.out);
  free(r.err);
}

static void begin(void) {
  g_dir = tu_tmpdir();
  g_failed = 0;
}

static void end(void) {
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  assert_int_equal(system(cmd), 0);
  free(g_dir);
  if (g_failed) fail_msg("%d malformed-file case(s) misbehaved (listed above)", g_failed);
}

/* ---- a byte buffer that records section boundaries ------------------------------------ */

typedef tu_bytes buf;

/* A string whose length field says `decl` (0: n) but with only its n real bytes. */
static void put_lie(buf *b, const char *s, size_t n, uint64_t decl) {
  tu_put_u64(b, decl ? decl : n);
  tu_put(b, s, n);
}

static void path_in(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

/* ---- GGUF ----------------------------------------------------------------------------- */

enum { GT_U32 = 4, GT_I32 = 5, GT_BOOL = 7, GT_STRING = 8, GT_ARRAY = 9 };

/* The knobs of the tiny GGUF: defaults give a valid file of 4 metadata entries and 2 tensors
 * (token_embd F32 [4, 4], blk.0.attn_q Q8_0 [32, 2]); each case changes one thing. */
typedef struct gguf_spec {
  uint32_t version;
  uint64_t n_tensors, n_kv;       /* as written in the header */
  const char *key0;               /* first key, default general.architecture */
  size_t key0_len;                /* its bytes */
  uint64_t key0_decl;             /* its declared length (0: key0_len) */
  uint64_t arch_len;              /* declared length of its value "llama" (5) */
  uint32_t align_type, align;     /* general.alignment */
  uint64_t n_tokens;              /* declared count of tokenizer.ggml.tokens (4) */
  uint32_t bos_flag;              /* tokenizer.ggml.add_bos_token (bool 0/1) */
  const char *xkey;               /* an extra entry: key, type, raw value bytes */
  uint32_t xtype;
  const void *xval;
  size_t xval_len;
  uint32_t n_dims0;               /* tensor 0 */
  uint64_t ne0[4];
  uint32_t type0;
  uint64_t off0;
  const char *name1;              /* tensor 1 */
  uint64_t name1_len, name1_decl; /* its bytes and declared length (0: name1_len) */
  uint32_t type1;
  uint64_t ne1_0, off1;
} gguf_spec;

static gguf_spec gguf_default(void) {
  return (gguf_spec){.version = 3, .n_tensors = 2, .n_kv = 4, .key0 = "general.architecture", .key0_len = 20,
                     .arch_len = 5, .align_type = GT_U32, .align = 32, .n_tokens = 4, .bos_flag = 1,
                     .n_dims0 = 2, .ne0 = {4, 4, 1, 1}, .type0 = 0, .off0 = 0, .name1 = "blk.0.attn_q.weight",
                     .name1_len = 19, .type1 = 8, .ne1_0 = 32, .off1 = 64};
}

static void gguf_build(const gguf_spec *s, buf *b) {
  memset(b, 0, sizeof *b);
  tu_put(b, "GGUF", 4), tu_mark(b);
  tu_put_u32(b, s->version), tu_mark(b);
  tu_put_u64(b, s->n_tensors), tu_mark(b);
  tu_put_u64(b, s->n_kv + (s->xkey ? 1 : 0)), tu_mark(b);
  put_lie(b, s->key0, s->key0_len, s->key0_decl), tu_mark(b);
  tu_put_u32(b, GT_STRING), tu_mark(b);
  tu_put_u64(b, s->arch_len), tu_put(b, "llama", 5), tu_mark(b);
  tu_put_str(b, "general.alignment"), tu_put_u32(b, s->align_type), tu_mark(b);
  tu_put_u32(b, s->align), tu_mark(b);
  static const char *toks[] = {"<unk>", "<s>", "</s>", "a"};
  tu_put_str(b, "tokenizer.ggml.tokens"), tu_put_u32(b, GT_ARRAY), tu_put_u32(b, GT_STRING), tu_put_u64(b, s->n_tokens), tu_mark(b);
  for (int i = 0; i < 4; i++) tu_put_str(b, toks[i]), tu_mark(b);
  tu_put_str(b, "tokenizer.ggml.add_bos_token"), tu_put_u32(b, GT_BOOL);
  uint8_t flag = (uint8_t)s->bos_flag;
  tu_put(b, &flag, 1), tu_mark(b);
  if (s->xkey) tu_put_str(b, s->xkey), tu_put_u32(b, s->xtype), tu_put(b, s->xval, s->xval_len), tu_mark(b);
  tu_put_str(b, "token_embd.weight"), tu_mark(b);
  tu_put_u32(b, s->n_dims0);
  for (uint32_t d = 0; d < s->n_dims0 && d < 4; d++) tu_put_u64(b, s->ne0[d]);
  tu_mark(b);
  tu_put_u32(b, s->type0), tu_put_u64(b, s->off0), tu_mark(b);
  put_lie(b, s->name1, s->name1_len, s->name1_decl), tu_mark(b);
  tu_put_u32(b, 2), tu_put_u64(b, s->ne1_0), tu_put_u64(b, 2), tu_mark(b);
  tu_put_u32(b, s->type1), tu_put_u64(b, s->off1), tu_mark(b);
  tu_pad_to(b, 32), tu_mark(b);
  float f[16];
  for (int i = 0; i < 16; i++) f[i] = 0.25f * (float)i;
  tu_put(b, f, sizeof f), tu_mark(b);
  uint8_t q[68] = {0};
  q[1] = 0x3c, q[35] = 0x3c; /* fp16 1.0 scales; int8 codes 0 */
  tu_put(b, q, sizeof q);
}

/* Write spec (or the default) to NAME in the test folder; its path goes to path[]. */
static void gguf_file(const gguf_spec *s, const char *name, char *path, size_t cap) {
  buf b;
  gguf_build(s, &b);
  path_in(path, cap, name);
  tu_write_file(path, b.p, b.n);
  free(b.p);
}

/* One GGUF row: build the spec, run `qlm info`, check. */
static void gguf_row(const char *what, const gguf_spec *s, int code, const char *needle) {
  char path[700], args[2000];
  gguf_file(s, "case.gguf", path, sizeof path);
  snprintf(args, sizeof args, "info '%s' --meta", path);
  row(what, args, code, path, needle);
}

static void test_gguf(void **st) {
  (void)st;
  begin();
  gguf_spec s = gguf_default();
  gguf_row("valid tiny GGUF (baseline)", &s, 0, NULL);

  /* truncated at every section boundary and one byte into the next field */
  buf b;
  gguf_build(&s, &b);
  char path[700], args[2000], what[128];
  path_in(path, sizeof path, "cut.gguf");
  for (int i = 0; i < b.n_mark; i++)
    for (int k = 0; k < 2; k++) {
      size_t at = b.mark[i] + (size_t)k;
      if (at >= b.n) continue;
      tu_write_file(path, b.p, at);
      snprintf(what, sizeof what, "truncated at byte %zu of %zu", at, b.n);
      snprintf(args, sizeof args, "info '%s'", path);
      /* before the magic is complete the file is just not GGUF; afterwards "truncated" or a
       * tensor "past end of file" */
      row(what, args, 4, path, at < 4 ? "bad magic" : at < b.mark[b.n_mark - 3] ? "truncated" : "past end of file");
    }
  free(b.p);

#define CASE(label, code, needle, ...) \
  do { s = gguf_default(); __VA_ARGS__; gguf_row(label, &s, code, needle); } while (0)
  CASE("version 1", 5, "version 1", s.version = 1);
  CASE("version 0x03000000 (big-endian file)", 5, "version 50331648", s.version = 0x03000000);
  CASE("n_tensors 2^63", 6, "9223372036854775808 tensors", s.n_tensors = 1ull << 63);
  CASE("n_kv 2^64-1", 6, "18446744073709551615 metadata entries", s.n_kv = UINT64_MAX);
  CASE("n_tensors 5000 (more than the file holds)", 4, "5000 tensor infos", s.n_tensors = 5000);
  /* the tensor infos read as metadata: a tensor name's bytes become an absurd key length */
  CASE("n_kv 9 (more than the file holds)", 6, "key of metadata entry 5: string length", s.n_kv = 9);
  CASE("key length 2^64-1", 6, "string length 18446744073709551615", s.key0_decl = UINT64_MAX);
  CASE("non-UTF-8 key", 4, "not valid UTF-8 (byte 0xff", s.key0 = "general.\xff\xfe", s.key0_len = 10);
  CASE("overlong UTF-8 in key", 4, "not valid UTF-8 (byte 0xc0", s.key0 = "general.\xc0\xaf", s.key0_len = 10);
  CASE("string value length 2^63", 6, "'general.architecture'", s.arch_len = 1ull << 63);
  CASE("string value length past EOF", 4, "truncated", s.arch_len = 100000);
  CASE("value type 99", 4, "unknown value type 99", s.align_type = 99);
  CASE("general.alignment 3", 4, "general.alignment 3", s.align = 3);
  CASE("general.alignment 0", 4, "general.alignment 0", s.align = 0);
  CASE("general.alignment as int32", 4, "general.alignment should be a uint32", s.align_type = GT_I32);
  CASE("array count 2^62", 6, "array of 4611686018427387904", s.n_tokens = 1ull << 62);
  CASE("array count 2^25 (past EOF)", 4, "truncated", s.n_tokens = 1u << 25);
  CASE("bool value 2", 4, "bool value 2", s.bos_flag = 2);
  uint8_t nested[12] = {GT_ARRAY, 0, 0, 0, 0};
  CASE("nested array", 5, "nested arrays", s.xkey = "x.nested", s.xtype = GT_ARRAY, s.xval = nested, s.xval_len = 12);
  uint32_t align32 = 32;
  CASE("duplicate metadata key", 4, "'general.alignment' appears more than once", s.xkey = "general.alignment",
       s.xtype = GT_U32, s.xval = &align32, s.xval_len = 4);
  int32_t neg = -5;
  CASE("negative llama.block_count", 4, "'llama.block_count' = -5", s.xkey = "llama.block_count", s.xtype = GT_I32,
       s.xval = &neg, s.xval_len = 4);
  uint32_t big_bos = 1000;
  CASE("bos id outside the vocabulary", 4, "= 1000 is not a token id", s.xkey = "tokenizer.ggml.bos_token_id",
       s.xtype = GT_U32, s.xval = &big_bos, s.xval_len = 4);
  uint8_t scores[16] = {6 /* f32 */, 0, 0, 0, 1};
  CASE("scores array shorter than the vocabulary", 4, "'tokenizer.ggml.scores' has 1 elements",
       s.xkey = "tokenizer.ggml.scores", s.xtype = GT_ARRAY, s.xval = scores, s.xval_len = 16);
  CASE("n_dims 0", 4, "n_dims 0", s.n_dims0 = 0);
  CASE("n_dims 5", 4, "n_dims 5", s.n_dims0 = 5, s.ne0[0] = 4, s.ne0[1] = 4);
  CASE("dimension 0", 4, "dimension 1 is 0", s.ne0[1] = 0);
  CASE("dimension 2^63 (negative as int64)", 4, "dimension 0 is 9223372036854775808", s.ne0[0] = 1ull << 63);
  CASE("dims whose product overflows 64 bits", 4, "overflows", s.n_dims0 = 3, s.ne0[0] = 1ull << 32,
       s.ne0[1] = 1ull << 32, s.ne0[2] = 1ull << 32);
  CASE("dims whose byte size overflows 64 bits", 4, "overflows", s.ne0[0] = 1ull << 31, s.ne0[1] = 1ull << 31);
  CASE("huge dims that fit 64 bits (data past EOF)", 4, "past end of file", s.ne0[0] = 1ull << 20, s.ne0[1] = 1ull << 20);
  CASE("tensor type 999 (no such type)", 4, "invalid tensor type 999", s.type0 = 999);
  CASE("tensor type 4 (ggml's removed Q4_2)", 5, "unsupported tensor type 4", s.type0 = 4);
  CASE("qlm type id with a bogus family", 4, "invalid tensor type", s.type0 = 0x7F000000u);
  CASE("Q8_0 row of 33 (not a whole block)", 4, "row length 33", s.ne1_0 = 33);
  CASE("Q8_0 data declared F32 (wrong dtype size)", 4, "past end of file", s.type1 = 0, s.ne1_0 = 32);
  CASE("offset past EOF", 4, "data offset 4096", s.off1 = 4096);
  CASE("offset 2^64-32", 4, "data offset 18446744073709551584", s.off1 = UINT64_MAX - 31);
  CASE("misaligned offset", 4, "not a multiple of the alignment 32", s.off1 = 65);
  CASE("duplicate tensor name", 4, "'token_embd.weight' appears more than once", s.name1 = "token_embd.weight",
       s.name1_len = 17, s.type1 = 0, s.ne1_0 = 4);
  CASE("tensor name of 300 bytes", 6, "string length 300", s.name1_decl = 300);
  CASE("non-UTF-8 tensor name", 4, "name of tensor 1 at offset", s.name1 = "blk.0.\x80q", s.name1_len = 8);
  CASE("tensor name with a NUL", 4, "NUL byte", s.name1 = "blk.0\0q", s.name1_len = 7);
#undef CASE

  /* the shared stories260K model: a wrong magic under a .gguf name, half a file */
  char *model = tu_shared("models/stories260K/stories260K.gguf");
  qlm_mapfile m;
  qlm_error e = {0};
  assert_int_equal(qlm_map_file(model, &m, &e), 0);
  path_in(path, sizeof path, "stories.gguf");
  uint8_t *copy = malloc(m.size);
  memcpy(copy, m.data, m.size);
  memcpy(copy, "GGML", 4);
  tu_write_file(path, copy, m.size);
  snprintf(args, sizeof args, "info '%s'", path);
  row("stories260K with magic GGML", args, 4, path, "bad magic");
  tu_write_file(path, m.data, m.size / 2);
  snprintf(args, sizeof args, "run -m '%s' -n 1", path);
  row("stories260K cut in half (qlm run)", args, 4, path, "past end of file");
  free(copy);
  qlm_unmap_file(&m);
  free(model);
  end();
}

/* ---- qlm's own quantized GGUF (qlm.* metadata, qlm type ids, companion tensors) --------- */

/* Copy src into a new GGUF at path, with tensor `drop` left out and tensor `retype` given
 * type `type`; metadata copied as is. */
static void rewrite(const qlm_source *src, const char *path, const char *drop, const char *retype, int type) {
  qlm_error e = {0};
  qlm_gguf_writer *w = qlm_gguf_writer_new(&e);
  assert_non_null(w);
  for (int i = 0; i < src->n_meta; i++) /* the writer sets general.alignment itself */
    if (strcmp(src->meta[i].key, "general.alignment") && qlm_gguf_add_meta(w, &src->meta[i], &e)) fail_msg("%s", e.msg);
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *t = &src->tensors[i];
    if (drop && !strcmp(t->name, drop)) continue;
    int ty = retype && !strcmp(t->name, retype) ? type : t->type;
    int64_t ne[4] = {t->ne[0], t->ne[1], t->ne[2], t->ne[3]};
    size_t nb = t->nbytes;
    if (ty != t->type) { /* keep the byte size honest: as many elements as the bytes hold */
      ne[0] = (int64_t)nb / (int64_t)qlm_type_row_bytes(ty, 1), ne[1] = ne[2] = ne[3] = 1;
      nb = qlm_type_row_bytes(ty, ne[0]);
    }
    int rc = qlm_gguf_add_tensor(w, t->name, ty, ty != t->type ? 1 : t->n_dims, ne, t->data, nb, &e);
    if (rc) fail_msg("%s", e.msg);
  }
  if (qlm_gguf_write(w, path, NULL, &e)) fail_msg("%s", e.msg);
  qlm_gguf_writer_free(w);
}

static void test_qlm_gguf(void **st) {
  (void)st;
  begin();
  char *model = tu_shared("models/stories260K/stories260K.gguf");
  char q[700], bad[700], args[2000];
  path_in(q, sizeof q, "nf4.gguf");
  path_in(bad, sizeof bad, "bad.gguf");
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --method nf4 --dq -t 1", model, q);
  row("qlm quantize nf4 --dq (baseline)", args, 0, NULL, NULL);
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_source_open(q, NULL, &src, &e), 0);
  const char *w = "blk.1.ffn_up.weight";
  assert_non_null(qlm_source_tensor(src, "blk.1.ffn_up.weight.absmax_q"));
  rewrite(src, bad, "blk.1.ffn_up.weight.absmax_q", NULL, 0);
  snprintf(args, sizeof args, "info '%s'", bad);
  row("companion absmax_q missing: info still describes it", args, 0, NULL, NULL);
  snprintf(args, sizeof args, "run -m '%s' -n 1 -q", bad);
  row("companion absmax_q missing: run refuses", args, 4, bad, "'blk.1.ffn_up.weight.absmax_q'");
  rewrite(src, bad, NULL, "blk.1.ffn_up.weight.absmax_q", QLM_TYPE_F32);
  row("companion absmax_q stored as F32", args, 4, bad, "'blk.1.ffn_up.weight.absmax_q' should be i8");
  rewrite(src, bad, NULL, "blk.1.ffn_up.weight.absmax2", QLM_TYPE_I8);
  row("companion absmax2 stored as i8", args, 4, bad, "'blk.1.ffn_up.weight.absmax2' should be f32");
  (void)w;
  /* the quantized weight whose data comes last in the file */
  char last_quantized[64] = "";
  const uint8_t *last = NULL;
  for (int i = 0; i < src->n_tensors; i++)
    if (src->tensors[i].type == QLM_TYPE_NF4_DQ && (const uint8_t *)src->tensors[i].data > last)
      last = src->tensors[i].data, snprintf(last_quantized, sizeof last_quantized, "%s", src->tensors[i].name);
  assert_true(last_quantized[0]);
  qlm_source_close(src);

  /* the type id of a quantized weight changed in the file: the declared bytes no longer match */
  qlm_mapfile m;
  assert_int_equal(qlm_map_file(q, &m, &e), 0);
  uint8_t *copy = malloc(m.size);
  memcpy(copy, m.data, m.size);
  /* the tensor info: u64 length, name, u32 n_dims (2), u64 ne[2], then the u32 type */
  uint8_t info[8 + 64] = {0};
  const char *name = last_quantized;
  info[0] = (uint8_t)strlen(name);
  memcpy(info + 8, name, strlen(name));
  uint8_t *p = memmem(copy, m.size, info, 8 + strlen(name));
  assert_non_null(p);
  uint8_t *tp = p + 8 + strlen(name) + 4 + 16;
  uint32_t type;
  memcpy(&type, tp, 4);
  assert_int_equal(type, QLM_TYPE_NF4_DQ);
  type = QLM_TYPE_QLM_BASE + 99;
  memcpy(tp, &type, 4);
  tu_write_file(bad, copy, m.size);
  snprintf(args, sizeof args, "info '%s'", bad);
  row("unknown qlm type id 1099", args, 4, bad, "invalid tensor type 1099");
  type = QLM_TYPE_F32; /* 4 bytes per weight instead of ~0.5 in the file's last tensor: past the end */
  memcpy(tp, &type, 4);
  tu_write_file(bad, copy, m.size);
  row("last NF4 weight relabelled F32 (wrong dtype size)", args, 4, bad, "past end of file");
  free(copy);
  qlm_unmap_file(&m);
  free(model);
  end();
}

/* ---- Hugging Face folder: config.json, safetensors, index, tokenizer.json --------------- */

typedef struct st_ent {
  char name[128], dtype[64], shape[64];
  uint64_t begin, end;
} st_ent;

/* The tiny llama (E 8, F 16, 1 layer, 2 heads, V 8, tied) as row-major F32 entries. */
static int tiny_entries(st_ent *e) {
  static const struct { const char *n; int r, c; } t[] = {
      {"model.embed_tokens.weight", 8, 8},
      {"model.layers.0.input_layernorm.weight", 8, 0},
      {"model.layers.0.self_attn.q_proj.weight", 8, 8},
      {"model.layers.0.self_attn.k_proj.weight", 8, 8},
      {"model.layers.0.self_attn.v_proj.weight", 8, 8},
      {"model.layers.0.self_attn.o_proj.weight", 8, 8},
      {"model.layers.0.post_attention_layernorm.weight", 8, 0},
      {"model.layers.0.mlp.gate_proj.weight", 16, 8},
      {"model.layers.0.mlp.up_proj.weight", 16, 8},
      {"model.layers.0.mlp.down_proj.weight", 8, 16},
      {"model.norm.weight", 8, 0},
  };
  uint64_t off = 0;
  int n = (int)(sizeof t / sizeof t[0]);
  for (int i = 0; i < n; i++) {
    snprintf(e[i].name, sizeof e[i].name, "%s", t[i].n);
    snprintf(e[i].dtype, sizeof e[i].dtype, "F32");
    if (t[i].c) snprintf(e[i].shape, sizeof e[i].shape, "[%d, %d]", t[i].r, t[i].c);
    else snprintf(e[i].shape, sizeof e[i].shape, "[%d]", t[i].r);
    e[i].begin = off;
    off += 4u * (uint64_t)t[i].r * (uint64_t)(t[i].c ? t[i].c : 1);
    e[i].end = off;
  }
  return n;
}

/* model.safetensors from entries; `raw` replaces the whole header; `lead` spaces before it
 * (shifting the data's alignment); len_override != 0 replaces the 8-byte header length. */
static void write_st(const char *path, const st_ent *e, int n, const char *raw, int lead, uint64_t len_override) {
  size_t cap = 1 << 16, k = 0;
  char *h = malloc(cap + (raw ? strlen(raw) : 0) + (size_t)lead);
  for (int i = 0; i < lead; i++) h[k++] = ' ';
  if (raw) {
    memcpy(h + k, raw, strlen(raw));
    k += strlen(raw);
  } else {
    k += (size_t)snprintf(h + k, cap - k, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++)
      k += (size_t)snprintf(h + k, cap - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                            e[i].name, e[i].dtype, e[i].shape, (unsigned long long)e[i].begin,
                            (unsigned long long)e[i].end);
    h[k++] = '}';
  }
  uint64_t data = 0;
  for (int i = 0; i < n; i++)
    if (e[i].end > data && e[i].end < (1u << 20)) data = e[i].end;
  if (data < 2912) data = 2912; /* the tiny model's size */
  uint64_t len = len_override ? len_override : k;
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fwrite(&len, 8, 1, f);
  fwrite(h, 1, k, f);
  float *d = calloc(data / 4 + 1, 4);
  for (uint64_t i = 0; i < data / 4; i++) d[i] = 0.01f * (float)(i % 97);
  fwrite(d, 1, data, f);
  fclose(f);
  free(d);
  free(h);
}

static const char *k_config =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8,\"intermediate_size\":16,\"num_hidden_layers\":1,"
    "\"num_attention_heads\":2,\"num_key_value_heads\":2,\"vocab_size\":8,\"rms_norm_eps\":1e-5,"
    "\"tie_word_embeddings\":true}";

static const char *k_tokenizer =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"d\":3,\"e\":4,\"f\":5,\"g\":6,\"h\":7},"
    "\"merges\":[\"a b\"]},\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
    "\"decoder\":{\"type\":\"ByteLevel\"}}";

static void write_text(const char *dir, const char *name, const char *text) {
  char p[800];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  tu_write_file(p, text, strlen(text));
}

/* A fresh folder "hf" with config.json, model.safetensors (entries) and tokenizer.json. */
static void hf_folder(char *dir, size_t cap, const char *config, const char *tokenizer, const st_ent *e, int n) {
  path_in(dir, cap, "hf");
  char cmd[900];
  snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
  assert_int_equal(system(cmd), 0);
  write_text(dir, "config.json", config);
  if (tokenizer) write_text(dir, "tokenizer.json", tokenizer);
  char st[800];
  snprintf(st, sizeof st, "%s/model.safetensors", dir);
  write_st(st, e, n, NULL, 0, 0);
}

/* `s` with every occurrence of `from` replaced by `to` (first occurrence only when once). */
static char *subst(const char *s, const char *from, const char *to) {
  const char *p = strstr(s, from);
  assert_non_null(p);
  char *r = malloc(strlen(s) + strlen(to) + 1);
  size_t k = (size_t)(p - s);
  memcpy(r, s, k);
  strcpy(r + k, to);
  strcat(r, p + strlen(from));
  return r;
}

/* A JSON text of `depth` nested arrays. */
static char *nested(int depth) {
  char *s = malloc(2 * (size_t)depth + 1);
  for (int i = 0; i < depth; i++) s[i] = '[', s[2 * (size_t)depth - 1 - (size_t)i] = ']';
  s[2 * depth] = 0;
  return s;
}

static void test_safetensors(void **st) {
  (void)st;
  begin();
  st_ent e[16], x[16];
  int n = tiny_entries(e);
  char dir[700], file[800], args[2000];
  hf_folder(dir, sizeof dir, k_config, k_tokenizer, e, n);
  snprintf(file, sizeof file, "%s/model.safetensors", dir);
  snprintf(args, sizeof args, "info '%s'", dir);
  row("valid tiny HF folder (baseline)", args, 0, NULL, NULL);

#define ST_CASE(label, code, needle, ...) \
  do { memcpy(x, e, sizeof e); __VA_ARGS__; write_st(file, x, n, NULL, 0, 0); row(label, args, code, file, needle); } while (0)
  ST_CASE("data_offsets past EOF", 4, "outside the data section", x[3].end = 1u << 20);
  ST_CASE("data_offsets begin > end", 4, "outside the data section", x[3].begin = x[3].end + 4);
  ST_CASE("shape/byte-size mismatch", 4, "hold 256 bytes but 72 elements", snprintf(x[2].shape, 64, "[8, 9]"));
  ST_CASE("F16 dtype with F32 byte size", 4, "need 128", snprintf(x[2].dtype, 16, "F16"));
  ST_CASE("unknown dtype", 5, "dtype F7 is not supported", snprintf(x[2].dtype, 16, "F7"));
  ST_CASE("negative dim", 4, "shape[0]", snprintf(x[2].shape, 64, "[-8, -8]"));
  ST_CASE("dim 1e300", 4, "shape[1]", snprintf(x[2].shape, 64, "[8, 1e300]"));
  ST_CASE("fractional dim", 4, "shape[0]", snprintf(x[2].shape, 64, "[2.5, 8]"));
  ST_CASE("dims whose product overflows 64 bits", 4, "overflow", snprintf(x[2].shape, 64, "[1099511627776, 1099511627776]"));
  ST_CASE("9 dims", 5, "9 dimensions", snprintf(x[2].shape, 64, "[1,1,1,1,1,1,1,8,8]"));
  ST_CASE("data_offsets of 3 numbers", 4, "data_offsets must be two", x[2].end = 0,
          snprintf(x[2].dtype, 64, "F32\",\"data_offsets\":[0,1,2],\"x\":\"y"));
  ST_CASE("duplicate tensor name", 4, "appears twice", snprintf(x[3].name, 128, "%s", x[2].name));
  ST_CASE("non-UTF-8 tensor name", 4, "not valid UTF-8 (byte 0xff", snprintf(x[3].name, 128, "model.\xff"));
  ST_CASE("tensor shape disagrees with config.json", 4, "expected [8, 8] from config.json",
          snprintf(x[2].shape, 64, "[4, 16]"));
  ST_CASE("stray tensor", 5, "'model.layers.7.mlp.up_proj.weight' is not part", snprintf(x[8].name, 128,
          "model.layers.7.mlp.up_proj.weight"));
#undef ST_CASE
  write_st(file, e, n, NULL, 1, 0);
  row("misaligned data section (legal: copied)", args, 0, NULL, NULL);
  write_st(file, e, n, NULL, 0, UINT64_MAX);
  row("header length 2^64-1", args, 4, file, "header length 18446744073709551615");
  write_st(file, e, n, NULL, 0, 5000);
  row("header length past EOF", args, 4, file, "header length 5000");
  write_st(file, e, n, "[1, 2]", 0, 0);
  row("header is an array", args, 4, file, "not a JSON object");
  write_st(file, e, n, "{\"a\": ", 0, 0);
  row("header is not JSON", args, 4, file, "not valid JSON");
  char *deep = nested(100000);
  write_st(file, e, n, deep, 0, 0);
  row("header nested 100000 deep", args, 4, file, "not valid JSON");
  free(deep);
  tu_write_file(file, "\x10\0\0", 3);
  row("file of 3 bytes", args, 4, file, "too short");
  /* truncated at every tensor's data boundary */
  for (int i = 0; i < n; i += 3) {
    write_st(file, e, n, NULL, 0, 0);
    struct stat sb;
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(truncate(file, sb.st_size - (off_t)e[n - 1].end + (off_t)e[i].end - 1), 0);
    char what[96];
    snprintf(what, sizeof what, "truncated inside tensor %d", i);
    row(what, args, 4, file, "outside the data section");
  }

  /* sharded: model.safetensors.index.json */
  hf_folder(dir, sizeof dir, k_config, NULL, e, n);
  char index[800], shard2[800];
  snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
  snprintf(shard2, sizeof shard2, "%s/model-2.safetensors", dir);
  /* two shards: the first 6 tensors in model.safetensors, the others in model-2.safetensors */
  write_st(file, e, 6, NULL, 0, 0);
  memcpy(x, e + 6, sizeof(st_ent) * (size_t)(n - 6));
  for (int i = 0; i < n - 6; i++) x[i].begin -= e[6].begin, x[i].end -= e[6].begin;
  write_st(shard2, x, n - 6, NULL, 0, 0);
  char wm[8192];
  size_t k = (size_t)snprintf(wm, sizeof wm, "{\"metadata\":{},\"weight_map\":{");
  for (int i = 0; i < n; i++)
    k += (size_t)snprintf(wm + k, sizeof wm - k, "%s\"%s\":\"%s\"", i ? "," : "", e[i].name,
                          i < 6 ? "model.safetensors" : "model-2.safetensors");
  snprintf(wm + k, sizeof wm - k, "}}");
  tu_write_file(index, wm, strlen(wm));
  row("two shards + index (baseline)", args, 0, NULL, NULL);
  char *bad = subst(wm, "\"model-2.safetensors\"", "\"../model-2.safetensors\"");
  tu_write_file(index, bad, strlen(bad));
  row("index names a shard outside the folder", args, 4, index, "plain file name");
  free(bad);
  bad = subst(wm, "\"model-2.safetensors\"", "\"model-3.safetensors\"");
  tu_write_file(index, bad, strlen(bad));
  row("index names a missing shard", args, 3, "model-3.safetensors", NULL);
  free(bad);
  bad = subst(wm, "\"model.safetensors\"", "\"model-2.safetensors\"");
  tu_write_file(index, bad, strlen(bad));
  row("index puts a tensor in the wrong shard", args, 4, index, "'model.embed_tokens.weight' in model-2.safetensors");
  free(bad);
  bad = subst(wm, "\"weight_map\":{", "\"weight_map\":[");
  tu_write_file(index, bad, strlen(bad));
  row("index is not JSON", args, 4, index, "not valid JSON");
  free(bad);
  bad = subst(wm, "\"weight_map\"", "\"weight_mop\"");
  tu_write_file(index, bad, strlen(bad));
  row("index without weight_map", args, 4, index, "no \"weight_map\"");
  free(bad);
  bad = subst(wm, "\"metadata\":{}", "\"metadata\":\"\xe0\x80\x80\"");
  tu_write_file(index, bad, strlen(bad));
  row("index with overlong UTF-8", args, 4, index, "not valid UTF-8 (byte 0xe0");
  free(bad);
  tu_write_file(index, wm, strlen(wm));
  write_st(shard2, e, n, NULL, 0, 0); /* shard 2 holds everything: duplicates across shards */
  row("tensor in two shards", args, 4, "model.safetensors", "appears twice");
  end();
}

static void test_config_json(void **st) {
  (void)st;
  begin();
  st_ent e[16];
  int n = tiny_entries(e);
  char dir[700], cfg[800], args[2000];
  hf_folder(dir, sizeof dir, k_config, NULL, e, n);
  snprintf(cfg, sizeof cfg, "%s/config.json", dir);
  snprintf(args, sizeof args, "info '%s'", dir);
  static const struct { const char *what, *from, *to, *needle; int code; } cases[] = {
      {"hidden_size missing", "\"hidden_size\":8,", "", "missing \"hidden_size\"", 4},
      {"hidden_size -8", "\"hidden_size\":8", "\"hidden_size\":-8", "\"hidden_size\" = -8", 4},
      {"hidden_size 1e30", "\"hidden_size\":8", "\"hidden_size\":1e30", "\"hidden_size\" = 1000000000000000019884624838656", 6},
      {"hidden_size \"8\" (string)", "\"hidden_size\":8", "\"hidden_size\":\"8\"", "\"hidden_size\" must be an integer", 4},
      {"num_hidden_layers 2.5", "\"num_hidden_layers\":1", "\"num_hidden_layers\":2.5", "\"num_hidden_layers\" must be an integer", 4},
      {"num_hidden_layers 2^31", "\"num_hidden_layers\":1", "\"num_hidden_layers\":2147483648", "\"num_hidden_layers\" = 2147483648", 6},
      {"vocab_size 2^53+1", "\"vocab_size\":8", "\"vocab_size\":9007199254740993", "\"vocab_size\"", 6},
      {"heads do not divide hidden_size", "\"num_attention_heads\":2", "\"num_attention_heads\":3", "not a multiple of num_attention_heads 3", 4},
      {"kv heads do not divide heads", "\"num_key_value_heads\":2", "\"num_key_value_heads\":4", "not a multiple of num_key_value_heads 4", 4},
      {"rms_norm_eps negative", "\"rms_norm_eps\":1e-5", "\"rms_norm_eps\":-1", "\"rms_norm_eps\" must be a number", 4},
      {"tie_word_embeddings 1", "\"tie_word_embeddings\":true", "\"tie_word_embeddings\":1", "\"tie_word_embeddings\" must be true or false", 4},
      {"unknown architecture", "LlamaForCausalLM", "MambaForCausalLM", "'MambaForCausalLM' is not supported", 5},
      {"rope_scaling set", "\"vocab_size\":8", "\"vocab_size\":8,\"rope_scaling\":{\"type\":\"linear\"}", "rope_scaling", 5},
      {"not JSON", "}", "", "not a valid JSON object", 4},
      {"non-UTF-8 string", "LlamaForCausalLM", "Llama\xff", "not valid UTF-8 (byte 0xff", 4},
      {"UTF-16 surrogate in UTF-8", "LlamaForCausalLM", "Llama\xed\xa0\x80", "not valid UTF-8 (byte 0xed", 4},
      {"vocab_size disagrees with the tensors", "\"vocab_size\":8", "\"vocab_size\":9", "expected [9, 8] from config.json", 4},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *c = subst(k_config, cases[i].from, cases[i].to);
    tu_write_file(cfg, c, strlen(c));
    free(c);
    row(cases[i].what, args, cases[i].code, cases[i].code == 4 && strstr(cases[i].needle, "expected") ? "model.safetensors" : cfg,
        cases[i].needle);
  }
  char *deep = nested(200000);
  char *c = subst(k_config, "\"hidden_size\":8", "\"hidden_size\":8,\"x\":");
  char *c2 = subst(c, "\"x\":", "\"x\":@");
  char *c3 = subst(c2, "@", deep);
  tu_write_file(cfg, c3, strlen(c3));
  row("config nested 200000 deep", args, 4, cfg, "not a valid JSON object");
  free(c), free(c2), free(c3), free(deep);
  /* a wide "bomb": 300000 keys (each becomes metadata hf.KEY): must load, in bounded time */
  size_t cap = 300000 * 24 + 1024, k = 0;
  char *wide = malloc(cap);
  k += (size_t)snprintf(wide, cap, "%.*s", (int)strlen(k_config) - 1, k_config);
  for (int i = 0; i < 300000; i++) k += (size_t)snprintf(wide + k, cap - k, ",\"k%d\":%d", i, i);
  snprintf(wide + k, cap - k, "}");
  tu_write_file(cfg, wide, strlen(wide));
  free(wide);
  row("config with 300000 keys (loads)", args, 0, NULL, NULL);
  /* over the 16 MiB limit */
  cap = (17u << 20);
  wide = malloc(cap + 1);
  memset(wide, ' ', cap);
  memcpy(wide, k_config, strlen(k_config));
  wide[cap] = 0;
  tu_write_file(cfg, wide, cap);
  free(wide);
  row("config of 17 MiB", args, 6, cfg, NULL);
  end();
}

static void test_tokenizer_json(void **st) {
  (void)st;
  begin();
  st_ent e[16];
  int n = tiny_entries(e);
  char dir[700], tok[800], args[2000];
  hf_folder(dir, sizeof dir, k_config, k_tokenizer, e, n);
  snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
  snprintf(args, sizeof args, "info '%s'", dir);
  row("valid tiny tokenizer.json (baseline)", args, 0, NULL, NULL);
  static const struct { const char *what, *from, *to, *needle; int code; } cases[] = {
      {"negative id", "\"h\":7", "\"h\":-7", "model.vocab['h']", 4},
      {"id 2^24", "\"h\":7", "\"h\":16777216", "model.vocab['h']", 4},
      {"fractional id", "\"h\":7", "\"h\":6.5", "model.vocab['h']", 4},
      {"id as a string", "\"h\":7", "\"h\":\"7\"", "model.vocab['h']", 4},
      {"sparse id 16777215 (no giant allocation)", "\"h\":7", "\"h\":16777215", "token id 16777215 but only 8 entries", 4},
      {"gap in ids", "\"h\":7", "\"h\":8,\"i\":9", "ids must be dense", 4},
      {"duplicate id", "\"h\":7", "\"h\":6", "token id 6 appears twice", 4},
      {"empty vocab", "\"a\":0,\"b\":1,\"c\":2,\"d\":3,\"e\":4,\"f\":5,\"g\":6,\"h\":7", "", "model.vocab is empty", 4},
      {"vocab is an array", "\"vocab\":{", "\"vocab\":[", "invalid JSON near byte offset", 4},
      {"merges is an object", "\"merges\":[\"a b\"]", "\"merges\":{}", "model.merges is not an array", 4},
      {"merge is a number", "\"merges\":[\"a b\"]", "\"merges\":[\"a b\",7]", "model.merges[1]", 4},
      {"added token without id", "\"merges\"", "\"x\":0},\"added_tokens\":[{\"content\":\"<s>\"}],\"m\":{\"merges\"",
       "added_tokens entry without a valid id", 4},
      {"model type WordPiece", "\"type\":\"BPE\"", "\"type\":\"WordPiece\"", "'WordPiece' is not supported", 5},
      {"9 tokens for vocab_size 8", "\"h\":7", "\"h\":7,\"i\":8", "9 tokens, more than the model's vocab_size 8", 4},
      {"non-UTF-8 token", "\"h\":7", "\"\xc3\x28\":7", "not valid UTF-8 (byte 0xc3 at offset", 4},
      {"code point above U+10FFFF", "\"h\":7", "\"\xf4\x90\x80\x80\":7", "not valid UTF-8 (byte 0xf4", 4},
      {"truncated", "\"decoder\":{\"type\":\"ByteLevel\"}}", "\"decoder\":{\"ty", "invalid JSON near byte offset", 4},
      {"unsupported pre-tokenizer", "\"type\":\"ByteLevel\",\"add_prefix_space\"", "\"type\":\"Whitespace\",\"add_prefix_space\"",
       "pre_tokenizer type 'Whitespace' is not supported", 5},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *t = subst(k_tokenizer, cases[i].from, cases[i].to);
    tu_write_file(tok, t, strlen(t));
    free(t);
    row(cases[i].what, args, cases[i].code, tok, cases[i].needle);
  }
  /* a pre-tokenizer Sequence nested 50000 deep */
  size_t depth = 50000, cap = depth * 48 + 512, k = 0;
  char *s = malloc(cap);
  k += (size_t)snprintf(s, cap, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":");
  for (size_t i = 0; i < depth; i++) k += (size_t)snprintf(s + k, cap - k, "{\"type\":\"Sequence\",\"pretokenizers\":[");
  for (size_t i = 0; i < depth; i++) k += (size_t)snprintf(s + k, cap - k, "]}");
  snprintf(s + k, cap - k, ",\"decoder\":{\"type\":\"ByteLevel\"}}");
  tu_write_file(tok, s, strlen(s));
  free(s);
  row("pre_tokenizer Sequence nested 50000 deep", args, 4, tok, "invalid JSON");
  end();
}

/* ---- llama2.c checkpoint and tokenizer.bin --------------------------------------------- */

/* The tiny checkpoint: dim 8, hidden 16, 1 layer, 2 heads, 2 kv heads, vocab 8, seq_len 4:
 * 744 floats after the 28-byte header.  Array ends (in bytes) go to cut[]. */
static size_t l2c_build(const int32_t hdr[7], uint8_t **out, size_t *cut, int *n_cut) {
  static const int sizes[] = {64, 8, 64, 64, 64, 64, 8, 128, 128, 128, 8, 16};
  size_t n = 28;
  *n_cut = 0;
  cut[(*n_cut)++] = 28;
  for (int i = 0; i < 12; i++) n += 4 * (size_t)sizes[i], cut[(*n_cut)++] = n;
  uint8_t *p = calloc(n, 1);
  memcpy(p, hdr, 28);
  *out = p;
  return n;
}

static void test_llama2c(void **st) {
  (void)st;
  begin();
  const int32_t good[7] = {8, 16, 1, 2, 2, 8, 4};
  uint8_t *p;
  size_t cut[16];
  int n_cut;
  size_t n = l2c_build(good, &p, cut, &n_cut);
  char path[700], args[2000], what[128];
  path_in(path, sizeof path, "model.bin"); /* no tokenizer.bin / tok*.bin beside it */
  tu_write_file(path, p, n);
  snprintf(args, sizeof args, "info '%s'", path);
  row("valid tiny checkpoint (baseline)", args, 0, NULL, NULL);
  for (size_t at = 0; at < 28; at += 9) {
    tu_write_file(path, p, at);
    snprintf(what, sizeof what, "header truncated to %zu bytes", at);
    row(what, args, 4, path, "too short for the 28-byte llama2.c header");
  }
  for (int i = 0; i < n_cut - 1; i++) {
    tu_write_file(path, p, cut[i]);
    snprintf(what, sizeof what, "truncated at array boundary %zu", cut[i]);
    row(what, args, 4, path, "implies 3004 bytes");
  }
  free(p);
  static const struct { const char *what; int field; int32_t v; int code; const char *needle; } cases[] = {
      {"dim -8", 0, -8, 4, "dim = -8 must be positive"},
      {"dim 0", 0, 0, 4, "dim = 0 must be positive"},
      {"dim 2^31-1", 0, INT32_MAX, 6, "dim = 2147483647 exceeds"},
      {"hidden_dim 2^20+1", 1, (1 << 20) + 1, 6, "hidden_dim = 1048577 exceeds"},
      {"n_layers 5000", 2, 5000, 6, "n_layers = 5000 exceeds"},
      {"n_heads 3 (does not divide dim)", 3, 3, 4, "n_heads 3"},
      {"n_kv_heads 0", 4, 0, 4, "n_kv_heads = 0"},
      {"vocab_size INT32_MIN", 5, INT32_MIN, 4, "|vocab_size| = -1"},
      {"vocab_size -8 (unshared classifier missing)", 5, -8, 4, "vocab_size -8"},
      {"seq_len 2^24+1", 6, (1 << 24) + 1, 6, "seq_len = 16777217 exceeds"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int32_t h[7];
    memcpy(h, good, sizeof h);
    h[cases[i].field] = cases[i].v;
    n = l2c_build(h, &p, cut, &n_cut);
    tu_write_file(path, p, n);
    free(p);
    row(cases[i].what, args, cases[i].code, path, cases[i].needle);
  }
  /* the largest sizes the limits allow: no 64-bit overflow, a size mismatch */
  const int32_t huge[7] = {65536, 1 << 20, 4096, 32768, 32768, 1 << 22, 1 << 24};
  n = l2c_build(huge, &p, cut, &n_cut);
  tu_write_file(path, p, n);
  free(p);
  row("largest header the limits allow", args, 4, path, "implies");

  /* tokenizer.bin: max_token_length, then per token f32 score, i32 length, bytes */
  n = l2c_build(good, &p, cut, &n_cut);
  tu_write_file(path, p, n);
  free(p);
  char tok[700];
  path_in(tok, sizeof tok, "t.bin");
  snprintf(args, sizeof args, "info '%s' --tokenizer '%s'", path, tok);
  buf b = {0};
  int32_t maxlen = 8;
  tu_put(&b, &maxlen, 4);
  for (int i = 0; i < 8; i++) {
    float sc = -(float)i;
    int32_t len = 1;
    char c = (char)('a' + i);
    tu_put(&b, &sc, 4), tu_put(&b, &len, 4), tu_put(&b, &c, 1), tu_mark(&b);
  }
  tu_write_file(tok, b.p, b.n);
  row("valid tokenizer.bin (baseline)", args, 0, NULL, NULL);
  tu_write_file(tok, b.p, b.n - 1);
  row("tokenizer.bin truncated inside the last token", args, 4, tok, "token 7 needs 1 bytes");
  tu_write_file(tok, b.p, b.mark[3]);
  row("tokenizer.bin with 4 tokens for vocab_size 8", args, 4, tok, "holds 4 tokens but the model's vocab_size is 8");
  uint8_t *lenp = b.p + b.mark[2] + 4;
  int32_t len = -1;
  memcpy(lenp, &len, 4);
  tu_write_file(tok, b.p, b.n);
  row("token length -1", args, 4, tok, "token 3: length -1");
  len = 1 << 30;
  memcpy(lenp, &len, 4);
  tu_write_file(tok, b.p, b.n);
  row("token length 2^30", args, 4, tok, "token 3: length 1073741824");
  len = 1;
  memcpy(lenp, &len, 4);
  memset(b.p, 0, 4);
  tu_write_file(tok, b.p, b.n);
  row("max_token_length 0", args, 4, tok, "max_token_length 0");
  free(b.p);
  end();
}

/* ---- selective-precision rules files (qlm quantize --rules) ----------------------------- */

static void test_rules(void **st) {
  (void)st;
  begin();
  char *model = tu_shared("models/stories260K/stories260K.gguf");
  char rules[700], out[700], args[2000];
  path_in(rules, sizeof rules, "r.rules");
  path_in(out, sizeof out, "q.gguf");
  snprintf(args, sizeof args, "quantize -m '%s' -o '%s' --method absmax --bits 8 --rules '%s' -t 1", model, out, rules);
  static const struct { const char *what, *text, *needle; int code; } cases[] = {
      {"valid rules (baseline)", "# comment\nlayers=0-1,component=attn absmax bits=4\n* f32\n", NULL, 0},
      {"unknown method", "\n* frobnicate bits=4\n", ":2: unknown method 'frobnicate'", 2},
      {"reversed layer range", "layers=5-2 absmax\n", ":1: layers=5-2", 2},
      {"layer 2^63", "layers=9223372036854775808 absmax\n", ":1: layers=9223372036854775808", 2},
      {"unknown component", "component=attn_z absmax\n", ":1: component=attn_z", 2},
      {"unknown selector", "head=3 absmax\n", ":1: unknown selector 'head'", 2},
      {"selector without action", "layers=0-1\n", ":1: 'layers=0-1': expected SELECTOR ACTION", 2},
      {"option without =", "* absmax bits\n", ":1: option 'bits' should be key=value", 2},
      {"bits=99", "* absmax bits=99\n", ":1:", 2},
      {"NUL byte", "* absmax\n* f32\0 f16\n", ":2: contains a NUL byte", 4},
      {"non-UTF-8 glob (matches nothing; allowed)", "name=\xff* f16\n", NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t len = strlen(cases[i].text);
    if (strstr(cases[i].what, "NUL")) len = 20; /* "* absmax\n* f32" NUL " f16\n" */
    tu_write_file(rules, cases[i].text, len);
    remove(out);
    row(cases[i].what, args, cases[i].code, cases[i].code ? rules : NULL, cases[i].needle);
    struct stat sb;
    if (cases[i].code && stat(out, &sb) == 0) {
      printf("       FAIL: %s: the output was written\n", cases[i].what);
      g_failed++;
    }
  }
  /* a rule line of 2000 bytes, 300 rules, a 2 MiB file */
  char *big = malloc((3u << 20) + 1);
  memset(big, 'x', 2000);
  memcpy(big, "name=", 5);
  memcpy(big + 2000, " f32\n", 6);
  tu_write_file(rules, big, strlen(big));
  row("rule line of 2000 bytes", args, 2, rules, ":1: rule longer than");
  size_t k = 0;
  for (int i = 0; i < 300; i++) k += (size_t)sprintf(big + k, "layers=%d absmax\n", i);
  tu_write_file(rules, big, k);
  row("300 rules", args, 2, rules, ":257: more than 256 rules");
  memset(big, '#', 3u << 20);
  tu_write_file(rules, big, 3u << 20);
  row("rules file of 3 MiB", args, 6, rules, NULL);
  free(big);
  free(model);
  end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gguf),         cmocka_unit_test(test_qlm_gguf),      cmocka_unit_test(test_safetensors),
      cmocka_unit_test(test_config_json),  cmocka_unit_test(test_tokenizer_json), cmocka_unit_test(test_llama2c),
      cmocka_unit_test(test_rules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
