/* gguf_write.c — GGUF v3 writer; layout in gguf.c's header comment.
 *
 *   "GGUF" u32 3  u64 n_tensors  u64 n_kv
 *   n_kv x      { string key; u32 value_type; value }
 *   n_tensors x { string name; u32 n_dims; u64 ne[n_dims]; u32 type; u64 offset }
 *   zero padding to 32, then each tensor's data, each padded to 32.
 * Everything is little-endian; the bytes are assembled explicitly, so the host's order does not
 * matter. */
#include "formats/gguf_write.h"

#include <stdlib.h>
#include <string.h>

#include "core/atomic_file.h"
#include "core/fp16.h"

enum { GGUF_MAX_NAME = 256, GGUF_VERSION = 3 };

typedef struct wtensor {
  char *name;
  int type, n_dims;
  int64_t ne[4];
  const void *data; /* not owned */
  size_t nbytes;
} wtensor;

/* A growable byte buffer. */
typedef struct bytes {
  unsigned char *p;
  size_t len, cap;
} bytes;

struct qlm_gguf_writer {
  bytes kv;          /* serialized metadata entries */
  uint64_t n_kv;
  char **keys;       /* [n_kv] for duplicate checks */
  wtensor *t;        /* [n_t] */
  int n_t, cap_t;
};

static int grow(bytes *b, size_t n, qlm_error *err) {
  size_t need;
  if (qlm_add_overflow(b->len, n, &need)) return qlm_fail(err, QLM_ELIMIT, "GGUF metadata too large");
  if (need <= b->cap) return QLM_OK;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < need) cap *= 2;
  unsigned char *p = realloc(b->p, cap);
  if (!p) return qlm_fail(err, QLM_ENOMEM, "out of memory building GGUF metadata");
  b->p = p;
  b->cap = cap;
  return QLM_OK;
}

static int put(bytes *b, const void *data, size_t n, qlm_error *err) {
  if (grow(b, n, err)) return QLM_ENOMEM;
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return QLM_OK;
}

static int put_le(bytes *b, uint64_t v, int n, qlm_error *err) {
  unsigned char tmp[8];
  for (int i = 0; i < n; i++) tmp[i] = (unsigned char)(v >> (8 * i));
  return put(b, tmp, (size_t)n, err);
}

static int put_str(bytes *b, const char *s, qlm_error *err) {
  size_t n = strlen(s);
  return put_le(b, n, 8, err) || put(b, s, n, err) ? QLM_ENOMEM : QLM_OK;
}

qlm_gguf_writer *qlm_gguf_writer_new(qlm_error *err) {
  qlm_gguf_writer *w = qlm_calloc(1, sizeof *w, "a GGUF writer", err);
  if (w && qlm_gguf_add_u32(w, "general.alignment", QLM_GGUF_ALIGNMENT, err)) {
    qlm_gguf_writer_free(w);
    return NULL;
  }
  return w;
}

void qlm_gguf_writer_free(qlm_gguf_writer *w) {
  if (!w) return;
  for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
  for (int i = 0; i < w->n_t; i++) free(w->t[i].name);
  free(w->keys);
  free(w->t);
  free(w->kv.p);
  free(w);
}

/* Start an entry: check the key is new, serialize key + value type. */
static int begin_kv(qlm_gguf_writer *w, const char *key, qlm_meta_type type, qlm_error *err) {
  if (!key || !*key || strlen(key) > 65535) return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: bad metadata key");
  for (uint64_t i = 0; i < w->n_kv; i++)
    if (strcmp(w->keys[i], key) == 0)
      return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: metadata key '%s' added twice", key);
  char **keys = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *keys);
  if (!keys) return qlm_fail(err, QLM_ENOMEM, "out of memory building GGUF metadata");
  w->keys = keys;
  if (!(keys[w->n_kv] = strdup(key))) return qlm_fail(err, QLM_ENOMEM, "out of memory building GGUF metadata");
  w->n_kv++;
  return put_str(&w->kv, key, err) || put_le(&w->kv, (uint64_t)type, 4, err) ? QLM_ENOMEM : QLM_OK;
}

int qlm_gguf_add_scalar(qlm_gguf_writer *w, const char *key, qlm_meta_type type, uint64_t bits, qlm_error *err) {
  size_t sz = qlm_meta_scalar_size(type);
  if (!sz) return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: '%s': type %d is not a scalar", key, (int)type);
  int rc = begin_kv(w, key, type, err);
  return rc ? rc : put_le(&w->kv, bits, (int)sz, err);
}

int qlm_gguf_add_u32(qlm_gguf_writer *w, const char *key, uint32_t v, qlm_error *err) {
  return qlm_gguf_add_scalar(w, key, QLM_META_U32, v, err);
}
int qlm_gguf_add_i32(qlm_gguf_writer *w, const char *key, int32_t v, qlm_error *err) {
  return qlm_gguf_add_scalar(w, key, QLM_META_I32, (uint32_t)v, err);
}
int qlm_gguf_add_f32(qlm_gguf_writer *w, const char *key, float v, qlm_error *err) {
  return qlm_gguf_add_scalar(w, key, QLM_META_F32, qlm_f32_to_bits(v), err);
}
int qlm_gguf_add_f64(qlm_gguf_writer *w, const char *key, double v, qlm_error *err) {
  uint64_t u;
  memcpy(&u, &v, 8);
  return qlm_gguf_add_scalar(w, key, QLM_META_F64, u, err);
}
int qlm_gguf_add_bool(qlm_gguf_writer *w, const char *key, bool v, qlm_error *err) {
  return qlm_gguf_add_scalar(w, key, QLM_META_BOOL, v ? 1 : 0, err);
}

int qlm_gguf_add_str(qlm_gguf_writer *w, const char *key, const char *s, qlm_error *err) {
  int rc = begin_kv(w, key, QLM_META_STRING, err);
  return rc ? rc : put_str(&w->kv, s, err);
}

int qlm_gguf_add_arr(qlm_gguf_writer *w, const char *key, qlm_meta_type et, const void *data, uint64_t n,
                     qlm_error *err) {
  size_t sz = qlm_meta_scalar_size(et), total;
  if (!sz) return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: '%s': array element type %d is not numeric", key, (int)et);
  if (n > SIZE_MAX || qlm_mul_overflow((size_t)n, sz, &total))
    return qlm_fail(err, QLM_ELIMIT, "GGUF writer: '%s': array too large", key);
  int rc = begin_kv(w, key, QLM_META_ARRAY, err);
  if (rc || (rc = put_le(&w->kv, (uint64_t)et, 4, err)) || (rc = put_le(&w->kv, n, 8, err))) return rc;
  return total ? put(&w->kv, data, total, err) : QLM_OK;
}

int qlm_gguf_add_str_arr(qlm_gguf_writer *w, const char *key, char *const *s, uint64_t n, qlm_error *err) {
  int rc = begin_kv(w, key, QLM_META_ARRAY, err);
  if (rc || (rc = put_le(&w->kv, QLM_META_STRING, 4, err)) || (rc = put_le(&w->kv, n, 8, err))) return rc;
  for (uint64_t i = 0; i < n && !rc; i++) rc = put_str(&w->kv, s[i], err);
  return rc;
}

int qlm_gguf_add_meta(qlm_gguf_writer *w, const qlm_meta *m, qlm_error *err) {
  switch (m->type) {
  case QLM_META_STRING: return qlm_gguf_add_str(w, m->key, m->v.s, err);
  case QLM_META_ARRAY:
    if (m->arr_type == QLM_META_STRING) return qlm_gguf_add_str_arr(w, m->key, m->arr, m->arr_len, err);
    return qlm_gguf_add_arr(w, m->key, m->arr_type, m->arr, m->arr_len, err);
  case QLM_META_F32: return qlm_gguf_add_f32(w, m->key, (float)m->v.f, err);
  case QLM_META_F64: return qlm_gguf_add_f64(w, m->key, m->v.f, err);
  default:
    /* integers and bool: the low bytes of the stored value are its bit pattern (two's complement) */
    return qlm_gguf_add_scalar(w, m->key, m->type, m->v.u, err);
  }
}

int qlm_gguf_add_tensor(qlm_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                        const void *data, size_t nbytes, qlm_error *err) {
  if (!name || strlen(name) == 0 || strlen(name) > GGUF_MAX_NAME)
    return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: bad tensor name");
  if (n_dims < 1 || n_dims > 4) return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: '%s': n_dims %d", name, n_dims);
  size_t expect = qlm_type_row_bytes(type, ne[0]);
  int ovf = expect == 0;
  for (int d = 1; d < n_dims; d++) ovf |= ne[d] < 1 || qlm_mul_overflow(expect, (size_t)ne[d], &expect);
  if (ovf || expect != nbytes)
    return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: tensor '%s': %zu bytes do not match its %s shape", name, nbytes,
                    qlm_type_name(type));
  for (int i = 0; i < w->n_t; i++)
    if (strcmp(w->t[i].name, name) == 0) return qlm_fail(err, QLM_EINTERNAL, "GGUF writer: tensor '%s' added twice", name);
  if (w->n_t == w->cap_t) {
    int cap = w->cap_t ? 2 * w->cap_t : 64;
    wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
    if (!t) return qlm_fail(err, QLM_ENOMEM, "out of memory adding tensor '%s'", name);
    w->t = t;
    w->cap_t = cap;
  }
  wtensor *t = &w->t[w->n_t];
  *t = (wtensor){.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .data = data, .nbytes = nbytes};
  for (int d = 0; d < n_dims; d++) t->ne[d] = ne[d];
  if (!(t->name = strdup(name))) return qlm_fail(err, QLM_ENOMEM, "out of memory adding tensor '%s'", name);
  w->n_t++;
  return QLM_OK;
}

static size_t align_up(size_t n) { return (n + QLM_GGUF_ALIGNMENT - 1) / QLM_GGUF_ALIGNMENT * QLM_GGUF_ALIGNMENT; }

/* Header + metadata + tensor infos, with offsets assigned in order. */
static int build_head(const qlm_gguf_writer *w, bytes *h, qlm_error *err) {
  int rc = put(h, "GGUF", 4, err);
  if (rc || (rc = put_le(h, GGUF_VERSION, 4, err)) || (rc = put_le(h, (uint64_t)w->n_t, 8, err)) ||
      (rc = put_le(h, w->n_kv, 8, err)) || (rc = put(h, w->kv.p, w->kv.len, err)))
    return rc;
  size_t offset = 0;
  for (int i = 0; i < w->n_t && !rc; i++) {
    const wtensor *t = &w->t[i];
    rc = put_str(h, t->name, err) || put_le(h, (uint64_t)t->n_dims, 4, err);
    for (int d = 0; d < t->n_dims && !rc; d++) rc = put_le(h, (uint64_t)t->ne[d], 8, err);
    if (!rc) rc = put_le(h, (uint64_t)t->type, 4, err) || put_le(h, offset, 8, err);
    if (!rc && qlm_add_overflow(offset, align_up(t->nbytes), &offset))
      rc = qlm_fail(err, QLM_ELIMIT, "GGUF writer: tensor data too large");
  }
  return rc ? (err && err->code ? err->code : QLM_ENOMEM) : QLM_OK;
}

int qlm_gguf_write(qlm_gguf_writer *w, const char *path, uint64_t *bytes_out, qlm_error *err) {
  bytes head = {0};
  int rc = build_head(w, &head, err);
  if (rc) {
    free(head.p);
    return rc;
  }
  qlm_atomic_file af;
  rc = qlm_atomic_open(&af, path, err);
  if (!rc) rc = qlm_atomic_write(&af, head.p, head.len, err);
  free(head.p);
  if (!rc) rc = qlm_atomic_pad(&af, QLM_GGUF_ALIGNMENT, err);
  for (int i = 0; i < w->n_t && !rc; i++) {
    rc = qlm_atomic_write(&af, w->t[i].data, w->t[i].nbytes, err);
    if (!rc) rc = qlm_atomic_pad(&af, QLM_GGUF_ALIGNMENT, err);
  }
  uint64_t size = af.written;
  if (!rc) rc = qlm_atomic_commit(&af, err);
  qlm_atomic_abort(&af); /* no-op after a commit or an error that already cleaned up */
  if (!rc && bytes_out) *bytes_out = size;
  return rc;
}
