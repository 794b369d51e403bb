/* model.c — qlm_model_load: check the hyper-parameters, find every tensor the architecture
 * needs under its canonical name (formats/source.h), check its shape, and build qlm_mat views.
 *
 * f32 tensors are used in place (they live as long as the source).  Weight matrices of a type
 * with a quantized dot product (traits->vec_dot: Q4_0..Q8_0, k-quants) are used in place too, in
 * their own type: qlm_matmul runs them directly (kernels/qdot.h).  Everything else — other types,
 * vectors, and the token/position embeddings, whose rows the forward pass reads as floats — is
 * dequantized to f32 into buffers the model owns.  QLM_DEQUANT_ALL=1 in the environment at load
 * time forces the old all-f32 path (to compare the two). */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/memlimit.h"
#include "kernels/bnb4.h"
#include "kernels/x16.h"
#include "kernels/types.h"
#include "model/numerics.h"

/* Sanity limits: far above any real model, low enough that products of them fit easily in
 * 64 bits and rows/cols fit the int arguments of BLAS. */
#define MAX_DIM (1 << 20)      /* n_embd, n_ff, head_dim */
#define MAX_VOCAB (1 << 22)
#define MAX_LAYERS 4096
#define MAX_HEADS 4096
#define MAX_CTX (1 << 24)

/* Buffers the model owns (dequantized copies). */
typedef struct owned_list {
  void **ptr;
  int n, cap;
} owned_list;

/* The loader runs twice: a dry pass that only adds up what the real pass will allocate (so a load
 * that cannot fit is refused before anything is allocated, core/memlimit.h), then the real pass.
 * Both go through the same code so the sum cannot drift from what is allocated. */
typedef struct loader {
  const qlm_source *src;
  qlm_model *m;
  owned_list *owned;
  qlm_error *err;
  bool dry;          /* count, do not allocate; views keep the source's pointers */
  uint64_t need;     /* dry pass: bytes the real pass will malloc for converted weights */
} loader;

static int own(loader *L, void *p) {
  owned_list *o = L->owned;
  if (o->n == o->cap) {
    int cap = o->cap ? o->cap * 2 : 32;
    void **np = realloc(o->ptr, (size_t)cap * sizeof *np);
    if (!np) {
      free(p);
      return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory", L->src->path);
    }
    o->ptr = np;
    o->cap = cap;
  }
  o->ptr[o->n++] = p;
  return QLM_OK;
}

/* Whether matrices stored in `type` stay in that type (see the top of the file). */
static bool keep_quantized(int type) {
  if (type == QLM_TYPE_NF4_DQ) type = QLM_TYPE_NF4; /* expanded at load (expand_dq) */
  if (type == QLM_TYPE_FP4_DQ) type = QLM_TYPE_FP4;
  const qlm_type_traits *tr = qlm_type_traits_of(type);
  if (!tr || (!tr->vec_dot && !tr->vec_dot_t) || !tr->quantize_act) return false;
  const char *env = getenv("QLM_DEQUANT_ALL");
  return !(env && *env && strcmp(env, "0") != 0);
}

/* LLM.int8() weights: the outlier threshold is part of the method recorded for the tensor
 * ("llm-int8 threshold=6"); QLM_INT8_THRESHOLD overrides it for every tensor (0: no outliers). */
static int int8_threshold(loader *L, const char *name, qlm_mat *out) {
  char key[320];
  snprintf(key, sizeof key, "qlm.tensor.%s.method", name);
  const qlm_meta *m = qlm_source_meta(L->src, key);
  const char *p = m && m->type == QLM_META_STRING ? strstr(m->v.s, "threshold=") : NULL;
  out->outlier_threshold = 6.0f;
  if (p) out->outlier_threshold = strtof(p + strlen("threshold="), NULL);
  const char *env = getenv("QLM_INT8_THRESHOLD");
  if (env && *env) out->outlier_threshold = strtof(env, NULL);
  if (!(out->outlier_threshold >= 0.0f))
    return qlm_fail(L->err, QLM_EFORMAT, "%s: tensor '%s': bad LLM.int8() outlier threshold", L->src->path, name);
  out->outlier_stats = &L->m->int8_stats;
  return QLM_OK;
}

/* A companion tensor "<name><suffix>" of `type` with n elements (quant/method.h). */
static int companion(loader *L, const char *name, const char *suffix, int type, int64_t n, const void **data,
                     int64_t *n_out) {
  char cname[320];
  snprintf(cname, sizeof cname, "%s%s", name, suffix);
  const qlm_tensor *c = qlm_source_tensor(L->src, cname);
  if (!c) return qlm_fail(L->err, QLM_EFORMAT, "%s: tensor '%s' needs its companion '%s'", L->src->path, name, cname);
  int64_t count = c->ne[0] * c->ne[1] * c->ne[2] * c->ne[3];
  if (c->type != type || (n >= 0 && count != n) || !c->data || c->nbytes < qlm_type_row_bytes(type, count))
    return qlm_fail(L->err, QLM_EFORMAT, "%s: companion tensor '%s' should be %s with %lld elements", L->src->path,
                    cname, qlm_type_name(type), (long long)(n >= 0 ? n : count));
  *data = c->data;
  *n_out = count;
  return QLM_OK;
}

/* NF4/FP4 with double quantization: expand the 8-bit absmax codes (companion tensors) into
 * NF4/FP4 blocks owned by the model (kernels/bnb4.h). */
static int expand_dq(loader *L, const qlm_tensor *t, const char *name, qlm_tensor *out) {
  const void *aq = NULL, *a2 = NULL, *off = NULL;
  int64_t n_aq = 0, n_a2 = 0, n_off = 0;
  int rc = companion(L, name, ".absmax_q", QLM_TYPE_I8, -1, &aq, &n_aq);
  if (!rc) rc = companion(L, name, ".absmax2", QLM_TYPE_F32, -1, &a2, &n_a2);
  if (!rc) rc = companion(L, name, ".absmax_offset", QLM_TYPE_F32, 1, &off, &n_off);
  if (rc) return rc;
  if (L->dry) { /* the blocks it expands to: NF4/FP4 of the same shape */
    *out = *t;
    out->type = t->type == QLM_TYPE_NF4_DQ ? QLM_TYPE_NF4 : QLM_TYPE_FP4;
    out->nbytes = qlm_type_row_bytes(out->type, t->ne[0]) * (size_t)t->ne[1];
    L->need += out->nbytes;
    return QLM_OK;
  }
  float *absmax2 = qlm_malloc((size_t)n_a2 * sizeof(float) + 1, "double-quantization constants", L->err);
  if (!absmax2) return QLM_ENOMEM;
  memcpy(absmax2, a2, (size_t)n_a2 * sizeof(float)); /* GGUF data is 32-byte aligned, but be safe */
  float offset;
  memcpy(&offset, off, sizeof offset);
  void *blocks = NULL;
  int type;
  rc = qlm_bnb4_expand_dq(t->type, t->data, t->ne[1], t->ne[0], aq, n_aq, absmax2, n_a2, offset, &blocks, &type, L->err);
  free(absmax2);
  if (rc) return qlm_fail_prefix(L->err, "%s: tensor '%s'", L->src->path, name);
  if ((rc = own(L, blocks))) return rc;
  *out = *t;
  out->type = type;
  out->data = blocks;
  out->nbytes = qlm_type_row_bytes(type, t->ne[0]) * (size_t)t->ne[1];
  return QLM_OK;
}

/* Drops the whole pages of [p, p + n) from the process when they lie in the source's read-only
 * file mapping (MADV_DONTNEED there loses nothing: a later read maps them from the file again,
 * usually still in the page cache).  After interleaving, the file's Q4_0/Q4_1/Q5_0/Q4_K pages are rarely read
 * again, and would otherwise count beside the copy: twice the weights' resident memory. */
static void release_mapped(const qlm_source *src, const void *p, size_t n) {
  uintptr_t lo = (uintptr_t)src->mapped, hi = lo + src->mapped_size, page = (uintptr_t)sysconf(_SC_PAGESIZE);
  if (!src->mapped || (uintptr_t)p < lo || (uintptr_t)p + n > hi || (uintptr_t)p + n < (uintptr_t)p) return;
  uintptr_t a = ((uintptr_t)p + page - 1) & ~(page - 1), b = ((uintptr_t)p + n) & ~(page - 1);
  if (b > a) (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Q4_0, Q4_1, Q5_0 and Q4_K matrices also get the 16-row interleaved copy the AVX-512 VNNI kernels read
 * (kernels/x16.h): the same bytes again (Q4_K: +2.8%), so counted with the converted weights.
 * QLM_X16=0 leaves it out (less memory while loading; the matmuls then read the file's layout). */
static int add_x16(loader *L, const char *name, qlm_mat *out) {
  const char *env = getenv("QLM_X16");
  const qlm_x16_kind *k = env && strcmp(env, "0") == 0 ? NULL : qlm_x16_for(out->type, out->cols, qlm_cpu_simd_level());
  size_t nb = k ? k->bytes(out->rows, out->cols) : 0;
  if (nb == 0) return QLM_OK;
  if (L->dry) {
    L->need += nb;
    return QLM_OK;
  }
  void *p = aligned_alloc(64, (nb + 63) & ~(size_t)63);
  if (!p)
    return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory interleaving tensor '%s' (%zu bytes)", L->src->path, name,
                    nb);
#ifdef MADV_POPULATE_WRITE
  /* fault the pages in with one call: one fault per page while packing cost more than the packing
   * (about 1 s for 0.5 GB on a VM) */
  uintptr_t first = (uintptr_t)p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
  (void)madvise((void *)first, nb + ((uintptr_t)p - first), MADV_POPULATE_WRITE);
#endif
  k->pack(out->data, out->row_bytes, out->rows, out->cols, 0, (out->rows + 15) / 16, p);
  int rc = own(L, p);
  if (rc) return rc;
  out->x16 = p;
  release_mapped(L->src, out->data, (size_t)out->rows * out->row_bytes);
  return QLM_OK;
}

/* Find `name` with shape [ne0, ne1] (ne1 == 1 for vectors) and make a qlm_mat of it: f32, or its
 * own quantized type when `quant_ok` and keep_quantized() says so.
 * Absent tensors give *out zeroed and QLM_OK if !required. */
static int get_mat_q(loader *L, const char *name, int64_t ne0, int64_t ne1, bool required, bool quant_ok,
                     qlm_mat *out) {
  const char *path = L->src->path;
  memset(out, 0, sizeof *out);
  const qlm_tensor *t = qlm_source_tensor(L->src, name);
  if (!t) {
    if (!required) return QLM_OK;
    return qlm_fail(L->err, QLM_EFORMAT, "%s: missing tensor '%s' (required by this architecture)", path, name);
  }
  if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
    return qlm_fail(L->err, QLM_EFORMAT,
                    "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld] from the hyper-parameters",
                    path, name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                    (long long)ne0, (long long)ne1);
  qlm_tensor expanded = {0};
  if (qlm_bnb4_is_dq(t->type)) { /* continue with the NF4/FP4 blocks it stands for */
    int rc = expand_dq(L, t, name, &expanded);
    if (rc) return rc;
    t = &expanded;
  }
  const qlm_type_traits *tr = qlm_type_traits_of(t->type);
  if (!tr) return qlm_fail(L->err, QLM_EUNSUPPORTED, "%s: tensor '%s' has unknown type %d", path, name, t->type);
  size_t row_bytes = qlm_type_row_bytes(t->type, ne0), total;
  if (row_bytes == 0 || qlm_mul_overflow(row_bytes, (size_t)ne1, &total))
    return qlm_fail(L->err, QLM_EFORMAT, "%s: tensor '%s': %lld %s weights per row is not a whole number of blocks",
                    path, name, (long long)ne0, tr->name);
  if (!t->data || t->nbytes < total)
    return qlm_fail(L->err, QLM_EFORMAT, "%s: tensor '%s': %zu bytes of data, expected %zu", path, name, t->nbytes, total);

  out->rows = ne1;
  out->cols = ne0;
  if (quant_ok && keep_quantized(t->type)) {
    out->type = t->type;
    out->row_bytes = row_bytes;
    out->data = t->data;
    if (QLM_TYPE_FAMILY(t->type) == QLM_FAMILY_INT8_ROW) return int8_threshold(L, name, out);
    return add_x16(L, name, out);
  }
  out->type = QLM_TYPE_F32;
  out->row_bytes = (size_t)ne0 * sizeof(float);
  if (t->type == QLM_TYPE_F32 && ((uintptr_t)t->data % _Alignof(float)) == 0) {
    out->data = t->data;
    return QLM_OK;
  }
  if (t->type != QLM_TYPE_F32 && !qlm_type_can_dequantize(t->type))
    return qlm_fail(L->err, QLM_EUNSUPPORTED, "%s: tensor '%s': cannot convert type %s to f32", path, name, tr->name);
  size_t nf, nb;
  if (qlm_mul_overflow((size_t)ne0, (size_t)ne1, &nf) || qlm_mul_overflow(nf, sizeof(float), &nb))
    return qlm_fail(L->err, QLM_ELIMIT, "%s: tensor '%s' is too large", path, name);
  if (L->dry) {
    L->need += nb;
    out->data = t->data; /* a non-NULL stand-in, never read as floats */
    return QLM_OK;
  }
  float *buf = malloc(nb ? nb : 1);
  if (!buf)
    return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory converting tensor '%s' (%zu bytes) to f32", path, name, nb);
  if (t->type == QLM_TYPE_F32) {
    memcpy(buf, t->data, nb); /* unaligned f32 data: copy so float loads are legal */
  } else {
    for (int64_t r = 0; r < ne1; r++)
      qlm_dequantize(t->type, (const unsigned char *)t->data + (size_t)r * row_bytes, buf + (size_t)r * (size_t)ne0,
                     ne0);
  }
  int rc = own(L, buf);
  if (rc) return rc;
  out->data = buf;
  return QLM_OK;
}

/* A weight matrix (may stay quantized). */
static int get_mat(loader *L, const char *name, int64_t ne0, int64_t ne1, bool required, qlm_mat *out) {
  return get_mat_q(L, name, ne0, ne1, required, true, out);
}

/* A matrix the forward pass reads as floats (embeddings). */
static int get_mat_f32(loader *L, const char *name, int64_t ne0, int64_t ne1, bool required, qlm_mat *out) {
  return get_mat_q(L, name, ne0, ne1, required, false, out);
}

static int get_vec(loader *L, const char *name, int64_t n, bool required, const float **out) {
  qlm_mat m;
  int rc = get_mat_f32(L, name, n, 1, required, &m);
  *out = m.data;
  return rc;
}

/* Rows [r0, r0 + n) of a matrix (any type: rows are whole blocks), as a matrix of its own
 * (gpt2's fused qkv). */
static qlm_mat mat_rows(const qlm_mat *m, int64_t r0, int64_t n) {
  qlm_mat s = *m;
  s.rows = n;
  s.data = (const unsigned char *)m->data + (size_t)r0 * m->row_bytes;
  /* the interleaved copy can be sliced only at a group boundary */
  const qlm_x16_kind *k = m->x16 && r0 % 16 == 0 ? qlm_x16_for(m->type, m->cols, qlm_cpu_simd_level()) : NULL;
  s.x16 = k ? (const unsigned char *)m->x16 + (size_t)(r0 / 16) * (size_t)(m->cols / k->blk_cols) * k->wblk : NULL;
  return s;
}

static int check_range(const char *path, const char *what, long long v, long long lo, long long hi, qlm_error *err) {
  if (v < lo || v > hi)
    return qlm_fail(err, QLM_EFORMAT, "%s: hyper-parameter %s = %lld is out of range [%lld, %lld]", path, what, v, lo, hi);
  return QLM_OK;
}

static int check_hparams(const char *path, qlm_hparams *hp, qlm_error *err) {
  int rc;
  if (hp->arch != QLM_ARCH_LLAMA && hp->arch != QLM_ARCH_QWEN2 && hp->arch != QLM_ARCH_GPT2)
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: unsupported architecture id %d", path, (int)hp->arch);
  if ((rc = check_range(path, "n_vocab", hp->n_vocab, 1, MAX_VOCAB, err)) ||
      (rc = check_range(path, "n_embd", hp->n_embd, 1, MAX_DIM, err)) ||
      (rc = check_range(path, "n_ff", hp->n_ff, 1, MAX_DIM, err)) ||
      (rc = check_range(path, "n_layer", hp->n_layer, 1, MAX_LAYERS, err)) ||
      (rc = check_range(path, "n_head", hp->n_head, 1, MAX_HEADS, err)))
    return rc;
  if (hp->n_head_kv == 0) hp->n_head_kv = hp->n_head;
  if ((rc = check_range(path, "n_head_kv", hp->n_head_kv, 1, hp->n_head, err))) return rc;
  if (hp->n_head % hp->n_head_kv != 0)
    return qlm_fail(err, QLM_EFORMAT, "%s: n_head %d is not a multiple of n_head_kv %d", path, hp->n_head, hp->n_head_kv);
  if (hp->head_dim == 0) {
    if (hp->n_embd % hp->n_head != 0)
      return qlm_fail(err, QLM_EFORMAT, "%s: n_embd %d is not a multiple of n_head %d", path, hp->n_embd, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
  }
  if ((rc = check_range(path, "head_dim", hp->head_dim, 1, MAX_DIM, err))) return rc;
  if ((long long)hp->head_dim * hp->n_head > MAX_DIM)
    return qlm_fail(err, QLM_EFORMAT, "%s: n_head * head_dim = %lld is too large", path,
                    (long long)hp->head_dim * hp->n_head);
  if (hp->n_ctx < 0 || hp->n_ctx > MAX_CTX)
    return qlm_fail(err, QLM_EFORMAT, "%s: hyper-parameter n_ctx = %d is out of range [0, %d]", path, hp->n_ctx, MAX_CTX);
  if (!(hp->norm_eps >= 0.0f && hp->norm_eps < 1.0f))
    return qlm_fail(err, QLM_EFORMAT, "%s: norm epsilon %g is not in [0, 1)", path, (double)hp->norm_eps);

  if (hp->arch == QLM_ARCH_GPT2) {
    hp->rope_style = QLM_ROPE_NONE;
    hp->n_rot = 0;
    if (hp->n_head_kv != hp->n_head || hp->head_dim * hp->n_head != hp->n_embd)
      return qlm_fail(err, QLM_EFORMAT, "%s: gpt2 needs n_head_kv == n_head and n_head * head_dim == n_embd", path);
    if (hp->n_ctx < 1) return qlm_fail(err, QLM_EFORMAT, "%s: gpt2 needs n_ctx (rows of position_embd) >= 1", path);
    return QLM_OK;
  }
  if (hp->rope_style != QLM_ROPE_INTERLEAVED && hp->rope_style != QLM_ROPE_NEOX)
    return qlm_fail(err, QLM_EFORMAT, "%s: rope style %d is not valid for a rotary model", path, (int)hp->rope_style);
  if (hp->n_rot == 0) hp->n_rot = hp->head_dim;
  if (hp->n_rot < 2 || hp->n_rot > hp->head_dim || hp->n_rot % 2 != 0)
    return qlm_fail(err, QLM_EFORMAT, "%s: n_rot %d must be even and in [2, head_dim %d]", path, hp->n_rot, hp->head_dim);
  if (!(hp->rope_theta > 0.0f) || hp->rope_theta != hp->rope_theta)
    return qlm_fail(err, QLM_EFORMAT, "%s: rope theta %g must be positive", path, (double)hp->rope_theta);
  return QLM_OK;
}

/* The input transform of weight `name` with `cols` inputs from its optional companions (model.h):
 * ".perm" must be a permutation of 0..cols-1, ".input_scale" one positive finite f32. */
static int load_lin_in(loader *L, const char *name, int64_t cols, qlm_lin_in *in) {
  char cname[320];
  const void *data;
  int64_t n;
  memset(in, 0, sizeof *in);
  snprintf(cname, sizeof cname, "%s.perm", name);
  if (qlm_source_tensor(L->src, cname)) {
    int rc = companion(L, name, ".perm", QLM_TYPE_F32, cols, &data, &n);
    if (rc) return rc;
    if (L->dry) {
      L->need += (uint64_t)cols * sizeof(int32_t);
      return QLM_OK;
    }
    int32_t *perm = malloc((size_t)cols * sizeof *perm + 1);
    unsigned char *seen = calloc((size_t)cols + 1, 1);
    if (!perm || !seen) {
      free(perm), free(seen);
      return qlm_fail(L->err, QLM_ENOMEM, "%s: out of memory reading '%s'", L->src->path, cname);
    }
    for (int64_t j = 0; j < cols; j++) {
      float v;
      memcpy(&v, (const unsigned char *)data + (size_t)j * sizeof v, sizeof v);
      if (!(v >= 0.0f && v < (float)cols) || v != floorf(v) || seen[(int64_t)v]) {
        free(perm), free(seen);
        return qlm_fail(L->err, QLM_EFORMAT, "%s: tensor '%s' is not a permutation of 0..%lld (entry %lld)",
                        L->src->path, cname, (long long)cols - 1, (long long)j);
      }
      perm[j] = (int32_t)v;
      seen[perm[j]] = 1;
    }
    free(seen);
    if ((rc = own(L, perm))) return rc;
    in->perm = perm;
  }
  snprintf(cname, sizeof cname, "%s.input_scale", name);
  if (qlm_source_tensor(L->src, cname)) {
    int rc = companion(L, name, ".input_scale", QLM_TYPE_F32, 1, &data, &n);
    if (rc) return rc;
    memcpy(&in->act_scale, data, sizeof in->act_scale);
    if (!(in->act_scale > 0.0f) || !isfinite(in->act_scale))
      return qlm_fail(L->err, QLM_EFORMAT, "%s: tensor '%s' = %g: expected a positive finite scale", L->src->path, cname,
                      (double)in->act_scale);
  }
  return QLM_OK;
}

static int load_lin_ins(loader *L, int il, qlm_layer *ly) {
  const qlm_hparams *hp = &L->m->hp;
  int64_t E = hp->n_embd, F = hp->n_ff, QD = (int64_t)hp->n_head * hp->head_dim;
  static const char *const stems[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
                                      "attn_qkv"};
  qlm_lin_in *ins[] = {&ly->in_q, &ly->in_k, &ly->in_v, &ly->in_o, &ly->in_gate, &ly->in_up, &ly->in_down, NULL};
  int64_t cols[] = {E, E, E, QD, E, E, F, E};
  char nm[128];
  for (int k = 0; k < 8; k++) {
    snprintf(nm, sizeof nm, "blk.%d.%s.weight", il, stems[k]);
    if (!qlm_source_tensor(L->src, nm)) continue;
    qlm_lin_in in;
    int rc = load_lin_in(L, nm, cols[k], &in);
    if (rc) return rc;
    if (ins[k]) *ins[k] = in;
    else ly->in_q = ly->in_k = ly->in_v = in; /* fused q | k | v rows read one input */
  }
  return QLM_OK;
}

static int load_layer(loader *L, int il, qlm_layer *ly) {
  const qlm_hparams *hp = &L->m->hp;
  int64_t E = hp->n_embd, F = hp->n_ff, QD = (int64_t)hp->n_head * hp->head_dim,
          KD = (int64_t)hp->n_head_kv * hp->head_dim;
  bool gpt2 = hp->arch == QLM_ARCH_GPT2, qwen2 = hp->arch == QLM_ARCH_QWEN2;
  char nm[128];
  int rc;
#define NAME(suffix) (snprintf(nm, sizeof nm, "blk.%d.%s", il, suffix), nm)
  if ((rc = get_vec(L, NAME("attn_norm.weight"), E, true, &ly->attn_norm)) ||
      (rc = get_vec(L, NAME("attn_norm.bias"), E, gpt2, &ly->attn_norm_b)) ||
      (rc = get_vec(L, NAME("ffn_norm.weight"), E, true, &ly->ffn_norm)) ||
      (rc = get_vec(L, NAME("ffn_norm.bias"), E, gpt2, &ly->ffn_norm_b)) ||
      (rc = get_mat(L, NAME("attn_output.weight"), QD, E, true, &ly->wo)) ||
      (rc = get_vec(L, NAME("attn_output.bias"), E, gpt2, &ly->bo)) ||
      (rc = get_mat(L, NAME("ffn_up.weight"), E, F, true, &ly->w_up)) ||
      (rc = get_vec(L, NAME("ffn_up.bias"), F, gpt2, &ly->b_up)) ||
      (rc = get_mat(L, NAME("ffn_down.weight"), F, E, true, &ly->w_down)) ||
      (rc = get_vec(L, NAME("ffn_down.bias"), E, gpt2, &ly->b_down)))
    return rc;
  if (gpt2) {
    qlm_mat qkv;
    const float *b;
    if ((rc = get_mat(L, NAME("attn_qkv.weight"), E, 3 * E, true, &qkv)) ||
        (rc = get_vec(L, NAME("attn_qkv.bias"), 3 * E, true, &b)))
      return rc;
    /* fused rows q | k | v: three views, so the forward pass is the same as for llama */
    ly->wq = mat_rows(&qkv, 0, E);
    ly->wk = mat_rows(&qkv, E, E);
    ly->wv = mat_rows(&qkv, 2 * E, E);
    ly->bq = b;
    ly->bk = b + E;
    ly->bv = b + 2 * E;
    return QLM_OK;
  }
  if ((rc = get_mat(L, NAME("attn_q.weight"), E, QD, true, &ly->wq)) ||
      (rc = get_mat(L, NAME("attn_k.weight"), E, KD, true, &ly->wk)) ||
      (rc = get_mat(L, NAME("attn_v.weight"), E, KD, true, &ly->wv)) ||
      (rc = get_vec(L, NAME("attn_q.bias"), QD, qwen2, &ly->bq)) ||
      (rc = get_vec(L, NAME("attn_k.bias"), KD, qwen2, &ly->bk)) ||
      (rc = get_vec(L, NAME("attn_v.bias"), KD, qwen2, &ly->bv)) ||
      (rc = get_mat(L, NAME("ffn_gate.weight"), E, F, true, &ly->w_gate)))
    return rc;
#undef NAME
  return QLM_OK;
}

/* Embeddings, output and layers into L->m (whose hp is checked and whose layers are allocated). */
static int load_weights(loader *L) {
  qlm_model *m = L->m;
  const qlm_source *src = L->src;
  const qlm_hparams *hp = &m->hp;
  int64_t E = hp->n_embd;
  int rc;
  if ((rc = get_mat_f32(L, "token_embd.weight", E, hp->n_vocab, true, &m->tok_embd)) ||
      (rc = get_vec(L, "output_norm.weight", E, true, &m->out_norm)) ||
      (rc = get_vec(L, "output_norm.bias", E, hp->arch == QLM_ARCH_GPT2, &m->out_norm_b)) ||
      (rc = get_mat(L, "output.weight", E, hp->n_vocab, false, &m->output)))
    return rc;
  if (!m->output.data) { /* tied embeddings: the output matmul may still use the quantized rows */
    const qlm_tensor *te = qlm_source_tensor(src, "token_embd.weight");
    if (te && keep_quantized(te->type)) {
      if ((rc = get_mat(L, "token_embd.weight", E, hp->n_vocab, true, &m->output))) return rc;
    } else {
      m->output = m->tok_embd;
    }
  }
  if (hp->arch == QLM_ARCH_GPT2) {
    qlm_mat pe;
    if ((rc = get_mat_f32(L, "position_embd.weight", E, hp->n_ctx, true, &pe))) return rc;
    m->pos_embd = pe.data;
  }
  for (int il = 0; il < hp->n_layer; il++)
    if ((rc = load_layer(L, il, &m->layers[il])) || (rc = load_lin_ins(L, il, &m->layers[il]))) return rc;
  return QLM_OK;
}

/* a * b * ... saturating at UINT64_MAX (absurd contexts must give a huge need, not a wrapped one) */
static uint64_t sat_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

void qlm_state_defaults(const qlm_hparams *hp, int *n_ctx, int *max_batch, int *n_threads) {
  if (*n_ctx <= 0) *n_ctx = hp->n_ctx;
  if (*max_batch <= 0) *max_batch = 512;
  if (*n_threads <= 0) {
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    *n_threads = nproc > 0 ? (int)(nproc < 256 ? nproc : 256) : 1;
  }
}

void qlm_state_buffers(const qlm_hparams *hp, int n_seq, int n_ctx, int max_batch, int n_threads,
                       qlm_state_buf out[QLM_SB_COUNT]) {
  qlm_state_defaults(hp, &n_ctx, &max_batch, &n_threads);
  uint64_t S = (uint64_t)(n_seq > 0 ? n_seq : 1), C = (uint64_t)(n_ctx > 0 ? n_ctx : 0), B = (uint64_t)max_batch,
           T = (uint64_t)n_threads, E = (uint64_t)hp->n_embd, F = (uint64_t)hp->n_ff,
           QD = (uint64_t)hp->n_head * (uint64_t)hp->head_dim, KV = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim,
           R = (uint64_t)(hp->n_rot > 0 ? hp->n_rot / 2 : 0),
           G = hp->n_head_kv > 0 ? (uint64_t)(hp->n_head / hp->n_head_kv) : 1;
  uint64_t cache = sat_mul(sat_mul(S, (uint64_t)hp->n_layer), sat_mul(C, KV));
#define BUF(id, label, n, size, is_kv) out[id] = (qlm_state_buf){label, n, (uint32_t)(size), is_kv}
  BUF(QLM_SB_K_CACHE, "KV cache (keys)", cache, sizeof(float), true);
  BUF(QLM_SB_V_CACHE, "KV cache (values)", cache, sizeof(float), true);
  BUF(QLM_SB_N_PAST, "state", S, sizeof(int), false);
  BUF(QLM_SB_BATCH_NEXT, "state", S, sizeof(int), false);
  BUF(QLM_SB_SEQ_POS, "state", B, sizeof(int32_t), false);
  BUF(QLM_SB_SEQ_ID, "state", B, sizeof(int32_t), false);
  BUF(QLM_SB_SEQ_WANT, "state", B, sizeof(int8_t), false);
  BUF(QLM_SB_X, "activations", sat_mul(B, E), sizeof(float), false);
  BUF(QLM_SB_XN, "activations", sat_mul(B, E), sizeof(float), false);
  BUF(QLM_SB_TMP, "activations", sat_mul(B, E), sizeof(float), false);
  BUF(QLM_SB_Q, "activations", sat_mul(B, QD), sizeof(float), false);
  BUF(QLM_SB_ATT, "activations", sat_mul(B, QD), sizeof(float), false);
  BUF(QLM_SB_K, "activations", sat_mul(B, KV), sizeof(float), false);
  BUF(QLM_SB_V, "activations", sat_mul(B, KV), sizeof(float), false);
  BUF(QLM_SB_HB, "activations", sat_mul(B, F), sizeof(float), false);
  BUF(QLM_SB_HB2, "activations", sat_mul(B, F), sizeof(float), false);
  BUF(QLM_SB_XIN, "activations", sat_mul(B, F + E + QD), sizeof(float), false);
  BUF(QLM_SB_ROPE_COS, "rope table", sat_mul(B, R), sizeof(float), false);
  BUF(QLM_SB_ROPE_SIN, "rope table", sat_mul(B, R), sizeof(float), false);
  BUF(QLM_SB_ROPE_POS, "rope table", B, sizeof(int32_t), false);
  BUF(QLM_SB_SCORES, "attention scores", sat_mul(sat_mul(T, C), G), sizeof(float), false);
  BUF(QLM_SB_GATT_SCORES, "attention scores", B < 2 ? 0 : sat_mul(sat_mul(T, C), B < QLM_GATT_ROWS ? B : QLM_GATT_ROWS),
      sizeof(float), false);
#undef BUF
}

uint64_t qlm_state_buf_bytes(const qlm_state_buf *b) { return sat_mul(b->count ? b->count : 1, b->elem); }

/* Sum of the table's entries that are (kv) or are not (!kv) the KV cache, saturating. */
static uint64_t state_sum(const qlm_state_buf bufs[QLM_SB_COUNT], bool kv) {
  uint64_t total = 0;
  for (int i = 0; i < QLM_SB_COUNT; i++) {
    uint64_t b = bufs[i].kv == kv ? qlm_state_buf_bytes(&bufs[i]) : 0;
    total = total + b < total ? UINT64_MAX : total + b;
  }
  return total;
}

uint64_t qlm_state_kv_bytes(const qlm_hparams *hp, int n_seq, int n_ctx) {
  qlm_state_buf bufs[QLM_SB_COUNT];
  qlm_state_buffers(hp, n_seq, n_ctx, 1, 1, bufs);
  return state_sum(bufs, true);
}

uint64_t qlm_state_scratch_bytes(const qlm_hparams *hp, int n_ctx, int max_batch, int n_threads) {
  qlm_state_buf bufs[QLM_SB_COUNT];
  qlm_state_buffers(hp, 1, n_ctx, max_batch, n_threads, bufs);
  return state_sum(bufs, false);
}

uint64_t qlm_state_bytes(const qlm_hparams *hp, int n_seq, int n_ctx, int max_batch, int n_threads) {
  qlm_state_buf bufs[QLM_SB_COUNT];
  qlm_state_buffers(hp, n_seq, n_ctx, max_batch, n_threads, bufs);
  uint64_t kv = state_sum(bufs, true), rest = state_sum(bufs, false);
  return kv + rest < kv ? UINT64_MAX : kv + rest;
}

/* The non-KV part of the state (everything but keys and values), for the messages. */
static uint64_t state_scratch_all(const qlm_hparams *hp, int n_seq, int n_ctx, int max_batch, int n_threads) {
  qlm_state_buf bufs[QLM_SB_COUNT];
  qlm_state_buffers(hp, n_seq, n_ctx, max_batch, n_threads, bufs);
  return state_sum(bufs, false);
}

int qlm_state_alloc_buffers(const qlm_state_buf bufs[QLM_SB_COUNT], void *ptr[QLM_SB_COUNT], uint64_t *bytes,
                            qlm_error *err) {
  uint64_t total = 0;
  for (int i = 0; i < QLM_SB_COUNT; i++) ptr[i] = NULL;
  for (int i = 0; i < QLM_SB_COUNT; i++) {
    uint64_t b = qlm_state_buf_bytes(&bufs[i]);
    if (b == UINT64_MAX || b > SIZE_MAX) {
      for (int j = 0; j < i; j++) free(ptr[j]), ptr[j] = NULL;
      return qlm_fail(err, QLM_ELIMIT, "state: %s would need more than SIZE_MAX bytes", bufs[i].what);
    }
    if (!(ptr[i] = qlm_calloc(bufs[i].count ? (size_t)bufs[i].count : 1, bufs[i].elem, bufs[i].what, err))) {
      for (int j = 0; j < i; j++) free(ptr[j]), ptr[j] = NULL;
      return QLM_ENOMEM;
    }
    total += b;
  }
  if (bytes) *bytes = total;
  return QLM_OK;
}

/* Refuse (QLM_ELIMIT) a load whose converted weights plus the planned state do not fit. */
static int check_memory(const qlm_source *src, const qlm_hparams *hp, uint64_t weights, const qlm_load_plan *plan,
                        qlm_error *err) {
  const char *env = getenv("QLM_DEQUANT_ALL");
  bool all = env && *env && strcmp(env, "0") != 0;
  qlm_mem_part parts[3] = {
      {all ? "weights dequantized to f32 (QLM_DEQUANT_ALL)" : "weights converted at load", weights, NULL}};
  int n = 1;
  if (plan) {
    parts[n++] = (qlm_mem_part){"KV cache", qlm_state_kv_bytes(hp, plan->n_seq, plan->n_ctx), plan->ctx_desc};
    uint64_t sc = state_scratch_all(hp, plan->n_seq, plan->n_ctx, plan->max_batch, plan->n_threads);
    parts[n++] = (qlm_mem_part){"scratch", sc + plan->extra_bytes < sc ? UINT64_MAX : sc + plan->extra_bytes, NULL};
  }
  return qlm_mem_check(src->path, parts, n, plan && plan->hint ? plan->hint : "use a quantized file", err);
}

int qlm_model_load_planned(const qlm_source *src, const qlm_load_plan *plan, qlm_model **out, qlm_error *err) {
  *out = NULL;
  qlm_model *m = qlm_calloc(1, sizeof *m, "model", err);
  if (!m) return QLM_ENOMEM;
  owned_list *owned = qlm_calloc(1, sizeof *owned, "model buffers", err);
  if (!owned) {
    free(m);
    return QLM_ENOMEM;
  }
  m->owned = owned;
  m->src = src;
  m->hp = src->hp;
  loader L = {.src = src, .m = m, .owned = owned, .err = err, .dry = true};
  int rc = check_hparams(src->path, &m->hp, err);
  if (!rc) rc = qlm_check_weights_on_load(src, err); /* NaN/Inf weights or scales (model/numerics.h) */
  if (rc) goto fail;
  m->layers = qlm_calloc((size_t)m->hp.n_layer, sizeof *m->layers, "model layers", err);
  if (!m->layers) {
    rc = QLM_ENOMEM;
    goto fail;
  }
  /* dry pass: shapes are checked and the conversions counted, nothing allocated */
  if ((rc = load_weights(&L)) || (rc = check_memory(src, &m->hp, L.need, plan, err))) goto fail;
  qlm_layer *layers = m->layers;
  memset(layers, 0, (size_t)m->hp.n_layer * sizeof *layers);
  qlm_hparams hp = m->hp;
  memset(m, 0, sizeof *m);
  *m = (qlm_model){.hp = hp, .src = src, .layers = layers, .owned = owned};
  L.dry = false;
  if ((rc = load_weights(&L))) goto fail;
  *out = m;
  return QLM_OK;
fail:
  qlm_model_free(m);
  return rc;
}

int qlm_model_load(const qlm_source *src, qlm_model **out, qlm_error *err) {
  return qlm_model_load_planned(src, NULL, out, err);
}

void qlm_model_free(qlm_model *m) {
  if (!m) return;
  owned_list *o = m->owned;
  if (o) {
    for (int i = 0; i < o->n; i++) free(o->ptr[i]);
    free(o->ptr);
    free(o);
  }
  free(m->layers);
  free(m);
}

int qlm_state_check_mem(const qlm_model *m, int n_seq, int n_ctx, int max_batch, int n_threads, const char *ctx_desc,
                        const char *hint, qlm_error *err) {
  qlm_mem_part parts[2] = {{"KV cache", qlm_state_kv_bytes(&m->hp, n_seq, n_ctx), ctx_desc},
                           {"scratch", state_scratch_all(&m->hp, n_seq, n_ctx, max_batch, n_threads), NULL}};
  return qlm_mem_check(m->src->path, parts, 2, hint ? hint : "use a smaller --ctx", err);
}
