/* types.h — storage types of weight tensors and their traits table.
 *
 * Type ids equal ggml's (so a GGUF tensor's type field maps directly); types qlm adds
 * later (NF4, HQQ, ...) take ids from QLM_TYPE_QLM_BASE upward, which llama.cpp never uses.
 * Every type is stored as blocks of `block_size` weights taking `type_size` bytes; a row
 * of a matrix is a whole number of blocks.  Layouts are documented in kernels/types.c. */
#ifndef QLM_TYPES_H
#define QLM_TYPES_H

#include <stdbool.h>
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
  QLM_TYPE_I8 = 24,           /* plain int8 (companion tensors, e.g. NF4 double-quant codes) */
  QLM_TYPE_BF16 = 30,
  QLM_TYPE_COUNT_GGML = 40,   /* ids below this are ggml's */
  QLM_TYPE_QLM_BASE = 1000,   /* qlm-only types start here */
  /* bitsandbytes 4-bit (kernels/bnb4.c): block 64 = f32 absmax + 32 bytes of 4-bit codes. */
  QLM_TYPE_NF4 = 1000,
  QLM_TYPE_FP4 = 1001,
  /* The same codes without the absmax (32 bytes per 64 weights): file storage of NF4/FP4 with
   * double quantization; the absmax constants live in companion tensors (quant/bnb4.c) and
   * are expanded to NF4/FP4 blocks when a model is loaded. */
  QLM_TYPE_NF4_DQ = 1002,
  QLM_TYPE_FP4_DQ = 1003,
  /* Activations of the RTN types (kernels/rtn.c): 32 values = half d, int16 sum of the 32
   * quants (exact), int8 q[32]; 36 bytes. */
  QLM_TYPE_Q8_S = 1010,
  QLM_TYPE_QLM_FIXED_END = 1100, /* fixed qlm ids are below this; parameterized ids above */
} qlm_type;

/* Parameterized types: one id per (family, bits, block size), block size 1..65535.
 *   id = family << 24 | bits << 16 | block
 * Each family has one layout rule (documented where its traits are built), so every id still
 * has exactly one block layout, dequantizer and dot product. */
enum qlm_type_family {
  QLM_FAMILY_RTN_SYM = 1,  /* absmax RTN, any bits 2..8, block = group (kernels/rtn.c) */
  QLM_FAMILY_RTN_ASYM = 2, /* zero-point RTN, bits 2..8, block = group (kernels/rtn.c) */
  QLM_FAMILY_INT8_ROW = 3, /* LLM.int8() weights: block = row, f32 scale + int8 (kernels/int8row.c) */
  QLM_FAMILY_Q8_ROW = 4,   /* LLM.int8() activations: block = row, per-token scale (kernels/int8row.c) */
  QLM_FAMILY_HQQ = 5,      /* HQQ: bits 1..8, block = group, float scale and float zero (kernels/hqq.c) */
  QLM_FAMILY_FP8 = 6,      /* float8 e4m3fn: bits 8, block = row, f32 scale + e4m3fn codes (kernels/fp8.c) */
};
#define QLM_TYPE_FAMILY(id) ((int)((unsigned)(id) >> 24))
#define QLM_TYPE_BITS(id) ((int)(((unsigned)(id) >> 16) & 0xFFu))
#define QLM_TYPE_BLOCK(id) ((int)((unsigned)(id) & 0xFFFFu))
/* The id of (family, bits, block), or -1 if out of range. */
int qlm_type_make(int family, int bits, int block);

/* Convert n consecutive weights (n a multiple of block_size) from storage to float. */
typedef void (*qlm_to_float_fn)(const void *src, float *dst, int64_t n);
/* Quantize n floats (n a multiple of the target type's block_size) into blocks of that type. */
typedef void (*qlm_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n weights stored in one type (w) with n activations stored in its
 * vec_dot_type (a); n a multiple of both block sizes. */
typedef float (*qlm_vec_dot_fn)(const void *w, const void *a, int64_t n);
typedef float (*qlm_vec_dot_t_fn)(int type, const void *w, const void *a, int64_t n);
/* The dequantizer of qlm's own types: as to_float, but told the type id (see vec_dot_t). */
typedef void (*qlm_to_float_t_fn)(int type, const void *src, float *dst, int64_t n);

typedef struct qlm_type_traits {
  const char *name;        /* "f32", "q4_0", ... as llama.cpp names them */
  int block_size;          /* weights per block */
  size_t type_size;        /* bytes per block */
  qlm_to_float_fn to_float;/* reference dequantizer; NULL if unsupported or to_float_t is set */
  /* Quantized matmul (kernels/qdot.c).  Fields are 0/NULL for types that are converted to f32
   * instead.  The functions here are the portable scalar references; qlm_matmul picks the SIMD
   * version of the same pair for the CPU at run time (kernels/qdot.h).  Activations go to
   * Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 (Q8_0 plus the block sum, needed by the offset m of
   * Q4_1/Q5_1) for Q4_1/Q5_1, and Q8_K (with 16-weight sums for the mins) for the k-quants. */
  int vec_dot_type;               /* qlm_type activations are quantized to */
  qlm_from_float_fn quantize_act; /* fast activation quantizer float -> vec_dot_type */
  qlm_vec_dot_fn vec_dot;         /* dot(weights of this type, activations in vec_dot_type) */
  /* qlm's own types use these instead of vec_dot: the dot takes the type id, so one function
   * serves every group size of a parameterized family.  vec_dot_t is the scalar reference;
   * vec_dot_t_for(type, level) the best one for a SIMD level (an int holding a qlm_simd_level,
   * already clamped to this CPU), may be NULL (= vec_dot_t everywhere). */
  qlm_vec_dot_t_fn vec_dot_t;
  qlm_vec_dot_t_fn (*vec_dot_t_for)(int type, int level);
  qlm_to_float_t_fn to_float_t; /* their dequantizer, used instead of to_float (qlm_dequantize) */
} qlm_type_traits;

/* Builders of the parameterized families (fill *tr and write the type's name into name[cap];
 * return 0 for an id the family does not define). */
int qlm_rtn_traits(int type, qlm_type_traits *tr, char *name, size_t cap);     /* kernels/rtn.c */
int qlm_int8row_traits(int type, qlm_type_traits *tr, char *name, size_t cap); /* kernels/int8row.c */
int qlm_hqq_traits(int type, qlm_type_traits *tr, char *name, size_t cap);     /* kernels/hqq.c */
int qlm_fp8_traits(int type, qlm_type_traits *tr, char *name, size_t cap);     /* kernels/fp8.c */
/* Traits of QLM_TYPE_Q8_S (kernels/rtn.c). */
const qlm_type_traits *qlm_rtn_traits_q8_s(void);
/* Traits of the fixed bitsandbytes ids (NF4, FP4, NF4_DQ, FP4_DQ), or NULL (kernels/bnb4.c). */
const qlm_type_traits *qlm_bnb4_traits(int type);
/* Dequantize n weights of `type` (n a multiple of its block size) with whichever dequantizer
 * it has; returns false (writing nothing) if it has none. */
bool qlm_dequantize(int type, const void *src, float *dst, int64_t n);
bool qlm_type_can_dequantize(int type);
/* Bits per weight of a type (type_size * 8 / block_size); 0 if unknown. */
double qlm_type_bpw(int type);

/* Traits of a type, or NULL if qlm does not know it. */
const qlm_type_traits *qlm_type_traits_of(int type);
const char *qlm_type_name(int type); /* "?" if unknown */

/* Bytes needed for n weights of `type` (n must be a multiple of block_size); returns 0 and sets
 * *overflow (if non-NULL) on overflow or when n is not a whole number of blocks. */
size_t qlm_type_row_bytes(int type, int64_t n);

/* Q4_K/Q5_K: sub-block j's (0..7) 6-bit scale and min from the 12 packed bytes sc (ggml's
 * get_scale_min_k4). */
static inline void qlm_k4_scale_min(const uint8_t *sc, int j, int *scale, int *min) {
  if (j < 4) {
    *scale = sc[j] & 63;
    *min = sc[j + 4] & 63;
  } else {
    *scale = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
    *min = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
  }
}

#endif
