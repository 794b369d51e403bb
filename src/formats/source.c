/* source.c — the reader-independent part of qlm_source: format detection, tensor and
 * metadata lists, lookups. */
#include "formats/source.h"

#include "formats/llama2c.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

size_t qlm_meta_scalar_size(int type) {
  switch (type) {
  case QLM_META_U8: case QLM_META_I8: case QLM_META_BOOL: return 1;
  case QLM_META_U16: case QLM_META_I16: return 2;
  case QLM_META_U32: case QLM_META_I32: case QLM_META_F32: return 4;
  case QLM_META_U64: case QLM_META_I64: case QLM_META_F64: return 8;
  default: return 0;
  }
}

qlm_source *qlm_source_new(const char *path, const char *format, qlm_error *err) {
  qlm_source *s = qlm_calloc(1, sizeof *s, "model source", err);
  if (!s) return NULL;
  s->path = strdup(path);
  s->format = format;
  qlm_vocab_init(&s->vocab);
  if (!s->path) {
    free(s);
    qlm_fail(err, QLM_ENOMEM, "out of memory");
    return NULL;
  }
  return s;
}

/* Make room for element n of a dynamic array of n elements; the capacity is 8, 16, 32, ...
 * so it is full exactly when n is 0 or a power of two >= 8. */
static int grow(void **arr, int n, size_t elem, qlm_error *err) {
  int full = n == 0 || (n >= 8 && (n & (n - 1)) == 0);
  if (!full) return QLM_OK;
  size_t cap = n ? (size_t)n * 2 : 8;
  void *p = realloc(*arr, cap * elem);
  if (!p) return qlm_fail(err, QLM_ENOMEM, "out of memory growing a list to %zu entries", cap);
  *arr = p;
  return QLM_OK;
}

qlm_tensor *qlm_source_add_tensor(qlm_source *src, const char *name, int type, int n_dims, const int64_t *ne,
                                  const void *data, size_t nbytes, qlm_error *err) {
  if (grow((void **)&src->tensors, src->n_tensors, sizeof *src->tensors, err)) return NULL;
  qlm_tensor *t = &src->tensors[src->n_tensors];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  if (!t->name) {
    qlm_fail(err, QLM_ENOMEM, "out of memory");
    return NULL;
  }
  t->type = type;
  t->n_dims = n_dims;
  for (int i = 0; i < 4; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
  t->data = data;
  t->nbytes = nbytes;
  src->n_tensors++;
  return t;
}

qlm_meta *qlm_source_add_meta(qlm_source *src, const char *key, qlm_error *err) {
  if (grow((void **)&src->meta, src->n_meta, sizeof *src->meta, err)) return NULL;
  qlm_meta *m = &src->meta[src->n_meta];
  memset(m, 0, sizeof *m);
  m->key = strdup(key);
  if (!m->key) {
    qlm_fail(err, QLM_ENOMEM, "out of memory");
    return NULL;
  }
  src->n_meta++;
  return m;
}

const qlm_tensor *qlm_source_tensor(const qlm_source *src, const char *name) {
  for (int i = 0; i < src->n_tensors; i++)
    if (strcmp(src->tensors[i].name, name) == 0) return &src->tensors[i];
  return NULL;
}

const qlm_meta *qlm_source_meta(const qlm_source *src, const char *key) {
  for (int i = 0; i < src->n_meta; i++)
    if (strcmp(src->meta[i].key, key) == 0) return &src->meta[i];
  return NULL;
}

int64_t qlm_source_n_params(const qlm_source *src) {
  int64_t n = 0;
  for (int i = 0; i < src->n_tensors; i++) {
    const qlm_tensor *t = &src->tensors[i];
    n += t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
  }
  return n;
}

static void free_meta(qlm_meta *m) {
  free(m->key);
  if (m->type == QLM_META_STRING) free(m->v.s);
  if (m->type == QLM_META_ARRAY && m->arr_type == QLM_META_STRING && m->arr) {
    char **s = (char **)m->arr;
    for (uint64_t i = 0; i < m->arr_len; i++) free(s[i]);
    free(s);
  }
}

void qlm_source_close(qlm_source *src) {
  if (!src) return;
  for (int i = 0; i < src->n_tensors; i++) free(src->tensors[i].name);
  free(src->tensors);
  for (int i = 0; i < src->n_meta; i++) free_meta(&src->meta[i]);
  free(src->meta);
  qlm_vocab_free(&src->vocab);
  if (src->free_priv) src->free_priv(src->priv);
  free(src->path);
  free(src);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

int qlm_source_set_tokenizer(qlm_source *src, const char *path, qlm_error *err) {
  qlm_vocab v;
  qlm_vocab_init(&v);
  int rc = ends_with(path, ".json") ? qlm_vocab_from_tokenizer_json(path, &v, err)
                                    : qlm_llama2c_read_tokenizer(path, 0, &v, err);
  if (rc) return rc;
  /* Token ids index the model's embedding: a tokenizer of another size gives meaningless ids.
   * Refuse it when the model has a vocabulary of its own of another size, or an embedding with
   * fewer rows than the tokenizer has tokens (a llama2.c header's vocab_size is the tokenizer's
   * size, so there it must be equal, as its own tokenizer.bin must). */
  int own = src->vocab.n_tokens, rows = src->hp.n_vocab;
  bool exact = strcmp(src->format, "llama2c") == 0;
  if ((own > 0 && v.n_tokens != own) || (own == 0 && rows > 0 && (exact ? v.n_tokens != rows : v.n_tokens > rows))) {
    rc = qlm_fail(err, QLM_EUSAGE,
                  "%s: the tokenizer has %d tokens but the model %s has %s %d: its ids would not be the model's "
                  "(leave out --tokenizer to use the model's own)",
                  path, v.n_tokens, src->path, own > 0 ? "a vocabulary of" : "an embedding of", own > 0 ? own : rows);
    qlm_vocab_free(&v);
    return rc;
  }
  qlm_vocab_free(&src->vocab);
  src->vocab = v;
  return QLM_OK;
}

/* A reader's source with the --tokenizer override applied (closed on failure). */
static int with_tokenizer(int rc, const char *tokenizer_path, qlm_source **out, qlm_error *err) {
  if (rc || !tokenizer_path) return rc;
  if ((rc = qlm_source_set_tokenizer(*out, tokenizer_path, err))) {
    qlm_source_close(*out);
    *out = NULL;
  }
  return rc;
}

int qlm_source_open(const char *path, const char *tokenizer_path, qlm_source **out, qlm_error *err) {
  *out = NULL;
  struct stat st;
  if (stat(path, &st) != 0) return qlm_fail(err, QLM_EIO, "%s: cannot open: %s", path, strerror(errno));
  if (S_ISDIR(st.st_mode)) return qlm_hf_open(path, tokenizer_path, out, err);
  FILE *f = fopen(path, "rb");
  if (!f) return qlm_fail(err, QLM_EIO, "%s: cannot open: %s", path, strerror(errno));
  char magic[4] = {0};
  size_t got = fread(magic, 1, 4, f);
  fclose(f);
  if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return with_tokenizer(qlm_gguf_open(path, out, err), tokenizer_path, out, err);
  const char *dot = strrchr(path, '.');
  if (dot && strcmp(dot, ".gguf") == 0)
    return qlm_fail(err, QLM_EFORMAT, "%s: bad magic: expected \"GGUF\" at offset 0", path);
  if (dot && (strcmp(dot, ".json") == 0 || strcmp(dot, ".safetensors") == 0))
    return qlm_fail(err, QLM_EUSAGE, "%s: give the Hugging Face model folder (with config.json), not one file", path);
  /* the llama2.c reader reads tokenizer_path itself, requiring the header's vocab_size tokens */
  return qlm_llama2c_open(path, tokenizer_path, out, err);
}
