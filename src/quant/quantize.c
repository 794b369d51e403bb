/* quantize.c — the model-level quantization driver; rules in quantize.h.
 *
 * Phase 1 (timed): every tensor is dequantized to f32, permuted if its RoPE layout must change,
 * converted to its output type by the llama.cpp-exact reference quantizers (rows split over
 * threads), and measured by dequantizing the result again.  Phase 2: the metadata (copied from
 * a GGUF input, or translated from hparams + vocab) and the tensors are written atomically. */
#include "quant/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/fp16.h"
#include "formats/gguf_write.h"
#include "kernels/quants.h"
#include "kernels/threadpool.h"
#include "model/model.h"
#include "quant/bitalloc.h"
#include "quant/calib.h"
#include "tokenizer/tokenizer.h"

static const struct {
  const char *name;
  int type;
  int ftype; /* llama.cpp's general.file_type (LLAMA_FTYPE_*) for a model of this type */
} k_types[] = {
    {"q8_0", QLM_TYPE_Q8_0, 7}, {"q4_0", QLM_TYPE_Q4_0, 2}, {"q4_1", QLM_TYPE_Q4_1, 3},
    {"q5_0", QLM_TYPE_Q5_0, 8}, {"q5_1", QLM_TYPE_Q5_1, 9}, {"q4_K", QLM_TYPE_Q4_K, 14},
    {"q5_K", QLM_TYPE_Q5_K, 16}, {"q6_K", QLM_TYPE_Q6_K, 18}, {"f16", QLM_TYPE_F16, 1},
    {"f32", QLM_TYPE_F32, 0},
};
enum { N_TYPES = sizeof k_types / sizeof k_types[0] };

const char *const qlm_quantize_types = "q8_0|q4_0|q4_1|q5_0|q5_1|q4_K|q5_K|q6_K|f16|f32";

int qlm_quantize_parse_type(const char *name) {
  for (int i = 0; i < N_TYPES; i++)
    if (strcasecmp(name, k_types[i].name) == 0) return k_types[i].type;
  return -1;
}

static int ftype_of(int type) {
  for (int i = 0; i < N_TYPES; i++)
    if (k_types[i].type == type) return k_types[i].ftype;
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- which type each tensor gets */

static bool is_linear_weight(const char *name) {
  static const char *const kinds[] = {"attn_q", "attn_k", "attn_v", "attn_output", "attn_qkv",
                                      "ffn_gate", "ffn_up", "ffn_down"};
  if (strncmp(name, "blk.", 4) != 0) return false;
  const char *p = name + 4;
  if (*p < '0' || *p > '9') return false;
  while (*p >= '0' && *p <= '9') p++;
  if (*p++ != '.') return false;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    size_t n = strlen(kinds[i]);
    if (strncmp(p, kinds[i], n) == 0 && strcmp(p + n, ".weight") == 0) return true;
  }
  return false;
}

static bool is_matrix(const qlm_tensor *t) { return t->n_dims == 2 && t->ne[2] == 1 && t->ne[3] == 1; }

/* The choice for a llama.cpp type (f32/f16 store unquantized). */
static qlm_choice choice_of_type(int type) {
  qlm_choice c = {.kind = QLM_CHOICE_F32};
  if (type == QLM_TYPE_F16) c.kind = QLM_CHOICE_F16;
  else if (type != QLM_TYPE_F32) c = (qlm_choice){.kind = QLM_CHOICE_METHOD, .method = &qlm_method_ggml,
                                                   .opts = {.type = type}};
  return c;
}

static qlm_choice linear_default(const qlm_quant_params *p) {
  if (!p->method) return choice_of_type(p->type);
  qlm_choice c = {.kind = QLM_CHOICE_METHOD, .method = p->method, .opts = p->opts};
  if (c.method->defaults) c.method->defaults(&c.opts);
  return c;
}

qlm_choice qlm_quantize_choice(const qlm_tensor *t, const qlm_quant_params *p) {
  qlm_choice c = {.kind = QLM_CHOICE_F32};
  if (!is_matrix(t)) return c;
  if (qlm_rules_match(p->rules, t->name, &c)) return c;
  if (strcmp(t->name, "token_embd.weight") == 0 || strcmp(t->name, "output.weight") == 0)
    return p->embd_type < 0 ? linear_default(p) : choice_of_type(p->embd_type);
  return is_linear_weight(t->name) ? linear_default(p) : c;
}

/* ---- converting one tensor */

/* Work shared by the threads converting one tensor: rows [0, n_rows) of n_cols floats. */
typedef struct convert_task {
  const float *src;       /* [n_rows x n_cols] */
  unsigned char *dst;     /* [n_rows x row_bytes] */
  int type;
  int64_t n_rows, n_cols;
  size_t row_bytes;
  double *err2, *norm2, *maxerr; /* [nth] partial results */
  int *failed;            /* [nth] scratch allocation failed */
} convert_task;

static void convert_row(const convert_task *c, const float *x, unsigned char *y) {
  if (c->type == QLM_TYPE_F32) {
    memcpy(y, x, c->row_bytes);
  } else if (c->type == QLM_TYPE_F16) {
    for (int64_t j = 0; j < c->n_cols; j++) {
      uint16_t h = qlm_f32_to_f16(x[j]);
      y[2 * j] = (unsigned char)h;
      y[2 * j + 1] = (unsigned char)(h >> 8);
    }
  } else {
    qlm_quantizer_of(c->type)(x, y, c->n_cols);
  }
}

static void convert_rows(void *ctx, int ith, int nth) {
  convert_task *c = ctx;
  float *back = malloc((size_t)c->n_cols * sizeof *back);
  if (!back) {
    c->failed[ith] = 1;
    return;
  }
  double e2 = 0, n2 = 0, mx = 0;
  for (int64_t r = ith; r < c->n_rows; r += nth) {
    const float *x = c->src + r * c->n_cols;
    unsigned char *y = c->dst + (size_t)r * c->row_bytes;
    convert_row(c, x, y);
    qlm_dequantize(c->type, y, back, c->n_cols);
    for (int64_t j = 0; j < c->n_cols; j++) {
      double d = (double)x[j] - (double)back[j];
      e2 += d * d;
      n2 += (double)x[j] * (double)x[j];
      if (fabs(d) > mx) mx = fabs(d);
    }
  }
  c->err2[ith] = e2;
  c->norm2[ith] = n2;
  c->maxerr[ith] = mx;
  free(back);
}

/* HF LLaMA q/k rows are in rotate-half order within each head; GGUF llama wants interleaved:
 * HF row i (i < hd/2) -> row 2i, HF row hd/2 + i -> row 2i+1. */
static int permute_to_interleaved(float *w, int64_t n_rows, int64_t n_cols, int hd, qlm_error *err) {
  if (hd <= 0 || hd % 2 || n_rows % hd)
    return qlm_fail(err, QLM_EUNSUPPORTED, "cannot permute %lld rows in heads of %d to the interleaved RoPE layout",
                    (long long)n_rows, hd);
  size_t head_bytes = (size_t)hd * (size_t)n_cols * sizeof *w;
  float *tmp = qlm_malloc(head_bytes, "a RoPE permutation buffer", err);
  if (!tmp) return QLM_ENOMEM;
  for (int64_t h = 0; h < n_rows / hd; h++) {
    float *head = w + h * hd * n_cols;
    memcpy(tmp, head, head_bytes);
    for (int i = 0; i < hd / 2; i++) {
      memcpy(head + (size_t)(2 * i) * n_cols, tmp + (size_t)i * n_cols, (size_t)n_cols * sizeof *w);
      memcpy(head + (size_t)(2 * i + 1) * n_cols, tmp + (size_t)(hd / 2 + i) * n_cols, (size_t)n_cols * sizeof *w);
    }
  }
  free(tmp);
  return QLM_OK;
}

static bool needs_rope_permutation(const qlm_source *src, const qlm_tensor *t) {
  if (src->hp.arch != QLM_ARCH_LLAMA || src->hp.rope_style != QLM_ROPE_NEOX) return false;
  return strstr(t->name, ".attn_q.weight") || strstr(t->name, ".attn_k.weight");
}

/* The source tensor as f32 (malloc'd), RoPE rows permuted if needed. */
static int load_f32(const qlm_source *src, const qlm_tensor *t, int64_t n, const float *ovr, float **out,
                    qlm_error *err) {
  if (ovr) { /* the driver changed this tensor (smoothing folded into it): already in file layout */
    float *f = qlm_malloc((size_t)n * sizeof *f + 1, "a tensor converted to f32", err);
    if (!f) return QLM_ENOMEM;
    memcpy(f, ovr, (size_t)n * sizeof *f);
    *out = f;
    return QLM_OK;
  }
  const qlm_type_traits *tt = qlm_type_traits_of(t->type);
  if (!tt || !qlm_type_can_dequantize(t->type))
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: tensor '%s': cannot convert type %s to f32", src->path, t->name,
                    qlm_type_name(t->type));
  size_t bytes;
  if (qlm_mul_overflow((size_t)n, sizeof(float), &bytes))
    return qlm_fail(err, QLM_ELIMIT, "%s: tensor '%s' is too large", src->path, t->name);
  float *f = qlm_malloc(bytes ? bytes : 1, "a tensor converted to f32", err);
  if (!f) return QLM_ENOMEM;
  qlm_dequantize(t->type, t->data, f, n);
  if (needs_rope_permutation(src, t)) {
    if (src->hp.n_rot != src->hp.head_dim) {
      free(f);
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: partial rotary dimensions (%d of %d) cannot be converted to GGUF llama",
                      src->path, src->hp.n_rot, src->hp.head_dim);
    }
    int rc = permute_to_interleaved(f, t->ne[1], t->ne[0], src->hp.head_dim, err);
    if (rc) {
      free(f);
      return qlm_fail_prefix(err, "%s: tensor '%s'", src->path, t->name);
    }
  }
  *out = f;
  return QLM_OK;
}

/* f32, f16 and llama.cpp block types: rows converted in parallel by the reference quantizers. */
static int convert_tensor(const qlm_source *src, const qlm_tensor *t, const float *ovr, qlm_pool *pool,
                          qlm_quant_tensor *rep, qlm_qtensor *o, double *method_s, qlm_error *err) {
  int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
  float *f = NULL;
  int rc = load_f32(src, t, n, ovr, &f, err);
  if (rc) return rc;
  int nth = qlm_pool_size(pool);
  if (nth < 1) nth = 1;
  convert_task c = {.src = f, .type = rep->type, .n_cols = t->ne[0], .n_rows = n / t->ne[0],
                    .row_bytes = qlm_type_row_bytes(rep->type, t->ne[0])};
  size_t nbytes = 0;
  double *partial = calloc((size_t)nth * 3, sizeof *partial);
  c.failed = calloc((size_t)nth, sizeof *c.failed);
  if (c.row_bytes == 0 || qlm_mul_overflow(c.row_bytes, (size_t)c.n_rows, &nbytes)) {
    rc = qlm_fail(err, QLM_EINTERNAL, "tensor '%s': bad output size", t->name);
  } else if (!partial || !c.failed || !(c.dst = malloc(nbytes ? nbytes : 1))) {
    rc = qlm_fail(err, QLM_ENOMEM, "out of memory quantizing tensor '%s'", t->name);
  } else {
    c.err2 = partial, c.norm2 = partial + nth, c.maxerr = partial + 2 * nth;
    double t0 = now_s();
    qlm_pool_run(pool, convert_rows, &c); /* the error sums are made in the same pass */
    if (rep->type != QLM_TYPE_F32 && rep->type != QLM_TYPE_F16) *method_s += now_s() - t0; /* kept tensors are not quantized */
    double e2 = 0, n2 = 0, mx = 0;
    for (int i = 0; i < nth; i++) {
      if (c.failed[i]) rc = qlm_fail(err, QLM_ENOMEM, "out of memory quantizing tensor '%s'", t->name);
      e2 += c.err2[i], n2 += c.norm2[i], mx = fmax(mx, c.maxerr[i]);
    }
    rep->rel_err = n2 > 0 ? sqrt(e2 / n2) : sqrt(e2);
    rep->max_err = mx;
  }
  free(f);
  free(partial);
  free(c.failed);
  if (rc) {
    free(c.dst);
    return rc;
  }
  *o = (qlm_qtensor){.type = rep->type, .rows = c.n_rows, .cols = c.n_cols, .row_bytes = c.row_bytes, .data = c.dst};
  qlm_qtensor_set_bpw(o);
  rep->bytes_out = nbytes;
  return QLM_OK;
}

/* Any other method: W as f32, the method's quantize, and the error of its dequantized result. */
static int method_tensor(const qlm_source *src, const qlm_tensor *t, const float *ovr, const qlm_choice *ch,
                         const qlm_calib *calib, qlm_quant_tensor *rep, qlm_qtensor *o, double *method_s,
                         qlm_error *err) {
  int64_t rows = t->ne[1], cols = t->ne[0];
  float *f = NULL, *back = NULL;
  int rc = load_f32(src, t, rows * cols, ovr, &f, err);
  if (rc) return rc;
  double t0 = now_s();
  rc = ch->method->quantize(f, rows, cols, calib, &ch->opts, o, err);
  *method_s += now_s() - t0;
  if (rc) {
    qlm_fail_prefix(err, "tensor '%s'", t->name);
  } else if (!(back = qlm_malloc((size_t)(rows * cols) * sizeof *back + 1, "a dequantized tensor", err))) {
    rc = QLM_ENOMEM;
  } else if (ch->method->dequantize) {
    rc = ch->method->dequantize(o, back, err);
  } else if (!qlm_dequantize(o->type, o->data, back, rows * cols)) {
    rc = qlm_fail(err, QLM_EINTERNAL, "tensor '%s': type %s has no dequantizer", t->name, qlm_type_name(o->type));
  }
  if (!rc) {
    double e2 = 0, n2 = 0, mx = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
      double d = (double)f[i] - (double)back[i];
      e2 += d * d, n2 += (double)f[i] * (double)f[i];
      if (fabs(d) > mx) mx = fabs(d);
    }
    rep->rel_err = n2 > 0 ? sqrt(e2 / n2) : sqrt(e2);
    rep->max_err = mx;
    rep->type = o->type;
    if (o->note[0]) {
      rep->fallback = true;
      snprintf(rep->fallback_why, sizeof rep->fallback_why, "%s", o->note);
    }
    rep->bytes_out = o->row_bytes * (size_t)rows;
    for (int i = 0; i < o->n_aux; i++) rep->bytes_out += o->aux[i].bytes;
  } else {
    qlm_qtensor_free(o);
  }
  free(f);
  free(back);
  return rc;
}

/* ---- metadata */

static bool copied_key(const char *key) {
  /* set by this writer, never copied */
  return strcmp(key, "general.alignment") != 0 && strcmp(key, "general.file_type") != 0 &&
         strcmp(key, "general.quantization_version") != 0 && strncmp(key, "qlm.", 4) != 0;
}

static const char *arch_name(qlm_arch a) {
  return a == QLM_ARCH_QWEN2 ? "qwen2" : a == QLM_ARCH_GPT2 ? "gpt2" : "llama";
}

/* llama.cpp's ARCH.* keys from the hyper-parameters (for HF and llama2.c inputs). */
static int write_hparams(qlm_gguf_writer *w, const qlm_hparams *hp, qlm_error *err) {
  const char *a = arch_name(hp->arch);
  char k[128];
#define K(s) (snprintf(k, sizeof k, "%s.%s", a, s), k)
  int rc = qlm_gguf_add_str(w, "general.architecture", a, err);
  if (rc || (rc = qlm_gguf_add_u32(w, K("context_length"), (uint32_t)hp->n_ctx, err)) ||
      (rc = qlm_gguf_add_u32(w, K("embedding_length"), (uint32_t)hp->n_embd, err)) ||
      (rc = qlm_gguf_add_u32(w, K("feed_forward_length"), (uint32_t)hp->n_ff, err)) ||
      (rc = qlm_gguf_add_u32(w, K("block_count"), (uint32_t)hp->n_layer, err)) ||
      (rc = qlm_gguf_add_u32(w, K("attention.head_count"), (uint32_t)hp->n_head, err)) ||
      (rc = qlm_gguf_add_u32(w, K("attention.head_count_kv"), (uint32_t)hp->n_head_kv, err)))
    return rc;
  if (hp->arch == QLM_ARCH_GPT2) {
    if ((rc = qlm_gguf_add_f32(w, K("attention.layer_norm_epsilon"), hp->norm_eps, err))) return rc;
  } else {
    if ((rc = qlm_gguf_add_f32(w, K("attention.layer_norm_rms_epsilon"), hp->norm_eps, err)) ||
        (rc = qlm_gguf_add_f32(w, K("rope.freq_base"), hp->rope_theta, err)) ||
        (rc = qlm_gguf_add_u32(w, K("rope.dimension_count"), (uint32_t)hp->n_rot, err)))
      return rc;
  }
  if (hp->n_head > 0 && hp->head_dim != hp->n_embd / hp->n_head &&
      ((rc = qlm_gguf_add_u32(w, K("attention.key_length"), (uint32_t)hp->head_dim, err)) ||
       (rc = qlm_gguf_add_u32(w, K("attention.value_length"), (uint32_t)hp->head_dim, err))))
    return rc;
#undef K
  return QLM_OK;
}

static int add_token_id(qlm_gguf_writer *w, const char *key, int id, qlm_error *err) {
  return id >= 0 ? qlm_gguf_add_u32(w, key, (uint32_t)id, err) : QLM_OK;
}

/* tokenizer.ggml.* from a qlm_vocab (for HF and llama2.c inputs). */
static int write_vocab(qlm_gguf_writer *w, const qlm_source *src, qlm_error *err) {
  const qlm_vocab *v = &src->vocab;
  if (v->n_tokens == 0) return QLM_OK;
  if (v->kind == QLM_TOK_NONE)
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: the tokenizer kind cannot be written to GGUF", src->path);
  for (int i = 0; i < v->n_tokens; i++)
    if (v->token_len && (size_t)v->token_len[i] != strlen(v->tokens[i]))
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: token %d contains a NUL byte, which GGUF strings cannot hold",
                      src->path, i);
  int rc = qlm_gguf_add_str(w, "tokenizer.ggml.model", v->kind == QLM_TOK_SPM ? "llama" : "gpt2", err);
  if (rc || (rc = qlm_gguf_add_str_arr(w, "tokenizer.ggml.tokens", v->tokens, (uint64_t)v->n_tokens, err)))
    return rc;
  /* scores and token types are packed little-endian, as a GGUF array stores them */
  size_t n = (size_t)v->n_tokens;
  unsigned char *le = qlm_malloc(4 * n, "tokenizer arrays", err);
  if (!le) return QLM_ENOMEM;
  if (v->scores) {
    for (size_t i = 0; i < n; i++) {
      uint32_t b = qlm_f32_to_bits(v->scores[i]);
      for (int j = 0; j < 4; j++) le[4 * i + (size_t)j] = (unsigned char)(b >> (8 * j));
    }
    rc = qlm_gguf_add_arr(w, "tokenizer.ggml.scores", QLM_META_F32, le, n, err);
  }
  if (!rc && v->token_type) {
    for (size_t i = 0; i < n; i++) {
      uint32_t b = (uint32_t)v->token_type[i];
      for (int j = 0; j < 4; j++) le[4 * i + (size_t)j] = (unsigned char)(b >> (8 * j));
    }
    rc = qlm_gguf_add_arr(w, "tokenizer.ggml.token_type", QLM_META_I32, le, n, err);
  }
  free(le);
  if (!rc && v->n_merges > 0)
    rc = qlm_gguf_add_str_arr(w, "tokenizer.ggml.merges", v->merges, (uint64_t)v->n_merges, err);
  if (!rc && v->pre[0]) rc = qlm_gguf_add_str(w, "tokenizer.ggml.pre", v->pre, err);
  if (rc || (rc = add_token_id(w, "tokenizer.ggml.bos_token_id", v->bos_id, err)) ||
      (rc = add_token_id(w, "tokenizer.ggml.eos_token_id", v->eos_id, err)) ||
      (rc = add_token_id(w, "tokenizer.ggml.unknown_token_id", v->unk_id, err)) ||
      (rc = add_token_id(w, "tokenizer.ggml.padding_token_id", v->pad_id, err)) ||
      (rc = qlm_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos, err)) ||
      (rc = qlm_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos, err)) ||
      (rc = qlm_gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix, err)))
    return rc;
  return QLM_OK;
}

/* What the calibration windows were taken from, as printed and written into the file. */
static const char *calib_label(const qlm_quant_params *p) {
  return p->calib_text ? p->calib_text : "the given tokens";
}

/* How the calibration statistics were gathered, so that a file says what it was calibrated on
 * (qlm info shows them; the same text, windows, seed and dtype give the same weights). */
static int write_calib_metadata(qlm_gguf_writer *w, const qlm_quant_params *p, const qlm_quant_summary *sum,
                                qlm_error *err) {
  if (!sum->calibrated) return QLM_OK;
  int rc;
  if ((rc = qlm_gguf_add_str(w, "qlm.calib.text", calib_label(p), err)) ||
      (rc = qlm_gguf_add_u32(w, "qlm.calib.samples", (uint32_t)sum->calib_samples, err)) ||
      (rc = qlm_gguf_add_u32(w, "qlm.calib.len", (uint32_t)sum->calib_len, err)) ||
      (rc = qlm_gguf_add_scalar(w, "qlm.calib.seed", QLM_META_U64, sum->calib_seed, err)))
    return rc;
  return qlm_gguf_add_str(w, "qlm.calib.dtype", sum->calib_bf16 ? "bf16" : "f32", err);
}

static int write_metadata(qlm_gguf_writer *w, const qlm_source *src, const qlm_quant_params *p, bool ggml_only,
                          const qlm_quant_summary *sum, qlm_error *err) {
  int rc = QLM_OK;
  if (strcmp(src->format, "gguf") == 0) {
    for (int i = 0; i < src->n_meta && !rc; i++)
      if (copied_key(src->meta[i].key)) rc = qlm_gguf_add_meta(w, &src->meta[i], err);
  } else {
    rc = write_hparams(w, &src->hp, err);
    if (!rc) rc = write_vocab(w, src, err);
  }
  /* general.file_type tells llama.cpp what the bulk of the weights are; only meaningful for a
   * file of ggml types quantized with one type */
  if (!rc && ggml_only && !p->method && !qlm_rules_count(p->rules))
    rc = qlm_gguf_add_u32(w, "general.file_type", (uint32_t)ftype_of(p->type), err);
  qlm_choice def = linear_default(p);
  char desc[128];
  if (def.kind != QLM_CHOICE_METHOD) snprintf(desc, sizeof desc, "%s", def.kind == QLM_CHOICE_F16 ? "f16" : "f32");
  else if (def.method == &qlm_method_ggml) snprintf(desc, sizeof desc, "gguf type=%s", qlm_type_name(def.opts.type));
  else snprintf(desc, sizeof desc, "%s", def.method->name);
  if (rc || (rc = qlm_gguf_add_u32(w, "general.quantization_version", 2, err)) ||
      (rc = qlm_gguf_add_str(w, "qlm.version", QLM_VERSION, err)) ||
      (rc = qlm_gguf_add_str(w, "qlm.source", p->source_label ? p->source_label : src->path, err)) ||
      (rc = qlm_gguf_add_str(w, "qlm.quantize.method", desc, err)) ||
      (rc = qlm_gguf_add_f32(w, "qlm.quantize.seconds", (float)sum->seconds, err)))
    return rc;
  if (!p->method && (rc = qlm_gguf_add_str(w, "qlm.quantize.type", qlm_type_name(p->type), err))) return rc;
  if (qlm_rules_count(p->rules) && (rc = qlm_gguf_add_str(w, "qlm.quantize.rules", qlm_rules_text(p->rules), err)))
    return rc;
  return write_calib_metadata(w, p, sum, err);
}

/* ---- the driver */

/* llama.cpp's choice for a k-quant tensor whose rows are not a multiple of 256 (llama-quantize,
 * llama_tensor_get_type); the caller goes on to f16 when 32 does not divide the rows either.
 * Legacy types go straight to f16 (llama-quantize refuses them for such shapes). */
static int fallback_type(int type) {
  switch (type) {
  case QLM_TYPE_Q4_K: return QLM_TYPE_Q5_0;
  case QLM_TYPE_Q5_K: return QLM_TYPE_Q5_1;
  case QLM_TYPE_Q6_K: return QLM_TYPE_Q8_0;
  default: return QLM_TYPE_F16;
  }
}

/* The storage type of a choice for the llama.cpp path, or -1 for other methods. */
static int choice_type(const qlm_choice *c) {
  if (c->kind == QLM_CHOICE_F32) return QLM_TYPE_F32;
  if (c->kind == QLM_CHOICE_F16) return QLM_TYPE_F16;
  return c->method == &qlm_method_ggml ? c->opts.type : -1;
}

/* Decide what tensor i gets; a choice that cannot hold the shape falls back (reported). */
static void plan_tensor(const qlm_source *src, int i, const qlm_quant_params *p, int bits, qlm_choice *ch,
                        qlm_quant_tensor *r) {
  const qlm_tensor *t = &src->tensors[i];
  *r = (qlm_quant_tensor){.index = i + 1, .n_tensors = src->n_tensors, .name = t->name, .n_dims = t->n_dims,
                          .src_type = t->type, .bytes_in = t->nbytes};
  memcpy(r->ne, t->ne, sizeof r->ne);
  *ch = qlm_quantize_choice(t, p);
  if (bits > 0 && ch->kind == QLM_CHOICE_METHOD) ch->opts.bits = bits; /* --target-bpw's allocation */
  int type = choice_type(ch);
  r->wanted_type = type;
  if (type >= 0) {
    r->type = type;
    if (t->ne[0] % qlm_type_traits_of(type)->block_size != 0) { /* not a whole number of blocks */
      r->type = fallback_type(type);
      if (t->ne[0] % qlm_type_traits_of(r->type)->block_size != 0) r->type = QLM_TYPE_F16;
      snprintf(r->fallback_why, sizeof r->fallback_why, "%lld columns are not a multiple of the %s block size %d",
               (long long)t->ne[0], qlm_type_name(type), qlm_type_traits_of(type)->block_size);
      r->fallback = true;
      *ch = choice_of_type(r->type);
    }
  } else {
    qlm_error e = {0};
    if (ch->method->check && ch->method->check(&ch->opts, t->ne[1], t->ne[0], &e)) {
      snprintf(r->fallback_why, sizeof r->fallback_why, "%.150s", e.msg);
      r->fallback = true;
      *ch = choice_of_type(QLM_TYPE_F16);
      r->type = QLM_TYPE_F16;
    }
  }
  r->quantized = ch->kind != QLM_CHOICE_F32;
}

static int check_params(const qlm_quant_params *p, qlm_error *err) {
  if (!p->method && qlm_quantize_parse_type(qlm_type_name(p->type)) < 0)
    return qlm_fail(err, QLM_EUSAGE, "quantize: type %s is not supported (use %s)", qlm_type_name(p->type),
                    qlm_quantize_types);
  if (p->embd_type >= 0 && p->embd_type != QLM_TYPE_F32 && p->embd_type != QLM_TYPE_F16 &&
      qlm_quantize_parse_type(qlm_type_name(p->embd_type)) < 0)
    return qlm_fail(err, QLM_EUSAGE, "quantize: embedding type %s is not supported", qlm_type_name(p->embd_type));
  if (p->method && p->method->check) {
    qlm_quant_opts o = p->opts;
    if (p->method->defaults) p->method->defaults(&o);
    int rc = p->method->check(&o, 0, 0, err); /* options only: an empty shape always fits */
    if (rc == QLM_EUSAGE) return rc;
    if (err) *err = (qlm_error){0};
  }
  return QLM_OK;
}

/* Whether every stored type is one of ggml's (the file then loads in llama.cpp). */
static bool only_ggml_types(const qlm_qtensor *q, int n) {
  for (int i = 0; i < n; i++)
    if (q[i].type >= QLM_TYPE_COUNT_GGML || q[i].n_aux) return false;
  return true;
}

static int write_tensor_meta(qlm_gguf_writer *w, const char *name, const char *desc, qlm_error *err) {
  char key[320];
  snprintf(key, sizeof key, "qlm.tensor.%s.method", name);
  return qlm_gguf_add_str(w, key, desc, err);
}

/* Phase 2: metadata and tensors (main + companions) into the GGUF writer. */
static int write_model(const qlm_source *src, const qlm_quant_params *p, qlm_qtensor *outs, char **descs,
                       qlm_quant_summary *sum, const char *out_path, qlm_error *err) {
  qlm_gguf_writer *w = qlm_gguf_writer_new(err);
  if (!w) return err && err->code ? err->code : QLM_ENOMEM;
  bool ggml_only = only_ggml_types(outs, src->n_tensors);
  int rc = write_metadata(w, src, p, ggml_only, sum, err);
  for (int i = 0; i < src->n_tensors && !rc; i++)
    if (descs[i]) rc = write_tensor_meta(w, src->tensors[i].name, descs[i], err);
  char **names = qlm_calloc((size_t)src->n_tensors * QLM_QAUX_MAX + 1, sizeof *names, "tensor names", err);
  if (!names && !rc) rc = QLM_ENOMEM;
  for (int i = 0; i < src->n_tensors && !rc; i++) {
    const qlm_tensor *t = &src->tensors[i];
    size_t nbytes = outs[i].row_bytes * (size_t)outs[i].rows;
    rc = qlm_gguf_add_tensor(w, t->name, outs[i].type, t->n_dims, t->ne, outs[i].data, nbytes, err);
    for (int k = 0; k < outs[i].n_aux && !rc; k++) {
      const qlm_qaux *a = &outs[i].aux[k];
      char **nm = &names[i * QLM_QAUX_MAX + k];
      size_t len = strlen(t->name) + strlen(a->suffix) + 1;
      if (!(*nm = qlm_malloc(len, "a tensor name", err))) {
        rc = QLM_ENOMEM;
        break;
      }
      snprintf(*nm, len, "%s%s", t->name, a->suffix);
      int64_t ne[4] = {a->n, 1, 1, 1};
      rc = qlm_gguf_add_tensor(w, *nm, a->type, 1, ne, a->data, a->bytes, err);
    }
  }
  if (!rc) rc = qlm_gguf_write(w, out_path, &sum->file_bytes, err);
  qlm_gguf_writer_free(w);
  for (int i = 0; names && i < src->n_tensors * QLM_QAUX_MAX; i++) free(names[i]);
  free(names);
  return rc;
}

/* The state of one run of the driver. */
typedef struct driver {
  const qlm_source *src;
  const qlm_quant_params *p;
  qlm_quant_summary *sum;
  qlm_qtensor *outs;     /* [n_tensors] */
  char **descs;          /* [n_tensors] method descriptions (NULL: stored unquantized) */
  bool *done;            /* [n_tensors] */
  float **override;      /* [n_tensors] f32 data replacing the source's (file layout), or NULL */
  int *bits;             /* [n_tensors] bits chosen by --target-bpw (0: the method's own) */
  qlm_pool *pool;
  double t0;
  int64_t params_done;
} driver;

/* Quantize tensor i (calib: its layer's input statistics, or NULL) and report it. */
static int do_tensor(driver *d, int i, const qlm_calib *calib, qlm_error *err) {
  const qlm_tensor *t = &d->src->tensors[i];
  qlm_quant_tensor r;
  qlm_choice ch;
  plan_tensor(d->src, i, d->p, d->bits[i], &ch, &r);
  ch.opts.n_threads = d->p->n_threads;
  ch.opts.pool = d->pool;
  int rc;
  const float *ovr = d->override[i];
  double *ms = &d->sum->method_seconds;
  if (choice_type(&ch) >= 0) rc = convert_tensor(d->src, t, ovr, d->pool, &r, &d->outs[i], ms, err);
  else rc = method_tensor(d->src, t, ovr, &ch, calib, &r, &d->outs[i], ms, err);
  if (rc) return rc;
  if (ch.kind == QLM_CHOICE_METHOD) {
    char buf[128];
    if (ch.method == &qlm_method_ggml) snprintf(buf, sizeof buf, "gguf type=%s", qlm_type_name(d->outs[i].type));
    else snprintf(buf, sizeof buf, "%s", d->outs[i].desc);
    if (!(d->descs[i] = strdup(buf))) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  }
  qlm_qtensor_set_bpw(&d->outs[i]);
  r.bpw = d->outs[i].bpw;
  r.method = d->descs[i] ? d->descs[i] : qlm_type_name(d->outs[i].type);
  d->params_done += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
  r.params_done = d->params_done, r.n_params = d->sum->n_params, r.elapsed = now_s() - d->t0;
  d->sum->bytes_in += r.bytes_in;
  d->sum->bytes_out += r.bytes_out;
  if (r.fallback) d->sum->n_fallback++;
  else if (r.quantized) d->sum->n_quantized++;
  else d->sum->n_kept++;
  d->done[i] = true;
  if (d->p->on_tensor) d->p->on_tensor(d->p->ctx, &r);
  return QLM_OK;
}

/* ---- calibrated methods (GPTQ, ...): quantized layer by layer on calibration statistics */

static const struct {
  const char *stem;
  qlm_linear_slot slot;
} k_slot_of[] = {
    {"attn_q", QLM_SLOT_QKV},   {"attn_k", QLM_SLOT_QKV}, {"attn_v", QLM_SLOT_QKV}, {"attn_output", QLM_SLOT_O},
    {"ffn_gate", QLM_SLOT_UP}, {"ffn_up", QLM_SLOT_UP},  {"ffn_down", QLM_SLOT_DOWN}, {"attn_qkv", QLM_SLOT_QKV},
};

/* Whether a method with these options needs calibration statistics (method.h: wants_calib). */
static bool choice_calibrated(const qlm_choice *c) {
  if (c->kind != QLM_CHOICE_METHOD) return false;
  if (c->method->wants_calib) {
    qlm_quant_opts o = c->opts;
    if (c->method->defaults) c->method->defaults(&o);
    return c->method->wants_calib(&o);
  }
  return c->method->needs_calib;
}

static bool needs_calib(const qlm_tensor *t, const qlm_quant_params *p) {
  qlm_choice c = qlm_quantize_choice(t, p);
  return choice_calibrated(&c);
}

/* The model's matrix of layer il for stem k. */
static qlm_mat *layer_mat(qlm_model *m, int il, int k) {
  qlm_layer *L = &m->layers[il];
  qlm_mat *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
  return mats[k];
}

/* Rows of a quantized tensor in the model's layout: undo permute_to_interleaved (file row 2i ->
 * head row i, 2i+1 -> hd/2 + i) for HF q/k.  Returns a malloc'd copy. */
static void *rows_to_model_layout(const qlm_qtensor *q, int hd, qlm_error *err) {
  size_t rb = q->row_bytes;
  unsigned char *out = qlm_malloc(rb * (size_t)q->rows + 1, "a quantized tensor", err);
  if (!out) return NULL;
  const unsigned char *in = q->data;
  for (int64_t h = 0; h < q->rows / hd; h++)
    for (int i = 0; i < hd / 2; i++) {
      memcpy(out + ((size_t)(h * hd + i)) * rb, in + ((size_t)(h * hd + 2 * i)) * rb, rb);
      memcpy(out + ((size_t)(h * hd + hd / 2 + i)) * rb, in + ((size_t)(h * hd + 2 * i + 1)) * rb, rb);
    }
  return out;
}

typedef struct calib_ctx {
  driver *d;
  qlm_model *m;
  void **owned;          /* model-layout copies, freed at the end */
  int n_owned;
} calib_ctx;

/* ---- smoothing (methods with input_scales: SmoothQuant, AWQ) */

static int tensor_index(const driver *d, const char *name) {
  const qlm_tensor *t = qlm_source_tensor(d->src, name);
  return t ? (int)(t - d->src->tensors) : -1;
}

/* Replace tensor i's data (f32, file layout) for the rest of the run. */
static void set_override(driver *d, int i, float *data) {
  free(d->override[i]);
  d->override[i] = data;
}

/* Where 1/s goes for each slot (the op that produces the slot's input):
 *   QKV, UP:  the norm before them (weight, and bias for LayerNorm): x' = norm(x) / s
 *   O:        the rows of W_v (and b_v): attention mixes value rows linearly, so scaling value
 *             channel c scales attention-output channel c — only when every query head has its
 *             own value head (n_head == n_head_kv) and v is its own tensor
 *   DOWN:     the rows of W_up in gated FFNs: silu(gate) * (up / s) = (silu(gate) * up) / s
 *             (GPT-2's gelu(up) is not linear: no smoothing there) */
static bool slot_foldable(const driver *d, qlm_linear_slot slot, int il) {
  const qlm_hparams *hp = &d->src->hp;
  char name[96];
  switch (slot) {
  case QLM_SLOT_QKV:
  case QLM_SLOT_UP: return true;
  case QLM_SLOT_O: {
    snprintf(name, sizeof name, "blk.%d.attn_v.weight", il);
    char fused[96];
    snprintf(fused, sizeof fused, "blk.%d.attn_qkv.weight", il);
    return hp->n_head == hp->n_head_kv && (tensor_index(d, name) >= 0 || tensor_index(d, fused) >= 0);
  }
  case QLM_SLOT_DOWN:
    snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", il);
    return hp->arch != QLM_ARCH_GPT2 && tensor_index(d, name) >= 0;
  default: return false;
  }
}

/* Point the model's q/k/v at rows of a fused q|k|v matrix held as f32 (weight) or at a fused bias. */
static void set_fused_views(qlm_model *m, int il, const float *w, const float *bias) {
  qlm_layer *L = &m->layers[il];
  int64_t E = m->hp.n_embd, qd = (int64_t)m->hp.n_head * m->hp.head_dim, kd = (int64_t)m->hp.n_head_kv * m->hp.head_dim;
  if (w) {
    qlm_mat *v[3] = {&L->wq, &L->wk, &L->wv};
    int64_t r0[3] = {0, qd, qd + kd}, nr[3] = {qd, kd, kd};
    for (int j = 0; j < 3; j++)
      *v[j] = (qlm_mat){.type = QLM_TYPE_F32, .rows = nr[j], .cols = E, .data = w + r0[j] * E,
                        .row_bytes = (size_t)E * sizeof(float)};
  }
  if (bias) L->bq = bias, L->bk = bias + qd, L->bv = bias + qd + kd;
}

/* Divide the producer of the slot's input by s (overrides), and point the model at the result
 * (a matrix the calibrated pass does not quantize stays f32 in the model until the end). */
static int fold_into_producer(calib_ctx *c, int il, qlm_linear_slot slot, const float *sv, int cols, qlm_error *err) {
  driver *d = c->d;
  qlm_layer *L = &c->m->layers[il];
  const char *stem = slot == QLM_SLOT_QKV ? "attn_norm" : slot == QLM_SLOT_UP ? "ffn_norm" : slot == QLM_SLOT_O ? "attn_v" : "ffn_up";
  int64_t row0 = 0; /* first producing row (fused q|k|v: the v rows) */
  char probe[96];
  snprintf(probe, sizeof probe, "blk.%d.attn_v.weight", il);
  bool fused = slot == QLM_SLOT_O && tensor_index(d, probe) < 0;
  if (fused) stem = "attn_qkv", row0 = (int64_t)(d->src->hp.n_head + d->src->hp.n_head_kv) * d->src->hp.head_dim;
  for (int b = 0; b < 2; b++) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s.%s", il, stem, b ? "bias" : "weight");
    int i = tensor_index(d, name);
    if (i < 0) continue;
    const qlm_tensor *t = &d->src->tensors[i];
    int64_t n = t->ne[0] * t->ne[1], rows = t->n_dims == 2 ? t->ne[1] : t->ne[0], per = n / rows;
    if (rows < row0 + cols || (!fused && rows != cols))
      return qlm_fail(err, QLM_EINTERNAL, "%s: %lld rows cannot absorb %d factors", name, (long long)rows, cols);
    float *v = NULL;
    int rc = load_f32(d->src, t, n, d->override[i], &v, err);
    if (rc) return rc;
    for (int64_t r = 0; r < cols; r++)
      for (int64_t j = 0; j < per; j++) v[(row0 + r) * per + j] /= sv[r];
    set_override(d, i, v);
    if (fused) set_fused_views(c->m, il, b ? NULL : v, b ? v : NULL);
    else if (slot == QLM_SLOT_QKV) *(b ? &L->attn_norm_b : &L->attn_norm) = v;
    else if (slot == QLM_SLOT_UP) *(b ? &L->ffn_norm_b : &L->ffn_norm) = v;
    else if (b) *(slot == QLM_SLOT_O ? &L->bv : &L->b_up) = v;
    else
      *(slot == QLM_SLOT_O ? &L->wv : &L->w_up) = (qlm_mat){.type = QLM_TYPE_F32, .rows = t->ne[1], .cols = t->ne[0],
                                                           .data = v, .row_bytes = (size_t)t->ne[0] * sizeof(float)};
  }
  return QLM_OK;
}

/* If every matrix reading the slot's input is quantized by one method with input_scales and the
 * producer can absorb 1/s: compute s, multiply the matrices' columns by it and fold 1/s into the
 * producer (in the driver's overrides and in the model); *s_out = s (malloc'd), or NULL. */
static int smooth_slot(calib_ctx *c, int il, qlm_linear_slot slot, const qlm_layer_stats *st, float **s_out,
                       qlm_error *err) {
  driver *d = c->d;
  *s_out = NULL;
  int idx[8], n = 0, cols = st->cols[slot];
  int64_t rows_total = 0;
  const qlm_quant_method *method = NULL;
  qlm_choice first = {0};
  for (int k = 0; k < (int)(sizeof k_slot_of / sizeof k_slot_of[0]); k++) {
    if (k_slot_of[k].slot != slot) continue;
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s.weight", il, k_slot_of[k].stem);
    int i = tensor_index(d, name);
    if (i < 0) continue;
    qlm_choice ch = qlm_quantize_choice(&d->src->tensors[i], d->p);
    if (ch.kind != QLM_CHOICE_METHOD || !ch.method->input_scales || !(ch.method->smooth_slots & (1u << slot)))
      return QLM_OK;
    if (method && (ch.method != method || ch.opts.alpha != first.opts.alpha || ch.opts.duo != first.opts.duo))
      return QLM_OK; /* mixed: no smoothing */
    method = ch.method, first = ch;
    idx[n++] = i;
    rows_total += d->src->tensors[i].ne[1];
  }
  if (!n || !slot_foldable(d, slot, il)) return QLM_OK;
  float *stack = qlm_malloc((size_t)rows_total * cols * sizeof(float) + 1, "matrices to smooth", err);
  float *sv = qlm_malloc((size_t)cols * sizeof(float), "smoothing factors", err);
  float *am = qlm_malloc((size_t)cols * sizeof(float), "calibration statistics", err);
  float *ab = qlm_malloc((size_t)cols * sizeof(float), "calibration statistics", err);
  double *h = st->hessian[slot] ? qlm_malloc((size_t)cols * cols * sizeof(double), "a Hessian", err) : NULL;
  int rc = (!stack || !sv || !am || !ab || (st->hessian[slot] && !h)) ? QLM_ENOMEM : QLM_OK;
  int64_t off = 0;
  for (int k = 0; k < n && !rc; k++) {
    const qlm_tensor *t = &d->src->tensors[idx[k]];
    float *w = NULL;
    rc = load_f32(d->src, t, t->ne[0] * t->ne[1], d->override[idx[k]], &w, err);
    if (!rc) memcpy(stack + off * cols, w, (size_t)(t->ne[0] * t->ne[1]) * sizeof(float));
    off += t->ne[1];
    free(w);
  }
  if (!rc) {
    double inv = st->n_tokens > 0 ? 1.0 / (double)st->n_tokens : 0.0;
    for (int j = 0; j < cols; j++) am[j] = st->absmax[slot][j], ab[j] = (float)(st->abssum[slot][j] * inv);
    for (size_t e = 0; h && e < (size_t)cols * cols; e++) h[e] = st->hessian[slot][e] * inv;
    qlm_calib cal = {.cols = cols, .n_tokens = st->n_tokens, .act_absmax = am, .act_absmean = ab, .hessian = h};
    first.opts.n_threads = d->p->n_threads, first.opts.pool = d->pool; /* AWQ's search runs its products on it */
    rc = method->input_scales(stack, rows_total, cols, &cal, &first.opts, sv, err);
  }
  for (int k = 0, r0 = 0; k < n && !rc; k++) { /* columns * s */
    const qlm_tensor *t = &d->src->tensors[idx[k]];
    float *w = qlm_malloc((size_t)(t->ne[0] * t->ne[1]) * sizeof(float), "a smoothed matrix", err);
    if (!w) {
      rc = QLM_ENOMEM;
      break;
    }
    for (int64_t r = 0; r < t->ne[1]; r++)
      for (int j = 0; j < cols; j++) w[r * cols + j] = stack[(r0 + r) * cols + j] * sv[j];
    set_override(d, idx[k], w);
    r0 += (int)t->ne[1];
  }
  if (!rc) rc = fold_into_producer(c, il, slot, sv, cols, err);
  free(stack), free(am), free(ab), free(h);
  if (rc) {
    free(sv);
    return rc;
  }
  *s_out = sv;
  return QLM_OK;
}

/* Statistics of x / s for a smoothed slot (s NULL: unchanged copies). */
static void scaled_stats(const qlm_layer_stats *st, int slot, const float *s, double *h, float *amax, float *sq,
                         float *ab) {
  int cols = st->cols[slot];
  double inv = st->n_tokens > 0 ? 1.0 / (double)st->n_tokens : 0.0;
  for (int i = 0; i < cols; i++) {
    double si = s ? s[i] : 1.0;
    amax[i] = (float)(st->absmax[slot][i] / si);
    ab[i] = (float)(st->abssum[slot][i] * inv / si);
    sq[i] = (float)(st->sqsum[slot][i] * inv / (si * si));
    for (int j = 0; h && j < cols; j++) h[(size_t)i * cols + j] = st->hessian[slot][(size_t)i * cols + j] * inv / (si * (s ? s[j] : 1.0));
  }
}

/* The model's input transform of layer il's matrix for stem k (k_slot_of; NULL for attn_qkv). */
static qlm_lin_in *layer_lin_in(qlm_model *m, int il, int k) {
  qlm_layer *L = &m->layers[il];
  qlm_lin_in *ins[] = {&L->in_q, &L->in_k, &L->in_v, &L->in_o, &L->in_gate, &L->in_up, &L->in_down, NULL};
  return ins[k];
}

/* The input transform stored in a quantized tensor's companions (".perm", ".input_scale"; model.h);
 * false when it has other companions (the model cannot run it in place). */
static bool lin_in_of(calib_ctx *c, const qlm_qtensor *q, qlm_lin_in *in, qlm_error *err, int *rc) {
  memset(in, 0, sizeof *in);
  *rc = QLM_OK;
  for (int a = 0; a < q->n_aux; a++) {
    const qlm_qaux *x = &q->aux[a];
    if (!strcmp(x->suffix, ".input_scale") && x->type == QLM_TYPE_F32 && x->n == 1) {
      memcpy(&in->act_scale, x->data, sizeof in->act_scale);
    } else if (!strcmp(x->suffix, ".perm") && x->type == QLM_TYPE_F32 && x->n == q->cols) {
      int32_t *perm = qlm_malloc((size_t)q->cols * sizeof *perm + 1, "a column permutation", err);
      void **o = perm ? realloc(c->owned, (size_t)(c->n_owned + 1) * sizeof *o) : NULL;
      if (!o) {
        free(perm);
        *rc = QLM_ENOMEM;
        return false;
      }
      c->owned = o;
      c->owned[c->n_owned++] = perm;
      for (int64_t j = 0; j < q->cols; j++) perm[j] = (int32_t)((const float *)x->data)[j];
      in->perm = perm;
    } else {
      return false;
    }
  }
  return true;
}

/* Put a quantized matrix into the model (q/k rows back in the model's layout). */
static int swap_into_model(calib_ctx *c, int il, int k, const qlm_tensor *t, const qlm_qtensor *q, qlm_error *err) {
  qlm_lin_in in;
  int rc;
  if (!lin_in_of(c, q, &in, err, &rc) || !qlm_type_traits_of(q->type)) return rc; /* the model keeps f32 */
  void *data = q->data;
  if (needs_rope_permutation(c->d->src, t)) {
    if (!(data = rows_to_model_layout(q, c->d->src->hp.head_dim, err))) return QLM_ENOMEM;
    void **o = realloc(c->owned, (size_t)(c->n_owned + 1) * sizeof *o);
    if (!o) {
      free(data);
      return qlm_fail(err, QLM_ENOMEM, "out of memory");
    }
    c->owned = o;
    c->owned[c->n_owned++] = data;
  }
  qlm_mat full = {.type = q->type, .rows = q->rows, .cols = q->cols, .data = data, .row_bytes = q->row_bytes};
  qlm_layer *L = &c->m->layers[il];
  if (!strcmp(k_slot_of[k].stem, "attn_qkv")) { /* fused q | k | v rows: three views */
    int64_t qd = (int64_t)c->m->hp.n_head * c->m->hp.head_dim, kd = (int64_t)c->m->hp.n_head_kv * c->m->hp.head_dim;
    qlm_mat *v[3] = {&L->wq, &L->wk, &L->wv};
    int64_t r0[3] = {0, qd, qd + kd}, nr[3] = {qd, kd, kd};
    for (int j = 0; j < 3; j++) {
      *v[j] = full;
      v[j]->rows = nr[j];
      v[j]->data = (const unsigned char *)data + (size_t)r0[j] * q->row_bytes;
    }
    L->in_q = L->in_k = L->in_v = in;
    return QLM_OK;
  }
  *layer_mat(c->m, il, k) = full;
  *layer_lin_in(c->m, il, k) = in;
  return QLM_OK;
}

/* Quantize layer il's matrix of stem k (k_slot_of) on the statistics of its slot (of x / sv when
 * the slot was smoothed by sv, else sv NULL) and put it into the model; a matrix without a
 * calibrated method is left for the driver's later pass. */
static int quantize_stem(calib_ctx *c, int il, int k, const qlm_layer_stats *st, const float *sv, qlm_calib_memo *memo,
                         qlm_error *err) {
  driver *d = c->d;
  char name[96];
  snprintf(name, sizeof name, "blk.%d.%s.weight", il, k_slot_of[k].stem);
  const qlm_tensor *t = qlm_source_tensor(d->src, name);
  if (!t || !needs_calib(t, d->p)) return QLM_OK;
  int slot = k_slot_of[k].slot, cols = st->cols[slot];
  if (t->ne[0] != cols)
    return qlm_fail(err, QLM_EINTERNAL, "%s: %lld columns, calibrated %d", name, (long long)t->ne[0], cols);
  double *h = st->hessian[slot] ? qlm_malloc((size_t)cols * cols * sizeof(double), "a Hessian", err) : NULL;
  float *sq = qlm_malloc((size_t)cols * sizeof(float), "calibration statistics", err);
  float *am = qlm_malloc((size_t)cols * sizeof(float), "calibration statistics", err);
  float *ab = qlm_malloc((size_t)cols * sizeof(float), "calibration statistics", err);
  int rc = QLM_OK;
  if ((st->hessian[slot] && !h) || !sq || !am || !ab) {
    rc = QLM_ENOMEM;
  } else {
    scaled_stats(st, slot, sv, h, am, sq, ab);
    /* per-call maxima are of the unsmoothed input: not given for a smoothed slot */
    qlm_calib cal = {.cols = cols, .n_tokens = st->n_tokens, .act_absmax = am, .act_sqmean = sq, .act_absmean = ab,
                     .hessian = h, .n_calls = sv ? 0 : st->n_calls, .call_absmax = sv ? NULL : st->call_absmax[slot],
                     .memo = memo};
    rc = do_tensor(d, (int)(t - d->src->tensors), &cal, err);
  }
  free(h), free(sq), free(am), free(ab);
  if (!rc) rc = swap_into_model(c, il, k, t, &d->outs[t - d->src->tensors], err);
  return rc;
}

/* qlm_calib_layer_fn: smooth, then quantize layer il's calibrated matrices and put them into the
 * model so the following layers are calibrated on the quantized layer's outputs. */
static int on_layer(void *ctx, int il, const qlm_layer_stats *st, qlm_error *err) {
  calib_ctx *c = ctx;
  float *sv[QLM_N_SLOTS] = {0};
  qlm_calib_memo memo[QLM_N_SLOTS] = {0}; /* one per input: its matrices share the statistics */
  int rc = QLM_OK;
  for (int slot = 0; slot < QLM_N_SLOTS && !rc; slot++) rc = smooth_slot(c, il, (qlm_linear_slot)slot, st, &sv[slot], err);
  for (int k = 0; k < (int)(sizeof k_slot_of / sizeof k_slot_of[0]) && !rc; k++)
    rc = quantize_stem(c, il, k, st, sv[k_slot_of[k].slot], &memo[k_slot_of[k].slot], err);
  for (int k = 0; k < QLM_N_SLOTS; k++) free(sv[k]), qlm_calib_memo_clear(&memo[k]);
  return rc;
}

/* qlm_calib_slot_fn (true-sequential GPTQ): quantize layer il's calibrated matrices that read
 * `slot` and put them into the model, so the layer's later stages run on them (no smoothing:
 * that folds into ops the earlier stages have already used). */
static int on_slot(void *ctx, int il, qlm_linear_slot slot, const qlm_layer_stats *st, qlm_error *err) {
  qlm_calib_memo memo = {0};
  int rc = QLM_OK;
  for (int k = 0; k < (int)(sizeof k_slot_of / sizeof k_slot_of[0]) && !rc; k++)
    if (k_slot_of[k].slot == slot) rc = quantize_stem(ctx, il, k, st, NULL, &memo, err);
  qlm_calib_memo_clear(&memo);
  return rc;
}

/* Calibration windows for the driver's passes (text or given ids); *tokens malloc'd. */
static int calib_windows(driver *d, qlm_calib_opts *o, int32_t **tokens, int *L, qlm_error *err) {
  const qlm_quant_params *p = d->p;
  if (!p->calib_text && !p->calib_ids)
    return qlm_fail(err, QLM_EUSAGE, "quantize: the method needs calibration text (--calib FILE)");
  if (o->seq_len > d->src->hp.n_ctx) o->seq_len = d->src->hp.n_ctx;
  if (p->calib_ids) return qlm_calib_sample_ids(p->calib_ids, p->n_calib_ids, -1, o, tokens, L, err);
  char *text = NULL;
  size_t len;
  qlm_tokenizer *tok = NULL;
  int rc = qlm_calib_load_text(p->calib_text, &text, &len, err);
  if (!rc) rc = qlm_tokenizer_new(&d->src->vocab, &tok, err);
  if (!rc) rc = qlm_calib_sample(tok, text, len, o, tokens, L, err);
  qlm_tokenizer_free(tok);
  free(text);
  return rc;
}

/* Run fn over the layers of the f32/quantized source model on the calibration windows (or, when
 * slot_fn is given, the true-sequential pass with slot_fn after each slot). */
static int run_calibration(driver *d, bool hessian, qlm_calib_layer_fn fn, qlm_calib_slot_fn slot_fn, void *ctx,
                           qlm_model **model_out, qlm_error *err) {
  qlm_calib_opts o = d->p->calib;
  o.want_hessian = hessian;
  o.hessian_only = slot_fn != NULL; /* the staged pass quantizes with GPTQ alone (calibrated_pass) */
  int32_t *tokens = NULL;
  int L = 0;
  qlm_model *m = NULL;
  int rc = calib_windows(d, &o, &tokens, &L, err);
  if (!rc) {
    qlm_quant_summary *sum = d->sum;
    sum->calibrated = true, sum->calib_samples = o.n_samples, sum->calib_len = L;
    sum->calib_seed = o.seed, sum->calib_bf16 = o.bf16;
    if (d->p->on_calib) d->p->on_calib(d->p->ctx, o.n_samples, L, calib_label(d->p));
  }
  if (!rc) rc = qlm_model_load(d->src, &m, err);
  if (!rc) *model_out = m;
  if (!rc && slot_fn) rc = qlm_calib_run_staged(m, tokens, o.n_samples, L, &o, d->p->n_threads, slot_fn, ctx, err);
  else if (!rc) rc = qlm_calib_run(m, tokens, o.n_samples, L, &o, d->p->n_threads, fn, ctx, err);
  free(tokens);
  return rc;
}

/* The calibrated matrices are quantized slot by slot within each layer (qlm_calib_run_staged)
 * when every one of them is GPTQ with true_sequential on (its default, as AutoGPTQ's); otherwise
 * (AWQ/SmoothQuant fold scales into ops before the slot, which must still be float; quanto's
 * activation scales and the others are defined on the whole-layer pass; or a mix) the whole layer
 * is quantized at once on the float layer's inputs. */
static int calibrated_pass(driver *d, qlm_error *err) {
  const qlm_quant_params *p = d->p;
  bool any = false, hessian = false, staged = true;
  for (int i = 0; i < d->src->n_tensors; i++)
    if (needs_calib(&d->src->tensors[i], p)) {
      qlm_choice ch = qlm_quantize_choice(&d->src->tensors[i], p);
      any = true;
      hessian |= ch.method->needs_hessian;
      staged &= ch.method == &qlm_method_gptq && !ch.opts.no_true_sequential;
    }
  if (!any) return QLM_OK;
  calib_ctx c = {.d = d};
  int rc = run_calibration(d, hessian, on_layer, staged ? on_slot : NULL, &c, &c.m, err);
  qlm_model_free(c.m);
  for (int i = 0; i < c.n_owned; i++) free(c.owned[i]);
  free(c.owned);
  return rc;
}

/* ---- --target-bpw: per-matrix bits from each matrix's output-error curve (quant/bitalloc.h) */

static const int k_candidate_bits[] = {2, 3, 4, 5, 6, 8};
enum { N_CANDIDATES = sizeof k_candidate_bits / sizeof k_candidate_bits[0] };

typedef struct sens_ctx {
  driver *d;
  int *n_opts;             /* [n_tensors] options found (0: not searched) */
  qlm_bit_option **opts;   /* [n_tensors][N_CANDIDATES] */
} sens_ctx;

/* The options of one matrix: each candidate bit width its method accepts, with its cost and
 * relative output error on H.  Calibrated methods are measured with zero-point RTN at the same
 * group (their own result needs the sequential pass; RTN's curve stands in for it). */
static int sens_matrix(sens_ctx *sc, int i, const double *H, qlm_error *err) {
  driver *d = sc->d;
  const qlm_tensor *t = &d->src->tensors[i];
  qlm_choice ch = qlm_quantize_choice(t, d->p);
  int64_t rows = t->ne[1], cols = t->ne[0];
  float *W = NULL, *back = NULL;
  int rc = load_f32(d->src, t, rows * cols, d->override[i], &W, err);
  if (rc) return rc;
  if (!(back = qlm_malloc((size_t)(rows * cols) * sizeof *back + 1, "a dequantized tensor", err))) {
    free(W);
    return QLM_ENOMEM;
  }
  double norm = qlm_output_error(W, rows, cols, H);
  qlm_bit_option *o = sc->opts[i];
  int n = 0;
  for (int k = 0; k < N_CANDIDATES && !rc; k++) {
    qlm_quant_opts qo = ch.opts;
    qo.bits = k_candidate_bits[k];
    qlm_error e = {0};
    if (ch.method->check && ch.method->check(&qo, rows, cols, &e)) continue; /* this method cannot do these bits */
    const qlm_quant_method *m = choice_calibrated(&ch) ? &qlm_method_zeropoint : ch.method;
    qlm_quant_opts mo = qo;
    if (m != ch.method) mo = (qlm_quant_opts){.bits = qo.bits, .group = qo.group, .asym = true};
    qlm_qtensor q = {0};
    if ((rc = m->quantize(W, rows, cols, NULL, &mo, &q, err))) break;
    if (m->dequantize) rc = m->dequantize(&q, back, err);
    else if (!qlm_dequantize(q.type, q.data, back, rows * cols)) rc = qlm_fail(err, QLM_EINTERNAL, "no dequantizer");
    if (!rc) {
      for (int64_t j = 0; j < rows * cols; j++) back[j] = W[j] - back[j];
      double bytes = (double)q.row_bytes * (double)rows;
      for (int a = 0; a < q.n_aux; a++) bytes += (double)q.aux[a].bytes;
      o[n++] = (qlm_bit_option){.bits = qo.bits, .bytes = bytes,
                                .err = norm > 0 ? qlm_output_error(back, rows, cols, H) / norm : 0.0};
    }
    qlm_qtensor_free(&q);
  }
  free(W), free(back);
  sc->n_opts[i] = n;
  return rc;
}

static int sens_layer(void *ctx, int il, const qlm_layer_stats *st, qlm_error *err) {
  sens_ctx *sc = ctx;
  for (int k = 0; k < (int)(sizeof k_slot_of / sizeof k_slot_of[0]); k++) {
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s.weight", il, k_slot_of[k].stem);
    int i = tensor_index(sc->d, name);
    if (i < 0 || !sc->opts[i]) continue;
    int slot = k_slot_of[k].slot, cols = st->cols[slot];
    double *h = qlm_malloc((size_t)cols * cols * sizeof(double), "a Hessian", err);
    if (!h) return QLM_ENOMEM;
    double inv = st->n_tokens > 0 ? 1.0 / (double)st->n_tokens : 0.0;
    for (size_t e = 0; e < (size_t)cols * cols; e++) h[e] = st->hessian[slot][e] * inv;
    int rc = sens_matrix(sc, i, h, err);
    free(h);
    if (rc) return rc;
  }
  return QLM_OK;
}

static int allocate_bits(driver *d, qlm_error *err) {
  const qlm_source *src = d->src;
  int n = src->n_tensors, rc = QLM_OK;
  sens_ctx sc = {.d = d};
  sc.n_opts = qlm_calloc((size_t)n, sizeof *sc.n_opts, "bit options", err);
  sc.opts = qlm_calloc((size_t)n, sizeof *sc.opts, "bit options", err);
  if (!sc.n_opts || !sc.opts) rc = QLM_ENOMEM;
  int n_search = 0;
  for (int i = 0; i < n && !rc; i++) { /* the linear layers a method quantizes */
    int layer;
    const char *comp = qlm_tensor_component(src->tensors[i].name, &layer);
    qlm_choice ch = qlm_quantize_choice(&src->tensors[i], d->p);
    if (!comp || layer < 0 || ch.kind != QLM_CHOICE_METHOD) continue;
    if (!(sc.opts[i] = qlm_calloc(N_CANDIDATES, sizeof **sc.opts, "bit options", err))) rc = QLM_ENOMEM;
    n_search++;
  }
  if (!rc && !n_search) rc = qlm_fail(err, QLM_EUSAGE, "--target-bpw: no matrix is quantized by a method");
  qlm_model *m = NULL;
  if (!rc) rc = run_calibration(d, true, sens_layer, NULL, &sc, &m, err);
  qlm_model_free(m);
  /* allocate over the matrices with a choice of bit widths; the others keep their method's */
  int *idx = rc ? NULL : qlm_calloc((size_t)n, sizeof *idx, "bit allocation", err);
  int *n_opts = rc ? NULL : qlm_calloc((size_t)n, sizeof *n_opts, "bit allocation", err);
  qlm_bit_option **opts = rc ? NULL : qlm_calloc((size_t)n, sizeof *opts, "bit allocation", err);
  int *choice = rc ? NULL : qlm_calloc((size_t)n, sizeof *choice, "bit allocation", err);
  if (!rc && (!idx || !n_opts || !opts || !choice)) rc = QLM_ENOMEM;
  int k = 0;
  double weights = 0, used = 0;
  for (int i = 0; i < n && !rc; i++)
    if (sc.opts[i] && sc.n_opts[i] > 1) {
      idx[k] = i, n_opts[k] = sc.n_opts[i], opts[k] = sc.opts[i], k++;
      weights += (double)(src->tensors[i].ne[0] * src->tensors[i].ne[1]);
    }
  if (!rc && k == 0) rc = qlm_fail(err, QLM_EUSAGE, "--target-bpw: the method offers no choice of bit widths");
  if (!rc) rc = qlm_bitalloc(k, n_opts, opts, d->p->target_bpw * weights / 8.0, choice, &used, err);
  for (int j = 0; j < k && !rc; j++) d->bits[idx[j]] = opts[j][choice[j]].bits;
  if (!rc && d->p->on_alloc) d->p->on_alloc(d->p->ctx, k, 8.0 * used / weights);
  free(idx), free(n_opts), free(opts), free(choice);
  for (int i = 0; sc.opts && i < n; i++) free(sc.opts[i]);
  free(sc.opts), free(sc.n_opts);
  return rc;
}

int qlm_quantize(const qlm_source *src, const char *out_path, const qlm_quant_params *p, qlm_quant_summary *sum,
                 qlm_error *err) {
  *sum = (qlm_quant_summary){.n_tensors = src->n_tensors, .n_params = qlm_source_n_params(src)};
  int rc = check_params(p, err);
  if (rc) return rc;
  size_t n = (size_t)(src->n_tensors ? src->n_tensors : 1);
  driver d = {.src = src, .p = p, .sum = sum};
  d.outs = qlm_calloc(n, sizeof *d.outs, "output tensors", err);
  d.descs = qlm_calloc(n, sizeof *d.descs, "tensor descriptions", err);
  d.done = qlm_calloc(n, sizeof *d.done, "tensor flags", err);
  d.override = qlm_calloc(n, sizeof *d.override, "tensor overrides", err);
  d.bits = qlm_calloc(n, sizeof *d.bits, "tensor bits", err);
  if (!d.outs || !d.descs || !d.done || !d.override || !d.bits) rc = QLM_ENOMEM;
  d.pool = p->n_threads > 1 ? qlm_pool_new(p->n_threads) : NULL;
  d.t0 = now_s();
  if (!rc && p->target_bpw > 0) rc = allocate_bits(&d, err);
  if (!rc) rc = calibrated_pass(&d, err);
  for (int i = 0; i < src->n_tensors && !rc; i++)
    if (!d.done[i]) rc = do_tensor(&d, i, NULL, err);
  sum->seconds = now_s() - d.t0;
  qlm_pool_free(d.pool);
  if (!rc) rc = write_model(src, p, d.outs, d.descs, sum, out_path, err);
  for (int i = 0; d.outs && d.descs && i < src->n_tensors; i++) {
    qlm_qtensor_free(&d.outs[i]);
    free(d.descs[i]);
  }
  for (int i = 0; d.override && i < src->n_tensors; i++) free(d.override[i]);
  free(d.override);
  free(d.bits);
  free(d.outs);
  free(d.descs);
  free(d.done);
  return rc;
}
