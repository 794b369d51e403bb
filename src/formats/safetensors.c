/* safetensors.c — parse .safetensors headers (with cJSON) and point tensors into the mmap.
 *
 * Every number in the header is hostile: offsets are checked against the real data size,
 * byte counts are recomputed from dtype and shape with overflow-checked arithmetic, and
 * the header length is limited before anything is parsed. */
#include "formats/safetensors.h"

#include "core/memlimit.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels/types.h"
#include "tokenizer/vocab.h"

#define ST_MAX_HEADER (100u << 20) /* 100 MiB of JSON is far beyond any real model */
#define ST_MAX_TENSORS (1 << 20)
#define ST_MAX_NAME 1024
#define ST_MAX_SHARDS 10000
#define ST_MAX_DIM (1LL << 40)

/* dtype name -> qlm type (-1: known but not read by qlm) and element size (0: unknown dtype). */
static void dtype_info(const char *s, int *type, size_t *esize) {
  static const struct { const char *name; int type; size_t size; } tab[] = {
      {"F32", QLM_TYPE_F32, 4},  {"F16", QLM_TYPE_F16, 2}, {"BF16", QLM_TYPE_BF16, 2}, {"F64", -1, 8},
      {"I64", -1, 8},  {"U64", -1, 8},  {"I32", -1, 4},  {"U32", -1, 4},   {"I16", -1, 2},
      {"U16", -1, 2},  {"I8", -1, 1},   {"U8", -1, 1},   {"BOOL", -1, 1},  {"F8_E4M3", -1, 1},
      {"F8_E5M2", -1, 1},
  };
  *type = -1;
  *esize = 0;
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (strcmp(s, tab[i].name) == 0) {
      *type = tab[i].type;
      *esize = tab[i].size;
      return;
    }
}

/* A JSON number that must be a non-negative integer <= max; returns 0 on success. */
static int json_uint(const cJSON *j, double max, uint64_t *out) {
  if (!cJSON_IsNumber(j)) return -1;
  double d = j->valuedouble;
  if (!(d >= 0) || d > max || d != floor(d)) return -1;
  *out = (uint64_t)d;
  return 0;
}

static int grow_tensors(qlm_st_set *set, int extra, qlm_error *err) {
  size_t n;
  if ((size_t)set->n_tensors + (size_t)extra > ST_MAX_TENSORS)
    return qlm_fail(err, QLM_ELIMIT, "more than %d tensors in total", ST_MAX_TENSORS);
  if (qlm_mul_overflow((size_t)set->n_tensors + (size_t)extra, sizeof *set->tensors, &n))
    return qlm_fail(err, QLM_ELIMIT, "too many tensors");
  qlm_st_tensor *t = realloc(set->tensors, n ? n : 1);
  if (!t) return qlm_fail(err, QLM_ENOMEM, "out of memory for %d tensor entries", set->n_tensors + extra);
  set->tensors = t;
  return QLM_OK;
}

/* Parse one header entry into *t (name already set). `data`/`data_size`: the data section. */
static int parse_entry(const char *path, const cJSON *e, const unsigned char *data, size_t data_size,
                       qlm_st_tensor *t, qlm_error *err) {
  const char *name = t->name;
  if (!cJSON_IsObject(e)) return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': header entry is not an object", path, name);
  const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
  const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
  const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo))
    return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': needs string \"dtype\", array \"shape\" and array \"data_offsets\"",
                    path, name);
  snprintf(t->dtype, sizeof t->dtype, "%s", jd->valuestring);
  size_t esize;
  dtype_info(jd->valuestring, &t->type, &esize);

  int nd = cJSON_GetArraySize(js);
  if (nd > QLM_ST_MAX_DIMS)
    return qlm_fail(err, QLM_EUNSUPPORTED, "%s: tensor '%s': %d dimensions (at most %d supported)", path, name, nd,
                    QLM_ST_MAX_DIMS);
  t->n_dims = nd;
  size_t count = 1;
  for (int i = 0; i < nd; i++) {
    uint64_t v;
    if (json_uint(cJSON_GetArrayItem(js, i), (double)ST_MAX_DIM, &v))
      return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': shape[%d] is not an integer in [0, 2^40]", path, name, i);
    t->shape[i] = (int64_t)v;
    if (qlm_mul_overflow(count, (size_t)v, &count))
      return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': element count overflows", path, name);
  }
  for (int i = nd; i < QLM_ST_MAX_DIMS; i++) t->shape[i] = 1;

  uint64_t begin, end;
  if (cJSON_GetArraySize(jo) != 2 || json_uint(cJSON_GetArrayItem(jo, 0), 9007199254740992.0, &begin) ||
      json_uint(cJSON_GetArrayItem(jo, 1), 9007199254740992.0, &end))
    return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': data_offsets must be two non-negative integers", path, name);
  if (begin > end || end > data_size)
    return qlm_fail(err, QLM_EFORMAT,
                    "%s: tensor '%s': data_offsets [%llu, %llu] are outside the data section (%zu bytes)", path, name,
                    (unsigned long long)begin, (unsigned long long)end, data_size);
  size_t want = 0;
  if (esize && qlm_mul_overflow(count, esize, &want))
    return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': %zu elements of %s overflow the size", path, name, count,
                    t->dtype);
  if (esize && want != end - begin)
    return qlm_fail(err, QLM_EFORMAT,
                    "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %zu elements of %s need %zu", path,
                    name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin), count,
                    t->dtype, want);
  t->nbytes = (size_t)(end - begin);
  t->data = data + begin;
  t->misaligned = esize > 1 && ((uintptr_t)t->data % esize) != 0; /* copied by align_copies */
  return QLM_OK;
}

/* Kernels read whole floats: give misaligned data (legal in the format, never seen in practice)
 * an aligned private copy instead of letting a reader fault on it.  The copies of one file are
 * added up and checked against the memory available (core/memlimit.h) before any is made. */
static int align_copies(qlm_st_set *set, int file, int first, qlm_error *err) {
  uint64_t total = 0;
  int n = 0;
  const qlm_st_tensor *largest = NULL;
  for (int i = first; i < set->n_tensors; i++) {
    const qlm_st_tensor *t = &set->tensors[i];
    if (!t->misaligned) continue;
    total += t->nbytes;
    n++;
    if (!largest || t->nbytes > largest->nbytes) largest = t;
  }
  if (!n) return QLM_OK;
  char what[64], detail[200], h[32];
  snprintf(what, sizeof what, "aligned copies of %d misaligned tensor%s", n, n == 1 ? "" : "s");
  snprintf(detail, sizeof detail, "(largest '%.120s', %s)", largest->name, qlm_mem_human(largest->nbytes, h, sizeof h));
  qlm_mem_part part = {what, total, detail};
  int rc = qlm_mem_check(set->paths[file], &part, 1, "realign the tensors in the file or free memory", err);
  if (rc) return rc;
  for (int i = first; i < set->n_tensors; i++) {
    qlm_st_tensor *t = &set->tensors[i];
    if (!t->misaligned) continue;
    t->owned = qlm_malloc(t->nbytes, "aligned copy of a misaligned tensor", err);
    if (!t->owned) return qlm_fail_prefix(err, "%s: tensor '%s'", set->paths[file], t->name);
    memcpy(t->owned, t->data, t->nbytes);
    t->data = t->owned;
  }
  return QLM_OK;
}

static int parse_header(qlm_st_set *set, int file, qlm_error *err) {
  const char *path = set->paths[file];
  const qlm_mapfile *m = &set->files[file];
  if (m->size < 8)
    return qlm_fail(err, QLM_EFORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", path, m->size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | m->data[i];
  if (n > m->size - 8)
    return qlm_fail(err, QLM_EFORMAT, "%s: header length %llu is past end of file (%zu bytes)", path,
                    (unsigned long long)n, m->size);
  if (n > ST_MAX_HEADER)
    return qlm_fail(err, QLM_ELIMIT, "%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)n,
                    ST_MAX_HEADER);
  size_t ok = qlm_utf8_valid_prefix((const char *)m->data + 8, (size_t)n);
  if (ok != n)
    return qlm_fail(err, QLM_EFORMAT, "%s: header is not valid UTF-8 (byte 0x%02x at offset %zu)", path,
                    m->data[8 + ok], 8 + ok);
  cJSON *root = cJSON_ParseWithLength((const char *)m->data + 8, (size_t)n);
  if (!root) {
    const char *ep = cJSON_GetErrorPtr();
    long off = ep ? (long)(ep - (const char *)m->data) : -1;
    return qlm_fail(err, QLM_EFORMAT, "%s: header is not valid JSON (error near byte %ld)", path, off);
  }
  int rc = QLM_OK;
  if (!cJSON_IsObject(root)) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: header is not a JSON object", path);
    goto done;
  }
  const unsigned char *data = m->data + 8 + n;
  size_t data_size = m->size - 8 - (size_t)n;
  if ((rc = grow_tensors(set, cJSON_GetArraySize(root), err))) goto done;
  int first = set->n_tensors;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (strcmp(e->string, "__metadata__") == 0) continue;
    if (strlen(e->string) == 0 || strlen(e->string) > ST_MAX_NAME) {
      rc = qlm_fail(err, QLM_EFORMAT, "%s: tensor name is empty or longer than %d bytes", path, ST_MAX_NAME);
      goto done;
    }
    qlm_st_tensor *t = &set->tensors[set->n_tensors];
    memset(t, 0, sizeof *t);
    t->file = file;
    t->name = strdup(e->string);
    if (!t->name) {
      rc = qlm_fail(err, QLM_ENOMEM, "out of memory");
      goto done;
    }
    set->n_tensors++; /* counted now so qlm_st_free releases it on failure */
    if ((rc = parse_entry(path, e, data, data_size, t, err))) goto done;
  }
  rc = align_copies(set, file, first, err);
done:
  cJSON_Delete(root);
  return rc;
}

static int cmp_tensor(const void *a, const void *b) {
  return strcmp(((const qlm_st_tensor *)a)->name, ((const qlm_st_tensor *)b)->name);
}

/* Sort by name (for bsearch) and reject duplicates. */
static int sort_and_check(qlm_st_set *set, qlm_error *err) {
  if (set->n_tensors > 1) qsort(set->tensors, (size_t)set->n_tensors, sizeof *set->tensors, cmp_tensor);
  for (int i = 1; i < set->n_tensors; i++) {
    const qlm_st_tensor *a = &set->tensors[i - 1], *b = &set->tensors[i];
    if (strcmp(a->name, b->name) == 0)
      return qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s' appears twice (also in %s)", set->paths[b->file], b->name,
                      set->paths[a->file]);
  }
  return QLM_OK;
}

static int add_file_unsorted(qlm_st_set *set, const char *path, qlm_error *err) {
  if (set->n_files >= ST_MAX_SHARDS) return qlm_fail(err, QLM_ELIMIT, "%s: more than %d shards", path, ST_MAX_SHARDS);
  qlm_mapfile *f = realloc(set->files, (size_t)(set->n_files + 1) * sizeof *f);
  if (!f) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  set->files = f;
  char **p = realloc(set->paths, (size_t)(set->n_files + 1) * sizeof *p);
  if (!p) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  set->paths = p;
  int i = set->n_files;
  set->paths[i] = strdup(path);
  if (!set->paths[i]) return qlm_fail(err, QLM_ENOMEM, "out of memory");
  int rc = qlm_map_file(path, &set->files[i], err);
  if (rc) {
    free(set->paths[i]);
    return rc;
  }
  set->n_files++;
  return parse_header(set, i, err);
}

int qlm_st_add_file(qlm_st_set *set, const char *path, qlm_error *err) {
  int rc = add_file_unsorted(set, path, err);
  return rc ? rc : sort_and_check(set, err);
}

static char *join_path(const char *dir, const char *name, qlm_error *err) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", dir, name) < 0) {
    qlm_fail(err, QLM_ENOMEM, "out of memory");
    return NULL;
  }
  return p;
}

/* Open every shard named in the index once, then check the index against what they hold. */
static int open_index(qlm_st_set *set, const char *dir, const char *index_path, qlm_error *err) {
  char *text = NULL;
  size_t len = 0;
  int rc = qlm_read_file(index_path, ST_MAX_HEADER, &text, &len, err);
  if (rc) return rc;
  size_t ok = qlm_utf8_valid_prefix(text, len);
  if (ok != len) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: not valid UTF-8 (byte 0x%02x at offset %zu)", index_path,
                  (unsigned char)text[ok], ok);
    free(text);
    return rc;
  }
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!root) return qlm_fail(err, QLM_EFORMAT, "%s: not valid JSON", index_path);
  const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
  if (!cJSON_IsObject(wm)) {
    rc = qlm_fail(err, QLM_EFORMAT, "%s: no \"weight_map\" object", index_path);
    goto done;
  }
  for (const cJSON *e = wm->child; e && !rc; e = e->next) {
    const char *file = cJSON_GetStringValue(e);
    if (!file || !*file || strchr(file, '/') || strstr(file, "..")) {
      rc = qlm_fail(err, QLM_EFORMAT, "%s: tensor '%s': shard file name must be a plain file name in the folder",
                    index_path, e->string);
      break;
    }
    char *path = join_path(dir, file, err);
    if (!path) {
      rc = QLM_ENOMEM;
      break;
    }
    int seen = 0;
    for (int i = 0; i < set->n_files && !seen; i++) seen = strcmp(set->paths[i], path) == 0;
    if (!seen) rc = add_file_unsorted(set, path, err);
    free(path);
  }
  if (!rc) rc = sort_and_check(set, err);
  for (const cJSON *e = wm->child; e && !rc; e = e->next) {
    const qlm_st_tensor *t = qlm_st_find(set, e->string);
    char *path = join_path(dir, e->valuestring, err);
    if (!path) {
      rc = QLM_ENOMEM;
      break;
    }
    if (!t || strcmp(set->paths[t->file], path) != 0)
      rc = qlm_fail(err, QLM_EFORMAT, "%s: lists tensor '%s' in %s, but that file does not hold it", index_path,
                    e->string, e->valuestring);
    free(path);
  }
done:
  cJSON_Delete(root);
  return rc;
}

int qlm_st_open_dir(qlm_st_set *set, const char *dir, qlm_error *err) {
  char *index = join_path(dir, "model.safetensors.index.json", err);
  if (!index) return QLM_ENOMEM;
  struct stat st;
  int rc;
  if (stat(index, &st) == 0) {
    rc = open_index(set, dir, index, err);
  } else {
    char *single = join_path(dir, "model.safetensors", err);
    if (!single) {
      free(index);
      return QLM_ENOMEM;
    }
    if (stat(single, &st) != 0)
      rc = qlm_fail(err, QLM_EIO, "%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
    else
      rc = qlm_st_add_file(set, single, err);
    free(single);
  }
  free(index);
  return rc;
}

const qlm_st_tensor *qlm_st_find(const qlm_st_set *set, const char *name) {
  if (!set->n_tensors) return NULL;
  qlm_st_tensor key = {.name = (char *)name};
  return bsearch(&key, set->tensors, (size_t)set->n_tensors, sizeof key, cmp_tensor);
}

void qlm_st_free(qlm_st_set *set) {
  for (int i = 0; i < set->n_tensors; i++) {
    free(set->tensors[i].name);
    free(set->tensors[i].owned);
  }
  free(set->tensors);
  for (int i = 0; i < set->n_files; i++) {
    qlm_unmap_file(&set->files[i]);
    free(set->paths[i]);
  }
  free(set->files);
  free(set->paths);
  memset(set, 0, sizeof *set);
}
