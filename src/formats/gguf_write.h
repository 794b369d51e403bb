/* gguf_write.h — build and write a GGUF v3 file (the format gguf.c reads).
 *
 * Metadata entries are serialized as they are added; tensors are recorded by reference (their
 * data must stay valid until qlm_gguf_write).  The file is written atomically (core/atomic_file.h)
 * with alignment 32, stored as general.alignment, and every tensor's data padded to it. */
#ifndef QLM_GGUF_WRITE_H
#define QLM_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "formats/source.h"

/* Tensor data alignment of the files qlm writes (general.alignment; GGUF's default is 32).  64
 * puts every tensor on a cache line, so rows of f32/f16 matrices whose length is a multiple of
 * 16/32 are too: AVX-512 loads then never straddle two lines (-5..11% for the f32 prefill kernel,
 * bench/sgemm).  llama.cpp and gguf-py honour the key. */
enum { QLM_GGUF_ALIGNMENT = 64 };

typedef struct qlm_gguf_writer qlm_gguf_writer;

qlm_gguf_writer *qlm_gguf_writer_new(qlm_error *err);
void qlm_gguf_writer_free(qlm_gguf_writer *w);

/* Metadata.  Keys must be unique (a duplicate is QLM_EINTERNAL); general.alignment is set by the
 * writer.  Scalars take the value's bit pattern zero-extended to 64 bits (use the wrappers). */
int qlm_gguf_add_scalar(qlm_gguf_writer *w, const char *key, qlm_meta_type type, uint64_t bits, qlm_error *err);
int qlm_gguf_add_u32(qlm_gguf_writer *w, const char *key, uint32_t v, qlm_error *err);
int qlm_gguf_add_i32(qlm_gguf_writer *w, const char *key, int32_t v, qlm_error *err);
int qlm_gguf_add_f32(qlm_gguf_writer *w, const char *key, float v, qlm_error *err);
int qlm_gguf_add_f64(qlm_gguf_writer *w, const char *key, double v, qlm_error *err);
int qlm_gguf_add_bool(qlm_gguf_writer *w, const char *key, bool v, qlm_error *err);
int qlm_gguf_add_str(qlm_gguf_writer *w, const char *key, const char *s, qlm_error *err);
/* Numeric array: n elements of type et, little-endian, packed (as qlm_meta.arr holds them). */
int qlm_gguf_add_arr(qlm_gguf_writer *w, const char *key, qlm_meta_type et, const void *data, uint64_t n,
                     qlm_error *err);
/* String array (NUL-terminated strings; GGUF strings cannot hold NUL). */
int qlm_gguf_add_str_arr(qlm_gguf_writer *w, const char *key, char *const *s, uint64_t n, qlm_error *err);
/* Copy a metadata entry as a reader produced it. */
int qlm_gguf_add_meta(qlm_gguf_writer *w, const qlm_meta *m, qlm_error *err);

/* A tensor: nbytes must equal qlm_type_row_bytes(type, ne[0]) * ne[1]*ne[2]*ne[3]. */
int qlm_gguf_add_tensor(qlm_gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                        const void *data, size_t nbytes, qlm_error *err);

/* Write the file atomically; *bytes_out (may be NULL) receives its size. */
int qlm_gguf_write(qlm_gguf_writer *w, const char *path, uint64_t *bytes_out, qlm_error *err);

#endif
