/* gguf.c — reader for GGUF v2/v3 files (llama.cpp's model format).
 *
 * Layout (little-endian):
 *   "GGUF" u32 version  u64 n_tensors  u64 n_kv
 *   n_kv x      { string key; u32 value_type; value }
 *   n_tensors x { string name; u32 n_dims; u64 ne[n_dims]; u32 type; u64 offset }
 *   zero padding to ALIGNMENT (general.alignment, default 32), then the tensor data section;
 *   every tensor's offset is relative to that section and a multiple of ALIGNMENT.
 * A string is u64 length + bytes (no NUL).  An array is u32 element type + u64 count + elements.
 *
 * The file is mmap'd; tensors point into the mapping, which lives until qlm_source_close.
 * Every length and count is checked against the bytes that remain before it is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "core/mapfile.h"
#include "formats/source.h"

enum {
  GGUF_MAX_TENSORS = 1 << 20,
  GGUF_MAX_KV = 1 << 20,
  GGUF_MAX_KEY = 65535,           /* spec: keys are at most 65535 bytes */
  GGUF_MAX_NAME = 256,            /* tensor names (ggml allows 64; be a little lenient) */
  GGUF_MAX_STRING = 1 << 24,      /* metadata string values */
  GGUF_MAX_TOK_STRING = 1 << 28,  /* tokenizer.* strings (e.g. an embedded tokenizer.json) */
  GGUF_MAX_ARRAY = 1 << 26,       /* array elements */
  GGUF_DEFAULT_ALIGNMENT = 32,
};

/* A cursor over the mapped file; every read checks the remaining bytes. */
typedef struct reader {
  const char *path;
  const uint8_t *data;
  size_t size, pos;
  qlm_error *err;
} reader;

static int need(reader *r, size_t n, const char *what) {
  if (n > r->size - r->pos)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: truncated: %s needs %zu bytes at offset %zu but the file has %zu",
                    r->path, what, n, r->pos, r->size);
  return QLM_OK;
}

static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static int rd_u32(reader *r, uint32_t *v, const char *what) {
  if (need(r, 4, what)) return QLM_EFORMAT;
  *v = (uint32_t)le(r->data + r->pos, 4);
  r->pos += 4;
  return QLM_OK;
}

static int rd_u64(reader *r, uint64_t *v, const char *what) {
  if (need(r, 8, what)) return QLM_EFORMAT;
  *v = le(r->data + r->pos, 8);
  r->pos += 8;
  return QLM_OK;
}

/* A string in place: *s points into the mapping (not NUL-terminated). */
static int rd_str(reader *r, const char **s, uint64_t *len, uint64_t max, const char *what) {
  int rc = rd_u64(r, len, what);
  if (rc) return rc;
  if (*len > max)
    return qlm_fail(r->err, QLM_ELIMIT, "%s: %s: string length %llu at offset %zu exceeds the limit of %llu bytes",
                    r->path, what, (unsigned long long)*len, r->pos - 8, (unsigned long long)max);
  if (need(r, (size_t)*len, what)) return QLM_EFORMAT;
  *s = (const char *)r->data + r->pos;
  if (memchr(*s, 0, (size_t)*len))
    return qlm_fail(r->err, QLM_EFORMAT, "%s: %s: string at offset %zu contains a NUL byte", r->path, what, r->pos);
  r->pos += (size_t)*len;
  return QLM_OK;
}

/* Keys and tensor names are UTF-8 (the GGUF spec); anything else is a corrupt header. */
static int check_utf8(reader *r, const char *s, uint64_t len, const char *what) {
  size_t ok = qlm_utf8_valid_prefix(s, (size_t)len);
  if (ok == len) return QLM_OK;
  return qlm_fail(r->err, QLM_EFORMAT, "%s: %s at offset %zu is not valid UTF-8 (byte 0x%02x at +%zu)", r->path, what,
                  (size_t)(s - (const char *)r->data), (unsigned char)s[ok], ok);
}

static char *dup_n(const char *s, size_t n, qlm_error *err) {
  char *p = qlm_malloc(n + 1, "a GGUF string", err);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

/* Decode one scalar at p into m->v. */
static void meta_scalar(qlm_meta *m, uint32_t t, const uint8_t *p) {
  uint64_t u = le(p, (int)qlm_meta_scalar_size(t));
  switch (t) {
  case QLM_META_I8: m->v.i = (int8_t)u; break;
  case QLM_META_I16: m->v.i = (int16_t)u; break;
  case QLM_META_I32: m->v.i = (int32_t)u; break;
  case QLM_META_I64: m->v.i = (int64_t)u; break;
  case QLM_META_F32: m->v.f = qlm_bits_to_f32((uint32_t)u); break;
  case QLM_META_F64: { double d; memcpy(&d, &u, 8); m->v.f = d; break; }
  default: m->v.u = u; break;
  }
}

static void kv_what(char *buf, size_t n, const char *key) { snprintf(buf, n, "value of metadata '%.120s'", key); }

/* Read the value of metadata entry m (its key already set) of value type t. */
static int read_value(reader *r, qlm_meta *m, uint32_t t) {
  char what[192];
  kv_what(what, sizeof what, m->key);
  int tok = strncmp(m->key, "tokenizer.", 10) == 0;
  uint64_t max_str = tok ? GGUF_MAX_TOK_STRING : GGUF_MAX_STRING;
  m->type = (qlm_meta_type)t;
  size_t sz = qlm_meta_scalar_size(t);
  if (sz) {
    if (need(r, sz, what)) return QLM_EFORMAT;
    meta_scalar(m, t, r->data + r->pos);
    if (t == QLM_META_BOOL && m->v.u > 1)
      return qlm_fail(r->err, QLM_EFORMAT, "%s: metadata '%s': bool value %llu at offset %zu is not 0 or 1", r->path,
                      m->key, (unsigned long long)m->v.u, r->pos);
    r->pos += sz;
    return QLM_OK;
  }
  if (t == QLM_META_STRING) {
    const char *s;
    uint64_t len;
    int rc = rd_str(r, &s, &len, max_str, what);
    if (rc) return rc;
    m->v.s = dup_n(s, (size_t)len, r->err);
    return m->v.s ? QLM_OK : QLM_ENOMEM;
  }
  if (t != QLM_META_ARRAY)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: metadata '%s': unknown value type %u at offset %zu", r->path, m->key, t,
                    r->pos - 4);
  uint32_t et;
  uint64_t count;
  int rc = rd_u32(r, &et, what);
  if (rc || (rc = rd_u64(r, &count, what))) return rc;
  if (et == QLM_META_ARRAY)
    return qlm_fail(r->err, QLM_EUNSUPPORTED, "%s: metadata '%s': nested arrays are not supported", r->path, m->key);
  if (et != QLM_META_STRING && !qlm_meta_scalar_size(et))
    return qlm_fail(r->err, QLM_EFORMAT, "%s: metadata '%s': unknown array element type %u", r->path, m->key, et);
  if (count > GGUF_MAX_ARRAY)
    return qlm_fail(r->err, QLM_ELIMIT, "%s: metadata '%s': array of %llu elements exceeds the limit of %d", r->path,
                    m->key, (unsigned long long)count, GGUF_MAX_ARRAY);
  m->arr_type = (qlm_meta_type)et;
  /* every element takes at least its scalar size (strings: the u64 length), so the file size
   * bounds what we allocate below */
  size_t min_bytes = (size_t)count * (et == QLM_META_STRING ? 8 : qlm_meta_scalar_size(et));
  if (need(r, min_bytes, what)) return QLM_EFORMAT;
  if (et != QLM_META_STRING) {
    m->arr = r->data + r->pos;
    m->arr_len = count;
    r->pos += min_bytes;
    return QLM_OK;
  }
  char **strs = qlm_calloc((size_t)count, sizeof *strs, "a GGUF string array", r->err);
  if (!strs) return QLM_ENOMEM;
  m->arr = strs; /* owned by the meta from here on: freed by qlm_source_close even if we fail below */
  m->arr_len = count;
  for (uint64_t i = 0; i < count; i++) {
    const char *s;
    uint64_t len;
    if ((rc = rd_str(r, &s, &len, max_str, what))) return rc;
    if (!(strs[i] = dup_n(s, (size_t)len, r->err))) return QLM_ENOMEM;
  }
  return QLM_OK;
}

static int read_kv(reader *r, qlm_source *src, uint64_t idx) {
  char what[64];
  snprintf(what, sizeof what, "key of metadata entry %llu", (unsigned long long)idx);
  const char *k;
  uint64_t klen;
  int rc = rd_str(r, &k, &klen, GGUF_MAX_KEY, what);
  if (rc || (rc = check_utf8(r, k, klen, what))) return rc;
  char *key = dup_n(k, (size_t)klen, r->err);
  if (!key) return QLM_ENOMEM;
  qlm_meta *m = qlm_source_add_meta(src, key, r->err);
  free(key);
  if (!m) return QLM_ENOMEM;
  uint32_t t;
  if ((rc = rd_u32(r, &t, "metadata value type"))) return rc;
  return read_value(r, m, t);
}

/* ---- duplicate detection: sort names, compare neighbours. */
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static const char *find_duplicate(char **names, int n, qlm_error *err, int *rc) {
  *rc = QLM_OK;
  if (n < 2) return NULL;
  char **sorted = qlm_malloc((size_t)n * sizeof *sorted, "a name list", err);
  if (!sorted) {
    *rc = QLM_ENOMEM;
    return NULL;
  }
  memcpy(sorted, names, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
  const char *dup = NULL;
  for (int i = 1; i < n && !dup; i++)
    if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
  free(sorted);
  return dup;
}

static int check_duplicates(qlm_source *src, qlm_error *err) {
  int n = src->n_meta > src->n_tensors ? src->n_meta : src->n_tensors, rc;
  char **names = qlm_malloc((size_t)(n ? n : 1) * sizeof *names, "a name list", err);
  if (!names) return QLM_ENOMEM;
  for (int i = 0; i < src->n_meta; i++) names[i] = src->meta[i].key;
  const char *dup = find_duplicate(names, src->n_meta, err, &rc);
  if (!rc && dup) rc = qlm_fail(err, QLM_EFORMAT, "%s: metadata key '%s' appears more than once", src->path, dup);
  if (!rc) {
    for (int i = 0; i < src->n_tensors; i++) names[i] = src->tensors[i].name;
    dup = find_duplicate(names, src->n_tensors, err, &rc);
    if (!rc && dup) rc = qlm_fail(err, QLM_EFORMAT, "%s: tensor name '%s' appears more than once", src->path, dup);
  }
  free(names);
  return rc;
}

/* ---- tensor infos */

/* Read one tensor info; the tensor is added with data = NULL and its offset stored in *offset. */
static int read_tensor_info(reader *r, qlm_source *src, uint64_t idx, uint64_t *offset) {
  char what[64];
  snprintf(what, sizeof what, "name of tensor %llu", (unsigned long long)idx);
  const char *s;
  uint64_t len;
  int rc = rd_str(r, &s, &len, GGUF_MAX_NAME, what);
  if (rc || (rc = check_utf8(r, s, len, what))) return rc;
  char name[GGUF_MAX_NAME + 1];
  memcpy(name, s, (size_t)len);
  name[len] = 0;
  uint32_t n_dims, type;
  if ((rc = rd_u32(r, &n_dims, "tensor n_dims"))) return rc;
  if (n_dims < 1 || n_dims > 4)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: tensor '%s': n_dims %u is not in 1..4", r->path, name, n_dims);
  int64_t ne[4] = {1, 1, 1, 1};
  for (uint32_t d = 0; d < n_dims; d++) {
    uint64_t v;
    if ((rc = rd_u64(r, &v, "tensor dimension"))) return rc;
    if (v < 1 || v > (uint64_t)INT64_MAX)
      return qlm_fail(r->err, QLM_EFORMAT, "%s: tensor '%s': dimension %u is %llu", r->path, name, d,
                      (unsigned long long)v);
    ne[d] = (int64_t)v;
  }
  if ((rc = rd_u32(r, &type, "tensor type")) || (rc = rd_u64(r, offset, "tensor offset"))) return rc;
  const qlm_type_traits *tt = qlm_type_traits_of((int)type);
  if (!tt)
    return qlm_fail(r->err, type < QLM_TYPE_COUNT_GGML ? QLM_EUNSUPPORTED : QLM_EFORMAT,
                    "%s: tensor '%s': %s tensor type %u", r->path, name,
                    type < QLM_TYPE_COUNT_GGML ? "unsupported" : "invalid", type);
  if (ne[0] % tt->block_size != 0)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: tensor '%s': row length %lld is not a multiple of the %s block size %d",
                    r->path, name, (long long)ne[0], tt->name, tt->block_size);
  int64_t nel = ne[0];
  size_t nbytes = qlm_type_row_bytes((int)type, ne[0]);
  int ovf = nbytes == 0;
  for (int d = 1; d < 4; d++) {
    ovf |= __builtin_mul_overflow(nel, ne[d], &nel);
    ovf |= qlm_mul_overflow(nbytes, (size_t)ne[d], &nbytes);
  }
  if (ovf)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: tensor '%s': shape [%lld, %lld, %lld, %lld] overflows the size arithmetic",
                    r->path, name, (long long)ne[0], (long long)ne[1], (long long)ne[2], (long long)ne[3]);
  return qlm_source_add_tensor(src, name, (int)type, (int)n_dims, ne, NULL, nbytes, r->err) ? QLM_OK : QLM_ENOMEM;
}

/* Point every tensor into the data section, checking alignment and bounds. */
static int place_tensors(reader *r, qlm_source *src, const uint64_t *offsets, size_t data_start, uint32_t align) {
  for (int i = 0; i < src->n_tensors; i++) {
    qlm_tensor *t = &src->tensors[i];
    size_t start, end;
    if (offsets[i] % align != 0)
      return qlm_fail(r->err, QLM_EFORMAT, "%s: tensor '%s': data offset %llu is not a multiple of the alignment %u",
                      r->path, t->name, (unsigned long long)offsets[i], align);
    if (offsets[i] > SIZE_MAX || qlm_add_overflow(data_start, (size_t)offsets[i], &start) ||
        qlm_add_overflow(start, t->nbytes, &end) || end > r->size)
      return qlm_fail(r->err, QLM_EFORMAT,
                      "%s: tensor '%s': data offset %llu + %zu bytes (data section at %zu) is past end of file (%zu bytes)",
                      r->path, t->name, (unsigned long long)offsets[i], t->nbytes, data_start, r->size);
    t->data = r->data + start;
  }
  return QLM_OK;
}

/* ---- typed metadata lookups (absent keys leave the default) */

static int meta_is_int(const qlm_meta *m) {
  switch (m->type) {
  case QLM_META_U8: case QLM_META_I8: case QLM_META_U16: case QLM_META_I16: case QLM_META_U32: case QLM_META_I32:
  case QLM_META_U64: case QLM_META_I64: return 1;
  default: return 0;
  }
}
static int meta_is_signed(qlm_meta_type t) {
  return t == QLM_META_I8 || t == QLM_META_I16 || t == QLM_META_I32 || t == QLM_META_I64;
}

/* An integer key in [0, max] (a negative or larger value is a format error). */
static int get_int(const qlm_source *src, const char *key, int64_t max, int64_t *out, qlm_error *err) {
  const qlm_meta *m = qlm_source_meta(src, key);
  if (!m) return QLM_OK;
  if (!meta_is_int(m)) return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' should be an integer", src->path, key);
  int neg = meta_is_signed(m->type) && m->v.i < 0;
  if (neg || m->v.u > (uint64_t)max)
    return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' = %s%llu is out of range 0..%lld", src->path, key,
                    neg ? "-" : "", neg ? (unsigned long long)-(m->v.i + 1) + 1 : (unsigned long long)m->v.u,
                    (long long)max);
  *out = (int64_t)m->v.u;
  return QLM_OK;
}

static int get_i32(const qlm_source *src, const char *key, int *out, qlm_error *err) {
  int64_t v = *out;
  int rc = get_int(src, key, INT32_MAX, &v, err);
  if (!rc) *out = (int)v;
  return rc;
}

static int get_float(const qlm_source *src, const char *key, float *out, qlm_error *err) {
  const qlm_meta *m = qlm_source_meta(src, key);
  if (!m) return QLM_OK;
  if (m->type != QLM_META_F32 && m->type != QLM_META_F64)
    return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' should be a float", src->path, key);
  *out = (float)m->v.f;
  return QLM_OK;
}

static int get_bool(const qlm_source *src, const char *key, bool *out, qlm_error *err) {
  const qlm_meta *m = qlm_source_meta(src, key);
  if (!m) return QLM_OK;
  if (m->type != QLM_META_BOOL) return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' should be a bool", src->path, key);
  *out = m->v.u != 0;
  return QLM_OK;
}

/* A string key: NULL if absent, error if present with another type. */
static int get_str(const qlm_source *src, const char *key, const char **out, qlm_error *err) {
  const qlm_meta *m = qlm_source_meta(src, key);
  *out = NULL;
  if (!m) return QLM_OK;
  if (m->type != QLM_META_STRING) return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' should be a string", src->path, key);
  *out = m->v.s;
  return QLM_OK;
}

/* An array key with element type et (and, if len >= 0, exactly len elements). */
static int get_arr(const qlm_source *src, const char *key, qlm_meta_type et, int64_t len, const qlm_meta **out,
                   qlm_error *err) {
  const qlm_meta *m = qlm_source_meta(src, key);
  *out = NULL;
  if (!m) return QLM_OK;
  if (m->type != QLM_META_ARRAY || m->arr_type != et)
    return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' has the wrong type (expected an array of type %d)", src->path,
                    key, (int)et);
  if (len >= 0 && m->arr_len != (uint64_t)len)
    return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' has %llu elements but the vocabulary has %lld tokens",
                    src->path, key, (unsigned long long)m->arr_len, (long long)len);
  *out = m;
  return QLM_OK;
}

/* ---- tokenizer description from tokenizer.ggml.* */

static int copy_strings(const qlm_meta *m, char ***out, qlm_error *err) {
  char *const *s = m->arr;
  char **d = qlm_calloc((size_t)m->arr_len, sizeof *d, "vocabulary strings", err);
  if (!d) return QLM_ENOMEM;
  *out = d;
  for (uint64_t i = 0; i < m->arr_len; i++)
    if (!(d[i] = strdup(s[i]))) return qlm_fail(err, QLM_ENOMEM, "out of memory copying the vocabulary");
  return QLM_OK;
}

static int token_id(const qlm_source *src, const char *key, int *out, qlm_error *err) {
  /* converters write "no such token" as -1, often stored as u32 0xFFFFFFFF */
  const qlm_meta *m = qlm_source_meta(src, key);
  if (m && ((m->type == QLM_META_U32 && m->v.u == UINT32_MAX) || (meta_is_signed(m->type) && m->v.i == -1))) {
    *out = -1;
    return QLM_OK;
  }
  int64_t v = -1;
  int rc = get_int(src, key, INT32_MAX, &v, err);
  if (rc) return rc;
  if (v >= src->vocab.n_tokens && v >= 0)
    return qlm_fail(err, QLM_EFORMAT, "%s: metadata '%s' = %lld is not a token id (vocabulary has %d tokens)",
                    src->path, key, (long long)v, src->vocab.n_tokens);
  *out = (int)v;
  return QLM_OK;
}

static int fill_vocab(qlm_source *src, qlm_error *err) {
  qlm_vocab *v = &src->vocab;
  const char *model, *pre;
  const qlm_meta *toks, *scores, *types, *merges;
  int rc = get_str(src, "tokenizer.ggml.model", &model, err);
  if (rc || (rc = get_arr(src, "tokenizer.ggml.tokens", QLM_META_STRING, -1, &toks, err))) return rc;
  if (!toks) return QLM_OK; /* no vocabulary in this file */
  if (model && strcmp(model, "llama") == 0) v->kind = QLM_TOK_SPM;
  else if (model && strcmp(model, "gpt2") == 0) v->kind = QLM_TOK_BPE;
  /* "bert" and others: the tokens are still described, but kind stays NONE */
  /* llama.cpp's defaults when the keys are absent: SentencePiece vocabs add BOS and a space prefix */
  v->add_space_prefix = v->kind == QLM_TOK_SPM;
  v->add_bos = v->kind == QLM_TOK_SPM;
  if (toks->arr_len > INT32_MAX) return qlm_fail(err, QLM_ELIMIT, "%s: too many tokens", src->path);
  int n = (int)toks->arr_len;
  if ((rc = get_arr(src, "tokenizer.ggml.scores", QLM_META_F32, n, &scores, err)) ||
      (rc = get_arr(src, "tokenizer.ggml.token_type", QLM_META_I32, n, &types, err)) ||
      (rc = get_arr(src, "tokenizer.ggml.merges", QLM_META_STRING, -1, &merges, err)) ||
      (rc = get_str(src, "tokenizer.ggml.pre", &pre, err)))
    return rc;
  if ((rc = copy_strings(toks, &v->tokens, err))) return rc;
  v->n_tokens = n;
  if (!(v->token_len = qlm_malloc((size_t)n * sizeof *v->token_len, "token lengths", err))) return QLM_ENOMEM;
  for (int i = 0; i < n; i++) v->token_len[i] = (int)strlen(v->tokens[i]);
  if (scores) {
    if (!(v->scores = qlm_malloc((size_t)n * sizeof *v->scores, "token scores", err))) return QLM_ENOMEM;
    const uint8_t *p = scores->arr;
    for (int i = 0; i < n; i++) v->scores[i] = qlm_bits_to_f32((uint32_t)le(p + 4 * (size_t)i, 4));
  }
  if (types) {
    if (!(v->token_type = qlm_malloc((size_t)n * sizeof *v->token_type, "token types", err))) return QLM_ENOMEM;
    const uint8_t *p = types->arr;
    for (int i = 0; i < n; i++) v->token_type[i] = (int32_t)(uint32_t)le(p + 4 * (size_t)i, 4);
  }
  if (merges) {
    if (merges->arr_len > INT32_MAX) return qlm_fail(err, QLM_ELIMIT, "%s: too many merges", src->path);
    if ((rc = copy_strings(merges, &v->merges, err))) return rc;
    v->n_merges = (int)merges->arr_len;
  }
  if (pre) {
    if (strlen(pre) >= sizeof v->pre)
      return qlm_fail(err, QLM_ELIMIT, "%s: tokenizer.ggml.pre '%.80s' is longer than %zu bytes", src->path, pre,
                      sizeof v->pre - 1);
    strcpy(v->pre, pre);
  }
  if ((rc = token_id(src, "tokenizer.ggml.bos_token_id", &v->bos_id, err)) ||
      (rc = token_id(src, "tokenizer.ggml.eos_token_id", &v->eos_id, err)) ||
      (rc = token_id(src, "tokenizer.ggml.unknown_token_id", &v->unk_id, err)) ||
      (rc = token_id(src, "tokenizer.ggml.padding_token_id", &v->pad_id, err)) ||
      (rc = get_bool(src, "tokenizer.ggml.add_bos_token", &v->add_bos, err)) ||
      (rc = get_bool(src, "tokenizer.ggml.add_eos_token", &v->add_eos, err)) ||
      (rc = get_bool(src, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix, err)))
    return rc;
  return QLM_OK;
}

/* ---- hyper-parameters from ARCH.* keys (only for the architectures qlm runs; the model loader
 * rejects others by general.architecture) */

static int fill_hparams(qlm_source *src, qlm_error *err) {
  qlm_hparams *hp = &src->hp;
  const char *arch;
  int rc = get_str(src, "general.architecture", &arch, err);
  if (rc) return rc;
  const qlm_tensor *emb = qlm_source_tensor(src, "token_embd.weight");
  if (emb && emb->ne[1] <= INT32_MAX) hp->n_vocab = (int)emb->ne[1];
  else hp->n_vocab = src->vocab.n_tokens;
  hp->tied_embeddings = qlm_source_tensor(src, "output.weight") == NULL;
  if (!arch) return QLM_OK;
  if (strcmp(arch, "llama") == 0) hp->arch = QLM_ARCH_LLAMA, hp->rope_style = QLM_ROPE_INTERLEAVED;
  else if (strcmp(arch, "qwen2") == 0) hp->arch = QLM_ARCH_QWEN2, hp->rope_style = QLM_ROPE_NEOX;
  else if (strcmp(arch, "gpt2") == 0) hp->arch = QLM_ARCH_GPT2, hp->rope_style = QLM_ROPE_NONE;
  else return QLM_OK; /* unknown: metadata only, hparams stay zero */
  char key[128];
#define K(suffix) (snprintf(key, sizeof key, "%s.%s", arch, suffix), key)
  hp->rope_theta = 10000.0f;
  int key_length = 0;
  if ((rc = get_i32(src, K("context_length"), &hp->n_ctx, err)) ||
      (rc = get_i32(src, K("embedding_length"), &hp->n_embd, err)) ||
      (rc = get_i32(src, K("feed_forward_length"), &hp->n_ff, err)) ||
      (rc = get_i32(src, K("block_count"), &hp->n_layer, err)) ||
      (rc = get_i32(src, K("attention.head_count"), &hp->n_head, err)))
    return rc;
  hp->n_head_kv = hp->n_head;
  if ((rc = get_i32(src, K("attention.head_count_kv"), &hp->n_head_kv, err)) ||
      (rc = get_i32(src, K("attention.key_length"), &key_length, err)) ||
      (rc = get_float(src, K("rope.freq_base"), &hp->rope_theta, err)))
    return rc;
  const char *eps_key = hp->arch == QLM_ARCH_GPT2 ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon";
  if ((rc = get_float(src, K(eps_key), &hp->norm_eps, err))) return rc;
  hp->head_dim = key_length ? key_length : (hp->n_head > 0 ? hp->n_embd / hp->n_head : 0);
  hp->n_rot = hp->arch == QLM_ARCH_GPT2 ? 0 : hp->head_dim;
  if ((rc = get_i32(src, K("rope.dimension_count"), &hp->n_rot, err))) return rc;
#undef K
  return QLM_OK;
}

/* ---- the reader */

typedef struct gguf_priv {
  qlm_mapfile map;
} gguf_priv;

static void gguf_free_priv(void *p) {
  if (!p) return;
  qlm_unmap_file(&((gguf_priv *)p)->map);
  free(p);
}

static int read_header(reader *r, uint64_t *n_tensors, uint64_t *n_kv) {
  if (r->size < 4 || memcmp(r->data, "GGUF", 4) != 0)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: bad magic: expected \"GGUF\" at offset 0", r->path);
  r->pos = 4;
  uint32_t version;
  int rc = rd_u32(r, &version, "header version");
  if (rc) return rc;
  if (version == 1)
    return qlm_fail(r->err, QLM_EUNSUPPORTED, "%s: GGUF version 1 is not supported (only 2 and 3)", r->path);
  if (version != 2 && version != 3)
    return qlm_fail(r->err, QLM_EUNSUPPORTED, "%s: GGUF version %u is not supported (only 2 and 3, little-endian)",
                    r->path, version);
  if ((rc = rd_u64(r, n_tensors, "header tensor count")) || (rc = rd_u64(r, n_kv, "header metadata count")))
    return rc;
  if (*n_tensors > GGUF_MAX_TENSORS)
    return qlm_fail(r->err, QLM_ELIMIT, "%s: %llu tensors exceeds the limit of %d", r->path,
                    (unsigned long long)*n_tensors, GGUF_MAX_TENSORS);
  if (*n_kv > GGUF_MAX_KV)
    return qlm_fail(r->err, QLM_ELIMIT, "%s: %llu metadata entries exceeds the limit of %d", r->path,
                    (unsigned long long)*n_kv, GGUF_MAX_KV);
  return QLM_OK;
}

static int get_alignment(const qlm_source *src, uint32_t *align, qlm_error *err) {
  *align = GGUF_DEFAULT_ALIGNMENT;
  const qlm_meta *m = qlm_source_meta(src, "general.alignment");
  if (!m) return QLM_OK;
  if (m->type != QLM_META_U32)
    return qlm_fail(err, QLM_EFORMAT, "%s: general.alignment should be a uint32", src->path);
  if (m->v.u == 0 || (m->v.u & (m->v.u - 1)) != 0 || m->v.u > (1u << 24))
    return qlm_fail(err, QLM_EFORMAT, "%s: general.alignment %llu is not a power of two (up to 2^24)", src->path,
                    (unsigned long long)m->v.u);
  *align = (uint32_t)m->v.u;
  return QLM_OK;
}

static int gguf_parse(reader *r, qlm_source *src) {
  uint64_t n_tensors = 0, n_kv = 0;
  int rc = read_header(r, &n_tensors, &n_kv);
  for (uint64_t i = 0; !rc && i < n_kv; i++) rc = read_kv(r, src, i);
  uint32_t align = 0;
  if (rc || (rc = get_alignment(src, &align, r->err))) return rc;
  /* each tensor info takes at least 32 bytes: check before allocating the offsets */
  if (n_tensors * 32 > r->size - r->pos)
    return qlm_fail(r->err, QLM_EFORMAT, "%s: truncated: %llu tensor infos cannot fit in the %zu bytes after offset %zu",
                    r->path, (unsigned long long)n_tensors, r->size - r->pos, r->pos);
  uint64_t *offsets = qlm_malloc((size_t)(n_tensors ? n_tensors : 1) * sizeof *offsets, "tensor offsets", r->err);
  if (!offsets) return QLM_ENOMEM;
  for (uint64_t i = 0; !rc && i < n_tensors; i++) rc = read_tensor_info(r, src, i, &offsets[i]);
  if (!rc) rc = check_duplicates(src, r->err);
  if (!rc) {
    /* the data section starts at the next multiple of the alignment (the padding may be absent
     * when there are no tensors) */
    size_t data_start = r->pos + (align - r->pos % align) % align;
    rc = place_tensors(r, src, offsets, data_start, align);
  }
  free(offsets);
  if (rc || (rc = fill_vocab(src, r->err)) || (rc = fill_hparams(src, r->err))) return rc;
  return QLM_OK;
}

int qlm_gguf_open(const char *path, qlm_source **out, qlm_error *err) {
  *out = NULL;
  qlm_source *src = qlm_source_new(path, "gguf", err);
  if (!src) return QLM_ENOMEM;
  gguf_priv *priv = qlm_calloc(1, sizeof *priv, "gguf reader state", err);
  if (!priv) {
    qlm_source_close(src);
    return QLM_ENOMEM;
  }
  src->priv = priv;
  src->free_priv = gguf_free_priv;
  int rc = qlm_map_file(path, &priv->map, err);
  if (!rc) {
    src->mapped = priv->map.data;
    src->mapped_size = priv->map.size;
    reader r = {path, priv->map.data, priv->map.size, 0, err};
    rc = gguf_parse(&r, src);
  }
  if (rc) {
    /* allocation failures inside helpers do not always know the path: add it */
    if (rc == QLM_ENOMEM && err && !strstr(err->msg, path)) qlm_fail_prefix(err, "%s", path);
    qlm_source_close(src);
    return rc;
  }
  *out = src;
  return QLM_OK;
}
