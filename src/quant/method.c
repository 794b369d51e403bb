/* method.c — the list of quantization methods, option parsing and quantized-tensor helpers. */
#include "quant/method.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernels/types.h"

static const qlm_quant_method *const k_methods[] = {
    &qlm_method_absmax, &qlm_method_zeropoint, &qlm_method_llm_int8, &qlm_method_nf4, &qlm_method_fp4,
    &qlm_method_ggml, &qlm_method_hqq, &qlm_method_gptq, &qlm_method_smoothquant, &qlm_method_awq, &qlm_method_quanto, NULL,
};

const qlm_quant_method *const *qlm_quant_methods(void) { return k_methods; }

void qlm_calib_memo_clear(qlm_calib_memo *m) {
  if (!m) return;
  if (m->data && m->free_data) m->free_data(m->data);
  m->data = NULL, m->free_data = NULL, m->key[0] = 0;
}

const qlm_quant_method *qlm_quant_method_find(const char *name) {
  for (int i = 0; k_methods[i]; i++)
    if (strcasecmp(k_methods[i]->name, name) == 0) return k_methods[i];
  return NULL;
}

static int parse_int(const char *v, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || end == v || *end || x < lo || x > hi) return -1;
  *out = x;
  return 0;
}

static int parse_bool(const char *v, bool *out) {
  if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) *out = true;
  else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) *out = false;
  else return -1;
  return 0;
}

int qlm_quant_opts_parse_kv(qlm_quant_opts *o, const char *key, const char *value, const char *what, qlm_error *err) {
  long x;
  if (!strcmp(key, "bits")) {
    if (parse_int(value, 1, 16, &x)) return qlm_fail(err, QLM_EUSAGE, "%s: bits=%s: expected 1..16", what, value);
    o->bits = (int)x;
  } else if (!strcmp(key, "group")) {
    if (!strcasecmp(value, "channel") || !strcasecmp(value, "row")) o->group = QLM_GROUP_CHANNEL;
    else if (!strcasecmp(value, "tensor")) o->group = QLM_GROUP_TENSOR;
    else if (parse_int(value, 1, 65535, &x))
      return qlm_fail(err, QLM_EUSAGE, "%s: group=%s: expected a size 1..65535, 'channel' or 'tensor'", what, value);
    else o->group = (int)x;
  } else if (!strcmp(key, "asym")) {
    if (parse_bool(value, &o->asym)) return qlm_fail(err, QLM_EUSAGE, "%s: asym=%s: expected 0 or 1", what, value);
  } else if (!strcmp(key, "dq") || !strcmp(key, "double_quant")) {
    if (parse_bool(value, &o->double_quant))
      return qlm_fail(err, QLM_EUSAGE, "%s: %s=%s: expected 0 or 1", what, key, value);
  } else if (!strcmp(key, "threshold")) {
    char *end;
    errno = 0;
    float t = strtof(value, &end);
    if (errno || end == value || *end || !(t >= 0.0f) || t > 1e30f)
      return qlm_fail(err, QLM_EUSAGE, "%s: threshold=%s: expected a number >= 0", what, value);
    o->threshold = t;
    o->threshold_set = true;
  } else if (!strcmp(key, "type")) {
    int t = -1;
    for (int id = 0; id < QLM_TYPE_COUNT_GGML; id++) {
      const qlm_type_traits *tr = qlm_type_traits_of(id);
      if (tr && !strcasecmp(tr->name, value)) t = id;
    }
    if (t < 0) return qlm_fail(err, QLM_EUSAGE, "%s: type=%s: not a llama.cpp type name (e.g. q4_K, q8_0)", what, value);
    o->type = t;
  } else if (!strcmp(key, "alpha")) {
    char *end;
    errno = 0;
    float a = strtof(value, &end);
    if (errno || end == value || *end || !(a >= 0.0f && a <= 1.0f))
      return qlm_fail(err, QLM_EUSAGE, "%s: alpha=%s: expected a number in [0, 1]", what, value);
    o->alpha = a;
    o->alpha_set = true;
  } else if (!strcmp(key, "clip")) {
    bool on;
    if (parse_bool(value, &on)) return qlm_fail(err, QLM_EUSAGE, "%s: clip=%s: expected 0 or 1", what, value);
    o->no_clip = !on;
  } else if (!strcmp(key, "damp")) {
    char *end;
    errno = 0;
    float t = strtof(value, &end);
    if (errno || end == value || *end || !(t >= 0.0f) || t > 1e30f)
      return qlm_fail(err, QLM_EUSAGE, "%s: damp=%s: expected a number >= 0 (fraction of mean diag(H))", what, value);
    o->damp = t;
    o->damp_set = true;
  } else if (!strcmp(key, "act_order") || !strcmp(key, "desc_act")) {
    if (parse_bool(value, &o->act_order))
      return qlm_fail(err, QLM_EUSAGE, "%s: %s=%s: expected 0 or 1", what, key, value);
  } else if (!strcmp(key, "static_groups")) {
    if (parse_bool(value, &o->static_groups))
      return qlm_fail(err, QLM_EUSAGE, "%s: static_groups=%s: expected 0 or 1", what, value);
  } else if (!strcmp(key, "true_sequential")) {
    bool on;
    if (parse_bool(value, &on)) return qlm_fail(err, QLM_EUSAGE, "%s: true_sequential=%s: expected 0 or 1", what, value);
    o->no_true_sequential = !on;
  } else if (!strcmp(key, "block")) {
    if (parse_int(value, 1, 65536, &x)) return qlm_fail(err, QLM_EUSAGE, "%s: block=%s: expected 1..65536", what, value);
    o->block = (int)x;
  } else if (!strcmp(key, "weights")) {
    /* quanto's weight qtypes */
    if (!strcasecmp(value, "qint8") || !strcasecmp(value, "int8")) o->bits = 8, o->float8 = false;
    else if (!strcasecmp(value, "qint4") || !strcasecmp(value, "int4")) o->bits = 4, o->float8 = false;
    else if (!strcasecmp(value, "qint2") || !strcasecmp(value, "int2")) o->bits = 2, o->float8 = false;
    else if (!strcasecmp(value, "qfloat8") || !strcasecmp(value, "float8") || !strcasecmp(value, "qfloat8_e4m3fn"))
      o->bits = 8, o->float8 = true;
    else return qlm_fail(err, QLM_EUSAGE, "%s: weights=%s: expected qint8, qint4, qint2 or qfloat8", what, value);
  } else if (!strcmp(key, "dtype")) {
    if (!strcasecmp(value, "f16") || !strcasecmp(value, "float16") || !strcasecmp(value, "fp16")) o->dtype = QLM_DTYPE_F16;
    else if (!strcasecmp(value, "bf16") || !strcasecmp(value, "bfloat16")) o->dtype = QLM_DTYPE_BF16;
    else if (!strcasecmp(value, "f32") || !strcasecmp(value, "float32") || !strcasecmp(value, "fp32")) o->dtype = QLM_DTYPE_F32;
    else return qlm_fail(err, QLM_EUSAGE, "%s: dtype=%s: expected f16, bf16 or f32", what, value);
  } else if (!strcmp(key, "zeropoint")) {
    if (parse_bool(value, &o->int_zero)) return qlm_fail(err, QLM_EUSAGE, "%s: zeropoint=%s: expected 0 or 1", what, value);
  } else if (!strcmp(key, "activations")) { /* quanto's activation qtype */
    if (!strcasecmp(value, "qint8") || !strcasecmp(value, "int8")) o->act_int8 = true;
    else if (!strcasecmp(value, "none") || !strcmp(value, "0")) o->act_int8 = false;
    else return qlm_fail(err, QLM_EUSAGE, "%s: activations=%s: expected qint8 or none", what, value);
  } else if (!strcmp(key, "duo")) {
    if (parse_bool(value, &o->duo)) return qlm_fail(err, QLM_EUSAGE, "%s: duo=%s: expected 0 or 1", what, value);
  } else {
    return qlm_fail(err, QLM_EUSAGE,
                    "%s: unknown option '%s' (known: bits, group, asym, dq, threshold, type, damp, act_order, "
                    "static_groups, block, true_sequential, alpha, weights, dtype, zeropoint, clip, activations, duo)",
                    what, key);
  }
  return QLM_OK;
}

static int qtensor_alloc(qlm_qtensor *q, int type, int64_t rows, int64_t cols, bool zero, qlm_error *err) {
  size_t rb = qlm_type_row_bytes(type, cols), total;
  if (rb == 0 || rows < 0 || qlm_mul_overflow(rb, (size_t)rows, &total))
    return qlm_fail(err, QLM_ELIMIT, "tensor of %lld x %lld does not fit type %s", (long long)rows, (long long)cols,
                    qlm_type_name(type));
  q->data = zero ? qlm_calloc(total ? total : 1, 1, "quantized tensor", err)
                 : qlm_malloc(total ? total : 1, "quantized tensor", err);
  if (!q->data) return QLM_ENOMEM;
  q->type = type;
  q->rows = rows;
  q->cols = cols;
  q->row_bytes = rb;
  return QLM_OK;
}

int qlm_qtensor_alloc(qlm_qtensor *q, int type, int64_t rows, int64_t cols, qlm_error *err) {
  return qtensor_alloc(q, type, rows, cols, true, err);
}

int qlm_qtensor_alloc_unzeroed(qlm_qtensor *q, int type, int64_t rows, int64_t cols, qlm_error *err) {
  return qtensor_alloc(q, type, rows, cols, false, err);
}

qlm_qaux *qlm_qtensor_add_aux(qlm_qtensor *q, const char *suffix, int type, int64_t n, qlm_error *err) {
  if (q->n_aux >= QLM_QAUX_MAX) {
    qlm_fail(err, QLM_EINTERNAL, "too many companion tensors");
    return NULL;
  }
  size_t bytes = qlm_type_row_bytes(type, n);
  if (bytes == 0 && n > 0) {
    qlm_fail(err, QLM_ELIMIT, "companion tensor of %lld elements does not fit type %s", (long long)n,
             qlm_type_name(type));
    return NULL;
  }
  qlm_qaux *a = &q->aux[q->n_aux];
  memset(a, 0, sizeof *a);
  a->data = qlm_calloc(bytes ? bytes : 1, 1, "companion tensor", err);
  if (!a->data) return NULL;
  snprintf(a->suffix, sizeof a->suffix, "%s", suffix);
  a->type = type;
  a->n = n;
  a->bytes = bytes;
  q->n_aux++;
  return a;
}

void qlm_qtensor_set_bpw(qlm_qtensor *q) {
  double bytes = (double)q->row_bytes * (double)q->rows;
  for (int i = 0; i < q->n_aux; i++) bytes += (double)q->aux[i].bytes;
  double n = (double)q->rows * (double)q->cols;
  q->bpw = n > 0 ? bytes * 8.0 / n : 0.0;
}

void qlm_qtensor_free(qlm_qtensor *q) {
  if (!q) return;
  free(q->data);
  for (int i = 0; i < q->n_aux; i++) free(q->aux[i].data);
  memset(q, 0, sizeof *q);
}
