/* test_hf.c — Hugging Face folders: the shared stories260K-hf (checked against the llama2.c
 * copy of the same model), synthetic Qwen2 / GPT-2 / F16 / BF16 / sharded folders written by
 * the test with known values, and malformed safetensors and config files. */
#include "testutil.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fp16.h"
#include "formats/safetensors.h"
#include "formats/source.h"

static void expect_error(int rc, const qlm_error *e, int code, const char *s1, const char *s2) {
  if (rc != code || (s1 && !strstr(e->msg, s1)) || (s2 && !strstr(e->msg, s2)))
    fail_msg("rc %d (want %d), message \"%s\" (want \"%s\" and \"%s\")", rc, code, e->msg, s1 ? s1 : "",
             s2 ? s2 : "");
}

static char *path_in(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

static void write_text(const char *dir, const char *name, const char *text) {
  char *p = path_in(dir, name);
  tu_write_file(p, text, strlen(text));
  free(p);
}

static void rm_dir(char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char *p = path_in(dir, de->d_name);
    unlink(p);
    free(p);
  }
  if (d) closedir(d);
  rmdir(dir);
  free(dir);
}

/* ---- a small safetensors writer ------------------------------------------------------- */

/* Value of element i of a synthetic tensor: distinct per tensor (seed) and per element. */
static float synth(int seed, int64_t i) { return (float)seed + (float)(i % 1000) * 0.0625f; }

typedef struct st_entry {
  char name[96];
  const char *dtype; /* "F32", "F16", "BF16" (or anything, written as given) */
  int nd;
  int64_t shape[4];
  int seed;
} st_entry;

typedef struct st_builder {
  int n;
  st_entry e[128];
} st_builder;

static void stb_add(st_builder *b, const char *name, const char *dtype, int seed, int nd, int64_t s0, int64_t s1) {
  assert_true(b->n < 128);
  st_entry *x = &b->e[b->n++];
  snprintf(x->name, sizeof x->name, "%s", name);
  x->dtype = dtype;
  x->nd = nd;
  x->shape[0] = s0;
  x->shape[1] = s1;
  x->seed = seed;
}

static size_t esize(const char *dtype) { return strcmp(dtype, "F32") == 0 ? 4 : 2; }

static int64_t count(const st_entry *x) {
  int64_t n = 1;
  for (int i = 0; i < x->nd; i++) n *= x->shape[i];
  return n;
}

/* Write entries [from, to) of b as one safetensors file; `pad` extra header bytes before the
 * data (to misalign it on purpose). */
static void stb_write_range(const st_builder *b, int from, int to, const char *path, int pad) {
  cJSON *root = cJSON_CreateObject();
  cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
  cJSON_AddStringToObject(meta, "format", "pt");
  size_t off = 0;
  for (int i = from; i < to; i++) {
    const st_entry *x = &b->e[i];
    cJSON *t = cJSON_AddObjectToObject(root, x->name);
    cJSON_AddStringToObject(t, "dtype", x->dtype);
    cJSON *sh = cJSON_AddArrayToObject(t, "shape");
    for (int d = 0; d < x->nd; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)x->shape[d]));
    size_t nb = (size_t)count(x) * esize(x->dtype);
    cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
    cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(o, cJSON_CreateNumber((double)(off + nb)));
    off += nb;
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  size_t jn = strlen(json);
  size_t hn = (jn + 7) / 8 * 8 + (size_t)pad; /* padded with spaces, as the format allows */
  unsigned char *buf = calloc(1, 8 + hn + off);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hn >> (8 * i));
  memset(buf + 8, ' ', hn);
  memcpy(buf + 8, json, jn);
  free(json);
  size_t p = 8 + hn;
  for (int i = from; i < to; i++) {
    const st_entry *x = &b->e[i];
    for (int64_t k = 0; k < count(x); k++) {
      float f = synth(x->seed, k);
      if (strcmp(x->dtype, "F32") == 0) {
        memcpy(buf + p, &f, 4);
        p += 4;
      } else {
        uint16_t h = strcmp(x->dtype, "BF16") == 0 ? qlm_f32_to_bf16(f) : qlm_f32_to_f16(f);
        memcpy(buf + p, &h, 2);
        p += 2;
      }
    }
  }
  tu_write_file(path, buf, 8 + hn + off);
  free(buf);
}

static void stb_write(const st_builder *b, const char *dir) {
  char *p = path_in(dir, "model.safetensors");
  stb_write_range(b, 0, b->n, p, 0);
  free(p);
}

/* ---- tiny model folders ------------------------------------------------------------------ */

/* llama/qwen2: hidden 8, 2 heads of 4, 1 kv head, ff 12, 2 layers, vocab 10. */
enum { E = 8, NH = 2, NKV = 1, HD = 4, FF = 12, NL = 2, NV = 10 };

static const char *llama_config =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
    " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10,"
    " \"max_position_embeddings\": 16, \"rms_norm_eps\": 1e-06, \"rope_theta\": 500000.0,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"float16\"}";

static void add_llama_tensors_v(st_builder *b, const char *dtype, int qwen2_bias, int lm_head, int nv) {
  char n[96];
  int seed = 1;
  stb_add(b, "model.embed_tokens.weight", dtype, seed++, 2, nv, E);
  for (int l = 0; l < NL; l++) {
#define T(sfx, nd, a, c)                                         \
  do {                                                           \
    snprintf(n, sizeof n, "model.layers.%d.%s", l, sfx);         \
    stb_add(b, n, dtype, seed++, nd, a, c);                      \
  } while (0)
    T("input_layernorm.weight", 1, E, 1);
    T("self_attn.q_proj.weight", 2, NH * HD, E);
    T("self_attn.k_proj.weight", 2, NKV * HD, E);
    T("self_attn.v_proj.weight", 2, NKV * HD, E);
    if (qwen2_bias) {
      T("self_attn.q_proj.bias", 1, NH * HD, 1);
      T("self_attn.k_proj.bias", 1, NKV * HD, 1);
      T("self_attn.v_proj.bias", 1, NKV * HD, 1);
    }
    T("self_attn.o_proj.weight", 2, E, NH * HD);
    T("post_attention_layernorm.weight", 1, E, 1);
    T("mlp.gate_proj.weight", 2, FF, E);
    T("mlp.up_proj.weight", 2, FF, E);
    T("mlp.down_proj.weight", 2, E, FF);
#undef T
  }
  stb_add(b, "model.norm.weight", dtype, seed++, 1, E, 1);
  if (lm_head) stb_add(b, "lm_head.weight", dtype, seed++, 2, nv, E);
}

static void add_llama_tensors(st_builder *b, const char *dtype, int qwen2_bias, int lm_head) {
  add_llama_tensors_v(b, dtype, qwen2_bias, lm_head, NV);
}

static const st_entry *find_entry(const st_builder *b, const char *name) {
  for (int i = 0; i < b->n; i++)
    if (strcmp(b->e[i].name, name) == 0) return &b->e[i];
  fail_msg("no entry %s", name);
  return NULL;
}

/* Element k of canonical tensor t (any of F32/F16/BF16) as float. */
static float elem(const qlm_tensor *t, int64_t k) {
  if (t->type == QLM_TYPE_F32) return ((const float *)t->data)[k];
  uint16_t h = ((const uint16_t *)t->data)[k];
  return t->type == QLM_TYPE_BF16 ? qlm_bf16_to_f32(h) : qlm_f16_to_f32(h);
}

/* The canonical tensor holds the synthetic values of HF tensor `hf` (same order), of the given dtype. */
static void check_values(const qlm_source *src, const st_builder *b, const char *canon, const char *hf, int type) {
  const qlm_tensor *t = qlm_source_tensor(src, canon);
  if (!t) fail_msg("missing canonical tensor %s", canon);
  const st_entry *x = find_entry(b, hf);
  assert_int_equal(t->type, type);
  assert_int_equal(t->n_dims, x->nd);
  assert_int_equal(t->ne[0], x->shape[x->nd - 1]); /* row-major [rows, cols] -> ne[0] = cols */
  if (x->nd == 2) assert_int_equal(t->ne[1], x->shape[0]);
  assert_int_equal(t->nbytes, (size_t)count(x) * esize(x->dtype));
  for (int64_t k = 0; k < count(x); k++) {
    float want = synth(x->seed, k);
    if (type == QLM_TYPE_F16) want = qlm_f16_to_f32(qlm_f32_to_f16(want));
    if (type == QLM_TYPE_BF16) want = qlm_bf16_to_f32(qlm_f32_to_bf16(want));
    if (elem(t, k) != want) fail_msg("%s[%lld] = %g, want %g", canon, (long long)k, elem(t, k), want);
  }
}

static void check_llama_values(const qlm_source *src, const st_builder *b, int type, int bias) {
  char c[64], h[96];
  check_values(src, b, "token_embd.weight", "model.embed_tokens.weight", type);
  check_values(src, b, "output_norm.weight", "model.norm.weight", type);
  static const char *pairs[][2] = {
      {"attn_norm.weight", "input_layernorm.weight"}, {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},   {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},    {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},    {"attn_q.bias", "self_attn.q_proj.bias"},
      {"attn_k.bias", "self_attn.k_proj.bias"},       {"attn_v.bias", "self_attn.v_proj.bias"},
  };
  for (int l = 0; l < NL; l++)
    for (int i = 0; i < (bias ? 12 : 9); i++) {
      snprintf(c, sizeof c, "blk.%d.%s", l, pairs[i][0]);
      snprintf(h, sizeof h, "model.layers.%d.%s", l, pairs[i][1]);
      check_values(src, b, c, h, type);
    }
}

/* ---- stories260K ------------------------------------------------------------------------- */

static void test_stories_hf(void **st) {
  (void)st;
  char *dir = tu_shared("models/stories260K-hf");
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_source_open(dir, NULL, &src, &e), QLM_OK);
  assert_string_equal(src->format, "hf");
  tu_check_stories260k_hparams(&src->hp, 512, QLM_ROPE_NEOX, 1);
  assert_int_equal(src->n_tensors, 47); /* the file's 48 tensors map 1:1 ... */
  assert_int_equal(qlm_source_n_params(src), 260032);
  assert_int_equal(src->vocab.n_tokens, 0); /* no tokenizer files in this folder */
  /* every canonical tensor with its documented shape */
  static const struct { const char *sfx; int64_t ne0, ne1; } L[] = {
      {"attn_norm.weight", 64, 1},  {"attn_q.weight", 64, 64},  {"attn_k.weight", 64, 32},
      {"attn_v.weight", 64, 32},    {"attn_output.weight", 64, 64}, {"ffn_norm.weight", 64, 1},
      {"ffn_gate.weight", 64, 172}, {"ffn_up.weight", 64, 172}, {"ffn_down.weight", 172, 64},
  };
  for (int l = 0; l < 5; l++)
    for (int i = 0; i < 9; i++) {
      char n[64];
      snprintf(n, sizeof n, "blk.%d.%s", l, L[i].sfx);
      const qlm_tensor *t = qlm_source_tensor(src, n);
      if (!t) fail_msg("missing %s", n);
      assert_int_equal(t->type, QLM_TYPE_F32);
      assert_int_equal(t->ne[0], L[i].ne0);
      assert_int_equal(t->ne[1], L[i].ne1);
      assert_int_equal(t->n_dims, L[i].ne1 == 1 ? 1 : 2);
    }
  const qlm_tensor *t = qlm_source_tensor(src, "token_embd.weight");
  assert_int_equal(t->ne[0], 64);
  assert_int_equal(t->ne[1], 512);
  assert_null(qlm_source_tensor(src, "output.weight"));
  const qlm_meta *m = qlm_source_meta(src, "hf.hidden_size");
  assert_non_null(m);
  assert_int_equal(m->type, QLM_META_I64);
  assert_int_equal(m->v.i, 64);
  m = qlm_source_meta(src, "hf.rms_norm_eps");
  assert_int_equal(m->type, QLM_META_F64);
  assert_float_equal(m->v.f, 1e-5, 1e-12);
  m = qlm_source_meta(src, "hf.hidden_act");
  assert_string_equal(m->v.s, "silu");
  assert_string_equal(qlm_source_meta(src, "general.architecture")->v.s, "llama");
  qlm_source_close(src);
  free(dir);
}

/* HF and llama2.c copies of stories260K hold the same weights; q/k rows are permuted into
 * the rotate-half layout by HF's converter: HF row (h, j*hd/2 + i) = interleaved row (h, 2i + j). */
static void test_stories_hf_vs_bin(void **st) {
  (void)st;
  char *dir = tu_shared("models/stories260K-hf"), *bin = tu_shared("models/stories260K/stories260K.bin");
  qlm_source *hf, *l2;
  qlm_error e = {0};
  assert_int_equal(qlm_hf_open(dir, NULL, &hf, &e), QLM_OK);
  assert_int_equal(qlm_llama2c_open(bin, NULL, &l2, &e), QLM_OK);
  assert_int_equal(hf->n_tensors, l2->n_tensors);
  int permuted = 0;
  for (int i = 0; i < l2->n_tensors; i++) {
    const qlm_tensor *b = &l2->tensors[i], *h = qlm_source_tensor(hf, b->name);
    if (!h) fail_msg("HF lacks %s", b->name);
    assert_int_equal(h->ne[0], b->ne[0]);
    assert_int_equal(h->ne[1], b->ne[1]);
    assert_int_equal(h->nbytes, b->nbytes);
    bool qk = strstr(b->name, "attn_q.weight") || strstr(b->name, "attn_k.weight");
    if (!qk) {
      if (memcmp(h->data, b->data, b->nbytes) != 0) fail_msg("%s differs between HF and llama2.c", b->name);
      continue;
    }
    const float *hw = h->data, *bw = b->data;
    int64_t cols = b->ne[0], rows = b->ne[1], hd = 8;
    for (int64_t r = 0; r < rows; r++) {
      int64_t head = r / hd, k = r % hd, j = k / (hd / 2), ii = k % (hd / 2);
      int64_t src_row = head * hd + 2 * ii + j;
      if (memcmp(hw + r * cols, bw + src_row * cols, (size_t)cols * 4) != 0)
        fail_msg("%s: HF row %lld != interleaved row %lld", b->name, (long long)r, (long long)src_row);
    }
    /* and the permutation is not the identity here (the test would be vacuous otherwise) */
    permuted += memcmp(hw, bw, b->nbytes) != 0;
  }
  assert_int_equal(permuted, 10);
  qlm_source_close(hf);
  qlm_source_close(l2);
  free(dir);
  free(bin);
}

/* ---- synthetic folders ------------------------------------------------------------------- */

static void test_llama_dtypes(void **st) {
  (void)st;
  const char *dtypes[3] = {"F32", "F16", "BF16"};
  const int types[3] = {QLM_TYPE_F32, QLM_TYPE_F16, QLM_TYPE_BF16};
  for (int d = 0; d < 3; d++) {
    char *dir = tu_tmpdir();
    st_builder b = {0};
    add_llama_tensors(&b, dtypes[d], 0, 1);
    stb_write(&b, dir);
    write_text(dir, "config.json", llama_config);
    qlm_source *src;
    qlm_error e = {0};
    assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
    assert_int_equal(src->hp.arch, QLM_ARCH_LLAMA);
    assert_false(src->hp.tied_embeddings);
    assert_float_equal(src->hp.rope_theta, 500000.0f, 0);
    assert_float_equal(src->hp.norm_eps, 1e-6f, 0);
    assert_int_equal(src->hp.n_ctx, 16);
    assert_int_equal(src->n_tensors, 1 + NL * 9 + 2);
    check_llama_values(src, &b, types[d], 0);
    check_values(src, &b, "output.weight", "lm_head.weight", types[d]);
    qlm_source_close(src);
    rm_dir(dir);
  }
}

static void test_qwen2_bias(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  st_builder b = {0};
  add_llama_tensors(&b, "F32", 1, 0);
  stb_write(&b, dir);
  write_text(dir, "config.json",
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
             " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
             " \"vocab_size\": 10, \"max_position_embeddings\": 32, \"rms_norm_eps\": 1e-06,"
             " \"rope_theta\": 1000000.0, \"tie_word_embeddings\": true}");
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
  assert_int_equal(src->hp.arch, QLM_ARCH_QWEN2);
  assert_int_equal(src->hp.rope_style, QLM_ROPE_NEOX);
  assert_true(src->hp.tied_embeddings);
  assert_int_equal(src->n_tensors, 1 + NL * 12 + 1);
  check_llama_values(src, &b, QLM_TYPE_F32, 1);
  assert_string_equal(qlm_source_meta(src, "general.architecture")->v.s, "qwen2");
  qlm_source_close(src);

  /* the same tensors under a llama config: the biases are not part of a llama model */
  write_text(dir, "config.json", llama_config);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EUNSUPPORTED, "model.safetensors", "_proj.bias");
  /* and a Qwen2 config without the biases: missing tensor */
  st_builder b2 = {0};
  add_llama_tensors(&b2, "F32", 0, 0);
  stb_write(&b2, dir);
  write_text(dir, "config.json",
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
             " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10}");
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "blk.0.attn_q.bias", "missing");
  rm_dir(dir);
}

/* GPT-2: n_embd 4, 2 heads, 1 layer, 6 positions, vocab 7; n_inner absent -> 16. */
static void test_gpt2(void **st) {
  (void)st;
  for (int prefixed = 0; prefixed < 2; prefixed++) {
    char *dir = tu_tmpdir();
    const char *p = prefixed ? "transformer." : "";
    st_builder b = {0};
    char n[96];
#define G(name, nd, a, c, seed)                 \
  do {                                          \
    snprintf(n, sizeof n, "%s%s", p, name);     \
    stb_add(&b, n, "F32", seed, nd, a, c);      \
  } while (0)
    G("wte.weight", 2, 7, 4, 1);
    G("wpe.weight", 2, 6, 4, 2);
    G("h.0.ln_1.weight", 1, 4, 1, 3);
    G("h.0.ln_1.bias", 1, 4, 1, 4);
    G("h.0.attn.c_attn.weight", 2, 4, 12, 5); /* Conv1D: [in, out] */
    G("h.0.attn.c_attn.bias", 1, 12, 1, 6);
    G("h.0.attn.c_proj.weight", 2, 4, 4, 7);
    G("h.0.attn.c_proj.bias", 1, 4, 1, 8);
    G("h.0.attn.bias", 2, 6, 6, 99); /* causal-mask buffer: skipped */
    G("h.0.ln_2.weight", 1, 4, 1, 9);
    G("h.0.ln_2.bias", 1, 4, 1, 10);
    G("h.0.mlp.c_fc.weight", 2, 4, 16, 11);
    G("h.0.mlp.c_fc.bias", 1, 16, 1, 12);
    G("h.0.mlp.c_proj.weight", 2, 16, 4, 13);
    G("h.0.mlp.c_proj.bias", 1, 4, 1, 14);
    G("ln_f.weight", 1, 4, 1, 15);
    G("ln_f.bias", 1, 4, 1, 16);
#undef G
    stb_write(&b, dir);
    write_text(dir, "config.json",
               "{\"architectures\": [\"GPT2LMHeadModel\"], \"n_embd\": 4, \"n_layer\": 1, \"n_head\": 2,"
               " \"n_positions\": 6, \"n_inner\": null, \"layer_norm_epsilon\": 1e-05, \"vocab_size\": 7}");
    qlm_source *src;
    qlm_error e = {0};
    assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
    const qlm_hparams *hp = &src->hp;
    assert_int_equal(hp->arch, QLM_ARCH_GPT2);
    assert_int_equal(hp->n_embd, 4);
    assert_int_equal(hp->n_ff, 16);
    assert_int_equal(hp->n_ctx, 6);
    assert_int_equal(hp->head_dim, 2);
    assert_int_equal(hp->rope_style, QLM_ROPE_NONE);
    assert_true(hp->tied_embeddings);
    assert_int_equal(src->n_tensors, 2 + 12 + 2);
    char hfname[96];
    snprintf(hfname, sizeof hfname, "%swte.weight", p);
    check_values(src, &b, "token_embd.weight", hfname, QLM_TYPE_F32);
    snprintf(hfname, sizeof hfname, "%swpe.weight", p);
    check_values(src, &b, "position_embd.weight", hfname, QLM_TYPE_F32);
    snprintf(hfname, sizeof hfname, "%sh.0.attn.c_attn.bias", p);
    check_values(src, &b, "blk.0.attn_qkv.bias", hfname, QLM_TYPE_F32);
    snprintf(hfname, sizeof hfname, "%sln_f.bias", p);
    check_values(src, &b, "output_norm.bias", hfname, QLM_TYPE_F32);
    /* Conv1D weights: stored W[i][o] at i*out + o; canonical ne = [in, out], element (i, o) at o*in + i */
    static const struct { const char *canon; int in, out, seed; } C[] = {
        {"blk.0.attn_qkv.weight", 4, 12, 5}, {"blk.0.attn_output.weight", 4, 4, 7},
        {"blk.0.ffn_up.weight", 4, 16, 11},  {"blk.0.ffn_down.weight", 16, 4, 13},
    };
    for (int c = 0; c < 4; c++) {
      const qlm_tensor *t = qlm_source_tensor(src, C[c].canon);
      assert_non_null(t);
      assert_int_equal(t->ne[0], C[c].in);
      assert_int_equal(t->ne[1], C[c].out);
      for (int i = 0; i < C[c].in; i++)
        for (int o = 0; o < C[c].out; o++)
          assert_true(((const float *)t->data)[o * C[c].in + i] == synth(C[c].seed, (int64_t)i * C[c].out + o));
    }
    qlm_source_close(src);
    if (!prefixed) {
      /* the transposed copies (768 bytes of Conv1D weights here) are checked before any is made
       * (formats/hf.c check_transposes): refused under a smaller budget, naming the folder and the
       * largest tensor; loaded under a larger one */
      setenv("QLM_MEM_AVAILABLE", "700", 1);
      e = (qlm_error){0};
      assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_ELIMIT);
      assert_non_null(strstr(e.msg, dir));
      assert_non_null(strstr(e.msg, "4 GPT-2 Conv1D weights transposed"));
      assert_true(strstr(e.msg, "h.0.mlp.c_fc.weight") || strstr(e.msg, "h.0.mlp.c_proj.weight"));
      setenv("QLM_MEM_AVAILABLE", "100000", 1);
      assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
      qlm_source_close(src);
      unsetenv("QLM_MEM_AVAILABLE");
    }
    rm_dir(dir);
  }
}

static void test_sharded(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  st_builder b = {0};
  add_llama_tensors(&b, "BF16", 0, 1);
  int half = b.n / 2;
  char *s1 = path_in(dir, "model-00001-of-00002.safetensors"), *s2 = path_in(dir, "model-00002-of-00002.safetensors");
  stb_write_range(&b, 0, half, s1, 0);
  stb_write_range(&b, half, b.n, s2, 0);
  write_text(dir, "config.json", llama_config);
  /* index */
  cJSON *root = cJSON_CreateObject(), *wm = cJSON_AddObjectToObject(root, "weight_map");
  cJSON_AddObjectToObject(root, "metadata");
  for (int i = 0; i < b.n; i++)
    cJSON_AddStringToObject(wm, b.e[i].name, i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
  char *json = cJSON_Print(root);
  write_text(dir, "model.safetensors.index.json", json);
  free(json);
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
  check_llama_values(src, &b, QLM_TYPE_BF16, 0);
  check_values(src, &b, "output.weight", "lm_head.weight", QLM_TYPE_BF16);
  qlm_source_close(src);

  /* the index places a tensor in the wrong shard */
  cJSON_ReplaceItemInObject(wm, b.e[0].name, cJSON_CreateString("model-00002-of-00002.safetensors"));
  json = cJSON_Print(root);
  write_text(dir, "model.safetensors.index.json", json);
  free(json);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "index.json", b.e[0].name);
  /* a shard name that escapes the folder */
  cJSON_ReplaceItemInObject(wm, b.e[0].name, cJSON_CreateString("../model-00001-of-00002.safetensors"));
  json = cJSON_Print(root);
  write_text(dir, "model.safetensors.index.json", json);
  free(json);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "index.json", "plain file name");
  cJSON_Delete(root);
  /* the same tensor in both shards */
  write_text(dir, "model.safetensors.index.json",
             "{\"weight_map\": {\"model.norm.weight\": \"model-00001-of-00002.safetensors\","
             " \"lm_head.weight\": \"model-00002-of-00002.safetensors\"}}");
  stb_write_range(&b, half - 1, b.n, s2, 0); /* shard 2 now repeats shard 1's last tensor */
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "appears twice", b.e[half - 1].name);
  /* index that is not JSON */
  write_text(dir, "model.safetensors.index.json", "{\"weight_map\": ");
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "index.json", "JSON");
  free(s1);
  free(s2);
  rm_dir(dir);
}

/* tokenizer.json: given explicitly, or found in the folder; special ids from config.json /
 * generation_config.json, overridden by tokenizer_config.json. SmolLM2's tokenizer has
 * <|endoftext|> = 0, <|im_start|> = 1, <|im_end|> = 2. */
static void copy_file(const char *from, const char *to) {
  FILE *f = fopen(from, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  tu_write_file(to, buf, (size_t)n);
  free(buf);
}

static void test_tokenizer(void **st) {
  (void)st;
  char *dir = tu_tmpdir(), *tj = tu_shared("tokenizers/smollm2-135m/tokenizer.json");
  st_builder b = {0};
  add_llama_tensors_v(&b, "F32", 0, 0, 49152);
  stb_write(&b, dir);
  write_text(dir, "config.json",
             "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
             " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
             " \"vocab_size\": 49152, \"bos_token_id\": 1, \"eos_token_id\": 2}");
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_hf_open(dir, tj, &src, &e), QLM_OK);
  assert_int_equal(src->vocab.n_tokens, 49152);
  assert_int_equal(src->vocab.kind, QLM_TOK_BPE);
  assert_int_equal(src->vocab.bos_id, 1);
  assert_int_equal(src->vocab.eos_id, 2);
  qlm_source_close(src);

  /* found in the folder; generation_config.json overrides config.json's ids */
  char *local = path_in(dir, "tokenizer.json");
  copy_file(tj, local);
  write_text(dir, "generation_config.json", "{\"bos_token_id\": 0, \"eos_token_id\": [0, 2]}");
  assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
  assert_int_equal(src->vocab.n_tokens, 49152);
  assert_int_equal(src->vocab.bos_id, 0);
  assert_int_equal(src->vocab.eos_id, 0);
  qlm_source_close(src);
  /* tokenizer_config.json has the last word */
  write_text(dir, "tokenizer_config.json", "{\"bos_token\": \"<|im_start|>\", \"eos_token\": {\"content\": \"<|im_end|>\"}}");
  assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
  assert_int_equal(src->vocab.bos_id, 1);
  assert_int_equal(src->vocab.eos_id, 2);
  qlm_source_close(src);
  /* a broken tokenizer.json is an error naming it */
  write_text(dir, "tokenizer.json", "{\"model\": ");
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "tokenizer.json", NULL);
  /* a tokenizer larger than the model's vocabulary */
  write_text(dir, "config.json", llama_config);
  st_builder b2 = {0};
  add_llama_tensors(&b2, "F32", 0, 1);
  stb_write(&b2, dir);
  expect_error(qlm_hf_open(dir, tj, &src, &e), &e, QLM_EFORMAT, "tokenizer.json", "vocab_size 10");
  /* an explicit tokenizer that does not exist */
  expect_error(qlm_hf_open(dir, "/nonexistent/tokenizer.json", &src, &e), &e, QLM_EIO, "/nonexistent/tokenizer.json",
               NULL);
  free(local);
  free(tj);
  rm_dir(dir);
}

/* Data at an offset that is not a multiple of 4 still reads correctly (aligned copy). */
static void test_misaligned(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  st_builder b = {0};
  add_llama_tensors(&b, "F32", 0, 0);
  char *p = path_in(dir, "model.safetensors");
  stb_write_range(&b, 0, b.n, p, 3);
  free(p);
  write_text(dir, "config.json", llama_config);
  qlm_source *src;
  qlm_error e = {0};
  assert_int_equal(qlm_hf_open(dir, NULL, &src, &e), QLM_OK);
  assert_true(src->hp.tied_embeddings); /* no lm_head: tied even though the config says otherwise */
  for (int i = 0; i < src->n_tensors; i++) assert_int_equal((uintptr_t)src->tensors[i].data % 4, 0);
  check_llama_values(src, &b, QLM_TYPE_F32, 0);
  qlm_source_close(src);
  rm_dir(dir);
}

/* ---- malformed inputs ---------------------------------------------------------------------- */

/* Write model.safetensors with the given JSON header, `ndata` zero bytes of data, and a header
 * length field of `hlen` (0: the JSON's real length). */
static void write_raw(const char *dir, const char *json, size_t ndata, uint64_t hlen) {
  size_t jn = strlen(json), n = 8 + jn + ndata;
  unsigned char *buf = calloc(1, n);
  if (!hlen) hlen = jn;
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hlen >> (8 * i));
  memcpy(buf + 8, json, jn);
  char *p = path_in(dir, "model.safetensors");
  tu_write_file(p, buf, n);
  free(p);
  free(buf);
}

static void test_malformed_safetensors(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  char *file = path_in(dir, "model.safetensors");
  qlm_st_set s = {0};
  qlm_error e = {0};
  const char *ok = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}}";
  write_raw(dir, ok, 24, 0);
  assert_int_equal(qlm_st_add_file(&s, file, &e), QLM_OK);
  assert_int_equal(s.n_tensors, 1);
  assert_int_equal(s.tensors[0].shape[0], 2);
  assert_int_equal(s.tensors[0].shape[1], 3);
  qlm_st_free(&s);

  struct { const char *json; size_t ndata; uint64_t hlen; int code; const char *msg; } cases[] = {
      {ok, 24, 1000, QLM_EFORMAT, "past end of file"},
      {ok, 24, ~0ull, QLM_EFORMAT, "past end of file"},
      {"{\"a\": {\"dtype\": \"F32\", ", 24, 0, QLM_EFORMAT, "not valid JSON"},
      {"[1, 2]", 0, 0, QLM_EFORMAT, "not a JSON object"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 24]}}", 20, 0, QLM_EFORMAT,
       "outside the data section"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [8, 4]}}", 24, 0, QLM_EFORMAT,
       "outside the data section"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 24]}}", 24, 0, QLM_EFORMAT,
       "need 16"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], \"data_offsets\": [0, 24]}}", 24, 0,
       QLM_EFORMAT, "overflow"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-2, 3], \"data_offsets\": [0, 24]}}", 24, 0, QLM_EFORMAT,
       "shape[0]"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2.5, 3], \"data_offsets\": [0, 24]}}", 24, 0, QLM_EFORMAT,
       "shape[0]"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,6], \"data_offsets\": [0, 24]}}", 24, 0, QLM_EUNSUPPORTED,
       "dimensions"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [6], \"data_offsets\": [0]}}", 24, 0, QLM_EFORMAT, "data_offsets"},
      {"{\"a\": {\"dtype\": 7, \"shape\": [6], \"data_offsets\": [0, 24]}}", 24, 0, QLM_EFORMAT, "dtype"},
      {"{\"a\": 5}", 24, 0, QLM_EFORMAT, "not an object"},
      {"{\"a\": {\"dtype\": \"F32\", \"shape\": [6], \"data_offsets\": [0, 24]},"
       " \"a\": {\"dtype\": \"F32\", \"shape\": [6], \"data_offsets\": [0, 24]}}", 24, 0, QLM_EFORMAT, "appears twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_raw(dir, cases[i].json, cases[i].ndata, cases[i].hlen);
    memset(&s, 0, sizeof s);
    int rc = qlm_st_add_file(&s, file, &e);
    qlm_st_free(&s);
    if (rc != cases[i].code || !strstr(e.msg, cases[i].msg) || !strstr(e.msg, "model.safetensors"))
      fail_msg("case %zu: rc %d, \"%s\" (want %d, \"%s\")", i, rc, e.msg, cases[i].code, cases[i].msg);
  }
  /* shorter than the length field */
  tu_write_file(file, "abc", 3);
  expect_error(qlm_st_add_file(&s, file, &e), &e, QLM_EFORMAT, "model.safetensors", "too short");
  qlm_st_free(&s);
  free(file);
  rm_dir(dir);
}

static void test_malformed_folder(void **st) {
  (void)st;
  char *dir = tu_tmpdir();
  qlm_source *src = (qlm_source *)1;
  qlm_error e = {0};
  /* no config.json */
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EIO, "config.json", NULL);
  assert_null(src);
  /* config.json without weights */
  write_text(dir, "config.json", llama_config);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EIO, "model.safetensors", NULL);

  st_builder b = {0};
  add_llama_tensors(&b, "F32", 0, 1);
  stb_write(&b, dir);
  struct { const char *config; int code; const char *m1, *m2; } cfgs[] = {
      {"{\"architectures\": [\"FalconForCausalLM\"], \"hidden_size\": 8}", QLM_EUNSUPPORTED, "config.json",
       "FalconForCausalLM"},
      {"{\"hidden_size\": 8}", QLM_EUNSUPPORTED, "config.json", "architecture"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], ", QLM_EFORMAT, "config.json", "JSON"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"eight\"}", QLM_EFORMAT, "config.json",
       "hidden_size"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12}", QLM_EFORMAT,
       "config.json", "num_hidden_layers"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 2000000000, \"intermediate_size\": 12,"
       " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"vocab_size\": 10}",
       QLM_ELIMIT, "config.json", "hidden_size"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
       " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 3, \"vocab_size\": 10}",
       QLM_EFORMAT, "config.json", "num_key_value_heads"},
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
       " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10,"
       " \"rope_scaling\": {\"type\": \"llama3\"}}",
       QLM_EUNSUPPORTED, "config.json", "rope_scaling"},
      /* shapes that disagree with the tensors: wrong shape named with tensor and both shapes */
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 16,"
       " \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10}",
       QLM_EFORMAT, "model.layers.0.mlp.down_proj", "expected [8, 16]"},
      /* 3 layers configured, 2 in the file */
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
       " \"num_hidden_layers\": 3, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10}",
       QLM_EFORMAT, "blk.2.", "missing"},
      /* 1 layer configured, 2 in the file */
      {"{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, \"intermediate_size\": 12,"
       " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"vocab_size\": 10}",
       QLM_EUNSUPPORTED, "model.layers.1.", "1 layers"},
  };
  for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
    write_text(dir, "config.json", cfgs[i].config);
    int rc = qlm_hf_open(dir, NULL, &src, &e);
    if (rc != cfgs[i].code || !strstr(e.msg, cfgs[i].m1) || !strstr(e.msg, cfgs[i].m2))
      fail_msg("config %zu: rc %d, \"%s\" (want %d, \"%s\", \"%s\")", i, rc, e.msg, cfgs[i].code, cfgs[i].m1,
               cfgs[i].m2);
    assert_null(src);
  }
  write_text(dir, "config.json", llama_config);

  /* a tensor qlm does not know, a missing one, and an unsupported dtype */
  st_builder b2 = b;
  snprintf(b2.e[3].name, sizeof b2.e[3].name, "model.layers.0.self_attn.qq_proj.weight");
  stb_write(&b2, dir);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EUNSUPPORTED, "model.safetensors", "qq_proj");
  b2 = b;
  b2.e[4] = b2.e[--b2.n]; /* drop one tensor (v_proj of layer 0) */
  stb_write(&b2, dir);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "blk.0.attn_v.weight", "missing");
  b2 = b;
  b2.e[2].dtype = "I16"; /* same element size as F16, so the byte count matches */
  stb_write(&b2, dir);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EUNSUPPORTED, b2.e[2].name, "I16");
  b2.e[2].dtype = "Q9_ZZ"; /* unknown dtype: unsupported, naming it */
  stb_write(&b2, dir);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EUNSUPPORTED, b2.e[2].name, "Q9_ZZ");
  /* a 2-D norm */
  b2 = b;
  b2.e[1].nd = 2;
  b2.e[1].shape[0] = 1;
  b2.e[1].shape[1] = E;
  stb_write(&b2, dir);
  expect_error(qlm_hf_open(dir, NULL, &src, &e), &e, QLM_EFORMAT, "input_layernorm", "shape [1, 8], expected [8]");
  rm_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stories_hf),
      cmocka_unit_test(test_stories_hf_vs_bin),
      cmocka_unit_test(test_llama_dtypes),
      cmocka_unit_test(test_qwen2_bias),
      cmocka_unit_test(test_gpt2),
      cmocka_unit_test(test_sharded),
      cmocka_unit_test(test_tokenizer),
      cmocka_unit_test(test_misaligned),
      cmocka_unit_test(test_malformed_safetensors),
      cmocka_unit_test(test_malformed_folder),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
