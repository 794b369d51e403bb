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
/* Quantize n floats (n a multiple of the target type's block_size) into blocks of that type. */
typedef void (*qlm_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n weights stored in one type (w) with n activations stored in its
 * vec_dot_type (a); n a multiple of both block sizes. */
typedef float (*qlm_vec_dot_fn)(const void *w, const void *a, int64_t n);

typedef struct qlm_type_traits {
  const char *name;        /* "f32", "q4_0", ... as llama.cpp names them */
  int block_size;          /* weights per block */
  size_t type_size;        /* bytes per block */
  qlm_to_float_fn to_float;/* reference dequantizer; NULL if unsupported */
  /* Quantized matmul (kernels/qdot.c).  Fields are 0/NULL for types that are converted to f32
   * instead.  The functions here are the portable scalar references; qlm_matmul picks the SIMD
   * version of the same pair for the CPU at run time (kernels/qdot.h).  Activations go to
   * Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 (Q8_0 plus the block sum, needed by the offset m of
   * Q4_1/Q5_1) for Q4_1/Q5_1, and Q8_K (with 16-weight sums for the mins) for the k-quants. */
  int vec_dot_type;               /* qlm_type activations are quantized to */
  qlm_from_float_fn quantize_act; /* fast activation quantizer float -> vec_dot_type */
  qlm_vec_dot_fn vec_dot;         /* dot(weights of this type, activations in vec_dot_type) */
} qlm_type_traits;

/* Traits of a type, or NULL if qlm does not know it. */
const qlm_type_traits *qlm_type_traits_of(int type);
const char *qlm_type_name(int type); /* "?" if unknown */

/* Bytes needed for n weights of `type` (n must be a multiple of block_size); returns 0 and sets
 * *overflow (if non-NULL) on overflow or when n is not a whole number of blocks. */
size_t qlm_type_row_bytes(int type, int64_t n);

#endif
