/* safetensors.h — reading Hugging Face .safetensors files (single or sharded).
 *
 * File layout (https://github.com/huggingface/safetensors):
 *   u64 little-endian N | N bytes of JSON header | data section
 * The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
 * relative to the start of the data section; "__metadata__" (string map) is ignored.
 * Files are mmap'd and tensors point into the mapping. */
#ifndef QLM_SAFETENSORS_H
#define QLM_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/mapfile.h"

#define QLM_ST_MAX_DIMS 4

typedef struct qlm_st_tensor {
  char *name;        /* name as stored (HF name) */
  char dtype[16];    /* dtype string as stored ("F32", "BF16", ...) */
  int type;          /* QLM_TYPE_F32/F16/BF16, or -1 for a dtype qlm does not read */
  int n_dims;        /* 0..QLM_ST_MAX_DIMS */
  int64_t shape[QLM_ST_MAX_DIMS]; /* row-major as stored: shape[n_dims-1] is contiguous */
  const void *data;  /* nbytes inside the file's mapping */
  size_t nbytes;
  int file;          /* index into qlm_st_set.files */
  void *owned;       /* aligned copy of the data when the file's offset is misaligned, else NULL */
  bool misaligned;   /* the file's data for it is not aligned to its element size (data -> owned copy) */
} qlm_st_tensor;

typedef struct qlm_st_set {
  int n_files;
  qlm_mapfile *files; /* [n_files] mappings */
  char **paths;       /* [n_files] file paths, for messages */
  int n_tensors;
  qlm_st_tensor *tensors; /* [n_tensors], sorted by name after qlm_st_open_* */
} qlm_st_set;

/* Open one .safetensors file and add its tensors to `set` (zero-initialise `set` first).
 * Duplicate names (within or across files) are rejected. */
int qlm_st_add_file(qlm_st_set *set, const char *path, qlm_error *err);

/* Open the tensors of a Hugging Face model folder: model.safetensors, or the shards listed by
 * model.safetensors.index.json ("weight_map": {tensor: file}). */
int qlm_st_open_dir(qlm_st_set *set, const char *dir, qlm_error *err);

const qlm_st_tensor *qlm_st_find(const qlm_st_set *set, const char *name);
void qlm_st_free(qlm_st_set *set);

#endif
