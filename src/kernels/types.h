/* types.h — storage types of weight tensors and their traits table.
 *
 * Type ids equal ggml's (so a GGUF tensor's type field maps directly); types qlm adds
 * later (NF4, HQQ, ...) take ids from QLM_TYPE_QLM_BASE upward, which llama.cpp never uses.
 * Every type is stored as blocks of `block_size` weights taking `type_size` bytes; a row
 * of a matrix is a whole number of blocks.  Layouts are documented in kernels/types.c. */
#ifndef QLM_TYPES_H
#define QLM_TYPES_H

#include <stddef.h>
#include <stdint.h>

typedef enum qlm_type {
  QLM_TYPE_F32 = 0,
  QLM_TYPE_F16 = 1,
  QLM_TYPE_Q4_0 = 2,
  QLM_TYPE_Q4_1 = 3,
  QLM_TYPE_Q5_0 = 6,
  QLM_TYPE_Q5_1 = 7,
  QLM_TYPE_Q8_0 = 8,
  QLM_TYPE_Q8_1 = 9,
  QLM_TYPE_Q2_K = 10,
  QLM_TYPE_Q3_K = 11,
  QLM_TYPE_Q4_K = 12,
  QLM_TYPE_Q5_K = 13,
  QLM_TYPE_Q6_K = 14,
  QLM_TYPE_Q8_K = 15,
  QLM_TYPE_BF16 = 30,
  QLM_TYPE_COUNT_GGML = 40,   /* ids below this are ggml's */
  QLM_TYPE_QLM_BASE = 1000,   /* qlm-only types start here (issue 3) */
} qlm_type;

/* Convert n consecutive weights (n a multiple of block_size) from storage to float. */
typedef void (*qlm_to_float_fn)(const void *src, float *dst, int64_t n);

typedef struct qlm_type_traits {
  const char *name;        /* "f32", "q4_0", ... as llama.cpp names them */
  int block_size;          /* weights per block */
  size_t type_size;        /* bytes per block */
  qlm_to_float_fn to_float;/* reference dequantizer; NULL if unsupported */
} qlm_type_traits;

/* Traits of a type, or NULL if qlm does not know it. */
const qlm_type_traits *qlm_type_traits_of(int type);
const char *qlm_type_name(int type); /* "?" if unknown */

/* Bytes needed for n weights of `type` (n must be a multiple of block_size); returns 0 and sets
 * *overflow (if non-NULL) on overflow or when n is not a whole number of blocks. */
size_t qlm_type_row_bytes(int type, int64_t n);

#endif
